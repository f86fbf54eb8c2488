// SPDX-License-Identifier: AGPL-3.0-only
//! SASL mechanisms (RFC 4422) as sans-IO state machines. The session owns
//! the `+ ` continuation lines, base64 and `*` cancel (RFC 5034); a
//! mechanism only sees decoded client data and answers with a [`Step`].

pub mod cram_md5;
pub mod login;
pub mod plain;

use zeroize::Zeroizing;

use crate::auth::StoredSecret;

/// What a mechanism wants next.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (raw; the session base64-encodes it).
    Challenge(Vec<u8>),
    /// The exchange is complete: check this password for this identity.
    Password {
        /// Authorization identity, when the client named one different
        /// from the authentication identity.
        authzid: Option<String>,
        authcid: String,
        password: Zeroizing<Vec<u8>>,
    },
    /// The client proved knowledge of a secret: look up `authcid`'s
    /// secret and ask the mechanism to [`Mechanism::check`] it.
    Proof { authcid: String },
    /// The exchange failed; the client gets `-ERR`.
    Fail(SaslError),
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed client response")]
    Malformed,
    #[error("unexpected client response")]
    OutOfOrder,
}

/// A server-side mechanism.
pub trait Mechanism: Send + Sync {
    fn name(&self) -> &'static str;

    /// The first challenge when the client sent no initial response.
    fn start(&mut self) -> Step;

    /// Feed one decoded client response.
    fn step(&mut self, input: &[u8]) -> Step;

    /// After [`Step::Proof`]: does the client's proof match this secret?
    /// Mechanisms that end in [`Step::Password`] never get here.
    fn check(&self, _secret: &StoredSecret) -> bool {
        false
    }
}

/// A new instance of the named mechanism, if this build knows it;
/// `hostname` goes into challenges that name the server.
pub fn new_mechanism(name: &str, hostname: &str) -> Option<Box<dyn Mechanism>> {
    match name.to_ascii_uppercase().as_str() {
        "PLAIN" => Some(Box::new(plain::Plain::default())),
        "LOGIN" => Some(Box::new(login::Login::default())),
        "CRAM-MD5" => Some(Box::new(cram_md5::CramMd5::new(hostname))),
        _ => None,
    }
}

/// Mechanisms that send the password itself and so fall under the
/// plaintext policy.
pub fn is_plaintext(name: &str) -> bool {
    name.eq_ignore_ascii_case("PLAIN") || name.eq_ignore_ascii_case("LOGIN")
}

fn utf8(bytes: &[u8]) -> Result<String, SaslError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| SaslError::Malformed)
}

// SPDX-License-Identifier: AGPL-3.0-only
//! SASL mechanisms (RFC 4422) as sans-IO state machines. The session owns
//! the `+ ` continuation lines, base64 and `*` cancel (RFC 5034); a
//! mechanism only sees decoded client data and answers with a [`Step`].
//! Anything that needs I/O (the user's secret, a token's validity) is asked
//! for with a step and handed back through a `resume_*` call.

pub mod anonymous;
pub mod cram_md5;
pub mod digest_md5;
pub mod external;
#[cfg(feature = "gssapi")]
pub mod gssapi;
pub mod login;
pub mod ntlm;
pub mod oauth;
pub mod plain;
pub mod scram;

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::auth::{Scheme, StoredSecret};

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
    /// Look up `authcid` and call [`Mechanism::resume_secret`] with its
    /// secret (None when the user is unknown or has none).
    Lookup { authcid: String },
    /// Validate this bearer token and call [`Mechanism::resume_token`].
    Bearer {
        authzid: Option<String>,
        token: Zeroizing<String>,
    },
    /// The mechanism proved `authcid`. `final_data`, when present, is sent
    /// as a last challenge that the client answers with an empty line
    /// before the `+OK` (RFC 5034 §4).
    Verified {
        authzid: Option<String>,
        authcid: String,
        final_data: Option<Vec<u8>>,
    },
    /// ANONYMOUS: log the trace and open the anonymous mailbox read-only.
    Anonymous { trace: String },
    /// The exchange failed; the client gets `-ERR`.
    Fail(SaslError),
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    #[error("malformed client response")]
    Malformed,
    #[error("unexpected client response")]
    OutOfOrder,
    /// Wrong password, proof, ticket or token: answered like every other
    /// bad credential.
    #[error("bad credentials")]
    Credentials,
    /// Channel binding missing, of the wrong type, or a downgrade.
    #[error("channel binding mismatch")]
    ChannelBinding,
    #[error("mechanism failure: {0}")]
    Internal(String),
}

/// Why a bearer token was refused (RFC 6750 §3.1 error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token validation unavailable: {0}")]
    Unavailable(String),
}

/// A server-side mechanism.
pub trait Mechanism: Send + Sync {
    fn name(&self) -> &'static str;

    /// The first challenge when the client sent no initial response.
    fn start(&mut self) -> Step {
        Step::Challenge(Vec::new())
    }

    /// Feed one decoded client response.
    fn step(&mut self, input: &[u8]) -> Step;

    /// After [`Step::Lookup`]: the user's secret, None when the user is
    /// unknown or has no secret.
    fn resume_secret(&mut self, _secret: Option<&StoredSecret>) -> Step {
        Step::Fail(SaslError::OutOfOrder)
    }

    /// Whether [`Mechanism::resume_secret`] may stretch keys (milliseconds
    /// of work), so that it belongs on the bounded blocking pool.
    fn stretches_keys(&self) -> bool {
        false
    }

    /// After [`Step::Bearer`]: the user the token names, or why not.
    fn resume_token(&mut self, _user: Result<String, TokenError>) -> Step {
        Step::Fail(SaslError::OutOfOrder)
    }
}

/// What a mechanism may know of the server and of this connection.
#[derive(Clone)]
pub struct Context {
    /// The server's name, as in challenges and `pop@host`.
    pub hostname: String,
    /// DIGEST-MD5 realm.
    pub realm: String,
    /// NTLM target (domain) name.
    pub ntlm_domain: String,
    /// The connection's `tls-exporter` channel binding (RFC 9266), when
    /// -PLUS mechanisms can be offered (TLS 1.3).
    pub channel_binding: Option<Vec<u8>>,
    /// Whether a -PLUS mechanism is offered here, for SCRAM's downgrade
    /// check.
    pub plus_offered: bool,
    /// The user that a verified TLS client certificate maps to.
    pub external_identity: Option<String>,
    /// Key for the made-up salts of users that do not exist.
    pub salt_key: Arc<[u8; 32]>,
    /// The Kerberos acceptor, when GSSAPI is configured.
    #[cfg(feature = "gssapi")]
    pub gssapi: Option<Arc<gssapi::Acceptor>>,
}

impl Context {
    /// A context for `hostname` with a fresh salt key (tests, and hosts
    /// that drive mechanisms themselves). Panics without system
    /// randomness, as nothing safe can be done then.
    pub fn new(hostname: &str) -> Self {
        Context {
            hostname: hostname.to_owned(),
            realm: hostname.to_owned(),
            ntlm_domain: "POP3".to_owned(),
            channel_binding: None,
            plus_offered: false,
            external_identity: None,
            salt_key: Arc::new(nonce().expect("system randomness")),
            #[cfg(feature = "gssapi")]
            gssapi: None,
        }
    }
}

/// Every mechanism this build can run, in the order CAPA lists them.
pub const ALL: &[&str] = &[
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    #[cfg(feature = "gssapi")]
    "GSSAPI",
    "EXTERNAL",
    "OAUTHBEARER",
    "XOAUTH2",
    "CRAM-MD5",
    "DIGEST-MD5",
    "NTLM",
    "PLAIN",
    "LOGIN",
    "ANONYMOUS",
];

/// Mechanisms a configuration may name though this build lacks them.
pub const NEEDS_FEATURE: &[(&str, &str)] = &[("GSSAPI", "gssapi")];

/// A new instance of the named mechanism, if this build knows it.
pub fn new_mechanism(name: &str, ctx: &Context) -> Option<Box<dyn Mechanism>> {
    use scram::{Hash, Scram};
    Some(match name.to_ascii_uppercase().as_str() {
        "PLAIN" => Box::new(plain::Plain::default()),
        "LOGIN" => Box::new(login::Login::default()),
        "CRAM-MD5" => or_unavailable(cram_md5::CramMd5::new(&ctx.hostname)),
        "DIGEST-MD5" => or_unavailable(digest_md5::DigestMd5::new(ctx)),
        "SCRAM-SHA-1" => Box::new(Scram::new(Hash::Sha1, false, ctx)),
        "SCRAM-SHA-256" => Box::new(Scram::new(Hash::Sha256, false, ctx)),
        "SCRAM-SHA-1-PLUS" => Box::new(Scram::new(Hash::Sha1, true, ctx)),
        "SCRAM-SHA-256-PLUS" => Box::new(Scram::new(Hash::Sha256, true, ctx)),
        "NTLM" => Box::new(ntlm::Ntlm::new(ctx)),
        "OAUTHBEARER" => Box::new(oauth::OAuth::oauthbearer()),
        "XOAUTH2" => Box::new(oauth::OAuth::xoauth2()),
        "EXTERNAL" => Box::new(external::External::new(ctx.external_identity.clone())),
        "ANONYMOUS" => Box::new(anonymous::Anonymous::default()),
        #[cfg(feature = "gssapi")]
        "GSSAPI" => Box::new(gssapi::Gssapi::new(ctx.gssapi.clone()?)),
        _ => return None,
    })
}

/// Mechanisms that send the password (or a bearer token) itself and so
/// fall under the plaintext policy.
pub fn is_plaintext(name: &str) -> bool {
    ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(name))
}

/// The stored schemes a challenge-response mechanism can work from; None
/// for mechanisms that check a password or need no stored secret.
pub fn secret_schemes(name: &str) -> Option<&'static [Scheme]> {
    Some(match name.to_ascii_uppercase().as_str() {
        "CRAM-MD5" => &[Scheme::Plain, Scheme::CramMd5],
        "DIGEST-MD5" => &[Scheme::Plain],
        "NTLM" => &[Scheme::Plain, Scheme::Ntlm],
        "SCRAM-SHA-1" | "SCRAM-SHA-1-PLUS" => &[Scheme::Plain, Scheme::ScramSha1],
        "SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS" => &[Scheme::Plain, Scheme::ScramSha256],
        _ => return None,
    })
}

/// Channel-bound variants, offered only where a binding exists.
/// What this module says of `auth.mechanisms`: every name known and built
/// in, and what each needs configured. Returns the dotted key and the
/// reason.
pub fn check_config(config: &crate::config::Pop3Config) -> Result<(), crate::config::SetupError> {
    let fail = |k: &str, r: String| Err(crate::config::SetupError::new(k, r));
    for (i, m) in config.auth.mechanisms.iter().enumerate() {
        let key = format!("auth.mechanisms[{i}]");
        let upper = m.to_ascii_uppercase();
        if let Some((_, feature)) = NEEDS_FEATURE
            .iter()
            .find(|(name, _)| *name == upper && !ALL.contains(name))
        {
            return fail(
                &key,
                format!("{m} needs pop3d built with the cargo feature \"{feature}\""),
            );
        }
        if !ALL.contains(&upper.as_str()) {
            return fail(
                &key,
                format!(
                    "unknown SASL mechanism {m:?}; supported: {}",
                    ALL.join(", ")
                ),
            );
        }
        let needs = match upper.as_str() {
            "OAUTHBEARER" | "XOAUTH2" if config.auth.oauth.is_none() => {
                "an [auth.oauth] section to validate tokens"
            }
            "ANONYMOUS" if config.auth.anonymous_user.is_none() => {
                "auth.anonymous_user, the mailbox anonymous users read"
            }
            "EXTERNAL"
                if config
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_ca_file.is_none()) =>
            {
                "tls.client_ca_file to verify client certificates"
            }
            "GSSAPI" if config.auth.gssapi.is_none() => "an [auth.gssapi] section with the keytab",
            "SCRAM-SHA-1-PLUS" | "SCRAM-SHA-256-PLUS" if config.tls.is_none() => {
                "a [tls] section: -PLUS binds to the TLS connection"
            }
            _ => continue,
        };
        return fail(&key, format!("{m} needs {needs}"));
    }
    Ok(())
}

pub fn is_plus(name: &str) -> bool {
    name.to_ascii_uppercase().ends_with("-PLUS")
}

fn utf8(bytes: &[u8]) -> Result<String, SaslError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| SaslError::Malformed)
}

/// Random bytes for nonces, challenges and keys. Fails closed: without
/// randomness from the system there is no nonce, never a predictable one.
pub(crate) fn nonce<const N: usize>() -> Result<[u8; N], SaslError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| {
        tracing::error!("no randomness from the system: {e}");
        SaslError::Internal(format!("no randomness from the system: {e}"))
    })?;
    Ok(b)
}

/// A mechanism that could not be set up (no randomness for its nonce):
/// every exchange fails, none runs with a weak challenge.
struct Unavailable(SaslError);

impl Mechanism for Unavailable {
    fn name(&self) -> &'static str {
        "UNAVAILABLE"
    }

    fn start(&mut self) -> Step {
        Step::Fail(self.0.clone())
    }

    fn step(&mut self, _input: &[u8]) -> Step {
        Step::Fail(self.0.clone())
    }
}

fn or_unavailable<M: Mechanism + 'static>(m: Result<M, SaslError>) -> Box<dyn Mechanism> {
    match m {
        Ok(m) => Box::new(m),
        Err(e) => Box::new(Unavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn context() -> Context {
        let mut ctx = Context::new("pop.test");
        ctx.channel_binding = Some(vec![1; 32]);
        ctx.plus_offered = true;
        ctx.external_identity = Some("alice".into());
        ctx
    }

    proptest! {
        /// Fuzz body: any sequence of client messages, with any secret
        /// or token verdict in between, ends in a step and never a panic.
        #[test]
        fn mechanisms_survive_any_input(
            which in 0..ALL.len(),
            inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
            plain_secret in any::<bool>(),
        ) {
            let secret = StoredSecret::parse(if plain_secret { "{PLAIN}pw" } else { "{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0" }).unwrap();
            let Some(mut m) = new_mechanism(ALL[which], &context()) else { return Ok(()) };
            let mut step = m.start();
            for input in &inputs {
                step = match step {
                    Step::Lookup { .. } => m.resume_secret(Some(&secret)),
                    Step::Bearer { .. } => m.resume_token(Err(TokenError::Invalid("x".into()))),
                    _ => m.step(input),
                };
            }
        }
    }

    #[test]
    fn every_listed_mechanism_exists() {
        let ctx = context();
        // GSSAPI needs a keytab; its test runs against a real KDC.
        for name in ALL.iter().filter(|n| **n != "GSSAPI") {
            let m = new_mechanism(name, &ctx).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(m.name(), *name);
        }
        assert!(new_mechanism("KERBEROS_V4", &ctx).is_none());
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! SCRAM's server keys and their stored form, `iter,salt,StoredKey,
//! ServerKey` in base64 (RFC 5802 §3; what Dovecot and GNU SASL write, and
//! what `pop3d hash-password` writes): derived from a password, parsed,
//! encoded, and checked against a plaintext password for USER/PASS.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The smallest iteration count accepted (RFC 7677 §4 asks for 4096).
pub const MIN_ITERATIONS: u32 = 4096;

/// The hash a SCRAM variant is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }

    pub(super) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    pub(super) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Hash::Sha1 => run::<Hmac<Sha1>>(key, data),
            Hash::Sha256 => run::<Hmac<Sha256>>(key, data),
        }
    }

    pub(super) fn salted_password(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.output_len()]);
        match self {
            Hash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        }
        out
    }
}

/// The server's keys for one user.
#[derive(Clone)]
pub struct Keys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Keys {
    /// Derive the keys from a password (prepared with SASLprep).
    pub fn derive(hash: Hash, password: &str, salt: &[u8], iterations: u32) -> Keys {
        let prepared = saslprep(password);
        let salted = hash.salted_password(prepared.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Keys {
            iterations,
            salt: salt.to_vec(),
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// Parse `iter,salt,StoredKey,ServerKey` (base64 fields).
    pub fn parse(hash: Hash, data: &str) -> Option<Keys> {
        let mut parts = data.split(',');
        let iterations: u32 = parts.next()?.parse().ok()?;
        let salt = B64.decode(parts.next()?).ok()?;
        let stored_key = B64.decode(parts.next()?).ok()?;
        let server_key = B64.decode(parts.next()?).ok()?;
        // GNU SASL may append the salted password; it is not needed.
        if parts.count() > 1
            || iterations < MIN_ITERATIONS
            || salt.is_empty()
            || stored_key.len() != hash.output_len()
            || server_key.len() != hash.output_len()
        {
            return None;
        }
        Some(Keys {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    pub fn encode(&self) -> String {
        format!(
            "{},{},{},{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    /// Does `password` produce these keys? (USER/PASS against a SCRAM
    /// secret.)
    pub fn verify_password(&self, hash: Hash, password: &[u8]) -> bool {
        let Ok(password) = std::str::from_utf8(password) else {
            return false;
        };
        let other = Keys::derive(hash, password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }
}

/// SASLprep (RFC 4013) where it applies; strings it rejects are used as
/// they are, so they simply fail to match.
pub fn saslprep(s: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(s).unwrap_or(std::borrow::Cow::Borrowed(s))
}

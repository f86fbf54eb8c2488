// SPDX-License-Identifier: AGPL-3.0-only
//! Password schemes of Dovecot's `{SCHEME}secret` fields: parsing, constant-
//! time verification and hashing for `pop3d hash-password`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::cram_context;
use super::sasl::scram::{Hash, Keys, MIN_ITERATIONS};

/// A scheme this server can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Plain,
    /// `{CRYPT}`: the hash's own `$id$` prefix picks the algorithm.
    Crypt,
    Sha512Crypt,
    Sha256Crypt,
    /// `$1$`: weak, for secrets carried over (Postfixadmin's).
    Md5Crypt,
    Argon2i,
    Argon2id,
    BlfCrypt,
    Ssha,
    Ssha256,
    Ssha512,
    CramMd5,
    /// `{SCRAM-SHA-1}iter,salt,StoredKey,ServerKey` (Dovecot, GNU SASL).
    ScramSha1,
    ScramSha256,
    /// `{NTLM}`: hex MD4 of the UTF-16LE password (the NT hash).
    Ntlm,
}

impl Scheme {
    pub const ALL: &'static [Scheme] = &[
        Scheme::Plain,
        Scheme::Crypt,
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::Md5Crypt,
        Scheme::Argon2i,
        Scheme::Argon2id,
        Scheme::BlfCrypt,
        Scheme::Ssha,
        Scheme::Ssha256,
        Scheme::Ssha512,
        Scheme::CramMd5,
        Scheme::ScramSha1,
        Scheme::ScramSha256,
        Scheme::Ntlm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Plain => "PLAIN",
            Scheme::Crypt => "CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Md5Crypt => "MD5-CRYPT",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Ssha => "SSHA",
            Scheme::Ssha256 => "SSHA256",
            Scheme::Ssha512 => "SSHA512",
            Scheme::CramMd5 => "CRAM-MD5",
            Scheme::ScramSha1 => "SCRAM-SHA-1",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
            Scheme::Ntlm => "NTLM",
        }
    }

    pub fn from_name(name: &str) -> Option<Scheme> {
        let upper = name.to_ascii_uppercase();
        if upper == "CLEARTEXT" {
            return Some(Scheme::Plain);
        }
        Scheme::ALL.iter().copied().find(|s| s.name() == upper)
    }

    /// Schemes whose verification costs milliseconds and must run off the
    /// async workers.
    pub fn is_slow(self) -> bool {
        matches!(
            self,
            Scheme::Crypt
                | Scheme::Sha512Crypt
                | Scheme::Sha256Crypt
                | Scheme::Argon2i
                | Scheme::Argon2id
                | Scheme::BlfCrypt
                | Scheme::ScramSha1
                | Scheme::ScramSha256
        )
    }
}

/// Why a secret field cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemeError {
    #[error("unknown password scheme {{{0}}}")]
    UnknownScheme(String),
    #[error("malformed {0} secret")]
    Malformed(&'static str),
    #[error("cannot hash with {0}: {1}")]
    Hashing(&'static str, String),
}

/// A secret as stored in the passwd file. Never printed: `Debug` hides it.
#[derive(Clone)]
pub struct StoredSecret {
    scheme: Scheme,
    data: Zeroizing<String>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredSecret({{{}}}…)", self.scheme.name())
    }
}

impl StoredSecret {
    /// Parse a `{SCHEME}data` field. A field without braces is CRYPT, as in
    /// Dovecot.
    pub fn parse(field: &str) -> Result<StoredSecret, SchemeError> {
        let (scheme, data) = match field.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((name, data)) => (
                Scheme::from_name(name)
                    .ok_or_else(|| SchemeError::UnknownScheme(name.to_owned()))?,
                data,
            ),
            None => (Scheme::Crypt, field),
        };
        let bad = || SchemeError::Malformed(scheme.name());
        let ok = match scheme {
            Scheme::Plain => true,
            Scheme::Crypt => crypt_kind(data).is_some(),
            Scheme::Sha512Crypt => data.starts_with("$6$"),
            Scheme::Sha256Crypt => data.starts_with("$5$"),
            Scheme::Md5Crypt => super::md5_crypt::is_md5_crypt(data),
            Scheme::Argon2i => data.starts_with("$argon2i$"),
            Scheme::Argon2id => data.starts_with("$argon2id$"),
            Scheme::BlfCrypt => is_bcrypt(data),
            Scheme::Ssha => salted_ok(data, 20),
            Scheme::Ssha256 => salted_ok(data, 32),
            Scheme::Ssha512 => salted_ok(data, 64),
            Scheme::CramMd5 => cram_context::decode(data).is_some(),
            Scheme::ScramSha1 => Keys::parse(Hash::Sha1, data).is_some(),
            Scheme::ScramSha256 => Keys::parse(Hash::Sha256, data).is_some(),
            Scheme::Ntlm => crate::hex::decode::<16>(data).is_some(),
        };
        if !ok {
            return Err(bad());
        }
        Ok(StoredSecret {
            scheme,
            data: Zeroizing::new(data.to_owned()),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The `{SCHEME}data` field this was parsed from (a braceless CRYPT
    /// field gains its `{CRYPT}`), for copying to another user database.
    pub fn to_field(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{{{}}}{}", self.scheme.name(), &*self.data))
    }

    /// The plaintext, for mechanisms that need it (APOP, CRAM-MD5).
    pub fn plaintext(&self) -> Option<&str> {
        (self.scheme == Scheme::Plain).then(|| self.data.as_str())
    }

    /// The HMAC-MD5 states for CRAM-MD5, from a plaintext or a stored
    /// `{CRAM-MD5}` secret.
    pub fn cram_md5_states(&self) -> Option<(cram_context::Md5State, cram_context::Md5State)> {
        match self.scheme {
            Scheme::Plain => Some(cram_context::contexts(self.data.as_bytes())),
            Scheme::CramMd5 => cram_context::decode(&self.data),
            _ => None,
        }
    }

    /// SCRAM keys for `hash`, when this secret is stored as such.
    pub fn scram_keys(&self, hash: Hash) -> Option<Keys> {
        match (self.scheme, hash) {
            (Scheme::ScramSha1, Hash::Sha1) | (Scheme::ScramSha256, Hash::Sha256) => {
                Keys::parse(hash, &self.data)
            }
            _ => None,
        }
    }

    /// The NT hash (MD4 of the UTF-16LE password) for NTLM, from a
    /// plaintext or a stored `{NTLM}` secret.
    pub fn nt_hash(&self) -> Option<[u8; 16]> {
        match self.scheme {
            Scheme::Plain => Some(nt_hash(&self.data)),
            Scheme::Ntlm => crate::hex::decode::<16>(&self.data),
            _ => None,
        }
    }

    pub fn is_slow(&self) -> bool {
        self.scheme.is_slow()
    }

    /// Check a password. Constant time in the compared bytes.
    pub fn verify(&self, password: &[u8]) -> bool {
        let data = self.data.as_str();
        match self.scheme {
            Scheme::Plain => ct_eq(data.as_bytes(), password),
            Scheme::Crypt => match crypt_kind(data) {
                Some(kind) => verify_crypt(kind, data, password),
                None => false,
            },
            Scheme::Sha512Crypt => verify_crypt(CryptKind::Sha512, data, password),
            Scheme::Sha256Crypt => verify_crypt(CryptKind::Sha256, data, password),
            Scheme::Md5Crypt => super::md5_crypt::verify(data, password),
            Scheme::Argon2i | Scheme::Argon2id => verify_crypt(CryptKind::Argon2, data, password),
            Scheme::BlfCrypt => verify_crypt(CryptKind::Bcrypt, data, password),
            Scheme::Ssha => verify_salted::<Sha1>(data, password, 20),
            Scheme::Ssha256 => verify_salted::<Sha256>(data, password, 32),
            Scheme::Ssha512 => verify_salted::<Sha512>(data, password, 64),
            Scheme::CramMd5 => match cram_context::decode(data) {
                Some(stored) => {
                    let computed = cram_context::contexts(password);
                    let a = cram_context::encode(&stored.0, &stored.1);
                    let b = cram_context::encode(&computed.0, &computed.1);
                    ct_eq(a.as_bytes(), b.as_bytes())
                }
                None => false,
            },
            Scheme::ScramSha1 | Scheme::ScramSha256 => {
                let hash = if self.scheme == Scheme::ScramSha1 {
                    Hash::Sha1
                } else {
                    Hash::Sha256
                };
                Keys::parse(hash, data).is_some_and(|k| k.verify_password(hash, password))
            }
            Scheme::Ntlm => match (
                crate::hex::decode::<16>(data),
                std::str::from_utf8(password),
            ) {
                (Some(stored), Ok(pw)) => ct_eq(&stored, &nt_hash(pw)),
                _ => false,
            },
        }
    }
}

/// MD4 of the UTF-16LE password.
pub fn nt_hash(password: &str) -> [u8; 16] {
    use md4::{Digest as _, Md4};
    let mut h = Md4::new();
    for unit in password.encode_utf16() {
        h.update(unit.to_le_bytes());
    }
    h.finalize().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[derive(Debug, Clone, Copy)]
enum CryptKind {
    Md5,
    Sha512,
    Sha256,
    Argon2,
    Bcrypt,
}

fn crypt_kind(data: &str) -> Option<CryptKind> {
    if super::md5_crypt::is_md5_crypt(data) {
        Some(CryptKind::Md5)
    } else if data.starts_with("$6$") {
        Some(CryptKind::Sha512)
    } else if data.starts_with("$5$") {
        Some(CryptKind::Sha256)
    } else if data.starts_with("$argon2") {
        Some(CryptKind::Argon2)
    } else if is_bcrypt(data) {
        Some(CryptKind::Bcrypt)
    } else {
        None
    }
}

fn is_bcrypt(data: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| data.starts_with(p))
}

fn verify_crypt(kind: CryptKind, data: &str, password: &[u8]) -> bool {
    match kind {
        CryptKind::Sha512 | CryptKind::Sha256 => {
            // The crypt(3) family hashes text; a password that is not UTF-8
            // cannot match a hash made from text.
            let Ok(pw) = std::str::from_utf8(password) else {
                return false;
            };
            match kind {
                CryptKind::Sha512 => sha_crypt::sha512_check(pw, data).is_ok(),
                _ => sha_crypt::sha256_check(pw, data).is_ok(),
            }
        }
        CryptKind::Argon2 => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            match PasswordHash::new(data) {
                Ok(hash) => argon2::Argon2::default()
                    .verify_password(password, &hash)
                    .is_ok(),
                Err(_) => false,
            }
        }
        CryptKind::Bcrypt => bcrypt::verify(password, data).unwrap_or(false),
        CryptKind::Md5 => super::md5_crypt::verify(data, password),
    }
}

fn salted_ok(data: &str, digest_len: usize) -> bool {
    B64.decode(data).is_ok_and(|raw| raw.len() > digest_len)
}

fn verify_salted<D: Digest>(data: &str, password: &[u8], digest_len: usize) -> bool {
    let Ok(raw) = B64.decode(data) else {
        return false;
    };
    if raw.len() <= digest_len {
        return false;
    }
    let (stored, salt) = raw.split_at(digest_len);
    let mut h = D::new();
    h.update(password);
    h.update(salt);
    ct_eq(stored, &h.finalize())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SchemeError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SchemeError::Hashing("random", e.to_string()))?;
    Ok(b)
}

/// Hash a password into a passwd-file field `{SCHEME}data`.
pub fn hash_password(scheme: Scheme, password: &str) -> Result<String, SchemeError> {
    let name = scheme.name();
    let fail = |e: String| SchemeError::Hashing(name, e);
    let data = match scheme {
        Scheme::Plain => password.to_owned(),
        Scheme::Sha512Crypt | Scheme::Crypt => {
            let params = sha_crypt::Sha512Params::new(5000).map_err(|e| fail(format!("{e:?}")))?;
            sha_crypt::sha512_simple(password, &params).map_err(|e| fail(format!("{e:?}")))?
        }
        Scheme::Md5Crypt => {
            let salt: String = random_bytes::<8>()?
                .iter()
                .map(|b| super::md5_crypt::salt_char(*b))
                .collect();
            super::md5_crypt::md5_crypt(password.as_bytes(), &salt)
        }
        Scheme::Sha256Crypt => {
            let params = sha_crypt::Sha256Params::new(5000).map_err(|e| fail(format!("{e:?}")))?;
            sha_crypt::sha256_simple(password, &params).map_err(|e| fail(format!("{e:?}")))?
        }
        Scheme::Argon2i | Scheme::Argon2id => {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let algorithm = if scheme == Scheme::Argon2i {
                argon2::Algorithm::Argon2i
            } else {
                argon2::Algorithm::Argon2id
            };
            let salt =
                SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| fail(e.to_string()))?;
            argon2::Argon2::new(algorithm, argon2::Version::V0x13, argon2::Params::default())
                .hash_password(password.as_bytes(), &salt)
                .map_err(|e| fail(e.to_string()))?
                .to_string()
        }
        Scheme::BlfCrypt => bcrypt::hash_with_result(password, 10)
            .map_err(|e| fail(e.to_string()))?
            .format_for_version(bcrypt::Version::TwoY),
        Scheme::Ssha => salted::<Sha1>(password, &random_bytes::<8>()?),
        Scheme::Ssha256 => salted::<Sha256>(password, &random_bytes::<8>()?),
        Scheme::Ssha512 => salted::<Sha512>(password, &random_bytes::<8>()?),
        Scheme::CramMd5 => {
            let (i, o) = cram_context::contexts(password.as_bytes());
            cram_context::encode(&i, &o)
        }
        Scheme::ScramSha1 => {
            Keys::derive(Hash::Sha1, password, &random_bytes::<16>()?, MIN_ITERATIONS).encode()
        }
        Scheme::ScramSha256 => Keys::derive(
            Hash::Sha256,
            password,
            &random_bytes::<16>()?,
            MIN_ITERATIONS,
        )
        .encode(),
        Scheme::Ntlm => crate::hex::encode(&nt_hash(password)),
    };
    Ok(format!("{{{name}}}{data}"))
}

fn salted<D: Digest>(password: &str, salt: &[u8]) -> String {
    let mut h = D::new();
    h.update(password.as_bytes());
    h.update(salt);
    let mut raw = h.finalize().to_vec();
    raw.extend_from_slice(salt);
    B64.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_round_trips() {
        for &scheme in Scheme::ALL {
            let field = hash_password(scheme, "correct horse").unwrap();
            assert!(
                field.starts_with(&format!("{{{}}}", scheme.name())),
                "{field}"
            );
            let s = StoredSecret::parse(&field).unwrap();
            assert!(s.verify(b"correct horse"), "{}", scheme.name());
            assert!(!s.verify(b"correct horsE"), "{}", scheme.name());
            assert!(!s.verify(b""), "{}", scheme.name());
        }
    }

    #[test]
    fn known_vectors() {
        // From `doveadm pw` and `mkpasswd`-style tools; fixed salts.
        let cases = [
            // SHA512-CRYPT with salt "saltsalt", password "password".
            (
                "{SHA512-CRYPT}$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
                "password",
            ),
            // SSHA of "password" with salt "salt".
            ("{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0", "password"),
            // `doveadm pw -s CRAM-MD5 -p tanstaaf` (Dovecot 2.3).
            (
                "{CRAM-MD5}bc85c9a3cb6b88ebf5a19a22a3604ef939585872c1ade1a2bf44087948a852f4",
                "tanstaaf",
            ),
            // `gsasl --mkpasswd -m SCRAM-SHA-256 -p pencil` with the salt
            // and count of RFC 7677's example (GNU SASL 2.2).
            (
                "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                "pencil",
            ),
            // The same for SCRAM-SHA-1 with RFC 5802's salt.
            (
                "{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=",
                "pencil",
            ),
            // NT hash of "password" (MD4 of its UTF-16LE form).
            ("{NTLM}8846f7eaee8fb117ad06bdd830b7586c", "password"),
        ];
        for (field, pw) in cases {
            let s = StoredSecret::parse(field).unwrap();
            assert!(s.verify(pw.as_bytes()), "{field}");
            assert!(!s.verify(b"wrong"), "{field}");
        }
    }

    #[test]
    fn bare_crypt_and_cleartext() {
        let field = hash_password(Scheme::Sha256Crypt, "pw").unwrap();
        let bare = field.trim_start_matches("{SHA256-CRYPT}");
        assert!(StoredSecret::parse(bare).unwrap().verify(b"pw"));
        assert!(StoredSecret::parse("{CLEARTEXT}pw").unwrap().verify(b"pw"));
        assert!(StoredSecret::parse("{plain}pw").unwrap().verify(b"pw"));
    }

    #[test]
    fn malformed_and_unknown() {
        assert_eq!(
            StoredSecret::parse("{ROT13}x").unwrap_err(),
            SchemeError::UnknownScheme("ROT13".into())
        );
        assert!(StoredSecret::parse("{SSHA}!!!").is_err());
        assert!(StoredSecret::parse("{SHA512-CRYPT}nope").is_err());
        assert!(StoredSecret::parse("{CRAM-MD5}abc").is_err());
        assert!(StoredSecret::parse("plainjunk").is_err());
        // SCRAM keys below RFC 7677's minimum iteration count are refused.
        assert!(
            StoredSecret::parse(
                "{SCRAM-SHA-1}1024,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE="
            )
            .is_err()
        );
        assert!(StoredSecret::parse("{NTLM}8846f7ea").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = StoredSecret::parse("{PLAIN}hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

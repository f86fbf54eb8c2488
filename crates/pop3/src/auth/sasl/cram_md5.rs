// SPDX-License-Identifier: AGPL-3.0-only
//! CRAM-MD5 (RFC 2195): a unique challenge per exchange, answered with
//! `user SP hex(HMAC-MD5(secret, challenge))`. Works from a `{PLAIN}` secret
//! or Dovecot's stored `{CRAM-MD5}` HMAC states, so no plaintext is needed.

use subtle::ConstantTimeEq;

use super::{Mechanism, SaslError, Step, utf8};
use crate::auth::StoredSecret;
use crate::auth::cram_context;

#[derive(Debug)]
pub struct CramMd5 {
    challenge: String,
    digest: Option<[u8; 16]>,
    user: String,
    answered: bool,
}

impl CramMd5 {
    /// A fresh challenge `<random.time@hostname>`.
    pub fn new(hostname: &str) -> Result<Self, SaslError> {
        let nonce = u64::from_le_bytes(super::nonce()?);
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self::with_challenge(format!("<{nonce}.{time}@{hostname}>")))
    }

    /// A given challenge (RFC examples, tests).
    pub fn with_challenge(challenge: String) -> Self {
        CramMd5 {
            challenge,
            digest: None,
            user: String::new(),
            answered: false,
        }
    }
}

impl Mechanism for CramMd5 {
    fn name(&self) -> &'static str {
        "CRAM-MD5"
    }

    fn start(&mut self) -> Step {
        Step::Challenge(self.challenge.clone().into_bytes())
    }

    fn step(&mut self, input: &[u8]) -> Step {
        if std::mem::replace(&mut self.answered, true) {
            return Step::Fail(SaslError::OutOfOrder);
        }
        let Ok(text) = utf8(input) else {
            return Step::Fail(SaslError::Malformed);
        };
        let Some((user, hex)) = text.rsplit_once(' ') else {
            return Step::Fail(SaslError::Malformed);
        };
        let Some(digest) = crate::hex::decode::<16>(hex) else {
            return Step::Fail(SaslError::Malformed);
        };
        if user.is_empty() || user.len() > 255 {
            return Step::Fail(SaslError::Malformed);
        }
        self.digest = Some(digest);
        self.user = user.to_owned();
        Step::Lookup {
            authcid: user.to_owned(),
        }
    }

    fn resume_secret(&mut self, secret: Option<&StoredSecret>) -> Step {
        let states = secret.and_then(StoredSecret::cram_md5_states);
        let (Some(digest), Some((inner, outer))) = (self.digest.take(), states) else {
            return Step::Fail(SaslError::Credentials);
        };
        let want = cram_context::hmac(&inner, &outer, self.challenge.as_bytes());
        if bool::from(want.ct_eq(&digest)) {
            Step::Verified {
                authzid: None,
                authcid: std::mem::take(&mut self.user),
                final_data: None,
            }
        } else {
            Step::Fail(SaslError::Credentials)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2195_example() {
        let mut m = CramMd5::with_challenge("<1896.697170952@postoffice.reston.mci.net>".into());
        assert!(
            matches!(m.start(), Step::Challenge(c) if c == b"<1896.697170952@postoffice.reston.mci.net>")
        );
        let check = |secret: Option<&str>| {
            let mut m =
                CramMd5::with_challenge("<1896.697170952@postoffice.reston.mci.net>".into());
            match m.step(b"tim b913a602c7eda7a495b4e6e7334d3890") {
                Step::Lookup { authcid } => assert_eq!(authcid, "tim"),
                s => panic!("{s:?}"),
            }
            let secret = secret.map(|s| StoredSecret::parse(s).unwrap());
            let verdict = m.resume_secret(secret.as_ref());
            assert!(matches!(
                m.step(b"tim b913a602c7eda7a495b4e6e7334d3890"),
                Step::Fail(SaslError::OutOfOrder)
            ));
            match verdict {
                Step::Verified { authcid, .. } => authcid == "tim",
                Step::Fail(SaslError::Credentials) => false,
                s => panic!("{s:?}"),
            }
        };
        assert!(check(Some("{PLAIN}tanstaaftanstaaf")));
        let stored =
            crate::auth::hash_password(crate::auth::Scheme::CramMd5, "tanstaaftanstaaf").unwrap();
        assert!(check(Some(&stored)));
        assert!(!check(Some("{PLAIN}wrong")));
        assert!(!check(None));
        // A hashed secret cannot answer CRAM-MD5: a failure like a wrong one.
        let sha =
            crate::auth::hash_password(crate::auth::Scheme::Ssha256, "tanstaaftanstaaf").unwrap();
        assert!(!check(Some(&sha)));
    }

    #[test]
    fn malformed_answers() {
        for bad in [
            &b"tim"[..],
            b"tim xyz",
            b" b913a602c7eda7a495b4e6e7334d3890",
            b"tim b913a602c7eda7a495b4e6e7334d389",
            b"\xff x",
        ] {
            assert!(
                matches!(
                    CramMd5::new("h").unwrap().step(bad),
                    Step::Fail(SaslError::Malformed)
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn challenges_are_unique() {
        let (a, b) = (
            CramMd5::new("pop.test").unwrap(),
            CramMd5::new("pop.test").unwrap(),
        );
        assert_ne!(a.challenge, b.challenge);
        assert!(a.challenge.starts_with('<') && a.challenge.ends_with("@pop.test>"));
    }
}

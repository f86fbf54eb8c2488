// SPDX-License-Identifier: AGPL-3.0-only
//! EXTERNAL (RFC 4422 App. A): the identity was established outside SASL,
//! here by a TLS client certificate verified against the configured CA
//! and mapped to a user name. The client may send an authorization
//! identity; an empty one means "the identity you already know".

use super::{Mechanism, SaslError, Step, utf8};

pub struct External {
    identity: Option<String>,
    used: bool,
}

impl External {
    pub fn new(identity: Option<String>) -> Self {
        External {
            identity,
            used: false,
        }
    }
}

impl Mechanism for External {
    fn name(&self) -> &'static str {
        "EXTERNAL"
    }

    fn step(&mut self, input: &[u8]) -> Step {
        if std::mem::replace(&mut self.used, true) {
            return Step::Fail(SaslError::OutOfOrder);
        }
        if input.len() > 255 {
            return Step::Fail(SaslError::Malformed);
        }
        let authzid = match utf8(input) {
            Ok(z) => z,
            Err(e) => return Step::Fail(e),
        };
        let Some(identity) = self.identity.take() else {
            return Step::Fail(SaslError::Credentials);
        };
        Step::Verified {
            authzid: Some(authzid).filter(|z| !z.is_empty() && *z != identity),
            authcid: identity,
            final_data: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_the_certificate() {
        let verified = |input: &[u8]| match External::new(Some("alice".into())).step(input) {
            Step::Verified {
                authzid, authcid, ..
            } => (authzid, authcid),
            s => panic!("{s:?}"),
        };
        assert_eq!(verified(b""), (None, "alice".to_owned()));
        assert_eq!(verified(b"alice"), (None, "alice".to_owned()));
        assert_eq!(
            verified(b"bob"),
            (Some("bob".to_owned()), "alice".to_owned())
        );
        assert!(matches!(
            External::new(None).step(b""),
            Step::Fail(SaslError::Credentials)
        ));
        assert!(matches!(
            External::new(Some("a".into())).step(b"\xff"),
            Step::Fail(SaslError::Malformed)
        ));
        let mut m = External::new(Some("a".into()));
        m.step(b"");
        assert!(matches!(m.step(b""), Step::Fail(SaslError::OutOfOrder)));
    }
}

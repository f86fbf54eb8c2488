// SPDX-License-Identifier: AGPL-3.0-only
//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message.

use zeroize::Zeroizing;

use super::{Mechanism, SaslError, Step, utf8};

#[derive(Debug, Default)]
pub struct Plain {
    used: bool,
}

impl Mechanism for Plain {
    fn name(&self) -> &'static str {
        "PLAIN"
    }

    fn start(&mut self) -> Step {
        Step::Challenge(Vec::new())
    }

    fn step(&mut self, input: &[u8]) -> Step {
        if std::mem::replace(&mut self.used, true) {
            return Step::Fail(SaslError::OutOfOrder);
        }
        match parse(input) {
            Ok(step) => step,
            Err(e) => Step::Fail(e),
        }
    }
}

fn parse(input: &[u8]) -> Result<Step, SaslError> {
    let mut parts = input.splitn(3, |b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || password.contains(&0) || authcid.len() > 255 || authzid.len() > 255 {
        return Err(SaslError::Malformed);
    }
    let authcid = utf8(authcid)?;
    let authzid = match authzid {
        b"" => None,
        z => Some(utf8(z)?).filter(|z| *z != authcid),
    };
    Ok(Step::Password {
        authzid,
        authcid,
        password: Zeroizing::new(password.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Step {
        Plain::default().step(input)
    }

    #[test]
    fn rfc4616_forms() {
        match run(b"\0tim\0tanstaaftanstaaf") {
            Step::Password {
                authzid,
                authcid,
                password,
            } => {
                assert_eq!(authzid, None);
                assert_eq!(authcid, "tim");
                assert_eq!(password.as_slice(), b"tanstaaftanstaaf");
            }
            s => panic!("{s:?}"),
        }
        match run(b"Ursel\0Kurt\0xipj3plmq") {
            Step::Password {
                authzid, authcid, ..
            } => {
                assert_eq!(authzid.as_deref(), Some("Ursel"));
                assert_eq!(authcid, "Kurt");
            }
            s => panic!("{s:?}"),
        }
        // An authzid equal to the authcid is no request for another identity.
        assert!(matches!(
            run(b"tim\0tim\0pw"),
            Step::Password { authzid: None, .. }
        ));
        // Empty password is allowed in the syntax (it will just not match).
        assert!(matches!(run(b"\0tim\0"), Step::Password { .. }));
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"tim",
            b"\0tim",
            b"\0\0pw",
            b"\0tim\0p\0w",
            b"\0\xff\0pw",
        ] {
            assert!(
                matches!(run(bad), Step::Fail(SaslError::Malformed)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn second_message_is_out_of_order() {
        let mut m = Plain::default();
        assert!(matches!(m.step(b"\0a\0b"), Step::Password { .. }));
        assert!(matches!(
            m.step(b"\0a\0b"),
            Step::Fail(SaslError::OutOfOrder)
        ));
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's older form): a bearer
//! token in one message. A refused token is answered with the JSON error
//! challenge; the client acknowledges it and then gets `-ERR [AUTH]`.

use zeroize::Zeroizing;

use super::{Mechanism, SaslError, Step, TokenError};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    OAuthBearer,
    XOAuth2,
}

enum State {
    Start,
    Validating {
        authzid: Option<String>,
    },
    /// The error challenge went out; the client's acknowledgement ends it.
    Refused,
    Done,
}

pub struct OAuth {
    kind: Kind,
    state: State,
}

impl OAuth {
    pub fn oauthbearer() -> Self {
        OAuth {
            kind: Kind::OAuthBearer,
            state: State::Start,
        }
    }

    pub fn xoauth2() -> Self {
        OAuth {
            kind: Kind::XOAuth2,
            state: State::Start,
        }
    }

    /// The RFC 7628 §3.2.2 error object (or Google's for XOAUTH2).
    fn error_challenge(&self, e: &TokenError) -> Vec<u8> {
        let status = match (self.kind, e) {
            (Kind::OAuthBearer, TokenError::Invalid(_)) => "invalid_token",
            (Kind::OAuthBearer, TokenError::Unavailable(_)) => "temporarily_unavailable",
            (Kind::XOAuth2, TokenError::Invalid(_)) => "401",
            (Kind::XOAuth2, TokenError::Unavailable(_)) => "503",
        };
        let json = match self.kind {
            Kind::OAuthBearer => serde_json::json!({ "status": status, "scope": "pop" }),
            Kind::XOAuth2 => {
                serde_json::json!({ "status": status, "schemes": "bearer", "scope": "pop" })
            }
        };
        json.to_string().into_bytes()
    }
}

/// `auth=Bearer <token>` among `key=value` pairs separated by ^A.
fn bearer_token(pairs: &[u8]) -> Result<Zeroizing<String>, SaslError> {
    let text = std::str::from_utf8(pairs).map_err(|_| SaslError::Malformed)?;
    let mut token = None;
    for pair in text.split('\x01').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or(SaslError::Malformed)?;
        if key == "auth" {
            let (scheme, t) = value.split_once(' ').ok_or(SaslError::Malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") || t.trim().is_empty() {
                return Err(SaslError::Malformed);
            }
            token = Some(Zeroizing::new(t.trim().to_owned()));
        }
    }
    token.ok_or(SaslError::Malformed)
}

/// OAUTHBEARER: `gs2-header ^A kvpairs ^A`.
fn parse_oauthbearer(input: &[u8]) -> Result<(Option<String>, Zeroizing<String>), SaslError> {
    let split = input
        .iter()
        .position(|&b| b == 1)
        .ok_or(SaslError::Malformed)?;
    let header = std::str::from_utf8(&input[..split]).map_err(|_| SaslError::Malformed)?;
    let mut parts = header.splitn(3, ',');
    let (Some(flag), Some(authzid), Some("")) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SaslError::Malformed);
    };
    if !matches!(flag, "n" | "y") {
        // No channel binding exists for OAUTHBEARER.
        return Err(SaslError::Malformed);
    }
    let authzid = match authzid {
        "" => None,
        a => Some(
            a.strip_prefix("a=")
                .ok_or(SaslError::Malformed)?
                .replace("=2C", ",")
                .replace("=3D", "="),
        ),
    };
    Ok((authzid, bearer_token(&input[split..])?))
}

/// XOAUTH2: `user=<name> ^A auth=Bearer <token> ^A ^A`.
fn parse_xoauth2(input: &[u8]) -> Result<(Option<String>, Zeroizing<String>), SaslError> {
    let text = std::str::from_utf8(input).map_err(|_| SaslError::Malformed)?;
    let user = text
        .split('\x01')
        .find_map(|p| p.strip_prefix("user="))
        .filter(|u| !u.is_empty())
        .ok_or(SaslError::Malformed)?;
    Ok((Some(user.to_owned()), bearer_token(input)?))
}

impl Mechanism for OAuth {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::OAuthBearer => "OAUTHBEARER",
            Kind::XOAuth2 => "XOAUTH2",
        }
    }

    fn step(&mut self, input: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                let parsed = match self.kind {
                    Kind::OAuthBearer => parse_oauthbearer(input),
                    Kind::XOAuth2 => parse_xoauth2(input),
                };
                match parsed {
                    Ok((authzid, token)) => {
                        self.state = State::Validating {
                            authzid: authzid.clone(),
                        };
                        Step::Bearer { authzid, token }
                    }
                    Err(e) => Step::Fail(e),
                }
            }
            // RFC 7628 §3.2.3: the client answers the error with ^A
            // (XOAUTH2 clients send an empty response).
            State::Refused if input == b"\x01" || input.is_empty() => {
                Step::Fail(SaslError::Credentials)
            }
            State::Refused => Step::Fail(SaslError::Malformed),
            _ => Step::Fail(SaslError::OutOfOrder),
        }
    }

    fn resume_token(&mut self, user: Result<String, TokenError>) -> Step {
        let State::Validating { authzid } = std::mem::replace(&mut self.state, State::Done) else {
            return Step::Fail(SaslError::OutOfOrder);
        };
        match user {
            // XOAUTH2's user= names who the client means; it must be the
            // token's user (or one the token's user may act for).
            Ok(user) => Step::Verified {
                authzid: authzid.filter(|z| *z != user),
                authcid: user,
                final_data: None,
            },
            Err(e) => {
                self.state = State::Refused;
                Step::Challenge(self.error_challenge(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7628_initial_response() {
        // RFC 7628 §4.1.
        let ir = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let mut m = OAuth::oauthbearer();
        match m.step(ir) {
            Step::Bearer { authzid, token } => {
                assert_eq!(authzid.as_deref(), Some("user@example.com"));
                assert_eq!(token.as_str(), "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
            }
            s => panic!("{s:?}"),
        }
        match m.resume_token(Ok("user@example.com".into())) {
            Step::Verified {
                authzid, authcid, ..
            } => {
                assert_eq!(authzid, None);
                assert_eq!(authcid, "user@example.com");
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn refused_token_gets_the_error_challenge_then_fails() {
        let mut m = OAuth::oauthbearer();
        assert!(matches!(
            m.step(b"n,,\x01auth=Bearer x\x01\x01"),
            Step::Bearer { authzid: None, .. }
        ));
        let Step::Challenge(c) = m.resume_token(Err(TokenError::Invalid("expired".into()))) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["status"], "invalid_token");
        assert!(matches!(
            m.step(b"\x01"),
            Step::Fail(SaslError::Credentials)
        ));
    }

    #[test]
    fn xoauth2() {
        let mut m = OAuth::xoauth2();
        match m.step(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg\x01\x01") {
            Step::Bearer { authzid, token } => {
                assert_eq!(authzid.as_deref(), Some("someuser@example.com"));
                assert!(token.starts_with("ya29."));
            }
            s => panic!("{s:?}"),
        }
        // The token names someone else: that stays an authzid to refuse.
        assert!(matches!(
            m.resume_token(Ok("other".into())),
            Step::Verified { authzid: Some(z), .. } if z == "someuser@example.com"
        ));
        let mut m = OAuth::xoauth2();
        m.step(b"user=u\x01auth=Bearer t\x01\x01");
        let Step::Challenge(c) = m.resume_token(Err(TokenError::Invalid("bad".into()))) else {
            panic!()
        };
        assert!(String::from_utf8(c).unwrap().contains("\"401\""));
        assert!(matches!(m.step(b""), Step::Fail(SaslError::Credentials)));
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,\x01host=x\x01\x01",
            b"n,,\x01auth=Basic abc\x01\x01",
            b"p=tls-unique,,\x01auth=Bearer x\x01\x01",
            b"n,x=y,\x01auth=Bearer x\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
        ] {
            assert!(
                matches!(
                    OAuth::oauthbearer().step(bad),
                    Step::Fail(SaslError::Malformed)
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            OAuth::xoauth2().step(b"auth=Bearer x\x01\x01"),
            Step::Fail(SaslError::Malformed)
        ));
    }

    #[test]
    fn long_tokens_are_fine() {
        let token = "a".repeat(4000);
        let ir = format!("n,,\x01auth=Bearer {token}\x01\x01");
        assert!(
            matches!(OAuth::oauthbearer().step(ir.as_bytes()), Step::Bearer { token: t, .. } if t.len() == 4000)
        );
    }
}

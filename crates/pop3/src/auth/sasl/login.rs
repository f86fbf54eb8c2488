// SPDX-License-Identifier: AGPL-3.0-only
//! LOGIN (draft-murchison-sasl-login): "Username:" then "Password:", the
//! way Outlook speaks it. An initial response is taken as the user name.

use zeroize::Zeroizing;

use super::{Mechanism, SaslError, Step, utf8};

#[derive(Debug, Default)]
enum State {
    #[default]
    WantUser,
    WantPassword(String),
    Done,
}

#[derive(Debug, Default)]
pub struct Login {
    state: State,
}

impl Mechanism for Login {
    fn name(&self) -> &'static str {
        "LOGIN"
    }

    fn start(&mut self) -> Step {
        Step::Challenge(b"Username:".to_vec())
    }

    fn step(&mut self, input: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::WantUser => {
                if input.is_empty() || input.len() > 255 || input.contains(&0) {
                    return Step::Fail(SaslError::Malformed);
                }
                match utf8(input) {
                    Ok(user) => {
                        self.state = State::WantPassword(user);
                        Step::Challenge(b"Password:".to_vec())
                    }
                    Err(e) => Step::Fail(e),
                }
            }
            State::WantPassword(user) => {
                if input.contains(&0) {
                    return Step::Fail(SaslError::Malformed);
                }
                Step::Password {
                    authzid: None,
                    authcid: user,
                    password: Zeroizing::new(input.to_vec()),
                }
            }
            State::Done => Step::Fail(SaslError::OutOfOrder),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlook_exchange() {
        let mut m = Login::default();
        assert!(matches!(m.start(), Step::Challenge(c) if c == b"Username:"));
        assert!(matches!(m.step(b"alice"), Step::Challenge(c) if c == b"Password:"));
        match m.step(b"secret word") {
            Step::Password {
                authcid, password, ..
            } => {
                assert_eq!(authcid, "alice");
                assert_eq!(password.as_slice(), b"secret word");
            }
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            m.step(b"again"),
            Step::Fail(SaslError::OutOfOrder)
        ));
    }

    #[test]
    fn bad_user_name() {
        assert!(matches!(
            Login::default().step(b""),
            Step::Fail(SaslError::Malformed)
        ));
        assert!(matches!(
            Login::default().step(b"\xff"),
            Step::Fail(SaslError::Malformed)
        ));
    }
}

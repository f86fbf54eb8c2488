// SPDX-License-Identifier: AGPL-3.0-only
//! ANONYMOUS (RFC 4505): no credentials, only a trace string (often an
//! e-mail address) that the server logs. Off by default; when on, the
//! session opens one configured mailbox read-only.

use super::{Mechanism, SaslError, Step};

#[derive(Default)]
pub struct Anonymous {
    used: bool,
}

impl Mechanism for Anonymous {
    fn name(&self) -> &'static str {
        "ANONYMOUS"
    }

    fn step(&mut self, input: &[u8]) -> Step {
        if std::mem::replace(&mut self.used, true) {
            return Step::Fail(SaslError::OutOfOrder);
        }
        // RFC 4505 §2: up to 255 UTF-8 characters; keep control
        // characters out of the log.
        match std::str::from_utf8(input) {
            Ok(trace) if trace.chars().count() <= 255 && !trace.chars().any(char::is_control) => {
                Step::Anonymous {
                    trace: trace.to_owned(),
                }
            }
            _ => Step::Fail(SaslError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4505_trace() {
        assert!(matches!(
            Anonymous::default().step(b"sirhc"),
            Step::Anonymous { trace } if trace == "sirhc"
        ));
        assert!(matches!(
            Anonymous::default().step(b""),
            Step::Anonymous { .. }
        ));
        assert!(matches!(
            Anonymous::default().step(&[b'a'; 256]),
            Step::Fail(SaslError::Malformed)
        ));
        assert!(matches!(
            Anonymous::default().step(b"a\nb"),
            Step::Fail(SaslError::Malformed)
        ));
        let mut m = Anonymous::default();
        m.step(b"x");
        assert!(matches!(m.step(b"x"), Step::Fail(SaslError::OutOfOrder)));
    }
}

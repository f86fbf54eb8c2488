// SPDX-License-Identifier: AGPL-3.0-only
//! The sans-IO protocol core: command lines in, reply bytes out.

pub mod apop;
pub mod body;
pub mod command;
pub mod downgrade;
pub mod lines;
pub mod lmtp;
pub mod reply;

pub use apop::compute_apop_digest;
pub use body::{BodyEncoder, SizeCounter, crlf_size};
pub use command::{Command, MsgNum, ParseError, parse};
pub use reply::{Reply, RespCode};

/// RFC 1939 §7: a unique-id is 1 to 70 characters in 0x21..=0x7E.
pub fn valid_uidl(s: &str) -> bool {
    (1..=70).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uidl_grammar() {
        assert!(super::valid_uidl("abc"));
        assert!(!super::valid_uidl(""));
        assert!(!super::valid_uidl("a b"));
        assert!(!super::valid_uidl(&"x".repeat(71)));
    }
}

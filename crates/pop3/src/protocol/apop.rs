// SPDX-License-Identifier: AGPL-3.0-only
//! RFC 1939 §7 APOP: the digest a client sends instead of its password.

use md5::{Digest, Md5};

/// Lowercase hex MD5 of the greeting's timestamp (angle brackets included)
/// followed by the shared secret.
pub fn compute_apop_digest(timestamp: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    crate::hex::encode(&h.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc1939_example() {
        assert_eq!(
            super::compute_apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }
}

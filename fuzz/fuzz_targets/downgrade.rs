// SPDX-License-Identifier: AGPL-3.0-only
//! The RFC 6858 header downgrader: whatever 8-bit header arrives, what a
//! client outside UTF-8 mode receives is 7-bit, and a plain ASCII header is
//! passed on untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::protocol::downgrade::{downgrade_header, header_end};

fuzz_target!(|data: &[u8]| {
    let header = match header_end(data) {
        Some(end) => &data[..end],
        None => data,
    };
    match downgrade_header(header) {
        Some(out) => {
            assert!(!header.is_ascii());
            assert!(
                out.is_ascii(),
                "8-bit left in {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        None => assert!(header.is_ascii(), "an 8-bit header passed on as it is"),
    }
});

// SPDX-License-Identifier: AGPL-3.0-only
//! Maildir++ `maildirsize`: a file that parses, rewritten as pop3d
//! rewrites it (the definition and one line of totals), parses to the
//! same definition and totals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::store::maildir::quota;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(file) = quota::parse(text) {
        let written = file.to_text();
        assert_eq!(quota::parse(&written).as_ref(), Some(&file), "{written:?}");
    }
});

// SPDX-License-Identifier: AGPL-3.0-only
//! The trash list (`.Trash/pop3d-trash`) and the retrieval times
//! (`pop3d-retrieved`): what is read, written and read again is equal,
//! and nothing read from the trash list names a file outside `.Trash/cur`
//! or carries a UIDL RFC 1939 forbids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::store::maildir::keep;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trash = keep::parse_trash(text);
    for t in &trash {
        assert!(!t.name.is_empty() && !t.name.contains('/'), "{:?}", t.name);
        assert!(pop3::protocol::valid_uidl(&t.uidl), "{:?}", t.uidl);
    }
    assert_eq!(keep::parse_trash(&keep::format_trash(&trash)), trash);
    let times = keep::parse_retrieved(text);
    assert_eq!(
        keep::parse_retrieved(&keep::format_retrieved(&times)),
        times
    );
});

// SPDX-License-Identifier: AGPL-3.0-only
//! Courier's `courierpop3dsizelist`, taken over at the first login: what
//! it gives is an index that pop3d writes and reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::store::maildir::index::Index;
use pop3::store::uidl::UidlFormat;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(index) = Index::from_courier(text, &UidlFormat::default()) {
        pop3_fuzz::assert_unique(&index.entries);
        let written = index.serialize();
        let again = Index::parse(&written).expect("its own output parses");
        assert_eq!(again.serialize(), written, "read, written, read back");
    }
});

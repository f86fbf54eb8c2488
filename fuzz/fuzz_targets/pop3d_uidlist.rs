// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d-uidlist`, pop3d's Maildir index: what parses writes back to text
//! that parses to the same index; what does not is salvaged without a
//! panic. No two messages ever share a UID or a UIDL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::store::maildir::index::Index;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Index::parse(text) {
        Some(index) => {
            pop3_fuzz::assert_unique(&index.entries);
            let written = index.serialize();
            let again = Index::parse(&written).expect("its own output parses");
            assert_eq!(again.serialize(), written, "read, written, read back");
        }
        None => {
            pop3_fuzz::assert_unique(&Index::salvage(text).entries);
        }
    }
});

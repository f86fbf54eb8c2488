// SPDX-License-Identifier: AGPL-3.0-only
//! The passwd file (Dovecot's format, with extra fields): every user read
//! has a name a mailbox can safely be made from and is found by it; a
//! line that is not a user is a warning, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let table = pop3::auth::passwd::parse(text);
    assert!(table.len() <= text.lines().count());
    for user in table.users() {
        assert!(
            pop3::auth::check_name(&user.name).is_ok(),
            "{:?}",
            user.name
        );
        let found = table.get(&user.name).expect("a user is found by name");
        assert_eq!(found.name, user.name);
    }
});

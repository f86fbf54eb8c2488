// SPDX-License-Identifier: AGPL-3.0-only
//! pop3d against Debian's Courier on one Maildir: with `uidl_format =
//! "UID%u-%v"` a user moved from Courier keeps every UIDL, and mail that
//! arrives afterwards gets the UIDL Courier would give it. Courier's
//! `courierpop3d` is the program that serves a Maildir after login; it is
//! run directly, already authenticated, as its login front end runs it.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

/// Unpacked by `.ci/run` (the package conflicts with Dovecot's), or
/// installed.
const COURIERPOP3D: [&str; 2] = [
    "/opt/courier-pop/usr/lib/courier/courier/courierpop3d",
    "/usr/lib/courier/courier/courierpop3d",
];

fn courierpop3d() -> Option<&'static str> {
    COURIERPOP3D
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

const MAIL: [&[u8]; 3] = [
    b"From: a@example.org\nSubject: one\n\nbody\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nbody\r\n",
    b"From: c@example.org\nSubject: three\n\nbody",
];

/// Courier's UIDL listing of alice's Maildir (it writes its own list,
/// `courierpop3dsizelist`, as it goes).
fn courier_uidl(s: &Setup) -> Vec<String> {
    let mut child = Command::new(courierpop3d().unwrap())
        .arg("alice")
        .current_dir(s.path("mail"))
        .env_clear()
        .env("AUTHENTICATED", "alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"UIDL\r\nQUIT\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("+OK"), "{text}");
    assert!(lines.next().unwrap().starts_with("+OK"), "{text}");
    lines.take_while(|l| *l != ".").map(str::to_owned).collect()
}

fn pop3d_uidl(port: u16) -> Vec<String> {
    let mut c = Client::login(port, "alice", "secret");
    let text = String::from_utf8(c.multiline("UIDL")).unwrap();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    text.lines()
        .skip(1)
        .take_while(|l| *l != ".")
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_maildir_from_courier_keeps_its_uidls() {
    if courierpop3d().is_none() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "courierpop3d is missing; .ci/run unpacks it"
        );
        eprintln!("SKIP: courier-pop is not installed");
        return;
    }
    let s = Setup::new(&MAIL);
    let config = read(&s.config).replace("[storage]\n", "[storage]\nuidl_format = \"UID%u-%v\"\n");
    std::fs::write(&s.config, config).unwrap();
    let courier = courier_uidl(&s);
    assert_eq!(courier.len(), 3);
    assert!(courier[0].starts_with("1 UID1-"), "{courier:?}");

    let _pop3d = s.start();
    assert_eq!(pop3d_uidl(s.plain), courier, "the UIDLs Courier gave");
    // New mail, seen first by pop3d: Courier, shown the Maildir again,
    // gives it the same UIDL, and the old ones stay.
    s.put(b"From: d@example.org\nSubject: four\n\nbody\n");
    let ours = pop3d_uidl(s.plain);
    assert_eq!(ours.len(), 4);
    assert_eq!(courier_uidl(&s), ours);
    assert_eq!(ours[..3], courier[..]);
}

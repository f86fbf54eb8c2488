// SPDX-License-Identifier: AGPL-3.0-only
//! pop3d against Debian's Dovecot on one maildrop: a user moved from
//! Dovecot must see the same UIDLs, sizes and message bytes, before and
//! after new mail arrives, or every client downloads everything again.
//! Dovecot runs on a temporary configuration as the benchmark runs it (its
//! mail processes refuse root, so the Maildir belongs to `vmail`).

use std::process::{Child, Command, Stdio};

use crate::common::*;

/// Messages of every shape that sizes depend on.
const MAIL: [&[u8]; 4] = [
    b"From: a@example.org\nSubject: lf only\n\nbody\n.dot line\n",
    b"From: b@example.org\r\nSubject: crlf\r\n\r\nbody\r\n",
    b"From: c@example.org\nSubject: no final newline\n\nbody",
    b"From: d@example.org\nSubject: mixed\r\n\nbody\r\nmore\n",
];

struct Dovecot(Child);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn start_dovecot(s: &Setup) -> (Dovecot, u16) {
    let _ = Command::new(tool_path("useradd").unwrap())
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "vmail",
        ])
        .stderr(Stdio::null())
        .status();
    let ok = Command::new("chown")
        .args(["-R", "vmail:vmail"])
        .arg(s.path("mail"))
        .status()
        .unwrap();
    assert!(ok.success());
    // Dovecot's auth process runs as "dovecot" and must reach the passwd file.
    let ok = Command::new("chmod")
        .args(["755"])
        .arg(s.dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let run = s.path("dovecot");
    let conf = s.path("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "protocols = pop3\n\
             listen = 127.0.0.1\n\
             base_dir = {run}/run\n\
             state_dir = {run}/state\n\
             log_path = {run}/dovecot.log\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             first_valid_uid = 1\n\
             mail_location = maildir:{mail}/%n\n\
             pop3_uidl_format = %08Xu%08Xv\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {passwd}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {passwd}\n  default_fields = uid=vmail gid=vmail\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n",
            run = run.display(),
            mail = s.path("mail").display(),
            passwd = s.path("passwd").display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let child = Command::new(tool_path("dovecot").unwrap())
        .args(["-F", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dovecot = Dovecot(child);
    wait_for_port(port);
    (dovecot, port)
}

/// UIDL, LIST and every message as one server sends them, then QUIT.
fn listing(port: u16) -> (String, String, Vec<Vec<u8>>) {
    let mut c = Client::login(port, "alice", "secret");
    // Status lines are free text and differ; the listings must not.
    let body = |r: Vec<u8>| {
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("+OK"), "{text}");
        text[text.find('\n').unwrap() + 1..].to_owned()
    };
    let uidl = body(c.multiline("UIDL"));
    let list = body(c.multiline("LIST"));
    let count = list.lines().count() - 1;
    let bodies = (1..=count)
        .map(|i| {
            let mut r = c.multiline(&format!("RETR {i}"));
            // The status line differs between servers; the bytes do not.
            let first = r.iter().position(|&b| b == b'\n').unwrap() + 1;
            r.drain(..first);
            r
        })
        .collect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    (uidl, list, bodies)
}

/// The octets RETR sends before the terminating line, undoing
/// dot-stuffing: what LIST must report.
fn sent_size(retr: &[u8]) -> usize {
    let body = &retr[..retr.len() - 3];
    let stuffed = body
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b".."))
        .count();
    body.len() - stuffed
}

/// LIST equals what RETR sends, and Dovecot's LIST, except for a message
/// whose last line has no line end: RETR adds a CRLF, which Dovecot's LIST
/// leaves out and pop3d's counts.
fn same_sizes(
    ours: &(String, String, Vec<Vec<u8>>),
    theirs: &(String, String, Vec<Vec<u8>>),
    originals: &[&[u8]],
) {
    let sizes = |list: &str| -> Vec<usize> {
        list.lines()
            .filter(|l| *l != ".")
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (mine, dovecots) = (sizes(&ours.1), sizes(&theirs.1));
    assert_eq!(mine.len(), originals.len());
    for (i, original) in originals.iter().enumerate() {
        assert_eq!(
            mine[i],
            sent_size(&ours.2[i]),
            "message {}: LIST is what RETR sends",
            i + 1
        );
        let open = !original.ends_with(b"\n");
        assert_eq!(
            mine[i],
            dovecots[i] + 2 * usize::from(open),
            "message {}",
            i + 1
        );
    }
}

#[test]
fn uidls_sizes_and_bytes_match_dovecots_before_and_after_new_mail() {
    if !require("dovecot") {
        return;
    }
    if !is_root() {
        eprintln!("SKIP: Dovecot's mail processes need root to switch to vmail");
        return;
    }
    let s = Setup::new(&MAIL);
    let (dovecot, dport) = start_dovecot(&s);
    // Dovecot serves the maildrop first, as before a migration.
    let before = listing(dport);
    assert_eq!(before.2.len(), MAIL.len());
    let server = s.start();
    let ours = listing(s.plain);
    assert_eq!(ours.0, before.0, "UIDL byte for byte");
    assert_eq!(ours.2, before.2, "RETR byte for byte");
    same_sizes(&ours, &before, &MAIL);

    // New mail, seen by both.
    for (i, m) in MAIL[..2].iter().enumerate() {
        let name = format!("{}.M{i}P9.later", 1_800_000_000 + i);
        std::fs::write(s.path("mail/alice/new").join(name), m).unwrap();
    }
    let theirs = listing(dport);
    let ours = listing(s.plain);
    assert_eq!(theirs.2.len(), MAIL.len() + 2);
    assert_eq!(ours.0, theirs.0, "UIDL after new mail");
    assert_eq!(ours.2, theirs.2, "RETR after new mail");
    let all: Vec<&[u8]> = MAIL.iter().chain(&MAIL[..2]).copied().collect();
    same_sizes(&ours, &theirs, &all);
    assert!(
        ours.0.starts_with(&before.0[..before.0.len() - 3]),
        "old UIDLs unchanged"
    );
    drop(server);
    drop(dovecot);
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Crash points where mail changes hands. pop3d built with the
//! `failpoints` feature and `panic = "abort"` (the `crashpoints` profile;
//! `.ci/run` builds it and names it in `POP3D_CRASHPOINTS`) is told by
//! `FAILPOINTS=NAME=panic` to die at one named step: a delivery between
//! its write, fsync, rename and directory fsync, LMTP between storing and
//! `250` (the second delivery: the first must survive), a QUIT between
//! two unlinks or trash moves, around `maildirsize`
//! or the database's DELETE, before its `+OK`, the index write at login,
//! the lease heartbeat. Each point runs a small workload (three deliveries
//! over LMTP, a session that lists, reads, deletes two and quits), must
//! fire (the process ends by SIGABRT), and pop3d started again must show:
//!
//! - every acknowledged delivery, unless a session marked it deleted and
//!   sent QUIT (present or absent then; absent if QUIT said `+OK`);
//! - every UIDL listed before the crash, for the same message, unless so
//!   deleted; no UIDL for two messages; the same listing at a second login;
//! - every message whole, byte for byte (an unacknowledged delivery may be
//!   there or not, never half);
//! - on Maildir, an index and a `maildirsize` that read back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Where each point is, and on which stores it is run.
const POINTS: &[(&str, &[Backend])] = &[
    ("maildir-deliver-before-fsync", &[Backend::Maildir]),
    ("maildir-deliver-before-rename", &[Backend::Maildir]),
    ("maildir-deliver-before-dir-fsync", &[Backend::Maildir]),
    ("maildir-deliver-stored", &[Backend::Maildir]),
    ("maildir-index-before-write", &[Backend::Maildir]),
    ("maildir-remove-after-unlink", &[Backend::Maildir]),
    ("maildir-remove-before-maildirsize", &[Backend::Maildir]),
    ("maildir-remove-after-maildirsize", &[Backend::Maildir]),
    ("maildir-trash-after-move", &[Backend::Maildir]),
    ("postgres-deliver-before-commit", &[Backend::Postgres]),
    ("postgres-deliver-after-commit", &[Backend::Postgres]),
    ("postgres-quit-before-delete", &[Backend::Postgres]),
    ("postgres-quit-after-delete", &[Backend::Postgres]),
    ("postgres-lease-heartbeat", &[Backend::Postgres]),
    (
        "lmtp-stored-before-reply",
        &[Backend::Maildir, Backend::Postgres],
    ),
    (
        "pop3-quit-before-reply",
        &[Backend::Maildir, Backend::Postgres],
    ),
];

/// A message large enough that a torn write shows.
fn message(n: u32) -> Vec<u8> {
    let mut m = format!("Subject: m{n}\r\nX-Test-Id: {n}\r\n\r\n").into_bytes();
    for line in 0..100 {
        m.extend_from_slice(format!("line {line} of message {n}\r\n").as_bytes());
    }
    m
}

/// What a run of the workload saw.
#[derive(Debug, Default)]
struct History {
    /// Deliveries answered `250`.
    acknowledged: BTreeSet<u32>,
    /// The listing before the crash: UIDL -> message.
    listed: BTreeMap<String, u32>,
    /// Marked with DELE in a session that then sent QUIT.
    deleted: BTreeSet<u32>,
    /// That QUIT answered `+OK`.
    quit_ok: bool,
    /// A session left open for the server to crash under.
    held: Option<Raw>,
}

/// A POP3 or LMTP connection that never panics on a server that died: a
/// closed connection reads as an empty reply.
#[derive(Debug)]
struct Raw(BufReader<TcpStream>);

impl Raw {
    fn connect(port: u16) -> Option<Raw> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut raw = Raw(BufReader::new(s));
        (!raw.line().is_empty()).then_some(raw)
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.0.read_line(&mut l);
        l
    }

    fn send(&mut self, text: &[u8]) {
        let _ = self.0.get_mut().write_all(text);
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// A multi-line reply's lines, or None if it did not end with `.`.
    fn multi(&mut self, line: &str) -> Option<Vec<String>> {
        if !self.cmd(line).starts_with("+OK") {
            return None;
        }
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                return None;
            }
            if l == ".\r\n" {
                return Some(lines);
            }
            lines.push(l);
        }
    }

    /// LMTP: one message to alice; whether it was answered `250`.
    fn deliver(port: u16, n: u32) -> bool {
        let Some(mut c) = Raw::connect(port) else {
            return false;
        };
        for line in [
            "LHLO crash.test",
            "MAIL FROM:<a@b.example>",
            "RCPT TO:<alice>",
        ] {
            c.send(format!("{line}\r\n").as_bytes());
            loop {
                let l = c.line();
                if l.len() < 4 || l.as_bytes()[3] != b'-' {
                    break;
                }
            }
        }
        if !c.cmd("DATA").starts_with("354") {
            return false;
        }
        c.send(&message(n));
        c.send(b".\r\n");
        c.line().starts_with("250")
    }
}

/// The test id in a message as RETR sent it, and whether the message is
/// whole: the bytes delivered, after the two header lines LMTP adds.
fn identify(retr: &[String]) -> (u32, bool) {
    let text: String = retr.concat();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Test-Id: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("a message without its id:\n{text}"));
    let whole = text.as_bytes().ends_with(&message(id));
    (id, whole)
}

/// pop3d from `bin`, killed when dropped (a failed assertion leaves no
/// server behind).
fn spawn(bin: &Path, s: &Setup, point: Option<&str>) -> Running {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(point) = point {
        // A delivery point lets the first delivery through and stops the
        // second, so that an acknowledged message must survive the crash.
        let on = if point.contains("deliver") || point.starts_with("lmtp") {
            "1*off->panic"
        } else {
            "panic"
        };
        cmd.env("FAILPOINTS", format!("{point}={on}"));
    }
    let running = Running {
        child: cmd.spawn().unwrap(),
    };
    wait_for_port(s.plain);
    running
}

/// The pop3d built with crash points, or a visible skip.
fn crash_binary() -> Option<PathBuf> {
    let bin = std::env::var_os("POP3D_CRASHPOINTS").map(PathBuf::from);
    if bin.is_none() {
        skip(
            "needs pop3d built with crash points: cargo build -p pop3d --features failpoints, \
             cp target/debug/pop3d target/pop3d-crashpoints, \
             POP3D_CRASHPOINTS=$PWD/target/pop3d-crashpoints",
        );
    }
    bin
}

/// Alice's mailbox as a fresh login lists and reads it: UIDL -> test id.
/// Every message must be whole, and no UIDL listed twice.
fn mailbox(port: u16, what: &str) -> BTreeMap<String, u32> {
    let mut c = Client::login(port, "alice", "secret");
    let listing = String::from_utf8(c.multiline("UIDL")).unwrap();
    let mut seen = BTreeMap::new();
    for l in listing.lines().skip(1).filter(|l| *l != ".") {
        let (n, uidl) = l.split_once(' ').unwrap();
        let retr = String::from_utf8(c.multiline(&format!("RETR {n}"))).unwrap();
        let lines: Vec<String> = retr
            .split_inclusive('\n')
            .skip(1)
            .filter(|l| *l != ".\r\n")
            .map(str::to_owned)
            .collect();
        let (id, whole) = identify(&lines);
        assert!(whole, "{what}: message {id} is not whole");
        assert!(
            seen.insert(uidl.to_owned(), id).is_none(),
            "{what}: UIDL {uidl} twice"
        );
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    seen
}

/// A pop3d tool run to its end, or to the crash point `point` (`ACTION`
/// as fail-rs reads it: `panic`, `1*off->panic`).
fn tool(bin: &Path, args: &[&str], point: Option<(&str, &str)>) -> std::process::Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null());
    if let Some((name, action)) = point {
        cmd.env("FAILPOINTS", format!("{name}={action}"));
    }
    cmd.output().unwrap()
}

/// The workload against a server armed at one point.
fn workload(s: &Setup, lmtp: u16, heartbeat: bool) -> History {
    let mut h = History::default();
    for n in 1..=3 {
        if !Raw::deliver(lmtp, n) {
            break;
        }
        h.acknowledged.insert(n);
    }
    let Some(mut c) = Raw::connect(s.plain) else {
        return h;
    };
    c.cmd("USER alice");
    if !c.cmd("PASS secret").starts_with("+OK") {
        return h;
    }
    let Some(uidls) = c.multi("UIDL") else {
        return h;
    };
    let mut by_number = BTreeMap::new();
    for l in &uidls {
        let (n, uidl) = l.trim_end().split_once(' ').unwrap();
        let Some(retr) = c.multi(&format!("RETR {n}")) else {
            return h;
        };
        let (id, whole) = identify(&retr);
        assert!(whole, "message {id} was not whole before the crash");
        h.listed.insert(uidl.to_owned(), id);
        by_number.insert(n.to_owned(), id);
    }
    let marked: Vec<u32> = ["1", "2"]
        .iter()
        .filter(|n| c.cmd(&format!("DELE {n}")).starts_with("+OK"))
        .map(|n| by_number[*n])
        .collect();
    if heartbeat {
        // The session stays open: within a third of lease_ttl the
        // heartbeat renews its lease, and the server dies there. No QUIT
        // reaches it, so nothing may be deleted.
        h.held = Some(c);
        return h;
    }
    h.deleted.extend(marked);
    h.quit_ok = c.cmd("QUIT").starts_with("+OK");
    h
}

/// The invariants, on the store after the crash, at two logins.
fn check(s: &Setup, h: &History, point: &str) {
    let mut seen_before: Option<BTreeMap<String, u32>> = None;
    for _ in 0..2 {
        let now = mailbox(s.plain, point);
        let ids: Vec<u32> = now.values().copied().collect();
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{point}: a message listed twice");
        for id in &h.acknowledged {
            let may_be_gone = h.deleted.contains(id);
            assert!(
                unique.contains(id) || may_be_gone,
                "{point}: acknowledged message {id} lost ({h:?}, now {now:?})"
            );
            if h.quit_ok && h.deleted.contains(id) {
                assert!(
                    !unique.contains(id),
                    "{point}: deleted message {id} came back"
                );
            }
        }
        for (uidl, id) in &h.listed {
            if !h.deleted.contains(id) {
                assert_eq!(now.get(uidl), Some(id), "{point}: UIDL {uidl} changed");
            }
        }
        if let Some(before) = &seen_before {
            assert_eq!(
                before, &now,
                "{point}: the listing changed between two logins"
            );
        }
        seen_before = Some(now);
    }
    if s.backend == Backend::Maildir {
        let md = s.path("mail/alice");
        // (An empty Maildir needs no index.)
        if let Ok(index) = std::fs::read_to_string(md.join("pop3d-uidlist")) {
            assert!(
                pop3::store::maildir::index::Index::parse(&index).is_some(),
                "{point}: the index does not read back:\n{index}"
            );
        }
        // Every file in the trash is named in the trash list (else no
        // restore or purge would ever find it).
        if let Ok(files) = std::fs::read_dir(md.join(".Trash/cur")) {
            let list = std::fs::read_to_string(md.join(".Trash/pop3d-trash")).unwrap_or_default();
            let named: BTreeSet<String> = pop3::store::maildir::keep::parse_trash(&list)
                .into_iter()
                .map(|t| t.name)
                .collect();
            for f in files {
                let name = f.unwrap().file_name().into_string().unwrap();
                assert!(
                    named.contains(&name),
                    "{point}: {name} in the trash, not in its list"
                );
            }
        }
        if let Ok(size) = std::fs::read_to_string(md.join("maildirsize")) {
            assert!(
                pop3::store::maildir::quota::parse(&size).is_some(),
                "{point}: maildirsize does not read back:\n{size}"
            );
        }
    }
}

#[test]
fn every_crash_point_keeps_mail_and_uidls() {
    let Some(bin) = crash_binary() else {
        return;
    };
    let mut ran = 0;
    for (point, backends) in POINTS {
        for &backend in *backends {
            let s = Setup::on(backend, &[]);
            let lmtp = free_port();
            let trash = if *point == "maildir-trash-after-move" {
                "delete = \"trash\"\n"
            } else {
                ""
            };
            let text = read(&s.config).replace(
                "[storage]\n",
                &format!("[storage]\n{trash}lease_ttl = \"3s\"\n"),
            ) + &format!("\n[[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n");
            std::fs::write(&s.config, text).unwrap();
            // A quota, so that Maildir deliveries and QUIT keep maildirsize.
            std::fs::write(
                s.path("passwd"),
                "alice:{PLAIN}secret::::::userdb_quota_rule=*:storage=10M\n",
            )
            .unwrap();
            let mut server = spawn(&bin, &s, Some(point));
            let h = workload(&s, lmtp, *point == "postgres-lease-heartbeat");
            let status = wait_for(Duration::from_secs(10), "the crash point fired", || {
                server.child.try_wait().unwrap()
            });
            assert_eq!(
                status.signal(),
                Some(6),
                "{point} on {backend:?}: {status:?} ({h:?})"
            );
            eprintln!("{point} on {backend:?}: {h:?}");
            assert!(!h.acknowledged.is_empty(), "{point}: nothing to check");
            let _again = spawn(&bin, &s, None);
            check(&s, &h, point);
            ran += 1;
        }
    }
    assert_eq!(ran, 18);
}

/// `pop3d restore` dies after putting back the first of two trashed
/// messages: each comes back under the UIDL it had, at once or when
/// restore runs again, and none twice.
#[test]
fn a_restore_cut_short_keeps_every_uidl() {
    let Some(bin) = crash_binary() else {
        return;
    };
    let s = Setup::new(&[]);
    let lmtp = free_port();
    let text = read(&s.config).replace("[storage]\n", "[storage]\ndelete = \"trash\"\n")
        + &format!("\n[[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n");
    std::fs::write(&s.config, text).unwrap();
    let _server = spawn(&bin, &s, None);
    for n in 1..=3 {
        assert!(Raw::deliver(lmtp, n));
    }
    let before = mailbox(s.plain, "delivered");
    assert_eq!(before.len(), 3);
    let mut c = Client::login(s.plain, "alice", "secret");
    c.cmd("DELE 1");
    c.cmd("DELE 2");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let config = s.config.to_str().unwrap();
    let restore = ["restore", "--config", config, "--user", "alice"];
    let cut = tool(
        &bin,
        &restore,
        Some(("maildir-restore-after-move", "panic")),
    );
    assert_eq!(cut.status.signal(), Some(6), "the point fired: {cut:?}");
    let partly = mailbox(s.plain, "cut short");
    assert_eq!(partly.len(), 2, "{partly:?}");
    for (uidl, id) in &partly {
        assert_eq!(before.get(uidl), Some(id), "back under another UIDL");
    }
    assert!(tool(&bin, &restore, None).status.success());
    assert_eq!(mailbox(s.plain, "restored"), before);
}

/// `pop3d import-pop3` dies after storing the second of three messages
/// (another pop3d is the old server): run again, it copies only the third,
/// and every message is there once, under the UIDL the old server gave it.
#[test]
fn an_import_cut_short_copies_nothing_twice() {
    let Some(bin) = crash_binary() else {
        return;
    };
    let old = Setup::new(&[&message(1), &message(2), &message(3)]);
    let _old_server = spawn(&bin, &old, None);
    let theirs = mailbox(old.plain, "the old server");
    let new = Setup::new(&[]);
    std::fs::write(new.path("alice.pw"), "secret\n").unwrap();
    let (config, from) = (
        new.config.to_str().unwrap(),
        format!("pop3://127.0.0.1:{}", old.plain),
    );
    let pw = new.path("alice.pw");
    let import = [
        "import-pop3",
        "--config",
        config,
        "--from",
        &from,
        "--user",
        "alice",
        "--allow-plaintext",
        "--password-file",
        pw.to_str().unwrap(),
    ];
    let cut = tool(
        &bin,
        &import,
        Some(("import-after-message", "1*off->panic")),
    );
    assert_eq!(cut.status.signal(), Some(6), "the point fired: {cut:?}");
    assert_eq!(new.maildir_count(), 2, "two stored before the crash");
    again_copies_only_the_third(tool(&bin, &import, None));
    let _new_server = spawn(&bin, &new, None);
    assert_eq!(mailbox(new.plain, "imported"), theirs);
}

/// A tool run again after a crash: it copied one message and skipped the
/// two there already.
fn again_copies_only_the_third(again: std::process::Output) {
    assert!(again.status.success(), "{again:?}");
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        said.contains("copied 1 messages") && said.contains("2 messages already there"),
        "{said}"
    );
}

/// `pop3d migrate-maildir` dies after copying the second of three
/// messages into PostgreSQL: run again, it copies only the third, and the
/// mailbox lists the Maildir's UIDLs, each message once and whole.
#[test]
fn a_migration_cut_short_copies_nothing_twice() {
    let Some(bin) = crash_binary() else {
        return;
    };
    let old = Setup::new(&[&message(1), &message(2), &message(3)]);
    let theirs = {
        let _old_server = spawn(&bin, &old, None);
        mailbox(old.plain, "the Maildir")
    };
    let new = Setup::on(Backend::Postgres, &[]);
    let (from, config) = (old.config.to_str().unwrap(), new.config.to_str().unwrap());
    let migrate = [
        "migrate-maildir",
        "--all",
        "--from",
        from,
        "--config",
        config,
    ];
    let cut = tool(
        &bin,
        &migrate,
        Some(("migrate-after-message", "1*off->panic")),
    );
    assert_eq!(cut.status.signal(), Some(6), "the point fired: {cut:?}");
    assert_eq!(new.count(), 2, "two copied before the crash");
    again_copies_only_the_third(tool(&bin, &migrate, None));
    let _new_server = spawn(&bin, &new, None);
    assert_eq!(mailbox(new.plain, "migrated"), theirs);
}

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

/// Dovecot is installed (in CI it must be) and can switch to `vmail`.
fn dovecot_runs_here() -> bool {
    if !require("dovecot") {
        return false;
    }
    if !is_root() {
        skip("Dovecot's mail processes need root to switch to vmail");
        return false;
    }
    true
}

/// Dovecot serving `s`'s mail root: plain POP3 (STLS offered) on the first
/// port, POP3 over TLS on the second, with `s`'s certificate; `admin` with
/// password `masterpw` is a master user.
fn start_dovecot(s: &Setup) -> (Dovecot, u16, u16) {
    vmail_owns(&s.path("mail"));
    // Dovecot's auth process runs as "dovecot" and must reach the passwd file.
    let ok = Command::new("chmod")
        .args(["755"])
        .arg(s.dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let (port, tls_port) = (free_port(), free_port());
    let run = s.path("dovecot");
    let conf = s.path("dovecot.conf");
    std::fs::write(s.path("masters"), "admin:{PLAIN}masterpw\n").unwrap();
    std::fs::write(
        &conf,
        format!(
            "protocols = pop3\n\
             listen = 127.0.0.1\n\
             base_dir = {run}/run\n\
             state_dir = {run}/state\n\
             log_path = {run}/dovecot.log\n\
             ssl = yes\n\
             ssl_cert = <{dir}/cert.pem\n\
             ssl_key = <{dir}/key.pem\n\
             auth_master_user_separator = *\n\
             disable_plaintext_auth = no\n\
             first_valid_uid = 1\n\
             mail_location = maildir:{mail}/%n\n\
             pop3_uidl_format = %08Xu%08Xv\n\
             passdb {{\n  driver = passwd-file\n  master = yes\n  args = {dir}/masters\n}}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {passwd}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {passwd}\n  default_fields = uid=vmail gid=vmail\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n  inet_listener pop3s {{\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n",
            run = run.display(),
            mail = s.path("mail").display(),
            passwd = s.path("passwd").display(),
            dir = s.dir.path().display(),
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
    wait_for_port(tls_port);
    (dovecot, port, tls_port)
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
    if !dovecot_runs_here() {
        return;
    }
    let s = Setup::new(&MAIL);
    let (dovecot, dport, _) = start_dovecot(&s);
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

/// A mailbox moved from Dovecot over TLS keeps every UIDL and byte; a
/// second run (over STLS) fetches only new mail; Dovecot keeps all of it;
/// `--all` with Dovecot's master user moves several mailboxes.
fn import_from_dovecot(backend: Backend) {
    if !dovecot_runs_here() {
        return;
    }
    let old = Setup::new(&MAIL);
    let bob = old.path("mail/bob");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(bob.join(sub)).unwrap();
    }
    std::fs::write(bob.join("new/1700000009.M1P1.old"), MAIL[1]).unwrap();
    let (dovecot, dport, tls_port) = start_dovecot(&old);
    let before = listing(dport);

    let new = Setup::on(backend, &[]);
    let file = |name: &str, text: &str| {
        std::fs::write(new.path(name), text).unwrap();
        new.path(name).to_str().unwrap().to_owned()
    };
    let alice_pw = file("alice.pw", "secret\n");
    let ca = old.path("cert.pem");
    let ca = ca.to_str().unwrap();
    let tls = format!("pop3s://127.0.0.1:{tls_port}");
    let one = [
        "--user",
        "alice",
        "--password-file",
        &alice_pw,
        "--ca-file",
        ca,
    ];
    let run = |from: &str, extra: &[&str]| {
        let mut args = vec!["--from", from];
        args.extend(&one);
        args.extend(extra);
        import_pop3(&new, &args)
    };

    let (code, out) = run(&tls, &["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would copy 4 messages"), "{out}");
    let (code, out) = run(&tls, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("copied 4 messages"), "{out}");
    assert!(out.contains("0 messages already there"), "{out}");
    assert!(!out.contains("secret"), "never the password: {out}");

    let server = new.start();
    let moved = listing(new.plain);
    assert_eq!(moved.0, before.0, "UIDL byte for byte");
    assert_eq!(moved.2, before.2, "RETR byte for byte");
    assert_eq!(
        listing(dport).0,
        before.0,
        "nothing deleted on the old server"
    );

    // New mail on the old server; the second run goes over STLS.
    std::fs::write(old.path("mail/alice/new/1800000000.M9P9.later"), MAIL[0]).unwrap();
    vmail_owns(&old.path("mail"));
    let stls = format!("pop3://127.0.0.1:{dport}");
    let (code, out) = run(&stls, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("copied 1 messages"), "{out}");
    assert!(out.contains("4 messages already there"), "{out}");
    let after = listing(dport);
    let moved = listing(new.plain);
    assert_eq!((moved.0, moved.2), (after.0, after.2));

    // A wrong password: that user fails, the exit code says so; without a
    // password file there is nothing to try.
    let wrong = file("wrong.pw", "nope\n");
    let (code, out) = import_pop3(&new, &["--from", &tls, "--user", "alice"]);
    assert_eq!(code, 64, "{out}");
    let (code, out) = import_pop3(
        &new,
        &[
            "--from",
            &tls,
            "--user",
            "alice",
            "--password-file",
            &wrong,
            "--ca-file",
            ca,
        ],
    );
    assert_eq!(code, 75, "{out}");
    assert!(out.contains("failed: alice"), "{out}");
    // Without the old server's CA its certificate is refused.
    let (code, out) = import_pop3(
        &new,
        &[
            "--from",
            &tls,
            "--user",
            "alice",
            "--password-file",
            &alice_pw,
        ],
    );
    assert_eq!(code, 75, "{out}");
    assert!(out.contains("TLS"), "{out}");

    // Every user of a list, through Dovecot's master user.
    let users = file("users", "# moved on 2026-12-01\nalice\nbob\n");
    let master_pw = file("master.pw", "masterpw\n");
    let (code, out) = import_pop3(
        &new,
        &[
            "--from",
            &tls,
            "--all",
            &users,
            "--master-user",
            "admin",
            "--password-file",
            &master_pw,
            "--ca-file",
            ca,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("copied 1 messages") && out.contains("for 2 users; 5 messages already there"),
        "{out}"
    );
    let mut c = Client::login(new.plain, "bob", "password");
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    drop(server);
    drop(dovecot);
}

#[test]
fn import_pop3_from_dovecot_into_maildir() {
    import_from_dovecot(Backend::Maildir);
}

#[test]
fn import_pop3_from_dovecot_into_postgres() {
    import_from_dovecot(Backend::Postgres);
}

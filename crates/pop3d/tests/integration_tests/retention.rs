// SPDX-License-Identifier: AGPL-3.0-only
//! The operator's side of quota and the trash through the `pop3d`
//! binary: `deliver`'s exit codes and LMTP's replies over quota (both
//! settings of `quota_full_tempfail`), and `pop3d restore`.

use crate::common::*;

/// alice may hold 100 octets; LMTP on a port of its own.
fn over_quota_setup(tempfail: bool) -> (Setup, u16) {
    let s = Setup::new(&[]);
    std::fs::write(
        s.path("passwd"),
        "alice:{PLAIN}secret::::::userdb_quota_rule=*:bytes=100\n",
    )
    .unwrap();
    let lmtp = free_port();
    let config = read(&s.config).replace(
        "[storage]\n",
        &format!(
            "[[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n\n[storage]\nquota_full_tempfail = {tempfail}\n"
        ),
    );
    std::fs::write(&s.config, config).unwrap();
    (s, lmtp)
}

fn lmtp_deliver(port: u16, message: &str) -> String {
    let (mut c, greeting) = Lmtp::connect(port);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("LHLO test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.cmd(&format!("{message}\r\n."))
}

#[test]
fn over_quota_deliver_exits_77_and_lmtp_answers_552() {
    let (s, lmtp) = over_quota_setup(false);
    let sixty = format!("Subject: q\n\n{}\n", "x".repeat(47));
    assert_eq!(sixty.len(), 60);
    assert_eq!(s.deliver(sixty.as_bytes()).0, 0);
    let (code, stderr) = s.deliver(sixty.as_bytes());
    assert_eq!(code, 77, "{stderr}");
    assert!(stderr.contains("over quota"), "{stderr}");
    assert_eq!(s.count(), 1, "nothing stored");
    let size = read(&s.path("mail/alice/maildirsize"));
    assert_eq!(
        size, "100S\n0 0\n60 1\n",
        "a count of the Maildir, then a line per delivery"
    );
    let _pop3d = s.start();
    let reply = lmtp_deliver(
        lmtp,
        "Subject: q\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    );
    assert!(reply.starts_with("552 5.2.2 "), "{reply}");
    // Fetch and delete: the room is there again, maildirsize says so.
    let mut c = Client::login(s.plain, "alice", "secret");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(
        read(&s.path("mail/alice/maildirsize")),
        "100S\n0 0\n60 1\n-60 -1\n"
    );
    let reply = lmtp_deliver(lmtp, "Subject: fits\r\n\r\nnow");
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
}

#[test]
fn with_quota_full_tempfail_deliver_exits_75_and_lmtp_answers_452() {
    let (s, lmtp) = over_quota_setup(true);
    let big = format!("Subject: q\n\n{}\n", "x".repeat(200));
    let (code, stderr) = s.deliver(big.as_bytes());
    assert_eq!(code, 75, "{stderr}");
    let _pop3d = s.start();
    let reply = lmtp_deliver(lmtp, &format!("Subject: q\r\n\r\n{}", "x".repeat(200)));
    assert!(reply.starts_with("452 4.2.2 "), "{reply}");
    assert_eq!(s.count(), 0);
}

fn restore_brings_back_trashed_mail_under_the_same_uidls(backend: Backend) {
    let s = Setup::on(backend, &[b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n"]);
    let config = read(&s.config).replace("[storage]\n", "[storage]\ndelete = \"trash\"\n");
    std::fs::write(&s.config, config).unwrap();
    let _pop3d = s.start();
    let mut c = Client::login(s.plain, "alice", "secret");
    let before = c.multiline("UIDL");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 0 0\r\n", "nothing POP3 can see");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let restore = |args: &[&str]| {
        let out = pop3d()
            .args(["restore", "--user", "alice", "--config"])
            .arg(&s.config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(
        restore(&["--since", "yesterday"]).0,
        64,
        "a bad --since is a usage error"
    );
    // Looking first changes nothing.
    let (code, listed) = restore(&["--list"]);
    assert_eq!(code, 0);
    let listing = String::from_utf8_lossy(&before).into_owned();
    let uidls = listing
        .lines()
        .skip(1)
        .filter(|l| *l != ".")
        .map(|l| l.split(' ').nth(1).unwrap());
    for uidl in uidls {
        assert!(listed.contains(&format!("{uidl}\ttrashed ")), "{listed}");
    }
    assert!(
        listed.ends_with("would restore 2 messages for alice\n"),
        "{listed}"
    );
    assert_eq!(
        restore(&["--dry-run", "--since", "1h"]),
        (0, "would restore 2 messages for alice\n".into())
    );
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 0 0\r\n", "a dry run restores nothing");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(
        restore(&["--since", "1h"]),
        (0, "restored 2 messages for alice\n".into())
    );
    assert_eq!(restore(&[]), (0, "restored 0 messages for alice\n".into()));
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.multiline("UIDL"), before);
}

#[test]
fn restore_on_maildir() {
    restore_brings_back_trashed_mail_under_the_same_uidls(Backend::Maildir);
}

#[test]
fn restore_on_postgres() {
    restore_brings_back_trashed_mail_under_the_same_uidls(Backend::Postgres);
}

// SPDX-License-Identifier: AGPL-3.0-only
//! LMTP (RFC 2033) into the running daemon, on both stores: Python's
//! `smtplib.LMTP` over TCP and a Unix socket, swaks, and a raw client for
//! what those do not show (one reply per recipient, pipelining, limits,
//! STARTTLS, refusals, a store that is away).

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Add a TCP LMTP listener (and a Unix socket `lmtp.sock`) to the setup's
/// configuration, with `extra` lines in `[security]`; returns the port.
fn with_lmtp(s: &Setup, security: &str) -> u16 {
    let port = free_port();
    let text = read(&s.config).replace("[security]\n", &format!("[security]\n{security}\n"))
        + &format!("\n[[lmtp]]\nbind = \"127.0.0.1:{port}\"\n\n[[lmtp]]\npath = \"lmtp.sock\"\n");
    std::fs::write(&s.config, text).unwrap();
    port
}

fn retr_all(port: u16) -> Vec<String> {
    let mut c = Client::login(port, "alice", "secret");
    let stat = c.cmd("STAT");
    let n: usize = stat.split(' ').nth(1).unwrap().parse().unwrap();
    let all = (1..=n)
        .map(|i| String::from_utf8(c.multiline(&format!("RETR {i}"))).unwrap())
        .collect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    all
}

const SMTPLIB: &str = r#"
import smtplib, sys
target, port = sys.argv[1], int(sys.argv[2])
lmtp = smtplib.LMTP(target, port) if port else smtplib.LMTP(target)
code, caps = lmtp.ehlo_or_helo_if_needed() or (0, b"")
refused = lmtp.sendmail("sender@example.org", ["alice@example.org", "nobody@example.org"],
    b"Subject: from smtplib\r\n\r\nline one\r\n.leading dot\nbare lf line\r\n")
print("refused", sorted(refused))
print("size", lmtp.has_extn("size"), "pipelining", lmtp.has_extn("pipelining"))
lmtp.quit()
"#;

fn python_and_swaks_deliver(backend: Backend) {
    if !require("python3") || !require("swaks") {
        return;
    }
    let s = Setup::on(backend, &[]);
    let port = with_lmtp(&s, "");
    let _server = s.start();
    wait_for_port(port);
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let python = tool_path("python3").unwrap();
    let out = run(Command::new(&python).args(["-c", SMTPLIB, "127.0.0.1", &port.to_string()]));
    assert!(out.contains("refused ['nobody@example.org']"), "{out}");
    assert!(out.contains("size True pipelining True"), "{out}");
    let socket = s.path("lmtp.sock");
    let out = run(Command::new(&python)
        .args(["-c", SMTPLIB])
        .arg(&socket)
        .arg("0"));
    assert!(out.contains("refused ['nobody@example.org']"), "{out}");
    let out = run(Command::new(tool_path("swaks").unwrap()).args([
        "--protocol",
        "LMTP",
        "--server",
        &format!("127.0.0.1:{port}"),
        "--from",
        "swaks@example.org",
        "--to",
        "alice",
        "--header",
        "Subject: from swaks",
        "--body",
        "sent by swaks",
    ]));
    assert!(out.contains("250 2.0.0 <alice> delivered"), "{out}");
    let messages = retr_all(s.plain);
    assert_eq!(messages.len(), 3, "{messages:?}");
    for m in &messages[..2] {
        assert!(
            m.contains(
                "Return-Path: <sender@example.org>\r\nDelivered-To: <alice@example.org>\r\n"
            ),
            "{m}"
        );
        // Unstuffed by pop3d, stuffed again by RETR; bare LF made CRLF.
        assert!(
            m.contains("\r\nline one\r\n..leading dot\r\nbare lf line\r\n.\r\n"),
            "{m}"
        );
    }
    assert!(
        messages[2].contains("Subject: from swaks"),
        "{}",
        messages[2]
    );
    assert!(
        messages[2].contains("Delivered-To: <alice>"),
        "{}",
        messages[2]
    );
}

#[test]
fn smtplib_and_swaks_deliver_into_maildir() {
    python_and_swaks_deliver(Backend::Maildir);
}

#[test]
fn smtplib_and_swaks_deliver_into_postgres() {
    python_and_swaks_deliver(Backend::Postgres);
}

#[test]
fn one_reply_per_recipient_pipelining_limits_and_refusals() {
    let s = Setup::new(&[]);
    let text = read(&s.config).replace("[server]\n", "[server]\nmax_message_size = 300\n");
    std::fs::write(&s.config, text).unwrap();
    let port = with_lmtp(&s, "");
    let _server = s.start();
    wait_for_port(port);
    let (mut c, greeting) = Lmtp::connect(port);
    assert!(greeting.starts_with("220 pop.test LMTP"), "{greeting}");
    assert_eq!(c.cmd("MAIL FROM:<a@b>"), "503 5.5.1 LHLO first\r\n");
    assert!(c.cmd("EHLO x").starts_with("500 5.5.1"));
    let caps = c.cmd("LHLO mx.test");
    for cap in [
        "250-PIPELINING",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-STARTTLS",
        "250 SIZE 300",
    ] {
        assert!(caps.contains(cap), "{cap}: {caps}");
    }
    assert_eq!(c.cmd("RCPT TO:<alice>"), "503 5.5.1 MAIL first\r\n");
    assert!(c.cmd("MAIL FROM:<a@b> SIZE=301").starts_with("552 5.3.4"));
    // Pipelined: every reply in order, then one per accepted recipient.
    c.send(
        "MAIL FROM:<a@b.example> BODY=8BITMIME\r\nRCPT TO:<alice@example.org>\r\n\
         RCPT TO:<ghost@example.org>\r\nRCPT TO:<bob>\r\nDATA\r\n",
    );
    assert_eq!(c.reply(), "250 2.1.0 sender OK\r\n");
    assert_eq!(c.reply(), "250 2.1.5 recipient OK\r\n");
    assert_eq!(
        c.reply(),
        "550 5.1.1 <ghost@example.org>: no such user here\r\n"
    );
    assert_eq!(c.reply(), "250 2.1.5 recipient OK\r\n");
    assert!(c.reply().starts_with("354 "));
    c.send("Subject: two\r\n\r\n..dot\r\n.\r\n");
    assert_eq!(c.reply(), "250 2.0.0 <alice@example.org> delivered\r\n");
    assert_eq!(c.reply(), "250 2.0.0 <bob> delivered\r\n");
    // Too big once received (the SIZE promise aside): refused for each
    // recipient, nothing stored.
    c.send("MAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n");
    for _ in 0..3 {
        assert!(c.reply().starts_with("250 "));
    }
    assert!(c.reply().starts_with("354 "));
    c.send(&format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(400)));
    assert_eq!(
        c.reply(),
        "552 5.3.4 <alice>: messages are limited to 300 octets\r\n"
    );
    assert_eq!(
        c.reply(),
        "552 5.3.4 <bob>: messages are limited to 300 octets\r\n"
    );
    assert_eq!(c.cmd("DATA"), "503 5.5.1 no valid recipients\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    assert!(c.cmd("BDAT 1").starts_with("500 5.5.2"));
    assert!(c.cmd("QUIT").starts_with("221 2.0.0"));
    assert_eq!(s.maildir_count(), 1);
    let alice = retr_all(s.plain);
    assert!(
        alice[0].ends_with("Subject: two\r\n\r\n..dot\r\n.\r\n"),
        "{}",
        alice[0]
    );
}

#[test]
fn untrusted_addresses_are_refused() {
    let s = Setup::new(&[]);
    let port = with_lmtp(&s, "lmtp_trusted_networks = [\"10.0.0.0/8\"]");
    let _server = s.start();
    wait_for_port(port);
    let (_, greeting) = Lmtp::connect(port);
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    // The Unix socket is guarded by its permissions, not by address.
    if require("python3") {
        succeed(
            Command::new(tool_path("python3").unwrap())
                .args(["-c", SMTPLIB])
                .arg(s.path("lmtp.sock"))
                .arg("0"),
        );
    }
}

#[test]
fn starttls_starts_over_and_a_store_that_is_away_answers_451() {
    let pg = Postgres::private();
    let db = pg.database();
    let s = Setup::on(Backend::Postgres, &[]);
    let shared = Postgres::shared().url(s.database.as_deref().unwrap());
    let text = read(&s.config).replace(
        &format!("url = \"{shared}\"\n"),
        &format!("url = \"{}\"\nconnect_timeout = \"1s\"\n", pg.url(&db)),
    );
    std::fs::write(&s.config, text).unwrap();
    let port = with_lmtp(&s, "");
    let _server = s.start();
    wait_for_port(port);
    // STARTTLS: then LHLO again, over TLS.
    let (mut c, _) = Lmtp::connect(port);
    c.cmd("LHLO mx.test");
    c.send("STARTTLS\r\nLHLO injected\r\n");
    assert_eq!(c.reply(), "220 2.0.0 ready to start TLS\r\n");
    let tcp = c.r.into_inner();
    let mut tls = Lmtp::over(tls_client(&s, tcp, rustls::DEFAULT_VERSIONS));
    let mut talk = |line: &str| tls.cmd(line);
    // The line pipelined in plaintext was thrown away: MAIL needs LHLO.
    assert_eq!(talk("MAIL FROM:<a@b>"), "503 5.5.1 LHLO first\r\n");
    let caps = talk("LHLO mx.test");
    assert!(!caps.contains("STARTTLS"), "{caps}");
    assert!(talk("MAIL FROM:<a@b>").starts_with("250"));
    assert!(talk("RCPT TO:<alice>").starts_with("250"));
    assert!(talk("DATA").starts_with("354"));
    assert_eq!(
        talk("Subject: tls\r\n\r\nover TLS\r\n."),
        "250 2.0.0 <alice> delivered\r\n"
    );
    // The database away: the MTA is told to keep the message queued.
    pg.pg_ctl_stop();
    assert!(talk("MAIL FROM:<a@b>").starts_with("250"));
    assert!(talk("RCPT TO:<alice>").starts_with("250"));
    assert!(talk("DATA").starts_with("354"));
    assert_eq!(
        talk("Subject: later\r\n\r\nqueued\r\n."),
        "451 4.3.0 <alice>: cannot store the message now, try again later\r\n"
    );
    pg.pg_ctl_start();
}

/// A private Postfix (Debian's), run from a temporary configuration
/// directory: SMTP on `smtp`, delivering example.org over LMTP to `lmtp`.
struct Postfix {
    dir: tempfile::TempDir,
    smtp: u16,
}

impl Postfix {
    fn start(lmtp: u16) -> Postfix {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The postfix user must reach its queue and data directories.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        assert!(
            Command::new("chown")
                .arg("postfix")
                .arg(d.join("data"))
                .status()
                .unwrap()
                .success()
        );
        let smtp = free_port();
        let p = d.display();
        std::fs::write(
            d.join("conf/main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {p}/queue\ndata_directory = {p}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\nmyhostname = mx.test\nmydestination =\nmynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 virtual_mailbox_domains = example.org\nvirtual_transport = lmtp:inet:127.0.0.1:{lmtp}\n\
                 maillog_file = {p}/maillog\nmaillog_file_prefixes = {p}\n\
                 queue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n"
            ),
        )
        .unwrap();
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        std::fs::write(
            d.join("conf/master.cf"),
            format!(
                "127.0.0.1:{smtp} inet n - n - - smtpd\n{}\n",
                services.join("\n")
            ),
        )
        .unwrap();
        let postfix = Postfix { dir, smtp };
        let out = postfix.command("start");
        assert!(out.status.success(), "postfix start: {}", postfix.log());
        wait_for_port(smtp);
        postfix
    }

    fn command(&self, verb: &str) -> std::process::Output {
        Command::new(tool_path("postfix").unwrap())
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg(verb)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Hand one message to Postfix over SMTP.
    fn send(&self, subject: &str) {
        let (mut c, greeting) = Lmtp::connect(self.smtp);
        assert!(greeting.starts_with("220"), "{greeting}");
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<bob@else.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let r = c.cmd(&format!("Subject: {subject}\r\n\r\nthrough Postfix\r\n."));
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT");
    }

    /// Ask for the queue to be tried again now.
    fn flush(&self) {
        let _ = Command::new(tool_path("postqueue").unwrap())
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg("-f")
            .output();
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.command("stop");
    }
}

/// Alice's messages' subjects, over POP3, once Postfix's log says it
/// handed `n` messages over (a flush first, so that deferred mail is
/// tried again at once).
fn wait_for_mail(port: u16, n: usize, postfix: &Postfix) -> Vec<String> {
    postfix.flush();
    let sent = |log: &str| log.matches("status=sent").count() >= n;
    if poll_for(Duration::from_secs(30), || {
        sent(&postfix.log()).then_some(())
    })
    .is_none()
    {
        panic!(
            "{n} messages not handed over; Postfix log:\n{}",
            postfix.log()
        );
    }
    retr_all(port)
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn postfix_delivers_over_lmtp_and_keeps_mail_queued_while_pop3d_is_down() {
    if !require("postfix") || !is_root() {
        skip("needs Debian's postfix and root (it starts a private Postfix)");
        return;
    }
    let s = Setup::new(&[]);
    let port = with_lmtp(&s, "");
    let mut server = s.start();
    wait_for_port(port);
    let postfix = Postfix::start(port);
    postfix.send("first");
    assert_eq!(wait_for_mail(s.plain, 1, &postfix), ["first"]);
    // pop3d away: Postfix keeps the message queued ...
    server.crash();
    postfix.send("second");
    wait_until(
        Duration::from_secs(20),
        "Postfix defers the message",
        || postfix.log().contains("status=deferred"),
    );
    // ... and delivers it once pop3d is back.
    let _server = s.start();
    wait_for_port(port);
    let subjects = wait_for_mail(s.plain, 2, &postfix);
    assert_eq!(subjects, ["first", "second"]);
    assert!(
        postfix
            .log()
            .contains("dsn=2.0.0, status=sent (250 2.0.0 <alice@example.org> delivered)")
    );
}

/// SMTP smuggling: a `.` next to a bare LF does not end DATA, so the
/// lines after it are text of the one message, never a second
/// transaction.
#[test]
fn data_ends_only_at_crlf_dot_crlf() {
    let s = Setup::new(&[]);
    let port = with_lmtp(&s, "");
    let _server = s.start();
    wait_for_port(port);
    let (mut c, _) = Lmtp::connect(port);
    assert!(c.cmd("LHLO mx.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@b>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(
        "Subject: one\r\n\r\nx\n.\nMAIL FROM:<a>\r\nRCPT TO:<bob>\r\nDATA\r\n\
         smuggled\r\n.\r\n",
    );
    assert_eq!(c.reply(), "250 2.0.0 <alice> delivered\r\n");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(s.maildir_count(), 1, "one message, no second transaction");
    let alice = retr_all(s.plain);
    assert_eq!(alice.len(), 1);
    assert!(
        alice[0].ends_with(
            "Subject: one\r\n\r\nx\r\n..\r\nMAIL FROM:<a>\r\nRCPT TO:<bob>\r\nDATA\r\nsmuggled\r\n.\r\n"
        ),
        "{}",
        alice[0]
    );
}

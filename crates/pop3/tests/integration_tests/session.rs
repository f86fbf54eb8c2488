// SPDX-License-Identifier: AGPL-3.0-only
//! Every command and error path of a live session, asserted on raw bytes.

use std::time::Duration;

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

const MSG1: &[u8] = b"Subject: one\n\nfirst body\n.dotted\n";
const MSG2: &[u8] = b"Subject: two\r\nX: y\r\n\r\nline1\r\nline2\r\nline3\r\n";
const MSG3: &[u8] = b"Subject: three\n\nno final newline";

async fn server_with_mail(b: Backend) -> TestServer {
    let srv = TestServer::start_on(b).await;
    srv.put("alice", MSG1).await;
    srv.put("alice", MSG2).await;
    srv.put("alice", MSG3).await;
    srv
}

async fn greeting_and_wrong_state(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.connect().await;
    assert_eq!(c.greeting, "+OK POP3 server ready\r\n");
    for cmd in [
        "STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL",
    ] {
        let r = c.cmd(cmd).await;
        assert!(
            r.starts_with("-ERR ") && r.contains("before login"),
            "{cmd}: {r}"
        );
    }
    assert_eq!(c.cmd("PASS secret").await, "-ERR USER first\r\n");
    let mut c = srv.login("alice", "secret").await;
    for cmd in ["USER alice", "PASS x", "APOP a b", "AUTH PLAIN", "STLS"] {
        let r = c.cmd(cmd).await;
        assert!(
            r.starts_with("-ERR ") && r.contains("after login"),
            "{cmd}: {r}"
        );
    }
    // Still usable after all those errors.
    assert_eq!(c.cmd("STAT").await, "+OK 3 116\r\n".to_string());
}

async fn bad_arguments_get_err_and_the_session_goes_on(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    for cmd in [
        "RETR 0",
        "RETR -1",
        "RETR +1",
        "RETR 4294967296",
        "RETR 99999999999999999999",
        "RETR x",
        "RETR",
        "RETR 1 2",
        "LIST 0",
        "LIST 1 2",
        "DELE",
        "DELE 0",
        "TOP 1",
        "TOP 1 -1",
        "TOP 0 1",
        "TOP 1 2 3",
        "UIDL 0",
        "STAT 1",
        "NOOP x",
        "QUIT now",
        "RETR 4",
        "DELE 4",
        "LIST 4294967295",
        "XYZZY",
        "",
        ":",
        "\0\0\0",
    ] {
        let r = c.cmd(cmd).await;
        assert!(r.starts_with("-ERR"), "{cmd:?}: {r}");
    }
    assert!(c.cmd("STAT").await.starts_with("+OK 3 "));
}

async fn keywords_are_case_insensitive_and_pass_keeps_spaces(b: Backend) {
    let srv = TestServer::start_on(b).await;
    std::fs::write(
        srv.dir.path().join("passwd"),
        std::fs::read_to_string(srv.dir.path().join("passwd")).unwrap()
            + "spacey:{PLAIN} two  words :1:1::/dev/null\n",
    )
    .unwrap();
    // Read again at the next check of the file's stamp (once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let users = srv.manager.services().users.clone();
    while users.lookup("spacey").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new line was never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = srv.connect().await;
    assert_eq!(c.cmd("user spacey").await, "+OK\r\n");
    let r = c.cmd("pAsS  two  words ").await;
    // The password matched; then the maildrop: none can be made under
    // /dev/null, while the database makes an empty one.
    let expected = match b {
        Backend::Maildir => "-ERR [SYS/",
        Backend::Postgres => "+OK spacey's maildrop has 0 messages",
    };
    assert!(r.starts_with(expected), "{r}");
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    assert!(
        c.cmd("pass secret")
            .await
            .starts_with("+OK alice's maildrop has 0 messages")
    );
    assert_eq!(c.cmd("stat").await, "+OK 0 0\r\n");
}

async fn wrong_password_and_unknown_user_look_the_same(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut replies = Vec::new();
    for (user, pass) in [
        ("alice", "wrong"),
        ("nobody", "secret"),
        ("nopass", ""),
        ("bob", "nope"),
    ] {
        let mut c = srv.connect().await;
        assert_eq!(c.cmd(&format!("USER {user}")).await, "+OK\r\n");
        replies.push(c.cmd(&format!("PASS {pass}x")).await);
    }
    for r in &replies {
        assert_eq!(r, "-ERR [AUTH] Authentication failed.\r\n");
    }
    // SSHA-hashed user logs in.
    let mut c = srv.connect().await;
    c.cmd("USER bob").await;
    assert!(c.cmd("PASS password").await.starts_with("+OK"));
}

async fn too_many_failures_close_the_connection(b: Backend) {
    // From a trusted network only the session's own limit applies.
    let srv = TestServer::start_on_with(b, |c| {
        c.security.max_auth_attempts = 2;
        c.security.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS a").await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS b").await,
        "-ERR [AUTH] Too many authentication failures\r\n"
    );
    assert_eq!(c.until_closed().await, b"");
    // Elsewhere the address is blocked as well (loopback stands in for a
    // remote address here).
    let srv = TestServer::start_on_with(b, |c| {
        c.security.max_auth_attempts = 2;
        c.security.block_loopback = true;
    })
    .await;
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    c.cmd("PASS a").await;
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS b").await,
        "-ERR [SYS/TEMP] Too many failures from your address, try again later\r\n"
    );
    assert_eq!(c.until_closed().await, b"");
}

async fn retr_encodes_line_ends_dots_and_final_crlf(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    let (status, body) = c.multi("RETR 1").await;
    assert_eq!(status, "+OK 37 octets\r\n");
    assert_eq!(body, b"Subject: one\r\n\r\nfirst body\r\n..dotted\r\n.\r\n");
    let (status, body) = c.multi("RETR 3").await;
    assert_eq!(status, "+OK 36 octets\r\n");
    assert_eq!(body, b"Subject: three\r\n\r\nno final newline\r\n.\r\n");
    let (_, body) = c.multi("LIST").await;
    assert_eq!(lines(&body), vec!["1 37", "2 43", "3 36"]);
}

async fn top_returns_headers_and_n_lines(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(
        c.multi("TOP 2 0").await.1,
        b"Subject: two\r\nX: y\r\n\r\n.\r\n"
    );
    assert_eq!(
        c.multi("TOP 2 2").await.1,
        b"Subject: two\r\nX: y\r\n\r\nline1\r\nline2\r\n.\r\n"
    );
    assert_eq!(
        c.multi("TOP 1 5").await.1,
        b"Subject: one\r\n\r\nfirst body\r\n..dotted\r\n.\r\n"
    );
    assert_eq!(c.multi("TOP 3 0").await.1, b"Subject: three\r\n\r\n.\r\n");
}

async fn deletions_are_marks_until_quit(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(c.cmd("DELE 2").await, "+OK message 2 deleted\r\n");
    assert_eq!(c.cmd("STAT").await, "+OK 2 73\r\n");
    assert_eq!(lines(&c.multi("LIST").await.1), vec!["1 37", "3 36"]);
    assert_eq!(lines(&c.multi("UIDL").await.1).len(), 2);
    assert!(
        c.cmd("RETR 2")
            .await
            .starts_with("-ERR message 2 already deleted")
    );
    assert!(c.cmd("TOP 2 0").await.starts_with("-ERR"));
    assert!(c.cmd("LIST 2").await.starts_with("-ERR"));
    assert!(c.cmd("UIDL 2").await.starts_with("-ERR"));
    assert_eq!(
        c.cmd("RSET").await,
        "+OK maildrop has 3 messages (116 octets)\r\n"
    );
    c.cmd("DELE 1").await;
    c.cmd("DELE 3").await;
    // Nothing removed yet.
    assert_eq!(srv.stored("alice"), 3);
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK pop.test POP3 server signing off (1 messages left)\r\n"
    );
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(c.cmd("STAT").await, "+OK 1 43\r\n");
    assert_eq!(c.multi("RETR 1").await.1, [MSG2, b".\r\n"].concat());
}

async fn dropped_connection_and_timeout_delete_nothing(b: Backend) {
    let srv =
        TestServer::start_on_with(b, |c| c.server.session_timeout = Duration::from_secs(1)).await;
    srv.put("alice", MSG1).await;
    srv.put("alice", MSG2).await;
    {
        let mut c = srv.login("alice", "secret").await;
        c.cmd("DELE 1").await;
        c.cmd("DELE 2").await;
        drop(c); // connection reset, no QUIT
    }
    // The lock is released promptly and nothing was deleted.
    let mut c = srv.login_when_free("alice", "secret").await;
    assert_eq!(c.cmd("STAT").await, "+OK 2 80\r\n");
    c.cmd("DELE 1").await;
    // Idle past session_timeout: autologout without UPDATE.
    let rest = c.until_closed().await;
    assert_eq!(rest, b"-ERR Disconnected for inactivity\r\n");
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(c.cmd("STAT").await, "+OK 2 80\r\n");
}

#[tokio::test]
async fn unauthenticated_idle_is_cut() {
    let srv = TestServer::start_with(|c| c.server.unauth_timeout = Duration::from_secs(1)).await;
    let mut c = srv.connect().await;
    let started = std::time::Instant::now();
    assert_eq!(
        c.until_closed().await,
        b"-ERR Disconnected for inactivity\r\n"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn second_session_gets_in_use(b: Backend) {
    let srv = server_with_mail(b).await;
    in_use_until_the_holder_quits(&srv, &srv).await;
}

/// A login on `second` while alice holds her maildrop through `first`
/// hears `[IN-USE]`; the same session may try again after the holder's
/// QUIT. `second` is returned logged in.
pub async fn in_use_until_the_holder_quits(
    first: &TestServer,
    second: &TestServer,
) -> Client<tokio::net::TcpStream> {
    let mut first = first.login("alice", "secret").await;
    let mut second = second.connect().await;
    second.cmd("USER alice").await;
    assert_eq!(
        second.cmd("PASS secret").await,
        "-ERR [IN-USE] Maildrop is locked by another session\r\n"
    );
    // The refused session may try again once the first one quits.
    first.cmd("QUIT").await;
    first.until_closed().await;
    second.cmd("USER alice").await;
    assert!(second.cmd("PASS secret").await.starts_with("+OK"));
    second
}

async fn new_mail_is_invisible_until_next_login(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    srv.put("alice", b"Subject: late\n\nx\n").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 3 "));
    assert!(c.cmd("RETR 4").await.starts_with("-ERR"));
    let uidls = lines(&c.multi("UIDL").await.1);
    c.cmd("QUIT").await;
    let mut c = srv.login("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 4 "));
    let again = lines(&c.multi("UIDL").await.1);
    assert_eq!(&again[..3], &uidls[..], "UIDLs are stable across sessions");
    assert!(
        !uidls
            .iter()
            .any(|u| u.split(' ').nth(1) == again[3].split(' ').nth(1))
    );
}

async fn uidls_are_never_reused(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    let before: Vec<String> = lines(&c.multi("UIDL").await.1)
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    c.cmd("DELE 3").await;
    c.cmd("QUIT").await;
    c.until_closed().await;
    srv.put("alice", b"Subject: new\n\nx\n").await;
    let mut c = srv.login("alice", "secret").await;
    let after: Vec<String> = lines(&c.multi("UIDL").await.1)
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(after.len(), 3);
    assert_eq!(&after[..2], &before[..2]);
    assert!(!before.contains(&after[2]), "new message got a fresh UIDL");
}

#[tokio::test]
async fn message_removed_underneath_gives_err() {
    let srv = TestServer::start().await;
    let p1 = srv.deliver("alice", 1, MSG1);
    let p2 = srv.deliver("alice", 2, MSG2);
    let mut c = srv.login("alice", "secret").await;
    std::fs::remove_file(&p1).unwrap();
    assert_eq!(
        c.cmd("RETR 1").await,
        "-ERR Message was removed by another program\r\n"
    );
    // A message that another client moved to cur/ with flags is still found.
    let moved = srv
        .maildir("alice")
        .join("cur")
        .join(format!("{}:2,S", p2.file_name().unwrap().to_str().unwrap()));
    std::fs::rename(&p2, &moved).unwrap();
    assert_eq!(c.multi("RETR 2").await.1, [MSG2, b".\r\n"].concat());
    c.cmd("DELE 1").await;
    c.cmd("DELE 2").await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert!(!moved.exists());
}

#[tokio::test]
async fn sizes_are_cached_and_taken_from_names() {
    let srv = TestServer::start().await;
    let p = srv.deliver("alice", 1, b"a\nb\n");
    let named = srv
        .maildir("alice")
        .join("cur")
        .join("1700000009.M9P9.test,S=4,W=999:2,S");
    std::fs::write(&named, b"x\n").unwrap();
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(lines(&c.multi("LIST").await.1), vec!["1 6", "2 999"]);
    c.cmd("QUIT").await;
    c.until_closed().await;
    // The index now holds the size: a changed file is not read again.
    let index = std::fs::read_to_string(srv.maildir("alice").join("pop3d-uidlist")).unwrap();
    assert!(index.contains(" 6 "), "{index}");
    std::fs::write(&p, b"a much longer message than before\n").unwrap();
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(lines(&c.multi("LIST").await.1), vec!["1 6", "2 999"]);
}

#[tokio::test]
async fn dovecot_uidlist_uids_are_served() {
    let srv = TestServer::start().await;
    let md = srv.maildir("alice");
    deliver(&md, 1, MSG1);
    deliver(&md, 2, MSG2);
    std::fs::write(
        md.join("dovecot-uidlist"),
        "3 V1234567890 N43 G0123\n41 :1700000001.M1P1.test\n42 P0000.custom W99 :1700000002.M2P1.test:2,S\n",
    )
    .unwrap();
    deliver(&md, 3, MSG3); // arrived after the migration
    let mut c = srv.login("alice", "secret").await;
    let uidls = lines(&c.multi("UIDL").await.1);
    assert_eq!(
        uidls,
        vec!["1 00000029499602d2", "2 0000.custom", "3 0000002b499602d2"]
    );
    assert_eq!(lines(&c.multi("LIST").await.1)[1], "2 99");
}

async fn pipelined_commands_are_answered_in_order(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.connect().await;
    c.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nLIST 1\r\nRETR 1\r\nNOOP\r\nBOGUS\r\nDELE 1\r\nQUIT\r\n").await;
    assert_eq!(c.line().await, "+OK\r\n");
    assert!(c.line().await.starts_with("+OK alice's maildrop"));
    assert_eq!(c.line().await, "+OK 3 116\r\n");
    assert_eq!(c.line().await, "+OK 1 37\r\n");
    assert_eq!(c.line().await, "+OK 37 octets\r\n");
    assert_eq!(
        c.body().await,
        b"Subject: one\r\n\r\nfirst body\r\n..dotted\r\n.\r\n"
    );
    assert_eq!(c.line().await, "+OK\r\n");
    assert_eq!(c.line().await, "-ERR Unknown command\r\n");
    assert_eq!(c.line().await, "+OK message 1 deleted\r\n");
    assert!(
        c.line()
            .await
            .starts_with("+OK pop.test POP3 server signing off")
    );
    assert_eq!(c.until_closed().await, b"");
}

async fn many_pipelined_commands_in_one_segment(b: Backend) {
    let srv = server_with_mail(b).await;
    let mut c = srv.login("alice", "secret").await;
    let batch: String = (0..1000)
        .map(|i| format!("LIST {}\r\n", i % 3 + 1))
        .collect();
    c.send(batch.as_bytes()).await;
    for i in 0..1000 {
        let r = c.line().await;
        assert!(r.starts_with(&format!("+OK {} ", i % 3 + 1)), "{i}: {r}");
    }
}

#[tokio::test]
async fn split_packets_and_bare_lf() {
    let srv = server_with_mail(Backend::Maildir).await;
    let mut c = srv.connect().await;
    for b in b"USER alice\nPASS secret\r\nSTAT\r\n" {
        c.send(&[*b]).await;
    }
    assert_eq!(c.line().await, "+OK\r\n");
    assert!(c.line().await.starts_with("+OK"));
    assert_eq!(c.line().await, "+OK 3 116\r\n");
}

#[tokio::test]
async fn garbage_long_lines_and_nuls_never_kill_the_session() {
    let srv = server_with_mail(Backend::Maildir).await;
    let mut c = srv.connect().await;
    // A 1 MB line with no end for a while, then its end.
    let big = vec![b'A'; 1 << 20];
    c.send(&big).await;
    assert_eq!(c.line().await, "-ERR Line too long\r\n");
    c.send(b"still the same line\r\n").await;
    assert_eq!(c.cmd("CAPA").await, "+OK Capability list follows\r\n");
    c.body().await;
    // A 300-byte line in one piece.
    let long = format!("USER {}\r\n", "x".repeat(300));
    c.send(long.as_bytes()).await;
    assert_eq!(c.line().await, "-ERR Line too long\r\n");
    for junk in [
        &b"\r\n"[..],
        b":\r\n",
        b"\0\0\r\n",
        b"\xff\xfe\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\r\n",
    ] {
        c.send(junk).await;
        let r = c.line().await;
        assert!(r.starts_with("-ERR"), "{junk:?}: {r}");
    }
    c.cmd("USER alice").await;
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
}

async fn capa_reflects_state_and_config(b: Backend) {
    let srv = TestServer::start_on_with(b, |c| {
        c.server.login_delay = Duration::from_secs(0);
    })
    .await;
    let mut c = srv.connect().await;
    let before = lines(&c.multi("CAPA").await.1);
    assert_eq!(
        before,
        vec![
            "TOP",
            "USER",
            "SASL PLAIN LOGIN",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "UIDL",
            "EXPIRE NEVER USER",
            "UTF8 USER",
            &format!("IMPLEMENTATION pop3d-{}", env!("CARGO_PKG_VERSION")),
        ]
    );
    c.cmd("USER alice").await;
    c.cmd("PASS secret").await;
    let after = lines(&c.multi("CAPA").await.1);
    assert!(!after.contains(&"USER".to_string()));
    assert!(!after.iter().any(|l| l.starts_with("SASL")));
    assert!(after.contains(&"UIDL".to_string()));

    // STLS only on the starttls listener.
    let mut c = Client::connect(srv.starttls).await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"STLS".to_string()));
    assert_eq!(c.cmd("UTF8").await, "+OK UTF8 enabled\r\n");

    let srv = TestServer::start_on_with(b, |c| {
        c.protocol.enable_top = false;
        c.protocol.enable_uidl = false;
        c.protocol.enable_pipelining = false;
        c.server.enable_utf8 = false;
        c.server.login_delay = Duration::from_secs(900);
    })
    .await;
    let mut c = srv.connect().await;
    let caps = lines(&c.multi("CAPA").await.1);
    for absent in ["TOP", "UIDL", "PIPELINING", "UTF8 USER"] {
        assert!(!caps.contains(&absent.to_string()), "{absent} in {caps:?}");
    }
    assert!(caps.contains(&"LOGIN-DELAY 900 USER".to_string()));
    assert_eq!(c.cmd("UTF8").await, "-ERR UTF8 is not enabled\r\n");
    c.cmd("USER alice").await;
    c.cmd("PASS secret").await;
    assert_eq!(c.cmd("TOP 1 1").await, "-ERR Command disabled\r\n");
    assert_eq!(c.cmd("UIDL").await, "-ERR Command disabled\r\n");
    // UTF8 after login is tolerated (Outlook sends it then).
    c.cmd("QUIT").await;
    c.until_closed().await;
    // LOGIN-DELAY: a second login within the delay is refused, and a
    // reload does not forget who logged in when.
    for reload in [false, true] {
        if reload {
            let config = (*srv.manager.services().config).clone();
            srv.manager.reload(config).unwrap();
        }
        let mut c = srv.connect().await;
        c.cmd("USER alice").await;
        assert_eq!(
            c.cmd("PASS secret").await,
            "-ERR [LOGIN-DELAY] Wait 900 seconds between logins\r\n",
            "after a reload: {reload}"
        );
    }
}

#[tokio::test]
async fn utf8_after_login_is_tolerated() {
    let srv = server_with_mail(Backend::Maildir).await;
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(c.cmd("UTF8").await, "+OK UTF8 enabled\r\n");
    assert!(c.cmd("STAT").await.starts_with("+OK 3"));
}

async fn apop_login_and_failures(b: Backend) {
    let srv = TestServer::start_on_with(b, |c| c.server.enable_apop = true).await;
    srv.put("alice", MSG1).await;
    let mut c = srv.connect().await;
    let g = c.greeting.clone();
    let ts = &g[g.find('<').unwrap()..g.rfind('>').unwrap() + 1];
    assert!(ts.ends_with("@pop.test>"));
    // The timestamp is unique per connection.
    let other = srv.connect().await.greeting;
    assert_ne!(other, g);
    let bad = pop3::protocol::compute_apop_digest(ts, "wrong");
    assert_eq!(
        c.cmd(&format!("APOP alice {bad}")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    // bob has a hashed secret: APOP cannot work and fails the same way.
    let d = pop3::protocol::compute_apop_digest(ts, "password");
    assert_eq!(
        c.cmd(&format!("APOP bob {d}")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    let good = pop3::protocol::compute_apop_digest(ts, "secret").to_uppercase();
    assert!(
        c.cmd(&format!("APOP alice {good}"))
            .await
            .starts_with("+OK alice's maildrop has 1")
    );

    // Disabled: no timestamp, APOP refused.
    let srv = TestServer::start_on(b).await;
    let mut c = srv.connect().await;
    assert!(!c.greeting.contains('<'));
    assert_eq!(
        c.cmd("APOP alice 0123").await,
        "-ERR APOP is not enabled\r\n"
    );
}

async fn auth_plain_and_login(b: Backend) {
    let srv = TestServer::start_on_with(b, |c| c.security.max_auth_attempts = 10).await;
    srv.put("alice", MSG1).await;
    let ir = B64.encode(b"\0alice\0secret");
    // Bare AUTH lists mechanisms (Outlook).
    let mut c = srv.connect().await;
    assert_eq!(c.multi("AUTH").await.1, b"PLAIN\r\nLOGIN\r\n.\r\n");
    // Initial response.
    assert!(
        c.cmd(&format!("AUTH PLAIN {ir}"))
            .await
            .starts_with("+OK alice's maildrop")
    );
    c.cmd("QUIT").await;
    c.until_closed().await;
    // Continuation.
    let mut c = srv.connect().await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ \r\n");
    assert!(c.cmd(&ir).await.starts_with("+OK"));
    c.cmd("QUIT").await;
    c.until_closed().await;
    // Lower-case mechanism name, wrong password.
    let mut c = srv.connect().await;
    let bad = B64.encode(b"\0alice\0nope");
    assert_eq!(
        c.cmd(&format!("auth plain {bad}")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    // "=" is an empty initial response: malformed for PLAIN.
    assert!(c.cmd("AUTH PLAIN =").await.starts_with("-ERR"));
    // Cancel and bad base64.
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ \r\n");
    assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled\r\n");
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ \r\n");
    assert!(c.cmd("!!notbase64!!").await.starts_with("-ERR"));
    assert!(
        c.cmd("AUTH PLAIN !!!")
            .await
            .starts_with("-ERR Invalid base64")
    );
    assert_eq!(
        c.cmd("AUTH CRAM-SHA9").await,
        "-ERR Unsupported authentication mechanism\r\n"
    );
    // A foreign authzid is refused like a wrong password.
    let mut c = srv.connect().await;
    let foreign = B64.encode(b"bob\0alice\0secret");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {foreign}")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    // LOGIN as Outlook speaks it.
    let mut c = srv.connect().await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "+ VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&B64.encode("alice")).await, "+ UGFzc3dvcmQ6\r\n");
    assert!(
        c.cmd(&B64.encode("secret"))
            .await
            .starts_with("+OK alice's maildrop")
    );
    c.cmd("QUIT").await;
    c.until_closed().await;
    // LOGIN with the user name as initial response.
    let mut c = srv.connect().await;
    assert_eq!(
        c.cmd(&format!("AUTH LOGIN {}", B64.encode("alice"))).await,
        "+ UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        c.cmd(&B64.encode("bad")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    // A SASL line longer than 255 octets is read whole.
    let long = B64.encode(format!("\0alice\0{}", "p".repeat(600)));
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ \r\n");
    assert_eq!(c.cmd(&long).await, "-ERR [AUTH] Authentication failed.\r\n");
}

#[tokio::test]
async fn plaintext_is_refused_off_loopback_without_tls() {
    // Serve a connection whose peer is a documentation address through the
    // embedding API, as a host mail server would.
    let srv = server_with_mail(Backend::Maildir).await;
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let manager = srv.manager.clone();
    let peer: std::net::SocketAddr = "192.0.2.7:40000".parse().unwrap();
    tokio::spawn(async move {
        manager
            .serve(server_side, peer, pop3::config::TlsMode::None)
            .await;
    });
    let mut c = Client::over(client).await;
    let caps = lines(&c.multi("CAPA").await.1);
    assert!(!caps.contains(&"USER".to_string()), "{caps:?}");
    assert!(!caps.iter().any(|l| l.starts_with("SASL")), "{caps:?}");
    let refused =
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
    assert_eq!(c.cmd("USER alice").await, refused);
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", B64.encode("\0alice\0secret")))
            .await,
        refused
    );

    // allow_plaintext opens it.
    let srv = TestServer::start_with(|c| c.auth.allow_plaintext = true).await;
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let manager = srv.manager.clone();
    tokio::spawn(async move {
        manager
            .serve(server_side, peer, pop3::config::TlsMode::None)
            .await;
    });
    let mut c = Client::over(client).await;
    assert_eq!(c.cmd("USER alice").await, "+OK\r\n");
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
}

#[tokio::test]
async fn connection_limits_apply_before_the_greeting() {
    let srv = TestServer::start_with(|c| c.security.max_connections_per_ip = 2).await;
    let a = srv.connect().await;
    let _b = srv.connect().await;
    let mut c = Client::raw(tokio::net::TcpStream::connect(srv.plain).await.unwrap());
    assert_eq!(
        c.until_closed().await,
        b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
    );
    drop(a);
    // The slot comes back when a session ends.
    let mut tries = 0;
    loop {
        let c = Client::connect(srv.plain).await;
        if c.greeting.starts_with("+OK") {
            break;
        }
        tries += 1;
        assert!(tries < 100, "slot never returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let srv = TestServer::start_with(|c| c.performance.max_concurrent_sessions = 1).await;
    let _a = srv.connect().await;
    let mut c = Client::raw(tokio::net::TcpStream::connect(srv.plain).await.unwrap());
    assert_eq!(
        c.until_closed().await,
        b"-ERR [SYS/TEMP] Server busy, try again later\r\n"
    );
}

#[tokio::test]
async fn max_message_size_refuses_big_messages() {
    // Mail put in the Maildir behind the server's back; the database
    // refuses it at delivery (store tests).
    let srv = TestServer::start_with(|c| c.server.max_message_size = 40).await;
    srv.put("alice", MSG1).await;
    srv.put("alice", MSG2).await;
    let mut c = srv.login("alice", "secret").await;
    assert!(c.cmd("RETR 1").await.starts_with("+OK 37 octets"));
    c.body().await;
    assert_eq!(
        c.cmd("RETR 2").await,
        "-ERR [SYS/PERM] Message exceeds the size limit of this server\r\n"
    );
}

async fn big_message_streams_exactly(b: Backend) {
    let srv = TestServer::start_on(b).await;
    // 5 MB with bare LFs and dot lines throughout.
    let mut msg = b"Subject: big\n\n".to_vec();
    for i in 0..200_000 {
        msg.extend_from_slice(if i % 7 == 0 {
            b".dot line here\n"
        } else {
            b"ordinary line\n"
        });
    }
    srv.put("alice", &msg).await;
    let mut c = srv.login("alice", "secret").await;
    let size = pop3::protocol::crlf_size(&msg);
    assert_eq!(c.cmd("RETR 1").await, format!("+OK {size} octets\r\n"));
    let body = c.body().await;
    let mut want = Vec::new();
    let mut enc = pop3::protocol::BodyEncoder::retr();
    enc.feed(&msg, &mut want);
    enc.finish(&mut want);
    assert_eq!(body.len(), want.len());
    assert!(body == want);
}

#[tokio::test]
async fn auth_cram_md5() {
    use pop3::auth::cram_context;
    let srv = TestServer::start_with(|c| {
        c.auth.mechanisms = vec!["PLAIN".into(), "CRAM-MD5".into()];
        c.security.max_auth_attempts = 10;
    })
    .await;
    srv.deliver("alice", 1, MSG1);
    let mut c = srv.connect().await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"SASL CRAM-MD5 PLAIN".to_string()));
    let answer = |challenge_line: &str, user: &str, secret: &str| {
        let challenge = B64
            .decode(challenge_line.trim_end().strip_prefix("+ ").unwrap())
            .unwrap();
        assert!(challenge.starts_with(b"<") && challenge.ends_with(b"@pop.test>"));
        let (i, o) = cram_context::contexts(secret.as_bytes());
        let mac: String = cram_context::hmac(&i, &o, &challenge)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        B64.encode(format!("{user} {mac}"))
    };
    // Wrong secret, then a user whose secret is hashed (bob, SSHA): both fail alike.
    let ch = c.cmd("AUTH CRAM-MD5").await;
    assert_eq!(
        c.cmd(&answer(&ch, "alice", "nope")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    let ch = c.cmd("AUTH CRAM-MD5").await;
    assert_eq!(
        c.cmd(&answer(&ch, "bob", "password")).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    // Each challenge is new.
    let first = c.cmd("AUTH CRAM-MD5").await;
    assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled\r\n");
    let ch = c.cmd("AUTH CRAM-MD5").await;
    assert_ne!(first, ch);
    assert!(
        c.cmd(&answer(&ch, "alice", "secret"))
            .await
            .starts_with("+OK alice's maildrop has 1")
    );
    // Not configured: not offered.
    let srv = TestServer::start().await;
    let mut c = srv.connect().await;
    assert!(
        !lines(&c.multi("CAPA").await.1)
            .iter()
            .any(|l| l.contains("CRAM-MD5"))
    );
    assert_eq!(
        c.cmd("AUTH CRAM-MD5").await,
        "-ERR Unsupported authentication mechanism\r\n"
    );
}

/// CAPA's SASL line and bare AUTH list only mechanisms that the passwd
/// file's secrets can serve: with salted SHA hashes only, none of the
/// challenge-response mechanisms can succeed, so none is offered.
#[tokio::test]
async fn sasl_offers_follow_the_stored_secrets() {
    let mechs = [
        "PLAIN",
        "CRAM-MD5",
        "DIGEST-MD5",
        "NTLM",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
    ];
    let srv = TestServer::start_with(|c| {
        c.auth.mechanisms = mechs.iter().map(|m| m.to_string()).collect();
    })
    .await;
    let mut c = srv.connect().await;
    assert!(
        lines(&c.multi("CAPA").await.1)
            .contains(&"SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 DIGEST-MD5 NTLM PLAIN".to_string())
    );
    let hashed_only = TestServer::start_with(|c| {
        c.auth.mechanisms = mechs.iter().map(|m| m.to_string()).collect();
        std::fs::write(
            &c.auth.passwd_file,
            "bob:{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0::::\n",
        )
        .unwrap();
    })
    .await;
    let mut c = hashed_only.connect().await;
    let caps = lines(&c.multi("CAPA").await.1);
    assert!(caps.contains(&"SASL PLAIN".to_string()), "{caps:?}");
    assert_eq!(lines(&c.multi("AUTH").await.1), ["PLAIN"]);
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("-ERR"));
}

/// RFC 6856: a client that has not sent UTF8 gets the header of an
/// internationalized message downgraded to encoded-words; after UTF8 it
/// gets the message as stored. UTF-8 user names and passwords work where
/// CAPA says `UTF8 USER`, and are refused where it does not.
async fn utf8_mode_downgrades_headers_for_clients_outside_it(b: Backend) {
    let srv = TestServer::start_on(b).await;
    let message = "From: jörg@example.org\nSubject: Grüße\n\nKörper bleibt.\n";
    srv.put("jörg", message.as_bytes()).await;
    let mut c = srv.connect().await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"UTF8 USER".to_string()));
    assert_eq!(c.cmd("USER jörg").await, "+OK\r\n");
    assert!(c.cmd("PASS pässwört").await.starts_with("+OK"));
    let (_, body) = c.multi("RETR 1").await;
    // A non-ASCII address: an empty group named by it (RFC 6858 §3), so
    // the field still parses; other fields as encoded-words.
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "From: =?UTF-8?B?asO2cmdAZXhhbXBsZS5vcmc=?= :;\r\n\
         Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nKörper bleibt.\r\n.\r\n"
    );
    // TOP downgrades the same way.
    let (_, top) = c.multi("TOP 1 0").await;
    assert!(top.is_ascii(), "{}", String::from_utf8_lossy(&top));
    // UTF-8 mode (Outlook sends UTF8 after login): the message as stored.
    assert_eq!(c.cmd("UTF8").await, "+OK UTF8 enabled\r\n");
    let (_, body) = c.multi("RETR 1").await;
    assert_eq!(
        body,
        message
            .replace('\n', "\r\n")
            .into_bytes()
            .into_iter()
            .chain(*b".\r\n")
            .collect::<Vec<u8>>()
    );
    c.cmd("QUIT").await;

    // Without UTF8 support the server is plain RFC 1939: no UTF-8 names.
    let srv = TestServer::start_on_with(b, |c| c.server.enable_utf8 = false).await;
    srv.put("jörg", message.as_bytes()).await;
    let mut c = srv.connect().await;
    assert_eq!(
        c.cmd("USER jörg").await,
        "-ERR Non-ASCII user names and passwords are not accepted\r\n"
    );
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS pässwört").await,
        "-ERR Non-ASCII user names and passwords are not accepted\r\n"
    );
}

/// Master users are matched as logins are looked up: without regard to
/// case (`ALICE` logs in as `alice`, so `ALICE` is alice as a master too).
async fn master_users_match_without_case(b: Backend) {
    let srv = TestServer::start_on_with(b, |c| c.auth.master_users = vec!["alice".into()]).await;
    srv.put("bob", b"Subject: b\n\nfor bob\n").await;
    let mut c = srv.connect().await;
    let as_bob = B64.encode(b"bob\0ALICE\0secret");
    assert!(
        c.cmd(&format!("AUTH PLAIN {as_bob}"))
            .await
            .starts_with("+OK"),
    );
    assert_eq!(c.cmd("STAT").await, "+OK 1 23\r\n");
}

/// Messages retrieved with RETR and kept move to `cur/` with the seen flag
/// at QUIT, as Dovecot moves them, so an IMAP client sharing the Maildir
/// shows them as read; TOP alone, or a session without QUIT, changes
/// nothing.
#[tokio::test]
async fn retrieved_messages_are_marked_seen_at_quit() {
    let srv = TestServer::start().await;
    for n in 1..=3 {
        srv.deliver("alice", n, format!("Subject: {n}\n\nbody\n").as_bytes());
    }
    let names = |sub: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(srv.maildir("alice").join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Without QUIT nothing moves.
    let mut c = srv.login("alice", "secret").await;
    c.multi("RETR 1").await;
    drop(c);
    wait_until(Duration::from_secs(10), "the session ended", || {
        srv.manager.limits().active() == 0
    })
    .await;
    assert_eq!(names("new").len(), 3);
    let mut c = srv.login("alice", "secret").await;
    c.multi("RETR 1").await;
    c.multi("TOP 2 0").await;
    c.multi("RETR 3").await;
    c.cmd("DELE 3").await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let cur = names("cur");
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].ends_with(":2,S"), "{cur:?}");
    assert_eq!(names("new").len(), 1, "TOP does not mark");
    // The UIDLs are the same after the move.
    let mut c = srv.login("alice", "secret").await;
    let (_, uidl) = c.multi("UIDL").await;
    assert_eq!(lines(&uidl).len(), 2);
    let (_, body) = c.multi("RETR 1").await;
    assert_eq!(body, b"Subject: 1\r\n\r\nbody\r\n.\r\n");

    // storage.mark_seen = false: POP3 renames nothing.
    let srv = TestServer::start_with(|c| c.storage.mark_seen = false).await;
    srv.deliver("alice", 1, b"Subject: 1\n\nbody\n");
    let mut c = srv.login("alice", "secret").await;
    c.multi("RETR 1").await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let new = std::fs::read_dir(srv.maildir("alice").join("new"))
        .unwrap()
        .count();
    assert_eq!(new, 1);
}

/// The tests above that are about POP3 rather than one store, once per
/// backend: `session::maildir::*` and `session::postgres::*`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod maildir {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::common::Backend::Maildir).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::common::Backend::Postgres).await
            })*
        }
    };
}
pub(crate) use on_both_backends;

on_both_backends!(
    greeting_and_wrong_state,
    bad_arguments_get_err_and_the_session_goes_on,
    keywords_are_case_insensitive_and_pass_keeps_spaces,
    wrong_password_and_unknown_user_look_the_same,
    too_many_failures_close_the_connection,
    retr_encodes_line_ends_dots_and_final_crlf,
    top_returns_headers_and_n_lines,
    deletions_are_marks_until_quit,
    dropped_connection_and_timeout_delete_nothing,
    second_session_gets_in_use,
    new_mail_is_invisible_until_next_login,
    uidls_are_never_reused,
    pipelined_commands_are_answered_in_order,
    many_pipelined_commands_in_one_segment,
    capa_reflects_state_and_config,
    apop_login_and_failures,
    auth_plain_and_login,
    big_message_streams_exactly,
    utf8_mode_downgrades_headers_for_clients_outside_it,
    master_users_match_without_case,
);

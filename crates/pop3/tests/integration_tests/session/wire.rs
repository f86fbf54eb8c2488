// SPDX-License-Identifier: AGPL-3.0-only
//! What the client sees of the protocol itself: CAPA as state and
//! configuration change it, pipelining, UTF8, and whatever arrives on the
//! wire (split packets, bare LF, NULs, endless lines).

use std::time::Duration;

use crate::common::*;

use super::server_with_mail;

pub(super) async fn pipelined_commands_are_answered_in_order(b: Backend) {
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

pub(super) async fn many_pipelined_commands_in_one_segment(b: Backend) {
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

pub(super) async fn capa_reflects_state_and_config(b: Backend) {
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

/// RFC 6856: a client that has not sent UTF8 gets the header of an
/// internationalized message downgraded to encoded-words; after UTF8 it
/// gets the message as stored. UTF-8 user names and passwords work where
/// CAPA says `UTF8 USER`, and are refused where it does not.
pub(super) async fn utf8_mode_downgrades_headers_for_clients_outside_it(b: Backend) {
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

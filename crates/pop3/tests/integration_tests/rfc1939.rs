// SPDX-License-Identifier: AGPL-3.0-only
//! RFC 1939's own example sessions (§5-§10), byte for byte.

use crate::common::*;
use pop3::protocol::compute_apop_digest;

/// A message of exactly `size` octets as sent.
fn message(size: usize, tag: &str) -> Vec<u8> {
    let head = format!("Subject: {tag}\r\n\r\n");
    let fill = size - head.len() - 2;
    let mut m = head.into_bytes();
    m.extend(std::iter::repeat_n(b'a', fill));
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), size);
    m
}

#[tokio::test]
async fn section_10_example_session() {
    let srv = TestServer::start_with(|c| {
        c.server.enable_apop = true;
        c.server.greeting = "POP3 server ready".into();
        c.server.hostname = "dewey".into();
    })
    .await;
    let m1 = message(120, "one");
    let m2 = message(200, "two");
    srv.deliver("mrose", 1, &m1);
    srv.deliver("mrose", 2, &m2);

    let mut c = srv.connect().await;
    // S: +OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>
    let g = c.greeting.clone();
    assert!(
        g.starts_with("+OK POP3 server ready <") && g.ends_with("@dewey>\r\n"),
        "{g}"
    );
    let ts = &g[g.find('<').unwrap()..g.len() - 2];
    let digest = compute_apop_digest(ts, "tanstaaf");

    let script: &[(String, &str)] = &[
        (
            format!("APOP mrose {digest}"),
            "+OK mrose's maildrop has 2 messages (320 octets)\r\n",
        ),
        ("STAT".into(), "+OK 2 320\r\n"),
        ("LIST".into(), "+OK 2 messages (320 octets)\r\n"),
    ];
    for (cmd, want) in script {
        assert_eq!(&c.cmd(cmd).await, want, "{cmd}");
    }
    assert_eq!(c.body().await, b"1 120\r\n2 200\r\n.\r\n");

    assert_eq!(c.cmd("RETR 1").await, "+OK 120 octets\r\n");
    let mut want = m1.clone();
    want.extend_from_slice(b".\r\n");
    assert_eq!(c.body().await, want);
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    assert_eq!(c.cmd("RETR 2").await, "+OK 200 octets\r\n");
    let mut want = m2.clone();
    want.extend_from_slice(b".\r\n");
    assert_eq!(c.body().await, want);
    assert_eq!(c.cmd("DELE 2").await, "+OK message 2 deleted\r\n");
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK dewey POP3 server signing off (maildrop empty)\r\n"
    );
    assert_eq!(c.until_closed().await, b"");
    let left = std::fs::read_dir(srv.maildir("mrose").join("new"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "both messages removed in UPDATE");
}

#[tokio::test]
async fn command_examples_of_section_5_to_7() {
    let srv = TestServer::start_with(|c| c.server.hostname = "dewey".into()).await;
    srv.deliver("mrose", 1, &message(120, "one"));
    srv.deliver("mrose", 2, &message(200, "two"));
    let mut c = srv.connect().await;
    // §7 USER/PASS
    assert_eq!(c.cmd("USER mrose").await, "+OK\r\n");
    assert_eq!(
        c.cmd("PASS tanstaaf").await,
        "+OK mrose's maildrop has 2 messages (320 octets)\r\n"
    );
    // §5 STAT, LIST
    assert_eq!(c.cmd("STAT").await, "+OK 2 320\r\n");
    assert_eq!(c.cmd("LIST 2").await, "+OK 2 200\r\n");
    assert_eq!(
        c.cmd("LIST 3").await,
        "-ERR no such message, only 2 messages in maildrop\r\n"
    );
    // §5 DELE
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    assert_eq!(c.cmd("DELE 1").await, "-ERR message 1 already deleted\r\n");
    // §5 NOOP, RSET
    assert_eq!(c.cmd("NOOP").await, "+OK\r\n");
    assert_eq!(
        c.cmd("RSET").await,
        "+OK maildrop has 2 messages (320 octets)\r\n"
    );
    // §7 TOP
    assert_eq!(c.cmd("TOP 1 10").await, "+OK\r\n");
    assert_eq!(
        c.body().await,
        [&message(120, "one")[..], b".\r\n"].concat()
    );
    assert_eq!(
        c.cmd("TOP 100 3").await,
        "-ERR no such message, only 2 messages in maildrop\r\n"
    );
    // §7 UIDL: stable strings of 0x21-0x7E.
    let (_, body) = c.multi("UIDL").await;
    let uidls = lines(&body);
    assert_eq!(uidls.len(), 2);
    for (i, l) in uidls.iter().enumerate() {
        let (n, uid) = l.split_once(' ').unwrap();
        assert_eq!(n, (i + 1).to_string());
        assert!((1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(
            c.cmd(&format!("UIDL {n}")).await,
            format!("+OK {n} {uid}\r\n")
        );
    }
    // §6 QUIT with nothing marked
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK dewey POP3 server signing off (2 messages left)\r\n"
    );

    // §6 QUIT in AUTHORIZATION
    let mut c = srv.connect().await;
    assert_eq!(c.cmd("QUIT").await, "+OK dewey POP3 server signing off\r\n");
    assert_eq!(c.until_closed().await, b"");
}

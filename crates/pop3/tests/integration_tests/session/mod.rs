// SPDX-License-Identifier: AGPL-3.0-only
//! Every command and error path of a live session, asserted on raw bytes.

use std::time::Duration;

use crate::common::*;

mod login;
mod wire;
use login::*;
use wire::*;

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
    wait_for(Duration::from_secs(5), "the slot returned", async || {
        let c = Client::connect(srv.plain).await;
        c.greeting.starts_with("+OK").then_some(())
    })
    .await;

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

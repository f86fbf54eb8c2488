// SPDX-License-Identifier: AGPL-3.0-only
//! Logging in: USER/PASS, APOP, SASL, master users, what plaintext and
//! failures lead to.

use std::time::Duration;

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::{MSG1, server_with_mail};

pub(super) async fn keywords_are_case_insensitive_and_pass_keeps_spaces(b: Backend) {
    let srv = TestServer::start_on(b).await;
    std::fs::write(
        srv.dir.path().join("passwd"),
        std::fs::read_to_string(srv.dir.path().join("passwd")).unwrap()
            + "spacey:{PLAIN} two  words :1:1::/dev/null\n",
    )
    .unwrap();
    // Read again at the next check of the file's stamp (once a second).
    let users = srv.manager.services().users.clone();
    wait_for(
        Duration::from_secs(5),
        "the new passwd line read",
        async || users.lookup("spacey").await.unwrap(),
    )
    .await;
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

pub(super) async fn wrong_password_and_unknown_user_look_the_same(b: Backend) {
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

pub(super) async fn too_many_failures_close_the_connection(b: Backend) {
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

pub(super) async fn apop_login_and_failures(b: Backend) {
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

pub(super) async fn auth_plain_and_login(b: Backend) {
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

/// Master users are matched as logins are looked up: without regard to
/// case (`ALICE` logs in as `alice`, so `ALICE` is alice as a master too).
pub(super) async fn master_users_match_without_case(b: Backend) {
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

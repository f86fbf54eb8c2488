// SPDX-License-Identifier: AGPL-3.0-only
//! What the user database says of where and how a user may log in:
//! Dovecot's `allow_nets`; passwords on a breached list.

use std::net::SocketAddr;

use crate::abuse::{events, start};
use crate::common::*;
use pop3::config::{ListenerConfig, Pop3Config, TlsMode};

/// Users whose passwd lines carry `allow_nets`, beside the harness's.
fn with_users(c: &mut Pop3Config, lines: &[&str]) {
    use std::io::Write;
    let home = c.auth.passwd_file.parent().unwrap().join("home");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&c.auth.passwd_file)
        .unwrap();
    for l in lines {
        writeln!(f, "{}", l.replace("%HOME%", home.to_str().unwrap())).unwrap();
    }
}

async fn pass(c: &mut Client<tokio::net::TcpStream>, user: &str, pass: &str) -> String {
    c.cmd(&format!("USER {user}")).await;
    c.cmd(&format!("PASS {pass}")).await
}

#[tokio::test]
async fn allow_nets_refuses_a_login_from_elsewhere_like_a_wrong_password() {
    let srv = start(|c| {
        c.security.block_loopback = false;
        with_users(
            c,
            &[
                "dave:{PLAIN}secret:1006:1006::%HOME%/dave::allow_nets=127.0.0.1/32,2001:db8::/32",
                "erin:{PLAIN}secret:1007:1007::%HOME%/erin::userdb_allow_nets=192.0.2.0/24",
            ],
        )
    })
    .await;
    let mut inside = Client::connect_from("127.0.0.1", srv.plain).await;
    assert!(pass(&mut inside, "dave", "secret").await.starts_with("+OK"));
    inside.cmd("QUIT").await;
    // From 127.0.0.2, outside dave's networks: the reply a wrong password
    // gets, word for word.
    let mut outside = Client::connect_from("127.0.0.2", srv.plain).await;
    let refused = pass(&mut outside, "dave", "secret").await;
    let wrong = pass(&mut outside, "dave", "wrong").await;
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    assert_eq!(refused, wrong);
    // A user allowed only elsewhere never logs in from here.
    let mut c = Client::connect_from("127.0.0.1", srv.plain).await;
    assert!(
        pass(&mut c, "erin", "secret")
            .await
            .starts_with("-ERR [AUTH]")
    );
    // The security log says why, where the client was told nothing.
    let reasons: Vec<String> = events(&srv)
        .iter()
        .filter(|e| e["event"] == "auth_failed")
        .map(|e| format!("{} {} {}", e["user"], e["ip"], e["reason"]))
        .collect();
    assert!(
        reasons
            .contains(&"\"dave\" \"127.0.0.2\" \"address outside the user's allow_nets\"".into()),
        "{reasons:?}"
    );
    assert!(
        reasons
            .contains(&"\"erin\" \"127.0.0.1\" \"address outside the user's allow_nets\"".into()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn allow_nets_sees_an_ipv4_client_of_a_dual_stack_listener_as_ipv4() {
    let srv = TestServer::start_with(|c| {
        let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        c.listeners = vec![ListenerConfig::new(any6, TlsMode::None)];
        c.auth.allow_plaintext = true;
        with_users(
            c,
            &["dave:{PLAIN}secret:1006:1006::%HOME%/dave::allow_nets=127.0.0.0/8,::1"],
        )
    })
    .await;
    let port = srv.plain.port();
    // IPv4 on the [::] socket arrives as ::ffff:127.0.0.1.
    let mut v4 = Client::connect(SocketAddr::from(([127, 0, 0, 1], port))).await;
    assert!(pass(&mut v4, "dave", "secret").await.starts_with("+OK"));
    v4.cmd("QUIT").await;
    let mut v6 = Client::connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).await;
    assert!(pass(&mut v6, "dave", "secret").await.starts_with("+OK"));
}

#[tokio::test]
async fn allow_nets_from_pop3ds_own_table() {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = pop3::config::UserBackend::Postgres;
    })
    .await;
    srv.sql(
        "INSERT INTO users (login, secret, allow_nets) VALUES \
         ('pat', '{PLAIN}pw', '127.0.0.1'), ('sam', '{PLAIN}pw', '192.0.2.0/24'), \
         ('typo', '{PLAIN}pw', '127.0.0/8')",
    );
    let mut c = Client::connect_from("127.0.0.1", srv.plain).await;
    assert!(pass(&mut c, "pat", "pw").await.starts_with("+OK"));
    let mut c = Client::connect_from("127.0.0.2", srv.plain).await;
    assert!(pass(&mut c, "pat", "pw").await.starts_with("-ERR [AUTH]"));
    assert!(pass(&mut c, "sam", "pw").await.starts_with("-ERR [AUTH]"));
    // A value that cannot be read allows nowhere, not everywhere.
    let mut c = Client::connect_from("127.0.0.1", srv.plain).await;
    assert!(pass(&mut c, "typo", "pw").await.starts_with("-ERR [AUTH]"));
}

/// A Pwned Passwords list holding "secret" (alice's password) among
/// others, sorted as downloaded.
fn breached_list(dir: &std::path::Path) -> std::path::PathBuf {
    use sha1::Digest;
    let mut lines: Vec<String> = ["secret", "123456", "qwerty", "letmein"]
        .iter()
        .map(|p| {
            let hex: String = sha1::Sha1::digest(p.as_bytes())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
            format!("{hex}:{}", p.len() * 1000)
        })
        .collect();
    lines.sort();
    let path = dir.join("breached.txt");
    std::fs::write(&path, lines.join("\r\n") + "\r\n").unwrap();
    path
}

#[tokio::test]
async fn a_breached_password_is_refused_when_the_policy_says_so() {
    let lists = tempfile::tempdir().unwrap();
    let list = breached_list(lists.path());
    let srv = start(|c| {
        c.security.block_loopback = false;
        c.auth.breached_passwords_file = Some(list);
        c.auth.breached_passwords_policy = pop3::config::BreachedPolicy::Refuse;
    })
    .await;
    // A wrong password is told nothing new.
    let mut c = srv.connect().await;
    let wrong = pass(&mut c, "alice", "wrong").await;
    assert!(
        wrong.starts_with("-ERR [AUTH] Authentication failed"),
        "{wrong}"
    );
    // The right one, on the list: refused, and told why, over USER/PASS
    // and over SASL PLAIN alike.
    let refused = pass(&mut c, "alice", "secret").await;
    assert!(
        refused.starts_with("-ERR [AUTH] Your password is on a list of breached passwords"),
        "{refused}"
    );
    let plain = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "\0alice\0secret",
    );
    let mut c = srv.connect().await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await, refused);
    // A password not on the list logs in.
    srv.login("mrose", "tanstaaf").await.cmd("QUIT").await;
    let events = events(&srv);
    let breached: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "breached_password")
        .collect();
    assert_eq!(breached.len(), 2, "{events:?}");
    assert_eq!(breached[0]["user"], "alice");
    assert_eq!(breached[0]["action"], "refused");
    assert_eq!(breached[1]["mechanism"], "PLAIN");
    let metrics = srv.manager.services().metrics.encode();
    assert!(
        metrics.contains("pop3_breached_password_logins_total{result=\"refused\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_breached_password_is_let_in_and_reported_under_warn() {
    let lists = tempfile::tempdir().unwrap();
    let list = breached_list(lists.path());
    let srv = start(|c| c.auth.breached_passwords_file = Some(list)).await;
    srv.login("alice", "secret").await.cmd("QUIT").await;
    let events = events(&srv);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "breached_password" && e["action"] == "warned"),
        "{events:?}"
    );
    let metrics = srv.manager.services().metrics.encode();
    assert!(
        metrics.contains("pop3_breached_password_logins_total{result=\"warned\"} 1"),
        "{metrics}"
    );
    // The log never holds the password or its hash.
    let log = std::fs::read_to_string(srv.dir.path().join("security.log")).unwrap();
    assert!(!log.contains("secret") && !log.contains("E5E9FA1BA31ECD1AE84F75CAAA474F3A663F05F4"));
}

#[test]
fn a_breached_list_that_cannot_be_read_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Pop3Config::default();
    config.auth.breached_passwords_file = Some(dir.path().join("missing.txt"));
    let err = pop3::services::breached_passwords(&config).unwrap_err();
    assert!(
        err.to_string().contains("auth.breached_passwords_file"),
        "{err}"
    );
    std::fs::write(dir.path().join("passwd"), "alice:{PLAIN}secret\n").unwrap();
    config.auth.breached_passwords_file = Some(dir.path().join("passwd"));
    let err = pop3::services::breached_passwords(&config).unwrap_err();
    assert!(
        err.to_string().contains("not a Pwned Passwords list"),
        "{err}"
    );
}

/// Every configuration the user database documentation shows (README's
/// "Where users come from", docs/users.md) is read by the configuration
/// loader as written: no key misspelt, no value of the wrong kind.
#[test]
fn the_documented_user_database_configurations_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut blocks = 0;
    for file in ["README.md", "docs/users.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for block in text.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            let parsed: Result<Pop3Config, _> = toml::from_str(block);
            assert!(parsed.is_ok(), "{file}: {parsed:?}\n{block}");
            blocks += 1;
        }
    }
    assert!(blocks >= 6, "{blocks} blocks");
}

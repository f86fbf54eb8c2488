// SPDX-License-Identifier: AGPL-3.0-only
//! What the user database says of where and how a user may log in:
//! Dovecot's `allow_nets`.

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

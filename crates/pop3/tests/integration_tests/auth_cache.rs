// SPDX-License-Identifier: AGPL-3.0-only
//! The auth cache against a live server: logins answered from memory, a
//! change in the user database heard at once, failures that still count.

use std::time::Duration;

use crate::common::*;
use pop3::config::UserBackend;

/// Statements the database has run for this test's database so far.
fn statements(srv: &TestServer) -> i64 {
    srv.sql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND query LIKE '%FROM users%'",
    )
    .trim()
    .parse()
    .unwrap()
}

/// Log in once (which starts the node following announced changes), and
/// wait until it listens: making that connection counts as a change
/// (what was announced before it is unknown), so entries before it go.
async fn first_login(srv: &TestServer, user: &str, pass: &str) {
    assert!(srv.try_login(user, pass).await.starts_with("+OK"));
    let db = srv.database.clone().unwrap();
    wait_for(Duration::from_secs(5), "the node listening", async || {
        (srv.sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND query = 'LISTEN pop3d_users'"
        ))
        .trim()
            == "1")
            .then_some(())
    })
    .await;
    assert!(srv.try_login(user, pass).await.starts_with("+OK"));
}

/// A server with pop3d's PostgreSQL users and the cache (`ttl`), and
/// `pat` (password `old`) logged in once.
async fn pat_with_cache(ttl: Duration) -> TestServer {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = UserBackend::Postgres;
        c.auth.cache_size = 1000;
        c.auth.cache_ttl = ttl;
    })
    .await;
    srv.sql("INSERT INTO users (login, secret) VALUES ('pat', '{PLAIN}old')");
    first_login(&srv, "pat", "old").await;
    srv
}

#[tokio::test]
async fn a_polled_mailbox_costs_no_user_query_and_a_change_is_heard_at_once() {
    let srv = pat_with_cache(Duration::from_secs(3600)).await;
    srv.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    srv.sql("SELECT pg_stat_statements_reset()");
    for _ in 0..20 {
        assert!(srv.try_login("pat", "old").await.starts_with("+OK"));
        assert!(
            srv.try_login("pat", "wrong")
                .await
                .starts_with("-ERR [AUTH]")
        );
    }
    assert_eq!(statements(&srv), 0, "logins answered from the cache");
    // What `pop3d user passwd` does: change the row and announce it. Every
    // node hears it and forgets; no TTL to wait out.
    srv.sql("UPDATE users SET secret = '{PLAIN}new' WHERE login = 'pat'; NOTIFY pop3d_users");
    srv.wait_for_login(Duration::from_secs(5), "the change heard", "pat", "new")
        .await;
    assert!(srv.try_login("pat", "old").await.starts_with("-ERR [AUTH]"));
}

#[tokio::test]
async fn without_an_announcement_a_change_waits_for_the_ttl() {
    let srv = pat_with_cache(Duration::from_millis(500)).await;
    // A table changed behind pop3d's back (a password_query's table).
    srv.sql("UPDATE users SET secret = '{PLAIN}new' WHERE login = 'pat'");
    assert!(
        srv.try_login("pat", "old").await.starts_with("+OK"),
        "still remembered"
    );
    srv.wait_for_login(Duration::from_secs(5), "the entry expired", "pat", "new")
        .await;
}

#[tokio::test]
async fn a_changed_passwd_file_empties_the_cache() {
    let srv = TestServer::start_with(|c| c.auth.cache_size = 1000).await;
    assert!(srv.try_login("alice", "secret").await.starts_with("+OK"));
    let passwd = srv.dir.path().join("passwd");
    let text = std::fs::read_to_string(&passwd).unwrap();
    std::fs::write(
        &passwd,
        text.replace("alice:{PLAIN}secret:", "alice:{PLAIN}changed:"),
    )
    .unwrap();
    srv.wait_for_login(
        Duration::from_secs(5),
        "the new password",
        "alice",
        "changed",
    )
    .await;
    assert!(
        srv.try_login("alice", "secret")
            .await
            .starts_with("-ERR [AUTH]")
    );
}

#[tokio::test]
async fn a_remembered_failure_still_counts_against_the_session() {
    let srv = TestServer::start_with(|c| {
        c.auth.cache_size = 1000;
        c.security.max_auth_attempts = 3;
    })
    .await;
    let mut c = srv.connect().await;
    for _ in 0..2 {
        c.cmd("USER alice").await;
        assert!(c.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    }
    c.cmd("USER alice").await;
    let last = c.cmd("PASS wrong").await;
    assert!(last.contains("Too many authentication failures"), "{last}");
    c.until_closed().await;
}

#[tokio::test]
async fn a_reload_empties_the_cache() {
    let srv = pat_with_cache(Duration::from_secs(3600)).await;
    srv.sql("UPDATE users SET secret = '{PLAIN}new' WHERE login = 'pat'");
    assert!(srv.try_login("pat", "old").await.starts_with("+OK"));
    let config = (*srv.manager.services().config).clone();
    srv.manager.reload(config).unwrap();
    assert!(srv.try_login("pat", "new").await.starts_with("+OK"));
    assert!(srv.try_login("pat", "old").await.starts_with("-ERR [AUTH]"));
}

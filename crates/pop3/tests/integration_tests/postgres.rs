// SPDX-License-Identifier: AGPL-3.0-only
//! What only the PostgreSQL backend has: the maildrop lease between
//! nodes, fencing of a session whose lease lapsed, users in the database
//! (pop3d's own table and a Postfixadmin-shaped one through
//! password_query), the database going away and coming back, metrics,
//! round trips and pool bounds. The POP3 suite itself runs on this
//! backend too (`session::postgres::*`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pop3::config::{MetricsConfig, Pop3Config, StorageBackend, UserBackend};

use crate::common::*;

/// A second node on the database of `first`.
async fn second_node(first: &TestServer, tweak: impl FnOnce(&mut Pop3Config)) -> TestServer {
    let url = Postgres::shared().url(first.database.as_deref().unwrap());
    TestServer::start_on_with(Backend::Postgres, |c| {
        c.storage.url = Some(url);
        c.server.node_name = Some("node-b".into());
        tweak(c);
    })
    .await
}

fn node_a(c: &mut Pop3Config) {
    c.server.node_name = Some("node-a".into());
}

#[tokio::test]
async fn the_lease_holds_across_nodes_and_is_freed_by_quit_or_a_drop() {
    let a = TestServer::start_on_with(Backend::Postgres, node_a).await;
    a.put("alice", b"Subject: 1\n\none\n").await;
    let b = second_node(&a, |_| {}).await;
    let other = crate::session::in_use_until_the_holder_quits(&a, &b).await;
    // A connection that just goes away frees its lease too.
    drop(other);
    a.login_when_free("alice", "secret").await;
    // The epoch grew with every holder.
    let epoch: i64 = a
        .sql("SELECT epoch FROM maildrop_lease")
        .trim()
        .parse()
        .unwrap();
    assert!(epoch >= 3, "epoch {epoch}");
}

#[tokio::test]
async fn a_session_whose_lease_lapsed_deletes_nothing_at_quit() {
    let a = TestServer::start_on_with(Backend::Postgres, |c| {
        node_a(c);
        c.metrics = Some(MetricsConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
        });
    })
    .await;
    for n in 1..=3 {
        a.put("alice", format!("Subject: {n}\n\nbody\n").as_bytes())
            .await;
    }
    let b = second_node(&a, |_| {}).await;
    let mut stale = a.login("alice", "secret").await;
    stale.cmd("DELE 1").await;
    stale.cmd("DELE 2").await;
    // As if node A had been paused past the TTL: its lease lapses.
    a.sql("UPDATE maildrop_lease SET expires_at = now() - interval '1 second'");
    let mut fresh = b.login("alice", "secret").await;
    assert_eq!(fresh.cmd("STAT").await.split(' ').nth(1), Some("3"));
    fresh.cmd("DELE 3").await;
    assert!(fresh.cmd("QUIT").await.starts_with("+OK"));
    // The stale session's QUIT finds the lease gone.
    assert_eq!(
        stale.cmd("QUIT").await,
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    assert_eq!(a.stored("alice"), 2, "only the fresh session's deletion");
    let (_, m) = http_get(a.metrics.unwrap(), "/metrics").await;
    assert_eq!(sample(&m, "pop3_db_leases_lost_total"), 1.0);
}

#[tokio::test]
async fn a_node_frees_its_previous_runs_leases_at_once_and_no_others() {
    let a = TestServer::start_on_with(Backend::Postgres, |c| {
        node_a(c);
        c.storage.lease_ttl = Duration::from_secs(3600);
    })
    .await;
    let mut held = a.login("alice", "secret").await;
    held.cmd("NOOP").await;
    // The session is never released (as if its process had died).
    std::mem::forget(held);
    // Another node cannot take it.
    let b = second_node(&a, |_| {}).await;
    let mut other = b.connect().await;
    other.cmd("USER alice").await;
    assert!(other.cmd("PASS secret").await.starts_with("-ERR [IN-USE]"));
    // A second store of the same run (a reload builds one) leaves the
    // first store's sessions alone.
    let reloaded = second_node(&a, |c| c.server.node_name = Some("node-a".into())).await;
    let mut c = reloaded.connect().await;
    c.cmd("USER alice").await;
    assert!(c.cmd("PASS secret").await.starts_with("-ERR [IN-USE]"));
    // As if the lease had been left by an earlier run of node-a (another
    // pid and start time): node-a, started again, frees it at once.
    a.sql("UPDATE maildrop_lease SET boot = '1.1/' || split_part(boot, '/', 2)");
    let restarted = second_node(&a, |c| c.server.node_name = Some("node-a".into())).await;
    let mut c = restarted.login("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK"));
}

#[tokio::test]
async fn the_heartbeat_keeps_a_lease_past_its_ttl() {
    let a = TestServer::start_on_with(Backend::Postgres, |c| {
        node_a(c);
        c.storage.lease_ttl = Duration::from_secs(1);
    })
    .await;
    a.put("alice", b"Subject: 1\n\none\n").await;
    let b = second_node(&a, |c| c.storage.lease_ttl = Duration::from_secs(1)).await;
    let mut holder = a.login("alice", "secret").await;
    // Until the lease has outlived the TTL it was taken with, renewed.
    let first = a.sql("SELECT expires_at FROM maildrop_lease");
    wait_until(
        Duration::from_secs(10),
        "the lease outlived its first TTL",
        || {
            a.sql(&format!(
                "SELECT now() > '{}'::timestamptz + interval '1 second' AND expires_at > now() \
             FROM maildrop_lease",
                first.trim()
            ))
            .trim()
                == "t"
        },
    )
    .await;
    let mut other = b.connect().await;
    other.cmd("USER alice").await;
    assert!(other.cmd("PASS secret").await.starts_with("-ERR [IN-USE]"));
    holder.cmd("DELE 1").await;
    assert!(holder.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(a.stored("alice"), 0);
}

#[tokio::test]
async fn users_from_the_users_table_with_any_stored_scheme() {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = UserBackend::Postgres;
        c.auth.mechanisms = vec!["PLAIN".into(), "CRAM-MD5".into()];
        c.security.max_auth_attempts = 10;
    })
    .await;
    let argon = pop3::auth::hash_password(pop3::auth::Scheme::Argon2id, "s3cret").unwrap();
    let cram = pop3::auth::hash_password(pop3::auth::Scheme::CramMd5, "cr4m").unwrap();
    srv.sql(&format!(
        "INSERT INTO users (login, secret) VALUES ('carol', '{argon}'), ('dave', '{cram}'), \
         ('erin', '{{PLAIN}}pw');
         UPDATE users SET disabled = true WHERE login = 'erin'"
    ));
    // Any case of the login finds the user.
    let mut c = srv.login("Carol", "s3cret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 0 0"));
    c.cmd("QUIT").await;
    let mut c = srv.connect().await;
    c.cmd("USER carol").await;
    let wrong = c.cmd("PASS nope").await;
    c.cmd("USER nobody").await;
    let unknown = c.cmd("PASS nope").await;
    c.cmd("USER erin").await;
    let disabled = c.cmd("PASS pw").await;
    assert_eq!(wrong, unknown);
    assert_eq!(
        wrong, disabled,
        "a disabled user is refused like a wrong password"
    );
    // CRAM-MD5 from its stored form.
    let ch = c.cmd("AUTH CRAM-MD5").await;
    let challenge = B64
        .decode(ch.trim_end().strip_prefix("+ ").unwrap())
        .unwrap();
    let (i, o) = pop3::auth::cram_context::contexts(b"cr4m");
    let mac: String = pop3::auth::cram_context::hmac(&i, &o, &challenge)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = c.cmd(&B64.encode(format!("dave {mac}"))).await;
    assert!(r.starts_with("+OK"), "{r}");
}

#[tokio::test]
async fn password_query_reads_a_postfixadmin_mailbox_table() {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = UserBackend::Postgres;
        c.auth.password_query = Some(
            "SELECT username AS user, password FROM mailbox \
             WHERE username = $1 AND active = true"
                .into(),
        );
    })
    .await;
    let crypt = pop3::auth::hash_password(pop3::auth::Scheme::Sha512Crypt, "pa$$").unwrap();
    // Postfixadmin stores crypt strings without a scheme prefix.
    let bare = crypt.strip_prefix("{SHA512-CRYPT}").unwrap();
    srv.sql(&format!(
        "CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255), \
         active boolean NOT NULL DEFAULT true);
         INSERT INTO mailbox VALUES ('ann@example.org', '{bare}', true), \
         ('gone@example.org', '{bare}', false)"
    ));
    let mut c = srv.login("ann@example.org", "pa$$").await;
    assert!(c.cmd("STAT").await.starts_with("+OK"));
    let mut c = srv.connect().await;
    c.cmd("USER ann@example.org").await;
    let wrong = c.cmd("PASS nope").await;
    c.cmd("USER gone@example.org").await;
    let inactive = c.cmd("PASS pa$$").await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(
        wrong, inactive,
        "an inactive mailbox is refused like a wrong password"
    );
    // SQL in the login is data, never SQL.
    c.cmd("USER x'OR'1'='1").await;
    assert_eq!(c.cmd("PASS pa$$").await, wrong);
    assert_eq!(
        srv.sql("SELECT count(*) FROM mailbox").trim(),
        "2",
        "the table is untouched"
    );
}

#[tokio::test]
async fn a_login_stat_quit_costs_three_round_trips_and_idle_sessions_hold_no_connections() {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = UserBackend::Postgres;
        c.performance.connection_pool_size = 4;
        c.storage.lease_ttl = Duration::from_secs(3600);
        c.security.max_connections_per_ip = 1000;
    })
    .await;
    srv.sql("INSERT INTO users (login, secret) VALUES ('pat', '{PLAIN}pw')");
    srv.put("pat", b"Subject: 1\n\none\n").await;
    let cycle = || async {
        let mut c = srv.login("pat", "pw").await;
        assert!(c.cmd("STAT").await.starts_with("+OK 1 "));
        assert!(c.cmd("QUIT").await.starts_with("+OK"));
        c.until_closed().await;
    };
    // Warm every pool connection's prepared statements.
    for _ in 0..8 {
        cycle().await;
    }
    let db = srv.database.clone().unwrap();
    // pg_stat_statements counts every statement as it ends; each of
    // pop3d's is one round trip (prepared, so no Parse once warm).
    srv.sql("CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset()");
    let statements = || -> i64 {
        srv.sql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query NOT LIKE '%pg_stat_statements%'",
        )
        .trim()
        .parse()
        .unwrap()
    };
    let before = statements();
    let rounds = 20;
    for _ in 0..rounds {
        cycle().await;
    }
    let spent = statements() - before;
    eprintln!("{spent} round trips for {rounds} login+STAT+QUIT cycles");
    assert!(
        spent <= 3 * rounds,
        "{spent} round trips for {rounds} logins (more than 3 each)"
    );
    assert!(spent >= rounds, "{spent}: the statements were not counted");
    // 200 sessions logged in and idle hold no database connection: the
    // pool never grows past its size.
    let mut idle = Vec::new();
    for n in 0..200 {
        let user = format!("u{n}");
        srv.sql(&format!(
            "INSERT INTO users (login, secret) VALUES ('{user}', '{{PLAIN}}pw')"
        ));
        idle.push(srv.login(&user, "pw").await);
    }
    let connections: i64 = srv
        .sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND application_name = 'pop3d'"
        ))
        .trim()
        .parse()
        .unwrap();
    assert!(
        connections <= 4,
        "{connections} connections for a pool of 4"
    );
    for mut c in idle {
        assert!(c.cmd("NOOP").await.starts_with("+OK"));
    }
}

#[tokio::test]
async fn delivery_numbers_uids_and_keeps_counters_and_limits() {
    let srv =
        TestServer::start_on_with(Backend::Postgres, |c| c.server.max_message_size = 100).await;
    for n in 0..5 {
        srv.put("alice", format!("Subject: {n}\n\nx\n").as_bytes())
            .await;
    }
    assert_eq!(
        srv.sql("SELECT string_agg(uid::text, ',' ORDER BY uid) FROM messages")
            .trim(),
        "1,2,3,4,5"
    );
    // Counters agree with the rows.
    assert_eq!(
        srv.sql(
            "SELECT msg_count = (SELECT count(*) FROM messages) \
             AND octets = (SELECT sum(size) FROM messages) FROM mailboxes"
        )
        .trim(),
        "t"
    );
    // Over the limit (in POP3 octets): refused, nothing stored.
    let services = srv.manager.services();
    let alice = services.users.lookup("alice").await.unwrap().unwrap();
    let big = b"x\n".repeat(40);
    let mut input: &[u8] = &big;
    assert!(matches!(
        services.store.deliver(&alice, &mut input).await,
        Err(pop3::store::StoreError::TooLarge(100))
    ));
    assert_eq!(srv.sql("SELECT count(*) FROM bodies").trim(), "5");
    // A message of several slices comes back byte for byte.
    drop(services);
}

#[tokio::test]
async fn messages_larger_than_a_slice_stream_exactly() {
    let srv = TestServer::start_on(Backend::Postgres).await;
    use pop3::store::postgres::{PART, SLICE_PARTS};
    let slice = PART * SLICE_PARTS as usize;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let mut n = 0;
    while body.len() < 2 * slice + 1000 {
        body.extend_from_slice(format!(".line {n}\r\n").as_bytes());
        n += 1;
    }
    srv.put("alice", &body).await;
    assert_eq!(
        srv.sql("SELECT parts FROM messages").trim(),
        body.len().div_ceil(PART).to_string()
    );
    // Several small messages (read ahead together) and the big one.
    srv.put("alice", b"Subject: s1\n\nsmall one\n").await;
    srv.put("alice", b"Subject: s2\n\nsmall two\n").await;
    let mut c = srv.login("alice", "secret").await;
    let (first, got) = c.multi("RETR 1").await;
    assert_eq!(first, format!("+OK {} octets\r\n", body.len()));
    let stuffed = String::from_utf8(body.clone())
        .unwrap()
        .replace("\r\n.", "\r\n..");
    assert_eq!(got, [stuffed.as_bytes(), b".\r\n"].concat());
    assert_eq!(
        c.multi("RETR 3").await.1,
        b"Subject: s2\r\n\r\nsmall two\r\n.\r\n"
    );
    assert_eq!(
        c.multi("RETR 2").await.1,
        b"Subject: s1\r\n\r\nsmall one\r\n.\r\n"
    );
    assert_eq!(
        c.multi("RETR 3").await.1,
        b"Subject: s2\r\n\r\nsmall two\r\n.\r\n"
    );
}

#[tokio::test]
async fn the_database_going_away_and_coming_back() {
    let pg = Postgres::private();
    let db = pg.database();
    let url = pg.url(&db);
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.storage.url = Some(url);
        c.storage.connect_timeout = Duration::from_secs(1);
        c.metrics = Some(MetricsConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
        });
    })
    .await;
    srv.put("alice", b"Subject: 1\n\none\n").await;
    let metrics = srv.metrics.unwrap();
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);
    let mut c = srv.login("alice", "secret").await;
    c.cmd("DELE 1").await;
    pg.pg_ctl_stop();
    // The session learns at the next command that needs the database.
    assert_eq!(
        c.cmd("QUIT").await,
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    let (status, why) = http_get(metrics, "/readyz").await;
    assert_eq!(status, 503);
    assert!(why.contains("mail store: database unavailable"), "{why}");
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS secret").await,
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    pg.pg_ctl_start();
    // Back without a restart, and nothing was lost.
    wait_for(Duration::from_secs(10), "/readyz recovered", async || {
        (http_get(metrics, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let mut c = srv.login("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 1 "));
    let (_, m) = http_get(metrics, "/metrics").await;
    assert!(sample(&m, "pop3_db_unavailable_total") >= 1.0);
    assert!(m.contains("pop3_db_pool_idle"), "{m}");
    assert!(!m.contains(&pg.url(&db)), "no URL in the metrics");
}

#[tokio::test]
async fn a_silent_database_costs_a_session_sys_temp_not_a_hang() {
    let pg = Postgres::private();
    let url = pg.url(&pg.database());
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.storage.url = Some(url);
        c.storage.connect_timeout = Duration::from_secs(1);
        c.storage.statement_timeout = Duration::from_secs(1);
    })
    .await;
    srv.put("alice", b"Subject: 1\n\none\n").await;
    srv.put("alice", b"Subject: 2\n\ntwo\n").await;
    let mut c = srv.login("alice", "secret").await;
    pg.signal_all("STOP");
    let started = std::time::Instant::now();
    let answer = c.cmd("RETR 2").await;
    let waited = started.elapsed();
    pg.signal_all("CONT");
    assert_eq!(
        answer,
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    // The session goes on, and the database is used again once it answers.
    assert!(c.multi("RETR 1").await.0.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
}

#[tokio::test]
async fn configuration_errors_name_the_key() {
    let base = || {
        let mut c = Pop3Config::default();
        c.storage.backend = StorageBackend::Postgres;
        c
    };
    let err = base().validate().unwrap_err();
    assert_eq!(err.key, "storage.url");
    let mut c = base();
    c.storage.url = Some("postgres://u:hunter2@127.0.0.1/mail".into());
    let err = c.validate().unwrap_err();
    assert_eq!(err.key, "storage.url");
    assert!(!err.reason.contains("hunter2"), "{}", err.reason);
    let mut c = base();
    c.storage.url = Some("postgres://u@127.0.0.1/mail".into());
    c.auth.password_query = Some("SELECT password FROM t WHERE u = '%u'".into());
    assert_eq!(c.validate().unwrap_err().key, "auth.password_query");
}

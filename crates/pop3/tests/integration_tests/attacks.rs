// SPDX-License-Identifier: AGPL-3.0-only
//! The security review's attacks, each against a live server through the
//! real protocol, asserting what the attacker gets: rationed logins that
//! never lock the user out, a login deadline a trickle cannot renew,
//! abandoned SASL probes, a success that forgives only its own failures,
//! UIDLs that cannot wedge delivery, user names that cannot escape, SCRAM
//! answers and decoys that do not tell unknown users apart, a Maildir that
//! holds only what pop3d serves, and downgraded headers that keep their
//! addresses.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pop3::config::UserBackend;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::abuse::{events, fail_login, start};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_never_locks_the_user_out() {
    let srv = start(|c| c.security.max_auth_attempts = 1000).await;
    // alice's own phone logged in earlier in the window.
    let mut phone = Client::connect_from("127.0.0.2", srv.plain).await;
    phone.cmd("USER alice").await;
    assert!(phone.cmd("PASS secret").await.starts_with("+OK"));
    assert!(phone.cmd("QUIT").await.starts_with("+OK"));
    // 20 failures from 4 addresses...
    for a in 1..=4 {
        let mut c = Client::connect_from(&format!("127.0.1.{a}"), srv.plain).await;
        for _ in 0..5 {
            assert!(fail_login(&mut c, "alice").await.starts_with("-ERR [AUTH]"));
        }
    }
    // ...then 35 attempts at once from 35 other addresses, held in the
    // ration's queue (2 s apart: the last ones would wait past a minute).
    let mut held = Vec::new();
    for a in 1..=35 {
        let mut c = Client::connect_from(&format!("127.0.2.{a}"), srv.plain).await;
        c.cmd("USER alice").await;
        c.send(b"PASS wrong-guess\r\n").await;
        held.push(c);
    }
    let guard = srv.manager.guard().clone();
    wait_until(Duration::from_secs(10), "the queue fills", || {
        guard.user_queue("alice") >= Duration::from_secs(58)
    })
    .await;
    // The phone is not rationed at all.
    let t = Instant::now();
    let mut phone = Client::connect_from("127.0.0.2", srv.plain).await;
    phone.cmd("USER alice").await;
    let r = phone.cmd("PASS secret").await;
    assert!(r.starts_with("+OK"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(phone.cmd("QUIT").await.starts_with("+OK"));
    // A new device is told to come back later, never "wrong password",
    // and nothing is counted against it.
    let mut laptop = Client::connect_from("127.0.3.1", srv.plain).await;
    laptop.cmd("USER alice").await;
    let r = laptop.cmd("PASS secret").await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert!(
        !events(&srv)
            .iter()
            .any(|e| e["event"] == "auth_failed" && e["ip"] == "127.0.3.1"),
        "no failure counted for the rationed attempt"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_is_closed_at_the_login_deadline() {
    let srv = TestServer::start_with(|c| {
        c.server.login_timeout = Duration::from_secs(2);
        c.server.unauth_timeout = Duration::from_secs(60);
    })
    .await;
    let mut in_time = srv.login("alice", "secret").await;
    // From before the connection: the deadline counts from its accept.
    let started = Instant::now();
    let trickler = Client::connect(srv.plain).await;
    let (read, mut write) = trickler.into_inner().into_split();
    // One byte every 200 ms, never a line end: each read renews an idle
    // timer, not the deadline.
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut reply = String::new();
    tokio::io::BufReader::new(read)
        .read_line(&mut reply)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(reply, "-ERR [SYS/TEMP] Login took too long\r\n");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    writer.abort();
    assert_eq!(srv.manager.metrics().login_timeouts.get(), 1);
    // The session that logged in in time goes on past the deadline.
    assert!(in_time.cmd("STAT").await.starts_with("+OK"));
    assert!(in_time.cmd("QUIT").await.starts_with("+OK"));
}

/// The base64 client-first message of SCRAM for `user`.
fn scram_first(user: &str) -> String {
    B64.encode(format!("n,,n={user},r=fyko+d2lbbFgONRv9qkxdawL"))
}

#[tokio::test]
async fn abandoned_scram_probes_count_as_failures() {
    let srv = start(|c| {
        c.auth.mechanisms = vec!["SCRAM-SHA-256".into(), "PLAIN".into()];
        c.security.max_auth_attempts = 5;
    })
    .await;
    // Cancelling before the server looked anything up stays free.
    for _ in 0..20 {
        let mut c = Client::connect_from("127.0.5.1", srv.plain).await;
        assert!(c.cmd("AUTH SCRAM-SHA-256").await.starts_with("+ "));
        assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled\r\n");
    }
    assert!(
        srv.manager
            .guard()
            .blocked("127.0.5.1".parse().unwrap())
            .is_none()
    );
    // After the salt went out, each `*` is a failure for the address.
    let mut blocked_at = None;
    for round in 1..=200 {
        let mut c = Client::connect_from("127.0.5.2", srv.plain).await;
        if !c.greeting.starts_with("+OK") {
            blocked_at = Some(round);
            break;
        }
        let r = c
            .cmd(&format!("AUTH SCRAM-SHA-256 {}", scram_first("alice")))
            .await;
        assert!(r.starts_with("+ "), "{r}");
        let r = c.cmd("*").await;
        if r.starts_with("-ERR [SYS/TEMP]") {
            blocked_at = Some(round);
            break;
        }
        assert_eq!(r, "-ERR Authentication cancelled\r\n");
    }
    assert!(
        blocked_at.is_some_and(|r| r <= 6),
        "blocked after {blocked_at:?} rounds"
    );
    let ev = events(&srv);
    assert!(
        ev.iter().any(|e| e["event"] == "auth_failed"
            && e["ip"] == "127.0.5.2"
            && e["user"].is_null()
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("abandoned"))),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "blocked" && e["ip"] == "127.0.5.2"),
        "{ev:?}"
    );
}

#[tokio::test]
async fn a_success_forgives_only_its_own_failures() {
    let srv = start(|c| c.security.max_auth_attempts = 5).await;
    let attacker = "127.0.6.1";
    let mut blocked = false;
    'rounds: for _ in 0..3 {
        for _ in 0..4 {
            let mut c = Client::connect_from(attacker, srv.plain).await;
            if !c.greeting.starts_with("+OK") {
                blocked = true;
                break 'rounds;
            }
            if fail_login(&mut c, "mrose")
                .await
                .starts_with("-ERR [SYS/TEMP]")
            {
                blocked = true;
                break 'rounds;
            }
        }
        // One good login of the attacker's own account.
        let mut c = Client::connect_from(attacker, srv.plain).await;
        c.cmd("USER alice").await;
        assert!(c.cmd("PASS secret").await.starts_with("+OK"));
        assert!(c.cmd("QUIT").await.starts_with("+OK"));
    }
    assert!(
        blocked,
        "the attacker's own logins did not forgive the guesses"
    );
    assert!(
        srv.manager
            .guard()
            .blocked(attacker.parse().unwrap())
            .is_some()
    );
}

/// The UIDL listing of `user`, and the subject of each message.
async fn uidls_and_subjects(srv: &TestServer, user: &str, pass: &str) -> Vec<(String, String)> {
    let mut c = srv.login(user, pass).await;
    let (_, body) = c.multi("UIDL").await;
    let mut out = Vec::new();
    for line in lines(&body) {
        let (n, uidl) = line.split_once(' ').unwrap();
        let (_, msg) = c.multi(&format!("RETR {n}")).await;
        let text = String::from_utf8_lossy(&msg).into_owned();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap()
            .to_owned();
        out.push((uidl.to_owned(), subject));
    }
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    out
}

fn distinct(listing: &[(String, String)]) -> bool {
    let set: std::collections::HashSet<_> = listing.iter().map(|(u, _)| u).collect();
    set.len() == listing.len()
}

async fn a_taken_uidl_never_wedges_delivery(backend: Backend) {
    // `%u` meets an imported numeric UIDL of an old server.
    let srv = TestServer::start_on_with(backend, |c| {
        c.storage.uidl_format = "%u".into();
        with_lmtp(c);
    })
    .await;
    let lmtp_at = srv.lmtp.unwrap();
    let alice = srv.user("alice").await;
    let store = srv.manager.services().store.clone();
    let mut old: &[u8] = b"Subject: imported\r\n\r\nfrom the old server\r\n";
    store.import(&alice, "2", &mut old).await.unwrap();
    for i in 1..=3 {
        let r = lmtp(
            lmtp_at,
            "alice",
            &format!("Subject: new {i}\r\n\r\nbody\r\n"),
        )
        .await;
        assert!(r.starts_with("250 "), "delivery {i}: {r}");
    }
    let listing = uidls_and_subjects(&srv, "alice", "secret").await;
    assert_eq!(listing.len(), 4, "{listing:?}");
    assert!(distinct(&listing), "{listing:?}");
    assert!(
        listing.contains(&("2".into(), "imported".into())),
        "{listing:?}"
    );
    // The default format, and a planted UIDL equal to the one the next
    // delivery would make.
    let srv = TestServer::start_on_with(backend, with_lmtp).await;
    let lmtp_at = srv.lmtp.unwrap();
    assert!(
        lmtp(lmtp_at, "alice", "Subject: first\r\n\r\nx\r\n")
            .await
            .starts_with("250 ")
    );
    let first = uidls_and_subjects(&srv, "alice", "secret").await;
    let validity = &first[0].0[8..];
    let planted = format!("00000003{validity}");
    let alice = srv.user("alice").await;
    let mut old: &[u8] = b"Subject: planted\r\n\r\nx\r\n";
    srv.manager
        .services()
        .store
        .import(&alice, &planted, &mut old)
        .await
        .unwrap();
    let r = lmtp(lmtp_at, "alice", "Subject: after\r\n\r\nx\r\n").await;
    assert!(r.starts_with("250 "), "{r}");
    let listing = uidls_and_subjects(&srv, "alice", "secret").await;
    assert_eq!(listing.len(), 3, "{listing:?}");
    assert!(distinct(&listing), "{listing:?}");
    assert!(
        listing.contains(&(planted, "planted".into())),
        "{listing:?}"
    );
    assert!(listing.contains(&(first[0].0.clone(), "first".into())));
}

#[tokio::test]
async fn a_taken_uidl_never_wedges_delivery_into_maildir() {
    a_taken_uidl_never_wedges_delivery(Backend::Maildir).await;
}

#[tokio::test]
async fn a_taken_uidl_never_wedges_delivery_into_postgres() {
    a_taken_uidl_never_wedges_delivery(Backend::Postgres).await;
}

const ACCOUNTS: &str = "SELECT username AS user, password FROM accounts \
                        WHERE lower(username) = lower($1) AND active";

#[tokio::test]
async fn one_canonical_name_per_mailbox_and_names_that_cannot_escape() {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = UserBackend::Postgres;
        c.auth.password_query = Some(ACCOUNTS.into());
        with_lmtp(c);
    })
    .await;
    srv.sql(
        "CREATE TABLE accounts (username text, password text, active bool); \
         INSERT INTO accounts VALUES ('alice', '{PLAIN}secret', true)",
    );
    let lmtp_at = srv.lmtp.unwrap();
    let r = lmtp(
        lmtp_at,
        "Alice@example.org",
        "Subject: to Alice\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    let mut c = srv.connect().await;
    c.cmd("USER ALICE").await;
    let r = c.cmd("PASS secret").await;
    assert!(r.starts_with("+OK alice's maildrop has 1 messages"), "{r}");
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(srv.stored("alice"), 1);
    // Names that could leave the mail root are refused before any lookup.
    let mut c = srv.connect().await;
    for name in ["../x", "a/b", "..", "..@example.org"] {
        let r = c.cmd(&format!("USER {name}")).await;
        assert!(r.starts_with("-ERR"), "{name}: {r}");
    }
    let r = lmtp(lmtp_at, "../x@example.org", "Subject: x\r\n\r\nx\r\n").await;
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // A query without the canonical name is an error the operator sees,
    // never a mailbox named as the client typed it.
    let mut config = (*srv.manager.services().config).clone();
    config.auth.password_query =
        Some("SELECT password FROM accounts WHERE lower(username) = lower($1)".into());
    srv.manager.reload(config).unwrap();
    let mut c = srv.connect().await;
    c.cmd("USER ALICE").await;
    assert!(c.cmd("PASS secret").await.starts_with("-ERR [SYS/TEMP]"));
    let why = srv.manager.readiness().await.unwrap_err();
    assert!(
        why.iter()
            .any(|w| w.contains("auth.password_query") && w.contains("`user`")),
        "{why:?}"
    );
}

/// What SCRAM-SHA-256 answers `user`'s client-first message with, nonce
/// aside: `s=...,i=...`.
async fn scram_answer(srv: &TestServer, user: &str) -> String {
    let mut c = srv.connect().await;
    let r = c
        .cmd(&format!("AUTH SCRAM-SHA-256 {}", scram_first(user)))
        .await;
    let server_first = B64
        .decode(r.trim_end().strip_prefix("+ ").unwrap())
        .unwrap();
    let server_first = String::from_utf8(server_first).unwrap();
    let (_, salt_and_count) = server_first.split_once(",s=").unwrap();
    salt_and_count.to_owned()
}

#[tokio::test]
async fn unknown_users_get_the_same_scram_answer_on_every_node_and_after_a_restart() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("secret.key");
    let node = || {
        let key = key.clone();
        TestServer::start_with(move |c| {
            c.auth.mechanisms = vec!["SCRAM-SHA-256".into()];
            c.auth.secret_key_file = Some(key);
        })
    };
    let a = node().await;
    let b = node().await;
    let on_a = scram_answer(&a, "nobody-here").await;
    assert!(on_a.ends_with(",i=4096"), "{on_a}");
    assert_eq!(on_a, scram_answer(&b, "nobody-here").await);
    drop(a);
    let again = node().await;
    assert_eq!(on_a, scram_answer(&again, "nobody-here").await);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Without the key file each process answers its own way (which the
    // file is there to prevent).
    let alone = TestServer::start_with(|c| c.auth.mechanisms = vec!["SCRAM-SHA-256".into()]).await;
    assert_ne!(on_a, scram_answer(&alone, "nobody-here").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_what_known_ones_do_in_a_foreign_table() {
    let srv = TestServer::start_on_with(Backend::Postgres, |c| {
        c.auth.backend = UserBackend::Postgres;
        c.auth.password_query = Some(ACCOUNTS.into());
        c.security.max_user_auth_failures = 1_000_000;
        c.security.max_auth_attempts = 1_000_000;
    })
    .await;
    let field = pop3::auth::hash_password(pop3::auth::Scheme::Sha512Crypt, "right").unwrap();
    srv.sql(&format!(
        "CREATE TABLE accounts (username text, password text, active bool); \
         INSERT INTO accounts VALUES ('alice', '{field}', true)"
    ));
    let attempt = |user: &'static str| {
        let addr = srv.plain;
        async move {
            let mut c = Client::connect(addr).await;
            c.cmd(&format!("USER {user}")).await;
            let t = Instant::now();
            let r = c.cmd("PASS wrong").await;
            assert_eq!(r, "-ERR [AUTH] Authentication failed.\r\n");
            t.elapsed()
        }
    };
    // Warm up (connections, statements, the decoy), then alternate.
    for _ in 0..3 {
        attempt("alice").await;
        attempt("nobody").await;
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..51 {
        known.push(attempt("alice").await);
        unknown.push(attempt("nobody").await);
    }
    // Medians, so that one attempt the scheduler delayed on this noisy
    // machine does not decide. Without the decoy an unknown user skips the
    // hash, which is most of a known user's cost: the ratio falls to about
    // a tenth (measured: 0.22 ms against 1.95 ms), far outside this band.
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.67..1.5).contains(&ratio),
        "median unknown {unknown:?} vs known {known:?}"
    );
}

#[tokio::test]
async fn a_maildir_holds_only_what_pop3d_serves() {
    let srv = TestServer::start_with(|c| {
        c.storage.delete = pop3::config::DeleteMode::Trash;
    })
    .await;
    let md = srv.maildir("alice");
    srv.deliver("alice", 1, b"Subject: real\r\n\r\nmail\r\n");
    let outside = srv.dir.path().join("outside");
    std::fs::write(&outside, "another user's mail\r\n").unwrap();
    let victim = srv.dir.path().join("victim");
    std::fs::write(&victim, "must stay as it is\n").unwrap();
    std::os::unix::fs::symlink(&outside, md.join("cur/2.link:2,S")).unwrap();
    let fifo = md.join("new/3.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Links planted where pop3d writes, also at the names an older pop3d
    // used for its temporaries.
    std::fs::create_dir_all(md.join(".Trash")).unwrap();
    let mut planted = vec![
        "pop3d-uidlist".to_owned(),
        "maildirsize".to_owned(),
        ".Trash/maildirfolder".to_owned(),
        ".Trash/pop3d-trash".to_owned(),
    ];
    for n in 0..20 {
        planted.push(format!("pop3d-uidlist.tmp.{}.{n}", std::process::id()));
        planted.push(format!(".Trash/pop3d-trash.tmp.{}.{n}", std::process::id()));
    }
    for name in &planted {
        std::os::unix::fs::symlink(&victim, md.join(name)).unwrap();
    }
    let mut c = srv.login("alice", "secret").await;
    let (_, list) = c.multi("LIST").await;
    assert_eq!(lines(&list), ["1 23"]);
    let (_, msg) = c.multi("RETR 1").await;
    assert_eq!(msg, b"Subject: real\r\n\r\nmail\r\n.\r\n");
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "must stay as it is\n"
    );
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "another user's mail\r\n"
    );
    // The index and the trash list replaced the links, not their target.
    for name in ["pop3d-uidlist", ".Trash/pop3d-trash"] {
        let meta = std::fs::symlink_metadata(md.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is pop3d's own file now");
    }
    assert_eq!(std::fs::read_dir(md.join(".Trash/cur")).unwrap().count(), 1);
}

#[tokio::test]
async fn downgraded_address_fields_keep_their_addresses() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        skip("python3 is not installed");
        return;
    }
    let srv = TestServer::start().await;
    srv.deliver(
        "alice",
        1,
        "From: Jürgen <j@b>\r\nTo: Zoë <z@b>, \"Ann\" <a@b>, 日本 <n@b>\r\nSubject: Grüße\r\n\r\nbody\r\n"
            .as_bytes(),
    );
    let mut c = srv.login("alice", "secret").await;
    let (_, msg) = c.multi("RETR 1").await;
    let message = &msg[..msg.len() - 3];
    let header_end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        message[..header_end].is_ascii(),
        "the header section is 7-bit"
    );
    let file = srv.dir.path().join("downgraded.eml");
    std::fs::write(&file, message).unwrap();
    let script = "import email, email.policy, json, sys\n\
        m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)\n\
        print(json.dumps({f: [[a.display_name, a.addr_spec] for a in m[f].addresses] for f in ('From', 'To')}, ensure_ascii=False))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!({
            "From": [["Jürgen", "j@b"]],
            "To": [["Zoë", "z@b"], ["Ann", "a@b"], ["日本", "n@b"]],
        })
    );
}

/// A blocked client on an implicit-TLS listener gets no plaintext bytes
/// (which its TLS stack would report as "wrong version number"), only a
/// closed connection; on a plaintext listener the refusal as text.
#[tokio::test]
async fn a_blocked_tls_client_is_closed_without_plaintext() {
    let srv = start(|_| {}).await;
    srv.manager
        .guard()
        .block("127.0.8.1".parse().unwrap(), "test");
    let tls = connect_from("127.0.8.1", srv.implicit).await;
    let mut raw = Client::raw(tls);
    assert!(raw.until_closed().await.is_empty());
    let plain = Client::connect_from("127.0.8.1", srv.plain).await;
    assert!(
        plain.greeting.starts_with("-ERR [SYS/TEMP]"),
        "{}",
        plain.greeting
    );
}

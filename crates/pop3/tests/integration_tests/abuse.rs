// SPDX-License-Identifier: AGPL-3.0-only
//! Abuse resistance against a live server: brute force, spraying, blocks
//! that outlive a restart, scanners and floods, the security log, PROXY
//! protocol, and equal answers for unknown users and wrong passwords.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use pop3::config::{ListenerConfig, Pop3Config, TlsMode};
use pop3::security::ManualClock;
use tokio::io::AsyncWriteExt;

const BLOCKED: &str = "-ERR [SYS/TEMP] Too many failures from your address, try again later\r\n";

/// The security events written so far.
pub(crate) fn events(srv: &TestServer) -> Vec<serde_json::Value> {
    let path = srv.dir.path().join("security.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn logged(c: &mut Pop3Config, dir_hint: &str) {
    c.security.enable_security_logging = true;
    c.security.security_log_file = Some(std::path::Path::new(dir_hint).join("security.log"));
}

/// Start a server whose security log goes to its own directory.
pub(crate) async fn start(tweak: impl FnOnce(&mut Pop3Config)) -> TestServer {
    start_clock(tweak, Arc::new(pop3::security::SystemClock)).await
}

async fn start_clock(
    tweak: impl FnOnce(&mut Pop3Config),
    clock: Arc<dyn pop3::security::Clock>,
) -> TestServer {
    let log_dir = tempfile::tempdir().unwrap().keep();
    let srv = TestServer::start_with_clock(
        |c| {
            logged(c, log_dir.to_str().unwrap());
            // 127.0.0.x stand in for remote attackers here.
            c.security.block_loopback = true;
            tweak(c);
        },
        clock,
    )
    .await;
    // Keep the log beside the server's files, where events() looks.
    std::os::unix::fs::symlink(
        log_dir.join("security.log"),
        srv.dir.path().join("security.log"),
    )
    .unwrap();
    srv
}

pub(crate) async fn fail_login(c: &mut Client<tokio::net::TcpStream>, user: &str) -> String {
    c.cmd(&format!("USER {user}")).await;
    c.cmd("PASS wrong-password").await
}

#[tokio::test]
async fn brute_force_is_slowed_then_blocked_until_the_block_expires() {
    let clock = Arc::new(ManualClock::new());
    let srv = start_clock(
        |c| {
            c.security.max_auth_attempts = 3;
            c.security.auth_failure_delay = Duration::from_millis(100);
        },
        clock.clone(),
    )
    .await;
    let mut c = srv.connect().await;
    let t = Instant::now();
    assert_eq!(
        fail_login(&mut c, "alice").await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    let first = t.elapsed();
    let t = Instant::now();
    assert_eq!(
        fail_login(&mut c, "alice").await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    let second = t.elapsed();
    assert!(first >= Duration::from_millis(100), "{first:?}");
    assert!(
        second >= Duration::from_millis(200),
        "the delay grows: {second:?}"
    );
    assert_eq!(fail_login(&mut c, "alice").await, BLOCKED);
    assert_eq!(c.until_closed().await, b"");
    // Blocked before the greeting from now on, even with the right password.
    let mut c = Client::raw(tokio::net::TcpStream::connect(srv.plain).await.unwrap());
    let refusal = String::from_utf8(c.until_closed().await).unwrap();
    assert!(
        refusal.starts_with("-ERR [SYS/TEMP] Too many failures from your address"),
        "{refusal}"
    );
    // Another address is not affected.
    let mut other = Client::connect_from("127.0.0.2", srv.plain).await;
    other.cmd("USER alice").await;
    assert!(other.cmd("PASS secret").await.starts_with("+OK"));
    drop(other);
    // After auto_block_duration the address may try again.
    clock.advance(Duration::from_secs(901));
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    let ev = events(&srv);
    let names: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "auth_failed").count(), 3);
    assert!(
        names.contains(&"blocked")
            && names.contains(&"connection_refused")
            && names.contains(&"unblocked")
    );
    let failed = ev.iter().find(|e| e["event"] == "auth_failed").unwrap();
    assert_eq!(failed["ip"], "127.0.0.1");
    assert_eq!(failed["user"], "alice");
    assert_eq!(failed["mechanism"], "USER");
    let log = std::fs::read_to_string(srv.dir.path().join("security.log")).unwrap();
    assert!(
        !log.contains("wrong-password") && !log.contains("secret"),
        "no password in the log"
    );
}

#[tokio::test]
async fn sasl_failures_count_like_user_pass() {
    use base64::Engine;
    let srv = start(|c| c.security.max_auth_attempts = 2).await;
    let mut c = srv.connect().await;
    let bad = base64::engine::general_purpose::STANDARD.encode("\0alice\0nope");
    assert!(
        c.cmd(&format!("AUTH PLAIN {bad}"))
            .await
            .starts_with("-ERR [AUTH]")
    );
    assert_eq!(c.cmd(&format!("AUTH PLAIN {bad}")).await, BLOCKED);
}

#[tokio::test]
async fn trusted_networks_are_exempt() {
    let srv = start(|c| {
        c.security.max_auth_attempts = 2;
        c.security.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..5 {
        let mut c = srv.connect().await;
        assert_eq!(
            fail_login(&mut c, "alice").await,
            "-ERR [AUTH] Authentication failed.\r\n"
        );
    }
    let mut c = srv.connect().await;
    assert_eq!(
        c.cmd("GET / HTTP/1.1").await,
        "-ERR This is a POP3 server\r\n"
    );
    let mut c = srv.login("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK"));
}

/// One wrong password for alice from each address.
async fn spray(srv: &TestServer, from: &[&str]) {
    for from in from {
        let mut c = Client::connect_from(from, srv.plain).await;
        assert!(fail_login(&mut c, "alice").await.starts_with("-ERR [AUTH]"));
    }
}

#[tokio::test]
async fn spraying_one_user_slows_that_user_without_locking_it_out() {
    let srv = start(|c| {
        c.security.max_auth_attempts = 100;
        c.security.max_user_auth_failures = 3;
        c.security.user_throttle_delay = Duration::from_millis(400);
    })
    .await;
    spray(&srv, &["127.0.0.11", "127.0.0.12", "127.0.0.13"]).await;
    let mut c = Client::connect_from("127.0.0.20", srv.plain).await;
    let t = Instant::now();
    c.cmd("USER alice").await;
    assert!(
        c.cmd("PASS secret").await.starts_with("+OK"),
        "the real user still gets in"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    drop(c);
    // Another user is not slowed.
    let mut c = Client::connect_from("127.0.0.20", srv.plain).await;
    let t = Instant::now();
    c.cmd("USER bob").await;
    assert!(c.cmd("PASS password").await.starts_with("+OK"));
    assert!(t.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn the_block_list_survives_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("blocked");
    let f1 = file.clone();
    let srv = start(move |c| {
        c.security.max_auth_attempts = 1;
        c.security.block_list_file = Some(f1);
    })
    .await;
    let mut c = Client::connect_from("127.0.0.5", srv.plain).await;
    assert_eq!(fail_login(&mut c, "alice").await, BLOCKED);
    drop(srv);
    let srv = start(move |c| c.security.block_list_file = Some(file)).await;
    let mut c = Client::raw(connect_from("127.0.0.5", srv.plain).await);
    assert!(
        String::from_utf8(c.until_closed().await)
            .unwrap()
            .starts_with("-ERR [SYS/TEMP]")
    );
    let c = Client::connect_from("127.0.0.6", srv.plain).await;
    assert!(c.greeting.starts_with("+OK"));
}

#[tokio::test]
async fn scanners_are_closed_and_scored() {
    let srv = start(|_| {}).await;
    // A web scanner.
    let mut c = srv.connect().await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.line().await, "-ERR This is a POP3 server\r\n");
    assert_eq!(c.until_closed().await, b"");
    // A TLS client on the plain port; its 50 points reach the threshold.
    let mut c = srv.connect().await;
    c.send(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ])
    .await;
    assert_eq!(
        c.until_closed().await,
        b"-ERR [SYS/TEMP] Too many errors from your address, try again later\r\n"
    );
    let ev = events(&srv);
    let rules: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "suspicious")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["http_request", "tls_on_plain_port"]);
    let last = ev.iter().rfind(|e| e["event"] == "suspicious").unwrap();
    assert_eq!(last["score"], 100);
    // That reached the threshold of 100: the address is blocked.
    assert!(
        ev.iter()
            .any(|e| e["event"] == "blocked" && e["reason"] == "suspicious activity")
    );
    let mut c = Client::raw(tokio::net::TcpStream::connect(srv.plain).await.unwrap());
    assert!(
        String::from_utf8(c.until_closed().await)
            .unwrap()
            .starts_with("-ERR [SYS/TEMP]")
    );
}

#[tokio::test]
async fn each_rule_adds_its_points() {
    let srv = start(|c| c.security.suspicious_threshold = 1000).await;
    let mut c = srv.connect().await;
    c.cmd("BOGUS").await; // unknown_command
    c.cmd("RETR 1").await; // protocol_violation (wrong state)
    c.send(b"\x01\x02garbage\r\n").await; // garbage_before_login
    c.line().await;
    c.send(format!("{}\r\n", "x".repeat(300)).as_bytes()).await; // overlong: protocol_violation
    c.line().await;
    // Repeated STLS inside TLS.
    let tcp = tokio::net::TcpStream::connect(srv.implicit).await.unwrap();
    let tls = srv
        .tls_connector()
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut t = Client::over(tls).await;
    assert_eq!(t.cmd("STLS").await, "-ERR Already using TLS\r\n");
    let ev = events(&srv);
    let got: Vec<(String, u64)> = ev
        .iter()
        .filter(|e| e["event"] == "suspicious")
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_owned(),
                e["points"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("unknown_command", 5),
        ("protocol_violation", 5),
        ("garbage_before_login", 10),
        ("protocol_violation", 5),
        ("repeated_stls", 20),
    ]
    .iter()
    .map(|(r, p)| (r.to_string(), *p))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        ev.iter().rfind(|e| e["event"] == "suspicious").unwrap()["score"],
        45
    );
}

#[tokio::test]
async fn many_unknown_commands_end_in_a_block() {
    let srv = start(|c| c.security.suspicious_threshold = 20).await;
    let mut c = srv.connect().await;
    for _ in 0..3 {
        assert_eq!(c.cmd("XYZZY").await, "-ERR Unknown command\r\n");
    }
    assert_eq!(c.cmd("XYZZY").await, "-ERR Unknown command\r\n");
    assert_eq!(
        c.line().await,
        "-ERR [SYS/TEMP] Too many errors from your address, try again later\r\n"
    );
    assert_eq!(c.until_closed().await, b"");
}

#[tokio::test]
async fn floods_are_paced_not_cut() {
    let srv = start(|c| {
        c.security.max_commands_per_minute = 60_000;
        c.security.min_command_delay = Duration::from_millis(100);
    })
    .await;
    let mut c = srv.connect().await;
    let t = Instant::now();
    c.send("NOOP\r\n".repeat(6).as_bytes()).await;
    for _ in 0..6 {
        assert_eq!(c.line().await, "-ERR NOOP is not valid before login\r\n");
    }
    // Five gaps of 100 ms between six replies.
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "paced: {:?}",
        t.elapsed()
    );
    c.cmd("USER alice").await;
    assert!(
        c.cmd("PASS secret").await.starts_with("+OK"),
        "the session goes on"
    );
    let ev = events(&srv);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "rate_limited" && e["command"] == "NOOP")
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "suspicious" && e["reason"] == "command_flood")
    );
}

#[tokio::test]
async fn production_pace_lets_a_big_mailbox_through() {
    let srv = start(|c| {
        let p = Pop3Config::production();
        c.security = pop3::config::SecurityConfig {
            security_log_file: c.security.security_log_file.clone(),
            ..p.security
        };
    })
    .await;
    let md = srv.maildir("alice");
    for i in 0..10_000u32 {
        deliver(&md, i, format!("Subject: {i}\n\nbody {i}\n").as_bytes());
    }
    let mut c = srv.login("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 10000 "));
    let t = Instant::now();
    let mut script = String::new();
    for i in 1..=10_000 {
        script.push_str(&format!("RETR {i}\r\nDELE {i}\r\n"));
    }
    c.send(script.as_bytes()).await;
    for i in 1..=10_000 {
        assert!(c.line().await.starts_with("+OK"), "RETR {i}");
        c.body().await;
        assert_eq!(c.line().await, format!("+OK message {i} deleted\r\n"));
    }
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 0);
    assert!(!events(&srv).iter().any(|e| e["event"] == "rate_limited"));
}

async fn proxied(addr: SocketAddr, header: &[u8]) -> Client<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    Client::over(s).await
}

#[tokio::test]
async fn proxy_protocol_gives_limits_and_logs_the_client_address() {
    let srv = start(|c| {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut l = ListenerConfig::new(any, TlsMode::None);
        l.proxy_protocol = true;
        l.proxy_trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        let mut t = ListenerConfig::new(any, TlsMode::Implicit);
        t.proxy_protocol = true;
        t.proxy_trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.listeners = vec![l, t];
        c.security.max_connections_per_ip = 1;
        c.security.max_auth_attempts = 1;
        // The proxied clients are not on loopback.
        c.auth.allow_plaintext = true;
    })
    .await;
    let addrs: Vec<SocketAddr> = vec![srv.plain, srv.implicit];
    let (plain, implicit) = (addrs[0], addrs[1]);
    // v1: two clients behind the same proxy address are counted apart.
    let a = proxied(plain, b"PROXY TCP4 198.51.100.1 127.0.0.1 5000 110\r\n").await;
    assert!(a.greeting.starts_with("+OK"));
    let b = proxied(plain, b"PROXY TCP4 198.51.100.2 127.0.0.1 5001 110\r\n").await;
    assert!(b.greeting.starts_with("+OK"));
    let mut again = Client::raw(tokio::net::TcpStream::connect(plain).await.unwrap());
    again
        .send(b"PROXY TCP4 198.51.100.1 127.0.0.1 5002 110\r\n")
        .await;
    assert_eq!(
        again.until_closed().await,
        b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
    );
    drop((a, b));
    // v2, and the failure is logged against the client address.
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        ("203.0.113.9:6000".parse::<SocketAddr>().unwrap(), plain),
    )
    .build()
    .unwrap();
    let mut c = proxied(plain, &v2).await;
    assert_eq!(fail_login(&mut c, "alice").await, BLOCKED);
    let ev = events(&srv);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "auth_failed" && e["ip"] == "203.0.113.9")
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "blocked" && e["ip"] == "203.0.113.9")
    );
    // The header comes before TLS on an implicit-TLS listener.
    let mut tcp = tokio::net::TcpStream::connect(implicit).await.unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.3 127.0.0.1 5003 995\r\n")
        .await
        .unwrap();
    let tls = srv
        .tls_connector()
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let c = Client::over(tls).await;
    assert!(c.greeting.starts_with("+OK"));
    // No header, a malformed one, or an untrusted sender: closed, no greeting.
    for bytes in [&b"USER alice\r\n"[..], b"PROXY TCP4 x y z w\r\n"] {
        let mut c = Client::raw(tokio::net::TcpStream::connect(plain).await.unwrap());
        c.send(bytes).await;
        assert_eq!(c.until_closed().await, b"", "{bytes:?}");
    }
    let mut c = Client::raw(connect_from("127.0.0.7", plain).await);
    c.send(b"PROXY TCP4 198.51.100.4 127.0.0.1 5004 110\r\n")
        .await;
    assert_eq!(c.until_closed().await, b"");
    let ev = events(&srv);
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "proxy_rejected").count(),
        3
    );
}

#[tokio::test]
async fn unknown_users_take_as_long_as_wrong_passwords() {
    let srv = start(|_| {}).await;
    // Only ARGON2ID users: the decoy is ARGON2ID too.
    let mut passwd = String::new();
    for u in ["u1", "u2", "u3"] {
        let field = pop3::auth::hash_password(pop3::auth::Scheme::Argon2id, "right").unwrap();
        passwd.push_str(&format!("{u}:{field}::::/tmp/{u}\n"));
    }
    std::fs::write(srv.dir.path().join("passwd"), passwd).unwrap();
    let mut config = (*srv.manager.services().config).clone();
    config.security.max_auth_attempts = 1000;
    config.security.suspicious_threshold = 100_000;
    srv.manager.reload(config).unwrap();
    let time = |user: &'static str| {
        let addr = srv.plain;
        async move {
            let mut samples = Vec::new();
            for _ in 0..5 {
                let mut c = Client::connect(addr).await;
                c.cmd(&format!("USER {user}")).await;
                let t = Instant::now();
                let r = c.cmd("PASS wrong").await;
                samples.push(t.elapsed());
                assert_eq!(r, "-ERR [AUTH] Authentication failed.\r\n");
            }
            samples.sort();
            samples[2]
        }
    };
    let wrong = time("u1").await;
    let unknown = time("nobody").await;
    assert!(
        wrong > Duration::from_millis(2),
        "argon2 takes time: {wrong:?}"
    );
    assert!(
        unknown * 2 >= wrong,
        "unknown {unknown:?} vs wrong {wrong:?}"
    );
}

#[tokio::test]
async fn tls_failures_are_logged() {
    let srv = start(|_| {}).await;
    let mut c = Client::raw(tokio::net::TcpStream::connect(srv.implicit).await.unwrap());
    c.send(b"USER alice\r\n").await;
    c.until_closed().await;
    wait_until(Duration::from_secs(10), "a tls_failed event", || {
        events(&srv).iter().any(|e| e["event"] == "tls_failed")
    })
    .await;
    let ev = events(&srv);
    let tls = ev
        .iter()
        .find(|e| e["event"] == "tls_failed")
        .expect("a tls_failed event");
    assert_eq!(tls["ip"], "127.0.0.1");
    assert!(!tls["reason"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn parallel_spraying_shares_one_ration_per_login() {
    let srv = start(|c| {
        c.security.max_auth_attempts = 100;
        c.security.max_user_auth_failures = 2;
        c.security.user_throttle_delay = Duration::from_millis(300);
    })
    .await;
    spray(&srv, &["127.0.0.31", "127.0.0.32"]).await;
    // Four attempts at once from four addresses: they run one after the
    // other, 300 ms apart, not all after the same 300 ms.
    let t = Instant::now();
    let attempts: Vec<_> = (0..4)
        .map(|i| {
            let addr = srv.plain;
            tokio::spawn(async move {
                let mut c = Client::connect_from(&format!("127.0.0.4{i}"), addr).await;
                fail_login(&mut c, "alice").await;
                Instant::now()
            })
        })
        .collect();
    let mut done = Vec::new();
    for a in attempts {
        done.push(a.await.unwrap().duration_since(t));
    }
    done.sort();
    assert!(done[3] >= Duration::from_millis(1200), "{done:?}");
    assert!(done[0] < Duration::from_millis(900), "{done:?}");
}

/// A listener on `[::]` sees IPv4 clients as `::ffff:a.b.c.d`: they must
/// still count as IPv4 (loopback, trusted networks, their own block), and
/// IPv6 clients as IPv6.
#[tokio::test]
async fn dual_stack_listener_sees_ipv4_and_ipv6_as_they_are() {
    let srv = start(|c| {
        c.listeners = vec![ListenerConfig::new(
            "[::]:0".parse().unwrap(),
            TlsMode::None,
        )];
        c.security.max_auth_attempts = 2;
        c.security.auth_failure_delay = Duration::ZERO;
    })
    .await;
    let port = srv.plain.port();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    // Plaintext logins are allowed from loopback (allow_plaintext is off):
    // both families are recognised as loopback.
    for addr in [v4, v6] {
        let mut c = Client::connect(addr).await;
        c.cmd("USER alice").await;
        assert!(c.cmd("PASS secret").await.starts_with("+OK"), "{addr}");
        c.cmd("QUIT").await;
    }
    // Two failures from 127.0.0.1 block it, and only it.
    for _ in 0..2 {
        let mut c = Client::connect(v4).await;
        fail_login(&mut c, "alice").await;
    }
    let c = Client::connect(v4).await;
    assert!(c.greeting.starts_with("-ERR [SYS/TEMP]"), "{}", c.greeting);
    let mut c = Client::connect(v6).await;
    assert!(c.greeting.starts_with("+OK"), "{}", c.greeting);
    let ev = events(&srv);
    let blocked: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "blocked")
        .filter_map(|e| e["ip"].as_str())
        .collect();
    assert_eq!(blocked, ["127.0.0.1"], "logged as IPv4");
    let _ = c.cmd("QUIT").await;
}

/// By default a loopback address is never blocked as a whole (a local
/// proxy would otherwise lock every user out), on either family.
#[tokio::test]
async fn loopback_is_not_blocked_by_default() {
    let srv = TestServer::start_with(|c| {
        c.listeners = vec![ListenerConfig::new(
            "[::]:0".parse().unwrap(),
            TlsMode::None,
        )];
        c.security.max_auth_attempts = 2;
    })
    .await;
    let port = srv.plain.port();
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        format!("[::1]:{port}").parse().unwrap(),
    ] {
        for _ in 0..4 {
            let mut c = Client::connect(addr).await;
            assert!(c.greeting.starts_with("+OK"), "{addr}: {}", c.greeting);
            fail_login(&mut c, "alice").await;
        }
        let mut c = Client::connect(addr).await;
        c.cmd("USER alice").await;
        assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    }
}

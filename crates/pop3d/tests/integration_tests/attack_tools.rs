// SPDX-License-Identifier: AGPL-3.0-only
//! Real attack and infrastructure tools against the `pop3d` binary on
//! loopback: hydra brute-forcing a password, haproxy sending PROXY v1 and
//! v2 headers.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn security_events(s: &Setup) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path("security.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn log_security(s: &Setup, extra: &str) {
    let text = read(&s.config).replace(
        "[security]\nauth_failure_delay = \"0s\"\nenable_security_logging = false\n",
        &format!(
            "[security]\nauth_failure_delay = \"0s\"\nsecurity_log_file = \"security.log\"\nblock_loopback = true\n{extra}"
        ),
    );
    std::fs::write(&s.config, text).unwrap();
}

/// A client connected from a chosen loopback address.
fn connect_from(from: &str, port: u16) -> Client {
    let socket = socket2_free_connect(from, port);
    Client::from_stream(socket)
}

fn socket2_free_connect(from: &str, port: u16) -> TcpStream {
    // std has no bind-before-connect; a tiny tokio runtime does it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(from.parse().unwrap(), 0))
            .unwrap();
        socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// A session from `from`, once the previous one's slot is returned (the
/// proxy closes its server side a moment after the client leaves).
fn admitted(from: &str, port: u16) -> Client {
    wait_for(
        Duration::from_secs(5),
        &format!("a session from {from}"),
        || {
            let c = connect_from(from, port);
            c.greeting.starts_with("+OK").then_some(c)
        },
    )
}

#[test]
fn hydra_is_blocked_and_the_real_user_still_logs_in() {
    if !require("hydra") {
        return;
    }
    let s = Setup::new(&[b"Subject: 1\n\none\n"]);
    log_security(&s, "max_auth_attempts = 3\n");
    let _server = s.start();
    let words = s.path("words.txt");
    let mut list: String = (1..=20).map(|i| format!("wrong{i}\n")).collect();
    list.push_str("secret\n");
    std::fs::write(&words, list).unwrap();
    let out = Command::new(tool_path("hydra").unwrap())
        .args(["-I", "-l", "alice", "-P"])
        .arg(&words)
        .args(["-t", "1", "-s", &s.plain.to_string(), "127.0.0.1", "pop3"])
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 valid password found"),
        "hydra found nothing:\n{text}"
    );
    assert!(!text.contains("password: secret"), "{text}");
    let ev = security_events(&s);
    let failed = ev.iter().filter(|e| e["event"] == "auth_failed").count();
    assert_eq!(failed, 3, "blocked after max_auth_attempts");
    assert!(
        ev.iter()
            .any(|e| e["event"] == "blocked" && e["ip"] == "127.0.0.1")
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "connection_refused" && e["ip"] == "127.0.0.1")
    );
    // The real user, from another address, is not locked out.
    let mut c = connect_from("127.0.0.2", s.plain);
    assert_eq!(c.cmd("USER alice"), "+OK\r\n");
    assert!(
        c.cmd("PASS secret")
            .starts_with("+OK alice's maildrop has 1")
    );
}

fn haproxy_config(s: &Setup, v1: u16, v2: u16, backend: u16) -> std::path::PathBuf {
    let path = s.path("haproxy.cfg");
    std::fs::write(
        &path,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend b1\n\
             backend b1\n  server s1 127.0.0.1:{backend} send-proxy\n\
             frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend b2\n\
             backend b2\n  server s2 127.0.0.1:{backend} send-proxy-v2\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn haproxy_v1_and_v2_give_pop3d_the_client_address() {
    if !require("haproxy") {
        return;
    }
    let s = Setup::new(&[]);
    log_security(&s, "max_connections_per_ip = 1\nmax_auth_attempts = 2\n");
    let backend = free_port();
    let metrics = free_port();
    let text = read(&s.config)
        + &format!(
            "\n[[listener]]\nbind = \"127.0.0.1:{backend}\"\ntls = \"none\"\nproxy_protocol = true\nproxy_trusted_networks = [\"127.0.0.1/32\"]\n\n[metrics]\nbind = \"127.0.0.1:{metrics}\"\n"
        );
    std::fs::write(&s.config, text).unwrap();
    let _server = s.start();
    let (v1, v2) = (free_port(), free_port());
    let cfg = haproxy_config(&s, v1, v2, backend);
    let mut haproxy = start_haproxy(&cfg);
    wait_for_port(v1);
    wait_for_port(v2);
    for (port, version) in [(v1, "v1"), (v2, "v2")] {
        // One connection per client address: the limit sees 127.0.0.3 and
        // 127.0.0.4, not haproxy's 127.0.0.1.
        let mut a = admitted("127.0.0.3", port);
        let b = admitted("127.0.0.4", port);
        let c = connect_from("127.0.0.3", port);
        assert_eq!(
            c.greeting, "-ERR [SYS/TEMP] Too many connections from your address\r\n",
            "{version}"
        );
        // A failed login is logged against the client.
        a.cmd("USER alice");
        let r = a.cmd("PASS wrong");
        // The second failure from 127.0.0.3 (max_auth_attempts = 2) blocks it.
        let want = if version == "v1" {
            "-ERR [AUTH]"
        } else {
            "-ERR [SYS/TEMP]"
        };
        assert!(r.starts_with(want), "{version}: {r}");
        a.cmd("QUIT");
        drop((a, b, c));
        // Every session over (the proxy closes its server side a moment
        // after the client), so the next round is admitted, not refused
        // and logged.
        wait_until(Duration::from_secs(5), "no session left", || {
            http(metrics, "/metrics")
                .lines()
                .filter(|l| l.starts_with("pop3_sessions_active"))
                .all(|l| l.ends_with(" 0"))
        });
    }
    let ev = security_events(&s);
    let failed: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "auth_failed")
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["127.0.0.3", "127.0.0.3"]);
    // (The port probes before the test come from 127.0.0.1 itself.)
    let refused: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "connection_refused" && e["ip"] != "127.0.0.1")
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(refused, vec!["127.0.0.3", "127.0.0.3"]);
    // Two failures from 127.0.0.3 blocked it, and only it.
    assert!(
        ev.iter()
            .any(|e| e["event"] == "blocked" && e["ip"] == "127.0.0.3")
    );
    let _d = admitted("127.0.0.4", v2);
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Nodes sharing abuse counters through Redis: one limit however the
//! attempts are spread, never a refusal of a trusted address, and an
//! operator's view and lift of a block on every node.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// One attempt: connect from `from` (`127.0.0.1` or `::1`), USER alice,
/// PASS `pass`. The first line that is not `+OK` after USER, or the PASS
/// answer.
fn attempt(from_v6: bool, port: u16, pass: &str) -> String {
    let host = if from_v6 { "::1" } else { "127.0.0.1" };
    let s = TcpStream::connect((host, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    if !line.starts_with("+OK") {
        return line;
    }
    let mut ask = |cmd: &str| {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };
    let user = ask("USER alice");
    if !user.starts_with("+OK") {
        return user;
    }
    let answer = ask(&format!("PASS {pass}"));
    if answer.starts_with("+OK") {
        ask("QUIT");
    }
    answer
}

#[test]
fn a_limit_spread_over_three_nodes_is_one_limit_and_redis_away_blocks_nobody() {
    if !require("redis-server") {
        return;
    }
    let redis = Redis::start(free_port());
    let s = Setup::new(&[b"Subject: 1\n\none\n"]);
    // Loopback counts here (it is the only address a test has).
    let (mut nodes, ports, metrics) =
        shared_nodes(&s, &redis, "block_loopback = true\nmax_auth_attempts = 3\n");
    wait_for_port(metrics);
    let exported = http(metrics, "/metrics");
    assert!(exported.contains("pop3_shared_state_up 1"), "{exported}");
    assert!(
        exported.contains("pop3_node_info{node=\"node0\"} 1"),
        "{exported}"
    );
    // Which node answers is in the greeting.
    let c = Client::connect(ports[1]);
    assert!(c.greeting.contains("(node1)"), "{}", c.greeting);
    drop(c);
    // Three bad passwords from 127.0.0.1, one per node: the third blocks.
    for (i, &port) in ports.iter().enumerate() {
        let answer = attempt(false, port, "wrong");
        if i < 2 {
            assert!(answer.starts_with("-ERR [AUTH]"), "attempt {i}: {answer}");
        } else {
            assert!(
                answer.starts_with("-ERR [SYS/TEMP] Too many failures"),
                "{answer}"
            );
        }
    }
    // Every node refuses the address now, even node 0 which saw one
    // failure (the block arrives within moments).
    for &port in &ports {
        let within = Duration::from_secs(1);
        wait_for(
            within,
            &format!("the node on {port} refuses the address"),
            || {
                let answer = attempt(false, port, "secret");
                (answer.starts_with("-ERR") && answer.contains("Too many failures")).then_some(())
            },
        );
    }
    // A node that starts now takes over the blocks in force.
    nodes[2].crash();
    nodes[2] = s.start_with(&s.path("node2.toml"), ports[2]);
    wait_until(
        Duration::from_secs(2),
        "the restarted node keeps the block",
        || attempt(false, ports[2], "secret").contains("Too many failures"),
    );
    // Another address is not affected.
    assert!(attempt(true, ports[1], "secret").starts_with("+OK"));
    // Redis goes away: nobody is locked out; each node counts alone.
    drop(redis);
    assert!(attempt(true, ports[0], "wrong").starts_with("-ERR [AUTH]"));
    assert!(attempt(true, ports[1], "secret").starts_with("+OK"));
    let ready = http(metrics, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        ready.contains("degraded: shared state (Redis) unavailable"),
        "{ready}"
    );
    assert!(http(metrics, "/metrics").contains("pop3_shared_state_up 0"));
    drop(nodes);
}

/// Three nodes on `s`'s Maildirs sharing `redis`, listening on both
/// families so that ::1 is a second client; `security` goes into
/// `[security]`. The processes, their POP3 ports, node 0's metrics port.
fn shared_nodes(s: &Setup, redis: &Redis, security: &str) -> (Vec<Running>, Vec<u16>, u16) {
    let metrics = free_port();
    let base = read(&s.config)
        .replace(
            "[security]\n",
            &format!(
                "[security]\n{security}shared_state = \"redis://127.0.0.1:{}\"\n",
                redis.port
            ),
        )
        .replace("bind = \"127.0.0.1:", "bind = \"[::]:");
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for n in 0..3 {
        let port = free_port();
        let (tls, implicit) = (free_port(), free_port());
        let mut text = base
            .replace(&format!("[::]:{}\"", s.plain), &format!("[::]:{port}\""))
            .replace(&format!("[::]:{}\"", s.starttls), &format!("[::]:{tls}\""))
            .replace(
                &format!("[::]:{}\"", s.implicit),
                &format!("[::]:{implicit}\""),
            )
            .replace(
                "[server]\n",
                &format!("[server]\nnode_name = \"node{n}\"\n"),
            );
        if n == 0 {
            text.push_str(&format!("\n[metrics]\nbind = \"127.0.0.1:{metrics}\"\n"));
        }
        let config = s.path(&format!("node{n}.toml"));
        std::fs::write(&config, text).unwrap();
        nodes.push(s.start_with(&config, port));
        ports.push(port);
    }
    wait_for_port(metrics);
    (nodes, ports, metrics)
}

/// Whoever can write to Redis cannot make a node refuse an address it
/// trusts; a Redis with `requirepass` is reached with the password from
/// `shared_state_password_file`.
#[test]
fn a_shared_block_never_refuses_a_trusted_address() {
    if !require("redis-server") || !require("redis-cli") {
        return;
    }
    let redis = Redis::start_with(free_port(), &["--requirepass", "redis-pw-1"]);
    let s = Setup::new(&[b"Subject: 1\n\none\n"]);
    std::fs::write(s.path("redis.pw"), "redis-pw-1\n").unwrap();
    let (nodes, ports, metrics) = shared_nodes(
        &s,
        &redis,
        "block_loopback = true\ntrusted_networks = [\"127.0.0.1/32\"]\nshared_state_password_file = \"redis.pw\"\n",
    );
    wait_until(Duration::from_secs(10), "Redis with a password", || {
        http(metrics, "/metrics").contains("pop3_shared_state_up 1")
    });
    let cli = |args: &[&str]| {
        let out = Command::new(tool_path("redis-cli").unwrap())
            .args([
                "-p",
                &redis.port.to_string(),
                "--no-auth-warning",
                "-a",
                "redis-pw-1",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}");
    };
    // Blocks for the trusted 127.0.0.1 and for ::1's network, written
    // into Redis by hand: as keys (a node starting reads them) and as
    // announcements (running nodes hear them).
    for (address, key) in [
        ("127.0.0.1", "pop3d:block:127.0.0.1"),
        ("::", "pop3d:block:::"),
    ] {
        cli(&["SET", key, "1", "PX", "900000"]);
        cli(&["PUBLISH", "pop3d:blocks", &format!("{address} 900000")]);
    }
    for &port in &ports {
        wait_until(
            Duration::from_secs(5),
            &format!("node on {port} taking the block for ::1"),
            || attempt(true, port, "secret").contains("Too many failures"),
        );
        // (The previous node may still be letting go of alice's lock.)
        let trusted = wait_for(Duration::from_secs(2), "alice's lock let go", || {
            Some(attempt(false, port, "secret")).filter(|a| !a.starts_with("-ERR [IN-USE]"))
        });
        assert!(
            trusted.starts_with("+OK"),
            "a trusted address refused: {trusted}"
        );
    }
    drop(nodes);
}

#[test]
fn a_login_sprayed_over_nodes_is_rationed_by_what_all_of_them_saw() {
    if !require("redis-server") {
        return;
    }
    let redis = Redis::start(free_port());
    let s = Setup::new(&[]);
    let (_nodes, ports, _) = shared_nodes(
        &s,
        &redis,
        "max_auth_attempts = 100\nmax_user_auth_failures = 3\nuser_throttle_delay = \"1500ms\"\n",
    );
    // Three failures for alice, from two addresses, on nodes 0 and 1.
    for (v6, port) in [(false, ports[0]), (true, ports[1]), (false, ports[0])] {
        assert!(attempt(v6, port, "wrong").starts_with("-ERR [AUTH]"));
    }
    // Node 2 saw none of them, yet rations the next attempt.
    let started = Instant::now();
    assert!(attempt(true, ports[2], "secret").starts_with("+OK"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1200),
        "node 2 let the attempt through at once ({waited:?})"
    );
    // That login from ::1 is known to every node now: node 0, which never
    // saw it, lets ::1 skip the ration, and still rations 127.0.0.1.
    let started = Instant::now();
    assert!(attempt(true, ports[0], "secret").starts_with("+OK"));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1000),
        "alice's own device was rationed on another node ({waited:?})"
    );
    let started = Instant::now();
    assert!(attempt(false, ports[0], "secret").starts_with("+OK"));
    assert!(started.elapsed() >= Duration::from_millis(1200));
}

/// `pop3d blocks` shows a block with its reason; `pop3d unblock` lifts it
/// on every node at once.
#[test]
fn an_operator_lists_and_lifts_a_block_on_every_node() {
    if !require("redis-server") {
        return;
    }
    let redis = Redis::start(free_port());
    let s = Setup::new(&[]);
    let (_nodes, ports, _) =
        shared_nodes(&s, &redis, "block_loopback = true\nmax_auth_attempts = 3\n");
    for &port in &ports {
        attempt(false, port, "wrong");
    }
    for &port in &ports {
        wait_until(
            Duration::from_secs(2),
            &format!("blocked on {port}"),
            || attempt(false, port, "secret").contains("Too many failures"),
        );
    }
    let config = s.path("node0.toml");
    let listed = succeed(pop3d().args(["blocks", "--config"]).arg(&config));
    assert!(
        listed.contains("127.0.0.1\t") && listed.contains("too many failed logins"),
        "{listed}"
    );
    succeed(
        pop3d()
            .args(["unblock", "--config"])
            .arg(&config)
            .arg("127.0.0.1"),
    );
    for &port in &ports {
        wait_until(Duration::from_secs(1), &format!("served on {port}"), || {
            let answer = attempt(false, port, "secret");
            assert!(!answer.contains("[AUTH]"), "{answer}");
            answer.starts_with("+OK")
        });
    }
    let listed = succeed(pop3d().args(["blocks", "--config"]).arg(&config));
    assert!(!listed.contains("127.0.0.1"), "{listed}");
}

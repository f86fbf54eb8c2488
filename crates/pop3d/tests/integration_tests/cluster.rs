// SPDX-License-Identifier: AGPL-3.0-only
//! Several `pop3d` nodes sharing abuse counters through a Redis the test
//! starts (`redis-server --save '' --port N`): a limit spread round-robin
//! over three nodes stops an address after the configured number of
//! failures, not three times that; and with Redis gone each node keeps
//! serving on its own counters and says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new(tool_path("redis-server").unwrap())
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port);
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

fn http(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

#[test]
fn a_limit_spread_over_three_nodes_is_one_limit_and_redis_away_blocks_nobody() {
    if !require("redis-server") {
        return;
    }
    let redis = Redis::start(free_port());
    let s = Setup::new(&[b"Subject: 1\n\none\n"]);
    let metrics = free_port();
    // Loopback counts here (it is the only address a test has), and the
    // nodes listen on both families so that ::1 is a second client.
    let base = read(&s.config)
        .replace(
            "[security]\n",
            &format!(
                "[security]\nblock_loopback = true\nmax_auth_attempts = 3\n\
                 shared_state = \"redis://127.0.0.1:{}\"\n",
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
        let started = Instant::now();
        loop {
            let answer = attempt(false, port, "secret");
            if answer.starts_with("-ERR") && answer.contains("Too many failures") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "node on {port} still serves a blocked address: {answer}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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

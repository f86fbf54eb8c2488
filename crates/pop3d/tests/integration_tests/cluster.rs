// SPDX-License-Identifier: AGPL-3.0-only
//! Several `pop3d` nodes: sharing abuse counters through a Redis the test
//! starts (`redis-server --save '' --port N`), a limit spread round-robin
//! over three nodes stops an address after the configured number of
//! failures, not three times that, and with Redis gone each node keeps
//! serving on its own counters and says so; and three nodes on one
//! PostgreSQL behind HAProxy (`mode tcp`, `send-proxy-v2`, health checks
//! on `/readyz`), as docs/cluster.md sets them up.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// With more of redis-server's options (`--requirepass`).
    pub(crate) fn start_with(port: u16, options: &[&str]) -> Redis {
        let child = Command::new(tool_path("redis-server").unwrap())
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(options)
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
    // A node that starts now takes over the blocks in force.
    nodes[2].crash();
    nodes[2] = s.start_with(&s.path("node2.toml"), ports[2]);
    let started = Instant::now();
    loop {
        let answer = attempt(false, ports[2], "secret");
        if answer.contains("Too many failures") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a restarted node forgot the block: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
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

struct Node {
    process: Running,
    config: std::path::PathBuf,
    /// A listener without PROXY protocol, for reaching this node itself.
    direct: u16,
    metrics: u16,
}

/// Three nodes on one database and one Redis, behind HAProxy.
struct Cluster {
    s: Setup,
    redis: Redis,
    nodes: Vec<Node>,
    haproxy: Child,
    pop3: u16,
    lmtp: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}

impl Cluster {
    fn start(lease_ttl: &str) -> Option<Cluster> {
        Cluster::start_on(lease_ttl, None)
    }

    /// As `start`, on `database` (a private server the test may stop)
    /// rather than the shared one.
    fn start_on(lease_ttl: &str, database: Option<&Postgres>) -> Option<Cluster> {
        if !require("redis-server") || !require("haproxy") {
            return None;
        }
        let redis = Redis::start(free_port());
        let s = Setup::on(Backend::Postgres, &[]);
        // Loopback is the balancer's and the test's only address: trusted,
        // so that thousands of quick logins are not paced.
        let base = read(&s.config)
            .replace(
                "[security]\n",
                &format!(
                    "[security]\ntrusted_networks = [\"127.0.0.0/8\"]\n\
                     shared_state = \"redis://127.0.0.1:{}\"\n",
                    redis.port
                ),
            )
            .replace(
                "[storage]\n",
                &format!("[storage]\nlease_ttl = \"{lease_ttl}\"\n"),
            )
            // Longer than the balancer needs to see /readyz fail (300 ms).
            .replace("drain_delay = \"0s\"", "drain_delay = \"1s\"");
        let base = match database {
            Some(pg) => base.replace(
                &Postgres::shared().url(s.database.as_deref().unwrap()),
                &pg.url(&pg.database()),
            ),
            None => base,
        };
        let mut nodes = Vec::new();
        let mut backends = (String::new(), String::new());
        for n in 0..3 {
            let (direct, tls, implicit) = (free_port(), free_port(), free_port());
            let (proxied, lmtp, metrics) = (free_port(), free_port(), free_port());
            let text = base
                .replace(&format!(":{}\"", s.plain), &format!(":{direct}\""))
                .replace(&format!(":{}\"", s.starttls), &format!(":{tls}\""))
                .replace(&format!(":{}\"", s.implicit), &format!(":{implicit}\""))
                .replace(
                    "[server]\n",
                    &format!("[server]\nnode_name = \"node{n}\"\n"),
                )
                + &format!(
                    "\n[[listener]]\nbind = \"127.0.0.1:{proxied}\"\nproxy_protocol = true\n\
                     proxy_trusted_networks = [\"127.0.0.1/32\"]\n\n\
                     [[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n\n\
                     [metrics]\nbind = \"127.0.0.1:{metrics}\"\n"
                );
            let config = s.path(&format!("node{n}.toml"));
            std::fs::write(&config, text).unwrap();
            let process = s.start_with(&config, direct);
            wait_for_port(metrics);
            backends.0 += &format!(
                "  server node{n} 127.0.0.1:{proxied} send-proxy-v2 check port {metrics} inter 300 fall 1 rise 1\n"
            );
            backends.1 += &format!(
                "  server node{n} 127.0.0.1:{lmtp} check port {metrics} inter 300 fall 1 rise 1\n"
            );
            nodes.push(Node {
                process,
                config,
                direct,
                metrics,
            });
        }
        let (pop3, lmtp) = (free_port(), free_port());
        let cfg = s.path("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 4000\n\
                 defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
                 \x20 retries 3\n  option redispatch\n\
                 frontend pop3\n  bind 127.0.0.1:{pop3}\n  default_backend pop3_nodes\n\
                 backend pop3_nodes\n  balance roundrobin\n  option httpchk GET /readyz\n{}\
                 frontend lmtp\n  bind 127.0.0.1:{lmtp}\n  default_backend lmtp_nodes\n\
                 backend lmtp_nodes\n  balance roundrobin\n  option httpchk GET /healthz\n{}",
                backends.0, backends.1
            ),
        )
        .unwrap();
        let haproxy = start_haproxy(&cfg);
        wait_for_port(pop3);
        wait_for_port(lmtp);
        // Through the balancer once its first health checks let it.
        wait_until(Duration::from_secs(10), "the balancer serves", || {
            greeting(pop3).is_some_and(|g| g.starts_with("+OK"))
        });
        Some(Cluster {
            s,
            redis,
            nodes,
            haproxy,
            pop3,
            lmtp,
        })
    }

    /// Deliver one message through the balancer's LMTP frontend.
    fn lmtp_deliver(&self, body: &str) {
        assert_eq!(self.try_lmtp("alice", body), Ok(()));
    }

    /// One LMTP delivery through the balancer: Err with what went wrong.
    fn try_lmtp(&self, user: &str, body: &str) -> Result<(), String> {
        let (mut c, greeting) = Lmtp::try_connect(self.lmtp).map_err(|e| e.to_string())?;
        if !greeting.starts_with("220 ") {
            return Err(format!("greeting {greeting:?}"));
        }
        c.try_send(&format!(
            "LHLO test\r\nMAIL FROM:<t@example.org>\r\nRCPT TO:<{user}>\r\nDATA\r\n\
             Subject: {body}\r\n\r\n{body}\r\n.\r\nQUIT\r\n"
        ))
        .map_err(|e| e.to_string())?;
        let answers: Vec<String> = (0..6).map(|_| c.reply()).collect();
        if answers[4].starts_with("250 2.0.0") {
            Ok(())
        } else {
            Err(format!("{answers:?}"))
        }
    }
}

#[test]
fn three_nodes_behind_haproxy_one_lease_and_one_uid_sequence() {
    let Some(c) = Cluster::start("30s") else {
        return;
    };
    // 1,000 rounds of two simultaneous logins through the balancer, which
    // hands them to different nodes: exactly one +OK each round.
    one_winner_per_round([c.pop3, c.pop3], 1000);
    // 1,000 LMTP deliveries spread over the three nodes from three
    // threads: UIDs exactly 1..1000.
    std::thread::scope(|scope| {
        for worker in 0..3 {
            let c = &c;
            scope.spawn(move || {
                for n in (worker..1000).step_by(3) {
                    c.lmtp_deliver(&format!("message {n}"));
                }
            });
        }
    });
    assert_eq!(
        c.s.sql(
            "SELECT count(*), count(DISTINCT uid), min(uid), max(uid), count(DISTINCT uidl) \
             FROM messages"
        )
        .trim(),
        "1000|1000|1|1000|1000"
    );
    // Every node delivered some of them.
    for node in &c.nodes {
        let m = http(node.metrics, "/metrics");
        let line = m
            .lines()
            .find(|l| l.starts_with("pop3_lmtp_deliveries_total{result=\"delivered\"}"))
            .unwrap_or_else(|| panic!("no deliveries counted on {}: {m}", node.config.display()));
        let delivered: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(delivered >= 100.0, "{line}");
    }
}

#[test]
fn a_node_killed_mid_retr_loses_nothing_and_another_serves_after_the_lease() {
    let Some(mut c) = Cluster::start("2s") else {
        return;
    };
    for n in 0..3 {
        c.lmtp_deliver(&format!("message {n}"));
    }
    let mut victim = Client::login(c.nodes[0].direct, "alice", "secret");
    let uidls = victim.multiline("UIDL");
    let stat = victim.cmd("STAT");
    assert!(stat.starts_with("+OK 3 "), "{stat}");
    victim.cmd("DELE 1");
    victim.cmd("DELE 2");
    // RETR under way when the node dies.
    victim.cmd("RETR 3");
    c.nodes[0].process.crash();
    assert_eq!(c.s.count(), 3, "nothing deleted");
    // Through the balancer: [IN-USE] until the lease lapses, then served
    // by another node, with the same UIDLs.
    let started = Instant::now();
    let mut served = wait_for(Duration::from_secs(10), "served", || {
        let mut client = Client::connect(c.pop3);
        client.cmd("USER alice");
        let r = client.cmd("PASS secret");
        assert!(
            r.starts_with("+OK") || r.starts_with("-ERR [IN-USE]"),
            "{r}"
        );
        r.starts_with("+OK").then_some(client)
    });
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the lease held"
    );
    assert!(!served.greeting.contains("(node0)"), "{}", served.greeting);
    assert_eq!(served.multiline("UIDL"), uidls);
    assert_eq!(served.cmd("STAT"), stat);
}

#[test]
fn the_documented_haproxy_configuration_is_valid() {
    if !require("haproxy") {
        return;
    }
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/haproxy.cfg");
    let out = Command::new(tool_path("haproxy").unwrap())
        .args(["-c", "-f", cfg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One fetch-and-delete session through the balancer: the subjects it
/// took, or why it could not.
fn fetch_and_delete(port: u16, user: &str, pass: &str) -> Result<Vec<String>, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut out = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = || {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) | Err(_) => Err("connection closed".to_owned()),
            Ok(_) => Ok(l),
        }
    };
    let greeting = line()?;
    if !greeting.starts_with("+OK") {
        return Err(greeting);
    }
    let mut send = |text: &str| out.write_all(text.as_bytes()).map_err(|e| e.to_string());
    send(&format!("USER {user}\r\nPASS {pass}\r\nSTAT\r\n"))?;
    line()?;
    let answer = line()?;
    if !answer.starts_with("+OK") {
        return Err(answer);
    }
    let stat = line()?;
    let n: usize = stat
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| stat.clone())?;
    let mut subjects = Vec::new();
    for i in 1..=n {
        send(&format!("RETR {i}\r\n"))?;
        let first = line()?;
        if !first.starts_with("+OK") {
            return Err(first);
        }
        loop {
            let l = line()?;
            if l == ".\r\n" {
                break;
            }
            if let Some(subject) = l.strip_prefix("Subject: ") {
                subjects.push(subject.trim_end().to_owned());
            }
        }
        send(&format!("DELE {i}\r\n"))?;
        line()?;
    }
    send("QUIT\r\n")?;
    let bye = line()?;
    if bye.starts_with("+OK") {
        Ok(subjects)
    } else {
        Err(bye)
    }
}

/// Deliver to `users` in turn through the balancer until `stop`, retrying
/// a refused delivery (451, a node going away) as an MTA would; the
/// subjects stored.
fn deliver_until(c: &Cluster, stop: &std::sync::atomic::AtomicBool, users: &[&str]) -> Vec<String> {
    let mut delivered = Vec::new();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for user in users {
            let subject = format!("{user}-{n}");
            for _ in 0..100 {
                if c.try_lmtp(user, &subject).is_ok() {
                    delivered.push(subject.clone());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    delivered
}

/// Fetch and delete through the balancer in a loop until `stop`: the
/// subjects taken and the refusals seen.
fn fetch_until(
    port: u16,
    stop: &std::sync::atomic::AtomicBool,
    user: &str,
    pass: &str,
) -> (Vec<String>, Vec<String>) {
    let mut got = Vec::new();
    let mut refusals = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match fetch_and_delete(port, user, pass) {
            Ok(subjects) => got.extend(subjects),
            Err(e) => refusals.push(e),
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    (got, refusals)
}

#[test]
fn a_rolling_restart_loses_no_mail_and_refuses_at_most_once_per_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(c) = Cluster::start("3s") else {
        return;
    };
    let stop = AtomicBool::new(false);
    let (stop, c) = (&stop, &c);
    let mut restarted = Vec::new();
    // A deliverer and two clients fetching and deleting in a loop, all
    // through the balancer, while each node is stopped with SIGTERM and
    // started again in turn.
    let (delivered, fetched) = std::thread::scope(|scope| {
        // A failed assertion below stops the workers too, never hangs.
        let _stop_on_exit = StopOnDrop(stop);
        let deliverer = scope.spawn(move || deliver_until(c, stop, &["alice", "bob"]));
        let fetchers: Vec<_> = [("alice", "secret"), ("bob", "password")]
            .into_iter()
            .map(|(user, pass)| scope.spawn(move || fetch_until(c.pop3, stop, user, pass)))
            .collect();
        for node in &c.nodes {
            std::thread::sleep(Duration::from_millis(500));
            signal(node.process.child.id(), "TERM");
            wait_until(Duration::from_secs(10), "the node stopped", || {
                TcpStream::connect(("127.0.0.1", node.direct)).is_err()
            });
            std::thread::sleep(Duration::from_millis(300));
            restarted.push(c.s.start_with(&node.config, node.direct));
            // (Its metrics listener may open a moment after POP3's.)
            wait_until(Duration::from_secs(20), "the restarted node ready", || {
                try_http(node.metrics, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let delivered = deliverer.join().unwrap();
        let fetched: Vec<_> = fetchers.into_iter().map(|f| f.join().unwrap()).collect();
        (delivered, fetched)
    });
    eprintln!(
        "rolling restart: {} delivered, refusals per client {:?}",
        delivered.len(),
        fetched.iter().map(|(_, r)| r.len()).collect::<Vec<_>>()
    );
    for (_, refusals) in &fetched {
        assert!(
            refusals.len() <= 3,
            "more than one refusal per restart: {refusals:?}"
        );
    }
    assert!(
        delivered.len() >= 20,
        "too little traffic: {}",
        delivered.len()
    );
    // Every delivered message was fetched, or is fetched now.
    let mut seen: std::collections::HashSet<String> =
        fetched.into_iter().flat_map(|(got, _)| got).collect();
    for (user, pass) in [("alice", "secret"), ("bob", "password")] {
        seen.extend(fetch_and_delete(c.pop3, user, pass).unwrap());
    }
    let lost: Vec<&String> = delivered.iter().filter(|d| !seen.contains(*d)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    drop(restarted);
}

#[test]
fn the_database_restarting_and_redis_dying_under_load_lose_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pg = Postgres::private();
    let Some(mut c) = Cluster::start_on("3s", Some(&pg)) else {
        return;
    };
    let redis_port = c.redis.port;
    let stop = AtomicBool::new(false);
    let (stop, cl) = (&stop, &c);
    let (delivered, fetched, while_down) = std::thread::scope(|scope| {
        // A failed assertion below stops the workers too, never hangs.
        let _stop_on_exit = StopOnDrop(stop);
        let deliverer = scope.spawn(move || deliver_until(cl, stop, &["alice"]));
        let fetcher = scope.spawn(move || fetch_until(cl.pop3, stop, "alice", "secret"));
        std::thread::sleep(Duration::from_millis(500));
        pg.pg_ctl_stop();
        let while_down = wait_for(
            Duration::from_secs(10),
            "unready without the database",
            || {
                let r = http(cl.nodes[0].metrics, "/readyz");
                r.starts_with("HTTP/1.1 503").then_some(r)
            },
        );
        // Traffic meets the database away for a while.
        std::thread::sleep(Duration::from_millis(700));
        pg.pg_ctl_start();
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        (
            deliverer.join().unwrap(),
            fetcher.join().unwrap(),
            while_down,
        )
    });
    assert!(while_down.starts_with("HTTP/1.1 503"), "{while_down}");
    assert!(while_down.contains("database unavailable"), "{while_down}");
    let (got, refusals) = fetched;
    // While the database is away: [SYS/TEMP], or the balancer closing
    // the connection with every node unready; after it, [IN-USE] until
    // the lease of a session whose QUIT failed meanwhile lapses.
    assert!(
        refusals
            .iter()
            .all(|r| r.contains("[SYS/TEMP]") || r.contains("closed") || r.contains("[IN-USE]")),
        "{refusals:?}"
    );
    // Redis dies: logins go on; back, the nodes use it again by themselves.
    let _ = c.redis.child.kill();
    let _ = c.redis.child.wait();
    let mut seen: std::collections::HashSet<String> = got.into_iter().collect();
    seen.extend(fetch_and_delete(c.pop3, "alice", "secret").unwrap());
    c.redis = Redis::start(redis_port);
    wait_until(Duration::from_secs(10), "Redis used again", || {
        c.nodes
            .iter()
            .all(|n| http(n.metrics, "/metrics").contains("pop3_shared_state_up 1"))
    });
    // Nothing lost: every delivered message was fetched.
    seen.extend(fetch_and_delete(c.pop3, "alice", "secret").unwrap());
    let lost: Vec<&String> = delivered.iter().filter(|d| !seen.contains(*d)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        delivered.len() >= 10,
        "too little traffic: {}",
        delivered.len()
    );
}

#[test]
fn a_paused_node_is_fenced_out_by_the_node_that_took_over() {
    let Some(c) = Cluster::start("2s") else {
        return;
    };
    for n in 0..3 {
        c.lmtp_deliver(&format!("message {n}"));
    }
    let mut stale = Client::login(c.nodes[0].direct, "alice", "secret");
    stale.cmd("DELE 1");
    stale.cmd("DELE 2");
    signal(c.nodes[0].process.child.id(), "STOP");
    // The balancer's health check notices the silence first (a paused
    // process's sockets still accept, then say nothing)...
    std::thread::sleep(Duration::from_millis(1000));
    // ... and past the TTL another node serves the user and deletes
    // message 3.
    let started = Instant::now();
    let mut fresh = loop {
        let mut client = Client::connect(c.pop3);
        client.cmd("USER alice");
        if client.cmd("PASS secret").starts_with("+OK") {
            break client;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!fresh.greeting.contains("(node0)"), "{}", fresh.greeting);
    fresh.cmd("DELE 3");
    assert!(fresh.cmd("QUIT").starts_with("+OK"));
    signal(c.nodes[0].process.child.id(), "CONT");
    assert_eq!(
        stale.cmd("QUIT"),
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    assert_eq!(c.s.count(), 2, "only the new holder's deletion");
}

/// With the database away, LMTP through the balancer answers 451 4.3.0
/// (the LMTP backend checks liveness, so the nodes stay in rotation), and
/// POP3 behaves as docs/cluster.md says: no node is ready, the balancer
/// closes new connections.
#[test]
fn through_the_balancer_a_database_outage_looks_as_documented() {
    let pg = Postgres::private();
    let Some(c) = Cluster::start_on("3s", Some(&pg)) else {
        return;
    };
    c.lmtp_deliver("before");
    pg.pg_ctl_stop();
    wait_until(Duration::from_secs(10), "LMTP answering 451 4.3.0", || {
        c.try_lmtp("alice", "during")
            .unwrap_err()
            .contains("451 4.3.0")
    });
    // Once every POP3 health check failed, the balancer closes POP3
    // connections without a greeting...
    wait_until(Duration::from_secs(10), "no node ready for POP3", || {
        greeting(c.pop3).is_none_or(|l| l.is_empty())
    });
    // ... while LMTP keeps answering 451 4.3.0 (its check is /healthz).
    for _ in 0..5 {
        let answer = c.try_lmtp("alice", "still during").unwrap_err();
        assert!(answer.contains("451 4.3.0"), "{answer}");
    }
    pg.pg_ctl_start();
}

/// Sets the flag when dropped: the scope's workers end however the
/// scope's own body does.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The first line a server on `port` sends, `None` when the connection
/// fails.
fn greeting(port: u16) -> Option<String> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let _ = r.get_mut().write_all(b"QUIT\r\n");
    Some(line)
}

/// SIGTERM of a node behind the balancer: it fails /readyz while still
/// accepting (drain_delay) before its listeners close, so no client's
/// connection goes without a greeting.
#[test]
fn a_node_stopping_behind_the_balancer_leaves_no_client_without_a_greeting() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(mut c) = Cluster::start("3s") else {
        return;
    };
    // Without the balancer's retries, so that only the drain can keep
    // clients from a node whose listeners have closed.
    let cfg = c.s.path("haproxy.cfg");
    let text = read(&cfg).replace("  retries 3\n  option redispatch\n", "  retries 0\n");
    std::fs::write(&cfg, text).unwrap();
    let _ = c.haproxy.kill();
    let _ = c.haproxy.wait();
    c.haproxy = start_haproxy(&cfg);
    // The balancer has found the nodes up.
    wait_until(
        Duration::from_secs(10),
        "a greeting through the balancer",
        || greeting(c.pop3).is_some_and(|l| l.starts_with("+OK")),
    );
    let stop = AtomicBool::new(false);
    let greetings = AtomicUsize::new(0);
    let (stop, greetings, pop3) = (&stop, &greetings, c.pop3);
    let (greeted, failures) = std::thread::scope(|scope| {
        // A failed assertion below stops the workers too, never hangs.
        let _stop_on_exit = StopOnDrop(stop);
        let clients: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(move || {
                    let (mut greeted, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match greeting(pop3) {
                            Some(l) if l.starts_with("+OK") => {
                                greeted += 1;
                                greetings.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    (greeted, failures)
                })
            })
            .collect();
        let traffic = |more: usize| {
            let until = greetings.load(Ordering::Relaxed) + more;
            wait_until(Duration::from_secs(10), "clients greeted", || {
                greetings.load(Ordering::Relaxed) >= until
            });
        };
        traffic(50);
        signal(c.nodes[0].process.child.id(), "TERM");
        wait_until(
            Duration::from_secs(10),
            "the node's listeners closed",
            || TcpStream::connect(("127.0.0.1", c.nodes[0].direct)).is_err(),
        );
        // Clients go on after the node closed: none of them may fail.
        traffic(300);
        stop.store(true, Ordering::Relaxed);
        clients.into_iter().map(|t| t.join().unwrap()).fold(
            (0, Vec::new()),
            |(g, mut f), (g2, f2)| {
                f.extend(f2);
                (g + g2, f)
            },
        )
    });
    assert!(greeted > 100, "too little traffic: {greeted}");
    assert!(
        failures.is_empty(),
        "{} greeted, failed: {failures:?}",
        greeted
    );
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

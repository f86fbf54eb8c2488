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
use std::process::Child;
use std::time::Duration;

use crate::common::*;

mod balancer;
mod shared_limits;

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

/// What the workers of a load test have done so far, for the test to
/// wait on ("traffic went on with this node down") instead of sleeping.
#[derive(Default)]
pub(crate) struct Progress {
    pub delivered: std::sync::atomic::AtomicUsize,
    pub refused: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn delivered(&self) -> usize {
        self.delivered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until `more` deliveries have been made from now on.
    pub(crate) fn wait_for_deliveries(&self, more: usize, what: &str) {
        let target = self.delivered() + more;
        wait_until(Duration::from_secs(30), what, || self.delivered() >= target);
    }

    /// Wait until a client has been refused `more` times from now on.
    pub(crate) fn wait_for_refusals(&self, more: usize, what: &str) {
        let count = || self.refused.load(std::sync::atomic::Ordering::SeqCst);
        let target = count() + more;
        wait_until(Duration::from_secs(30), what, || count() >= target);
    }
}

/// Deliver to `users` in turn through the balancer until `stop`, retrying
/// a refused delivery (451, a node going away) for up to 5 s as an MTA
/// would; the subjects stored.
fn deliver_until(
    c: &Cluster,
    stop: &std::sync::atomic::AtomicBool,
    progress: &Progress,
    users: &[&str],
) -> Vec<String> {
    let mut delivered = Vec::new();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for user in users {
            let subject = format!("{user}-{n}");
            let stored = poll_for(Duration::from_secs(5), || c.try_lmtp(user, &subject).ok());
            if stored.is_some() {
                delivered.push(subject);
                progress
                    .delivered
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        n += 1;
    }
    delivered
}

/// Fetch and delete through the balancer in a loop until `stop`: the
/// subjects taken and the refusals seen. After a refusal it waits until
/// the balancer greets again, so a cluster in trouble is not hammered.
fn fetch_until(
    port: u16,
    stop: &std::sync::atomic::AtomicBool,
    progress: &Progress,
    user: &str,
    pass: &str,
) -> (Vec<String>, Vec<String>) {
    let mut got = Vec::new();
    let mut refusals = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match fetch_and_delete(port, user, pass) {
            Ok(subjects) => got.extend(subjects),
            Err(e) => {
                refusals.push(e);
                progress
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                poll_for(Duration::from_secs(20), || {
                    greeting(port).filter(|g| g.starts_with("+OK"))
                });
            }
        }
    }
    (got, refusals)
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

// SPDX-License-Identifier: AGPL-3.0-only
//! Three nodes on one PostgreSQL behind HAProxy, as docs/cluster.md sets
//! them up: one lease and one UID sequence, and faults (kill -9, SIGSTOP,
//! rolling restarts, the database and Redis going away) that lose no mail.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

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

#[test]
fn a_rolling_restart_loses_no_mail_and_refuses_at_most_once_per_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(c) = Cluster::start("3s") else {
        return;
    };
    let (stop, progress) = (AtomicBool::new(false), Progress::default());
    let (stop, progress, c) = (&stop, &progress, &c);
    let mut restarted = Vec::new();
    // A deliverer and two clients fetching and deleting in a loop, all
    // through the balancer, while each node is stopped with SIGTERM and
    // started again in turn.
    let (delivered, fetched) = std::thread::scope(|scope| {
        // A failed assertion below stops the workers too, never hangs.
        let _stop_on_exit = StopOnDrop(stop);
        let deliverer = scope.spawn(move || deliver_until(c, stop, progress, &["alice", "bob"]));
        let fetchers: Vec<_> = [("alice", "secret"), ("bob", "password")]
            .into_iter()
            .map(|(user, pass)| {
                scope.spawn(move || fetch_until(c.pop3, stop, progress, user, pass))
            })
            .collect();
        for node in &c.nodes {
            progress.wait_for_deliveries(3, "traffic before the restart");
            signal(node.process.child.id(), "TERM");
            wait_until(Duration::from_secs(10), "the node stopped", || {
                TcpStream::connect(("127.0.0.1", node.direct)).is_err()
            });
            progress.wait_for_deliveries(2, "traffic with the node down");
            restarted.push(c.s.start_with(&node.config, node.direct));
            // (Its metrics listener may open a moment after POP3's.)
            wait_until(Duration::from_secs(20), "the restarted node ready", || {
                try_http(node.metrics, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            });
        }
        progress.wait_for_deliveries(3, "traffic after the last restart");
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
    // Five per node (before, with it down) and three after, as waited for.
    assert!(
        delivered.len() >= 18,
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
    let (stop, progress) = (AtomicBool::new(false), Progress::default());
    let (stop, progress, cl) = (&stop, &progress, &c);
    let (delivered, fetched, while_down) = std::thread::scope(|scope| {
        // A failed assertion below stops the workers too, never hangs.
        let _stop_on_exit = StopOnDrop(stop);
        let deliverer = scope.spawn(move || deliver_until(cl, stop, progress, &["alice"]));
        let fetcher = scope.spawn(move || fetch_until(cl.pop3, stop, progress, "alice", "secret"));
        progress.wait_for_deliveries(3, "traffic before the outage");
        pg.pg_ctl_stop();
        let while_down = wait_for(
            Duration::from_secs(10),
            "unready without the database",
            || {
                let r = http(cl.nodes[0].metrics, "/readyz");
                r.starts_with("HTTP/1.1 503").then_some(r)
            },
        );
        progress.wait_for_refusals(1, "a client meets the outage");
        pg.pg_ctl_start();
        progress.wait_for_deliveries(3, "traffic with the database back");
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
    c.redis.kill();
    let mut seen: std::collections::HashSet<String> = got.into_iter().collect();
    // ([IN-USE] until the lease of a session whose QUIT met the outage
    // lapses: 3 s.)
    let served = |what: &str| {
        wait_for(Duration::from_secs(15), what, || {
            fetch_and_delete(c.pop3, "alice", "secret").ok()
        })
    };
    seen.extend(served("alice served with Redis gone"));
    c.redis = Redis::start(redis_port);
    wait_until(Duration::from_secs(10), "Redis used again", || {
        c.nodes
            .iter()
            .all(|n| http(n.metrics, "/metrics").contains("pop3_shared_state_up 1"))
    });
    // Nothing lost: every delivered message was fetched.
    seen.extend(served("alice served with Redis back"));
    let lost: Vec<&String> = delivered.iter().filter(|d| !seen.contains(*d)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    // Three before the outage, three after it, as waited for above.
    assert!(
        delivered.len() >= 6,
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
    // The balancer's health check takes the silent node out of rotation
    // (a paused process's sockets still accept, then say nothing): three
    // greetings in a row, round robin over three nodes, none from it ...
    wait_until(
        Duration::from_secs(40),
        "the paused node out of rotation",
        || (0..3).all(|_| greeting(c.pop3).is_some_and(|g| g.starts_with("+OK"))),
    );
    // ... and past the TTL another node serves the user and deletes
    // message 3.
    let mut fresh = wait_for(Duration::from_secs(10), "served by another node", || {
        let mut client = Client::connect(c.pop3);
        client.cmd("USER alice");
        client
            .cmd("PASS secret")
            .starts_with("+OK")
            .then_some(client)
    });
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

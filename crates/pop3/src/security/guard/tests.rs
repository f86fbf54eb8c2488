// SPDX-License-Identifier: AGPL-3.0-only
use super::*;
use crate::security::clock::ManualClock;

fn guard(tweak: impl FnOnce(&mut SecurityConfig)) -> (Guard, Arc<ManualClock>) {
    let mut cfg = SecurityConfig {
        max_auth_attempts: 3,
        auth_failure_delay: Duration::from_millis(100),
        max_user_auth_failures: 4,
        ..SecurityConfig::default()
    };
    tweak(&mut cfg);
    let clock = Arc::new(ManualClock::new());
    let g = Guard::new(
        cfg,
        clock.clone(),
        SecurityLog::off(),
        Arc::new(Metrics::new()),
    );
    (g, clock)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn failures_grow_the_delay_then_block_until_it_expires() {
    let (g, clock) = guard(|_| {});
    let a = ip("192.0.2.1");
    let v1 = g.auth_failed(a, Some("alice"), "USER", "x");
    let v2 = g.auth_failed(a, Some("alice"), "USER", "x");
    assert_eq!((v1.delay, v1.blocked), (Duration::from_millis(100), false));
    assert_eq!((v2.delay, v2.blocked), (Duration::from_millis(200), false));
    assert!(g.auth_failed(a, Some("alice"), "USER", "x").blocked);
    assert!(g.blocked(a).is_some());
    assert!(
        g.blocked(ip("192.0.2.2")).is_none(),
        "other addresses are not affected"
    );
    clock.advance(Duration::from_secs(899));
    assert!(g.blocked(a).is_some());
    clock.advance(Duration::from_secs(2));
    assert_eq!(g.sweep(), 1, "the sweeper ends it without a new connection");
    assert!(
        g.blocked(a).is_none(),
        "the block ends after auto_block_duration"
    );
    // The window forgets old failures.
    g.auth_failed(a, None, "USER", "x");
    g.auth_failed(a, None, "USER", "x");
    clock.advance(Duration::from_secs(901));
    assert!(!g.auth_failed(a, None, "USER", "x").blocked);
}

#[test]
fn success_forgives_and_trusted_networks_are_exempt() {
    let (g, _) = guard(|c| c.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()]);
    let a = ip("192.0.2.1");
    g.auth_failed(a, Some("alice"), "USER", "x");
    g.auth_failed(a, Some("alice"), "USER", "x");
    g.auth_succeeded(a, "ALICE");
    assert!(!g.auth_failed(a, Some("alice"), "USER", "x").blocked);
    let t = ip("10.1.2.3");
    for _ in 0..50 {
        assert_eq!(g.auth_failed(t, None, "USER", "x").delay, Duration::ZERO);
    }
    assert!(g.blocked(t).is_none());
    assert!(!g.score(t, Rule::HttpRequest));
}

#[test]
fn a_success_forgives_only_its_own_failures() {
    let (g, _) = guard(|c| c.max_auth_attempts = 5);
    let a = ip("192.0.2.1");
    let mut blocked = false;
    for _ in 0..3 {
        for _ in 0..4 {
            blocked |= g.auth_failed(a, Some("victim"), "USER", "x").blocked;
        }
        g.auth_succeeded(a, "attacker");
    }
    assert!(
        blocked,
        "the attacker's own logins did not wipe the victim's failures"
    );
    assert!(g.blocked(a).is_some());
}

#[test]
fn known_devices_skip_the_ration() {
    let (g, _) = guard(|c| c.max_auth_attempts = 100);
    let home = ip("203.0.113.5");
    g.auth_succeeded(home, "alice");
    for i in 0..4 {
        g.auth_failed(ip(&format!("198.51.100.{i}")), Some("alice"), "PLAIN", "x");
    }
    assert!(g.rationed_stranger(ip("198.51.100.9"), "alice"));
    assert!(!g.rationed_stranger(home, "alice"));
    for _ in 0..40 {
        g.user_gate(ip("198.51.100.9"), "alice");
    }
    assert_eq!(g.user_gate(ip("198.51.100.9"), "alice"), UserGate::Refuse);
    assert_eq!(g.user_gate(home, "Alice"), UserGate::Wait(Duration::ZERO));
    g.note_success_elsewhere(ip("198.51.100.77"), "alice");
    assert_eq!(
        g.user_gate(ip("198.51.100.77"), "alice"),
        UserGate::Wait(Duration::ZERO)
    );
}

#[test]
fn spraying_slows_the_user_without_locking_it_out() {
    let (g, clock) = guard(|c| c.max_auth_attempts = 100);
    for i in 0..4 {
        g.auth_failed(ip(&format!("198.51.100.{i}")), Some("Alice"), "PLAIN", "x");
    }
    let home = ip("203.0.113.5");
    let wait = |s: u64| UserGate::Wait(Duration::from_secs(s));
    // Attempts from anywhere share one ration: 2 s apart, in a queue.
    assert_eq!(g.user_gate(home, "alice"), wait(2));
    assert_eq!(g.user_gate(ip("198.51.100.9"), "ALICE"), wait(4));
    assert_eq!(g.user_gate(home, "alice"), wait(6));
    assert_eq!(g.user_gate(home, "bob"), wait(0));
    clock.advance(Duration::from_secs(6));
    assert_eq!(g.user_gate(home, "alice"), wait(2));
    // A queue longer than a minute is refused outright.
    let mut last = UserGate::Wait(Duration::ZERO);
    for _ in 0..40 {
        last = g.user_gate(home, "alice");
    }
    assert_eq!(last, UserGate::Refuse);
    clock.advance(Duration::from_secs(901));
    assert_eq!(g.user_gate(home, "alice"), wait(0));
}

#[test]
fn ipv6_networks_count_as_one_and_loopback_is_not_blocked() {
    let (g, _) = guard(|c| c.max_auth_attempts = 3);
    // Three addresses of one /64: blocked together, the next /64 not.
    for host in 1..=3 {
        g.auth_failed(ip(&format!("2001:db8:1:2::{host}")), None, "USER", "x");
    }
    assert!(g.blocked(ip("2001:db8:1:2:ffff::9")).is_some());
    assert!(g.blocked(ip("2001:db8:1:3::1")).is_none());
    // IPv4 as a dual-stack listener sees it is IPv4.
    for _ in 0..3 {
        g.auth_failed(ip("::ffff:192.0.2.50"), None, "USER", "x");
    }
    assert!(g.blocked(ip("192.0.2.50")).is_some());
    // Loopback, either family: never blocked by default...
    for _ in 0..10 {
        for lo in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let v = g.auth_failed(ip(lo), Some("u"), "USER", "x");
            assert!(!v.blocked);
            assert!(!g.score(ip(lo), Rule::HttpRequest));
        }
    }
    assert!(g.blocked(ip("127.0.0.1")).is_none() && g.blocked(ip("::1")).is_none());
    // ...unless asked for.
    let (g, _) = guard(|c| {
        c.max_auth_attempts = 3;
        c.block_loopback = true;
    });
    for _ in 0..3 {
        g.auth_failed(ip("::ffff:127.0.0.1"), None, "USER", "x");
    }
    assert!(g.blocked(ip("127.0.0.1")).is_some());
}

#[test]
fn scores_add_up_to_a_block() {
    let (g, _) = guard(|c| c.suspicious_threshold = 65);
    let a = ip("192.0.2.7");
    assert!(!g.score(a, Rule::HttpRequest));
    assert!(!g.score(a, Rule::Garbage));
    assert!(g.score(a, Rule::UnknownCommand));
    assert!(g.blocked(a).is_some());
}

#[test]
fn block_list_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blocked");
    let (g, clock) = guard(|c| c.block_list_file = Some(file.clone()));
    g.block(ip("192.0.2.3"), "test");
    g.block(ip("2001:db8::1"), "test");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2);
    let again = Guard::new(
        SecurityConfig {
            block_list_file: Some(file.clone()),
            ..SecurityConfig::default()
        },
        clock.clone(),
        SecurityLog::off(),
        Arc::new(Metrics::new()),
    );
    assert!(again.blocked(ip("192.0.2.3")).is_some());
    assert!(again.blocked(ip("2001:db8::1")).is_some());
    assert_eq!(again.blocked_count(), 2);
}

#[test]
fn memory_is_bounded_per_key() {
    let (g, _) = guard(|c| {
        c.max_auth_attempts = u32::MAX;
        c.suspicious_threshold = u32::MAX;
    });
    let a = ip("192.0.2.8");
    for _ in 0..10_000 {
        g.auth_failed(a, Some("x"), "USER", "x");
    }
    let st = g.lock();
    assert!(st.ip_failures[&a].len() <= MAX_PER_KEY);
    assert!(st.user_failures["x"].len() <= MAX_PER_KEY);
    assert!(st.scores[&a].len() <= MAX_PER_KEY);
}

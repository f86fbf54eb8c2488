// SPDX-License-Identifier: AGPL-3.0-only
//! Brute-force blocking and abuse scoring, per address and per user.
//!
//! - An address with `max_auth_attempts` failed logins within
//!   `auth_window` is blocked for `auto_block_duration`; before that each
//!   failure is answered after a delay that doubles per failure.
//! - A user with `max_user_auth_failures` failures within the window, from
//!   any addresses (password spraying), has login attempts rationed to one
//!   per `user_throttle_delay`. The ration never locks the user out: an
//!   address group that logged in as that user within the window skips it,
//!   and an attempt the queue has no room for is told to come back later
//!   (never "wrong password", and its password is not checked).
//! - A successful login forgives only that user's failures from that
//!   address group, so one good account of his own buys an attacker
//!   nothing against another.
//! - Suspicious behaviour adds points per [`Rule`]; an address reaching
//!   `suspicious_threshold` within the window is blocked.
//! - Addresses in `trusted_networks` are exempt from all of it; loopback
//!   is never blocked as a whole unless `block_loopback` says so.
//! - Addresses are counted as [`address::group`] keys them: IPv6 by its
//!   `ipv6_prefix` network.
//! - The block list is written to `block_list_file` on every change and
//!   read back at start, so a restart does not lift blocks.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod everywhere;
mod persist;
mod ration;
mod rules;
pub use everywhere::LoginGate;
pub use ration::UserGate;
pub use rules::Rule;

use super::address;
use super::blocklist::Block;
use super::clock::Clock;
use super::events::SecurityLog;
use super::shared::SharedLimits;
use crate::config::SecurityConfig;
use crate::telemetry::Metrics;

/// What a failed login leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureVerdict {
    /// Wait this long before answering.
    pub delay: Duration,
    /// The address is now blocked: answer and close.
    pub blocked: bool,
}

/// A failed login from an address group: when (ms), and for which login
/// (lowercase) if one was named.
type Failure = (u64, Option<Box<str>>);

#[derive(Debug, Default)]
struct State {
    /// Address group -> its failed logins in the window.
    ip_failures: HashMap<IpAddr, VecDeque<Failure>>,
    /// (login, address group) -> last successful login there (ms).
    user_successes: HashMap<(String, IpAddr), u64>,
    user_failures: HashMap<String, VecDeque<u64>>,
    scores: HashMap<IpAddr, VecDeque<(u64, u32)>>,
    /// Address group -> its block.
    blocked: HashMap<IpAddr, Block>,
    /// Login -> the time (ms) from which its next rationed attempt may run.
    user_next: HashMap<String, u64>,
    events: u64,
}

/// Most entries kept per key: enough to decide, bounded whatever happens.
const MAX_PER_KEY: usize = 256;

pub struct Guard {
    config: RwLock<SecurityConfig>,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    log: RwLock<Arc<SecurityLog>>,
    metrics: Arc<Metrics>,
    /// The same limits counted with the other nodes
    /// (`security.shared_state`); see [`everywhere`].
    shared: Option<Arc<SharedLimits>>,
}

impl Guard {
    pub fn new(
        config: SecurityConfig,
        clock: Arc<dyn Clock>,
        log: SecurityLog,
        metrics: Arc<Metrics>,
    ) -> Guard {
        let guard = Guard {
            config: RwLock::new(config),
            state: Mutex::new(State::default()),
            clock,
            log: RwLock::new(Arc::new(log)),
            metrics,
            shared: None,
        };
        guard.load_block_list();
        guard
    }

    /// Count with the other nodes too, through `shared`.
    pub fn sharing(mut self, shared: Option<Arc<SharedLimits>>) -> Guard {
        self.shared = shared;
        self
    }

    /// The limits shared with the other nodes, when configured.
    pub fn shared(&self) -> Option<&Arc<SharedLimits>> {
        self.shared.as_ref()
    }

    /// New settings (a reload); counters and blocks carry over, and the
    /// block list file, when there is one, is read again: a block an
    /// operator lifted there (`pop3d unblock`) is lifted here.
    pub fn reconfigure(&self, config: SecurityConfig, log: SecurityLog) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.log.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(log);
        self.load_block_list();
    }

    /// Lift the block of `ip`'s group (an operator's `pop3d unblock`, here
    /// or on another node through the shared state); true if it was
    /// blocked.
    pub fn lift(&self, ip: IpAddr) -> bool {
        let key = self.key(ip);
        let lifted = {
            let mut st = self.lock();
            let lifted = st.blocked.remove(&key).is_some();
            st.ip_failures.remove(&key);
            st.scores.remove(&key);
            self.metrics.blocked_addresses.set(st.blocked.len() as i64);
            lifted
        };
        if lifted {
            self.log().unblocked_by(key, "lifted by an operator");
            self.save_block_list();
        }
        lifted
    }

    pub fn log(&self) -> Arc<SecurityLog> {
        self.log.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cfg(&self) -> SecurityConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = address::canonical(ip);
        let cfg = self.config.read().unwrap_or_else(|p| p.into_inner());
        cfg.trusted_networks.iter().any(|n| n.contains(&ip))
    }

    /// The key this address is counted under (see [`address::group`]).
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        let prefix = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .ipv6_prefix;
        address::group(ip, prefix)
    }

    /// Take over a block decided by another node (through the shared
    /// state): refused here too for `left`; not announced again. Only an
    /// address this node could have blocked itself: whoever can write to
    /// Redis must not be able to lock out a trusted network or loopback.
    pub fn adopt_block(&self, key: IpAddr, left: Duration) {
        if !self.blockable(key) {
            tracing::warn!(target: "pop3::security", %key, "a shared block for an address this node never blocks; ignored");
            return;
        }
        let until = self.clock.now_ms() + left.as_millis() as u64;
        let fresh = {
            let mut st = self.lock();
            let fresh = st
                .blocked
                .get(&key)
                .is_none_or(|b| b.until_ms + 1000 < until);
            if fresh {
                let reason = "blocked by the shared limit".to_owned();
                st.blocked.insert(
                    key,
                    Block {
                        until_ms: until,
                        reason,
                    },
                );
                self.metrics.blocked_addresses.set(st.blocked.len() as i64);
            }
            fresh
        };
        if fresh {
            self.log()
                .blocked(key, "blocked by the shared limit", left.as_secs());
            self.save_block_list();
        }
    }

    /// Whether failures and scores of this address count at all (not
    /// trusted, and blockable).
    pub fn counts(&self, ip: IpAddr) -> bool {
        !self.is_trusted(ip) && self.blockable(ip)
    }

    /// The current settings.
    pub fn config(&self) -> SecurityConfig {
        self.cfg()
    }

    /// Whether this address may be blocked at all.
    fn blockable(&self, ip: IpAddr) -> bool {
        let ip = address::canonical(ip);
        let cfg = self.config.read().unwrap_or_else(|p| p.into_inner());
        !cfg.trusted_networks.iter().any(|n| n.contains(&ip))
            && (!ip.is_loopback() || cfg.block_loopback)
    }

    /// Time left on this address's block, if it is blocked. An address
    /// this node never blocks (trusted, or loopback) is never refused, even
    /// when its group's key was blocked (by a neighbour in its IPv6
    /// network, or through the shared state).
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        if !self.blockable(ip) {
            return None;
        }
        let ip = self.key(ip);
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let until = st.blocked.get(&ip)?.until_ms;
        if until > now {
            return Some(Duration::from_millis(until - now));
        }
        st.blocked.remove(&ip);
        self.metrics.blocked_addresses.set(st.blocked.len() as i64);
        drop(st);
        self.log().unblocked(ip);
        self.save_block_list();
        None
    }

    /// Record a failed login and say how to answer it.
    pub fn auth_failed(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        mechanism: &str,
        reason: &str,
    ) -> FailureVerdict {
        self.log().auth_failed(ip, user, mechanism, reason);
        if self.is_trusted(ip) {
            return FailureVerdict {
                delay: Duration::ZERO,
                blocked: false,
            };
        }
        let blockable = self.blockable(ip);
        let key = self.key(ip);
        let cfg = self.cfg();
        let now = self.clock.now_ms();
        let window = cfg.auth_window.as_millis() as u64;
        let count = {
            let mut st = self.lock();
            if let Some(user) = user {
                push(
                    st.user_failures.entry(user.to_lowercase()).or_default(),
                    now,
                    window,
                    now,
                );
            }
            let q = st.ip_failures.entry(key).or_default();
            q.retain(|(t, _)| now.saturating_sub(*t) < window);
            if q.len() >= MAX_PER_KEY {
                q.pop_front();
            }
            q.push_back((now, user.map(|u| u.to_lowercase().into())));
            let count = q.len() as u32;
            self.tidy(&mut st, now, window);
            count
        };
        let blocked_by_score = self.score(ip, Rule::AuthFailure);
        if blockable && (count >= cfg.max_auth_attempts || blocked_by_score) {
            if !blocked_by_score {
                self.block(ip, "too many failed logins");
            }
            return FailureVerdict {
                delay: cfg.auth_failure_delay,
                blocked: true,
            };
        }
        let factor = 1u32 << (count.saturating_sub(1)).min(4);
        FailureVerdict {
            delay: cfg.auth_failure_delay * factor,
            blocked: false,
        }
    }

    /// `user` logged in from `ip`: that user's failures from this address
    /// group are forgiven (not those for other users), and the group skips
    /// the user's ration for the rest of the window.
    pub fn auth_succeeded(&self, ip: IpAddr, user: &str) {
        let key = self.key(ip);
        let login = user.to_lowercase();
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if let Some(q) = st.ip_failures.get_mut(&key) {
            q.retain(|(_, u)| u.as_deref() != Some(login.as_str()));
            if q.is_empty() {
                st.ip_failures.remove(&key);
            }
        }
        st.user_successes.insert((login, key), now);
    }

    /// Add a rule's points to the address; true if that blocked it.
    pub fn score(&self, ip: IpAddr, rule: Rule) -> bool {
        if self.is_trusted(ip) {
            return false;
        }
        let blockable = self.blockable(ip);
        let key = self.key(ip);
        let cfg = self.cfg();
        let now = self.clock.now_ms();
        let window = cfg.auth_window.as_millis() as u64;
        let total = {
            let mut st = self.lock();
            let q = st.scores.entry(key).or_default();
            q.retain(|(t, _)| now.saturating_sub(*t) < window);
            if q.len() >= MAX_PER_KEY {
                q.pop_front();
            }
            q.push_back((now, rule.points()));
            q.iter().map(|(_, p)| p).sum::<u32>()
        };
        self.metrics.suspicious(rule.name());
        self.log().suspicious(ip, rule.name(), rule.points(), total);
        if blockable && total >= cfg.suspicious_threshold {
            self.lock().scores.remove(&key);
            self.block(ip, "suspicious activity");
            return true;
        }
        false
    }

    /// Block an address (its group) for `auto_block_duration`.
    pub fn block(&self, ip: IpAddr, reason: &str) {
        if !self.blockable(ip) {
            return;
        }
        let ip = self.key(ip);
        let duration = self.cfg().auto_block_duration;
        let until = self.clock.now_ms() + duration.as_millis() as u64;
        {
            let mut st = self.lock();
            let reason = reason.to_owned();
            st.blocked.insert(
                ip,
                Block {
                    until_ms: until,
                    reason,
                },
            );
            st.ip_failures.remove(&ip);
            self.metrics.blocked_addresses.set(st.blocked.len() as i64);
        }
        self.log().blocked(ip, reason, duration.as_secs());
        tracing::warn!(target: "pop3::security", %ip, reason, "address blocked");
        self.save_block_list();
    }

    /// Drop stale entries now and then, so memory follows the window.
    fn tidy(&self, st: &mut State, now: u64, window: u64) {
        st.events += 1;
        if !st.events.is_multiple_of(1024) {
            return;
        }
        st.ip_failures.retain(|_, q| {
            q.retain(|(t, _)| now.saturating_sub(*t) < window);
            !q.is_empty()
        });
        st.user_successes
            .retain(|_, t| now.saturating_sub(*t) < window);
        st.user_failures.retain(|_, q| {
            expire(q, now, window);
            !q.is_empty()
        });
        st.scores.retain(|_, q| {
            q.retain(|(t, _)| now.saturating_sub(*t) < window);
            !q.is_empty()
        });
        st.user_next.retain(|_, next| *next > now);
    }

    /// End blocks that ran out and log them, whether or not the address
    /// comes back; returns how many ended.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let ended: Vec<IpAddr> = {
            let mut st = self.lock();
            let ended: Vec<IpAddr> = st
                .blocked
                .iter()
                .filter(|(_, b)| b.until_ms <= now)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in &ended {
                st.blocked.remove(ip);
            }
            self.metrics.blocked_addresses.set(st.blocked.len() as i64);
            ended
        };
        if !ended.is_empty() {
            let log = self.log();
            for ip in &ended {
                log.unblocked(*ip);
            }
            self.save_block_list();
        }
        ended.len()
    }

    /// Addresses blocked now.
    pub fn blocked_count(&self) -> usize {
        let now = self.clock.now_ms();
        self.lock()
            .blocked
            .values()
            .filter(|b| b.until_ms > now)
            .count()
    }
}

fn expire(q: &mut VecDeque<u64>, now: u64, window: u64) {
    while q.front().is_some_and(|t| now.saturating_sub(*t) >= window) {
        q.pop_front();
    }
}

fn push(q: &mut VecDeque<u64>, t: u64, window: u64, now: u64) {
    expire(q, now, window);
    if q.len() >= MAX_PER_KEY {
        q.pop_front();
    }
    q.push_back(t);
}

#[cfg(test)]
mod tests;

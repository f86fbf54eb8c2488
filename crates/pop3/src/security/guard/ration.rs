// SPDX-License-Identifier: AGPL-3.0-only
//! The per-user ration of logins while a user is sprayed: attempts queue
//! one per `user_throttle_delay`, the user's own devices (an address group
//! that logged in as the user within the window, here or on another node)
//! skip the queue, and an attempt the queue has no room for is told to
//! come back later, never that its password was wrong.

use super::*;

/// Whether a login attempt for a sprayed user may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserGate {
    /// After waiting this long (zero when the user is not throttled).
    Wait(Duration),
    /// Not now: the queue of attempts for this login is full.
    Refuse,
}

/// Longest a rationed attempt may queue before it is refused instead.
const MAX_USER_WAIT: Duration = Duration::from_secs(60);

impl Guard {
    /// What every node together has seen of failures for `login` (the
    /// shared state): the rationing of [`Guard::user_gate`] follows it.
    pub fn note_user_failures(&self, login: &str, failures: u64) {
        let now = self.clock.now_ms();
        let window = self.cfg().auth_window.as_millis() as u64;
        let mut st = self.lock();
        let q = st.user_failures.entry(login.to_lowercase()).or_default();
        expire(q, now, window);
        let want = (failures as usize).min(MAX_PER_KEY);
        while q.len() < want {
            q.push_back(now);
        }
    }

    /// Whether `user` is rationed now (many failures in the window) and
    /// this address group has not logged in as that user lately: only
    /// then is it worth asking the other nodes whether they saw one.
    pub fn rationed_stranger(&self, ip: IpAddr, user: &str) -> bool {
        if self.is_trusted(ip) {
            return false;
        }
        let (window, limit) = {
            let cfg = self.config.read().unwrap_or_else(|p| p.into_inner());
            (
                cfg.auth_window.as_millis() as u64,
                cfg.max_user_auth_failures,
            )
        };
        let now = self.clock.now_ms();
        let login = user.to_lowercase();
        let st = self.lock();
        let rationed = st.user_failures.get(&login).is_some_and(|q| {
            q.iter()
                .filter(|t| now.saturating_sub(**t) < window)
                .count() as u32
                >= limit
        });
        rationed && !known(&st, &login, self.key(ip), now, window)
    }

    /// Another node saw `user` log in from this address group (the
    /// shared state): it skips the ration here too.
    pub fn note_success_elsewhere(&self, ip: IpAddr, user: &str) {
        let key = self.key(ip);
        let now = self.clock.now_ms();
        self.lock()
            .user_successes
            .insert((user.to_lowercase(), key), now);
    }

    /// Whether a login attempt for this user may run now. While the user
    /// is the target of many failures, attempts are rationed to one per
    /// `user_throttle_delay` across every connection: each takes the next
    /// free slot, so parallel attempts queue one behind the other instead
    /// of each waiting the same short delay. An address group that logged
    /// in as the user within the window is not rationed at all.
    pub fn user_gate(&self, ip: IpAddr, user: &str) -> UserGate {
        if self.is_trusted(ip) {
            return UserGate::Wait(Duration::ZERO);
        }
        let (window, limit, interval) = {
            let cfg = self.config.read().unwrap_or_else(|p| p.into_inner());
            (
                cfg.auth_window.as_millis() as u64,
                cfg.max_user_auth_failures,
                cfg.user_throttle_delay.as_millis() as u64,
            )
        };
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if st.user_failures.is_empty() {
            return UserGate::Wait(Duration::ZERO);
        }
        let login = user.to_lowercase();
        if known(&st, &login, self.key(ip), now, window) {
            return UserGate::Wait(Duration::ZERO);
        }
        let Some(q) = st.user_failures.get_mut(&login) else {
            return UserGate::Wait(Duration::ZERO);
        };
        expire(q, now, window);
        if (q.len() as u32) < limit {
            st.user_next.remove(&login);
            return UserGate::Wait(Duration::ZERO);
        }
        let slot = st.user_next.get(&login).copied().unwrap_or(0).max(now);
        let wait = slot - now;
        if wait > MAX_USER_WAIT.as_millis() as u64 {
            return UserGate::Refuse;
        }
        st.user_next.insert(login, slot + interval);
        UserGate::Wait(Duration::from_millis(wait + interval))
    }

    /// How long an attempt for `user` that took the next slot of the
    /// ration would wait now (zero when the user is not rationed).
    pub fn user_queue(&self, user: &str) -> Duration {
        let now = self.clock.now_ms();
        let st = self.lock();
        let next = st.user_next.get(&user.to_lowercase()).copied();
        Duration::from_millis(next.map_or(0, |n| n.saturating_sub(now)))
    }
}

/// Whether `login` succeeded from the address group `key` in the window.
fn known(st: &State, login: &str, key: IpAddr, now: u64, window: u64) -> bool {
    st.user_successes
        .get(&(login.to_owned(), key))
        .is_some_and(|t| now.saturating_sub(*t) < window)
}

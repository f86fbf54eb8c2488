// SPDX-License-Identifier: AGPL-3.0-only
//! RFC 2449 §6.8 LOGIN-DELAY: the least time between two logins of a user
//! (the server's, or the user's own from the user database). Kept across
//! reloads, and timed on the injected [`Clock`] like the guard's windows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Clock;
use crate::protocol::{Reply, RespCode};

/// Users remembered at most, before those whose delay ran out are dropped.
const TIDY_ABOVE: usize = 10_000;

pub struct LoginDelay {
    /// When each user last logged in (ms), and the delay that applied.
    last: Mutex<HashMap<String, (u64, Duration)>>,
    clock: Arc<dyn Clock>,
}

impl LoginDelay {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        LoginDelay {
            last: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// `Err(-ERR [LOGIN-DELAY])` if the user logged in less than `delay`
    /// ago.
    pub fn check(&self, user: &str, delay: Duration) -> Result<(), Reply> {
        if delay.is_zero() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(user) {
            Some((t, _)) if now.saturating_sub(*t) < delay.as_millis() as u64 => {
                Err(Reply::err_code(
                    RespCode::LoginDelay,
                    format!("Wait {} seconds between logins", delay.as_secs()),
                ))
            }
            _ => Ok(()),
        }
    }

    pub fn record(&self, user: &str, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let now = self.clock.now_ms();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > TIDY_ABOVE {
            last.retain(|_, (t, d)| now.saturating_sub(*t) < d.as_millis() as u64);
        }
        last.insert(user.to_owned(), (now, delay));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::ManualClock;

    #[test]
    fn a_second_login_waits_out_the_delay_on_the_clock() {
        let clock = Arc::new(ManualClock::new());
        let delays = LoginDelay::new(clock.clone());
        let minute = Duration::from_secs(60);
        assert!(delays.check("alice", minute).is_ok());
        delays.record("alice", minute);
        let refused = delays.check("alice", minute).unwrap_err();
        let mut wire = Vec::new();
        refused.encode(&mut wire);
        assert_eq!(
            wire,
            b"-ERR [LOGIN-DELAY] Wait 60 seconds between logins\r\n"
        );
        assert!(delays.check("bob", minute).is_ok(), "per user");
        assert!(delays.check("alice", Duration::ZERO).is_ok());
        clock.advance(Duration::from_secs(59));
        assert!(delays.check("alice", minute).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(delays.check("alice", minute).is_ok());
    }
}

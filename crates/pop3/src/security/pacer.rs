// SPDX-License-Identifier: AGPL-3.0-only
//! Command pacing per session. It binds only where commands cost without
//! serving mail: every command before login, and failing commands after
//! it. A client that downloads and deletes a large mailbox is never
//! slowed; a flood is slowed by delays, not cut off (scoring does that).
//!
//! The pace is a token bucket of `max_commands_per_minute`, holding ten
//! seconds' worth (at least 10), plus `min_command_delay` between two paced
//! commands.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pacer {
    rate_per_sec: f64,
    capacity: f64,
    tokens: f64,
    min_gap: Duration,
    last: Option<Instant>,
    refilled: Instant,
}

impl Pacer {
    pub fn new(per_minute: u32, min_gap: Duration) -> Self {
        let rate_per_sec = f64::from(per_minute.max(1)) / 60.0;
        let capacity = (rate_per_sec * 10.0).max(10.0);
        Pacer {
            rate_per_sec,
            capacity,
            tokens: capacity,
            min_gap,
            last: None,
            refilled: Instant::now(),
        }
    }

    /// Charge one paced command at `now`; returns how long to wait before
    /// the next command is read (zero when within the pace).
    pub fn charge(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.capacity);
        self.refilled = now;
        let mut wait = Duration::ZERO;
        if let Some(last) = self.last {
            wait = self
                .min_gap
                .saturating_sub(now.saturating_duration_since(last));
        }
        self.tokens -= 1.0;
        if self.tokens < 0.0 {
            wait = wait.max(Duration::from_secs_f64(-self.tokens / self.rate_per_sec));
        }
        self.last = Some(now + wait);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_paced() {
        let t0 = Instant::now();
        let mut p = Pacer::new(60, Duration::ZERO);
        for _ in 0..10 {
            assert_eq!(p.charge(t0), Duration::ZERO);
        }
        // One token a second after the burst.
        let w = p.charge(t0);
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        // After waiting, tokens are back.
        let mut p = Pacer::new(60, Duration::ZERO);
        for _ in 0..10 {
            p.charge(t0);
        }
        assert_eq!(p.charge(t0 + Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn minimum_gap() {
        let t0 = Instant::now();
        let mut p = Pacer::new(6000, Duration::from_millis(200));
        assert_eq!(p.charge(t0), Duration::ZERO);
        assert_eq!(
            p.charge(t0 + Duration::from_millis(50)),
            Duration::from_millis(150)
        );
        assert_eq!(p.charge(t0 + Duration::from_millis(500)), Duration::ZERO);
    }
}

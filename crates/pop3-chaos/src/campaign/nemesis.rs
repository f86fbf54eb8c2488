// SPDX-License-Identifier: AGPL-3.0-only
//! The nemesis: one fault at a time, chosen and timed by the seed, each
//! healed before the next.

use std::path::Path;
use std::time::Duration;

use super::cluster::{Cluster, LEASE_TTL, NODES};
use pop3_chaos::proxy::Fault;
use pop3_testkit::Redis;

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same fault schedule.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, spread: u64) -> Duration {
        Duration::from_millis(from + self.below(spread))
    }
}

/// Wait a moment, inject one fault, heal it; its name.
pub fn strike(c: &Cluster, rng: &mut Rng, pop3d: &Path) -> &'static str {
    std::thread::sleep(rng.millis(500, 1500));
    let node = &c.nodes[rng.below(NODES as u64) as usize];
    match rng.below(8) {
        0 => {
            node.stop("KILL");
            node.start(pop3d);
            "kill -9 and restart"
        }
        1 => {
            node.signal("STOP");
            std::thread::sleep(LEASE_TTL + Duration::from_secs(2));
            node.signal("CONT");
            "SIGSTOP past the lease"
        }
        2 => {
            node.stop("TERM");
            node.start(pop3d);
            "SIGTERM and restart"
        }
        3 => {
            let immediate = rng.below(2) == 0;
            c.pg.pg_ctl_stop_mode(if immediate { "immediate" } else { "fast" });
            std::thread::sleep(rng.millis(0, 1500));
            c.pg.pg_ctl_start();
            if immediate {
                "PostgreSQL stopped at once (immediate) and restarted"
            } else {
                "PostgreSQL stopped cleanly (fast) and restarted"
            }
        }
        4 => {
            let gap = rng.millis(0, 1500);
            let mut redis = c.redis.lock().unwrap();
            redis.kill();
            std::thread::sleep(gap);
            *redis = Redis::start(redis.port);
            "Redis killed and restarted"
        }
        5 => {
            node.proxy.set(Fault::Blackhole);
            std::thread::sleep(rng.millis(500, 3000));
            node.proxy.set(Fault::Pass);
            "database traffic blackholed"
        }
        6 => {
            node.proxy.set(Fault::Reset);
            std::thread::sleep(rng.millis(200, 1000));
            node.proxy.set(Fault::Pass);
            "database connections reset"
        }
        _ => {
            node.proxy.set(Fault::Delay(rng.millis(50, 500)));
            std::thread::sleep(rng.millis(500, 3000));
            node.proxy.set(Fault::Pass);
            "database traffic delayed"
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let draw = |seed| {
            let mut r = super::Rng(seed);
            (0..20).map(|_| r.below(8)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Connection admission before the greeting: at most
//! `max_concurrent_sessions` in all and `max_connections_per_ip` per
//! address. A slot is an RAII guard, so it is returned however the session
//! ends: QUIT, error, timeout, TLS failure or a panic in its task.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, u32>,
}

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    max_total: Arc<AtomicUsize>,
    max_per_ip: Arc<AtomicU32>,
    counts: Arc<Mutex<Counts>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManySessions,
    TooManyFromAddress,
}

/// One admitted connection.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: u32) -> Self {
        ConnectionLimits {
            max_total: Arc::new(AtomicUsize::new(max_total)),
            max_per_ip: Arc::new(AtomicU32::new(max_per_ip)),
            counts: Arc::new(Mutex::new(Counts {
                total: 0,
                per_ip: HashMap::new(),
            })),
        }
    }

    /// New maxima (a reload); sessions already admitted stay.
    pub fn set_maxima(&self, max_total: usize, max_per_ip: u32) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let max_total = self.max_total.load(Ordering::Relaxed);
        let max_per_ip = self.max_per_ip.load(Ordering::Relaxed);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= max_total {
            return Err(Refusal::TooManySessions);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Sessions admitted and not yet ended.
    pub fn active(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub fn active_from(&self, ip: IpAddr) -> u32 {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.per_ip.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limits_and_returns_slots() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = l.admit(a).unwrap();
        let _s2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refusal::TooManyFromAddress);
        let _s3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), Refusal::TooManySessions);
        drop(s1);
        assert_eq!(l.active(), 2);
        let _s4 = l.admit(a).unwrap();
        assert_eq!(l.active_from(a), 2);
    }

    #[test]
    fn slot_is_returned_on_panic() {
        let l = ConnectionLimits::new(1, 1);
        let ip: IpAddr = "::1".parse().unwrap();
        let l2 = l.clone();
        let r = std::thread::spawn(move || {
            let _slot = l2.admit(ip).unwrap();
            panic!("session task died");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(l.active(), 0);
        assert!(l.admit(ip).is_ok());
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! One campaign: the cluster up, a deliverer and four clients at work
//! while the nemesis strikes, then the recovery check and a last look at
//! every mailbox.

pub mod cli;
mod clients;
mod cluster;
mod nemesis;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clients::{Behaviour, Log, deliver, recovers, session};
use cluster::{Cluster, LEASE_TTL, NODES, USERS};
use nemesis::{Rng, strike};
use pop3_chaos::history::Event;

/// What a campaign recorded, and the faults it injected by kind.
pub struct Outcome {
    pub events: Vec<Event>,
    pub faults: BTreeMap<&'static str, u64>,
}

const CLIENTS: u64 = 4;

/// After a refused delivery or login (a node down, the database away), a
/// pause before the next try, so that a dead node is not hammered.
const BACKOFF: Duration = Duration::from_millis(50);

pub fn run(args: &cli::Args) -> Outcome {
    let cluster = Cluster::start(&args.pop3d);
    let log = Log::new();
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + args.duration;
    let mut faults = BTreeMap::new();
    let user = |rng: &mut Rng| format!("u{}", rng.below(USERS as u64));
    std::thread::scope(|scope| {
        let (log, cluster, stop) = (&log, &cluster, &stop);
        scope.spawn(move || {
            let mut rng = Rng(args.seed ^ 0xd1);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let node = rng.below(NODES as u64) as usize;
                let to = user(&mut rng);
                if !deliver(log, node, cluster.nodes[node].lmtp, &to, &format!("m{n}")) {
                    std::thread::sleep(BACKOFF);
                }
                // An MTA's pace, so that sessions (which read everything)
                // keep the mailboxes from growing without bound.
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                n += 1;
            }
        });
        for w in 0..CLIENTS {
            scope.spawn(move || {
                let mut rng = Rng(args.seed ^ (0xc0 + w));
                while !stop.load(Ordering::SeqCst) {
                    let node = rng.below(NODES as u64) as usize;
                    let who = user(&mut rng);
                    let how = Behaviour {
                        deletes: true,
                        lingers: true,
                        stalls: rng.below(20) == 0,
                        quits: rng.below(5) != 0,
                    };
                    if !session(log, node, cluster.nodes[node].pop3, &who, &mut rng, how) {
                        std::thread::sleep(BACKOFF);
                    }
                }
            });
        }
        let mut rng = Rng(args.seed);
        while Instant::now() < deadline {
            *faults
                .entry(strike(cluster, &mut rng, &args.pop3d))
                .or_default() += 1;
        }
        stop.store(true, Ordering::SeqCst);
    });
    cluster.heal();
    for (i, n) in cluster.nodes.iter().enumerate() {
        for u in 0..USERS {
            let user = format!("u{u}");
            let ok = recovers(&log, n.pop3, &user, LEASE_TTL + Duration::from_secs(10));
            log.push(Event::Recovery { user, node: i, ok });
        }
    }
    let mut rng = Rng(args.seed ^ 0xf1);
    for u in 0..USERS {
        let pop3 = cluster.nodes[0].pop3;
        session(&log, 0, pop3, &format!("u{u}"), &mut rng, Behaviour::LOOK);
    }
    Outcome {
        events: log.events(),
        faults,
    }
}

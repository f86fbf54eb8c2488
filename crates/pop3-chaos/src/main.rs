// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3-chaos`: the randomized fault campaign (docs/testing.md). On
//! loopback it starts PostgreSQL, Redis and three `pop3d` nodes, each
//! reaching the database through its own fault proxy; a deliverer and POP3
//! clients work against random nodes while a nemesis, driven by the seed,
//! injects one fault at a time. Every client operation goes into a history
//! file; the checker reads it. Exit 0 without violations, 1 with; the last
//! line of output is `violations: N`.
//!
//! `cargo run --release -p pop3-chaos -- --seed N --duration 120s`, with
//! `pop3d` built beside it (`cargo build --release -p pop3d`) or named by
//! `--pop3d PATH`. `--broken-epoch` builds and runs a pop3d whose QUIT
//! deletes without checking its lease, which the checker must catch.
//! `--check FILE` runs the checker alone on a recorded history.

mod campaign;

use std::process::ExitCode;

use pop3_chaos::checker::{Violation, check};
use pop3_chaos::history::{self, Event};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path] = argv.as_slice()
        && flag == "--check"
    {
        return check_file(path);
    }
    let args = match campaign::cli::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pop3-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    println!("seed {}", args.seed);
    let outcome = campaign::run(&args);
    let events = outcome.events;
    let text: String = events.iter().map(|e| history::line(e) + "\n").collect();
    if let Err(e) = std::fs::write(&args.history, text) {
        eprintln!("pop3-chaos: {}: {e}", args.history.display());
        return ExitCode::from(2);
    }
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    println!(
        "operations: {} deliveries ({} acknowledged), {} sessions ({} quit +OK)",
        count(|e| matches!(e, Event::Deliver { .. })),
        count(|e| matches!(
            e,
            Event::Deliver {
                acknowledged: true,
                ..
            }
        )),
        count(|e| matches!(e, Event::Session { .. })),
        count(|e| matches!(
            e,
            Event::Session {
                quit_ok: Some(_),
                ..
            }
        )),
    );
    for (kind, n) in &outcome.faults {
        println!("fault: {kind}: {n}");
    }
    println!("history: {}", args.history.display());
    report(&check(&events))
}

/// `--check FILE`: the checker alone, on a history recorded before.
fn check_file(path: &str) -> ExitCode {
    let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
    match read.and_then(|t| history::parse(&t)) {
        Ok(events) => report(&check(&events)),
        Err(e) => {
            eprintln!("pop3-chaos: {path}: {e}");
            ExitCode::from(2)
        }
    }
}

fn report(violations: &[Violation]) -> ExitCode {
    for v in violations {
        println!(
            "violation: {:?}: {} (history lines {:?})",
            v.kind, v.what, v.lines
        );
    }
    println!("violations: {}", violations.len());
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! What an operator does to a running cluster in its first week, on
//! servers the tests start: a schema upgrade under running nodes (a
//! compatible migration keeps them serving; an incompatible one says the
//! binary is too old), and two processes given one node name.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `s`'s configuration with a metrics listener; its port.
fn with_metrics(s: &Setup) -> u16 {
    let port = free_port();
    let text = read(&s.config) + &format!("\n[metrics]\nbind = \"127.0.0.1:{port}\"\n");
    std::fs::write(&s.config, text).unwrap();
    port
}

fn db_status(s: &Setup) -> (i32, String, String) {
    run(pop3d().args(["db", "status", "--config"]).arg(&s.config))
}

#[test]
fn a_compatible_migration_keeps_older_nodes_serving_and_an_incompatible_one_says_why() {
    let s = Setup::on(Backend::Postgres, &[b"Subject: 1\r\n\r\none\r\n"]);
    let metrics = with_metrics(&s);
    let _node = s.start();
    wait_for_port(metrics);
    assert!(http(metrics, "/readyz").starts_with("HTTP/1.1 200"));
    // A newer release migrates, declaring its migration compatible.
    let next = pop3::db::migrate::latest() + 1;
    s.sql(&format!(
        "CREATE TABLE future_feature (x int); \
         INSERT INTO pop3d_schema (version, name, compatible) VALUES ({next}, 'future feature', true)"
    ));
    let started = Instant::now();
    loop {
        let ready = http(metrics, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        if ready.contains(&format!("note: database schema {next} is newer than this pop3d")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{ready}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = Client::login(s.plain, "alice", "secret");
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (code, out, err) = db_status(&s);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{next:04} future feature")) && out.contains("compatible"),
        "{out}"
    );
    // Then one that older binaries cannot run on.
    let after = next + 1;
    s.sql(&format!(
        "INSERT INTO pop3d_schema (version, name, compatible) VALUES ({after}, 'breaking change', false)"
    ));
    let (code, out, _) = db_status(&s);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("this pop3d is older than the database"), "{out}");
    assert!(out.contains(&format!("knows schema version {after}")), "{out}");
    let (twin, _) = s.twin_config("older-node.toml");
    let (code, _, err) = run(pop3d().args(["serve", "--config"]).arg(&twin));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("this pop3d is older than the database")
            && err.contains(&format!("migration {after} (breaking change)"))
            && !err.contains("db migrate"),
        "{err}"
    );
    // The running node says the same instead of serving on it.
    let started = Instant::now();
    loop {
        let ready = http(metrics, "/readyz");
        if ready.starts_with("HTTP/1.1 503") {
            assert!(ready.contains("older than the database"), "{ready}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{ready}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

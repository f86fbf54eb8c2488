// SPDX-License-Identifier: AGPL-3.0-only
//! What an operator does to a running cluster in its first week, on
//! servers the tests start: a schema upgrade under running nodes (a
//! compatible migration keeps them serving; an incompatible one says the
//! binary is too old), and two processes given one node name.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

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
    let note = format!("note: database schema {next} is newer than this pop3d");
    wait_until(Duration::from_secs(5), &note, || {
        let ready = http(metrics, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        ready.contains(&note)
    });
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
    assert!(
        out.contains("this pop3d is older than the database"),
        "{out}"
    );
    assert!(
        out.contains(&format!("knows schema version {after}")),
        "{out}"
    );
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
    let ready = wait_for(Duration::from_secs(5), "/readyz failing", || {
        Some(http(metrics, "/readyz")).filter(|r| r.starts_with("HTTP/1.1 503"))
    });
    assert!(ready.contains("older than the database"), "{ready}");
}

/// `s`'s configuration (and a twin on other ports) both named `name`.
fn same_name(s: &Setup, name: &str) -> (std::path::PathBuf, u16) {
    let (twin, port) = s.twin_config("twin.toml");
    for path in [&s.config, &twin] {
        let text = read(path).replace("[server]\n", &format!("[server]\nnode_name = \"{name}\"\n"));
        std::fs::write(path, text).unwrap();
    }
    (twin, port)
}

#[test]
fn a_second_process_under_a_node_name_in_use_waits_and_takes_nothing() {
    let s = Setup::on(
        Backend::Postgres,
        &[b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"],
    );
    let (twin, twin_port) = same_name(&s, "pop1");
    let mut a = s.start();
    let mut c = Client::login(s.plain, "alice", "secret");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    // B, by mistake under A's name on the same machine: it waits for A to
    // end instead of serving (and instead of freeing A's leases).
    let b = pop3d()
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&twin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut b = Running { child: b };
    let mut log = std::io::BufReader::new(b.child.stderr.take().unwrap());
    let said = wait_for(Duration::from_secs(10), "B says why it waits", || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut log, &mut line).ok()?;
        Some(line).filter(|l| l.contains("is in use by another running pop3d"))
    });
    assert!(said.contains(&format!("run {}.", a.child.id())), "{said}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", twin_port)).is_err());
    // A's lease was left alone: its QUIT deletes.
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(s.count(), 1);
    // An administration command on the same machine takes its own name.
    let (code, out, err) = run(pop3d()
        .args(["restore", "--user", "alice", "--config"])
        .arg(&s.config));
    assert_eq!(code, 0, "{out}{err}");
    // A ends (here killed): B takes the name and serves at once.
    a.crash();
    wait_for_port(twin_port);
    let mut c = Client::login(twin_port, "alice", "secret");
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    b.crash();
    // The name renewed moments ago from another machine: no waiting for
    // a process this one cannot see, a clear refusal.
    s.sql("UPDATE pop3d_nodes SET host = 'pop-b.example', run = '4242.99', heartbeat = now() WHERE name = 'pop1'");
    let (code, _, err) = run(pop3d().args(["serve", "--config"]).arg(&twin));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run 4242.99 on host pop-b.example"), "{err}");
}

#[test]
fn a_new_database_password_takes_effect_at_sighup() {
    // PostgreSQL asking the node's role for a password (scram-sha-256).
    let pg = Postgres::private();
    let db = pg.database();
    let hba = pg.dir.join("data/pg_hba.conf");
    let rules = read(&hba);
    std::fs::write(
        &hba,
        format!("host all node 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    pg.psql(
        &db,
        "CREATE ROLE node LOGIN PASSWORD 'first-pw'; \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO node; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO node; \
         SELECT pg_reload_conf();",
    );
    let s = Setup::on(Backend::Postgres, &[]);
    let shared = Postgres::shared().url(s.database.as_deref().unwrap());
    let node_url = format!("postgres://node@127.0.0.1:{}/{db}", pg.port);
    let text = read(&s.config).replace(
        &format!("url = \"{shared}\"\n"),
        &format!("url = \"{node_url}\"\npassword_file = \"db.pw\"\n"),
    );
    std::fs::write(&s.config, text).unwrap();
    std::fs::write(s.path("db.pw"), "first-pw\n").unwrap();
    let metrics = with_metrics(&s);
    let node = s.start();
    wait_for_port(metrics);
    wait_for(Duration::from_secs(10), "ready", || {
        Some(http(metrics, "/readyz")).filter(|r| r.starts_with("HTTP/1.1 200"))
    });
    let mut before = Client::login(s.plain, "alice", "secret");
    // Rotation: the role's password, the file, SIGHUP, and PostgreSQL
    // dropping every connection the node has.
    pg.psql(&db, "ALTER ROLE node PASSWORD 'second-pw'");
    std::fs::write(s.path("db.pw"), "second-pw\n").unwrap();
    signal(node.child.id(), "HUP");
    wait_for(Duration::from_secs(10), "the reload", || {
        Some(http(metrics, "/metrics"))
            .filter(|m| m.contains("pop3_config_reloads_total{result=\"ok\"} 1"))
    });
    pg.psql(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'node'",
    );
    wait_for(Duration::from_secs(10), "ready again", || {
        Some(http(metrics, "/readyz")).filter(|r| r.starts_with("HTTP/1.1 200"))
    });
    // The session from before goes on; new ones log in.
    assert!(before.cmd("STAT").starts_with("+OK"));
    assert!(before.cmd("QUIT").starts_with("+OK"));
    let mut after = Client::login(s.plain, "alice", "secret");
    assert!(after.cmd("QUIT").starts_with("+OK"));
}

/// UIDL of each message in the listing, by its subject.
fn uidls_by_subject(port: u16) -> Vec<(String, String)> {
    let (uidl, _, bodies) = listing(port);
    uidl.lines()
        .filter(|l| *l != ".")
        .zip(bodies)
        .map(|(line, body)| {
            let text = String::from_utf8_lossy(&body).into_owned();
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap()
                .to_owned();
            (subject, line.split_once(' ').unwrap().1.to_owned())
        })
        .collect()
}

/// Deliver M1, back up, deliver M2 (a client sees its UIDL), restore the
/// backup, run `db after-restore`, deliver M3: M3 never gets M2's UIDL.
fn after_a_restore_no_uidl_comes_back(backend: Backend) {
    let s = Setup::on(backend, &[]);
    let _node = s.start();
    assert_eq!(s.deliver(b"Subject: M1\r\n\r\none\r\n").0, 0);
    let m1 = uidls_by_subject(s.plain);
    let backup = s.path("backup");
    match backend {
        Backend::Postgres => {
            let db = s.database.as_deref().unwrap();
            let port = Postgres::shared().port.to_string();
            let dump = Command::new("pg_dump")
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "pop3d", "-Fc", "-f"])
                .arg(&backup)
                .arg(db)
                .status()
                .unwrap();
            assert!(dump.success());
        }
        Backend::Maildir => {
            let copy = Command::new("cp")
                .args(["-a"])
                .arg(s.path("mail"))
                .arg(&backup)
                .status();
            assert!(copy.unwrap().success());
        }
    }
    assert_eq!(s.deliver(b"Subject: M2\r\n\r\ntwo\r\n").0, 0);
    let seen = uidls_by_subject(s.plain);
    let m2 = seen.iter().find(|(s, _)| s == "M2").unwrap().1.clone();
    match backend {
        Backend::Postgres => {
            let db = s.database.as_deref().unwrap();
            let port = Postgres::shared().port.to_string();
            let restore = Command::new("pg_restore")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "pop3d",
                    "--clean",
                    "--if-exists",
                    "-d",
                    db,
                ])
                .arg(&backup)
                .status()
                .unwrap();
            assert!(restore.success());
        }
        Backend::Maildir => {
            std::fs::remove_dir_all(s.path("mail")).unwrap();
            std::fs::rename(&backup, s.path("mail")).unwrap();
        }
    }
    assert_eq!(uidls_by_subject(s.plain), m1, "the backup as it was");
    let (code, out, err) = run(pop3d()
        .args(["db", "after-restore", "--config"])
        .arg(&s.config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("renewed the UID validity of 1 mailboxes"),
        "{out}"
    );
    assert_eq!(s.deliver(b"Subject: M3\r\n\r\nthree\r\n").0, 0);
    let after = uidls_by_subject(s.plain);
    let m3 = &after.iter().find(|(s, _)| s == "M3").unwrap().1;
    assert_ne!(
        *m3, m2,
        "M3 must not get the UIDL of M2, which a client saw"
    );
    assert_eq!(after[0], m1[0], "M1 keeps its UIDL");
}

#[test]
fn after_a_database_restore_no_uidl_comes_back() {
    after_a_restore_no_uidl_comes_back(Backend::Postgres);
}

#[test]
fn after_a_maildir_restore_no_uidl_comes_back() {
    after_a_restore_no_uidl_comes_back(Backend::Maildir);
}

#[test]
fn a_lease_is_listed_with_its_node_and_broken_with_a_new_epoch() {
    let s = Setup::on(
        Backend::Postgres,
        &[b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"],
    );
    let (twin, b_port) = s.twin_config("node-b.toml");
    for (path, name) in [(&s.config, "node-a"), (&twin, "node-b")] {
        let text = read(path).replace("[server]\n", &format!("[server]\nnode_name = \"{name}\"\n"));
        std::fs::write(path, text).unwrap();
    }
    let _a = s.start();
    let b_log = s.path("node-b.log");
    let b = pop3d()
        .args(["serve", "--config"])
        .arg(&twin)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&b_log).unwrap())
        .spawn()
        .unwrap();
    let _b = Running { child: b };
    wait_for_port(b_port);
    let mut on_a = Client::login(s.plain, "alice", "secret");
    assert!(on_a.cmd("DELE 1").starts_with("+OK"));
    // B refuses, and its log names the holder.
    let mut c = Client::connect(b_port);
    c.cmd("USER alice");
    assert!(c.cmd("PASS secret").starts_with("-ERR [IN-USE]"));
    let said = wait_for(Duration::from_secs(5), "the [IN-USE] log line", || {
        Some(read(&b_log)).filter(|l| l.contains("holder=node-a"))
    });
    assert!(said.contains("maildrop in use"), "{said}");
    let (code, out, err) = run(pop3d().args(["lease", "list", "--config"]).arg(&s.config));
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("alice\t")).expect(&out);
    assert!(row.contains("\tnode-a\t"), "{row}");
    let (code, out, err) = run(pop3d()
        .args(["lease", "break", "--user", "alice", "--config"])
        .arg(&s.config));
    assert_eq!(code, 0, "{out}{err}");
    // B gets it at once; A's session can no longer delete.
    let mut on_b = Client::login(b_port, "alice", "secret");
    assert!(on_b.cmd("STAT").starts_with("+OK 2 "));
    assert!(on_b.cmd("QUIT").starts_with("+OK"));
    assert!(on_a.cmd("QUIT").starts_with("-ERR"), "a fenced QUIT");
    assert_eq!(
        s.count(),
        2,
        "nothing deleted by the broken lease's session"
    );
    let (code, ..) = run(pop3d()
        .args(["lease", "break", "--user", "alice", "--config"])
        .arg(&s.config));
    assert_eq!(code, 1, "no lease in force any more");
}

#[test]
fn the_metrics_and_security_log_an_operator_relies_on() {
    let pg = Postgres::private();
    let db = pg.database();
    let s = Setup::on(Backend::Postgres, &[]);
    let shared = Postgres::shared().url(s.database.as_deref().unwrap());
    let lmtp = free_port();
    let text = read(&s.config)
        .replace(
            &format!("url = \"{shared}\"\n"),
            &format!("url = \"{}\"\nconnect_timeout = \"1s\"\n", pg.url(&db)),
        )
        .replace("[auth]\n", "[auth]\nbackend = \"postgres\"\n")
        .replace("[server]\n", "[server]\nnode_name = \"pop-test\"\n")
        .replace(
            "enable_security_logging = false",
            "enable_security_logging = true\nsecurity_log_file = \"security.log\"",
        )
        + &format!("\n[[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n");
    std::fs::write(&s.config, &text).unwrap();
    let metrics = with_metrics(&s);
    let node = s.start();
    wait_for_port(metrics);
    let scraped = http(metrics, "/metrics");
    assert!(
        scraped.contains(&format!(
            "pop3_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{scraped}"
    );
    let expiry: i64 = scraped
        .lines()
        .find_map(|l| l.strip_prefix("pop3_tls_certificate_expiry_seconds "))
        .expect("the certificate's expiry")
        .parse()
        .unwrap();
    assert!(expiry > 86_400 * 365, "{expiry}");
    for result in [
        "delivered",
        "unknown_user",
        "userdb_unavailable",
        "temp_failure",
        "storage_full",
    ] {
        assert!(
            scraped.contains(&format!(
                "pop3_lmtp_deliveries_total{{result=\"{result}\"}} 0"
            )),
            "{result}: {scraped}"
        );
    }
    // Security events name the node; a rotated log is followed by a new one.
    let fail = || {
        let mut c = Client::connect(s.plain);
        c.cmd("USER nobody");
        assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    };
    fail();
    let first = wait_for(Duration::from_secs(5), "the first event", || {
        Some(read(&s.path("security.log"))).filter(|l| l.contains("auth_failed"))
    });
    assert!(first.contains("\"node\":\"pop-test\""), "{first}");
    std::fs::rename(s.path("security.log"), s.path("security.log.1")).unwrap();
    signal(node.child.id(), "HUP");
    wait_for(Duration::from_secs(10), "the reload", || {
        Some(http(metrics, "/metrics"))
            .filter(|m| m.contains("pop3_config_reloads_total{result=\"ok\"} 1"))
    });
    fail();
    wait_for(Duration::from_secs(5), "an event in the new file", || {
        std::fs::read_to_string(s.path("security.log"))
            .ok()
            .filter(|l| l.contains("auth_failed"))
    });
    assert_eq!(
        read(&s.path("security.log.1")).lines().count(),
        first.lines().count()
    );
    // A refused SIGHUP (a file that reads, but whose certificate does
    // not) counts once.
    std::fs::write(
        &s.config,
        text.replace("cert = \"cert.pem\"", "cert = \"nope.pem\""),
    )
    .unwrap();
    signal(node.child.id(), "HUP");
    wait_for(Duration::from_secs(10), "the refused reload", || {
        Some(http(metrics, "/metrics"))
            .filter(|m| m.contains("pop3_config_reloads_total{result=\"failed\"}"))
    });
    // A good reload after it: once that is counted, the refused one has
    // been handled whole.
    std::fs::write(&s.config, &text).unwrap();
    signal(node.child.id(), "HUP");
    let scraped = wait_for(Duration::from_secs(10), "the next reload", || {
        Some(http(metrics, "/metrics"))
            .filter(|m| m.contains("pop3_config_reloads_total{result=\"ok\"} 2"))
    });
    assert!(
        scraped.contains("pop3_config_reloads_total{result=\"failed\"} 1\n"),
        "{scraped}"
    );
    // The user database away: 451 at RCPT, counted.
    pg.pg_ctl_stop();
    let (mut c, _) = Lmtp::connect(lmtp);
    c.cmd("LHLO test");
    c.cmd("MAIL FROM:<a@b>");
    assert!(c.cmd("RCPT TO:<alice>").starts_with("451 4.3.0"));
    assert!(
        http(metrics, "/metrics")
            .contains("pop3_lmtp_deliveries_total{result=\"userdb_unavailable\"} 1\n")
    );
}

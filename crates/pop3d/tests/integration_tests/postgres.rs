// SPDX-License-Identifier: AGPL-3.0-only
//! The daemon on PostgreSQL as separate processes: two nodes racing for
//! one maildrop, kill -9 and SIGSTOP of a lease holder, three delivering
//! processes, `migrate-maildir`, the admin commands, and the database
//! away when `serve` starts. Real clients over this backend are in
//! `real_clients::postgres`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Give the configuration at `path` a node name and a lease TTL.
fn as_node(path: &Path, name: &str, ttl: &str) {
    let text = read(path)
        .replace("[server]\n", &format!("[server]\nnode_name = \"{name}\"\n"))
        .replace(
            "[storage]\n",
            &format!("[storage]\nlease_ttl = \"{ttl}\"\n"),
        );
    std::fs::write(path, text).unwrap();
}

/// Two nodes (A on `s.config`, B on a twin) with the given lease TTL.
fn two_nodes(s: &Setup, ttl: &str) -> (PathBuf, u16) {
    let (twin, port) = s.twin_config("node-b.toml");
    as_node(&s.config, "node-a", ttl);
    as_node(&twin, "node-b", ttl);
    (twin, port)
}

fn try_login(port: u16) -> (Client, String) {
    let mut c = Client::connect(port);
    c.cmd("USER alice");
    let r = c.cmd("PASS secret");
    (c, r)
}

const MESSAGES: [&[u8]; 3] = [
    b"Subject: 1\n\none\n",
    b"Subject: 2\n\ntwo\n",
    b"Subject: 3\n\nthree\n",
];

#[test]
fn two_nodes_never_both_hold_a_maildrop() {
    let s = Setup::on(Backend::Postgres, &MESSAGES[..1]);
    let text = read(&s.config).replace(
        "[security]\n",
        "[security]\ntrusted_networks = [\"127.0.0.0/8\"]\n",
    );
    std::fs::write(&s.config, text).unwrap();
    let (twin, twin_port) = two_nodes(&s, "30s");
    let _a = s.start_with(&s.config, s.plain);
    let _b = s.start_with(&twin, twin_port);
    one_winner_per_round([s.plain, twin_port], 1000);
    assert_eq!(s.count(), 1);
}

#[test]
fn kill_9_deletes_nothing_and_the_lease_lapses_or_the_node_restarts() {
    let s = Setup::on(Backend::Postgres, &MESSAGES);
    let (twin, twin_port) = two_nodes(&s, "3s");
    let mut a = s.start_with(&s.config, s.plain);
    let _b = s.start_with(&twin, twin_port);
    let mut c = Client::login(s.plain, "alice", "secret");
    c.cmd("DELE 1");
    c.cmd("DELE 2");
    c.multiline("RETR 3");
    a.crash();
    assert_eq!(s.count(), 3, "kill -9 after DELE removes nothing");
    // B waits for the lease to lapse (about the TTL), then serves.
    assert!(try_login(twin_port).1.starts_with("-ERR [IN-USE]"));
    let mut served = wait_for(Duration::from_secs(10), "the lease lapses", || {
        let (c, r) = try_login(twin_port);
        assert!(
            r.starts_with("+OK") || r.starts_with("-ERR [IN-USE]"),
            "{r}"
        );
        r.starts_with("+OK").then_some(c)
    });
    assert_eq!(served.cmd("STAT"), "+OK 3 59\r\n");
    assert!(served.cmd("QUIT").starts_with("+OK"));
    // Node A again: a session, then kill -9; its lease is still live for
    // B, but A restarted frees its previous run's leases at once.
    let mut a = s.start_with(&s.config, s.plain);
    let mut c = Client::login(s.plain, "alice", "secret");
    c.cmd("DELE 3");
    a.crash();
    assert!(try_login(twin_port).1.starts_with("-ERR [IN-USE]"));
    let _a = s.start_with(&s.config, s.plain);
    let (mut c, r) = try_login(s.plain);
    assert!(r.starts_with("+OK"), "restarted node: {r}");
    assert_eq!(c.cmd("STAT"), "+OK 3 59\r\n");
}

#[test]
fn a_paused_holder_is_fenced_out_after_takeover() {
    let s = Setup::on(Backend::Postgres, &MESSAGES);
    let (twin, twin_port) = two_nodes(&s, "2s");
    let a = s.start_with(&s.config, s.plain);
    let _b = s.start_with(&twin, twin_port);
    let mut stale = Client::login(s.plain, "alice", "secret");
    stale.cmd("DELE 1");
    stale.cmd("DELE 2");
    signal(a.child.id(), "STOP");
    // Refused while the paused holder's lease runs, taken over once it
    // lapses (a 2 s TTL).
    assert!(try_login(twin_port).1.starts_with("-ERR [IN-USE]"));
    let mut fresh = wait_for(Duration::from_secs(10), "takeover after the TTL", || {
        let (c, r) = try_login(twin_port);
        assert!(
            r.starts_with("+OK") || r.starts_with("-ERR [IN-USE]"),
            "{r}"
        );
        r.starts_with("+OK").then_some(c)
    });
    fresh.cmd("DELE 3");
    assert!(fresh.cmd("QUIT").starts_with("+OK"));
    signal(a.child.id(), "CONT");
    assert_eq!(
        stale.cmd("QUIT"),
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    assert_eq!(s.count(), 2, "only the new holder's deletion happened");
    assert_eq!(
        s.sql("SELECT string_agg(uid::text, ',' ORDER BY uid) FROM messages")
            .trim(),
        "1,2"
    );
}

#[test]
fn three_processes_deliver_a_thousand_messages_with_uids_1_to_1000() {
    let s = Setup::on(Backend::Postgres, &[]);
    std::thread::scope(|scope| {
        for worker in 0..3 {
            let s = &s;
            scope.spawn(move || {
                for n in (worker..1000).step_by(3) {
                    s.put(format!("Subject: {n}\n\nbody {n}\n").as_bytes());
                }
            });
        }
    });
    assert_eq!(
        s.sql(
            "SELECT count(*), count(DISTINCT uid), min(uid), max(uid), count(DISTINCT uidl) \
             FROM messages"
        )
        .trim(),
        "1000|1000|1|1000|1000"
    );
    assert_eq!(
        s.sql("SELECT next_uid, msg_count FROM mailboxes").trim(),
        "1001|1000"
    );
}

/// The UIDL listing `pop3d` on `port` gives alice or bob.
fn uidls(port: u16, user: &str, pass: &str) -> String {
    let mut c = Client::login(port, user, pass);
    let list = String::from_utf8(c.multiline("UIDL")).unwrap();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    list
}

#[test]
fn migrate_maildir_keeps_every_uidl_and_copies_nothing_twice() {
    // The old installation: alice's Maildir served by pop3d before, bob's
    // by Dovecot (a dovecot-uidlist with a P override and a W size).
    let old = Setup::new(&MESSAGES);
    let bob = old.path("mail/bob");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(bob.join(sub)).unwrap();
    }
    std::fs::write(bob.join("new/1700000001.M1P1.test"), MESSAGES[0]).unwrap();
    std::fs::write(bob.join("cur/1700000002.M2P1.test:2,S"), MESSAGES[1]).unwrap();
    std::fs::write(
        bob.join("dovecot-uidlist"),
        "3 V1234567890 N43 G0123\n41 :1700000001.M1P1.test\n42 P0000.custom W19 :1700000002.M2P1.test\n",
    )
    .unwrap();
    std::fs::write(bob.join("new/1700000003.M3P1.test"), MESSAGES[2]).unwrap();
    let before_alice;
    let before_bob;
    {
        let _old = old.start();
        before_alice = uidls(old.plain, "alice", "secret");
        before_bob = uidls(old.plain, "bob", "password");
    }
    // The new one: mail and users in PostgreSQL.
    let new = Setup::on(Backend::Postgres, &[]);
    let text = read(&new.config).replace(
        "[auth]\npasswd_file = \"passwd\"\n",
        "[auth]\nbackend = \"postgres\"\n",
    );
    std::fs::write(&new.config, text).unwrap();
    let migrate = |extra: &[&str]| {
        run(pop3d()
            .arg("migrate-maildir")
            .arg("--from")
            .arg(&old.config)
            .arg("--config")
            .arg(&new.config)
            .args(extra))
    };
    // Mail that arrived since bob's last login: not in any index yet.
    std::fs::write(bob.join("new/1700000004.M4P1.test"), MESSAGES[0]).unwrap();
    let tree = |dir: &std::path::Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("find . -print0 | sort -z | xargs -0 ls -ld --time-style=full-iso; find . -type f -print0 | sort -z | xargs -0 md5sum")
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let source_before = tree(&old.path("mail"));
    // A user the passwd file does not have, and the files swapped: the
    // sysexits codes say which mistake it was.
    let (code, _, err) = migrate(&["--user", "nobody"]);
    assert_eq!(code, 67, "{err}");
    let (code, _, err) = run(pop3d()
        .arg("migrate-maildir")
        .args(["--all", "--from"])
        .arg(&new.config)
        .arg("--config")
        .arg(&old.config));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--from must name a Maildir"), "{err}");
    let (code, out, err) = migrate(&["--all", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would copy 7 messages"), "{out}");
    assert_eq!(new.sql("SELECT count(*) FROM messages").trim(), "0");
    assert_eq!(
        tree(&old.path("mail")),
        source_before,
        "a dry run writes nothing"
    );
    let (code, out, err) = migrate(&["--user", "bob"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied 4 messages"), "{out}");
    let (code, out, err) = migrate(&["--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied 3 messages"), "{out}");
    assert!(out.contains("4 messages already there"), "{out}");
    assert!(out.contains("users: 1 added, 1 already there"), "{out}");
    let (code, out, err) = migrate(&["--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied 0 messages"), "{out}");
    assert_eq!(new.sql("SELECT count(*) FROM messages").trim(), "7");
    // The Maildirs are untouched.
    assert_eq!(old.maildir_count(), 3);
    let _new = new.start();
    assert_eq!(uidls(new.plain, "alice", "secret"), before_alice);
    // bob's listing from before, and the message that came since.
    let after_bob = uidls(new.plain, "bob", "password");
    assert!(
        after_bob.starts_with(before_bob.trim_end_matches(".\r\n"))
            && after_bob.lines().count() == 6,
        "{after_bob}"
    );
    assert!(before_bob.contains("0000.custom"), "{before_bob}");
}

#[test]
fn database_commands_and_user_administration() {
    let pg = Postgres::shared();
    let db = pg.empty_database();
    let s = Setup::new(&[]);
    let text = read(&s.config)
        .replace(
            "[storage]\nmaildir = \"mail/%n\"\n",
            &format!(
                "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"db.secret\"\n",
                pg.url(&db)
            ),
        )
        .replace(
            "[auth]\npasswd_file = \"passwd\"\n",
            "[auth]\nbackend = \"postgres\"\nbreached_passwords_file = \"breached.txt\"\n\
             cache_size = 100\n",
        );
    std::fs::write(&s.config, text).unwrap();
    std::fs::write(s.path("db.secret"), "hunter2-db\n").unwrap();
    // SHA-1 of "letmein" and of "password123", sorted, with counts.
    std::fs::write(
        s.path("breached.txt"),
        "B7A875FC1EA228B9061041B7CEC4BD3C52AB3CE3:99\nCBFDAC6008F9CAB4083784CBD1874F76618D2A97:2\n",
    )
    .unwrap();
    let pop3d_with = |args: &[&str], stdin: Option<&str>| {
        let mut child = pop3d()
            .args(args)
            .arg("--config")
            .arg(&s.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // An empty database: status says what to run; serve and check-config
    // refuse it.
    let (code, out, _) = pop3d_with(&["db", "status"], None);
    assert_eq!(code, 1);
    assert!(out.contains("pending: run `pop3d db migrate`"), "{out}");
    let (code, _, err) = pop3d_with(&["check-config"], None);
    assert_eq!(code, 2);
    assert!(err.contains("run `pop3d db migrate`"), "{err}");
    let (code, _, err) = pop3d_with(&["serve"], None);
    assert_eq!(code, 2);
    assert!(err.contains("schema is at version 0"), "{err}");
    let (code, out, err) = pop3d_with(&["db", "migrate"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied 0001"), "{out}");
    let (code, out, _) = pop3d_with(&["db", "migrate"], None);
    assert_eq!(code, 0);
    assert!(out.contains("up to date"), "{out}");
    let (code, out, err) = pop3d_with(&["check-config"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("schema up to date"), "{err}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
    // Users: the password from stdin only.
    let (code, _, err) = pop3d_with(&["user", "add", "Carol"], Some("first pw\n"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pop3d_with(&["user", "add", "carol"], Some("again\n"));
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let _server = s.start();
    let login = |user: &str, pass: &str| {
        let mut c = Client::connect(s.plain);
        c.cmd(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {pass}"));
        if r.starts_with("+OK") {
            c.cmd("QUIT");
        }
        r
    };
    assert!(login("carol", "first pw").starts_with("+OK"));
    let (code, ..) = pop3d_with(&["user", "passwd", "carol"], Some("second pw\n"));
    assert_eq!(code, 0);
    // The server's auth cache hears each change (NOTIFY) and forgets: a
    // login a moment after a command sees what it did.
    let soon = |user: &str, pass: &str, reply: &str| {
        let seen = poll_for(Duration::from_secs(5), || {
            login(user, pass).starts_with(reply).then_some(())
        });
        assert!(seen.is_some(), "{user}/{pass}: no {reply} within 5 s");
    };
    soon("carol", "first pw", "-ERR [AUTH]");
    assert!(login("carol", "second pw").starts_with("+OK"));
    // App passwords live in the database beside the users: every node
    // sees one made or revoked at once.
    let (code, out, err) = pop3d_with(&["app-password", "add", "--user", "Carol"], None);
    assert_eq!(code, 0, "{err}");
    let app = out.lines().last().unwrap().to_owned();
    let r = login("carol", &app);
    assert!(r.starts_with("+OK"), "{r}");
    let (_, listed, _) = pop3d_with(&["app-password", "list"], None);
    let row = listed
        .lines()
        .find(|l| l.starts_with("carol\tapp\t"))
        .unwrap_or_default();
    // (The first use is written at once, by a task of its own.)
    let used = poll_for(Duration::from_secs(5), || {
        let (_, listed, _) = pop3d_with(&["app-password", "list", "--user", "carol"], None);
        listed.contains("from 127.0.0.1").then_some(())
    });
    assert!(used.is_some() && row.contains("\tnever\tany\t"), "{listed}");
    let (code, ..) = pop3d_with(
        &[
            "app-password",
            "revoke",
            "--user",
            "carol",
            "--label",
            "app",
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(login("carol", &app).starts_with("-ERR [AUTH]"));
    // A password on the breached list is never set.
    let (code, _, err) = pop3d_with(&["user", "passwd", "carol"], Some("password123\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("list of breached passwords"), "{err}");
    let (code, _, err) = pop3d_with(&["user", "add", "dan"], Some("letmein\n"));
    assert_eq!(code, 2, "{err}");
    assert!(login("carol", "second pw").starts_with("+OK"));
    assert!(login("carol", "password123").starts_with("-ERR [AUTH]"));
    // Suspended: no logins, but mail still arrives (nothing bounces).
    pop3d_with(&["user", "disable", "carol"], None);
    soon("carol", "second pw", "-ERR [AUTH]");
    let deliver = || {
        let mut d = pop3d()
            .args(["deliver", "--user", "carol", "--config"])
            .arg(&s.config)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        d.stdin
            .take()
            .unwrap()
            .write_all(b"Subject: kept\r\n\r\nx\r\n")
            .unwrap();
        d.wait().unwrap().code()
    };
    assert_eq!(deliver(), Some(0));
    let (_, out, _) = pop3d_with(&["user", "list"], None);
    assert!(
        out.starts_with("carol\tARGON2ID\tdisabled\t1 messages"),
        "{out}"
    );
    // Closed to mail as well: deliveries refused as to an unknown user.
    pop3d_with(&["user", "disable", "--no-mail", "carol"], None);
    assert_eq!(deliver(), Some(67));
    let (_, out, _) = pop3d_with(&["user", "list"], None);
    assert!(
        out.starts_with("carol\tARGON2ID\tdisabled, no mail\t1 messages"),
        "{out}"
    );
    pop3d_with(&["user", "enable", "carol"], None);
    soon("carol", "second pw", "+OK");
    let (code, ..) = pop3d_with(&["user", "delete", "carol"], None);
    assert_eq!(code, 0);
    soon("carol", "second pw", "-ERR [AUTH]");
    let (code, _, err) = pop3d_with(&["user", "delete", "carol"], None);
    assert_eq!(code, 1);
    assert!(err.contains("no such user"), "{err}");
}

#[test]
fn serve_starts_without_the_database_and_recovers_when_it_is_back() {
    let pg = Postgres::private();
    let db = pg.database();
    let s = Setup::on(Backend::Postgres, &[]);
    let metrics = free_port();
    let shared = Postgres::shared().url(s.database.as_deref().unwrap());
    let text = read(&s.config).replace(
        &format!("url = \"{shared}\"\n"),
        &format!(
            "url = \"{}\"\nconnect_timeout = \"1s\"\n\n[metrics]\nbind = \"127.0.0.1:{metrics}\"\n",
            pg.url(&db)
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    pg.pg_ctl_stop();
    let _server = s.start_with(&s.config, s.plain);
    let readyz = || http(metrics, "/readyz");
    let down = readyz();
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    assert!(down.contains("database unavailable"), "{down}");
    let (_, r) = try_login(s.plain);
    assert_eq!(r, "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n");
    pg.pg_ctl_start();
    wait_until(Duration::from_secs(10), "ready again", || {
        readyz().starts_with("HTTP/1.1 200")
    });
    let (mut c, r) = try_login(s.plain);
    assert!(r.starts_with("+OK alice's maildrop has 0 messages"), "{r}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // The database restarting under a session: while it is away the
    // session hears [SYS/TEMP] at each command that needs it; nothing is
    // lost or deleted; once it is back the session goes on.
    s.put(MESSAGES[0]);
    s.put(MESSAGES[1]);
    let (mut c, r) = try_login(s.plain);
    assert!(r.starts_with("+OK alice's maildrop has 2 messages"), "{r}");
    c.cmd("DELE 1");
    pg.pg_ctl_stop();
    assert_eq!(
        c.cmd("RETR 2"),
        "-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    );
    pg.pg_ctl_start();
    // Once it is back, the same session goes on.
    wait_until(Duration::from_secs(10), "ready again", || {
        readyz().starts_with("HTTP/1.1 200")
    });
    assert!(
        String::from_utf8(c.multiline("RETR 2"))
            .unwrap()
            .starts_with("+OK 19 octets")
    );
    // The database is back for QUIT, and the lease is still the
    // session's: the deletion asked for happens.
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = wait_for(Duration::from_secs(15), "a login after QUIT", || {
        let (c, r) = try_login(s.plain);
        r.starts_with("+OK").then_some(c)
    });
    assert_eq!(c.cmd("STAT"), "+OK 1 19\r\n");
    assert_eq!(
        String::from_utf8(c.multiline("RETR 1")).unwrap(),
        "+OK 19 octets\r\nSubject: 2\r\n\r\ntwo\r\n.\r\n"
    );
}

#[test]
fn the_bundled_postgres_example_runs_as_its_comments_say() {
    let pg = Postgres::shared();
    let db = pg.empty_database();
    let dir = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let (pop3, pop3s, metrics) = (free_port(), free_port(), free_port());
    let text = read(&Path::new(examples).join("pop3d-postgres.toml"))
        .replace("postgres://pop3d@127.0.0.1:5432/mail", &pg.url(&db))
        .replace("127.0.0.1:1110", &format!("127.0.0.1:{pop3}"))
        .replace("127.0.0.1:1995", &format!("127.0.0.1:{pop3s}"))
        .replace("127.0.0.1:9110", &format!("127.0.0.1:{metrics}"))
        .replace("\"tls/", &format!("\"{examples}/tls/"));
    let config = dir.path().join("pop3d-postgres.toml");
    std::fs::write(&config, text).unwrap();
    let (code, _, err) = run(pop3d().args(["db", "migrate", "--config"]).arg(&config));
    assert_eq!(code, 0, "{err}");
    let mut add = pop3d()
        .args(["user", "add", "--config"])
        .arg(&config)
        .arg("demo")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"a password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let mut deliver = pop3d()
        .args(["deliver", "--user", "demo", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    deliver
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: hello\n\nfrom the example\n")
        .unwrap();
    assert!(deliver.wait().unwrap().success());
    let mut server = pop3d()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(pop3);
    let mut c = Client::login(pop3, "demo", "a password");
    assert_eq!(c.cmd("STAT"), "+OK 1 36\r\n");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let _ = server.kill();
    let _ = server.wait();
}

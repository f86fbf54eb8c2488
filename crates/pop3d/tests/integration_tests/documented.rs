// SPDX-License-Identifier: AGPL-3.0-only
//! What docs/ and contrib/ tell an operator to run, taken from the files
//! themselves (so they cannot drift from what works) with only addresses
//! and file names swapped for the test's: the node configuration of
//! docs/cluster.md behind the balancer's PROXY v2 header, and the systemd
//! unit's start check while the database is down.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// The ```toml block under "## Each node" in docs/cluster.md.
fn documented_node() -> String {
    let docs = read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cluster.md"
    )));
    let section = &docs[docs.find("## Each node").expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = section[start..].find("```").unwrap();
    section[start..start + end].to_owned()
}

/// A PROXY v2 header: TCP over IPv4 from `src` to `dst`.
fn proxy_v2(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h
}

#[test]
fn the_documented_node_lets_a_client_behind_the_balancer_log_in() {
    if !require("redis-server") {
        return;
    }
    let pg = Postgres::shared();
    let db = pg.database();
    let redis = Redis::start_with(free_port(), &["--requirepass", "redis-secret"]);
    let s = Setup::new(&[]);
    std::fs::write(s.path("db.secret"), "unused with trust\n").unwrap();
    std::fs::write(s.path("redis.password"), "redis-secret\n").unwrap();
    let (pop3, pop3s, lmtp, metrics) = (free_port(), free_port(), free_port(), free_port());
    let swaps = [
        ("10.0.0.11:1110", format!("127.0.0.1:{pop3}")),
        ("10.0.0.11:1995", format!("127.0.0.1:{pop3s}")),
        ("10.0.0.11:2424", format!("127.0.0.1:{lmtp}")),
        ("10.0.0.11:9110", format!("127.0.0.1:{metrics}")),
        ("10.0.0.10/32", "127.0.0.0/8".to_owned()),
        (
            "/etc/pop3d/fullchain.pem",
            s.path("cert.pem").display().to_string(),
        ),
        (
            "/etc/pop3d/key.pem",
            s.path("key.pem").display().to_string(),
        ),
        (
            "/etc/pop3d/db.secret",
            s.path("db.secret").display().to_string(),
        ),
        (
            "/etc/pop3d/redis.password",
            s.path("redis.password").display().to_string(),
        ),
        ("postgres://pop3d@db.example.org:5432/mail", pg.url(&db)),
        (
            "redis://redis.example.org:6379",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
        // The test's PostgreSQL speaks no TLS.
        ("tls = \"require\"", "tls = \"off\"".to_owned()),
    ];
    let mut text = documented_node();
    for (from, to) in &swaps {
        assert!(text.contains(from), "docs/cluster.md no longer has {from}");
        text = text.replace(from, to);
    }
    assert!(
        !text.contains("10.0.0.") && !text.contains("/etc/pop3d"),
        "{text}"
    );
    let config = s.path("node.toml");
    std::fs::write(&config, &text).unwrap();
    // What check-config says of it: no unusable listener.
    let out = pop3d()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("can log in there"), "{said}");
    let mut add = pop3d()
        .args(["user", "add", "--config"])
        .arg(&config)
        .arg("alice")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    assert!(add.wait().unwrap().success());
    let _node = s.start_with(&config, pop3);
    // A client on the internet, through the balancer.
    let tcp = TcpStream::connect(("127.0.0.1", pop3)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tcp = tcp;
    tcp.write_all(&proxy_v2([203, 0, 113, 7], [192, 0, 2, 1], 40000, 110))
        .unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    let ask = |r: &mut BufReader<TcpStream>, cmd: &str| {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };
    // Before TLS no password is taken from it.
    assert!(ask(&mut r, "USER alice").starts_with("-ERR [AUTH]"));
    assert_eq!(ask(&mut r, "STLS"), "+OK Begin TLS negotiation now\r\n");
    let mut r = BufReader::new(tls_client(&s, r.into_inner(), rustls::DEFAULT_VERSIONS));
    let mut ask = |cmd: &str| {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };
    assert_eq!(ask("USER alice"), "+OK\r\n");
    let answer = ask("PASS secret");
    assert!(answer.starts_with("+OK alice's maildrop"), "{answer}");
    assert!(ask("QUIT").starts_with("+OK"));
}

/// A command line of contrib/pop3d.service with the test's binary and
/// configuration in place of the installed ones.
fn unit_command(key: &str, config: &std::path::Path) -> String {
    let unit = read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/pop3d.service"
    )));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in the unit"));
    assert!(line.contains("/usr/local/bin/pop3d") && line.contains("/etc/pop3d/pop3d.toml"));
    line.replace("/usr/local/bin/pop3d", env!("CARGO_BIN_EXE_pop3d"))
        .replace("/etc/pop3d/pop3d.toml", &config.display().to_string())
}

#[test]
fn the_unit_starts_a_node_while_the_database_is_down_but_not_with_a_bad_file() {
    let pg = Postgres::private();
    let db = pg.database();
    let s = Setup::on(Backend::Postgres, &[]);
    let shared = Postgres::shared().url(s.database.as_deref().unwrap());
    let good = read(&s.config).replace(
        &format!("url = \"{shared}\"\n"),
        &format!("url = \"{}\"\nconnect_timeout = \"1s\"\n", pg.url(&db)),
    );
    std::fs::write(&s.config, &good).unwrap();
    pg.pg_ctl_stop();
    let check = unit_command("ExecStartPre", &s.config);
    let out = std::process::Command::new("sh")
        .args(["-c", &check])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{check}: {said}");
    assert!(
        said.contains("warning") && said.contains("does not answer"),
        "{said}"
    );
    // A file with a mistake still stops the start.
    std::fs::write(
        &s.config,
        good.replace("[server]\n", "[server]\ncolour = \"blue\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", &check])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The role, database and pg_hba line docs/cluster.md gives, run as
/// written (but for names a shared server needs unique), then `pop3d db
/// migrate` as that role, which is no superuser.
#[test]
fn the_documented_database_role_can_migrate() {
    let docs = read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cluster.md"
    )));
    let block = |fence: &str| {
        let start = docs.find(fence).expect(fence) + fence.len();
        docs[start..start + docs[start..].find("```").unwrap()].to_owned()
    };
    let sql = block("```sql\n");
    let hba = block("```text\nhostssl");
    assert!(
        sql.contains("CREATE ROLE pop3d LOGIN PASSWORD") && sql.contains("OWNER pop3d"),
        "{sql}"
    );
    let pg = Postgres::private();
    // The harness's own superuser is called pop3d: the documented role is
    // given another name here, and the database a fresh one.
    let sql = sql
        .replace("ROLE pop3d ", "ROLE docnode ")
        .replace("OWNER pop3d", "OWNER docnode")
        .replace("DATABASE mail ", "DATABASE docmail ")
        .replace("a long random password", "documented-pw");
    pg.psql("postgres", &sql);
    // Plain TCP in the test (its server has no certificate): host, not
    // hostssl; the rest of the documented line as it is.
    let line = format!("hostssl{hba}")
        .replace("hostssl", "host")
        .replace(" mail ", " docmail ")
        .replace(" pop3d ", " docnode ")
        .replace("10.0.0.0/24", "127.0.0.1/32");
    let conf = pg.dir.join("data/pg_hba.conf");
    let rules = read(&conf);
    std::fs::write(&conf, format!("{line}{rules}")).unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let s = Setup::new(&[]);
    std::fs::write(s.path("db.pw"), "documented-pw\n").unwrap();
    let text = read(&s.config).replace(
        "maildir = \"mail/%n\"",
        &format!(
            "backend = \"postgres\"\nurl = \"postgres://docnode@127.0.0.1:{}/docmail\"\npassword_file = \"db.pw\"",
            pg.port
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    succeed(pop3d().args(["db", "migrate", "--config"]).arg(&s.config));
    let owner = pg.psql(
        "docmail",
        "SELECT tableowner FROM pg_tables WHERE tablename = 'messages'",
    );
    assert_eq!(owner.trim(), "docnode");
}

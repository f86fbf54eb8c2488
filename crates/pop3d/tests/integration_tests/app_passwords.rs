// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d app-password` against a running `pop3d serve`: made, used over
//! USER/PASS, PLAIN and LOGIN, listed with its last use, refused outside
//! its networks, once expired and once revoked; the account password
//! refused where app passwords are required.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::common::*;

/// `pop3d app-password ARGS`, run as an operator would in the
/// configuration's directory: `--config pop3d.toml`, a bare file name
/// (whose relative `app_passwords_file` has no directory part).
fn tool(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = pop3d()
        .current_dir(s.config.parent().unwrap())
        .arg("app-password")
        .args(&args[..1])
        .arg("--config")
        .arg(s.config.file_name().unwrap())
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `add`: the password, alone on the last line.
fn add(s: &Setup, args: &[&str]) -> String {
    let (code, out, err) = tool(s, &[&["add"], args].concat());
    assert_eq!(code, 0, "{err}");
    out.lines().last().unwrap().to_owned()
}

fn login(s: &Setup, user: &str, pass: &str) -> String {
    let mut c = Client::connect(s.plain);
    c.cmd(&format!("USER {user}"));
    let r = c.cmd(&format!("PASS {pass}"));
    if r.starts_with("+OK") {
        c.cmd("QUIT");
    }
    r
}

#[test]
fn app_passwords_made_used_listed_expired_and_revoked() {
    let s = Setup::new(&[]);
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config = config.replace(
        "[auth]\npasswd_file = \"passwd\"\n",
        "[auth]\npasswd_file = \"passwd\"\napp_passwords_file = \"app-passwords\"\n",
    );
    std::fs::write(&s.config, config).unwrap();
    // carol may use only app passwords (a passwd extra field).
    let mut passwd = std::fs::OpenOptions::new()
        .append(true)
        .open(s.path("passwd"))
        .unwrap();
    writeln!(
        passwd,
        "carol:{{PLAIN}}account::::::require_app_passwords=yes"
    )
    .unwrap();
    let phone = add(&s, &["--user", "alice", "--label", "phone"]);
    assert!(
        phone.len() >= 28
            && phone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "{phone}"
    );
    let (code, _, err) = tool(&s, &["add", "--user", "nobody"]);
    assert_eq!(code, 67, "{err}");
    let (code, _, _) = tool(&s, &["add", "--user", "alice", "--label", "phone"]);
    assert_eq!(code, 64, "a label is unique per user");
    let _server = s.start();
    // USER/PASS, PLAIN, LOGIN; the account password still works for alice.
    assert!(login(&s, "alice", &phone).starts_with("+OK"));
    assert!(login(&s, "alice", "secret").starts_with("+OK"));
    let mut c = Client::connect(s.plain);
    let plain = B64.encode(format!("\0alice\0{phone}"));
    assert!(c.cmd(&format!("AUTH PLAIN {plain}")).starts_with("+OK"));
    c.cmd("QUIT");
    let mut c = Client::connect(s.plain);
    c.cmd("AUTH LOGIN");
    c.cmd(&B64.encode("alice"));
    let r = c.cmd(&B64.encode(&phone));
    assert!(r.starts_with("+OK"), "{r}");
    c.cmd("QUIT");
    // Listed with its last use, written without waiting for a write per
    // login.
    let (_, out, _) = tool(&s, &["list", "--user", "alice"]);
    let row = out
        .lines()
        .find(|l| l.contains("\tphone\t"))
        .unwrap_or_default();
    assert!(row.contains("from 127.0.0.1"), "{out}");
    assert!(row.contains("\tnever\tany\t"), "{out}");
    // Outside its networks: refused like a wrong password. Expired: too.
    let wrong = login(&s, "alice", "wrong");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    let far = add(
        &s,
        &[
            "--user",
            "alice",
            "--label",
            "far",
            "--allow",
            "192.0.2.0/24",
        ],
    );
    let soon = add(
        &s,
        &["--user", "alice", "--label", "soon", "--expires", "1s"],
    );
    // (The server reads the file again within a second of a change.)
    wait_until(Duration::from_secs(5), "the new file read", || {
        login(&s, "alice", &soon).starts_with("+OK") || login(&s, "alice", &far) == wrong
    });
    assert_eq!(login(&s, "alice", &far), wrong);
    wait_until(Duration::from_secs(5), "the expiry", || {
        login(&s, "alice", &soon) == wrong
    });
    // Revoked: refused at once the file is read again.
    let (code, _, err) = tool(&s, &["revoke", "--user", "alice", "--label", "phone"]);
    assert_eq!(code, 0, "{err}");
    wait_until(Duration::from_secs(5), "the revocation", || {
        login(&s, "alice", &phone) == wrong
    });
    // Required: the account password no longer opens carol's mailbox.
    assert_eq!(login(&s, "carol", "account"), wrong);
    let carols = add(&s, &["--user", "carol", "--label", "mua"]);
    wait_until(Duration::from_secs(5), "carol's app password", || {
        login(&s, "carol", &carols).starts_with("+OK")
    });
    assert_eq!(login(&s, "carol", "account"), wrong);
}

// SPDX-License-Identifier: AGPL-3.0-only
//! pop3d against Debian's Courier: with `uidl_format = "UID%u-%v"` a user
//! moved from Courier keeps every UIDL, and mail that arrives afterwards
//! gets the UIDL Courier would give it (`courierpop3d`, the program that
//! serves a Maildir after login, run directly, already authenticated); and
//! `pop3d import-pop3` moves a mailbox from a whole Courier POP3 server
//! (couriertcpd, courierpop3login with STLS through couriertls, and an
//! authdaemond of the test's own with a userdb), which runs in a private
//! mount namespace so that `/etc/courier` and `/run/courier`, paths
//! Courier has compiled in, are the test's.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// Unpacked by `.ci/run` (the package conflicts with Dovecot's), or
/// installed.
const COURIERPOP3D: [&str; 2] = [
    "/opt/courier-pop/usr/lib/courier/courier/courierpop3d",
    "/usr/lib/courier/courier/courierpop3d",
];

fn courierpop3d() -> Option<&'static str> {
    COURIERPOP3D
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

/// Whether Courier's programs are here; in CI they must be.
fn have_courier(whole_server: bool) -> bool {
    let mut missing: Vec<&str> = Vec::new();
    if courierpop3d().is_none() {
        missing.push("courierpop3d");
    }
    if whole_server {
        for tool in ["couriertcpd", "couriertls", "makeuserdb", "unshare"] {
            if !have(tool) {
                missing.push(tool);
            }
        }
        if !std::path::Path::new(AUTHDAEMOND).is_file() {
            missing.push("authdaemond");
        }
    }
    if missing.is_empty() {
        return true;
    }
    skip(&format!(
        "{missing:?} missing (.ci/run installs and unpacks them)"
    ));
    false
}

const AUTHDAEMOND: &str = "/usr/lib/courier/courier-authlib/authdaemond";

/// A Courier POP3 server on a port of its own; its processes (one process
/// group) end with it.
struct Courier {
    child: Child,
    port: u16,
}

impl Drop for Courier {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Courier serving alice (password `secret`) from `s`'s Maildir, with STLS
/// on `s`'s certificate.
fn start_courier(s: &Setup) -> Courier {
    let (uid, gid) = vmail_owns(&s.path("mail"));
    let etc = s.path("courier-etc");
    let run = s.path("courier-run");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        etc.join("authdaemonrc"),
        "authmodulelist=\"authuserdb\"\nauthmodulelistorig=\"authuserdb\"\ndaemons=1\n\
         authdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\nDEFAULTOPTIONS=\"\"\nLOGGEROPTS=\"\"\n",
    )
    .unwrap();
    // The crypt string pop3d makes, without its {SCHEME} prefix.
    let mut hash = pop3d()
        .args(["hash-password", "--scheme", "SHA512-CRYPT"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hash.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let field = String::from_utf8(hash.wait_with_output().unwrap().stdout).unwrap();
    let crypt = field.trim().trim_start_matches("{SHA512-CRYPT}");
    let maildir = s.path("mail/alice");
    let userdb = etc.join("userdb");
    std::fs::write(
        &userdb,
        format!(
            "alice\tuid={uid}|gid={gid}|home={home}|mail={home}|systempw={crypt}\n",
            home = maildir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&userdb, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pem = s.path("courier.pem");
    std::fs::write(&pem, read(&s.path("key.pem")) + &read(&s.path("cert.pem"))).unwrap();
    let login = courierpop3d()
        .unwrap()
        .replace("courierpop3d", "courierpop3login");
    let port = free_port();
    let script = format!(
        "set -e\n\
         mount --bind {etc} /etc/courier\n\
         mount --bind {run} /run/courier\n\
         mkdir -p /run/courier/authdaemon\n\
         makeuserdb\n\
         {AUTHDAEMOND} &\n\
         i=0; while [ ! -S /run/courier/authdaemon/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n\
         export POP3_STARTTLS=YES POP3_TLS_REQUIRED=0 COURIERTLS={couriertls} TLS_CERTFILE={pem} TLS_VERIFYPEER=NONE\n\
         exec {tcpd} -address=127.0.0.1 -nodnslookup -noidentlookup {port} {login} {pop3d} Maildir\n",
        etc = etc.display(),
        run = run.display(),
        couriertls = tool_path("couriertls").unwrap().display(),
        pem = pem.display(),
        tcpd = tool_path("couriertcpd").unwrap().display(),
        pop3d = courierpop3d().unwrap(),
    );
    let child = Command::new(tool_path("unshare").unwrap())
        .args(["--mount", "sh", "-c", &script])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let courier = Courier { child, port };
    wait_for_port(port);
    courier
}

const MAIL: [&[u8]; 3] = [
    b"From: a@example.org\nSubject: one\n\nbody\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nbody\r\n",
    b"From: c@example.org\nSubject: three\n\nbody",
];

/// Courier's UIDL listing of alice's Maildir (it writes its own list,
/// `courierpop3dsizelist`, as it goes).
fn courier_uidl(s: &Setup) -> Vec<String> {
    let mut child = Command::new(courierpop3d().unwrap())
        .arg("alice")
        .current_dir(s.path("mail"))
        .env_clear()
        .env("AUTHENTICATED", "alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"UIDL\r\nQUIT\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("+OK"), "{text}");
    assert!(lines.next().unwrap().starts_with("+OK"), "{text}");
    lines.take_while(|l| *l != ".").map(str::to_owned).collect()
}

fn pop3d_uidl(port: u16) -> Vec<String> {
    let mut c = Client::login(port, "alice", "secret");
    let text = String::from_utf8(c.multiline("UIDL")).unwrap();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    text.lines()
        .skip(1)
        .take_while(|l| *l != ".")
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_maildir_from_courier_keeps_its_uidls() {
    if !have_courier(false) {
        return;
    }
    let s = Setup::new(&MAIL);
    let config = read(&s.config).replace("[storage]\n", "[storage]\nuidl_format = \"UID%u-%v\"\n");
    std::fs::write(&s.config, config).unwrap();
    let courier = courier_uidl(&s);
    assert_eq!(courier.len(), 3);
    assert!(courier[0].starts_with("1 UID1-"), "{courier:?}");

    let _pop3d = s.start();
    assert_eq!(pop3d_uidl(s.plain), courier, "the UIDLs Courier gave");
    // New mail, seen first by pop3d: Courier, shown the Maildir again,
    // gives it the same UIDL, and the old ones stay.
    s.put(b"From: d@example.org\nSubject: four\n\nbody\n");
    let ours = pop3d_uidl(s.plain);
    assert_eq!(ours.len(), 4);
    assert_eq!(courier_uidl(&s), ours);
    assert_eq!(ours[..3], courier[..]);
}

/// `pop3d import-pop3` from a Courier server over STLS: every UIDL and
/// byte as Courier serves them; a rerun copies nothing; Courier keeps all.
fn import_from_courier(backend: Backend) {
    if !have_courier(true) || !is_root() {
        skip("a Courier server of the test's own needs root (mount namespace)");
        return;
    }
    let old = Setup::new(&MAIL);
    let courier = start_courier(&old);
    let before = listing(courier.port);
    assert_eq!(before.2.len(), MAIL.len());
    assert!(before.0.starts_with("1 UID1-"), "{}", before.0);

    let new = Setup::on(backend, &[]);
    std::fs::write(new.path("alice.pw"), "secret\n").unwrap();
    let args = [
        "--from".to_owned(),
        format!("pop3://127.0.0.1:{}", courier.port),
        "--user".to_owned(),
        "alice".to_owned(),
        "--password-file".to_owned(),
        new.path("alice.pw").display().to_string(),
        "--ca-file".to_owned(),
        old.path("cert.pem").display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = import_pop3(&new, &args);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("copied 3 messages"), "{out}");
    let (code, out) = import_pop3(&new, &args);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("copied 0 messages") && out.contains("3 messages already there"),
        "{out}"
    );

    let _pop3d = new.start();
    let moved = listing(new.plain);
    assert_eq!(moved.0, before.0, "UIDL byte for byte");
    assert_eq!(moved.2, before.2, "RETR byte for byte");
    assert_eq!(
        listing(courier.port).0,
        before.0,
        "nothing deleted on Courier"
    );
}

#[test]
fn import_pop3_from_courier_into_maildir() {
    import_from_courier(Backend::Maildir);
}

#[test]
fn import_pop3_from_courier_into_postgres() {
    import_from_courier(Backend::Postgres);
}

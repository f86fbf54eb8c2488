// SPDX-License-Identifier: AGPL-3.0-only
//! GSSAPI (Kerberos 5) against a real MIT KDC that this test creates and
//! starts on loopback, with a real ticket from `kinit`, and curl as the
//! client. Built only with `--features gssapi` (needs libkrb5-dev; the KDC
//! comes from krb5-kdc, kinit from krb5-user).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{self, Setup, free_port, read, require, tool_path};

const M1: &[u8] = b"Subject: one\r\n\r\nfirst message body\r\n";
const REALM: &str = "POP.TEST";

struct Kdc {
    child: Child,
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a Kerberos tool with this test's configuration.
fn krb(dir: &Path, tool: &str, args: &[&str], input: Option<&str>) -> std::process::Output {
    let mut child = Command::new(tool_path(tool).unwrap_or_else(|| tool.into()))
        .args(args)
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"))
        .env(
            "KRB5CCNAME",
            format!("FILE:{}", dir.join("ccache").display()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A realm in `dir` with principals alice, mallory, pop/pop.test and
/// host/pop.test (both in `pop.keytab`, as in a shared system keytab), and
/// its KDC listening on a loopback port.
fn start_kdc(dir: &Path) -> Kdc {
    let port = free_port();
    std::fs::write(
        dir.join("krb5.conf"),
        format!(
            "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n dns_canonicalize_hostname = false\n rdns = false\n udp_preference_limit = 1\n\
             [realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n\
             [domain_realm]\n pop.test = {REALM}\n .pop.test = {REALM}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("kdc.conf"),
        format!(
            "[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n\
             [realms]\n {REALM} = {{\n  database_name = {db}\n  key_stash_file = {stash}\n  acl_file = {acl}\n }}\n\
             [logging]\n kdc = FILE:{log}\n",
            db = dir.join("principal").display(),
            stash = dir.join("stash").display(),
            acl = dir.join("kadm5.acl").display(),
            log = dir.join("kdc.log").display(),
        ),
    )
    .unwrap();
    ok(
        krb(
            dir,
            "kdb5_util",
            &["create", "-s", "-r", REALM, "-P", "master-password"],
            None,
        ),
        "kdb5_util create",
    );
    for q in [
        "addprinc -pw alice-password alice".to_owned(),
        "addprinc -pw mallory-password mallory".to_owned(),
        "addprinc -randkey pop/pop.test".to_owned(),
        format!("ktadd -k {} pop/pop.test", dir.join("pop.keytab").display()),
        "addprinc -randkey host/pop.test".to_owned(),
        format!(
            "ktadd -k {} host/pop.test",
            dir.join("pop.keytab").display()
        ),
    ] {
        ok(krb(dir, "kadmin.local", &["-r", REALM, "-q", &q], None), &q);
    }
    let child = Command::new(tool_path("krb5kdc").unwrap())
        .args(["-n", "-r", REALM])
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port);
    Kdc { child }
}

#[test]
fn curl_logs_in_with_a_kerberos_ticket() {
    if !require("krb5kdc") || !require("kinit") || !require("curl") {
        return;
    }
    let s = Setup::new(&[M1]);
    let dir = s.dir.path();
    let _kdc = start_kdc(dir);
    let text =
        read(&s.config).replace("[auth]\n", "[auth]\nmechanisms = [\"GSSAPI\", \"PLAIN\"]\n");
    std::fs::write(
        &s.config,
        format!("{text}\n[auth.gssapi]\nkeytab = \"pop.keytab\"\nrealm = \"{REALM}\"\n"),
    )
    .unwrap();
    let mut server = common::pop3d();
    server
        .args(["serve", "--config"])
        .arg(&s.config)
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("pop3d.log")).unwrap());
    let _server = common::Running {
        child: server.spawn().unwrap(),
    };
    common::wait_for_port(s.plain);

    let curl = |user: &str, more: &[&str]| {
        Command::new(tool_path("curl").unwrap())
            .args(more)
            // curl only picks GSSAPI for a user name with a realm.
            .args(["-sS", "--login-options", "AUTH=GSSAPI"])
            .args(["--user", &format!("{user}@{REALM}:")])
            .args(["--resolve", &format!("pop.test:{}:127.0.0.1", s.plain)])
            .arg(format!("pop3://pop.test:{}/", s.plain))
            .env("KRB5_CONFIG", dir.join("krb5.conf"))
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", dir.join("ccache").display()),
            )
            .output()
            .unwrap()
    };
    // No ticket yet: refused.
    assert!(!curl("alice", &[]).status.success(), "no ticket, no login");
    // A ticket for `who@REALM` from its password.
    let kinit = |who: &str, password: &str| {
        krb(
            dir,
            "kinit",
            &[&format!("{who}@{REALM}")],
            Some(&format!("{password}\n")),
        )
    };
    // A wrong password gets no ticket at all.
    assert!(!kinit("alice", "wrong-password").status.success());
    ok(kinit("alice", "alice-password"), "kinit alice");
    let out = curl("alice", &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        read(&dir.join("pop3d.log"))
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 36\r\n");
    // The ticket is alice's: asking to act as bob (an authzid in the
    // security-layer message) is refused, as alice is no master user.
    assert!(
        !curl("alice", &["--sasl-authzid", "bob"]).status.success(),
        "alice's ticket cannot act as bob"
    );
    // mallory has a valid ticket but no mailbox here.
    ok(kinit("mallory", "mallory-password"), "kinit mallory");
    assert!(
        !curl("mallory", &[]).status.success(),
        "a principal with no user"
    );
    // A ticket for another principal of the same keytab (host/pop.test,
    // curl's --service-name) is refused: the acceptor holds pop@pop.test
    // alone. Alice's own ticket for pop/ still works afterwards.
    ok(kinit("alice", "alice-password"), "kinit alice again");
    let host = curl("alice", &["--service-name", "host"]);
    assert!(
        !host.status.success(),
        "a ticket for host/pop.test must not log in: {}",
        String::from_utf8_lossy(&host.stdout)
    );
    let klist = krb(dir, "klist", &[], None);
    assert!(
        String::from_utf8_lossy(&klist.stdout).contains("host/pop.test@"),
        "the client did get a ticket for host/pop.test: {}",
        String::from_utf8_lossy(&klist.stdout)
    );
    assert!(curl("alice", &[]).status.success(), "pop/ still works");
}

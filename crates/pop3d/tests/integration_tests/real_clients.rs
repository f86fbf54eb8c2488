// SPDX-License-Identifier: AGPL-3.0-only
//! Independent clients against the real `pop3d` binary: curl, Python's
//! poplib and mpop (GNU SASL and GnuTLS underneath), each over plain TCP,
//! STLS and implicit TLS, each deleting with QUIT.

use std::process::Command;

use crate::common::*;

const M1: &[u8] = b"From: a@example.org\nSubject: first\n\nHello one.\n.leading dot\n";
const M2: &[u8] = b"From: b@example.org\nSubject: second\n\nHello two.\n";

fn deliver(s: &Setup) {
    s.put(M1);
    s.put(M2);
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_fetches_and_deletes_over_plain_stls_and_implicit_tls(backend: Backend) {
    if !require("curl") {
        return;
    }
    let s = Setup::on(backend, &[]);
    let _server = s.start();
    let cafile = s.path("cert.pem");
    let modes: [(&str, Vec<&str>, u16); 3] = [
        ("pop3", vec![], s.plain),
        ("pop3", vec!["--ssl-reqd"], s.starttls),
        ("pop3s", vec![], s.implicit),
    ];
    for (scheme, extra, port) in modes {
        deliver(&s);
        let base = format!("{scheme}://127.0.0.1:{port}");
        let curl = |path: &str, more: &[&str]| {
            let mut c = Command::new(tool_path("curl").unwrap());
            c.args(["-sS", "--user", "alice:secret", "--cacert"])
                .arg(&cafile);
            c.args(&extra).args(more).arg(format!("{base}{path}"));
            output(&mut c)
        };
        assert_eq!(curl("/", &[]), "1 65\r\n2 52\r\n", "{base}");
        let body = curl("/1", &[]);
        assert_eq!(
            body,
            String::from_utf8_lossy(M1).replace('\n', "\r\n"),
            "{base}"
        );
        curl("/1", &["-X", "DELE", "-I"]);
        // Numbers are per session: the old message 2 is now message 1.
        assert_eq!(curl("/", &[]), "1 52\r\n", "{base}");
        curl("/1", &["-X", "DELE", "-I"]);
        assert_eq!(s.count(), 0, "{base}: deleted at QUIT");
    }
}

const POPLIB: &str = r#"
import poplib, ssl, sys
mode, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "implicit":
    p = poplib.POP3_SSL("127.0.0.1", port, context=ctx)
else:
    p = poplib.POP3("127.0.0.1", port)
    if mode == "stls":
        caps = p.capa()
        assert "STLS" in caps, caps
        p.stls(context=ctx)
        assert "STLS" not in p.capa()
p.user("alice")
p.pass_("secret")
count, size = p.stat()
print("stat", count, size)
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    print("msg", n, octets, b"|".join(lines).decode())
    p.dele(n)
print("uidl", len(p.uidl()[1]))
print(p.quit().decode())
"#;

fn python_poplib_fetches_and_deletes_over_plain_stls_and_implicit_tls(backend: Backend) {
    if !require("python3") {
        return;
    }
    let s = Setup::on(backend, &[]);
    let _server = s.start();
    for (mode, port) in [
        ("plain", s.plain),
        ("stls", s.starttls),
        ("implicit", s.implicit),
    ] {
        deliver(&s);
        let out = output(
            Command::new(tool_path("python3").unwrap())
                .args(["-c", POPLIB, mode, &port.to_string()])
                .arg(s.path("cert.pem")),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "stat 2 117", "{mode}: {out}");
        assert_eq!(
            lines[1], "msg 1 65 From: a@example.org|Subject: first||Hello one.|.leading dot",
            "{mode}: poplib removes the dot-stuffing"
        );
        assert_eq!(
            lines[2],
            "msg 2 52 From: b@example.org|Subject: second||Hello two."
        );
        assert_eq!(lines[3], "uidl 0", "deleted messages vanish from UIDL");
        assert!(
            lines[4].starts_with("+OK pop.test POP3 server signing off (maildrop empty)"),
            "{out}"
        );
        assert_eq!(s.count(), 0, "{mode}");
    }
}

fn mpop_fetches_and_deletes_over_plain_stls_and_implicit_tls(backend: Backend) {
    if !require("mpop") {
        return;
    }
    let s = Setup::on(backend, &[]);
    let _server = s.start();
    let mbox = s.path("fetched.mbox");
    let rc = s.path("mpoprc");
    std::fs::write(
        &rc,
        format!(
            "defaults\nhost 127.0.0.1\nuser alice\npassword secret\nkeep off\n\
             tls_trust_file {cert}\ndelivery mbox {mbox}\nuidls_file {uidls}\n\n\
             account plain\nport {plain}\ntls off\nauth user\n\n\
             account stls\nport {starttls}\ntls on\ntls_starttls on\nauth plain\n\n\
             account implicit\nport {implicit}\ntls on\ntls_starttls off\nauth plain\n",
            cert = s.path("cert.pem").display(),
            mbox = mbox.display(),
            uidls = s.path("mpop-uidls").display(),
            plain = s.plain,
            starttls = s.starttls,
            implicit = s.implicit,
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (n, account) in ["plain", "stls", "implicit"].iter().enumerate() {
        deliver(&s);
        output(
            Command::new(tool_path("mpop").unwrap())
                .arg("-C")
                .arg(&rc)
                .args(["-q", account]),
        );
        assert_eq!(s.count(), 0, "{account}: mpop deleted what it fetched");
        let text = std::fs::read_to_string(&mbox).unwrap();
        assert_eq!(text.matches("Subject: first").count(), n + 1, "{account}");
        assert_eq!(text.matches("Subject: second").count(), n + 1, "{account}");
        assert!(
            text.contains("\n.leading dot\n"),
            "dot-stuffing undone by the client"
        );
    }
}

#[test]
fn curl_logs_in_with_each_sasl_mechanism() {
    if !require("curl") {
        return;
    }
    let s = Setup::new(&[M1]);
    let text = read(&s.config).replace(
        "[auth]\n",
        "[auth]\nmechanisms = [\"PLAIN\", \"LOGIN\", \"CRAM-MD5\"]\n",
    );
    std::fs::write(&s.config, text).unwrap();
    let _server = s.start();
    let url = format!("pop3://127.0.0.1:{}/", s.plain);
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        let curl = |user: &str| {
            Command::new(tool_path("curl").unwrap())
                .args([
                    "-sS",
                    "--login-options",
                    &format!("AUTH={mech}"),
                    "--user",
                    user,
                    &url,
                ])
                .output()
                .unwrap()
        };
        let ok = curl("alice:secret");
        assert!(
            ok.status.success(),
            "{mech}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "1 65\r\n", "{mech}");
        assert!(
            !curl("alice:wrong").status.success(),
            "{mech}: a wrong secret fails"
        );
    }
}

/// The fetch-and-delete tests on either store.
mod maildir {
    use crate::common::Backend;

    #[test]
    fn curl() {
        super::curl_fetches_and_deletes_over_plain_stls_and_implicit_tls(Backend::Maildir);
    }

    #[test]
    fn poplib() {
        super::python_poplib_fetches_and_deletes_over_plain_stls_and_implicit_tls(Backend::Maildir);
    }

    #[test]
    fn mpop() {
        super::mpop_fetches_and_deletes_over_plain_stls_and_implicit_tls(Backend::Maildir);
    }
}

mod postgres {
    use crate::common::Backend;

    #[test]
    fn curl() {
        super::curl_fetches_and_deletes_over_plain_stls_and_implicit_tls(Backend::Postgres);
    }

    #[test]
    fn poplib() {
        super::python_poplib_fetches_and_deletes_over_plain_stls_and_implicit_tls(
            Backend::Postgres,
        );
    }

    #[test]
    fn mpop() {
        super::mpop_fetches_and_deletes_over_plain_stls_and_implicit_tls(Backend::Postgres);
    }
}

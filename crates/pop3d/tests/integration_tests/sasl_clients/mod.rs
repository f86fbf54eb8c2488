// SPDX-License-Identifier: AGPL-3.0-only
//! Every SASL mechanism against a client this project did not write: curl
//! (DIGEST-MD5, NTLM, OAUTHBEARER, XOAUTH2, EXTERNAL, PLAIN with authzid),
//! mpop (SCRAM-SHA-1, SCRAM-SHA-256 through GNU SASL), and GNU SASL's own
//! `gsasl` (the -PLUS variants with tls-exporter, the downgrade rule,
//! ANONYMOUS, DIGEST-MD5). Each with a wrong-secret case.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::common::{Setup, read, require, tls_client, tool_path};

mod oauth;

const M1: &[u8] = b"Subject: one\r\n\r\nfirst message body\r\n";

/// Setup plus more users (each with an empty Maildir) and config text.
fn setup(users: &[(&str, &str)], auth: &str, extra: &str) -> Setup {
    let s = Setup::new(&[M1]);
    let mut passwd = read(&s.path("passwd"));
    for (user, secret) in users {
        passwd.push_str(&format!("{user}:{secret}::::\n"));
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(s.path(&format!("mail/{user}/{sub}"))).unwrap();
        }
    }
    std::fs::write(s.path("passwd"), passwd).unwrap();
    let text = read(&s.config).replace("[auth]\n", &format!("[auth]\n{auth}\n"));
    std::fs::write(&s.config, format!("{text}\n{extra}\n")).unwrap();
    s
}

/// `pop3d hash-password --scheme S` for `password`.
fn hashed(scheme: &str, password: &str) -> String {
    let mut child = crate::common::pop3d()
        .args(["hash-password", "--scheme", scheme])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new(tool_path("curl").unwrap())
        .arg("-sS")
        .args(args)
        .output()
        .unwrap()
}

fn assert_listing(out: &std::process::Output, want: &str, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{what}");
}

#[test]
fn curl_digest_md5_and_ntlm() {
    if !require("curl") {
        return;
    }
    let ntlm = hashed("NTLM", "ntpass");
    let s = setup(
        &[("erin", &ntlm)],
        "mechanisms = [\"DIGEST-MD5\", \"NTLM\"]\nrealm = \"pop.test\"",
        "",
    );
    std::fs::write(s.path("mail/erin/new/1700000000.M1P1.test"), M1).unwrap();
    let _server = s.start();
    let url = format!("pop3://127.0.0.1:{}/", s.plain);
    let run = |mech: &str, user: &str| {
        curl(&[
            "--login-options",
            &format!("AUTH={mech}"),
            "--user",
            user,
            &url,
        ])
    };
    assert_listing(&run("DIGEST-MD5", "alice:secret"), "1 36\r\n", "DIGEST-MD5");
    assert!(!run("DIGEST-MD5", "alice:wrong").status.success());
    assert_listing(
        &run("NTLM", "alice:secret"),
        "1 36\r\n",
        "NTLM from {PLAIN}",
    );
    assert_listing(&run("NTLM", "erin:ntpass"), "1 36\r\n", "NTLM from {NTLM}");
    assert!(!run("NTLM", "erin:wrong").status.success());
    // bob's secret is SHA512-CRYPT: neither mechanism can work for him,
    // and he fails exactly like a wrong password.
    assert!(!run("NTLM", "bob:password").status.success());
    assert!(!run("DIGEST-MD5", "bob:password").status.success());
}

#[test]
fn mpop_scram_from_stored_keys_and_plaintext() {
    if !require("mpop") {
        return;
    }
    let s256 = hashed("SCRAM-SHA-256", "pencil");
    assert!(s256.starts_with("{SCRAM-SHA-256}4096,"), "{s256}");
    let s1 = hashed("SCRAM-SHA-1", "pencil");
    let s = setup(
        &[("carol", &s256), ("dave", &s1)],
        "mechanisms = [\"SCRAM-SHA-1\", \"SCRAM-SHA-256\", \"SCRAM-SHA-256-PLUS\"]",
        "",
    );
    let _server = s.start();
    let cases = [
        ("scram-sha-256", "carol", "pencil", true),
        ("scram-sha-1", "dave", "pencil", true),
        ("scram-sha-256", "alice", "secret", true),
        ("scram-sha-1", "alice", "secret", true),
        ("scram-sha-256", "carol", "pencil!", false),
        ("scram-sha-1", "nobody", "pencil", false),
    ];
    for (port, tls) in [(s.plain, "off"), (s.starttls, "on")] {
        for (mech, user, pass, ok) in cases {
            let rc = s.path("mpoprc");
            std::fs::write(
                &rc,
                format!(
                    "account default\nhost 127.0.0.1\nport {port}\ntls {tls}\ntls_starttls on\ntls_certcheck off\nauth {mech}\nuser {user}\npassword {pass}\nuidls_file {}\nonly_new off\ndelivery mbox {}\n",
                    s.path("uidls").display(),
                    s.path("out.mbox").display()
                ),
            )
            .unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let out = Command::new(tool_path("mpop").unwrap())
                .arg("-C")
                .arg(&rc)
                .args(["--status-only", "-q"])
                .output()
                .unwrap();
            assert_eq!(
                out.status.success(),
                ok,
                "mpop {mech} {user} tls={tls}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A client connection that `gsasl` drives: the bridge copies gsasl's
/// base64 lines to the server as AUTH and continuation lines, and the
/// server's challenges back. Returns the server's last reply and whether
/// gsasl itself was satisfied (it checks SCRAM's server signature and
/// DIGEST-MD5's rspauth).
fn gsasl_login(
    stream: &mut (impl Read + Write),
    mech: &str,
    args: &[&str],
    cb: Option<&[u8]>,
) -> (String, bool) {
    use base64::Engine;
    let mut child = Command::new(tool_path("gsasl").unwrap())
        .args(["--quiet", "--client", "-m", mech])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_gsasl = child.stdin.take().unwrap();
    let mut from_gsasl = BufReader::new(child.stdout.take().unwrap());
    if let Some(cb) = cb {
        writeln!(
            to_gsasl,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(cb)
        )
        .unwrap();
    }
    // gsasl prints prompts without newlines before its data: keep what
    // follows the last ": ".
    let mut next = || {
        let mut line = String::new();
        from_gsasl.read_line(&mut line).unwrap();
        let line = line.trim_end();
        line.rsplit(": ").next().unwrap_or("").to_owned()
    };
    assert_eq!(next(), mech);
    let mut server = BufReader::new(StreamRef(stream));
    let first = next();
    let mut cmd = format!("AUTH {mech}");
    if !first.is_empty() {
        cmd = format!("{cmd} {first}");
    }
    let reply = loop {
        server
            .get_mut()
            .0
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        let mut reply = String::new();
        server.read_line(&mut reply).unwrap();
        let reply = reply.trim_end().to_owned();
        let Some(challenge) =
            reply
                .strip_prefix("+ ")
                .or(if reply == "+" { Some("") } else { None })
        else {
            break reply;
        };
        writeln!(to_gsasl, "{challenge}").unwrap();
        cmd = next();
    };
    drop(to_gsasl);
    // In this raw mode gsasl keeps reading after the exchange and exits
    // with "poll stdin" at EOF whatever happened; a mechanism failure
    // (such as a server signature that does not verify) says so first.
    let out = child.wait_with_output().unwrap();
    let ok = !String::from_utf8_lossy(&out.stderr).contains("mechanism error");
    (reply, ok)
}

/// Lets a BufReader read a stream that is also written through it.
struct StreamRef<'a, S>(&'a mut S);

impl<S: Read> Read for StreamRef<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// A TLS client connection with rustls, and its tls-exporter binding.
fn tls_connect(
    s: &Setup,
) -> (
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    Vec<u8>,
) {
    let tcp = TcpStream::connect(("127.0.0.1", s.implicit)).unwrap();
    let mut tls = tls_client(s, tcp, &[&rustls::version::TLS13]);
    let mut greeting = [0u8; 1];
    let mut line = Vec::new();
    while greeting[0] != b'\n' {
        tls.read_exact(&mut greeting).unwrap();
        line.push(greeting[0]);
    }
    assert!(line.starts_with(b"+OK"));
    let cb = tls
        .conn
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .unwrap();
    (tls, cb)
}

fn capa(stream: &mut (impl Read + Write)) -> String {
    stream.write_all(b"CAPA\r\n").unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n.\r\n") {
        stream.read_exact(&mut b).unwrap();
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn gsasl_scram_plus_with_tls_exporter_and_the_downgrade_rule() {
    if !require("gsasl") {
        return;
    }
    let s256 = hashed("SCRAM-SHA-256", "pencil");
    let s = setup(
        &[("carol", &s256)],
        "mechanisms = [\"SCRAM-SHA-1\", \"SCRAM-SHA-256\", \"SCRAM-SHA-1-PLUS\", \"SCRAM-SHA-256-PLUS\", \"DIGEST-MD5\"]",
        "",
    );
    let _server = s.start();
    for (mech, user, pass) in [
        ("SCRAM-SHA-256-PLUS", "carol", "pencil"),
        ("SCRAM-SHA-1-PLUS", "alice", "secret"),
    ] {
        let (mut tls, cb) = tls_connect(&s);
        let caps = capa(&mut tls);
        assert!(
            caps.contains("SASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1"),
            "{caps}"
        );
        let (reply, ok) = gsasl_login(&mut tls, mech, &["-a", user, "-p", pass], Some(&cb));
        assert!(reply.starts_with("+OK"), "{mech}: {reply}");
        assert!(ok, "{mech}: gsasl accepted the server's signature");
        // Wrong password.
        let (mut tls, cb) = tls_connect(&s);
        let (reply, _) = gsasl_login(&mut tls, mech, &["-a", user, "-p", "wrong"], Some(&cb));
        assert!(reply.starts_with("-ERR [AUTH]"), "{mech}: {reply}");
        // Binding data from another connection: refused.
        let (mut tls, _) = tls_connect(&s);
        let (reply, _) = gsasl_login(&mut tls, mech, &["-a", user, "-p", pass], Some(&[9u8; 32]));
        assert!(reply.starts_with("-ERR"), "{mech}: {reply}");
    }
    // A client that could bind but picks plain SCRAM says 'y'; since
    // -PLUS is offered here, that is a downgrade. (gsasl refuses to send
    // 'y' itself, so these lines are written by hand.)
    use base64::Engine;
    let y = base64::engine::general_purpose::STANDARD.encode("y,,n=carol,r=abcdef");
    let (mut tls, _) = tls_connect(&s);
    tls.write_all(format!("AUTH SCRAM-SHA-256 {y}\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    BufReader::new(&mut tls).read_line(&mut reply).unwrap();
    assert!(
        reply.starts_with("-ERR") && reply.contains("channel binding"),
        "{reply}"
    );
    // Without TLS there is no -PLUS, and plain SCRAM works.
    let mut plain = TcpStream::connect(("127.0.0.1", s.plain)).unwrap();
    let mut line = String::new();
    BufReader::new(&mut plain).read_line(&mut line).unwrap();
    let caps = capa(&mut plain);
    assert!(!caps.contains("PLUS"), "{caps}");
    // Where no -PLUS is offered, 'y' is an honest answer.
    plain
        .write_all(format!("AUTH SCRAM-SHA-256 {y}\r\n*\r\n").as_bytes())
        .unwrap();
    let mut r = BufReader::new(&mut plain);
    let (mut challenge, mut cancelled) = (String::new(), String::new());
    r.read_line(&mut challenge).unwrap();
    r.read_line(&mut cancelled).unwrap();
    assert!(challenge.starts_with("+ "), "{challenge}");
    assert!(cancelled.starts_with("-ERR"), "{cancelled}");
    let (reply, ok) = gsasl_login(
        &mut plain,
        "SCRAM-SHA-256",
        &["--no-cb", "-a", "carol", "-p", "pencil"],
        None,
    );
    assert!(reply.starts_with("+OK") && ok, "{reply}");
    // DIGEST-MD5 from GNU SASL too (a second client for it).
    let (mut tls, _) = tls_connect(&s);
    let args = [
        "-a",
        "alice",
        "-p",
        "secret",
        "--service",
        "pop",
        "--hostname",
        "pop.test",
        "--realm",
        "pop.test",
        "--quality-of-protection",
        "qop-auth",
    ];
    let (reply, ok) = gsasl_login(&mut tls, "DIGEST-MD5", &args, None);
    assert!(reply.starts_with("+OK") && ok, "{reply}");
}

#[test]
fn gsasl_anonymous_is_read_only() {
    if !require("gsasl") {
        return;
    }
    let s = setup(
        &[],
        "mechanisms = [\"ANONYMOUS\", \"PLAIN\"]\nanonymous_user = \"alice\"",
        "",
    );
    let server = s.start();
    let mut c = TcpStream::connect(("127.0.0.1", s.plain)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let (reply, _) = gsasl_login(&mut c, "ANONYMOUS", &["-n", "visitor@example.org"], None);
    assert!(reply.starts_with("+OK"), "{reply}");
    let mut cmd = |text: &str| {
        c.write_all(format!("{text}\r\n").as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    };
    assert!(cmd("STAT").starts_with("+OK 1 "));
    assert!(cmd("DELE 1").starts_with("-ERR"));
    assert!(cmd("QUIT").starts_with("+OK"));
    assert_eq!(s.maildir_count(), 1, "nothing deleted");
    drop(server);
}

#[test]
fn curl_plain_authzid_needs_a_master_user() {
    if !require("curl") {
        return;
    }
    let s = setup(
        &[("admin", "{PLAIN}masterpw")],
        "master_users = [\"admin\"]",
        "",
    );
    let _server = s.start();
    let url = format!("pop3://127.0.0.1:{}/", s.plain);
    let as_alice = |user: &str| {
        curl(&[
            "--login-options",
            "AUTH=PLAIN",
            "--sasl-authzid",
            "alice",
            "--user",
            user,
            &url,
        ])
    };
    assert_listing(
        &as_alice("admin:masterpw"),
        "1 36\r\n",
        "master user reads alice's mail",
    );
    assert!(!as_alice("admin:wrong").status.success());
    assert!(
        !as_alice("bob:password").status.success(),
        "bob is no master user"
    );
}

#[test]
fn curl_external_with_a_client_certificate() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    if !require("curl") {
        return;
    }
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pop3 test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let client = |cn: &str, issuer: Option<&Issuer<'_, KeyPair>>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = match issuer {
            Some(i) => p.signed_by(&key, i).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        (cert.pem(), key.serialize_pem())
    };
    let s = setup(&[], "mechanisms = [\"EXTERNAL\", \"PLAIN\"]", "");
    let text = read(&s.config).replace(
        "key = \"key.pem\"\n",
        "key = \"key.pem\"\nclient_ca_file = \"ca.pem\"\n",
    );
    std::fs::write(&s.config, text).unwrap();
    std::fs::write(s.path("ca.pem"), ca_cert.pem()).unwrap();
    for (name, cn, signed) in [
        ("alice", "alice", true),
        ("mallory", "mallory", true),
        ("rogue", "alice", false),
    ] {
        let (cert, key) = client(cn, signed.then_some(&ca));
        std::fs::write(s.path(&format!("{name}.pem")), cert).unwrap();
        std::fs::write(s.path(&format!("{name}.key")), key).unwrap();
    }
    let _server = s.start();
    let url = format!("pop3s://127.0.0.1:{}/", s.implicit);
    let run = |cert: Option<&str>, user: &str| {
        let mut args = vec![
            "-k".to_owned(),
            "--login-options".into(),
            "AUTH=EXTERNAL".into(),
            "--user".into(),
            format!("{user}:"),
        ];
        if let Some(c) = cert {
            args.extend([
                "--cert".into(),
                s.path(&format!("{c}.pem")).display().to_string(),
            ]);
            args.extend([
                "--key".into(),
                s.path(&format!("{c}.key")).display().to_string(),
            ]);
        }
        args.push(url.clone());
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_listing(
        &run(Some("alice"), "alice"),
        "1 36\r\n",
        "EXTERNAL as the certificate's CN",
    );
    assert!(
        !run(Some("mallory"), "alice").status.success(),
        "mallory's certificate is not alice's"
    );
    assert!(
        !run(Some("mallory"), "mallory").status.success(),
        "mallory is no user"
    );
    assert!(
        !run(Some("rogue"), "alice").status.success(),
        "a certificate from another CA"
    );
    assert!(
        !run(None, "alice").status.success(),
        "no certificate, no EXTERNAL"
    );
    // Without a certificate the connection still works for passwords.
    let out = curl(&["-k", "--user", "alice:secret", &url]);
    assert_listing(&out, "1 36\r\n", "PLAIN without a certificate");
}

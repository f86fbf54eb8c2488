// SPDX-License-Identifier: AGPL-3.0-only
//! Runs the real `pop3d` binary on loopback ports over a temporary Maildir.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn pop3d() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pop3d"))
}

/// A port that was free a moment ago.
pub use pop3_testkit::{Postgres, Redis, free_port, is_root, poll_for, skip, wait_for, wait_until};

/// Run `cmd` to its end: exit code (-1 for a signal), stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `cmd`, which must succeed (else the test fails showing its
/// output); its stdout.
pub fn succeed(cmd: &mut Command) -> String {
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{cmd:?}:\n{out}{err}");
    out
}

/// Send a signal (`TERM`, `HUP`, `STOP` ...) to a process.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Where the daemon under test keeps mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Maildir,
    /// A fresh database on the test binary's private PostgreSQL (users
    /// still from the passwd file).
    Postgres,
}

pub struct Setup {
    pub backend: Backend,
    /// The database name, on the postgres backend.
    pub database: Option<String>,
    next_message: std::sync::atomic::AtomicU32,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub plain: u16,
    pub starttls: u16,
    pub implicit: u16,
}

impl Setup {
    /// Config, passwd (alice/secret as PLAIN, bob/password as SHA512-CRYPT),
    /// certificate for localhost and 127.0.0.1, and `messages` in alice's
    /// Maildir.
    pub fn new(messages: &[&[u8]]) -> Setup {
        Setup::on(Backend::Maildir, messages)
    }

    /// As `new`, over `backend`.
    pub fn on(backend: Backend, messages: &[&[u8]]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        std::fs::write(d.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(d.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(
            d.join("passwd"),
            "alice:{PLAIN}secret::::\n\
             bob:{SHA512-CRYPT}$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/::::\n",
        )
        .unwrap();
        let md = d.join("mail/alice");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        let database = (backend == Backend::Postgres).then(|| Postgres::shared().database());
        let storage = match &database {
            None => "maildir = \"mail/%n\"".to_owned(),
            Some(db) => format!(
                "backend = \"postgres\"\nurl = \"{}\"",
                Postgres::shared().url(db)
            ),
        };
        let (plain, starttls, implicit) = (free_port(), free_port(), free_port());
        let config = d.join("pop3d.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
hostname = "pop.test"
unauth_timeout = "30s"
drain_delay = "0s"

[[listener]]
bind = "127.0.0.1:{plain}"
tls = "none"

[[listener]]
bind = "127.0.0.1:{starttls}"
tls = "starttls"

[[listener]]
bind = "127.0.0.1:{implicit}"
tls = "implicit"

[tls]
cert = "cert.pem"
key = "key.pem"

[security]
auth_failure_delay = "0s"
enable_security_logging = false

[storage]
{storage}

[auth]
passwd_file = "passwd"
"#
            ),
        )
        .unwrap();
        let setup = Setup {
            backend,
            database,
            next_message: std::sync::atomic::AtomicU32::new(0),
            dir,
            config,
            plain,
            starttls,
            implicit,
        };
        for m in messages {
            setup.put(m);
        }
        setup
    }

    /// Store a message for alice: a file in her Maildir, or `pop3d
    /// deliver` into the database.
    pub fn put(&self, message: &[u8]) {
        let n = self
            .next_message
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.backend {
            Backend::Maildir => std::fs::write(
                self.path("mail/alice/new")
                    .join(format!("{}.M{n}P1.test", 1_700_000_000 + n)),
                message,
            )
            .unwrap(),
            Backend::Postgres => {
                let (code, stderr) = self.deliver(message);
                assert_eq!(code, 0, "pop3d deliver: {stderr}");
            }
        }
    }

    /// Run `pop3d deliver` for alice; its exit code and what it said.
    pub fn deliver(&self, message: &[u8]) -> (i32, String) {
        let mut child = pop3d()
            .args(["deliver", "--user", "alice", "--config"])
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Alice's messages as the store holds them.
    pub fn count(&self) -> usize {
        match self.backend {
            Backend::Maildir => self.maildir_count(),
            Backend::Postgres => self
                .sql("SELECT count(*) FROM messages")
                .trim()
                .parse()
                .unwrap(),
        }
    }

    /// SQL on this setup's database.
    pub fn sql(&self, sql: &str) -> String {
        Postgres::shared().psql(self.database.as_deref().expect("postgres setup"), sql)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn maildir_count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|s| {
                std::fs::read_dir(self.path("mail/alice").join(s))
                    .unwrap()
                    .count()
            })
            .sum()
    }

    /// A second configuration for the same mail root and users, on other
    /// ports: another `pop3d` process beside the first. Returns the file
    /// and its plain port.
    pub fn twin_config(&self, name: &str) -> (PathBuf, u16) {
        let port = free_port();
        let text = read(&self.config)
            .replace(&format!(":{}\"", self.plain), &format!(":{port}\""))
            .replace(
                &format!(":{}\"", self.starttls),
                &format!(":{}\"", free_port()),
            )
            .replace(
                &format!(":{}\"", self.implicit),
                &format!(":{}\"", free_port()),
            );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        (path, port)
    }

    /// Run `pop3d serve`; its log is kept for the test to read (a pipe, so
    /// for short runs only: nobody drains it meanwhile).
    pub fn start(&self) -> Running {
        let running = self.spawn(&self.config, self.plain, Stdio::piped());
        wait_for_port(self.implicit);
        running
    }

    /// Run `pop3d serve` on another configuration file, log discarded.
    pub fn start_with(&self, config: &Path, port: u16) -> Running {
        self.spawn(config, port, Stdio::null())
    }

    fn spawn(&self, config: &Path, port: u16, log: Stdio) -> Running {
        let child = pop3d()
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let running = Running { child };
        wait_for_port(port);
        running
    }
}

pub struct Running {
    pub child: Child,
}

impl Running {
    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.crash();
    }
}

/// TLS over `tcp` (after STLS or STARTTLS, or on an implicit-TLS port)
/// with `versions`, trusting the setup's certificate for `localhost`.
pub fn tls_client(
    s: &Setup,
    tcp: TcpStream,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(s.path("cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

pub fn wait_for_port(port: u16) {
    wait_until(
        Duration::from_secs(20),
        &format!("pop3d listening on {port}"),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// A blocking line client.
pub struct Client {
    r: BufReader<TcpStream>,
    pub greeting: String,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client {
            r: BufReader::new(s),
            greeting: String::new(),
        };
        c.greeting = c.line();
        c
    }

    /// Wrap a connected stream and read the greeting.
    pub fn from_stream(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client {
            r: BufReader::new(s),
            greeting: String::new(),
        };
        c.greeting = c.line();
        c
    }

    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    /// A multi-line answer, status line and terminating `.` included, as
    /// the exact bytes sent.
    pub fn multiline(&mut self, line: &str) -> Vec<u8> {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        let mut all = Vec::new();
        loop {
            let start = all.len();
            let n = self.r.read_until(b'\n', &mut all).unwrap();
            assert!(n > 0, "connection closed during {line}");
            let got = &all[start..];
            if got.starts_with(b"-ERR") && start == 0 {
                return all;
            }
            if got == b".\r\n" {
                return all;
            }
        }
    }

    pub fn login(port: u16, user: &str, pass: &str) -> Client {
        let mut c = Client::connect(port);
        assert_eq!(c.cmd(&format!("USER {user}")), "+OK\r\n");
        let r = c.cmd(&format!("PASS {pass}"));
        assert!(r.starts_with("+OK"), "{r}");
        c
    }

    /// As `login`, on any server (Courier says more after USER's +OK).
    pub fn login_anywhere(port: u16, user: &str, pass: &str) -> Client {
        let mut c = Client::connect(port);
        for line in [format!("USER {user}"), format!("PASS {pass}")] {
            let r = c.cmd(&line);
            assert!(r.starts_with("+OK"), "{r}");
        }
        c
    }
}

/// Where a program is: on PATH, or in the sbin folders root's PATH may
/// lack (haproxy lives in /usr/sbin).
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

pub fn have(tool: &str) -> bool {
    tool_path(tool).is_some()
}

/// Real-client tests need their client installed (see [`skip`]).
pub fn require(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    skip(&format!("{tool} is not installed (apt-get install {tool})"));
    false
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `rounds` times, one client on each port sends PASS at the same moment
/// and both sessions stay open until both have answered: exactly one
/// `+OK` (the other `-ERR [IN-USE]`) every round. The winner QUITs.
pub fn one_winner_per_round(ports: [u16; 2], rounds: usize) {
    let barrier = std::sync::Barrier::new(2);
    for round in 0..rounds {
        let answers: Vec<(Client, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ports
                .iter()
                .map(|&port| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let mut c = Client::connect(port);
                        assert_eq!(c.cmd("USER alice"), "+OK\r\n");
                        barrier.wait();
                        let answer = c.cmd("PASS secret");
                        (c, answer)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = answers.iter().filter(|(_, a)| a.starts_with("+OK")).count();
        assert_eq!(
            won,
            1,
            "round {round}: {answers:?}",
            answers = answers.iter().map(|(_, a)| a).collect::<Vec<_>>()
        );
        for (_, a) in &answers {
            assert!(
                a.starts_with("+OK") || a.starts_with("-ERR [IN-USE]"),
                "round {round}: {a}"
            );
        }
        for (mut c, a) in answers {
            if a.starts_with("+OK") {
                assert!(c.cmd("QUIT").starts_with("+OK"));
            }
        }
    }
}

/// One HTTP GET on 127.0.0.1: the raw response, status line first.
pub fn http(port: u16, path: &str) -> String {
    try_http(port, path).unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"))
}

/// [`http`] that tells a server not (yet) listening apart.
pub fn try_http(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}

/// HAProxy (Debian's) on the configuration file `cfg`, in the foreground;
/// the caller stops it.
pub fn start_haproxy(cfg: &Path) -> Child {
    Command::new(tool_path("haproxy").expect("haproxy is installed"))
        .args(["-db", "-f"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// An LMTP or SMTP client over any stream: whole replies, every line of
/// a multi-line one (what is there when the peer closes).
pub struct Lmtp<S: std::io::Read + Write = TcpStream> {
    pub r: BufReader<S>,
}

impl Lmtp<TcpStream> {
    /// Connect and read the greeting.
    pub fn connect(port: u16) -> (Lmtp, String) {
        Lmtp::try_connect(port).unwrap()
    }

    pub fn try_connect(port: u16) -> std::io::Result<(Lmtp, String)> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut c = Lmtp::over(s);
        let greeting = c.reply();
        Ok((c, greeting))
    }
}

impl<S: std::io::Read + Write> Lmtp<S> {
    pub fn over(stream: S) -> Lmtp<S> {
        Lmtp {
            r: BufReader::new(stream),
        }
    }

    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub fn try_send(&mut self, text: &str) -> std::io::Result<()> {
        self.r.get_mut().write_all(text.as_bytes())
    }

    pub fn send(&mut self, text: &str) {
        self.try_send(text).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }
}

/// The system user `vmail` (created if missing) owns `path`, as Dovecot's
/// and Courier's mail processes refuse root. Returns its uid and gid.
pub fn vmail_owns(path: &Path) -> (u32, u32) {
    let _ = Command::new(tool_path("useradd").unwrap())
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "vmail",
        ])
        .stderr(Stdio::null())
        .status();
    let ok = Command::new("chown")
        .args(["-R", "vmail:vmail"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "vmail"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// UIDL, LIST and every message as one server sends them, then QUIT.
pub fn listing(port: u16) -> (String, String, Vec<Vec<u8>>) {
    let mut c = Client::login_anywhere(port, "alice", "secret");
    // Status lines are free text and differ; the listings must not.
    let body = |r: Vec<u8>| {
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("+OK"), "{text}");
        text[text.find('\n').unwrap() + 1..].to_owned()
    };
    let uidl = body(c.multiline("UIDL"));
    let list = body(c.multiline("LIST"));
    let count = list.lines().count() - 1;
    let bodies = (1..=count)
        .map(|i| {
            let mut r = c.multiline(&format!("RETR {i}"));
            // The status line differs between servers; the bytes do not.
            let first = r.iter().position(|&b| b == b'\n').unwrap() + 1;
            r.drain(..first);
            r
        })
        .collect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    (uidl, list, bodies)
}

/// Run `pop3d import-pop3` with `args` against `new`'s configuration:
/// its exit code and what it printed.
pub fn import_pop3(new: &Setup, args: &[&str]) -> (i32, String) {
    let out = pop3d()
        .args(["import-pop3", "--config"])
        .arg(&new.config)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

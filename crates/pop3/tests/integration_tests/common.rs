// SPDX-License-Identifier: AGPL-3.0-only
//! Test harness: a real server on 127.0.0.1:0 over a temporary Maildir and
//! passwd file, generated certificates, and a client that asserts on the
//! raw bytes of replies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pop3::config::{ListenerConfig, LmtpConfig, Pop3Config, TlsMode};
use pop3::{Pop3SessionManager, Server};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub use pop3_testkit::{Postgres, skip};

pub const PASSWD: &str = "\
alice:{PLAIN}secret:1000:1000::%HOME%/alice
mrose:{PLAIN}tanstaaf:1001:1001::%HOME%/mrose
bob:{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0:1002:1002::%HOME%/bob
nopass::1003:1003::%HOME%/nopass
jörg:{PLAIN}pässwört:1004:1004::%HOME%/joerg
carol:{PLAIN}secret:1005:1005::%HOME%/carol::userdb_expire=5d userdb_login_delay=60 userdb_quota_rule=*:bytes=300
";

/// A generated certificate for localhost.
pub struct TestCert {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn test_cert() -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    TestCert {
        cert: ck.cert.der().clone(),
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

/// Where a test server keeps mail: the suites that are about POP3, not
/// about one store, run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Maildir,
    /// A fresh database on the test binary's private PostgreSQL; users
    /// still come from the passwd file.
    Postgres,
}

pub struct TestServer {
    pub backend: Backend,
    /// The database name, on the postgres backend.
    pub database: Option<String>,
    next_message: std::sync::atomic::AtomicU32,
    pub dir: tempfile::TempDir,
    pub plain: SocketAddr,
    pub starttls: SocketAddr,
    pub implicit: SocketAddr,
    pub cert: CertificateDer<'static>,
    pub manager: Arc<Pop3SessionManager>,
    pub metrics: Option<SocketAddr>,
    /// The first LMTP listener, when the configuration has one.
    pub lmtp: Option<SocketAddr>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.manager.shutdown();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Start with a config adjusted by `tweak` (listeners and paths are set
    /// by the harness).
    pub async fn start_with(tweak: impl FnOnce(&mut Pop3Config)) -> TestServer {
        Self::start_with_clock(tweak, Arc::new(pop3::security::SystemClock)).await
    }

    /// As `start_with`, with a clock the test controls.
    pub async fn start_with_clock(
        tweak: impl FnOnce(&mut Pop3Config),
        clock: Arc<dyn pop3::security::Clock>,
    ) -> TestServer {
        Self::launch(Backend::Maildir, tweak, clock).await
    }

    /// A server over `backend`.
    pub async fn start_on(backend: Backend) -> TestServer {
        Self::start_on_with(backend, |_| {}).await
    }

    pub async fn start_on_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Pop3Config),
    ) -> TestServer {
        Self::launch(backend, tweak, Arc::new(pop3::security::SystemClock)).await
    }

    /// A server over `backend` whose store and security windows read
    /// `clock`.
    pub async fn start_on_with_clock(
        backend: Backend,
        tweak: impl FnOnce(&mut Pop3Config),
        clock: Arc<dyn pop3::security::Clock>,
    ) -> TestServer {
        Self::launch(backend, tweak, clock).await
    }

    /// The user database's record of `user`.
    pub async fn user(&self, user: &str) -> Arc<pop3::auth::UserRecord> {
        self.manager
            .services()
            .users
            .lookup(user)
            .await
            .unwrap()
            .unwrap()
    }

    async fn launch(
        backend: Backend,
        tweak: impl FnOnce(&mut Pop3Config),
        clock: Arc<dyn pop3::security::Clock>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, PASSWD.replace("%HOME%", home.to_str().unwrap())).unwrap();
        let tc = test_cert();
        std::fs::write(dir.path().join("cert.pem"), &tc.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &tc.key_pem).unwrap();

        let mut config = Pop3Config::default();
        config.server.hostname = "pop.test".into();
        config.auth.passwd_file = passwd;
        config.storage.maildir = "%h/Maildir".into();
        config.storage.lock_dir = dir.path().join("run");
        config.tls = Some(pop3::config::TlsConfig {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca_file: None,
        });
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        config.listeners = vec![
            ListenerConfig::new(any, TlsMode::None),
            ListenerConfig::new(any, TlsMode::Starttls),
            ListenerConfig::new(any, TlsMode::Implicit),
        ];
        // Tests that are not about abuse make no delays and are not paced;
        // the abuse tests set their own values.
        config.security.auth_failure_delay = Duration::ZERO;
        config.security.max_commands_per_minute = 100_000;
        config.security.enable_security_logging = false;
        let database = (backend == Backend::Postgres).then(|| {
            let pg = Postgres::shared();
            let name = pg.database();
            config.storage.backend = pop3::config::StorageBackend::Postgres;
            config.storage.url = Some(pg.url(&name));
            config.performance.connection_pool_size = 8;
            name
        });
        tweak(&mut config);
        config.validate().expect("test config is valid");

        let manager = Arc::new(Pop3SessionManager::from_config_with_clock(config, clock).unwrap());
        let server = Server::bind(manager.clone()).await.unwrap();
        let addrs = server.local_addrs();
        let find = |m: TlsMode| {
            addrs
                .iter()
                .find(|(_, mode)| *mode == m)
                .map(|(a, _)| *a)
                .unwrap_or(any)
        };
        let metrics = server.metrics_addr();
        let lmtp = server.lmtp_addrs().first().copied();
        tokio::spawn(server.run());
        TestServer {
            backend,
            database,
            next_message: std::sync::atomic::AtomicU32::new(1),
            plain: find(TlsMode::None),
            starttls: find(TlsMode::Starttls),
            implicit: find(TlsMode::Implicit),
            cert: tc.cert,
            manager,
            dir,
            metrics,
            lmtp,
        }
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user).join("Maildir")
    }

    /// Deliver a message into new/ with a name that sorts by `seq`.
    pub fn deliver(&self, user: &str, seq: u32, body: &[u8]) -> PathBuf {
        deliver(&self.maildir(user), seq, body)
    }

    /// Store a message for `user` in whichever backend the server has,
    /// after any put before it.
    pub async fn put(&self, user: &str, body: &[u8]) {
        let seq = self
            .next_message
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let services = self.manager.services();
        let record = services.users.lookup(user).await.unwrap().unwrap();
        match self.backend {
            Backend::Maildir => {
                let home = record.home.as_ref().unwrap();
                deliver(&home.join("Maildir"), seq, body);
            }
            Backend::Postgres => {
                let mut input = body;
                services.store.deliver(&record, &mut input).await.unwrap();
            }
        }
    }

    /// How many messages the store holds for `user`, read behind the
    /// server's back.
    pub fn stored(&self, user: &str) -> usize {
        match self.backend {
            Backend::Maildir => ["new", "cur"]
                .iter()
                .map(|d| std::fs::read_dir(self.maildir(user).join(d)).map_or(0, |r| r.count()))
                .sum(),
            Backend::Postgres => self
                .sql(&format!(
                    "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
                     WHERE b.login = '{user}'"
                ))
                .trim()
                .parse()
                .unwrap(),
        }
    }

    /// Run SQL on the server's database (postgres backend only).
    pub fn sql(&self, sql: &str) -> String {
        let db = self.database.as_deref().expect("a postgres test server");
        Postgres::shared().psql(db, sql)
    }

    pub async fn connect(&self) -> Client<TcpStream> {
        Client::connect(self.plain).await
    }

    /// Connect to the plain listener and log in.
    pub async fn login(&self, user: &str, pass: &str) -> Client<TcpStream> {
        let mut c = self.connect().await;
        c.cmd(&format!("USER {user}")).await;
        let r = c.cmd(&format!("PASS {pass}")).await;
        assert!(r.starts_with("+OK"), "login failed: {r}");
        c
    }

    /// One login over USER/PASS on the plain listener: the reply to PASS
    /// (QUIT sent after a `+OK`).
    pub async fn try_login(&self, user: &str, pass: &str) -> String {
        let mut c = self.connect().await;
        c.cmd(&format!("USER {user}")).await;
        let r = c.cmd(&format!("PASS {pass}")).await;
        if r.starts_with("+OK") {
            c.cmd("QUIT").await;
        }
        r
    }

    /// Wait (`within`) until `user` logs in with `pass`: a change that
    /// takes a moment to apply, a database coming back.
    pub async fn wait_for_login(&self, within: Duration, what: &str, user: &str, pass: &str) {
        wait_for(within, what, async || {
            self.try_login(user, pass)
                .await
                .starts_with("+OK")
                .then_some(())
        })
        .await
    }

    /// Log in as soon as the maildrop is free: `[IN-USE]` is retried
    /// (for up to 2 s), anything else fails the test.
    pub async fn login_when_free(&self, user: &str, pass: &str) -> Client<TcpStream> {
        let what = format!("{user}'s maildrop freed");
        wait_for(Duration::from_secs(2), &what, async || {
            let mut c = self.connect().await;
            c.cmd(&format!("USER {user}")).await;
            let r = c.cmd(&format!("PASS {pass}")).await;
            assert!(
                r.starts_with("+OK") || r.starts_with("-ERR [IN-USE]"),
                "{r}"
            );
            r.starts_with("+OK").then_some(c)
        })
        .await
    }

    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(pop3::server::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// Poll `check` until it gives a value, for at most `within` (then the
/// test fails naming `what`): a slow machine makes a test slower, not red,
/// and a fast one does not wait for nothing.
pub async fn wait_for<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(seen) = check().await {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_for`] a condition the test can look at without waiting.
pub async fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    wait_for(within, what, async || ready().then_some(())).await
}

pub fn deliver(maildir: &Path, seq: u32, body: &[u8]) -> PathBuf {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let path = maildir
        .join("new")
        .join(format!("{}.M{seq}P1.test", 1_700_000_000 + seq));
    std::fs::write(&path, body).unwrap();
    path
}

/// A line-oriented client that returns replies as raw text.
pub struct Client<S> {
    pub io: BufReader<S>,
    pub greeting: String,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        Client::over(s).await
    }

    /// Connect from a chosen loopback address (127.0.0.2, 127.0.0.3 ...), so
    /// one test can be several clients.
    pub async fn connect_from(from: &str, addr: SocketAddr) -> Self {
        Client::over(connect_from(from, addr).await).await
    }
}

pub async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn over(s: S) -> Self {
        let mut c = Client {
            io: BufReader::new(s),
            greeting: String::new(),
        };
        c.greeting = c.line().await;
        c
    }

    /// Wrap without reading a greeting.
    pub fn raw(s: S) -> Self {
        Client {
            io: BufReader::new(s),
            greeting: String::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One reply line including its CRLF; empty at end of stream.
    pub async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(WAIT, self.io.read_until(b'\n', &mut buf))
            .await
            .expect("reply within 10s")
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Send a command, return the first reply line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await
    }

    /// Raw bytes of a multi-line body up to and including `.\r\n`.
    pub async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(WAIT, self.io.read_until(b'\n', &mut line))
                .await
                .expect("body within 10s")
                .unwrap();
            assert!(n > 0, "connection closed inside a multi-line reply");
            out.extend_from_slice(&line);
            if line == b".\r\n" {
                return out;
            }
        }
    }

    /// Send a command expecting `+OK` and a multi-line body; return both.
    pub async fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line).await;
        assert!(status.starts_with("+OK"), "{line}: {status}");
        let body = self.body().await;
        (status, body)
    }

    /// Read until the server closes; returns what came.
    pub async fn until_closed(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.io.read_to_end(&mut rest))
            .await
            .expect("server closes within 10s")
            .unwrap_or(0);
        rest
    }

    pub fn into_inner(self) -> S {
        self.io.into_inner()
    }
}

/// The lines of a multi-line body without the terminator.
pub fn lines(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut v: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    assert_eq!(v.pop().as_deref(), Some(""));
    assert_eq!(v.pop().as_deref(), Some("."));
    v
}

/// One HTTP GET; the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample line, e.g. `pop3_logins_total{mechanism="USER",result="ok"}`.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
}

/// Deliver `body` to `rcpt` over LMTP; the reply to DATA's end (or the
/// first refusal on the way).
pub async fn lmtp(addr: SocketAddr, rcpt: &str, body: &str) -> String {
    let mut c = Client::connect(addr).await;
    assert!(c.greeting.starts_with("220"), "{}", c.greeting);
    let mut r = c.cmd("LHLO test").await;
    while r.starts_with("250-") {
        r = c.line().await;
    }
    assert!(
        c.cmd("MAIL FROM:<sender@example.org>")
            .await
            .starts_with("250")
    );
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(format!("{body}.\r\n").as_bytes()).await;
    let r = c.line().await;
    c.cmd("QUIT").await;
    r
}

/// An LMTP listener on a free loopback port (`TestServer::lmtp`).
pub fn with_lmtp(c: &mut Pop3Config) {
    c.lmtp = vec![LmtpConfig {
        bind: Some("127.0.0.1:0".parse().unwrap()),
        path: None,
        max_connections: 8,
    }];
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Listeners and admission: binds the configured addresses, accepts,
//! applies connection limits before the greeting, runs implicit TLS, and
//! hands each connection to a [`Session`](crate::session::Session) through
//! [`Pop3SessionManager`], which embedding hosts use directly.

pub mod limits;
pub mod proxy;
/// TLS lives on the ground floor (the database, bearer tokens and the
/// import client use it too); the old path stays for embedders.
pub use crate::tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::auth::{UserDb, UserDbError};
use crate::config::{ListenerConfig, LmtpConfig, Pop3Config, SecurityConfig, TlsMode};
use crate::db::Database;
use crate::op::Connection;
use crate::security::{Clock, Guard, SecurityLog, SystemClock, address};
use crate::services::{Services, Shared};
use crate::session::{self, End, Session, Transport};
use crate::setup::Backends;
use crate::store::MailStore;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ListenerLabels;
use limits::{ConnectionLimits, Refusal};
pub use tokio_util::sync::CancellationToken;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The message names the configuration key.
    #[error("{0}")]
    UserDb(#[from] UserDbError),
    #[error("cannot listen for LMTP on {at}: {source}")]
    LmtpBind { at: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener tls = \"{0}\" but no [tls] section is configured")]
    NoTls(&'static str),
    #[error("security.security_log_file: {0}")]
    SecurityLog(std::io::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::SetupError),
}

fn security_log(config: &Pop3Config) -> Result<SecurityLog, ServerError> {
    SecurityLog::new(
        config.security.enable_security_logging,
        config.security.security_log_file.as_deref(),
    )
    .map(|log| log.of_node(config.server.node()))
    .map_err(ServerError::SecurityLog)
}

/// Serves POP3 sessions over streams that the caller accepted.
///
/// The services (configuration, users, store, TLS) can be replaced at run
/// time with [`Pop3SessionManager::reload`]: sessions already running keep
/// the generation they started with.
pub struct Pop3SessionManager {
    services: RwLock<Arc<Services>>,
    limits: ConnectionLimits,
    connections: AtomicU64,
    shared: Shared,
    listeners_bound: AtomicBool,
    /// A graceful stop has begun: `/readyz` fails, sessions still served.
    draining: AtomicBool,
    /// Whether a host supplied the user database and store (a reload
    /// keeps them) or the configuration named them.
    origin: Origin,
}

enum Origin {
    Host,
    /// With the database pool the configured backends share, if any.
    Config(RwLock<Option<Arc<Database>>>),
}

impl Pop3SessionManager {
    /// A manager over the given user database and store; TLS comes from
    /// `config.tls` when present.
    pub fn new(
        config: Pop3Config,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
    ) -> Result<Self, ServerError> {
        let tls = config.tls.as_ref().map(tls::load).transpose()?;
        Self::with_tls(config, users, store, tls)
    }

    /// As [`Pop3SessionManager::new`], with a TLS configuration built by the
    /// caller (or none).
    pub fn with_tls(
        config: Pop3Config,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, ServerError> {
        Self::with_clock(config, users, store, tls, Arc::new(SystemClock))
    }

    /// As [`Pop3SessionManager::with_tls`], with the clock that security
    /// windows and blocks are measured by (tests advance one by hand).
    pub fn with_clock(
        config: Pop3Config,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
        tls: Option<Arc<rustls::ServerConfig>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let limits = ConnectionLimits::new(
            config.performance.max_concurrent_sessions,
            config.security.max_connections_per_ip,
        );
        let metrics = Arc::new(Metrics::with_mechanisms(crate::auth::sasl::ALL));
        let guard = Guard::new(
            config.security.clone(),
            clock,
            security_log(&config)?,
            metrics.clone(),
        );
        let redis = crate::security::shared::connection_info(&config.security)
            .map_err(|(key, why)| crate::auth::SetupError::new(&key, why))?;
        let shared_limits = match redis {
            Some(info) => Some(Arc::new(
                crate::security::SharedLimits::new(info, metrics.clone())
                    .map_err(|e| crate::auth::SetupError::new("security.shared_state", e))?,
            )),
            None => None,
        };
        metrics
            .node_info
            .get_or_create(&crate::telemetry::metrics::NodeLabels {
                node: config.server.node().to_owned(),
            })
            .set(1);
        let salt_key = crate::services::salt_key(&config)?;
        let shared = Shared::new(metrics, Arc::new(guard), shared_limits, salt_key);
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let services = Services::new(Arc::new(config), users, store, tls, &shared)?;
        Ok(Pop3SessionManager {
            services: RwLock::new(Arc::new(services)),
            limits,
            connections: AtomicU64::new(0),
            shared,
            listeners_bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            origin: Origin::Host,
        })
    }

    /// Replace the `[security]` section (limits apply to new connections).
    pub fn with_security_config(self, security: SecurityConfig) -> Result<Self, ServerError> {
        let current = self.services();
        let mut config = (*current.config).clone();
        config.security = security;
        let log = security_log(&config)?;
        self.install(
            config,
            current.users.clone(),
            current.store.clone(),
            current.tls.clone(),
            log,
        )?;
        Ok(self)
    }

    /// The passwd file and Maildir store named in the configuration.
    pub fn from_config(config: Pop3Config) -> Result<Self, ServerError> {
        Self::from_config_with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Pop3SessionManager::from_config`], measuring security windows
    /// with `clock`.
    pub fn from_config_with_clock(
        config: Pop3Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let Backends {
            users,
            store,
            database,
        } = Backends::from_config_with_clock(&config, crate::store::Clock::new(clock.clone()))?;
        let tls = config.tls.as_ref().map(tls::load).transpose()?;
        let manager = Self::with_clock(config, users, store, tls, clock)?;
        Ok(Pop3SessionManager {
            origin: Origin::Config(RwLock::new(database)),
            ..manager
        })
    }

    /// Swap in a new configuration with its TLS files and, when the
    /// configuration named them, its passwd file and store (a store whose
    /// settings did not change is kept, locks and cache included). A user
    /// database and store a host supplied are kept. On any error the
    /// running configuration stays in force. Listener addresses are bound
    /// once; changing them needs a restart.
    pub fn reload(&self, config: Pop3Config) -> Result<(), ServerError> {
        let current = self.services();
        let listeners_changed = config.listeners != current.config.listeners;
        let result = (|| {
            let tls = config.tls.as_ref().map(tls::load).transpose()?;
            let in_use = Backends {
                users: current.users.clone(),
                store: current.store.clone(),
                database: None,
            };
            let backends = match &self.origin {
                Origin::Host => in_use,
                Origin::Config(database) => {
                    let in_use = Backends {
                        database: database.read().unwrap_or_else(|p| p.into_inner()).clone(),
                        ..in_use
                    };
                    in_use.reloaded(&current.config, &config)?
                }
            };
            let log = security_log(&config)?;
            // Secrets rotate without a restart: the Redis password file is
            // read again (the database's, in `reloaded`).
            if let Some(limits) = &self.shared.shared_limits
                && let Some(info) = crate::security::shared::connection_info(&config.security)
                    .map_err(|(key, why)| crate::auth::SetupError::new(&key, why))?
            {
                limits
                    .rotate(info)
                    .map_err(|e| crate::auth::SetupError::new("security.shared_state", e))?;
            }
            self.install(
                config,
                backends.users,
                backends.store,
                tls.map(tokio_rustls::TlsAcceptor::from),
                log,
            )?;
            if let Origin::Config(database) = &self.origin {
                *database.write().unwrap_or_else(|p| p.into_inner()) = backends.database;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.shared.metrics.reload(false);
            return Err(e);
        }
        if listeners_changed {
            tracing::warn!("listener changes take effect after a restart");
        }
        self.shared.metrics.reload(true);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    fn install(
        &self,
        config: Pop3Config,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        log: SecurityLog,
    ) -> Result<(), ServerError> {
        let (max_sessions, max_per_ip) = (
            config.performance.max_concurrent_sessions,
            config.security.max_connections_per_ip,
        );
        let security = config.security.clone();
        let services = Services::new(Arc::new(config), users, store, tls, &self.shared)?;
        self.limits.set_maxima(max_sessions, max_per_ip);
        self.shared.guard.reconfigure(security, log);
        *self.services.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(services);
        Ok(())
    }

    /// The services new sessions start with.
    pub fn services(&self) -> Arc<Services> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn guard(&self) -> &Arc<Guard> {
        &self.shared.guard
    }

    /// Start a graceful shutdown: listeners stop accepting, sessions
    /// waiting for a command are told `-ERR [SYS/TEMP]` and closed, commands
    /// under way (an UPDATE after QUIT included) run to their end.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Fail `/readyz` from now on while still serving (the first step of
    /// a graceful stop behind a balancer: see `server.drain_delay`).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Why the server is not ready, if it is not: listeners not bound, user
    /// database or mail store unreachable, shutting down.
    pub async fn readiness(&self) -> Result<(), Vec<String>> {
        let services = self.services();
        let mut reasons = Vec::new();
        if !self.listeners_bound.load(Ordering::Acquire) {
            reasons.push("listeners are not bound".to_owned());
        }
        if self.shared.shutdown.is_cancelled() {
            reasons.push("shutting down".to_owned());
        } else if self.draining.load(Ordering::Acquire) {
            reasons.push("draining: stopping soon, new sessions go elsewhere".to_owned());
        }
        if let Err(e) = services.users.health().await {
            reasons.push(format!("user database: {e}"));
        }
        if let Err(e) = services.store.health().await {
            reasons.push(format!("mail store: {e}"));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// What works, but not as configured: said by `/readyz` without
    /// failing it (a node whose Redis is away keeps serving).
    pub fn degraded(&self) -> Vec<String> {
        match &self.shared.shared_limits {
            Some(l) if !l.is_up() => vec![
                "shared state (Redis) unavailable: this node counts failures and blocks alone"
                    .to_owned(),
            ],
            _ => Vec::new(),
        }
    }

    fn apop_timestamp(&self, services: &Services, n: u64) -> Option<String> {
        let cfg = &services.config.server;
        if !cfg.enable_apop {
            return None;
        }
        let mut nonce = [0u8; 8];
        // Without randomness there is no APOP on this connection rather
        // than a guessable timestamp.
        if let Err(e) = getrandom::fill(&mut nonce) {
            tracing::error!("no randomness for the APOP timestamp: {e}");
            return None;
        }
        let nonce = crate::hex::encode(&nonce);
        Some(format!(
            "<{}.{n}.{nonce}@{}>",
            std::process::id(),
            cfg.hostname
        ))
    }

    /// Serve one accepted connection until it ends. `mode` is the TLS mode
    /// of the listener it came from.
    pub async fn serve<S>(&self, stream: S, peer: SocketAddr, mode: TlsMode) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.serve_on(stream, peer, mode, "embedded").await
    }

    /// A connection from one of our listeners: the PROXY header first when
    /// the listener wants one, then the session.
    async fn accept(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        lc: &ListenerConfig,
        name: &str,
    ) {
        // Once, here: a dual-stack listener reports IPv4 clients as
        // ::ffff:a.b.c.d, which no IPv4 network would match.
        let peer = address::canonical_socket(peer);
        let peer = if lc.proxy_protocol {
            let guard = &self.shared.guard;
            if !lc
                .proxy_trusted_networks
                .iter()
                .any(|n| n.contains(&peer.ip()))
            {
                self.shared.metrics.refused("proxy");
                guard
                    .log()
                    .proxy_rejected(peer.ip(), &proxy::ProxyError::Untrusted.to_string());
                return;
            }
            let timeout = self.services().config.server.unauth_timeout;
            match proxy::read_header(&mut stream, peer, timeout).await {
                Ok(client) => client,
                Err(e) => {
                    self.shared.metrics.refused("proxy");
                    guard.log().proxy_rejected(peer.ip(), &e.to_string());
                    return;
                }
            }
        } else {
            peer
        };
        self.serve_on(stream, peer, lc.tls, name).await;
    }

    async fn serve_on<S>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        listener: &str,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        // A PROXY header's source, or an embedding host's peer, may be
        // IPv4-mapped too.
        let peer = address::canonical_socket(peer);
        let services = self.services();
        let metrics = &self.shared.metrics;
        let guard = &self.shared.guard;
        if let Some(left) = guard.blocked(peer.ip()) {
            metrics.refused("blocked");
            guard.log().connection_refused(peer.ip(), "address blocked");
            let text = format!(
                "Too many failures from your address, try again in {} seconds",
                left.as_secs().max(1)
            );
            refuse(&mut stream, mode, &text).await;
            return End::Closed;
        }
        let _slot = match self.limits.admit(guard.key(peer.ip())) {
            Ok(slot) => slot,
            Err(refusal) => {
                let (text, reason) = match refusal {
                    Refusal::TooManySessions => {
                        ("Server busy, try again later", "max_concurrent_sessions")
                    }
                    Refusal::TooManyFromAddress => (
                        "Too many connections from your address",
                        "max_connections_per_ip",
                    ),
                };
                metrics.refused(reason);
                guard.log().connection_refused(peer.ip(), reason);
                refuse(&mut stream, mode, text).await;
                return End::Closed;
            }
        };
        let labels = ListenerLabels {
            listener: listener.to_owned(),
            tls: mode.as_str(),
        };
        metrics.sessions.get_or_create(&labels).inc();
        let _active = ActiveGauge::new(metrics.sessions_active.get_or_create(&labels).clone());
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        let tls_ready = services.tls.is_some();
        // Counted from here, handshake included, and never renewed.
        let login_deadline = tokio::time::Instant::now() + services.config.server.login_timeout;
        let transport = match mode {
            TlsMode::Implicit => {
                let Some(acceptor) = services.tls.clone() else {
                    return End::TlsFailed;
                };
                let handshake = tokio::time::timeout_at(
                    login_deadline
                        .min(tokio::time::Instant::now() + services.config.server.unauth_timeout),
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        guard.log().tls_failed(peer.ip(), &e.to_string());
                        return End::TlsFailed;
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        guard.log().tls_failed(peer.ip(), "handshake timed out");
                        return End::TlsFailed;
                    }
                }
            }
            TlsMode::None | TlsMode::Starttls => Transport::Plain(stream),
        };
        let mut conn = Connection {
            peer,
            secure: transport.is_tls(),
            stls_available: mode == TlsMode::Starttls
                && services.config.server.enable_stls
                && tls_ready,
            apop_timestamp: self.apop_timestamp(&services, n),
            channel_binding: None,
            client_identity: None,
            utf8: false,
        };
        if let Transport::Tls(tls) = &transport {
            session::tls_facts::learn(&mut conn, tls.get_ref().1, &services);
        }
        let started = std::time::Instant::now();
        // The generation this session ran with names its node.
        let config = services.config.clone();
        let summary = Session::new(transport, conn, services)
            .login_by(login_deadline)
            .run()
            .await;
        tracing::info!(
            target: "pop3::session",
            node = config.server.node(),
            peer = %peer,
            listener,
            tls = mode.as_str(),
            user = summary.stats.user.as_deref().unwrap_or("-"),
            retrieved = summary.stats.retrieved,
            deleted = summary.stats.deleted,
            bytes = summary.stats.bytes_sent,
            duration_ms = started.elapsed().as_millis() as u64,
            end = ?summary.end,
            "session end"
        );
        summary.end
    }
}

/// Answer `-ERR [SYS/TEMP] text` before the greeting and close. On an
/// implicit-TLS listener the client expects a TLS handshake, and plaintext
/// would read as garbage ("wrong version number"): it is closed without a
/// word, which TLS clients report as a dropped connection.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, mode: TlsMode, text: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if mode != TlsMode::Implicit {
            stream.write_all(&session::refusal(text)).await?;
        }
        stream.shutdown().await
    })
    .await;
}

/// Decrements the active-sessions gauge however the session ends.
struct ActiveGauge(prometheus_client::metrics::gauge::Gauge);

impl ActiveGauge {
    fn new(g: prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        ActiveGauge(g)
    }
}

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Bound listeners, ready to accept.
pub struct Server {
    manager: Arc<Pop3SessionManager>,
    listeners: Vec<(TcpListener, ListenerConfig)>,
    lmtp: Vec<(LmtpListener, LmtpConfig)>,
    http: Option<TcpListener>,
}

/// Where an LMTP listener takes connections.
enum LmtpListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

impl LmtpListener {
    async fn bind(config: &LmtpConfig) -> Result<LmtpListener, ServerError> {
        let fail = |source: std::io::Error| ServerError::LmtpBind {
            at: config.name(),
            source,
        };
        match (&config.bind, &config.path) {
            (Some(addr), _) => TcpListener::bind(addr)
                .await
                .map(LmtpListener::Tcp)
                .map_err(fail),
            (None, Some(path)) => {
                // A socket left by an earlier run is replaced; anything
                // else at that path is not touched.
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(path).map_err(fail)?;
                }
                tokio::net::UnixListener::bind(path)
                    .map(LmtpListener::Unix)
                    .map_err(fail)
            }
            (None, None) => Err(fail(std::io::Error::other("no bind or path"))),
        }
    }
}

impl Server {
    /// Bind every `[[listener]]` of the manager's configuration, and the
    /// `[metrics]` listener when configured.
    pub async fn bind(manager: Arc<Pop3SessionManager>) -> Result<Server, ServerError> {
        let services = manager.services();
        let mut listeners = Vec::new();
        for l in &services.config.listeners {
            if l.tls != TlsMode::None && services.tls.is_none() {
                return Err(ServerError::NoTls(l.tls.as_str()));
            }
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: l.bind,
                    source,
                })?;
            if let Ok(addr) = listener.local_addr() {
                manager
                    .metrics()
                    .listener(&addr.to_string(), l.tls.as_str());
            }
            listeners.push((listener, l.clone()));
        }
        let http = match &services.config.metrics {
            Some(m) => {
                Some(
                    TcpListener::bind(m.bind)
                        .await
                        .map_err(|source| ServerError::Bind {
                            addr: m.bind,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let mut lmtp = Vec::new();
        for l in &services.config.lmtp {
            lmtp.push((LmtpListener::bind(l).await?, l.clone()));
        }
        manager.listeners_bound.store(true, Ordering::Release);
        Ok(Server {
            manager,
            listeners,
            lmtp,
            http,
        })
    }

    /// The bound addresses (port 0 resolved) with their TLS modes.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, TlsMode)> {
        self.listeners
            .iter()
            .filter_map(|(l, c)| l.local_addr().ok().map(|a| (a, c.tls)))
            .collect()
    }

    /// The bound addresses of the TCP LMTP listeners.
    pub fn lmtp_addrs(&self) -> Vec<SocketAddr> {
        self.lmtp
            .iter()
            .filter_map(|(l, _)| match l {
                LmtpListener::Tcp(t) => t.local_addr().ok(),
                LmtpListener::Unix(_) => None,
            })
            .collect()
    }

    /// The bound address of the metrics listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accept until the manager shuts down, then give sessions up to
    /// `server.shutdown_timeout` to finish.
    pub async fn run(self) {
        let shutdown = self.manager.shutdown_token();
        let tracker = TaskTracker::new();
        if let Some(http) = self.http {
            if let Ok(addr) = http.local_addr() {
                tracing::info!(%addr, "metrics and health listening");
            }
            tokio::spawn(crate::telemetry::http::serve(
                http,
                self.manager.clone(),
                shutdown.clone(),
            ));
        }
        for (listener, lc) in self.listeners {
            let Ok(addr) = listener.local_addr() else {
                continue;
            };
            let mode = lc.tls;
            tracing::info!(%addr, tls = mode.as_str(), proxy_protocol = lc.proxy_protocol, "listening");
            let name = addr.to_string();
            let manager = self.manager.clone();
            let shutdown = shutdown.clone();
            let sessions = tracker.clone();
            let lc = Arc::new(lc);
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let manager = manager.clone();
                            let name = name.clone();
                            let lc = lc.clone();
                            sessions.spawn(async move {
                                manager.accept(stream, peer, &lc, &name).await;
                            });
                        }
                        Err(e) => {
                            // Out of descriptors and the like: back off
                            // rather than spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        for (listener, lc) in self.lmtp {
            tracing::info!(at = %lc.name(), "LMTP listening");
            tracker.spawn(accept_lmtp(
                listener,
                Arc::new(Semaphore::new(lc.max_connections)),
                self.manager.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        if let Some(limits) = self.manager.shared.shared_limits.clone() {
            tokio::spawn(limits.follow(self.manager.guard().clone(), shutdown.clone()));
        }
        // Blocks end on time and say so in the log even if the address
        // never comes back.
        let guard = self.manager.guard().clone();
        let sweeping = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = sweeping.cancelled() => break,
                    _ = tick.tick() => { guard.sweep(); }
                }
            }
        });
        tokio::spawn(sweep_trash(self.manager.clone(), shutdown.clone()));
        shutdown.cancelled().await;
        tracker.close();
        let deadline = self.manager.services().config.server.shutdown_timeout;
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown deadline reached; remaining sessions are dropped, nothing deleted"
            );
        }
    }
}

/// How often trashed messages past `trash_retention` are purged.
const TRASH_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Purge the trash of `delete = "trash"` (and of a configuration that
/// used it before) once an hour, from the services in force at the time.
async fn sweep_trash(manager: Arc<Pop3SessionManager>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRASH_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let services = manager.services();
        let users = services.users.all().await;
        match services.store.purge_trash(&users).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "trashed messages past their retention purged"),
            Err(e) => tracing::warn!("trash sweep failed (tried again in an hour): {e}"),
        }
    }
}

/// Accept LMTP connections until shutdown; past `max_connections` a
/// connection hears `421` and is closed.
async fn accept_lmtp(
    listener: LmtpListener,
    slots: Arc<Semaphore>,
    manager: Arc<Pop3SessionManager>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = async {
                match &listener {
                    LmtpListener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                        let _ = s.set_nodelay(true);
                        (LmtpStream::Tcp(s), Some(peer.ip()))
                    }),
                    LmtpListener::Unix(l) => l.accept().await.map(|(s, _)| (LmtpStream::Unix(s), None)),
                }
            } => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("LMTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let services = manager.services();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                sessions.spawn(async move {
                    match stream {
                        LmtpStream::Tcp(s) => crate::lmtp::serve(s, peer, services).await,
                        LmtpStream::Unix(s) => crate::lmtp::serve(s, None, services).await,
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                sessions.spawn(async move {
                    let busy = format!(
                        "421 4.3.2 {} too many LMTP connections, try again later\r\n",
                        services.config.server.hostname
                    );
                    let _ = match stream {
                        LmtpStream::Tcp(mut s) => s.write_all(busy.as_bytes()).await,
                        LmtpStream::Unix(mut s) => s.write_all(busy.as_bytes()).await,
                    };
                });
            }
        }
    }
}

enum LmtpStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

#[async_trait::async_trait]
impl crate::telemetry::http::Status for Pop3SessionManager {
    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn metrics_text(&self) -> String {
        let metrics = &self.shared.metrics;
        if let Some(at) = self.services().tls_expiry {
            let now = std::time::SystemTime::now();
            let left = match at.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            };
            metrics.tls_certificate_expiry.set(left);
        }
        let own = metrics.encode();
        match self.services().store.metrics_text() {
            Some(store) => match own.strip_suffix("# EOF\n") {
                Some(head) => format!("{head}{store}# EOF\n"),
                None => own + &store,
            },
            None => own,
        }
    }

    fn degraded(&self) -> Vec<String> {
        Pop3SessionManager::degraded(self)
    }

    fn notes(&self) -> Vec<String> {
        self.services().store.notes()
    }

    async fn readiness(&self) -> Result<(), Vec<String>> {
        Pop3SessionManager::readiness(self).await
    }
}

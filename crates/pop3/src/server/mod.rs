// SPDX-License-Identifier: AGPL-3.0-only
//! Listeners and admission: binds the configured addresses, accepts,
//! applies connection limits before the greeting, runs implicit TLS, and
//! hands each connection to a [`Session`](crate::session::Session) through
//! [`Pop3SessionManager`], which embedding hosts use directly.

pub mod limits;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::auth::{PasswdFile, UserDb, UserDbError};
use crate::config::{Pop3Config, StorageBackend, TlsMode};
use crate::op::Connection;
use crate::services::Services;
use crate::session::{self, End, Session, Transport};
use crate::store::{MailStore, MaildirStore};
use limits::{ConnectionLimits, Refusal};
pub use tokio_util::sync::CancellationToken;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("auth.passwd_file: {0}")]
    UserDb(#[from] UserDbError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener tls = \"{0}\" but no [tls] section is configured")]
    NoTls(&'static str),
}

/// Serves POP3 sessions over streams that the caller accepted.
pub struct Pop3SessionManager {
    services: Arc<Services>,
    limits: ConnectionLimits,
    connections: AtomicU64,
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
        Ok(Self::with_tls(config, users, store, tls))
    }

    /// As [`Pop3SessionManager::new`], with a TLS configuration built by the
    /// caller (or none).
    pub fn with_tls(
        config: Pop3Config,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let limits = ConnectionLimits::new(
            config.performance.max_concurrent_sessions,
            config.security.max_connections_per_ip,
        );
        Pop3SessionManager {
            services: Arc::new(Services::new(Arc::new(config), users, store, tls)),
            limits,
            connections: AtomicU64::new(0),
        }
    }

    /// The passwd file and Maildir store named in the configuration.
    pub fn from_config(config: Pop3Config) -> Result<Self, ServerError> {
        let users = PasswdFile::open(&config.auth.passwd_file)?;
        for w in &users.table().warnings {
            tracing::warn!(file = %config.auth.passwd_file.display(), "{w}");
        }
        let store: Arc<dyn MailStore> = match config.storage.backend {
            StorageBackend::Maildir => Arc::new(MaildirStore::new(config.storage.maildir.clone())),
        };
        Self::new(config, Arc::new(users), store)
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    fn apop_timestamp(&self, n: u64) -> Option<String> {
        let cfg = &self.services.config.server;
        if !cfg.enable_apop {
            return None;
        }
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Some(format!(
            "<{}.{n}.{nonce}@{}>",
            std::process::id(),
            cfg.hostname
        ))
    }

    /// Serve one accepted connection until it ends. `mode` is the TLS mode
    /// of the listener it came from.
    pub async fn serve<S>(&self, mut stream: S, peer: SocketAddr, mode: TlsMode) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let _slot = match self.limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let text = match refusal {
                    Refusal::TooManySessions => "Server busy, try again later",
                    Refusal::TooManyFromAddress => "Too many connections from your address",
                };
                tracing::info!(target: "pop3::security", event = "connection_refused", peer = %peer, reason = ?refusal);
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    stream.write_all(&session::refusal(text)).await?;
                    stream.shutdown().await
                })
                .await;
                return End::Closed;
            }
        };
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        let services = &self.services;
        let tls_ready = services.tls.is_some();
        let transport = match mode {
            TlsMode::Implicit => {
                let Some(acceptor) = services.tls.clone() else {
                    return End::TlsFailed;
                };
                let handshake = tokio::time::timeout(
                    services.config.server.unauth_timeout,
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        tracing::info!(target: "pop3::security", event = "tls_failed", peer = %peer, reason = %e);
                        return End::TlsFailed;
                    }
                    Err(_) => return End::TlsFailed,
                }
            }
            TlsMode::None | TlsMode::Starttls => Transport::Plain(stream),
        };
        let conn = Connection {
            peer,
            secure: transport.is_tls(),
            stls_available: mode == TlsMode::Starttls
                && services.config.server.enable_stls
                && tls_ready,
            apop_timestamp: self.apop_timestamp(n),
        };
        tracing::debug!(peer = %peer, tls = mode.as_str(), "session start");
        let end = Session::new(transport, conn, services.clone()).run().await;
        tracing::debug!(peer = %peer, ?end, "session end");
        end
    }
}

/// Bound listeners, ready to accept.
pub struct Server {
    manager: Arc<Pop3SessionManager>,
    listeners: Vec<(TcpListener, TlsMode)>,
}

impl Server {
    /// Bind every `[[listener]]` of the manager's configuration.
    pub async fn bind(manager: Arc<Pop3SessionManager>) -> Result<Server, ServerError> {
        let mut listeners = Vec::new();
        for l in &manager.services.config.listeners {
            if l.tls != TlsMode::None && manager.services.tls.is_none() {
                return Err(ServerError::NoTls(l.tls.as_str()));
            }
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: l.bind,
                    source,
                })?;
            listeners.push((listener, l.tls));
        }
        Ok(Server { manager, listeners })
    }

    /// The bound addresses (port 0 resolved) with their TLS modes.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, TlsMode)> {
        self.listeners
            .iter()
            .filter_map(|(l, m)| l.local_addr().ok().map(|a| (a, *m)))
            .collect()
    }

    /// Accept until `shutdown` fires, then wait up to `drain` for sessions.
    pub async fn run(self, shutdown: CancellationToken, drain: Duration) {
        let tracker = TaskTracker::new();
        for (listener, mode) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, tls = mode.as_str(), "listening");
            }
            let manager = self.manager.clone();
            let shutdown = shutdown.clone();
            let sessions = tracker.clone();
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
                            sessions.spawn(async move {
                                manager.serve(stream, peer, mode).await;
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
        shutdown.cancelled().await;
        tracker.close();
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::info!(
                "shutdown deadline reached; remaining sessions are dropped, nothing deleted"
            );
        }
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Listeners and admission: binds the configured addresses, accepts,
//! applies connection limits before the greeting, runs implicit TLS, and
//! hands each connection to a session through
//! [`Pop3SessionManager`], which embedding hosts use directly.

mod admission;
pub mod limits;
mod listen;
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
pub use listen::Server;
pub use tokio_util::sync::CancellationToken;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
        let redis = crate::security::shared::connection_info(&config.security)?;
        let shared_limits = match redis {
            Some(info) => Some(Arc::new(
                crate::security::SharedLimits::new(info, metrics.clone())
                    .map_err(|e| crate::auth::SetupError::new("security.shared_state", e))?,
            )),
            None => None,
        };
        let guard = Guard::new(
            config.security.clone(),
            clock.clone(),
            security_log(&config)?,
            metrics.clone(),
        )
        .sharing(shared_limits);
        metrics
            .node_info
            .get_or_create(&crate::telemetry::metrics::NodeLabels {
                node: config.server.node().to_owned(),
            })
            .set(1);
        let salt_key = crate::services::salt_key(&config)?;
        let shared = Shared::new(metrics, Arc::new(guard), clock, salt_key);
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
            current.given_users.clone(),
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
                users: current.given_users.clone(),
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
            if let Some(limits) = self.shared.guard.shared()
                && let Some(info) = crate::security::shared::connection_info(&config.security)?
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
        match self.shared.guard.shared() {
            Some(l) if !l.is_up() => vec![
                "shared state (Redis) unavailable: this node counts failures and blocks alone"
                    .to_owned(),
            ],
            _ => Vec::new(),
        }
    }
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

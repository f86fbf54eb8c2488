// SPDX-License-Identifier: AGPL-3.0-only
//! The PostgreSQL database that the `postgres` store and user database
//! share: one connection pool per server, built from `[storage]`, with
//! its own metrics, and the embedded schema migrations.

pub mod migrate;
mod notify;
mod tls;

use crate::config::SetupError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_postgres::config::SslMode;

use crate::config::{DatabaseTls, Pop3Config, StorageBackend, UserBackend};

pub use migrate::{Applied, Fit, Migration, SchemaState};
pub use tokio_postgres::Client;

/// Why the database could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No connection (server down, network, pool exhausted past the
    /// connect timeout): retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The schema is older (or newer) than this pop3d.
    #[error(
        "database schema is at version {have}, this pop3d needs {need}: run `pop3d db migrate`"
    )]
    Schema { have: i32, need: i32 },
    /// A statement failed.
    #[error("database query failed: {0}")]
    Query(String),
    /// The database's schema has a migration from a newer release that is
    /// not marked compatible with older binaries: this binary is too old.
    #[error(
        "this pop3d is older than the database: the schema is at version {have}, this binary knows up to {known}, and migration {blocking} ({name}) is not compatible with older binaries; install a pop3d that knows schema version {have} (see CHANGELOG.md)"
    )]
    BinaryTooOld {
        have: i32,
        known: i32,
        blocking: i32,
        name: String,
    },
    /// Another running pop3d holds this node name (it renewed it within
    /// `lease_ttl`): two nodes of one name would free each other's leases.
    #[error(
        "node name {node:?} is in use by another running pop3d (run {run} on host {host}, alive within storage.lease_ttl): give each node its own [server] node_name"
    )]
    NodeNameInUse {
        node: String,
        run: String,
        host: String,
    },
    /// The database has no room (SQLSTATE class 53: disk full, out of
    /// memory): writes fail until an administrator frees space.
    #[error("database out of space: {0}")]
    Full(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The database away: a closed connection, a failed socket, or the
        // server saying so (SQLSTATE class 08, shutting down, starting).
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let away = e.as_db_error().is_some_and(|d| {
            let code = d.code().code();
            code.starts_with("08") || code.starts_with("57P")
        });
        let full = e
            .as_db_error()
            .is_some_and(|d| d.code().code().starts_with("53"));
        if e.is_closed() || io || away {
            DbError::Unavailable(plain(&e))
        } else if full {
            DbError::Full(plain(&e))
        } else {
            DbError::Query(plain(&e))
        }
    }
}

/// An error's whole chain on one line (tokio-postgres puts the cause in
/// `source()`).
fn plain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether this configuration needs the database at all.
pub fn configured(config: &Pop3Config) -> bool {
    config.storage.backend == StorageBackend::Postgres
        || config.auth.backend == UserBackend::Postgres
}

/// The connection settings `[storage]` gives, password file read.
pub fn connection_config(config: &Pop3Config) -> Result<tokio_postgres::Config, SetupError> {
    let s = &config.storage;
    fn fail<T>(key: &str, reason: impl Into<String>) -> Result<T, SetupError> {
        Err(SetupError::new(key, reason))
    }
    let Some(url) = &s.url else {
        return fail(
            "storage.url",
            "the postgres backend needs the database, e.g. \
             url = \"postgres://pop3d@127.0.0.1:5432/mail\"",
        );
    };
    let mut pg: tokio_postgres::Config = match url.parse() {
        Ok(c) => c,
        // The parser's message never repeats the URL (which could hold a
        // password).
        Err(e) => return fail("storage.url", format!("not a PostgreSQL URL: {e}")),
    };
    if pg.get_password().is_some() {
        return fail(
            "storage.url",
            "holds a password; put it in storage.password_file instead (the URL is printed by check-config and logged)",
        );
    }
    if pg.get_dbname().is_none() {
        return fail("storage.url", "names no database");
    }
    if let Some(password) = password(config)? {
        pg.password(password);
    }
    pg.connect_timeout(s.connect_timeout);
    pg.keepalives_idle(Duration::from_secs(60));
    pg.application_name("pop3d");
    pg.options(format!(
        "-c statement_timeout={}",
        s.statement_timeout.as_millis()
    ));
    pg.ssl_mode(match s.tls {
        DatabaseTls::Off => SslMode::Disable,
        DatabaseTls::Prefer => SslMode::Prefer,
        DatabaseTls::Require => SslMode::Require,
    });
    Ok(pg)
}

/// The database password from `storage.password_file`, if one is named.
fn password(config: &Pop3Config) -> Result<Option<String>, SetupError> {
    config
        .storage
        .password_file
        .as_deref()
        .map(|f| crate::config::read_secret_file("storage.password_file", f))
        .transpose()
}

/// Makes the pool's connections with the password of the moment, so that
/// a new password file takes effect at SIGHUP without a restart (the
/// connections open already go on with theirs).
struct RotatingConnect {
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    password: Arc<std::sync::RwLock<Option<String>>>,
}

impl deadpool_postgres::Connect for RotatingConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                        tokio_postgres::Error,
                    >,
                > + Send
                + '_,
        >,
    > {
        let mut pg_config = pg_config.clone();
        if let Some(p) = &*self.password.read().unwrap_or_else(|p| p.into_inner()) {
            pg_config.password(p.as_str());
        }
        let tls = self.tls.clone();
        Box::pin(async move {
            let (client, connection) = pg_config.connect(tls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("database connection ended: {e}");
                }
            });
            Ok((client, task))
        })
    }
}

/// The `[storage]` database keys, checked without connecting.
pub fn check_config(config: &Pop3Config) -> Result<(), SetupError> {
    let s = &config.storage;
    if let Some(q) = &config.auth.password_query {
        if config.auth.backend == UserBackend::PasswdFile {
            return Err(SetupError::new(
                "auth.password_query",
                "needs auth.backend = \"postgres\" or \"mysql\"",
            ));
        }
        if config.auth.backend == UserBackend::Postgres && !q.contains("$1") {
            return Err(SetupError::new(
                "auth.password_query",
                "must take the login as the bound parameter $1",
            ));
        }
    }
    if !configured(config) {
        return Ok(());
    }
    connection_config(config)?;
    if s.lease_ttl < Duration::from_secs(1) {
        return Err(SetupError::new("storage.lease_ttl", "must be at least 1s"));
    }
    if s.connect_timeout < Duration::from_millis(100) {
        return Err(SetupError::new(
            "storage.connect_timeout",
            "must be at least 100ms",
        ));
    }
    if s.statement_timeout < Duration::from_millis(100) {
        return Err(SetupError::new(
            "storage.statement_timeout",
            "must be at least 100ms",
        ));
    }
    if config.performance.connection_pool_size == 0 {
        return Err(SetupError::new(
            "performance.connection_pool_size",
            "the database pool needs at least one connection",
        ));
    }
    if let Some(ca) = &s.ca_file {
        crate::tls::client_roots(Some(ca)).map_err(|e| SetupError::new("storage.ca_file", e))?;
    }
    Ok(())
}

/// What the database exports under `pop3_db_*`.
struct DbMetrics {
    registry: Registry,
    in_use: Gauge,
    idle: Gauge,
    waiting: Gauge,
    query_seconds: Histogram,
    unavailable: Counter,
    leases_lost: Counter,
}

impl DbMetrics {
    fn new() -> DbMetrics {
        let mut registry = Registry::with_prefix("pop3_db");
        let in_use = Gauge::default();
        let idle = Gauge::default();
        let waiting = Gauge::default();
        let query_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 16));
        let unavailable = Counter::default();
        let leases_lost = Counter::default();
        let r = &mut registry;
        r.register("pool_in_use", "Pool connections lent out", in_use.clone());
        r.register(
            "pool_idle",
            "Pool connections open and unused",
            idle.clone(),
        );
        r.register(
            "pool_waiting",
            "Tasks waiting for a pool connection",
            waiting.clone(),
        );
        r.register(
            "query_seconds",
            "Time from asking the pool to a statement's last row",
            query_seconds.clone(),
        );
        r.register(
            "unavailable",
            "Times the database could not be reached",
            unavailable.clone(),
        );
        r.register(
            "leases_lost",
            "Sessions whose maildrop lease expired or was taken over before QUIT",
            leases_lost.clone(),
        );
        DbMetrics {
            registry,
            in_use,
            idle,
            waiting,
            query_seconds,
            unavailable,
            leases_lost,
        }
    }
}

/// One server's database: a pool of at most `connection_pool_size`
/// connections, opened on demand (so `serve` starts while the database is
/// down and recovers when it is back).
pub struct Database {
    pool: Pool,
    metrics: DbMetrics,
    /// The longest a statement is waited for.
    deadline: Duration,
    /// Said by `/readyz` without failing it (see [`Database::notes`]).
    schema_note: std::sync::Mutex<Option<String>>,
    /// The password new connections use (see [`Database::rotate`]).
    password: Arc<std::sync::RwLock<Option<String>>>,
    /// Where a LISTEN connection goes (see `notify.rs`).
    listen: notify::ListenTarget,
}

impl Database {
    pub fn from_config(config: &Pop3Config) -> Result<Database, SetupError> {
        let pg = connection_config(config)?;
        let tls =
            tls::connector(&config.storage).map_err(|e| SetupError::new("storage.ca_file", e))?;
        let password = Arc::new(std::sync::RwLock::new(
            pg.get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        ));
        let listen = notify::ListenTarget {
            pg: pg.clone(),
            tls: tls.clone(),
        };
        let connect = RotatingConnect {
            tls,
            password: password.clone(),
        };
        let manager = Manager::from_connect(
            pg,
            connect,
            ManagerConfig {
                // A connection the server closed (restart, idle timeout)
                // is noticed without a round trip and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = config.storage.connect_timeout;
        let pool = Pool::builder(manager)
            .max_size(config.performance.connection_pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| SetupError::new("storage.url", e.to_string()))?;
        Ok(Database {
            pool,
            metrics: DbMetrics::new(),
            deadline: config.storage.connect_timeout + config.storage.statement_timeout,
            schema_note: std::sync::Mutex::new(None),
            password,
            listen,
        })
    }

    /// Read `storage.password_file` again (SIGHUP): connections opened
    /// from now on use what it says. True when it changed.
    pub fn rotate(&self, config: &Pop3Config) -> Result<bool, SetupError> {
        let new = password(config)?;
        let mut current = self.password.write().unwrap_or_else(|p| p.into_inner());
        let changed = *current != new;
        *current = new;
        Ok(changed)
    }

    /// A connection from the pool, for one statement or transaction; give
    /// it back (drop it) before waiting on a client.
    pub async fn client(&self) -> Result<Object, DbError> {
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Unavailable(plain(&e)))
    }

    /// Run `work` (one statement or a short transaction, on a connection
    /// it takes itself) under a deadline of the connect and statement
    /// timeouts together, so that a database host gone silent (no reset,
    /// no answer) costs a session `[SYS/TEMP]` rather than a hang; timed
    /// into the latency histogram.
    pub async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let deadline = self.deadline;
        self.measured(async move {
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or_else(|_| {
                    Err(DbError::Unavailable(format!(
                        "no answer within {}",
                        humantime::format_duration(deadline)
                    )))
                })
        })
        .await
    }

    /// As [`Database::timed`] without the deadline, for work whose length
    /// the client sets (a delivery streaming a large message).
    pub async fn measured<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let result = work.await;
        self.metrics
            .query_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(DbError::Unavailable(_)) = &result {
            self.metrics.unavailable.inc();
        }
        result
    }

    pub(crate) fn lease_lost(&self) {
        self.metrics.leases_lost.inc();
    }

    /// Ready when a connection answers and the schema is this pop3d's.
    pub async fn health(&self) -> Result<(), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let fit = migrate::check(&**client).await;
        let note = match &fit {
            Ok(Fit::NewerCompatible(note)) => Some(note.clone()),
            _ => None,
        };
        *self.schema_note.lock().unwrap_or_else(|p| p.into_inner()) = note;
        fit.map(drop).map_err(|e| e.to_string())
    }

    /// What `/readyz` should say beside a healthy answer: a newer schema
    /// this binary keeps working on (as of the last health check).
    pub fn notes(&self) -> Vec<String> {
        self.schema_note
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The `pop3_db_*` metrics in Prometheus text format, without the
    /// closing `# EOF`, for appending to the server's own.
    pub fn encode_metrics(&self) -> String {
        let status = self.pool.status();
        let m = &self.metrics;
        m.in_use
            .set(status.size.saturating_sub(status.available) as i64);
        m.idle.set(status.available as i64);
        m.waiting.set(status.waiting as i64);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
        out.strip_suffix("# EOF\n").unwrap_or(&out).to_owned()
    }
}

/// A database for the configuration, if it names one.
pub fn from_config(config: &Pop3Config) -> Result<Option<Arc<Database>>, SetupError> {
    if !configured(config) {
        return Ok(None);
    }
    Database::from_config(config).map(|d| Some(Arc::new(d)))
}

// SPDX-License-Identifier: AGPL-3.0-only
//! From a configuration file to a server's parts. The [`config`] module
//! knows the file's shape and its own rules; each layer knows the rules of
//! its own keys (SASL mechanisms, Maildir templates) and says so through a
//! `check_config` function it owns. This module, above them all, asks
//! each in turn, so that the arrows between layers run one way; and it is
//! the one place where the user database and the mail store a
//! configuration names are built ([`Backends`]), for `serve`, reload and
//! `deliver` alike.
//!
//! [`config`]: crate::config

use std::path::Path;
use std::sync::Arc;

use crate::auth::{PasswdFile, PostgresUsers, UserDb, UserDbError};
use crate::config::{ConfigError, LoadedConfig, Pop3Config, StorageBackend, UserBackend};
use crate::db::Database;
use crate::store::{Clock, MailStore, MaildirStore, PostgresStore};

/// The user database and the mail store a server serves from, and the
/// database pool they share when either is in PostgreSQL.
#[derive(Clone)]
pub struct Backends {
    pub users: Arc<dyn UserDb>,
    pub store: Arc<dyn MailStore>,
    pub database: Option<Arc<Database>>,
}

impl Backends {
    /// The backends the configuration names.
    pub fn from_config(config: &Pop3Config) -> Result<Backends, UserDbError> {
        Self::from_config_with_clock(config, Clock::system())
    }

    /// As [`Backends::from_config`], the store reading time from `clock`.
    pub fn from_config_with_clock(
        config: &Pop3Config,
        clock: Clock,
    ) -> Result<Backends, UserDbError> {
        let database = database_from_config(config)?;
        Ok(Backends {
            users: users_from_config(config, database.as_ref())?,
            store: store_from_config(config, database.as_ref(), clock),
            database,
        })
    }

    /// The backends for a reload to `config` from `old`: the user database
    /// read afresh (its file may have moved), the store and the database
    /// pool kept while nothing they were built from changed, so maildrop
    /// locks and leases, the listing cache and the measuring limit carry
    /// over (sessions from before the reload still hold their locks in
    /// it).
    pub fn reloaded(&self, old: &Pop3Config, config: &Pop3Config) -> Result<Backends, UserDbError> {
        let (store, database) = if store_settings(old) == store_settings(config) {
            // The same database, with the password file read again.
            if let Some(db) = &self.database
                && db
                    .rotate(config)
                    .map_err(|e| UserDbError::Unavailable(e.to_string()))?
            {
                tracing::info!("database password changed: new connections use it");
            }
            (self.store.clone(), self.database.clone())
        } else {
            let database = database_from_config(config)?;
            (
                store_from_config(config, database.as_ref(), Clock::system()),
                database,
            )
        };
        Ok(Backends {
            users: users_from_config(config, database.as_ref())?,
            store,
            database,
        })
    }
}

fn database_from_config(config: &Pop3Config) -> Result<Option<Arc<Database>>, UserDbError> {
    crate::db::from_config(config).map_err(|e| UserDbError::Unavailable(e.to_string()))
}

/// The user database the configuration names, behind the user-name check
/// (so `pop3d deliver`, `restore` and `import-pop3` refuse the names a
/// session refuses).
fn users_from_config(
    config: &Pop3Config,
    database: Option<&Arc<Database>>,
) -> Result<Arc<dyn UserDb>, UserDbError> {
    let users: Arc<dyn UserDb> = match (config.auth.backend, database) {
        (UserBackend::Postgres, Some(db)) => Arc::new(PostgresUsers::new(
            db.clone(),
            config.auth.password_query.as_deref(),
        )),
        (UserBackend::Postgres, None) => {
            return Err(UserDbError::Unavailable(
                "auth.backend = \"postgres\" needs storage.url".into(),
            ));
        }
        (UserBackend::Mysql, _) => Arc::new(
            crate::auth::mysql::MysqlUsers::from_config(config)
                .map_err(|e| UserDbError::Unavailable(e.to_string()))?,
        ),
        (UserBackend::Ldap, _) => Arc::new(
            crate::auth::ldap::LdapUsers::from_config(config)
                .map_err(|e| UserDbError::Unavailable(e.to_string()))?,
        ),
        (UserBackend::PasswdFile, _) => {
            let users = PasswdFile::open(&config.auth.passwd_file).map_err(|e| match e {
                UserDbError::Unavailable(why) => {
                    UserDbError::Unavailable(format!("auth.passwd_file: {why}"))
                }
            })?;
            for w in &users.table().warnings {
                tracing::warn!(file = %config.auth.passwd_file.display(), "{w}");
            }
            Arc::new(users)
        }
    };
    Ok(crate::auth::CheckedNames::wrap(users))
}

fn store_from_config(
    config: &Pop3Config,
    database: Option<&Arc<Database>>,
    clock: Clock,
) -> Arc<dyn MailStore> {
    match (config.storage.backend, database) {
        (StorageBackend::Postgres, Some(db)) => {
            Arc::new(PostgresStore::new(db.clone(), config).with_clock(clock))
        }
        // validate() makes sure a postgres store has its database.
        _ => Arc::new(MaildirStore::from_config(config).with_clock(clock)),
    }
}

/// Everything a store (and the database pool) is built from.
fn store_settings(c: &Pop3Config) -> impl PartialEq + use<> {
    let p = &c.performance;
    (
        c.storage.clone(),
        c.server.hostname.clone(),
        c.server.max_message_size,
        (p.io_buffer_size, p.connection_pool_size),
        (
            p.enable_response_caching,
            p.cache_ttl,
            p.max_cached_responses,
        ),
        c.auth.backend,
    )
}

/// A layer's check of its own keys: the dotted key and the reason.
type LayerCheck = fn(&Pop3Config) -> Result<(), crate::config::SetupError>;

/// Each layer's own checks, in the order their errors are reported.
const LAYER_CHECKS: &[LayerCheck] = &[
    crate::db::check_config,
    crate::security::shared::check_config,
    crate::auth::sasl::check_config,
    crate::store::maildir::check_config,
    crate::store::uidl::check_config,
];

impl Pop3Config {
    /// Read, parse and validate a file completely. Relative paths inside
    /// it are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let loaded = Pop3Config::read_file(path)?;
        check_layers(&loaded.config, path)?;
        Ok(loaded)
    }

    /// Parse and validate TOML text; `file` is used in error messages only.
    pub fn from_toml(text: &str, file: &Path) -> Result<LoadedConfig, ConfigError> {
        let loaded = Pop3Config::parse(text, file)?;
        check_layers(&loaded.config, file)?;
        Ok(loaded)
    }

    /// Every check of a configuration built in code: the configuration's
    /// own rules, then each layer's. Returns the dotted key and the reason.
    pub fn validate(&self) -> Result<(), crate::config::SetupError> {
        self.validate_values()?;
        LAYER_CHECKS.iter().try_for_each(|check| check(self))
    }
}

fn check_layers(config: &Pop3Config, file: &Path) -> Result<(), ConfigError> {
    LAYER_CHECKS
        .iter()
        .try_for_each(|check| check(config))
        .map_err(|e| ConfigError::at(file, e.key, e.reason))
}

/// What [`inspect`] found besides errors.
#[derive(Debug, Default)]
pub struct Inspection {
    /// Facts for the operator ("database: reachable, schema up to date").
    pub notes: Vec<String>,
    /// What works, but not as configured: a server that does not answer
    /// now (a node starts without it and becomes ready when it answers), a
    /// passwd line skipped, a database newer than this binary but
    /// compatible with it. Each names its key.
    pub warnings: Vec<String>,
}

/// Every check of a configuration that only the file system and the
/// servers it names can answer, beyond [`Pop3Config::load`]'s: the
/// database and its schema, Redis, the passwd file, the TLS files, the
/// SASL mechanisms' files. `pop3d check-config` and `pop3d serve` both run
/// it, so they refuse the same files. An error is a mistake an operator
/// must fix; a server that does not answer is only a warning.
pub async fn inspect(config: &Pop3Config) -> Result<Inspection, crate::auth::SetupError> {
    use crate::auth::SetupError;
    use crate::db::{DbError, Fit};
    let mut found = Inspection::default();
    if crate::db::configured(config) {
        match crate::db::migrate::connect_and_check(config).await {
            Ok(Fit::Current) => found
                .notes
                .push("database: reachable, schema up to date".into()),
            Ok(Fit::NewerCompatible(note)) => found
                .warnings
                .push(format!("key `storage.url`: {note}")),
            Err(DbError::Unavailable(why) | DbError::Full(why)) => found.warnings.push(format!(
                "key `storage.url`: the database does not answer now ({why}); serve starts anyway and becomes ready when it does"
            )),
            Err(e) => return Err(SetupError::new("storage.url", e.to_string())),
        }
    }
    if let Ok(Some(info)) = crate::security::shared::connection_info(&config.security) {
        match crate::security::shared::ping(info).await {
            Ok(()) => found.notes.push("shared state (Redis): reachable".into()),
            Err(why) => found.warnings.push(format!(
                "key `security.shared_state`: Redis does not answer now ({why}); each node counts alone until it does"
            )),
        }
    }
    if config.auth.backend == UserBackend::PasswdFile {
        let file = &config.auth.passwd_file;
        let users = PasswdFile::open(file)
            .map_err(|e| SetupError::new("auth.passwd_file", e.to_string()))?;
        let table = users.table();
        for w in &table.warnings {
            found
                .warnings
                .push(format!("{}: {w} (skipped)", file.display()));
        }
        found
            .notes
            .push(format!("{}: {} users", file.display(), table.len()));
    }
    if let Some(tls) = &config.tls {
        use crate::tls::TlsError;
        crate::tls::load(tls).map_err(|e| match e {
            TlsError::Cert { path, reason } => {
                SetupError::new("tls.cert", format!("{path}: {reason}"))
            }
            TlsError::Key { path, reason } => {
                SetupError::new("tls.key", format!("{path}: {reason}"))
            }
            TlsError::ClientCa { path, reason } => {
                SetupError::new("tls.client_ca_file", format!("{path}: {reason}"))
            }
            TlsError::Config(why) => SetupError::new("tls", why),
        })?;
    }
    crate::services::SaslServices::check(config)?;
    crate::services::breached_passwords(config)?;
    match config.auth.backend {
        UserBackend::Mysql => drop(crate::auth::mysql::MysqlUsers::from_config(config)?),
        UserBackend::Ldap => drop(crate::auth::ldap::LdapUsers::from_config(config)?),
        UserBackend::PasswdFile | UserBackend::Postgres => {}
    }
    Ok(found)
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Everything a session needs, built once by `pop3d` or by an embedding
//! host and shared by reference: no globals, so one process can run several
//! servers (tests do).

use std::sync::{Arc, Mutex};

use crate::auth::app_passwords::AppPasswords;
use crate::auth::bearer::BearerValidator;
use crate::auth::cache::{AuthCache, CachedUsers};
use crate::auth::{BreachedPasswords, SetupError, UserDb, Verifier};
use crate::config::Pop3Config;
use crate::security::{Guard, LoginDelay};
use crate::store::MailStore;
use crate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

pub struct Services {
    pub config: Arc<Pop3Config>,
    /// The user database as sessions ask it: names checked, the auth
    /// cache in front.
    pub users: Arc<dyn UserDb>,
    /// The user database as it was given, for the next generation of
    /// services to wrap afresh (a reload gets an empty cache).
    pub(crate) given_users: Arc<dyn UserDb>,
    pub store: Arc<dyn MailStore>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) verifier: Verifier,
    /// Who logged in when (LOGIN-DELAY); kept across reloads.
    pub(crate) login_delay: Arc<LoginDelay>,
    /// Shared by every generation of services (reloads keep counting).
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown; sessions waiting for a command then close.
    pub(crate) shutdown: CancellationToken,
    /// Brute-force blocking and scoring; shared across reloads too.
    pub(crate) guard: Arc<Guard>,
    pub(crate) buffers: BufferPool,
    pub(crate) sasl: SaslServices,
    /// When the `[tls]` certificate expires (for its metric).
    pub(crate) tls_expiry: Option<std::time::SystemTime>,
    /// `auth.breached_passwords_file`, open.
    pub(crate) breached: Option<Arc<BreachedPasswords>>,
    /// The auth cache (`auth.cache_size`), emptied by a reload.
    pub(crate) auth_cache: Option<Arc<AuthCache>>,
    /// `auth.app_passwords_file`, followed as it changes, or pop3d's
    /// PostgreSQL table.
    pub(crate) app_passwords: Option<Arc<AppPasswords>>,
}

/// What outlives a reload: counters, blocks, the shutdown signal.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) guard: Arc<Guard>,
    pub(crate) login_delay: Arc<LoginDelay>,
    /// Key for SCRAM's made-up salts, stable across reloads.
    pub(crate) salt_key: Arc<[u8; 32]>,
}

impl Shared {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        guard: Arc<Guard>,
        clock: Arc<dyn crate::security::Clock>,
        salt_key: [u8; 32],
    ) -> Shared {
        Shared {
            metrics,
            shutdown: CancellationToken::new(),
            guard,
            login_delay: Arc::new(LoginDelay::new(clock)),
            salt_key: Arc::new(salt_key),
        }
    }
}

/// The key for SCRAM's made-up salts: SHA-256 of `auth.secret_key_file`
/// (made with 32 random octets when missing), so that every node and every
/// restart answers alike; without the file, random for this process. Fails
/// without randomness from the system: the key must not be guessable.
pub fn salt_key(config: &Pop3Config) -> Result<[u8; 32], SetupError> {
    use sha2::Digest;
    let fail = |why: String| SetupError::new("auth.secret_key_file", why);
    let Some(path) = &config.auth.secret_key_file else {
        return crate::auth::sasl::nonce()
            .map_err(|e| SetupError::new("auth", format!("cannot make the SCRAM salt key: {e}")));
    };
    let key = match std::fs::read(path) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::PermissionsExt;
            let key: [u8; 32] = crate::auth::sasl::nonce().map_err(|e| fail(e.to_string()))?;
            let made = crate::safe_fs::create_exclusive(path).and_then(|mut f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(&key)?;
                f.sync_all()
            });
            match made {
                Ok(()) => key.to_vec(),
                // Another node or process made it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?
                }
                Err(e) => return Err(fail(format!("{}: cannot create it: {e}", path.display()))),
            }
        }
        Err(e) => return Err(fail(format!("{}: {e}", path.display()))),
    };
    if key.len() < 32 {
        return Err(fail(format!(
            "{} holds {} octets; at least 32 random octets are needed",
            path.display(),
            key.len()
        )));
    }
    Ok(sha2::Sha256::digest(&key).into())
}

/// `auth.breached_passwords_file`, opened and checked (for serving and
/// for `pop3d check-config`).
pub fn breached_passwords(config: &Pop3Config) -> Result<Option<BreachedPasswords>, SetupError> {
    config
        .auth
        .breached_passwords_file
        .as_deref()
        .map(|path| {
            BreachedPasswords::open(path)
                .map_err(|why| SetupError::new("auth.breached_passwords_file", why))
        })
        .transpose()
}

/// What SASL mechanisms need beyond the user database.
pub struct SaslServices {
    pub salt_key: Arc<[u8; 32]>,
    /// Token validation for OAUTHBEARER and XOAUTH2, when configured.
    pub bearer: Option<Arc<BearerValidator>>,
    /// The Kerberos acceptor for GSSAPI, when configured.
    #[cfg(feature = "gssapi")]
    pub gssapi: Option<Arc<crate::auth::sasl::gssapi::Acceptor>>,
}

impl SaslServices {
    /// Check that what `[auth]` names (token keys, the keytab) can be
    /// loaded, as `pop3d check-config` does.
    pub fn check(config: &Pop3Config) -> Result<(), SetupError> {
        SaslServices::new(config, Arc::new([0; 32])).map(drop)
    }

    /// Load what `[auth]` names.
    fn new(config: &Pop3Config, salt_key: Arc<[u8; 32]>) -> Result<Self, SetupError> {
        let bearer = match &config.auth.oauth {
            Some(o) => Some(Arc::new(BearerValidator::from_config(o)?)),
            None => None,
        };
        #[cfg(feature = "gssapi")]
        let gssapi = match &config.auth.gssapi {
            Some(g) => Some(Arc::new(
                crate::auth::sasl::gssapi::Acceptor::new(g, &config.server.hostname)
                    .map_err(|e| SetupError::new("auth.gssapi", e))?,
            )),
            None => None,
        };
        Ok(SaslServices {
            salt_key,
            bearer,
            #[cfg(feature = "gssapi")]
            gssapi,
        })
    }
}

impl Services {
    pub(crate) fn new(
        config: Arc<Pop3Config>,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shared: &Shared,
    ) -> Result<Services, SetupError> {
        let sasl = SaslServices::new(&config, shared.salt_key.clone())?;
        let breached = breached_passwords(&config)?.map(Arc::new);
        let auth_cache = AuthCache::from_config(&config.auth);
        let app_passwords = match &config.auth.app_passwords_file {
            Some(file) => {
                Some(Arc::new(AppPasswords::open(file).map_err(|why| {
                    SetupError::new("auth.app_passwords_file", why)
                })?))
            }
            None => users.app_passwords(),
        };
        let given_users = users.clone();
        let users = match &auth_cache {
            Some(cache) => Arc::new(CachedUsers {
                inner: users,
                cache: cache.clone(),
            }),
            None => users,
        };
        let tls_expiry = config.tls.as_ref().and_then(crate::tls::certificate_expiry);
        let buffers = BufferPool::new(
            config.performance.io_buffer_size,
            config.performance.connection_pool_size,
        );
        Ok(Services {
            config,
            // Whatever the database, a name that could escape the mail root
            // never reaches it (POP3, LMTP, an embedding host's lookups).
            users: crate::auth::CheckedNames::wrap(users),
            given_users,
            store,
            tls,
            verifier: Verifier::default(),
            login_delay: shared.login_delay.clone(),
            metrics: shared.metrics.clone(),
            shutdown: shared.shutdown.clone(),
            guard: shared.guard.clone(),
            buffers,
            tls_expiry,
            sasl,
            breached,
            auth_cache,
            app_passwords,
        })
    }
}

/// Reusable output buffers of `io_buffer_size` octets' capacity, at most
/// `connection_pool_size` kept, so streaming messages does not allocate and
/// free a buffer per message.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub fn new(size: usize, keep: usize) -> Self {
        BufferPool {
            size,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// An empty buffer with room for `buffer_size()` octets (and a little
    /// more, as encoding may grow a chunk).
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(self.size + self.size / 8))
    }

    /// Return a buffer; kept if the pool has room and it did not grow far
    /// past the usual size, dropped otherwise.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.size || buf.capacity() > 4 * self.size {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
    }

    /// Buffers waiting to be reused.
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_up_to_its_size() {
        let pool = BufferPool::new(1024, 2);
        let bufs: Vec<Vec<u8>> = (0..3).map(|_| pool.take()).collect();
        assert!(bufs.iter().all(|b| b.is_empty() && b.capacity() >= 1024));
        for b in bufs {
            pool.give(b);
        }
        assert_eq!(pool.idle(), 2);
        pool.give(vec![0; 10]);
        assert_eq!(pool.idle(), 2, "foreign sizes are not kept");
        let _ = pool.take();
        assert_eq!(pool.idle(), 1);
    }
}

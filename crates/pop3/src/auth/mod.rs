// SPDX-License-Identifier: AGPL-3.0-only
//! Users and credentials: the [`UserDb`] trait, password schemes, SASL
//! mechanisms, and verification that keeps slow hashes off the async workers.

pub mod app_password_table;
pub mod app_passwords;
pub mod bearer;
pub mod breached;
pub mod cache;
pub mod cram_context;
mod decoys;
pub mod ldap;
pub mod md5_crypt;
pub mod mysql;
pub mod passwd;
pub mod postgres;
pub mod sasl;
pub mod scheme;
pub mod settings;
mod sql_row;
pub mod static_users;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;

pub use breached::BreachedPasswords;
pub use passwd::PasswdFile;
pub use postgres::PostgresUsers;
pub use scheme::{Scheme, StoredSecret, hash_password};
pub use settings::{Quota, UserSettings};
pub use static_users::StaticUsers;

/// One user as the user database knows it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The name as written in the database.
    pub name: String,
    /// None: the user cannot log in with a password.
    pub secret: Option<StoredSecret>,
    /// Accepted for compatibility with Dovecot's format; the server runs as
    /// one system user (see DESIGN.md).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: Option<PathBuf>,
    /// The free-form eighth field (userdb extras).
    pub extra: String,
    /// Per-user settings read from the extras or database columns.
    pub settings: UserSettings,
    /// Whether the user may log in, and receive mail.
    pub account: Account,
    /// Where a directory keeps the user (LDAP), to bind as them.
    pub dn: Option<String>,
}

/// What an account may do (`pop3d user disable [--no-mail]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Account {
    #[default]
    Active,
    /// Logins are refused (like a wrong password); mail is still
    /// delivered, so nothing bounces while the account is suspended.
    LoginDisabled,
    /// Logins refused and deliveries refused as to an unknown user.
    Closed,
}

impl Account {
    pub fn may_log_in(self) -> bool {
        self == Account::Active
    }

    pub fn receives_mail(self) -> bool {
        self != Account::Closed
    }
}

pub use crate::config::SetupError;

/// Why the user database could not answer. Not "no such user": that is
/// `Ok(None)`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UserDbError {
    #[error("user database unavailable: {0}")]
    Unavailable(String),
}

/// Why a user name is refused before any lookup: it could not name a
/// mailbox safely (a path separator, a `.` or `..` segment that a Maildir
/// template would turn into a path out of the mail root, NUL or control
/// characters that end or forge log lines and SQL strings).
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("a user name has 1 to 255 octets");
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err("a user name holds no '/' and no control characters");
    }
    // `%u`, and `%n` and `%d` split at the last '@', are path segments.
    let segments = match name.rsplit_once('@') {
        Some((local, domain)) => [name, local, domain],
        None => [name, name, name],
    };
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err("a user name is not '.' or '..'");
    }
    Ok(())
}

/// A user database behind [`check_name`]: names it refuses are unknown
/// users, and the database behind is never asked about them.
pub struct CheckedNames(pub Arc<dyn UserDb>);

/// Whether [`check_name`] refuses `name` (and the refusal logged).
fn refused(name: &str) -> bool {
    let Err(why) = check_name(name) else {
        return false;
    };
    tracing::info!(user = %name.escape_debug(), "{why}; refused before any lookup");
    true
}

#[async_trait]
impl UserDb for CheckedNames {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        if refused(name) {
            return Ok(None);
        }
        self.0.lookup(name).await
    }

    async fn lookup_login(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        if refused(name) {
            return Ok(None);
        }
        self.0.lookup_login(name).await
    }

    async fn health(&self) -> Result<(), String> {
        self.0.health().await
    }

    async fn all(&self) -> Vec<Arc<UserRecord>> {
        self.0.all().await
    }

    fn decoy(&self) -> Option<StoredSecret> {
        self.0.decoy()
    }

    fn schemes(&self) -> Option<Vec<Scheme>> {
        self.0.schemes()
    }

    fn checks_names(&self) -> bool {
        true
    }

    async fn generation(&self) -> u64 {
        self.0.generation().await
    }

    fn app_passwords(&self) -> Option<Arc<app_passwords::AppPasswords>> {
        self.0.app_passwords()
    }

    async fn check_password(
        &self,
        user: Option<&UserRecord>,
        password: &[u8],
    ) -> Option<Result<bool, UserDbError>> {
        self.0.check_password(user, password).await
    }
}

impl CheckedNames {
    /// `users` behind [`check_name`], unless it is already.
    pub fn wrap(users: Arc<dyn UserDb>) -> Arc<dyn UserDb> {
        if users.checks_names() {
            users
        } else {
            Arc::new(CheckedNames(users))
        }
    }
}

/// Where users and their secrets come from. Async so that a network
/// database fits behind it.
#[async_trait]
pub trait UserDb: Send + Sync {
    /// The user mail is for (a delivery, an administration command):
    /// Dovecot's userdb.
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError>;

    /// The user who logs in: Dovecot's passdb. The same as [`lookup`]
    /// but where the database tells the two apart (LDAP's `pass_filter`
    /// and `user_filter`): a login must pass the filter that decides who
    /// may log in.
    ///
    /// [`lookup`]: UserDb::lookup
    async fn lookup_login(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        self.lookup(name).await
    }

    /// Whether the database can answer now (for `/readyz`).
    async fn health(&self) -> Result<(), String>;

    /// Every user, where the database is a list one can walk (a passwd
    /// file); empty otherwise. For sweeps over every mailbox.
    async fn all(&self) -> Vec<Arc<UserRecord>> {
        Vec::new()
    }

    /// A secret of the kind this database's users have, verified when the
    /// user is unknown so that the answer takes as long as for a wrong
    /// password. None when the database has no such secret to offer.
    fn decoy(&self) -> Option<StoredSecret> {
        None
    }

    /// The password schemes this database's secrets are stored in, so
    /// that CAPA offers only mechanisms that can succeed (CRAM-MD5 needs
    /// plaintext or CRAM-MD5 secrets, and so on). None: unknown, offer
    /// every enabled mechanism.
    fn schemes(&self) -> Option<Vec<Scheme>> {
        None
    }

    /// Whether this database refuses the names [`check_name`] refuses
    /// (true only for [`CheckedNames`], so that it is never stacked).
    fn checks_names(&self) -> bool {
        false
    }

    /// App passwords kept beside the users (pop3d's PostgreSQL table),
    /// when `auth.app_passwords_file` names no file.
    fn app_passwords(&self) -> Option<Arc<app_passwords::AppPasswords>> {
        None
    }

    /// For a database that checks passwords itself (LDAP's `auth_bind`):
    /// whether `password` is right for `user` (None: an unknown user, to
    /// be answered at the cost of a known one). None: the stored secret
    /// decides, as for every other database.
    async fn check_password(
        &self,
        _user: Option<&UserRecord>,
        _password: &[u8],
    ) -> Option<Result<bool, UserDbError>> {
        None
    }

    /// A number that changes whenever what the database says may have
    /// changed (the passwd file re-read, a change announced by `pop3d
    /// user`): the auth cache forgets everything when it does. Constant
    /// for a database that never says.
    async fn generation(&self) -> u64 {
        0
    }
}

/// Runs password checks; slow schemes go to the blocking pool, at most
/// `permits` at once, so a login flood cannot stall other sessions.
#[derive(Debug, Clone)]
pub struct Verifier {
    slow: Arc<Semaphore>,
}

impl Verifier {
    pub fn new(permits: usize) -> Self {
        Verifier {
            slow: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// Check `password` against `secret`.
    pub async fn verify(&self, secret: &StoredSecret, password: &[u8]) -> bool {
        if !secret.is_slow() {
            return secret.verify(password);
        }
        let secret = secret.clone();
        let password = zeroize::Zeroizing::new(password.to_vec());
        self.run_slow(move || secret.verify(&password))
            .await
            .unwrap_or(false)
    }

    /// Run costly work (a slow hash, SCRAM key stretching) on the blocking
    /// pool under the same bound. None if the work panicked.
    pub async fn run_slow<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.slow.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Verifier::new(cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// On a single-threaded runtime a slow hash checked inline would block
    /// every other task until it finished; through the verifier, other
    /// tasks run while it is computed.
    #[tokio::test(flavor = "current_thread")]
    async fn slow_hashes_do_not_block_the_runtime() {
        let field = hash_password(Scheme::Argon2id, "pw").unwrap();
        let secret = StoredSecret::parse(&field).unwrap();
        let verifier = Verifier::new(1);
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        let other = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        let v = verifier.clone();
        let slow = tokio::spawn(async move {
            let ok = v.verify(&secret, b"pw").await;
            let bad = v.verify(&secret, b"nope").await;
            (ok, bad)
        });
        // The other task finishes while the hashes are being computed.
        other.await.unwrap();
        assert!(other_ran.load(Ordering::SeqCst));
        assert!(!slow.is_finished(), "argon2 cannot be done this fast");
        assert_eq!(slow.await.unwrap(), (true, false));
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The auth cache, as Dovecot's (`auth_cache_size`, `auth_cache_ttl`,
//! `auth_cache_negative_ttl`): user lookups, and the outcome of checking a
//! password, kept in memory for a while, so that a mailbox polled every
//! minute costs no database round trip and no slow hash each time.
//!
//! A password is never kept: a credential is remembered by an HMAC of the
//! user name, the stored secret it was checked against and the password,
//! under a key made at random for this process. A secret changed in the
//! database is a new key: a password found wrong before the change is
//! checked again after it, and one found right is not taken on trust.
//! Whatever the user database says changed (the passwd file re-read, a
//! change announced by `pop3d user`) empties the cache; so does a reload,
//! which makes a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Scheme, StoredSecret, UserDb, UserDbError, UserRecord};
use crate::config::AuthConfig;

/// A credential as the cache knows it: an HMAC of the name, the stored
/// secret and the password.
type Credential = [u8; 32];

/// A lookup as the cache knows it: whether it was a login's, and the
/// name. A database may answer the two differently (LDAP's `pass_filter`
/// and `user_filter`).
type LookupKey = (bool, String);

/// The cache; shared by the user database wrapper and the password check.
pub struct AuthCache {
    key: [u8; 32],
    size: usize,
    ttl: Duration,
    negative_ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The user database's generation the entries were read under.
    generation: u64,
    lookups: HashMap<LookupKey, (Instant, Option<Arc<UserRecord>>)>,
    credentials: HashMap<Credential, (Instant, bool)>,
}

impl State {
    fn len(&self) -> usize {
        self.lookups.len() + self.credentials.len()
    }

    /// Room for one more: expired entries go first; if that is not
    /// enough, the eighth (at least one) that expires soonest, so that a
    /// full cache under a flood of new failures pays a scan once per
    /// eighth of its size, not at every insert.
    fn make_room(&mut self, size: usize, now: Instant) {
        if self.len() < size {
            return;
        }
        self.lookups.retain(|_, (until, _)| *until > now);
        self.credentials.retain(|_, (until, _)| *until > now);
        if self.len() < size {
            return;
        }
        let mut expiries: Vec<Instant> = (self.lookups.values().map(|v| v.0))
            .chain(self.credentials.values().map(|v| v.0))
            .collect();
        let drop = (size / 8).max(1).min(expiries.len()) - 1;
        let (_, cutoff, _) = expiries.select_nth_unstable(drop);
        let cutoff = *cutoff;
        self.lookups.retain(|_, (until, _)| *until > cutoff);
        self.credentials.retain(|_, (until, _)| *until > cutoff);
    }
}

impl AuthCache {
    /// The cache `[auth]` asks for; None when `cache_size` is 0.
    pub fn from_config(auth: &AuthConfig) -> Option<Arc<AuthCache>> {
        if auth.cache_size == 0 {
            return None;
        }
        let mut key = [0u8; 32];
        // Without randomness the cache stays off: a guessable key would let
        // a memory dump be searched for passwords.
        if let Err(e) = getrandom::fill(&mut key) {
            tracing::error!("the auth cache stays off: no randomness for its key: {e}");
            return None;
        }
        Some(Arc::new(AuthCache {
            key,
            size: auth.cache_size,
            ttl: auth.cache_ttl,
            negative_ttl: auth.cache_negative_ttl,
            state: Mutex::new(State::default()),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget everything read under another generation.
    fn follow(&self, generation: u64) {
        let mut st = self.state();
        if st.generation != generation {
            *st = State {
                generation,
                ..State::default()
            };
        }
    }

    fn remembered_lookup(&self, key: &LookupKey) -> Option<Option<Arc<UserRecord>>> {
        let st = self.state();
        let (until, record) = st.lookups.get(key)?;
        (*until > Instant::now()).then(|| record.clone())
    }

    fn remember_lookup(&self, key: LookupKey, record: Option<Arc<UserRecord>>, generation: u64) {
        let ttl = if record.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        let now = Instant::now();
        let mut st = self.state();
        if st.generation != generation {
            return;
        }
        st.make_room(self.size, now);
        st.lookups.insert(key, (now + ttl, record));
    }

    fn credential(&self, name: &str, secret: Option<&StoredSecret>, password: &[u8]) -> Credential {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        let secret = secret.map(StoredSecret::to_field);
        let secret = secret.as_deref().map_or("", String::as_str);
        // Lengths first, so that no two (name, secret) pairs run together.
        for part in [name, secret] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Whether `password` was found right (or wrong) for `name` with the
    /// stored `secret` (None: an unknown user, or one without a password)
    /// within the TTL; None when it was not checked lately.
    pub fn verified(
        &self,
        name: &str,
        secret: Option<&StoredSecret>,
        password: &[u8],
    ) -> Option<bool> {
        let key = self.credential(name, secret, password);
        let st = self.state();
        let (until, verified) = st.credentials.get(&key)?;
        (*until > Instant::now()).then_some(*verified)
    }

    /// The generation of the user database the entries were read under:
    /// taken before a password is checked, given back with the outcome,
    /// so that an outcome reached on a secret changed meanwhile is not
    /// remembered.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Remember what checking `password` for `name` found, under the
    /// `generation` the check began in.
    pub fn remember_verified(
        &self,
        name: &str,
        secret: Option<&StoredSecret>,
        password: &[u8],
        verified: bool,
        generation: u64,
    ) {
        let key = self.credential(name, secret, password);
        let ttl = if verified {
            self.ttl
        } else {
            self.negative_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut st = self.state();
        if st.generation != generation {
            return;
        }
        st.make_room(self.size, now);
        st.credentials.insert(key, (now + ttl, verified));
    }

    /// Entries held now (for tests and the metric).
    pub fn len(&self) -> usize {
        self.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A user database behind the cache: lookups answered from it while
/// fresh.
pub struct CachedUsers {
    pub inner: Arc<dyn UserDb>,
    pub cache: Arc<AuthCache>,
}

impl CachedUsers {
    async fn remembered(
        &self,
        login: bool,
        name: &str,
    ) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        let generation = self.inner.generation().await;
        self.cache.follow(generation);
        let key = (login, name.to_owned());
        if let Some(record) = self.cache.remembered_lookup(&key) {
            return Ok(record);
        }
        // Errors are not remembered: the next login asks again.
        let record = if login {
            self.inner.lookup_login(name).await?
        } else {
            self.inner.lookup(name).await?
        };
        self.cache.remember_lookup(key, record.clone(), generation);
        Ok(record)
    }
}

#[async_trait]
impl UserDb for CachedUsers {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        self.remembered(false, name).await
    }

    async fn lookup_login(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        self.remembered(true, name).await
    }

    async fn health(&self) -> Result<(), String> {
        self.inner.health().await
    }

    async fn all(&self) -> Vec<Arc<UserRecord>> {
        self.inner.all().await
    }

    fn decoy(&self) -> Option<StoredSecret> {
        self.inner.decoy()
    }

    fn schemes(&self) -> Option<Vec<Scheme>> {
        self.inner.schemes()
    }

    async fn generation(&self) -> u64 {
        self.inner.generation().await
    }

    fn app_passwords(&self) -> Option<Arc<super::app_passwords::AppPasswords>> {
        self.inner.app_passwords()
    }

    async fn check_password(
        &self,
        user: Option<&UserRecord>,
        password: &[u8],
    ) -> Option<Result<bool, UserDbError>> {
        self.inner.check_password(user, password).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StaticUsers;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Counts lookups; its generation is set by the test. Its login
    /// lookups find no one (as an LDAP `pass_filter` that keeps every
    /// account out while `user_filter` finds them for mail).
    struct Counting {
        users: StaticUsers,
        lookups: AtomicUsize,
        generation: AtomicU64,
    }

    #[async_trait]
    impl UserDb for Counting {
        async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.users.lookup(name).await
        }
        async fn lookup_login(&self, _: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
        async fn health(&self) -> Result<(), String> {
            Ok(())
        }
        async fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
    }

    fn cache(size: usize, ttl: Duration, negative: Duration) -> Arc<AuthCache> {
        let auth = AuthConfig {
            cache_size: size,
            cache_ttl: ttl,
            cache_negative_ttl: negative,
            ..AuthConfig::default()
        };
        AuthCache::from_config(&auth).unwrap()
    }

    fn setup(size: usize, ttl: Duration) -> (Arc<Counting>, CachedUsers) {
        let inner = Arc::new(Counting {
            users: StaticUsers::new([StaticUsers::user("alice", "{PLAIN}pw").unwrap()]),
            lookups: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        });
        let cached = CachedUsers {
            inner: inner.clone(),
            cache: cache(size, ttl, ttl),
        };
        (inner, cached)
    }

    #[tokio::test]
    async fn lookups_and_misses_are_answered_from_memory_until_the_database_changes() {
        let (inner, cached) = setup(100, Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(cached.lookup("alice").await.unwrap().is_some());
            assert!(cached.lookup("nobody").await.unwrap().is_none());
        }
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
        // The passwd file re-read, `pop3d user passwd`: asked again.
        inner.generation.store(1, Ordering::SeqCst);
        assert!(cached.lookup("alice").await.unwrap().is_some());
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_login_is_never_answered_with_what_a_delivery_found() {
        let (inner, cached) = setup(100, Duration::from_secs(3600));
        for _ in 0..2 {
            assert!(cached.lookup("alice").await.unwrap().is_some());
            assert!(cached.lookup_login("alice").await.unwrap().is_none());
        }
        // Each kind asked once, then remembered apart.
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_expire() {
        let (inner, cached) = setup(100, Duration::from_millis(30));
        cached.lookup("alice").await.unwrap();
        std::thread::sleep(Duration::from_millis(40));
        cached.lookup("alice").await.unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
        cached
            .cache
            .remember_verified("alice", None, b"pw", true, 0);
        assert_eq!(cached.cache.verified("alice", None, b"pw"), Some(true));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cached.cache.verified("alice", None, b"pw"), None);
    }

    #[test]
    fn credentials_are_keyed_by_user_and_password_and_never_kept() {
        let c = cache(100, Duration::from_secs(60), Duration::from_secs(60));
        c.remember_verified("alice", None, b"right", true, 0);
        c.remember_verified("alice", None, b"wrong", false, 0);
        assert_eq!(c.verified("alice", None, b"right"), Some(true));
        assert_eq!(c.verified("alice", None, b"wrong"), Some(false));
        assert_eq!(c.verified("alice", None, b"other"), None);
        assert_eq!(c.verified("bob", None, b"right"), None);
        // ("al" + "ice..." is not "alice" + "...": the name's length is
        // in the key.)
        assert_eq!(c.verified("al", None, b"iceright"), None);
        // Another stored secret: checked again.
        let other = StoredSecret::parse("{PLAIN}right").unwrap();
        assert_eq!(c.verified("alice", Some(&other), b"right"), None);
        assert_eq!(c.verified("alice", Some(&other), b"wrong"), None);
        let st = c.state();
        let held = format!("{:?}", st.credentials.keys().collect::<Vec<_>>());
        assert!(!held.contains("right"));
    }

    #[tokio::test]
    async fn an_outcome_reached_before_a_change_is_not_remembered_after_it() {
        let (inner, cached) = setup(100, Duration::from_secs(60));
        cached.lookup("alice").await.unwrap();
        let began = cached.cache.generation();
        inner.generation.store(1, Ordering::SeqCst);
        cached.lookup("alice").await.unwrap();
        cached
            .cache
            .remember_verified("alice", None, b"old", true, began);
        assert_eq!(cached.cache.verified("alice", None, b"old"), None);
    }

    #[test]
    fn a_negative_ttl_of_zero_remembers_no_failure() {
        let c = cache(100, Duration::from_secs(60), Duration::ZERO);
        c.remember_verified("alice", None, b"wrong", false, 0);
        assert_eq!(c.verified("alice", None, b"wrong"), None);
    }

    #[test]
    fn the_cache_holds_at_most_its_size_dropping_what_expires_first() {
        let c = cache(3, Duration::from_secs(60), Duration::from_secs(30));
        c.remember_verified("a", None, b"1", true, 0);
        c.remember_verified("b", None, b"1", false, 0);
        c.remember_verified("c", None, b"1", true, 0);
        c.remember_verified("d", None, b"1", true, 0);
        assert_eq!(c.len(), 3);
        // The failure had the shorter life.
        assert_eq!(c.verified("b", None, b"1"), None);
        assert_eq!(c.verified("d", None, b"1"), Some(true));
    }
}

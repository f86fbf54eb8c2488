// SPDX-License-Identifier: AGPL-3.0-only
//! Maildir as a [`MailStore`]: messages in `new/` and `cur/`, an exclusive
//! lock per maildrop ([`lock`]; a dead session's lock is taken over), and
//! the [`index`] for sizes and UIDLs.

mod cache;
mod commit;
pub mod deliver;
pub mod index;
pub mod keep;
pub mod lock;
pub mod measure;
mod names;
pub mod quota;
mod read;
pub mod reader;
mod scan;
mod template;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::io::AsyncRead;

use super::uidl::UidlFormat;
use super::{
    Changes, Clock, CommitReport, MailStore, Maildrop, MessageInfo, MessageReader, StoreError,
};
use crate::auth::UserRecord;
use crate::config::{DeleteMode, Expire, Pop3Config};
use crate::safe_fs as fs;
pub(crate) use crate::safe_fs::{replace_file, sync_dir};
use index::{COURIER_UIDLIST, DOVECOT_UIDLIST, INDEX_FILE, Index};

pub use cache::{ListingCache, SETTLE};
pub use lock::LOCK_FILE;
use read::{READ_AHEAD, find_by_key};
use scan::{load_index, open_blocking, scan_and_index};
use template::expand;
pub use template::{check_config, check_template};

/// Maildirs found by expanding a path template per user.
#[derive(Debug)]
pub struct MaildirStore {
    template: String,
    locks: lock::LockTable,
    measure: Arc<measure::MeasureLimit>,
    cache: Option<Arc<ListingCache>>,
    /// Used in the unique names of delivered files.
    hostname: String,
    max_message_size: u64,
    /// What each opened maildrop is told.
    options: DropOptions,
    /// `storage.uidl_format`.
    format: Arc<UidlFormat>,
    /// `server.expire`, for users the user database sets none for.
    expire: Expire,
    clock: Clock,
}

/// How an opened maildrop behaves, from the configuration.
#[derive(Debug, Clone, Copy)]
struct DropOptions {
    /// Octets per read of a large message (`performance.io_buffer_size`).
    read_size: usize,
    /// `storage.mark_seen`.
    mark_seen: bool,
    /// `storage.delete`.
    delete: DeleteMode,
    /// `storage.trash_retention`.
    trash_retention: Duration,
}

/// Block size for message reads when no configuration says otherwise.
const DEFAULT_READ_SIZE: usize = 256 * 1024;

impl MaildirStore {
    /// A store without a listing cache.
    pub fn new(template: impl Into<String>) -> Self {
        MaildirStore {
            template: template.into(),
            locks: lock::LockTable::default(),
            measure: Arc::new(measure::MeasureLimit::for_this_machine()),
            cache: None,
            hostname: "localhost".into(),
            max_message_size: 0,
            options: DropOptions {
                read_size: DEFAULT_READ_SIZE,
                mark_seen: true,
                delete: DeleteMode::Expunge,
                trash_retention: Duration::from_secs(30 * 86400),
            },
            format: Arc::default(),
            expire: Expire::Never,
            clock: Clock::system(),
        }
    }

    /// The store `[storage]`, `[server]` and `[performance]` describe.
    pub fn from_config(config: &Pop3Config) -> Self {
        let p = &config.performance;
        MaildirStore {
            template: config.storage.maildir.clone(),
            locks: lock::LockTable::new(Some(config.storage.lock_dir.clone())),
            measure: Arc::new(measure::MeasureLimit::for_this_machine()),
            cache: p
                .enable_response_caching
                .then(|| Arc::new(ListingCache::new(p.cache_ttl, p.max_cached_responses))),
            hostname: config.server.hostname.clone(),
            max_message_size: config.server.max_message_size,
            options: DropOptions {
                read_size: p.io_buffer_size,
                mark_seen: config.storage.mark_seen,
                delete: config.storage.delete,
                trash_retention: config.storage.trash_retention,
            },
            format: Arc::new(UidlFormat::parse(&config.storage.uidl_format).unwrap_or_default()),
            expire: config.server.expire,
            clock: Clock::system(),
        }
    }

    /// Read the time from `clock` (tests of retention).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Make the UIDLs of new messages with `format`.
    pub fn with_uidl_format(mut self, format: UidlFormat) -> Self {
        self.format = Arc::new(format);
        self
    }

    /// What a login would list, read without writing anything (no lock, no
    /// index, no directory made): `migrate-maildir --dry-run`. UIDLs of
    /// messages the index does not know yet are those a login would give.
    pub async fn preview(&self, user: &UserRecord) -> Result<Vec<MessageInfo>, StoreError> {
        let dir = self.path_for(user)?;
        let (limit, format) = (self.measure.clone(), self.format.clone());
        blocking(move || {
            if !dir.join("cur").is_dir() {
                return Ok(Vec::new());
            }
            scan_and_index(&dir, &limit, &format, false).map(|(_, infos, _)| infos)
        })
        .await
    }

    /// Keep listings between sessions (see [`ListingCache`]).
    pub fn with_cache(mut self, ttl: Duration, max_entries: usize) -> Self {
        self.cache = Some(Arc::new(ListingCache::new(ttl, max_entries)));
        self
    }

    /// Listings served from the cache so far (tests and benchmarks).
    pub fn cache_hits(&self) -> u64 {
        self.cache
            .as_ref()
            .map_or(0, |c| c.hits.load(Ordering::Relaxed))
    }

    /// The Maildir of this user.
    pub fn path_for(&self, user: &UserRecord) -> Result<PathBuf, StoreError> {
        expand(&self.template, user).map(PathBuf::from)
    }
}

#[async_trait]
impl MailStore for MaildirStore {
    async fn open(&self, user: &UserRecord) -> Result<Box<dyn Maildrop>, StoreError> {
        let dir = self.path_for(user)?;
        let cache = self.cache.clone();
        let locks = self.locks.clone();
        let limit = self.measure.clone();
        let options = self.options;
        let format = self.format.clone();
        let period = user.settings.expire.unwrap_or(self.expire).period();
        let clock = self.clock.clone();
        let drop = blocking(move || {
            let mut drop = open_blocking(&dir, &locks, limit, cache.as_deref(), options, format)?;
            drop.expire = period;
            drop.clock = clock;
            if period.is_some_and(|p| !p.is_zero()) {
                drop.remove_expired()?;
            }
            Ok(drop)
        })
        .await?;
        Ok(Box::new(drop))
    }

    async fn restore(
        &self,
        user: &UserRecord,
        since: Option<SystemTime>,
    ) -> Result<usize, StoreError> {
        let dir = self.path_for(user)?;
        let locks = self.locks.clone();
        let format = self.format.clone();
        let since = since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        blocking(move || {
            let lock = locks.lock(&dir)?;
            let (mut index, ..) = load_index(&dir, &format)?;
            let restored = keep::restore(&dir, &mut index, since)?;
            if !restored.is_empty() {
                // Back in the count of maildirsize, if the Maildir keeps one.
                let counted: Vec<(i64, i64)> = restored
                    .iter()
                    .map(|p| (quota::file_octets(p) as i64, 1))
                    .collect();
                quota::record(&dir, &counted);
            }
            lock.release();
            Ok(restored.len())
        })
        .await
    }

    async fn purge_trash(&self, users: &[Arc<UserRecord>]) -> Result<usize, StoreError> {
        let before = self
            .clock
            .unix_secs()
            .saturating_sub(self.options.trash_retention.as_secs());
        let mut purged = 0;
        for user in users {
            let Ok(dir) = self.path_for(user) else {
                continue;
            };
            let locks = self.locks.clone();
            purged += blocking(move || {
                if !dir.join(keep::TRASH_DIR).join(keep::TRASH_LIST).exists() {
                    return Ok(0);
                }
                // A user in a session is swept next time.
                let lock = match locks.lock_briefly(&dir) {
                    Ok(lock) => lock,
                    Err(StoreError::InUse) => return Ok(0),
                    Err(e) => return Err(e),
                };
                let purged = keep::purge(&dir, before);
                lock.release();
                purged
            })
            .await?;
        }
        Ok(purged)
    }

    async fn trashed(
        &self,
        user: &UserRecord,
        since: Option<SystemTime>,
    ) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let dir = self.path_for(user)?;
        let since = since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mut list = blocking(move || keep::read_trash(&dir)).await?;
        list.retain(|t| t.when >= since);
        list.sort_by_key(|t| t.when);
        Ok(list
            .into_iter()
            .map(|t| (t.uidl, std::time::UNIX_EPOCH + Duration::from_secs(t.when)))
            .collect())
    }

    async fn after_restore(&self, users: &[Arc<UserRecord>]) -> Result<usize, StoreError> {
        let mut renewed = 0;
        for user in users {
            let dir = self.path_for(user)?;
            let (locks, format) = (self.locks.clone(), self.format.clone());
            let now = self.clock.unix_secs() as u32;
            renewed += blocking(move || {
                if !dir.is_dir() {
                    return Ok(0);
                }
                let lock = locks.lock(&dir)?;
                let (mut index, ..) = load_index(&dir, &format)?;
                index.validity = index.validity.saturating_add(1).max(now);
                index.next_uid = index.next_uid.saturating_add(AFTER_RESTORE_GAP);
                let stored = index.store(&dir).map_err(|e| io(&dir, e));
                lock.release();
                stored.map(|()| 1)
            })
            .await?;
        }
        Ok(renewed)
    }

    async fn deliver(
        &self,
        user: &UserRecord,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let dir = self.path_for(user)?;
        let quota = user.settings.quota;
        deliver::deliver(
            &dir,
            &self.hostname,
            self.max_message_size,
            quota,
            None,
            message,
        )
        .await
    }

    /// Delivered with the UIDL in the name; the next login (the import
    /// holds the maildrop meanwhile) records it in the index. No quota: an
    /// import is the administrator's, and counts in `maildirsize` all the
    /// same.
    async fn import(
        &self,
        user: &UserRecord,
        uidl: &str,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let dir = self.path_for(user)?;
        let max = self.max_message_size;
        deliver::deliver(&dir, &self.hostname, max, None, Some(uidl), message).await
    }

    /// The fixed part of the template (before the first escape) must be a
    /// directory; a template that starts with `%h` has none to check.
    async fn health(&self) -> Result<(), String> {
        let fixed = self.template.split('%').next().unwrap_or("");
        if fixed.is_empty() {
            return Ok(());
        }
        let root = if fixed.ends_with('/') {
            Path::new(fixed)
        } else {
            Path::new(fixed).parent().unwrap_or(Path::new("/"))
        };
        match tokio::fs::metadata(root).await {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => Err(format!("mail root {} is not a directory", root.display())),
            Err(e) => Err(format!("mail root {}: {e}", root.display())),
        }
    }
}

#[derive(Debug, Clone)]
struct Message {
    /// Base name: the file name before the `:2,flags` info.
    key: String,
    /// Its UID in the index (kept in the trash, for a restore).
    uid: u32,
    /// Where it was at snapshot time (may move when flags change).
    path: PathBuf,
}

/// A locked Maildir snapshot.
#[derive(Debug)]
pub struct MaildirDrop {
    dir: PathBuf,
    messages: Arc<Vec<Message>>,
    infos: Arc<Vec<MessageInfo>>,
    /// Held for the life of the session; released by `commit`.
    lock: lock::MaildropLock,
    options: DropOptions,
    /// Small messages read ahead together with the one asked for (index,
    /// bytes), so that a client fetching one after another costs one trip
    /// to the blocking pool per [`READ_AHEAD`] octets, not one per message.
    read_ahead: Mutex<std::collections::VecDeque<(usize, Vec<u8>)>>,
    /// How long a retrieved message is kept, for this user.
    expire: Option<Duration>,
    clock: Clock,
    /// The index could not be written at login (a full disk): what it
    /// takes to try again at QUIT, once deletions may have freed space.
    index_pending: Option<(Arc<measure::MeasureLimit>, Arc<UidlFormat>)>,
}

/// How far `after_restore` moves next UIDs ahead: more than a restored
/// backup can be behind.
const AFTER_RESTORE_GAP: u32 = 1_000_000;

fn io(context: &Path, e: std::io::Error) -> StoreError {
    StoreError::from_io(&context.display().to_string(), &e)
}

#[async_trait]
impl Maildrop for MaildirDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.infos
    }

    async fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        let message = self.messages.get(index).ok_or(StoreError::MessageGone)?;
        if let Some(data) = self.take_read_ahead(index) {
            return Ok(Box::new(std::io::Cursor::new(data)));
        }
        if self.infos[index].size <= READ_AHEAD {
            return self.read_small(index).await;
        }
        let first = message.path.clone();
        match reader::FileReader::open(first.clone(), self.options.read_size).await {
            Ok(r) => return Ok(Box::new(r)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&first, e)),
            Err(_) => {}
        }
        // Renamed by another program (flags changed, moved to cur/)?
        let dir = self.dir.clone();
        let key = self.messages[index].key.clone();
        let path = blocking(move || find_by_key(&dir, &key)).await?;
        match reader::FileReader::open(path.clone(), self.options.read_size).await {
            Ok(r) => Ok(Box::new(r)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::MessageGone),
            Err(e) => Err(io(&path, e)),
        }
    }

    async fn commit(self: Box<Self>, changes: Changes) -> Result<CommitReport, StoreError> {
        // Retrieval times are kept whether or not flags are.
        let recording = self.expire.is_some_and(|p| !p.is_zero());
        let seen = if self.options.mark_seen {
            changes.seen.clone()
        } else {
            Vec::new()
        };
        let record = recording && !changes.seen.is_empty();
        if changes.deleted.is_empty() && seen.is_empty() && !record {
            // Nothing to write: the QUIT need not wait for the release.
            self.lock.release_in_background();
            return Ok(CommitReport::default());
        }
        blocking(move || Ok(self.commit_blocking(&changes, &seen))).await
    }

    async fn release(self: Box<Self>) {
        self.lock.release_in_background();
    }
}

/// Run blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Temporary(format!("maildir task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(home: &Path) -> UserRecord {
        UserRecord {
            name: "u".into(),
            secret: None,
            uid: None,
            gid: None,
            home: Some(home.to_owned()),
            extra: String::new(),
            settings: Default::default(),
            account: Default::default(),
            dn: None,
        }
    }

    /// Pretend the directories last changed a minute ago, so a scan counts
    /// as settled.
    fn age(md: &Path) {
        let past = SystemTime::now() - Duration::from_secs(60);
        for sub in ["new", "cur"] {
            std::fs::File::open(md.join(sub))
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
    }

    #[tokio::test]
    async fn listing_is_reused_until_the_maildir_changes() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("new/1.a.host"), b"one\n").unwrap();
        age(&md);
        let store = MaildirStore::new("%h/Maildir").with_cache(Duration::from_secs(60), 10);
        let u = user(dir.path());
        let first: Vec<MessageInfo> = store.open(&u).await.unwrap().messages().to_vec();
        assert_eq!(store.cache_hits(), 0);
        let second: Vec<MessageInfo> = store.open(&u).await.unwrap().messages().to_vec();
        assert_eq!(store.cache_hits(), 1);
        assert_eq!(first, second);
        // A delivery changes new/: the next login sees it, from a fresh scan.
        let mut msg: &[u8] = b"two\n";
        store.deliver(&u, &mut msg).await.unwrap();
        let third = store.open(&u).await.unwrap().messages().to_vec();
        assert_eq!(store.cache_hits(), 1);
        assert_eq!(third.len(), 2);
        // Deletions change it too.
        let drop = store.open(&u).await.unwrap();
        assert_eq!(
            store.cache_hits(),
            1,
            "a scan right after a change is not cached"
        );
        let changes = Changes {
            deleted: vec![0],
            ..Changes::default()
        };
        drop.commit(changes).await.unwrap();
        assert_eq!(store.open(&u).await.unwrap().messages().len(), 1);
        // A settled, unchanged Maildir is served from the cache again.
        age(&md);
        let _ = store.open(&u).await.unwrap();
        let _ = store.open(&u).await.unwrap();
        assert_eq!(store.cache_hits(), 2);
    }

    #[tokio::test]
    async fn a_damaged_index_is_salvaged_and_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("cur/1.a.host:2,S"), b"one\n").unwrap();
        std::fs::write(md.join("cur/2.b.host:2,S"), b"two\n").unwrap();
        // UIDs up to 9 were handed out; message b's line is damaged.
        std::fs::write(
            md.join(INDEX_FILE),
            "pop3d-uidlist 2 V500 N10\n4 5 seen-before 1.a.host\n7 x\n",
        )
        .unwrap();
        let store = MaildirStore::new("%h/Maildir");
        let u = user(dir.path());
        let infos = store.open(&u).await.unwrap().messages().to_vec();
        assert_eq!(infos[0].uid, "seen-before");
        assert_eq!(
            infos[1].uid, "0000000a000001f4",
            "above every UID handed out"
        );
        let written = std::fs::read_to_string(md.join(INDEX_FILE)).unwrap();
        assert!(Index::parse(&written).is_some(), "{written}");
    }

    #[tokio::test]
    async fn cache_honours_ttl_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = MaildirStore::new("%h/%n").with_cache(Duration::ZERO, 10);
        let mut u = user(dir.path());
        let _ = store.open(&u).await.unwrap();
        age(&dir.path().join("u"));
        let _ = store.open(&u).await.unwrap();
        let _ = store.open(&u).await.unwrap();
        assert_eq!(store.cache_hits(), 0, "ttl 0 never serves from the cache");

        let store = MaildirStore::new("%h/%n").with_cache(Duration::from_secs(60), 1);
        for name in ["a", "b"] {
            u.name = name.into();
            let _ = store.open(&u).await.unwrap();
            age(&dir.path().join(name));
            let _ = store.open(&u).await.unwrap();
        }
        let entries = store.cache.as_ref().unwrap().entries.lock().unwrap().len();
        assert_eq!(entries, 1, "bounded by max_cached_responses");
    }
}

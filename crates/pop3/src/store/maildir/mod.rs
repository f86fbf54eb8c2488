// SPDX-License-Identifier: AGPL-3.0-only
//! Maildir as a [`MailStore`]: messages in `new/` and `cur/`, an exclusive
//! lock per maildrop ([`lock`]; a dead session's lock is taken over), and
//! the [`index`] for sizes and UIDLs.

pub mod deliver;
pub mod index;
pub mod keep;
pub mod lock;
pub mod measure;
pub mod quota;
pub mod reader;

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

pub use lock::LOCK_FILE;
const SUBDIRS: [&str; 2] = ["new", "cur"];

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

/// What this module says of `[storage]`: the Maildir template's escapes.
pub fn check_config(config: &crate::config::Pop3Config) -> Result<(), (String, String)> {
    check_template(&config.storage.maildir).map_err(|r| ("storage.maildir".to_owned(), r))
}

/// Check a template for unknown `%` escapes.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'n' | 'd' | 'h' | '%') => {}
                Some(other) => {
                    return Err(format!("unknown escape %{other}; use %u, %n, %d, %h or %%"));
                }
                None => return Err("template ends with a lone %".into()),
            }
        }
    }
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

fn expand(template: &str, user: &UserRecord) -> Result<String, StoreError> {
    let (local, domain) = user.name.split_once('@').unwrap_or((&user.name, ""));
    let mut out = String::with_capacity(template.len() + 32);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&user.name),
            Some('n') => out.push_str(local),
            Some('d') => out.push_str(domain),
            Some('h') => match &user.home {
                Some(h) => out.push_str(&h.to_string_lossy()),
                None => {
                    return Err(StoreError::Permanent(format!(
                        "user {} has no home directory for %h",
                        user.name
                    )));
                }
            },
            Some('%') => out.push('%'),
            _ => return Err(StoreError::Permanent("bad maildir template".into())),
        }
    }
    Ok(out)
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
                index
                    .store(&dir)
                    .map_err(|e| io(&dir.join(INDEX_FILE), e))?;
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
                let lock = match locks.lock(&dir) {
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

/// Listings (names, sizes, UIDLs) kept between sessions, keyed by Maildir.
/// An entry is used only while `new/` and `cur/` keep the modification
/// times they had when it was made, and only if that scan ran at least
/// [`SETTLE`] after the last change: file systems stamp times from a coarse
/// clock, so two changes within one tick would otherwise look like one.
#[derive(Debug)]
pub struct ListingCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<PathBuf, Arc<Listing>>>,
    hits: AtomicU64,
}

/// How long a directory must have been quiet before its scan is cached.
pub const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Listing {
    stamps: [SystemTime; 2],
    made: Instant,
    messages: Arc<Vec<Message>>,
    infos: Arc<Vec<MessageInfo>>,
}

impl ListingCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        ListingCache {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
        }
    }

    fn get(&self, dir: &Path, stamps: [SystemTime; 2]) -> Option<Arc<Listing>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let hit = entries
            .get(dir)
            .filter(|l| l.stamps == stamps && l.made.elapsed() < self.ttl)
            .cloned();
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn put(&self, dir: &Path, listing: Listing, scanned_at: SystemTime) {
        let settled = listing
            .stamps
            .iter()
            .all(|t| scanned_at.duration_since(*t).is_ok_and(|d| d >= SETTLE));
        if !settled || self.max_entries == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(dir) {
            let ttl = self.ttl;
            entries.retain(|_, l| l.made.elapsed() < ttl);
            if entries.len() >= self.max_entries
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, l)| l.made)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(dir.to_owned(), Arc::new(listing));
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

/// Most octets of following small messages read with a small one.
const READ_AHEAD: u64 = 64 * 1024;

fn io(context: &Path, e: std::io::Error) -> StoreError {
    StoreError::from_io(&context.display().to_string(), &e)
}

fn key_of(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// Files in new/ and cur/ as (key, path), hidden files skipped.
fn scan(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for sub in SUBDIRS {
        let subdir = dir.join(sub);
        let entries = std::fs::read_dir(&subdir).map_err(|e| io(&subdir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(&subdir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            // Only regular files are mail: a link (to another user's mail,
            // to /etc/shadow), a FIFO or a device is never listed or opened.
            // The type comes from the directory entry, without a stat.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                tracing::warn!(file = %entry.path().display(), "not a regular file; skipped");
                continue;
            }
            found.push((key_of(name).to_owned(), entry.path()));
        }
    }
    Ok(found)
}

/// `,W=<n>` in a Maildir name is the size with CRLF line ends.
fn size_from_name(name: &str) -> Option<u64> {
    let info_start = name.find(':').unwrap_or(name.len());
    name[..info_start]
        .split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|v| v.parse().ok())
}

/// The Maildir's index, and whether it must be written back even if no
/// message changes (it was rebuilt from a damaged file).
/// The index, whether it changed from the file (a rebuild), and whether
/// it is the file as stored (not one made up because there is none).
fn load_index(dir: &Path, format: &UidlFormat) -> Result<(Index, bool, bool), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    // The list of the server the Maildir comes from: Dovecot's, else
    // Courier's.
    let foreign = || {
        let read = |file: &str, parse: fn(&str, &UidlFormat) -> Option<Index>| {
            let text = fs::read_to_string(&dir.join(file)).ok()?;
            parse(&text, format).or_else(|| {
                tracing::warn!(maildir = %dir.display(), "unreadable {file}; ignored");
                None
            })
        };
        read(DOVECOT_UIDLIST, Index::from_dovecot)
            .or_else(|| read(COURIER_UIDLIST, Index::from_courier))
    };
    let with_format = |mut index: Index| {
        index.format = format.clone();
        index
    };
    match fs::read_to_string(&dir.join(INDEX_FILE)) {
        Ok(text) => {
            if let Some(index) = Index::parse(&text) {
                return Ok((with_format(index), false, true));
            }
            let index = with_format(Index::rebuild(Index::salvage(&text), foreign(), now));
            tracing::error!(
                maildir = %dir.display(),
                validity = index.validity,
                next_uid = index.next_uid,
                kept = index.entries.len(),
                "damaged {INDEX_FILE} rebuilt: UIDLs that could be read are kept; new messages get UIDs above every known one"
            );
            Ok((index, true, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            with_format(foreign().unwrap_or_else(|| Index::new(now.max(1)))),
            false,
            false,
        )),
        // A link or a special file planted in its place: pop3d makes
        // neither, so the real index is gone; rebuilt, and the rename that
        // stores it replaces the intruder, never its target.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            tracing::error!(maildir = %dir.display(), "{INDEX_FILE} is not a regular file; rebuilt");
            Ok((
                with_format(Index::rebuild(Index::salvage(""), foreign(), now)),
                true,
                false,
            ))
        }
        // Present but unreadable: never mistake it for absent.
        Err(e) => Err(io(&dir.join(INDEX_FILE), e)),
    }
}

fn create_maildir(dir: &Path) -> Result<(), StoreError> {
    for sub in ["cur", "new", "tmp"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
    }
    Ok(())
}

fn stamps(dir: &Path) -> Result<[SystemTime; 2], StoreError> {
    let stamp = |sub: &str| {
        let p = dir.join(sub);
        std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .map_err(|e| io(&p, e))
    };
    Ok([stamp("new")?, stamp("cur")?])
}

fn open_blocking(
    dir: &Path,
    locks: &lock::LockTable,
    limit: Arc<measure::MeasureLimit>,
    cache: Option<&ListingCache>,
    options: DropOptions,
    format: Arc<UidlFormat>,
) -> Result<MaildirDrop, StoreError> {
    // A user's first login creates the Maildir, as Dovecot does. The
    // common case costs no extra look: claiming the lock needs the
    // directory, and the stamps taken under it need `new/` and `cur/`.
    let lock = match locks.lock(dir) {
        Err(e) if !matches!(e, StoreError::InUse) && !dir.is_dir() => {
            create_maildir(dir)?;
            locks.lock(dir)?
        }
        other => other?,
    };
    let before = match stamps(dir) {
        Ok(s) => s,
        Err(_) => {
            create_maildir(dir)?;
            stamps(dir)?
        }
    };
    let maildrop = |messages, infos| MaildirDrop {
        dir: dir.to_owned(),
        messages,
        infos,
        lock,
        options,
        read_ahead: Mutex::default(),
        expire: None,
        clock: Clock::system(),
        index_pending: None,
    };
    if let Some(hit) = cache.and_then(|c| c.get(dir, before)) {
        return Ok(maildrop(hit.messages.clone(), hit.infos.clone()));
    }
    let scanned_at = SystemTime::now();
    let (messages, infos, written) = scan_and_index(dir, &limit, &format, true)?;
    let (messages, infos) = (Arc::new(messages), Arc::new(infos));
    if !written {
        // A listing with mail held back is for this session only.
        let mut drop = maildrop(messages, infos);
        drop.index_pending = Some((limit, format));
        return Ok(drop);
    }
    // Cache only what nobody changed while we scanned.
    if let Some(cache) = cache
        && stamps(dir)? == before
    {
        let listing = Listing {
            stamps: before,
            made: Instant::now(),
            messages: messages.clone(),
            infos: infos.clone(),
        };
        cache.put(dir, listing, scanned_at);
    }
    Ok(maildrop(messages, infos))
}

/// Read the directory and the index; give new messages UIDs and sizes.
/// The last value says whether the index on disk is current: false when it
/// could not be written for lack of space, and then only the messages the
/// stored index already knew are listed (under the UIDLs it gave them),
/// so that no UIDL is shown that could change once there is room.
fn scan_and_index(
    dir: &Path,
    limit: &measure::MeasureLimit,
    format: &UidlFormat,
    persist: bool,
) -> Result<(Vec<Message>, Vec<MessageInfo>, bool), StoreError> {
    let files = scan(dir)?;
    let (mut index, mut changed, on_disk) = load_index(dir, format)?;
    // What the stored index knows, should the new one not fit on disk.
    let stored: Option<std::collections::HashSet<String>> =
        on_disk.then(|| index.entries.keys().cloned().collect());

    // Forget messages that are gone; their UIDs are never given out again
    // because next_uid only grows.
    let present: HashMap<&str, &PathBuf> = files.iter().map(|(k, p)| (k.as_str(), p)).collect();
    let before = index.entries.len();
    index
        .entries
        .retain(|k, _| present.contains_key(k.as_str()));
    changed |= index.entries.len() != before;

    // New messages get UIDs in delivery order (Maildir names start with the
    // delivery time).
    let mut fresh: Vec<&(String, PathBuf)> = files
        .iter()
        .filter(|(k, _)| !index.entries.contains_key(k))
        .collect();
    fresh.sort_by(|a, b| a.0.cmp(&b.0));
    fresh.dedup_by(|a, b| a.0 == b.0);
    changed |= !fresh.is_empty();
    index.assign_all(
        fresh
            .into_iter()
            .map(|(key, path)| (key.as_str(), Some(path.as_path()))),
    );

    // One entry per message (the same message may sit in new/ and cur/
    // for a moment).
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    let files: Vec<&(String, PathBuf)> = files
        .iter()
        .filter(|(k, _)| seen.insert(k.as_str()))
        .collect();

    // Sizes: from the index; else `,W=` in the name, used as it is (it
    // costs no read: a mail delivered by SMTP or LMTP always ends with a
    // line end, and pop3d's own deliveries count the CRLF RETR adds);
    // else Dovecot's recorded `W`, checked against the last octet (once,
    // at migration); else measured.
    let mut unknown = Vec::new();
    for (key, path) in &files {
        let entry = index
            .entries
            .get_mut(key)
            .expect("every present key has an entry");
        if entry.size.is_some() {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(size) = size_from_name(name) {
            entry.size = Some(size);
            changed = true;
            continue;
        }
        let recorded = index.recorded.get(key).copied();
        unknown.push((key.as_str(), (path.as_path(), recorded)));
    }
    let jobs: Vec<measure::Job<'_>> = unknown.iter().map(|(_, job)| *job).collect();
    for ((key, _), size) in unknown.iter().zip(measure::sizes(limit, &jobs)?) {
        if let Some(s) = size {
            index.entries.get_mut(*key).expect("present").size = Some(s);
            changed = true;
        }
    }

    let mut listed = Vec::with_capacity(files.len());
    for (key, path) in files {
        let entry = &index.entries[key];
        // A file that vanished before it could be measured waits for the
        // next login.
        let Some(size) = entry.size else { continue };
        let info = MessageInfo {
            size,
            uid: entry.uidl.clone(),
        };
        let message = Message {
            key: key.clone(),
            uid: entry.uid,
            path: path.clone(),
        };
        listed.push((entry.uid, message, info));
    }
    listed.sort_by_key(|(uid, ..)| *uid);

    // UIDs handed out must be on disk before a client sees them, or the
    // next login could hand the same UIDs to other messages.
    let mut written = true;
    if persist
        && changed
        && let Err(e) = index.store(dir)
    {
        // Without room for the index the user can still read and delete,
        // the one thing that frees space: what the stored index knows
        // goes out under its UIDLs, what is new waits for a later index.
        match &stored {
            Some(known) if crate::store::is_full(&e) => {
                let before = listed.len();
                listed.retain(|(_, m, _)| known.contains(&m.key));
                tracing::warn!(
                    maildir = %dir.display(),
                    held_back = before - listed.len(),
                    "cannot write {INDEX_FILE} ({e}): messages new since it was last written are left out of this session until it fits"
                );
                written = false;
            }
            _ => {
                tracing::error!(maildir = %dir.display(), "cannot write {INDEX_FILE}: {e}");
                return Err(io(&dir.join(INDEX_FILE), e));
            }
        }
    }
    let (messages, infos): (Vec<Message>, Vec<MessageInfo>) =
        listed.into_iter().map(|(_, m, i)| (m, i)).unzip();
    Ok((messages, infos, written))
}

impl MaildirDrop {
    /// Message `index` if it was read ahead; what was read ahead of it is
    /// dropped (clients fetch in order, and those files do not change).
    fn take_read_ahead(&self, index: usize) -> Option<Vec<u8>> {
        let mut ahead = self.read_ahead.lock().unwrap_or_else(|p| p.into_inner());
        while ahead.front().is_some_and(|(i, _)| *i < index) {
            ahead.pop_front();
        }
        match ahead.front() {
            Some((i, _)) if *i == index => ahead.pop_front().map(|(_, data)| data),
            _ => {
                ahead.clear();
                None
            }
        }
    }

    /// Read a small message, and the small ones after it up to
    /// [`READ_AHEAD`] octets, in one trip to the blocking pool.
    async fn read_small(&self, index: usize) -> Result<MessageReader, StoreError> {
        let mut budget = READ_AHEAD;
        let mut wanted = vec![(index, self.messages[index].path.clone())];
        for j in index + 1..self.messages.len() {
            let size = self.infos[j].size;
            if size > budget {
                break;
            }
            budget -= size;
            wanted.push((j, self.messages[j].path.clone()));
        }
        let (dir, key) = (self.dir.clone(), self.messages[index].key.clone());
        let mut read = blocking(move || {
            let mut read = Vec::with_capacity(wanted.len());
            for (n, (j, path)) in wanted.into_iter().enumerate() {
                match fs::read(&path) {
                    Ok(data) => read.push((j, data)),
                    // The one asked for moved (flags changed): find it.
                    Err(e) if n == 0 && e.kind() == std::io::ErrorKind::NotFound => {
                        let path = find_by_key(&dir, &key)?;
                        let data = fs::read(&path).map_err(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => StoreError::MessageGone,
                            _ => io(&path, e),
                        })?;
                        read.push((j, data));
                    }
                    Err(e) if n == 0 => return Err(io(&path, e)),
                    // One read ahead that moved is read when asked for.
                    Err(_) => break,
                }
            }
            Ok(read)
        })
        .await?
        .into_iter();
        let (_, data) = read.next().ok_or(StoreError::MessageGone)?;
        self.read_ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(read);
        Ok(Box::new(std::io::Cursor::new(data)))
    }

    /// The message's current path: where it was, or where a flag change
    /// moved it since.
    fn locate(&self, index: usize) -> Result<PathBuf, StoreError> {
        let m = self.messages.get(index).ok_or(StoreError::MessageGone)?;
        if m.path.exists() {
            return Ok(m.path.clone());
        }
        find_by_key(&self.dir, &m.key)
    }
}

/// Where a message is now, by its base name.
fn find_by_key(dir: &Path, key: &str) -> Result<PathBuf, StoreError> {
    scan(dir)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, p)| p)
        .ok_or(StoreError::MessageGone)
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

impl MaildirDrop {
    /// Remove messages (into the trash with `delete = "trash"`); which
    /// of `new/` and `cur/` changed.
    fn remove(&self, indices: &[usize], report: &mut CommitReport) -> [bool; 2] {
        let mut touched = [false; 2];
        let mut found = Vec::with_capacity(indices.len());
        for &i in indices {
            match self.locate(i) {
                Ok(path) => found.push((i, path)),
                // Someone else removed it already: the client's wish holds.
                Err(StoreError::MessageGone) => report.removed += 1,
                Err(e) => {
                    tracing::error!(maildir = %self.dir.display(), "cannot delete message: {e}");
                    report.failed += 1;
                }
            }
        }
        // Sizes for maildirsize, taken before the files go.
        let sizes: Vec<i64> = if self.dir.join(quota::MAILDIRSIZE).exists() {
            found
                .iter()
                .map(|(_, path)| quota::file_octets(path) as i64)
                .collect()
        } else {
            Vec::new()
        };
        let removed: Vec<bool> = match self.options.delete {
            DeleteMode::Expunge => found
                .iter()
                .map(|(_, path)| match std::fs::remove_file(path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                    Err(e) => {
                        tracing::error!(file = %path.display(), "cannot delete message: {e}");
                        false
                    }
                })
                .collect(),
            DeleteMode::Trash => {
                let what: Vec<(PathBuf, u32, String)> = found
                    .iter()
                    .map(|(i, path)| {
                        (
                            path.clone(),
                            self.messages[*i].uid,
                            self.infos[*i].uid.clone(),
                        )
                    })
                    .collect();
                let now = self.clock.unix_secs();
                let retention = self.options.trash_retention.as_secs();
                keep::trash(&self.dir, &what, now, now.saturating_sub(retention))
            }
        };
        let mut counted = Vec::new();
        for (n, ((_, path), ok)) in found.iter().zip(removed).enumerate() {
            if ok {
                if let Some(size) = sizes.get(n) {
                    counted.push((-size, -1));
                }
                let sub = path.parent().and_then(|p| p.file_name());
                touched[usize::from(sub.is_some_and(|s| s == "cur"))] = true;
                report.removed += 1;
            } else {
                report.failed += 1;
            }
        }
        quota::record(&self.dir, &counted);
        touched
    }

    /// Make changes in `new/` and `cur/` durable.
    fn sync(&self, touched: [bool; 2]) {
        for (sub, _) in SUBDIRS.iter().zip(touched).filter(|(_, t)| *t) {
            let d = self.dir.join(sub);
            if let Err(e) = sync_dir(&d) {
                tracing::error!(dir = %d.display(), "cannot make deletions durable: {e}");
            }
        }
    }

    /// At login, under the lock: remove the messages first retrieved
    /// longer ago than the retention period, and list the rest.
    fn remove_expired(&mut self) -> Result<(), StoreError> {
        let Some(period) = self.expire else {
            return Ok(());
        };
        let times = keep::read_retrieved(&self.dir)?;
        if times.is_empty() {
            return Ok(());
        }
        let now = self.clock.unix_secs();
        let expired: Vec<usize> = (0..self.messages.len())
            .filter(|&i| {
                times
                    .get(&self.messages[i].key)
                    .is_some_and(|&t| t.saturating_add(period.as_secs()) <= now)
            })
            .collect();
        if !expired.is_empty() {
            let mut report = CommitReport::default();
            let touched = self.remove(&expired, &mut report);
            self.sync(touched);
            tracing::info!(
                maildir = %self.dir.display(),
                removed = report.removed,
                "messages past their retention period removed at login"
            );
            let gone: std::collections::HashSet<usize> = expired.into_iter().collect();
            let (messages, infos) = self
                .messages
                .iter()
                .zip(self.infos.iter())
                .enumerate()
                .filter(|(i, _)| !gone.contains(i))
                .map(|(_, (m, info))| (m.clone(), info.clone()))
                .unzip();
            self.messages = Arc::new(messages);
            self.infos = Arc::new(infos);
        }
        // Forget the times of messages that are gone.
        let present: std::collections::HashSet<&str> =
            self.messages.iter().map(|m| m.key.as_str()).collect();
        if times.keys().any(|k| !present.contains(k.as_str())) {
            let kept = times
                .into_iter()
                .filter(|(k, _)| present.contains(k.as_str()))
                .collect();
            keep::write_retrieved(&self.dir, &kept)?;
        }
        Ok(())
    }

    /// Record when retrieved messages were first retrieved, for a
    /// retention period.
    fn record_retrieved(&self, seen: &[usize]) {
        let mut times = match keep::read_retrieved(&self.dir) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(maildir = %self.dir.display(), "cannot read retrieval times: {e}");
                return;
            }
        };
        let now = self.clock.unix_secs();
        let before = times.len();
        for &i in seen {
            if let Some(m) = self.messages.get(i) {
                times.entry(m.key.clone()).or_insert(now);
            }
        }
        if times.len() != before
            && let Err(e) = keep::write_retrieved(&self.dir, &times)
        {
            tracing::error!(maildir = %self.dir.display(), "cannot record retrieval times: {e}");
        }
    }

    /// Remove the marked messages, move the retrieved ones to `cur/` with
    /// the seen flag (as Dovecot does, so IMAP clients sharing the Maildir
    /// see them as read), make it all durable, then release the lock:
    /// another session must not see the maildrop before that is done.
    fn commit_blocking(self, changes: &Changes, seen: &[usize]) -> CommitReport {
        let mut report = CommitReport::default();
        let mut touched = self.remove(&changes.deleted, &mut report);
        if self.expire.is_some_and(|p| !p.is_zero()) && !changes.seen.is_empty() {
            self.record_retrieved(&changes.seen);
        }
        for &i in seen {
            let Ok(from) = self.locate(i) else { continue };
            let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_cur = from.parent().and_then(|p| p.file_name()) == Some("cur".as_ref());
            let Some(seen) = seen_name(name).filter(|n| !in_cur || n != name) else {
                continue;
            };
            match std::fs::rename(&from, self.dir.join("cur").join(&seen)) {
                Ok(()) => touched = [true, true],
                // A flag is not worth failing QUIT over.
                Err(e) => tracing::warn!(file = %from.display(), "cannot mark as seen: {e}"),
            }
        }
        self.sync(touched);
        // The index that did not fit at login may fit now that messages
        // are gone; else a later login writes it.
        if let Some((limit, format)) = &self.index_pending
            && let Err(e) = scan_and_index(&self.dir, limit, format, true)
        {
            tracing::warn!(maildir = %self.dir.display(), "{INDEX_FILE} still not written: {e}");
        }
        self.lock.release();
        report
    }
}

/// A Maildir file name with the seen flag: the `:2,` info with `S` among
/// its flags, kept in ASCII order as maildir(5) asks. `None` for a name
/// with an info part of another version, which is left alone.
fn seen_name(name: &str) -> Option<String> {
    let (key, flags) = match name.split_once(':') {
        None => (name, ""),
        Some((key, info)) => (key, info.strip_prefix("2,")?),
    };
    let mut flags: Vec<char> = flags.chars().collect();
    if !flags.contains(&'S') {
        flags.push('S');
        flags.sort_unstable();
    }
    Some(format!("{key}:2,{}", flags.into_iter().collect::<String>()))
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

    fn user(home: &str) -> UserRecord {
        UserRecord {
            name: "alice@example.org".into(),
            secret: None,
            uid: None,
            gid: None,
            home: Some(home.into()),
            extra: String::new(),
            settings: Default::default(),
            account: Default::default(),
        }
    }

    #[test]
    fn templates() {
        let u = user("/home/alice");
        assert_eq!(expand("%h/Maildir", &u).unwrap(), "/home/alice/Maildir");
        assert_eq!(expand("/m/%d/%n/%%", &u).unwrap(), "/m/example.org/alice/%");
        assert_eq!(expand("/m/%u", &u).unwrap(), "/m/alice@example.org");
        assert!(check_template("%x").is_err());
        assert!(check_template("abc%").is_err());
        assert!(check_template("%h/Maildir").is_ok());
    }

    #[test]
    fn seen_names() {
        assert_eq!(seen_name("1.M2.host,S=5").unwrap(), "1.M2.host,S=5:2,S");
        assert_eq!(seen_name("1.M2.host:2,RF").unwrap(), "1.M2.host:2,FRS");
        assert_eq!(seen_name("1.M2.host:2,ST").unwrap(), "1.M2.host:2,ST");
        assert_eq!(seen_name("1.M2.host:1,x"), None);
    }

    #[test]
    fn sizes_from_names() {
        assert_eq!(size_from_name("1.M2.host,S=100,W=104:2,S"), Some(104));
        assert_eq!(size_from_name("1.M2.host,S=100:2,"), None);
        assert_eq!(size_from_name("1.M2.host:2,W=5"), None);
    }
}

#[cfg(test)]
mod cache_tests {
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

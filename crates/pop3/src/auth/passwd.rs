// SPDX-License-Identifier: AGPL-3.0-only
//! Dovecot-style passwd file as a [`UserDb`]:
//! `user:{SCHEME}secret:uid:gid:gecos:home:shell:extra`. Bad lines are
//! reported with their number and skipped; the file is re-read when its
//! modification time or size changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::scheme::StoredSecret;
use super::{UserDb, UserDbError, UserRecord, UserSettings};

/// A problem on one line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWarning {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LineWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The users of one parse, keyed by lower-cased name (Dovecot's default
/// `auth_username_format = %Lu`).
#[derive(Debug, Default)]
pub struct PasswdTable {
    users: HashMap<String, Arc<UserRecord>>,
    pub warnings: Vec<LineWarning>,
    /// A secret in the scheme most users have, for unknown users.
    decoy: Option<StoredSecret>,
    /// The schemes that occur, for the mechanisms CAPA offers.
    schemes: Vec<super::Scheme>,
}

impl PasswdTable {
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.users.get(&name.to_lowercase()).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<Arc<UserRecord>> {
        let mut all: Vec<_> = self.users.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// Parse the whole text of a passwd file.
pub fn parse(text: &str) -> PasswdTable {
    let mut table = PasswdTable::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let number = i + 1;
        match parse_line(line) {
            Ok(record) => {
                use std::collections::hash_map::Entry;
                match table.users.entry(record.name.to_lowercase()) {
                    Entry::Occupied(_) => table.warnings.push(LineWarning {
                        line: number,
                        reason: format!(
                            "duplicate user {:?}; the first entry is used",
                            record.name
                        ),
                    }),
                    Entry::Vacant(slot) => {
                        slot.insert(Arc::new(record));
                    }
                }
            }
            Err(reason) => table.warnings.push(LineWarning {
                line: number,
                reason,
            }),
        }
    }
    table.decoy = decoy_for(&table.users);
    table.schemes = schemes_of(&table.users);
    table
}

/// Every scheme the users' secrets are stored in.
pub(crate) fn schemes_of(users: &HashMap<String, Arc<UserRecord>>) -> Vec<super::Scheme> {
    let mut out: Vec<super::Scheme> = Vec::new();
    for s in users.values().filter_map(|u| u.secret.as_ref()) {
        if !out.contains(&s.scheme()) {
            out.push(s.scheme());
        }
    }
    out
}

/// Hash a random password with the scheme most of the users have.
pub(crate) fn decoy_for(users: &HashMap<String, Arc<UserRecord>>) -> Option<StoredSecret> {
    let mut counts: HashMap<&'static str, (usize, super::Scheme)> = HashMap::new();
    for s in users.values().filter_map(|u| u.secret.as_ref()) {
        counts.entry(s.scheme().name()).or_insert((0, s.scheme())).0 += 1;
    }
    let (_, scheme) = counts.into_values().max_by_key(|(n, s)| (*n, s.name()))?;
    let mut noise = [0u8; 16];
    getrandom::fill(&mut noise).ok()?;
    let password = crate::hex::encode(&noise);
    let field = super::hash_password(scheme, &password).ok()?;
    StoredSecret::parse(&field).ok()
}

fn parse_line(line: &str) -> Result<UserRecord, String> {
    let fields: Vec<&str> = line.splitn(8, ':').collect();
    let name = fields[0];
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("empty or invalid user name".into());
    }
    // A name no login could ever use (it could name a path out of the mail
    // root): said when the file is read, not at each refused login.
    super::check_name(name).map_err(|why| format!("user {name:?}: {why}"))?;
    let secret = match fields.get(1).copied().unwrap_or("") {
        "" => None,
        field => Some(StoredSecret::parse(field).map_err(|e| format!("user {name:?}: {e}"))?),
    };
    let number = |idx: usize, what: &str| -> Result<Option<u32>, String> {
        match fields.get(idx).copied().unwrap_or("") {
            "" => Ok(None),
            s => s
                .parse()
                .map(Some)
                .map_err(|_| format!("user {name:?}: {what} {s:?} is not a number")),
        }
    };
    let uid = number(2, "uid")?;
    let gid = number(3, "gid")?;
    let home = fields.get(5).filter(|h| !h.is_empty()).map(PathBuf::from);
    let extra = fields.get(7).map(|e| e.to_string()).unwrap_or_default();
    let settings = UserSettings::from_extra(&extra).map_err(|r| format!("user {name:?}: {r}"))?;
    Ok(UserRecord {
        name: name.to_owned(),
        secret,
        uid,
        gid,
        home,
        extra,
        settings,
        account: Default::default(),
        dn: None,
    })
}

struct Loaded {
    table: Arc<PasswdTable>,
    stamp: Option<(SystemTime, u64)>,
}

/// A passwd file that follows its changes on disk.
pub struct PasswdFile {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    last_check: Mutex<Instant>,
    check_every: Duration,
    /// How many times the file was read again (the cache's generation).
    reloads: std::sync::atomic::AtomicU64,
}

impl PasswdFile {
    /// Load the file now; an unreadable file is an error, bad lines are
    /// warnings (see [`PasswdFile::table`]).
    pub fn open(path: &Path) -> Result<PasswdFile, UserDbError> {
        let (table, stamp) = read(path)?;
        Ok(PasswdFile {
            path: path.to_owned(),
            loaded: RwLock::new(Loaded {
                table: Arc::new(table),
                stamp,
            }),
            last_check: Mutex::new(Instant::now()),
            check_every: Duration::from_secs(1),
            reloads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How often the file's stamp is checked (tests shorten it).
    pub fn with_check_interval(mut self, every: Duration) -> Self {
        self.check_every = every;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current parse.
    pub fn table(&self) -> Arc<PasswdTable> {
        self.loaded.read().expect("passwd lock").table.clone()
    }

    /// Re-read the file if it changed, with the file work on the blocking
    /// pool. A file that became unreadable keeps the last good table in
    /// force.
    pub async fn refresh(&self) -> Result<bool, UserDbError> {
        let (path, known) = (self.path.clone(), self.stamp());
        let fresh = tokio::task::spawn_blocking(move || reread_if_changed(&path, known))
            .await
            .map_err(|e| UserDbError::Unavailable(format!("passwd task failed: {e}")))??;
        let changed = fresh.is_some();
        if let Some(fresh) = fresh {
            self.install(fresh);
        }
        Ok(changed)
    }

    fn stamp(&self) -> Option<Stamp> {
        self.loaded.read().expect("passwd lock").stamp
    }

    fn install(&self, (table, stamp): (PasswdTable, Option<Stamp>)) {
        for w in &table.warnings {
            tracing::warn!(file = %self.path.display(), "{w}");
        }
        tracing::info!(file = %self.path.display(), users = table.len(), "passwd file reloaded");
        *self.loaded.write().expect("passwd lock") = Loaded {
            table: Arc::new(table),
            stamp,
        };
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// At most once per `check_every`, look whether the file changed.
    async fn maybe_refresh(&self) {
        {
            let mut last = self.last_check.lock().expect("passwd check lock");
            if last.elapsed() < self.check_every {
                return;
            }
            *last = Instant::now();
        }
        if let Err(e) = self.refresh().await {
            tracing::error!(file = %self.path.display(), "cannot re-read passwd file: {e}");
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> UserDbError {
    UserDbError::Unavailable(format!("{}: {e}", path.display()))
}

/// `path`'s [`Stamp`].
pub(crate) fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let md = std::fs::metadata(path)?;
    Ok((md.modified()?, md.len()))
}

/// A file's modification time and length: when either changes, it is read
/// again.
type Stamp = (SystemTime, u64);

/// The file's new parse, or `None` while its stamp is still `known`.
fn reread_if_changed(
    path: &Path,
    known: Option<Stamp>,
) -> Result<Option<(PasswdTable, Option<Stamp>)>, UserDbError> {
    let now = stamp(path).map_err(|e| io_error(path, e))?;
    if known == Some(now) {
        return Ok(None);
    }
    read(path).map(Some)
}

fn read(path: &Path) -> Result<(PasswdTable, Option<(SystemTime, u64)>), UserDbError> {
    let stamp = stamp(path).ok();
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    Ok((parse(&text), stamp))
}

#[async_trait]
impl UserDb for PasswdFile {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        self.maybe_refresh().await;
        Ok(self.table().get(name))
    }

    /// Ready when the file can be read now; the table in memory serves
    /// logins either way, but an operator must hear that the file is gone.
    async fn health(&self) -> Result<(), String> {
        match self.refresh().await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn schemes(&self) -> Option<Vec<super::Scheme>> {
        Some(self.table().schemes.clone())
    }

    async fn all(&self) -> Vec<Arc<UserRecord>> {
        self.maybe_refresh().await;
        self.table().users.values().cloned().collect()
    }

    async fn generation(&self) -> u64 {
        self.maybe_refresh().await;
        self.reloads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn decoy(&self) -> Option<StoredSecret> {
        self.table().decoy.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `passwd` fuzz target: a name no login could use (it
    /// could name a path out of the mail root) is a warning when the file
    /// is read, not a user.
    #[test]
    fn names_that_could_escape_are_warnings() {
        let t = parse("~\nB/\n..:{PLAIN}x\nok:{PLAIN}x\n");
        assert_eq!(t.users().len(), 2);
        assert!(t.get("~").is_some() && t.get("ok").is_some() && t.get("B/").is_none());
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    }

    #[test]
    fn parses_dovecot_lines() {
        let t = parse(
            "# comment\n\
             \n\
             alice:{PLAIN}secret:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\n\
             Bob:{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0\n\
             carol:{ROT13}x:1:1::/h\n\
             dave:{PLAIN}pw:notanumber\n\
             :nouser\n\
             alice:{PLAIN}other\n\
             erin::::::\n",
        );
        assert_eq!(t.len(), 3);
        let alice = t.get("ALICE").unwrap();
        assert_eq!(alice.home.as_deref(), Some(Path::new("/home/alice")));
        assert_eq!(alice.uid, Some(1000));
        assert_eq!(alice.extra, "userdb_quota_rule=*:storage=1G");
        assert!(alice.secret.as_ref().unwrap().verify(b"secret"));
        assert!(
            t.get("bob")
                .unwrap()
                .secret
                .as_ref()
                .unwrap()
                .verify(b"password")
        );
        assert!(t.get("erin").unwrap().secret.is_none());
        let lines: Vec<usize> = t.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8]);
        assert!(t.warnings[0].reason.contains("ROT13"));
        // The decoy follows the scheme most users have.
        let t = parse("a:{PLAIN}1\nb:{PLAIN}2\nc:{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0\n");
        assert_eq!(
            t.decoy.as_ref().map(|d| d.scheme()),
            Some(super::super::Scheme::Plain)
        );
        assert!(parse("x::::\n").decoy.is_none());
    }

    #[tokio::test]
    async fn follows_changes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "a:{PLAIN}1\n").unwrap();
        let db = PasswdFile::open(&path)
            .unwrap()
            .with_check_interval(Duration::ZERO);
        assert!(db.lookup("a").await.unwrap().is_some());
        assert!(db.lookup("b").await.unwrap().is_none());
        std::fs::write(&path, "a:{PLAIN}1\nb:{PLAIN}22\n").unwrap();
        assert!(db.lookup("b").await.unwrap().is_some());
        // Removing the file keeps the last good table.
        std::fs::remove_file(&path).unwrap();
        assert!(db.lookup("b").await.unwrap().is_some());
    }
}

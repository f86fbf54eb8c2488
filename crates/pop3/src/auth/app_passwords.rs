// SPDX-License-Identifier: AGPL-3.0-only
//! App passwords: generated passwords, one per device or program, each
//! with a label, an optional expiry and optional networks, revocable one
//! at a time; with `require_app_passwords` the account password no longer
//! opens the mailbox over POP3, so a phished one is not enough.
//!
//! Kept in `auth.app_passwords_file`, one per line:
//! `user:id:label:created:expires:networks:key:mac`, where `mac` is
//! HMAC-SHA256 under the entry's own random `key` of the password (at
//! least 130 random bits: no slow hash is needed, and a login costs
//! microseconds). Last use (time and address) is kept in memory and
//! written beside it (`FILE.last-use`) at the first use and then at most
//! every [`FLUSH_EVERY`], not once per login. The file is read again when
//! it changes, so `pop3d app-password add|revoke` apply to a running
//! server at once. With the users in PostgreSQL, the same entries live in
//! the `app_passwords` table instead (`app_password_table.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Generated passwords: 28 characters of this alphabet (5 bits each, 140
/// bits), lower case without i, l, o and v (no look-alikes of 1, 0 or u),
/// in groups of four for typing.
const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuwxyz0123456789";
const LENGTH: usize = 28;

/// How often last use is written at most.
pub const FLUSH_EVERY: Duration = Duration::from_secs(60);

/// One app password as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPassword {
    pub user: String,
    pub id: String,
    pub label: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: Option<u64>,
    /// None: from anywhere.
    pub networks: Option<Vec<IpNet>>,
    pub(crate) key: [u8; 16],
    pub(crate) mac: [u8; 32],
}

/// What a password given at login is, as an app password of its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid app password (its id).
    Valid(String),
    /// An app password, refused (why, for the log).
    Refused(&'static str),
    /// None of the user's app passwords.
    NoMatch,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What is compared: a typed password without the dashes and spaces of
/// its grouping, in lower case (generated passwords have no other
/// characters, so nothing else is changed).
fn normalise(password: &[u8]) -> Vec<u8> {
    password
        .iter()
        .filter(|b| !matches!(b, b'-' | b' '))
        .map(u8::to_ascii_lowercase)
        .collect()
}

fn mac(key: &[u8; 16], password: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(&normalise(password));
    m.finalize().into_bytes().into()
}

impl AppPassword {
    /// A new app password for `user`: the entry, and the password to show
    /// once.
    pub fn generate(
        user: &str,
        label: &str,
        expires: Option<u64>,
        networks: Option<Vec<IpNet>>,
    ) -> Result<(AppPassword, String), String> {
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        {
            return Err(format!(
                "label {label:?}: letters, digits and . _ - @ only, not empty"
            ));
        }
        let mut random = [0u8; LENGTH + 16 + 4];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
        let chars: String = random[..LENGTH]
            .iter()
            .map(|b| ALPHABET[usize::from(b & 31)] as char)
            .collect();
        let password = chars
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-");
        let key: [u8; 16] = random[LENGTH..LENGTH + 16].try_into().unwrap_or_default();
        let id = crate::hex::encode(&random[LENGTH + 16..]);
        let entry = AppPassword {
            user: user.to_owned(),
            id,
            label: label.to_owned(),
            created: now(),
            expires,
            networks,
            mac: mac(&key, password.as_bytes()),
            key,
        };
        Ok((entry, password))
    }

    fn matches(&self, password: &[u8]) -> bool {
        bool::from(mac(&self.key, password).ct_eq(&self.mac))
    }

    fn line(&self) -> String {
        let nets = match &self.networks {
            Some(n) => n
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => "-".into(),
        };
        format!(
            "{}:{}:{}:{}:{}:{}:{}:{}\n",
            self.user,
            self.id,
            self.label,
            self.created,
            self.expires.map_or("-".into(), |e| e.to_string()),
            nets.replace(':', ";"),
            crate::hex::encode(&self.key),
            crate::hex::encode(&self.mac)
        )
    }

    fn parse(line: &str) -> Result<AppPassword, String> {
        // A user name may hold ':' (check_name allows it), and no other
        // field can: split from the right.
        let fields: Vec<&str> = line.rsplitn(8, ':').collect();
        let [mac, key, nets, expires, created, label, id, user] = fields[..] else {
            return Err("not user:id:label:created:expires:networks:key:mac".into());
        };
        let number = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{what} {s:?} is not a number"))
        };
        let networks = match nets {
            "-" => None,
            n => Some(
                n.replace(';', ":")
                    .split(',')
                    .map(|n| n.parse::<IpNet>().map_err(|_| format!("network {n:?}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(AppPassword {
            user: user.to_owned(),
            id: id.to_owned(),
            label: label.to_owned(),
            created: number(created, "created")?,
            expires: match expires {
                "-" => None,
                e => Some(number(e, "expires")?),
            },
            networks,
            key: crate::hex::decode::<16>(key).ok_or("key is not 16 octets in hex")?,
            mac: crate::hex::decode::<32>(mac).ok_or("mac is not 32 octets in hex")?,
        })
    }
}

/// The lines of an app password file; bad lines are reported and
/// skipped.
pub fn parse(text: &str) -> (Vec<AppPassword>, Vec<String>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match AppPassword::parse(line) {
            Ok(e) => entries.push(e),
            Err(why) => warnings.push(format!("line {}: {why}", i + 1)),
        }
    }
    (entries, warnings)
}

/// The entries of `file`, and a warning for each line skipped; a missing
/// file has none (no app password made yet).
pub fn read(file: &Path) -> Result<(Vec<AppPassword>, Vec<String>), String> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

/// The file's text for `entries`.
pub fn render(entries: &[AppPassword]) -> String {
    entries.iter().map(AppPassword::line).collect()
}

/// Last use of each app password: (user, id) to (unix seconds, address).
pub type LastUse = HashMap<(String, String), (u64, IpAddr)>;

/// The last-use file beside `file`.
pub fn last_use_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".last-use");
    PathBuf::from(name)
}

pub fn read_last_use(file: &Path) -> LastUse {
    let text = std::fs::read_to_string(last_use_path(file)).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.rsplitn(4, ' ');
            let (ip, at, id, user) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some((
                (user.into(), id.into()),
                (at.parse().ok()?, ip.parse().ok()?),
            ))
        })
        .collect()
}

/// Write `file` (a temporary file renamed over it).
pub fn write(file: &Path, entries: &[AppPassword]) -> std::io::Result<()> {
    crate::safe_fs::replace_path(file, render(entries).as_bytes())
}

/// `read`, its warnings logged.
fn read_logged(file: &Path) -> Result<Vec<AppPassword>, String> {
    let (entries, warnings) = read(file)?;
    for w in warnings {
        tracing::warn!(file = %file.display(), "{w}");
    }
    Ok(entries)
}

/// What `password` is among `entries` (the user's app passwords), from
/// `peer` at `at` (unix seconds).
fn judge<'a>(
    entries: impl IntoIterator<Item = &'a AppPassword>,
    password: &[u8],
    peer: IpAddr,
    at: u64,
) -> Verdict {
    let peer = peer.to_canonical();
    let Some(entry) = entries.into_iter().find(|e| e.matches(password)) else {
        return Verdict::NoMatch;
    };
    if entry.expires.is_some_and(|e| at >= e) {
        return Verdict::Refused("app password expired");
    }
    if let Some(nets) = &entry.networks
        && !nets.iter().any(|n| n.contains(&peer))
    {
        return Verdict::Refused("address outside the app password's networks");
    }
    Verdict::Valid(entry.id.clone())
}

/// Where a server finds app passwords.
enum Source {
    /// `auth.app_passwords_file`, followed as it changes.
    File(PathBuf),
    /// The `app_passwords` table, with the users in PostgreSQL.
    Table(Arc<crate::db::Database>),
}

/// The app passwords a server checks.
pub struct AppPasswords {
    source: Source,
    state: Mutex<State>,
}

struct State {
    /// The file's entries (the table is read at each login).
    entries: Vec<AppPassword>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
    /// Last use of each app password used since this server started.
    last_use: LastUse,
    /// None until the first write: the first use is written at once.
    flushed: Option<Instant>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    super::passwd::stamp(path).ok()
}

impl AppPasswords {
    /// Read the file (a missing one is empty: no app password yet).
    pub fn open(file: &Path) -> Result<AppPasswords, String> {
        let entries = read_logged(file)?;
        Ok(AppPasswords {
            state: Mutex::new(State {
                entries,
                stamp: stamp(file),
                checked: Instant::now(),
                last_use: read_last_use(file),
                flushed: None,
            }),
            source: Source::File(file.to_owned()),
        })
    }

    /// App passwords in the database's `app_passwords` table.
    pub fn in_table(db: Arc<crate::db::Database>) -> AppPasswords {
        AppPasswords {
            source: Source::Table(db),
            state: Mutex::new(State {
                entries: Vec::new(),
                stamp: None,
                checked: Instant::now(),
                last_use: LastUse::new(),
                flushed: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the file again if it changed (looked at most once a second).
    /// A file that cannot be read keeps the entries read last, and is
    /// tried again.
    fn follow(file: &Path, st: &mut State) {
        if st.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        st.checked = Instant::now();
        let now = stamp(file);
        if now == st.stamp {
            return;
        }
        match read_logged(file) {
            Ok(entries) => {
                st.entries = entries;
                st.stamp = now;
            }
            Err(why) => tracing::warn!("app passwords kept as they were: {why}"),
        }
    }

    /// Whether `password` is one of `user`'s app passwords, and usable
    /// from `peer` now. A valid one has its use noted (and written now
    /// and then, off the async workers).
    pub async fn check(
        &self,
        user: &str,
        password: &[u8],
        peer: IpAddr,
    ) -> Result<Verdict, super::UserDbError> {
        let at = now();
        let verdict = match &self.source {
            Source::File(file) => {
                let mut st = self.state();
                Self::follow(file, &mut st);
                judge(
                    st.entries.iter().filter(|e| e.user == user),
                    password,
                    peer,
                    at,
                )
            }
            Source::Table(db) => {
                let entries = super::app_password_table::of_user(db, user)
                    .await
                    .map_err(|e| super::UserDbError::Unavailable(e.to_string()))?;
                judge(&entries, password, peer, at)
            }
        };
        if let Verdict::Valid(id) = &verdict {
            self.note_use(user, id, at, peer.to_canonical()).await;
        }
        Ok(verdict)
    }

    async fn note_use(&self, user: &str, id: &str, at: u64, peer: IpAddr) {
        let due = {
            let mut st = self.state();
            st.last_use
                .insert((user.to_owned(), id.to_owned()), (at, peer));
            let recent = st.flushed.is_some_and(|t| t.elapsed() < FLUSH_EVERY);
            if recent {
                None
            } else {
                st.flushed = Some(Instant::now());
                Some(st.last_use.clone())
            }
        };
        // Everything used since the start is written (a few lines or rows).
        let Some(all) = due else {
            return;
        };
        match &self.source {
            Source::File(file) => {
                let path = last_use_path(file);
                let mut lines: Vec<String> = all
                    .iter()
                    .map(|((user, id), (at, ip))| format!("{user} {id} {at} {ip}\n"))
                    .collect();
                lines.sort();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = crate::safe_fs::replace_path(&path, lines.concat().as_bytes()) {
                        tracing::warn!(file = %path.display(), "cannot record app password use: {e}");
                    }
                });
            }
            Source::Table(db) => {
                let db = db.clone();
                tokio::spawn(async move {
                    if let Err(e) = super::app_password_table::record_use(&db, &all).await {
                        tracing::warn!("cannot record app password use: {e}");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_password_checks_typed_with_or_without_its_dashes() {
        let (e, pw) = AppPassword::generate("alice", "phone", None, None).unwrap();
        assert_eq!(pw.len(), LENGTH + LENGTH / 4 - 1);
        assert!(e.matches(pw.as_bytes()));
        assert!(e.matches(pw.replace('-', "").to_uppercase().as_bytes()));
        assert!(!e.matches(b"wrong"));
        let (_, other) = AppPassword::generate("alice", "phone", None, None).unwrap();
        assert_ne!(pw, other);
        // What the file holds is neither the password nor its plain hash.
        let line = e.line();
        assert!(!line.contains(&pw) && !line.contains(&pw.replace('-', "")));
        assert!(AppPassword::generate("alice", "a:b", None, None).is_err());
        assert!(AppPassword::generate("alice", "", None, None).is_err());
    }

    #[test]
    fn the_file_reads_back_what_was_written() {
        let nets = Some(vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        let (a, _) = AppPassword::generate("alice@example.org", "laptop", Some(99), nets).unwrap();
        let (b, _) = AppPassword::generate("bob", "phone", None, None).unwrap();
        let text = render(&[a.clone(), b.clone()]);
        let (back, warnings) = parse(&format!("{text}garbage line\n"));
        assert_eq!(back, [a, b]);
        assert_eq!(warnings.len(), 1);
    }

    #[tokio::test]
    async fn expiry_and_networks_refuse_a_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app-passwords");
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let (open, p1) = AppPassword::generate("alice", "a", None, None).unwrap();
        let (old, p2) = AppPassword::generate("alice", "b", Some(now() - 1), None).unwrap();
        let (far, p3) = AppPassword::generate(
            "alice",
            "c",
            None,
            Some(vec!["192.0.2.0/24".parse().unwrap()]),
        )
        .unwrap();
        write(&file, &[open.clone(), old, far]).unwrap();
        let app = AppPasswords::open(&file).unwrap();
        let check = |user: &'static str, pw: String, peer: IpAddr| {
            let app = &app;
            async move { app.check(user, pw.as_bytes(), peer).await.unwrap() }
        };
        assert_eq!(
            check("alice", p1.clone(), here).await,
            Verdict::Valid(open.id)
        );
        assert_eq!(check("bob", p1.clone(), here).await, Verdict::NoMatch);
        assert!(matches!(
            check("alice", p2, here).await,
            Verdict::Refused(_)
        ));
        assert!(matches!(
            check("alice", p3.clone(), here).await,
            Verdict::Refused(_)
        ));
        let v4_mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert!(matches!(
            check("alice", p3, v4_mapped).await,
            Verdict::Valid(_)
        ));
        assert_eq!(
            check("alice", "secret".into(), here).await,
            Verdict::NoMatch
        );
        // The first use was written at once (off the workers).
        let mut seen = 0;
        for _ in 0..100 {
            seen = read_last_use(&file).len();
            if seen > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, 1, "the first use, at once; the next within a minute");
    }
}

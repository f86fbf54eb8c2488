// SPDX-License-Identifier: AGPL-3.0-only
//! What a Maildir keeps for retention policy, beside the messages:
//!
//! - `pop3d-retrieved`: when each message was first retrieved (`KEY
//!   SECS` per line), for `expire`; written only while a retention period
//!   applies.
//! - the trash: `delete = "trash"` moves messages into the Maildir++
//!   folder `.Trash` (IMAP clients show it as Trash), listed in
//!   `.Trash/pop3d-trash` (`SECS UID UIDL NAME` per line: when, and what
//!   the message was, so that `pop3d restore` gives back the same UIDL).
//!
//! Both files are rewritten whole (temporary file, fsync, rename) under
//! the maildrop's lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::index::{Entry, Index};
use super::{io, replace_file, sync_dir};
use crate::protocol::valid_uidl;
use crate::store::StoreError;

pub const RETRIEVED_FILE: &str = "pop3d-retrieved";
pub const TRASH_DIR: &str = ".Trash";
pub const TRASH_LIST: &str = "pop3d-trash";

fn replace(dir: &Path, name: &str, text: &str) -> Result<(), StoreError> {
    replace_file(dir, name, text.as_bytes()).map_err(|e| io(&dir.join(name), e))
}

fn read_optional(path: &Path) -> Result<String, StoreError> {
    match crate::safe_fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        // Not pop3d's: as if absent; the next write replaces it.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            tracing::warn!(file = %path.display(), "not a regular file; ignored");
            Ok(String::new())
        }
        Err(e) => Err(io(path, e)),
    }
}

/// First retrieval times by message key.
pub fn read_retrieved(dir: &Path) -> Result<HashMap<String, u64>, StoreError> {
    Ok(parse_retrieved(&read_optional(&dir.join(RETRIEVED_FILE))?))
}

pub fn write_retrieved(dir: &Path, times: &HashMap<String, u64>) -> Result<(), StoreError> {
    replace(dir, RETRIEVED_FILE, &format_retrieved(times))
}

/// `pop3d-retrieved`: `KEY SECONDS` per line; other lines are skipped.
pub fn parse_retrieved(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (key, secs) = l.rsplit_once(' ')?;
            Some((key.to_owned(), secs.parse().ok()?))
        })
        .collect()
}

pub fn format_retrieved(times: &HashMap<String, u64>) -> String {
    let mut lines: Vec<String> = times.iter().map(|(k, s)| format!("{k} {s}\n")).collect();
    lines.sort();
    lines.concat()
}

/// One message in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trashed {
    pub when: u64,
    pub uid: u32,
    pub uidl: String,
    /// The file name in `.Trash/cur`.
    pub name: String,
}

fn trash_dir(dir: &Path) -> PathBuf {
    dir.join(TRASH_DIR)
}

pub fn read_trash(dir: &Path) -> Result<Vec<Trashed>, StoreError> {
    Ok(parse_trash(&read_optional(
        &trash_dir(dir).join(TRASH_LIST),
    )?))
}

/// The trash list: `WHEN UID UIDL NAME` per line; a line that is not, or
/// whose UIDL or file name could not be pop3d's, is skipped.
pub fn parse_trash(text: &str) -> Vec<Trashed> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let when = f.next()?.parse().ok()?;
            let uid = f.next()?.parse().ok()?;
            let uidl = f.next().filter(|u| valid_uidl(u))?.to_owned();
            let name = f.next().filter(|n| safe_name(n))?;
            Some(Trashed {
                when,
                uid,
                uidl,
                name: name.to_owned(),
            })
        })
        .collect()
}

/// A name of a file in `.Trash/cur` as pop3d writes them: one path
/// component (no `/`, not `.` or `..`) and no control characters, so that
/// it reads back as it was written and names nothing outside.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

pub fn format_trash(list: &[Trashed]) -> String {
    list.iter()
        .map(|t| format!("{} {} {} {}\n", t.when, t.uid, t.uidl, t.name))
        .collect()
}

fn write_trash(dir: &Path, list: &[Trashed]) -> Result<(), StoreError> {
    replace(&trash_dir(dir), TRASH_LIST, &format_trash(list))
}

/// Create `.Trash` as a Maildir++ folder.
fn ensure_trash(dir: &Path) -> Result<(), StoreError> {
    let trash = trash_dir(dir);
    if trash.join("cur").is_dir() {
        return Ok(());
    }
    for sub in ["cur", "new", "tmp"] {
        let p = trash.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
    }
    let marker = trash.join("maildirfolder");
    match crate::safe_fs::create_exclusive(&marker) {
        Ok(_) => {}
        // There already (as a file, or as something planted: left alone).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&marker, e)),
    }
    sync_dir(dir).map_err(|e| io(dir, e))
}

/// Move messages into the trash, recording them, and purge what was
/// trashed before `purge_before` while the list is being rewritten anyway
/// (so a Maildir the hourly sweep cannot find, its users not being in a
/// passwd file, is kept within bounds too). Each message is `(current
/// path, uid, uidl)`; returns whether each one left the maildrop.
pub fn trash(
    dir: &Path,
    messages: &[(PathBuf, u32, String)],
    now: u64,
    purge_before: u64,
) -> Vec<bool> {
    if let Err(e) = ensure_trash(dir) {
        tracing::error!(maildir = %dir.display(), "cannot create the trash: {e}");
        return vec![false; messages.len()];
    }
    let mut list = match read_trash(dir) {
        Ok(list) => list,
        Err(e) => {
            tracing::error!(maildir = %dir.display(), "cannot read the trash list: {e}");
            return vec![false; messages.len()];
        }
    };
    // The list first, naming what is about to move: a crash after it
    // leaves an entry whose file is still in the maildrop (restore and
    // purge pass over a missing file), never a file in the trash that no
    // list names, which nothing would restore or purge.
    let names: Vec<Option<&str>> = messages
        .iter()
        .map(|(path, ..)| path.file_name().and_then(|n| n.to_str()))
        .collect();
    list.retain(|t| !names.contains(&Some(t.name.as_str())));
    for ((_, uid, uidl), name) in messages.iter().zip(&names) {
        if let Some(name) = name {
            list.push(Trashed {
                when: now,
                uid: *uid,
                uidl: uidl.clone(),
                name: (*name).to_owned(),
            });
        }
    }
    if let Err(e) = write_trash(dir, &list) {
        tracing::error!(maildir = %dir.display(), "cannot write the trash list: {e}");
        return vec![false; messages.len()];
    }
    let listed = list.len();
    let mut moved = Vec::with_capacity(messages.len());
    for ((path, ..), name) in messages.iter().zip(&names) {
        let Some(name) = name else {
            moved.push(false);
            continue;
        };
        match std::fs::rename(path, trash_dir(dir).join("cur").join(name)) {
            Ok(()) => {
                crate::crash_point!("maildir-trash-after-move");
                moved.push(true);
            }
            // Gone already: someone else removed it, the wish holds (and
            // the trash has nothing of it to list).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                list.retain(|t| t.name != *name);
                moved.push(true);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), "cannot move message to the trash: {e}");
                list.retain(|t| t.name != *name);
                moved.push(false);
            }
        }
    }
    let list = match drop_old(dir, list, purge_before) {
        Ok((kept, _)) => kept,
        Err((list, e)) => {
            tracing::warn!(maildir = %dir.display(), "cannot purge the trash: {e}");
            list
        }
    };
    // Again only if it changed since (a move that failed or found nothing,
    // a purge): a QUIT usually writes it once.
    if list.len() != listed
        && let Err(e) = write_trash(dir, &list)
    {
        tracing::error!(maildir = %dir.display(), "cannot write the trash list: {e}");
    }
    let _ = sync_dir(&trash_dir(dir).join("cur"));
    moved
}

/// Move trashed messages (those trashed at or after `since`) back into
/// `cur/` and give them their UID and UIDL again; returns where they are
/// now. The caller holds the maildrop's lock.
///
/// The index is written first, naming each message under its old UID and
/// UIDL, then the files move, then the trash list is rewritten. A crash on
/// the way leaves every message either back under its old UIDL or still
/// in the trash and its list, where running restore again finds it; never
/// back under a new UIDL.
pub fn restore(dir: &Path, index: &mut Index, since: u64) -> Result<Vec<PathBuf>, StoreError> {
    let list = read_trash(dir)?;
    // UIDL -> key, of the messages the index knows (the index may still
    // hold the trashed ones, if no login scanned the Maildir since).
    let taken: HashMap<String, String> = index
        .entries
        .iter()
        .map(|(k, e)| (e.uidl.clone(), k.clone()))
        .collect();
    let (wanted, mut kept): (Vec<Trashed>, Vec<Trashed>) =
        list.into_iter().partition(|t| t.when >= since);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let key_of = |t: &Trashed| t.name.split(':').next().unwrap_or(&t.name).to_owned();
    for t in &wanted {
        let key = key_of(t);
        // A UIDL given meanwhile to another message (impossible while
        // UIDs only grow, but a hand-edited list could say so) is not
        // given twice: the index hands this message a fresh one.
        if taken.get(&t.uidl).is_some_and(|k| *k != key) {
            let from = trash_dir(dir).join("cur").join(&t.name);
            index.assign_all([(key.as_str(), Some(from.as_path()))]);
        } else {
            let entry = Entry {
                uid: t.uid,
                size: None,
                uidl: t.uidl.clone(),
            };
            index.next_uid = index.next_uid.max(t.uid.saturating_add(1));
            index.entries.insert(key, entry);
        }
    }
    index
        .store(dir)
        .map_err(|e| io(&dir.join(super::index::INDEX_FILE), e))?;
    let entries = index.entries.len();
    let mut restored = Vec::new();
    let mut wanted = wanted.into_iter();
    while let Some(t) = wanted.next() {
        let from = trash_dir(dir).join("cur").join(&t.name);
        let to = dir.join("cur").join(&t.name);
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                crate::crash_point!("maildir-restore-after-move");
                restored.push(to);
            }
            // Put back already by a run that stopped before rewriting the
            // list: back, under the entry just written.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {
                restored.push(to);
            }
            // Purged or taken out by hand meanwhile: nothing to restore.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                index.entries.remove(&key_of(&t));
            }
            // The rest stays in the trash and its list, for another run.
            Err(e) => {
                kept.push(t);
                kept.extend(wanted);
                write_trash(dir, &kept)?;
                return Err(io(&from, e));
            }
        }
    }
    write_trash(dir, &kept)?;
    sync_dir(&dir.join("cur")).map_err(|e| io(dir, e))?;
    // Entries of messages purged meanwhile came out again.
    if index.entries.len() != entries {
        index
            .store(dir)
            .map_err(|e| io(&dir.join(super::index::INDEX_FILE), e))?;
    }
    Ok(restored)
}

/// Remove trashed messages trashed before `before`; returns how many.
pub fn purge(dir: &Path, before: u64) -> Result<usize, StoreError> {
    if !trash_dir(dir).join(TRASH_LIST).exists() {
        return Ok(0);
    }
    let (kept, purged) = drop_old(dir, read_trash(dir)?, before).map_err(|(_, e)| e)?;
    if purged > 0 {
        write_trash(dir, &kept)?;
    }
    Ok(purged)
}

/// Delete the files of the entries trashed before `before`: the entries
/// left and how many went; on failure the list as it was, less what went.
fn drop_old(
    dir: &Path,
    list: Vec<Trashed>,
    before: u64,
) -> Result<(Vec<Trashed>, usize), (Vec<Trashed>, StoreError)> {
    let (old, mut kept): (Vec<Trashed>, Vec<Trashed>) =
        list.into_iter().partition(|t| t.when < before);
    let mut purged = 0;
    let mut old = old.into_iter();
    while let Some(t) = old.next() {
        let path = trash_dir(dir).join("cur").join(&t.name);
        match std::fs::remove_file(&path) {
            Ok(()) => purged += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => purged += 1,
            Err(e) => {
                kept.push(t);
                kept.extend(old);
                return Err((kept, io(&path, e)));
            }
        }
    }
    Ok((kept, purged))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `trash_list` fuzz target: a name ending in CR (the
    /// file's last line, without its LF) did not read back as written;
    /// `..` would name `.Trash` itself.
    #[test]
    fn trash_names_read_back_as_written_and_stay_inside() {
        let list = parse_trash("4 8 u9 1.M2.h:2,S\n1 5 u6 ..\n2 6 u7 .\n3 7 u8 a/b\n0 4 2- -5 \r");
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].name, "1.M2.h:2,S");
        assert_eq!(parse_trash(&format_trash(&list)), list);
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The maildrop lock (RFC 1939 §8) without an open file per session, so ten
//! thousand sessions do not need ten thousand more descriptors:
//!
//! - within this process, a set of locked Maildirs;
//! - across processes, a `pop3d.lock` file created exclusively, holding the
//!   owner's pid and process start time. A lock whose owner is no longer
//!   running (a crash, a kill -9) is stale and taken over at once; a reused
//!   pid does not fool it, because the start time differs.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::store::StoreError;

pub const LOCK_FILE: &str = "pop3d.lock";

/// The Maildirs this process has locked.
#[derive(Debug, Default, Clone)]
pub struct LockTable(Arc<Mutex<HashSet<PathBuf>>>);

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct MaildropLock {
    dir: PathBuf,
    table: LockTable,
}

/// This process's identity in lock files: pid and start time.
fn own_stamp() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or(0))
}

/// A process's start time in clock ticks since boot (Linux /proc).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: skip past the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner a lock file names is still running.
fn owner_alive(content: &str) -> bool {
    let mut parts = content.split_whitespace();
    let (Some(pid), Some(started)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return false;
    };
    start_time(pid) == Some(started)
}

impl LockTable {
    /// Lock the Maildir at `dir`, or say who holds it.
    pub fn lock(&self, dir: &Path) -> Result<MaildropLock, StoreError> {
        {
            let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if !held.insert(dir.to_owned()) {
                return Err(StoreError::InUse);
            }
        }
        let stamp = own_stamp();
        match claim(dir, &stamp) {
            Ok(()) => Ok(MaildropLock {
                dir: dir.to_owned(),
                table: self.clone(),
            }),
            Err(e) => {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
                Err(e)
            }
        }
    }
}

fn claim(dir: &Path, stamp: &str) -> Result<(), StoreError> {
    let path = dir.join(LOCK_FILE);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                return f
                    .write_all(format!("{stamp}\n").as_bytes())
                    .map_err(|e| StoreError::from_io(&path.display().to_string(), &e));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                if owner_alive(&content) {
                    return Err(StoreError::InUse);
                }
                tracing::info!(maildir = %dir.display(), owner = content.trim(), "taking over a stale maildrop lock");
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(StoreError::from_io(&path.display().to_string(), &e)),
        }
    }
    Err(StoreError::InUse)
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        // While this process runs nobody takes the lock over (it is not
        // stale), so the file is still ours to remove.
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        self.table
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_in_process_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::default();
        let held = table.lock(dir.path()).unwrap();
        assert!(matches!(table.lock(dir.path()), Err(StoreError::InUse)));
        // Another process (another table) sees the file and a live owner.
        assert!(matches!(
            LockTable::default().lock(dir.path()),
            Err(StoreError::InUse)
        ));
        drop(held);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let _again = table.lock(dir.path()).unwrap();
    }

    #[test]
    fn stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A dead owner: a pid that does not run, or ours with another start
        // time (a reused pid).
        for stale in [
            "999999999 12345\n",
            &format!("{} 1\n", std::process::id()),
            "garbage\n",
        ] {
            std::fs::write(dir.path().join(LOCK_FILE), stale).unwrap();
            let lock = LockTable::default().lock(dir.path()).unwrap();
            let content = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
            assert_eq!(content.trim(), own_stamp());
            drop(lock);
        }
    }

    #[test]
    fn reads_start_times() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
        assert!(owner_alive(&own_stamp()));
        assert!(!owner_alive("999999999 1"));
    }
}

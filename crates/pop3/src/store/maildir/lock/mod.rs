// SPDX-License-Identifier: AGPL-3.0-only
//! The maildrop lock (RFC 1939 §8) without an open file per session, so ten
//! thousand sessions do not need ten thousand more descriptors:
//!
//! - within this process, a set of locked Maildirs;
//! - across processes, `pop3d.lock`: a symbolic link whose target names
//!   the owner (pid, process start time and a claim number). `symlink()`
//!   creates it whole in one step, so it is never seen empty or half
//!   written, and fails if any lock is there: of two claimants exactly one
//!   succeeds. (Emacs locks files the same way.)
//!
//! A lock whose owner is no longer running (a crash, a kill -9) is stale.
//! Whether the owner runs must not depend on seeing its `/proc` entry
//! (systemd's `ProtectProc=invisible` hides other users' processes, and a
//! PID namespace hides everything outside it): each process holds an
//! exclusive `flock()` on a liveness file of its own in `storage.lock_dir`
//! for as long as it runs, and its locks name that file. The kernel drops
//! the flock when the process dies, however it dies, and anyone who can
//! open the file can test it. Only a lock that names no liveness file, or
//! one that has vanished, is judged by `/proc` (pid and start time, so a
//! reused pid does not fool it). A stale lock is taken over while holding
//! `flock()` on the Maildir directory, and only
//! if it still names what was judged stale: two processes breaking the
//! same stale lock cannot both win, and neither removes the other's fresh
//! lock. The directory lock is held for a few system calls and dies with its
//! process, so nobody waits on it for long. Release removes the lock only
//! if it still names this claim. A regular file left by an older pop3d is
//! read for the same words.
//!
//! All of this is blocking file work: callers run it on the blocking pool,
//! and a lock dropped or released in the background goes there too.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::io;
use crate::store::{StoreError, start_time};

mod owner;
use owner::{Liveness, owner_alive, read_lock};

pub const LOCK_FILE: &str = "pop3d.lock";
/// How long a takeover waits for another process's takeover to finish.
const GUARD_WAIT: Duration = Duration::from_secs(2);

/// Numbers each claim of this process, so that no two lock files it writes
/// read the same (as Maildir's delivery sequence does for file names).
static CLAIMS: AtomicU64 = AtomicU64::new(0);

/// The Maildirs this process has locked, and those whose lock is being
/// released on the blocking pool: a new claim waits for that release (a
/// moment) instead of being told the maildrop is in use.
#[derive(Debug, Default, Clone)]
pub struct LockTable(Arc<Table>);

#[derive(Debug, Default)]
struct Table {
    held: Mutex<HashMap<PathBuf, Held>>,
    released: Condvar,
    /// `pid start-time [liveness file]`, made once.
    owner: std::sync::OnceLock<String>,
    /// Where this process keeps its liveness file (`storage.lock_dir`).
    lock_dir: Option<PathBuf>,
    /// The liveness file, held for the life of the table.
    liveness: std::sync::OnceLock<Option<Liveness>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    BySession,
    /// By a moment's housekeeping (the trash sweep): a session's claim
    /// waits for it instead of being told the maildrop is in use.
    Briefly,
    Releasing,
}

/// Longest a claim waits for this process's own release of the same lock,
/// or for its housekeeping to finish.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// A held lock. [`MaildropLock::release`] removes it (on the blocking pool,
/// from `commit`); dropping it unreleased releases it too.
#[derive(Debug)]
pub struct MaildropLock {
    dir: PathBuf,
    /// What the lock names: `pid start claim`, unique to this claim.
    stamp: String,
    table: LockTable,
    released: bool,
    /// Already on its way to the blocking pool: if that task is dropped
    /// unrun (a runtime shutting down), release here and now.
    in_background: bool,
}

impl LockTable {
    /// A table whose process keeps its liveness file in `lock_dir`
    /// (absolute; without one, other processes can judge its locks only
    /// by `/proc`).
    pub fn new(lock_dir: Option<PathBuf>) -> LockTable {
        LockTable(Arc::new(Table {
            lock_dir,
            ..Table::default()
        }))
    }

    /// The liveness file, made on first use.
    fn liveness(&self) -> Option<&Path> {
        let made = self.0.liveness.get_or_init(|| {
            let dir = self.0.lock_dir.as_deref()?;
            match Liveness::create(dir) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(
                        lock_dir = %dir.display(),
                        "cannot keep a liveness file ({e}); other processes will judge this one's maildrop locks by /proc"
                    );
                    None
                }
            }
        });
        made.as_ref().map(|l| l.path.as_path())
    }

    /// Lock the Maildir at `dir` for a session, or say who holds it.
    /// Blocking.
    pub fn lock(&self, dir: &Path) -> Result<MaildropLock, StoreError> {
        self.hold(dir, Held::BySession)
    }

    /// Lock the Maildir at `dir` for housekeeping that takes a moment: a
    /// session claiming it meanwhile waits instead of failing. Blocking.
    pub fn lock_briefly(&self, dir: &Path) -> Result<MaildropLock, StoreError> {
        self.hold(dir, Held::Briefly)
    }

    fn hold(&self, dir: &Path, how: Held) -> Result<MaildropLock, StoreError> {
        {
            let deadline = Instant::now() + RELEASE_WAIT;
            let mut held = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match held.get(dir) {
                    None => break,
                    Some(Held::BySession) => return Err(StoreError::InUse),
                    Some(Held::Releasing | Held::Briefly) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(StoreError::InUse);
                        }
                        held = self
                            .0
                            .released
                            .wait_timeout(held, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
            held.insert(dir.to_owned(), how);
        }
        let owner = self.0.owner.get_or_init(|| {
            let pid = std::process::id();
            format!("{pid} {}", start_time(pid).unwrap_or(0))
        });
        let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
        let stamp = match self.liveness() {
            Some(path) => format!("{owner} {n} {}", path.display()),
            None => format!("{owner} {n}"),
        };
        let mut lock = MaildropLock {
            dir: dir.to_owned(),
            stamp,
            table: self.clone(),
            // Nothing on disk to release until the claim succeeds.
            released: true,
            in_background: false,
        };
        match claim(dir, &lock.stamp) {
            Ok(()) => {
                lock.released = false;
                Ok(lock)
            }
            Err(e) => {
                lock.forget_in_process();
                Err(e)
            }
        }
    }
}

/// Put a lock naming `stamp` in place, taking over a stale one.
fn claim(dir: &Path, stamp: &str) -> Result<(), StoreError> {
    let path = dir.join(LOCK_FILE);
    // A few rounds: a lock released or taken over while we looked at it
    // sends us round again; a live owner ends it at once.
    for _ in 0..4 {
        if place(&path, stamp)? {
            return Ok(());
        }
        let Some(seen) = read_lock(&path)? else {
            continue;
        };
        if owner_alive(&seen) {
            return Err(StoreError::InUse);
        }
        if take_over(dir, &path, stamp, &seen)? {
            tracing::info!(maildir = %dir.display(), owner = seen.trim(), "took over a stale maildrop lock");
            return Ok(());
        }
    }
    Err(StoreError::InUse)
}

/// Create the lock naming `stamp`, whole, in one step: a symbolic link
/// whose target is the owner. `Ok(false)` if a lock is there already.
fn place(path: &Path, stamp: &str) -> Result<bool, StoreError> {
    match std::os::unix::fs::symlink(stamp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path, e)),
    }
}

/// Replace the stale lock that read `seen`, under the directory lock.
/// `Ok(false)` when it changed meanwhile, or someone claimed the maildrop
/// between our removal and our claim.
fn take_over(dir: &Path, path: &Path, stamp: &str, seen: &str) -> Result<bool, StoreError> {
    let guard = File::open(dir).map_err(|e| io(dir, e))?;
    let deadline = Instant::now() + GUARD_WAIT;
    loop {
        match guard.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(dir, e)),
        }
    }
    // Only a takeover removes another owner's lock, and takeovers are
    // serialised by the guard: a lock that still reads `seen` is the stale
    // one we judged, not a fresh claim.
    if read_lock(path)?.as_deref() != Some(seen) {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path, e)),
    }
    let won = place(path, stamp)?;
    drop(guard);
    Ok(won)
}

impl MaildropLock {
    /// Remove the lock file if it still names this claim, then let other
    /// sessions of this process in. Blocking.
    pub fn release(mut self) {
        self.release_now();
    }

    /// Release on the blocking pool without waiting for it; a claim of the
    /// same maildrop in this process meanwhile waits for it to finish.
    pub fn release_in_background(mut self) {
        self.release_later();
    }

    /// Hand the release to the blocking pool. Released here and now outside
    /// a runtime, and for a lock that is itself that pool's task, dropped
    /// unrun (a runtime shutting down).
    fn release_later(&mut self) {
        if self.released {
            return;
        }
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(rt) if !self.in_background => rt,
            _ => return self.release_now(),
        };
        self.table
            .0
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.dir.clone(), Held::Releasing);
        let lock = MaildropLock {
            dir: std::mem::take(&mut self.dir),
            stamp: std::mem::take(&mut self.stamp),
            table: self.table.clone(),
            released: false,
            in_background: true,
        };
        self.released = true;
        rt.spawn_blocking(move || lock.release());
    }

    fn release_now(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let path = self.dir.join(LOCK_FILE);
        match read_lock(&path) {
            Ok(Some(owner)) if owner == self.stamp => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(file = %path.display(), "cannot remove the maildrop lock: {e}");
                }
            }
            Ok(Some(owner)) => {
                tracing::error!(file = %path.display(), owner = owner.trim(), "maildrop lock taken from this session; left in place");
            }
            Ok(None) => {
                tracing::error!(file = %path.display(), "maildrop lock vanished while held");
            }
            Err(e) => tracing::error!(file = %path.display(), "cannot read the maildrop lock: {e}"),
        }
        self.forget_in_process();
    }

    fn forget_in_process(&self) {
        self.table
            .0
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.dir);
        self.table.0.released.notify_all();
    }
}

impl Drop for MaildropLock {
    /// The safety net for sessions that end without QUIT: released on the
    /// blocking pool (a reconnecting client's claim waits for it).
    fn drop(&mut self) {
        self.release_later();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_content(dir: &Path) -> String {
        read_lock(&dir.join(LOCK_FILE)).unwrap().unwrap()
    }

    /// Whether a lock is there (a dangling symbolic link counts).
    fn locked(dir: &Path) -> bool {
        dir.join(LOCK_FILE).symlink_metadata().is_ok()
    }

    /// Put a lock of another (or an older) process there as a plain file.
    fn plant(dir: &Path, content: &str) {
        let _ = std::fs::remove_file(dir.join(LOCK_FILE));
        std::fs::write(dir.join(LOCK_FILE), content).unwrap();
    }

    #[test]
    fn exclusive_in_process_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::default();
        let held = table.lock(dir.path()).unwrap();
        assert!(matches!(table.lock(dir.path()), Err(StoreError::InUse)));
        // Another process (another table) sees the file and a live owner.
        assert!(matches!(
            LockTable::default().lock(dir.path()),
            Err(StoreError::InUse)
        ));
        held.release();
        assert!(!locked(dir.path()));
        let again = table.lock(dir.path()).unwrap();
        drop(again);
        assert!(!locked(dir.path()), "drop releases too");
        // No temporary names are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_session_waits_for_housekeeping_not_for_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::default();
        let sweep = table.lock_briefly(dir.path()).unwrap();
        let (t, d) = (table.clone(), dir.path().to_owned());
        let session = std::thread::spawn(move || t.lock(&d).map(MaildropLock::release));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!session.is_finished(), "the session waits for the sweep");
        sweep.release();
        assert!(
            session.join().unwrap().is_ok(),
            "and gets the maildrop after it"
        );
        // A session's hold is not waited for.
        let held = table.lock(dir.path()).unwrap();
        let started = Instant::now();
        assert!(matches!(
            table.lock_briefly(dir.path()),
            Err(StoreError::InUse)
        ));
        assert!(matches!(table.lock(dir.path()), Err(StoreError::InUse)));
        assert!(started.elapsed() < RELEASE_WAIT);
        held.release();
    }

    #[test]
    fn stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A dead owner: a pid that does not run, ours with another start
        // time (a reused pid), garbage, or the empty file of a crash.
        for stale in [
            "999999999 12345 0\n",
            &format!("{} 1 0\n", std::process::id()),
            "garbage\n",
            "",
        ] {
            plant(dir.path(), stale);
            let lock = LockTable::default().lock(dir.path()).unwrap();
            assert_eq!(lock_content(dir.path()), lock.stamp);
            lock.release();
        }
    }

    #[test]
    fn liveness_files_judge_owners_that_proc_cannot_see() {
        let dir = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        // An owner with a pid /proc does not show (another PID namespace,
        // or hidden by ProtectProc) but whose liveness file is held.
        let holder = Liveness::create(run.path()).unwrap();
        let hidden = format!("999999999 12345 0 {}", holder.path.display());
        plant(dir.path(), &hidden);
        assert!(matches!(
            LockTable::new(Some(run.path().into())).lock(dir.path()),
            Err(StoreError::InUse)
        ));
        // It dies: its flock goes with it (the file may stay behind).
        let path = holder.path.clone();
        drop(holder);
        let unheld = format!("999999999 12345 0 {}", path.display());
        std::fs::write(&path, b"").unwrap();
        plant(dir.path(), &unheld);
        // A fresh file nobody holds: stale, taken over.
        let table = LockTable::new(Some(run.path().into()));
        let lock = table.lock(dir.path()).unwrap();
        assert!(
            lock.stamp
                .ends_with(&table.liveness().unwrap().display().to_string()),
            "{}",
            lock.stamp
        );
        // Another table of the same process sees that one as alive.
        assert!(matches!(
            LockTable::new(None).lock(dir.path()),
            Err(StoreError::InUse)
        ));
        lock.release();
        let liveness = table.liveness().unwrap().to_owned();
        drop(table);
        assert!(!liveness.exists(), "removed when the table goes");
    }

    #[test]
    fn release_leaves_a_lock_that_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LockTable::default().lock(dir.path()).unwrap();
        // Someone replaced the file (an administrator, a takeover after a
        // pause): releasing must not remove their lock.
        let theirs = format!("{} {} 99", std::process::id(), 7);
        plant(dir.path(), &theirs);
        lock.release();
        assert_eq!(lock_content(dir.path()), theirs);
    }

    #[test]
    fn racing_claims_and_takeovers_have_one_winner() {
        // Many "processes" (tables) race for one maildrop, over a stale
        // lock each round: exactly one wins every time.
        let dir = tempfile::tempdir().unwrap();
        let tables: Vec<LockTable> = (0..6).map(|_| LockTable::default()).collect();
        for round in 0..200 {
            if round % 2 == 0 {
                plant(dir.path(), "999999999 1 0\n");
            }
            let barrier = std::sync::Barrier::new(tables.len());
            let won: Vec<MaildropLock> = std::thread::scope(|s| {
                let handles: Vec<_> = tables
                    .iter()
                    .map(|t| {
                        let barrier = &barrier;
                        let path = dir.path();
                        s.spawn(move || {
                            barrier.wait();
                            t.lock(path).ok()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(won.len(), 1, "round {round}");
            assert_eq!(lock_content(dir.path()), won[0].stamp);
            for l in won {
                l.release();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_waits_for_a_release_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::default();
        for _ in 0..200 {
            let held = table.lock(dir.path()).unwrap();
            held.release_in_background();
            // At once, from this process: never "in use" because of our
            // own release still on its way.
            let path = dir.path().to_owned();
            let t = table.clone();
            let again = tokio::task::spawn_blocking(move || t.lock(&path))
                .await
                .unwrap()
                .unwrap();
            drop(again);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!locked(dir.path()));
    }

    #[test]
    fn reads_start_times() {
        let pid = std::process::id();
        let start = start_time(pid).unwrap();
        assert!(start > 0);
        assert!(owner_alive(&format!("{pid} {start} 3")));
        assert!(!owner_alive("999999999 1 0"));
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Who a maildrop lock names and whether that owner still runs: the
//! liveness file each process holds an exclusive `flock()` on (the kernel
//! lets go of it however the process dies), and `/proc` (pid and start
//! time) for a lock that names no liveness file.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::io;
use crate::store::{StoreError, start_time};

/// A file this process holds an exclusive `flock()` on while it runs.
#[derive(Debug)]
pub(super) struct Liveness {
    pub(super) path: PathBuf,
    _file: File,
}

impl Drop for Liveness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Liveness {
    /// Create and lock `dir/pop3d-PID-RANDOM`, readable by every user (a
    /// process of another user must be able to test it).
    pub(super) fn create(dir: &Path) -> std::io::Result<Liveness> {
        use std::os::unix::fs::PermissionsExt;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        let name = format!("pop3d-{}", std::process::id());
        // Absolute: the locks name it for processes with another cwd.
        let path = crate::safe_fs::temp_path(&std::path::absolute(dir)?, &name);
        let file = crate::safe_fs::create_exclusive(&path)?;
        let made = file
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .and_then(|()| file.lock());
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Liveness { path, _file: file })
    }
}

/// Whether the process that holds the liveness file at `path` runs:
/// `None` when the file is gone (the owner ended cleanly, or the file was
/// cleaned away), so that only `/proc` can tell.
fn liveness_held(path: &Path) -> Option<bool> {
    let file = match crate::safe_fs::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        // Cannot tell: never take a lock on a guess.
        Err(_) => return Some(true),
    };
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(_) => Some(true),
    }
}

/// Whether the owner a lock file names is still running: by its liveness
/// file when it names one that exists, else by `/proc`. Anything that is
/// not `pid start claim [liveness file]` names nobody.
pub(super) fn owner_alive(content: &str) -> bool {
    let mut parts = content.splitn(4, ' ');
    let (Some(pid), Some(started)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.trim().parse::<u64>().ok()),
    ) else {
        return false;
    };
    let liveness = parts.nth(1).map(str::trim).filter(|p| p.starts_with('/'));
    if let Some(alive) = liveness.and_then(|p| liveness_held(Path::new(p))) {
        return alive;
    }
    start_time(pid) == Some(started)
}

/// Who the lock names, `None` when there is none. The lock is a symbolic
/// link whose target is the owner; a regular file (written by an older
/// pop3d) is read for the same words.
pub(super) fn read_lock(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_link(path) {
        Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            match std::fs::read_to_string(path) {
                Ok(c) => Ok(Some(c.trim_end().to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(path, e)),
            }
        }
        Err(e) => Err(io(path, e)),
    }
}

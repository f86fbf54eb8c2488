// SPDX-License-Identifier: AGPL-3.0-only
//! File operations in directories that another party may have tampered
//! with (a Maildir, the block list's directory). A Maildir holds only what
//! pop3d serves: messages are opened without
//! following a symbolic link and without blocking on a FIFO, and used only
//! when the open descriptor is a regular file; every file pop3d creates
//! beside the mail is created exclusively (`O_EXCL | O_NOFOLLOW`) under an
//! unpredictable name, so a link planted where pop3d writes is never
//! followed, and replaced by rename, which replaces the link itself.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Open a file for reading, refusing a symbolic link (`ELOOP`) and
/// anything but a regular file (a FIFO is opened non-blocking, so it
/// cannot hang the caller, then refused).
/// Both a link and a special file are reported as `InvalidInput`.
pub fn open_regular(path: &Path) -> io::Result<File> {
    regular(OpenOptions::new().read(true), path)
}

/// Open an existing regular file to append to it, never through a link.
pub fn open_append(path: &Path) -> io::Result<File> {
    regular(OpenOptions::new().append(true), path)
}

fn regular(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_regular(),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// A whole regular file (see [`open_regular`]).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_regular(path)?;
    let mut data = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// A whole regular file as text.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Create a new file that must not exist yet, not even as a link.
pub fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// `dir/.name.tmp.RANDOM`: a temporary name nobody can guess ahead.
pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let mut nonce = [0u8; 8];
    // Without randomness the process id and a counter still make the
    // name unique; O_EXCL keeps it safe either way.
    if getrandom::fill(&mut nonce).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        nonce = (u64::from(std::process::id()) << 32 | n).to_be_bytes();
    }
    dir.join(format!(".{name}.tmp.{}", crate::hex::encode(&nonce)))
}

/// Replace `dir/name` with `bytes` atomically and durably: an exclusive
/// temporary file, fsync, rename, fsync of the directory. A failed write
/// (a full disk) removes its temporary and leaves the old file whole.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(dir, name);
    let written = (|| {
        let mut f = create_exclusive(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// [`replace_file`] for a path: its directory is its parent, or the
/// current directory for a bare file name.
pub fn replace_path(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    replace_file(dir, name, bytes)
}

/// fsync a directory, so that renames and unlinks in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_fifos_are_refused_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link")).unwrap();
        let fifo = d.join("fifo");
        mkfifo(&fifo);
        std::fs::write(d.join("plain"), b"mail").unwrap();

        assert!(open_regular(&d.join("link")).is_err());
        assert!(open_append(&d.join("link")).is_err());
        assert!(open_regular(&fifo).is_err(), "refused, without hanging");
        assert!(open_regular(&d.join("plain")).is_ok());
        assert!(create_exclusive(&d.join("link")).is_err());
        // Replacing a planted link replaces the link, not its target.
        replace_file(d, "link", b"index").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert_eq!(std::fs::read(d.join("link")).unwrap(), b"index");
        assert!(
            !std::fs::symlink_metadata(d.join("link"))
                .unwrap()
                .is_symlink()
        );
        // No temporary left behind.
        let names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_ne!(temp_path(d, "x"), temp_path(d, "x"));
    }

    /// mkfifo(3) through the `mkfifo` program: the crate forbids unsafe.
    pub fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
    }
}

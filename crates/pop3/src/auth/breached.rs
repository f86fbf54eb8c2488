// SPDX-License-Identifier: AGPL-3.0-only
//! Passwords known to be breached: a file in the Pwned Passwords format,
//! one `SHA1HEX:COUNT` per line (or the hash alone), sorted by hash, as
//! the list is downloaded. It is searched in place, by bisecting the file
//! with positioned reads (a few dozen for the full list of nearly a
//! billion lines), never loaded into memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

/// The longest line read: 40 hex digits, a colon and a count, with room.
const MAX_LINE: usize = 128;

/// An open breached-password list.
#[derive(Debug)]
pub struct BreachedPasswords {
    path: PathBuf,
    file: File,
}

impl BreachedPasswords {
    /// Open the list and check that it looks like one (its first line a
    /// SHA-1 in hex), so that a wrong path is a configuration error, not a
    /// list that never matches.
    pub fn open(path: &Path) -> Result<BreachedPasswords, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let list = BreachedPasswords {
            path: path.to_owned(),
            file,
        };
        match list.line_at(0) {
            Ok(Some(line)) if hash_of(&line.text).is_some() => Ok(list),
            Ok(None) => Err(format!("{}: the file is empty", path.display())),
            Ok(Some(_)) => Err(format!(
                "{}: not a Pwned Passwords list (lines of a SHA-1 in hex, then \":count\", sorted)",
                path.display()
            )),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `password` is on the list. Blocking file reads: call it off
    /// the async workers.
    pub fn contains(&self, password: &[u8]) -> std::io::Result<bool> {
        let target = crate::hex::encode(&Sha1::digest(password)).to_ascii_uppercase();
        let size = self.file.metadata()?.len();
        // Invariant: if the hash is listed, its line starts in [lo, hi).
        let (mut lo, mut hi) = (0u64, size);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(line) = self.line_at(mid)? else {
                hi = mid;
                continue;
            };
            if line.start >= hi {
                hi = mid;
                continue;
            }
            let Some(hash) = hash_of(&line.text) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line at octet {} is not a SHA-1 in hex", line.start),
                ));
            };
            match hash.as_str().cmp(target.as_str()) {
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Less => lo = line.end,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(false)
    }

    /// The first whole line that starts at or after `pos`; None past the
    /// last one.
    fn line_at(&self, pos: u64) -> std::io::Result<Option<Line>> {
        // One octet before `pos` says whether a line starts at `pos`.
        let from = pos.saturating_sub(1);
        let mut buf = [0u8; 2 * MAX_LINE];
        let n = read_at_most(&self.file, &mut buf, from)?;
        let buf = &buf[..n];
        let skip = if pos == 0 {
            0
        } else {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if n < buf.len() => return Ok(None),
                None => return Err(too_long(from)),
            }
        };
        let rest = &buf[skip..];
        if rest.is_empty() {
            return Ok(None);
        }
        let (text, len) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            None if n < 2 * MAX_LINE => (rest, rest.len()),
            None => return Err(too_long(from)),
        };
        let start = from + skip as u64;
        Ok(Some(Line {
            start,
            end: start + len as u64,
            text: String::from_utf8_lossy(text).into_owned(),
        }))
    }
}

struct Line {
    start: u64,
    /// Just past its newline.
    end: u64,
    text: String,
}

/// The hash of a line, upper case; None when it is not 40 hex digits.
fn hash_of(line: &str) -> Option<String> {
    let hash = line.trim_end_matches('\r').split(':').next()?;
    (hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hash.to_ascii_uppercase())
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn too_long(at: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a line near octet {at} is longer than {MAX_LINE} octets"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_hex(p: &str) -> String {
        crate::hex::encode(&Sha1::digest(p.as_bytes())).to_ascii_uppercase()
    }

    /// A sorted list of `n` generated passwords' hashes (with counts of
    /// varying width), the list and the passwords.
    fn list(n: usize, crlf: bool) -> (tempfile::NamedTempFile, Vec<String>) {
        let passwords: Vec<String> = (0..n).map(|i| format!("password{i}")).collect();
        let mut lines: Vec<String> = passwords
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}:{}", sha1_hex(p), i * 37 % 100_000))
            .collect();
        lines.sort();
        let eol = if crlf { "\r\n" } else { "\n" };
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), lines.join(eol) + eol).unwrap();
        (f, passwords)
    }

    #[test]
    fn every_listed_password_is_found_and_no_other() {
        for (n, crlf) in [
            (1, false),
            (2, true),
            (3, false),
            (1000, false),
            (777, true),
        ] {
            let (f, passwords) = list(n, crlf);
            let b = BreachedPasswords::open(f.path()).unwrap();
            for p in &passwords {
                assert!(b.contains(p.as_bytes()).unwrap(), "{p} of {n}");
            }
            for p in [
                "",
                "password",
                "Password0",
                "correct horse",
                "password1000000",
            ] {
                assert!(!b.contains(p.as_bytes()).unwrap(), "{p} of {n}");
            }
        }
    }

    #[test]
    fn the_last_line_without_a_newline_and_lower_case_hashes() {
        let mut hashes = [sha1_hex("a"), sha1_hex("b"), sha1_hex("c")];
        hashes.sort();
        let text = hashes.join("\n").to_ascii_lowercase();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let b = BreachedPasswords::open(f.path()).unwrap();
        for p in ["a", "b", "c"] {
            assert!(b.contains(p.as_bytes()).unwrap(), "{p}");
        }
        assert!(!b.contains(b"d").unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_list_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(BreachedPasswords::open(f.path()).is_err(), "empty");
        std::fs::write(f.path(), "alice:{PLAIN}secret\n").unwrap();
        let why = BreachedPasswords::open(f.path()).unwrap_err();
        assert!(why.contains("not a Pwned Passwords list"), "{why}");
        assert!(BreachedPasswords::open(Path::new("/nonexistent/list")).is_err());
    }
}

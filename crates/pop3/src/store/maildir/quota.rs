// SPDX-License-Identifier: AGPL-3.0-only
//! Maildir++ quota: the `maildirsize` file that Dovecot's LDA, Courier's
//! `deliverquota` and maildrop read and keep. Its first line is the quota
//! (`<octets>S,<messages>C`); every other line is a change, `<octets>
//! <messages>`, appended with one write. The sum of the lines is the use.
//! As those programs do, pop3d appends a line per delivery and per
//! removal, and rewrites the file from a count of the Maildir when the
//! quota changed, the file has grown past 5120 octets, or it is missing
//! for a user with a quota. Octets are those of the files (`,S=` in the
//! name when present); the Trash folder is not counted.

use std::io::Write;
use std::path::Path;

use super::{io, keep::TRASH_DIR, replace_file};
use crate::auth::Quota;
use crate::store::StoreError;

pub const MAILDIRSIZE: &str = "maildirsize";
/// Past this size the file is rewritten as one line (Maildir++).
const REWRITE_AT: u64 = 5120;

/// A parsed `maildirsize`: the quota definition and the sums of its
/// change lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeFile {
    pub definition: String,
    pub octets: i64,
    pub messages: i64,
}

impl SizeFile {
    /// The file in its rewritten form: the definition and one line of
    /// totals.
    pub fn to_text(&self) -> String {
        format!("{}\n{} {}\n", self.definition, self.octets, self.messages)
    }
}

/// Read a `maildirsize`; `None` when a change line is not two numbers.
pub fn parse(text: &str) -> Option<SizeFile> {
    let mut lines = text.lines();
    let definition = lines.next()?.trim().to_owned();
    let (mut octets, mut messages) = (0i64, 0i64);
    for line in lines {
        let mut f = line.split_whitespace();
        let (Some(o), Some(m)) = (f.next(), f.next()) else {
            continue;
        };
        octets = octets.saturating_add(o.parse().ok()?);
        messages = messages.saturating_add(m.parse().ok()?);
    }
    Some(SizeFile {
        definition,
        octets,
        messages,
    })
}

/// The octets of a Maildir message: `,S=` in its name, else its length.
pub fn file_octets(path: &Path) -> u64 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let base = name.split(':').next().unwrap_or(name);
    base.split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("S="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::fs::metadata(path).map_or(0, |m| m.len()))
}

/// Count the Maildir: `new/` and `cur/` of the root and of every folder
/// but the Trash.
fn count(dir: &Path) -> (u64, u64) {
    let mut roots = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name != TRASH_DIR && name != "." && name != ".." {
                roots.push(e.path());
            }
        }
    }
    let (mut octets, mut messages) = (0, 0);
    for root in roots {
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                octets += file_octets(&e.path());
                messages += 1;
            }
        }
    }
    (octets, messages)
}

/// Rewrite the file from a count, under `definition`.
fn rewrite(dir: &Path, definition: &str) -> Result<(u64, u64), StoreError> {
    let (octets, messages) = count(dir);
    let text = SizeFile {
        definition: definition.to_owned(),
        octets: octets as i64,
        messages: messages as i64,
    }
    .to_text();
    replace_file(dir, MAILDIRSIZE, text.as_bytes()).map_err(|e| io(&dir.join(MAILDIRSIZE), e))?;
    Ok((octets, messages))
}

/// The use of the Maildir as `maildirsize` says, kept current (see the
/// module's rules); `None` when there is no quota and no file to keep.
pub fn usage(dir: &Path, quota: Option<&Quota>) -> Result<Option<(u64, u64)>, StoreError> {
    let path = dir.join(MAILDIRSIZE);
    let text = match crate::safe_fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Planted: recounted, and the rewrite replaces it.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Some(String::new()),
        Err(e) => return Err(io(&path, e)),
    };
    let wanted = quota.map(Quota::maildirsize_line);
    let parsed = text.as_deref().and_then(parse);
    let definition = match (wanted, &parsed) {
        (Some(w), _) => w,
        (None, Some(p)) => p.definition.clone(),
        // No file, or a damaged one and no quota to write: leave it to its
        // owner.
        (None, None) => return Ok(None),
    };
    let stale = match &parsed {
        None => true,
        Some(p) => {
            p.definition != definition
                || p.octets < 0
                || p.messages < 0
                || text.as_ref().is_some_and(|t| t.len() as u64 > REWRITE_AT)
        }
    };
    if stale {
        return rewrite(dir, &definition).map(Some);
    }
    let p = parsed.expect("not stale");
    Ok(Some((p.octets as u64, p.messages as u64)))
}

/// Append one change line per entry (`octets`, `messages`), in one write,
/// if the Maildir keeps a `maildirsize`.
pub fn record(dir: &Path, changes: &[(i64, i64)]) {
    if changes.is_empty() {
        return;
    }
    let path = dir.join(MAILDIRSIZE);
    let text: String = changes.iter().map(|(o, m)| format!("{o} {m}\n")).collect();
    // A write cut short (a full disk) is cut back off: a torn last line
    // would make the file unreadable to every agent that keeps it.
    let appended = crate::safe_fs::open_append(&path).and_then(|mut f| {
        let before = f.metadata()?.len();
        f.write_all(text.as_bytes()).inspect_err(|_| {
            let _ = f.set_len(before);
        })
    });
    match appended {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // The next delivery that needs it recounts.
        Err(e) => tracing::warn!(file = %path.display(), "cannot update maildirsize: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maildir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp", ".Sent/cur", ".Trash/cur"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        dir
    }

    #[test]
    fn counts_rewrites_and_appends() {
        let dir = maildir();
        let d = dir.path();
        std::fs::write(d.join("new/1.a.host,S=100"), b"x").unwrap();
        std::fs::write(d.join("cur/2.b.host:2,S"), b"12345").unwrap();
        std::fs::write(d.join(".Sent/cur/3.c.host,S=50:2,S"), b"").unwrap();
        std::fs::write(d.join(".Trash/cur/4.d.host,S=999:2,S"), b"").unwrap();
        assert_eq!(usage(d, None).unwrap(), None, "no quota, no file: nothing");
        let quota = Quota {
            storage: Some(1000),
            messages: None,
        };
        assert_eq!(usage(d, Some(&quota)).unwrap(), Some((155, 3)));
        assert_eq!(
            std::fs::read_to_string(d.join(MAILDIRSIZE)).unwrap(),
            "1000S\n155 3\n"
        );
        record(d, &[(20, 1), (-100, -1)]);
        assert_eq!(usage(d, Some(&quota)).unwrap(), Some((75, 3)));
        // Kept without a quota of ours (another program's file) ...
        assert_eq!(usage(d, None).unwrap(), Some((75, 3)));
        // ... recounted when the quota changes.
        let bigger = Quota {
            storage: Some(2000),
            messages: Some(10),
        };
        assert_eq!(usage(d, Some(&bigger)).unwrap(), Some((155, 3)));
        assert!(
            std::fs::read_to_string(d.join(MAILDIRSIZE))
                .unwrap()
                .starts_with("2000S,10C\n")
        );
        // A file past 5120 octets is folded into one line.
        record(d, &vec![(0, 0); 2000]);
        assert_eq!(usage(d, Some(&bigger)).unwrap(), Some((155, 3)));
        assert!(std::fs::metadata(d.join(MAILDIRSIZE)).unwrap().len() < 100);
    }
}

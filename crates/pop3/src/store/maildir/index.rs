// SPDX-License-Identifier: AGPL-3.0-only
//! The per-Maildir index `pop3d-uidlist`: UID validity, next UID, and for
//! each message its UID, its POP3 size and its UIDL string, so that a login
//! reads no message twice and UIDLs never change. Seeded from Dovecot's
//! `dovecot-uidlist` when one exists, serving the UIDLs Dovecot serves with
//! its default `pop3_uidl_format = %08Xu%08Xv` (or a stored `P` override).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub const INDEX_FILE: &str = "pop3d-uidlist";
pub const DOVECOT_UIDLIST: &str = "dovecot-uidlist";
const MAGIC: &str = "pop3d-uidlist";

/// What the index knows of one message, keyed by its Maildir base name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    /// POP3 size, when known.
    pub size: Option<u64>,
    pub uidl: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub validity: u32,
    pub next_uid: u32,
    pub entries: HashMap<String, Entry>,
}

impl Index {
    pub fn new(validity: u32) -> Index {
        Index {
            validity,
            next_uid: 1,
            entries: HashMap::new(),
        }
    }

    /// The UIDL Dovecot's default format gives this UID.
    pub fn default_uidl(&self, uid: u32) -> String {
        format!("{uid:08X}{:08X}", self.validity)
    }

    /// Give a new message the next UID.
    pub fn assign(&mut self, key: &str, size: Option<u64>) -> Entry {
        let uid = self.next_uid;
        self.next_uid = self.next_uid.saturating_add(1);
        let entry = Entry {
            uid,
            size,
            uidl: self.default_uidl(uid),
        };
        self.entries.insert(key.to_owned(), entry.clone());
        entry
    }

    /// Parse our own index. `None` for anything unexpected: the caller
    /// rebuilds rather than trusting a damaged file.
    pub fn parse(text: &str) -> Option<Index> {
        let mut lines = text.lines();
        let mut header = lines.next()?.split(' ');
        if header.next()? != MAGIC || header.next()? != "1" {
            return None;
        }
        let validity = header.next()?.strip_prefix('V')?.parse().ok()?;
        let next_uid = header.next()?.strip_prefix('N')?.parse().ok()?;
        let mut index = Index {
            validity,
            next_uid,
            entries: HashMap::new(),
        };
        for line in lines {
            let mut f = line.splitn(4, ' ');
            let uid: u32 = f.next()?.parse().ok()?;
            let size = match f.next()? {
                "-" => None,
                s => Some(s.parse().ok()?),
            };
            let uidl = f.next()?.to_owned();
            let key = f.next()?.to_owned();
            if !valid_uidl(&uidl) || key.is_empty() || uid >= index.next_uid {
                return None;
            }
            index.entries.insert(key, Entry { uid, size, uidl });
        }
        Some(index)
    }

    pub fn serialize(&self) -> String {
        let mut entries: Vec<(&String, &Entry)> = self.entries.iter().collect();
        entries.sort_by_key(|(_, e)| e.uid);
        let mut out = format!("{MAGIC} 1 V{} N{}\n", self.validity, self.next_uid);
        for (key, e) in entries {
            let size = e.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
            out.push_str(&format!("{} {size} {} {key}\n", e.uid, e.uidl));
        }
        out
    }

    /// Write atomically: a temporary file, fsync, rename.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{INDEX_FILE}.tmp.{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.serialize().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(INDEX_FILE))
    }

    /// Read Dovecot's `dovecot-uidlist` (versions 1 and 3).
    pub fn from_dovecot(text: &str) -> Option<Index> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split(' ').collect();
        let (validity, next_uid, v3) = match *header.first()? {
            "1" => (
                header.get(1)?.parse().ok()?,
                header.get(2)?.parse().ok()?,
                false,
            ),
            "3" => {
                let field = |p: char| {
                    header[1..]
                        .iter()
                        .find_map(|h| h.strip_prefix(p))
                        .and_then(|v| v.parse::<u32>().ok())
                };
                (field('V')?, field('N')?, true)
            }
            _ => return None,
        };
        let mut index = Index {
            validity,
            next_uid,
            entries: HashMap::new(),
        };
        for line in lines {
            let (uid, rest) = line.split_once(' ')?;
            let uid: u32 = uid.parse().ok()?;
            let (exts, name) = if v3 {
                // `uid [ext ...] :filename`; extensions are a letter then a value.
                let at = if rest.starts_with(':') {
                    0
                } else {
                    rest.find(" :")? + 1
                };
                (&rest[..at], &rest[at + 1..])
            } else {
                ("", rest)
            };
            let key = name.split(':').next().unwrap_or(name);
            if key.is_empty() {
                continue;
            }
            let mut size = None;
            let mut uidl = None;
            for ext in exts.split(' ').filter(|e| !e.is_empty()) {
                let (k, v) = ext.split_at(1);
                match k {
                    "W" => size = v.parse().ok(),
                    "P" if valid_uidl(v) => uidl = Some(v.to_owned()),
                    _ => {}
                }
            }
            let uidl = uidl.unwrap_or_else(|| index.default_uidl(uid));
            index.next_uid = index.next_uid.max(uid.saturating_add(1));
            index
                .entries
                .insert(key.to_owned(), Entry { uid, size, uidl });
        }
        Some(index)
    }
}

/// RFC 1939 §7: 1 to 70 characters in 0x21..=0x7E.
pub fn valid_uidl(s: &str) -> bool {
    (1..=70).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut idx = Index::new(1_700_000_000);
        idx.assign("1.M1P1.host", Some(120));
        idx.assign("2.M2P2.host", None);
        let again = Index::parse(&idx.serialize()).unwrap();
        assert_eq!(again, idx);
        assert_eq!(again.entries["1.M1P1.host"].uidl, "000000016553F100");
        assert_eq!(again.next_uid, 3);
    }

    #[test]
    fn damaged_index_is_refused() {
        assert!(Index::parse("").is_none());
        assert!(Index::parse("pop3d-uidlist 1 V1 N2\n5 10 X key\n").is_none());
        assert!(Index::parse("pop3d-uidlist 1 V1 N9\nx 10 X key\n").is_none());
    }

    #[test]
    fn dovecot_v3() {
        let text = "3 V1234567890 N10 G0123456789abcdef\n\
                    1 :1700000000.M1P1.mx\n\
                    4 W2048 S2000 :1700000001.M2P2.mx:2,S\n\
                    7 P0000abcd.legacy W10 :1700000002.M3P3.mx\n";
        let idx = Index::from_dovecot(text).unwrap();
        assert_eq!(idx.validity, 1_234_567_890);
        assert_eq!(idx.next_uid, 10);
        assert_eq!(idx.entries["1700000000.M1P1.mx"].uidl, "00000001499602D2");
        let e = &idx.entries["1700000001.M2P2.mx"];
        assert_eq!((e.uid, e.size), (4, Some(2048)));
        assert_eq!(e.uidl, "00000004499602D2");
        assert_eq!(idx.entries["1700000002.M3P3.mx"].uidl, "0000abcd.legacy");
    }

    #[test]
    fn dovecot_v1() {
        let idx = Index::from_dovecot("1 1000 3\n1 a.host\n2 b.host:2,S\n").unwrap();
        assert_eq!(idx.entries["b.host"].uidl, "00000002000003E8");
        assert!(Index::from_dovecot("9 junk\n").is_none());
    }

    #[test]
    fn uidl_charset() {
        assert!(valid_uidl("abc"));
        assert!(!valid_uidl(""));
        assert!(!valid_uidl("a b"));
        assert!(!valid_uidl(&"x".repeat(71)));
    }
}

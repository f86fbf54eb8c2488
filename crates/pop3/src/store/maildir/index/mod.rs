// SPDX-License-Identifier: AGPL-3.0-only
//! The per-Maildir index `pop3d-uidlist`: UID validity, next UID, and for
//! each message its UID, its POP3 size and its UIDL string, so that a login
//! reads no message twice and UIDLs never change. Seeded from Dovecot's
//! `dovecot-uidlist` when one exists, serving the UIDLs Dovecot serves with
//! its default `pop3_uidl_format = %08Xu%08Xv` (or a stored `P` override).
//!
//! Each entry keeps its UIDL string verbatim; the UID orders messages and
//! makes the strings of new ones. A damaged index is salvaged
//! ([`Index::rebuild`]) so that no string a client has seen changes and no
//! string is ever given to a second message.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::protocol::valid_uidl;
use crate::store::uidl::{Facts, UidlFormat, Var};

pub const INDEX_FILE: &str = "pop3d-uidlist";
pub const DOVECOT_UIDLIST: &str = "dovecot-uidlist";
/// Courier's list of UIDs (Courier 4 and later), version 3.
pub const COURIER_UIDLIST: &str = "courierpop3dsizelist";
const MAGIC: &str = "pop3d-uidlist";
/// Version 2 counts the CRLF that RETR adds to a message whose last line
/// has none; sizes a version 1 file recorded are measured again.
const VERSION: &str = "2";

/// What the index knows of one message, keyed by its Maildir base name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    /// POP3 size, when known.
    pub size: Option<u64>,
    pub uidl: String,
}

/// What [`Index::salvage`] could read.
#[derive(Debug, Default)]
pub struct Salvage {
    pub validity: Option<u32>,
    pub next_uid: Option<u32>,
    pub entries: HashMap<String, Entry>,
}

/// Keys, UIDs and strings already taken while a list is read. A second
/// message under any of them, or a key no Maildir file has, is left out of
/// what is read (it is then new
/// mail, given a fresh UID and string), so that no two messages ever share
/// a UID or a UIDL (RFC 1939 §7), whatever a damaged or foreign list says.
#[derive(Debug, Default)]
struct Taken {
    keys: HashSet<String>,
    uids: HashSet<u32>,
    uidls: HashSet<String>,
}

impl Taken {
    fn admit(&mut self, key: &str, entry: &Entry) -> bool {
        if !maildir_key(key)
            || self.keys.contains(key)
            || self.uids.contains(&entry.uid)
            || self.uidls.contains(&entry.uidl)
        {
            return false;
        }
        self.keys.insert(key.to_owned());
        self.uids.insert(entry.uid);
        self.uidls.insert(entry.uidl.clone());
        true
    }
}

/// Whether `key` can be a Maildir file's key: not empty, and no control
/// character (the scan skips such files, and a CR or LF would not survive
/// the index's lines).
fn maildir_key(key: &str) -> bool {
    !key.is_empty() && !key.chars().any(char::is_control)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub validity: u32,
    pub next_uid: u32,
    pub entries: HashMap<String, Entry>,
    /// Sizes Dovecot's list records (`W`), by key: right for every message
    /// that ends with a line end, two short for one that does not (RETR
    /// adds the CRLF). Checked against the file's last octet before use;
    /// never written to our index.
    pub recorded: HashMap<String, u64>,
    /// How strings of messages seen for the first time are made.
    pub format: UidlFormat,
}

impl Index {
    pub fn new(validity: u32) -> Index {
        Index {
            validity,
            next_uid: 1,
            entries: HashMap::new(),
            recorded: HashMap::new(),
            format: UidlFormat::default(),
        }
    }

    /// The UIDL Dovecot's default format `%08Xu%08Xv` gives this UID.
    /// Dovecot's `X` modifier writes lowercase hex, and clients compare
    /// UIDLs as strings, so lowercase it is.
    pub fn default_uidl(&self, uid: u32) -> String {
        default_uidl(uid, self.validity)
    }

    /// The string the configured format gives a message; the default
    /// format's when it needs what the message cannot give.
    pub fn uidl_for(&self, uid: u32, validity: u32, key: &str, path: Option<&Path>) -> String {
        let header = match path {
            Some(p) if self.format.uses(Var::HeaderMd5) => read_head(p),
            _ => None,
        };
        let facts = Facts {
            uid,
            validity,
            file: Some(key),
            guid: Some(key),
            header: header.as_deref(),
        };
        self.format
            .render(&facts)
            .unwrap_or_else(|| default_uidl(uid, validity))
    }

    /// Give a new message the next UID (tests; the store assigns many at
    /// once with [`Index::assign_all`]).
    #[cfg(test)]
    pub fn assign(&mut self, key: &str, size: Option<u64>) -> Entry {
        self.assign_all([(key, None)]);
        let entry = self.entries.get_mut(key).expect("just assigned");
        entry.size = size;
        entry.clone()
    }

    /// Give new messages the next UIDs, in the order given. The strings in
    /// use are gathered once, so a mailbox of 50,000 new messages costs
    /// 50,000 look-ups, not 50,000 scans.
    pub fn assign_all<'a>(&mut self, keys: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>) {
        let mut taken: std::collections::HashSet<String> =
            self.entries.values().map(|e| e.uidl.clone()).collect();
        for (key, path) in keys {
            let (uid, uidl) = self.fresh_uid(&taken, key, path);
            taken.insert(uidl.clone());
            let entry = Entry {
                uid,
                size: None,
                uidl,
            };
            self.entries.insert(key.to_owned(), entry);
        }
    }

    /// Parse our own index. `None` for anything unexpected: the caller
    /// rebuilds rather than trusting a damaged file.
    pub fn parse(text: &str) -> Option<Index> {
        let mut lines = text.lines();
        let mut header = lines.next()?.split(' ');
        if header.next()? != MAGIC {
            return None;
        }
        let sizes_hold = match header.next()? {
            VERSION => true,
            "1" => false,
            _ => return None,
        };
        let validity = header.next()?.strip_prefix('V')?.parse().ok()?;
        let next_uid = header.next()?.strip_prefix('N')?.parse().ok()?;
        let mut index = Index {
            validity,
            next_uid,
            ..Index::new(validity)
        };
        // Read at every login that finds no cached listing: the checks
        // that no two entries share a key, UID or UIDL borrow from the
        // text rather than copy it.
        let mut uids = HashSet::new();
        let mut uidls = HashSet::new();
        for line in lines {
            let mut f = line.splitn(4, ' ');
            let uid: u32 = f.next()?.parse().ok()?;
            let size = match f.next()? {
                "-" => None,
                s => Some(s.parse().ok()?),
            };
            let uidl = f.next()?;
            let key = f.next()?;
            if !valid_uidl(uidl)
                || !maildir_key(key)
                || uid >= index.next_uid
                || !uids.insert(uid)
                || !uidls.insert(uidl)
            {
                return None;
            }
            let entry = Entry {
                uid,
                size: size.filter(|_| sizes_hold),
                uidl: uidl.to_owned(),
            };
            if index.entries.insert(key.to_owned(), entry).is_some() {
                return None;
            }
        }
        Some(index)
    }

    /// Whatever can be read from a damaged index: the header's fields if
    /// they parse, and every entry line that does.
    pub fn salvage(text: &str) -> Salvage {
        let mut lines = text.lines();
        let mut salvage = Salvage::default();
        let mut taken = Taken::default();
        if let Some(header) = lines.next() {
            let mut h = header.split(' ');
            if h.next() == Some(MAGIC) && matches!(h.next(), Some(VERSION | "1")) {
                salvage.validity = h
                    .next()
                    .and_then(|v| v.strip_prefix('V')?.parse().ok())
                    .filter(|v| *v > 0);
                salvage.next_uid = h.next().and_then(|n| n.strip_prefix('N')?.parse().ok());
            }
        }
        for line in lines {
            let mut f = line.splitn(4, ' ');
            let (Some(uid), Some(size), Some(uidl), Some(key)) = (
                f.next().and_then(|u| u.parse::<u32>().ok()),
                f.next(),
                f.next(),
                f.next(),
            ) else {
                continue;
            };
            let size = match size {
                "-" => None,
                s => match s.parse() {
                    Ok(s) => Some(s),
                    Err(_) => continue,
                },
            };
            if uid == 0 || !valid_uidl(uidl) || key.is_empty() || key.contains(' ') {
                continue;
            }
            let uidl = uidl.to_owned();
            let entry = Entry { uid, size, uidl };
            if taken.admit(key, &entry) {
                salvage.entries.insert(key.to_owned(), entry);
            }
        }
        salvage
    }

    /// An index from a damaged one and, where present, Dovecot's list.
    ///
    /// - Salvaged entries keep their UIDLs; a message the salvage lost
    ///   takes the UIDL Dovecot's list gives it, unless another message
    ///   already has that string.
    /// - The validity is kept when the damaged header still names it and
    ///   its next UID. Without them nobody knows which UIDs were handed
    ///   out to messages deleted since, so new messages get strings under
    ///   a new validity, which no earlier string can equal.
    /// - The next UID is above every UID known, so new messages sort last.
    pub fn rebuild(salvage: Salvage, dovecot: Option<Index>, now_secs: u32) -> Index {
        let validity = match (salvage.validity, salvage.next_uid) {
            (Some(v), Some(_)) => v,
            _ => {
                let mut taken: Vec<u32> = salvage.validity.into_iter().collect();
                taken.extend(dovecot.as_ref().map(|d| d.validity));
                let mut v = now_secs.max(1);
                while taken.contains(&v) {
                    v = v.wrapping_add(1).max(1);
                }
                v
            }
        };
        let mut index = Index {
            next_uid: salvage.next_uid.unwrap_or(1).max(1),
            entries: salvage.entries,
            ..Index::new(validity)
        };
        if let Some(dovecot) = dovecot {
            index.recorded = dovecot.recorded;
            let mut used: std::collections::HashSet<String> =
                index.entries.values().map(|e| e.uidl.clone()).collect();
            for (key, e) in dovecot.entries {
                if !index.entries.contains_key(&key) && used.insert(e.uidl.clone()) {
                    index.entries.insert(key, e);
                }
            }
        }
        let highest = index.entries.values().map(|e| e.uid).max().unwrap_or(0);
        index.next_uid = index.next_uid.max(highest.saturating_add(1));
        index
    }

    /// A new UIDL string for the next UID, skipping any already `taken`
    /// (possible only after a rebuild kept foreign strings).
    /// A format that makes the same string for two messages (`%m` of
    /// two copies of one message) falls back to the default format's.
    fn fresh_uid(
        &mut self,
        taken: &std::collections::HashSet<String>,
        key: &str,
        path: Option<&Path>,
    ) -> (u32, String) {
        let mut first = true;
        loop {
            let uid = self.next_uid;
            self.next_uid = self.next_uid.saturating_add(1);
            let uidl = if first {
                // A message moved from another server keeps its UIDL.
                super::names::uidl_in_name(key)
                    .unwrap_or_else(|| self.uidl_for(uid, self.validity, key, path))
            } else {
                self.default_uidl(uid)
            };
            first = false;
            if !taken.contains(&uidl) {
                return (uid, uidl);
            }
        }
    }

    pub fn serialize(&self) -> String {
        let mut entries: Vec<(&String, &Entry)> = self.entries.iter().collect();
        entries.sort_by_key(|(_, e)| e.uid);
        let mut out = format!("{MAGIC} {VERSION} V{} N{}\n", self.validity, self.next_uid);
        for (key, e) in entries {
            let size = e.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
            out.push_str(&format!("{} {size} {} {key}\n", e.uid, e.uidl));
        }
        out
    }

    /// Write atomically and durably: a temporary file, fsync, rename,
    /// fsync of the directory (without it a crash may bring back the old
    /// index, and with it UIDs that were already handed out).
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        super::replace_file(dir, INDEX_FILE, self.serialize().as_bytes())
    }

    /// Read Dovecot's `dovecot-uidlist` (versions 1 and 3); strings not
    /// stored there (`P`) are made with `format`, as Dovecot makes them
    /// with its `pop3_uidl_format`.
    pub fn from_dovecot(text: &str, format: &UidlFormat) -> Option<Index> {
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
            format: format.clone(),
            ..Index::new(validity)
        };
        let mut taken = Taken::default();
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
                // A letter, then its value (the letter may be anything in
                // a damaged list, a character of several octets too).
                let mut chars = ext.chars();
                let letter = chars.next();
                let v = chars.as_str();
                match letter {
                    Some('W') => size = v.parse().ok(),
                    Some('P') if valid_uidl(v) => uidl = Some(v.to_owned()),
                    _ => {}
                }
            }
            let uidl = uidl.unwrap_or_else(|| index.uidl_for(uid, validity, key, None));
            index.take_over(&mut taken, key, uid, uidl, size);
        }
        Some(index)
    }
}

impl Index {
    /// One message of another server's list: its UID and UIDL, and the
    /// size that list records, unless `taken` says another message has
    /// them already. The next UID is past it either way.
    fn take_over(
        &mut self,
        taken: &mut Taken,
        key: &str,
        uid: u32,
        uidl: String,
        recorded: Option<u64>,
    ) {
        self.next_uid = self.next_uid.max(uid.saturating_add(1));
        let entry = Entry {
            uid,
            size: None,
            uidl,
        };
        if !taken.admit(key, &entry) {
            return;
        }
        if let Some(size) = recorded {
            self.recorded.insert(key.to_owned(), size);
        }
        self.entries.insert(key.to_owned(), entry);
    }

    /// Read Courier's `courierpop3dsizelist` (version 3: `/3 NEXT VALIDITY`,
    /// then `NAME SIZE UID:VALIDITY[:...]` per message), making each
    /// string with `format` under the validity recorded for the message
    /// (Courier 4's own UIDLs are `UID%u-%v`).
    pub fn from_courier(text: &str, format: &UidlFormat) -> Option<Index> {
        let mut lines = text.lines();
        let mut header = lines.next()?.split(' ');
        if header.next()? != "/3" {
            return None;
        }
        let next_uid: u32 = header.next()?.parse().ok()?;
        let validity: u32 = header.next()?.parse().ok()?;
        let mut index = Index {
            validity,
            next_uid: next_uid.max(1),
            format: format.clone(),
            ..Index::new(validity)
        };
        let mut taken = Taken::default();
        for line in lines {
            let mut f = line.rsplitn(3, ' ');
            let ids = f.next()?;
            let size: Option<u64> = f.next()?.parse().ok();
            let name = f.next()?;
            let key = name.split(':').next().unwrap_or(name);
            let mut ids = ids.split(':');
            let uid: u32 = ids.next()?.parse().ok()?;
            let message_validity: u32 = ids.next()?.parse().ok()?;
            if key.is_empty() || uid == 0 {
                continue;
            }
            let uidl = index.uidl_for(uid, message_validity, key, None);
            index.take_over(&mut taken, key, uid, uidl, size);
        }
        Some(index)
    }
}

/// `%08Xu%08Xv` as Dovecot writes it.
fn default_uidl(uid: u32, validity: u32) -> String {
    format!("{uid:08x}{validity:08x}")
}

/// The first octets of a message, enough for its header section.
fn read_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    crate::safe_fs::open_regular(path)
        .ok()?
        .take(256 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

#[cfg(test)]
mod tests;

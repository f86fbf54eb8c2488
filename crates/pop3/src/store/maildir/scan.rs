// SPDX-License-Identifier: AGPL-3.0-only
//! Reading a Maildir at login: its files, its index (or another
//! server's), UIDs and sizes for new messages, and the index written
//! back before any client sees them.

use super::cache::Listing;
use super::names::{key_of, size_from_name};
use super::*;

/// The directories that hold messages.
pub(super) const SUBDIRS: [&str; 2] = ["new", "cur"];

/// Files in new/ and cur/ as (key, path), hidden files skipped.
pub(super) fn scan(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for sub in SUBDIRS {
        let subdir = dir.join(sub);
        let entries = std::fs::read_dir(&subdir).map_err(|e| io(&subdir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(&subdir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            // No delivery agent makes such a name, and the index could not
            // keep it (a CR or LF would split its line).
            if name.chars().any(char::is_control) {
                tracing::warn!(file = %entry.path().display().to_string().escape_debug(), "a control character in the name; skipped");
                continue;
            }
            // Only regular files are mail: a link (to another user's mail,
            // to /etc/shadow), a FIFO or a device is never listed or opened.
            // The type comes from the directory entry, without a stat.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                tracing::warn!(file = %entry.path().display(), "not a regular file; skipped");
                continue;
            }
            found.push((key_of(name).to_owned(), entry.path()));
        }
    }
    Ok(found)
}

/// The Maildir's index, and whether it must be written back even if no
/// message changes (it was rebuilt from a damaged file).
/// The index, whether it changed from the file (a rebuild), and whether
/// it is the file as stored (not one made up because there is none).
pub(super) fn load_index(
    dir: &Path,
    format: &UidlFormat,
) -> Result<(Index, bool, bool), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    // The list of the server the Maildir comes from: Dovecot's, else
    // Courier's.
    let foreign = || {
        let read = |file: &str, parse: fn(&str, &UidlFormat) -> Option<Index>| {
            let text = fs::read_to_string(&dir.join(file)).ok()?;
            parse(&text, format).or_else(|| {
                tracing::warn!(maildir = %dir.display(), "unreadable {file}; ignored");
                None
            })
        };
        read(DOVECOT_UIDLIST, Index::from_dovecot)
            .or_else(|| read(COURIER_UIDLIST, Index::from_courier))
    };
    let with_format = |mut index: Index| {
        index.format = format.clone();
        index
    };
    match fs::read_to_string(&dir.join(INDEX_FILE)) {
        Ok(text) => {
            if let Some(index) = Index::parse(&text) {
                return Ok((with_format(index), false, true));
            }
            let index = with_format(Index::rebuild(Index::salvage(&text), foreign(), now));
            tracing::error!(
                maildir = %dir.display(),
                validity = index.validity,
                next_uid = index.next_uid,
                kept = index.entries.len(),
                "damaged {INDEX_FILE} rebuilt: UIDLs that could be read are kept; new messages get UIDs above every known one"
            );
            Ok((index, true, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            with_format(foreign().unwrap_or_else(|| Index::new(now.max(1)))),
            false,
            false,
        )),
        // A link or a special file planted in its place: pop3d makes
        // neither, so the real index is gone; rebuilt, and the rename that
        // stores it replaces the intruder, never its target.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            tracing::error!(maildir = %dir.display(), "{INDEX_FILE} is not a regular file; rebuilt");
            Ok((
                with_format(Index::rebuild(Index::salvage(""), foreign(), now)),
                true,
                false,
            ))
        }
        // Present but unreadable: never mistake it for absent.
        Err(e) => Err(io(&dir.join(INDEX_FILE), e)),
    }
}

pub(super) fn create_maildir(dir: &Path) -> Result<(), StoreError> {
    for sub in ["cur", "new", "tmp"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
    }
    Ok(())
}

pub(super) fn stamps(dir: &Path) -> Result<[SystemTime; 2], StoreError> {
    let stamp = |sub: &str| {
        let p = dir.join(sub);
        std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .map_err(|e| io(&p, e))
    };
    Ok([stamp("new")?, stamp("cur")?])
}

pub(super) fn open_blocking(
    dir: &Path,
    locks: &lock::LockTable,
    limit: Arc<measure::MeasureLimit>,
    cache: Option<&ListingCache>,
    options: DropOptions,
    format: Arc<UidlFormat>,
) -> Result<MaildirDrop, StoreError> {
    // A user's first login creates the Maildir, as Dovecot does. The
    // common case costs no extra look: claiming the lock needs the
    // directory, and the stamps taken under it need `new/` and `cur/`.
    let lock = match locks.lock(dir) {
        Err(e) if !matches!(e, StoreError::InUse) && !dir.is_dir() => {
            create_maildir(dir)?;
            locks.lock(dir)?
        }
        other => other?,
    };
    let before = match stamps(dir) {
        Ok(s) => s,
        Err(_) => {
            create_maildir(dir)?;
            stamps(dir)?
        }
    };
    let maildrop = |messages, infos| MaildirDrop {
        dir: dir.to_owned(),
        messages,
        infos,
        lock,
        options,
        read_ahead: Mutex::default(),
        expire: None,
        clock: Clock::system(),
        index_pending: None,
    };
    if let Some(hit) = cache.and_then(|c| c.get(dir, before)) {
        return Ok(maildrop(hit.messages.clone(), hit.infos.clone()));
    }
    let scanned_at = SystemTime::now();
    let (messages, infos, written) = scan_and_index(dir, &limit, &format, true)?;
    let (messages, infos) = (Arc::new(messages), Arc::new(infos));
    if !written {
        // A listing with mail held back is for this session only.
        let mut drop = maildrop(messages, infos);
        drop.index_pending = Some((limit, format));
        return Ok(drop);
    }
    // Cache only what nobody changed while we scanned.
    if let Some(cache) = cache
        && stamps(dir)? == before
    {
        let listing = Listing {
            stamps: before,
            made: Instant::now(),
            messages: messages.clone(),
            infos: infos.clone(),
        };
        cache.put(dir, listing, scanned_at);
    }
    Ok(maildrop(messages, infos))
}

/// Read the directory and the index; give new messages UIDs and sizes.
/// The last value says whether the index on disk is current: false when it
/// could not be written for lack of space, and then only the messages the
/// stored index already knew are listed (under the UIDLs it gave them),
/// so that no UIDL is shown that could change once there is room.
pub(super) fn scan_and_index(
    dir: &Path,
    limit: &measure::MeasureLimit,
    format: &UidlFormat,
    persist: bool,
) -> Result<(Vec<Message>, Vec<MessageInfo>, bool), StoreError> {
    let files = scan(dir)?;
    let (mut index, mut changed, on_disk) = load_index(dir, format)?;
    // What the stored index knows, should the new one not fit on disk.
    let stored: Option<std::collections::HashSet<String>> =
        on_disk.then(|| index.entries.keys().cloned().collect());

    // Forget messages that are gone; their UIDs are never given out again
    // because next_uid only grows.
    let present: HashMap<&str, &PathBuf> = files.iter().map(|(k, p)| (k.as_str(), p)).collect();
    let before = index.entries.len();
    index
        .entries
        .retain(|k, _| present.contains_key(k.as_str()));
    changed |= index.entries.len() != before;

    // New messages get UIDs in delivery order (Maildir names start with the
    // delivery time).
    let mut fresh: Vec<&(String, PathBuf)> = files
        .iter()
        .filter(|(k, _)| !index.entries.contains_key(k))
        .collect();
    fresh.sort_by(|a, b| a.0.cmp(&b.0));
    fresh.dedup_by(|a, b| a.0 == b.0);
    changed |= !fresh.is_empty();
    index.assign_all(
        fresh
            .into_iter()
            .map(|(key, path)| (key.as_str(), Some(path.as_path()))),
    );

    // One entry per message (the same message may sit in new/ and cur/
    // for a moment).
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    let files: Vec<&(String, PathBuf)> = files
        .iter()
        .filter(|(k, _)| seen.insert(k.as_str()))
        .collect();

    // Sizes: from the index; else `,W=` in the name, used as it is (it
    // costs no read: a mail delivered by SMTP or LMTP always ends with a
    // line end, and pop3d's own deliveries count the CRLF RETR adds);
    // else Dovecot's recorded `W`, checked against the last octet (once,
    // at migration); else measured.
    let mut unknown = Vec::new();
    for (key, path) in &files {
        let entry = index
            .entries
            .get_mut(key)
            .expect("every present key has an entry");
        if entry.size.is_some() {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(size) = size_from_name(name) {
            entry.size = Some(size);
            changed = true;
            continue;
        }
        let recorded = index.recorded.get(key).copied();
        unknown.push((key.as_str(), (path.as_path(), recorded)));
    }
    let jobs: Vec<measure::Job<'_>> = unknown.iter().map(|(_, job)| *job).collect();
    for ((key, _), size) in unknown.iter().zip(measure::sizes(limit, &jobs)?) {
        if let Some(s) = size {
            index.entries.get_mut(*key).expect("present").size = Some(s);
            changed = true;
        }
    }

    let mut listed = Vec::with_capacity(files.len());
    for (key, path) in files {
        let entry = &index.entries[key];
        // A file that vanished before it could be measured waits for the
        // next login.
        let Some(size) = entry.size else { continue };
        let info = MessageInfo {
            size,
            uid: entry.uidl.clone(),
        };
        let message = Message {
            key: key.clone(),
            uid: entry.uid,
            path: path.clone(),
        };
        listed.push((entry.uid, message, info));
    }
    listed.sort_by_key(|(uid, ..)| *uid);

    // UIDs handed out must be on disk before a client sees them, or the
    // next login could hand the same UIDs to other messages.
    let mut written = true;
    if persist && changed {
        crate::crash_point!("maildir-index-before-write");
    }
    if persist
        && changed
        && let Err(e) = index.store(dir)
    {
        // Without room for the index the user can still read and delete,
        // the one thing that frees space: what the stored index knows
        // goes out under its UIDLs, what is new waits for a later index.
        match &stored {
            Some(known) if crate::store::is_full(&e) => {
                let before = listed.len();
                listed.retain(|(_, m, _)| known.contains(&m.key));
                tracing::warn!(
                    maildir = %dir.display(),
                    held_back = before - listed.len(),
                    "cannot write {INDEX_FILE} ({e}): messages new since it was last written are left out of this session until it fits"
                );
                written = false;
            }
            _ => {
                tracing::error!(maildir = %dir.display(), "cannot write {INDEX_FILE}: {e}");
                return Err(io(&dir.join(INDEX_FILE), e));
            }
        }
    }
    let (messages, infos): (Vec<Message>, Vec<MessageInfo>) =
        listed.into_iter().map(|(_, m, i)| (m, i)).unzip();
    Ok((messages, infos, written))
}

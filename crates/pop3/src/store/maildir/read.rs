// SPDX-License-Identifier: AGPL-3.0-only
//! RETR and TOP on a Maildir: where a message is now, and small
//! messages read ahead together.

use super::*;

/// Most octets of following small messages read with a small one.
pub(super) const READ_AHEAD: u64 = 64 * 1024;

impl MaildirDrop {
    /// Message `index` if it was read ahead; what was read ahead of it is
    /// dropped (clients fetch in order, and those files do not change).
    pub(super) fn take_read_ahead(&self, index: usize) -> Option<Vec<u8>> {
        let mut ahead = self.read_ahead.lock().unwrap_or_else(|p| p.into_inner());
        while ahead.front().is_some_and(|(i, _)| *i < index) {
            ahead.pop_front();
        }
        match ahead.front() {
            Some((i, _)) if *i == index => ahead.pop_front().map(|(_, data)| data),
            _ => {
                ahead.clear();
                None
            }
        }
    }

    /// Read a small message, and the small ones after it up to
    /// [`READ_AHEAD`] octets, in one trip to the blocking pool.
    pub(super) async fn read_small(&self, index: usize) -> Result<MessageReader, StoreError> {
        let mut budget = READ_AHEAD;
        let mut wanted = vec![(index, self.messages[index].path.clone())];
        for j in index + 1..self.messages.len() {
            let size = self.infos[j].size;
            if size > budget {
                break;
            }
            budget -= size;
            wanted.push((j, self.messages[j].path.clone()));
        }
        let (dir, key) = (self.dir.clone(), self.messages[index].key.clone());
        let mut read = blocking(move || {
            let mut read = Vec::with_capacity(wanted.len());
            for (n, (j, path)) in wanted.into_iter().enumerate() {
                match fs::read(&path) {
                    Ok(data) => read.push((j, data)),
                    // The one asked for moved (flags changed): find it.
                    Err(e) if n == 0 && e.kind() == std::io::ErrorKind::NotFound => {
                        let path = find_by_key(&dir, &key)?;
                        let data = fs::read(&path).map_err(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => StoreError::MessageGone,
                            _ => io(&path, e),
                        })?;
                        read.push((j, data));
                    }
                    Err(e) if n == 0 => return Err(io(&path, e)),
                    // One read ahead that moved is read when asked for.
                    Err(_) => break,
                }
            }
            Ok(read)
        })
        .await?
        .into_iter();
        let (_, data) = read.next().ok_or(StoreError::MessageGone)?;
        self.read_ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(read);
        Ok(Box::new(std::io::Cursor::new(data)))
    }

    /// The message's current path: where it was, or where a flag change
    /// moved it since.
    pub(super) fn locate(&self, index: usize) -> Result<PathBuf, StoreError> {
        let m = self.messages.get(index).ok_or(StoreError::MessageGone)?;
        if m.path.exists() {
            return Ok(m.path.clone());
        }
        find_by_key(&self.dir, &m.key)
    }
}

/// Where a message is now, by its base name.
pub(super) fn find_by_key(dir: &Path, key: &str) -> Result<PathBuf, StoreError> {
    super::scan::scan(dir)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, p)| p)
        .ok_or(StoreError::MessageGone)
}

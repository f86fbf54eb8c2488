// SPDX-License-Identifier: AGPL-3.0-only
//! The UPDATE state on a Maildir (RFC 1939 §6): removals (or the
//! trash), retention, retrieval times and the seen flag, then the lock
//! let go.

use super::names::seen_name;
use super::scan::SUBDIRS;
use super::*;

impl MaildirDrop {
    /// Remove messages (into the trash with `delete = "trash"`); which
    /// of `new/` and `cur/` changed.
    pub(super) fn remove(&self, indices: &[usize], report: &mut CommitReport) -> [bool; 2] {
        let mut touched = [false; 2];
        let mut found = Vec::with_capacity(indices.len());
        for &i in indices {
            match self.locate(i) {
                Ok(path) => found.push((i, path)),
                // Someone else removed it already: the client's wish holds.
                Err(StoreError::MessageGone) => report.removed += 1,
                Err(e) => {
                    tracing::error!(maildir = %self.dir.display(), "cannot delete message: {e}");
                    report.failed += 1;
                }
            }
        }
        // Sizes for maildirsize, taken before the files go.
        let sizes: Vec<i64> = if self.dir.join(quota::MAILDIRSIZE).exists() {
            found
                .iter()
                .map(|(_, path)| quota::file_octets(path) as i64)
                .collect()
        } else {
            Vec::new()
        };
        let removed: Vec<bool> = match self.options.delete {
            DeleteMode::Expunge => found
                .iter()
                .map(|(_, path)| match std::fs::remove_file(path) {
                    Ok(()) => {
                        crate::crash_point!("maildir-remove-after-unlink");
                        true
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                    Err(e) => {
                        tracing::error!(file = %path.display(), "cannot delete message: {e}");
                        false
                    }
                })
                .collect(),
            DeleteMode::Trash => {
                let what: Vec<(PathBuf, u32, String)> = found
                    .iter()
                    .map(|(i, path)| {
                        (
                            path.clone(),
                            self.messages[*i].uid,
                            self.infos[*i].uid.clone(),
                        )
                    })
                    .collect();
                let now = self.clock.unix_secs();
                let retention = self.options.trash_retention.as_secs();
                keep::trash(&self.dir, &what, now, now.saturating_sub(retention))
            }
        };
        let mut counted = Vec::new();
        for (n, ((_, path), ok)) in found.iter().zip(removed).enumerate() {
            if ok {
                if let Some(size) = sizes.get(n) {
                    counted.push((-size, -1));
                }
                let sub = path.parent().and_then(|p| p.file_name());
                touched[usize::from(sub.is_some_and(|s| s == "cur"))] = true;
                report.removed += 1;
            } else {
                report.failed += 1;
            }
        }
        crate::crash_point!("maildir-remove-before-maildirsize");
        quota::record(&self.dir, &counted);
        crate::crash_point!("maildir-remove-after-maildirsize");
        touched
    }

    /// Make changes in `new/` and `cur/` durable.
    pub(super) fn sync(&self, touched: [bool; 2]) {
        for (sub, _) in SUBDIRS.iter().zip(touched).filter(|(_, t)| *t) {
            let d = self.dir.join(sub);
            if let Err(e) = sync_dir(&d) {
                tracing::error!(dir = %d.display(), "cannot make deletions durable: {e}");
            }
        }
    }

    /// At login, under the lock: remove the messages first retrieved
    /// longer ago than the retention period, and list the rest.
    pub(super) fn remove_expired(&mut self) -> Result<(), StoreError> {
        let Some(period) = self.expire else {
            return Ok(());
        };
        let times = keep::read_retrieved(&self.dir)?;
        if times.is_empty() {
            return Ok(());
        }
        let now = self.clock.unix_secs();
        let expired: Vec<usize> = (0..self.messages.len())
            .filter(|&i| {
                times
                    .get(&self.messages[i].key)
                    .is_some_and(|&t| t.saturating_add(period.as_secs()) <= now)
            })
            .collect();
        if !expired.is_empty() {
            let mut report = CommitReport::default();
            let touched = self.remove(&expired, &mut report);
            self.sync(touched);
            tracing::info!(
                maildir = %self.dir.display(),
                removed = report.removed,
                "messages past their retention period removed at login"
            );
            let gone: std::collections::HashSet<usize> = expired.into_iter().collect();
            let (messages, infos) = self
                .messages
                .iter()
                .zip(self.infos.iter())
                .enumerate()
                .filter(|(i, _)| !gone.contains(i))
                .map(|(_, (m, info))| (m.clone(), info.clone()))
                .unzip();
            self.messages = Arc::new(messages);
            self.infos = Arc::new(infos);
        }
        // Forget the times of messages that are gone.
        let present: std::collections::HashSet<&str> =
            self.messages.iter().map(|m| m.key.as_str()).collect();
        if times.keys().any(|k| !present.contains(k.as_str())) {
            let kept = times
                .into_iter()
                .filter(|(k, _)| present.contains(k.as_str()))
                .collect();
            keep::write_retrieved(&self.dir, &kept)?;
        }
        Ok(())
    }

    /// Record when retrieved messages were first retrieved, for a
    /// retention period.
    pub(super) fn record_retrieved(&self, seen: &[usize]) {
        let mut times = match keep::read_retrieved(&self.dir) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(maildir = %self.dir.display(), "cannot read retrieval times: {e}");
                return;
            }
        };
        let now = self.clock.unix_secs();
        let before = times.len();
        for &i in seen {
            if let Some(m) = self.messages.get(i) {
                times.entry(m.key.clone()).or_insert(now);
            }
        }
        if times.len() != before
            && let Err(e) = keep::write_retrieved(&self.dir, &times)
        {
            tracing::error!(maildir = %self.dir.display(), "cannot record retrieval times: {e}");
        }
    }

    /// Remove the marked messages, move the retrieved ones to `cur/` with
    /// the seen flag (as Dovecot does, so IMAP clients sharing the Maildir
    /// see them as read), make it all durable, then release the lock:
    /// another session must not see the maildrop before that is done.
    pub(super) fn commit_blocking(self, changes: &Changes, seen: &[usize]) -> CommitReport {
        let mut report = CommitReport::default();
        let mut touched = self.remove(&changes.deleted, &mut report);
        if self.expire.is_some_and(|p| !p.is_zero()) && !changes.seen.is_empty() {
            self.record_retrieved(&changes.seen);
        }
        for &i in seen {
            let Ok(from) = self.locate(i) else { continue };
            let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_cur = from.parent().and_then(|p| p.file_name()) == Some("cur".as_ref());
            let Some(seen) = seen_name(name).filter(|n| !in_cur || n != name) else {
                continue;
            };
            match std::fs::rename(&from, self.dir.join("cur").join(&seen)) {
                Ok(()) => touched = [true, true],
                // A flag is not worth failing QUIT over.
                Err(e) => tracing::warn!(file = %from.display(), "cannot mark as seen: {e}"),
            }
        }
        self.sync(touched);
        // The index that did not fit at login may fit now that messages
        // are gone; else a later login writes it.
        if let Some((limit, format)) = &self.index_pending
            && let Err(e) = scan_and_index(&self.dir, limit, format, true)
        {
            tracing::warn!(maildir = %self.dir.display(), "{INDEX_FILE} still not written: {e}");
        }
        self.lock.release();
        report
    }
}

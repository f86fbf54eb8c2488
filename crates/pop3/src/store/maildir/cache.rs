// SPDX-License-Identifier: AGPL-3.0-only
//! Listings kept between sessions of a Maildir that did not change.

use super::*;

/// Listings (names, sizes, UIDLs) kept between sessions, keyed by Maildir.
/// An entry is used only while `new/` and `cur/` keep the modification
/// times they had when it was made, and only if that scan ran at least
/// [`SETTLE`] after the last change: file systems stamp times from a coarse
/// clock, so two changes within one tick would otherwise look like one.
#[derive(Debug)]
pub struct ListingCache {
    pub(super) ttl: Duration,
    pub(super) max_entries: usize,
    pub(super) entries: Mutex<HashMap<PathBuf, Arc<Listing>>>,
    pub(super) hits: AtomicU64,
}

/// How long a directory must have been quiet before its scan is cached.
pub const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Listing {
    pub(super) stamps: [SystemTime; 2],
    pub(super) made: Instant,
    pub(super) messages: Arc<Vec<Message>>,
    pub(super) infos: Arc<Vec<MessageInfo>>,
}

impl ListingCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        ListingCache {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
        }
    }

    pub(super) fn get(&self, dir: &Path, stamps: [SystemTime; 2]) -> Option<Arc<Listing>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let hit = entries
            .get(dir)
            .filter(|l| l.stamps == stamps && l.made.elapsed() < self.ttl)
            .cloned();
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub(super) fn put(&self, dir: &Path, listing: Listing, scanned_at: SystemTime) {
        let settled = listing
            .stamps
            .iter()
            .all(|t| scanned_at.duration_since(*t).is_ok_and(|d| d >= SETTLE));
        if !settled || self.max_entries == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(dir) {
            let ttl = self.ttl;
            entries.retain(|_, l| l.made.elapsed() < ttl);
            if entries.len() >= self.max_entries
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, l)| l.made)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(dir.to_owned(), Arc::new(listing));
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The block list on disk (`block_list_file`): written on every change,
//! read at start and on reload, so a restart does not lift blocks and an
//! operator's edit (`pop3d unblock`) is taken over.

use std::path::PathBuf;

use super::Guard;
use crate::security::blocklist;

impl Guard {
    fn block_list_path(&self) -> Option<PathBuf> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .block_list_file
            .clone()
    }

    pub(super) fn save_block_list(&self) {
        let Some(path) = self.block_list_path() else {
            return;
        };
        let now = self.clock.now_ms();
        let blocks = self.lock().blocked.clone();
        if let Err(e) = off_the_workers(|| blocklist::write(&path, &blocks, now)) {
            tracing::error!(file = %path.display(), "cannot save the block list: {e}");
        }
    }

    /// The blocks of the file replace those in memory (it holds every
    /// change this node made, so only an operator's edit differs).
    pub(super) fn load_block_list(&self) {
        let Some(path) = self.block_list_path() else {
            return;
        };
        let (blocks, bad) = match off_the_workers(|| blocklist::read(&path)) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(file = %path.display(), "cannot read the block list: {e}");
                return;
            }
        };
        for n in bad {
            tracing::warn!(file = %path.display(), "line {n}: not `address until-ms reason`; skipped");
        }
        let now = self.clock.now_ms();
        let mut st = self.lock();
        st.blocked = blocks
            .into_iter()
            .filter(|(_, b)| b.until_ms > now)
            .collect();
        self.metrics.blocked_addresses.set(st.blocked.len() as i64);
    }
}

/// Run blocking file work called from async code without stalling the
/// worker's other sessions: on a multi-threaded runtime the worker hands
/// its tasks to the others meanwhile (the write stays synchronous, so the
/// file is current when the caller goes on); elsewhere it simply runs.
fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

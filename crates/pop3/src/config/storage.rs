// SPDX-License-Identifier: AGPL-3.0-only
//! `[storage]`: which mail store serves the maildrops, and where.

use serde::{Deserialize, Serialize};

/// Which mail store serves the maildrops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Maildir,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Maildir location template: `%u` user, `%n` local part, `%d` domain,
    /// `%h` home directory from the passwd file, `%%` a percent sign.
    pub maildir: String,
    /// At QUIT, move messages retrieved with RETR to `cur/` with the seen
    /// flag, as Dovecot does (its `pop3_no_flag_updates = no`), so IMAP
    /// clients sharing the Maildir show them as read. Off, POP3 sessions
    /// rename nothing.
    pub mark_seen: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Maildir,
            maildir: "%h/Maildir".into(),
            mark_seen: true,
        }
    }
}

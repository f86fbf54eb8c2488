// SPDX-License-Identifier: AGPL-3.0-only
//! `[storage]`: which mail store serves the maildrops, and where; for the
//! PostgreSQL store, how to reach the database.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Dovecot's default `uidl_format`, and pop3d's: the UID and the UID
/// validity, each as 8 hex digits.
pub const DEFAULT_UIDL_FORMAT: &str = "%08Xu%08Xv";

/// Which mail store serves the maildrops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Maildir,
    /// Mail, the maildrop lease (and optionally users) in PostgreSQL, so
    /// that any number of nodes can serve the same mailboxes.
    Postgres,
}

/// What QUIT does with the messages DELE marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Remove them (RFC 1939).
    Expunge,
    /// Keep them, out of POP3's sight, for `trash_retention`; `pop3d
    /// restore` brings them back under their UIDLs.
    Trash,
}

/// TLS to the database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseTls {
    /// Plain TCP or a Unix socket.
    Off,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS or no connection; the certificate is verified.
    Require,
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
    /// Where each pop3d process keeps the liveness file its Maildir locks
    /// name (see `store::maildir::lock`): a directory every pop3d process
    /// sharing the Maildirs sees, `serve` and the administration commands
    /// alike. Not a private /tmp.
    pub lock_dir: PathBuf,
    /// The database (`backend = "postgres"`, or `[auth] backend =
    /// "postgres"`): `postgres://USER@HOST:PORT/DBNAME`, or the key=value
    /// form libpq accepts. A password here is refused: use `password_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the database password (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// How long to wait for a new database connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The server aborts any statement running longer (PostgreSQL's
    /// `statement_timeout`).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    pub tls: DatabaseTls,
    /// CA certificates (PEM) that sign the database server's certificate;
    /// the system's roots when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long a maildrop lease outlives its node's last heartbeat (sent
    /// every third of this). A node that dies holds its users' maildrops
    /// this long, unless it restarts first.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How the UIDL of a message seen for the first time is made (see
    /// `store::uidl`); strings once given never change.
    pub uidl_format: String,
    pub delete: DeleteMode,
    /// How long trashed messages are kept before a sweep purges them.
    #[serde(with = "humantime_serde")]
    pub trash_retention: Duration,
    /// A delivery over a user's quota is a temporary failure (LMTP `452
    /// 4.2.2`, `pop3d deliver` exit 75) rather than a permanent one (`552
    /// 5.2.2`, exit 77), as Dovecot's `quota_full_tempfail`.
    pub quota_full_tempfail: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Maildir,
            maildir: "%h/Maildir".into(),
            mark_seen: true,
            lock_dir: PathBuf::from("/run/pop3d"),
            url: None,
            password_file: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            tls: DatabaseTls::Off,
            ca_file: None,
            lease_ttl: Duration::from_secs(30),
            uidl_format: DEFAULT_UIDL_FORMAT.into(),
            delete: DeleteMode::Expunge,
            trash_retention: Duration::from_secs(30 * 86400),
            quota_full_tempfail: false,
        }
    }
}

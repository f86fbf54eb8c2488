// SPDX-License-Identifier: AGPL-3.0-only
//! Mail storage behind async traits: a [`MailStore`] opens a user's
//! [`Maildrop`] (a locked snapshot), which lists messages, streams them and
//! commits deletions in the UPDATE state (RFC 1939 §6).

pub mod maildir;
pub mod memory;
pub mod postgres;
pub mod uidl;

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncRead};

use crate::auth::UserRecord;

pub use maildir::MaildirStore;
pub use memory::MemoryStore;
pub use postgres::PostgresStore;

/// A process's start time in clock ticks since boot (Linux /proc): with
/// the pid, it names one run of a process (the Maildir lock's owner, a
/// node's run in database leases).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: skip past the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether an IO error says the file system has no room (or the user's
/// file-system quota is used up).
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The time as a store sees it (retention counts days): the security
/// layer's clock, so that a test moves both with one [`ManualClock`].
///
/// [`ManualClock`]: crate::security::ManualClock
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn crate::security::Clock>);

impl Clock {
    pub fn system() -> Clock {
        Clock(std::sync::Arc::new(crate::security::SystemClock))
    }

    pub fn new(clock: std::sync::Arc<dyn crate::security::Clock>) -> Clock {
        Clock(clock)
    }

    pub fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0.now_ms())
    }

    /// Seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.0.now_ms() / 1000
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// What STAT, LIST and UIDL need of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Octets as sent: CRLF line ends, before dot-stuffing.
    pub size: u64,
    /// The unique-id listing (RFC 1939 §7): 1-70 chars in 0x21-0x7E.
    pub uid: String,
}

/// Storage failures, each mapped to a response code by the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another session holds the maildrop (`[IN-USE]`).
    #[error("maildrop already locked")]
    InUse,
    /// The message vanished underneath the session.
    #[error("message no longer exists")]
    MessageGone,
    /// Retrying later may work (`[SYS/TEMP]`).
    #[error("temporary storage failure: {0}")]
    Temporary(String),
    /// An administrator must act (`[SYS/PERM]`).
    #[error("storage failure: {0}")]
    Permanent(String),
    /// A delivered message is over the configured size limit.
    #[error("message larger than the limit of {0} octets")]
    TooLarge(u64),
    /// A delivery would take the user over their quota.
    #[error("mailbox over quota")]
    OverQuota,
    /// The file system or database holding the mail has no room left
    /// (ENOSPC, EDQUOT, PostgreSQL's disk_full): temporary, and for the
    /// whole mail system rather than one mailbox (RFC 3463 X.3.1).
    #[error("mail storage full: {0}")]
    Full(String),
}

impl StoreError {
    /// Classify an IO error: missing permission is permanent, the rest
    /// temporary.
    pub fn from_io(context: &str, e: &std::io::Error) -> StoreError {
        if is_full(e) {
            return StoreError::Full(format!("{context}: {e}"));
        }
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                StoreError::Permanent(format!("{context}: {e}"))
            }
            _ => StoreError::Temporary(format!("{context}: {e}")),
        }
    }
}

/// What the UPDATE state asks of a maildrop, by 0-based index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Marked with DELE: remove.
    pub deleted: Vec<usize>,
    /// Retrieved whole with RETR and kept: mark as seen, where the store
    /// keeps such a mark (Maildir's `S` flag in `cur/`, for IMAP clients
    /// sharing the mailbox).
    pub seen: Vec<usize>,
}

/// The outcome of the UPDATE state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub removed: usize,
    /// Messages that could not be removed (the client hears `-ERR`).
    pub failed: usize,
}

/// A stream over one message's bytes as stored. Buffered, so the session
/// encodes straight from the store's buffer without another copy.
pub type MessageReader = Box<dyn AsyncBufRead + Send + Unpin>;

/// Where maildrops live.
#[async_trait]
pub trait MailStore: Send + Sync {
    /// Lock and snapshot the user's maildrop.
    async fn open(&self, user: &UserRecord) -> Result<Box<dyn Maildrop>, StoreError>;

    /// Store one new message for the user, atomically: it is complete in
    /// the maildrop or not there at all. Returns its size as POP3 reports it.
    async fn deliver(
        &self,
        user: &UserRecord,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError>;

    /// Whether the store is reachable now (for `/readyz`).
    async fn health(&self) -> Result<(), String>;

    /// Store a message moved from another server under the UIDL it had
    /// there (`pop3d import-pop3`), as atomically as a delivery. The
    /// caller holds the user's maildrop meanwhile, so that no session
    /// sees the mailbox half moved. Returns the POP3 size.
    async fn import(
        &self,
        user: &UserRecord,
        uidl: &str,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let _ = (user, uidl, message);
        Err(StoreError::Permanent("this store cannot import".into()))
    }

    /// Put back the messages `delete = "trash"` kept for the user, those
    /// trashed at or after `since` (all without it), under their old
    /// UIDLs. Returns how many came back.
    async fn restore(
        &self,
        user: &UserRecord,
        since: Option<std::time::SystemTime>,
    ) -> Result<usize, StoreError> {
        let _ = (user, since);
        Err(StoreError::Permanent("this store keeps no trash".into()))
    }

    /// Remove trashed messages older than `trash_retention`: every
    /// user's where the store can find them alone (a database), else
    /// those of `users`. Returns how many went.
    async fn purge_trash(&self, users: &[std::sync::Arc<UserRecord>]) -> Result<usize, StoreError> {
        let _ = users;
        Ok(0)
    }

    /// What `restore` would bring back (trashed at or after `since`):
    /// each message's UIDL and when it was trashed, oldest first.
    async fn trashed(
        &self,
        user: &UserRecord,
        since: Option<std::time::SystemTime>,
    ) -> Result<Vec<(String, std::time::SystemTime)>, StoreError> {
        let _ = (user, since);
        Err(StoreError::Permanent("this store keeps no trash".into()))
    }

    /// After a backup was restored: give every mailbox (of `users`, where
    /// the store cannot walk its own) a new UID validity and move its next
    /// UID well ahead, so that no UIDL made from now on can equal one made
    /// between the backup and the restore (a client that saw that one
    /// would never download the new message). Existing messages keep their
    /// UIDLs. Returns how many mailboxes were renewed.
    async fn after_restore(
        &self,
        users: &[std::sync::Arc<UserRecord>],
    ) -> Result<usize, StoreError> {
        let _ = users;
        Err(StoreError::Permanent(
            "this store keeps no UIDL state to renew".into(),
        ))
    }

    /// The store's own metrics in Prometheus text format (no `# EOF`),
    /// appended to the server's on `/metrics`.
    fn metrics_text(&self) -> Option<String> {
        None
    }

    /// What `/readyz` should say beside a healthy answer (a newer
    /// database schema this binary keeps working on).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A locked snapshot of one maildrop; dropping it releases the lock and
/// deletes nothing.
#[async_trait]
pub trait Maildrop: Send + Sync {
    /// The messages of the snapshot, in message-number order.
    fn messages(&self) -> &[MessageInfo];

    /// Stream message `index` (0-based).
    async fn open_message(&self, index: usize) -> Result<MessageReader, StoreError>;

    /// Apply the changes (removals first) and release the lock.
    async fn commit(self: Box<Self>, changes: Changes) -> Result<CommitReport, StoreError>;

    /// Release the lock and change nothing: the session ended without
    /// QUIT (the client went away, a timeout, a shutdown). An explicit,
    /// awaited step, because some locks cannot be released from `Drop` (a
    /// row in a database); dropping a maildrop unreleased stays the safety
    /// net.
    async fn release(self: Box<Self>) {}
}

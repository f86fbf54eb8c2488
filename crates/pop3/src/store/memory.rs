// SPDX-License-Identifier: AGPL-3.0-only
//! An in-memory [`MailStore`] for hosts that keep mail elsewhere, for
//! tests and for the embedding example. Same rules as Maildir: one session
//! per maildrop, snapshots, deletions only at commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Changes, CommitReport, MailStore, Maildrop, MessageInfo, MessageReader, StoreError};
use crate::auth::UserRecord;
use crate::protocol::crlf_size;

#[derive(Debug, Default)]
struct Mailbox {
    messages: Vec<(u32, Arc<[u8]>)>,
    next_uid: u32,
    locked: bool,
}

/// Mailboxes keyed by user name.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    boxes: Arc<Mutex<HashMap<String, Mailbox>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a message to a user's mailbox.
    pub fn add(&self, user: &str, message: impl Into<Vec<u8>>) {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        let mb = boxes.entry(user.to_owned()).or_default();
        mb.next_uid += 1;
        let uid = mb.next_uid;
        mb.messages.push((uid, Arc::from(message.into())));
    }

    /// Messages in a user's mailbox now.
    pub fn count(&self, user: &str) -> usize {
        let boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.get(user).map_or(0, |b| b.messages.len())
    }
}

struct MemoryDrop {
    store: MemoryStore,
    user: String,
    uids: Vec<u32>,
    bodies: Vec<Arc<[u8]>>,
    infos: Vec<MessageInfo>,
}

impl Drop for MemoryDrop {
    fn drop(&mut self) {
        let mut boxes = self.store.boxes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = boxes.get_mut(&self.user) {
            b.locked = false;
        }
    }
}

/// Lets a shared body be read as a stream without copying it.
struct Shared(Arc<[u8]>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[async_trait]
impl MailStore for MemoryStore {
    async fn open(&self, user: &UserRecord) -> Result<Box<dyn Maildrop>, StoreError> {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        let mb = boxes.entry(user.name.clone()).or_default();
        if mb.locked {
            return Err(StoreError::InUse);
        }
        mb.locked = true;
        let infos = mb
            .messages
            .iter()
            .map(|(uid, body)| MessageInfo {
                size: crlf_size(body),
                uid: format!("mem{uid}"),
            })
            .collect();
        Ok(Box::new(MemoryDrop {
            store: self.clone(),
            user: user.name.clone(),
            uids: mb.messages.iter().map(|(u, _)| *u).collect(),
            bodies: mb.messages.iter().map(|(_, b)| b.clone()).collect(),
            infos,
        }))
    }

    async fn deliver(
        &self,
        user: &UserRecord,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let mut body = Vec::new();
        message
            .read_to_end(&mut body)
            .await
            .map_err(|e| StoreError::Temporary(format!("reading the message: {e}")))?;
        let size = crlf_size(&body);
        self.add(&user.name, body);
        Ok(size)
    }

    async fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

#[async_trait]
impl Maildrop for MemoryDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.infos
    }

    async fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        let body = self.bodies.get(index).ok_or(StoreError::MessageGone)?;
        Ok(Box::new(std::io::Cursor::new(Shared(body.clone()))))
    }

    /// Removes what was deleted; keeps no seen marks.
    async fn commit(self: Box<Self>, changes: Changes) -> Result<CommitReport, StoreError> {
        let gone: Vec<u32> = changes
            .deleted
            .iter()
            .filter_map(|i| self.uids.get(*i).copied())
            .collect();
        let mut boxes = self.store.boxes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = boxes.get_mut(&self.user) {
            b.messages.retain(|(uid, _)| !gone.contains(uid));
        }
        Ok(CommitReport {
            removed: gone.len(),
            failed: 0,
        })
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! A session's maildrop: the snapshot a login listed, read in slices with
//! small messages read ahead, and QUIT's single statement that removes
//! the marked messages only if the lease is still this session's.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::body;
use super::lease::{Holder, Leases};
use super::sql::*;
use super::store_error;
use crate::db::{Database, DbError};
use crate::store::{
    Changes, Clock, CommitReport, Maildrop, MessageInfo, MessageReader, StoreError,
};

/// Free the lease `session` of this store holds on `mailbox`.
pub(super) async fn release(
    db: &Database,
    leases: &Leases,
    mailbox: i64,
    session: i64,
) -> Result<(), DbError> {
    db.timed(async {
        let client = db.client().await?;
        let stmt = client.prepare_cached(RELEASE).await?;
        client
            .execute(&stmt, &[&mailbox, &leases.node, &leases.boot, &session])
            .await?;
        Ok(())
    })
    .await
}

/// A leased snapshot of one mailbox.
pub struct PostgresDrop {
    pub(super) db: Arc<Database>,
    pub(super) leases: Arc<Leases>,
    pub(super) mailbox: i64,
    pub(super) holder: Holder,
    pub(super) messages: Vec<MessageInfo>,
    /// (message id, parts) per message.
    pub(super) bodies: Vec<(i64, i32)>,
    /// Small messages read ahead with an earlier one, by index.
    pub(super) ahead: std::sync::Mutex<HashMap<usize, body::Parts>>,
    /// The lease is still this session's to free.
    pub(super) open: bool,
    /// The store's [`COMMIT`].
    pub(super) commit_sql: Arc<str>,
    /// A retention period applies: QUIT records first retrievals.
    pub(super) record_retrieval: bool,
    pub(super) clock: Clock,
}

impl PostgresDrop {
    fn ahead(&self) -> std::sync::MutexGuard<'_, HashMap<usize, body::Parts>> {
        self.ahead.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn free(&mut self) -> Result<(), DbError> {
        self.open = false;
        self.leases.forget(self.holder.session);
        release(&self.db, &self.leases, self.mailbox, self.holder.session).await
    }
}

#[async_trait]
impl Maildrop for PostgresDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    async fn open_message(&self, index: usize) -> Result<MessageReader, StoreError> {
        let &(id, parts) = self.bodies.get(index).ok_or(StoreError::MessageGone)?;
        if let Some(bytes) = self.ahead().remove(&index) {
            return Ok(body::in_memory(bytes));
        }
        if self.messages[index].size > body::READ_AHEAD {
            return body::open(self.db.clone(), id, parts).await;
        }
        // This message and the small ones after it, in one statement.
        let mut batch = vec![(index, id)];
        let mut total = self.messages[index].size;
        for next in index + 1..self.messages.len() {
            total += self.messages[next].size;
            if total > body::READ_AHEAD {
                break;
            }
            batch.push((next, self.bodies[next].0));
        }
        let ids: Vec<i64> = batch.iter().map(|b| b.1).collect();
        let mut whole = body::fetch_many(&self.db, &ids)
            .await
            .map_err(store_error)?;
        let this = whole.remove(&id).ok_or(StoreError::MessageGone)?;
        let mut ahead = self.ahead();
        ahead.clear();
        for (i, id) in batch.into_iter().skip(1) {
            if let Some(bytes) = whole.remove(&id) {
                ahead.insert(i, bytes);
            }
        }
        Ok(body::in_memory(this))
    }

    async fn commit(mut self: Box<Self>, changes: Changes) -> Result<CommitReport, StoreError> {
        // The database keeps no seen flag: RETR and keep changes nothing.
        let id_of = |list: &[usize]| -> Vec<i64> {
            list.iter()
                .filter_map(|&i| self.bodies.get(i).map(|b| b.0))
                .collect()
        };
        let ids = id_of(&changes.deleted);
        let retrieved = if self.record_retrieval {
            id_of(&changes.seen)
        } else {
            Vec::new()
        };
        let now = self.clock.now();
        self.open = false;
        self.leases.forget(self.holder.session);
        let l = &self.leases;
        let (held, removed) = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                let lease: [&(dyn ToSql + Sync); 8] = [
                    &self.mailbox,
                    &l.node,
                    &l.boot,
                    &self.holder.session,
                    &self.holder.epoch,
                    &ids,
                    &now,
                    &retrieved,
                ];
                if ids.is_empty() && retrieved.is_empty() {
                    let stmt = client.prepare_cached(QUIT_UNCHANGED).await?;
                    let held = client.execute(&stmt, &lease[..5]).await?;
                    return Ok((held as i64, 0));
                }
                let stmt = client.prepare_cached(&self.commit_sql).await?;
                crate::crash_point!("postgres-quit-before-delete");
                let row = client.query_one(&stmt, &lease).await?;
                crate::crash_point!("postgres-quit-after-delete");
                Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
            })
            .await
            .map_err(store_error)?;
        if held == 0 {
            self.db.lease_lost();
            return Err(StoreError::Temporary(
                "the maildrop lease expired or was taken over; nothing was deleted".into(),
            ));
        }
        // A message someone else removed is gone all the same: not a
        // failure.
        Ok(CommitReport {
            removed: removed as usize,
            failed: 0,
        })
    }

    async fn release(mut self: Box<Self>) {
        if let Err(e) = self.free().await {
            tracing::warn!("cannot free a maildrop lease (it lapses by itself): {e}");
        }
    }
}

impl Drop for PostgresDrop {
    /// The safety net: stop renewing the lease, and free it if a runtime
    /// is there to do it.
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        self.leases.forget(self.holder.session);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (db, leases, mailbox, session) = (
            self.db.clone(),
            self.leases.clone(),
            self.mailbox,
            self.holder.session,
        );
        handle.spawn(async move {
            let _ = release(&db, &leases, mailbox, session).await;
        });
    }
}

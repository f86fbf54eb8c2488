// SPDX-License-Identifier: AGPL-3.0-only
//! Maildrops in PostgreSQL (schema: `db/migrations`), so that any number
//! of nodes serve the same mailboxes. A login is one statement that takes
//! the maildrop lease and lists the messages; QUIT is one statement that
//! checks the lease is still this session's, removes the marked messages,
//! updates the mailbox's counters and frees the lease, or changes nothing.
//! Delivery takes the next UID from the mailbox row inside the delivery's
//! transaction, so UIDs ascend and are never reused.

mod body;
pub mod lease;
mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio_postgres::types::ToSql;

use crate::auth::{Quota, UserRecord};
use crate::config::Pop3Config;
use crate::config::{DeleteMode, Expire};
use crate::db::{Database, DbError};
use crate::store::{
    Changes, Clock, CommitReport, MailStore, Maildrop, MessageInfo, MessageReader, StoreError,
};

pub use body::{PART, SLICE_PARTS};
use lease::{Holder, Leases};
use sql::*;

use crate::store::uidl::{UidlFormat, Var};

/// The database's failures as the session reports them: all of them may
/// pass (`[SYS/TEMP]`).
fn store_error(e: DbError) -> StoreError {
    match e {
        DbError::Full(why) => StoreError::Full(why),
        e => StoreError::Temporary(e.to_string()),
    }
}

/// Mailboxes are keyed by the login as matched (lower case).
fn mailbox_key(user: &UserRecord) -> String {
    user.name.to_lowercase()
}

/// Claim this process's node name (`server.node()`) before serving, as
/// the first login would: a name another running pop3d holds is refused.
pub async fn claim_node_of(config: &Pop3Config) -> Result<(), DbError> {
    let client = crate::db::migrate::connect(config).await?;
    lease::claim_node(
        &client,
        config.server.node(),
        &lease::this_run(),
        config.storage.lease_ttl,
    )
    .await
}

/// Mail in PostgreSQL.
pub struct PostgresStore {
    db: Arc<Database>,
    leases: Arc<Leases>,
    max_message_size: u64,
    /// [`ADD_MESSAGE`] with `uidl_format` in it, and with the default
    /// format (the fallback when the configured one meets a taken UIDL,
    /// as on Maildir).
    add_message: String,
    add_message_default: String,
    /// The format has `%m`: deliveries hash the header.
    md5_in_uidl: bool,
    /// [`COMMIT`] and [`EXPIRE`] with `storage.delete`'s removal in them.
    commit: Arc<str>,
    expire_sql: String,
    /// `storage.delete = "trash"`: removals stamp the time.
    trash: bool,
    /// `server.expire`, for users the user database sets none for.
    expire: Expire,
    trash_retention: std::time::Duration,
    clock: Clock,
}

impl PostgresStore {
    pub fn new(db: Arc<Database>, config: &Pop3Config) -> PostgresStore {
        let node = config.server.node().to_owned();
        let how = match config.storage.delete {
            DeleteMode::Expunge => EXPUNGE,
            DeleteMode::Trash => TRASH,
        };
        let remove = REMOVE.replace("{how}", how);
        let format = UidlFormat::parse(&config.storage.uidl_format).unwrap_or_default();
        PostgresStore {
            db,
            leases: Arc::new({
                let leases = Leases::new(node, config.storage.lease_ttl);
                if config.server.tool_run {
                    leases.for_tool()
                } else {
                    leases
                }
            }),
            max_message_size: config.server.max_message_size,
            add_message: ADD_MESSAGE.replace("{uidl}", &uidl_sql(&format)),
            add_message_default: ADD_MESSAGE.replace("{uidl}", &uidl_sql(&UidlFormat::default())),
            md5_in_uidl: format.uses(Var::HeaderMd5),
            commit: COMMIT.replace("{remove}", &remove).into(),
            expire_sql: EXPIRE.replace("{remove}", &remove),
            trash: config.storage.delete == DeleteMode::Trash,
            expire: config.server.expire,
            trash_retention: config.storage.trash_retention,
            clock: Clock::system(),
        }
    }

    /// Read the time from `clock` (tests of retention).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Store a message under a given UIDL (a migration keeps the UIDLs
    /// clients already know), or the Dovecot-style one its UID makes.
    /// Returns the UID and the POP3 size. With a `quota`, a message that
    /// would go over it is refused (`OverQuota`) and nothing is stored.
    pub async fn add(
        &self,
        login: &str,
        uidl: Option<&str>,
        quota: Option<Quota>,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(i64, u64), StoreError> {
        let login = login.to_lowercase();
        self.db
            .measured(async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                let id: i64 = tx
                    .query_one("SELECT nextval('message_ids')", &[])
                    .await?
                    .get(0);
                let Some(body::Written {
                    parts,
                    size,
                    header_md5,
                }) = body::write(&tx, id, self.max_message_size, message, self.md5_in_uidl).await?
                else {
                    return Ok(Err(StoreError::TooLarge(self.max_message_size)));
                };
                if let Some(quota) = quota {
                    let used = tx.query_opt(USAGE, &[&login]).await?.map_or((0, 0), |r| {
                        (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)
                    });
                    if quota.exceeded_by(used, size) {
                        return Ok(Err(StoreError::OverQuota));
                    }
                }
                let md5 = header_md5.map(|h| crate::hex::encode(&h));
                let mut sql = &self.add_message;
                for _ in 0..UIDL_TRIES {
                    let stmt = tx.prepare_cached(sql).await?;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                        [&login, &id, &(size as i64), &parts, &uidl, &md5];
                    if let Some(row) = tx.query_opt(&stmt, &params).await? {
                        tx.commit().await?;
                        return Ok(Ok((row.get::<_, i64>(0), size)));
                    }
                    let skipped: i64 = tx
                        .query_one(UNCOUNT, &[&login, &(size as i64)])
                        .await?
                        .get(0);
                    if let Some(uidl) = uidl {
                        // An import names its UIDL: there is nothing to
                        // fall back to, and the message is there already.
                        return Ok(Err(StoreError::Permanent(format!(
                            "UIDL {uidl:?} is already in {login}'s mailbox"
                        ))));
                    }
                    tracing::warn!(
                        user = %login,
                        uid = skipped,
                        "the UIDL made for a new message is taken; trying the next UID"
                    );
                    sql = &self.add_message_default;
                }
                Ok(Err(StoreError::Temporary(format!(
                    "no free UIDL for a new message in {login}'s mailbox"
                ))))
            })
            .await
            .map_err(store_error)?
    }

    /// Say which node holds a maildrop a login found in use (only then is
    /// it asked).
    async fn log_holder(&self, login: &str, mailbox: i64) {
        let holder = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                Ok(client
                    .query_opt(
                        "SELECT node, (expires_at - now())::text FROM maildrop_lease WHERE mailbox_id = $1",
                        &[&mailbox],
                    )
                    .await?)
            })
            .await;
        if let Ok(Some(row)) = holder {
            let (node, left): (String, Option<String>) = (row.get(0), row.get(1));
            tracing::info!(
                user = %login,
                holder = %node,
                lease_left = left.as_deref().unwrap_or("-"),
                "maildrop in use ([IN-USE]): leased by another session"
            );
        }
    }

    /// Take the lease for `session` and list the messages; remove those
    /// past `expire`.
    async fn acquire(
        &self,
        login: &str,
        session: i64,
        expire: Option<std::time::Duration>,
    ) -> Result<Box<dyn Maildrop>, StoreError> {
        let now = self.clock.now();
        let cutoff = expire.filter(|p| !p.is_zero()).map(|p| now - p);
        for _ in 0..3 {
            let rows = self
                .db
                .timed(async {
                    let client = self.db.client().await?;
                    let stmt = client.prepare_cached(ACQUIRE).await?;
                    let rows = client
                        .query(
                            &stmt,
                            &[
                                &login,
                                &self.leases.node,
                                &self.leases.boot,
                                &session,
                                &self.leases.ttl_secs(),
                                &cutoff,
                            ],
                        )
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| {
                            (
                                r.get(0),
                                r.get(1),
                                r.get(2),
                                r.get(3),
                                r.get(4),
                                r.get(5),
                                r.get(6),
                                r.get(7),
                                r.get(8),
                            )
                        })
                        .collect::<Vec<Listed>>())
                })
                .await
                .map_err(store_error)?;
            let Some(&(mailbox, epoch, ours, ..)) = rows.first() else {
                return Err(StoreError::Temporary("empty lease answer".into()));
            };
            let Some(mailbox) = mailbox else {
                // A user's first login: an empty mailbox, then the lease.
                self.create_mailbox(login).await.map_err(store_error)?;
                continue;
            };
            let Some(epoch) = epoch else {
                // Held by a session of this node that is over (its release
                // failed while the database was away): free it now rather
                // than at expiry.
                match ours {
                    Some(dead) if !self.leases.is_live(dead) => {
                        release(&self.db, &self.leases, mailbox, dead)
                            .await
                            .map_err(store_error)?;
                        continue;
                    }
                    _ => {
                        self.log_holder(login, mailbox).await;
                        return Err(StoreError::InUse);
                    }
                }
            };
            let mut messages = Vec::with_capacity(rows.len());
            let mut bodies = Vec::with_capacity(rows.len());
            let mut expired = Vec::new();
            for (_, _, _, id, _, uidl, size, parts, past) in rows {
                if let (Some(id), Some(uidl), Some(size), Some(parts)) = (id, uidl, size, parts) {
                    if past {
                        expired.push(id);
                        continue;
                    }
                    messages.push(MessageInfo {
                        size: size as u64,
                        uid: uidl,
                    });
                    bodies.push((id, parts));
                }
            }
            let holder = Holder { session, epoch };
            if !expired.is_empty() {
                self.remove_expired(mailbox, &holder, &expired, now).await?;
            }
            return Ok(Box::new(PostgresDrop {
                db: self.db.clone(),
                leases: self.leases.clone(),
                mailbox,
                holder,
                messages,
                bodies,
                ahead: std::sync::Mutex::new(HashMap::new()),
                open: true,
                commit_sql: self.commit.clone(),
                record_retrieval: cutoff.is_some(),
                clock: self.clock.clone(),
            }));
        }
        Err(StoreError::Temporary(
            "the maildrop lease kept changing hands during login".into(),
        ))
    }

    /// Remove messages past their retention period, under the lease.
    async fn remove_expired(
        &self,
        mailbox: i64,
        holder: &Holder,
        ids: &[i64],
        now: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        let l = &self.leases;
        let removed: i64 = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                let stmt = client.prepare_cached(&self.expire_sql).await?;
                let params: [&(dyn ToSql + Sync); 7] = [
                    &mailbox,
                    &l.node,
                    &l.boot,
                    &holder.session,
                    &holder.epoch,
                    &ids,
                    &now,
                ];
                // Only a removal into the trash takes the time.
                let params = if self.trash {
                    &params[..]
                } else {
                    &params[..6]
                };
                Ok(client.query_one(&stmt, params).await?.get(0))
            })
            .await
            .map_err(store_error)?;
        tracing::info!(
            mailbox,
            removed,
            "messages past their retention period removed at login"
        );
        Ok(())
    }

    /// Create the mailbox row if it is missing.
    async fn create_mailbox(&self, login: &str) -> Result<(), DbError> {
        self.db
            .timed(async {
                let client = self.db.client().await?;
                client.execute(CREATE_MAILBOX, &[&login]).await?;
                Ok(())
            })
            .await
    }
}

/// Free the lease `session` of this store holds on `mailbox`.
async fn release(
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

/// One row of a login's answer: mailbox, epoch won, this node's session
/// holding the lease, then the message (id, uid, uidl, size, slices, past
/// its retention period).
type Listed = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i32>,
    bool,
);

#[async_trait]
impl MailStore for PostgresStore {
    async fn open(&self, user: &UserRecord) -> Result<Box<dyn Maildrop>, StoreError> {
        self.leases.start(&self.db).await.map_err(store_error)?;
        let login = mailbox_key(user);
        let session = self.leases.next_session();
        // Renewed (and not taken for a dead session of this node) from
        // before the lease exists.
        self.leases.hold(session);
        let expire = user.settings.expire.unwrap_or(self.expire).period();
        let opened = self.acquire(&login, session, expire).await;
        if opened.is_err() {
            self.leases.forget(session);
        }
        opened
    }

    async fn deliver(
        &self,
        user: &UserRecord,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        self.add(&mailbox_key(user), None, user.settings.quota, message)
            .await
            .map(|(_, size)| size)
    }

    async fn import(
        &self,
        user: &UserRecord,
        uidl: &str,
        message: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        self.add(&mailbox_key(user), Some(uidl), None, message)
            .await
            .map(|(_, size)| size)
    }

    async fn health(&self) -> Result<(), String> {
        self.db.health().await
    }

    async fn restore(
        &self,
        user: &UserRecord,
        since: Option<std::time::SystemTime>,
    ) -> Result<usize, StoreError> {
        let login = mailbox_key(user);
        let since = since.unwrap_or(std::time::UNIX_EPOCH);
        let back: Option<i64> = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                let row = client.query_opt(RESTORE, &[&login, &since]).await?;
                Ok(row.map(|r| r.get(0)))
            })
            .await
            .map_err(store_error)?;
        Ok(back.unwrap_or(0) as usize)
    }

    async fn trashed(
        &self,
        user: &UserRecord,
        since: Option<std::time::SystemTime>,
    ) -> Result<Vec<(String, std::time::SystemTime)>, StoreError> {
        let login = mailbox_key(user);
        let since = since.unwrap_or(std::time::UNIX_EPOCH);
        let rows = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                Ok(client
                    .query(
                        "SELECT m.uidl, m.trashed_at FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
                          WHERE b.login = $1 AND m.trashed_at >= $2 ORDER BY m.trashed_at, m.uid",
                        &[&login, &since],
                    )
                    .await?)
            })
            .await
            .map_err(store_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// One statement for every mailbox: the database knows them all.
    async fn purge_trash(&self, _users: &[Arc<UserRecord>]) -> Result<usize, StoreError> {
        let before = self.clock.now() - self.trash_retention;
        let purged = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                Ok(client.execute(PURGE, &[&before]).await?)
            })
            .await
            .map_err(store_error)?;
        Ok(purged as usize)
    }

    async fn after_restore(&self, _users: &[Arc<UserRecord>]) -> Result<usize, StoreError> {
        let renewed = self
            .db
            .timed(async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                let n = tx.execute(AFTER_RESTORE, &[&AFTER_RESTORE_GAP]).await?;
                // GUIDs (`%g`) come from the sequence the dump restored too.
                tx.execute(
                    "SELECT setval('message_ids', nextval('message_ids') + $1)",
                    &[&AFTER_RESTORE_GAP],
                )
                .await?;
                tx.commit().await?;
                Ok(n)
            })
            .await
            .map_err(store_error)?;
        Ok(renewed as usize)
    }

    fn metrics_text(&self) -> Option<String> {
        Some(self.db.encode_metrics())
    }

    fn notes(&self) -> Vec<String> {
        self.db.notes()
    }
}

/// A leased snapshot of one mailbox.
pub struct PostgresDrop {
    db: Arc<Database>,
    leases: Arc<Leases>,
    mailbox: i64,
    holder: Holder,
    messages: Vec<MessageInfo>,
    /// (message id, parts) per message.
    bodies: Vec<(i64, i32)>,
    /// Small messages read ahead with an earlier one, by index.
    ahead: std::sync::Mutex<HashMap<usize, body::Parts>>,
    /// The lease is still this session's to free.
    open: bool,
    /// The store's [`COMMIT`].
    commit_sql: Arc<str>,
    /// A retention period applies: QUIT records first retrievals.
    record_retrieval: bool,
    clock: Clock,
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
                let row = client.query_one(&stmt, &lease).await?;
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

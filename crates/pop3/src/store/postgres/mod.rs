// SPDX-License-Identifier: AGPL-3.0-only
//! Maildrops in PostgreSQL (schema: `db/migrations`), so that any number
//! of nodes serve the same mailboxes. A login is one statement that takes
//! the maildrop lease and lists the messages; QUIT is one statement that
//! checks the lease is still this session's, removes the marked messages,
//! updates the mailbox's counters and frees the lease, or changes nothing.
//! Delivery takes the next UID from the mailbox row inside the delivery's
//! transaction, so UIDs ascend and are never reused.

mod body;
mod deliver;
pub mod lease;
mod maildrop;
mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio_postgres::types::ToSql;

use crate::auth::UserRecord;
use crate::config::Pop3Config;
use crate::config::{DeleteMode, Expire};
use crate::db::{Database, DbError};
use crate::store::{Clock, MailStore, Maildrop, MessageInfo, StoreError};

pub use body::{PART, SLICE_PARTS};
use lease::{Holder, Leases};
pub use maildrop::PostgresDrop;
use maildrop::release;
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
            commit: commit_statement().replace("{remove}", &remove).into(),
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

/// QUIT's statement. Under the `broken-epoch` feature, built only for the
/// chaos campaign's proof that its checker catches a broken build, the
/// lease is not checked: a QUIT from a node that lost its lease deletes
/// all the same.
fn commit_statement() -> String {
    if cfg!(feature = "broken-epoch") {
        let broken = COMMIT.replace(
            "WHERE mailbox_id = $1 AND node = $2 AND boot = $3 AND session = $4 AND epoch = $5\n       AND expires_at > now()",
            "WHERE mailbox_id = $1 AND $2::text IS NOT NULL AND $3::text IS NOT NULL AND $4::bigint IS NOT NULL AND $5::bigint IS NOT NULL",
        );
        assert_ne!(broken, COMMIT, "the lease check to break is not there");
        broken
    } else {
        COMMIT.to_owned()
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Delivery into PostgreSQL: the next UID taken from the mailbox row in
//! the delivery's own transaction, past any UIDL already taken.

use tokio::io::AsyncRead;

use super::sql::*;
use super::{PostgresStore, body, store_error};
use crate::auth::Quota;
use crate::db::DbError;
use crate::store::StoreError;

impl PostgresStore {
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
                        crate::crash_point!("postgres-deliver-before-commit");
                        tx.commit().await?;
                        crate::crash_point!("postgres-deliver-after-commit");
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

    /// Create the mailbox row if it is missing.
    pub(super) async fn create_mailbox(&self, login: &str) -> Result<(), DbError> {
        self.db
            .timed(async {
                let client = self.db.client().await?;
                client.execute(CREATE_MAILBOX, &[&login]).await?;
                Ok(())
            })
            .await
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Users in PostgreSQL: pop3d's own `users` table (managed with `pop3d
//! user`), or an existing table through `[auth] password_query`, written
//! in the style of Dovecot's: the login is always the bound parameter
//! `$1`, never pasted into the SQL. Secrets are the same `{SCHEME}secret`
//! strings as in a passwd file, so every scheme and mechanism works alike.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::app_passwords::AppPasswords;
use super::decoys::Decoys;
use super::sql_row::UserRow;
use super::{Scheme, StoredSecret, UserDb, UserDbError, UserRecord};
use crate::db::{Database, DbError};

const OWN_TABLE: &str = "SELECT login AS user, secret AS password, \
            expire, login_delay, quota_rule, allow_nets, disabled, refuse_mail FROM users \
     WHERE login = lower($1)";

pub struct PostgresUsers {
    db: Arc<Database>,
    query: String,
    decoys: std::sync::Mutex<Decoys>,
    /// The user query was seen to return `user` and `password`.
    columns_ok: std::sync::atomic::AtomicBool,
    /// Changes announced on [`CHANGES_CHANNEL`] (the auth cache's
    /// generation), followed from the first time it is asked for.
    changes: Arc<std::sync::atomic::AtomicU64>,
    following: std::sync::Once,
    /// The `app_passwords` table, for pop3d's own users.
    app_passwords: Option<Arc<AppPasswords>>,
}

/// The channel `pop3d user` announces changes to pop3d's own table on.
pub const CHANGES_CHANNEL: &str = "pop3d_users";

impl PostgresUsers {
    pub fn new(db: Arc<Database>, password_query: Option<&str>) -> PostgresUsers {
        PostgresUsers {
            query: password_query.unwrap_or(OWN_TABLE).to_owned(),
            // Before any lookup: ARGON2ID for pop3d's own table (`pop3d
            // user add`'s scheme), SHA512-CRYPT for a `password_query`
            // (what Dovecot and Postfixadmin store).
            decoys: Decoys::new(if password_query.is_some() {
                Scheme::Sha512Crypt
            } else {
                Scheme::Argon2id
            }),
            columns_ok: std::sync::atomic::AtomicBool::new(false),
            changes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            following: std::sync::Once::new(),
            app_passwords: password_query
                .is_none()
                .then(|| Arc::new(AppPasswords::in_table(db.clone()))),
            db,
        }
    }
}

/// A row of the user query, as [`UserRow`] reads rows.
struct PgRow<'a>(&'a tokio_postgres::Row);

impl UserRow for PgRow<'_> {
    fn text(&self, column: &str) -> Option<Option<String>> {
        self.0
            .columns()
            .iter()
            .any(|c| c.name() == column)
            .then(|| self.0.try_get::<_, Option<String>>(column).ok().flatten())
    }

    fn flag(&self, column: &str) -> bool {
        self.0.try_get::<_, bool>(column).unwrap_or(false)
    }
}

fn unavailable(e: DbError) -> UserDbError {
    UserDbError::Unavailable(e.to_string())
}

#[async_trait]
impl UserDb for PostgresUsers {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        let row = self
            .db
            .timed(async {
                let client = self.db.client().await?;
                let stmt = client.prepare_cached(&self.query).await?;
                Ok(client.query_opt(&stmt, &[&name]).await?)
            })
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        super::sql_row::record(name, &PgRow(&row), &self.decoys).map(|r| Some(Arc::new(r)))
    }

    /// The database answers, and the user query returns the columns a
    /// login needs (checked once it has passed).
    async fn health(&self) -> Result<(), String> {
        self.db.health().await?;
        if self.columns_ok.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let stmt = async {
            let client = self.db.client().await?;
            Ok::<_, DbError>(client.prepare_cached(&self.query).await?)
        }
        .await
        .map_err(|e| format!("auth.password_query: {e}"))?;
        for wanted in ["user", "password"] {
            if !stmt.columns().iter().any(|c| c.name() == wanted) {
                return Err(format!(
                    "auth.password_query returns no `{wanted}` column (e.g. SELECT username AS user, password FROM ...)"
                ));
            }
        }
        self.columns_ok
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Changes to pop3d's own table, announced by `pop3d user` (a table
    /// behind `password_query` announces nothing: its changes apply as
    /// cached entries expire, as with Dovecot).
    async fn generation(&self) -> u64 {
        self.following.call_once(|| {
            self.db
                .follow_notifications(CHANGES_CHANNEL, Arc::downgrade(&self.changes))
        });
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn app_passwords(&self) -> Option<Arc<AppPasswords>> {
        self.app_passwords.clone()
    }

    /// An unknown user costs one check in the scheme most of the users
    /// found so far have (see `Decoys`), like a wrong password does.
    fn decoy(&self) -> Option<StoredSecret> {
        Decoys::decoy(&self.decoys)
    }
}

/// One row of `pop3d user list`.
#[derive(Debug, Clone)]
pub struct UserListing {
    pub login: String,
    pub scheme: String,
    pub disabled: bool,
    /// Deliveries refused too (`disable --no-mail`).
    pub refuse_mail: bool,
    pub messages: i64,
    pub octets: i64,
}

/// What `pop3d user` does to pop3d's own `users` table.
pub struct UserAdmin<'a, C: GenericClient> {
    pub client: &'a C,
}

impl<C: GenericClient + Sync> UserAdmin<'_, C> {
    /// Tell every running pop3d that users changed (their auth caches
    /// forget what they held).
    async fn announce(&self, changed: bool) -> Result<bool, DbError> {
        if changed {
            self.client
                .execute(&format!("NOTIFY {CHANGES_CHANNEL}"), &[])
                .await?;
        }
        Ok(changed)
    }

    /// Add a user with a `{SCHEME}secret` field; false if the login exists.
    pub async fn add(&self, login: &str, secret: &str) -> Result<bool, DbError> {
        let n = self
            .client
            .execute(
                "INSERT INTO users (login, secret) VALUES (lower($1), $2) ON CONFLICT DO NOTHING",
                &[&login, &secret],
            )
            .await?;
        if n == 1 {
            self.client
                .execute(
                    "INSERT INTO mailboxes (login) VALUES (lower($1)) ON CONFLICT DO NOTHING",
                    &[&login],
                )
                .await?;
        }
        self.announce(n == 1).await
    }

    /// Replace the secret; false if there is no such user.
    pub async fn set_secret(&self, login: &str, secret: &str) -> Result<bool, DbError> {
        let n = self
            .client
            .execute(
                "UPDATE users SET secret = $2 WHERE login = lower($1)",
                &[&login, &secret],
            )
            .await?;
        self.announce(n == 1).await
    }

    /// Disable logins (and with `refuse_mail` deliveries), or enable both.
    pub async fn set_disabled(
        &self,
        login: &str,
        disabled: bool,
        refuse_mail: bool,
    ) -> Result<bool, DbError> {
        let n = self
            .client
            .execute(
                "UPDATE users SET disabled = $2, refuse_mail = $3 WHERE login = lower($1)",
                &[&login, &disabled, &refuse_mail],
            )
            .await?;
        self.announce(n == 1).await
    }

    /// Remove the user and, with `mail`, the mailbox and its messages.
    pub async fn delete(&self, login: &str, mail: bool) -> Result<bool, DbError> {
        let n = self
            .client
            .execute("DELETE FROM users WHERE login = lower($1)", &[&login])
            .await?;
        if mail {
            self.client
                .execute("DELETE FROM mailboxes WHERE login = lower($1)", &[&login])
                .await?;
        }
        self.announce(n == 1).await
    }

    pub async fn list(&self) -> Result<Vec<UserListing>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT u.login, substring(u.secret FROM '^\\{([^}]*)\\}'), u.disabled, u.refuse_mail, \
                        coalesce(b.msg_count, 0), coalesce(b.octets, 0) \
                   FROM users u LEFT JOIN mailboxes b ON b.login = u.login \
                  ORDER BY u.login",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| UserListing {
                login: r.get(0),
                scheme: r
                    .get::<_, Option<String>>(1)
                    .unwrap_or_else(|| "CRYPT".into()),
                disabled: r.get(2),
                refuse_mail: r.get(3),
                messages: r.get(4),
                octets: r.get(5),
            })
            .collect())
    }
}

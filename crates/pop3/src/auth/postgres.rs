// SPDX-License-Identifier: AGPL-3.0-only
//! Users in PostgreSQL: pop3d's own `users` table (managed with `pop3d
//! user`), or an existing table through `[auth] password_query`, written
//! in the style of Dovecot's: the login is always the bound parameter
//! `$1`, never pasted into the SQL. Secrets are the same `{SCHEME}secret`
//! strings as in a passwd file, so every scheme and mechanism works alike.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::{Scheme, StoredSecret, UserDb, UserDbError, UserRecord, UserSettings, hash_password};
use crate::db::{Database, DbError};

const OWN_TABLE: &str = "SELECT login AS user, secret AS password, \
            expire, login_delay, quota_rule FROM users \
     WHERE login = lower($1) AND NOT disabled";

/// Columns a user query may return beside `user` and `password`.
const SETTING_COLUMNS: [&str; 3] = ["expire", "login_delay", "quota_rule"];

pub struct PostgresUsers {
    db: Arc<Database>,
    query: String,
    /// Made at the first unknown user (`pop3d deliver` never needs one).
    decoy: std::sync::OnceLock<Option<StoredSecret>>,
}

impl PostgresUsers {
    pub fn new(db: Arc<Database>, password_query: Option<&str>) -> PostgresUsers {
        PostgresUsers {
            db,
            query: password_query.unwrap_or(OWN_TABLE).to_owned(),
            decoy: std::sync::OnceLock::new(),
        }
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
        let user: Option<String> = row.try_get("user").ok().flatten();
        let field: Option<String> = row.try_get("password").map_err(|e| {
            UserDbError::Unavailable(format!("the user query returns no password column: {e}"))
        })?;
        let secret = match field.as_deref().map(StoredSecret::parse) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                // Never the secret itself.
                tracing::warn!(user = %name, "unusable stored secret: {e}");
                None
            }
            None => None,
        };
        let mut settings = UserSettings::default();
        for column in SETTING_COLUMNS {
            let value: Option<String> = row.try_get(column).ok().flatten();
            if let Some(value) = value.filter(|v| !v.is_empty())
                && let Err(reason) = settings.set(column, &value)
            {
                // The user may still log in; the server's defaults apply.
                tracing::warn!(user = %name, "unusable setting in the user database: {reason}");
            }
        }
        Ok(Some(Arc::new(UserRecord {
            name: user.unwrap_or_else(|| name.to_owned()),
            secret,
            uid: None,
            gid: None,
            home: None,
            extra: String::new(),
            settings,
        })))
    }

    async fn health(&self) -> Result<(), String> {
        self.db.health().await
    }

    /// An unknown user costs one ARGON2ID check, `pop3d user add`'s
    /// scheme, like a wrong password does.
    fn decoy(&self) -> Option<StoredSecret> {
        self.decoy
            .get_or_init(|| {
                hash_password(Scheme::Argon2id, "decoy never matches")
                    .ok()
                    .and_then(|f| StoredSecret::parse(&f).ok())
            })
            .clone()
    }
}

/// One row of `pop3d user list`.
#[derive(Debug, Clone)]
pub struct UserListing {
    pub login: String,
    pub scheme: String,
    pub disabled: bool,
    pub messages: i64,
    pub octets: i64,
}

/// What `pop3d user` does to pop3d's own `users` table.
pub struct UserAdmin<'a, C: GenericClient> {
    pub client: &'a C,
}

impl<C: GenericClient + Sync> UserAdmin<'_, C> {
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
        Ok(n == 1)
    }

    /// Replace the secret; false if there is no such user.
    pub async fn set_secret(&self, login: &str, secret: &str) -> Result<bool, DbError> {
        Ok(self
            .client
            .execute(
                "UPDATE users SET secret = $2 WHERE login = lower($1)",
                &[&login, &secret],
            )
            .await?
            == 1)
    }

    pub async fn set_disabled(&self, login: &str, disabled: bool) -> Result<bool, DbError> {
        Ok(self
            .client
            .execute(
                "UPDATE users SET disabled = $2 WHERE login = lower($1)",
                &[&login, &disabled],
            )
            .await?
            == 1)
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
        Ok(n == 1)
    }

    pub async fn list(&self) -> Result<Vec<UserListing>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT u.login, substring(u.secret FROM '^\\{([^}]*)\\}'), u.disabled, \
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
                messages: r.get(3),
                octets: r.get(4),
            })
            .collect())
    }
}

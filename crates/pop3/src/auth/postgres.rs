// SPDX-License-Identifier: AGPL-3.0-only
//! Users in PostgreSQL: pop3d's own `users` table (managed with `pop3d
//! user`), or an existing table through `[auth] password_query`, written
//! in the style of Dovecot's: the login is always the bound parameter
//! `$1`, never pasted into the SQL. Secrets are the same `{SCHEME}secret`
//! strings as in a passwd file, so every scheme and mechanism works alike.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::{
    Account, Scheme, StoredSecret, UserDb, UserDbError, UserRecord, UserSettings, hash_password,
};
use crate::db::{Database, DbError};

const OWN_TABLE: &str = "SELECT login AS user, secret AS password, \
            expire, login_delay, quota_rule, allow_nets, disabled, refuse_mail FROM users \
     WHERE login = lower($1)";

/// Columns a user query may return beside `user` and `password`.
const SETTING_COLUMNS: [&str; 4] = ["expire", "login_delay", "quota_rule", "allow_nets"];

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
}

/// The channel `pop3d user` announces changes to pop3d's own table on.
pub const CHANGES_CHANNEL: &str = "pop3d_users";

/// The schemes of the secrets lookups have found, and a decoy in the most
/// common one, so that an unknown user costs what a known one does.
/// Before any lookup: ARGON2ID for pop3d's own table (`pop3d user add`'s
/// scheme), SHA512-CRYPT for a `password_query` (what Dovecot and
/// Postfixadmin store).
struct Decoys {
    seen: std::collections::HashMap<&'static str, (u64, Scheme)>,
    guess: Scheme,
    /// Made on demand (`pop3d deliver` never needs one).
    made: Option<(Scheme, StoredSecret)>,
}

impl Decoys {
    fn leading(&self) -> Scheme {
        self.seen
            .values()
            .max_by_key(|(n, s)| (*n, s.name()))
            .map_or(self.guess, |(_, s)| *s)
    }
}

impl PostgresUsers {
    pub fn new(db: Arc<Database>, password_query: Option<&str>) -> PostgresUsers {
        PostgresUsers {
            db,
            query: password_query.unwrap_or(OWN_TABLE).to_owned(),
            decoys: std::sync::Mutex::new(Decoys {
                seen: std::collections::HashMap::new(),
                guess: if password_query.is_some() {
                    Scheme::Sha512Crypt
                } else {
                    Scheme::Argon2id
                },
                made: None,
            }),
            columns_ok: std::sync::atomic::AtomicBool::new(false),
            changes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            following: std::sync::Once::new(),
        }
    }

    fn decoys(&self) -> std::sync::MutexGuard<'_, Decoys> {
        self.decoys.lock().unwrap_or_else(|p| p.into_inner())
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
        // The name the database spells: one mailbox whatever case the
        // client typed (or a char(n) column padded). Without it, `ALICE`
        // and `alice` would be two Maildirs.
        let user: String = match row.try_get::<_, Option<String>>("user") {
            Ok(Some(u)) if !u.trim_end().is_empty() => u.trim_end().to_owned(),
            Ok(_) => {
                return Err(UserDbError::Unavailable(
                    "the user query returned an empty user column".into(),
                ));
            }
            Err(_) => {
                return Err(UserDbError::Unavailable(
                    "auth.password_query returns no `user` column: it must return the canonical login (e.g. SELECT username AS user, password ...)".into(),
                ));
            }
        };
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
        if let Some(s) = &secret {
            let mut decoys = self.decoys();
            decoys
                .seen
                .entry(s.scheme().name())
                .or_insert((0, s.scheme()))
                .0 += 1;
        }
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
            name: user,
            secret,
            uid: None,
            gid: None,
            home: None,
            extra: String::new(),
            settings,
            // pop3d's own table says; a password_query filters inactive
            // users itself.
            account: match (
                row.try_get::<_, bool>("disabled").unwrap_or(false),
                row.try_get::<_, bool>("refuse_mail").unwrap_or(false),
            ) {
                (false, _) => Account::Active,
                (true, false) => Account::LoginDisabled,
                (true, true) => Account::Closed,
            },
        })))
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

    /// An unknown user costs one check in the scheme most of the users
    /// found so far have (see `Decoys`), like a wrong password does.
    fn decoy(&self) -> Option<StoredSecret> {
        let mut decoys = self.decoys();
        let scheme = decoys.leading();
        if let Some((made, secret)) = &decoys.made
            && *made == scheme
        {
            return Some(secret.clone());
        }
        let mut noise = [0u8; 16];
        getrandom::fill(&mut noise).ok()?;
        let secret = hash_password(scheme, &crate::hex::encode(&noise))
            .ok()
            .and_then(|f| StoredSecret::parse(&f).ok())?;
        decoys.made = Some((scheme, secret.clone()));
        Some(secret)
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

// SPDX-License-Identifier: AGPL-3.0-only
//! What a SQL user query's row means, whichever database returned it
//! (PostgreSQL, MySQL/MariaDB): the canonical `user`, the `password`
//! (`{SCHEME}secret`, or a bare crypt string as Postfixadmin stores), the
//! per-user columns pop3d knows, and pop3d's own account flags.

use std::sync::Mutex;

use super::decoys::Decoys;
use super::{Account, StoredSecret, UserDbError, UserRecord, UserSettings};

/// Columns a user query may return beside `user` and `password`.
pub(crate) const SETTING_COLUMNS: [&str; 5] = [
    "expire",
    "login_delay",
    "quota_rule",
    "allow_nets",
    "require_app_passwords",
];

/// One row, as the database client reads it.
pub(crate) trait UserRow {
    /// A column as text: None when the query has no such column,
    /// `Some(None)` for NULL.
    fn text(&self, column: &str) -> Option<Option<String>>;

    /// A yes/no column (pop3d's own `disabled`, `refuse_mail`); false
    /// when absent.
    fn flag(&self, column: &str) -> bool;
}

/// The user `name` (as typed) as `row` describes it.
pub(crate) fn record(
    name: &str,
    row: &dyn UserRow,
    decoys: &Mutex<Decoys>,
) -> Result<UserRecord, UserDbError> {
    // The name the database spells: one mailbox whatever case the client
    // typed (or a char(n) column padded). Without it, `ALICE` and `alice`
    // would be two Maildirs.
    let user = match row.text("user") {
        Some(Some(u)) if !u.trim_end().is_empty() => u.trim_end().to_owned(),
        Some(_) => {
            return Err(UserDbError::Unavailable(
                "the user query returned an empty user column".into(),
            ));
        }
        None => {
            return Err(UserDbError::Unavailable(
                "auth.password_query returns no `user` column: it must return the canonical login (e.g. SELECT username AS user, password ...)".into(),
            ));
        }
    };
    let Some(field) = row.text("password") else {
        return Err(UserDbError::Unavailable(
            "auth.password_query returns no `password` column".into(),
        ));
    };
    let secret = match field
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(StoredSecret::parse)
    {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            // Never the secret itself.
            tracing::warn!(user = %name, "unusable stored secret: {e}");
            None
        }
        None => None,
    };
    if let Some(s) = &secret {
        Decoys::saw(decoys, s.scheme());
    }
    let mut settings = UserSettings::default();
    for column in SETTING_COLUMNS {
        let value = row.text(column).flatten();
        if let Some(value) = value.filter(|v| !v.is_empty())
            && let Err(reason) = settings.set(column, &value)
        {
            // The user may still log in; the server's defaults apply (an
            // unreadable allow_nets allows nowhere, see `set`).
            tracing::warn!(user = %name, "unusable setting in the user database: {reason}");
        }
    }
    Ok(UserRecord {
        name: user,
        secret,
        uid: None,
        gid: None,
        home: None,
        extra: String::new(),
        settings,
        // pop3d's own table says; a password_query filters inactive users
        // itself.
        account: match (row.flag("disabled"), row.flag("refuse_mail")) {
            (false, _) => Account::Active,
            (true, false) => Account::LoginDisabled,
            (true, true) => Account::Closed,
        },
        dn: None,
    })
}

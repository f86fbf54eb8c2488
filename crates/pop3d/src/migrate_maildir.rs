// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d migrate-maildir`: copy a Maildir + passwd-file installation into
//! PostgreSQL. Every message keeps the UIDL clients know (whether pop3d
//! made it or took it from a `dovecot-uidlist`) and its size; a message
//! whose UIDL the mailbox already has is skipped, so a second run, or one
//! after an interruption, copies nothing twice. The Maildirs are only
//! read; each is locked while it is copied, as a POP3 session would.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;

use pop3::auth::{PasswdFile, UserRecord};
use pop3::config::{Pop3Config, StorageBackend, UserBackend};
use pop3::db::{Database, migrate};
use pop3::store::{MailStore, MaildirStore, PostgresStore, StoreError};

use crate::tool::{self, Copied, EX_CONFIG, EX_NOUSER, EX_UNAVAILABLE, EX_USAGE};

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    tool::fail("migrate-maildir", code, message)
}

pub async fn run(
    old: &Pop3Config,
    new: &Pop3Config,
    only: Option<&str>,
    dry_run: bool,
) -> ExitCode {
    if old.storage.backend != StorageBackend::Maildir || old.auth.backend != UserBackend::PasswdFile
    {
        return fail(
            EX_USAGE,
            "--from must name a Maildir and passwd-file configuration",
        );
    }
    if new.storage.backend != StorageBackend::Postgres {
        return fail(
            EX_USAGE,
            "--config must have storage.backend = \"postgres\"",
        );
    }
    let passwd = match PasswdFile::open(&old.auth.passwd_file) {
        Ok(p) => p.table(),
        Err(e) => {
            return fail(
                EX_CONFIG,
                format!("{}: {e}", old.auth.passwd_file.display()),
            );
        }
    };
    let users: Vec<Arc<UserRecord>> = match only {
        Some(name) => match passwd.get(name) {
            Some(u) => vec![u],
            None => {
                return fail(
                    EX_NOUSER,
                    format!("{name}: not in {}", old.auth.passwd_file.display()),
                );
            }
        },
        None => passwd.users(),
    };
    let client = match migrate::connect(new).await {
        Ok(c) => c,
        Err(e) => return fail(EX_UNAVAILABLE, e),
    };
    if let Err(e) = migrate::check(&client).await {
        return fail(EX_CONFIG, e);
    }
    let database = match Database::from_config(new) {
        Ok(d) => Arc::new(d),
        Err(e) => return fail(EX_CONFIG, e),
    };
    let target = PostgresStore::new(database, new);
    let source = MaildirStore::from_config(old);
    // Users move only into pop3d's own table.
    let copy_users = new.auth.backend == UserBackend::Postgres && new.auth.password_query.is_none();

    let bar = tool::progress(users.len() as u64, "users");
    let mut summary = Copied::default();
    let (mut added, mut present) = (0, 0);
    for user in &users {
        bar.set_message(user.name.clone());
        if copy_users {
            match copy_user(&client, user, dry_run).await {
                Ok(Some(true)) => added += 1,
                Ok(Some(false)) => present += 1,
                // No password to copy: the mail still moves.
                Ok(None) => bar.suspend(|| {
                    eprintln!(
                        "pop3d: {}: no password in the passwd file; user not added",
                        user.name
                    )
                }),
                Err(e) => {
                    bar.suspend(|| eprintln!("pop3d: {}: {e}", user.name));
                    summary.failed.push(user.name.clone());
                    bar.inc(1);
                    continue;
                }
            }
        }
        if let Err(e) = copy_mail(&client, &source, &target, user, dry_run, &mut summary).await {
            bar.suspend(|| eprintln!("pop3d: {}: {e}", user.name));
            summary.failed.push(user.name.clone());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut more = Vec::new();
    if copy_users {
        let verb = if dry_run { "to add" } else { "added" };
        more.push(format!("users: {added} {verb}, {present} already there"));
    }
    summary.report(dry_run, users.len(), &more)
}

/// Add the user with the passwd file's secret; false if present already,
/// None if the user has no secret to copy.
async fn copy_user(
    client: &pop3::db::Client,
    user: &UserRecord,
    dry_run: bool,
) -> Result<Option<bool>, String> {
    let Some(secret) = &user.secret else {
        return Ok(None);
    };
    let admin = pop3::auth::postgres::UserAdmin { client };
    if dry_run {
        let exists = client
            .query_opt("SELECT 1 FROM users WHERE login = lower($1)", &[&user.name])
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Some(exists.is_none()));
    }
    admin
        .add(&user.name, &secret.to_field())
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The UIDLs the database has for `user` already.
async fn known_uidls(
    client: &pop3::db::Client,
    user: &UserRecord,
) -> Result<HashSet<String>, String> {
    Ok(client
        .query(
            "SELECT m.uidl FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
             WHERE b.login = lower($1)",
            &[&user.name],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn copy_mail(
    client: &pop3::db::Client,
    source: &MaildirStore,
    target: &PostgresStore,
    user: &UserRecord,
    dry_run: bool,
    summary: &mut Copied,
) -> Result<(), String> {
    // A dry run only reads: no lock, no index written into the source.
    if dry_run {
        let infos = source.preview(user).await.map_err(|e| e.to_string())?;
        let known = known_uidls(client, user).await?;
        for info in infos {
            if known.contains(&info.uid) {
                summary.present += 1;
            } else {
                summary.messages += 1;
                summary.octets += info.size;
            }
        }
        return Ok(());
    }
    let maildrop = match source.open(user).await {
        Ok(m) => m,
        Err(StoreError::InUse) => {
            return Err("the Maildir is in use by a POP3 session; run again later".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let known = known_uidls(client, user).await?;
    let mut result = Ok(());
    for (i, info) in maildrop.messages().iter().enumerate() {
        if known.contains(&info.uid) {
            summary.present += 1;
            continue;
        }
        let copied = async {
            let mut reader = maildrop.open_message(i).await?;
            target
                .add(&user.name, Some(&info.uid), None, &mut reader)
                .await
        }
        .await;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("migrate-after-message");
        match copied {
            Ok((_, size)) => {
                if size != info.size {
                    tracing::warn!(
                        user = %user.name,
                        uidl = %info.uid,
                        listed = info.size,
                        stored = size,
                        "size differs from the Maildir's listing"
                    );
                }
                summary.messages += 1;
                summary.octets += size;
            }
            // Removed by another program since the listing: nothing to copy.
            Err(StoreError::MessageGone) => {}
            Err(e) => {
                result = Err(format!("message {}: {e}", info.uid));
                break;
            }
        }
    }
    maildrop.release().await;
    result
}

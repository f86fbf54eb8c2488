// SPDX-License-Identifier: AGPL-3.0-only
//! Subcommands on one user's mailbox: `pop3d restore` (the trash, back
//! under the maildrop lock) and `pop3d deliver` (a message from an MTA,
//! answered in sysexits codes).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pop3::auth::UserRecord;
use pop3::config::Pop3Config;
use pop3::setup::Backends;
use pop3::store::StoreError;

use crate::runtime;
use crate::tool::{EX_CONFIG, EX_NOPERM, EX_NOUSER, EX_TEMPFAIL, EX_USAGE};

/// `--since`: a time (RFC 3339) or an age.
fn parse_since(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let age = humantime::parse_duration(text)
        .map_err(|_| format!("--since {text:?}: neither a time (RFC 3339) nor an age (\"7d\")"))?;
    std::time::SystemTime::now()
        .checked_sub(age)
        .ok_or_else(|| format!("--since {text:?}: too long ago"))
}

/// Load the configuration, build its backends and look up `user`, then
/// `run`: the common part of the commands that act for one user (sysexits
/// codes: 78 bad configuration, 67 unknown user, 75 anything that may
/// pass).
fn for_user(
    path: &Path,
    user: &str,
    command: &str,
    run: impl AsyncFnOnce(&Pop3Config, Backends, Arc<UserRecord>) -> ExitCode,
) -> ExitCode {
    let mut config = match Pop3Config::load(path) {
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("pop3d: error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    config.server.tool_run = true;
    if let Err(why) = pop3::auth::check_name(user) {
        eprintln!(
            "pop3d: {command}: {:?}: {why}",
            user.escape_debug().to_string()
        );
        return ExitCode::from(EX_USAGE);
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(_) => return ExitCode::from(EX_TEMPFAIL),
    };
    runtime.block_on(async move {
        // The same backends `serve` builds from this configuration.
        let backends = match Backends::from_config(&config) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("pop3d: {command}: {e}");
                return ExitCode::from(EX_TEMPFAIL);
            }
        };
        let record = match backends.users.lookup(user).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                eprintln!("pop3d: {command}: unknown user {user:?}");
                return ExitCode::from(EX_NOUSER);
            }
            Err(e) => {
                eprintln!("pop3d: {command}: {e}");
                return ExitCode::from(EX_TEMPFAIL);
            }
        };
        run(&config, backends, record).await
    })
}

/// `pop3d restore`; `look` changes nothing (`--dry-run`), `list` also
/// names each message (`--list`).
pub(crate) fn restore(
    path: &Path,
    user: &str,
    since: Option<&str>,
    look: bool,
    list: bool,
) -> ExitCode {
    let since = match since.map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pop3d: restore: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    for_user(path, user, "restore", async |_, backends, record| {
        if look {
            return match backends.store.trashed(&record, since).await {
                Ok(found) => {
                    if list {
                        for (uidl, when) in &found {
                            println!(
                                "{uidl}\ttrashed {}",
                                humantime::format_rfc3339_seconds(*when)
                            );
                        }
                    }
                    println!("would restore {} messages for {}", found.len(), record.name);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pop3d: restore: {}: {e}", record.name);
                    ExitCode::from(EX_TEMPFAIL)
                }
            };
        }
        match backends.store.restore(&record, since).await {
            Ok(n) => {
                println!("restored {n} messages for {}", record.name);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pop3d: restore: {}: {e}", record.name);
                ExitCode::from(EX_TEMPFAIL)
            }
        }
    })
}

pub(crate) fn deliver(path: &Path, user: &str) -> ExitCode {
    for_user(
        path,
        user,
        "deliver",
        async |config, Backends { store, .. }, record| {
            // Closed to mail (`user disable --no-mail`): as unknown.
            if !record.account.receives_mail() {
                eprintln!("pop3d: deliver: {}: the account takes no mail", record.name);
                return ExitCode::from(EX_NOUSER);
            }
            let mut stdin = tokio::io::stdin();
            match store.deliver(&record, &mut stdin).await {
                Ok(size) => {
                    tracing::info!(user = %record.name, size, "delivered");
                    ExitCode::SUCCESS
                }
                Err(e @ StoreError::TooLarge(_)) => {
                    eprintln!("pop3d: deliver: {e}");
                    ExitCode::from(EX_NOPERM)
                }
                Err(e @ StoreError::OverQuota) => {
                    eprintln!("pop3d: deliver: {}: {e}", record.name);
                    let tempfail = config.storage.quota_full_tempfail;
                    ExitCode::from(if tempfail { EX_TEMPFAIL } else { EX_NOPERM })
                }
                Err(e) => {
                    eprintln!("pop3d: deliver: {e}");
                    ExitCode::from(EX_TEMPFAIL)
                }
            }
        },
    )
}

// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d app-password add|list|revoke`: app passwords in
//! `auth.app_passwords_file`, which a running pop3d follows as it changes,
//! or, with the users in pop3d's PostgreSQL table, in `app_passwords`.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use pop3::auth::app_password_table;
use pop3::auth::app_passwords::{self, AppPassword};
use pop3::config::{Pop3Config, UserBackend};

use crate::admin::ConfigFile;
use crate::tool::{EX_CONFIG, EX_NOUSER, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE, fail};

#[derive(Subcommand)]
pub enum AppPasswordCommand {
    /// Make an app password for a user: printed once, alone on the last
    /// line of the output; only a keyed hash of it is kept.
    Add {
        #[command(flatten)]
        file: ConfigFile,
        #[arg(long)]
        user: String,
        /// What it is for (letters, digits, . _ - @), unique per user.
        #[arg(long, default_value = "app")]
        label: String,
        /// How long it works ("90d", "12h"); for ever when not given.
        #[arg(long)]
        expires: Option<String>,
        /// The only networks it works from (CIDR, comma-separated).
        #[arg(long, value_delimiter = ',')]
        allow: Vec<String>,
    },
    /// List app passwords: user, label, id, creation, expiry, networks,
    /// last use (time and address).
    List {
        #[command(flatten)]
        file: ConfigFile,
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one app password, by label or id.
    Revoke {
        #[command(flatten)]
        file: ConfigFile,
        #[arg(long)]
        user: String,
        #[arg(long, required_unless_present = "id")]
        label: Option<String>,
        #[arg(long, conflicts_with = "label")]
        id: Option<String>,
    },
}

impl AppPasswordCommand {
    pub fn config(&self) -> &std::path::Path {
        match self {
            AppPasswordCommand::Add { file, .. }
            | AppPasswordCommand::List { file, .. }
            | AppPasswordCommand::Revoke { file, .. } => &file.config,
        }
    }
}

const TOOL: &str = "app-password";

fn when(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Where the app passwords are: the file, or pop3d's PostgreSQL table.
enum Store {
    File(std::path::PathBuf, Vec<AppPassword>),
    Table(pop3::db::Client),
}

async fn store(config: &Pop3Config) -> Result<Store, ExitCode> {
    if let Some(path) = config.auth.app_passwords_file.clone() {
        let (entries, warnings) =
            app_passwords::read(&path).map_err(|e| fail(TOOL, EX_CONFIG, e))?;
        // A line skipped here is gone from the file after `add` or
        // `revoke` rewrites it: say so.
        for w in warnings {
            eprintln!("pop3d: warning: {}: {w} (skipped)", path.display());
        }
        return Ok(Store::File(path, entries));
    }
    if config.auth.backend == UserBackend::Postgres && config.auth.password_query.is_none() {
        let client = pop3::db::migrate::connect(config)
            .await
            .map_err(|e| fail(TOOL, EX_UNAVAILABLE, e))?;
        return Ok(Store::Table(client));
    }
    Err(fail(
        TOOL,
        EX_CONFIG,
        "app passwords have nowhere to live: set auth.app_passwords_file (or keep the users in pop3d's PostgreSQL table)",
    ))
}

pub async fn run(config: &Pop3Config, command: AppPasswordCommand) -> ExitCode {
    let store = match store(config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let unavailable = |e: pop3::db::DbError| fail(TOOL, EX_UNAVAILABLE, e);
    match command {
        AppPasswordCommand::Add {
            user,
            label,
            expires,
            allow,
            ..
        } => {
            let expires = match expires
                .as_deref()
                .map(humantime::parse_duration)
                .transpose()
            {
                Ok(d) => d.map(|d| app_passwords::now() + d.as_secs()),
                Err(e) => return fail(TOOL, EX_USAGE, format!("--expires: {e}")),
            };
            let networks = if allow.is_empty() {
                None
            } else {
                match pop3::auth::settings::parse_allow_nets(&allow.join(",")) {
                    Ok(n) => Some(n),
                    Err(e) => return fail(TOOL, EX_USAGE, format!("--allow: {e}")),
                }
            };
            // The user as the user database spells it: the login checks
            // app passwords against that name.
            let backends = match pop3::setup::Backends::from_config(config) {
                Ok(b) => b,
                Err(e) => return fail(TOOL, EX_UNAVAILABLE, e),
            };
            let canonical = match backends.users.lookup(&user).await {
                Ok(Some(u)) => u.name.clone(),
                Ok(None) => return fail(TOOL, EX_NOUSER, format!("{user}: no such user")),
                Err(e) => return fail(TOOL, EX_UNAVAILABLE, e),
            };
            let taken = || {
                fail(
                    TOOL,
                    EX_USAGE,
                    format!("{canonical} already has an app password labelled {label:?}"),
                )
            };
            let (entry, password) =
                match AppPassword::generate(&canonical, &label, expires, networks) {
                    Ok(made) => made,
                    Err(e) => return fail(TOOL, EX_USAGE, e),
                };
            match store {
                Store::File(path, mut entries) => {
                    if entries
                        .iter()
                        .any(|e| e.user == canonical && e.label == label)
                    {
                        return taken();
                    }
                    entries.push(entry.clone());
                    if let Err(e) = app_passwords::write(&path, &entries) {
                        return fail(TOOL, EX_TEMPFAIL, format!("{}: {e}", path.display()));
                    }
                }
                Store::Table(client) => match app_password_table::insert(&client, &entry).await {
                    Ok(true) => {}
                    Ok(false) => return taken(),
                    Err(e) => return unavailable(e),
                },
            }
            println!(
                "app password {:?} ({}) for {canonical}{}; shown once:",
                label,
                entry.id,
                entry
                    .expires
                    .map_or(String::new(), |e| format!(", until {}", when(e)))
            );
            println!("{password}");
            ExitCode::SUCCESS
        }
        AppPasswordCommand::List { user, .. } => {
            let rows = match store {
                Store::File(path, entries) => {
                    let used = app_passwords::read_last_use(&path);
                    entries
                        .into_iter()
                        .filter(|e| user.as_deref().is_none_or(|u| e.user == u))
                        .map(|e| {
                            let last = used.get(&(e.user.clone(), e.id.clone())).copied();
                            (e, last)
                        })
                        .collect()
                }
                Store::Table(client) => {
                    match app_password_table::list(&client, user.as_deref()).await {
                        Ok(rows) => rows,
                        Err(e) => return unavailable(e),
                    }
                }
            };
            println!("user\tlabel\tid\tcreated\texpires\tnetworks\tlast use");
            for (e, last) in rows {
                let nets = e.networks.as_ref().map_or("any".into(), |n| {
                    n.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let last =
                    last.map_or("never".into(), |(at, ip)| format!("{} from {ip}", when(at)));
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{nets}\t{last}",
                    e.user,
                    e.label,
                    e.id,
                    when(e.created),
                    e.expires.map_or("never".into(), when)
                );
            }
            ExitCode::SUCCESS
        }
        AppPasswordCommand::Revoke {
            user, label, id, ..
        } => {
            let revoked = match store {
                Store::File(path, entries) => {
                    let gone = |e: &AppPassword| {
                        e.user == user
                            && (label.as_deref() == Some(e.label.as_str())
                                || id.as_deref() == Some(e.id.as_str()))
                    };
                    let kept: Vec<AppPassword> =
                        entries.iter().filter(|e| !gone(e)).cloned().collect();
                    if kept.len() < entries.len()
                        && let Err(e) = app_passwords::write(&path, &kept)
                    {
                        return fail(TOOL, EX_TEMPFAIL, format!("{}: {e}", path.display()));
                    }
                    kept.len() < entries.len()
                }
                Store::Table(client) => {
                    match app_password_table::revoke(
                        &client,
                        &user,
                        label.as_deref(),
                        id.as_deref(),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(e) => return unavailable(e),
                    }
                }
            };
            if !revoked {
                return fail(TOOL, EX_USAGE, format!("{user} has no such app password"));
            }
            eprintln!("pop3d: {user}: app password revoked");
            ExitCode::SUCCESS
        }
    }
}

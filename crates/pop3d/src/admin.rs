// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d db` and `pop3d user`: the schema and pop3d's own users in
//! PostgreSQL.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pop3::auth::postgres::UserAdmin;
use pop3::auth::{BreachedPasswords, Scheme, hash_password};
use pop3::config::{Pop3Config, UserBackend};
use pop3::db::migrate;

use crate::tool::fail_at_once as fail;

/// `--config FILE`, after the subcommand.
#[derive(Args)]
pub struct ConfigFile {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Subcommand)]
pub enum DbCommand {
    /// Apply the schema migrations this pop3d carries that the database
    /// lacks (safe to run on several nodes at once).
    Migrate(ConfigFile),
    /// Show the migrations applied and pending. Exits 1 when some are
    /// pending.
    Status(ConfigFile),
    /// Run once after restoring a backup (of the database, or of
    /// Maildirs): every mailbox gets a new UID validity and its next UID
    /// moves far ahead, so no new message can get a UIDL a client saw
    /// between the backup and the restore. Existing UIDLs stay.
    AfterRestore {
        #[command(flatten)]
        file: ConfigFile,
        /// Maildir: only this user (default: every user of the passwd
        /// file). PostgreSQL renews every mailbox at once.
        #[arg(long)]
        user: Option<String>,
    },
}

impl DbCommand {
    pub fn config(&self) -> &Path {
        match self {
            DbCommand::Migrate(f) | DbCommand::Status(f) => &f.config,
            DbCommand::AfterRestore { file, .. } => &file.config,
        }
    }
}

/// `pop3d db after-restore`, on either store.
pub async fn after_restore(config: &Pop3Config, user: Option<&str>) -> ExitCode {
    let backends = match pop3::setup::Backends::from_config(config) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let users = match user {
        Some(name) => match backends.users.lookup(name).await {
            Ok(Some(u)) => vec![u],
            Ok(None) => return fail(format!("{name}: no such user")),
            Err(e) => return fail(e),
        },
        None => backends.users.all().await,
    };
    match backends.store.after_restore(&users).await {
        Ok(n) => {
            println!("renewed the UID validity of {n} mailboxes");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin (or asked for on a
    /// terminal), never from the command line.
    Add {
        #[command(flatten)]
        file: ConfigFile,
        name: String,
        /// The scheme the password is stored in (see hash-password).
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
    },
    /// Set a user's password, read as for `add`.
    Passwd {
        #[command(flatten)]
        file: ConfigFile,
        name: String,
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
    },
    /// Refuse the user's logins until `enable`; mail is still delivered
    /// (nothing bounces) unless --no-mail.
    Disable {
        #[command(flatten)]
        file: ConfigFile,
        name: String,
        /// Refuse deliveries too, as to an unknown user (550 5.1.1).
        #[arg(long)]
        no_mail: bool,
    },
    /// Allow a disabled user again.
    Enable {
        #[command(flatten)]
        file: ConfigFile,
        name: String,
    },
    /// Remove the user, and with it the mailbox and all its mail unless
    /// --keep-mail.
    Delete {
        #[command(flatten)]
        file: ConfigFile,
        name: String,
        #[arg(long)]
        keep_mail: bool,
    },
    /// List users with their scheme, state and mailbox size.
    List(ConfigFile),
}

impl UserCommand {
    /// The user the command is about.
    fn name(&self) -> Option<&str> {
        match self {
            UserCommand::Add { name, .. }
            | UserCommand::Passwd { name, .. }
            | UserCommand::Disable { name, .. }
            | UserCommand::Enable { name, .. }
            | UserCommand::Delete { name, .. } => Some(name),
            UserCommand::List(_) => None,
        }
    }
}

impl UserCommand {
    pub fn config(&self) -> &Path {
        match self {
            UserCommand::Add { file, .. }
            | UserCommand::Passwd { file, .. }
            | UserCommand::Disable { file, .. }
            | UserCommand::Enable { file, .. }
            | UserCommand::Delete { file, .. }
            | UserCommand::List(file) => &file.config,
        }
    }
}

pub async fn db(config: &Pop3Config, command: DbCommand) -> ExitCode {
    match command {
        DbCommand::AfterRestore { user, .. } => after_restore(config, user.as_deref()).await,
        DbCommand::Migrate(_) => schema(config, true).await,
        DbCommand::Status(_) => schema(config, false).await,
    }
}

/// `db migrate` (`apply`), or `db status`.
async fn schema(config: &Pop3Config, apply: bool) -> ExitCode {
    if !pop3::db::configured(config) {
        return fail("the configuration uses no database (storage.backend and auth.backend)");
    }
    let mut client = match migrate::connect(config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match apply {
        true => match migrate::migrate(&mut client).await {
            Ok(applied) if applied.is_empty() => {
                println!("schema is up to date (version {})", migrate::latest());
                ExitCode::SUCCESS
            }
            Ok(applied) => {
                for m in applied {
                    println!("applied {:04} {}", m.version, m.name);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        false => {
            let state = match migrate::state(&client).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            for a in &state.applied {
                let newer = if a.version > migrate::latest() {
                    if a.compatible {
                        " (newer than this pop3d; compatible)"
                    } else {
                        " (newer than this pop3d; NOT compatible with it)"
                    }
                } else {
                    ""
                };
                println!("{:04} {:<30} applied {}{newer}", a.version, a.name, a.at);
            }
            let pending = state.pending();
            for m in &pending {
                println!("{:04} {:<30} pending", m.version, m.name);
            }
            match state.fit() {
                Ok(pop3::db::Fit::Current) => {
                    println!("schema is up to date (version {})", migrate::latest());
                    ExitCode::SUCCESS
                }
                Ok(pop3::db::Fit::NewerCompatible(note)) => {
                    println!("{note}");
                    ExitCode::SUCCESS
                }
                Err(e @ pop3::db::DbError::BinaryTooOld { .. }) => {
                    println!("{e}");
                    ExitCode::FAILURE
                }
                Err(_) => {
                    println!("{} pending: run `pop3d db migrate`", pending.len());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

pub async fn user(config: &Pop3Config, command: UserCommand) -> ExitCode {
    if config.auth.backend != UserBackend::Postgres {
        return fail("auth.backend is not \"postgres\": users are in the passwd file");
    }
    if config.auth.password_query.is_some() {
        return fail("users come from auth.password_query: manage them in that table");
    }
    if let Some(Err(why)) = command.name().map(pop3::auth::check_name) {
        return fail(format!("{:?}: {why}", command.name().unwrap_or_default()));
    }
    let client = match migrate::connect(config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = migrate::check(&client).await {
        return fail(e);
    }
    let breached = match pop3::services::breached_passwords(config) {
        Ok(list) => list,
        Err(e) => return fail(e),
    };
    let admin = UserAdmin { client: &client };
    let done = |r: Result<bool, pop3::db::DbError>, name: &str, what: &str| match r {
        Ok(true) => {
            eprintln!("pop3d: {name}: {what}");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(format!("{name}: no such user")),
        Err(e) => fail(e),
    };
    match command {
        UserCommand::Add { name, scheme, .. } => {
            let secret = match read_secret(&scheme, breached.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match admin.add(&name, &secret).await {
                Ok(true) => {
                    eprintln!("pop3d: {name}: added");
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(format!("{name}: already exists (use `pop3d user passwd`)")),
                Err(e) => fail(e),
            }
        }
        UserCommand::Passwd { name, scheme, .. } => {
            let secret = match read_secret(&scheme, breached.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            done(
                admin.set_secret(&name, &secret).await,
                &name,
                "password set",
            )
        }
        UserCommand::Disable { name, no_mail, .. } => done(
            admin.set_disabled(&name, true, no_mail).await,
            &name,
            if no_mail {
                "disabled; deliveries refused"
            } else {
                "disabled; mail is still delivered"
            },
        ),
        UserCommand::Enable { name, .. } => done(
            admin.set_disabled(&name, false, false).await,
            &name,
            "enabled",
        ),
        UserCommand::Delete {
            name, keep_mail, ..
        } => done(
            admin.delete(&name, !keep_mail).await,
            &name,
            if keep_mail {
                "deleted (mail kept)"
            } else {
                "deleted with its mail"
            },
        ),
        UserCommand::List(_) => match admin.list().await {
            Ok(users) => {
                for u in users {
                    println!(
                        "{}\t{}\t{}\t{} messages\t{} octets",
                        u.login,
                        u.scheme,
                        match (u.disabled, u.refuse_mail) {
                            (false, _) => "enabled",
                            (true, false) => "disabled",
                            (true, true) => "disabled, no mail",
                        },
                        u.messages,
                        u.octets
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

/// A password from stdin (asked for without echo on a terminal), hashed
/// in `scheme`: what `hash-password` prints and `user add|passwd` store.
/// Usage errors (unknown scheme, empty password, a password on
/// `breached`) exit 2.
pub fn read_secret(
    scheme: &str,
    breached: Option<&BreachedPasswords>,
) -> Result<zeroize::Zeroizing<String>, ExitCode> {
    let Some(scheme) = Scheme::from_name(scheme) else {
        let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
        eprintln!(
            "pop3d: unknown scheme {scheme:?}; choose one of {}",
            names.join(", ")
        );
        return Err(ExitCode::from(2));
    };
    let password = read_password().map_err(|e| fail(format!("cannot read the password: {e}")))?;
    if password.is_empty() {
        eprintln!("pop3d: empty password");
        return Err(ExitCode::from(2));
    }
    if let Some(list) = breached {
        match list.contains(password.as_bytes()) {
            Ok(false) => {}
            Ok(true) => {
                eprintln!(
                    "pop3d: that password is on the list of breached passwords ({}); choose another",
                    list.path().display()
                );
                return Err(ExitCode::from(2));
            }
            Err(e) => return Err(fail(format!("{}: {e}", list.path().display()))),
        }
    }
    hash_password(scheme, &password)
        .map(zeroize::Zeroizing::new)
        .map_err(fail)
}

/// One line from stdin without its line end; on a terminal, asked for
/// with echo off.
fn read_password() -> std::io::Result<zeroize::Zeroizing<String>> {
    let mut input = zeroize::Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        eprint!("Password: ");
        let echo_off = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        let read = std::io::stdin().lock().read_line(&mut input);
        if echo_off {
            let _ = std::process::Command::new("stty")
                .arg("echo")
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        eprintln!();
        read?;
    } else {
        std::io::stdin().read_to_string(&mut input)?;
    }
    let line = input.lines().next().unwrap_or("").to_owned();
    Ok(zeroize::Zeroizing::new(line))
}

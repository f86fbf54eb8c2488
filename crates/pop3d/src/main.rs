// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d`: the POP3 daemon. `serve` runs it, `check-config` validates a
//! file and prints the effective configuration, `hash-password` makes a
//! passwd-file secret, `deliver` stores a message from an MTA; `db`,
//! `user` and `migrate-maildir` look after the PostgreSQL backend.

mod admin;
mod import_pop3;
mod migrate_maildir;
mod operate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use pop3::auth::UserRecord;
use pop3::config::Pop3Config;
use pop3::setup::Backends;
use pop3::store::StoreError;
use pop3::{Pop3SessionManager, Server};

/// sysexits(3) codes an MTA understands.
const EX_USAGE: u8 = 64;
const EX_NOUSER: u8 = 67;
const EX_CONFIG: u8 = 78;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;

#[derive(Parser)]
#[command(
    name = "pop3d",
    version,
    about = "A POP3 server (RFC 1939) over Maildir, with TLS",
    long_about = "A POP3 server (RFC 1939, 2449, 2595, 5034) that serves Maildir mailboxes \
                  to users from a Dovecot-style passwd file, or mail and users in PostgreSQL \
                  shared by any number of nodes, configured by one TOML file.\n\n\
                  Signals while serving: SIGHUP reloads the configuration, certificates and \
                  passwd file for new sessions; SIGTERM and SIGINT shut down gracefully."
)]
struct Cli {
    /// Log filter: a level ("info", "debug") or per target ("pop3=debug,info").
    #[arg(long, global = true, default_value = "info", env = "POP3D_LOG")]
    log: String,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "POP3D_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT; SIGHUP reloads.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file (and the passwd and TLS files it
    /// names) and print the effective configuration. Exits 2 on errors.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a password on stdin and print a passwd-file secret for it.
    HashPassword {
        /// PLAIN, CRYPT, SHA512-CRYPT, SHA256-CRYPT, ARGON2I, ARGON2ID,
        /// BLF-CRYPT, SSHA, SSHA256, SSHA512 or CRAM-MD5.
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
    },
    /// Read one message on stdin and store it in the user's Maildir
    /// atomically. Exit codes follow sysexits(3): 0 delivered, 67 unknown
    /// user, 75 temporary failure (the MTA retries), 77 refused (too
    /// large, or over the user's quota; 75 for that with
    /// storage.quota_full_tempfail), 78 bad configuration.
    Deliver {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The recipient, as named in the passwd file.
        #[arg(long, short)]
        user: String,
    },
    /// Put back messages that storage.delete = "trash" kept, under their
    /// old UIDLs (the user's clients download them again only if they
    /// forgot them). Exit codes: 0 done, 67 unknown user, 75 store
    /// unavailable, 78 bad configuration.
    Restore {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        user: String,
        /// Only messages trashed at or after this time: RFC 3339
        /// ("2026-11-30T08:00:00Z") or an age ("36h", "7d").
        #[arg(long)]
        since: Option<String>,
        /// List what would come back (UIDL and when it was trashed), and
        /// change nothing.
        #[arg(long)]
        list: bool,
        /// Say how many messages would come back, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The PostgreSQL schema: apply migrations, or show them.
    Db {
        #[command(subcommand)]
        command: admin::DbCommand,
    },
    /// pop3d's own users in PostgreSQL (auth.backend = "postgres").
    User {
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// List the addresses blocked, with reason and time left: this node's
    /// block list file and every node's shared state.
    Blocks(admin::ConfigFile),
    /// Lift the block of an address (its IPv6 network), on every node
    /// sharing the shared state at once, and in the block list file.
    Unblock {
        #[command(flatten)]
        file: admin::ConfigFile,
        address: String,
    },
    /// The PostgreSQL maildrop leases: list them, or end one.
    Lease {
        #[command(subcommand)]
        command: operate::LeaseCommand,
    },
    /// Copy a Maildir + passwd-file installation into PostgreSQL, keeping
    /// every UIDL and size; a second run copies nothing twice. The
    /// Maildirs are left as they are.
    MigrateMaildir {
        /// The configuration the mail is in now (Maildir, passwd file).
        #[arg(long)]
        from: PathBuf,
        /// The configuration with storage.backend = "postgres".
        #[arg(long, short)]
        config: PathBuf,
        /// Copy this user only.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        user: Option<String>,
        /// Copy every user in the passwd file.
        #[arg(long)]
        all: bool,
        /// Count what would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move mailboxes in from another POP3 server over TLS, each message
    /// under the UIDL it had there, so clients that keep mail on the
    /// server download nothing again. Never deletes on the old server;
    /// a second run fetches only what is missing. Exit 0 done, 1 some
    /// users failed (run again to resume), 2 bad arguments.
    ImportPop3 {
        /// The TOML configuration file of this server (the store to fill).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        request: import_pop3::Request,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Restore {
            config,
            user,
            since,
            list,
            dry_run,
        } => restore(&config, &user, since.as_deref(), list || dry_run, list),
        Command::CheckConfig { config } => check_config(config),
        Command::HashPassword { scheme } => hash(&scheme),
        Command::Deliver { config, user } => deliver(&config, &user),
        Command::Db { command } => {
            let path = command.config().to_path_buf();
            with_config(&path, |c| async move { admin::db(&c, command).await })
        }
        Command::User { command } => {
            let path = command.config().to_path_buf();
            with_config(&path, |c| async move { admin::user(&c, command).await })
        }
        Command::Blocks(file) => {
            with_config(&file.config, |c| async move { operate::blocks(&c).await })
        }
        Command::Unblock { file, address } => with_config(&file.config, |c| async move {
            operate::unblock(&c, &address).await
        }),
        Command::Lease { command } => {
            let path = command.config().to_path_buf();
            with_config(&path, |c| async move { operate::leases(&c, command).await })
        }
        Command::MigrateMaildir {
            from,
            config,
            user,
            all: _,
            dry_run,
        } => {
            let old = match load(&from) {
                Ok(c) => c,
                Err(code) => return code,
            };
            with_config(&config, |new| async move {
                migrate_maildir::run(&old, &new, user.as_deref(), dry_run).await
            })
        }
        Command::ImportPop3 { config, request } => {
            with_config(&config, |config| import_pop3::run(config, request))
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let targets: Targets = filter.parse().unwrap_or_else(|e| {
        eprintln!("pop3d: bad --log filter {filter:?}: {e}; using info");
        Targets::new().with_default(tracing::Level::INFO)
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .with(targets)
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_current_span(false))
            .with(targets)
            .init(),
    }
}

fn load(path: &Path) -> Result<Pop3Config, ExitCode> {
    match Pop3Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("pop3d: warning: {}: {w}", path.display());
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("pop3d: error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Load the configuration and run `work` on a runtime.
fn with_config<F, Fut>(path: &Path, work: F) -> ExitCode
where
    F: FnOnce(Pop3Config) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let mut config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Not a node: leases under a name of its own, no node name claimed.
    config.server.tool_run = true;
    match runtime() {
        Ok(r) => r.block_on(work(config)),
        Err(code) => code,
    }
}

fn check_config(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Things only the filesystem (and the servers) can tell: the passwd
    // file, the database's schema, Redis, TLS files. A server that does
    // not answer is no fault of the file (a node starts without it and
    // becomes ready when it answers): a warning, and the file passes.
    if pop3::db::configured(&config) {
        let checked = runtime().map(|r| r.block_on(pop3::db::migrate::connect_and_check(&config)));
        match checked {
            Ok(Ok(pop3::db::Fit::Current)) => {
                eprintln!("pop3d: database: reachable, schema up to date")
            }
            Ok(Ok(pop3::db::Fit::NewerCompatible(note))) => eprintln!("pop3d: database: {note}"),
            Ok(Err(pop3::db::DbError::Unavailable(why))) => eprintln!(
                "pop3d: warning: {}: key `storage.url`: the database does not answer now ({why}); serve starts anyway and becomes ready when it does",
                path.display()
            ),
            Ok(Err(e)) => {
                eprintln!("pop3d: error: {}: key `storage.url`: {e}", path.display());
                return ExitCode::from(2);
            }
            Err(code) => return code,
        }
    }
    if let Ok(Some(info)) = pop3::security::shared::connection_info(&config.security) {
        let answered = runtime().map(|r| r.block_on(pop3::security::shared::ping(info)));
        match answered {
            Ok(Ok(())) => eprintln!("pop3d: shared state (Redis): reachable"),
            Ok(Err(why)) => eprintln!(
                "pop3d: warning: {}: key `security.shared_state`: Redis does not answer now ({why}); each node counts alone until it does",
                path.display()
            ),
            Err(code) => return code,
        }
    }
    match (config.auth.backend == pop3::config::UserBackend::PasswdFile)
        .then(|| pop3::auth::PasswdFile::open(&config.auth.passwd_file))
    {
        None => {}
        Some(Ok(users)) => {
            let table = users.table();
            for w in &table.warnings {
                eprintln!(
                    "pop3d: warning: {}: {w} (skipped)",
                    config.auth.passwd_file.display()
                );
            }
            eprintln!(
                "pop3d: {}: {} users",
                config.auth.passwd_file.display(),
                table.len()
            );
        }
        Some(Err(e)) => {
            eprintln!(
                "pop3d: error: {}: key `auth.passwd_file`: {e}",
                path.display()
            );
            return ExitCode::from(2);
        }
    }
    if let Some(Err(e)) = config.tls.as_ref().map(pop3::server::tls::load) {
        eprintln!("pop3d: error: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if let Err(e) = pop3::services::SaslServices::check(&config) {
        eprintln!(
            "pop3d: error: {}: key `{}`: {}",
            path.display(),
            e.key,
            e.reason
        );
        return ExitCode::from(2);
    }
    print!("{}", config.to_toml());
    ExitCode::SUCCESS
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("pop3d: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(async move {
        if pop3::db::configured(&config) {
            match pop3::db::migrate::connect_and_check(&config).await {
                Ok(fit) => {
                    if let pop3::db::Fit::NewerCompatible(note) = fit {
                        tracing::warn!("{note}");
                    }
                    // Two processes under one node name would free each
                    // other's leases: the second one does not start while
                    // the first runs. On this machine that is the run a
                    // restart replaces, still draining: wait for its end.
                    let mut said = false;
                    loop {
                        let Err(e @ pop3::db::DbError::NodeNameInUse { .. }) =
                            pop3::store::postgres::claim_node_of(&config).await
                        else {
                            // Claimed, or the database away (the first
                            // login claims it then).
                            break;
                        };
                        let here = matches!(&e, pop3::db::DbError::NodeNameInUse { host, .. }
                            if *host == config.server.machine);
                        if !here {
                            eprintln!("pop3d: error: {}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                        if !std::mem::replace(&mut said, true) {
                            tracing::warn!("{e}; waiting for it to end");
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
                Err(
                    e @ (pop3::db::DbError::Schema { .. } | pop3::db::DbError::BinaryTooOld { .. }),
                ) => {
                    eprintln!("pop3d: error: {e}");
                    return ExitCode::from(2);
                }
                // Serve anyway: logins answer [SYS/TEMP] and /readyz says
                // why until the database is back.
                Err(e) => tracing::warn!("starting without the database: {e}"),
            }
        }
        let manager = match Pop3SessionManager::from_config(config) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                eprintln!("pop3d: error: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let server = match Server::bind(manager.clone()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pop3d: error: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(signals(manager, path));
        server.run().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    });
    // Sessions still running past the deadline are dropped here; they
    // never reached UPDATE, so nothing of theirs is deleted.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// SIGHUP reloads; SIGTERM and SIGINT shut down.
async fn signals(manager: Arc<Pop3SessionManager>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&manager, &path),
        }
    }
    // Behind a balancer: fail /readyz first, still accepting, until its
    // health checks have moved new sessions elsewhere.
    let drain = manager.services().config.server.drain_delay;
    if !drain.is_zero() {
        tracing::info!(?drain, "draining");
        manager.drain();
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    tracing::info!("shutting down");
    manager.shutdown();
}

fn reload(manager: &Pop3SessionManager, path: &Path) {
    tracing::info!(file = %path.display(), "reloading");
    match Pop3Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!(file = %path.display(), "{w}");
            }
            // (A refused reload is counted by the manager itself.)
            if let Err(e) = manager.reload(loaded.config) {
                tracing::error!(file = %path.display(), "reload refused, old configuration stays: {e}");
            }
        }
        Err(e) => {
            manager.metrics().reload(false);
            tracing::error!("reload refused, old configuration stays: {e}");
        }
    }
}

fn hash(scheme: &str) -> ExitCode {
    match admin::read_secret(scheme) {
        Ok(field) => {
            println!("{}", &*field);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

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
fn restore(path: &Path, user: &str, since: Option<&str>, look: bool, list: bool) -> ExitCode {
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

fn deliver(path: &Path, user: &str) -> ExitCode {
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

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand.
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

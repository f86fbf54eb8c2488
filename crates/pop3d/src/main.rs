// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d`: the POP3 daemon. `serve` runs it, `check-config` validates a
//! file and prints the effective configuration, `hash-password` makes a
//! passwd-file secret, `deliver` stores a message from an MTA; `db`,
//! `user` and `migrate-maildir` look after the PostgreSQL backend.

mod admin;
mod app_password;
mod check_config;
mod import_pop3;
mod mailbox;
mod migrate_maildir;
mod operate;
mod serve;
mod tool;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use check_config::check_config;
use clap::{Parser, Subcommand, ValueEnum};
use mailbox::{deliver, restore};
use pop3::config::Pop3Config;
use serve::serve;

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
    /// App passwords (auth.app_passwords_file): add, list, revoke.
    AppPassword {
        #[command(subcommand)]
        command: app_password::AppPasswordCommand,
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
    /// Maildirs are left as they are. Exit codes as import-pop3's, and 69
    /// when the database does not answer.
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
    /// a second run fetches only what is missing. Exit codes as
    /// sysexits(3): 0 done, 75 some users failed (run again to resume),
    /// 64 bad arguments, 78 bad configuration.
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
    // The crash points named in FAILPOINTS, for the crash-point tests: a
    // point set to `panic` ends the whole process there, as a crash does,
    // not just the task it ran in.
    #[cfg(feature = "failpoints")]
    let _crash_points = {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("pop3d: crash point: {info}");
            std::process::abort();
        }));
        fail::FailScenario::setup()
    };
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
        Command::AppPassword { command } => {
            let path = command.config().to_path_buf();
            with_config(
                &path,
                |c| async move { app_password::run(&c, command).await },
            )
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

/// A file the library's deep checks refuse: its name, the key and why,
/// and exit 2 (check-config and serve say it the same way).
fn refuse(path: &Path, e: &pop3::config::SetupError) -> ExitCode {
    eprintln!(
        "pop3d: error: {}: key `{}`: {}",
        path.display(),
        e.key,
        e.reason
    );
    ExitCode::from(2)
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

fn hash(scheme: &str) -> ExitCode {
    match admin::read_secret(scheme, None) {
        Ok(field) => {
            println!("{}", &*field);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
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

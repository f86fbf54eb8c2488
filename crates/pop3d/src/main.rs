// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d`: the POP3 daemon. `serve` runs it, `check-config` validates a
//! file and prints the effective configuration, `hash-password` makes a
//! passwd-file secret.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pop3::auth::{Scheme, hash_password};
use pop3::config::Pop3Config;
use pop3::server::CancellationToken;
use pop3::{Pop3SessionManager, Server};

#[derive(Parser)]
#[command(
    name = "pop3d",
    version,
    about = "A POP3 server (RFC 1939) over Maildir, with TLS"
)]
struct Cli {
    /// Log filter, e.g. "info", "debug" or "pop3=debug,info".
    #[arg(long, global = true, default_value = "info", env = "POP3D_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a password on stdin and print a passwd-file secret for it.
    HashPassword {
        /// PLAIN, SHA512-CRYPT, SHA256-CRYPT, ARGON2I, ARGON2ID, BLF-CRYPT,
        /// SSHA, SSHA256, SSHA512 or CRAM-MD5.
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::HashPassword { scheme } => hash(&scheme),
    }
}

fn init_logging(filter: &str) {
    use tracing_subscriber::filter::Targets;
    let targets: Targets = filter.parse().unwrap_or_else(|e| {
        eprintln!("pop3d: bad --log filter {filter:?}: {e}; using info");
        Targets::new().with_default(tracing::Level::INFO)
    });
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(targets)
        .init();
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

fn check_config(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Things only the filesystem can tell: the passwd file and TLS files.
    match pop3::auth::PasswdFile::open(&config.auth.passwd_file) {
        Ok(users) => {
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
        Err(e) => {
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
    print!("{}", config.to_toml());
    ExitCode::SUCCESS
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pop3d: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let manager = match Pop3SessionManager::from_config(config) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                eprintln!("pop3d: error: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let server = match Server::bind(manager).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pop3d: error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            trigger.cancel();
        });
        server.run(shutdown, Duration::from_secs(10)).await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn hash(scheme: &str) -> ExitCode {
    let Some(scheme) = Scheme::from_name(scheme) else {
        let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
        eprintln!(
            "pop3d: unknown scheme {scheme:?}; choose one of {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut input = zeroize::Zeroizing::new(String::new());
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("pop3d: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("pop3d: empty password on stdin");
        return ExitCode::from(2);
    }
    match hash_password(scheme, password) {
        Ok(field) => {
            println!("{field}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pop3d: {e}");
            ExitCode::FAILURE
        }
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d check-config`: validate a file, warn about what would surprise
//! an operator, and print the effective configuration (secrets hidden).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{load, runtime};

pub(crate) fn check_config(path: PathBuf) -> ExitCode {
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

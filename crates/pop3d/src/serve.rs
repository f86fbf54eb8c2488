// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d serve`: the daemon, its signals (SIGHUP reloads, SIGTERM and
//! SIGINT drain and stop) and the reload that keeps the running
//! configuration when the new file is refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use pop3::config::Pop3Config;
use pop3::{Pop3SessionManager, Server};

use crate::{load, refuse, runtime};

pub(crate) fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(async move {
        // The same checks as check-config: a file it refuses is refused
        // here, and a server that does not answer is only a warning (logins
        // answer [SYS/TEMP] and /readyz says why until it does).
        match pop3::setup::inspect(&config).await {
            Ok(found) => {
                for w in &found.warnings {
                    tracing::warn!(file = %path.display(), "{w}");
                }
            }
            Err(e) => return refuse(&path, &e),
        }
        if pop3::db::configured(&config) {
            // Two processes under one node name would free each other's
            // leases: the second one does not start while the first runs.
            // On this machine that is the run a restart replaces, still
            // draining: wait for its end.
            let mut said = false;
            loop {
                let Err(e @ pop3::db::DbError::NodeNameInUse { .. }) =
                    pop3::store::postgres::claim_node_of(&config).await
                else {
                    // Claimed, or the database away (the first login
                    // claims it then).
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

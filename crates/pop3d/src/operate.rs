// SPDX-License-Identifier: AGPL-3.0-only
//! What an operator reaches for at 3 a.m.: `pop3d blocks` and `pop3d
//! unblock` (on this node's block list file and on every node sharing the
//! shared state), `pop3d lease list|break` (PostgreSQL maildrop leases).

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Subcommand;
use pop3::config::Pop3Config;
use pop3::security::{address, blocklist, shared};
use pop3::store::postgres::lease;

use crate::admin::ConfigFile;
use crate::tool::fail_at_once as fail;

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// The maildrop leases in force: user, holding node, session, epoch,
    /// how long it has been held and how long until it lapses.
    List {
        #[command(flatten)]
        file: ConfigFile,
        #[arg(long)]
        user: Option<String>,
    },
    /// End a user's lease now under a new epoch: the session holding it
    /// can no longer delete anything, and the next login gets the maildrop.
    Break {
        #[command(flatten)]
        file: ConfigFile,
        #[arg(long)]
        user: String,
    },
}

impl LeaseCommand {
    pub fn config(&self) -> &std::path::Path {
        match self {
            LeaseCommand::List { file, .. } | LeaseCommand::Break { file, .. } => &file.config,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `pop3d blocks`: this node's block list file and the shared state.
pub async fn blocks(config: &Pop3Config) -> ExitCode {
    let mut any_source = false;
    let now = now_ms();
    if let Some(path) = &config.security.block_list_file {
        any_source = true;
        match blocklist::read(path) {
            Ok((blocks, _)) => {
                let mut blocks: Vec<_> = blocks
                    .into_iter()
                    .filter(|(_, b)| b.until_ms > now)
                    .collect();
                blocks.sort_by_key(|(ip, _)| *ip);
                for (ip, b) in blocks {
                    let left = (b.until_ms - now) / 1000;
                    println!(
                        "{ip}\t{left}s left\t{}\t(this node's {})",
                        b.reason,
                        path.display()
                    );
                }
            }
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
    }
    match shared::connection_info(&config.security) {
        Ok(Some(info)) => {
            any_source = true;
            match shared::list_blocks(info).await {
                Ok(mut blocks) => {
                    blocks.sort_by_key(|(ip, ..)| *ip);
                    for (ip, left, reason) in blocks {
                        println!(
                            "{ip}\t{}s left\t{reason}\t(every node, shared state)",
                            left.as_secs()
                        );
                    }
                }
                Err(e) => return fail(format!("security.shared_state: {e}")),
            }
        }
        Ok(None) => {}
        Err(e) => return fail(e),
    }
    if !any_source {
        return fail(
            "blocks live only in the running node's memory: set security.block_list_file or security.shared_state to see them from here",
        );
    }
    ExitCode::SUCCESS
}

/// `pop3d unblock ADDRESS`: lifted in the block list file (a running node
/// takes it in at SIGHUP) and on every node sharing the shared state (at
/// once).
pub async fn unblock(config: &Pop3Config, address: &str) -> ExitCode {
    let Ok(ip) = address.parse::<IpAddr>() else {
        return fail(format!("{address:?} is not an IP address"));
    };
    // Blocks are kept per address group (an IPv6 /64 by default).
    let key = address::group(ip, config.security.ipv6_prefix);
    let mut lifted = Vec::new();
    if let Some(path) = &config.security.block_list_file {
        match blocklist::read(path) {
            Ok((mut blocks, _)) => {
                if blocks.remove(&key).is_some() {
                    if let Err(e) = blocklist::write(path, &blocks, now_ms()) {
                        return fail(format!("{}: {e}", path.display()));
                    }
                    lifted.push(format!(
                        "in {} (a running node takes it in at SIGHUP)",
                        path.display()
                    ));
                }
            }
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
    }
    match shared::connection_info(&config.security) {
        Ok(Some(info)) => match shared::lift_block(info, key).await {
            Ok(true) => lifted.push("on every node (shared state)".to_owned()),
            // Announced anyway: a node may hold a block of its own.
            Ok(false) => lifted.push("announced to every node (shared state)".to_owned()),
            Err(e) => return fail(format!("security.shared_state: {e}")),
        },
        Ok(None) => {}
        Err(e) => return fail(e),
    }
    if lifted.is_empty() {
        return fail(format!(
            "{key} is not blocked in security.block_list_file, and there is no security.shared_state to tell the nodes"
        ));
    }
    for how in lifted {
        println!("{key}: block lifted {how}");
    }
    ExitCode::SUCCESS
}

/// `pop3d lease list|break`.
pub async fn leases(config: &Pop3Config, command: LeaseCommand) -> ExitCode {
    if !pop3::db::configured(config) {
        return fail("leases are kept in PostgreSQL (storage.backend = \"postgres\")");
    }
    let client = match pop3::db::migrate::connect(config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match command {
        LeaseCommand::List { user, .. } => match lease::list(&client, user.as_deref()).await {
            Ok(rows) => {
                println!("user\tnode\tsession\tepoch\theld for\texpires in");
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        r.login,
                        r.node,
                        r.session,
                        r.epoch,
                        r.age.as_deref().unwrap_or("-"),
                        r.left
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        LeaseCommand::Break { user, .. } => match lease::break_lease(&client, &user).await {
            Ok(true) => {
                println!("{user}: lease ended; its session can no longer delete anything");
                ExitCode::SUCCESS
            }
            Ok(false) => fail(format!("{user}: no lease in force")),
            Err(e) => fail(e),
        },
    }
}

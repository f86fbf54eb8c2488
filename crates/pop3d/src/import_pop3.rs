// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d import-pop3`: move mailboxes in from any POP3 server. Each
//! message is fetched over TLS (`pop3s://`, or STLS on `pop3://`) and
//! stored in the configured store under the UIDL the old server gave it,
//! so clients that leave mail on the server see nothing new. Messages
//! whose UIDL the mailbox already has are skipped: a second run, or one
//! after an interruption, fetches only what is missing. Nothing is ever
//! deleted on the old server (no DELE is sent). The local maildrop is held
//! for the user's whole import, as a POP3 session would hold it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::ProgressBar;
use pop3::auth::UserRecord;
use pop3::client::{Client, Credentials, Remote, printable};
use pop3::config::Pop3Config;
use pop3::setup::Backends;
use pop3::store::{MailStore, StoreError};
use zeroize::Zeroizing;

use crate::tool::{self, Copied, EX_CONFIG, EX_USAGE};

/// What the command line asks for.
#[derive(clap::Args)]
pub struct Request {
    /// The old server: pop3s://HOST[:PORT] (TLS) or pop3://HOST[:PORT]
    /// (STLS required).
    #[arg(long)]
    pub from: String,
    /// Move this user's mailbox.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    pub user: Option<String>,
    /// The user's name on the old server, if it differs.
    #[arg(long, requires = "user")]
    pub remote_user: Option<String>,
    /// The user's password on the old server (first line of the file),
    /// or the master user's with --master-user.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Log in as this master user for each user (SASL PLAIN with an
    /// authorization identity, as Dovecot's master users accept).
    #[arg(long)]
    pub master_user: Option<String>,
    /// Move every user of this file: `USER PASSWORD` per line, or
    /// `USER` alone with --master-user.
    #[arg(long)]
    pub all: Option<PathBuf>,
    /// CA certificates (PEM) for the old server's certificate; the
    /// system's roots otherwise.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Accept a pop3:// server without STLS, on a loopback address only.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// List what would be copied; store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One mailbox to move: the local user, the name on the old server and
/// its password (the master's, with a master user).
struct Job {
    local: String,
    remote: String,
    password: Zeroizing<String>,
}

/// One user's import.
#[derive(Default)]
struct Counts {
    copied: usize,
    octets: u64,
    present: usize,
    /// Over `server.max_message_size`: left on the old server.
    skipped: usize,
}

/// What a message may grow to beyond the size LIST announced (a server
/// that stores bare LF may count one octet per line end where it sends
/// two), before the import of the user stops.
fn retrieval_cap(listed: u64) -> u64 {
    listed.saturating_mul(2).saturating_add(64 * 1024)
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    tool::fail("import-pop3", code, message)
}

/// A password file's first line (its trailing newline dropped).
fn read_password(path: &Path) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// The jobs of `--all FILE`: `USER PASSWORD` per line (the password is
/// the rest of the line), or `USER` alone with a master user; `#` starts
/// a comment line.
fn read_list(path: &Path, master: Option<&Zeroizing<String>>) -> Result<Vec<Job>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, password) = match line.split_once([' ', '\t']) {
            Some((u, p)) => (u, Some(p.trim_start())),
            None => (line, None),
        };
        let password = match (password, master) {
            (_, Some(master)) => master.clone(),
            (Some(p), None) if !p.is_empty() => Zeroizing::new(p.to_owned()),
            _ => {
                return Err(format!(
                    "{}:{}: {user}: no password (USER PASSWORD per line, or --master-user)",
                    path.display(),
                    n + 1
                ));
            }
        };
        jobs.push(Job {
            local: user.to_owned(),
            remote: user.to_owned(),
            password,
        });
    }
    Ok(jobs)
}

fn jobs(request: &Request) -> Result<Vec<Job>, String> {
    let password = request
        .password_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    match (&request.user, &request.all) {
        (Some(user), None) => Ok(vec![Job {
            local: user.clone(),
            remote: request.remote_user.clone().unwrap_or_else(|| user.clone()),
            password: password.ok_or("--user needs --password-file")?,
        }]),
        (None, Some(list)) => {
            if request.master_user.is_some() && password.is_none() {
                return Err("--master-user needs --password-file (the master's password)".into());
            }
            let master = password.filter(|_| request.master_user.is_some());
            read_list(list, master.as_ref())
        }
        _ => Err("give --user or --all".into()),
    }
    .and_then(|jobs: Vec<Job>| {
        // Refused before any lookup, as a session refuses them.
        match jobs.iter().find_map(|j| {
            pop3::auth::check_name(&j.local)
                .err()
                .map(|why| format!("{:?}: {why}", j.local.escape_debug().to_string()))
        }) {
            Some(e) => Err(e),
            None => Ok(jobs),
        }
    })
}

pub async fn run(config: Pop3Config, request: Request) -> ExitCode {
    let remote = match Remote::parse(&request.from) {
        Ok(r) => r,
        Err(e) => return fail(EX_USAGE, format!("--from {e}")),
    };
    let jobs = match jobs(&request) {
        Ok(j) => j,
        Err(e) => return fail(EX_USAGE, e),
    };
    let backends = match Backends::from_config(&config) {
        Ok(b) => b,
        Err(e) => return fail(EX_CONFIG, e),
    };
    let bar = tool::progress(0, "messages");
    let mut summary = Copied::default();
    let mut skipped = 0;
    for job in &jobs {
        bar.set_message(job.local.clone());
        let user = match backends.users.lookup(&job.local).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                bar.suspend(|| eprintln!("pop3d: {}: no such local user", job.local));
                summary.failed.push(job.local.clone());
                continue;
            }
            Err(e) => {
                bar.suspend(|| eprintln!("pop3d: {}: {e}", job.local));
                summary.failed.push(job.local.clone());
                continue;
            }
        };
        let max_message_size = config.server.max_message_size;
        let moved = import_user(
            &backends.store,
            &user,
            job,
            &remote,
            &request,
            max_message_size,
            &bar,
        )
        .await;
        match moved {
            Ok(counts) => {
                summary.messages += counts.copied;
                summary.octets += counts.octets;
                summary.present += counts.present;
                skipped += counts.skipped;
            }
            Err(e) => {
                // Whatever the old server wrote, escaped for the terminal.
                bar.suspend(|| eprintln!("pop3d: {}: {}", job.local, printable(&e)));
                summary.failed.push(job.local.clone());
            }
        }
    }
    bar.finish_and_clear();
    let mut more = Vec::new();
    if skipped > 0 {
        more.push(format!(
            "skipped {skipped} messages over server.max_message_size (left on the old server)"
        ));
    }
    summary.report(request.dry_run, jobs.len(), &more)
}

/// Move one mailbox: hold the local maildrop, list the old one, fetch and
/// store what is missing.
async fn import_user(
    store: &Arc<dyn MailStore>,
    user: &UserRecord,
    job: &Job,
    remote: &Remote,
    request: &Request,
    max_message_size: u64,
    bar: &ProgressBar,
) -> Result<Counts, String> {
    let maildrop = match store.open(user).await {
        Ok(m) => m,
        Err(StoreError::InUse) => {
            return Err("the mailbox is in use by a POP3 session; run again later".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let known: HashSet<String> = maildrop.messages().iter().map(|m| m.uid.clone()).collect();

    let moved = async {
        let credentials = match &request.master_user {
            Some(master) => Credentials::Master {
                user: &job.remote,
                master,
                password: &job.password,
            },
            None => Credentials::User {
                user: &job.remote,
                password: &job.password,
            },
        };
        let mut old = Client::connect(
            remote,
            request.ca_file.as_deref(),
            request.allow_plaintext,
            &credentials,
        )
        .await
        .map_err(|e| format!("{}: {e}", remote.host))?;
        let listing = old.listing().await.map_err(|e| e.to_string())?;
        bar.inc_length(listing.len() as u64);
        let mut counts = Counts::default();
        let too_large = |size: u64| max_message_size > 0 && size > max_message_size;
        let skip = |counts: &mut Counts, uidl: &str, size: u64| {
            bar.suspend(|| {
                eprintln!(
                    "pop3d: {}: message {} ({size} octets) is over server.max_message_size ({max_message_size}); skipped",
                    job.local,
                    printable(uidl)
                )
            });
            counts.skipped += 1;
        };
        for message in listing {
            bar.inc(1);
            if known.contains(&message.uidl) {
                counts.present += 1;
                continue;
            }
            if too_large(message.size) {
                skip(&mut counts, &message.uidl, message.size);
                continue;
            }
            if request.dry_run {
                counts.copied += 1;
                counts.octets += message.size;
                continue;
            }
            let bytes = old
                .retrieve(message.number, retrieval_cap(message.size))
                .await
                .map_err(|e| format!("message {}: {e}", message.uidl))?;
            let size = match store
                .import(user, &message.uidl, &mut bytes.as_slice())
                .await
            {
                Ok(size) => size,
                // Its LIST size understated it.
                Err(StoreError::TooLarge(_)) => {
                    skip(&mut counts, &message.uidl, bytes.len() as u64);
                    continue;
                }
                Err(e) => return Err(format!("message {}: {e}", message.uidl)),
            };
            #[cfg(feature = "failpoints")]
            fail::fail_point!("import-after-message");
            counts.copied += 1;
            counts.octets += size;
        }
        old.quit().await.map_err(|e| e.to_string())?;
        Ok(counts)
    }
    .await;
    maildrop.release().await;
    moved
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The maildrop lease (SCALEOUT.md): RFC 1939's exclusive lock as a row
//! per mailbox, held by (node, boot, session) with an epoch that grows at
//! every takeover and an expiry on the database's clock. One heartbeat per
//! node renews the leases of its live sessions every third of the TTL; a
//! node that stops (killed, paused, cut off) stops renewing, and its
//! leases lapse. A node that restarts frees its previous run's leases at
//! once.
//!
//! A node name is held by one run at a time (`pop3d_nodes`, renewed by the
//! same heartbeat): a second process started under a name that another
//! still renews is refused, rather than freeing that run's live leases.
//! Administration commands take leases under a name of their own and
//! claim none.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::db::{Database, DbError};

/// Who holds a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub session: i64,
    pub epoch: i64,
}

/// One node's side of the leases: its identity, its live sessions, and
/// the heartbeat that keeps their leases.
pub struct Leases {
    pub node: String,
    /// An administration command's leases: no node name is claimed, no
    /// earlier run's leases freed.
    tool: bool,
    /// This run of the process (pid and start time), then this store
    /// within it: `run/store`. Leases of this node under another run are
    /// its previous run's; another store of this run (built by a reload)
    /// still has sessions of its own.
    pub boot: String,
    pub ttl: Duration,
    next_session: std::sync::atomic::AtomicI64,
    live: Mutex<HashSet<i64>>,
    started: OnceCell<()>,
}

impl Leases {
    pub fn new(node: String, ttl: Duration) -> Leases {
        let mut random = [0u8; 6];
        let _ = getrandom::fill(&mut random);
        Leases {
            node,
            tool: false,
            boot: format!("{}/{}", this_run(), crate::hex::encode(&random)),
            ttl,
            next_session: std::sync::atomic::AtomicI64::new(1),
            live: Mutex::new(HashSet::new()),
            started: OnceCell::new(),
        }
    }

    /// Leases of an administration command run on `node`'s machine: named
    /// `node/tool-PID`, so that they never count as the node's own.
    pub fn for_tool(mut self) -> Leases {
        self.node = format!("{}/tool-{}", self.node, std::process::id());
        self.tool = true;
        self
    }

    /// The process run part of `boot`.
    fn run(&self) -> &str {
        self.boot.split('/').next().unwrap_or_default()
    }

    pub fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// A session number, unique in this run.
    pub fn next_session(&self) -> i64 {
        self.next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renew this session's lease from now on.
    pub fn hold(&self, session: i64) {
        self.live().insert(session);
    }

    pub fn is_live(&self, session: i64) -> bool {
        self.live().contains(&session)
    }

    /// Stop renewing it.
    pub fn forget(&self, session: i64) {
        self.live().remove(&session);
    }

    /// Before the first lease of this run: free the leases of this node's
    /// earlier runs (their sessions died with them) and start the
    /// heartbeat. Retried at the next login if the database is away.
    pub async fn start(self: &Arc<Self>, db: &Arc<Database>) -> Result<(), DbError> {
        self.started
            .get_or_try_init(|| async {
                if self.tool {
                    tokio::spawn(heartbeat(Arc::downgrade(self), Arc::downgrade(db)));
                    return Ok(());
                }
                let freed = db
                    .timed(async {
                        let client = db.client().await?;
                        claim_node(&**client, &self.node, self.run(), self.ttl).await?;
                        Ok(client
                            .execute(
                                "UPDATE maildrop_lease SET expires_at = '-infinity' \
                                 WHERE node = $1 AND split_part(boot, '/', 1) <> $2 \
                                   AND expires_at > '-infinity'",
                                &[&self.node, &self.run()],
                            )
                            .await?)
                    })
                    .await?;
                if freed > 0 {
                    tracing::info!(
                        node = %self.node,
                        freed,
                        "freed the maildrop leases of this node's previous run"
                    );
                }
                tokio::spawn(heartbeat(Arc::downgrade(self), Arc::downgrade(db)));
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// One lease as `pop3d lease list` shows it.
#[derive(Debug, Clone)]
pub struct LeaseRow {
    pub login: String,
    pub node: String,
    pub session: i64,
    pub epoch: i64,
    /// How long the holder has had it (unknown for an older binary's).
    pub age: Option<String>,
    /// Time left until it lapses unless renewed.
    pub left: String,
}

/// The leases in force (of `login` only, when given).
pub async fn list(
    client: &impl tokio_postgres::GenericClient,
    login: Option<&str>,
) -> Result<Vec<LeaseRow>, DbError> {
    let rows = client
        .query(
            "SELECT b.login, l.node, l.session, l.epoch, \
                    date_trunc('second', now() - l.acquired_at)::text, \
                    date_trunc('second', l.expires_at - now())::text \
               FROM maildrop_lease l JOIN mailboxes b ON b.id = l.mailbox_id \
              WHERE l.expires_at > now() AND ($1::text IS NULL OR b.login = lower($1)) \
              ORDER BY b.login",
            &[&login],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| LeaseRow {
            login: r.get(0),
            node: r.get(1),
            session: r.get(2),
            epoch: r.get(3),
            age: r.get(4),
            left: r.get(5),
        })
        .collect())
}

/// End `login`'s lease now, under a new epoch: the session that held it
/// can no longer commit (its QUIT deletes nothing), and the next login
/// takes the maildrop at once. False when no lease was in force.
pub async fn break_lease(
    client: &impl tokio_postgres::GenericClient,
    login: &str,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE maildrop_lease l SET expires_at = '-infinity', epoch = l.epoch + 1 \
               FROM mailboxes b \
              WHERE b.id = l.mailbox_id AND b.login = lower($1) AND l.expires_at > now()",
            &[&login],
        )
        .await?;
    Ok(n > 0)
}

/// Hold `node` for this process's `run`: taken when free, held by this
/// run already, not renewed within `ttl`, or held by a run that died on
/// this very machine; refused while another run renews it.
pub async fn claim_node(
    client: &impl tokio_postgres::GenericClient,
    node: &str,
    run: &str,
    ttl: Duration,
) -> Result<(), DbError> {
    let host = crate::config::machine_name();
    let ttl_secs = ttl.as_secs_f64();
    let holder = client
        .query_opt(
            "SELECT run, host FROM pop3d_nodes WHERE name = $1",
            &[&node],
        )
        .await?;
    // A run that died here can be told from one that runs (pid and start
    // time); one on another machine only by its heartbeat.
    let dead_here = holder
        .as_ref()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(other, on)| *on == host && other != run && !run_alive(other))
        .map(|(other, _)| other)
        .unwrap_or_default();
    let claimed = client
        .query_opt(
            "INSERT INTO pop3d_nodes AS n (name, run, host, heartbeat) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (name) DO UPDATE \
                SET run = excluded.run, host = excluded.host, heartbeat = now() \
              WHERE n.run = excluded.run OR n.run = $4 \
                 OR n.heartbeat < now() - make_interval(secs => $5) \
             RETURNING run",
            &[&node, &run, &host, &dead_here, &ttl_secs],
        )
        .await?;
    if claimed.is_some() {
        return Ok(());
    }
    let (other, on) = client
        .query_opt(
            "SELECT run, host FROM pop3d_nodes WHERE name = $1",
            &[&node],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_default();
    Err(DbError::NodeNameInUse {
        node: node.to_owned(),
        run: other,
        host: on,
    })
}

/// Whether the run `pid.start-time` still runs on this machine (a random
/// run name, from a machine without /proc, is taken to run).
fn run_alive(run: &str) -> bool {
    let parsed = run
        .split_once('.')
        .and_then(|(pid, start)| Some((pid.parse::<u32>().ok()?, start.parse::<u64>().ok()?)));
    match parsed {
        Some((pid, start)) => crate::store::start_time(pid) == Some(start),
        None => true,
    }
}

/// This process's run: its pid and start time, the same for every store
/// it builds (a reload that builds a new store must not free the leases
/// of sessions still running under the old one). Random where /proc is
/// missing.
pub(crate) fn this_run() -> String {
    let pid = std::process::id();
    if let Some(started) = crate::store::start_time(pid) {
        return format!("{pid}.{started}");
    }
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        random = (now.as_nanos() as u64).to_be_bytes();
    }
    crate::hex::encode(&random)
}

/// Renew the live sessions' leases until the store is gone.
async fn heartbeat(leases: Weak<Leases>, db: Weak<Database>) {
    loop {
        let Some(every) = leases.upgrade().map(|l| l.ttl / 3) else {
            return;
        };
        tokio::time::sleep(every).await;
        let (Some(leases), Some(db)) = (leases.upgrade(), db.upgrade()) else {
            return;
        };
        if !leases.tool {
            // The node name's sign of life, whether or not it has sessions.
            let held = db
                .timed(async {
                    let client = db.client().await?;
                    Ok(client
                        .execute(
                            "UPDATE pop3d_nodes SET heartbeat = now() WHERE name = $1 AND run = $2",
                            &[&leases.node, &leases.run()],
                        )
                        .await?)
                })
                .await;
            if let Ok(0) = held {
                tracing::error!(
                    node = %leases.node,
                    "another pop3d took this node name (this one was silent past lease_ttl); its leases are fenced"
                );
            }
        }
        let sessions: Vec<i64> = leases.live().iter().copied().collect();
        if sessions.is_empty() {
            continue;
        }
        crate::crash_point!("postgres-lease-heartbeat");
        let renewed = db
            .timed(async {
                let client = db.client().await?;
                let stmt = client
                    .prepare_cached(
                        "UPDATE maildrop_lease \
                         SET expires_at = now() + make_interval(secs => $4) \
                         WHERE node = $1 AND boot = $2 AND session = ANY($3) \
                           AND expires_at > '-infinity'",
                    )
                    .await?;
                Ok(client
                    .execute(
                        &stmt,
                        &[&leases.node, &leases.boot, &sessions, &leases.ttl_secs()],
                    )
                    .await?)
            })
            .await;
        match renewed {
            Ok(n) if n < sessions.len() as u64 => {
                // Lost leases are found out at QUIT, which says so.
                tracing::debug!(
                    live = sessions.len(),
                    renewed = n,
                    "some maildrop leases were taken over"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot renew maildrop leases: {e}"),
        }
    }
}

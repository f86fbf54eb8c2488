// SPDX-License-Identifier: AGPL-3.0-only
//! Following a PostgreSQL notification channel on a connection of its own
//! (LISTEN), so that what one process changes (`pop3d user passwd`) is
//! heard by every node at once.

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::Database;

/// How often a listener looks whether anyone still follows it, and waits
/// before connecting again.
const PATIENCE: Duration = Duration::from_secs(2);

/// Where a listener connects: the pool's settings with the password of
/// the moment.
#[derive(Clone)]
pub(super) struct ListenTarget {
    pub(super) pg: tokio_postgres::Config,
    pub(super) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Database {
    /// Add one to `changes` at each notification on `channel`, and each
    /// time the listening connection is made (what was announced while it
    /// was down is unknown); until `changes` is dropped. Must be called in
    /// a Tokio runtime.
    pub fn follow_notifications(&self, channel: &'static str, changes: Weak<AtomicU64>) {
        let target = self.listen.clone();
        let password = self.password.clone();
        tokio::spawn(async move {
            while changes.strong_count() > 0 {
                let mut pg = target.pg.clone();
                if let Some(p) = &*password.read().unwrap_or_else(|p| p.into_inner()) {
                    pg.password(p.as_str());
                }
                if let Err(e) = listen(&pg, &target.tls, channel, &changes).await {
                    tracing::debug!("LISTEN {channel}: {e}; trying again");
                }
                tokio::time::sleep(PATIENCE).await;
            }
        });
    }
}

/// Listen on one connection until it breaks or no one follows `changes`.
async fn listen(
    pg: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    channel: &str,
    changes: &Weak<AtomicU64>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = pg.connect(tls.clone()).await?;
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(_) = m {
                let _ = tx.send(());
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {channel}")).await;
    if let Err(e) = &listening {
        // Connected, yet refused: worth more than a debug line.
        tracing::warn!("cannot LISTEN {channel}: {e}");
    } else {
        bump(changes);
        while changes.strong_count() > 0 {
            tokio::select! {
                got = heard.recv() => match got {
                    Some(()) => bump(changes),
                    // The connection ended.
                    None => break,
                },
                _ = tokio::time::sleep(PATIENCE) => {}
            }
        }
    }
    driver.abort();
    listening
}

fn bump(changes: &Weak<AtomicU64>) {
    if let Some(c) = changes.upgrade() {
        c.fetch_add(1, Ordering::SeqCst);
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Embedding `pop3` in another server: bring your own users and store,
//! accept connections yourself, hand each one to `Pop3SessionManager`.
//!
//! Run: `cargo run -p pop3 --example embedded`, then
//! `curl pop3://carol:wonderland@127.0.0.1:2110/1`.

use std::sync::Arc;

use pop3::Pop3SessionManager;
use pop3::auth::StaticUsers;
use pop3::config::{Pop3Config, TlsMode};
use pop3::store::MemoryStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's own users; any `UserDb` implementation fits here.
    let users = StaticUsers::new([StaticUsers::user("carol", "{PLAIN}wonderland")?]);
    let store = MemoryStore::new();
    store.add(
        "carol",
        "Subject: hello from the host\r\n\r\nServed from memory.\r\n",
    );

    let manager = Arc::new(Pop3SessionManager::new(
        Pop3Config::default(),
        Arc::new(users),
        Arc::new(store),
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:2110").await?;
    println!(
        "serving carol's in-memory mailbox on {}",
        listener.local_addr()?
    );
    loop {
        let (stream, peer) = listener.accept().await?;
        let manager = manager.clone();
        tokio::spawn(async move {
            manager.serve(stream, peer, TlsMode::None).await;
        });
    }
}

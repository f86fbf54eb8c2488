// SPDX-License-Identifier: AGPL-3.0-only
//! LMTP (RFC 2033) sessions: how an MTA hands mail to pop3d, over TCP or a
//! Unix socket. One reply per accepted recipient after DATA, `250` only
//! once the message is stored for that recipient (through
//! `MailStore::deliver`, the path of `pop3d deliver`), `451 4.3.0` when the
//! store cannot take it now so that the MTA keeps it queued. The protocol
//! itself (commands, the DATA body) is sans-IO in `protocol::lmtp`.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::services::Services;

mod deliver;
mod session;
use session::Session;

/// RFC 5321 §4.5.3.1: command lines up to 512 octets.
const COMMAND_LINE: usize = 512;
/// Text lines in DATA: RFC 5321 allows 1,000; MTAs send longer ones.
const DATA_LINE: usize = 64 * 1024;
/// Recipients of one transaction (RFC 5321 §4.5.3.1.8 asks for 100).
const MAX_RECIPIENTS: usize = 100;
/// The message limit when `server.max_message_size` sets none: a message
/// is held in memory while it is stored for each recipient.
const DEFAULT_MAX_MESSAGE: u64 = 64 << 20;

/// The largest message LMTP takes.
pub fn message_limit(services: &Services) -> u64 {
    match services.config.server.max_message_size {
        0 => DEFAULT_MAX_MESSAGE,
        n => n,
    }
}

/// Whether `peer` may deliver: Unix sockets (no peer address) are guarded
/// by their file permissions.
pub fn trusted(services: &Services, peer: Option<IpAddr>) -> bool {
    match peer {
        None => true,
        Some(ip) => {
            let ip = crate::security::address::canonical(ip);
            services
                .config
                .security
                .lmtp_trusted_networks
                .iter()
                .any(|n| n.contains(&ip))
        }
    }
}

/// Serve one LMTP connection. `peer` is None on a Unix socket.
pub async fn serve<S>(stream: S, peer: Option<IpAddr>, services: Arc<Services>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if trusted(&services, peer) {
        return Session::new(stream, services).run().await;
    }
    tracing::warn!(peer = ?peer, "LMTP connection from an untrusted address refused");
    deliver::count(&services, "refused");
    if let Some(ip) = peer {
        services
            .guard
            .log()
            .connection_refused(ip, "LMTP from an address not in lmtp_trusted_networks");
    }
    let host = services.config.server.hostname.clone();
    Session::new(stream, services)
        .refuse(&format!(
            "554 5.7.1 {host} LMTP is not offered to this address"
        ))
        .await;
}

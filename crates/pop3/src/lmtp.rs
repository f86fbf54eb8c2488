// SPDX-License-Identifier: AGPL-3.0-only
//! LMTP (RFC 2033) sessions: how an MTA hands mail to pop3d, over TCP or a
//! Unix socket. One reply per accepted recipient after DATA, `250` only
//! once the message is stored for that recipient (through
//! `MailStore::deliver`, the path of `pop3d deliver`), `451 4.3.0` when the
//! store cannot take it now so that the MTA keeps it queued. The protocol
//! itself (commands, the DATA body) is sans-IO in `protocol::lmtp`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{UserDbError, UserRecord};
use crate::protocol::lmtp::{DataBody, DataLine, LmtpCommand, parse_command};
use crate::services::Services;
use crate::session::lines::{Line, LineBuffer};
use crate::session::transport::Transport;
use crate::store::StoreError;
use crate::telemetry::metrics::ResultLabels;

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

struct Conn<S> {
    io: Transport<S>,
    input: LineBuffer,
    out: Vec<u8>,
}

enum Next {
    Line(Vec<u8>),
    TooLong,
    Closed,
    TimedOut,
    ShuttingDown,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next line; replies waiting are sent before waiting for input
    /// (pipelined commands are answered together).
    async fn next(&mut self, max: usize, services: &Services) -> Next {
        loop {
            match self.input.next_line(max) {
                Some(Line::Complete(l)) => return Next::Line(l),
                Some(Line::TooLong) => return Next::TooLong,
                None => {}
            }
            if self.flush().await.is_err() {
                return Next::Closed;
            }
            let mut buf = [0u8; 16 * 1024];
            let read = tokio::select! {
                _ = services.shutdown.cancelled() => return Next::ShuttingDown,
                r = tokio::time::timeout(services.config.server.session_timeout, self.io.read(&mut buf)) => r,
            };
            match read {
                Err(_) => return Next::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.input.extend(&buf[..n]),
            }
        }
    }
}

/// The envelope of one transaction.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    recipients: Vec<(String, Arc<UserRecord>)>,
}

/// Serve one LMTP connection. `peer` is None on a Unix socket.
pub async fn serve<S>(stream: S, peer: Option<IpAddr>, services: Arc<Services>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let host = services.config.server.hostname.clone();
    let mut conn = Conn {
        io: Transport::Plain(stream),
        input: LineBuffer::default(),
        out: Vec::new(),
    };
    if !trusted(&services, peer) {
        tracing::warn!(peer = ?peer, "LMTP connection from an untrusted address refused");
        count(&services, "refused");
        if let Some(ip) = peer {
            services
                .guard
                .log()
                .connection_refused(ip, "LMTP from an address not in lmtp_trusted_networks");
        }
        conn.reply(&format!(
            "554 5.7.1 {host} LMTP is not offered to this address"
        ));
        let _ = conn.flush().await;
        return;
    }
    conn.reply(&format!(
        "220 {host} LMTP pop3d ready ({})",
        services.config.server.node()
    ));
    let limit = message_limit(&services);
    let mut greeted = false;
    let mut envelope = Envelope::default();
    loop {
        let line = match conn.next(COMMAND_LINE, &services).await {
            Next::Line(l) => l,
            Next::TooLong => {
                conn.reply("500 5.5.2 line too long");
                continue;
            }
            Next::Closed => return,
            Next::TimedOut => {
                conn.reply(&format!("421 4.4.2 {host} idle for too long, closing"));
                let _ = conn.flush().await;
                return;
            }
            Next::ShuttingDown => {
                conn.reply(&format!("421 4.3.2 {host} shutting down"));
                let _ = conn.flush().await;
                return;
            }
        };
        match parse_command(&line) {
            LmtpCommand::Lhlo(_) => {
                greeted = true;
                envelope = Envelope::default();
                conn.reply(&format!("250-{host}"));
                conn.reply("250-PIPELINING");
                conn.reply("250-ENHANCEDSTATUSCODES");
                conn.reply("250-8BITMIME");
                if services.tls.is_some() && !conn.io.is_tls() {
                    conn.reply("250-STARTTLS");
                }
                conn.reply(&format!("250 SIZE {limit}"));
            }
            LmtpCommand::HeloEhlo => conn.reply("500 5.5.1 this is LMTP: use LHLO"),
            LmtpCommand::Noop => conn.reply("250 2.0.0 OK"),
            LmtpCommand::Quit => {
                conn.reply(&format!("221 2.0.0 {host} closing"));
                let _ = conn.flush().await;
                return;
            }
            LmtpCommand::Bad(why) => conn.reply(&format!("501 5.5.4 {why}")),
            LmtpCommand::Unknown => conn.reply("500 5.5.2 unknown command"),
            _ if !greeted => conn.reply("503 5.5.1 LHLO first"),
            LmtpCommand::Mail { from, size } => {
                if envelope.from.is_some() {
                    conn.reply("503 5.5.1 MAIL already given");
                } else if size.is_some_and(|s| s > limit) {
                    conn.reply(&format!("552 5.3.4 messages are limited to {limit} octets"));
                } else {
                    envelope.from = Some(from);
                    conn.reply("250 2.1.0 sender OK");
                }
            }
            LmtpCommand::Rcpt(to) => {
                if envelope.from.is_none() {
                    conn.reply("503 5.5.1 MAIL first");
                } else if envelope.recipients.len() >= MAX_RECIPIENTS {
                    conn.reply("452 4.5.3 too many recipients");
                } else {
                    match recipient(&services, &to).await {
                        Ok(Some(user)) => {
                            envelope.recipients.push((to, user));
                            conn.reply("250 2.1.5 recipient OK");
                        }
                        Ok(None) => {
                            count(&services, "unknown_user");
                            conn.reply(&format!("550 5.1.1 <{to}>: no such user here"));
                        }
                        Err(e) => {
                            count(&services, "userdb_unavailable");
                            tracing::warn!(recipient = %to, "LMTP: {e}");
                            conn.reply("451 4.3.0 user database unavailable, try again later");
                        }
                    }
                }
            }
            LmtpCommand::Data => {
                if envelope.recipients.is_empty() {
                    conn.reply("503 5.5.1 no valid recipients");
                    continue;
                }
                conn.reply("354 2.0.0 send the message, end with a line holding only .");
                let mut body = DataBody::new(limit);
                let mut long_line = false;
                loop {
                    match conn.next(DATA_LINE, &services).await {
                        Next::Line(l) => {
                            if body.line(&l, conn.input.last_ended_crlf()) == DataLine::End {
                                break;
                            }
                        }
                        Next::TooLong => long_line = true,
                        // Nothing stored: the MTA still has the message.
                        Next::Closed | Next::TimedOut | Next::ShuttingDown => return,
                    }
                }
                let from = envelope.from.take().unwrap_or_default();
                for (to, user) in std::mem::take(&mut envelope.recipients) {
                    let answer = if long_line {
                        "554 5.6.0 a line of the message is too long".to_owned()
                    } else if body.too_large() {
                        count(&services, "too_large");
                        format!("552 5.3.4 <{to}>: messages are limited to {limit} octets")
                    } else {
                        deliver(&services, &from, &to, &user, &body.message).await
                    };
                    conn.reply(&answer);
                }
            }
            LmtpCommand::Rset => {
                envelope = Envelope::default();
                conn.reply("250 2.0.0 OK");
            }
            LmtpCommand::StartTls => {
                let Some(acceptor) = services.tls.clone().filter(|_| !conn.io.is_tls()) else {
                    conn.reply("502 5.5.1 STARTTLS not available");
                    continue;
                };
                conn.reply("220 2.0.0 ready to start TLS");
                if conn.flush().await.is_err() {
                    return;
                }
                // Nothing sent in plaintext after STARTTLS is executed.
                conn.input.clear();
                let Transport::Plain(plain) = std::mem::replace(&mut conn.io, Transport::Upgrading)
                else {
                    return;
                };
                let deadline = services.config.server.unauth_timeout;
                match tokio::time::timeout(deadline, acceptor.accept(plain)).await {
                    Ok(Ok(tls)) => conn.io = Transport::Tls(Box::new(tls)),
                    _ => {
                        services.metrics.tls_handshake_failures.inc();
                        return;
                    }
                }
                // RFC 3207 §4.2: everything starts over.
                greeted = false;
                envelope = Envelope::default();
            }
            LmtpCommand::Vrfy => conn.reply("252 2.5.0 cannot verify, but will accept"),
        }
    }
}

fn count(services: &Services, result: &'static str) {
    services
        .metrics
        .lmtp_deliveries
        .get_or_create(&ResultLabels { result })
        .inc();
}

/// The user an address names: the address as written, else its local
/// part (passwd files often list bare names).
/// An account closed to mail (`pop3d user disable --no-mail`) is no
/// recipient; one whose logins are disabled still is.
async fn recipient(services: &Services, to: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
    let found = match services.users.lookup(to).await? {
        Some(user) => Some(user),
        None => match to.rsplit_once('@') {
            Some((local, _)) if !local.is_empty() => services.users.lookup(local).await?,
            _ => None,
        },
    };
    Ok(found.filter(|u| u.account.receives_mail()))
}

/// Store the message for one recipient, with `Return-Path` and
/// `Delivered-To` in front; the reply for that recipient.
async fn deliver(
    services: &Services,
    from: &str,
    to: &str,
    user: &UserRecord,
    body: &[u8],
) -> String {
    let head = format!("Return-Path: <{from}>\r\nDelivered-To: <{to}>\r\n");
    let mut message = head.as_bytes().chain(body);
    let stored = tokio::time::timeout(
        Duration::from_secs(300),
        services.store.deliver(user, &mut message),
    )
    .await
    .unwrap_or_else(|_| Err(StoreError::Temporary("delivery took too long".into())));
    match stored {
        Ok(size) => {
            count(services, "delivered");
            tracing::info!(user = %user.name, size, "delivered over LMTP");
            format!("250 2.0.0 <{to}> delivered")
        }
        Err(StoreError::TooLarge(limit)) => {
            count(services, "too_large");
            format!("552 5.3.4 <{to}>: messages are limited to {limit} octets")
        }
        // RFC 3463 X.2.2: mailbox full.
        Err(StoreError::OverQuota) if services.config.storage.quota_full_tempfail => {
            count(services, "over_quota");
            format!("452 4.2.2 <{to}>: mailbox is over quota, try again later")
        }
        Err(StoreError::OverQuota) => {
            count(services, "over_quota");
            format!("552 5.2.2 <{to}>: mailbox is over quota")
        }
        // RFC 3463 X.3.1: mail system full; the MTA keeps the message.
        Err(e @ StoreError::Full(_)) => {
            count(services, "storage_full");
            tracing::warn!(user = %user.name, "LMTP delivery failed: {e}");
            format!("452 4.3.1 <{to}>: mail system full, try again later")
        }
        Err(e) => {
            count(services, "temp_failure");
            tracing::warn!(user = %user.name, "LMTP delivery failed: {e}");
            format!("451 4.3.0 <{to}>: cannot store the message now, try again later")
        }
    }
}

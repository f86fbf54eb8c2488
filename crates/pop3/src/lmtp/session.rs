// SPDX-License-Identifier: AGPL-3.0-only
//! One LMTP session: reads command lines, answers each through a method of
//! [`Session`] (one per command, as the POP3 session's `op/` modules are),
//! and keeps the envelope of the transaction in progress.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::deliver::{count, deliver, recipient};
use super::{COMMAND_LINE, DATA_LINE, MAX_RECIPIENTS};
use crate::auth::UserRecord;
use crate::protocol::lines::{Line, LineBuffer};
use crate::protocol::lmtp::{DataBody, DataLine, LmtpCommand, parse_command};
use crate::services::Services;
use crate::session::transport::Transport;

/// The connection: its transport, what was read and not yet used, and the
/// replies not yet sent.
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

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Stop,
}

pub(super) struct Session<S> {
    conn: Conn<S>,
    services: Arc<Services>,
    /// `server.hostname`, in every greeting and goodbye.
    host: String,
    /// The largest message taken (`SIZE`).
    limit: u64,
    greeted: bool,
    envelope: Envelope,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn new(stream: S, services: Arc<Services>) -> Self {
        Session {
            conn: Conn {
                io: Transport::Plain(stream),
                input: LineBuffer::default(),
                out: Vec::new(),
            },
            host: services.config.server.hostname.clone(),
            limit: super::message_limit(&services),
            services,
            greeted: false,
            envelope: Envelope::default(),
        }
    }

    /// Send one reply and close (a refused client).
    pub(super) async fn refuse(mut self, text: &str) {
        self.conn.reply(text);
        let _ = self.conn.flush().await;
    }

    /// Greet, then answer commands until the client or the server ends.
    pub(super) async fn run(mut self) {
        self.conn.reply(&format!(
            "220 {} LMTP pop3d ready ({})",
            self.host,
            self.services.config.server.node()
        ));
        loop {
            let line = match self.conn.next(COMMAND_LINE, &self.services).await {
                Next::Line(l) => l,
                Next::TooLong => {
                    self.conn.reply("500 5.5.2 line too long");
                    continue;
                }
                Next::Closed => return,
                Next::TimedOut => {
                    let bye = format!("421 4.4.2 {} idle for too long, closing", self.host);
                    return self.refuse(&bye).await;
                }
                Next::ShuttingDown => {
                    let bye = format!("421 4.3.2 {} shutting down", self.host);
                    return self.refuse(&bye).await;
                }
            };
            if let Flow::Stop = self.command(&line).await {
                return;
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        match parse_command(line) {
            LmtpCommand::Lhlo(_) => self.lhlo(),
            LmtpCommand::HeloEhlo => self.conn.reply("500 5.5.1 this is LMTP: use LHLO"),
            LmtpCommand::Noop => self.conn.reply("250 2.0.0 OK"),
            LmtpCommand::Quit => {
                self.conn.reply(&format!("221 2.0.0 {} closing", self.host));
                let _ = self.conn.flush().await;
                return Flow::Stop;
            }
            LmtpCommand::Bad(why) => self.conn.reply(&format!("501 5.5.4 {why}")),
            LmtpCommand::Unknown => self.conn.reply("500 5.5.2 unknown command"),
            _ if !self.greeted => self.conn.reply("503 5.5.1 LHLO first"),
            LmtpCommand::Mail { from, size } => self.mail(from, size),
            LmtpCommand::Rcpt(to) => self.rcpt(to).await,
            LmtpCommand::Data => return self.data().await,
            LmtpCommand::Rset => {
                self.envelope = Envelope::default();
                self.conn.reply("250 2.0.0 OK");
            }
            LmtpCommand::StartTls => return self.starttls().await,
            LmtpCommand::Vrfy => self.conn.reply("252 2.5.0 cannot verify, but will accept"),
        }
        Flow::Continue
    }

    fn lhlo(&mut self) {
        self.greeted = true;
        self.envelope = Envelope::default();
        let conn = &mut self.conn;
        conn.reply(&format!("250-{}", self.host));
        conn.reply("250-PIPELINING");
        conn.reply("250-ENHANCEDSTATUSCODES");
        conn.reply("250-8BITMIME");
        if self.services.tls.is_some() && !conn.io.is_tls() {
            conn.reply("250-STARTTLS");
        }
        conn.reply(&format!("250 SIZE {}", self.limit));
    }

    fn mail(&mut self, from: String, size: Option<u64>) {
        let limit = self.limit;
        if self.envelope.from.is_some() {
            self.conn.reply("503 5.5.1 MAIL already given");
        } else if size.is_some_and(|s| s > limit) {
            self.conn
                .reply(&format!("552 5.3.4 messages are limited to {limit} octets"));
        } else {
            self.envelope.from = Some(from);
            self.conn.reply("250 2.1.0 sender OK");
        }
    }

    async fn rcpt(&mut self, to: String) {
        if self.envelope.from.is_none() {
            return self.conn.reply("503 5.5.1 MAIL first");
        }
        if self.envelope.recipients.len() >= MAX_RECIPIENTS {
            return self.conn.reply("452 4.5.3 too many recipients");
        }
        match recipient(&self.services, &to).await {
            Ok(Some(user)) => {
                self.envelope.recipients.push((to, user));
                self.conn.reply("250 2.1.5 recipient OK");
            }
            Ok(None) => {
                count(&self.services, "unknown_user");
                self.conn
                    .reply(&format!("550 5.1.1 <{to}>: no such user here"));
            }
            Err(e) => {
                count(&self.services, "userdb_unavailable");
                tracing::warn!(recipient = %to, "LMTP: {e}");
                self.conn
                    .reply("451 4.3.0 user database unavailable, try again later");
            }
        }
    }

    /// Read the message, then store it for each recipient in turn: one
    /// reply per recipient (RFC 2033 §4.2), each only once stored.
    async fn data(&mut self) -> Flow {
        if self.envelope.recipients.is_empty() {
            self.conn.reply("503 5.5.1 no valid recipients");
            return Flow::Continue;
        }
        self.conn
            .reply("354 2.0.0 send the message, end with a line holding only .");
        let limit = self.limit;
        let mut body = DataBody::new(limit);
        let mut long_line = false;
        loop {
            match self.conn.next(DATA_LINE, &self.services).await {
                Next::Line(l) => {
                    if body.line(&l, self.conn.input.last_ended_crlf()) == DataLine::End {
                        break;
                    }
                }
                Next::TooLong => long_line = true,
                // Nothing stored: the MTA still has the message.
                Next::Closed | Next::TimedOut | Next::ShuttingDown => return Flow::Stop,
            }
        }
        let from = self.envelope.from.take().unwrap_or_default();
        for (to, user) in std::mem::take(&mut self.envelope.recipients) {
            let answer = if long_line {
                "554 5.6.0 a line of the message is too long".to_owned()
            } else if body.too_large() {
                count(&self.services, "too_large");
                format!("552 5.3.4 <{to}>: messages are limited to {limit} octets")
            } else {
                deliver(&self.services, &from, &to, &user, &body.message).await
            };
            crate::crash_point!("lmtp-stored-before-reply");
            self.conn.reply(&answer);
        }
        Flow::Continue
    }

    /// RFC 3207: TLS from here on, and everything starts over.
    async fn starttls(&mut self) -> Flow {
        let tls = self.services.tls.clone();
        let Some(acceptor) = tls.filter(|_| !self.conn.io.is_tls()) else {
            self.conn.reply("502 5.5.1 STARTTLS not available");
            return Flow::Continue;
        };
        self.conn.reply("220 2.0.0 ready to start TLS");
        if self.conn.flush().await.is_err() {
            return Flow::Stop;
        }
        // Nothing sent in plaintext after STARTTLS is executed.
        self.conn.input.clear();
        let Transport::Plain(plain) = std::mem::replace(&mut self.conn.io, Transport::Upgrading)
        else {
            return Flow::Stop;
        };
        let deadline = self.services.config.server.unauth_timeout;
        match tokio::time::timeout(deadline, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => self.conn.io = Transport::Tls(Box::new(tls)),
            _ => {
                self.services.metrics.tls_handshake_failures.inc();
                return Flow::Stop;
            }
        }
        self.greeted = false;
        self.envelope = Envelope::default();
        Flow::Continue
    }
}

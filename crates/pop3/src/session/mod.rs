// SPDX-License-Identifier: AGPL-3.0-only
//! One task per connection: read lines, run commands, write replies in
//! order (RFC 2449 PIPELINING), stream message bodies, upgrade with STLS
//! (RFC 2595), and enforce the idle timers (RFC 1939 §3).

mod bodies;
pub mod tls_facts;
pub mod transport;
mod upgrade;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

use crate::auth::sasl::Mechanism;
use crate::op::exchange::{Exchange, Next};
use crate::op::{self, Connection, Outcome, SessionStats, State};
use crate::protocol::lines::{Line, LineBuffer};
use crate::protocol::{self, Command, Reply, RespCode};
use crate::security::{Pacer, Rule};
use crate::services::Services;
use crate::store::StoreError;
pub use transport::Transport;

/// Bytes read per call while waiting for commands.
const READ_SIZE: usize = 4096;

/// Longest SASL continuation line (OAuth tokens exceed 255 octets).
const MAX_SASL_LINE: usize = 64 * 1024;

/// Why a session ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Quit,
    ClientClosed,
    Timeout,
    Closed,
    IoError,
    TlsFailed,
    Shutdown,
}

/// How a session ended and what it did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub end: End,
    pub stats: SessionStats,
}

/// A running session over stream `S`.
pub struct Session<S> {
    io: Transport<S>,
    input: LineBuffer,
    output: Vec<u8>,
    /// From the pool; returned when the session ends.
    /// Command input: small, since an idle session should cost little.
    read_buf: Box<[u8; READ_SIZE]>,
    state: State,
    conn: Connection,
    services: Arc<Services>,
    stats: SessionStats,
    /// None for trusted addresses.
    pacer: Option<Pacer>,
    /// No command line has been read yet.
    fresh: bool,
    /// The login must have succeeded by then (`server.login_timeout`).
    login_deadline: tokio::time::Instant,
}

enum Flow {
    Continue,
    Stop(End),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub fn new(io: Transport<S>, conn: Connection, services: Arc<Services>) -> Self {
        let sec = &services.config.security;
        let login_deadline = tokio::time::Instant::now() + services.config.server.login_timeout;
        let pacer = (!services.guard.is_trusted(conn.peer.ip()))
            .then(|| Pacer::new(sec.max_commands_per_minute, sec.min_command_delay));
        Session {
            io,
            input: LineBuffer::default(),
            output: Vec::new(),
            read_buf: Box::new([0u8; READ_SIZE]),
            state: State::default(),
            conn,
            services,
            stats: SessionStats::default(),
            pacer,
            fresh: true,
            login_deadline,
        }
    }

    /// Count the login deadline from an earlier moment than now (the
    /// connection's start, before a TLS handshake).
    pub fn login_by(mut self, deadline: tokio::time::Instant) -> Self {
        self.login_deadline = deadline;
        self
    }

    /// Send the greeting and serve commands until the session ends.
    pub async fn run(mut self) -> Summary {
        let cfg = &self.services.config.server;
        // Which node answered, when nodes are named (before the APOP
        // timestamp, which clients look for at the end).
        let named = match &cfg.node_name {
            Some(node) => format!("{} ({node})", cfg.greeting),
            None => cfg.greeting.clone(),
        };
        let greeting = match &self.conn.apop_timestamp {
            Some(ts) => format!("{named} {ts}"),
            None => named,
        };
        Reply::ok(greeting).encode(&mut self.output);
        let end = self.serve().await;
        // Ended without QUIT: nothing is deleted, the lock is let go.
        if let State::Transaction(t) = std::mem::take(&mut self.state) {
            t.maildrop.release().await;
        }
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.io.shutdown()).await;
        Summary {
            end,
            stats: std::mem::take(&mut self.stats),
        }
    }

    /// When waiting for input ends the session, and whether that is the
    /// login deadline rather than the idle timer.
    fn wait_until(&self) -> (tokio::time::Instant, bool) {
        let now = tokio::time::Instant::now();
        match self.state {
            State::Authorization { .. } => {
                let idle = now + self.services.config.server.unauth_timeout;
                (idle.min(self.login_deadline), self.login_deadline <= idle)
            }
            State::Transaction(_) => (now + self.services.config.server.session_timeout, false),
        }
    }

    async fn serve(&mut self) -> End {
        let max_line = self.services.config.protocol.max_line_length;
        let protocol = &self.services.config.protocol;
        // Without PIPELINING every reply goes out on its own.
        let max_batch = if protocol.enable_pipelining {
            protocol.max_pipelined_commands
        } else {
            1
        };
        loop {
            let mut answered = 0;
            while let Some(line) = self.input.next_line(max_line) {
                let flow = match line {
                    Line::TooLong => {
                        self.services.metrics.command("overlong", false);
                        Reply::err("Line too long").encode(&mut self.output);
                        match self.suspicious(Rule::ProtocolViolation) {
                            Flow::Continue => self.pace("overlong").await,
                            stop => stop,
                        }
                    }
                    Line::Complete(bytes) => self.command(&bytes).await,
                };
                if let Flow::Stop(end) = flow {
                    return end;
                }
                answered += 1;
                let batch_full = answered % max_batch == 0
                    || self.output.len() >= self.services.buffers.buffer_size();
                if batch_full && self.flush().await.is_err() {
                    return End::IoError;
                }
            }
            if self.flush().await.is_err() {
                return End::IoError;
            }
            if let Err(end) = self.fill().await {
                return end;
            }
        }
    }

    /// Read more input. Waiting here is "idle": a shutdown or the idle
    /// timer ends the session (nothing is deleted), a command under way is
    /// never cut.
    async fn fill(&mut self) -> Result<(), End> {
        let (until, login_deadline) = self.wait_until();
        let shutdown = self.services.shutdown.clone();
        // Waiting for the client: give back what a big reply made the
        // output buffer grow to.
        if self.output.is_empty() && self.output.capacity() > READ_SIZE {
            self.output = Vec::new();
        }
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                Reply::err_code(RespCode::SysTemp, "Server shutting down, try again later").encode(&mut self.output);
                return Err(End::Shutdown);
            }
            r = tokio::time::timeout_at(until, self.io.read(&mut self.read_buf[..])) => r,
        };
        match read {
            Ok(Ok(0)) => Err(End::ClientClosed),
            Ok(Ok(n)) => {
                // A TLS ClientHello where plain text was due: a scanner or
                // a client configured for the wrong port.
                if self.fresh
                    && !self.conn.secure
                    && self.input.pending() == 0
                    && self.read_buf[..n].starts_with(&[0x16, 0x03])
                {
                    self.fresh = false;
                    return match self.suspicious(Rule::TlsOnPlainPort) {
                        Flow::Stop(end) => Err(end),
                        Flow::Continue => Err(End::Closed),
                    };
                }
                self.input.extend(&self.read_buf[..n]);
                Ok(())
            }
            Ok(Err(_)) => Err(End::IoError),
            Err(_) if login_deadline => {
                self.services.metrics.login_timeouts.inc();
                Reply::err_code(RespCode::SysTemp, "Login took too long").encode(&mut self.output);
                Err(End::Timeout)
            }
            Err(_) => {
                Reply::err("Disconnected for inactivity").encode(&mut self.output);
                Err(End::Timeout)
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let timeout = self.services.config.server.session_timeout;
        let result = tokio::time::timeout(timeout, async {
            self.io.write_all(&self.output).await?;
            self.io.flush().await
        })
        .await;
        let n = self.output.len() as u64;
        self.output.clear();
        match result {
            Ok(Ok(())) => {
                self.services.metrics.bytes_sent.inc_by(n);
                self.stats.bytes_sent += n;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            )),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let fresh = std::mem::replace(&mut self.fresh, false);
        let before_login = matches!(self.state, State::Authorization { .. });
        let cmd = match protocol::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.services.metrics.command("unknown", false);
                // A web scanner's first line; later in a session it is just
                // an unknown command.
                let rule = if fresh && looks_like_http(line) {
                    Some(Rule::HttpRequest)
                } else if before_login && is_garbage(line) {
                    Some(Rule::Garbage)
                } else if e == protocol::ParseError::UnknownCommand {
                    Some(Rule::UnknownCommand)
                } else {
                    None
                };
                if rule == Some(Rule::HttpRequest) {
                    Reply::err("This is a POP3 server").encode(&mut self.output);
                } else {
                    Reply::err(e.to_string()).encode(&mut self.output);
                }
                if let Some(rule) = rule
                    && let Flow::Stop(end) = self.suspicious(rule)
                {
                    return Flow::Stop(end);
                }
                return self.pace("unknown").await;
            }
        };
        let name = cmd.name();
        if matches!(cmd, Command::Stls)
            && self.conn.secure
            && let Flow::Stop(end) = self.suspicious(Rule::RepeatedStls)
        {
            return Flow::Stop(end);
        }
        let timed = matches!(cmd, Command::Pass(_) | Command::Apop { .. });
        let started = Instant::now();
        let outcome = op::dispatch(
            cmd,
            &mut self.state,
            &mut self.conn,
            &self.services,
            &mut self.stats,
        )
        .await;
        if timed {
            self.services
                .metrics
                .login_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        // An AUTH is counted when its exchange has ended, by how it ended
        // (and paced then, as a login attempt).
        let result = succeeded(&outcome);
        if let Some(ok) = result {
            self.services.metrics.command(name, ok);
        }
        let ok = result.unwrap_or(true);
        let wrong_state = matches!(outcome, Outcome::WrongState(_));
        let flow = self.outcome(outcome).await;
        if let Flow::Stop(end) = flow {
            return Flow::Stop(end);
        }
        if wrong_state && let Flow::Stop(end) = self.suspicious(Rule::ProtocolViolation) {
            return Flow::Stop(end);
        }
        if before_login || !ok {
            return self.pace(name).await;
        }
        Flow::Continue
    }

    /// Score a rule against the client's address; stop if that blocked it
    /// or if the rule closes the connection by itself.
    fn suspicious(&mut self, rule: Rule) -> Flow {
        let ip = self.conn.peer.ip();
        let blocked = self.services.guard.flag(ip, rule);
        if blocked {
            Reply::err_code(
                RespCode::SysTemp,
                "Too many errors from your address, try again later",
            )
            .encode(&mut self.output);
            return Flow::Stop(End::Closed);
        }
        if rule.closes() {
            return Flow::Stop(End::Closed);
        }
        Flow::Continue
    }

    /// Charge a paced command (before login, or failing); when over the
    /// pace, flush what is answered and wait before reading on.
    async fn pace(&mut self, command: &str) -> Flow {
        let Some(pacer) = self.pacer.as_mut() else {
            return Flow::Continue;
        };
        let wait = pacer.charge(Instant::now());
        if wait.is_zero() {
            return Flow::Continue;
        }
        let ip = self.conn.peer.ip();
        self.services.metrics.rate_limited.inc();
        self.services.guard.log().rate_limited(
            ip,
            self.stats.user.as_deref(),
            command,
            wait.as_millis() as u64,
        );
        if let Flow::Stop(end) = self.suspicious(Rule::Flood) {
            return Flow::Stop(end);
        }
        if self.flush().await.is_err() {
            return Flow::Stop(End::IoError);
        }
        tokio::time::sleep(wait).await;
        Flow::Continue
    }

    async fn outcome(&mut self, outcome: Outcome) -> Flow {
        match outcome {
            Outcome::Reply(r) | Outcome::WrongState(r) => {
                r.encode(&mut self.output);
                Flow::Continue
            }
            Outcome::Close(r) => {
                r.encode(&mut self.output);
                Flow::Stop(if r.is_ok() { End::Quit } else { End::Closed })
            }
            Outcome::Body {
                status,
                index,
                encoder,
            } => {
                let started = Instant::now();
                let flow = self.body(status, index, encoder).await;
                self.services
                    .metrics
                    .retr_seconds
                    .observe(started.elapsed().as_secs_f64());
                flow
            }
            Outcome::StartTls(r) => self.start_tls(r).await,
            Outcome::Sasl {
                mechanism,
                initial_response,
            } => Box::pin(self.sasl(mechanism, initial_response)).await,
        }
    }
}
/// Whether a command's outcome is a success; `None` for an AUTH whose
/// exchange is still to run.
fn succeeded(outcome: &Outcome) -> Option<bool> {
    match outcome {
        Outcome::Reply(r)
        | Outcome::Close(r)
        | Outcome::Body { status: r, .. }
        | Outcome::StartTls(r)
        | Outcome::WrongState(r) => Some(r.is_ok()),
        Outcome::Sasl { .. } => None,
    }
}

/// A web client's request line (a scanner on the wrong port).
fn looks_like_http(line: &[u8]) -> bool {
    const METHODS: [&[u8]; 8] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
    ];
    METHODS.iter().any(|m| line.starts_with(m)) && memchr::memmem::find(line, b" HTTP/").is_some()
}

/// Bytes no POP3 client sends in a command: controls other than tab, and
/// text that is not UTF-8.
fn is_garbage(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_err() || line.iter().any(|b| b.is_ascii_control() && *b != b'\t')
}

/// The reply sent when a connection is refused before the greeting.
pub fn refusal(text: &str) -> Vec<u8> {
    Reply::err_code(RespCode::SysTemp, text).to_bytes()
}

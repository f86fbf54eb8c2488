// SPDX-License-Identifier: AGPL-3.0-only
//! Commands, one module per family. Each takes the session state and the
//! connection context and returns an [`Outcome`]; none touches a socket.
//! Which command is legal in which state is decided here, in [`dispatch`].

mod app_password;
pub mod authenticate;
mod breached;
pub mod capa;
pub mod exchange;
pub mod maildrop;
pub mod mechanisms;
pub mod retrieve;
pub mod update;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::UserRecord;
use crate::auth::sasl::Mechanism;
use crate::protocol::{BodyEncoder, Command, Reply, RespCode};
use crate::services::Services;
use crate::store::{Maildrop, StoreError};

/// Facts about the connection that commands depend on.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    /// TLS is active (implicit, or after STLS).
    pub secure: bool,
    /// STLS may still be offered on this connection.
    pub stls_available: bool,
    /// The `<...>` of the greeting, when APOP is enabled.
    pub apop_timestamp: Option<String>,
    /// `tls-exporter` channel binding (RFC 9266) for SCRAM -PLUS; only on
    /// TLS 1.3, where the exporter is safe without extended master secret.
    pub channel_binding: Option<Vec<u8>>,
    /// The user a verified TLS client certificate maps to (EXTERNAL).
    pub client_identity: Option<String>,
    /// The client sent UTF8 (RFC 6856): internationalized messages go out
    /// as they are; without it their headers are downgraded.
    pub utf8: bool,
}

impl Connection {
    /// May passwords travel in the clear here? Always over TLS and from
    /// loopback; elsewhere only when the operator allows it.
    pub fn plaintext_allowed(&self, services: &Services) -> bool {
        self.secure || services.config.auth.allow_plaintext || self.peer.ip().is_loopback()
    }
}

/// The session state of RFC 1939 §3, carrying its data.
pub enum State {
    Authorization {
        /// Name given by USER, waiting for PASS.
        user: Option<String>,
        failures: u32,
    },
    Transaction(Box<Transaction>),
}

impl Default for State {
    fn default() -> Self {
        State::Authorization {
            user: None,
            failures: 0,
        }
    }
}

/// An open maildrop and the session's marks on it.
pub struct Transaction {
    pub user: Arc<UserRecord>,
    pub maildrop: Box<dyn Maildrop>,
    pub deleted: Vec<bool>,
    /// Retrieved whole with RETR (TOP does not count, as in Dovecot).
    pub retrieved: Vec<bool>,
    /// ANONYMOUS sessions: DELE is refused, so UPDATE removes nothing.
    pub read_only: bool,
}

/// What the session-end log line reports (Dovecot's `pop3_logout_format`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub user: Option<String>,
    pub retrieved: u64,
    pub deleted: usize,
    pub bytes_sent: u64,
}

impl Transaction {
    /// The 0-based index of a live (not deleted) message.
    pub fn live_index(&self, number: u32) -> Result<usize, Reply> {
        let i = (number as usize).wrapping_sub(1);
        match self.deleted.get(i) {
            None => Err(Reply::err(format!(
                "no such message, only {} messages in maildrop",
                self.deleted.len()
            ))),
            Some(true) => Err(Reply::err(format!("message {number} already deleted"))),
            Some(false) => Ok(i),
        }
    }
}

/// What the session must do after a command.
pub enum Outcome {
    Reply(Reply),
    /// Send `status`, then stream message `index` through `encoder`.
    Body {
        status: Reply,
        index: usize,
        encoder: BodyEncoder,
    },
    /// Send `+OK`, drop buffered plaintext and start TLS.
    StartTls(Reply),
    /// Run a SASL exchange, starting from the initial response if any.
    Sasl {
        mechanism: Box<dyn Mechanism>,
        initial_response: Option<Vec<u8>>,
    },
    /// Send the reply and close the connection.
    Close(Reply),
    /// A command not valid in this state: send the reply; it counts as a
    /// protocol violation.
    WrongState(Reply),
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Outcome::Reply(r)
    }
}

/// The reply for a storage error (RFC 3206 codes).
pub fn store_error_reply(e: &StoreError) -> Reply {
    match e {
        StoreError::InUse => {
            Reply::err_code(RespCode::InUse, "Maildrop is locked by another session")
        }
        StoreError::MessageGone => Reply::err("Message was removed by another program"),
        StoreError::Temporary(_) => {
            Reply::err_code(RespCode::SysTemp, "Mailbox temporarily unavailable")
        }
        StoreError::Full(_) => Reply::err_code(
            RespCode::SysTemp,
            "The mail storage is full; try again later",
        ),
        StoreError::Permanent(_) | StoreError::TooLarge(_) | StoreError::OverQuota => {
            Reply::err_code(RespCode::SysPerm, "Mailbox unavailable")
        }
    }
}

/// Run one parsed command.
pub async fn dispatch(
    cmd: Command,
    state: &mut State,
    conn: &mut Connection,
    services: &Services,
    stats: &mut SessionStats,
) -> Outcome {
    use Command as C;
    match (cmd, &mut *state) {
        (C::Capa, _) => capa::capa(state, conn, services).into(),
        (C::Noop, State::Transaction(_)) => Reply::ok("").into(),
        (C::Quit, _) => update::quit(state, services, stats).await,
        (C::Utf8, _) => capa::utf8(conn, services).into(),
        (C::Stls, State::Authorization { .. }) => capa::stls(conn, services),
        (C::User(name), State::Authorization { .. }) => {
            authenticate::user(state, conn, services, name).into()
        }
        (C::Pass(pw), State::Authorization { .. }) => {
            authenticate::pass(state, conn, services, stats, pw).await
        }
        (C::Apop { user, digest }, State::Authorization { .. }) => {
            authenticate::apop(state, conn, services, stats, &user, &digest).await
        }
        (
            C::Auth {
                mechanism,
                initial_response,
            },
            State::Authorization { .. },
        ) => mechanisms::auth(conn, services, mechanism, initial_response),
        (C::Stat, State::Transaction(t)) => maildrop::stat(t).into(),
        (C::List(n), State::Transaction(t)) => maildrop::list(t, n).into(),
        (C::Uidl(n), State::Transaction(t)) if services.config.protocol.enable_uidl => {
            maildrop::uidl(t, n).into()
        }
        (C::Dele(n), State::Transaction(t)) => maildrop::dele(t, n).into(),
        (C::Rset, State::Transaction(t)) => maildrop::rset(t).into(),
        (C::Retr(n), State::Transaction(t)) => retrieve::retr(t, services, n),
        (C::Top(n, lines), State::Transaction(t)) if services.config.protocol.enable_top => {
            retrieve::top(t, services, n, lines)
        }
        (C::Uidl(_), State::Transaction(_)) | (C::Top(..), State::Transaction(_)) => {
            Reply::err("Command disabled").into()
        }
        (cmd, State::Authorization { .. }) => Outcome::WrongState(Reply::err(format!(
            "{} is not valid before login",
            cmd.name()
        ))),
        (cmd, State::Transaction(_)) => Outcome::WrongState(Reply::err(format!(
            "{} is not valid after login",
            cmd.name()
        ))),
    }
}

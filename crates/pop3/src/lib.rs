// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3`: a POP3 server library (RFC 1939, 2449, 2595, 3206, 5034, 6856).
//!
//! The layers, top to bottom (each module may use only those below it;
//! the test `layers_only_point_down` reads every source file against
//! [`LAYERS`]): [`server`] (listeners, admission), [`lmtp`] and
//! `session` (one task per connection), `op` (one module per command
//! family), [`setup`] and [`services`] (the parts a session receives),
//! [`store`] (maildrops), [`auth`] (users, schemes, SASL), [`security`]
//! (limits, blocks, the security log), [`db`] (the PostgreSQL pool and
//! schema), [`telemetry`], [`client`] (the POP3 client of `import-pop3`),
//! [`tls`], [`config`], [`protocol`] (sans-IO), and the ground floor:
//! [`safe_fs`] and `hex`.

// No unsafe code, except one FFI call in the optional GSSAPI module
// (auth/sasl/gssapi.rs), allowed there alone.
#![cfg_attr(not(feature = "gssapi"), forbid(unsafe_code))]
#![cfg_attr(feature = "gssapi", deny(unsafe_code))]

/// A named point where mail changes hands. Built with the `failpoints`
/// feature, the `FAILPOINTS` environment variable can stop the process
/// there (`NAME=panic` in a binary built with `panic = "abort"`, as the
/// crash-point tests do; docs/testing.md); otherwise it is nothing at all.
macro_rules! crash_point {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    }};
}
pub(crate) use crash_point;

pub mod auth;
pub mod client;
pub mod config;
pub mod db;
mod hex;
pub mod lmtp;
pub(crate) mod op;
pub mod protocol;
pub mod safe_fs;
pub mod security;
pub mod server;
pub mod services;
pub(crate) mod session;
pub mod setup;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use server::{Pop3SessionManager, Server, ServerError};

/// The modules from the top floor down; see the crate's documentation.
pub const LAYERS: &[&str] = &[
    "server",
    "lmtp",
    "session",
    "op",
    "setup",
    "services",
    "store",
    "auth",
    "security",
    "db",
    "telemetry",
    "client",
    "tls",
    "config",
    "protocol",
    "safe_fs",
    "hex",
];

/// The README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The embedding example of docs/architecture.md, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/architecture.md")]
pub struct ArchitectureDoctests;

// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3`: a POP3 server library (RFC 1939, 2449, 2595, 3206, 5034, 6856).
//!
//! The layers, top to bottom: [`server`] (listeners, admission, TLS),
//! [`session`] (one task per connection), [`protocol`] (sans-IO codec),
//! [`op`] (one module per command family), [`auth`] (users, schemes,
//! SASL), [`store`] (maildrops), [`db`] (the PostgreSQL pool and schema
//! both can use), [`config`]; [`setup`] turns a configuration file into
//! checked parts.
// No unsafe code, except one FFI call in the optional GSSAPI module
// (auth/sasl/gssapi.rs), allowed there alone.
#![cfg_attr(not(feature = "gssapi"), forbid(unsafe_code))]
#![cfg_attr(feature = "gssapi", deny(unsafe_code))]

pub mod auth;
pub mod client;
pub mod config;
pub mod db;
mod hex;
pub mod lmtp;
pub mod op;
pub mod protocol;
pub mod safe_fs;
pub mod security;
pub mod server;
pub mod services;
pub mod session;
pub mod setup;
pub mod store;
pub mod telemetry;

pub use server::{Pop3SessionManager, Server, ServerError};

/// The README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

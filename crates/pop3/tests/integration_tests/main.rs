// SPDX-License-Identifier: AGPL-3.0-only
//! The `pop3` crate's integration tests, one binary with a module per area:
//! real servers on loopback driven by a test client that asserts on the
//! raw bytes of replies. Run with
//! `cargo test --package pop3 --test integration_tests`.

mod common;

mod abuse;
mod attacks;
mod auth_cache;
mod client;
mod full_disk;
mod layers;
mod ldap;
mod mysql;
mod operations;
mod postgres;
mod random_input;
mod retention;
mod rfc1939;
mod session;
mod tls;
mod user_policy;

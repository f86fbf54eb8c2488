// SPDX-License-Identifier: AGPL-3.0-only
//! The `pop3d` binary's integration tests, one test binary with a module
//! per area: the real daemon on loopback ports, real clients and tools
//! against it. The GSSAPI test stays apart (`--test gssapi`) because it
//! needs the `gssapi` feature and a KDC.

mod common;
#[path = "../../../pop3/tests/integration_tests/postgres_server.rs"]
mod postgres_server;

mod attack_tools;
mod attacks;
mod cli;
mod cluster;
mod courier;
mod daemon;
mod documented;
mod dovecot;
mod lmtp;
mod operator;
mod postgres;
mod real_clients;
mod retention;
mod sasl_clients;

// SPDX-License-Identifier: AGPL-3.0-only
//! The `pop3d` binary's integration tests, one test binary with a module
//! per area: the real daemon on loopback ports, real clients and tools
//! against it. The GSSAPI module is built only with the `gssapi` feature
//! (it needs libkrb5 and a KDC): `cargo test -p pop3d --features gssapi
//! --test integration_tests gssapi`.

mod common;

mod app_passwords;
mod attack_tools;
mod attacks;
mod cli;
mod cluster;
mod courier;
mod crash_points;
mod daemon;
mod documented;
mod dovecot;
#[cfg(feature = "gssapi")]
mod gssapi;
mod lmtp;
mod operator;
mod postgres;
mod real_clients;
mod retention;
mod sasl_clients;

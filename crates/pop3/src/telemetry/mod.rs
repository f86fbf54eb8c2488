// SPDX-License-Identifier: AGPL-3.0-only
//! Metrics and the operator's HTTP endpoints.

pub mod http;
pub mod metrics;

pub use metrics::Metrics;

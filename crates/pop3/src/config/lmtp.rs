// SPDX-License-Identifier: AGPL-3.0-only
//! `[[lmtp]]`: where pop3d takes mail from an MTA (RFC 2033).
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[[lmtp]]`: one LMTP listener, on TCP (`bind`) or a Unix socket
/// (`path`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmtpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// A Unix socket (Postfix's `lmtp:unix:`); replaced at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Connections at once; more are answered `421` and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    32
}

impl LmtpConfig {
    /// How the listener is named in logs and metrics.
    pub fn name(&self) -> String {
        match (&self.bind, &self.path) {
            (Some(a), _) => a.to_string(),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "lmtp".into(),
        }
    }
}

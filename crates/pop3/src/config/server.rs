// SPDX-License-Identifier: AGPL-3.0-only
//! `[server]`: identity, greeting, timers and limits of a session.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[server]`: identity, greeting and timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Text after `+OK` in the greeting.
    pub greeting: String,
    /// Host name used in the APOP timestamp `<pid.nonce@hostname>`.
    pub hostname: String,
    /// Messages larger than this many octets are listed but RETR/TOP refuse
    /// them with `-ERR [SYS/PERM]`; 0 means no limit.
    pub max_message_size: u64,
    /// Idle time allowed after login (RFC 1939: at least 10 minutes).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Idle time allowed before login.
    #[serde(with = "humantime_serde")]
    pub unauth_timeout: Duration,
    pub enable_apop: bool,
    pub enable_utf8: bool,
    pub enable_stls: bool,
    /// Least time between two logins of one user (RFC 2449 LOGIN-DELAY);
    /// 0 disables it.
    #[serde(with = "humantime_serde")]
    pub login_delay: Duration,
    /// On SIGTERM/SIGINT: how long sessions may take to finish before the
    /// process exits (nothing is deleted for a session cut short).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// This node's name among several sharing one database: in maildrop
    /// leases, so unique per node. The hostname when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

impl ServerConfig {
    /// The node name in effect.
    pub fn node(&self) -> &str {
        self.node_name.as_deref().unwrap_or(&self.hostname)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            greeting: "POP3 server ready".into(),
            hostname: default_hostname(),
            max_message_size: 0,
            session_timeout: Duration::from_secs(600),
            unauth_timeout: Duration::from_secs(60),
            enable_apop: false,
            enable_utf8: true,
            enable_stls: true,
            login_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            node_name: None,
        }
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

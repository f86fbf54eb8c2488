// SPDX-License-Identifier: AGPL-3.0-only
//! `[security]`: limits, blocking, pacing and the security log.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Failed logins from one address within `auth_window` before it is
    /// blocked; also the failures one session may make before it is closed.
    pub max_auth_attempts: u32,
    /// The window in which failures (and suspicious scores) are counted.
    #[serde(with = "humantime_serde")]
    pub auth_window: Duration,
    /// How long a blocked address stays blocked.
    #[serde(with = "humantime_serde")]
    pub auto_block_duration: Duration,
    /// Delay before answering a failed login; doubles with each further
    /// failure from the address within the window, up to 16 times.
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    /// Failures against one user (from any addresses) within the window
    /// after which every login attempt for that user is slowed.
    pub max_user_auth_failures: u32,
    /// The delay added to each login attempt for such a user.
    #[serde(with = "humantime_serde")]
    pub user_throttle_delay: Duration,
    /// Addresses exempt from blocking, scoring and pacing.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Who may deliver over LMTP (which has no authentication). Unix
    /// sockets are guarded by their file permissions instead.
    pub lmtp_trusted_networks: Vec<ipnet::IpNet>,
    /// Failure counters, scores and blocks shared by every node:
    /// `redis://HOST:PORT` (`rediss://` for TLS). Read at start.
    /// A password in the URL is refused (check-config prints it, logs
    /// show it): it goes in `shared_state_password_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_state: Option<String>,
    /// A file holding the Redis password (`requirepass`, or the ACL user's
    /// named in the URL as `redis://USER@HOST`); trailing newline ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_state_password_file: Option<PathBuf>,
    /// Where the block list is kept across restarts; none keeps it in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_list_file: Option<PathBuf>,
    /// Simultaneous connections from one address.
    pub max_connections_per_ip: u32,
    /// Pace for commands that cost the server without serving mail: every
    /// command before login, and failing commands after it.
    pub max_commands_per_minute: u32,
    /// Least time between two such commands.
    #[serde(with = "humantime_serde")]
    pub min_command_delay: Duration,
    pub enable_security_logging: bool,
    /// Security events as JSON lines to this file; none writes them to
    /// standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_log_file: Option<PathBuf>,
    /// Score at which an address is blocked for `auto_block_duration`.
    pub suspicious_threshold: u32,
    /// IPv6 clients are counted, limited and blocked by this prefix of
    /// their address (one /64 is usually one customer), so rotating
    /// through a network's addresses gains nothing. 128 treats each
    /// address alone.
    pub ipv6_prefix: u8,
    /// Whether a loopback address may be blocked as a whole. Off by
    /// default: a local proxy or webmail without PROXY protocol shows every
    /// user as 127.0.0.1, and one bad password would lock them all out.
    /// Per-user throttles apply either way.
    pub block_loopback: bool,
    /// The opposite of `auth.allow_plaintext`, for configurations written
    /// that way; setting both inconsistently is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_tls_for_auth: Option<bool>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            max_auth_attempts: 5,
            auth_window: Duration::from_secs(900),
            auto_block_duration: Duration::from_secs(900),
            auth_failure_delay: Duration::from_millis(500),
            max_user_auth_failures: 20,
            user_throttle_delay: Duration::from_secs(2),
            trusted_networks: Vec::new(),
            shared_state: None,
            shared_state_password_file: None,
            lmtp_trusted_networks: vec![
                "127.0.0.0/8".parse().expect("a network"),
                "::1/128".parse().expect("a network"),
            ],
            block_list_file: None,
            max_connections_per_ip: 20,
            max_commands_per_minute: 120,
            min_command_delay: Duration::ZERO,
            enable_security_logging: true,
            security_log_file: None,
            suspicious_threshold: 100,
            ipv6_prefix: 64,
            block_loopback: false,
            require_tls_for_auth: None,
        }
    }
}

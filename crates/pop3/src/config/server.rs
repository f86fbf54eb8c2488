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
    /// Total time from the connection's start (TLS handshake included) to
    /// a successful login; input does not renew it, so a client trickling
    /// bytes cannot hold a session slot for hours.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
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
    /// On SIGTERM/SIGINT, first this long with `/readyz` failing while
    /// connections are still accepted, so that a balancer's health checks
    /// move new sessions elsewhere before the listeners close.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// This node's name among several sharing one database: in maildrop
    /// leases, so unique per node. The machine's own host name when unset
    /// (not `hostname`, which names the mail service and is often the same
    /// on every node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The machine's host name, read at start (not a configuration key).
    #[serde(skip, default = "machine_name")]
    pub machine: String,
    /// This process is an administration command (`restore`,
    /// `import-pop3`, ...), not a node: its maildrop leases carry a name
    /// of their own and it claims no node name (not a configuration key).
    #[serde(skip)]
    pub tool_run: bool,
    /// RFC 2449 EXPIRE as policy: how long a message is kept after its
    /// first retrieval. Advertised in CAPA and enforced; per user from the
    /// user database (`expire`).
    pub expire: Expire,
}

/// A retention period for retrieved messages (RFC 2449 §6.7), in whole
/// days: `"never"`, `"0"` (removed at the QUIT after its retrieval, even
/// without DELE) or a duration like `"30d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expire {
    #[default]
    Never,
    Days(u32),
}

impl Expire {
    pub fn parse(text: &str) -> Result<Expire, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("never") {
            return Ok(Expire::Never);
        }
        if let Ok(days) = text.parse::<u32>() {
            return Ok(Expire::Days(days));
        }
        let d = humantime::parse_duration(text).map_err(|e| {
            format!("{text:?}: {e}; use \"never\", \"0\" or a duration like \"30d\"")
        })?;
        if d.as_secs() % 86400 != 0 || d.subsec_nanos() != 0 {
            return Err(format!(
                "{text:?}: EXPIRE counts whole days (RFC 2449 §6.7); use a multiple of 1d"
            ));
        }
        u32::try_from(d.as_secs() / 86400)
            .map(Expire::Days)
            .map_err(|_| format!("{text:?} is too long"))
    }

    /// The CAPA argument: `NEVER` or the days.
    pub fn capa(&self) -> String {
        match self {
            Expire::Never => "NEVER".into(),
            Expire::Days(d) => d.to_string(),
        }
    }

    /// How long a retrieved message is kept; `None` for ever.
    pub fn period(&self) -> Option<Duration> {
        match self {
            Expire::Never => None,
            Expire::Days(d) => Some(Duration::from_secs(u64::from(*d) * 86400)),
        }
    }
}

impl Serialize for Expire {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expire::Never => s.serialize_str("never"),
            Expire::Days(d) => s.serialize_str(&format!("{d}d")),
        }
    }
}

impl<'de> Deserialize<'de> for Expire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Days(n) => Ok(Expire::Days(n)),
            Raw::Text(t) => Expire::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl ServerConfig {
    /// The node name in effect.
    pub fn node(&self) -> &str {
        self.node_name.as_deref().unwrap_or(&self.machine)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            greeting: "POP3 server ready".into(),
            hostname: machine_name(),
            max_message_size: 0,
            session_timeout: Duration::from_secs(600),
            unauth_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(120),
            enable_apop: false,
            enable_utf8: true,
            enable_stls: true,
            login_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            drain_delay: Duration::from_secs(5),
            node_name: None,
            machine: machine_name(),
            tool_run: false,
            expire: Expire::Never,
        }
    }
}

/// The machine's host name (the default `hostname` and `node_name`).
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

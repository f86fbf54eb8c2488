// SPDX-License-Identifier: AGPL-3.0-only
//! `[[listener]]` and `[tls]`: where pop3d listens and how it speaks TLS.
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP; STLS is not offered.
    None,
    /// Plain TCP with STLS (RFC 2595).
    Starttls,
    /// TLS from the first byte (RFC 8314, port 995 style).
    Implicit,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

/// `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    #[serde(default = "default_tls_mode")]
    pub tls: TlsMode,
    /// Expect a PROXY protocol header (v1 or v2) before anything else, even
    /// before the TLS handshake on implicit-TLS listeners.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Addresses allowed to send that header; connections from anywhere
    /// else are closed.
    #[serde(default)]
    pub proxy_trusted_networks: Vec<ipnet::IpNet>,
}

impl ListenerConfig {
    /// A listener without PROXY protocol.
    pub fn new(bind: SocketAddr, tls: TlsMode) -> Self {
        ListenerConfig {
            bind,
            tls,
            proxy_protocol: false,
            proxy_trusted_networks: Vec::new(),
        }
    }
}

/// Mechanisms that log a user in without TLS and without sending the
/// password in the clear.
const WITHOUT_TLS: [&str; 6] = [
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "DIGEST-MD5",
    "NTLM",
    "GSSAPI",
];

/// Listeners on which a client that is not on loopback (behind PROXY,
/// every real client is not) could not log in at all: plaintext refused,
/// no TLS of any kind, and no mechanism that works without it. One warning
/// each, for `check-config`.
pub fn unusable_listeners(c: &super::Pop3Config) -> Vec<String> {
    // (A TLS mode without [tls] is refused by the validation already.)
    let secure_somehow = |l: &ListenerConfig| match l.tls {
        TlsMode::Implicit => true,
        TlsMode::Starttls => c.server.enable_stls,
        TlsMode::None => false,
    };
    let without_tls = WITHOUT_TLS.iter().any(|m| c.mechanism_enabled(m));
    if c.auth.allow_plaintext || without_tls {
        return Vec::new();
    }
    // A listener on loopback reaches only this machine's clients (which
    // may use plaintext), unless a local balancer sends PROXY headers.
    let remote = |l: &ListenerConfig| !l.bind.ip().is_loopback() || l.proxy_protocol;
    c.listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| remote(l) && !secure_somehow(l))
        .map(|(i, l)| {
            format!(
                "listener[{i}] ({}): no client from another address can log in there (plaintext is refused without TLS, auth.allow_plaintext = false; the listener offers {}; no enabled mechanism works without TLS): set tls = \"starttls\"{}",
                l.bind,
                if l.tls == TlsMode::None { "no STLS" } else { "STLS, but server.enable_stls = false" },
                if l.proxy_protocol { " (behind PROXY every client is remote)" } else { "" },
            )
        })
        .collect()
}

fn default_tls_mode() -> TlsMode {
    TlsMode::None
}

/// `[tls]`: certificate chain and key, PEM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA (PEM) that client certificates are verified against. When set,
    /// clients may present a certificate (never required) and AUTH
    /// EXTERNAL logs them in as `auth.external_identity` maps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

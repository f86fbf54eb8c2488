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

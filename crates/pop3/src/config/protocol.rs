// SPDX-License-Identifier: AGPL-3.0-only
//! `[protocol]`: what the POP3 dialogue allows.

use serde::{Deserialize, Serialize};

/// Changes to the bytes RETR and TOP send, for clients that need them
/// (Dovecot's `pop3_client_workarounds` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Workaround {
    /// Leave out NUL octets, which Outlook cannot take.
    #[serde(rename = "outlook-no-nuls")]
    OutlookNoNuls,
    /// Send the empty line that ends the header section when a message
    /// has none (Outlook Express and Netscape Mail need it).
    #[serde(rename = "oe-ns-eoh")]
    OeNsEoh,
}

/// `[protocol]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Longest command line accepted, CRLF included (RFC 2449: at least 255).
    pub max_line_length: usize,
    /// Accepted for old configuration files and otherwise without effect:
    /// no POP3 command takes more than two arguments, and a command given
    /// more than it takes is refused. `check-config` says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_arguments: Option<usize>,
    /// Advertise PIPELINING (RFC 2449) and answer a batch of commands with
    /// one write. Off, every reply is written on its own.
    pub enable_pipelining: bool,
    /// With pipelining, replies are written out at least after this many
    /// commands of one batch.
    pub max_pipelined_commands: usize,
    pub enable_top: bool,
    pub enable_uidl: bool,
    /// TOP returns at most this many body lines.
    pub max_top_lines: u32,
    /// Off by default: RETR sends a message exactly as stored.
    pub client_workarounds: Vec<Workaround>,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            max_line_length: 255,
            max_arguments: None,
            enable_pipelining: true,
            max_pipelined_commands: 100,
            enable_top: true,
            enable_uidl: true,
            max_top_lines: 100_000,
            client_workarounds: Vec::new(),
        }
    }
}

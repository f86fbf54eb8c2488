// SPDX-License-Identifier: AGPL-3.0-only
//! `[protocol]`: what the POP3 dialogue allows.
use serde::{Deserialize, Serialize};

/// `[protocol]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Longest command line accepted, CRLF included (RFC 2449: at least 255).
    pub max_line_length: usize,
    /// Most space-separated arguments one command may carry.
    pub max_arguments: usize,
    pub enable_pipelining: bool,
    /// Commands answered from one read before the replies are flushed.
    pub max_pipelined_commands: usize,
    pub enable_top: bool,
    pub enable_uidl: bool,
    /// TOP returns at most this many body lines.
    pub max_top_lines: u32,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            max_line_length: 255,
            max_arguments: 8,
            enable_pipelining: true,
            max_pipelined_commands: 100,
            enable_top: true,
            enable_uidl: true,
            max_top_lines: 100_000,
        }
    }
}

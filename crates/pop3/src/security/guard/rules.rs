// SPDX-License-Identifier: AGPL-3.0-only
//! The scoring rules of suspicious behaviour and their points.

/// A scoring rule and its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// An HTTP request line on a POP3 port (a web scanner).
    HttpRequest,
    /// A TLS ClientHello on a plaintext port.
    TlsOnPlainPort,
    /// Bytes that are not text before login.
    Garbage,
    UnknownCommand,
    /// A command in the wrong state, an overlong line.
    ProtocolViolation,
    /// STLS again after TLS is up.
    RepeatedStls,
    /// The command pace was exceeded.
    Flood,
    /// A failed login.
    AuthFailure,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::HttpRequest => "http_request",
            Rule::TlsOnPlainPort => "tls_on_plain_port",
            Rule::Garbage => "garbage_before_login",
            Rule::UnknownCommand => "unknown_command",
            Rule::ProtocolViolation => "protocol_violation",
            Rule::RepeatedStls => "repeated_stls",
            Rule::Flood => "command_flood",
            Rule::AuthFailure => "auth_failure",
        }
    }

    pub fn points(self) -> u32 {
        match self {
            Rule::HttpRequest | Rule::TlsOnPlainPort => 50,
            Rule::RepeatedStls => 20,
            Rule::Garbage => 10,
            Rule::UnknownCommand | Rule::ProtocolViolation | Rule::Flood | Rule::AuthFailure => 5,
        }
    }

    /// Rules after which the connection is closed at once.
    pub fn closes(self) -> bool {
        matches!(self, Rule::HttpRequest | Rule::TlsOnPlainPort)
    }
}

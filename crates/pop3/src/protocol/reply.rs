// SPDX-License-Identifier: AGPL-3.0-only
//! Replies and their wire form (RFC 1939 §3, response codes of RFC 2449 §8
//! and RFC 3206). Everything here appends bytes to a buffer; nothing writes
//! to a socket.

use std::fmt;

/// Extended response codes, written in brackets after `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    InUse,
    LoginDelay,
    Auth,
    SysTemp,
    SysPerm,
}

impl RespCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::Auth => "AUTH",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
        }
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reply to one command. Multi-line bodies that come from a message are
/// not here: they are streamed by the session through
/// [`crate::protocol::BodyEncoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err {
        code: Option<RespCode>,
        text: String,
    },
    /// `+OK text` followed by lines and the `.` terminator.
    MultiLine {
        text: String,
        lines: Vec<String>,
    },
    /// A SASL challenge: `+ base64`.
    Continue(String),
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::Ok(text.into())
    }

    pub fn err(text: impl Into<String>) -> Reply {
        Reply::Err {
            code: None,
            text: text.into(),
        }
    }

    pub fn err_code(code: RespCode, text: impl Into<String>) -> Reply {
        Reply::Err {
            code: Some(code),
            text: text.into(),
        }
    }

    pub fn multi(text: impl Into<String>, lines: Vec<String>) -> Reply {
        Reply::MultiLine {
            text: text.into(),
            lines,
        }
    }

    pub fn is_ok(&self) -> bool {
        !matches!(self, Reply::Err { .. })
    }

    /// Append the wire form of this reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok(text) => status_line(out, "+OK", text),
            Reply::Err { code, text } => {
                out.extend_from_slice(b"-ERR");
                if let Some(code) = code {
                    out.extend_from_slice(b" [");
                    out.extend_from_slice(code.as_str().as_bytes());
                    out.push(b']');
                }
                if !text.is_empty() {
                    out.push(b' ');
                    out.extend_from_slice(text.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            Reply::MultiLine { text, lines } => {
                status_line(out, "+OK", text);
                for line in lines {
                    if line.starts_with('.') {
                        out.push(b'.');
                    }
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            Reply::Continue(data) => status_line(out, "+", data),
        }
    }

    /// The wire form as a fresh buffer (tests and logs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

fn status_line(out: &mut Vec<u8>, status: &str, text: &str) {
    out.extend_from_slice(status.as_bytes());
    if !text.is_empty() || status == "+" {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Reply::ok("2 320").to_bytes(), b"+OK 2 320\r\n");
        assert_eq!(Reply::ok("").to_bytes(), b"+OK\r\n");
        assert_eq!(
            Reply::err("no such message").to_bytes(),
            b"-ERR no such message\r\n"
        );
        assert_eq!(
            Reply::err_code(RespCode::InUse, "maildrop locked").to_bytes(),
            b"-ERR [IN-USE] maildrop locked\r\n"
        );
        assert_eq!(
            Reply::multi("", vec!["1 120".into(), ".dot".into()]).to_bytes(),
            b"+OK\r\n1 120\r\n..dot\r\n.\r\n"
        );
        assert_eq!(Reply::Continue(String::new()).to_bytes(), b"+ \r\n");
        assert_eq!(
            Reply::Continue("VXNlcm5hbWU6".into()).to_bytes(),
            b"+ VXNlcm5hbWU6\r\n"
        );
    }
}

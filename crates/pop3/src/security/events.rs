// SPDX-License-Identifier: AGPL-3.0-only
//! The security log: one JSON object per line for each event, to standard
//! error or to a file. One function per event, so every event carries the
//! same typed fields; no function takes a password, token or hash.
//!
//! | event | when |
//! |---|---|
//! | `auth_failed` | a login failed (bad credentials, malformed SASL) |
//! | `blocked` | an address was blocked (too many failures, suspicious score) |
//! | `unblocked` | a block expired |
//! | `rate_limited` | a session was paced by `max_commands_per_minute`/`min_command_delay` |
//! | `suspicious` | a scoring rule fired (see `Rule`) |
//! | `connection_refused` | a connection was refused before the greeting |
//! | `tls_failed` | a TLS handshake failed |
//! | `proxy_rejected` | a PROXY header was missing, malformed or from an untrusted address |

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

enum Sink {
    Off,
    Stderr,
    File(Mutex<File>),
}

pub struct SecurityLog {
    sink: Sink,
    /// The node every event comes from (`server.node_name`).
    node: Option<String>,
}

impl SecurityLog {
    /// Events to standard error, or appended to `file` (opened again by
    /// each reload, so that a log rotated away is followed by a new one).
    pub fn new(enabled: bool, file: Option<&Path>) -> std::io::Result<SecurityLog> {
        let sink = match (enabled, file) {
            (false, _) => Sink::Off,
            (true, None) => Sink::Stderr,
            (true, Some(path)) => Sink::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(SecurityLog { sink, node: None })
    }

    /// Name the node in every event.
    pub fn of_node(mut self, node: &str) -> SecurityLog {
        self.node = Some(node.to_owned());
        self
    }

    pub fn off() -> SecurityLog {
        SecurityLog {
            sink: Sink::Off,
            node: None,
        }
    }

    fn emit(&self, event: &str, ip: IpAddr, fields: Value) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            Value::String(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
        );
        obj.insert("event".into(), Value::String(event.into()));
        obj.insert("ip".into(), Value::String(ip.to_string()));
        if let Some(node) = &self.node {
            obj.insert("node".into(), Value::String(node.clone()));
        }
        if let Value::Object(extra) = fields {
            obj.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        match &self.sink {
            Sink::Off => {}
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = f.write_all(line.as_bytes()) {
                    tracing::error!("cannot write the security log: {e}");
                }
            }
        }
    }

    pub fn auth_failed(&self, ip: IpAddr, user: Option<&str>, mechanism: &str, reason: &str) {
        self.emit(
            "auth_failed",
            ip,
            json!({ "user": user, "mechanism": mechanism, "reason": reason }),
        );
    }

    /// A login with a good password that is on the breached list;
    /// `action`: `warned` or `refused`.
    pub fn breached_password(&self, ip: IpAddr, user: &str, mechanism: &str, action: &str) {
        self.emit(
            "breached_password",
            ip,
            json!({ "user": user, "mechanism": mechanism, "action": action }),
        );
    }

    pub fn blocked(&self, ip: IpAddr, reason: &str, seconds: u64) {
        self.emit(
            "blocked",
            ip,
            json!({ "reason": reason, "seconds": seconds }),
        );
    }

    pub fn unblocked(&self, ip: IpAddr) {
        self.unblocked_by(ip, "block expired");
    }

    pub fn unblocked_by(&self, ip: IpAddr, reason: &str) {
        self.emit("unblocked", ip, json!({ "reason": reason }));
    }

    pub fn rate_limited(&self, ip: IpAddr, user: Option<&str>, command: &str, delay_ms: u64) {
        self.emit(
            "rate_limited",
            ip,
            json!({ "user": user, "command": command, "reason": "command pace", "delay_ms": delay_ms }),
        );
    }

    pub fn suspicious(&self, ip: IpAddr, rule: &str, points: u32, score: u32) {
        self.emit(
            "suspicious",
            ip,
            json!({ "reason": rule, "points": points, "score": score }),
        );
    }

    pub fn connection_refused(&self, ip: IpAddr, reason: &str) {
        self.emit("connection_refused", ip, json!({ "reason": reason }));
    }

    pub fn tls_failed(&self, ip: IpAddr, reason: &str) {
        self.emit("tls_failed", ip, json!({ "reason": reason }));
    }

    pub fn proxy_rejected(&self, ip: IpAddr, reason: &str) {
        self.emit("proxy_rejected", ip, json!({ "reason": reason }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines_with_typed_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        let log = SecurityLog::new(true, Some(&path)).unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        log.auth_failed(ip, Some("alice\"x"), "PLAIN", "bad credentials");
        log.blocked(ip, "too many failed logins", 900);
        log.suspicious(ip, "http_request", 50, 60);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["event"], "auth_failed");
        assert_eq!(lines[0]["ip"], "192.0.2.9");
        assert_eq!(lines[0]["user"], "alice\"x");
        assert_eq!(lines[0]["mechanism"], "PLAIN");
        assert_eq!(lines[1]["seconds"], 900);
        assert_eq!(lines[2]["score"], 60);
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
        // Disabled: nothing written.
        let quiet = dir.path().join("quiet.log");
        SecurityLog::new(false, Some(&quiet))
            .unwrap()
            .auth_failed(ip, None, "USER", "x");
        assert!(!quiet.exists());
    }
}

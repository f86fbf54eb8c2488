// SPDX-License-Identifier: AGPL-3.0-only
//! Prometheus metrics in an explicit registry (no process-global recorder,
//! so one process can run several servers).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
    pub tls: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub mechanism: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// Every outcome an LMTP recipient can have, so that each series exists
/// (at zero) from the start: a rate over a series that appears only with
/// its first event misses that event.
pub const LMTP_RESULTS: [&str; 8] = [
    "delivered",
    "unknown_user",
    "userdb_unavailable",
    "too_large",
    "over_quota",
    "storage_full",
    "temp_failure",
    "refused",
];

/// Command names as counted: the keywords, plus lines that are no command.
const COMMANDS: &[&str] = &[
    "USER", "PASS", "APOP", "AUTH", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP",
    "UIDL", "CAPA", "STLS", "UTF8", "unknown", "overlong",
];

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub sessions_active: Family<ListenerLabels, Gauge>,
    pub sessions: Family<ListenerLabels, Counter>,
    pub logins: Family<LoginLabels, Counter>,
    pub commands: Family<CommandLabels, Counter>,
    pub bytes_sent: Counter,
    pub retr_seconds: Histogram,
    pub login_seconds: Histogram,
    pub lock_conflicts: Counter,
    pub connections_refused: Family<ReasonLabels, Counter>,
    pub store_errors: Counter,
    pub userdb_errors: Counter,
    pub tls_handshake_failures: Counter,
    /// Connections closed at `server.login_timeout` without a login.
    pub login_timeouts: Counter,
    pub reloads: Family<ResultLabels, Counter>,
    pub blocked_addresses: Gauge,
    pub suspicious_events: Family<ReasonLabels, Counter>,
    pub rate_limited: Counter,
    /// Logins with a password on `auth.breached_passwords_file`, by what
    /// was done (`warned`, `refused`).
    pub breached_password_logins: Family<ResultLabels, Counter>,
    /// LMTP deliveries by outcome, per recipient.
    pub lmtp_deliveries: Family<ResultLabels, Counter>,
    /// 1 while the shared abuse counters (Redis) answer.
    pub shared_state_up: Gauge,
    /// 1, labelled with this node's name.
    pub node_info: Family<NodeLabels, Gauge>,
    pub build_info: Family<VersionLabels, Gauge>,
    /// Seconds until the TLS certificate expires (negative once it has),
    /// set at each scrape.
    pub tls_certificate_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_mechanisms(&[])
    }

    /// Metrics whose login series exist at zero from the start for USER,
    /// APOP and each of `mechanisms` (the SASL ones, which the layers
    /// above know).
    pub fn with_mechanisms(mechanisms: &[&'static str]) -> Metrics {
        let buckets = || exponential_buckets(0.0001, 4.0, 12);
        let mut m = Metrics {
            registry: Registry::with_prefix("pop3"),
            sessions_active: Family::default(),
            sessions: Family::default(),
            logins: Family::default(),
            commands: Family::default(),
            bytes_sent: Counter::default(),
            retr_seconds: Histogram::new(buckets()),
            login_seconds: Histogram::new(buckets()),
            lock_conflicts: Counter::default(),
            connections_refused: Family::default(),
            store_errors: Counter::default(),
            userdb_errors: Counter::default(),
            tls_handshake_failures: Counter::default(),
            login_timeouts: Counter::default(),
            reloads: Family::default(),
            blocked_addresses: Gauge::default(),
            suspicious_events: Family::default(),
            rate_limited: Counter::default(),
            breached_password_logins: Family::default(),
            lmtp_deliveries: Family::default(),
            shared_state_up: Gauge::default(),
            node_info: Family::default(),
            build_info: Family::default(),
            tls_certificate_expiry: Gauge::default(),
        };
        m.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        for result in LMTP_RESULTS {
            let _ = m.lmtp_deliveries.get_or_create(&ResultLabels { result });
        }
        let r = &mut m.registry;
        r.register(
            "sessions_active",
            "Sessions open now",
            m.sessions_active.clone(),
        );
        r.register("sessions", "Sessions started", m.sessions.clone());
        r.register(
            "logins",
            "Login attempts by mechanism and result",
            m.logins.clone(),
        );
        r.register(
            "commands",
            "Commands by name and result",
            m.commands.clone(),
        );
        r.register(
            "sent_bytes",
            "Octets written to clients",
            m.bytes_sent.clone(),
        );
        r.register(
            "retr_duration_seconds",
            "Time to stream one RETR or TOP reply",
            m.retr_seconds.clone(),
        );
        r.register(
            "login_duration_seconds",
            "Time to check credentials and open the maildrop",
            m.login_seconds.clone(),
        );
        r.register(
            "node_info",
            "This node's name (server.node_name, or the hostname)",
            m.node_info.clone(),
        );
        r.register("build_info", "This pop3d's version", m.build_info.clone());
        r.register(
            "tls_certificate_expiry_seconds",
            "Seconds until the [tls] certificate expires (negative once it has)",
            m.tls_certificate_expiry.clone(),
        );
        r.register(
            "shared_state_up",
            "1 while the abuse counters shared by all nodes (Redis) answer; 0 while this node decides alone",
            m.shared_state_up.clone(),
        );
        r.register(
            "lmtp_deliveries",
            "LMTP recipients by outcome (delivered, unknown_user, userdb_unavailable at RCPT, too_large, over_quota, storage_full, temp_failure, refused for an untrusted address)",
            m.lmtp_deliveries.clone(),
        );
        r.register(
            "lock_conflicts",
            "Logins refused with [IN-USE]",
            m.lock_conflicts.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused before the greeting, by reason",
            m.connections_refused.clone(),
        );
        r.register(
            "store_errors",
            "Mail store failures",
            m.store_errors.clone(),
        );
        r.register(
            "userdb_errors",
            "User database failures",
            m.userdb_errors.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (implicit or STLS)",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "login_timeouts",
            "Connections closed at server.login_timeout before a login",
            m.login_timeouts.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "blocked_addresses",
            "Addresses blocked now",
            m.blocked_addresses.clone(),
        );
        r.register(
            "breached_password_logins",
            "Logins with a password on the breached list, by what was done",
            m.breached_password_logins.clone(),
        );
        r.register(
            "suspicious_events",
            "Suspicious-activity rules that fired, by rule",
            m.suspicious_events.clone(),
        );
        r.register(
            "rate_limited_commands",
            "Commands delayed by the command pace",
            m.rate_limited.clone(),
        );
        // Series that exist from the start read 0 instead of being absent,
        // so rate() and alerts work from the first event.
        let mechanisms = ["USER", "APOP"]
            .into_iter()
            .chain(mechanisms.iter().copied());
        for mechanism in mechanisms {
            for result in ["ok", "fail"] {
                let _ = m.logins.get_or_create(&LoginLabels { mechanism, result });
            }
        }
        for command in COMMANDS {
            for result in ["ok", "err"] {
                let _ = m.commands.get_or_create(&CommandLabels { command, result });
            }
        }
        for reason in [
            "http_request",
            "tls_on_plain_port",
            "garbage_before_login",
            "unknown_command",
            "protocol_violation",
            "repeated_stls",
            "command_flood",
            "auth_failure",
        ] {
            let _ = m.suspicious_events.get_or_create(&ReasonLabels { reason });
        }
        for reason in [
            "max_concurrent_sessions",
            "max_connections_per_ip",
            "blocked",
            "proxy",
        ] {
            let _ = m
                .connections_refused
                .get_or_create(&ReasonLabels { reason });
        }
        for result in ["ok", "failed"] {
            let _ = m.reloads.get_or_create(&ResultLabels { result });
        }
        m
    }

    /// Make a listener's session series exist before its first session.
    pub fn listener(&self, listener: &str, tls: &'static str) {
        let labels = ListenerLabels {
            listener: listener.to_owned(),
            tls,
        };
        let _ = self.sessions.get_or_create(&labels);
        let _ = self.sessions_active.get_or_create(&labels);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn command(&self, command: &'static str, ok: bool) {
        self.commands
            .get_or_create(&CommandLabels {
                command,
                result: if ok { "ok" } else { "err" },
            })
            .inc();
    }

    pub fn login(&self, mechanism: &'static str, ok: bool) {
        self.logins
            .get_or_create(&LoginLabels {
                mechanism,
                result: if ok { "ok" } else { "fail" },
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn suspicious(&self, reason: &'static str) {
        self.suspicious_events
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_described_before_any_sample() {
        let m = Metrics::new();
        m.listener("127.0.0.1:110", "starttls");
        let text = m.encode();
        for name in [
            "pop3_sessions_active",
            "pop3_sessions",
            "pop3_logins",
            "pop3_commands",
            "pop3_connections_refused",
            "pop3_config_reloads",
            "pop3_retr_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in\n{text}"
            );
        }
    }
}

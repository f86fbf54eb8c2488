// SPDX-License-Identifier: AGPL-3.0-only
//! Checks of values that serde cannot make: ranges, consistency between
//! sections, and what each layer says of its own keys.
use std::time::Duration;

use super::{Pop3Config, TlsMode};

impl Pop3Config {
    /// Check values serde cannot, as far as this module knows them:
    /// returns the dotted key and the reason.
    pub(crate) fn validate_values(&self) -> Result<(), crate::config::SetupError> {
        let fail = |k: &str, r: String| Err(crate::config::SetupError::new(k, r));
        if self.listeners.is_empty() {
            return fail("listener", "at least one [[listener]] is required".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.tls != TlsMode::None && self.tls.is_none() {
                return fail(
                    &format!("listener[{i}].tls"),
                    format!(
                        "tls = \"{}\" needs a [tls] section with cert and key",
                        l.tls.as_str()
                    ),
                );
            }
        }
        for (i, l) in self.lmtp.iter().enumerate() {
            if l.bind.is_some() == l.path.is_some() {
                return fail(
                    &format!("lmtp[{i}]"),
                    "needs exactly one of bind (TCP) and path (Unix socket)".into(),
                );
            }
            if l.max_connections == 0 {
                return fail(
                    &format!("lmtp[{i}].max_connections"),
                    "must be at least 1".into(),
                );
            }
        }
        if self.server.session_timeout < Duration::from_secs(1) {
            return fail("server.session_timeout", "must be at least 1s".into());
        }
        if self.server.unauth_timeout < Duration::from_secs(1) {
            return fail("server.unauth_timeout", "must be at least 1s".into());
        }
        if self.server.login_timeout < Duration::from_secs(1) {
            return fail("server.login_timeout", "must be at least 1s".into());
        }
        if self.server.hostname.is_empty()
            || !self
                .server
                .hostname
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        {
            return fail(
                "server.hostname",
                "must be a non-empty host name without spaces or angle brackets".into(),
            );
        }
        if let Some(node) = &self.server.node_name
            && (node.is_empty() || node.len() > 64 || !node.bytes().all(|b| b.is_ascii_graphic()))
        {
            return fail(
                "server.node_name",
                "must be 1 to 64 visible ASCII characters".into(),
            );
        }
        if self
            .server
            .greeting
            .bytes()
            .any(|b| b == b'\r' || b == b'\n')
        {
            return fail("server.greeting", "must be a single line".into());
        }
        if !(255..=1 << 20).contains(&self.protocol.max_line_length) {
            return fail(
                "protocol.max_line_length",
                "must be between 255 (RFC 2449) and 1048576".into(),
            );
        }
        if self.protocol.max_pipelined_commands == 0 {
            return fail(
                "protocol.max_pipelined_commands",
                "must be at least 1".into(),
            );
        }
        if !(1024..=1 << 24).contains(&self.performance.io_buffer_size) {
            return fail(
                "performance.io_buffer_size",
                "must be between 1024 and 16777216".into(),
            );
        }
        if self.performance.enable_response_caching {
            if self.performance.max_cached_responses == 0 {
                return fail(
                    "performance.max_cached_responses",
                    "must be at least 1 while enable_response_caching is on: 0 never caches".into(),
                );
            }
            if self.performance.cache_ttl < Duration::from_secs(1) {
                return fail(
                    "performance.cache_ttl",
                    "must be at least 1s while enable_response_caching is on: a shorter one never serves a listing".into(),
                );
            }
        }
        if self.performance.max_concurrent_sessions == 0 {
            return fail(
                "performance.max_concurrent_sessions",
                "must be at least 1".into(),
            );
        }
        if self.security.max_connections_per_ip == 0 {
            return fail(
                "security.max_connections_per_ip",
                "must be at least 1".into(),
            );
        }
        if let Some(oauth) = &self.auth.oauth {
            // A claim that must be pinned, unless the operator says any
            // value will do: (key, set, allow_any key, allowed, why).
            let pinned = [
                (
                    "issuer",
                    oauth.issuer.is_some(),
                    oauth.allow_any_issuer,
                    "a token from any tenant or issuer that shares the signing keys opens the mailbox its claim names",
                ),
                (
                    "audience",
                    oauth.audience.is_some(),
                    oauth.allow_any_audience,
                    "a token issued to any application of the provider opens the mailbox",
                ),
            ];
            for (key, set, allow_any, why) in pinned {
                match (set, allow_any) {
                    (false, false) => {
                        return fail(
                            &format!("auth.oauth.{key}"),
                            format!(
                                "required: without it {why} (set allow_any_{key} = true to accept that)"
                            ),
                        );
                    }
                    (true, true) => {
                        return fail(
                            &format!("auth.oauth.allow_any_{key}"),
                            format!("contradicts auth.oauth.{key}; set one of them"),
                        );
                    }
                    _ => {}
                }
            }
        }
        if let Some(require) = self.security.require_tls_for_auth
            && require == self.auth.allow_plaintext
        {
            return fail(
                "security.require_tls_for_auth",
                format!(
                    "contradicts auth.allow_plaintext = {}; set one of them",
                    self.auth.allow_plaintext
                ),
            );
        }
        if self.security.max_commands_per_minute == 0 {
            return fail(
                "security.max_commands_per_minute",
                "must be at least 1".into(),
            );
        }
        if !(32..=128).contains(&self.security.ipv6_prefix) {
            return fail(
                "security.ipv6_prefix",
                "must be between 32 and 128 (64 groups one customer network)".into(),
            );
        }
        if self.security.max_auth_attempts == 0 {
            return fail("security.max_auth_attempts", "must be at least 1".into());
        }
        if self.storage.trash_retention < Duration::from_secs(60) {
            return fail("storage.trash_retention", "must be at least 1m".into());
        }
        Ok(())
    }
}

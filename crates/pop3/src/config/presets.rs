// SPDX-License-Identifier: AGPL-3.0-only
//! Named starting points for a configuration (`preset = "production"`).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Pop3Config;

/// A named starting point for a configuration (`preset = "production"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Default,
    Production,
    Development,
}

impl Pop3Config {
    /// The configuration a named preset stands for.
    pub fn from_preset(preset: Preset) -> Pop3Config {
        match preset {
            Preset::Default => Pop3Config::default(),
            Preset::Production => Pop3Config::production(),
            Preset::Development => Pop3Config::development(),
        }
    }

    /// For a server on the internet: short unauthenticated timeout, tight
    /// per-address limits, large buffers, the listing cache on.
    pub fn production() -> Pop3Config {
        let mut c = Pop3Config {
            preset: Preset::Production,
            ..Pop3Config::default()
        };
        c.server.unauth_timeout = Duration::from_secs(30);
        c.server.login_timeout = Duration::from_secs(60);
        c.security.max_auth_attempts = 3;
        c.security.max_connections_per_ip = 10;
        c.security.suspicious_threshold = 50;
        c.performance.max_concurrent_sessions = 20_000;
        c.performance.connection_pool_size = 256;
        c.performance.enable_response_caching = true;
        c.performance.cache_ttl = Duration::from_secs(600);
        c.performance.max_cached_responses = 10_000;
        c
    }

    /// For a laptop: generous timers and limits, APOP and plaintext on,
    /// no cache so that changes to a test Maildir show at once.
    pub fn development() -> Pop3Config {
        let mut c = Pop3Config {
            preset: Preset::Development,
            ..Pop3Config::default()
        };
        c.server.unauth_timeout = Duration::from_secs(300);
        c.server.login_timeout = Duration::from_secs(600);
        c.server.session_timeout = Duration::from_secs(1800);
        c.server.enable_apop = true;
        c.auth.allow_plaintext = true;
        c.security.max_auth_attempts = 10;
        c.security.max_commands_per_minute = 6000;
        c.security.max_connections_per_ip = 1000;
        c.security.suspicious_threshold = 1000;
        c.performance.max_concurrent_sessions = 1000;
        c.performance.connection_pool_size = 16;
        c.performance.enable_response_caching = false;
        c
    }
}

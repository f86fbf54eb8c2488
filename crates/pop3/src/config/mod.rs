// SPDX-License-Identifier: AGPL-3.0-only
//! The TOML configuration: serde structs mirroring the file, defaults, and a
//! validation step whose errors name the file, the key and the reason.

mod auth;
mod listener;
mod lmtp;
mod load;
mod performance;
mod presets;
mod protocol;
mod security;
mod server;
mod storage;
mod validate;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use auth::{
    AuthConfig, BreachedPolicy, ExternalIdentity, GssapiConfig, LdapConfig, LdapScope, LdapTls,
    OAuthConfig, UserBackend,
};
pub use listener::{ListenerConfig, TlsConfig, TlsMode};
pub use lmtp::LmtpConfig;
pub use load::{ConfigError, LoadedConfig};
pub use performance::PerformanceConfig;
pub use presets::Preset;
pub use protocol::{ProtocolConfig, Workaround};
pub use security::SecurityConfig;
pub use server::{Expire, ServerConfig, machine_name};

/// A configuration value that cannot be used, and why: every check of a
/// configuration (each layer's `check_config`, the files it names, the
/// servers) reports one, and `pop3d` prints it as the file, key and reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SetupError {
    /// The dotted configuration key.
    pub key: String,
    pub reason: String,
}

impl SetupError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        SetupError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A password kept in a file (first line, its line end dropped), for the
/// key `key` that names the file; errors name the key and file, never the
/// content. Read at start and again on SIGHUP, so a rotation needs no
/// restart.
pub fn read_secret_file(key: &str, file: &std::path::Path) -> Result<String, SetupError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| SetupError::new(key, format!("{}: {e}", file.display())))?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        return Err(SetupError::new(key, format!("{} is empty", file.display())));
    }
    Ok(password.to_owned())
}
pub use storage::{DEFAULT_UIDL_FORMAT, DatabaseTls, DeleteMode, StorageBackend, StorageConfig};

/// The whole configuration of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Config {
    /// The preset the file starts from; its own keys override it.
    pub preset: Preset,
    pub server: ServerConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// LMTP listeners for mail from an MTA; none by default.
    #[serde(rename = "lmtp", skip_serializing_if = "Vec::is_empty")]
    pub lmtp: Vec<LmtpConfig>,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub security: SecurityConfig,
    pub protocol: ProtocolConfig,
    pub performance: PerformanceConfig,
    /// The HTTP listener for /metrics, /healthz and /readyz; none if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub bind: SocketAddr,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            preset: Preset::Default,
            server: ServerConfig::default(),
            listeners: vec![ListenerConfig::new(
                SocketAddr::from(([127, 0, 0, 1], 1110)),
                TlsMode::None,
            )],
            tls: None,
            lmtp: Vec::new(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            security: SecurityConfig::default(),
            protocol: ProtocolConfig::default(),
            performance: PerformanceConfig::default(),
            metrics: None,
        }
    }
}

impl Pop3Config {
    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// Whether this SASL mechanism is enabled (case-insensitive).
    pub fn mechanism_enabled(&self, name: &str) -> bool {
        self.auth
            .mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn load(text: &str) -> Result<LoadedConfig, ConfigError> {
        Pop3Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(load("").unwrap().config, Pop3Config::default());
    }

    #[test]
    fn full_example_parses() {
        let c = load(
            r#"
[server]
greeting = "hello"
hostname = "mail.example.org"
session_timeout = "15m"
unauth_timeout = "90s"
enable_apop = true

[[listener]]
bind = "127.0.0.1:1110"
tls = "starttls"

[[listener]]
bind = "[::1]:1995"
tls = "implicit"

[tls]
cert = "cert.pem"
key = "key.pem"

[storage]
backend = "maildir"
maildir = "/var/mail/%d/%n"

[auth]
passwd_file = "passwd"
mechanisms = ["plain"]
allow_plaintext = true
"#,
        )
        .unwrap()
        .config;
        assert_eq!(c.server.session_timeout, Duration::from_secs(900));
        assert_eq!(c.server.unauth_timeout, Duration::from_secs(90));
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].tls, TlsMode::Implicit);
        assert!(c.mechanism_enabled("PLAIN"));
        assert!(!c.mechanism_enabled("LOGIN"));
    }

    #[test]
    fn unknown_key_is_named_with_position() {
        let e = load("[server]\ngreeting = \"x\"\ncolour = \"blue\"\n").unwrap_err();
        assert!(e.reason.contains("colour"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert_eq!(e.key.as_deref(), Some("server.colour"));
        let shown = e.to_string();
        assert!(shown.starts_with("test.toml:3:"), "{shown}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = load("[server]\nsession_timeout = \"ten minutes\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("server.session_timeout"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(2));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = load("[server\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let cases = [
            (
                "[[listener]]\nbind = \"127.0.0.1:995\"\ntls = \"implicit\"\n",
                "listener[0].tls",
            ),
            (
                "[protocol]\nmax_line_length = 10\n",
                "protocol.max_line_length",
            ),
            ("[auth]\nmechanisms = [\"FOO\"]\n", "auth.mechanisms[0]"),
            ("[storage]\nmaildir = \"%q/x\"\n", "storage.maildir"),
            ("[server]\nhostname = \"a b\"\n", "server.hostname"),
            (
                "[server]\nsession_timeout = \"0s\"\n",
                "server.session_timeout",
            ),
        ];
        for (text, key) in cases {
            let e = load(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = load("listener = []\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listener"));
    }

    #[test]
    fn mechanisms_name_what_they_need() {
        let need = |mech: &str, extra: &str| {
            let e = load(&format!(
                "[auth]\nmechanisms = [\"PLAIN\", \"{mech}\"]\n{extra}"
            ))
            .unwrap_err();
            assert_eq!(e.key.as_deref(), Some("auth.mechanisms[1]"), "{e}");
            e.reason
        };
        assert!(need("OAUTHBEARER", "").contains("[auth.oauth]"));
        assert!(need("ANONYMOUS", "").contains("anonymous_user"));
        assert!(need("EXTERNAL", "").contains("client_ca_file"));
        assert!(need("SCRAM-SHA-256-PLUS", "").contains("[tls]"));
        #[cfg(not(feature = "gssapi"))]
        assert!(need("GSSAPI", "").contains("feature"));
        #[cfg(feature = "gssapi")]
        assert!(need("GSSAPI", "").contains("[auth.gssapi]"));
        let c = load("[auth]\nmechanisms = [\"scram-sha-256\", \"NTLM\", \"DIGEST-MD5\"]\nmaster_users = [\"admin\"]\n[auth.oauth]\nissuer = \"i\"\naudience = \"pop3\"\n")
            .unwrap()
            .config;
        assert!(c.mechanism_enabled("SCRAM-SHA-256"));
        assert_eq!(c.auth.master_users, ["admin"]);
        assert_eq!(c.auth.oauth.unwrap().user_claim, "email");
        let e = load("[auth.oauth]\nleeway = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("leeway"), "{e}");
        // Tokens for any application of the provider, or from any issuer,
        // only when asked for.
        let e = load("[auth.oauth]\nissuer = \"i\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth.oauth.audience"), "{e}");
        let e = load("[auth.oauth]\naudience = \"a\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth.oauth.issuer"), "{e}");
        let any =
            load("[auth.oauth]\nallow_any_audience = true\nallow_any_issuer = true\n").unwrap();
        for key in ["allow_any_audience", "allow_any_issuer"] {
            assert!(
                any.warnings.iter().any(|w| w.contains(key)),
                "{key}: {:?}",
                any.warnings
            );
        }
        let e = load("[auth.oauth]\nissuer = \"i\"\naudience = \"a\"\nallow_any_audience = true\n")
            .unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("auth.oauth.allow_any_audience"),
            "{e}"
        );
        let e = load("[auth.oauth]\nissuer = \"i\"\naudience = \"a\"\nallow_any_issuer = true\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth.oauth.allow_any_issuer"), "{e}");
    }

    #[test]
    fn risky_settings_warn() {
        let w = load("[auth]\nallow_plaintext = true\n").unwrap().warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("allow_plaintext"));
        assert!(w[1].contains("no listener offers TLS"));
    }

    #[test]
    fn listeners_no_remote_client_could_log_in_on_are_warned_about() {
        let plain = "[[listener]]\nbind = \"0.0.0.0:110\"\nproxy_protocol = true\nproxy_trusted_networks = [\"10.0.0.10/32\"]\n";
        let tls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let w = load(&format!("{plain}{tls}")).unwrap().warnings;
        assert!(
            w.iter()
                .any(|w| w.contains("listener[0] (0.0.0.0:110)") && w.contains("PROXY")),
            "{w:?}"
        );
        let starttls = plain.replace("proxy_protocol", "tls = \"starttls\"\nproxy_protocol");
        let w = load(&format!("{starttls}{tls}")).unwrap().warnings;
        assert!(!w.iter().any(|w| w.contains("listener[0]")), "{w:?}");
        // Loopback without PROXY: only this machine's clients, who may.
        let local = "[[listener]]\nbind = \"127.0.0.1:110\"\n";
        let w = load(local).unwrap().warnings;
        assert!(!w.iter().any(|w| w.contains("listener[0]")), "{w:?}");
        // STLS switched off is no better.
        let w = load(&format!("{starttls}{tls}[server]\nenable_stls = false\n"))
            .unwrap()
            .warnings;
        assert!(w.iter().any(|w| w.contains("listener[0]")), "{w:?}");
        // A mechanism that needs no TLS lets clients in.
        let w = load(&format!(
            "{plain}{tls}[auth]\nmechanisms = [\"SCRAM-SHA-256\"]\n"
        ))
        .unwrap()
        .warnings;
        assert!(!w.iter().any(|w| w.contains("listener[0]")), "{w:?}");
    }

    #[test]
    fn require_tls_for_auth_is_the_same_switch() {
        let c = load("[security]\nrequire_tls_for_auth = false\n")
            .unwrap()
            .config;
        assert!(c.auth.allow_plaintext);
        let c = load("[security]\nrequire_tls_for_auth = true\n")
            .unwrap()
            .config;
        assert!(!c.auth.allow_plaintext);
        let e = load("[security]\nrequire_tls_for_auth = true\n[auth]\nallow_plaintext = true\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("security.require_tls_for_auth"));
    }

    #[test]
    fn presets_and_overrides() {
        let c = load("preset = \"production\"\n[security]\nmax_connections_per_ip = 3\n")
            .unwrap()
            .config;
        let mut want = Pop3Config::production();
        want.security.max_connections_per_ip = 3;
        assert_eq!(c, want);
        assert!(c.performance.enable_response_caching);
        let c = load("preset = \"development\"\n").unwrap().config;
        assert_eq!(c, Pop3Config::development());
        assert!(c.auth.allow_plaintext);
        let e = load("preset = \"fast\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("preset"), "{e}");
        // The effective config of a preset round-trips like any other.
        let again = load(&Pop3Config::production().to_toml()).unwrap().config;
        assert_eq!(again, Pop3Config::production());
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Pop3Config::default();
        let again = load(&c.to_toml()).unwrap().config;
        assert_eq!(again, c);
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The TOML configuration: serde structs mirroring the file, defaults, and a
//! validation step whose errors name the file, the key and the reason.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::sasl;

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
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            security: SecurityConfig::default(),
            protocol: ProtocolConfig::default(),
            performance: PerformanceConfig::default(),
            metrics: None,
        }
    }
}

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
        c.security.max_auth_attempts = 3;
        c.security.max_connections_per_ip = 10;
        c.security.suspicious_threshold = 50;
        c.performance.max_concurrent_sessions = 20_000;
        c.performance.connection_pool_size = 256;
        c.performance.io_buffer_size = 32 * 1024;
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

/// `[server]`: identity, greeting and timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Text after `+OK` in the greeting.
    pub greeting: String,
    /// Host name used in the APOP timestamp `<pid.nonce@hostname>`.
    pub hostname: String,
    /// Messages larger than this many octets are listed but RETR/TOP refuse
    /// them with `-ERR [SYS/PERM]`; 0 means no limit.
    pub max_message_size: u64,
    /// Idle time allowed after login (RFC 1939: at least 10 minutes).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Idle time allowed before login.
    #[serde(with = "humantime_serde")]
    pub unauth_timeout: Duration,
    pub enable_apop: bool,
    pub enable_utf8: bool,
    pub enable_stls: bool,
    /// Least time between two logins of one user (RFC 2449 LOGIN-DELAY);
    /// 0 disables it.
    #[serde(with = "humantime_serde")]
    pub login_delay: Duration,
    /// On SIGTERM/SIGINT: how long sessions may take to finish before the
    /// process exits (nothing is deleted for a session cut short).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            greeting: "POP3 server ready".into(),
            hostname: default_hostname(),
            max_message_size: 0,
            session_timeout: Duration::from_secs(600),
            unauth_timeout: Duration::from_secs(60),
            enable_apop: false,
            enable_utf8: true,
            enable_stls: true,
            login_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

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

/// Which mail store serves the maildrops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Maildir,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Maildir location template: `%u` user, `%n` local part, `%d` domain,
    /// `%h` home directory from the passwd file, `%%` a percent sign.
    pub maildir: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Maildir,
            maildir: "%h/Maildir".into(),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Dovecot-style passwd file.
    pub passwd_file: PathBuf,
    /// SASL mechanisms offered by AUTH.
    pub mechanisms: Vec<String>,
    /// Allow USER/PASS, APOP and PLAIN/LOGIN on connections without TLS from
    /// any address. Loopback connections are always allowed.
    pub allow_plaintext: bool,
    /// Users who may log in with their own credentials as someone else
    /// (a SASL authorization identity, `authzid`).
    pub master_users: Vec<String>,
    /// DIGEST-MD5 realm; the server's hostname when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// NTLM target domain.
    pub ntlm_domain: String,
    /// The user whose mailbox ANONYMOUS opens, read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_user: Option<String>,
    /// Which part of a verified client certificate names the user for
    /// EXTERNAL.
    pub external_identity: ExternalIdentity,
    /// Bearer tokens for OAUTHBEARER and XOAUTH2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthConfig>,
    /// Kerberos 5 for GSSAPI (cargo feature `gssapi`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gssapi: Option<GssapiConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            passwd_file: PathBuf::from("/etc/pop3d/passwd"),
            mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            allow_plaintext: false,
            master_users: Vec::new(),
            realm: None,
            ntlm_domain: "POP3".into(),
            anonymous_user: None,
            external_identity: ExternalIdentity::SubjectCn,
            oauth: None,
            gssapi: None,
        }
    }
}

/// Where EXTERNAL finds the user name in a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalIdentity {
    /// The subject's common name.
    SubjectCn,
    /// The first rfc822Name (e-mail) subject alternative name.
    SanEmail,
    /// That e-mail address without its `@domain`.
    SanEmailLocalPart,
}

/// `[auth.oauth]`: how bearer tokens are validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Required `iss` of JWTs (and of introspection answers that carry one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// JSON Web Key Set with the issuer's public keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// One RSA or EC public key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// Shared secret for HS256/384/512 tokens (at least 32 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<PathBuf>,
    /// Signature algorithms accepted.
    pub algorithms: Vec<String>,
    /// The claim that holds the user name.
    pub user_claim: String,
    /// Clock skew allowed for `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// RFC 7662 endpoint for tokens that are not JWTs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_client_secret_file: Option<PathBuf>,
    /// CA for an https endpoint; the system's roots when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_ca_file: Option<PathBuf>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            issuer: None,
            audience: None,
            jwks_file: None,
            public_key_file: None,
            hmac_secret_file: None,
            algorithms: vec!["RS256".into(), "ES256".into(), "HS256".into()],
            user_claim: "email".into(),
            leeway: Duration::from_secs(60),
            introspection_url: None,
            introspection_client_id: None,
            introspection_client_secret_file: None,
            introspection_ca_file: None,
        }
    }
}

/// `[auth.gssapi]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GssapiConfig {
    /// Keytab holding the `pop/<hostname>` key.
    pub keytab: PathBuf,
    /// Service name of the principal (RFC 4752 §3.1: "pop" for POP3).
    pub service: String,
    /// Strip `@REALM` from the client's principal to get the user name,
    /// when the realm is this one (or any, when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
}

impl Default for GssapiConfig {
    fn default() -> Self {
        GssapiConfig {
            keytab: PathBuf::from("/etc/pop3d/krb5.keytab"),
            service: "pop".into(),
            realm: None,
        }
    }
}

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Failed logins from one address within `auth_window` before it is
    /// blocked; also the failures one session may make before it is closed.
    pub max_auth_attempts: u32,
    /// The window in which failures (and suspicious scores) are counted.
    #[serde(with = "humantime_serde")]
    pub auth_window: Duration,
    /// How long a blocked address stays blocked.
    #[serde(with = "humantime_serde")]
    pub auto_block_duration: Duration,
    /// Delay before answering a failed login; doubles with each further
    /// failure from the address within the window, up to 16 times.
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    /// Failures against one user (from any addresses) within the window
    /// after which every login attempt for that user is slowed.
    pub max_user_auth_failures: u32,
    /// The delay added to each login attempt for such a user.
    #[serde(with = "humantime_serde")]
    pub user_throttle_delay: Duration,
    /// Addresses exempt from blocking, scoring and pacing.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Where the block list is kept across restarts; none keeps it in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_list_file: Option<PathBuf>,
    /// Simultaneous connections from one address.
    pub max_connections_per_ip: u32,
    /// Pace for commands that cost the server without serving mail: every
    /// command before login, and failing commands after it.
    pub max_commands_per_minute: u32,
    /// Least time between two such commands.
    #[serde(with = "humantime_serde")]
    pub min_command_delay: Duration,
    pub enable_security_logging: bool,
    /// Security events as JSON lines to this file; none writes them to
    /// standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_log_file: Option<PathBuf>,
    /// Score at which an address is blocked for `auto_block_duration`.
    pub suspicious_threshold: u32,
    /// The opposite of `auth.allow_plaintext`, for configurations written
    /// that way; setting both inconsistently is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_tls_for_auth: Option<bool>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            max_auth_attempts: 5,
            auth_window: Duration::from_secs(900),
            auto_block_duration: Duration::from_secs(900),
            auth_failure_delay: Duration::from_millis(500),
            max_user_auth_failures: 20,
            user_throttle_delay: Duration::from_secs(2),
            trusted_networks: Vec::new(),
            block_list_file: None,
            max_connections_per_ip: 20,
            max_commands_per_minute: 120,
            min_command_delay: Duration::ZERO,
            enable_security_logging: true,
            security_log_file: None,
            suspicious_threshold: 100,
            require_tls_for_auth: None,
        }
    }
}

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

/// `[performance]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Sessions served at once; more connections get `-ERR [SYS/TEMP]`.
    pub max_concurrent_sessions: usize,
    /// Chunk buffers kept for reuse between message transfers.
    pub connection_pool_size: usize,
    /// Chunk size for streaming messages and the write-flush threshold.
    pub io_buffer_size: usize,
    pub enable_response_caching: bool,
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    pub max_cached_responses: usize,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            max_concurrent_sessions: 10_000,
            connection_pool_size: 64,
            io_buffer_size: 16 * 1024,
            enable_response_caching: false,
            cache_ttl: Duration::from_secs(300),
            max_cached_responses: 1000,
        }
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The dotted key, when known (`server.session_timeout`).
    pub key: Option<String>,
    /// 1-based line and column, when the TOML parser knows them.
    pub position: Option<(usize, usize)>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration plus the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Pop3Config,
    pub warnings: Vec<String>,
}

impl Pop3Config {
    /// Read, parse and validate a file. Relative paths inside it are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: None,
            position: None,
            reason: format!("cannot read: {e}"),
        })?;
        let mut loaded = Self::from_toml(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        loaded.config.resolve_paths(base);
        Ok(loaded)
    }

    /// Parse and validate TOML text; `file` is used in error messages only.
    pub fn from_toml(text: &str, file: &Path) -> Result<LoadedConfig, ConfigError> {
        let position = |span: Option<std::ops::Range<usize>>| span.map(|s| line_col(text, s.start));
        let table: toml::Table =
            toml::from_str(text).map_err(|e: toml::de::Error| ConfigError {
                file: file.to_owned(),
                key: None,
                position: position(e.span()),
                reason: e.message().to_owned(),
            })?;
        let config: Pop3Config =
            toml::from_str(text).map_err(|e: toml::de::Error| ConfigError {
                file: file.to_owned(),
                key: key_at(text, e.span()),
                position: position(e.span()),
                reason: e.message().to_owned(),
            })?;
        // Keys in the file override the preset's values.
        let config =
            match config.preset {
                Preset::Default => config,
                preset => {
                    let mut merged = toml::Table::try_from(Pop3Config::from_preset(preset))
                        .map_err(|e| ConfigError {
                            file: file.to_owned(),
                            key: Some("preset".into()),
                            position: None,
                            reason: e.to_string(),
                        })?;
                    merge(&mut merged, table.clone());
                    merged
                        .try_into()
                        .map_err(|e: toml::de::Error| ConfigError {
                            file: file.to_owned(),
                            key: None,
                            position: None,
                            reason: e.message().to_owned(),
                        })?
                }
            };
        // `require_tls_for_auth` is `allow_plaintext` said the other way.
        let mut config = config;
        if let Some(require) = config.security.require_tls_for_auth {
            if has_key(&table, "auth.allow_plaintext") && config.auth.allow_plaintext == require {
                return Err(ConfigError {
                    file: file.to_owned(),
                    key: Some("security.require_tls_for_auth".into()),
                    position: None,
                    reason: "contradicts auth.allow_plaintext; set one of them".into(),
                });
            }
            config.auth.allow_plaintext = !require;
        }
        config.validate().map_err(|(key, reason)| ConfigError {
            file: file.to_owned(),
            key: Some(key),
            position: None,
            reason,
        })?;
        let mut warnings = Vec::new();
        if config.auth.allow_plaintext {
            warnings.push(
                "auth.allow_plaintext = true: passwords may cross the network unencrypted"
                    .to_owned(),
            );
        }
        if config.listeners.iter().all(|l| l.tls == TlsMode::None) {
            warnings.push("no listener offers TLS (tls = \"starttls\" or \"implicit\")".to_owned());
        }
        Ok(LoadedConfig { config, warnings })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.auth.passwd_file);
        for p in [
            &mut self.security.block_list_file,
            &mut self.security.security_log_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        // A template that starts with an escape (%h/Maildir) is absolute
        // or per user already; a plain relative one is anchored here too.
        if !self.storage.maildir.starts_with('%') && Path::new(&self.storage.maildir).is_relative()
        {
            self.storage.maildir = base
                .join(&self.storage.maildir)
                .to_string_lossy()
                .into_owned();
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca_file {
                fix(ca);
            }
        }
        if let Some(o) = &mut self.auth.oauth {
            for p in [
                &mut o.jwks_file,
                &mut o.public_key_file,
                &mut o.hmac_secret_file,
                &mut o.introspection_client_secret_file,
                &mut o.introspection_ca_file,
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
        }
        if let Some(g) = &mut self.auth.gssapi {
            fix(&mut g.keytab);
        }
    }

    /// Check values serde cannot: returns the dotted key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |k: &str, r: String| Err((k.to_owned(), r));
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
        if self.server.session_timeout < Duration::from_secs(1) {
            return fail("server.session_timeout", "must be at least 1s".into());
        }
        if self.server.unauth_timeout < Duration::from_secs(1) {
            return fail("server.unauth_timeout", "must be at least 1s".into());
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
        if self.protocol.max_arguments < 2 {
            return fail(
                "protocol.max_arguments",
                "must be at least 2 (TOP and APOP take two)".into(),
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
        if self.security.max_auth_attempts == 0 {
            return fail("security.max_auth_attempts", "must be at least 1".into());
        }
        for (i, m) in self.auth.mechanisms.iter().enumerate() {
            let key = format!("auth.mechanisms[{i}]");
            let upper = m.to_ascii_uppercase();
            if let Some((_, feature)) = sasl::NEEDS_FEATURE
                .iter()
                .find(|(name, _)| *name == upper && !sasl::ALL.contains(name))
            {
                return fail(
                    &key,
                    format!("{m} needs pop3d built with the cargo feature \"{feature}\""),
                );
            }
            if !sasl::ALL.contains(&upper.as_str()) {
                return fail(
                    &key,
                    format!(
                        "unknown SASL mechanism {m:?}; supported: {}",
                        sasl::ALL.join(", ")
                    ),
                );
            }
            let needs = match upper.as_str() {
                "OAUTHBEARER" | "XOAUTH2" if self.auth.oauth.is_none() => {
                    "an [auth.oauth] section to validate tokens"
                }
                "ANONYMOUS" if self.auth.anonymous_user.is_none() => {
                    "auth.anonymous_user, the mailbox anonymous users read"
                }
                "EXTERNAL" if self.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none()) => {
                    "tls.client_ca_file to verify client certificates"
                }
                "GSSAPI" if self.auth.gssapi.is_none() => {
                    "an [auth.gssapi] section with the keytab"
                }
                "SCRAM-SHA-1-PLUS" | "SCRAM-SHA-256-PLUS" if self.tls.is_none() => {
                    "a [tls] section: -PLUS binds to the TLS connection"
                }
                _ => continue,
            };
            return fail(&key, format!("{m} needs {needs}"));
        }
        crate::store::maildir::check_template(&self.storage.maildir)
            .or_else(|r| fail("storage.maildir", r))?;
        Ok(())
    }

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

/// Overlay `top` on `base`: tables merge key by key, anything else
/// (values, arrays such as `[[listener]]`) is replaced whole.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Best effort: the dotted key whose value or name starts at `span`.
fn key_at(text: &str, span: Option<std::ops::Range<usize>>) -> Option<String> {
    let span = span?;
    let (line, _) = line_col(text, span.start);
    let source_line = text.lines().nth(line - 1)?;
    let name = source_line.split('=').next()?.trim();
    if name.is_empty() || name.starts_with('[') {
        return None;
    }
    // Find the section header above the line.
    let section = text
        .lines()
        .take(line - 1)
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("[[")
                .and_then(|s| s.strip_suffix("]]"))
                .or_else(|| l.strip_prefix('[').and_then(|s| s.strip_suffix(']')))
        })
        .last();
    Some(match section {
        Some(s) => format!("{}.{name}", s.trim()),
        None => name.to_owned(),
    })
}

fn has_key(table: &toml::Table, dotted: &str) -> bool {
    let mut parts = dotted.split('.');
    let Some(section) = parts.next() else {
        return false;
    };
    let Some(key) = parts.next() else {
        return false;
    };
    table
        .get(section)
        .and_then(|v| v.as_table())
        .is_some_and(|t| t.contains_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = load("[auth]\nmechanisms = [\"scram-sha-256\", \"NTLM\", \"DIGEST-MD5\"]\nmaster_users = [\"admin\"]\n[auth.oauth]\nissuer = \"i\"\n")
            .unwrap()
            .config;
        assert!(c.mechanism_enabled("SCRAM-SHA-256"));
        assert_eq!(c.auth.master_users, ["admin"]);
        assert_eq!(c.auth.oauth.unwrap().user_claim, "email");
        let e = load("[auth.oauth]\nleeway = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("leeway"), "{e}");
    }

    #[test]
    fn risky_settings_warn() {
        let w = load("[auth]\nallow_plaintext = true\n").unwrap().warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("allow_plaintext"));
        assert!(w[1].contains("no listener offers TLS"));
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

// SPDX-License-Identifier: AGPL-3.0-only
//! Reading a configuration file: TOML parsing, presets under the file's
//! own keys, paths relative to the file, and errors that name the file,
//! the key and the reason. What other layers say of their own keys is
//! added on top by [`crate::setup`], which is what callers use.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Pop3Config, Preset, TlsMode};

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

impl ConfigError {
    /// An error in one key's value.
    pub fn at(file: &Path, key: String, reason: String) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            key: Some(key),
            position: None,
            reason,
        }
    }
}

/// A loaded configuration plus the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Pop3Config,
    pub warnings: Vec<String>,
}

impl Pop3Config {
    /// Read, parse and check a file against the configuration's own rules.
    /// Relative paths inside it are taken relative to the file's directory.
    pub(crate) fn read_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: None,
            position: None,
            reason: format!("cannot read: {e}"),
        })?;
        let mut loaded = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        loaded.config.resolve_paths(base);
        Ok(loaded)
    }

    /// Parse TOML text and check it against the configuration's own rules;
    /// `file` is used in error messages only.
    pub(crate) fn parse(text: &str, file: &Path) -> Result<LoadedConfig, ConfigError> {
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
        config
            .validate_values()
            .map_err(|e| ConfigError::at(file, e.key, e.reason))?;
        let mut warnings = Vec::new();
        if config.auth.allow_plaintext {
            warnings.push(
                "auth.allow_plaintext = true: passwords may cross the network unencrypted"
                    .to_owned(),
            );
        }
        if let Some(oauth) = &config.auth.oauth {
            if oauth.allow_any_audience {
                warnings.push(
                    "auth.oauth.allow_any_audience = true: a token the provider issued to any of its applications opens the mailbox".to_owned(),
                );
            }
            if oauth.allow_any_issuer {
                warnings.push(
                    "auth.oauth.allow_any_issuer = true: a token from any issuer that shares the signing keys opens the mailbox its claim names".to_owned(),
                );
            }
        }
        if config.auth.secret_key_file.is_none()
            && config
                .auth
                .mechanisms
                .iter()
                .any(|m| m.to_ascii_uppercase().starts_with("SCRAM-"))
        {
            warnings.push(
                "SCRAM is enabled without auth.secret_key_file: what SCRAM answers for unknown users changes at every restart and differs between nodes, which tells an observer they are unknown".to_owned(),
            );
        }
        warnings.extend(inert_keys(&config, &table));
        warnings.extend(super::listener::unusable_listeners(&config));
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
        fix(&mut self.storage.lock_dir);
        for p in [
            &mut self.security.block_list_file,
            &mut self.security.security_log_file,
            &mut self.security.shared_state_password_file,
            &mut self.storage.password_file,
            &mut self.storage.ca_file,
            &mut self.auth.secret_key_file,
            &mut self.auth.breached_passwords_file,
            &mut self.auth.password_file,
            &mut self.auth.ca_file,
            &mut self.auth.app_passwords_file,
        ]
        .into_iter()
        .chain(
            self.auth
                .ldap
                .as_mut()
                .into_iter()
                .flat_map(|l| [&mut l.dnpass_file, &mut l.ca_file]),
        )
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
        for l in &mut self.lmtp {
            if let Some(p) = &mut l.path {
                fix(p);
            }
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

/// Keys the file sets that cannot act in this configuration, each with
/// why: an accepted key either does what the documentation says or
/// `check-config` says plainly that it does nothing.
fn inert_keys(c: &Pop3Config, table: &toml::Table) -> Vec<String> {
    let mech = |m: &str| c.mechanism_enabled(m);
    let starttls = c.listeners.iter().any(|l| l.tls == TlsMode::Starttls);
    let listener_has = |key: &str| {
        table
            .get("listener")
            .and_then(|v| v.as_array())
            .is_some_and(|ls| {
                ls.iter().any(|l| {
                    l.as_table().is_some_and(|t| {
                        t.contains_key(key) && t.get("proxy_protocol") != Some(&true.into())
                    })
                })
            })
    };
    let postgres_store = c.storage.backend == super::StorageBackend::Postgres;
    let database = postgres_store || c.auth.backend == super::UserBackend::Postgres;
    let no_database = "neither storage.backend nor auth.backend is \"postgres\"";
    let database_keys = [
        "storage.url",
        "storage.password_file",
        "storage.connect_timeout",
        "storage.statement_timeout",
        "storage.tls",
        "storage.ca_file",
    ]
    .map(|k| (!database && has_key(table, k), k, no_database));
    let lease_keys = ["storage.lease_ttl"].map(|k| {
        (
            !postgres_store && has_key(table, k),
            k,
            "storage.backend is not \"postgres\"",
        )
    });
    let maildir_keys = ["storage.maildir", "storage.mark_seen"].map(|k| {
        (
            postgres_store && has_key(table, k),
            k,
            "storage.backend is \"postgres\" (the database keeps no seen flags)",
        )
    });
    let passwd_file = (
        c.auth.backend != super::UserBackend::PasswdFile && has_key(table, "auth.passwd_file"),
        "auth.passwd_file",
        "auth.backend is not \"passwd-file\"",
    );
    let mysql_keys = ["auth.url", "auth.password_file", "auth.tls", "auth.ca_file"].map(|k| {
        (
            c.auth.backend != super::UserBackend::Mysql && has_key(table, k),
            k,
            "auth.backend is not \"mysql\"",
        )
    });
    let networked = matches!(
        c.auth.backend,
        super::UserBackend::Mysql | super::UserBackend::Ldap
    );
    let directory_keys = [
        (
            !networked && has_key(table, "auth.timeout"),
            "auth.timeout",
            "auth.backend is neither \"mysql\" nor \"ldap\"",
        ),
        (
            c.auth.backend != super::UserBackend::Ldap && c.auth.ldap.is_some(),
            "auth.ldap",
            "auth.backend is not \"ldap\"",
        ),
    ];
    let inert: [(bool, &str, &str); 15] = [
        (
            has_key(table, "protocol.max_arguments"),
            "protocol.max_arguments",
            "no POP3 command takes more than two arguments, and more are refused",
        ),
        (
            !c.performance.enable_response_caching && has_key(table, "performance.cache_ttl"),
            "performance.cache_ttl",
            "performance.enable_response_caching is false",
        ),
        (
            !c.performance.enable_response_caching
                && has_key(table, "performance.max_cached_responses"),
            "performance.max_cached_responses",
            "performance.enable_response_caching is false",
        ),
        (
            !c.protocol.enable_pipelining && has_key(table, "protocol.max_pipelined_commands"),
            "protocol.max_pipelined_commands",
            "protocol.enable_pipelining is false (every reply is written on its own)",
        ),
        (
            !c.protocol.enable_top && has_key(table, "protocol.max_top_lines"),
            "protocol.max_top_lines",
            "protocol.enable_top is false",
        ),
        (
            !mech("DIGEST-MD5") && has_key(table, "auth.realm"),
            "auth.realm",
            "DIGEST-MD5 is not in auth.mechanisms",
        ),
        (
            !mech("NTLM") && has_key(table, "auth.ntlm_domain"),
            "auth.ntlm_domain",
            "NTLM is not in auth.mechanisms",
        ),
        (
            !mech("ANONYMOUS") && has_key(table, "auth.anonymous_user"),
            "auth.anonymous_user",
            "ANONYMOUS is not in auth.mechanisms",
        ),
        (
            !mech("EXTERNAL") && has_key(table, "auth.external_identity"),
            "auth.external_identity",
            "EXTERNAL is not in auth.mechanisms",
        ),
        (
            !mech("EXTERNAL") && c.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
            "tls.client_ca_file",
            "EXTERNAL is not in auth.mechanisms (clients are asked for certificates that nothing uses)",
        ),
        (
            !mech("OAUTHBEARER") && !mech("XOAUTH2") && c.auth.oauth.is_some(),
            "auth.oauth",
            "neither OAUTHBEARER nor XOAUTH2 is in auth.mechanisms",
        ),
        (
            !mech("GSSAPI") && c.auth.gssapi.is_some(),
            "auth.gssapi",
            "GSSAPI is not in auth.mechanisms",
        ),
        (
            !starttls && has_key(table, "server.enable_stls"),
            "server.enable_stls",
            "no listener has tls = \"starttls\"",
        ),
        (
            listener_has("proxy_trusted_networks"),
            "listener.proxy_trusted_networks",
            "that listener has no proxy_protocol = true",
        ),
        (
            !c.security.enable_security_logging && has_key(table, "security.security_log_file"),
            "security.security_log_file",
            "security.enable_security_logging is false",
        ),
    ];
    inert
        .into_iter()
        .chain(database_keys)
        .chain(lease_keys)
        .chain(maildir_keys)
        .chain([passwd_file])
        .chain(mysql_keys)
        .chain(directory_keys)
        .chain([(
            c.lmtp.is_empty() && has_key(table, "security.lmtp_trusted_networks"),
            "security.lmtp_trusted_networks",
            "there is no [[lmtp]] listener",
        )])
        .filter(|(inert, ..)| *inert)
        .map(|(_, key, why)| format!("{key} has no effect: {why}"))
        .collect()
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

// SPDX-License-Identifier: AGPL-3.0-only
//! Users in an LDAP directory (OpenLDAP, Active Directory), configured
//! with the keys of Dovecot's `dovecot-ldap.conf.ext` (`[auth.ldap]`).
//!
//! A lookup binds as `dn` (or anonymously), searches `base` with
//! `user_filter` (else `pass_filter`) for a delivery or a command, and
//! with both for a login, every value put into the filter
//! escaped as RFC 4515 says, and maps the attributes `pass_attrs` and
//! `user_attrs` name onto the user. Passwords are compared against the
//! stored `userPassword` (`{SSHA}`, `{CRYPT}$6$...`, `{SSHA512}`...), or,
//! with `auth_bind`, checked by binding as the user on a connection kept
//! for binds. The client is the ldap3 crate; no BER is written here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tokio::sync::Semaphore;

use super::decoys::Decoys;
use super::{Scheme, StoredSecret, UserDb, UserDbError, UserRecord, UserSettings};
use crate::config::{LdapConfig, LdapScope, LdapTls, Pop3Config, SetupError};

/// LDAP's result code for a wrong password (RFC 4511).
const INVALID_CREDENTIALS: u32 = 49;

pub struct LdapUsers {
    cfg: LdapConfig,
    /// The lookup account's password.
    dnpass: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    /// (LDAP attribute, pop3d field), lower-cased attribute names.
    attrs: Vec<(String, String)>,
    lookups: Pool,
    binds: Pool,
    /// What an unknown user costs in compare mode.
    decoys: Mutex<Decoys>,
}

/// Idle connections, and a bound on how many are in use at once.
struct Pool {
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
}

impl Pool {
    fn new(size: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    fn take(&self) -> Option<Ldap> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put(&self, mut ldap: Ldap) {
        if !ldap.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ldap);
        }
    }
}

/// `attr=field,attr=field` (Dovecot's form) as pairs.
fn parse_attrs(key: &str, spec: &str) -> Result<Vec<(String, String)>, SetupError> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((attr, field)) if !attr.trim().is_empty() && !field.trim().is_empty() => {
                let field = field.trim();
                Ok((
                    attr.trim().to_ascii_lowercase(),
                    field.strip_prefix("userdb_").unwrap_or(field).to_owned(),
                ))
            }
            _ => Err(SetupError::new(
                key,
                format!(
                    "{pair:?} is not ldapAttribute=field (e.g. uid=user,userPassword=password)"
                ),
            )),
        })
        .collect()
}

/// `%u`, `%n`, `%d` (and `%%`) of `template` for `name`, each value passed
/// through `escape`.
fn expand(template: &str, name: &str, escape: impl Fn(&str) -> String) -> String {
    let (local, domain) = name.rsplit_once('@').unwrap_or((name, ""));
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&escape(name)),
            Some('n') => out.push_str(&escape(local)),
            Some('d') => out.push_str(&escape(domain)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn filter_value(v: &str) -> String {
    ldap3::ldap_escape(v).into_owned()
}

fn dn_value(v: &str) -> String {
    ldap3::dn_escape(v).into_owned()
}

fn unavailable(what: impl std::fmt::Display) -> UserDbError {
    UserDbError::Unavailable(format!("LDAP: {what}"))
}

impl LdapUsers {
    /// The directory `[auth.ldap]` describes, checked without connecting
    /// (what `check-config` runs too).
    pub fn from_config(config: &Pop3Config) -> Result<LdapUsers, SetupError> {
        let Some(cfg) = config.auth.ldap.clone() else {
            return Err(SetupError::new(
                "auth.ldap",
                "backend = \"ldap\" needs an [auth.ldap] section (uris, base, ...)",
            ));
        };
        if cfg.uris.is_empty() {
            return Err(SetupError::new(
                "auth.ldap.uris",
                "names no server, e.g. uris = [\"ldap://127.0.0.1:389\"]",
            ));
        }
        for (i, uri) in cfg.uris.iter().enumerate() {
            if !(uri.starts_with("ldap://") || uri.starts_with("ldaps://")) {
                return Err(SetupError::new(
                    format!("auth.ldap.uris[{i}]"),
                    format!("{uri:?} is not an ldap:// or ldaps:// URI"),
                ));
            }
        }
        if cfg.base.is_empty() {
            return Err(SetupError::new("auth.ldap.base", "is empty"));
        }
        if cfg.dnpass_file.is_some() && cfg.dn.is_none() {
            return Err(SetupError::new(
                "auth.ldap.dnpass_file",
                "is set without auth.ldap.dn",
            ));
        }
        if cfg.auth_bind_userdn.is_some() && !cfg.auth_bind {
            return Err(SetupError::new(
                "auth.ldap.auth_bind_userdn",
                "is set without auth_bind = true",
            ));
        }
        let dnpass = cfg
            .dnpass_file
            .as_deref()
            .map(|f| crate::config::read_secret_file("auth.ldap.dnpass_file", f))
            .transpose()?;
        let mut attrs = parse_attrs("auth.ldap.pass_attrs", &cfg.pass_attrs)?;
        attrs.extend(parse_attrs("auth.ldap.user_attrs", &cfg.user_attrs)?);
        let tls =
            if cfg.tls == LdapTls::Starttls || cfg.uris.iter().any(|u| u.starts_with("ldaps://")) {
                Some(client_tls(cfg.ca_file.as_deref())?)
            } else {
                None
            };
        Ok(LdapUsers {
            lookups: Pool::new(cfg.pool_size),
            binds: Pool::new(cfg.pool_size),
            dnpass,
            tls,
            timeout: config.auth.timeout,
            attrs,
            cfg,
            // What directories commonly hold until a lookup says.
            decoys: Decoys::new(Scheme::Ssha),
        })
    }

    /// A new connection to the first server that answers (not bound).
    async fn connect(&self) -> Result<Ldap, UserDbError> {
        let mut last = String::new();
        for uri in &self.cfg.uris {
            let mut settings = LdapConnSettings::new()
                .set_conn_timeout(self.timeout)
                .set_starttls(self.cfg.tls == LdapTls::Starttls && uri.starts_with("ldap://"));
            if let Some(tls) = &self.tls {
                settings = settings.set_config(tls.clone());
            }
            match LdapConnAsync::with_settings(settings, uri).await {
                Ok((conn, ldap)) => {
                    ldap3::drive!(conn);
                    return Ok(ldap);
                }
                Err(e) => last = format!("{uri}: {e}"),
            }
        }
        Err(unavailable(last))
    }

    /// A connection for lookups, bound as `dn`.
    async fn lookup_connection(&self) -> Result<Ldap, UserDbError> {
        if let Some(ldap) = self.lookups.take() {
            return Ok(ldap);
        }
        let mut ldap = self.connect().await?;
        if let Some(dn) = &self.cfg.dn {
            let pass = self.dnpass.as_deref().unwrap_or("");
            ldap.with_timeout(self.timeout)
                .simple_bind(dn, pass)
                .await
                .and_then(|r| r.success())
                .map_err(|e| unavailable(format!("binding as auth.ldap.dn: {e}")))?;
        }
        Ok(ldap)
    }

    fn scope(&self) -> Scope {
        match self.cfg.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::Onelevel => Scope::OneLevel,
            LdapScope::Subtree => Scope::Subtree,
        }
    }

    /// The filter, and its keys for messages. As in Dovecot, `user_filter`
    /// (when set) finds whom mail is for (its userdb), and a login needs
    /// `pass_filter` (its passdb) and the userdb to know the user: both
    /// filters, in one search.
    fn filter(&self, login: bool) -> (&'static str, std::borrow::Cow<'_, str>) {
        match (&self.cfg.user_filter, login) {
            (Some(user), true) => (
                "pass_filter and user_filter",
                format!("(&{}{user})", self.cfg.pass_filter).into(),
            ),
            (Some(user), false) => ("user_filter", user.into()),
            (None, _) => ("pass_filter", self.cfg.pass_filter.as_str().into()),
        }
    }

    /// The user `name`, found with the login's filter or the other: None
    /// when there is none.
    async fn find(&self, name: &str, login: bool) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        Ok(self
            .search(name, login)
            .await?
            .map(|entry| Arc::new(self.record(name, entry))))
    }

    async fn search(&self, name: &str, login: bool) -> Result<Option<SearchEntry>, UserDbError> {
        let (filter_key, template) = self.filter(login);
        let filter = expand(&template, name, filter_value);
        let wanted: Vec<&str> = self.attrs.iter().map(|(a, _)| a.as_str()).collect();
        let _permit = self.lookups.permits.acquire().await.map_err(unavailable)?;
        let work = async {
            let mut ldap = self.lookup_connection().await?;
            let found = ldap
                .with_timeout(self.timeout)
                .search(&self.cfg.base, self.scope(), &filter, wanted)
                .await
                .and_then(|r| r.success())
                .map_err(unavailable)?;
            self.lookups.put(ldap);
            Ok::<_, UserDbError>(found.0)
        };
        let entries = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))??;
        match entries.len() {
            0 => Ok(None),
            1 => Ok(Some(SearchEntry::construct(
                entries.into_iter().next().unwrap(),
            ))),
            n => Err(unavailable(format!(
                "{n} entries match the filter for one user: make auth.ldap's {filter_key} unique"
            ))),
        }
    }

    fn record(&self, name: &str, entry: SearchEntry) -> UserRecord {
        let attrs: std::collections::HashMap<String, Vec<String>> = entry
            .attrs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let first = |attr: &str| attrs.get(attr).and_then(|v| v.first()).cloned();
        let mut record = UserRecord {
            name: name.to_owned(),
            secret: None,
            uid: None,
            gid: None,
            home: None,
            extra: String::new(),
            settings: UserSettings::default(),
            account: Default::default(),
            dn: Some(entry.dn),
        };
        for (attr, field) in &self.attrs {
            let Some(value) = first(attr) else { continue };
            match field.as_str() {
                "user" => record.name = value,
                "password" if !self.cfg.auth_bind => match StoredSecret::parse(&value) {
                    Ok(s) => {
                        Decoys::saw(&self.decoys, s.scheme());
                        record.secret = Some(s);
                    }
                    Err(e) => tracing::warn!(user = %name, "unusable stored secret: {e}"),
                },
                "home" => record.home = Some(value.into()),
                "uid" => record.uid = value.parse().ok(),
                "gid" => record.gid = value.parse().ok(),
                other => {
                    if let Err(reason) = record.settings.set(other, &value) {
                        tracing::warn!(user = %name, "unusable setting in the directory: {reason}");
                    }
                }
            }
        }
        record
    }

    /// Bind as `dn` with `password` on a connection kept for binds.
    async fn bind(&self, dn: &str, password: &str) -> Result<bool, UserDbError> {
        let _permit = self.binds.permits.acquire().await.map_err(unavailable)?;
        let work = async {
            let mut ldap = match self.binds.take() {
                Some(l) => l,
                None => self.connect().await?,
            };
            let result = ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, password)
                .await
                .map_err(unavailable)?;
            let verdict = match result.rc {
                0 => Ok(true),
                INVALID_CREDENTIALS => Ok(false),
                rc => Err(unavailable(format!("bind answered {rc}: {}", result.text))),
            };
            if verdict.is_ok() {
                self.binds.put(ldap);
            }
            verdict
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
    }
}

/// TLS to the directory: `ca_file`'s roots, or the system's.
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    let roots =
        crate::tls::client_roots(ca_file).map_err(|e| SetupError::new("auth.ldap.ca_file", e))?;
    let config = crate::tls::client_config(roots).map_err(|e| SetupError::new("auth.ldap", e))?;
    Ok(Arc::new(config))
}

#[async_trait]
impl UserDb for LdapUsers {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        self.find(name, false).await
    }

    async fn lookup_login(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        self.find(name, true).await
    }

    /// A connection, bound as `dn`, answers.
    async fn health(&self) -> Result<(), String> {
        let _permit = self
            .lookups
            .permits
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let ldap = tokio::time::timeout(self.timeout, self.lookup_connection())
            .await
            .map_err(|_| format!("LDAP: no answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        self.lookups.put(ldap);
        Ok(())
    }

    /// In compare mode, an unknown user's password is checked against a
    /// secret in the scheme the directory's entries mostly use; with
    /// `auth_bind`, an unknown user costs a bind instead
    /// (`check_password`).
    fn decoy(&self) -> Option<StoredSecret> {
        (!self.cfg.auth_bind)
            .then(|| Decoys::decoy(&self.decoys))
            .flatten()
    }

    /// With `auth_bind` there are no secrets to read: only mechanisms
    /// that carry the password can work (CAPA offers no CRAM-MD5, SCRAM,
    /// DIGEST-MD5 or NTLM).
    fn schemes(&self) -> Option<Vec<Scheme>> {
        self.cfg.auth_bind.then(Vec::new)
    }

    async fn check_password(
        &self,
        user: Option<&UserRecord>,
        password: &[u8],
    ) -> Option<Result<bool, UserDbError>> {
        if !self.cfg.auth_bind {
            return None;
        }
        // An empty password would be an unauthenticated bind, which a
        // directory answers with success (RFC 4513 §5.1.2).
        let Ok(password) = std::str::from_utf8(password) else {
            return Some(Ok(false));
        };
        if password.is_empty() {
            return Some(Ok(false));
        }
        let dn = match (user, &self.cfg.auth_bind_userdn) {
            (Some(u), Some(template)) => expand(template, &u.name, dn_value),
            (Some(u), None) => u.dn.clone().unwrap_or_default(),
            // An unknown user costs a bind like a known one.
            (None, _) => {
                let mut noise = [0u8; 12];
                let _ = getrandom::fill(&mut noise);
                format!(
                    "cn=pop3d-decoy-{},{}",
                    crate::hex::encode(&noise),
                    self.cfg.base
                )
            }
        };
        if dn.is_empty() {
            return Some(Ok(false));
        }
        let verdict = self.bind(&dn, password).await;
        Some(verdict.map(|ok| ok && user.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_costs_a_check_in_the_directorys_scheme() {
        let mut c = Pop3Config::default();
        c.auth.ldap = Some(LdapConfig {
            uris: vec!["ldap://127.0.0.1:1".into()],
            base: "dc=example".into(),
            ..LdapConfig::default()
        });
        let users = LdapUsers::from_config(&c).unwrap();
        assert_eq!(users.decoy().map(|d| d.scheme()), Some(Scheme::Ssha));
        let crypt = crate::auth::hash_password(Scheme::Sha512Crypt, "pw")
            .unwrap()
            .replace("{SHA512-CRYPT}", "{CRYPT}");
        for uid in ["a", "b"] {
            let entry = SearchEntry {
                dn: format!("uid={uid},dc=example"),
                attrs: [("userPassword".to_owned(), vec![crypt.clone()])].into(),
                bin_attrs: Default::default(),
            };
            assert!(users.record(uid, entry).secret.is_some());
        }
        // `{CRYPT}$6$...`: the decoy is a SHA512-CRYPT string under CRYPT.
        let decoy = users.decoy().unwrap();
        assert_eq!(decoy.scheme(), Scheme::Crypt);
        assert!(decoy.to_field().starts_with("{CRYPT}$6$"));
        // With auth_bind an unknown user costs a bind, not a decoy.
        c.auth.ldap.as_mut().unwrap().auth_bind = true;
        assert!(LdapUsers::from_config(&c).unwrap().decoy().is_none());
    }

    #[test]
    fn templates_escape_what_they_insert() {
        assert_eq!(
            expand(
                "(&(objectClass=posixAccount)(uid=%u))",
                "a*)(uid=*",
                filter_value
            ),
            "(&(objectClass=posixAccount)(uid=a\\2a\\29\\28uid=\\2a))"
        );
        assert_eq!(
            expand(
                "(&(uid=%n)(mailDomain=%d))",
                "alice@example.org",
                filter_value
            ),
            "(&(uid=alice)(mailDomain=example.org))"
        );
        assert_eq!(
            expand(
                "uid=%u,ou=people,dc=example,dc=org",
                "x,ou=admins",
                dn_value
            ),
            "uid=x\\2cou\\3dadmins,ou=people,dc=example,dc=org"
        );
        assert_eq!(expand("100%% %x", "u", filter_value), "100% %x");
    }

    #[test]
    fn attribute_maps_in_dovecots_form() {
        let a = parse_attrs(
            "k",
            "uid=user, userPassword=password,mailQuota=userdb_quota_rule",
        )
        .unwrap();
        assert_eq!(
            a,
            [
                ("uid".into(), "user".into()),
                ("userpassword".into(), "password".into()),
                ("mailquota".into(), "quota_rule".into())
            ]
        );
        assert!(parse_attrs("k", "uid").is_err());
        assert!(parse_attrs("k", "=user").is_err());
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! `[auth]`, `[auth.oauth]` and `[auth.gssapi]`: users, SASL mechanisms and
//! how tokens and tickets are checked.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DatabaseTls;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Where users come from.
    pub backend: UserBackend,
    /// Dovecot-style passwd file (`backend = "passwd-file"`).
    pub passwd_file: PathBuf,
    /// `backend = "postgres"` with an existing table instead of pop3d's
    /// own `users`: a query that takes the login as `$1` (always bound,
    /// never pasted in) and returns a `password` column (`{SCHEME}secret`)
    /// and a `user` column (the canonical name, used for the mailbox, the
    /// lock, LMTP and logs). No row: the user is unknown, refused like a
    /// wrong password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_query: Option<String>,
    /// `backend = "mysql"`: the database, `mysql://USER@HOST:PORT/DB`, or
    /// over a socket `mysql://USER@localhost/DB?socket=/run/mysqld/mysqld.sock`;
    /// never with a password (see `password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The password of `url`'s account: the first line of this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS to `url`'s server: `off`, or `require` (no connection without
    /// it, the certificate verified against `ca_file`). A socket URL never
    /// leaves the machine and never uses TLS.
    pub tls: DatabaseTls,
    /// CA certificates (PEM) that sign `url`'s server certificate; the
    /// system's roots when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The longest a lookup in a networked user database (MySQL, LDAP)
    /// may take, connecting included, before the login gets `[SYS/TEMP]`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
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
    /// Users in an LDAP directory (`backend = "ldap"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// A file of at least 32 random octets, the same on every node: keys
    /// what SCRAM answers for unknown users (and the salts of plaintext
    /// secrets), so the answers are the same on every node and after a
    /// restart. Created with random content when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// Passwords known to be breached: a Pwned Passwords list (SHA-1 in
    /// hex, `:count`, sorted), searched in place. A login with a password
    /// on it is logged and counted, or refused (`breached_passwords_policy`);
    /// `pop3d user add|passwd` refuse such a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breached_passwords_file: Option<PathBuf>,
    pub breached_passwords_policy: BreachedPolicy,
    /// App passwords (`pop3d app-password`): where they are kept. Unset:
    /// none are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_passwords_file: Option<PathBuf>,
    /// Refuse the account password for POP3: only app passwords open the
    /// mailbox (a user database field `require_app_passwords` decides per
    /// user).
    pub require_app_passwords: bool,
    /// The auth cache, as Dovecot's `auth_cache_size`: entries (user
    /// lookups and password checks) kept in memory; 0 (the default): off.
    pub cache_size: usize,
    /// How long a found user, and a right password, are remembered.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long an unknown user, and a wrong password, are remembered
    /// (0: not at all). A remembered failure still counts as a failure.
    #[serde(with = "humantime_serde")]
    pub cache_negative_ttl: Duration,
}

/// What a login with a breached password gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreachedPolicy {
    /// Logged in; a warning and a security event say so, and a metric
    /// counts it.
    #[default]
    Warn,
    /// Refused with `-ERR [AUTH]`, counted as a failed login.
    Refuse,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            backend: UserBackend::PasswdFile,
            password_query: None,
            url: None,
            password_file: None,
            tls: DatabaseTls::Off,
            ca_file: None,
            timeout: Duration::from_secs(5),
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
            ldap: None,
            secret_key_file: None,
            breached_passwords_file: None,
            breached_passwords_policy: BreachedPolicy::Warn,
            app_passwords_file: None,
            require_app_passwords: false,
            cache_size: 0,
            cache_ttl: Duration::from_secs(3600),
            cache_negative_ttl: Duration::from_secs(3600),
        }
    }
}

/// Where users and their secrets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserBackend {
    /// `passwd_file`, Dovecot's format.
    PasswdFile,
    /// The database `[storage] url` names: pop3d's own `users` table (see
    /// `pop3d user`), or an existing table through `password_query`.
    Postgres,
    /// An existing MySQL or MariaDB table (Postfixadmin's `mailbox`)
    /// through `password_query`, at `url`.
    Mysql,
    /// An LDAP directory, `[auth.ldap]`.
    Ldap,
}

/// `[auth.ldap]`: the keys of Dovecot's `dovecot-ldap.conf.ext`, meaning
/// what they mean there, so that values carry over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`; several for failover,
    /// tried in order.
    pub uris: Vec<String>,
    /// The account lookups bind as; anonymous when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dn: Option<String>,
    /// Its password: the first line of this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnpass_file: Option<PathBuf>,
    pub base: String,
    pub scope: LdapScope,
    /// Finds the user for a login: `%u` the login, `%n` its part before
    /// the last `@`, `%d` after it; each escaped as RFC 4515 says.
    pub pass_filter: String,
    /// `ldapAttribute=field,...`: which attributes hold the user name
    /// (`user`) and the secret (`password`) and any per-user field.
    pub pass_attrs: String,
    /// Finds whom mail is for: LMTP and `pop3d deliver` recipients and
    /// the administration commands' users, as Dovecot's userdb does. A
    /// login needs both filters (Dovecot's passdb and userdb), so a
    /// condition in `pass_filter` (an account switched off) keeps the
    /// user out while mail is still delivered. Unset: `pass_filter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_filter: Option<String>,
    /// `ldapAttribute=field,...` for `home`, `uid`, `gid`, `expire`,
    /// `login_delay`, `quota_rule`, `allow_nets`.
    pub user_attrs: String,
    /// Check a password by binding as the user instead of reading it.
    pub auth_bind: bool,
    /// With `auth_bind`: the user's DN made from this template (`%u`,
    /// `%n`, `%d`, escaped as RFC 4514 says) instead of searched for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_bind_userdn: Option<String>,
    /// `starttls` on `ldap://` URIs (ldaps:// is TLS from the start).
    pub tls: LdapTls,
    /// The CA that signed the directory's certificate (system roots when
    /// unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Connections kept for lookups, and as many for binds.
    pub pool_size: usize,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            uris: Vec::new(),
            dn: None,
            dnpass_file: None,
            base: String::new(),
            scope: LdapScope::Subtree,
            pass_filter: "(&(objectClass=posixAccount)(uid=%u))".into(),
            pass_attrs: "uid=user,userPassword=password".into(),
            user_filter: None,
            user_attrs: "homeDirectory=home,uidNumber=uid,gidNumber=gid".into(),
            auth_bind: false,
            auth_bind_userdn: None,
            tls: LdapTls::None,
            ca_file: None,
            pool_size: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapScope {
    Base,
    Onelevel,
    Subtree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapTls {
    None,
    Starttls,
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
    /// Without it a token from any tenant or issuer that shares the keys
    /// and audience would open the mailbox its claim names, so it must be
    /// set unless `allow_any_issuer` says otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accept tokens whatever their issuer (check-config warns).
    pub allow_any_issuer: bool,
    /// Required `aud`: this server's identity at the provider. Without it
    /// a token the provider issued to any of its applications would open
    /// the mailbox, so it must be set unless `allow_any_audience` says
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Accept tokens whatever their audience (check-config warns).
    pub allow_any_audience: bool,
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
            allow_any_issuer: false,
            audience: None,
            allow_any_audience: false,
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
    /// when the realm is this one; unset, the realm of the service's own
    /// principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Further realms whose principals map to local users of the same
    /// name (across a cross-realm trust); none by default.
    pub allowed_realms: Vec<String>,
}

impl Default for GssapiConfig {
    fn default() -> Self {
        GssapiConfig {
            keytab: PathBuf::from("/etc/pop3d/krb5.keytab"),
            service: "pop".into(),
            realm: None,
            allowed_realms: Vec::new(),
        }
    }
}

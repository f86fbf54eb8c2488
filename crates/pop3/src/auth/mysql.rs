// SPDX-License-Identifier: AGPL-3.0-only
//! Users in MySQL or MariaDB: an existing table (Postfixadmin's `mailbox`
//! as it is) read through `[auth] password_query`, the login always bound
//! as the `?` parameter, never pasted into the SQL. The rows mean what
//! they mean on PostgreSQL (see `sql_row.rs`): `user`, `password`
//! (`{SCHEME}secret`, or Postfixadmin's bare `$1$`/`$6$` crypt strings),
//! and the per-user columns pop3d knows.
//!
//! A pool of at most `performance.connection_pool_size` connections,
//! opened on demand, so `serve` starts while the database is down and
//! recovers by itself when it is back; every lookup is bounded by
//! `auth.timeout`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, SslOpts, Value};

use super::decoys::Decoys;
use super::sql_row::UserRow;
use super::{Scheme, StoredSecret, UserDb, UserDbError, UserRecord};
use crate::config::{AuthConfig, DatabaseTls, Pop3Config, SetupError};

pub struct MysqlUsers {
    opts: Opts,
    /// Made at first use, in the runtime (the pool spawns its tasks).
    pool: std::sync::OnceLock<Pool>,
    query: String,
    timeout: Duration,
    decoys: std::sync::Mutex<Decoys>,
}

impl MysqlUsers {
    /// The users `[auth]` describes, checked without connecting (what
    /// `check-config` runs too).
    pub fn from_config(config: &Pop3Config) -> Result<MysqlUsers, SetupError> {
        let auth = &config.auth;
        let Some(url) = &auth.url else {
            return Err(SetupError::new(
                "auth.url",
                "backend = \"mysql\" needs the database, e.g. url = \"mysql://pop3d@127.0.0.1:3306/postfix\"",
            ));
        };
        let opts = Opts::from_url(url)
            // The parser's message never repeats the URL.
            .map_err(|e| SetupError::new("auth.url", format!("not a MySQL URL: {e}")))?;
        if opts.pass().is_some() {
            return Err(SetupError::new(
                "auth.url",
                "holds a password; put it in auth.password_file instead (the URL is printed by check-config and logged)",
            ));
        }
        if opts.db_name().is_none() {
            return Err(SetupError::new("auth.url", "names no database"));
        }
        if opts.ssl_opts().is_some() {
            return Err(SetupError::new(
                "auth.url",
                "asks for TLS; say so with auth.tls = \"require\" (and auth.ca_file) instead",
            ));
        }
        let query = match auth.password_query.as_deref() {
            Some(q) if q.contains('?') => q.to_owned(),
            Some(_) => {
                return Err(SetupError::new(
                    "auth.password_query",
                    "takes the login as `?` (bound, never pasted), e.g. SELECT username AS user, password FROM mailbox WHERE username = ? AND active = 1",
                ));
            }
            None => {
                return Err(SetupError::new(
                    "auth.password_query",
                    "backend = \"mysql\" needs the query, e.g. for Postfixadmin: SELECT username AS user, password FROM mailbox WHERE username = ? AND active = 1",
                ));
            }
        };
        let password = auth
            .password_file
            .as_deref()
            .map(|f| crate::config::read_secret_file("auth.password_file", f))
            .transpose()?;
        let size = config.performance.connection_pool_size.max(1);
        let constraints = PoolConstraints::new(0, size)
            .ok_or_else(|| SetupError::new("performance.connection_pool_size", "too small"))?;
        let opts = OptsBuilder::from_opts(opts)
            .pass(password)
            .ssl_opts(ssl_opts(auth)?)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        Ok(MysqlUsers {
            opts: opts.into(),
            pool: std::sync::OnceLock::new(),
            query,
            timeout: auth.timeout,
            // Postfixadmin's default these days.
            decoys: Decoys::new(Scheme::Sha512Crypt),
        })
    }

    /// `work` on a pooled connection, within `auth.timeout`.
    async fn with_conn<T>(
        &self,
        work: impl AsyncFnOnce(&mut mysql_async::Conn) -> Result<T, mysql_async::Error>,
    ) -> Result<T, UserDbError> {
        let pool = self.pool.get_or_init(|| Pool::new(self.opts.clone()));
        let attempt = async {
            let mut conn = pool.get_conn().await?;
            work(&mut conn).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(UserDbError::Unavailable(format!("MySQL: {e}"))),
            Err(_) => Err(UserDbError::Unavailable(format!(
                "MySQL: no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// What `[auth] tls` and `ca_file` tell the client: None for plain TCP.
/// The roots are read here, so `check-config` finds a bad `ca_file`, and
/// given as PEM with the client's own built-in roots turned off: the
/// server is trusted as `[storage] tls` trusts PostgreSQL, on `ca_file`
/// or the system's roots, never on a list compiled into a library.
fn ssl_opts(auth: &AuthConfig) -> Result<Option<SslOpts>, SetupError> {
    match auth.tls {
        DatabaseTls::Off => Ok(None),
        DatabaseTls::Prefer => Err(SetupError::new(
            "auth.tls",
            "\"prefer\" is not offered for MySQL: anyone between pop3d and the database could turn TLS off; use \"require\", or \"off\" on a network you trust",
        )),
        DatabaseTls::Require => {
            let certs = crate::tls::client_root_certs(auth.ca_file.as_deref())
                .map_err(|e| SetupError::new("auth.ca_file", e))?;
            if certs.is_empty() {
                return Err(SetupError::new(
                    "auth.ca_file",
                    "unset, and the system has no CA certificates to verify the database with (install ca-certificates, or name the CA that signed the server's certificate)",
                ));
            }
            let pem: String = certs.iter().map(|c| pem_certificate(c)).collect();
            Ok(Some(
                SslOpts::default()
                    .with_disable_built_in_roots(true)
                    .with_root_certs(vec![pem.into_bytes().into()]),
            ))
        }
    }
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A row of the user query, as [`UserRow`] reads rows.
struct MysqlRow(Row);

impl MysqlRow {
    fn value(&self, column: &str) -> Option<&Value> {
        let i = self
            .0
            .columns_ref()
            .iter()
            .position(|c| c.name_str() == column)?;
        self.0.as_ref(i)
    }
}

impl UserRow for MysqlRow {
    fn text(&self, column: &str) -> Option<Option<String>> {
        Some(match self.value(column)? {
            Value::NULL => None,
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Int(i) => Some(i.to_string()),
            Value::UInt(u) => Some(u.to_string()),
            other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
        })
    }

    fn flag(&self, column: &str) -> bool {
        match self.value(column) {
            Some(Value::Int(i)) => *i != 0,
            Some(Value::UInt(u)) => *u != 0,
            Some(Value::Bytes(b)) => matches!(b.as_slice(), b"1" | b"y" | b"Y" | b"true"),
            _ => false,
        }
    }
}

#[async_trait]
impl UserDb for MysqlUsers {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        let row: Option<Row> = self
            .with_conn(async |conn| conn.exec_first(self.query.as_str(), (name,)).await)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        super::sql_row::record(name, &MysqlRow(row), &self.decoys).map(|r| Some(Arc::new(r)))
    }

    /// The database answers, and the query prepares.
    async fn health(&self) -> Result<(), String> {
        self.with_conn(async |conn| {
            conn.ping().await?;
            conn.prep(self.query.as_str()).await.map(drop)
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// An unknown user costs one check in the scheme most of the users
    /// found so far have, like a wrong password does.
    fn decoy(&self) -> Option<StoredSecret> {
        Decoys::decoy(&self.decoys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserBackend;

    fn config(url: Option<&str>, query: Option<&str>) -> Pop3Config {
        let mut c = Pop3Config::default();
        c.auth.backend = UserBackend::Mysql;
        c.auth.url = url.map(str::to_owned);
        c.auth.password_query = query.map(str::to_owned);
        c
    }

    #[test]
    fn a_bad_configuration_names_its_key_and_why() {
        let q = Some("SELECT username AS user, password FROM mailbox WHERE username = ?");
        let key = |c: Pop3Config| MysqlUsers::from_config(&c).err().map(|e| e.to_string());
        let missing = key(config(None, q)).unwrap();
        assert!(missing.contains("auth.url"), "{missing}");
        let with_password = key(config(Some("mysql://u:hunter2@127.0.0.1/db"), q)).unwrap();
        assert!(
            with_password.contains("auth.password_file"),
            "{with_password}"
        );
        assert!(!with_password.contains("hunter2"));
        let no_db = key(config(Some("mysql://u@127.0.0.1"), q)).unwrap();
        assert!(no_db.contains("names no database"), "{no_db}");
        let pasted = key(config(
            Some("mysql://u@127.0.0.1/db"),
            Some("SELECT * FROM mailbox WHERE username = '%u'"),
        ))
        .unwrap();
        assert!(pasted.contains("auth.password_query"), "{pasted}");
        assert!(key(config(Some("mysql://u@127.0.0.1/db"), None)).is_some());
        assert_eq!(key(config(Some("mysql://u@127.0.0.1:3306/db"), q)), None);
    }

    #[test]
    fn tls_is_required_or_off_and_its_ca_read_at_once() {
        let q = Some("SELECT username AS user, password FROM mailbox WHERE username = ?");
        let url = Some("mysql://u@127.0.0.1/db");
        let key = |c: Pop3Config| MysqlUsers::from_config(&c).err().map(|e| e.to_string());
        let in_url = key(config(Some("mysql://u@127.0.0.1/db?require_ssl=true"), q)).unwrap();
        assert!(in_url.contains("auth.tls"), "{in_url}");
        let mut c = config(url, q);
        c.auth.tls = DatabaseTls::Prefer;
        let prefer = key(c).unwrap();
        assert!(prefer.starts_with("auth.tls"), "{prefer}");
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(url, q);
        c.auth.tls = DatabaseTls::Require;
        c.auth.ca_file = Some(dir.path().join("ca.pem"));
        let missing = key(c.clone()).unwrap();
        assert!(missing.contains("auth.ca_file") && missing.contains("ca.pem"));
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let empty = key(c.clone()).unwrap();
        assert!(empty.contains("no certificate"), "{empty}");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
        assert_eq!(key(c), None);
    }

    #[test]
    fn a_certificate_as_pem_reads_back_as_itself() {
        let cert = rcgen::generate_simple_self_signed(vec!["db.example".to_owned()]).unwrap();
        let der = cert.cert.der().to_vec();
        let pem = pem_certificate(&der);
        use rustls_pki_types::pem::PemObject;
        let back = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
        assert!(pem.lines().all(|l| l.len() <= 64));
    }
}

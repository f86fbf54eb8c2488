// SPDX-License-Identifier: AGPL-3.0-only
//! TLS to the database server: rustls, verifying the server's certificate
//! against `[storage] ca_file` or the system's roots.

use rustls::RootCertStore;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::StorageConfig;
use crate::tls::{client_config, client_roots};

/// The connector the pool uses (never used when `tls = "off"`).
pub fn connector(storage: &StorageConfig) -> Result<MakeRustlsConnect, String> {
    let roots = match storage.tls {
        crate::config::DatabaseTls::Off => RootCertStore::empty(),
        _ => client_roots(storage.ca_file.as_deref())?,
    };
    Ok(MakeRustlsConnect::new(client_config(roots)?))
}

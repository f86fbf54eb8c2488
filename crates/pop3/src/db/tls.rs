// SPDX-License-Identifier: AGPL-3.0-only
//! TLS to the database server: rustls, verifying the server's certificate
//! against `[storage] ca_file` or the system's roots.

use rustls::RootCertStore;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::StorageConfig;
use crate::tls::{client_roots, provider};

/// The connector the pool uses (never used when `tls = "off"`).
pub fn connector(storage: &StorageConfig) -> Result<MakeRustlsConnect, String> {
    let roots = match storage.tls {
        crate::config::DatabaseTls::Off => RootCertStore::empty(),
        _ => client_roots(storage.ca_file.as_deref())?,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

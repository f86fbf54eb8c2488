// SPDX-License-Identifier: AGPL-3.0-only
//! TLS server configuration (RFC 8314): TLS 1.2 and 1.3 only, ring as the
//! one crypto provider, ALPN `pop3`, certificates and keys read as PEM with
//! rustls-pki-types.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("tls.key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("tls: certificate and key do not fit together: {0}")]
    Config(String),
}

/// The crypto provider every TLS object of this crate uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the server side of TLS from the `[tls]` section.
pub fn load(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| TlsError::Key {
        path: cfg.key.display().to_string(),
        reason: e.to_string(),
    })?;
    server_config(certs, key)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Cert {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

/// A server config from an in-memory chain and key (embedding hosts, tests).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"pop3".to_vec()];
    Ok(Arc::new(config))
}

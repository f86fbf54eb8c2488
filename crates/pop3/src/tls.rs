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
#[non_exhaustive]
pub enum TlsError {
    #[error("tls.cert {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("tls.key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("tls: certificate and key do not fit together: {0}")]
    Config(String),
    #[error("tls.client_ca_file {path}: {reason}")]
    ClientCa { path: String, reason: String },
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
    let clients = match &cfg.client_ca_file {
        None => None,
        Some(path) => {
            let err = |reason: String| TlsError::ClientCa {
                path: path.display().to_string(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(path).map_err(|e| err(e.to_string()))? {
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
            Some(roots)
        }
    };
    server_config_with_clients(certs, key, clients)
}

/// When the `[tls]` certificate (the first of its chain) expires; None
/// when it cannot be read or its DER does not parse.
pub fn certificate_expiry(cfg: &TlsConfig) -> Option<std::time::SystemTime> {
    let certs = load_certs(&cfg.cert).ok()?;
    not_after(certs.first()?.as_ref())
}

/// The `notAfter` of an X.509 certificate (RFC 5280 §4.1): the second time
/// of the fifth element of the TBSCertificate, the first being the
/// optional `[0]` version. Read with a few lines of DER walking; nothing
/// else of the certificate is looked at.
pub fn not_after(der: &[u8]) -> Option<std::time::SystemTime> {
    /// One TLV: (tag, contents, what follows).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (_, cert, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(cert)?;
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // the version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = tlv(tbs)?;
    let (_, _, rest) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(rest)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            // UTCTime: YY, 1950..2049 (RFC 5280 §4.1.2.5.1).
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days since 1970-01-01 of a civil date (the proleptic Gregorian
    // calendar), by counting in 400-year eras from March.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
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
    server_config_with_clients(certs, key, None)
}

/// As [`server_config`], also asking for client certificates signed by
/// `client_roots` (for EXTERNAL). A client without one still connects.
pub fn server_config_with_clients(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<rustls::RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"pop3".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts `roots` (see [`client_roots`]),
/// with this build's crypto provider and rustls's safe protocol versions.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Trust anchors for a server this one connects to (the database, a
/// token introspection endpoint): the CA file, or the system's roots.
pub fn client_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Each was parsed as a trust anchor already.
    roots.add_parsable_certificates(client_root_certs(ca_file)?);
    Ok(roots)
}

/// The certificates [`client_roots`] trusts: those of `ca_file` (PEM; an
/// error names the file), else the system's that rustls can use.
pub fn client_root_certs(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    // Whether rustls takes a certificate as a trust anchor.
    let anchor = |c: &CertificateDer| rustls::RootCertStore::empty().add(c.clone());
    let Some(path) = ca_file else {
        return Ok(rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .filter(|c| anchor(c).is_ok())
            .collect());
    };
    let in_file = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let certs = <CertificateDer as rustls_pki_types::pem::PemObject>::pem_file_iter(path)
        .map_err(|e| in_file(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| in_file(&e))?;
    for cert in &certs {
        anchor(cert).map_err(|e| in_file(&e))?;
    }
    if certs.is_empty() {
        return Err(in_file(&"no certificate in it"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::not_after;

    #[test]
    fn not_after_of_generated_certificates() {
        for (year, month, day) in [(2031, 7, 9), (2049, 12, 31), (2051, 1, 1), (2026, 2, 28)] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, month, day);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let at = not_after(cert.der()).expect("parsed");
            let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let expected = std::process::Command::new("date")
                .args([
                    "-u",
                    "-d",
                    &format!("{year}-{month:02}-{day:02} 00:00:00"),
                    "+%s",
                ])
                .output()
                .unwrap();
            let expected: u64 = String::from_utf8_lossy(&expected.stdout)
                .trim()
                .parse()
                .unwrap();
            assert_eq!(secs, expected, "{year}-{month}-{day}");
        }
        assert_eq!(not_after(b"\x30\x03abc"), None);
        assert_eq!(not_after(&[]), None);
    }
}

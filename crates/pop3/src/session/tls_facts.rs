// SPDX-License-Identifier: AGPL-3.0-only
//! What a TLS connection tells SASL: the `tls-exporter` channel binding
//! (RFC 9266) and the user named by a verified client certificate. The
//! certificate was checked against the configured CA by rustls; this only
//! reads the subject's common name or the e-mail subject alternative name
//! out of its DER, with a small reader that refuses anything odd.

use crate::config::ExternalIdentity;
use crate::op::Connection;
use crate::services::Services;

/// Take what the enabled SASL mechanisms need from a finished TLS
/// handshake (nothing, for most configurations).
pub fn learn(conn: &mut Connection, tls: &rustls::ServerConnection, services: &Services) {
    let auth = &services.config.auth;
    if auth
        .mechanisms
        .iter()
        .any(|m| crate::auth::sasl::is_plus(m))
    {
        conn.channel_binding = channel_binding(tls);
    }
    if services.config.mechanism_enabled("EXTERNAL") {
        conn.client_identity = client_identity(tls, auth.external_identity);
    }
}

/// RFC 9266 §2: 32 bytes exported with this label and no context.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The channel binding of a TLS 1.3 connection. TLS 1.2 gets none: there
/// the exporter is only safe with extended master secret, which rustls does
/// not report.
pub fn channel_binding(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; 32], EXPORTER_LABEL, None)
        .ok()
}

/// The user the client's (already verified) certificate maps to.
pub fn client_identity(conn: &rustls::ServerConnection, how: ExternalIdentity) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    identity(cert.as_ref(), how)
}

/// Read the identity out of a DER certificate.
pub fn identity(der: &[u8], how: ExternalIdentity) -> Option<String> {
    let name = match how {
        ExternalIdentity::SubjectCn => subject_cn(der)?,
        ExternalIdentity::SanEmail => san_email(der)?,
        ExternalIdentity::SanEmailLocalPart => {
            let email = san_email(der)?;
            email.split_once('@').map(|(local, _)| local.to_owned())?
        }
    };
    (!name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)).then_some(name)
}

/// One DER element: tag and contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers do not occur in these fields
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value's contents.
fn children(mut contents: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = element(contents)?;
        contents = rest;
        Some((tag, value))
    })
}

const SEQUENCE: u8 = 0x30;
/// 2.5.4.3, id-at-commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, id-ce-subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// The fields of tbsCertificate, in order.
fn tbs_fields(der: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    Some(children(tbs).collect())
}

fn subject_cn(der: &[u8]) -> Option<String> {
    let fields = tbs_fields(der)?;
    // [0] version is optional; the subject is the fifth field after it.
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (tag, subject) = *fields.get(skip + 4)?;
    if tag != SEQUENCE {
        return None;
    }
    children(subject)
        .flat_map(|(_, rdn)| children(rdn))
        .find_map(|(_, attr)| {
            let mut parts = children(attr);
            let (_, oid) = parts.next()?;
            if oid != OID_CN {
                return None;
            }
            let (_, value) = parts.next()?;
            std::str::from_utf8(value).ok().map(str::to_owned)
        })
}

fn san_email(der: &[u8]) -> Option<String> {
    let fields = tbs_fields(der)?;
    let (_, extensions) = fields.iter().find(|(tag, _)| *tag == 0xa3)?;
    let (_, list, _) = element(extensions)?;
    children(list).find_map(|(_, ext)| {
        let parts: Vec<_> = children(ext).collect();
        let (_, oid) = parts.first()?;
        if *oid != OID_SAN {
            return None;
        }
        let (_, octets) = parts.last()?;
        let (_, names, _) = element(octets)?;
        children(names)
            .find(|(tag, _)| *tag == 0x81)
            .and_then(|(_, email)| std::str::from_utf8(email).ok().map(str::to_owned))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, email: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Test");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(e) = email {
            params.subject_alt_names = vec![
                rcgen::SanType::DnsName("x.test".try_into().unwrap()),
                rcgen::SanType::Rfc822Name(e.try_into().unwrap()),
            ];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_cn_and_email() {
        let der = cert("alice", Some("alice.smith@example.com"));
        assert_eq!(
            identity(&der, ExternalIdentity::SubjectCn).as_deref(),
            Some("alice")
        );
        assert_eq!(
            identity(&der, ExternalIdentity::SanEmail).as_deref(),
            Some("alice.smith@example.com")
        );
        assert_eq!(
            identity(&der, ExternalIdentity::SanEmailLocalPart).as_deref(),
            Some("alice.smith")
        );
        let der = cert("bob", None);
        assert_eq!(identity(&der, ExternalIdentity::SanEmail), None);
    }

    #[test]
    fn garbage_is_no_identity() {
        let der = cert("alice", Some("a@b.test"));
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            let _ = identity(&der[..cut], ExternalIdentity::SubjectCn);
            let _ = identity(&der[..cut], ExternalIdentity::SanEmail);
        }
        assert_eq!(
            identity(b"\x30\x84\xff\xff\xff\xff", ExternalIdentity::SubjectCn),
            None
        );
        assert_eq!(identity(&[], ExternalIdentity::SanEmail), None);
    }
}

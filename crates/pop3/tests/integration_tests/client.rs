// SPDX-License-Identifier: AGPL-3.0-only
//! The POP3 client `pop3d import-pop3` uses, against a live server:
//! certificate checks (a pinned self-signed CA certificate, a refused
//! unknown one), STLS, plaintext only where allowed, login, listing and
//! retrieval byte for byte, and nothing deleted.

use pop3::client::{Client, Credentials, Remote};

use crate::common::{Backend, TestServer};

const ALICE: Credentials<'static> = Credentials::User {
    user: "alice",
    password: "secret",
};

/// A self-signed certificate marked as a CA, as old mail servers often
/// have (WebPKI refuses such a certificate as a server's own).
fn ca_marked_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test]
async fn fetches_over_tls_with_a_pinned_certificate_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_marked_cert(dir.path());
    let srv = TestServer::start_on_with(Backend::Maildir, |c| {
        let tls = c.tls.as_mut().unwrap();
        (tls.cert, tls.key) = (cert.clone(), key.clone());
    })
    .await;
    srv.put("alice", b"Subject: one\r\n\r\n.dot\r\n").await;
    srv.put("alice", b"Subject: two\n\nlf only").await;

    let implicit = Remote::parse(&format!("pop3s://127.0.0.1:{}", srv.implicit.port())).unwrap();
    let mut c = Client::connect(&implicit, Some(&cert), false, &ALICE)
        .await
        .unwrap();
    let listed = c.listing().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].size, 25);
    assert_eq!(
        c.retrieve(1, 1 << 20).await.unwrap(),
        b"Subject: one\r\n\r\n.dot\r\n",
        "dot-unstuffed"
    );
    assert_eq!(
        c.retrieve(2, 1 << 20).await.unwrap(),
        b"Subject: two\r\n\r\nlf only\r\n"
    );
    c.quit().await.unwrap();

    // STLS, the same listing; the UIDLs are those the server lists.
    let stls = Remote::parse(&format!("pop3://localhost:{}", srv.starttls.port())).unwrap();
    let mut c = Client::connect(&stls, Some(&cert), false, &ALICE)
        .await
        .unwrap();
    assert_eq!(c.listing().await.unwrap(), listed);
    c.quit().await.unwrap();
    assert_eq!(srv.stored("alice"), 2, "nothing deleted");

    // No CA file: the system's roots do not know this certificate.
    let refused = Client::connect(&implicit, None, false, &ALICE).await;
    let err = refused.err().expect("an unknown certificate is refused");
    assert!(err.to_string().contains("--ca-file"), "{err}");
    // A wrong password is the server's -ERR, without the password.
    let wrong = Credentials::User {
        user: "alice",
        password: "hunter2",
    };
    let err = Client::connect(&implicit, Some(&cert), false, &wrong)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("PASS") && !err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn plaintext_only_when_allowed_and_on_loopback() {
    let srv = TestServer::start_on_with(Backend::Maildir, |c| c.auth.allow_plaintext = true).await;
    let plain = Remote::parse(&format!("pop3://127.0.0.1:{}", srv.plain.port())).unwrap();
    let err = Client::connect(&plain, None, false, &ALICE)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no STLS"), "{err}");
    let c = Client::connect(&plain, None, true, &ALICE).await.unwrap();
    c.quit().await.unwrap();
    assert!(
        !Remote::parse("pop3://mail.example.org")
            .unwrap()
            .is_loopback()
    );
}

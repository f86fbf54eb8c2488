// SPDX-License-Identifier: AGPL-3.0-only
//! STLS (RFC 2595) and implicit TLS (RFC 8314) against a live server.

use crate::common::*;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

#[tokio::test]
async fn stls_upgrades_and_forgets_the_plaintext_state() {
    let srv = TestServer::start().await;
    srv.deliver("alice", 1, b"Subject: s\n\nbody\n");
    let mut c = Client::connect(srv.starttls).await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"STLS".to_string()));
    // USER before TLS is forgotten after it.
    assert_eq!(c.cmd("USER alice").await, "+OK\r\n");
    assert_eq!(c.cmd("STLS").await, "+OK Begin TLS negotiation now\r\n");
    let tcp = c.into_inner();
    let tls = srv.tls_connector().connect(localhost(), tcp).await.unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        None,
        "no ALPN offered, none chosen"
    );
    let mut c = Client::raw(tls);
    assert_eq!(c.cmd("PASS secret").await, "-ERR USER first\r\n");
    let caps = lines(&c.multi("CAPA").await.1);
    assert!(!caps.contains(&"STLS".to_string()), "{caps:?}");
    assert_eq!(c.cmd("STLS").await, "-ERR Already using TLS\r\n");
    c.cmd("USER alice").await;
    assert!(
        c.cmd("PASS secret")
            .await
            .starts_with("+OK alice's maildrop has 1")
    );
    assert_eq!(
        c.multi("RETR 1").await.1,
        b"Subject: s\r\n\r\nbody\r\n.\r\n"
    );
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
}

#[tokio::test]
async fn plaintext_pipelined_after_stls_is_discarded() {
    let srv = TestServer::start().await;
    let mut c = Client::connect(srv.starttls).await;
    // The injection: commands behind STLS in the same segment.
    c.send(b"STLS\r\nCAPA\r\nUSER alice\r\n").await;
    assert_eq!(c.line().await, "+OK Begin TLS negotiation now\r\n");
    let tcp = c.into_inner();
    let tls = srv.tls_connector().connect(localhost(), tcp).await.unwrap();
    let mut c = Client::raw(tls);
    // The first reply inside TLS answers our NOOP-like probe, nothing else.
    assert_eq!(c.cmd("PASS secret").await, "-ERR USER first\r\n");
}

#[tokio::test]
async fn stls_where_not_offered() {
    let srv = TestServer::start().await;
    let mut c = srv.connect().await;
    assert!(!lines(&c.multi("CAPA").await.1).contains(&"STLS".to_string()));
    assert_eq!(
        c.cmd("STLS").await,
        "-ERR STLS is not available on this port\r\n"
    );
    let srv = TestServer::start_with(|c| c.server.enable_stls = false).await;
    let mut c = Client::connect(srv.starttls).await;
    assert!(!lines(&c.multi("CAPA").await.1).contains(&"STLS".to_string()));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
}

#[tokio::test]
async fn implicit_tls_session_with_alpn() {
    let srv = TestServer::start().await;
    srv.deliver("alice", 1, b"Subject: i\n\nimplicit\n");
    let tcp = tokio::net::TcpStream::connect(srv.implicit).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(srv.cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(pop3::server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"pop3".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(localhost(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"pop3"[..]));
    let mut c = Client::over(tls).await;
    assert_eq!(c.greeting, "+OK POP3 server ready\r\n");
    let caps = lines(&c.multi("CAPA").await.1);
    assert!(caps.contains(&"USER".to_string()) && !caps.contains(&"STLS".to_string()));
    assert_eq!(c.cmd("STLS").await, "-ERR Already using TLS\r\n");
    c.cmd("USER alice").await;
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    assert_eq!(
        c.multi("RETR 1").await.1,
        b"Subject: i\r\n\r\nimplicit\r\n.\r\n"
    );
}

#[tokio::test]
async fn tls_1_2_works_and_garbage_handshake_is_closed() {
    let srv = TestServer::start().await;
    let tcp = tokio::net::TcpStream::connect(srv.implicit).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(srv.cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(pop3::server::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(localhost(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let c = Client::over(tls).await;
    assert!(c.greeting.starts_with("+OK"));
    drop(c);

    // A plaintext client on the implicit port gets closed, not served.
    let mut tcp = tokio::net::TcpStream::connect(srv.implicit).await.unwrap();
    tcp.write_all(b"USER alice\r\n").await.unwrap();
    let mut c = Client::raw(tcp);
    let rest = c.until_closed().await;
    assert!(!rest.starts_with(b"+OK"), "{rest:?}");
    wait_until(
        std::time::Duration::from_secs(10),
        "the session slot returned after a TLS failure",
        || srv.manager.limits().active() == 0,
    )
    .await;
}

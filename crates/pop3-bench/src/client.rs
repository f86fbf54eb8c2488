// SPDX-License-Identifier: AGPL-3.0-only
//! A small POP3 client that checks every reply and counts body octets.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Conn {
    io: BufReader<Box<dyn Stream>>,
    line: Vec<u8>,
}

pub type Outcome<T> = Result<T, String>;

impl Conn {
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Outcome<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Stream> = match tls {
            Some(t) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                Box::new(
                    t.connect(name, tcp)
                        .await
                        .map_err(|e| format!("tls: {e}"))?,
                )
            }
            None => Box::new(tcp),
        };
        let mut c = Conn {
            io: BufReader::with_capacity(64 * 1024, io),
            line: Vec::with_capacity(512),
        };
        let greeting = c.read_line().await?;
        if !greeting.starts_with(b"+OK") {
            return Err(format!("greeting: {}", String::from_utf8_lossy(&greeting)));
        }
        Ok(c)
    }

    async fn read_line(&mut self) -> Outcome<Vec<u8>> {
        self.line.clear();
        let n = self
            .io
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(self.line.clone())
    }

    async fn send(&mut self, cmd: &str) -> Outcome<()> {
        let w = self.io.get_mut();
        w.write_all(cmd.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        w.write_all(b"\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        w.flush().await.map_err(|e| format!("write: {e}"))
    }

    pub async fn expect_ok(&mut self, cmd: &str) -> Outcome<()> {
        self.send(cmd).await?;
        let r = self.read_line().await?;
        if r.starts_with(b"+OK") {
            Ok(())
        } else {
            Err(format!("{cmd}: {}", String::from_utf8_lossy(&r).trim_end()))
        }
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Outcome<()> {
        // Pipelined, as PIPELINING allows.
        let w = self.io.get_mut();
        let both = format!("USER {user}\r\nPASS {password}\r\n");
        w.write_all(both.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        w.flush().await.map_err(|e| format!("write: {e}"))?;
        for what in ["USER", "PASS"] {
            let r = self.read_line().await?;
            if !r.starts_with(b"+OK") {
                return Err(format!(
                    "{what} {user}: {}",
                    String::from_utf8_lossy(&r).trim_end()
                ));
            }
        }
        Ok(())
    }

    pub async fn stat(&mut self) -> Outcome<(u32, u64)> {
        self.send("STAT").await?;
        let r = self.read_line().await?;
        let text = String::from_utf8_lossy(&r);
        let mut parts = text.trim_end().split(' ').skip(1);
        match (
            parts.next().and_then(|n| n.parse().ok()),
            parts.next().and_then(|n| n.parse().ok()),
        ) {
            (Some(n), Some(o)) if text.starts_with("+OK") => Ok((n, o)),
            _ => Err(format!("STAT: {}", text.trim_end())),
        }
    }

    /// RETR n; returns the octets of the body as received.
    pub async fn retr(&mut self, n: u32) -> Outcome<u64> {
        self.send(&format!("RETR {n}")).await?;
        let r = self.read_line().await?;
        if !r.starts_with(b"+OK") {
            return Err(format!(
                "RETR {n}: {}",
                String::from_utf8_lossy(&r).trim_end()
            ));
        }
        // Find "\r\n.\r\n" in the buffered bytes without copying lines; the
        // status line's CRLF counts as the first "\r\n".
        let finder = memchr::memmem::Finder::new(b"\r\n.\r\n");
        let mut carry: Vec<u8> = b"\r\n".to_vec();
        let mut total = 0u64;
        loop {
            let buf = self.io.fill_buf().await.map_err(|e| format!("read: {e}"))?;
            if buf.is_empty() {
                return Err("closed inside a body".into());
            }
            let mut joined = carry.clone();
            joined.extend_from_slice(&buf[..buf.len().min(4)]);
            let end = finder
                .find(&joined)
                .map(|p| p + 5 - carry.len())
                .or_else(|| finder.find(buf).map(|p| p + 5));
            if let Some(end) = end {
                total += end as u64;
                self.io.consume(end);
                return Ok(total);
            }
            let len = buf.len();
            carry.extend_from_slice(&buf[len.saturating_sub(4)..]);
            let keep = carry.len().saturating_sub(4);
            carry.drain(..keep);
            total += len as u64;
            self.io.consume(len);
        }
    }
}

/// A TLS client that accepts any certificate: benchmarks run on loopback
/// against test certificates.
pub fn tls_connector() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

// SPDX-License-Identifier: AGPL-3.0-only
//! A POP3 client, for moving mailboxes in from another server (`pop3d
//! import-pop3`): TLS from the start (`pop3s://`) or after STLS
//! (`pop3://`), the certificate always verified; USER/PASS, or SASL PLAIN
//! with an authorization identity for a master user (RFC 4616); UIDL, LIST
//! and RETR. It never sends DELE.
//!
//! The old server is not trusted: a reply line is capped at
//! [`MAX_REPLY_LINE`], a listing at [`MAX_LISTING`] messages, a message at
//! the limit its caller gives (from the size LIST announced), so memory
//! stays bounded whatever it sends; its text is shown with control
//! characters escaped, so it cannot write to the operator's terminal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::tls::{client_root_certs, provider};

/// Longest wait for one reply line.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest status or listing line taken (RFC 2449 §4 allows 512
/// octets; some servers say more in a greeting).
pub const MAX_REPLY_LINE: usize = 8 * 1024;
/// The most messages a listing may name.
pub const MAX_LISTING: usize = 1_000_000;

/// Where the old server is: `pop3s://HOST[:PORT]` (TLS, port 995) or
/// `pop3://HOST[:PORT]` (STLS, port 110).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    pub implicit_tls: bool,
}

impl Remote {
    pub fn parse(url: &str) -> Result<Remote, String> {
        let (implicit_tls, rest) = if let Some(r) = url.strip_prefix("pop3s://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("pop3://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?}: use pop3s://HOST[:PORT] or pop3://HOST[:PORT]"
            ));
        };
        let rest = rest.trim_end_matches('/');
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{url:?}: no closing ]"))?;
                (host, after.strip_prefix(':'))
            }
            None => match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            None if implicit_tls => 995,
            None => 110,
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Remote {
            host: host.to_owned(),
            port,
            implicit_tls,
        })
    }

    /// Whether the host is this machine (plaintext may be allowed there).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    }
}

/// How to log in.
pub enum Credentials<'a> {
    /// USER and PASS.
    User { user: &'a str, password: &'a str },
    /// SASL PLAIN as `master`, acting for `user`.
    Master {
        user: &'a str,
        master: &'a str,
        password: &'a str,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    /// The server said `-ERR` (its text, which never holds a password).
    #[error("the server refused {command}: {reply}")]
    Refused { command: String, reply: String },
    #[error("unexpected reply to {command}: {reply:?}")]
    Protocol { command: String, reply: String },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server sent more than a cap allows.
    #[error("{what} exceeds {limit} (the old server sent more than it may)")]
    TooLong { what: String, limit: String },
}

/// Remote text as it may be shown: control characters (an escape
/// sequence, a bell, a carriage return that overwrites the line) escaped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The usual verification against the CA file (or the system's roots),
/// and one more way through: the server presents exactly a certificate of
/// the CA file. Old mail servers often run on a self-signed certificate
/// marked as a CA, which WebPKI refuses as a server's own
/// (`CaUsedAsEndEntity`); naming that very certificate pins it. The
/// handshake's signatures are checked either way.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl PinnedOrWebPki {
    fn new(ca_file: Option<&Path>) -> Result<PinnedOrWebPki, String> {
        let certs = client_root_certs(ca_file)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(certs.iter().cloned());
        // Only the certificates of a named file are pinned, never the
        // system's roots.
        let pinned = if ca_file.is_some() { certs } else { Vec::new() };
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Ok(PinnedOrWebPki { webpki, pinned })
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn handshake_failed(e: std::io::Error) -> ClientError {
    ClientError::Tls(format!(
        "{e} (give the old server's CA, or its own certificate, with --ca-file)"
    ))
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A logged-in session with the old server.
pub struct Client {
    io: BufReader<Box<dyn Stream>>,
}

/// The old server's listing of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub number: u32,
    pub uidl: String,
    pub size: u64,
}

impl Client {
    /// Connect, make TLS (`ca_file`, else the system's roots, verifies the
    /// server), and log in. `allow_plaintext` permits a `pop3://` server
    /// without STLS on a loopback address only.
    pub async fn connect(
        remote: &Remote,
        ca_file: Option<&Path>,
        allow_plaintext: bool,
        credentials: &Credentials<'_>,
    ) -> Result<Client, ClientError> {
        let tcp = TcpStream::connect((remote.host.as_str(), remote.port)).await?;
        let tls = || -> Result<tokio_rustls::TlsConnector, ClientError> {
            let verifier = PinnedOrWebPki::new(ca_file).map_err(ClientError::Tls)?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        };
        let name = ServerName::try_from(remote.host.clone())
            .map_err(|e| ClientError::Tls(format!("{}: {e}", remote.host)))?;
        let mut client = if remote.implicit_tls {
            let stream = tls()?.connect(name, tcp).await.map_err(handshake_failed)?;
            let mut c = Client::over(Box::new(stream));
            c.expect_ok("the greeting").await?;
            c
        } else {
            let mut c = Client::over(Box::new(tcp));
            c.expect_ok("the greeting").await?;
            let offers_stls = c.capabilities().await?.iter().any(|l| l == "STLS");
            if offers_stls {
                c.command("STLS").await?;
                // Nothing may follow the +OK before the handshake.
                let plain = c.into_plain()?;
                let stream = tls()?
                    .connect(name, plain)
                    .await
                    .map_err(handshake_failed)?;
                Client::over(Box::new(stream))
            } else if allow_plaintext && remote.is_loopback() {
                c
            } else {
                return Err(ClientError::Tls(format!(
                    "{} offers no STLS: use pop3s://, or for a server on this machine --allow-plaintext",
                    remote.host
                )));
            }
        };
        client.login(credentials).await?;
        Ok(client)
    }

    fn over(stream: Box<dyn Stream>) -> Client {
        Client {
            io: BufReader::with_capacity(64 * 1024, stream),
        }
    }

    /// The TCP stream under a session that has not started TLS.
    fn into_plain(self) -> Result<Box<dyn Stream>, ClientError> {
        if !self.io.buffer().is_empty() {
            return Err(ClientError::Protocol {
                command: "STLS".into(),
                reply: "data after +OK before the TLS handshake".into(),
            });
        }
        Ok(self.io.into_inner())
    }

    /// One line of at most `max` octets, appended to `out`; `Ok(false)` at
    /// the end of the stream.
    async fn line_into(&mut self, out: &mut Vec<u8>, max: usize) -> Result<bool, ClientError> {
        let start = out.len();
        loop {
            let buf = tokio::time::timeout(REPLY_TIMEOUT, self.io.fill_buf())
                .await
                .map_err(|_| ClientError::Timeout(REPLY_TIMEOUT))??;
            if buf.is_empty() {
                return Ok(out.len() > start);
            }
            let (take, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if out.len() - start + take > max {
                return Err(ClientError::TooLong {
                    what: "a line".into(),
                    limit: format!("{max} octets"),
                });
            }
            out.extend_from_slice(&buf[..take]);
            self.io.consume(take);
            if done {
                return Ok(true);
            }
        }
    }

    async fn line(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut line = Vec::new();
        if !self.line_into(&mut line, MAX_REPLY_LINE).await? {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(line)
    }

    async fn expect_ok(&mut self, what: &str) -> Result<String, ClientError> {
        let line = self.line().await?;
        let text = printable(String::from_utf8_lossy(&line).trim_end());
        if text.starts_with("+OK") {
            Ok(text)
        } else if text.starts_with("-ERR") {
            Err(ClientError::Refused {
                command: what.to_owned(),
                reply: text,
            })
        } else {
            Err(ClientError::Protocol {
                command: what.to_owned(),
                reply: text,
            })
        }
    }

    /// Send a command (`shown` is how errors name it: never a password).
    async fn send(&mut self, line: &str, shown: &str) -> Result<String, ClientError> {
        let stream = self.io.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        stream.flush().await?;
        self.expect_ok(shown).await
    }

    async fn command(&mut self, line: &str) -> Result<String, ClientError> {
        self.send(line, line).await
    }

    /// The body of a multi-line reply, dot-unstuffed, CRLF kept: at most
    /// `max_octets` of it (`what` names the cap in the error), and lines of
    /// at most `max_line`.
    async fn multi_line(
        &mut self,
        max_octets: usize,
        max_line: usize,
        what: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            let start = body.len();
            let room = (max_octets + 3).saturating_sub(start).min(max_line);
            let got = self.line_into(&mut body, room).await.map_err(|e| match e {
                ClientError::TooLong { .. } => ClientError::TooLong {
                    what: what.to_owned(),
                    limit: format!("{max_octets} octets"),
                },
                e => e,
            })?;
            if !got {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = &body[start..];
            if line == b".\r\n" || line == b".\n" {
                body.truncate(start);
                return Ok(body);
            }
            if line.first() == Some(&b'.') {
                body.remove(start);
            }
            if body.len() > max_octets {
                return Err(ClientError::TooLong {
                    what: what.to_owned(),
                    limit: format!("{max_octets} octets"),
                });
            }
        }
    }

    /// A listing's lines (CAPA, UIDL, LIST): at most [`MAX_LISTING`].
    async fn listing_lines(&mut self, what: &str) -> Result<Vec<u8>, ClientError> {
        // Each line is short: the count bounds the octets.
        self.multi_line(MAX_LISTING * 80, MAX_REPLY_LINE, what)
            .await
    }

    /// CAPA's lines; none when the server has no CAPA (RFC 1939 servers).
    pub async fn capabilities(&mut self) -> Result<Vec<String>, ClientError> {
        match self.command("CAPA").await {
            Ok(_) => Ok(String::from_utf8_lossy(&self.listing_lines("CAPA").await?)
                .lines()
                .map(|l| l.trim().to_ascii_uppercase())
                .collect()),
            Err(ClientError::Refused { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn login(&mut self, credentials: &Credentials<'_>) -> Result<(), ClientError> {
        match credentials {
            Credentials::User { user, password } => {
                self.command(&format!("USER {user}")).await?;
                self.send(&format!("PASS {password}"), "PASS").await?;
            }
            Credentials::Master {
                user,
                master,
                password,
            } => {
                let blob = format!("{user}\0{master}\0{password}");
                let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
                self.send(&format!("AUTH PLAIN {b64}"), "AUTH PLAIN")
                    .await?;
            }
        }
        Ok(())
    }

    /// Every message: number, UIDL and size (UIDL and LIST).
    pub async fn listing(&mut self) -> Result<Vec<Listed>, ClientError> {
        self.command("UIDL").await?;
        let uidls = self.listing_lines("the UIDL listing").await?;
        self.command("LIST").await?;
        let sizes = self.listing_lines("the LIST listing").await?;
        let sizes: std::collections::HashMap<u32, u64> = String::from_utf8_lossy(&sizes)
            .lines()
            .filter_map(|l| {
                let (n, size) = l.trim().split_once(' ')?;
                Some((n.parse().ok()?, size.trim().parse().ok()?))
            })
            .collect();
        let mut listed = Vec::new();
        for line in String::from_utf8_lossy(&uidls).lines() {
            if listed.len() == MAX_LISTING {
                return Err(ClientError::TooLong {
                    what: "the UIDL listing".into(),
                    limit: format!("{MAX_LISTING} messages"),
                });
            }
            let bad = || ClientError::Protocol {
                command: "UIDL".into(),
                reply: line.to_owned(),
            };
            let (n, uidl) = line.trim().split_once(' ').ok_or_else(bad)?;
            let number: u32 = n.parse().map_err(|_| bad())?;
            let uidl = uidl.trim().to_owned();
            if !crate::protocol::valid_uidl(&uidl) {
                return Err(bad());
            }
            let size = sizes.get(&number).copied().unwrap_or(0);
            listed.push(Listed { number, uidl, size });
        }
        Ok(listed)
    }

    /// Message `number` as sent, dot-unstuffed; more than `limit` octets
    /// is an error (the caller sets it from LIST's size).
    pub async fn retrieve(&mut self, number: u32, limit: u64) -> Result<Vec<u8>, ClientError> {
        self.command(&format!("RETR {number}")).await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.multi_line(limit, limit.saturating_add(2), &format!("message {number}"))
            .await
    }

    /// QUIT: the old server removes nothing (no DELE was sent).
    pub async fn quit(mut self) -> Result<(), ClientError> {
        self.command("QUIT").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes() {
        let r = Remote::parse("pop3s://old.example.org").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.implicit_tls),
            ("old.example.org", 995, true)
        );
        let r = Remote::parse("pop3://127.0.0.1:1110/").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.implicit_tls),
            ("127.0.0.1", 1110, false)
        );
        assert!(r.is_loopback());
        let r = Remote::parse("pop3s://[::1]:1995").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 1995));
        assert_eq!(Remote::parse("pop3://[::1]").unwrap().port, 110);
        assert!(r.is_loopback());
        assert!(
            !Remote::parse("pop3s://mail.example.org")
                .unwrap()
                .is_loopback()
        );
        for bad in ["imap://x", "pop3s://", "pop3s://h:x"] {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
    }
}

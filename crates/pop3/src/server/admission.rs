// SPDX-License-Identifier: AGPL-3.0-only
//! A connection from accept to its session: the PROXY header, the checks
//! before the greeting (a blocked address, the connection limits), the
//! implicit-TLS handshake under the login deadline, then the session and
//! its log line.

use super::*;

impl Pop3SessionManager {
    pub(super) fn apop_timestamp(&self, services: &Services, n: u64) -> Option<String> {
        let cfg = &services.config.server;
        if !cfg.enable_apop {
            return None;
        }
        let mut nonce = [0u8; 8];
        // Without randomness there is no APOP on this connection rather
        // than a guessable timestamp.
        if let Err(e) = getrandom::fill(&mut nonce) {
            tracing::error!("no randomness for the APOP timestamp: {e}");
            return None;
        }
        let nonce = crate::hex::encode(&nonce);
        Some(format!(
            "<{}.{n}.{nonce}@{}>",
            std::process::id(),
            cfg.hostname
        ))
    }

    /// Serve one accepted connection until it ends. `mode` is the TLS mode
    /// of the listener it came from.
    pub async fn serve<S>(&self, stream: S, peer: SocketAddr, mode: TlsMode) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.serve_on(stream, peer, mode, "embedded").await
    }

    /// A connection from one of our listeners: the PROXY header first when
    /// the listener wants one, then the session.
    pub(super) async fn accept(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        lc: &ListenerConfig,
        name: &str,
    ) {
        // Once, here: a dual-stack listener reports IPv4 clients as
        // ::ffff:a.b.c.d, which no IPv4 network would match.
        let peer = address::canonical_socket(peer);
        let peer = if lc.proxy_protocol {
            let guard = &self.shared.guard;
            if !lc
                .proxy_trusted_networks
                .iter()
                .any(|n| n.contains(&peer.ip()))
            {
                self.shared.metrics.refused("proxy");
                guard
                    .log()
                    .proxy_rejected(peer.ip(), &proxy::ProxyError::Untrusted.to_string());
                return;
            }
            let timeout = self.services().config.server.unauth_timeout;
            match proxy::read_header(&mut stream, peer, timeout).await {
                Ok(client) => client,
                Err(e) => {
                    self.shared.metrics.refused("proxy");
                    guard.log().proxy_rejected(peer.ip(), &e.to_string());
                    return;
                }
            }
        } else {
            peer
        };
        self.serve_on(stream, peer, lc.tls, name).await;
    }

    pub(super) async fn serve_on<S>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        listener: &str,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        // A PROXY header's source, or an embedding host's peer, may be
        // IPv4-mapped too.
        let peer = address::canonical_socket(peer);
        let services = self.services();
        let metrics = &self.shared.metrics;
        let guard = &self.shared.guard;
        if let Some(left) = guard.blocked(peer.ip()) {
            metrics.refused("blocked");
            guard.log().connection_refused(peer.ip(), "address blocked");
            let text = format!(
                "Too many failures from your address, try again in {} seconds",
                left.as_secs().max(1)
            );
            refuse(&mut stream, mode, &text).await;
            return End::Closed;
        }
        let _slot = match self.limits.admit(guard.key(peer.ip())) {
            Ok(slot) => slot,
            Err(refusal) => {
                let (text, reason) = match refusal {
                    Refusal::TooManySessions => {
                        ("Server busy, try again later", "max_concurrent_sessions")
                    }
                    Refusal::TooManyFromAddress => (
                        "Too many connections from your address",
                        "max_connections_per_ip",
                    ),
                };
                metrics.refused(reason);
                guard.log().connection_refused(peer.ip(), reason);
                refuse(&mut stream, mode, text).await;
                return End::Closed;
            }
        };
        let labels = ListenerLabels {
            listener: listener.to_owned(),
            tls: mode.as_str(),
        };
        metrics.sessions.get_or_create(&labels).inc();
        let _active = ActiveGauge::new(metrics.sessions_active.get_or_create(&labels).clone());
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        let tls_ready = services.tls.is_some();
        // Counted from here, handshake included, and never renewed.
        let login_deadline = tokio::time::Instant::now() + services.config.server.login_timeout;
        let transport = match mode {
            TlsMode::Implicit => {
                let Some(acceptor) = services.tls.clone() else {
                    return End::TlsFailed;
                };
                let handshake = tokio::time::timeout_at(
                    login_deadline
                        .min(tokio::time::Instant::now() + services.config.server.unauth_timeout),
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        guard.log().tls_failed(peer.ip(), &e.to_string());
                        return End::TlsFailed;
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        guard.log().tls_failed(peer.ip(), "handshake timed out");
                        return End::TlsFailed;
                    }
                }
            }
            TlsMode::None | TlsMode::Starttls => Transport::Plain(stream),
        };
        let mut conn = Connection {
            peer,
            secure: transport.is_tls(),
            stls_available: mode == TlsMode::Starttls
                && services.config.server.enable_stls
                && tls_ready,
            apop_timestamp: self.apop_timestamp(&services, n),
            channel_binding: None,
            client_identity: None,
            utf8: false,
        };
        if let Transport::Tls(tls) = &transport {
            session::tls_facts::learn(&mut conn, tls.get_ref().1, &services);
        }
        let started = std::time::Instant::now();
        // The generation this session ran with names its node.
        let config = services.config.clone();
        let summary = Session::new(transport, conn, services)
            .login_by(login_deadline)
            .run()
            .await;
        tracing::info!(
            target: "pop3::session",
            node = config.server.node(),
            peer = %peer,
            listener,
            tls = mode.as_str(),
            user = summary.stats.user.as_deref().unwrap_or("-"),
            retrieved = summary.stats.retrieved,
            deleted = summary.stats.deleted,
            bytes = summary.stats.bytes_sent,
            duration_ms = started.elapsed().as_millis() as u64,
            end = ?summary.end,
            "session end"
        );
        summary.end
    }
}

/// Answer `-ERR [SYS/TEMP] text` before the greeting and close. On an
/// implicit-TLS listener the client expects a TLS handshake, and plaintext
/// would read as garbage ("wrong version number"): it is closed without a
/// word, which TLS clients report as a dropped connection.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, mode: TlsMode, text: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if mode != TlsMode::Implicit {
            stream.write_all(&session::refusal(text)).await?;
        }
        stream.shutdown().await
    })
    .await;
}

/// Decrements the active-sessions gauge however the session ends.
struct ActiveGauge(prometheus_client::metrics::gauge::Gauge);

impl ActiveGauge {
    fn new(g: prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        ActiveGauge(g)
    }
}

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

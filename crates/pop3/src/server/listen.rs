// SPDX-License-Identifier: AGPL-3.0-only
//! Binding the POP3, LMTP and metrics listeners, accepting on them until
//! shutdown, and the periodic sweeps a running server does.

use super::*;

/// Bound listeners, ready to accept.
pub struct Server {
    manager: Arc<Pop3SessionManager>,
    listeners: Vec<(TcpListener, ListenerConfig)>,
    lmtp: Vec<(LmtpListener, LmtpConfig)>,
    http: Option<TcpListener>,
}

/// Where an LMTP listener takes connections.
enum LmtpListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

impl LmtpListener {
    async fn bind(config: &LmtpConfig) -> Result<LmtpListener, ServerError> {
        let fail = |source: std::io::Error| ServerError::LmtpBind {
            at: config.name(),
            source,
        };
        match (&config.bind, &config.path) {
            (Some(addr), _) => TcpListener::bind(addr)
                .await
                .map(LmtpListener::Tcp)
                .map_err(fail),
            (None, Some(path)) => {
                // A socket left by an earlier run is replaced; anything
                // else at that path is not touched.
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(path).map_err(fail)?;
                }
                tokio::net::UnixListener::bind(path)
                    .map(LmtpListener::Unix)
                    .map_err(fail)
            }
            (None, None) => Err(fail(std::io::Error::other("no bind or path"))),
        }
    }
}

impl Server {
    /// Bind every `[[listener]]` of the manager's configuration, and the
    /// `[metrics]` listener when configured.
    pub async fn bind(manager: Arc<Pop3SessionManager>) -> Result<Server, ServerError> {
        let services = manager.services();
        let mut listeners = Vec::new();
        for l in &services.config.listeners {
            if l.tls != TlsMode::None && services.tls.is_none() {
                return Err(ServerError::NoTls(l.tls.as_str()));
            }
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: l.bind,
                    source,
                })?;
            if let Ok(addr) = listener.local_addr() {
                manager
                    .metrics()
                    .listener(&addr.to_string(), l.tls.as_str());
            }
            listeners.push((listener, l.clone()));
        }
        let http = match &services.config.metrics {
            Some(m) => {
                Some(
                    TcpListener::bind(m.bind)
                        .await
                        .map_err(|source| ServerError::Bind {
                            addr: m.bind,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let mut lmtp = Vec::new();
        for l in &services.config.lmtp {
            lmtp.push((LmtpListener::bind(l).await?, l.clone()));
        }
        manager.listeners_bound.store(true, Ordering::Release);
        Ok(Server {
            manager,
            listeners,
            lmtp,
            http,
        })
    }

    /// The bound addresses (port 0 resolved) with their TLS modes.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, TlsMode)> {
        self.listeners
            .iter()
            .filter_map(|(l, c)| l.local_addr().ok().map(|a| (a, c.tls)))
            .collect()
    }

    /// The bound addresses of the TCP LMTP listeners.
    pub fn lmtp_addrs(&self) -> Vec<SocketAddr> {
        self.lmtp
            .iter()
            .filter_map(|(l, _)| match l {
                LmtpListener::Tcp(t) => t.local_addr().ok(),
                LmtpListener::Unix(_) => None,
            })
            .collect()
    }

    /// The bound address of the metrics listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accept until the manager shuts down, then give sessions up to
    /// `server.shutdown_timeout` to finish.
    pub async fn run(self) {
        let shutdown = self.manager.shutdown_token();
        let tracker = TaskTracker::new();
        if let Some(http) = self.http {
            if let Ok(addr) = http.local_addr() {
                tracing::info!(%addr, "metrics and health listening");
            }
            tokio::spawn(crate::telemetry::http::serve(
                http,
                self.manager.clone(),
                shutdown.clone(),
            ));
        }
        for (listener, lc) in self.listeners {
            let Ok(addr) = listener.local_addr() else {
                continue;
            };
            let mode = lc.tls;
            tracing::info!(%addr, tls = mode.as_str(), proxy_protocol = lc.proxy_protocol, "listening");
            let name = addr.to_string();
            let manager = self.manager.clone();
            let shutdown = shutdown.clone();
            let sessions = tracker.clone();
            let lc = Arc::new(lc);
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let manager = manager.clone();
                            let name = name.clone();
                            let lc = lc.clone();
                            sessions.spawn(async move {
                                manager.accept(stream, peer, &lc, &name).await;
                            });
                        }
                        Err(e) => {
                            // Out of descriptors and the like: back off
                            // rather than spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        for (listener, lc) in self.lmtp {
            tracing::info!(at = %lc.name(), "LMTP listening");
            tracker.spawn(accept_lmtp(
                listener,
                Arc::new(Semaphore::new(lc.max_connections)),
                self.manager.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        if let Some(limits) = self.manager.guard().shared().cloned() {
            tokio::spawn(limits.follow(self.manager.guard().clone(), shutdown.clone()));
        }
        // Blocks end on time and say so in the log even if the address
        // never comes back.
        let guard = self.manager.guard().clone();
        let sweeping = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = sweeping.cancelled() => break,
                    _ = tick.tick() => { guard.sweep(); }
                }
            }
        });
        tokio::spawn(sweep_trash(self.manager.clone(), shutdown.clone()));
        shutdown.cancelled().await;
        tracker.close();
        let deadline = self.manager.services().config.server.shutdown_timeout;
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown deadline reached; remaining sessions are dropped, nothing deleted"
            );
        }
    }
}

/// How often trashed messages past `trash_retention` are purged.
const TRASH_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Purge the trash of `delete = "trash"` (and of a configuration that
/// used it before) once an hour, from the services in force at the time.
async fn sweep_trash(manager: Arc<Pop3SessionManager>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRASH_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let services = manager.services();
        let users = services.users.all().await;
        match services.store.purge_trash(&users).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "trashed messages past their retention purged"),
            Err(e) => tracing::warn!("trash sweep failed (tried again in an hour): {e}"),
        }
    }
}

/// Accept LMTP connections until shutdown; past `max_connections` a
/// connection hears `421` and is closed.
async fn accept_lmtp(
    listener: LmtpListener,
    slots: Arc<Semaphore>,
    manager: Arc<Pop3SessionManager>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = async {
                match &listener {
                    LmtpListener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                        let _ = s.set_nodelay(true);
                        (LmtpStream::Tcp(s), Some(peer.ip()))
                    }),
                    LmtpListener::Unix(l) => l.accept().await.map(|(s, _)| (LmtpStream::Unix(s), None)),
                }
            } => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("LMTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let services = manager.services();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                sessions.spawn(async move {
                    match stream {
                        LmtpStream::Tcp(s) => crate::lmtp::serve(s, peer, services).await,
                        LmtpStream::Unix(s) => crate::lmtp::serve(s, None, services).await,
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                sessions.spawn(async move {
                    let busy = format!(
                        "421 4.3.2 {} too many LMTP connections, try again later\r\n",
                        services.config.server.hostname
                    );
                    let _ = match stream {
                        LmtpStream::Tcp(mut s) => s.write_all(busy.as_bytes()).await,
                        LmtpStream::Unix(mut s) => s.write_all(busy.as_bytes()).await,
                    };
                });
            }
        }
    }
}

enum LmtpStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The operator's HTTP listener: `/metrics` (Prometheus text), `/healthz`
//! (the process answers) and `/readyz` (listeners bound, user database
//! loaded, stores reachable; failures say why). It knows nothing of the
//! server: what it reports comes through [`Status`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// What the listener reports: implemented by the server.
#[async_trait::async_trait]
pub trait Status: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// What `/metrics` serves: the server's metrics and any its parts add.
    fn metrics_text(&self) -> String {
        self.metrics().encode()
    }
    /// `Err` lists why the server is not ready.
    async fn readiness(&self) -> Result<(), Vec<String>>;
    /// What is ready but not as configured (listed by `/readyz`, which
    /// still answers 200).
    fn degraded(&self) -> Vec<String> {
        Vec::new()
    }
    /// What an operator should know that is not wrong (listed by
    /// `/readyz` as `note:` lines).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Scrapers and probes are few: more connections than this wait in the
/// accept queue rather than cost memory.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this, or be dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No scrape takes longer; a connection kept open past it is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve HTTP on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, status: Arc<dyn Status>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let status = status.clone();
                async move { Ok::<_, Infallible>(respond(&*status, &req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

async fn respond<B>(status: &dyn Status, req: &Request<B>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            status.metrics_text(),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match status.readiness().await {
            Ok(()) => text(
                StatusCode::OK,
                PLAIN,
                std::iter::once("ready".to_owned())
                    .chain(
                        status
                            .degraded()
                            .into_iter()
                            .map(|d| format!("degraded: {d}")),
                    )
                    .chain(status.notes().into_iter().map(|n| format!("note: {n}")))
                    .map(|l| l + "\n")
                    .collect(),
            ),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                reasons
                    .iter()
                    .map(|r| format!("not ready: {r}\n"))
                    .collect(),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! RFC 7662 token introspection: tokens that are not JWTs (or when no key
//! is configured) are posted to the provider's endpoint, over TLS with the
//! configured roots, as this server's client credentials; the answer must
//! say the token is active, unexpired, for this issuer and audience.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{read, unverified_email};
use crate::auth::SetupError;
use crate::auth::sasl::TokenError;
use crate::config::OAuthConfig;

/// How long an introspection request may take.
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Introspection {
    url: hyper::Uri,
    /// `Basic` credentials of this server as the endpoint's client.
    authorization: Option<String>,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl Introspection {
    pub(super) fn from_config(cfg: &OAuthConfig, url: &str) -> Result<Introspection, SetupError> {
        let bad = |reason: String| SetupError::new("auth.oauth.introspection_url", reason);
        let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_owned();
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => {
                let roots = crate::tls::client_roots(cfg.introspection_ca_file.as_deref())
                    .map_err(|e| SetupError::new("auth.oauth.introspection_ca_file", e))?;
                let config = crate::tls::client_config(roots).map_err(bad)?;
                let name =
                    rustls_pki_types::ServerName::try_from(host).map_err(|e| bad(e.to_string()))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => return Err(bad("must be an http:// or https:// URL".into())),
        };
        let authorization = match (
            &cfg.introspection_client_id,
            &cfg.introspection_client_secret_file,
        ) {
            (Some(id), Some(path)) => {
                use base64::Engine;
                let secret = read(path, "auth.oauth.introspection_client_secret_file")?;
                let secret = String::from_utf8_lossy(secret.trim_ascii()).into_owned();
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{secret}", form_encode(id)))
                ))
            }
            (None, None) => None,
            _ => {
                return Err(SetupError::new(
                    "auth.oauth.introspection_client_id",
                    "set both introspection_client_id and introspection_client_secret_file",
                ));
            }
        };
        Ok(Introspection {
            url: uri,
            authorization,
            tls,
        })
    }

    pub(super) async fn introspect(
        &self,
        token: &str,
        cfg: &OAuthConfig,
    ) -> Result<String, TokenError> {
        let unavailable = |e: String| TokenError::Unavailable(e);
        let answer = tokio::time::timeout(INTROSPECTION_TIMEOUT, self.post(token))
            .await
            .map_err(|_| unavailable("introspection timed out".into()))?
            .map_err(unavailable)?;
        let claims: Map<String, Value> = serde_json::from_slice(&answer)
            .map_err(|e| unavailable(format!("introspection answer: {e}")))?;
        let invalid = |s: &str| TokenError::Invalid(s.to_owned());
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(invalid("token is not active"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims
            .get("exp")
            .and_then(Value::as_u64)
            .is_some_and(|exp| exp + cfg.leeway.as_secs() < now)
        {
            return Err(invalid("token expired"));
        }
        if let (Some(want), Some(iss)) = (&cfg.issuer, claims.get("iss").and_then(Value::as_str))
            && want != iss
        {
            return Err(invalid("wrong issuer"));
        }
        if let Some(want) = &cfg.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == want,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
                // The audience is required: an answer without one may be
                // about a token for another application.
                _ => false,
            };
            if !ok {
                return Err(invalid("wrong or missing audience"));
            }
        }
        unverified_email(cfg, &claims)?;
        let user = claims
            .get(&cfg.user_claim)
            .or_else(|| claims.get("username"))
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty() && u.len() <= 255);
        user.map(str::to_owned)
            .ok_or_else(|| invalid("no user claim in the introspection answer"))
    }

    async fn post(&self, token: &str) -> Result<Vec<u8>, String> {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        let host = self.url.host().unwrap_or_default();
        let port = self
            .url
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("introspection endpoint: {e}"))?;
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let mut request =
            hyper::Request::post(self.url.path_and_query().map_or("/", |p| p.as_str()))
                .header(hyper::header::HOST, host)
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(hyper::header::ACCEPT, "application/json");
        if let Some(a) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, a);
        }
        let request = request
            .body(Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("introspection TLS: {e}"))?;
                send(TokioIo::new(tls), request).await?
            }
            None => send(TokioIo::new(tcp), request).await?,
        };
        if !response.status().is_success() {
            return Err(format!(
                "introspection endpoint answered {}",
                response.status()
            ));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes().to_vec())
    }
}

async fn send<T>(
    io: T,
    request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

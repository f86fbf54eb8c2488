// SPDX-License-Identifier: AGPL-3.0-only
//! Which SASL mechanisms a connection is offered (CAPA's SASL line, bare
//! AUTH), and AUTH itself starting an exchange (RFC 5034 §4).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::authenticate::PLAINTEXT_REFUSED;
use super::{Connection, Outcome};
use crate::auth::sasl;
use crate::protocol::{Reply, RespCode};
use crate::services::Services;

/// The mechanisms AUTH accepts on this connection: enabled, and able to
/// succeed here (TLS where needed, a channel binding for -PLUS, a client
/// certificate for EXTERNAL, secrets of a usable kind in the user database).
pub fn offered_mechanisms(conn: &Connection, services: &Services) -> Vec<&'static str> {
    let schemes = services.users.schemes();
    // Can the stored secrets serve this mechanism? (Unknown: assume so.)
    let servable = |m: &str| match (sasl::secret_schemes(m), &schemes) {
        (Some(wanted), Some(have)) => wanted.iter().any(|w| have.contains(w)),
        _ => true,
    };
    sasl::ALL
        .iter()
        .copied()
        .filter(|m| services.config.mechanism_enabled(m))
        .filter(|m| !sasl::is_plaintext(m) || conn.plaintext_allowed(services))
        .filter(|m| !sasl::is_plus(m) || conn.channel_binding.is_some())
        .filter(|m| servable(m))
        .filter(|m| match *m {
            "EXTERNAL" => conn.client_identity.is_some(),
            "OAUTHBEARER" | "XOAUTH2" => services.sasl.bearer.is_some(),
            "ANONYMOUS" => services.config.auth.anonymous_user.is_some(),
            #[cfg(feature = "gssapi")]
            "GSSAPI" => services.sasl.gssapi.is_some(),
            _ => true,
        })
        .collect()
}

/// AUTH: list mechanisms (bare AUTH, Outlook's habit) or start an exchange.
pub fn auth(
    conn: &Connection,
    services: &Services,
    mechanism: Option<String>,
    initial_response: Option<String>,
) -> Outcome {
    let offered = offered_mechanisms(conn, services);
    let Some(mechanism) = mechanism else {
        return Reply::multi("", offered.iter().map(|m| m.to_string()).collect()).into();
    };
    let known = offered.iter().any(|m| m.eq_ignore_ascii_case(&mechanism));
    if !known {
        if sasl::is_plaintext(&mechanism) && services.config.mechanism_enabled(&mechanism) {
            return Reply::err_code(RespCode::Auth, PLAINTEXT_REFUSED).into();
        }
        return Reply::err("Unsupported authentication mechanism").into();
    }
    let Some(mech) = sasl::new_mechanism(&mechanism, &mechanism_context(conn, services, &offered))
    else {
        return Reply::err("Unsupported authentication mechanism").into();
    };
    let initial_response = match initial_response.as_deref() {
        None => None,
        Some("=") => Some(Vec::new()),
        Some(b64) => match B64.decode(b64) {
            Ok(v) => Some(v),
            Err(_) => return Reply::err("Invalid base64 in initial response").into(),
        },
    };
    Outcome::Sasl {
        mechanism: mech,
        initial_response,
    }
}

/// What mechanisms know of this server and this connection.
fn mechanism_context(conn: &Connection, services: &Services, offered: &[&str]) -> sasl::Context {
    let auth = &services.config.auth;
    let hostname = &services.config.server.hostname;
    sasl::Context {
        hostname: hostname.clone(),
        realm: auth.realm.clone().unwrap_or_else(|| hostname.clone()),
        ntlm_domain: auth.ntlm_domain.clone(),
        channel_binding: conn.channel_binding.clone(),
        plus_offered: offered.iter().any(|m| sasl::is_plus(m)),
        external_identity: conn.client_identity.clone(),
        salt_key: services.sasl.salt_key.clone(),
        #[cfg(feature = "gssapi")]
        gssapi: services.sasl.gssapi.clone(),
    }
}

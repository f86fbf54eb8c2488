// SPDX-License-Identifier: AGPL-3.0-only
//! CAPA (RFC 2449 §5), STLS (RFC 2595 §4) and UTF8 (RFC 6856 §2): what the
//! server offers on this connection, in this state, with this config.

use super::mechanisms::offered_mechanisms;
use super::{Connection, Outcome, State};
use crate::protocol::Reply;
use crate::services::Services;

/// The capability lines, without the `+OK` and the terminator.
pub fn capabilities(state: &State, conn: &Connection, services: &Services) -> Vec<String> {
    let cfg = &services.config;
    let before_login = matches!(state, State::Authorization { .. });
    let mut caps = Vec::new();
    if cfg.protocol.enable_top {
        caps.push("TOP".to_owned());
    }
    if before_login && conn.plaintext_allowed(services) {
        caps.push("USER".to_owned());
    }
    if before_login {
        let mechs = offered_mechanisms(conn, services);
        if !mechs.is_empty() {
            caps.push(format!("SASL {}", mechs.join(" ")));
        }
    }
    caps.push("RESP-CODES".to_owned());
    caps.push("AUTH-RESP-CODE".to_owned());
    if cfg.protocol.enable_pipelining {
        caps.push("PIPELINING".to_owned());
    }
    if cfg.protocol.enable_uidl {
        caps.push("UIDL".to_owned());
    }
    // RFC 2449 §6.7, §6.8: before login, the server's values with USER
    // (the user database may set others per user); after it, the user's.
    let (expire, delay, suffix) = match state {
        State::Transaction(t) => {
            let own = t.user.settings.effective(&cfg.server);
            (own.expire, own.login_delay, "")
        }
        _ => (cfg.server.expire, cfg.server.login_delay, " USER"),
    };
    caps.push(format!("EXPIRE {}{suffix}", expire.capa()));
    if delay.as_secs() > 0 {
        caps.push(format!("LOGIN-DELAY {}{suffix}", delay.as_secs()));
    }
    if before_login && conn.stls_available && !conn.secure {
        caps.push("STLS".to_owned());
    }
    if cfg.server.enable_utf8 {
        caps.push("UTF8 USER".to_owned());
    }
    caps.push(format!(
        "IMPLEMENTATION pop3d-{}",
        env!("CARGO_PKG_VERSION")
    ));
    caps
}

pub fn capa(state: &State, conn: &Connection, services: &Services) -> Reply {
    Reply::multi(
        "Capability list follows",
        capabilities(state, conn, services),
    )
}

/// STLS: only before login, only once, only where TLS is configured.
pub fn stls(conn: &Connection, _services: &Services) -> Outcome {
    if conn.secure {
        return Reply::err("Already using TLS").into();
    }
    if !conn.stls_available {
        return Reply::err("STLS is not available on this port").into();
    }
    Outcome::StartTls(Reply::ok("Begin TLS negotiation now"))
}

/// UTF8 (RFC 6856 §2.1): UTF-8 mode for the rest of the session.
/// Accepted after login too, as Outlook sends it then.
pub fn utf8(conn: &mut Connection, services: &Services) -> Reply {
    if services.config.server.enable_utf8 {
        conn.utf8 = true;
        Reply::ok("UTF8 enabled")
    } else {
        Reply::err("UTF8 is not enabled")
    }
}

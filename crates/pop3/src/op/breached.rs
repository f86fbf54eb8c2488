// SPDX-License-Identifier: AGPL-3.0-only
//! A good password that is on `auth.breached_passwords_file`: warned
//! about, or refused, as `auth.breached_passwords_policy` says.

use super::authenticate::failed;
use super::{Connection, Outcome, State};
use crate::config::BreachedPolicy;
use crate::protocol::{Reply, RespCode};
use crate::services::Services;
use crate::telemetry::metrics::ResultLabels;

const REFUSED: &str =
    "Your password is on a list of breached passwords; change it before logging in again";

/// None: go on with the login. Some: the refusal.
pub(super) async fn check(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    mechanism: &'static str,
    user: &str,
    password: &[u8],
) -> Option<Outcome> {
    let list = services.breached.clone()?;
    let password = zeroize::Zeroizing::new(password.to_vec());
    let path = list.path().display().to_string();
    let listed = tokio::task::spawn_blocking(move || list.contains(&password)).await;
    match listed {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return None,
        // The list is a second line of defence: a broken file is loud in
        // the log, and nobody's login depends on it.
        Ok(Err(e)) => {
            tracing::error!("auth.breached_passwords_file {path}: {e}");
            return None;
        }
        Err(e) => {
            tracing::error!("auth.breached_passwords_file {path}: {e}");
            return None;
        }
    }
    let refuse = services.config.auth.breached_passwords_policy == BreachedPolicy::Refuse;
    let action = if refuse { "refused" } else { "warned" };
    services
        .metrics
        .breached_password_logins
        .get_or_create(&ResultLabels { result: action })
        .inc();
    services
        .guard
        .log()
        .breached_password(conn.peer.ip(), user, mechanism, action);
    if !refuse {
        tracing::warn!(
            user,
            mechanism,
            "logged in with a password on the breached list"
        );
        return None;
    }
    let reply = Reply::err_code(RespCode::Auth, REFUSED);
    let reason = "password on the breached list";
    Some(failed(state, conn, services, Some(user), mechanism, reason, reply).await)
}

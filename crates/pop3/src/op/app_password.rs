// SPDX-License-Identifier: AGPL-3.0-only
//! A password given with USER/PASS, PLAIN or LOGIN that is one of the
//! user's app passwords (`auth.app_passwords_file`), and the account
//! password refused where app passwords are required.

use std::sync::Arc;

use super::authenticate::{denied, login_as};
use super::{Connection, Outcome, SessionStats, State};
use crate::auth::UserRecord;
use crate::auth::app_passwords::Verdict;
use crate::services::Services;

/// Whether only app passwords open `user`'s mailbox.
pub(super) fn required(services: &Services, user: &UserRecord) -> bool {
    user.settings
        .require_app_passwords
        .unwrap_or(services.config.auth.require_app_passwords)
}

/// `password`, which is not the account password (or was not checked,
/// `required`), as one of the user's app passwords. None: not one, and
/// not required: the caller refuses it as a wrong password. Some: the
/// login, or its refusal with the reason logged.
#[allow(clippy::too_many_arguments)]
pub(super) async fn check(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    mechanism: &'static str,
    user: &Arc<UserRecord>,
    password: &[u8],
    acting_as: Option<&str>,
    required: bool,
) -> Option<Outcome> {
    let verdict = match &services.app_passwords {
        Some(app) => match app.check(&user.name, password, conn.peer.ip()).await {
            Ok(v) => v,
            Err(e) => return Some(super::authenticate::userdb_unavailable(services, e).into()),
        },
        None => Verdict::NoMatch,
    };
    let reason = match verdict {
        Verdict::Valid(id) => {
            tracing::info!(user = %user.name, app_password = %id, "app password used");
            let acting_as = acting_as.map(str::to_owned);
            return Some(
                login_as(
                    state,
                    conn,
                    services,
                    stats,
                    mechanism,
                    user.clone(),
                    acting_as,
                )
                .await,
            );
        }
        Verdict::Refused(why) => why,
        Verdict::NoMatch if required => "account password refused: app passwords required",
        Verdict::NoMatch => return None,
    };
    Some(denied(state, conn, services, Some(&user.name), mechanism, reason).await)
}

// SPDX-License-Identifier: AGPL-3.0-only
//! QUIT and the UPDATE state (RFC 1939 §6): the only place where messages
//! are removed.

use super::{Outcome, SessionStats, State, store_error_reply};
use crate::config::Expire;
use crate::protocol::{Reply, RespCode};
use crate::services::Services;
use crate::store::Changes;

pub async fn quit(state: &mut State, services: &Services, stats: &mut SessionStats) -> Outcome {
    let hostname = &services.config.server.hostname;
    let State::Transaction(t) = std::mem::take(state) else {
        return Outcome::Close(Reply::ok(format!("{hostname} POP3 server signing off")));
    };
    let t = *t;
    // EXPIRE 0 (RFC 2449 §6.7): a message retrieved is removed at this
    // QUIT, marked or not (a read-only session removes nothing).
    let expire_now = !t.read_only
        && t.user.settings.effective(&services.config.server).expire == Expire::Days(0);
    let marked: Vec<usize> = (0..t.deleted.len())
        .filter(|&i| t.deleted[i] || (expire_now && t.retrieved[i]))
        .collect();
    // A read-only (anonymous) session changes nothing, flags included.
    let seen: Vec<usize> = if t.read_only {
        Vec::new()
    } else {
        (0..t.deleted.len())
            .filter(|&i| t.retrieved[i] && !t.deleted[i] && !expire_now)
            .collect()
    };
    let wanted = marked.len();
    let left = t.deleted.len() - wanted;
    let user = t.user.name.clone();
    let changes = Changes {
        deleted: marked,
        seen,
    };
    let committed = t.maildrop.commit(changes).await;
    crate::crash_point!("pop3-quit-before-reply");
    match committed {
        Ok(report) if report.failed == 0 => {
            stats.deleted = report.removed;
            let text = match left {
                0 => format!("{hostname} POP3 server signing off (maildrop empty)"),
                n => format!("{hostname} POP3 server signing off ({n} messages left)"),
            };
            Outcome::Close(Reply::ok(text))
        }
        Ok(report) => {
            stats.deleted = report.removed;
            tracing::warn!(user = %user, wanted, failed = report.failed, "some messages not deleted");
            Outcome::Close(Reply::err_code(
                RespCode::SysTemp,
                format!(
                    "{} of {wanted} messages could not be deleted",
                    report.failed
                ),
            ))
        }
        Err(e) => {
            tracing::error!(user = %user, "update failed: {e}");
            Outcome::Close(store_error_reply(&e))
        }
    }
}

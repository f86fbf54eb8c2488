// SPDX-License-Identifier: AGPL-3.0-only
//! QUIT and the UPDATE state (RFC 1939 §6): the only place where messages
//! are removed.

use super::{Outcome, SessionStats, State, store_error_reply};
use crate::protocol::{Reply, RespCode};
use crate::store::Changes;

pub async fn quit(state: &mut State, hostname: &str, stats: &mut SessionStats) -> Outcome {
    let State::Transaction(t) = std::mem::take(state) else {
        return Outcome::Close(Reply::ok(format!("{hostname} POP3 server signing off")));
    };
    let t = *t;
    let marked: Vec<usize> = t
        .deleted
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.then_some(i))
        .collect();
    // A read-only (anonymous) session changes nothing, flags included.
    let seen: Vec<usize> = if t.read_only {
        Vec::new()
    } else {
        (0..t.deleted.len())
            .filter(|&i| t.retrieved[i] && !t.deleted[i])
            .collect()
    };
    let wanted = marked.len();
    let user = t.user.name.clone();
    let changes = Changes {
        deleted: marked,
        seen,
    };
    match t.maildrop.commit(changes).await {
        Ok(report) if report.failed == 0 => {
            stats.deleted = report.removed;
            let left = t.deleted.len() - wanted;
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

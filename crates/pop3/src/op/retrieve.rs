// SPDX-License-Identifier: AGPL-3.0-only
//! RETR and TOP (RFC 1939 §7): check the number, then hand the session a
//! streaming [`BodyEncoder`].

use super::{Outcome, Transaction};
use crate::config::Workaround;
use crate::protocol::body::Fixes;
use crate::protocol::{BodyEncoder, Reply, RespCode};
use crate::services::Services;

/// The byte changes `[protocol] client_workarounds` asks for.
fn fixes(services: &Services) -> Fixes {
    let on = |w| services.config.protocol.client_workarounds.contains(&w);
    Fixes {
        strip_nuls: on(Workaround::OutlookNoNuls),
        end_of_header: on(Workaround::OeNsEoh),
    }
}

fn check(t: &Transaction, services: &Services, n: u32) -> Result<usize, Reply> {
    let i = t.live_index(n)?;
    let limit = services.config.server.max_message_size;
    if limit > 0 && t.maildrop.messages()[i].size > limit {
        return Err(Reply::err_code(
            RespCode::SysPerm,
            "Message exceeds the size limit of this server",
        ));
    }
    Ok(i)
}

pub fn retr(t: &mut Transaction, services: &Services, n: u32) -> Outcome {
    match check(t, services, n) {
        Ok(index) => {
            t.retrieved[index] = true;
            Outcome::Body {
                status: Reply::ok(format!("{} octets", t.maildrop.messages()[index].size)),
                index,
                encoder: BodyEncoder::retr().with_fixes(fixes(services)),
            }
        }
        Err(r) => r.into(),
    }
}

pub fn top(t: &mut Transaction, services: &Services, n: u32, lines: u32) -> Outcome {
    match check(t, services, n) {
        Ok(index) => Outcome::Body {
            status: Reply::ok(""),
            index,
            encoder: BodyEncoder::top(lines.min(services.config.protocol.max_top_lines))
                .with_fixes(fixes(services)),
        },
        Err(r) => r.into(),
    }
}

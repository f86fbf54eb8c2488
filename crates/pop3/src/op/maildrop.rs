// SPDX-License-Identifier: AGPL-3.0-only
//! STAT, LIST, UIDL, DELE, RSET (RFC 1939 §5, §7) over the session's
//! snapshot. Deletions are marks; nothing is removed before UPDATE.

use super::Transaction;
use crate::protocol::Reply;

fn live(t: &Transaction) -> impl Iterator<Item = (usize, &crate::store::MessageInfo)> {
    t.maildrop
        .messages()
        .iter()
        .enumerate()
        .filter(|(i, _)| !t.deleted[*i])
}

pub fn stat(t: &Transaction) -> Reply {
    let (count, octets) = live(t).fold((0u64, 0u64), |(c, o), (_, m)| (c + 1, o + m.size));
    Reply::ok(format!("{count} {octets}"))
}

pub fn list(t: &Transaction, n: Option<u32>) -> Reply {
    match n {
        Some(n) => match t.live_index(n) {
            Ok(i) => Reply::ok(format!("{n} {}", t.maildrop.messages()[i].size)),
            Err(r) => r,
        },
        None => {
            let (count, octets) = live(t).fold((0u64, 0u64), |(c, o), (_, m)| (c + 1, o + m.size));
            Reply::multi(
                format!("{count} messages ({octets} octets)"),
                live(t)
                    .map(|(i, m)| format!("{} {}", i + 1, m.size))
                    .collect(),
            )
        }
    }
}

pub fn uidl(t: &Transaction, n: Option<u32>) -> Reply {
    match n {
        Some(n) => match t.live_index(n) {
            Ok(i) => Reply::ok(format!("{n} {}", t.maildrop.messages()[i].uid)),
            Err(r) => r,
        },
        None => Reply::multi(
            "",
            live(t)
                .map(|(i, m)| format!("{} {}", i + 1, m.uid))
                .collect(),
        ),
    }
}

pub fn dele(t: &mut Transaction, n: u32) -> Reply {
    if t.read_only {
        return Reply::err("Mailbox is read-only");
    }
    match t.live_index(n) {
        Ok(i) => {
            t.deleted[i] = true;
            Reply::ok(format!("message {n} deleted"))
        }
        Err(r) => r,
    }
}

pub fn rset(t: &mut Transaction) -> Reply {
    t.deleted.iter_mut().for_each(|d| *d = false);
    let (count, octets) = live(t).fold((0u64, 0u64), |(c, o), (_, m)| (c + 1, o + m.size));
    Reply::ok(format!("maildrop has {count} messages ({octets} octets)"))
}

// SPDX-License-Identifier: AGPL-3.0-only
//! What a campaign's clients saw, one [`Event`] per line of a JSON-lines
//! file. Times are milliseconds since the campaign started, taken by the
//! client before it sent a command and after it read the reply, so that an
//! operation's effect lies somewhere between its `start` and `end`.

use serde::{Deserialize, Serialize};

/// A message as a session listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub uidl: String,
    /// The campaign's unique id, from the message's header.
    pub id: String,
    /// A hash of the message as RETR sent it (hex), when it was read:
    /// the same message must always read the same.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// One LMTP delivery; `acknowledged` when it was answered `250`.
    Deliver {
        id: String,
        user: String,
        node: usize,
        start: u64,
        end: u64,
        acknowledged: bool,
    },
    /// One POP3 session that logged in: `pass_sent` is when PASS went
    /// out, `login` when its `+OK` came. The maildrop is read somewhere
    /// between: mail acknowledged before `pass_sent` must be listed.
    Session {
        session: u64,
        user: String,
        node: usize,
        pass_sent: u64,
        login: u64,
        listed: Vec<Listed>,
        /// UIDLs marked with DELE.
        deleted: Vec<String>,
        /// When QUIT was sent, if it was (a dropped or stalled session
        /// never sends it).
        quit_sent: Option<u64>,
        /// When QUIT's `+OK` arrived, if it did.
        quit_ok: Option<u64>,
    },
    /// After the last fault was healed: whether the user could log in
    /// through the node within `lease_ttl` plus 10 s.
    Recovery { user: String, node: usize, ok: bool },
}

/// Read a history; `Err` names the line that is not an event.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// One line of a history file.
pub fn line(event: &Event) -> String {
    serde_json::to_string(event).expect("events always serialise")
}

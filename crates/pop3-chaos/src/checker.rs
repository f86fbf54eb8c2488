// SPDX-License-Identifier: AGPL-3.0-only
//! Reads a campaign's history and reports every broken promise:
//!
//! - **lost mail**: an acknowledged delivery missing from a session that
//!   sent PASS after it was acknowledged, unless a session that listed it,
//!   marked it deleted and sent QUIT had done so before that login (a QUIT
//!   with no reply may or may not have deleted it: either is allowed);
//! - **resurrection**: a message listed by a session that sent PASS after
//!   a QUIT answered `+OK` that deleted it, or after a session that no
//!   longer listed it;
//! - **unstable UIDL**: one UIDL for two messages, two UIDLs for one
//!   message, or one message with two different contents;
//! - **shared maildrop**: a session that logged in after another held the
//!   maildrop lists messages that the other then deleted with a QUIT
//!   answered `+OK` (so the other deleted them after losing the maildrop;
//!   intervals of login to reply alone would blame a reply that was merely
//!   late);
//! - **no recovery**: a user who could not log in through a node after the
//!   last fault was healed.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::Event;

/// One broken promise, with the history lines (1-based) that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: Kind,
    pub what: String,
    pub lines: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    LostMail,
    Resurrection,
    UnstableUidl,
    SharedMaildrop,
    NoRecovery,
}

struct Session<'a> {
    line: usize,
    pass_sent: u64,
    login: u64,
    /// The ids of what it listed.
    ids: HashSet<&'a str>,
    /// ids it marked deleted.
    deleted: Vec<&'a str>,
    quit_sent: Option<u64>,
    quit_ok: Option<u64>,
}

/// Every violation the history shows, in the order of the kinds above.
pub fn check(events: &[Event]) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut sessions: BTreeMap<&str, Vec<Session<'_>>> = BTreeMap::new();
    let mut uidl_of: HashMap<(&str, &str), (&str, usize)> = HashMap::new();
    let mut id_of: HashMap<(&str, &str), (&str, usize)> = HashMap::new();
    let mut digest_of: HashMap<&str, (&str, usize)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let line = i + 1;
        match e {
            Event::Session {
                user,
                pass_sent,
                login,
                listed,
                deleted,
                quit_sent,
                quit_ok,
                ..
            } => {
                for m in listed {
                    let key = (user.as_str(), m.uidl.as_str());
                    match id_of.insert(key, (&m.id, line)) {
                        Some((other, at)) if other != m.id => found.push(Violation {
                            kind: Kind::UnstableUidl,
                            what: format!("{user}: UIDL {} names {other} and {}", m.uidl, m.id),
                            lines: vec![at, line],
                        }),
                        _ => {}
                    }
                    match uidl_of.insert((user, &m.id), (&m.uidl, line)) {
                        Some((other, at)) if other != m.uidl => found.push(Violation {
                            kind: Kind::UnstableUidl,
                            what: format!("{user}: {} listed as {other} and as {}", m.id, m.uidl),
                            lines: vec![at, line],
                        }),
                        _ => {}
                    }
                    if let Some(digest) = &m.digest {
                        match digest_of.insert(&m.id, (digest, line)) {
                            Some((other, at)) if other != digest => found.push(Violation {
                                kind: Kind::UnstableUidl,
                                what: format!("{}: contents {other} and {digest}", m.id),
                                lines: vec![at, line],
                            }),
                            _ => {}
                        }
                    }
                }
                let by_uidl: HashMap<&str, &str> = listed
                    .iter()
                    .map(|m| (m.uidl.as_str(), m.id.as_str()))
                    .collect();
                let deleted = deleted
                    .iter()
                    .filter_map(|u| by_uidl.get(u.as_str()).copied())
                    .collect();
                sessions.entry(user).or_default().push(Session {
                    line,
                    pass_sent: *pass_sent,
                    login: *login,
                    ids: by_uidl.into_values().collect(),
                    deleted,
                    quit_sent: *quit_sent,
                    quit_ok: *quit_ok,
                });
            }
            Event::Recovery { user, node, ok } if !ok => found.push(Violation {
                kind: Kind::NoRecovery,
                what: format!("{user} could not log in through node {node} after the faults"),
                lines: vec![line],
            }),
            _ => {}
        }
    }
    // Per user and message: the earliest QUIT sent, and the earliest QUIT
    // answered `+OK`, of a session that deleted it.
    let mut deletion_sent: HashMap<(&str, &str), u64> = HashMap::new();
    let mut deletion_ok: HashMap<(&str, &str), (u64, usize)> = HashMap::new();
    for (user, list) in &sessions {
        for d in list {
            for id in &d.deleted {
                if let Some(t) = d.quit_sent {
                    let at = deletion_sent.entry((user, id)).or_insert(t);
                    *at = (*at).min(t);
                }
                if let Some(t) = d.quit_ok {
                    let at = deletion_ok.entry((user, id)).or_insert((t, d.line));
                    if t < at.0 {
                        *at = (t, d.line);
                    }
                }
            }
        }
    }
    for (i, e) in events.iter().enumerate() {
        let Event::Deliver {
            id,
            user,
            end,
            acknowledged: true,
            ..
        } = e
        else {
            continue;
        };
        let Some(list) = sessions.get(user.as_str()) else {
            continue;
        };
        let deleted_at = deletion_sent.get(&(user.as_str(), id.as_str()));
        for s in list.iter().filter(|s| s.pass_sent > *end) {
            if s.ids.contains(id.as_str()) || deleted_at.is_some_and(|q| *q < s.login) {
                continue;
            }
            found.push(Violation {
                kind: Kind::LostMail,
                what: format!(
                    "{user}: {id}, acknowledged at {end}, missing at {}",
                    s.login
                ),
                lines: vec![i + 1, s.line],
            });
        }
    }
    for (user, list) in &sessions {
        for s in list {
            for id in &s.ids {
                if let Some(&(ok, line)) = deletion_ok.get(&(*user, *id))
                    && s.pass_sent > ok
                {
                    found.push(Violation {
                        kind: Kind::Resurrection,
                        what: format!(
                            "{user}: {id}, deleted by a QUIT answered at {ok}, listed again at {}",
                            s.login
                        ),
                        lines: vec![line, s.line],
                    });
                }
            }
        }
        // Once gone from a listing, a message never comes back (whatever
        // was known of the QUIT that removed it).
        let mut by_login: Vec<&Session<'_>> = list.iter().collect();
        by_login.sort_by_key(|s| s.login);
        let mut gone: HashMap<&str, &Session<'_>> = HashMap::new();
        let mut present: HashSet<&str> = HashSet::new();
        for s in &by_login {
            present.retain(|id| {
                let kept = s.ids.contains(id);
                if !kept {
                    gone.insert(id, s);
                }
                kept
            });
            for id in &s.ids {
                match gone.get(id) {
                    Some(g) => found.push(Violation {
                        kind: Kind::Resurrection,
                        what: format!(
                            "{user}: {id}, gone at {}, listed again at {}",
                            g.login, s.login
                        ),
                        lines: vec![g.line, s.line],
                    }),
                    None => {
                        present.insert(id);
                    }
                }
            }
        }
        // Two holders at once: a session that began after another held the
        // maildrop, and still listed what that one deleted with a QUIT
        // answered `+OK`. Had the first one's deletion come while it held
        // the maildrop, the second could not have seen those messages; so
        // it came after the second took the maildrop over, under a lease
        // that was no longer the first one's.
        for a in list.iter().filter(|a| !a.deleted.is_empty()) {
            let Some(ok) = a.quit_ok else { continue };
            // (One that began after the +OK and lists them is a
            // resurrection, above.)
            for b in list
                .iter()
                .filter(|b| b.pass_sent > a.login && b.pass_sent < ok)
            {
                let stale: Vec<&str> = a
                    .deleted
                    .iter()
                    .copied()
                    .filter(|id| b.ids.contains(id))
                    .collect();
                if !stale.is_empty() {
                    found.push(Violation {
                        kind: Kind::SharedMaildrop,
                        what: format!(
                            "{user}: {stale:?} listed by a session from {} after one from {} had them, which then deleted them with +OK at {}",
                            b.login, a.login, ok
                        ),
                        lines: vec![a.line, b.line],
                    });
                }
            }
        }
    }
    found.sort_by_key(|v| v.kind);
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, Listed, parse};

    fn deliver(id: &str, end: u64) -> Event {
        Event::Deliver {
            id: id.into(),
            user: "u".into(),
            node: 0,
            start: end - 1,
            end,
            acknowledged: true,
        }
    }

    fn listed(pairs: &[(&str, &str)]) -> Vec<Listed> {
        pairs
            .iter()
            .map(|(uidl, id)| Listed {
                uidl: (*uidl).into(),
                id: (*id).into(),
                digest: Some(format!("digest-{id}")),
            })
            .collect()
    }

    fn session(
        login: u64,
        pairs: &[(&str, &str)],
        deleted: &[&str],
        quit: Option<(u64, bool)>,
    ) -> Event {
        Event::Session {
            session: login,
            user: "u".into(),
            node: 0,
            pass_sent: login - 1,
            login,
            listed: listed(pairs),
            deleted: deleted.iter().map(|d| (*d).to_owned()).collect(),
            quit_sent: quit.map(|(t, _)| t),
            quit_ok: quit.and_then(|(t, ok)| ok.then_some(t + 1)),
        }
    }

    fn kinds(events: &[Event]) -> Vec<Kind> {
        check(events).into_iter().map(|v| v.kind).collect()
    }

    /// Deliveries, a session that deletes one, a later one that lists the
    /// rest, a QUIT with no reply (either outcome is allowed), recovery.
    fn clean() -> Vec<Event> {
        vec![
            deliver("m1", 10),
            deliver("m2", 11),
            session(20, &[("a", "m1"), ("b", "m2")], &["a"], Some((30, true))),
            deliver("m3", 40),
            session(50, &[("b", "m2"), ("c", "m3")], &["b"], Some((60, false))),
            session(70, &[("c", "m3")], &[], Some((80, true))),
            session(90, &[("c", "m3")], &[], Some((95, true))),
            Event::Recovery {
                user: "u".into(),
                node: 1,
                ok: true,
            },
        ]
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        assert_eq!(check(&clean()), vec![]);
        // And it survives its own file format.
        let text: String = clean()
            .iter()
            .map(|e| crate::history::line(e) + "\n")
            .collect();
        assert_eq!(parse(&text).unwrap(), clean());
    }

    #[test]
    fn each_broken_promise_is_caught() {
        // An acknowledged message a later session does not list.
        let mut h = clean();
        h.push(session(100, &[("c", "m3")], &[], None));
        h.push(deliver("m4", 110));
        h.push(session(120, &[("c", "m3")], &[], None));
        assert_eq!(kinds(&h), [Kind::LostMail]);
        // A message deleted by a QUIT that said +OK, listed again.
        let mut h = clean();
        h.push(session(100, &[("a", "m1"), ("c", "m3")], &[], None));
        assert_eq!(kinds(&h), [Kind::Resurrection, Kind::Resurrection]);
        // One whose QUIT had no reply: gone at one login, back at a later.
        let mut h = clean();
        h.push(session(100, &[("b", "m2"), ("c", "m3")], &[], None));
        assert_eq!(kinds(&h), [Kind::Resurrection]);
        // A UIDL given to another message, and a message under another UIDL.
        let mut h = clean();
        h.push(session(100, &[("c", "m9"), ("z", "m3")], &[], None));
        assert_eq!(kinds(&h), [Kind::UnstableUidl; 2]);
        // The same message with other contents.
        let mut h = clean();
        if let Event::Session { listed, .. } = &mut h[6] {
            listed[0].digest = Some("torn".into());
        }
        assert_eq!(kinds(&h), [Kind::UnstableUidl]);
        // A stale holder: one session marks m3, another logs in and still
        // lists it, then the first one's QUIT deletes it with +OK.
        let mut h = clean();
        h.push(session(100, &[("c", "m3")], &["c"], Some((130, true))));
        h.push(session(110, &[("c", "m3")], &[], Some((120, true))));
        assert_eq!(kinds(&h), [Kind::SharedMaildrop], "{:?}", check(&h));
        // A QUIT whose reply was late (it took effect before the next
        // login) is no violation.
        let mut h = clean();
        h.push(session(100, &[("c", "m3")], &["c"], Some((105, true))));
        if let Some(Event::Session { quit_ok, .. }) = h.last_mut() {
            *quit_ok = Some(200);
        }
        h.push(session(150, &[], &[], Some((160, true))));
        assert_eq!(check(&h), vec![]);
        // A user locked out after the faults.
        let mut h = clean();
        h.push(Event::Recovery {
            user: "u".into(),
            node: 2,
            ok: false,
        });
        assert_eq!(kinds(&h), [Kind::NoRecovery]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse("{\"op\":\"recovery\",\"user\":\"u\",\"node\":0,\"ok\":true}\nnot json\n")
            .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}

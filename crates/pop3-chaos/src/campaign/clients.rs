// SPDX-License-Identifier: AGPL-3.0-only
//! The campaign's clients: LMTP deliveries and POP3 sessions, each
//! written into the history with the times the client saw.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::cluster::SESSION_TIMEOUT;
use super::nemesis::Rng;
use pop3_chaos::history::{Event, Listed};
use pop3_testkit::poll_for;

/// The campaign's clock and history.
pub struct Log {
    started: Instant,
    events: Mutex<Vec<Event>>,
    sessions: AtomicU64,
}

impl Log {
    pub fn new() -> Log {
        Log {
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
            sessions: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the campaign started.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// A line-oriented connection that never fails loudly: a dead server
/// reads as an empty reply.
struct Line(BufReader<TcpStream>);

impl Line {
    fn connect(port: u16) -> Option<Line> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        let mut l = Line(BufReader::new(s));
        (!l.read().is_empty()).then_some(l)
    }

    fn read(&mut self) -> String {
        let mut s = String::new();
        let _ = self.0.read_line(&mut s);
        s
    }

    fn send(&mut self, text: &str) -> bool {
        self.0.get_mut().write_all(text.as_bytes()).is_ok()
    }

    fn cmd(&mut self, line: &str) -> String {
        if !self.send(&format!("{line}\r\n")) {
            return String::new();
        }
        self.read()
    }

    /// A reply of several lines (LMTP's `250-`), its last line.
    fn last_of_reply(&mut self, line: &str) -> String {
        let mut reply = self.cmd(line);
        while reply.len() >= 4 && reply.as_bytes()[3] == b'-' {
            reply = self.read();
        }
        reply
    }

    fn multi(&mut self, line: &str) -> Option<Vec<String>> {
        if !self.cmd(line).starts_with("+OK") {
            return None;
        }
        let mut out = Vec::new();
        loop {
            match self.read().as_str() {
                "" => return None,
                ".\r\n" => return Some(out),
                l => out.push(l.to_owned()),
            }
        }
    }
}

/// Log in as `user` (password `secret`): the connection, and when PASS
/// went out and its `+OK` came.
fn login(log: &Log, port: u16, user: &str) -> Option<(Line, u64, u64)> {
    let mut c = Line::connect(port)?;
    c.cmd(&format!("USER {user}"));
    let pass_sent = log.now();
    c.cmd("PASS secret")
        .starts_with("+OK")
        .then(|| (c, pass_sent, log.now()))
}

/// One message to `user` over LMTP, with its id in a header; whether it
/// was acknowledged.
pub fn deliver(log: &Log, node: usize, port: u16, user: &str, id: &str) -> bool {
    let start = log.now();
    let acknowledged = (|| {
        let mut c = Line::connect(port)?;
        for l in [
            "LHLO chaos",
            "MAIL FROM:<chaos@example.org>",
            &format!("RCPT TO:<{user}>"),
        ] {
            c.last_of_reply(l);
        }
        if !c.cmd("DATA").starts_with("354") {
            return None;
        }
        c.send(&format!(
            "Subject: {id}\r\nX-Chaos-Id: {id}\r\n\r\nbody of {id}\r\n.\r\n"
        ));
        Some(c.read().starts_with("250"))
    })()
    .unwrap_or(false);
    log.push(Event::Deliver {
        id: id.to_owned(),
        user: user.to_owned(),
        node,
        start,
        end: log.now(),
        acknowledged,
    });
    acknowledged
}

/// What a session does after listing and reading everything.
#[derive(Clone, Copy)]
pub struct Behaviour {
    /// Mark about half the messages deleted.
    pub deletes: bool,
    /// Sometimes wait 0.5 to 2.5 s before ending: the session holds its
    /// lease while the nemesis may pause its node.
    pub lingers: bool,
    /// Stall past the server's session timeout before QUIT: the server
    /// must close the session without removing anything.
    pub stalls: bool,
    /// End with QUIT (else drop the connection).
    pub quits: bool,
}

impl Behaviour {
    /// A last look at a mailbox: read everything, change nothing.
    pub const LOOK: Behaviour = Behaviour {
        deletes: false,
        lingers: false,
        stalls: false,
        quits: false,
    };
}

/// One POP3 session; recorded once it has logged in and listed. Whether
/// it got that far.
pub fn session(
    log: &Log,
    node: usize,
    port: u16,
    user: &str,
    rng: &mut Rng,
    how: Behaviour,
) -> bool {
    let Some((mut c, pass_sent, login)) = login(log, port, user) else {
        return false;
    };
    let Some(uidls) = c.multi("UIDL") else {
        return false;
    };
    let mut listed = Vec::new();
    for l in &uidls {
        let Some((n, uidl)) = l.trim_end().split_once(' ') else {
            return false;
        };
        let Some(retr) = c.multi(&format!("RETR {n}")) else {
            return false;
        };
        let text = retr.concat();
        let Some(id) = text.lines().find_map(|l| l.strip_prefix("X-Chaos-Id: ")) else {
            return false;
        };
        listed.push((
            n.to_owned(),
            Listed {
                uidl: uidl.to_owned(),
                id: id.trim().to_owned(),
                digest: Some(digest(&text)),
            },
        ));
    }
    let mut deleted = Vec::new();
    for (n, m) in &listed {
        if how.deletes && rng.below(2) == 0 && c.cmd(&format!("DELE {n}")).starts_with("+OK") {
            deleted.push(m.uidl.clone());
        }
    }
    if how.stalls {
        std::thread::sleep(SESSION_TIMEOUT + Duration::from_secs(1));
    } else if how.lingers && rng.below(3) == 0 {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2000)));
    }
    let (quit_sent, quit_ok) = if how.quits {
        let sent = log.now();
        let ok = c.cmd("QUIT").starts_with("+OK");
        (Some(sent), ok.then(|| log.now()))
    } else {
        (None, None)
    };
    log.push(Event::Session {
        session: log.sessions.fetch_add(1, Ordering::SeqCst),
        user: user.to_owned(),
        node,
        pass_sent,
        login,
        listed: listed.into_iter().map(|(_, m)| m).collect(),
        deleted,
        quit_sent,
        quit_ok,
    });
    true
}

/// After the faults: whether `user` logs in through the node within
/// `within`.
pub fn recovers(log: &Log, port: u16, user: &str, within: Duration) -> bool {
    poll_for(within, || login(log, port, user))
        .map(|(mut c, ..)| c.cmd("QUIT"))
        .is_some()
}

/// A hash of a message as RETR sent it: the same message must always
/// read the same.
fn digest(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

// SPDX-License-Identifier: AGPL-3.0-only
//! A TCP fault proxy for one node's database traffic (Debian has no
//! toxiproxy, and this kernel has no `tc netem`): it forwards between a
//! listening port and the real server, and the nemesis switches it between
//! passing bytes, delaying them, blackholing them (connections stay open,
//! nothing flows) and resetting every connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Each chunk waits this long before it goes on.
    Delay(Duration),
    /// Nothing goes through, nothing is closed.
    Blackhole,
    /// Every open connection is cut, and new ones are cut at once.
    Reset,
}

#[derive(Debug, Default)]
struct State {
    /// 0 pass, 1 delay, 2 blackhole, 3 reset.
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// Open connections, both ends, to cut on reset.
    open: Mutex<Vec<TcpStream>>,
}

/// A running proxy. Its threads end with the process: a campaign's
/// proxies live as long as the campaign.
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || connect(client, target, &state));
            }
        });
        Ok(Proxy { port, state })
    }

    pub fn set(&self, fault: Fault) {
        let (mode, delay) = match fault {
            Fault::Pass => (0, 0),
            Fault::Delay(d) => (1, d.as_millis() as u64),
            Fault::Blackhole => (2, 0),
            Fault::Reset => (3, 0),
        };
        self.state.delay_ms.store(delay, Ordering::SeqCst);
        self.state.mode.store(mode, Ordering::SeqCst);
        if fault == Fault::Reset {
            let mut open = self.state.open.lock().unwrap_or_else(|p| p.into_inner());
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn connect(client: TcpStream, target: SocketAddr, state: &Arc<State>) {
    if state.mode.load(Ordering::SeqCst) == 3 {
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut open = state.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|s| s.peer_addr().is_ok());
        for s in [&client, &server] {
            if let Ok(s) = s.try_clone() {
                open.push(s);
            }
        }
    }
    let up = state.clone();
    std::thread::spawn(move || pump(client, s2, &up));
    pump(server, c2, state);
}

/// Copy `from` to `to` under the current fault until either end closes.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            match state.mode.load(Ordering::SeqCst) {
                0 => break,
                1 => {
                    std::thread::sleep(Duration::from_millis(
                        state.delay_ms.load(Ordering::SeqCst),
                    ));
                    break;
                }
                // Held until the fault is healed (or turns into a reset).
                2 => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::time::Instant;

    /// An echo server for the proxy to stand in front of.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 0 {
                        if w.write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        addr
    }

    fn ask(c: &mut std::io::BufReader<TcpStream>, what: &str) -> std::io::Result<String> {
        c.get_mut().write_all(format!("{what}\n").as_bytes())?;
        let mut line = String::new();
        c.read_line(&mut line)?;
        Ok(line)
    }

    #[test]
    fn each_fault_does_what_it_says() {
        let proxy = Proxy::start(echo()).unwrap();
        let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut c = std::io::BufReader::new(s);
        assert_eq!(ask(&mut c, "one").unwrap(), "one\n");
        proxy.set(Fault::Delay(Duration::from_millis(150)));
        let t = Instant::now();
        assert_eq!(ask(&mut c, "two").unwrap(), "two\n");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        proxy.set(Fault::Blackhole);
        assert!(ask(&mut c, "three").is_err(), "nothing passes a blackhole");
        proxy.set(Fault::Pass);
        // What was held goes on once healed.
        let mut line = String::new();
        c.get_mut()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        c.read_line(&mut line).unwrap();
        assert_eq!(line, "three\n");
        proxy.set(Fault::Reset);
        assert!(!matches!(ask(&mut c, "four"), Ok(l) if l == "four\n"));
        let fresh = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert!(
            !matches!(ask(&mut std::io::BufReader::new(fresh), "five"), Ok(l) if l == "five\n")
        );
        proxy.set(Fault::Pass);
        let again = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(
            ask(&mut std::io::BufReader::new(again), "six").unwrap(),
            "six\n"
        );
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3-chaos`: the randomized fault campaign (docs/testing.md). On
//! loopback it starts PostgreSQL, Redis and three `pop3d` nodes, each
//! reaching the database through its own fault proxy; deliverers and POP3
//! clients work against random nodes while a nemesis, driven by the seed,
//! injects one fault at a time. Every client operation goes into a history
//! file; the checker reads it. Exit 0 without violations, 1 with; the last
//! line of output is `violations: N`.
//!
//! `cargo run --release -p pop3-chaos -- --seed N --duration 120s`, with
//! `pop3d` built beside it (`cargo build --release -p pop3d`) or named by
//! `--pop3d PATH`. `--broken-epoch` builds and runs a pop3d whose QUIT
//! deletes without checking its lease, which the checker must catch.
//! `--check FILE` runs the checker alone on a recorded history.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pop3_chaos::history::{Event, Listed};
use pop3_chaos::proxy::{Fault, Proxy};
use pop3_testkit::{Postgres, free_port};

const USERS: usize = 3;
const NODES: usize = 3;
const LEASE_TTL_SECS: u64 = 3;

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same fault schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Args {
    seed: u64,
    duration: Duration,
    pop3d: PathBuf,
    history: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut seed = 1;
    let mut duration = Duration::from_secs(120);
    let mut pop3d = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("pop3d");
    let mut history = PathBuf::from("chaos-history.jsonl");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--duration" => {
                duration = humantime_secs(&value()?)?;
            }
            "--pop3d" => pop3d = PathBuf::from(value()?),
            "--history" => history = PathBuf::from(value()?),
            "--broken-epoch" => pop3d = broken_build()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !pop3d.is_file() {
        return Err(format!(
            "no pop3d at {} (cargo build --release -p pop3d, or --pop3d PATH)",
            pop3d.display()
        ));
    }
    Ok(Args {
        seed,
        duration,
        pop3d,
        history,
    })
}

/// pop3d built with the `broken-epoch` feature (QUIT deletes without its
/// lease), in a target directory of its own: the campaign must catch it.
fn broken_build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/broken-epoch");
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "-p",
            "pop3d",
            "--features",
            "broken-epoch",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !built.success() {
        return Err("building pop3d with broken-epoch failed".into());
    }
    Ok(target.join("debug/pop3d"))
}

/// `120s`, `2m`, or a number of seconds.
fn humantime_secs(text: &str) -> Result<Duration, String> {
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = n.parse().map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {text:?}")),
    }
}

struct Node {
    config: PathBuf,
    pop3: u16,
    lmtp: u16,
    proxy: Proxy,
    child: Mutex<Option<Child>>,
}

impl Node {
    fn start(&self, pop3d: &Path) {
        let child = Command::new(pop3d)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pop3d starts");
        *self.child.lock().unwrap() = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.pop3)).is_err()
            && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    fn stop(&self, sig: &str) {
        self.signal(sig);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.wait();
        }
    }
}

struct Redis(Child, u16);

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
                &port.to_string(),
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        Redis(child, port)
    }
}

/// The campaign's clock and history.
struct Log {
    started: Instant,
    events: Mutex<Vec<Event>>,
    sessions: AtomicU64,
}

impl Log {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
}

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

    fn cmd(&mut self, line: &str) -> String {
        if self
            .0
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .is_err()
        {
            return String::new();
        }
        self.read()
    }

    fn multi(&mut self, line: &str) -> Option<Vec<String>> {
        if !self.cmd(line).starts_with("+OK") {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let l = self.read();
            if l.is_empty() {
                return None;
            }
            if l == ".\r\n" {
                return Some(out);
            }
            out.push(l);
        }
    }
}

fn deliver(log: &Log, node: usize, port: u16, user: &str, id: &str) {
    let start = log.now();
    let ok = (|| {
        let mut c = Line::connect(port)?;
        for l in [
            "LHLO chaos",
            "MAIL FROM:<chaos@example.org>",
            &format!("RCPT TO:<{user}>"),
        ] {
            c.0.get_mut()
                .write_all(format!("{l}\r\n").as_bytes())
                .ok()?;
            loop {
                let r = c.read();
                if r.len() < 4 || r.as_bytes()[3] != b'-' {
                    break;
                }
            }
        }
        if !c.cmd("DATA").starts_with("354") {
            return None;
        }
        let body = format!("Subject: {id}\r\nX-Chaos-Id: {id}\r\n\r\nbody of {id}\r\n.\r\n");
        c.0.get_mut().write_all(body.as_bytes()).ok()?;
        Some(c.read().starts_with("250"))
    })()
    .unwrap_or(false);
    log.push(Event::Deliver {
        id: id.to_owned(),
        user: user.to_owned(),
        node,
        start,
        end: log.now(),
        acknowledged: ok,
    });
}

/// What a session does before it ends.
#[derive(Clone, Copy)]
enum Ending {
    Quit,
    Drop,
}

fn session(log: &Log, node: usize, port: u16, user: &str, rng: &mut Rng, ending: Ending) {
    let Some(mut c) = Line::connect(port) else {
        return;
    };
    c.cmd(&format!("USER {user}"));
    let pass_sent = log.now();
    if !c.cmd("PASS secret").starts_with("+OK") {
        return;
    }
    let login = log.now();
    let Some(uidls) = c.multi("UIDL") else {
        return;
    };
    let mut listed = Vec::new();
    for l in &uidls {
        let Some((n, uidl)) = l.trim_end().split_once(' ') else {
            return;
        };
        let Some(retr) = c.multi(&format!("RETR {n}")) else {
            return;
        };
        let text = retr.concat();
        let Some(id) = text.lines().find_map(|l| l.strip_prefix("X-Chaos-Id: ")) else {
            return;
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        listed.push((
            n.to_owned(),
            Listed {
                uidl: uidl.to_owned(),
                id: id.trim().to_owned(),
                digest: Some(format!("{:016x}", h.finish())),
            },
        ));
    }
    let mut deleted = Vec::new();
    for (n, m) in &listed {
        if rng.below(2) == 0 && c.cmd(&format!("DELE {n}")).starts_with("+OK") {
            deleted.push(m.uidl.clone());
        }
    }
    // A slow client now and then: the session holds its lease while the
    // nemesis may pause its node, and another node may take over.
    if rng.below(3) == 0 {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2000)));
    }
    let (quit_sent, quit_ok) = match ending {
        Ending::Quit => {
            let sent = log.now();
            let ok = c.cmd("QUIT").starts_with("+OK");
            (Some(sent), ok.then(|| log.now()))
        }
        Ending::Drop => (None, None),
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
}

/// `--check FILE`: the checker alone, on a history recorded before.
fn check_file(path: &str) -> ExitCode {
    let events = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| pop3_chaos::history::parse(&t))
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pop3-chaos: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    report(&pop3_chaos::checker::check(&events))
}

fn report(violations: &[pop3_chaos::checker::Violation]) -> ExitCode {
    for v in violations {
        println!(
            "violation: {:?}: {} (history lines {:?})",
            v.kind, v.what, v.lines
        );
    }
    println!("violations: {}", violations.len());
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let [_, flag, path] = argv.as_slice()
        && flag == "--check"
    {
        return check_file(path);
    }
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pop3-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    println!("seed {}", args.seed);
    let dir = std::env::temp_dir().join(format!("pop3-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pg = Postgres::private();
    let db = pg.database();
    let redis = Mutex::new(Redis::start(free_port()));
    let redis_port = redis.lock().unwrap().1;
    let passwd: String = (0..USERS)
        .map(|u| format!("u{u}:{{PLAIN}}secret::::\n"))
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let proxy = Proxy::start(([127, 0, 0, 1], pg.port).into()).unwrap();
            let (pop3, lmtp, metrics) = (free_port(), free_port(), free_port());
            let url = pg.url(&db).replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
            let config = dir.join(format!("node{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[server]\nhostname = \"node{i}.chaos\"\nnode_name = \"node{i}\"\nsession_timeout = \"20s\"\ndrain_delay = \"0s\"\n\n\
                     [[listener]]\nbind = \"127.0.0.1:{pop3}\"\ntls = \"none\"\n\n\
                     [[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n\n\
                     [metrics]\nbind = \"127.0.0.1:{metrics}\"\n\n\
                     [security]\nauth_failure_delay = \"0s\"\nenable_security_logging = false\nshared_state = \"redis://127.0.0.1:{redis_port}/\"\n\n\
                     [storage]\nbackend = \"postgres\"\nurl = \"{url}\"\nlease_ttl = \"{LEASE_TTL_SECS}s\"\n\n\
                     [auth]\npasswd_file = \"passwd\"\n"
                ),
            )
            .unwrap();
            Node {
                config,
                pop3,
                lmtp,
                proxy,
                child: Mutex::new(None),
            }
        })
        .collect();
    for n in &nodes {
        n.start(&args.pop3d);
    }
    let log = Arc::new(Log {
        started: Instant::now(),
        events: Mutex::new(Vec::new()),
        sessions: AtomicU64::new(0),
    });
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + args.duration;
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    std::thread::scope(|scope| {
        // A deliverer.
        scope.spawn(|| {
            let mut rng = Rng(args.seed ^ 0xd1);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let node = rng.below(NODES as u64) as usize;
                let user = format!("u{}", rng.below(USERS as u64));
                deliver(&log, node, nodes[node].lmtp, &user, &format!("m{n}"));
                n += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        // Four clients.
        for w in 0..4u64 {
            let (log, nodes, stop) = (&log, &nodes, &stop);
            scope.spawn(move || {
                let mut rng = Rng(args.seed ^ (0xc0 + w));
                while !stop.load(Ordering::SeqCst) {
                    let node = rng.below(NODES as u64) as usize;
                    let user = format!("u{}", rng.below(USERS as u64));
                    let ending = if rng.below(5) == 0 {
                        Ending::Drop
                    } else {
                        Ending::Quit
                    };
                    session(log, node, nodes[node].pop3, &user, &mut rng, ending);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        // The nemesis: one fault at a time.
        let mut rng = Rng(args.seed);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
            let node = &nodes[rng.below(NODES as u64) as usize];
            let kind = match rng.below(7) {
                0 => {
                    node.stop("KILL");
                    node.start(&args.pop3d);
                    "kill -9 and restart"
                }
                1 => {
                    node.signal("STOP");
                    std::thread::sleep(Duration::from_secs(LEASE_TTL_SECS + 2));
                    node.signal("CONT");
                    "SIGSTOP past the lease"
                }
                2 => {
                    node.stop("TERM");
                    node.start(&args.pop3d);
                    "SIGTERM and restart"
                }
                3 => {
                    pg.pg_ctl_stop();
                    std::thread::sleep(Duration::from_millis(rng.below(1500)));
                    pg.pg_ctl_start();
                    "PostgreSQL restarted"
                }
                4 => {
                    let mut r = redis.lock().unwrap();
                    let _ = r.0.kill();
                    let _ = r.0.wait();
                    std::thread::sleep(Duration::from_millis(rng.below(1500)));
                    *r = Redis::start(redis_port);
                    "Redis killed and restarted"
                }
                5 => {
                    node.proxy.set(Fault::Blackhole);
                    std::thread::sleep(Duration::from_millis(500 + rng.below(3000)));
                    node.proxy.set(Fault::Pass);
                    "database traffic blackholed"
                }
                _ => {
                    node.proxy
                        .set(Fault::Delay(Duration::from_millis(50 + rng.below(500))));
                    std::thread::sleep(Duration::from_millis(500 + rng.below(3000)));
                    node.proxy.set(Fault::Pass);
                    "database traffic delayed"
                }
            };
            *faults.entry(kind).or_default() += 1;
        }
        stop.store(true, Ordering::SeqCst);
    });
    // Healed: every user through every node within lease_ttl + 10 s, and
    // a last listing of each mailbox.
    for n in &nodes {
        n.proxy.set(Fault::Pass);
    }
    for (i, n) in nodes.iter().enumerate() {
        for u in 0..USERS {
            let user = format!("u{u}");
            let until = Instant::now() + Duration::from_secs(LEASE_TTL_SECS + 10);
            let ok = loop {
                if let Some(mut c) = Line::connect(n.pop3) {
                    c.cmd(&format!("USER {user}"));
                    if c.cmd("PASS secret").starts_with("+OK") {
                        c.cmd("QUIT");
                        break true;
                    }
                }
                if Instant::now() > until {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            log.push(Event::Recovery {
                user: user.clone(),
                node: i,
                ok,
            });
        }
    }
    let mut rng = Rng(args.seed ^ 0xf1);
    for u in 0..USERS {
        session(
            &log,
            0,
            nodes[0].pop3,
            &format!("u{u}"),
            &mut rng,
            Ending::Drop,
        );
    }
    for n in &nodes {
        n.stop("KILL");
    }
    let _ = redis.lock().unwrap().0.kill();
    let events = log.events.lock().unwrap().clone();
    let text: String = events
        .iter()
        .map(|e| pop3_chaos::history::line(e) + "\n")
        .collect();
    std::fs::write(&args.history, text).unwrap();
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    println!(
        "operations: {} deliveries ({} acknowledged), {} sessions ({} quit +OK)",
        count(|e| matches!(e, Event::Deliver { .. })),
        count(|e| matches!(
            e,
            Event::Deliver {
                acknowledged: true,
                ..
            }
        )),
        count(|e| matches!(e, Event::Session { .. })),
        count(|e| matches!(
            e,
            Event::Session {
                quit_ok: Some(_),
                ..
            }
        )),
    );
    for (kind, n) in &faults {
        println!("fault: {kind}: {n}");
    }
    println!("history: {}", args.history.display());
    let _ = std::fs::remove_dir_all(&dir);
    report(&pop3_chaos::checker::check(&events))
}

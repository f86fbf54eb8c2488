// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3-bench`: drive a POP3 server on loopback and report sessions/s,
//! MiB/s, latency percentiles and errors; or, as `ceiling`, answer POP3
//! with canned replies to show what the machine allows without any POP3
//! work; or, as `userdb`, compare logins/s across user databases. Every
//! loop is bounded by `--duration`.

mod ceiling;
mod client;
mod lmtp;
mod report;
mod userdb;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use client::Conn;
use report::{Report, Totals};

#[derive(Parser)]
#[command(
    name = "pop3-bench",
    version,
    about = "POP3 load generator (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a load against a server.
    Run(RunArgs),
    /// Logins/s with the users in each user database, with and without
    /// the auth cache (starts its own PostgreSQL, MariaDB and slapd).
    Userdb(userdb::UserdbArgs),
    /// Serve canned POP3 replies (the ceiling reference).
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:3110")]
        listen: SocketAddr,
        /// Messages in the canned maildrop.
        #[arg(long, default_value_t = 20)]
        messages: usize,
        /// Size of each canned message, octets.
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Connect, USER/PASS, STAT, QUIT.
    Login,
    /// Log in, RETR every message, QUIT.
    Retr,
    /// Hold N authenticated sessions open, then NOOP each once.
    Idle,
    /// Login flood on some connections, one probe session timing NOOPs.
    Mixed,
    /// LMTP deliveries (the address is an LMTP listener): connect, LHLO,
    /// one message of `--size` octets to the user, QUIT.
    Lmtp,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1:1110")]
    addr: SocketAddr,
    /// Concurrent connections.
    #[arg(long, short, default_value_t = 8)]
    connections: usize,
    /// How long to run (seconds); for idle, how long to hold the sessions.
    #[arg(long, short, default_value_t = 5.0)]
    duration: f64,
    /// Implicit TLS (certificates are not verified: loopback benchmarking).
    #[arg(long)]
    tls: bool,
    /// User name pattern; `{}` becomes the connection number.
    #[arg(long, default_value = "u{}")]
    user: String,
    #[arg(long, default_value = "pw")]
    password: String,
    /// The probe session's user in `mixed` mode.
    #[arg(long, default_value = "probe")]
    probe_user: String,
    /// Users to spread connections over (user numbers 0..users).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Message size for `lmtp`, octets.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Print one machine-readable line instead of the table.
    #[arg(long)]
    csv: bool,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cli.command {
        Cmd::Run(args) => {
            if !args.addr.ip().is_loopback() {
                eprintln!(
                    "pop3-bench: refusing {}: loads only target loopback",
                    args.addr
                );
                std::process::exit(2);
            }
            let report = rt.block_on(run(args.clone()));
            if args.csv {
                println!("{}", report.csv());
            } else {
                println!("{report}");
            }
            if report.totals.errors > 0 && report.totals.sessions == 0 {
                std::process::exit(1);
            }
        }
        Cmd::Userdb(args) => userdb::run(&rt, &args),
        Cmd::Ceiling {
            listen,
            messages,
            size,
        } => rt.block_on(ceiling::serve(listen, messages, size)),
    }
}

fn user_for(args: &RunArgs, n: usize) -> String {
    let users = if args.users == 0 {
        args.connections
    } else {
        args.users
    };
    args.user.replace("{}", &(n % users.max(1)).to_string())
}

async fn run(args: RunArgs) -> Report {
    let args = Arc::new(args);
    let tls = args.tls.then(client::tls_connector);
    let duration = Duration::from_secs_f64(args.duration);
    match args.mode {
        Mode::Idle => idle(args, tls, duration).await,
        Mode::Mixed => mixed(args, tls, duration).await,
        Mode::Login | Mode::Retr | Mode::Lmtp => {
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for n in 0..args.connections {
                let (args, tls, stop) = (args.clone(), tls.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let user = user_for(&args, n);
                    let body = lmtp::message(args.size);
                    let mut t = Totals::default();
                    while !stop.load(Ordering::Relaxed) {
                        let s = Instant::now();
                        let done = match args.mode {
                            Mode::Lmtp => lmtp::deliver(args.addr, &user, &body).await,
                            _ => session(&args, tls.as_ref(), &user).await,
                        };
                        match done {
                            Ok(bytes) => {
                                t.sessions += 1;
                                t.bytes += bytes;
                                t.latencies.push(s.elapsed());
                            }
                            Err(e) => {
                                t.errors += 1;
                                if t.errors <= 3 {
                                    eprintln!("pop3-bench: {user}: {e}");
                                }
                            }
                        }
                    }
                    t
                }));
            }
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            let mut totals = Totals::default();
            for t in tasks {
                if let Ok(t) = t.await {
                    totals.merge(t);
                }
            }
            Report::new(totals, started.elapsed())
        }
    }
}

/// One whole session; returns the message octets received.
async fn session(
    args: &RunArgs,
    tls: Option<&tokio_rustls::TlsConnector>,
    user: &str,
) -> Result<u64, String> {
    let mut c = Conn::connect(args.addr, tls).await?;
    c.login(user, &args.password).await?;
    let (count, _) = c.stat().await?;
    let mut bytes = 0;
    if args.mode == Mode::Retr {
        for i in 1..=count {
            bytes += c.retr(i).await?;
        }
    }
    c.expect_ok("QUIT").await?;
    Ok(bytes)
}

/// Hold `connections` authenticated sessions, then check each still answers.
async fn idle(
    args: Arc<RunArgs>,
    tls: Option<tokio_rustls::TlsConnector>,
    hold: Duration,
) -> Report {
    let started = Instant::now();
    let mut open = Vec::with_capacity(args.connections);
    let mut totals = Totals::default();
    // Open in batches so the accept queue is not flooded.
    for batch in (0..args.connections).collect::<Vec<_>>().chunks(256) {
        let mut tasks = Vec::new();
        for &n in batch {
            let (args, tls) = (args.clone(), tls.clone());
            tasks.push(tokio::spawn(async move {
                let s = Instant::now();
                let mut c = Conn::connect(args.addr, tls.as_ref()).await?;
                c.login(&user_for(&args, n), &args.password).await?;
                Ok::<_, String>((c, s.elapsed()))
            }));
        }
        for t in tasks {
            match t.await {
                Ok(Ok((c, lat))) => {
                    totals.latencies.push(lat);
                    open.push(c);
                }
                Ok(Err(e)) => {
                    totals.errors += 1;
                    if totals.errors <= 3 {
                        eprintln!("pop3-bench: idle: {e}");
                    }
                }
                Err(_) => totals.errors += 1,
            }
        }
    }
    println!(
        "pop3-bench: {} sessions open, holding {:.0}s",
        open.len(),
        hold.as_secs_f64()
    );
    tokio::time::sleep(hold).await;
    for c in &mut open {
        match c.expect_ok("NOOP").await {
            Ok(()) => totals.sessions += 1,
            Err(_) => totals.errors += 1,
        }
    }
    for mut c in open {
        let _ = c.expect_ok("QUIT").await;
    }
    Report::new(totals, started.elapsed())
}

/// A login flood on `connections` workers plus one probe session that
/// sends NOOP every 10 ms; the report's latencies are the probe's.
async fn mixed(
    args: Arc<RunArgs>,
    tls: Option<tokio_rustls::TlsConnector>,
    duration: Duration,
) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut probe = match Conn::connect(args.addr, tls.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pop3-bench: probe: {e}");
            return Report::new(
                Totals {
                    errors: 1,
                    ..Totals::default()
                },
                started.elapsed(),
            );
        }
    };
    if let Err(e) = probe.login(&args.probe_user, &args.password).await {
        eprintln!("pop3-bench: probe login: {e}");
        return Report::new(
            Totals {
                errors: 1,
                ..Totals::default()
            },
            started.elapsed(),
        );
    }
    let mut flood = Vec::new();
    for n in 0..args.connections {
        let (args, tls, stop) = (args.clone(), tls.clone(), stop.clone());
        flood.push(tokio::spawn(async move {
            let user = user_for(&args, n);
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if session(&args, tls.as_ref(), &user).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut totals = Totals::default();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let s = Instant::now();
        match probe.expect_ok("NOOP").await {
            Ok(()) => totals.latencies.push(s.elapsed()),
            Err(_) => totals.errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        totals.sessions += f.await.unwrap_or(0);
    }
    let _ = probe.expect_ok("QUIT").await;
    Report::new(totals, started.elapsed())
}

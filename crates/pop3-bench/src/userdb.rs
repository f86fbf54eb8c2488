// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3-bench userdb`: logins/s with the users in each user database
//! pop3d reads (the passwd file, PostgreSQL, MariaDB, LDAP in compare mode
//! and with auth_bind), each with and without the auth cache, side by side
//! in one run. Every server is private, on loopback, started here: a
//! PostgreSQL, a MariaDB and a slapd (pop3-testkit), and a `pop3d` per
//! configuration in turn. The same users (`u0`..) with the same password,
//! stored as SHA512-CRYPT everywhere (`{CRYPT}$6$` in LDAP), so that what
//! differs is the database, not the hash.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pop3_testkit::slapd::{LOOKUP, LOOKUP_PASSWORD, SUFFIX};
use pop3_testkit::{MariaDb, Postgres, Slapd, free_port, wait_until};

use crate::{Mode, RunArgs};

#[derive(clap::Args, Clone)]
pub struct UserdbArgs {
    /// The pop3d binary to measure (a release build).
    #[arg(long, default_value = "target/release/pop3d")]
    pub pop3d: PathBuf,
    /// Seconds of load per configuration and repetition.
    #[arg(long, short, default_value_t = 5.0)]
    pub duration: f64,
    /// Concurrent connections.
    #[arg(long, short, default_value_t = 8)]
    pub connections: usize,
    /// Repetitions (the table gives medians).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Distinct users the connections log in as.
    #[arg(long, default_value_t = 8)]
    pub users: usize,
}

const PASSWORD: &str = "pw";

struct Backend {
    name: &'static str,
    /// The `[auth]` section (and what else the backend needs).
    config: String,
}

/// The users in every database; the `[auth]` sections that reach them.
fn backends(dir: &Path, pop3d: &Path, users: usize) -> (Vec<Backend>, Servers) {
    let secret = hash(pop3d);
    let passwd: String = (0..users)
        .map(|u| format!("u{u}:{secret}::::::\n"))
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();

    let pg = Postgres::private();
    let db = pg.database();
    let rows: Vec<String> = (0..users)
        .map(|u| format!("('u{u}', '{secret}')"))
        .collect();
    pg.psql(
        &db,
        &format!(
            "INSERT INTO users (login, secret) VALUES {}",
            rows.join(",")
        ),
    );

    let maria = MariaDb::start().expect("mariadbd (Debian: mariadb-server)");
    let url = maria.database_for("postfix", "pop3d", "db-secret");
    let rows: Vec<String> = (0..users)
        .map(|u| {
            format!(
                "('u{u}', '{}', 1)",
                secret.trim_start_matches("{SHA512-CRYPT}")
            )
        })
        .collect();
    maria.sql(&format!(
        "USE postfix; CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, \
         password varchar(255) NOT NULL, active tinyint(1) NOT NULL DEFAULT 1); \
         INSERT INTO mailbox VALUES {}",
        rows.join(",")
    ));
    std::fs::write(dir.join("mysql.secret"), "db-secret\n").unwrap();

    let ldap = Slapd::start(None).expect("slapd (Debian: slapd, ldap-utils)");
    let crypt = secret.replace("{SHA512-CRYPT}", "{CRYPT}");
    let entries: Vec<String> = (0..users)
        .map(|u| {
            format!(
                "dn: uid=u{u},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
                 uid: u{u}\ncn: u{u}\nsn: u{u}\nuidNumber: {n}\ngidNumber: {n}\nhomeDirectory: /nonexistent\n\
                 userPassword: {crypt}\n",
                n = 1000 + u
            )
        })
        .collect();
    ldap.add(&entries.join("\n"));
    std::fs::write(dir.join("ldap.secret"), format!("{LOOKUP_PASSWORD}\n")).unwrap();
    let ldap_section = |auth_bind: bool| {
        format!(
            "[auth]\nbackend = \"ldap\"\n\n[auth.ldap]\nuris = [\"{}\"]\ndn = \"{LOOKUP}\"\n\
             dnpass_file = \"ldap.secret\"\nbase = \"ou=people,{SUFFIX}\"\nuser_attrs = \"\"\n\
             auth_bind = {auth_bind}\n",
            ldap.uri()
        )
    };
    let list = vec![
        Backend {
            name: "passwd file",
            config: "[auth]\npasswd_file = \"passwd\"\n".into(),
        },
        Backend {
            name: "PostgreSQL (pop3d's users table)",
            config: format!(
                "[auth]\nbackend = \"postgres\"\n\n[storage]\nurl = \"{}\"\n",
                pg.url(&db)
            ),
        },
        Backend {
            name: "MariaDB (a Postfixadmin-style table)",
            config: format!(
                "[auth]\nbackend = \"mysql\"\nurl = \"{url}\"\npassword_file = \"mysql.secret\"\n\
                 password_query = \"SELECT username AS user, password FROM mailbox WHERE username = ? AND active = 1\"\n"
            ),
        },
        Backend {
            name: "LDAP, compare mode",
            config: ldap_section(false),
        },
        Backend {
            name: "LDAP, auth_bind",
            config: ldap_section(true),
        },
    ];
    (
        list,
        Servers {
            _pg: pg,
            _maria: maria,
            _ldap: ldap,
        },
    )
}

/// Kept alive while the benchmark runs.
struct Servers {
    _pg: Postgres,
    _maria: MariaDb,
    _ldap: Slapd,
}

/// SHA512-CRYPT of the password, as `pop3d hash-password` makes it.
fn hash(pop3d: &Path) -> String {
    pop3_testkit::run_with_input(
        Command::new(pop3d).args(["hash-password", "--scheme", "SHA512-CRYPT"]),
        PASSWORD.as_bytes(),
    )
    .trim()
    .to_owned()
}

/// One pop3d on `backend`, with or without the cache; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, pop3d: &Path, backend: &Backend, cache: bool) -> Server {
    let port = free_port();
    let cache = if cache { 10_000 } else { 0 };
    // The [auth] section comes last but one; cache keys go into it.
    let auth = backend
        .config
        .replacen("[auth]\n", &format!("[auth]\ncache_size = {cache}\n"), 1);
    let config = format!(
        "preset = \"production\"\n\n[server]\nhostname = \"bench\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:{port}\"\n\n\
         [security]\ntrusted_networks = [\"127.0.0.0/8\"]\nmax_connections_per_ip = 100000\n\
         enable_security_logging = false\n\n\
         [performance]\nmax_concurrent_sessions = 100000\n\n\
         {auth}\n{storage}",
        storage = if auth.contains("[storage]") {
            String::new()
        } else {
            "[storage]\nmaildir = \"mail/%u\"\n".into()
        }
    );
    let config = config.replace("[storage]\nurl", "[storage]\nmaildir = \"mail/%u\"\nurl");
    let path = dir.join("pop3d.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(pop3d)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pop3d starts");
    wait_until(Duration::from_secs(20), "pop3d listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Server { child, port }
}

pub fn run(rt: &tokio::runtime::Runtime, args: &UserdbArgs) {
    let dir = std::env::temp_dir().join(format!("pop3-bench-userdb-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mail")).unwrap();
    let pop3d = std::fs::canonicalize(&args.pop3d).expect("the pop3d binary");
    let (list, _servers) = backends(&dir, &pop3d, args.users);
    // rates[backend][cache] = one figure per repetition
    let mut rates = vec![[Vec::new(), Vec::new()]; list.len()];
    for rep in 0..args.repeats {
        // Each repetition starts one configuration later, so that no
        // configuration always runs first (or right after another).
        for i in 0..list.len() {
            let b = (i + rep) % list.len();
            let backend = &list[b];
            let order = if rep % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for cache in order {
                let server = start(&dir, &pop3d, backend, cache);
                let load = |seconds: f64| RunArgs {
                    mode: Mode::Login,
                    addr: ([127, 0, 0, 1], server.port).into(),
                    connections: args.connections,
                    duration: seconds,
                    tls: false,
                    user: "u{}".into(),
                    password: PASSWORD.into(),
                    probe_user: String::new(),
                    users: args.users,
                    size: 0,
                    csv: false,
                };
                // Warm the pools (and the cache, when on).
                rt.block_on(crate::run(load(0.5)));
                let report = rt.block_on(crate::run(load(args.duration)));
                let rate = report.per_second();
                eprintln!(
                    "rep {rep}: {} {}: {rate:.0} logins/s, {} errors",
                    backend.name,
                    if cache { "cache" } else { "no cache" },
                    report.totals.errors
                );
                rates[b][usize::from(cache)].push(rate);
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let spread = |v: &[f64]| {
        v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min)
    };
    let passwd_cached = median(&rates[0][1]);
    println!(
        "logins/s (USER/PASS, STAT, QUIT; {} connections, {} users, SHA512-CRYPT), medians of {} x {} s:\n",
        args.connections, args.users, args.repeats, args.duration
    );
    println!("| users in | no cache | auth cache | cache / passwd file's cache |");
    println!("|---|---|---|---|");
    for (b, backend) in list.iter().enumerate() {
        let (off, on) = (&rates[b][0], &rates[b][1]);
        println!(
            "| {} | {:.0} (spread {:.0}) | {:.0} (spread {:.0}) | {:.2}x |",
            backend.name,
            median(off),
            spread(off),
            median(on),
            spread(on),
            median(on) / passwd_cached
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

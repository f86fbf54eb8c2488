// SPDX-License-Identifier: AGPL-3.0-only
//! A private PostgreSQL for the tests: Debian's `initdb` and `pg_ctl` on a
//! temporary directory and a free loopback port, run as the `postgres`
//! user when the tests run as root (initdb refuses root). One server per
//! test binary, started at first use; a watchdog stops it and removes its
//! directory when the test process exits. Each test gets its own database,
//! copied from a template that holds pop3d's schema.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::free_port;

pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    next: AtomicU32,
    /// CREATE DATABASE from one template runs one at a time.
    creating: Mutex<()>,
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`):
/// `POP3_TEST_PG_BINDIR` when set, else `pg_config --bindir` when that
/// holds `initdb` (most distributions, Homebrew), else Debian's newest
/// `/usr/lib/postgresql/N/bin`, else wherever `initdb` is on the PATH.
fn bin_dir() -> PathBuf {
    let has_initdb = |p: &Path| p.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("POP3_TEST_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        assert!(
            has_initdb(&dir),
            "POP3_TEST_PG_BINDIR={} has no initdb",
            dir.display()
        );
        return dir;
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| has_initdb(d)) {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| has_initdb(p))
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.pop() {
        return dir;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_initdb(d))
        .expect(
            "PostgreSQL's initdb was not found (pg_config --bindir, /usr/lib/postgresql, PATH); \
             install PostgreSQL (Debian: postgresql) or set POP3_TEST_PG_BINDIR",
        )
}

/// A command run as the postgres user when we are root.
fn as_owner(program: &Path) -> Command {
    if crate::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// The server of this test process.
    pub fn shared() -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(Postgres::start)
    }

    /// A server of the test's own, for tests that stop and start it.
    pub fn private() -> Postgres {
        Postgres::start()
    }

    fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pop3-pg")
            .tempdir()
            .unwrap()
            .keep();
        if crate::is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the database directory failed");
        }
        let data = dir.join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "pop3d", "--no-sync", "-E", "UTF8"])
            .args(["--locale", "C.UTF-8"])
            .output()
            .unwrap();
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let server = Postgres {
            port: free_port(),
            dir,
            bin,
            next: AtomicU32::new(0),
            creating: Mutex::new(()),
        };
        server.pg_ctl_start();
        server.watch(std::process::id());
        server.psql("postgres", "CREATE DATABASE pop3_template");
        let script = pop3::db::migrate::script();
        server.psql("pop3_template", &script);
        server
    }

    /// Start (or start again after `stop`).
    pub fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=400 \
             -c shared_preload_libraries=pg_stat_statements",
            self.port,
            self.dir.display()
        );
        let status = as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pg_ctl start failed; see {}/log",
            self.dir.display()
        );
    }

    /// Stop at once (sessions are cut, as in a crash or a restart).
    pub fn pg_ctl_stop(&self) {
        self.pg_ctl_stop_mode("fast");
    }

    /// Stop in one of pg_ctl's modes: `fast` (sessions rolled back, a
    /// clean shutdown) or `immediate` (every process quits at once, the
    /// next start recovers from the WAL, as after a crash). Commits are
    /// written to the WAL before they are acknowledged (synchronous_commit
    /// is on), so either loses nothing acknowledged; only fsync is off,
    /// which matters to a machine crash, not to a server's.
    pub fn pg_ctl_stop_mode(&self, mode: &str) {
        let status = as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", mode, "stop"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl stop failed");
    }

    /// SIGSTOP (or SIGCONT) the server and all its processes: a database
    /// host gone silent, neither answering nor closing connections.
    pub fn signal_all(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
        let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        pids.push(pid);
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pids:?}");
    }

    /// Stop the server and remove its files once `pid` has exited. The
    /// watchdog runs as this user (the postgres user may not signal us).
    /// It outlives this process on purpose, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn watch(&self, pid: u32) {
        let runuser = if crate::is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {runuser}{ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            ctl = self.bin.join("pg_ctl").display(),
            data = self.dir.join("data").display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the watchdog");
    }

    /// Run SQL with psql; panics with psql's message on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        crate::run_with_input(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "pop3d", "-X", "-q", "-A", "-t"])
                .args(["-v", "ON_ERROR_STOP=1"])
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-d")
                .arg(db),
            sql.as_bytes(),
        )
    }

    /// A new database with pop3d's schema; returns its name.
    pub fn database(&self) -> String {
        let name = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        let _one = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE pop3_template"),
        );
        name
    }

    /// An empty database (no schema), for migration tests.
    pub fn empty_database(&self) -> String {
        let name = format!("e{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://pop3d@127.0.0.1:{}/{db}", self.port)
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! What the tests of `pop3` and `pop3d` share, as a dev-only crate (never
//! published): a private PostgreSQL started on first use ([`postgres`]), a
//! private MariaDB ([`mariadb`]) and OpenLDAP ([`slapd`]),
//! free loopback ports, waits for a condition instead of fixed sleeps, and
//! skips that cannot hide in a green CI run.

pub mod mariadb;
pub mod postgres;
pub mod slapd;

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use mariadb::MariaDb;
pub use postgres::Postgres;
pub use slapd::Slapd;

/// Poll `check` until it gives a value, for at most `within` (then the
/// test fails naming `what`): a slow machine makes a test slower, never
/// red, and a fast one does not wait for nothing.
pub fn wait_for<T>(within: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_for(within, check).unwrap_or_else(|| panic!("{what} within {within:?}"))
}

/// Poll `check` until it gives a value, for at most `within`; `None` when
/// it never did (for a caller that goes on either way, as an MTA gives up
/// on a delivery and tries the next).
pub fn poll_for<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(seen) = check() {
            return Some(seen);
        }
        if started.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_for`] a condition.
pub fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    wait_for(within, what, || ready().then_some(()))
}

/// A test that cannot run here says why and passes; under `CI=true`
/// (where `.ci/run` installed everything and runs as root) it fails
/// instead, so a skip never hides in a green run.
pub fn skip(why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "cannot run under CI=true: {why}"
    );
    eprintln!("SKIP: {why}");
}

/// Whether the tests run as root (mounting a tmpfs, running servers as
/// their own users).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A port free for a server to listen on: below the kernel's ephemeral
/// range (32768 and up), so that the thousands of client connections the
/// tests make cannot take it between this check and the server's bind; each
/// test process walks its own stretch, and no port is handed out twice.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<std::sync::atomic::AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        std::sync::atomic::AtomicU32::new(20_000 + (std::process::id() % 40) * 300)
    });
    loop {
        let port = 20_000 + (next.fetch_add(1, Ordering::Relaxed) - 20_000) % 12_000;
        let port = port as u16;
        let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
        if free("127.0.0.1") && free("::1") {
            return port;
        }
    }
}

/// A private Redis on a loopback port (`redis-server`, nothing saved),
/// killed when dropped.
pub struct Redis {
    child: std::process::Child,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// With more of redis-server's options (`--requirepass`).
    pub fn start_with(port: u16, options: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(options)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (Debian: redis-server)");
        wait_listening(port, "redis-server listening");
        Redis { child, port }
    }

    /// kill -9, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server this crate started: SIGTERM, then wait for it (a clean stop,
/// as an operator's).
pub(crate) fn terminate(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
}

/// Kill a server at once (a test is over) and remove its directory.
pub(crate) fn kill_and_remove(child: &mut Option<std::process::Child>, dir: &std::path::Path) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Run `command` with `input` on its standard input; its standard output.
/// Panics, with what it printed on standard error, if it fails.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> String {
    use std::io::Write;
    let what = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Wait until something listens on the loopback `port`.
pub(crate) fn wait_listening(port: u16, what: &str) {
    wait_until(Duration::from_secs(30), what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A directory of its own for a server this crate starts, when `program`
/// runs here (`args` asks its version); None after [`skip`] (naming
/// `package`) otherwise.
pub(crate) fn server_dir(
    kind: &str,
    program: &str,
    args: &[&str],
    package: &str,
) -> Option<std::path::PathBuf> {
    let installed = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !installed {
        skip(&format!("{program} is not installed (Debian: {package})"));
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "pop3-{kind}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

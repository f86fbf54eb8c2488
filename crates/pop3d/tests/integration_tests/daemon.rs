// SPDX-License-Identifier: AGPL-3.0-only
//! The daemon under signals (SIGHUP reload, SIGTERM shutdown), its logs,
//! and `pop3d deliver` as an MTA runs it.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

fn wait_exit(child: &mut std::process::Child, within: Duration) -> i32 {
    wait_for(within, "pop3d exits", || {
        child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1))
    })
}

/// A child's stderr, read as it is written, so a test can wait for a line.
struct Log {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Log {
    fn follow(child: &mut std::process::Child) -> Log {
        let mut err = child.stderr.take().unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Log { text, reader }
    }

    fn wait_for(&self, what: &str) {
        wait_until(Duration::from_secs(10), what, || {
            self.text.lock().unwrap().contains(what)
        });
    }

    /// Everything, once the process has closed its stderr.
    fn finish(self) -> String {
        self.reader.join().unwrap();
        std::sync::Arc::try_unwrap(self.text)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Poll until a fresh connection's greeting is `want`.
fn wait_for_greeting(port: u16, want: &str) {
    wait_until(Duration::from_secs(10), want, || {
        Client::connect(port).greeting == want
    });
}

#[test]
fn sighup_reloads_and_a_bad_file_keeps_the_old_config() {
    let s = Setup::new(&[b"Subject: 1\n\none\n"]);
    let mut server = s.start();
    let pid = server.child.id();
    let mut old = Client::login(s.plain, "alice", "secret");
    let text = read(&s.config);
    std::fs::write(
        &s.config,
        text.replace("[server]\n", "[server]\ngreeting = \"after reload\"\n"),
    )
    .unwrap();
    signal(pid, "HUP");
    wait_for_greeting(s.plain, "+OK after reload\r\n");
    // The session from before goes on.
    assert_eq!(old.cmd("STAT"), "+OK 1 19\r\n");
    // A broken file is refused (once the log says so, the reload has run);
    // the running configuration stays.
    let log = Log::follow(&mut server.child);
    std::fs::write(&s.config, "[server]\ngreeting = 42\n").unwrap();
    signal(pid, "HUP");
    log.wait_for("reload refused");
    assert_eq!(Client::connect(s.plain).greeting, "+OK after reload\r\n");
    signal(pid, "TERM");
    assert_eq!(wait_exit(&mut server.child, Duration::from_secs(10)), 0);
    let log = log.finish();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("reload refused") && log.contains("server.greeting"),
        "{log}"
    );
}

#[test]
fn sigterm_closes_idle_sessions_and_deletes_nothing() {
    let s = Setup::new(&[b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n"]);
    let mut server = s.start();
    let mut c = Client::login(s.plain, "alice", "secret");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let mut idle = Client::connect(s.plain);
    signal(server.child.id(), "TERM");
    assert_eq!(
        c.line(),
        "-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
    );
    assert_eq!(
        idle.line(),
        "-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
    );
    assert_eq!(wait_exit(&mut server.child, Duration::from_secs(10)), 0);
    assert_eq!(
        s.maildir_count(),
        2,
        "a session in TRANSACTION removes nothing on shutdown"
    );
}

#[test]
fn json_logs_end_each_session_with_a_summary() {
    let s = Setup::new(&[b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n"]);
    let mut child = pop3d()
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&s.config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(s.plain);
    let mut c = Client::login(s.plain, "alice", "secret");
    c.cmd("RETR 1");
    while c.line() != ".\r\n" {}
    c.cmd("DELE 2");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let log = Log::follow(&mut child);
    log.wait_for("\"session end\"");
    signal(child.id(), "TERM");
    wait_exit(&mut child, Duration::from_secs(10));
    let log = log.finish();
    let end = log
        .lines()
        .find(|l| l.contains("\"session end\"") && l.contains("alice"))
        .unwrap_or_else(|| panic!("no session-end line in\n{log}"));
    let v: serde_json::Value = serde_json::from_str(end).unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(v["retrieved"], 1);
    assert_eq!(v["deleted"], 1);
    assert!(v["bytes"].as_u64().unwrap() > 19);
    assert!(v["duration_ms"].is_u64());
    assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!log.contains("secret"), "no password in the log");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
    }
}

fn deliver(s: &Setup, user: &str, message: &[u8]) -> (i32, String) {
    let mut child = pop3d()
        .args(["deliver", "--config"])
        .arg(&s.config)
        .args(["--user", user])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(message);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn deliver_stores_atomically_with_mta_exit_codes() {
    let s = Setup::new(&[]);
    let (code, err) = deliver(&s, "alice", b"Subject: d\n\ndelivered\n");
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = std::fs::read_dir(s.path("mail/alice/new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(",S=22,W=25"), "{}", names[0]);
    let _server = s.start();
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.cmd("LIST 1"), "+OK 1 25\r\n");
    drop(c);

    let (code, err) = deliver(&s, "nobody", b"x\n");
    assert_eq!(code, 67, "{err}");
    assert!(err.contains("unknown user"), "{err}");

    // Over the size limit: refused for good (77), nothing left behind.
    let text = read(&s.config);
    std::fs::write(
        &s.config,
        text.replace("[server]\n", "[server]\nmax_message_size = 10\n"),
    )
    .unwrap();
    let (code, err) = deliver(&s, "alice", b"Subject: far too long\n");
    assert_eq!(code, 77, "{err}");
    std::fs::write(&s.config, &text).unwrap();

    // The Maildir cannot be written: a temporary failure (75), the MTA retries.
    std::fs::write(
        &s.config,
        text.replace("maildir = \"mail/%n\"", "maildir = \"/dev/null/%n\""),
    )
    .unwrap();
    let (code, err) = deliver(&s, "alice", b"x\n");
    assert_eq!(code, 75, "{err}");
    std::fs::write(&s.config, &text).unwrap();

    std::fs::write(&s.config, "[server\n").unwrap();
    let (code, _) = deliver(&s, "alice", b"x\n");
    assert_eq!(code, 78);
    assert_eq!(s.maildir_count(), 1);
    assert_eq!(
        std::fs::read_dir(s.path("mail/alice/tmp")).unwrap().count(),
        0
    );
}

// SPDX-License-Identifier: AGPL-3.0-only
//! The security review's attacks on the `pop3d` processes: a maildrop lock
//! held by an administration command while `serve` cannot see other
//! processes (a PID namespace, as systemd's `ProtectProc=invisible`
//! hides them), and `import-pop3` against a hostile old server that sends
//! an endless line or terminal escape sequences.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

/// How a fake old POP3 server answers RETR.
enum Retr {
    /// After the test says go (`release`), a small message.
    Held(mpsc::Receiver<()>),
    /// `+OK` and then `x` without end, until the client goes away.
    Endless,
}

/// A fake old POP3 server on a free loopback port, plaintext, without
/// CAPA (so `--allow-plaintext` takes it). It tells `seen` when RETR
/// arrives. `pass_reply` is its answer to PASS.
fn fake_server(retr: Retr, pass_reply: &'static [u8], seen: mpsc::Sender<()>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((conn, _)) = listener.accept() else {
            return;
        };
        let mut out = conn.try_clone().unwrap();
        let mut lines = BufReader::new(conn);
        let _ = out.write_all(b"+OK fake old server\r\n");
        let mut retr = Some(retr);
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "CAPA" => b"-ERR no CAPA here\r\n",
                "USER" => b"+OK\r\n",
                "PASS" => pass_reply,
                "UIDL" => b"+OK\r\n1 old-1\r\n.\r\n",
                "LIST" => b"+OK\r\n1 40\r\n.\r\n",
                "RETR" => {
                    let _ = seen.send(());
                    match retr.take() {
                        Some(Retr::Held(go)) => {
                            let _ = go.recv();
                            b"+OK\r\nSubject: from the old server\r\n\r\nold\r\n.\r\n"
                        }
                        Some(Retr::Endless) | None => {
                            let _ = out.write_all(b"+OK here it comes\r\n");
                            let chunk = [b'x'; 64 * 1024];
                            while out.write_all(&chunk).is_ok() {}
                            return;
                        }
                    }
                }
                "QUIT" => {
                    let _ = out.write_all(b"+OK bye\r\n");
                    return;
                }
                _ => b"-ERR unknown\r\n",
            };
            if out.write_all(answer).is_err() {
                return;
            }
        }
    });
    port
}

fn import_command(s: &Setup, port: u16) -> Command {
    std::fs::write(s.path("old.pw"), "old-password\n").unwrap();
    let mut cmd = pop3d();
    cmd.args(["import-pop3", "--config"])
        .arg(&s.config)
        .args(["--from", &format!("pop3://127.0.0.1:{port}")])
        .args(["--user", "alice", "--allow-plaintext", "--password-file"])
        .arg(s.path("old.pw"));
    cmd
}

/// The lock is judged by a liveness file's flock, which a `serve` in its
/// own PID namespace can test although it cannot see the holder in /proc.
#[test]
fn serve_in_another_pid_namespace_never_takes_a_lock_an_import_holds() {
    if !is_root() || !require("unshare") {
        skip("needs root and unshare(1) for a PID namespace");
        return;
    }
    let s = Setup::new(&[b"Subject: here\r\n\r\nalready\r\n"]);
    let text = read(&s.config).replace(
        "maildir = \"mail/%n\"",
        "maildir = \"mail/%n\"\nlock_dir = \"run\"",
    );
    std::fs::write(&s.config, text).unwrap();
    // serve cannot see the test's processes (nor import-pop3's).
    let child = Command::new(tool_path("unshare").unwrap())
        // --kill-child: pop3d (the namespace's PID 1) dies with unshare.
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_pop3d"))
        .args(["serve", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _serve = Running { child };
    wait_for_port(s.plain);
    let (go, held) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    let port = fake_server(Retr::Held(held), b"+OK logged in\r\n", seen_tx);
    let import = import_command(&s, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // RETR arrived: import-pop3 holds alice's maildrop now.
    seen.recv_timeout(Duration::from_secs(20)).unwrap();
    for _ in 0..3 {
        let mut c = Client::connect(s.plain);
        c.cmd("USER alice");
        let r = c.cmd("PASS secret");
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    }
    go.send(()).unwrap();
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Released: serve opens it, with the imported message beside the old.
    wait_until(Duration::from_secs(5), "the lock released", || {
        let mut c = Client::connect(s.plain);
        c.cmd("USER alice");
        let r = c.cmd("PASS secret");
        assert!(
            r.starts_with("+OK") || r.starts_with("-ERR [IN-USE]"),
            "{r}"
        );
        r.starts_with("+OK alice's maildrop has 2 messages")
    });
}

/// The peak resident memory of a running process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[test]
fn an_endless_message_stops_the_import_at_its_cap_in_bounded_memory() {
    let s = Setup::new(&[]);
    let (seen_tx, _seen) = mpsc::channel();
    let port = fake_server(Retr::Endless, b"+OK logged in\r\n", seen_tx);
    let mut import = import_command(&s, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = import.id();
    // VmHWM is the high-water mark: sampling it until the end finds the
    // peak however seldom it is read.
    let mut peak = 0;
    wait_until(Duration::from_secs(30), "the import ended", || {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        import.try_wait().unwrap().is_some()
    });
    let out = import.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{text}");
    // LIST said 40 octets: twice that and 64 KiB of slack is the cap.
    assert!(text.contains("exceeds 65616 octets"), "{text}");
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
    // Nothing half-written was kept.
    assert_eq!(s.maildir_count(), 0);
    assert_eq!(
        std::fs::read_dir(s.path("mail/alice/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn an_old_server_cannot_write_to_the_operators_terminal() {
    let s = Setup::new(&[]);
    let (seen_tx, _seen) = mpsc::channel();
    let port = fake_server(
        Retr::Endless,
        b"-ERR \x1b]0;owned\x07\x1b[2J go away\r\n",
        seen_tx,
    );
    let out = import_command(&s, port).output().unwrap();
    assert_eq!(out.status.code(), Some(75));
    let all = [out.stdout, out.stderr].concat();
    assert!(!all.contains(&0x1b), "{}", String::from_utf8_lossy(&all));
    assert!(!all.contains(&0x07));
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("go away") && text.contains("\\u{1b}"),
        "{text}"
    );
}

/// A stream that never ends is never read into memory either: the
/// connection test of the fake server itself (the cap is the client's).
#[test]
fn the_fake_server_really_sends_without_end() {
    let (seen_tx, _seen) = mpsc::channel();
    let port = fake_server(Retr::Endless, b"+OK\r\n", seen_tx);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"USER a\r\nPASS b\r\nRETR 1\r\n").unwrap();
    let mut got = 0usize;
    let mut buf = [0u8; 64 * 1024];
    while got < 8 << 20 {
        got += std::io::Read::read(&mut c, &mut buf).unwrap();
    }
}

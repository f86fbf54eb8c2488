// SPDX-License-Identifier: AGPL-3.0-only
//! A private MariaDB server (Debian's `mariadb-server`): a data directory
//! made by `mariadb-install-db` in a temporary directory, `mariadbd` on a
//! free loopback port (and a socket beside the data), stopped when
//! dropped. Administered as root over the socket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::free_port;

pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Serve TLS with `cert.pem` and `key.pem` beside the data.
    tls: bool,
}

/// A MariaDB program told to run as the `mysql` user when the tests run
/// as root (mariadbd refuses root; it switches users itself, so the child
/// is the server and a kill reaches it).
fn as_mysql(program: &str) -> Command {
    let mut c = Command::new(program);
    c.arg("--no-defaults");
    if crate::is_root() {
        c.arg("--user=mysql");
    }
    c
}

impl MariaDb {
    /// A fresh server; None (after [`skip`]) where MariaDB is not
    /// installed.
    pub fn start() -> Option<MariaDb> {
        MariaDb::start_with(None)
    }

    /// A fresh server that offers TLS with this PEM certificate and key.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<MariaDb> {
        MariaDb::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Option<MariaDb> {
        let dir = crate::server_dir("mariadb", "mariadbd", &["--version"], "mariadb-server")?;
        // A temporary directory of its own: servers installing side by
        // side in one /tmp have been seen to remove each other's
        // temporary tables.
        std::fs::create_dir(dir.join("tmp")).unwrap();
        if crate::is_root() {
            let ok = Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown mysql {}", dir.display());
        }
        let out = as_mysql("mariadb-install-db")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db runs");
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some((cert, key)) = tls {
            std::fs::write(dir.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
        }
        let mut server = MariaDb {
            port: free_port(),
            dir,
            child: None,
            tls: tls.is_some(),
        };
        server.start_again();
        Some(server)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Start (again, after [`MariaDb::stop`]); back once it answers.
    pub fn start_again(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        let mut mariadbd = as_mysql("mariadbd");
        if self.tls {
            mariadbd
                .arg(format!(
                    "--ssl-cert={}",
                    self.dir.join("cert.pem").display()
                ))
                .arg(format!("--ssl-key={}", self.dir.join("key.pem").display()));
        }
        let child = mariadbd
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--skip-name-resolve",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        crate::wait_listening(self.port, "mariadbd listening");
    }

    /// Stop it cleanly (SIGTERM) and wait.
    pub fn stop(&mut self) {
        crate::terminate(&mut self.child);
    }

    /// Run SQL as root over the socket; the rows, tab-separated.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .expect("the mariadb client runs (Debian: mariadb-client)");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A database and an account that may read it, from 127.0.0.1 with
    /// `password`; its URL (without the password) for `[auth] url`.
    pub fn database_for(&self, db: &str, user: &str, password: &str) -> String {
        self.sql(&format!(
            "CREATE DATABASE {db}; \
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             GRANT SELECT ON {db}.* TO '{user}'@'127.0.0.1'"
        ));
        format!("mysql://{user}@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        crate::kill_and_remove(&mut self.child, &self.dir);
    }
}

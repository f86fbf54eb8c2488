// SPDX-License-Identifier: AGPL-3.0-only
//! What the campaign runs against, all on loopback: a private PostgreSQL,
//! Redis, and the `pop3d` nodes, each reaching the database through its
//! own fault proxy.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use pop3_chaos::proxy::{Fault, Proxy};
use pop3_testkit::{Postgres, Redis, free_port, poll_for};

pub const USERS: usize = 3;
pub const NODES: usize = 3;
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Short, so that a client can stall past it often.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Node {
    config: PathBuf,
    pub pop3: u16,
    pub lmtp: u16,
    pub proxy: Proxy,
    child: Mutex<Option<Child>>,
}

impl Node {
    /// Start the node; back once it accepts POP3 connections (or after
    /// 20 s, when what follows finds it down).
    pub fn start(&self, pop3d: &Path) {
        let child = Command::new(pop3d)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pop3d starts");
        *self.child.lock().unwrap() = Some(child);
        poll_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", self.pop3)).ok()
        });
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Send `sig` and wait for the process to end.
    pub fn stop(&self, sig: &str) {
        self.signal(sig);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.wait();
        }
    }
}

pub struct Cluster {
    pub pg: Postgres,
    pub redis: Mutex<Redis>,
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl Cluster {
    /// Everything started; users `u0`.. with password `secret`.
    pub fn start(pop3d: &Path) -> Cluster {
        let dir = std::env::temp_dir().join(format!("pop3-chaos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = Postgres::private();
        let db = pg.database();
        let redis = Redis::start(free_port());
        let passwd: String = (0..USERS)
            .map(|u| format!("u{u}:{{PLAIN}}secret::::\n"))
            .collect();
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        let nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                let proxy = Proxy::start(([127, 0, 0, 1], pg.port).into()).unwrap();
                let url = pg
                    .url(&db)
                    .replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
                let (pop3, lmtp) = (free_port(), free_port());
                let config = dir.join(format!("node{i}.toml"));
                std::fs::write(&config, node_config(i, pop3, lmtp, redis.port, &url)).unwrap();
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
            n.start(pop3d);
        }
        Cluster {
            pg,
            redis: Mutex::new(redis),
            nodes,
            dir,
        }
    }

    pub fn heal(&self) {
        for n in &self.nodes {
            n.proxy.set(Fault::Pass);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop("KILL");
        }
        self.redis.lock().unwrap().kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node_config(i: usize, pop3: u16, lmtp: u16, redis: u16, url: &str) -> String {
    let (ttl, timeout) = (LEASE_TTL.as_secs(), SESSION_TIMEOUT.as_secs());
    format!(
        "[server]\nhostname = \"node{i}.chaos\"\nnode_name = \"node{i}\"\n\
         session_timeout = \"{timeout}s\"\ndrain_delay = \"0s\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:{pop3}\"\ntls = \"none\"\n\n\
         [[lmtp]]\nbind = \"127.0.0.1:{lmtp}\"\n\n\
         [security]\nauth_failure_delay = \"0s\"\nenable_security_logging = false\n\
         shared_state = \"redis://127.0.0.1:{redis}/\"\n\n\
         [storage]\nbackend = \"postgres\"\nurl = \"{url}\"\nlease_ttl = \"{ttl}s\"\n\n\
         [auth]\npasswd_file = \"passwd\"\n"
    )
}

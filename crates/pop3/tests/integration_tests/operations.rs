// SPDX-License-Identifier: AGPL-3.0-only
//! Operating the server: metrics, health, reload, graceful shutdown and
//! embedding with a host's own store and users.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::common::*;
use pop3::Pop3SessionManager;
use pop3::auth::StaticUsers;
use pop3::config::{MetricsConfig, Pop3Config, TlsMode};
use pop3::store::MemoryStore;
use tokio::io::AsyncReadExt;

async fn with_metrics(tweak: impl FnOnce(&mut Pop3Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.metrics = Some(MetricsConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
        });
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let srv = with_metrics(|_| {}).await;
    srv.deliver("alice", 1, b"Subject: m\n\nbody\n");
    let addr = srv.metrics.unwrap();
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    c.cmd("PASS wrong").await;
    c.cmd("USER alice").await;
    c.cmd("PASS secret").await;
    c.multi("RETR 1").await;
    c.cmd("BOGUS").await;
    let mut other = srv.connect().await;
    other.cmd("USER alice").await;
    assert!(other.cmd("PASS secret").await.starts_with("-ERR [IN-USE]"));
    // AUTH counts by how the exchange ended: a bad password and a
    // cancellation are failures.
    let mut sasl = srv.connect().await;
    let bad = base64::engine::general_purpose::STANDARD.encode("\0bob\0nope");
    assert!(
        sasl.cmd(&format!("AUTH PLAIN {bad}"))
            .await
            .starts_with("-ERR")
    );
    assert_eq!(sasl.cmd("AUTH PLAIN").await, "+ \r\n");
    assert!(sasl.cmd("*").await.starts_with("-ERR"));
    let (status, m) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let plain = format!("listener=\"{}\",tls=\"none\"", srv.plain);
    assert_eq!(sample(&m, &format!("pop3_sessions_active{{{plain}}}")), 3.0);
    assert_eq!(sample(&m, &format!("pop3_sessions_total{{{plain}}}")), 3.0);
    assert_eq!(
        sample(&m, "pop3_logins_total{mechanism=\"USER\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "pop3_logins_total{mechanism=\"USER\",result=\"fail\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "pop3_commands_total{command=\"RETR\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "pop3_commands_total{command=\"unknown\",result=\"err\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "pop3_commands_total{command=\"AUTH\",result=\"err\"}"),
        2.0
    );
    assert!(!m.contains("pop3_commands_total{command=\"AUTH\",result=\"ok\"} 1"));
    assert_eq!(sample(&m, "pop3_lock_conflicts_total"), 1.0);
    assert_eq!(sample(&m, "pop3_retr_duration_seconds_count"), 1.0);
    assert!(sample(&m, "pop3_login_duration_seconds_count") >= 3.0);
    assert!(sample(&m, "pop3_sent_bytes_total") > 100.0);
    c.cmd("QUIT").await;
    c.until_closed().await;
    drop(other);
    drop(sasl);
    wait_until(Duration::from_secs(10), "every session ended", || {
        srv.manager.limits().active() == 0
    })
    .await;
    let (_, m) = http_get(addr, "/metrics").await;
    assert_eq!(sample(&m, &format!("pop3_sessions_active{{{plain}}}")), 0.0);
}

#[tokio::test]
async fn grafana_dashboard_plots_only_exported_metrics() {
    let srv = with_metrics(|_| {}).await;
    let (_, exported) = http_get(srv.metrics.unwrap(), "/metrics").await;
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../contrib/grafana-pop3d.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" {
                        out.push(v.as_str().unwrap_or_default().to_owned());
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard plots something: {exprs:?}");
    let mut names = Vec::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("pop3_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    for name in names {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "dashboard plots {name}, which /metrics does not export"
        );
    }
}

#[tokio::test]
async fn health_and_readiness_say_why() {
    let srv = with_metrics(|_| {}).await;
    let addr = srv.metrics.unwrap();
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    // The passwd file disappears: not ready, with the reason.
    std::fs::rename(
        srv.dir.path().join("passwd"),
        srv.dir.path().join("passwd.gone"),
    )
    .unwrap();
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("user database") && body.contains("passwd"),
        "{body}"
    );

    // A mail root that does not exist.
    let srv = with_metrics(|c| c.storage.maildir = "/nonexistent-mail-root/%d/%n".into()).await;
    let (status, body) = http_get(srv.metrics.unwrap(), "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("mail store: mail root /nonexistent-mail-root/"),
        "{body}"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_deletes_nothing() {
    let srv = TestServer::start().await;
    srv.deliver("alice", 1, b"Subject: a\n\n1\n");
    srv.deliver("alice", 2, b"Subject: b\n\n2\n");
    let mut c = srv.login("alice", "secret").await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    let mut waiting = srv.connect().await;
    srv.manager.shutdown();
    assert_eq!(
        c.until_closed().await,
        b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
    );
    assert_eq!(
        waiting.until_closed().await,
        b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
    );
    assert_eq!(
        std::fs::read_dir(srv.maildir("alice").join("new"))
            .unwrap()
            .count(),
        2
    );
    // The listener stopped accepting.
    wait_until(Duration::from_secs(10), "the listener closed", || {
        std::net::TcpStream::connect(srv.plain).is_err()
    })
    .await;
}

#[tokio::test]
async fn reload_applies_to_new_sessions_only() {
    let srv = TestServer::start().await;
    srv.deliver("alice", 1, b"Subject: a\n\n1\n");
    let mut old = srv.login("alice", "secret").await;
    let mut config = (*srv.manager.services().config).clone();
    config.server.greeting = "reloaded".into();
    let passwd2 = srv.dir.path().join("passwd2");
    std::fs::write(
        &passwd2,
        format!("zed:{{PLAIN}}z::::{}/zed\n", srv.dir.path().display()),
    )
    .unwrap();
    config.auth.passwd_file = passwd2;
    srv.manager.reload(config.clone()).unwrap();
    // The running session goes on with what it had.
    assert!(old.cmd("STAT").await.starts_with("+OK 1 "));
    assert_eq!(old.multi("RETR 1").await.1, b"Subject: a\r\n\r\n1\r\n.\r\n");
    let mut new = srv.connect().await;
    assert_eq!(new.greeting, "+OK reloaded\r\n");
    new.cmd("USER zed").await;
    assert!(new.cmd("PASS z").await.starts_with("+OK zed's maildrop"));
    // A broken configuration is refused and the last good one stays.
    config.auth.passwd_file = srv.dir.path().join("missing");
    config.server.greeting = "broken".into();
    assert!(srv.manager.reload(config).is_err());
    assert_eq!(srv.connect().await.greeting, "+OK reloaded\r\n");
}

#[tokio::test]
async fn embedding_with_a_host_store_and_user_database() {
    let users = StaticUsers::new([StaticUsers::user("carol", "{PLAIN}wonderland").unwrap()]);
    let store = MemoryStore::new();
    store.add("carol", "Subject: one\r\n\r\nfirst\r\n");
    store.add("carol", "Subject: two\n\nsecond\n");
    let manager = Arc::new(
        Pop3SessionManager::new(
            Pop3Config::default(),
            Arc::new(users),
            Arc::new(store.clone()),
        )
        .unwrap()
        .with_security_config(pop3::config::SecurityConfig {
            max_auth_attempts: 1,
            // The test's clients come from loopback.
            block_loopback: true,
            auth_failure_delay: Duration::ZERO,
            ..Default::default()
        })
        .unwrap(),
    );
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let serve = |m: Arc<Pop3SessionManager>| {
        let (client, server) = tokio::io::duplex(8192);
        tokio::spawn(async move { m.serve(server, peer, TlsMode::None).await });
        client
    };
    let mut c = Client::over(serve(manager.clone())).await;
    c.cmd("USER carol").await;
    assert!(
        c.cmd("PASS wonderland")
            .await
            .starts_with("+OK carol's maildrop has 2 messages")
    );
    assert_eq!(lines(&c.multi("UIDL").await.1), vec!["1 mem1", "2 mem2"]);
    assert_eq!(
        c.multi("RETR 2").await.1,
        b"Subject: two\r\n\r\nsecond\r\n.\r\n"
    );
    // One session per maildrop here too.
    let mut second = Client::over(serve(manager.clone())).await;
    second.cmd("USER carol").await;
    assert!(
        second
            .cmd("PASS wonderland")
            .await
            .starts_with("-ERR [IN-USE]")
    );
    c.cmd("DELE 1").await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(store.count("carol"), 1);
    // A reload keeps the host's user database and store: the passwd file
    // the configuration names (it does not exist) is never read.
    let mut reloaded = manager.services().config.as_ref().clone();
    reloaded.auth.passwd_file = "/nonexistent/passwd".into();
    reloaded.server.greeting = "after reload".into();
    manager.reload(reloaded).unwrap();
    let mut c = Client::over(serve(manager.clone())).await;
    assert_eq!(c.greeting, "+OK after reload\r\n");
    c.cmd("USER carol").await;
    assert!(c.cmd("PASS wonderland").await.starts_with("+OK"));
    assert_eq!(c.cmd("STAT").await, "+OK 1 24\r\n", "the host's store");
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    // with_security_config took effect: one failure blocks the address.
    let mut c = Client::over(serve(manager.clone())).await;
    c.cmd("USER carol").await;
    assert_eq!(
        c.cmd("PASS nope").await,
        "-ERR [SYS/TEMP] Too many failures from your address, try again later\r\n"
    );
    assert!(manager.guard().blocked(peer.ip()).is_some());
}

/// Backends built from the configuration: a reload reads the passwd file
/// again and keeps the store (its locks, its cache) while nothing it was
/// built from changed.
#[tokio::test]
async fn a_reload_keeps_an_unchanged_store() {
    let srv = TestServer::start().await;
    let manager = &srv.manager;
    let before = manager.services().store.clone();
    let mut config = manager.services().config.as_ref().clone();
    config.server.greeting = "reloaded".into();
    manager.reload(config.clone()).unwrap();
    assert!(Arc::ptr_eq(&before, &manager.services().store));
    config.storage.maildir = "%h/Other".into();
    manager.reload(config).unwrap();
    assert!(!Arc::ptr_eq(&before, &manager.services().store));
}

/// docs/configuration.md names every key the server accepts, nested
/// sections such as `[auth.oauth]` included.
#[test]
fn configuration_reference_covers_every_key() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    let mut config = Pop3Config::default();
    config.tls = Some(pop3::config::TlsConfig {
        cert: "c".into(),
        key: "k".into(),
        client_ca_file: Some("ca".into()),
    });
    config.metrics = Some(pop3::config::MetricsConfig {
        bind: "127.0.0.1:9110".parse().unwrap(),
    });
    config.lmtp = vec![pop3::config::LmtpConfig {
        bind: Some("127.0.0.1:2424".parse().unwrap()),
        path: Some("lmtp.sock".into()),
        max_connections: 32,
    }];
    config.server.node_name = Some("n".into());
    config.storage.url = Some("postgres://u@h/d".into());
    config.storage.password_file = Some("p".into());
    config.storage.ca_file = Some("ca".into());
    config.auth.password_query = Some("SELECT password FROM t WHERE u = $1".into());
    config.auth.realm = Some("r".into());
    config.auth.anonymous_user = Some("a".into());
    config.auth.secret_key_file = Some("k".into());
    config.security.shared_state = Some("redis://h:1".into());
    config.security.shared_state_password_file = Some("rp".into());
    config.auth.oauth = Some(pop3::config::OAuthConfig {
        issuer: Some("i".into()),
        audience: Some("a".into()),
        jwks_file: Some("j".into()),
        public_key_file: Some("p".into()),
        hmac_secret_file: Some("h".into()),
        introspection_url: Some("http://x/".into()),
        introspection_client_id: Some("c".into()),
        introspection_client_secret_file: Some("s".into()),
        introspection_ca_file: Some("ca".into()),
        ..Default::default()
    });
    config.auth.gssapi = Some(pop3::config::GssapiConfig {
        realm: Some("R".into()),
        ..Default::default()
    });
    let table: toml::Table = toml::from_str(&config.to_toml()).unwrap();
    let section_of = |heading: &str| {
        let at = docs
            .find(heading)
            .unwrap_or_else(|| panic!("no heading {heading}"));
        let part = &docs[at..];
        part[..part[3..].find("\n## ").map_or(part.len(), |i| i + 3)].to_owned()
    };
    let mut count = 0;
    let mut check = |name: &str, heading: &str, keys: Vec<&String>| {
        let part = section_of(heading);
        for key in keys {
            assert!(
                part.contains(&format!("| `{key}` |")),
                "docs/configuration.md lacks {name}.{key}"
            );
            count += 1;
        }
    };
    for (section, value) in &table {
        match value {
            toml::Value::Table(t) => {
                check(
                    section,
                    &format!("## `[{section}]`"),
                    t.iter()
                        .filter(|(_, v)| !v.is_table())
                        .map(|(k, _)| k)
                        .collect(),
                );
                for (sub, v) in t.iter().filter(|(_, v)| v.is_table()) {
                    let inner = v.as_table().unwrap();
                    check(
                        &format!("{section}.{sub}"),
                        &format!("## `[{section}.{sub}]`"),
                        inner.keys().collect(),
                    );
                }
            }
            toml::Value::Array(a) => check(
                section,
                &format!("## `[[{section}]]`"),
                a.iter()
                    .filter_map(|v| v.as_table())
                    .flat_map(|t| t.keys())
                    .collect(),
            ),
            _ => check(section, "## Top level", vec![section]),
        }
    }
    assert!(count > 60, "{count} keys checked");
}

/// A store that counts how maildrops end, around a `MemoryStore`.
struct Recording {
    inner: MemoryStore,
    released: Arc<std::sync::atomic::AtomicUsize>,
    committed: Arc<std::sync::atomic::AtomicUsize>,
}

struct RecordingDrop {
    inner: Box<dyn pop3::store::Maildrop>,
    released: Arc<std::sync::atomic::AtomicUsize>,
    committed: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl pop3::store::MailStore for Recording {
    async fn open(
        &self,
        user: &pop3::auth::UserRecord,
    ) -> Result<Box<dyn pop3::store::Maildrop>, pop3::store::StoreError> {
        Ok(Box::new(RecordingDrop {
            inner: self.inner.open(user).await?,
            released: self.released.clone(),
            committed: self.committed.clone(),
        }))
    }

    async fn deliver(
        &self,
        user: &pop3::auth::UserRecord,
        message: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> Result<u64, pop3::store::StoreError> {
        self.inner.deliver(user, message).await
    }

    async fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl pop3::store::Maildrop for RecordingDrop {
    fn messages(&self) -> &[pop3::store::MessageInfo] {
        self.inner.messages()
    }

    async fn open_message(
        &self,
        index: usize,
    ) -> Result<pop3::store::MessageReader, pop3::store::StoreError> {
        self.inner.open_message(index).await
    }

    async fn commit(
        self: Box<Self>,
        changes: pop3::store::Changes,
    ) -> Result<pop3::store::CommitReport, pop3::store::StoreError> {
        self.committed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.commit(changes).await
    }

    async fn release(self: Box<Self>) {
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.release().await
    }
}

/// A session that ends without QUIT lets its maildrop go through the
/// store's awaited release step (a database lease cannot be dropped from
/// `Drop`); one that QUITs commits instead.
#[tokio::test]
async fn sessions_without_quit_release_the_maildrop_explicitly() {
    use std::sync::atomic::Ordering::SeqCst;
    let users = StaticUsers::new([StaticUsers::user("carol", "{PLAIN}wonderland").unwrap()]);
    let store = Recording {
        inner: MemoryStore::new(),
        released: Default::default(),
        committed: Default::default(),
    };
    let (released, committed) = (store.released.clone(), store.committed.clone());
    let manager = Arc::new(
        Pop3SessionManager::new(Pop3Config::default(), Arc::new(users), Arc::new(store)).unwrap(),
    );
    let peer: SocketAddr = "127.0.0.1:50001".parse().unwrap();
    let session = |m: Arc<Pop3SessionManager>| {
        let (client, server) = tokio::io::duplex(8192);
        let task = tokio::spawn(async move { m.serve(server, peer, TlsMode::None).await });
        (client, task)
    };
    let (client, task) = session(manager.clone());
    let mut c = Client::over(client).await;
    c.cmd("USER carol").await;
    assert!(c.cmd("PASS wonderland").await.starts_with("+OK"));
    drop(c);
    task.await.unwrap();
    assert_eq!((released.load(SeqCst), committed.load(SeqCst)), (1, 0));
    let (client, task) = session(manager.clone());
    let mut c = Client::over(client).await;
    c.cmd("USER carol").await;
    assert!(
        c.cmd("PASS wonderland").await.starts_with("+OK"),
        "released, so free"
    );
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    drop(c);
    task.await.unwrap();
    assert_eq!((released.load(SeqCst), committed.load(SeqCst)), (1, 1));
}

/// The metrics listener drops a client that sends no request head within
/// 5 s (a slowloris would otherwise hold its connections for ever) and
/// still serves others meanwhile.
#[tokio::test]
async fn metrics_listener_drops_silent_clients() {
    let srv = with_metrics(|_| {}).await;
    let addr = srv.metrics.unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "others are served while one is silent");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the silent connection was closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
}

/// Every relative link in the README and docs/ leads to a file that is
/// there (the README's reference moved into docs/, and must stay found).
#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut pages = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    let mut broken = Vec::new();
    let mut seen = 0;
    for page in pages
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(page).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let target = &rest[at + 2..];
            let end = target.find(')').unwrap_or(target.len());
            let link = &target[..end];
            rest = &target[end..];
            if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            seen += 1;
            let file = link.split('#').next().unwrap();
            if !page.parent().unwrap().join(file).exists() {
                broken.push(format!("{}: {link}", page.display()));
            }
        }
    }
    assert!(seen >= 10, "the README links to the docs ({seen} links)");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

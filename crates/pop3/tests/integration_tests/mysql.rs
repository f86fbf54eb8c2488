// SPDX-License-Identifier: AGPL-3.0-only
//! Users in MariaDB (Debian's mariadb-server, started by the test):
//! Postfixadmin's `mailbox` table as it is, its MD5-CRYPT and SHA512-CRYPT
//! secrets and `active` column, a quote in a login, the database going
//! away and coming back under a running server, its socket, and TLS.

use std::time::Duration;

use crate::common::*;
use pop3::config::{AuthConfig, DatabaseTls, UserBackend};
use pop3_testkit::MariaDb;

/// Postfixadmin's `mailbox` table (its schema as Postfixadmin 3 creates
/// it, the columns pop3d does not read included).
const POSTFIXADMIN: &str = "
CREATE TABLE mailbox (
  username varchar(255) NOT NULL,
  password varchar(255) NOT NULL,
  name varchar(255) CHARACTER SET utf8 NOT NULL,
  maildir varchar(255) NOT NULL,
  quota bigint(20) NOT NULL DEFAULT 0,
  local_part varchar(255) NOT NULL,
  domain varchar(255) NOT NULL,
  created datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  modified datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  active tinyint(1) NOT NULL DEFAULT 1,
  phone varchar(30) CHARACTER SET utf8 NOT NULL DEFAULT '',
  email_other varchar(255) NOT NULL DEFAULT '',
  token varchar(255) NOT NULL DEFAULT '',
  token_validity datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  password_expiry datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  PRIMARY KEY (username),
  KEY domain (domain)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COMMENT='Postfix Admin - Virtual Mailboxes';
INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, active) VALUES
 ('alice@example.org', '$1$pfadmin$DNm3dh9n/8KaoQmISNxRv1', 'Alice', 'example.org/alice/', 1048576, 'alice', 'example.org', 1),
 ('bob@example.org', '{SHA512-CRYPT}$6$saltsaltsalt$UvrJ7f/1PTh7RoCODeMMZzlhj3xvZRaZYzLZcmU7nznmGHjU8FHfKLhoRPfJSA//vddafFPp6R/zI4frJUAzH/', 'Bob', 'example.org/bob/', 0, 'bob', 'example.org', 1),
 ('carol@example.org', '$1$pfadmin$DNm3dh9n/8KaoQmISNxRv1', 'Carol', 'example.org/carol/', 0, 'carol', 'example.org', 0),
 ('o''brien@example.org', '$1$ob$kqLLTEOCm39nbVR8ktxJ1.', 'OB', 'example.org/obrien/', 0, 'o''brien', 'example.org', 1);
";

/// What an operator writes for Postfixadmin: active users only, the quota
/// (octets, 0 for none) as pop3d's quota rule.
const QUERY: &str = "SELECT username AS user, password, \
     CONCAT('*:bytes=', quota) AS quota_rule \
     FROM mailbox WHERE username = ? AND active = 1";

async fn server(db: &MariaDb) -> TestServer {
    let url = db.database_for("postfix", "pop3d", "db-secret");
    db.sql(&format!("USE postfix; {POSTFIXADMIN}"));
    server_at(url).await
}

/// A server reading Postfixadmin's table at `url` as `pop3d`.
async fn server_at(url: String) -> TestServer {
    server_tweaked(url, |_| {}).await
}

async fn server_tweaked(url: String, tweak: impl FnOnce(&mut AuthConfig)) -> TestServer {
    TestServer::start_with(|c| {
        let dir = c.storage.lock_dir.parent().unwrap().to_owned();
        std::fs::write(dir.join("mysql.secret"), "db-secret\n").unwrap();
        c.auth.backend = UserBackend::Mysql;
        c.auth.url = Some(url);
        c.auth.password_file = Some(dir.join("mysql.secret"));
        c.auth.password_query = Some(QUERY.into());
        c.storage.maildir = dir.join("mail/%d/%n").to_str().unwrap().into();
        tweak(&mut c.auth);
    })
    .await
}

#[tokio::test]
async fn postfixadmins_mailbox_table_as_it_is() {
    let Some(db) = MariaDb::start() else {
        return;
    };
    let srv = server(&db).await;
    // MD5-CRYPT as Postfixadmin's md5crypt stores it, SHA512-CRYPT as its
    // dovecot:SHA512-CRYPT does.
    let ok = srv.try_login("alice@example.org", "alice pw").await;
    assert!(ok.starts_with("+OK alice@example.org's maildrop"), "{ok}");
    assert!(
        srv.try_login("bob@example.org", "sunshine")
            .await
            .starts_with("+OK")
    );
    let wrong = srv.try_login("alice@example.org", "wrong").await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    // Inactive: refused as a wrong password is.
    assert_eq!(srv.try_login("carol@example.org", "alice pw").await, wrong);
    // A quote in a login is a login, bound, never pasted.
    assert!(
        srv.try_login("o'brien@example.org", "o'pw")
            .await
            .starts_with("+OK")
    );
    assert_eq!(srv.try_login("x'OR'1'='1", "alice pw").await, wrong);
    assert_eq!(
        srv.try_login("alice@example.org'#", "alice pw").await,
        wrong
    );
    // The canonical name is the table's, whatever case was typed (MariaDB
    // compares case-insensitively): one mailbox.
    let upper = srv.try_login("ALICE@example.org", "alice pw").await;
    assert!(
        upper.starts_with("+OK alice@example.org's maildrop"),
        "{upper}"
    );
    // Per-user columns: the quota, from Postfixadmin's octets.
    let alice = srv.user("alice@example.org").await;
    assert_eq!(
        alice.settings.quota.and_then(|q| q.storage),
        Some(1_048_576)
    );
    let bob = srv.user("bob@example.org").await;
    assert_eq!(bob.settings.quota.and_then(|q| q.storage), None);
    assert!(
        srv.dir.path().join("mail/example.org/alice").exists(),
        "the mailbox from %d/%n"
    );
}

#[tokio::test]
async fn the_database_stopped_and_started_under_a_running_server() {
    let Some(mut db) = MariaDb::start() else {
        return;
    };
    let srv = server(&db).await;
    assert!(
        srv.try_login("alice@example.org", "alice pw")
            .await
            .starts_with("+OK")
    );
    db.stop();
    // Never "wrong password", never let in.
    let away = srv.try_login("alice@example.org", "alice pw").await;
    assert!(away.starts_with("-ERR [SYS/TEMP]"), "{away}");
    let away = srv.try_login("alice@example.org", "wrong").await;
    assert!(away.starts_with("-ERR [SYS/TEMP]"), "{away}");
    let health = srv.manager.services().users.health().await;
    assert!(health.is_err(), "{health:?}");
    db.start_again();
    srv.wait_for_login(
        Duration::from_secs(15),
        "logins again",
        "alice@example.org",
        "alice pw",
    )
    .await;
    assert!(srv.manager.services().users.health().await.is_ok());
}

#[tokio::test]
async fn over_the_servers_socket() {
    let Some(db) = MariaDb::start() else {
        return;
    };
    db.database_for("postfix", "pop3d", "db-secret");
    db.sql(&format!(
        "USE postfix; {POSTFIXADMIN} \
         CREATE USER 'pop3d'@'localhost' IDENTIFIED BY 'db-secret'; \
         GRANT SELECT ON postfix.* TO 'pop3d'@'localhost'"
    ));
    let url = format!(
        "mysql://pop3d@localhost/postfix?socket={}",
        db.socket().display()
    );
    let srv = server_at(url).await;
    let ok = srv.try_login("alice@example.org", "alice pw").await;
    assert!(ok.starts_with("+OK"), "{ok}");
    // (The URL names no port and nothing listens on MySQL's 3306 here:
    // the lookup went over the socket.)
}

#[tokio::test]
async fn tls_to_a_server_the_ca_vouches_for() {
    let cert = test_cert();
    let Some(db) = MariaDb::start_tls(&cert.cert_pem, &cert.key_pem) else {
        return;
    };
    let url = db.database_for("postfix", "pop3d", "db-secret");
    // The account may log in over TLS only: a lookup that works went over
    // TLS.
    db.sql(&format!(
        "USE postfix; {POSTFIXADMIN} ALTER USER 'pop3d'@'127.0.0.1' REQUIRE SSL"
    ));
    let ca = tempfile::tempdir().unwrap();
    std::fs::write(ca.path().join("ca.pem"), &cert.cert_pem).unwrap();
    std::fs::write(ca.path().join("other.pem"), test_cert().cert_pem).unwrap();
    let tls = |file: &str| {
        let file = ca.path().join(file);
        move |a: &mut AuthConfig| {
            a.tls = DatabaseTls::Require;
            a.ca_file = Some(file);
        }
    };
    let srv = server_tweaked(url.clone(), tls("ca.pem")).await;
    let ok = srv.try_login("alice@example.org", "alice pw").await;
    assert!(ok.starts_with("+OK"), "{ok}");
    let wrong = srv.try_login("alice@example.org", "wrong").await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    // Without TLS the server refuses the account: no lookup, and never
    // "wrong password".
    let plain = server_at(url.clone()).await;
    let refused = plain.try_login("alice@example.org", "alice pw").await;
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
    // A CA that did not sign the server's certificate: no lookup, and
    // never a login.
    let stranger = server_tweaked(url, tls("other.pem")).await;
    let refused = stranger.try_login("alice@example.org", "alice pw").await;
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
}

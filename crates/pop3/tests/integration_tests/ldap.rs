// SPDX-License-Identifier: AGPL-3.0-only
//! Users in OpenLDAP (Debian's slapd, started by the test with its own
//! cn=config): compare mode over two password schemes, auth_bind with and
//! without auth_bind_userdn, per-user attributes, a filter injection, the
//! directory stopped and started under a running server, StartTLS to a
//! directory whose certificate a test CA vouches for, and logins that
//! need `pass_filter` and `user_filter` while mail needs `user_filter`.

use std::time::Duration;

use crate::common::*;
use base64::Engine;
use pop3::auth::{Scheme, hash_password};
use pop3::config::{LdapConfig, LdapTls, Pop3Config, UserBackend};
use pop3_testkit::Slapd;
use pop3_testkit::slapd::{LOOKUP, LOOKUP_PASSWORD, SUFFIX};

/// alice ({SSHA}), bob ({CRYPT}$6$...), carol with per-user attributes
/// (a quota in `description`, allowed networks in `street`, for want of
/// a mail schema in Debian's slapd).
fn users(ldap: &Slapd) {
    let ssha = hash_password(Scheme::Ssha, "alice pw").unwrap();
    let crypt = hash_password(Scheme::Sha512Crypt, "bob pw")
        .unwrap()
        .replace("{SHA512-CRYPT}", "{CRYPT}");
    let person = |uid: &str, n: u32, password: &str, extra: &str| {
        format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             uid: {uid}\ncn: {uid}\nsn: {uid}\nuidNumber: {n}\ngidNumber: {n}\n\
             homeDirectory: /home/{uid}\nuserPassword: {password}\n{extra}\n"
        )
    };
    ldap.add(
        &[
            person("alice", 1000, &ssha, ""),
            person("bob", 1001, &crypt, ""),
            person(
                "carol",
                1002,
                &ssha.clone(),
                "description: *:storage=1M\nstreet: 192.0.2.0/24\n",
            ),
            person("dave", 1003, &ssha, "description: *:storage=2M\n"),
        ]
        .join("\n"),
    );
}

fn directory(ldap: &Slapd, c: &mut Pop3Config, tweak: impl FnOnce(&mut LdapConfig)) {
    let dir = c.storage.lock_dir.parent().unwrap().to_owned();
    std::fs::write(dir.join("ldap.secret"), format!("{LOOKUP_PASSWORD}\n")).unwrap();
    let mut l = LdapConfig {
        uris: vec![ldap.uri()],
        dn: Some(LOOKUP.into()),
        dnpass_file: Some(dir.join("ldap.secret")),
        base: format!("ou=people,{SUFFIX}"),
        user_attrs: "description=quota_rule,street=allow_nets".into(),
        ..LdapConfig::default()
    };
    tweak(&mut l);
    c.auth.backend = UserBackend::Ldap;
    c.auth.ldap = Some(l);
    c.auth.mechanisms = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
        .map(String::from)
        .to_vec();
    c.auth.timeout = Duration::from_secs(2);
    c.storage.maildir = dir.join("mail/%u").to_str().unwrap().into();
}

async fn sasl_line(srv: &TestServer) -> String {
    let mut c = srv.connect().await;
    let (_, body) = c.multi("CAPA").await;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("SASL"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn compare_mode_reads_the_stored_password_in_two_schemes() {
    let Some(ldap) = Slapd::start(None) else {
        return;
    };
    users(&ldap);
    let srv = TestServer::start_with(|c| directory(&ldap, c, |_| {})).await;
    assert!(srv.try_login("alice", "alice pw").await.starts_with("+OK"));
    assert!(srv.try_login("bob", "bob pw").await.starts_with("+OK"));
    let wrong = srv.try_login("alice", "bob pw").await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(srv.try_login("nobody", "x").await, wrong);
    // A filter injection: escaped as RFC 4515 says, it names nobody (not
    // every entry, which would be two users for one login).
    assert_eq!(srv.try_login("a*)(uid=*", "alice pw").await, wrong);
    assert_eq!(srv.try_login("*", "alice pw").await, wrong);
    // Per-user attributes: a quota, and where carol may log in from.
    let dave = srv.user("dave").await;
    assert_eq!(dave.settings.quota.and_then(|q| q.storage), Some(2 << 20));
    assert_eq!(dave.uid, None, "uidNumber is not mapped by user_attrs here");
    assert_eq!(srv.try_login("carol", "alice pw").await, wrong);
    let carol = srv.user("carol").await;
    assert!(carol.settings.allow_nets.is_some());
    // Compare mode offers what the stored secrets can serve.
    assert!(sasl_line(&srv).await.contains("PLAIN"));
}

#[tokio::test]
async fn auth_bind_with_and_without_a_dn_template() {
    let Some(ldap) = Slapd::start(None) else {
        return;
    };
    users(&ldap);
    for template in [None, Some(format!("uid=%u,ou=people,{SUFFIX}"))] {
        let srv = TestServer::start_with(|c| {
            directory(&ldap, c, |l| {
                l.auth_bind = true;
                l.auth_bind_userdn = template.clone();
            })
        })
        .await;
        assert!(
            srv.try_login("alice", "alice pw").await.starts_with("+OK"),
            "{template:?}"
        );
        assert!(srv.try_login("bob", "bob pw").await.starts_with("+OK"));
        let wrong = srv.try_login("alice", "wrong").await;
        assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
        assert_eq!(srv.try_login("nobody", "alice pw").await, wrong);
        // An empty password is an unauthenticated bind that a directory
        // accepts: never a login.
        let empty = base64::engine::general_purpose::STANDARD.encode("\0alice\0");
        let mut c = srv.connect().await;
        let r = c.cmd(&format!("AUTH PLAIN {empty}")).await;
        assert!(r.starts_with("-ERR"), "{r}");
        // Only what carries the password can work: no CRAM-MD5, no SCRAM.
        let sasl = sasl_line(&srv).await;
        assert!(sasl.contains("PLAIN") && sasl.contains("LOGIN"), "{sasl}");
        assert!(
            !sasl.contains("CRAM-MD5") && !sasl.contains("SCRAM"),
            "{sasl}"
        );
        // The secret is never read: the lookup account need not see it.
        assert!(srv.user("alice").await.secret.is_none());
    }
}

#[tokio::test]
async fn the_directory_stopped_and_started_under_a_running_server() {
    let Some(mut ldap) = Slapd::start(None) else {
        return;
    };
    users(&ldap);
    let srv = TestServer::start_with(|c| directory(&ldap, c, |_| {})).await;
    assert!(srv.try_login("alice", "alice pw").await.starts_with("+OK"));
    ldap.stop();
    for pass in ["alice pw", "wrong"] {
        let away = srv.try_login("alice", pass).await;
        assert!(away.starts_with("-ERR [SYS/TEMP]"), "{away}");
    }
    let health = srv.manager.services().users.health().await;
    assert!(health.is_err(), "{health:?}");
    ldap.start_again();
    srv.wait_for_login(Duration::from_secs(15), "logins again", "alice", "alice pw")
        .await;
}

#[tokio::test]
async fn starttls_to_a_directory_the_ca_vouches_for() {
    let cert = test_cert();
    let Some(ldap) = Slapd::start(Some((&cert.cert_pem, &cert.key_pem))) else {
        return;
    };
    users(&ldap);
    let ca = tempfile::tempdir().unwrap();
    std::fs::write(ca.path().join("ca.pem"), &cert.cert_pem).unwrap();
    std::fs::write(ca.path().join("other.pem"), test_cert().cert_pem).unwrap();
    let srv = TestServer::start_with(|c| {
        directory(&ldap, c, |l| {
            l.tls = LdapTls::Starttls;
            l.ca_file = Some(ca.path().join("ca.pem"));
        })
    })
    .await;
    assert!(srv.try_login("alice", "alice pw").await.starts_with("+OK"));
    // A CA that did not sign the directory's certificate: no lookup, and
    // never a login.
    let srv = TestServer::start_with(|c| {
        directory(&ldap, c, |l| {
            l.tls = LdapTls::Starttls;
            l.ca_file = Some(ca.path().join("other.pem"));
        })
    })
    .await;
    let refused = srv.try_login("alice", "alice pw").await;
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
}

#[tokio::test]
async fn a_login_needs_both_filters_and_mail_the_user_filter() {
    let Some(ldap) = Slapd::start(None) else {
        return;
    };
    users(&ldap);
    // dave's account is switched off for logins (here by name, for want
    // of a mail schema); mail for him is still delivered. bob is unknown
    // to the userdb (user_filter): no mail, and, as in Dovecot, no login.
    // The cache is on, so a delivery's lookup must not answer a login's.
    let srv = TestServer::start_with(|c| {
        directory(&ldap, c, |l| {
            l.pass_filter = "(&(objectClass=posixAccount)(uid=%u)(!(uid=dave)))".into();
            l.user_filter = Some("(&(objectClass=posixAccount)(uid=%u)(!(uid=bob)))".into());
        });
        c.auth.cache_size = 100;
        with_lmtp(c);
    })
    .await;
    let at = srv.lmtp.unwrap();
    let r = lmtp(at, "dave", "Subject: for dave\r\n\r\nx\r\n").await;
    assert!(r.starts_with("250"), "{r}");
    let wrong = srv.try_login("alice", "wrong").await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(srv.try_login("dave", "alice pw").await, wrong);
    assert!(srv.try_login("alice", "alice pw").await.starts_with("+OK"));
    assert_eq!(srv.try_login("bob", "bob pw").await, wrong);
    for unknown in ["bob", "nobody"] {
        let r = lmtp(at, unknown, "Subject: lost\r\n\r\nx\r\n").await;
        assert!(r.starts_with("550"), "{unknown}: {r}");
    }
}

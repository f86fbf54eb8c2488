// SPDX-License-Identifier: AGPL-3.0-only
//! What operators set about keeping mail, on both stores: EXPIRE as
//! policy (with a clock the test moves), per-user values from the user
//! database in CAPA, the trash and its restore, quota at delivery with
//! Maildir++ `maildirsize`, UIDL formats and client workarounds.

use std::sync::Arc;
use std::time::Duration;

use pop3::config::{DeleteMode, Expire, Workaround};
use pop3::security::ManualClock;
use pop3::store::StoreError;

use crate::common::{Backend, Client, TestServer, lines};

const DAY: Duration = Duration::from_secs(86400);

async fn uidls(c: &mut Client<tokio::net::TcpStream>) -> Vec<String> {
    lines(&c.multi("UIDL").await.1)
}

async fn quit(mut c: Client<tokio::net::TcpStream>) -> String {
    let bye = c.cmd("QUIT").await;
    c.until_closed().await;
    bye
}

async fn expire_zero_removes_what_was_retrieved_at_quit(b: Backend) {
    let srv = TestServer::start_on_with(b, |c| c.server.expire = Expire::Days(0)).await;
    for n in 1..=3 {
        srv.put(
            "alice",
            format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes(),
        )
        .await;
    }
    let mut c = srv.connect().await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"EXPIRE 0 USER".to_owned()));
    c.cmd("USER alice").await;
    c.cmd("PASS secret").await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"EXPIRE 0".to_owned()));
    let all = uidls(&mut c).await;
    c.multi("RETR 1").await;
    c.multi("TOP 2 0").await;
    assert!(quit(c).await.contains("2 messages left"));
    let mut c = srv.login("alice", "secret").await;
    let left = uidls(&mut c).await;
    let want: Vec<String> = all[1..]
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{} {}", i + 1, l.split_once(' ').unwrap().1))
        .collect();
    assert_eq!(left, want, "TOP is not a retrieval; RETR without DELE is");
    // A session that ends without QUIT removes nothing.
    c.multi("RETR 1").await;
    drop(c);
    let mut c = srv.login_when_free("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 2 "));
}

async fn expire_days_count_from_the_first_retrieval(b: Backend) {
    let clock = Arc::new(ManualClock::new());
    let srv =
        TestServer::start_on_with_clock(b, |c| c.server.expire = Expire::Days(2), clock.clone())
            .await;
    srv.put("alice", b"Subject: read\r\n\r\none\r\n").await;
    srv.put("alice", b"Subject: unread\r\n\r\ntwo\r\n").await;
    let mut c = srv.login("alice", "secret").await;
    assert!(lines(&c.multi("CAPA").await.1).contains(&"EXPIRE 2".to_owned()));
    let unread = uidls(&mut c).await[1].split_once(' ').unwrap().1.to_owned();
    c.multi("RETR 1").await;
    quit(c).await;
    clock.advance(DAY);
    let mut c = srv.login_when_free("alice", "secret").await;
    assert!(
        c.cmd("STAT").await.starts_with("+OK 2 "),
        "kept a day later"
    );
    // Retrieved again: the period still counts from the first time.
    c.multi("RETR 1").await;
    quit(c).await;
    clock.advance(DAY + Duration::from_secs(1));
    let mut c = srv.login_when_free("alice", "secret").await;
    assert_eq!(uidls(&mut c).await, vec![format!("1 {unread}")]);
    assert_eq!(srv.stored("alice"), 1, "removed from the store, not hidden");
    quit(c).await;
    clock.advance(30 * DAY);
    let mut c = srv.login_when_free("alice", "secret").await;
    assert!(
        c.cmd("STAT").await.starts_with("+OK 1 "),
        "never retrieved, never expired"
    );
}

async fn user_database_values_show_in_capa_after_login(b: Backend) {
    let srv = TestServer::start_on(b).await;
    let mut c = srv.connect().await;
    let before = lines(&c.multi("CAPA").await.1);
    assert!(
        before.contains(&"EXPIRE NEVER USER".to_owned()),
        "{before:?}"
    );
    assert!(!before.iter().any(|l| l.starts_with("LOGIN-DELAY")));
    c.cmd("USER carol").await;
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    let after = lines(&c.multi("CAPA").await.1);
    assert!(after.contains(&"EXPIRE 5".to_owned()), "{after:?}");
    assert!(after.contains(&"LOGIN-DELAY 60".to_owned()), "{after:?}");
    quit(c).await;
    let mut c = srv.connect().await;
    c.cmd("USER carol").await;
    assert_eq!(
        c.cmd("PASS secret").await,
        "-ERR [LOGIN-DELAY] Wait 60 seconds between logins\r\n"
    );
    let mut c = srv.login("alice", "secret").await;
    let alice = lines(&c.multi("CAPA").await.1);
    assert!(alice.contains(&"EXPIRE NEVER".to_owned()), "{alice:?}");
    assert!(!alice.iter().any(|l| l.starts_with("LOGIN-DELAY")));
}

async fn trash_keeps_deleted_mail_until_restored_or_purged(b: Backend) {
    let clock = Arc::new(ManualClock::new());
    let srv = TestServer::start_on_with_clock(
        b,
        |c| {
            c.storage.delete = DeleteMode::Trash;
            c.storage.trash_retention = 7 * DAY;
        },
        clock.clone(),
    )
    .await;
    for n in 1..=3 {
        srv.put(
            "alice",
            format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes(),
        )
        .await;
    }
    let mut c = srv.login("alice", "secret").await;
    let before = uidls(&mut c).await;
    let first = c.multi("RETR 1").await.1;
    c.cmd("DELE 1").await;
    c.cmd("DELE 3").await;
    quit(c).await;
    let mut c = srv.login_when_free("alice", "secret").await;
    assert_eq!(uidls(&mut c).await.len(), 1, "POP3 never lists the trash");
    quit(c).await;
    if b == Backend::Maildir {
        let trash = srv.maildir("alice").join(".Trash/cur");
        assert_eq!(std::fs::read_dir(trash).unwrap().count(), 2);
    }
    let store = srv.manager.services().store.clone();
    let alice = srv.user("alice").await;
    assert_eq!(store.restore(&alice, None).await.unwrap(), 2);
    let mut c = srv.login_when_free("alice", "secret").await;
    assert_eq!(
        uidls(&mut c).await,
        before,
        "the same UIDLs, in the same order"
    );
    assert_eq!(c.multi("RETR 1").await.1, first, "byte for byte");
    c.cmd("DELE 2").await;
    quit(c).await;
    // The sweep takes only what was trashed longer ago than 7 days.
    clock.advance(6 * DAY);
    let users = vec![alice.clone()];
    assert_eq!(store.purge_trash(&users).await.unwrap(), 0, "6 days old");
    let mut c = srv.login_when_free("alice", "secret").await;
    c.cmd("DELE 1").await;
    quit(c).await;
    clock.advance(DAY + Duration::from_secs(1));
    assert_eq!(
        store.purge_trash(&users).await.unwrap(),
        1,
        "7 days and 1 s"
    );
    clock.advance(6 * DAY);
    assert_eq!(store.purge_trash(&users).await.unwrap(), 1);
    assert_eq!(
        store.restore(&alice, None).await.unwrap(),
        0,
        "purged for good"
    );
    let mut c = srv.login_when_free("alice", "secret").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 1 "));
}

async fn restore_since_takes_only_later_deletions(b: Backend) {
    let clock = Arc::new(ManualClock::new());
    let srv =
        TestServer::start_on_with_clock(b, |c| c.storage.delete = DeleteMode::Trash, clock.clone())
            .await;
    srv.put("alice", b"Subject: old\r\n\r\n1\r\n").await;
    srv.put("alice", b"Subject: new\r\n\r\n2\r\n").await;
    let mut c = srv.login("alice", "secret").await;
    let listed = uidls(&mut c).await;
    c.cmd("DELE 1").await;
    quit(c).await;
    clock.advance(DAY);
    let cut = std::time::UNIX_EPOCH + Duration::from_millis(pop3::security::Clock::now_ms(&*clock))
        - Duration::from_secs(60);
    let mut c = srv.login_when_free("alice", "secret").await;
    c.cmd("DELE 1").await;
    quit(c).await;
    let store = srv.manager.services().store.clone();
    let alice = srv.user("alice").await;
    assert_eq!(store.restore(&alice, Some(cut)).await.unwrap(), 1);
    let mut c = srv.login_when_free("alice", "secret").await;
    let back = uidls(&mut c).await;
    assert_eq!(
        back,
        vec![format!("1 {}", listed[1].split_once(' ').unwrap().1)]
    );
}

async fn quota_refuses_mail_and_deletions_make_room(b: Backend) {
    let srv = TestServer::start_on(b).await;
    let carol = srv.user("carol").await;
    let store = srv.manager.services().store.clone();
    let hundred = [b"Subject: q\r\n\r\n".as_slice(), &[b'x'; 84], b"\r\n"].concat();
    assert_eq!(hundred.len(), 100);
    for _ in 0..3 {
        store
            .deliver(&carol, &mut hundred.as_slice())
            .await
            .unwrap();
    }
    assert!(matches!(
        store.deliver(&carol, &mut b"x\r\n".as_slice()).await,
        Err(StoreError::OverQuota)
    ));
    if b == Backend::Maildir {
        let size = std::fs::read_to_string(srv.maildir("carol").join("maildirsize")).unwrap();
        let mut rows = size.lines();
        assert_eq!(rows.next(), Some("300S"));
        let used: i64 = rows
            .map(|l| l.split(' ').next().unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(used, 300);
    }
    assert_eq!(srv.stored("carol"), 3, "the refused message is not stored");
    let mut c = srv.login("carol", "secret").await;
    c.cmd("DELE 2").await;
    quit(c).await;
    store
        .deliver(&carol, &mut hundred.as_slice())
        .await
        .unwrap();
    assert_eq!(srv.stored("carol"), 3);
}

async fn uidl_format_makes_the_strings_of_new_mail(b: Backend) {
    let srv = TestServer::start_on_with(b, |c| c.storage.uidl_format = "UID%u-%v".into()).await;
    srv.put("alice", b"Subject: 1\r\n\r\n1\r\n").await;
    srv.put("alice", b"Subject: 2\r\n\r\n2\r\n").await;
    let mut c = srv.login("alice", "secret").await;
    let listed = uidls(&mut c).await;
    let validity = listed[0].split('-').nth(1).unwrap().to_owned();
    assert!(validity.parse::<u32>().is_ok(), "{listed:?}");
    assert_eq!(
        listed,
        vec![format!("1 UID1-{validity}"), format!("2 UID2-{validity}")]
    );
    // %m: the MD5 of the header section.
    let srv = TestServer::start_on_with(b, |c| c.storage.uidl_format = "%m".into()).await;
    let message = b"Subject: same\r\n\r\nbody\r\n";
    srv.put("alice", message).await;
    let mut c = srv.login("alice", "secret").await;
    let md5: String = pop3::store::uidl::header_md5(b"Subject: same\r\n\r\n")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(uidls(&mut c).await, vec![format!("1 {md5}")]);
}

async fn client_workarounds_change_exactly_their_bytes(b: Backend) {
    let message = b"Subject: nul\0here\r\nX-No-Body: true";
    let plain = TestServer::start_on(b).await;
    plain.put("alice", message).await;
    let mut c = plain.login("alice", "secret").await;
    assert_eq!(
        c.multi("RETR 1").await.1,
        b"Subject: nul\0here\r\nX-No-Body: true\r\n.\r\n",
        "off by default"
    );
    let fixed = TestServer::start_on_with(b, |c| {
        c.protocol.client_workarounds = vec![Workaround::OutlookNoNuls, Workaround::OeNsEoh];
    })
    .await;
    fixed.put("alice", message).await;
    let mut c = fixed.login("alice", "secret").await;
    assert_eq!(
        c.multi("RETR 1").await.1,
        b"Subject: nulhere\r\nX-No-Body: true\r\n\r\n.\r\n"
    );
    assert_eq!(
        c.multi("TOP 1 0").await.1,
        b"Subject: nulhere\r\nX-No-Body: true\r\n\r\n.\r\n"
    );
}

crate::session::on_both_backends!(
    expire_zero_removes_what_was_retrieved_at_quit,
    expire_days_count_from_the_first_retrieval,
    user_database_values_show_in_capa_after_login,
    trash_keeps_deleted_mail_until_restored_or_purged,
    restore_since_takes_only_later_deletions,
    quota_refuses_mail_and_deletions_make_room,
    uidl_format_makes_the_strings_of_new_mail,
    client_workarounds_change_exactly_their_bytes,
);

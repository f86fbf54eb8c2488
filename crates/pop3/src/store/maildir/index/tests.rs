// SPDX-License-Identifier: AGPL-3.0-only
//! The index's tests: reading, writing, taking over other servers' lists.

use super::*;

#[test]
fn round_trip() {
    let mut idx = Index::new(1_700_000_000);
    idx.assign("1.M1P1.host", Some(120));
    idx.assign("2.M2P2.host", None);
    let again = Index::parse(&idx.serialize()).unwrap();
    assert_eq!(again, idx);
    assert_eq!(again.entries["1.M1P1.host"].uidl, "000000016553f100");
    assert_eq!(again.next_uid, 3);
}

#[test]
fn damaged_index_is_refused() {
    assert!(Index::parse("").is_none());
    assert!(Index::parse("pop3d-uidlist 3 V1 N2\n").is_none());
    // Version 1 sizes did not count the CRLF RETR adds: measured again.
    let v1 = Index::parse("pop3d-uidlist 1 V1 N2\n1 10 X key\n").unwrap();
    assert_eq!(
        (v1.entries["key"].size, v1.entries["key"].uidl.as_str()),
        (None, "X")
    );
    assert!(Index::parse("pop3d-uidlist 1 V1 N2\n5 10 X key\n").is_none());
    assert!(Index::parse("pop3d-uidlist 1 V1 N9\nx 10 X key\n").is_none());
}

#[test]
fn dovecot_v3() {
    let text = "3 V1234567890 N10 G0123456789abcdef\n\
                1 :1700000000.M1P1.mx\n\
                4 W2048 S2000 :1700000001.M2P2.mx:2,S\n\
                7 P0000abcd.legacy W10 :1700000002.M3P3.mx\n";
    let idx = Index::from_dovecot(text, &UidlFormat::default()).unwrap();
    assert_eq!(idx.validity, 1_234_567_890);
    assert_eq!(idx.next_uid, 10);
    assert_eq!(idx.entries["1700000000.M1P1.mx"].uidl, "00000001499602d2");
    let e = &idx.entries["1700000001.M2P2.mx"];
    assert_eq!((e.uid, e.size), (4, None));
    assert_eq!(idx.recorded["1700000001.M2P2.mx"], 2048);
    assert_eq!(e.uidl, "00000004499602d2");
    assert_eq!(idx.entries["1700000002.M3P3.mx"].uidl, "0000abcd.legacy");
}

#[test]
fn dovecot_v1() {
    let idx =
        Index::from_dovecot("1 1000 3\n1 a.host\n2 b.host:2,S\n", &UidlFormat::default()).unwrap();
    assert_eq!(idx.entries["b.host"].uidl, "00000002000003e8");
    assert!(Index::from_dovecot("9 junk\n", &UidlFormat::default()).is_none());
}

#[test]
fn rebuild_keeps_validity_when_the_header_survives() {
    // Entry 5's line is damaged; UIDs up to 8 were handed out.
    let text = "pop3d-uidlist 2 V77 N9\n2 10 keep2 a\nbroken line\n5 x y\n";
    let dovecot =
        Index::from_dovecot("3 V77 N4\n1 :gone\n2 :a\n3 :b\n", &UidlFormat::default()).unwrap();
    let mut idx = Index::rebuild(Index::salvage(text), Some(dovecot), 1000);
    assert_eq!(idx.validity, 77);
    assert_eq!(idx.entries["a"].uidl, "keep2", "salvaged strings win");
    assert_eq!(
        idx.entries["b"].uidl, "000000030000004d",
        "lost ones from Dovecot"
    );
    // Dovecot's list is stale (N4): new UIDs still start above 8.
    assert_eq!(idx.assign("new", None).uid, 9);
}

#[test]
fn rebuild_without_a_header_changes_validity_but_no_string() {
    let text = "garbage\n3 10 0000000300000063 a\n";
    let dovecot = Index::from_dovecot("3 V99 N2\n1 :b\n", &UidlFormat::default()).unwrap();
    let mut idx = Index::rebuild(Index::salvage(text), Some(dovecot), 99);
    assert_ne!(idx.validity, 99, "Dovecot's validity is not reused");
    assert_eq!(idx.entries["a"].uidl, "0000000300000063");
    assert_eq!(idx.entries["b"].uidl, "0000000100000063");
    let fresh = idx.assign("c", None);
    assert_eq!(fresh.uid, 4);
    assert!(
        idx.entries
            .values()
            .filter(|e| e.uidl == fresh.uidl)
            .count()
            == 1
    );
}

#[test]
fn fresh_strings_skip_ones_in_use() {
    let mut idx = Index::new(1);
    idx.entries.insert(
        "old".into(),
        Entry {
            uid: 1,
            size: None,
            uidl: "0000000200000001".into(),
        },
    );
    idx.next_uid = 2;
    assert_eq!(idx.assign("x", None).uidl, "0000000300000001");
}

/// Found by the `dovecot_uidlist` and `courier_sizelist` fuzz targets:
/// a list naming one UID (or one UIDL) for two messages would have had
/// two messages share a UIDL. The first keeps it; the other is new
/// mail to the index, given a fresh UID and string.
#[test]
fn no_two_messages_share_a_uid_or_uidl_whatever_a_list_says() {
    let format = UidlFormat::default();
    let found = "1 1 1  \n1 \0\x16\x1710  \n1 ? \n";
    let idx = Index::from_dovecot(found, &format).unwrap();
    assert_eq!(idx.entries.len(), 1, "{idx:?}");
    let text = "3 V1 N10\n\
                2 :a.mx\n\
                2 :b.mx\n\
                3 Psame :c.mx\n\
                4 Psame :d.mx\n\
                5 :a.mx\n";
    let idx = Index::from_dovecot(text, &format).unwrap();
    let mut keys: Vec<&str> = idx.entries.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a.mx", "c.mx"]);
    assert_eq!((idx.entries["a.mx"].uid, idx.next_uid), (2, 10));
    let courier = "/3 4 7\nx.host 21 1:7:0\ny.host 19 1:7:0\n";
    let idx = Index::from_courier(courier, &format).unwrap();
    assert_eq!(idx.entries.len(), 1);
    // Our own index with one string twice is damaged: rebuilt, and the
    // salvage keeps the first.
    let own = "pop3d-uidlist 2 V1 N9\n1 - same a\n2 - same b\n";
    assert!(Index::parse(own).is_none());
    assert_eq!(Index::salvage(own).entries.len(), 1);
    // Found by CI's 20 s of the `dovecot_uidlist` target: an extension
    // starting with a character of two octets panicked the reader.
    let found = "3 V2314567890 N10 :1700000000.M1P1.mx\n4 W2048 \u{41c}b0UUU0 :1700000.x\n";
    let idx = Index::from_dovecot(found, &format).unwrap();
    assert_eq!(idx.entries["1700000.x"].uid, 4);
    // A name ending in CR did not survive being written and read back.
    let courier = "/3 4 7\nx\r 21 1:7:0\ny.host 19 2:7:0\n";
    let idx = Index::from_courier(courier, &format).unwrap();
    assert_eq!(idx.entries.keys().collect::<Vec<_>>(), ["y.host"]);
}

#[test]
fn courier_v3() {
    let text = "/3 4 1796123231\n1700000000.M1P1.host:2, 21 1:1796123231:0\n\
                1700000001.M2P2.host:2,S 19 3:1796120000:0\n";
    let courier = UidlFormat::parse("UID%u-%v").unwrap();
    let idx = Index::from_courier(text, &courier).unwrap();
    assert_eq!(idx.entries["1700000000.M1P1.host"].uidl, "UID1-1796123231");
    assert_eq!(
        idx.entries["1700000001.M2P2.host"].uidl, "UID3-1796120000",
        "each message under its own recorded validity"
    );
    assert_eq!((idx.validity, idx.next_uid), (1796123231, 4));
    assert_eq!(idx.recorded["1700000001.M2P2.host"], 19);
    assert!(Index::from_courier("/2 1 2\n", &courier).is_none());
}

#[test]
fn uidl_charset() {}

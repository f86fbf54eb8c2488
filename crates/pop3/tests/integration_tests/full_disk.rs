// SPDX-License-Identifier: AGPL-3.0-only
//! A full disk under the Maildirs (a tmpfs the test mounts, filled to the
//! last block): LMTP answers `452 4.3.1`, a user whose new mail cannot be
//! indexed still logs in, reads and deletes what the index knows, the
//! index is written once there is room, and no file is left torn.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A tmpfs of `size` mounted on a temporary directory, unmounted when
/// dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// None (and the test skips, saying so) without the right to mount.
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            skip("cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill every free block with one file; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        // And the odd bytes a block would not take.
        while f.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a database server may still hold a file there a moment.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// UIDL listing and every message's bytes, in one session that QUITs.
async fn session(srv: &TestServer) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut c = srv.login("alice", "secret").await;
    let uidls = lines(&c.multi("UIDL").await.1);
    let mut bodies = Vec::new();
    for i in 1..=uidls.len() {
        bodies.push(c.multi(&format!("RETR {i}")).await.1);
    }
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    (uidls, bodies)
}

fn message(n: usize) -> String {
    format!(
        "Subject: message {n}\r\n\r\n{}\r\n",
        "body line\r\n".repeat(n)
    )
}

#[tokio::test]
async fn a_full_disk_still_lets_users_read_and_delete_and_tears_nothing() {
    let Some(disk) = SmallDisk::mount("512k") else {
        return;
    };
    let root = disk.path().to_owned();
    let srv = TestServer::start_with(move |c| {
        c.storage.maildir = format!("{}/%u", root.display());
        with_lmtp(c);
    })
    .await;
    let at = srv.lmtp.unwrap();
    for n in 1..=3 {
        assert!(lmtp(at, "alice", &message(n)).await.starts_with("250 "));
    }
    let (indexed, _) = session(&srv).await;
    assert_eq!(indexed.len(), 3);
    // Two more arrive, not indexed yet; then the disk fills up.
    for n in 4..=5 {
        assert!(lmtp(at, "alice", &message(n)).await.starts_with("250 "));
    }
    let filler = disk.fill();
    let r = lmtp(at, "alice", &message(6)).await;
    assert!(r.starts_with("452 4.3.1"), "{r}");
    // The user still gets in, and sees what the index knew, as it knew it.
    let md = disk.path().join("alice");
    let index_before = std::fs::read(md.join("pop3d-uidlist")).unwrap();
    let mut c = srv.login("alice", "secret").await;
    assert_eq!(lines(&c.multi("UIDL").await.1), indexed);
    for i in 1..=3 {
        let (_, body) = c.multi(&format!("RETR {i}")).await;
        assert!(String::from_utf8_lossy(&body).contains(&format!("message {i}")));
    }
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    // No temporary left behind, and the index (whether QUIT could write
    // it) is whole.
    let names: Vec<String> = std::fs::read_dir(&md)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
    assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    let index_now = std::fs::read_to_string(md.join("pop3d-uidlist")).unwrap();
    assert!(index_now.starts_with("pop3d-uidlist"), "{index_now}");
    assert_ne!(index_now.as_bytes(), index_before, "written at QUIT");
    // With room again, the held-back mail appears, and stays as it is.
    std::fs::remove_file(filler).unwrap();
    let (after, bodies) = session(&srv).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(
        after[0].split_once(' ').unwrap().1,
        indexed[2].split_once(' ').unwrap().1
    );
    let (again, same_bodies) = session(&srv).await;
    assert_eq!(again, after, "stable UIDLs");
    assert_eq!(bodies, same_bodies);
    // Byte for byte what was delivered (LMTP adds the two trace fields).
    for (body, n) in bodies.iter().zip([3, 4, 5]) {
        let text = String::from_utf8_lossy(body);
        assert!(text.ends_with(&format!("{}.\r\n", message(n))), "{text}");
    }
}

#[tokio::test]
async fn a_mailbox_without_an_index_on_a_full_disk_is_refused_with_a_reason() {
    let Some(disk) = SmallDisk::mount("256k") else {
        return;
    };
    let root = disk.path().to_owned();
    let srv = TestServer::start_with(move |c| {
        c.storage.maildir = format!("{}/%u", root.display());
    })
    .await;
    deliver(&disk.path().join("alice"), 1, b"Subject: x\r\n\r\nx\r\n");
    let filler = disk.fill();
    let mut c = srv.connect().await;
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS secret").await,
        "-ERR [SYS/TEMP] The mail storage is full; try again later\r\n"
    );
    drop(c);
    std::fs::remove_file(filler).unwrap();
    let (uidls, _) = session(&srv).await;
    assert_eq!(uidls.len(), 1);
}

/// PostgreSQL whose mail tables sit on a full disk (a tablespace on a
/// small tmpfs): deliveries are refused for the time being, logins, reads
/// and QUIT's deletions go on.
#[tokio::test]
async fn a_full_database_disk_refuses_deliveries_but_serves_reads_and_deletions() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    // The tablespace's directory belongs to the server's own user.
    if !Command::new("chown")
        .arg("postgres")
        .arg(disk.path())
        .status()
        .is_ok_and(|s| s.success())
    {
        skip("no postgres user to give the tablespace to");
        return;
    }
    let srv = TestServer::start_on_with(Backend::Postgres, with_lmtp).await;
    let at = srv.lmtp.unwrap();
    for n in 1..=2 {
        assert!(lmtp(at, "alice", &message(n)).await.starts_with("250 "));
    }
    let ts = format!("small_{}", srv.database.as_deref().unwrap());
    srv.sql(&format!(
        "CREATE TABLESPACE {ts} LOCATION '{}'",
        disk.path().display()
    ));
    srv.sql(&format!(
        "ALTER TABLE bodies SET TABLESPACE {ts}; ALTER TABLE messages SET TABLESPACE {ts}; \
         CREATE TABLE filler (x bigint) TABLESPACE {ts}; \
         DO $$ BEGIN LOOP INSERT INTO filler SELECT g FROM generate_series(1, 20000) g; END LOOP; \
         EXCEPTION WHEN disk_full THEN NULL; END $$;"
    ));
    // A message of many body slices needs pages the disk no longer has.
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef\r\n".repeat(8000)
    );
    let r = lmtp(at, "alice", &big).await;
    assert!(r.starts_with("452 4.3.1"), "{r}");
    let mut c = srv.login("alice", "secret").await;
    let (_, list) = c.multi("LIST").await;
    assert_eq!(lines(&list).len(), 2);
    let (_, one) = c.multi("RETR 1").await;
    assert!(String::from_utf8_lossy(&one).contains("message 1"));
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(srv.stored("alice"), 1);
    srv.sql(&format!(
        "ALTER TABLE bodies SET TABLESPACE pg_default; ALTER TABLE messages SET TABLESPACE pg_default; \
         DROP TABLE filler; DROP TABLESPACE {ts}"
    ));
}

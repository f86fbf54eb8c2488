// SPDX-License-Identifier: AGPL-3.0-only
//! Delivery into a Maildir (the protocol of maildir(5)): write the message
//! under `tmp/`, fsync, then rename it into `new/` with its sizes in the
//! name (`,S=` octets on disk, `,W=` octets as RETR sends them). A failure
//! at any step removes the temporary file, so a reader never sees a partial
//! message.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::io;
use super::names::UIDL_FIELD;
use crate::auth::Quota;
use crate::protocol::SizeCounter;
use crate::store::StoreError;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// NAME_MAX of the file systems mail lives on.
const MAX_NAME: usize = 255;
/// `,S=<u64>,W=<u64>` at its longest.
const SIZES_FIELD: usize = 2 * (3 + 20);

/// A new file name, at most `room` octets long before the size fields
/// (the host part is shortened to fit: it is only one of the parts that
/// make the name unique, beside the time, the pid and a sequence).
fn unique_name(hostname: &str, room: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let host: String = hostname
        .chars()
        .map(|c| {
            if c == '/' || c == ':' || c == ',' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut name = format!(
        // Microseconds and sequence zero-padded: names sort in delivery
        // order within a second (M99999 would sort after M123456, Q9 after
        // Q10), and the listing is ordered by name.
        "{}.M{:06}P{}Q{:06}.",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    for c in host.chars() {
        if name.len() + c.len_utf8() > room {
            break;
        }
        name.push(c);
    }
    name
}

/// Deliver `message` into the Maildir at `dir`; returns the POP3 size.
/// `max_size` (0 for none) refuses larger messages with
/// [`StoreError::TooLarge`]. It is compared with the POP3 size, the one
/// RETR checks, so nothing is accepted here that RETR would then refuse.
///
/// Under a `quota`, or with a `maildirsize` another program keeps, the
/// message is counted there; one that would go over the quota is refused
/// with [`StoreError::OverQuota`] and not stored.
///
/// A `uidl` (a message moved from another server) goes into the name as
/// `,U=<hex>`; the login that first sees the file gives it that UIDL.
pub async fn deliver(
    dir: &Path,
    hostname: &str,
    max_size: u64,
    quota: Option<Quota>,
    uidl: Option<&str>,
    message: &mut (dyn AsyncRead + Send + Unpin),
) -> Result<u64, StoreError> {
    for sub in ["tmp", "new", "cur"] {
        let p = dir.join(sub);
        tokio::fs::create_dir_all(&p).await.map_err(|e| io(&p, e))?;
    }
    // A UIDL (up to 70 octets, 140 in hex) always fits: a long host name
    // gives way, so no UIDL is ever refused for the length of a name.
    let imported = uidl.map_or_else(String::new, |u| {
        format!(",{UIDL_FIELD}{}", crate::hex::encode(u.as_bytes()))
    });
    let name = unique_name(hostname, MAX_NAME - SIZES_FIELD - imported.len());
    let tmp = dir.join("tmp").join(&name);
    match write_tmp(&tmp, max_size, message).await {
        Ok((octets, counter)) => {
            let pop3_size = counter.size();
            let quota_dir = dir.to_owned();
            let usage =
                super::blocking(move || super::quota::usage(&quota_dir, quota.as_ref())).await;
            let counted = match usage {
                Ok(Some(used)) if quota.is_some_and(|q| q.exceeded_by(used, octets)) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(StoreError::OverQuota);
                }
                Ok(used) => used.is_some(),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e);
                }
            };
            let target: PathBuf = dir
                .join("new")
                .join(format!("{name},S={octets},W={pop3_size}{imported}"));
            crate::crash_point!("maildir-deliver-before-rename");
            match tokio::fs::rename(&tmp, &target).await {
                Ok(()) => {
                    crate::crash_point!("maildir-deliver-before-dir-fsync");
                    // The rename itself must be durable before the sender
                    // hears that the message is stored.
                    let new = dir.join("new");
                    super::blocking(move || super::sync_dir(&new).map_err(|e| io(&new, e))).await?;
                    crate::crash_point!("maildir-deliver-stored");
                    if counted {
                        let dir = dir.to_owned();
                        super::blocking(move || {
                            super::quota::record(&dir, &[(octets as i64, 1)]);
                            Ok(())
                        })
                        .await?;
                    }
                    Ok(pop3_size)
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    Err(io(&target, e))
                }
            }
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

async fn write_tmp(
    tmp: &Path,
    max_size: u64,
    message: &mut (dyn AsyncRead + Send + Unpin),
) -> Result<(u64, SizeCounter), StoreError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .await
        .map_err(|e| io(tmp, e))?;
    let mut counter = SizeCounter::default();
    let mut octets = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = message
            .read(&mut buf)
            .await
            .map_err(|e| StoreError::Temporary(format!("reading the message: {e}")))?;
        if n == 0 {
            break;
        }
        octets += n as u64;
        counter.feed(&buf[..n]);
        // Never shrinks as more arrives, so it can be checked as we go.
        if max_size > 0 && counter.size() > max_size {
            return Err(StoreError::TooLarge(max_size));
        }
        file.write_all(&buf[..n]).await.map_err(|e| io(tmp, e))?;
    }
    crate::crash_point!("maildir-deliver-before-fsync");
    file.sync_all().await.map_err(|e| io(tmp, e))?;
    Ok((octets, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_atomically_with_sizes_in_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let mut msg: &[u8] = b"Subject: x\n\nbody\n";
        let size = deliver(&md, "mx.example", 0, None, None, &mut msg)
            .await
            .unwrap();
        assert_eq!(size, 20);
        let names: Vec<String> = std::fs::read_dir(md.join("new"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with(".mx.example,S=17,W=20"), "{}", names[0]);
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_long_uidl_beside_a_long_host_name_still_fits() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let host = "h".repeat(250);
        let uidl = "~".repeat(70);
        let mut msg: &[u8] = b"Subject: x\r\n\r\nbody\r\n";
        deliver(&md, &host, 0, None, Some(&uidl), &mut msg)
            .await
            .unwrap();
        let names: Vec<String> = std::fs::read_dir(md.join("new"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names[0].len() <= MAX_NAME, "{}", names[0].len());
        assert_eq!(
            crate::store::maildir::names::uidl_in_name(&names[0]).as_deref(),
            Some(uidl.as_str())
        );
    }

    #[test]
    fn names_sort_in_delivery_order() {
        let names: Vec<String> = (0..200).map(|_| unique_name("h", MAX_NAME)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        // Within one second at least; a second boundary keeps the order
        // too, the seconds having as many digits.
        assert_eq!(sorted, names);
        let micros = names[0]
            .split(".M")
            .nth(1)
            .unwrap()
            .split('P')
            .next()
            .unwrap();
        assert_eq!(micros.len(), 6, "{}", names[0]);
    }

    #[tokio::test]
    async fn too_large_or_failing_input_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let mut big: &[u8] = &[b'x'; 1000];
        let e = deliver(&md, "h", 100, None, None, &mut big)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge(100)));
        // 68 octets on disk but 102 as POP3 sends them: refused, as RETR
        // would refuse it.
        let lf_only = [b"x\n".repeat(33), b"x\n".to_vec()].concat();
        assert_eq!(lf_only.len(), 68);
        let mut m: &[u8] = &lf_only;
        assert!(matches!(
            deliver(&md, "h", 100, None, None, &mut m).await,
            Err(StoreError::TooLarge(100))
        ));
        let mut m: &[u8] = &lf_only;
        assert_eq!(
            deliver(&md, "h", 102, None, None, &mut m).await.unwrap(),
            102
        );
        // Without a last line end: W counts the CRLF that RETR adds, so
        // the name alone gives LIST its exact size.
        let mut m: &[u8] = b"a\nb";
        assert_eq!(deliver(&md, "h", 0, None, None, &mut m).await.unwrap(), 6);
        let names: Vec<String> = std::fs::read_dir(md.join("new"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().any(|n| n.ends_with(",S=3,W=6")), "{names:?}");
        for f in std::fs::read_dir(md.join("new")).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("pipe broke")))
            }
        }
        let e = deliver(&md, "h", 0, None, None, &mut Broken)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Temporary(_)));
        for sub in ["tmp", "new", "cur"] {
            assert_eq!(std::fs::read_dir(md.join(sub)).unwrap().count(), 0, "{sub}");
        }
    }
}

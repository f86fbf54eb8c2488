// SPDX-License-Identifier: AGPL-3.0-only
//! Sizes of messages the index does not know yet (RFC 1939 §5: octets as
//! RETR sends them), under one limit for the whole store: a mailbox moved
//! in from elsewhere has thousands of unmeasured messages, and reads on a
//! cold disk overlap well, but a burst of first logins must not start a
//! crowd of threads each. A login measures on its own (blocking-pool)
//! thread and borrows helpers only while the store-wide limit has room.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::io;
use crate::protocol::SizeCounter;
use crate::store::StoreError;

/// How many threads may read messages for sizes at once, store-wide.
#[derive(Debug)]
pub struct MeasureLimit {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a MeasureLimit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

impl MeasureLimit {
    pub fn new(threads: usize) -> Self {
        MeasureLimit {
            free: Mutex::new(threads.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Twice the cores, at most 16: enough to overlap disk reads.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        MeasureLimit::new((cores * 2).min(16))
    }

    fn take(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }

    fn try_take(&self) -> Option<Permit<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        (*free > 0).then(|| {
            *free -= 1;
            Permit(self)
        })
    }
}

/// One message to size: its path, and a size Dovecot recorded for it (a
/// `W` in its list), if any.
pub type Job<'a> = (&'a Path, Option<u64>);

/// The size of each job, in order; `None` for a file that vanished.
pub fn sizes(limit: &MeasureLimit, jobs: &[Job<'_>]) -> Result<Vec<Option<u64>>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let next = AtomicUsize::new(0);
    let work = |_permit: Permit<'_>| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(path, recorded)) = jobs.get(i) else {
                return Ok(done);
            };
            let size = match size_of(path, recorded, &mut buf) {
                Ok(s) => Some(s),
                Err(_) if !path.exists() => None,
                Err(e) => return Err(e),
            };
            done.push((i, size));
        }
    };
    // Few messages, or recorded sizes only: not worth a helper.
    let heavy = jobs.iter().filter(|(_, r)| r.is_none()).count();
    let done: Vec<(usize, Option<u64>)> = std::thread::scope(|s| {
        let own = limit.take();
        let helpers: Vec<_> = (1..heavy.div_ceil(64).min(16))
            .map_while(|_| limit.try_take())
            .map(|permit| s.spawn(|| work(permit)))
            .collect();
        let mut all = work(own)?;
        for h in helpers {
            let done = h
                .join()
                .map_err(|_| StoreError::Temporary("size worker failed".into()))?;
            all.extend(done?);
        }
        Ok::<_, StoreError>(all)
    })?;
    // Back in the jobs' order.
    let mut sizes = vec![None; jobs.len()];
    for (i, size) in done {
        sizes[i] = size;
    }
    Ok(sizes)
}

fn size_of(path: &Path, recorded: Option<u64>, buf: &mut [u8]) -> Result<u64, StoreError> {
    match recorded {
        Some(size) => checked(path, size),
        None => measure(path, buf),
    }
}

/// A recorded size, corrected for a last line without a line end: the one
/// case where other programs' sizes differ from what RETR sends. Costs one
/// octet's read, not the message's.
fn checked(path: &Path, recorded: u64) -> Result<u64, StoreError> {
    let f = crate::safe_fs::open_regular(path).map_err(|e| io(path, e))?;
    let len = f.metadata().map_err(|e| io(path, e))?.len();
    if len == 0 {
        return Ok(recorded);
    }
    let mut last = [0u8];
    f.read_exact_at(&mut last, len - 1)
        .map_err(|e| io(path, e))?;
    Ok(recorded + 2 * u64::from(last[0] != b'\n'))
}

fn measure(path: &Path, buf: &mut [u8]) -> Result<u64, StoreError> {
    use std::io::Read;
    let mut f = crate::safe_fs::open_regular(path).map_err(|e| io(path, e))?;
    let mut counter = SizeCounter::default();
    loop {
        let n = f.read(buf).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok(counter.size());
        }
        counter.feed(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_recorded_and_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let (lf, open, gone) = (
            dir.path().join("lf"),
            dir.path().join("open"),
            dir.path().join("gone"),
        );
        std::fs::write(&lf, b"a\nb\n").unwrap();
        std::fs::write(&open, b"a\nb").unwrap();
        let limit = MeasureLimit::new(1);
        let jobs: Vec<Job<'_>> = vec![
            (&lf, None),
            (&open, None),
            (&lf, Some(6)),
            (&open, Some(4)),
            (&gone, None),
        ];
        let got = sizes(&limit, &jobs).unwrap();
        assert_eq!(got, [Some(6), Some(6), Some(6), Some(6), None]);
    }

    #[test]
    fn many_jobs_under_a_small_limit_all_get_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..300)
            .map(|i| {
                let p = dir.path().join(i.to_string());
                std::fs::write(&p, "x\n".repeat(i)).unwrap();
                p
            })
            .collect();
        let jobs: Vec<Job<'_>> = paths.iter().map(|p| (p.as_path(), None)).collect();
        let limit = MeasureLimit::new(3);
        let got = sizes(&limit, &jobs).unwrap();
        for (i, s) in got.into_iter().enumerate() {
            assert_eq!(s, Some(3 * i as u64));
        }
        assert_eq!(*limit.free.lock().unwrap(), 3, "every permit returned");
    }
}

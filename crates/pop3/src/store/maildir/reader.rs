// SPDX-License-Identifier: AGPL-3.0-only
//! Reading a message file off the async workers, in blocks of the
//! configured size (`performance.io_buffer_size`): the first hop to the
//! blocking pool opens the file and reads its first block, which is the
//! whole of most messages; larger files continue block by block, one read
//! ahead, so a session holds at most two blocks whatever the message size.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

/// Fill `buf` as far as the file allows; a short count means end of file.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

type Chunk = (File, io::Result<Vec<u8>>);

/// Read the next block on the blocking pool, into `buf`'s allocation.
fn read_next(mut file: File, mut buf: Vec<u8>, block: usize) -> JoinHandle<Chunk> {
    tokio::task::spawn_blocking(move || {
        buf.resize(block, 0);
        let r = read_full(&mut file, &mut buf).map(|n| {
            buf.truncate(n);
            buf
        });
        (file, r)
    })
}

pub struct FileReader {
    /// Octets per read.
    block: usize,
    buf: Vec<u8>,
    pos: usize,
    /// The file, while more of it may follow.
    file: Option<File>,
    pending: Option<JoinHandle<Chunk>>,
    spare: Option<Vec<u8>>,
}

impl FileReader {
    /// Open `path` and read its first block, on the blocking pool. A
    /// message smaller than a block gets a buffer of its own size.
    pub async fn open(path: PathBuf, block: usize) -> io::Result<FileReader> {
        let block = block.max(1);
        tokio::task::spawn_blocking(move || {
            let mut file = crate::safe_fs::open_regular(&path)?;
            let len = file.metadata()?.len();
            // One octet more than the length, so that a file that grew
            // meanwhile is still read to its end.
            let first = usize::try_from(len.saturating_add(1)).map_or(block, |l| l.min(block));
            let mut buf = vec![0u8; first];
            let n = read_full(&mut file, &mut buf)?;
            buf.truncate(n);
            Ok(FileReader {
                block,
                buf,
                pos: 0,
                file: (n == first).then_some(file),
                pending: None,
                spare: None,
            })
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl AsyncBufRead for FileReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.buf.len() {
                // Read ahead: the next block is fetched while this one is
                // encoded and sent.
                if this.pending.is_none()
                    && let Some(file) = this.file.take()
                {
                    let spare = this.spare.take().unwrap_or_default();
                    this.pending = Some(read_next(file, spare, this.block));
                }
                return Poll::Ready(Ok(&this.buf[this.pos..]));
            }
            if let Some(handle) = this.pending.as_mut() {
                let joined = ready!(Pin::new(handle).poll(cx));
                this.pending = None;
                let (file, data) = joined.map_err(io::Error::other)?;
                let data = data?;
                if data.len() == this.block {
                    this.file = Some(file);
                }
                // The spent buffer serves the read after next.
                this.spare = Some(std::mem::replace(&mut this.buf, data));
                this.pos = 0;
                if this.buf.is_empty() {
                    return Poll::Ready(Ok(&[]));
                }
                continue;
            }
            let Some(file) = this.file.take() else {
                return Poll::Ready(Ok(&[]));
            };
            this.pending = Some(read_next(file, std::mem::take(&mut this.buf), this.block));
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
    }
}

impl AsyncRead for FileReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let data = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(out.remaining());
        out.put_slice(&data[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_small_and_large_files_whole() {
        let dir = tempfile::tempdir().unwrap();
        const BLOCK: usize = 4096;
        for size in [
            0usize,
            10,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            5 * BLOCK + 7,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("m{size}"));
            std::fs::write(&path, &data).unwrap();
            let mut r = FileReader::open(path, BLOCK).await.unwrap();
            assert!(r.buf.capacity() <= BLOCK, "a block at most");
            let mut got = Vec::new();
            let mut small = [0u8; 1000];
            loop {
                let n = r.read(&mut small).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&small[..n]);
            }
            assert_eq!(got.len(), size);
            assert!(got == data, "size {size}");
        }
        assert!(
            FileReader::open(dir.path().join("missing"), BLOCK)
                .await
                .is_err()
        );
    }
}

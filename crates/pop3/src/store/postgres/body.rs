// SPDX-License-Identifier: AGPL-3.0-only
//! Message bodies in slices: written in slices of [`SLICE`] at delivery,
//! read back one slice per statement, each on a pool connection taken for
//! that statement only. A reader holds the slice being sent and one more
//! fetched ahead, so a 1 GiB message costs a few MiB of memory, and a slow
//! client holds no connection while it reads.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::db::{Database, DbError};
use crate::store::{MessageReader, StoreError};

/// The size of a stored slice.
pub const SLICE: usize = 1 << 20;

const READ: &str = "SELECT data FROM bodies WHERE message_id = $1 AND chunk = $2";

/// Slice `chunk` of a message; None if the message is gone.
async fn fetch(db: &Database, message: i64, chunk: i32) -> Result<Option<Vec<u8>>, DbError> {
    db.timed(async {
        let client = db.client().await?;
        let stmt = client.prepare_cached(READ).await?;
        Ok(client
            .query_opt(&stmt, &[&message, &chunk])
            .await?
            .map(|row| row.get(0)))
    })
    .await
}

/// A reader over a message of `chunks` slices. The first slice is read
/// here, so that a message removed underneath the session is reported
/// before anything is sent.
pub async fn open(
    db: Arc<Database>,
    message: i64,
    chunks: i32,
) -> Result<MessageReader, StoreError> {
    let first = match fetch(&db, message, 0).await {
        Ok(Some(data)) => data,
        Ok(None) => return Err(StoreError::MessageGone),
        Err(e) => return Err(super::store_error(e)),
    };
    if chunks <= 1 {
        return Ok(Box::new(SliceReader {
            current: first,
            pos: 0,
            rest: None,
        }));
    }
    // One slice waits in the channel while the next is fetched.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for chunk in 1..chunks {
            let item = match fetch(&db, message, chunk).await {
                Ok(Some(data)) => Ok(data),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "message removed while it was read",
                )),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(Box::new(SliceReader {
        current: first,
        pos: 0,
        rest: Some(rx),
    }))
}

struct SliceReader {
    current: Vec<u8>,
    pos: usize,
    rest: Option<mpsc::Receiver<io::Result<Vec<u8>>>>,
}

impl AsyncBufRead for SliceReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.pos == this.current.len() {
            let Some(rx) = &mut this.rest else {
                break;
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    this.current = data;
                    this.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => this.rest = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.current[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.current.len());
    }
}

impl AsyncRead for SliceReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(data)) => data,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

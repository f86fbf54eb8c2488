// SPDX-License-Identifier: AGPL-3.0-only
//! Message bodies: stored as rows of at most [`PART`] octets, read back a
//! slice of [`SLICE_PARTS`] rows (about 1 MiB) per statement, each on a
//! pool connection taken for that statement only. A reader holds the
//! slice being sent and a few more fetched ahead, so a 1 GiB message
//! costs a few MiB of memory, and a slow client holds no connection while
//! it reads. Small messages are read with the next few after them in one
//! statement ([`READ_AHEAD`]), as the Maildir store reads them ahead.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_postgres::Row;

use crate::db::{Database, DbError};
use crate::protocol::SizeCounter;
use crate::store::{MessageReader, StoreError};

/// Octets per stored row: a row fits its page, so nothing is TOASTed.
pub const PART: usize = 8000;
/// Rows per read.
pub const SLICE_PARTS: i32 = 128;
/// Slices fetched at once ahead of the one being sent.
const FETCH_AHEAD: usize = 4;
/// Messages up to this size are read together with those after them, up
/// to this much in all.
pub const READ_AHEAD: u64 = 64 * 1024;

// No ORDER BY: on a table without statistics yet the planner sorts a
// bitmap scan's megabyte of rows; the parts are put in order here instead.
const READ_SLICE: &str = "SELECT part, data FROM bodies \
     WHERE message_id = $1 AND part >= $2 AND part < $3";
const READ_MANY: &str = "SELECT part, data, message_id FROM bodies \
     WHERE message_id = ANY($1)";
const WRITE_PARTS: &str = "INSERT INTO bodies (message_id, part, data) \
     SELECT $1, $2::integer + t.n::integer - 1, t.d FROM unnest($3::bytea[]) WITH ORDINALITY AS t(d, n)";

/// Rows of a body (`part`, `data`, ...) in part order: sent from the rows
/// themselves, without joining them into one buffer.
pub type Parts = Vec<Row>;

fn data(row: &Row) -> &[u8] {
    row.try_get::<_, &[u8]>(1).unwrap_or_default()
}

/// Parts `first ..` of a message, one slice's worth; None if the message
/// has no such parts (it is gone).
async fn fetch(db: &Database, message: i64, first: i32) -> Result<Option<Parts>, DbError> {
    db.timed(async {
        let client = db.client().await?;
        let stmt = client.prepare_cached(READ_SLICE).await?;
        let mut rows = client
            .query(&stmt, &[&message, &first, &(first + SLICE_PARTS)])
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_unstable_by_key(|r| r.get::<_, i32>(0));
        Ok(Some(rows))
    })
    .await
}

/// Whole messages, by id, in one statement (for read-ahead).
pub async fn fetch_many(db: &Database, ids: &[i64]) -> Result<HashMap<i64, Parts>, DbError> {
    db.timed(async {
        let client = db.client().await?;
        let stmt = client.prepare_cached(READ_MANY).await?;
        let rows = client.query(&stmt, &[&ids]).await?;
        let mut whole: HashMap<i64, Parts> = HashMap::with_capacity(ids.len());
        for row in rows {
            whole.entry(row.get(2)).or_default().push(row);
        }
        for parts in whole.values_mut() {
            parts.sort_unstable_by_key(|r| r.get::<_, i32>(0));
        }
        Ok(whole)
    })
    .await
}

/// A reader over parts already read.
pub fn in_memory(parts: Parts) -> MessageReader {
    Box::new(SliceReader {
        current: parts,
        row: 0,
        pos: 0,
        rest: None,
    })
}

/// A reader over a message of `parts` rows. The first slice is read here,
/// so that a message removed underneath the session is reported before
/// anything is sent.
pub async fn open(
    db: Arc<Database>,
    message: i64,
    parts: i32,
) -> Result<MessageReader, StoreError> {
    let first = match fetch(&db, message, 0).await {
        Ok(Some(data)) => data,
        Ok(None) => return Err(StoreError::MessageGone),
        Err(e) => return Err(super::store_error(e)),
    };
    if parts <= SLICE_PARTS {
        return Ok(in_memory(first));
    }
    // Up to FETCH_AHEAD slices are fetched at once (each on its own
    // connection, for that statement only) while one waits in the channel
    // and one is being sent: the database's latency overlaps the sending.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut starts = (SLICE_PARTS..parts).step_by(SLICE_PARTS as usize);
        let mut pending = std::collections::VecDeque::new();
        loop {
            while pending.len() < FETCH_AHEAD {
                let Some(start) = starts.next() else { break };
                let db = db.clone();
                pending.push_back(tokio::spawn(
                    async move { fetch(&db, message, start).await },
                ));
            }
            let Some(next) = pending.pop_front() else {
                return;
            };
            let item = match next.await {
                Ok(Ok(Some(data))) => Ok(data),
                Ok(Ok(None)) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "message removed while it was read",
                )),
                Ok(Err(e)) => Err(io::Error::other(e.to_string())),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                for p in pending {
                    p.abort();
                }
                return;
            }
        }
    });
    Ok(Box::new(SliceReader {
        current: first,
        row: 0,
        pos: 0,
        rest: Some(rx),
    }))
}

/// What writing a body found.
pub struct Written {
    pub parts: i32,
    /// The POP3 size (CRLF line ends).
    pub size: u64,
    /// MD5 of the header section (of the first slice, if the header is
    /// longer), when asked for: `uidl_format`'s `%m`.
    pub header_md5: Option<[u8; 16]>,
}

/// Store `message` as the parts of body `id` inside `tx`, 1 MiB per
/// statement; `Ok(None)` if it grows past `max_size` (0: no limit).
pub async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    id: i64,
    max_size: u64,
    message: &mut (dyn AsyncRead + Send + Unpin),
    want_md5: bool,
) -> Result<Option<Written>, DbError> {
    let stmt = tx.prepare_cached(WRITE_PARTS).await?;
    let mut counter = SizeCounter::default();
    let mut parts: i32 = 0;
    let mut header_md5 = None;
    let slice_len = PART * SLICE_PARTS as usize;
    loop {
        let mut slice = Vec::with_capacity(64 * 1024);
        (&mut *message)
            .take(slice_len as u64)
            .read_to_end(&mut slice)
            .await
            .map_err(|e| DbError::Query(format!("reading the message: {e}")))?;
        if slice.is_empty() && parts > 0 {
            break;
        }
        counter.feed(&slice);
        if want_md5 && parts == 0 {
            header_md5 = Some(crate::store::uidl::header_md5(&slice));
        }
        if max_size > 0 && counter.size() > max_size {
            return Ok(None);
        }
        // An empty message is one empty part.
        let rows: Vec<&[u8]> = if slice.is_empty() {
            vec![&[]]
        } else {
            slice.chunks(PART).collect()
        };
        tx.execute(&stmt, &[&id, &parts, &rows]).await?;
        parts += rows.len() as i32;
        if slice.len() < slice_len {
            break;
        }
    }
    Ok(Some(Written {
        parts,
        size: counter.size(),
        header_md5,
    }))
}

struct SliceReader {
    current: Parts,
    /// The row being sent, and how far.
    row: usize,
    pos: usize,
    rest: Option<mpsc::Receiver<io::Result<Parts>>>,
}

impl AsyncBufRead for SliceReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        loop {
            while this.row < this.current.len() && this.pos == data(&this.current[this.row]).len() {
                this.row += 1;
                this.pos = 0;
            }
            if this.row < this.current.len() {
                break;
            }
            let Some(rx) = &mut this.rest else {
                break;
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(parts))) => {
                    this.current = parts;
                    this.row = 0;
                    this.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => this.rest = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(match this.current.get(this.row) {
            Some(row) => &data(row)[this.pos..],
            None => &[],
        }))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        if let Some(row) = this.current.get(this.row) {
            this.pos = (this.pos + amt).min(data(row).len());
        }
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

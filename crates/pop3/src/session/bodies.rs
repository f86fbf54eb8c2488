// SPDX-License-Identifier: AGPL-3.0-only
//! RETR and TOP on the wire: the status line, the message streamed in
//! chunks through the body encoder (with RFC 6858's header downgrade for
//! clients outside UTF-8 mode), and the terminator.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Stream one message: status line, encoded chunks, terminator.
    pub(super) async fn body(
        &mut self,
        status: Reply,
        index: usize,
        mut encoder: protocol::BodyEncoder,
    ) -> Flow {
        let State::Transaction(t) = &self.state else {
            return Flow::Continue;
        };
        let mut reader = match t.maildrop.open_message(index).await {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, StoreError::MessageGone) {
                    self.services.metrics.store_errors.inc();
                }
                tracing::warn!(user = %t.user.name, "cannot open message {}: {e}", index + 1);
                op::store_error_reply(&e).encode(&mut self.output);
                return Flow::Continue;
            }
        };
        // Stream into a pooled buffer; the small one idle sessions keep
        // comes back afterwards.
        let pooled = self.services.buffers.take();
        let mut idle = std::mem::replace(&mut self.output, pooled);
        self.output.extend_from_slice(&idle);
        idle.clear();
        status.encode(&mut self.output);
        let mut flow = Flow::Continue;
        if self.services.config.server.enable_utf8 && !self.conn.utf8 {
            flow = self
                .downgraded_header(&mut *reader, &mut encoder, index)
                .await;
        }
        if let Flow::Continue = flow {
            flow = self.stream(&mut *reader, &mut encoder, index).await;
        }
        if let Flow::Continue = flow {
            encoder.finish(&mut self.output);
            self.stats.retrieved += 1;
        }
        // Keep what is still unsent; the pooled buffer goes back.
        idle.extend_from_slice(&self.output);
        let pooled = std::mem::replace(&mut self.output, idle);
        self.services.buffers.give(pooled);
        flow
    }

    /// For a client outside UTF-8 mode (RFC 6856): read the header, and
    /// send it downgraded if it has 8-bit octets; the body follows as
    /// usual. A header longer than the downgrade's limit goes out as it is.
    pub(super) async fn downgraded_header(
        &mut self,
        reader: &mut (dyn AsyncBufRead + Send + Unpin),
        encoder: &mut protocol::BodyEncoder,
        index: usize,
    ) -> Flow {
        // Most headers are ASCII and lie within the first block: then
        // nothing is copied, and the stream goes on from that block.
        if let Ok(data) = reader.fill_buf().await
            && protocol::downgrade::header_end(data).is_some_and(|end| data[..end].is_ascii())
        {
            return Flow::Continue;
        }
        let mut header = Vec::new();
        loop {
            let data = match reader.fill_buf().await {
                Ok([]) => break,
                Ok(data) => data,
                Err(e) => return self.read_failed(index, &e),
            };
            let taken = header.len();
            let room = protocol::downgrade::MAX_HEADER - taken;
            let take = data.len().min(room);
            header.extend_from_slice(&data[..take]);
            // The whole header again: its empty line may straddle blocks,
            // and it is a few blocks at most.
            if let Some(end) = protocol::downgrade::header_end(&header) {
                reader.consume(end - taken);
                header.truncate(end);
                break;
            }
            reader.consume(take);
            if header.len() >= protocol::downgrade::MAX_HEADER {
                break;
            }
        }
        let ascii = (header.len() < protocol::downgrade::MAX_HEADER)
            .then(|| protocol::downgrade::downgrade_header(&header))
            .flatten();
        encoder.feed(ascii.as_deref().unwrap_or(&header), &mut self.output);
        Flow::Continue
    }

    /// A message read failed after its status line went out: the only
    /// honest end is to close, so the client does not take a truncated
    /// body for a whole one.
    pub(super) fn read_failed(&self, index: usize, e: &std::io::Error) -> Flow {
        self.services.metrics.store_errors.inc();
        tracing::error!("reading message {} failed mid-stream: {e}", index + 1);
        Flow::Stop(End::IoError)
    }

    pub(super) async fn stream(
        &mut self,
        reader: &mut (dyn AsyncBufRead + Send + Unpin),
        encoder: &mut protocol::BodyEncoder,
        index: usize,
    ) -> Flow {
        let flush_at = self.services.buffers.buffer_size();
        while !encoder.is_done() {
            let data = match reader.fill_buf().await {
                Ok([]) => break,
                Ok(data) => data,
                Err(e) => return self.read_failed(index, &e),
            };
            // Encode straight from the store's buffer, at most one flush's
            // worth at a time so the output stays near io_buffer_size.
            let take = data.len().min(flush_at);
            encoder.feed(&data[..take], &mut self.output);
            reader.consume(take);
            if self.output.len() >= flush_at && self.flush().await.is_err() {
                return Flow::Stop(End::IoError);
            }
        }
        Flow::Continue
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! Splitting the input into lines with a bound on their length (RFC 2449
//! §4: 255 octets for commands). Pure: bytes in, lines out. An overlong line
//! is reported once and then skipped up to its end, so memory stays bounded
//! whatever the client sends.

/// One item taken from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its CRLF or LF.
    Complete(Vec<u8>),
    /// A line went past the limit; its rest will be skipped.
    TooLong,
}

#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    start: usize,
    /// Inside an overlong line: drop bytes until the next LF.
    skipping: bool,
    /// Whether the last complete line handed out ended in CRLF (not a
    /// bare LF): LMTP's end of DATA must be `CRLF . CRLF`.
    last_crlf: bool,
}

impl LineBuffer {
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes waiting (complete lines or a partial one).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Forget everything buffered (after STLS: plaintext sent before the
    /// handshake must never be executed inside TLS).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.skipping = false;
    }

    /// Whether the last complete line ended in CRLF rather than a bare LF.
    pub fn last_ended_crlf(&self) -> bool {
        self.last_crlf
    }

    /// Take the next line no longer than `max` (CRLF included).
    pub fn next_line(&mut self, max: usize) -> Option<Line> {
        loop {
            let rest = &self.buf[self.start..];
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let line = &rest[..i];
                    self.start += i + 1;
                    if std::mem::take(&mut self.skipping) {
                        continue;
                    }
                    let stripped = line.strip_suffix(b"\r");
                    self.last_crlf = stripped.is_some();
                    let line = stripped.unwrap_or(line);
                    if line.len() + 2 > max {
                        return Some(Line::TooLong);
                    }
                    return Some(Line::Complete(line.to_vec()));
                }
                None => {
                    if rest.len() + 1 > max {
                        // No end in sight: drop what we have and skip on.
                        let was_skipping = std::mem::replace(&mut self.skipping, true);
                        self.buf.clear();
                        self.start = 0;
                        return (!was_skipping).then_some(Line::TooLong);
                    }
                    self.compact();
                    return None;
                }
            }
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(lb: &mut LineBuffer, max: usize) -> Vec<Line> {
        std::iter::from_fn(|| lb.next_line(max)).collect()
    }

    #[test]
    fn splits_and_limits() {
        let mut lb = LineBuffer::default();
        lb.extend(b"STAT\r\nLIST\nNO");
        assert_eq!(
            drain(&mut lb, 255),
            vec![
                Line::Complete(b"STAT".to_vec()),
                Line::Complete(b"LIST".to_vec())
            ]
        );
        lb.extend(b"OP\r\n");
        assert_eq!(drain(&mut lb, 255), vec![Line::Complete(b"NOOP".to_vec())]);
        assert!(lb.last_ended_crlf());
        lb.extend(b"bare\n");
        assert_eq!(drain(&mut lb, 255), vec![Line::Complete(b"bare".to_vec())]);
        assert!(!lb.last_ended_crlf());
        assert_eq!(lb.pending(), 0);
    }

    #[test]
    fn overlong_line_reported_once_then_skipped() {
        let mut lb = LineBuffer::default();
        lb.extend(&[b'x'; 300]);
        assert_eq!(drain(&mut lb, 255), vec![Line::TooLong]);
        lb.extend(&[b'x'; 1000]);
        assert_eq!(drain(&mut lb, 255), vec![]);
        assert!(lb.pending() < 255);
        lb.extend(b"xx\r\nQUIT\r\n");
        assert_eq!(drain(&mut lb, 255), vec![Line::Complete(b"QUIT".to_vec())]);
        // A complete overlong line in one read.
        lb.extend(&[b'y'; 300]);
        lb.extend(b"\r\nNOOP\r\n");
        assert_eq!(
            drain(&mut lb, 255),
            vec![Line::TooLong, Line::Complete(b"NOOP".to_vec())]
        );
    }

    #[test]
    fn exactly_at_the_limit() {
        let mut lb = LineBuffer::default();
        let mut line = vec![b'a'; 253];
        line.extend_from_slice(b"\r\n");
        lb.extend(&line);
        assert_eq!(drain(&mut lb, 255), vec![Line::Complete(vec![b'a'; 253])]);
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_lines(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a')], 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..10),
        ) {
            let mut whole = LineBuffer::default();
            whole.extend(&data);
            let expected = drain(&mut whole, 64);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut lb = LineBuffer::default();
            let mut got = Vec::new();
            let mut start = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                let c = c.clamp(start, data.len());
                lb.extend(&data[start..c]);
                got.extend(drain(&mut lb, 64));
                prop_assert!(lb.pending() <= 64);
                start = c;
            }
            // Chunking may only move where an overlong line is detected, not
            // which complete lines come out.
            let complete = |v: &[Line]| v.iter().filter_map(|l| match l { Line::Complete(b) => Some(b.clone()), _ => None }).collect::<Vec<_>>();
            prop_assert_eq!(complete(&got), complete(&expected));
        }
    }
}

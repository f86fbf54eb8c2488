// SPDX-License-Identifier: AGPL-3.0-only
//! The RETR/TOP body encoder (RFC 1939 §3, §7 TOP): message bytes in
//! arbitrary chunks become the multi-line wire form: bare LF -> CRLF, a
//! leading "." doubled, a CRLF added before the terminator when missing,
//! and for TOP the header block plus `n` body lines only. Pure code: the
//! session feeds it chunks read from the store.

/// Whether the LF at `chunk[i]` ends a CRLF; `prev_cr` says whether the
/// previous chunk ended in CR.
fn cr_before(chunk: &[u8], i: usize, prev_cr: bool) -> bool {
    if i > 0 {
        chunk[i - 1] == b'\r'
    } else {
        prev_cr
    }
}

/// Streaming encoder; one per RETR or TOP.
#[derive(Debug, Clone)]
pub struct BodyEncoder {
    at_line_start: bool,
    /// The last byte fed was CR (it may pair with an LF in the next chunk).
    prev_cr: bool,
    /// Bytes in the current line so far (before its LF).
    line_len: u64,
    part: Part,
    done: bool,
    fixes: Fixes,
}

/// Changes to the bytes sent, for clients that need them (`[protocol]
/// client_workarounds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixes {
    /// Leave out NUL octets (`outlook-no-nuls`).
    pub strip_nuls: bool,
    /// End a header section that has no empty line with one (`oe-ns-eoh`).
    pub end_of_header: bool,
}

#[derive(Debug, Clone, Copy)]
enum Part {
    /// RETR: everything.
    Whole,
    /// TOP: still in the header block; then `lines` body lines.
    Headers {
        lines: u32,
    },
    Body {
        remaining: u32,
    },
}

impl BodyEncoder {
    /// Encoder for RETR: the whole message.
    pub fn retr() -> Self {
        Self::with_part(Part::Whole)
    }

    /// Encoder for `TOP n lines`.
    pub fn top(lines: u32) -> Self {
        Self::with_part(Part::Headers { lines })
    }

    fn with_part(part: Part) -> Self {
        BodyEncoder {
            at_line_start: true,
            prev_cr: false,
            line_len: 0,
            part,
            done: false,
            fixes: Fixes::default(),
        }
    }

    /// Apply `fixes`. The end-of-header fix follows lines, so RETR then
    /// takes TOP's line-by-line path with no limit on body lines.
    pub fn with_fixes(mut self, fixes: Fixes) -> Self {
        if fixes.end_of_header && matches!(self.part, Part::Whole) {
            self.part = Part::Headers { lines: u32::MAX };
        }
        self.fixes = fixes;
        self
    }

    /// True once TOP has emitted all it needs; further input is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Encode one chunk, appending to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.fixes.strip_nuls && memchr::memchr(0, chunk).is_some() {
            let kept: Vec<u8> = chunk.iter().copied().filter(|&b| b != 0).collect();
            let fixes = std::mem::take(&mut self.fixes);
            self.feed(&kept, out);
            self.fixes = fixes;
            return;
        }
        if matches!(self.part, Part::Whole) {
            self.feed_whole(chunk, out);
            return;
        }
        let mut rest = chunk;
        while !rest.is_empty() && !self.done {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let content = &rest[..i];
                    let cr = cr_before(rest, i, self.prev_cr);
                    out.extend_from_slice(content);
                    if !cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    let line_len = self.line_len + i as u64;
                    let empty = line_len == 0 || (line_len == 1 && cr);
                    self.end_of_line(empty);
                    self.prev_cr = false;
                    rest = &rest[i + 1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    self.line_len += rest.len() as u64;
                    self.prev_cr = rest[rest.len() - 1] == b'\r';
                    rest = &[];
                }
            }
        }
    }

    /// RETR: copy long spans at once, breaking them only where a bare LF
    /// needs its CR or a line starts with a dot.
    fn feed_whole(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = chunk.last() else { return };
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        if self.at_line_start && chunk[0] == b'.' {
            out.push(b'.');
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', chunk) {
            let cr = cr_before(chunk, i, self.prev_cr);
            if !cr {
                out.extend_from_slice(&chunk[start..i]);
                out.extend_from_slice(b"\r\n");
                start = i + 1;
            }
            if chunk.get(i + 1) == Some(&b'.') {
                out.extend_from_slice(&chunk[start..=i]);
                out.push(b'.');
                start = i + 1;
            }
        }
        out.extend_from_slice(&chunk[start..]);
        self.at_line_start = last == b'\n';
        self.prev_cr = last == b'\r';
    }

    fn end_of_line(&mut self, empty: bool) {
        self.at_line_start = true;
        self.line_len = 0;
        self.part = match self.part {
            Part::Whole => Part::Whole,
            Part::Headers { lines } if empty => Part::Body { remaining: lines },
            Part::Headers { lines } => Part::Headers { lines },
            Part::Body { remaining } => Part::Body {
                remaining: remaining.saturating_sub(1),
            },
        };
        if let Part::Body { remaining: 0 } = self.part {
            self.done = true;
        }
    }

    /// Close the body: a CRLF if the last line had none, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        if self.fixes.end_of_header && matches!(self.part, Part::Headers { .. }) {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Counts the size of a message as POP3 reports it (RFC 1939 §5: octets with
/// CRLF line ends, before dot-stuffing), fed in chunks. It is exactly what
/// RETR sends before the terminating line, so the CRLF that RETR adds to a
/// last line without one is counted too (Dovecot's LIST leaves it out and
/// so reports two octets fewer than it sends for such a message).
#[derive(Debug, Default, Clone)]
pub struct SizeCounter {
    size: u64,
    prev_cr: bool,
    /// The last octet fed was not a LF: a line is still open.
    open_line: bool,
}

impl SizeCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        for i in memchr::memchr_iter(b'\n', chunk) {
            let cr = cr_before(chunk, i, self.prev_cr);
            if !cr {
                self.size += 1;
            }
        }
        if let Some(last) = chunk.last() {
            self.prev_cr = *last == b'\r';
            self.open_line = *last != b'\n';
        }
    }

    pub fn size(&self) -> u64 {
        self.size + 2 * u64::from(self.open_line)
    }
}

/// Size of a whole message held in memory.
pub fn crlf_size(message: &[u8]) -> u64 {
    let mut c = SizeCounter::default();
    c.feed(message);
    c.size()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_chunks(enc: BodyEncoder, msg: &[u8], splits: &[usize]) -> Vec<u8> {
        let mut enc = enc;
        let mut out = Vec::new();
        let mut start = 0;
        for &s in splits {
            let s = s.clamp(start, msg.len());
            enc.feed(&msg[start..s], &mut out);
            start = s;
        }
        enc.feed(&msg[start..], &mut out);
        enc.finish(&mut out);
        out
    }

    fn retr(msg: &[u8]) -> Vec<u8> {
        encode_chunks(BodyEncoder::retr(), msg, &[])
    }

    fn top(msg: &[u8], n: u32) -> Vec<u8> {
        encode_chunks(BodyEncoder::top(n), msg, &[])
    }

    #[test]
    fn retr_cases() {
        assert_eq!(retr(b""), b".\r\n");
        assert_eq!(retr(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(retr(b"a\nb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(retr(b"a\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(retr(b".\n..x\n.y"), b"..\r\n...x\r\n..y\r\n.\r\n");
        assert_eq!(retr(b"\n\n"), b"\r\n\r\n.\r\n");
        assert_eq!(retr(b"a\rb\n"), b"a\rb\r\n.\r\n");
        assert_eq!(retr(b"nul\0byte\n"), b"nul\0byte\r\n.\r\n");
    }

    #[test]
    fn client_workarounds_byte_exact() {
        let nuls = Fixes {
            strip_nuls: true,
            ..Fixes::default()
        };
        let eoh = Fixes {
            end_of_header: true,
            ..Fixes::default()
        };
        let with = |fixes, msg: &[u8], splits: &[usize]| {
            encode_chunks(BodyEncoder::retr().with_fixes(fixes), msg, splits)
        };
        assert_eq!(
            with(nuls, b"A: \0b\n\nx\0\0y\n", &[4]),
            b"A: b\r\n\r\nxy\r\n.\r\n"
        );
        assert_eq!(with(nuls, b"\0.dot\n", &[]), b"..dot\r\n.\r\n");
        assert_eq!(
            with(eoh, b"Subject: x\nFrom: y", &[3]),
            b"Subject: x\r\nFrom: y\r\n\r\n.\r\n"
        );
        assert_eq!(
            with(eoh, b"Subject: x\r\n", &[]),
            b"Subject: x\r\n\r\n.\r\n"
        );
        let whole = b"Subject: x\n\n.body\nmore";
        assert_eq!(
            with(eoh, whole, &[11]),
            retr(whole),
            "an ended header is left alone"
        );
        assert_eq!(
            encode_chunks(BodyEncoder::top(0).with_fixes(eoh), b"A: b\n", &[]),
            b"A: b\r\n\r\n.\r\n"
        );
        // Off by default: a NUL goes out as stored.
        assert_eq!(retr(b"a\0b"), b"a\0b\r\n.\r\n");
        assert_eq!(retr(b"Subject: x"), b"Subject: x\r\n.\r\n");
    }

    #[test]
    fn top_cases() {
        let msg = b"Subject: x\nFrom: y\n\nline1\n.line2\nline3\n";
        assert_eq!(top(msg, 0), b"Subject: x\r\nFrom: y\r\n\r\n.\r\n");
        assert_eq!(top(msg, 1), b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n.\r\n");
        assert_eq!(
            top(msg, 2),
            b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n..line2\r\n.\r\n"
        );
        assert_eq!(top(msg, 99), retr(msg));
        // No body at all, no blank line: the headers are everything.
        assert_eq!(top(b"Subject: x", 0), b"Subject: x\r\n.\r\n");
        // CRLF blank line split across chunks.
        let crlf = b"A: b\r\n\r\nbody\r\n";
        for cut in 0..crlf.len() {
            assert_eq!(
                encode_chunks(BodyEncoder::top(0), crlf, &[cut]),
                b"A: b\r\n\r\n.\r\n",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(crlf_size(b""), 0);
        assert_eq!(crlf_size(b"a\nb\n"), 6);
        assert_eq!(crlf_size(b"a\r\nb\r\n"), 6);
        assert_eq!(crlf_size(b"a\nb"), 6, "RETR adds the last CRLF");
        assert_eq!(
            crlf_size(b"a\r"),
            4,
            "a lone CR is not a line end: RETR adds CRLF"
        );
        let mut c = SizeCounter::default();
        c.feed(b"a\r");
        c.feed(b"\nb\n");
        assert_eq!(c.size(), 6);
    }

    #[test]
    fn every_one_and_two_cut_split_of_a_tricky_message() {
        let msg = b"A: b\r\n.hidden: x\n\r\n.\n..\r\nbody\rline\n.\r\nend";
        for lines in [0, 1, 2, 3, 100] {
            let whole_top = top(msg, lines);
            for i in 0..=msg.len() {
                for j in i..=msg.len() {
                    assert_eq!(
                        encode_chunks(BodyEncoder::retr(), msg, &[i, j]),
                        retr(msg),
                        "{i} {j}"
                    );
                    assert_eq!(
                        encode_chunks(BodyEncoder::top(lines), msg, &[i, j]),
                        whole_top,
                        "{i} {j}"
                    );
                }
            }
        }
        // Chunks of 1, 2, 4 ... 64 bytes.
        for size in [1usize, 2, 4, 8, 16, 32, 64] {
            let cuts: Vec<usize> = (size..msg.len()).step_by(size).collect();
            assert_eq!(
                encode_chunks(BodyEncoder::retr(), msg, &cuts),
                retr(msg),
                "chunks of {size}"
            );
        }
    }

    /// The body as sent, without dot-stuffing and terminator, is exactly as
    /// long as the size STAT/LIST report for it.
    fn unstuffed_len(wire: &[u8]) -> u64 {
        let body = &wire[..wire.len() - 3];
        let mut n = 0u64;
        for line in body.split_inclusive(|b| *b == b'\n') {
            n += line.len() as u64 - u64::from(line.starts_with(b"."));
        }
        n
    }

    proptest! {
        #[test]
        fn every_split_gives_the_same_bytes(
            msg in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'.'), Just(b'a'), any::<u8>()], 0..200),
            mut splits in proptest::collection::vec(0usize..200, 0..8),
            lines in 0u32..5,
        ) {
            splits.sort_unstable();
            prop_assert_eq!(encode_chunks(BodyEncoder::retr(), &msg, &splits), retr(&msg));
            prop_assert_eq!(encode_chunks(BodyEncoder::top(lines), &msg, &splits), top(&msg, lines));
            let mut c = SizeCounter::default();
            let mut start = 0;
            for &s in &splits { let s = s.clamp(start, msg.len()); c.feed(&msg[start..s]); start = s; }
            c.feed(&msg[start..]);
            prop_assert_eq!(c.size(), crlf_size(&msg));
        }

        #[test]
        fn wire_form_is_well_formed(msg in proptest::collection::vec(any::<u8>(), 0..300)) {
            let wire = retr(&msg);
            prop_assert!(wire.ends_with(b".\r\n"));
            // Every LF is preceded by CR, and no line is a lone ".".
            for (i, b) in wire.iter().enumerate() {
                if *b == b'\n' { prop_assert!(i > 0 && wire[i - 1] == b'\r'); }
            }
            let body = &wire[..wire.len() - 3];
            prop_assert!(body.is_empty() || body.ends_with(b"\r\n"));
            for line in body.split(|b| *b == b'\n') {
                prop_assert_ne!(line, b".\r");
            }
            prop_assert_eq!(unstuffed_len(&wire), crlf_size(&msg));
        }
    }
}

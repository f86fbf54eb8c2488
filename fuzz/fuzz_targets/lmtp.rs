// SPDX-License-Identifier: AGPL-3.0-only
//! LMTP: every line through the command parser, and the DATA decoder. The
//! input, taken as a message, is sent as an MTA sends it (CRLF line ends,
//! leading dots doubled, `.` CRLF at the end) and must come out of the
//! decoder as the CRLF-normalised message; taken as raw DATA lines, the
//! decoder never keeps more than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::protocol::lines::{Line, LineBuffer};
use pop3::protocol::lmtp::{DataBody, DataLine, parse_command};

const DATA_LINE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let (chunk, data) = pop3_fuzz::chunked(data);
    // Raw: commands, then the same lines as a DATA body under a small limit.
    let mut lines = LineBuffer::default();
    let mut body = DataBody::new(256);
    for piece in data.chunks(chunk) {
        lines.extend(piece);
        while let Some(Line::Complete(line)) = lines.next_line(DATA_LINE) {
            let _ = parse_command(&line);
            if body.line(&line, lines.last_ended_crlf()) == DataLine::End {
                body = DataBody::new(256);
            }
            assert!(body.message.len() <= 256, "kept past the limit");
        }
    }
    // As an MTA sends a message: it comes back as it went in.
    let message: Vec<u8> = data
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect::<Vec<u8>>()
        .split(|&b| b == b'|')
        .flat_map(|l| l.iter().copied().chain(*b"\n"))
        .collect();
    let mut wire = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    let mut lines = LineBuffer::default();
    let mut body = DataBody::new(u64::MAX);
    let mut ended = false;
    for piece in wire.chunks(chunk) {
        lines.extend(piece);
        while let Some(line) = lines.next_line(usize::MAX) {
            let Line::Complete(line) = line else {
                unreachable!()
            };
            assert!(!ended, "lines after the end");
            ended = body.line(&line, lines.last_ended_crlf()) == DataLine::End;
        }
    }
    assert!(ended, "the end of DATA was missed");
    assert_eq!(body.message, pop3_fuzz::crlf_normalised(&message));
});

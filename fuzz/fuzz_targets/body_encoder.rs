// SPDX-License-Identifier: AGPL-3.0-only
//! The RETR/TOP body encoder, fed a message in chunks of every size: RETR's
//! output ends in `CRLF . CRLF`, dot-unstuffs back to the CRLF-normalised
//! message (with the CRLF RETR adds to a last line without one), and is as
//! long as the size LIST announces; TOP's output is a complete multi-line
//! body too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::protocol::{BodyEncoder, crlf_size};

fuzz_target!(|data: &[u8]| {
    let (chunk, message) = pop3_fuzz::chunked(data);
    let mut out = Vec::new();
    let mut encoder = BodyEncoder::retr();
    for piece in message.chunks(chunk) {
        encoder.feed(piece, &mut out);
    }
    encoder.finish(&mut out);
    assert!(out.ends_with(b".\r\n"));
    assert!(out.len() == 3 || out.ends_with(b"\r\n.\r\n"), "{out:?}");
    let body = &out[..out.len() - 3];
    let mut expected = pop3_fuzz::crlf_normalised(message);
    if !expected.is_empty() && !expected.ends_with(b"\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(pop3_fuzz::dot_unstuffed(body), expected);
    assert_eq!(crlf_size(message), expected.len() as u64, "LIST's size");

    let lines = u32::from(data.first().copied().unwrap_or(0) % 8);
    let mut out = Vec::new();
    let mut top = BodyEncoder::top(lines);
    for piece in message.chunks(chunk) {
        if top.is_done() {
            break;
        }
        top.feed(piece, &mut out);
    }
    top.finish(&mut out);
    assert!(out.len() == 3 || out.ends_with(b"\r\n.\r\n"), "{out:?}");
});

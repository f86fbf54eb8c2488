// SPDX-License-Identifier: AGPL-3.0-only
//! POP3 line framing and the command parser: bytes in arbitrary chunks
//! become lines no longer than RFC 2449's 255 octets; every line that
//! parses re-serialises (`Command::to_line`) to a line that parses to the
//! same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3::protocol::lines::{Line, LineBuffer};
use pop3::protocol::parse;

const MAX_LINE: usize = 255;

fuzz_target!(|data: &[u8]| {
    let (chunk, data) = pop3_fuzz::chunked(data);
    let mut lines = LineBuffer::default();
    for piece in data.chunks(chunk) {
        lines.extend(piece);
        while let Some(line) = lines.next_line(MAX_LINE) {
            let Line::Complete(line) = line else { continue };
            assert!(line.len() + 2 <= MAX_LINE, "a line past the limit");
            assert!(!line.contains(&b'\n'), "a line holds its LF");
            if let Ok(command) = parse(&line) {
                let again = command.to_line();
                assert_eq!(
                    parse(&again).as_ref(),
                    Ok(&command),
                    "{:?} re-serialised as {:?}",
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(&again)
                );
            }
        }
        assert!(
            lines.pending() <= MAX_LINE + chunk,
            "the buffer grew past a line"
        );
    }
});

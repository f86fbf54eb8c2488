// SPDX-License-Identifier: AGPL-3.0-only
//! What the fuzz targets share: cutting one input into the pieces a
//! target feeds (chunks as the network splits them, messages of an
//! exchange), and the reference forms the properties compare against.

/// The input's first byte chooses how the rest is cut into chunks (1 to
/// 256 octets each), so the fuzzer explores every split of a line or a
/// CRLF across reads.
pub fn chunked(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&n, rest)) => (usize::from(n) + 1, rest),
        None => (1, data),
    }
}

/// Messages of an exchange, separated by a `0xFF 0x00` pair (an input of
/// the fuzzer, not of a real client: a client's messages are base64 lines).
pub fn messages(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xFF && data[i + 1] == 0x00 {
            out.push(&data[start..i]);
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&data[start..]);
    out
}

/// Every bare LF made CRLF; a lone CR left as it is (RFC 1939's size and
/// RETR's bytes count line ends so).
pub fn crlf_normalised(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// RFC 1939 §3 read backwards: the multi-line body before its `.` line,
/// with the leading dot of each line taken off again.
pub fn dot_unstuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at_line_start = true;
    let mut i = 0;
    while i < body.len() {
        if at_line_start && body[i] == b'.' {
            i += 1;
            at_line_start = false;
            continue;
        }
        at_line_start = body[i] == b'\n' && i > 0 && body[i - 1] == b'\r';
        out.push(body[i]);
        i += 1;
    }
    out
}

/// RFC 1939 §7: no two messages of an index share a UID or a UIDL.
pub fn assert_unique(
    entries: &std::collections::HashMap<String, pop3::store::maildir::index::Entry>,
) {
    let mut uids = std::collections::HashSet::new();
    let mut uidls = std::collections::HashSet::new();
    for (key, e) in entries {
        assert!(uids.insert(e.uid), "UID {} given twice ({key})", e.uid);
        assert!(
            uidls.insert(&e.uidl),
            "UIDL {:?} given twice ({key})",
            e.uidl
        );
        assert!(pop3::protocol::valid_uidl(&e.uidl), "{:?}", e.uidl);
    }
}

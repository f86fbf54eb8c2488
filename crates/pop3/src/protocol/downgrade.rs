// SPDX-License-Identifier: AGPL-3.0-only
//! Header downgrading for clients that have not entered UTF-8 mode
//! (RFC 6856 §2.1 with the simplified downgrading of RFC 6858): a message
//! whose header carries raw 8-bit octets (an internationalized message,
//! RFC 6532) must not reach such a client as it is. Every header field
//! with 8-bit octets is rewritten as RFC 2047 encoded-words, which any
//! MIME client decodes for display; fields without them, and the body,
//! are untouched. Pure functions over bytes: the session feeds the header
//! through here and streams the rest as usual.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Headers longer than this are passed on without downgrading: real ones
/// are a few kilobytes, and the session must not buffer without bound.
pub const MAX_HEADER: usize = 256 * 1024;

/// Octets of text per encoded-word: 45 become 60 base64 characters, so a
/// word stays within RFC 2047's 75.
const WORD_OCTETS: usize = 45;

/// Where the header ends in `data`: the index just past the empty line
/// that closes it, if `data` holds it.
pub fn header_end(data: &[u8]) -> Option<usize> {
    let mut start = 0;
    for (i, _) in data.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        let line = &data[start..i];
        if line.is_empty() || line == b"\r" {
            return Some(i + 1);
        }
        start = i + 1;
    }
    None
}

/// The header rewritten for a client outside UTF-8 mode, or `None` when
/// it is plain ASCII and goes out as it is.
pub fn downgrade_header(header: &[u8]) -> Option<Vec<u8>> {
    if header.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(header.len() * 2);
    for field in fields(header) {
        if field.is_ascii() {
            out.extend_from_slice(field);
            continue;
        }
        match field.iter().position(|b| *b == b':') {
            Some(colon) if is_field_name(&field[..colon]) => {
                out.extend_from_slice(&field[..=colon]);
                encode_value(&unfold(&field[colon + 1..]), &mut out);
                out.extend_from_slice(b"\r\n");
            }
            // Not a field (a damaged header): its 8-bit octets become '?'.
            _ => out.extend(field.iter().map(|b| if b.is_ascii() { *b } else { b'?' })),
        }
    }
    Some(out)
}

/// The header cut into fields, each with its continuation lines and line
/// ends; the closing empty line is a "field" of its own.
fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < header.len() {
        if header[i] == b'\n' {
            let next = header.get(i + 1);
            let continues = matches!(next, Some(b' ' | b'\t'));
            if !continues {
                fields.push(&header[start..=i]);
                start = i + 1;
            }
        }
        i += 1;
    }
    if start < header.len() {
        fields.push(&header[start..]);
    }
    fields
}

fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| (33..=126).contains(b) && *b != b':')
}

/// The field body without its line ends and with surrounding blanks gone.
fn unfold(value: &[u8]) -> Vec<u8> {
    let joined: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    let start = joined
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(joined.len());
    let end = joined
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    joined[start..end].to_vec()
}

/// ` =?UTF-8?B?...?=` words, one per folded line, never splitting a
/// character. Octets that are not UTF-8 are labelled UNKNOWN-8BIT
/// (RFC 1428), as the truth about them is unknown.
fn encode_value(value: &[u8], out: &mut Vec<u8>) {
    let (charset, text) = match std::str::from_utf8(value) {
        Ok(s) => ("UTF-8", Some(s)),
        Err(_) => ("UNKNOWN-8BIT", None),
    };
    let mut pieces: Vec<&[u8]> = Vec::new();
    match text {
        Some(s) => {
            let mut start = 0;
            let mut end = 0;
            for (i, c) in s.char_indices() {
                if i + c.len_utf8() - start > WORD_OCTETS && end > start {
                    pieces.push(&value[start..end]);
                    start = end;
                }
                end = i + c.len_utf8();
            }
            if end > start {
                pieces.push(&value[start..end]);
            }
        }
        None => pieces.extend(value.chunks(WORD_OCTETS)),
    }
    for (n, piece) in pieces.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!(" =?{charset}?B?{}?=", B64.encode(piece)).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_words(field_value: &str) -> String {
        let mut bytes = Vec::new();
        for word in field_value.split_whitespace() {
            let inner = word
                .strip_prefix("=?UTF-8?B?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap();
            assert!(word.len() <= 75, "{word}");
            bytes.extend(B64.decode(inner).unwrap());
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn finds_the_end_of_the_header() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(header_end(b"A: b\r\nC: d\r\n"), None);
        assert_eq!(header_end(b"\r\nbody"), Some(2));
    }

    #[test]
    fn ascii_headers_are_left_alone() {
        assert_eq!(downgrade_header(b"Subject: hi\r\n\r\n"), None);
    }

    #[test]
    fn fields_with_utf8_become_encoded_words() {
        let subject = "Grüße aus Köln, und noch viel mehr Text, der gefaltet werden muss: ÄÖÜ";
        let header = format!(
            "From: a@example.org\r\nSubject: {subject}\r\nX-Folded: caf\u{e9}\r\n  au lait\r\n\r\n"
        );
        let out = String::from_utf8(downgrade_header(header.as_bytes()).unwrap()).unwrap();
        assert!(out.is_ascii(), "{out}");
        assert!(
            out.starts_with("From: a@example.org\r\nSubject: =?UTF-8?B?"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\n"));
        let mut fields = out.split("\r\n").collect::<Vec<_>>().into_iter();
        fields.next();
        let mut subject_value = fields.next().unwrap()["Subject:".len()..].to_owned();
        for line in fields.by_ref() {
            if !line.starts_with(' ') {
                assert!(line.starts_with("X-Folded:"), "{line}");
                assert_eq!(decode_words(&line["X-Folded:".len()..]), "café  au lait");
                break;
            }
            subject_value.push_str(line);
        }
        assert_eq!(decode_words(&subject_value), subject);
    }

    #[test]
    fn octets_that_are_not_utf8_are_labelled_unknown() {
        let out = downgrade_header(b"Subject: caf\xe9\n\n").unwrap();
        assert_eq!(out, b"Subject: =?UNKNOWN-8BIT?B?Y2Fm6Q==?=\r\n\n");
        let out = downgrade_header(b"not a field \xff\n\n").unwrap();
        assert_eq!(out, b"not a field ?\n\n");
    }
}

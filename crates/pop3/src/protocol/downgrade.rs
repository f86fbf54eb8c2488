// SPDX-License-Identifier: AGPL-3.0-only
//! Header downgrading for clients that have not entered UTF-8 mode
//! (RFC 6856 §2.1 with the simplified downgrading of RFC 6858): a message
//! whose header carries raw 8-bit octets (an internationalized message,
//! RFC 6532) must not reach such a client as it is. Every header field
//! with 8-bit octets is rewritten as RFC 2047 encoded-words, which any
//! MIME client decodes for display; fields without them, and the body,
//! are untouched. Pure functions over bytes: the session feeds the header
//! through here and streams the rest as usual.
//!
//! Address fields (From, To, Cc, Resent-*, ...) keep their structure: only
//! display names, group names and comments become encoded-words (where
//! RFC 2047 §5 allows them), ASCII addresses stay as they are, so the
//! client still shows the sender and a reply still reaches them. A mailbox
//! whose address itself is not ASCII becomes an empty group named by an
//! encoded-word of the whole mailbox (RFC 6858 §3), which still parses.

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
                let name = &field[..colon];
                out.extend_from_slice(&field[..=colon]);
                let value = unfold(&field[colon + 1..]);
                if name.eq_ignore_ascii_case(b"Return-Path") {
                    return_path(&value, &mut out);
                } else if is_address_field(name) {
                    address_list(&value, &mut out);
                } else {
                    encode_value(&value, &mut out);
                }
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

/// Fields whose value is an address list (RFC 5322 §3.6.2, §3.6.3, §3.6.6).
fn is_address_field(name: &[u8]) -> bool {
    const FIELDS: [&[u8]; 6] = [b"From", b"To", b"Cc", b"Bcc", b"Reply-To", b"Sender"];
    let resent = name.len() > 7 && name[..7].eq_ignore_ascii_case(b"Resent-");
    let base = if resent { &name[7..] } else { name };
    FIELDS.iter().any(|f| f.eq_ignore_ascii_case(base))
}

/// One lexical piece of an address field (RFC 5322 §3.2).
#[derive(Debug)]
enum Token<'a> {
    /// An atom or dot-atom (`j@b.example`, `Jürgen`).
    Word(&'a [u8]),
    /// `"..."`, quotes and escapes included.
    Quoted(&'a [u8]),
    /// `(...)`, nested parentheses included.
    Comment(&'a [u8]),
    /// `<...>`.
    Angle(&'a [u8]),
    /// `,` `:` `;`
    Special(u8),
    Space,
}

fn tokens(value: &[u8]) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        let start = i;
        let token = match value[i] {
            b' ' | b'\t' => {
                while i < value.len() && matches!(value[i], b' ' | b'\t') {
                    i += 1;
                }
                out.push(Token::Space);
                continue;
            }
            b'"' => {
                i += 1;
                while i < value.len() && value[i] != b'"' {
                    i += if value[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(value.len());
                Token::Quoted(&value[start..i])
            }
            b'(' => {
                let mut depth = 0usize;
                while i < value.len() {
                    match value[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                i = i.min(value.len());
                Token::Comment(&value[start..i])
            }
            b'<' => {
                i = memchr::memchr(b'>', &value[i..]).map_or(value.len(), |e| i + e + 1);
                Token::Angle(&value[start..i])
            }
            c @ (b',' | b':' | b';') => {
                i += 1;
                Token::Special(c)
            }
            _ => {
                while i < value.len() && !b" \t\"(<,:;".contains(&value[i]) {
                    i += 1;
                }
                Token::Word(&value[start..i])
            }
        };
        out.push(token);
    }
    out
}

/// The text a phrase shows: words and unquoted strings, one space apart;
/// comments left out.
fn phrase_text(phrase: &[Token<'_>]) -> Vec<u8> {
    let mut text = Vec::new();
    for t in phrase {
        match t {
            Token::Word(w) => text.extend_from_slice(w),
            Token::Quoted(q) => {
                let inner = q.strip_prefix(b"\"").unwrap_or(q);
                let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
                let mut escaped = false;
                for &b in inner {
                    if b == b'\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    escaped = false;
                    text.push(b);
                }
            }
            Token::Space if !text.is_empty() => text.push(b' '),
            _ => {}
        }
    }
    while text.last() == Some(&b' ') {
        text.pop();
    }
    text
}

/// A comment with 8-bit text as `(=?UTF-8?B?...?=)`; others as they are.
fn comment(raw: &[u8], out: &mut Vec<u8>) {
    if raw.is_ascii() {
        out.extend_from_slice(raw);
        return;
    }
    let inner = raw.strip_prefix(b"(").unwrap_or(raw);
    let inner = inner.strip_suffix(b")").unwrap_or(inner);
    out.push(b'(');
    let mut words = Vec::new();
    encode_value(inner, &mut words);
    out.extend_from_slice(words.trim_ascii_start());
    out.push(b')');
}

/// Tokens as they came, comments downgraded.
fn raw(tokens: &[Token<'_>], out: &mut Vec<u8>) {
    for t in tokens {
        match t {
            Token::Word(b) | Token::Quoted(b) | Token::Angle(b) => out.extend_from_slice(b),
            Token::Comment(c) => comment(c, out),
            Token::Special(c) => out.push(*c),
            Token::Space => out.push(b' '),
        }
    }
}

/// A display or group name: as it is when ASCII, else encoded-words of
/// its text (followed by its comments).
fn display_name(phrase: &[Token<'_>], out: &mut Vec<u8>) {
    if phrase.iter().all(ascii_token) {
        raw(phrase, out);
        return;
    }
    space(out);
    // A phrase with an 8-bit `<...>` in it is no display name (a damaged
    // field): all of its text is encoded.
    let damaged = phrase
        .iter()
        .any(|t| matches!(t, Token::Angle(b) if !b.is_ascii()));
    let text = if damaged {
        all_text(phrase)
    } else {
        phrase_text(phrase)
    };
    let mut words = Vec::new();
    encode_value(&text, &mut words);
    out.extend_from_slice(words.trim_ascii_start());
    for t in phrase {
        if let Token::Comment(c) = t {
            out.push(b' ');
            comment(c, out);
        }
    }
    out.push(b' ');
}

/// Whether a token goes out as it is without putting 8-bit octets on
/// the wire (comments are encoded on their own).
fn ascii_token(t: &Token<'_>) -> bool {
    !matches!(t, Token::Word(b) | Token::Quoted(b) | Token::Angle(b) if !b.is_ascii())
}

/// The tokens' bytes as they came, comments and all.
fn all_text(tokens: &[Token<'_>]) -> Vec<u8> {
    let mut text = Vec::new();
    for t in tokens {
        match t {
            Token::Word(b) | Token::Quoted(b) | Token::Angle(b) | Token::Comment(b) => {
                text.extend_from_slice(b)
            }
            Token::Special(c) => text.push(*c),
            Token::Space => text.push(b' '),
        }
    }
    text
}

/// One space, unless the output ends in one already.
fn space(out: &mut Vec<u8>) {
    if out.last() != Some(&b' ') {
        out.push(b' ');
    }
}

/// A mailbox whose address is not ASCII: an empty group named by the
/// whole mailbox, or inside a group (which cannot nest) a comment.
fn foreign_mailbox(mailbox: &[Token<'_>], in_group: bool, out: &mut Vec<u8>) {
    let mut words = Vec::new();
    encode_value(all_text(mailbox).trim_ascii(), &mut words);
    space(out);
    if in_group {
        out.push(b'(');
        out.extend_from_slice(words.trim_ascii_start());
        out.push(b')');
    } else {
        out.extend_from_slice(words.trim_ascii_start());
        out.extend_from_slice(b" :;");
    }
}

/// An address list with only its display names, group names and comments
/// encoded.
fn address_list(value: &[u8], out: &mut Vec<u8>) {
    let all = tokens(value);
    let mut in_group = false;
    let mut start = 0;
    out.push(b' ');
    for (i, t) in all.iter().enumerate() {
        let part = &all[start..i];
        match t {
            Token::Special(b':') if !in_group => {
                display_name(part, out);
                out.push(b':');
                in_group = true;
            }
            Token::Special(c @ (b',' | b';')) => {
                mailbox(part, in_group, out);
                out.push(*c);
                if *c == b';' {
                    in_group = false;
                }
            }
            _ => continue,
        }
        start = i + 1;
    }
    mailbox(&all[start..], in_group, out);
}

/// One mailbox: `phrase <addr>` or a bare `addr-spec`, comments anywhere.
fn mailbox(part: &[Token<'_>], in_group: bool, out: &mut Vec<u8>) {
    let angle = part.iter().position(|t| matches!(t, Token::Angle(_)));
    // The address, and whatever follows it before the next mailbox (which
    // goes out as it is: it must be ASCII too).
    let address_ascii = part[angle.unwrap_or(0)..].iter().all(ascii_token);
    match angle {
        _ if !address_ascii => foreign_mailbox(part, in_group, out),
        Some(a) => {
            display_name(&part[..a], out);
            raw(&part[a..], out);
        }
        None => raw(part, out),
    }
}

/// Return-Path holds one `<addr>`: kept when ASCII, else the null path
/// with the original in a comment.
fn return_path(value: &[u8], out: &mut Vec<u8>) {
    if value.is_ascii() {
        out.push(b' ');
        out.extend_from_slice(value);
        return;
    }
    let mut words = Vec::new();
    encode_value(value, &mut words);
    out.extend_from_slice(b" <> (");
    out.extend_from_slice(words.trim_ascii_start());
    out.push(b')');
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

    /// Found by the `downgrade` fuzz target: 8-bit octets after a mailbox's
    /// ASCII `<address>`, or in a `<...>` inside a group's name, went out as
    /// they came.
    #[test]
    fn nothing_8bit_follows_an_address() {
        let header = b"Cc: J\xc3\xbcrgen <;>-\0n\x80\0\x01\r\nTo: <a@b.example> \xff\r\n\
            From: j>*, >, g<jp:\xe4> om:j>*, g<jple>, gr\r\n\r\n";
        let out = downgrade_header(header).unwrap();
        assert!(out.is_ascii(), "{}", String::from_utf8_lossy(&out));
        assert!(out.ends_with(b"\r\n\r\n"));
    }

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

    /// Decode every encoded-word in a header value, as a display would.
    fn shown(value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("=?UTF-8?B?") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 10..];
            let end = after.find("?=").unwrap();
            out.push_str(std::str::from_utf8(&B64.decode(&after[..end]).unwrap()).unwrap());
            rest = &after[end + 2..];
            // Adjacent encoded-words join without their white space.
            if rest.trim_start().starts_with("=?UTF-8?B?") {
                rest = rest.trim_start();
            }
        }
        out.push_str(rest);
        out.replace("\r\n", "")
    }

    #[test]
    fn address_fields_keep_their_addresses() {
        let header = "From: Jürgen <j@b>\r\nTo: Zoë <z@b>, \"Ann\" <a@b>, 日本 <n@b>,\r\n \"Ünal \\\"U\\\"\" <u@b> (Büro)\r\nCc: Team Ö: x@b, y@b;, plain@b\r\nReply-To: ü@b\r\nResent-To: Ä <ä@b.example>\r\nReturn-Path: <ö@b>\r\n\r\n";
        let out = String::from_utf8(downgrade_header(header.as_bytes()).unwrap()).unwrap();
        assert!(out.is_ascii(), "{out}");
        let field = |name: &str| {
            let start = out.find(&format!("{name}:")).unwrap() + name.len() + 1;
            let end = out[start..].find("\r\n").map(|e| {
                // Include folded continuation lines.
                let mut e = start + e;
                while out[e + 2..].starts_with(' ') {
                    e += 2 + out[e + 2..].find("\r\n").unwrap();
                }
                e
            });
            out[start..end.unwrap()].to_owned()
        };
        assert!(field("From").ends_with(" <j@b>"), "{out}");
        assert_eq!(shown(&field("From")), " Jürgen <j@b>");
        let to = field("To");
        assert!(
            to.contains(" <z@b>,") && to.contains("\"Ann\" <a@b>,") && to.contains(" <n@b>"),
            "{to}"
        );
        assert_eq!(
            shown(&to),
            " Zoë <z@b>, \"Ann\" <a@b>, 日本 <n@b>, Ünal \"U\" <u@b> (Büro)"
        );
        assert_eq!(shown(&field("Cc")), " Team Ö : x@b, y@b;, plain@b");
        // A non-ASCII address: an empty group named by the mailbox.
        let reply = field("Reply-To");
        assert!(reply.ends_with(" :;"), "{reply}");
        assert_eq!(shown(&reply), " ü@b :;");
        assert_eq!(shown(&field("Resent-To")), " Ä <ä@b.example> :;");
        assert_eq!(shown(&field("Return-Path")), " <> (<ö@b>)");
    }

    #[test]
    fn octets_that_are_not_utf8_are_labelled_unknown() {
        let out = downgrade_header(b"Subject: caf\xe9\n\n").unwrap();
        assert_eq!(out, b"Subject: =?UNKNOWN-8BIT?B?Y2Fm6Q==?=\r\n\n");
        let out = downgrade_header(b"not a field \xff\n\n").unwrap();
        assert_eq!(out, b"not a field ?\n\n");
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! LMTP (RFC 2033) without I/O: commands parsed from lines, and the DATA
//! body decoded line by line (dot-unstuffing, every line end made CRLF)
//! under a size limit. The session in `crate::lmtp` owns the socket.

/// One LMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpCommand {
    Lhlo(String),
    /// `MAIL FROM:<path>` with its SIZE= parameter, if any.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    StartTls,
    /// HELO or EHLO: LMTP has only LHLO (RFC 2033 §4.1).
    HeloEhlo,
    Vrfy,
    /// A known command with bad arguments: the reason.
    Bad(&'static str),
    Unknown,
}

/// Parse one command line (without its line end).
pub fn parse_command(line: &[u8]) -> LmtpCommand {
    let Ok(line) = std::str::from_utf8(line) else {
        return LmtpCommand::Bad("command lines are ASCII");
    };
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r.trim()),
        None => (line.trim(), ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "LHLO" if rest.is_empty() => LmtpCommand::Bad("LHLO needs a host name"),
        "LHLO" => LmtpCommand::Lhlo(rest.to_owned()),
        "MAIL" => match path_after(rest, "FROM:") {
            Some((from, params)) => match size_param(params) {
                Ok(size) => LmtpCommand::Mail { from, size },
                Err(why) => LmtpCommand::Bad(why),
            },
            None => LmtpCommand::Bad("syntax: MAIL FROM:<address>"),
        },
        "RCPT" => match path_after(rest, "TO:") {
            Some((to, _)) if !to.is_empty() => LmtpCommand::Rcpt(to),
            _ => LmtpCommand::Bad("syntax: RCPT TO:<address>"),
        },
        "DATA" if rest.is_empty() => LmtpCommand::Data,
        "RSET" if rest.is_empty() => LmtpCommand::Rset,
        "NOOP" => LmtpCommand::Noop,
        "QUIT" if rest.is_empty() => LmtpCommand::Quit,
        "STARTTLS" if rest.is_empty() => LmtpCommand::StartTls,
        "DATA" | "RSET" | "QUIT" | "STARTTLS" => LmtpCommand::Bad("takes no arguments"),
        "HELO" | "EHLO" => LmtpCommand::HeloEhlo,
        "VRFY" => LmtpCommand::Vrfy,
        _ => LmtpCommand::Unknown,
    }
}

/// `FROM:<a@b> PARAMS` (a space after the colon tolerated): the address
/// without brackets and the parameters.
fn path_after<'a>(rest: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    let address = &inner[..end];
    if address.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    Some((address.to_owned(), inner[end + 1..].trim()))
}

fn size_param(params: &str) -> Result<Option<u64>, &'static str> {
    let mut size = None;
    for p in params.split_ascii_whitespace() {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            size = Some(value.parse().map_err(|_| "SIZE= needs a number")?);
        } else if !(key.eq_ignore_ascii_case("BODY")
            && (value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME")))
        {
            return Err("unsupported MAIL parameter");
        }
    }
    Ok(size)
}

/// How a DATA body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataLine {
    /// More to come.
    More,
    /// The `.` line: the message is complete.
    End,
}

/// The message of a DATA command, as lines arrive: dot-stuffing undone,
/// every line ended with CRLF (bare LF normalised), and no more kept than
/// `limit` octets (the rest is counted, not stored).
///
/// The message ends only at `CRLF . CRLF` (RFC 5321 §4.1.1.4): a `.` line
/// next to a bare LF is data, so that pop3d is never the lenient half of
/// an SMTP-smuggling pair (a relay that passes `LF . LF` through, and a
/// receiver that ends the message there and reads the rest as commands).
#[derive(Debug)]
pub struct DataBody {
    pub message: Vec<u8>,
    limit: u64,
    /// Octets of the message, kept or not.
    pub seen: u64,
    /// Whether the line before ended in CRLF (the DATA command counts).
    after_crlf: bool,
}

impl DataBody {
    pub fn new(limit: u64) -> DataBody {
        DataBody {
            message: Vec::new(),
            limit,
            seen: 0,
            after_crlf: true,
        }
    }

    /// Take one line (without its line end); `crlf`: it ended in CRLF
    /// rather than a bare LF.
    pub fn line(&mut self, line: &[u8], crlf: bool) -> DataLine {
        let after_crlf = std::mem::replace(&mut self.after_crlf, crlf);
        if line == b"." && crlf && after_crlf {
            return DataLine::End;
        }
        // RFC 5321 §4.5.2: a leading dot is removed when more follows it.
        let line = match line {
            [b'.', rest @ ..] if !rest.is_empty() => rest,
            _ => line,
        };
        self.seen += line.len() as u64 + 2;
        if self.seen <= self.limit {
            self.message.extend_from_slice(line);
            self.message.extend_from_slice(b"\r\n");
        }
        DataLine::More
    }

    /// Whether the message went past the limit.
    pub fn too_large(&self) -> bool {
        self.seen > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LmtpCommand as C;

    #[test]
    fn commands() {
        let cases: &[(&[u8], LmtpCommand)] = &[
            (b"LHLO mx.example", C::Lhlo("mx.example".into())),
            (b"lhlo", C::Bad("LHLO needs a host name")),
            (
                b"MAIL FROM:<a@b.example> SIZE=1200 BODY=8BITMIME",
                C::Mail {
                    from: "a@b.example".into(),
                    size: Some(1200),
                },
            ),
            (
                b"mail from: <>",
                C::Mail {
                    from: String::new(),
                    size: None,
                },
            ),
            (b"MAIL FROM:<a@b> SIZE=x", C::Bad("SIZE= needs a number")),
            (
                b"MAIL FROM:<a@b> AUTH=<>",
                C::Bad("unsupported MAIL parameter"),
            ),
            (b"MAIL FROM:a@b", C::Bad("syntax: MAIL FROM:<address>")),
            (
                b"RCPT TO:<alice@example.org>",
                C::Rcpt("alice@example.org".into()),
            ),
            (b"RCPT TO:<>", C::Bad("syntax: RCPT TO:<address>")),
            (b"RCPT TO:<a b@c>", C::Bad("syntax: RCPT TO:<address>")),
            (b"DATA", C::Data),
            (b"DATA now", C::Bad("takes no arguments")),
            (b"rset", C::Rset),
            (b"NOOP anything", C::Noop),
            (b"QUIT", C::Quit),
            (b"STARTTLS", C::StartTls),
            (b"EHLO x", C::HeloEhlo),
            (b"HELO x", C::HeloEhlo),
            (b"VRFY alice", C::Vrfy),
            (b"BDAT 10", C::Unknown),
            (b"\xff\xfe", C::Bad("command lines are ASCII")),
        ];
        for (line, want) in cases {
            assert_eq!(
                &parse_command(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn data_is_unstuffed_normalised_and_bounded() {
        let mut body = DataBody::new(1000);
        for line in [&b"Subject: x"[..], b"", b"..leading dot", b"bare", b"."] {
            if body.line(line, true) == DataLine::End {
                break;
            }
        }
        assert_eq!(body.message, b"Subject: x\r\n\r\n.leading dot\r\nbare\r\n");
        assert!(!body.too_large());
        let mut small = DataBody::new(10);
        small.line(b"0123456789", true);
        small.line(b"more", true);
        assert!(small.too_large());
        assert!(small.message.is_empty(), "nothing kept past the limit");
        assert_eq!(small.seen, 18);
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_message() {
        // (line, ended in CRLF) as a smuggler would send them.
        let smuggled: &[(&[u8], bool)] = &[
            (b"x", false),
            (b".", false),
            (b"MAIL FROM:<a>", true),
            (b"x", true),
            (b".", false),
            (b"y", false),
            (b".", true),
            (b"z", true),
        ];
        let mut body = DataBody::new(1000);
        for (line, crlf) in smuggled {
            assert_eq!(body.line(line, *crlf), DataLine::More, "{line:?}");
        }
        assert_eq!(body.line(b".", true), DataLine::End);
        assert_eq!(
            body.message,
            b"x\r\n.\r\nMAIL FROM:<a>\r\nx\r\n.\r\ny\r\n.\r\nz\r\n"
        );
        // Right after DATA, a lone dot ends an empty message.
        assert_eq!(DataBody::new(10).line(b".", true), DataLine::End);
    }

    proptest::proptest! {
        #[test]
        fn any_line_parses_without_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_command(&line);
            let mut body = DataBody::new(100);
            let _ = body.line(&line, true);
            proptest::prop_assert!(body.message.len() <= 100);
        }
    }
}

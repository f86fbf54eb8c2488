// SPDX-License-Identifier: AGPL-3.0-only
//! Command-line parser (RFC 1939 §3, RFC 2449 §3): one line of bytes, CRLF
//! already removed, becomes a [`Command`] or a [`ParseError`]. No IO here.

use std::fmt;

/// A message number as the client wrote it: 1-based, never zero.
pub type MsgNum = u32;

/// One POP3 command with its arguments already checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// The whole rest of the line: RFC 1939 lets the password hold spaces.
    Pass(Vec<u8>),
    Apop {
        user: String,
        digest: String,
    },
    Auth {
        mechanism: Option<String>,
        initial_response: Option<String>,
    },
    Quit,
    Stat,
    List(Option<MsgNum>),
    Retr(MsgNum),
    Dele(MsgNum),
    Noop,
    Rset,
    Top(MsgNum, u32),
    Uidl(Option<MsgNum>),
    Capa,
    Stls,
    Utf8,
}

impl Command {
    /// The keyword, upper case, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Quit => "QUIT",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Utf8 => "UTF8",
        }
    }

    /// The command as a client sends it, CRLF excluded: [`parse`] reads
    /// it back as the same command.
    pub fn to_line(&self) -> Vec<u8> {
        let name = self.name();
        let text = match self {
            Command::User(user) => format!("{name} {user}"),
            Command::Pass(password) => {
                let mut line = b"PASS ".to_vec();
                line.extend_from_slice(password);
                return line;
            }
            Command::Apop { user, digest } => format!("{name} {user} {digest}"),
            Command::Auth {
                mechanism,
                initial_response,
            } => [
                Some(name),
                mechanism.as_deref(),
                initial_response.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
            Command::List(Some(n)) | Command::Uidl(Some(n)) => format!("{name} {n}"),
            Command::Retr(n) | Command::Dele(n) => format!("{name} {n}"),
            Command::Top(n, lines) => format!("{name} {n} {lines}"),
            Command::Quit
            | Command::Stat
            | Command::List(None)
            | Command::Noop
            | Command::Rset
            | Command::Uidl(None)
            | Command::Capa
            | Command::Stls
            | Command::Utf8 => name.to_owned(),
        };
        text.into_bytes()
    }
}

/// Why a line is not a command. Every variant maps to a plain `-ERR`; the
/// session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    Empty,
    UnknownCommand,
    MissingArgument(&'static str),
    TooManyArguments,
    /// 0, a sign, a non-digit or a number beyond `u32`.
    BadNumber,
    /// An argument longer than RFC 2449's 40 octets, or not valid UTF-8.
    BadArgument,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("Empty command"),
            ParseError::UnknownCommand => f.write_str("Unknown command"),
            ParseError::MissingArgument(what) => write!(f, "Missing argument: {what}"),
            ParseError::TooManyArguments => f.write_str("Too many arguments"),
            ParseError::BadNumber => f.write_str("Invalid message number"),
            ParseError::BadArgument => f.write_str("Invalid argument"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Longest argument RFC 2449 §3 allows (SASL initial responses excepted).
const MAX_ARG: usize = 40;

/// No command takes more arguments than this (APOP and TOP take two, AUTH
/// a mechanism and an initial response).
const MAX_ARGUMENTS: usize = 2;

/// Parse one command line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = trim_line_end(line);
    let (keyword, rest) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if keyword.is_empty() {
        return Err(if line.iter().all(|b| *b == b' ') {
            ParseError::Empty
        } else {
            ParseError::UnknownCommand
        });
    }
    if keyword.len() > 4 {
        return Err(ParseError::UnknownCommand);
    }
    let mut kw = [0u8; 4];
    kw[..keyword.len()].copy_from_slice(keyword);
    kw.make_ascii_uppercase();
    let kw = &kw[..keyword.len()];

    // PASS keeps its argument verbatim, spaces and all.
    if kw == b"PASS" {
        if rest.is_empty() {
            return Err(ParseError::MissingArgument("password"));
        }
        return Ok(Command::Pass(rest.to_vec()));
    }

    let args = split_args(rest)?;
    let n = args.len();
    let cmd = match kw {
        b"USER" => Command::User(one_text(&args, "user name")?),
        b"APOP" => {
            exact(n, 2, "user name and digest")?;
            Command::Apop {
                user: text(args[0])?,
                digest: text(args[1])?,
            }
        }
        b"AUTH" => {
            if n > 2 {
                return Err(ParseError::TooManyArguments);
            }
            let mechanism = args.first().map(|a| text(a)).transpose()?;
            // The initial response is base64 and may be long (RFC 4954
            // style); a control character is never base64.
            let initial_response = match args.get(1) {
                Some(a) if a.iter().any(u8::is_ascii_control) => {
                    return Err(ParseError::BadArgument);
                }
                Some(a) => Some(
                    std::str::from_utf8(a)
                        .map_err(|_| ParseError::BadArgument)?
                        .to_owned(),
                ),
                None => None,
            };
            Command::Auth {
                mechanism,
                initial_response,
            }
        }
        b"QUIT" => none(n, Command::Quit)?,
        b"STAT" => none(n, Command::Stat)?,
        b"NOOP" => none(n, Command::Noop)?,
        b"RSET" => none(n, Command::Rset)?,
        b"CAPA" => none(n, Command::Capa)?,
        b"STLS" => none(n, Command::Stls)?,
        b"UTF8" => none(n, Command::Utf8)?,
        b"LIST" => Command::List(optional_number(&args)?),
        b"UIDL" => Command::Uidl(optional_number(&args)?),
        b"RETR" => Command::Retr(one_number(&args)?),
        b"DELE" => Command::Dele(one_number(&args)?),
        b"TOP" => {
            exact(n, 2, "message number and line count")?;
            Command::Top(msg_number(args[0])?, count(args[1])?)
        }
        _ => return Err(ParseError::UnknownCommand),
    };
    Ok(cmd)
}

/// Strip the line end: an LF, for callers that keep it, and every CR
/// before it. A line ending CR CR LF is read as its text (no argument, a
/// password included, ends in CR), so every command read can be written
/// back as a line that reads the same ([`Command::to_line`]).
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let end = line.iter().rposition(|b| *b != b'\r').map_or(0, |i| i + 1);
    &line[..end]
}

fn split_args(rest: &[u8]) -> Result<Vec<&[u8]>, ParseError> {
    let mut args = Vec::with_capacity(MAX_ARGUMENTS);
    for arg in rest.split(|b| *b == b' ').filter(|a| !a.is_empty()) {
        if args.len() == MAX_ARGUMENTS {
            return Err(ParseError::TooManyArguments);
        }
        args.push(arg);
    }
    Ok(args)
}

fn exact(n: usize, want: usize, what: &'static str) -> Result<(), ParseError> {
    match n.cmp(&want) {
        std::cmp::Ordering::Less => Err(ParseError::MissingArgument(what)),
        std::cmp::Ordering::Greater => Err(ParseError::TooManyArguments),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

fn none(n: usize, cmd: Command) -> Result<Command, ParseError> {
    if n == 0 {
        Ok(cmd)
    } else {
        Err(ParseError::TooManyArguments)
    }
}

fn text(arg: &[u8]) -> Result<String, ParseError> {
    if arg.len() > MAX_ARG || arg.iter().any(|b| b.is_ascii_control()) {
        return Err(ParseError::BadArgument);
    }
    std::str::from_utf8(arg)
        .map(str::to_owned)
        .map_err(|_| ParseError::BadArgument)
}

fn one_text(args: &[&[u8]], what: &'static str) -> Result<String, ParseError> {
    exact(args.len(), 1, what)?;
    text(args[0])
}

/// A decimal count without sign: `0..=u32::MAX`.
fn count(arg: &[u8]) -> Result<u32, ParseError> {
    if arg.is_empty() || arg.len() > 10 || !arg.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadNumber);
    }
    let mut v: u64 = 0;
    for d in arg {
        v = v * 10 + u64::from(d - b'0');
    }
    u32::try_from(v).map_err(|_| ParseError::BadNumber)
}

fn msg_number(arg: &[u8]) -> Result<MsgNum, ParseError> {
    match count(arg)? {
        0 => Err(ParseError::BadNumber),
        n => Ok(n),
    }
}

fn one_number(args: &[&[u8]]) -> Result<MsgNum, ParseError> {
    exact(args.len(), 1, "message number")?;
    msg_number(args[0])
}

fn optional_number(args: &[&[u8]]) -> Result<Option<MsgNum>, ParseError> {
    match args {
        [] => Ok(None),
        [one] => msg_number(one).map(Some),
        _ => Err(ParseError::TooManyArguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        parse(s.as_bytes())
    }

    /// Found by the `pop3_command` fuzz target: `PASS x` CR CR LF read as
    /// a password ending in CR, which no line can carry back.
    #[test]
    fn every_command_read_writes_back_as_a_line_that_reads_the_same() {
        assert_eq!(p("PASS x\r\r"), Ok(Command::Pass(b"x".to_vec())));
        assert_eq!(p("PASS \x02\r\r\r"), Ok(Command::Pass(b"\x02".to_vec())));
        assert_eq!(p("AUTH PPOP mrbo\r "), Err(ParseError::BadArgument));
        for line in [
            "USER alice",
            "PASS  two  words ",
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
            "AUTH",
            "AUTH PLAIN",
            "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "LIST",
            "LIST 3",
            "UIDL 1",
            "TOP 1 0",
            "retr 7",
            "CAPA",
            "UTF8",
        ] {
            let command = p(line).unwrap();
            assert_eq!(parse(&command.to_line()), Ok(command), "{line}");
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<Command, ParseError>)] = &[
            ("QUIT", Ok(Command::Quit)),
            ("quit", Ok(Command::Quit)),
            ("QuIt\r", Ok(Command::Quit)),
            ("STAT", Ok(Command::Stat)),
            ("LIST", Ok(Command::List(None))),
            ("LIST 2", Ok(Command::List(Some(2)))),
            ("list  2 ", Ok(Command::List(Some(2)))),
            ("LIST 0", Err(ParseError::BadNumber)),
            ("LIST -1", Err(ParseError::BadNumber)),
            ("LIST +1", Err(ParseError::BadNumber)),
            ("LIST 4294967295", Ok(Command::List(Some(u32::MAX)))),
            ("LIST 4294967296", Err(ParseError::BadNumber)),
            ("LIST 99999999999999999999", Err(ParseError::BadNumber)),
            ("LIST 1 2", Err(ParseError::TooManyArguments)),
            ("LIST x", Err(ParseError::BadNumber)),
            ("RETR", Err(ParseError::MissingArgument("message number"))),
            ("RETR 1", Ok(Command::Retr(1))),
            ("DELE 7", Ok(Command::Dele(7))),
            ("TOP 1 0", Ok(Command::Top(1, 0))),
            ("TOP 1 10", Ok(Command::Top(1, 10))),
            ("TOP 0 10", Err(ParseError::BadNumber)),
            (
                "TOP 1",
                Err(ParseError::MissingArgument("message number and line count")),
            ),
            ("TOP 1 2 3", Err(ParseError::TooManyArguments)),
            ("UIDL", Ok(Command::Uidl(None))),
            ("UIDL 3", Ok(Command::Uidl(Some(3)))),
            ("NOOP", Ok(Command::Noop)),
            ("NOOP x", Err(ParseError::TooManyArguments)),
            ("RSET", Ok(Command::Rset)),
            ("CAPA", Ok(Command::Capa)),
            ("STLS", Ok(Command::Stls)),
            ("UTF8", Ok(Command::Utf8)),
            ("USER mrose", Ok(Command::User("mrose".into()))),
            ("USER", Err(ParseError::MissingArgument("user name"))),
            ("USER a b", Err(ParseError::TooManyArguments)),
            ("PASS secret", Ok(Command::Pass(b"secret".to_vec()))),
            (
                "PASS  two words ",
                Ok(Command::Pass(b" two words ".to_vec())),
            ),
            ("PASS", Err(ParseError::MissingArgument("password"))),
            (
                "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                Ok(Command::Apop {
                    user: "mrose".into(),
                    digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
                }),
            ),
            (
                "AUTH",
                Ok(Command::Auth {
                    mechanism: None,
                    initial_response: None,
                }),
            ),
            (
                "AUTH PLAIN =",
                Ok(Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial_response: Some("=".into()),
                }),
            ),
            ("", Err(ParseError::Empty)),
            ("   ", Err(ParseError::Empty)),
            (":", Err(ParseError::UnknownCommand)),
            (" QUIT", Err(ParseError::UnknownCommand)),
            ("GET / HTTP/1.1", Err(ParseError::UnknownCommand)),
            ("QUITX", Err(ParseError::UnknownCommand)),
            ("QUI", Err(ParseError::UnknownCommand)),
        ];
        for (line, want) in cases {
            assert_eq!(&p(line), want, "line {line:?}");
        }
    }

    #[test]
    fn long_argument_is_refused() {
        let user = "u".repeat(41);
        assert_eq!(p(&format!("USER {user}")), Err(ParseError::BadArgument));
        let ok = "u".repeat(40);
        assert_eq!(p(&format!("USER {ok}")), Ok(Command::User(ok)));
    }

    #[test]
    fn argument_count_is_bounded() {
        assert_eq!(
            parse(b"LIST 1 2 3 4 5 6 7 8 9"),
            Err(ParseError::TooManyArguments)
        );
    }

    #[test]
    fn nul_and_controls_are_refused() {
        assert_eq!(p("USER a\0b"), Err(ParseError::BadArgument));
        assert!(p("\0\0\0").is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn keywords_are_case_insensitive(n in 1u32..1000, mask in 0u8..16) {
            let word: String = "RETR".chars().enumerate()
                .map(|(i, c)| if mask & (1 << i) != 0 { c.to_ascii_lowercase() } else { c })
                .collect();
            proptest::prop_assert_eq!(p(&format!("{word} {n}")), Ok(Command::Retr(n)));
        }
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! `[storage] uidl_format`: how the UIDL string of a message seen for the
//! first time is made, with Dovecot's variables so that a user moving from
//! another server keeps the strings their client knows. A string, once
//! given, is stored and never made again: changing the format changes
//! only the strings of messages that arrive later.
//!
//! Variables: `%u` UID, `%v` UID validity, `%m` MD5 of the header section
//! (hex), `%f` the Maildir file's base name, `%g` the message's GUID (on
//! Maildir the base name, as Dovecot's Maildir GUID), `%%` a percent
//! sign. Between `%` and the letter: a width (`08`: zero-padded, `8`:
//! space-padded is refused, as a UIDL holds no space) and `X` or `x` for
//! lowercase hexadecimal (Dovecot writes lowercase for both).

use md5::{Digest, Md5};

/// Dovecot's default, and pop3d's.
pub const DEFAULT: &str = crate::config::DEFAULT_UIDL_FORMAT;

/// `storage.uidl_format`, checked without a store: it parses, makes a
/// different UIDL for each message, and names nothing the store lacks.
pub fn check_config(config: &crate::config::Pop3Config) -> Result<(), crate::config::SetupError> {
    let fail = |why: &str| Err(crate::config::SetupError::new("storage.uidl_format", why));
    let format = UidlFormat::parse(&config.storage.uidl_format)
        .map_err(|r| crate::config::SetupError::new("storage.uidl_format", r))?;
    if !format.is_unique() {
        return fail(
            "must hold %u, %m, %f or %g: without one of them every message gets the same UIDL",
        );
    }
    if config.storage.backend == crate::config::StorageBackend::Postgres && format.uses(Var::File) {
        return fail("%f names a Maildir file, and PostgreSQL keeps none; use %u, %v, %m or %g");
    }
    Ok(())
}

/// A parsed `uidl_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlFormat {
    pieces: Vec<Piece>,
}

/// One piece of a format: text as written, or a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var { var: Var, width: usize, hex: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Uid,
    Validity,
    HeaderMd5,
    File,
    Guid,
}

/// What a message offers the format.
pub struct Facts<'a> {
    pub uid: u32,
    pub validity: u32,
    /// The Maildir base name; `None` where the store has no files.
    pub file: Option<&'a str>,
    /// The store's GUID for the message.
    pub guid: Option<&'a str>,
    /// The message's bytes from its start, at least through the end of
    /// the header section (read only when the format has `%m`).
    pub header: Option<&'a [u8]>,
}

impl Default for UidlFormat {
    fn default() -> Self {
        UidlFormat::parse(DEFAULT).expect("the default format parses")
    }
}

impl UidlFormat {
    /// Parse a format; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<UidlFormat, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                if !(0x21..=0x7e).contains(&(c as u32)) {
                    return Err(format!(
                        "{c:?} cannot appear in a UIDL (printable ASCII without spaces only)"
                    ));
                }
                literal.push(c);
                continue;
            }
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            let hex = chars.next_if(|c| matches!(c, 'X' | 'x')).is_some();
            let var = match chars.next() {
                Some('%') if digits.is_empty() && !hex => {
                    literal.push('%');
                    continue;
                }
                Some('u') => Var::Uid,
                Some('v') => Var::Validity,
                Some('m') => Var::HeaderMd5,
                Some('f') => Var::File,
                Some('g') => Var::Guid,
                Some(other) => {
                    return Err(format!(
                        "unknown variable %{digits}{}{other}; use %u, %v, %m, %f, %g or %%",
                        if hex { "X" } else { "" }
                    ));
                }
                None => return Err("ends with a lone %".into()),
            };
            if !digits.is_empty() && !digits.starts_with('0') {
                return Err(format!(
                    "%{digits}: a width pads with spaces, which a UIDL cannot hold; write %0{digits}"
                ));
            }
            let width = digits.parse().unwrap_or(0);
            if width > 70 {
                return Err(format!("width {width} is longer than a UIDL (70)"));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Var { var, width, hex });
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        if pieces.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(UidlFormat { pieces })
    }

    /// The pieces, in order (a store that renders elsewhere: SQL).
    pub fn pieces(&self) -> impl Iterator<Item = &Piece> {
        self.pieces.iter()
    }

    /// Whether the format uses `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Var { var: v, .. } if *v == var))
    }

    /// Whether it tells messages apart: it holds the UID, the file name,
    /// the GUID or the header's MD5 (two copies of one message share that
    /// one; the store gives the second the default format's string).
    pub fn is_unique(&self) -> bool {
        [Var::Uid, Var::File, Var::Guid, Var::HeaderMd5]
            .iter()
            .any(|v| self.uses(*v))
    }

    /// The string for one message; `None` when it needs a fact the store
    /// lacks, or the result is not a valid UIDL (too long): the caller
    /// falls back to the default format.
    pub fn render(&self, facts: &Facts<'_>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            let (var, width, hex) = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Var { var, width, hex } => (*var, *width, *hex),
            };
            let value = match var {
                Var::Uid => number(facts.uid, hex),
                Var::Validity => number(facts.validity, hex),
                Var::HeaderMd5 => crate::hex::encode(&header_md5(facts.header?)),
                Var::File => facts.file?.to_owned(),
                Var::Guid => facts.guid?.to_owned(),
            };
            for _ in value.len()..width {
                out.push('0');
            }
            out.push_str(&value);
        }
        crate::protocol::valid_uidl(&out).then_some(out)
    }
}

fn number(n: u32, hex: bool) -> String {
    if hex { format!("{n:x}") } else { n.to_string() }
}

/// MD5 over the header section: every octet up to and including the
/// empty line that ends it (the whole message when there is none).
pub fn header_md5(message: &[u8]) -> [u8; 16] {
    Md5::digest(&message[..header_len(message)]).into()
}

/// Octets of the header section, with the empty line that ends it.
pub fn header_len(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| at + p + 1);
        let line = &message[at..end];
        if line == b"\n" || line == b"\r\n" {
            return end;
        }
        at = end;
    }
    message.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(uid: u32, validity: u32) -> Facts<'static> {
        Facts {
            uid,
            validity,
            file: Some("1700000000.M1P1.host"),
            guid: Some("1700000000.M1P1.host"),
            header: Some(b"Subject: x\r\n\r\nbody\r\n"),
        }
    }

    #[test]
    fn formats_of_other_servers() {
        let f = |s: &str| {
            UidlFormat::parse(s)
                .unwrap()
                .render(&facts(26, 1_700_000_000))
        };
        assert_eq!(f(DEFAULT).unwrap(), "0000001a6553f100");
        assert_eq!(f("UID%u-%v").unwrap(), "UID26-1700000000");
        assert_eq!(f("%v.%u").unwrap(), "1700000000.26");
        assert_eq!(f("%08Xv%08Xu").unwrap(), "6553f1000000001a");
        assert_eq!(f("%f").unwrap(), "1700000000.M1P1.host");
        assert_eq!(f("%g").unwrap(), "1700000000.M1P1.host");
        assert_eq!(f("%%%u").unwrap(), "%26");
        assert_eq!(
            f("%m").unwrap(),
            crate::hex::encode(&Md5::digest(b"Subject: x\r\n\r\n"))
        );
    }

    #[test]
    fn missing_facts_and_bad_formats() {
        let no_file = Facts {
            file: None,
            ..facts(1, 1)
        };
        assert_eq!(UidlFormat::parse("%f").unwrap().render(&no_file), None);
        assert_eq!(
            UidlFormat::parse(&"x".repeat(71))
                .unwrap()
                .render(&facts(1, 1)),
            None
        );
        for bad in ["", "%", "%q", "%8u", "a b", "%099u"] {
            assert!(UidlFormat::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!UidlFormat::parse("%v").unwrap().is_unique());
        assert!(UidlFormat::parse("x%u").unwrap().is_unique());
    }

    #[test]
    fn header_section() {
        assert_eq!(header_len(b"A: b\n\nbody"), 6);
        assert_eq!(header_len(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(header_len(b"A: b\r\nC: d"), 10);
        assert_eq!(header_len(b"\r\nbody"), 2);
    }
}

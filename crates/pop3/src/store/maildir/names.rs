// SPDX-License-Identifier: AGPL-3.0-only
//! What a Maildir file's name says (maildir(5)): the unique key before
//! `:`, the size fields pop3d and Dovecot add (`,S=` on disk, `,W=` as
//! sent), the UIDL an imported message carries (`,U=` in hex), and the
//! `:2,` flags.

/// The key of a file name: the name without its `:` info part.
pub(super) fn key_of(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// `,W=<n>` in a Maildir name is the size with CRLF line ends.
pub(super) fn size_from_name(name: &str) -> Option<u64> {
    let info_start = name.find(':').unwrap_or(name.len());
    name[..info_start]
        .split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|v| v.parse().ok())
}

/// A Maildir file name with the seen flag: the `:2,` info with `S` among
/// its flags, kept in ASCII order as maildir(5) asks. `None` for a name
/// with an info part of another version, which is left alone.
pub(super) fn seen_name(name: &str) -> Option<String> {
    let (key, flags) = match name.split_once(':') {
        None => (name, ""),
        Some((key, info)) => (key, info.strip_prefix("2,")?),
    };
    let mut flags: Vec<char> = flags.chars().collect();
    if !flags.contains(&'S') {
        flags.push('S');
        flags.sort_unstable();
    }
    Some(format!("{key}:2,{}", flags.into_iter().collect::<String>()))
}

/// The name field that carries an imported message's UIDL, in hex.
pub(super) const UIDL_FIELD: &str = "U=";

/// The UIDL a delivered file's name carries, if any (see
/// [`super::deliver::deliver`]).
pub(super) fn uidl_in_name(key: &str) -> Option<String> {
    let hex = key
        .split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix(UIDL_FIELD))?;
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    String::from_utf8(bytes)
        .ok()
        .filter(|u| crate::protocol::valid_uidl(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_names() {
        assert_eq!(seen_name("1.M2.host,S=5").unwrap(), "1.M2.host,S=5:2,S");
        assert_eq!(seen_name("1.M2.host:2,RF").unwrap(), "1.M2.host:2,FRS");
        assert_eq!(seen_name("1.M2.host:2,ST").unwrap(), "1.M2.host:2,ST");
        assert_eq!(seen_name("1.M2.host:1,x"), None);
    }

    #[test]
    fn sizes_from_names() {
        assert_eq!(size_from_name("1.M2.host,S=100,W=104:2,S"), Some(104));
        assert_eq!(size_from_name("1.M2.host,S=100:2,"), None);
        assert_eq!(size_from_name("1.M2.host:2,W=5"), None);
    }

    #[test]
    fn uidls_in_names() {
        assert_eq!(key_of("1.M2.host,U=6162:2,S"), "1.M2.host,U=6162");
        assert_eq!(uidl_in_name("1.M2.host,U=6162").as_deref(), Some("ab"));
        assert_eq!(
            uidl_in_name("1.M2.host,S=5,U=6162,W=6").as_deref(),
            Some("ab")
        );
        // Odd length, not hex, a space (not a valid UIDL), none at all.
        for bad in ["1.M2.h,U=616", "1.M2.h,U=zz", "1.M2.h,U=6120", "1.M2.h"] {
            assert_eq!(uidl_in_name(bad), None, "{bad}");
        }
    }
}

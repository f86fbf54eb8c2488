// SPDX-License-Identifier: AGPL-3.0-only
//! MD5-CRYPT (`$1$salt$hash`, Poul-Henning Kamp's FreeBSD crypt): what
//! Postfixadmin, older Dovecot setups and many LDAP directories still
//! store. Weak (1,000 rounds of MD5): read for secrets carried over, and
//! made only when asked for by name (`hash-password --scheme MD5-CRYPT`).

use md5::{Digest, Md5};

const MAGIC: &str = "$1$";
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A salt character for a random octet.
pub fn salt_char(b: u8) -> char {
    ITOA64[usize::from(b & 0x3f)] as char
}

/// Whether `data` is an MD5-CRYPT string.
pub fn is_md5_crypt(data: &str) -> bool {
    data.strip_prefix(MAGIC)
        .and_then(|rest| rest.split_once('$'))
        .is_some_and(|(salt, hash)| salt.len() <= 8 && hash.len() == 22)
}

/// The full `$1$salt$hash` string for `password` and `salt` (at most 8
/// characters are used, as in the original).
pub fn md5_crypt(password: &[u8], salt: &str) -> String {
    let salt = salt.split('$').next().unwrap_or("");
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(digest);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(digest);
        } else {
            c.update(password);
        }
        digest = c.finalize();
    }
    let d = digest;
    let mut out = format!("{MAGIC}{}$", String::from_utf8_lossy(salt));
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            (u32::from(d[a]) << 16) | (u32::from(d[b]) << 8) | u32::from(d[c]),
            4,
        );
    }
    put(u32::from(d[11]), 2);
    out
}

/// Check `password` against a stored `$1$salt$hash`, in constant time in
/// the compared bytes.
pub fn verify(stored: &str, password: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let Some(salt) = stored.strip_prefix(MAGIC) else {
        return false;
    };
    let computed = md5_crypt(password, salt);
    computed.len() == stored.len() && bool::from(computed.as_bytes().ct_eq(stored.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `openssl passwd -1 -salt SALT PASSWORD`.
    #[test]
    fn agrees_with_openssl() {
        for (password, salt, expected) in [
            ("password", "saltsalt", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"),
            ("correct horse", "ab", "$1$ab$.ThsTrbyIbEahEdE8LNwj1"),
            ("", "12345678", "$1$12345678$xek.CpjQUVgdf/P2N9KQf/"),
            ("pässwört", "x", "$1$x$zVCt7PGrA/rx/zaF3E72Z."),
        ] {
            assert_eq!(md5_crypt(password.as_bytes(), salt), expected);
            assert!(verify(expected, password.as_bytes()));
            assert!(!verify(expected, b"wrong"));
            assert!(is_md5_crypt(expected));
        }
        assert!(!is_md5_crypt("$6$salt$hash"));
        assert!(!verify("$6$x$y", b"password"));
    }
}

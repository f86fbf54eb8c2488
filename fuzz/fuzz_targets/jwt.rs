// SPDX-License-Identifier: AGPL-3.0-only
//! Bearer tokens before any signature check: a validator holding one
//! HS256 key is given arbitrary tokens (and tokens shaped as JWTs around
//! arbitrary header and claims, `alg: none` included). None of them names
//! a user: only a token signed with the key may, and the fuzzer does not
//! have it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pop3::auth::bearer::BearerValidator;
use pop3::config::OAuthConfig;

fn validator() -> &'static BearerValidator {
    static V: OnceLock<(tempfile_dir::Dir, BearerValidator)> = OnceLock::new();
    &V.get_or_init(|| {
        let dir = tempfile_dir::Dir::new();
        let key = dir.0.join("hmac");
        std::fs::write(&key, "a secret of at least thirty-two bytes, for HS256").unwrap();
        let config = OAuthConfig {
            issuer: Some("https://issuer.example".into()),
            audience: Some("pop3".into()),
            hmac_secret_file: Some(key),
            algorithms: vec!["HS256".into()],
            ..OAuthConfig::default()
        };
        let v = BearerValidator::from_config(&config).unwrap();
        (dir, v)
    })
    .1
}

/// A directory of this process, removed at exit.
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!("pop3-fuzz-jwt-{}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for group in data.chunks(3) {
        let n = group.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - group.len()));
        for i in 0..=group.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let parts = pop3_fuzz::messages(data);
    let token = match parts.as_slice() {
        // Header, claims and signature, each base64url-encoded.
        [header, claims, signature] => {
            format!(
                "{}.{}.{}",
                b64url(header),
                b64url(claims),
                b64url(signature)
            )
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    let named = runtime().block_on(validator().validate(&token));
    assert!(named.is_err(), "{token:?} named {named:?}");
});

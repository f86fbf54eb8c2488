// SPDX-License-Identifier: AGPL-3.0-only
//! Every SASL server mechanism fed arbitrary client messages through its
//! state machine, with the secrets side stubbed by one user, `alice`,
//! whose secret is `{PLAIN}secret` or her SCRAM stored keys. The input's
//! first byte picks the mechanism, the second whether the connection has
//! a `tls-exporter` binding; the rest is the client's messages.
//!
//! Whatever the client sends, no mechanism that must prove knowledge of a
//! secret (CRAM-MD5, DIGEST-MD5, SCRAM, NTLM) says `Verified`: the server's
//! nonces are random, so a guessed proof never matches. EXTERNAL without a
//! certificate identity never verifies either.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pop3::auth::StoredSecret;
use pop3::auth::sasl::{Context, Step, TokenError, new_mechanism};

const MECHANISMS: &[&str] = &[
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256-PLUS",
    "NTLM",
    "OAUTHBEARER",
    "XOAUTH2",
    "EXTERNAL",
    "ANONYMOUS",
];

/// Alice's secrets, made once: SCRAM keys take 4096 rounds to stretch.
fn secrets() -> &'static [StoredSecret; 3] {
    static SECRETS: OnceLock<[StoredSecret; 3]> = OnceLock::new();
    SECRETS.get_or_init(|| {
        let stored = |scheme| {
            let field = pop3::auth::hash_password(scheme, "secret").unwrap();
            StoredSecret::parse(&field).unwrap()
        };
        [
            StoredSecret::parse("{PLAIN}secret").unwrap(),
            stored(pop3::auth::Scheme::ScramSha1),
            stored(pop3::auth::Scheme::ScramSha256),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, flags, rest @ ..] = data else {
        return;
    };
    let name = MECHANISMS[usize::from(*pick) % MECHANISMS.len()];
    let mut ctx = Context::new("fuzz.example");
    if flags & 1 == 1 {
        ctx.channel_binding = Some(vec![7; 32]);
        ctx.plus_offered = true;
    }
    let secret = &secrets()[usize::from(flags >> 1) % 3];
    let Some(mut mechanism) = new_mechanism(name, &ctx) else {
        panic!("{name} is not built");
    };
    let mut step = mechanism.start();
    for message in pop3_fuzz::messages(rest) {
        step = mechanism.step(message);
        // The server's side of the exchange, as the session runs it.
        loop {
            step = match step {
                Step::Lookup { authcid } => {
                    mechanism.resume_secret((authcid == "alice").then_some(secret))
                }
                Step::Bearer { .. } => {
                    mechanism.resume_token(Err(TokenError::Invalid("fuzz".into())))
                }
                other => break step = other,
            };
        }
        match &step {
            Step::Verified { authcid, .. } => {
                panic!("{name} verified {authcid:?} without the secret")
            }
            // The session ends the exchange here.
            Step::Fail(_) | Step::Password { .. } | Step::Anonymous { .. } => return,
            _ => {}
        }
    }
    let _ = step;
});

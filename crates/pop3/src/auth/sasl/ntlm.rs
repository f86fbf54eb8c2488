// SPDX-License-Identifier: AGPL-3.0-only
//! NTLM ([MS-NLMP]) as Outlook speaks it over AUTH, NTLMv2 responses only:
//! LM and NTLMv1 answers are refused. The NT hash comes from a `{PLAIN}` or
//! `{NTLM}` secret. Off by default.

use hmac::{Hmac, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;

use super::{Context, Mechanism, SaslError, Step, nonce};
use crate::auth::StoredSecret;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
/// Extended session security: clients such as curl answer with NTLMv2
/// only when it is offered.
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;

/// The NTLMv2 proof and the blob it covers, at least this long.
const MIN_V2_RESPONSE: usize = 16 + 28;

enum State {
    WantNegotiate,
    WantAuthenticate { challenge: [u8; 8] },
    Lookup(Authenticate),
    Done,
}

struct Authenticate {
    challenge: [u8; 8],
    user: String,
    domain: String,
    nt_response: Vec<u8>,
}

pub struct Ntlm {
    domain: String,
    hostname: String,
    state: State,
    fixed_challenge: Option<[u8; 8]>,
}

impl Ntlm {
    pub fn new(ctx: &Context) -> Self {
        Ntlm {
            domain: ctx.ntlm_domain.to_ascii_uppercase(),
            hostname: ctx
                .hostname
                .split('.')
                .next()
                .unwrap_or("POP3")
                .to_ascii_uppercase(),
            state: State::WantNegotiate,
            fixed_challenge: None,
        }
    }

    fn challenge_message(&self, challenge: &[u8; 8]) -> Vec<u8> {
        let target = utf16le(&self.domain);
        let mut info = Vec::new();
        for (id, value) in [(2u16, &self.domain), (1, &self.hostname)] {
            let v = utf16le(value);
            info.extend_from_slice(&id.to_le_bytes());
            info.extend_from_slice(&(v.len() as u16).to_le_bytes());
            info.extend_from_slice(&v);
        }
        info.extend_from_slice(&[0, 0, 0, 0]); // MsvAvEOL
        let flags = NEGOTIATE_UNICODE
            | REQUEST_TARGET
            | NEGOTIATE_NTLM
            | NEGOTIATE_ALWAYS_SIGN
            | TARGET_TYPE_DOMAIN
            | NEGOTIATE_EXTENDED_SESSIONSECURITY
            | NEGOTIATE_TARGET_INFO;
        let header = 48u32;
        let mut m = Vec::with_capacity(48 + target.len() + info.len());
        m.extend_from_slice(SIGNATURE);
        m.extend_from_slice(&2u32.to_le_bytes());
        push_field(&mut m, target.len(), header);
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(challenge);
        m.extend_from_slice(&[0; 8]);
        push_field(&mut m, info.len(), header + target.len() as u32);
        m.extend_from_slice(&target);
        m.extend_from_slice(&info);
        m
    }
}

fn push_field(m: &mut Vec<u8>, len: usize, offset: u32) {
    m.extend_from_slice(&(len as u16).to_le_bytes());
    m.extend_from_slice(&(len as u16).to_le_bytes());
    m.extend_from_slice(&offset.to_le_bytes());
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn u16_at(m: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(m.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(m: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(m.get(at..at + 4)?.try_into().ok()?))
}

/// The bytes a security buffer at `at` points to.
fn field(m: &[u8], at: usize) -> Option<&[u8]> {
    let len = u16_at(m, at)? as usize;
    let offset = u32_at(m, at + 4)? as usize;
    m.get(offset..offset.checked_add(len)?)
}

fn text(bytes: &[u8], unicode: bool) -> Option<String> {
    if unicode {
        if !bytes.len().is_multiple_of(2) {
            return None;
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).ok()
    } else {
        Some(bytes.iter().map(|&b| b as char).collect())
    }
}

fn message_type(m: &[u8]) -> Option<u32> {
    if m.get(..8)? != SIGNATURE {
        return None;
    }
    u32_at(m, 8)
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// NTOWFv2: HMAC-MD5 of the NT hash over UPPER(user) + domain.
fn ntowf_v2(nt_hash: &[u8; 16], user: &str, domain: &str) -> [u8; 16] {
    let id = format!("{}{domain}", user.to_uppercase());
    hmac_md5(nt_hash, &[&utf16le(&id)])
}

impl Mechanism for Ntlm {
    fn name(&self) -> &'static str {
        "NTLM"
    }

    fn step(&mut self, input: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::WantNegotiate => {
                if message_type(input) != Some(1) {
                    return Step::Fail(SaslError::Malformed);
                }
                let challenge = match self.fixed_challenge.map_or_else(nonce::<8>, Ok) {
                    Ok(c) => c,
                    Err(e) => return Step::Fail(e),
                };
                self.state = State::WantAuthenticate { challenge };
                Step::Challenge(self.challenge_message(&challenge))
            }
            State::WantAuthenticate { challenge } => {
                let parsed = (|| {
                    if message_type(input)? != 3 {
                        return None;
                    }
                    let flags = u32_at(input, 60).unwrap_or(NEGOTIATE_UNICODE);
                    let unicode = flags & NEGOTIATE_UNICODE != 0;
                    Some((
                        field(input, 20)?.to_vec(),
                        text(field(input, 28)?, unicode)?,
                        text(field(input, 36)?, unicode)?,
                    ))
                })();
                let Some((nt_response, domain, user)) = parsed else {
                    return Step::Fail(SaslError::Malformed);
                };
                if user.is_empty() || user.len() > 255 {
                    return Step::Fail(SaslError::Malformed);
                }
                // 24 bytes is an NTLMv1 (or LM-only) answer: refused.
                if nt_response.len() < MIN_V2_RESPONSE {
                    return Step::Fail(SaslError::Credentials);
                }
                self.state = State::Lookup(Authenticate {
                    challenge,
                    user: user.clone(),
                    domain,
                    nt_response,
                });
                Step::Lookup { authcid: user }
            }
            _ => Step::Fail(SaslError::OutOfOrder),
        }
    }

    fn resume_secret(&mut self, secret: Option<&StoredSecret>) -> Step {
        let State::Lookup(a) = std::mem::replace(&mut self.state, State::Done) else {
            return Step::Fail(SaslError::OutOfOrder);
        };
        let Some(nt_hash) = secret.and_then(StoredSecret::nt_hash) else {
            return Step::Fail(SaslError::Credentials);
        };
        let key = ntowf_v2(&nt_hash, &a.user, &a.domain);
        let (proof, blob) = a.nt_response.split_at(16);
        let want = hmac_md5(&key, &[&a.challenge, blob]);
        if bool::from(want.ct_eq(proof)) {
            Step::Verified {
                authzid: None,
                authcid: a.user,
                final_data: None,
            }
        } else {
            Step::Fail(SaslError::Credentials)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate() -> Vec<u8> {
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&(NEGOTIATE_UNICODE | NEGOTIATE_NTLM).to_le_bytes());
        m
    }

    /// An AUTHENTICATE message the way a client builds one.
    fn authenticate(user: &str, domain: &str, nt: &[u8], lm: &[u8]) -> Vec<u8> {
        let (d, u, w) = (utf16le(domain), utf16le(user), utf16le("WS"));
        let mut payload_at = 64u32;
        let mut header = SIGNATURE.to_vec();
        header.extend_from_slice(&3u32.to_le_bytes());
        let mut payload = Vec::new();
        for part in [lm, nt, &d[..], &u[..], &w[..], &[][..]] {
            push_field(&mut header, part.len(), payload_at);
            payload.extend_from_slice(part);
            payload_at += part.len() as u32;
        }
        header.extend_from_slice(&NEGOTIATE_UNICODE.to_le_bytes());
        assert_eq!(header.len(), 64);
        header.extend_from_slice(&payload);
        header
    }

    /// [MS-NLMP] §4.2.4: user "User", domain "Domain", password
    /// "Password", server challenge 0123456789abcdef; NTOWFv2 and the
    /// NTProofStr of the spec's temp blob.
    #[test]
    fn ms_nlmp_v2_vector() {
        let nt = crate::auth::scheme::nt_hash("Password");
        let key = ntowf_v2(&nt, "User", "Domain");
        assert_eq!(crate::hex::encode(&key), "0c868a403bfd7a93a3001ef22ef02e3f");
        let challenge = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
        blob.extend_from_slice(&[0; 8]); // timestamp
        blob.extend_from_slice(&[0xaa; 8]); // client challenge
        blob.extend_from_slice(&[0; 4]);
        let info = {
            let mut n = Ntlm::new(&Context::new("server.test"));
            n.domain = "Domain".into();
            n.hostname = "Server".into();
            let m = n.challenge_message(&challenge);
            field(&m, 40).unwrap().to_vec()
        };
        blob.extend_from_slice(&info);
        blob.extend_from_slice(&[0; 4]);
        let proof = hmac_md5(&key, &[&challenge, &blob]);
        assert_eq!(
            crate::hex::encode(&proof),
            "68cd0ab851e51c96aabc927bebef6a1c"
        );
    }

    fn run(secret: &str, user: &str, answer: impl Fn(&[u8; 8]) -> Vec<u8>) -> Step {
        let mut m = Ntlm::new(&Context::new("pop.test"));
        let Step::Challenge(c) = m.step(&negotiate()) else {
            panic!()
        };
        assert_eq!(message_type(&c), Some(2));
        let challenge: [u8; 8] = c[24..32].try_into().unwrap();
        match m.step(&answer(&challenge)) {
            Step::Lookup { authcid } => assert_eq!(authcid, user),
            other => return other,
        }
        m.resume_secret(Some(&StoredSecret::parse(secret).unwrap()))
    }

    fn v2_answer(password: &str, challenge: &[u8; 8]) -> Vec<u8> {
        let key = ntowf_v2(&crate::auth::scheme::nt_hash(password), "alice", "POP3");
        let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
        blob.extend_from_slice(&[9; 28]);
        let mut nt = hmac_md5(&key, &[challenge, &blob]).to_vec();
        nt.extend_from_slice(&blob);
        authenticate("alice", "POP3", &nt, &[0; 24])
    }

    #[test]
    fn v2_exchange_from_plain_and_nt_hash() {
        let stored = crate::auth::hash_password(crate::auth::Scheme::Ntlm, "s3cret").unwrap();
        for secret in ["{PLAIN}s3cret", stored.as_str()] {
            let step = run(secret, "alice", |c| v2_answer("s3cret", c));
            assert!(
                matches!(step, Step::Verified { ref authcid, .. } if authcid == "alice"),
                "{step:?}"
            );
            let step = run(secret, "alice", |c| v2_answer("wrong", c));
            assert!(
                matches!(step, Step::Fail(SaslError::Credentials)),
                "{step:?}"
            );
        }
        // A secret NTLM cannot use fails like a wrong password.
        let step = run("{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0", "alice", |c| {
            v2_answer("x", c)
        });
        assert!(matches!(step, Step::Fail(SaslError::Credentials)));
    }

    #[test]
    fn v1_and_lm_answers_are_refused() {
        let step = run("{PLAIN}pw", "alice", |_| {
            authenticate("alice", "POP3", &[1; 24], &[2; 24])
        });
        assert!(
            matches!(step, Step::Fail(SaslError::Credentials)),
            "{step:?}"
        );
        let step = run("{PLAIN}pw", "alice", |_| {
            authenticate("alice", "POP3", &[], &[2; 24])
        });
        assert!(
            matches!(step, Step::Fail(SaslError::Credentials)),
            "{step:?}"
        );
    }

    #[test]
    fn malformed_messages() {
        let mut m = Ntlm::new(&Context::new("h"));
        assert!(matches!(
            m.step(b"NTLMSSP\0\x03\0\0\0"),
            Step::Fail(SaslError::Malformed)
        ));
        let step = run("{PLAIN}pw", "alice", |_| {
            let mut a = authenticate("alice", "POP3", &[0; 60], &[]);
            a[36] = 0xff; // user field longer than the message
            a
        });
        assert!(matches!(step, Step::Fail(SaslError::Malformed)));
        let step = run("{PLAIN}pw", "alice", |_| b"garbage".to_vec());
        assert!(matches!(step, Step::Fail(SaslError::Malformed)));
    }
}

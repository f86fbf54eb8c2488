// SPDX-License-Identifier: AGPL-3.0-only
//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), with the -PLUS
//! variants bound to the TLS connection by `tls-exporter` (RFC 9266).
//!
//! The server works from stored keys (`{SCRAM-SHA-256}iter,salt,StoredKey,
//! ServerKey`, the form Dovecot and GNU SASL write) or from a `{PLAIN}`
//! secret. A user that does not exist gets a salt made up from the name, so
//! the server-first message never tells who exists.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

use super::{Context, Mechanism, SaslError, Step, nonce};
use crate::auth::StoredSecret;

mod keys;
pub use keys::{Hash, Keys, MIN_ITERATIONS, saslprep};

enum State {
    Start,
    Lookup {
        first: ClientFirst,
    },
    Final {
        first: ClientFirst,
        server_first: String,
        nonce: String,
        keys: Option<Keys>,
    },
    Done,
}

/// What the client's first message said.
struct ClientFirst {
    /// `gs2-header`, as sent (it comes back inside `c=`).
    gs2_header: String,
    /// The client asked for channel binding (`p=tls-exporter`).
    bound: bool,
    authzid: Option<String>,
    authcid: String,
    bare: String,
    client_nonce: String,
}

pub struct Scram {
    hash: Hash,
    plus: bool,
    ctx: Context,
    state: State,
    /// Fixed server nonce for the RFC's example exchanges.
    server_nonce: Option<String>,
}

impl Scram {
    pub fn new(hash: Hash, plus: bool, ctx: &Context) -> Self {
        Scram {
            hash,
            plus,
            ctx: ctx.clone(),
            state: State::Start,
            server_nonce: None,
        }
    }

    /// A salt for a user with no SCRAM keys, the same every time for the
    /// same name so that repeated probes see nothing change.
    fn made_up_salt(&self, user: &str) -> Vec<u8> {
        self.hash.hmac(&self.ctx.salt_key[..], user.as_bytes())[..16].to_vec()
    }

    fn client_first(&self, input: &[u8]) -> Result<ClientFirst, SaslError> {
        let text = std::str::from_utf8(input).map_err(|_| SaslError::Malformed)?;
        let (flag, rest) = text.split_once(',').ok_or(SaslError::Malformed)?;
        let (authzid, bare) = rest.split_once(',').ok_or(SaslError::Malformed)?;
        let gs2_header = format!("{flag},{authzid},");
        let bound = match flag {
            "n" => false,
            // The client could bind but thinks the server cannot. If -PLUS
            // was offered here, someone removed it on the way: a downgrade.
            "y" if self.ctx.plus_offered => return Err(SaslError::ChannelBinding),
            "y" => false,
            "p=tls-exporter" => true,
            f if f.starts_with("p=") => return Err(SaslError::ChannelBinding),
            _ => return Err(SaslError::Malformed),
        };
        if bound != self.plus {
            return Err(SaslError::ChannelBinding);
        }
        let authzid = match authzid {
            "" => None,
            a => Some(decode_name(
                a.strip_prefix("a=").ok_or(SaslError::Malformed)?,
            )?),
        };
        let mut attrs = bare.split(',');
        let user = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(SaslError::Malformed)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::Malformed)?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(SaslError::Malformed);
        }
        let authcid = saslprep(&decode_name(user)?).into_owned();
        if authcid.is_empty() || authcid.len() > 255 {
            return Err(SaslError::Malformed);
        }
        Ok(ClientFirst {
            gs2_header,
            bound,
            authzid: authzid.filter(|z| *z != authcid),
            authcid,
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        })
    }

    fn client_final(
        &mut self,
        input: &[u8],
        first: ClientFirst,
        server_first: String,
        nonce: String,
        keys: Option<Keys>,
    ) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(input).map_err(|_| SaslError::Malformed)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(SaslError::Malformed)?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .and_then(|c| B64.decode(c).ok())
            .ok_or(SaslError::Malformed)?;
        let echoed = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::Malformed)?;
        let proof = B64.decode(proof).map_err(|_| SaslError::Malformed)?;
        if proof.len() != self.hash.output_len() {
            return Err(SaslError::Malformed);
        }
        if echoed != nonce {
            return Err(SaslError::Malformed);
        }
        let mut expected = first.gs2_header.clone().into_bytes();
        if first.bound {
            match &self.ctx.channel_binding {
                Some(cb) => expected.extend_from_slice(cb),
                None => return Err(SaslError::ChannelBinding),
            }
        }
        if !bool::from(binding.ct_eq(&expected)) {
            return Err(SaslError::ChannelBinding);
        }
        let keys = keys.ok_or(SaslError::Credentials)?;
        let auth_message = format!("{},{server_first},{without_proof}", first.bare);
        let signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !bool::from(self.hash.digest(&client_key).ct_eq(&keys.stored_key)) {
            return Err(SaslError::Credentials);
        }
        let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
        Ok(Step::Verified {
            authzid: first.authzid,
            authcid: first.authcid,
            final_data: Some(format!("v={}", B64.encode(server_signature)).into_bytes()),
        })
    }
}

/// `saslname`: `=2C` is a comma, `=3D` an equals sign, nothing else may
/// follow `=`.
fn decode_name(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::Malformed),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Mechanism for Scram {
    fn name(&self) -> &'static str {
        match (self.hash, self.plus) {
            (Hash::Sha1, false) => "SCRAM-SHA-1",
            (Hash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (Hash::Sha256, false) => "SCRAM-SHA-256",
            (Hash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    fn step(&mut self, input: &[u8]) -> Step {
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Start => self.client_first(input).map(|first| {
                let authcid = first.authcid.clone();
                self.state = State::Lookup { first };
                Step::Lookup { authcid }
            }),
            State::Final {
                first,
                server_first,
                nonce,
                keys,
            } => self.client_final(input, first, server_first, nonce, keys),
            State::Lookup { .. } | State::Done => Err(SaslError::OutOfOrder),
        };
        result.unwrap_or_else(Step::Fail)
    }

    /// From a `{PLAIN}` secret, or for an unknown user, PBKDF2 runs here.
    fn stretches_keys(&self) -> bool {
        true
    }

    fn resume_secret(&mut self, secret: Option<&StoredSecret>) -> Step {
        let State::Lookup { first } = std::mem::replace(&mut self.state, State::Done) else {
            return Step::Fail(SaslError::OutOfOrder);
        };
        let keys = match secret.map(|s| s.scram_keys(self.hash)) {
            Some(Some(keys)) => Some(keys),
            Some(None) => secret.and_then(StoredSecret::plaintext).map(|pw| {
                Keys::derive(
                    self.hash,
                    pw,
                    &self.made_up_salt(&first.authcid),
                    MIN_ITERATIONS,
                )
            }),
            None => None,
        };
        // Without keys, answer with made-up values (and spend the time a
        // plaintext secret would cost), then fail at the proof.
        let (salt, iterations) = match &keys {
            Some(k) => (k.salt.clone(), k.iterations),
            None => {
                let salt = self.made_up_salt(&first.authcid);
                let _ = Keys::derive(self.hash, "", &salt, MIN_ITERATIONS);
                (salt, MIN_ITERATIONS)
            }
        };
        let server_nonce = match self.server_nonce.clone() {
            Some(n) => n,
            None => match nonce::<18>() {
                Ok(n) => B64.encode(n),
                Err(e) => return Step::Fail(e),
            },
        };
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let challenge = server_first.clone().into_bytes();
        self.state = State::Final {
            first,
            server_first,
            nonce,
            keys,
        };
        Step::Challenge(challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scram(hash: Hash, server_nonce: &str) -> Scram {
        let mut m = Scram::new(hash, false, &Context::new("pop.test"));
        m.server_nonce = Some(server_nonce.to_owned());
        m
    }

    fn secret(hash: Hash, password: &str, salt_b64: &str) -> StoredSecret {
        let keys = Keys::derive(hash, password, &B64.decode(salt_b64).unwrap(), 4096);
        let name = match hash {
            Hash::Sha1 => "SCRAM-SHA-1",
            Hash::Sha256 => "SCRAM-SHA-256",
        };
        StoredSecret::parse(&format!("{{{name}}}{}", keys.encode())).unwrap()
    }

    /// Run the exchange of an RFC example; returns the final step.
    fn exchange(
        m: &mut Scram,
        secret: &StoredSecret,
        first: &str,
        server_first: &str,
        last: &str,
    ) -> Step {
        match m.step(first.as_bytes()) {
            Step::Lookup { authcid } => assert_eq!(authcid, "user"),
            s => panic!("{s:?}"),
        }
        match m.resume_secret(Some(secret)) {
            Step::Challenge(c) => assert_eq!(String::from_utf8(c).unwrap(), server_first),
            s => panic!("{s:?}"),
        }
        m.step(last.as_bytes())
    }

    #[test]
    fn rfc5802_example() {
        let s = secret(Hash::Sha1, "pencil", "QSXCR+Q6sek8bf92");
        let mut m = scram(Hash::Sha1, "3rfcNHYJY1ZVvWVs7j");
        let step = exchange(
            &mut m,
            &s,
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        );
        match step {
            Step::Verified {
                authcid,
                final_data,
                authzid: None,
            } => {
                assert_eq!(authcid, "user");
                assert_eq!(final_data.unwrap(), b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
            }
            s => panic!("{s:?}"),
        }
        assert!(s.verify(b"pencil") && !s.verify(b"pencil "));
    }

    #[test]
    fn rfc7677_example() {
        let s = secret(Hash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==");
        let mut m = scram(Hash::Sha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let step = exchange(
            &mut m,
            &s,
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        match step {
            Step::Verified { final_data, .. } => assert_eq!(
                final_data.unwrap(),
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
            ),
            s => panic!("{s:?}"),
        }
        // The same proof against another password's keys fails.
        let wrong = secret(Hash::Sha256, "pencil2", "W22ZaJ0SNY7soEsUEjb6gQ==");
        let mut m = scram(Hash::Sha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let step = exchange(
            &mut m,
            &wrong,
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert!(
            matches!(step, Step::Fail(SaslError::Credentials)),
            "{step:?}"
        );
    }

    #[test]
    fn unknown_users_get_a_stable_made_up_salt() {
        let ctx = Context::new("pop.test");
        let first = |user: &str| {
            let mut m = Scram::new(Hash::Sha256, false, &ctx);
            m.step(format!("n,,n={user},r=abc").as_bytes());
            let Step::Challenge(c) = m.resume_secret(None) else {
                panic!()
            };
            let c = String::from_utf8(c).unwrap();
            c.split(',').nth(1).unwrap().to_owned()
        };
        assert_eq!(first("ghost"), first("ghost"));
        assert_ne!(first("ghost"), first("other"));
    }

    #[test]
    fn channel_binding_rules() {
        let mut ctx = Context::new("pop.test");
        ctx.channel_binding = Some(vec![7; 32]);
        ctx.plus_offered = true;
        let first =
            |plus: bool, msg: &str| Scram::new(Hash::Sha256, plus, &ctx).step(msg.as_bytes());
        // 'y' while -PLUS is offered: a downgrade.
        assert!(matches!(
            first(false, "y,,n=u,r=x"),
            Step::Fail(SaslError::ChannelBinding)
        ));
        assert!(matches!(first(false, "n,,n=u,r=x"), Step::Lookup { .. }));
        // -PLUS must bind, with tls-exporter only.
        assert!(matches!(
            first(true, "n,,n=u,r=x"),
            Step::Fail(SaslError::ChannelBinding)
        ));
        assert!(matches!(
            first(true, "p=tls-unique,,n=u,r=x"),
            Step::Fail(SaslError::ChannelBinding)
        ));
        assert!(matches!(
            first(false, "p=tls-exporter,,n=u,r=x"),
            Step::Fail(SaslError::ChannelBinding)
        ));
        assert!(matches!(
            first(true, "p=tls-exporter,,n=u,r=x"),
            Step::Lookup { .. }
        ));
        // Without -PLUS on offer, 'y' is fine.
        let plain = Context::new("pop.test");
        assert!(matches!(
            Scram::new(Hash::Sha1, false, &plain).step(b"y,,n=u,r=x"),
            Step::Lookup { .. }
        ));
    }

    #[test]
    fn plus_exchange_checks_the_binding_data() {
        let mut ctx = Context::new("pop.test");
        ctx.channel_binding = Some(vec![7; 32]);
        ctx.plus_offered = true;
        let keys = Keys::derive(Hash::Sha256, "pw", b"saltsaltsaltsalt", 4096);
        let secret = StoredSecret::parse(&format!("{{SCRAM-SHA-256}}{}", keys.encode())).unwrap();
        for (cb, ok) in [(vec![7u8; 32], true), (vec![8u8; 32], false)] {
            let mut m = Scram::new(Hash::Sha256, true, &ctx);
            let first_bare = "n=user,r=cnonce";
            m.step(format!("p=tls-exporter,,{first_bare}").as_bytes());
            let Step::Challenge(sf) = m.resume_secret(Some(&secret)) else {
                panic!()
            };
            let sf = String::from_utf8(sf).unwrap();
            let nonce = sf.split(',').next().unwrap().strip_prefix("r=").unwrap();
            let mut c = b"p=tls-exporter,,".to_vec();
            c.extend_from_slice(&cb);
            let without_proof = format!("c={},r={nonce}", B64.encode(&c));
            let auth = format!("{first_bare},{sf},{without_proof}");
            let salted = Hash::Sha256.salted_password(b"pw", b"saltsaltsaltsalt", 4096);
            let ck = Hash::Sha256.hmac(&salted, b"Client Key");
            let sig = Hash::Sha256.hmac(&keys.stored_key, auth.as_bytes());
            let proof: Vec<u8> = ck.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            let step = m.step(format!("{without_proof},p={}", B64.encode(proof)).as_bytes());
            assert_eq!(matches!(step, Step::Verified { .. }), ok, "{step:?}");
            if !ok {
                assert!(matches!(step, Step::Fail(SaslError::ChannelBinding)));
            }
        }
    }

    #[test]
    fn malformed_and_out_of_order() {
        let ctx = Context::new("h");
        for bad in [
            "",
            "n",
            "n,,",
            "n,,r=x",
            "n,,n=u",
            "n,,n=a=b,r=x",
            "x,,n=u,r=x",
            "n,b=z,n=u,r=x",
            "n,,n=u,r=",
        ] {
            let step = Scram::new(Hash::Sha256, false, &ctx).step(bad.as_bytes());
            assert!(
                matches!(step, Step::Fail(SaslError::Malformed)),
                "{bad:?}: {step:?}"
            );
        }
        let mut m = Scram::new(Hash::Sha256, false, &ctx);
        assert!(matches!(m.step(b"n,,n=u,r=x"), Step::Lookup { .. }));
        assert!(matches!(
            m.step(b"n,,n=u,r=x"),
            Step::Fail(SaslError::OutOfOrder)
        ));
        // A final message with a nonce that is not the combined one.
        let mut m = Scram::new(Hash::Sha256, false, &ctx);
        m.step(b"n,,n=u,r=x");
        m.resume_secret(None);
        assert!(matches!(
            m.step(b"c=biws,r=x,p=AAAA"),
            Step::Fail(SaslError::Malformed)
        ));
    }

    #[test]
    fn names_are_decoded() {
        assert_eq!(decode_name("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_name("a=2").is_err());
        let mut m = Scram::new(Hash::Sha1, false, &Context::new("h"));
        assert!(
            matches!(m.step(b"n,a=boss,n=u=2Cv,r=x"), Step::Lookup { authcid } if authcid == "u,v")
        );
    }
}

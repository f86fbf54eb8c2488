// SPDX-License-Identifier: AGPL-3.0-only
//! Bearer tokens for OAUTHBEARER and XOAUTH2: JWTs checked against the
//! configured keys (a JWKS file, a PEM public key, an HMAC secret), with
//! issuer, audience, expiry and signature; or, for other tokens, an RFC 7662
//! introspection endpoint. The user is the configured claim.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::SetupError;
use super::sasl::TokenError;
use crate::config::OAuthConfig;

mod introspection;
use introspection::Introspection;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Rsa,
    Ec,
    Hmac,
}

fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        ES256 | ES384 => Family::Ec,
        _ => Family::Rsa,
    }
}

struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

/// Validates bearer tokens; built from `[auth.oauth]`.
pub struct BearerValidator {
    cfg: OAuthConfig,
    algorithms: Vec<Algorithm>,
    keys: Vec<Key>,
    introspection: Option<Introspection>,
}

impl std::fmt::Debug for BearerValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerValidator")
            .field("keys", &self.keys.len())
            .field("introspection", &self.introspection.is_some())
            .finish()
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::new(key, format!("{}: {e}", path.display())))
}

impl BearerValidator {
    /// Load the keys the configuration names.
    pub fn from_config(cfg: &OAuthConfig) -> Result<BearerValidator, SetupError> {
        let mut keys = Vec::new();
        if let Some(path) = &cfg.jwks_file {
            let text = read(path, "auth.oauth.jwks_file")?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| {
                SetupError::new(
                    "auth.oauth.jwks_file",
                    format!("{}: not a JWKS: {e}", path.display()),
                )
            })?;
            for jwk in &set.keys {
                let family = match jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Family::Rsa,
                    AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                    AlgorithmParameters::OctetKey(_) => Family::Hmac,
                    AlgorithmParameters::OctetKeyPair(_) => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                    SetupError::new(
                        "auth.oauth.jwks_file",
                        format!("{}: unusable key: {e}", path.display()),
                    )
                })?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    family,
                    key,
                });
            }
        }
        if let Some(path) = &cfg.public_key_file {
            let pem = read(path, "auth.oauth.public_key_file")?;
            let (family, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(k) => (Family::Rsa, k),
                Err(_) => (
                    Family::Ec,
                    DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        SetupError::new(
                            "auth.oauth.public_key_file",
                            format!(
                                "{}: neither an RSA nor an EC public key: {e}",
                                path.display()
                            ),
                        )
                    })?,
                ),
            };
            keys.push(Key {
                kid: None,
                family,
                key,
            });
        }
        if let Some(path) = &cfg.hmac_secret_file {
            let secret = read(path, "auth.oauth.hmac_secret_file")?;
            let secret = secret.trim_ascii();
            if secret.len() < 32 {
                return Err(SetupError::new(
                    "auth.oauth.hmac_secret_file",
                    "an HS256 secret needs at least 32 bytes",
                ));
            }
            keys.push(Key {
                kid: None,
                family: Family::Hmac,
                key: DecodingKey::from_secret(secret),
            });
        }
        let mut algorithms = Vec::new();
        for (i, name) in cfg.algorithms.iter().enumerate() {
            let alg: Algorithm = name.parse().map_err(|_| {
                SetupError::new(
                    format!("auth.oauth.algorithms[{i}]"),
                    format!("unknown JWT algorithm {name:?}"),
                )
            })?;
            algorithms.push(alg);
        }
        let introspection = match &cfg.introspection_url {
            None => None,
            Some(url) => Some(Introspection::from_config(cfg, url)?),
        };
        if keys.is_empty() && introspection.is_none() {
            return Err(SetupError::new(
                "auth.oauth",
                "set jwks_file, public_key_file, hmac_secret_file or introspection_url",
            ));
        }
        Ok(BearerValidator {
            cfg: cfg.clone(),
            algorithms,
            keys,
            introspection,
        })
    }

    /// The user a valid token names.
    pub async fn validate(&self, token: &str) -> Result<String, TokenError> {
        match jsonwebtoken::decode_header(token) {
            Ok(header) if !self.keys.is_empty() => self.validate_jwt(token, header),
            _ => match &self.introspection {
                Some(i) => i.introspect(token, &self.cfg).await,
                None => Err(TokenError::Invalid("not a JWT".into())),
            },
        }
    }

    fn validate_jwt(
        &self,
        token: &str,
        header: jsonwebtoken::Header,
    ) -> Result<String, TokenError> {
        let invalid = |s: &str| TokenError::Invalid(s.to_owned());
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid("algorithm not accepted"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.cfg.leeway.as_secs();
        validation.validate_nbf = true;
        match &self.cfg.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let wanted = family(header.alg);
        let candidates = self.keys.iter().filter(|k| {
            k.family == wanted
                && match (&header.kid, &k.kid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        });
        let mut last = invalid("no key for this token");
        for k in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => return self.user_from(&data.claims),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    fn user_from(&self, claims: &Map<String, Value>) -> Result<String, TokenError> {
        unverified_email(&self.cfg, claims)?;
        claims
            .get(&self.cfg.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty() && u.len() <= 255)
            .map(str::to_owned)
            .ok_or_else(|| TokenError::Invalid(format!("no {:?} claim", self.cfg.user_claim)))
    }
}

/// A user taken from the `email` claim must not be one the provider says
/// it has not verified (OpenID Connect's `email_verified`): anybody can
/// sign up with somebody else's address at many providers. A token without
/// the claim is taken at its word, as providers that only issue verified
/// addresses often leave it out.
fn unverified_email(cfg: &OAuthConfig, claims: &Map<String, Value>) -> Result<(), TokenError> {
    if cfg.user_claim != "email" {
        return Ok(());
    }
    let verified = match claims.get("email_verified") {
        None => true,
        Some(Value::Bool(b)) => *b,
        // Some providers send it as a string.
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(_) => false,
    };
    if verified {
        Ok(())
    } else {
        Err(TokenError::Invalid(
            "email not verified by the provider".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        validator: BearerValidator,
        ec_private: Vec<u8>,
        hmac: Vec<u8>,
    }

    /// A JWKS with one ES256 key (kid "k1") and an HMAC secret file.
    fn fixture() -> Fixture {
        use base64::Engine;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64url.encode(&raw[1..33]), "y": b64url.encode(&raw[33..65]),
        }]});
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        let hmac = b"0123456789abcdef0123456789abcdef-hs256".to_vec();
        std::fs::write(dir.path().join("hmac"), &hmac).unwrap();
        let cfg = OAuthConfig {
            issuer: Some("https://idp.test".into()),
            audience: Some("pop3".into()),
            jwks_file: Some(dir.path().join("jwks.json")),
            hmac_secret_file: Some(dir.path().join("hmac")),
            user_claim: "email".into(),
            ..OAuthConfig::default()
        };
        Fixture {
            validator: BearerValidator::from_config(&cfg).unwrap(),
            ec_private: pair.serialize_pem().into_bytes(),
            hmac,
            _dir: dir,
        }
    }

    fn claims(email: &str, iss: &str, aud: &str, exp: u64) -> Value {
        serde_json::json!({"email": email, "iss": iss, "aud": aud, "exp": exp, "sub": "1"})
    }

    #[tokio::test]
    async fn es256_and_hs256_tokens() {
        let f = fixture();
        let good = claims("alice", "https://idp.test", "pop3", now() + 600);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let es = EncodingKey::from_ec_pem(&f.ec_private).unwrap();
        let token = jsonwebtoken::encode(&header, &good, &es).unwrap();
        assert_eq!(f.validator.validate(&token).await.unwrap(), "alice");
        let mut verified = good.clone();
        verified["email_verified"] = Value::Bool(true);
        let token = jsonwebtoken::encode(&header, &verified, &es).unwrap();
        assert_eq!(f.validator.validate(&token).await.unwrap(), "alice");
        let hs = EncodingKey::from_secret(&f.hmac);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &hs).unwrap();
        assert_eq!(f.validator.validate(&token).await.unwrap(), "alice");

        let refused = [
            claims("alice", "https://evil.test", "pop3", now() + 600),
            claims("alice", "https://idp.test", "imap", now() + 600),
            claims("alice", "https://idp.test", "pop3", now() - 3600),
            serde_json::json!({"iss": "https://idp.test", "aud": "pop3", "exp": now() + 600}),
            serde_json::json!({"email": "alice", "aud": "pop3", "exp": now() + 600}),
            // An address the provider has not verified names nobody.
            serde_json::json!({"email": "alice", "email_verified": false, "iss": "https://idp.test", "aud": "pop3", "exp": now() + 600}),
            serde_json::json!({"email": "alice", "email_verified": "false", "iss": "https://idp.test", "aud": "pop3", "exp": now() + 600}),
            // No audience at all, when one is configured.
            serde_json::json!({"email": "alice", "iss": "https://idp.test", "exp": now() + 600}),
        ];
        for c in refused {
            let token = jsonwebtoken::encode(&header, &c, &es).unwrap();
            assert!(
                matches!(
                    f.validator.validate(&token).await,
                    Err(TokenError::Invalid(_))
                ),
                "{c}"
            );
        }
        // Signed by another key; an unknown kid; not a JWT at all.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&header, &good, &other).unwrap();
        assert!(f.validator.validate(&token).await.is_err());
        header.kid = Some("k2".into());
        let token = jsonwebtoken::encode(&header, &good, &es).unwrap();
        assert!(f.validator.validate(&token).await.is_err());
        assert!(f.validator.validate("opaque-token").await.is_err());
        // HS256 with the wrong secret.
        let wrong = EncodingKey::from_secret(b"another secret of thirty-two bytes!!");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &wrong).unwrap();
        assert!(f.validator.validate(&token).await.is_err());
    }

    #[tokio::test]
    async fn algorithms_can_be_narrowed() {
        let mut f = fixture();
        f.validator.algorithms = vec![Algorithm::ES256];
        let good = claims("alice", "https://idp.test", "pop3", now() + 600);
        let hs = EncodingKey::from_secret(&f.hmac);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &hs).unwrap();
        assert!(f.validator.validate(&token).await.is_err());
    }

    /// RS256 with a PEM public key. The key pair in testdata/ exists only
    /// for this test (made with `openssl genpkey -algorithm RSA`).
    #[tokio::test]
    async fn rs256_with_a_pem_public_key() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/auth/testdata");
        let cfg = OAuthConfig {
            public_key_file: Some(format!("{dir}/rs256-public.pem").into()),
            user_claim: "sub".into(),
            ..OAuthConfig::default()
        };
        let validator = BearerValidator::from_config(&cfg).unwrap();
        let private = std::fs::read(format!("{dir}/rs256-private.pem")).unwrap();
        let key = EncodingKey::from_rsa_pem(&private).unwrap();
        let claims = serde_json::json!({"sub": "bob", "exp": now() + 60});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        assert_eq!(validator.validate(&token).await.unwrap(), "bob");
        // PS256 is not in the accepted list by default.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::PS256), &claims, &key).unwrap();
        assert!(validator.validate(&token).await.is_err());
        // An HS256 token made with the public key as secret (the classic
        // algorithm confusion) finds no HMAC key.
        let public = std::fs::read(format!("{dir}/rs256-public.pem")).unwrap();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert!(validator.validate(&forged).await.is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let cfg = OAuthConfig::default();
        assert_eq!(
            BearerValidator::from_config(&cfg).unwrap_err().key,
            "auth.oauth"
        );
        let cfg = OAuthConfig {
            jwks_file: Some("/nonexistent/jwks.json".into()),
            ..OAuthConfig::default()
        };
        assert_eq!(
            BearerValidator::from_config(&cfg).unwrap_err().key,
            "auth.oauth.jwks_file"
        );
        let cfg = OAuthConfig {
            introspection_url: Some("ftp://x/".into()),
            ..OAuthConfig::default()
        };
        assert_eq!(
            BearerValidator::from_config(&cfg).unwrap_err().key,
            "auth.oauth.introspection_url"
        );
    }
}

// SPDX-License-Identifier: AGPL-3.0-only
//! OAUTHBEARER and XOAUTH2 with curl: JWTs signed by the test's keys, and
//! opaque tokens checked at an RFC 7662 introspection endpoint the test
//! runs.

use super::*;

/// An RFC 7662 endpoint on loopback: `good-opaque` is alice's token, any
/// other is inactive. Requests without this server's client credentials
/// get 401.
fn introspection_endpoint() -> u16 {
    use base64::Engine;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let basic = base64::engine::general_purpose::STANDARD.encode("pop3d:client-secret");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let (mut length, mut authorized) = (0usize, false);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") && line.trim_end().ends_with(&basic) {
                    authorized = true;
                }
            }
            let mut body = vec![0u8; length];
            let _ = r.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body);
            let (status, json) = if !authorized {
                ("401 Unauthorized", "{}".to_owned())
            } else if body.contains("token=good-opaque") {
                (
                    "200 OK",
                    r#"{"active":true,"email":"alice","iss":"https://idp.test","aud":"pop3"}"#
                        .to_owned(),
                )
            } else {
                ("200 OK", r#"{"active":false}"#.to_owned())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    port
}

#[test]
fn curl_oauthbearer_and_xoauth2_with_jwts_and_introspection() {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    if !require("curl") {
        return;
    }
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "idp-1", "alg": "ES256",
        "x": b64url.encode(&raw[1..33]), "y": b64url.encode(&raw[33..65]),
    }]});
    let hmac = b"a shared secret of more than thirty-two bytes";
    let port = introspection_endpoint();
    let s = setup(
        &[],
        "mechanisms = [\"OAUTHBEARER\", \"XOAUTH2\"]",
        &format!(
            "[auth.oauth]\nissuer = \"https://idp.test\"\naudience = \"pop3\"\njwks_file = \"jwks.json\"\nhmac_secret_file = \"hmac.key\"\nuser_claim = \"email\"\nintrospection_url = \"http://127.0.0.1:{port}/introspect\"\nintrospection_client_id = \"pop3d\"\nintrospection_client_secret_file = \"client.secret\"\n"
        ),
    );
    std::fs::write(s.path("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(s.path("hmac.key"), hmac).unwrap();
    std::fs::write(s.path("client.secret"), "client-secret\n").unwrap();
    let _server = s.start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |email: &str, aud: &str, exp: u64| {
        // Padding makes the token longer than 255 octets, as real ones are.
        serde_json::json!({"email": email, "iss": "https://idp.test", "aud": aud,
                           "exp": exp, "iat": now, "scope": "pop ".repeat(80)})
    };
    let with_iss = |mut c: serde_json::Value, iss: Option<&str>| {
        match iss {
            Some(iss) => c["iss"] = iss.into(),
            None => {
                c.as_object_mut().unwrap().remove("iss");
            }
        }
        c
    };
    let mut es_header = Header::new(Algorithm::ES256);
    es_header.kid = Some("idp-1".into());
    let es = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let es_token = |c: serde_json::Value| jsonwebtoken::encode(&es_header, &c, &es).unwrap();
    let hs_token = |c: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(hmac),
        )
        .unwrap()
    };
    let url = format!("pop3://127.0.0.1:{}/", s.plain);
    let run = |mech: &str, user: &str, token: &str| {
        curl(&[
            "--login-options",
            &format!("AUTH={mech}"),
            "--user",
            &format!("{user}:"),
            "--oauth2-bearer",
            token,
            &url,
        ])
    };
    let good = es_token(claims("alice", "pop3", now + 600));
    assert!(good.len() > 255);
    assert_listing(
        &run("OAUTHBEARER", "alice", &good),
        "1 36\r\n",
        "OAUTHBEARER ES256 via JWKS",
    );
    let hs = hs_token(claims("alice", "pop3", now + 600));
    assert_listing(&run("XOAUTH2", "alice", &hs), "1 36\r\n", "XOAUTH2 HS256");
    assert_listing(
        &run("OAUTHBEARER", "alice", "good-opaque"),
        "1 36\r\n",
        "introspection",
    );
    for (mech, user, token, what) in [
        (
            "OAUTHBEARER",
            "alice",
            es_token(claims("alice", "pop3", now - 3600)),
            "expired",
        ),
        (
            "OAUTHBEARER",
            "alice",
            es_token(claims("alice", "imap", now + 600)),
            "wrong audience",
        ),
        (
            "XOAUTH2",
            "alice",
            hs_token(claims("alice", "pop3", now + 600)).replace('.', ".x"),
            "bad signature",
        ),
        ("OAUTHBEARER", "alice", "bad-opaque".to_owned(), "inactive"),
        // Another tenant of a provider that shares keys and audiences.
        (
            "OAUTHBEARER",
            "alice",
            es_token(with_iss(
                claims("alice", "pop3", now + 600),
                Some("https://other-tenant.idp.test"),
            )),
            "another issuer",
        ),
        (
            "XOAUTH2",
            "alice",
            hs_token(with_iss(claims("alice", "pop3", now + 600), None)),
            "no issuer",
        ),
        ("XOAUTH2", "bob", good.clone(), "token of another user"),
    ] {
        let out = run(mech, user, &token);
        assert!(!out.status.success(), "{what}: refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Login denied"),
            "{what}"
        );
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::json;

use super::*;
use crate::auth::Role;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn pem_der(text: &str) -> Vec<u8> {
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn es_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_der(&pem_der(&fixture(&format!(
        "TEST-ONLY-es256-{name}.key.pem"
    ))))
}

fn rsa_key_c() -> EncodingKey {
    EncodingKey::from_rsa_der(&pem_der(&fixture("TEST-ONLY-rs256-c.key.pem")))
}

fn b64(bytes: &[u8], padded: bool) -> String {
    if padded {
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// A JWT over `header` and `claims` signed by `key`; `padded` gives ALB-style segments.
fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm, padded: bool) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), padded),
        b64(claims.to_string().as_bytes(), padded)
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    let sig = if padded {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sig)
            .unwrap();
        b64(&raw, true)
    } else {
        sig
    };
    format!("{message}.{sig}")
}

const NOW: u64 = 1_800_000_000;

fn claims(email: &str) -> Value {
    json!({"email": email, "sub": "1", "exp": NOW + 600, "iss": "https://idp.example.edu"})
}

fn es256(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
}

fn auth_with(f: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
    let mut auth = AuthConfig {
        identity_header: Some("X-Amzn-Oidc-Data".into()),
        ..AuthConfig::default()
    };
    f(&mut auth);
    auth
}

fn pem_verifier(f: impl FnOnce(&mut AuthConfig)) -> ProxyVerifier {
    let auth = auth_with(|a| {
        a.identity_public_key_file = Some(format!("{FIXTURES}/TEST-ONLY-es256-a.pub.pem").into());
        f(a)
    });
    ProxyVerifier::from_config(&auth).unwrap().unwrap()
}

async fn check(v: &ProxyVerifier, token: &str) -> Result<Identity, String> {
    v.verify_at(token, NOW).await
}

#[tokio::test]
async fn es256_with_the_pem_key_is_accepted_and_roles_come_from_the_map() {
    let v = pem_verifier(|a| {
        a.roles
            .insert("educator".into(), vec!["*@staff.example.edu".into()]);
    });
    let token = sign(
        &es256("any"),
        &claims("Kim@Staff.Example.edu"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    assert_eq!(
        check(&v, &token).await.unwrap(),
        Identity {
            email: "kim@staff.example.edu".into(),
            role: Role::Educator
        }
    );
    // Through the public entry point: the current time, 401 for anything wrong.
    let mut live = claims("a@b.c");
    live["exp"] = json!(jsonwebtoken::get_current_timestamp() + 60);
    let token = sign(&es256("k"), &live, &es_key("a"), Algorithm::ES256, false);
    assert_eq!(v.verify(&token).await.unwrap().role, Role::Student);
    let e = v.verify(&format!("{token}x")).await.unwrap_err();
    assert_eq!(
        e.status_and_code().0,
        axum::http::StatusCode::UNAUTHORIZED,
        "{e}"
    );
}

#[tokio::test]
async fn alb_form_with_padded_segments_and_header_claims_is_accepted() {
    let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/exams/50dc6c495c0c9188";
    let v = pem_verifier(|a| {
        a.alb_arn = Some(arn.into());
        a.issuer = Some("https://idp.example.edu".into());
        a.audience = Some("client-123".into());
    });
    // The ALB puts exp, iss and client in the header; the payload is the userinfo.
    let header = json!({"alg": "ES256", "kid": "2a8b7f4e-1c1d-4b2a-9f0e-0123456789ab", "signer": arn,
        "iss": "https://idp.example.edu", "client": "client-123", "exp": NOW + 60, "typ": "JWT"});
    let payload =
        json!({"sub": "abc", "email": "p@x.org", "email_verified": "true", "exp": NOW + 60});
    // Find a payload whose encoding needs padding, so the test covers it.
    let mut payload = payload;
    let mut pad = String::new();
    while !b64(payload.to_string().as_bytes(), true).ends_with('=') {
        pad.push('x');
        payload["name"] = json!(pad);
    }
    let token = sign(&header, &payload, &es_key("a"), Algorithm::ES256, true);
    let segments: Vec<&str> = token.split('.').collect();
    assert!(segments[1].ends_with('='), "{token}");
    assert_eq!(check(&v, &token).await.unwrap().email, "p@x.org");
    // The padding is part of what was signed: stripping it breaks the signature.
    let stripped = segments
        .iter()
        .map(|s| s.trim_end_matches('='))
        .collect::<Vec<_>>()
        .join(".");
    if stripped != token {
        assert!(
            check(&v, &stripped)
                .await
                .unwrap_err()
                .contains("signature")
        );
    }
    // Another load balancer's signer is refused, as is no signer at all.
    let mut other = header.clone();
    other["signer"] =
        json!("arn:aws:elasticloadbalancing:eu-west-1:999999999999:loadbalancer/app/evil/1");
    let e = check(
        &v,
        &sign(&other, &payload, &es_key("a"), Algorithm::ES256, true),
    )
    .await
    .unwrap_err();
    assert!(e.contains("signer"), "{e}");
    other.as_object_mut().unwrap().remove("signer");
    let e = check(
        &v,
        &sign(&other, &payload, &es_key("a"), Algorithm::ES256, true),
    )
    .await
    .unwrap_err();
    assert!(e.contains("signer"), "{e}");
    // An expired header exp counts even when the payload's is fine.
    let mut old = header.clone();
    old["exp"] = json!(NOW - 3600);
    let e = check(
        &v,
        &sign(&old, &payload, &es_key("a"), Algorithm::ES256, true),
    )
    .await
    .unwrap_err();
    assert!(e.contains("expired"), "{e}");
}

#[tokio::test]
async fn wrong_keys_and_forgeries_are_refused() {
    let v = pem_verifier(|_| {});
    // Signed by another key.
    let token = sign(
        &es256("a"),
        &claims("a@b.c"),
        &es_key("b"),
        Algorithm::ES256,
        false,
    );
    assert!(check(&v, &token).await.unwrap_err().contains("signature"));
    // Garbage signature, and a tampered payload under a valid signature.
    let good = sign(
        &es256("a"),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    let (msg, _) = good.rsplit_once('.').unwrap();
    assert!(check(&v, &format!("{msg}.AAAA")).await.is_err());
    let forged_payload = b64(claims("ops@example.edu").to_string().as_bytes(), false);
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert!(
        check(&v, &tampered)
            .await
            .unwrap_err()
            .contains("signature")
    );
    // alg none, with and without a signature segment.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#, false);
    let payload = b64(claims("a@b.c").to_string().as_bytes(), false);
    let e = check(&v, &format!("{none_header}.{payload}."))
        .await
        .unwrap_err();
    assert!(e.contains("unsigned"), "{e}");
    let e = check(&v, &format!("{none_header}.{payload}.AAAA"))
        .await
        .unwrap_err();
    assert!(e.contains("alg none"), "{e}");
    // HS256 "signed" with the public key file's bytes as the secret (alg confusion).
    let public_pem = fixture("TEST-ONLY-es256-a.pub.pem");
    for secret in [public_pem.as_bytes().to_vec(), pem_der(&public_pem)] {
        let token = sign(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &claims("a@b.c"),
            &EncodingKey::from_secret(&secret),
            Algorithm::HS256,
            false,
        );
        let e = check(&v, &token).await.unwrap_err();
        assert!(e.contains("HS256"), "{e}");
    }
    // An RS256 token against the EC key: no key of that family.
    let token = sign(
        &json!({"alg": "RS256"}),
        &claims("a@b.c"),
        &rsa_key_c(),
        Algorithm::RS256,
        false,
    );
    let e = check(&v, &token).await.unwrap_err();
    assert!(e.contains("no configured key"), "{e}");
    for junk in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &"a".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        assert!(check(&v, junk).await.is_err(), "{junk}");
    }
    // crit extensions are refused even when signed.
    let token = sign(
        &json!({"alg": "ES256", "crit": ["b64"], "b64": false}),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    assert!(check(&v, &token).await.unwrap_err().contains("crit"));
}

#[tokio::test]
async fn time_issuer_audience_and_email_are_checked() {
    let v = pem_verifier(|a| {
        a.issuer = Some("https://idp.example.edu".into());
        a.audience = Some("examflow".into());
    });
    let key = es_key("a");
    let ok = |c: &Value| sign(&es256("a"), c, &key, Algorithm::ES256, false);
    let mut c = claims("a@b.c");
    c["aud"] = json!(["other", "examflow"]);
    assert!(check(&v, &ok(&c)).await.is_ok());
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "expired",
            Box::new(|c| c["exp"] = json!(NOW - LEEWAY_SECS - 1)),
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "exp is not a number",
            Box::new(|c| c["exp"] = json!("soon")),
        ),
        (
            "not valid yet",
            Box::new(|c| c["nbf"] = json!(NOW + LEEWAY_SECS + 10)),
        ),
        (
            "issuer",
            Box::new(|c| c["iss"] = json!("https://evil.example.org")),
        ),
        (
            "no iss",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        ("audience", Box::new(|c| c["aud"] = json!("someone-else"))),
        ("audience", Box::new(|c| c["aud"] = json!(["a", "b"]))),
        (
            "audience",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "no email",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("email");
            }),
        ),
        (
            "not a valid email",
            Box::new(|c| c["email"] = json!("nobody")),
        ),
        (
            "not verified",
            Box::new(|c| c["email_verified"] = json!(false)),
        ),
    ];
    for (expected, change) in cases {
        let mut c = claims("a@b.c");
        c["aud"] = json!("examflow");
        change(&mut c);
        let e = check(&v, &ok(&c)).await.unwrap_err();
        assert!(e.contains(expected), "{expected}: {e}");
    }
    // Within the leeway is fine.
    let mut c = claims("a@b.c");
    c["aud"] = json!("examflow");
    c["exp"] = json!(NOW - LEEWAY_SECS + 5);
    assert!(check(&v, &ok(&c)).await.is_ok());
}

#[tokio::test]
async fn role_claims_count_only_when_opted_in() {
    let mut c = claims("kim@example.edu");
    c["role"] = json!("admin");
    c["realm_access"] = json!({"roles": ["educator", "offline_access"]});
    let token = sign(&es256("a"), &c, &es_key("a"), Algorithm::ES256, false);
    let plain = pem_verifier(|_| {});
    assert_eq!(check(&plain, &token).await.unwrap().role, Role::Student);
    let opted = pem_verifier(|a| a.role_claim = Some("realm_access.roles".into()));
    assert_eq!(check(&opted, &token).await.unwrap().role, Role::Educator);
    // The map still applies; the higher of both wins.
    let both = pem_verifier(|a| {
        a.role_claim = Some("realm_access.roles".into());
        a.roles
            .insert("admin".into(), vec!["kim@example.edu".into()]);
    });
    assert_eq!(check(&both, &token).await.unwrap().role, Role::Admin);
}

fn jwk_of(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

#[tokio::test]
async fn jwks_file_selects_the_key_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = json!({"keys": [
        jwk_of(&es_key("a"), Algorithm::ES256, "key-a"),
        jwk_of(&rsa_key_c(), Algorithm::RS256, "key-c"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
    ]});
    std::fs::write(&path, jwks.to_string()).unwrap();
    let v = ProxyVerifier::from_config(&auth_with(|a| a.jwks_file = Some(path.clone())))
        .unwrap()
        .unwrap();
    let es = sign(
        &es256("key-a"),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    assert!(check(&v, &es).await.is_ok());
    let rs = sign(
        &json!({"alg": "RS256", "kid": "key-c"}),
        &claims("a@b.c"),
        &rsa_key_c(),
        Algorithm::RS256,
        false,
    );
    assert!(check(&v, &rs).await.is_ok());
    // Right key, wrong kid; unknown kid; no kid with several keys.
    let e = check(
        &v,
        &sign(
            &es256("key-c"),
            &claims("a@b.c"),
            &es_key("a"),
            Algorithm::ES256,
            false,
        ),
    )
    .await
    .unwrap_err();
    assert!(e.contains("no configured key"), "{e}");
    assert!(
        check(
            &v,
            &sign(
                &es256("nope"),
                &claims("a@b.c"),
                &es_key("a"),
                Algorithm::ES256,
                false
            )
        )
        .await
        .is_err()
    );
    let no_kid = sign(
        &json!({"alg": "ES256"}),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    assert!(check(&v, &no_kid).await.is_err());
    // The symmetric key in the set is never used, even named by kid.
    let hs = sign(
        &json!({"alg": "HS256", "kid": "hmac"}),
        &claims("a@b.c"),
        &EncodingKey::from_secret(b"secret"),
        Algorithm::HS256,
        false,
    );
    assert!(check(&v, &hs).await.is_err());
}

#[test]
fn configuration_errors_name_what_is_missing() {
    let e = ProxyVerifier::from_config(&auth_with(|_| {}))
        .err()
        .unwrap();
    for name in [
        "identity_public_key_file",
        "alb_key_url",
        "jwks_file",
        "jwks_url",
    ] {
        assert!(e.contains(name), "{e}");
    }
    let e = ProxyVerifier::from_config(&auth_with(|a| {
        a.identity_public_key_file = Some("/nonexistent/alb.pem".into())
    }))
    .err()
    .unwrap();
    assert!(e.contains("/nonexistent/alb.pem"), "{e}");
    let e = ProxyVerifier::from_config(&auth_with(|a| {
        a.identity_public_key_file = Some(format!("{FIXTURES}/TEST-ONLY-es256-a.key.pem").into())
    }))
    .err()
    .unwrap();
    assert!(e.contains("private key"), "{e}");
    let e = ProxyVerifier::from_config(&auth_with(|a| {
        a.alb_key_url = Some("https://public-keys.auth.elb.eu-west-1.amazonaws.com/".into())
    }))
    .err()
    .unwrap();
    assert!(e.contains("{kid}"), "{e}");
    let e = ProxyVerifier::from_config(&auth_with(|a| a.jwks_url = Some("ftp://idp/jwks".into())))
        .err()
        .unwrap();
    assert!(e.contains("auth.jwks_url"), "{e}");
    let mut auth = AuthConfig::default();
    auth.roles.insert("superuser".into(), vec!["a@b.c".into()]);
    assert!(
        ProxyVerifier::from_config(&auth)
            .err()
            .unwrap()
            .contains("superuser")
    );
    assert!(
        ProxyVerifier::from_config(&AuthConfig::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn pem_keys_of_each_kind_are_read() {
    let ec = key_of_pem(&fixture("TEST-ONLY-es256-a.pub.pem")).unwrap();
    assert_eq!(ec.alg, Some(Algorithm::ES256));
    let rsa = key_of_pem(&fixture("TEST-ONLY-rs256-c.pub.pem")).unwrap();
    assert_eq!(rsa.family, jsonwebtoken::AlgorithmFamily::Rsa);
    assert!(rsa.accepts(Algorithm::RS256) && rsa.accepts(Algorithm::PS256));
    assert!(!rsa.accepts(Algorithm::ES256) && !rsa.accepts(Algorithm::HS256));
    assert!(key_of_pem("hello").is_err());
    assert!(key_of_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
}

/// A one-route HTTP server on loopback answering `body(path)`, counting requests.
async fn serve_keys(
    body: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let (count2, body) = (count.clone(), Arc::new(body));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (count, body) = (count2.clone(), body.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let response = match body(&path) {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                        b.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .into()
                    }
                };
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (base, count)
}

#[tokio::test]
async fn jwks_url_keys_are_cached_and_unknown_kids_refetch_at_most_once_per_interval() {
    let keys = Arc::new(std::sync::Mutex::new(vec![jwk_of(
        &es_key("a"),
        Algorithm::ES256,
        "key-a",
    )]));
    let served = keys.clone();
    let (base, count) =
        serve_keys(move |_| Some(json!({"keys": *served.lock().unwrap()}).to_string())).await;
    let v = ProxyVerifier::from_config(&auth_with(|a| a.jwks_url = Some(format!("{base}/jwks"))))
        .unwrap()
        .unwrap();
    v.prefetch().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let token_a = sign(
        &es256("key-a"),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    for _ in 0..3 {
        assert!(check(&v, &token_a).await.is_ok());
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "cached keys are not fetched again"
    );
    // A rotated-in key: unknown until a refetch, which the interval bounds.
    keys.lock()
        .unwrap()
        .push(jwk_of(&es_key("b"), Algorithm::ES256, "key-b"));
    let token_b = sign(
        &es256("key-b"),
        &claims("b@b.c"),
        &es_key("b"),
        Algorithm::ES256,
        false,
    );
    for kid in ["x1", "x2", "x3"] {
        assert!(
            check(
                &v,
                &sign(
                    &es256(kid),
                    &claims("a@b.c"),
                    &es_key("a"),
                    Algorithm::ES256,
                    false
                )
            )
            .await
            .is_err()
        );
    }
    assert!(check(&v, &token_b).await.is_err());
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "unknown kids within the interval fetch nothing"
    );
    // Once the interval has passed, one unknown kid fetches once and finds the new key.
    let Source::Remote(remote) = &v.sources[0] else {
        panic!()
    };
    remote.state.write().unwrap().last_attempt = None;
    assert_eq!(check(&v, &token_b).await.unwrap().email, "b@b.c");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(check(&v, &token_a).await.is_ok());
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn alb_keys_are_fetched_per_kid_and_cached() {
    let kid = "5f6a3c1e-1111-2222-3333-444455556666";
    let pem = fixture("TEST-ONLY-es256-a.pub.pem");
    let (base, count) =
        serve_keys(move |path| (path == format!("/{kid}")).then(|| pem.clone())).await;
    let v = ProxyVerifier::from_config(&auth_with(|a| {
        a.alb_key_url = Some(format!("{base}/{{kid}}"))
    }))
    .unwrap()
    .unwrap();
    v.prefetch().await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "nothing to prefetch without a kid"
    );
    let token = sign(
        &es256(kid),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        true,
    );
    assert!(check(&v, &token).await.is_ok());
    assert!(check(&v, &token).await.is_ok());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Another kid within the interval: no fetch; a kid that is not a key id: none either.
    let other = sign(
        &es256("0000"),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        true,
    );
    assert!(check(&v, &other).await.is_err());
    let evil = sign(
        &es256("../../etc/passwd"),
        &claims("a@b.c"),
        &es_key("a"),
        Algorithm::ES256,
        true,
    );
    assert!(check(&v, &evil).await.unwrap_err().contains("kid"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // The right kid but signed by another key.
    let wrong = sign(
        &es256(kid),
        &claims("a@b.c"),
        &es_key("b"),
        Algorithm::ES256,
        true,
    );
    assert!(check(&v, &wrong).await.unwrap_err().contains("signature"));
}

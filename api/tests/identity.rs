//! Identity that cannot be forged, against the real server: the trusted-proxy header is
//! verified (PEM key, JWKS URL, ALB key URL), roles come from the server's map, startup
//! refuses an unverifiable header, and dev login is off beyond loopback unless forced.
//! Keys: api/tests/fixtures/identity (TEST-ONLY, generated for these tests).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, ServerOptions, sample_banks};
use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
use serde_json::{Value, json};

const HEADER: &str = "X-Amzn-Oidc-Data";
const ISSUER: &str = "https://idp.example.edu/realms/exams";
const ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/exams/50dc6c495c0c9188";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/identity")
        .join(name)
}

fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// ES256 private key "a" or "b" (PKCS#8).
fn es_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_der(&pem_der(&fixture(&format!(
        "TEST-ONLY-es256-{name}.key.pem"
    ))))
}

/// RS256 private key "c" (PKCS#1).
fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_der(&pem_der(&fixture("TEST-ONLY-rs256-c.key.pem")))
}

fn b64(bytes: &[u8], padded: bool) -> String {
    if padded {
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// A JWT signed by `key`; `padded` writes every segment with base64 padding, as the ALB does.
fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm, padded: bool) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), padded),
        b64(claims.to_string().as_bytes(), padded)
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    format!("{message}.{}", b64(&sig, padded))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(email: &str) -> Value {
    json!({"sub": "u-1", "email": email, "iss": ISSUER, "aud": "examflow", "exp": now() + 300})
}

fn es256(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
}

fn write_config(dir: &Path, auth: &str) -> PathBuf {
    let path = dir.join("examflow.toml");
    std::fs::write(&path, auth).unwrap();
    path
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

async fn me(server: &Server, header: Option<&str>) -> (u16, Value) {
    let mut req = server.client.get(server.url("/api/me"));
    if let Some(h) = header {
        req = req.header(HEADER, h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_401(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
}

#[tokio::test]
async fn identity_header_is_verified_with_the_pem_key_and_roles_come_from_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nidentity_header = \"{HEADER}\"\nidentity_public_key_file = {}\n\
             issuer = \"{ISSUER}\"\n\
             [auth.roles]\nadmin = [\"ops@example.edu\"]\neducator = [\"*@staff.example.edu\"]\n",
            toml_path(&fixture("TEST-ONLY-es256-a.pub.pem"))
        ),
    );
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.config_file = Some(config);
    let server = Server::start(options);

    // No header, no token.
    let (s, b) = me(&server, None).await;
    assert_401(s, &b, "anonymous");

    // Forged: a payload claiming admin with a garbage signature, the old way of "signing in".
    let mut forged_claims = claims("ops@example.edu");
    forged_claims["role"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        b64(es256("k").to_string().as_bytes(), false),
        b64(forged_claims.to_string().as_bytes(), false),
        b64(b"not a signature", false)
    );
    let (s, b) = me(&server, Some(&forged)).await;
    assert_401(s, &b, "garbage signature");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{b}"
    );
    // Unsigned (alg none) and a signature made with the public key as an HMAC secret.
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#, false),
        b64(forged_claims.to_string().as_bytes(), false)
    );
    let (s, b) = me(&server, Some(&unsigned)).await;
    assert_401(s, &b, "alg none");
    let public_pem = std::fs::read(fixture("TEST-ONLY-es256-a.pub.pem")).unwrap();
    let confused = sign(
        &json!({"alg": "HS256"}),
        &forged_claims,
        &EncodingKey::from_secret(&public_pem),
        Algorithm::HS256,
        false,
    );
    let (s, b) = me(&server, Some(&confused)).await;
    assert_401(s, &b, "HS256 with the public key as secret");
    // Signed by another key.
    let wrong = sign(
        &es256("k"),
        &claims("ops@example.edu"),
        &es_key("b"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&wrong)).await;
    assert_401(s, &b, "wrong key");

    // Correctly signed: the role comes from [auth.roles].
    let ops = sign(
        &es256("k"),
        &claims("Ops@Example.edu"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&ops)).await;
    assert_eq!(
        (s, &b),
        (200, &json!({"email": "ops@example.edu", "role": "admin"}))
    );
    let kim = sign(
        &es256("k"),
        &claims("kim@staff.example.edu"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&kim)).await;
    assert_eq!(
        (s, &b),
        (
            200,
            &json!({"email": "kim@staff.example.edu", "role": "educator"})
        )
    );
    // A validly signed role claim is ignored without auth.role_claim.
    let mut claims_admin = claims("stranger@example.org");
    claims_admin["role"] = json!("admin");
    let stranger = sign(
        &es256("k"),
        &claims_admin,
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&stranger)).await;
    assert_eq!(
        (s, &b),
        (
            200,
            &json!({"email": "stranger@example.org", "role": "student"})
        )
    );
    // Staff routes follow the mapped role.
    let resp = server
        .client
        .get(server.url("/api/admin/banks"))
        .header(HEADER, &stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = server
        .client
        .get(server.url("/api/admin/banks"))
        .header(HEADER, &kim)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // The ALB's form: padded segments, exp/iss in the header too.
    let mut alb_header = es256("2a8b7f4e-1c1d-4b2a-9f0e-0123456789ab");
    alb_header["signer"] = json!(ARN);
    alb_header["iss"] = json!(ISSUER);
    alb_header["exp"] = json!(now() + 120);
    let mut payload = json!({"sub": "u-2", "email": "ana@example.edu", "exp": now() + 120});
    let mut filler = String::new();
    while !b64(payload.to_string().as_bytes(), true).ends_with('=') {
        filler.push('x');
        payload["name"] = json!(filler);
    }
    let alb = sign(&alb_header, &payload, &es_key("a"), Algorithm::ES256, true);
    assert!(alb.split('.').nth(1).unwrap().ends_with('='), "{alb}");
    let (s, b) = me(&server, Some(&alb)).await;
    assert_eq!(
        (s, &b),
        (200, &json!({"email": "ana@example.edu", "role": "student"}))
    );

    // Expired and wrong issuer.
    let mut old = claims("ops@example.edu");
    old["exp"] = json!(now() - 3600);
    let expired = sign(&es256("k"), &old, &es_key("a"), Algorithm::ES256, false);
    let (s, b) = me(&server, Some(&expired)).await;
    assert_401(s, &b, "expired");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("expired"),
        "{b}"
    );
    let mut other = claims("ops@example.edu");
    other["iss"] = json!("https://evil.example.org");
    let wrong_iss = sign(&es256("k"), &other, &es_key("a"), Algorithm::ES256, false);
    let (s, b) = me(&server, Some(&wrong_iss)).await;
    assert_401(s, &b, "wrong issuer");

    // Two identity headers are refused rather than guessed between.
    let resp = server
        .client
        .get(server.url("/api/me"))
        .header(HEADER, &kim)
        .header(HEADER, &ops)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // The server's own bearer tokens keep working.
    let token = server.token("t@example.edu", "educator");
    let (s, b) = server.get("/api/me", Some(&token)).await;
    assert_eq!(
        (s, &b),
        (200, &json!({"email": "t@example.edu", "role": "educator"}))
    );
}

/// A loopback HTTP server on its own thread answering `body(path)` (404 on None), counting
/// requests.
fn key_server(
    body: impl Fn(&str) -> Option<String> + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let count2 = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            count2.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let response = match body(&path) {
                Some(b) => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                    b.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (base, count)
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

#[tokio::test]
async fn jwks_url_keys_are_fetched_once_and_selected_by_kid() {
    let jwks = json!({"keys": [
        jwk(&es_key("a"), Algorithm::ES256, "kid-es"),
        jwk(&rsa_key(), Algorithm::RS256, "kid-rs"),
    ]})
    .to_string();
    let (base, fetches) =
        key_server(move |path| (path == "/realms/exams/certs").then(|| jwks.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nidentity_header = \"{HEADER}\"\njwks_url = \"{base}/realms/exams/certs\"\n\
             issuer = \"{ISSUER}\"\naudience = \"examflow\"\nrole_claim = \"realm_access.roles\"\n"
        ),
    );
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.config_file = Some(config);
    let server = Server::start(options);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the JWKS is fetched at start"
    );

    // Keycloak style: RS256, roles opted in from realm_access.roles.
    let mut c = claims("kim@example.edu");
    c["realm_access"] = json!({"roles": ["offline_access", "educator"]});
    let rs = sign(
        &json!({"alg": "RS256", "kid": "kid-rs"}),
        &c,
        &rsa_key(),
        Algorithm::RS256,
        false,
    );
    let (s, b) = me(&server, Some(&rs)).await;
    assert_eq!(
        (s, &b),
        (
            200,
            &json!({"email": "kim@example.edu", "role": "educator"})
        )
    );
    let es = sign(
        &es256("kid-es"),
        &claims("lee@example.edu"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&es)).await;
    assert_eq!(
        (s, &b),
        (200, &json!({"email": "lee@example.edu", "role": "student"}))
    );

    // The kid picks the key: the right signature under another key's kid fails.
    let swapped = sign(
        &es256("kid-rs"),
        &claims("lee@example.edu"),
        &es_key("a"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&swapped)).await;
    assert_401(s, &b, "kid of another key");
    let wrong = sign(
        &es256("kid-es"),
        &claims("lee@example.edu"),
        &es_key("b"),
        Algorithm::ES256,
        false,
    );
    let (s, b) = me(&server, Some(&wrong)).await;
    assert_401(s, &b, "signed by a key not in the JWKS");
    let mut aud = claims("lee@example.edu");
    aud["aud"] = json!("another-client");
    let (s, b) = me(
        &server,
        Some(&sign(
            &es256("kid-es"),
            &aud,
            &es_key("a"),
            Algorithm::ES256,
            false,
        )),
    )
    .await;
    assert_401(s, &b, "wrong audience");

    // Random kids do not turn into fetches.
    for i in 0..5 {
        let random = sign(
            &es256(&format!("random-{i}")),
            &claims("x@example.edu"),
            &es_key("a"),
            Algorithm::ES256,
            false,
        );
        let (s, b) = me(&server, Some(&random)).await;
        assert_401(s, &b, "unknown kid");
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "cached keys; unknown kids refetch at most once a minute"
    );
}

#[tokio::test]
async fn alb_keys_are_fetched_per_kid_and_the_signer_is_checked() {
    let kid = "7f3a2b1c-aaaa-bbbb-cccc-0123456789ab";
    let pem = std::fs::read_to_string(fixture("TEST-ONLY-es256-a.pub.pem")).unwrap();
    let (base, fetches) = key_server(move |path| (path == format!("/{kid}")).then(|| pem.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nidentity_header = \"{HEADER}\"\nalb_key_url = \"{base}/{{kid}}\"\nalb_arn = \"{ARN}\"\n"
        ),
    );
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.config_file = Some(config);
    let server = Server::start(options);

    let mut header = es256(kid);
    header["signer"] = json!(ARN);
    header["exp"] = json!(now() + 60);
    let payload = json!({"sub": "1", "email": "p@example.edu", "exp": now() + 60});
    let good = sign(&header, &payload, &es_key("a"), Algorithm::ES256, true);
    for _ in 0..3 {
        let (s, b) = me(&server, Some(&good)).await;
        assert_eq!(
            (s, &b),
            (200, &json!({"email": "p@example.edu", "role": "student"}))
        );
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the key of a kid is fetched once"
    );
    let mut other = header.clone();
    other["signer"] =
        json!("arn:aws:elasticloadbalancing:eu-west-1:999999999999:loadbalancer/app/x/1");
    let (s, b) = me(
        &server,
        Some(&sign(
            &other,
            &payload,
            &es_key("a"),
            Algorithm::ES256,
            true,
        )),
    )
    .await;
    assert_401(s, &b, "another load balancer");
    let (s, b) = me(
        &server,
        Some(&sign(
            &header,
            &payload,
            &es_key("b"),
            Algorithm::ES256,
            true,
        )),
    )
    .await;
    assert_401(s, &b, "wrong key for the kid");
}

/// Runs `examflow serve` with `args`; the child and stderr's path.
fn spawn_serve(dir: &Path, config: Option<&Path>, args: &[&str]) -> (Child, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_examflow"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--banks")
        .arg(sample_banks())
        .current_dir(dir)
        .env_remove("EXAMFLOW_CONFIG")
        .env_remove("EXAMFLOW_LISTEN")
        .env_remove("EXAMFLOW_DEV_LOGIN")
        .env_remove("EXAMFLOW_LOG")
        .env_remove("EXAMFLOW_KAFKA_BROKERS")
        .env_remove("EXAMFLOW_MONGODB_URI")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    (cmd.spawn().expect("starting examflow"), log)
}

/// The exit status and stderr of a server that must refuse to start.
fn refused(auth: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), auth);
    let (mut child, log) = spawn_serve(dir.path(), Some(&config), &["--listen", "127.0.0.1:0"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with {auth:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(log).unwrap();
    assert!(!status.success(), "{auth:?} exited with {status}: {stderr}");
    stderr
}

#[test]
fn the_server_refuses_an_identity_header_it_cannot_verify() {
    let e = refused(&format!("[auth]\nidentity_header = \"{HEADER}\"\n"));
    for needed in [
        "auth.identity_header",
        "identity_public_key_file",
        "alb_key_url",
        "jwks_file",
        "jwks_url",
    ] {
        assert!(e.contains(needed), "{needed} missing from: {e}");
    }
    let e = refused(&format!(
        "[auth]\nidentity_header = \"{HEADER}\"\nidentity_public_key_file = \"/nonexistent/alb-key.pem\"\n"
    ));
    assert!(e.contains("/nonexistent/alb-key.pem"), "{e}");
    let e = refused(&format!(
        "[auth]\nidentity_header = \"{HEADER}\"\nidentity_public_key_file = {}\n",
        toml_path(&fixture("TEST-ONLY-es256-a.key.pem"))
    ));
    assert!(e.contains("private key"), "{e}");
    let e = refused("[auth.roles]\nsuperuser = [\"ops@example.edu\"]\n");
    assert!(e.contains("superuser") && e.contains("unknown role"), "{e}");
}

/// Starts a server on 0.0.0.0 (reached through 127.0.0.1): its base URL.
fn start_on_any_address(child: &mut Child, log: &Path) -> String {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let port = line
        .trim()
        .strip_prefix("examflow listening on http://0.0.0.0:")
        .unwrap_or_else(|| {
            panic!(
                "server did not start: {line:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    format!("http://127.0.0.1:{port}")
}

async fn dev_login_state(client: &reqwest::Client, base: &str) -> (Value, u16, Value) {
    let status = client
        .get(format!("{base}/api/dev-login"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let resp = client
        .post(format!("{base}/api/dev-login"))
        .json(&json!({"email": "Dev@Example.edu"}))
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (status, code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_login_is_off_beyond_loopback_unless_forced_and_then_warns() {
    let client = reqwest::Client::new();

    // Loopback: on, no warning.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (status, code, body) = dev_login_state(&client, &server.base).await;
    assert_eq!(status, json!({"enabled": true, "warning": false}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["email"], "dev@example.edu");
    assert!(
        !server.log().contains("dev login is ON"),
        "{}",
        server.log()
    );

    // Any address, by default: off.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_serve(dir.path(), None, &["--listen", "0.0.0.0:0"]);
    let base = start_on_any_address(&mut child, &log);
    let (status, code, body) = dev_login_state(&client, &base).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, json!({"enabled": false, "warning": false}));
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("dev login is ON")
    );

    // Any address, forced on: works, says so, and the log warns.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_serve(
        dir.path(),
        None,
        &["--listen", "0.0.0.0:0", "--dev-login", "true"],
    );
    let base = start_on_any_address(&mut child, &log);
    let (status, code, body) = dev_login_state(&client, &base).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, json!({"enabled": true, "warning": true}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["role"], "student");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("WARN") && stderr.contains("dev login is ON"),
        "{stderr}"
    );
}

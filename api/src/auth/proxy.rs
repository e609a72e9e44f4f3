//! The trusted-proxy identity header (`auth.identity_header`), verified, never believed: a
//! signed JWT from an AWS ALB (`X-Amzn-Oidc-Data`) or an OIDC provider (an ID token from
//! Keycloak, Dex, ... forwarded by oauth2-proxy and the like), checked against configured
//! public keys.
//!
//! What is checked, in order:
//! - the shape: three base64url segments (trailing `=` padding tolerated, as the ALB sends
//!   it), a JSON header and payload, at most [`MAX_TOKEN_BYTES`];
//! - `alg`: only asymmetric algorithms (ES256/384, RS256/384/512, PS256/384/512, EdDSA);
//!   `none` and HS* are refused, so a public key can never serve as an HMAC secret;
//!   headers with `crit` extensions are refused;
//! - `exp` (required, in the payload or, ALB style, the header; [`LEEWAY_SECS`] of clock
//!   skew), `nbf` when present;
//! - the header's `signer` against `auth.alb_arn`, `iss` against `auth.issuer` and `aud`
//!   (a string or a list; the ALB's header `client` when there is no `aud`) against
//!   `auth.audience`, each when configured;
//! - the signature over the segments `header.payload` exactly as received (the ALB signs
//!   them with their padding), with a key of the algorithm's family: the PEM file's key
//!   for any `kid`, the JWKS keys (file or URL) and the ALB's per-`kid` key by `kid`;
//! - the `email` claim (lowercased, `validate_email`), refused when `email_verified` is
//!   false.
//!
//! Fetched keys (`jwks_url`, `alb_key_url`) are cached for `jwks_refresh_secs`, kept when a
//! refresh fails, and refreshed on demand; a `kid` not in the cache triggers at most one
//! fetch per [`REFETCH_INTERVAL`] (every [`FIRST_FETCH_RETRY`] until one fetch succeeded),
//! so random `kid`s cannot turn requests into fetches. Fetches time out after
//! [`FETCH_TIMEOUT`]. The JWKS URL is fetched at start; when that fails the server starts
//! anyway (logging a warning) and fetches when the first token arrives: an identity
//! provider that is briefly down must not keep the exam server down, and until keys are
//! fetched every header is refused (401), never believed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::http::HeaderName;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::roles::{RoleMap, role_from_claim};
use super::{Identity, validate_email};
use crate::config::AuthConfig;
use crate::error::ApiError;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Longest header accepted (the ALB's is at most about 16 KiB).
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;
/// Time limit of one key fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two fetches of one key source after a first success (unknown `kid`s
/// and stale caches alike).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between fetches while no fetch has succeeded yet.
pub const FIRST_FETCH_RETRY: Duration = Duration::from_secs(5);
/// Largest key document fetched.
const MAX_KEY_DOCUMENT_BYTES: usize = 1 << 20;

/// A public key with what it may verify.
#[derive(Clone)]
struct PublicKey {
    key: DecodingKey,
    family: jsonwebtoken::AlgorithmFamily,
    /// The one algorithm this key verifies, when known (a JWK's `alg`, an EC key's curve).
    alg: Option<Algorithm>,
}

impl PublicKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }

    fn verifies(&self, message: &[u8], signature: &str, alg: Algorithm) -> bool {
        self.accepts(alg)
            && jsonwebtoken::crypto::verify(signature, message, &self.key, alg).unwrap_or(false)
    }
}

/// Keys by `kid`; a token without `kid` may use a set's only key.
#[derive(Clone, Default)]
struct KeySet {
    by_kid: HashMap<String, Vec<PublicKey>>,
    count: usize,
}

impl KeySet {
    fn insert(&mut self, kid: String, key: PublicKey) {
        self.by_kid.entry(kid).or_default().push(key);
        self.count += 1;
    }

    fn lookup(&self, kid: Option<&str>) -> Vec<PublicKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned().unwrap_or_default(),
            None if self.count == 1 => self.by_kid.values().flatten().cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The usable signature keys of a JWKS document; other keys (encryption keys,
    /// symmetric `oct` keys, unknown types or curves) are skipped.
    fn from_jwks(text: &[u8]) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS document: no \"keys\" list")?;
        let mut set = KeySet::default();
        for raw in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if let Some(key) = key_of_jwk(&jwk) {
                set.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
            }
        }
        if set.count == 0 {
            return Err(
                "the JWKS document holds no usable signature key (EC P-256/P-384, RSA or Ed25519)"
                    .into(),
            );
        }
        Ok(set)
    }
}

fn key_of_jwk(jwk: &Jwk) -> Option<PublicKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let declared: Option<Algorithm> = match &jwk.common.key_algorithm {
        Some(alg) => Some(alg.to_string().parse().ok()?),
        None => None,
    };
    let (family, implied) = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (jsonwebtoken::AlgorithmFamily::Ec, Some(Algorithm::ES256)),
            EllipticCurve::P384 => (jsonwebtoken::AlgorithmFamily::Ec, Some(Algorithm::ES384)),
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => (jsonwebtoken::AlgorithmFamily::Rsa, None),
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (jsonwebtoken::AlgorithmFamily::Ed, Some(Algorithm::EdDSA))
        }
        // Symmetric keys never verify the identity header.
        _ => return None,
    };
    if let (Some(d), Some(i)) = (declared, implied)
        && d != i
    {
        return None;
    }
    if declared.is_some_and(|d| d.family() != family) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(PublicKey {
        key,
        family,
        alg: declared.or(implied),
    })
}

/// Reads a PEM public key: SPKI (`BEGIN PUBLIC KEY`: EC P-256/P-384, RSA, Ed25519) or
/// PKCS#1 (`BEGIN RSA PUBLIC KEY`).
fn key_of_pem(text: &str) -> Result<PublicKey, String> {
    let begin = text
        .find("-----BEGIN ")
        .ok_or("not a PEM file (no \"-----BEGIN\" line)")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let (label, rest) = rest
        .split_once("-----")
        .ok_or("malformed PEM header line")?;
    let end_marker = format!("-----END {label}-----");
    let body = &rest[..rest
        .find(&end_marker)
        .ok_or_else(|| format!("no \"{end_marker}\" line"))?];
    let b64: String = body
        .lines()
        .filter(|l| !l.contains(':'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    match label {
        "PUBLIC KEY" => key_of_spki(&der),
        "RSA PUBLIC KEY" => rsa_key(&der),
        "CERTIFICATE" => Err("this is a certificate; give its public key \
             (`openssl x509 -in cert.pem -pubkey -noout`)"
            .into()),
        l if l.contains("PRIVATE KEY") => Err("this is a private key; give the public key \
             (`openssl pkey -in key.pem -pubout`) and keep the private key off this server"
            .into()),
        other => Err(format!(
            "unsupported PEM type {other:?}; expected \"PUBLIC KEY\""
        )),
    }
}

fn key_of_spki(der: &[u8]) -> Result<PublicKey, String> {
    use spki::der::Decode as _;
    const EC: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    const P384: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.132.0.34");
    const RSA: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    const ED25519: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.101.112");
    let info = spki::SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
    let bits = info
        .subject_public_key
        .as_bytes()
        .ok_or("the public key bit string is not whole bytes")?;
    let oid = info.algorithm.oid;
    let key = if oid == EC {
        let alg = match info.algorithm.parameters_oid() {
            Ok(c) if c == P256 => Algorithm::ES256,
            Ok(c) if c == P384 => Algorithm::ES384,
            Ok(c) => return Err(format!("unsupported EC curve {c} (use P-256 or P-384)")),
            Err(e) => return Err(format!("EC key without a named curve: {e}")),
        };
        PublicKey {
            key: DecodingKey::from_ec_der(bits),
            family: jsonwebtoken::AlgorithmFamily::Ec,
            alg: Some(alg),
        }
    } else if oid == RSA {
        return rsa_key(bits);
    } else if oid == ED25519 {
        PublicKey {
            key: DecodingKey::from_ed_der(bits),
            family: jsonwebtoken::AlgorithmFamily::Ed,
            alg: Some(Algorithm::EdDSA),
        }
    } else {
        return Err(format!(
            "unsupported key algorithm {oid} (use EC P-256/P-384, RSA or Ed25519)"
        ));
    };
    // The verifier parses the key first: an invalid point is an error, not a mismatch.
    let alg = key.alg.unwrap_or(Algorithm::ES256);
    jsonwebtoken::crypto::verify("", b"", &key.key, alg)
        .map_err(|e| format!("invalid public key: {e}"))?;
    Ok(key)
}

/// A PKCS#1 `RSAPublicKey`: SEQUENCE { modulus INTEGER, publicExponent INTEGER }.
fn rsa_key(der: &[u8]) -> Result<PublicKey, String> {
    use spki::der::{Decode as _, Reader as _, SliceReader, asn1::UintRef};
    let parse = || -> spki::der::Result<(Vec<u8>, Vec<u8>)> {
        let mut reader = SliceReader::new(der)?;
        let (n, e) = reader.sequence(|r| {
            let n = UintRef::decode(r)?;
            let e = UintRef::decode(r)?;
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })?;
        reader.finish((n, e))
    };
    let (n, e) = parse().map_err(|e| format!("not an RSA public key: {e}"))?;
    if n.len() * 8 < 2048 {
        return Err(format!(
            "RSA key of {} bits is too weak (at least 2048)",
            n.len() * 8
        ));
    }
    Ok(PublicKey {
        key: DecodingKey::from_rsa_raw_components(&n, &e),
        family: jsonwebtoken::AlgorithmFamily::Rsa,
        alg: None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteKind {
    /// A JWKS document with every key.
    Jwks,
    /// One PEM key per `kid` (the URL template holds `{kid}`).
    Alb,
}

#[derive(Default)]
struct RemoteState {
    /// Fetched keys and when: one slot ("") for a JWKS, one per `kid` for the ALB.
    slots: HashMap<String, (KeySet, Instant)>,
    last_attempt: Option<Instant>,
    ever_ok: bool,
}

/// Keys fetched over HTTP(S), cached.
struct RemoteKeys {
    kind: RemoteKind,
    /// The URL, or the template with `{kid}`.
    url: String,
    client: reqwest::Client,
    ttl: Duration,
    refetch_interval: Duration,
    state: RwLock<RemoteState>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteKeys {
    fn new(kind: RemoteKind, url: &str, ttl: Duration) -> Result<RemoteKeys, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(RemoteKeys {
            kind,
            url: url.to_string(),
            client,
            ttl,
            refetch_interval: REFETCH_INTERVAL.min(ttl),
            state: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn name(&self) -> &'static str {
        match self.kind {
            RemoteKind::Jwks => "auth.jwks_url",
            RemoteKind::Alb => "auth.alb_key_url",
        }
    }

    fn slot(&self, kid: Option<&str>) -> String {
        match self.kind {
            RemoteKind::Jwks => String::new(),
            RemoteKind::Alb => kid.unwrap_or_default().to_string(),
        }
    }

    /// The cached keys for `kid` and whether they are fresh; None when never fetched.
    fn cached(&self, kid: Option<&str>, now: Instant) -> Option<(Vec<PublicKey>, bool)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let (set, at) = state.slots.get(&self.slot(kid))?;
        Some((set.lookup(kid), now.duration_since(*at) < self.ttl))
    }

    fn may_fetch(&self, now: Instant) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let interval = if state.ever_ok {
            self.refetch_interval
        } else {
            FIRST_FETCH_RETRY.min(self.refetch_interval)
        };
        state
            .last_attempt
            .is_none_or(|at| now.duration_since(at) >= interval)
    }

    async fn keys(&self, kid: Option<&str>) -> Result<Vec<PublicKey>, String> {
        if self.kind == RemoteKind::Alb {
            let kid = kid.ok_or("no kid in the header (the ALB names its key by kid)")?;
            if kid.is_empty()
                || kid.len() > 128
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                || kid.starts_with('.')
            {
                return Err("kid is not a key id".into());
            }
        }
        let cached = self.cached(kid, Instant::now());
        let stale = match cached {
            Some((keys, true)) if !keys.is_empty() => return Ok(keys),
            Some((keys, false)) if !keys.is_empty() => Some(keys),
            _ => None,
        };
        // A stale key keeps serving while another request refreshes it; without any key,
        // wait for the fetch in progress.
        let _guard = match (&stale, self.fetching.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(keys), Err(_)) => return Ok(keys.clone()),
            (None, Err(_)) => self.fetching.lock().await,
        };
        let now = Instant::now();
        if let Some((keys, true)) = self.cached(kid, now)
            && !keys.is_empty()
        {
            return Ok(keys);
        }
        if self.may_fetch(now) {
            // Failures are logged and leave the cache as it was.
            let _ = self.fetch(kid).await;
        }
        match self.cached(kid, Instant::now()) {
            Some((keys, _)) if !keys.is_empty() => Ok(keys),
            _ => Err(match kid {
                Some(kid) => format!("no key with kid {kid:?} from {}", self.name()),
                None => format!("no kid in the header and {} has several keys", self.name()),
            }),
        }
    }

    /// Fetches the JWKS, or the ALB key of `kid`, into the cache.
    async fn fetch(&self, kid: Option<&str>) -> Result<(), String> {
        let url = match self.kind {
            RemoteKind::Jwks => self.url.clone(),
            RemoteKind::Alb => self.url.replace("{kid}", kid.unwrap_or_default()),
        };
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.last_attempt = Some(Instant::now());
        }
        let result = async {
            let body = self.get(&url).await?;
            match self.kind {
                RemoteKind::Jwks => KeySet::from_jwks(&body),
                RemoteKind::Alb => {
                    let text = String::from_utf8(body).map_err(|_| "the key is not text")?;
                    let key = key_of_pem(&text)?;
                    let mut set = KeySet::default();
                    set.insert(kid.unwrap_or_default().to_string(), key);
                    Ok(set)
                }
            }
        }
        .await;
        match result {
            Ok(set) => {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                state.slots.insert(self.slot(kid), (set, Instant::now()));
                state.ever_ok = true;
                tracing::debug!(url = %url, "identity keys fetched");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "fetching identity header keys ({}) failed", self.name());
                Err(e)
            }
        }
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_KEY_DOCUMENT_BYTES {
                return Err(format!(
                    "the key document exceeds {MAX_KEY_DOCUMENT_BYTES} bytes"
                ));
            }
        }
        Ok(body)
    }
}

enum Source {
    /// A PEM public key: verifies tokens of any `kid`.
    Pem(PublicKey),
    /// A JWKS document read at start.
    JwksFile(KeySet),
    Remote(RemoteKeys),
}

/// Verifies the trusted proxy's identity header and maps the identity to a role.
pub struct ProxyVerifier {
    header: HeaderName,
    sources: Vec<Source>,
    issuer: Option<String>,
    audience: Option<String>,
    alb_arn: Option<String>,
    role_claim: Option<String>,
    roles: RoleMap,
}

fn check_url(name: &str, url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{name} = {url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                tracing::warn!(
                    "{name} = {url:?} is plain http: whoever can change that traffic can sign \
                     identities; use https"
                );
            }
        }
        other => return Err(format!("{name} = {url:?}: scheme {other:?} is not http(s)")),
    }
    Ok(())
}

impl ProxyVerifier {
    /// From `[auth]`: None without `identity_header`. Refuses a header without any key
    /// source, unreadable or invalid key files, bad URLs and a bad `[auth.roles]`; the
    /// message names the setting or file.
    pub fn from_config(auth: &AuthConfig) -> Result<Option<ProxyVerifier>, String> {
        let roles = RoleMap::from_config(&auth.roles)?;
        let Some(header_name) = auth.identity_header.as_deref() else {
            let unused: Vec<&str> = [
                (
                    "identity_public_key_file",
                    auth.identity_public_key_file.is_some(),
                ),
                ("alb_key_url", auth.alb_key_url.is_some()),
                ("jwks_file", auth.jwks_file.is_some()),
                ("jwks_url", auth.jwks_url.is_some()),
                ("role_claim", auth.role_claim.is_some()),
                ("roles", !roles.is_empty()),
            ]
            .into_iter()
            .filter_map(|(k, set)| set.then_some(k))
            .collect();
            if !unused.is_empty() {
                tracing::warn!(
                    "auth.{} only apply to auth.identity_header, which is not set",
                    unused.join(", auth.")
                );
            }
            return Ok(None);
        };
        let header = HeaderName::from_bytes(header_name.trim().as_bytes())
            .map_err(|_| format!("auth.identity_header = {header_name:?} is not a header name"))?;
        if header == axum::http::header::AUTHORIZATION {
            return Err("auth.identity_header cannot be Authorization (that carries examflow's own bearer tokens)".into());
        }
        if auth.jwks_refresh_secs == 0 {
            return Err("auth.jwks_refresh_secs must be at least 1".into());
        }
        let ttl = Duration::from_secs(auth.jwks_refresh_secs);
        let read = |what: &str, path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("auth.{what} {}: {e}", path.display()))
        };
        let mut sources = Vec::new();
        if let Some(path) = &auth.identity_public_key_file {
            let key = key_of_pem(&read("identity_public_key_file", path)?)
                .map_err(|e| format!("auth.identity_public_key_file {}: {e}", path.display()))?;
            sources.push(Source::Pem(key));
        }
        if let Some(path) = &auth.jwks_file {
            let set = KeySet::from_jwks(read("jwks_file", path)?.as_bytes())
                .map_err(|e| format!("auth.jwks_file {}: {e}", path.display()))?;
            sources.push(Source::JwksFile(set));
        }
        if let Some(url) = &auth.jwks_url {
            check_url("auth.jwks_url", url)?;
            sources.push(Source::Remote(RemoteKeys::new(RemoteKind::Jwks, url, ttl)?));
        }
        if let Some(template) = &auth.alb_key_url {
            check_url("auth.alb_key_url", &template.replace("{kid}", "kid"))?;
            if !template.contains("{kid}") {
                return Err(format!(
                    "auth.alb_key_url = {template:?} has no {{kid}}; e.g. \
                     \"https://public-keys.auth.elb.eu-west-1.amazonaws.com/{{kid}}\""
                ));
            }
            sources.push(Source::Remote(RemoteKeys::new(
                RemoteKind::Alb,
                template,
                ttl,
            )?));
        }
        if sources.is_empty() {
            return Err(format!(
                "auth.identity_header = {header_name:?} is set but nothing can verify it: set a key \
                 source, one of auth.identity_public_key_file (a PEM public key, e.g. the ALB's), \
                 auth.alb_key_url (the ALB's per-kid key URL), auth.jwks_file or auth.jwks_url \
                 (an OIDC provider's JWKS). The header is never believed unsigned."
            ));
        }
        let non_empty = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).cloned();
        Ok(Some(ProxyVerifier {
            header,
            sources,
            issuer: non_empty(&auth.issuer),
            audience: non_empty(&auth.audience),
            alb_arn: non_empty(&auth.alb_arn),
            role_claim: non_empty(&auth.role_claim),
            roles,
        }))
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Fetches the JWKS URL's keys once (at start); a failure is logged, and keys are
    /// fetched again when tokens arrive.
    pub async fn prefetch(&self) {
        for source in &self.sources {
            if let Source::Remote(remote) = source
                && remote.kind == RemoteKind::Jwks
                && remote.fetch(None).await.is_ok()
            {
                tracing::info!(url = %remote.url, "identity header keys fetched");
            }
        }
    }

    /// The identity in the header's token, or 401.
    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
            .await
            .map_err(|m| ApiError::Unauthorized(format!("identity header ({}): {m}", self.header)))
    }

    async fn verify_at(&self, token: &str, now: u64) -> Result<Identity, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too long".into());
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a signed JWT (three dot-separated segments)".into());
        };
        let message = &token[..h.len() + 1 + p.len()];
        let header = json_segment(h).map_err(|e| format!("header {e}"))?;
        let claims = json_segment(p).map_err(|e| format!("payload {e}"))?;
        let signature = s.trim_end_matches('=');
        if signature.is_empty() {
            return Err("unsigned token".into());
        }
        let alg = match header.get("alg").and_then(Value::as_str) {
            None => return Err("no alg in the header".into()),
            Some(a) if a.eq_ignore_ascii_case("none") => {
                return Err("unsigned tokens (alg none) are never accepted".into());
            }
            Some(a) => match a.parse::<Algorithm>() {
                Ok(alg) if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac => {
                    return Err(format!(
                        "{a} (a shared secret) is not accepted; only public-key signatures"
                    ));
                }
                Ok(alg) => alg,
                Err(_) => return Err(format!("unsupported alg {a:?}")),
            },
        };
        if header.contains_key("crit") {
            return Err("critical header extensions (crit) are not supported".into());
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err("kid is not a string".into()),
        };
        self.check_claims(&header, &claims, now)?;

        let mut tried = false;
        let mut reasons = Vec::new();
        for source in &self.sources {
            let keys = match source {
                Source::Pem(key) => vec![key.clone()],
                Source::JwksFile(set) => set.lookup(kid),
                Source::Remote(remote) => match remote.keys(kid).await {
                    Ok(keys) => keys,
                    Err(e) => {
                        reasons.push(e);
                        continue;
                    }
                },
            };
            for key in keys.iter().filter(|k| k.accepts(alg)) {
                tried = true;
                if key.verifies(message.as_bytes(), signature, alg) {
                    return self.identity(&claims);
                }
            }
        }
        if tried {
            Err("the signature does not verify".into())
        } else if reasons.is_empty() {
            Err(format!(
                "no configured key verifies {alg:?} tokens{}",
                kid.map(|k| format!(" with kid {k:?}")).unwrap_or_default()
            ))
        } else {
            Err(reasons.join("; "))
        }
    }

    fn check_claims(
        &self,
        header: &Map<String, Value>,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<(), String> {
        let number = |v: &Value, name: &str| {
            v.as_f64()
                .filter(|n| n.is_finite())
                .ok_or_else(|| format!("{name} is not a number"))
        };
        let now = now as f64;
        let leeway = LEEWAY_SECS as f64;
        let exps: Vec<&Value> = [claims.get("exp"), header.get("exp")]
            .into_iter()
            .flatten()
            .collect();
        if exps.is_empty() {
            return Err("no exp claim".into());
        }
        for exp in exps {
            if number(exp, "exp")? + leeway < now {
                return Err("the token has expired".into());
            }
        }
        if let Some(nbf) = claims.get("nbf")
            && number(nbf, "nbf")? - leeway > now
        {
            return Err("the token is not valid yet (nbf)".into());
        }
        if let Some(arn) = &self.alb_arn {
            match header.get("signer").and_then(Value::as_str) {
                Some(signer) if signer == arn => {}
                Some(signer) => return Err(format!("signer {signer:?} is not auth.alb_arn")),
                None => return Err("no signer in the header (auth.alb_arn is set)".into()),
            }
        }
        if let Some(issuer) = &self.issuer {
            match claims
                .get("iss")
                .or_else(|| header.get("iss"))
                .and_then(Value::as_str)
            {
                Some(iss) if iss == issuer => {}
                Some(iss) => return Err(format!("issuer {iss:?} is not auth.issuer")),
                None => return Err("no iss claim (auth.issuer is set)".into()),
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                Some(_) => false,
                // The ALB names the OIDC client in its header instead.
                None => header.get("client").and_then(Value::as_str) == Some(audience.as_str()),
            };
            if !ok {
                return Err("the token is not for auth.audience (aud)".into());
            }
        }
        Ok(())
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, String> {
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .ok_or("no email claim")?
            .trim()
            .to_lowercase();
        validate_email(&email)?;
        // Cognito sends "false" as a string.
        if matches!(claims.get("email_verified"), Some(Value::Bool(false)))
            || claims.get("email_verified").and_then(Value::as_str) == Some("false")
        {
            return Err("the email is not verified (email_verified is false)".into());
        }
        let mut role = self.roles.role_of(&email);
        if let Some(path) = &self.role_claim
            && let Some(claimed) = role_from_claim(&Value::Object(claims.clone()), path)
        {
            role = role.max(claimed);
        }
        Ok(Identity { email, role })
    }
}

/// A base64url segment (trailing `=` padding tolerated) holding a JSON object.
fn json_segment(segment: &str) -> Result<Map<String, Value>, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| "is not base64url".to_string())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("is not a JSON object".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jsonwebtoken::EncodingKey;
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
    fn sign(
        header: &Value,
        claims: &Value,
        key: &EncodingKey,
        alg: Algorithm,
        padded: bool,
    ) -> String {
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
            a.identity_public_key_file =
                Some(format!("{FIXTURES}/TEST-ONLY-es256-a.pub.pem").into());
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
            a.identity_public_key_file =
                Some(format!("{FIXTURES}/TEST-ONLY-es256-a.key.pem").into())
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
        let e =
            ProxyVerifier::from_config(&auth_with(|a| a.jwks_url = Some("ftp://idp/jwks".into())))
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
        assert!(
            key_of_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err()
        );
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
                        Some(b) => format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}", b.len()),
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
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
        let v =
            ProxyVerifier::from_config(&auth_with(|a| a.jwks_url = Some(format!("{base}/jwks"))))
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
}

//! Where the identity header's public keys come from (see the verifier in `proxy`): a
//! PEM public key file, a JWKS document (file or URL) or the ALB's per-`kid` key URL; the
//! PEM and JWKS parsing, and the fetching and caching of keys from URLs.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

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
pub(super) struct PublicKey {
    key: DecodingKey,
    pub(super) family: jsonwebtoken::AlgorithmFamily,
    /// The one algorithm this key verifies, when known (a JWK's `alg`, an EC key's curve).
    pub(super) alg: Option<Algorithm>,
}

impl PublicKey {
    pub(super) fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }

    pub(super) fn verifies(&self, message: &[u8], signature: &str, alg: Algorithm) -> bool {
        self.accepts(alg)
            && jsonwebtoken::crypto::verify(signature, message, &self.key, alg).unwrap_or(false)
    }
}

/// Keys by `kid`; a token without `kid` may use a set's only key.
#[derive(Clone, Default)]
pub(super) struct KeySet {
    by_kid: HashMap<String, Vec<PublicKey>>,
    count: usize,
}

impl KeySet {
    fn insert(&mut self, kid: String, key: PublicKey) {
        self.by_kid.entry(kid).or_default().push(key);
        self.count += 1;
    }

    pub(super) fn lookup(&self, kid: Option<&str>) -> Vec<PublicKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned().unwrap_or_default(),
            None if self.count == 1 => self.by_kid.values().flatten().cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The usable signature keys of a JWKS document; other keys (encryption keys,
    /// symmetric `oct` keys, unknown types or curves) are skipped.
    pub(super) fn from_jwks(text: &[u8]) -> Result<KeySet, String> {
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
pub(super) fn key_of_pem(text: &str) -> Result<PublicKey, String> {
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
pub(super) enum RemoteKind {
    /// A JWKS document with every key.
    Jwks,
    /// One PEM key per `kid` (the URL template holds `{kid}`).
    Alb,
}

#[derive(Default)]
pub(super) struct RemoteState {
    /// Fetched keys and when: one slot ("") for a JWKS, one per `kid` for the ALB.
    slots: HashMap<String, (KeySet, Instant)>,
    pub(super) last_attempt: Option<Instant>,
    ever_ok: bool,
}

/// Keys fetched over HTTP(S), cached.
pub(super) struct RemoteKeys {
    pub(super) kind: RemoteKind,
    /// The URL, or the template with `{kid}`.
    pub(super) url: String,
    client: reqwest::Client,
    ttl: Duration,
    refetch_interval: Duration,
    pub(super) state: RwLock<RemoteState>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteKeys {
    pub(super) fn new(kind: RemoteKind, url: &str, ttl: Duration) -> Result<RemoteKeys, String> {
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

    pub(super) async fn keys(&self, kid: Option<&str>) -> Result<Vec<PublicKey>, String> {
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
    pub(super) async fn fetch(&self, kid: Option<&str>) -> Result<(), String> {
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

pub(super) enum Source {
    /// A PEM public key: verifies tokens of any `kid`.
    Pem(PublicKey),
    /// A JWKS document read at start.
    JwksFile(KeySet),
    Remote(RemoteKeys),
}

pub(super) fn check_url(name: &str, url: &str) -> Result<(), String> {
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

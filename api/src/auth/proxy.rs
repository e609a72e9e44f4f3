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
//! fetch per [`REFETCH_INTERVAL`](super::keys::REFETCH_INTERVAL) (every
//! [`FIRST_FETCH_RETRY`](super::keys::FIRST_FETCH_RETRY) until one fetch succeeded), so
//! random `kid`s cannot turn requests into fetches. Fetches time out after
//! [`FETCH_TIMEOUT`](super::keys::FETCH_TIMEOUT). The JWKS URL is fetched at start; when
//! that fails the server starts anyway (logging a warning) and fetches when the first token
//! arrives: an identity provider that is briefly down must not keep the exam server down,
//! and until keys are fetched every header is refused (401), never believed.

use std::path::Path;
use std::time::Duration;

use axum::http::HeaderName;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::keys::{KeySet, RemoteKeys, RemoteKind, Source, check_url, key_of_pem};
use super::roles::{RoleMap, role_from_claim};
use super::{Identity, validate_email};
use crate::config::AuthConfig;
use crate::error::ApiError;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Longest header accepted (the ALB's is at most about 16 KiB).
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;
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
mod tests;

//! Identity and roles: HS256 bearer tokens issued by this server (claims `email`, `role`,
//! `exp`), and optionally a signed JWT in a header set by a trusted proxy, verified against
//! configured public keys ([`proxy`]) with roles from a server-side map ([`roles`]).
//!
//! A request with `Authorization: Bearer` is judged by that token alone (scripts and
//! `examflow token` keep working behind a proxy); otherwise by the identity header when
//! one is configured.

mod keys;
mod proxy;
mod roles;

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use proxy::ProxyVerifier;

use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::server::AppState;

/// File in the data dir holding the generated secret.
pub const SECRET_FILE: &str = "jwt-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Student,
    Educator,
    Analyst,
    Admin,
}

impl Role {
    /// May see every student's results and score cards.
    pub fn sees_all_results(self) -> bool {
        matches!(self, Role::Educator | Role::Admin | Role::Analyst)
    }

    pub fn is_staff(self) -> bool {
        matches!(self, Role::Educator | Role::Admin)
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "student" => Ok(Role::Student),
            "educator" => Ok(Role::Educator),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected student, educator, analyst or admin"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub email: String,
    pub role: Role,
    pub exp: u64,
}

/// The caller, as established from a verified token or the trusted proxy header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub email: String,
    pub role: Role,
}

impl Identity {
    /// SQL over the lake: analysts, educators and admins.
    pub fn require_analytics(&self) -> Result<(), ApiError> {
        if matches!(self.role, Role::Analyst | Role::Educator | Role::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs the analyst, educator or admin role".to_string(),
            ))
        }
    }

    pub fn require_staff(&self) -> Result<(), ApiError> {
        if self.role.is_staff() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the educator or admin role; you are signed in as a {}",
                serde_json::to_value(self.role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )))
        }
    }
}

/// Signs and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn issue(&self, email: &str, role: Role, ttl_secs: u64) -> Result<String, ApiError> {
        let exp = jsonwebtoken::get_current_timestamp() + ttl_secs;
        let claims = Claims {
            email: email.to_string(),
            role,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Invalid(format!("signing token: {e}")))
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        self.verify_until(token).map(|(identity, _)| identity)
    }

    /// The identity and the token's expiry (`exp`, Unix seconds): a long-lived connection
    /// (pgwire) stops being that identity then.
    pub fn verify_until(&self, token: &str) -> Result<(Identity, u64), ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid bearer token: {e}")))?;
        validate_email(&data.claims.email).map_err(ApiError::Unauthorized)?;
        Ok((
            Identity {
                email: data.claims.email,
                role: data.claims.role,
            },
            data.claims.exp,
        ))
    }
}

/// A plausible email: something@something, no spaces, at most 254 characters.
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && !domain.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!("{email:?} is not a valid email address"))
    }
}

/// The secret from config, else the one kept in the data dir (generated on first use).
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<Vec<u8>, ApiError> {
    if let Some(secret) = configured {
        if secret.len() < 16 {
            return Err(ApiError::Invalid(
                "auth.jwt_secret must be at least 16 characters".into(),
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    let io = |source| ApiError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(|source| ApiError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, secret.as_bytes()).map_err(io)?;
    Ok(secret.into_bytes())
}

/// Writes a new file readable by its owner only (0600), durably; fails if it exists.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Whether dev login is on although the server listens beyond loopback (explicit
/// `auth.dev_login = true`): every start warns and the page shows a banner.
pub fn dev_login_warning(auth: &AuthConfig, listen: SocketAddr) -> bool {
    auth.dev_login_enabled(listen) && !listen.ip().is_loopback()
}

/// `GET /api/dev-login`: `{"enabled": bool, "warning": bool}`, for the page's sign-in form
/// and its "development sign-in" banner (`warning`: on, on a non-loopback address).
pub async fn dev_login_status(State(state): State<AppState>) -> Json<Value> {
    let (auth, listen) = (&state.config.auth, state.config.server.listen);
    Json(json!({
        "enabled": auth.dev_login_enabled(listen),
        "warning": dev_login_warning(auth, listen),
    }))
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::Unauthorized("Authorization header is not text".into()))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| {
                    ApiError::Unauthorized("expected \"Authorization: Bearer <token>\"".into())
                })?;
            return state.tokens.verify(token.trim());
        }
        if let Some(proxy) = &state.proxy {
            let mut values = parts.headers.get_all(proxy.header()).iter();
            if let Some(value) = values.next() {
                if values.next().is_some() {
                    return Err(ApiError::Unauthorized(format!(
                        "more than one {} header",
                        proxy.header()
                    )));
                }
                let token = value
                    .to_str()
                    .map_err(|_| ApiError::Unauthorized("identity header is not text".into()))?;
                return proxy.verify(token.trim()).await;
            }
        }
        Err(ApiError::Unauthorized(
            "sign in first: send \"Authorization: Bearer <token>\" (get one from the page's login or `examflow token`)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_is_rejected() {
        let keys = TokenKeys::new(b"0123456789abcdef0123");
        let token = keys.issue("a@b.c", Role::Educator, 60).unwrap();
        assert_eq!(
            keys.verify(&token).unwrap(),
            Identity {
                email: "a@b.c".into(),
                role: Role::Educator
            }
        );
        let other = TokenKeys::new(b"another secret, long enough");
        assert!(matches!(
            other.verify(&token),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(keys.verify("not.a.token").is_err());
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let keys = TokenKeys::new(b"0123456789abcdef0123");
        let claims = Claims {
            email: "a@b.c".into(),
            role: Role::Student,
            exp: 1000,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        let e = keys.verify(&token).unwrap_err();
        assert!(e.to_string().contains("Expired"), "{e}");
    }

    #[test]
    fn dev_login_warns_only_when_forced_on_beyond_loopback() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let mut auth = AuthConfig::default();
        assert!(!dev_login_warning(&auth, lo) && !dev_login_warning(&auth, any));
        assert!(!auth.dev_login_enabled(any));
        auth.dev_login = Some(true);
        assert!(!dev_login_warning(&auth, lo));
        assert!(dev_login_warning(&auth, any));
        auth.dev_login = Some(false);
        assert!(!dev_login_warning(&auth, any) && !auth.dev_login_enabled(lo));
    }

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(None, dir.path()).unwrap();
        let b = load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(load_or_create_secret(Some("short"), dir.path()).is_err());
    }

    #[test]
    fn emails_and_roles_are_checked() {
        assert!(validate_email("a@b").is_ok());
        assert!(validate_email("nope").is_err());
        assert!(validate_email("a b@c").is_err());
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }
}

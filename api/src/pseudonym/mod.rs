//! Pseudonyms of student emails for analysts.
//!
//! Analysts see data without names: for the `analyst` role (unless
//! `auth.analyst_sees_emails = true`), every student email that SQL can reach is replaced by
//! a stable pseudonym, `s_` + the first 24 hex digits of HMAC-SHA256(server secret, email
//! trimmed and lowercased). The same email gives the same pseudonym in every table, so joins
//! on `email` still match; educators and admins see the emails.
//!
//! In SQL (`POST /api/sql` and pgwire) the analyst's catalog is rewritten
//! ([`pseudonymise_session`]): every table whose columns hold emails is wrapped in a provider
//! whose scan maps those columns right above the raw scan, *beneath* every predicate of the
//! query. Filters on a mapped column are never handed to the raw scan (they would be
//! evaluated on the raw email, and file pruning by them could reveal whether an email
//! exists); DataFusion applies them above the mapping, on the pseudonyms. SQL views are
//! planned again over the wrapped tables. Which columns:
//!
//! | column | analysts see |
//! |---|---|
//! | `email`, `*_email` (any table: `score_changes`, `scores`, `score_details`, `student_history`, `adaptive_sessions`, …) | the pseudonym |
//! | `document` (`score_changes`: the whole result document as JSON) | the JSON with every `"email"` value, every string that is an email, and every email inside other strings replaced by its pseudonym |
//! | `dead_letters.reason`, `.message_key`, `.payload` (raw bytes of messages that could not be read) | the text or bytes with every email-like token replaced by its pseudonym |
//!
//! Analyst sessions also do not collect file statistics (a Parquet file's min/max of
//! `email` would be the raw value) and may not run `EXPLAIN VERBOSE`, which prints them.
//! A new table or view with a student email in a column named otherwise must be added to
//! [`mask_of`](sql::mask_of).

mod sql;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use sql::{check_plan_for_analysts, pseudonymise_session};

use crate::auth::{Identity, Role, write_private};
use crate::config::AuthConfig;
use crate::error::ApiError;

/// File in the data dir holding the generated secret.
pub const SECRET_FILE: &str = "pseudonym-secret";

/// What every pseudonym starts with.
pub const PREFIX: &str = "s_";

/// Bytes of the HMAC a pseudonym shows (24 hex digits, 96 bits: no collision in practice).
const DIGEST_BYTES: usize = 12;

/// Most pseudonyms kept in memory (≈ 100 bytes each); beyond, new ones are computed each
/// time.
const MAX_CACHED: usize = 250_000;

/// The server's pseudonyms of student emails, and who sees them.
#[derive(Clone)]
pub struct Pseudonyms {
    /// HMAC-SHA256 keyed with the secret (cloned for each pseudonym: the key is hashed once).
    key: Hmac<Sha256>,
    analysts_see_emails: bool,
    /// Pseudonyms computed before, by email as stored: an analyst's next query over the same
    /// students maps each row with a lookup instead of an HMAC.
    cache: Arc<RwLock<HashMap<Box<str>, Box<str>>>>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonyms")
            .field("analysts_see_emails", &self.analysts_see_emails)
            .finish_non_exhaustive()
    }
}

impl Pseudonyms {
    pub fn new(secret: &[u8], analysts_see_emails: bool) -> Self {
        Pseudonyms {
            key: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
            analysts_see_emails,
            cache: Arc::default(),
        }
    }

    /// `auth.pseudonym_secret`, else the secret kept in `<data_dir>/pseudonym-secret`
    /// (generated on first use, mode 0600), and `auth.analyst_sees_emails`.
    pub fn load(auth: &AuthConfig, data_dir: &Path) -> Result<Self, ApiError> {
        let secret = load_or_create_secret(auth.pseudonym_secret.as_deref(), data_dir)?;
        Ok(Pseudonyms::new(&secret, auth.analyst_sees_emails))
    }

    /// The pseudonym of an email: `s_` + 24 lowercase hex digits of HMAC-SHA256 of the email
    /// trimmed and lowercased (so `Ana@X.org ` and `ana@x.org` are one student).
    pub fn of(&self, email: &str) -> String {
        let normal = normalise(email);
        let mut mac = self.key.clone();
        mac.update(normal.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(PREFIX.len() + 2 * DIGEST_BYTES);
        out.push_str(PREFIX);
        out.push_str(&hex::encode(&digest[..DIGEST_BYTES]));
        out
    }

    /// [`Pseudonyms::of`] of each email, through the cache (one lock for all of them).
    pub fn of_all(&self, emails: &[&str]) -> Vec<String> {
        let mut found: Vec<Option<String>> = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            emails
                .iter()
                .map(|email| cache.get(*email).map(|p| p.to_string()))
                .collect()
        };
        let mut new: Vec<(Box<str>, Box<str>)> = Vec::new();
        for (slot, email) in found.iter_mut().zip(emails) {
            if slot.is_none() {
                let pseudonym = self.of(email);
                new.push(((*email).into(), pseudonym.as_str().into()));
                *slot = Some(pseudonym);
            }
        }
        if !new.is_empty() {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            let room = MAX_CACHED.saturating_sub(cache.len());
            cache.extend(new.into_iter().take(room));
        }
        found.into_iter().flatten().collect()
    }

    /// Whether `identity` sees pseudonyms instead of emails: analysts, unless
    /// `auth.analyst_sees_emails`.
    pub fn hides_emails(&self, identity: &Identity) -> bool {
        self.hides_emails_from(identity.role)
    }

    /// [`Pseudonyms::hides_emails`] by role.
    pub fn hides_emails_from(&self, role: Role) -> bool {
        role == Role::Analyst && !self.analysts_see_emails
    }

    /// Whether any role sees pseudonyms (false with `auth.analyst_sees_emails`).
    pub fn hides_any(&self) -> bool {
        !self.analysts_see_emails
    }

    /// Text with every email-like token (`local@domain`, RFC 5322 characters in the local
    /// part) replaced by its pseudonym; borrowed when there is none.
    pub fn scrub_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.scrub_bytes(text.as_bytes()) {
            // Tokens are cut only next to ASCII delimiters, and pseudonyms are ASCII.
            Some(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            None => Cow::Borrowed(text),
        }
    }

    /// Bytes with every email-like token replaced by its pseudonym; `None` when there is
    /// none. Bytes that are not ASCII count as letters, so any encoding of an email's
    /// letters stays inside its token.
    pub fn scrub_bytes(&self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        // `input[..copied]` is in `out` (or unchanged when `out` is None).
        let mut copied = 0;
        let mut from = 0;
        while let Some(offset) = input[from..].iter().position(|&b| b == b'@') {
            let at = from + offset;
            from = at + 1;
            let mut start = at;
            while start > copied && is_local_byte(input[start - 1]) {
                start -= 1;
            }
            // Quotes, dots and the like before an address are punctuation, not its part.
            while start < at && LEADING_PUNCTUATION.contains(&input[start]) {
                start += 1;
            }
            let mut end = at + 1;
            while end < input.len() && is_domain_byte(input[end]) {
                end += 1;
            }
            while end > at + 1 && matches!(input[end - 1], b'.' | b'-') {
                end -= 1;
            }
            if start == at || end == at + 1 {
                continue;
            }
            let token = String::from_utf8_lossy(&input[start..end]);
            let buffer = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
            buffer.extend_from_slice(&input[copied..start]);
            buffer.extend_from_slice(self.of(&token).as_bytes());
            copied = end;
            from = end;
        }
        out.map(|mut buffer| {
            buffer.extend_from_slice(&input[copied..]);
            buffer
        })
    }

    /// A JSON document (a result document, as `score_changes.document` holds it) with the
    /// value of every `email` key, every string that is an email, and every email inside
    /// other strings or keys replaced by its pseudonym. Text that is not JSON is scrubbed as
    /// text. Borrowed when nothing changed; else re-serialised (compact).
    pub fn rewrite_json<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(mut value) => {
                if self.rewrite_value(&mut value, false) {
                    Cow::Owned(value.to_string())
                } else {
                    Cow::Borrowed(text)
                }
            }
            Err(_) => self.scrub_text(text),
        }
    }

    fn rewrite_value(&self, value: &mut serde_json::Value, email_key: bool) -> bool {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if email_key || is_email(s) {
                    *s = self.of(s);
                    true
                } else if let Cow::Owned(scrubbed) = self.scrub_text(s) {
                    *s = scrubbed;
                    true
                } else {
                    false
                }
            }
            Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
                self.rewrite_value(item, email_key) | changed
            }),
            Value::Object(map) => {
                let mut changed = false;
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    changed |= self.rewrite_value(&mut item, is_email_name(&key));
                    let key = match self.scrub_text(&key) {
                        Cow::Owned(scrubbed) => {
                            changed = true;
                            scrubbed
                        }
                        Cow::Borrowed(_) => key,
                    };
                    map.insert(key, item);
                }
                changed
            }
            _ => false,
        }
    }
}

fn normalise(email: &str) -> Cow<'_, str> {
    let trimmed = email.trim();
    if trimmed.chars().any(char::is_uppercase) {
        Cow::Owned(trimmed.to_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// A whole string that is an email (the shape `auth::validate_email` accepts).
fn is_email(s: &str) -> bool {
    let t = s.trim();
    t.len() <= 254
        && !t.chars().any(|c| c.is_whitespace() || c.is_control())
        && t.split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && !domain.is_empty())
}

/// A column or key whose values are emails.
fn is_email_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("email")
        || name
            .get(name.len().saturating_sub(6)..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case("_email"))
}

const LEADING_PUNCTUATION: &[u8] = b"'`.={|}~";

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || matches!(b, b'-' | b'.' | b'_')
}

/// The configured secret, else the one kept in the data dir (generated on first use).
fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> Result<Vec<u8>, ApiError> {
    if let Some(secret) = configured {
        if secret.trim().len() < 16 {
            return Err(ApiError::Invalid(
                "auth.pseudonym_secret must be at least 16 characters".into(),
            ));
        }
        return Ok(secret.trim().as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    let io = |source| ApiError::Io {
        path: path.clone(),
        source,
    };
    let read = || -> Result<Option<Vec<u8>>, std::io::Error> {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().as_bytes().to_vec())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    if let Some(secret) = read().map_err(io)? {
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir).map_err(|source| ApiError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    match write_private(&path, secret.as_bytes()) {
        Ok(()) => Ok(secret.into_bytes()),
        // Another process (or an empty file left by a crash) was first: use what is there.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read().map_err(io)? {
            Some(secret) => Ok(secret),
            None => Err(ApiError::Invalid(format!(
                "{} is empty; delete it (a new secret changes every pseudonym) or set auth.pseudonym_secret",
                path.display()
            ))),
        },
        Err(e) => Err(io(e)),
    }
}

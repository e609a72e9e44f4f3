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
//! [`mask_of`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryArray, BinaryViewArray, LargeBinaryArray,
    LargeStringArray, LargeStringBuilder, StringArray, StringBuilder, StringViewArray,
    StringViewBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TableProviderFilterPushDown, TableType, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::SessionContext;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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

// ---- SQL ----------------------------------------------------------------------------

/// How analysts see a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mask {
    /// An email: its pseudonym.
    Email,
    /// A JSON document: [`Pseudonyms::rewrite_json`].
    Json,
    /// Free text or raw bytes: [`Pseudonyms::scrub_bytes`].
    Scrub,
}

/// The mask of a column of `table` for analysts, if it has one.
pub fn mask_of(table: &str, field: &Field) -> Option<Mask> {
    let name = field.name();
    let binary = matches!(
        field.data_type(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    );
    if is_email_name(name) {
        return Some(if binary { Mask::Scrub } else { Mask::Email });
    }
    if name.eq_ignore_ascii_case("document") {
        return Some(if binary { Mask::Scrub } else { Mask::Json });
    }
    if table == "dead_letters" && matches!(name.as_str(), "reason" | "message_key" | "payload") {
        return Some(Mask::Scrub);
    }
    None
}

/// A string or binary column with `mask` applied; the same type. Other types are refused
/// (a query fails rather than show an email it cannot map).
pub fn mask_array(mask: Mask, pseudonyms: &Pseudonyms, array: &ArrayRef) -> DfResult<ArrayRef> {
    if mask == Mask::Email {
        let rows = array.len();
        match array.data_type() {
            DataType::Utf8 => {
                return Ok(emails(
                    pseudonyms,
                    array.as_string::<i32>().iter(),
                    StringBuilder::with_capacity(rows, rows * PSEUDONYM_LEN),
                ));
            }
            DataType::LargeUtf8 => {
                return Ok(emails(
                    pseudonyms,
                    array.as_string::<i64>().iter(),
                    LargeStringBuilder::with_capacity(rows, rows * PSEUDONYM_LEN),
                ));
            }
            DataType::Utf8View => {
                return Ok(emails(
                    pseudonyms,
                    array.as_string_view().iter(),
                    StringViewBuilder::with_capacity(rows),
                ));
            }
            _ => {}
        }
    }
    Ok(match array.data_type() {
        DataType::Utf8 => Arc::new(
            map_strings(mask, pseudonyms, array.as_string::<i32>().iter()).collect::<StringArray>(),
        ),
        DataType::LargeUtf8 => Arc::new(
            map_strings(mask, pseudonyms, array.as_string::<i64>().iter())
                .collect::<LargeStringArray>(),
        ),
        DataType::Utf8View => Arc::new(
            map_strings(mask, pseudonyms, array.as_string_view().iter())
                .collect::<StringViewArray>(),
        ),
        DataType::Binary => Arc::new(
            map_bytes(pseudonyms, array.as_binary::<i32>().iter()).collect::<BinaryArray>(),
        ),
        DataType::LargeBinary => Arc::new(
            map_bytes(pseudonyms, array.as_binary::<i64>().iter()).collect::<LargeBinaryArray>(),
        ),
        DataType::BinaryView => Arc::new(
            map_bytes(pseudonyms, array.as_binary_view().iter()).collect::<BinaryViewArray>(),
        ),
        other => {
            return Err(DataFusionError::Execution(format!(
                "a column of type {other} holds student emails and cannot be shown to analysts"
            )));
        }
    })
}

/// Length of a pseudonym.
const PSEUDONYM_LEN: usize = PREFIX.len() + 2 * DIGEST_BYTES;

/// A string builder of any of Arrow's three string layouts.
trait TextBuilder: ArrayBuilder {
    fn push(&mut self, value: Option<&str>);
}

impl TextBuilder for StringBuilder {
    fn push(&mut self, value: Option<&str>) {
        self.append_option(value);
    }
}

impl TextBuilder for LargeStringBuilder {
    fn push(&mut self, value: Option<&str>) {
        self.append_option(value);
    }
}

impl TextBuilder for StringViewBuilder {
    fn push(&mut self, value: Option<&str>) {
        self.append_option(value);
    }
}

/// Emails to pseudonyms: each distinct email of the batch looked up (or hashed) once.
fn emails<'a>(
    pseudonyms: &Pseudonyms,
    values: impl Iterator<Item = Option<&'a str>>,
    mut builder: impl TextBuilder,
) -> ArrayRef {
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    let mut distinct: Vec<&'a str> = Vec::new();
    let slots: Vec<Option<usize>> = values
        .map(|value| {
            value.map(|email| {
                *index.entry(email).or_insert_with(|| {
                    distinct.push(email);
                    distinct.len() - 1
                })
            })
        })
        .collect();
    let mapped = pseudonyms.of_all(&distinct);
    for slot in slots {
        builder.push(slot.map(|i| mapped[i].as_str()));
    }
    builder.finish()
}

fn map_strings<'a>(
    mask: Mask,
    pseudonyms: &'a Pseudonyms,
    values: impl Iterator<Item = Option<&'a str>> + 'a,
) -> impl Iterator<Item = Option<Cow<'a, str>>> + 'a {
    values.map(move |value| {
        value.map(|v| match mask {
            Mask::Email => Cow::Owned(pseudonyms.of(v)),
            Mask::Json => pseudonyms.rewrite_json(v),
            Mask::Scrub => pseudonyms.scrub_text(v),
        })
    })
}

fn map_bytes<'a>(
    pseudonyms: &'a Pseudonyms,
    values: impl Iterator<Item = Option<&'a [u8]>> + 'a,
) -> impl Iterator<Item = Option<Cow<'a, [u8]>>> + 'a {
    values.map(move |value| {
        value.map(|v| match pseudonyms.scrub_bytes(v) {
            Some(scrubbed) => Cow::Owned(scrubbed),
            None => Cow::Borrowed(v),
        })
    })
}

/// The physical function that maps a column (not callable from SQL: it is never
/// registered, only placed in the plans of wrapped tables).
#[derive(Debug)]
struct MaskFunction {
    mask: Mask,
    pseudonyms: Arc<Pseudonyms>,
    signature: Signature,
}

impl PartialEq for MaskFunction {
    fn eq(&self, other: &Self) -> bool {
        self.mask == other.mask && Arc::ptr_eq(&self.pseudonyms, &other.pseudonyms)
    }
}

impl Eq for MaskFunction {}

impl std::hash::Hash for MaskFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.mask.hash(state);
        (Arc::as_ptr(&self.pseudonyms) as usize).hash(state);
    }
}

impl ScalarUDFImpl for MaskFunction {
    fn name(&self) -> &str {
        match self.mask {
            Mask::Email => "pseudonym",
            Mask::Json => "pseudonymise_json",
            Mask::Scrub => "pseudonymise_text",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types {
            [t] => Ok(t.clone()),
            _ => plan_err!("{} takes one argument", self.name()),
        }
    }

    /// The input's field: same type and nullability.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        match args.arg_fields {
            [field] => Ok(field.clone()),
            _ => plan_err!("{} takes one argument", self.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("{} takes one argument", self.name());
        };
        match arg {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(mask_array(
                self.mask,
                &self.pseudonyms,
                array,
            )?)),
            ColumnarValue::Scalar(value) => {
                let array = mask_array(self.mask, &self.pseudonyms, &value.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            }
        }
    }
}

/// A table whose columns with emails are mapped right above its scan.
#[derive(Debug)]
struct MaskedTable {
    inner: Arc<dyn TableProvider>,
    /// Per column of the schema: the function that maps it.
    masks: Vec<Option<Arc<ScalarUDF>>>,
    masked_names: HashSet<String>,
}

impl MaskedTable {
    /// `inner` itself when no column of it needs a mask.
    fn wrap(
        table: &str,
        inner: Arc<dyn TableProvider>,
        functions: &HashMap<Mask, Arc<ScalarUDF>>,
    ) -> Arc<dyn TableProvider> {
        let schema = inner.schema();
        let masks: Vec<Option<Arc<ScalarUDF>>> = schema
            .fields()
            .iter()
            .map(|field| mask_of(table, field).map(|mask| functions[&mask].clone()))
            .collect();
        if masks.iter().all(Option::is_none) {
            return inner;
        }
        let masked_names = schema
            .fields()
            .iter()
            .zip(&masks)
            .filter(|(_, mask)| mask.is_some())
            .map(|(field, _)| field.name().clone())
            .collect();
        Arc::new(MaskedTable {
            inner,
            masks,
            masked_names,
        })
    }

    /// Whether a filter reads a mapped column (then it runs above the mapping, never in
    /// the raw scan).
    fn reads_masked(&self, filter: &Expr) -> bool {
        filter
            .column_refs()
            .iter()
            .any(|column| self.masked_names.contains(&column.name))
    }
}

#[async_trait]
impl TableProvider for MaskedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let mut support = vec![TableProviderFilterPushDown::Unsupported; filters.len()];
        let (positions, passed): (Vec<usize>, Vec<&Expr>) = filters
            .iter()
            .enumerate()
            .filter(|(_, filter)| !self.reads_masked(filter))
            .map(|(i, filter)| (i, *filter))
            .unzip();
        if !passed.is_empty() {
            let inner = self.inner.supports_filters_pushdown(&passed)?;
            for (i, s) in positions.into_iter().zip(inner) {
                support[i] = s;
            }
        }
        Ok(support)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let passed: Vec<Expr> = filters
            .iter()
            .filter(|filter| !self.reads_masked(filter))
            .cloned()
            .collect();
        let plan = self.inner.scan(state, projection, &passed, limit).await?;
        let columns: Vec<usize> = match projection {
            Some(columns) => columns.clone(),
            None => (0..self.masks.len()).collect(),
        };
        if columns.iter().all(|&i| self.masks[i].is_none()) {
            return Ok(plan);
        }
        let input = plan.schema();
        if input.fields().len() != columns.len() {
            return Err(DataFusionError::Internal(format!(
                "a scan returned {} columns for a projection of {}",
                input.fields().len(),
                columns.len()
            )));
        }
        let config = state.config().options().clone();
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(columns.len());
        for (position, &index) in columns.iter().enumerate() {
            let name = input.field(position).name().clone();
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&name, position));
            let expr: Arc<dyn PhysicalExpr> = match &self.masks[index] {
                None => column,
                Some(function) => Arc::new(ScalarFunctionExpr::try_new(
                    function.clone(),
                    vec![column],
                    &input,
                    config.clone(),
                )?),
            };
            exprs.push((expr, name));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

/// Rewrites providers: tables with emails wrapped, SQL views planned again over the
/// rewritten tables. Each provider is rewritten once.
struct Rewriter {
    functions: HashMap<Mask, Arc<ScalarUDF>>,
    done: HashMap<usize, Arc<dyn TableProvider>>,
}

impl Rewriter {
    fn new(pseudonyms: &Arc<Pseudonyms>) -> Self {
        let functions = [Mask::Email, Mask::Json, Mask::Scrub]
            .into_iter()
            .map(|mask| {
                let function = ScalarUDF::new_from_impl(MaskFunction {
                    mask,
                    pseudonyms: pseudonyms.clone(),
                    signature: Signature::any(1, Volatility::Immutable),
                });
                (mask, Arc::new(function))
            })
            .collect();
        Rewriter {
            functions,
            done: HashMap::new(),
        }
    }

    fn provider(
        &mut self,
        table: &str,
        provider: Arc<dyn TableProvider>,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let key = Arc::as_ptr(&provider) as *const () as usize;
        if let Some(done) = self.done.get(&key) {
            return Ok(done.clone());
        }
        let rewritten = match provider.downcast_ref::<ViewTable>() {
            // A view of SQL: its plan again, over the rewritten tables it reads.
            Some(view) if view.definition().is_some() => {
                let plan = self.plan(view.logical_plan().clone())?;
                Arc::new(ViewTable::new(plan, view.definition().cloned())) as Arc<dyn TableProvider>
            }
            // A table, or a view made of a data frame (the lake's snapshot plus tail):
            // mapped as a whole.
            _ => MaskedTable::wrap(table, provider.clone(), &self.functions),
        };
        self.done.insert(key, rewritten.clone());
        Ok(rewritten)
    }

    fn plan(&mut self, plan: LogicalPlan) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(mut scan) => {
                let provider = source_as_provider(&scan.source)?;
                let rewritten = self.provider(scan.table_name.table(), provider.clone())?;
                if Arc::ptr_eq(&rewritten, &provider) {
                    return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
                }
                scan.source = provider_as_source(rewritten);
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }
}

/// Schemas whose tables describe the catalog, not data.
const METADATA_SCHEMAS: [&str; 2] = ["information_schema", "pg_catalog"];

/// Turns a session with every table registered into the analysts' view of it: tables with
/// emails wrapped (see the module docs), views planned again over them, no file
/// statistics. Call after the last table is registered.
pub async fn pseudonymise_session(
    ctx: &SessionContext,
    pseudonyms: &Arc<Pseudonyms>,
) -> DfResult<()> {
    // A Parquet file's statistics hold the raw min/max of every column.
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .collect_statistics = false;
    let mut rewriter = Rewriter::new(pseudonyms);
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            if METADATA_SCHEMAS.contains(&schema_name.as_str()) {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                let Some(provider) = schema.table(&table).await? else {
                    continue;
                };
                let rewritten = rewriter.provider(&table, provider.clone())?;
                if !Arc::ptr_eq(&rewritten, &provider) {
                    schema.deregister_table(&table)?;
                    schema.register_table(table, rewritten)?;
                }
            }
        }
    }
    Ok(())
}

/// Refuses plans that print column statistics (`EXPLAIN VERBOSE`, `EXPLAIN` with
/// statistics): those of a raw table would show emails.
pub fn check_plan_for_analysts(plan: &LogicalPlan) -> Result<(), String> {
    if let LogicalPlan::Explain(explain) = plan
        && (explain.verbose || explain.show_statistics == Some(true))
    {
        return Err(
            "EXPLAIN VERBOSE (and EXPLAIN with statistics) prints the raw tables' column statistics, which analysts do not see; use EXPLAIN or EXPLAIN ANALYZE"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudonyms() -> Pseudonyms {
        Pseudonyms::new(b"a test secret of some length", false)
    }

    #[test]
    fn pseudonyms_are_stable_normalised_and_keyed() {
        let p = pseudonyms();
        let a = p.of("ana@example.com");
        assert_eq!(a, p.of("ana@example.com"));
        assert_eq!(a, p.of("  Ana@Example.COM "), "trimmed and lowercased");
        assert_eq!(
            a,
            pseudonyms().of("ana@example.com"),
            "same secret, same pseudonym"
        );
        assert_ne!(a, p.of("bob@example.com"));
        let other = Pseudonyms::new(b"another secret entirely", false);
        assert_ne!(a, other.of("ana@example.com"), "differs per secret");
        assert!(a.starts_with("s_"), "{a}");
        let digits = &a[2..];
        assert_eq!(digits.len(), 24);
        assert!(
            digits
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{a}"
        );
        // The known value, so a change of the scheme (which would change every stored
        // pseudonym analysts kept) is noticed.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"a test secret of some length").unwrap();
        mac.update(b"ana@example.com");
        let expected = format!("s_{}", &hex::encode(mac.finalize().into_bytes())[..24]);
        assert_eq!(a, expected);
    }

    #[test]
    fn cached_pseudonyms_are_the_same() {
        let p = pseudonyms();
        let emails = ["a@x.org", "B@x.org", "a@x.org"];
        let first = p.of_all(&emails);
        assert_eq!(first, emails.map(|e| p.of(e)));
        assert_eq!(p.of_all(&emails), first, "from the cache");
        assert_eq!(first[1], p.of("b@x.org"));
    }

    #[test]
    fn who_sees_pseudonyms() {
        let p = pseudonyms();
        let who = |role| Identity {
            email: "x@example.com".into(),
            role,
        };
        assert!(p.hides_emails(&who(Role::Analyst)));
        for role in [Role::Educator, Role::Admin, Role::Student] {
            assert!(!p.hides_emails(&who(role)), "{role:?}");
        }
        let open = Pseudonyms::new(b"a test secret of some length", true);
        assert!(!open.hides_emails(&who(Role::Analyst)));
        assert!(!open.hides_any());
    }

    #[test]
    fn text_and_bytes_lose_every_email() {
        let p = pseudonyms();
        let ana = p.of("ana@example.com");
        let text = "reason: bad document for Ana@Example.com, cc 'bob.b+x@mail.example.org'.";
        let scrubbed = p.scrub_text(text);
        assert_eq!(
            scrubbed,
            format!(
                "reason: bad document for {ana}, cc '{}'.",
                p.of("bob.b+x@mail.example.org")
            )
        );
        assert_eq!(
            p.scrub_text("no address @ all, @handle"),
            "no address @ all, @handle"
        );
        assert!(matches!(p.scrub_text("nothing here"), Cow::Borrowed(_)));
        // Escaped JSON inside JSON (a Debezium envelope's `after`).
        let envelope = r#"{"payload":{"after":"{\"email\":\"ana@example.com\",\"score\":3}"}}"#;
        let scrubbed = p.scrub_text(envelope);
        assert!(!scrubbed.contains("ana@"), "{scrubbed}");
        assert!(scrubbed.contains(&ana), "{scrubbed}");
        // Bytes that are not UTF-8 around an address.
        let mut bytes = vec![0xff, 0x00, b' '];
        bytes.extend_from_slice(b"ana@example.com");
        bytes.push(0xfe);
        let out = p.scrub_bytes(&bytes).unwrap();
        assert!(!out.windows(4).any(|w| w == b"ana@"), "{out:?}");
        assert_eq!(p.scrub_bytes(b"\x00\x01 plain"), None);
    }

    #[test]
    fn documents_keep_their_shape_and_lose_the_email() {
        let p = pseudonyms();
        let doc = r#"{"_id":"64b0","email":"Ana@Example.com","exam":"e","score":3,"details":[{"question":"Write to help@school.edu","user_answer":"=1+1"}],"owner":"bob@example.com"}"#;
        let out = p.rewrite_json(doc);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["email"], p.of("ana@example.com"));
        assert_eq!(value["owner"], p.of("bob@example.com"));
        assert_eq!(value["score"], 3);
        assert_eq!(value["details"][0]["user_answer"], "=1+1");
        assert_eq!(
            value["details"][0]["question"],
            format!("Write to {}", p.of("help@school.edu"))
        );
        assert!(!out.contains('@'), "{out}");
        // Not JSON: scrubbed as text. No email: unchanged, not re-serialised.
        let broken = r#"{"email":"ana@example.com""#;
        assert!(!p.rewrite_json(broken).contains("ana@"));
        assert!(matches!(
            p.rewrite_json(r#"{"a": 1,  "b": "x"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn columns_to_mask() {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        assert_eq!(mask_of("scores", &text("email")), Some(Mask::Email));
        assert_eq!(mask_of("x", &text("student_email")), Some(Mask::Email));
        assert_eq!(
            mask_of("score_changes", &text("document")),
            Some(Mask::Json)
        );
        assert_eq!(mask_of("dead_letters", &text("reason")), Some(Mask::Scrub));
        assert_eq!(
            mask_of(
                "dead_letters",
                &Field::new("payload", DataType::Binary, true)
            ),
            Some(Mask::Scrub)
        );
        assert_eq!(mask_of("scores", &text("exam")), None);
        assert_eq!(mask_of("attempts", &text("reason")), None);
        assert!(
            mask_array(
                Mask::Email,
                &pseudonyms(),
                &(Arc::new(datafusion::arrow::array::Int64Array::from(vec![1])) as ArrayRef)
            )
            .is_err()
        );
    }

    /// Through DataFusion: every way a query can reach the column sees pseudonyms, filters
    /// on the raw email match nothing, joins on email still match, views follow.
    #[tokio::test]
    async fn sessions_show_analysts_pseudonyms_only() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::Schema;
        use datafusion::datasource::MemTable;

        let p = Arc::new(pseudonyms());
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("email", DataType::Utf8View, false),
            Field::new("score", DataType::Int64, false),
            Field::new("document", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![
                    "ana@example.com",
                    "bob@example.com",
                    "Ana@Example.com",
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![
                    Some(r#"{"email":"ana@example.com","score":1}"#),
                    None,
                    Some(r#"{"email":"Ana@Example.com","score":3}"#),
                ])),
            ],
        )
        .unwrap();
        ctx.register_table(
            "results",
            Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
        )
        .unwrap();
        let sessions = Arc::new(Schema::new(vec![Field::new(
            "email",
            DataType::Utf8,
            false,
        )]));
        let rows = RecordBatch::try_new(
            sessions.clone(),
            vec![Arc::new(StringArray::from(vec!["bob@example.com"]))],
        )
        .unwrap();
        ctx.register_table(
            "sessions",
            Arc::new(MemTable::try_new(sessions, vec![vec![rows]]).unwrap()),
        )
        .unwrap();
        ctx.sql("CREATE VIEW best AS SELECT email, max(score) AS best FROM results GROUP BY email")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pseudonymise_session(&ctx, &p).await.unwrap();

        let text = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        let ana = p.of("ana@example.com");
        let all = text("SELECT * FROM results ORDER BY score").await;
        assert!(!all.contains('@'), "{all}");
        assert_eq!(all.matches(&ana).count(), 4, "{all}");
        for sql in [
            "SELECT count(*) AS n FROM results WHERE email = 'ana@example.com'",
            "SELECT count(*) AS n FROM results WHERE email LIKE '%@%'",
            "SELECT count(*) AS n FROM results WHERE document LIKE '%ana@%'",
            "SELECT count(*) AS n FROM best WHERE email = 'ana@example.com'",
        ] {
            assert!(text(sql).await.contains("| 0 |"), "{sql}");
        }
        let by_pseudonym = format!("SELECT best FROM best WHERE email = '{ana}'");
        let batches = ctx
            .sql(&by_pseudonym)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            batches[0]
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            3
        );
        let joined = text(
            "SELECT r.score FROM results r JOIN sessions s ON r.email = s.email ORDER BY r.score",
        )
        .await;
        assert!(joined.contains("| 2 "), "{joined}");
        let min = text("SELECT min(email) AS m, max(email) AS x FROM results").await;
        assert!(!min.contains('@'), "{min}");
        let explain = ctx
            .sql("EXPLAIN VERBOSE SELECT email FROM results")
            .await
            .unwrap();
        assert!(check_plan_for_analysts(explain.logical_plan()).is_err());
        let explain = ctx.sql("EXPLAIN SELECT email FROM results").await.unwrap();
        assert!(check_plan_for_analysts(explain.logical_plan()).is_ok());
    }
}

//! The analysts' SQL (see the module docs of [`crate::pseudonym`]): which columns are
//! masked ([`mask_of`]), the physical function that maps them, the table provider that
//! maps them right above the raw scan, and the rewrite of a session's catalog.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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

use super::{DIGEST_BYTES, PREFIX, Pseudonyms, is_email_name};

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

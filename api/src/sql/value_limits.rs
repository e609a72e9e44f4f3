//! `[sql] max_value_bytes`: string and list functions that can build a value far larger
//! than their arguments refuse to, before building it.
//!
//! DataFusion's memory pool sees what sorts, joins and aggregations hold, not the arrays
//! functions return: `repeat('x', 2000000000)` would allocate 2 GB unseen. Every SQL session
//! of the server ([`with_value_limits`]) replaces these functions, under the same names, by
//! wrappers that work out the size of each value from the arguments first:
//!
//! - exactly: `repeat`, `lpad`, `rpad`, `replace`, `concat`, `concat_ws`, `array_repeat`,
//!   `range`, `generate_series`;
//! - as an upper bound: `regexp_replace` (every position may match), `array_resize`,
//!   `array_replace`, `array_replace_n`, `array_replace_all`.
//!
//! A value over the limit is an error naming the function, the size and the limit. The whole
//! result of one call (values × rows; a constant result counts once per row, as it will be
//! repeated) is also reserved from the query's memory pool while it is built, so many
//! values just under the limit cannot add up unseen either; the wrappers are volatile so
//! that constant arguments are not folded ahead of this, at planning, into a literal.
//!
//! `string_agg` grows in its accumulator, which the memory pool already sees; its values are
//! checked when the aggregate is evaluated. The `||` operator (which is no function) is
//! planned inside a check of its value ([`ConcatOperatorPlanner`]), so values cannot double
//! at every step of a chain of `||`s.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit,
    TimestampNanosecondType,
};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::sqlparser::ast::BinaryOperator;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, BinaryExpr, ColumnarValue, Documentation, EmitTo,
    Expr, GroupsAccumulator, Operator, ReturnFieldArgs, ReversedUDAF, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, SetMonotonicity, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// The limits of one session: the largest value, and the pool a call's result counts
/// against while it is built (none: only the value limit).
#[derive(Clone)]
pub struct ValueLimits {
    pub max_value_bytes: usize,
    pub pool: Option<Arc<dyn MemoryPool>>,
}

impl std::fmt::Debug for ValueLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueLimits")
            .field("max_value_bytes", &self.max_value_bytes)
            .field("pool", &self.pool.is_some())
            .finish()
    }
}

impl PartialEq for ValueLimits {
    fn eq(&self, other: &Self) -> bool {
        self.max_value_bytes == other.max_value_bytes
            && match (&self.pool, &other.pool) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ValueLimits {}

impl std::hash::Hash for ValueLimits {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.max_value_bytes.hash(state);
    }
}

impl ValueLimits {
    fn too_large<T>(&self, what: &str, bytes: u64, exact: bool) -> Result<T> {
        exec_err!(
            "{what} would build a value of {}{bytes} bytes, over the limit of {} bytes ([sql] \
             max_value_bytes)",
            if exact { "" } else { "up to " },
            self.max_value_bytes
        )
    }

    /// Reserves `bytes` for a result about to be built (released when dropped).
    fn reserve(&self, what: &str, bytes: u64) -> Result<Option<MemoryReservation>> {
        let Some(pool) = &self.pool else {
            return Ok(None);
        };
        let reservation = MemoryConsumer::new(format!("{what} result")).register(pool);
        reservation.try_grow(usize::try_from(bytes).unwrap_or(usize::MAX))?;
        Ok(Some(reservation))
    }
}

/// `ctx` with the limited functions in place of DataFusion's and `||` checked (see the
/// module). Call it before planning anything on the session.
pub fn with_value_limits(ctx: SessionContext, limits: &ValueLimits) -> Result<SessionContext> {
    let state = ctx.state();
    let mut planners: Vec<Arc<dyn ExprPlanner>> = vec![Arc::new(ConcatOperatorPlanner {
        check: Arc::new(ScalarUDF::new_from_impl(ConcatOperatorCheck::new(
            limits.clone(),
        ))),
    })];
    planners.extend(state.expr_planners().iter().cloned());
    let ctx = SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(state)
            .with_expr_planners(planners)
            .build(),
    );
    for (name, kind) in [
        ("repeat", Kind::Repeat),
        ("lpad", Kind::Pad),
        ("rpad", Kind::Pad),
        ("replace", Kind::Replace),
        ("regexp_replace", Kind::RegexpReplace),
        ("concat", Kind::Concat),
        ("concat_ws", Kind::ConcatWs),
        ("array_repeat", Kind::ArrayRepeat),
        ("array_resize", Kind::ArrayResize),
        ("array_replace", Kind::ArrayReplace(Replaced::First)),
        ("array_replace_n", Kind::ArrayReplace(Replaced::N)),
        ("array_replace_all", Kind::ArrayReplace(Replaced::All)),
        ("range", Kind::Range { inclusive: false }),
        ("generate_series", Kind::Range { inclusive: true }),
    ] {
        // Only what the session has (DataFusion's features decide).
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(LimitedFunction::new(
                inner.as_ref().clone(),
                kind,
                limits.clone(),
            )));
        }
    }
    if let Ok(inner) = ctx.udaf("string_agg") {
        ctx.register_udaf(AggregateUDF::new_from_impl(LimitedStringAgg {
            inner: inner.as_ref().clone(),
            max_value_bytes: limits.max_value_bytes,
        }));
    }
    Ok(ctx)
}

/// How a function's value size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `repeat(text, n)`
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`
    Pad,
    /// `replace(text, from, to)`
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`
    RegexpReplace,
    /// `concat(v, ...)`
    Concat,
    /// `concat_ws(separator, v, ...)`
    ConcatWs,
    /// `array_repeat(element, n)`
    ArrayRepeat,
    /// `array_resize(list, n [, value])`
    ArrayResize,
    /// `array_replace[_n|_all](list, from, to [, n])`
    ArrayReplace(Replaced),
    /// `range`/`generate_series([start,] stop [, step])`
    Range { inclusive: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Replaced {
    First,
    N,
    All,
}

impl Kind {
    /// Whether [`Kind::bytes`] is exact rather than an upper bound.
    fn exact(self) -> bool {
        !matches!(
            self,
            Kind::RegexpReplace | Kind::ArrayResize | Kind::ArrayReplace(_)
        )
    }
}

/// The arguments of one call, scalars as one-row arrays (never repeated per row).
struct Args {
    arrays: Vec<ArrayRef>,
    scalar: Vec<bool>,
}

impl Args {
    fn new(values: &[ColumnarValue]) -> Result<Args> {
        let mut arrays = Vec::with_capacity(values.len());
        let mut scalar = Vec::with_capacity(values.len());
        for value in values {
            match value {
                ColumnarValue::Array(array) => {
                    arrays.push(array.clone());
                    scalar.push(false);
                }
                ColumnarValue::Scalar(value) => {
                    arrays.push(value.to_array_of_size(1)?);
                    scalar.push(true);
                }
            }
        }
        Ok(Args { arrays, scalar })
    }

    fn len(&self) -> usize {
        self.arrays.len()
    }

    /// Argument `i` at `row`: its array and index.
    fn at(&self, i: usize, row: usize) -> Option<(&dyn Array, usize)> {
        let array = self.arrays.get(i)?;
        let index = if self.scalar[i] { 0 } else { row };
        (!array.is_null(index)).then_some((array.as_ref(), index))
    }

    fn text(&self, i: usize, row: usize) -> Option<&str> {
        let (array, index) = self.at(i, row)?;
        text(array, index)
    }

    fn bytes(&self, i: usize, row: usize) -> Option<u64> {
        let (array, index) = self.at(i, row)?;
        Some(value_bytes(array, index))
    }

    /// An integer argument (DataFusion coerces counts to Int64; others are cast).
    fn int(&self, i: usize, row: usize) -> Option<i64> {
        let (array, index) = self.at(i, row)?;
        if let Some(ints) = array.as_primitive_opt::<Int64Type>() {
            return Some(ints.value(index));
        }
        let cast =
            datafusion::arrow::compute::cast(&array.slice(index, 1), &DataType::Int64).ok()?;
        let ints = cast.as_primitive_opt::<Int64Type>()?;
        (!ints.is_null(0)).then(|| ints.value(0))
    }
}

fn text(array: &dyn Array, index: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(index)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(index)),
        DataType::Utf8View => Some(array.as_string_view().value(index)),
        _ => None,
    }
}

/// Bytes of the value at `index`: the length of text and binary, the width of fixed-size
/// types, the memory of anything else's slice.
fn value_bytes(array: &dyn Array, index: usize) -> u64 {
    let bytes = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            text(array, index).map_or(0, str::len)
        }
        DataType::Binary => array.as_binary::<i32>().value(index).len(),
        DataType::LargeBinary => array.as_binary::<i64>().value(index).len(),
        DataType::BinaryView => array.as_binary_view().value(index).len(),
        other => match other.primitive_width() {
            Some(width) => width,
            None => array
                .slice(index, 1)
                .to_data()
                .get_slice_memory_size()
                .unwrap_or(0),
        },
    };
    bytes as u64
}

/// Elements of the list at `index` (any list type).
fn list_values(array: &dyn Array, index: usize) -> Option<ArrayRef> {
    match array.data_type() {
        DataType::List(_) => Some(array.as_list::<i32>().value(index)),
        DataType::LargeList(_) => Some(array.as_list::<i64>().value(index)),
        DataType::FixedSizeList(..) => Some(array.as_fixed_size_list().value(index)),
        DataType::ListView(_) => Some(array.as_list_view::<i32>().value(index)),
        DataType::LargeListView(_) => Some(array.as_list_view::<i64>().value(index)),
        _ => None,
    }
}

/// The width of a list's elements when fixed (else `None`).
fn element_width(list_type: &DataType) -> Option<usize> {
    match list_type {
        DataType::List(field)
        | DataType::LargeList(field)
        | DataType::FixedSizeList(field, _)
        | DataType::ListView(field)
        | DataType::LargeListView(field) => field.data_type().primitive_width(),
        _ => None,
    }
}

impl Kind {
    /// Bytes of the value the function builds at `row`; `None` when it builds none (a null)
    /// or its arguments are of a type this does not know (then it is not limited).
    fn bytes(self, args: &Args, row: usize) -> Option<u64> {
        match self {
            Kind::Repeat => {
                let n = args.int(1, row)?.max(0) as u64;
                Some(args.bytes(0, row)?.saturating_mul(n))
            }
            Kind::Pad => {
                let text = args.text(0, row)?;
                let n = args.int(1, row)?.max(0) as u64;
                let chars = text.chars().count() as u64;
                if n <= chars {
                    return Some(text.len() as u64);
                }
                let fill = if args.len() > 2 {
                    args.text(2, row)?
                } else {
                    " "
                };
                let fill_chars = fill.chars().count() as u64;
                if fill_chars == 0 {
                    return Some(text.len() as u64);
                }
                // Whole copies of `fill`, then the first characters of one more.
                let (whole, part) = ((n - chars) / fill_chars, (n - chars) % fill_chars);
                let part: usize = fill.chars().take(part as usize).map(char::len_utf8).sum();
                Some(
                    (text.len() as u64)
                        .saturating_add(whole.saturating_mul(fill.len() as u64))
                        .saturating_add(part as u64),
                )
            }
            Kind::Replace => {
                let (text, from, to) = (args.text(0, row)?, args.text(1, row)?, args.text(2, row)?);
                if to.len() <= from.len() {
                    return Some(text.len() as u64);
                }
                // An empty `from` matches before every character and at the end.
                let matches = if from.is_empty() {
                    text.chars().count() + 1
                } else {
                    text.matches(from).count()
                } as u64;
                Some(
                    (text.len() as u64)
                        .saturating_add(matches.saturating_mul((to.len() - from.len()) as u64)),
                )
            }
            Kind::RegexpReplace => {
                let (text, replacement) = (args.text(0, row)?, args.text(2, row)?);
                let global = args.len() > 3 && args.text(3, row).is_some_and(|f| f.contains('g'));
                // Every position may match (the pattern may match the empty string); group
                // references add at most the text once each, matches being disjoint.
                let insertions = if global {
                    text.chars().count() as u64 + 1
                } else {
                    1
                };
                let references = replacement.matches(['$', '\\']).count() as u64;
                Some(
                    (text.len() as u64)
                        .saturating_add(insertions.saturating_mul(replacement.len() as u64))
                        .saturating_add(references.saturating_mul(text.len() as u64)),
                )
            }
            Kind::Concat => Some((0..args.len()).filter_map(|i| args.bytes(i, row)).sum()),
            Kind::ConcatWs => {
                let separator = args.bytes(0, row)?;
                let values: Vec<u64> = (1..args.len()).filter_map(|i| args.bytes(i, row)).collect();
                let separators = (values.len() as u64).saturating_sub(1);
                Some(
                    values
                        .iter()
                        .sum::<u64>()
                        .saturating_add(separators.saturating_mul(separator)),
                )
            }
            Kind::ArrayRepeat => {
                let n = args.int(1, row)?.max(0) as u64;
                // A null element still takes its slot.
                let element = args
                    .bytes(0, row)
                    .unwrap_or(0)
                    .max(args.arrays[0].data_type().primitive_width().unwrap_or(1) as u64);
                Some(n.saturating_mul(element.max(1)))
            }
            Kind::ArrayResize => {
                let n = args.int(1, row)?.max(0) as u64;
                let list = args.bytes(0, row).unwrap_or(0);
                let fill = if args.len() > 2 {
                    args.bytes(2, row).unwrap_or(0)
                } else {
                    0
                };
                let element = fill
                    .max(element_width(args.arrays[0].data_type()).unwrap_or(8) as u64)
                    .max(1);
                Some(list.saturating_add(n.saturating_mul(element)))
            }
            Kind::ArrayReplace(which) => {
                let (list_array, list_index) = args.at(0, row)?;
                let list = value_bytes(list_array, list_index);
                let to = args.bytes(2, row).unwrap_or(1).max(1);
                let elements = list_values(list_array, list_index)?;
                let limit = match which {
                    Replaced::First => 1,
                    Replaced::N => args.int(3, row)?.max(0) as u64,
                    Replaced::All => u64::MAX,
                };
                // Elements equal to `from` (all of them when they cannot be compared).
                let matching = args
                    .at(1, row)
                    .and_then(|(from, index)| {
                        let from = datafusion::arrow::array::Scalar::new(from.slice(index, 1));
                        datafusion::arrow::compute::kernels::cmp::eq(&elements, &from).ok()
                    })
                    .map_or(elements.len(), |equal: BooleanArray| equal.true_count())
                    as u64;
                Some(list.saturating_add(matching.min(limit).saturating_mul(to)))
            }
            Kind::Range { inclusive } => range_bytes(args, row, inclusive),
        }
    }
}

/// Bytes of `range`/`generate_series`: 8 per element (4 for dates).
fn range_bytes(args: &Args, row: usize, inclusive: bool) -> Option<u64> {
    const DAY_NANOS: i128 = 86_400_000_000_000;
    let first = args.arrays.first()?.data_type().clone();
    let (start, stop, step, width): (i128, i128, i128, u64) = match first {
        DataType::Int64 => {
            let (start, stop, step) = match args.len() {
                1 => (0, args.int(0, row)?, 1),
                2 => (args.int(0, row)?, args.int(1, row)?, 1),
                _ => (args.int(0, row)?, args.int(1, row)?, args.int(2, row)?),
            };
            (start.into(), stop.into(), step.into(), 8)
        }
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) if args.len() == 3 => {
            let (step_array, step_index) = args.at(2, row)?;
            let step = step_array
                .as_primitive_opt::<IntervalMonthDayNanoType>()?
                .value(step_index);
            // The shortest a step can be: months of 28 days.
            let step_nanos = (i128::from(step.months) * 28 + i128::from(step.days)) * DAY_NANOS
                + i128::from(step.nanoseconds);
            let bound = |i: usize| -> Option<i128> {
                let (array, index) = args.at(i, row)?;
                if matches!(array.data_type(), DataType::Date32 | DataType::Date64) {
                    let days =
                        datafusion::arrow::compute::cast(&array.slice(index, 1), &DataType::Date32)
                            .ok()?;
                    Some(i128::from(days.as_primitive::<Date32Type>().value(0)) * DAY_NANOS)
                } else {
                    let nanos = datafusion::arrow::compute::cast(
                        &array.slice(index, 1),
                        &DataType::Timestamp(TimeUnit::Nanosecond, None),
                    )
                    .ok()?;
                    Some(i128::from(
                        nanos.as_primitive::<TimestampNanosecondType>().value(0),
                    ))
                }
            };
            let width = if matches!(first, DataType::Timestamp(..)) {
                8
            } else {
                4
            };
            (bound(0)?, bound(1)?, step_nanos, width)
        }
        _ => return None,
    };
    if step == 0 || (stop - start).signum() * step.signum() < 0 {
        return Some(0);
    }
    let count = (stop - start).unsigned_abs() / step.unsigned_abs()
        + u128::from(inclusive || (stop - start) % step != 0);
    Some(
        u64::try_from(count)
            .unwrap_or(u64::MAX)
            .saturating_mul(width),
    )
}

/// A DataFusion function whose values are checked against the limits before it builds them.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LimitedFunction {
    inner: ScalarUDF,
    kind: Kind,
    limits: ValueLimits,
    /// The inner signature, volatile (see the module).
    signature: Signature,
}

impl LimitedFunction {
    fn new(inner: ScalarUDF, kind: Kind, limits: ValueLimits) -> Self {
        let mut signature = inner.signature().clone();
        signature.volatility = Volatility::Volatile;
        LimitedFunction {
            inner,
            kind,
            limits,
            signature,
        }
    }
}

impl ScalarUDFImpl for LimitedFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let checked = Args::new(&args.args)?;
        let (rows, times) = if all_scalar {
            (1, args.number_rows.max(1) as u64)
        } else {
            (args.number_rows, 1)
        };
        let (mut largest, mut total) = (0u64, 0u64);
        for row in 0..rows {
            let bytes = self.kind.bytes(&checked, row).unwrap_or(0);
            largest = largest.max(bytes);
            total = total.saturating_add(bytes);
        }
        drop(checked);
        if largest > self.limits.max_value_bytes as u64 {
            return self
                .limits
                .too_large(self.name(), largest, self.kind.exact());
        }
        let _reserved = self
            .limits
            .reserve(self.name(), total.saturating_mul(times))?;
        self.inner.invoke_with_args(args)
    }
}

/// Wraps the value of every `a || b` (text or lists): refuses it over the limit. Its column
/// is named as the `||` inside it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConcatOperatorCheck {
    limits: ValueLimits,
    signature: Signature,
}

impl ConcatOperatorCheck {
    fn new(limits: ValueLimits) -> Self {
        ConcatOperatorCheck {
            limits,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ConcatOperatorCheck {
    fn name(&self) -> &str {
        "max_value_bytes"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [inner] => Ok(inner.schema_name().to_string()),
            _ => exec_err!("max_value_bytes takes one argument"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [inner] => Ok(inner.clone()),
            _ => exec_err!("max_value_bytes takes one argument"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match args.arg_fields {
            [inner] => Ok(inner.clone()),
            _ => exec_err!("max_value_bytes takes one argument"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("max_value_bytes takes one argument");
        };
        let largest = match value {
            ColumnarValue::Scalar(scalar) => {
                let array = scalar.to_array_of_size(1)?;
                if array.is_null(0) {
                    0
                } else {
                    value_bytes(array.as_ref(), 0)
                }
            }
            ColumnarValue::Array(array) => (0..array.len())
                .filter(|i| !array.is_null(*i))
                .map(|i| value_bytes(array.as_ref(), i))
                .max()
                .unwrap_or(0),
        };
        if largest > self.limits.max_value_bytes as u64 {
            return self.limits.too_large("||", largest, true);
        }
        Ok(value.clone())
    }
}

/// Plans `a || b` as DataFusion does (lists through `array_concat`/`array_append`/
/// `array_prepend`), inside a [`ConcatOperatorCheck`]. First among the session's planners.
#[derive(Debug)]
struct ConcatOperatorPlanner {
    check: Arc<ScalarUDF>,
}

impl ExprPlanner for ConcatOperatorPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let planned = match datafusion::functions_nested::planner::NestedFunctionPlanner
            .plan_binary_op(expr, schema)?
        {
            PlannerResult::Planned(lists) => lists,
            PlannerResult::Original(RawBinaryExpr { left, right, .. }) => Expr::BinaryExpr(
                BinaryExpr::new(Box::new(left), Operator::StringConcat, Box::new(right)),
            ),
        };
        Ok(PlannerResult::Planned(self.check.call(vec![planned])))
    }
}

/// `string_agg` whose values are refused over `[sql] max_value_bytes` when evaluated (its
/// accumulators report their size, so the memory pool bounds them while they grow).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimitedStringAgg {
    inner: AggregateUDF,
    max_value_bytes: usize,
}

impl LimitedStringAgg {
    fn check(&self, bytes: usize) -> Result<()> {
        if bytes > self.max_value_bytes {
            return exec_err!(
                "string_agg would build a value of {bytes} bytes, over the limit of {} bytes \
                 ([sql] max_value_bytes)",
                self.max_value_bytes
            );
        }
        Ok(())
    }

    fn check_scalar(&self, value: &ScalarValue) -> Result<()> {
        if let ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) = value
        {
            self.check(s.len())?;
        }
        Ok(())
    }

    fn check_array(&self, array: &ArrayRef) -> Result<()> {
        let largest = (0..array.len())
            .filter(|i| !array.is_null(*i))
            .map(|i| value_bytes(array.as_ref(), i))
            .max()
            .unwrap_or(0);
        self.check(usize::try_from(largest).unwrap_or(usize::MAX))
    }

    fn wrapped(&self, inner: Box<dyn Accumulator>) -> Box<dyn Accumulator> {
        Box::new(LimitedAccumulator {
            inner,
            limit: self.clone(),
        })
    }
}

impl AggregateUDFImpl for LimitedStringAgg {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(self.wrapped(self.inner.accumulator(acc_args)?))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LimitedGroupsAccumulator {
            inner: self.inner.create_groups_accumulator(args)?,
            limit: self.clone(),
        }))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(self.wrapped(self.inner.create_sliding_accumulator(args)?))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.reverse_udf() {
            ReversedUDAF::Reversed(_) => {
                ReversedUDAF::Reversed(Arc::new(AggregateUDF::new_from_impl(self.clone())))
            }
            other => other,
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[derive(Debug)]
struct LimitedAccumulator {
    inner: Box<dyn Accumulator>,
    limit: LimitedStringAgg,
}

impl Accumulator for LimitedAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let value = self.inner.evaluate()?;
        self.limit.check_scalar(&value)?;
        Ok(value)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

struct LimitedGroupsAccumulator {
    inner: Box<dyn GroupsAccumulator>,
    limit: LimitedStringAgg,
}

impl std::fmt::Debug for LimitedGroupsAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedGroupsAccumulator")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl GroupsAccumulator for LimitedGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let values = self.inner.evaluate(emit_to)?;
        self.limit.check_array(&values)?;
        Ok(values)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests;

//! Arrow data from arrow-rs (DataFusion's arrow) into polars, through the Arrow C Data
//! Interface, without copying the buffers.
//!
//! polars carries its own Arrow implementation (`polars-arrow`), so a `RecordBatch` cannot
//! be handed over as a Rust value. Both sides implement the C Data Interface, whose two
//! structs (`ArrowArray`, `ArrowSchema`) have one layout fixed by the specification: arrow-rs
//! exports a column into them and polars-arrow imports it. The buffers stay where they are;
//! polars holds the exported array's `release` callback, which frees them (drops arrow-rs's
//! reference) when its last chunk goes.
//!
//! This is the one module of the workspace that allows `unsafe`: importing from the C Data
//! Interface is unsafe by nature (the importer must trust the struct it is given). The
//! structs handed over here come straight from arrow-rs's safe exporter in the same call.
#![allow(unsafe_code)]

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use polars::prelude::{Column, DataFrame, PlSmallStr, Series};
use polars_arrow::ffi::{ArrowArray, ArrowSchema};

use crate::ReportError;

// The two libraries' structs must be the same C structs.
const _: () = assert!(size_of::<FFI_ArrowArray>() == size_of::<ArrowArray>());
const _: () = assert!(size_of::<FFI_ArrowSchema>() == size_of::<ArrowSchema>());
const _: () = assert!(align_of::<FFI_ArrowArray>() == align_of::<ArrowArray>());
const _: () = assert!(align_of::<FFI_ArrowSchema>() == align_of::<ArrowSchema>());

/// One column of one batch as a polars-arrow array, sharing the buffers.
fn import_column(
    name: &str,
    array: &dyn Array,
) -> Result<
    (
        polars_arrow::datatypes::Field,
        Box<dyn polars_arrow::array::Array>,
    ),
    ReportError,
> {
    let fail = |e: String| ReportError::Arrow {
        column: name.to_string(),
        message: e,
    };
    let (ffi_array, ffi_schema) =
        arrow::ffi::to_ffi(&array.to_data()).map_err(|e| fail(e.to_string()))?;
    // SAFETY: `FFI_ArrowSchema` and `ArrowSchema` are both the C Data Interface's
    // `struct ArrowSchema` (#[repr(C)], same size and alignment, asserted above), and
    // `ffi_schema` was just filled by arrow-rs's exporter. polars only reads it here; it
    // stays owned by `ffi_schema`, whose drop releases it.
    let field = unsafe {
        polars_arrow::ffi::import_field_from_c(&*(&raw const ffi_schema).cast::<ArrowSchema>())
    }
    .map_err(|e| fail(e.to_string()))?;
    // SAFETY: as above for `struct ArrowArray`. Ownership moves to polars: the bits are
    // read into polars' struct and arrow-rs's value is forgotten, so the `release`
    // callback runs exactly once, when polars drops the array.
    let moved: ArrowArray = unsafe { std::ptr::read((&raw const ffi_array).cast::<ArrowArray>()) };
    std::mem::forget(ffi_array);
    // SAFETY: `moved` is a valid exported array of the type `field` describes (both
    // produced together by `to_ffi` above).
    let imported = unsafe { polars_arrow::ffi::import_array_from_c(moved, field.dtype.clone()) }
        .map_err(|e| fail(e.to_string()))?;
    Ok((field, imported))
}

/// A polars `DataFrame` over the batches' buffers (one chunk per batch; strings in Arrow's
/// view layout, `Utf8View`, as DataFusion reads them from Parquet, are not copied; plain
/// `Utf8` strings are converted to polars' view layout).
pub fn to_polars(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<DataFrame, ReportError> {
    let height = batches.iter().map(RecordBatch::num_rows).sum();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let mut chunks = Vec::with_capacity(batches.len());
        let mut polars_field = None;
        for batch in batches {
            let (f, array) = import_column(name, batch.column(index).as_ref())?;
            polars_field.get_or_insert(f);
            chunks.push(array);
        }
        let series = match polars_field {
            Some(f) => Series::try_from((&f, chunks)),
            None => {
                // No batch: an empty column of the schema's type.
                let empty = arrow::array::new_empty_array(field.data_type());
                let (f, array) = import_column(name, empty.as_ref())?;
                Series::try_from((&f, vec![array]))
            }
        }
        .map_err(|e| ReportError::Arrow {
            column: name.clone(),
            message: e.to_string(),
        })?;
        columns.push(Column::from(series.with_name(PlSmallStr::from_str(name))));
    }
    DataFrame::new(height, columns).map_err(|e| ReportError::Arrow {
        column: String::new(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(offset: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("plain", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![offset, offset + 1, offset + 2])),
                Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.5)])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
                Arc::new(StringViewArray::from(vec![
                    Some("a string longer than twelve bytes"),
                    None,
                    Some("short"),
                ])),
                Arc::new(StringArray::from(vec![Some("p"), Some("q"), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn values_and_nulls_survive_the_hand_off() {
        let batches = vec![batch(0), batch(10)];
        let df = to_polars(&batches[0].schema(), &batches).unwrap();
        assert_eq!(df.height(), 6);
        let n: Vec<Option<i64>> = df.column("n").unwrap().i64().unwrap().iter().collect();
        assert_eq!(n, [0, 1, 2, 10, 11, 12].map(Some));
        let x: Vec<Option<f64>> = df.column("x").unwrap().f64().unwrap().iter().collect();
        assert_eq!(x[..3], [Some(0.5), None, Some(2.5)]);
        let ok: Vec<Option<bool>> = df.column("ok").unwrap().bool().unwrap().iter().collect();
        assert_eq!(ok[..3], [Some(true), Some(false), None]);
        let name: Vec<Option<&str>> = df.column("name").unwrap().str().unwrap().iter().collect();
        assert_eq!(
            name[..3],
            [
                Some("a string longer than twelve bytes"),
                None,
                Some("short")
            ]
        );
        let plain: Vec<Option<&str>> = df.column("plain").unwrap().str().unwrap().iter().collect();
        assert_eq!(plain[3..], [Some("p"), Some("q"), None]);
    }

    #[test]
    fn buffers_are_shared_not_copied() {
        let batches = vec![batch(0), batch(10)];
        let df = to_polars(&batches[0].schema(), &batches).unwrap();
        let numbers = df.column("n").unwrap().i64().unwrap();
        assert_eq!(numbers.chunks().len(), 2, "one chunk per batch");
        for (chunk, batch) in numbers.downcast_iter().zip(&batches) {
            let source = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            assert_eq!(chunk.values().as_ptr(), source.values().as_ptr());
        }
        // Long strings live in the view array's data buffers; polars points at the same.
        let names = df.column("name").unwrap().str().unwrap();
        let source = batches[0]
            .column(3)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .unwrap();
        let chunk = names.downcast_iter().next().unwrap();
        assert_eq!(
            chunk.data_buffers()[0].as_ptr(),
            source.data_buffers()[0].as_ptr()
        );
    }

    #[test]
    fn the_buffers_outlive_the_batches() {
        let df = {
            let batches = vec![batch(0)];
            to_polars(&batches[0].schema(), &batches).unwrap()
        };
        let x: f64 = df
            .column("x")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .flatten()
            .sum();
        assert_eq!(x, 3.0);
    }

    #[test]
    fn no_batches_give_an_empty_frame_with_the_columns() {
        let schema = batch(0).schema();
        let df = to_polars(&schema, &[]).unwrap();
        assert_eq!(df.height(), 0);
        assert_eq!(df.width(), 5);
    }
}

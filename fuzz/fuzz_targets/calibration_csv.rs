//! Calibration response CSVs: arbitrary bytes → UTF-8 → `ResponseMatrix::from_csv_str`,
//! then the matrix's shape and coding (no calibration: that is numeric work, not parsing).

#![no_main]

use examflow_engine::irt::{MISSING, ResponseMatrix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(matrix) = ResponseMatrix::from_csv_str(text) else {
        return;
    };
    assert_eq!(matrix.data.len(), matrix.n_persons * matrix.n_items);
    assert_eq!(matrix.item_ids.len(), matrix.n_items);
    assert_eq!(matrix.person_ids.len(), matrix.n_persons);
    assert!(matrix.data.iter().all(|&v| v <= 1 || v == MISSING));
    for p in 0..matrix.n_persons {
        assert_eq!(matrix.row(p).len(), matrix.n_items);
        for i in 0..matrix.n_items {
            assert!(matches!(matrix.get(p, i), None | Some(0 | 1)));
        }
    }
    // Written back as CSV, the matrix reads back the same.
    let mut csv = matrix.item_ids.join(",");
    for p in 0..matrix.n_persons {
        csv.push('\n');
        let cells: Vec<&str> = (0..matrix.n_items)
            .map(|i| match matrix.get(p, i) {
                Some(0) => "0",
                Some(_) => "1",
                None => "NA",
            })
            .collect();
        csv.push_str(&cells.join(","));
    }
    assert_eq!(ResponseMatrix::from_csv_str(&csv).unwrap(), matrix);
});

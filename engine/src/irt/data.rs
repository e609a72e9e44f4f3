//! Dichotomous response data: a persons × items matrix of 0, 1 or missing.
//!
//! Storage is row-major `u8`: `data[p * n_items + i]` is person `p`'s response to item `i`.
//! Values: `0` = incorrect, `1` = correct, [`MISSING`] (`255`) = not answered / not
//! presented. Any other value is rejected by the constructors.
//!
//! Missing rule: IRT likelihoods skip missing responses (missing at random, MAR), i.e. a
//! person contributes only the items they answered. Classical statistics (`crate::ctt`)
//! have their own documented rule (missing counts as incorrect in total scores and alpha,
//! and is excluded from p-values).

use super::IrtError;

/// The code for a missing response in [`ResponseMatrix::data`].
pub const MISSING: u8 = 255;

/// A persons × items matrix of dichotomous responses (see the module docs for the coding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMatrix {
    pub n_persons: usize,
    pub n_items: usize,
    pub item_ids: Vec<String>,
    pub person_ids: Vec<String>,
    /// Row-major, `n_persons * n_items` values in {0, 1, 255}.
    pub data: Vec<u8>,
}

fn default_ids(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|k| format!("{prefix}{k}")).collect()
}

impl ResponseMatrix {
    /// Validated constructor from the raw row-major buffer.
    pub fn new(
        item_ids: Vec<String>,
        person_ids: Vec<String>,
        data: Vec<u8>,
    ) -> Result<Self, IrtError> {
        let n_items = item_ids.len();
        let n_persons = person_ids.len();
        if data.len() != n_items * n_persons {
            return Err(IrtError::Shape(format!(
                "data has {} values, expected {n_persons} persons × {n_items} items",
                data.len()
            )));
        }
        if let Some(pos) = data.iter().position(|&v| v > 1 && v != MISSING) {
            return Err(IrtError::InvalidResponse {
                person: pos / n_items.max(1),
                item: pos % n_items.max(1),
                value: data[pos] as u32,
            });
        }
        Ok(Self {
            n_persons,
            n_items,
            item_ids,
            person_ids,
            data,
        })
    }

    /// From rows of `Option<u8>` (`None` = missing), with ids `item1..` and `person1..`.
    pub fn from_rows(rows: Vec<Vec<Option<u8>>>) -> Result<Self, IrtError> {
        let n_items = rows.first().map_or(0, Vec::len);
        Self::from_rows_with_ids(
            default_ids("item", n_items),
            default_ids("person", rows.len()),
            rows,
        )
    }

    /// From rows of `Option<u8>` (`None` = missing) with explicit ids.
    pub fn from_rows_with_ids(
        item_ids: Vec<String>,
        person_ids: Vec<String>,
        rows: Vec<Vec<Option<u8>>>,
    ) -> Result<Self, IrtError> {
        let n_items = item_ids.len();
        if person_ids.len() != rows.len() {
            return Err(IrtError::Shape(format!(
                "{} person ids for {} rows",
                person_ids.len(),
                rows.len()
            )));
        }
        let mut data = Vec::with_capacity(rows.len() * n_items);
        for (p, row) in rows.iter().enumerate() {
            if row.len() != n_items {
                return Err(IrtError::Shape(format!(
                    "row {p} has {} responses, expected {n_items}",
                    row.len()
                )));
            }
            for (i, v) in row.iter().enumerate() {
                match v {
                    None => data.push(MISSING),
                    Some(x @ (0 | 1)) => data.push(*x),
                    Some(x) => {
                        return Err(IrtError::InvalidResponse {
                            person: p,
                            item: i,
                            value: u32::from(*x),
                        });
                    }
                }
            }
        }
        Self::new(item_ids, person_ids, data)
    }

    /// Parses comma-separated text: a header line of item ids, then one line per person
    /// of `0`/`1`, with an empty cell, `NA` or `.` meaning missing. Persons get ids
    /// `person1..`. (Pure string parsing; reading the file is the caller's business.)
    pub fn from_csv_str(text: &str) -> Result<Self, IrtError> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| IrtError::Shape("empty CSV".into()))?;
        let item_ids: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (p, line) in lines.enumerate() {
            let row = line
                .split(',')
                .enumerate()
                .map(|(i, cell)| match cell.trim() {
                    "" | "NA" | "." => Ok(None),
                    "0" => Ok(Some(0)),
                    "1" => Ok(Some(1)),
                    other => Err(IrtError::Shape(format!(
                        "CSV line {}: cell {} is {other:?}, expected 0, 1 or empty/NA",
                        p + 2,
                        i + 1
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(row);
        }
        let n = rows.len();
        Self::from_rows_with_ids(item_ids, default_ids("person", n), rows)
    }

    /// Person `p`'s responses (length `n_items`).
    pub fn row(&self, p: usize) -> &[u8] {
        &self.data[p * self.n_items..(p + 1) * self.n_items]
    }

    /// Response of person `p` to item `i` (`None` when missing).
    pub fn get(&self, p: usize, i: usize) -> Option<u8> {
        match self.data[p * self.n_items + i] {
            MISSING => None,
            v => Some(v),
        }
    }

    /// A copy with items in the order `order` (`order[j]` = old index of new item `j`).
    pub fn select_items(&self, order: &[usize]) -> Self {
        let mut data = Vec::with_capacity(self.n_persons * order.len());
        for p in 0..self.n_persons {
            let row = self.row(p);
            data.extend(order.iter().map(|&i| row[i]));
        }
        Self {
            n_persons: self.n_persons,
            n_items: order.len(),
            item_ids: order.iter().map(|&i| self.item_ids[i].clone()).collect(),
            person_ids: self.person_ids.clone(),
            data,
        }
    }

    /// A copy with persons in the order `order` (`order[j]` = old index of new person `j`).
    pub fn select_persons(&self, order: &[usize]) -> Self {
        let mut data = Vec::with_capacity(order.len() * self.n_items);
        for &p in order {
            data.extend_from_slice(self.row(p));
        }
        Self {
            n_persons: order.len(),
            n_items: self.n_items,
            item_ids: self.item_ids.clone(),
            person_ids: order.iter().map(|&p| self.person_ids[p].clone()).collect(),
            data,
        }
    }
}

//! Which results a report counts: the attempts per student (`first`, `last`, `highest`,
//! `all`) and a range of submission times. Parsed from the query (`?attempts=&from=&to=`)
//! or the command line, applied to the input frames before anything is computed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use polars::prelude::*;
use serde::{Serialize, Serializer};

use crate::ReportError;

/// Which of a student's results of the exam count (per email).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptSelection {
    /// The first submitted (the default: repeated attempts inflate item facility).
    #[default]
    First,
    /// The last submitted.
    Last,
    /// The highest percentage; ties: the earliest submitted.
    Highest,
    /// Every result.
    All,
}

impl AttemptSelection {
    pub const NAMES: [&'static str; 4] = ["first", "last", "highest", "all"];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptSelection::First => "first",
            AttemptSelection::Last => "last",
            AttemptSelection::Highest => "highest",
            AttemptSelection::All => "all",
        }
    }

    /// `first`, `last`, `highest` or `all`, exactly.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "first" => Some(AttemptSelection::First),
            "last" => Some(AttemptSelection::Last),
            "highest" => Some(AttemptSelection::Highest),
            "all" => Some(AttemptSelection::All),
            _ => None,
        }
    }
}

/// The options a report was computed with; echoed in the report as `options`. A roster
/// `group` will join them (the struct is built through [`ReportOptions::parse`] or field
/// by field with `..Default::default()`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ReportOptions {
    pub attempts: AttemptSelection,
    /// Only results submitted at or after this instant.
    #[serde(serialize_with = "instant")]
    pub from: Option<DateTime<Utc>>,
    /// Only results submitted at or before this instant (a plain date `to` means the end
    /// of that day, UTC).
    #[serde(serialize_with = "instant")]
    pub to: Option<DateTime<Utc>>,
    /// Only students of this roster group (`?group=campus:north`), echoed as the text.
    #[serde(serialize_with = "group_text")]
    pub group: Option<(String, String)>,
}

fn group_text<S: Serializer>(value: &Option<(String, String)>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some((column, group)) => s.serialize_str(&format!("{column}:{group}")),
        None => s.serialize_none(),
    }
}

/// `COLUMN:GROUP` (e.g. `campus:north`): a roster column and one of its groups.
pub fn parse_group(text: &str) -> Result<(String, String), OptionError> {
    match text.split_once(':') {
        Some((column, group)) if !column.trim().is_empty() && !group.trim().is_empty() => {
            Ok((column.trim().to_lowercase(), group.trim().to_string()))
        }
        _ => Err(OptionError {
            parameter: "group",
            message: format!("{text:?} is not COLUMN:GROUP (e.g. campus:north)"),
        }),
    }
}

fn instant<S: Serializer>(value: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => s.serialize_none(),
    }
}

/// A bad report option: which parameter, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct OptionError {
    /// `attempts`, `from` or `to`.
    pub parameter: &'static str,
    pub message: String,
}

/// Which end of the range a time bounds: a plain date is its first or its last instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    From,
    To,
}

fn parse_instant(
    parameter: &'static str,
    text: &str,
    end: End,
) -> Result<DateTime<Utc>, OptionError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let start = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let instant = match end {
            End::From => start,
            End::To => date
                .succ_opt()
                .and_then(|next| next.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc() - chrono::Duration::microseconds(1)),
        };
        if let Some(instant) = instant {
            return Ok(instant);
        }
    }
    Err(OptionError {
        parameter,
        message: format!(
            "{text:?} is neither an RFC 3339 timestamp (2026-12-01T09:00:00Z) nor a date \
             (2026-12-01)"
        ),
    })
}

impl ReportOptions {
    /// The options from their text (`None`: the default; an empty text is an error like
    /// any other bad value). `to` as a plain date includes that whole day; `from` after
    /// `to` is an error naming `from`.
    pub fn parse(
        attempts: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Self, OptionError> {
        let attempts = match attempts {
            None => AttemptSelection::default(),
            Some(text) => AttemptSelection::parse(text).ok_or_else(|| OptionError {
                parameter: "attempts",
                message: format!(
                    "{text:?} is not one of {}",
                    AttemptSelection::NAMES.join(", ")
                ),
            })?,
        };
        let from = from
            .map(|t| parse_instant("from", t, End::From))
            .transpose()?;
        let to = to.map(|t| parse_instant("to", t, End::To)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(OptionError {
                parameter: "from",
                message: format!(
                    "from ({}) is after to ({})",
                    f.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                ),
            });
        }
        Ok(ReportOptions {
            attempts,
            from,
            to,
            group: None,
        })
    }

    fn start_micros(&self) -> Option<i64> {
        self.from.map(|t| t.timestamp_micros())
    }

    fn end_micros(&self) -> Option<i64> {
        self.to.map(|t| t.timestamp_micros())
    }

    /// Whether an instant (µs since the epoch; `None`: unknown) lies in the range. With no
    /// bound every result counts; with one, a result without a time does not.
    fn in_range(&self, micros: Option<i64>) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Some(t) = micros else { return false };
        self.start_micros().is_none_or(|f| t >= f) && self.end_micros().is_none_or(|to| t <= to)
    }
}

fn fail(part: &'static str) -> impl Fn(PolarsError) -> ReportError {
    move |e| ReportError::Compute {
        part,
        message: e.to_string(),
    }
}

const PART: &str = "selecting results";

fn column_of(results: &DataFrame, name: &str) -> Result<Column, ReportError> {
    results
        .column(name)
        .and_then(|c| c.cast(&DataType::String))
        .map_err(fail(PART))
}

/// Which rows of `results` count under `options` (see [`AttemptSelection`]): in the range
/// first, then per email the chosen attempt. Results without an email count each on their
/// own; results without a submission time come after every other in submission order.
pub(crate) fn selected_rows(
    results: &DataFrame,
    options: &ReportOptions,
    roster: &HashMap<String, std::collections::BTreeMap<String, String>>,
) -> Result<Vec<bool>, ReportError> {
    let column = |name: &str, dtype: &DataType| -> Result<Column, ReportError> {
        results
            .column(name)
            .and_then(|c| c.cast(dtype))
            .map_err(fail(PART))
    };
    let submitted = column("submitted_at_us", &DataType::Int64)?;
    let submitted: Vec<Option<i64>> = submitted.i64().map_err(fail(PART))?.iter().collect();
    let mut keep: Vec<bool> = submitted.iter().map(|t| options.in_range(*t)).collect();
    if let Some((column, group)) = &options.group {
        // Only students the roster puts in the group (emails compared trimmed, lower case).
        let emails = column_of(results, "email")?;
        let emails = emails.str().map_err(fail(PART))?;
        for (row, keep) in keep.iter_mut().enumerate() {
            let member = emails.get(row).is_some_and(|e| {
                roster
                    .get(&e.trim().to_lowercase())
                    .and_then(|g| g.get(column))
                    .is_some_and(|g| g == group)
            });
            *keep &= member;
        }
    }
    if options.attempts == AttemptSelection::All {
        return Ok(keep);
    }
    let emails = column("email", &DataType::String)?;
    let emails = emails.str().map_err(fail(PART))?;
    let ids = column("document_id", &DataType::String)?;
    let ids = ids.str().map_err(fail(PART))?;
    let percentage = column("percentage", &DataType::Float64)?;
    let percentage: Vec<Option<f64>> = percentage
        .f64()
        .map_err(fail(PART))?
        .iter()
        .map(|v| v.filter(|x| x.is_finite()))
        .collect();
    // Submission order: by time (unknown last), then document id.
    let order = |row: usize| (submitted[row].is_none(), submitted[row], ids.get(row));
    let mut chosen: HashMap<&str, usize> = HashMap::new();
    for row in 0..results.height() {
        if !keep[row] {
            continue;
        }
        let Some(email) = emails.get(row) else {
            continue;
        };
        let better = |current: usize| match options.attempts {
            AttemptSelection::First => order(row) < order(current),
            AttemptSelection::Last => order(row) > order(current),
            AttemptSelection::Highest => {
                let (p, q) = (
                    percentage[row].unwrap_or(f64::NEG_INFINITY),
                    percentage[current].unwrap_or(f64::NEG_INFINITY),
                );
                p > q || (p == q && order(row) < order(current))
            }
            AttemptSelection::All => true,
        };
        match chosen.get(email) {
            Some(&current) if !better(current) => {}
            _ => {
                chosen.insert(email, row);
            }
        }
    }
    let winners: HashSet<usize> = chosen.into_values().collect();
    for (row, keep) in keep.iter_mut().enumerate() {
        if *keep && emails.get(row).is_some() && !winners.contains(&row) {
            *keep = false;
        }
    }
    Ok(keep)
}

/// The frames and sessions restricted to the selected results: the answers of dropped
/// results go too (`person` renumbered to the kept rows), time on task keeps the attempts
/// whose `finished_at_us` is in the range (when that column is there), adaptive sessions
/// those whose result is kept.
pub(crate) fn apply(input: &mut crate::ReportInput) -> Result<(), ReportError> {
    let keep = selected_rows(&input.results, &input.options, &input.roster)?;
    if keep.iter().any(|k| !k) {
        let mask = BooleanChunked::from_slice("keep".into(), &keep);
        let kept_ids: HashSet<String> = {
            let ids = input
                .results
                .column("document_id")
                .and_then(|c| c.cast(&DataType::String))
                .map_err(fail(PART))?;
            let ids = ids.str().map_err(fail(PART))?;
            ids.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .filter_map(|(id, _)| id.map(str::to_string))
                .collect()
        };
        let height = keep.len();
        input.results = input.results.filter(&mask).map_err(fail(PART))?;
        if let Ok(person) = input.answers.column("person") {
            // New row numbers of the kept results; an answer of a dropped result goes.
            let mut renumber = vec![u32::MAX; height];
            let mut next = 0u32;
            for (row, k) in keep.iter().enumerate() {
                if *k {
                    renumber[row] = next;
                    next += 1;
                }
            }
            let person = person.cast(&DataType::UInt32).map_err(fail(PART))?;
            let person = person.u32().map_err(fail(PART))?;
            // An answer whose person is not a result row stays (with a row out of range),
            // for the item analysis to name.
            let (answer_keep, rows): (Vec<bool>, Vec<u32>) = person
                .iter()
                .map(|p| match p {
                    Some(p) if (p as usize) < height => (keep[p as usize], renumber[p as usize]),
                    _ => (true, u32::MAX),
                })
                .unzip();
            let mask = BooleanChunked::from_slice("keep".into(), &answer_keep);
            let rows: Vec<u32> = rows
                .into_iter()
                .zip(&answer_keep)
                .filter(|(_, k)| **k)
                .map(|(r, _)| r)
                .collect();
            let mut answers = input.answers.filter(&mask).map_err(fail(PART))?;
            answers
                .with_column(Column::new("person".into(), rows))
                .map_err(fail(PART))?;
            input.answers = answers;
        } else {
            let ids = input
                .answers
                .column("document_id")
                .and_then(|c| c.cast(&DataType::String))
                .map_err(fail(PART))?;
            let answer_keep: Vec<bool> = ids
                .str()
                .map_err(fail(PART))?
                .iter()
                .map(|id| id.is_some_and(|id| kept_ids.contains(id)))
                .collect();
            let mask = BooleanChunked::from_slice("keep".into(), &answer_keep);
            input.answers = input.answers.filter(&mask).map_err(fail(PART))?;
        }
        input
            .adaptive_sessions
            .retain(|s| s.result_id.as_ref().is_some_and(|id| kept_ids.contains(id)));
    } else {
        let ids = input
            .results
            .column("document_id")
            .and_then(|c| c.cast(&DataType::String))
            .map_err(fail(PART))?;
        let ids: HashSet<&str> = ids.str().map_err(fail(PART))?.iter().flatten().collect();
        input
            .adaptive_sessions
            .retain(|s| s.result_id.as_deref().is_some_and(|id| ids.contains(id)));
    }
    if (input.options.from.is_some() || input.options.to.is_some())
        && input.durations.column("finished_at_us").is_ok()
    {
        let finished = input
            .durations
            .column("finished_at_us")
            .and_then(|c| c.cast(&DataType::Int64))
            .map_err(fail(PART))?;
        let in_range: Vec<bool> = finished
            .i64()
            .map_err(fail(PART))?
            .iter()
            .map(|t| input.options.in_range(t))
            .collect();
        let mask = BooleanChunked::from_slice("keep".into(), &in_range);
        input.durations = input.durations.filter(&mask).map_err(fail(PART))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_dates_timestamps_and_name_bad_ones() {
        let o = ReportOptions::parse(None, None, None).unwrap();
        assert_eq!(o, ReportOptions::default());
        assert_eq!(o.attempts, AttemptSelection::First);
        let o =
            ReportOptions::parse(Some("highest"), Some("2026-12-01"), Some("2026-12-01")).unwrap();
        assert_eq!(o.attempts, AttemptSelection::Highest);
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"attempts": "highest", "from": "2026-12-01T00:00:00Z",
                               "to": "2026-12-01T23:59:59.999999Z", "group": null})
        );
        let o = ReportOptions::parse(None, Some("2026-12-01T10:00:00+02:00"), None).unwrap();
        assert_eq!(
            o.from.unwrap().to_rfc3339_opts(SecondsFormat::Secs, true),
            "2026-12-01T08:00:00Z"
        );
        assert_eq!(o.to, None);
        for bad in ["best", "", "First"] {
            let e = ReportOptions::parse(Some(bad), None, None).unwrap_err();
            assert_eq!(e.parameter, "attempts");
        }
        let e = ReportOptions::parse(None, None, Some("")).unwrap_err();
        assert_eq!(e.parameter, "to");
        let e = ReportOptions::parse(None, Some("yesterday"), None).unwrap_err();
        assert_eq!(e.parameter, "from");
        let e = ReportOptions::parse(None, None, Some("2026-13-01")).unwrap_err();
        assert_eq!(e.parameter, "to");
        let e = ReportOptions::parse(None, Some("2026-12-02"), Some("2026-12-01")).unwrap_err();
        assert_eq!(e.parameter, "from");
        assert!(e.message.contains("after"), "{e}");
    }
}

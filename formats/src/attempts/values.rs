//! Leaf values of an attempt document: one JSON scalar, and its conversion to the column's
//! type with the dataset's quirks (numbers and booleans as strings, epoch-second strings,
//! RFC 3339 timestamps). Conversions return the reason for a mismatch; the caller adds the
//! JSON path.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One JSON value as found, with strings borrowed from the payload when they have no escapes.
/// Arrays and objects are skipped and only their kind is kept (they are always a mismatch
/// where a scalar is expected).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

/// Longest string shown in an error message, in characters.
const SHOWN_CHARS: usize = 40;

impl fmt::Display for Scalar<'_> {
    /// How an error message shows what was found: JSON text, long strings cut short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::U64(n) => write!(f, "{n}"),
            Scalar::I64(n) => write!(f, "{n}"),
            // Debug keeps the JSON look: `1.0`, `1e300` (Display writes out all 301 digits).
            Scalar::F64(x) => write!(f, "{x:?}"),
            Scalar::Str(s) => {
                let shown: String = s.chars().take(SHOWN_CHARS).collect();
                let quoted = serde_json::to_string(&shown).unwrap_or_default();
                if shown.len() < s.len() {
                    write!(f, "{}…\" ({} bytes)", &quoted[..quoted.len() - 1], s.len())
                } else {
                    f.write_str(&quoted)
                }
            }
            Scalar::Array => f.write_str("an array"),
            Scalar::Object => f.write_str("an object"),
        }
    }
}

/// Deserialises any JSON value into a [`Scalar`].
pub(super) struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalar<'de>, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// A conversion's outcome: the value (`None` for JSON `null`) or the reason it was refused.
pub(super) type Converted<T> = Result<Option<T>, String>;

pub(super) fn to_str(v: Scalar<'_>) -> Converted<Cow<'_, str>> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(Some(s)),
        other => Err(format!("expected a string, found {other}")),
    }
}

/// `true`/`false`, or the strings `"true"`/`"false"`.
pub(super) fn to_bool(v: Scalar<'_>) -> Converted<bool> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Bool(b) => Ok(Some(b)),
        Scalar::Str(s) if s == "true" => Ok(Some(true)),
        Scalar::Str(s) if s == "false" => Ok(Some(false)),
        other => Err(format!(
            "expected a boolean or \"true\"/\"false\", found {other}"
        )),
    }
}

/// A flag written as a number in the dataset (`"submitted": 1`): 0/1, a boolean, or one of
/// the strings "0", "1", "true", "false".
pub(super) fn to_flag(v: Scalar<'_>) -> Converted<bool> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Bool(b) => Ok(Some(b)),
        Scalar::U64(0) | Scalar::I64(0) => Ok(Some(false)),
        Scalar::U64(1) | Scalar::I64(1) => Ok(Some(true)),
        Scalar::F64(0.0) => Ok(Some(false)),
        Scalar::F64(1.0) => Ok(Some(true)),
        Scalar::Str(s) if s == "1" || s == "true" => Ok(Some(true)),
        Scalar::Str(s) if s == "0" || s == "false" => Ok(Some(false)),
        other => Err(format!(
            "expected 0, 1, a boolean or one of \"0\"/\"1\"/\"true\"/\"false\", found {other}"
        )),
    }
}

/// An integer that fits Int32: a JSON number without a fraction, or a string holding one
/// (`"4"`, and `"4.0"` as the dataset writes numbers).
pub(super) fn to_i32(v: Scalar<'_>) -> Converted<i32> {
    let n = match &v {
        Scalar::Null => return Ok(None),
        Scalar::U64(n) => i32::try_from(*n).ok(),
        Scalar::I64(n) => i32::try_from(*n).ok(),
        Scalar::F64(x) => f64_to_i32(*x),
        Scalar::Str(s) => s
            .parse::<i32>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(f64_to_i32)),
        _ => None,
    };
    n.map(Some)
        .ok_or_else(|| format!("expected a 32-bit integer or a string holding one, found {v}"))
}

fn f64_to_i32(x: f64) -> Option<i32> {
    let in_range = x.fract() == 0.0 && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX);
    // The cast is exact: x is integral and within i32's range.
    in_range.then_some(x as i32)
}

/// A finite number, or a string holding one (`"1.0"`).
pub(super) fn to_f64(v: Scalar<'_>) -> Converted<f64> {
    let x = match &v {
        Scalar::Null => return Ok(None),
        Scalar::U64(n) => Some(*n as f64),
        Scalar::I64(n) => Some(*n as f64),
        Scalar::F64(x) => Some(*x),
        Scalar::Str(s) if is_decimal_number(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match x {
        Some(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!(
            "expected a number or a string holding one, found {v}"
        )),
    }
}

/// JSON number syntax without the leading-zero rule (Rust's parser also takes "inf", "NaN").
fn is_decimal_number(s: &str) -> bool {
    let b = s.strip_prefix('-').unwrap_or(s).as_bytes();
    !b.is_empty()
        && b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
}

/// A point in time as microseconds since the Unix epoch (UTC): an RFC 3339 string, epoch
/// seconds as a string (`"1516717442.735266"`, parsed exactly; digits past the sixth
/// decimal are dropped), or epoch seconds as a JSON number.
pub(super) fn to_timestamp_us(v: Scalar<'_>) -> Converted<i64> {
    let us = match &v {
        Scalar::Null => return Ok(None),
        Scalar::Str(s) => parse_timestamp_us(s),
        Scalar::U64(n) => i64::try_from(*n)
            .ok()
            .and_then(|n| n.checked_mul(1_000_000)),
        Scalar::I64(n) => n.checked_mul(1_000_000),
        Scalar::F64(x) => f64_seconds_to_us(*x),
        _ => None,
    };
    match us {
        Some(us) if (MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&us) => Ok(Some(us)),
        Some(_) => Err(format!("timestamp outside the years 1 to 9999, found {v}")),
        None => Err(format!(
            "expected an RFC 3339 timestamp or epoch seconds, found {v}"
        )),
    }
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z, the range of Delta Lake's
/// `timestamp` (and far from overflowing any difference of two timestamps).
pub(super) const MIN_TIMESTAMP_US: i64 = -62_135_596_800_000_000;
pub(super) const MAX_TIMESTAMP_US: i64 = 253_402_300_799_999_999;

/// A JSON number of epoch seconds. A double holds today's epochs to about 0.24 µs, so
/// rounding gives the exact microsecond for inputs with up to six decimals.
fn f64_seconds_to_us(x: f64) -> Option<i64> {
    let us = (x * 1e6).round();
    // 2^63 µs; the cast is exact once the range is checked.
    (us.is_finite() && us.abs() < 9.2e18).then_some(us as i64)
}

/// RFC 3339 (`2018-01-23T14:23:19.082Z`) or decimal epoch seconds, to microseconds.
pub(super) fn parse_timestamp_us(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() >= 10 && b[4] == b'-' {
        parse_rfc3339_fast(b).or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|dt| dt.timestamp_micros())
        })
    } else {
        parse_epoch_seconds_us(b).or_else(|| {
            // Exponent forms ("1.5e9") are rare; a double is close enough for them.
            if s.contains(['e', 'E']) && is_decimal_number(s) {
                s.parse::<f64>().ok().and_then(f64_seconds_to_us)
            } else {
                None
            }
        })
    }
}

/// `[-]digits[.digits]` to microseconds, exactly (extra decimals are dropped).
fn parse_epoch_seconds_us(b: &[u8]) -> Option<i64> {
    let (negative, b) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(dot) => (&b[..dot], &b[dot + 1..]),
        None => (b, &b[..0]),
    };
    // Up to 12 integer digits (year ~33658): keeps the arithmetic far from overflow.
    if int.is_empty() || int.len() > 12 || (frac.is_empty() && b.len() != int.len()) {
        return None;
    }
    let mut seconds: i64 = 0;
    for &c in int {
        seconds = seconds * 10 + digit(c)?;
    }
    let mut micros: i64 = 0;
    for i in 0..6 {
        micros = micros * 10 + frac.get(i).map_or(Some(0), |&c| digit(c))?;
    }
    if !frac.iter().skip(6).all(u8::is_ascii_digit) {
        return None;
    }
    let us = seconds * 1_000_000 + micros;
    Some(if negative { -us } else { us })
}

fn digit(c: u8) -> Option<i64> {
    c.is_ascii_digit().then(|| i64::from(c - b'0'))
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter()
        .try_fold(0i64, |acc, &c| Some(acc * 10 + digit(c)?))
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)`; anything else (leap seconds,
/// lower-case or space separators, …) is left to chrono.
fn parse_rfc3339_fast(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for i in 0..6 {
            micros = micros * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |&c| i64::from(c - b'0'));
        }
        rest = &frac[n..];
    }
    let offset_seconds = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * 1_000_000 + micros)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_us(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn rfc3339_fast_path_agrees_with_chrono() {
        for s in [
            "2018-01-23T14:23:19.082Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "2000-02-29T12:00:00.5+05:30",
            "2018-01-23T14:23:19.123456789-08:00",
            "1600-03-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2024-02-29T23:59:59+00:00",
        ] {
            assert_eq!(parse_rfc3339_fast(s.as_bytes()), Some(chrono_us(s)), "{s}");
            assert_eq!(parse_timestamp_us(s), Some(chrono_us(s)), "{s}");
        }
    }

    #[test]
    fn rfc3339_other_shapes_fall_back_to_chrono() {
        for s in [
            "2018-01-23t14:23:19.082z",
            "2018-01-23 14:23:19Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(parse_rfc3339_fast(s.as_bytes()), None, "{s}");
            assert_eq!(parse_timestamp_us(s), Some(chrono_us(s)), "{s}");
        }
    }

    #[test]
    fn invalid_timestamps_are_refused() {
        for s in [
            "2018-02-30T00:00:00Z",
            "2018-13-01T00:00:00Z",
            "2018-01-23T24:00:00Z",
            "2018-01-23T14:23:19",
            "2018-01-23T14:23:19.Z",
            "2018-01-23T14:23:19.082Zjunk",
            "2018-01-23",
            "yesterday",
            "",
            "1516717442.",
            ".5",
            "15167x7442",
            "1516717442.73526x",
            "-",
            "1e400",
        ] {
            assert_eq!(parse_timestamp_us(s), None, "{s}");
        }
    }

    #[test]
    fn epoch_seconds_are_exact_to_the_microsecond() {
        assert_eq!(
            parse_timestamp_us("1516717442.735266"),
            Some(1_516_717_442_735_266)
        );
        assert_eq!(
            parse_timestamp_us("1516738921.1137421"),
            Some(1_516_738_921_113_742)
        );
        assert_eq!(
            parse_timestamp_us("1516717442.7"),
            Some(1_516_717_442_700_000)
        );
        assert_eq!(
            parse_timestamp_us("1516717442"),
            Some(1_516_717_442_000_000)
        );
        assert_eq!(parse_timestamp_us("-1.5"), Some(-1_500_000));
        assert_eq!(parse_timestamp_us("1.5e9"), Some(1_500_000_000_000_000));
        // Every six-decimal value of a day in 2018 survives the f64 path of native numbers.
        let mut us = 1_516_717_442_000_000i64;
        for _ in 0..100_000 {
            us += 86_400_000_000 / 100_000 + 7;
            let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
            assert_eq!(parse_timestamp_us(&text), Some(us));
            let native: f64 = text.parse().unwrap();
            assert_eq!(f64_seconds_to_us(native), Some(us), "{text}");
        }
    }

    #[test]
    fn timestamps_are_limited_to_the_years_1_to_9999() {
        let ts = |s: &str| to_timestamp_us(Scalar::Str(s.into()));
        assert_eq!(ts("0001-01-01T00:00:00Z"), Ok(Some(MIN_TIMESTAMP_US)));
        assert_eq!(
            ts("9999-12-31T23:59:59.999999Z"),
            Ok(Some(MAX_TIMESTAMP_US))
        );
        assert_eq!(
            ts("0000-12-31T23:59:59Z").unwrap_err(),
            "timestamp outside the years 1 to 9999, found \"0000-12-31T23:59:59Z\""
        );
        assert_eq!(
            ts("253402300800").unwrap_err(),
            "timestamp outside the years 1 to 9999, found \"253402300800\""
        );
        assert_eq!(
            to_timestamp_us(Scalar::F64(-1e11)).unwrap_err(),
            "timestamp outside the years 1 to 9999, found -100000000000.0"
        );
        assert!(to_timestamp_us(Scalar::U64(u64::MAX)).is_err());
        assert!(to_timestamp_us(Scalar::I64(i64::MIN)).is_err());
        assert!(to_timestamp_us(Scalar::F64(f64::MAX)).is_err());
    }

    #[test]
    fn conversions_take_strings_and_native_values() {
        assert_eq!(to_bool(Scalar::Str("false".into())), Ok(Some(false)));
        assert_eq!(to_bool(Scalar::Bool(true)), Ok(Some(true)));
        assert_eq!(to_bool(Scalar::Null), Ok(None));
        assert_eq!(to_flag(Scalar::U64(1)), Ok(Some(true)));
        assert_eq!(to_flag(Scalar::Str("0".into())), Ok(Some(false)));
        assert_eq!(to_i32(Scalar::Str("4".into())), Ok(Some(4)));
        assert_eq!(to_i32(Scalar::Str("4.0".into())), Ok(Some(4)));
        assert_eq!(to_i32(Scalar::F64(-2.0)), Ok(Some(-2)));
        assert_eq!(to_f64(Scalar::Str("1.0".into())), Ok(Some(1.0)));
        assert_eq!(to_f64(Scalar::U64(3)), Ok(Some(3.0)));
        assert_eq!(to_timestamp_us(Scalar::U64(2)), Ok(Some(2_000_000)));
        assert_eq!(
            to_timestamp_us(Scalar::F64(1516717442.735266)),
            Ok(Some(1_516_717_442_735_266))
        );
    }

    #[test]
    fn mismatches_name_what_was_found() {
        assert_eq!(
            to_bool(Scalar::Str("maybe".into())),
            Err("expected a boolean or \"true\"/\"false\", found \"maybe\"".to_owned())
        );
        assert_eq!(
            to_i32(Scalar::U64(1 << 40)),
            Err(
                "expected a 32-bit integer or a string holding one, found 1099511627776".to_owned()
            )
        );
        assert_eq!(
            to_i32(Scalar::Str("4.5".into())).unwrap_err(),
            "expected a 32-bit integer or a string holding one, found \"4.5\""
        );
        assert_eq!(
            to_f64(Scalar::Str("inf".into())).unwrap_err(),
            "expected a number or a string holding one, found \"inf\""
        );
        assert_eq!(
            to_str(Scalar::Array).unwrap_err(),
            "expected a string, found an array"
        );
        assert_eq!(
            to_flag(Scalar::U64(2)).unwrap_err(),
            "expected 0, 1, a boolean or one of \"0\"/\"1\"/\"true\"/\"false\", found 2"
        );
        let long = "é".repeat(1000);
        assert_eq!(
            to_bool(Scalar::Str(long.into())).unwrap_err(),
            format!(
                "expected a boolean or \"true\"/\"false\", found \"{}…\" (2000 bytes)",
                "é".repeat(40)
            )
        );
        assert_eq!(
            to_bool(Scalar::Str("a\"b".into())).unwrap_err(),
            "expected a boolean or \"true\"/\"false\", found \"a\\\"b\""
        );
    }
}

//! The strict, borrowing decoder: serde visitors over `serde_json`'s deserializer, one per
//! object of the document, with no intermediate DOM.
//!
//! Every visitor knows the JSON path of the value it reads (a linked list of path segments
//! on the stack, rendered only on error). The first error found is written to a [`Slot`]
//! with its path and reason; the serde error that then unwinds the visitors carries no
//! information of its own. Errors raised by `serde_json` itself (bad syntax, truncation)
//! are recorded by the innermost visitor that sees them, so they also get a path.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::values::{
    Scalar, ScalarSeed, to_bool, to_f64, to_flag, to_i32, to_str, to_timestamp_us,
};
use super::{Attempt, AttemptCounts, AttemptError, AttemptOption, AttemptQuestion};

/// Parses one document. See the module documentation of `attempts` for the rules.
pub(super) fn parse(payload: &[u8]) -> Result<Attempt<'_>, AttemptError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(AttemptError::new("", "empty payload"));
    }
    let slot = Slot::default();
    let root = Path {
        parent: None,
        segment: Segment::Root,
    };
    let ctx = Ctx {
        path: &root,
        slot: &slot,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = de
        .deserialize_any(AttemptVisitor(ctx))
        .and_then(|attempt| de.end().map(|()| attempt));
    let attempt = parsed.map_err(|e| slot.take().unwrap_or_else(|| json_error("", &e)))?;
    // serde_json checks UTF-8 in the strings it reads, not in those it skips (values of
    // unknown keys): found by fuzzing (`fuzz/`, attempt_document). One more pass over a
    // document that parsed; the strings read were already checked, with their path.
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(AttemptError::new(
            "",
            format!(
                "invalid JSON: invalid UTF-8 at byte {} (in a value that is otherwise ignored)",
                e.valid_up_to()
            ),
        ));
    }
    Ok(attempt)
}

fn json_error(path: &str, e: &dyn fmt::Display) -> AttemptError {
    AttemptError::new(path, format!("invalid JSON: {e}"))
}

/// The first error of a parse, with its path.
#[derive(Default)]
struct Slot(RefCell<Option<AttemptError>>);

impl Slot {
    fn take(&self) -> Option<AttemptError> {
        self.0.borrow_mut().take()
    }

    fn is_empty(&self) -> bool {
        self.0.borrow().is_none()
    }

    /// Records `reason` at `path` (unless an inner error came first) and returns the error
    /// that unwinds the visitors.
    fn fail<E: de::Error>(&self, path: &Path<'_>, reason: impl Into<String>) -> E {
        if self.is_empty() {
            *self.0.borrow_mut() = Some(AttemptError::new(path.render(), reason));
        }
        E::custom("attempt decoding failed")
    }

    /// Passes on an error from `serde_json`, recording it at `path` if nothing was recorded.
    fn note<E: de::Error>(&self, path: &Path<'_>, e: E) -> E {
        if self.is_empty() {
            *self.0.borrow_mut() = Some(json_error(&path.render(), &e));
        }
        e
    }
}

#[derive(Clone, Copy)]
enum Segment {
    Root,
    Key(&'static str),
    Index(usize),
}

/// Where a value sits in the document: `sequences.questions[2].options[0].checked`.
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    segment: Segment,
}

impl<'p> Path<'p> {
    fn key(&'p self, key: &'static str) -> Path<'p> {
        Path {
            parent: Some(self),
            segment: Segment::Key(key),
        }
    }

    fn index(&'p self, index: usize) -> Path<'p> {
        Path {
            parent: Some(self),
            segment: Segment::Index(index),
        }
    }

    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut at = Some(self);
        while let Some(path) = at {
            segments.push(path.segment);
            at = path.parent;
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Key(key) if out.is_empty() => out.push_str(key),
                Segment::Key(key) => {
                    out.push('.');
                    out.push_str(key);
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

/// What every visitor carries: its path and the error slot.
#[derive(Clone, Copy)]
struct Ctx<'p> {
    path: &'p Path<'p>,
    slot: &'p Slot,
}

/// The known keys of one kind of object, so that visitors skip unknown keys without
/// allocating and notice duplicates.
trait Fields: Sized + Copy {
    fn from_key(key: &str) -> Option<Self>;
    fn name(self) -> &'static str;
    /// Distinct per field, below 32.
    fn bit(self) -> u32;
}

macro_rules! fields {
    ($name:ident { $($variant:ident = $key:literal),+ $(,)? }) => {
        #[derive(Clone, Copy)]
        #[repr(u8)]
        enum $name { $($variant),+ }

        impl Fields for $name {
            fn from_key(key: &str) -> Option<Self> {
                match key {
                    $($key => Some(Self::$variant),)+
                    _ => None,
                }
            }
            fn name(self) -> &'static str {
                match self { $(Self::$variant => $key),+ }
            }
            fn bit(self) -> u32 {
                1 << (self as u8)
            }
        }
    };
}

fields!(TopField {
    KeenId = "keen_id",
    UserExamId = "user_exam_id",
    BaseExamId = "base_exam_id",
    ExamName = "exam_name",
    StartedAt = "started_at",
    KeenTimestamp = "keen_timestamp",
    KeenCreatedAt = "keen_created_at",
    MaxAttempts = "max_attempts",
    Certification = "certification",
    Sequences = "sequences",
});

fields!(SequenceField { Questions = "questions", Attempt = "attempt", Id = "id", Counts = "counts" });

fields!(CountField {
    Total = "total",
    Correct = "correct",
    Incorrect = "incorrect",
    Incomplete = "incomplete",
    Submitted = "submitted",
    Unanswered = "unanswered",
    AllCorrect = "all_correct",
});

fields!(QuestionField {
    Id = "id",
    UserResult = "user_result",
    UserCorrect = "user_correct",
    UserIncomplete = "user_incomplete",
    UserSubmitted = "user_submitted",
    Options = "options",
});

fields!(OptionField {
    Id = "id",
    Checked = "checked",
    Correct = "correct",
    At = "at",
    Submitted = "submitted",
});

/// Reads an object key: `Some(field)` for a known key, `None` for an unknown one.
struct KeySeed<F>(std::marker::PhantomData<F>);

impl<'de, F: Fields> DeserializeSeed<'de> for KeySeed<F> {
    type Value = Option<F>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<F>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, F: Fields> Visitor<'de> for KeySeed<F> {
    type Value = Option<F>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<F>, E> {
        Ok(F::from_key(key))
    }
}

/// Walks the entries of an object: calls `on_field` for each known key (once; a repeated
/// key is an error) and skips the values of unknown keys.
fn for_each_field<'de, A, F>(
    map: &mut A,
    ctx: Ctx<'_>,
    mut on_field: impl FnMut(&mut A, F, &Path<'_>) -> Result<(), A::Error>,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    F: Fields,
{
    let mut seen = 0u32;
    loop {
        let field = match map.next_key_seed(KeySeed::<F>(std::marker::PhantomData)) {
            Ok(Some(Some(field))) => field,
            Ok(Some(None)) => {
                map.next_value::<IgnoredAny>()
                    .map_err(|e| ctx.slot.note(ctx.path, e))?;
                continue;
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(ctx.slot.note(ctx.path, e)),
        };
        let path = ctx.path.key(field.name());
        if seen & field.bit() != 0 {
            return Err(ctx.slot.fail(&path, "duplicate key"));
        }
        seen |= field.bit();
        on_field(map, field, &path)?;
    }
}

/// Reads the current entry's value as a scalar and converts it.
fn leaf<'de, A: MapAccess<'de>, T>(
    map: &mut A,
    slot: &Slot,
    path: &Path<'_>,
    convert: impl FnOnce(Scalar<'de>) -> Result<Option<T>, String>,
) -> Result<Option<T>, A::Error> {
    let value = map
        .next_value_seed(ScalarSeed)
        .map_err(|e| slot.note(path, e))?;
    convert(value).map_err(|reason| slot.fail(path, reason))
}

/// Reads the current entry's value with a nested visitor (object or array).
fn nested<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
    map: &mut A,
    slot: &Slot,
    path: &Path<'_>,
    seed: S,
) -> Result<S::Value, A::Error> {
    map.next_value_seed(seed).map_err(|e| slot.note(path, e))
}

/// The visitor methods that refuse every JSON kind but the one a visitor expects, naming
/// what was found. JSON `null` gives `Ok(None)`; the caller decides whether that is allowed.
macro_rules! refuse_other_kinds {
    ($expected:literal) => {
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str($expected)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(self.refuse(Scalar::Bool(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(self.refuse(Scalar::U64(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(self.refuse(Scalar::I64(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(self.refuse(Scalar::F64(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(self.refuse(Scalar::Str(v.into())))
        }
    };
}

macro_rules! refuse_arrays {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.refuse(Scalar::Array))
        }
    };
}

macro_rules! refuse_objects {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.refuse(Scalar::Object))
        }
    };
}

/// `refuse` for a visitor whose `expecting` text completes "expected …".
macro_rules! impl_refuse {
    ($visitor:ident, $expected:literal) => {
        impl $visitor<'_> {
            fn refuse<E: de::Error>(&self, found: Scalar<'_>) -> E {
                self.0.slot.fail(
                    self.0.path,
                    format!(concat!("expected ", $expected, ", found {}"), found),
                )
            }
        }
    };
}

/// Implements `DeserializeSeed` for a visitor over `deserialize_any`.
macro_rules! seed_via_any {
    ($visitor:ident) => {
        impl<'de> DeserializeSeed<'de> for $visitor<'_> {
            type Value = <Self as Visitor<'de>>::Value;

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

struct AttemptVisitor<'p>(Ctx<'p>);
impl_refuse!(AttemptVisitor, "a JSON object at the top level");

impl<'de> Visitor<'de> for AttemptVisitor<'_> {
    type Value = Attempt<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attempt object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Attempt<'de>, E> {
        Err(self.refuse(Scalar::Null))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Attempt<'de>, E> {
        Err(self.refuse(Scalar::Bool(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Attempt<'de>, E> {
        Err(self.refuse(Scalar::U64(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Attempt<'de>, E> {
        Err(self.refuse(Scalar::I64(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Attempt<'de>, E> {
        Err(self.refuse(Scalar::F64(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Attempt<'de>, E> {
        Err(self.refuse(Scalar::Str(v.into())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Attempt<'de>, A::Error> {
        Err(self.refuse(Scalar::Array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attempt<'de>, A::Error> {
        let Ctx { slot, .. } = self.0;
        let mut a = Attempt::default();
        let mut sequences = None;
        for_each_field(&mut map, self.0, |map, field: TopField, path| {
            match field {
                TopField::KeenId => a.keen_id = leaf(map, slot, path, to_str)?,
                TopField::UserExamId => a.user_exam_id = leaf(map, slot, path, to_str)?,
                TopField::BaseExamId => a.base_exam_id = leaf(map, slot, path, to_str)?,
                TopField::ExamName => a.exam_name = leaf(map, slot, path, to_str)?,
                TopField::StartedAt => a.started_at_us = leaf(map, slot, path, to_timestamp_us)?,
                TopField::KeenTimestamp => {
                    a.keen_timestamp_us = leaf(map, slot, path, to_timestamp_us)?;
                }
                TopField::KeenCreatedAt => {
                    a.keen_created_at_us = leaf(map, slot, path, to_timestamp_us)?;
                }
                TopField::MaxAttempts => a.max_attempts = leaf(map, slot, path, to_f64)?,
                TopField::Certification => a.certification = leaf(map, slot, path, to_bool)?,
                TopField::Sequences => {
                    let ctx = Ctx { path, slot };
                    sequences = nested(map, slot, path, SequencesVisitor(ctx))?;
                    if sequences.is_none() {
                        return Err(slot.fail(path, "expected an object, found null"));
                    }
                }
            }
            Ok(())
        })?;
        let Some(sequences) = sequences else {
            return Err(slot.fail(&self.0.path.key("sequences"), "required key is missing"));
        };
        let Sequences {
            questions,
            attempt,
            id,
            counts,
        } = sequences;
        a.questions = questions;
        a.attempt = attempt;
        a.sequence_id = id;
        a.counts = counts;
        Ok(a)
    }
}

/// The `sequences` object, before it is folded into [`Attempt`].
struct Sequences<'a> {
    questions: Vec<AttemptQuestion<'a>>,
    attempt: Option<i32>,
    id: Option<std::borrow::Cow<'a, str>>,
    counts: Option<AttemptCounts>,
}

struct SequencesVisitor<'p>(Ctx<'p>);
impl_refuse!(SequencesVisitor, "an object");
seed_via_any!(SequencesVisitor);

impl<'de> Visitor<'de> for SequencesVisitor<'_> {
    type Value = Option<Sequences<'de>>;
    refuse_other_kinds!("an object");
    refuse_arrays!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.0.slot;
        let mut questions = None;
        let mut s = Sequences {
            questions: Vec::new(),
            attempt: None,
            id: None,
            counts: None,
        };
        for_each_field(&mut map, self.0, |map, field: SequenceField, path| {
            let ctx = Ctx { path, slot };
            match field {
                SequenceField::Questions => {
                    questions = nested(map, slot, path, QuestionsVisitor(ctx))?;
                    if questions.is_none() {
                        return Err(slot.fail(path, "expected an array, found null"));
                    }
                }
                SequenceField::Attempt => s.attempt = leaf(map, slot, path, to_i32)?,
                SequenceField::Id => s.id = leaf(map, slot, path, to_str)?,
                SequenceField::Counts => s.counts = nested(map, slot, path, CountsVisitor(ctx))?,
            }
            Ok(())
        })?;
        match questions {
            Some(questions) => s.questions = questions,
            None => return Err(slot.fail(&self.0.path.key("questions"), "required key is missing")),
        }
        Ok(Some(s))
    }
}

struct CountsVisitor<'p>(Ctx<'p>);
impl_refuse!(CountsVisitor, "an object");
seed_via_any!(CountsVisitor);

impl<'de> Visitor<'de> for CountsVisitor<'_> {
    type Value = Option<AttemptCounts>;
    refuse_other_kinds!("an object");
    refuse_arrays!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.0.slot;
        let mut c = AttemptCounts::default();
        for_each_field(&mut map, self.0, |map, field: CountField, path| {
            match field {
                CountField::Total => c.total = leaf(map, slot, path, to_i32)?,
                CountField::Correct => c.correct = leaf(map, slot, path, to_i32)?,
                CountField::Incorrect => c.incorrect = leaf(map, slot, path, to_i32)?,
                CountField::Incomplete => c.incomplete = leaf(map, slot, path, to_i32)?,
                CountField::Submitted => c.submitted = leaf(map, slot, path, to_i32)?,
                CountField::Unanswered => c.unanswered = leaf(map, slot, path, to_i32)?,
                CountField::AllCorrect => c.all_correct = leaf(map, slot, path, to_bool)?,
            }
            Ok(())
        })?;
        Ok(Some(c))
    }
}

struct QuestionsVisitor<'p>(Ctx<'p>);
impl_refuse!(QuestionsVisitor, "an array");
seed_via_any!(QuestionsVisitor);

impl<'de> Visitor<'de> for QuestionsVisitor<'_> {
    type Value = Option<Vec<AttemptQuestion<'de>>>;
    refuse_other_kinds!("an array");
    refuse_objects!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let slot = self.0.slot;
        let mut out = Vec::with_capacity(8);
        loop {
            let path = self.0.path.index(out.len());
            let ctx = Ctx { path: &path, slot };
            match seq.next_element_seed(QuestionVisitor(ctx)) {
                Ok(Some(Some(question))) => out.push(question),
                Ok(Some(None)) => return Err(slot.fail(&path, "expected an object, found null")),
                Ok(None) => return Ok(Some(out)),
                Err(e) => return Err(slot.note(&path, e)),
            }
        }
    }
}

struct QuestionVisitor<'p>(Ctx<'p>);
impl_refuse!(QuestionVisitor, "an object");
seed_via_any!(QuestionVisitor);

impl<'de> Visitor<'de> for QuestionVisitor<'_> {
    type Value = Option<AttemptQuestion<'de>>;
    refuse_other_kinds!("an object");
    refuse_arrays!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.0.slot;
        let mut q = AttemptQuestion::default();
        let mut options = None;
        for_each_field(&mut map, self.0, |map, field: QuestionField, path| {
            match field {
                QuestionField::Id => q.id = leaf(map, slot, path, to_str)?,
                QuestionField::UserResult => q.user_result = leaf(map, slot, path, to_str)?,
                QuestionField::UserCorrect => q.user_correct = leaf(map, slot, path, to_bool)?,
                QuestionField::UserIncomplete => {
                    q.user_incomplete = leaf(map, slot, path, to_bool)?;
                }
                QuestionField::UserSubmitted => {
                    q.user_submitted = leaf(map, slot, path, to_bool)?;
                }
                QuestionField::Options => {
                    options = nested(map, slot, path, OptionsVisitor(Ctx { path, slot }))?;
                    if options.is_none() {
                        return Err(slot.fail(path, "expected an array, found null"));
                    }
                }
            }
            Ok(())
        })?;
        match options {
            Some(options) => q.options = options,
            None => return Err(slot.fail(&self.0.path.key("options"), "required key is missing")),
        }
        Ok(Some(q))
    }
}

struct OptionsVisitor<'p>(Ctx<'p>);
impl_refuse!(OptionsVisitor, "an array");
seed_via_any!(OptionsVisitor);

impl<'de> Visitor<'de> for OptionsVisitor<'_> {
    type Value = Option<Vec<AttemptOption<'de>>>;
    refuse_other_kinds!("an array");
    refuse_objects!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let slot = self.0.slot;
        let mut out = Vec::with_capacity(6);
        loop {
            let path = self.0.path.index(out.len());
            let ctx = Ctx { path: &path, slot };
            match seq.next_element_seed(OptionVisitor(ctx)) {
                Ok(Some(Some(option))) => out.push(option),
                Ok(Some(None)) => return Err(slot.fail(&path, "expected an object, found null")),
                Ok(None) => return Ok(Some(out)),
                Err(e) => return Err(slot.note(&path, e)),
            }
        }
    }
}

struct OptionVisitor<'p>(Ctx<'p>);
impl_refuse!(OptionVisitor, "an object");
seed_via_any!(OptionVisitor);

impl<'de> Visitor<'de> for OptionVisitor<'_> {
    type Value = Option<AttemptOption<'de>>;
    refuse_other_kinds!("an object");
    refuse_arrays!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.0.slot;
        let mut o = AttemptOption::default();
        for_each_field(&mut map, self.0, |map, field: OptionField, path| {
            match field {
                OptionField::Id => o.id = leaf(map, slot, path, to_str)?,
                OptionField::Checked => o.checked = leaf(map, slot, path, to_bool)?,
                OptionField::Correct => {
                    o.correct = leaf(map, slot, path, to_bool)?.unwrap_or(false);
                }
                OptionField::At => o.answered_at_us = leaf(map, slot, path, to_timestamp_us)?,
                OptionField::Submitted => o.submitted = leaf(map, slot, path, to_flag)?,
            }
            Ok(())
        })?;
        Ok(Some(o))
    }
}

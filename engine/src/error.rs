//! The engine's one error type family: every variant says what is wrong and where.

use thiserror::Error;

/// A question bank that failed validation: which file, which question, what is wrong.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{file}{}: {message}", location(*.index, *.line, *.column))]
pub struct BankError {
    pub file: String,
    /// Index (0-based) of the offending question, when the problem is in one question.
    pub index: Option<usize>,
    /// Line and column (1-based) for JSON syntax errors.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(index: Option<usize>, line: Option<usize>, column: Option<usize>) -> String {
    match (index, line, column) {
        (Some(i), _, _) => format!(", question {i}"),
        (None, Some(l), Some(c)) => format!(", line {l}, column {c}"),
        _ => String::new(),
    }
}

/// Why a submission could not be scored.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ScoringError {
    #[error("expected {expected} answers (one per question, in order), got {got}")]
    WrongAnswerCount { expected: usize, got: usize },
    #[error("answer {index}: {answer:?} is not one of the question's options")]
    UnknownOption { index: usize, answer: String },
    #[error(
        "answer {index}: option index {option} is out of range (the question has {options} options)"
    )]
    OptionOutOfRange {
        index: usize,
        option: usize,
        options: usize,
    },
}

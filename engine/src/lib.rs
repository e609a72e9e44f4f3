//! examflow's pure core: question banks, scoring and score cards (and, later,
//! psychometrics and adaptive selection). No I/O, no async runtime: every function here
//! is a deterministic computation that the `ingest` and `api` crates call.

pub mod bank;
pub mod cat;
pub mod ctt;
pub mod dif;
pub mod error;
pub mod irt;
pub mod quiz_statistics;
pub mod score_card;
pub mod scoring;

pub use bank::{Bank, Item};
pub use error::{BankError, ScoringError};
pub use scoring::{AnswerChoice, Outcome, QuestionMark, ScoredSubmission};

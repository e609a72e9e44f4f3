//! Fixed-form scoring with the original exam generator's rules.
//!
//! `score` = number correct; `percentage` = floor(100·score/N) in integer arithmetic (the
//! original used `int(score / n * 100)`, which floating point can round down one too far,
//! e.g. 29/100); `result` = "passed" when percentage ≥ 50.

use serde::{Deserialize, Serialize};

use crate::bank::Bank;
use crate::error::ScoringError;

/// Percentage at or above which a fixed-form exam is passed.
pub const PASS_PERCENTAGE: u32 = 50;

/// One answer as a client sends it: the option's text, or its 0-based index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnswerChoice {
    Index(usize),
    Text(String),
}

/// Pass or fail, spelled as stored in result documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
        }
    }
}

/// Per-question mark, in the seed's document shape plus the item id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionMark {
    pub question: String,
    pub user_answer: String,
    pub correct_answer: String,
    pub is_correct: bool,
    /// Stable item id (an addition to the seed's shape, for item statistics).
    pub item: String,
}

/// The scored submission, before it gets an id, an email and a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoredSubmission {
    pub exam: String,
    pub score: u32,
    pub total: u32,
    pub percentage: u32,
    pub result: Outcome,
    pub details: Vec<QuestionMark>,
}

/// Integer floor of 100·score/total (0 for an empty test).
pub fn percentage(score: u32, total: u32) -> u32 {
    if total == 0 {
        0
    } else {
        ((100 * u64::from(score)) / u64::from(total)) as u32
    }
}

/// Scores one answer per question, in order.
pub fn score_submission(
    bank: &Bank,
    answers: &[AnswerChoice],
) -> Result<ScoredSubmission, ScoringError> {
    let answers: Vec<Option<AnswerChoice>> = answers.iter().cloned().map(Some).collect();
    score_answers(bank, &answers)
}

/// Scores answers that may be missing (a saved attempt submitted by the student or at its
/// deadline): an unanswered question is wrong and its `user_answer` is empty. Otherwise the
/// same rules as [`score_submission`].
pub fn score_answers(
    bank: &Bank,
    answers: &[Option<AnswerChoice>],
) -> Result<ScoredSubmission, ScoringError> {
    if answers.len() != bank.items.len() {
        return Err(ScoringError::WrongAnswerCount {
            expected: bank.items.len(),
            got: answers.len(),
        });
    }
    let mut details = Vec::with_capacity(answers.len());
    for (index, (item, answer)) in bank.items.iter().zip(answers).enumerate() {
        let Some(answer) = answer else {
            details.push(QuestionMark {
                question: item.question.clone(),
                user_answer: String::new(),
                correct_answer: item.correct_answer.clone(),
                is_correct: false,
                item: item.id.clone(),
            });
            continue;
        };
        let user_answer = match answer {
            AnswerChoice::Text(text) => {
                item.options.iter().find(|o| *o == text).ok_or_else(|| {
                    ScoringError::UnknownOption {
                        index,
                        answer: text.clone(),
                    }
                })?
            }
            AnswerChoice::Index(option) => {
                item.options
                    .get(*option)
                    .ok_or(ScoringError::OptionOutOfRange {
                        index,
                        option: *option,
                        options: item.options.len(),
                    })?
            }
        };
        details.push(QuestionMark {
            question: item.question.clone(),
            user_answer: user_answer.clone(),
            correct_answer: item.correct_answer.clone(),
            is_correct: *user_answer == item.correct_answer,
            item: item.id.clone(),
        });
    }
    let score = details.iter().filter(|d| d.is_correct).count() as u32;
    let total = details.len() as u32;
    let percentage = percentage(score, total);
    let result = if percentage >= PASS_PERCENTAGE {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    Ok(ScoredSubmission {
        exam: bank.name.clone(),
        score,
        total,
        percentage,
        result,
        details,
    })
}

/// The results-page sentence of the original page, e.g. "You scored 3/4. That's 75%. You passed."
pub fn summary_sentence(score: u32, total: u32, percentage: u32, result: Outcome) -> String {
    format!(
        "You scored {score}/{total}. That's {percentage}%. You {}.",
        result.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanswered_questions_count_as_wrong() {
        let bank = Bank::parse(
            "t",
            "t.json",
            br#"[{"question":"a?","options":["x","y"],"correct_answer":"x"},
                {"question":"b?","options":["x","y"],"correct_answer":"y"}]"#,
        )
        .unwrap();
        let scored = score_answers(&bank, &[None, Some(AnswerChoice::Text("y".into()))]).unwrap();
        assert_eq!((scored.score, scored.total), (1, 2));
        assert_eq!(scored.details[0].user_answer, "");
        assert!(!scored.details[0].is_correct);
        let none = score_answers(&bank, &[None, None]).unwrap();
        assert_eq!(none.score, 0);
        assert!(score_answers(&bank, &[None]).is_err());
        assert!(score_answers(&bank, &[None, Some(AnswerChoice::Index(5))]).is_err());
    }

    fn bank(n: usize) -> Bank {
        let json: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"question": format!("Q{i}"), "options": ["right", "wrong"], "correct_answer": "right"})
            })
            .collect();
        Bank::parse(
            "t",
            "t.json",
            serde_json::to_string(&json).unwrap().as_bytes(),
        )
        .unwrap()
    }

    fn answers(right: usize, n: usize) -> Vec<AnswerChoice> {
        (0..n)
            .map(|i| AnswerChoice::Text(if i < right { "right" } else { "wrong" }.into()))
            .collect()
    }

    #[test]
    fn percentage_is_integer_floor() {
        assert_eq!(percentage(29, 100), 29); // int(29/100*100) would give 28
        assert_eq!(percentage(1, 3), 33);
        assert_eq!(percentage(2, 3), 66);
        assert_eq!(percentage(3, 3), 100);
        assert_eq!(percentage(0, 0), 0);
    }

    #[test]
    fn pass_threshold_is_fifty_percent_inclusive() {
        let b = bank(4);
        let s = score_submission(&b, &answers(2, 4)).unwrap();
        assert_eq!((s.score, s.percentage, s.result), (2, 50, Outcome::Passed));
        let b = bank(3);
        let s = score_submission(&b, &answers(1, 3)).unwrap();
        assert_eq!((s.score, s.percentage, s.result), (1, 33, Outcome::Failed));
        let b = bank(101);
        let s = score_submission(&b, &answers(50, 101)).unwrap();
        assert_eq!((s.percentage, s.result), (49, Outcome::Failed));
    }

    #[test]
    fn details_follow_the_seed_shape() {
        let b = bank(2);
        let s = score_submission(&b, &[AnswerChoice::Index(1), AnswerChoice::Index(0)]).unwrap();
        assert_eq!(s.details[0].user_answer, "wrong");
        assert!(!s.details[0].is_correct);
        assert!(s.details[1].is_correct);
        assert_eq!(s.details[1].correct_answer, "right");
        assert_eq!(s.details[1].item, b.items[1].id);
        assert_eq!(
            summary_sentence(s.score, s.total, s.percentage, s.result),
            "You scored 1/2. That's 50%. You passed."
        );
    }

    #[test]
    fn bad_answers_are_rejected_precisely() {
        let b = bank(2);
        assert_eq!(
            score_submission(&b, &answers(1, 3)).unwrap_err(),
            ScoringError::WrongAnswerCount {
                expected: 2,
                got: 3
            }
        );
        let bad = vec![
            AnswerChoice::Text("right".into()),
            AnswerChoice::Text("nope".into()),
        ];
        assert!(matches!(
            score_submission(&b, &bad).unwrap_err(),
            ScoringError::UnknownOption { index: 1, .. }
        ));
        let bad = vec![AnswerChoice::Index(2), AnswerChoice::Index(0)];
        assert!(matches!(
            score_submission(&b, &bad).unwrap_err(),
            ScoringError::OptionOutOfRange {
                index: 0,
                option: 2,
                options: 2
            }
        ));
    }

    #[test]
    fn answers_deserialize_from_text_or_index() {
        let v: Vec<AnswerChoice> = serde_json::from_str(r#"["a", 2]"#).unwrap();
        assert_eq!(
            v,
            vec![AnswerChoice::Text("a".into()), AnswerChoice::Index(2)]
        );
    }
}

//! Moodle's quiz statistics report ("Quiz statistics calculations",
//! <https://docs.moodle.org/dev/Quiz_statistics_calculations>), as Moodle's code computes it:
//! `question/classes/statistics/questions/calculator.php` (question statistics) and
//! `mod/quiz/report/statistics/classes/calculator.php` (test statistics), with the scales of
//! `mod/quiz/report/statistics/statistics_table.php` and `classes/calculated.php`.
//!
//! Input: one row per attempt, one mark per question (`None` = not answered, counted as a
//! mark of 0: Moodle's latest step of an unanswered question has a null fraction, which
//! its sums and its SQL `sumgrades` add as 0, and the attempt still counts for that
//! question). Each attempt is treated as independent (choosing first / last / highest
//! attempts is the caller's business, as in Moodle's "which attempts" setting).
//!
//! Notation: S attempts, P questions, `xᵢ` the marks on question i, `T = Σᵢ xᵢ` the attempt's
//! score, `Xᵢ = T − xᵢ` the rest of the test, `T(max) = Σᵢ xᵢ(max)` the quiz's sum of marks.
//! `V` and `C` are sample variance and covariance (S − 1 denominator).
//!
//! Question statistics (every percentage is ×100, as Moodle displays them):
//! * facility `F = 100 · mean(xᵢ) / xᵢ(max)`;
//! * standard deviation `SD = 100 · √V(xᵢ) / xᵢ(max)` (percent of the maximum mark);
//! * random guess score `100 · g` for the caller's expected fraction `g`;
//! * intended weight `IW = 100 · xᵢ(max) / T(max)`;
//! * effective weight `EW = 100 · √C(xᵢ, T) / Σⱼ √C(xⱼ, T)`. **Negative covariance rule**
//!   (Moodle's code): a question with `C(xᵢ, T) < 0` has no effective weight (null, and
//!   `negative_covariance` is set: Moodle's "Negative covariance!" flag) and is left out of
//!   the sum in the denominator, so the other weights still add up to 100%. When that sum
//!   is 0 (e.g. fewer than two attempts) every effective weight is null;
//! * discrimination index `DI = 100 · r(xᵢ, Xᵢ) = 100 · C(xᵢ, Xᵢ) / √(V(xᵢ) V(Xᵢ))`, null
//!   when either variance is 0;
//! * discriminative efficiency `DE = 100 · C(xᵢ, Xᵢ) / C_max(xᵢ, Xᵢ)`, where `C_max` pairs
//!   the two lists each sorted ascending (the largest covariance two variables with these
//!   marginal distributions can have); null when `C_max` is 0.
//!
//! Test statistics, on the scale of the quiz's sum of marks (Moodle stores them so and
//! displays mean, median, SD and SE as a percentage of `T(max)`, which
//! [`TestStatistics::max_score`] allows):
//! * mean; median (middle score, or the mean of the two middle ones);
//! * `SD = √V(T)` (S > 1);
//! * with `m_r = Σ (T − mean)^r / S`: `k2 = S m2 / (S − 1)`,
//!   `k3 = S² m3 / ((S − 1)(S − 2))`,
//!   `k4 = S² ((S + 1) m4 − 3 (S − 1) m2²) / ((S − 1)(S − 2)(S − 3))`;
//!   skewness `k3 / k2^{3/2}` (S > 2), kurtosis (excess) `k4 / k2²` (S > 3);
//! * coefficient of internal consistency `CIC = 100 · P/(P − 1) · (1 − Σᵢ V(xᵢ) / k2)`
//!   (Cronbach's alpha in percent; P > 1);
//! * error ratio `ER = 100 · √(1 − CIC/100)`; standard error `SE = ER · SD / 100`.
//!
//! Like Moodle, skewness, kurtosis, CIC, ER and SE are all null when `k2 = 0`, and CIC, ER
//! and SE also need S > 2 (Moodle computes them inside its skewness branch).
//!
//! Undefined statistics are NaN, serialised as `null` (as in [`crate::ctt`]).
//!
//! Where Moodle's docs page and its code differ, this module follows the code (it is what
//! Moodle users see):
//! * the docs state F and SD relative to the question's possible range
//!   `x(max) − x(min)` (so that negative or CBM marks are handled); the code divides by the
//!   maximum mark only, i.e. takes `x(min) = 0`;
//! * the docs' effective weight sums `√C(xⱼ, T)` over every question, undefined for a
//!   negative covariance; the code applies the rule above;
//! * CIC, ER and SE need only two attempts by the docs' formulas; the code requires three.
//!
//! Not covered: random-question pools and their sub-questions, per-variant breakdowns,
//! response analysis, choosing which attempts count, and the rounding of marks to the
//! precision of Moodle's database columns.

use serde::Serialize;
use thiserror::Error;

use crate::ctt::{correlation, covariance, summarize};

/// One question (quiz slot) of the quiz, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct QuizQuestion {
    pub id: String,
    /// The question's maximum mark in this quiz.
    pub max_mark: f64,
    /// Expected fraction (0–1) of the mark from a random guess, which depends on the
    /// question type (e.g. 1/n for single-answer multiple choice with n options); `None`
    /// when the type has none (Moodle shows an empty cell).
    pub random_guess_score: Option<f64>,
}

/// Moodle's statistics of one question. Percentages are 0–100; NaN (`null`) when undefined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuestionStatistics {
    pub question: String,
    pub max_mark: f64,
    /// Facility index F (%): mean mark / max mark.
    pub facility: f64,
    /// Standard deviation (% of the max mark), n − 1 denominator.
    pub sd: f64,
    /// Random guess score (%).
    pub random_guess_score: f64,
    /// Intended weight (%): max mark / quiz's sum of marks.
    pub intended_weight: f64,
    /// Effective weight (%); null for a question with negative covariance.
    pub effective_weight: f64,
    /// `C(xᵢ, T) < 0`: the question's mark goes down as the test score goes up.
    pub negative_covariance: bool,
    /// Discrimination index (%): correlation with the rest of the test.
    pub discrimination_index: f64,
    /// Discriminative efficiency (%): covariance with the rest of the test over its maximum.
    pub discriminative_efficiency: f64,
}

/// Moodle's test statistics. Scores are on the quiz's sum of marks (`max_score`), not in %.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestStatistics {
    pub n_attempts: usize,
    /// The quiz's sum of marks `T(max)`: divide mean, median, sd and standard_error by it
    /// (×100) to get the percentages Moodle displays.
    pub max_score: f64,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (n − 1).
    pub sd: f64,
    pub skewness: f64,
    /// Excess kurtosis (0 for a normal distribution).
    pub kurtosis: f64,
    /// Coefficient of internal consistency (%), Cronbach's alpha × 100.
    pub cic: f64,
    /// Error ratio (%).
    pub error_ratio: f64,
    /// Standard error of measurement of the score (same scale as `mean`).
    pub standard_error: f64,
}

/// The whole report: test statistics and one row per question, in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuizStatistics {
    pub test: TestStatistics,
    pub questions: Vec<QuestionStatistics>,
}

/// Why the marks could not be analysed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum QuizStatisticsError {
    #[error("attempt {attempt}: {got} marks for {expected} questions")]
    WrongMarkCount {
        attempt: usize,
        expected: usize,
        got: usize,
    },
    #[error("attempt {attempt}, question {question}: mark {mark} is not a finite number")]
    InvalidMark {
        attempt: usize,
        question: usize,
        mark: f64,
    },
    #[error("question {question}: maximum mark {max_mark} is not a finite number ≥ 0")]
    InvalidMaxMark { question: usize, max_mark: f64 },
    #[error("question {question}: random guess score {score} is not a fraction in [0, 1]")]
    InvalidRandomGuessScore { question: usize, score: f64 },
}

/// Moodle's quiz statistics of `marks[attempt][question]` (`None` = not answered, mark 0)
/// for `questions` (see the module docs for every formula and scale).
pub fn quiz_statistics(
    questions: &[QuizQuestion],
    marks: &[Vec<Option<f64>>],
) -> Result<QuizStatistics, QuizStatisticsError> {
    validate(questions, marks)?;
    let p = questions.len();
    let s = marks.len();
    // Column i: the marks x_i of every attempt; T: the attempt scores.
    let cols: Vec<Vec<f64>> = (0..p)
        .map(|i| marks.iter().map(|row| row[i].unwrap_or(0.0)).collect())
        .collect();
    let totals: Vec<f64> = (0..s).map(|a| cols.iter().map(|c| c[a]).sum()).collect();
    let max_score: f64 = questions.iter().map(|q| q.max_mark).sum();

    // V(x_i) = C(x_i, x_i): NaN for fewer than two attempts.
    let mark_variance: Vec<f64> = cols.iter().map(|c| covariance(c, c)).collect();
    let cov_with_total: Vec<f64> = cols.iter().map(|c| covariance(c, &totals)).collect();
    let negative: Vec<bool> = cov_with_total.iter().map(|&c| c < 0.0).collect();
    // Σ √C(x_j, T) over the questions with a non-negative covariance (NaN ones add 0).
    let sum_sqrt_cov: f64 = cov_with_total
        .iter()
        .filter(|c| **c >= 0.0)
        .map(|c| c.sqrt())
        .sum();

    let question_stats = questions
        .iter()
        .zip(&cols)
        .enumerate()
        .map(|(i, (q, x))| {
            let rest: Vec<f64> = totals.iter().zip(x).map(|(t, xi)| t - xi).collect();
            let per_max = |v: f64| {
                if q.max_mark == 0.0 {
                    f64::NAN
                } else {
                    100.0 * v / q.max_mark
                }
            };
            let mean_mark = if s == 0 {
                f64::NAN
            } else {
                x.iter().sum::<f64>() / s as f64
            };
            let cov_max = max_covariance(x, &rest);
            QuestionStatistics {
                question: q.id.clone(),
                max_mark: q.max_mark,
                facility: per_max(mean_mark),
                sd: per_max(mark_variance[i].sqrt()),
                random_guess_score: q.random_guess_score.map_or(f64::NAN, |g| 100.0 * g),
                intended_weight: if max_score == 0.0 {
                    f64::NAN
                } else {
                    100.0 * q.max_mark / max_score
                },
                effective_weight: if sum_sqrt_cov > 0.0 && !negative[i] {
                    100.0 * cov_with_total[i].sqrt() / sum_sqrt_cov
                } else {
                    f64::NAN
                },
                negative_covariance: negative[i],
                discrimination_index: 100.0 * correlation(x, &rest),
                discriminative_efficiency: if cov_max > 0.0 {
                    100.0 * covariance(x, &rest) / cov_max
                } else {
                    f64::NAN
                },
            }
        })
        .collect();

    Ok(QuizStatistics {
        test: test_statistics(&totals, max_score, mark_variance.iter().sum(), p),
        questions: question_stats,
    })
}

fn validate(
    questions: &[QuizQuestion],
    marks: &[Vec<Option<f64>>],
) -> Result<(), QuizStatisticsError> {
    for (question, q) in questions.iter().enumerate() {
        if !q.max_mark.is_finite() || q.max_mark < 0.0 {
            return Err(QuizStatisticsError::InvalidMaxMark {
                question,
                max_mark: q.max_mark,
            });
        }
        if let Some(score) = q.random_guess_score
            && !(0.0..=1.0).contains(&score)
        {
            return Err(QuizStatisticsError::InvalidRandomGuessScore { question, score });
        }
    }
    for (attempt, row) in marks.iter().enumerate() {
        if row.len() != questions.len() {
            return Err(QuizStatisticsError::WrongMarkCount {
                attempt,
                expected: questions.len(),
                got: row.len(),
            });
        }
        for (question, mark) in row.iter().enumerate() {
            if let Some(mark) = *mark
                && !mark.is_finite()
            {
                return Err(QuizStatisticsError::InvalidMark {
                    attempt,
                    question,
                    mark,
                });
            }
        }
    }
    Ok(())
}

/// `C_max(x, y)`: the covariance (S − 1) of x and y each sorted ascending, i.e. the largest
/// covariance any pairing of these two sets of values can have. NaN for S < 2.
fn max_covariance(x: &[f64], y: &[f64]) -> f64 {
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    covariance(&xs, &ys)
}

/// Test statistics of the attempt scores (see the module docs).
fn test_statistics(
    totals: &[f64],
    max_score: f64,
    sum_mark_variance: f64,
    p: usize,
) -> TestStatistics {
    let summary = summarize(totals);
    let mut t = TestStatistics {
        n_attempts: totals.len(),
        max_score,
        mean: summary.mean,
        median: summary.median,
        sd: summary.sd,
        skewness: f64::NAN,
        kurtosis: f64::NAN,
        cic: f64::NAN,
        error_ratio: f64::NAN,
        standard_error: f64::NAN,
    };
    let s = totals.len() as f64;
    if totals.len() <= 2 {
        return t;
    }
    let moment = |r: i32| totals.iter().map(|v| (v - t.mean).powi(r)).sum::<f64>() / s;
    let (m2, m3, m4) = (moment(2), moment(3), moment(4));
    let k2 = s * m2 / (s - 1.0);
    if k2 == 0.0 {
        return t;
    }
    let k3 = s * s * m3 / ((s - 1.0) * (s - 2.0));
    t.skewness = k3 / k2.powf(1.5);
    if totals.len() > 3 {
        let k4 = s * s * ((s + 1.0) * m4 - 3.0 * (s - 1.0) * m2 * m2)
            / ((s - 1.0) * (s - 2.0) * (s - 3.0));
        t.kurtosis = k4 / (k2 * k2);
    }
    if p > 1 {
        let p = p as f64;
        t.cic = 100.0 * p / (p - 1.0) * (1.0 - sum_mark_variance / k2);
        t.error_ratio = 100.0 * (1.0 - t.cic / 100.0).sqrt();
        t.standard_error = t.error_ratio * t.sd / 100.0;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, what: &str) {
        assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
    }

    fn q(id: &str, max_mark: f64, guess: Option<f64>) -> QuizQuestion {
        QuizQuestion {
            id: id.into(),
            max_mark,
            random_guess_score: guess,
        }
    }

    /// 5 attempts × 3 questions, every number worked by hand below.
    #[test]
    fn hand_computed_example() {
        // Q1: max 1, 4-option multiple choice (guess 1/4); Q2: max 2, no guess score;
        // Q3: max 1, true/false (guess 1/2). Attempt E left Q2 unanswered (= 0).
        let questions = [
            q("Q1", 1.0, Some(0.25)),
            q("Q2", 2.0, None),
            q("Q3", 1.0, Some(0.5)),
        ];
        let marks = vec![
            vec![Some(1.0), Some(2.0), Some(1.0)], // A: T = 4
            vec![Some(1.0), Some(1.5), Some(0.0)], // B: T = 2.5
            vec![Some(0.0), Some(1.0), Some(1.0)], // C: T = 2
            vec![Some(1.0), Some(0.5), Some(1.0)], // D: T = 2.5
            vec![Some(0.0), None, Some(0.0)],      // E: T = 0
        ];
        let r = quiz_statistics(&questions, &marks).unwrap();
        let t = &r.test;

        // ---- Question marks (S = 5, variances and covariances divide by S − 1 = 4) ----
        // x1 = 1, 1, 0, 1, 0     mean 0.6  dev .4, .4, −.6, .4, −.6    SS 1.2  V 0.3
        // x2 = 2, 1.5, 1, .5, 0  mean 1.0  dev 1, .5, 0, −.5, −1       SS 2.5  V 0.625
        // x3 = 1, 0, 1, 1, 0     mean 0.6  dev .4, −.6, .4, .4, −.6    SS 1.2  V 0.3
        // T  = 4, 2.5, 2, 2.5, 0 mean 2.2  dev 1.8, .3, −.2, .3, −2.2  SS 8.3  V 2.075
        //
        // ---- Test statistics ----
        // T(max) = 1 + 2 + 1 = 4; mean 11/5 = 2.2; sorted T 0, 2, 2.5, 2.5, 4 → median 2.5.
        assert_eq!(t.n_attempts, 5);
        close(t.max_score, 4.0, "max score");
        close(t.mean, 2.2, "mean");
        close(t.median, 2.5, "median");
        close(t.sd, 2.075f64.sqrt(), "sd"); // 1.44048602...
        // Σd² = 3.24 + .09 + .04 + .09 + 4.84 = 8.3        m2 = 1.66
        // Σd³ = 5.832 + .027 − .008 + .027 − 10.648 = −4.77 m3 = −0.954
        // Σd⁴ = 10.4976 + .0081 + .0016 + .0081 + 23.4256 = 33.941  m4 = 6.7882
        // k2 = 5·1.66/4 = 2.075
        // k3 = 25·(−0.954)/(4·3) = −23.85/12 = −1.9875
        // skewness = −1.9875 / 2.075^1.5 = −1.9875 / 2.98900... = −0.664936...
        close(t.skewness, -1.9875 / (2.075 * 2.075f64.sqrt()), "skewness");
        // k4 = 25·(6·6.7882 − 3·4·1.66²)/(4·3·2) = 25·(40.7292 − 33.0672)/24
        //    = 25·7.662/24 = 7.98125
        // kurtosis = 7.98125 / 2.075² = 7.98125 / 4.305625 = 1.853680...
        close(t.kurtosis, 7.98125 / 4.305625, "kurtosis");
        // Σ V(xᵢ) = 0.3 + 0.625 + 0.3 = 1.225
        // CIC = 100·3/2·(1 − 1.225/2.075) = 150·0.85/2.075 = 61.445783...%
        close(t.cic, 127.5 / 2.075, "cic");
        // ER = 100·√(1 − 0.61445783) = 100·√(0.8/2.075) = 62.0920...%
        close(
            t.error_ratio,
            100.0 * (0.8f64 / 2.075).sqrt(),
            "error ratio",
        );
        // SE = ER/100 · SD = √(0.8/2.075)·√2.075 = √0.8 = 0.894427...
        close(t.standard_error, 0.8f64.sqrt(), "standard error");

        // ---- Question statistics ----
        let [q1, q2, q3] = [&r.questions[0], &r.questions[1], &r.questions[2]];
        // Facility: 0.6/1, 1.0/2, 0.6/1.
        close(q1.facility, 60.0, "F1");
        close(q2.facility, 50.0, "F2");
        close(q3.facility, 60.0, "F3");
        // SD (% of max): √0.3 = 54.77%, √0.625/2 = 39.53%, √0.3 = 54.77%.
        close(q1.sd, 100.0 * 0.3f64.sqrt(), "SD1");
        close(q2.sd, 50.0 * 0.625f64.sqrt(), "SD2");
        close(q3.sd, 100.0 * 0.3f64.sqrt(), "SD3");
        close(q1.random_guess_score, 25.0, "RGS1");
        assert!(q2.random_guess_score.is_nan());
        close(q3.random_guess_score, 50.0, "RGS3");
        // Intended weight: 1/4, 2/4, 1/4.
        close(q1.intended_weight, 25.0, "IW1");
        close(q2.intended_weight, 50.0, "IW2");
        close(q3.intended_weight, 25.0, "IW3");

        // Covariance with T (Σ dev·devT / 4):
        // C1 = (.72 + .12 + .12 + .12 + 1.32)/4 = 2.4/4 = 0.6
        // C2 = (1.8 + .15 + 0 − .15 + 2.2)/4   = 4.0/4 = 1.0
        // C3 = (.72 − .18 − .08 + .12 + 1.32)/4 = 1.9/4 = 0.475
        // (check: 0.6 + 1.0 + 0.475 = 2.075 = V(T))
        // Σ√C = 0.7745967 + 1 + 0.6892024 = 2.4637991
        // EW = 31.439%, 40.588%, 27.973%
        let sum = 0.6f64.sqrt() + 1.0 + 0.475f64.sqrt();
        close(q1.effective_weight, 100.0 * 0.6f64.sqrt() / sum, "EW1");
        close(q2.effective_weight, 100.0 / sum, "EW2");
        close(q3.effective_weight, 100.0 * 0.475f64.sqrt() / sum, "EW3");
        assert!(!q1.negative_covariance && !q2.negative_covariance && !q3.negative_covariance);

        // Rest of test Xᵢ = T − xᵢ:
        // X1 = 3, 1.5, 2, 1.5, 0  mean 1.6  dev 1.4, −.1, .4, −.1, −1.6  SS 4.7  V 1.175
        // C(x1, X1) = (.56 − .04 − .24 − .04 + .96)/4 = 1.2/4 = 0.3   (= C1 − V1 = 0.6 − 0.3)
        // DI1 = 100·0.3/√(0.3·1.175) = 100·√(0.3/1.175) = 50.529...%
        // sorted x1 = 0, 0, 1, 1, 1 (dev −.6, −.6, .4, .4, .4);
        // sorted X1 = 0, 1.5, 1.5, 2, 3 (dev −1.6, −.1, −.1, .4, 1.4)
        // C_max = (.96 + .06 − .04 + .16 + .56)/4 = 1.7/4 = 0.425
        // DE1 = 100·0.3/0.425 = 70.588...%
        close(
            q1.discrimination_index,
            100.0 * (0.3f64 / 1.175).sqrt(),
            "DI1",
        );
        close(q1.discriminative_efficiency, 30.0 / 0.425, "DE1");
        // X2 = 2, 1, 1, 2, 0  mean 1.2  dev .8, −.2, −.2, .8, −1.2  SS 2.8  V 0.7
        // C(x2, X2) = (.8 − .1 + 0 − .4 + 1.2)/4 = 1.5/4 = 0.375     (= 1.0 − 0.625)
        // DI2 = 37.5/√(0.625·0.7) = 37.5/√0.4375 = 56.6947...%
        // sorted x2 dev −1, −.5, 0, .5, 1; sorted X2 = 0, 1, 1, 2, 2 dev −1.2, −.2, −.2, .8, .8
        // C_max = (1.2 + .1 + 0 + .4 + .8)/4 = 2.5/4 = 0.625 → DE2 = 37.5/0.625 = 60%
        close(q2.discrimination_index, 37.5 / 0.4375f64.sqrt(), "DI2");
        close(q2.discriminative_efficiency, 60.0, "DE2");
        // X3 = 3, 2.5, 1, 1.5, 0  mean 1.6  dev 1.4, .9, −.6, −.1, −1.6  SS 5.7  V 1.425
        // C(x3, X3) = (.56 − .54 − .24 − .04 + .96)/4 = 0.7/4 = 0.175  (= 0.475 − 0.3)
        // DI3 = 17.5/√(0.3·1.425) = 17.5/√0.4275 = 26.765...%
        // sorted x3 dev −.6, −.6, .4, .4, .4; sorted X3 = 0, 1, 1.5, 2.5, 3
        // dev −1.6, −.6, −.1, .9, 1.4; C_max = (.96 + .36 − .04 + .36 + .56)/4 = 2.2/4 = 0.55
        // DE3 = 17.5/0.55 = 31.818...%
        close(q3.discrimination_index, 17.5 / 0.4275f64.sqrt(), "DI3");
        close(q3.discriminative_efficiency, 17.5 / 0.55, "DE3");

        // Undefined values serialise as null.
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["questions"][1]["random_guess_score"].is_null());
        assert_eq!(json["questions"][0]["facility"], 60.0);
    }

    /// A question answered by the weaker attempts: negative covariance with the total.
    #[test]
    fn negative_covariance() {
        let questions = [q("a", 1.0, None), q("b", 1.0, None), q("c", 1.0, None)];
        let marks = vec![
            vec![Some(1.0), Some(1.0), Some(0.0)], // T = 2
            vec![Some(1.0), Some(1.0), Some(0.0)], // T = 2
            vec![Some(0.0), Some(0.0), Some(1.0)], // T = 1
            vec![Some(0.0), Some(0.0), Some(1.0)], // T = 1
        ];
        let r = quiz_statistics(&questions, &marks).unwrap();
        // T mean 1.5, dev .5, .5, −.5, −.5, V(T) = 1/3; each xᵢ has V = 1/3.
        // C(a, T) = C(b, T) = (4·.25)/3 = 1/3; C(c, T) = −1/3 < 0.
        // Moodle: c gets no effective weight and leaves the sum: Σ√C = 2·√(1/3),
        // so a and b get 50% each.
        let [a, b, c] = [&r.questions[0], &r.questions[1], &r.questions[2]];
        assert!(c.negative_covariance && !a.negative_covariance);
        assert!(c.effective_weight.is_nan());
        close(a.effective_weight, 50.0, "EWa");
        close(b.effective_weight, 50.0, "EWb");
        // c against its rest X = 2, 2, 0, 0: perfectly reversed. C(c, X) = −2/3,
        // C_max (both sorted: 0,0,1,1 with 0,0,2,2) = +2/3 → DI = DE = −100%.
        close(c.discrimination_index, -100.0, "DIc");
        close(c.discriminative_efficiency, -100.0, "DEc");
        // a against its rest (1, 1, 1, 1) = constant → DI and DE undefined.
        assert!(a.discrimination_index.is_nan() && a.discriminative_efficiency.is_nan());
        // Test: sorted T 1, 1, 2, 2 → median 1.5 (mean of the two middle scores).
        let t = &r.test;
        close(t.median, 1.5, "median");
        // Symmetric: m3 = 0 → skewness 0. m2 = .25, m2² = .0625, m4 = .0625,
        // k4 = 16·(5·.0625 − 3·3·.0625)/(3·2·1) = 16·(.3125 − .5625)/6 = −2/3;
        // k2 = 4·.25/3 = 1/3; kurtosis = (−2/3)/(1/3)² = −6.
        close(t.skewness, 0.0, "skewness");
        close(t.kurtosis, -6.0, "kurtosis");
        // CIC = 100·3/2·(1 − (3·1/3)/(1/3)) = 150·(−2) = −300%;
        // ER = 100·√(1 + 3) = 200%; SE = 2·SD = 2·√(1/3).
        close(t.cic, -300.0, "cic");
        close(t.error_ratio, 200.0, "error ratio");
        close(t.standard_error, 2.0 * (1.0f64 / 3.0).sqrt(), "se");
    }

    /// Everybody got full marks on one question: SD 0, no discrimination.
    #[test]
    fn question_everybody_got_right() {
        let questions = [q("easy", 2.0, None), q("x", 1.0, None), q("y", 1.0, None)];
        let marks = vec![
            vec![Some(2.0), Some(1.0), Some(1.0)],
            vec![Some(2.0), Some(1.0), Some(0.0)],
            vec![Some(2.0), Some(0.0), Some(0.0)],
        ];
        let r = quiz_statistics(&questions, &marks).unwrap();
        let easy = &r.questions[0];
        close(easy.facility, 100.0, "F");
        close(easy.sd, 0.0, "SD");
        assert!(easy.discrimination_index.is_nan());
        assert!(easy.discriminative_efficiency.is_nan());
        // C(easy, T) = 0 ≥ 0: Moodle gives it an effective weight of 0%, not null.
        close(easy.effective_weight, 0.0, "EW");
        assert!(!easy.negative_covariance);
        let json = serde_json::to_value(easy).unwrap();
        assert!(json["discrimination_index"].is_null());
        assert!(json["discriminative_efficiency"].is_null());
    }

    #[test]
    fn one_attempt() {
        let questions = [q("a", 1.0, Some(0.25)), q("b", 3.0, None)];
        let r = quiz_statistics(&questions, &[vec![Some(1.0), Some(1.5)]]).unwrap();
        let t = &r.test;
        assert_eq!(t.n_attempts, 1);
        close(t.mean, 2.5, "mean");
        close(t.median, 2.5, "median");
        for v in [
            t.sd,
            t.skewness,
            t.kurtosis,
            t.cic,
            t.error_ratio,
            t.standard_error,
        ] {
            assert!(v.is_nan());
        }
        let b = &r.questions[1];
        close(b.facility, 50.0, "F");
        close(b.intended_weight, 75.0, "IW");
        for v in [
            b.sd,
            b.effective_weight,
            b.discrimination_index,
            b.discriminative_efficiency,
        ] {
            assert!(v.is_nan());
        }
    }

    /// Moodle computes CIC, ER and SE only with more than two attempts.
    #[test]
    fn two_attempts_have_sd_but_no_cic() {
        let questions = [q("a", 1.0, None), q("b", 1.0, None)];
        let marks = vec![vec![Some(1.0), Some(1.0)], vec![Some(0.0), Some(0.0)]];
        let t = quiz_statistics(&questions, &marks).unwrap().test;
        close(t.sd, 2.0f64.sqrt(), "sd"); // T = 2, 0: V = 2
        assert!(t.skewness.is_nan() && t.cic.is_nan() && t.standard_error.is_nan());
    }

    #[test]
    fn zero_attempts() {
        let questions = [q("a", 1.0, Some(0.5)), q("b", 1.0, None)];
        let r = quiz_statistics(&questions, &[]).unwrap();
        assert_eq!(r.test.n_attempts, 0);
        assert!(r.test.mean.is_nan() && r.test.median.is_nan() && r.test.sd.is_nan());
        let a = &r.questions[0];
        assert!(a.facility.is_nan() && a.sd.is_nan() && a.effective_weight.is_nan());
        close(a.intended_weight, 50.0, "IW");
        close(a.random_guess_score, 50.0, "RGS");
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["test"]["mean"].is_null());
        assert!(json["questions"][0]["facility"].is_null());
    }

    #[test]
    fn rejects_bad_input() {
        let questions = [q("a", 1.0, None)];
        assert_eq!(
            quiz_statistics(&questions, &[vec![Some(1.0), Some(0.0)]]),
            Err(QuizStatisticsError::WrongMarkCount {
                attempt: 0,
                expected: 1,
                got: 2
            })
        );
        assert!(matches!(
            quiz_statistics(&questions, &[vec![Some(f64::NAN)]]),
            Err(QuizStatisticsError::InvalidMark { .. })
        ));
        assert!(matches!(
            quiz_statistics(&[q("a", -1.0, None)], &[]),
            Err(QuizStatisticsError::InvalidMaxMark { .. })
        ));
        assert!(matches!(
            quiz_statistics(&[q("a", 1.0, Some(1.5))], &[]),
            Err(QuizStatisticsError::InvalidRandomGuessScore { .. })
        ));
    }
}

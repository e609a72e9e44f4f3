//! The CAT session state machine.

use serde::{Deserialize, Serialize};

use super::CatError;
use super::bank::{CatBank, GRID_POINTS, NO_TOPIC, THETA_MAX, THETA_MIN};
use super::config::{CatConfig, ClassMethod, FirstItem, MleFallback};
use super::content::ContentIx;
use super::estimate::{Resp, ln_pq, point_estimate, posterior};
use super::rng::{CatRng, de_u64_hex, ser_u64_hex};
use super::select::{SelectCtx, choose, scores};

/// Why the test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `stop.max_length` items were administered (also the end of a fixed-length test).
    MaxLength,
    /// SE ≤ `stop.se`.
    SeReached,
    /// The classification rule reached a decision.
    Classified,
    /// No eligible item was left (bank used up, disabled or closed by content limits).
    BankExhausted,
    /// The session's time ran out; it finished with the estimate it had.
    TimeLimit,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::MaxLength => "max_length",
            StopReason::SeReached => "se_reached",
            StopReason::Classified => "classified",
            StopReason::BankExhausted => "bank_exhausted",
            StopReason::TimeLimit => "time_limit",
        }
    }
}

/// Side of the cut score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Above,
    Below,
}

/// Classification outcome. `conclusive` is true when the rule decided (CI excludes the
/// cut, or SPRT crossed a bound); otherwise the decision is θ̂ ≥ cut (CI) or
/// log LR ≥ 0 (SPRT) at the end of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub cut: f64,
    pub decision: Side,
    pub conclusive: bool,
}

/// One administered item: the response and the estimate after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub item: String,
    pub correct: bool,
    pub theta: f64,
    pub se: f64,
}

/// Final result of a finished session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatResult {
    pub theta: f64,
    pub se: f64,
    pub items_used: usize,
    pub stop_reason: StopReason,
    pub classification: Option<Classification>,
}

/// Outcome of an answer. JSON: `{"status":"next","item":"q17"}` or
/// `{"status":"finished","theta":…,"se":…,"items_used":…,"stop_reason":"se_reached",
/// "classification":null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Step {
    Next {
        item: String,
    },
    Finished {
        theta: f64,
        se: f64,
        items_used: usize,
        stop_reason: StopReason,
        classification: Option<Classification>,
    },
}

impl From<&CatResult> for Step {
    fn from(r: &CatResult) -> Self {
        Step::Finished {
            theta: r.theta,
            se: r.se,
            items_used: r.items_used,
            stop_reason: r.stop_reason,
            classification: r.classification,
        }
    }
}

/// Derived state rebuilt from the persisted fields (not serialised: the stored state
/// stays small, which keeps the durable write of every answer short).
#[derive(Debug, Clone)]
struct Runtime {
    /// Log-likelihood of the answers at each grid node (updated in O(nodes) per answer;
    /// rebuilt from the trace in the same order, so bit for bit the same).
    loglik: Vec<f64>,
    /// Test information at each grid node.
    tinfo: Vec<f64>,
    fingerprint: u64,
    bank_len: usize,
    used: Vec<bool>,
    blocked_mask: Vec<bool>,
    blocked_idx: Vec<usize>,
    topic_counts: Vec<usize>,
    pending_idx: Option<usize>,
    answered: Vec<Resp>,
    administered: Vec<usize>,
    content: Option<ContentIx>,
    eligible: Vec<bool>,
    scores: Vec<f64>,
    /// Work space of the selection criteria (2 × bank length).
    scratch: Vec<f64>,
    post: Vec<f64>,
}

/// One examinee's adaptive test. Serialisable: persist it between requests (derived
/// look-up state is rebuilt on the next [`CatSession::answer`]; if the bank changed,
/// items are re-resolved by id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatSession {
    config: CatConfig,
    rng: CatRng,
    #[serde(serialize_with = "ser_u64_hex", deserialize_with = "de_u64_hex")]
    bank_fingerprint: u64,
    /// SPRT log likelihood ratio (0 without SPRT).
    sprt_llr: f64,
    theta: f64,
    se: f64,
    trace: Vec<TraceEntry>,
    pending: Option<String>,
    /// Items rejected by Sympson–Hetter for this examinee.
    blocked: Vec<String>,
    result: Option<CatResult>,
    #[serde(skip)]
    rt: Option<Runtime>,
}

impl CatSession {
    /// Validates `config` against `bank` and picks the first item.
    pub fn start(
        bank: &CatBank,
        config: &CatConfig,
        seed: u64,
    ) -> Result<(Self, String), CatError> {
        config.validate()?;
        let mut s = Self {
            config: config.clone(),
            rng: CatRng::new(seed),
            bank_fingerprint: bank.fingerprint(),
            sprt_llr: 0.0,
            theta: config.start.theta,
            se: config.prior.sd,
            trace: Vec::new(),
            pending: None,
            blocked: Vec::new(),
            result: None,
            rt: None,
        };
        // Also sets the posterior to the prior (no answers yet).
        s.ensure_runtime(bank)?;
        let first = match s.config.start.first_item {
            FirstItem::ByRule => s.select(bank),
            FirstItem::RandomMedium { k } => {
                s.fill_eligible(bank);
                let rt = s.rt.as_mut().expect("runtime");
                let t0 = s.config.start.theta;
                for (i, (sc, &e)) in rt.scores.iter_mut().zip(&rt.eligible).enumerate() {
                    *sc = if e {
                        -(bank.b[i] - t0).abs()
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                let top = super::select::top_k(&rt.scores, k);
                (!top.is_empty()).then(|| top[s.rng.below(top.len())])
            }
        };
        let Some(i) = first else {
            return Err(CatError::NoEligibleItem);
        };
        let id = bank.id(i).to_string();
        s.pending = Some(id.clone());
        s.rt.as_mut().expect("runtime").pending_idx = Some(i);
        Ok((s, id))
    }

    /// Records the answer to the pending item and returns the next item or the result.
    pub fn answer(
        &mut self,
        bank: &CatBank,
        item_id: &str,
        correct: bool,
    ) -> Result<Step, CatError> {
        if self.result.is_some() {
            return Err(CatError::Finished);
        }
        let Some(expected) = self.pending.as_deref() else {
            return Err(CatError::Corrupt("no pending item".into()));
        };
        if expected != item_id {
            return Err(CatError::WrongItem {
                expected: expected.to_string(),
                got: item_id.to_string(),
            });
        }
        self.ensure_runtime(bank)?;
        let rt = self.rt.as_mut().expect("runtime");
        let i = rt.pending_idx.expect("pending index");
        let (a, b, c) = (bank.a[i], bank.b[i], bank.c[i]);
        rt.record_answer(bank, i, correct);
        if let Some(cr) = &self.config.stop.classification
            && cr.method == ClassMethod::Sprt
        {
            let (p2, q2) = ln_pq(a, b, c, cr.cut + cr.delta);
            let (p1, q1) = ln_pq(a, b, c, cr.cut - cr.delta);
            self.sprt_llr += if correct { p2 - p1 } else { q2 - q1 };
        }
        rt.pending_idx = None;
        self.pending = None;

        // Estimate.
        let prior = self.config.prior;
        let eap = posterior(&rt.loglik, &prior, &mut rt.post);
        let est = match point_estimate(
            self.config.estimator,
            &rt.loglik,
            &rt.tinfo,
            &rt.answered,
            &prior,
            eap,
        ) {
            Some(e) => e,
            None => match self.config.mle_fallback {
                MleFallback::Eap => eap,
                MleFallback::StepSize { step } => {
                    let t = self.theta + if correct { step } else { -step };
                    super::Estimate {
                        theta: t.clamp(THETA_MIN, THETA_MAX),
                        se: eap.se,
                    }
                }
            },
        };
        self.theta = est.theta;
        self.se = est.se;
        self.trace.push(TraceEntry {
            item: bank.id(i).to_string(),
            correct,
            theta: est.theta,
            se: est.se,
        });

        // Stop?
        let n = self.trace.len();
        let stop = self.config.stop;
        let mut reason = None;
        if n >= stop.max_length {
            reason = Some(StopReason::MaxLength);
        } else if n >= stop.min_length && self.content_minimums_met(bank) {
            if self.classification().is_some_and(|c| c.conclusive) {
                reason = Some(StopReason::Classified);
            } else if stop.se.is_some_and(|t| self.se <= t) {
                reason = Some(StopReason::SeReached);
            }
        }
        if reason.is_none() {
            match self.select(bank) {
                Some(j) => {
                    let id = bank.id(j).to_string();
                    self.pending = Some(id.clone());
                    self.rt.as_mut().expect("runtime").pending_idx = Some(j);
                    return Ok(Step::Next { item: id });
                }
                None => reason = Some(StopReason::BankExhausted),
            }
        }
        let result = CatResult {
            theta: self.theta,
            se: self.se,
            items_used: n,
            stop_reason: reason.expect("reason"),
            classification: self.classification(),
        };
        let step = Step::from(&result);
        self.result = Some(result);
        Ok(step)
    }

    /// Ends the session now with the current estimate (its time ran out): the pending item
    /// stays unanswered and does not count.
    pub fn finish_now(&mut self, reason: StopReason) -> Result<Step, CatError> {
        if self.result.is_some() {
            return Err(CatError::Finished);
        }
        self.pending = None;
        if let Some(rt) = self.rt.as_mut() {
            rt.pending_idx = None;
        }
        let result = CatResult {
            theta: self.theta,
            se: self.se,
            items_used: self.trace.len(),
            stop_reason: reason,
            classification: self.classification(),
        };
        let step = Step::from(&result);
        self.result = Some(result);
        Ok(step)
    }

    /// The item awaiting an answer (None once finished).
    pub fn pending_item(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// Current θ estimate (θ₀ before the first answer).
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// Current SE (the prior SD before the first answer).
    pub fn se(&self) -> f64 {
        self.se
    }

    /// (item, response, θ, SE) after each answer.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    pub fn answered(&self) -> usize {
        self.trace.len()
    }

    pub fn is_finished(&self) -> bool {
        self.result.is_some()
    }

    pub fn result(&self) -> Option<&CatResult> {
        self.result.as_ref()
    }

    pub fn config(&self) -> &CatConfig {
        &self.config
    }

    /// Items rejected by Sympson–Hetter so far.
    pub fn blocked_items(&self) -> &[String] {
        &self.blocked
    }

    /// Current classification state (None without a classification rule).
    pub fn classification(&self) -> Option<Classification> {
        let cr = self.config.stop.classification?;
        let (decision, conclusive) = match cr.method {
            ClassMethod::Ci => {
                if self.theta - cr.z * self.se > cr.cut {
                    (Side::Above, true)
                } else if self.theta + cr.z * self.se < cr.cut {
                    (Side::Below, true)
                } else {
                    (side(self.theta >= cr.cut), false)
                }
            }
            ClassMethod::Sprt => {
                let upper = ((1.0 - cr.beta) / cr.alpha).ln();
                let lower = (cr.beta / (1.0 - cr.alpha)).ln();
                if self.trace.is_empty() {
                    (side(self.theta >= cr.cut), false)
                } else if self.sprt_llr >= upper {
                    (Side::Above, true)
                } else if self.sprt_llr <= lower {
                    (Side::Below, true)
                } else {
                    (side(self.sprt_llr >= 0.0), false)
                }
            }
        };
        Some(Classification {
            cut: cr.cut,
            decision,
            conclusive,
        })
    }

    /// The selection rule's criterion for every bank item at the current state (None for
    /// items that are not eligible now: disabled, used, blocked or closed by content
    /// rules). For inspection and tests; does not change the session.
    pub fn criteria(&self, bank: &CatBank) -> Result<Vec<Option<f64>>, CatError> {
        let mut s = self.clone();
        s.ensure_runtime(bank)?;
        s.fill_eligible(bank);
        let rt = s.rt.as_mut().expect("runtime");
        let ctx = SelectCtx {
            bank,
            config: &s.config,
            theta: s.theta,
            se: s.se,
            post: &rt.post,
            n_answered: s.trace.len(),
        };
        scores(
            &ctx,
            &rt.eligible,
            &mut s.rng,
            &mut rt.scores,
            &mut rt.scratch,
        );
        Ok(rt
            .scores
            .iter()
            .map(|&v| (v != f64::NEG_INFINITY).then_some(v))
            .collect())
    }

    /// Indices of administered and SH-rejected items (for the simulator).
    pub(crate) fn exposure_indices(&self) -> (Vec<usize>, Vec<usize>) {
        self.rt
            .as_ref()
            .map(|rt| (rt.administered.clone(), rt.blocked_idx.clone()))
            .unwrap_or_default()
    }

    fn ensure_runtime(&mut self, bank: &CatBank) -> Result<(), CatError> {
        if let Some(rt) = &self.rt
            && rt.fingerprint == bank.fingerprint()
            && rt.bank_len == bank.len()
        {
            return Ok(());
        }
        let n = bank.len();
        let look = |id: &str| {
            bank.index_of(id).ok_or_else(|| CatError::UnknownItem {
                item: id.to_string(),
            })
        };
        let mut rt = Runtime {
            loglik: vec![0.0; GRID_POINTS],
            tinfo: vec![0.0; GRID_POINTS],
            fingerprint: bank.fingerprint(),
            bank_len: n,
            used: vec![false; n],
            blocked_mask: vec![false; n],
            blocked_idx: Vec::new(),
            topic_counts: vec![0; bank.topics().len()],
            pending_idx: None,
            answered: Vec::with_capacity(self.config.stop.max_length),
            administered: Vec::with_capacity(self.config.stop.max_length),
            content: match &self.config.content {
                Some(c) => Some(ContentIx::new(bank, c)?),
                None => None,
            },
            eligible: vec![false; n],
            scores: vec![0.0; n],
            scratch: vec![0.0; 2 * n],
            post: vec![0.0; GRID_POINTS],
        };
        for t in &self.trace {
            rt.record_answer(bank, look(&t.item)?, t.correct);
        }
        for id in &self.blocked {
            if let Some(i) = bank.index_of(id) {
                rt.blocked_mask[i] = true;
                rt.blocked_idx.push(i);
            }
        }
        if let Some(p) = &self.pending {
            rt.pending_idx = Some(look(p)?);
        }
        posterior(&rt.loglik, &self.config.prior, &mut rt.post);
        self.bank_fingerprint = bank.fingerprint();
        self.rt = Some(rt);
        Ok(())
    }

    /// Base eligibility (enabled, unused, not blocked) narrowed by content constraints.
    fn fill_eligible(&mut self, bank: &CatBank) {
        let n_answered = self.trace.len();
        let max_length = self.config.stop.max_length;
        let rt = self.rt.as_mut().expect("runtime");
        base_eligible(bank, &rt.used, &rt.blocked_mask, &mut rt.eligible);
        if let Some(c) = &rt.content {
            c.restrict(
                bank,
                &rt.topic_counts,
                n_answered,
                max_length,
                &mut rt.eligible,
            );
        }
    }

    fn content_minimums_met(&mut self, bank: &CatBank) -> bool {
        let rt = self.rt.as_mut().expect("runtime");
        let Some(c) = &rt.content else {
            return true;
        };
        base_eligible(bank, &rt.used, &rt.blocked_mask, &mut rt.eligible);
        c.open_unmet(bank, &rt.topic_counts, &rt.eligible) == 0
    }

    fn select(&mut self, bank: &CatBank) -> Option<usize> {
        self.fill_eligible(bank);
        let rt = self.rt.as_mut().expect("runtime");
        let ctx = SelectCtx {
            bank,
            config: &self.config,
            theta: self.theta,
            se: self.se,
            post: &rt.post,
            n_answered: self.trace.len(),
        };
        scores(
            &ctx,
            &rt.eligible,
            &mut self.rng,
            &mut rt.scores,
            &mut rt.scratch,
        );
        let before = rt.blocked_idx.len();
        let pick = choose(
            &ctx,
            &mut rt.scores,
            &mut self.rng,
            &mut rt.blocked_idx,
            &mut rt.blocked_mask,
        );
        for &j in &rt.blocked_idx[before..] {
            self.blocked.push(bank.id(j).to_string());
        }
        pick
    }
}

impl Runtime {
    /// Records the response to item `i`: used, its topic counted, and added to the grid
    /// sums in O(nodes) from the bank tables (ln P / ln Q from the item's `kl_nodes`
    /// records, item-major, so contiguous). The same for a new answer and for rebuilding
    /// from the trace, so both give the same sums bit for bit.
    fn record_answer(&mut self, bank: &CatBank, i: usize, correct: bool) {
        self.answered.push(Resp {
            a: bank.a[i],
            b: bank.b[i],
            c: bank.c[i],
            x: correct,
        });
        self.administered.push(i);
        self.used[i] = true;
        if bank.topic_of[i] != NO_TOPIC {
            self.topic_counts[bank.topic_of[i] as usize] += 1;
        }
        let j = if correct { 1 } else { 3 };
        for (l, v) in self.loglik.iter_mut().zip(bank.kl_row(i)) {
            *l += v[j];
        }
        for (t, v) in self.tinfo.iter_mut().zip(bank.row(&bank.info, i)) {
            *t += v;
        }
    }
}

/// Enabled, unused and not blocked (one pass over zipped slices: no bounds checks).
fn base_eligible(bank: &CatBank, used: &[bool], blocked: &[bool], out: &mut [bool]) {
    for (((e, &on), &u), &b) in out.iter_mut().zip(&bank.enabled).zip(used).zip(blocked) {
        *e = on && !u && !b;
    }
}

fn side(above: bool) -> Side {
    if above { Side::Above } else { Side::Below }
}

//! Content balancing: Kingsbury–Zara target proportions and hard min/max counts.

use super::CatError;
use super::bank::{CatBank, NO_TOPIC};
use super::config::ContentConstraints;

/// Constraints resolved to the bank's topic indices.
#[derive(Debug, Clone)]
pub(crate) struct ContentIx {
    min: Vec<usize>,
    max: Vec<usize>,
    /// Normalised targets (0 = no target).
    target: Vec<f64>,
    has_targets: bool,
    has_min: bool,
}

impl ContentIx {
    pub fn new(bank: &CatBank, c: &ContentConstraints) -> Result<Self, CatError> {
        let n = bank.topics().len();
        let mut ix = Self {
            min: vec![0; n],
            max: vec![usize::MAX; n],
            target: vec![0.0; n],
            has_targets: false,
            has_min: false,
        };
        for (t, &v) in &c.min {
            match bank.topic_index(t) {
                Some(k) => ix.min[k] = v,
                None if v > 0 => {
                    return Err(CatError::Config(format!(
                        "content.min[{t:?}] = {v} but no bank item has topic {t:?}"
                    )));
                }
                None => {}
            }
        }
        for (t, &v) in &c.max {
            if let Some(k) = bank.topic_index(t) {
                ix.max[k] = v;
            }
        }
        let total: f64 = c
            .targets
            .iter()
            .filter(|(t, _)| bank.topic_index(t).is_some())
            .map(|(_, v)| v)
            .sum();
        if total > 0.0 {
            for (t, &v) in &c.targets {
                if let Some(k) = bank.topic_index(t) {
                    ix.target[k] = v / total;
                }
            }
            ix.has_targets = true;
        }
        ix.has_min = ix.min.iter().any(|&m| m > 0);
        Ok(ix)
    }

    /// Number of administrations still owed to topic minimums, counting only topics that
    /// still have an eligible item (per `eligible`).
    pub fn open_unmet(&self, bank: &CatBank, counts: &[usize], eligible: &[bool]) -> usize {
        if !self.has_min {
            return 0;
        }
        let mut avail = vec![false; self.min.len()];
        for (i, &e) in eligible.iter().enumerate() {
            let t = bank.topic_of[i];
            if e && t != NO_TOPIC {
                avail[t as usize] = true;
            }
        }
        (0..self.min.len())
            .filter(|&t| avail[t])
            .map(|t| self.min[t].saturating_sub(counts[t]))
            .sum()
    }

    /// Narrows `eligible` (already: enabled, unused, not blocked) by the constraints.
    pub fn restrict(
        &self,
        bank: &CatBank,
        counts: &[usize],
        n_answered: usize,
        max_length: usize,
        eligible: &mut [bool],
    ) {
        let nt = self.min.len();
        let topic = |i: usize| bank.topic_of[i];
        // Closed topics (at their max).
        for (i, e) in eligible.iter_mut().enumerate() {
            let t = topic(i);
            if *e && t != NO_TOPIC && counts[t as usize] >= self.max[t as usize] {
                *e = false;
            }
        }
        // Forced minimums.
        if self.has_min {
            let need: usize = (0..nt).map(|t| self.min[t].saturating_sub(counts[t])).sum();
            let remaining = max_length.saturating_sub(n_answered);
            if need > 0 && need >= remaining {
                let owed = |i: usize| {
                    let t = topic(i);
                    t != NO_TOPIC && counts[t as usize] < self.min[t as usize]
                };
                if eligible.iter().enumerate().any(|(i, &e)| e && owed(i)) {
                    for (i, e) in eligible.iter_mut().enumerate() {
                        *e = *e && owed(i);
                    }
                }
            }
        }
        // Kingsbury–Zara: the most under-represented targeted topic with an eligible item.
        if self.has_targets {
            let mut avail = vec![false; nt];
            for (i, &e) in eligible.iter().enumerate() {
                let t = topic(i);
                if e && t != NO_TOPIC {
                    avail[t as usize] = true;
                }
            }
            let mut best: Option<(usize, f64)> = None;
            for t in 0..nt {
                if !avail[t] || self.target[t] <= 0.0 {
                    continue;
                }
                let share = if n_answered == 0 {
                    0.0
                } else {
                    counts[t] as f64 / n_answered as f64
                };
                let gap = self.target[t] - share;
                if best.is_none_or(|(_, g)| gap > g) {
                    best = Some((t, gap));
                }
            }
            if let Some((t, _)) = best {
                for (i, e) in eligible.iter_mut().enumerate() {
                    *e = *e && topic(i) == t as u32;
                }
            }
        }
    }
}

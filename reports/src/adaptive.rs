//! The adaptive section: how the finished adaptive sessions of the selected results went
//! (θ, SE and test length distributions, stop reasons, item exposure and test overlap,
//! the calibration versions they ran on).

use std::collections::{BTreeMap, HashMap};

use crate::{
    AdaptiveReport, AdaptiveSession, CalibrationVersionCount, Distribution, DistributionBin,
    ItemExposure, ItemInfo, StopReasonCount,
};

/// θ bins: 0.5 wide from −4 to 4 (values beyond go into the end bins).
const THETA_BINS: (f64, f64, usize) = (-4.0, 0.5, 16);
/// SE bins: 0.1 wide from 0 to 1 (larger values go into the last bin).
const SE_BINS: (f64, f64, usize) = (0.0, 0.1, 10);
/// Most bins of the test length distribution (one per length).
const MAX_LENGTH_BINS: usize = 200;

/// Count, mean, sample SD (n − 1), min, median, max and the counts per bin of `values`;
/// `bins` = (start, width, number), the end bins holding the values beyond.
fn distribution(values: &[f64], (start, width, n): (f64, f64, usize)) -> Distribution {
    let count = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = (count > 0).then(|| values.iter().sum::<f64>() / count as f64);
    let sd = mean
        .filter(|_| count > 1)
        .map(|m| (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (count - 1) as f64).sqrt());
    let median = (count > 0).then(|| {
        if count % 2 == 1 {
            sorted[count / 2]
        } else {
            (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0
        }
    });
    let mut counts = vec![0u64; n];
    for v in values {
        let bin = ((v - start) / width).floor();
        let bin = if bin.is_nan() {
            0.0
        } else {
            bin.clamp(0.0, (n - 1) as f64)
        };
        counts[bin as usize] += 1;
    }
    Distribution {
        count: count as u64,
        mean,
        sd,
        min: sorted.first().copied(),
        median,
        max: sorted.last().copied(),
        bins: counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| DistributionBin {
                from: round(start + width * i as f64),
                to: round(start + width * (i + 1) as f64),
                count,
            })
            .collect(),
    }
}

/// Bin edges without the float noise of repeated tenths (0.30000000000000004).
fn round(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// The adaptive section of `sessions` (already restricted to the selected results), or
/// `None` when there is none. Exposure is listed for every bank item (bank order, then any
/// other administered item by id).
///
/// Exposure rate `rᵢ = mᵢ / n`: the share of the n sessions that administered item i.
/// Test overlap is the expected share of items two randomly drawn sessions have in
/// common, averaged over all n(n − 1)/2 pairs:
/// `T = Σᵢ mᵢ(mᵢ − 1) / (n(n − 1) L̄) = n/(n − 1) · Σᵢ rᵢ² / L̄ − 1/(n − 1)`,
/// with `L̄ = Σᵢ rᵢ` the mean test length. For a fixed length L this is exactly the
/// relation of Chen, Ankenmann & Spray (2003), "The relationship between item exposure
/// and test overlap in computerized adaptive testing", *Journal of Educational
/// Measurement* 40(2), 129–145 (T = n/(n−1) · (N·S²ᵣ/L + L/N) − 1/(n−1), N the pool size,
/// S²ᵣ the variance of the exposure rates, since Σrᵢ² = N·S²ᵣ + L²/N); for variable
/// lengths it divides the expected number of shared items by the mean length.
/// `mean_shared_items` is that expected number, `Σᵢ mᵢ(mᵢ − 1) / (n(n − 1))`.
pub(crate) fn adaptive_report(
    sessions: &[AdaptiveSession],
    bank: &[ItemInfo],
) -> Option<AdaptiveReport> {
    if sessions.is_empty() {
        return None;
    }
    let n = sessions.len();
    let thetas: Vec<f64> = sessions
        .iter()
        .map(|s| s.theta)
        .filter(|v| v.is_finite())
        .collect();
    let ses: Vec<f64> = sessions
        .iter()
        .map(|s| s.se)
        .filter(|v| v.is_finite())
        .collect();
    let lengths: Vec<f64> = sessions.iter().map(|s| s.items.len() as f64).collect();
    let shortest = lengths.iter().copied().fold(f64::INFINITY, f64::min);
    let longest = lengths.iter().copied().fold(0.0, f64::max);
    let length_bins = ((longest - shortest) as usize + 1).min(MAX_LENGTH_BINS);
    let test_length = distribution(&lengths, (shortest, 1.0, length_bins));

    let mut administered: HashMap<&str, u64> = HashMap::new();
    for session in sessions {
        // An item counts once per session.
        let mut seen: Vec<&str> = session.items.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for item in seen {
            *administered.entry(item).or_default() += 1;
        }
    }
    let mut exposure: Vec<ItemExposure> = bank
        .iter()
        .map(|info| ItemExposure {
            item: info.item.clone(),
            sessions: administered.get(info.item.as_str()).copied().unwrap_or(0),
            exposure_rate: 0.0,
        })
        .collect();
    let mut others: Vec<(&str, u64)> = administered
        .iter()
        .filter(|(item, _)| !bank.iter().any(|b| b.item == **item))
        .map(|(item, m)| (*item, *m))
        .collect();
    others.sort_unstable();
    exposure.extend(others.into_iter().map(|(item, m)| ItemExposure {
        item: item.to_string(),
        sessions: m,
        exposure_rate: 0.0,
    }));
    for e in &mut exposure {
        e.exposure_rate = e.sessions as f64 / n as f64;
    }
    let mean_length = lengths.iter().sum::<f64>() / n as f64;
    let pairs = (n * (n - 1)) as f64;
    let shared_pairs: f64 = administered
        .values()
        .map(|&m| (m * m.saturating_sub(1)) as f64)
        .sum();
    let mean_shared_items = (n > 1).then(|| shared_pairs / pairs);
    let overlap_rate = mean_shared_items
        .filter(|_| mean_length > 0.0)
        .map(|s| s / mean_length);

    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let mut versions: BTreeMap<i64, u64> = BTreeMap::new();
    for s in sessions {
        *reasons.entry(s.stop_reason.as_str()).or_default() += 1;
        *versions.entry(s.calibration_version).or_default() += 1;
    }
    let mut stop_reasons: Vec<StopReasonCount> = reasons
        .into_iter()
        .map(|(reason, count)| StopReasonCount {
            stop_reason: reason.to_string(),
            sessions: count,
            share: count as f64 / n as f64,
        })
        .collect();
    stop_reasons.sort_by(|a, b| {
        b.sessions
            .cmp(&a.sessions)
            .then(a.stop_reason.cmp(&b.stop_reason))
    });
    Some(AdaptiveReport {
        sessions: n as u64,
        theta: distribution(&thetas, THETA_BINS),
        se: distribution(&ses, SE_BINS),
        test_length,
        stop_reasons,
        exposure,
        mean_shared_items,
        overlap_rate,
        calibration_versions: versions
            .into_iter()
            .map(|(version, sessions)| CalibrationVersionCount {
                calibration_version: version,
                sessions,
            })
            .collect(),
    })
}

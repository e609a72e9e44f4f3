//! Deterministic simulation of dichotomous responses (for tests and benchmarks).
//!
//! Uses an internal SplitMix64 generator and Box–Muller normals, so the output depends
//! only on the seed (and is identical on every platform).

use super::data::{MISSING, ResponseMatrix};
use super::model::{ItemParams, probability};

/// SplitMix64 (Steele, Lea & Flood 2014): small, fast, statistically adequate here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The whole generator state (`SplitMix64::new(g.state())` continues the stream).
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// Simulates responses of `n_persons` with θ ~ N(0, 1) to items with the given parameters;
/// each response is independently missing with probability `missing_rate`.
/// Returns the data and the true θs.
pub fn simulate_responses(
    params: &[ItemParams],
    n_persons: usize,
    seed: u64,
    missing_rate: f64,
) -> (ResponseMatrix, Vec<f64>) {
    let mut rng = SplitMix64::new(seed);
    let n_items = params.len();
    let thetas: Vec<f64> = (0..n_persons).map(|_| rng.normal()).collect();
    let mut data = Vec::with_capacity(n_persons * n_items);
    for &t in &thetas {
        for p in params {
            let miss = missing_rate > 0.0 && rng.uniform() < missing_rate;
            let u = rng.uniform();
            data.push(if miss {
                MISSING
            } else {
                u8::from(u < probability(p.a, p.b, p.c, t))
            });
        }
    }
    let m = ResponseMatrix {
        n_persons,
        n_items,
        item_ids: params.iter().map(|p| p.item.clone()).collect(),
        person_ids: (1..=n_persons).map(|k| format!("person{k}")).collect(),
        data,
    };
    (m, thetas)
}

/// 2PL simulation: a ~ U(0.7, 2), b ~ N(0, 1), θ ~ N(0, 1), responses missing completely
/// at random with probability `missing_rate`. Returns (data, true item parameters, true θ).
pub fn simulate_2pl(
    n_persons: usize,
    n_items: usize,
    seed: u64,
    missing_rate: f64,
) -> (ResponseMatrix, Vec<ItemParams>, Vec<f64>) {
    let mut rng = SplitMix64::new(seed ^ 0x5EED_1234_ABCD_0001);
    let params: Vec<ItemParams> = (1..=n_items)
        .map(|i| {
            let a = 0.7 + 1.3 * rng.uniform();
            let b = rng.normal();
            ItemParams::new(format!("item{i}"), a, b, 0.0)
        })
        .collect();
    let (m, thetas) = simulate_responses(&params, n_persons, seed, missing_rate);
    (m, params, thetas)
}

//! The CAT item bank: validated items plus per-item tables on the θ grid.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::CatError;
use super::estimate::{item_info, ln_pq};
use crate::irt::ItemParams;

/// Number of θ grid nodes.
pub const GRID_POINTS: usize = 61;
/// Largest discrimination a bank takes: beyond it a·(θ − b) leaves the range where the
/// likelihood is computed without overflow, and no calibration produces it.
pub const MAX_DISCRIMINATION: f64 = 20.0;
/// Largest |b| a bank takes (the grid spans ±6; beyond ±20 an item measures nothing).
pub const MAX_ABS_DIFFICULTY: f64 = 20.0;
/// Lower end of the θ grid (and of every point estimate).
pub const THETA_MIN: f64 = -6.0;
/// Upper end of the θ grid (and of every point estimate).
pub const THETA_MAX: f64 = 6.0;
/// Spacing of the θ grid.
pub const GRID_STEP: f64 = (THETA_MAX - THETA_MIN) / (GRID_POINTS - 1) as f64;
/// Zeros after the last row of an item-major table: a posterior-weighted sum may then read
/// up to 3 values past the end of a row (into the next row, or into this tail) with zero
/// weights, so it runs over whole 4-wide chunks without a scalar remainder loop.
pub(crate) const ROW_OVERRUN: usize = 3;

/// θ at grid node `k`.
#[inline]
pub(crate) fn node(k: usize) -> f64 {
    THETA_MIN + GRID_STEP * k as f64
}

/// The grid nodes.
pub fn grid_nodes() -> Vec<f64> {
    (0..GRID_POINTS).map(node).collect()
}

fn yes() -> bool {
    true
}

mod params_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::irt::ItemParams;

    #[derive(Serialize, Deserialize)]
    struct Wire {
        item: String,
        a: f64,
        b: f64,
        #[serde(default)]
        c: f64,
        #[serde(default)]
        se_a: Option<f64>,
        #[serde(default)]
        se_b: Option<f64>,
        #[serde(default)]
        se_c: Option<f64>,
        #[serde(default)]
        p_value: Option<f64>,
        #[serde(default = "super::yes")]
        estimable: bool,
    }

    pub fn serialize<S: Serializer>(p: &ItemParams, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            item: p.item.clone(),
            a: p.a,
            b: p.b,
            c: p.c,
            se_a: p.se_a,
            se_b: p.se_b,
            se_c: p.se_c,
            p_value: p.p_value.is_finite().then_some(p.p_value),
            estimable: p.estimable,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ItemParams, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(ItemParams {
            item: w.item,
            a: w.a,
            b: w.b,
            c: w.c,
            se_a: w.se_a,
            se_b: w.se_b,
            se_c: w.se_c,
            p_value: w.p_value.unwrap_or(f64::NAN),
            estimable: w.estimable,
        })
    }
}

/// One bank item: calibrated (or provisional) parameters, an optional content topic and
/// an enabled flag (disabled items are never administered).
///
/// JSON: `{"params": {"item": "q1", "a": 1.2, "b": -0.3, "c": 0}, "topic": "algebra",
/// "enabled": true}`; in `params` only `item`, `a`, `b` are required (`c` = 0, standard
/// errors and `p_value` = null, `estimable` = true by default), and a NaN `p_value`
/// round-trips as null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatItem {
    #[serde(with = "params_serde")]
    pub params: ItemParams,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl CatItem {
    /// An enabled item without topic.
    pub fn new(params: ItemParams) -> Self {
        Self {
            params,
            topic: None,
            enabled: true,
        }
    }

    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }
}

/// A validated item bank. Construction precomputes, for every item and grid node θₖ,
/// ln P, ln Q, the Fisher information and the running integrals ∫ ln P, ∫ ln Q (Simpson
/// with midpoints), so a CAT step is table look-ups plus O(items) work. The layout of each
/// table follows the criterion that reads it (see the fields). Item-major tables have no
/// padding inside rows: a power-of-two row length makes the same nodes of all items
/// collide in the same cache sets.
///
/// Serialises as the list of [`CatItem`]s and deserialises through [`CatBank::new`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Vec<CatItem>", into = "Vec<CatItem>")]
pub struct CatBank {
    items: Vec<CatItem>,
    index: HashMap<String, usize>,
    topics: Vec<String>,
    /// Topic index of each item (`u32::MAX` = no topic).
    pub(crate) topic_of: Vec<u32>,
    /// `items[i].enabled`, packed: eligibility is recomputed on every step, and reading
    /// the flags out of the item structs would pull every item into the cache.
    pub(crate) enabled: Vec<bool>,
    pub(crate) a: Vec<f64>,
    pub(crate) b: Vec<f64>,
    pub(crate) c: Vec<f64>,
    /// ln(1 − c), for ln Q at θ̂ in the KL criteria.
    pub(crate) ln_1mc: Vec<f64>,
    /// ln P and ln Q, node-major (`[k * len + i]`): the posterior-weighted sums of KLP
    /// read one window of nodes for every item, which is then one contiguous stretch of
    /// memory (streamed, and vectorised over items) instead of a short piece of each row.
    pub(crate) ln_p: Vec<f64>,
    pub(crate) ln_q: Vec<f64>,
    /// Fisher information, item-major ([`CatBank::row`]).
    pub(crate) info: Vec<f64>,
    /// Whether every item has c = 0 (then KLP needs only the ln P sums).
    pub(crate) all_2pl: bool,
    /// Per item and node: [∫ ln P from the grid start to the node, ln P, ∫ ln Q, ln Q],
    /// what the KL window integral reads, side by side so that one item's look-ups at
    /// a window end share one or two cache lines.
    pub(crate) kl_nodes: Vec<[f64; 4]>,
    fingerprint: u64,
}

pub(crate) const NO_TOPIC: u32 = u32::MAX;

impl TryFrom<Vec<CatItem>> for CatBank {
    type Error = CatError;
    fn try_from(items: Vec<CatItem>) -> Result<Self, CatError> {
        Self::new(items)
    }
}

impl From<CatBank> for Vec<CatItem> {
    fn from(b: CatBank) -> Self {
        b.items
    }
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &x in bytes {
        *h ^= u64::from(x);
        *h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
}

impl CatBank {
    /// Validates the items (non-empty, unique ids, 0 < a ≤ 20, |b| ≤ 20, 0 ≤ c < 1) and
    /// builds the grid tables.
    pub fn new(items: Vec<CatItem>) -> Result<Self, CatError> {
        if items.is_empty() {
            return Err(CatError::EmptyBank);
        }
        let mut index = HashMap::with_capacity(items.len());
        let mut topics: Vec<String> = Vec::new();
        let mut topic_ix: HashMap<String, u32> = HashMap::new();
        let mut topic_of = Vec::with_capacity(items.len());
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        for (i, it) in items.iter().enumerate() {
            let p = &it.params;
            let bad = |reason: &str| CatError::InvalidItem {
                item: p.item.clone(),
                reason: reason.to_string(),
            };
            if p.item.is_empty() {
                return Err(bad("empty item id"));
            }
            if !p.estimable {
                return Err(bad("item is marked not estimable"));
            }
            if !(p.a.is_finite() && p.a > 0.0 && p.a <= MAX_DISCRIMINATION) {
                return Err(bad(&format!(
                    "discrimination a = {} must be > 0 and ≤ {MAX_DISCRIMINATION}",
                    p.a
                )));
            }
            if !(p.b.is_finite() && p.b.abs() <= MAX_ABS_DIFFICULTY) {
                return Err(bad(&format!(
                    "difficulty b = {} must be within ±{MAX_ABS_DIFFICULTY}",
                    p.b
                )));
            }
            if !(p.c.is_finite() && (0.0..1.0).contains(&p.c)) {
                return Err(bad(&format!("guessing c = {} must be in [0, 1)", p.c)));
            }
            if index.insert(p.item.clone(), i).is_some() {
                return Err(CatError::DuplicateItem {
                    item: p.item.clone(),
                });
            }
            let t = match &it.topic {
                None => NO_TOPIC,
                Some(name) => *topic_ix.entry(name.clone()).or_insert_with(|| {
                    topics.push(name.clone());
                    (topics.len() - 1) as u32
                }),
            };
            topic_of.push(t);
            fnv(&mut h, p.item.as_bytes());
            fnv(&mut h, &[0xFF]);
            for v in [p.a, p.b, p.c] {
                fnv(&mut h, &v.to_bits().to_le_bytes());
            }
            fnv(&mut h, it.topic.as_deref().unwrap_or("\u{0}").as_bytes());
        }
        let n = items.len();
        let g = GRID_POINTS;
        let mut bank = Self {
            a: items.iter().map(|i| i.params.a).collect(),
            b: items.iter().map(|i| i.params.b).collect(),
            c: items.iter().map(|i| i.params.c).collect(),
            ln_1mc: items.iter().map(|i| (-i.params.c).ln_1p()).collect(),
            enabled: items.iter().map(|i| i.enabled).collect(),
            ln_p: vec![0.0; n * g],
            ln_q: vec![0.0; n * g],
            info: vec![0.0; n * g + ROW_OVERRUN],
            all_2pl: items.iter().all(|i| i.params.c == 0.0),
            kl_nodes: vec![[0.0; 4]; n * g],
            items,
            index,
            topics,
            topic_of,
            fingerprint: h,
        };
        for i in 0..n {
            let (a, b, c) = (bank.a[i], bank.b[i], bank.c[i]);
            let r = i * g..(i + 1) * g;
            let (mut lp, mut lq) = ([0.0; GRID_POINTS], [0.0; GRID_POINTS]);
            for k in 0..g {
                (lp[k], lq[k]) = ln_pq(a, b, c, node(k));
                bank.ln_p[k * n + i] = lp[k];
                bank.ln_q[k * n + i] = lq[k];
                bank.info[i * g + k] = item_info(a, b, c, node(k));
            }
            let kl = &mut bank.kl_nodes[r];
            let (mut cp, mut cq) = (0.0, 0.0);
            for k in 0..g {
                if k > 0 {
                    let (mp, mq) = ln_pq(a, b, c, node(k - 1) + 0.5 * GRID_STEP);
                    cp += GRID_STEP / 6.0 * (lp[k - 1] + 4.0 * mp + lp[k]);
                    cq += GRID_STEP / 6.0 * (lq[k - 1] + 4.0 * mq + lq[k]);
                }
                kl[k] = [cp, lp[k], cq, lq[k]];
            }
        }
        Ok(bank)
    }

    /// Builds a bank of enabled, untagged items.
    pub fn from_params(params: Vec<ItemParams>) -> Result<Self, CatError> {
        Self::new(params.into_iter().map(CatItem::new).collect())
    }

    pub fn items(&self) -> &[CatItem] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Position of an item id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn get(&self, id: &str) -> Option<&CatItem> {
        self.index_of(id).map(|i| &self.items[i])
    }

    /// The distinct topics in order of first appearance.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    pub(crate) fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == name)
    }

    /// Enables or disables an item (does not change the fingerprint, so running sessions
    /// continue; a disabled item is simply never selected again).
    pub fn set_enabled(&mut self, id: &str, enabled: bool) -> Result<(), CatError> {
        let i = self.index_of(id).ok_or_else(|| CatError::UnknownItem {
            item: id.to_string(),
        })?;
        self.items[i].enabled = enabled;
        self.enabled[i] = enabled;
        Ok(())
    }

    #[inline]
    pub(crate) fn enabled(&self, i: usize) -> bool {
        self.enabled[i]
    }

    #[inline]
    pub(crate) fn id(&self, i: usize) -> &str {
        &self.items[i].params.item
    }

    /// Hash of ids, parameters and topics (not of the enabled flags); sessions use it to
    /// detect that the bank changed under them and re-resolve item positions by id.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Item `i`'s values of an item-major grid table (`info`), one per node.
    #[inline]
    pub(crate) fn row<'a>(&self, table: &'a [f64], i: usize) -> &'a [f64] {
        &table[i * GRID_POINTS..(i + 1) * GRID_POINTS]
    }

    /// Node `k`'s values of all items in a node-major table (`ln_p`, `ln_q`).
    #[inline]
    pub(crate) fn column<'a>(&self, table: &'a [f64], k: usize) -> &'a [f64] {
        let n = self.len();
        &table[k * n..(k + 1) * n]
    }

    /// Item `i`'s `kl_nodes`, one record per node.
    #[inline]
    pub(crate) fn kl_row(&self, i: usize) -> &[[f64; 4]] {
        &self.kl_nodes[i * GRID_POINTS..(i + 1) * GRID_POINTS]
    }

    /// Nodes `k0..k1` of item `i`'s row of an item-major table with [`ROW_OVERRUN`]
    /// (`info`), where `k1` may exceed [`GRID_POINTS`] by up to [`ROW_OVERRUN`]: those values
    /// belong to the next row (or are the zero tail) and must be given zero weight.
    #[inline]
    pub(crate) fn row_window<'a>(
        &self,
        table: &'a [f64],
        i: usize,
        k0: usize,
        k1: usize,
    ) -> &'a [f64] {
        debug_assert!(k0 <= k1 && k1 <= GRID_POINTS + ROW_OVERRUN);
        &table[i * GRID_POINTS + k0..i * GRID_POINTS + k1]
    }
}

/// Where `x` falls for the running integrals: `F(x) = C[k] + h·Σₘ wₘ·f[j0 + m]`
/// (integral of the quadratic through three adjacent nodes from node k to x).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CumPos {
    pub k: usize,
    pub j0: usize,
    pub w: [f64; 3],
}

impl CumPos {
    pub fn at(x: f64) -> Self {
        let pos = ((x - THETA_MIN) / GRID_STEP).clamp(0.0, (GRID_POINTS - 1) as f64);
        let k = (pos.floor() as usize).min(GRID_POINTS - 2);
        let u = pos - k as f64;
        // ∫₀ᵛ of the Lagrange basis on s = 0, 1, 2.
        let g = |v: f64| {
            [
                v * v * v / 6.0 - 0.75 * v * v + v,
                v * v - v * v * v / 3.0,
                v * v * v / 6.0 - 0.25 * v * v,
            ]
        };
        if k + 2 < GRID_POINTS {
            Self { k, j0: k, w: g(u) }
        } else {
            let (hi, lo) = (g(1.0 + u), g(1.0));
            Self {
                k,
                j0: k - 1,
                w: [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]],
            }
        }
    }

    /// (∫ ln P, ∫ ln Q) from the grid start to x, from one item's `kl_nodes` row.
    #[inline]
    pub fn eval_pq(&self, row: &[[f64; 4]]) -> (f64, f64) {
        let (c, f) = (&row[self.k], &row[self.j0..self.j0 + 3]);
        let [w0, w1, w2] = self.w;
        (
            c[0] + GRID_STEP * (w0 * f[0][1] + w1 * f[1][1] + w2 * f[2][1]),
            c[2] + GRID_STEP * (w0 * f[0][3] + w1 * f[1][3] + w2 * f[2][3]),
        )
    }
}

/// Standard normal quantile (Acklam's rational approximation, |relative error| < 1.2e−9).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Cold-start parameters for an item that has a classical p-value (proportion correct)
/// but no IRT calibration.
///
/// Rule (documented, deliberately simple):
/// * `c = 1/n_options` for a multiple-choice item with `n_options ≥ 2` (blind guessing),
///   `c = 0` otherwise (pass 0 or 1 for open-ended items);
/// * `a = 1` (a typical discrimination on the D = 1 logistic metric);
/// * `b` chosen so that the item's expected p-value in a N(0, 1) population equals the
///   observed one. With the probit approximation logistic(x) ≈ Φ(x/1.702),
///   E[logistic(θ − b)] = Φ(−b/√(1.702² + 1)), so with p* = (p − c)/(1 − c) (the p-value
///   corrected for guessing, clamped to [0.01, 0.99]):
///   `b = −√(1 + 1.702²)·Φ⁻¹(p*) ≈ −1.974·Φ⁻¹(p*)` (so b ∈ [−4.6, 4.6]).
///
/// The result is estimable with no standard errors and `p_value = p_value`.
pub fn provisional_params(
    item: impl Into<String>,
    p_value: f64,
    n_options: u32,
) -> Result<ItemParams, CatError> {
    let item = item.into();
    if !(p_value.is_finite() && (0.0..=1.0).contains(&p_value)) {
        return Err(CatError::InvalidItem {
            item,
            reason: format!("p-value {p_value} must be in [0, 1]"),
        });
    }
    let c = if n_options >= 2 {
        1.0 / f64::from(n_options)
    } else {
        0.0
    };
    let p_star = ((p_value - c) / (1.0 - c)).clamp(0.01, 0.99);
    let b = -(1.0 + 1.702f64 * 1.702).sqrt() * normal_quantile(p_star);
    let mut params = ItemParams::new(item, 1.0, b, c);
    params.p_value = p_value;
    Ok(params)
}

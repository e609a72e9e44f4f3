//! Computerized adaptive testing (CAT): item bank, ability estimation during the test,
//! item selection, exposure control, content balancing, stopping rules, a serialisable
//! session state machine and a simulator for educators.
//!
//! Everything here is pure and deterministic given the seeds.
//!
//! * [`CatBank`] / [`CatItem`]: the calibrated pool (validated; per-item tables on the
//!   θ grid are precomputed once). [`provisional_params`] gives cold-start parameters for
//!   items that have only a classical p-value.
//! * [`CatConfig`]: estimator ([`Estimator`]), selection rule ([`SelectionRule`]),
//!   exposure control ([`ExposureControl`]), content constraints
//!   ([`ContentConstraints`]), stopping ([`StopRule`]), start ([`StartRule`]). Every field
//!   has a default, so clients may send any subset as JSON (unknown fields are rejected).
//! * [`CatSession`]: [`CatSession::start`] → first item; [`CatSession::answer`] →
//!   [`Step::Next`] or [`Step::Finished`]. The session is `Serialize + Deserialize` and can
//!   be persisted between requests.
//! * [`simulate`] → [`SimulationReport`]; [`calibrate_sympson_hetter`] sets the
//!   Sympson–Hetter exposure parameters for a target maximum exposure rate.
//! * [`estimate_ability`]: the estimators on an arbitrary response set.
//!
//! ## θ grid
//! All grid work (EAP, posterior-weighted rules, KL integrals, start values for the
//! Newton-type estimators) uses [`GRID_POINTS`] = 61 equally spaced nodes on
//! [[`THETA_MIN`], [`THETA_MAX`]] = [−6, 6] — the same grid as
//! [`crate::irt::Quadrature::default`], so EAP with the N(0, 1) prior equals
//! [`crate::irt::eap`]. Point estimates (MLE, WLE, MAP) are confined to [−6, 6].

mod bank;
mod config;
mod content;
mod estimate;
mod rng;
mod select;
mod session;
mod simulate;
mod vmath;

use thiserror::Error;

pub use bank::{
    CatBank, CatItem, GRID_POINTS, GRID_STEP, MAX_ABS_DIFFICULTY, MAX_DISCRIMINATION, THETA_MAX,
    THETA_MIN, grid_nodes, provisional_params,
};
pub use config::{
    CatConfig, ClassMethod, ClassificationRule, ContentConstraints, Estimator, ExposureControl,
    FirstItem, MleFallback, Prior, SelectionRule, StartRule, StopRule,
};
pub use estimate::{Estimate, estimate_ability};
pub use rng::CatRng;
pub use session::{CatResult, CatSession, Classification, Side, Step, StopReason, TraceEntry};
pub use simulate::{
    ItemExposure, ShCalibration, ShOptions, SimulationReport, ThetaDistribution,
    calibrate_sympson_hetter, simulate,
};

/// Why a CAT operation was rejected.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CatError {
    #[error("the item bank is empty")]
    EmptyBank,
    #[error("item {item:?} appears more than once in the bank")]
    DuplicateItem { item: String },
    #[error("item {item:?}: {reason}")]
    InvalidItem { item: String, reason: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("no enabled item is available to start the test")]
    NoEligibleItem,
    #[error("item {item:?} is not in the bank")]
    UnknownItem { item: String },
    #[error("answer for item {got:?}, but the pending item is {expected:?}")]
    WrongItem { expected: String, got: String },
    #[error("the test has already finished")]
    Finished,
    #[error("invalid session state: {0}")]
    Corrupt(String),
}

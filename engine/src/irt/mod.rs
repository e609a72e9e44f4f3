//! Item response theory: dichotomous Rasch, 1PL, 2PL and 3PL models calibrated by marginal
//! maximum likelihood (EM over a fixed quadrature grid), ability scoring (EAP, MAP, MLE),
//! information functions, linking of two calibrations onto one scale, item and person fit
//! (S-X2, infit/outfit, lz and lz*), and a deterministic simulator.
//!
//! Entry points: [`calibrate`] with [`CalibrationOptions`], [`eap`], [`map`], [`mle`],
//! [`eap_batch`], [`item_information`], [`test_information`], [`fit_report`],
//! [`simulate_2pl`].

pub mod calibrate;
pub mod data;
mod estep;
pub mod fit;
pub mod linking;
pub mod model;
pub mod scoring;
mod se;
pub mod simulate;

use thiserror::Error;

pub use calibrate::{Calibration, CalibrationOptions, SeMethod, calibrate};
pub use data::{MISSING, ResponseMatrix};
pub use fit::{
    FitOptions, FitReport, InfitOutfit, ItemFit, PersonFit, PersonStats, SX2, ThetaMethod,
    chi_square_upper, fit_report, fit_report_for, infit_outfit, person_fit, s_x2,
};
pub use linking::{ItemDrift, Linking, LinkingMethod, LinkingOptions, link};
pub use model::{
    ItemParams, MIN_QUADRATURE_POINTS, Model, Quadrature, item_information, logistic, probability,
    test_information,
};
pub use scoring::{AbilityEstimate, MleEstimate, Theta, eap, eap_batch, eap_with, map, mle};
pub use simulate::{SplitMix64, simulate_2pl, simulate_responses};

/// Why IRT input or options were rejected.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum IrtError {
    #[error("response data shape: {0}")]
    Shape(String),
    #[error("person {person}, item {item}: response {value} is not 0, 1 or missing")]
    InvalidResponse {
        person: usize,
        item: usize,
        value: u32,
    },
    #[error("options: {0}")]
    Config(String),
    #[error("no estimable item: every item is unanswered, or all right, or all wrong")]
    NoEstimableItems,
}

//! One scale across versions, and whether a new version may go live by itself.
//!
//! Each recalibration fits its items on its own N(0, 1) scale: the students of this fit
//! have mean ability 0. Items the fit cannot calibrate yet keep the parameters of the
//! active version, which sit on that version's scale. Before they are mixed, the fresh
//! parameters are linked onto the active version's scale through the items both versions
//! calibrated (the anchors): θ_active = A·θ_new + B, so a = a_new / A and b = A·b_new + B.
//! An anchor whose curve moved more than `drift_threshold` after linking is left out of
//! the anchors and flagged. The checks of [`ActivationConfig`] then decide whether the
//! version goes live or waits as a candidate, with its reasons.

use std::collections::HashMap;

use examflow_engine::irt::{
    Calibration, CalibrationOptions, FitOptions, ItemParams, LinkingMethod, LinkingOptions, Model,
    ResponseMatrix, SeMethod, calibrate, fit_report, link,
};
use serde_json::{Value, json};

use super::CalibratedItem;
use crate::config::{ActivationConfig, LinkingChoice};

/// What [`place_on_scale`] did, for the stored summary, and why the version may not go
/// live by itself.
pub struct Placement {
    pub linking: Value,
    pub reasons: Vec<String>,
}

/// Links the items this fit calibrated (`provisional: false` in `items`) onto the scale of
/// `active`, the version being replaced; items calibrated before but not by this fit keep
/// the active version's parameters (as they are already on its scale).
/// With `fixed_anchors`, the anchors' drift is first measured by a Stocking–Lord linking of
/// the free fit; the fit is then run again on `fitted`'s data with the anchors that do not
/// drift held at the active version's parameters (the students' distribution estimated),
/// and the other items take that fit's parameters.
pub fn place_on_scale(
    items: &mut [CalibratedItem],
    active: &[CalibratedItem],
    choice: LinkingChoice,
    settings: &ActivationConfig,
    fitted: Option<&(ResponseMatrix, Calibration)>,
) -> Placement {
    let placement = match (choice.method(), fitted) {
        (Some(method), _) => link_fresh_items(items, active, method, choice, settings),
        (None, Some(fitted)) => fixed_anchor_fit(items, active, settings, fitted),
        (None, None) => {
            link_fresh_items(items, active, LinkingMethod::StockingLord, choice, settings)
        }
    };
    keep_known_parameters(items, active);
    placement
}

/// `fixed_anchors`: see [`place_on_scale`].
fn fixed_anchor_fit(
    items: &mut [CalibratedItem],
    active: &[CalibratedItem],
    settings: &ActivationConfig,
    (data, free): &(ResponseMatrix, Calibration),
) -> Placement {
    let choice = LinkingChoice::FixedAnchors;
    let mut placement =
        link_fresh_items(items, active, LinkingMethod::StockingLord, choice, settings);
    if placement.linking["status"] != "linked" {
        return placement;
    }
    let anchors: Vec<&str> = placement.linking["anchors"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let by_id: HashMap<&str, &CalibratedItem> =
        active.iter().map(|i| (i.item.as_str(), i)).collect();
    let fixed: Vec<(usize, f64, f64, f64)> = data
        .item_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| anchors.contains(&id.as_str()))
        .filter_map(|(i, id)| by_id.get(id.as_str()).map(|p| (i, p.a, p.b, p.c)))
        .collect();
    let mut options = CalibrationOptions::new(free.model);
    options.se_method = SeMethod::None;
    options.max_iterations = 300;
    options.fixed_items = fixed;
    let anchored = match calibrate(data, &options) {
        Ok(c) => c,
        Err(e) => {
            placement.reasons.push(format!(
                "the fixed-anchor calibration failed ({e}); the items are linked by                  Stocking–Lord instead"
            ));
            placement.linking["fixed_anchors_error"] = json!(e.to_string());
            return placement;
        }
    };
    let fitted: HashMap<&str, &ItemParams> = anchored
        .items
        .iter()
        .filter(|p| p.estimable && (0.05..=6.0).contains(&p.a) && p.b.abs() <= 6.0)
        .map(|p| (p.item.as_str(), p))
        .collect();
    for item in items.iter_mut().filter(|i| !i.provisional) {
        if anchors.contains(&item.item.as_str()) {
            if let Some(p) = by_id.get(item.item.as_str()) {
                (item.a, item.b, item.c) = (p.a, p.b, p.c);
            }
        } else if let Some(p) = fitted.get(item.item.as_str()) {
            (item.a, item.b, item.c) = (p.a, p.b, if p.c.is_finite() { p.c } else { 0.0 });
        }
    }
    if !anchored.converged {
        placement.reasons.push(format!(
            "the fixed-anchor calibration did not converge in {} iterations",
            anchored.iterations
        ));
    }
    let linking = &mut placement.linking;
    linking["status"] = json!("fixed_anchors");
    linking["drift_checked_by"] = json!("stocking_lord");
    linking["latent_mean"] = json!(anchored.latent_mean);
    linking["latent_sd"] = json!(anchored.latent_sd);
    placement
}

fn link_fresh_items(
    items: &mut [CalibratedItem],
    active: &[CalibratedItem],
    method: LinkingMethod,
    choice: LinkingChoice,
    settings: &ActivationConfig,
) -> Placement {
    let params = |i: &CalibratedItem| ItemParams::new(i.item.clone(), i.a, i.b, i.c);
    let fresh: Vec<ItemParams> = items
        .iter()
        .filter(|i| !i.provisional)
        .map(params)
        .collect();
    let old: Vec<ItemParams> = active
        .iter()
        .filter(|i| !i.provisional)
        .map(params)
        .collect();
    let quiet = |status: &str, why: &str| Placement {
        linking: json!({"status": status, "method": choice.as_str(), "why": why}),
        reasons: Vec::new(),
    };
    if fresh.is_empty() {
        return quiet("none", "this fit calibrated no item");
    }
    if old.is_empty() {
        return quiet(
            "first",
            "no earlier version has calibrated items: this fit defines the scale",
        );
    }
    let options = LinkingOptions {
        method,
        drift_threshold: settings.drift_threshold,
        ..LinkingOptions::default()
    };
    let linking = match link(&old, &fresh, &options) {
        Ok(l) => l,
        Err(e) => {
            return Placement {
                linking: json!({"status": "failed", "method": choice.as_str(), "why": e.to_string()}),
                reasons: vec![format!(
                    "the new parameters could not be linked to the active version's scale: {e}"
                )],
            };
        }
    };
    let (a, b) = (linking.a, linking.b);
    for item in items.iter_mut().filter(|i| !i.provisional) {
        item.a /= a;
        item.b = a * item.b + b;
    }
    let drift: HashMap<&str, (f64, bool)> = linking
        .drift
        .iter()
        .map(|d| (d.item.as_str(), (d.area, d.excluded)))
        .collect();
    for item in items.iter_mut() {
        if let Some(&(area, excluded)) = drift.get(item.item.as_str()) {
            item.drift = Some(area);
            if excluded {
                item.flags.push(format!(
                    "drift: its curve moved by {area:.3} (> {}) since the active version",
                    settings.drift_threshold
                ));
            }
        }
    }
    let common = linking.drift.len();
    let drifting: Vec<&str> = linking
        .drift
        .iter()
        .filter(|d| d.excluded)
        .map(|d| d.item.as_str())
        .collect();
    let mut reasons = Vec::new();
    if linking.anchors.len() < settings.min_anchor_items {
        reasons.push(format!(
            "only {} anchor item(s) (of {common} calibrated in both versions) after leaving out \
             drifting ones; adaptive.activation.min_anchor_items is {}",
            linking.anchors.len(),
            settings.min_anchor_items
        ));
    }
    let share = drifting.len() as f64 / common as f64;
    if share > settings.max_drifting_share {
        reasons.push(format!(
            "{} of {common} common items drift ({:.0} %; adaptive.activation.max_drifting_share \
             is {:.0} %)",
            drifting.len(),
            100.0 * share,
            100.0 * settings.max_drifting_share
        ));
    }
    if !(a.is_finite() && a >= 1.0 / settings.max_scale_change && a <= settings.max_scale_change) {
        reasons.push(format!(
            "the scale changes too much: slope A = {a:.3} (adaptive.activation.max_scale_change \
             is {})",
            settings.max_scale_change
        ));
    }
    Placement {
        linking: json!({
            "status": "linked",
            "method": choice.as_str(),
            "A": a,
            "B": b,
            "anchors": linking.anchors,
            "common_items": common,
            "drifting": drifting,
            "drift_threshold": settings.drift_threshold,
            "drift": linking.drift,
        }),
        reasons,
    }
}

/// Rasch items misfit when an infit or outfit mean square leaves this range (Wright &
/// Linacre's "productive for measurement" band).
const RASCH_MEAN_SQUARE_RANGE: (f64, f64) = (0.5, 1.5);
/// Most flagged students the stored summary names.
const LISTED_PERSONS: usize = 100;

/// Item fit (S-X2; for Rasch, infit and outfit) and person fit (lz*) of this fit, on its
/// own scale and data; flags the misfitting items among those it calibrated (`provisional:
/// false` in `items`) and says why the version should not go live by itself.
pub fn check_fit(
    items: &mut [CalibratedItem],
    data: &ResponseMatrix,
    calibration: &Calibration,
    settings: &ActivationConfig,
) -> (Value, Vec<String>) {
    let options = FitOptions {
        alpha: settings.fit_alpha,
        ..FitOptions::default()
    };
    let report = match fit_report(calibration, data, &options) {
        Ok(r) => r,
        Err(e) => {
            return (
                json!({"error": e.to_string()}),
                vec![format!("the fit statistics could not be computed: {e}")],
            );
        }
    };
    let rasch = calibration.model == Model::Rasch;
    let (low, high) = RASCH_MEAN_SQUARE_RANGE;
    let mut checked = 0;
    let mut misfitting = Vec::new();
    for (item, fit) in items.iter_mut().zip(&report.items) {
        if item.provisional {
            continue;
        }
        let why = if rasch {
            let out = |x: Option<f64>| x.is_some_and(|v| !(low..=high).contains(&v));
            if fit.infit.is_some() || fit.outfit.is_some() {
                checked += 1;
            }
            (out(fit.infit) || out(fit.outfit)).then(|| {
                format!(
                    "misfit: infit {:.2}, outfit {:.2} (outside {low}–{high})",
                    fit.infit.unwrap_or(f64::NAN),
                    fit.outfit.unwrap_or(f64::NAN)
                )
            })
        } else {
            if fit.p_value.is_some() {
                checked += 1;
            }
            fit.p_value.filter(|&p| p < settings.fit_alpha).map(|p| {
                format!(
                    "misfit: S-X2 = {:.2} on {} df, p = {p:.2e} (< {})",
                    fit.s_x2.unwrap_or(f64::NAN),
                    fit.df,
                    settings.fit_alpha
                )
            })
        };
        if let Some(why) = why {
            item.flags.push(why);
            misfitting.push(item.item.clone());
        }
    }
    let mut reasons = Vec::new();
    let item_share = misfitting.len() as f64 / checked.max(1) as f64;
    if item_share > settings.max_misfitting_items {
        reasons.push(format!(
            "{} of {checked} items misfit ({:.0} %; adaptive.activation.max_misfitting_items is              {:.0} %): {}",
            misfitting.len(),
            100.0 * item_share,
            100.0 * settings.max_misfitting_items,
            misfitting.join(", ")
        ));
    }
    let with_statistic = report.persons_with_statistic();
    let flagged: Vec<Value> = report
        .persons
        .iter()
        .filter(|p| p.flagged)
        .map(|p| json!({"person": p.person, "theta": p.theta, "lz_star": p.lz_star.or(p.lz)}))
        .collect();
    let person_share = flagged.len() as f64 / with_statistic.max(1) as f64;
    if person_share > settings.max_misfitting_persons {
        reasons.push(format!(
            "{} of {with_statistic} students' answers misfit (lz* < {}: {:.0} %;              adaptive.activation.max_misfitting_persons is {:.0} %)",
            flagged.len(),
            report.person_cutoff,
            100.0 * person_share,
            100.0 * settings.max_misfitting_persons
        ));
    }
    let summary = json!({
        "model": report.model,
        "alpha": report.alpha,
        "n_persons": report.n_persons,
        "n_complete": report.n_complete,
        "items_checked": checked,
        "misfitting_items": misfitting,
        "items": report.items,
        "persons": {
            "cutoff": report.person_cutoff,
            "theta": report.person_theta,
            "with_statistic": with_statistic,
            "flagged": flagged.len(),
            "share_flagged": person_share,
            "listed": flagged.into_iter().take(LISTED_PERSONS).collect::<Vec<_>>(),
        },
    });
    (summary, reasons)
}

/// Items the new fit could not calibrate keep the calibrated (or imported) parameters of
/// the active version rather than falling back to provisional ones.
pub fn keep_known_parameters(items: &mut [CalibratedItem], active: &[CalibratedItem]) {
    let known: HashMap<&str, &CalibratedItem> = active
        .iter()
        .filter(|p| !p.provisional)
        .map(|p| (p.item.as_str(), p))
        .collect();
    for item in items.iter_mut().filter(|i| i.provisional) {
        if let Some(p) = known.get(item.item.as_str()) {
            item.a = p.a;
            item.b = p.b;
            item.c = p.c;
            item.provisional = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, a: f64, b: f64, provisional: bool) -> CalibratedItem {
        CalibratedItem {
            item: id.into(),
            a,
            b,
            c: 0.0,
            p_value: Some(0.5),
            responses: 100,
            provisional,
            drift: None,
            flags: Vec::new(),
        }
    }

    /// The active version's items on its scale; the new fit saw students 0.5 more able
    /// and 1.2 times as spread, so its own scale has θ_new = (θ_active − 0.5) / 1.2.
    fn versions(n: usize) -> (Vec<CalibratedItem>, Vec<CalibratedItem>) {
        let (big_a, big_b) = (1.2, 0.5);
        let active: Vec<CalibratedItem> = (0..n)
            .map(|i| {
                let b = -2.0 + 4.0 * i as f64 / (n - 1) as f64;
                item(&format!("q{i}"), 0.8 + 0.1 * (i % 5) as f64, b, false)
            })
            .collect();
        let new = active
            .iter()
            .map(|i| item(&i.item, i.a * big_a, (i.b - big_b) / big_a, false))
            .collect();
        (active, new)
    }

    #[test]
    fn fresh_parameters_come_back_to_the_active_scale() {
        let (active, mut new) = versions(12);
        // One item the new fit could not calibrate: it keeps the active parameters.
        new[3] = item("q3", 1.0, 0.0, true);
        let placed = place_on_scale(
            &mut new,
            &active,
            LinkingChoice::StockingLord,
            &ActivationConfig::default(),
            None,
        );
        assert!(placed.reasons.is_empty(), "{:?}", placed.reasons);
        assert_eq!(placed.linking["status"], "linked");
        assert!((placed.linking["A"].as_f64().unwrap() - 1.2).abs() < 1e-6);
        assert!((placed.linking["B"].as_f64().unwrap() - 0.5).abs() < 1e-6);
        for (n, o) in new.iter().zip(&active) {
            assert!(
                (n.a - o.a).abs() < 1e-6 && (n.b - o.b).abs() < 1e-6,
                "{n:?} {o:?}"
            );
            assert!(!n.provisional);
        }
        assert_eq!(placed.linking["anchors"].as_array().unwrap().len(), 11);
    }

    #[test]
    fn a_drifting_item_is_flagged_and_too_many_make_a_candidate() {
        let (active, mut new) = versions(12);
        new[5].b += 1.5;
        let settings = ActivationConfig::default();
        let placed = place_on_scale(&mut new, &active, LinkingChoice::Haebara, &settings, None);
        assert!(placed.reasons.is_empty(), "{:?}", placed.reasons);
        assert_eq!(placed.linking["drifting"], json!(["q5"]));
        assert!(new[5].flags[0].starts_with("drift"), "{:?}", new[5].flags);
        assert!(new[5].drift.unwrap() > 0.05);
        assert!(
            new.iter()
                .filter(|i| i.item != "q5")
                .all(|i| i.flags.is_empty())
        );
        // Four of twelve drift: over the 20 % allowed.
        let (active, mut new) = versions(12);
        for i in [1, 4, 7, 10] {
            new[i].b += 1.5;
        }
        let placed = place_on_scale(
            &mut new,
            &active,
            LinkingChoice::StockingLord,
            &settings,
            None,
        );
        assert_eq!(placed.reasons.len(), 1, "{:?}", placed.reasons);
        assert!(
            placed.reasons[0].contains("4 of 12"),
            "{:?}",
            placed.reasons
        );
    }

    #[test]
    fn too_few_anchors_or_a_large_change_of_scale_make_a_candidate() {
        let settings = ActivationConfig::default();
        let (active, mut new) = versions(4);
        let placed = place_on_scale(&mut new, &active, LinkingChoice::MeanSigma, &settings, None);
        assert!(
            placed.reasons[0].contains("only 4 anchor"),
            "{:?}",
            placed.reasons
        );
        let (active, mut new) = versions(12);
        for i in &mut new {
            i.a *= 3.0;
            i.b /= 3.0;
        }
        let placed = place_on_scale(&mut new, &active, LinkingChoice::MeanMean, &settings, None);
        assert!(
            placed.reasons.iter().any(|r| r.contains("slope A")),
            "{:?}",
            placed.reasons
        );
    }

    #[test]
    fn the_first_calibration_defines_the_scale() {
        let (_, mut new) = versions(6);
        let before = new.clone();
        let active: Vec<CalibratedItem> =
            new.iter().map(|i| item(&i.item, 1.0, 0.0, true)).collect();
        let placed = place_on_scale(
            &mut new,
            &active,
            LinkingChoice::StockingLord,
            &ActivationConfig::default(),
            None,
        );
        assert_eq!(placed.linking["status"], "first");
        assert!(placed.reasons.is_empty());
        assert_eq!(new, before);
    }
}

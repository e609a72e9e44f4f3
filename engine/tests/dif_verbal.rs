//! DIF of the verbal aggression data (Vansteelandt 2000; `verbal` in R difR: 24 items,
//! 316 persons, gender 0 = woman = reference, 1 = man = focal) against difR's own
//! published results for `difMH(verbal, group = 25, focal.name = 1)` and
//! `difLogistic(verbal, group = 25, focal.name = 1)` (the Anger column removed, as in the
//! help pages' examples and Magis et al. 2010).
//!
//! Sources, both in difR's test suite (github.com/adelahladka/difR, commit 4be45c2, the
//! development repository of the CRAN package, tests/testthat/):
//! - the printed outputs, 4 decimals: `_snaps/difMH.md` and `_snaps/difLogistic.md`
//!   (`type = "both"`, `"udif"` and `"nudif"`);
//! - the same runs' result objects, full precision: `fixtures/difMH_examples_1.rds` and
//!   `fixtures/difLogistic_examples_1.rds` (the test compares against them with
//!   `expect_equal`), read with Python's `rdata` and written below at 10 significant
//!   digits. difR's `parM0`/`seM0` are the full model (our M2); its `logitPar`/`logitSe`
//!   hold the score-only model (our M0) except for the four flagged items, which hold M2.

use examflow_engine::dif::{EtsCategory, Group, logistic_regression, mantel_haenszel};
use examflow_engine::irt::ResponseMatrix;

fn verbal() -> (ResponseMatrix, Vec<Group>) {
    let all = ResponseMatrix::from_csv_str(include_str!("../../data/dif/verbal.csv")).unwrap();
    assert_eq!((all.n_persons, all.n_items), (316, 25));
    assert_eq!(all.item_ids[24], "Gender");
    let groups = (0..all.n_persons)
        .map(|p| match all.get(p, 24) {
            Some(0) => Group::Reference,
            Some(1) => Group::Focal,
            other => panic!("gender {other:?}"),
        })
        .collect();
    (all.select_items(&(0..24).collect::<Vec<_>>()), groups)
}

/// Largest absolute difference, asserted below `tol`.
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_differences(what, got, want, tol, |g, w| (g - w).abs());
}

/// Largest relative difference, asserted below `tol`.
fn assert_close_relative(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_differences(what, got, want, tol, |g, w| (g / w - 1.0).abs());
}

fn assert_differences(
    what: &str,
    got: &[f64],
    want: &[f64],
    tol: f64,
    difference: impl Fn(f64, f64) -> f64,
) {
    assert_eq!(got.len(), want.len());
    let (i, diff) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| difference(g, w))
        .enumerate()
        .fold(
            (0, 0.0),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    println!("{what}: largest difference {diff:.1e} (item {})", i + 1);
    assert!(
        diff < tol,
        "{what}, item {}: got {}, difR {}",
        i + 1,
        got[i],
        want[i]
    );
}

/// difMH: continuity-corrected Mantel–Haenszel χ² (`MH`).
const MH_CHI_SQUARE: [f64; 24] = [
    1.707637128,
    2.148592702,
    0.992592723,
    1.930197142,
    2.953991388,
    9.603208644,
    0.001315823316,
    0.6752163379,
    0.8184535418,
    1.629228533,
    0.01517691687,
    4.118773354,
    0.1323892862,
    2.750113906,
    0.06829451686,
    6.302918405,
    6.839485474,
    0.2169616066,
    5.781701821,
    3.888019656,
    0.298867296,
    1.122040939,
    1.44908398,
    0.8390002061,
];
/// difMH: its p-value.
const MH_P: [f64; 24] = [
    0.1912922283,
    0.1427006373,
    0.3191095149,
    0.1647368782,
    0.08566574217,
    0.001942376676,
    0.9710636588,
    0.4112388441,
    0.3656327021,
    0.2018097865,
    0.9019529778,
    0.04240981804,
    0.715967495,
    0.09724750028,
    0.7938363399,
    0.01205393672,
    0.008916451739,
    0.6413648381,
    0.01619385468,
    0.0486317353,
    0.5845933973,
    0.289479411,
    0.2286749925,
    0.359682869,
];
/// difMH: `alphaMH`.
const MH_ALPHA: [f64; 24] = [
    1.700465483,
    1.770179449,
    1.448096656,
    1.939474513,
    1.979901536,
    2.880382947,
    0.9438638834,
    0.7193652582,
    1.528114551,
    1.684875321,
    1.09013779,
    2.345775387,
    0.7967411794,
    0.4994841231,
    1.176546676,
    0.3209294508,
    0.3746345123,
    0.7931230055,
    0.4616306553,
    0.4727419582,
    0.6373487114,
    0.6443924233,
    0.638539082,
    1.605342107,
];
/// difMH: `varLambda`, the variance of ln α_MH.
const MH_VAR_LN_ALPHA: [f64; 24] = [
    0.1293921983,
    0.1162354481,
    0.1054167832,
    0.1645985054,
    0.1278495114,
    0.1137109243,
    0.09352060902,
    0.1088520403,
    0.1449836105,
    0.1230992185,
    0.09954348253,
    0.1453018406,
    0.1603345921,
    0.1418060371,
    0.1308443985,
    0.1823710016,
    0.1334553758,
    0.1313249878,
    0.09804363557,
    0.1229289586,
    0.2898573304,
    0.1248737618,
    0.1055132494,
    0.1785217356,
];
/// difLogistic: the 2-df LR statistic (`Logistik`).
const BOTH_CHI_SQUARE: [f64; 24] = [
    2.001353937,
    3.354098811,
    2.474219894,
    4.729632932,
    4.140395477,
    11.41109401,
    1.606084973,
    1.633121331,
    2.698904763,
    2.45465285,
    2.099714183,
    3.687741914,
    1.219570776,
    4.730375209,
    1.045570475,
    7.69348126,
    10.26219409,
    1.701595498,
    7.237861988,
    5.867997823,
    1.276273576,
    2.952120315,
    2.695640169,
    1.35242405,
];
/// difLogistic: its p-value.
const BOTH_P: [f64; 24] = [
    0.3676304827,
    0.1869247021,
    0.2902217634,
    0.09396654484,
    0.1261608324,
    0.00332745675,
    0.4479639643,
    0.4419490542,
    0.2593822643,
    0.2930750894,
    0.3499877618,
    0.158203839,
    0.5434674911,
    0.09393167673,
    0.592866971,
    0.02134920812,
    0.005910073305,
    0.4270740981,
    0.02681132265,
    0.0531839345,
    0.5282757974,
    0.2285363141,
    0.259805999,
    0.508539684,
];
/// difLogistic: `deltaR2` (Nagelkerke R² of M2 minus M0).
const BOTH_DELTA_R2: [f64; 24] = [
    0.006731904524,
    0.01009785146,
    0.007386982506,
    0.01767886784,
    0.01247953379,
    0.03427299999,
    0.005584059108,
    0.004969039726,
    0.0106180656,
    0.008494287372,
    0.006042216587,
    0.01325352535,
    0.003920140486,
    0.01216010607,
    0.003307568553,
    0.02426026039,
    0.02766090138,
    0.005773795606,
    0.02316679401,
    0.02106226983,
    0.007824148976,
    0.0092076098,
    0.008265110258,
    0.005669327983,
];
/// difLogistic: `parM0` (intercept, score, group, score × group of our M2).
const M2_COEF: [[f64; 4]; 24] = [
    [-1.688214828, 0.2743077161, -0.4631693414, -0.003243765194],
    [-2.225804002, 0.2558096211, -1.579241004, 0.1023361735],
    [-2.922598696, 0.2737566197, 0.01664541614, -0.0406436777],
    [-1.157275034, 0.2859826602, -1.387121981, 0.06796465818],
    [-2.160692144, 0.2671922646, -1.615319428, 0.0969556115],
    [-2.805010007, 0.2696386414, -0.776271427, -0.0245933796],
    [-1.804873648, 0.2042666276, 0.7398445745, -0.07506673404],
    [-3.965458048, 0.2725409702, 0.4959646327, -0.006449398056],
    [-3.805386677, 0.2141993791, 0.2918461698, -0.05493399717],
    [-1.385843385, 0.2238241764, -1.01963397, 0.05483734073],
    [-4.022054079, 0.3158698453, 1.338714836, -0.1064005622],
    [-3.13860578, 0.2004982551, -0.8284078747, 0.01430269119],
    [-1.939272151, 0.2839471405, -0.5624985871, 0.09180223396],
    [-3.96409329, 0.3787947638, 1.4770379, -0.07423748918],
    [-3.781272401, 0.2562205754, -0.9373942735, 0.0475118189],
    [-2.228830026, 0.258628299, 0.7903189483, 0.02156589088],
    [-4.188302063, 0.3390999565, 1.975301005, -0.08680648595],
    [-5.573564516, 0.3294701313, 1.650496048, -0.1058385756],
    [-2.936705713, 0.2214260445, 1.058145068, -0.02072685678],
    [-5.109672713, 0.2836055564, 1.901143799, -0.08294841462],
    [-5.413798377, 0.2159684976, -1.246943266, 0.09541294604],
    [-2.139699583, 0.2422052976, -0.4416508146, 0.09244026415],
    [-3.257865558, 0.2402607268, -0.009941780598, 0.04144580071],
    [-4.704799339, 0.2422332374, -1.237516564, 0.05241866854],
];
/// difLogistic: `seM0`.
const M2_SE: [[f64; 4]; 24] = [
    [0.37358601, 0.03977531735, 0.8702581265, 0.08227270782],
    [0.3801144298, 0.03537801506, 1.043268635, 0.08942241229],
    [0.4217515854, 0.03628065558, 0.9118573712, 0.07148626982],
    [0.3783941447, 0.04546666299, 0.9741763183, 0.102658123],
    [0.3821790212, 0.03686001119, 1.04492824, 0.09131285889],
    [0.4133607361, 0.0359462329, 0.9977723378, 0.07406599132],
    [0.3469360625, 0.03100479404, 0.7298441088, 0.05980658741],
    [0.5100671939, 0.03747487, 1.026085778, 0.07648065509],
    [0.505950677, 0.03461636978, 1.098691297, 0.07208681424],
    [0.3464409876, 0.03461518672, 0.8722701075, 0.07960420293],
    [0.5183535801, 0.04080227233, 0.9338873652, 0.07131250407],
    [0.4318569764, 0.0314841569, 1.098099306, 0.0732420652],
    [0.383021472, 0.03984481076, 1.007927102, 0.1081793916],
    [0.5297168213, 0.04721057432, 0.9856473284, 0.09082583246],
    [0.4913106374, 0.03599270243, 1.227040227, 0.08486201652],
    [0.3813001637, 0.03568423428, 0.9000835618, 0.09189945618],
    [0.5382125373, 0.04312693188, 0.937828986, 0.07970419619],
    [0.7149706076, 0.04711986861, 1.220557487, 0.0809322522],
    [0.4128898904, 0.03206294324, 0.8230194881, 0.06689089982],
    [0.6652568386, 0.04312213347, 1.082961755, 0.07353559294],
    [0.8612595273, 0.05097572098, 1.9858832, 0.1145378948],
    [0.3717679825, 0.03410260748, 0.9466903611, 0.09183642656],
    [0.4407077401, 0.03379061675, 0.9737073458, 0.07659400836],
    [0.6294528833, 0.04035218615, 1.639820739, 0.09910281409],
];
/// difLogistic: `logitPar` (intercept, score of our M0, except the flagged items).
const M0_COEF: [[f64; 2]; 24] = [
    [-1.74168794, 0.2674078581],
    [-2.47120933, 0.2702074133],
    [-2.87257969, 0.2589572005],
    [-1.349290104, 0.2878523624],
    [-2.40287258, 0.279000723],
    [-2.805010007, 0.2696386414],
    [-1.635201651, 0.1854484624],
    [-3.852310947, 0.2717852951],
    [-3.712793877, 0.1988906756],
    [-1.545282988, 0.2299158795],
    [-3.665922101, 0.2866691063],
    [-3.245221164, 0.1976933918],
    [-2.029181822, 0.3003316792],
    [-3.594497354, 0.3594821004],
    [-3.942541273, 0.2634544009],
    [-2.228830026, 0.258628299],
    [-4.188302063, 0.3390999565],
    [-5.111369716, 0.2997043884],
    [-2.936705713, 0.2214260445],
    [-4.518646492, 0.2571034479],
    [-5.686152742, 0.2383651996],
    [-2.206592056, 0.2590421834],
    [-3.256095255, 0.2498202903],
    [-4.908559814, 0.2494297522],
];
/// difLogistic: `logitSe`.
const M0_SE: [[f64; 2]; 24] = [
    [0.3351312749, 0.034229001],
    [0.3541491448, 0.03216821014],
    [0.3693056929, 0.0307360479],
    [0.3441293042, 0.0393668444],
    [0.354875021, 0.03321385896],
    [0.4133607361, 0.0359462329],
    [0.3019423146, 0.02621831972],
    [0.4412223967, 0.03259699725],
    [0.4450734131, 0.02997269406],
    [0.316762838, 0.03072440776],
    [0.4263550184, 0.03319280269],
    [0.3944075901, 0.02799399384],
    [0.3543350748, 0.03703523268],
    [0.4387857707, 0.0396279455],
    [0.4501484912, 0.03240000776],
    [0.3813001637, 0.03568423428],
    [0.5382125373, 0.04312693188],
    [0.5777731551, 0.03817866115],
    [0.4128898904, 0.03206294324],
    [0.5177929311, 0.0343847484],
    [0.7772190778, 0.04542998785],
    [0.3413022745, 0.03164039042],
    [0.3920907125, 0.03028434967],
    [0.5826434429, 0.03672743345],
];

/// Printed by `difMH` (`_snaps/difMH.md`): deltaMH, and the log odds-ratio statistic
/// `ln α / √var` of `MHstat = "logOR"`.
const MH_DELTA_PRINTED: [f64; 24] = [
    -1.2476, -1.3420, -0.8701, -1.5567, -1.6052, -2.4861, 0.1358, 0.7741, -0.9965, -1.2260,
    -0.2028, -2.0036, 0.5340, 1.6313, -0.3821, 2.6709, 2.3072, 0.5447, 1.8165, 1.7606, 1.0585,
    1.0327, 1.0541, -1.1123,
];
const MH_LOG_OR_PRINTED: [f64; 24] = [
    1.4759, 1.6751, 1.1404, 1.6327, 1.9103, 3.1373, -0.1889, -0.9984, 1.1136, 1.4869, 0.2735,
    2.2368, -0.5675, -1.8434, 0.4495, -2.6614, -2.6876, -0.6396, -2.4687, -2.1368, -0.8366,
    -1.2436, -1.3810, 1.1203,
];

/// Printed by `difLogistic(..., type = "udif")` and `type = "nudif"`
/// (`_snaps/difLogistic.md`): statistic, p-value and ΔR².
const UDIF_CHI_SQUARE: [f64; 24] = [
    1.9998, 1.9065, 2.1606, 4.2639, 2.9036, 11.3031, 0.0955, 1.6260, 2.1397, 1.9563, 0.0042,
    3.6491, 0.4234, 4.0968, 0.7163, 7.6372, 9.1401, 0.0928, 7.1433, 4.6496, 0.5258, 1.8339, 2.3918,
    1.0577,
];
const UDIF_P: [f64; 24] = [
    0.1573, 0.1673, 0.1416, 0.0389, 0.0884, 0.0008, 0.7573, 0.2023, 0.1435, 0.1619, 0.9485, 0.0561,
    0.5153, 0.0430, 0.3974, 0.0057, 0.0025, 0.7607, 0.0075, 0.0311, 0.4684, 0.1757, 0.1220, 0.3037,
];
const UDIF_DELTA_R2: [f64; 24] = [
    0.0067, 0.0058, 0.0065, 0.0159, 0.0088, 0.0340, 0.0003, 0.0049, 0.0084, 0.0068, 0.0000, 0.0131,
    0.0014, 0.0105, 0.0023, 0.0241, 0.0247, 0.0003, 0.0229, 0.0167, 0.0032, 0.0057, 0.0073, 0.0044,
];
const NUDIF_CHI_SQUARE: [f64; 24] = [
    0.0016, 1.4476, 0.3136, 0.4658, 1.2367, 0.1080, 1.5106, 0.0071, 0.5592, 0.4983, 2.0955, 0.0386,
    0.7962, 0.6335, 0.3293, 0.0563, 1.1221, 1.6088, 0.0945, 1.2184, 0.7505, 1.1182, 0.3039, 0.2947,
];
const NUDIF_P: [f64; 24] = [
    0.9686, 0.2289, 0.5755, 0.4949, 0.2661, 0.7425, 0.2190, 0.9330, 0.4546, 0.4802, 0.1477, 0.8442,
    0.3722, 0.4261, 0.5661, 0.8124, 0.2895, 0.2047, 0.7585, 0.2697, 0.3863, 0.2903, 0.5815, 0.5872,
];
const NUDIF_DELTA_R2: [f64; 24] = [
    0.0000, 0.0043, 0.0009, 0.0017, 0.0037, 0.0003, 0.0053, 0.0000, 0.0022, 0.0017, 0.0060, 0.0001,
    0.0026, 0.0016, 0.0010, 0.0002, 0.0030, 0.0055, 0.0003, 0.0043, 0.0046, 0.0035, 0.0009, 0.0012,
];

/// R's `glm` computes its standard errors from the IRLS weights of the iteration before its
/// last (it stops on a relative deviance change below 1e-8), not at the estimate itself,
/// so they differ from the SEs at the maximum by up to 2.2e-4 relative (S4WantShout's M2
/// group effect, 1.09810 in difR against 1.09834 here; S3DoScold's below).
const SE_RELATIVE_TOLERANCE: f64 = 3e-4;

/// Half a unit in the 4th decimal, plus rounding slack.
const PRINTED: f64 = 5.1e-5;

#[test]
fn mantel_haenszel_matches_difr() {
    let (responses, groups) = verbal();
    let mh = mantel_haenszel(&responses, &groups).unwrap();
    let column = |f: fn(&examflow_engine::dif::MhDif) -> f64| mh.iter().map(f).collect::<Vec<_>>();
    assert_close("MH χ²", &column(|d| d.chi_square), &MH_CHI_SQUARE, 1e-8);
    assert_close("MH p", &column(|d| d.p_value), &MH_P, 2e-7);
    assert_close("α_MH", &column(|d| d.alpha), &MH_ALPHA, 1e-8);
    // difR's Phillips–Holland variance of ln α equals the RBG variance used here.
    let var_ln = column(|d| (d.se / 2.35).powi(2));
    assert_close("var ln α", &var_ln, &MH_VAR_LN_ALPHA, 1e-9);
    assert_close("MH D-DIF", &column(|d| d.d_dif), &MH_DELTA_PRINTED, PRINTED);
    assert_close(
        "log OR z",
        &column(|d| -d.d_dif / d.se),
        &MH_LOG_OR_PRINTED,
        PRINTED,
    );
    for d in &mh {
        // Persons in the score levels where both groups are present.
        assert!(d.reference <= 243 && d.focal <= 73, "{d:?}");
    }
    // The ETS categories (ours; difR prints |D| bands only): S2WantShout is C, and an item
    // whose χ² is not significant is A.
    assert_eq!(mh[5].category, EtsCategory::C, "{:?}", mh[5]);
    for d in mh.iter().filter(|d| d.p_value >= 0.05) {
        assert_eq!(d.category, EtsCategory::A, "{d:?}");
    }
}

#[test]
fn logistic_regression_matches_difr() {
    let (responses, groups) = verbal();
    let lr = logistic_regression(&responses, &groups).unwrap();
    assert_eq!(lr.len(), 24);
    for d in &lr {
        assert_eq!((d.reference, d.focal), (243, 73), "{d:?}");
        assert!(d.m0.converged && d.m1.converged && d.m2.converged, "{d:?}");
        assert!(
            !d.m0.separated && !d.m1.separated && !d.m2.separated,
            "{d:?}"
        );
    }
    let column = |f: &dyn Fn(&examflow_engine::dif::LogisticDif) -> f64| {
        lr.iter().map(f).collect::<Vec<_>>()
    };
    // type = "both" (difR's default), full precision.
    assert_close(
        "both χ²",
        &column(&|d| d.both.chi_square),
        &BOTH_CHI_SQUARE,
        1e-7,
    );
    assert_close("both p", &column(&|d| d.both.p_value), &BOTH_P, 1e-7);
    assert_close(
        "both ΔR²",
        &column(&|d| d.both.delta_r2),
        &BOTH_DELTA_R2,
        1e-9,
    );
    for (k, name) in ["b0", "b1", "b2", "b3"].iter().enumerate() {
        let m2 = |d: &examflow_engine::dif::LogisticDif| match k {
            0 => (d.m2.intercept.value, d.m2.intercept.se),
            1 => (d.m2.score.value, d.m2.score.se),
            2 => d.m2.group.map(|e| (e.value, e.se)).unwrap(),
            _ => d.m2.score_by_group.map(|e| (e.value, e.se)).unwrap(),
        };
        let want: Vec<f64> = M2_COEF.iter().map(|r| r[k]).collect();
        let want_se: Vec<f64> = M2_SE.iter().map(|r| r[k]).collect();
        assert_close(&format!("M2 {name}"), &column(&|d| m2(d).0), &want, 1e-6);
        assert_close_relative(
            &format!("M2 SE {name}"),
            &column(&|d| m2(d).1),
            &want_se,
            SE_RELATIVE_TOLERANCE,
        );
    }
    // The score-only model, for the items difR did not flag.
    let flagged = [5, 15, 16, 18]; // S2WantShout, S2DoCurse, S2DoScold, S3DoCurse
    let kept: Vec<usize> = (0..24).filter(|i| !flagged.contains(i)).collect();
    let pick = |v: Vec<f64>| kept.iter().map(|&i| v[i]).collect::<Vec<_>>();
    for (k, name) in ["b0", "b1"].iter().enumerate() {
        let m0 = |d: &examflow_engine::dif::LogisticDif| {
            if k == 0 { d.m0.intercept } else { d.m0.score }
        };
        let want = pick(M0_COEF.iter().map(|r| r[k]).collect());
        let want_se = pick(M0_SE.iter().map(|r| r[k]).collect());
        assert_close(
            &format!("M0 {name}"),
            &pick(column(&|d| m0(d).value)),
            &want,
            1e-6,
        );
        assert_close_relative(
            &format!("M0 SE {name}"),
            &pick(column(&|d| m0(d).se)),
            &want_se,
            SE_RELATIVE_TOLERANCE,
        );
    }
    let detected: Vec<usize> = (0..24).filter(|&i| lr[i].both.p_value < 0.05).collect();
    assert_eq!(detected, flagged);
    // Both classifications print A for every item (largest ΔR² 0.0343, S2WantShout).
    for d in &lr {
        assert_eq!(d.jodoin_gierl, examflow_engine::dif::DeltaR2Category::A);
        assert_eq!(d.zumbo_thomas, examflow_engine::dif::DeltaR2Category::A);
    }
    // type = "udif" and "nudif", as printed.
    assert_close(
        "udif χ²",
        &column(&|d| d.uniform.chi_square),
        &UDIF_CHI_SQUARE,
        PRINTED,
    );
    assert_close("udif p", &column(&|d| d.uniform.p_value), &UDIF_P, PRINTED);
    assert_close(
        "udif ΔR²",
        &column(&|d| d.uniform.delta_r2),
        &UDIF_DELTA_R2,
        PRINTED,
    );
    assert_close(
        "nudif χ²",
        &column(&|d| d.non_uniform.chi_square),
        &NUDIF_CHI_SQUARE,
        PRINTED,
    );
    assert_close(
        "nudif p",
        &column(&|d| d.non_uniform.p_value),
        &NUDIF_P,
        PRINTED,
    );
    assert_close(
        "nudif ΔR²",
        &column(&|d| d.non_uniform.delta_r2),
        &NUDIF_DELTA_R2,
        PRINTED,
    );
}

/// Not published: an independent check of the SEs at the maximum. S3DoScold's M2 fitted
/// to the 316 individual responses by plain Newton in numpy (50 iterations from zero, then
/// `sqrt(diag(inv(X' diag(μ(1 − μ)) X)))`, X = [1, score, gender, score × gender]), in a
/// throwaway venv. difR's estimates agree to 1e-7; its SEs are those of `glm`'s
/// penultimate iteration (see `SE_RELATIVE_TOLERANCE`).
#[test]
fn standard_errors_are_those_at_the_maximum() {
    let (responses, groups) = verbal();
    let lr = logistic_regression(&responses, &groups).unwrap();
    let m2 = &lr[19].m2;
    assert_eq!(lr[19].item, "S3DoScold");
    let got = [
        (m2.intercept.value, m2.intercept.se),
        (m2.score.value, m2.score.se),
        m2.group.map(|e| (e.value, e.se)).unwrap(),
        m2.score_by_group.map(|e| (e.value, e.se)).unwrap(),
    ];
    let numpy = [
        (-5.10967276, 0.6653200274),
        (0.2836055592, 0.04312564906),
        (1.901143846, 1.083000572),
        (-0.08294841741, 0.07353765458),
    ];
    for (g, w) in got.iter().zip(numpy) {
        assert!(
            (g.0 - w.0).abs() < 1e-8 && (g.1 - w.1).abs() < 1e-9,
            "{got:?}"
        );
    }
}

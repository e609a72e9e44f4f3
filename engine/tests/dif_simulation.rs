//! DIF planted in simulated data: the logistic regression tests find the uniform and the
//! non-uniform item; without planted DIF the false-positive rates stay near the nominal
//! 5 %; with it, the null items' rates rise a little (the DIF items are part of the total
//! score that matches the groups: no purification). Run with `--nocapture` to see the rates.

use examflow_engine::dif::{Group, logistic_regression, mantel_haenszel};
use examflow_engine::irt::{ResponseMatrix, SplitMix64};

const N_ITEMS: usize = 30;
const PER_GROUP: usize = 1500;
const REPLICATIONS: u64 = 50;
/// Item 0: 0.6 logits harder for the focal group (uniform DIF).
const UNIFORM: usize = 0;
/// Item 1: discrimination 1.8 for the reference group and 0.6 for the focal group, same
/// difficulty (non-uniform DIF, crossing curves).
const NON_UNIFORM: usize = 1;

/// One replication: Rasch items (difficulty −2..2) but, when `plant`, for the two DIF
/// items; the focal group's ability is N(−0.5, 1) (impact), the reference group's N(0, 1).
fn simulate(seed: u64, plant: bool) -> (ResponseMatrix, Vec<Group>) {
    let mut rng = SplitMix64::new(seed);
    let mut rows = Vec::with_capacity(2 * PER_GROUP);
    let mut groups = Vec::with_capacity(2 * PER_GROUP);
    for p in 0..2 * PER_GROUP {
        let focal = p % 2 == 1;
        let theta = rng.normal() - if focal { 0.5 } else { 0.0 };
        let row = (0..N_ITEMS)
            .map(|i| {
                let mut a = 1.0;
                let mut b = -2.0 + 4.0 * i as f64 / (N_ITEMS - 1) as f64;
                if i == UNIFORM && focal && plant {
                    b += 0.6;
                }
                if i == NON_UNIFORM && plant {
                    b = 0.0;
                    a = if focal { 0.6 } else { 1.8 };
                }
                Some(u8::from(
                    rng.uniform() < 1.0 / (1.0 + (-a * (theta - b)).exp()),
                ))
            })
            .collect();
        rows.push(row);
        groups.push(if focal {
            Group::Focal
        } else {
            Group::Reference
        });
    }
    (ResponseMatrix::from_rows(rows).unwrap(), groups)
}

/// Rejections at .05 of the items from `first` on: uniform, non-uniform, both (logistic
/// regression) and Mantel–Haenszel; and the number of items tested.
fn rejections(
    responses: &ResponseMatrix,
    groups: &[Group],
    first: usize,
    counts: &mut [usize; 4],
) -> usize {
    let lr = logistic_regression(responses, groups).unwrap();
    let mh = mantel_haenszel(responses, groups).unwrap();
    for (d, m) in lr.iter().zip(&mh).skip(first) {
        let p = [
            d.uniform.p_value,
            d.non_uniform.p_value,
            d.both.p_value,
            m.p_value,
        ];
        for (count, p) in counts.iter_mut().zip(p) {
            *count += usize::from(p < 0.05);
        }
        assert_eq!((d.reference, d.focal), (PER_GROUP, PER_GROUP));
    }
    N_ITEMS - first
}

fn rates(what: &str, counts: [usize; 4], tests: usize) -> [f64; 4] {
    let rates = counts.map(|r| r as f64 / tests as f64);
    println!(
        "{what}: false positives at .05 over {tests} null items: uniform {:.3}, \
         non-uniform {:.3}, both {:.3}, Mantel-Haenszel {:.3}",
        rates[0], rates[1], rates[2], rates[3]
    );
    rates
}

#[test]
fn null_items_reject_at_the_nominal_rate() {
    let (mut counts, mut tests) = ([0; 4], 0);
    for seed in 0..REPLICATIONS {
        let (responses, groups) = simulate(2000 + seed, false);
        tests += rejections(&responses, &groups, 0, &mut counts);
    }
    // 1500 tests: the binomial SE of a 5 % rate is 0.56 %.
    for rate in rates("no planted DIF", counts, tests) {
        assert!((0.035..=0.065).contains(&rate), "{counts:?} of {tests}");
    }
}

#[test]
fn planted_dif_is_found() {
    let (mut counts, mut tests) = ([0; 4], 0);
    for seed in 0..REPLICATIONS {
        let (responses, groups) = simulate(1000 + seed, true);
        let lr = logistic_regression(&responses, &groups).unwrap();
        let u = &lr[UNIFORM];
        assert!(u.uniform.p_value < 1e-4 && u.both.p_value < 1e-4, "{u:?}");
        assert!(u.m1.group.unwrap().value < -0.3, "{u:?}"); // harder for the focal group
        let n = &lr[NON_UNIFORM];
        assert!(
            n.non_uniform.p_value < 1e-4 && n.both.p_value < 1e-4,
            "{n:?}"
        );
        assert!(n.m2.score_by_group.unwrap().value < 0.0, "{n:?}"); // flatter for focal
        tests += rejections(&responses, &groups, 2, &mut counts);
    }
    // The two DIF items in the matching score inflate the null items' rates somewhat.
    for rate in rates("2 DIF items of 30", counts, tests) {
        assert!((0.03..=0.10).contains(&rate), "{counts:?} of {tests}");
    }
}

/// Persons with a missing response and persons of neither group are left out of both
/// procedures alike.
#[test]
fn both_procedures_see_the_same_persons() {
    let (responses, mut groups) = simulate(7, true);
    let mut data = responses.data.clone();
    for p in (0..responses.n_persons).step_by(10) {
        data[p * N_ITEMS + p % N_ITEMS] = examflow_engine::irt::MISSING;
    }
    for g in groups.iter_mut().skip(5).step_by(10) {
        *g = Group::Other;
    }
    let responses = ResponseMatrix::new(
        responses.item_ids.clone(),
        responses.person_ids.clone(),
        data,
    )
    .unwrap();
    let complete = |g: Group| {
        (0..responses.n_persons)
            .filter(|&p| {
                groups[p] == g && !responses.row(p).contains(&examflow_engine::irt::MISSING)
            })
            .count()
    };
    let lr = logistic_regression(&responses, &groups).unwrap();
    let mh = mantel_haenszel(&responses, &groups).unwrap();
    let (reference, focal) = (complete(Group::Reference), complete(Group::Focal));
    assert_eq!((reference, focal), (1200, 1200));
    for (l, m) in lr.iter().zip(&mh) {
        assert_eq!((l.reference, l.focal), (reference, focal));
        // Mantel–Haenszel counts only the score levels where both groups meet.
        assert!(m.reference <= reference && m.focal <= focal && m.reference > 1100);
    }
}

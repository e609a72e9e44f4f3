//! Wall time of `calibrate` (2PL, or 3PL with `--3pl`) with each standard-error method on
//! simulated data.
//!
//! ```text
//! cargo run -p examflow-engine --release --example se_timing [-- --csv DIR]
//! ```
//!
//! Data sets (from `simulate_2pl`, SplitMix64): 20 000 persons × 50 items with 10 %
//! missing, and 10 000 × 100 with 20 % missing. Each cell is the median of 5 runs (the
//! machine may be shared; the CPU column, all threads, is less sensitive to that). `--csv DIR` also writes both matrices as CSV (for
//! `benches/python/numpy_em.py`). `--repeats N` changes the number of runs, `--se NAME`
//! times one method only, `--large-only` the second data set only, `--3pl` a 3PL data set
//! instead (5 000 × 30, 10 % missing, c ~ U(0.1, 0.25)).

use std::time::Instant;

use examflow_engine::irt::{
    CalibrationOptions, ItemParams, MISSING, Model, ResponseMatrix, SeMethod, SplitMix64,
    calibrate, simulate_2pl, simulate_responses,
};

/// CPU time (user + system, all threads) of this process so far, from /proc (Linux; 0
/// elsewhere), in seconds (clock ticks assumed 100 Hz).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn write_csv(data: &ResponseMatrix, path: &std::path::Path) {
    let mut s = data.item_ids.join(",");
    s.push('\n');
    for p in 0..data.n_persons {
        let row: Vec<&str> = data
            .row(p)
            .iter()
            .map(|&v| match v {
                MISSING => "",
                0 => "0",
                _ => "1",
            })
            .collect();
        s.push_str(&row.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).expect("write csv");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let csv_dir = args
        .iter()
        .position(|a| a == "--csv")
        .and_then(|i| args.get(i + 1));
    let repeats: usize = args
        .iter()
        .position(|a| a == "--repeats")
        .and_then(|i| args.get(i + 1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(5);
    let methods = [
        SeMethod::None,
        SeMethod::Auto,
        SeMethod::Oakes,
        SeMethod::Xpd,
        SeMethod::ItemBlockXpd,
        SeMethod::Sem,
        SeMethod::ObservedHessian,
    ];
    let only: Option<SeMethod> = args
        .iter()
        .position(|a| a == "--se")
        .and_then(|i| args.get(i + 1))
        .map(|x| SeMethod::parse(x).expect("--se NAME"));
    let three_pl = args.iter().any(|a| a == "--3pl");
    let model = if three_pl {
        Model::ThreePl
    } else {
        Model::TwoPl
    };
    let sizes: Vec<(usize, usize, f64, u64)> = if three_pl {
        vec![(5_000, 30, 0.1, 3)]
    } else if args.iter().any(|a| a == "--large-only") {
        vec![(10_000, 100, 0.2, 2)]
    } else {
        vec![(20_000, 50, 0.1, 1), (10_000, 100, 0.2, 2)]
    };
    println!(
        "| data | se | median wall s | min wall s | median CPU s | iterations | se_method used |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (persons, items, missing, seed) in sizes {
        let data = if three_pl {
            // 2PL items with c ~ U(0.1, 0.25)
            let (_, truth, _) = simulate_2pl(1, items, seed, 0.0);
            let mut rng = SplitMix64::new(seed);
            let params: Vec<ItemParams> = truth
                .iter()
                .map(|t| ItemParams::new(t.item.clone(), t.a, t.b, 0.1 + 0.15 * rng.uniform()))
                .collect();
            simulate_responses(&params, persons, seed, missing).0
        } else {
            simulate_2pl(persons, items, seed, missing).0
        };
        if let Some(dir) = csv_dir {
            let path = std::path::Path::new(dir).join(format!("sim_{persons}x{items}.csv"));
            write_csv(&data, &path);
        }
        for se in methods {
            if only.is_some_and(|o| o != se) {
                continue;
            }
            let mut opts = CalibrationOptions::new(model);
            opts.se_method = se;
            let mut secs = Vec::new();
            let mut cpu = Vec::new();
            let mut last = None;
            for _ in 0..repeats {
                let (t, c) = (Instant::now(), cpu_secs());
                let cal = calibrate(&data, &opts).expect("calibrate");
                secs.push(t.elapsed().as_secs_f64());
                cpu.push(cpu_secs() - c);
                last = Some(cal);
            }
            let cal = last.expect("one run");
            let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "| {persons} × {items}, {:.0} % missing | {se:?} | {:.3} | {min:.3} | {:.2} | {} | {:?} |",
                missing * 100.0,
                median(secs),
                median(cpu),
                cal.iterations,
                cal.se_method
            );
        }
    }
}

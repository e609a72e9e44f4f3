//! Item and person fit ([`FitReport`]) as `examflow calibrate --fit` prints it: CSV tables
//! and a table for people (JSON is the report itself).

use std::fmt::Write as _;

use examflow_engine::irt::{FitReport, Theta};

use crate::calibrate_cmd::csv_field;

fn num(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or(String::new(), |v| format!("{v:.6}"))
}

fn theta(t: Theta) -> String {
    match t {
        Theta::Finite(x) => format!("{x:.6}"),
        Theta::PlusInfinity => "inf".into(),
        Theta::MinusInfinity => "-inf".into(),
        Theta::Undefined => String::new(),
    }
}

/// Two CSV tables after a blank line each: items (`item,s_x2,df,p_value,rmsea,infit,
/// outfit,z_infit,z_outfit,n_responses,flagged`), then persons (`person,theta,lz,lz_star,
/// infit,outfit,n_answered,flagged`).
pub fn fit_csv(report: &FitReport) -> String {
    let mut out = String::from(
        "\nitem,s_x2,df,p_value,rmsea,infit,outfit,z_infit,z_outfit,n_responses,flagged\n",
    );
    for i in &report.items {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&i.item),
            num(i.s_x2),
            i.df,
            num(i.p_value),
            num(i.rmsea),
            num(i.infit),
            num(i.outfit),
            num(i.z_infit),
            num(i.z_outfit),
            i.n_responses,
            i.flagged
        );
    }
    out.push_str("\nperson,theta,lz,lz_star,infit,outfit,n_answered,flagged\n");
    for p in &report.persons {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_field(&p.person),
            theta(p.theta),
            num(p.lz),
            num(p.lz_star),
            num(p.infit),
            num(p.outfit),
            p.n_answered,
            p.flagged
        );
    }
    out
}

/// Most flagged persons the table lists by name (the CSV and JSON list everyone).
const LISTED_PERSONS: usize = 20;

/// The fit section of `calibrate --format table`.
pub fn fit_table(report: &FitReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nItem fit: S-X2 on the {} of {} persons who answered every item; flagged when p < {}",
        report.n_complete, report.n_persons, report.alpha
    );
    let width = report
        .items
        .iter()
        .map(|i| i.item.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:width$}  {:>9} {:>4} {:>8} {:>7} {:>7} {:>7}",
        "item", "S-X2", "df", "p", "RMSEA", "infit", "outfit"
    );
    let f = |x: Option<f64>, digits: usize| {
        x.filter(|v| v.is_finite())
            .map_or("-".to_string(), |v| format!("{v:.digits$}"))
    };
    for i in &report.items {
        let _ = writeln!(
            out,
            "{:width$}  {:>9} {:>4} {:>8} {:>7} {:>7} {:>7}{}",
            i.item,
            f(i.s_x2, 3),
            i.df,
            f(i.p_value, 4),
            f(i.rmsea, 3),
            f(i.infit, 3),
            f(i.outfit, 3),
            if i.flagged { "  MISFIT" } else { "" }
        );
    }
    let with_statistic = report.persons_with_statistic();
    let flagged: Vec<_> = report.persons.iter().filter(|p| p.flagged).collect();
    let _ = writeln!(
        out,
        "\nPerson fit (lz*, flagged below {}): {} of {} persons flagged ({:.1} %); {} without a \
         statistic (all right, all wrong or too few answers)",
        report.person_cutoff,
        flagged.len(),
        with_statistic,
        100.0 * flagged.len() as f64 / with_statistic.max(1) as f64,
        report.persons.len() - with_statistic
    );
    for p in flagged.iter().take(LISTED_PERSONS) {
        let _ = writeln!(
            out,
            "  {}  theta {}  lz* {}",
            p.person,
            theta(p.theta),
            f(p.lz_star.or(p.lz), 3)
        );
    }
    if flagged.len() > LISTED_PERSONS {
        let _ = writeln!(
            out,
            "  ... and {} more (--format csv or json lists all)",
            flagged.len() - LISTED_PERSONS
        );
    }
    out
}

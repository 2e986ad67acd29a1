//! How a period without a reading is billed (SPEC §1): on the average monthly
//! consumption for the first six months in a row without a reading, then on the
//! consumption norm. Pure functions of a meter's reading history, so the rule is
//! tested here, apart from the database.
//!
//! - History: for each period before the report's one, the meter's latest accepted
//!   reading of that period, plus the registry's baseline (the last reading billing
//!   knew at import) for a period with no accepted reading.
//! - `months_missing`: periods from the last history point (exclusive) up to and
//!   including the report's period. No history at all: unknown (empty).
//! - The average looks at the points of the twelve months up to the last one, and at
//!   each step between two consecutive points: its consumption is the sum over
//!   zones of (later − earlier). A step where a zone went down (a register rollover
//!   or a replaced meter: the registry view gives no register size to tell) or the
//!   zone count changed is left out. Average = counted consumption / counted months.
//! - Where that gives no average — the system holds fewer than two readings, or no
//!   step between them can be counted — billing's own `average_kwh` from the
//!   registry stands in for it, if the registry gives one (SPEC §4.5). A meter with
//!   no history at all has an unknown `months_missing`; billing's average is still
//!   used for it, since billing, which knows the meter, states one.
//! - `method`: `average` while `months_missing` ≤ 6 (or unknown) and an average
//!   exists; otherwise `normative`, with the registry's `normative_kwh` (empty if the
//!   registry has none).

use shared::events::Period;

/// Months in a row billed on the average; from the next one on, the norm.
pub const AVERAGE_MONTHS: i64 = 6;
/// How far back from the last reading the average looks.
pub const AVERAGE_WINDOW_MONTHS: i64 = 12;

/// A reading in the history: one value per zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub period: Period,
    pub values: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Average,
    Normative,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Average => "average",
            Method::Normative => "normative",
        }
    }
}

/// One line of the missing-readings report, apart from the meter's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub months_missing: Option<i64>,
    pub method: Method,
    /// kWh for the period, at most three decimals; `None` when nothing is known.
    pub kwh: Option<String>,
}

/// The history before `period`: accepted readings (one per period, already the
/// latest of each) and the registry baseline, sorted by period. An accepted reading
/// wins over a baseline of the same period: it is the newer information.
pub fn history(period: Period, accepted: Vec<Point>, baseline: Option<Point>) -> Vec<Point> {
    let mut points: Vec<Point> = accepted.into_iter().filter(|p| p.period < period).collect();
    if let Some(b) = baseline
        && b.period < period
        && !points.iter().any(|p| p.period == b.period)
    {
        points.push(b);
    }
    points.sort_by_key(|p| p.period);
    points.dedup_by_key(|p| p.period);
    points
}

/// What the registry says of a meter's consumption: billing's figures, as PostgreSQL
/// prints a decimal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registry<'a> {
    /// The consumption norm.
    pub normative_kwh: Option<&'a str>,
    /// Billing's own average monthly consumption.
    pub average_kwh: Option<&'a str>,
}

/// The estimate for `period` given the meter's `history` (from [`history`]) and what
/// the registry says.
pub fn estimate(period: Period, history: &[Point], registry: Registry<'_>) -> Estimate {
    let months_missing = history.last().map(|last| last.period.months_until(period));
    let average = months_missing
        .is_none_or(|months| months <= AVERAGE_MONTHS)
        .then(|| {
            average_monthly(history)
                .map(format_kwh)
                .or_else(|| registry.average_kwh.map(trim_decimal))
        })
        .flatten();
    match average {
        Some(kwh) => Estimate {
            months_missing,
            method: Method::Average,
            kwh: Some(kwh),
        },
        None => Estimate {
            months_missing,
            method: Method::Normative,
            kwh: registry.normative_kwh.map(trim_decimal),
        },
    }
}

/// Average monthly consumption (kWh, all zones together) over the last
/// [`AVERAGE_WINDOW_MONTHS`] of `history`; `None` if no step can be counted.
pub fn average_monthly(history: &[Point]) -> Option<f64> {
    let last = history.last()?;
    let window: Vec<&Point> = history
        .iter()
        .filter(|p| p.period.months_until(last.period) <= AVERAGE_WINDOW_MONTHS)
        .collect();
    let mut consumption: u128 = 0;
    let mut months: i64 = 0;
    for pair in window.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        let step_months = earlier.period.months_until(later.period);
        if step_months <= 0 || earlier.values.len() != later.values.len() {
            continue;
        }
        let deltas: Option<Vec<u64>> = earlier
            .values
            .iter()
            .zip(&later.values)
            .map(|(e, l)| l.checked_sub(*e))
            .collect();
        let Some(deltas) = deltas else { continue };
        consumption += deltas.iter().map(|d| u128::from(*d)).sum::<u128>();
        months += step_months;
    }
    // Readings have at most 18 digits: the sum fits an f64 to well under a kWh.
    (months > 0).then(|| consumption as f64 / months as f64)
}

/// kWh with at most three decimals and no trailing zeros (`100`, `83.333`).
pub fn format_kwh(kwh: f64) -> String {
    trim_decimal(&format!("{kwh:.3}"))
}

fn trim_decimal(s: &str) -> String {
    let s = s.trim();
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Period {
        s.parse().expect("period")
    }

    fn norm(normative_kwh: Option<&str>) -> Registry<'_> {
        Registry {
            normative_kwh,
            average_kwh: None,
        }
    }

    fn point(period: &str, values: &[u64]) -> Point {
        Point {
            period: p(period),
            values: values.to_vec(),
        }
    }

    #[test]
    fn average_is_consumption_over_months_summed_over_zones() {
        let h = [
            point("2026-01", &[1000, 500]),
            point("2026-02", &[1100, 550]),
            point("2026-04", &[1300, 650]),
        ];
        // (1300−1000) + (650−500) = 450 kWh over 3 months.
        assert_eq!(average_monthly(&h), Some(150.0));
        let e = estimate(p("2026-05"), &h, norm(Some("85.500")));
        assert_eq!(
            e,
            Estimate {
                months_missing: Some(1),
                method: Method::Average,
                kwh: Some("150".into())
            }
        );
    }

    #[test]
    fn method_switches_to_normative_in_the_seventh_month() {
        let h = [point("2026-01", &[1000]), point("2026-02", &[1100])];
        let sixth = estimate(p("2026-08"), &h, norm(Some("85.5")));
        assert_eq!(sixth.months_missing, Some(6));
        assert_eq!(sixth.method, Method::Average);
        assert_eq!(sixth.kwh.as_deref(), Some("100"));
        let seventh = estimate(p("2026-09"), &h, norm(Some("85.5")));
        assert_eq!(seventh.months_missing, Some(7));
        assert_eq!(seventh.method, Method::Normative);
        assert_eq!(seventh.kwh.as_deref(), Some("85.5"));
    }

    #[test]
    fn no_history_or_a_single_point_falls_back_to_the_norm() {
        let none = estimate(p("2026-05"), &[], norm(Some("120.000")));
        assert_eq!(none.months_missing, None);
        assert_eq!(none.method, Method::Normative);
        assert_eq!(none.kwh.as_deref(), Some("120"));
        let one = estimate(p("2026-05"), &[point("2026-03", &[5])], norm(None));
        assert_eq!(one.months_missing, Some(2));
        assert_eq!(one.method, Method::Normative);
        assert_eq!(one.kwh, None, "no norm in the registry: left empty");
    }

    #[test]
    fn decreasing_steps_and_old_points_are_left_out() {
        let h = [
            point("2024-01", &[0]),      // outside the 12-month window
            point("2025-06", &[99_990]), // rollover step 06→07 is left out
            point("2025-07", &[20]),
            point("2025-10", &[320]), // 300 over 3 months
        ];
        assert_eq!(average_monthly(&h), Some(100.0));
        let only_rollover = [point("2025-06", &[99_990]), point("2025-07", &[20])];
        assert_eq!(average_monthly(&only_rollover), None);
        let zones_changed = [point("2025-06", &[10]), point("2025-07", &[20, 30])];
        assert_eq!(average_monthly(&zones_changed), None);
    }

    #[test]
    fn billings_average_stands_in_where_fewer_than_two_readings_are_held() {
        let registry = Registry {
            normative_kwh: Some("120.000"),
            average_kwh: Some("142.500"),
        };
        // One reading held: billing's average, for six months, then the norm.
        let one = [point("2026-03", &[5])];
        let e = estimate(p("2026-05"), &one, registry);
        assert_eq!(
            e,
            Estimate {
                months_missing: Some(2),
                method: Method::Average,
                kwh: Some("142.5".into())
            }
        );
        let late = estimate(p("2026-10"), &one, registry);
        assert_eq!(late.method, Method::Normative);
        assert_eq!(late.kwh.as_deref(), Some("120"));
        // None held: billing's average, months unknown.
        let none = estimate(p("2026-05"), &[], registry);
        assert_eq!(none.months_missing, None);
        assert_eq!(none.method, Method::Average);
        assert_eq!(none.kwh.as_deref(), Some("142.5"));
        // Two or more: the system's own average wins.
        let two = [point("2026-01", &[1000]), point("2026-03", &[1200])];
        let own = estimate(p("2026-05"), &two, registry);
        assert_eq!(own.kwh.as_deref(), Some("100"));
        // Two whose only step cannot be counted (a rollover): billing's average.
        let rolled = [point("2026-01", &[99_990]), point("2026-02", &[20])];
        let e = estimate(p("2026-05"), &rolled, registry);
        assert_eq!(e.kwh.as_deref(), Some("142.5"));
        assert_eq!(e.method, Method::Average);
    }

    #[test]
    fn thirds_are_rounded_to_three_decimals() {
        let h = [point("2026-01", &[0]), point("2026-04", &[250])];
        assert_eq!(format_kwh(average_monthly(&h).expect("avg")), "83.333");
    }

    #[test]
    fn history_merges_the_baseline_and_drops_later_periods() {
        let h = history(
            p("2026-05"),
            vec![
                point("2026-03", &[30]),
                point("2026-05", &[50]),
                point("2026-06", &[60]),
            ],
            Some(point("2026-01", &[10])),
        );
        assert_eq!(h, vec![point("2026-01", &[10]), point("2026-03", &[30])]);
        let same = history(
            p("2026-05"),
            vec![point("2026-03", &[30])],
            Some(point("2026-03", &[29])),
        );
        assert_eq!(same, vec![point("2026-03", &[30])], "accepted wins");
    }

    proptest! {
        #[test]
        fn average_never_negative_and_method_follows_months(
            start in 0u64..1_000_000,
            steps in proptest::collection::vec((1i64..4, 0u64..5_000), 1..10),
            gap in 1i64..12,
        ) {
            let mut period = p("2020-01");
            let mut value = start;
            let mut h = vec![Point { period, values: vec![value] }];
            for (months, used) in steps {
                for _ in 0..months { period = period.next(); }
                value += used;
                h.push(Point { period, values: vec![value] });
            }
            let mut target = period;
            for _ in 0..gap { target = target.next(); }
            let e = estimate(target, &h, norm(Some("1")));
            prop_assert_eq!(e.months_missing, Some(gap));
            prop_assert_eq!(e.method == Method::Average, gap <= AVERAGE_MONTHS);
            let avg = average_monthly(&h).expect("steps go up");
            prop_assert!(avg >= 0.0);
        }
    }
}

//! The reading checks of SPEC §3 that need no database: register digits, decrease
//! with rollover, and plausible consumption (the window is `shared::calendar`'s).
//! Each is a pure function so that its edges are tested directly.

pub use shared::calendar::Window;
use shared::events::Period;

/// The last accepted reading a new one is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub period: Period,
    pub values: Vec<u64>,
}

/// Why a set of readings is refused against the previous one. `new` is the value the
/// sender typed for `zone`; the rest is what the system holds, for logs and tests —
/// never for the reply (`crate::reply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadingProblem {
    Decreased {
        zone: usize,
        previous: u64,
        new: u64,
    },
    Implausible {
        zone: usize,
        new: u64,
        consumption: u64,
        limit: u64,
    },
}

/// The register's range: values are `0 .. 10^digits`.
fn register_size(digits: u32) -> u128 {
    10u128.pow(digits.min(30))
}

/// A decrease that is really the register wrapping round: the previous value in the
/// top 10 % of the range and the new one in the bottom 10 %.
pub fn is_rollover(previous: u64, new: u64, digits: u32) -> bool {
    let size = register_size(digits);
    let (previous, new) = (u128::from(previous), u128::from(new));
    previous * 10 >= size * 9 && new * 10 < size
}

/// Consumption of one zone, accounting for a rollover; `None` for a real decrease.
pub fn consumption(previous: u64, new: u64, digits: u32) -> Option<u64> {
    if new >= previous {
        Some(new - previous)
    } else if is_rollover(previous, new, digits) {
        let wrapped = register_size(digits) + u128::from(new) - u128::from(previous);
        u64::try_from(wrapped).ok()
    } else {
        None
    }
}

/// Checks new readings against the previous accepted ones: no decrease (bar a
/// rollover), and each zone's consumption within `max_monthly` × the months between
/// the two periods (at least one).
pub fn check_against(
    previous: &Previous,
    period: Period,
    new: &[u64],
    digits: u32,
    max_monthly: u64,
) -> Result<(), ReadingProblem> {
    let months = u64::try_from(previous.period.months_until(period).max(1)).unwrap_or(1);
    let limit = max_monthly.saturating_mul(months);
    for (zone, (&prev, &value)) in previous.values.iter().zip(new).enumerate() {
        match consumption(prev, value, digits) {
            None => {
                return Err(ReadingProblem::Decreased {
                    zone,
                    previous: prev,
                    new: value,
                });
            }
            Some(used) if used > limit => {
                return Err(ReadingProblem::Implausible {
                    zone,
                    new: value,
                    consumption: used,
                    limit,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollover_needs_top_and_bottom_tenths() {
        assert!(is_rollover(99_950, 20, 5));
        assert!(is_rollover(90_000, 9_999, 5));
        assert!(!is_rollover(89_999, 10, 5), "previous not in the top 10 %");
        assert!(
            !is_rollover(99_950, 10_000, 5),
            "new not in the bottom 10 %"
        );
        assert_eq!(consumption(99_950, 20, 5), Some(70));
        assert_eq!(consumption(500, 400, 5), None);
        assert_eq!(consumption(u64::MAX - 1, u64::MAX, 18), Some(1));
    }

    #[test]
    fn decrease_and_implausible() {
        let prev = Previous {
            period: Period::new(2026, 10).expect("p"),
            values: vec![45_000, 12_000],
        };
        let nov = Period::new(2026, 11).expect("p");
        assert_eq!(
            check_against(&prev, nov, &[45_100, 12_050], 6, 10_000),
            Ok(())
        );
        assert_eq!(
            check_against(&prev, nov, &[45_100, 11_999], 6, 10_000),
            Err(ReadingProblem::Decreased {
                zone: 1,
                previous: 12_000,
                new: 11_999
            })
        );
        assert_eq!(
            check_against(&prev, nov, &[55_001, 12_000], 6, 10_000),
            Err(ReadingProblem::Implausible {
                zone: 0,
                new: 55_001,
                consumption: 10_001,
                limit: 10_000
            })
        );
        assert_eq!(
            check_against(&prev, nov, &[55_000, 12_000], 6, 10_000),
            Ok(()),
            "exactly the limit"
        );
        // Three months since the last reading: three months' allowance.
        let jan = Period::new(2027, 1).expect("p");
        assert_eq!(
            check_against(&prev, jan, &[74_000, 12_000], 6, 10_000),
            Ok(())
        );
        // The same period (a correction): still one month's allowance.
        assert_eq!(
            check_against(
                &prev,
                Period::new(2026, 10).expect("p"),
                &[46_000, 12_000],
                6,
                10_000
            ),
            Ok(())
        );
    }
}

//! When a period's reading window closes: at the end of `WINDOW_END_DAY` in the
//! company's time zone (midnight that starts the next day). From then on the
//! period's readings are final enough to write its files for billing.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use shared::events::Period;

/// The reading window's end, as billing-export needs it.
#[derive(Debug, Clone, Copy)]
pub struct WindowClose {
    /// Last day of the window, inclusive; clamped to the month's length (31 in
    /// February means its last day).
    pub end_day: u32,
    pub zone: Tz,
}

impl WindowClose {
    /// The instant `period`'s window closes.
    pub fn closes_at(&self, period: Period) -> DateTime<Utc> {
        let first = NaiveDate::from_ymd_opt(period.year(), period.month(), 1);
        let next_first = NaiveDate::from_ymd_opt(period.next().year(), period.next().month(), 1);
        let (Some(first), Some(next_first)) = (first, next_first) else {
            // Period guarantees a valid year and month; this is unreachable.
            return DateTime::<Utc>::MAX_UTC;
        };
        let last_day = next_first.pred_opt().unwrap_or(first);
        let end = first
            .checked_add_days(Days::new(u64::from(self.end_day.max(1) - 1)))
            .filter(|d| *d <= last_day)
            .unwrap_or(last_day);
        let day_after = end.succ_opt().unwrap_or(end);
        local_start_of(day_after, self.zone)
    }

    /// The most recent period whose window has closed by `now`.
    pub fn latest_closed(&self, now: DateTime<Utc>) -> Period {
        let current = Period::of(&now.with_timezone(&self.zone));
        if now >= self.closes_at(current) {
            current
        } else {
            current.previous()
        }
    }
}

/// The first instant of `day` in `zone`. Where midnight does not exist (a DST jump
/// at 00:00 in some zones), the first hour that does.
fn local_start_of(day: NaiveDate, zone: Tz) -> DateTime<Utc> {
    (0..24)
        .filter_map(|h| day.and_hms_opt(h, 0, 0))
        .find_map(|t| zone.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(s: &str) -> Period {
        s.parse().expect("period")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    const YEKT: WindowClose = WindowClose {
        end_day: 25,
        zone: chrono_tz::Asia::Yekaterinburg,
    };

    #[test]
    fn closes_at_the_end_of_the_last_day_in_the_company_zone() {
        // 26 Nov 00:00 +05:00 = 25 Nov 19:00 UTC.
        assert_eq!(
            YEKT.closes_at(period("2026-11")),
            utc("2026-11-25T19:00:00Z")
        );
        assert_eq!(
            YEKT.latest_closed(utc("2026-11-25T18:59:59Z")),
            period("2026-10")
        );
        assert_eq!(
            YEKT.latest_closed(utc("2026-11-25T19:00:00Z")),
            period("2026-11")
        );
        assert_eq!(
            YEKT.latest_closed(utc("2027-01-02T00:00:00Z")),
            period("2026-12")
        );
    }

    #[test]
    fn end_day_past_the_month_means_its_last_day() {
        let w = WindowClose {
            end_day: 31,
            zone: chrono_tz::UTC,
        };
        assert_eq!(w.closes_at(period("2026-02")), utc("2026-03-01T00:00:00Z"));
        assert_eq!(w.closes_at(period("2026-12")), utc("2027-01-01T00:00:00Z"));
        assert_eq!(
            w.latest_closed(utc("2026-03-15T00:00:00Z")),
            period("2026-02")
        );
    }

    #[test]
    fn zone_without_midnight_uses_the_first_real_hour() {
        // America/Havana skipped 00:00–01:00 on 2026-03-08 (DST at midnight).
        let w = WindowClose {
            end_day: 7,
            zone: chrono_tz::America::Havana,
        };
        let at = w.closes_at(period("2026-03"));
        assert!(
            at > utc("2026-03-08T00:00:00Z") && at < utc("2026-03-08T07:00:00Z"),
            "{at}"
        );
    }
}

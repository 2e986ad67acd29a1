//! The company calendar (SPEC §1, §4): the days of the month readings are taken and
//! the company's time zone, declared once for every service that judges time by them
//! (`WINDOW_START_DAY`, `WINDOW_END_DAY`, `TIMEZONE`), and what follows from them —
//! whether a message is on time, its billing period, when a period's window closes.

use anyhow::bail;
use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::events::Period;

/// The calendar settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Calendar {
    /// First day of the month readings are taken (company time zone).
    #[arg(long, env = "WINDOW_START_DAY", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(1..=31))]
    pub window_start_day: u32,

    /// Last day of the month readings are taken, inclusive; past the month's length
    /// it means the month's last day.
    #[arg(long, env = "WINDOW_END_DAY", default_value_t = 25,
          value_parser = clap::value_parser!(u32).range(1..=31))]
    pub window_end_day: u32,

    #[command(flatten)]
    pub zone: CompanyZone,
}

/// The company's time zone alone, for a service that needs no window (the notifier).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct CompanyZone {
    /// The company's time zone (IANA name): window days, periods, the day of a reply
    /// quota and the times in e-mails are judged in it.
    #[arg(long, env = "TIMEZONE", default_value = "Asia/Yekaterinburg", value_parser = parse_tz)]
    pub timezone: Tz,
}

impl Default for CompanyZone {
    fn default() -> Self {
        CompanyZone {
            timezone: chrono_tz::Asia::Yekaterinburg,
        }
    }
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            window_start_day: 15,
            window_end_day: 25,
            zone: CompanyZone::default(),
        }
    }
}

impl Calendar {
    /// The window, checking what clap cannot check field by field.
    pub fn window(&self) -> anyhow::Result<Window> {
        if self.window_start_day > self.window_end_day {
            bail!(
                "WINDOW_START_DAY ({}) is after WINDOW_END_DAY ({})",
                self.window_start_day,
                self.window_end_day
            );
        }
        Ok(Window {
            start_day: self.window_start_day,
            end_day: self.window_end_day,
            zone: self.timezone(),
        })
    }

    pub fn timezone(&self) -> Tz {
        self.zone.timezone
    }
}

fn parse_tz(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("`{s}` is not an IANA time zone (e.g. Asia/Yekaterinburg)"))
}

/// The days of the month readings are taken, in the company's time zone.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_day: u32,
    /// Last day of the window, inclusive; clamped to the month's length (31 in
    /// February means its last day).
    pub end_day: u32,
    pub zone: Tz,
}

impl Window {
    /// Whether `at` falls on a window day, judged in the company zone.
    pub fn contains(&self, at: DateTime<FixedOffset>) -> bool {
        let day = at.with_timezone(&self.zone).day();
        (self.start_day..=self.end_day).contains(&day)
    }

    /// The billing period of a message received at `at`.
    pub fn period_of(&self, at: DateTime<FixedOffset>) -> Period {
        Period::of(&at.with_timezone(&self.zone))
    }

    /// The instant `period`'s window closes: the end of its last day, in the zone.
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

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("timestamp")
    }

    fn window() -> Window {
        Window {
            start_day: 15,
            end_day: 25,
            zone: chrono_tz::Asia::Yekaterinburg,
        }
    }

    #[test]
    fn window_edges_in_the_company_zone() {
        let w = window();
        assert!(
            !w.contains(at("2026-11-14T23:59:59+05:00")),
            "14th 23:59 is outside"
        );
        assert!(
            w.contains(at("2026-11-15T00:00:00+05:00")),
            "15th 00:00 is inside"
        );
        assert!(
            w.contains(at("2026-11-25T23:59:59+05:00")),
            "25th 23:59 is inside"
        );
        assert!(
            !w.contains(at("2026-11-26T00:00:00+05:00")),
            "26th 00:00 is outside"
        );
        // 19:30 UTC on the 14th is already 00:30 on the 15th in Yekaterinburg.
        assert!(w.contains(at("2026-11-14T19:30:00Z")));
        // 19:30 UTC on the 25th is the 26th there.
        assert!(!w.contains(at("2026-11-25T19:30:00Z")));
    }

    #[test]
    fn period_follows_the_company_zone() {
        let w = window();
        assert_eq!(
            w.period_of(at("2026-11-30T20:00:00Z")).to_string(),
            "2026-12"
        );
        assert_eq!(
            w.period_of(at("2026-11-20T10:00:00+05:00")).to_string(),
            "2026-11"
        );
    }

    fn period(s: &str) -> Period {
        s.parse().expect("period")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    const YEKT: Window = Window {
        start_day: 15,
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
        let w = Window {
            start_day: 1,
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
        let w = Window {
            start_day: 1,
            end_day: 7,
            zone: chrono_tz::America::Havana,
        };
        let at = w.closes_at(period("2026-03"));
        assert!(
            at > utc("2026-03-08T00:00:00Z") && at < utc("2026-03-08T07:00:00Z"),
            "{at}"
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(flatten)]
        calendar: Calendar,
    }

    #[test]
    fn settings_are_checked_by_name() {
        use clap::Parser as _;
        let c = Probe::try_parse_from(["probe"]).expect("defaults").calendar;
        assert_eq!((c.window_start_day, c.window_end_day), (15, 25));
        assert_eq!(c.timezone(), chrono_tz::Asia::Yekaterinburg);
        let late = Probe::try_parse_from(["probe", "--window-start-day", "26"])
            .expect("parses")
            .calendar;
        let err = late.window().expect_err("start after end");
        assert!(err.to_string().contains("WINDOW_START_DAY (26)"), "{err}");
        let err = Probe::try_parse_from(["probe", "--timezone", "Mars/Olympus"])
            .expect_err("unknown zone");
        assert!(err.to_string().contains("IANA"), "{err}");
        assert!(Probe::try_parse_from(["probe", "--window-end-day", "32"]).is_err());
    }
}

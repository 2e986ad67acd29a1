//! Cost and abuse guards on SMS replies. An SMS costs money and a reply can be
//! provoked by anyone who texts the number, so replies go only to allowed countries,
//! at most N per number per day, and at most M per hour for everyone together.
//!
//! The counts live in PostgreSQL (`reply_quota`), shared by every replica. Each is a
//! fixed window — a calendar day in the company's zone per number, a clock hour for
//! the budget — whose row is locked while units are taken, so two replicas racing for
//! the last unit cannot both win. A reservation is made once
//! per event, when its delivery is first claimed, in the same transaction (one per
//! batch of deliveries, taking units for its replies in order): a retried or
//! redelivered event never counts twice, and a refused one never counts at all.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use shared::phone::PhoneNumber;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::config::{CountryCodes, LimitsConfig};

/// Why a reply was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// `from` is not a phone number one can text (alphanumeric sender, junk).
    Number,
    /// The number's country is not in `REPLY_COUNTRY_CODES`.
    Country,
    /// The number had its `REPLY_DAILY_CAP_PER_NUMBER` replies today.
    DailyCap,
    /// `REPLY_HOURLY_BUDGET` is spent for this hour.
    Budget,
}

impl Suppressed {
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Number => "number",
            Suppressed::Country => "country",
            Suppressed::DailyCap => "daily_cap",
            Suppressed::Budget => "budget",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplyLimits {
    countries: CountryCodes,
    daily_cap: u32,
    hourly_budget: u32,
    /// The zone whose calendar day the per-number cap counts.
    timezone: Tz,
}

impl ReplyLimits {
    pub fn new(config: &LimitsConfig, timezone: Tz) -> Self {
        ReplyLimits {
            countries: config.reply_country_codes.clone(),
            daily_cap: config.reply_daily_cap_per_number,
            hourly_budget: config.reply_hourly_budget,
            timezone,
        }
    }

    /// The checks that need no counting: a textable number in an allowed country.
    pub fn admit(&self, from: &str) -> Result<PhoneNumber, Suppressed> {
        let number = PhoneNumber::parse(from).map_err(|_| Suppressed::Number)?;
        if self.countries.contains(&number.country_code()) {
            Ok(number)
        } else {
            Err(Suppressed::Country)
        }
    }

    /// Takes, for each reply in order, one unit of its number's daily cap and one of the
    /// hourly budget, or neither — as if the replies came one by one. Runs inside the
    /// caller's transaction (the deliveries' claim), which holds the buckets' rows
    /// locked until it ends.
    pub async fn reserve_batch(
        &self,
        tx: &mut PgConnection,
        numbers: &[&PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(), Suppressed>>, sqlx::Error> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let day = now
            .with_timezone(&self.timezone)
            .format("%Y-%m-%d")
            .to_string();
        let per_hour = format!("all:{}", now.format("%Y-%m-%dT%H"));
        let per_number: Vec<String> = numbers
            .iter()
            .map(|n| format!("number:{n}:{day}"))
            .collect();
        // Kept a little past their window so a reading near midnight still finds them.
        let mut expiry: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        expiry.insert(&per_hour, now + chrono::Duration::hours(2));
        for bucket in &per_number {
            expiry.insert(bucket, now + chrono::Duration::days(2));
        }
        let buckets: Vec<&str> = expiry.keys().copied().collect();

        // Every bucket's row exists; then all are locked, in name order.
        sqlx::query(
            "INSERT INTO reply_quota (bucket, used, expires_at)
             SELECT bucket, 0, expires_at FROM unnest($1::text[], $2::timestamptz[])
                  AS t(bucket, expires_at)
             ORDER BY bucket
             ON CONFLICT (bucket) DO NOTHING",
        )
        .bind(&buckets)
        .bind(expiry.values().copied().collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        let mut used: HashMap<String, i64> = sqlx::query_as::<_, (String, i32)>(
            "SELECT bucket, used FROM reply_quota WHERE bucket = ANY($1)
             ORDER BY bucket FOR UPDATE",
        )
        .bind(&buckets)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(bucket, n)| (bucket, i64::from(n)))
        .collect();

        let (daily_cap, budget) = (i64::from(self.daily_cap), i64::from(self.hourly_budget));
        let mut hour_used = used.get(&per_hour).copied().unwrap_or(0);
        let verdicts = per_number
            .iter()
            .map(|bucket| {
                let number_used = used.entry(bucket.clone()).or_insert(0);
                if *number_used >= daily_cap {
                    Err(Suppressed::DailyCap)
                } else if hour_used >= budget {
                    Err(Suppressed::Budget)
                } else {
                    *number_used += 1;
                    hour_used += 1;
                    Ok(())
                }
            })
            .collect();
        used.insert(per_hour, hour_used);

        let (names, counts): (Vec<String>, Vec<i32>) = used
            .into_iter()
            .map(|(bucket, n)| (bucket, i32::try_from(n).unwrap_or(i32::MAX)))
            .unzip();
        sqlx::query(
            "UPDATE reply_quota q SET used = v.used
             FROM unnest($1::text[], $2::int[]) AS v(bucket, used)
             WHERE q.bucket = v.bucket AND q.used <> v.used",
        )
        .bind(&names)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        Ok(verdicts)
    }
}

/// Deletes spent windows now and then, so the table stays a few rows per active number.
pub async fn prune_periodically(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        match sqlx::query("DELETE FROM reply_quota WHERE expires_at < now()")
            .execute(&pool)
            .await
        {
            Ok(done) => tracing::debug!(rows = done.rows_affected(), "pruned reply quotas"),
            Err(e) => tracing::warn!(error = %e, "cannot prune reply quotas; will try again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(codes: &str) -> ReplyLimits {
        ReplyLimits {
            countries: codes.parse().expect("codes"),
            daily_cap: 5,
            hourly_budget: 10,
            timezone: chrono_tz::Asia::Yekaterinburg,
        }
    }

    #[test]
    fn only_allowed_countries_are_admitted() {
        let l = limits("7");
        assert_eq!(
            l.admit("+79001234567").map(|n| n.to_string()),
            Ok("+79001234567".to_owned())
        );
        assert_eq!(l.admit("+380441234567"), Err(Suppressed::Country));
        assert_eq!(l.admit("MTS-Info"), Err(Suppressed::Number));
        assert_eq!(l.admit(""), Err(Suppressed::Number));
        assert!(limits("7,380").admit("+380441234567").is_ok());
    }
}

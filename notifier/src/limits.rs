//! Cost and abuse guards on SMS replies. An SMS costs money and a reply can be
//! provoked by anyone who texts the number, so replies go only to allowed countries,
//! at most N per number per day, and at most M per hour for everyone together.
//!
//! The counts live in PostgreSQL (`reply_quota`), shared by every replica. Each is a
//! fixed window — a calendar day in the company's zone per number, a clock hour for
//! the budget — taken by a conditional upsert that only increments below the cap, so
//! two replicas racing for the last unit cannot both win. A reservation is made once
//! per event, when its delivery is first claimed, in the same transaction: a retried or
//! redelivered event never counts twice, and a refused one never counts at all.

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

    /// Takes one unit of the number's daily cap and of the hourly budget, or neither.
    /// Runs inside the caller's transaction (the delivery's claim).
    pub async fn reserve(
        &self,
        tx: &mut PgConnection,
        number: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Suppressed>, sqlx::Error> {
        let day = now.with_timezone(&self.timezone).format("%Y-%m-%d");
        let per_number = format!("number:{number}:{day}");
        let per_hour = format!("all:{}", now.format("%Y-%m-%dT%H"));
        // Kept a little past their window so a reading near midnight still finds them.
        let day_expiry = now + chrono::Duration::days(2);
        let hour_expiry = now + chrono::Duration::hours(2);

        if !take(tx, &per_number, self.daily_cap, day_expiry).await? {
            return Ok(Err(Suppressed::DailyCap));
        }
        if !take(tx, &per_hour, self.hourly_budget, hour_expiry).await? {
            // Give the number its unit back: this reply is not being sent.
            sqlx::query("UPDATE reply_quota SET used = used - 1 WHERE bucket = $1 AND used > 0")
                .bind(&per_number)
                .execute(&mut *tx)
                .await?;
            return Ok(Err(Suppressed::Budget));
        }
        Ok(Ok(()))
    }
}

/// One unit of `bucket` if fewer than `cap` are used. The row lock taken by the upsert
/// serialises concurrent takers until the transaction ends.
async fn take(
    tx: &mut PgConnection,
    bucket: &str,
    cap: u32,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if cap == 0 {
        return Ok(false);
    }
    let cap = i32::try_from(cap).unwrap_or(i32::MAX);
    let used: Option<i32> = sqlx::query_scalar(
        "INSERT INTO reply_quota (bucket, used, expires_at) VALUES ($1, 1, $3)
         ON CONFLICT (bucket) DO UPDATE SET used = reply_quota.used + 1
         WHERE reply_quota.used < $2
         RETURNING used",
    )
    .bind(bucket)
    .bind(cap)
    .bind(expires_at)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(used.is_some())
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

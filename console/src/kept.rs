//! The start page's slow [`Figures`], kept in the console's memory.
//!
//! What it buys: counting a window's messages and the whole registry's active meters
//! takes ~1.2 s at 1,000,000 accounts and 5,000,000 messages (docs/performance.md);
//! the start page must answer in 300 ms. So a background task counts them at start
//! and then every `CONSOLE_GLANCE_REFRESH_SECONDS`, and each request reads the last
//! count. The price is that they are up to that old, and the page says so: it always
//! shows when they were counted («данные на 05:31:12»), marks them as stale when
//! refreshing has failed for a while, and never shows the figures of an earlier window
//! as the current one's ([`shown`]). Each replica counts for itself: one query every
//! refresh, whether anyone looks or not.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::calendar::Window;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::glance::{self, Figures};

/// The longest the first request after start waits for the first count, before it is
/// answered without the figures ("still counting"): a fraction of the page's budget.
pub const FIRST_WAIT: Duration = Duration::from_millis(200);
/// How soon a failed count is tried again (or sooner, with a shorter refresh).
const RETRY: Duration = Duration::from_secs(10);
/// Grace past two refreshes before the figures are called stale: a count itself
/// takes seconds on a large registry and a busy database.
const GRACE: Duration = Duration::from_secs(30);

/// The last count, shared by the refresh task and the requests.
pub struct Kept {
    /// `None` until the first count after start has finished.
    last: watch::Sender<Option<Arc<Figures>>>,
    /// How often the figures are counted again.
    every: Duration,
}

impl Kept {
    pub fn new(every: Duration) -> Kept {
        Kept {
            last: watch::Sender::new(None),
            every,
        }
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    /// The last count; waits up to `wait` when there has been none yet.
    pub async fn last(&self, wait: Duration) -> Option<Arc<Figures>> {
        let mut counted = self.last.subscribe();
        // A timeout only means "not yet"; the sender lives as long as `self`.
        let _ = tokio::time::timeout(wait, counted.wait_for(Option::is_some)).await;
        self.last.borrow().clone()
    }

    pub fn put(&self, figures: Figures) {
        self.last.send_replace(Some(Arc::new(figures)));
    }

    /// Counts at once, then every [`Kept::every`], until `stop`.
    pub async fn refresh(self: Arc<Self>, pool: PgPool, window: Window, stop: CancellationToken) {
        loop {
            let started = std::time::Instant::now();
            let counted = tokio::select! {
                _ = stop.cancelled() => return,
                counted = glance::count(&pool, &window, Utc::now()) => counted,
            };
            let next = match counted {
                Ok(figures) => {
                    tracing::debug!(
                        took_ms = started.elapsed().as_millis() as u64,
                        "start page figures counted"
                    );
                    self.put(figures);
                    self.every
                }
                Err(e) => {
                    tracing::warn!(error = %e, "start page figures not counted; the page shows the last ones with their time");
                    self.every.min(RETRY)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
            }
        }
    }
}

/// How the start page may show a count at `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shown<'a> {
    /// No count of the current window yet: the first since start, or a new window
    /// has opened since the last one.
    Counting,
    /// Counted within the last refreshes.
    Fresh(&'a Figures),
    /// Older than two refreshes (counting has failed since): shown, marked as stale.
    Stale(&'a Figures),
}

pub fn shown<'a>(
    last: Option<&'a Figures>,
    window: &Window,
    now: DateTime<Utc>,
    every: Duration,
) -> Shown<'a> {
    let Some(figures) = last else {
        return Shown::Counting;
    };
    if figures.this.period != glance::current(window, now).period {
        return Shown::Counting;
    }
    let age = (now - figures.as_of).to_std().unwrap_or(Duration::ZERO);
    if age > every * 2 + GRACE {
        Shown::Stale(figures)
    } else {
        Shown::Fresh(figures)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn window() -> Window {
        Window {
            start_day: 15,
            end_day: 25,
            zone: chrono_tz::Asia::Yekaterinburg,
        }
    }

    fn counted_at(window: &Window, at: DateTime<Utc>) -> Figures {
        let this = glance::current(window, at);
        Figures {
            this,
            last: glance::Span::of(window, this.period.previous()),
            this_days: Vec::new(),
            last_days: Vec::new(),
            accepted: 0,
            refused: Vec::new(),
            active_meters: 0,
            meters_with_reading: 0,
            as_of: at,
        }
    }

    #[test]
    fn a_count_is_fresh_for_two_refreshes_then_stale() {
        let w = window();
        let every = Duration::from_secs(60);
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 6, 0, 0).unwrap();
        let f = counted_at(&w, at);
        assert_eq!(shown(None, &w, at, every), Shown::Counting);
        assert_eq!(shown(Some(&f), &w, at, every), Shown::Fresh(&f));
        let later = at + chrono::Duration::seconds(150);
        assert_eq!(shown(Some(&f), &w, later, every), Shown::Fresh(&f));
        let later = at + chrono::Duration::seconds(151);
        assert_eq!(shown(Some(&f), &w, later, every), Shown::Stale(&f));
    }

    #[test]
    fn an_earlier_windows_count_is_not_shown_as_the_new_ones() {
        let w = window();
        let every = Duration::from_secs(60);
        // Counted the evening before the December window opens (15th, 00:00 in
        // Yekaterinburg = 14th 19:00 UTC): November's figures.
        let before = Utc.with_ymd_and_hms(2026, 12, 14, 18, 59, 50).unwrap();
        let f = counted_at(&w, before);
        assert_eq!(f.this.period.to_string(), "2026-11");
        assert_eq!(shown(Some(&f), &w, before, every), Shown::Fresh(&f));
        let opened = Utc.with_ymd_and_hms(2026, 12, 14, 19, 0, 5).unwrap();
        assert_eq!(shown(Some(&f), &w, opened, every), Shown::Counting);
    }

    #[tokio::test]
    async fn a_request_waits_for_the_first_count_only_briefly() {
        let kept = Arc::new(Kept::new(Duration::from_secs(60)));
        // Nothing counted: the bounded wait ends empty-handed (no hang).
        assert!(kept.last(Duration::from_millis(20)).await.is_none());
        // A count that lands during the wait is taken at once.
        let later = kept.clone();
        let put = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            later.put(counted_at(&window(), Utc::now()));
        });
        assert!(kept.last(Duration::from_secs(30)).await.is_some());
        put.await.expect("put");
    }
}

//! Benchmark, not a test of timing: a period export of 1,000,000 rows (override
//! with `BENCH_ROWS`) streamed over HTTP, with the process's peak resident memory
//! (VmHWM) reported before and after. The service and the client run in this
//! process, so a body held in memory anywhere would show in the peak.
//!
//! The missing-readings report gets the same treatment with a registry of as many
//! meters (loaded through the validator's import from a generated file that is
//! never held in memory whole).
//!
//! cargo test -p billing-export --test bench_export -- --ignored --nocapture --test-threads 1

mod common;

use std::time::Instant;

use common::{Options, billing_pool, spawn_app};
use shared::testing::TestEnv;
use tokio_util::sync::CancellationToken;

/// `VmHWM` / `VmRSS` of this process, in KiB.
fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so the set-up's own peak (the
/// insert) does not hide the export's.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn bench_rows() -> i64 {
    std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Streams a GET and reports its size, line count, duration and the peak memory.
async fn measure(url: &str, rows: i64) {
    let reset = reset_peak();
    let hwm_before = memory_kib("VmHWM:");
    let rss_before = memory_kib("VmRSS:");
    let started = Instant::now();
    let mut resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(common::EXPORT_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let first_byte = started.elapsed().as_secs_f64();
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let took = started.elapsed().as_secs_f64();
    let hwm_after = memory_kib("VmHWM:");
    assert_eq!(lines, rows as u64 + 1, "header + one line per meter");
    println!(
        "{url}: {rows} rows, {:.1} MiB of CSV in {took:.1} s (first byte after {first_byte:.1} s, {:.0} rows/s)",
        bytes as f64 / 1048576.0,
        rows as f64 / took
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB before the request, {:.1} MiB after (+{:.1} MiB); RSS before {:.1} MiB{}",
        hwm_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0,
        hwm_after.saturating_sub(hwm_before) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        if reset {
            ""
        } else {
            " (peak could not be reset)"
        }
    );
    // Flat: the growth is a few chunks and buffers, not a share of the body.
    assert!(
        (hwm_after.saturating_sub(hwm_before) * 1024) < bytes / 4,
        "peak grew by {} KiB for a {} byte body",
        hwm_after.saturating_sub(hwm_before),
        bytes
    );
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn streamed_export_of_a_million_rows_keeps_memory_flat() {
    let rows = bench_rows();
    let env = TestEnv::new().await;
    let app = spawn_app(&env, Options::default()).await;
    let pool = billing_pool(&env);

    let started = Instant::now();
    sqlx::query(
        "INSERT INTO readings (reading_id, message_id, account, meter, period, vals, received_at, channel, delivery)
         SELECT gen_random_uuid(), 'bench-' || g, lpad(g::text, 10, '0'), 'M-' || g, '2026-11',
                ARRAY[g, g % 100000, g % 1000], timestamptz '2026-11-20 10:00:00+05' + g * interval '1 ms',
                'sms', 'not_pushed'
         FROM generate_series(1, $1::bigint) AS g",
    )
    .bind(rows)
    .execute(&pool)
    .await
    .expect("insert");
    sqlx::query("ANALYZE readings")
        .execute(&pool)
        .await
        .expect("analyze");
    println!(
        "inserted {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    measure(&format!("{}/v1/exports/2026-11.csv", app.base()), rows).await;
    app.stop().await;
    env.cleanup().await;
}

/// A registry file of `rows` active one-zone meters, generated as it is read.
struct GeneratedRegistry {
    next: i64,
    rows: i64,
    pending: Vec<u8>,
}

impl std::io::Read for GeneratedRegistry {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.len() < buf.len() && self.next <= self.rows {
            let n = self.next;
            let line = if n == 0 {
                "account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n".to_owned()
            } else {
                format!(
                    "{n:010},M-{n},1,8,active,2026-06,{},,,{}\n",
                    n % 1000,
                    50 + n % 100
                )
            };
            self.pending.extend_from_slice(line.as_bytes());
            self.next += 1;
        }
        let k = buf.len().min(self.pending.len());
        buf[..k].copy_from_slice(&self.pending[..k]);
        self.pending.drain(..k);
        Ok(k)
    }
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn streamed_missing_report_of_a_million_meters_keeps_memory_flat() {
    let rows = bench_rows();
    let env = TestEnv::new().await;
    let registry = shared::db::pool(&env.database(), validator::SCHEMA).expect("pool");
    validator::DATABASE
        .apply(&registry, &CancellationToken::new())
        .await
        .expect("validator migrations");
    let started = Instant::now();
    let generated = GeneratedRegistry {
        next: 0,
        rows,
        pending: Vec::new(),
    };
    let report = validator::registry::import(&registry, generated)
        .await
        .expect("import");
    assert_eq!(report.rows_rejected, 0);
    println!(
        "registry of {rows} meters imported in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let app = spawn_app(&env, Options::default()).await;
    let pool = billing_pool(&env);
    // Every meter read in September and October: history for an average.
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO readings (reading_id, message_id, account, meter, period, vals, received_at, channel, delivery)
         SELECT gen_random_uuid(), 'bench-' || p || '-' || g, lpad(g::text, 10, '0'), 'M-' || g, p,
                ARRAY[g % 1000 + CASE p WHEN '2026-09' THEN 100 ELSE 250 END],
                timestamptz '2026-10-20 10:00:00+05', 'sms', 'not_pushed'
         FROM generate_series(1, $1::bigint) AS g, (VALUES ('2026-09'), ('2026-10')) AS v(p)",
    )
    .bind(rows)
    .execute(&pool)
    .await
    .expect("insert");
    sqlx::query("ANALYZE readings")
        .execute(&pool)
        .await
        .expect("analyze");
    println!(
        "inserted {} readings in {:.1} s",
        rows * 2,
        started.elapsed().as_secs_f64()
    );

    measure(
        &format!("{}/v1/exports/2026-11/missing.csv", app.base()),
        rows,
    )
    .await;
    app.stop().await;
    registry.close().await;
    env.cleanup().await;
}

//! The period export and the missing-readings report over HTTP (SPEC §4.5), with
//! readings arriving as `reading.accepted` events and the registry loaded through
//! the validator's import.

mod common;

use common::{
    Events, Options, billing_pool, csv_rows, import_registry, reading, spawn_app, wait_stored,
};
use shared::events::ReadingAccepted;
use shared::testing::TestEnv;

fn superseding(previous: &ReadingAccepted, values: &[u64], received_at: &str) -> ReadingAccepted {
    let mut r = reading(
        &previous.account,
        &previous.meter,
        &previous.period.to_string(),
        values,
        received_at,
    );
    r.supersedes = Some(previous.reading_id);
    r
}

#[tokio::test]
async fn period_export_lists_the_latest_reading_per_meter_with_proper_quoting() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env, Options::default()).await;
    let events = Events::connect(&env).await;

    // A chain of three corrections, arriving out of order (first, third, second).
    let a1 = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[100, 50],
        "2026-11-16T09:00:00+05:00",
    );
    let a2 = superseding(&a1, &[110, 55], "2026-11-17T09:00:00+05:00");
    let a3 = superseding(&a2, &[120, 60], "2026-11-18T09:00:00+05:00");
    // The chain wins over clocks: b2 supersedes b1 though stamped earlier.
    let b1 = reading(
        "1000002",
        "M-2",
        "2026-11",
        &[7],
        "2026-11-20T12:00:00+05:00",
    );
    let b2 = superseding(&b1, &[8], "2026-11-20T11:00:00+05:00");
    // Awkward meter id (comma, quote, Cyrillic), three zones, time given in UTC.
    let c = reading(
        "000123",
        "Счётчик,\"7\" №1",
        "2026-11",
        &[1, 2, 3],
        "2026-11-20T05:00:00.5Z",
    );
    // Another period: not listed.
    let d = reading(
        "1000001",
        "M-1",
        "2026-10",
        &[90, 45],
        "2026-10-20T10:00:00+05:00",
    );
    for r in [&a1, &a3, &a2, &b1, &b2, &c, &d] {
        events.publish(r).await;
    }
    wait_stored(&billing_pool(&env), 7).await;

    let resp = app.get("/v1/exports/2026-11.csv").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"readings-2026-11.csv\""
    );
    let body = resp.text().await.expect("body");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines,
        [
            "account,meter,period,t1,t2,t3,received_at,channel,reading_id".to_owned(),
            format!(
                "000123,\"Счётчик,\"\"7\"\" №1\",2026-11,1,2,3,2026-11-20T10:00:00.500+05:00,sms,{}",
                c.reading_id
            ),
            format!(
                "1000001,M-1,2026-11,120,60,,2026-11-18T09:00:00+05:00,sms,{}",
                a3.reading_id
            ),
            format!(
                "1000002,M-2,2026-11,8,,,2026-11-20T11:00:00+05:00,sms,{}",
                b2.reading_id
            ),
        ]
    );
    // And a CSV reader gets the awkward value back intact.
    assert_eq!(csv_rows(&body)[1][1], "Счётчик,\"7\" №1");

    let empty = app.get("/v1/exports/2025-01.csv").await;
    assert_eq!(empty.status(), 200);
    assert_eq!(
        empty.text().await.expect("body"),
        "account,meter,period,t1,t2,t3,received_at,channel,reading_id\n"
    );
    let served = app
        .metric("billing_exports_served_total", &[("report", "readings")])
        .await;
    assert_eq!(served, Some(2.0));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_bad_period_is_400_with_a_reason() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env, Options::default()).await;
    for path in [
        "/v1/exports/2026-13.csv",
        "/v1/exports/2026-00.csv",
        "/v1/exports/2026-1.csv",
        "/v1/exports/26-11.csv",
        "/v1/exports/2026-11",
        "/v1/exports/2026-11.json",
        "/v1/exports/nonsense",
        "/v1/exports/%E2%80%94.csv",
        "/v1/exports/2026-13/missing.csv",
        "/v1/exports/2026_11/missing.csv",
        "/v1/exports/2026-11.csv/missing.csv",
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 400, "{path}");
        let body: serde_json::Value = resp.json().await.expect("JSON reason");
        assert_eq!(body["error"], "bad_period", "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    app.stop().await;
    env.cleanup().await;
}

const REGISTRY: &str = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh
1000001,M-1,1,6,active,,,,,85.5
1000002,M-2,1,6,active,2026-04,5000,,,85.5
1000003,M-3,2,6,active,2026-03,100,50,,90
1000004,M-4,1,6,active,,,,,120
1000005,M-5,1,6,closed,2026-10,10,,,50
1000006,M-6,1,6,active,2026-10,10,,,50
1000007,M-7a,1,6,active,2026-10,300,,,60
1000007,M-7b,1,6,active,,,,,
1000008,M-8,1,6,active,2026-11,77,,,50
1000009,M-9,1,6,active,2026-07,1000,,,50
";

#[tokio::test]
async fn missing_report_counts_months_and_switches_to_the_norm_in_the_seventh() {
    let env = TestEnv::new().await;
    import_registry(&env, REGISTRY).await;
    let app = spawn_app(&env, Options::default()).await;
    let events = Events::connect(&env).await;

    let m9_first = reading(
        "1000009",
        "M-9",
        "2026-10",
        &[1300],
        "2026-10-20T10:00:00+05:00",
    );
    let readings = [
        // M-1: 1000 → 1200 over two months: 100 a month; last read in October.
        reading(
            "1000001",
            "M-1",
            "2026-08",
            &[1000],
            "2026-08-20T10:00:00+05:00",
        ),
        reading(
            "1000001",
            "M-1",
            "2026-10",
            &[1200],
            "2026-10-20T10:00:00+05:00",
        ),
        // M-2: baseline April 5000, read in May 5150: six months without by November.
        reading(
            "1000002",
            "M-2",
            "2026-05",
            &[5150],
            "2026-05-20T10:00:00+05:00",
        ),
        // M-3: baseline March, read in April: seven months without → the norm.
        reading(
            "1000003",
            "M-3",
            "2026-04",
            &[160, 80],
            "2026-04-20T10:00:00+05:00",
        ),
        // M-6: read in November: not missing.
        reading(
            "1000006",
            "M-6",
            "2026-11",
            &[20],
            "2026-11-20T10:00:00+05:00",
        ),
        // M-9: October's reading corrected from 1300 to 1290; baseline July 1000.
        superseding(&m9_first, &[1290], "2026-10-21T10:00:00+05:00"),
        m9_first.clone(),
    ];
    for r in &readings {
        events.publish(r).await;
    }
    wait_stored(&billing_pool(&env), readings.len() as i64).await;

    let resp = app.get("/v1/exports/2026-11/missing.csv").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"missing-2026-11.csv\""
    );
    let body = resp.text().await.expect("body");
    assert_eq!(
        body,
        "account,meter,months_missing,method,estimate_kwh\n\
         1000001,M-1,1,average,100\n\
         1000002,M-2,6,average,150\n\
         1000003,M-3,7,normative,90\n\
         1000004,M-4,,normative,120\n\
         1000007,M-7a,1,normative,60\n\
         1000007,M-7b,,normative,\n\
         1000009,M-9,1,average,96.667\n"
    );

    // One month later every count grows by one: M-2 reaches its seventh month.
    let december = app
        .get("/v1/exports/2026-12/missing.csv")
        .await
        .text()
        .await
        .expect("body");
    let rows = csv_rows(&december);
    let m2 = rows.iter().find(|r| r[1] == "M-2").expect("M-2 listed");
    assert_eq!(m2[2..], ["7", "normative", "85.5"]);
    let m6 = rows
        .iter()
        .find(|r| r[1] == "M-6")
        .expect("M-6 listed in December");
    assert_eq!(
        m6[2..],
        ["1", "average", "10"],
        "10 → 20 from October to November"
    );
    let m8 = rows
        .iter()
        .find(|r| r[1] == "M-8")
        .expect("M-8 listed in December");
    assert_eq!(
        m8[2..],
        ["1", "normative", "50"],
        "a single point: no average"
    );
    assert_eq!(
        app.metric("billing_exports_served_total", &[("report", "missing")])
            .await,
        Some(2.0)
    );
    app.stop().await;
    env.cleanup().await;
}

/// The same kind of registry with billing's `average_kwh` (SPEC §4.6's optional last
/// column): where the system holds fewer than two readings, billing's average.
const REGISTRY_WITH_AVERAGES: &str = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh,average_kwh
2000001,A-1,1,6,active,,,,,85.5,140.25
2000002,A-2,1,6,active,2026-09,5000,,,85.5,141
2000003,A-3,1,6,active,2026-08,1000,,,85.5,142
2000004,A-4,1,6,active,2026-03,1000,,,85.5,143
2000005,A-5,1,6,active,2026-09,1000,,,85.5,
";

#[tokio::test]
async fn missing_report_uses_billings_average_where_fewer_than_two_readings_are_held() {
    let env = TestEnv::new().await;
    import_registry(&env, REGISTRY_WITH_AVERAGES).await;
    let app = spawn_app(&env, Options::default()).await;
    let events = Events::connect(&env).await;
    // the baseline (August 1000) and an accepted reading (October 1300): two
    // readings, 150 a month of its own.
    let readings = [reading(
        "2000003",
        "A-3",
        "2026-10",
        &[1300],
        "2026-10-20T10:00:00+05:00",
    )];
    for r in &readings {
        events.publish(r).await;
    }
    wait_stored(&billing_pool(&env), readings.len() as i64).await;

    let body = app
        .get("/v1/exports/2026-11/missing.csv")
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(
        body,
        "account,meter,months_missing,method,estimate_kwh\n\
         2000001,A-1,,average,140.25\n\
         2000002,A-2,2,average,141\n\
         2000003,A-3,1,average,150\n\
         2000004,A-4,8,normative,85.5\n\
         2000005,A-5,2,normative,85.5\n",
        "A-1 none held, A-2 one (the baseline): billing's average; A-3 two: its own; \
         A-4 past six months: the norm; A-5 one, billing states no average: the norm"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn missing_report_without_a_registry_is_503_not_500() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env, Options::default()).await;
    let resp = app.get("/v1/exports/2026-11/missing.csv").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "unavailable");
    app.stop().await;
    env.cleanup().await;
}

//! CI smoke run: the built `loadgen` at tiny sizes (a debug build) must finish, exit 0,
//! and account for every message. It checks that the load generator works, not how
//! fast the system is. Needs the service binaries next to it (`cargo build --workspace
//! --bins`), RabbitMQ with the management API and PostgreSQL, as the e2e tests do.

use std::process::Command;

#[test]
fn smoke_run_accounts_for_every_message() {
    let exe = env!("CARGO_BIN_EXE_loadgen");
    let dir = std::path::Path::new(exe)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    for service in ["ingest", "validator", "notifier", "billing-export"] {
        assert!(
            dir.join(service).is_file(),
            "{service} is not built next to loadgen in {}: run `cargo build --workspace --bins` first",
            dir.display()
        );
    }
    let json = std::env::temp_dir().join(format!("loadgen-smoke-{}.json", std::process::id()));
    let started = std::time::Instant::now();
    let out = Command::new(exe)
        .args([
            "--accounts",
            "2000",
            "--messages",
            "300",
            "--rate",
            "100",
            "--baseline-seconds",
            "1",
            "--drain-seconds",
            "60",
            "--label",
            "smoke",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "{stdout}\n{stderr}\n({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "loadgen exited with {}:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("| **all messages accounted for** | **yes** |"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("loadgen wrote --json"))
            .expect("JSON report");
    let _ = std::fs::remove_file(&json);
    let a = &report["accounting"];
    assert_eq!(a["attempted"], 300, "{a}");
    assert_eq!(a["sent"], 300, "{a}");
    assert_eq!(a["audit_rows"], 300, "{a}");
    assert_eq!(a["events_distinct"], 300, "{a}");
    assert_eq!(a["accepted"], a["expected_accepted"], "{a}");
    assert_eq!(a["rejected"], a["expected_rejected"], "{a}");
    assert_eq!(a["billing_posts"], a["expected_accepted"], "{a}");
    assert_eq!(a["lost"], 0, "{a}");
    assert_eq!(a["duplicated"], 0, "{a}");
    assert_eq!(a["wrong"], 0, "{a}");
    assert_eq!(a["all_accounted_for"], true, "{a}");
    assert!(
        report["baseline"]["consumed"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
}

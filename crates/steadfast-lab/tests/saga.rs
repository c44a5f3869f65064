//! The `saga` scenario in quick mode on SQLite: once in this process, once through the binary
//! with `--crash` (the orchestrator runs in child processes that are SIGKILLed and restarted),
//! and, when PostgreSQL answers, once more with `--store postgres --crash`.
//!
//! The checks hold at any speed of the machine: nothing lost, no effect applied twice, the log
//! consistent, `needs_attention` exactly where a participant refused a cancellation, every
//! crash's sagas resumed. How soon they resumed (`recovery_ms` against the lease) is a timing:
//! the release-built lab checks it (`--quick --check` in `.ci/run`), not these tests. They
//! take a lock so that they do not run side by side, only to spare the small machine.

use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;
use steadfast_lab::{scenarios, Options};

#[path = "support/plots.rs"]
mod plots;

static SERIAL: Mutex<()> = Mutex::new(());

const FIELDS: [&str; 16] = [
    "name",
    "requests",
    "succeeded",
    "server_calls",
    "amplification",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "sagas",
    "completed",
    "compensated",
    "needs_attention",
    "duplicate_effects",
    "lost",
    "recovery_ms",
    "crashes",
];

fn only_variant(json: &Value) -> &Value {
    assert_eq!(json["scenario"], "saga", "{json}");
    let variants = json["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 1, "{json}");
    let v = &variants[0];
    for key in FIELDS {
        assert!(v.get(key).is_some(), "variant lacks {key}: {v}");
    }
    v
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {v}"))
}

fn check_outcome(v: &Value, sagas: u64) {
    assert_eq!(count(v, "sagas"), sagas, "{v}");
    assert_eq!(count(v, "lost"), 0, "{v}");
    assert_eq!(count(v, "duplicate_effects"), 0, "{v}");
    assert_eq!(count(v, "inconsistent"), 0, "{v}");
    assert_eq!(
        count(v, "completed") + count(v, "compensated") + count(v, "needs_attention"),
        sagas,
        "{v}"
    );
    // Seeded business failures (a full hotel, no car) compensate whatever the timing; a
    // refused cancellation, and only that, leaves a saga to an operator.
    assert!(count(v, "compensated") > 0, "{v}");
    assert_eq!(
        count(v, "needs_attention"),
        count(v, "refused_cancellations"),
        "{v}"
    );
    assert_eq!(count(v, "requests"), sagas, "{v}");
}

#[test]
fn quick_sqlite_in_process() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let scenario = scenarios::find("saga").expect("saga is registered");
    let opts = Options {
        quick: true,
        seed: 1,
        progress: false,
        chaos: None,
    };
    let report = rt.block_on(scenario.run(opts)).expect("the scenario runs");
    let json: Value = serde_json::from_str(&report.to_json_line().expect("json")).expect("parse");
    let v = only_variant(&json);
    assert_eq!(v["name"], "sqlite");
    check_outcome(v, 50);
    assert_eq!(count(v, "crashes"), 0);
    eprintln!("{}", report.render());
    // Its HTML report plots the sagas' durations and ends over time, read from the log.
    plots::check(&report, false, &[]);
}

/// Runs the binary with `args` and returns its one JSON line and whether it exited 0.
fn run_binary(args: &[&str]) -> (Value, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast-lab"))
        .args(args)
        .output()
        .expect("run steadfast-lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line; stdout:\n{stdout}\nstderr:\n{stderr}"));
    let json = serde_json::from_str(line).expect("parse the JSON line");
    if !out.status.success() {
        eprintln!("steadfast-lab {args:?} failed; stderr:\n{stderr}");
    }
    (json, out.status.success())
}

#[test]
fn quick_sqlite_with_crashes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // No `--check`: its recovery-time target is the release-built lab's to check.
    let (json, ok) = run_binary(&["--quick", "--scenario", "saga", "--crash", "--json"]);
    assert!(ok, "{json}");
    let v = only_variant(&json);
    assert_eq!(v["name"], "sqlite_crash");
    check_outcome(v, 50);
    check_crashes(v);
}

#[test]
fn quick_postgres_with_crashes_when_available() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let reachable = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], 5432)),
        std::time::Duration::from_secs(1),
    )
    .is_ok();
    if std::env::var_os("DATABASE_URL").is_none() && !reachable {
        eprintln!("SKIPPED: no PostgreSQL at 127.0.0.1:5432 and no DATABASE_URL");
        return;
    }
    let (json, ok) = run_binary(&[
        "--quick",
        "--scenario",
        "saga",
        "--store",
        "postgres",
        "--crash",
        "--json",
    ]);
    assert!(ok, "{json}");
    let v = only_variant(&json);
    assert_eq!(v["name"], "postgres_crash");
    check_outcome(v, 50);
    check_crashes(v);
}

/// Two SIGKILLs, and every saga active in the log at a kill claimed again (or ended) after it.
/// (How many were active depends on how far the child had run ahead of the lines its parent
/// read: a count of the machine's timing, shown, not checked.)
fn check_crashes(v: &Value) {
    assert_eq!(count(v, "crashes"), 2, "{v}");
    eprintln!(
        "orphaned by the crashes: {}",
        count(v, "orphaned_by_crashes")
    );
    assert_eq!(count(v, "unresumed_after_crash"), 0, "{v}");
    let recovery = v["recovery_ms"].as_f64().expect("recovery_ms");
    assert!(recovery >= 0.0, "{v}");
}

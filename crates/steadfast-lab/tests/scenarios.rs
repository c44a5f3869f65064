//! Runs every registered scenario in quick mode, in-process, against real servers on loopback,
//! and checks the published JSON shape and that each scenario's targets hold.
//!
//! One test runs them one after another: scenarios measure throughput and latency, so running
//! them side by side on a small machine would distort each other's figures.

use serde_json::Value;
use steadfast_lab::{scenarios, Options};

const VARIANT_FIELDS: [&str; 8] = [
    "name",
    "requests",
    "succeeded",
    "server_calls",
    "amplification",
    "p50_ms",
    "p99_ms",
    "p999_ms",
];

fn variant<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no variant {name} in {json}"))
}

fn check_shape(json: &Value, scenario: &str) {
    assert_eq!(json["scenario"], scenario);
    let variants = json["variants"].as_array().expect("variants is an array");
    assert!(!variants.is_empty());
    for v in variants {
        for key in VARIANT_FIELDS {
            assert!(v.get(key).is_some(), "{scenario}: variant lacks {key}: {v}");
        }
        let requests = v["requests"].as_f64().expect("requests is a number");
        let calls = v["server_calls"]
            .as_f64()
            .expect("server_calls is a number");
        let amplification = v["amplification"]
            .as_f64()
            .expect("amplification is a number");
        assert!(requests > 0.0, "{scenario}: no requests: {v}");
        assert!(
            (amplification - calls / requests).abs() < 1e-3,
            "{scenario}: amplification is not server_calls / requests: {v}"
        );
        let p50 = v["p50_ms"].as_f64().expect("p50_ms");
        let p99 = v["p99_ms"].as_f64().expect("p99_ms");
        let p999 = v["p999_ms"].as_f64().expect("p999_ms");
        assert!(
            p50 <= p99 && p99 <= p999,
            "{scenario}: percentiles out of order: {v}"
        );
    }
    assert!(json["targets"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(json["targets_met"].is_boolean());
}

fn check_specific(json: &Value, scenario: &str) {
    match scenario {
        "flaky" => {
            for name in ["none", "naive_retry", "budgeted_retry"] {
                assert!(variant(json, name)["success_rate"].is_number());
            }
        }
        "overload" => {
            for name in ["naive_retry", "budgeted_retry"] {
                assert!(variant(json, name)["goodput"].is_number());
            }
        }
        "deadline" => {
            let with = &variant(json, "with_deadline")["served_after_caller_gave_up"];
            let without = &variant(json, "without_deadline")["served_after_caller_gave_up"];
            assert_eq!(with.as_u64(), Some(0), "{json}");
            assert!(without.as_u64().is_some_and(|n| n > 0), "{json}");
        }
        "outage" => {
            let none = variant(json, "none");
            let breaker = variant(json, "breaker");
            let calls = |v: &Value| {
                v["calls_during_outage"]
                    .as_u64()
                    .expect("calls_during_outage")
            };
            assert!(calls(none) > 0, "{json}");
            assert!(calls(breaker) * 10 <= calls(none), "{json}");
            for v in [none, breaker] {
                assert_eq!(v["recovered"].as_u64(), Some(1), "{json}");
                assert!(v["recovery_ms"].is_number(), "{json}");
            }
            assert!(breaker["refused_by_breaker"]
                .as_u64()
                .is_some_and(|n| n > 0));
            assert!(breaker["breaker_trips"].as_u64().is_some_and(|n| n > 0));
        }
        "tail" => {
            let p99 = |name: &str| variant(json, name)["p99_ms"].as_f64().expect("p99_ms");
            for name in ["none", "tower_hedge", "hedge"] {
                assert!(variant(json, name)["extra_load"].is_number(), "{json}");
            }
            assert_eq!(variant(json, "none")["extra_load"].as_f64(), Some(0.0));
            assert!(p99("hedge") * 10.0 <= p99("none"), "{json}");
            assert!(p99("tower_hedge") < p99("none"), "{json}");
            assert!(
                variant(json, "hedge")["hedge_delay_ms"].is_number(),
                "{json}"
            );
        }
        "tail_shift" => {
            let get = |name: &str, key: &str| variant(json, name)[key].as_f64().expect(key);
            // The budget holds ours to a few percent; tower's hedge, with none, sends a copy of
            // most calls once the server slows down.
            assert!(get("hedge", "extra_load") <= 0.06, "{json}");
            assert!(
                get("tower_hedge", "extra_load") >= 5.0 * get("hedge", "extra_load"),
                "{json}"
            );
            assert!(
                get("hedge", "p99_ms") < get("tower_hedge", "p99_ms"),
                "{json}"
            );
        }
        "tail_frontier" => {
            let get = |name: &str, key: &str| variant(json, name)[key].as_f64().expect(key);
            for (name, ms) in [
                ("fixed_20ms", 20.0),
                ("fixed_21ms", 21.0),
                ("fixed_22ms", 22.0),
            ] {
                assert_eq!(get(name, "hedge_delay_ms"), ms, "{json}");
            }
            // 20 ms cuts into the fast mode (10-20 ms, plus the timer's tick and the round
            // trip) and hedges several times as many calls as 22 ms, which hedges the 2 % slow
            // attempts and little else.
            let late = get("fixed_22ms", "extra_load");
            assert!((0.01..=0.04).contains(&late), "{json}");
            assert!(get("fixed_20ms", "extra_load") >= 2.0 * late, "{json}");
            assert!(
                get("fixed_20ms", "p99_ms") < get("fixed_22ms", "p99_ms"),
                "{json}"
            );
        }
        "overload_adaptive" => {
            for name in ["none", "static_limit", "adaptive_limit", "shed"] {
                let v = variant(json, name);
                assert!(v["goodput"].is_number(), "{json}");
                assert!(v["p99_ok_ms"].is_number(), "{json}");
            }
            let none = variant(json, "none");
            assert_eq!(none["refused"].as_u64(), Some(0), "{json}");
            for name in ["static_limit", "adaptive_limit", "shed"] {
                let v = variant(json, name);
                assert!(v["refused"].as_u64().is_some_and(|n| n > 0), "{json}");
                assert!(v["limit"].as_u64().is_some_and(|n| n > 0), "{json}");
                assert!(v["goodput"].as_f64() > none["goodput"].as_f64(), "{json}");
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_meets_its_targets_in_quick_mode() {
    let opts = Options {
        quick: true,
        seed: steadfast_lab::DEFAULT_SEED,
        progress: false,
        chaos: None,
    };
    for scenario in scenarios::ALL {
        let report = scenario
            .run(opts)
            .await
            .unwrap_or_else(|e| panic!("{} failed to run: {e}", scenario.name()));
        let line = report.to_json_line().expect("JSON encodes");
        assert!(!line.contains('\n'), "one line per scenario");
        let json: Value = serde_json::from_str(&line).expect("JSON parses");
        check_shape(&json, scenario.name());
        check_specific(&json, scenario.name());
        assert!(
            report.targets_met(),
            "{} missed a target:\n{}",
            scenario.name(),
            report.render()
        );
    }
}

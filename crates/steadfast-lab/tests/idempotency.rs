//! The `idempotency` scenario in quick mode: the memory store always, Redis and PostgreSQL when
//! reachable (`REDIS_URL`, `DATABASE_URL`; with `STEADFAST_REQUIRE_SERVICES=1` an unreachable
//! one is a failure). Every key executes once, every deliberate mismatch gets 422, and the JSON
//! keeps the published shape.

use serde_json::Value;
use steadfast_lab::{scenarios, Options};

#[path = "support/plots.rs"]
mod plots;

fn variant<'a>(json: &'a Value, name: &str) -> Option<&'a Value> {
    json["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_execute_once_per_key_on_every_reachable_store() {
    let scenario = scenarios::find("idempotency").expect("the scenario is registered");
    let opts = Options {
        quick: true,
        seed: steadfast_lab::DEFAULT_SEED,
        progress: false,
        chaos: None,
    };
    let report = scenario.run(opts).await.expect("the scenario runs");
    let text = report.render();
    // Its HTML report plots every store's requests (its server is the idempotency layer's own,
    // whose calls are the requests: no separate server-call series).
    plots::check(&report, false, &[]);
    let json: Value =
        serde_json::from_str(&report.to_json_line().expect("JSON encodes")).expect("JSON parses");
    assert_eq!(json["scenario"], "idempotency");

    let skipped = json["config"]["skipped"].as_str().unwrap_or("");
    let require = std::env::var("STEADFAST_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let mut names = vec!["memory"];
    for store in ["redis", "postgres"] {
        if skipped.contains(&format!("{store}:")) {
            assert!(!require, "{store} was skipped: {skipped}");
            assert!(variant(&json, store).is_none(), "{json}");
            // Said above the table.
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with("skipped") && l.contains(store)),
                "{text}"
            );
            eprintln!("SKIPPED: {store} ({skipped})");
        } else {
            names.push(store);
        }
    }

    for name in names {
        let v = variant(&json, name).unwrap_or_else(|| panic!("no {name} variant: {json}"));
        for key in [
            "name",
            "requests",
            "succeeded",
            "server_calls",
            "amplification",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "executions",
            "replays",
            "conflicts_409",
            "mismatch_422",
        ] {
            assert!(v.get(key).is_some(), "{name} lacks {key}: {v}");
        }
        let keys = count(v, "keys");
        let requests = count(v, "requests");
        let mismatches = count(v, "mismatches_sent");
        assert_eq!(requests, 200, "quick mode sends 200 copies per store");
        assert_eq!(count(v, "executions"), 1, "{name}: {text}");
        assert_eq!(count(v, "keys_not_executed_once"), 0, "{name}: {text}");
        assert_eq!(
            count(v, "server_calls"),
            keys,
            "{name}: one execution per key"
        );
        assert_eq!(count(v, "mismatch_422"), mismatches, "{name}: {text}");
        assert!(mismatches > 0);
        // Every copy: the execution, a replay, a 409 or (the mismatches) a 422.
        assert_eq!(
            count(v, "succeeded") + count(v, "conflicts_409") + count(v, "mismatch_422"),
            requests,
            "{name}: {text}"
        );
        assert_eq!(count(v, "succeeded"), keys + count(v, "replays"), "{name}");
        assert_eq!(count(v, "divergent_bodies"), 0, "{name}: {text}");
        // The layer's own counts agree with what the clients saw.
        assert_eq!(count(v, "layer_executions"), keys, "{name}");
        assert_eq!(count(v, "layer_replays"), count(v, "replays"), "{name}");
        assert_eq!(
            count(v, "layer_conflicts"),
            count(v, "conflicts_409"),
            "{name}"
        );
        assert_eq!(
            count(v, "layer_mismatches"),
            count(v, "mismatch_422"),
            "{name}"
        );
        let amplification = v["amplification"].as_f64().expect("amplification");
        assert!((amplification - keys as f64 / requests as f64).abs() < 1e-3);
    }
    assert!(report.targets_met(), "{text}");
}

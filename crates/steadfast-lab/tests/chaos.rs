//! `--chaos`: steadfast's `ChaosLayer` on the lab's client, on top of a scenario's own faults.
//! The `flaky` scenario (20 % of calls answered 503 by its server) in quick mode, with client-side
//! errors (never sent) and aborts (served, response lost) added.

use serde_json::Value;
use steadfast_lab::{scenarios, Options, DEFAULT_SEED};

async fn flaky_with(chaos: &str) -> Value {
    let opts = Options {
        quick: true,
        seed: DEFAULT_SEED,
        progress: false,
        chaos: Some(chaos.parse().expect("a valid spec")),
    };
    let report = scenarios::find("flaky")
        .expect("flaky is registered")
        .run(opts)
        .await
        .expect("the scenario runs");
    serde_json::from_str(&report.to_json_line().expect("json")).expect("valid json")
}

/// (success rate, server calls per request) of a variant.
fn rates(json: &Value, name: &str) -> (f64, f64) {
    let v = json["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no variant {name} in {json}"));
    let requests = v["requests"].as_f64().expect("requests");
    (
        v["succeeded"].as_f64().expect("succeeded") / requests,
        v["server_calls"].as_f64().expect("server_calls") / requests,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_never_reach_the_server_and_retries_recover_them() {
    let json = flaky_with("error=0.2").await;
    assert!(
        json["config"]["chaos"]
            .as_str()
            .is_some_and(|c| c.contains("20% of attempts fail before sending")),
        "the report says chaos was on: {}",
        json["config"]
    );
    // Without retries: 20 % fail on the client, and 20 % of the rest get the server's 503.
    let (success, calls) = rates(&json, "none");
    assert!((0.56..=0.72).contains(&success), "none: success {success}");
    assert!((0.75..=0.85).contains(&calls), "none: server calls {calls}");
    // The retries resend what was never sent as well as the 503s.
    let (success, _) = rates(&json, "naive_retry");
    assert!(success >= 0.95, "naive_retry: success {success}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_calls_reach_the_server_and_lose_their_response() {
    let json = flaky_with("abort=0.2").await;
    // Every attempt was served, and 20 % of the answers were lost on the way back.
    let (success, calls) = rates(&json, "none");
    assert!((calls - 1.0).abs() < 1e-9, "none: server calls {calls}");
    assert!((0.56..=0.72).contains(&success), "none: success {success}");
}

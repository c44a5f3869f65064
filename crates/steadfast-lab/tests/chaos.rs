//! `--chaos`: steadfast's `ChaosLayer` on the lab's client, on top of a scenario's own faults.
//! The `flaky` scenario (20 % of calls answered 503 by its server) in quick mode, with client-side
//! errors (never sent) and aborts (served, response lost) added.
//!
//! The checks hold at any speed of the machine: the chaos stream draws a fixed number of times
//! per attempt, so the faults among `none`'s 1,000 attempts (one per request, no retries) are
//! counted exactly beforehand, without a server ([`Options::chaos_layer`]), and compared with
//! what reached the server and what succeeded. Success rates, which an attempt timeout on a
//! starved machine can lower, are the release-built lab's business.

use serde_json::Value;
use steadfast_lab::{scenarios, Options, DEFAULT_SEED};
use tower::{Layer, ServiceExt};

fn opts(chaos: &str) -> Options {
    Options {
        quick: true,
        seed: DEFAULT_SEED,
        progress: false,
        chaos: Some(chaos.parse().expect("a valid spec")),
    }
}

async fn flaky_with(chaos: &str) -> Value {
    let report = scenarios::find("flaky")
        .expect("flaky is registered")
        .run(opts(chaos))
        .await
        .expect("the scenario runs");
    serde_json::from_str(&report.to_json_line().expect("json")).expect("valid json")
}

/// Of the first `n` calls through a fresh chaos layer of the run: (injected faults, calls passed
/// on to the transport).
async fn faults_in_first(chaos: &str, n: u64) -> (u64, u64) {
    let layer = opts(chaos)
        .chaos_layer()
        .expect("a valid layer")
        .expect("chaos is on");
    let passed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&passed);
    let svc = layer.layer(tower::service_fn(move |()| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, steadfast_lab::BoxError>(()) }
    }));
    let mut faults = 0;
    for _ in 0..n {
        faults += u64::from(svc.clone().oneshot(()).await.is_err());
    }
    (faults, passed.load(std::sync::atomic::Ordering::SeqCst))
}

fn variant<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no variant {name} in {json}"))
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_never_reach_the_server() {
    let json = flaky_with("error=0.2").await;
    assert!(
        json["config"]["chaos"]
            .as_str()
            .is_some_and(|c| c.contains("20% of attempts fail before sending")),
        "the report says chaos was on: {}",
        json["config"]
    );
    let none = variant(&json, "none");
    let requests = count(none, "requests");
    assert_eq!(requests, 1_000);
    let (errors, sent) = faults_in_first("error=0.2", requests).await;
    // Some 20 % of the seeded stream, exactly the same number in every run.
    assert!((150..=250).contains(&errors), "{errors} injected errors");
    assert_eq!(errors + sent, requests);
    // The attempts failed on the client never reached the server, and they all failed.
    assert!(
        count(none, "server_calls") <= sent,
        "{errors} errors: {none}"
    );
    assert!(count(none, "succeeded") <= sent, "{errors} errors: {none}");
    // The server's 503s come on top: a success is an attempt that was sent and served.
    assert!(
        count(none, "succeeded") + count(none, "injected_503s") <= count(none, "server_calls"),
        "{none}"
    );
    // With retries the errors are resent: never more than three attempts per request, and the
    // ones that fail on the client are not among the server's calls.
    for name in ["naive_retry", "budgeted_retry"] {
        let v = variant(&json, name);
        assert!(count(v, "server_calls") <= 3 * requests, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_calls_are_sent_and_lose_their_response() {
    let json = flaky_with("abort=0.2").await;
    let none = variant(&json, "none");
    let requests = count(none, "requests");
    assert_eq!(requests, 1_000);
    let (aborts, sent) = faults_in_first("abort=0.2", requests).await;
    assert!((150..=250).contains(&aborts), "{aborts} aborts");
    // An abort is sent (the transport is called) and its answer dropped.
    assert_eq!(sent, requests, "aborted attempts are sent");
    assert!(count(none, "server_calls") <= requests, "{none}");
    // Every aborted request failed, whatever the server answered.
    assert!(
        count(none, "succeeded") + aborts <= requests,
        "{aborts} aborts: {none}"
    );
    assert!(
        count(none, "succeeded") + count(none, "injected_503s") <= count(none, "server_calls"),
        "{none}"
    );
}

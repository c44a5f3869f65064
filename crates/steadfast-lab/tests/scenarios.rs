//! Every registered scenario, in quick mode, in-process, against real servers on loopback: each
//! runs to the end and reports in the published JSON shape, and what it reports holds together.
//!
//! These tests check only what holds at any speed of the machine: counts and their relations
//! (requests sent, calls that can reach a server, retries and hedges within their caps or
//! budgets, nothing where a variant has no mechanism to produce it), configured values and the
//! report's shape and field names. A scenario's *targets* (p99s, goodput, extra load, recovery
//! times) depend on how fast the CPU runs the load, so they are not checked here: the
//! release-built lab checks them (`cargo run --release -p steadfast-lab -- --quick --check`,
//! run by `.ci/run`). A debug build on a busy 2-core machine misses them honestly (ADR 0006).
//!
//! One test per scenario. The `idempotency` and `saga` scenarios have their own files
//! (`idempotency.rs`, `saga.rs`); [`every_scenario_is_covered`] keeps a new scenario from
//! going untested.

use serde_json::Value;
use steadfast_lab::{scenarios, Options};

#[path = "support/plots.rs"]
mod plots;

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

const REPORT_FIELDS: [&str; 9] = [
    "scenario",
    "description",
    "quick",
    "seed",
    "config",
    "variants",
    "targets",
    "targets_met",
    "elapsed_s",
];

/// The scenarios this file runs; the other two have their own files.
const HERE: [&str; 8] = [
    "flaky",
    "overload",
    "deadline",
    "outage",
    "tail",
    "tail_shift",
    "tail_frontier",
    "overload_adaptive",
];

#[test]
fn every_scenario_is_covered() {
    let covered: Vec<&str> = HERE
        .iter()
        .copied()
        .chain(["idempotency", "saga"])
        .collect();
    for s in scenarios::ALL {
        assert!(
            covered.contains(&s.name()),
            "scenario {} has no in-process test: add one here",
            s.name()
        );
    }
}

/// Runs `name` in quick mode with the default seed and returns its JSON object, after checking
/// the shape every report shares.
async fn run(name: &str) -> Value {
    let scenario = scenarios::find(name).unwrap_or_else(|| panic!("{name} is registered"));
    let opts = Options {
        quick: true,
        seed: steadfast_lab::DEFAULT_SEED,
        progress: false,
        chaos: None,
    };
    let report = scenario
        .run(opts)
        .await
        .unwrap_or_else(|e| panic!("{name} failed to run: {e}"));
    let line = report.to_json_line().expect("JSON encodes");
    assert!(!line.contains('\n'), "one line per scenario");
    let json: Value = serde_json::from_str(&line).expect("JSON parses");
    check_shape(&json, name);
    // Its HTML report draws every plot with data (outage's breakers get a lane each).
    let lanes: &[&str] = if name == "outage" {
        &["breaker", "standard_breaker"]
    } else {
        &[]
    };
    plots::check(&report, true, lanes);
    // Not a verdict here (see the file's docs), but worth seeing when a test fails.
    eprintln!("{}", report.render());
    json
}

fn check_shape(json: &Value, scenario: &str) {
    for key in REPORT_FIELDS {
        assert!(json.get(key).is_some(), "{scenario}: report lacks {key}");
    }
    assert_eq!(json["scenario"], scenario);
    assert_eq!(json["quick"], true);
    assert_eq!(json["seed"].as_u64(), Some(steadfast_lab::DEFAULT_SEED));
    assert!(
        json["config"].is_object(),
        "{scenario}: config is an object"
    );
    let variants = json["variants"].as_array().expect("variants is an array");
    assert!(!variants.is_empty());
    for v in variants {
        for key in VARIANT_FIELDS {
            assert!(v.get(key).is_some(), "{scenario}: variant lacks {key}: {v}");
        }
        let requests = count(v, "requests");
        let succeeded = count(v, "succeeded");
        let calls = count(v, "server_calls");
        let amplification = number(v, "amplification");
        assert!(requests > 0, "{scenario}: no requests: {v}");
        assert!(succeeded <= requests, "{scenario}: {v}");
        assert!(
            (amplification - calls as f64 / requests as f64).abs() < 1e-3,
            "{scenario}: amplification is not server_calls / requests: {v}"
        );
        let (p50, p99, p999) = (
            number(v, "p50_ms"),
            number(v, "p99_ms"),
            number(v, "p999_ms"),
        );
        assert!(
            0.0 <= p50 && p50 <= p99 && p99 <= p999,
            "{scenario}: percentiles out of order: {v}"
        );
    }
    let targets = json["targets"].as_array().expect("targets is an array");
    assert!(!targets.is_empty());
    for t in targets {
        assert!(t["target"].is_string() && t["met"].is_boolean(), "{t}");
    }
    assert!(json["targets_met"].is_boolean());
    assert!(json["elapsed_s"].as_f64().is_some_and(|s| s > 0.0));
}

fn variant<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no variant {name} in {json}"))
}

fn names(json: &Value) -> Vec<&str> {
    json["variants"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Open-loop scenarios draw their arrival times from the seed for a fixed time, whatever the
/// machine does meanwhile: every variant sends the same requests.
fn same_arrivals(json: &Value) -> u64 {
    let counts: Vec<u64> = json["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| count(v, "requests"))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    counts[0]
}

/// Disjoint 10 s windows a run of `elapsed_s` seconds can touch: a windowed retry budget grants
/// at most its ratio of the window's requests plus its reserve in each of them.
fn budget_windows(json: &Value) -> f64 {
    (number(json, "elapsed_s") / 10.0).floor() + 2.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky() {
    let json = run("flaky").await;
    assert_eq!(names(&json), ["none", "naive_retry", "budgeted_retry"]);
    for name in ["none", "naive_retry", "budgeted_retry"] {
        let v = variant(&json, name);
        let (requests, calls) = (count(v, "requests"), count(v, "server_calls"));
        assert_eq!(requests, 1_000, "quick mode sends 1,000 requests: {v}");
        let rate = number(v, "success_rate");
        assert!((rate - count(v, "succeeded") as f64 / requests as f64).abs() < 1e-4);
        assert_eq!(count(v, "retries"), calls.saturating_sub(requests), "{v}");
        // At most 3 attempts, and a 503 is one of the calls that reached the server.
        assert!(calls <= 3 * requests, "{v}");
        assert!(count(v, "injected_503s") <= calls, "{v}");
    }
    // Without retries, one call per request at most, and every success was served.
    let none = variant(&json, "none");
    assert!(
        count(none, "server_calls") <= count(none, "requests"),
        "{none}"
    );
    assert!(
        count(none, "succeeded") <= count(none, "server_calls") - count(none, "injected_503s"),
        "{none}"
    );
    // The budget (20 % of requests plus 10 retries/s over 10 s) grants no more in any window,
    // however long the run takes.
    let budgeted = variant(&json, "budgeted_retry");
    let cap = 0.2 * count(budgeted, "requests") as f64 + 100.0 * budget_windows(&json);
    assert!(count(budgeted, "retries") as f64 <= cap, "{budgeted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload() {
    let json = run("overload").await;
    assert_eq!(names(&json), ["none", "naive_retry", "budgeted_retry"]);
    let requests = same_arrivals(&json);
    for name in ["none", "naive_retry", "budgeted_retry"] {
        let v = variant(&json, name);
        let calls = count(v, "server_calls");
        assert_eq!(count(v, "goodput"), count(v, "succeeded"), "{v}");
        assert!(calls <= 3 * requests, "{v}");
        assert!(count(v, "served") + count(v, "rejected") <= calls, "{v}");
        assert!(count(v, "served_too_late") <= count(v, "served"), "{v}");
        let share = number(v, "worker_time_rejecting");
        assert!((0.0..=1.0).contains(&share), "{v}");
    }
    let none = variant(&json, "none");
    assert!(count(none, "server_calls") <= requests, "{none}");
    // 10 % of requests and no reserve: within the budget at any speed (the scenario's own
    // target, amplification <= 1.10, is this very bound).
    let budgeted = variant(&json, "budgeted_retry");
    let retries = count(budgeted, "server_calls").saturating_sub(requests) as f64;
    assert!(
        retries <= 0.1 * requests as f64 + budget_windows(&json),
        "{budgeted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline() {
    let json = run("deadline").await;
    assert_eq!(names(&json), ["without_deadline", "with_deadline"]);
    for name in ["without_deadline", "with_deadline"] {
        let v = variant(&json, name);
        let a_calls = count(v, "server_calls");
        assert_eq!(count(v, "requests"), 300, "{v}");
        // No retries: A gets each request once at most and calls B once at most per call.
        assert!(a_calls <= 300, "{v}");
        assert!(count(v, "b_calls") <= a_calls, "{v}");
        assert!(
            count(v, "b_served") + count(v, "b_stopped") <= count(v, "b_calls"),
            "{v}"
        );
        assert!(
            count(v, "served_after_caller_gave_up") <= count(v, "b_served"),
            "{v}"
        );
        assert!(
            number(v, "b_wasted_work_ms") <= number(v, "b_work_ms") + 1.0,
            "{v}"
        );
    }
    // Without a propagated deadline B has nothing to stop at.
    let without = variant(&json, "without_deadline");
    assert_eq!(count(without, "b_stopped"), 0, "{without}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage() {
    let json = run("outage").await;
    assert_eq!(names(&json), ["none", "breaker", "standard_breaker"]);
    let requests = same_arrivals(&json);
    for name in ["none", "breaker"] {
        let v = variant(&json, name);
        let calls = count(v, "server_calls");
        // No retries, and a refused call never reaches the server.
        assert!(calls + count(v, "refused_by_breaker") <= requests, "{v}");
        assert!(
            count(v, "calls_during_outage") + count(v, "served") <= calls,
            "{v}"
        );
        assert!(count(v, "recovered") <= 1, "{v}");
        assert!(number(v, "recovery_ms") >= 0.0, "{v}");
    }
    let none = variant(&json, "none");
    assert_eq!(count(none, "refused_by_breaker"), 0, "{none}");
    assert_eq!(count(none, "breaker_trips"), 0, "{none}");
    // A fail-fast breaker refuses only while open: refusals imply a trip.
    let breaker = variant(&json, "breaker");
    if count(breaker, "refused_by_breaker") > 0 {
        assert!(count(breaker, "breaker_trips") > 0, "{breaker}");
    }
    // The standard preset with the breaker in its slot: whatever the machine's speed, its
    // retries (sent or refused) are bounded by the retry budget (20 % of the window's requests
    // plus 10/s over each 10 s window), and no request has more than its 3 attempts.
    let standard = variant(&json, "standard_breaker");
    let attempts = count(standard, "server_calls") + count(standard, "refused_by_breaker");
    assert!(attempts <= 3 * requests, "{standard}");
    let retries = attempts.saturating_sub(requests) as f64;
    let windows = budget_windows(&json);
    assert!(
        retries <= windows * (0.2 * requests as f64 + 100.0),
        "{retries} retries, {windows} windows: {standard}"
    );
    assert!(
        count(standard, "calls_during_outage") + count(standard, "served")
            <= count(standard, "server_calls"),
        "{standard}"
    );
    if count(standard, "refused_by_breaker") > 0 {
        assert!(count(standard, "breaker_trips") > 0, "{standard}");
    }
}

/// What `tail`, `tail_shift` and `tail_frontier` share: the same measured arrivals for every
/// variant, no extra call without a hedger, at most one hedge per request.
fn check_hedgers(json: &Value) -> u64 {
    let requests = same_arrivals(json);
    for name in names(json) {
        let v = variant(json, name);
        let extra = count(v, "extra_calls");
        assert_eq!(
            extra,
            count(v, "server_calls").saturating_sub(requests),
            "{v}"
        );
        assert!(
            (number(v, "extra_load") - extra as f64 / requests as f64).abs() < 1e-3,
            "{v}"
        );
        assert!(extra <= requests, "one hedge per request at most: {v}");
        assert!(count(v, "slow_requests") <= requests, "{v}");
    }
    requests
}

/// Our budgeted hedger's cap: 5 % of the requests through the layer plus a burst of 10. The
/// warm-up's requests (at most 600/s for 1 s, counted generously twice over) deposit into the
/// same budget, and may still do so after the measurement starts on a slow machine.
fn check_hedge_budget(json: &Value, requests: u64, rate: f64) {
    let hedge = variant(json, "hedge");
    let through_layer = requests as f64 + 2.0 * rate;
    let cap = 10.0 + 0.05 * through_layer;
    assert!(
        count(hedge, "extra_calls") as f64 <= cap,
        "budget 5% + 10: {hedge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail() {
    let json = run("tail").await;
    assert_eq!(names(&json), ["none", "tower_hedge", "hedge"]);
    let requests = check_hedgers(&json);
    assert_eq!(count(variant(&json, "none"), "extra_calls"), 0);
    check_hedge_budget(&json, requests, 600.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_shift() {
    let json = run("tail_shift").await;
    assert_eq!(names(&json), ["none", "tower_hedge", "hedge"]);
    let requests = check_hedgers(&json);
    assert_eq!(count(variant(&json, "none"), "extra_calls"), 0);
    check_hedge_budget(&json, requests, 600.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_frontier() {
    let json = run("tail_frontier").await;
    let fixed = [
        ("fixed_20ms", 20.0),
        ("fixed_20.5ms", 20.5),
        ("fixed_21ms", 21.0),
        ("fixed_21.5ms", 21.5),
        ("fixed_22ms", 22.0),
    ];
    let mut expected = vec!["tower_hedge", "hedge"];
    expected.extend(fixed.iter().map(|(name, _)| *name));
    assert_eq!(names(&json), expected);
    check_hedgers(&json);
    // The fixed delays are what they say, however the run went.
    for (name, ms) in fixed {
        assert_eq!(number(variant(&json, name), "hedge_delay_ms"), ms, "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_adaptive() {
    let json = run("overload_adaptive").await;
    let all = ["none", "static_limit", "adaptive_limit", "shed"];
    assert_eq!(names(&json), all);
    let requests = same_arrivals(&json);
    for name in all {
        let v = variant(&json, name);
        let calls = count(v, "server_calls");
        // No retries: every request either reached the server once or was refused before.
        assert_eq!(calls + count(v, "refused"), requests, "{v}");
        assert_eq!(count(v, "goodput"), count(v, "succeeded"), "{v}");
        assert!(count(v, "served") <= calls, "{v}");
        assert!(count(v, "served_for_nobody") <= count(v, "served"), "{v}");
        assert!(number(v, "p99_ok_ms") >= 0.0, "{v}");
    }
    for name in ["static_limit", "shed"] {
        assert_eq!(count(variant(&json, name), "limit"), 12, "{json}");
    }
    assert!(
        count(variant(&json, "adaptive_limit"), "limit") >= 1,
        "{json}"
    );
    assert!(variant(&json, "none").get("limit").is_none(), "{json}");
}

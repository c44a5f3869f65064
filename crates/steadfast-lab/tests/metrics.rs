//! `--metrics-addr`: the lab's `/metrics` serves what the scenarios' layers record, under the
//! Prometheus names `docs/observability.md` lists (as `opentelemetry-prometheus` renders them:
//! `_total` on counters, `_seconds` for a unit `s`, dots as underscores, units in braces
//! dropped), with namespaced labels.
//!
//! One test in this binary: it installs the global meter provider, which every layer built
//! afterwards in the process records on.

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeSet;
use std::time::Duration;
use steadfast_lab::metrics::{PrometheusMetrics, CONTENT_TYPE};
use steadfast_lab::{scenarios, Options};

use steadfast_layers::adaptive_throttle::ThrottleLayer;
use steadfast_layers::breaker::CircuitBreakerLayer;
use steadfast_layers::bulkhead::BulkheadLayer;
use steadfast_layers::chaos::ChaosLayer;
use steadfast_layers::fallback::{Failure, FallbackLayer};
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::rate::RateLimitLayer;
use steadfast_layers::retry::RetryLayer;
use steadfast_layers::shed::LoadShedLayer;
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::BoxError;
use tower::{service_fn, Layer, ServiceExt};

async fn get(url: &str) -> (u16, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let res = client
        .get(url.parse().expect("url"))
        .await
        .expect("GET /metrics");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

/// The value of the first sample of `series` (a name with labels as they appear, or a bare
/// name), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{', ',']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_layers_series_under_their_prometheus_names() {
    let metrics = PrometheusMetrics::install_global().expect("install the meter provider");
    let server = metrics
        .clone()
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve /metrics");
    let url = format!("http://{}/metrics", server.local_addr());

    // Before anything ran: only the resource.
    let (status, content_type, text) = get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, CONTENT_TYPE);
    assert!(
        text.contains(r#"target_info{service_name="steadfast-lab""#),
        "{text}"
    );
    assert!(!text.contains("steadfast_retry_attempts_total"), "{text}");

    // A real scenario, built as the binary builds it: the layers record on the global provider.
    let scenario = scenarios::find("flaky").expect("the flaky scenario");
    let opts = Options {
        quick: true,
        ..Options::default()
    };
    let report = scenario.run(opts).await.expect("the flaky scenario runs");
    let sent: u64 = report.variants.iter().map(|v| v.requests).sum();
    assert!(sent > 0);

    // Layers alive at the scrape (observable gauges report the layers that exist), and one call
    // through each layer the scenario does not use (their calls counters, a duration histogram).
    let retry = RetryLayer::builder().build().expect("retry layer");
    let breaker = CircuitBreakerLayer::builder().build().expect("breaker");
    let _alive = (retry.layer(()), breaker.layer(()));
    let _more_alive = exercise_other_layers().await;

    let (status, _, text) = get(&url).await;
    assert_eq!(status, 200);
    // Counters: `_total`, units in braces dropped, the scope as a label.
    let calls = sample(&text, "steadfast_retry_calls_total").expect("retry calls");
    let attempts = sample(&text, "steadfast_retry_attempts_total").expect("retry attempts");
    assert!(calls >= 1.0 && attempts >= calls, "{calls} {attempts}");
    assert!(
        text.contains(r#"otel_scope_name="steadfast""#),
        "the layers record on the global `steadfast` meter: {text}"
    );
    // A failure counted with its `error.type`, a decision with its `steadfast.reason`.
    assert!(
        text.lines()
            .any(|l| l.starts_with("steadfast_retry_retries_total{") && l.contains("error_type=")),
        "{text}"
    );
    for name in [
        "steadfast_deadline_calls_total",
        "steadfast_timeout_calls_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing: {text}"
        );
    }
    // Gauges: no `_total`; the breaker's state carries `steadfast_breaker_state`.
    assert!(
        text.contains("# TYPE steadfast_retry_budget_balance gauge"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("steadfast_breaker_state{")
                && l.contains(r#"steadfast_breaker_state="closed""#)),
        "{text}"
    );
    // No dotted name or unprefixed label leaks through.
    assert!(!text.contains("steadfast."), "{text}");
    assert!(!text.contains("{reason="), "{text}");

    // Every family the endpoint serves is in docs/observability.md's table, under that name.
    let documented = documented_series();
    let served = served_families(&text);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/observability.md: {undocumented:?}"
    );
    for name in [
        "steadfast_retry_duration_seconds_bucket",
        "steadfast_bulkhead_calls_total",
        "steadfast_bulkhead_in_flight",
        "steadfast_bulkhead_queued",
        "steadfast_limit_calls_total",
        "steadfast_limit_in_flight",
        "steadfast_rate_calls_total",
        "steadfast_rate_rejected_total",
        "steadfast_throttle_calls_total",
        "steadfast_throttle_probability_ratio",
        "steadfast_shed_calls_total",
        "steadfast_fallback_calls_total",
        "steadfast_fallback_invoked_total",
        "steadfast_chaos_calls_total",
        "steadfast_chaos_injected_total",
    ] {
        assert!(documented.contains(name), "{name} not documented");
        assert!(served.contains(name), "{name} not served: {text}");
    }

    // Anything else is a 404.
    let other = url.replace("/metrics", "/other");
    assert_eq!(get(&other).await.0, 404);

    drop(server);
}

/// Layers the `flaky` scenario does not build, each called once (kept alive for their gauges).
async fn exercise_other_layers() -> Vec<Box<dyn std::any::Any>> {
    let ok = || service_fn(|x: u32| async move { Ok::<u32, BoxError>(x) });
    let failing = || service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let timed = Telemetry::new().record_duration(true);

    let retry = RetryLayer::builder()
        .telemetry(timed.clone())
        .build()
        .expect("retry")
        .layer(ok());
    retry.clone().oneshot(1).await.expect("retry call");
    let bulkhead = BulkheadLayer::builder(1)
        .build()
        .expect("bulkhead")
        .layer(ok());
    bulkhead.clone().oneshot(1).await.expect("bulkhead call");
    let limit = ConcurrencyLimitLayer::new(1).expect("limit").layer(ok());
    limit.clone().oneshot(1).await.expect("limit call");
    let rate = RateLimitLayer::builder(1, Duration::from_secs(3600))
        .build()
        .expect("rate")
        .layer(ok());
    rate.clone().oneshot(1).await.expect("the first call fits");
    assert!(
        rate.clone().oneshot(2).await.is_err(),
        "the second is refused"
    );
    let throttle = ThrottleLayer::builder()
        .build()
        .expect("throttle")
        .layer(ok());
    throttle.clone().oneshot(1).await.expect("throttle call");
    let shed = LoadShedLayer::new().layer(ok());
    shed.clone().oneshot(1).await.expect("shed call");
    let fallback = FallbackLayer::from_fn(|_: Failure<u32>| 0_u32)
        .build()
        .expect("fallback")
        .layer(failing());
    assert_eq!(fallback.clone().oneshot(1).await.expect("fell back"), 0);
    let chaos = ChaosLayer::builder()
        .error(1.0)
        .build()
        .expect("chaos")
        .layer(ok());
    assert!(chaos.clone().oneshot(1).await.is_err(), "chaos injects");
    vec![
        Box::new(retry),
        Box::new(bulkhead),
        Box::new(limit),
        Box::new(rate),
        Box::new(throttle),
        Box::new(shed),
        Box::new(fallback),
        Box::new(chaos),
    ]
}

/// The series names of docs/observability.md's "Metrics as Prometheus shows them" table (the
/// first name of each row: `_bucket` for a histogram).
fn documented_series() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/observability.md");
    let doc = std::fs::read_to_string(path).expect("read docs/observability.md");
    let table = doc
        .split("## Metrics as Prometheus shows them")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the section");
    let names: BTreeSet<String> = table
        .lines()
        .filter(|l| l.starts_with("| `steadfast."))
        .filter_map(|l| l.split(" | ").nth(3))
        .filter_map(|cell| cell.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 60, "{names:?}");
    names
}

/// The `steadfast_*` families a scrape declares (`# TYPE`), histograms as their `_bucket` series
/// and counters with their `_total`.
fn served_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with("steadfast_"))
        .map(|(name, kind)| match kind {
            "histogram" => format!("{name}_bucket"),
            _ => name.to_owned(),
        })
        .collect()
}

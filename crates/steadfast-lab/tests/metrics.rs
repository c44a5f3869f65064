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
use steadfast_lab::metrics::{PrometheusMetrics, CONTENT_TYPE};
use steadfast_lab::{scenarios, Options};
use steadfast_layers::breaker::CircuitBreakerLayer;
use steadfast_layers::retry::RetryLayer;
use tower::Layer;

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
        .find(|l| {
            l.starts_with(series)
                && l[series.len()..].starts_with(|c: char| c == ' ' || c == '{' || c == ',')
        })
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

    // Layers alive at the scrape (observable gauges report the layers that exist).
    let retry = RetryLayer::builder().build().expect("retry layer");
    let breaker = CircuitBreakerLayer::builder().build().expect("breaker");
    let _alive = (retry.layer(()), breaker.layer(()));

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

    // Anything else is a 404.
    let other = url.replace("/metrics", "/other");
    assert_eq!(get(&other).await.0, 404);

    drop(server);
}

//! The fault-injecting server's behaviours, over real loopback connections.
//!
//! Every check holds at any speed of the machine: windows and latencies are far longer (an
//! hour) than any scheduling delay, and times are only bounded from below (a call cannot come
//! back before its work is done). Where the windows open and close is checked on instants, in
//! the server module's unit tests.

use std::time::Duration;

use http::StatusCode;
use steadfast_http::codec::{encode_timeout_ms, REQUEST_TIMEOUT_MS};
use steadfast_lab::client::{get, HttpClient, LabResponse};
use steadfast_lab::server::{
    Capacity, Latency, Outage, OutageKind, Server, ServerConfig, Slowdown,
};
use steadfast_lab::BoxError;
use tokio::time::Instant;
use tower::ServiceExt;

async fn call(server: &Server, id: u64) -> Result<LabResponse, BoxError> {
    HttpClient::new()
        .oneshot(get(server.uri(), id).expect("request"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_are_deterministic_per_seed_and_request() {
    let statuses = |seed| async move {
        let server = Server::start(ServerConfig::new("s", seed).error_rate(0.5))
            .await
            .expect("server starts");
        let mut out = Vec::new();
        for id in 0..64 {
            out.push(call(&server, id).await.expect("answered").status());
        }
        (out, server.stats())
    };
    let (a, stats) = statuses(9).await;
    let (b, _) = statuses(9).await;
    let (c, _) = statuses(10).await;
    assert_eq!(a, b, "same seed, same faults");
    assert_ne!(a, c, "another seed, other faults");
    let failed = a
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!((16..=48).contains(&failed), "{failed} of 64 failed");
    assert_eq!(stats.calls, 64);
    assert_eq!(stats.injected_errors, failed as u64);
    assert_eq!(stats.served, 64 - failed as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_closes_connections_without_an_answer() {
    let server = Server::start(ServerConfig::new("o", 1).outage(Outage {
        start: Duration::ZERO,
        duration: Duration::from_secs(3_600),
    }))
    .await
    .expect("server starts");
    assert!(call(&server, 1).await.is_err());
    assert_eq!(server.stats().dropped_in_outage, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_outage_answers_503_and_only_inside_its_window() {
    let hour = Duration::from_secs(3_600);
    let unavailable = |start| {
        Server::start(
            ServerConfig::new("u", 1)
                .outage(Outage {
                    start,
                    duration: hour,
                })
                .outage_kind(OutageKind::Unavailable),
        )
    };
    // Inside the window: a 503 at once, no connection dropped, nothing served.
    let down = unavailable(Duration::ZERO).await.expect("server starts");
    let res = call(&down, 1).await.expect("answered");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let stats = down.stats();
    assert_eq!(stats.unavailable_in_outage, 1);
    assert_eq!(stats.dropped_in_outage, 0);
    assert_eq!(stats.served, 0);

    // Before the window: served, and every call counted per request id.
    let up = unavailable(hour).await.expect("server starts");
    for id in [1, 2] {
        let res = call(&up, id).await.expect("answered");
        assert_eq!(res.status(), StatusCode::OK);
    }
    let stats = up.stats();
    assert_eq!(stats.unavailable_in_outage, 0);
    assert_eq!(stats.served, 2);
    assert_eq!(up.calls_for(2..), 1);
    assert_eq!(up.calls_for(..), 2);
    assert_eq!(up.calls_for(3..), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_rejects_beyond_limit_and_queue() {
    // Work that outlasts the test: one call works and one waits, whatever the machine's speed.
    let server = Server::start(
        ServerConfig::new("c", 1)
            .latency(Latency::Fixed(Duration::from_secs(3_600)))
            .capacity(Capacity {
                limit: 1,
                queue: 1,
                reject_cost: Duration::from_millis(1),
            }),
    )
    .await
    .expect("server starts");
    let working = tokio::spawn(call_uri(server.uri().clone(), 1));
    let queued = tokio::spawn(call_uri(server.uri().clone(), 2));
    while server.in_flight() < 2 {
        tokio::task::yield_now().await;
    }
    let res = call(&server, 3).await.expect("answered");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let stats = server.stats();
    assert_eq!((stats.calls, stats.rejected, stats.served), (3, 1, 0));
    assert!(!working.is_finished() && !queued.is_finished());
    working.abort();
    queued.abort();
}

async fn call_uri(uri: http::Uri, id: u64) -> Result<LabResponse, BoxError> {
    HttpClient::new()
        .oneshot(get(&uri, id).expect("request"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honoured_deadline_stops_work() {
    // An hour of work: a 504 can only come from the deadline.
    let server = Server::start(
        ServerConfig::new("d", 1)
            .latency(Latency::Fixed(Duration::from_secs(3_600)))
            .honor_deadline(true),
    )
    .await
    .expect("server starts");
    let res = with_timeout(&server, 1, Duration::from_millis(30))
        .await
        .expect("answered");
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let res = with_timeout(&server, 2, Duration::ZERO)
        .await
        .expect("answered");
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let stats = server.stats();
    assert_eq!(stats.stopped_by_deadline, 1);
    assert_eq!(stats.expired_on_arrival, 1);
    assert_eq!(stats.served, 0);
}

async fn with_timeout(
    server: &Server,
    id: u64,
    timeout: Duration,
) -> Result<LabResponse, BoxError> {
    let mut req = get(server.uri(), id).expect("request");
    req.headers_mut()
        .insert(REQUEST_TIMEOUT_MS, encode_timeout_ms(timeout));
    HttpClient::new().oneshot(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowdown_multiplies_the_latency_of_calls_that_arrive_during_it() {
    let server = |latency, start, factor| {
        Server::start(
            ServerConfig::new("s", 1)
                .latency(Latency::Fixed(latency))
                .honor_deadline(true)
                .slowdown(Slowdown {
                    start,
                    duration: Duration::from_secs(3_600),
                    factor,
                }),
        )
    };
    let hour = Duration::from_secs(3_600);
    // 20 ms of work, ten times over: the answer cannot come back sooner than 200 ms.
    let slowed = server(Duration::from_millis(20), Duration::ZERO, 10.0)
        .await
        .expect("server starts");
    let t0 = Instant::now();
    let res = call(&slowed, 1).await.expect("answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );

    // An hour of work multiplied by 0 inside the window: served at once. Before the window the
    // hour stands, and a deadline stops it. Neither depends on how fast the machine runs.
    let inside = server(hour, Duration::ZERO, 0.0)
        .await
        .expect("server starts");
    let res = with_timeout(&inside, 1, hour).await.expect("answered");
    assert_eq!(res.status(), StatusCode::OK);
    let before = server(hour, hour, 0.0).await.expect("server starts");
    let res = with_timeout(&before, 1, Duration::from_millis(50))
        .await
        .expect("answered");
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(before.stats().stopped_by_deadline, 1);
}

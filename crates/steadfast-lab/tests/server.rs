//! The fault-injecting server's behaviours, over real loopback connections.

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
        duration: Duration::from_secs(60),
    }))
    .await
    .expect("server starts");
    assert!(call(&server, 1).await.is_err());
    assert_eq!(server.stats().dropped_in_outage, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_outage_answers_503_then_recovers() {
    let start = Duration::from_millis(300);
    let server = Server::start(
        ServerConfig::new("u", 1)
            .outage(Outage {
                start: Duration::ZERO,
                duration: start,
            })
            .outage_kind(OutageKind::Unavailable),
    )
    .await
    .expect("server starts");
    let res = call(&server, 1).await.expect("answered");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep_until(server.started() + start).await;
    let res = call(&server, 2).await.expect("answered");
    assert_eq!(res.status(), StatusCode::OK);
    let stats = server.stats();
    assert_eq!(stats.unavailable_in_outage, 1);
    assert_eq!(stats.dropped_in_outage, 0);
    assert_eq!(stats.served, 1);
    assert_eq!(server.calls_for(2..), 1);
    assert_eq!(server.calls_for(..), 2);
    assert_eq!(server.calls_for(3..), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_rejects_beyond_limit_and_queue() {
    let server = Server::start(
        ServerConfig::new("c", 1)
            .latency(Latency::Fixed(Duration::from_millis(300)))
            .capacity(Capacity {
                limit: 1,
                queue: 1,
                reject_cost: Duration::from_millis(1),
            }),
    )
    .await
    .expect("server starts");
    let (a, b, c) = tokio::join!(call(&server, 1), call(&server, 2), call(&server, 3));
    let mut statuses: Vec<u16> = [a, b, c]
        .into_iter()
        .map(|r| r.expect("answered").status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503]);
    let stats = server.stats();
    assert_eq!((stats.rejected, stats.served), (1, 2));
    assert!(server.drain(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honoured_deadline_stops_work() {
    let server = Server::start(
        ServerConfig::new("d", 1)
            .latency(Latency::Fixed(Duration::from_secs(2)))
            .honor_deadline(true),
    )
    .await
    .expect("server starts");
    let with_timeout = |ms: u64| {
        let mut req = get(server.uri(), ms).expect("request");
        req.headers_mut().insert(
            REQUEST_TIMEOUT_MS,
            encode_timeout_ms(Duration::from_millis(ms)),
        );
        HttpClient::new().oneshot(req)
    };
    let started = Instant::now();
    let res = with_timeout(30).await.expect("answered");
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stopped at its deadline"
    );
    let res = with_timeout(0).await.expect("answered");
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let stats = server.stats();
    assert_eq!(stats.stopped_by_deadline, 1);
    assert_eq!(stats.expired_on_arrival, 1);
    assert_eq!(stats.served, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowdown_multiplies_the_latency_of_calls_that_arrive_during_it() {
    let server = |start| {
        Server::start(
            ServerConfig::new("s", 1)
                .latency(Latency::Fixed(Duration::from_millis(20)))
                .slowdown(Slowdown {
                    start,
                    duration: Duration::from_secs(3_600),
                    factor: 10.0,
                }),
        )
    };
    let slowed = server(Duration::ZERO).await.expect("server starts");
    let t0 = Instant::now();
    call(&slowed, 1).await.expect("answered");
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );

    // The window has not begun: the usual latency (well under the slowed one).
    let later = server(Duration::from_secs(3_600))
        .await
        .expect("server starts");
    let t0 = Instant::now();
    call(&later, 1).await.expect("answered");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(20) && took < Duration::from_millis(200),
        "{took:?}"
    );
}

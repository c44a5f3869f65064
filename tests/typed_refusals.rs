//! Typed refusals the way a user meets them: through the facade, over hyper-util's pooled
//! client, against a real socket whose peer drops every connection (a dead peer).
//!
//! The caller's own error enum replaces `BoxError` on a circuit breaker stacked over a
//! concurrency limit (`with_error::<E>()` on both, `steadfast::layers::error_type`): the
//! transport's errors arrive as `CallError::Transport` with hyper-util's own type, and once the
//! breaker opens its refusals arrive as `CallError::Open` with the `CircuitOpen` noun inline,
//! without reaching the socket. The breaker classifies the typed error below it through
//! `AsErrorRef`, which the caller implements for its enum.
//!
//! The same enum carries the end of a call to a peer that never answers: a deadline over an
//! attempt timeout, both typed, cut the call with `CallError::Deadline` or `CallError::Elapsed`
//! inline.
//!
//! Real sockets need the real clock; nothing here sleeps, and each test is bounded by a timeout.
#![cfg(all(feature = "layers", feature = "http"))]
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast::layers::breaker::{BreakerState, CircuitBreakerLayer, CircuitOpen};
use steadfast::layers::classify::AsErrorRef;
use steadfast::layers::deadline::{DeadlineExceeded, DeadlineLayer};
use steadfast::layers::limit::ConcurrencyLimitLayer;
use steadfast::layers::overload::Overloaded;
use steadfast::layers::timeout::{AttemptTimeoutLayer, Elapsed};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

const BOUND: Duration = Duration::from_secs(20);

/// The caller's error: every way the stack can fail, nothing boxed.
#[derive(Debug)]
enum CallError {
    Open(CircuitOpen),
    Overloaded(Overloaded),
    Deadline(DeadlineExceeded),
    Elapsed(Elapsed),
    Transport(hyper_util::client::legacy::Error),
}

/// The breaker's default classifier (`RetryOnError`) reads the error below it, here the typed
/// limit's `CallError`, through `AsErrorRef`: every variant is an error, the nouns included.
impl AsErrorRef for CallError {
    fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Open(e) => Some(e),
            CallError::Overloaded(e) => Some(e),
            CallError::Deadline(e) => Some(e),
            CallError::Elapsed(e) => Some(e),
            CallError::Transport(e) => Some(e),
        }
    }
}

impl From<CircuitOpen> for CallError {
    fn from(e: CircuitOpen) -> Self {
        CallError::Open(e)
    }
}

impl From<Overloaded> for CallError {
    fn from(e: Overloaded) -> Self {
        CallError::Overloaded(e)
    }
}

impl From<DeadlineExceeded> for CallError {
    fn from(e: DeadlineExceeded) -> Self {
        CallError::Deadline(e)
    }
}

impl From<Elapsed> for CallError {
    fn from(e: Elapsed) -> Self {
        CallError::Elapsed(e)
    }
}

impl From<hyper_util::client::legacy::Error> for CallError {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        CallError::Transport(e)
    }
}

/// A peer that accepts each connection and drops it at once; counts the connections.
async fn dead_peer() -> (SocketAddr, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_typed_breaker_over_a_typed_limit_refuses_a_dead_peer_with_the_callers_error() {
    tokio::time::timeout(BOUND, async {
        let (addr, accepted) = dead_peer().await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let breaker = CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .build()
            .unwrap()
            .with_error::<CallError>();
        let svc = ServiceBuilder::new()
            .layer(breaker.clone())
            .layer(
                ConcurrencyLimitLayer::new(8)
                    .unwrap()
                    .with_error::<CallError>(),
            )
            .service(client);
        let get = || {
            Request::get(format!("http://{addr}/"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        };

        for _ in 0..3 {
            let out = svc.clone().oneshot(get()).await;
            assert!(
                matches!(out, Err(CallError::Transport(_))),
                "expected hyper-util's own error, got {out:?}"
            );
        }
        assert_eq!(breaker.handle().state(), BreakerState::Open);
        let reached = accepted.load(Ordering::SeqCst);
        assert!(reached >= 3, "the dead peer saw {reached} connections");

        for _ in 0..5 {
            match svc.clone().oneshot(get()).await {
                Err(CallError::Open(open)) => {
                    assert_eq!(open.state(), BreakerState::Open);
                    assert!(open.remaining().is_some_and(|d| d > Duration::ZERO));
                }
                other => panic!("expected the breaker's refusal, got {other:?}"),
            }
        }
        // Refused calls never reached the socket.
        assert_eq!(accepted.load(Ordering::SeqCst), reached);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_typed_deadline_over_a_typed_attempt_timeout_cuts_a_silent_peer_with_the_callers_error() {
    let (addr, held) = support::silent_peer().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = || {
        Request::get(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let stack = |deadline: Duration, attempt: Duration| {
        ServiceBuilder::new()
            .layer(
                DeadlineLayer::new(deadline)
                    .unwrap()
                    .with_error::<CallError>(),
            )
            .layer(
                AttemptTimeoutLayer::new(attempt)
                    .unwrap()
                    .with_error::<CallError>(),
            )
            .service(client.clone())
    };

    // The deadline ends first: the call ends with the deadline's noun, inline.
    let deadline = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let out = tokio::time::timeout(BOUND, stack(deadline, BOUND).oneshot(get()))
        .await
        .expect("the deadline ends the call");
    assert!(
        matches!(&out, Err(CallError::Deadline(e)) if !e.on_arrival()),
        "expected the deadline, got {out:?}"
    );
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());

    // The attempt's own timeout ends first: `Elapsed`, inline, with the timeout it had.
    let attempt = Duration::from_millis(200);
    let out = tokio::time::timeout(BOUND, stack(BOUND, attempt).oneshot(get()))
        .await
        .expect("the attempt timeout ends the call");
    match out {
        Err(CallError::Elapsed(e)) => assert_eq!(e.timeout(), attempt),
        other => panic!("expected the attempt timeout, got {other:?}"),
    }
    held.abort();
}

//! The standard preset over a real tonic `Channel`, against a real tonic server on 127.0.0.1,
//! driven the way generated code drives it (`tonic::client::Grpc`). Real sockets need the real
//! clock: every deadline here is short, every scenario bounded (10 s), and the assertions are on
//! codes, counts and messages, which hold at any speed.
#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use steadfast_http::preset::{StandardClientLayer, TonicStatus};
use steadfast_layers::breaker::CircuitBreakerLayer;
use steadfast_layers::deadline::Deadline;
use steadfast_layers::rate::RateLimitLayer;
use support::grpc::{channel, serve, StringCodec, PATH};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Layer, Service};

/// One unary call, as generated code makes it.
async fn call<S>(grpc: &mut tonic::client::Grpc<S>, msg: &str) -> Result<String, Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<tonic::codegen::StdError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError>,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let res = grpc
        .unary(
            tonic::Request::new(msg.to_owned()),
            PathAndQuery::from_static(PATH),
            StringCodec,
        )
        .await?;
    Ok(res.into_inner())
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the scenario is bounded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_goes_in_as_it_is_and_unavailable_is_retried() {
    bounded(async {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let addr = serve(move |req: tonic::Request<String>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err(Status::unavailable("warming up"));
                }
                Ok(tonic::Response::new(format!("echo {}", req.into_inner())))
            }
        })
        .await;
        // The point of the issue: `.tonic()` and then `.layer(channel)`, nothing in between.
        let stack = StandardClientLayer::builder()
            .tonic()
            .retry(|r| r.seed(1))
            .build()
            .unwrap()
            .layer(channel(addr).await);
        let mut grpc = tonic::client::Grpc::new(stack);
        assert_eq!(call(&mut grpc, "hi").await.unwrap(), "echo hi");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "UNAVAILABLE was retried once"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_spent_before_the_call_is_deadline_exceeded() {
    bounded(async {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let addr = serve(move |_req: tonic::Request<String>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(tonic::Response::new(String::new())) }
        })
        .await;
        let stack = StandardClientLayer::builder()
            .tonic()
            .build()
            .unwrap()
            .layer(channel(addr).await);
        let mut grpc = tonic::client::Grpc::new(stack);
        let spent = Deadline::at(tokio::time::Instant::now() - Duration::from_millis(1));
        let status = spent.scope(call(&mut grpc, "late")).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was sent");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_spent_during_the_call_is_deadline_exceeded_not_cancelled() {
    bounded(async {
        let addr = serve(|_req: tonic::Request<String>| async {
            std::future::pending::<()>().await;
            Ok(tonic::Response::new(String::new()))
        })
        .await;
        // tonic's `Channel` arms its own timer from the `grpc-timeout` we write (10 ms before
        // our deadline): whichever fires, the caller reads DEADLINE_EXCEEDED.
        for (timeout, attempt) in [(200, None), (400, Some(150))] {
            let mut builder = StandardClientLayer::builder()
                .tonic()
                .timeout(Duration::from_millis(timeout));
            builder = match attempt {
                Some(ms) => builder.attempt_timeout(Duration::from_millis(ms)),
                None => builder.no_attempt_timeout(),
            };
            let stack = builder.build().unwrap().layer(channel(addr).await);
            let mut grpc = tonic::client::Grpc::new(stack);
            let status = call(&mut grpc, "slow").await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::DeadlineExceeded,
                "timeout {timeout} ms, attempt {attempt:?}: {status:?}"
            );
        }
    })
    .await;
}

/// A tonic server answers its own timer (armed from the `grpc-timeout` sent) with a
/// Trailers-Only `CANCELLED "Timeout expired"`; on a busy machine that answer can arrive before
/// the client's timers fire. It is an attempt timeout: retried while the deadline allows, and
/// the caller reads `DEADLINE_EXCEEDED`. (A stand-in channel on a paused clock, so that the
/// server's answer always comes first.)
#[tokio::test(start_paused = true)]
async fn a_server_timer_that_fires_first_is_deadline_exceeded_and_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let server_timer = tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let res = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "1")
                .header("grpc-message", "Timeout expired")
                .body(tonic::body::Body::empty())
                .unwrap();
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let stack = StandardClientLayer::builder()
        .tonic()
        .timeout(Duration::from_millis(1_000))
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .layer(server_timer);
    let mut grpc = tonic::client::Grpc::new(stack);
    let status = call(&mut grpc, "slow").await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the server's timeout was retried as an attempt timeout: {} call(s)",
        calls.load(Ordering::SeqCst)
    );
}

/// A server that cancels for another reason keeps its code.
#[tokio::test(start_paused = true)]
async fn a_server_cancel_for_another_reason_stays_cancelled() {
    let server = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
        let res = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "1")
            .header("grpc-message", "shutting down")
            .body(tonic::body::Body::empty())
            .unwrap();
        Ok::<_, std::convert::Infallible>(res)
    });
    let stack = StandardClientLayer::builder()
        .tonic()
        .build()
        .unwrap()
        .layer(server);
    let mut grpc = tonic::client::Grpc::new(stack);
    let status = call(&mut grpc, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "shutting down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_is_unavailable_and_says_so() {
    bounded(async {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let addr = serve(move |_req: tonic::Request<String>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(tonic::Response::new("ok".to_owned())) }
        })
        .await;
        let breaker = CircuitBreakerLayer::builder().build().unwrap();
        let handle = breaker.handle();
        let stack = StandardClientLayer::builder()
            .tonic()
            .breaker(breaker)
            .build()
            .unwrap()
            .layer(channel(addr).await);
        let mut grpc = tonic::client::Grpc::new(stack);
        assert_eq!(call(&mut grpc, "a").await.unwrap(), "ok");
        handle.force_open();
        let status = call(&mut grpc, "b").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("circuit"), "{status:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the open breaker sent nothing"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_resource_exhausted() {
    bounded(async {
        let addr = serve(|_req: tonic::Request<String>| async {
            Ok(tonic::Response::new("ok".to_owned()))
        })
        .await;
        // One call a minute, in the breaker slot (any layer fits there).
        let limit = RateLimitLayer::builder(1, Duration::from_secs(60))
            .build()
            .unwrap();
        let stack = StandardClientLayer::builder()
            .tonic()
            .timeout(Duration::from_secs(1))
            .breaker(limit)
            .build()
            .unwrap()
            .layer(channel(addr).await);
        let mut grpc = tonic::client::Grpc::new(stack);
        assert_eq!(call(&mut grpc, "a").await.unwrap(), "ok");
        let status = call(&mut grpc, "b").await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("rate limit"), "{status:?}");
    })
    .await;
}

/// The stack's service type names its transport: errors are `tonic::Status`.
#[test]
fn the_tonic_stack_returns_statuses() {
    fn errors_are_statuses<S: Service<http::Request<tonic::body::Body>, Error = Status>>(_: &S) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let stack: TonicStatus<_> = StandardClientLayer::builder()
            .tonic()
            .build()
            .unwrap()
            .layer(channel);
        errors_are_statuses(&stack);
    });
}

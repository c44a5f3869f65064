//! A → B → C over real tonic on 127.0.0.1: C sees the shrunken deadline and its work stops when
//! A's time is up. Real sockets need the real clock: the test is short (a 300 ms deadline),
//! bounded (10 s overall), and asserts ranges, not exact instants (exact timing is asserted on
//! a paused clock in `propagate.rs`).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::PathAndQuery;
use steadfast_http::codec::decode_grpc_timeout;
use steadfast_http::propagate::{
    DeadlinePropagation, DeadlinePropagationLayer, DeadlineServerLayer,
};
use steadfast_layers::deadline::Deadline;
use support::grpc::{Hop, StringCodec, PATH};
use support::DropProbe;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::Layer;

async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(tonic::Request<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<String>, Status>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .layer(DeadlineServerLayer::new())
        .add_service(Hop { handler });
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

async fn client(addr: SocketAddr) -> tonic::client::Grpc<DeadlinePropagation<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(DeadlinePropagationLayer::new().layer(channel))
}

async fn call(
    grpc: &mut tonic::client::Grpc<DeadlinePropagation<Channel>>,
    msg: &str,
) -> Result<String, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let res = grpc
        .unary(
            tonic::Request::new(msg.to_owned()),
            PathAndQuery::from_static(PATH),
            StringCodec,
        )
        .await?;
    Ok(res.into_inner())
}

#[derive(Debug, Default)]
struct SeenByC {
    grpc_timeout: Option<Duration>,
    remaining: Option<Duration>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_b_to_c_over_loopback() {
    tokio::time::timeout(Duration::from_secs(10), scenario())
        .await
        .expect("the scenario is bounded");
}

async fn scenario() {
    let seen = Arc::new(Mutex::new(SeenByC::default()));
    let stopped = Arc::new(Mutex::new(None));

    // C: note the deadline it was given, then "work" for 5 s.
    let (s, st) = (seen.clone(), stopped.clone());
    let c_addr = serve(move |req: tonic::Request<String>| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            {
                let mut s = s.lock().unwrap();
                s.grpc_timeout = req
                    .metadata()
                    .get("grpc-timeout")
                    .and_then(|v| decode_grpc_timeout(v.as_bytes()).ok());
                s.remaining = Deadline::current().map(|d| d.remaining());
            }
            let _probe = DropProbe(st);
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(tonic::Response::new("c done".to_owned()))
        }
    })
    .await;

    // B: calls C while serving A; the deadline comes from B's server layer, no plumbing.
    let to_c = client(c_addr).await;
    let b_addr = serve(move |req: tonic::Request<String>| {
        let mut to_c = to_c.clone();
        async move {
            let answer = call(&mut to_c, &req.into_inner()).await?;
            Ok(tonic::Response::new(format!("b: {answer}")))
        }
    })
    .await;

    // A: 300 ms for everything.
    let mut to_b = client(b_addr).await;
    let start = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(300)).unwrap();
    let result = deadline.scope(call(&mut to_b, "hello")).await;
    let a_elapsed = start.elapsed();

    // A hears back about when its time is up, not after C's 5 s.
    let status = result.unwrap_err();
    // B's DeadlineServerLayer answers DEADLINE_EXCEEDED; tonic's own server timeout (which
    // also reads grpc-timeout, outside the layers) may win the race and answer CANCELLED.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(a_elapsed < Duration::from_millis(1_000), "{a_elapsed:?}");

    // C saw the shrunken deadline: 300 ms minus a 10 ms margin per hop, minus transit.
    let seen_timeout = seen
        .lock()
        .unwrap()
        .grpc_timeout
        .expect("C got grpc-timeout");
    assert!(
        seen_timeout <= Duration::from_millis(280),
        "{seen_timeout:?}"
    );
    assert!(
        seen_timeout >= Duration::from_millis(100),
        "{seen_timeout:?}"
    );
    let remaining = seen
        .lock()
        .unwrap()
        .remaining
        .expect("C had a deadline in scope");
    assert!(remaining <= seen_timeout);

    // C's work stopped (its future was dropped) around A's deadline, not after 5 s.
    let mut waited = Duration::ZERO;
    let stopped_at = loop {
        if let Some(at) = *stopped.lock().unwrap() {
            break at;
        }
        assert!(waited < Duration::from_secs(2), "C never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    };
    let c_ran = stopped_at - start;
    eprintln!(
        "A: {:?} after {a_elapsed:?}; C got grpc-timeout {seen_timeout:?}, stopped after {c_ran:?}",
        status.code()
    );
    assert!(c_ran < Duration::from_millis(1_000), "{c_ran:?}");
}

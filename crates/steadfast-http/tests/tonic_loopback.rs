//! A → B → C over real tonic on 127.0.0.1: C sees the shrunken deadline and its work stops when
//! A's time is up. Real sockets need the real clock, so every check holds at any speed of the
//! machine: C's work never ends on its own (only the deadline can stop it), C's deadline is
//! bounded above by what A gave less the hops' margins and below by that less the time the
//! request took to reach C, as measured, and nothing asserts how long anything took. Exact
//! timing is asserted on a paused clock in `propagate.rs`. The whole test is bounded (10 s) as a
//! guard against a hang; it takes a few hundred milliseconds.
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
    arrived: Option<Instant>,
    grpc_timeout: Option<Duration>,
    remaining: Option<Duration>,
}

/// What A gives the whole call, and what each hop's client shaves off for itself.
const BUDGET: Duration = Duration::from_millis(300);
const HOP_MARGIN: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_b_to_c_over_loopback() {
    tokio::time::timeout(Duration::from_secs(10), scenario())
        .await
        .expect("the scenario is bounded");
}

async fn scenario() {
    let seen = Arc::new(Mutex::new(SeenByC::default()));
    let stopped = Arc::new(Mutex::new(None));

    // C: note the deadline it was given, then "work" until it is stopped: nothing else ends it.
    let (s, st) = (seen.clone(), stopped.clone());
    let c_addr = serve(move |req: tonic::Request<String>| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            {
                let mut s = s.lock().unwrap();
                s.arrived = Some(Instant::now());
                s.grpc_timeout = req
                    .metadata()
                    .get("grpc-timeout")
                    .and_then(|v| decode_grpc_timeout(v.as_bytes()).ok());
                s.remaining = Deadline::current().map(|d| d.remaining());
            }
            let _probe = DropProbe(st);
            std::future::pending::<()>().await;
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

    // A: BUDGET for everything.
    let mut to_b = client(b_addr).await;
    let start = Instant::now();
    let deadline = Deadline::after(BUDGET).unwrap();
    let result = deadline.scope(call(&mut to_b, "hello")).await;

    // A hears back although C never answers: its deadline, enforced on the way.
    let status = result.unwrap_err();
    // B's DeadlineServerLayer answers DEADLINE_EXCEEDED; tonic's own server timeout (which
    // also reads grpc-timeout, outside the layers) may win the race and answer CANCELLED.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let Some(arrived) = seen.arrived else {
        // So slow a machine that the deadline ran out before B called C: B refused to send a
        // call with no time left, which is right, and there is nothing more to see.
        eprintln!("C was never called: the deadline ran out on the way ({status:?})");
        return;
    };
    // C saw the shrunken deadline: the budget less a margin per hop, less the time spent on the
    // way (at most from A's start to C's arrival), less the header's millisecond rounding.
    let seen_timeout = seen.grpc_timeout.expect("C got grpc-timeout");
    let ceiling = BUDGET - 2 * HOP_MARGIN;
    let on_the_way = arrived - start;
    let floor = ceiling
        .saturating_sub(on_the_way)
        .saturating_sub(Duration::from_millis(2));
    assert!(
        floor <= seen_timeout && seen_timeout <= ceiling,
        "{floor:?} <= {seen_timeout:?} <= {ceiling:?} (C called {on_the_way:?} after A's start)"
    );
    let remaining = seen.remaining.expect("C had a deadline in scope");
    assert!(remaining <= seen_timeout);

    // C's work, which never ends on its own, was stopped (its future dropped).
    let stopped_at = loop {
        if let Some(at) = *stopped.lock().unwrap() {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "A: {:?}; C got grpc-timeout {seen_timeout:?} {on_the_way:?} after A's start, stopped after {:?}",
        status.code(),
        stopped_at - start
    );
}

//! Deadline propagation through a tonic A → B → C chain on 127.0.0.1, without protoc (a
//! hand-written string codec and service, as generated code would write them).
//!
//! A gives each call 300 ms. B serves A and calls C while serving; C does the work. Every
//! server sits behind `DeadlineServerLayer` (reads `grpc-timeout`, puts the deadline on the
//! request and in scope, answers `DEADLINE_EXCEEDED` when it is spent) and every client behind
//! `DeadlinePropagationLayer` (writes what is left minus a 10 ms margin). B needs no deadline
//! plumbing: its handler's outbound call inherits the deadline from the scope.
//!
//! Run it with `cargo run --example tonic_deadline`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use steadfast::layers::deadline::Deadline;
use steadfast::layers::BoxError;
use steadfast::net::propagate::{
    DeadlinePropagation, DeadlinePropagationLayer, DeadlineServerLayer,
};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Status;
use tower::Layer;

const PATH: &str = "/demo.Hop/Call";

/// Messages are UTF-8 strings.
#[derive(Clone, Copy, Debug, Default)]
struct StringCodec;

impl Codec for StringCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = StringCodec;
    type Decoder = StringCodec;
    fn encoder(&mut self) -> Self::Encoder {
        StringCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        StringCodec
    }
}

impl Encoder for StringCodec {
    type Item = String;
    type Error = Status;
    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for StringCodec {
    type Item = String;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// The `demo.Hop` service: one unary method served by `handler`.
#[derive(Clone)]
struct Hop<F> {
    handler: F,
}

impl<F> NamedService for Hop<F> {
    const NAME: &'static str = "demo.Hop";
}

impl<F, Fut> tower::Service<http::Request<Body>> for Hop<F>
where
    F: Fn(tonic::Request<String>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<String>, Status>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            if req.uri().path() != PATH {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            Ok(tonic::server::Grpc::new(StringCodec)
                .unary(tower::service_fn(handler), req)
                .await)
        })
    }
}

/// Serves `handler` behind `DeadlineServerLayer` on an OS-chosen loopback port.
async fn serve<F, Fut>(handler: F) -> Result<SocketAddr, BoxError>
where
    F: Fn(tonic::Request<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<String>, Status>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Server::builder()
        .layer(DeadlineServerLayer::new())
        .add_service(Hop { handler });
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    Ok(addr)
}

type Client = tonic::client::Grpc<DeadlinePropagation<Channel>>;

/// A tonic client behind `DeadlinePropagationLayer`.
async fn client(addr: SocketAddr) -> Result<Client, BoxError> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(tonic::client::Grpc::new(
        DeadlinePropagationLayer::new().layer(channel),
    ))
}

async fn call(client: &mut Client, msg: String) -> Result<String, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let res = client
        .unary(
            tonic::Request::new(msg),
            PathAndQuery::from_static(PATH),
            StringCodec,
        )
        .await?;
    Ok(res.into_inner())
}

fn left() -> String {
    Deadline::current().map_or("none".into(), |d| {
        format!("{} ms", d.remaining().as_millis())
    })
}

/// Stops and reports when C's work future is dropped.
struct Stopped(Instant, &'static str);

impl Drop for Stopped {
    fn drop(&mut self) {
        println!(
            "  C: work for {:?} ended after {} ms",
            self.1,
            self.0.elapsed().as_millis()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // C: works as long as the message says.
    let c = serve(|req: tonic::Request<String>| async move {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let work = if req.get_ref() == "slow" {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(50)
        };
        println!(
            "  C: got grpc-timeout {timeout}, deadline in scope: {}, will work {work:?}",
            left()
        );
        let _stopped = Stopped(
            Instant::now(),
            if work.as_secs() > 0 { "5 s" } else { "50 ms" },
        );
        tokio::time::sleep(work).await;
        Ok(tonic::Response::new(format!("C worked {work:?}")))
    })
    .await?;

    // B: calls C while serving A; the deadline is inherited from B's server layer.
    let to_c = client(c).await?;
    let b = serve(move |req: tonic::Request<String>| {
        let mut to_c = to_c.clone();
        async move {
            let timeout = req
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            println!(
                "  B: got grpc-timeout {timeout}, deadline in scope: {}",
                left()
            );
            let answer = call(&mut to_c, req.into_inner()).await?;
            Ok(tonic::Response::new(format!("B relayed: {answer}")))
        }
    })
    .await?;

    // A: 300 ms per call.
    let mut to_b = client(b).await?;
    for work in ["fast", "slow"] {
        println!("A calls B ({work}) with a 300 ms deadline");
        let start = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(300)).ok_or("deadline")?;
        let result = deadline.scope(call(&mut to_b, work.to_owned())).await;
        let ms = start.elapsed().as_millis();
        match result {
            Ok(answer) => println!("  A: {answer:?} after {ms} ms"),
            // tonic's own server timeout (outside the layers) may answer CANCELLED before
            // steadfast's layer answers DEADLINE_EXCEEDED: both mean the time was up.
            Err(status) => println!(
                "  A: {:?} ({}) after {ms} ms",
                status.code(),
                status.message()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

//! A gRPC service config (gRFC A6) applied to a tonic `Channel`: per-method timeouts, retries,
//! hedging and retry throttling from the standard JSON, against a tonic server on 127.0.0.1
//! (without protoc: a hand-written string codec and service, as generated code would write
//! them).
//!
//! `demo.Echo/Find` fails twice with `UNAVAILABLE`, then answers: its `retryPolicy` retries it.
//! `demo.Echo/Quote` is stuck on its first attempt: its `hedgingPolicy` sends a copy after
//! 100 ms, which answers. `demo.Echo/Fail` answers `UNAVAILABLE` and has no policy (the default
//! entry `{}`): tried once.
//!
//! Run it with `cargo run --example grpc_service_config --features grpc`, or pass your own
//! service config: `cargo run --example grpc_service_config --features grpc -- config.json`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use steadfast::layers::BoxError;
use steadfast::net::grpc_config::{ServiceConfig, ServiceConfigLayer};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Status;
use tower::Layer;

/// The service config, as a name resolver or a file would carry it (gRFC A6's format).
const SERVICE_CONFIG: &str = r#"{
  "methodConfig": [
    {
      "name": [{ "service": "demo.Echo", "method": "Find" }],
      "timeout": "2s",
      "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": ".05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]
      }
    },
    {
      "name": [{ "service": "demo.Echo", "method": "Quote" }],
      "timeout": "2s",
      "hedgingPolicy": {
        "maxAttempts": 2,
        "hedgingDelay": "0.1s",
        "nonFatalStatusCodes": ["UNAVAILABLE"]
      }
    },
    {
      "name": [{}],
      "timeout": "1s"
    }
  ],
  "retryThrottling": { "maxTokens": 10, "tokenRatio": 0.1 }
}"#;

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

/// The `demo.Echo` service: each method counts its calls and answers as the module docs say.
#[derive(Clone, Default)]
struct Echo {
    find: Arc<AtomicU32>,
    quote: Arc<AtomicU32>,
    fail: Arc<AtomicU32>,
}

impl NamedService for Echo {
    const NAME: &'static str = "demo.Echo";
}

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let echo = self.clone();
        Box::pin(async move {
            let method = req
                .uri()
                .path()
                .trim_start_matches("/demo.Echo/")
                .to_owned();
            let handler = tower::service_fn(move |r: tonic::Request<String>| {
                let echo = echo.clone();
                let method = method.clone();
                async move {
                    let msg = r.into_inner();
                    match method.as_str() {
                        "Find" => {
                            let n = echo.find.fetch_add(1, Ordering::SeqCst);
                            if n < 2 {
                                return Err(Status::unavailable(format!("warming up ({n})")));
                            }
                            Ok(tonic::Response::new(format!(
                                "found {msg:?} on attempt {}",
                                n + 1
                            )))
                        }
                        "Quote" => {
                            let n = echo.quote.fetch_add(1, Ordering::SeqCst);
                            if n == 0 {
                                tokio::time::sleep(Duration::from_secs(10)).await;
                            }
                            Ok(tonic::Response::new(format!(
                                "quote for {msg:?} from attempt {}",
                                n + 1
                            )))
                        }
                        "Fail" => {
                            echo.fail.fetch_add(1, Ordering::SeqCst);
                            Err(Status::unavailable("always"))
                        }
                        other => Err(Status::unimplemented(other.to_owned())),
                    }
                }
            });
            Ok(tonic::server::Grpc::new(StringCodec)
                .unary(handler, req)
                .await)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The service config: a file given on the command line, or the one above.
    let json = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(path)?,
        None => SERVICE_CONFIG.to_owned(),
    };
    // Validated with A6's rules; a bad field is named: `methodConfig[1].hedgingPolicy.maxAttempts`.
    let config = ServiceConfig::from_json(&json)?;
    let layer = ServiceConfigLayer::new(&config)?;
    let throttle = layer.throttle().cloned();

    let echo = Echo::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder().add_service(echo.clone());
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // The channel as it is, under one stack per method; generated code takes it the same way
    // (`EchoClient::new(channel)`).
    let mut client = tonic::client::Grpc::new(layer.layer(channel));

    for (method, calls) in [
        ("/demo.Echo/Find", &echo.find),
        ("/demo.Echo/Quote", &echo.quote),
        ("/demo.Echo/Fail", &echo.fail),
    ] {
        let start = Instant::now();
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let res = client
            .unary(
                tonic::Request::new("steadfast".to_owned()),
                PathAndQuery::from_static(method),
                StringCodec,
            )
            .await;
        let ms = start.elapsed().as_millis();
        let sent = calls.load(Ordering::SeqCst);
        match res {
            Ok(answer) => println!(
                "{method}: {:?} after {ms} ms, {sent} attempt(s)",
                answer.into_inner()
            ),
            Err(status) => println!(
                "{method}: {:?} {:?} after {ms} ms, {sent} attempt(s)",
                status.code(),
                status.message()
            ),
        }
    }
    if let Some(bucket) = throttle {
        println!("retry throttling: {} tokens left", bucket.tokens());
    }
    Ok(())
}

//! Replayable request bodies, so that requests with streaming bodies can be retried and hedged
//! (tower#682, tonic#733: tower's retry needs `Clone` requests, and streaming bodies are not).
//!
//! - [`ReplayBody`] buffers what it sends, up to a limit (default 64 KiB, as linkerd2-proxy), and
//!   hands out copies that re-send the same bytes. Beyond the limit the buffer is dropped and the
//!   request is no longer retryable (traced at `DEBUG` on target `steadfast::body`).
//! - [`HttpReplay`] implements steadfast's
//!   [`Replay`](steadfast_layers::retry::Replay) for `http::Request<ReplayBody<B>>`: the retry
//!   layer's `.replay(HttpReplay::new())`.
//! - [`ReplayBodyLayer`] wraps each request's body on the way in, above the retry layer.
//!
//! Memory: at most `limit` bytes per request in flight, shared by all its copies (chunks are
//! reference-counted `Bytes`), freed when the last copy is dropped.
//!
//! Known limit: steadfast's retry layer sends the kept template itself as the *last* attempt
//! without asking [`Replay`](steadfast_layers::retry::Replay) again, so a body that outgrew the
//! buffer during the first attempt cannot veto that last attempt; instead that copy fails with
//! [`ReplayBufferExceeded`] (classified fatal, `not_replayable`) rather than send a truncated
//! body. Bodies whose size hint already exceeds the limit are never retried at all.
//!
//! # Example
//!
//! A body that streams in over time, a peer that reads it all and answers `503` the first time:
//! the retry re-sends identical bytes.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body::Frame;
//! use http_body_util::{BodyExt, StreamBody};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use steadfast_http::body::{HttpReplay, ReplayBody, ReplayBodyLayer};
//! use steadfast_http::classify::HttpClassifier;
//! use steadfast_layers::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let received = Arc::new(Mutex::new(Vec::new()));
//! let r = received.clone();
//! let peer = service_fn(move |req: http::Request<ReplayBody<_>>| {
//!     let r = r.clone();
//!     async move {
//!         let bytes = req.into_body().collect().await?.to_bytes();
//!         let mut seen = r.lock().unwrap();
//!         seen.push(bytes);
//!         let status = if seen.len() == 1 { 503 } else { 200 };
//!         Ok::<_, steadfast_layers::BoxError>(http::Response::builder().status(status).body(()).unwrap())
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(ReplayBodyLayer::new())
//!     .layer(RetryLayer::builder().no_budget().classifier(HttpClassifier::new()).replay(HttpReplay::new()).build().unwrap())
//!     .service(peer);
//!
//! // Three chunks, 10 ms apart.
//! let chunks = futures::stream::unfold(0, |i| async move {
//!     if i == 3 { return None; }
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//!     Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("chunk{i};")))), i + 1))
//! });
//! let req = http::Request::post("/upload").body(StreamBody::new(chunks)).unwrap();
//! let res = client.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let seen = received.lock().unwrap();
//! assert_eq!(seen.len(), 2);
//! assert_eq!(seen[0], "chunk0;chunk1;chunk2;");
//! assert_eq!(seen[1], seen[0]);
//! # }
//! ```

mod error;
mod future;
mod layer;
mod replay;
mod replay_body;
mod service;

pub use error::ReplayBufferExceeded;
pub use future::ResponseFuture;
pub use layer::{ReplayBodyLayer, MAX_REPLAY_LIMIT};
pub use replay::HttpReplay;
pub use replay_body::{ReplayBody, DEFAULT_REPLAY_LIMIT};
pub use service::WithReplayBody;

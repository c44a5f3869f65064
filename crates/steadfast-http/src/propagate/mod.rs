//! Deadline propagation across hops: the caller's deadline crosses the wire as a relative
//! timeout, shrinking by a safety margin at each hop, so that every service in a chain stops
//! working when the original caller stops waiting.
//!
//! - **Server side**, [`DeadlineServerLayer`]: reads the incoming timeout — `grpc-timeout` on
//!   gRPC requests (detected by `content-type: application/grpc*`) and the plain-HTTP header
//!   (default [`x-request-timeout-ms`](crate::codec::REQUEST_TIMEOUT_MS), whole milliseconds),
//!   the earlier winning, shrunk to any deadline already carried in-process — and turns it into
//!   an absolute [`Deadline`](steadfast_layers::deadline::Deadline). It stores the deadline in
//!   the request extensions (as the
//!   [`HttpExtensions`](steadfast_layers::deadline::HttpExtensions) carrier does) and runs the
//!   handler's `call` and future in the deadline's task-local scope, so every outbound call made
//!   while serving inherits it. A request that arrives already expired is answered without
//!   calling the handler: `504 Gateway Timeout`, or for gRPC `200` with `grpc-status: 4`
//!   (`DEADLINE_EXCEEDED`, Trailers-Only). By default the handler is also cut off (its future
//!   dropped) when the deadline passes, with the same answer. A malformed header is a
//!   protocol error by default, counted and traced: for gRPC `200` with `grpc-status: 13`
//!   (`INTERNAL`) and `grpc-message: malformed grpc-timeout: …` (Trailers-Only), as grpc-go
//!   answers; for plain HTTP `400 Bad Request`. Ignoring it would silently remove the caller's
//!   deadline, and the handler could run unbounded.
//!   [`on_malformed(MalformedDeadline::Ignore)`](DeadlineServerLayerBuilder::on_malformed)
//!   keeps the lenient behaviour (serve as if the header were absent). A valid timeout longer
//!   than [`MAX_TIMEOUT`](steadfast_layers::deadline::MAX_TIMEOUT) (possible only in the plain
//!   header) is clamped to it, so every request served with a header has a deadline no later
//!   than its sender's.
//! - **Client side**, [`DeadlinePropagationLayer`]: takes the request's deadline (the earlier of
//!   its `Deadline` extension and [`Deadline::current`](steadfast_layers::deadline::Deadline::current)),
//!   subtracts a safety margin (default [`DEFAULT_MARGIN`], 10 ms), optionally caps it
//!   ([`max_timeout`](DeadlinePropagationLayerBuilder::max_timeout), e.g. the per-attempt
//!   timeout), and writes it: `grpc-timeout` for gRPC (finest unit, rounded down), the header
//!   in whole milliseconds (rounded down) for plain HTTP. A shorter timeout already on the
//!   request is kept. When nothing is left it fails at once with
//!   [`DeadlineExceeded`](steadfast_layers::deadline::DeadlineExceeded) (`on_arrival()`), without
//!   calling the inner service. It does not enforce the deadline itself: put a
//!   [`DeadlineLayer`](steadfast_layers::deadline::DeadlineLayer) or attempt timeout above it.
//!
//! Cost: with no deadline anywhere, one header lookup (server) or one task-local lookup
//! (client); otherwise one clock read per request, and on the server a timer armed only if the
//! handler does not finish on its first poll.
//!
//! To cap what callers may ask for on the server, stack a
//! [`DeadlineLayer::new(max)`](steadfast_layers::deadline::DeadlineLayer::new) with the
//! `HttpExtensions` carrier inside this layer: deadlines only shrink.
//!
//! # Example
//!
//! A → B → C without sockets: B serves A's request and calls C; C sees A's 1 s minus one margin
//! per hop, and is cut off when A's time is up.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_http::codec::{decode_timeout_ms, REQUEST_TIMEOUT_MS};
//! use steadfast_http::propagate::{DeadlinePropagationLayer, DeadlineServerLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! type Res = http::Response<String>;
//! // C: reports the timeout it received, then works for 5 s.
//! let c = DeadlineServerLayer::new().layer(service_fn(|req: http::Request<()>| async move {
//!     let seen = decode_timeout_ms(&req.headers()[REQUEST_TIMEOUT_MS]).unwrap();
//!     assert_eq!(seen, Duration::from_millis(980)); // 1 s - 10 ms (A) - 10 ms (B)
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<Res, std::convert::Infallible>(http::Response::new("done".into()))
//! }));
//! // B: calls C through the propagation layer while serving.
//! let to_c = DeadlinePropagationLayer::new().layer(c);
//! let b = DeadlineServerLayer::new().layer(service_fn(move |_req: http::Request<()>| {
//!     let to_c = to_c.clone();
//!     async move { to_c.oneshot(http::Request::new(())).await }
//! }));
//! // A: 1 s for everything.
//! let to_b = DeadlinePropagationLayer::new().layer(b);
//! let start = tokio::time::Instant::now();
//! let deadline = steadfast_layers::deadline::Deadline::after(Duration::from_secs(1)).unwrap();
//! let res = deadline.scope(to_b.oneshot(http::Request::new(()))).await.unwrap();
//! assert_eq!(res.status(), 504); // C was cut off and answered 504 at its deadline
//! assert_eq!(start.elapsed(), Duration::from_millis(980));
//! # }
//! ```

mod future;
mod layer;
mod service;

pub use future::{PropagationFuture, ServerFuture};
pub use layer::{
    DeadlinePropagationLayer, DeadlinePropagationLayerBuilder, DeadlineServerLayer,
    DeadlineServerLayerBuilder, MalformedDeadline, DEFAULT_MARGIN,
};
pub use service::{DeadlinePropagation, DeadlineServer};

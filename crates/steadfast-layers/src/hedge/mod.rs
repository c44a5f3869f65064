//! Budgeted hedging: when a call is slow, send a copy of it and take the first success.
//!
//! "The Tail at Scale" (Dean and Barroso) hedges a request once it has waited longer than the
//! 95th percentile: the tail collapses for a few percent more load. [`HedgeLayer`] does that for
//! any `tower::Service`, with the rules that make it safe:
//!
//! 1. **When**: after a fixed delay, or after a latency percentile learned from a rolling
//!    histogram of every completed attempt, winners and losers ([`HedgeDelay`]). Until the
//!    histogram holds `min_samples` samples the layer sends no hedge, or uses a warm-up delay.
//! 2. **How many**: up to `max_hedges` (1 to 10) per call, one `delay` apart.
//! 3. **Who wins**: the first *successful* result, as the shared
//!    [`Classifier`](crate::classify::Classifier) judges it. An early failure waits for the
//!    attempts still in flight; when every attempt sent has failed, the call returns the most
//!    informative failure (a failed response over an error, else the latest), unchanged, so a
//!    retry layer above classifies it as usual. The losers are cancelled by dropping them.
//!    The [`HedgePolicy`] may judge finished attempts otherwise ([`HedgePolicy::judge`],
//!    [`AttemptVerdict`]): [`ByOutcome`] follows gRPC A6, where a fatal failure ends the call
//!    at once (the others cancelled), a non-fatal one sends the next hedge at once
//!    ([`NextHedge::Now`]), and server pushback delays it ([`NextHedge::After`]) or stops
//!    hedging ([`NextHedge::Stop`]).
//! 4. **Which requests**: only those the [`HedgePolicy`] allows (by default, requests
//!    [marked idempotent](Idempotent)) and that can be copied ([`Replay`](crate::retry::Replay),
//!    cloning by default).
//! 5. **Deadline**: no hedge unless at least `min_hedge_time` of the
//!    [deadline](crate::deadline) is left.
//! 6. **Budget**: hedges are capped at a fraction of requests
//!    ([`budget_ratio`](HedgeLayerBuilder::budget_ratio), `0.1` = 10 %, the unit of every budget
//!    in this crate), and can also draw on a shared [`RetryBudget`](crate::retry::RetryBudget)
//!    entered with [`budget`](HedgeLayerBuilder::budget), the retry layer's method name, so
//!    retries and hedges share one cap on extra load.
//!
//! A hedge that is due but not sent (deadline, budget, copy) ends hedging for that call; the
//! attempts in flight continue.
//!
//! Each attempt (the original, each hedge) runs in a `steadfast.hedge.attempt` span of its own
//! under the call's `steadfast.hedge` span, the winner marked and the losers marked cancelled.
//! Every decision is a `tracing` event inside a `steadfast.hedge` span and a metric (see
//! `docs/observability.md`): `steadfast.hedge.sent`, `steadfast.hedge.wins{winner}`,
//! `steadfast.hedge.budget_exhausted{budget}`, `steadfast.hedge.skipped{reason}` and the gauge
//! `steadfast.hedge.delay`.
//!
//! Cost on a call that completes on its first poll: no allocation, no lock and no clock read
//! (one copy of the request and one clone of the service, as with retries; with a learned delay,
//! a few relaxed atomic operations to record the sample). A slow call reads the clock when it is
//! first found pending (to arm the timer) and, with a learned delay, when it completes. tower's
//! `Hedge`, by contrast, reads the clock twice and locks its histogram on every call, records
//! only successes and with millisecond precision, sends one hedge at most, has no budget, and
//! lets the first completion win even when it is an error.
//!
//! # Changing settings at run time
//!
//! [`HedgeLayer::handle`] gives a [`HedgeHandle`] that changes the delay while the layer serves,
//! checked by [`HedgeDelay::validate`] as the builder checks it. A fixed delay is one atomic
//! read per call; a learned delay keeps its samples and takes a new percentile (recomputed at
//! once), minimum samples, warm-up delay and cadence. A call keeps the delay it started with.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
//! let layer = HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::from_millis(30))).build()?;
//! layer.handle().set_delay(HedgeDelay::fixed(Duration::from_millis(10)))?;
//! assert_eq!(layer.current_delay(), Some(Duration::from_millis(10)));
//! # Ok::<(), steadfast_layers::ConfigError>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::hedge::{HedgeDelay, HedgeLayer, Idempotent};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A replica set where the first replica asked is stuck.
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let replicas = service_fn(move |req: http::Request<()>| {
//!     let n = c.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         tokio::time::sleep(Duration::from_millis(if n == 0 { 5_000 } else { 20 })).await;
//!         Ok::<_, std::io::Error>(format!("{} from replica {n}", req.uri()))
//!     }
//! });
//!
//! let layer = HedgeLayer::builder()
//!     // The 95th percentile once 100 calls are known; 50 ms until then.
//!     .delay(HedgeDelay::percentile(95.0).warmup_delay(Duration::from_millis(50)))
//!     .max_hedges(2)
//!     .budget_ratio(0.05)
//!     .build()
//!     .unwrap();
//! let svc = layer.layer(replicas);
//!
//! // Marked idempotent: hedged after 50 ms, answered 20 ms later by another replica.
//! let req = http::Request::get("/users/7").extension(Idempotent).body(()).unwrap();
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.clone().oneshot(req).await.unwrap(), "/users/7 from replica 1");
//! assert_eq!(start.elapsed(), Duration::from_millis(70));
//!
//! // Not marked: never hedged.
//! let req = http::Request::post("/payments").body(()).unwrap();
//! assert_eq!(svc.oneshot(req).await.unwrap(), "/payments from replica 2");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```

mod budget;
#[cfg(feature = "serde")]
mod config;
mod delay;
mod future;
mod histogram;
mod layer;
mod policy;
mod service;

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::{HedgeConfig, HedgeDelayConfig, PercentileDelayConfig};
pub use delay::{HedgeDelay, MAX_HEDGE_DELAY};
pub use future::ResponseFuture;
pub use layer::{HedgeHandle, HedgeLayer, HedgeLayerBuilder, MAX_HEDGES};
pub use policy::{
    AttemptVerdict, ByOutcome, HedgeAny, HedgePolicy, Idempotent, IdempotentOnly, MarkedIdempotent,
    NextHedge,
};
pub use service::Hedge;

//! Circuit breakers: stop calling a dependency that keeps failing, give it a break, then let a
//! few probes find out whether it has recovered.
//!
//! [`CircuitBreakerLayer`] keeps, for each breaker, a sliding window of recent outcomes: the last
//! N calls ([`SlidingWindow::Count`]) or the calls of the last T ([`SlidingWindow::Time`]). What
//! counts as a failure is the [`Classifier`](crate::classify::Classifier)'s call (any
//! [`Outcome`](crate::classify::Outcome) but `Success`), so a `503` inside `Ok` can count; the
//! default, [`RetryOnError`](crate::classify::RetryOnError), counts every error.
//!
//! - **Closed**: calls pass. The breaker opens when, with at least `minimum_calls` calls in the
//!   window, the failure rate reaches `failure_rate`, or the slow-call rate (calls lasting at
//!   least `slow_call_duration`) reaches `slow_call_rate`; or, if configured, after
//!   `consecutive_failures` failures in a row.
//! - **Open**: calls are refused for the break duration ([`BreakDuration`]: constant, or growing
//!   exponentially with each consecutive opening, with jitter, up to a cap). In
//!   [`Mode::FailFast`] a call fails at once with [`CircuitOpen`], which says how long until a probe
//!   is allowed; in [`Mode::Readiness`] `poll_ready` stays pending and wakes when one is, so load
//!   balancers route around the endpoint.
//!   On a tokio runtime the breaker that opens spawns a timer for the end of the break, so that
//!   most refusals read no clock ([`BreakTimer`]).
//! - **Half-open**: `half_open_probes` calls are admitted (all at once, or ramped up 1, 2, 4...
//!   with [`progressive_half_open`](CircuitBreakerLayerBuilder::progressive_half_open)); others
//!   are refused. As soon as the probes' failure or slow-call rate (out of the configured number)
//!   reaches its threshold the breaker re-opens, for a longer break if the break grows; when every
//!   probe has finished below both, it closes with an empty window.
//! - A [`BreakerHandle`] reads each breaker's state and counts and switches the layer into
//!   resilience4j's extra states: **disabled**, **forced open** and **metrics only**.
//! - With [`key_by`](CircuitBreakerLayerBuilder::key_by), each key (host, route...) has its own
//!   breaker, at most [`max_keys`](CircuitBreakerLayerBuilder::max_keys) of them, in the key
//!   table every keyed layer uses ([`keyed`](crate::keyed): closed breakers with no call in
//!   flight are swept out when it is full).
//!
//! Every transition is a `tracing` event (target `steadfast::breaker`; fields `from`, `to`,
//! `reason`, `failure_rate`, `slow_rate`, plus `instance` and `key`), a count on the
//! `steadfast.breaker.transitions` counter (attributes `from`, `to`), and a call to the optional
//! [`on_transition`](CircuitBreakerLayerBuilder::on_transition) callback. Refused calls count on
//! `steadfast.breaker.rejected` (attribute `state`), and the observable gauge
//! `steadfast.breaker.state` reports how many breakers are in each state (attribute `state`).
//! All carry `steadfast.name` when the [`Telemetry`](crate::telemetry::Telemetry) names the layer.
//!
//! # Defaults
//!
//! resilience4j's, which suit a dependency called often: failure rate 50 % over a count window of
//! the last 100 calls, judged after at least 100 calls; 10 half-open probes; a constant 60 s break.
//! One departure: slow-call detection is **off** until a threshold is set. resilience4j's default
//! (100 % of calls slower than 60 s) almost never fires, and measuring every call's duration costs
//! two clock reads per call, the largest cost on this path. (Polly's defaults, 10 % over 30 s
//! with a 5 s break, trip on far less evidence: set them explicitly if that is what you want.)
//!
//! # Cost
//!
//! The closed path takes no lock and allocates nothing: one atomic load of the mode and one of
//! the state word on admission; on completion, the classifier, a `fetch_add` and a `swap` on the
//! count window's ring (plus a `fetch_add` when a failure replaces a success or back), and a few
//! loads to judge the window. The clock is read only when needed: once at completion for a time
//! window, at the start and at completion with slow-call detection, never otherwise. Transitions
//! are compare-and-swaps on one word (exactly one caller makes each); half-open permits come from
//! an atomic counter. Per-key breakers add a read lock on the key map and a shared recency counter
//! per call (a write lock and an allocation only for a new key); readiness mode allocates its
//! timer once per service.
//!
//! # Changing settings at run time
//!
//! The thresholds (failure rate, slow-call rate and threshold, minimum calls, consecutive
//! failures), the half-open probes and the break duration can be changed while the layer
//! serves, through its [`BreakerHandle`]: each setter checks the value by the builder's rule and
//! returns the same [`ConfigError`](crate::ConfigError), and the change reaches every breaker of
//! the layer (every key) from its next decision. Nothing is reset: windows, open and half-open
//! states and their break ends are kept; calls in flight finish as admitted. Each setting is
//! one atomic read without a lock (the break duration, read only when a breaker trips, one
//! `ArcSwap` load). The window's kind and size, the mode and the key table are fixed when the
//! layer is built.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
//!
//! let layer = CircuitBreakerLayer::builder().failure_rate(0.5).build()?;
//! let handle = layer.handle();
//! // Later, from a configuration reload:
//! handle.set_failure_rate(0.25)?;
//! handle.set_break_duration(BreakDuration::constant(Duration::from_secs(10)))?;
//! assert_eq!(handle.set_minimum_calls(0).unwrap_err().path(), "minimum_calls");
//! assert_eq!(handle.settings().failure_rate, 0.25);
//! # Ok::<(), steadfast_layers::ConfigError>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::breaker::{BreakDuration, BreakerState, CircuitBreakerLayer, CircuitOpen};
//! use steadfast_layers::classify::Outcome;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A peer that answers "503" for now.
//! let peer = service_fn(|_req: &'static str| async { Ok::<u16, steadfast_layers::BoxError>(503) });
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .count_window(10)
//!     .minimum_calls(10)
//!     .failure_rate(0.5)
//!     .break_duration(BreakDuration::constant(Duration::from_secs(30)))
//!     .classifier(|r: &Result<u16, steadfast_layers::BoxError>| match r {
//!         Ok(s) if *s >= 500 => Outcome::retryable("server_error"),
//!         Ok(_) => Outcome::Success,
//!         Err(_) => Outcome::retryable("error"),
//!     })
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! let svc = layer.layer(peer);
//!
//! for _ in 0..10 {
//!     assert_eq!(svc.clone().oneshot("GET /").await.unwrap(), 503);
//! }
//! assert_eq!(handle.state(), BreakerState::Open);
//!
//! // Refused at once, and told when to come back.
//! tokio::time::advance(Duration::from_secs(10)).await;
//! let err = svc.clone().oneshot("GET /").await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.remaining(), Some(Duration::from_secs(20)));
//! # }
//! ```

#[cfg(feature = "serde")]
mod config;
mod core;
mod error;
mod future;
mod handle;
mod keyed;
mod layer;
mod policy;
mod service;
#[cfg(test)]
mod tests;
mod window;

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::{BreakDurationConfig, CircuitBreakerConfig, TimeWindowConfig};
pub use error::CircuitOpen;
pub use future::ResponseFuture;
pub use handle::{
    BreakerHandle, BreakerMetrics, BreakerSettings, BreakerState, Transition, TransitionReason,
};
pub use layer::{CircuitBreakerLayer, CircuitBreakerLayerBuilder};
pub use policy::{
    BreakDuration, BreakTimer, Mode, SlidingWindow, MAX_BREAK, MAX_BUCKETS, MAX_COUNT_WINDOW,
    MAX_PROBES,
};
pub use service::CircuitBreaker;

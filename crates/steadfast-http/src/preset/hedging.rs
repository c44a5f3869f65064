use std::time::Duration;

use http::StatusCode;
use steadfast_layers::deadline::{DeadlineLayer, DeadlineService, HttpExtensions};
use steadfast_layers::hedge::{Hedge, HedgeDelay, HedgeLayer, IdempotentOnly};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use tower_layer::Layer;

use super::{MaybeKeyed, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT};
use crate::body::{HttpReplay, ReplayBodyLayer, WithReplayBody, DEFAULT_REPLAY_LIMIT};
use crate::classify::HttpClassifier;
use crate::error::ConfigError;
use crate::idempotency::IdempotencyKeyLayer;
use crate::propagate::{DeadlinePropagation, DeadlinePropagationLayer, DEFAULT_MARGIN};

/// The hedge delay of [`HedgingClientLayer`] by default: the 95th percentile of recent attempt
/// latencies ("The Tail at Scale"), learned once 100 attempts have completed; no hedge before.
pub const DEFAULT_HEDGE_DELAY: HedgeDelay = HedgeDelay::percentile(95.0);
/// The hedge budget of [`HedgingClientLayer`] by default: hedges are at most 5 % of requests
/// (plus a burst of 10).
pub const DEFAULT_HEDGE_BUDGET_PERCENT: f64 = 5.0;

/// The service [`HedgingClientLayer`] builds around `S`, outermost first: the idempotency key
/// slot, replay body, total deadline, hedge, per-attempt timeout, deadline propagation, then `S`.
pub type HedgingClient<S, Cl = HttpClassifier> = <HedgingClientLayer<Cl> as Layer<S>>::Service;

/// The hedging client stack as one layer: for calls whose tail latency matters more than a few
/// percent of extra load. See the [module docs](super#the-hedging-client) for the order and why.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::preset::HedgingClientLayer;
/// use steadfast_layers::hedge::HedgeDelay;
/// let layer = HedgingClientLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .delay(HedgeDelay::percentile(99.0).warmup_delay(Duration::from_millis(50)))
///     .max_hedges(2)
///     .build()?;
/// assert_eq!(layer.max_hedges(), 2);
/// assert_eq!(layer.current_delay(), Some(Duration::from_millis(50))); // warming up
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HedgingClientLayer<Cl = HttpClassifier> {
    keys: Option<IdempotencyKeyLayer>,
    replay_body: ReplayBodyLayer,
    deadline: DeadlineLayer<HttpExtensions>,
    hedge: HedgeLayer<IdempotentOnly, Cl, HttpReplay>,
    attempt: AttemptTimeoutLayer,
    propagation: DeadlinePropagationLayer,
    timeout: Duration,
}

impl HedgingClientLayer {
    /// A builder with the defaults: an `Idempotency-Key` on every `POST` and `PATCH`, which
    /// also marks them [`Idempotent`](steadfast_layers::hedge::Idempotent); 10 s total deadline;
    /// one hedge after the learned 95th percentile of attempt latencies
    /// ([`DEFAULT_HEDGE_DELAY`]: none until 100 attempts are known), hedges capped at 5 % of
    /// requests (burst 10), only requests marked idempotent ([`IdempotentOnly`]); 3 s per
    /// attempt; a 10 ms propagation margin; 64 KiB replay buffer; an [`HttpClassifier`] that also
    /// counts `409` as a failure (see [`classifier`](HedgingClientBuilder::classifier)).
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// let layer = HedgingClientLayer::builder().build()?;
    /// assert_eq!(layer.max_hedges(), 1);
    /// assert_eq!(layer.current_delay(), None); // no latency samples yet
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> HedgingClientBuilder {
        HedgingClientBuilder {
            keys: Some(IdempotencyKeyLayer::new()),
            timeout: DEFAULT_TIMEOUT,
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
            margin: DEFAULT_MARGIN,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            delay: DEFAULT_HEDGE_DELAY,
            max_hedges: 1,
            budget_percent: DEFAULT_HEDGE_BUDGET_PERCENT,
            budget_burst: None,
            classifier: conflict_is_failure(),
            telemetry: Telemetry::default(),
        }
    }
}

/// [`HttpClassifier`] with `409` added to the failures (see [`HedgingClientBuilder::classifier`]).
fn conflict_is_failure() -> HttpClassifier {
    HttpClassifier::builder()
        .retry_on(StatusCode::CONFLICT)
        .build()
        .expect("the default classifier configuration is valid")
}

impl<Cl> HedgingClientLayer<Cl> {
    /// The total deadline of a call, hedges included.
    ///
    /// ```
    /// # use steadfast_http::preset::{HedgingClientLayer, DEFAULT_TIMEOUT};
    /// assert_eq!(HedgingClientLayer::builder().build()?.timeout(), DEFAULT_TIMEOUT);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The most hedges sent per call.
    pub fn max_hedges(&self) -> u32 {
        self.hedge.max_hedges()
    }

    /// The delay a call starting now would hedge after (`None` while the percentile is still
    /// being learned and no warm-up delay is set: no hedge).
    pub fn current_delay(&self) -> Option<Duration> {
        self.hedge.current_delay()
    }

    /// Whether the stack gives requests an `Idempotency-Key` (outermost, once per call).
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// assert!(HedgingClientLayer::builder().build()?.adds_idempotency_keys());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn adds_idempotency_keys(&self) -> bool {
        self.keys.is_some()
    }
}

impl<S, Cl: Clone> Layer<S> for HedgingClientLayer<Cl> {
    type Service = MaybeKeyed<
        WithReplayBody<
            DeadlineService<
                Hedge<AttemptTimeout<DeadlinePropagation<S>>, IdempotentOnly, Cl, HttpReplay>,
                HttpExtensions,
            >,
        >,
    >;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = self.propagation.layer(inner);
        let svc = self.attempt.layer(svc);
        let svc = self.hedge.layer(svc);
        let svc = self.deadline.layer(svc);
        let svc = self.replay_body.layer(svc);
        MaybeKeyed::new(self.keys.as_ref(), svc)
    }
}

/// Builds a [`HedgingClientLayer`], validating every layer's configuration.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::preset::HedgingClientLayer;
/// use steadfast_layers::hedge::HedgeDelay;
///
/// let layer = HedgingClientLayer::builder()
///     .timeout(Duration::from_secs(1))
///     .attempt_timeout(Duration::from_millis(400))
///     .delay(HedgeDelay::fixed(Duration::from_millis(30)))
///     .budget_percent(2.0)
///     .budget_burst(5)
///     .build()?;
/// # let _ = layer;
/// assert_eq!(HedgingClientLayer::builder().budget_percent(0.0).build().unwrap_err().field(), "budget_percent");
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct HedgingClientBuilder<Cl = HttpClassifier> {
    keys: Option<IdempotencyKeyLayer>,
    timeout: Duration,
    attempt_timeout: Option<Duration>,
    margin: Duration,
    replay_limit: usize,
    delay: HedgeDelay,
    max_hedges: u32,
    budget_percent: f64,
    budget_burst: Option<u32>,
    classifier: Cl,
    telemetry: Telemetry,
}

impl<Cl> HedgingClientBuilder<Cl> {
    /// Whether the stack gives each `POST` and `PATCH` without one an `Idempotency-Key` (a UUID
    /// v7) and marks it hedgeable, outermost, so that the original and every hedge carry the
    /// same key and the server executes the call once (default on). Off, only requests the
    /// caller marked [`Idempotent`](steadfast_layers::hedge::Idempotent) are hedged.
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// let l = HedgingClientLayer::builder().idempotency_keys(false).build()?;
    /// assert!(!l.adds_idempotency_keys());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn idempotency_keys(mut self, yes: bool) -> Self {
        self.keys = match (yes, self.keys) {
            (true, Some(keys)) => Some(keys),
            (true, None) => Some(IdempotencyKeyLayer::new()),
            (false, _) => None,
        };
        self
    }

    /// The key layer to use (other methods, or keys without the hedge mark); turns keys on.
    pub fn idempotency_key_layer(mut self, keys: IdempotencyKeyLayer) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The total deadline of a call, every hedge included (default 10 s); shrunk to any
    /// deadline the caller already has, never extended.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The timeout of each copy, original and hedges alike (default 3 s), also the cap on the
    /// propagated deadline.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// No per-attempt timeout: each copy may use the whole remaining deadline.
    pub fn no_attempt_timeout(mut self) -> Self {
        self.attempt_timeout = None;
        self
    }

    /// The deadline propagation margin (default 10 ms).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The replay buffer per request (default 64 KiB); a larger body is sent once, never hedged.
    pub fn replay_limit(mut self, limit: usize) -> Self {
        self.replay_limit = limit;
        self
    }

    /// When to hedge (default [`DEFAULT_HEDGE_DELAY`], the learned 95th percentile).
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// Hedges per call at most, in `[1, 10]` (default 1).
    pub fn max_hedges(mut self, n: u32) -> Self {
        self.max_hedges = n;
        self
    }

    /// Caps hedges at `percent` % of requests, in `(0, 1000]` (default 5).
    pub fn budget_percent(mut self, percent: f64) -> Self {
        self.budget_percent = percent;
        self
    }

    /// Hedges the budget may bank during quiet periods, at least 1 (default 10).
    pub fn budget_burst(mut self, hedges: u32) -> Self {
        self.budget_burst = Some(hedges);
        self
    }

    /// The classifier: which answers count as successes (the first success wins; a failure
    /// waits for the copies still in flight). The default is [`HttpClassifier`] with `409` added
    /// to its retryable statuses: a hedge that reaches an
    /// [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer) while the original is still
    /// executing there is answered `409` at once, and must not win over the original's real
    /// answer. A replacement should do the same.
    ///
    /// ```
    /// # use steadfast_http::{classify::HttpClassifier, preset::HedgingClientLayer};
    /// let c = HttpClassifier::builder().retry_on(http::StatusCode::CONFLICT).retry_errors(false).build()?;
    /// let l = HedgingClientLayer::builder().classifier(c).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> HedgingClientBuilder<C2> {
        HedgingClientBuilder {
            keys: self.keys,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            margin: self.margin,
            replay_limit: self.replay_limit,
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget_percent: self.budget_percent,
            budget_burst: self.budget_burst,
            classifier,
            telemetry: self.telemetry,
        }
    }

    /// Telemetry for every layer of the stack (the same instance name on all).
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Validates every layer and builds the stack.
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// assert_eq!(HedgingClientLayer::builder().max_hedges(0).build().unwrap_err().field(), "max_hedges");
    /// ```
    pub fn build(self) -> Result<HedgingClientLayer<Cl>, ConfigError> {
        let deadline = DeadlineLayer::builder()
            .timeout(self.timeout)
            .carrier(HttpExtensions)
            .telemetry(self.telemetry.clone())
            .build()?;
        let mut hedge = HedgeLayer::builder()
            .delay(self.delay)
            .max_hedges(self.max_hedges)
            .budget_percent(self.budget_percent)
            .telemetry(self.telemetry.clone());
        if let Some(burst) = self.budget_burst {
            hedge = hedge.budget_burst(burst);
        }
        let hedge = hedge
            .classifier(self.classifier)
            .replay(HttpReplay::new())
            .build()?;
        let attempt = AttemptTimeoutLayer::with_telemetry(self.attempt_timeout, &self.telemetry)?;
        let mut propagation = DeadlinePropagationLayer::builder()
            .margin(self.margin)
            .telemetry(self.telemetry.clone());
        if let Some(t) = self.attempt_timeout {
            propagation = propagation.max_timeout(t);
        }
        Ok(HedgingClientLayer {
            keys: self.keys,
            replay_body: ReplayBodyLayer::with_limit(self.replay_limit)?,
            deadline,
            hedge,
            attempt,
            propagation: propagation.build()?,
            timeout: self.timeout,
        })
    }
}

/// The hedging client stack with its defaults around `inner` (a hyper-util client, any
/// `Service<http::Request<_>>` that can be cloned): see [`HedgingClientLayer::builder`] to
/// adjust it. Nothing is hedged until the 95th percentile has been learned from 100 calls.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceExt};
/// use steadfast_http::preset::hedging_client;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
/// let peer = service_fn(|req: http::Request<_>| async move {
///     // The key layer gave the POST its Idempotency-Key.
///     assert!(req.headers().contains_key("idempotency-key"));
///     Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(b"created"))))
/// });
/// let req = http::Request::post("/orders").body(Full::new(Bytes::from_static(b"{}")))?;
/// let res = hedging_client(peer)?.oneshot(req).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(()) }
/// ```
pub fn hedging_client<S>(inner: S) -> Result<HedgingClient<S>, ConfigError> {
    Ok(HedgingClientLayer::builder().build()?.layer(inner))
}

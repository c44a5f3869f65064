use std::time::Duration;

use http::StatusCode;
use steadfast_layers::deadline::{DeadlineLayer, HttpExtensions};
use steadfast_layers::hedge::{HedgeDelay, HedgeLayer, HedgeLayerBuilder};
use steadfast_layers::retry::{RetryLayer, RetryLayerBuilder};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tower_layer::Identity;

use super::layer::{
    ClientLayer, HedgingClientLayer, StandardClientLayer, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT,
};
use super::transport::Plain;
use crate::body::{HttpReplay, ReplayBodyLayer, DEFAULT_REPLAY_LIMIT};
use crate::classify::{GrpcClassifier, HttpClassifier};
use crate::error::ConfigError;
use crate::idempotency::{IdempotencyKeyLayer, IdempotentOrKeyed};
use crate::propagate::{DeadlinePropagationLayer, DEFAULT_MARGIN};

/// The hedge delay of [`HedgingClientLayer`] by default: the 95th percentile of recent attempt
/// latencies ("The Tail at Scale"), learned once 100 attempts have completed; no hedge before.
pub const DEFAULT_HEDGE_DELAY: HedgeDelay = HedgeDelay::percentile(95.0);
/// The hedge budget of [`HedgingClientLayer`] by default, as a fraction like every budget: hedges
/// are at most 5 % of requests (plus a burst of 10).
pub const DEFAULT_HEDGE_BUDGET_RATIO: f64 = 0.05;

/// Builds either preset ([`StandardClientBuilder`], [`HedgingClientBuilder`]): the settings
/// they share live here once (keys, deadline, attempt timeout, propagation margin, replay
/// buffer, breaker slot, telemetry); the policy in the middle is configured the same way in
/// both, through a closure on its own builder ([`retry`](StandardClientBuilder::retry),
/// [`hedge`](HedgingClientBuilder::hedge)). Every layer is validated by
/// [`build`](StandardClientBuilder::build).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use steadfast_http::preset::StandardClientLayer;
/// use steadfast_layers::retry::{Backoff, Jitter, TokenBucket};
///
/// let throttle = Arc::new(TokenBucket::builder().build()?);
/// let layer = StandardClientLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .attempt_timeout(Duration::from_millis(600))
///     .margin(Duration::from_millis(20))
///     .retry(|r| r
///         .max_attempts(3)
///         .budget(throttle)
///         .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100)).jitter(Jitter::Equal)))
///     .grpc()
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ClientBuilder<M, Br = Identity, Tr = Plain> {
    shared: Shared,
    breaker: Br,
    transport: Tr,
    mode: M,
}

/// The settings both presets share.
#[derive(Debug)]
struct Shared {
    keys: Option<IdempotencyKeyLayer>,
    timeout: Duration,
    attempt_timeout: Option<Duration>,
    margin: Duration,
    replay_limit: usize,
    telemetry: Telemetry,
}

/// The standard client's policy settings: a retry layer (see [`StandardClientBuilder`]).
#[derive(Debug)]
pub struct Retrying<Cl> {
    retry: RetryLayerBuilder,
    classifier: Cl,
    replay: HttpReplay,
}

/// The hedging client's policy settings: a hedge layer (see [`HedgingClientBuilder`]).
#[derive(Debug)]
pub struct Hedging<Cl> {
    hedge: HedgeLayerBuilder,
    classifier: Cl,
}

/// Builds a [`StandardClientLayer`].
pub type StandardClientBuilder<Cl = HttpClassifier, Br = Identity, Tr = Plain> =
    ClientBuilder<Retrying<Cl>, Br, Tr>;

/// Builds a [`HedgingClientLayer`].
pub type HedgingClientBuilder<Cl = HttpClassifier, Br = Identity, Tr = Plain> =
    ClientBuilder<Hedging<Cl>, Br, Tr>;

impl<M> ClientBuilder<M> {
    fn with_mode(mode: M) -> Self {
        ClientBuilder {
            shared: Shared {
                keys: Some(IdempotencyKeyLayer::new()),
                timeout: DEFAULT_TIMEOUT,
                attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
                margin: DEFAULT_MARGIN,
                replay_limit: DEFAULT_REPLAY_LIMIT,
                telemetry: Telemetry::default(),
            },
            breaker: Identity::new(),
            transport: Plain,
            mode,
        }
    }
}

impl StandardClientLayer {
    /// A builder with the defaults: an `Idempotency-Key` on every `POST` and `PATCH`
    /// ([`IdempotencyKeyLayer::new`]); 10 s total deadline; 3 attempts, exponential backoff 25 ms
    /// to 250 ms with full jitter, a Finagle retry budget (20 % + 10/s), only for requests that
    /// may be sent twice ([`HttpReplay::idempotent_only`]: an idempotent method or a valid key);
    /// 3 s per attempt; no breaker; a 10 ms propagation margin; 64 KiB replay buffer;
    /// [`HttpClassifier`].
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let layer = StandardClientLayer::builder().build()?;
    /// assert_eq!(layer.max_attempts(), 3);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> StandardClientBuilder {
        ClientBuilder::with_mode(Retrying {
            retry: RetryLayer::builder(),
            classifier: HttpClassifier::new(),
            replay: HttpReplay::idempotent_only(),
        })
    }
}

impl HedgingClientLayer {
    /// A builder with the defaults: an `Idempotency-Key` on every `POST` and `PATCH`; 10 s total
    /// deadline; one hedge after the learned 95th percentile of attempt latencies
    /// ([`DEFAULT_HEDGE_DELAY`]: none until 100 attempts are known), hedges capped at 5 % of
    /// requests (burst 10), only requests that may be sent twice
    /// ([`IdempotentOrKeyed`]: an idempotent method or a valid key, the same rule as the
    /// standard client's retries); 3 s per attempt; no breaker; a 10 ms propagation margin;
    /// 64 KiB replay buffer; an [`HttpClassifier`] that also counts `409` as a failure (see
    /// [`classifier`](HedgingClientBuilder::classifier)).
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// let layer = HedgingClientLayer::builder().build()?;
    /// assert_eq!(layer.max_hedges(), 1);
    /// assert_eq!(layer.current_delay(), None); // no latency samples yet
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> HedgingClientBuilder {
        ClientBuilder::with_mode(Hedging {
            hedge: HedgeLayer::builder()
                .delay(DEFAULT_HEDGE_DELAY)
                .budget_ratio(DEFAULT_HEDGE_BUDGET_RATIO),
            classifier: conflict_is_failure(),
        })
    }
}

/// [`HttpClassifier`] with `409` added to the failures (see [`HedgingClientBuilder::classifier`]).
fn conflict_is_failure() -> HttpClassifier {
    HttpClassifier::new().with_retryable(StatusCode::CONFLICT)
}

impl<M, Br, Tr> ClientBuilder<M, Br, Tr> {
    /// The total deadline of a call, every attempt, hedge and backoff included (default 10 s);
    /// shrunk to any deadline the caller already has, never extended.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::StandardClientLayer;
    /// assert!(StandardClientLayer::builder().timeout(Duration::ZERO).build().is_err());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.shared.timeout = timeout;
        self
    }

    /// The timeout of each attempt (default 3 s), also the cap on the propagated deadline.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().attempt_timeout(Duration::from_millis(250)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.shared.attempt_timeout = Some(timeout);
        self
    }

    /// No per-attempt timeout: each attempt may use the whole remaining deadline.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().no_attempt_timeout().build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn no_attempt_timeout(mut self) -> Self {
        self.shared.attempt_timeout = None;
        self
    }

    /// The deadline propagation margin (default 10 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().margin(Duration::from_millis(100)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn margin(mut self, margin: Duration) -> Self {
        self.shared.margin = margin;
        self
    }

    /// The replay buffer per request (default 64 KiB); larger bodies are sent once.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().replay_limit(1 << 20).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn replay_limit(mut self, limit: usize) -> Self {
        self.shared.replay_limit = limit;
        self
    }

    /// Whether the stack gives each `POST` and `PATCH` without one an `Idempotency-Key` (a UUID
    /// v7), outermost, so that every retry and hedge of the call carries the same key and a
    /// server that honours keys (such as
    /// [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer)) executes it once. **On by
    /// default**; [`grpc`](StandardClientBuilder::grpc) turns it off. Off, a key the caller set
    /// itself still makes the request eligible.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().idempotency_keys(false).build()?;
    /// assert!(!l.adds_idempotency_keys());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn idempotency_keys(mut self, yes: bool) -> Self {
        self.shared.keys = match (yes, self.shared.keys) {
            (true, Some(keys)) => Some(keys),
            (true, None) => Some(IdempotencyKeyLayer::new()),
            (false, _) => None,
        };
        self
    }

    /// The key layer to use (for other methods than `POST` and `PATCH`, say); turns keys on.
    ///
    /// ```
    /// # use steadfast_http::{idempotency::IdempotencyKeyLayer, preset::StandardClientLayer};
    /// use http::Method;
    /// let keys = IdempotencyKeyLayer::builder().methods([Method::POST, Method::PATCH, Method::DELETE]).build()?;
    /// let l = StandardClientLayer::builder().idempotency_key_layer(keys).build()?;
    /// assert!(l.adds_idempotency_keys());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn idempotency_key_layer(mut self, keys: IdempotencyKeyLayer) -> Self {
        self.shared.keys = Some(keys);
        self
    }

    /// Telemetry for every layer of the stack (the same instance name and meter on all).
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let l = StandardClientLayer::builder().telemetry(Telemetry::new().name("payments")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.shared.telemetry = telemetry;
        self
    }

    /// **The breaker slot**: a layer placed between the policy (retry or hedge) and the
    /// per-attempt timeout (default: none, [`Identity`]). There a circuit breaker sees every
    /// attempt, counts attempt timeouts as failures, and fails attempts fast while open. The
    /// retry layer reads its refusal through the one error table
    /// ([`error_outcome`](steadfast_layers::classify::error_outcome)): it waits out the rest of
    /// the break when the deadline allows, and otherwise stops with a
    /// [`GaveUp`](steadfast_layers::retry::GaveUp) that names the circuit.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::StandardClientLayer;
    /// use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let breaker = CircuitBreakerLayer::builder().consecutive_failures(5).build()?;
    /// let l = StandardClientLayer::builder().breaker(breaker).build()?;
    /// # let _ = l;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn breaker<B2>(self, breaker: B2) -> ClientBuilder<M, B2, Tr> {
        ClientBuilder {
            shared: self.shared,
            breaker,
            transport: self.transport,
            mode: self.mode,
        }
    }

    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(super) fn transport<T2>(self, transport: T2) -> ClientBuilder<M, Br, T2> {
        ClientBuilder {
            shared: self.shared,
            breaker: self.breaker,
            transport,
            mode: self.mode,
        }
    }

    /// Builds the skeleton around an already built policy layer: the parts both presets share,
    /// validated once, here.
    fn assemble<P>(
        self,
        policy: P,
        idempotent_only: bool,
    ) -> Result<ClientLayer<P, Br, Tr>, ConfigError> {
        let deadline = DeadlineLayer::builder()
            .timeout(self.shared.timeout)
            .carrier(HttpExtensions)
            .telemetry(self.shared.telemetry.clone())
            .build()?;
        let attempt = AttemptTimeoutLayer::with_telemetry(
            self.shared.attempt_timeout,
            &self.shared.telemetry,
        )?;
        let mut propagation = DeadlinePropagationLayer::builder()
            .margin(self.shared.margin)
            .telemetry(self.shared.telemetry.clone());
        if let Some(t) = self.shared.attempt_timeout {
            propagation = propagation.max_timeout(t);
        }
        Ok(ClientLayer {
            keys: self.shared.keys,
            replay_body: ReplayBodyLayer::with_limit(self.shared.replay_limit)?,
            deadline,
            policy,
            breaker: self.breaker,
            attempt,
            propagation: propagation.build()?,
            transport: self.transport,
            timeout: self.shared.timeout,
            idempotent_only,
        })
    }
}

impl<Cl, Br, Tr> StandardClientBuilder<Cl, Br, Tr> {
    /// Adjusts the retry layer: attempts, backoff, jitter, budget, seed, minimum attempt time.
    /// (Its classifier and replay are the preset's; bound each attempt with
    /// [`attempt_timeout`](ClientBuilder::attempt_timeout).)
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::StandardClientLayer;
    /// # use steadfast_layers::retry::Backoff;
    /// let l = StandardClientLayer::builder()
    ///     .retry(|r| r.max_attempts(5).backoff(Backoff::constant(Duration::from_millis(50))).seed(7))
    ///     .build()?;
    /// assert_eq!(l.max_attempts(), 5);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retry(self, f: impl FnOnce(RetryLayerBuilder) -> RetryLayerBuilder) -> Self {
        self.map_mode(|m| Retrying {
            retry: f(m.retry),
            ..m
        })
    }

    /// Retry only requests that may be sent more than once by the one eligibility rule,
    /// [`may_resend`](crate::idempotency::may_resend): an idempotent method or one well-formed
    /// `Idempotency-Key` (see [`HttpReplay::idempotent_only`]). **On by default**: with the key
    /// layer on, `POST`s and `PATCH`es carry a key and are retried; turn the key layer off and
    /// an unkeyed `POST` is tried once. `false` retries every request whose body can be
    /// replayed, which may execute a non-idempotent request twice.
    /// [`grpc`](StandardClientBuilder::grpc) turns it off (gRPC calls are all `POST`).
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().idempotent_only(false).build()?;
    /// assert!(!l.retries_idempotent_only());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn idempotent_only(self, yes: bool) -> Self {
        self.map_mode(|m| Retrying {
            replay: if yes {
                HttpReplay::idempotent_only()
            } else {
                HttpReplay::new()
            },
            ..m
        })
    }

    /// The classifier (default [`HttpClassifier`]); see also [`grpc`](StandardClientBuilder::grpc).
    ///
    /// ```
    /// # use steadfast_http::{classify::HttpClassifier, preset::StandardClientLayer};
    /// let c = HttpClassifier::builder().retry_errors(false).build()?;
    /// let l = StandardClientLayer::builder().classifier(c).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> StandardClientBuilder<C2, Br, Tr> {
        self.map_mode(|m| Retrying {
            retry: m.retry,
            classifier,
            replay: m.replay,
        })
    }

    /// Uses the default [`GrpcClassifier`], for any gRPC transport. Every gRPC call is a `POST`
    /// and gRPC servers do not read `Idempotency-Key`, so this also turns off the key layer and
    /// [`idempotent_only`](StandardClientBuilder::idempotent_only): which calls may be retried
    /// is the classifier's business (gRPC A6). Turn either back on after this call if your
    /// servers honour keys. For a tonic `Channel`, use `tonic()` (feature `tonic`), which also
    /// meets tonic's body and error types.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().grpc().build()?;
    /// assert!(!l.adds_idempotency_keys() && !l.retries_idempotent_only());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn grpc(self) -> StandardClientBuilder<GrpcClassifier, Br, Tr> {
        self.idempotency_keys(false)
            .idempotent_only(false)
            .classifier(GrpcClassifier::new())
    }

    /// Validates every layer and builds the stack.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let err = StandardClientLayer::builder().retry(|r| r.max_attempts(0)).build().unwrap_err();
    /// assert_eq!(err.path(), "retry.max_attempts");
    /// ```
    pub fn build(self) -> Result<StandardClientLayer<Cl, Br, Tr>, ConfigError> {
        let idempotent_only = self.mode.replay.is_idempotent_only();
        let (builder, m) = self.take_mode();
        let retry = m
            .retry
            .telemetry(builder.shared.telemetry.clone())
            .classifier(m.classifier)
            .replay(m.replay)
            .build()
            .map_err(|e| e.at("retry"))?;
        builder.assemble(retry, idempotent_only)
    }
}

impl<M, Br, Tr> ClientBuilder<M, Br, Tr> {
    /// Splits the policy settings from the shared ones.
    fn take_mode(self) -> (ClientBuilder<(), Br, Tr>, M) {
        let shared = ClientBuilder {
            shared: self.shared,
            breaker: self.breaker,
            transport: self.transport,
            mode: (),
        };
        (shared, self.mode)
    }

    fn map_mode<M2>(self, f: impl FnOnce(M) -> M2) -> ClientBuilder<M2, Br, Tr> {
        ClientBuilder {
            shared: self.shared,
            breaker: self.breaker,
            transport: self.transport,
            mode: f(self.mode),
        }
    }
}

impl<Cl, Br, Tr> HedgingClientBuilder<Cl, Br, Tr> {
    /// Adjusts the hedge layer, as [`retry`](StandardClientBuilder::retry) adjusts the standard
    /// client's retries: delay (fixed or learned percentile), hedges per call, budget, a retry
    /// budget to share. (Its classifier, replay and eligibility policy are the preset's.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// use steadfast_layers::hedge::HedgeDelay;
    /// let l = HedgingClientLayer::builder()
    ///     .hedge(|h| h.delay(HedgeDelay::fixed(Duration::from_millis(30))).budget_ratio(0.02).budget_burst(5))
    ///     .build()?;
    /// assert_eq!(l.current_delay(), Some(Duration::from_millis(30)));
    /// let err = HedgingClientLayer::builder().hedge(|h| h.budget_ratio(0.0)).build().unwrap_err();
    /// assert_eq!(err.path(), "hedge.budget_ratio");
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn hedge(self, f: impl FnOnce(HedgeLayerBuilder) -> HedgeLayerBuilder) -> Self {
        self.map_mode(|m| Hedging {
            hedge: f(m.hedge),
            ..m
        })
    }

    /// The classifier deciding which copy's answer is a failure (default: [`HttpClassifier`]
    /// with `409` counted as a failure, so that a hedge answered "in flight" by an
    /// [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer) waits for the original
    /// instead of winning over it).
    ///
    /// ```
    /// # use steadfast_http::{classify::HttpClassifier, preset::HedgingClientLayer};
    /// let l = HedgingClientLayer::builder().classifier(HttpClassifier::new()).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> HedgingClientBuilder<C2, Br, Tr> {
        self.map_mode(|m| Hedging {
            hedge: m.hedge,
            classifier,
        })
    }

    /// Validates every layer and builds the stack.
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// let err = HedgingClientLayer::builder().hedge(|h| h.max_hedges(0)).build().unwrap_err();
    /// assert_eq!(err.path(), "hedge.max_hedges");
    /// ```
    pub fn build(self) -> Result<HedgingClientLayer<Cl, Br, Tr>, ConfigError> {
        let (builder, m) = self.take_mode();
        let hedge = m
            .hedge
            .telemetry(builder.shared.telemetry.clone())
            .policy(IdempotentOrKeyed::new())
            .classifier(m.classifier)
            .replay(HttpReplay::new())
            .build()
            .map_err(|e| e.at("hedge"))?;
        builder.assemble(hedge, true)
    }
}

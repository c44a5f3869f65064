use std::time::Duration;

use steadfast_layers::deadline::{DeadlineLayer, DeadlineService, HttpExtensions};
use steadfast_layers::retry::{Retry, RetryLayer, RetryLayerBuilder};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use tower_layer::{Identity, Layer};

use super::MaybeKeyed;
use crate::body::{HttpReplay, ReplayBodyLayer, WithReplayBody, DEFAULT_REPLAY_LIMIT};
use crate::classify::{GrpcClassifier, HttpClassifier};
use crate::error::ConfigError;
use crate::idempotency::IdempotencyKeyLayer;
use crate::propagate::{DeadlinePropagation, DeadlinePropagationLayer, DEFAULT_MARGIN};

/// The default total deadline of a call, retries included: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default per-attempt timeout: 3 s (three attempts and their backoffs fit in 10 s).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The service [`StandardClientLayer`] builds around `S`, outermost first: the idempotency key
/// slot, replay body, total deadline, retry, the
/// breaker slot `Br`, the per-attempt timeout, deadline propagation, then `S`.
pub type StandardClient<S, Cl = HttpClassifier, Br = Identity> =
    <StandardClientLayer<Cl, Br> as Layer<S>>::Service;

/// The standard client stack as one layer; see the [module docs](super) for the order and why.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::preset::StandardClientLayer;
/// let layer = StandardClientLayer::builder()
///     .timeout(Duration::from_secs(5))
///     .attempt_timeout(Duration::from_secs(1))
///     .retry(|r| r.max_attempts(4))
///     .build()?;
/// assert_eq!(layer.timeout(), Duration::from_secs(5));
/// // "Safe method or keyed": POSTs and PATCHes get a key, unkeyed unsafe requests are not retried.
/// assert!(layer.adds_idempotency_keys() && layer.retries_idempotent_only());
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct StandardClientLayer<Cl = HttpClassifier, Br = Identity> {
    keys: Option<IdempotencyKeyLayer>,
    replay_body: ReplayBodyLayer,
    deadline: DeadlineLayer<HttpExtensions>,
    retry: RetryLayer<Cl, HttpReplay>,
    breaker: Br,
    attempt: AttemptTimeoutLayer,
    propagation: DeadlinePropagationLayer,
    timeout: Duration,
    idempotent_only: bool,
}

impl StandardClientLayer {
    /// A builder with the defaults: an `Idempotency-Key` on every `POST` and `PATCH`
    /// ([`IdempotencyKeyLayer::new`]); 10 s total deadline; 3 attempts, exponential backoff 25 ms
    /// to 250 ms with full jitter, a Finagle retry budget (20 % + 10/s), only for requests that
    /// are safe to send twice ([`HttpReplay::idempotent_only`]: an idempotent method or a key);
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
        StandardClientBuilder {
            keys: Some(IdempotencyKeyLayer::new()),
            timeout: DEFAULT_TIMEOUT,
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
            margin: DEFAULT_MARGIN,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            replay: HttpReplay::idempotent_only(),
            retry: RetryLayer::builder(),
            classifier: HttpClassifier::new(),
            breaker: Identity::new(),
            telemetry: Telemetry::default(),
        }
    }
}

impl<Cl, Br> StandardClientLayer<Cl, Br> {
    /// The total deadline of a call.
    ///
    /// ```
    /// # use steadfast_http::preset::{StandardClientLayer, DEFAULT_TIMEOUT};
    /// assert_eq!(StandardClientLayer::builder().build()?.timeout(), DEFAULT_TIMEOUT);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The maximum number of attempts per call.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// assert_eq!(StandardClientLayer::builder().retry(|r| r.max_attempts(2)).build()?.max_attempts(), 2);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.retry.max_attempts()
    }

    /// Whether the stack gives requests an `Idempotency-Key` (outermost, once per call).
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// assert!(StandardClientLayer::builder().build()?.adds_idempotency_keys());
    /// assert!(!StandardClientLayer::builder().idempotency_keys(false).build()?.adds_idempotency_keys());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn adds_idempotency_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether only requests that are safe to send twice (an idempotent method or an
    /// `Idempotency-Key`) are retried.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// assert!(StandardClientLayer::builder().build()?.retries_idempotent_only());
    /// assert!(!StandardClientLayer::builder().grpc().build()?.retries_idempotent_only());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retries_idempotent_only(&self) -> bool {
        self.idempotent_only
    }
}

impl<S, Cl, Br> Layer<S> for StandardClientLayer<Cl, Br>
where
    Cl: Clone,
    Br: Layer<AttemptTimeout<DeadlinePropagation<S>>>,
{
    type Service = MaybeKeyed<
        WithReplayBody<
            DeadlineService<Retry<Br::Service, Cl, HttpReplay>, HttpExtensions>,
        >,
    >;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = self.propagation.layer(inner);
        let svc = self.attempt.layer(svc);
        let svc = self.breaker.layer(svc);
        let svc = self.retry.layer(svc);
        let svc = self.deadline.layer(svc);
        let svc = self.replay_body.layer(svc);
        MaybeKeyed::new(self.keys.as_ref(), svc)
    }
}

/// Builds a [`StandardClientLayer`], validating every layer's configuration.
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
pub struct StandardClientBuilder<Cl = HttpClassifier, Br = Identity> {
    keys: Option<IdempotencyKeyLayer>,
    timeout: Duration,
    attempt_timeout: Option<Duration>,
    margin: Duration,
    replay_limit: usize,
    replay: HttpReplay,
    retry: RetryLayerBuilder,
    classifier: Cl,
    breaker: Br,
    telemetry: Telemetry,
}

impl<Cl, Br> StandardClientBuilder<Cl, Br> {
    /// The total deadline of a call, every attempt and backoff included (default 10 s); shrunk
    /// to any deadline the caller already has, never extended.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::preset::StandardClientLayer;
    /// assert!(StandardClientLayer::builder().timeout(Duration::ZERO).build().is_err());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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
        self.attempt_timeout = Some(timeout);
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
        self.attempt_timeout = None;
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
        self.margin = margin;
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
        self.replay_limit = limit;
        self
    }

    /// Retry only requests that are safe to send twice: an idempotent method or an
    /// `Idempotency-Key` (see [`HttpReplay::idempotent_only`]). **On by default**: with the key
    /// layer on, `POST`s and `PATCH`es carry a key and are retried; turn the key layer off and an
    /// unkeyed `POST` is tried once. `false` retries every request whose body can be replayed,
    /// which may execute a non-idempotent request twice. [`grpc`](Self::grpc) turns it off
    /// (gRPC calls are all `POST`).
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().idempotent_only(false).build()?;
    /// assert!(!l.retries_idempotent_only());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn idempotent_only(mut self, yes: bool) -> Self {
        self.replay = if yes {
            HttpReplay::idempotent_only()
        } else {
            HttpReplay::new()
        };
        self
    }

    /// Whether the stack gives each `POST` and `PATCH` without one an `Idempotency-Key` (a UUID
    /// v7), outermost, so that every retry of the call carries the same key and a server that
    /// honours keys (such as [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer))
    /// executes it once. **On by default**; [`grpc`](Self::grpc) turns it off. Off, a key the
    /// caller set itself still makes the request retryable.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().idempotency_keys(false).build()?;
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
        self.keys = Some(keys);
        self
    }

    /// Adjusts the retry layer: attempts, backoff, jitter, budget, seed, minimum attempt time.
    /// (Its classifier and replay are the preset's; set the per-attempt timeout with
    /// [`attempt_timeout`](Self::attempt_timeout), not on the retry builder.)
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
    pub fn retry(mut self, f: impl FnOnce(RetryLayerBuilder) -> RetryLayerBuilder) -> Self {
        self.retry = f(self.retry);
        self
    }

    /// The classifier (default [`HttpClassifier`]); see also [`grpc`](Self::grpc).
    ///
    /// ```
    /// # use steadfast_http::{classify::HttpClassifier, preset::StandardClientLayer};
    /// let c = HttpClassifier::builder().retry_errors(false).build()?;
    /// let l = StandardClientLayer::builder().classifier(c).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> StandardClientBuilder<C2, Br> {
        StandardClientBuilder {
            keys: self.keys,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            margin: self.margin,
            replay_limit: self.replay_limit,
            replay: self.replay,
            retry: self.retry,
            classifier,
            breaker: self.breaker,
            telemetry: self.telemetry,
        }
    }

    /// Uses the default [`GrpcClassifier`], for a tonic channel or any gRPC transport. Every
    /// gRPC call is a `POST` and gRPC servers do not read `Idempotency-Key`, so this also turns
    /// off the key layer and [`idempotent_only`](Self::idempotent_only): which calls may be
    /// retried is the classifier's business (gRPC A6). Turn either back on after this call if
    /// your servers honour keys.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().grpc().build()?;
    /// assert!(!l.adds_idempotency_keys() && !l.retries_idempotent_only());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn grpc(self) -> StandardClientBuilder<GrpcClassifier, Br> {
        self.idempotency_keys(false)
            .idempotent_only(false)
            .classifier(GrpcClassifier::new())
    }

    /// **The breaker slot**: a layer placed between the retry layer and the per-attempt timeout
    /// (default: none, [`Identity`]). There a circuit breaker sees every attempt, counts attempt
    /// timeouts as failures, and fails attempts fast while open, which the retry layer then
    /// classifies like any other error. Any `tower::Layer` fits; steadfast's breaker will.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let l = StandardClientLayer::builder().breaker(tower::layer::util::Identity::new()).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn breaker<B2>(self, breaker: B2) -> StandardClientBuilder<Cl, B2> {
        StandardClientBuilder {
            keys: self.keys,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            margin: self.margin,
            replay_limit: self.replay_limit,
            replay: self.replay,
            retry: self.retry,
            classifier: self.classifier,
            breaker,
            telemetry: self.telemetry,
        }
    }

    /// Telemetry for every layer of the stack (the same instance name on all).
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let l = StandardClientLayer::builder().telemetry(Telemetry::new().name("payments")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.retry = self.retry.telemetry(telemetry.clone());
        self.telemetry = telemetry;
        self
    }

    /// Validates every layer and builds the stack.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// let err = StandardClientLayer::builder().retry(|r| r.max_attempts(0)).build().unwrap_err();
    /// assert_eq!(err.field(), "max_attempts");
    /// ```
    pub fn build(self) -> Result<StandardClientLayer<Cl, Br>, ConfigError> {
        let deadline = DeadlineLayer::builder()
            .timeout(self.timeout)
            .carrier(HttpExtensions)
            .telemetry(self.telemetry.clone())
            .build()?;
        let idempotent_only = self.replay.is_idempotent_only();
        let retry = self
            .retry
            .classifier(self.classifier)
            .replay(self.replay)
            .build()?;
        let attempt = AttemptTimeoutLayer::with_telemetry(self.attempt_timeout, &self.telemetry)?;
        let mut propagation = DeadlinePropagationLayer::builder()
            .margin(self.margin)
            .telemetry(self.telemetry.clone());
        if let Some(t) = self.attempt_timeout {
            propagation = propagation.max_timeout(t);
        }
        Ok(StandardClientLayer {
            keys: self.keys,
            replay_body: ReplayBodyLayer::with_limit(self.replay_limit)?,
            deadline,
            retry,
            breaker: self.breaker,
            attempt,
            propagation: propagation.build()?,
            timeout: self.timeout,
            idempotent_only,
        })
    }
}

/// The standard client stack with its defaults around `inner` (a hyper-util client, a tonic
/// channel, any `Service<http::Request<_>>`): see [`StandardClientLayer::builder`] to adjust it.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceExt};
/// use steadfast_http::preset::standard_client;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
/// let peer = service_fn(|_req: http::Request<_>| async {
///     Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
/// });
/// let res = standard_client(peer)?.oneshot(http::Request::new(Full::new(Bytes::new()))).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(()) }
/// ```
pub fn standard_client<S>(inner: S) -> Result<StandardClient<S>, ConfigError> {
    Ok(StandardClientLayer::builder().build()?.layer(inner))
}

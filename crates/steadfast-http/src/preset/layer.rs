use std::time::Duration;

use steadfast_layers::deadline::{DeadlineLayer, DeadlineService, HttpExtensions};
use steadfast_layers::hedge::HedgeLayer;
use steadfast_layers::retry::RetryLayer;
use steadfast_layers::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use tower_layer::{Identity, Layer};

use super::transport::{Plain, Transport};
use super::MaybeKeyed;
use crate::body::{HttpReplay, ReplayBodyLayer, WithReplayBody};
use crate::classify::HttpClassifier;
use crate::idempotency::{IdempotencyKeyLayer, IdempotentOrKeyed};
use crate::propagate::{DeadlinePropagation, DeadlinePropagationLayer};

/// The default total deadline of a call, retries included: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default per-attempt timeout: 3 s (three attempts and their backoffs fit in 10 s).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// **The one skeleton** of both client presets, outermost first: the idempotency key slot, the
/// replay body, the total deadline, the policy `P` (a [`RetryLayer`] in the
/// [standard client](StandardClientLayer), a [`HedgeLayer`] in the
/// [hedging client](HedgingClientLayer)), the breaker slot `Br`, the per-attempt timeout,
/// deadline propagation, then the transport, met as `Tr` says ([`Plain`], or
/// `Tonic` (feature `tonic`) for a tonic `Channel`).
///
/// Build it with [`StandardClientLayer::builder`] or [`HedgingClientLayer::builder`]; see the
/// [module docs](super) for the order and why.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::preset::{HedgingClientLayer, StandardClientLayer};
/// let standard = StandardClientLayer::builder().timeout(Duration::from_secs(5)).build()?;
/// let hedging = HedgingClientLayer::builder().timeout(Duration::from_secs(5)).build()?;
/// assert_eq!(standard.timeout(), hedging.timeout());
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClientLayer<P, Br = Identity, Tr = Plain> {
    pub(super) keys: Option<IdempotencyKeyLayer>,
    pub(super) replay_body: ReplayBodyLayer,
    pub(super) deadline: DeadlineLayer<HttpExtensions>,
    pub(super) policy: P,
    pub(super) breaker: Br,
    pub(super) attempt: AttemptTimeoutLayer,
    pub(super) propagation: DeadlinePropagationLayer,
    pub(super) transport: Tr,
    pub(super) timeout: Duration,
    pub(super) idempotent_only: bool,
}

/// The standard client stack as one layer: retries (see the [module docs](super)).
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
/// // POSTs and PATCHes get a key; only requests that may be sent twice are retried.
/// assert!(layer.adds_idempotency_keys() && layer.retries_idempotent_only());
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
pub type StandardClientLayer<Cl = HttpClassifier, Br = Identity, Tr = Plain> =
    ClientLayer<RetryLayer<Cl, HttpReplay>, Br, Tr>;

/// The hedging client stack as one layer: for calls whose tail latency matters more than a few
/// percent of extra load. See the [module docs](super#the-hedging-client) for the order and why.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::preset::HedgingClientLayer;
/// use steadfast_layers::hedge::HedgeDelay;
/// let layer = HedgingClientLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .hedge(|h| h.delay(HedgeDelay::percentile(99.0).warmup_delay(Duration::from_millis(50))).max_hedges(2))
///     .build()?;
/// assert_eq!(layer.max_hedges(), 2);
/// assert_eq!(layer.current_delay(), Some(Duration::from_millis(50))); // warming up
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
pub type HedgingClientLayer<Cl = HttpClassifier, Br = Identity, Tr = Plain> =
    ClientLayer<HedgeLayer<IdempotentOrKeyed, Cl, HttpReplay>, Br, Tr>;

/// The service [`StandardClientLayer`] builds around `S`.
pub type StandardClient<S, Cl = HttpClassifier, Br = Identity, Tr = Plain> =
    <StandardClientLayer<Cl, Br, Tr> as Layer<S>>::Service;

/// The service [`HedgingClientLayer`] builds around `S`.
pub type HedgingClient<S, Cl = HttpClassifier, Br = Identity, Tr = Plain> =
    <HedgingClientLayer<Cl, Br, Tr> as Layer<S>>::Service;

impl<P, Br, Tr> ClientLayer<P, Br, Tr> {
    /// The total deadline of a call, every attempt, hedge and backoff included.
    ///
    /// ```
    /// # use steadfast_http::preset::{StandardClientLayer, DEFAULT_TIMEOUT};
    /// assert_eq!(StandardClientLayer::builder().build()?.timeout(), DEFAULT_TIMEOUT);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn timeout(&self) -> Duration {
        self.timeout
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
}

impl<Cl, Br, Tr> StandardClientLayer<Cl, Br, Tr> {
    /// The maximum number of attempts per call.
    ///
    /// ```
    /// # use steadfast_http::preset::StandardClientLayer;
    /// assert_eq!(StandardClientLayer::builder().retry(|r| r.max_attempts(2)).build()?.max_attempts(), 2);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.policy.max_attempts()
    }

    /// Whether only requests that may be sent more than once
    /// ([`may_resend`](crate::idempotency::may_resend)) are retried.
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

impl<Cl, Br, Tr> HedgingClientLayer<Cl, Br, Tr> {
    /// The most hedges sent per call.
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// assert_eq!(HedgingClientLayer::builder().build()?.max_hedges(), 1);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn max_hedges(&self) -> u32 {
        self.policy.max_hedges()
    }

    /// The delay a call starting now would hedge after (`None` while the percentile is still
    /// being learned and no warm-up delay is set: no hedge).
    ///
    /// ```
    /// # use steadfast_http::preset::HedgingClientLayer;
    /// assert_eq!(HedgingClientLayer::builder().build()?.current_delay(), None);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn current_delay(&self) -> Option<Duration> {
        self.policy.current_delay()
    }
}

impl<S, P, Br, Tr> Layer<S> for ClientLayer<P, Br, Tr>
where
    Tr: Transport,
    Br: Layer<AttemptTimeout<DeadlinePropagation<Tr::Inner<S>>>>,
    P: Layer<Br::Service>,
{
    type Service =
        Tr::Outer<MaybeKeyed<WithReplayBody<DeadlineService<P::Service, HttpExtensions>>>>;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = self.transport.inner(inner);
        let svc = self.propagation.layer(svc);
        let svc = self.attempt.layer(svc);
        let svc = self.breaker.layer(svc);
        let svc = self.policy.layer(svc);
        let svc = self.deadline.layer(svc);
        let svc = self.replay_body.layer(svc);
        self.transport
            .outer(MaybeKeyed::new(self.keys.as_ref(), svc))
    }
}

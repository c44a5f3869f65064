use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::Counter;
use tokio::time::Instant;
use tower_layer::Layer;

use super::window::Window;
use super::Throttle;
use crate::classify::RetryOnError;
use crate::error::{check_f64, ConfigError};
use crate::error_type::{Boxed, Typed};
use crate::rng::{default_rng, RandomSource, SeededRng, SharedRng};
use crate::telemetry::{Attrs, Telemetry};

/// Client-side adaptive throttling (Google SRE): rejects calls locally, with probability
/// `max(0, (requests − K × accepts) / (requests + 1))` over a sliding window, when the backend
/// has been refusing them. Shared by every clone.
///
/// Built by [`ThrottleLayer::builder`]. See the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::adaptive_throttle::ThrottleLayer;
/// let layer = ThrottleLayer::builder()
///     .k(1.5)
///     .window(Duration::from_secs(60))
///     .buckets(6)
///     .seed(7)
///     .build()?;
/// assert_eq!(layer.handle().rejection_probability(), 0.0);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct ThrottleLayer<C = RetryOnError, K = Boxed> {
    classifier: C,
    shared: Arc<Shared>,
    _error: PhantomData<fn() -> K>,
}

impl<C: Clone, K> Clone for ThrottleLayer<C, K> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<C: fmt::Debug, K> fmt::Debug for ThrottleLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("classifier", &self.classifier)
            .field("shared", &self.shared)
            .finish()
    }
}

/// What every clone of one layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) window: Window,
    pub(super) k: f64,
    pub(super) rng: SharedRng,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
}

impl Shared {
    /// SRE's formula.
    pub(super) fn probability(&self, requests: u64, accepts: u64) -> f64 {
        let requests = requests as f64;
        ((requests - self.k * accepts as f64) / (requests + 1.0)).max(0.0)
    }
}

/// A view of a throttle's state: the requests and accepts in the window and the rejection
/// probability they give.
///
/// ```
/// use steadfast_layers::adaptive_throttle::ThrottleLayer;
/// let handle = ThrottleLayer::builder().build()?.handle();
/// assert_eq!((handle.requests(), handle.accepts()), (0, 0));
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ThrottleHandle {
    pub(super) shared: Arc<Shared>,
}

impl ThrottleHandle {
    fn sums(&self) -> (u64, u64) {
        let w = &self.shared.window;
        w.sums(w.index(Instant::now()))
    }

    /// Requests counted in the window (locally rejected ones included).
    pub fn requests(&self) -> u64 {
        self.sums().0
    }

    /// Requests the backend accepted in the window.
    pub fn accepts(&self) -> u64 {
        self.sums().1
    }

    /// The probability with which the next call would be rejected locally.
    pub fn rejection_probability(&self) -> f64 {
        let (requests, accepts) = self.sums();
        self.shared.probability(requests, accepts)
    }
}

impl ThrottleLayer {
    /// A builder with SRE's defaults: K = 2, a 2-minute window in 12 buckets of 10 s, accepts
    /// classified by [`RetryOnError`] (a response is an accept, an error is not).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
    /// assert_eq!(ThrottleLayer::builder().build()?.k(), 2.0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> ThrottleLayerBuilder {
        ThrottleLayerBuilder {
            k: 2.0,
            window: Duration::from_secs(120),
            buckets: 12,
            classifier: RetryOnError,
            rng: None,
            telemetry: Telemetry::default(),
        }
    }
}

impl<C, K> ThrottleLayer<C, K> {
    /// The same layer (sharing its window), whose services fail with `E` instead of
    /// [`BoxError`](crate::BoxError): a local rejection is made into `E` with `From<Overloaded>`
    /// and an inner error with `Into<E>` ([`Typed<E>`](crate::error_type::Typed); see
    /// [`error_type`](crate::error_type)). With a type that holds the refusal inline (an enum), a
    /// rejection allocates nothing; with [`BoxError`](crate::BoxError), the default, each one
    /// boxes its [`Overloaded`](super::Overloaded) (one allocation).
    ///
    /// ```
    /// use steadfast_layers::adaptive_throttle::{OverloadReason, Overloaded, ThrottleLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[derive(Debug)]
    /// enum CallError {
    ///     Overloaded(Overloaded),
    ///     Io(std::io::Error),
    /// }
    /// impl From<Overloaded> for CallError {
    ///     fn from(e: Overloaded) -> Self { CallError::Overloaded(e) }
    /// }
    /// impl From<std::io::Error> for CallError {
    ///     fn from(e: std::io::Error) -> Self { CallError::Io(e) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = ThrottleLayer::builder().seed(1).build()?.with_error::<CallError>();
    /// // A backend refusing everything.
    /// let svc = layer.layer(service_fn(|()| async { Err::<(), _>(std::io::Error::other("busy")) }));
    /// let mut local = 0;
    /// for _ in 0..100 {
    ///     match svc.clone().oneshot(()).await {
    ///         Err(CallError::Overloaded(e)) => {
    ///             assert_eq!(e.reason(), OverloadReason::Throttled);
    ///             local += 1;
    ///         }
    ///         Err(CallError::Io(_)) => {}
    ///         Ok(()) => panic!("the backend refuses everything"),
    ///     }
    /// }
    /// assert!(local > 80, "{local}");
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> ThrottleLayer<C, Typed<E>> {
        ThrottleLayer {
            classifier: self.classifier,
            shared: self.shared,
            _error: PhantomData,
        }
    }

    /// The multiplier K.
    pub fn k(&self) -> f64 {
        self.shared.k
    }

    /// A view of the shared state.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C: Clone, K> Layer<S> for ThrottleLayer<C, K> {
    type Service = Throttle<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner,
            classifier: self.classifier.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

/// Builds a [`ThrottleLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
/// assert_eq!(ThrottleLayer::builder().k(0.5).build().unwrap_err().path(), "k");
/// assert_eq!(ThrottleLayer::builder().k(f64::NAN).build().unwrap_err().path(), "k");
/// assert_eq!(ThrottleLayer::builder().window(Duration::ZERO).build().unwrap_err().path(), "window");
/// assert_eq!(ThrottleLayer::builder().buckets(0).build().unwrap_err().path(), "buckets");
/// ```
#[derive(Debug)]
pub struct ThrottleLayerBuilder<C = RetryOnError> {
    k: f64,
    window: Duration,
    buckets: u32,
    classifier: C,
    rng: Option<SharedRng>,
    telemetry: Telemetry,
}

impl<C> ThrottleLayerBuilder<C> {
    /// The multiplier K, in `[1, 1000]` (default 2: the backend must refuse more than half of
    /// the requests before any is rejected locally). Lower is more aggressive.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
    /// assert_eq!(ThrottleLayer::builder().k(1.1).build()?.k(), 1.1);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The window the counts cover, in `(0, 1 day]` (default 2 minutes).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
    /// assert!(ThrottleLayer::builder().window(Duration::from_secs(30)).build().is_ok());
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many buckets the window slides by, in `[1, 1000]`, each at least 1 ms (default 12).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
    /// let err = ThrottleLayer::builder().window(Duration::from_millis(10)).buckets(20).build().unwrap_err();
    /// assert_eq!(err.path(), "buckets");
    /// ```
    pub fn buckets(mut self, n: u32) -> Self {
        self.buckets = n;
        self
    }

    /// Decides which calls the backend accepted (see [`crate::classify`]): a
    /// [`Success`](crate::classify::Outcome::Success), or a
    /// [`Fatal`](crate::classify::Outcome::Fatal) failure (the backend answered; the request was
    /// wrong) is an accept; a [`Retryable`](crate::classify::Outcome::Retryable),
    /// [`Pushback`](crate::classify::Outcome::Pushback) or
    /// [`NotSent`](crate::classify::Outcome::NotSent) failure (overloaded, unavailable, timed
    /// out, never sent) is not.
    ///
    /// ```
    /// # use steadfast_layers::{classify::Outcome, adaptive_throttle::ThrottleLayer, BoxError};
    /// let l = ThrottleLayer::builder()
    ///     .classifier(|r: &Result<u16, BoxError>| match r {
    ///         Ok(429) | Ok(503) | Err(_) => Outcome::retryable("refused"),
    ///         Ok(_) => Outcome::Success,
    ///     })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> ThrottleLayerBuilder<C2> {
        ThrottleLayerBuilder {
            k: self.k,
            window: self.window,
            buckets: self.buckets,
            classifier,
            rng: self.rng,
            telemetry: self.telemetry,
        }
    }

    /// Draws from a [`SeededRng`] seeded with `seed`: the same seed rejects the same calls.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
    /// let l = ThrottleLayer::builder().seed(1).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Arc::new(SeededRng::new(seed)));
        self
    }

    /// Draws from `rng`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{rng::SeededRng, adaptive_throttle::ThrottleLayer};
    /// let l = ThrottleLayer::builder().rng(Arc::new(SeededRng::new(1))).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn rng<G: RandomSource>(mut self, rng: Arc<G>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{telemetry::Telemetry, adaptive_throttle::ThrottleLayer};
    /// let l = ThrottleLayer::builder().telemetry(Telemetry::new().name("ads")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::adaptive_throttle::ThrottleLayer;
    /// assert!(ThrottleLayer::builder().window(Duration::from_secs(2 * 86_400)).build().is_err());
    /// ```
    pub fn build(self) -> Result<ThrottleLayer<C>, ConfigError> {
        check_f64("k", self.k, 1.0, 1000.0, "[1, 1000]")?;
        if self.window.is_zero() {
            return Err(ConfigError::zero("window"));
        }
        if self.window > Duration::from_secs(86_400) {
            return Err(ConfigError::out_of_range(
                "window",
                self.window,
                "(0, 1 day]",
            ));
        }
        if self.buckets == 0 {
            return Err(ConfigError::zero("buckets"));
        }
        if self.buckets > 1_000 {
            return Err(ConfigError::out_of_range(
                "buckets",
                self.buckets,
                "[1, 1000]",
            ));
        }
        if self.window / self.buckets < Duration::from_millis(1) {
            return Err(ConfigError::conflict(
                "buckets",
                "each bucket (window / buckets) must span at least 1 ms",
            ));
        }
        let meter = self.telemetry.resolve_meter();
        let shared = Arc::new(Shared {
            window: Window::new(self.window, self.buckets),
            k: self.k,
            rng: self.rng.unwrap_or_else(default_rng),
            attrs: self.telemetry.base_attributes(),
            calls: meter
                .u64_counter("steadfast.throttle.calls")
                .with_unit("{call}")
                .with_description(
                    "Calls made through client-side adaptive throttling, rejected ones included",
                )
                .build(),
            rejected: meter
                .u64_counter("steadfast.throttle.rejected")
                .with_unit("{call}")
                .with_description("Calls rejected locally by client-side adaptive throttling")
                .build(),
            telemetry: self.telemetry,
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let _probability = meter
            .f64_observable_gauge("steadfast.throttle.probability")
            .with_unit("1")
            .with_description("The probability with which the next call would be rejected locally")
            .with_callback(move |gauge| {
                if let Some(shared) = weak.upgrade() {
                    let w = &shared.window;
                    let (requests, accepts) = w.sums(w.index(Instant::now()));
                    gauge.observe(shared.probability(requests, accepts), shared.attrs.base());
                }
            })
            .build();
        Ok(ThrottleLayer {
            classifier: self.classifier,
            shared,
            _error: PhantomData,
        })
    }
}

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};
use tower_layer::Layer;

use super::{Backoff, CloneReplay, RatioBudget, Retry, RetryBudget};
use crate::classify::RetryOnError;
use crate::error::ConfigError;
use crate::rng::{default_rng, RandomSource, SeededRng, SharedRng};
use crate::telemetry::{Attrs, Telemetry};

/// The most attempts a retry layer accepts (first attempt included).
pub const MAX_ATTEMPTS: u32 = 100;

/// Retries failed calls with backoff and jitter, within a shared budget and the deadline.
///
/// Built by [`RetryLayer::builder`]. It owns no timer: bound each attempt with an
/// [`AttemptTimeoutLayer`](crate::timeout::AttemptTimeoutLayer) below it (one timer per attempt,
/// and the classifier sees the inner service's own error type), and the whole call with a
/// [`DeadlineLayer`](crate::deadline::DeadlineLayer) above it. See the [module docs](super) for
/// the full rules.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::retry::{Backoff, Jitter, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .max_attempts(3)
///     .backoff(Backoff::exponential(Duration::from_millis(25), Duration::from_millis(250)).jitter(Jitter::Full))
///     .seed(42)
///     .build()?;
/// assert_eq!(layer.max_attempts(), 3);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RetryLayer<C = RetryOnError, R = CloneReplay> {
    classifier: C,
    replay: R,
    shared: Arc<Shared>,
}

impl<C: Clone, R: Clone> Clone for RetryLayer<C, R> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// What every clone of one retry layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// Changed through [`RetryHandle`]; read once per call, when it starts.
    pub(super) max_attempts: AtomicU32,
    /// Changed through [`RetryHandle`]; read before each retry.
    pub(super) backoff: ArcSwap<Backoff>,
    pub(super) min_attempt_time: Duration,
    pub(super) budget: Option<Arc<dyn RetryBudget>>,
    pub(super) rng: SharedRng,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) attempts: Counter<u64>,
    pub(super) retries: Counter<u64>,
    pub(super) give_ups: Counter<u64>,
    pub(super) budget_exhausted: Counter<u64>,
    pub(super) duration: Option<Histogram<f64>>,
    /// Kept for its callback (`steadfast.retry.budget.balance`), observed at each export.
    pub(super) _balance: Option<ObservableGauge<f64>>,
}

impl RetryLayer {
    /// A builder with safe defaults: 3 attempts, exponential backoff from 25 ms to 250 ms with
    /// full jitter, a [`RatioBudget`] with Finagle's defaults shared by every clone of the layer,
    /// every error retryable
    /// ([`RetryOnError`]), requests replayed by cloning.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// let layer = RetryLayer::builder().build()?;
    /// assert!(layer.budget().is_some());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder {
            max_attempts: 3,
            backoff: Backoff::default(),
            min_attempt_time: Duration::from_millis(1),
            budget: BudgetChoice::Default,
            rng: None,
            telemetry: Telemetry::default(),
            classifier: RetryOnError,
            replay: CloneReplay,
        }
    }
}

impl<C, R> RetryLayer<C, R> {
    /// The maximum number of attempts, first included.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert_eq!(RetryLayer::builder().max_attempts(5).build()?.max_attempts(), 5);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.shared.max_attempts.load(Ordering::Relaxed)
    }

    /// A handle that changes this layer's attempts and backoff at run time, for every clone of
    /// the layer and every service it made (see the
    /// [module docs](super#changing-settings-at-run-time)).
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// let layer = RetryLayer::builder().max_attempts(3).build()?;
    /// layer.handle().set_max_attempts(5)?;
    /// assert_eq!(layer.max_attempts(), 5);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The budget shared by every clone of this layer, if any.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert!(RetryLayer::builder().no_budget().build()?.budget().is_none());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn budget(&self) -> Option<&Arc<dyn RetryBudget>> {
        self.shared.budget.as_ref()
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
enum BudgetChoice {
    Default,
    None,
    Shared(Arc<dyn RetryBudget>),
}

/// Builds a [`RetryLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::retry::{Backoff, RetryLayer};
/// let err = RetryLayer::builder()
///     .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_millis(10)))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.path(), "backoff.base");
/// ```
#[derive(Debug)]
pub struct RetryLayerBuilder<C = RetryOnError, R = CloneReplay> {
    max_attempts: u32,
    backoff: Backoff,
    min_attempt_time: Duration,
    budget: BudgetChoice,
    rng: Option<SharedRng>,
    telemetry: Telemetry,
    classifier: C,
    replay: R,
}

impl<C, R> RetryLayerBuilder<C, R> {
    /// Attempts per call, first included, in `[1, 100]` (1 disables retries).
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert!(RetryLayer::builder().max_attempts(101).build().is_err());
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The backoff between attempts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::retry::{Backoff, RetryLayer};
    /// let l = RetryLayer::builder().backoff(Backoff::constant(Duration::from_millis(10))).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The least time an attempt needs: no retry starts unless at least this much deadline is
    /// left after its backoff (default 1 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::retry::RetryLayer;
    /// let l = RetryLayer::builder().min_attempt_time(Duration::from_millis(20)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn min_attempt_time(mut self, t: Duration) -> Self {
        self.min_attempt_time = t;
        self
    }

    /// Limits retries by `budget`, shared with everything else that holds the same `Arc` (a
    /// hedge layer takes it with the same method,
    /// [`HedgeLayerBuilder::budget`](crate::hedge::HedgeLayerBuilder::budget)). Budgets count in
    /// fractions of requests (`0.2` = 20 %).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::retry::{RetryLayer, TokenBucket};
    /// let throttle = Arc::new(TokenBucket::builder().build()?);
    /// let l = RetryLayer::builder().budget(throttle).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn budget<B: RetryBudget + 'static>(mut self, budget: Arc<B>) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// Retries without a budget (only max attempts and the deadline limit them). Under overload
    /// this multiplies load by up to `max_attempts`; prefer a budget.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert!(RetryLayer::builder().no_budget().build()?.budget().is_none());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn no_budget(mut self) -> Self {
        self.budget = BudgetChoice::None;
        self
    }

    /// Jitter from a [`SeededRng`] seeded with `seed`: the same seed replays the same delays.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// let l = RetryLayer::builder().seed(7).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Arc::new(SeededRng::new(seed)));
        self
    }

    /// Jitter from `rng`, shared by every clone of the layer.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{retry::RetryLayer, rng::SeededRng};
    /// let l = RetryLayer::builder().rng(Arc::new(SeededRng::new(1))).build()?;
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
    /// # use steadfast_layers::{retry::RetryLayer, telemetry::Telemetry};
    /// let l = RetryLayer::builder().telemetry(Telemetry::new().name("users")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Decides what counts as success, retryable or fatal (see [`crate::classify`]).
    ///
    /// ```
    /// # use steadfast_layers::{classify::Outcome, retry::RetryLayer};
    /// let l = RetryLayer::builder()
    ///     .classifier(|r: &Result<u16, steadfast_layers::BoxError>| match r {
    ///         Ok(503) => Outcome::retryable("unavailable"),
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::retryable("error"),
    ///     })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2, R> {
        RetryLayerBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            min_attempt_time: self.min_attempt_time,
            budget: self.budget,
            rng: self.rng,
            telemetry: self.telemetry,
            classifier,
            replay: self.replay,
        }
    }

    /// How requests are copied for another attempt (see [`Replay`](super::Replay)).
    ///
    /// ```
    /// # use steadfast_layers::retry::{NotReplayable, RetryLayer};
    /// let l = RetryLayer::builder()
    ///     .replay(|r: &mut Vec<u8>| if r.len() < 1024 { Ok(r.clone()) } else { Err(NotReplayable::new("too large")) })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn replay<R2>(self, replay: R2) -> RetryLayerBuilder<C, R2> {
        RetryLayerBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            min_attempt_time: self.min_attempt_time,
            budget: self.budget,
            rng: self.rng,
            telemetry: self.telemetry,
            classifier: self.classifier,
            replay,
        }
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert_eq!(RetryLayer::builder().max_attempts(0).build().unwrap_err().path(), "max_attempts");
    /// ```
    pub fn build(self) -> Result<RetryLayer<C, R>, ConfigError> {
        let max_attempts = check_max_attempts(self.max_attempts)?;
        self.backoff.validate()?;
        if self.min_attempt_time > crate::deadline::MAX_TIMEOUT {
            return Err(ConfigError::out_of_range(
                "min_attempt_time",
                self.min_attempt_time,
                "[0, 99999999 h]",
            ));
        }
        let budget: Option<Arc<dyn RetryBudget>> = match self.budget {
            BudgetChoice::Default => Some(Arc::new(RatioBudget::default())),
            BudgetChoice::None => None,
            BudgetChoice::Shared(b) => Some(b),
        };
        let meter = self.telemetry.resolve_meter();
        let attrs = self.telemetry.base_attributes();
        // The budget's balance, read at each export (not on the call path). A weak reference:
        // the callback outlives the layer in the meter provider.
        let balance = budget.as_ref().map(|b| {
            let weak = Arc::downgrade(b);
            let attrs = attrs.clone();
            meter
                .f64_observable_gauge("steadfast.retry.budget.balance")
                .with_unit("{retry}")
                .with_description("Retries the retry budget would grant now")
                .with_callback(move |gauge| {
                    if let Some(b) = weak.upgrade() {
                        gauge.observe(b.balance(), attrs.base());
                    }
                })
                .build()
        });
        let shared = Shared {
            max_attempts: AtomicU32::new(max_attempts),
            backoff: ArcSwap::from_pointee(self.backoff),
            min_attempt_time: self.min_attempt_time,
            budget,
            rng: self.rng.unwrap_or_else(default_rng),
            attrs,
            calls: meter
                .u64_counter("steadfast.retry.calls")
                .with_unit("{call}")
                .with_description("Calls made through the retry layer")
                .build(),
            attempts: meter
                .u64_counter("steadfast.retry.attempts")
                .with_unit("{attempt}")
                .with_description("Attempts sent, first attempts included")
                .build(),
            retries: meter
                .u64_counter("steadfast.retry.retries")
                .with_unit("{retry}")
                .with_description("Retries scheduled, by the failed attempt's error.type (the classifier's label)")
                .build(),
            give_ups: meter
                .u64_counter("steadfast.retry.give_ups")
                .with_unit("{call}")
                .with_description("Calls on which the retry layer stopped with a failure, by reason")
                .build(),
            budget_exhausted: meter
                .u64_counter("steadfast.retry.budget_exhausted")
                .with_unit("{retry}")
                .with_description("Retries refused by the retry budget")
                .build(),
            duration: self.telemetry.records_duration().then(|| {
                meter
                    .f64_histogram("steadfast.retry.duration")
                    .with_unit("s")
.with_boundaries(crate::telemetry::DURATION_BOUNDARIES.to_vec())
                    .with_description("Duration of calls through the retry layer, all attempts and backoffs included")
                    .build()
            }),
            telemetry: self.telemetry,
            _balance: balance,
        };
        Ok(RetryLayer {
            classifier: self.classifier,
            replay: self.replay,
            shared: Arc::new(shared),
        })
    }
}

/// `max_attempts`: in `[1, MAX_ATTEMPTS]`. The one check, for the builder and the handle.
fn check_max_attempts(n: u32) -> Result<u32, ConfigError> {
    if n == 0 {
        return Err(ConfigError::zero("max_attempts"));
    }
    if n > MAX_ATTEMPTS {
        return Err(ConfigError::out_of_range("max_attempts", n, "[1, 100]"));
    }
    Ok(n)
}

/// Changes a [`RetryLayer`]'s attempts and backoff at run time; cheap to clone. From
/// [`RetryLayer::handle`].
///
/// Each setter checks its value by the builder's rule (the same [`ConfigError`] path) and
/// changes nothing when it is refused. A new maximum of attempts applies to calls that start
/// after the change (a call in flight keeps the maximum it started with); a new backoff applies
/// to the next retry of any call, those in flight included (a backoff already being slept is
/// not shortened).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::retry::{Backoff, RetryLayer};
///
/// let layer = RetryLayer::builder().build()?;
/// let handle = layer.handle();
/// handle.set_max_attempts(2)?;
/// handle.set_backoff(Backoff::constant(Duration::from_millis(50)))?;
/// assert_eq!(handle.max_attempts(), 2);
/// assert_eq!(handle.set_max_attempts(0).unwrap_err().path(), "max_attempts");
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("max_attempts", &self.max_attempts())
            .field("backoff", &self.backoff())
            .finish()
    }
}

impl RetryHandle {
    /// Sets the maximum number of attempts, first included, as
    /// [`max_attempts`](RetryLayerBuilder::max_attempts), for calls that start from now on.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// let h = RetryLayer::builder().build()?.handle();
    /// h.set_max_attempts(4)?;
    /// assert_eq!(h.set_max_attempts(101).unwrap_err().path(), "max_attempts");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_max_attempts(&self, n: u32) -> Result<(), ConfigError> {
        let n = check_max_attempts(n)?;
        self.shared.max_attempts.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the backoff between attempts, as [`backoff`](RetryLayerBuilder::backoff), from the
    /// next retry on.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::retry::{Backoff, RetryLayer};
    /// let h = RetryLayer::builder().build()?.handle();
    /// h.set_backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)))?;
    /// let bad = Backoff::exponential(Duration::ZERO, Duration::from_secs(1));
    /// assert_eq!(h.set_backoff(bad).unwrap_err().path(), "backoff.base");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_backoff(&self, backoff: Backoff) -> Result<(), ConfigError> {
        backoff.validate()?;
        self.shared.backoff.store(Arc::new(backoff));
        Ok(())
    }

    /// The maximum number of attempts in force.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert_eq!(RetryLayer::builder().max_attempts(2).build()?.handle().max_attempts(), 2);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.shared.max_attempts.load(Ordering::Relaxed)
    }

    /// The backoff in force.
    ///
    /// ```
    /// # use steadfast_layers::retry::{Backoff, RetryLayer};
    /// assert_eq!(RetryLayer::builder().build()?.handle().backoff(), Backoff::default());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn backoff(&self) -> Backoff {
        **self.shared.backoff.load()
    }
}

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, ObservableGauge};
use tower_layer::Layer;

use super::budget::HedgeBudget;
use super::delay::Plan;
use super::histogram::LatencyTracker;
use super::{Hedge, HedgeDelay, IdempotentOnly};
use crate::classify::RetryOnError;
use crate::error::{check_f64, ConfigError};
use crate::live::AtomicOptDuration;
use crate::retry::{CloneReplay, RetryBudget};
use crate::telemetry::{Attrs, Telemetry, REASON_KEY};

/// The most hedges per call a builder accepts (Polly's limit).
pub const MAX_HEDGES: u32 = 10;

/// Sends a copy of a slow request to race the original, within a budget and the deadline.
///
/// Built by [`HedgeLayer::builder`]. See the [module docs](super) for the full rules.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::{HedgeAny, HedgeDelay, HedgeLayer};
///
/// let layer = HedgeLayer::builder()
///     .delay(HedgeDelay::percentile(95.0).warmup_delay(Duration::from_millis(50)))
///     .max_hedges(2)
///     .budget_ratio(0.05)
///     .policy(HedgeAny)
///     .build()?;
/// assert_eq!(layer.max_hedges(), 2);
/// assert_eq!(layer.current_delay(), Some(Duration::from_millis(50))); // warming up
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct HedgeLayer<P = IdempotentOnly, C = RetryOnError, R = CloneReplay> {
    policy: P,
    classifier: C,
    replay: R,
    shared: Arc<Shared>,
}

impl<P: Clone, C: Clone, R: Clone> Clone for HedgeLayer<P, C, R> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Where the hedge delay comes from.
#[derive(Debug)]
pub(super) enum DelaySource {
    /// Changed through [`HedgeHandle`](super::HedgeHandle): one relaxed load per call.
    Fixed(Arc<AtomicOptDuration>),
    Learned(Arc<LatencyTracker>),
}

/// What every clone of one hedge layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) max_hedges: u32,
    pub(super) delay: DelaySource,
    pub(super) min_hedge_time: Duration,
    pub(super) budget: Option<HedgeBudget>,
    pub(super) retry_budget: Option<Arc<dyn RetryBudget>>,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) sent: Counter<u64>,
    pub(super) wins: Counter<u64>,
    pub(super) budget_exhausted: Counter<u64>,
    pub(super) skipped: Counter<u64>,
    _delay_gauge: ObservableGauge<f64>,
    _balance_gauge: Option<ObservableGauge<f64>>,
}

impl Shared {
    /// The delay a call starting now hedges after; `None` while warming up without a warm-up
    /// delay. One atomic load for a learned delay.
    #[inline]
    pub(super) fn current_delay(&self) -> Option<Duration> {
        match &self.delay {
            DelaySource::Fixed(d) => d.get(),
            DelaySource::Learned(t) => t.delay(),
        }
    }

    /// The latency histogram, when the delay is learned.
    #[inline]
    pub(super) fn tracker(&self) -> Option<&LatencyTracker> {
        match &self.delay {
            DelaySource::Fixed(_) => None,
            DelaySource::Learned(t) => Some(t),
        }
    }

    /// Counts a hedge not sent, by reason.
    pub(super) fn skip(&self, reason: &'static str) {
        self.attrs
            .with(REASON_KEY, reason, |a| self.skipped.add(1, a));
    }

    /// Hedges the local budget would grant now, for telemetry.
    pub(super) fn budget_balance(&self) -> Option<f64> {
        self.budget.as_ref().map(HedgeBudget::balance)
    }
}

impl HedgeLayer {
    /// A builder with safe defaults: the delay is the 95th percentile of recent latencies
    /// ([`HedgeDelay::default`]: no hedge until 100 samples), one hedge at most, hedges capped at
    /// 10 % of requests (burst 10), no hedge unless at least 1 ms of deadline is left, only
    /// requests marked idempotent ([`IdempotentOnly`]), copies by cloning, every error a failure
    /// ([`RetryOnError`]).
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// let layer = HedgeLayer::builder().build()?;
    /// assert_eq!(layer.max_hedges(), 1);
    /// assert_eq!(layer.current_delay(), None); // no samples yet
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> HedgeLayerBuilder {
        HedgeLayerBuilder {
            delay: HedgeDelay::default(),
            max_hedges: 1,
            budget_ratio: Some(0.1),
            budget_burst: 10,
            retry_budget: None,
            min_hedge_time: Duration::from_millis(1),
            telemetry: Telemetry::default(),
            policy: IdempotentOnly,
            classifier: RetryOnError,
            replay: CloneReplay,
        }
    }
}

impl<P, C, R> HedgeLayer<P, C, R> {
    /// The most hedges sent per call.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// assert_eq!(HedgeLayer::builder().max_hedges(3).build()?.max_hedges(), 3);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_hedges(&self) -> u32 {
        self.shared.max_hedges
    }

    /// The delay a call starting now would hedge after: the fixed delay, the learned percentile,
    /// or while warming up the warm-up delay (`None` when there is none: no hedge).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
    /// let l = HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::from_millis(20))).build()?;
    /// assert_eq!(l.current_delay(), Some(Duration::from_millis(20)));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn current_delay(&self) -> Option<Duration> {
        self.shared.current_delay()
    }

    /// A handle that changes the hedge delay at run time, for every clone of the layer and
    /// every service it made (see the [module docs](super#changing-settings-at-run-time)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
    /// let l = HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::from_millis(20))).build()?;
    /// l.handle().set_delay(HedgeDelay::fixed(Duration::from_millis(40)))?;
    /// assert_eq!(l.current_delay(), Some(Duration::from_millis(40)));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Changes a [`HedgeLayer`]'s delay at run time; cheap to clone. From [`HedgeLayer::handle`].
///
/// The new delay is checked by [`HedgeDelay::validate`], the builder's own check (the same
/// [`ConfigError`] path), and applies to calls that start after the change; a call in flight
/// keeps the delay it started with. A fixed delay stays fixed and a learned one learned: a
/// layer built with a fixed delay takes a new fixed delay; one built with a percentile takes a
/// new percentile, minimum samples, warm-up delay and recomputation cadence (its samples are
/// kept and the delay is recomputed from them at once), but not a new window.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
///
/// let layer = HedgeLayer::builder().delay(HedgeDelay::percentile(95.0)).build()?;
/// let handle = layer.handle();
/// handle.set_delay(HedgeDelay::percentile(99.0).warmup_delay(Duration::from_millis(50)))?;
/// assert_eq!(layer.current_delay(), Some(Duration::from_millis(50)));
/// let err = handle.set_delay(HedgeDelay::fixed(Duration::from_millis(10))).unwrap_err();
/// assert_eq!(err.path(), "delay");
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HedgeHandle {
    shared: Arc<Shared>,
}

impl HedgeHandle {
    /// Sets the hedge delay (see [`HedgeHandle`] for what may change).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
    /// let h = HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::from_millis(5))).build()?.handle();
    /// h.set_delay(HedgeDelay::fixed(Duration::from_millis(8)))?;
    /// assert_eq!(h.set_delay(HedgeDelay::fixed(Duration::ZERO)).unwrap_err().path(), "delay");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_delay(&self, delay: HedgeDelay) -> Result<(), ConfigError> {
        delay.validate()?;
        match (&self.shared.delay, delay.plan()) {
            (DelaySource::Fixed(d), Plan::Fixed(new)) => {
                d.set(Some(new));
                Ok(())
            }
            (DelaySource::Learned(t), Plan::Learned(config)) => t.reconfigure(config),
            (DelaySource::Fixed(_), Plan::Learned(_)) => Err(ConfigError::conflict(
                "delay",
                "the layer was built with a fixed delay: it takes a fixed delay",
            )),
            (DelaySource::Learned(_), Plan::Fixed(_)) => Err(ConfigError::conflict(
                "delay",
                "the layer was built with a learned (percentile) delay: it takes a percentile",
            )),
        }
    }

    /// The delay a call starting now would hedge after, as
    /// [`HedgeLayer::current_delay`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
    /// let h = HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::from_millis(5))).build()?.handle();
    /// assert_eq!(h.current_delay(), Some(Duration::from_millis(5)));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn current_delay(&self) -> Option<Duration> {
        self.shared.current_delay()
    }
}

impl<S, P: Clone, C: Clone, R: Clone> Layer<S> for HedgeLayer<P, C, R> {
    type Service = Hedge<S, P, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`HedgeLayer`], validating its configuration.
///
/// ```
/// # use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
/// let err = HedgeLayer::builder().delay(HedgeDelay::percentile(100.0)).build().unwrap_err();
/// assert_eq!(err.path(), "delay.percentile");
/// assert_eq!(HedgeLayer::builder().max_hedges(11).build().unwrap_err().path(), "max_hedges");
/// ```
#[derive(Debug)]
pub struct HedgeLayerBuilder<P = IdempotentOnly, C = RetryOnError, R = CloneReplay> {
    delay: HedgeDelay,
    max_hedges: u32,
    budget_ratio: Option<f64>,
    budget_burst: u32,
    retry_budget: Option<Arc<dyn RetryBudget>>,
    min_hedge_time: Duration,
    telemetry: Telemetry,
    policy: P,
    classifier: C,
    replay: R,
}

impl<P, C, R> HedgeLayerBuilder<P, C, R> {
    /// When to hedge: [`HedgeDelay::fixed`] or [`HedgeDelay::percentile`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::{HedgeDelay, HedgeLayer};
    /// let l = HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::from_millis(30))).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// Hedges per call at most, in `[1, 10]` (default 1). Each further hedge follows the previous
    /// one after the same delay.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// assert_eq!(HedgeLayer::builder().max_hedges(0).build().unwrap_err().path(), "max_hedges");
    /// ```
    pub fn max_hedges(mut self, n: u32) -> Self {
        self.max_hedges = n;
        self
    }

    /// Caps hedges at `ratio` of the requests through the layer (all clones together): a
    /// fraction, as every budget in this crate takes (`0.1` = 10 %), in `(0, 10]` (default
    /// 0.1). Counted per request, not per second, with no clock read: each request adds `ratio`
    /// of a hedge to a bucket that holds at most [`budget_burst`](Self::budget_burst) hedges.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// assert!(HedgeLayer::builder().budget_ratio(0.025).build().is_ok()); // 2.5 %
    /// assert!(HedgeLayer::builder().budget_ratio(f64::NAN).build().is_err());
    /// assert!(HedgeLayer::builder().budget_ratio(-0.01).build().is_err());
    /// ```
    pub fn budget_ratio(mut self, ratio: f64) -> Self {
        self.budget_ratio = Some(ratio);
        self
    }

    /// Hedges the budget may bank during quiet periods, at least 1 (default 10). The budget starts
    /// full.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// assert!(HedgeLayer::builder().budget_burst(1).build().is_ok());
    /// assert!(HedgeLayer::builder().budget_burst(0).build().is_err());
    /// ```
    pub fn budget_burst(mut self, hedges: u32) -> Self {
        self.budget_burst = hedges;
        self
    }

    /// Hedges without any budget: removes the layer's own cap and any shared
    /// [`budget`](Self::budget), as `RetryLayerBuilder::no_budget` does for retries. A slow
    /// backend then receives up to `1 + max_hedges` times the load: prefer a budget.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// assert!(HedgeLayer::builder().no_budget().build().is_ok());
    /// ```
    pub fn no_budget(mut self) -> Self {
        self.budget_ratio = None;
        self.retry_budget = None;
        self
    }

    /// Also draws each hedge from `budget`, shared with everything else that holds the same
    /// `Arc` (e.g. the retry layer's, entered there with the same method
    /// [`RetryLayerBuilder::budget`](crate::retry::RetryLayerBuilder::budget), or a gRPC-style
    /// [`TokenBucket`](crate::retry::TokenBucket)), after the layer's own cap
    /// ([`budget_ratio`](Self::budget_ratio)): retries and hedges then share one cap on extra
    /// load. The hedge layer only withdraws; the retry layer that owns the budget deposits and
    /// records outcomes.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{hedge::HedgeLayer, retry::{RatioBudget, RetryLayer}};
    /// let shared = Arc::new(RatioBudget::builder().build()?);
    /// let retry = RetryLayer::builder().budget(shared.clone()).build()?;
    /// let hedge = HedgeLayer::builder().budget(shared).build()?;
    /// # let _ = (retry, hedge);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn budget<B: RetryBudget + 'static>(mut self, budget: Arc<B>) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    /// The least deadline a hedge needs: no hedge is sent unless at least this much of the
    /// [deadline](crate::deadline) is left (default 1 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// let l = HedgeLayer::builder().min_hedge_time(Duration::from_millis(20)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn min_hedge_time(mut self, t: Duration) -> Self {
        self.min_hedge_time = t;
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{hedge::HedgeLayer, telemetry::Telemetry};
    /// let l = HedgeLayer::builder().telemetry(Telemetry::new().name("search")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Which requests may be hedged (see [`HedgePolicy`](super::HedgePolicy)).
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// let l = HedgeLayer::builder().policy(|req: &String| req.starts_with("GET ")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn policy<P2>(self, policy: P2) -> HedgeLayerBuilder<P2, C, R> {
        HedgeLayerBuilder {
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget_ratio: self.budget_ratio,
            budget_burst: self.budget_burst,
            retry_budget: self.retry_budget,
            min_hedge_time: self.min_hedge_time,
            telemetry: self.telemetry,
            policy,
            classifier: self.classifier,
            replay: self.replay,
        }
    }

    /// Decides which results are successes (see [`crate::classify`]): the first success wins;
    /// a failure waits for the other attempts in flight.
    ///
    /// ```
    /// # use steadfast_layers::{classify::Outcome, hedge::HedgeLayer, BoxError};
    /// let l = HedgeLayer::builder()
    ///     .classifier(|r: &Result<u16, BoxError>| match r {
    ///         Ok(s) if *s >= 500 => Outcome::retryable("server_error"),
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::retryable("error"),
    ///     })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> HedgeLayerBuilder<P, C2, R> {
        HedgeLayerBuilder {
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget_ratio: self.budget_ratio,
            budget_burst: self.budget_burst,
            retry_budget: self.retry_budget,
            min_hedge_time: self.min_hedge_time,
            telemetry: self.telemetry,
            policy: self.policy,
            classifier,
            replay: self.replay,
        }
    }

    /// How requests are copied for hedges (see [`Replay`](crate::retry::Replay)); a request
    /// that cannot be copied is not hedged.
    ///
    /// ```
    /// # use steadfast_layers::{hedge::{HedgeAny, HedgeLayer}, retry::NotReplayable};
    /// let l = HedgeLayer::builder()
    ///     .policy(HedgeAny)
    ///     .replay(|r: &mut Vec<u8>| if r.len() <= 4096 { Ok(r.clone()) } else { Err(NotReplayable::new("too large")) })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn replay<R2>(self, replay: R2) -> HedgeLayerBuilder<P, C, R2> {
        HedgeLayerBuilder {
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget_ratio: self.budget_ratio,
            budget_burst: self.budget_burst,
            retry_budget: self.retry_budget,
            min_hedge_time: self.min_hedge_time,
            telemetry: self.telemetry,
            policy: self.policy,
            classifier: self.classifier,
            replay,
        }
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeLayer;
    /// assert_eq!(HedgeLayer::builder().budget_ratio(0.0).build().unwrap_err().path(), "budget_ratio");
    /// ```
    pub fn build(self) -> Result<HedgeLayer<P, C, R>, ConfigError> {
        self.delay.validate()?;
        if self.max_hedges == 0 {
            return Err(ConfigError::zero("max_hedges"));
        }
        if self.max_hedges > MAX_HEDGES {
            return Err(ConfigError::out_of_range(
                "max_hedges",
                self.max_hedges,
                "[1, 10]",
            ));
        }
        let budget = match self.budget_ratio {
            Some(p) => {
                check_f64(
                    "budget_ratio",
                    p,
                    0.0,
                    10.0,
                    "(0, 10] (a fraction: 0.1 = 10 %)",
                )?;
                if p == 0.0 {
                    return Err(ConfigError::zero("budget_ratio"));
                }
                if self.budget_burst == 0 {
                    return Err(ConfigError::zero("budget_burst"));
                }
                if self.budget_burst > 1_000_000 {
                    return Err(ConfigError::out_of_range(
                        "budget_burst",
                        self.budget_burst,
                        "[1, 1000000]",
                    ));
                }
                Some(HedgeBudget::new(p, self.budget_burst))
            }
            None => None,
        };
        if self.min_hedge_time > crate::deadline::MAX_TIMEOUT {
            return Err(ConfigError::out_of_range(
                "min_hedge_time",
                self.min_hedge_time,
                "[0, 99999999 h]",
            ));
        }
        let delay = match self.delay.plan() {
            Plan::Fixed(d) => DelaySource::Fixed(Arc::new(AtomicOptDuration::new(Some(d)))),
            Plan::Learned(config) => DelaySource::Learned(Arc::new(LatencyTracker::new(config))),
        };
        let meter = self.telemetry.resolve_meter();
        let attrs = self.telemetry.base_attributes();
        let gauge_attrs = attrs.clone();
        let source = match &delay {
            DelaySource::Fixed(d) => GaugeSource::Fixed(Arc::downgrade(d)),
            DelaySource::Learned(t) => GaugeSource::Learned(Arc::downgrade(t)),
        };
        let delay_gauge = meter
            .f64_observable_gauge("steadfast.hedge.delay")
            .with_unit("s")
            .with_description("The delay after which a call starting now would be hedged")
            .with_callback(move |observer| {
                let now = match &source {
                    GaugeSource::Fixed(d) => d.upgrade().and_then(|d| d.get()),
                    GaugeSource::Learned(t) => t.upgrade().and_then(|t| t.delay()),
                };
                if let Some(d) = now {
                    observer.observe(d.as_secs_f64(), gauge_attrs.base());
                }
            })
            .build();
        // The layer's own budget, read at each export through a weak reference (the callback
        // outlives the layer in the meter provider).
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let balance_gauge = budget.is_some().then(|| {
                let weak = weak.clone();
                meter
                    .f64_observable_gauge("steadfast.hedge.budget.balance")
                    .with_unit("{hedge}")
                    .with_description("Hedges the hedge layer's own budget would grant now")
                    .with_callback(move |gauge| {
                        if let Some(s) = weak.upgrade() {
                            if let Some(balance) = s.budget_balance() {
                                gauge.observe(balance, s.attrs.base());
                            }
                        }
                    })
                    .build()
            });
            Shared {
            max_hedges: self.max_hedges,
            delay,
            min_hedge_time: self.min_hedge_time,
            budget,
            retry_budget: self.retry_budget,
            attrs,
            calls: meter
                .u64_counter("steadfast.hedge.calls")
                .with_unit("{call}")
                .with_description("Calls made through the hedge layer")
                .build(),
            sent: meter
                .u64_counter("steadfast.hedge.sent")
                .with_unit("{hedge}")
                .with_description("Hedges sent")
                .build(),
            wins: meter
                .u64_counter("steadfast.hedge.wins")
                .with_unit("{call}")
                .with_description(
                    "Hedged calls (at least one hedge sent) that succeeded, by the winning attempt",
                )
                .build(),
            budget_exhausted: meter
                .u64_counter("steadfast.hedge.budget_exhausted")
                .with_unit("{hedge}")
                .with_description("Hedges refused by a budget, by budget")
                .build(),
            skipped: meter
                .u64_counter("steadfast.hedge.skipped")
                .with_unit("{hedge}")
                .with_description("Hedges not sent, by reason")
                .build(),
            _delay_gauge: delay_gauge,
            _balance_gauge: balance_gauge,
            telemetry: self.telemetry,
        }
        });
        Ok(HedgeLayer {
            policy: self.policy,
            classifier: self.classifier,
            replay: self.replay,
            shared,
        })
    }
}

enum GaugeSource {
    Fixed(Weak<AtomicOptDuration>),
    Learned(Weak<LatencyTracker>),
}

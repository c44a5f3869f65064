use std::fmt;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::core::{control_state, DISABLED, FORCED_OPEN, METRICS_ONLY, NORMAL};
use super::keyed::{Breakers, Registry};

/// The state of a circuit breaker, resilience4j's six.
///
/// `Closed`, `Open` and `HalfOpen` are the breaker's own; `Disabled`, `ForcedOpen` and
/// `MetricsOnly` are set through a [`BreakerHandle`] and override it for every breaker of the
/// layer.
///
/// ```
/// use steadfast_layers::breaker::BreakerState;
/// assert_eq!(BreakerState::HalfOpen.label(), "half_open");
/// assert!(BreakerState::ForcedOpen.rejects());
/// assert!(!BreakerState::MetricsOnly.rejects());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are refused until the break is over.
    Open,
    /// A limited number of probe calls decide whether to close or re-open.
    HalfOpen,
    /// Calls pass and nothing is recorded.
    Disabled,
    /// Every call is refused, with no end in sight.
    ForcedOpen,
    /// Calls pass and outcomes are recorded, but the breaker never opens; crossing a threshold
    /// is only traced.
    MetricsOnly,
}

impl BreakerState {
    /// Every state, in declaration order.
    ///
    /// ```
    /// # use steadfast_layers::breaker::BreakerState;
    /// assert_eq!(BreakerState::ALL.len(), 6);
    /// ```
    pub const ALL: [BreakerState; 6] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Disabled,
        BreakerState::ForcedOpen,
        BreakerState::MetricsOnly,
    ];

    /// A short label for metrics (`from`, `to`, `state` attributes) and traces.
    ///
    /// ```
    /// # use steadfast_layers::breaker::BreakerState;
    /// assert_eq!(BreakerState::ForcedOpen.label(), "forced_open");
    /// ```
    pub const fn label(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Disabled => "disabled",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::MetricsOnly => "metrics_only",
        }
    }

    /// Whether this state refuses calls (open and forced open; half-open refuses only calls
    /// beyond its probes).
    ///
    /// ```
    /// # use steadfast_layers::breaker::BreakerState;
    /// assert!(BreakerState::Open.rejects());
    /// assert!(!BreakerState::Closed.rejects());
    /// ```
    pub const fn rejects(&self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a breaker changed state.
///
/// ```
/// use steadfast_layers::breaker::TransitionReason;
/// assert_eq!(TransitionReason::SlowCallRate.label(), "slow_call_rate");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The failure rate reached its threshold (after the minimum number of calls when closed; over
    /// the configured probes when half-open).
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// The configured number of consecutive failures was reached.
    ConsecutiveFailures,
    /// The break is over: probes are allowed.
    BreakElapsed,
    /// Every half-open probe finished and the rates stayed below their thresholds.
    ProbesPassed,
    /// The [`BreakerHandle`] changed the mode.
    Manual,
}

impl TransitionReason {
    /// A short label for metrics and traces.
    ///
    /// ```
    /// # use steadfast_layers::breaker::TransitionReason;
    /// assert_eq!(TransitionReason::ProbesPassed.label(), "probes_passed");
    /// ```
    pub const fn label(&self) -> &'static str {
        match self {
            TransitionReason::FailureRate => "failure_rate",
            TransitionReason::SlowCallRate => "slow_call_rate",
            TransitionReason::ConsecutiveFailures => "consecutive_failures",
            TransitionReason::BreakElapsed => "break_elapsed",
            TransitionReason::ProbesPassed => "probes_passed",
            TransitionReason::Manual => "manual",
        }
    }
}

/// One state change, as given to the
/// [`on_transition`](super::CircuitBreakerLayerBuilder::on_transition) callback.
///
/// The rates are those the decision was made on: the window's when closed or open, the probes'
/// (out of the configured number) when half-open; both 0 for manual transitions.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer, Transition};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// let layer = CircuitBreakerLayer::builder()
///     .on_transition(move |t: &Transition| s.lock().unwrap().push((t.from, t.to)))
///     .build()?;
/// layer.handle().force_open();
/// assert_eq!(*seen.lock().unwrap(), [(BreakerState::Closed, BreakerState::ForcedOpen)]);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// The failure rate, in `[0, 1]`.
    pub failure_rate: f64,
    /// The slow-call rate, in `[0, 1]`.
    pub slow_call_rate: f64,
    /// The breaker's key (its `Debug` form) for per-key breakers.
    pub key: Option<Arc<str>>,
}

/// A snapshot of one breaker, read from its [`BreakerHandle`].
///
/// ```
/// use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
/// let layer = CircuitBreakerLayer::builder().build()?;
/// let m = layer.handle().metrics();
/// assert_eq!(m.state, BreakerState::Closed);
/// assert_eq!(m.calls, 0);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerMetrics {
    /// The state, the control mode included.
    pub state: BreakerState,
    /// Calls in the sliding window (kept while open, cleared when the breaker closes).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// `failures / calls` (0 without calls).
    pub failure_rate: f64,
    /// `slow_calls / calls` (0 without calls).
    pub slow_call_rate: f64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Calls refused since the breaker was built or last reset by the handle.
    pub rejected: u64,
    /// Openings since the breaker was last closed (drives break-duration growth).
    pub consecutive_opens: u32,
    /// While open: how long until a probe is allowed.
    pub open_remaining: Option<Duration>,
    /// While half-open: probes admitted and not finished.
    pub probes_in_flight: u32,
    /// While half-open: probes finished.
    pub probes_completed: u32,
}

/// Controls and observes the breakers of one layer, from anywhere; cheap to clone.
///
/// Obtained from [`CircuitBreakerLayer::handle`](super::CircuitBreakerLayer::handle) (or from a
/// service). Its modes apply to every breaker of the layer (every key for per-key breakers); each
/// mode change starts every breaker afresh (closed, empty window) and is a transition with reason
/// [`TransitionReason::Manual`].
///
/// ```
/// use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
/// let layer = CircuitBreakerLayer::builder().build()?;
/// let handle = layer.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), BreakerState::ForcedOpen);
/// handle.close();
/// assert_eq!(handle.state(), BreakerState::Closed);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct BreakerHandle {
    pub(super) registry: Arc<Registry>,
}

impl Clone for BreakerHandle {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("mode", &self.mode())
            .field("breakers", &self.registry.len())
            .finish()
    }
}

impl BreakerHandle {
    /// Lets every call through and records nothing.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.disable();
    /// assert_eq!(h.mode(), Some(BreakerState::Disabled));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn disable(&self) {
        self.set(DISABLED);
    }

    /// Refuses every call with [`CircuitOpen`](super::CircuitOpen) (in readiness mode,
    /// `poll_ready` stays pending) until another mode is chosen.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.force_open();
    /// assert_eq!(h.mode(), Some(BreakerState::ForcedOpen));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn force_open(&self) {
        self.set(FORCED_OPEN);
    }

    /// Records outcomes but never opens: crossing a threshold is traced (and starts a fresh
    /// window) instead. For trying thresholds out in production.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.metrics_only();
    /// assert_eq!(h.mode(), Some(BreakerState::MetricsOnly));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn metrics_only(&self) {
        self.set(METRICS_ONLY);
    }

    /// Back to normal operation: every breaker closed, with an empty window. Also resets breakers
    /// that are open on their own.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.disable();
    /// h.close();
    /// assert_eq!(h.mode(), None);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn close(&self) {
        self.set(NORMAL);
    }

    /// The mode set through the handle (`Disabled`, `ForcedOpen` or `MetricsOnly`), or `None`
    /// when the breakers run on their own.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().build()?.handle().mode(), None);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn mode(&self) -> Option<BreakerState> {
        control_state(self.registry.common.control())
    }

    /// How many breakers the layer holds (1 without keys).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().build()?.handle().breakers(), 1);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn breakers(&self) -> usize {
        self.registry.len()
    }

    fn set(&self, control: u8) {
        let common = &self.registry.common;
        let previous = common.control.swap(control, Ordering::AcqRel);
        let mut own = None;
        self.registry.for_each(|core| {
            let was = core.reset();
            own.get_or_insert(was);
        });
        let from = control_state(previous).unwrap_or(match &self.registry.breakers {
            Breakers::Single(_) => own.unwrap_or(BreakerState::Closed),
            Breakers::Keyed(_) => BreakerState::Closed,
        });
        let to = control_state(control).unwrap_or(BreakerState::Closed);
        if from != to {
            common.emit(&super::Transition {
                from,
                to,
                reason: super::TransitionReason::Manual,
                failure_rate: 0.0,
                slow_call_rate: 0.0,
                key: None,
            });
        } else {
            common.wake_all();
        }
    }
}

impl BreakerHandle {
    /// The state of `key`'s breaker, the mode included, or `None` if the layer holds no breaker
    /// for it (never used, or evicted). Without keys, the single breaker's state whatever `key`.
    ///
    /// `key` is found by its hash, so it may be any type that hashes like the extractor's key
    /// type (a `&str` for a `String` key, as with `HashMap::get`).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder()
    ///     .key_by(|host: &&'static str| host.to_string())
    ///     .build()?;
    /// assert_eq!(layer.handle().state_of("db-1"), None);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn state_of<Q: Hash + ?Sized>(&self, key: &Q) -> Option<BreakerState> {
        self.registry
            .get(key)
            .map(|core| self.registry.common.effective(core.state()))
    }

    /// A snapshot of `key`'s breaker, or `None` if the layer holds no breaker for it. `key` is
    /// found by its hash, as for [`state_of`](Self::state_of).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder().key_by(|r: &(u8, u8)| r.0).build()?;
    /// assert!(layer.handle().metrics_of(&1u8).is_none());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn metrics_of<Q: Hash + ?Sized>(&self, key: &Q) -> Option<BreakerMetrics> {
        self.registry.get(key).map(|core| core.metrics())
    }

    /// The breaker's state, the mode included. For a per-key layer, the mode if one is set,
    /// else `Closed` (read each key's with [`state_of`](Self::state_of)).
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// assert_eq!(h.state(), BreakerState::Closed);
    /// h.metrics_only();
    /// assert_eq!(h.state(), BreakerState::MetricsOnly);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn state(&self) -> BreakerState {
        let own = match &self.registry.breakers {
            Breakers::Single(core) => core.state(),
            Breakers::Keyed(_) => BreakerState::Closed,
        };
        self.registry.common.effective(own)
    }

    /// A snapshot of the breaker's counts. For a per-key layer, empty counts under
    /// [`state`](Self::state) (read each key's with [`metrics_of`](Self::metrics_of)).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// assert_eq!(h.metrics().failures, 0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn metrics(&self) -> BreakerMetrics {
        match &self.registry.breakers {
            Breakers::Single(core) => core.metrics(),
            Breakers::Keyed(_) => BreakerMetrics {
                state: self.state(),
                calls: 0,
                failures: 0,
                slow_calls: 0,
                failure_rate: 0.0,
                slow_call_rate: 0.0,
                consecutive_failures: 0,
                rejected: 0,
                consecutive_opens: 0,
                open_remaining: None,
                probes_in_flight: 0,
                probes_completed: 0,
            },
        }
    }
}

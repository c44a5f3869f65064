use std::fmt;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::core::{control_state, DISABLED, FORCED_OPEN, METRICS_ONLY, NORMAL};
use super::keyed::{Breakers, Registry};
use super::layer::{
    check_consecutive_failures, check_failure_rate, check_half_open_probes, check_minimum_calls,
    check_slow_call_duration, check_slow_call_rate,
};
use super::BreakDuration;
use crate::ConfigError;

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

/// Changing settings at run time (see the [module docs](super#changing-settings-at-run-time)).
///
/// Each setter checks its value by the builder's own rule (the same function, the same
/// [`ConfigError`] path) and changes nothing when it is refused. A change applies to every
/// breaker of the layer (every key) from the next decision on: the next call recorded in a
/// closed window, the next probe admitted or recorded, the next trip. Nothing is reset: the
/// windows, the open and half-open states and their break ends are kept, and calls in flight
/// finish as admitted.
impl BreakerHandle {
    /// Sets the failure rate that opens a breaker, as
    /// [`failure_rate`](super::CircuitBreakerLayerBuilder::failure_rate). The next recorded
    /// failure is judged by it; the window is not re-judged at once.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_failure_rate(0.25)?;
    /// assert_eq!(h.set_failure_rate(2.0).unwrap_err().path(), "failure_rate");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_failure_rate(&self, threshold: f64) -> Result<(), ConfigError> {
        let v = check_failure_rate(threshold)?;
        self.cfg().failure_rate.set(v);
        Ok(())
    }

    /// Turns slow-call detection on with this threshold, or off with `None`, as
    /// [`slow_call_duration`](super::CircuitBreakerLayerBuilder::slow_call_duration). Calls
    /// that started before it was turned on are not judged slow.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_slow_call_duration(Some(Duration::from_secs(2)))?;
    /// h.set_slow_call_duration(None)?;
    /// assert!(h.set_slow_call_duration(Some(Duration::ZERO)).is_err());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_slow_call_duration(&self, threshold: Option<Duration>) -> Result<(), ConfigError> {
        let v = check_slow_call_duration(threshold)?;
        self.cfg().slow_call.set(v);
        Ok(())
    }

    /// Sets the slow-call rate that opens a breaker, as
    /// [`slow_call_rate`](super::CircuitBreakerLayerBuilder::slow_call_rate).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_slow_call_rate(0.8)?;
    /// assert_eq!(h.set_slow_call_rate(f64::NAN).unwrap_err().path(), "slow_call_rate");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_slow_call_rate(&self, threshold: f64) -> Result<(), ConfigError> {
        let v = check_slow_call_rate(threshold)?;
        self.cfg().slow_call_rate.set(v);
        Ok(())
    }

    /// Sets how many calls the window must hold before its rates count, as
    /// [`minimum_calls`](super::CircuitBreakerLayerBuilder::minimum_calls) (capped at a count
    /// window's size).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_minimum_calls(20)?;
    /// assert_eq!(h.set_minimum_calls(0).unwrap_err().path(), "minimum_calls");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_minimum_calls(&self, n: u32) -> Result<(), ConfigError> {
        let cfg = self.cfg();
        let v = check_minimum_calls(n, &cfg.window)?;
        cfg.minimum_calls.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Opens a breaker after this many consecutive failures too, or not with `None`, as
    /// [`consecutive_failures`](super::CircuitBreakerLayerBuilder::consecutive_failures).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_consecutive_failures(Some(5))?;
    /// assert_eq!(h.set_consecutive_failures(Some(0)).unwrap_err().path(), "consecutive_failures");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_consecutive_failures(&self, n: Option<u32>) -> Result<(), ConfigError> {
        let v = check_consecutive_failures(n)?;
        self.cfg().consecutive_failures.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Sets how many probes a half-open breaker admits, as
    /// [`half_open_probes`](super::CircuitBreakerLayerBuilder::half_open_probes). A breaker
    /// half-open now uses the new number at once: more probes may be admitted, and one that
    /// has already seen as many healthy probes as the new number closes at its next probe.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_half_open_probes(3)?;
    /// assert_eq!(h.set_half_open_probes(1001).unwrap_err().path(), "half_open_probes");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_half_open_probes(&self, n: u32) -> Result<(), ConfigError> {
        let v = check_half_open_probes(n)?;
        self.cfg().probes.store(v, Ordering::Relaxed);
        // Callers waiting for a probe (readiness mode) look again.
        self.registry.common.wake_all();
        Ok(())
    }

    /// Ramps half-open probes up (or not), as
    /// [`progressive_half_open`](super::CircuitBreakerLayerBuilder::progressive_half_open).
    /// Never refused.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_progressive_half_open(true)?;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_progressive_half_open(&self, yes: bool) -> Result<(), ConfigError> {
        self.cfg().progressive.store(yes, Ordering::Relaxed);
        self.registry.common.wake_all();
        Ok(())
    }

    /// Sets how long a breaker stays open, as
    /// [`break_duration`](super::CircuitBreakerLayerBuilder::break_duration), from the next
    /// opening on: a breaker open now keeps the break it was given. The count of consecutive
    /// openings (which an exponential break grows with) is kept.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
    /// let h = CircuitBreakerLayer::builder().build()?.handle();
    /// h.set_break_duration(BreakDuration::constant(Duration::from_secs(5)))?;
    /// let bad = BreakDuration::exponential(Duration::from_secs(5), Duration::from_secs(1));
    /// assert_eq!(h.set_break_duration(bad).unwrap_err().path(), "break_duration.cap");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_break_duration(&self, d: BreakDuration) -> Result<(), ConfigError> {
        d.validate()?;
        self.cfg().break_duration.store(Arc::new(d));
        Ok(())
    }

    /// The settings in force now, as a snapshot.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let h = CircuitBreakerLayer::builder().failure_rate(0.3).build()?.handle();
    /// assert_eq!(h.settings().failure_rate, 0.3);
    /// h.set_failure_rate(0.6)?;
    /// assert_eq!(h.settings().failure_rate, 0.6);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn settings(&self) -> BreakerSettings {
        let cfg = self.cfg();
        BreakerSettings {
            failure_rate: cfg.failure_rate.get(),
            slow_call_duration: cfg.slow_call.get(),
            slow_call_rate: cfg.slow_call_rate.get(),
            minimum_calls: u32::try_from(cfg.minimum_calls.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX),
            consecutive_failures: match cfg.consecutive_failures.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n),
            },
            half_open_probes: cfg.probes(),
            progressive_half_open: cfg.progressive.load(Ordering::Relaxed),
            break_duration: **cfg.break_duration.load(),
        }
    }

    fn cfg(&self) -> &super::core::Config {
        &self.registry.common.cfg
    }
}

/// The settings of a breaker layer that can change at run time, as in force now: read from
/// [`BreakerHandle::settings`], changed by its setters.
///
/// ```
/// use steadfast_layers::breaker::CircuitBreakerLayer;
/// let s = CircuitBreakerLayer::builder().minimum_calls(10).build()?.handle().settings();
/// assert_eq!(s.minimum_calls, 10);
/// assert_eq!(s.consecutive_failures, None);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerSettings {
    /// The failure rate that opens a breaker.
    pub failure_rate: f64,
    /// The slow-call threshold, if slow calls are detected.
    pub slow_call_duration: Option<Duration>,
    /// The slow-call rate that opens a breaker.
    pub slow_call_rate: f64,
    /// The calls a window must hold before its rates count (capped at a count window's size).
    pub minimum_calls: u32,
    /// The consecutive failures that open a breaker, if set.
    pub consecutive_failures: Option<u32>,
    /// The probes a half-open breaker admits.
    pub half_open_probes: u32,
    /// Whether half-open probes ramp up.
    pub progressive_half_open: bool,
    /// How long a breaker stays open.
    pub break_duration: BreakDuration,
}

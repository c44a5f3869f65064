//! What a variant's run looked like over time, for the plots of the HTML report
//! ([`crate::html`]).
//!
//! A [`Timeline`] holds, for one client configuration: the latency of every logical request
//! (sorted), per [`BIN`] (100 ms) the requests that ended in a success, a failure or a refusal
//! and the calls that reached the server, the server's outage and slowdown windows, and the
//! breaker's state changes. Time runs from the server's start, the instant its windows are
//! measured from.
//!
//! Recording it does not disturb the measurements:
//!
//! - the server counts arriving calls in [`CallBins`], preallocated when it starts: one relaxed
//!   atomic add per call at an instant the handler reads anyway, no lock, no allocation;
//! - the requests' outcomes come from the [`Record`]s the load generators keep anyway (each
//!   notes when it ended, an instant the caller reads anyway), binned after the run;
//! - breaker transitions are rare (a handful per run) and go to a [`BreakerLog`] from the
//!   breaker's `on_transition` hook, never on a call that does not change the state.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_lab::load::{Outcome, Record};
//! use steadfast_lab::timeline::Timeline;
//! let t0 = tokio::time::Instant::now();
//! let record = |id, ended_ms, outcome| Record {
//!     id,
//!     latency: Duration::from_millis(5),
//!     ended: t0 + Duration::from_millis(ended_ms),
//!     outcome,
//! };
//! let records = [
//!     record(0, 20, Outcome::Succeeded),
//!     record(1, 150, Outcome::Failed),
//!     record(2, 160, Outcome::Refused),
//! ];
//! let timeline = Timeline::from_records(t0, &records);
//! assert_eq!(timeline.successes, [1, 0]);
//! assert_eq!(timeline.failures, [0, 1]);
//! assert_eq!(timeline.refusals, [0, 1]);
//! assert_eq!(timeline.latencies_ms, [5.0, 5.0, 5.0]);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::breaker::{BreakerState, Transition};
use tokio::time::Instant;

use crate::load::{Outcome, Record};

/// The width of a time series' bin.
pub const BIN: Duration = Duration::from_millis(100);

/// How many bins a server preallocates: 10 minutes, longer than any scenario's run (calls
/// after that are counted in the last bin).
pub const MAX_BINS: usize = 6_000;

/// The index of the bin holding `at`, for a series starting at `origin` (instants before it go
/// to bin 0, those past [`MAX_BINS`] to the last one).
fn bin_of(origin: Instant, at: Instant) -> usize {
    bin_index(at.saturating_duration_since(origin))
}

/// The index of the bin holding `since` after the origin (at most the last of [`MAX_BINS`]).
fn bin_index(since: Duration) -> usize {
    let index = since.as_nanos() / BIN.as_nanos();
    usize::try_from(index).map_or(MAX_BINS - 1, |i| i.min(MAX_BINS - 1))
}

/// Calls per [`BIN`] since an origin, counted without a lock or an allocation: the bins are
/// allocated once, up front.
///
/// ```
/// use std::time::Duration;
/// use steadfast_lab::timeline::CallBins;
/// let t0 = tokio::time::Instant::now();
/// let bins = CallBins::new();
/// bins.record(t0, t0 + Duration::from_millis(50));
/// bins.record(t0, t0 + Duration::from_millis(250));
/// assert_eq!(bins.counts(), [1, 0, 1]);
/// ```
#[derive(Debug)]
pub struct CallBins {
    bins: Box<[AtomicU64]>,
}

impl CallBins {
    /// [`MAX_BINS`] empty bins.
    pub fn new() -> Self {
        CallBins {
            bins: (0..MAX_BINS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One call at `at`, binned from `origin`.
    pub fn record(&self, origin: Instant, at: Instant) {
        self.bins[bin_of(origin, at)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, up to the last non-empty bin.
    pub fn counts(&self) -> Vec<u64> {
        let mut counts: Vec<u64> = self
            .bins
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let len = counts.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
        counts.truncate(len);
        counts
    }
}

impl Default for CallBins {
    fn default() -> Self {
        Self::new()
    }
}

/// What kind of fault window a plot shades.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// The server is hard down.
    Outage,
    /// The server is slower.
    Slowdown,
}

/// A fault window, measured from the timeline's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// What happens in it.
    pub kind: WindowKind,
    /// When it opens.
    pub start: Duration,
    /// When it closes.
    pub end: Duration,
}

/// A breaker's state changes, from its `on_transition` hook. The vector is allocated up front
/// and only a transition (a handful per run) takes its lock.
///
/// ```
/// use steadfast_lab::timeline::BreakerLog;
/// use steadfast_layers::breaker::CircuitBreakerLayer;
/// let log = BreakerLog::new();
/// let layer = CircuitBreakerLayer::builder().on_transition(log.recorder()).build()?;
/// # drop(layer);
/// assert!(log.changes(tokio::time::Instant::now()).is_empty());
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BreakerLog {
    changes: Arc<Mutex<Vec<(Instant, BreakerState)>>>,
}

impl BreakerLog {
    /// An empty log.
    pub fn new() -> Self {
        BreakerLog {
            changes: Arc::new(Mutex::new(Vec::with_capacity(256))),
        }
    }

    /// The hook to give the breaker's `on_transition`: notes when it entered which state.
    pub fn recorder(&self) -> impl Fn(&Transition) + Send + Sync + 'static {
        let changes = Arc::clone(&self.changes);
        move |t: &Transition| {
            let now = Instant::now();
            changes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((now, t.to));
        }
    }

    /// The state changes so far, measured from `origin`.
    pub fn changes(&self, origin: Instant) -> Vec<(Duration, BreakerState)> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(at, state)| (at.saturating_duration_since(origin), *state))
            .collect()
    }
}

impl Default for BreakerLog {
    fn default() -> Self {
        Self::new()
    }
}

/// One variant's run over time (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// Every logical request's latency in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    /// Requests that ended with a success, per [`BIN`].
    pub successes: Vec<u64>,
    /// Requests that ended with a failure the server (or the network) caused, per bin.
    pub failures: Vec<u64>,
    /// Requests a client-side layer refused (an open breaker, a limit, a shed), per bin.
    pub refusals: Vec<u64>,
    /// Calls that reached the server, every attempt, per bin (empty when not measured).
    pub server_calls: Vec<u64>,
    /// The server's outage and slowdown windows.
    pub windows: Vec<Window>,
    /// The breaker's state changes (empty without a breaker).
    pub breaker: Vec<(Duration, BreakerState)>,
}

impl Timeline {
    /// The requests' latencies and outcomes per bin, time measured from `origin`.
    pub fn from_records(origin: Instant, records: &[Record]) -> Timeline {
        Timeline::from_outcomes(records.iter().map(|r| {
            (
                r.latency,
                r.ended.saturating_duration_since(origin),
                r.outcome,
            )
        }))
    }

    /// The same from `(latency, when it ended since the origin, outcome)` triples, for runs
    /// whose requests are not [`Record`]s (sagas, read back from their log).
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_lab::load::Outcome;
    /// use steadfast_lab::timeline::Timeline;
    /// let ms = Duration::from_millis;
    /// let t = Timeline::from_outcomes([(ms(40), ms(240), Outcome::Failed)]);
    /// assert_eq!(t.failures, [0, 0, 1]);
    /// assert_eq!(t.latencies_ms, [40.0]);
    /// ```
    pub fn from_outcomes(
        outcomes: impl IntoIterator<Item = (Duration, Duration, Outcome)>,
    ) -> Timeline {
        let mut t = Timeline::default();
        for (latency, ended, outcome) in outcomes {
            t.latencies_ms.push(latency.as_secs_f64() * 1e3);
            let bin = bin_index(ended);
            if t.successes.len() <= bin {
                for series in [&mut t.successes, &mut t.failures, &mut t.refusals] {
                    series.resize(bin + 1, 0);
                }
            }
            let series = match outcome {
                Outcome::Succeeded => &mut t.successes,
                Outcome::Failed => &mut t.failures,
                Outcome::Refused => &mut t.refusals,
            };
            series[bin] += 1;
        }
        t.latencies_ms.sort_unstable_by(f64::total_cmp);
        t
    }

    /// The server's calls per bin (the timeline's origin must be the instant they are counted
    /// from).
    pub fn server_calls(mut self, calls: Vec<u64>) -> Self {
        self.server_calls = calls;
        self
    }

    /// The fault windows to shade.
    pub fn windows(mut self, windows: Vec<Window>) -> Self {
        self.windows = windows;
        self
    }

    /// The breaker's state changes; a breaker starts closed, so a change at the origin is
    /// added when the first one is later (a breaker that never changed shows closed throughout).
    pub fn breaker(mut self, mut changes: Vec<(Duration, BreakerState)>) -> Self {
        if changes.first().is_none_or(|(at, _)| !at.is_zero()) {
            changes.insert(0, (Duration::ZERO, BreakerState::Closed));
        }
        self.breaker = changes;
        self
    }

    /// How many bins the longest series has.
    pub fn bins(&self) -> usize {
        [
            &self.successes,
            &self.failures,
            &self.refusals,
            &self.server_calls,
        ]
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_clamp_at_both_ends() {
        let t0 = Instant::now();
        assert_eq!(bin_of(t0 + Duration::from_secs(1), t0), 0);
        assert_eq!(bin_of(t0, t0 + Duration::from_millis(99)), 0);
        assert_eq!(bin_of(t0, t0 + Duration::from_millis(100)), 1);
        assert_eq!(bin_of(t0, t0 + Duration::from_secs(100_000)), MAX_BINS - 1);
    }

    #[test]
    fn a_breaker_starts_closed() {
        let ms = Duration::from_millis;
        let t = Timeline::default().breaker(vec![(ms(300), BreakerState::Open)]);
        assert_eq!(
            t.breaker,
            [(ms(0), BreakerState::Closed), (ms(300), BreakerState::Open)]
        );
        let quiet = Timeline::default().breaker(Vec::new());
        assert_eq!(quiet.breaker, [(ms(0), BreakerState::Closed)]);
    }

    #[test]
    fn empty_bins_read_empty() {
        assert!(CallBins::new().counts().is_empty());
        let t = Timeline::from_records(Instant::now(), &[]);
        assert_eq!(t.bins(), 0);
        assert!(t.latencies_ms.is_empty());
    }
}

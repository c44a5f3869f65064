use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::BreakerState;

/// The circuit breaker refused a call without sending it.
///
/// It says in which state the breaker was ([`CircuitOpen::state`]) and, when the breaker is open
/// on its own, how long until a probe is allowed ([`CircuitOpen::remaining`]). There is no such
/// time when the breaker was forced open through its
/// [`BreakerHandle`](super::BreakerHandle), nor when it is half-open with every probe in flight
/// (the probes' outcomes decide).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::{BreakerState, CircuitOpen};
/// let e = CircuitOpen::new(BreakerState::Open, Some(Duration::from_secs(12)));
/// assert_eq!(e.remaining(), Some(Duration::from_secs(12)));
/// assert_eq!(e.state(), BreakerState::Open);
/// assert_eq!(e.to_string(), "circuit open: next probe allowed in 12s");
/// ```
///
/// A breaker that refuses a call records *when* its break ends, not how long is left: the
/// refusal then needs no clock read (see [`BreakTimer`](super::BreakTimer)), and
/// [`remaining`](CircuitOpen::remaining) is worked out against the clock when it is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    state: BreakerState,
    probe: Probe,
}

/// When the next probe is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Unknown,
    After(Duration),
    At(Instant),
}

impl CircuitOpen {
    /// A refusal in `state`, `remaining` before a probe is allowed.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitOpen};
    /// let e = CircuitOpen::new(BreakerState::ForcedOpen, None);
    /// assert_eq!(e.to_string(), "circuit forced open");
    /// ```
    pub const fn new(state: BreakerState, remaining: Option<Duration>) -> Self {
        let probe = match remaining {
            Some(d) => Probe::After(d),
            None => Probe::Unknown,
        };
        Self { state, probe }
    }

    /// A refusal in `state` by a breaker whose next probe is allowed at `at`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakerState, CircuitOpen};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let at = tokio::time::Instant::now() + Duration::from_secs(5);
    /// let e = CircuitOpen::until(BreakerState::Open, at);
    /// assert_eq!(e.probe_at(), Some(at));
    /// tokio::time::advance(Duration::from_secs(2)).await;
    /// assert_eq!(e.remaining(), Some(Duration::from_secs(3)));
    /// # });
    /// ```
    pub const fn until(state: BreakerState, at: Instant) -> Self {
        Self {
            state,
            probe: Probe::At(at),
        }
    }

    /// The breaker's state when it refused the call: [`BreakerState::Open`],
    /// [`BreakerState::HalfOpen`] (every probe taken) or [`BreakerState::ForcedOpen`].
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitOpen};
    /// assert_eq!(CircuitOpen::new(BreakerState::HalfOpen, None).state(), BreakerState::HalfOpen);
    /// ```
    pub const fn state(&self) -> BreakerState {
        self.state
    }

    /// How long until the breaker lets a probe through, when known. For a refusal made with the
    /// instant of the next probe ([`CircuitOpen::until`], as the breaker does), this reads the
    /// clock and is zero once that instant has passed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakerState, CircuitOpen};
    /// let e = CircuitOpen::new(BreakerState::Open, Some(Duration::from_millis(1500)));
    /// assert_eq!(e.remaining(), Some(Duration::from_millis(1500)));
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        match self.probe {
            Probe::Unknown => None,
            Probe::After(d) => Some(d),
            Probe::At(at) => Some(at.saturating_duration_since(Instant::now())),
        }
    }

    /// The instant the breaker lets a probe through, when the refusal carries one (refusals by an
    /// open breaker do; [`CircuitOpen::new`] carries a duration instead, and gives `None` here).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakerState, CircuitOpen};
    /// let e = CircuitOpen::new(BreakerState::Open, Some(Duration::from_millis(1500)));
    /// assert_eq!(e.probe_at(), None);
    /// ```
    pub const fn probe_at(&self) -> Option<Instant> {
        match self.probe {
            Probe::At(at) => Some(at),
            _ => None,
        }
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.remaining()) {
            (BreakerState::ForcedOpen, _) => f.write_str("circuit forced open"),
            (BreakerState::HalfOpen, _) => {
                f.write_str("circuit half-open: every probe is in flight")
            }
            (_, Some(d)) => write!(f, "circuit open: next probe allowed in {d:?}"),
            (_, None) => f.write_str("circuit open"),
        }
    }
}

impl std::error::Error for CircuitOpen {}

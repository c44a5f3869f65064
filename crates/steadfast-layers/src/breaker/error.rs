use std::fmt;
use std::time::Duration;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    state: BreakerState,
    remaining: Option<Duration>,
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
        Self { state, remaining }
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

    /// How long until the breaker lets a probe through, when known.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakerState, CircuitOpen};
    /// let e = CircuitOpen::new(BreakerState::Open, Some(Duration::from_millis(1500)));
    /// assert_eq!(e.remaining(), Some(Duration::from_millis(1500)));
    /// ```
    pub const fn remaining(&self) -> Option<Duration> {
        self.remaining
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.remaining) {
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

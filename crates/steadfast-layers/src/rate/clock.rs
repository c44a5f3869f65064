use governor::clock::{Clock, ReasonablyRealtime};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A [`governor`] clock that reads `tokio::time`: in production it is the monotonic clock
/// (`std::time::Instant`, through tokio); under a paused tokio clock (`start_paused`,
/// `tokio::time::advance`) the rate limit follows the paused time, so tests are exact and never
/// sleep.
///
/// Readings are nanoseconds since the clock was created.
///
/// ```
/// use std::time::Duration;
/// use governor::clock::Clock;
/// use steadfast_layers::rate::TokioClock;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let clock = TokioClock::new();
/// let t0 = clock.now();
/// tokio::time::advance(Duration::from_millis(250)).await;
/// assert_eq!(Duration::from(clock.now()) - Duration::from(t0), Duration::from_millis(250));
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        Nanos::new(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl ReasonablyRealtime for TokioClock {}

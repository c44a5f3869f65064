//! The error every backpressure layer returns when it turns a call away: [`Overloaded`].
//!
//! Concurrency limits ([`limit`](crate::limit), [`adaptive_limit`](crate::adaptive_limit)), the
//! [`bulkhead`](crate::bulkhead), the rate limit ([`rate`](crate::rate)), client-side throttling
//! ([`adaptive_throttle`](crate::adaptive_throttle)) and load shedding ([`shed`](crate::shed)) all fail a call they
//! refuse with the same noun, so one `err.is::<Overloaded>()` (or one `HandleErrorLayer` mapping
//! it to `503`/`429`/`RESOURCE_EXHAUSTED`) covers every one of them. The
//! [`reason`](Overloaded::reason) says which rule refused the call, and the rate limit says when
//! to try again ([`retry_after`](Overloaded::retry_after)).
//!
//! A call refused by any of these layers never reached the inner service.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_layers::BoxError;
//! use steadfast_layers::overload::{OverloadReason, Overloaded};
//!
//! let err: BoxError = Box::new(Overloaded::rate_limited("rate", Duration::from_millis(40)));
//! let o = err.downcast_ref::<Overloaded>().unwrap();
//! assert_eq!(o.reason(), OverloadReason::RateLimited);
//! assert_eq!(o.retry_after(), Some(Duration::from_millis(40)));
//! assert_eq!(o.layer(), "rate");
//! ```

use std::fmt;
use std::time::Duration;

/// A backpressure layer refused the call; the inner service was not called.
///
/// ```
/// use steadfast_layers::overload::{OverloadReason, Overloaded};
/// let e = Overloaded::new("limit", OverloadReason::AtCapacity);
/// assert_eq!(e.reason().label(), "at_capacity");
/// assert_eq!(e.to_string(), "overloaded (limit): concurrency limit reached");
/// assert_eq!(e.retry_after(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overloaded {
    layer: &'static str,
    reason: OverloadReason,
    retry_after: Option<Duration>,
}

/// Why a backpressure layer refused a call. Its [`label`](OverloadReason::label) is the `reason`
/// attribute of the layer's `rejected` metric.
///
/// ```
/// use steadfast_layers::overload::OverloadReason;
/// assert_eq!(OverloadReason::QueueFull.label(), "queue_full");
/// assert_eq!(OverloadReason::WaitTimeout.to_string(), "gave up waiting for capacity");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverloadReason {
    /// Every permit is in use and the layer does not wait (a concurrency limit in fail-fast
    /// mode, an adaptive limit, a bulkhead with no queue).
    AtCapacity,
    /// The call waited for capacity as long as it was allowed to.
    WaitTimeout,
    /// The waiting queue is full.
    QueueFull,
    /// The rate limit has no cell left for this call.
    RateLimited,
    /// Client-side adaptive throttling rejected the call locally.
    Throttled,
    /// The inner service was not ready (load shedding).
    NotReady,
    /// The layer tracks as many keys as it may, all of them busy: a new key cannot be admitted
    /// (a keyed concurrency limit, rate limit or circuit breaker; see [`keyed`](crate::keyed)).
    TooManyKeys,
}

impl OverloadReason {
    /// A short, low-cardinality label for metrics and traces.
    ///
    /// ```
    /// use steadfast_layers::overload::OverloadReason;
    /// assert_eq!(OverloadReason::RateLimited.label(), "rate_limited");
    /// ```
    pub const fn label(&self) -> &'static str {
        match self {
            OverloadReason::AtCapacity => "at_capacity",
            OverloadReason::WaitTimeout => "wait_timeout",
            OverloadReason::QueueFull => "queue_full",
            OverloadReason::RateLimited => "rate_limited",
            OverloadReason::Throttled => "throttled",
            OverloadReason::NotReady => "not_ready",
            OverloadReason::TooManyKeys => "too_many_keys",
        }
    }
}

impl fmt::Display for OverloadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OverloadReason::AtCapacity => "concurrency limit reached",
            OverloadReason::WaitTimeout => "gave up waiting for capacity",
            OverloadReason::QueueFull => "waiting queue full",
            OverloadReason::RateLimited => "rate limit exceeded",
            OverloadReason::Throttled => "throttled locally (client-side adaptive throttling)",
            OverloadReason::NotReady => "inner service not ready (load shed)",
            OverloadReason::TooManyKeys => "too many keys tracked",
        })
    }
}

impl Overloaded {
    /// A refusal by `layer` (its module name: `"limit"`, `"bulkhead"`, `"adaptive_limit"`,
    /// `"adaptive_throttle"`, ...; `"breaker"` for a keyed breaker's full key table) for
    /// `reason`.
    ///
    /// ```
    /// use steadfast_layers::overload::{OverloadReason, Overloaded};
    /// assert_eq!(Overloaded::new("shed", OverloadReason::NotReady).layer(), "shed");
    /// ```
    pub const fn new(layer: &'static str, reason: OverloadReason) -> Self {
        Self {
            layer,
            reason,
            retry_after: None,
        }
    }

    /// A rate-limit refusal: a cell is available again after `retry_after`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_layers::overload::Overloaded;
    /// let e = Overloaded::rate_limited("rate", Duration::from_secs(1));
    /// assert_eq!(e.to_string(), "overloaded (rate): rate limit exceeded; retry after 1s");
    /// ```
    pub const fn rate_limited(layer: &'static str, retry_after: Duration) -> Self {
        Self {
            layer,
            reason: OverloadReason::RateLimited,
            retry_after: Some(retry_after),
        }
    }

    /// Which layer refused the call (its module name).
    pub const fn layer(&self) -> &'static str {
        self.layer
    }

    /// Why the call was refused.
    pub const fn reason(&self) -> OverloadReason {
        self.reason
    }

    /// How long until the layer would accept the call, when it knows (the rate limit does).
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overloaded ({}): {}", self.layer, self.reason)?;
        if let Some(after) = self.retry_after {
            write!(f, "; retry after {after:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Overloaded {}

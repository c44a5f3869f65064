//! Retry budgets: caps on how many retries (and hedges) a client may add, shared by every clone of
//! a layer and by every layer given the same `Arc`.
//!
//! - [`RatioBudget`] is Finagle's budget: over any `ttl` window, retries may not exceed
//!   `min_retries_per_sec * ttl + ratio * requests`. Exact to one part per million
//!   (tower's `TpsBudget` rounds the percent and over-allows, tower#857), lock-free.
//! - [`TokenBucket`] is gRPC A6 retry throttling: a failure takes a token, a success returns
//!   `token_ratio`, and retries are allowed only while more than half the tokens remain.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use steadfast_layers::retry::{RatioBudget, RetryBudget, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
//! let budget = Arc::new(
//!     RatioBudget::builder()
//!         .ratio(0.1)
//!         .min_retries_per_sec(0)
//!         .ttl(Duration::from_secs(10))
//!         .build()?,
//! );
//! for _ in 0..50 { budget.deposit(); }
//! let allowed = (0..100).filter(|_| budget.withdraw()).count();
//! assert_eq!(allowed, 5); // exactly 10% of 50 requests
//! // Share it between layers:
//! let layer = RetryLayer::builder().budget(budget.clone()).build()?;
//! # let _ = layer; Ok(()) }
//! ```

use std::fmt;

use crate::classify::Outcome;

mod ratio;
mod token;

pub use ratio::{RatioBudget, RatioBudgetBuilder};
pub use token::{TokenBucket, TokenBucketBuilder};

/// A cap on retries, shared across threads without a lock on the success path.
///
/// The retry layer calls [`deposit`](RetryBudget::deposit) once per logical request,
/// [`record`](RetryBudget::record) once per attempt outcome, and [`withdraw`](RetryBudget::withdraw)
/// before each retry (hedging layers call it before each hedge).
///
/// ```
/// use steadfast_layers::classify::Outcome;
/// use steadfast_layers::retry::RetryBudget;
/// // A budget that allows nothing: retries disabled.
/// #[derive(Debug)]
/// struct Never;
/// impl RetryBudget for Never {
///     fn deposit(&self) {}
///     fn withdraw(&self) -> bool { false }
///     fn balance(&self) -> f64 { 0.0 }
/// }
/// assert!(!Never.withdraw());
/// Never.record(&Outcome::Success);
/// ```
pub trait RetryBudget: Send + Sync + fmt::Debug {
    /// A new logical request started (not called for retries).
    fn deposit(&self);

    /// An attempt finished with `outcome`. The default ignores it.
    fn record(&self, outcome: &Outcome) {
        let _ = outcome;
    }

    /// Asks to send one more attempt; `true` grants it (and spends budget where the kind spends).
    fn withdraw(&self) -> bool;

    /// How many retries the budget would currently grant, for telemetry.
    fn balance(&self) -> f64;
}

use std::sync::atomic::{AtomicI64, Ordering};

use super::RetryBudget;
use crate::classify::Outcome;
use crate::error::{check_f64, ConfigError};

/// gRPC A6 retry throttling: a token bucket that failures drain and successes refill.
///
/// Starts full at `max_tokens`. Each retryable or pushed-back failure takes one token, each
/// success returns `token_ratio` (both kept to three decimal places, as A6 specifies), and a
/// retry or hedge is allowed only while more than `max_tokens / 2` remain. Withdrawing does not
/// spend tokens. No clock reads at all; one atomic operation per outcome.
///
/// ```
/// use steadfast_layers::classify::Outcome;
/// use steadfast_layers::retry::{RetryBudget, TokenBucket};
/// let b = TokenBucket::builder().max_tokens(10.0).token_ratio(0.1).build()?;
/// assert!(b.withdraw());
/// for _ in 0..5 { b.record(&Outcome::retryable("unavailable")); }
/// assert!(!b.withdraw()); // 5 tokens left: not more than half
/// for _ in 0..10 { b.record(&Outcome::Success); }
/// assert!(b.withdraw()); // 6 tokens
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    milli_tokens: AtomicI64,
    max_milli: i64,
    ratio_milli: i64,
}

impl TokenBucket {
    /// A builder with A6's example values: 10 tokens, ratio 0.1.
    ///
    /// ```
    /// # use steadfast_layers::retry::{RetryBudget, TokenBucket};
    /// let b = TokenBucket::builder().build()?;
    /// assert_eq!(b.tokens(), 10.0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> TokenBucketBuilder {
        TokenBucketBuilder {
            max_tokens: 10.0,
            token_ratio: 0.1,
        }
    }

    /// Tokens currently in the bucket.
    ///
    /// ```
    /// # use steadfast_layers::retry::TokenBucket;
    /// assert_eq!(TokenBucket::builder().max_tokens(4.0).build()?.tokens(), 4.0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn tokens(&self) -> f64 {
        self.milli_tokens.load(Ordering::Acquire) as f64 / 1000.0
    }
}

impl RetryBudget for TokenBucket {
    #[inline]
    fn deposit(&self) {}

    fn record(&self, outcome: &Outcome) {
        let delta = match outcome {
            Outcome::Success => self.ratio_milli,
            Outcome::Retryable { .. } | Outcome::Pushback { .. } => -1000,
            _ => return,
        };
        let max = self.max_milli;
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                let next = (t + delta).clamp(0, max);
                (next != t).then_some(next)
            });
    }

    fn withdraw(&self) -> bool {
        self.milli_tokens.load(Ordering::Acquire) * 2 > self.max_milli
    }

    fn balance(&self) -> f64 {
        self.tokens()
    }
}

/// Builds a [`TokenBucket`], validating its configuration.
///
/// ```
/// # use steadfast_layers::retry::TokenBucket;
/// assert!(TokenBucket::builder().max_tokens(0.0).build().is_err());
/// assert!(TokenBucket::builder().token_ratio(f64::NAN).build().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct TokenBucketBuilder {
    max_tokens: f64,
    token_ratio: f64,
}

impl TokenBucketBuilder {
    /// The bucket's size, in `(0, 1000]` (A6's bounds).
    ///
    /// ```
    /// # use steadfast_layers::retry::TokenBucket;
    /// assert!(TokenBucket::builder().max_tokens(1001.0).build().is_err());
    /// ```
    pub fn max_tokens(mut self, n: f64) -> Self {
        self.max_tokens = n;
        self
    }

    /// Tokens returned per success, in `[0.001, max_tokens]`, kept to three decimal places.
    ///
    /// ```
    /// # use steadfast_layers::retry::TokenBucket;
    /// assert!(TokenBucket::builder().token_ratio(0.0).build().is_err());
    /// ```
    pub fn token_ratio(mut self, r: f64) -> Self {
        self.token_ratio = r;
        self
    }

    /// Validates and builds the bucket, full.
    ///
    /// ```
    /// # use steadfast_layers::retry::TokenBucket;
    /// assert!(TokenBucket::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<TokenBucket, ConfigError> {
        let max = check_f64("max_tokens", self.max_tokens, 0.001, 1000.0, "(0, 1000]")?;
        let ratio = check_f64(
            "token_ratio",
            self.token_ratio,
            0.001,
            max,
            "[0.001, max_tokens]",
        )?;
        let max_milli = (max * 1000.0).trunc() as i64;
        Ok(TokenBucket {
            milli_tokens: AtomicI64::new(max_milli),
            max_milli,
            ratio_milli: (ratio * 1000.0).trunc() as i64,
        })
    }
}

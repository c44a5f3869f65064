use std::fmt;
use std::future::{ready, Future, Ready};

use crate::BoxError;

/// What the fallback is given: why it runs, and the failed result (the error, or the failed
/// response) it replaces.
///
/// ```
/// use steadfast_layers::fallback::Failure;
/// let f: Failure<u16> = Failure::new("unavailable", Ok(503));
/// assert_eq!(f.reason(), "unavailable");
/// assert_eq!(f.response(), Some(&503));
/// assert!(f.error().is_none());
/// assert_eq!(f.into_result().unwrap(), 503);
/// ```
pub struct Failure<Res> {
    reason: &'static str,
    result: Result<Res, crate::BoxError>,
}

impl<Res> fmt::Debug for Failure<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("reason", &self.reason)
            .field("error", &self.result.as_ref().err())
            .finish_non_exhaustive()
    }
}

impl<Res> Failure<Res> {
    /// A failure labelled `reason` (what the layer builds; public for testing fallbacks).
    pub fn new(reason: &'static str, result: Result<Res, BoxError>) -> Self {
        Self { reason, result }
    }

    /// The policy's label (`"deadline"`, `"timeout"`, a classifier's reason...).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The error, when the call failed with one.
    ///
    /// ```
    /// # use steadfast_layers::fallback::Failure;
    /// let f: Failure<()> = Failure::new("error", Err("refused".into()));
    /// assert_eq!(f.error().unwrap().to_string(), "refused");
    /// ```
    pub fn error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.result.as_ref().err().map(|e| &**e)
    }

    /// The response, when the call returned one that the policy called a failure.
    pub fn response(&self) -> Option<&Res> {
        self.result.as_ref().ok()
    }

    /// The failed result itself.
    pub fn into_result(self) -> Result<Res, BoxError> {
        self.result
    }
}

/// Produces the alternative response. Built from a function with
/// [`FallbackLayer::from_fn`](super::FallbackLayer::from_fn) (synchronous, infallible) or
/// [`FallbackLayer::from_async_fn`](super::FallbackLayer::from_async_fn) (asynchronous,
/// fallible); implement it for anything else.
///
/// ```
/// use steadfast_layers::fallback::{Failure, FallbackAction, SyncFallback};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let stale = SyncFallback::new(|_f: Failure<&'static str>| "stale value");
/// let out = stale.fallback(Failure::new("timeout", Err("slow".into()))).await;
/// assert_eq!(out.unwrap(), "stale value");
/// # }
/// ```
pub trait FallbackAction<Res> {
    /// The future of the alternative response.
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Produces the alternative to `failure`.
    fn fallback(&self, failure: Failure<Res>) -> Self::Future;
}

/// A synchronous, infallible fallback: `Fn(Failure<Res>) -> Res`.
///
/// ```
/// use steadfast_layers::fallback::{Failure, FallbackAction, SyncFallback};
/// let zero = SyncFallback::new(|_f: Failure<u32>| 0);
/// # let _ = zero;
/// ```
#[derive(Clone, Copy)]
pub struct SyncFallback<F>(F);

impl<F> SyncFallback<F> {
    /// Wraps `f`.
    pub const fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F> fmt::Debug for SyncFallback<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncFallback")
    }
}

impl<F, Res> FallbackAction<Res> for SyncFallback<F>
where
    F: Fn(Failure<Res>) -> Res,
{
    type Future = Ready<Result<Res, BoxError>>;

    fn fallback(&self, failure: Failure<Res>) -> Self::Future {
        ready(Ok((self.0)(failure)))
    }
}

/// An asynchronous fallback that may fail: `Fn(Failure<Res>) -> impl Future<Output =
/// Result<Res, BoxError>>` (a cache, a secondary region, a degraded computation).
///
/// ```
/// use steadfast_layers::fallback::{AsyncFallback, Failure, FallbackAction};
/// use steadfast_layers::BoxError;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let secondary = AsyncFallback::new(|f: Failure<String>| async move {
///     Ok::<_, BoxError>(format!("from the secondary after {}", f.reason()))
/// });
/// let out = secondary.fallback(Failure::new("timeout", Err("slow".into()))).await;
/// assert_eq!(out.unwrap(), "from the secondary after timeout");
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct AsyncFallback<F>(F);

impl<F> AsyncFallback<F> {
    /// Wraps `f`.
    pub const fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F> fmt::Debug for AsyncFallback<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncFallback")
    }
}

impl<F, Fut, Res> FallbackAction<Res> for AsyncFallback<F>
where
    F: Fn(Failure<Res>) -> Fut,
    Fut: Future<Output = Result<Res, BoxError>>,
{
    type Future = Fut;

    fn fallback(&self, failure: Failure<Res>) -> Self::Future {
        (self.0)(failure)
    }
}

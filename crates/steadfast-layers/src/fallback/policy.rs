use crate::classify::Classifier;
use crate::BoxError;

/// Decides which results the fallback replaces, and labels why.
///
/// The inner service's error is boxed first, so policies see `Result<Res, BoxError>` and match
/// this crate's noun errors with `is::<T>()`. Provided: [`AnyError`] (the default), [`OnError`]
/// (a predicate on the error), [`OnFailure`] (a [`Classifier`]: a `503` inside `Ok` can trigger
/// it) and [`Or`] to combine two; closures `Fn(&Result<Res, BoxError>) -> Option<&'static str>`
/// implement it too.
///
/// ```
/// use steadfast_layers::deadline::DeadlineExceeded;
/// use steadfast_layers::fallback::{FallbackPolicy, OnError};
/// use steadfast_layers::BoxError;
///
/// let on_deadline = OnError(|e: &BoxError| e.is::<DeadlineExceeded>());
/// let late: Result<u16, BoxError> = Err(Box::new(DeadlineExceeded::new()));
/// let reset: Result<u16, BoxError> = Err("connection reset".into());
/// assert_eq!(on_deadline.check(&late), Some("deadline"));
/// assert_eq!(on_deadline.check(&reset), None);
/// assert_eq!(on_deadline.check(&Ok(200)), None);
/// ```
pub trait FallbackPolicy<Res> {
    /// `Some(reason)` to replace `result` with the fallback's (the reason is a short,
    /// low-cardinality label for metrics), `None` to return it as it is.
    fn check(&self, result: &Result<Res, BoxError>) -> Option<&'static str>;
}

impl<F, Res> FallbackPolicy<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> Option<&'static str>,
{
    fn check(&self, result: &Result<Res, BoxError>) -> Option<&'static str> {
        self(result)
    }
}

/// The default policy: every error falls back, no response does. Labelled by
/// [`error_reason`].
///
/// ```
/// use steadfast_layers::fallback::{AnyError, FallbackPolicy};
/// use steadfast_layers::timeout::Elapsed;
/// use steadfast_layers::BoxError;
/// let slow: Result<(), BoxError> = Err(Box::new(Elapsed::new(std::time::Duration::from_secs(1))));
/// assert_eq!(AnyError.check(&slow), Some("timeout"));
/// assert_eq!(AnyError.check(&Ok(())), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyError;

impl<Res> FallbackPolicy<Res> for AnyError {
    fn check(&self, result: &Result<Res, BoxError>) -> Option<&'static str> {
        result.as_ref().err().map(error_reason)
    }
}

/// Falls back on the errors the predicate accepts (`Fn(&BoxError) -> bool`), labelled by
/// [`error_reason`]; responses never fall back.
///
/// ```
/// use steadfast_layers::fallback::{FallbackPolicy, OnError};
/// use steadfast_layers::BoxError;
/// let io_only = OnError(|e: &BoxError| e.is::<std::io::Error>());
/// let io: Result<(), BoxError> = Err(Box::new(std::io::Error::other("refused")));
/// assert_eq!(io_only.check(&io), Some("error"));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct OnError<F>(pub F);

impl<F, Res> FallbackPolicy<Res> for OnError<F>
where
    F: Fn(&BoxError) -> bool,
{
    fn check(&self, result: &Result<Res, BoxError>) -> Option<&'static str> {
        match result {
            Err(e) if (self.0)(e) => Some(error_reason(e)),
            _ => None,
        }
    }
}

/// Falls back on whatever the classifier calls a failure, responses included, labelled by the
/// classifier's reason.
///
/// ```
/// use steadfast_layers::classify::Outcome;
/// use steadfast_layers::fallback::{FallbackPolicy, OnFailure};
/// use steadfast_layers::BoxError;
/// let by_status = OnFailure(|r: &Result<u16, BoxError>| match r {
///     Ok(503) => Outcome::retryable("unavailable"),
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::retryable("error"),
/// });
/// assert_eq!(by_status.check(&Ok(503)), Some("unavailable"));
/// assert_eq!(by_status.check(&Ok(200)), None);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct OnFailure<C>(pub C);

impl<C, Res> FallbackPolicy<Res> for OnFailure<C>
where
    C: Classifier<Res, BoxError>,
{
    fn check(&self, result: &Result<Res, BoxError>) -> Option<&'static str> {
        let outcome = self.0.classify(result);
        outcome.is_failure().then(|| outcome.reason())
    }
}

/// Falls back when either policy says so (the first one's label wins).
///
/// ```
/// use steadfast_layers::deadline::DeadlineExceeded;
/// use steadfast_layers::fallback::{FallbackPolicy, OnError, OnFailure, Or};
/// use steadfast_layers::classify::Outcome;
/// use steadfast_layers::BoxError;
/// let p = Or(
///     OnError(|e: &BoxError| e.is::<DeadlineExceeded>()),
///     OnFailure(|r: &Result<u16, BoxError>| match r {
///         Ok(503) => Outcome::retryable("unavailable"),
///         _ => Outcome::Success,
///     }),
/// );
/// assert_eq!(p.check(&Ok(503)), Some("unavailable"));
/// assert_eq!(p.check(&Err(Box::new(DeadlineExceeded::new()))), Some("deadline"));
/// assert_eq!(p.check(&Err("other".into())), None);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Or<A, B>(pub A, pub B);

impl<A, B, Res> FallbackPolicy<Res> for Or<A, B>
where
    A: FallbackPolicy<Res>,
    B: FallbackPolicy<Res>,
{
    fn check(&self, result: &Result<Res, BoxError>) -> Option<&'static str> {
        self.0.check(result).or_else(|| self.1.check(result))
    }
}

/// A short label for an error, recognising this crate's noun errors: `"deadline"`
/// ([`DeadlineExceeded`](crate::deadline::DeadlineExceeded)), `"timeout"`
/// ([`Elapsed`](crate::timeout::Elapsed)), `"gave_up"` ([`GaveUp`](crate::retry::GaveUp)),
/// `"injected"` ([`InjectedFault`](crate::chaos::InjectedFault)), `"error"` for anything else.
///
/// ```
/// use steadfast_layers::deadline::DeadlineExceeded;
/// use steadfast_layers::fallback::error_reason;
/// use steadfast_layers::BoxError;
/// let e: BoxError = Box::new(DeadlineExceeded::new());
/// assert_eq!(error_reason(&e), "deadline");
/// assert_eq!(error_reason(&"anything".into()), "error");
/// ```
pub fn error_reason(err: &BoxError) -> &'static str {
    if err.is::<crate::deadline::DeadlineExceeded>() {
        "deadline"
    } else if err.is::<crate::timeout::Elapsed>() {
        "timeout"
    } else if err.is::<crate::retry::GaveUp>() {
        "gave_up"
    } else if err.is::<crate::chaos::InjectedFault>() {
        "injected"
    } else {
        "error"
    }
}

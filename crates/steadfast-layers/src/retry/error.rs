use std::fmt;

use super::NotReplayable;
use crate::BoxError;

/// A retry layer stopped retrying and the last attempt failed with an error.
///
/// It says why ([`GaveUp::reason`]), how many attempts were made, and carries the last attempt's
/// error as its [`source`](std::error::Error::source) ([`GaveUp::last_error`],
/// [`GaveUp::into_last_error`]): nothing is swallowed. When the last attempt produced a response
/// instead (a `503`, say), the retry layer returns that response and tells the classifier through
/// [`Classifier::on_give_up`](crate::classify::Classifier::on_give_up).
///
/// ```
/// use steadfast_layers::retry::{GaveUp, GiveUpReason};
/// let e = GaveUp::new(GiveUpReason::BudgetExhausted, 2, Some("connection refused".into()));
/// assert_eq!(e.attempts(), 2);
/// assert_eq!(e.reason(), &GiveUpReason::BudgetExhausted);
/// assert_eq!(e.to_string(), "gave up after 2 attempts: retry budget exhausted; last error: connection refused");
/// assert_eq!(e.last_error().unwrap().to_string(), "connection refused");
/// // The retry layer also notes how the classifier labelled the last failure:
/// let e = e.with_last_reason("connect");
/// assert_eq!(e.last_reason(), Some("connect"));
/// assert_eq!(e.to_string(), "gave up after 2 attempts: retry budget exhausted; last error (connect): connection refused");
/// ```
#[derive(Debug)]
pub struct GaveUp {
    reason: GiveUpReason,
    attempts: u32,
    last: Option<BoxError>,
    last_reason: Option<&'static str>,
}

/// Why a retry layer stopped.
///
/// ```
/// use steadfast_layers::retry::GiveUpReason;
/// assert_eq!(GiveUpReason::Deadline.label(), "deadline");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The configured maximum number of attempts was reached.
    AttemptsExhausted,
    /// The retry budget (or throttle) did not allow another attempt.
    BudgetExhausted,
    /// The end-to-end deadline could not hold another attempt (after its backoff).
    Deadline,
    /// The classifier called the failure fatal; the label says why.
    Fatal(&'static str),
    /// The server asked not to retry (or to wait longer than the clock can hold).
    Pushback,
    /// The request could not be copied for another attempt.
    NotReplayable(NotReplayable),
}

impl GiveUpReason {
    /// A short label for metrics (`reason` attribute) and traces.
    ///
    /// ```
    /// use steadfast_layers::retry::GiveUpReason;
    /// assert_eq!(GiveUpReason::AttemptsExhausted.label(), "attempts_exhausted");
    /// ```
    pub const fn label(&self) -> &'static str {
        match self {
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::Fatal(_) => "fatal",
            GiveUpReason::Pushback => "pushback",
            GiveUpReason::NotReplayable(_) => "not_replayable",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::AttemptsExhausted => f.write_str("attempts exhausted"),
            GiveUpReason::BudgetExhausted => f.write_str("retry budget exhausted"),
            GiveUpReason::Deadline => f.write_str("the deadline cannot hold another attempt"),
            GiveUpReason::Fatal(why) => write!(f, "fatal failure ({why})"),
            GiveUpReason::Pushback => f.write_str("the server asked not to retry"),
            GiveUpReason::NotReplayable(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl GaveUp {
    /// A give-up after `attempts` attempts, the last of which failed with `last`.
    pub fn new(reason: GiveUpReason, attempts: u32, last: Option<BoxError>) -> Self {
        Self {
            reason,
            attempts,
            last,
            last_reason: None,
        }
    }

    /// The same give-up, noting the classifier's label for the last failure (`"circuit_open"`,
    /// `"timeout"`, `"connect"`...), which the message then names.
    ///
    /// ```
    /// # use steadfast_layers::retry::{GaveUp, GiveUpReason};
    /// let e = GaveUp::new(GiveUpReason::Deadline, 1, Some("circuit open".into())).with_last_reason("circuit_open");
    /// assert_eq!(e.last_reason(), Some("circuit_open"));
    /// ```
    pub fn with_last_reason(mut self, reason: &'static str) -> Self {
        self.last_reason = Some(reason);
        self
    }

    /// The classifier's label for the last failure, when the retry layer noted it.
    ///
    /// ```
    /// # use steadfast_layers::retry::{GaveUp, GiveUpReason};
    /// assert_eq!(GaveUp::new(GiveUpReason::Pushback, 1, None).last_reason(), None);
    /// ```
    pub fn last_reason(&self) -> Option<&'static str> {
        self.last_reason
    }

    /// Why the layer stopped.
    pub fn reason(&self) -> &GiveUpReason {
        &self.reason
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error.
    pub fn last_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.last.as_deref()
    }

    /// Takes the last attempt's error.
    pub fn into_last_error(self) -> Option<BoxError> {
        self.last
    }
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "gave up after {} attempt{s}: {}",
            self.attempts, self.reason
        )?;
        match (&self.last, self.last_reason) {
            (Some(last), Some(label)) => write!(f, "; last error ({label}): {last}"),
            (Some(last), None) => write!(f, "; last error: {last}"),
            (None, _) => Ok(()),
        }
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

//! Typed errors: what a step action returns ([`StepError`]) and what the orchestrator and the
//! stores return ([`Error`], with the nouns [`Fenced`], [`DefinitionChanged`] and [`Decode`]).

use std::fmt;

pub use steadfast_layers::ConfigError;

use crate::SagaId;

/// A boxed error, as returned by participants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a step action (or compensation) failed, which decides what the orchestrator does next.
///
/// ```
/// use steadfast_saga::{StepError, StepErrorKind};
/// let e = StepError::permanent("card declined");
/// assert_eq!(e.kind(), StepErrorKind::Permanent);
/// assert_eq!(e.to_string(), "permanent: card declined");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepErrorKind {
    /// The participant answered "not now": nothing was applied and the call may be retried.
    /// When the step's attempts run out, the step has failed.
    Transient,
    /// The participant answered "no": nothing was applied and retrying will not help. A forward
    /// step fails at once (its saga compensates); a compensation or a retriable step that fails
    /// this way puts its saga in `NeedsAttention`.
    Permanent,
    /// The outcome is not known: the effect may or may not have been applied (a timeout, a lost
    /// connection). The step is retried with the same step key; it is never assumed failed.
    Unknown,
}

impl StepErrorKind {
    /// A short label (`transient`, `permanent`, `unknown`).
    ///
    /// ```
    /// # use steadfast_saga::StepErrorKind;
    /// assert_eq!(StepErrorKind::Unknown.as_str(), "unknown");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            StepErrorKind::Transient => "transient",
            StepErrorKind::Permanent => "permanent",
            StepErrorKind::Unknown => "unknown",
        }
    }
}

/// The error a step action or compensation returns.
///
/// ```
/// use steadfast_saga::StepError;
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
/// let e = StepError::unknown(io);
/// assert!(e.to_string().contains("reset"));
/// ```
#[derive(Debug)]
pub struct StepError {
    kind: StepErrorKind,
    source: BoxError,
}

impl StepError {
    /// A failure with the given kind.
    ///
    /// ```
    /// # use steadfast_saga::{StepError, StepErrorKind};
    /// let e = StepError::new(StepErrorKind::Transient, "503");
    /// assert_eq!(e.kind(), StepErrorKind::Transient);
    /// ```
    pub fn new(kind: StepErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// Nothing applied, retry later ([`StepErrorKind::Transient`]).
    ///
    /// ```
    /// # use steadfast_saga::StepError;
    /// assert!(StepError::transient("busy").to_string().starts_with("transient"));
    /// ```
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self::new(StepErrorKind::Transient, source)
    }

    /// Nothing applied, do not retry ([`StepErrorKind::Permanent`]).
    ///
    /// ```
    /// # use steadfast_saga::StepError;
    /// assert!(StepError::permanent("no seats").to_string().contains("no seats"));
    /// ```
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self::new(StepErrorKind::Permanent, source)
    }

    /// The outcome is unknown ([`StepErrorKind::Unknown`]).
    ///
    /// ```
    /// # use steadfast_saga::{StepError, StepErrorKind};
    /// assert_eq!(StepError::unknown("timeout").kind(), StepErrorKind::Unknown);
    /// ```
    pub fn unknown(source: impl Into<BoxError>) -> Self {
        Self::new(StepErrorKind::Unknown, source)
    }

    /// The kind of failure.
    ///
    /// ```
    /// # use steadfast_saga::{StepError, StepErrorKind};
    /// assert_eq!(StepError::transient("x").kind(), StepErrorKind::Transient);
    /// ```
    pub fn kind(&self) -> StepErrorKind {
        self.kind
    }

    /// The participant's error.
    ///
    /// ```
    /// # use steadfast_saga::StepError;
    /// assert_eq!(StepError::transient("x").into_source().to_string(), "x");
    /// ```
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.source)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A write was refused because another orchestrator took the saga's lease over (its epoch is
/// newer). The orchestrator that gets it stops working on that saga at once.
///
/// ```
/// use steadfast_saga::{Fenced, SagaId};
/// let f = Fenced { saga: SagaId::nil(), epoch: 3 };
/// assert!(f.to_string().contains("epoch 3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    /// The saga.
    pub saga: SagaId,
    /// The lease epoch the refused write carried.
    pub epoch: i64,
}

impl fmt::Display for Fenced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saga {}: lease epoch {} was taken over by another orchestrator; write refused",
            self.saga, self.epoch
        )
    }
}

impl std::error::Error for Fenced {}

/// The saga was started under another version of its definition than the one registered now.
///
/// ```
/// use steadfast_saga::DefinitionChanged;
/// let e = DefinitionChanged { saga_type: "book-trip".into(), stored: 1, registered: 2 };
/// assert!(e.to_string().contains("version 1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionChanged {
    /// The saga type.
    pub saga_type: String,
    /// The version recorded when the saga started.
    pub stored: u32,
    /// The version registered with this orchestrator.
    pub registered: u32,
}

impl fmt::Display for DefinitionChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saga type {:?} was started with definition version {} but version {} is registered: \
             refusing to resume (register the old version under its own type, or resolve by hand)",
            self.saga_type, self.stored, self.registered
        )
    }
}

impl std::error::Error for DefinitionChanged {}

/// A stored row could not be decoded (corrupt JSON, an unknown status, a payload that does not
/// match the step's type).
///
/// ```
/// use steadfast_saga::Decode;
/// let e = Decode { saga: None, what: "input".into(), detail: "expected value".into() };
/// assert!(e.to_string().contains("input"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decode {
    /// The saga, when known.
    pub saga: Option<SagaId>,
    /// What could not be decoded.
    pub what: String,
    /// Why.
    pub detail: String,
}

impl fmt::Display for Decode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.saga {
            Some(id) => write!(f, "saga {id}: cannot decode {}: {}", self.what, self.detail),
            None => write!(f, "cannot decode {}: {}", self.what, self.detail),
        }
    }
}

impl std::error::Error for Decode {}

/// Why [`Orchestrator::cancel`](crate::Orchestrator::cancel) refused.
///
/// ```
/// use steadfast_saga::{CancelRefusal, SagaStatus};
/// assert_ne!(CancelRefusal::PastPivot, CancelRefusal::Ended(SagaStatus::Completed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelRefusal {
    /// The saga's pivot (or a retriable step) has started: it can only go forward.
    PastPivot,
    /// The saga has already ended (completed or compensated).
    Ended(crate::SagaStatus),
    /// The saga is compensating and its compensation is stuck: retry or resolve it.
    CompensationStuck,
}

/// A cancel was refused: the saga cannot be undone (any more), see [`CancelRefusal`].
///
/// ```
/// use steadfast_saga::{CancelRefusal, CancelRefused, SagaId};
/// let e = CancelRefused { saga: SagaId::nil(), refusal: CancelRefusal::PastPivot };
/// assert!(e.to_string().contains("can only go forward"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelRefused {
    /// The saga.
    pub saga: SagaId,
    /// Why.
    pub refusal: CancelRefusal,
}

impl fmt::Display for CancelRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saga {} cannot be cancelled: ", self.saga)?;
        match self.refusal {
            CancelRefusal::PastPivot => {
                f.write_str("its pivot (or a step after it) has started, so it can only go forward")
            }
            CancelRefusal::Ended(s) => write!(f, "it has already ended ({s})"),
            CancelRefusal::CompensationStuck => f.write_str(
                "it is compensating already and its compensation needs an operator \
                 (retry or resolve the stuck step)",
            ),
        }
    }
}

impl std::error::Error for CancelRefused {}

/// A transition that would start a new step was refused: an operator cancelled the saga. Its
/// run compensates instead.
///
/// ```
/// use steadfast_saga::{CancelRequested, SagaId};
/// let e = CancelRequested { saga: SagaId::nil(), reason: "customer changed plans".into() };
/// assert!(e.to_string().contains("customer changed plans"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelRequested {
    /// The saga.
    pub saga: SagaId,
    /// The operator's reason.
    pub reason: String,
}

impl fmt::Display for CancelRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saga {}: cancelled ({}): no new step starts",
            self.saga, self.reason
        )
    }
}

impl std::error::Error for CancelRequested {}

/// Everything the orchestrator, the definitions and the stores can fail with.
///
/// ```
/// use steadfast_saga::{Error, SagaId};
/// let e = Error::NotFound(SagaId::nil());
/// assert!(matches!(e, Error::NotFound(_)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The lease was taken over: see [`Fenced`].
    Fenced(Fenced),
    /// The definition changed: see [`DefinitionChanged`].
    DefinitionChanged(DefinitionChanged),
    /// A stored row could not be decoded: see [`Decode`].
    Decode(Decode),
    /// A cancel was refused: see [`CancelRefused`].
    CancelRefused(CancelRefused),
    /// A new step was not started because the saga was cancelled: see [`CancelRequested`].
    CancelRequested(CancelRequested),
    /// No definition is registered for this saga type.
    UnknownSagaType(String),
    /// No saga with this id.
    NotFound(SagaId),
    /// A saga definition is invalid (reported by `SagaDefinition`'s `build`, and by the
    /// orchestrator's for the definitions registered with it).
    InvalidDefinition(String),
    /// An orchestrator setting is invalid (lease, poll interval, claim batch, recoveries,
    /// owner id): the one configuration error of every steadfast builder, with the field's
    /// path.
    Config(ConfigError),
    /// A value could not be serialized.
    Encode(String),
    /// The operation does not apply to the saga in its current state.
    InvalidOperation(String),
    /// The store failed (database unreachable, I/O error...).
    Store(BoxError),
}

impl Error {
    /// Wraps a database or I/O error.
    ///
    /// ```
    /// # use steadfast_saga::Error;
    /// let e = Error::store(std::io::Error::other("disk full"));
    /// assert!(e.to_string().contains("disk full"));
    /// ```
    pub fn store(e: impl Into<BoxError>) -> Self {
        Error::Store(e.into())
    }

    /// Whether this is a [`Fenced`] error.
    ///
    /// ```
    /// # use steadfast_saga::{Error, Fenced, SagaId};
    /// assert!(Error::Fenced(Fenced { saga: SagaId::nil(), epoch: 1 }).is_fenced());
    /// ```
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Fenced(e) => e.fmt(f),
            Error::DefinitionChanged(e) => e.fmt(f),
            Error::Decode(e) => e.fmt(f),
            Error::CancelRefused(e) => e.fmt(f),
            Error::CancelRequested(e) => e.fmt(f),
            Error::UnknownSagaType(t) => write!(f, "no definition registered for saga type {t:?}"),
            Error::NotFound(id) => write!(f, "saga {id} not found"),
            Error::InvalidDefinition(m) => write!(f, "invalid saga definition: {m}"),
            Error::Config(e) => e.fmt(f),
            Error::Encode(m) => write!(f, "cannot encode: {m}"),
            Error::InvalidOperation(m) => write!(f, "invalid operation: {m}"),
            Error::Store(e) => write!(f, "saga store error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Fenced(e) => Some(e),
            Error::DefinitionChanged(e) => Some(e),
            Error::Decode(e) => Some(e),
            Error::CancelRefused(e) => Some(e),
            Error::CancelRequested(e) => Some(e),
            Error::Store(e) => Some(&**e),
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<Fenced> for Error {
    fn from(e: Fenced) -> Self {
        Error::Fenced(e)
    }
}

impl From<CancelRefused> for Error {
    fn from(e: CancelRefused) -> Self {
        Error::CancelRefused(e)
    }
}

impl From<Decode> for Error {
    fn from(e: Decode) -> Self {
        Error::Decode(e)
    }
}

impl From<DefinitionChanged> for Error {
    fn from(e: DefinitionChanged) -> Self {
        Error::DefinitionChanged(e)
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(Box::new(e))
    }
}

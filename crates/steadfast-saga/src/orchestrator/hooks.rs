//! Test hooks (feature `test-hooks`, hidden from the docs): a callback at every step boundary,
//! for fault injection in crash tests and the lab. Production code installs none, and without
//! the feature the orchestrator has no hook calls at all.

use std::fmt;

use futures::future::BoxFuture;

use crate::keys::{Phase, SagaId};

/// A point in a step attempt at which a [`SagaHooks`] implementation is called: fault
/// injection for crash tests and the lab.
///
/// ```
/// use steadfast_saga::Boundary;
/// assert_eq!(Boundary::AfterCall.as_str(), "after_call");
/// ```
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Boundary {
    /// The attempt's start is durable; the participant has not been called.
    BeforeCall,
    /// The participant answered; the outcome is not yet written.
    AfterCall,
    /// The outcome is durable.
    AfterWrite,
}

impl Boundary {
    /// A short label.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::Boundary::BeforeCall.as_str(), "before_call");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::BeforeCall => "before_call",
            Boundary::AfterCall => "after_call",
            Boundary::AfterWrite => "after_write",
        }
    }
}

/// Where a [`SagaHooks`] call happens.
///
/// ```
/// use steadfast_saga::{Boundary, BoundaryInfo, Phase, SagaId};
/// let b = BoundaryInfo { saga: SagaId::nil(), saga_type: "t", step: "s", phase: Phase::Forward,
///     attempt: 1, boundary: Boundary::BeforeCall };
/// assert_eq!(b.step, "s");
/// ```
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct BoundaryInfo<'a> {
    /// The saga.
    pub saga: SagaId,
    /// Its type.
    pub saga_type: &'a str,
    /// The step.
    pub step: &'a str,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt number.
    pub attempt: u32,
    /// Which boundary.
    pub boundary: Boundary,
}

/// Called at every step boundary; the orchestrator awaits the returned future before going on.
/// For fault injection (crash tests, the lab): production code installs none.
///
/// ```
/// use futures::future::BoxFuture;
/// use steadfast_saga::{BoundaryInfo, SagaHooks};
/// #[derive(Debug)]
/// struct Print;
/// impl SagaHooks for Print {
///     fn at_boundary(&self, at: &BoundaryInfo<'_>) -> BoxFuture<'static, ()> {
///         println!("{} {} {}", at.step, at.phase, at.boundary.as_str());
///         Box::pin(async {})
///     }
/// }
/// ```
#[doc(hidden)]
pub trait SagaHooks: Send + Sync + fmt::Debug + 'static {
    /// Called at `at`.
    fn at_boundary(&self, at: &BoundaryInfo<'_>) -> BoxFuture<'static, ()>;
}

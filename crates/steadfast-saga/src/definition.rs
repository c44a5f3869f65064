//! Defining sagas: a typed builder that enforces Richardson's phases at build time.
//!
//! A saga is a sequence of *stages*; a stage is one step or a parallel group of steps. Steps come
//! in three kinds, and must appear in this order:
//!
//! 1. **compensatable** steps: an action and a compensation that undoes it;
//! 2. at most one **pivot**: the go/no-go step; no compensation; when it fails the compensatable
//!    steps are compensated, once it succeeds the saga can only go forward;
//! 3. **retriable** steps: no compensation, retried until they succeed.
//!
//! Step inputs and outputs are serde types: the saga's input reaches every step through
//! [`StepContext::input`], and a step's output reaches its compensation as a typed argument and
//! later steps through the [`StepRef`] handle the builder returned for it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use steadfast_layers::retry::Backoff;

use crate::error::{Error, StepError};
use crate::keys::{Phase, SagaId, StepKey};

/// The bounds a saga input or step output satisfies: a serde type that can cross threads.
///
/// Implemented for every such type.
///
/// ```
/// fn is_payload<T: steadfast_saga::Payload>() {}
/// is_payload::<String>();
/// is_payload::<(u32, Vec<String>)>();
/// ```
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Payload for T {}

/// Entry point: `Saga::builder::<Input>("name")`.
///
/// ```
/// use steadfast_saga::{Saga, Step, StepContext, StepError};
///
/// let mut b = Saga::builder::<u32>("double").version(1);
/// let doubled = b.step(Step::retriable("double", |ctx: StepContext<u32>| async move {
///     Ok::<_, StepError>(*ctx.input() * 2)
/// }));
/// let def = b.build().unwrap();
/// assert_eq!(def.name(), "double");
/// assert_eq!(doubled.index(), 0);
/// ```
#[derive(Debug)]
pub struct Saga;

impl Saga {
    /// A builder for a saga type named `name` whose input is `I`.
    ///
    /// ```
    /// let b = steadfast_saga::Saga::builder::<String>("greet");
    /// # let _ = b;
    /// ```
    pub fn builder<I: Payload>(name: impl Into<String>) -> SagaBuilder<I> {
        SagaBuilder {
            name: name.into(),
            version: 1,
            deadline: None,
            parallel_compensation: false,
            stages: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// The kind of a step (its phase in Richardson's sense).
///
/// ```
/// use steadfast_saga::StepKind;
/// assert_eq!(StepKind::Pivot.as_str(), "pivot");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Has a compensation; comes first.
    Compensatable,
    /// The go/no-go step, at most one; no compensation.
    Pivot,
    /// Comes last, no compensation, retried until it succeeds.
    Retriable,
}

impl StepKind {
    /// A short label.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::StepKind::Retriable.as_str(), "retriable");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Compensatable => "compensatable",
            StepKind::Pivot => "pivot",
            StepKind::Retriable => "retriable",
        }
    }

    fn rank(self) -> u8 {
        match self {
            StepKind::Compensatable => 0,
            StepKind::Pivot => 1,
            StepKind::Retriable => 2,
        }
    }
}

/// How often and how patiently a step (or a compensation) is attempted.
///
/// `max_attempts: None` means "until it succeeds". Unknown outcomes (timeouts) count as
/// attempts but never as failures: when the attempts run out on an unknown outcome the saga goes
/// to `NeedsAttention` instead of concluding anything.
///
/// ```
/// use std::time::Duration;
/// use steadfast_saga::RetryPolicy;
/// use steadfast_layers::retry::Backoff;
/// let p = RetryPolicy::attempts(5)
///     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)))
///     .attempt_timeout(Duration::from_secs(2));
/// assert_eq!(p.max_attempts(), Some(5));
/// assert_eq!(RetryPolicy::forever().max_attempts(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: Option<u32>,
    backoff: Backoff,
    attempt_timeout: Duration,
}

/// The default attempt timeout: 30 s.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// At most `n` attempts (at least 1), exponential backoff 100 ms .. 10 s with full jitter,
    /// 30 s per attempt.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::RetryPolicy::attempts(3).max_attempts(), Some(3));
    /// ```
    pub fn attempts(n: u32) -> Self {
        RetryPolicy {
            max_attempts: Some(n),
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// Attempts until success, exponential backoff 100 ms .. 30 s with full jitter (the default
    /// for retriable steps).
    ///
    /// ```
    /// assert!(steadfast_saga::RetryPolicy::forever().max_attempts().is_none());
    /// ```
    pub fn forever() -> Self {
        RetryPolicy {
            max_attempts: None,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30)),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// Sets the backoff between attempts (capped: see [`Backoff::exponential`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_saga::RetryPolicy;
    /// # use steadfast_layers::retry::Backoff;
    /// let p = RetryPolicy::attempts(2).backoff(Backoff::constant(Duration::ZERO));
    /// assert_eq!(p.backoff_config(), Backoff::constant(Duration::ZERO));
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the time one attempt may take; past it the attempt's outcome is unknown and the step
    /// is retried with the same key.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = steadfast_saga::RetryPolicy::attempts(2).attempt_timeout(Duration::from_secs(1));
    /// assert_eq!(p.attempt_timeout_config(), Duration::from_secs(1));
    /// ```
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The attempt limit (`None`: until success).
    ///
    /// ```
    /// assert_eq!(steadfast_saga::RetryPolicy::attempts(4).max_attempts(), Some(4));
    /// ```
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The backoff.
    ///
    /// ```
    /// # use steadfast_saga::RetryPolicy;
    /// let _ = RetryPolicy::attempts(1).backoff_config();
    /// ```
    pub fn backoff_config(&self) -> Backoff {
        self.backoff
    }

    /// The attempt timeout.
    ///
    /// ```
    /// # use steadfast_saga::{RetryPolicy, DEFAULT_ATTEMPT_TIMEOUT};
    /// assert_eq!(RetryPolicy::attempts(1).attempt_timeout_config(), DEFAULT_ATTEMPT_TIMEOUT);
    /// ```
    pub fn attempt_timeout_config(&self) -> Duration {
        self.attempt_timeout
    }

    fn validate(&self, what: &str) -> Result<(), String> {
        if self.max_attempts == Some(0) {
            return Err(format!("{what}: max_attempts must be at least 1"));
        }
        if self.attempt_timeout.is_zero() {
            return Err(format!("{what}: the attempt timeout must be positive"));
        }
        self.backoff
            .validate()
            .map_err(|e| format!("{what}: backoff: {e}"))
    }
}

/// Everything a step action or compensation gets: the saga's input, earlier steps' outputs, and
/// the stable step key to hand to the participant.
///
/// ```
/// use steadfast_saga::{StepContext, StepError};
/// async fn reserve(ctx: StepContext<String>) -> Result<u64, StepError> {
///     let _idempotency_key = ctx.key().header_value();
///     Ok(ctx.input().len() as u64)
/// }
/// # let _ = reserve;
/// ```
pub struct StepContext<I> {
    pub(crate) saga: SagaId,
    pub(crate) step: Arc<str>,
    pub(crate) phase: Phase,
    pub(crate) attempt: u32,
    pub(crate) epoch: i64,
    pub(crate) input: Arc<I>,
    pub(crate) outputs: Arc<HashMap<usize, Value>>,
    pub(crate) names: Arc<Vec<Arc<str>>>,
}

impl<I> Clone for StepContext<I> {
    fn clone(&self) -> Self {
        StepContext {
            saga: self.saga,
            step: Arc::clone(&self.step),
            phase: self.phase,
            attempt: self.attempt,
            epoch: self.epoch,
            input: Arc::clone(&self.input),
            outputs: Arc::clone(&self.outputs),
            names: Arc::clone(&self.names),
        }
    }
}

impl<I> fmt::Debug for StepContext<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("saga", &self.saga)
            .field("step", &self.step)
            .field("phase", &self.phase)
            .field("key", &self.key())
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<I> StepContext<I> {
    /// The saga's id.
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<()>) { let _ = ctx.saga_id(); }
    /// ```
    pub fn saga_id(&self) -> SagaId {
        self.saga
    }

    /// The step's name.
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<()>) { let _: &str = ctx.step(); }
    /// ```
    pub fn step(&self) -> &str {
        &self.step
    }

    /// Whether this is the action or the compensation.
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<()>) { let _ = ctx.phase(); }
    /// ```
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The stable key of (saga, step, phase): the same on every attempt and after a crash.
    /// Send it as `Idempotency-Key` (see [`StepKey::header_value`]).
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<()>) { let _ = ctx.key().to_string(); }
    /// ```
    ///
    /// Derived when asked for (a UUID v5: one SHA-1), so a step that sends no key pays nothing.
    pub fn key(&self) -> StepKey {
        StepKey::new(self.saga, &self.step, self.phase)
    }

    /// The attempt number, 1-based, counted across crashes and recoveries.
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<()>) { assert!(ctx.attempt() >= 1); }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The lease epoch under which this attempt runs: a fencing token a participant can use to
    /// reject calls from an orchestrator that has been taken over (a larger epoch wins).
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<()>) { assert!(ctx.lease_epoch() >= 1); }
    /// ```
    pub fn lease_epoch(&self) -> i64 {
        self.epoch
    }

    /// The saga's input.
    ///
    /// ```
    /// # fn f(ctx: steadfast_saga::StepContext<String>) { let _: &String = ctx.input(); }
    /// ```
    pub fn input(&self) -> &I {
        &self.input
    }

    /// The output of an earlier step (completed in an earlier stage).
    ///
    /// Fails with a permanent [`StepError`] when that step has not completed (a sibling in the
    /// same parallel group, or a later step) or when its stored output does not decode as `O`.
    ///
    /// ```
    /// # use steadfast_saga::{StepContext, StepError, StepRef};
    /// async fn hotel(ctx: StepContext<()>, flight: StepRef<u64>) -> Result<(), StepError> {
    ///     let flight_id: u64 = ctx.output(flight)?;
    ///     # let _ = flight_id;
    ///     Ok(())
    /// }
    /// # let _ = hotel;
    /// ```
    pub fn output<O: Payload>(&self, step: StepRef<O>) -> Result<O, StepError> {
        let name = self
            .names
            .get(step.index)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("#{}", step.index));
        let value = self.outputs.get(&step.index).ok_or_else(|| {
            StepError::permanent(format!(
                "the output of step {name:?} is not available to step {:?} (it has not \
                 completed in an earlier stage)",
                self.step
            ))
        })?;
        O::deserialize(value).map_err(|e| {
            StepError::permanent(format!("cannot decode the output of step {name:?}: {e}"))
        })
    }
}

/// A typed handle to a step's output, returned by [`SagaBuilder::step`]; pass it to
/// [`StepContext::output`] in later steps.
///
/// ```
/// use steadfast_saga::{Saga, Step, StepContext, StepError};
/// let mut b = Saga::builder::<()>("s");
/// let a = b.step(Step::retriable("a", |_ctx: StepContext<()>| async { Ok::<u8, StepError>(1) }));
/// let copy = a; // Copy
/// assert_eq!((a.index(), copy.index()), (0, 0));
/// ```
pub struct StepRef<O> {
    index: usize,
    _out: PhantomData<fn() -> O>,
}

impl<O> Clone for StepRef<O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<O> Copy for StepRef<O> {}

impl<O> fmt::Debug for StepRef<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepRef")
            .field("index", &self.index)
            .finish()
    }
}

impl<O> StepRef<O> {
    /// The step's position in the definition (0-based, groups flattened).
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// # let mut b = Saga::builder::<()>("s");
    /// b.step(Step::compensatable("w", |_c: StepContext<()>| async { Ok::<(), StepError>(()) },
    ///     |_c: StepContext<()>, _o: ()| async { Ok::<(), StepError>(()) }));
    /// let r = b.step(Step::retriable("x", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// assert_eq!(r.index(), 1);
    /// ```
    pub fn index(&self) -> usize {
        self.index
    }
}

pub(crate) type ActionFn<I> =
    Arc<dyn Fn(StepContext<I>) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync>;
pub(crate) type CompensationFn<I> =
    Arc<dyn Fn(StepContext<I>, Value) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

/// One step: its kind, action, compensation and policies. Built with [`Step::compensatable`],
/// [`Step::pivot`] or [`Step::retriable`] and added with [`SagaBuilder::step`].
///
/// ```
/// use std::time::Duration;
/// use steadfast_saga::{RetryPolicy, Step, StepContext, StepError};
///
/// let s = Step::compensatable(
///     "reserve-flight",
///     |ctx: StepContext<String>| async move { Ok::<_, StepError>(format!("PNR-{}", ctx.input())) },
///     |_ctx: StepContext<String>, pnr: String| async move { let _ = pnr; Ok::<_, StepError>(()) },
/// )
/// .retry(RetryPolicy::attempts(3).attempt_timeout(Duration::from_secs(5)))
/// .compensation_retry(RetryPolicy::attempts(20));
/// assert_eq!(s.name(), "reserve-flight");
/// ```
pub struct Step<I, O> {
    name: String,
    kind: StepKind,
    action: ActionFn<I>,
    compensation: Option<CompensationFn<I>>,
    retry: RetryPolicy,
    compensation_retry: RetryPolicy,
    _out: PhantomData<fn() -> O>,
}

impl<I, O> fmt::Debug for Step<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn erase_action<I, O, A, F>(action: A) -> ActionFn<I>
where
    I: Payload,
    O: Payload,
    A: Fn(StepContext<I>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<O, StepError>> + Send + 'static,
{
    Arc::new(move |ctx| {
        let fut = action(ctx);
        Box::pin(async move {
            let out = fut.await?;
            serde_json::to_value(&out).map_err(|e| {
                StepError::permanent(format!("cannot serialize the step's output: {e}"))
            })
        })
    })
}

/// The default compensation policy: 10 attempts, exponential backoff 100 ms .. 10 s.
pub fn default_compensation_retry() -> RetryPolicy {
    RetryPolicy::attempts(10)
}

impl<I: Payload, O: Payload> Step<I, O> {
    /// A compensatable step: `action`, undone by `compensation(ctx, output)` if the saga fails
    /// later. Default policies: 5 attempts for the action, 10 for the compensation.
    ///
    /// ```
    /// # use steadfast_saga::{Step, StepContext, StepError};
    /// let s = Step::compensatable("a",
    ///     |_c: StepContext<()>| async { Ok::<u32, StepError>(1) },
    ///     |_c: StepContext<()>, _out: u32| async { Ok::<(), StepError>(()) });
    /// assert_eq!(s.kind(), steadfast_saga::StepKind::Compensatable);
    /// ```
    pub fn compensatable<A, F, C, G>(name: impl Into<String>, action: A, compensation: C) -> Self
    where
        A: Fn(StepContext<I>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<O, StepError>> + Send + 'static,
        C: Fn(StepContext<I>, O) -> G + Send + Sync + 'static,
        G: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let compensation: CompensationFn<I> =
            Arc::new(move |ctx, value: Value| match O::deserialize(value) {
                Ok(out) => Box::pin(compensation(ctx, out)),
                Err(e) => {
                    let err = StepError::permanent(format!(
                        "cannot decode the step's stored output for its compensation: {e}"
                    ));
                    Box::pin(async move { Err(err) })
                }
            });
        Step {
            name: name.into(),
            kind: StepKind::Compensatable,
            action: erase_action(action),
            compensation: Some(compensation),
            retry: RetryPolicy::attempts(5),
            compensation_retry: default_compensation_retry(),
            _out: PhantomData,
        }
    }

    /// The pivot: the go/no-go step. Default policy: 5 attempts.
    ///
    /// ```
    /// # use steadfast_saga::{Step, StepContext, StepError};
    /// let s = Step::pivot("charge", |_c: StepContext<()>| async { Ok::<(), StepError>(()) });
    /// assert_eq!(s.kind(), steadfast_saga::StepKind::Pivot);
    /// ```
    pub fn pivot<A, F>(name: impl Into<String>, action: A) -> Self
    where
        A: Fn(StepContext<I>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        Step {
            name: name.into(),
            kind: StepKind::Pivot,
            action: erase_action(action),
            compensation: None,
            retry: RetryPolicy::attempts(5),
            compensation_retry: default_compensation_retry(),
            _out: PhantomData,
        }
    }

    /// A retriable step: after the pivot, retried until it succeeds ([`RetryPolicy::forever`]).
    ///
    /// ```
    /// # use steadfast_saga::{Step, StepContext, StepError};
    /// let s = Step::retriable("email", |_c: StepContext<()>| async { Ok::<(), StepError>(()) });
    /// assert_eq!(s.kind(), steadfast_saga::StepKind::Retriable);
    /// ```
    pub fn retriable<A, F>(name: impl Into<String>, action: A) -> Self
    where
        A: Fn(StepContext<I>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        Step {
            name: name.into(),
            kind: StepKind::Retriable,
            action: erase_action(action),
            compensation: None,
            retry: RetryPolicy::forever(),
            compensation_retry: default_compensation_retry(),
            _out: PhantomData,
        }
    }

    /// Sets the action's retry policy and attempt timeout. A retriable step must keep
    /// `max_attempts: None` (checked by [`SagaBuilder::build`]).
    ///
    /// ```
    /// # use steadfast_saga::{RetryPolicy, Step, StepContext, StepError};
    /// let s = Step::pivot("p", |_c: StepContext<()>| async { Ok::<(), StepError>(()) })
    ///     .retry(RetryPolicy::attempts(2));
    /// assert_eq!(s.retry_policy().max_attempts(), Some(2));
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the compensation's retry policy (compensatable steps only). When the attempts run
    /// out, the saga goes to `NeedsAttention` with the last error kept.
    ///
    /// ```
    /// # use steadfast_saga::{RetryPolicy, Step, StepContext, StepError};
    /// let s = Step::compensatable("c",
    ///     |_c: StepContext<()>| async { Ok::<(), StepError>(()) },
    ///     |_c: StepContext<()>, _o: ()| async { Ok::<(), StepError>(()) })
    ///     .compensation_retry(RetryPolicy::attempts(50));
    /// # let _ = s;
    /// ```
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.compensation_retry = policy;
        self
    }

    /// The step's name.
    ///
    /// ```
    /// # use steadfast_saga::{Step, StepContext, StepError};
    /// let s = Step::pivot("p", |_c: StepContext<()>| async { Ok::<(), StepError>(()) });
    /// assert_eq!(s.name(), "p");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's kind.
    ///
    /// ```
    /// # use steadfast_saga::{Step, StepContext, StepError, StepKind};
    /// let s = Step::pivot("p", |_c: StepContext<()>| async { Ok::<(), StepError>(()) });
    /// assert_eq!(s.kind(), StepKind::Pivot);
    /// ```
    pub fn kind(&self) -> StepKind {
        self.kind
    }

    /// The action's retry policy.
    ///
    /// ```
    /// # use steadfast_saga::{Step, StepContext, StepError};
    /// let s = Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) });
    /// assert!(s.retry_policy().max_attempts().is_none());
    /// ```
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}

/// A step after type erasure, as held by a definition.
pub(crate) struct StepDef<I> {
    pub(crate) name: Arc<str>,
    pub(crate) index: usize,
    pub(crate) kind: StepKind,
    pub(crate) action: ActionFn<I>,
    pub(crate) compensation: Option<CompensationFn<I>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
}

/// Builds a [`SagaDefinition`]; see [`Saga::builder`]. Errors are collected and reported by
/// [`SagaBuilder::build`], never by a panic.
///
/// ```
/// use std::time::Duration;
/// use steadfast_saga::{Saga, Step, StepContext, StepError};
///
/// type Ctx = StepContext<String>;
/// let mut b = Saga::builder::<String>("book-trip").version(3).deadline(Duration::from_secs(60));
/// let flight = b.step(Step::compensatable("flight",
///     |c: Ctx| async move { Ok::<_, StepError>(format!("F-{}", c.input())) },
///     |_c: Ctx, _pnr: String| async { Ok::<_, StepError>(()) }));
/// let (car, hotel) = b.parallel(|g| {
///     let car = g.step(Step::compensatable("car",
///         |_c: Ctx| async { Ok::<_, StepError>(1u32) },
///         |_c: Ctx, _id: u32| async { Ok::<_, StepError>(()) }));
///     let hotel = g.step(Step::compensatable("hotel",
///         move |c: Ctx| async move { let pnr = c.output(flight)?; Ok::<_, StepError>(pnr.len() as u32) },
///         |_c: Ctx, _id: u32| async { Ok::<_, StepError>(()) }));
///     (car, hotel)
/// });
/// b.step(Step::pivot("charge", |_c: Ctx| async { Ok::<_, StepError>(()) }));
/// b.step(Step::retriable("email", |_c: Ctx| async { Ok::<_, StepError>(()) }));
/// let def = b.build().unwrap();
/// assert_eq!(def.step_names(), ["flight", "car", "hotel", "charge", "email"]);
/// # let _ = (car, hotel);
/// ```
pub struct SagaBuilder<I> {
    name: String,
    version: u32,
    deadline: Option<Duration>,
    parallel_compensation: bool,
    stages: Vec<Vec<StepDef<I>>>,
    errors: Vec<String>,
}

impl<I> fmt::Debug for SagaBuilder<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Adds steps to one parallel group; see [`SagaBuilder::parallel`].
///
/// ```
/// # use steadfast_saga::{Saga, Step, StepContext, StepError};
/// let mut b = Saga::builder::<()>("p");
/// b.parallel(|g| {
///     g.step(Step::retriable("a", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
///     g.step(Step::retriable("b", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
/// });
/// assert!(b.build().is_ok());
/// ```
pub struct GroupBuilder<'a, I> {
    builder: &'a mut SagaBuilder<I>,
    steps: Vec<StepDef<I>>,
}

impl<I> fmt::Debug for GroupBuilder<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupBuilder")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl<I: Payload> GroupBuilder<'_, I> {
    /// Adds a step to the group.
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// # let mut b = Saga::builder::<()>("p");
    /// let r = b.parallel(|g| g.step(Step::retriable("a", |_c: StepContext<()>| async { Ok::<u8, StepError>(1) })));
    /// assert_eq!(r.index(), 0);
    /// ```
    pub fn step<O: Payload>(&mut self, step: Step<I, O>) -> StepRef<O> {
        let index = self.builder.next_index() + self.steps.len();
        let (def, r) = erase(step, index);
        self.steps.push(def);
        r
    }
}

fn erase<I, O>(step: Step<I, O>, index: usize) -> (StepDef<I>, StepRef<O>) {
    (
        StepDef {
            name: Arc::from(step.name),
            index,
            kind: step.kind,
            action: step.action,
            compensation: step.compensation,
            retry: step.retry,
            compensation_retry: step.compensation_retry,
        },
        StepRef {
            index,
            _out: PhantomData,
        },
    )
}

impl<I: Payload> SagaBuilder<I> {
    /// The definition's version (default 1). Bump it whenever steps change: a recovering
    /// orchestrator refuses to resume a saga started under another version.
    ///
    /// ```
    /// # use steadfast_saga::Saga;
    /// let b = Saga::builder::<()>("s").version(7);
    /// # let _ = b;
    /// ```
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// A saga-level deadline, measured from the saga's creation on the store's clock. Past it,
    /// no further compensatable step or pivot starts and the saga compensates; once the pivot
    /// has succeeded the deadline no longer applies (retriable steps must finish). At most
    /// [`MAX_SPAN`](crate::store::MAX_SPAN): `build` refuses a longer one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// let b = Saga::builder::<()>("s").deadline(Duration::from_secs(30));
    /// # let _ = b;
    /// let mut b = Saga::builder::<()>("s").deadline(Duration::MAX);
    /// b.step(Step::pivot("charge", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// let err = b.build().unwrap_err();
    /// assert!(err.to_string().contains("deadline"), "{err}");
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Compensate every completed step at once instead of in reverse order, stage by stage.
    ///
    /// ```
    /// # use steadfast_saga::Saga;
    /// let b = Saga::builder::<()>("s").parallel_compensation(true);
    /// # let _ = b;
    /// ```
    pub fn parallel_compensation(mut self, yes: bool) -> Self {
        self.parallel_compensation = yes;
        self
    }

    fn next_index(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// Appends a step as its own stage and returns the handle to its output.
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// let mut b = Saga::builder::<()>("s");
    /// let r = b.step(Step::pivot("p", |_c: StepContext<()>| async { Ok::<u8, StepError>(1) }));
    /// assert_eq!(r.index(), 0);
    /// ```
    pub fn step<O: Payload>(&mut self, step: Step<I, O>) -> StepRef<O> {
        let (def, r) = erase(step, self.next_index());
        self.stages.push(vec![def]);
        r
    }

    /// Appends a parallel group: the steps `f` adds run concurrently, and the stage completes
    /// when all of them have. Steps of a group share one kind (compensatable or retriable; a
    /// pivot cannot be in a group).
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// let mut b = Saga::builder::<()>("s");
    /// let (x, y) = b.parallel(|g| (
    ///     g.step(Step::retriable("x", |_c: StepContext<()>| async { Ok::<u8, StepError>(1) })),
    ///     g.step(Step::retriable("y", |_c: StepContext<()>| async { Ok::<u8, StepError>(2) })),
    /// ));
    /// assert_eq!((x.index(), y.index()), (0, 1));
    /// ```
    pub fn parallel<R>(&mut self, f: impl FnOnce(&mut GroupBuilder<'_, I>) -> R) -> R {
        let mut g = GroupBuilder {
            builder: self,
            steps: Vec::new(),
        };
        let r = f(&mut g);
        let steps = g.steps;
        if steps.is_empty() {
            self.errors.push("a parallel group has no steps".into());
        } else {
            self.stages.push(steps);
        }
        r
    }

    /// Checks the definition: a name, at least one step, unique step names, the phase order
    /// (compensatable, at most one pivot, retriable), one kind per group, no pivot in a group,
    /// retriable steps retried until success, valid retry policies.
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// let mut b = Saga::builder::<()>("s");
    /// b.step(Step::retriable("email", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// b.step(Step::pivot("charge", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// let err = b.build().unwrap_err();
    /// assert!(err.to_string().contains("pivot"), "{err}");
    /// ```
    pub fn build(self) -> Result<SagaDefinition<I>, Error> {
        let mut errors = self.errors;
        if self.name.is_empty() || self.name.len() > 200 {
            errors.push("the saga name must have 1 to 200 bytes".into());
        }
        if self.stages.is_empty() {
            errors.push(format!("saga {:?} has no steps", self.name));
        }
        if let Some(d) = self.deadline.filter(|d| *d > crate::store::MAX_SPAN) {
            errors.push(format!(
                "the deadline {d:?} is longer than a store keeps (100 years)"
            ));
        }
        let mut seen = HashSet::new();
        let mut highest: Option<StepKind> = None;
        for stage in &self.stages {
            let kind = stage[0].kind;
            for s in stage {
                if s.name.is_empty() || s.name.len() > 200 {
                    errors.push("a step name must have 1 to 200 bytes".into());
                }
                if !seen.insert(s.name.clone()) {
                    errors.push(format!("step name {:?} is used twice", s.name));
                }
                if s.kind != kind {
                    errors.push(format!(
                        "parallel group with {:?} mixes {} and {} steps",
                        s.name,
                        kind.as_str(),
                        s.kind.as_str()
                    ));
                }
                if s.kind == StepKind::Pivot && stage.len() > 1 {
                    errors.push(format!(
                        "pivot {:?} cannot be part of a parallel group",
                        s.name
                    ));
                }
                if s.kind == StepKind::Retriable && s.retry.max_attempts().is_some() {
                    errors.push(format!(
                        "retriable step {:?} must be retried until it succeeds \
                         (RetryPolicy::forever())",
                        s.name
                    ));
                }
                if let Err(e) = s.retry.validate(&format!("step {:?}", s.name)) {
                    errors.push(e);
                }
                if let Err(e) = s
                    .compensation_retry
                    .validate(&format!("compensation of {:?}", s.name))
                {
                    errors.push(e);
                }
                if let Some(h) = highest {
                    if s.kind.rank() < h.rank() {
                        errors.push(format!(
                            "{} step {:?} comes after a {} step: the order is compensatable \
                             steps, then at most one pivot, then retriable steps",
                            s.kind.as_str(),
                            s.name,
                            h.as_str()
                        ));
                    }
                    if s.kind == StepKind::Pivot && h == StepKind::Pivot {
                        errors.push(format!("second pivot {:?}: at most one pivot", s.name));
                    }
                }
                if highest.is_none_or(|h| s.kind.rank() > h.rank()) {
                    highest = Some(s.kind);
                }
            }
        }
        if !errors.is_empty() {
            return Err(Error::InvalidDefinition(errors.join("; ")));
        }
        let names = self
            .stages
            .iter()
            .flatten()
            .map(|s| Arc::clone(&s.name))
            .collect();
        Ok(SagaDefinition {
            inner: Arc::new(DefinitionInner {
                name: self.name,
                version: self.version,
                deadline: self.deadline,
                parallel_compensation: self.parallel_compensation,
                stages: self.stages,
                names: Arc::new(names),
            }),
        })
    }
}

pub(crate) struct DefinitionInner<I> {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) parallel_compensation: bool,
    pub(crate) stages: Vec<Vec<StepDef<I>>>,
    pub(crate) names: Arc<Vec<Arc<str>>>,
}

/// A validated saga definition; cheap to clone. Register it with the orchestrator and start
/// sagas of it.
///
/// ```
/// # use steadfast_saga::{Saga, Step, StepContext, StepError};
/// let mut b = Saga::builder::<()>("s").version(2);
/// b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
/// let def = b.build().unwrap();
/// assert_eq!((def.name(), def.version()), ("s", 2));
/// ```
pub struct SagaDefinition<I> {
    pub(crate) inner: Arc<DefinitionInner<I>>,
}

impl<I> Clone for SagaDefinition<I> {
    fn clone(&self) -> Self {
        SagaDefinition {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<I> fmt::Debug for SagaDefinition<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("steps", &self.inner.names)
            .finish()
    }
}

impl<I> SagaDefinition<I> {
    /// The saga type's name.
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// assert_eq!(b.build().unwrap().name(), "s");
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The definition's version.
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// assert_eq!(b.build().unwrap().version(), 1);
    /// ```
    pub fn version(&self) -> u32 {
        self.inner.version
    }

    /// The step names in execution order (groups flattened).
    ///
    /// ```
    /// # use steadfast_saga::{Saga, Step, StepContext, StepError};
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// assert_eq!(b.build().unwrap().step_names(), ["r"]);
    /// ```
    pub fn step_names(&self) -> Vec<&str> {
        self.inner.names.iter().map(|n| &**n).collect()
    }
}

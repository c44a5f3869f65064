//! The durable saga log: the [`SagaStore`] trait, its record types, and the conformance suite
//! every store passes ([`conformance`]).
//!
//! Three stores ship: [`MemoryStore`] (tests), and one SQL store, [`SqlStore`], over two
//! dialects: `SqliteStore` (feature `sqlite`, on by default: the embedded log, WAL) and
//! `PostgresStore` (feature `postgres`: many orchestrator instances). Every write that changes a
//! running saga is *fenced*: it carries the writer's [`Lease`] and is refused with
//! [`Fenced`](crate::Fenced) when another orchestrator has since claimed the saga (a newer lease
//! epoch).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::keys::{Phase, SagaId};

/// The stored statuses of sagas nobody works on any more, as an SQL list. Every other stored
/// status — running, compensating, or one this version cannot read — is claimed once its lease
/// expires (an unreadable one then goes to `NeedsAttention`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! settled_statuses_sql {
    () => {
        "('completed', 'compensated', 'needs_attention')"
    };
}

/// Every status this version can read, as an SQL list.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! known_statuses_sql {
    () => {
        "('running', 'compensating', 'completed', 'compensated', 'needs_attention')"
    };
}

pub mod conformance;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod group;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sql::{Dialect, SqlStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The future every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where a saga is in its life.
///
/// ```
/// use steadfast_saga::SagaStatus;
/// assert_eq!("needs_attention".parse::<SagaStatus>(), Ok(SagaStatus::NeedsAttention));
/// assert!(SagaStatus::Compensated.is_terminal());
/// assert!(!SagaStatus::Running.is_terminal());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaStatus {
    /// Going forward.
    Running,
    /// Undoing completed steps.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every completed compensatable step was compensated.
    Compensated,
    /// Stopped: an operator must look (a compensation that keeps failing, an outcome that stays
    /// unknown, a row that does not decode, an unknown type or changed definition, too many
    /// recoveries). The error is kept in [`SagaSummary::error`].
    NeedsAttention,
}

impl SagaStatus {
    /// Every status.
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::NeedsAttention,
    ];

    /// The stored label.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::SagaStatus::Running.as_str(), "running");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::NeedsAttention => "needs_attention",
        }
    }

    /// Completed or compensated: nothing more will happen.
    ///
    /// ```
    /// assert!(steadfast_saga::SagaStatus::Completed.is_terminal());
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }

    /// Running or compensating: an orchestrator should be working on it.
    ///
    /// ```
    /// assert!(steadfast_saga::SagaStatus::Compensating.is_active());
    /// ```
    pub fn is_active(self) -> bool {
        matches!(self, SagaStatus::Running | SagaStatus::Compensating)
    }
}

impl FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SagaStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown saga status {s:?}"))
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known of one step phase.
///
/// ```
/// use steadfast_saga::store::StepState;
/// assert_eq!("succeeded".parse::<StepState>(), Ok(StepState::Succeeded));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepState {
    /// To be run (again): reset by an operator's retry.
    Pending,
    /// An attempt was started; its outcome is not recorded (in flight, or the orchestrator
    /// crashed): on recovery the step is re-invoked with the same key.
    Started,
    /// The attempt's outcome is unknown (timed out); retried with the same key.
    Unknown,
    /// Done; the output is recorded.
    Succeeded,
    /// Failed definitively (the participant said no).
    Failed,
}

impl StepState {
    /// Every state.
    pub const ALL: [StepState; 5] = [
        StepState::Pending,
        StepState::Started,
        StepState::Unknown,
        StepState::Succeeded,
        StepState::Failed,
    ];

    /// The stored label.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::store::StepState::Started.as_str(), "started");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Started => "started",
            StepState::Unknown => "unknown",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
        }
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown step state {s:?}"))
    }
}

/// A saga to create.
///
/// ```
/// use steadfast_saga::{store::NewSaga, SagaId};
/// let n = NewSaga {
///     id: SagaId::nil(), saga_type: "t".into(), version: 1, business_key: "order-1".into(),
///     input: "{}".into(), deadline: None, first_step: None, forward_only: false,
/// };
/// assert_eq!(n.business_key, "order-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSaga {
    /// The new saga's id (ignored when the business key already exists).
    pub id: SagaId,
    /// The saga type (the definition's name).
    pub saga_type: String,
    /// The definition's version.
    pub version: u32,
    /// Starting twice with the same (type, business key) yields one saga.
    pub business_key: String,
    /// The input, as JSON text.
    pub input: String,
    /// The saga-level deadline, from now on the store's clock.
    pub deadline: Option<Duration>,
    /// A step record written in the same transaction as the new saga (nothing is written for
    /// an existing business key). The orchestrator passes its first step's `Started` record of
    /// attempt 1, so that creating the saga and starting its first step are one durable write;
    /// the `created` history entry then names that step.
    pub first_step: Option<StepRecord>,
    /// The saga is past its point of no return from the start: `first_step` is its pivot or a
    /// retriable step (see [`Transition::forward_only`]).
    pub forward_only: bool,
}

/// The history event of a saga's creation: `created`, naming the step started with it.
pub(crate) fn created_event(first_step: Option<&StepRecord>) -> Event {
    match first_step {
        Some(s) => Event::new("created")
            .step(s.step.clone(), s.phase)
            .detail(match s.attempts {
                1 => "step started (attempt 1)".to_owned(),
                n => format!("step started (attempt {n})"),
            }),
        None => Event::new("created"),
    }
}

/// The right to write to one saga: the owner and the epoch it was granted.
///
/// ```
/// use steadfast_saga::{store::Lease, SagaId};
/// let l = Lease { saga: SagaId::nil(), owner: "orch-1".into(), epoch: 1 };
/// assert_eq!(l.epoch, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The saga.
    pub saga: SagaId,
    /// The orchestrator holding it.
    pub owner: String,
    /// The fencing token: bumped by every claim and take-over.
    pub epoch: i64,
}

/// What [`SagaStore::create`] did.
///
/// ```
/// use steadfast_saga::{store::Created, SagaId};
/// let c = Created::Existing(SagaId::nil());
/// assert_eq!(c.id(), SagaId::nil());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new saga, leased to the creator.
    New(Lease),
    /// A saga with this (type, business key) already existed: nothing was written.
    Existing(SagaId),
}

impl Created {
    /// The saga's id either way.
    ///
    /// ```
    /// # use steadfast_saga::{store::{Created, Lease}, SagaId};
    /// let c = Created::New(Lease { saga: SagaId::nil(), owner: "o".into(), epoch: 1 });
    /// assert_eq!(c.id(), SagaId::nil());
    /// ```
    pub fn id(&self) -> SagaId {
        match self {
            Created::New(l) => l.saga,
            Created::Existing(id) => *id,
        }
    }
}

/// One step phase as stored.
///
/// ```
/// use steadfast_saga::{store::{StepRecord, StepState}, Phase};
/// let r = StepRecord { step: "a".into(), phase: Phase::Forward, state: StepState::Started,
///     attempts: 1, output: None, error: None };
/// assert_eq!(r.attempts, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRecord {
    /// The step's name.
    pub step: String,
    /// Action or compensation.
    pub phase: Phase,
    /// What is known.
    pub state: StepState,
    /// Attempts started so far (across crashes).
    pub attempts: u32,
    /// The output as JSON text, once succeeded.
    pub output: Option<String>,
    /// The last error.
    pub error: Option<String>,
}

/// A saga as stored: its row and its steps.
///
/// ```
/// fn is_done(r: &steadfast_saga::store::SagaRecord) -> bool { r.status.is_terminal() }
/// # let _ = is_done;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaRecord {
    /// Id.
    pub id: SagaId,
    /// Type.
    pub saga_type: String,
    /// Definition version it was started with.
    pub version: u32,
    /// Business key.
    pub business_key: String,
    /// Status.
    pub status: SagaStatus,
    /// Whether it was compensating (kept while in `NeedsAttention`, to resume the right way).
    pub compensating: bool,
    /// Input JSON text (undecoded: a corrupt row is reported by the orchestrator).
    pub input: String,
    /// The index of the first stage not known to be complete (informational; the step records
    /// are the truth).
    pub cursor: i64,
    /// How many times the saga was claimed after its lease expired.
    pub recoveries: u32,
    /// The error that sent it to `NeedsAttention` or started its compensation.
    pub error: Option<String>,
    /// Current lease epoch.
    pub epoch: i64,
    /// Current lease owner.
    pub owner: Option<String>,
    /// Time left to the saga-level deadline on the store's clock (`Some(ZERO)` once past).
    pub deadline_remaining: Option<Duration>,
    /// Time since the saga was created, on the store's clock (zero for a creation time in the
    /// future): what the saga duration metric counts from, across recoveries.
    pub age: Duration,
    /// Past the point of no return: its pivot (or a retriable step) has started, so it can only
    /// go forward and a cancel is refused.
    pub forward_only: bool,
    /// An operator's cancel, with its reason: the saga starts no new step and compensates
    /// (see [`SagaStore::request_cancel`]).
    pub cancel_requested: Option<String>,
    /// Step records.
    pub steps: Vec<StepRecord>,
}

/// A saga in a listing.
///
/// ```
/// fn stuck(s: &steadfast_saga::store::SagaSummary) -> bool {
///     s.status == steadfast_saga::SagaStatus::NeedsAttention
/// }
/// # let _ = stuck;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaSummary {
    /// Id; [`SagaId::nil`] for a row whose stored id is not a saga id (its error then quotes the
    /// stored id; repair such a row in the database).
    pub id: SagaId,
    /// Type.
    pub saga_type: String,
    /// Business key.
    pub business_key: String,
    /// Status. A row whose stored status (or another column) cannot be read is listed as
    /// [`SagaStatus::NeedsAttention`], with the decode error in [`SagaSummary::error`]: it is
    /// reported, never skipped (the recovery loop then marks it so in the store).
    pub status: SagaStatus,
    /// Kept error, if any.
    pub error: Option<String>,
    /// Recoveries so far.
    pub recoveries: u32,
}

/// Which sagas [`SagaStore::list`] returns: optionally only those of one status and of one
/// type, oldest first, at most `limit`.
///
/// ```
/// use steadfast_saga::{store::ListQuery, SagaStatus};
/// let q = ListQuery::new(50).status(SagaStatus::NeedsAttention).saga_type("book-trip");
/// assert_eq!((q.status, q.saga_type.as_deref(), q.limit),
///     (Some(SagaStatus::NeedsAttention), Some("book-trip"), 50));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only sagas of this status (a row whose status cannot be read counts as
    /// `NeedsAttention`).
    pub status: Option<SagaStatus>,
    /// Only sagas of this type.
    pub saga_type: Option<String>,
    /// At most this many.
    pub limit: u32,
}

impl ListQuery {
    /// Every saga, at most `limit`.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::store::ListQuery::new(10).limit, 10);
    /// ```
    pub fn new(limit: u32) -> Self {
        ListQuery {
            status: None,
            saga_type: None,
            limit,
        }
    }

    /// Only sagas of this status.
    ///
    /// ```
    /// # use steadfast_saga::{store::ListQuery, SagaStatus};
    /// assert_eq!(ListQuery::new(1).status(SagaStatus::Running).status, Some(SagaStatus::Running));
    /// ```
    pub fn status(mut self, status: SagaStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only sagas of this type.
    ///
    /// ```
    /// # use steadfast_saga::store::ListQuery;
    /// assert_eq!(ListQuery::new(1).saga_type("t").saga_type.as_deref(), Some("t"));
    /// ```
    pub fn saga_type(mut self, saga_type: impl Into<String>) -> Self {
        self.saga_type = Some(saga_type.into());
        self
    }
}

/// One entry of a saga's history (append-only).
///
/// ```
/// fn describe(h: &steadfast_saga::store::HistoryEntry) -> String {
///     format!("#{} epoch {} {} {:?}", h.seq, h.epoch, h.kind, h.step)
/// }
/// # let _ = describe;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Order within the store (increasing).
    pub seq: i64,
    /// Store clock, milliseconds since the Unix epoch (the memory store: since it was made).
    pub at_ms: i64,
    /// The lease epoch of the write.
    pub epoch: i64,
    /// What happened (`created`, `step_started`, `step_succeeded`, `attempt_failed`, ...).
    pub kind: String,
    /// The step, if any.
    pub step: Option<String>,
    /// The phase, if any.
    pub phase: Option<Phase>,
    /// Details (an error, an operator's note).
    pub detail: Option<String>,
}

/// An event to append to the history with a transition.
///
/// ```
/// use steadfast_saga::store::Event;
/// let e = Event::new("recovered").detail("claimed after lease expiry");
/// assert_eq!(e.kind, "recovered");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Kind.
    pub kind: String,
    /// Step.
    pub step: Option<String>,
    /// Phase.
    pub phase: Option<Phase>,
    /// Detail.
    pub detail: Option<String>,
}

impl Event {
    /// An event of this kind.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::store::Event::new("x").kind, "x");
    /// ```
    pub fn new(kind: impl Into<String>) -> Self {
        Event {
            kind: kind.into(),
            step: None,
            phase: None,
            detail: None,
        }
    }

    /// About this step phase.
    ///
    /// ```
    /// # use steadfast_saga::{store::Event, Phase};
    /// let e = steadfast_saga::store::Event::new("x").step("a", Phase::Forward);
    /// assert_eq!(e.step.as_deref(), Some("a"));
    /// ```
    pub fn step(mut self, step: impl Into<String>, phase: Phase) -> Self {
        self.step = Some(step.into());
        self.phase = Some(phase);
        self
    }

    /// With a detail.
    ///
    /// ```
    /// assert!(steadfast_saga::store::Event::new("x").detail("d").detail.is_some());
    /// ```
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// One atomic, fenced change to a saga: an optional step record upsert, optional saga field
/// updates, and a history event, all in one transaction.
///
/// ```
/// use steadfast_saga::{store::{Event, StepRecord, StepState, Transition}, Phase, SagaStatus};
/// let t = Transition::new(Event::new("step_succeeded").step("a", Phase::Forward))
///     .step(StepRecord { step: "a".into(), phase: Phase::Forward, state: StepState::Succeeded,
///         attempts: 1, output: Some("1".into()), error: None })
///     .cursor(1);
/// assert_eq!(t.cursor, Some(1));
/// let done = Transition::new(Event::new("completed")).status(SagaStatus::Completed);
/// assert_eq!(done.status, Some(SagaStatus::Completed));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// Step record to insert or replace.
    pub step: Option<StepRecord>,
    /// New status.
    pub status: Option<SagaStatus>,
    /// New compensating flag.
    pub compensating: Option<bool>,
    /// New cursor.
    pub cursor: Option<i64>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<String>>,
    /// Reset the recovery count to zero (an operator's resume).
    pub reset_recoveries: bool,
    /// Mark the saga past its point of no return (the start of its pivot or of a retriable
    /// step); never cleared.
    pub forward_only: bool,
    /// Refuse the transition with [`Error::CancelRequested`] when a cancel has been requested
    /// (the start of a step never attempted before: a cancelled saga starts no new step).
    pub unless_cancelled: bool,
    /// The history event.
    pub event: Event,
}

impl Transition {
    /// A transition that only records `event`.
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// assert!(Transition::new(Event::new("note")).step.is_none());
    /// ```
    pub fn new(event: Event) -> Self {
        Transition {
            step: None,
            status: None,
            compensating: None,
            cursor: None,
            error: None,
            reset_recoveries: false,
            forward_only: false,
            unless_cancelled: false,
            event,
        }
    }

    /// Upserts a step record.
    ///
    /// ```
    /// # use steadfast_saga::{store::{Event, StepRecord, StepState, Transition}, Phase};
    /// let t = Transition::new(Event::new("x")).step(StepRecord { step: "a".into(),
    ///     phase: Phase::Forward, state: StepState::Started, attempts: 1, output: None, error: None });
    /// assert!(t.step.is_some());
    /// ```
    pub fn step(mut self, record: StepRecord) -> Self {
        self.step = Some(record);
        self
    }

    /// Sets the status.
    ///
    /// ```
    /// # use steadfast_saga::{store::{Event, Transition}, SagaStatus};
    /// assert!(Transition::new(Event::new("x")).status(SagaStatus::Running).status.is_some());
    /// ```
    pub fn status(mut self, status: SagaStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the compensating flag.
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// assert_eq!(Transition::new(Event::new("x")).compensating(true).compensating, Some(true));
    /// ```
    pub fn compensating(mut self, yes: bool) -> Self {
        self.compensating = Some(yes);
        self
    }

    /// Sets the cursor.
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// assert_eq!(Transition::new(Event::new("x")).cursor(2).cursor, Some(2));
    /// ```
    pub fn cursor(mut self, cursor: i64) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Sets (or with `None`, clears) the kept error.
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// let t = Transition::new(Event::new("x")).error(Some("boom".into()));
    /// assert_eq!(t.error, Some(Some("boom".into())));
    /// ```
    pub fn error(mut self, error: Option<String>) -> Self {
        self.error = Some(error);
        self
    }

    /// Resets the recovery count.
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// assert!(Transition::new(Event::new("x")).reset_recoveries().reset_recoveries);
    /// ```
    pub fn reset_recoveries(mut self) -> Self {
        self.reset_recoveries = true;
        self
    }

    /// Marks the saga past its point of no return (its pivot or a retriable step starts).
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// assert!(Transition::new(Event::new("x")).forward_only().forward_only);
    /// ```
    pub fn forward_only(mut self) -> Self {
        self.forward_only = true;
        self
    }

    /// Refuses the transition (nothing written, [`Error::CancelRequested`]) if a cancel has been
    /// requested: for the start of a step never attempted before.
    ///
    /// ```
    /// # use steadfast_saga::store::{Event, Transition};
    /// assert!(Transition::new(Event::new("x")).unless_cancelled().unless_cancelled);
    /// ```
    pub fn unless_cancelled(mut self) -> Self {
        self.unless_cancelled = true;
        self
    }
}

/// The durable saga log. Implementations must pass [`conformance::run_all`].
///
/// Contract:
/// - `create` is idempotent per (saga type, business key) and leases the new saga (epoch 1) to
///   the creator;
/// - `record` applies a [`Transition`] atomically and only if the lease epoch is still current,
///   else fails with [`Error::Fenced`]; nothing of a refused transition is written;
/// - `claim_expired` takes active sagas — and sagas whose stored status cannot be read — whose
///   lease expired on the store's clock, bumping each one's epoch and recovery count, and never
///   hands one saga to two claimers;
/// - no row, whatever its columns hold, makes `claim_expired` or `list` fail: a row a claim cannot
///   hand out (its id is not a saga id, its lease epoch cannot be increased) is *set aside* by
///   that claim — put in `NeedsAttention` with the reason as its kept error — and takes no place
///   in the batch;
/// - `load` fails with [`Error::Decode`] for a row it cannot read (never with a store error);
///   `list` reports such a row as `NeedsAttention` instead of skipping it;
/// - `take_over` claims a saga unconditionally (operator actions), bumping its epoch;
/// - `request_cancel` records a cancel atomically with respect to every transition: once it is
///   recorded, a transition marked [`Transition::unless_cancelled`] is refused; once a
///   transition marked [`Transition::forward_only`] is written, a cancel is refused;
/// - lease times are measured on the store's clock (the database's `now()`);
/// - a lease, lease extension or deadline longer than [`MAX_SPAN`] is refused with
///   [`Error::Config`] naming it, and nothing is written.
///
/// ```
/// use std::sync::Arc;
/// use steadfast_saga::store::{MemoryStore, SagaStore};
/// let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
/// # let _ = store;
/// ```
pub trait SagaStore: Send + Sync + fmt::Debug + 'static {
    /// Creates a saga, or finds the one with the same (type, business key).
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created>;

    /// Loads a saga and its step records. [`Error::NotFound`] or [`Error::Decode`] (an
    /// unreadable status, state or phase).
    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord>;

    /// Applies a transition if `lease` is current ([`Error::Fenced`] otherwise).
    fn record<'a>(&'a self, lease: &'a Lease, transition: Transition) -> StoreFuture<'a, ()>;

    /// Extends the lease to `lease_for` from now if it is current ([`Error::Fenced`] otherwise).
    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()>;

    /// Gives the lease up (expires it now) if it is current, so another orchestrator may claim
    /// the saga at once. Not an error when fenced.
    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()>;

    /// Claims up to `limit` sagas whose lease has expired, for `lease_for`: active ones, and
    /// ones whose stored status cannot be read (the orchestrator puts those in
    /// `NeedsAttention`). Rows it cannot hand out are set aside (see the trait's contract) and
    /// do not count against `limit`.
    fn claim_expired<'a>(
        &'a self,
        owner: &'a str,
        lease_for: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Lease>>;

    /// Claims one saga whatever its lease (operator actions), for `lease_for`.
    fn take_over<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease_for: Duration,
    ) -> StoreFuture<'a, Lease>;

    /// Lists the sagas `query` selects, oldest first. A row that cannot be decoded is listed as
    /// `NeedsAttention` with the decode error (see [`SagaSummary::status`]), so a query for
    /// `NeedsAttention` includes it; one whose id cannot be read is listed under the nil id (see
    /// [`SagaSummary::id`]).
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Vec<SagaSummary>>;

    /// A saga's history, in order.
    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>>;

    /// Records an operator's cancel of a saga that is running or waiting for an operator, and
    /// not past its point of no return: from then on the saga starts no new step (its
    /// `unless_cancelled` transitions are refused) and its run compensates. Not fenced by a
    /// lease (the saga's owner keeps its lease and finishes the step in flight); atomic with
    /// respect to the owner's writes, so a pivot that starts first refuses the cancel and a
    /// cancel recorded first refuses the pivot's start. One history entry,
    /// `cancel_requested`, at the saga's current epoch; a second request keeps the first
    /// reason and writes nothing.
    ///
    /// Returns the saga's status (`Running` or `NeedsAttention`: recorded; `Compensating`:
    /// already undoing, nothing written), or [`Error::CancelRefused`] (ended, past its pivot,
    /// or stuck compensating), [`Error::NotFound`], [`Error::Decode`].
    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus>;
}

/// Why a cancel that was not recorded was not: the answer of
/// [`SagaStore::request_cancel`] once its conditional write changed nothing, from what the row
/// holds now.
pub(crate) fn cancel_verdict(
    id: SagaId,
    status: SagaStatus,
    compensating: bool,
    forward_only: bool,
) -> Result<SagaStatus, Error> {
    use crate::error::{CancelRefusal, CancelRefused};
    let refuse = |why| {
        Err(Error::CancelRefused(CancelRefused {
            saga: id,
            refusal: why,
        }))
    };
    match status {
        SagaStatus::Completed | SagaStatus::Compensated => refuse(CancelRefusal::Ended(status)),
        SagaStatus::Compensating => Ok(status),
        SagaStatus::NeedsAttention if compensating => refuse(CancelRefusal::CompensationStuck),
        _ if forward_only => refuse(CancelRefusal::PastPivot),
        // Requested before: the first request stands.
        _ => Ok(status),
    }
}

/// A saga whose lease epoch is at its maximum: no claim or take-over can fence its last owner.
pub(crate) fn epoch_exhausted(id: SagaId) -> Error {
    Error::InvalidOperation(format!(
        "saga {id}: its lease epoch is at its maximum and cannot be increased to fence its \
         last owner"
    ))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_err(id: Option<SagaId>, what: &str, detail: impl fmt::Display) -> Error {
    Error::Decode(crate::error::Decode {
        saga: id,
        what: what.to_string(),
        detail: detail.to_string(),
    })
}

/// Begins a transaction on a task of its own and waits for it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
///
/// sqlx's `begin` is not cancel-safe (0.8.6): a caller dropped while it runs — the orchestrator
/// drops a heartbeat that does not answer in time, and a run's pending write when its lease is
/// lost — can hand the connection back to the pool inside the transaction it began, with no
/// `Transaction` left to end it. In SQLite that connection then holds the database's write lock
/// for good (every other writer gets "database is locked", every later `BEGIN IMMEDIATE` on it
/// fails); PostgreSQL's `begin` has the same gap (the connection can be left in a transaction
/// its next user's statements then run in). On its own task the begin always finishes; when the caller is gone
/// by then, the `Transaction` is dropped there, which rolls it back. Everything after the begin
/// is cancel-safe: a dropped `Transaction` rolls back.
pub(crate) async fn begin_detached<T: Send + 'static>(
    begin: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, Error> {
    match tokio::spawn(begin).await {
        Ok(tx) => Ok(tx?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Store(Box::new(e))),
    }
}

/// The longest lease, lease extension or saga deadline a store keeps: 100 years of 365 days.
/// A store refuses a longer one with [`Error::Config`] naming it (`lease`, `lease_for`,
/// `deadline`) before it writes anything: each is added to the store's clock, which must not
/// overflow. The orchestrator's builder and [`SagaBuilder::deadline`](crate::SagaBuilder::deadline)
/// refuse them first.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use steadfast_saga::store::{MemoryStore, NewSaga, SagaStore, MAX_SPAN};
/// use steadfast_saga::{Error, SagaId};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new();
/// let new = NewSaga {
///     id: SagaId::nil(),
///     saga_type: "trip".into(),
///     version: 1,
///     business_key: "k".into(),
///     input: "{}".into(),
///     deadline: Some(MAX_SPAN + Duration::from_secs(1)),
///     first_step: None,
///     forward_only: false,
/// };
/// let err = store.create(new, "me", Duration::from_secs(30)).await.unwrap_err();
/// assert!(matches!(&err, Error::Config(e) if e.path() == "deadline"), "{err}");
/// # }
/// ```
pub const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `Ok` if a store can keep `d` as `path` (at most [`MAX_SPAN`]), else the error naming it.
pub(crate) fn check_span(path: &'static str, d: Duration) -> Result<(), Error> {
    if d > MAX_SPAN {
        return Err(Error::Config(crate::ConfigError::out_of_range(
            path,
            d,
            "[0, 100 years]",
        )));
    }
    Ok(())
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Maps a column that holds a value of the wrong type (or text that is not UTF-8) to
/// [`Error::Decode`] for saga `id`; other driver errors stay store errors.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn column<T>(id: SagaId, what: &str, r: Result<T, sqlx::Error>) -> Result<T, Error> {
    r.map_err(|e| match e {
        e @ sqlx::Error::ColumnDecode { .. } => decode_err(Some(id), what, e),
        e => Error::from(e),
    })
}

/// A listing row read column by column: a column that cannot be read does not hide the saga.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct SummaryParts {
    pub(crate) id: SagaId,
    pub(crate) saga_type: Result<String, Error>,
    pub(crate) business_key: Result<String, Error>,
    pub(crate) status: Result<String, Error>,
    pub(crate) error: Result<Option<String>, Error>,
    pub(crate) recoveries: Result<i64, Error>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl SummaryParts {
    /// The summary; with every decode problem in `error` and the status `NeedsAttention` when
    /// the stored status cannot be read.
    pub(crate) fn into_summary(self) -> SagaSummary {
        let id = self.id;
        let mut problems = Vec::new();
        let mut keep = |r: Result<String, Error>| {
            r.unwrap_or_else(|e| {
                problems.push(e.to_string());
                String::new()
            })
        };
        let saga_type = keep(self.saga_type);
        let business_key = keep(self.business_key);
        let status = self.status.and_then(|s| {
            SagaStatus::from_str(&s).map_err(|e| decode_err(Some(id), "the saga status", e))
        });
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                problems.push(e.to_string());
                SagaStatus::NeedsAttention
            }
        };
        let recoveries = self.recoveries.and_then(|n| {
            u32::try_from(n).map_err(|e| decode_err(Some(id), "the recovery count", e))
        });
        let recoveries = recoveries.unwrap_or_else(|e| {
            problems.push(e.to_string());
            0
        });
        let kept = self.error.unwrap_or_else(|e| {
            problems.push(e.to_string());
            None
        });
        let error = if problems.is_empty() {
            kept
        } else {
            let mut text = problems.join("; ");
            if let Some(k) = kept {
                text.push_str("; kept error: ");
                text.push_str(&k);
            }
            Some(text)
        };
        SagaSummary {
            id,
            saga_type,
            business_key,
            status,
            error,
            recoveries,
        }
    }
}

#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod tests {
    use super::SagaStatus;

    fn sql_list(statuses: impl Iterator<Item = SagaStatus>) -> String {
        let quoted: Vec<String> = statuses.map(|s| format!("'{}'", s.as_str())).collect();
        format!("({})", quoted.join(", "))
    }

    #[test]
    fn the_sql_status_lists_match_the_enum() {
        assert_eq!(
            settled_statuses_sql!(),
            sql_list(SagaStatus::ALL.into_iter().filter(|s| !s.is_active()))
        );
        assert_eq!(known_statuses_sql!(), sql_list(SagaStatus::ALL.into_iter()));
    }
}

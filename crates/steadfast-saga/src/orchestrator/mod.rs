//! Running sagas: forward execution, compensation, leases with heartbeats and self-fencing,
//! recovery of abandoned sagas, and the operator API.
//!
//! By concern: this module holds the public API and its builder (start, wait); `operator` the
//! operator API (list, get, history, resume, retry a step, resolve, cancel); `recovery` the
//! claims of abandoned sagas and the lease keeping of every run; `run` one run of one saga,
//! kept in memory from its creation or claim to its end; `step` the attempts of one step phase.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use steadfast_layers::rng::{SeededRng, SharedRng};
use steadfast_layers::ConfigError;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::definition::{DefinitionInner, Payload, SagaDefinition, StepKind};
use crate::error::{DefinitionChanged, Error};
use crate::keys::{Phase, SagaId};
use crate::store::{
    Created, NewSaga, SagaRecord, SagaStatus, SagaStore, StepRecord, StepState, MAX_SPAN,
};
use crate::telemetry::{Metrics, SagaCounter, SagaTelemetry};

#[cfg(feature = "test-hooks")]
mod hooks;
mod operator;
mod recovery;
mod run;
mod step;

#[cfg(feature = "test-hooks")]
pub use hooks::{Boundary, BoundaryInfo, SagaHooks};
pub use operator::Resolution;

use run::{Known, Run, RunCx};

/// The default lease: 10 s. Heartbeats renew it every third of that; an orchestrator that dies
/// leaves its sagas to be claimed at most one lease plus one poll interval later (12 s with the
/// defaults, inside the 15 s target).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The shortest lease an orchestrator accepts: 30 ms (heartbeats renew it every third).
const MIN_LEASE: Duration = Duration::from_millis(30);
/// The default interval between two claims of expired leases: 2 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The default number of recoveries after which a saga goes to `NeedsAttention` (DBOS's cap).
pub const DEFAULT_MAX_RECOVERIES: u32 = 100;

/// What [`Orchestrator::start`] did.
///
/// ```
/// use steadfast_saga::{SagaId, Started};
/// let s = Started { id: SagaId::nil(), created: false };
/// assert!(!s.created);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    /// The saga's id.
    pub id: SagaId,
    /// False when a saga with this business key already existed (nothing new was started).
    pub created: bool,
}

/// A registered definition, its input type erased.
trait Runner: Send + Sync {
    fn version(&self) -> u32;
    fn step_names(&self) -> Vec<Arc<str>>;
    /// Runs a saga of this definition from its stored record (a claimed or taken-over saga:
    /// the one read of the run).
    fn run_loaded(
        &self,
        cx: RunCx,
        record: SagaRecord,
    ) -> futures::future::BoxFuture<'static, Result<SagaStatus, Error>>;
    /// For [`Orchestrator::start`]: the typed definition.
    fn as_any(&self) -> &dyn Any;
}

struct DefRunner<I> {
    def: Arc<DefinitionInner<I>>,
    saga_type: Arc<str>,
}

impl<I: Payload> Runner for DefRunner<I> {
    fn version(&self) -> u32 {
        self.def.version
    }
    fn step_names(&self) -> Vec<Arc<str>> {
        self.def.names.iter().cloned().collect()
    }
    fn run_loaded(
        &self,
        cx: RunCx,
        record: SagaRecord,
    ) -> futures::future::BoxFuture<'static, Result<SagaStatus, Error>> {
        let def = Arc::clone(&self.def);
        Box::pin(async move {
            match Run::from_record(def, cx.clone(), record) {
                Ok(run) => run.drive().await,
                Err(why) => cx.attention(why).await,
            }
        })
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct Inner {
    store: Arc<dyn SagaStore>,
    registry: HashMap<String, Arc<dyn Runner>>,
    owner: String,
    lease: Duration,
    poll_interval: Duration,
    claim_batch: u32,
    max_recoveries: u32,
    rng: SharedRng,
    #[cfg(feature = "test-hooks")]
    hooks: Option<Arc<dyn SagaHooks>>,
    metrics: Metrics,
    running: Mutex<HashMap<SagaId, watch::Receiver<RunState>>>,
}

/// Runs sagas against a [`SagaStore`]: starts them, drives them forward or compensates them,
/// renews their leases, claims abandoned ones, and exposes the operator API. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use steadfast_saga::{store::MemoryStore, Orchestrator, Saga, SagaStatus, Step, StepContext, StepError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
/// let mut b = Saga::builder::<u32>("double");
/// b.step(Step::retriable("double", |c: StepContext<u32>| async move { Ok::<_, StepError>(*c.input() * 2) }));
/// let def = b.build()?;
/// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build()?;
/// let started = orch.start(&def, "order-1", &21).await?;
/// assert_eq!(orch.wait(started.id).await?, SagaStatus::Completed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("owner", &self.inner.owner)
            .field("lease", &self.inner.lease)
            .field(
                "saga_types",
                &self.inner.registry.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Configures an [`Orchestrator`]; see [`Orchestrator::builder`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use steadfast_saga::{store::MemoryStore, Orchestrator};
/// let orch = Orchestrator::builder(Arc::new(MemoryStore::new()))
///     .owner("orders-eu-1")
///     .lease(Duration::from_secs(6))
///     .poll_interval(Duration::from_secs(1))
///     .build()
///     .unwrap();
/// assert_eq!(orch.owner(), "orders-eu-1");
/// ```
pub struct OrchestratorBuilder {
    store: Arc<dyn SagaStore>,
    registry: HashMap<String, Arc<dyn Runner>>,
    errors: Vec<String>,
    owner: Option<String>,
    lease: Duration,
    poll_interval: Duration,
    claim_batch: u32,
    max_recoveries: u32,
    rng: Option<SharedRng>,
    #[cfg(feature = "test-hooks")]
    hooks: Option<Arc<dyn SagaHooks>>,
    telemetry: SagaTelemetry,
}

impl fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl OrchestratorBuilder {
    /// Registers a definition: sagas of its type can be started, recovered and resumed.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Saga, Step, StepContext, StepError};
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// # let def = b.build().unwrap();
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build();
    /// assert!(orch.is_ok());
    /// ```
    pub fn register<I: Payload>(mut self, def: &SagaDefinition<I>) -> Self {
        let name = def.inner.name.clone();
        if self.registry.contains_key(&name) {
            self.errors
                .push(format!("saga type {name:?} is registered twice"));
        }
        self.registry.insert(
            name,
            Arc::new(DefRunner {
                def: Arc::clone(&def.inner),
                saga_type: Arc::from(def.inner.name.as_str()),
            }),
        );
        self
    }

    /// This orchestrator's owner id, written into leases (default: `orchestrator-<random>`).
    /// Must be unique among live orchestrators.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).owner("a").build().unwrap();
    /// assert_eq!(o.owner(), "a");
    /// ```
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The lease length (default [`DEFAULT_LEASE`], at least 30 ms, at most [`MAX_SPAN`]).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// let bad = Orchestrator::builder(Arc::new(MemoryStore::new())).lease(Duration::ZERO).build();
    /// assert!(bad.is_err());
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often the recovery loop claims expired leases (default [`DEFAULT_POLL_INTERVAL`],
    /// at most [`MAX_SPAN`]).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).poll_interval(Duration::from_millis(200)).build();
    /// assert!(o.is_ok());
    /// ```
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How many sagas one claim takes at most (default 16).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// assert!(Orchestrator::builder(Arc::new(MemoryStore::new())).claim_batch(0).build().is_err());
    /// ```
    pub fn claim_batch(mut self, n: u32) -> Self {
        self.claim_batch = n;
        self
    }

    /// Recoveries after which a saga goes to `NeedsAttention` (default
    /// [`DEFAULT_MAX_RECOVERIES`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// assert!(Orchestrator::builder(Arc::new(MemoryStore::new())).max_recoveries(5).build().is_ok());
    /// ```
    pub fn max_recoveries(mut self, n: u32) -> Self {
        self.max_recoveries = n;
        self
    }

    /// The random source for saga ids and backoff jitter (default: seeded from entropy).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// use steadfast_layers::rng::SeededRng;
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).rng(Arc::new(SeededRng::new(7))).build();
    /// assert!(o.is_ok());
    /// ```
    pub fn rng(mut self, rng: SharedRng) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Installs boundary hooks (fault injection; feature `test-hooks`, never in production).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use futures::future::BoxFuture;
    /// # use steadfast_saga::{store::MemoryStore, BoundaryInfo, Orchestrator, SagaHooks};
    /// #[derive(Debug)] struct Nop;
    /// impl SagaHooks for Nop { fn at_boundary(&self, _: &BoundaryInfo<'_>) -> BoxFuture<'static, ()> { Box::pin(async {}) } }
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).hooks(Arc::new(Nop)).build();
    /// assert!(o.is_ok());
    /// ```
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn hooks(mut self, hooks: Arc<dyn SagaHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Where metrics go.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, telemetry::SagaTelemetry, Orchestrator};
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).telemetry(SagaTelemetry::new().name("x")).build();
    /// assert!(o.is_ok());
    /// ```
    pub fn telemetry(mut self, telemetry: SagaTelemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The orchestrator's own settings, each refused with its name as the path.
    fn check_settings(&self) -> Result<(), ConfigError> {
        if self.lease < MIN_LEASE || self.lease > MAX_SPAN {
            return Err(ConfigError::out_of_range(
                "lease",
                self.lease,
                "[30 ms, 100 years]",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::zero("poll_interval"));
        }
        if self.poll_interval > MAX_SPAN {
            return Err(ConfigError::out_of_range(
                "poll_interval",
                self.poll_interval,
                "(0, 100 years]",
            ));
        }
        if self.claim_batch == 0 {
            return Err(ConfigError::zero("claim_batch"));
        }
        if self.max_recoveries == 0 {
            return Err(ConfigError::zero("max_recoveries"));
        }
        if let Some(o) = &self.owner {
            if o.is_empty() || o.len() > 200 {
                return Err(ConfigError::out_of_range(
                    "owner",
                    o.len(),
                    "[1, 200] bytes",
                ));
            }
        }
        Ok(())
    }

    /// Validates and builds: a setting that cannot work is an [`Error::Config`] naming it
    /// (`lease`, `poll_interval`, `claim_batch`, `max_recoveries`, `owner`), an invalid
    /// registered definition an [`Error::InvalidDefinition`].
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use steadfast_saga::{store::MemoryStore, Error, Orchestrator};
    /// assert!(Orchestrator::builder(Arc::new(MemoryStore::new())).build().is_ok());
    /// let store = || Arc::new(MemoryStore::new());
    /// let err = Orchestrator::builder(store()).lease(Duration::from_millis(10)).build().unwrap_err();
    /// assert!(matches!(&err, Error::Config(e) if e.path() == "lease"));
    /// assert_eq!(err.to_string(), "invalid configuration: `lease` = 10ms is outside [30 ms, 100 years]");
    /// for (builder, path) in [
    ///     (Orchestrator::builder(store()).lease(Duration::MAX), "lease"),
    ///     (Orchestrator::builder(store()).poll_interval(Duration::ZERO), "poll_interval"),
    ///     (Orchestrator::builder(store()).poll_interval(Duration::MAX), "poll_interval"),
    ///     (Orchestrator::builder(store()).claim_batch(0), "claim_batch"),
    ///     (Orchestrator::builder(store()).max_recoveries(0), "max_recoveries"),
    ///     (Orchestrator::builder(store()).owner(""), "owner"),
    /// ] {
    ///     assert!(matches!(builder.build(), Err(Error::Config(e)) if e.path() == path));
    /// }
    /// ```
    pub fn build(self) -> Result<Orchestrator, Error> {
        self.check_settings()?;
        if !self.errors.is_empty() {
            return Err(Error::InvalidDefinition(self.errors.join("; ")));
        }
        let rng = self
            .rng
            .unwrap_or_else(|| Arc::new(SeededRng::from_entropy()));
        let owner = self
            .owner
            .unwrap_or_else(|| format!("orchestrator-{:016x}", rng.next_u64()));
        let metrics = Metrics::new(&self.telemetry);
        for saga_type in self.registry.keys() {
            metrics.start_at_zero(&Arc::from(saga_type.as_str()));
        }
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                store: self.store,
                registry: self.registry,
                owner,
                lease: self.lease,
                poll_interval: self.poll_interval,
                claim_batch: self.claim_batch,
                max_recoveries: self.max_recoveries,
                rng,
                #[cfg(feature = "test-hooks")]
                hooks: self.hooks,
                metrics,
                running: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Orchestrator {
    /// A builder over `store`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// let b = Orchestrator::builder(Arc::new(MemoryStore::new()));
    /// # let _ = b;
    /// ```
    pub fn builder(store: Arc<dyn SagaStore>) -> OrchestratorBuilder {
        OrchestratorBuilder {
            store,
            registry: HashMap::new(),
            errors: Vec::new(),
            owner: None,
            lease: DEFAULT_LEASE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            claim_batch: 16,
            max_recoveries: DEFAULT_MAX_RECOVERIES,
            rng: None,
            #[cfg(feature = "test-hooks")]
            hooks: None,
            telemetry: SagaTelemetry::default(),
        }
    }

    /// This orchestrator's owner id.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(o.owner().starts_with("orchestrator-"));
    /// ```
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The store.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// let o = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let _store = o.store();
    /// ```
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.inner.store
    }

    /// Starts a saga of `def` for `business_key`, or finds the one already started with that
    /// key (then nothing new runs: `created` is false). The new saga runs on a spawned task;
    /// use [`Orchestrator::wait`] for its end.
    ///
    /// Fails with [`Error::UnknownSagaType`] or [`Error::DefinitionChanged`] when `def` is not
    /// the definition registered under its name ([`Error::InvalidOperation`] when that one has
    /// another input type), and with [`Error::Encode`] when the input cannot be written as JSON
    /// or its JSON does not read back as `I`; nothing is written then.
    ///
    /// The run keeps the saga in memory from here on: it reads nothing back from the store.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Saga, Step, StepContext, StepError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// # let def = b.build().unwrap();
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build().unwrap();
    /// let a = orch.start(&def, "k", &()).await.unwrap();
    /// let b = orch.start(&def, "k", &()).await.unwrap();
    /// assert_eq!(a.id, b.id);
    /// assert!(a.created && !b.created);
    /// # }
    /// ```
    pub async fn start<I: Payload>(
        &self,
        def: &SagaDefinition<I>,
        business_key: &str,
        input: &I,
    ) -> Result<Started, Error> {
        let registered = self.registered(def)?;
        let json = serde_json::to_string(input).map_err(|e| Error::Encode(e.to_string()))?;
        // The run works on the input as every later run of the saga will: read back from its
        // stored text. One that does not read back is refused before anything is written.
        let input: I = serde_json::from_str(&json).map_err(|e| {
            Error::Encode(format!(
                "the input's JSON does not read back as the input type: {e}"
            ))
        })?;
        // A first stage of one step starts with the saga: its first attempt's `Started` record
        // is written in the creating transaction (so it is durable before the call, as every
        // start is), and the run goes straight to the call.
        let (first_step, forward_only) = match registered.def.stages.first().map(Vec::as_slice) {
            Some([s]) => (
                Some(StepRecord {
                    step: s.name.to_string(),
                    phase: Phase::Forward,
                    state: StepState::Started,
                    attempts: 1,
                    output: None,
                    error: None,
                }),
                // A saga that starts with its pivot is past its point of no return at once.
                s.kind != StepKind::Compensatable,
            ),
            _ => (None, false),
        };
        // The run's copy of that record (state and attempts: no copy of the name).
        let first_known = first_step.as_ref().map(|r| Known {
            state: r.state,
            attempts: r.attempts,
            error: None,
        });
        let new = NewSaga {
            id: SagaId::random(&*self.inner.rng),
            saga_type: registered.def.name.clone(),
            version: registered.def.version,
            business_key: business_key.to_string(),
            input: json,
            deadline: registered.def.deadline,
            first_step,
            forward_only,
        };
        let obtained = Instant::now();
        match self
            .inner
            .store
            .create(new, &self.inner.owner, self.inner.lease)
            .await?
        {
            Created::New(lease) => {
                let saga_type = Arc::clone(&registered.saga_type);
                self.inner.metrics.count(SagaCounter::Started, &saga_type);
                let id = lease.saga;
                // Everything the run needs is in hand: it starts from memory, not the store.
                let cx = RunCx::new(&self.inner, lease, saga_type, Some(obtained));
                let run = Run::fresh(
                    Arc::clone(&registered.def),
                    cx.clone(),
                    Arc::new(input),
                    first_known,
                    obtained,
                );
                let span = recovery::run_span(&cx.inner, &cx.lease);
                span.record("saga_type", &*cx.saga_type);
                self.spawn_run(
                    id,
                    Box::pin(recovery::supervise(cx, obtained, run.drive()).instrument(span)),
                );
                Ok(Started { id, created: true })
            }
            Created::Existing(id) => Ok(Started { id, created: false }),
        }
    }

    /// The definition registered under `def`'s name, checked against `def`.
    fn registered<I: Payload>(&self, def: &SagaDefinition<I>) -> Result<&DefRunner<I>, Error> {
        let runner = self
            .inner
            .registry
            .get(&def.inner.name)
            .ok_or_else(|| Error::UnknownSagaType(def.inner.name.clone()))?;
        if runner.version() != def.inner.version {
            return Err(Error::DefinitionChanged(DefinitionChanged {
                saga_type: def.inner.name.clone(),
                stored: def.inner.version,
                registered: runner.version(),
            }));
        }
        runner
            .as_any()
            .downcast_ref::<DefRunner<I>>()
            .ok_or_else(|| {
                Error::InvalidOperation(format!(
                    "saga type {:?} is registered with another input type",
                    def.inner.name
                ))
            })
    }

    /// Runs `run`, one run of saga `id`, on a spawned task that [`Orchestrator::wait`] follows.
    /// The run is boxed by the caller, where it is made: a run's future is large, and the task
    /// then moves a pointer, not the future, into place.
    fn spawn_run(&self, id: SagaId, run: BoxFuture<'static, Result<SagaStatus, Error>>) {
        let (tx, rx) = watch::channel(RunState::Running);
        let mine = rx.clone();
        lock(&self.inner.running).insert(id, rx);
        let ended = RunEnded {
            inner: Arc::clone(&self.inner),
            id,
            mine,
            tx,
            state: RunState::Stopped,
        };
        tokio::spawn(async move {
            let mut ended = ended;
            let result = run.await;
            // A saga this run completed or compensated stays so: its waiters need not read it.
            // Any other end (needs attention, fenced, a store error) sends them to the store;
            // so does a run that panicked (a participant's bug), when `ended` is dropped as the
            // task unwinds.
            if let Ok(status) = result {
                if status.is_terminal() {
                    ended.state = RunState::Ended(status);
                }
            }
        });
    }

    /// Waits until the saga is no longer active (completed, compensated or needs attention) and
    /// returns its status. Follows a saga run here at once (a run that completed or compensated
    /// it answers without reading the store) and any other by polling the store every poll
    /// interval.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Saga, SagaStatus, Step, StepContext, StepError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// # let def = b.build().unwrap();
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build().unwrap();
    /// let id = orch.start(&def, "k", &()).await.unwrap().id;
    /// assert_eq!(orch.wait(id).await.unwrap(), SagaStatus::Completed);
    /// # }
    /// ```
    pub async fn wait(&self, id: SagaId) -> Result<SagaStatus, Error> {
        loop {
            let local = lock(&self.inner.running).get(&id).cloned();
            if let Some(mut rx) = local {
                loop {
                    let state = *rx.borrow_and_update();
                    match state {
                        RunState::Running => {
                            if rx.changed().await.is_err() {
                                break;
                            }
                        }
                        // Written by that run under its lease, for good.
                        RunState::Ended(status) => return Ok(status),
                        RunState::Stopped => break,
                    }
                }
            }
            let rec = self.inner.store.load(id).await?;
            if !rec.status.is_active() {
                return Ok(rec.status);
            }
            if !lock(&self.inner.running).contains_key(&id) {
                tokio::time::sleep(self.inner.poll_interval).await;
            }
        }
    }
}

/// Tells a run's waiters how it ended, however it ends: dropped when its task returns or
/// unwinds. Without it, a run that panicked left its entry in `running`, and its waiters
/// followed that dead run again at once, reading the store without pause.
struct RunEnded {
    inner: Arc<Inner>,
    id: SagaId,
    mine: watch::Receiver<RunState>,
    tx: watch::Sender<RunState>,
    state: RunState,
}

impl Drop for RunEnded {
    fn drop(&mut self) {
        // Remove before publishing, so that a waiter told to read the store does not find this
        // run again; not a later run of the same saga (an operator's, after this one was
        // fenced).
        {
            let mut running = lock(&self.inner.running);
            if running
                .get(&self.id)
                .is_some_and(|r| r.same_channel(&self.mine))
            {
                running.remove(&self.id);
            }
        }
        let _ = self.tx.send(self.state);
    }
}

/// Where a run spawned here is, for [`Orchestrator::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    /// The run completed or compensated the saga (written under its lease).
    Ended(SagaStatus),
    /// The run stopped otherwise (the saga needs attention, the lease was lost, the store
    /// failed): the store knows what happens next.
    Stopped,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! Running sagas: forward execution, compensation, leases with heartbeats and self-fencing,
//! recovery of abandoned sagas, and the operator API.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{try_join_all, BoxFuture};
use serde_json::Value;
use steadfast_layers::rng::{SeededRng, SharedRng};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::definition::{DefinitionInner, Payload, SagaDefinition, StepContext, StepDef, StepKind};
use crate::error::{Decode, DefinitionChanged, Error, StepError, StepErrorKind};
use crate::keys::{Phase, SagaId, StepKey};
use crate::store::{
    Created, Event, HistoryEntry, Lease, ListQuery, NewSaga, SagaRecord, SagaStatus, SagaStore,
    SagaSummary, StepRecord, StepState, Transition,
};
use crate::telemetry::{Metrics, SagaCounter, SagaTelemetry};

/// The default lease: 10 s. Heartbeats renew it every third of that; an orchestrator that dies
/// leaves its sagas to be claimed at most one lease plus one poll interval later (12 s with the
/// defaults, inside the 15 s target).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The default interval between two claims of expired leases: 2 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The default number of recoveries after which a saga goes to `NeedsAttention` (DBOS's cap).
pub const DEFAULT_MAX_RECOVERIES: u32 = 100;

/// A point in a step attempt at which a [`SagaHooks`] implementation is called: fault
/// injection for crash tests and the lab.
///
/// ```
/// use steadfast_saga::Boundary;
/// assert_eq!(Boundary::AfterCall.as_str(), "after_call");
/// ```
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
pub trait SagaHooks: Send + Sync + fmt::Debug + 'static {
    /// Called at `at`.
    fn at_boundary(&self, at: &BoundaryInfo<'_>) -> BoxFuture<'static, ()>;
}

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

/// How an operator resolves a stuck step with [`Orchestrator::mark_resolved`].
///
/// ```
/// use steadfast_saga::Resolution;
/// let r = Resolution::Succeeded(serde_json::json!({"ticket": "T-1"}));
/// assert!(matches!(r, Resolution::Succeeded(_)));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// The step (action or compensation) is done; for an action, with this output.
    Succeeded(Value),
    /// The action definitively failed (forward steps only): the saga compensates.
    Failed(String),
}

trait Runner: Send + Sync {
    fn version(&self) -> u32;
    fn step_names(&self) -> Vec<Arc<str>>;
    fn drive(
        &self,
        run: RunCx,
        record: SagaRecord,
    ) -> BoxFuture<'static, Result<SagaStatus, Error>>;
}

struct DefRunner<I> {
    def: Arc<DefinitionInner<I>>,
}

impl<I: Payload> Runner for DefRunner<I> {
    fn version(&self) -> u32 {
        self.def.version
    }
    fn step_names(&self) -> Vec<Arc<str>> {
        self.def.names.iter().cloned().collect()
    }
    fn drive(
        &self,
        run: RunCx,
        record: SagaRecord,
    ) -> BoxFuture<'static, Result<SagaStatus, Error>> {
        let def = Arc::clone(&self.def);
        Box::pin(drive(def, run, record))
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
    hooks: Option<Arc<dyn SagaHooks>>,
    metrics: Metrics,
    running: Mutex<HashMap<SagaId, watch::Receiver<Option<SagaStatus>>>>,
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

    /// The lease length (default [`DEFAULT_LEASE`], at least 30 ms).
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

    /// How often the recovery loop claims expired leases (default [`DEFAULT_POLL_INTERVAL`]).
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

    /// Installs boundary hooks (fault injection).
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

    /// Validates and builds.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// assert!(Orchestrator::builder(Arc::new(MemoryStore::new())).build().is_ok());
    /// ```
    pub fn build(self) -> Result<Orchestrator, Error> {
        let mut errors = self.errors;
        if self.lease < Duration::from_millis(30) {
            errors.push("the lease must be at least 30 ms".into());
        }
        if self.poll_interval.is_zero() {
            errors.push("the poll interval must be positive".into());
        }
        if self.claim_batch == 0 {
            errors.push("the claim batch must be at least 1".into());
        }
        if self.max_recoveries == 0 {
            errors.push("max_recoveries must be at least 1".into());
        }
        if let Some(o) = &self.owner {
            if o.is_empty() || o.len() > 200 {
                errors.push("the owner id must have 1 to 200 bytes".into());
            }
        }
        if !errors.is_empty() {
            return Err(Error::InvalidDefinition(errors.join("; ")));
        }
        let rng = self
            .rng
            .unwrap_or_else(|| Arc::new(SeededRng::from_entropy()));
        let owner = self
            .owner
            .unwrap_or_else(|| format!("orchestrator-{:016x}", rng.next_u64()));
        let metrics = Metrics::new(&self.telemetry);
        for saga_type in self.registry.keys() {
            metrics.start_at_zero(saga_type);
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
    /// the definition registered under its name.
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
        let input = serde_json::to_string(input).map_err(|e| Error::Encode(e.to_string()))?;
        // A first stage of one step starts with the saga: its first attempt's `Started` record
        // is written in the creating transaction (so it is durable before the call, as every
        // start is), and the run below goes straight to the call.
        let (first_step, forward_only) = match def.inner.stages.first().map(Vec::as_slice) {
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
        let prestarted = first_step.is_some();
        let new = NewSaga {
            id: SagaId::random(&*self.inner.rng),
            saga_type: def.inner.name.clone(),
            version: def.inner.version,
            business_key: business_key.to_string(),
            input,
            deadline: def.inner.deadline,
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
                self.inner
                    .metrics
                    .count(SagaCounter::Started, &def.inner.name);
                let id = lease.saga;
                self.spawn_run(lease, obtained, false, prestarted);
                Ok(Started { id, created: true })
            }
            Created::Existing(id) => Ok(Started { id, created: false }),
        }
    }

    /// Runs the saga of `lease` on a spawned task. `prestarted`: this run's lease is the one
    /// `create` granted with the first step's `Started` record (attempt 1), not yet called.
    fn spawn_run(&self, lease: Lease, obtained: Instant, recovered: bool, prestarted: bool) {
        let (tx, rx) = watch::channel(None);
        let id = lease.saga;
        let mine = rx.clone();
        lock(&self.inner.running).insert(id, rx);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let status = run_saga(Arc::clone(&inner), lease, obtained, recovered, prestarted).await;
            // Remove before publishing so that a waiter that wakes up reads the store; not a
            // later run of the same saga (an operator's, after this one was fenced).
            {
                let mut running = lock(&inner.running);
                if running.get(&id).is_some_and(|r| r.same_channel(&mine)) {
                    running.remove(&id);
                }
            }
            let _ = tx.send(Some(status.unwrap_or(SagaStatus::Running)));
        });
    }

    /// Waits until the saga is no longer active (completed, compensated or needs attention) and
    /// returns its status. Follows a saga run here at once and any other by polling the store
    /// every poll interval.
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
                while rx.borrow_and_update().is_none() {
                    if rx.changed().await.is_err() {
                        break;
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

    /// Claims sagas whose lease expired (once) and runs them here; returns how many were
    /// claimed. [`Orchestrator::spawn_recovery`] calls it every poll interval.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert_eq!(orch.recover_once().await.unwrap(), 0);
    /// # }
    /// ```
    pub async fn recover_once(&self) -> Result<usize, Error> {
        let obtained = Instant::now();
        let leases = self
            .inner
            .store
            .claim_expired(&self.inner.owner, self.inner.lease, self.inner.claim_batch)
            .await?;
        let n = leases.len();
        for lease in leases {
            self.spawn_run(lease, obtained, true, false);
        }
        Ok(n)
    }

    /// Spawns the recovery loop: [`Orchestrator::recover_once`] every poll interval (plus up to
    /// 10 % jitter), for as long as the returned handle is not aborted.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let recovery = orch.spawn_recovery();
    /// recovery.abort();
    /// # }
    /// ```
    pub fn spawn_recovery(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.recover_once().await {
                    Ok(n) if n > 0 => {
                        debug!(target: "steadfast::saga", claimed = n, "claimed abandoned sagas")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(target: "steadfast::saga", error = %e, "claiming abandoned sagas failed")
                    }
                }
                let jitter = this
                    .inner
                    .poll_interval
                    .mul_f64(0.1 * this.inner.rng.next_f64());
                tokio::time::sleep(this.inner.poll_interval + jitter).await;
            }
        })
    }

    /// Lists sagas, optionally of one status and one type, oldest first (operator API).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::{ListQuery, MemoryStore}, Orchestrator, SagaStatus};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let stuck = orch.list(ListQuery::new(100).status(SagaStatus::NeedsAttention)).await.unwrap();
    /// assert!(stuck.is_empty());
    /// # }
    /// ```
    pub async fn list(&self, query: ListQuery) -> Result<Vec<SagaSummary>, Error> {
        self.inner.store.list(query).await
    }

    /// A saga's row and step records (operator API).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Error, Orchestrator, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(matches!(orch.get(SagaId::nil()).await, Err(Error::NotFound(_))));
    /// # }
    /// ```
    pub async fn get(&self, id: SagaId) -> Result<SagaRecord, Error> {
        self.inner.store.load(id).await
    }

    /// A saga's history (operator API).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Saga, Step, StepContext, StepError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// # let def = b.build().unwrap();
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build().unwrap();
    /// let id = orch.start(&def, "k", &()).await.unwrap().id;
    /// orch.wait(id).await.unwrap();
    /// let kinds: Vec<String> = orch.history(id).await.unwrap().into_iter().map(|h| h.kind).collect();
    /// // One transaction each: the saga with its step started; the step succeeded with the saga.
    /// assert_eq!(kinds, ["created", "completed"]);
    /// # }
    /// ```
    pub async fn history(&self, id: SagaId) -> Result<Vec<HistoryEntry>, Error> {
        self.inner.store.history(id).await
    }

    async fn operator_takeover(
        &self,
        id: SagaId,
        reason: &'static str,
    ) -> Result<(SagaRecord, Lease, Instant), Error> {
        let rec = self.inner.store.load(id).await?;
        if rec.status != SagaStatus::NeedsAttention {
            return Err(Error::InvalidOperation(format!(
                "saga {id} is {}, not needs_attention",
                rec.status
            )));
        }
        let obtained = Instant::now();
        let lease = self
            .inner
            .store
            .take_over(id, &self.inner.owner, self.inner.lease)
            .await?;
        self.inner.metrics.takeover(&rec.saga_type, reason);
        Ok((rec, lease, obtained))
    }

    fn resumed(rec: &SagaRecord, event: Event) -> Transition {
        let status = if rec.compensating {
            SagaStatus::Compensating
        } else {
            SagaStatus::Running
        };
        Transition::new(event)
            .status(status)
            .error(None)
            .reset_recoveries()
    }

    /// Resumes a saga in `NeedsAttention` where it stopped: a stuck step or compensation is
    /// attempted again (same key, a fresh attempt budget), the recovery count is reset, and the
    /// saga runs here — or, when this orchestrator does not register its type (an operator
    /// tool), at the next poll of one that does (the lease is released at once). For a decode
    /// error, an unknown type or a changed definition: deploy the fix first.
    ///
    /// `retry_step`, `mark_resolved` and `cancel` hand the saga on the same way.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Error, Orchestrator, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(orch.resume(SagaId::nil()).await.is_err());
    /// # }
    /// ```
    pub async fn resume(&self, id: SagaId) -> Result<(), Error> {
        let (rec, lease, obtained) = self.operator_takeover(id, "resume").await?;
        let t = Self::resumed(&rec, Event::new("operator_resume"));
        self.inner.store.record(&lease, t).await?;
        info!(target: "steadfast::saga", saga = %id, "operator resumed the saga");
        self.hand_over(lease, obtained, &rec.saga_type).await
    }

    /// After an operator's decision is written under `lease`: runs the saga here when its type
    /// is registered, or else gives the lease up at once, so that an orchestrator that runs the
    /// type claims the saga at its next poll (an operator tool, such as the `steadfast` CLI,
    /// registers no definitions). That claim counts as a recovery.
    async fn hand_over(
        &self,
        lease: Lease,
        obtained: Instant,
        saga_type: &str,
    ) -> Result<(), Error> {
        if self.inner.registry.contains_key(saga_type) {
            self.spawn_run(lease, obtained, false, false);
            Ok(())
        } else {
            self.inner.store.release(&lease).await
        }
    }

    /// Cancels a saga that has not reached its pivot: it is running, waiting (between two
    /// attempts, or abandoned by a dead orchestrator and not yet recovered) or stopped for an
    /// operator. The saga starts no new step; the step in flight, if any, runs to its end (its
    /// outcome must be known before it can be undone); then the saga compensates the steps it
    /// completed and ends `Compensated`, its error saying it was cancelled and why.
    ///
    /// The request is one conditional write, ordered against the owner's fenced writes by the
    /// store (see [`SagaStore::request_cancel`]): the owner keeps its lease, and a cancel either
    /// lands before the pivot starts (the pivot's start is then refused) or is refused with
    /// [`Error::CancelRefused`] ([`CancelRefusal::PastPivot`](crate::CancelRefusal::PastPivot)):
    /// after the pivot a saga can only go forward. Cancelling twice keeps the first reason;
    /// cancelling a saga that is already compensating changes nothing. A saga stopped for an
    /// operator is resumed to carry the cancel out: the step it stopped on is attempted again
    /// (same key) until its outcome is known, then the saga compensates.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, CancelRefusal, Error, Orchestrator, Saga, SagaStatus, Step, StepContext, StepError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// type Ctx = StepContext<()>;
    /// let mut b = Saga::builder::<()>("order");
    /// b.step(Step::compensatable(
    ///     "reserve",
    ///     |_c: Ctx| async { Ok::<(), StepError>(()) },
    ///     |_c: Ctx, _r: ()| async { Ok::<(), StepError>(()) },
    /// ));
    /// b.step(Step::pivot("charge", |_c: Ctx| async { Ok::<(), StepError>(()) }));
    /// let def = b.build()?;
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build()?;
    ///
    /// // Before its pivot: the reservation is made, then undone; the card is never charged.
    /// let early = orch.start(&def, "order-1", &()).await?.id;
    /// orch.cancel(early, "customer changed plans").await?;
    /// assert_eq!(orch.wait(early).await?, SagaStatus::Compensated);
    ///
    /// // Once it has ended (or its pivot has started), a cancel is refused.
    /// let done = orch.start(&def, "order-2", &()).await?.id;
    /// assert_eq!(orch.wait(done).await?, SagaStatus::Completed);
    /// match orch.cancel(done, "too late").await {
    ///     Err(Error::CancelRefused(r)) => {
    ///         assert_eq!(r.refusal, CancelRefusal::Ended(SagaStatus::Completed))
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: SagaId, reason: &str) -> Result<(), Error> {
        let status = self.inner.store.request_cancel(id, reason).await?;
        info!(target: "steadfast::saga", saga = %id, %status, reason, "operator cancelled the saga");
        if status == SagaStatus::NeedsAttention {
            // Nobody runs a saga that waits for an operator: resume it to carry the cancel out.
            match self.operator_takeover(id, "cancel").await {
                Ok((rec, lease, obtained)) => {
                    let event =
                        Event::new("operator_resume").detail(format!("to cancel: {reason}"));
                    let t = Self::resumed(&rec, event);
                    self.inner.store.record(&lease, t).await?;
                    self.hand_over(lease, obtained, &rec.saga_type).await?;
                }
                // Resumed meanwhile by another operator: the cancel stands.
                Err(Error::InvalidOperation(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Resets one step phase of a saga in `NeedsAttention` to "pending" (even one recorded as
    /// failed) and resumes the saga: the step is run again with the same key.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Phase, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(orch.retry_step(SagaId::nil(), "charge", Phase::Compensation).await.is_err());
    /// # }
    /// ```
    pub async fn retry_step(&self, id: SagaId, step: &str, phase: Phase) -> Result<(), Error> {
        let rec = self.inner.store.load(id).await?;
        let Some(existing) = rec
            .steps
            .iter()
            .find(|s| s.step == step && s.phase == phase)
            .cloned()
        else {
            return Err(Error::InvalidOperation(format!(
                "saga {id} has no record of step {step:?} ({phase})"
            )));
        };
        let (rec, lease, obtained) = self.operator_takeover(id, "retry_step").await?;
        let t = Self::resumed(
            &rec,
            Event::new("operator_retry")
                .step(step, phase)
                .detail("step reset to pending"),
        )
        .step(StepRecord {
            state: StepState::Pending,
            ..existing
        });
        self.inner.store.record(&lease, t).await?;
        self.hand_over(lease, obtained, &rec.saga_type).await
    }

    /// Records an operator's verdict on a stuck step phase of a saga in `NeedsAttention` (done
    /// by hand, or known to have failed) and resumes the saga from there. `note` (who, why, a
    /// ticket) is kept in the `operator_resolved` history entry.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Phase, Resolution, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let r = orch.mark_resolved(SagaId::nil(), "refund", Phase::Compensation,
    ///     Resolution::Succeeded(serde_json::Value::Null), "refunded by hand, OPS-12").await;
    /// assert!(r.is_err()); // no such saga
    /// # }
    /// ```
    pub async fn mark_resolved(
        &self,
        id: SagaId,
        step: &str,
        phase: Phase,
        resolution: Resolution,
        note: &str,
    ) -> Result<(), Error> {
        let rec = self.inner.store.load(id).await?;
        // The definition says which steps exist; without it (an operator tool), only a step
        // the saga has a record of can be resolved.
        let known = match self.inner.registry.get(&rec.saga_type) {
            Some(runner) => runner.step_names().iter().any(|n| &**n == step),
            None => rec.steps.iter().any(|s| s.step == step),
        };
        if !known {
            return Err(Error::InvalidOperation(format!(
                "saga type {:?} has no step {step:?}",
                rec.saga_type
            )));
        }
        let attempts = rec
            .steps
            .iter()
            .find(|s| s.step == step && s.phase == phase)
            .map_or(0, |s| s.attempts);
        let record = match (&resolution, phase) {
            (Resolution::Succeeded(v), _) => StepRecord {
                step: step.to_string(),
                phase,
                state: StepState::Succeeded,
                attempts,
                output: Some(if phase == Phase::Forward {
                    v.to_string()
                } else {
                    "null".to_string()
                }),
                error: None,
            },
            (Resolution::Failed(why), Phase::Forward) => StepRecord {
                step: step.to_string(),
                phase,
                state: StepState::Failed,
                attempts,
                output: None,
                error: Some(format!("resolved by an operator: {why}")),
            },
            (Resolution::Failed(_), Phase::Compensation) => {
                return Err(Error::InvalidOperation(
                    "a compensation cannot be resolved as failed: retry it or mark it done".into(),
                ))
            }
        };
        let verdict = match (&resolution, phase) {
            (Resolution::Succeeded(v), Phase::Forward) => format!("done by hand, output {v}"),
            (Resolution::Succeeded(_), Phase::Compensation) => "undone by hand".to_string(),
            (Resolution::Failed(why), _) => format!("failed: {why}"),
        };
        let detail = if note.is_empty() {
            verdict
        } else {
            format!("{verdict}; note: {note}")
        };
        let (rec, lease, obtained) = self.operator_takeover(id, "resolve").await?;
        let t = Self::resumed(
            &rec,
            Event::new("operator_resolved")
                .step(step, phase)
                .detail(detail),
        )
        .step(record);
        self.inner.store.record(&lease, t).await?;
        self.hand_over(lease, obtained, &rec.saga_type).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one run of one saga needs.
#[derive(Clone)]
struct RunCx {
    inner: Arc<Inner>,
    lease: Lease,
    saga_type: Arc<str>,
    /// The first step's first attempt was recorded as started by `create` under this lease.
    prestarted: bool,
    /// When the saga was created, on this process's clock (from its age on the store's).
    created: Option<Instant>,
}

impl RunCx {
    async fn write(&self, t: Transition) -> Result<(), Error> {
        self.inner.store.record(&self.lease, t).await
    }

    async fn hook(&self, step: &str, phase: Phase, attempt: u32, boundary: Boundary) {
        if let Some(h) = &self.inner.hooks {
            let info = BoundaryInfo {
                saga: self.lease.saga,
                saga_type: &self.saga_type,
                step,
                phase,
                attempt,
                boundary,
            };
            h.at_boundary(&info).await;
        }
    }

    async fn attention(&self, why: String) -> Result<SagaStatus, Error> {
        warn!(target: "steadfast::saga", saga = %self.lease.saga, saga_type = %self.saga_type,
            error = %why, "saga needs attention");
        self.write(
            Transition::new(Event::new("needs_attention").detail(why.clone()))
                .status(SagaStatus::NeedsAttention)
                .error(Some(why)),
        )
        .await?;
        self.inner
            .metrics
            .count(SagaCounter::NeedsAttention, &self.saga_type);
        self.ended(SagaStatus::NeedsAttention);
        let _ = self.inner.store.release(&self.lease).await;
        Ok(SagaStatus::NeedsAttention)
    }

    /// A step phase ended with `outcome`.
    fn step_ended(&self, step: &str, phase: Phase, outcome: &'static str) {
        self.inner
            .metrics
            .step_ended(&self.saga_type, step, phase.as_str(), outcome);
    }

    /// This run ended the saga with `status`: records its duration since creation.
    fn ended(&self, status: SagaStatus) {
        if let Some(created) = self.created {
            self.inner.metrics.saga_duration(
                &self.saga_type,
                status.as_str(),
                created.elapsed().as_secs_f64(),
            );
        }
    }
}

/// Counts a saga run in `steadfast.saga.in_flight` for as long as it lives.
struct InFlight {
    inner: Arc<Inner>,
    saga_type: Arc<str>,
}

impl InFlight {
    fn new(inner: &Arc<Inner>, saga_type: &Arc<str>) -> Self {
        inner.metrics.in_flight(saga_type, 1);
        InFlight {
            inner: Arc::clone(inner),
            saga_type: Arc::clone(saga_type),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.metrics.in_flight(&self.saga_type, -1);
    }
}

/// Runs one saga under `lease` until it ends, needs attention, or the lease is lost.
async fn run_saga(
    inner: Arc<Inner>,
    lease: Lease,
    obtained: Instant,
    recovered: bool,
    prestarted: bool,
) -> Result<SagaStatus, Error> {
    let id = lease.saga;
    let span = tracing::info_span!(target: "steadfast::saga", "steadfast.saga",
        saga = %id, saga_type = tracing::field::Empty, epoch = lease.epoch, owner = %inner.owner);
    let inner2 = Arc::clone(&inner);
    let fut = async move {
        let inner = inner2;
        let record = match inner.store.load(id).await {
            Ok(r) => Some(r),
            Err(Error::Decode(d)) => {
                let cx = RunCx {
                    inner: Arc::clone(&inner),
                    lease: lease.clone(),
                    saga_type: Arc::from("?"),
                    prestarted: false,
                    created: None,
                };
                return cx.attention(d.to_string()).await;
            }
            Err(e) => {
                warn!(target: "steadfast::saga", saga = %id, error = %e, "cannot load the saga");
                return Err(e);
            }
        };
        let Some(record) = record else {
            return Err(Error::NotFound(id));
        };
        tracing::Span::current().record("saga_type", record.saga_type.as_str());
        let cx = RunCx {
            inner: Arc::clone(&inner),
            lease: lease.clone(),
            saga_type: Arc::from(record.saga_type.as_str()),
            prestarted,
            created: Instant::now().checked_sub(record.age),
        };
        let _in_flight = InFlight::new(&inner, &cx.saga_type);
        if recovered {
            info!(target: "steadfast::saga", saga = %id, saga_type = %record.saga_type,
                recoveries = record.recoveries, epoch = lease.epoch, "recovering an abandoned saga");
            inner
                .metrics
                .count(SagaCounter::Recovered, &record.saga_type);
        }
        if !record.status.is_active() {
            let _ = inner.store.release(&lease).await;
            return Ok(record.status);
        }
        if recovered && record.recoveries >= inner.max_recoveries {
            return cx
                .attention(format!(
                    "recovered {} times (limit {}): the saga keeps crashing its orchestrator",
                    record.recoveries, inner.max_recoveries
                ))
                .await;
        }
        let Some(runner) = inner.registry.get(&record.saga_type).cloned() else {
            return cx
                .attention(Error::UnknownSagaType(record.saga_type.clone()).to_string())
                .await;
        };
        if runner.version() != record.version {
            let e = DefinitionChanged {
                saga_type: record.saga_type.clone(),
                stored: record.version,
                registered: runner.version(),
            };
            return cx.attention(e.to_string()).await;
        }
        let result = tokio::select! {
            biased;
            lost = keep_lease(Arc::clone(&inner), lease.clone(), obtained) => Err(lost),
            r = runner.drive(cx.clone(), record) => r,
        };
        match &result {
            Err(Error::Fenced(f)) => {
                warn!(target: "steadfast::saga", saga = %id, epoch = f.epoch,
                    "lease taken over by another orchestrator: stopped working on the saga");
                inner.metrics.count(SagaCounter::Fenced, &cx.saga_type);
            }
            Err(e) => {
                warn!(target: "steadfast::saga", saga = %id, error = %e,
                    "saga run stopped; it will be recovered when its lease expires");
            }
            Ok(s) => match s {
                SagaStatus::Completed => {
                    inner.metrics.count(SagaCounter::Completed, &cx.saga_type);
                    cx.ended(*s);
                }
                SagaStatus::Compensated => {
                    inner.metrics.count(SagaCounter::Compensated, &cx.saga_type);
                    cx.ended(*s);
                }
                // Needs attention: counted and timed where it is written.
                _ => {}
            },
        }
        result
    };
    fut.instrument(span).await
}

/// Renews the lease every third of its length; returns (and so stops the run) when the lease
/// is taken over or could not be renewed before it would expire locally. The local expiry is
/// measured from *before* each renewal was sent, minus a tenth, so this orchestrator stops
/// before the store can consider the lease expired.
async fn keep_lease(inner: Arc<Inner>, lease: Lease, obtained: Instant) -> Error {
    let len = inner.lease;
    let margin = len / 10;
    let mut expires = obtained + len - margin;
    let mut next = obtained + len / 3;
    loop {
        tokio::time::sleep_until(next.min(expires)).await;
        if Instant::now() >= expires {
            return lease_lost(&lease, "the lease could not be renewed in time");
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(expires, inner.store.heartbeat(&lease, len)).await {
            Ok(Ok(())) => {
                expires = sent + len - margin;
                next = sent + len / 3;
            }
            Ok(Err(Error::Fenced(f))) => return Error::Fenced(f),
            Ok(Err(e)) => {
                warn!(target: "steadfast::saga", saga = %lease.saga, error = %e, "lease renewal failed; retrying");
                next = Instant::now() + len / 10;
            }
            Err(_) => return lease_lost(&lease, "the lease renewal did not answer in time"),
        }
    }
}

fn lease_lost(lease: &Lease, why: &str) -> Error {
    warn!(target: "steadfast::saga", saga = %lease.saga, epoch = lease.epoch, reason = why,
        "lease lost: stopping work on the saga");
    Error::Fenced(crate::error::Fenced {
        saga: lease.saga,
        epoch: lease.epoch,
    })
}

enum StepEnd {
    Succeeded(Value),
    Failed(String),
    Stuck(String),
    /// Not started: the saga was cancelled (the operator's reason).
    Cancelled(String),
}

fn decode(id: SagaId, what: String, e: impl fmt::Display) -> String {
    Decode {
        saga: Some(id),
        what,
        detail: e.to_string(),
    }
    .to_string()
}

/// Drives a saga of a known definition from its stored state.
async fn drive<I: Payload>(
    def: Arc<DefinitionInner<I>>,
    cx: RunCx,
    record: SagaRecord,
) -> Result<SagaStatus, Error> {
    let id = record.id;
    let input: I = match serde_json::from_str(&record.input) {
        Ok(i) => i,
        Err(e) => return cx.attention(decode(id, "the saga input".into(), e)).await,
    };
    let input = Arc::new(input);
    let mut records: HashMap<(String, Phase), StepRecord> = HashMap::new();
    for r in record.steps {
        if !def.names.iter().any(|n| **n == *r.step) {
            let why = decode(
                id,
                format!("step record {:?}", r.step),
                format!("no such step in version {} of {:?}", def.version, def.name),
            );
            return cx.attention(why).await;
        }
        records.insert((r.step.clone(), r.phase), r);
    }
    let mut outputs: HashMap<usize, Value> = HashMap::new();
    for s in def.stages.iter().flatten() {
        if let Some(r) = records.get(&(s.name.to_string(), Phase::Forward)) {
            if r.state == StepState::Succeeded {
                let text = r.output.as_deref().unwrap_or("null");
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => {
                        outputs.insert(s.index, v);
                    }
                    Err(e) => {
                        return cx
                            .attention(decode(id, format!("the output of step {:?}", s.name), e))
                            .await
                    }
                }
            }
        }
    }
    let deadline = record.deadline_remaining.map(|r| Instant::now() + r);
    let mut status = record.status;
    if status == SagaStatus::Running {
        match forward(&def, &cx, &input, &records, &mut outputs, deadline).await? {
            Forward::Completed { recorded } => {
                if !recorded {
                    cx.write(
                        Transition::new(Event::new("completed"))
                            .status(SagaStatus::Completed)
                            .cursor(def.stages.len() as i64),
                    )
                    .await?;
                }
                return Ok(SagaStatus::Completed);
            }
            Forward::Attention(why) => return cx.attention(why).await,
            Forward::Cancelled(reason) => {
                cx.inner
                    .metrics
                    .count(SagaCounter::Cancelled, &cx.saga_type);
                let why = format!("cancelled by an operator: {reason}");
                info!(target: "steadfast::saga", saga = %id, reason = %why, "compensating");
                cx.write(
                    Transition::new(Event::new("compensation_started").detail(why.clone()))
                        .status(SagaStatus::Compensating)
                        .compensating(true)
                        .error(Some(why)),
                )
                .await?;
                status = SagaStatus::Compensating;
            }
            Forward::Compensate(why) => {
                info!(target: "steadfast::saga", saga = %id, reason = %why, "compensating");
                cx.write(
                    Transition::new(Event::new("compensation_started").detail(why.clone()))
                        .status(SagaStatus::Compensating)
                        .compensating(true)
                        .error(Some(why)),
                )
                .await?;
                status = SagaStatus::Compensating;
            }
        }
        // Reload step states: the forward pass wrote them.
        let rec = cx.inner.store.load(id).await?;
        records = rec
            .steps
            .into_iter()
            .map(|r| ((r.step.clone(), r.phase), r))
            .collect();
    }
    debug_assert_eq!(status, SagaStatus::Compensating);
    compensate(&def, &cx, &input, &records, &outputs).await
}

enum Forward {
    /// `recorded`: the last step's outcome already wrote the status.
    Completed {
        recorded: bool,
    },
    Compensate(String),
    /// An operator's cancel (its reason) stopped the saga before its next step.
    Cancelled(String),
    Attention(String),
}

async fn forward<I: Payload>(
    def: &Arc<DefinitionInner<I>>,
    cx: &RunCx,
    input: &Arc<I>,
    records: &HashMap<(String, Phase), StepRecord>,
    outputs: &mut HashMap<usize, Value>,
    deadline: Option<Instant>,
) -> Result<Forward, Error> {
    let mut recorded = false;
    for (si, stage) in def.stages.iter().enumerate() {
        let rec_of = |s: &StepDef<I>| records.get(&(s.name.to_string(), Phase::Forward));
        if stage
            .iter()
            .all(|s| rec_of(s).is_some_and(|r| r.state == StepState::Succeeded))
        {
            continue;
        }
        let kind = stage[0].kind;
        if kind != StepKind::Retriable && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Forward::Compensate(format!(
                "the saga deadline passed before step {:?}",
                stage[0].name
            )));
        }
        let shared = Arc::new(outputs.clone());
        let advance = (stage.len() == 1).then_some(si as i64 + 1);
        // A last stage of one step completes the saga in the write of its success.
        let finish =
            (advance.is_some() && si + 1 == def.stages.len()).then_some(SagaStatus::Completed);
        let runs = stage.iter().map(|s| {
            let prior = rec_of(s).cloned();
            // The first attempt's start was written with the saga (see `Orchestrator::start`).
            let prestarted = cx.prestarted
                && si == 0
                && advance.is_some()
                && prior
                    .as_ref()
                    .is_some_and(|p| p.state == StepState::Started && p.attempts == 1);
            let shared = Arc::clone(&shared);
            async move {
                match prior.as_ref().map(|p| p.state) {
                    Some(StepState::Succeeded) => {
                        let v = shared.get(&s.index).cloned().unwrap_or(Value::Null);
                        return Ok((s.index, StepEnd::Succeeded(v)));
                    }
                    Some(StepState::Failed) if s.kind != StepKind::Retriable => {
                        let e = prior.and_then(|p| p.error).unwrap_or_default();
                        return Ok((s.index, StepEnd::Failed(e)));
                    }
                    _ => {}
                }
                let end = run_step(
                    cx,
                    s,
                    &def.names,
                    Phase::Forward,
                    input,
                    shared,
                    if prestarted {
                        Prior::Started
                    } else {
                        Prior::Attempts(prior.map_or(0, |p| p.attempts))
                    },
                    None,
                    Ends { advance, finish },
                    deadline,
                )
                .await?;
                Ok::<_, Error>((s.index, end))
            }
        });
        let ends = try_join_all(runs).await?;
        let mut failed = None;
        let mut stuck = None;
        let mut cancelled = None;
        for (index, end) in ends {
            match end {
                StepEnd::Succeeded(v) => {
                    outputs.insert(index, v);
                }
                StepEnd::Failed(e) => failed = failed.or(Some(e)),
                StepEnd::Stuck(e) => stuck = stuck.or(Some(e)),
                StepEnd::Cancelled(r) => cancelled = cancelled.or(Some(r)),
            }
        }
        if let Some(e) = stuck {
            return Ok(Forward::Attention(e));
        }
        if let Some(e) = failed {
            return Ok(Forward::Compensate(e));
        }
        if let Some(reason) = cancelled {
            // The store refuses a cancel once the pivot has started; a saga stored before it
            // recorded that (no `forward_only`) is caught here, from its step records.
            let past_pivot = def.stages.iter().flatten().any(|s| {
                s.kind != StepKind::Compensatable
                    && (outputs.contains_key(&s.index)
                        || records.contains_key(&(s.name.to_string(), Phase::Forward)))
            });
            if past_pivot {
                return Ok(Forward::Attention(format!(
                    "cancelled ({reason}) after its pivot started: it can only go forward; \
                     resolve it by hand"
                )));
            }
            return Ok(Forward::Cancelled(reason));
        }
        recorded = finish.is_some();
        if advance.is_none() {
            cx.write(
                Transition::new(Event::new("stage_completed").detail(format!("stage {si}")))
                    .cursor(si as i64 + 1),
            )
            .await?;
        }
    }
    Ok(Forward::Completed { recorded })
}

async fn compensate<I: Payload>(
    def: &Arc<DefinitionInner<I>>,
    cx: &RunCx,
    input: &Arc<I>,
    records: &HashMap<(String, Phase), StepRecord>,
    outputs: &HashMap<usize, Value>,
) -> Result<SagaStatus, Error> {
    // Stages in reverse; with parallel compensation, one single batch.
    let mut batches: Vec<Vec<&StepDef<I>>> = Vec::new();
    for stage in def.stages.iter().rev() {
        let todo: Vec<&StepDef<I>> = stage
            .iter()
            .filter(|s| s.kind == StepKind::Compensatable)
            .filter(|s| {
                records
                    .get(&(s.name.to_string(), Phase::Forward))
                    .is_some_and(|r| r.state == StepState::Succeeded)
            })
            .filter(|s| {
                records
                    .get(&(s.name.to_string(), Phase::Compensation))
                    .is_none_or(|r| r.state != StepState::Succeeded)
            })
            .collect();
        if todo.is_empty() {
            continue;
        }
        match (def.parallel_compensation, batches.last_mut()) {
            (true, Some(b)) => b.extend(todo),
            _ => batches.push(todo),
        }
    }
    let shared = Arc::new(outputs.clone());
    let last = batches.len();
    let mut recorded = false;
    for (bi, batch) in batches.into_iter().enumerate() {
        // A last batch of one compensation ends the saga in the write of its success.
        let finish = (bi + 1 == last && batch.len() == 1).then_some(SagaStatus::Compensated);
        let runs = batch.into_iter().map(|s| {
            let prior = records.get(&(s.name.to_string(), Phase::Compensation));
            let output = outputs.get(&s.index).cloned().unwrap_or(Value::Null);
            run_step(
                cx,
                s,
                &def.names,
                Phase::Compensation,
                input,
                Arc::clone(&shared),
                Prior::Attempts(prior.map_or(0, |p| p.attempts)),
                Some(output),
                Ends {
                    advance: None,
                    finish,
                },
                None,
            )
        });
        let ends = try_join_all(runs).await?;
        if let Some(why) = ends.into_iter().find_map(|e| match e {
            StepEnd::Stuck(e) | StepEnd::Failed(e) => Some(e),
            StepEnd::Succeeded(_) | StepEnd::Cancelled(_) => None,
        }) {
            return cx.attention(why).await;
        }
        recorded = finish.is_some();
    }
    if !recorded {
        cx.write(Transition::new(Event::new("compensated")).status(SagaStatus::Compensated))
            .await?;
    }
    Ok(SagaStatus::Compensated)
}

/// What is already written of a step phase when [`run_step`] begins.
#[derive(Clone, Copy)]
enum Prior {
    /// This many attempts were started before (each may have called the participant).
    Attempts(u32),
    /// The first attempt's `Started` record is durable (written with the saga) and the
    /// participant was not called yet: the first attempt goes straight to the call.
    Started,
}

/// What a step's success also writes, in the same transaction.
#[derive(Clone, Copy)]
struct Ends {
    /// Advance the cursor to this stage.
    advance: Option<i64>,
    /// End the saga with this status (the last step): the history entry is then the status's
    /// (`completed`, `compensated`), naming the step.
    finish: Option<SagaStatus>,
}

/// Attempts one step phase until it ends: every attempt's start is written before the call,
/// and its outcome after; the key is the same on every attempt.
#[allow(clippy::too_many_arguments)]
async fn run_step<I: Payload>(
    cx: &RunCx,
    s: &StepDef<I>,
    names: &Arc<Vec<Arc<str>>>,
    phase: Phase,
    input: &Arc<I>,
    outputs: Arc<HashMap<usize, Value>>,
    prior: Prior,
    comp_output: Option<Value>,
    ends: Ends,
    deadline: Option<Instant>,
) -> Result<StepEnd, Error> {
    let saga = cx.lease.saga;
    let policy = match phase {
        Phase::Forward => s.retry,
        Phase::Compensation => s.compensation_retry,
    };
    let key = StepKey::new(saga, &s.name, phase);
    let step_name = s.name.to_string();
    let (mut attempt, mut start_written) = match prior {
        Prior::Attempts(n) => (n, false),
        Prior::Started => (0, true),
    };
    let mut used = 0u32;
    let mut prev_delay = Duration::ZERO;
    let rec = |state, attempts, output: Option<String>, error: Option<String>| StepRecord {
        step: step_name.clone(),
        phase,
        state,
        attempts,
        output,
        error,
    };
    loop {
        attempt += 1;
        used += 1;
        if !std::mem::take(&mut start_written) {
            let mut t = Transition::new(Event::new("step_started").step(&*s.name, phase))
                .step(rec(StepState::Started, attempt, None, None));
            if phase == Phase::Forward {
                if s.kind != StepKind::Compensatable {
                    // The pivot or a step after it: past the point of no return.
                    t = t.forward_only();
                }
                if attempt == 1 {
                    // A step never attempted: a cancelled saga does not start it.
                    t = t.unless_cancelled();
                }
            }
            match cx.write(t).await {
                Ok(()) => {}
                Err(Error::CancelRequested(c)) => {
                    cx.step_ended(&s.name, phase, "cancelled");
                    return Ok(StepEnd::Cancelled(c.reason));
                }
                Err(e) => return Err(e),
            }
        }
        cx.hook(&s.name, phase, attempt, Boundary::BeforeCall).await;
        let ctx = StepContext {
            saga,
            step: Arc::clone(&s.name),
            phase,
            key,
            attempt,
            epoch: cx.lease.epoch,
            input: Arc::clone(input),
            outputs: Arc::clone(&outputs),
            names: Arc::clone(names),
        };
        let span = tracing::debug_span!(target: "steadfast::saga", "steadfast.saga.step",
            step = %s.name, phase = phase.as_str(), attempt, key = %key);
        let started = Instant::now();
        let call = async {
            match phase {
                Phase::Forward => (s.action)(ctx).await,
                Phase::Compensation => match &s.compensation {
                    Some(c) => c(ctx, comp_output.clone().unwrap_or(Value::Null))
                        .await
                        .map(|()| Value::Null),
                    None => Ok(Value::Null),
                },
            }
        }
        .instrument(span);
        let result = match tokio::time::timeout(policy.attempt_timeout_config(), call).await {
            Ok(r) => r,
            Err(_) => Err(StepError::unknown(format!(
                "attempt timed out after {:?}",
                policy.attempt_timeout_config()
            ))),
        };
        let outcome = match &result {
            Ok(_) => "succeeded",
            Err(e) => e.kind().as_str(),
        };
        cx.inner.metrics.step_duration(
            &cx.saga_type,
            &s.name,
            phase.as_str(),
            outcome,
            started.elapsed().as_secs_f64(),
        );
        cx.hook(&s.name, phase, attempt, Boundary::AfterCall).await;
        let err = match result {
            Ok(v) => {
                let kind = ends.finish.map_or("step_succeeded", SagaStatus::as_str);
                let mut t = Transition::new(Event::new(kind).step(&*s.name, phase)).step(rec(
                    StepState::Succeeded,
                    attempt,
                    Some(v.to_string()),
                    None,
                ));
                if let Some(c) = ends.advance {
                    t = t.cursor(c);
                }
                if let Some(status) = ends.finish {
                    t = t.status(status);
                }
                cx.write(t).await?;
                cx.step_ended(&s.name, phase, "succeeded");
                cx.hook(&s.name, phase, attempt, Boundary::AfterWrite).await;
                return Ok(StepEnd::Succeeded(v));
            }
            Err(e) => e,
        };
        let msg = format!("step {:?} ({phase}) attempt {attempt}: {err}", s.name);
        let exhausted = policy.max_attempts().is_some_and(|m| used >= m);
        let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
        let permanent = err.kind() == StepErrorKind::Permanent;
        let transient = err.kind() == StepErrorKind::Transient;
        // A definitive "no" from the participant ends a forward step as failed, except after
        // the pivot, where steps must succeed (and so need an operator instead).
        let fails = phase == Phase::Forward
            && s.kind != StepKind::Retriable
            && (permanent || (transient && (exhausted || past_deadline)));
        if fails {
            cx.write(
                Transition::new(
                    Event::new("step_failed")
                        .step(&*s.name, phase)
                        .detail(msg.clone()),
                )
                .step(rec(StepState::Failed, attempt, None, Some(msg.clone()))),
            )
            .await?;
            cx.step_ended(&s.name, phase, "failed");
            cx.hook(&s.name, phase, attempt, Boundary::AfterWrite).await;
            return Ok(StepEnd::Failed(msg));
        }
        let state = if err.kind() == StepErrorKind::Unknown {
            StepState::Unknown
        } else {
            StepState::Pending
        };
        if permanent || exhausted {
            let why = match (phase, err.kind()) {
                (_, StepErrorKind::Unknown) => {
                    format!("outcome still unknown after {used} attempts: {msg}")
                }
                (Phase::Compensation, _) => {
                    format!("compensation keeps failing ({used} attempts): {msg}")
                }
                _ => format!("step after the pivot failed permanently: {msg}"),
            };
            cx.write(
                Transition::new(
                    Event::new("step_stuck")
                        .step(&*s.name, phase)
                        .detail(why.clone()),
                )
                .step(rec(state, attempt, None, Some(msg))),
            )
            .await?;
            cx.step_ended(&s.name, phase, "stuck");
            cx.hook(&s.name, phase, attempt, Boundary::AfterWrite).await;
            return Ok(StepEnd::Stuck(why));
        }
        let delay = policy
            .backoff_config()
            .delay(used, prev_delay, &*cx.inner.rng);
        prev_delay = delay;
        debug!(target: "steadfast::saga", saga = %saga, step = %s.name, phase = phase.as_str(),
            attempt, error = %err, delay_ms = steadfast_layers::telemetry::duration_ms(delay), "step attempt failed; retrying with the same key");
        cx.write(
            Transition::new(
                Event::new("attempt_failed")
                    .step(&*s.name, phase)
                    .detail(msg.clone()),
            )
            .step(rec(state, attempt, None, Some(msg))),
        )
        .await?;
        cx.hook(&s.name, phase, attempt, Boundary::AfterWrite).await;
        tokio::time::sleep(delay).await;
    }
}

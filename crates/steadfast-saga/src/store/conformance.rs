//! The conformance suite every [`SagaStore`] passes: the store contract (idempotent creation,
//! fenced atomic writes, claims of expired leases that never hand one saga to two claimers,
//! history, listings, decode errors) and orchestrator scenarios over the store (completion,
//! compensation, fencing, a corrupt row beside healthy sagas).
//!
//! The checks never sleep on a real clock: leases are expired with [`SagaStore::release`]. They
//! use fresh random saga types and business keys, so one store (one database schema) can host
//! any number of runs. A broken contract panics with a message naming the check.
//!
//! ```
//! use steadfast_saga::store::{conformance, MemoryStore};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = std::sync::Arc::new(MemoryStore::new());
//! // `None`: no decode checks (with the `test-hooks` feature, the shipped stores implement
//! // `Corrupt`: pass `Some(&*store)`).
//! conformance::run_all(store, None).await.unwrap();
//! # }
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::retry::Backoff;
use steadfast_layers::rng::{RandomSource, SeededRng};

use super::{
    Created, Event, Lease, ListQuery, NewSaga, SagaStatus, SagaStore, StepRecord, StepState,
    StoreFuture, Transition,
};
use crate::error::Error;
use crate::keys::{Phase, SagaId};
use crate::{Orchestrator, RetryPolicy, Saga, SagaDefinition, Step, StepContext, StepError};

/// Damage a test can do to a stored saga, to check that it is reported and not panicked on.
///
/// ```
/// use steadfast_saga::store::conformance::Corruption;
/// assert_ne!(Corruption::InputNotJson, Corruption::UnknownStatus);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The input column holds text that is not JSON.
    InputNotJson,
    /// The status column holds an unknown status.
    UnknownStatus,
    /// The status column holds something that is not text at all (SQLite keeps any type).
    UndecodableStatus,
    /// A step record holds an unknown state.
    UnknownStepState,
    /// The lease epoch is at its maximum: no claim can increase it to fence the last owner.
    EpochExhausted,
    /// The recovery count is at its maximum.
    RecoveriesExhausted,
    /// The id is not a UUID (a database row written by hand; the memory store keys by typed id).
    IdNotUuid,
}

/// Lets the suite damage rows of a store. The shipped stores implement it with the
/// `test-hooks` feature only (never in production builds); a store of your own may implement it
/// to run the decode checks of [`run_all`].
///
/// ```
/// use steadfast_saga::store::conformance::{Corrupt, Corruption};
/// use steadfast_saga::store::StoreFuture;
/// use steadfast_saga::SagaId;
///
/// /// A store whose rows are typed: it cannot hold any of this damage.
/// struct Typed;
/// impl Corrupt for Typed {
///     fn corrupt(&self, _id: SagaId, _what: Corruption) -> StoreFuture<'_, bool> {
///         Box::pin(async { Ok(false) })
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // false: no such saga, or this store cannot represent that damage.
/// assert!(!Typed.corrupt(SagaId::nil(), Corruption::UnknownStatus).await.unwrap());
/// # }
/// ```
pub trait Corrupt: Send + Sync {
    /// Applies `what` to saga `id`; `Ok(false)` when the store cannot represent it.
    fn corrupt(&self, id: SagaId, what: Corruption) -> StoreFuture<'_, bool>;
}

#[cfg(feature = "test-hooks")]
impl Corrupt for super::MemoryStore {
    fn corrupt(&self, id: SagaId, what: Corruption) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            Ok(match what {
                Corruption::InputNotJson => self.corrupt_input(id, "{not json"),
                Corruption::EpochExhausted => self.corrupt_with(id, |r| r.epoch = i64::MAX),
                Corruption::RecoveriesExhausted => {
                    self.corrupt_with(id, |r| r.recoveries = u32::MAX)
                }
                // The memory store keeps a typed id, status and step states.
                Corruption::UnknownStatus
                | Corruption::UndecodableStatus
                | Corruption::UnknownStepState
                | Corruption::IdNotUuid => false,
            })
        })
    }
}

/// A long lease: never expires during a test.
const LONG: Duration = Duration::from_secs(600);

fn rng() -> SeededRng {
    SeededRng::from_entropy()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rng().next_u64())
}

fn new_saga(saga_type: &str, key: &str) -> NewSaga {
    NewSaga {
        id: SagaId::random(&rng()),
        saga_type: saga_type.to_string(),
        version: 1,
        business_key: key.to_string(),
        input: "{\"n\":1}".to_string(),
        deadline: None,
        first_step: None,
        forward_only: false,
    }
}

async fn create_new(store: &dyn SagaStore, new: NewSaga, owner: &str) -> Result<Lease, Error> {
    match store.create(new, owner, LONG).await? {
        Created::New(l) => Ok(l),
        Created::Existing(id) => panic!("conformance: a fresh business key found saga {id}"),
    }
}

/// Runs every check; returns the first store error (a broken contract panics).
///
/// `corrupt` enables the decode checks (pass the store itself when it implements [`Corrupt`]).
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::run_all(std::sync::Arc::new(MemoryStore::new()), None).await.unwrap();
/// # }
/// ```
pub async fn run_all(
    shared: Arc<dyn SagaStore>,
    corrupt: Option<&dyn Corrupt>,
) -> Result<(), Error> {
    let store = &*shared;
    create_is_idempotent(store).await?;
    create_writes_the_first_step_with_the_saga(store).await?;
    load_returns_what_was_created(store).await?;
    spans_past_the_longest_are_refused(store).await?;
    record_is_atomic_and_upserts(store).await?;
    stale_epoch_is_fenced_and_writes_nothing(store).await?;
    claims_take_only_expired_active_sagas(store).await?;
    concurrent_claims_never_share_a_saga(store).await?;
    list_and_history(store).await?;
    deadlines_use_the_store_clock(store).await?;
    dropped_calls_leave_the_store_usable(store).await?;
    cancel_requests_order_against_the_pivot(store).await?;
    if let Some(c) = corrupt {
        corrupt_rows_are_decode_errors(store, c).await?;
        unclaimable_rows_are_set_aside(store, c).await?;
    }
    orchestrator_scenarios(Arc::clone(&shared), corrupt).await?;
    Ok(())
}

/// Same (type, business key) → one saga; same key under another type → another saga.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::create_is_idempotent(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn create_is_idempotent(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-create");
    let first = create_new(store, new_saga(&t, "k1"), "o1").await?;
    assert_eq!(first.epoch, 1, "create: a new saga is leased at epoch 1");
    match store.create(new_saga(&t, "k1"), "o2", LONG).await? {
        Created::Existing(id) => assert_eq!(id, first.saga, "create: same key, same saga"),
        Created::New(_) => panic!("create: the same business key created a second saga"),
    }
    let other = create_new(store, new_saga(&format!("{t}-b"), "k1"), "o1").await?;
    assert_ne!(
        other.saga, first.saga,
        "create: business keys are per saga type"
    );
    let hist = store.history(first.saga).await?;
    assert_eq!(hist.len(), 1, "create: the duplicate start wrote nothing");
    Ok(())
}

/// `NewSaga::first_step` is written in the creation's transaction (one history entry, naming
/// the step); a duplicate start writes nothing, not even its own first step.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::create_writes_the_first_step_with_the_saga(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn create_writes_the_first_step_with_the_saga(
    store: &dyn SagaStore,
) -> Result<(), Error> {
    let t = unique("conf-first-step");
    let started = StepRecord {
        step: "a".into(),
        phase: Phase::Forward,
        state: StepState::Started,
        attempts: 1,
        output: None,
        error: None,
    };
    let mut new = new_saga(&t, "k1");
    new.first_step = Some(started.clone());
    let lease = create_new(store, new, "o1").await?;
    let rec = store.load(lease.saga).await?;
    assert_eq!(
        rec.steps,
        vec![started.clone()],
        "create: the first step record"
    );
    assert_eq!(rec.status, SagaStatus::Running, "create: running");
    let hist = store.history(lease.saga).await?;
    assert_eq!(
        hist.len(),
        1,
        "create: one history entry for one transaction"
    );
    assert_eq!(hist[0].kind, "created", "create: the entry is `created`");
    assert_eq!(
        hist[0].step.as_deref(),
        Some("a"),
        "create: it names the step"
    );
    assert_eq!(hist[0].phase, Some(Phase::Forward), "create: and its phase");
    let mut again = new_saga(&t, "k1");
    again.first_step = Some(StepRecord {
        step: "b".into(),
        ..started.clone()
    });
    match store.create(again, "o2", LONG).await? {
        Created::Existing(id) => assert_eq!(id, lease.saga, "create: same key, same saga"),
        Created::New(_) => panic!("create: the same business key created a second saga"),
    }
    let rec = store.load(lease.saga).await?;
    assert_eq!(
        rec.steps,
        vec![started],
        "create: a duplicate start wrote no step"
    );
    assert_eq!(rec.epoch, 1, "create: a duplicate start took no lease");
    assert_eq!(store.history(lease.saga).await?.len(), 1);
    Ok(())
}

/// `load` returns the created row.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::load_returns_what_was_created(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn load_returns_what_was_created(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-load");
    let mut n = new_saga(&t, "k");
    n.version = 7;
    let lease = create_new(store, n.clone(), "owner-a").await?;
    let r = store.load(lease.saga).await?;
    assert_eq!(r.id, n.id);
    assert_eq!(r.saga_type, t);
    assert_eq!(r.version, 7);
    assert_eq!(r.business_key, "k");
    assert_eq!(r.status, SagaStatus::Running);
    assert!(!r.compensating);
    assert_eq!(r.input, n.input);
    assert_eq!(r.cursor, 0);
    assert_eq!(r.recoveries, 0);
    assert_eq!(r.error, None);
    assert_eq!(r.epoch, 1);
    assert_eq!(r.owner.as_deref(), Some("owner-a"));
    assert_eq!(r.deadline_remaining, None);
    assert!(r.steps.is_empty());
    match store.load(SagaId::random(&rng())).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("load: an unknown id must be NotFound, got {other:?}"),
    }
    Ok(())
}

/// A lease, lease extension or deadline longer than [`MAX_SPAN`](super::MAX_SPAN) is a
/// configuration error naming it, and writes nothing: the business key stays free, a lease
/// stays as it was, no saga is claimed.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::spans_past_the_longest_are_refused(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn spans_past_the_longest_are_refused(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-span");
    let too_long = super::MAX_SPAN + Duration::from_millis(1);
    let refused = |what: &str, r: Result<(), Error>, path: &str| match r {
        Err(Error::Config(e)) if e.path() == path => {}
        other => panic!("{what}: a span past MAX_SPAN must be Config({path}), got {other:?}"),
    };
    let mut far = new_saga(&t, "k");
    far.deadline = Some(Duration::MAX);
    refused(
        "create (deadline)",
        store.create(far, "o", LONG).await.map(drop),
        "deadline",
    );
    refused(
        "create (lease)",
        store
            .create(new_saga(&t, "k"), "o", too_long)
            .await
            .map(drop),
        "lease",
    );
    // Nothing was written: the key is free, and the longest span is kept.
    let mut longest = new_saga(&t, "k");
    longest.deadline = Some(super::MAX_SPAN);
    let lease = create_new(store, longest, "o").await?;
    assert_eq!(
        store.history(lease.saga).await?.len(),
        1,
        "create: the refused creations wrote nothing"
    );
    refused(
        "heartbeat",
        store.heartbeat(&lease, too_long).await,
        "lease_for",
    );
    refused(
        "take_over",
        store.take_over(lease.saga, "p", too_long).await.map(drop),
        "lease_for",
    );
    refused(
        "claim_expired",
        store.claim_expired("p", too_long, 10).await.map(drop),
        "lease_for",
    );
    // The lease is still the creator's, at its epoch.
    store.heartbeat(&lease, super::MAX_SPAN).await?;
    let r = store.load(lease.saga).await?;
    assert_eq!(
        (r.epoch, r.owner.as_deref()),
        (1, Some("o")),
        "the lease is unchanged"
    );
    assert!(
        r.deadline_remaining
            .is_some_and(|d| d > super::MAX_SPAN - LONG),
        "the longest deadline is kept: {:?}",
        r.deadline_remaining
    );
    Ok(())
}

fn step(name: &str, phase: Phase, state: StepState, attempts: u32) -> StepRecord {
    StepRecord {
        step: name.to_string(),
        phase,
        state,
        attempts,
        output: None,
        error: None,
    }
}

/// A transition writes its step, fields and event together; a step record is replaced by the
/// next one of the same (step, phase).
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::record_is_atomic_and_upserts(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn record_is_atomic_and_upserts(store: &dyn SagaStore) -> Result<(), Error> {
    let lease = create_new(store, new_saga(&unique("conf-record"), "k"), "o").await?;
    store
        .record(
            &lease,
            Transition::new(Event::new("step_started").step("a", Phase::Forward)).step(step(
                "a",
                Phase::Forward,
                StepState::Started,
                1,
            )),
        )
        .await?;
    let mut done = step("a", Phase::Forward, StepState::Succeeded, 1);
    done.output = Some("{\"pnr\":\"X1\"}".into());
    store
        .record(
            &lease,
            Transition::new(Event::new("step_succeeded").step("a", Phase::Forward))
                .step(done.clone())
                .cursor(1),
        )
        .await?;
    store
        .record(
            &lease,
            Transition::new(Event::new("compensation_started").detail("boom"))
                .status(SagaStatus::Compensating)
                .compensating(true)
                .error(Some("boom".into())),
        )
        .await?;
    store
        .record(
            &lease,
            Transition::new(Event::new("step_started").step("a", Phase::Compensation)).step(step(
                "a",
                Phase::Compensation,
                StepState::Started,
                1,
            )),
        )
        .await?;
    let r = store.load(lease.saga).await?;
    assert_eq!(r.status, SagaStatus::Compensating);
    assert!(r.compensating);
    assert_eq!(r.cursor, 1);
    assert_eq!(r.error.as_deref(), Some("boom"));
    assert_eq!(r.steps.len(), 2, "record: one record per (step, phase)");
    let fwd = r
        .steps
        .iter()
        .find(|s| s.phase == Phase::Forward)
        .expect("forward record");
    assert_eq!(
        fwd, &done,
        "record: the later record replaced the earlier one"
    );
    store
        .record(
            &lease,
            Transition::new(Event::new("x"))
                .error(None)
                .reset_recoveries(),
        )
        .await?;
    assert_eq!(store.load(lease.saga).await?.error, None, "error cleared");
    let h = store.history(lease.saga).await?;
    let kinds: Vec<&str> = h.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "step_started",
            "step_succeeded",
            "compensation_started",
            "step_started",
            "x"
        ]
    );
    assert_eq!(h[1].step.as_deref(), Some("a"));
    assert_eq!(h[1].phase, Some(Phase::Forward));
    assert_eq!(h[3].detail.as_deref(), Some("boom"));
    assert!(
        h.windows(2).all(|w| w[0].seq < w[1].seq),
        "history in order"
    );
    assert!(h.iter().all(|e| e.epoch == 1));
    Ok(())
}

/// After a take-over, the old lease's writes and heartbeats are refused with `Fenced` and
/// leave no trace; `release` by the old owner changes nothing.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::stale_epoch_is_fenced_and_writes_nothing(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn stale_epoch_is_fenced_and_writes_nothing(store: &dyn SagaStore) -> Result<(), Error> {
    let old = create_new(store, new_saga(&unique("conf-fence"), "k"), "old").await?;
    let new = store.take_over(old.saga, "new", LONG).await?;
    assert_eq!(new.epoch, 2, "take_over bumps the epoch");
    assert_eq!(new.owner, "new");
    let before = store.history(old.saga).await?.len();
    let refused = store
        .record(
            &old,
            Transition::new(Event::new("step_started").step("a", Phase::Forward))
                .step(step("a", Phase::Forward, StepState::Started, 1))
                .status(SagaStatus::Completed),
        )
        .await;
    match refused {
        Err(Error::Fenced(f)) => {
            assert_eq!(f.saga, old.saga);
            assert_eq!(f.epoch, 1);
        }
        other => panic!("record with a stale epoch must be Fenced, got {other:?}"),
    }
    assert!(
        matches!(store.heartbeat(&old, LONG).await, Err(Error::Fenced(_))),
        "heartbeat with a stale epoch must be Fenced"
    );
    store.release(&old).await?;
    let r = store.load(old.saga).await?;
    assert_eq!(
        r.status,
        SagaStatus::Running,
        "refused write changed nothing"
    );
    assert!(r.steps.is_empty(), "refused write left no step record");
    assert_eq!(r.epoch, 2);
    assert_eq!(r.owner.as_deref(), Some("new"));
    assert_eq!(store.history(old.saga).await?.len(), before);
    // The stale release did not expire the new owner's lease.
    let claimed = store.claim_expired("thief", LONG, 1000).await?;
    assert!(
        claimed.iter().all(|l| l.saga != old.saga),
        "a stale release must not expire the current lease"
    );
    store
        .record(&new, Transition::new(Event::new("ok")))
        .await?;
    store.heartbeat(&new, LONG).await?;
    Ok(())
}

/// A call dropped before it returned (the orchestrator drops a heartbeat that does not answer
/// in time, and a run's pending write when its lease is lost) leaves the store usable: no
/// connection goes back to a pool inside a half-begun transaction (which, in SQLite, would hold
/// the database's write lock for good and make every later transaction on that connection
/// fail). The calls are dropped after every amount of progress from none to completion.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::dropped_calls_leave_the_store_usable(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn dropped_calls_leave_the_store_usable(store: &dyn SagaStore) -> Result<(), Error> {
    let lease = create_new(store, new_saga(&unique("conf-dropped"), "k"), "o").await?;
    // Drop each call after 0, 1, 2, ... polls, with a pause before each poll in which the
    // database answers what the last one sent (so every await point of a call is reached).
    for polls in 0..12u32 {
        for rep in 0..8u32 {
            let mut call = if rep % 2 == 0 {
                store.heartbeat(&lease, LONG)
            } else {
                store.record(&lease, Transition::new(Event::new("dropped")))
            };
            for _ in 0..polls {
                let ready = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(call.as_mut().poll(cx).is_ready())
                })
                .await;
                if ready {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            drop(call);
        }
    }
    // Every connection is still usable and nothing holds a lock: rounds of fenced writes,
    // renewals, releases and claims (more than any pool's size) go through, each within the
    // bound, and each release is visible to the next claim (it was not left uncommitted in a
    // transaction that nobody ends).
    let mut lease = lease;
    for i in 0..32 {
        let bounded = Duration::from_secs(5);
        let round = async {
            store.release(&lease).await?;
            let claimed = store.claim_expired("o", LONG, 1000).await?;
            let Some(lease) = claimed.into_iter().find(|l| l.saga == lease.saga) else {
                panic!("a released lease is not claimed by the next claim");
            };
            store.heartbeat(&lease, LONG).await?;
            store
                .record(&lease, Transition::new(Event::new("after_drops")).cursor(i))
                .await?;
            Ok::<_, Error>(lease)
        };
        lease = match tokio::time::timeout(bounded, round).await {
            Ok(r) => r?,
            Err(_) => panic!("a store call did not answer within {bounded:?} after dropped calls"),
        };
    }
    let r = store.load(lease.saga).await?;
    assert_eq!(r.cursor, 31);
    Ok(())
}

/// Claims take active sagas whose lease expired, bump epoch and recoveries, and skip live
/// leases, finished sagas and sagas needing attention.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::claims_take_only_expired_active_sagas(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn claims_take_only_expired_active_sagas(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-claim");
    let live = create_new(store, new_saga(&t, "live"), "a").await?;
    let expired = create_new(store, new_saga(&t, "expired"), "a").await?;
    let compensating = create_new(store, new_saga(&t, "compensating"), "a").await?;
    let done = create_new(store, new_saga(&t, "done"), "a").await?;
    let stuck = create_new(store, new_saga(&t, "stuck"), "a").await?;
    store
        .record(
            &compensating,
            Transition::new(Event::new("c"))
                .status(SagaStatus::Compensating)
                .compensating(true),
        )
        .await?;
    store
        .record(
            &done,
            Transition::new(Event::new("d")).status(SagaStatus::Completed),
        )
        .await?;
    store
        .record(
            &stuck,
            Transition::new(Event::new("s")).status(SagaStatus::NeedsAttention),
        )
        .await?;
    for l in [&expired, &compensating, &done, &stuck] {
        store.release(l).await?;
    }
    // A heartbeat keeps the live one.
    store.heartbeat(&live, LONG).await?;
    let mut mine = Vec::new();
    loop {
        let got = store.claim_expired("b", LONG, 2).await?;
        assert!(got.len() <= 2, "claim_expired respects its limit");
        if got.is_empty() {
            break;
        }
        mine.extend(got.into_iter().filter(|l| {
            [
                expired.saga,
                compensating.saga,
                live.saga,
                done.saga,
                stuck.saga,
            ]
            .contains(&l.saga)
        }));
    }
    let ids: HashSet<SagaId> = mine.iter().map(|l| l.saga).collect();
    assert_eq!(
        ids,
        HashSet::from([expired.saga, compensating.saga]),
        "only the expired active sagas are claimed"
    );
    for l in &mine {
        assert_eq!(l.epoch, 2, "a claim bumps the epoch");
        assert_eq!(l.owner, "b");
        let r = store.load(l.saga).await?;
        assert_eq!(r.recoveries, 1, "a claim counts a recovery");
        assert_eq!(r.owner.as_deref(), Some("b"));
    }
    // The claimed leases are live: nobody else gets them.
    let again = store.claim_expired("c", LONG, 1000).await?;
    assert!(again.iter().all(|l| !ids.contains(&l.saga)));
    // The old owner is fenced.
    assert!(matches!(
        store
            .record(&expired, Transition::new(Event::new("late")))
            .await,
        Err(Error::Fenced(_))
    ));
    Ok(())
}

/// Many concurrent claimers over many expired sagas: each saga goes to exactly one.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::concurrent_claims_never_share_a_saga(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn concurrent_claims_never_share_a_saga(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-race");
    let mut ids = HashSet::new();
    for i in 0..24 {
        let l = create_new(store, new_saga(&t, &format!("k{i}")), "dead").await?;
        store.release(&l).await?;
        ids.insert(l.saga);
    }
    let owners: Vec<String> = (0..6).map(|i| format!("claimer-{i}")).collect();
    let claims = owners.iter().map(|o| async move {
        let mut got = Vec::new();
        loop {
            let batch = store.claim_expired(o, LONG, 3).await?;
            if batch.is_empty() {
                return Ok::<_, Error>(got);
            }
            got.extend(batch);
        }
    });
    let results = futures::future::try_join_all(claims).await?;
    let mut seen = HashSet::new();
    for l in results.into_iter().flatten() {
        if ids.contains(&l.saga) {
            assert!(seen.insert(l.saga), "saga {} was claimed twice", l.saga);
        }
    }
    // Other runs sharing the store may have claimed some of ours: the store itself must show
    // each one claimed exactly once.
    for id in &ids {
        let r = store.load(*id).await?;
        assert_eq!(
            (r.epoch, r.recoveries),
            (2, 1),
            "saga {id} must have been claimed exactly once"
        );
    }
    Ok(())
}

/// Listings filter by status; history is per saga and ordered.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::list_and_history(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn list_and_history(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-list");
    let a = create_new(store, new_saga(&t, "a"), "o").await?;
    let b = create_new(store, new_saga(&t, "b"), "o").await?;
    store
        .record(
            &b,
            Transition::new(Event::new("needs_attention").detail("compensation keeps failing"))
                .status(SagaStatus::NeedsAttention)
                .error(Some("compensation keeps failing".into())),
        )
        .await?;
    let stuck = store
        .list(ListQuery::new(100_000).status(SagaStatus::NeedsAttention))
        .await?;
    let mine: Vec<_> = stuck.iter().filter(|s| s.saga_type == t).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, b.saga);
    assert_eq!(mine[0].business_key, "b");
    assert_eq!(mine[0].error.as_deref(), Some("compensation keeps failing"));
    // By type, and by type and status.
    let typed = store.list(ListQuery::new(100_000).saga_type(&t)).await?;
    let ids: Vec<SagaId> = typed.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        [a.saga, b.saga],
        "list by type: exactly its sagas, oldest first"
    );
    let typed_stuck = store
        .list(
            ListQuery::new(100_000)
                .saga_type(&t)
                .status(SagaStatus::NeedsAttention),
        )
        .await?;
    assert_eq!(typed_stuck.len(), 1);
    assert_eq!(typed_stuck[0].id, b.saga);
    assert_eq!(
        store.list(ListQuery::new(1).saga_type(&t)).await?.len(),
        1,
        "list by type respects its limit"
    );
    assert!(store
        .list(ListQuery::new(100_000).saga_type(format!("{t}-none")))
        .await?
        .is_empty());
    let running = store
        .list(ListQuery::new(100_000).status(SagaStatus::Running))
        .await?;
    assert!(running.iter().any(|s| s.id == a.saga));
    assert!(running.iter().all(|s| s.status == SagaStatus::Running));
    assert!(
        store.list(ListQuery::new(1)).await?.len() <= 1,
        "list respects its limit"
    );
    let ha = store.history(a.saga).await?;
    assert_eq!(ha.len(), 1);
    assert!(matches!(
        store.history(SagaId::random(&rng())).await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}

/// The deadline is kept on the store's clock and reported as time remaining.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::deadlines_use_the_store_clock(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn deadlines_use_the_store_clock(store: &dyn SagaStore) -> Result<(), Error> {
    let t = unique("conf-deadline");
    let mut n = new_saga(&t, "hour");
    n.deadline = Some(Duration::from_secs(3600));
    let l = create_new(store, n, "o").await?;
    let left = store
        .load(l.saga)
        .await?
        .deadline_remaining
        .expect("a deadline");
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "remaining {left:?}"
    );
    let mut n = new_saga(&t, "now");
    n.deadline = Some(Duration::ZERO);
    let l = create_new(store, n, "o").await?;
    assert_eq!(
        store.load(l.saga).await?.deadline_remaining,
        Some(Duration::ZERO)
    );
    Ok(())
}

/// Damaged rows load as `Decode` errors (never a panic). A saga whose status cannot be read
/// (unknown, or not text) is listed as `NeedsAttention` with the decode error — under no filter
/// and under `NeedsAttention`, never under its old status —, is claimed once its lease expires
/// (never while it is live), and the claim fences the old lease like any other: the claimer's
/// write lands, the old owner's is refused.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let s = MemoryStore::new();
/// // The memory store damages its rows with the `test-hooks` feature.
/// # #[cfg(feature = "test-hooks")]
/// conformance::corrupt_rows_are_decode_errors(&s, &s).await.unwrap();
/// # }
/// ```
pub async fn corrupt_rows_are_decode_errors(
    store: &dyn SagaStore,
    corrupt: &dyn Corrupt,
) -> Result<(), Error> {
    let t = unique("conf-corrupt");
    for (key, what) in [
        ("status", Corruption::UnknownStatus),
        ("status-not-text", Corruption::UndecodableStatus),
    ] {
        let l = create_new(store, new_saga(&t, key), "o").await?;
        store
            .record(
                &l,
                Transition::new(Event::new("e")).error(Some("an earlier error".into())),
            )
            .await?;
        if !corrupt.corrupt(l.saga, what).await? {
            continue;
        }
        match store.load(l.saga).await {
            Err(Error::Decode(d)) => {
                assert_eq!(d.saga, Some(l.saga));
                assert_eq!(d.what, "the saga status", "{what:?}");
            }
            other => panic!("{what:?}: the status must load as Decode, got {other:?}"),
        }
        // Listed, not skipped: as needing attention, with what is wrong and the kept error.
        let listed = |s: Vec<super::SagaSummary>| s.into_iter().find(|s| s.id == l.saga);
        let all = listed(store.list(ListQuery::new(100_000)).await?)
            .unwrap_or_else(|| panic!("{what:?}: list(None) skipped the saga"));
        let stuck = listed(
            store
                .list(ListQuery::new(100_000).status(SagaStatus::NeedsAttention))
                .await?,
        )
        .unwrap_or_else(|| panic!("{what:?}: list(NeedsAttention) skipped the saga"));
        assert_eq!(all, stuck);
        assert_eq!(stuck.status, SagaStatus::NeedsAttention);
        assert_eq!(
            (stuck.saga_type.as_str(), stuck.business_key.as_str()),
            (t.as_str(), key)
        );
        let e = stuck.error.unwrap_or_default();
        assert!(
            e.contains(&format!("saga {}: cannot decode the saga status", l.saga))
                && e.contains("kept error: an earlier error"),
            "{what:?}: {e}"
        );
        assert!(
            listed(
                store
                    .list(ListQuery::new(100_000).status(SagaStatus::Running))
                    .await?
            )
            .is_none(),
            "{what:?}: listed as running"
        );
        // Claimed once its lease expires, never while it is live.
        let live = store.claim_expired("claimer", LONG, 100_000).await?;
        assert!(
            live.iter().all(|c| c.saga != l.saga),
            "{what:?}: live lease claimed"
        );
        store.release(&l).await?;
        let claimed = store.claim_expired("claimer", LONG, 100_000).await?;
        let c = claimed
            .into_iter()
            .find(|c| c.saga == l.saga)
            .unwrap_or_else(|| panic!("{what:?}: an expired unreadable saga was not claimed"));
        assert_eq!(c.epoch, 2);
        // The old lease is fenced; the claimer's write repairs the status.
        let stale = store
            .record(
                &l,
                Transition::new(Event::new("late")).status(SagaStatus::Completed),
            )
            .await;
        assert!(
            matches!(stale, Err(Error::Fenced(_))),
            "{what:?}: {stale:?}"
        );
        store
            .record(
                &c,
                Transition::new(Event::new("needs_attention"))
                    .status(SagaStatus::NeedsAttention)
                    .error(Some("unreadable status".into())),
            )
            .await?;
        let r = store.load(l.saga).await?;
        assert_eq!(
            (r.status, r.epoch, r.recoveries),
            (SagaStatus::NeedsAttention, 2, 1)
        );
        let h = store.history(l.saga).await?;
        assert_eq!(
            h.last().map(|e| (e.kind.as_str(), e.epoch)),
            Some(("needs_attention", 2))
        );
    }
    let l = create_new(store, new_saga(&t, "state"), "o").await?;
    store
        .record(
            &l,
            Transition::new(Event::new("s")).step(step("a", Phase::Forward, StepState::Started, 1)),
        )
        .await?;
    if corrupt
        .corrupt(l.saga, Corruption::UnknownStepState)
        .await?
    {
        assert!(matches!(store.load(l.saga).await, Err(Error::Decode(_))));
    }
    Ok(())
}

/// `request_cancel`: recorded once (the first reason kept, one history entry at the saga's
/// epoch, the owner's lease untouched); the owner's next step start (`unless_cancelled`) is then
/// refused with `CancelRequested` and writes nothing, while its other writes go through and a
/// stale owner is still fenced. Ordered against the pivot: a pivot start (`forward_only`)
/// written first refuses the cancel (`PastPivot`); a cancel recorded first refuses the pivot's
/// start, which marks nothing. Ended, compensating, stuck and waiting sagas get their answers.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// conformance::cancel_requests_order_against_the_pivot(&MemoryStore::new()).await.unwrap();
/// # }
/// ```
pub async fn cancel_requests_order_against_the_pivot(store: &dyn SagaStore) -> Result<(), Error> {
    use crate::error::{CancelRefusal, CancelRefused};
    let refused = |r: Result<SagaStatus, Error>, want: CancelRefusal, what: &str| match r {
        Err(Error::CancelRefused(CancelRefused { refusal, .. })) if refusal == want => {}
        other => panic!("cancel {what}: expected {want:?}, got {other:?}"),
    };
    let start = |name: &str, pivot: bool| {
        let t = Transition::new(Event::new("step_started").step(name, Phase::Forward))
            .step(step(name, Phase::Forward, StepState::Started, 1))
            .unless_cancelled();
        if pivot {
            t.forward_only()
        } else {
            t
        }
    };
    let t = unique("conf-cancel");

    let l = create_new(store, new_saga(&t, "running"), "o").await?;
    assert_eq!(
        store.request_cancel(l.saga, "first").await?,
        SagaStatus::Running
    );
    assert_eq!(
        store.request_cancel(l.saga, "second").await?,
        SagaStatus::Running
    );
    let r = store.load(l.saga).await?;
    assert_eq!(
        r.cancel_requested.as_deref(),
        Some("first"),
        "first reason kept"
    );
    assert_eq!(
        (r.epoch, r.owner.as_deref()),
        (1, Some("o")),
        "lease untouched"
    );
    let h = store.history(l.saga).await?;
    let last = h
        .last()
        .map(|e| (e.kind.as_str(), e.detail.as_deref(), e.epoch));
    assert_eq!(h.len(), 2, "one entry per recorded request: {h:?}");
    assert_eq!(last, Some(("cancel_requested", Some("first"), 1)));
    match store.record(&l, start("a", false)).await {
        Err(Error::CancelRequested(c)) => {
            assert_eq!((c.saga, c.reason.as_str()), (l.saga, "first"))
        }
        other => panic!("a step start after a cancel: {other:?}"),
    }
    let r = store.load(l.saga).await?;
    assert!(r.steps.is_empty(), "a refused start wrote its step");
    assert_eq!(
        store.history(l.saga).await?.len(),
        2,
        "a refused start wrote history"
    );
    // The owner's other writes go through (the outcome of a step in flight, compensation).
    store
        .record(
            &l,
            Transition::new(Event::new("compensation_started"))
                .status(SagaStatus::Compensating)
                .compensating(true),
        )
        .await?;
    // A stale owner is fenced, whatever the cancel.
    let new = store.take_over(l.saga, "new", LONG).await?;
    assert!(matches!(
        store.record(&l, start("a", false)).await,
        Err(Error::Fenced(_))
    ));
    store
        .record(&new, Transition::new(Event::new("ok")))
        .await?;

    // The pivot first: the cancel is refused.
    let p = create_new(store, new_saga(&t, "pivot-first"), "o").await?;
    store.record(&p, start("pivot", true)).await?;
    refused(
        store.request_cancel(p.saga, "late").await,
        CancelRefusal::PastPivot,
        "after the pivot started",
    );
    let r = store.load(p.saga).await?;
    assert!(r.forward_only && r.cancel_requested.is_none(), "{r:?}");

    // The cancel first: the pivot's start is refused and marks nothing.
    let q = create_new(store, new_saga(&t, "cancel-first"), "o").await?;
    store.request_cancel(q.saga, "early").await?;
    assert!(matches!(
        store.record(&q, start("pivot", true)).await,
        Err(Error::CancelRequested(_))
    ));
    assert!(
        !store.load(q.saga).await?.forward_only,
        "a refused start marked forward-only"
    );

    // Created with its pivot started.
    let mut n = new_saga(&t, "born-forward");
    n.forward_only = true;
    let b = create_new(store, n, "o").await?;
    refused(
        store.request_cancel(b.saga, "x").await,
        CancelRefusal::PastPivot,
        "created past its pivot",
    );

    // Ended, compensating, stuck compensating, waiting for an operator.
    let status_of = |key: &'static str, status: SagaStatus, compensating: bool| {
        let t = t.clone();
        async move {
            let l = create_new(store, new_saga(&t, key), "o").await?;
            store
                .record(
                    &l,
                    Transition::new(Event::new("s"))
                        .status(status)
                        .compensating(compensating),
                )
                .await?;
            Ok::<_, Error>(l.saga)
        }
    };
    let done = status_of("done", SagaStatus::Completed, false).await?;
    refused(
        store.request_cancel(done, "x").await,
        CancelRefusal::Ended(SagaStatus::Completed),
        "a completed saga",
    );
    let undone = status_of("undone", SagaStatus::Compensated, true).await?;
    refused(
        store.request_cancel(undone, "x").await,
        CancelRefusal::Ended(SagaStatus::Compensated),
        "a compensated saga",
    );
    let comp = status_of("compensating", SagaStatus::Compensating, true).await?;
    let before = store.history(comp).await?.len();
    assert_eq!(
        store.request_cancel(comp, "x").await?,
        SagaStatus::Compensating
    );
    assert_eq!(store.history(comp).await?.len(), before, "nothing written");
    assert_eq!(store.load(comp).await?.cancel_requested, None);
    let stuck = status_of("stuck", SagaStatus::NeedsAttention, true).await?;
    refused(
        store.request_cancel(stuck, "x").await,
        CancelRefusal::CompensationStuck,
        "a stuck compensation",
    );
    let waiting = status_of("waiting", SagaStatus::NeedsAttention, false).await?;
    assert_eq!(
        store.request_cancel(waiting, "y").await?,
        SagaStatus::NeedsAttention
    );
    assert_eq!(
        store.load(waiting).await?.cancel_requested.as_deref(),
        Some("y")
    );
    assert!(matches!(
        store.request_cancel(SagaId::random(&rng()), "x").await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}

/// Rows a claim cannot hand out — an id that is not a saga id, a lease epoch that cannot be
/// increased to fence the last owner — are set aside by the claim that meets them: put in
/// `needs_attention` with the reason (kept, listed, in the history), never claimed, and taking no
/// place in the claim's batch. A recovery count at its maximum does not fail the claim either.
/// No claim call fails because of them.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let s = MemoryStore::new();
/// // The memory store damages its rows with the `test-hooks` feature.
/// # #[cfg(feature = "test-hooks")]
/// conformance::unclaimable_rows_are_set_aside(&s, &s).await.unwrap();
/// # }
/// ```
pub async fn unclaimable_rows_are_set_aside(
    store: &dyn SagaStore,
    corrupt: &dyn Corrupt,
) -> Result<(), Error> {
    let t = unique("conf-unclaimable");
    // The damaged rows expire first (the oldest leases), then a healthy one.
    let mut damaged = Vec::new();
    for (key, what) in [
        ("id", Corruption::IdNotUuid),
        ("epoch", Corruption::EpochExhausted),
        ("recoveries", Corruption::RecoveriesExhausted),
    ] {
        let l = create_new(store, new_saga(&t, key), "dead").await?;
        store.release(&l).await?;
        if corrupt.corrupt(l.saga, what).await? {
            damaged.push((what, l));
        }
    }
    let healthy = create_new(store, new_saga(&t, "healthy"), "dead").await?;
    store.release(&healthy).await?;
    // Batches of one: a set-aside row takes no place, so every call hands out a lease while
    // expired sagas are left (other runs sharing the store may have some too).
    let mut claimed = Vec::new();
    loop {
        let got = store.claim_expired("claimer", LONG, 1).await?;
        assert!(got.len() <= 1, "claim_expired respects its limit");
        match got.into_iter().next() {
            Some(l) => claimed.push(l),
            None => break,
        }
    }
    assert!(
        claimed.iter().any(|l| l.saga == healthy.saga),
        "the healthy saga behind the damaged rows was not claimed"
    );
    let listed = store.list(ListQuery::new(100_000)).await?;
    for (what, l) in &damaged {
        match what {
            Corruption::IdNotUuid => {
                assert!(claimed.iter().all(|c| c.saga != l.saga));
                let e = format!("cannot decode a saga id: \"not-a-uuid:{}\"", l.saga);
                let mine = listed
                    .iter()
                    .find(|s| s.error.as_deref().is_some_and(|x| x.contains(&e)))
                    .unwrap_or_else(|| panic!("{what:?}: not listed with {e:?}: {listed:#?}"));
                assert_eq!(mine.id, SagaId::nil(), "{what:?}: listed under the nil id");
                assert_eq!(mine.status, SagaStatus::NeedsAttention, "{what:?}");
                assert_eq!(mine.business_key, "id", "{what:?}");
                assert!(
                    matches!(store.load(l.saga).await, Err(Error::NotFound(_))),
                    "{what:?}: the id no longer names the saga"
                );
            }
            Corruption::EpochExhausted => {
                assert!(
                    claimed.iter().all(|c| c.saga != l.saga),
                    "{what:?}: claimed"
                );
                let r = store.load(l.saga).await?;
                assert_eq!(r.status, SagaStatus::NeedsAttention, "{what:?}");
                assert_eq!(r.epoch, i64::MAX, "{what:?}: the epoch is left as it was");
                let e = r.error.unwrap_or_default();
                assert!(e.contains("lease epoch is at its maximum"), "{what:?}: {e}");
                let h = store.history(l.saga).await?;
                assert_eq!(
                    h.last().map(|e| e.kind.as_str()),
                    Some("needs_attention"),
                    "{what:?}"
                );
                let mine = listed.iter().find(|s| s.id == l.saga);
                assert_eq!(
                    mine.map(|s| s.status),
                    Some(SagaStatus::NeedsAttention),
                    "{what:?}"
                );
                // An operator action cannot fence the last owner either: a clear refusal.
                match store.take_over(l.saga, "operator", LONG).await {
                    Err(Error::InvalidOperation(m)) => {
                        assert!(m.contains("lease epoch is at its maximum"), "{m}")
                    }
                    other => panic!("{what:?}: take_over gave {other:?}"),
                }
            }
            // Claimed like any other (the orchestrator then finds too many recoveries, or an
            // unreadable count).
            _ => assert!(
                claimed.iter().any(|c| c.saga == l.saga),
                "{what:?}: not claimed"
            ),
        }
    }
    Ok(())
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Order {
    n: u32,
    fail_pivot: bool,
}

struct Counters {
    reserve: AtomicU32,
    release: AtomicU32,
    charge: AtomicU32,
}

fn definition(t: &str, c: &Arc<Counters>) -> Result<SagaDefinition<Order>, Error> {
    type Ctx = StepContext<Order>;
    let fast = RetryPolicy::attempts(3).backoff(Backoff::constant(Duration::ZERO));
    let mut b = Saga::builder::<Order>(t).version(1);
    let (c1, c2, c3) = (Arc::clone(c), Arc::clone(c), Arc::clone(c));
    let reserved = b.step(
        Step::compensatable(
            "reserve",
            move |ctx: Ctx| {
                let c = Arc::clone(&c1);
                async move {
                    c.reserve.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, StepError>(ctx.input().n * 10)
                }
            },
            move |_ctx: Ctx, units: u32| {
                let c = Arc::clone(&c2);
                async move {
                    assert_eq!(units % 10, 0, "the compensation got the typed output");
                    c.release.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, StepError>(())
                }
            },
        )
        .retry(fast)
        .compensation_retry(fast),
    );
    b.step(
        Step::pivot("charge", move |ctx: Ctx| {
            let c = Arc::clone(&c3);
            async move {
                let units = ctx.output(reserved)?;
                c.charge.fetch_add(1, Ordering::SeqCst);
                if ctx.input().fail_pivot {
                    return Err(StepError::permanent(format!("declined for {units} units")));
                }
                Ok(units)
            }
        })
        .retry(fast),
    );
    b.step(
        Step::retriable("notify", |_ctx: Ctx| async { Ok::<_, StepError>(()) })
            .retry(RetryPolicy::forever().backoff(Backoff::constant(Duration::ZERO))),
    );
    b.build()
}

/// Orchestrator scenarios over the store: completion, compensation with typed outputs,
/// idempotent start, fencing of a run whose saga was taken over, and a corrupt row beside
/// healthy sagas.
///
/// ```
/// # use steadfast_saga::store::{conformance, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let s = std::sync::Arc::new(MemoryStore::new());
/// conformance::orchestrator_scenarios(s, None).await.unwrap();
/// # }
/// ```
pub async fn orchestrator_scenarios(
    store: Arc<dyn SagaStore>,
    corrupt: Option<&dyn Corrupt>,
) -> Result<(), Error> {
    let t = unique("conf-orch");
    let c = Arc::new(Counters {
        reserve: AtomicU32::new(0),
        release: AtomicU32::new(0),
        charge: AtomicU32::new(0),
    });
    let def = definition(&t, &c)?;
    let orch = Orchestrator::builder(Arc::clone(&store))
        .register(&def)
        .poll_interval(Duration::from_millis(20))
        .build()?;

    let ok = orch
        .start(
            &def,
            "ok",
            &Order {
                n: 1,
                fail_pivot: false,
            },
        )
        .await?;
    assert!(ok.created);
    assert_eq!(orch.wait(ok.id).await?, SagaStatus::Completed);
    let again = orch
        .start(
            &def,
            "ok",
            &Order {
                n: 1,
                fail_pivot: false,
            },
        )
        .await?;
    assert_eq!(again.id, ok.id, "same business key, same saga");
    assert!(!again.created);

    let bad = orch
        .start(
            &def,
            "bad",
            &Order {
                n: 2,
                fail_pivot: true,
            },
        )
        .await?;
    assert_eq!(orch.wait(bad.id).await?, SagaStatus::Compensated);
    assert_eq!(c.reserve.load(Ordering::SeqCst), 2);
    assert_eq!(c.charge.load(Ordering::SeqCst), 2);
    assert_eq!(c.release.load(Ordering::SeqCst), 1);
    let rec = orch.get(bad.id).await?;
    assert!(rec.error.as_deref().unwrap_or("").contains("declined"));
    let kinds: Vec<String> = orch
        .history(bad.id)
        .await?
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert!(kinds.contains(&"compensation_started".to_string()));
    assert_eq!(kinds.last().map(String::as_str), Some("compensated"));

    // Fencing: the saga is taken over before the run starts writing; the run stops.
    let lease = match store
        .create(new_saga_for(&t, "fenced"), orch.owner(), LONG)
        .await?
    {
        Created::New(l) => l,
        Created::Existing(_) => panic!("fresh key"),
    };
    let thief = store.take_over(lease.saga, "thief", LONG).await?;
    // The thief gives the saga back; the orchestrator's recovery finishes it.
    store.release(&thief).await?;
    orch.recover_once().await?;
    assert_eq!(orch.wait(lease.saga).await?, SagaStatus::Completed);
    let h = orch.history(lease.saga).await?;
    assert!(
        h.iter()
            .filter(|e| e.kind.starts_with("step"))
            .all(|e| e.epoch == 3),
        "only the current epoch wrote steps"
    );

    // A corrupt row goes to NeedsAttention; the healthy saga beside it completes.
    if let Some(cr) = corrupt {
        let lease = match store
            .create(new_saga_for(&t, "corrupt"), "dead", LONG)
            .await?
        {
            Created::New(l) => l,
            Created::Existing(_) => panic!("fresh key"),
        };
        let lease2 = match store
            .create(new_saga_for(&t, "healthy"), "dead", LONG)
            .await?
        {
            Created::New(l) => l,
            Created::Existing(_) => panic!("fresh key"),
        };
        if cr.corrupt(lease.saga, Corruption::InputNotJson).await? {
            store.release(&lease).await?;
            store.release(&lease2).await?;
            while orch.recover_once().await? > 0 {}
            assert_eq!(orch.wait(lease.saga).await?, SagaStatus::NeedsAttention);
            assert_eq!(orch.wait(lease2.saga).await?, SagaStatus::Completed);
            let r = orch.get(lease.saga).await?;
            assert!(
                r.error
                    .as_deref()
                    .unwrap_or("")
                    .contains("cannot decode the saga input"),
                "{:?}",
                r.error
            );
        }
        unreadable_rows_need_attention(&orch, &t, cr).await?;
        damaged_rows_block_no_recovery(&orch, &t, cr).await?;
    }

    // An unknown saga type goes to NeedsAttention with a clear error.
    let mut n = new_saga_for(&format!("{t}-unregistered"), "x");
    n.saga_type = format!("{t}-unregistered");
    if let Created::New(l) = store.create(n, "dead", LONG).await? {
        store.release(&l).await?;
        while orch.recover_once().await? > 0 {}
        assert_eq!(orch.wait(l.saga).await?, SagaStatus::NeedsAttention);
        let r = orch.get(l.saga).await?;
        assert!(r
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no definition registered"));
    }
    Ok(())
}

/// A saga whose status cannot be read (unknown, or not text), or whose step record cannot, goes
/// to `NeedsAttention` through the recovery loop once its lease expires — the marking write is
/// fenced by the claim like any other —, is listed with a clear error, and (for a status) is
/// shown by `get` and can be resumed by an operator.
async fn unreadable_rows_need_attention(
    orch: &Orchestrator,
    t: &str,
    corrupt: &dyn Corrupt,
) -> Result<(), Error> {
    let store = orch.store();
    for (key, what) in [
        ("bad-status", Corruption::UnknownStatus),
        ("status-not-text", Corruption::UndecodableStatus),
    ] {
        let dead = create_new(&**store, new_saga_for(t, key), "dead").await?;
        if !corrupt.corrupt(dead.saga, what).await? {
            continue;
        }
        let id = dead.saga;
        // A live lease is left alone.
        orch.recover_once().await?;
        assert!(
            matches!(orch.get(id).await, Err(Error::Decode(_))),
            "{what:?}: a live lease was claimed"
        );
        store.release(&dead).await?;
        while orch.recover_once().await? > 0 {}
        assert_eq!(orch.wait(id).await?, SagaStatus::NeedsAttention, "{what:?}");
        let r = orch.get(id).await?;
        let e = r.error.clone().unwrap_or_default();
        assert!(
            e.contains(&format!("saga {id}: cannot decode the saga status")),
            "{what:?}: {e}"
        );
        assert_eq!((r.epoch, r.recoveries), (2, 1), "{what:?}");
        let listed = orch
            .list(ListQuery::new(100_000).status(SagaStatus::NeedsAttention))
            .await?;
        let mine = listed
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{what:?}: not listed as needing attention"));
        assert_eq!(mine.error.as_deref(), Some(e.as_str()));
        let h = orch.history(id).await?;
        let last = h.last().map(|e| (e.kind.as_str(), e.epoch));
        assert_eq!(last, Some(("needs_attention", 2)), "{what:?}: {h:?}");
        assert!(matches!(
            store
                .record(&dead, Transition::new(Event::new("late")))
                .await,
            Err(Error::Fenced(_))
        ));
        // Once an operator has looked, the saga resumes where its step records say.
        orch.resume(id).await?;
        assert_eq!(orch.wait(id).await?, SagaStatus::Completed, "{what:?}");
    }

    let dead = create_new(&**store, new_saga_for(t, "bad-step"), "dead").await?;
    store
        .record(
            &dead,
            Transition::new(Event::new("step_started").step("reserve", Phase::Forward)).step(step(
                "reserve",
                Phase::Forward,
                StepState::Started,
                1,
            )),
        )
        .await?;
    if corrupt
        .corrupt(dead.saga, Corruption::UnknownStepState)
        .await?
    {
        store.release(&dead).await?;
        while orch.recover_once().await? > 0 {}
        // The run marked it; its step record still cannot be read, so `get` reports that.
        assert!(matches!(orch.wait(dead.saga).await, Err(Error::Decode(_))));
        let listed = orch
            .list(ListQuery::new(100_000).status(SagaStatus::NeedsAttention))
            .await?;
        let mine = listed
            .iter()
            .find(|s| s.id == dead.saga)
            .expect("a saga with an unreadable step record is listed as needing attention");
        let e = mine.error.as_deref().unwrap_or("");
        assert!(e.contains("cannot decode a step state"), "{e}");
    }
    Ok(())
}

/// Damaged rows holding the oldest leases, beside healthy abandoned sagas: the recovery loop
/// recovers every healthy saga, and each damaged one ends in `NeedsAttention` with its reason.
async fn damaged_rows_block_no_recovery(
    orch: &Orchestrator,
    t: &str,
    corrupt: &dyn Corrupt,
) -> Result<(), Error> {
    let store = orch.store();
    let mut damaged = Vec::new();
    for (key, what) in [
        ("poison-id", Corruption::IdNotUuid),
        ("poison-epoch", Corruption::EpochExhausted),
        ("poison-recoveries", Corruption::RecoveriesExhausted),
        ("poison-input", Corruption::InputNotJson),
        ("poison-status", Corruption::UnknownStatus),
    ] {
        let l = create_new(&**store, new_saga_for(t, key), "dead").await?;
        store.release(&l).await?;
        if corrupt.corrupt(l.saga, what).await? {
            damaged.push((what, l.saga));
        }
    }
    let mut healthy = Vec::new();
    for i in 0..3 {
        let l = create_new(&**store, new_saga_for(t, &format!("beside-{i}")), "dead").await?;
        store.release(&l).await?;
        healthy.push(l.saga);
    }
    while orch.recover_once().await? > 0 {}
    for id in &healthy {
        assert_eq!(orch.wait(*id).await?, SagaStatus::Completed);
        assert_eq!(orch.get(*id).await?.recoveries, 1, "claimed once");
    }
    for (what, id) in damaged {
        if what == Corruption::IdNotUuid {
            continue; // checked by `unclaimable_rows_are_set_aside`: listed under the nil id
        }
        // Its run ends before the listing is read: a run still putting it in `NeedsAttention`
        // would otherwise leave it listed as running. (Not a store error: it ends, or its row
        // does not decode.)
        let ended = orch.wait(id).await;
        assert!(
            !matches!(ended, Err(Error::Store(_))),
            "{what:?}: wait: {ended:?}"
        );
        let listed = orch
            .list(ListQuery::new(100_000).status(SagaStatus::NeedsAttention))
            .await?;
        let mine = listed
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{what:?}: not listed as needing attention"));
        assert!(mine.error.is_some(), "{what:?}: no reason kept");
    }
    Ok(())
}

fn new_saga_for(t: &str, key: &str) -> NewSaga {
    let mut n = new_saga(t, key);
    n.input = serde_json::json!({"n": 3, "fail_pivot": false}).to_string();
    n
}

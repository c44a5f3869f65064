//! Group commit, for a database with one writer at a time (SQLite, see
//! `Fragments::one_writer`): the creations and transitions that arrive while another write
//! holds the store's turn are queued, and the next of their callers to get the turn writes all
//! of them together, in arrival order, in one `BEGIN IMMEDIATE ... COMMIT` transaction (one
//! commit, one WAL append, instead of one per write). Each caller is answered only after that
//! `COMMIT`: an `Ok` still means committed.
//!
//! - A transition refused by the transition view's trigger (`RAISE(ABORT, ..)` aborts the
//!   statement, not the transaction) is explained by its own read (`refused`) and affects no
//!   other write of its group.
//! - A failed `BEGIN` or `COMMIT`, or a statement failing otherwise, fails every write of the
//!   group not yet refused, with that error: nothing of the group is committed (the transaction
//!   rolls back), and no write is ever half applied (each is one statement, or one script whose
//!   later statements write only when the first did).
//! - A group is written by a task of its own (`tokio::spawn`), which holds the turn until it
//!   has answered every caller: the caller that started it can be dropped without stalling or
//!   failing the others. A caller dropped while its write waits in the queue is left out of
//!   the next group (nothing written, as before); one dropped once its group has begun may or
//!   may not have been written, as before.
//! - A transition alone in the queue is written as before: one `INSERT` into the transition
//!   view, atomic on its own, without `BEGIN` and `COMMIT`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{Database, Pool};
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::rows as row;
use super::sql::{refused, refused_by_trigger, Dialect, Query};
use crate::error::Error;
use crate::keys::SagaId;

/// The most writes one group commits: a longer queue is written by several groups in turn.
const MAX_GROUP: usize = 256;

/// What a grouped write answers: a transition `None`; a creation `None` when it created the
/// saga, the id of the saga that has its business key otherwise.
pub(super) type Answer = Result<Option<SagaId>, Error>;

/// A write waiting for its group.
pub(super) enum Write<D: Database> {
    /// A transition: one `INSERT` into the transition view; refused (by its trigger) when the
    /// lease's fence does not hold.
    Transition {
        stmt: Query<D>,
        saga: SagaId,
        epoch: i64,
        unless_cancelled: bool,
    },
    /// A creation (saga `id` of `saga_type`): its script, and the read that finds the saga
    /// holding its business key when the script wrote nothing.
    Creation {
        stmt: Query<D>,
        find: Query<D>,
        id: SagaId,
        saga_type: String,
    },
}

struct Queued<D: Database> {
    write: Write<D>,
    answer: oneshot::Sender<Answer>,
}

/// A store's turn to write and the writes waiting for it (shared by the store's clones).
pub(super) struct Writer<D: Database> {
    /// Whose turn it is to write: held by each write transaction and each group until it ends.
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    queue: Mutex<VecDeque<Queued<D>>>,
    /// Groups committed in one transaction (test hook).
    #[cfg(test)]
    groups: std::sync::atomic::AtomicUsize,
}

impl<D: Database> Writer<D> {
    pub(super) fn new() -> Self {
        Writer {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            queue: Mutex::new(VecDeque::new()),
            #[cfg(test)]
            groups: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued<D>>> {
        // The queue is never left half changed: a poisoned lock holds a whole queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes waiting in the queue (test hook).
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queue().len()
    }

    /// Groups committed in one transaction so far (test hook).
    #[cfg(test)]
    pub(super) fn groups(&self) -> usize {
        self.groups.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Queues `write`, and waits for it to be committed (or refused, or failed) in a group: the
/// group of the caller that next gets the turn, this one's own when it is that caller.
pub(super) async fn write<D: Dialect>(
    pool: &Pool<D>,
    writer: &Arc<Writer<D>>,
    write: Write<D>,
) -> Answer {
    let (answer, mut answered) = oneshot::channel();
    writer.queue().push_back(Queued { write, answer });
    let turn = tokio::select! {
        biased;
        a = &mut answered => return a.unwrap_or_else(|_| Err(lost())),
        turn = Arc::clone(&writer.turn).lock_owned() => turn,
    };
    // A group ends (answers its writes) before it passes the turn on: this write, when it is
    // not answered yet, is still in the queue.
    match answered.try_recv() {
        Ok(a) => return a,
        Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    if writer.queue().len() == 1 {
        // Alone: let the tasks woken with it (the callers a group just answered) queue their
        // next writes first, so that they join this one's group instead of waiting for it.
        tokio::task::yield_now().await;
    }
    let group: Vec<Queued<D>> = {
        let mut queue = writer.queue();
        // Callers gone while their write waited: left out, nothing written.
        queue.retain(|q| !q.answer.is_closed());
        let n = queue.len().min(MAX_GROUP);
        queue.drain(..n).collect()
    };
    match group.as_slice() {
        [Queued {
            write: Write::Transition { .. },
            ..
        }] => write_group(pool.clone(), Arc::clone(writer), group, turn).await,
        _ => {
            // Its own task: the group is written and answered whether or not this caller is
            // still there.
            tokio::spawn(write_group(pool.clone(), Arc::clone(writer), group, turn));
        }
    }
    answered.await.unwrap_or_else(|_| Err(lost()))
}

/// The error of a write whose group ended without answering it (its task panicked or its
/// runtime shut down): it may or may not have been written.
fn lost() -> Error {
    Error::store("the group commit this write was in ended without answering it")
}

/// Writes `group` (in its order) and answers each write; `turn` is held until then.
async fn write_group<D: Dialect>(
    pool: Pool<D>,
    writer: Arc<Writer<D>>,
    group: Vec<Queued<D>>,
    turn: OwnedMutexGuard<()>,
) {
    #[cfg(not(test))]
    let _ = writer;
    let mut group = group;
    if group.len() == 1 {
        match group.pop() {
            Some(Queued {
                write:
                    Write::Transition {
                        stmt,
                        saga,
                        epoch,
                        unless_cancelled,
                    },
                answer,
            }) => {
                let a = alone::<D>(pool, stmt, saga, epoch, unless_cancelled).await;
                let _ = answer.send(a.map(|()| None));
                drop(turn);
                return;
            }
            Some(creation) => group.push(creation),
            None => {}
        }
    }
    let mut tx = match D::begin(pool).await {
        Ok(tx) => tx,
        Err(e) => return fail(group.into_iter().map(|q| q.answer), e),
    };
    // Written, and to be answered once committed.
    let mut written: Vec<(oneshot::Sender<Answer>, Option<SagaId>)> =
        Vec::with_capacity(group.len());
    let mut rest = group.into_iter();
    while let Some(Queued { write, answer }) = rest.next() {
        if answer.is_closed() {
            // Its caller is gone before it began: not written.
            continue;
        }
        let result = match write {
            Write::Transition {
                stmt,
                saga,
                epoch,
                unless_cancelled,
            } => match D::execute(stmt, &mut tx).await {
                Ok(_) => Ok(None),
                Err(e) if refused_by_trigger(&e) => {
                    // Refused: nothing written; its reason read in this transaction, after
                    // the writes before it.
                    let refusal = match refused::<D>(&mut tx, saga, epoch, unless_cancelled).await {
                        Ok(refusal) => refusal,
                        Err(e) => e,
                    };
                    let _ = answer.send(Err(refusal));
                    continue;
                }
                Err(e) => Err(e),
            },
            Write::Creation {
                stmt,
                find,
                id,
                saga_type,
            } => match D::execute(stmt, &mut tx).await {
                Ok(n) if n > 0 => Ok(None),
                Ok(_) => match D::fetch_optional(find, &mut tx).await {
                    Ok(Some(r)) => match row::read_id(&r) {
                        Ok(id) => Ok(Some(id)),
                        Err(e) => {
                            // Nothing written by it: answered now, as before.
                            let _ = answer.send(Err(e));
                            continue;
                        }
                    },
                    Ok(None) => {
                        let _ = answer.send(Err(Error::InvalidOperation(format!(
                            "saga {id} of type {saga_type:?}: its business key is taken, yet \
                             no saga has it"
                        ))));
                        continue;
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(v) => written.push((answer, v)),
            Err(e) => {
                let _ = tx.rollback().await;
                let unanswered = written.into_iter().map(|(a, _)| a);
                let rest = rest.map(|q| q.answer);
                return fail(std::iter::once(answer).chain(unanswered).chain(rest), e);
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {
            #[cfg(test)]
            writer
                .groups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for (answer, v) in written {
                let _ = answer.send(Ok(v));
            }
        }
        Err(e) => fail(written.into_iter().map(|(a, _)| a), e),
    }
    drop(turn);
}

/// A transition alone: one `INSERT` into the transition view, atomic on its own.
async fn alone<D: Dialect>(
    pool: Pool<D>,
    stmt: Query<D>,
    saga: SagaId,
    epoch: i64,
    unless_cancelled: bool,
) -> Result<(), Error> {
    let mut conn = D::acquire(pool).await?;
    match D::execute(stmt, &mut conn).await {
        Ok(_) => Ok(()),
        Err(e) if refused_by_trigger(&e) => {
            Err(refused::<D>(&mut conn, saga, epoch, unless_cancelled).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Answers every write of `answers` with `e` (shared: each gets the same error).
fn fail(answers: impl Iterator<Item = oneshot::Sender<Answer>>, e: sqlx::Error) {
    let e = Arc::new(e);
    for answer in answers {
        let _ = answer.send(Err(Error::store(GroupFailed(Arc::clone(&e)))));
    }
}

/// The error that failed a group commit, shared by the writes it failed.
#[derive(Debug)]
struct GroupFailed(Arc<sqlx::Error>);

impl fmt::Display for GroupFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group commit failed: {}", self.0)
    }
}

impl std::error::Error for GroupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use std::path::PathBuf;
    use std::time::Duration;

    use steadfast_layers::rng::{RandomSource, SeededRng};
    use tokio::task::JoinHandle;

    use crate::error::Error;
    use crate::keys::{Phase, SagaId};
    use crate::store::{
        Created, Event, Lease, NewSaga, SagaStore, SqliteStore, StepRecord, StepState, Transition,
    };

    const LONG: Duration = Duration::from_secs(600);

    /// A temporary database file, removed (with its WAL files) on drop.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join("steadfast-saga-tests");
            std::fs::create_dir_all(&dir).unwrap();
            let n = SeededRng::from_entropy().next_u64();
            TempDb(dir.join(format!("group-{tag}-{}-{n:016x}.db", std::process::id())))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.0.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    fn new_saga(key: &str) -> NewSaga {
        NewSaga {
            id: SagaId::random(&SeededRng::from_entropy()),
            saga_type: "group".to_owned(),
            version: 1,
            business_key: key.to_owned(),
            input: "{}".to_owned(),
            deadline: None,
            first_step: None,
            forward_only: false,
        }
    }

    async fn create(store: &SqliteStore, key: &str) -> Lease {
        match store.create(new_saga(key), "owner", LONG).await.unwrap() {
            Created::New(lease) => lease,
            Created::Existing(id) => panic!("a fresh business key found saga {id}"),
        }
    }

    /// The transition the tests write: a step started, and a history entry of kind `kind`.
    fn transition(kind: &str) -> Transition {
        Transition::new(Event::new(kind).step("s", Phase::Forward)).step(StepRecord {
            step: "s".to_owned(),
            phase: Phase::Forward,
            state: StepState::Started,
            attempts: 1,
            output: None,
            error: None,
        })
    }

    fn record(store: &SqliteStore, lease: &Lease, t: Transition) -> JoinHandle<Result<(), Error>> {
        let (store, lease) = (store.clone(), lease.clone());
        tokio::spawn(async move { store.record(&lease, t).await })
    }

    /// Holds the store's turn to write until every one of `n` writes is queued behind it.
    async fn queued(store: &SqliteStore, n: usize) {
        while store.writer.queued() < n {
            tokio::task::yield_now().await;
        }
    }

    /// Whether the saga's history has an entry of kind `kind`, read on the file.
    async fn written(store: &SqliteStore, saga: SagaId, kind: &str) -> bool {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM steadfast_saga_history WHERE saga_id = ? AND kind = ?",
        )
        .bind(saga.to_string())
        .bind(kind)
        .fetch_one(store.pool())
        .await
        .unwrap();
        n > 0
    }

    async fn steps(store: &SqliteStore, saga: SagaId) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM steadfast_saga_steps WHERE saga_id = ?")
            .bind(saga.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn concurrent_transitions_are_committed_in_one_group_and_all_answered() {
        let db = TempDb::new("many");
        let store = SqliteStore::open_with(&db.0, false).await.unwrap();
        let mut leases = Vec::new();
        for i in 0..40 {
            leases.push(create(&store, &format!("k{i}")).await);
        }
        let turn = std::sync::Arc::clone(&store.writer.turn).lock_owned().await;
        let tasks: Vec<_> = leases
            .iter()
            .map(|l| record(&store, l, transition("grouped")))
            .collect();
        queued(&store, leases.len()).await;
        // Nothing is written while they wait.
        assert!(!written(&store, leases[0].saga, "grouped").await);
        let groups = store.writer.groups();
        drop(turn);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // One `BEGIN IMMEDIATE ... COMMIT` for all of them.
        assert_eq!(store.writer.groups(), groups + 1);
        for l in &leases {
            assert!(written(&store, l.saga, "grouped").await, "{}", l.saga);
            assert_eq!(steps(&store, l.saga).await, 1);
            let r = store.load(l.saga).await.unwrap();
            assert_eq!(r.steps.len(), 1);
            assert_eq!(r.steps[0].state, StepState::Started);
        }
    }

    #[tokio::test]
    async fn a_refused_transition_in_a_group_is_explained_and_its_groupmates_commit() {
        let db = TempDb::new("refused");
        let store = SqliteStore::open_with(&db.0, false).await.unwrap();
        let a = create(&store, "a").await;
        let fenced = create(&store, "fenced").await;
        let cancelled = create(&store, "cancelled").await;
        let e = create(&store, "e").await;
        store.take_over(fenced.saga, "thief", LONG).await.unwrap();
        store.request_cancel(cancelled.saga, "stop").await.unwrap();
        let gone = Lease {
            saga: SagaId::random(&SeededRng::from_entropy()),
            owner: "owner".to_owned(),
            epoch: 1,
        };
        let turn = std::sync::Arc::clone(&store.writer.turn).lock_owned().await;
        let tasks = [
            record(&store, &a, transition("grouped")),
            record(&store, &fenced, transition("grouped")),
            record(&store, &cancelled, transition("grouped").unless_cancelled()),
            record(&store, &gone, transition("grouped")),
            record(&store, &e, transition("grouped")),
        ];
        queued(&store, tasks.len()).await;
        let groups = store.writer.groups();
        drop(turn);
        let [ra, rf, rc, rg, re] = tasks;
        ra.await.unwrap().unwrap();
        match rf.await.unwrap() {
            Err(Error::Fenced(f)) => assert_eq!((f.saga, f.epoch), (fenced.saga, 1)),
            other => panic!("expected Fenced, got {other:?}"),
        }
        match rc.await.unwrap() {
            Err(Error::CancelRequested(c)) => {
                assert_eq!((c.saga, c.reason.as_str()), (cancelled.saga, "stop"));
            }
            other => panic!("expected CancelRequested, got {other:?}"),
        }
        match rg.await.unwrap() {
            Err(Error::NotFound(id)) => assert_eq!(id, gone.saga),
            other => panic!("expected NotFound, got {other:?}"),
        }
        re.await.unwrap().unwrap();
        assert_eq!(store.writer.groups(), groups + 1);
        assert!(written(&store, a.saga, "grouped").await);
        assert!(written(&store, e.saga, "grouped").await);
        assert!(!written(&store, fenced.saga, "grouped").await);
        assert!(!written(&store, cancelled.saga, "grouped").await);
        assert_eq!(steps(&store, fenced.saga).await, 0);
        assert_eq!(steps(&store, cancelled.saga).await, 0);
    }

    #[tokio::test]
    async fn a_caller_dropped_while_queued_is_left_out_and_stalls_no_one() {
        let db = TempDb::new("dropped-queued");
        let store = SqliteStore::open_with(&db.0, false).await.unwrap();
        let leases = [
            create(&store, "a").await,
            create(&store, "b").await,
            create(&store, "c").await,
        ];
        let turn = std::sync::Arc::clone(&store.writer.turn).lock_owned().await;
        let [ta, tb, tc] = [0, 1, 2].map(|i| record(&store, &leases[i], transition("grouped")));
        queued(&store, 3).await;
        tb.abort();
        assert!(tb.await.unwrap_err().is_cancelled());
        drop(turn);
        ta.await.unwrap().unwrap();
        tc.await.unwrap().unwrap();
        assert!(written(&store, leases[0].saga, "grouped").await);
        assert!(!written(&store, leases[1].saga, "grouped").await);
        assert!(written(&store, leases[2].saga, "grouped").await);
        assert_eq!(store.writer.queued(), 0);
    }

    #[tokio::test]
    async fn the_caller_that_began_a_group_can_be_dropped_without_stalling_it() {
        let db = TempDb::new("dropped-leader");
        let store = SqliteStore::open_with(&db.0, false).await.unwrap();
        let leases = [
            create(&store, "a").await,
            create(&store, "b").await,
            create(&store, "c").await,
        ];
        let turn = std::sync::Arc::clone(&store.writer.turn).lock_owned().await;
        let [ta, tb, tc] = [0, 1, 2].map(|i| record(&store, &leases[i], transition("grouped")));
        queued(&store, 3).await;
        drop(turn);
        // The first in line gets the turn and takes the whole queue as its group...
        queued_none(&store).await;
        // ... and is dropped while the group is written.
        ta.abort();
        let _ = ta.await;
        tb.await.unwrap().unwrap();
        tc.await.unwrap().unwrap();
        assert!(written(&store, leases[1].saga, "grouped").await);
        assert!(written(&store, leases[2].saga, "grouped").await);
        // The turn was passed on: the store still writes.
        store.record(&leases[0], transition("after")).await.unwrap();
    }

    async fn queued_none(store: &SqliteStore) {
        while store.writer.queued() > 0 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_failing_statement_fails_its_whole_group_and_commits_nothing() {
        let db = TempDb::new("failing");
        let store = SqliteStore::open_with(&db.0, false).await.unwrap();
        let leases = [
            create(&store, "a").await,
            create(&store, "b").await,
            create(&store, "c").await,
        ];
        // A statement error that is not a refusal, on the second write only.
        sqlx::query(
            "CREATE TRIGGER boom BEFORE INSERT ON steadfast_saga_history
             WHEN NEW.kind = 'boom' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let turn = std::sync::Arc::clone(&store.writer.turn).lock_owned().await;
        let tasks = [
            record(&store, &leases[0], transition("grouped")),
            record(&store, &leases[1], transition("boom")),
            record(&store, &leases[2], transition("grouped")),
        ];
        queued(&store, 3).await;
        drop(turn);
        for t in tasks {
            match t.await.unwrap() {
                Err(Error::Store(e)) => assert!(e.to_string().contains("disk on fire"), "{e}"),
                other => panic!("expected the group's error, got {other:?}"),
            }
        }
        for l in &leases {
            assert!(!written(&store, l.saga, "grouped").await);
            assert_eq!(steps(&store, l.saga).await, 0);
        }
        // Nothing is left open: the next writes commit.
        store.record(&leases[0], transition("after")).await.unwrap();
        assert!(written(&store, leases[0].saga, "after").await);
    }

    #[tokio::test]
    async fn creations_join_groups_and_a_duplicate_finds_its_groupmate() {
        let db = TempDb::new("creations");
        let store = SqliteStore::open_with(&db.0, false).await.unwrap();
        let first = create(&store, "first").await;
        let turn = std::sync::Arc::clone(&store.writer.turn).lock_owned().await;
        let news: Vec<NewSaga> = ["x", "y", "x", "first"].map(new_saga).into();
        let ids: Vec<SagaId> = news.iter().map(|n| n.id).collect();
        let tasks: Vec<_> = news
            .into_iter()
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.create(n, "owner", LONG).await })
            })
            .collect();
        let transition = record(&store, &first, transition("grouped"));
        queued(&store, 5).await;
        let groups = store.writer.groups();
        drop(turn);
        let mut created = Vec::new();
        for t in tasks {
            created.push(t.await.unwrap().unwrap());
        }
        transition.await.unwrap().unwrap();
        assert_eq!(store.writer.groups(), groups + 1);
        assert!(matches!(&created[0], Created::New(l) if l.saga == ids[0]));
        assert!(matches!(&created[1], Created::New(l) if l.saga == ids[1]));
        // The same business key as the first of the group: the saga it created.
        assert!(matches!(created[2], Created::Existing(id) if id == ids[0]));
        assert!(matches!(created[3], Created::Existing(id) if id == first.saga));
        for (id, key) in [(ids[0], "x"), (ids[1], "y")] {
            assert_eq!(store.load(id).await.unwrap().business_key, key);
        }
        assert!(matches!(
            store.load(ids[2]).await,
            Err(Error::NotFound(id)) if id == ids[2]
        ));
        assert!(written(&store, first.saga, "grouped").await);
    }
}

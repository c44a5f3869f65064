//! Poison rows: a hand-corrupted value in every column of the saga tables (the id included), on
//! real SQLite and PostgreSQL, next to healthy abandoned sagas. No row blocks claiming, recovery,
//! listing or another saga's progress: one claim round (one poll of the recovery loop, the usual
//! bound after a lease expires) recovers every healthy saga, and each damaged one ends where its
//! damage sends it — recovered as usual when the damage is harmless or overwritten, in
//! `NeedsAttention` with the decode error otherwise, or set aside by the claim when it cannot even
//! be handed out (its id or lease epoch cannot be read).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use steadfast_layers::rng::SeededRng;
use steadfast_saga::store::{
    Created, Event, ListQuery, NewSaga, PostgresStore, SagaStore, SqliteStore, StepRecord,
    StepState, Transition,
};
use steadfast_saga::{
    Error, Orchestrator, Phase, Saga, SagaDefinition, SagaId, SagaStatus, Step, StepContext,
    StepError,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Trip {
    n: u32,
}

type Ctx = StepContext<Trip>;

const LONG: Duration = Duration::from_secs(600);

fn definition(saga_type: &str) -> SagaDefinition<Trip> {
    let mut b = Saga::builder::<Trip>(saga_type);
    let reserved = b.step(Step::compensatable(
        "reserve",
        |c: Ctx| async move { Ok::<_, StepError>(c.input().n * 10) },
        |_c: Ctx, _units: u32| async { Ok::<_, StepError>(()) },
    ));
    b.step(Step::pivot("charge", move |c: Ctx| async move {
        c.output(reserved).map(|_| ())
    }));
    b.step(Step::retriable("notify", |_c: Ctx| async {
        Ok::<_, StepError>(())
    }));
    b.build().unwrap()
}

/// Where a damaged saga must end.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Recovered as usual: the damage is harmless, or the claim or the run overwrote it.
    Completed,
    /// Recovered, and compensated (a deadline long past).
    Compensated,
    /// Claimed, then put in `NeedsAttention` by its run, with an error containing this.
    Attention(&'static str),
    /// Set aside by the claim (never handed out), with an error containing this.
    SetAside(&'static str),
}

/// One corruption: SQL run with the saga's id as its only parameter, after the saga was
/// created (with a succeeded first step when `steps`) and its lease made the oldest.
struct Case {
    name: &'static str,
    sql: &'static str,
    steps: bool,
    expect: Expect,
    /// Whether the saga's history still reads (a damaged history entry is a decode error).
    history_reads: bool,
}

const fn case(name: &'static str, sql: &'static str, expect: Expect) -> Case {
    Case {
        name,
        sql,
        steps: false,
        expect,
        history_reads: true,
    }
}

const fn with_steps(c: Case) -> Case {
    Case { steps: true, ..c }
}

const fn bad_history(c: Case) -> Case {
    Case {
        history_reads: false,
        ..c
    }
}

use Expect::{Attention, Compensated, Completed, SetAside};

const SQLITE_CASES: &[Case] = &[
    // steadfast_sagas
    case("id-not-uuid", "UPDATE steadfast_sagas SET id = 'not-a-uuid' WHERE id = ?", SetAside("cannot decode a saga id: \"not-a-uuid\"")),
    case("id-upper-case", "UPDATE steadfast_sagas SET id = upper(id) WHERE id = ?", SetAside("not in canonical form")),
    case("id-blob", "UPDATE steadfast_sagas SET id = X'00FF01' WHERE id = ?", SetAside("cannot decode a saga id")),
    case("id-null", "UPDATE steadfast_sagas SET id = NULL WHERE id = ?", SetAside("cannot decode a saga id")),
    case("type-blob", "UPDATE steadfast_sagas SET saga_type = X'FF00' WHERE id = ?", Attention("cannot decode the saga type")),
    case("type-unknown", "UPDATE steadfast_sagas SET saga_type = 'no-such-type' WHERE id = ?", Attention("no definition registered for saga type \"no-such-type\"")),
    case("version-text", "UPDATE steadfast_sagas SET version = 'one' WHERE id = ?", Attention("cannot decode the version")),
    case("version-negative", "UPDATE steadfast_sagas SET version = -1 WHERE id = ?", Attention("cannot decode the version")),
    case("version-other", "UPDATE steadfast_sagas SET version = 99 WHERE id = ?", Attention("definition version 99")),
    case("key-blob", "UPDATE steadfast_sagas SET business_key = X'FF' WHERE id = ?", Attention("cannot decode the business key")),
    case("status-unknown", "UPDATE steadfast_sagas SET status = 'bogus' WHERE id = ?", Attention("cannot decode the saga status")),
    case("status-blob", "UPDATE steadfast_sagas SET status = X'00FF' WHERE id = ?", Attention("cannot decode the saga status")),
    case("compensating-text", "UPDATE steadfast_sagas SET compensating = 'maybe' WHERE id = ?", Attention("cannot decode the compensating flag")),
    case("input-not-json", "UPDATE steadfast_sagas SET input = '{not json' WHERE id = ?", Attention("cannot decode the saga input")),
    case("input-blob", "UPDATE steadfast_sagas SET input = X'FF' WHERE id = ?", Attention("cannot decode the saga input")),
    case("cursor-text", "UPDATE steadfast_sagas SET cursor = 'far' WHERE id = ?", Attention("cannot decode the cursor")),
    case("recoveries-negative", "UPDATE steadfast_sagas SET recoveries = -5 WHERE id = ?", Attention("cannot decode the recovery count")),
    case("recoveries-max", "UPDATE steadfast_sagas SET recoveries = 9223372036854775807 WHERE id = ?", Attention("cannot decode the recovery count")),
    case("recoveries-text", "UPDATE steadfast_sagas SET recoveries = 'many' WHERE id = ?", Attention("cannot decode the recovery count")),
    case("error-blob", "UPDATE steadfast_sagas SET error = X'FF' WHERE id = ?", Attention("cannot decode the kept error")),
    case("owner-blob", "UPDATE steadfast_sagas SET lease_owner = X'FF' WHERE id = ?", Completed),
    case("epoch-text", "UPDATE steadfast_sagas SET lease_epoch = 'one' WHERE id = ?", SetAside("cannot decode the lease epoch: stored as text")),
    case("epoch-real", "UPDATE steadfast_sagas SET lease_epoch = 1.5 WHERE id = ?", SetAside("cannot decode the lease epoch: stored as real")),
    case("epoch-max", "UPDATE steadfast_sagas SET lease_epoch = 9223372036854775807 WHERE id = ?", SetAside("lease epoch is at its maximum")),
    case("expiry-text", "UPDATE steadfast_sagas SET lease_expires_ms = 'later' WHERE id = ?", Completed),
    case("deadline-text", "UPDATE steadfast_sagas SET deadline_ms = 'soon' WHERE id = ?", Attention("cannot decode the deadline")),
    case("created-text", "UPDATE steadfast_sagas SET created_ms = 'then' WHERE id = ?", Attention("cannot decode the creation time")),
    case("created-future", "UPDATE steadfast_sagas SET created_ms = 99999999999999 WHERE id = ?", Completed),
    case("updated-text", "UPDATE steadfast_sagas SET updated_ms = 'then' WHERE id = ?", Completed),
    case("forward-only-text", "UPDATE steadfast_sagas SET forward_only = 'yes' WHERE id = ?", Attention("cannot decode the forward-only flag")),
    case("cancel-blob", "UPDATE steadfast_sagas SET cancel_requested = X'FF' WHERE id = ?", Attention("cannot decode the cancel request")),
    case("cancel-by-hand", "UPDATE steadfast_sagas SET cancel_requested = 'by hand' WHERE id = ?", Compensated),
    // steadfast_saga_steps
    with_steps(case("step-name-blob", "UPDATE steadfast_saga_steps SET step = X'FF' WHERE saga_id = ?", Attention("cannot decode a step name"))),
    with_steps(case("step-name-unknown", "UPDATE steadfast_saga_steps SET step = 'no-such-step' WHERE saga_id = ?", Attention("no such step in version 1"))),
    with_steps(case("step-phase", "UPDATE steadfast_saga_steps SET phase = 'sideways' WHERE saga_id = ?", Attention("cannot decode a step phase"))),
    with_steps(case("step-state", "UPDATE steadfast_saga_steps SET state = 'bogus' WHERE saga_id = ?", Attention("cannot decode a step state"))),
    with_steps(case("step-attempts-negative", "UPDATE steadfast_saga_steps SET attempts = -1 WHERE saga_id = ?", Attention("cannot decode a step's attempts"))),
    with_steps(case("step-attempts-text", "UPDATE steadfast_saga_steps SET attempts = 'two' WHERE saga_id = ?", Attention("cannot decode a step's attempts"))),
    // The started first step's count at u32's maximum: stopped for an operator, not wrapped to 0.
    case("step-attempts-max", "UPDATE steadfast_saga_steps SET attempts = 4294967295 WHERE saga_id = ?", Attention("its attempt count is at its maximum (4294967295)")),
    with_steps(case("step-output", "UPDATE steadfast_saga_steps SET output = '{x' WHERE saga_id = ?", Attention("cannot decode the output of step \"reserve\""))),
    with_steps(case("step-error-blob", "UPDATE steadfast_saga_steps SET error = X'FF' WHERE saga_id = ?", Attention("cannot decode a step error"))),
    with_steps(case("step-orphaned", "UPDATE steadfast_saga_steps SET saga_id = 'orphan' WHERE saga_id = ?", Completed)),
    with_steps(case("step-updated-text", "UPDATE steadfast_saga_steps SET updated_ms = 'then' WHERE saga_id = ?", Completed)),
    // steadfast_saga_history
    with_steps(bad_history(case("history-kind-blob", "UPDATE steadfast_saga_history SET kind = X'FF' WHERE saga_id = ?", Completed))),
    with_steps(bad_history(case("history-time-text", "UPDATE steadfast_saga_history SET at_ms = 'then' WHERE saga_id = ?", Completed))),
    with_steps(bad_history(case("history-epoch-text", "UPDATE steadfast_saga_history SET epoch = 'one' WHERE saga_id = ?", Completed))),
    with_steps(bad_history(case("history-phase", "UPDATE steadfast_saga_history SET phase = 'sideways' WHERE saga_id = ? AND phase IS NOT NULL", Completed))),
    with_steps(case("history-orphaned", "UPDATE steadfast_saga_history SET saga_id = 'orphan' WHERE saga_id = ?", Completed)),
];

/// PostgreSQL's typed columns hold fewer kinds of damage: text that is not what it should be,
/// numbers out of range, infinite times.
const POSTGRES_CASES: &[Case] = &[
    // steadfast_sagas
    case("id-not-uuid", "UPDATE steadfast_sagas SET id = 'not-a-uuid' WHERE id = $1", SetAside("cannot decode a saga id: \"not-a-uuid\"")),
    case("id-upper-case", "UPDATE steadfast_sagas SET id = upper(id) WHERE id = $1", SetAside("not in canonical form")),
    case("id-empty", "UPDATE steadfast_sagas SET id = '' WHERE id = $1", SetAside("cannot decode a saga id: \"\"")),
    case("type-unknown", "UPDATE steadfast_sagas SET saga_type = 'no-such-type' WHERE id = $1", Attention("no definition registered for saga type \"no-such-type\"")),
    case("version-negative", "UPDATE steadfast_sagas SET version = -1 WHERE id = $1", Attention("cannot decode the version")),
    case("version-huge", "UPDATE steadfast_sagas SET version = 1099511627776 WHERE id = $1", Attention("cannot decode the version")),
    case("version-other", "UPDATE steadfast_sagas SET version = 99 WHERE id = $1", Attention("definition version 99")),
    case("key-empty", "UPDATE steadfast_sagas SET business_key = '' WHERE id = $1", Completed),
    case("status-unknown", "UPDATE steadfast_sagas SET status = 'bogus' WHERE id = $1", Attention("cannot decode the saga status")),
    case("compensating-while-running", "UPDATE steadfast_sagas SET compensating = TRUE WHERE id = $1", Completed),
    case("input-not-json", "UPDATE steadfast_sagas SET input = '{not json' WHERE id = $1", Attention("cannot decode the saga input")),
    case("input-empty", "UPDATE steadfast_sagas SET input = '' WHERE id = $1", Attention("cannot decode the saga input")),
    case("cursor-negative", "UPDATE steadfast_sagas SET cursor = -5 WHERE id = $1", Completed),
    case("cursor-max", "UPDATE steadfast_sagas SET cursor = 9223372036854775807 WHERE id = $1", Completed),
    case("recoveries-negative", "UPDATE steadfast_sagas SET recoveries = -5 WHERE id = $1", Attention("cannot decode the recovery count")),
    case("recoveries-max", "UPDATE steadfast_sagas SET recoveries = 9223372036854775807 WHERE id = $1", Attention("cannot decode the recovery count")),
    case("error-long", "UPDATE steadfast_sagas SET error = repeat('x', 100000) WHERE id = $1", Completed),
    case("owner-null", "UPDATE steadfast_sagas SET lease_owner = NULL WHERE id = $1", Completed),
    case("epoch-max", "UPDATE steadfast_sagas SET lease_epoch = 9223372036854775807 WHERE id = $1", SetAside("lease epoch is at its maximum")),
    case("epoch-negative", "UPDATE steadfast_sagas SET lease_epoch = -5 WHERE id = $1", Completed),
    case("expiry-infinity", "UPDATE steadfast_sagas SET lease_expires_at = 'infinity' WHERE id = $1", Completed),
    case("expiry-minus-infinity", "UPDATE steadfast_sagas SET lease_expires_at = '-infinity' WHERE id = $1", Completed),
    case("deadline-infinity", "UPDATE steadfast_sagas SET deadline_at = 'infinity' WHERE id = $1", Completed),
    with_steps(case("deadline-minus-infinity", "UPDATE steadfast_sagas SET deadline_at = '-infinity' WHERE id = $1", Compensated)),
    case("created-infinity", "UPDATE steadfast_sagas SET created_at = 'infinity' WHERE id = $1", Attention("cannot decode the creation time")),
    case("created-minus-infinity", "UPDATE steadfast_sagas SET created_at = '-infinity' WHERE id = $1", Attention("cannot decode the creation time")),
    case("created-future", "UPDATE steadfast_sagas SET created_at = now() + interval '1000 years' WHERE id = $1", Completed),
    case("updated-minus-infinity", "UPDATE steadfast_sagas SET updated_at = '-infinity' WHERE id = $1", Completed),
    case("forward-only-early", "UPDATE steadfast_sagas SET forward_only = TRUE WHERE id = $1", Completed),
    case("cancel-by-hand", "UPDATE steadfast_sagas SET cancel_requested = 'by hand' WHERE id = $1", Compensated),
    // steadfast_saga_steps
    with_steps(case("step-name-unknown", "UPDATE steadfast_saga_steps SET step = 'no-such-step' WHERE saga_id = $1", Attention("no such step in version 1"))),
    with_steps(case("step-phase", "UPDATE steadfast_saga_steps SET phase = 'sideways' WHERE saga_id = $1", Attention("cannot decode a step phase"))),
    with_steps(case("step-state", "UPDATE steadfast_saga_steps SET state = 'bogus' WHERE saga_id = $1", Attention("cannot decode a step state"))),
    with_steps(case("step-attempts-negative", "UPDATE steadfast_saga_steps SET attempts = -1 WHERE saga_id = $1", Attention("cannot decode a step's attempts"))),
    with_steps(case("step-attempts-huge", "UPDATE steadfast_saga_steps SET attempts = 1099511627776 WHERE saga_id = $1", Attention("cannot decode a step's attempts"))),
    case("step-attempts-max", "UPDATE steadfast_saga_steps SET attempts = 4294967295 WHERE saga_id = $1", Attention("its attempt count is at its maximum (4294967295)")),
    with_steps(case("step-output", "UPDATE steadfast_saga_steps SET output = '{x' WHERE saga_id = $1", Attention("cannot decode the output of step \"reserve\""))),
    with_steps(case("step-orphaned", "UPDATE steadfast_saga_steps SET saga_id = 'orphan' WHERE saga_id = $1", Completed)),
    with_steps(case("step-updated-infinity", "UPDATE steadfast_saga_steps SET updated_at = 'infinity' WHERE saga_id = $1", Completed)),
    // steadfast_saga_history
    with_steps(bad_history(case("history-time-infinity", "UPDATE steadfast_saga_history SET at = 'infinity' WHERE saga_id = $1", Completed))),
    with_steps(bad_history(case("history-phase", "UPDATE steadfast_saga_history SET phase = 'sideways' WHERE saga_id = $1 AND phase IS NOT NULL", Completed))),
    with_steps(case("history-orphaned", "UPDATE steadfast_saga_history SET saga_id = 'orphan' WHERE saga_id = $1", Completed)),
];

/// Runs one statement with the saga's id bound; returns the rows it changed.
type Exec = Arc<dyn Fn(&'static str, SagaId) -> BoxFuture<'static, u64> + Send + Sync>;

async fn create(store: &dyn SagaStore, saga_type: &str, key: &str, steps: bool) -> SagaId {
    let new = NewSaga {
        id: SagaId::random(&SeededRng::from_entropy()),
        saga_type: saga_type.to_string(),
        version: 1,
        business_key: key.to_string(),
        input: r#"{"n":3}"#.to_string(),
        deadline: Some(Duration::from_secs(3600)),
        first_step: Some(StepRecord {
            step: "reserve".into(),
            phase: Phase::Forward,
            state: StepState::Started,
            attempts: 1,
            output: None,
            error: None,
        }),
        forward_only: false,
    };
    let Created::New(lease) = store.create(new, "dead", LONG).await.unwrap() else {
        panic!("fresh key {key}");
    };
    if steps {
        store
            .record(
                &lease,
                Transition::new(Event::new("step_succeeded").step("reserve", Phase::Forward))
                    .step(StepRecord {
                        step: "reserve".into(),
                        phase: Phase::Forward,
                        state: StepState::Succeeded,
                        attempts: 1,
                        output: Some("30".into()),
                        error: None,
                    })
                    .cursor(1),
            )
            .await
            .unwrap();
    }
    lease.saga
}

async fn poison_matrix(
    store: Arc<dyn SagaStore>,
    exec: Exec,
    oldest: &'static str,
    cases: &[Case],
) {
    let saga_type = format!("poison-{}", support::schema_name("t"));
    let def = definition(&saga_type);
    // Healthy sagas abandoned by a dead orchestrator, beside the damaged ones (whose leases are
    // the oldest, so that every claim meets them first).
    let mut healthy = Vec::new();
    for i in 0..4 {
        let id = create(&*store, &saga_type, &format!("healthy-{i}"), i % 2 == 0).await;
        store.take_over(id, "dead", Duration::ZERO).await.unwrap();
        healthy.push(id);
    }
    let mut damaged = Vec::new();
    for c in cases {
        let id = create(&*store, &saga_type, c.name, c.steps).await;
        assert_eq!(
            exec(oldest, id).await,
            1,
            "{}: make its lease the oldest",
            c.name
        );
        let changed = exec(c.sql, id).await;
        assert!(changed >= 1, "{}: the corruption changed nothing", c.name);
        damaged.push((c, id));
    }
    let orch = Orchestrator::builder(Arc::clone(&store))
        .register(&def)
        .claim_batch(u32::try_from(cases.len() + healthy.len()).unwrap())
        .build()
        .unwrap();

    // One claim round: the first poll of the recovery loop after the leases expired.
    let claimed = orch.recover_once().await.unwrap();
    let set_aside = cases
        .iter()
        .filter(|c| matches!(c.expect, SetAside(_)))
        .count();
    assert_eq!(
        claimed,
        cases.len() + healthy.len() - set_aside,
        "one claim round hands out every saga but the ones set aside"
    );
    for id in &healthy {
        assert_eq!(orch.wait(*id).await.unwrap(), SagaStatus::Completed);
        let r = orch.get(*id).await.unwrap();
        assert_eq!(
            (r.recoveries, r.epoch),
            (1, 3),
            "claimed once by the one round"
        );
        orch.history(*id).await.unwrap();
    }

    // Every damaged saga's run ends before the listing is read: a run that is still putting its
    // saga in `NeedsAttention` would otherwise be listed as `Running`.
    let mut ends = Vec::with_capacity(damaged.len());
    for (c, id) in damaged {
        ends.push((c, id, orch.wait(id).await));
    }
    let all = orch.list(ListQuery::new(100_000)).await.unwrap();
    let attention = orch
        .list(ListQuery::new(100_000).status(SagaStatus::NeedsAttention))
        .await
        .unwrap();
    for (c, id, ended) in ends {
        let name = c.name;
        // Never a store error: a damaged row is Ok, NotFound (its id was changed) or Decode.
        assert!(
            !matches!(ended, Err(Error::Store(_))),
            "{name}: wait: {ended:?}"
        );
        let history = orch.history(id).await;
        match (&history, c.history_reads) {
            (Ok(_), true) | (Err(Error::NotFound(_)), true) | (Err(Error::Decode(_)), false) => {}
            other => panic!("{name}: history: {other:?}"),
        }
        // Listed by id, or (an unreadable id) by business key under the nil id.
        let listed = |v: &[steadfast_saga::store::SagaSummary]| {
            v.iter()
                .find(|s| s.id == id || (s.id == SagaId::nil() && s.business_key == name))
                .cloned()
        };
        match c.expect {
            Completed => assert_eq!(ended.unwrap(), SagaStatus::Completed, "{name}"),
            Compensated => assert_eq!(ended.unwrap(), SagaStatus::Compensated, "{name}"),
            Attention(text) | SetAside(text) => {
                if let Ok(s) = &ended {
                    assert_eq!(*s, SagaStatus::NeedsAttention, "{name}");
                }
                let mine = listed(&attention).unwrap_or_else(|| {
                    panic!(
                        "{name}: not listed as needing attention: {:#?}",
                        listed(&all)
                    )
                });
                let e = mine.error.clone().unwrap_or_default();
                assert!(e.contains(text), "{name}: {e:?} lacks {text:?}");
                assert_eq!(mine.status, SagaStatus::NeedsAttention, "{name}");
                assert_eq!(listed(&all), Some(mine), "{name}");
            }
        }
    }
    // Nothing is left for a second round: the damaged rows do not come back.
    assert_eq!(orch.recover_once().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_rows_block_nothing() {
    let db = support::TempDb::new("poison");
    let store = SqliteStore::open(&db.path).await.unwrap();
    let pool = store.pool().clone();
    let exec: Exec = Arc::new(move |sql, id| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query(sql)
                .bind(id.to_string())
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .rows_affected()
        })
    });
    let oldest = "UPDATE steadfast_sagas SET lease_expires_ms = 0 WHERE id = ?";
    poison_matrix(Arc::new(store), exec, oldest, SQLITE_CASES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_poison_rows_block_nothing() {
    let Some(store) = support::pg_store("poison").await else {
        return;
    };
    let pool = store.pool().clone();
    let exec: Exec = Arc::new(move |sql, id| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query(sql)
                .bind(id.to_string())
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .rows_affected()
        })
    });
    let oldest = "UPDATE steadfast_sagas SET lease_expires_at = 'epoch' WHERE id = $1";
    let shared: Arc<PostgresStore> = Arc::new(store);
    let result = tokio::spawn({
        let s = Arc::clone(&shared);
        async move { poison_matrix(s, exec, oldest, POSTGRES_CASES).await }
    })
    .await;
    shared.drop_schema().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

//! The store conformance suite, run on every store (memory, Redis, PostgreSQL), and the
//! must-have end-to-end checks through the server layer on each: 1,000 concurrent duplicates
//! execute once; a killed holder is taken over after its lease; corrupt records and
//! unreachable stores answer 503.
//!
//! Redis and PostgreSQL come from `REDIS_URL` / `DATABASE_URL` (defaults: local); when they
//! are unreachable the tests print SKIPPED, or fail under `STEADFAST_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, missing_docs)]

mod idempotency_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use idempotency_support::*;
use steadfast_http::codec::idempotency_key::IdempotencyKey;
#[cfg(feature = "postgres")]
use steadfast_http::idempotency::store::PostgresStore;
#[cfg(feature = "redis")]
use steadfast_http::idempotency::store::RedisStore;
use steadfast_http::idempotency::store::{
    BeginOutcome, BeginRequest, Fingerprint, IdempotencyStore, Lease, MemoryStore, StoreErrorKind,
    StoredResponse,
};
use steadfast_http::idempotency::{HeaderPrincipal, IdempotencyLayer, IdempotencyStats};
use tower::Layer;

const FP_A: Fingerprint = fp(1);
const FP_B: Fingerprint = fp(2);

const fn fp(b: u8) -> Fingerprint {
    Fingerprint::from_bytes([b; 32])
}

fn begin_req(scope: &str, key: &str, fingerprint: Fingerprint, lease: Duration) -> BeginRequest {
    BeginRequest::new(scope, IdempotencyKey::new(key).unwrap(), fingerprint)
        .lease(lease)
        .expiry(Duration::from_secs(3600))
}

fn response(body: &'static str) -> StoredResponse {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "text/plain".parse().unwrap());
    headers.append("set-cookie", "a=1".parse().unwrap());
    headers.append("set-cookie", "b=2".parse().unwrap());
    StoredResponse::new(
        StatusCode::CREATED,
        headers,
        Bytes::from_static(body.as_bytes()),
    )
}

async fn acquire<St: IdempotencyStore>(store: &St, req: BeginRequest) -> Lease {
    match store.begin(req).await.unwrap() {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// The contract every store must meet. `lease` is short; waits use `tokio::time::sleep`, so
/// the memory store runs it on a paused clock and the others in real time.
async fn conformance<St: IdempotencyStore + Clone>(store: St, lease: Duration) {
    let wait_out_lease = lease + Duration::from_millis(250);

    // 1. First begin acquires (epoch 1); duplicates see it in flight; another fingerprint is a
    //    mismatch; completion stores; then replays, headers and all.
    let l1 = acquire(&store, begin_req("s", "k1", FP_A, lease)).await;
    assert_eq!((l1.epoch(), l1.taken_over()), (1, false));
    match store
        .begin(begin_req("s", "k1", FP_A, lease))
        .await
        .unwrap()
    {
        BeginOutcome::InFlight { retry_after } => assert!(retry_after <= lease, "{retry_after:?}"),
        other => panic!("expected InFlight, got {other:?}"),
    }
    assert!(matches!(
        store
            .begin(begin_req("s", "k1", FP_B, lease))
            .await
            .unwrap(),
        BeginOutcome::Mismatch
    ));
    store
        .complete(&l1, response("one"), Duration::from_secs(3600))
        .await
        .unwrap();
    match store
        .begin(begin_req("s", "k1", FP_A, lease))
        .await
        .unwrap()
    {
        BeginOutcome::Completed(stored) => assert_eq!(stored, response("one")),
        other => panic!("expected Completed, got {other:?}"),
    }
    assert!(matches!(
        store
            .begin(begin_req("s", "k1", FP_B, lease))
            .await
            .unwrap(),
        BeginOutcome::Mismatch
    ));
    // Completing twice is refused.
    assert_eq!(
        store
            .complete(&l1, response("again"), Duration::from_secs(3600))
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::LeaseLost
    );

    // 2. Scopes are isolated, separators included.
    let other_scope = acquire(&store, begin_req("t", "k1", FP_B, lease)).await;
    store
        .complete(&other_scope, response("two"), Duration::from_secs(3600))
        .await
        .unwrap();
    let a = acquire(&store, begin_req("x:y", "z", FP_A, lease)).await;
    let b = acquire(&store, begin_req("x", "y:z", FP_A, lease)).await;
    store.release(&a).await.unwrap();
    store.release(&b).await.unwrap();

    // 3. Release frees the key; a stale lease can neither release nor complete.
    let r1 = acquire(&store, begin_req("s", "k2", FP_A, lease)).await;
    store.release(&r1).await.unwrap();
    let r2 = acquire(&store, begin_req("s", "k2", FP_B, lease)).await;
    assert!(!r2.taken_over());
    assert!(store.release(&r1).await.unwrap_err().is_lease_lost());
    assert!(store
        .complete(&r1, response("stale"), Duration::from_secs(60))
        .await
        .unwrap_err()
        .is_lease_lost());
    store
        .complete(&r2, response("fresh"), Duration::from_secs(60))
        .await
        .unwrap();

    // 4. Takeover after the lease expires: epoch + 1; the old holder is fenced off.
    let old = acquire(&store, begin_req("s", "k3", FP_A, lease)).await;
    tokio::time::sleep(wait_out_lease).await;
    let new = acquire(&store, begin_req("s", "k3", FP_A, lease)).await;
    assert!(new.taken_over());
    assert_eq!(new.epoch(), old.epoch() + 1);
    assert_ne!(new.owner(), old.owner());
    let lost = store
        .complete(&old, response("old"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(lost.kind(), StoreErrorKind::LeaseLost);
    assert!(store.release(&old).await.unwrap_err().is_lease_lost());
    store
        .complete(&new, response("new"), Duration::from_secs(60))
        .await
        .unwrap();
    match store
        .begin(begin_req("s", "k3", FP_A, lease))
        .await
        .unwrap()
    {
        BeginOutcome::Completed(stored) => assert_eq!(stored.body(), "new"),
        other => panic!("expected Completed, got {other:?}"),
    }
    // A takeover is refused for another fingerprint (still a mismatch).
    let _holder = acquire(&store, begin_req("s", "k4", FP_A, lease)).await;
    tokio::time::sleep(wait_out_lease).await;
    assert!(matches!(
        store
            .begin(begin_req("s", "k4", FP_B, lease))
            .await
            .unwrap(),
        BeginOutcome::Mismatch
    ));

    // 5. A live holder renews its lease and keeps it past its first end; a stale lease cannot
    //    renew.
    let holder = acquire(&store, begin_req("s", "k6", FP_A, lease)).await;
    let two_thirds = lease * 2 / 3;
    tokio::time::sleep(two_thirds).await;
    store.renew(&holder, lease).await.unwrap();
    tokio::time::sleep(two_thirds).await;
    assert!(matches!(
        store
            .begin(begin_req("s", "k6", FP_A, lease))
            .await
            .unwrap(),
        BeginOutcome::InFlight { .. }
    ));
    store
        .complete(&holder, response("renewed"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store
        .renew(&holder, lease)
        .await
        .unwrap_err()
        .is_lease_lost());
    assert!(store.renew(&old, lease).await.unwrap_err().is_lease_lost());

    // 6. Completed records expire; the key is then free, for any request.
    let e = acquire(&store, begin_req("s", "k5", FP_A, lease)).await;
    store
        .complete(&e, response("short"), Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = acquire(&store, begin_req("s", "k5", FP_B, lease)).await;
    assert!(!again.taken_over());

    // 7. Concurrent begins: exactly one acquires.
    let outcomes = futures::future::join_all((0..200).map(|_| {
        let store = store.clone();
        async move {
            store
                .begin(begin_req("s", "race", FP_A, Duration::from_secs(30)))
                .await
                .unwrap()
        }
    }))
    .await;
    let acquired = outcomes
        .iter()
        .filter(|o| matches!(o, BeginOutcome::Acquired(_)))
        .count();
    let in_flight = outcomes
        .iter()
        .filter(|o| matches!(o, BeginOutcome::InFlight { .. }))
        .count();
    assert_eq!((acquired, in_flight), (1, 199));
}

#[tokio::test(start_paused = true)]
async fn memory_store_conformance() {
    conformance(MemoryStore::new(), Duration::from_secs(30)).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conformance() {
    with_redis(|store| conformance(store, Duration::from_secs(1))).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conformance() {
    with_pg(|store| conformance(store, Duration::from_secs(1))).await;
}

#[tokio::test(start_paused = true)]
async fn memory_store_is_bounded() {
    let store = MemoryStore::builder().capacity(2).build().unwrap();
    let l = Duration::from_secs(30);
    let a = acquire(&store, begin_req("s", "a", FP_A, l)).await;
    acquire(&store, begin_req("s", "b", FP_A, l)).await;
    let full = store.begin(begin_req("s", "c", FP_A, l)).await.unwrap_err();
    assert_eq!(full.kind(), StoreErrorKind::Capacity);
    // Expired records make room; live ones are never evicted.
    store
        .complete(&a, response("a"), Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    acquire(&store, begin_req("s", "c", FP_A, l)).await;
    assert_eq!(store.len(), 2);
}

// ------------------------------------------------------------- through the server layer

fn server<St: IdempotencyStore>(
    store: St,
    lease: Duration,
    handler: Handler,
) -> (Svc<St>, IdempotencyLayer<St, HeaderPrincipal>) {
    let layer = IdempotencyLayer::builder(store)
        .principal(HeaderPrincipal::new(HeaderName::from_static("x-tenant")))
        .lease(lease)
        // Generous: 1,000 concurrent requests share a pool of 10 connections on a busy machine.
        .store_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    (layer.layer(handler), layer)
}

#[derive(Debug, Default)]
struct Tally {
    executed: usize,
    replays: usize,
    conflicts: usize,
    other: usize,
}

/// 1,000 concurrent duplicates of one keyed POST: the handler runs exactly once, every other
/// request is a replay or a 409.
async fn thousand_duplicates<St: IdempotencyStore + Clone>(
    store: St,
    name: &str,
) -> (Tally, IdempotencyStats) {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = scripted(calls.clone(), |_, _| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    });
    let (svc, layer) = server(store, Duration::from_secs(30), handler);
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                // Spread arrivals a little so that some duplicates come after completion.
                tokio::time::sleep(Duration::from_micros((i % 50) * 2000)).await;
                send(&svc, post(Some("dup-key"), "acme", "{\"amount\":100}")).await
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        let a = t.await.unwrap();
        match (a.status, a.replayed()) {
            (StatusCode::CREATED, false) => tally.executed += 1,
            (StatusCode::CREATED, true) => {
                assert_eq!(a.text(), "created #1: {\"amount\":100}");
                tally.replays += 1;
            }
            (StatusCode::CONFLICT, _) => tally.conflicts += 1,
            _ => {
                eprintln!("unexpected answer: {a:?}");
                tally.other += 1;
            }
        }
    }
    let stats = layer.stats();
    // Straight to stderr (not captured), so that the numbers show in every run.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "[{name}] 1000 concurrent duplicates: handler executions {}, executed {}, replays {}, conflicts_409 {}, other {}",
        calls.load(Ordering::SeqCst),
        tally.executed,
        tally.replays,
        tally.conflicts,
        tally.other
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "[{name}] the handler ran more than once"
    );
    assert_eq!(tally.executed, 1);
    assert_eq!(tally.replays + tally.conflicts, 999);
    assert_eq!(tally.other, 0);
    assert_eq!(
        (stats.executions, stats.replays, stats.conflicts),
        (1, tally.replays as u64, tally.conflicts as u64)
    );
    (tally, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_thousand_concurrent_duplicates_execute_once() {
    thousand_duplicates(MemoryStore::new(), "memory").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_thousand_concurrent_duplicates_execute_once() {
    with_redis(|store| async move {
        thousand_duplicates(store, "redis").await;
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_thousand_concurrent_duplicates_execute_once() {
    with_pg(|store| async move {
        thousand_duplicates(store, "postgres").await;
    })
    .await;
}

/// A holder killed after it took the lease: retries get 409 until the (short) lease expires,
/// then exactly one executes, and everything after replays.
async fn killed_holder<St: IdempotencyStore + Clone>(store: St, name: &str) {
    // Long enough that the first retry below surely finds the lease live, even on a busy
    // machine; short enough to keep the test quick.
    let lease = Duration::from_secs(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = scripted(calls.clone(), |n, _| async move {
        if n == 1 {
            std::future::pending::<()>().await;
        }
        Ok(())
    });
    let (svc, layer) = server(store, lease, handler);
    // The lease is taken after this instant, so it lasts at least until `t0 + lease`.
    let t0 = tokio::time::Instant::now();
    let holder = tokio::spawn(send(&svc, post(Some("k"), "acme", "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the holder never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    // A retry answered before `t0 + lease` was surely decided while the lease was live: 409.
    // On a machine slow enough to get there later, the lease may have expired and the retry
    // executed, which the rest of the test allows for.
    let first = send(&svc, post(Some("k"), "acme", "{}")).await;
    let mut executed = 0;
    if t0.elapsed() < lease {
        assert_eq!(first.status, StatusCode::CONFLICT, "[{name}]");
    } else {
        assert!(
            first.status == StatusCode::CONFLICT || first.status == StatusCode::CREATED,
            "[{name}] {}",
            first.status
        );
        executed += usize::from(first.status == StatusCode::CREATED && !first.replayed());
    }

    // Retry with bounded waiting, 10 concurrent retries per round.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while executed == 0 {
        let round =
            futures::future::join_all((0..10).map(|_| send(&svc, post(Some("k"), "acme", "{}"))))
                .await;
        executed += round
            .iter()
            .filter(|a| a.status == StatusCode::CREATED && !a.replayed())
            .count();
        assert!(round
            .iter()
            .all(|a| a.status == StatusCode::CREATED || a.status == StatusCode::CONFLICT));
        if round.iter().any(|a| a.status == StatusCode::CREATED) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "[{name}] no retry ever executed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        t0.elapsed() >= lease,
        "[{name}] executed before the lease expired"
    );
    let after =
        futures::future::join_all((0..10).map(|_| send(&svc, post(Some("k"), "acme", "{}")))).await;
    assert!(after.iter().all(Answer::replayed));
    assert_eq!(executed, 1, "[{name}]");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "[{name}] the dead holder and exactly one retry"
    );
    assert_eq!(layer.stats().lease_takeovers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_killed_holder_is_taken_over_once() {
    killed_holder(MemoryStore::new(), "memory").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_holder_is_taken_over_once() {
    with_redis(|store| async move { killed_holder(store, "redis").await }).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_holder_is_taken_over_once() {
    with_pg(|store| async move { killed_holder(store, "postgres").await }).await;
}

/// A corrupt stored record is answered 503 problem details, and the handler is not run.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn corrupt_record_is_503<St: IdempotencyStore + Clone>(
    store: St,
    corrupt: impl std::future::Future<Output = ()>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (svc, layer) = server(store, Duration::from_secs(30), counting(calls.clone()));
    // Store a real record, then damage it.
    send(&svc, post(Some("k"), "acme", "{}")).await;
    corrupt.await;
    let res = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.problem()["detail"]
        .as_str()
        .unwrap()
        .contains("corrupt"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().store_errors, 1);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_corrupt_record_is_503() {
    with_redis(|store| async move {
        let key = store.record_key("acme", "k");
        let mut conn = redis::Client::open(redis_url().as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let damage = async move {
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("resp")
                .arg(&b"\x00garbage"[..])
                .query_async(&mut conn)
                .await
                .unwrap();
        };
        corrupt_record_is_503(store, damage).await;
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_corrupt_record_is_503() {
    with_pg(|store| async move {
        let sql = format!("UPDATE {} SET response = '\\x00ff'::bytea", store.table());
        let pool = store.pool().clone();
        let damage = async move {
            sqlx::query(&sql).execute(&pool).await.unwrap();
        };
        corrupt_record_is_503(store, damage).await;
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_in_an_unknown_state_are_corrupt() {
    with_pg(|store| async move {
        let lease = acquire(&store, begin_req("s", "k", FP_A, Duration::from_secs(30))).await;
        let _ = lease;
        sqlx::query(&format!("UPDATE {} SET state = 7", store.table()))
            .execute(store.pool())
            .await
            .unwrap();
        let err = store
            .begin(begin_req("s", "k", FP_A, Duration::from_secs(30)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt);
        assert_eq!(store.purge_expired().await.unwrap(), 0);
        // The migration can run again.
        store.migrate().await.unwrap();
    })
    .await;
}

/// Unreachable stores: connecting fails with a typed error; a store that loses its server
/// answers 503 through the layer.
#[cfg(all(feature = "redis", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_stores_are_typed_errors_and_503() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);

    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    let err = PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);

    // Lazily connected stores fail at the first request: 503, handler not run.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(0);
    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config).unwrap();
    let redis_store = RedisStore::builder(conn).build().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .unwrap();
    let pg_store = PostgresStore::builder(pool).build().unwrap();

    for (name, answer) in [
        ("redis", {
            let (svc, _) = server(
                redis_store,
                Duration::from_secs(30),
                counting(Arc::default()),
            );
            send(&svc, post(Some("k"), "acme", "{}")).await
        }),
        ("postgres", {
            let (svc, _) = server(pg_store, Duration::from_secs(30), counting(Arc::default()));
            send(&svc, post(Some("k"), "acme", "{}")).await
        }),
    ] {
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{name}");
        let doc = answer.problem();
        assert!(
            doc["detail"].as_str().unwrap().contains("unavailable"),
            "{name}: {doc}"
        );
    }
}

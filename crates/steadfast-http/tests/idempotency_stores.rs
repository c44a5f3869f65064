//! The store conformance suite, run on every store (memory, Redis, PostgreSQL), and the
//! must-have end-to-end checks through the server layer on each: 1,000 concurrent duplicates
//! execute once; a killed holder is taken over after its lease; the longest accepted key and a
//! 10 kB principal (any characters) are stored; a store that fails after execution leaves the
//! key in flight until its lease expires; unreachable stores answer 503, permanent store
//! errors (corrupt records, missing tables) 500 without `Retry-After`; a version-1 PostgreSQL
//! table is migrated in place.
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

    // 7. A lease and an expiry past MAX_SPAN are kept as MAX_SPAN: no panic, no store error,
    //    and the key is held, then replayed.
    let far = BeginRequest::new("s", IdempotencyKey::new("k7").unwrap(), FP_A)
        .lease(Duration::MAX)
        .expiry(Duration::MAX);
    let held = acquire(&store, far).await;
    store.renew(&held, Duration::MAX).await.unwrap();
    match store
        .begin(begin_req("s", "k7", FP_A, lease))
        .await
        .unwrap()
    {
        BeginOutcome::InFlight { retry_after } => assert!(retry_after > lease, "{retry_after:?}"),
        other => panic!("expected InFlight, got {other:?}"),
    }
    store
        .complete(&held, response("far"), Duration::MAX)
        .await
        .unwrap();
    match store
        .begin(begin_req("s", "k7", FP_A, lease))
        .await
        .unwrap()
    {
        BeginOutcome::Completed(stored) => assert_eq!(stored.body(), "far"),
        other => panic!("expected Completed, got {other:?}"),
    }

    // 8. Concurrent begins: exactly one acquires.
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

/// A corrupt stored record is answered 500 problem details without `Retry-After` (retrying
/// cannot clear it), and the handler is not run again.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn corrupt_record_is_500<St: IdempotencyStore + Clone>(
    store: St,
    corrupt: impl std::future::Future<Output = ()>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (svc, layer) = server(store, Duration::from_secs(30), counting(calls.clone()));
    // Store a real record, then damage it.
    send(&svc, post(Some("k"), "acme", "{}")).await;
    corrupt.await;
    let res = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.headers.get("retry-after").is_none());
    let doc = res.problem();
    assert!(doc["detail"].as_str().unwrap().contains("corrupt"), "{doc}");
    assert_eq!(doc["type"], "urn:steadfast:idempotency:store-failed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().store_errors, 1);
}

/// `corrupt_record_is_500` with the Redis record's stored response overwritten by `bytes`.
#[cfg(feature = "redis")]
async fn redis_stored_response_is_500(store: RedisStore, bytes: Vec<u8>) {
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
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    corrupt_record_is_500(store, damage).await;
}

/// `corrupt_record_is_500` with the PostgreSQL row's stored response overwritten by `bytes`.
#[cfg(feature = "postgres")]
async fn postgres_stored_response_is_500(store: PostgresStore, bytes: Vec<u8>) {
    let sql = format!("UPDATE {} SET response = $1", store.table());
    let pool = store.pool().clone();
    let damage = async move {
        sqlx::query(&sql).bind(bytes).execute(&pool).await.unwrap();
    };
    corrupt_record_is_500(store, damage).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_corrupt_record_is_500() {
    with_redis(|store| redis_stored_response_is_500(store, b"\x00garbage".to_vec())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_corrupt_record_is_500() {
    with_pg(|store| postgres_stored_response_is_500(store, vec![0x00, 0xff])).await;
}

/// A header map holds at most this many distinct names (`http`'s limit of 2^15 slots at its
/// load factor of 3/4).
const MAP_NAMES: usize = 24_576;

/// A stored response in the stores' format (`SFI1`, status, header count, headers, body) with
/// `names` distinct headers: more than a live response can have once the map is full, which
/// only a corrupt or hand-written record holds.
fn crowded_record(names: usize) -> Vec<u8> {
    let mut out = b"SFI1".to_vec();
    out.extend_from_slice(&200u16.to_be_bytes());
    out.extend_from_slice(&u32::try_from(names).unwrap().to_be_bytes());
    for i in 0..names {
        let name = format!("x{i:05}");
        out.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    out.extend_from_slice(&0u64.to_be_bytes());
    out
}

/// One name more than a header map holds is a corrupt record, not `http`'s panic; a map at
/// its limit decodes (and is refused when replayed: below).
#[test]
fn stored_response_with_more_headers_than_a_map_holds_is_corrupt() {
    let err = StoredResponse::decode(&crowded_record(MAP_NAMES + 1)).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("more headers than a header map holds"),
        "{err}"
    );
    let full = StoredResponse::decode(&crowded_record(MAP_NAMES)).unwrap();
    assert_eq!(full.headers().len(), MAP_NAMES);
    // The encoding is the stores' own: the full record round-trips.
    assert_eq!(full.encode(), crowded_record(MAP_NAMES));
}

/// A stored response whose header map is full leaves no room for `Idempotent-Replayed`: the
/// replay is a corrupt record (500), not a panic of the request's task.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_record_with_a_full_header_map_is_500() {
    with_redis(|store| redis_stored_response_is_500(store, crowded_record(MAP_NAMES))).await;
}

/// As above, on PostgreSQL.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_record_with_a_full_header_map_is_500() {
    with_pg(|store| postgres_stored_response_is_500(store, crowded_record(MAP_NAMES))).await;
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

// ------------------------------------------------ every accepted input is storable

/// The longest key the codec accepts (8192 characters, `"` and `\` included).
fn longest_key(last: char) -> String {
    let mut key: String = "k-\"\\0123456789".chars().cycle().take(8191).collect();
    key.push(last);
    key
}

/// A 10 kB principal, as a header carries it (visible ASCII).
fn big_principal(last: char) -> String {
    let mut p: String = "tenant-"
        .chars()
        .chain(('a'..='z').cycle())
        .take(9_999)
        .collect();
    p.push(last);
    p
}

fn post_long(key: &str, tenant: &str, body: &str) -> http::Request<http_body_util::Full<Bytes>> {
    let key = IdempotencyKey::with_max_len(key, 8192).unwrap();
    http::Request::post("/orders")
        .header("x-tenant", tenant)
        .header("idempotency-key", key.to_header_value())
        .body(http_body_util::Full::new(Bytes::copy_from_slice(
            body.as_bytes(),
        )))
        .unwrap()
}

/// Through the server layer with `max_key_len(8192)`: an 8192-character key under a 10 kB
/// principal executes once and replays; another body is `422`; keys or principals that differ
/// in their last character only are other records; 8193 characters are `400`.
async fn longest_inputs<St: IdempotencyStore + Clone>(store: St, name: &str) {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = IdempotencyLayer::builder(store)
        .principal(HeaderPrincipal::new(HeaderName::from_static("x-tenant")))
        .max_key_len(8192)
        .store_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let svc = layer.layer(counting(calls.clone()));
    let (key, tenant) = (longest_key('z'), big_principal('z'));
    assert_eq!((key.len(), tenant.len()), (8192, 10_000));

    let first = send(&svc, post_long(&key, &tenant, "{\"qty\":1}")).await;
    assert_eq!(
        (first.status, first.replayed()),
        (StatusCode::CREATED, false),
        "[{name}] {first:?}"
    );
    assert!(first.headers.contains_key("idempotency-key-expires"));
    let again = send(&svc, post_long(&key, &tenant, "{\"qty\":1}")).await;
    assert!(again.replayed(), "[{name}] {again:?}");
    assert_eq!(again.text(), "created #1: {\"qty\":1}");
    let other_body = send(&svc, post_long(&key, &tenant, "{\"qty\":2}")).await;
    assert_eq!(
        other_body.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "[{name}]"
    );

    let other_key = send(&svc, post_long(&longest_key('y'), &tenant, "{\"qty\":1}")).await;
    assert_eq!(other_key.text(), "created #2: {\"qty\":1}", "[{name}]");
    let other_tenant = send(&svc, post_long(&key, &big_principal('y'), "{\"qty\":1}")).await;
    assert_eq!(other_tenant.text(), "created #3: {\"qty\":1}", "[{name}]");
    assert!(!other_tenant.replayed());

    let mut too_long = post_long(&key, &tenant, "{}");
    too_long.headers_mut().insert(
        "idempotency-key",
        format!("\"{}\"", "k".repeat(8193)).parse().unwrap(),
    );
    assert_eq!(send(&svc, too_long).await.status, StatusCode::BAD_REQUEST);

    assert_eq!(calls.load(Ordering::SeqCst), 3, "[{name}]");
    let stats = layer.stats();
    assert_eq!((stats.store_errors, stats.mismatches), (0, 1), "[{name}]");
}

/// Principals of any content and length, straight on the store: NUL, non-ASCII and 10 kB of
/// each, with the longest key; each is its own record.
async fn any_principal<St: IdempotencyStore + Clone>(store: St) -> Vec<(String, String)> {
    // Not the key `longest_inputs` uses on the same store.
    let key = longest_key('x');
    let scopes = [
        "\0".repeat(10_000),
        "é".repeat(5_000),
        format!("{}\u{10FFFF}", "😀'\"\\;--".repeat(1_000)),
        big_principal('z'),
        String::new(),
    ];
    let mut stored = Vec::new();
    for (i, scope) in scopes.iter().enumerate() {
        let req = BeginRequest::new(
            scope.as_str(),
            IdempotencyKey::with_max_len(key.clone(), 8192).unwrap(),
            FP_A,
        )
        .lease(Duration::from_secs(30))
        .expiry(Duration::from_secs(3600));
        let lease = acquire(&store, req.clone()).await;
        let body: &'static str = ["0", "1", "2", "3", "4"][i];
        store
            .complete(&lease, response(body), Duration::from_secs(3600))
            .await
            .unwrap();
        match store.begin(req).await.unwrap() {
            BeginOutcome::Completed(r) => assert_eq!(r.body(), body, "scope #{i}"),
            other => panic!("scope #{i}: expected Completed, got {other:?}"),
        }
        stored.push((scope.clone(), key.clone()));
    }
    stored
}

#[tokio::test(start_paused = true)]
async fn memory_stores_the_longest_key_and_any_principal() {
    let store = MemoryStore::new();
    longest_inputs(store.clone(), "memory").await;
    any_principal(store).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stores_the_longest_key_and_any_principal() {
    with_redis(|store| async move {
        longest_inputs(store.clone(), "redis").await;
        let stored = any_principal(store.clone()).await;
        // Key names are bounded: the prefix and 64 hex digits.
        let mut conn = redis::Client::open(redis_url().as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for (scope, key) in stored {
            let name = store.record_key(&scope, &key);
            assert_eq!(name.len(), store.prefix().len() + 64);
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(exists, 1, "{name}");
        }
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_the_longest_key_and_any_principal() {
    with_pg(|store| async move {
        longest_inputs(store.clone(), "postgres").await;
        let stored = any_principal(store.clone()).await;
        // The row keeps the full scope and key beside the 32-byte id.
        for (scope, key) in stored {
            let id = steadfast_http::idempotency::store::RecordId::of(&scope, &key);
            let row: (i32, Vec<u8>, String) = sqlx::query_as(&format!(
                "SELECT octet_length(id), scope, key FROM {} WHERE id = $1",
                store.table()
            ))
            .bind(id.as_bytes().as_slice())
            .fetch_one(store.pool())
            .await
            .unwrap();
            assert_eq!(row, (32, scope.into_bytes(), key));
        }
    })
    .await;
}

// ------------------------------------------------ a store that fails after execution

/// Wraps a store; its next `failures` completions fail with `error` (or hang, if `None`).
#[derive(Clone)]
struct FailingCompletions<St> {
    inner: St,
    failures: Arc<AtomicUsize>,
    error: Option<fn() -> steadfast_http::idempotency::StoreError>,
}

impl<St: IdempotencyStore> IdempotencyStore for FailingCompletions<St> {
    fn begin(
        &self,
        request: BeginRequest,
    ) -> steadfast_http::idempotency::store::StoreFuture<BeginOutcome> {
        self.inner.begin(request)
    }

    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> steadfast_http::idempotency::store::StoreFuture<()> {
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        match (fail, self.error) {
            (false, _) => self.inner.complete(lease, response, expiry),
            (true, Some(e)) => Box::pin(std::future::ready(Err(e()))),
            (true, None) => Box::pin(std::future::pending()),
        }
    }

    fn release(&self, lease: &Lease) -> steadfast_http::idempotency::store::StoreFuture<()> {
        self.inner.release(lease)
    }

    fn renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> steadfast_http::idempotency::store::StoreFuture<()> {
        self.inner.renew(lease, duration)
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

/// The handler ran, then storing its response failed. The client gets the executed response
/// (without `Idempotency-Key-Expires`: nothing was stored); a retry within the lease gets `409`
/// and does not execute; the first retry after the lease executes again and is stored; later
/// ones replay it.
async fn fails_after_execution<St: IdempotencyStore + Clone>(
    store: St,
    error: Option<fn() -> steadfast_http::idempotency::StoreError>,
    lease: Duration,
    name: &str,
) {
    let store = FailingCompletions {
        inner: store,
        failures: Arc::new(AtomicUsize::new(1)),
        error,
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = IdempotencyLayer::builder(store)
        .principal(HeaderPrincipal::new(HeaderName::from_static("x-tenant")))
        .lease(lease)
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let svc = layer.layer(counting(calls.clone()));
    let t0 = tokio::time::Instant::now();

    let first = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(
        (first.status, first.replayed(), first.text().as_str()),
        (StatusCode::CREATED, false, "created #1: {}"),
        "[{name}]"
    );
    assert!(
        first.headers.get("idempotency-key-expires").is_none(),
        "[{name}] not stored, so no expiry to publish"
    );
    assert_eq!(layer.stats().store_errors, 1, "[{name}]");

    // Within the lease: 409, not executed.
    let retry = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert!(
        t0.elapsed() < lease,
        "[{name}] too slow to observe the lease"
    );
    assert_eq!(retry.status, StatusCode::CONFLICT, "[{name}] {retry:?}");
    let retry_after: u64 = retry.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=lease.as_secs()).contains(&retry_after),
        "[{name}] {retry_after}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // After the lease: the retry takes the key over and executes again; then replays.
    tokio::time::sleep(lease + Duration::from_millis(250)).await;
    let after = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(
        (after.status, after.replayed(), after.text().as_str()),
        (StatusCode::CREATED, false, "created #2: {}"),
        "[{name}]"
    );
    assert!(after.headers.contains_key("idempotency-key-expires"));
    let replay = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert!(replay.replayed(), "[{name}]");
    assert_eq!(replay.text(), "created #2: {}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "[{name}]");
    let stats = layer.stats();
    assert_eq!(
        (stats.executions, stats.lease_takeovers, stats.store_errors),
        (2, 1, 1),
        "[{name}]"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_store_failing_after_execution() {
    fails_after_execution(
        MemoryStore::new(),
        Some(|| steadfast_http::idempotency::StoreError::unavailable("connection reset")),
        Duration::from_secs(5),
        "memory, unavailable",
    )
    .await;
    fails_after_execution(
        MemoryStore::new(),
        Some(|| steadfast_http::idempotency::StoreError::refused("permission denied")),
        Duration::from_secs(5),
        "memory, refused",
    )
    .await;
    // A completion that never answers is cut off by the store timeout (2 s), the same way; the
    // answer waits for it, and the lease (5 s) still has 3 s to run.
    fails_after_execution(
        MemoryStore::new(),
        None,
        Duration::from_secs(5),
        "memory, timeout",
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_failing_after_execution() {
    with_redis(|store| async move {
        fails_after_execution(
            store,
            Some(|| steadfast_http::idempotency::StoreError::unavailable("connection reset")),
            // Real time: long enough that the first retry surely finds the lease live, even
            // on a busy machine.
            Duration::from_secs(3),
            "redis",
        )
        .await;
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_failing_after_execution() {
    with_pg(|store| async move {
        fails_after_execution(
            store,
            Some(|| steadfast_http::idempotency::StoreError::unavailable("connection reset")),
            // Real time: long enough that the first retry surely finds the lease live, even
            // on a busy machine.
            Duration::from_secs(3),
            "postgres",
        )
        .await;
    })
    .await;
}

// ------------------------------------------------ permanent errors on the real servers

/// A table that does not exist (42P01) is refused, not "unavailable": `500`, no `Retry-After`.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_missing_table_is_a_permanent_500() {
    with_pg(|store| async move {
        let unmigrated = PostgresStore::builder(store.pool().clone())
            .schema(store.schema())
            .table("never_migrated")
            .build()
            .unwrap();
        let err = unmigrated
            .begin(begin_req("s", "k", FP_A, Duration::from_secs(30)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
        assert!(!err.is_transient());

        let calls = Arc::new(AtomicUsize::new(0));
        let (svc, layer) = server(unmigrated, Duration::from_secs(30), counting(calls.clone()));
        for _ in 0..2 {
            let res = send(&svc, post(Some("k"), "acme", "{}")).await;
            assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(res.headers.get("retry-after").is_none());
            assert!(res.problem()["detail"]
                .as_str()
                .unwrap()
                .contains("refused"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(layer.stats().store_errors, 2);
    })
    .await;
}

/// A record key holding another Redis type (`WRONGTYPE`) is corrupt: `500`, no `Retry-After`.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wrong_type_is_a_permanent_500() {
    with_redis(|store| async move {
        let mut conn = redis::Client::open(redis_url().as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(store.record_key("acme", "k"))
            .arg("not a hash")
            .query_async(&mut conn)
            .await
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let (svc, _) = server(store, Duration::from_secs(30), counting(calls.clone()));
        let res = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers.get("retry-after").is_none());
        assert!(res.problem()["detail"]
            .as_str()
            .unwrap()
            .contains("corrupt"));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    })
    .await;
}

// ------------------------------------------------ PostgreSQL schema migration

/// The version-1 table (before records were addressed by digest), as its migration made it.
#[cfg(feature = "postgres")]
const VERSION_1_DDL: &str = r#"
CREATE TABLE {table} (
    scope       text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    state       smallint    NOT NULL,
    owner       uuid        NOT NULL,
    epoch       bigint      NOT NULL,
    lease_until timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    response    bytea,
    PRIMARY KEY (scope, key)
);
CREATE INDEX {index} ON {table} (expires_at);
"#;

/// A version-1 table with a completed record (ASCII and non-ASCII scope) and an in-flight one
/// is migrated in place: the records keep working, by the digest the code computes; the
/// migration runs again harmlessly; long inputs then fit.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrates_a_version_1_table_in_place() {
    with_pg(|store| async move {
        let pool = store.pool().clone();
        let table = format!("\"{}\".\"legacy\"", store.schema());
        sqlx::raw_sql(
            &VERSION_1_DDL
                .replace("{table}", &table)
                .replace("{index}", "\"legacy_expires_at\""),
        )
        .execute(&pool)
        .await
        .unwrap();
        let insert = format!(
            "INSERT INTO {table} (scope, key, fingerprint, state, owner, epoch, lease_until, expires_at, response) \
             VALUES ($1, $2, $3, $4, $5::uuid, $6, now() + interval '1 hour', now() + interval '1 hour', $7)"
        );
        let holder = uuid::Uuid::now_v7();
        for (scope, key, state, epoch, resp) in [
            ("acme", "k1", 1i16, 1i64, Some(response("one").encode())),
            ("tenant-é", "k1", 1, 1, Some(response("two").encode())),
            ("acme", "k2", 0, 3, None),
        ] {
            sqlx::query(&insert)
                .bind(scope)
                .bind(key)
                .bind(FP_A.as_bytes().as_slice())
                .bind(state)
                .bind(holder.to_string())
                .bind(epoch)
                .bind(resp)
                .execute(&pool)
                .await
                .unwrap();
        }

        let migrated = PostgresStore::builder(pool.clone())
            .schema(store.schema())
            .table("legacy")
            .build()
            .unwrap();
        migrated.migrate().await.unwrap();
        migrated.migrate().await.unwrap();

        let begin = |scope: &str, key: &str, fp| {
            migrated.begin(begin_req(scope, key, fp, Duration::from_secs(30)))
        };
        match begin("acme", "k1", FP_A).await.unwrap() {
            BeginOutcome::Completed(r) => assert_eq!(r, response("one")),
            other => panic!("expected Completed, got {other:?}"),
        }
        match begin("tenant-é", "k1", FP_A).await.unwrap() {
            BeginOutcome::Completed(r) => assert_eq!(r, response("two")),
            other => panic!("expected Completed, got {other:?}"),
        }
        assert!(matches!(
            begin("acme", "k1", FP_B).await.unwrap(),
            BeginOutcome::Mismatch
        ));
        assert!(matches!(
            begin("acme", "k2", FP_A).await.unwrap(),
            BeginOutcome::InFlight { .. }
        ));
        // The in-flight holder from before the migration can still complete under its lease.
        let old_lease = BeginRequest::new("acme", IdempotencyKey::new("k2").unwrap(), FP_A)
            .owner(holder)
            .lease_at(3, false);
        migrated
            .complete(&old_lease, response("three"), Duration::from_secs(3600))
            .await
            .unwrap();
        match begin("acme", "k2", FP_A).await.unwrap() {
            BeginOutcome::Completed(r) => assert_eq!(r, response("three")),
            other => panic!("expected Completed, got {other:?}"),
        }

        let comment: Option<String> =
            sqlx::query_scalar(&format!("SELECT obj_description('{table}'::regclass)"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(comment.unwrap().contains("schema version 2"));
        let pkey: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = '{table}'::regclass AND i.indisprimary"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(pkey, ["id"]);

        any_principal(migrated).await;
    })
    .await;
}

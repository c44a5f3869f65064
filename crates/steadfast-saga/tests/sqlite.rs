//! The conformance suite on the SQLite store, plus SQLite-specific checks.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use steadfast_saga::store::{conformance, SagaStore, SqliteStore};
use support::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let db = TempDb::new("conformance");
    let store = Arc::new(SqliteStore::open(&db.path).await.unwrap());
    conformance::run_all(store.clone(), Some(&*store))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_share_claims_and_fencing() {
    // Two pools on one file behave like two processes: claims never overlap.
    let db = TempDb::new("two-handles");
    let a = SqliteStore::open(&db.path).await.unwrap();
    let b = SqliteStore::open(&db.path).await.unwrap();
    conformance::concurrent_claims_never_share_a_saga(&a)
        .await
        .unwrap();
    conformance::stale_epoch_is_fenced_and_writes_nothing(&b)
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        conformance::concurrent_claims_never_share_a_saga(&a),
        conformance::concurrent_claims_never_share_a_saga(&b)
    );
    ra.unwrap();
    rb.unwrap();
    let wal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(wal, "wal");
    let _ = a.list(None, 10).await.unwrap();
}

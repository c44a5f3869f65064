//! The conformance suite on the SQLite store, plus SQLite-specific checks.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use steadfast_saga::store::{conformance, ListQuery, SagaStore, SqliteStore};
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
    let _ = a.list(ListQuery::new(10)).await.unwrap();
}

/// The saga table as the first schema made it, before `forward_only` and `cancel_requested`.
const OLD_SAGAS_TABLE: &str = "CREATE TABLE steadfast_sagas (
    id TEXT PRIMARY KEY, saga_type TEXT NOT NULL, version INTEGER NOT NULL,
    business_key TEXT NOT NULL, status TEXT NOT NULL, compensating INTEGER NOT NULL DEFAULT 0,
    input TEXT NOT NULL, cursor INTEGER NOT NULL DEFAULT 0, recoveries INTEGER NOT NULL DEFAULT 0,
    error TEXT, lease_owner TEXT, lease_epoch INTEGER NOT NULL, lease_expires_ms INTEGER NOT NULL,
    deadline_ms INTEGER, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    UNIQUE (saga_type, business_key))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_gains_the_cancel_columns_on_open() {
    let db = TempDb::new("old-schema");
    let id = "00000000-0000-4000-8000-000000000001";
    {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db.path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query(OLD_SAGAS_TABLE).execute(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO steadfast_sagas (id, saga_type, version, business_key, status, input,
                lease_owner, lease_epoch, lease_expires_ms, created_ms, updated_ms)
             VALUES (?, 't', 1, 'k', 'running', '{}', 'o', 1, 0, 0, 0)",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&db.path).await.unwrap();
    // Opening twice adds nothing twice.
    let store2 = SqliteStore::open(&db.path).await.unwrap();
    let id = id.parse().unwrap();
    let r = store.load(id).await.unwrap();
    assert!(!r.forward_only && r.cancel_requested.is_none());
    assert_eq!(
        store2.request_cancel(id, "old row").await.unwrap(),
        steadfast_saga::SagaStatus::Running
    );
    assert_eq!(
        store.load(id).await.unwrap().cancel_requested.as_deref(),
        Some("old row")
    );
}

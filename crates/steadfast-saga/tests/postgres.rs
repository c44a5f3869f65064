//! The conformance suite on the PostgreSQL store (skipped loudly when the server is
//! unreachable, unless STEADFAST_REQUIRE_SERVICES=1).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use steadfast_saga::store::{conformance, PostgresStore, SagaStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let Some(store) = support::pg_store("conformance").await else {
        return;
    };
    let store = Arc::new(store);
    let result = conformance::run_all(store.clone(), Some(&*store)).await;
    store.drop_schema().await.unwrap();
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_schema_never_share_a_claim() {
    let Some(a) = support::pg_store("two-pools").await else {
        return;
    };
    let name: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(a.pool())
        .await
        .unwrap();
    let b = PostgresStore::connect(&support::database_url(), Some(&name))
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        conformance::concurrent_claims_never_share_a_saga(&a),
        conformance::concurrent_claims_never_share_a_saga(&b)
    );
    let rc = conformance::stale_epoch_is_fenced_and_writes_nothing(&b).await;
    let _ = a.list(None, 1).await;
    a.drop_schema().await.unwrap();
    ra.unwrap();
    rb.unwrap();
    rc.unwrap();
}

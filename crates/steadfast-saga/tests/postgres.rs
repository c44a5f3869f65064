//! The conformance suite on the PostgreSQL store (skipped loudly when the server is
//! unreachable, unless STEADFAST_REQUIRE_SERVICES=1).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use steadfast_saga::store::{conformance, ListQuery, PostgresStore, SagaStore};

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
    let _ = a.list(ListQuery::new(1)).await;
    a.drop_schema().await.unwrap();
    ra.unwrap();
    rb.unwrap();
    rc.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_schema_gains_the_cancel_columns_on_connect() {
    let Some(probe) = support::pg_store("old_schema").await else {
        return;
    };
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(probe.pool())
        .await
        .unwrap();
    let id = "00000000-0000-4000-8000-000000000001";
    let result = async {
        // The saga table as the first schema made it.
        sqlx::query(
            "ALTER TABLE steadfast_sagas DROP COLUMN forward_only, DROP COLUMN cancel_requested",
        )
        .execute(probe.pool())
        .await?;
        sqlx::query(
            "INSERT INTO steadfast_sagas (id, saga_type, version, business_key, status, input,
                lease_owner, lease_epoch, lease_expires_at)
             VALUES ($1, 't', 1, 'k', 'running', '{}', 'o', 1, now())",
        )
        .bind(id)
        .execute(probe.pool())
        .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let upgraded = PostgresStore::connect(&support::database_url(), Some(&schema)).await;
    let checked = async {
        result.unwrap();
        let store = upgraded.unwrap();
        let id = id.parse().unwrap();
        let r = store.load(id).await.unwrap();
        assert!(!r.forward_only && r.cancel_requested.is_none());
        assert_eq!(
            store.request_cancel(id, "old row").await.unwrap(),
            steadfast_saga::SagaStatus::Running
        );
    };
    let outcome = tokio::spawn(checked).await;
    probe.drop_schema().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

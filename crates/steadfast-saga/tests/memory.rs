//! The conformance suite on the in-memory store.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use steadfast_saga::store::{conformance, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    let store = Arc::new(MemoryStore::new());
    conformance::run_all(store.clone(), Some(&*store))
        .await
        .unwrap();
}

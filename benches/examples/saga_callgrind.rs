//! A driver for load-independent counts of the saga engine's cost: runs `N` three-step no-op
//! sagas on the `MemoryStore` (16 in flight, as the `saga` bench; after 500 warm-up sagas), or
//! `N` of the bench's raw memory transactions, so that `valgrind --tool=callgrind` counts their
//! instructions. The cost of one saga (or transaction) is the difference between two runs
//! divided by the difference in `N`:
//!
//! ```text
//! cargo build --release -p steadfast-benches --example saga_callgrind
//! valgrind --tool=callgrind target/release/examples/saga_callgrind sagas 2000
//! valgrind --tool=callgrind target/release/examples/saga_callgrind sagas 4000
//! valgrind --tool=callgrind target/release/examples/saga_callgrind raw 12000
//! valgrind --tool=callgrind target/release/examples/saga_callgrind raw 24000
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use steadfast_saga::store::MemoryStore;
use steadfast_saga::{Orchestrator, Saga, SagaStatus, Step, StepContext, StepError};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const CONCURRENCY: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("sagas", String::as_str);
    let n: u64 = args
        .get(2)
        .map_or(Ok(2_000), |a| a.parse())
        .expect("a number of sagas");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match what {
        "sagas" => rt.block_on(sagas(n)),
        "raw" => rt.block_on(raw(n)),
        other => panic!("unknown workload {other}: sagas or raw"),
    }
}

async fn sagas(n: u64) {
    type Ctx = StepContext<u64>;
    let mut b = Saga::builder::<u64>("bench-trip").version(1);
    for name in ["flight", "hotel"] {
        b.step(Step::compensatable(
            name,
            |_ctx: Ctx| async { Ok::<_, StepError>(()) },
            |_ctx: Ctx, _out: ()| async { Ok::<_, StepError>(()) },
        ));
    }
    b.step(Step::pivot("car", |_ctx: Ctx| async {
        Ok::<_, StepError>(())
    }));
    let def = b.build().expect("a valid saga definition");
    let orch = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .register(&def)
        .owner("bench-memory")
        .build()
        .expect("a valid orchestrator");
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for key in 0..500 + n {
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (orch, def) = (orch.clone(), def.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let s = orch
                .start(&def, &format!("b{key}"), &key)
                .await
                .expect("start");
            let status = orch.wait(s.id).await.expect("wait");
            assert_eq!(status, SagaStatus::Completed);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a saga task");
    }
}

async fn raw(n: u64) {
    let map = Arc::new(Mutex::new(HashMap::<u64, String>::new()));
    let mut tasks = JoinSet::new();
    let per_task = (3_000 + n) / CONCURRENCY as u64;
    for t in 0..CONCURRENCY as u64 {
        let map = Arc::clone(&map);
        tasks.spawn(async move {
            for row in t * per_task..(t + 1) * per_task {
                let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
                m.insert(row, format!("row {row}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a raw task");
    }
}

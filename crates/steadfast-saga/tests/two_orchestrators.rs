//! Two orchestrator processes on one PostgreSQL database run 500 sagas while the parent kills
//! one or the other (SIGKILL) at random and restarts it. Both start every saga (the business
//! key dedupes them) and both run the recovery loop. Checked afterwards:
//! - one saga per business key, every saga completed or compensated;
//! - every participant effect applied exactly once;
//! - no saga was ever executed by both at once: participant calls' wall-clock intervals (one
//!   host, one clock) of different orchestrators never overlap on one saga;
//! - every write from a fenced-out owner was rejected: per saga, the log's epochs never go
//!   backwards;
//! - the crashes really caused take-overs (recoveries happened).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Row;
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_saga::store::SagaStore;
use steadfast_saga::SagaStatus;
use tokio::process::{Child, Command};

const CHILD: &str = env!("CARGO_BIN_EXE_saga-crash-child");
const SAGAS: u32 = 500;
const KILLS: u32 = 8;

#[allow(clippy::disallowed_types)]
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn spawn(schema: &str, inst: &str) -> Child {
    Command::new(CHILD)
        .arg(format!("postgres:{schema}"))
        .arg("soak")
        .arg(SAGAS.to_string())
        .arg(inst)
        .args(["--lease-ms", "1500"])
        .env("DATABASE_URL", support::database_url())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn an orchestrator child")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_500_sagas_random_crashes() {
    let Some(store) = support::pg_store("two_orch").await else {
        return;
    };
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let rng = SeededRng::from_entropy();
    let mut generation = [0u32; 2];
    let name = |slot: usize, gen: u32| format!("{}-{gen}", ["A", "B"][slot]);
    let mut children = [spawn(&schema, &name(0, 0)), spawn(&schema, &name(1, 0))];
    // When each killed instance was dead for sure (its open calls ended before this).
    let mut dead_at: HashMap<String, i64> = HashMap::new();
    for _ in 0..KILLS {
        // Waiting for child processes: the only real-clock sleep here.
        tokio::time::sleep(Duration::from_millis(300 + rng.next_u64() % 1200)).await;
        let slot = (rng.next_u64() % 2) as usize;
        let victim = name(slot, generation[slot]);
        children[slot].kill().await.unwrap();
        dead_at.insert(victim, wall_us());
        generation[slot] += 1;
        children[slot] = spawn(&schema, &name(slot, generation[slot]));
    }
    let finish = async {
        for c in &mut children {
            let status = c.wait().await.unwrap();
            assert!(status.success(), "an orchestrator child failed: {status:?}");
        }
    };
    tokio::time::timeout(Duration::from_secs(240), finish)
        .await
        .expect("both orchestrators finished within 240 s");
    let exited_at = wall_us();

    // One saga per key, all finished.
    let sagas = store.list(None, 10_000).await.unwrap();
    assert_eq!(sagas.len(), SAGAS as usize);
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sagas {
        *by_status.entry(s.status.to_string()).or_default() += 1;
        let i: u32 = s.business_key.trim_start_matches('s').parse().unwrap();
        let expected = if i % 3 == 2 {
            SagaStatus::Compensated
        } else {
            SagaStatus::Completed
        };
        assert_eq!(s.status, expected, "{s:?}");
    }
    eprintln!("statuses: {by_status:?}");

    // Exactly-once effects.
    let rows = sqlx::query(
        "SELECT saga, step, phase, COUNT(*) FROM crash_effects GROUP BY saga, step, phase",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut per_saga: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        let n: i64 = r.get(3);
        assert_eq!(
            n,
            1,
            "effect applied {n} times: {:?}",
            r.get::<String, _>(0)
        );
        *per_saga.entry(r.get::<String, _>(0)).or_default() += 1;
    }
    for s in &sagas {
        let expected = if s.status == SagaStatus::Compensated {
            2
        } else {
            3
        };
        assert_eq!(
            per_saga.get(&s.id.to_string()).copied().unwrap_or(0),
            expected
        );
    }
    let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crash_calls")
        .fetch_one(store.pool())
        .await
        .unwrap();

    // No saga executed by both at once.
    let rows = sqlx::query("SELECT saga, inst, start_us, end_us FROM soak_calls")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let n_intervals = rows.len();
    let mut intervals: HashMap<String, Vec<(i64, i64, String)>> = HashMap::new();
    let mut open_ends = 0;
    for r in &rows {
        let inst: String = r.get(1);
        let start: i64 = r.get(2);
        let end: Option<i64> = r.get(3);
        let end = end.unwrap_or_else(|| {
            open_ends += 1;
            dead_at.get(&inst).copied().unwrap_or(exited_at)
        });
        intervals
            .entry(r.get::<String, _>(0))
            .or_default()
            .push((start, end, inst));
    }
    let mut overlaps = Vec::new();
    for (saga, v) in &intervals {
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                if a.2 != b.2 && a.0 < b.1 && b.0 < a.1 {
                    overlaps.push((saga.clone(), a.clone(), b.clone()));
                }
            }
        }
    }
    assert!(
        overlaps.is_empty(),
        "executed by two orchestrators at once: {overlaps:#?}"
    );

    // Fenced-out writes never landed: epochs never go backwards in any saga's log.
    let rows =
        sqlx::query("SELECT saga_id, epoch FROM steadfast_saga_history ORDER BY saga_id, seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        let (id, epoch): (String, i64) = (r.get(0), r.get(1));
        let prev = last.insert(id.clone(), epoch).unwrap_or(0);
        assert!(
            epoch >= prev,
            "saga {id}: a write under epoch {epoch} landed after {prev}"
        );
    }
    let recoveries: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(recoveries), 0)::bigint FROM steadfast_sagas")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let owners: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT inst) FROM soak_calls")
        .fetch_one(store.pool())
        .await
        .unwrap();
    eprintln!(
        "{} participant calls ({} intervals, {open_ends} closed by a kill), {recoveries} \
         recoveries, {owners} orchestrator instances did work",
        calls, n_intervals
    );
    store.drop_schema().await.unwrap();
    assert!(recoveries > 0, "the kills caused no take-over");
    assert!(owners >= 3, "work was not spread over restarted instances");
}

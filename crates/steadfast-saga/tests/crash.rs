//! Crash at every boundary: a child process runs sagas and is killed (SIGKILL) at each step
//! boundary in turn — before the call, during it (effect applied, no answer yet), after it
//! (before the outcome is written) and after the write — then a new child recovers. Every saga
//! must end completed or compensated, every participant effect must be applied exactly once
//! (participants deduplicate by step key), and the log must know every applied effect.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use steadfast_saga::store::{PostgresStore, SagaStore, SqliteStore, StepState};
use steadfast_saga::{Phase, SagaStatus};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const CHILD: &str = env!("CARGO_BIN_EXE_saga-crash-child");
/// Two sagas: s0 completes (3 steps), s1 fails at the pivot and compensates its first step.
const SAGAS: u32 = 2;

enum Target {
    Sqlite(support::TempDb),
    Pg { schema: String },
}

impl Target {
    fn spec(&self) -> String {
        match self {
            Target::Sqlite(db) => format!("sqlite:{}", db.path.display()),
            Target::Pg { schema } => format!("postgres:{schema}"),
        }
    }

    async fn open(
        &self,
    ) -> (
        Arc<dyn SagaStore>,
        Option<PostgresStore>,
        Option<SqliteStore>,
    ) {
        match self {
            Target::Sqlite(db) => {
                let s = SqliteStore::open(&db.path).await.unwrap();
                (Arc::new(s.clone()), None, Some(s))
            }
            Target::Pg { schema } => {
                let s = PostgresStore::connect(&support::database_url(), Some(schema))
                    .await
                    .unwrap();
                (Arc::new(s.clone()), Some(s), None)
            }
        }
    }
}

fn child(spec: &str, crash_at: Option<u64>) -> tokio::process::Child {
    let mut c = Command::new(CHILD);
    c.arg(spec).arg("crash").arg(SAGAS.to_string());
    c.args(["--lease-ms", "300"]);
    if let Some(k) = crash_at {
        c.arg("--crash-at").arg(k.to_string());
    }
    c.env("DATABASE_URL", support::database_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the crash child")
}

/// Runs a child to its end; returns its stdout lines.
async fn run_to_end(spec: &str) -> Vec<String> {
    let mut c = child(spec, None);
    let out = c.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut all = Vec::new();
    let read = async {
        while let Some(l) = lines.next_line().await.unwrap() {
            all.push(l);
        }
        c.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the recovering child finished within 60 s");
    assert!(status.success(), "child failed: {status:?}; output {all:?}");
    all
}

/// Runs a child until it reports boundary `k`, then SIGKILLs it.
async fn kill_at(spec: &str, k: u64) -> String {
    let mut c = child(spec, Some(k));
    let out = c.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let prefix = format!("BOUNDARY {k} ");
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with(&prefix) {
                return Some(l);
            }
        }
        None
    })
    .await
    .expect("the child reached its boundary within 30 s")
    .unwrap_or_else(|| panic!("the child exited before boundary {k}"));
    // Child::kill is SIGKILL on Unix: no destructor, no flush, no lease release.
    c.kill().await.unwrap();
    found
}

struct Facts {
    calls: usize,
}

/// Checks the invariants after recovery.
async fn check(target: &Target, context: &str) -> Facts {
    let (store, pg, lite) = target.open().await;
    let sagas = store.list(None, 1000).await.unwrap();
    assert_eq!(
        sagas.len(),
        SAGAS as usize,
        "{context}: one saga per business key"
    );
    let (effects, calls) = match (&pg, &lite) {
        (Some(p), _) => (
            sqlx::query("SELECT saga, step, phase, key FROM crash_effects")
                .fetch_all(p.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        r.get::<String, _>(1),
                        r.get::<String, _>(2),
                    )
                })
                .collect::<Vec<_>>(),
            sqlx::query("SELECT COUNT(*) FROM crash_calls")
                .fetch_one(p.pool())
                .await
                .unwrap()
                .get::<i64, _>(0),
        ),
        (_, Some(l)) => (
            sqlx::query("SELECT saga, step, phase, key FROM crash_effects")
                .fetch_all(l.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        r.get::<String, _>(1),
                        r.get::<String, _>(2),
                    )
                })
                .collect::<Vec<_>>(),
            sqlx::query("SELECT COUNT(*) FROM crash_calls")
                .fetch_one(l.pool())
                .await
                .unwrap()
                .get::<i64, _>(0),
        ),
        _ => unreachable!(),
    };
    // Effects per (saga, step, phase): keys are stable, so each is there exactly once.
    let mut per: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for e in &effects {
        *per.entry(e.clone()).or_default() += 1;
    }
    for (k, n) in &per {
        assert_eq!(*n, 1, "{context}: effect {k:?} applied {n} times");
    }
    for s in &sagas {
        let i: u32 = s.business_key.trim_start_matches('s').parse().unwrap();
        let id = s.id.to_string();
        let mine: BTreeSet<(String, String)> = per
            .keys()
            .filter(|(saga, _, _)| *saga == id)
            .map(|(_, step, phase)| (step.clone(), phase.clone()))
            .collect();
        let expected: BTreeSet<(String, String)> = if i.is_multiple_of(2) {
            assert_eq!(s.status, SagaStatus::Completed, "{context}: {s:?}");
            [
                ("reserve", "forward"),
                ("charge", "forward"),
                ("notify", "forward"),
            ]
        } else {
            assert_eq!(s.status, SagaStatus::Compensated, "{context}: {s:?}");
            [
                ("reserve", "forward"),
                ("reserve", "compensation"),
                ("", ""),
            ]
        }
        .iter()
        .filter(|(a, _)| !a.is_empty())
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(
            mine, expected,
            "{context}: effects of saga {}",
            s.business_key
        );
        // Nothing lost from the log: every applied effect is recorded as succeeded.
        let rec = store.load(s.id).await.unwrap();
        for (step, phase) in &mine {
            let phase: Phase = phase.parse().unwrap();
            let r = rec
                .steps
                .iter()
                .find(|r| r.step == *step && r.phase == phase)
                .unwrap_or_else(|| panic!("{context}: no log record for {step} {phase}"));
            assert_eq!(r.state, StepState::Succeeded, "{context}: {r:?}");
        }
        let h = store.history(s.id).await.unwrap();
        assert_eq!(h.first().map(|e| e.kind.as_str()), Some("created"));
        let last = h.last().map(|e| e.kind.clone()).unwrap_or_default();
        assert!(
            last == "completed" || last == "compensated",
            "{context}: history ends with {last}"
        );
        assert!(
            h.windows(2).all(|w| w[0].epoch <= w[1].epoch),
            "{context}: a write under an old epoch landed after a newer one"
        );
    }
    if let Some(p) = pg {
        p.drop_schema().await.unwrap();
    }
    Facts {
        calls: usize::try_from(calls).unwrap(),
    }
}

async fn crash_at_every_boundary(make: impl Fn() -> Option<Target>) {
    // A clean run counts the boundaries.
    let Some(target) = make() else { return };
    let lines = run_to_end(&target.spec()).await;
    let boundaries: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("BOUNDARY "))
        .collect();
    let total = boundaries.len() as u64;
    // s0: 3 steps x 4 boundaries; s1: reserve 4, charge 4, reserve's compensation 4.
    assert_eq!(total, 24, "boundaries: {boundaries:#?}");
    let clean = check(&target, "clean run").await;
    assert_eq!(clean.calls, 5, "a clean run calls each participant once");
    let mut redone = 0;
    for k in 1..=total {
        let Some(target) = make() else { return };
        let at = kill_at(&target.spec(), k).await;
        let out = run_to_end(&target.spec()).await;
        assert!(
            out.iter()
                .any(|l| l == &format!("DONE {SAGAS} terminal, 0 needs_attention")),
            "after a kill at {at}: {out:?}"
        );
        let facts = check(&target, &at).await;
        if facts.calls > clean.calls {
            redone += 1;
        }
        eprintln!(
            "killed at {at}: recovered, {} participant calls",
            facts.calls
        );
    }
    // Kills during a call and after it (before the write) force re-invocations with the same
    // key: the participants saw duplicates and applied them once.
    assert!(redone >= 8, "only {redone} kills led to a re-invocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_at_every_boundary() {
    crash_at_every_boundary(|| Some(Target::Sqlite(support::TempDb::new("crash")))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_at_every_boundary() {
    // Probe once; each iteration gets its own schema, dropped by `check`.
    let Some(probe) = support::pg_store("crash_probe").await else {
        return;
    };
    probe.drop_schema().await.unwrap();
    crash_at_every_boundary(|| {
        Some(Target::Pg {
            schema: support::schema_name("crash"),
        })
    })
    .await;
}

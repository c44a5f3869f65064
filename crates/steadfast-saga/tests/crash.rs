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
use steadfast_saga::store::{ListQuery, PostgresStore, SagaStore, SqliteStore, StepState};
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
    let crash_at = crash_at.map(|k| k.to_string());
    let mut extra = Vec::new();
    if let Some(k) = &crash_at {
        extra.extend(["--crash-at", k.as_str()]);
    }
    child_with(spec, SAGAS, &extra)
}

fn child_with(spec: &str, sagas: u32, extra: &[&str]) -> tokio::process::Child {
    let mut c = Command::new(CHILD);
    c.arg(spec).arg("crash").arg(sagas.to_string());
    c.args(["--lease-ms", "300"]);
    c.args(extra);
    c.env("DATABASE_URL", support::database_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the crash child")
}

/// Runs a child to its end; returns its stdout lines.
async fn run_to_end(spec: &str) -> Vec<String> {
    run_to_end_with(spec, SAGAS).await
}

async fn run_to_end_with(spec: &str, sagas: u32) -> Vec<String> {
    let mut c = child_with(spec, sagas, &[]);
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
    let sagas = store.list(ListQuery::new(1000)).await.unwrap();
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

/// Reads the child's lines until one starts with `BOUNDARY k `; returns it.
async fn until_boundary(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    k: u64,
) -> String {
    let prefix = format!("BOUNDARY {k} ");
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with(&prefix) {
                return l;
            }
        }
        panic!("the child exited before boundary {k}")
    })
    .await
    .expect("the child reached its boundary within 30 s")
}

/// The saga id in a `BOUNDARY n <saga> <step> <phase> <where>` line.
fn saga_of(line: &str) -> steadfast_saga::SagaId {
    line.split(' ').nth(2).unwrap().parse().unwrap()
}

/// An operator's orchestrator on the target: no definitions (like the `steadfast` CLI).
async fn operator(target: &Target) -> steadfast_saga::Orchestrator {
    let (store, _, _) = target.open().await;
    steadfast_saga::Orchestrator::builder(store)
        .owner("operator")
        .build()
        .unwrap()
}

const REASON: &str = "customer changed plans";

/// After a cancel: the one saga ended `expected`; its participants' effects are exactly
/// `effects`, each applied once; the pivot was never called when the saga compensated; the
/// history records the cancel (when it was accepted) and never goes back an epoch.
async fn check_one(
    target: &Target,
    expected: SagaStatus,
    effects: &[(&str, &str)],
    cancelled: bool,
) {
    let (store, pg, lite) = target.open().await;
    let sagas = store.list(ListQuery::new(10)).await.unwrap();
    assert_eq!(sagas.len(), 1);
    let s = &sagas[0];
    assert_eq!(s.status, expected, "{s:?}");
    let q = "SELECT saga, step, phase FROM crash_effects";
    let c = "SELECT step, phase FROM crash_calls";
    let rows = |v: Vec<Vec<String>>| v;
    let (got, calls) = match (&pg, &lite) {
        (Some(p), _) => (
            rows(
                sqlx::query(q)
                    .fetch_all(p.pool())
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..3).map(|i| r.get::<String, _>(i)).collect())
                    .collect(),
            ),
            rows(
                sqlx::query(c)
                    .fetch_all(p.pool())
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..2).map(|i| r.get::<String, _>(i)).collect())
                    .collect(),
            ),
        ),
        (_, Some(l)) => (
            rows(
                sqlx::query(q)
                    .fetch_all(l.pool())
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..3).map(|i| r.get::<String, _>(i)).collect())
                    .collect(),
            ),
            rows(
                sqlx::query(c)
                    .fetch_all(l.pool())
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..2).map(|i| r.get::<String, _>(i)).collect())
                    .collect(),
            ),
        ),
        _ => unreachable!(),
    };
    let mut applied: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            assert_eq!(r[0], s.id.to_string());
            (r[1].clone(), r[2].clone())
        })
        .collect();
    applied.sort();
    let mut want: Vec<(String, String)> = effects
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    want.sort();
    assert_eq!(
        applied, want,
        "effects, each once (keys dedupe re-invocations)"
    );
    if expected == SagaStatus::Compensated {
        assert!(
            calls.iter().all(|c| c[0] != "charge"),
            "the pivot was called after the cancel: {calls:?}"
        );
    }
    let rec = store.load(s.id).await.unwrap();
    let h = store.history(s.id).await.unwrap();
    assert!(
        h.windows(2).all(|w| w[0].epoch <= w[1].epoch),
        "a write under an old epoch landed after a newer one: {h:?}"
    );
    let kinds: Vec<&str> = h.iter().map(|e| e.kind.as_str()).collect();
    if cancelled {
        assert_eq!(rec.cancel_requested.as_deref(), Some(REASON));
        assert_eq!(
            rec.error.as_deref(),
            Some(format!("cancelled by an operator: {REASON}").as_str())
        );
        let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or(usize::MAX);
        assert!(
            at("cancel_requested") < at("compensation_started"),
            "{kinds:?}"
        );
        assert_eq!(kinds.last(), Some(&"compensated"), "{kinds:?}");
    } else {
        assert!(rec.cancel_requested.is_none() && rec.forward_only);
        assert!(!kinds.contains(&"cancel_requested"), "{kinds:?}");
    }
    if let Some(p) = pg {
        p.drop_schema().await.unwrap();
    }
}

/// Cancels the saga while its orchestrator holds it after its first step (held at boundary 4),
/// lets the orchestrator go on — it compensates instead of starting the pivot —, kills it in the
/// middle of the compensation (the effect applied, no answer yet: boundary 6), and lets a new
/// orchestrator recover: the saga ends compensated, each effect once, the pivot never called.
async fn cancel_then_crash_during_compensation(target: Target) {
    let spec = target.spec();
    let release = support::TempDb::new("release");
    let file = release.path.display().to_string();
    let mut c = child_with(
        &spec,
        1,
        &["--hold-at", "4", "--release-file", &file, "--crash-at", "6"],
    );
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let held = until_boundary(&mut lines, 4).await;
    assert!(held.ends_with("reserve forward after_write"), "{held}");
    operator(&target)
        .await
        .cancel(saga_of(&held), REASON)
        .await
        .unwrap();
    std::fs::write(&release.path, b"go").unwrap();
    let at = until_boundary(&mut lines, 6).await;
    assert!(at.ends_with("reserve compensation during"), "{at}");
    c.kill().await.unwrap();
    let out = run_to_end_with(&spec, 1).await;
    assert!(
        out.iter()
            .any(|l| l == "DONE 1 terminal, 0 needs_attention"),
        "{out:?}"
    );
    check_one(
        &target,
        SagaStatus::Compensated,
        &[("reserve", "forward"), ("reserve", "compensation")],
        true,
    )
    .await;
}

/// Kills the orchestrator after the first step, cancels the abandoned saga (its dead owner's
/// lease still live), and lets a new orchestrator recover it: compensated.
async fn cancel_an_abandoned_saga(target: Target) {
    let spec = target.spec();
    let mut c = child_with(&spec, 1, &["--crash-at", "4"]);
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let at = until_boundary(&mut lines, 4).await;
    c.kill().await.unwrap();
    operator(&target)
        .await
        .cancel(saga_of(&at), REASON)
        .await
        .unwrap();
    let out = run_to_end_with(&spec, 1).await;
    assert!(
        out.iter()
            .any(|l| l == "DONE 1 terminal, 0 needs_attention"),
        "{out:?}"
    );
    check_one(
        &target,
        SagaStatus::Compensated,
        &[("reserve", "forward"), ("reserve", "compensation")],
        true,
    )
    .await;
}

/// The pivot's start is durable (boundary 5, before its call): the cancel is refused with the
/// typed error; after a crash the saga is recovered forward and completes.
async fn cancel_after_the_pivot_started_is_refused(target: Target) {
    let spec = target.spec();
    let mut c = child_with(&spec, 1, &["--crash-at", "5"]);
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let at = until_boundary(&mut lines, 5).await;
    assert!(at.ends_with("charge forward before_call"), "{at}");
    match operator(&target).await.cancel(saga_of(&at), REASON).await {
        Err(steadfast_saga::Error::CancelRefused(r)) => {
            assert_eq!(r.refusal, steadfast_saga::CancelRefusal::PastPivot)
        }
        other => panic!("cancel after the pivot started: {other:?}"),
    }
    c.kill().await.unwrap();
    let out = run_to_end_with(&spec, 1).await;
    assert!(
        out.iter()
            .any(|l| l == "DONE 1 terminal, 0 needs_attention"),
        "{out:?}"
    );
    check_one(
        &target,
        SagaStatus::Completed,
        &[
            ("reserve", "forward"),
            ("charge", "forward"),
            ("notify", "forward"),
        ],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel_across_crashes() {
    let lite = || Target::Sqlite(support::TempDb::new("cancel"));
    cancel_then_crash_during_compensation(lite()).await;
    cancel_an_abandoned_saga(lite()).await;
    cancel_after_the_pivot_started_is_refused(lite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancel_across_crashes() {
    let Some(probe) = support::pg_store("cancel_probe").await else {
        return;
    };
    probe.drop_schema().await.unwrap();
    let pg = || Target::Pg {
        schema: support::schema_name("cancel"),
    };
    cancel_then_crash_during_compensation(pg()).await;
    cancel_an_abandoned_saga(pg()).await;
    cancel_after_the_pivot_started_is_refused(pg()).await;
}

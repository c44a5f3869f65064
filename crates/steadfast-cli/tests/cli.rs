//! End to end, with the real `steadfast` binary, against a SQLite file and a PostgreSQL schema
//! of this run's own: sagas run through the library (an "app" orchestrator in this process), some
//! complete, some are broken (an unknown outcome, a failing step after the pivot, a stuck pivot,
//! a damaged row, one held in flight); the CLI lists, shows and operates them; the app picks the
//! handed-over sagas up, and the log records what happened.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use steadfast_layers::retry::Backoff;
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_saga::store::{PostgresStore, SagaStore, SqliteStore};
use steadfast_saga::{
    Orchestrator, RetryPolicy, Saga, SagaDefinition, SagaId, SagaStatus, Step, StepContext,
    StepError,
};
use tokio::sync::Semaphore;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Trip {
    key: String,
}

type Ctx = StepContext<Trip>;

/// How a participant answers, per (business key, step); `Ok` by default.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    /// Wait for a permit of the gate.
    Gated,
    Unknown,
    Permanent,
}

struct World {
    modes: Mutex<HashMap<(String, &'static str), Mode>>,
    calls: Mutex<Vec<(String, String, String)>>,
    gate: Semaphore,
    begun: Semaphore,
}

impl Default for World {
    fn default() -> Self {
        World {
            modes: Mutex::default(),
            calls: Mutex::default(),
            gate: Semaphore::new(0),
            begun: Semaphore::new(0),
        }
    }
}

impl World {
    fn set(&self, key: &str, step: &'static str, m: Mode) {
        self.modes
            .lock()
            .unwrap()
            .insert((key.to_string(), step), m);
    }

    async fn call(&self, ctx: &Ctx, step: &'static str) -> Result<String, StepError> {
        let key = ctx.input().key.clone();
        self.calls
            .lock()
            .unwrap()
            .push((key.clone(), step.to_string(), ctx.phase().to_string()));
        let mode = *self
            .modes
            .lock()
            .unwrap()
            .get(&(key.clone(), step))
            .unwrap_or(&Mode::Ok);
        match mode {
            Mode::Ok => {}
            Mode::Gated => {
                self.begun.add_permits(1);
                self.gate.acquire().await.unwrap().forget();
            }
            Mode::Unknown => return Err(StepError::unknown("timeout talking to the partner")),
            Mode::Permanent => return Err(StepError::permanent("mailbox does not exist")),
        }
        Ok(format!("{step}-{key}"))
    }

    fn calls_of(&self, key: &str, step: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == key && c.1 == step && c.2 == "forward")
            .count()
    }
}

fn definition(world: &Arc<World>) -> SagaDefinition<Trip> {
    // The attempt timeout outlasts the test: a step held in flight stays in flight.
    let quick = RetryPolicy::attempts(2)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .attempt_timeout(Duration::from_secs(600));
    let mut b = Saga::builder::<Trip>("trip");
    let (w1, w2, w3, w4) = (
        Arc::clone(world),
        Arc::clone(world),
        Arc::clone(world),
        Arc::clone(world),
    );
    b.step(
        Step::compensatable(
            "reserve",
            move |c: Ctx| {
                let w = Arc::clone(&w1);
                async move { w.call(&c, "reserve").await }
            },
            move |c: Ctx, _out: String| {
                let w = Arc::clone(&w2);
                async move { w.call(&c, "reserve").await.map(|_| ()) }
            },
        )
        .retry(quick),
    );
    b.step(
        Step::pivot("charge", move |c: Ctx| {
            let w = Arc::clone(&w3);
            async move { w.call(&c, "charge").await }
        })
        .retry(quick),
    );
    b.step(Step::retriable("notify", move |c: Ctx| {
        let w = Arc::clone(&w4);
        async move { w.call(&c, "notify").await.map(|_| ()) }
    }));
    b.build().unwrap()
}

/// One store under test: its URL for the CLI, a library handle, and raw SQL for damage.
struct Target {
    url: String,
    store: Arc<dyn SagaStore>,
    corrupt_id: Box<dyn Fn(SagaId) -> BoxFuture + Send + Sync>,
    pg: Option<PostgresStore>,
    _file: Option<TempFile>,
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn unique() -> String {
    format!("{:012x}", SeededRng::from_entropy().next_u64() >> 16)
}

async fn sqlite_target() -> Target {
    let dir = std::env::temp_dir().join("steadfast-cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("cli-{}-{}.db", std::process::id(), unique()));
    let store = SqliteStore::open(&path).await.unwrap();
    let pool = store.pool().clone();
    Target {
        url: format!("sqlite://{}", path.display()),
        store: Arc::new(store),
        corrupt_id: Box::new(move |id| {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query("UPDATE steadfast_sagas SET id = 'not-a-uuid' WHERE id = ?")
                    .bind(id.to_string())
                    .execute(&pool)
                    .await
                    .unwrap();
            })
        }),
        pg: None,
        _file: Some(TempFile(path)),
    }
}

async fn postgres_target() -> Option<Target> {
    let url = steadfast_testkit::services::database_url();
    let schema = format!("steadfast_test_cli_{}", unique());
    let store = match PostgresStore::connect(&url, Some(&schema)).await {
        Ok(s) => s,
        Err(e) if !steadfast_testkit::services::required() => {
            steadfast_testkit::services::skip("the CLI against PostgreSQL", &e);
            return None;
        }
        Err(e) => panic!("PostgreSQL at {url}: {e}"),
    };
    let pool = store.pool().clone();
    Some(Target {
        url: format!("{url}?schema={schema}"),
        store: Arc::new(store.clone()),
        corrupt_id: Box::new(move |id| {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query("UPDATE steadfast_sagas SET id = 'not-a-uuid' WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&pool)
                    .await
                    .unwrap();
            })
        }),
        pg: Some(store),
        _file: None,
    })
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs the binary with `--store url` and `args`.
async fn cli(url: Option<&str>, args: &[&str]) -> Out {
    let mut c = tokio::process::Command::new(BIN);
    if let Some(u) = url {
        c.arg("--store").arg(u);
    }
    c.args(args).env_remove("STEADFAST_STORE");
    let out = tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("the CLI answered within 60 s")
        .unwrap();
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    if o.code != 0 {
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "one-line error: {:?}",
            o.stderr
        );
        assert!(o.stderr.starts_with("steadfast: "), "{:?}", o.stderr);
        assert!(o.stdout.is_empty(), "{:?}", o.stdout);
    }
    o
}

fn kinds(h: &Value) -> Vec<String> {
    h.as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn operate(t: Target) {
    let url = t.url.as_str();
    let world = Arc::new(World::default());
    let def = definition(&world);
    let app = Orchestrator::builder(Arc::clone(&t.store))
        .owner("app")
        .register(&def)
        .lease(Duration::from_secs(5))
        .build()
        .unwrap();
    let trip = |k: &str| Trip { key: k.to_string() };

    // Run sagas through the library, and break some.
    world.set("declined", "charge", Mode::Permanent);
    world.set("unknown", "reserve", Mode::Unknown);
    world.set("mailbox", "notify", Mode::Permanent);
    world.set("by-hand", "charge", Mode::Unknown);
    world.set("in-flight", "reserve", Mode::Gated);
    let mut ids = BTreeMap::new();
    for k in ["ok", "declined", "unknown", "mailbox", "by-hand"] {
        let id = app.start(&def, k, &trip(k)).await.unwrap().id;
        app.wait(id).await.unwrap();
        ids.insert(k, id);
    }
    let running = app
        .start(&def, "in-flight", &trip("in-flight"))
        .await
        .unwrap()
        .id;
    ids.insert("in-flight", running);
    world.begun.acquire().await.unwrap().forget();
    // A damaged row: its id is not a UUID; the claim sets it aside.
    let dead = match t
        .store
        .create(
            steadfast_saga::store::NewSaga {
                id: SagaId::random(&SeededRng::from_entropy()),
                saga_type: "trip".into(),
                version: 1,
                business_key: "damaged".into(),
                input: r#"{"key":"damaged"}"#.into(),
                deadline: None,
                first_step: None,
                forward_only: false,
            },
            "dead",
            Duration::ZERO,
        )
        .await
        .unwrap()
    {
        steadfast_saga::store::Created::New(l) => l.saga,
        _ => unreachable!(),
    };
    (t.corrupt_id)(dead).await;
    assert_eq!(
        app.recover_once().await.unwrap(),
        0,
        "set aside, not claimed"
    );

    // saga list: a table, and JSON that says what the library says.
    let table = cli(Some(url), &["saga", "list"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 7, "{}", table.stdout);
    assert!(lines[0].starts_with("ID ") && lines[0].contains("STATUS"));
    for (k, id) in &ids {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&id.to_string()))
            .unwrap();
        assert!(line.contains(k), "{line}");
    }
    let all = cli(Some(url), &["saga", "list", "--json"]).await.json();
    let sagas = all["sagas"].as_array().unwrap();
    assert_eq!(sagas.len(), 7);
    let status_of: BTreeMap<String, String> = sagas
        .iter()
        .map(|s| {
            (
                s["business_key"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (k, id) in &ids {
        let want = app.get(*id).await.unwrap().status;
        assert_eq!(status_of[*k], want.as_str(), "{k}");
    }
    let damaged = sagas
        .iter()
        .find(|s| s["business_key"] == "damaged")
        .unwrap();
    assert_eq!(damaged["id"], SagaId::nil().to_string());
    assert_eq!(damaged["status"], "needs_attention");
    assert!(damaged["error"]
        .as_str()
        .unwrap()
        .contains("cannot decode a saga id: \"not-a-uuid\""));
    for field in [
        "id",
        "saga_type",
        "business_key",
        "status",
        "recoveries",
        "error",
    ] {
        assert!(damaged.get(field).is_some(), "list JSON lacks {field}");
    }
    let stuck = cli(
        Some(url),
        &["saga", "list", "--status", "needs_attention", "--json"],
    )
    .await
    .json();
    let keys: BTreeSet<&str> = stuck["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["business_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["unknown", "mailbox", "by-hand", "damaged"])
    );
    let first_two = cli(
        Some(url),
        &["saga", "list", "--type", "trip", "--limit", "2", "--json"],
    )
    .await
    .json();
    let keys: Vec<&str> = first_two["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["business_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["ok", "declined"], "oldest first");
    let none = cli(Some(url), &["saga", "list", "--type", "other", "--json"])
        .await
        .json();
    assert_eq!(none["sagas"].as_array().unwrap().len(), 0);

    // saga show / history.
    let unknown = ids["unknown"].to_string();
    let shown = cli(Some(url), &["saga", "show", &unknown, "--json"])
        .await
        .json();
    assert_eq!(shown["status"], "needs_attention");
    assert_eq!(shown["business_key"], "unknown");
    let step = &shown["steps"][0];
    assert_eq!(
        (
            &step["step"],
            &step["phase"],
            &step["state"],
            &step["attempts"]
        ),
        (
            &Value::from("reserve"),
            &Value::from("forward"),
            &Value::from("unknown"),
            &Value::from(2)
        )
    );
    assert!(step["error"]
        .as_str()
        .unwrap()
        .contains("timeout talking to the partner"));
    assert!(shown["error"]
        .as_str()
        .unwrap()
        .contains("outcome still unknown"));
    let lib: Vec<String> = app
        .history(ids["unknown"])
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds(&shown["history"]), lib);
    let text = cli(Some(url), &["saga", "show", &unknown]).await;
    assert_eq!(text.code, 0);
    for want in [
        "needs_attention",
        "STEPS",
        "reserve",
        "unknown",
        "TIMELINE",
        "step_stuck",
    ] {
        assert!(
            text.stdout.contains(want),
            "show lacks {want}: {}",
            text.stdout
        );
    }
    let ok = ids["ok"].to_string();
    let h = cli(Some(url), &["saga", "history", &ok, "--json"])
        .await
        .json();
    assert_eq!(h["id"], ok);
    let lib: Vec<String> = app
        .history(ids["ok"])
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds(&h["history"]), lib);
    assert!(h["history"][0]["at"].as_str().unwrap().ends_with('Z'));
    let h = cli(Some(url), &["saga", "history", &ok]).await;
    assert!(h.stdout.lines().next().unwrap().starts_with("TIME"));
    assert_eq!(h.stdout.lines().count(), 1 + lib.len());

    // Clear errors and exit codes.
    let nobody = SagaId::random(&SeededRng::from_entropy()).to_string();
    let e = cli(Some(url), &["saga", "show", &nobody]).await;
    assert_eq!(e.code, 3, "{}", e.stderr);
    assert!(e.stderr.contains(&format!("saga {nobody} not found")));
    assert_eq!(cli(Some(url), &["saga", "history", &nobody]).await.code, 3);
    assert_eq!(
        cli(Some(url), &["saga", "cancel", &nobody, "--reason", "x"])
            .await
            .code,
        3
    );
    assert_eq!(cli(Some(url), &["saga", "show", "not-an-id"]).await.code, 2);
    assert_eq!(cli(Some(url), &["saga", "cancel", &ok]).await.code, 2);
    let e = cli(Some("ftp://example.invalid/x"), &["saga", "list"]).await;
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("unsupported store URL"), "{}", e.stderr);
    let e = cli(
        Some("sqlite:///nonexistent/dir/sagas.db"),
        &["saga", "list"],
    )
    .await;
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("no saga log at"), "{}", e.stderr);
    let e = cli(None, &["saga", "list"]).await;
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("STEADFAST_STORE"), "{}", e.stderr);
    // The store from the environment.
    let env = tokio::process::Command::new(BIN)
        .args(["saga", "list", "--json"])
        .env("STEADFAST_STORE", url)
        .output()
        .await
        .unwrap();
    assert!(env.status.success());
    let v: Value = serde_json::from_slice(&env.stdout).unwrap();
    assert_eq!(v["sagas"].as_array().unwrap().len(), 7);

    // Refused actions: exit 4, saying why.
    let e = cli(Some(url), &["saga", "cancel", &ok, "--reason", "late"]).await;
    assert_eq!(e.code, 4);
    assert!(
        e.stderr.contains("has already ended (completed)"),
        "{}",
        e.stderr
    );
    let mailbox = ids["mailbox"].to_string();
    let e = cli(Some(url), &["saga", "cancel", &mailbox, "--reason", "x"]).await;
    assert_eq!(e.code, 4);
    assert!(e.stderr.contains("can only go forward"), "{}", e.stderr);
    let e = cli(Some(url), &["saga", "resume", &ok]).await;
    assert_eq!(e.code, 4);
    assert!(e.stderr.contains("not needs_attention"), "{}", e.stderr);
    let e = cli(Some(url), &["saga", "resolve", &ok, "--note", "x"]).await;
    assert_eq!(e.code, 4, "{}", e.stderr);

    // cancel: the saga in flight finishes its step, then compensates instead of charging.
    let in_flight = ids["in-flight"].to_string();
    let c = cli(
        Some(url),
        &[
            "saga",
            "cancel",
            &in_flight,
            "--reason",
            "customer changed plans",
        ],
    )
    .await;
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stdout.contains("cancelled"), "{}", c.stdout);
    // Its undo goes through at once; its action, in flight, now answers.
    world.set("in-flight", "reserve", Mode::Ok);
    world.gate.add_permits(1);
    assert_eq!(
        app.wait(ids["in-flight"]).await.unwrap(),
        SagaStatus::Compensated
    );
    let undo = world
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.0 == "in-flight" && c.1 == "reserve" && c.2 == "compensation")
        .count();
    assert_eq!(undo, 1, "the reservation was undone once");
    assert_eq!(world.calls_of("in-flight", "charge"), 0);

    // resume (JSON answer): the app picks it up at its next poll and completes it.
    world.set("unknown", "reserve", Mode::Ok);
    let r = cli(Some(url), &["saga", "resume", &unknown, "--json"])
        .await
        .json();
    assert_eq!(
        (&r["id"], &r["action"], &r["status"]),
        (
            &Value::from(unknown.as_str()),
            &Value::from("resume"),
            &Value::from("running")
        )
    );
    assert_eq!(app.recover_once().await.unwrap(), 1);
    assert_eq!(
        app.wait(ids["unknown"]).await.unwrap(),
        SagaStatus::Completed
    );

    // retry-step: the mailbox is fixed; the step after the pivot runs again.
    world.set("mailbox", "notify", Mode::Ok);
    let r = cli(Some(url), &["saga", "retry-step", &mailbox, "notify"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(app.recover_once().await.unwrap(), 1);
    assert_eq!(
        app.wait(ids["mailbox"]).await.unwrap(),
        SagaStatus::Completed
    );

    // resolve: the stuck pivot was done by hand; it is not called again.
    let by_hand = ids["by-hand"].to_string();
    let charged = world.calls_of("by-hand", "charge");
    let r = cli(
        Some(url),
        &[
            "saga",
            "resolve",
            &by_hand,
            "--note",
            "charged by hand, OPS-7",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("\"charge\" (forward) resolved"),
        "{}",
        r.stdout
    );
    assert_eq!(app.recover_once().await.unwrap(), 1);
    assert_eq!(
        app.wait(ids["by-hand"]).await.unwrap(),
        SagaStatus::Completed
    );
    assert_eq!(world.calls_of("by-hand", "charge"), charged);

    // The log says who did what.
    let log = |id: SagaId| {
        let app = app.clone();
        async move { app.history(id).await.unwrap() }
    };
    let h = log(ids["in-flight"]).await;
    let cancel = h.iter().find(|e| e.kind == "cancel_requested").unwrap();
    assert_eq!(cancel.detail.as_deref(), Some("customer changed plans"));
    assert_eq!(h.last().unwrap().kind, "compensated");
    for (k, operator_event) in [
        ("unknown", "operator_resume"),
        ("mailbox", "operator_retry"),
        ("by-hand", "operator_resolved"),
    ] {
        let h = log(ids[k]).await;
        let at = h.iter().position(|e| e.kind == operator_event).unwrap();
        let taken = &h[at - 1];
        assert_eq!(taken.kind, "taken_over", "{k}");
        assert!(
            taken
                .detail
                .as_deref()
                .unwrap()
                .starts_with("by steadfast-cli-"),
            "{k}: {taken:?}"
        );
        assert_eq!(h[at + 1].kind, "claimed", "{k}: handed back to the app");
        assert_eq!(h[at + 1].detail.as_deref(), Some("by app"));
        assert_eq!(h.last().unwrap().kind, "completed", "{k}");
        if k == "by-hand" {
            let d = h[at].detail.as_deref().unwrap();
            assert!(d.ends_with("note: charged by hand, OPS-7"), "{d}");
        }
    }
    let after = cli(
        Some(url),
        &["saga", "list", "--status", "needs_attention", "--json"],
    )
    .await
    .json();
    let left: Vec<&str> = after["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["business_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        left,
        ["damaged"],
        "only the damaged row is left for an operator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operate_sagas_in_sqlite_with_the_cli() {
    operate(sqlite_target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operate_sagas_in_postgres_with_the_cli() {
    let Some(t) = postgres_target().await else {
        return;
    };
    let e = cli(
        Some(&format!(
            "{}?schema=steadfast_test_cli_absent_{}",
            steadfast_testkit::services::database_url(),
            unique()
        )),
        &["saga", "list"],
    )
    .await;
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("no saga log in schema"), "{}", e.stderr);
    let e = cli(
        Some("postgres://postgres:secret@127.0.0.1:1/test"),
        &["saga", "list"],
    )
    .await;
    assert_eq!(e.code, 1);
    assert!(
        e.stderr
            .contains("cannot reach postgres://postgres:***@127.0.0.1:1/test"),
        "{}",
        e.stderr
    );
    // Drop the schema whatever happens.
    let pg = t.pg.clone().unwrap();
    let outcome = tokio::spawn(operate(t)).await;
    pg.drop_schema().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

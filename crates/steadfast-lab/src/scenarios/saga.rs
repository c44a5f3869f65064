//! `saga`: trip bookings across three flaky participant services, on a durable saga log.
//!
//! Each saga books a trip in three steps, each a call to its own participant, a real hyper
//! server on `127.0.0.1` started by the scenario: `flight` and `hotel` (compensatable: cancelled
//! if a later step fails), then `car` (the pivot). Participants deduplicate effects by the
//! `Idempotency-Key` they receive (the saga's [`StepKey`](steadfast_saga::StepKey), identical on
//! every attempt and in every orchestrator process) with a map from key to stored reply: a
//! duplicate of a finished call gets the stored reply (`Idempotent-Replayed: true`), one of a
//! call still in progress gets a 409. Independently of the key, every participant counts the
//! effects it applies per (saga, step, phase): `duplicate_effects` is what went past the
//! deduplication (target 0).
//!
//! Injected faults (seeded; the same trips meet the same business outcomes in every run):
//! a 503 before anything is done (transient), a reply lost after the effect was applied (500:
//! the outcome is unknown to the orchestrator), a reply slower than the attempt timeout (unknown
//! again), a hotel that is full or a car that cannot be rented (a definitive 422: the saga
//! compensates), and an airline that refuses to cancel a non-refundable fare (a 422 on the
//! compensation: the saga stops in `needs_attention` with the error kept).
//!
//! The log is SQLite in a temporary directory by default; `--store postgres` uses PostgreSQL
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own,
//! dropped at the end.
//!
//! `--crash` runs the orchestrator in a child process (this binary, re-executed with the
//! `STEADFAST_LAB_SAGA_CHILD` environment variable holding its plan), SIGKILLs it after a random
//! number of step boundaries (any point of a step: before the participant is called, after it
//! answered but before the outcome is durable, after), and starts a new one at once, which
//! claims the dead one's sagas when their leases expire. `recovery_ms` is the longest time from
//! a kill to the moment every saga that was active at the kill has been claimed by the new
//! orchestrator (or has ended), as read from the log. `lost` counts sagas that were started
//! (acknowledged to the caller, or present in the log) but are not completed, compensated or
//! `needs_attention` in the log at the end (target 0).
//!
//! The flags reach this module through environment variables (`STEADFAST_LAB_SAGA_STORE`,
//! `STEADFAST_LAB_SAGA_CRASH`), which `steadfast-lab` sets from `--store` and `--crash`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use steadfast_layers::retry::Backoff;
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_saga::store::{ListQuery, PostgresStore, SagaStore, SqliteStore};
use steadfast_saga::{
    BoundaryInfo, Orchestrator, Phase, RetryPolicy, Saga, SagaDefinition, SagaHooks, SagaId,
    SagaStatus, Step, StepContext, StepError,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::ServiceExt;

use super::ms;
use crate::client::{lab_client, CallerConfig, HttpClient, LabService, Retries};
use crate::load::{self, percentile_ms, Summary};
use crate::timeline::Timeline;
use crate::progress::{Counter, Progress, Total};
use crate::report::{Findings, Target, Value, VariantReport};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "trip sagas over three flaky participants on a durable log: none lost, no effect applied twice, also when the orchestrator is SIGKILLed (--crash)";

/// Which store: `sqlite` (default) or `postgres`. Set by `steadfast-lab --store`.
const STORE_ENV: &str = "STEADFAST_LAB_SAGA_STORE";
/// Set (to anything but `0` or empty) to kill and restart the orchestrator. Set by
/// `steadfast-lab --crash`.
const CRASH_ENV: &str = "STEADFAST_LAB_SAGA_CRASH";
/// In a child process: its plan (JSON). The child runs an orchestrator and nothing else.
const CHILD_ENV: &str = "STEADFAST_LAB_SAGA_CHILD";
/// The executable to re-execute as the orchestrator child (default: this process's own).
const EXE_ENV: &str = "STEADFAST_LAB_EXE";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const SAGA_TYPE: &str = "lab-trip";
/// Sagas in flight at once.
const CONCURRENCY: usize = 16;
/// Short, so that a killed orchestrator's sagas are claimed quickly (the library's default is
/// 10 s).
const LEASE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);
const ATTEMPTS: u32 = 8;
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(200));
/// Participant work per call.
const LATENCY: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(5));
/// Per call: 503 before anything is done.
const P_UNAVAILABLE: f64 = 0.10;
/// Per call that applied its effect: the reply is lost (500).
const P_LOST_REPLY: f64 = 0.05;
/// Per call: the work takes [`SLOW`] more, past the attempt timeout.
const P_SLOW: f64 = 0.01;
const SLOW: Duration = Duration::from_millis(700);
/// How often an attempt that got a 409 (the key's first request is in progress) asks again.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(25);
/// Per trip: the hotel is full (422 on the hotel step).
const P_HOTEL_FULL: f64 = 0.10;
/// Per trip: no car can be rented (422 on the pivot).
const P_NO_CAR: f64 = 0.10;
/// Per trip: the fare is non-refundable (422 on the flight's cancellation).
const P_NON_REFUNDABLE: f64 = 0.10;
/// Longest silence from an orchestrator child before the run is declared stuck.
const CHILD_STALL: Duration = Duration::from_secs(60);
/// Slack on top of the lease and the claim poll for a crash's recovery: the new process's start
/// and its first claim.
const RESTART_SLACK: Duration = Duration::from_secs(1);
/// A crash comes at a random one of the next this many step boundaries (fewer if fewer sagas
/// are left) once its threshold of ended sagas is reached.
const KILL_SPREAD: u64 = 24;

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    if let Some(plan) = std::env::var_os(CHILD_ENV) {
        // An orchestrator child: run the plan, tell the parent on stdout, and exit without
        // printing a report.
        let code = match child(&plan.to_string_lossy()).await {
            Ok(()) => 0,
            Err(e) => {
                println!("ERROR {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let sagas: u32 = if opts.quick { 50 } else { 300 };
    let crashes: u32 = if !flag(CRASH_ENV) {
        0
    } else if opts.quick {
        2
    } else {
        4
    };
    let postgres = match std::env::var(STORE_ENV).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => {
            return Err(format!("unknown saga store {other:?} (sqlite or postgres)").into())
        }
    };

    let participants = [Role::Flight, Role::Hotel, Role::Car]
        .map(|role| Arc::new(Participant::new(role, opts.seed)));
    let mut servers = Vec::new();
    for p in &participants {
        servers.push(ParticipantServer::start(Arc::clone(p)).await?);
    }
    let run_id = RUNS.fetch_add(1, Ordering::Relaxed);
    let spec = if postgres {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        StoreSpec::Postgres {
            url,
            schema: format!("steadfast_lab_saga_{}_{run_id}", std::process::id()),
        }
    } else {
        let dir = std::env::temp_dir().join(format!(
            "steadfast-lab-saga-{}-{run_id}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        StoreSpec::Sqlite {
            path: dir.join("saga.db"),
        }
    };
    let opened = match spec.open().await {
        Ok(o) => o,
        Err(e) => {
            spec.remove_files();
            return Err(format!("cannot open the saga store ({}): {e}", spec.describe()).into());
        }
    };
    let plan = Plan {
        store: spec.clone(),
        participants: servers.iter().map(|s| s.uri.to_string()).collect(),
        sagas,
        seed: opts.seed,
        generation: 0,
    };
    let progress = Progress::start(
        format!("saga/{}", variant_name(postgres, crashes > 0)),
        Total::Requests(u64::from(sagas)),
        opts.progress,
    );
    let outcome = if crashes == 0 {
        in_process(&plan, &opened, progress.counter()).await
    } else {
        with_crashes(&plan, &opened, crashes, progress.counter()).await
    };
    progress.finish();
    let evaluated = match outcome {
        Ok(run) => evaluate(&opened, &plan, &participants, run).await,
        Err(e) => Err(e),
    };
    for s in &servers {
        s.drain(Duration::from_secs(2)).await;
    }
    drop(servers);
    opened.close().await;
    spec.remove_files();
    let eval = evaluated?;
    Ok(report(&plan, postgres, crashes, &participants, eval))
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

fn variant_name(postgres: bool, crash: bool) -> &'static str {
    match (postgres, crash) {
        (false, false) => "sqlite",
        (false, true) => "sqlite_crash",
        (true, false) => "postgres",
        (true, true) => "postgres_crash",
    }
}

fn business_key(i: u32) -> String {
    format!("trip-{i}")
}

/// Mixes values into one generator seed.
fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5851_f42d_4c95_7f2d, |h, v| {
        (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
    })
}

// ---------------------------------------------------------------------------------------------
// Participants.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Flight,
    Hotel,
    Car,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Flight => "flight",
            Role::Hotel => "hotel",
            Role::Car => "car",
        }
    }

    fn index(self) -> usize {
        match self {
            Role::Flight => 0,
            Role::Hotel => 1,
            Role::Car => 2,
        }
    }

    /// Whether the participant says a definitive no to this trip in this phase (decided once
    /// per trip, from the seed).
    fn refuses(self, seed: u64, trip: u64, phase: Phase) -> bool {
        let p = match (self, phase) {
            (Role::Hotel, Phase::Forward) => P_HOTEL_FULL,
            (Role::Car, Phase::Forward) => P_NO_CAR,
            (Role::Flight, Phase::Compensation) => P_NON_REFUNDABLE,
            _ => return false,
        };
        let phase = match phase {
            Phase::Forward => 1,
            Phase::Compensation => 2,
        };
        SeededRng::new(mix(&[seed, 0xb00c, self.index() as u64, trip, phase])).next_f64() < p
    }
}

/// A stored reply, or a call still being worked on.
#[derive(Clone, Debug)]
enum Reply {
    InProgress,
    Done(StatusCode, Bytes),
}

#[derive(Debug, Default)]
struct Books {
    /// Idempotency key -> reply.
    replies: HashMap<String, Reply>,
    /// Calls seen per idempotency key.
    seen: HashMap<String, u64>,
    /// Effects applied per (saga, phase), whatever the key.
    effects: HashMap<(String, Phase), u32>,
}

/// One participant service: its counters and its books.
#[derive(Debug)]
struct Participant {
    role: Role,
    seed: u64,
    calls: AtomicU64,
    unavailable: AtomicU64,
    replays: AtomicU64,
    conflicts: AtomicU64,
    lost_replies: AtomicU64,
    /// Definitive noes (422) decided, not counting replays.
    refusals: AtomicU64,
    in_flight: AtomicU64,
    books: Mutex<Books>,
}

impl Participant {
    fn new(role: Role, seed: u64) -> Self {
        Participant {
            role,
            seed,
            calls: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            lost_replies: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            books: Mutex::new(Books::default()),
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const SAGA_HEADER: &str = "x-lab-saga";
const TRIP_HEADER: &str = "x-lab-trip";

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res
}

fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name)?.to_str().ok()
}

async fn handle(
    p: Arc<Participant>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    p.calls.fetch_add(1, Ordering::Relaxed);
    let phase = match req.uri().path() {
        "/forward" => Phase::Forward,
        "/compensation" => Phase::Compensation,
        _ => return Ok(reply(StatusCode::NOT_FOUND, Bytes::new())),
    };
    let (Some(key), Some(saga), Some(trip)) = (
        header(&req, IDEMPOTENCY_KEY).map(str::to_owned),
        header(&req, SAGA_HEADER).map(str::to_owned),
        header(&req, TRIP_HEADER).and_then(|t| t.parse::<u64>().ok()),
    ) else {
        // The IETF draft: 400 when a required key is missing.
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"Idempotency-Key, x-lab-saga and x-lab-trip are required"),
        ));
    };
    // Faults of this call: keyed by the trip, the phase and how many times this key was seen.
    let nth = {
        let mut books = p.books();
        let n = books.seen.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let phase_code = match phase {
        Phase::Forward => 1,
        Phase::Compensation => 2,
    };
    let rng = SeededRng::new(mix(&[p.seed, p.role.index() as u64, trip, phase_code, nth]));
    let unavailable = rng.next_f64() < P_UNAVAILABLE;
    let lost = rng.next_f64() < P_LOST_REPLY;
    let slow = rng.next_f64() < P_SLOW;
    let work = LATENCY.0 + (LATENCY.1 - LATENCY.0).mul_f64(rng.next_f64());
    if unavailable {
        p.unavailable.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()));
    }
    // Check and claim the key under one lock: concurrent duplicates cannot both run.
    {
        let mut books = p.books();
        match books.replies.get(&key) {
            Some(Reply::InProgress) => {
                p.conflicts.fetch_add(1, Ordering::Relaxed);
                return Ok(reply(
                    StatusCode::CONFLICT,
                    Bytes::from_static(b"a request with this key is in progress"),
                ));
            }
            Some(Reply::Done(status, body)) => {
                p.replays.fetch_add(1, Ordering::Relaxed);
                let mut res = reply(*status, body.clone());
                res.headers_mut().insert(
                    "idempotent-replayed",
                    http::HeaderValue::from_static("true"),
                );
                return Ok(res);
            }
            None => {
                books.replies.insert(key.clone(), Reply::InProgress);
            }
        }
    }
    // Detached: the work finishes and its reply is stored even if the caller hangs up (or is
    // killed), so the key never stays "in progress".
    let job = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            p.in_flight.fetch_add(1, Ordering::AcqRel);
            tokio::time::sleep(if slow { work + SLOW } else { work }).await;
            let (status, body) = if p.role.refuses(p.seed, trip, phase) {
                p.refusals.fetch_add(1, Ordering::Relaxed);
                let why = match phase {
                    Phase::Forward => "declined",
                    Phase::Compensation => "cancellation refused: non-refundable",
                };
                (StatusCode::UNPROCESSABLE_ENTITY, Bytes::from(why))
            } else {
                let body = Bytes::from(format!("{}-{trip}-{}", p.role.name(), phase.as_str()));
                (StatusCode::OK, body)
            };
            {
                let mut books = p.books();
                if status == StatusCode::OK {
                    *books.effects.entry((saga, phase)).or_insert(0) += 1;
                }
                books.replies.insert(key, Reply::Done(status, body.clone()));
            }
            p.in_flight.fetch_sub(1, Ordering::AcqRel);
            (status, body)
        })
    };
    let Ok((status, body)) = job.await else {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()));
    };
    if lost {
        // The effect is applied and stored; the caller cannot know.
        p.lost_replies.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"reply lost"),
        ));
    }
    Ok(reply(status, body))
}

/// A participant's HTTP server on `127.0.0.1`.
#[derive(Debug)]
struct ParticipantServer {
    uri: Uri,
    participant: Arc<Participant>,
    accept: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl ParticipantServer {
    async fn start(participant: Arc<Participant>) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let uri: Uri = format!("http://{}/", listener.local_addr()?).parse()?;
        let (shutdown, stop) = watch::channel(false);
        let shared = Arc::clone(&participant);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let p = Arc::clone(&shared);
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&p), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.wait_for(|stopped| *stopped) => {}
                    }
                });
            }
        });
        Ok(ParticipantServer {
            uri,
            participant,
            accept,
            shutdown,
        })
    }

    /// Waits until no detached work is left (at most `max`).
    async fn drain(&self, max: Duration) {
        let until = Instant::now() + max;
        while self.participant.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ParticipantServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.accept.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The saga, as the orchestrator runs it.

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Trip {
    n: u32,
}

type Ctx = StepContext<Trip>;
type StepFuture<T> = Pin<Box<dyn Future<Output = Result<T, StepError>> + Send>>;

/// How the orchestrator reaches the participants: steadfast's standard client preset, as a
/// user builds it, with one attempt (the orchestrator's step policy retries, with the step's
/// key on every attempt; the preset keeps the caller's key).
#[derive(Clone, Debug)]
struct Caller {
    http: LabService,
    uris: Arc<Vec<String>>,
}

impl Caller {
    fn new(uris: Vec<String>, seed: u64) -> Result<Self, BoxError> {
        let config = CallerConfig {
            deadline: Duration::from_secs(60),
            attempt_timeout: None,
            retries: Retries::None,
            backoff: (Duration::from_millis(25), Duration::from_millis(250)),
            seed,
            propagate: None,
        };
        Ok(Caller {
            http: lab_client(&config, HttpClient::new())?,
            uris: Arc::new(uris),
        })
    }
}

impl Caller {
    /// One attempt: a POST with the step key as `Idempotency-Key`. While the participant
    /// answers 409 (the key's first request is still being worked on) the attempt asks again
    /// every [`IN_PROGRESS_POLL`], until it gets the stored reply or the orchestrator's attempt
    /// timeout ends it (an unknown outcome): 409s do not burn the step's attempts.
    fn call(&self, role: Role, phase: Phase, ctx: &Ctx) -> StepFuture<String> {
        let http = self.http.clone();
        let uri = format!("{}{}", self.uris[role.index()], phase.as_str());
        let (key, saga, trip) = (
            ctx.key().header_value(),
            ctx.saga_id().to_string(),
            ctx.input().n,
        );
        Box::pin(async move {
            loop {
                let req = Request::post(&uri)
                    .header(IDEMPOTENCY_KEY, &key)
                    .header(SAGA_HEADER, &saga)
                    .header(TRIP_HEADER, trip)
                    .body(Full::new(Bytes::new()))
                    .map_err(StepError::permanent)?;
                let res = match http.clone().oneshot(req).await {
                    Ok(res) => res,
                    // The request may have reached the participant.
                    Err(e) => return Err(StepError::unknown(e)),
                };
                let body = String::from_utf8_lossy(res.body()).into_owned();
                return match res.status() {
                    s if s.is_success() => Ok(body),
                    StatusCode::CONFLICT => {
                        tokio::time::sleep(IN_PROGRESS_POLL).await;
                        continue;
                    }
                    // Nothing was done, and it never will be.
                    StatusCode::UNPROCESSABLE_ENTITY => Err(StepError::permanent(body)),
                    // Refused before anything was done.
                    StatusCode::SERVICE_UNAVAILABLE => {
                        Err(StepError::transient("503 service unavailable"))
                    }
                    // 500 (reply lost) and anything else: the effect may have happened.
                    s => Err(StepError::unknown(format!("{s}: {body}"))),
                };
            }
        })
    }
}

fn trip_saga(caller: Caller) -> Result<SagaDefinition<Trip>, steadfast_saga::Error> {
    let policy = RetryPolicy::attempts(ATTEMPTS)
        .backoff(Backoff::exponential(BACKOFF.0, BACKOFF.1))
        .attempt_timeout(ATTEMPT_TIMEOUT);
    let mut b = Saga::builder::<Trip>(SAGA_TYPE).version(1);
    for role in [Role::Flight, Role::Hotel] {
        let (act, undo) = (caller.clone(), caller.clone());
        b.step(
            Step::compensatable(
                role.name(),
                move |ctx: Ctx| act.call(role, Phase::Forward, &ctx),
                move |ctx: Ctx, _booking: String| {
                    let f = undo.call(role, Phase::Compensation, &ctx);
                    async move { f.await.map(drop) }
                },
            )
            .retry(policy)
            .compensation_retry(policy),
        );
    }
    b.step(
        Step::pivot(Role::Car.name(), move |ctx: Ctx| {
            caller.call(Role::Car, Phase::Forward, &ctx)
        })
        .retry(policy),
    );
    b.build()
}

// ---------------------------------------------------------------------------------------------
// The log.

#[derive(Clone, Debug, Serialize, Deserialize)]
enum StoreSpec {
    Sqlite { path: PathBuf },
    Postgres { url: String, schema: String },
}

#[derive(Debug)]
enum Opened {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl StoreSpec {
    async fn open(&self) -> Result<Opened, BoxError> {
        Ok(match self {
            StoreSpec::Sqlite { path } => Opened::Sqlite(SqliteStore::open(path).await?),
            StoreSpec::Postgres { url, schema } => {
                Opened::Postgres(PostgresStore::connect_with(url, Some(schema), 4).await?)
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            StoreSpec::Sqlite { path } => format!(
                "SQLite, WAL, synchronous=FULL, in {}",
                path.parent().unwrap_or(path).display()
            ),
            StoreSpec::Postgres { url, schema } => {
                let host = url.rsplit('@').next().unwrap_or(url);
                format!("PostgreSQL {host}, schema {schema} (dropped at the end)")
            }
        }
    }

    fn remove_files(&self) {
        if let StoreSpec::Sqlite { path } = self {
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl Opened {
    fn store(&self) -> Arc<dyn SagaStore> {
        match self {
            Opened::Sqlite(s) => Arc::new(s.clone()),
            Opened::Postgres(s) => Arc::new(s.clone()),
        }
    }

    async fn close(&self) {
        match self {
            Opened::Sqlite(s) => s.pool().close().await,
            Opened::Postgres(s) => {
                if let Err(e) = s.drop_schema().await {
                    eprintln!("saga: could not drop the scenario's schema: {e}");
                }
                s.pool().close().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driving sagas (in this process or in an orchestrator child).

/// What an orchestrator is to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Plan {
    store: StoreSpec,
    participants: Vec<String>,
    sagas: u32,
    seed: u64,
    /// 0 in process; 1, 2, ... for successive orchestrator children.
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
enum Note {
    Started(u32),
    Ended(u32, SagaStatus),
}

type Notify = Arc<dyn Fn(Note) + Send + Sync>;

/// Starts every saga of the plan (at most [`CONCURRENCY`] at once; `start` is idempotent per
/// business key, so a restarted orchestrator starts only those not yet created) and waits for
/// each to end, while the recovery loop claims sagas whose lease expired.
async fn drive(
    plan: &Plan,
    store: Arc<dyn SagaStore>,
    hooks: Option<Arc<dyn SagaHooks>>,
    notify: Notify,
) -> Result<(), BoxError> {
    let caller = Caller::new(plan.participants.clone(), plan.seed)?;
    let def = trip_saga(caller)?;
    let mut builder = Orchestrator::builder(store)
        .register(&def)
        .owner(format!(
            "lab-orchestrator-{}-{}",
            plan.generation,
            std::process::id()
        ))
        .lease(LEASE)
        .poll_interval(POLL)
        .rng(Arc::new(SeededRng::new(mix(&[plan.seed, plan.generation]))));
    if let Some(h) = hooks {
        builder = builder.hooks(h);
    }
    let orch = builder.build()?;
    let recovery = orch.spawn_recovery();
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    let mut result: Result<(), BoxError> = Ok(());
    for i in 0..plan.sagas {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let (orch, def, notify) = (orch.clone(), def.clone(), Arc::clone(&notify));
        tasks.spawn(async move {
            let _permit = permit;
            let started = orch.start(&def, &business_key(i), &Trip { n: i }).await?;
            notify(Note::Started(i));
            let status = orch.wait(started.id).await?;
            notify(Note::Ended(i, status));
            Ok::<_, steadfast_saga::Error>(())
        });
        while let Some(done) = tasks.try_join_next() {
            result = result.and(done?.map_err(BoxError::from));
        }
        if result.is_err() {
            break;
        }
    }
    while let Some(done) = tasks.join_next().await {
        result = result.and(done?.map_err(BoxError::from));
    }
    recovery.abort();
    result
}

/// What a run left to evaluate.
#[derive(Debug, Default)]
struct RunOutcome {
    /// Sagas acknowledged as started to the caller.
    acked: HashSet<u32>,
    /// Kills performed.
    crashes: u32,
    /// Per kill: the time until every saga active at the kill was claimed again or ended.
    recoveries: Vec<Duration>,
    /// Sagas active at a kill and not resumed within [`CHILD_STALL`].
    unresumed: u64,
    /// Sagas active in the log at the kills (summed over kills).
    orphaned: u64,
    /// The last step boundary the killed orchestrator printed before each kill.
    kill_points: Vec<String>,
}

async fn in_process(
    plan: &Plan,
    opened: &Opened,
    progress: Counter,
) -> Result<RunOutcome, BoxError> {
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let notify: Notify = {
        let acked = Arc::clone(&acked);
        Arc::new(move |n| match n {
            Note::Started(i) => {
                acked.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
            }
            Note::Ended(..) => progress.inc(),
        })
    };
    drive(plan, opened.store(), None, notify).await?;
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(RunOutcome {
        acked,
        ..RunOutcome::default()
    })
}

// ---------------------------------------------------------------------------------------------
// The orchestrator child and its parent.

/// Prints every step boundary, so that the parent can kill at any of them.
#[derive(Debug)]
struct PrintBoundaries;

impl SagaHooks for PrintBoundaries {
    fn at_boundary(&self, at: &BoundaryInfo<'_>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        println!(
            "B {} {} {} {}",
            at.saga,
            at.step,
            at.phase,
            at.boundary.as_str()
        );
        Box::pin(async {})
    }
}

async fn child(plan: &str) -> Result<(), BoxError> {
    let plan: Plan = serde_json::from_str(plan)?;
    let opened = plan.store.open().await?;
    let notify: Notify = Arc::new(|n| match n {
        Note::Started(i) => println!("STARTED {i}"),
        Note::Ended(i, s) => println!("ENDED {i} {s}"),
    });
    drive(
        &plan,
        opened.store(),
        Some(Arc::new(PrintBoundaries)),
        notify,
    )
    .await?;
    if let Opened::Sqlite(s) = &opened {
        s.pool().close().await;
    }
    println!("DONE");
    Ok(())
}

fn child_exe() -> Result<PathBuf, BoxError> {
    if let Some(exe) = std::env::var_os(EXE_ENV) {
        return Ok(PathBuf::from(exe));
    }
    let exe = std::env::current_exe()?;
    let name = exe
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != "steadfast-lab" {
        return Err(format!(
            "--crash re-executes the steadfast-lab binary as the orchestrator, but this process is {}; set {EXE_ENV}",
            exe.display()
        )
        .into());
    }
    Ok(exe)
}

/// A running orchestrator child and the lines it printed.
struct Orchestra {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Orchestra {
    fn spawn(exe: &PathBuf, plan: &Plan) -> Result<Self, BoxError> {
        let mut child = Command::new(exe)
            .args(["--scenario", "saga"])
            .env(CHILD_ENV, serde_json::to_string(plan)?)
            .env_remove(CRASH_ENV)
            .env_remove(STORE_ENV)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the orchestrator child has no stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Orchestra { child, lines })
    }

    /// SIGKILL (`Child::kill` sends SIGKILL on Unix) and reap (at once: nothing survives a
    /// SIGKILL).
    async fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows what the children say about sagas.
#[derive(Debug, Default)]
struct Tally {
    acked: HashSet<u32>,
    ended: HashSet<u32>,
}

enum Line {
    /// A step boundary: `before_call`, `after_call` or `after_write`.
    Boundary(String),
    Done,
    Error(String),
    Other,
}

impl Tally {
    fn read(&mut self, line: &str, progress: &Counter) -> Line {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("B") => Line::Boundary(words.last().unwrap_or_default().to_owned()),
            Some("STARTED") => {
                if let Some(i) = words.next().and_then(|w| w.parse().ok()) {
                    self.acked.insert(i);
                }
                Line::Other
            }
            Some("ENDED") => {
                if let Some(i) = words.next().and_then(|w| w.parse().ok()) {
                    if self.ended.insert(i) {
                        progress.inc();
                    }
                }
                Line::Other
            }
            Some("DONE") => Line::Done,
            Some("ERROR") => Line::Error(line.trim_start_matches("ERROR ").to_owned()),
            _ => Line::Other,
        }
    }
}

/// Sagas active in the log, with their lease epochs.
async fn active_sagas(store: &dyn SagaStore) -> Result<HashMap<SagaId, i64>, BoxError> {
    let mut active = HashMap::new();
    for status in [SagaStatus::Running, SagaStatus::Compensating] {
        for s in store.list(ListQuery::new(100_000).status(status)).await? {
            let rec = store.load(s.id).await?;
            if rec.status.is_active() {
                active.insert(s.id, rec.epoch);
            }
        }
    }
    Ok(active)
}

async fn with_crashes(
    plan: &Plan,
    opened: &Opened,
    crashes: u32,
    progress: Counter,
) -> Result<RunOutcome, BoxError> {
    let exe = child_exe()?;
    let store = opened.store();
    let rng = SeededRng::new(mix(&[plan.seed, 0xc0a5]));
    // Crash j (of k) comes once about j / (k + 1) of the sagas have ended (+- a quarter of the
    // gap), after a further random number of step boundaries: at a random point of some step.
    let gap = u64::from(plan.sagas) / (u64::from(crashes) + 1);
    let thresholds: Vec<usize> = (1..=u64::from(crashes))
        .map(|j| {
            let jitter = rng.next_u64() % (gap / 2).max(1);
            usize::try_from(j * gap + jitter).unwrap_or(usize::MAX) - (gap / 4) as usize
        })
        .collect();
    let mut tally = Tally::default();
    let mut outcome = RunOutcome::default();
    let mut orphans: Option<(Instant, HashMap<SagaId, i64>)> = None;
    let mut generation = 0;
    loop {
        generation += 1;
        let mut child = Orchestra::spawn(
            &exe,
            &Plan {
                generation,
                ..plan.clone()
            },
        )?;
        let mut finished = false;
        if let Some((killed_at, mut waiting)) = orphans.take() {
            // Until every saga the dead orchestrator held is claimed again (a higher epoch) or
            // has ended, as the log says.
            let mut latest = killed_at;
            let give_up = killed_at + CHILD_STALL;
            // The log is read before the child's lines: once the last of them is claimed, the
            // lines the child printed since stay queued for the loop below, which may kill at
            // one of them (the next crash, if due, comes among the recovered sagas' steps).
            while Instant::now() < give_up {
                let mut resumed = Vec::new();
                for (id, epoch) in &waiting {
                    let rec = store.load(*id).await?;
                    if rec.epoch > *epoch || !rec.status.is_active() {
                        resumed.push(*id);
                    }
                }
                if !resumed.is_empty() {
                    latest = Instant::now();
                    for id in resumed {
                        waiting.remove(&id);
                    }
                }
                if waiting.is_empty() {
                    break;
                }
                while let Ok(line) = child.lines.try_recv() {
                    match tally.read(&line, &progress) {
                        Line::Error(e) => {
                            child.kill().await;
                            return Err(format!("the orchestrator child failed: {e}").into());
                        }
                        Line::Done => finished = true,
                        Line::Boundary(_) | Line::Other => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcome.unresumed += waiting.len() as u64;
            outcome
                .recoveries
                .push(latest.saturating_duration_since(killed_at));
        }
        let mut kill_after: Option<u64> = None;
        let mut boundaries = 0u64;
        let mut last_boundary = String::new();
        while !finished {
            let line = match tokio::time::timeout(CHILD_STALL, child.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    child.kill().await;
                    return Err("the orchestrator child exited before finishing".into());
                }
                Err(_) => {
                    child.kill().await;
                    return Err(format!(
                        "the orchestrator child said nothing for {}",
                        ms(CHILD_STALL)
                    )
                    .into());
                }
            };
            match tally.read(&line, &progress) {
                Line::Boundary(kind) => {
                    boundaries += 1;
                    last_boundary = kind;
                }
                Line::Done => finished = true,
                Line::Error(e) => {
                    child.kill().await;
                    return Err(format!("the orchestrator child failed: {e}").into());
                }
                Line::Other => {}
            }
            let next = usize::try_from(outcome.crashes).unwrap_or(usize::MAX);
            if kill_after.is_none()
                && thresholds
                    .get(next)
                    .is_some_and(|t| tally.ended.len() >= *t)
            {
                // A saga yet to end usually has a boundary or more to print: keeping the spread
                // below their number makes the kill come while there is work left, also when the
                // threshold was reached during the last crash's recovery (the new process runs
                // the rest of the plan meanwhile, and what is left may be only the recovered
                // sagas' last steps).
                let left = u64::from(plan.sagas).saturating_sub(tally.ended.len() as u64);
                kill_after = Some(boundaries + rng.next_u64() % KILL_SPREAD.min(left).max(1));
            }
            if !finished && kill_after.is_some_and(|k| boundaries >= k) {
                let killed_at = Instant::now();
                child.kill().await;
                outcome.crashes += 1;
                outcome.kill_points.push(last_boundary.clone());
                let active = active_sagas(&*store).await?;
                outcome.orphaned += active.len() as u64;
                orphans = Some((killed_at, active));
                break;
            }
        }
        if orphans.is_none() {
            // Done: reap the last child.
            child.kill().await;
            break;
        }
    }
    outcome.acked = tally.acked;
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

#[derive(Debug, Default)]
struct Evaluation {
    run: RunOutcome,
    sagas: u64,
    completed: u64,
    compensated: u64,
    needs_attention: u64,
    lost: u64,
    duplicate_effects: u64,
    inconsistent: u64,
    recovered: u64,
    summary: Summary,
    /// The sagas' durations and ends over time, from the log.
    timeline: Timeline,
}

async fn evaluate(
    opened: &Opened,
    plan: &Plan,
    participants: &[Arc<Participant>; 3],
    run: RunOutcome,
) -> Result<Evaluation, BoxError> {
    let store = opened.store();
    let listed = store.list(ListQuery::new(plan.sagas.saturating_mul(2) + 100)).await?;
    let mut e = Evaluation {
        sagas: listed.len() as u64,
        ..Evaluation::default()
    };
    // Effects per saga: [role][phase] counts.
    let mut effects: HashMap<String, [[u32; 2]; 3]> = HashMap::new();
    for p in participants {
        for ((saga, phase), n) in &p.books().effects {
            e.duplicate_effects += u64::from(n.saturating_sub(1));
            let at = match phase {
                Phase::Forward => 0,
                Phase::Compensation => 1,
            };
            effects.entry(saga.clone()).or_default()[p.role.index()][at] += *n;
        }
    }
    let mut in_log = HashSet::new();
    let mut latencies = Vec::with_capacity(listed.len());
    // (duration, started and ended in the log's milliseconds, outcome), for the timeline.
    let mut ends = Vec::with_capacity(listed.len());
    for s in &listed {
        if let Some(i) = s
            .business_key
            .strip_prefix("trip-")
            .and_then(|n| n.parse().ok())
        {
            in_log.insert(i);
        }
        e.recovered += u64::from(s.recoveries);
        let fx = effects.get(&s.id.to_string()).copied().unwrap_or_default();
        let [flight, hotel, car] = fx;
        match s.status {
            SagaStatus::Completed => {
                e.completed += 1;
                let booked = |x: [u32; 2]| x[0] >= 1 && x[1] == 0;
                if !(booked(flight) && booked(hotel) && booked(car)) {
                    e.inconsistent += 1;
                }
            }
            SagaStatus::Compensated => {
                e.compensated += 1;
                let undone = |x: [u32; 2]| (x[0] >= 1) == (x[1] >= 1);
                if !(undone(flight) && undone(hotel) && car == [0, 0]) {
                    e.inconsistent += 1;
                }
            }
            SagaStatus::NeedsAttention => e.needs_attention += 1,
            _ => e.lost += 1,
        }
        let history = store.history(s.id).await?;
        if let (Some(first), Some(last)) = (history.first(), history.last()) {
            let took = u64::try_from(last.at_ms - first.at_ms).unwrap_or(0);
            latencies.push(Duration::from_millis(took));
            let outcome = match s.status {
                SagaStatus::Completed | SagaStatus::Compensated => load::Outcome::Succeeded,
                _ => load::Outcome::Failed,
            };
            ends.push((Duration::from_millis(took), first.at_ms, last.at_ms, outcome));
        }
    }
    // Acknowledged as started but absent from the log.
    e.lost += run.acked.difference(&in_log).count() as u64;
    latencies.sort_unstable();
    let origin = ends.iter().map(|(_, first, _, _)| *first).min().unwrap_or(0);
    e.timeline = Timeline::from_outcomes(ends.iter().map(|(took, _, last, outcome)| {
        let since = u64::try_from(last - origin).unwrap_or(0);
        (*took, Duration::from_millis(since), *outcome)
    }));
    e.summary = Summary {
        requests: e.sagas,
        succeeded: e.completed + e.compensated,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        p999_ms: percentile_ms(&latencies, 0.999),
    };
    e.run = run;
    Ok(e)
}

fn report(
    plan: &Plan,
    postgres: bool,
    crashes: u32,
    participants: &[Arc<Participant>; 3],
    e: Evaluation,
) -> Findings {
    let total = |f: fn(&Participant) -> &AtomicU64| -> u64 {
        participants.iter().map(|p| Participant::count(f(p))).sum()
    };
    let calls = total(|p| &p.calls);
    let replays = total(|p| &p.replays);
    let conflicts = total(|p| &p.conflicts);
    let lost_replies = total(|p| &p.lost_replies);
    let unavailable = total(|p| &p.unavailable);
    let refused_cancellations = Participant::count(&participants[Role::Flight.index()].refusals);
    let recovery = e.run.recoveries.iter().max().copied().unwrap_or_default();
    let recovery_ms = recovery.as_secs_f64() * 1e3;
    let name = variant_name(postgres, crashes > 0);
    let variant = VariantReport::new(name, &e.summary, calls)
        .metric("sagas", "sagas", Value::Count(e.sagas))
        .metric("completed", "completed", Value::Count(e.completed))
        .metric("compensated", "compensated", Value::Count(e.compensated))
        .metric(
            "needs_attention",
            "attention",
            Value::Count(e.needs_attention),
        )
        .metric(
            "duplicate_effects",
            "dup. effects",
            Value::Count(e.duplicate_effects),
        )
        .metric("lost", "lost", Value::Count(e.lost))
        .metric("recovery_ms", "recovery ms", Value::Number(recovery_ms, 0))
        .metric("crashes", "crashes", Value::Count(u64::from(e.run.crashes)))
        .json_metric("inconsistent", Value::Count(e.inconsistent))
        .json_metric("recovered", Value::Count(e.recovered))
        .json_metric("orphaned_by_crashes", Value::Count(e.run.orphaned))
        .json_metric("unresumed_after_crash", Value::Count(e.run.unresumed))
        .json_metric("replayed_replies", Value::Count(replays))
        .json_metric("in_progress_409s", Value::Count(conflicts))
        .json_metric("lost_replies", Value::Count(lost_replies))
        .json_metric("injected_503s", Value::Count(unavailable))
        .json_metric("refused_cancellations", Value::Count(refused_cancellations))
        .timeline(e.timeline.clone());

    let planned = u64::from(plan.sagas);
    let ended = e.completed + e.compensated + e.needs_attention;
    let mut targets = vec![
        Target::new(
            e.lost == 0 && e.sagas == planned && ended == planned,
            format!(
                "every saga ends completed, compensated or needs_attention in the log: lost 0 and {planned} of {planned} ended, got lost {} and {ended} of {} in the log",
                e.lost, e.sagas
            ),
        ),
        Target::new(
            e.duplicate_effects == 0,
            format!(
                "no effect applied twice per (saga, step, phase) despite {lost_replies} lost replies, retries and {} replays: duplicate_effects 0, got {}",
                replays, e.duplicate_effects
            ),
        ),
        Target::new(
            e.inconsistent == 0 && e.completed > 0 && e.compensated > 0,
            format!(
                "completed sagas hold all three bookings, compensated ones none (both outcomes seen): inconsistent 0, got {} ({} completed, {} compensated)",
                e.inconsistent, e.completed, e.compensated
            ),
        ),
        Target::new(
            e.needs_attention == refused_cancellations,
            format!(
                "needs_attention exactly where a cancellation was refused (an operator must act): {refused_cancellations}, got {}",
                e.needs_attention
            ),
        ),
    ];
    let bound = LEASE + POLL.mul_f64(1.1) + RESTART_SLACK;
    if crashes > 0 {
        targets.push(Target::new(
            e.run.crashes == crashes && e.run.unresumed == 0 && recovery <= bound,
            format!(
                "{crashes} SIGKILLs, each crash's sagas resumed within the lease + poll + {} ({} ms): got {} kills, recovery_ms {recovery_ms:.0}, {} not resumed",
                ms(RESTART_SLACK),
                bound.as_millis(),
                e.run.crashes,
                e.run.unresumed
            ),
        ));
    }

    let mode = if crashes > 0 {
        format!(
            "orchestrator in a child process (this binary re-executed), SIGKILLed {crashes} times at random step boundaries and restarted at once; killed just after: {}; {} sagas were active in the log at the kills",
            if e.run.kill_points.is_empty() {
                "-".to_owned()
            } else {
                e.run.kill_points.join(", ")
            },
            e.run.orphaned
        )
    } else {
        "orchestrator in this process, no crash (--crash to kill and restart it)".to_owned()
    };
    Findings {
        config: vec![
            ("log", plan.store.describe()),
            (
                "saga",
                "flight (compensatable), hotel (compensatable), car (pivot); one participant server each".to_owned(),
            ),
            (
                "load",
                format!("{} sagas, {CONCURRENCY} in flight at once", plan.sagas),
            ),
            (
                "participants",
                format!(
                    "dedupe by Idempotency-Key (stored replies; 409 while in progress, asked again every {} within the attempt); per call {:.0}% 503s, {:.0}% lost replies after the effect, {:.0}% {} late; work {}-{} ms",
                    ms(IN_PROGRESS_POLL),
                    P_UNAVAILABLE * 100.0,
                    P_LOST_REPLY * 100.0,
                    P_SLOW * 100.0,
                    ms(SLOW),
                    LATENCY.0.as_millis(),
                    LATENCY.1.as_millis()
                ),
            ),
            (
                "outcomes",
                format!(
                    "per trip {:.0}% hotel full, {:.0}% no car (compensate), {:.0}% non-refundable fare (cancellation refused: needs_attention)",
                    P_HOTEL_FULL * 100.0,
                    P_NO_CAR * 100.0,
                    P_NON_REFUNDABLE * 100.0
                ),
            ),
            (
                "orchestrator",
                format!(
                    "lease {}, claim poll {}, {ATTEMPTS} attempts per step, attempt timeout {}, backoff {}-{}",
                    ms(LEASE),
                    ms(POLL),
                    ms(ATTEMPT_TIMEOUT),
                    ms(BACKOFF.0),
                    ms(BACKOFF.1)
                ),
            ),
            ("mode", mode),
            (
                "measures",
                "requests = sagas in the log, succeeded = completed + compensated, server_calls = participant calls, latency = first to last log event of each saga".to_owned(),
            ),
        ],
        variants: vec![variant],
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_fixed_per_trip_and_near_their_rates() {
        let n = 10_000;
        let hotel = (0..n)
            .filter(|t| Role::Hotel.refuses(1, *t, Phase::Forward))
            .count();
        assert!((800..1200).contains(&hotel), "{hotel}");
        assert_eq!(
            Role::Hotel.refuses(1, 7, Phase::Forward),
            Role::Hotel.refuses(1, 7, Phase::Forward)
        );
        assert!(!(0..n).any(|t| Role::Flight.refuses(1, t, Phase::Forward)));
        assert!(!(0..n).any(|t| Role::Hotel.refuses(1, t, Phase::Compensation)));
    }

    /// Sends one request with `key` until it is not a 503; returns its status and whether it
    /// was a replay.
    async fn send(uri: &Uri, key: &str, saga: &str) -> (StatusCode, bool) {
        let http = HttpClient::new();
        loop {
            let req = Request::post(format!("{uri}forward"))
                .header(IDEMPOTENCY_KEY, key)
                .header(SAGA_HEADER, saga)
                .header(TRIP_HEADER, 3)
                .body(Full::new(Bytes::new()))
                .expect("request");
            let res = http.clone().oneshot(req).await.expect("response");
            match res.status() {
                StatusCode::SERVICE_UNAVAILABLE => continue,
                // In progress (a slow first call): ask again.
                StatusCode::CONFLICT => tokio::time::sleep(IN_PROGRESS_POLL).await,
                s => return (s, res.headers().contains_key("idempotent-replayed")),
            }
        }
    }

    #[tokio::test]
    async fn participants_apply_once_per_key_and_count_what_gets_past() {
        let p = Arc::new(Participant::new(Role::Flight, 5));
        let server = ParticipantServer::start(Arc::clone(&p))
            .await
            .expect("server");
        let effects = |p: &Participant| {
            p.books()
                .effects
                .get(&("s1".to_owned(), Phase::Forward))
                .copied()
        };
        // A first call applies the effect (its reply may be "lost": a 500).
        let (first, replayed) = send(&server.uri, "\"k1\"", "s1").await;
        assert!(!replayed);
        assert!(first == StatusCode::OK || first == StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(effects(&p), Some(1));
        // The same key again: the stored reply, no second effect.
        let (again, replayed) = send(&server.uri, "\"k1\"", "s1").await;
        assert!(replayed && again == StatusCode::OK, "{again}");
        assert_eq!(effects(&p), Some(1));
        // A caller that changed the key for the same (saga, step, phase) is caught.
        let _ = send(&server.uri, "\"k2\"", "s1").await;
        assert_eq!(effects(&p), Some(2));
        // No key: 400, nothing done.
        let req = Request::post(format!("{}forward", server.uri))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = HttpClient::new().oneshot(req).await.expect("response");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn plans_round_trip() {
        let plan = Plan {
            store: StoreSpec::Sqlite {
                path: PathBuf::from("/tmp/x.db"),
            },
            participants: vec!["http://127.0.0.1:1/".into()],
            sagas: 3,
            seed: 1,
            generation: 2,
        };
        let text = serde_json::to_string(&plan).expect("encode");
        let back: Plan = serde_json::from_str(&text).expect("decode");
        assert_eq!(back.generation, 2);
        assert_eq!(variant_name(true, true), "postgres_crash");
    }
}

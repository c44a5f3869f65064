//! `idempotency`: many clients fire the same keyed `POST` at once at a hyper server behind
//! [`IdempotencyLayer`], on every store the lab can reach.
//!
//! For each store (variants `memory`, always; `redis` and `postgres` when reachable) the scenario
//! starts a hyper server on `127.0.0.1` whose handler works [`HANDLER_TIME`] (so that duplicates
//! overlap it) and answers `201` with a body naming its execution. It then sends, for each of a
//! few keys, many copies of one keyed `POST` through steadfast's standard client preset (one
//! attempt each), each on its own connection from the pool and none retried:
//!
//! - a **burst**: half the copies start at the same instant and race for the key's lease;
//! - **stragglers**: the rest start at seeded times over [`STRAGGLER_SPREAD`] (four handler
//!   times), so that some arrive while the key is in flight (`409`) and most after (a replay);
//! - **deliberate mismatches**: a few copies with the same key and a changed body, sent once the
//!   key's execution has started (while it is in flight or after): each must get `422`.
//!
//! Per variant: `requests` (every copy sent, mismatches included), `succeeded` (2xx, the one
//! execution and the replays), `server_calls` (handler executions), `executions` (handler runs of
//! the key that ran most: 1 when no key ran twice), `replays`, `conflicts_409`, `mismatch_422`.
//! Targets: every key executed exactly once on every reachable store; `mismatch_422` equals the
//! deliberate mismatches; every other copy got the key's one response (replays byte for byte)
//! or a `409`, and nothing else.
//!
//! Stores: Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`) under a key prefix of its own
//! per run, deleted at the end; PostgreSQL at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own per run, dropped at the end.
//! A store that cannot be reached is skipped, and the report's configuration lines (printed
//! above the table, and in the JSON `config`) say so and why.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sqlx::postgres::PgPoolOptions;
use steadfast_http::codec::idempotency_key::{IdempotencyKey, IDEMPOTENCY_KEY};
use steadfast_http::idempotency::store::{
    IdempotencyStore, MemoryStore, PostgresStore, RedisStore,
};
use steadfast_http::idempotency::{IdempotencyLayer, RequestBody, IDEMPOTENT_REPLAYED};
use steadfast_layers::rng::{RandomSource, SeededRng};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::ms;
use crate::client::{lab_client, CallerConfig, LabRequest, Retries};
use crate::load::{self, Record, Summary};
use crate::timeline::Timeline;
use crate::progress::{Counter, Progress, Total};
use crate::report::{Findings, Target, Value, VariantReport};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "1,000 concurrent duplicates of keyed POSTs against the idempotency layer on memory, Redis and PostgreSQL: each key executes once, a changed payload gets 422";

/// How long the handler works on each execution: long enough for duplicates to overlap it.
const HANDLER_TIME: Duration = Duration::from_millis(50);
/// Stragglers start at seeded times over this span after the burst.
const STRAGGLER_SPREAD: Duration = Duration::from_millis(200);
/// Mismatches start at seeded times over this span after their key's execution started.
const MISMATCH_SPREAD: Duration = Duration::from_millis(100);
/// The longest a mismatch waits for its key's execution to start before being sent anyway.
const START_WAIT: Duration = Duration::from_secs(10);
/// PostgreSQL connections of the store's pool.
const PG_POOL: u32 = 16;
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How many copies of what are sent, per store.
#[derive(Clone, Copy, Debug)]
struct Plan {
    keys: usize,
    burst: usize,
    stragglers: usize,
    mismatches: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            // 4 x 50 = 200 copies.
            Plan {
                keys: 4,
                burst: 25,
                stragglers: 23,
                mismatches: 2,
            }
        } else {
            // 10 x 100 = 1,000 copies.
            Plan {
                keys: 10,
                burst: 50,
                stragglers: 48,
                mismatches: 2,
            }
        }
    }

    fn per_key(&self) -> usize {
        self.burst + self.stragglers + self.mismatches
    }

    fn requests(&self) -> usize {
        self.keys * self.per_key()
    }
}

/// What the handler saw.
#[derive(Debug)]
struct Handler {
    /// Key (as decoded) to its index.
    index: HashMap<String, usize>,
    /// Executions per key.
    runs: Vec<AtomicU64>,
    /// Set when a key's (first) execution starts.
    started: Vec<watch::Sender<bool>>,
    /// The body of each key's first execution.
    first_body: Mutex<Vec<Option<Bytes>>>,
    /// Executions of requests with no key this scenario sent (none expected).
    unknown: AtomicU64,
    next_execution: AtomicU64,
}

impl Handler {
    fn new(keys: &[IdempotencyKey]) -> Handler {
        Handler {
            index: keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.as_str().to_owned(), i))
                .collect(),
            runs: keys.iter().map(|_| AtomicU64::new(0)).collect(),
            started: keys.iter().map(|_| watch::channel(false).0).collect(),
            first_body: Mutex::new(vec![None; keys.len()]),
            unknown: AtomicU64::new(0),
            next_execution: AtomicU64::new(1),
        }
    }

    async fn execute<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        let key = req
            .headers()
            .get(IDEMPOTENCY_KEY)
            .and_then(|v| IdempotencyKey::decode(v.as_bytes()).ok())
            .and_then(|k| self.index.get(k.as_str()).copied());
        let execution = self.next_execution.fetch_add(1, Ordering::Relaxed);
        let body = match key {
            Some(i) => {
                self.runs[i].fetch_add(1, Ordering::Relaxed);
                self.started[i].send_replace(true);
                Bytes::from(format!("{{\"key\":{i},\"execution\":{execution}}}"))
            }
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                Bytes::from(format!("{{\"execution\":{execution}}}"))
            }
        };
        tokio::time::sleep(HANDLER_TIME).await;
        if let Some(i) = key {
            let mut first = self.first_body.lock().unwrap_or_else(|p| p.into_inner());
            first[i].get_or_insert_with(|| body.clone());
        }
        let mut res = Response::new(Full::new(body));
        *res.status_mut() = StatusCode::CREATED;
        res.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        res
    }

    fn runs(&self) -> Vec<u64> {
        self.runs
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }
}

/// A hyper server on `127.0.0.1` running the idempotency layer around [`Handler`].
struct IdemServer {
    uri: Uri,
    accept: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl IdemServer {
    async fn start<St: IdempotencyStore>(
        layer: &IdempotencyLayer<St, steadfast_http::idempotency::SingleTenant>,
        handler: Arc<Handler>,
    ) -> Result<IdemServer, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let uri: Uri = format!("http://{}/orders", listener.local_addr()?).parse()?;
        let svc = layer.layer(tower::service_fn(
            move |req: Request<RequestBody<Incoming>>| {
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(handler.execute(req).await) }
            },
        ));
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| svc.clone().oneshot(req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Ok(IdemServer { uri, accept, stop })
    }
}

impl Drop for IdemServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept.abort();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Burst,
    Straggler,
    Mismatch,
}

/// One copy's fate.
#[derive(Debug)]
struct Sent {
    id: u64,
    key: usize,
    kind: Kind,
    latency: Duration,
    ended: Instant,
    answer: Result<(StatusCode, bool, Bytes), String>,
}

/// What one store's run found.
#[derive(Debug)]
struct Outcome {
    report: VariantReport,
    runs: Vec<u64>,
    mismatches_sent: u64,
    mismatch_422: u64,
    mismatches_answered_422: u64,
    other: u64,
    divergent: u64,
}

fn order(key: usize, amount: u32) -> Bytes {
    Bytes::from(format!("{{\"order\":{key},\"amount\":{amount}}}"))
}

fn post(uri: &Uri, key: &IdempotencyKey, body: Bytes) -> Result<LabRequest, http::Error> {
    Request::post(uri.clone())
        .header(IDEMPOTENCY_KEY, key.to_header_value())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
}

async fn run_store<St: IdempotencyStore>(
    name: &'static str,
    store: St,
    plan: Plan,
    opts: Options,
) -> Result<Outcome, BoxError> {
    let keys: Vec<IdempotencyKey> = (0..plan.keys).map(|_| IdempotencyKey::generate()).collect();
    let handler = Arc::new(Handler::new(&keys));
    let layer = IdempotencyLayer::builder(store).single_tenant().build()?;
    let server = IdemServer::start(&layer, Arc::clone(&handler)).await?;
    // The client is steadfast's standard preset, as a user builds it, with one attempt: each
    // copy is a caller of its own (the key is the caller's and the preset keeps it), and the
    // scenario counts what the server answers each one, 409s included, so nothing is retried.
    let caller = CallerConfig {
        deadline: Duration::from_secs(30),
        attempt_timeout: None,
        retries: Retries::None,
        backoff: (Duration::from_millis(25), Duration::from_millis(250)),
        seed: opts.seed,
        propagate: None,
    };
    let client = lab_client(&caller, opts.http_client()?)?;
    let rng = SeededRng::new(opts.seed);
    let (go, gate) = watch::channel::<Option<Instant>>(None);
    let progress = Progress::start(
        format!("idempotency/{name}"),
        Total::Requests(plan.requests() as u64),
        opts.progress,
    );

    let mut tasks = JoinSet::new();
    let mut id = 0;
    for (k, key) in keys.iter().enumerate() {
        let mut copies = Vec::with_capacity(plan.per_key());
        copies.extend((0..plan.burst).map(|_| (Kind::Burst, Duration::ZERO)));
        copies.extend(
            (0..plan.stragglers)
                .map(|_| (Kind::Straggler, STRAGGLER_SPREAD.mul_f64(rng.next_f64()))),
        );
        copies.extend(
            (0..plan.mismatches).map(|_| (Kind::Mismatch, MISMATCH_SPREAD.mul_f64(rng.next_f64()))),
        );
        for (kind, offset) in copies {
            let body = if kind == Kind::Mismatch {
                order(k, 101)
            } else {
                order(k, 100)
            };
            let req = post(&server.uri, key, body)?;
            let mut gate = gate.clone();
            let mut started = handler.started[k].subscribe();
            let client = client.clone();
            let done: Counter = progress.counter();
            tasks.spawn(async move {
                let t0 = match *gate.wait_for(Option::is_some).await? {
                    Some(t0) => t0,
                    None => Instant::now(),
                };
                if kind == Kind::Mismatch {
                    let _ = tokio::time::timeout(START_WAIT, started.wait_for(|s| *s)).await;
                    tokio::time::sleep(offset).await;
                } else {
                    tokio::time::sleep_until(t0 + offset).await;
                }
                let sent_at = Instant::now();
                let answer = match client.oneshot(req).await {
                    Ok(res) => Ok((
                        res.status(),
                        res.headers()
                            .get(IDEMPOTENT_REPLAYED)
                            .is_some_and(|v| v == "true"),
                        res.into_body(),
                    )),
                    Err(e) => Err(e.to_string()),
                };
                let ended = Instant::now();
                done.inc();
                Ok::<_, BoxError>(Sent {
                    id,
                    key: k,
                    kind,
                    latency: ended.saturating_duration_since(sent_at),
                    ended,
                    answer,
                })
            });
            id += 1;
        }
    }
    // Every copy is waiting at the gate: open it.
    let opened = Instant::now();
    go.send_replace(Some(opened));
    let mut sent = Vec::with_capacity(plan.requests());
    while let Some(joined) = tasks.join_next().await {
        sent.push(joined??);
    }
    progress.finish();
    drop(server);

    let runs = handler.runs();
    let first_body = handler
        .first_body
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut records = Vec::with_capacity(sent.len());
    let (mut replays, mut conflicts, mut mismatch_422, mut mismatches_answered_422) = (0, 0, 0, 0);
    let (mut other, mut divergent, mut transport_errors) = (0, 0, 0);
    for s in &sent {
        let ok = matches!(&s.answer, Ok((status, _, _)) if status.is_success());
        records.push(Record {
            id: s.id,
            latency: s.latency,
            ended: s.ended,
            outcome: if ok {
                load::Outcome::Succeeded
            } else {
                load::Outcome::Failed
            },
        });
        match &s.answer {
            Ok((status, replayed, body)) if status.is_success() => {
                if *replayed {
                    replays += 1;
                }
                if first_body[s.key].as_ref() != Some(body) {
                    divergent += 1;
                }
            }
            Ok((StatusCode::CONFLICT, _, _)) => conflicts += 1,
            Ok((StatusCode::UNPROCESSABLE_ENTITY, _, _)) => {
                mismatch_422 += 1;
                if s.kind == Kind::Mismatch {
                    mismatches_answered_422 += 1;
                }
            }
            Ok(_) => other += 1,
            Err(_) => transport_errors += 1,
        }
    }
    records.sort_by_key(|r| r.id);
    let summary = Summary::of(&records);
    let handler_runs: u64 = runs.iter().sum::<u64>() + handler.unknown.load(Ordering::Relaxed);
    let stats = layer.stats();
    let mismatches_sent = (plan.keys * plan.mismatches) as u64;
    let report = VariantReport::new(name, &summary, handler_runs)
        .metric(
            "executions",
            "exec/key",
            Value::Count(runs.iter().copied().max().unwrap_or(0)),
        )
        .metric("replays", "replays", Value::Count(replays))
        .metric("conflicts_409", "409s", Value::Count(conflicts))
        .metric("mismatch_422", "422s", Value::Count(mismatch_422))
        .json_metric("keys", Value::Count(plan.keys as u64))
        .json_metric(
            "keys_not_executed_once",
            Value::Count(runs.iter().filter(|&&r| r != 1).count() as u64),
        )
        .json_metric("mismatches_sent", Value::Count(mismatches_sent))
        .json_metric("other_statuses", Value::Count(other))
        .json_metric("transport_errors", Value::Count(transport_errors))
        .json_metric("divergent_bodies", Value::Count(divergent))
        .json_metric("layer_executions", Value::Count(stats.executions))
        .json_metric("layer_replays", Value::Count(stats.replays))
        .json_metric("layer_conflicts", Value::Count(stats.conflicts))
        .json_metric("layer_mismatches", Value::Count(stats.mismatches))
        .json_metric("layer_store_errors", Value::Count(stats.store_errors))
        .timeline(Timeline::from_records(opened, &records));
    Ok(Outcome {
        report,
        runs,
        mismatches_sent,
        mismatch_422,
        mismatches_answered_422,
        other: other + transport_errors,
        divergent,
    })
}

/// `url` without any password, for reports.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// A Redis store under a prefix of its own, or why not.
async fn open_redis(run: &str) -> Result<(RedisStore, String), String> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    let shown = redact(&url);
    let connect = async {
        let client = redis::Client::open(url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        redis::aio::ConnectionManager::new_with_config(client, config).await
    };
    let conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("unreachable at {shown} ({e})")),
        Err(_) => return Err(format!("unreachable at {shown} (connect timed out)")),
    };
    let prefix = format!("steadfast:lab:idem:{run}:");
    let store = RedisStore::builder(conn)
        .prefix(prefix.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((
        store,
        format!("{shown}, key prefix {prefix} (deleted at the end)"),
    ))
}

/// A PostgreSQL store in a schema of its own (migrated), or why not.
async fn open_postgres(run: &str) -> Result<(PostgresStore, String), String> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let shown = redact(&url);
    let connect = PgPoolOptions::new()
        .max_connections(PG_POOL)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url);
    let pool = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => return Err(format!("unreachable at {shown} ({e})")),
        Err(_) => return Err(format!("unreachable at {shown} (connect timed out)")),
    };
    let schema = format!("steadfast_lab_idem_{run}");
    let store = match PostgresStore::builder(pool.clone())
        .schema(schema.clone())
        .build()
    {
        Ok(store) => store,
        Err(e) => {
            pool.close().await;
            return Err(e.to_string());
        }
    };
    if let Err(e) = store.migrate().await {
        drop_schema(&store).await;
        return Err(format!("migration failed at {shown} ({e})"));
    }
    Ok((
        store,
        format!("{shown}, schema {schema} (dropped at the end)"),
    ))
}

async fn drop_schema(store: &PostgresStore) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
    if let Err(e) = sqlx::query(&sql).execute(store.pool()).await {
        eprintln!("idempotency: could not drop schema {}: {e}", store.schema());
    }
    store.pool().close().await;
}

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let plan = Plan::new(opts.quick);
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut stores = vec!["memory (in process)".to_owned()];
    let mut skipped: Vec<String> = Vec::new();

    outcomes.push(run_store("memory", MemoryStore::new(), plan, opts).await?);

    match open_redis(&run_id).await {
        Ok((store, shown)) => {
            stores.push(format!("redis at {shown}"));
            let result = run_store("redis", store.clone(), plan, opts).await;
            if let Err(e) = store.clear().await {
                eprintln!("idempotency: could not delete the run's Redis keys: {e}");
            }
            outcomes.push(result?);
        }
        Err(why) => skipped.push(format!("redis: {why}")),
    }

    match open_postgres(&run_id).await {
        Ok((store, shown)) => {
            stores.push(format!("postgres at {shown}"));
            let result = run_store("postgres", store.clone(), plan, opts).await;
            drop_schema(&store).await;
            outcomes.push(result?);
        }
        Err(why) => skipped.push(format!("postgres: {why}")),
    }

    let per_store = |f: &dyn Fn(&Outcome) -> String| {
        outcomes
            .iter()
            .map(|o| format!("{} {}", o.report.name, f(o)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let targets = vec![
        Target::new(
            outcomes.iter().all(|o| o.runs.iter().all(|&r| r == 1)),
            format!(
                "executions == 1 per key on every reachable store ({} keys each): {}",
                plan.keys,
                per_store(&|o| {
                    let min = o.runs.iter().copied().min().unwrap_or(0);
                    let max = o.runs.iter().copied().max().unwrap_or(0);
                    if min == max {
                        format!("{max}")
                    } else {
                        format!("{min}-{max}")
                    }
                })
            ),
        ),
        Target::new(
            outcomes.iter().all(|o| {
                o.mismatch_422 == o.mismatches_sent && o.mismatches_answered_422 == o.mismatches_sent
            }),
            format!(
                "mismatch_422 == the deliberate mismatches ({} per store): {}",
                plan.keys * plan.mismatches,
                per_store(&|o| format!("{}", o.mismatch_422))
            ),
        ),
        Target::new(
            outcomes.iter().all(|o| o.other == 0 && o.divergent == 0),
            format!(
                "every other copy got its key's one response (replays byte for byte) or a 409, nothing else: {}",
                per_store(&|o| format!("{} other, {} divergent", o.other, o.divergent))
            ),
        ),
    ];

    let quick_note = if opts.quick {
        " (quick mode: 200 instead of 1,000)"
    } else {
        ""
    };
    let mut config = vec![
        (
            "server",
            format!(
                "hyper on 127.0.0.1, IdempotencyLayer (single tenant, defaults: 30 s lease, 24 h expiry) around a handler that works {} and answers 201",
                ms(HANDLER_TIME)
            ),
        ),
        (
            "load",
            format!(
                "{} keys x {} copies = {} keyed POSTs per store{quick_note}, none retried: per key {} at the same instant, {} spread over {}, {} with the same key and a changed body once the key executes",
                plan.keys,
                plan.per_key(),
                plan.requests(),
                plan.burst,
                plan.stragglers,
                ms(STRAGGLER_SPREAD),
                plan.mismatches
            ),
        ),
        ("stores", stores.join("; ")),
    ];
    if !skipped.is_empty() {
        config.push(("skipped", skipped.join("; ")));
    }

    Ok(Findings {
        config,
        variants: outcomes.into_iter().map(|o| o.report).collect(),
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_reported() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/test"),
            "postgres://u:***@db:5432/test"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    }

    #[test]
    fn plans_send_what_the_report_says() {
        assert_eq!(Plan::new(false).requests(), 1_000);
        assert_eq!(Plan::new(true).requests(), 200);
    }
}

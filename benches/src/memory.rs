//! Memory per layer instance: the bytes each layer holds when built, after a warm-up of
//! [`WARM_UP_CALLS`] calls with the lab's `tail` latencies, and per key for the keyed layers.
//!
//! Who reads this: the `memory` test (`tests/memory.rs`, which asserts every row's [`Target`])
//! and the `memory` bench (`memory.rs`, which prints the same table beside tower's and
//! `tower-resilience`'s equivalents, then the 1,000-route [`scale`] check). Both need the
//! `memory` feature (tokio's paused clock; see `Cargo.toml`).
//!
//! **How bytes are counted.** The binary installs `allocation-counter`'s counting allocator and
//! hands [`Meter::new`] a [`Measure`]: the net bytes allocated and not freed on this thread while
//! a closure runs. Every call runs on one paused current-thread runtime on this thread, so nothing
//! escapes the count. For each row, [`Meter`] first builds the stack once and drives a few calls
//! (so that process-wide lazy statics, such as OpenTelemetry's global meter provider, are not
//! charged to it), then counts:
//!
//! - **built**: what building the layer and wrapping the peer in it leaves allocated (the layer
//!   itself is dropped when it is not needed for anything but building; its shared state lives on
//!   in the service);
//! - **warm**: built, plus what [`WARM_UP_CALLS`] sequential calls left allocated. The peer
//!   sleeps a latency drawn from [`tail_latency`] (10-20 ms, 2 % at 500-1000 ms: the lab's
//!   `tail` scenario) on the paused clock, and the 10,000 calls cover about five minutes of paused
//!   time: every rotating window (the hedge's 30 s, the throttle's 2 min) turns over. tokio's
//!   timer counts whole milliseconds, so a hedge layer's histogram meets four powers of two of
//!   microseconds here, where in the lab (and in the real-clock [`scale`] check) the hedges'
//!   losers add sub-millisecond elapsed times and it meets about eight (`docs/memory.md`; the
//!   unit test `the_lab_tail_spread_fits_in_64_kib` holds the histogram to 64 KiB for those);
//! - for a keyed layer ([`Keyed`]) with `max_keys` = [`KEYS`]: the warm-up spreads its calls over
//!   [`KEYS`] keys (ten each), and **per key** is what it grew by, divided by [`KEYS`] (hash
//!   table slack included). Then [`CHURN_KEYS`] calls each bring a key never seen before: the
//!   keys tracked stay at most `max_keys`, and the bytes held stay bounded by `max_keys`, not by
//!   the keys seen.
//!
//! The peer is a zero-sized closure drawing from a thread-local random source ([`PeerRng`],
//! reseeded before every warm-up): it holds no byte of its own.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt::{self, Debug, Write as _};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use steadfast_http::body::ReplayBody;
use steadfast_http::preset::{HedgingClientLayer, StandardClientLayer};
use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Aimd, Gradient2, Vegas};
use steadfast_layers::adaptive_throttle::ThrottleLayer;
use steadfast_layers::breaker::CircuitBreakerLayer;
use steadfast_layers::bulkhead::BulkheadLayer;
use steadfast_layers::chaos::ChaosLayer;
use steadfast_layers::deadline::DeadlineLayer;
use steadfast_layers::fallback::{Failure, FallbackLayer};
use steadfast_layers::hedge::{HedgeAny, HedgeDelay, HedgeLayer, Idempotent};
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::rate::RateLimitLayer;
use steadfast_layers::retry::{RetryLayer, TokenBucket};
use steadfast_layers::rng::RandomSource;
use steadfast_layers::shed::LoadShedLayer;
use steadfast_layers::timeout::AttemptTimeoutLayer;
use steadfast_layers::BoxError;
use tokio::runtime::Runtime;
use tower::{service_fn, Layer, Service, ServiceExt};

/// Calls in every warm-up.
pub const WARM_UP_CALLS: u32 = 10_000;
/// `max_keys` of every keyed layer here, and the keys its warm-up spreads its calls over.
pub const KEYS: usize = 1_000;
/// Calls with a key never seen before, after a keyed layer's warm-up: ten times `max_keys`.
pub const CHURN_KEYS: u32 = 10 * KEYS as u32;
/// What a layer may hold at rest (issue #18): 4 KiB.
pub const AT_REST: usize = 4 * 1024;
/// What a hedge layer may hold after the warm-up, in the lab's `tail` latencies: 64 KiB.
pub const HEDGE_WARM: usize = 64 * 1024;
/// What a keyed circuit breaker may hold per key: its breaker (a count window of 100 calls), the
/// key's `Debug` label and its share of the table.
pub const BREAKER_PER_KEY: usize = 384;
/// What a keyed concurrency limit may hold per key: its gate and its share of the table.
pub const LIMIT_PER_KEY: usize = 128;
/// What a keyed rate limit may hold per key: one 64-bit cell and its share of the table.
pub const RATE_PER_KEY: usize = 64;
/// The seed of every warm-up's latencies (see [`reseed`]).
pub const SEED: u64 = 18;

/// Net bytes allocated and not freed on this thread while the closure runs: in the test and the
/// bench, `|f| allocation_counter::measure(f).bytes_current`. Passed in, so that the counting
/// allocator is linked only into the binaries that count (never into the timing benches).
pub type Measure = fn(&mut dyn FnMut()) -> i64;

/// A latency of the lab's `tail` scenario: 10-20 ms, except 2 % at 500-1000 ms.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::rng::SeededRng;
/// let rng = SeededRng::new(1);
/// let d = steadfast_benches::memory::tail_latency(&rng);
/// assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(1000));
/// ```
pub fn tail_latency(rng: &dyn RandomSource) -> Duration {
    let ms = Duration::from_millis;
    let (min, max) = if rng.next_f64() < 0.02 {
        (ms(500), ms(1000))
    } else {
        (ms(10), ms(20))
    };
    min + (max - min).mul_f64(rng.next_f64())
}

thread_local! {
    /// The peers' random source: SplitMix64 on this thread (every call runs on it), so that a
    /// peer is a zero-sized closure and holds no byte of its own.
    static DRAWS: Cell<u64> = const { Cell::new(SEED) };
}

/// Restarts the peers' latencies (on this thread) from `seed`: every row's warm-up draws the same
/// latencies.
///
/// ```
/// use steadfast_benches::memory::{reseed, tail_latency, PeerRng};
/// reseed(3);
/// let a = tail_latency(&PeerRng);
/// reseed(3);
/// assert_eq!(tail_latency(&PeerRng), a);
/// ```
pub fn reseed(seed: u64) {
    DRAWS.with(|d| d.set(seed));
}

/// The peers' random source (see [`reseed`]): a handle on this thread's state.
///
/// ```
/// use steadfast_layers::rng::RandomSource;
/// let x = steadfast_benches::memory::PeerRng.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerRng;

impl RandomSource for PeerRng {
    fn next_u64(&self) -> u64 {
        DRAWS.with(|d| {
            let next = d.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            d.set(next);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    }
}

/// A peer that answers each `u32` with itself after a [`tail_latency`] drawn from [`PeerRng`]
/// (a zero-sized service: it holds nothing).
///
/// ```
/// use tower::ServiceExt;
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
/// # rt.block_on(async {
/// assert_eq!(steadfast_benches::memory::peer().oneshot(7).await, Ok(7));
/// # });
/// ```
pub fn peer(
) -> impl Service<u32, Response = u32, Error = Infallible, Future = impl Send> + Clone + Send + Sync
{
    service_fn(|req: u32| {
        let latency = tail_latency(&PeerRng);
        async move {
            tokio::time::sleep(latency).await;
            Ok(req)
        }
    })
}

/// What the HTTP presets send their peer: the caller's body, made replayable.
pub type HttpRequest = Request<ReplayBody<Full<Bytes>>>;

/// Like [`peer`], over HTTP: every request is answered `200` with an empty body.
///
/// ```
/// use tower::ServiceExt;
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
/// # rt.block_on(async {
/// let req = http::Request::new(steadfast_http::body::ReplayBody::new(http_body_util::Full::new(bytes::Bytes::new())));
/// assert_eq!(steadfast_benches::memory::http_peer().oneshot(req).await.unwrap().status(), 200);
/// # });
/// ```
pub fn http_peer(
) -> impl Service<HttpRequest, Response = Response<Full<Bytes>>, Error = BoxError, Future = impl Send>
       + Clone
       + Send
       + Sync {
    service_fn(|_req: HttpRequest| {
        let latency = tail_latency(&PeerRng);
        async move {
            tokio::time::sleep(latency).await;
            Ok(Response::new(Full::new(Bytes::new())))
        }
    })
}

/// A `GET` for the HTTP presets, marked [`Idempotent`] (the hedging preset hedges, and so
/// measures, only requests marked so; see its docs).
///
/// ```
/// use steadfast_layers::hedge::{HedgePolicy, IdempotentOnly};
/// let req = steadfast_benches::memory::get(7);
/// assert_eq!(req.method(), http::Method::GET);
/// assert!(IdempotentOnly.can_hedge(&req));
/// ```
pub fn get(_n: u32) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = http::Uri::from_static("/route");
    Idempotent::mark(&mut req);
    req
}

/// The bytes a stack holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// When built (before its first call).
    pub built: i64,
    /// After the warm-up.
    pub warm: i64,
    /// Calls of the warm-up that failed (none expected: the peer always answers).
    pub failed: u32,
}

/// What a keyed layer holds per key, and that it is bounded by `max_keys`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Keyed {
    /// The bound on keys ([`KEYS`] here).
    pub max_keys: usize,
    /// Bytes per key: what the warm-up over [`KEYS`] keys added, divided by [`KEYS`].
    pub per_key: f64,
    /// Bytes held after [`CHURN_KEYS`] more calls, each with a new key.
    pub churned: i64,
    /// Keys tracked after those.
    pub tracked: usize,
}

/// The most a keyed layer may hold after any number of keys: `at_rest`, plus twice `max_keys`
/// times `per_key` (a hash table that has removed and inserted many keys may double its capacity
/// once before it rehashes in place).
///
/// ```
/// assert_eq!(steadfast_benches::memory::keyed_bound(500, 10, 100), 2_500);
/// ```
pub fn keyed_bound(at_rest: usize, max_keys: usize, per_key: usize) -> i64 {
    (at_rest + 2 * max_keys * per_key) as i64
}

/// A row's targets, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The most a stack may hold when built.
    pub built: usize,
    /// The most it may hold after the warm-up (`None`: bounded per key instead).
    pub warm: Option<usize>,
    /// For a keyed layer: the most it may hold per key, and so after any number of keys
    /// ([`keyed_bound`]).
    pub per_key: Option<usize>,
}

impl Target {
    /// [`AT_REST`] when built and after the warm-up: a layer whose state does not grow with use.
    pub const FLAT: Target = Target {
        built: AT_REST,
        warm: Some(AT_REST),
        per_key: None,
    };

    /// [`AT_REST`] when built, at most `bytes` per key, bounded by `max_keys`.
    ///
    /// ```
    /// let t = steadfast_benches::memory::Target::per_key(64);
    /// assert_eq!((t.built, t.warm, t.per_key), (4096, None, Some(64)));
    /// ```
    pub const fn per_key(bytes: usize) -> Target {
        Target {
            built: AT_REST,
            warm: None,
            per_key: Some(bytes),
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// The layer (or preset) and its configuration.
    pub name: String,
    /// What it holds.
    pub footprint: Footprint,
    /// Per key, for a keyed layer.
    pub keyed: Option<Keyed>,
    /// Its targets (`None` for a peer: reported only).
    pub target: Option<Target>,
}

impl Row {
    /// Every target this row misses, in words (empty when it meets them all, or has none).
    ///
    /// ```
    /// use steadfast_benches::memory::{Footprint, Row, Target};
    /// let row = Row {
    ///     name: "x".into(),
    ///     footprint: Footprint { built: 5_000, warm: 5_000, failed: 0 },
    ///     keyed: None,
    ///     target: Some(Target::FLAT),
    /// };
    /// assert_eq!(row.misses().len(), 2);
    /// ```
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        let f = self.footprint;
        if f.failed > 0 {
            misses.push(format!("{}: {} warm-up calls failed", self.name, f.failed));
        }
        let Some(target) = self.target else {
            return misses;
        };
        if f.built > target.built as i64 {
            misses.push(format!(
                "{}: {} bytes when built, over {}",
                self.name, f.built, target.built
            ));
        }
        if let Some(warm) = target.warm {
            if f.warm > warm as i64 {
                misses.push(format!(
                    "{}: {} bytes after the warm-up, over {warm}",
                    self.name, f.warm
                ));
            }
        }
        if let (Some(k), Some(per_key)) = (self.keyed, target.per_key) {
            if k.per_key > per_key as f64 {
                misses.push(format!(
                    "{}: {:.0} bytes per key, over {per_key}",
                    self.name, k.per_key
                ));
            }
            if k.tracked > k.max_keys {
                misses.push(format!(
                    "{}: {} keys tracked, over max_keys = {}",
                    self.name, k.tracked, k.max_keys
                ));
            }
            let bound = keyed_bound(target.built, k.max_keys, per_key);
            if k.churned > bound {
                misses.push(format!(
                    "{}: {} bytes after {CHURN_KEYS} new keys, over {bound} (at rest + 2 x \
                     max_keys x per key)",
                    self.name, k.churned
                ));
            }
        }
        misses
    }
}

/// Counts what stacks hold, on a paused current-thread runtime of its own (see the module docs).
pub struct Meter {
    rt: Runtime,
    measure: Measure,
}

impl Debug for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

/// Drives `n` sequential calls `req(from..from + n)` on `svc`; returns how many failed.
async fn drive<S, R>(svc: &mut S, req: &impl Fn(u32) -> R, from: u32, n: u32) -> u32
where
    S: Service<R>,
{
    let mut failed = 0;
    for i in from..from + n {
        let ok = match svc.ready().await {
            Ok(s) => s.call(req(i)).await.is_ok(),
            Err(_) => false,
        };
        failed += u32::from(!ok);
    }
    failed
}

impl Meter {
    /// A meter counting with `measure`, its runtime warmed up on a bare peer.
    ///
    /// # Errors
    ///
    /// If tokio cannot build the runtime.
    pub fn new(measure: Measure) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        // The runtime's own first-use allocations (its timer wheel, its defer list) are not a
        // layer's.
        let mut bare = peer();
        rt.block_on(drive(&mut bare, &|i| i, 0, 1_000));
        Ok(Meter { rt, measure })
    }

    /// What the service `build` returns holds, built and after the warm-up of `req(0..)`.
    pub fn footprint<S, R>(&self, build: impl Fn() -> S, req: impl Fn(u32) -> R) -> Footprint
    where
        S: Service<R>,
    {
        // Some services need the runtime's context when built (tower's `RateLimit` its timer).
        let _context = self.rt.enter();
        {
            let mut primer = build();
            self.rt.block_on(drive(&mut primer, &req, 0, 10));
        }
        let mut svc = None;
        let built = (self.measure)(&mut || svc = Some(build()));
        let Some(mut svc) = svc else {
            return Footprint::default();
        };
        let mut failed = 0;
        reseed(SEED);
        let grew = (self.measure)(&mut || {
            failed = self.rt.block_on(drive(&mut svc, &req, 0, WARM_UP_CALLS));
        });
        drop(svc);
        Footprint {
            built,
            warm: built + grew,
            failed,
        }
    }

    /// What a keyed layer holds: `layer` builds it (with `max_keys` = [`KEYS`] and the request as
    /// its key), `wrap` puts it around a peer, `keys` counts the keys it tracks. The warm-up
    /// spreads its calls over [`KEYS`] keys; then [`CHURN_KEYS`] calls each bring a new key.
    pub fn keyed<L, S>(
        &self,
        layer: impl Fn() -> L,
        wrap: impl Fn(&L) -> S,
        keys: impl Fn(&L) -> usize,
    ) -> (Footprint, Keyed)
    where
        S: Service<u32>,
    {
        // Keys of five digits throughout, so that every key's `Debug` label (the keyed breaker
        // keeps one) has the same length.
        const FIRST: u32 = 10_000;
        let warm_key = |i: u32| FIRST + i % KEYS as u32;
        let new_key = |i: u32| FIRST + KEYS as u32 + i;
        let _context = self.rt.enter();
        {
            let l = layer();
            let mut primer = wrap(&l);
            self.rt.block_on(drive(&mut primer, &warm_key, 0, 10));
        }
        let mut built_layer = None;
        let built = (self.measure)(&mut || {
            let l = layer();
            let svc = wrap(&l);
            built_layer = Some((l, svc));
        });
        let Some((l, mut svc)) = built_layer else {
            return Default::default();
        };
        let mut failed = 0;
        reseed(SEED);
        let grew = (self.measure)(&mut || {
            failed = self
                .rt
                .block_on(drive(&mut svc, &warm_key, 0, WARM_UP_CALLS));
        });
        let churn = (self.measure)(&mut || {
            failed += self.rt.block_on(drive(&mut svc, &new_key, 0, CHURN_KEYS));
        });
        let keyed = Keyed {
            max_keys: KEYS,
            per_key: grew as f64 / KEYS as f64,
            churned: built + grew + churn,
            tracked: keys(&l),
        };
        (
            Footprint {
                built,
                warm: built + grew,
                failed,
            },
            keyed,
        )
    }
}

fn row(name: &str, footprint: Footprint, target: Target) -> Row {
    Row {
        name: name.to_owned(),
        footprint,
        keyed: None,
        target: Some(target),
    }
}

fn keyed_row(name: &str, (footprint, keyed): (Footprint, Keyed), target: Target) -> Row {
    Row {
        name: name.to_owned(),
        footprint,
        keyed: Some(keyed),
        target: Some(target),
    }
}

/// What a stack is built of, for the rows: every layer's configuration is valid, so a builder
/// error is a bug in this catalogue.
fn ok<T, E: Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => panic!("invalid configuration in the memory catalogue: {e:?}"),
    }
}

/// Every steadfast layer and both HTTP presets, measured by `meter`, with their targets: every
/// layer and preset at most [`AT_REST`] when built; every one without a learned hedge delay as
/// much after the warm-up (its state does not grow with use); with one, at most [`HEDGE_WARM`]
/// after it; each keyed layer at most its bytes per key ([`BREAKER_PER_KEY`], [`LIMIT_PER_KEY`],
/// [`RATE_PER_KEY`]), never more than `max_keys` keys, and at most [`keyed_bound`] after
/// [`CHURN_KEYS`] new keys.
pub fn steadfast_rows(meter: &Meter) -> Vec<Row> {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let p = peer;
    let id = |i: u32| i;
    let mut rows = Vec::new();

    rows.push(row(
        "DeadlineLayer (10 s)",
        meter.footprint(|| ok(DeadlineLayer::new(secs(10))).layer(p()), id),
        Target::FLAT,
    ));
    rows.push(row(
        "AttemptTimeoutLayer (3 s)",
        meter.footprint(|| ok(AttemptTimeoutLayer::new(secs(3))).layer(p()), id),
        Target::FLAT,
    ));
    rows.push(row(
        "RetryLayer (3 attempts, ratio budget)",
        meter.footprint(
            || ok(RetryLayer::builder().max_attempts(3).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "RetryLayer (3 attempts, token bucket)",
        meter.footprint(
            || {
                let bucket = Arc::new(ok(TokenBucket::builder().build()));
                ok(RetryLayer::builder().max_attempts(3).budget(bucket).build()).layer(p())
            },
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "HedgeLayer (learned p95)",
        meter.footprint(
            || {
                ok(HedgeLayer::builder()
                    .delay(HedgeDelay::percentile(95.0))
                    .policy(HedgeAny)
                    .build())
                .layer(p())
            },
            id,
        ),
        Target {
            built: AT_REST,
            warm: Some(HEDGE_WARM),
            per_key: None,
        },
    ));
    rows.push(row(
        "HedgeLayer (fixed 25 ms)",
        meter.footprint(
            || {
                ok(HedgeLayer::builder()
                    .delay(HedgeDelay::fixed(ms(25)))
                    .policy(HedgeAny)
                    .build())
                .layer(p())
            },
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "CircuitBreakerLayer (count window 100)",
        meter.footprint(|| ok(CircuitBreakerLayer::builder().build()).layer(p()), id),
        Target::FLAT,
    ));
    rows.push(row(
        "CircuitBreakerLayer (time window 60 s)",
        meter.footprint(
            || ok(CircuitBreakerLayer::builder().time_window(secs(60)).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    rows.push(keyed_row(
        "CircuitBreakerLayer per key (count window 100)",
        meter.keyed(
            || {
                ok(CircuitBreakerLayer::builder()
                    .max_keys(KEYS)
                    .key_by(|r: &u32| *r)
                    .build())
            },
            |l| l.layer(p()),
            |l| l.handle().breakers(),
        ),
        Target::per_key(BREAKER_PER_KEY),
    ));
    rows.push(row(
        "BulkheadLayer (25, queue 25)",
        meter.footprint(
            || ok(BulkheadLayer::builder(25).max_queue(25).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "ConcurrencyLimitLayer (25)",
        meter.footprint(|| ok(ConcurrencyLimitLayer::new(25)).layer(p()), id),
        Target::FLAT,
    ));
    rows.push(keyed_row(
        "ConcurrencyLimitLayer per key (25)",
        meter.keyed(
            || {
                ok(ConcurrencyLimitLayer::builder(25)
                    .max_keys(KEYS)
                    .key_by(|r: &u32| *r)
                    .build())
            },
            |l| l.layer(p()),
            |l| l.keys().unwrap_or(0),
        ),
        Target::per_key(LIMIT_PER_KEY),
    ));
    rows.push(row(
        "RateLimitLayer (1,000/s)",
        meter.footprint(
            || ok(RateLimitLayer::builder(1_000, secs(1)).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    rows.push(keyed_row(
        "RateLimitLayer per key (100/s)",
        meter.keyed(
            || {
                ok(RateLimitLayer::builder(100, secs(1))
                    .max_keys(KEYS)
                    .key_by(|r: &u32| *r)
                    .build())
            },
            |l| l.layer(p()),
            |l| l.keys().unwrap_or(0),
        ),
        Target::per_key(RATE_PER_KEY),
    ));
    rows.push(row(
        "AdaptiveLimitLayer (AIMD)",
        meter.footprint(
            || {
                ok(AdaptiveLimitLayer::builder()
                    .algorithm(Aimd::default())
                    .seed(1)
                    .build())
                .layer(p())
            },
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "AdaptiveLimitLayer (Gradient2)",
        meter.footprint(
            || {
                ok(AdaptiveLimitLayer::builder()
                    .algorithm(Gradient2::default())
                    .seed(1)
                    .build())
                .layer(p())
            },
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "AdaptiveLimitLayer (Vegas)",
        meter.footprint(
            || {
                ok(AdaptiveLimitLayer::builder()
                    .algorithm(Vegas::default())
                    .seed(1)
                    .build())
                .layer(p())
            },
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "ThrottleLayer (2 min in 12 buckets)",
        meter.footprint(
            || ok(ThrottleLayer::builder().seed(1).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "LoadShedLayer",
        meter.footprint(|| LoadShedLayer::new().layer(p()), id),
        Target::FLAT,
    ));
    rows.push(row(
        "FallbackLayer (from_fn)",
        meter.footprint(
            || ok(FallbackLayer::from_fn(|_f: Failure<u32>| 0).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    rows.push(row(
        "ChaosLayer (1 % latency 10 ms)",
        meter.footprint(
            || ok(ChaosLayer::builder().latency(0.01, ms(10)).seed(1).build()).layer(p()),
            id,
        ),
        Target::FLAT,
    ));
    // Idempotency keys, replay body, deadline, retry, attempt timeout, propagation: six layers,
    // held to what one layer may hold.
    rows.push(row(
        "StandardClientLayer (preset)",
        meter.footprint(
            || ok(StandardClientLayer::builder().build()).layer(http_peer()),
            get,
        ),
        Target::FLAT,
    ));
    // The same around a hedge instead of a retry: held to what a hedge layer may hold.
    rows.push(row(
        "HedgingClientLayer (preset, learned p95)",
        meter.footprint(
            || ok(HedgingClientLayer::builder().build()).layer(http_peer()),
            get,
        ),
        Target {
            built: AT_REST,
            warm: Some(HEDGE_WARM),
            per_key: None,
        },
    ));
    rows
}

/// Formats bytes as `812 B`, `3.2 KiB` or `47.9 KiB`.
///
/// ```
/// use steadfast_benches::memory::bytes;
/// assert_eq!(bytes(812), "812 B");
/// assert_eq!(bytes(3 * 1024 + 205), "3.2 KiB");
/// assert_eq!(bytes(-16), "-16 B");
/// ```
pub fn bytes(n: i64) -> String {
    if n.abs() < 1024 {
        format!("{n} B")
    } else if n.abs() < 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    }
}

/// The table, in Markdown: one line per row. The per-key columns (bytes per key; keys tracked
/// and bytes held after [`CHURN_KEYS`] new keys) appear when a row is keyed, the targets when a
/// row has some.
///
/// ```
/// use steadfast_benches::memory::{table, Footprint, Row, Target};
/// let row = Row {
///     name: "LoadShedLayer".into(),
///     footprint: Footprint { built: 48, warm: 48, failed: 0 },
///     keyed: None,
///     target: Some(Target::FLAT),
/// };
/// assert!(table(&[row.clone()]).contains("| LoadShedLayer | 48 B | 48 B | <= 4.0 KiB / <= 4.0 KiB |"));
/// let peer = Row { target: None, ..row };
/// assert!(table(&[peer]).contains("| LoadShedLayer | 48 B | 48 B |\n"));
/// ```
pub fn table(rows: &[Row]) -> String {
    let keyed = rows.iter().any(|r| r.keyed.is_some());
    let targets = rows.iter().any(|r| r.target.is_some());
    let mut header = vec![
        "Layer".to_owned(),
        "Built".to_owned(),
        format!("After {WARM_UP_CALLS} calls"),
    ];
    let mut align = vec!["---", "---:", "---:"];
    if keyed {
        header.push(format!("Per key (max_keys = {KEYS})"));
        header.push(format!("After {CHURN_KEYS} new keys"));
        align.extend(["---:", "---:"]);
    }
    if targets {
        header.push("Target (built / after)".to_owned());
        align.push("---");
    }
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}|", align.join("|"));
    for r in rows {
        let f = r.footprint;
        let mut cells = vec![r.name.clone(), bytes(f.built), bytes(f.warm)];
        if keyed {
            match r.keyed {
                Some(k) => {
                    cells.push(bytes(k.per_key.round() as i64));
                    cells.push(format!("{} keys, {}", k.tracked, bytes(k.churned)));
                }
                None => cells.extend(["-".to_owned(), "-".to_owned()]),
            }
        }
        if targets {
            cells.push(match r.target {
                Some(Target {
                    built,
                    per_key: Some(per_key),
                    ..
                }) => format!("<= {} / <= {per_key} B per key", bytes(built as i64)),
                Some(Target { built, warm, .. }) => format!(
                    "<= {} / {}",
                    bytes(built as i64),
                    warm.map_or_else(|| "-".to_owned(), |w| format!("<= {}", bytes(w as i64)))
                ),
                None => "-".to_owned(),
            });
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The resident memory of this process, in bytes (`VmRSS` in `/proc/self/status`; `None` where
/// there is no such file).
///
/// ```
/// if cfg!(target_os = "linux") {
///     assert!(steadfast_benches::memory::resident_bytes().unwrap() > 0);
/// }
/// ```
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The clock a scale check runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// tokio's paused clock: deterministic and fast (tests).
    Paused,
    /// The real clock: latencies are slept for real, with the scheduling jitter a real process
    /// sees, so that each hedge histogram meets what it would in production (the bench).
    Real,
}

/// The scale check's findings: `routes` hedging client stacks (one per route, as a per-route
/// configuration builds them), each warmed up with `calls_per_route` calls of the `tail`
/// latencies, every route at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// The clock it ran on.
    pub clock: Clock,
    /// Stacks built.
    pub routes: usize,
    /// Calls per stack in the warm-up.
    pub calls_per_route: u32,
    /// Resident memory before building them (`None` without `/proc`).
    pub rss_before: Option<u64>,
    /// Resident memory once built.
    pub rss_built: Option<u64>,
    /// Resident memory after the warm-up.
    pub rss_warm: Option<u64>,
    /// Bytes the stacks hold when built (counted, as in the table).
    pub held_built: i64,
    /// Bytes they hold after the warm-up.
    pub held_warm: i64,
    /// Warm-up calls that failed.
    pub failed: u32,
}

impl Scale {
    /// Bytes held per route after the warm-up.
    ///
    /// ```
    /// # use steadfast_benches::memory::{Clock, Scale};
    /// let s = Scale { clock: Clock::Paused, routes: 4, calls_per_route: 1, rss_before: None, rss_built: None, rss_warm: None, held_built: 4, held_warm: 400, failed: 0 };
    /// assert_eq!(s.per_route_warm(), 100);
    /// ```
    pub fn per_route_warm(&self) -> i64 {
        self.held_warm / self.routes.max(1) as i64
    }

    /// Bytes held per route when built.
    pub fn per_route_built(&self) -> i64 {
        self.held_built / self.routes.max(1) as i64
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rss = |r: Option<u64>| r.map_or_else(|| "n/a".to_owned(), |b| bytes(b as i64));
        writeln!(
            f,
            "{} HedgingClientLayer stacks, one per route; {} calls each of the tail latencies, \
             all routes at once, on the {} clock",
            self.routes,
            self.calls_per_route,
            match self.clock {
                Clock::Paused => "paused",
                Clock::Real => "real",
            }
        )?;
        writeln!(
            f,
            "  resident memory: {} before, {} built, {} after the warm-up",
            rss(self.rss_before),
            rss(self.rss_built),
            rss(self.rss_warm)
        )?;
        write!(
            f,
            "  counted: {} built ({} per route), {} after the warm-up ({} per route); {} calls \
             failed",
            bytes(self.held_built),
            bytes(self.per_route_built()),
            bytes(self.held_warm),
            bytes(self.per_route_warm()),
            self.failed
        )
    }
}

/// The scale check: builds `routes` [`HedgingClientLayer`] stacks, one per route, each with its
/// own layer (so its own hedge histogram), and warms each up with `calls_per_route` calls, all
/// routes at once, on a current-thread runtime of its own with `clock`; reports resident memory
/// and the bytes counted with `measure` before and after.
///
/// # Errors
///
/// If tokio cannot build the runtime.
pub fn scale(
    measure: Measure,
    clock: Clock,
    routes: usize,
    calls_per_route: u32,
) -> std::io::Result<Scale> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(clock == Clock::Paused)
        .build()?;
    let _context = rt.enter();
    // The runtime's own first-use allocations are not the stacks'.
    rt.block_on(drive(&mut peer(), &|i| i, 0, 100));
    let rss_before = resident_bytes();
    let mut stacks = Vec::new();
    let held_built = measure(&mut || {
        stacks = (0..routes)
            .map(|_| ok(HedgingClientLayer::builder().build()).layer(http_peer()))
            .collect();
    });
    let rss_built = resident_bytes();
    let mut failed = 0;
    reseed(SEED);
    let grew = measure(&mut || {
        let calls = stacks
            .iter_mut()
            .map(|svc| drive(svc, &get, 0, calls_per_route));
        failed = rt
            .block_on(futures::future::join_all(calls))
            .into_iter()
            .sum();
    });
    let rss_warm = resident_bytes();
    drop(stacks);
    Ok(Scale {
        clock,
        routes,
        calls_per_route,
        rss_before,
        rss_built,
        rss_warm,
        held_built,
        held_warm: held_built + grew,
        failed,
    })
}

//! A fault-injecting HTTP/1.1 server (hyper 1) on `127.0.0.1` with an OS-assigned port.
//!
//! What a call meets, in order:
//!
//! 1. **outage**: inside a hard outage window the connection is closed without an answer, or
//!    (with [`OutageKind::Unavailable`]) the call is answered 503 at once;
//! 2. **deadline** (with [`ServerConfig::honor_deadline`]): a call whose `x-request-timeout-ms`
//!    has already run out is answered 504 at once; otherwise the server stops working on it when
//!    that time passes (queueing included) and answers 504;
//! 3. **injected error**: with probability [`ServerConfig::error_rate`], an immediate 503;
//! 4. **capacity** ([`Capacity`]): at most `limit` calls are worked on at once and `queue` more
//!    wait their turn (FIFO); beyond that the call is rejected with a 503. Rejecting is not free
//!    (as the Google SRE book notes): each rejection costs `reject_cost` of worker time, which
//!    the next worker to start a call pays first;
//! 5. **work**: the worker is held for a latency drawn from [`Latency`] (times the factor of any
//!    [`Slowdown`] in force when the call arrived), then (for a server with an
//!    [`Upstream`]) calls the next hop, and answers 200.
//!
//! Work runs in a detached task: like most thread-pool servers, this one does not notice that a
//! client hung up, so work for a caller that has gone is done anyway, unless a deadline stops it.
//! Every random draw comes from a [`SeededRng`] keyed by the seed, the server's name, the logical
//! request id (`x-lab-request-id`) and how many times this server has seen that request, so the
//! same request meets the same faults in every run.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use steadfast_layers::deadline::{Deadline, DeadlineExceeded, DeadlineLayer, DeadlineService};
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_layers::BoxError;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::client::{HttpClient, ATTEMPT_ID, REQUEST_ID};
use crate::ledger::{Ledger, Work};
use crate::load::Record;
use crate::timeline::{CallBins, Timeline, Window, WindowKind};

/// How long the server works on a call it accepted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Shortest.
        min: Duration,
        /// Longest.
        max: Duration,
    },
    /// Usually `fast`, with probability `p_slow` `slow` (each uniform in its range): a tail.
    Bimodal {
        /// Range of the usual latency.
        fast: (Duration, Duration),
        /// Range of the slow latency.
        slow: (Duration, Duration),
        /// Probability of a slow call.
        p_slow: f64,
    },
}

impl Latency {
    /// One draw.
    pub fn sample(&self, rng: &dyn RandomSource) -> Duration {
        fn uniform(rng: &dyn RandomSource, (min, max): (Duration, Duration)) -> Duration {
            min + max.saturating_sub(min).mul_f64(rng.next_f64())
        }
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => uniform(rng, (min, max)),
            Latency::Bimodal { fast, slow, p_slow } => {
                if rng.next_f64() < p_slow {
                    uniform(rng, slow)
                } else {
                    uniform(rng, fast)
                }
            }
        }
    }

    /// A short description, for reports.
    pub fn describe(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        match *self {
            Latency::Fixed(d) => format!("{} ms", ms(d)),
            Latency::Uniform { min, max } => format!("{}-{} ms", ms(min), ms(max)),
            Latency::Bimodal { fast, slow, p_slow } => format!(
                "{}-{} ms, {:.0}% slow at {}-{} ms",
                ms(fast.0),
                ms(fast.1),
                p_slow * 100.0,
                ms(slow.0),
                ms(slow.1)
            ),
        }
    }
}

/// A hard outage: from `start` (after the server started) for `duration`, every call meets the
/// server's [`OutageKind`] (by default its connection is closed without an answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// When it begins, after the server started.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
}

/// A slowdown: from `start` (after the server started) for `duration`, every call's drawn
/// latency is multiplied by `factor` (a noisy neighbour, a garbage-collection storm, a cold
/// cache after a deploy: the whole server is slower for a while, not just its tail).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slowdown {
    /// When it begins, after the server started.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
    /// What each latency is multiplied by.
    pub factor: f64,
}

/// What a call meets during an [`Outage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutageKind {
    /// The connection is closed without an answer (a handler that crashes).
    #[default]
    Drop,
    /// An immediate 503: the service, or the proxy in front of it, is up but cannot serve (its
    /// database is unreachable, or no backend is healthy: Envoy's "no healthy upstream").
    Unavailable,
}

/// A capacity limit: `limit` calls worked on at once, `queue` more waiting, the rest rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Calls worked on concurrently.
    pub limit: usize,
    /// Calls waiting for a worker, beyond which calls are rejected with a 503.
    pub queue: usize,
    /// Worker time each rejection costs (parsing, authenticating, answering).
    pub reject_cost: Duration,
}

/// The client a server uses to call its next hop: it enforces the deadline inherited from the
/// handler's scope ([`DeadlineLayer::inherit`]) and forwards the remaining time.
pub type UpstreamClient = DeadlineService<HttpClient>;

/// The next hop a server calls once its own work is done.
#[derive(Clone, Debug)]
pub struct Upstream {
    uri: Uri,
    client: UpstreamClient,
}

impl Upstream {
    /// Calls `uri` through `http`, wrapped in [`DeadlineLayer::inherit`]; when `propagate` is
    /// `Some(margin)` the remaining deadline, less `margin`, is sent in `x-request-timeout-ms`.
    pub fn new(uri: Uri, http: HttpClient, propagate: Option<Duration>) -> Self {
        let http = match propagate {
            Some(margin) => http.propagate_deadline(margin),
            None => http,
        };
        Upstream {
            uri,
            client: DeadlineLayer::inherit().layer(http),
        }
    }

    async fn call(&self, request: Option<u64>) -> StatusCode {
        let mut builder = Request::get(self.uri.clone());
        if let Some(id) = request {
            builder = builder.header(REQUEST_ID, id);
        }
        let Ok(req) = builder.body(Full::new(Bytes::new())) else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        match self.client.clone().oneshot(req).await {
            Ok(res) if res.status().is_success() => StatusCode::OK,
            Ok(_) => StatusCode::BAD_GATEWAY,
            Err(e) if e.is::<DeadlineExceeded>() => StatusCode::GATEWAY_TIMEOUT,
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Everything a server does to the calls it gets.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    name: &'static str,
    seed: u64,
    error_rate: f64,
    latency: Latency,
    outages: Vec<Outage>,
    slowdowns: Vec<Slowdown>,
    outage_kind: OutageKind,
    capacity: Option<Capacity>,
    honor_deadline: bool,
    upstream: Option<Upstream>,
    ledger: Option<Arc<Ledger>>,
}

impl ServerConfig {
    /// A healthy server called `name`: no errors, no latency, no limit, deadlines ignored.
    pub fn new(name: &'static str, seed: u64) -> Self {
        ServerConfig {
            name,
            seed,
            error_rate: 0.0,
            latency: Latency::Fixed(Duration::ZERO),
            outages: Vec::new(),
            slowdowns: Vec::new(),
            outage_kind: OutageKind::Drop,
            capacity: None,
            honor_deadline: false,
            upstream: None,
            ledger: None,
        }
    }

    /// Answers this share of calls (in `[0, 1]`) with an immediate 503.
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// How long each accepted call is worked on.
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// Adds a hard outage window.
    pub fn outage(mut self, outage: Outage) -> Self {
        self.outages.push(outage);
        self
    }

    /// Adds a slowdown window (see [`Slowdown`]; overlapping windows multiply).
    /// A factor that is not a finite number in `[0, 1000]` is clamped into it (NaN counts as 1).
    pub fn slowdown(mut self, mut slowdown: Slowdown) -> Self {
        slowdown.factor = if slowdown.factor.is_nan() {
            1.0
        } else {
            slowdown.factor.clamp(0.0, 1000.0)
        };
        self.slowdowns.push(slowdown);
        self
    }

    /// What calls meet during the outage windows (default [`OutageKind::Drop`]).
    pub fn outage_kind(mut self, kind: OutageKind) -> Self {
        self.outage_kind = kind;
        self
    }

    /// Limits concurrency (see [`Capacity`]).
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Reads `x-request-timeout-ms` and stops working on a call when it runs out; the handler
    /// runs in [`Deadline::scope`] so that calls to the [`Upstream`] inherit it.
    pub fn honor_deadline(mut self, honor: bool) -> Self {
        self.honor_deadline = honor;
        self
    }

    /// Calls `upstream` after the local work.
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Records every call's work in `ledger`.
    pub fn ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }
}

/// Counters of what a server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Calls received (every attempt that reached the server).
    pub calls: u64,
    /// Connections closed during an outage ([`OutageKind::Drop`]).
    pub dropped_in_outage: u64,
    /// Calls answered 503 during an outage ([`OutageKind::Unavailable`]).
    pub unavailable_in_outage: u64,
    /// Injected 503s.
    pub injected_errors: u64,
    /// Calls rejected (503) by the capacity limit.
    pub rejected: u64,
    /// Calls whose deadline had passed on arrival (504, no work).
    pub expired_on_arrival: u64,
    /// Calls stopped by their deadline, while queued or working (504).
    pub stopped_by_deadline: u64,
    /// Calls worked on and answered 200.
    pub served: u64,
    /// Calls worked on whose upstream call failed (502 or 504).
    pub upstream_failed: u64,
    /// Total worker time, rejection costs included.
    pub busy: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    dropped_in_outage: AtomicU64,
    unavailable_in_outage: AtomicU64,
    injected_errors: AtomicU64,
    rejected: AtomicU64,
    expired_on_arrival: AtomicU64,
    stopped_by_deadline: AtomicU64,
    served: AtomicU64,
    upstream_failed: AtomicU64,
    busy_nanos: AtomicU64,
    in_flight: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Shared {
    cfg: ServerConfig,
    salt: u64,
    started: Instant,
    counters: Counters,
    seen: Mutex<HashMap<u64, u32>>,
    anonymous: AtomicU64,
    permits: Option<Semaphore>,
    in_system: AtomicUsize,
    debt_nanos: AtomicU64,
    /// Calls per 100 ms since `started`, for the HTML report's time series.
    bins: CallBins,
}

impl Shared {
    /// A server's state, its windows measured from now.
    fn new(cfg: ServerConfig, salt: u64) -> Self {
        let permits = cfg.capacity.map(|c| Semaphore::new(c.limit));
        Shared {
            cfg,
            salt,
            started: Instant::now(),
            counters: Counters::default(),
            seen: Mutex::new(HashMap::new()),
            anonymous: AtomicU64::new(0),
            permits,
            in_system: AtomicUsize::new(0),
            debt_nanos: AtomicU64::new(0),
            bins: CallBins::new(),
        }
    }

    /// Whether `now` falls in the window of `duration` that opens `start` after the server
    /// started (outages and slowdowns are such windows).
    fn in_window(&self, now: Instant, start: Duration, duration: Duration) -> bool {
        now.saturating_duration_since(self.started)
            .checked_sub(start)
            .is_some_and(|into| into < duration)
    }

    fn in_outage(&self, now: Instant) -> bool {
        self.cfg
            .outages
            .iter()
            .any(|o| self.in_window(now, o.start, o.duration))
    }

    /// What the latency of a call arriving at `now` is multiplied by (1 outside slowdowns).
    fn slowdown(&self, now: Instant) -> f64 {
        self.cfg
            .slowdowns
            .iter()
            .filter(|s| self.in_window(now, s.start, s.duration))
            .map(|s| s.factor)
            .product()
    }

    /// How many times this server has seen `key` before (0 on the first attempt).
    fn nth_call(&self, key: u64) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let n = seen.entry(key).or_insert(0);
        let nth = *n;
        *n += 1;
        nth
    }

    fn admit(&self, cap: &Capacity) -> bool {
        let before = self.in_system.fetch_add(1, Ordering::AcqRel);
        if before < cap.limit + cap.queue {
            true
        } else {
            self.in_system.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }
}

/// A running server. Dropping it stops accepting and closes its connections; work already
/// started finishes in the background.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    uri: Uri,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(cfg: ServerConfig) -> Result<Server, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let uri: Uri = format!("http://{addr}/").parse()?;
        let salt = cfg.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let shared = Arc::new(Shared::new(cfg, salt));
        let (shutdown, stop) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop));
        Ok(Server {
            addr,
            uri,
            shared,
            accept,
            shutdown,
        })
    }

    /// When it started: [`Outage`] windows are measured from this instant.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Its counters so far.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            calls: get(&c.calls),
            dropped_in_outage: get(&c.dropped_in_outage),
            unavailable_in_outage: get(&c.unavailable_in_outage),
            injected_errors: get(&c.injected_errors),
            rejected: get(&c.rejected),
            expired_on_arrival: get(&c.expired_on_arrival),
            stopped_by_deadline: get(&c.stopped_by_deadline),
            served: get(&c.served),
            upstream_failed: get(&c.upstream_failed),
            busy: Duration::from_nanos(get(&c.busy_nanos)),
        }
    }

    /// Calls received for the logical requests whose ids (`x-lab-request-id`) are in `ids`,
    /// every attempt counted. (Calls without an id are kept under keys from 2^63 up.)
    pub fn calls_for(&self, ids: impl RangeBounds<u64>) -> u64 {
        let seen = self.shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(id, _)| ids.contains(*id))
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// Calls received per [`BIN`](crate::timeline::BIN) since [`started`](Self::started), every
    /// attempt counted, up to the last bin that got one.
    pub fn calls_per_bin(&self) -> Vec<u64> {
        self.shared.bins.counts()
    }

    /// Its outage and slowdown windows, measured from [`started`](Self::started).
    pub fn windows(&self) -> Vec<Window> {
        let cfg = &self.shared.cfg;
        let outages = cfg.outages.iter().map(|o| Window {
            kind: WindowKind::Outage,
            start: o.start,
            end: o.start + o.duration,
        });
        let slowdowns = cfg.slowdowns.iter().map(|s| Window {
            kind: WindowKind::Slowdown,
            start: s.start,
            end: s.start + s.duration,
        });
        outages.chain(slowdowns).collect()
    }

    /// What a run of `records` against this server looked like over time, from its start: the
    /// requests' outcomes, its calls and its windows (see [`Timeline`]).
    pub fn timeline(&self, records: &[Record]) -> Timeline {
        Timeline::from_records(self.started(), records)
            .server_calls(self.calls_per_bin())
            .windows(self.windows())
    }

    /// Calls being queued or worked on right now.
    pub fn in_flight(&self) -> u64 {
        self.shared.counters.in_flight.load(Ordering::Acquire)
    }

    /// Waits until no call is queued or worked on (callers may have gone; the work goes on), at
    /// most `max`. Returns whether it drained.
    pub async fn drain(&self, max: Duration) -> bool {
        let until = Instant::now() + max;
        while self.in_flight() > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(server = shared.cfg.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        });
    }
}

/// Closes the connection without an answer (a hard outage).
#[derive(Debug)]
struct OutageDrop;

impl fmt::Display for OutageDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hard outage: connection closed")
    }
}

impl std::error::Error for OutageDrop {}

fn header_u64<B>(req: &Request<B>, name: &str) -> Option<u64> {
    req.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"")));
    *res.status_mut() = status;
    res
}

/// Mixes the seed and a call's identity into one generator seed.
fn mix(seed: u64, salt: u64, key: u64, nth: u32) -> u64 {
    [salt, key, u64::from(nth)]
        .into_iter()
        .fold(seed ^ 0x5851_f42d_4c95_7f2d, |h, v| {
            (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
        })
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let arrived = Instant::now();
    let c = &shared.counters;
    bump(&c.calls);
    shared.bins.record(shared.started, arrived);
    let request = header_u64(&req, REQUEST_ID);
    let attempt = header_u64(&req, ATTEMPT_ID);
    let key =
        request.unwrap_or_else(|| (1 << 63) | shared.anonymous.fetch_add(1, Ordering::Relaxed));
    // Counted before the outage check, so that every call of a request counts (`calls_for`).
    let nth = shared.nth_call(key);
    if shared.in_outage(arrived) {
        return match shared.cfg.outage_kind {
            OutageKind::Drop => {
                bump(&c.dropped_in_outage);
                Err(Box::new(OutageDrop))
            }
            OutageKind::Unavailable => {
                bump(&c.unavailable_in_outage);
                Ok(answer(StatusCode::SERVICE_UNAVAILABLE))
            }
        };
    }
    let rng = SeededRng::new(mix(shared.cfg.seed, shared.salt, key, nth));
    let deadline = if shared.cfg.honor_deadline {
        req.headers()
            .get(&steadfast_http::codec::REQUEST_TIMEOUT_MS)
            .and_then(|v| steadfast_http::codec::decode_timeout_ms(v.as_bytes()).ok())
            .and_then(|timeout| Deadline::from_timeout_at(arrived, timeout))
    } else {
        None
    };
    if deadline.is_some_and(|d| d.is_expired_at(arrived)) {
        bump(&c.expired_on_arrival);
        return Ok(answer(StatusCode::GATEWAY_TIMEOUT));
    }
    // Draw every random number up front, in a fixed order, so that a call's faults do not depend
    // on which branch it takes.
    let fails = rng.next_f64() < shared.cfg.error_rate;
    let work = shared
        .cfg
        .latency
        .sample(&rng)
        .mul_f64(shared.slowdown(arrived));
    if fails {
        bump(&c.injected_errors);
        return Ok(answer(StatusCode::SERVICE_UNAVAILABLE));
    }
    let mut admitted = false;
    if let Some(cap) = &shared.cfg.capacity {
        if !shared.admit(cap) {
            bump(&c.rejected);
            shared
                .debt_nanos
                .fetch_add(nanos(cap.reject_cost), Ordering::AcqRel);
            c.busy_nanos
                .fetch_add(nanos(cap.reject_cost), Ordering::Relaxed);
            return Ok(answer(StatusCode::SERVICE_UNAVAILABLE));
        }
        admitted = true;
    }
    let job = Job {
        shared: Arc::clone(&shared),
        request,
        attempt,
        work,
        deadline,
        admitted,
    };
    // Detached: the work goes on if the client hangs up.
    let status = tokio::spawn(job.run()).await?;
    Ok(answer(status))
}

/// One accepted call, worked on in its own task.
struct Job {
    shared: Arc<Shared>,
    request: Option<u64>,
    attempt: Option<u64>,
    work: Duration,
    deadline: Option<Deadline>,
    admitted: bool,
}

/// Counts a job in flight (and in the capacity limit's system) until it ends.
struct InFlight<'a> {
    shared: &'a Shared,
    admitted: bool,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, admitted: bool) -> Self {
        shared.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { shared, admitted }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.admitted {
            self.shared.in_system.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared
            .counters
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Job {
    async fn run(self) -> StatusCode {
        let shared = &*self.shared;
        let _in_flight = InFlight::enter(shared, self.admitted);
        let started = OnceLock::new();
        let work = async {
            let _permit = match &shared.permits {
                Some(sem) => match sem.acquire().await {
                    Ok(p) => Some(p),
                    Err(_) => return StatusCode::SERVICE_UNAVAILABLE,
                },
                None => None,
            };
            // Rejections cost worker time too: pay what has accumulated before this call's work
            // (counted as busy when incurred, so not part of this call's work below).
            let debt = Duration::from_nanos(shared.debt_nanos.swap(0, Ordering::AcqRel));
            if !debt.is_zero() {
                tokio::time::sleep(debt).await;
            }
            let _ = started.set(Instant::now());
            tokio::time::sleep(self.work).await;
            match &shared.cfg.upstream {
                Some(up) => up.call(self.request).await,
                None => StatusCode::OK,
            }
        };
        let outcome = match self.deadline {
            Some(d) => d
                .scope(tokio::time::timeout_at(d.instant(), work))
                .await
                .ok(),
            None => Some(work.await),
        };
        let ended = Instant::now();
        let c = &shared.counters;
        let status = match outcome {
            Some(StatusCode::OK) => {
                bump(&c.served);
                StatusCode::OK
            }
            Some(other) => {
                bump(&c.upstream_failed);
                other
            }
            None => {
                bump(&c.stopped_by_deadline);
                StatusCode::GATEWAY_TIMEOUT
            }
        };
        if let Some(&started) = started.get() {
            let worked = ended.saturating_duration_since(started);
            c.busy_nanos.fetch_add(nanos(worked), Ordering::Relaxed);
            if let Some(ledger) = &shared.cfg.ledger {
                ledger.record_work(Work {
                    server: shared.cfg.name,
                    request: self.request,
                    attempt: self.attempt,
                    started,
                    ended,
                    served: status == StatusCode::OK,
                });
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_stays_in_range() {
        let rng = SeededRng::new(3);
        let ms = Duration::from_millis;
        let l = Latency::Bimodal {
            fast: (ms(1), ms(2)),
            slow: (ms(10), ms(20)),
            p_slow: 0.5,
        };
        let (mut fast, mut slow) = (0, 0);
        for _ in 0..1000 {
            let d = l.sample(&rng);
            if d <= ms(2) {
                assert!(d >= ms(1));
                fast += 1;
            } else {
                assert!(d >= ms(10) && d <= ms(20));
                slow += 1;
            }
        }
        assert!(fast > 400 && slow > 400, "{fast} {slow}");
        assert_eq!(Latency::Fixed(ms(4)).sample(&rng), ms(4));
    }

    #[test]
    fn absurd_slowdown_factors_are_clamped() {
        let window = |factor| Slowdown {
            start: Duration::ZERO,
            duration: Duration::from_secs(1),
            factor,
        };
        let cfg = ServerConfig::new("s", 1)
            .slowdown(window(f64::NAN))
            .slowdown(window(-2.0))
            .slowdown(window(f64::INFINITY))
            .slowdown(window(2.5));
        let factors: Vec<f64> = cfg.slowdowns.iter().map(|s| s.factor).collect();
        assert_eq!(factors, [1.0, 0.0, 1000.0, 2.5]);
    }

    /// Outage and slowdown windows open and close on the server's clock, measured from its
    /// start: before, inside and after, computed from instants (no clock runs: the real-socket
    /// tests in `tests/server.rs` check that the handler applies them).
    #[test]
    fn windows_open_and_close_on_time() {
        let ms = Duration::from_millis;
        let cfg = ServerConfig::new("w", 1)
            .outage(Outage {
                start: ms(100),
                duration: ms(200),
            })
            .slowdown(Slowdown {
                start: ms(200),
                duration: ms(300),
                factor: 3.0,
            })
            .slowdown(Slowdown {
                start: ms(400),
                duration: ms(200),
                factor: 2.0,
            });
        let shared = Shared::new(cfg, 0);
        let t0 = shared.started;
        let outage: Vec<bool> = [0, 99, 100, 299, 300, 1_000]
            .map(|t| shared.in_outage(t0 + ms(t)))
            .to_vec();
        assert_eq!(outage, [false, false, true, true, false, false]);
        let factors: Vec<f64> = [0, 199, 200, 399, 400, 499, 500, 599, 600]
            .map(|t| shared.slowdown(t0 + ms(t)))
            .to_vec();
        assert_eq!(factors, [1.0, 1.0, 3.0, 3.0, 6.0, 6.0, 2.0, 2.0, 1.0]);
    }

    #[test]
    fn mixing_separates_attempts_and_seeds() {
        assert_ne!(mix(1, 2, 3, 0), mix(1, 2, 3, 1));
        assert_ne!(mix(1, 2, 3, 0), mix(2, 2, 3, 0));
        assert_eq!(mix(1, 2, 3, 0), mix(1, 2, 3, 0));
    }
}

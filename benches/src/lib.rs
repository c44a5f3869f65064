//! Shared helpers for the `steadfast` benchmarks.
//!
//! The `overhead` bench measures the per-call cost of each steadfast layer beside its tower
//! counterpart, the way the project's reference table does: an always-ready inner service that
//! answers at once ([`Echo`]), one `ready()` + `call()` + `.await` per iteration
//! ([`run_calls`]), on a current-thread runtime ([`runtime`]). After criterion has run, it
//! prints a summary of steadfast / tower medians ([`summary_table`]) read back from the
//! estimates criterion wrote in the same run ([`read_median_ns`]).
//!
//! The `layers` bench does the same for each layer beside its nearest peer (tower,
//! `tower-resilience`, `failsafe`), possibly several peers per group, rejections included
//! ([`run_rejected_calls`]), and prints [`comparison_table`] with a [`Target`] per row.
//!
//! The `stacks` bench measures what the layers cost together (two-, four- and five-layer stacks
//! beside tower's, instant and [`PendingOnce`]) and on their refusal paths, beside tower,
//! failsafe and seatbelt (`docs/adr/0008-stack-cost.md`); `examples/callgrind.rs` drives the same
//! shapes for instruction counts under valgrind.
//!
//! The `memory` bench and test count the bytes each layer holds, built, warmed up and per key
//! (the `memory` module, with the `memory` feature).
//!
//! This package deliberately does not enable tokio's `test-util` feature, except under the
//! `memory` feature (which the timing benches must not be run with): with it, every
//! `tokio::time::Instant::now()` goes through tokio's mockable clock, which would change the
//! cost of the clock reads these benchmarks exist to measure.

#[cfg(feature = "memory")]
pub mod memory;

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::future::{ready, Ready};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;
use tower::{Service, ServiceExt};

/// The timeout given to every timeout or deadline layer on both sides: long enough never to fire.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Attempts per call (first included) for every retry layer on both sides.
pub const MAX_ATTEMPTS: u32 = 3;

/// Set this environment variable (to anything but `0` or empty) for short criterion runs.
pub const QUICK_ENV: &str = "STEADFAST_BENCH_QUICK";

/// Whether [`QUICK_ENV`] asks for a quick run.
///
/// ```
/// if steadfast_benches::quick_mode() {
///     assert!(std::env::var_os(steadfast_benches::QUICK_ENV).is_some());
/// }
/// ```
pub fn quick_mode() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// An always-ready service that fails every request at once, with an `io::Error` of kind
/// `ConnectionRefused` (built without allocating): what trips a circuit breaker.
///
/// ```
/// use tower::ServiceExt;
/// # let rt = steadfast_benches::runtime().unwrap();
/// # rt.block_on(async {
/// let err = steadfast_benches::Refuse.oneshot(7).await.unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Refuse;

impl Service<u32> for Refuse {
    type Response = u32;
    type Error = std::io::Error;
    type Future = Ready<Result<u32, std::io::Error>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, _req: u32) -> Self::Future {
        ready(Err(std::io::ErrorKind::ConnectionRefused.into()))
    }
}

/// An always-ready service that answers each request with itself, at once (a zero-sized type,
/// like a `service_fn` over `std::future::ready`).
///
/// ```
/// use tower::ServiceExt;
/// # let rt = steadfast_benches::runtime().unwrap();
/// # rt.block_on(async {
/// assert_eq!(steadfast_benches::Echo.oneshot(7).await, Ok(7));
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service<u32> for Echo {
    type Response = u32;
    type Error = Infallible;
    type Future = Ready<Result<u32, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u32) -> Self::Future {
        ready(Ok(req))
    }
}

/// An always-ready service whose every call is pending once before it answers with its request:
/// the first poll wakes the task and returns `Pending`, the second returns the answer. It makes
/// every timeout and deadline layer above it arm its timer, as a call that goes over the network
/// does (a zero-sized type; its future is one flag and the request).
///
/// ```
/// use tower::ServiceExt;
/// # let rt = steadfast_benches::runtime().unwrap();
/// # rt.block_on(async {
/// assert_eq!(steadfast_benches::PendingOnce.oneshot(7).await, Ok(7));
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingOnce;

/// The future of [`PendingOnce`]: pending on its first poll, ready on the next.
#[derive(Debug)]
pub struct PendingOnceFuture {
    req: u32,
    polled: bool,
}

impl std::future::Future for PendingOnceFuture {
    type Output = Result<u32, Infallible>;

    #[inline]
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polled {
            return Poll::Ready(Ok(self.req));
        }
        self.polled = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Service<u32> for PendingOnce {
    type Response = u32;
    type Error = Infallible;
    type Future = PendingOnceFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u32) -> Self::Future {
        PendingOnceFuture { req, polled: false }
    }
}

/// The runtime every benchmark runs on: current-thread, with the time driver (tower's
/// `Timeout` needs it) and nothing else.
///
/// # Errors
///
/// If tokio cannot build the runtime.
pub fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
}

/// Makes `iters` calls on `svc`, each one `ready()` + `call()` + `.await`, and returns the time
/// they took. Meant for criterion's `iter_custom` inside `Runtime::block_on`.
///
/// # Panics
///
/// If the service fails: every benchmarked call is expected to succeed.
///
/// ```
/// # let rt = steadfast_benches::runtime().unwrap();
/// let mut svc = steadfast_benches::Echo;
/// let took = rt.block_on(steadfast_benches::run_calls(&mut svc, 10));
/// assert!(took < std::time::Duration::from_secs(1));
/// ```
pub async fn run_calls<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<u32, Response = u32>,
    S::Error: fmt::Debug,
{
    let start = Instant::now();
    for i in 0..iters {
        let ready = svc.ready().await.expect("benchmarked service is ready");
        let out = ready
            .call(black_box(i as u32))
            .await
            .expect("benchmarked call succeeds");
        black_box(out);
    }
    start.elapsed()
}

/// Makes `iters` calls on `svc` that it is expected to refuse (an open circuit breaker): each
/// one `ready()` + `call()` + `.await`, the call failing. Returns the time they took.
///
/// # Panics
///
/// If the service is not ready or a call succeeds.
///
/// ```
/// # let rt = steadfast_benches::runtime().unwrap();
/// let mut svc = steadfast_benches::Refuse;
/// let took = rt.block_on(steadfast_benches::run_rejected_calls(&mut svc, 10));
/// assert!(took < std::time::Duration::from_secs(1));
/// ```
pub async fn run_rejected_calls<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<u32>,
    S::Error: fmt::Debug,
{
    let start = Instant::now();
    for i in 0..iters {
        let ready = svc.ready().await.expect("benchmarked service is ready");
        let out = ready.call(black_box(i as u32)).await;
        assert!(out.is_err(), "benchmarked call is rejected");
        black_box(out.err());
    }
    start.elapsed()
}

/// tower's retry policy from the `tower::retry::budget` docs example, with a [`TpsBudget`]:
/// deposit on every success, withdraw before every retry. It also stops after
/// [`MAX_ATTEMPTS`] attempts like the steadfast layer it is compared with (a counter in the
/// per-call clone of the policy, untouched on the success path).
#[derive(Clone, Debug)]
pub struct TpsBudgetPolicy {
    budget: Arc<TpsBudget>,
    retries_left: u32,
}

impl TpsBudgetPolicy {
    /// Finagle's defaults, as steadfast's default `RatioBudget`: ttl 10 s, 10 retries per second,
    /// 20 % of requests.
    pub fn finagle() -> Self {
        Self {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            retries_left: MAX_ATTEMPTS - 1,
        }
    }
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for TpsBudgetPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                // Treat all responses as success: deposit and do not retry.
                self.budget.deposit();
                None
            }
            Err(_) => {
                if self.retries_left == 0 || !self.budget.withdraw() {
                    return None;
                }
                self.retries_left -= 1;
                Some(ready(()))
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// tower's retry policy with no budget: every error is retried, up to [`MAX_ATTEMPTS`] attempts.
#[derive(Clone, Copy, Debug)]
pub struct AttemptsPolicy {
    retries_left: u32,
}

impl Default for AttemptsPolicy {
    fn default() -> Self {
        Self {
            retries_left: MAX_ATTEMPTS - 1,
        }
    }
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for AttemptsPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(_) if self.retries_left == 0 => None,
            Err(_) => {
                self.retries_left -= 1;
                Some(ready(()))
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// One steadfast-vs-tower comparison: a criterion group with one benchmark per side.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// Criterion group name (also the directory under the criterion output directory).
    pub group: &'static str,
    /// What is compared, for the summary table.
    pub label: &'static str,
    /// Whether the issue sets a target (ratio <= 1.0) for this pair; the others are reported
    /// for information.
    pub targeted: bool,
}

/// Benchmark id of the steadfast side in every group.
pub const OURS: &str = "steadfast";
/// Benchmark id of the tower side in every group.
pub const THEIRS: &str = "tower";
/// Group of the bare inner service (the baseline): one benchmark, with id [`BARE_ID`].
pub const BARE_GROUP: &str = "bare";
/// Benchmark id of the bare inner service.
pub const BARE_ID: &str = "echo";

/// Every comparison the `overhead` bench runs, in order.
pub const PAIRS: &[Pair] = &[
    Pair {
        group: "deadline",
        label: "DeadlineLayer vs tower Timeout",
        targeted: true,
    },
    Pair {
        group: "attempt_timeout",
        label: "AttemptTimeoutLayer vs tower Timeout",
        targeted: true,
    },
    Pair {
        group: "retry_budget",
        label: "RetryLayer (RatioBudget) vs tower Retry (TpsBudget)",
        targeted: true,
    },
    Pair {
        group: "retry_no_budget",
        label: "RetryLayer (no budget) vs tower Retry (no budget)",
        targeted: false,
    },
    Pair {
        group: "stack",
        label: "deadline + retry(budget) vs timeout + retry(TpsBudget)",
        targeted: true,
    },
];

/// Where criterion writes its estimates: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
/// else the workspace's `target/criterion`. The bench hands this directory to criterion
/// explicitly, so that it reads back exactly what criterion wrote.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("criterion")
}

/// The median point estimate, in nanoseconds per call, of benchmark `group/id` from
/// `dir/<group>/<id>/new/estimates.json`, or `None` when there is none or it was written before
/// `not_before` (a leftover of an earlier run: criterion writes none in `--test` mode or for a
/// benchmark filtered out).
pub fn read_median_ns(
    dir: &Path,
    group: &str,
    id: &str,
    not_before: Option<FileTime>,
) -> Option<f64> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    if let Some(t0) = not_before {
        let written = FileTime::of(&path)?;
        if written < t0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

/// A file modification time, compared only with another one (so no wall-clock arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileTime(Duration);

impl FileTime {
    /// The modification time of `path`, as time since the Unix epoch.
    pub fn of(path: &Path) -> Option<Self> {
        let modified = std::fs::metadata(path).ok()?.modified().ok()?;
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(FileTime)
    }

    /// The time "now" as the file system sees it: the modification time of a file just written
    /// in `dir` (created if needed).
    pub fn now_in(dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let marker = dir.join(".steadfast-run-start");
        std::fs::write(&marker, b"").ok()?;
        Self::of(&marker)
    }
}

/// Medians of the two sides of a pair measured in alternation, in the same process: `rounds`
/// rounds, each timing `calls` calls on `ours` then `calls` calls on `theirs`. On a shared
/// machine whose load drifts, alternating keeps both sides under the same conditions, so their
/// ratio is steadier than that of two criterion benchmarks run one after the other.
///
/// Returns `(ours, theirs)` in ns per call.
///
/// ```
/// # let rt = steadfast_benches::runtime().unwrap();
/// use steadfast_benches::Echo;
/// let (a, b) = steadfast_benches::interleaved_medians(&rt, &mut Echo, &mut Echo, 3, 1_000);
/// assert!(a > 0.0 && b > 0.0);
/// ```
pub fn interleaved_medians<A, B>(
    rt: &Runtime,
    ours: &mut A,
    theirs: &mut B,
    rounds: usize,
    calls: u64,
) -> (f64, f64)
where
    A: Service<u32, Response = u32>,
    A::Error: fmt::Debug,
    B: Service<u32, Response = u32>,
    B::Error: fmt::Debug,
{
    interleaved_runs(
        |n| rt.block_on(run_calls(ours, n)),
        |n| rt.block_on(run_calls(theirs, n)),
        rounds,
        calls,
    )
}

/// [`interleaved_medians`] for any two ways of timing `n` calls (for instance
/// [`run_rejected_calls`] on a runtime): warms both up, then `rounds` rounds of `calls` calls on
/// `ours` then `calls` calls on `theirs`.
///
/// Returns the medians `(ours, theirs)` in ns per call.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = steadfast_benches::interleaved_runs(
///     |n| Duration::from_nanos(2 * n),
///     |n| Duration::from_nanos(4 * n),
///     3,
///     100,
/// );
/// assert_eq!((a, b), (2.0, 4.0));
/// ```
pub fn interleaved_runs(
    mut ours: impl FnMut(u64) -> Duration,
    mut theirs: impl FnMut(u64) -> Duration,
    rounds: usize,
    calls: u64,
) -> (f64, f64) {
    let per_call = |d: Duration| d.as_secs_f64() * 1e9 / calls.max(1) as f64;
    // Warm both up first.
    ours(calls);
    theirs(calls);
    let mut a = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        a.push(per_call(ours(calls)));
        b.push(per_call(theirs(calls)));
    }
    (median(&mut a), median(&mut b))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The summary printed after the criterion groups: one row per [`Pair`] with the steadfast
/// median, the tower median and their ratio (steadfast / tower; the target is at most 1.0), as
/// criterion estimated them, then the ratio of the [`interleaved_medians`] cross-check.
///
/// `median(group, id)` returns criterion's median in ns, or `None` if that benchmark did not
/// run; `interleaved(group)` returns the interleaved `(steadfast, tower)` medians, if measured.
/// The verdict follows criterion's ratio.
///
/// ```
/// let table = steadfast_benches::summary_table(
///     |_, id| Some(if id == "steadfast" { 5.0 } else { 10.0 }),
///     |_| Some((6.0, 10.0)),
/// );
/// assert!(table.contains("0.50") && table.contains("0.60"));
/// ```
pub fn summary_table(
    median: impl Fn(&str, &str) -> Option<f64>,
    interleaved: impl Fn(&str) -> Option<(f64, f64)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsteadfast / tower, median ns per call (ready + call + await, current-thread runtime)"
    );
    if let Some(bare) = median(BARE_GROUP, BARE_ID) {
        let _ = writeln!(out, "bare service (baseline): {bare:.1} ns");
    }
    let _ = writeln!(
        out,
        "{:<56} {:>9} {:>9} {:>6} {:>7}  target <= 1.0 (info: no target)",
        "pair (criterion medians; interleaved A/B ratio)", "steadfast", "tower", "ratio", "interl."
    );
    for pair in PAIRS {
        let ours = median(pair.group, OURS);
        let theirs = median(pair.group, THEIRS);
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let (ratio, verdict) = match (ours, theirs) {
            (Some(o), Some(t)) if t > 0.0 => {
                let r = o / t;
                let verdict = match (pair.targeted, r <= 1.0) {
                    (false, _) => "info",
                    (true, true) => "ok",
                    (true, false) => "MISSED",
                };
                (format!("{r:.2}"), verdict)
            }
            _ => ("-".to_owned(), "not run"),
        };
        let cross = interleaved(pair.group)
            .filter(|(_, t)| *t > 0.0)
            .map_or_else(|| "-".to_owned(), |(o, t)| format!("{:.2}", o / t));
        let _ = writeln!(
            out,
            "{:<56} {:>9} {:>9} {:>6} {:>7}  {}",
            pair.label,
            cell(ours),
            cell(theirs),
            ratio,
            cross,
            verdict
        );
    }
    out
}

/// What a steadfast / peer ratio should be, for a [`Comparison`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Strictly below this ratio.
    Below(f64),
    /// At most this ratio.
    AtMost(f64),
    /// No target: measured for information.
    Report,
}

impl Target {
    /// Whether `ratio` meets the target (`None` for [`Target::Report`]).
    ///
    /// ```
    /// use steadfast_benches::Target;
    /// assert_eq!(Target::Below(1.0).met(1.0), Some(false));
    /// assert_eq!(Target::AtMost(1.0).met(1.0), Some(true));
    /// assert_eq!(Target::Report.met(3.0), None);
    /// ```
    pub fn met(self, ratio: f64) -> Option<bool> {
        match self {
            Target::Below(t) => Some(ratio < t),
            Target::AtMost(t) => Some(ratio <= t),
            Target::Report => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Below(t) => write!(f, "< {t:.1}"),
            Target::AtMost(t) => write!(f, "<= {t:.1}"),
            Target::Report => f.write_str("-"),
        }
    }
}

/// One row of a [`comparison_table`]: benchmark [`OURS`] of criterion group `group` against
/// benchmark `peer` of the same group (none: steadfast alone, no ratio).
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// Criterion group name.
    pub group: &'static str,
    /// Benchmark id of the peer in that group, if any.
    pub peer: Option<&'static str>,
    /// What is compared, for the table.
    pub label: &'static str,
    /// What the ratio steadfast / peer should be.
    pub target: Target,
}

/// A summary like [`summary_table`] for any peers: one row per [`Comparison`] with the steadfast
/// median, the peer median and their ratio (steadfast / peer) as criterion estimated them, the
/// ratio of the [`interleaved_runs`] cross-check, the target and the verdict. The verdict
/// follows criterion's ratio; when the interleaved ratio disagrees, the verdict says so.
///
/// `median(group, id)` returns criterion's median in ns, or `None` if that benchmark did not
/// run; `interleaved(group, peer)` returns the interleaved `(steadfast, peer)` medians, if
/// measured.
///
/// ```
/// use steadfast_benches::{comparison_table, Comparison, Target};
/// let rows = [Comparison { group: "g", peer: Some("p"), label: "x vs p", target: Target::AtMost(1.0) }];
/// let table = comparison_table(
///     "title",
///     &rows,
///     |_, id| Some(if id == "steadfast" { 5.0 } else { 10.0 }),
///     |_, _| Some((12.0, 10.0)),
/// );
/// assert!(table.contains("0.50") && table.contains("1.20") && table.contains("interleaved missed"));
/// ```
pub fn comparison_table(
    title: &str,
    rows: &[Comparison],
    median: impl Fn(&str, &str) -> Option<f64>,
    interleaved: impl Fn(&str, &str) -> Option<(f64, f64)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{title}");
    if let Some(bare) = median(BARE_GROUP, BARE_ID) {
        let _ = writeln!(out, "bare service (baseline): {bare:.1} ns");
    }
    let width = rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(0)
        .max("pair".len());
    let _ = writeln!(
        out,
        "{:<width$} | {:>12} | {:>8} | {:>6} | {:>17} | {:>6} | verdict",
        "pair", "steadfast ns", "peer ns", "ratio", "interleaved ratio", "target"
    );
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let verdict = |met: Option<bool>| match met {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "reported",
    };
    for row in rows {
        let ours = median(row.group, OURS);
        let theirs = row.peer.and_then(|p| median(row.group, p));
        let ratio = match (ours, theirs) {
            (Some(o), Some(t)) if t > 0.0 => Some(o / t),
            _ => None,
        };
        let cross = row
            .peer
            .and_then(|p| interleaved(row.group, p))
            .filter(|(_, t)| *t > 0.0)
            .map(|(o, t)| o / t);
        let mut judged = match (ratio, row.peer, ours) {
            (Some(r), _, _) => verdict(row.target.met(r)).to_owned(),
            (None, None, Some(_)) => "reported".to_owned(),
            _ => "not run".to_owned(),
        };
        if let (Some(r), Some(x)) = (ratio, cross) {
            let (a, b) = (row.target.met(r), row.target.met(x));
            if a != b {
                let _ = write!(judged, " (interleaved {})", verdict(b).to_lowercase());
            }
        }
        let ratio = ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let cross = cross.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "{:<width$} | {:>12} | {:>8} | {:>6} | {:>17} | {:>6} | {}",
            row.label,
            cell(ours),
            cell(theirs),
            ratio,
            cross,
            row.target.to_string(),
            judged
        );
    }
    out
}

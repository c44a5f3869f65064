//! Adaptive concurrency limit rules, on a paused clock: admission against the current limit,
//! sharing across clones, RTT samples and drops classified by the shared classifier, windows,
//! observability (handle, event, gauge), configuration errors; and each algorithm converging in
//! a simulated backend whose latency rises once more calls are in flight than its hidden
//! capacity.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::adaptive_limit::{
    AdaptiveLimitLayer, Aimd, Algorithm, Gradient2, OverloadReason, Overloaded, Samples, Vegas,
};
use steadfast_layers::classify::{AsErrorRef, Classifier, Outcome};
use steadfast_layers::deadline::DeadlineExceeded;
use steadfast_layers::rng::RandomSource;
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::{BoxError, Problem};
use support::{Metrics, Traces};
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An algorithm that records what it is given and keeps a fixed limit.
#[derive(Debug, Clone)]
struct Recorder {
    limit: usize,
    seen: Arc<Mutex<Vec<Samples>>>,
}

impl Recorder {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: Arc::default(),
        }
    }
}

impl Algorithm for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn initial_limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, samples: &Samples, _rng: &dyn RandomSource) -> usize {
        self.seen.lock().unwrap().push(*samples);
        self.limit
    }
}

/// A service answering after `d` with the status it is asked for (0 = an error).
fn timed(
    d: Duration,
) -> impl Service<
    u16,
    Response = u16,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<u16, BoxError>> + Send,
> + Clone {
    service_fn(move |status: u16| async move {
        sleep(d).await;
        if status == 0 {
            Err(BoxError::from("reset"))
        } else {
            Ok(status)
        }
    })
}

fn by_status(r: &Result<u16, BoxError>) -> Outcome {
    match r {
        Ok(503) => Outcome::retryable("unavailable"),
        Ok(1) => Outcome::NotSent { reason: "refused" },
        Ok(400) => Outcome::fatal("bad_request"),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::retryable("error"),
    }
}

#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit_across_clones() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Recorder::new(2))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut a = layer.clone().layer(timed(ms(100)));
    let mut b = layer.layer(timed(ms(100)));
    let fa = a.ready().await.unwrap().call(200);
    let fb = b.ready().await.unwrap().call(200);
    assert_eq!(handle.in_flight(), 2);
    let err = b.clone().oneshot(200).await.unwrap_err();
    let o = err.downcast_ref::<Overloaded>().unwrap();
    assert_eq!(
        (o.layer(), o.reason()),
        ("adaptive_limit", OverloadReason::AtCapacity)
    );
    assert_eq!((fa.await.unwrap(), fb.await.unwrap()), (200, 200));
    assert_eq!(handle.in_flight(), 0);
    // Dropping an admitted call frees its slot (and records a drop: see below).
    let pending = a.ready().await.unwrap().call(200);
    assert_eq!(handle.in_flight(), 1);
    drop(pending);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn each_call_is_timed_and_classified() {
    let alg = Recorder::new(10);
    let seen = alg.seen.clone();
    let svc = AdaptiveLimitLayer::builder()
        .algorithm(alg)
        .classifier(by_status)
        .window(Duration::ZERO)
        .min_samples(1)
        .build()
        .unwrap()
        .layer(timed(ms(40)));
    // Success, drop (503), ignored (400: fatal), drop (error), ignored (never sent).
    for status in [200, 503, 400, 0, 1] {
        let _ = svc.clone().oneshot(status).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            Samples::new(1, 0, ms(40), ms(40), 1),
            Samples::new(1, 1, ms(40), ms(40), 1),
            Samples::new(1, 1, ms(40), ms(40), 1),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_its_caller_gives_up_on_is_a_drop_of_at_least_its_wait() {
    let alg = Recorder::new(10);
    let seen = alg.seen.clone();
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(alg)
        .classifier(by_status)
        .window(Duration::ZERO)
        .min_samples(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(timed(ms(100)));
    // The caller's own timeout drops the call after 30 ms: a drop, 30 ms a lower bound of its
    // RTT (in the mean, not the minimum).
    let late = tokio::time::timeout(ms(30), svc.clone().oneshot(200)).await;
    assert!(late.is_err());
    assert_eq!(handle.in_flight(), 0);
    // A deadline layer below this one: its error after the call ran is a drop too.
    let svc_deadline = steadfast_layers::deadline::DeadlineLayer::new(ms(20))
        .unwrap()
        .layer(timed(ms(100)));
    let svc2 = AdaptiveLimitLayer::builder()
        .algorithm(Recorder {
            limit: 10,
            seen: seen.clone(),
        })
        .window(Duration::ZERO)
        .min_samples(1)
        .build()
        .unwrap()
        .layer(svc_deadline);
    svc2.oneshot(200).await.unwrap_err();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Samples::new(1, 1, ms(30), Duration::ZERO, 1),
            Samples::new(1, 1, ms(20), ms(20), 1),
        ]
    );
    // Opted out (callers that cancel for other reasons, such as hedging): no sample.
    let quiet = Recorder::new(10);
    let quiet_seen = quiet.seen.clone();
    let svc = AdaptiveLimitLayer::builder()
        .algorithm(quiet)
        .window(Duration::ZERO)
        .min_samples(1)
        .cancelled_as_drops(false)
        .build()
        .unwrap()
        .layer(timed(ms(100)));
    assert!(tokio::time::timeout(ms(30), svc.oneshot(200))
        .await
        .is_err());
    assert!(quiet_seen.lock().unwrap().is_empty());
}

/// A caller's error for a typed adaptive limit (`with_error`): the nouns inline, read through
/// `AsErrorRef` (by the classifier and by the limit's check for a spent deadline).
#[derive(Debug)]
enum CallError {
    Overloaded(Overloaded),
    Deadline(DeadlineExceeded),
    Bad(std::io::Error),
}

impl From<Overloaded> for CallError {
    fn from(e: Overloaded) -> Self {
        CallError::Overloaded(e)
    }
}

impl AsErrorRef for CallError {
    fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Overloaded(e) => Some(e),
            CallError::Deadline(e) => Some(e),
            CallError::Bad(e) => Some(e),
        }
    }
}

/// A service failing after the time it is asked for, with a spent deadline (`true`) or a bad
/// request (`false`), both in the caller's error.
fn failing_typed() -> impl Service<
    (Duration, bool),
    Response = (),
    Error = CallError,
    Future = impl std::future::Future<Output = Result<(), CallError>> + Send,
> + Clone {
    service_fn(|(after, deadline): (Duration, bool)| async move {
        sleep(after).await;
        Err(if deadline {
            CallError::Deadline(DeadlineExceeded::new())
        } else {
            CallError::Bad(std::io::Error::other("bad request"))
        })
    })
}

#[tokio::test(start_paused = true)]
async fn a_typed_limit_counts_a_deadline_in_the_callers_error_after_the_call_ran_as_a_drop() {
    let metrics = Metrics::new();
    let alg = Recorder::new(10);
    let seen = alg.seen.clone();
    // The default classifier reads `CallError` through `AsErrorRef`: a spent deadline is fatal,
    // and the limit (reading it the same way) counts it as a drop once the call has run.
    let svc = AdaptiveLimitLayer::builder()
        .algorithm(alg)
        .window(Duration::ZERO)
        .min_samples(1)
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .with_error::<CallError>()
        .layer(failing_typed());
    let late = svc.clone().oneshot((ms(20), true)).await;
    assert!(matches!(late, Err(CallError::Deadline(_))), "{late:?}");
    // Spent before the call ran (in no time): says nothing about load, not measured.
    let spent = svc.clone().oneshot((Duration::ZERO, true)).await;
    assert!(matches!(spent, Err(CallError::Deadline(_))), "{spent:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Samples::new(1, 1, ms(20), ms(20), 1)]
    );
    assert_eq!(
        metrics.counter(
            "steadfast.adaptive.drops",
            &[("error.type", "deadline_exceeded")]
        ),
        1
    );
    // A classifier that calls every error fatal: a bad request is not measured, a deadline that
    // expired while the call ran still is a drop (the limit reads `CallError`, not the label).
    let alg = Recorder::new(10);
    let seen = alg.seen.clone();
    let svc = AdaptiveLimitLayer::builder()
        .algorithm(alg)
        .classifier(|r: &Result<(), CallError>| match r {
            Ok(()) => Outcome::Success,
            Err(_) => Outcome::fatal("bad_request"),
        })
        .window(Duration::ZERO)
        .min_samples(1)
        .build()
        .unwrap()
        .with_error::<CallError>()
        .layer(failing_typed());
    let bad = svc.clone().oneshot((ms(30), false)).await;
    assert!(matches!(bad, Err(CallError::Bad(_))), "{bad:?}");
    assert!(seen.lock().unwrap().is_empty());
    svc.oneshot((ms(30), true)).await.unwrap_err();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Samples::new(1, 1, ms(30), ms(30), 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_folds_calls_into_one_update() {
    let alg = Recorder::new(10);
    let seen = alg.seen.clone();
    let svc = AdaptiveLimitLayer::builder()
        .algorithm(alg)
        .classifier(by_status)
        .window(Duration::from_secs(1))
        .min_samples(3)
        .build()
        .unwrap()
        .layer(service_fn(|(d, status): (u64, u16)| async move {
            sleep(ms(d)).await;
            Ok::<u16, BoxError>(status)
        }));
    // Three concurrent calls: 10 ms, 20 ms (503), 30 ms; the third completes the window.
    let calls = [(10, 200), (20, 503), (30, 200)].map(|c| svc.clone().oneshot(c));
    futures::future::join_all(calls).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Samples::new(3, 1, ms(20), ms(10), 3)]
    );
    // Within the second, more calls only accumulate.
    for _ in 0..5 {
        svc.clone().oneshot((10, 200)).await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    sleep(Duration::from_secs(1)).await;
    svc.clone().oneshot((10, 200)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], Samples::new(6, 0, ms(10), ms(10), 1));
}

#[tokio::test(start_paused = true)]
async fn limit_changes_are_observable() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::builder().initial_limit(10).build().unwrap())
        .classifier(by_status)
        .window(Duration::ZERO)
        .min_samples(1)
        .telemetry(Telemetry::new().meter(metrics.meter()).name("search"))
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.algorithm(), "aimd");
    assert_eq!(
        metrics.gauge_with("steadfast.adaptive.limit", &[("steadfast.name", "search")]),
        Some(10.0)
    );
    let svc = layer.layer(timed(ms(5)));
    svc.clone().oneshot(503).await.unwrap();
    assert_eq!(handle.limit(), 9);
    assert_eq!(svc.handle().limit(), 9);
    assert_eq!(
        metrics.gauge_with("steadfast.adaptive.limit", &[]),
        Some(9.0)
    );
    assert_eq!(
        metrics.gauge_with("steadfast.adaptive.in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(
        metrics.counter("steadfast.adaptive.drops", &[("error.type", "unavailable")]),
        1
    );
    let changed = traces.with_message("adaptive limit changed");
    assert_eq!(changed.len(), 1);
    let f = &changed[0].fields;
    assert_eq!(changed[0].target, "steadfast::adaptive");
    assert_eq!((f["from"].as_str(), f["to"].as_str()), ("10", "9"));
    assert_eq!(f["algorithm"], "aimd");
    assert_eq!(f["drops"], "1");
    assert_eq!(f["rtt_ms"], "5.0");
    // No change, no event: a success with little in flight leaves AIMD's limit alone.
    svc.clone().oneshot(200).await.unwrap();
    assert_eq!(traces.with_message("adaptive limit changed").len(), 1);
    // Admission is instantaneous: events, no spans.
    assert!(!traces
        .spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.starts_with("steadfast.")));
}

#[tokio::test(start_paused = true)]
async fn rejections_are_counted_and_traced() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let mut svc = AdaptiveLimitLayer::builder()
        .algorithm(Recorder::new(1))
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(timed(ms(5)));
    let held = svc.ready().await.unwrap().call(200);
    assert!(svc.ready().await.unwrap().call(200).await.is_err());
    held.await.unwrap();
    assert_eq!(
        metrics.counter(
            "steadfast.adaptive.rejected",
            &[("steadfast.reason", "at_capacity")]
        ),
        1
    );
    let ev = traces.with_message("adaptive limit reached: call rejected");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].fields["reason"], "at_capacity");
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let cases = [
        (
            Aimd::builder().initial_limit(0).build().map(|_| ()),
            "initial_limit",
        ),
        (
            Aimd::builder().backoff_ratio(f64::NAN).build().map(|_| ()),
            "backoff_ratio",
        ),
        (
            Aimd::builder().backoff_ratio(1.0).build().map(|_| ()),
            "backoff_ratio",
        ),
        (
            Aimd::builder().backoff_ratio(0.3).build().map(|_| ()),
            "backoff_ratio",
        ),
        (
            Aimd::builder().timeout(Duration::ZERO).build().map(|_| ()),
            "timeout",
        ),
        (
            Aimd::builder().min_limit(50).build().map(|_| ()),
            "initial_limit",
        ),
        (
            Aimd::builder()
                .min_limit(50)
                .max_limit(40)
                .initial_limit(45)
                .build()
                .map(|_| ()),
            "min_limit",
        ),
        (
            Gradient2::builder().tolerance(0.5).build().map(|_| ()),
            "tolerance",
        ),
        (
            Gradient2::builder()
                .tolerance(f64::INFINITY)
                .build()
                .map(|_| ()),
            "tolerance",
        ),
        (
            Gradient2::builder().smoothing(0.0).build().map(|_| ()),
            "smoothing",
        ),
        (
            Gradient2::builder().smoothing(1.5).build().map(|_| ()),
            "smoothing",
        ),
        (
            Gradient2::builder().max_limit(0).build().map(|_| ()),
            "max_limit",
        ),
        (
            Gradient2::builder()
                .max_limit(2_000_000)
                .build()
                .map(|_| ()),
            "max_limit",
        ),
        (
            Gradient2::builder().long_window(0).build().map(|_| ()),
            "long_window",
        ),
        (
            Gradient2::builder().long_rtt_cap(0.9).build().map(|_| ()),
            "long_rtt_cap",
        ),
        (
            Gradient2::builder()
                .long_rtt_cap(f64::NAN)
                .build()
                .map(|_| ()),
            "long_rtt_cap",
        ),
        (
            Gradient2::builder().probe_interval(0).build().map(|_| ()),
            "probe_interval",
        ),
        (
            Gradient2::builder().probe_limit(0).build().map(|_| ()),
            "probe_limit",
        ),
        (
            Gradient2::builder().probe_limit(5_000).build().map(|_| ()),
            "probe_limit",
        ),
        (
            Vegas::builder().smoothing(f64::NAN).build().map(|_| ()),
            "smoothing",
        ),
        (
            Vegas::builder().probe_multiplier(0).build().map(|_| ()),
            "probe_multiplier",
        ),
        (
            Vegas::builder().alpha_beta(3.0, 3.0).build().map(|_| ()),
            "alpha_beta",
        ),
        (
            Vegas::builder().initial_limit(5_000).build().map(|_| ()),
            "initial_limit",
        ),
        (
            AdaptiveLimitLayer::builder()
                .min_samples(0)
                .build()
                .map(|_| ()),
            "min_samples",
        ),
        (
            AdaptiveLimitLayer::builder()
                .window(Duration::from_secs(u64::MAX))
                .build()
                .map(|_| ()),
            "window",
        ),
        (
            AdaptiveLimitLayer::builder()
                .algorithm(Recorder::new(0))
                .build()
                .map(|_| ()),
            "initial_limit",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(result.unwrap_err().path(), field);
    }
    assert_eq!(
        Aimd::builder().min_limit(0).build().unwrap_err().problem(),
        &Problem::Zero
    );
}

/// A backend with `capacity` workers, each call holding one for `service` time; calls beyond
/// capacity queue for a worker (latency rises with what is in flight) or, with `shed`, fail at
/// once.
fn backend(
    capacity: usize,
    service: Duration,
    shed: bool,
) -> impl Service<
    (),
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send {
    let workers = Arc::new(Semaphore::new(capacity));
    service_fn(move |()| {
        let workers = workers.clone();
        async move {
            let _worker = if shed {
                match workers.try_acquire_owned() {
                    Ok(w) => w,
                    Err(_) => return Err(BoxError::from("overloaded")),
                }
            } else {
                workers.acquire_owned().await.unwrap()
            };
            sleep(service).await;
            Ok(())
        }
    })
}

/// Runs `clients` closed-loop clients through `layer` against `backend` for `run`, and returns
/// the limit sampled every 100 ms.
async fn simulate<A, C, S>(
    layer: AdaptiveLimitLayer<A, C>,
    backend: S,
    clients: usize,
    run: Duration,
) -> Vec<usize>
where
    A: Algorithm,
    C: Classifier<(), BoxError> + Clone + Send + Sync + 'static,
    S: Service<(), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    simulate_with(layer, backend, clients, run, ms(5)).await
}

/// [`simulate`], the clients waiting `backoff` after a failure.
async fn simulate_with<A, C, S>(
    layer: AdaptiveLimitLayer<A, C>,
    backend: S,
    clients: usize,
    run: Duration,
    backoff: Duration,
) -> Vec<usize>
where
    A: Algorithm,
    C: Classifier<(), BoxError> + Clone + Send + Sync + 'static,
    S: Service<(), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let handle = layer.handle();
    let svc = layer.layer(backend);
    let end = Instant::now() + run;
    let completed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (svc, completed) = (svc.clone(), completed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match svc.clone().oneshot(()).await {
                    Ok(()) => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    // Refused locally, or failed: back off a little.
                    Err(_) => sleep(backoff).await,
                }
            }
        }));
    }
    let mut limits = Vec::new();
    // Sampled off the backend's 10 ms rhythm, so that every phase of it is seen.
    while Instant::now() < end {
        sleep(ms(37)).await;
        limits.push(handle.limit());
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(completed.load(Ordering::Relaxed) > 0);
    limits
}

fn summary(limits: &[usize]) -> (usize, usize, f64) {
    let min = *limits.iter().min().unwrap();
    let max = *limits.iter().max().unwrap();
    let mean = limits.iter().sum::<usize>() as f64 / limits.len() as f64;
    (min, max, mean)
}

/// The hidden capacity of the simulated backends.
const C: usize = 20;

/// More clients than the backend can serve at once.
const CLIENTS: usize = 2 * C + 10;

/// The second half of a run: after the algorithm has had time to converge.
fn tail(limits: &[usize]) -> &[usize] {
    &limits[limits.len() / 2..]
}

#[tokio::test(start_paused = true)]
async fn vegas_settles_just_above_the_hidden_capacity_from_below_and_above() {
    for initial in [5, 80] {
        let layer = AdaptiveLimitLayer::builder()
            .algorithm(Vegas::builder().initial_limit(initial).build().unwrap())
            .seed(1)
            .build()
            .unwrap();
        let limits = simulate(
            layer,
            backend(C, ms(10), false),
            CLIENTS,
            Duration::from_secs(20),
        )
        .await;
        let (min, max, _) = summary(tail(&limits));
        // The estimated queue is held between alpha = 3 and beta = 6 calls.
        assert!(
            min >= C && max <= C + 6,
            "from {initial}: settled in [{min}, {max}]: {limits:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn vegas_follows_a_capacity_drop() {
    let workers = Arc::new(Semaphore::new(2 * C));
    let backend = {
        let workers = workers.clone();
        service_fn(move |()| {
            let workers = workers.clone();
            async move {
                let _w = workers.acquire_owned().await.unwrap();
                sleep(ms(10)).await;
                Ok::<(), BoxError>(())
            }
        })
    };
    // Ten seconds in, the backend loses three quarters of its workers.
    tokio::spawn(async move {
        sleep(Duration::from_secs(10)).await;
        workers
            .acquire_many(3 * C as u32 / 2)
            .await
            .unwrap()
            .forget();
    });
    let layer = AdaptiveLimitLayer::builder().seed(2).build().unwrap();
    let limits = simulate(layer, backend, 4 * C + 10, Duration::from_secs(20)).await;
    // Sampled every 37 ms: index 250 is 9.25 s in, the last quarter is after the drop.
    let (_, _, before) = summary(&limits[150..250]);
    let (min, max, _) = summary(&limits[limits.len() * 3 / 4..]);
    assert!(before >= 2.0 * C as f64, "before the drop: {before}");
    assert!(
        min >= C / 2 && max <= C / 2 + 6,
        "after the drop: [{min}, {max}]: {limits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn aimd_oscillates_around_the_capacity_where_calls_start_failing() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::builder().initial_limit(5).build().unwrap())
        .build()
        .unwrap();
    let limits = simulate(
        layer,
        backend(C, ms(10), true),
        CLIENTS,
        Duration::from_secs(20),
    )
    .await;
    let (min, max, _) = summary(tail(&limits));
    // Up by one per window while calls succeed, × 0.9 when one beyond C fails.
    assert!(
        min >= C * 9 / 10 - 1 && max <= C + 1,
        "settled in [{min}, {max}]: {limits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn gradient2_settles_within_its_latency_tolerance_of_the_capacity() {
    // Netflix's windows: one update per second.
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Gradient2::builder().initial_limit(5).build().unwrap())
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let limits = simulate(
        layer,
        backend(C, ms(10), false),
        CLIENTS,
        Duration::from_secs(60),
    )
    .await;
    let (min, max, _) = summary(tail(&limits));
    // Latency may grow by the tolerance (1.5) before the limit shrinks: in-flight settles near
    // 1.5 C + the queue allowance, i.e. about 34 for C = 20.
    assert!(
        min >= C && max <= 2 * C,
        "settled in [{min}, {max}]: {limits:?}"
    );
}

/// What callers experienced in [`overload`], per arrival.
#[derive(Debug, Default)]
struct OverloadRun {
    /// The limit sampled every 100 ms.
    limits: Vec<usize>,
    /// (arrival time in ms since the start, latency of a success).
    ok: Vec<(u64, Duration)>,
    requests: usize,
}

const WORKERS: usize = 8;
/// Service times are uniform in [20, 60] ms: 200 calls/s for 8 workers.
const CAPACITY_PER_S: f64 = 200.0;
const DEADLINE: Duration = Duration::from_millis(500);

/// `WORKERS` workers behind an unbounded FIFO queue (a fair semaphore), each call taking
/// U(20, 60) ms from `rng`, served in a task of its own so that a caller who hangs up does not
/// free its place.
fn queueing_server(
    rng: Arc<steadfast_layers::rng::SeededRng>,
) -> impl Service<
    (),
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send {
    let workers = Arc::new(Semaphore::new(WORKERS));
    service_fn(move |()| {
        let work = ms(20) + Duration::from_secs_f64(0.040 * rng.next_f64());
        let workers = workers.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _worker = workers.acquire_owned().await.unwrap();
            sleep(work).await;
            let _ = tx.send(());
        });
        async move {
            match rx.await {
                Ok(()) => Ok(()),
                Err(_) => Err(BoxError::from("server gone")),
            }
        }
    })
}

/// A server with `WORKERS` workers and an unbounded FIFO queue (a fair semaphore), service times
/// drawn from a seeded RNG, that does not notice callers who gave up (each call runs in its own
/// task); Poisson arrivals at `rate` per second, each with `DEADLINE` (the caller drops the call
/// then), through `layer`, for `run`.
async fn overload(
    layer: AdaptiveLimitLayer<Gradient2>,
    rate: f64,
    run: Duration,
    seed: u64,
) -> OverloadRun {
    let rng = Arc::new(steadfast_layers::rng::SeededRng::new(seed));
    let handle = layer.handle();
    let svc = layer.layer(queueing_server(rng.clone()));
    let start = Instant::now();
    let end = start + run;
    let result = Arc::new(Mutex::new(OverloadRun::default()));
    let sampler = {
        let result = result.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                sleep(ms(100)).await;
                result.lock().unwrap().limits.push(handle.limit());
            }
        })
    };
    let mut at = start;
    let mut callers = Vec::new();
    loop {
        // Exponential inter-arrival times.
        at += Duration::from_secs_f64(-(1.0 - rng.next_f64()).ln() / rate);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let (svc, result) = (svc.clone(), result.clone());
        callers.push(tokio::spawn(async move {
            let arrived = Instant::now();
            let outcome = tokio::time::timeout(DEADLINE, svc.oneshot(())).await;
            let mut r = result.lock().unwrap();
            r.requests += 1;
            if let Ok(Ok(())) = outcome {
                let since = arrived.duration_since(start).as_millis() as u64;
                r.ok.push((since, arrived.elapsed()));
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    sampler.await.unwrap();
    Arc::try_unwrap(result).unwrap().into_inner().unwrap()
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// The limit at which a call would queue for the whole deadline: workers plus what they serve
/// in a deadline.
fn limit_at_deadline() -> usize {
    WORKERS + (CAPACITY_PER_S * DEADLINE.as_secs_f64()) as usize
}

#[tokio::test(start_paused = true)]
async fn gradient2_holds_its_limit_under_sustained_overload() {
    // Netflix's defaults, the layer's default windows: nothing tuned to this server.
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Gradient2::builder().build().unwrap())
        .seed(7)
        .build()
        .unwrap();
    let run = Duration::from_secs(300);
    let r = overload(layer, 2.0 * CAPACITY_PER_S, run, 7).await;
    let bound = limit_at_deadline();
    let most = *r.limits.iter().max().unwrap();
    let last_quarter_ms = run.as_millis() as u64 * 3 / 4;
    let tail: Vec<Duration> =
        r.ok.iter()
            .filter(|(at, _)| *at >= last_quarter_ms)
            .map(|(_, l)| *l)
            .collect();
    let goodput = tail.len() as f64 / (run.as_secs_f64() / 4.0);
    let (_, _, mean) = summary(&r.limits[r.limits.len() / 4..]);
    let p99_all = p99(r.ok.iter().map(|(_, l)| *l).collect());
    eprintln!(
        "anchored: peak {most}, mean {mean:.1}, last-quarter goodput {goodput:.1}/s, p99 ok {p99_all:?}, {} of {} ok",
        r.ok.len(),
        r.requests
    );
    // Bounded over the whole run, far below where calls queue for their whole deadline (108),
    // the capacity kept busy on calls someone waits for, latency well within the deadline.
    assert!(
        most < bound / 2,
        "limit peaked at {most} (deadline bound {bound}), mean {mean:.1}"
    );
    assert!(
        goodput >= 0.9 * CAPACITY_PER_S,
        "last-quarter goodput {goodput:.1}/s (limit mean {mean:.1})"
    );
    let p99_tail = p99(tail);
    assert!(
        p99_tail < DEADLINE / 2,
        "last-quarter p99 of successes {p99_tail:?} (limit mean {mean:.1})"
    );
    assert!(r.requests > 200_000 / 2, "{} requests", r.requests);
}

#[tokio::test(start_paused = true)]
async fn unanchored_gradient2_creeps_until_goodput_collapses() {
    // The same run with the anchor out of reach, probes rare and cancellations ignored: Netflix's
    // Gradient2 as it was, whose long-term RTT follows the loaded latency (the defect the anchor
    // fixes; this shows the simulation reproduces it).
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(
            Gradient2::builder()
                .long_rtt_cap(100.0)
                .probe_interval(1_000_000)
                .build()
                .unwrap(),
        )
        .cancelled_as_drops(false)
        .seed(7)
        .build()
        .unwrap();
    let run = Duration::from_secs(300);
    let r = overload(layer, 2.0 * CAPACITY_PER_S, run, 7).await;
    let most = *r.limits.iter().max().unwrap();
    let last_quarter_ms = run.as_millis() as u64 * 3 / 4;
    let tail: Vec<Duration> =
        r.ok.iter()
            .filter(|(at, _)| *at >= last_quarter_ms)
            .map(|(_, l)| *l)
            .collect();
    let goodput = tail.len() as f64 / (run.as_secs_f64() / 4.0);
    eprintln!("unanchored: peak {most}, last-quarter goodput {goodput:.1}/s");
    // It climbs to where calls queue for about their whole deadline, and goodput collapses.
    assert!(
        most >= limit_at_deadline() * 9 / 10 && goodput < CAPACITY_PER_S / 2.0,
        "peaked at {most}, last-quarter goodput {goodput:.1}/s"
    );
}

#[tokio::test(start_paused = true)]
async fn gradient2_still_grows_to_its_maximum_when_latency_holds() {
    // A backend far larger than the demand: latency never rises, the limit is in use, and it
    // grows by 0.8 per window up to the maximum (200), probes notwithstanding.
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Gradient2::builder().build().unwrap())
        .seed(3)
        .build()
        .unwrap();
    // 110 clients keep at least half of 200 in flight (else app-limited: no growth).
    let limits = simulate_with(
        layer,
        backend(1_000, ms(100), false),
        110,
        Duration::from_secs(40),
        ms(100),
    )
    .await;
    let (_, max, mean) = summary(&limits[limits.len() * 3 / 4..]);
    assert!(
        max == 200 && mean >= 190.0,
        "[{max}, {mean:.1}]: {limits:?}"
    );
}

/// Many tasks on several threads through clones of one adaptive limit (held at 8 by the
/// algorithm): never more in flight than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_never_exceed_the_limit() {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let inner = {
        let (now, most) = (now.clone(), most.clone());
        service_fn(move |()| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), std::convert::Infallible>(())
            }
        })
    };
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Recorder::new(8))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(inner);
    let served = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (svc, served) = (svc.clone(), served.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    if svc.clone().oneshot(()).await.is_ok() {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= 8);
    assert!(served.load(Ordering::SeqCst) > 0);
    assert_eq!(handle.in_flight(), 0);
}

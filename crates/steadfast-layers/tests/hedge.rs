//! Hedging rules, on a paused clock: timing (fixed and learned delays), max hedges, who wins,
//! cancellation of the losers, budgets, deadlines, idempotency, telemetry, allocations and
//! configuration errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::classify::Outcome;
use steadfast_layers::deadline::Deadline;
use steadfast_layers::hedge::{
    ByOutcome, HedgeAny, HedgeDelay, HedgeLayer, HedgeLayerBuilder, Idempotent,
};
use steadfast_layers::retry::{NotReplayable, RetryBudget};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::{BoxError, ConfigError};
use support::{Metrics, Traces};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, Service, ServiceExt};

// ---- a scripted peer ------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Running,
    Finished,
    Dropped,
}

#[derive(Debug)]
struct Attempt {
    req: u32,
    /// 0 for the original, 1 for the first hedge, ...
    nth: usize,
    started: Instant,
    fate: Arc<Mutex<Fate>>,
}

/// Marks the attempt dropped unless it finished.
struct Guard(Arc<Mutex<Fate>>);

impl Drop for Guard {
    fn drop(&mut self) {
        let mut f = self.0.lock().unwrap();
        if *f == Fate::Running {
            *f = Fate::Dropped;
        }
    }
}

type Plan = dyn Fn(u32, usize) -> (Duration, Result<u16, &'static str>) + Send + Sync;

/// A peer whose answer to the `nth` attempt of request `req` is `plan(req, nth)`: after a delay,
/// a status or an error.
#[derive(Clone)]
struct Peer {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    per_req: Arc<Mutex<HashMap<u32, usize>>>,
    plan: Arc<Plan>,
}

impl Peer {
    fn new(
        plan: impl Fn(u32, usize) -> (Duration, Result<u16, &'static str>) + Send + Sync + 'static,
    ) -> Self {
        Peer {
            attempts: Arc::default(),
            per_req: Arc::default(),
            plan: Arc::new(plan),
        }
    }

    fn service(&self) -> BoxCloneService<u32, u16, BoxError> {
        let peer = self.clone();
        BoxCloneService::new(service_fn(move |req: u32| {
            let nth = {
                let mut m = peer.per_req.lock().unwrap();
                let n = m.entry(req).or_insert(0);
                *n += 1;
                *n - 1
            };
            let fate = Arc::new(Mutex::new(Fate::Running));
            peer.attempts.lock().unwrap().push(Attempt {
                req,
                nth,
                started: Instant::now(),
                fate: fate.clone(),
            });
            let (delay, result) = (peer.plan)(req, nth);
            async move {
                let guard = Guard(fate);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                *guard.0.lock().unwrap() = Fate::Finished;
                result.map_err(|e| BoxError::from(format!("{e} (attempt {nth})")))
            }
        }))
    }

    fn count(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }

    /// Start offsets of the attempts of `req`, from `t0`.
    fn offsets(&self, req: u32, t0: Instant) -> Vec<Duration> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.req == req)
            .map(|a| a.started - t0)
            .collect()
    }

    fn fates(&self, req: u32) -> Vec<Fate> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.req == req)
            .map(|a| *a.fate.lock().unwrap())
            .collect()
    }

    fn hedges(&self) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.nth > 0)
            .count()
    }
}

/// Status 503 is a failure; other statuses succeed; errors fail.
fn by_status(r: &Result<u16, BoxError>) -> Outcome {
    match r {
        Ok(503) => Outcome::retryable("unavailable"),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::retryable("error"),
    }
}

fn fixed(d: Duration) -> HedgeLayerBuilder<HedgeAny> {
    HedgeLayer::builder()
        .delay(HedgeDelay::fixed(d))
        .policy(HedgeAny)
        .no_budget()
}

// ---- timing ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_fixed_delay_hedges_a_slow_call_once_the_delay_has_passed() {
    // The original takes 100 ms, the hedge 10 ms.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Ok(200))
        } else {
            (ms(10), Ok(201))
        }
    });
    let svc = fixed(ms(30)).build().unwrap().layer(peer.service());
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 201);
    assert_eq!(t0.elapsed(), ms(40));
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30)]);
}

#[tokio::test(start_paused = true)]
async fn a_call_faster_than_the_delay_is_not_hedged() {
    let peer = Peer::new(|_, _| (ms(29), Ok(200)));
    let svc = fixed(ms(30)).build().unwrap().layer(peer.service());
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(t0.elapsed(), ms(29));
    assert_eq!(peer.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn up_to_max_hedges_are_sent_one_delay_apart() {
    let peer = Peer::new(|_, nth| (ms(1000), Ok(200 + nth as u16)));
    let svc = fixed(ms(30))
        .max_hedges(3)
        .build()
        .unwrap()
        .layer(peer.service());
    let t0 = Instant::now();
    // Every attempt takes 1 s: the original, started first, answers first.
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30), ms(60), ms(90)]);
    // The three hedges still running were cancelled.
    assert_eq!(
        peer.fates(1),
        [Fate::Finished, Fate::Dropped, Fate::Dropped, Fate::Dropped]
    );
}

#[tokio::test(start_paused = true)]
async fn the_learned_percentile_is_used_once_warm() {
    let metrics = Metrics::new();
    // Calls 1..=100 take 1..=100 ms; call 1000 takes 300 ms and its hedge 5 ms.
    let peer = Peer::new(|req, nth| match (req, nth) {
        (1000, 0) => (ms(300), Ok(200)),
        (1000, _) => (ms(5), Ok(201)),
        (n, _) => (ms(u64::from(n)), Ok(200)),
    });
    let layer = HedgeLayer::builder()
        .delay(
            HedgeDelay::percentile(95.0)
                .min_samples(100)
                .recompute_every(Duration::from_secs(30), 100),
        )
        .policy(HedgeAny)
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap();
    let svc = layer.layer(peer.service());
    for n in 1..=100 {
        assert_eq!(layer.current_delay(), None, "warming up at call {n}");
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(peer.hedges(), 0);
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.skipped",
            &[("steadfast.reason", "warming_up")]
        ),
        100
    );
    // p95 of 1..=100 ms is 95 ms; the histogram reports it at most 1/256 high, never low.
    let d = layer.current_delay().unwrap();
    assert!(
        d >= ms(95) && d <= Duration::from_micros(95_000 + 95_000 / 256),
        "{d:?}"
    );
    let gauge = metrics.gauge("steadfast.hedge.delay").unwrap();
    assert!((gauge - d.as_secs_f64()).abs() < 1e-9, "{gauge}");

    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1000).await.unwrap(), 201);
    let offsets = peer.offsets(1000, t0);
    assert_eq!(offsets.len(), 2);
    // The timer wheel has millisecond ticks: the hedge starts within 1 ms after the delay.
    assert!(
        offsets[1] >= d && offsets[1] <= d + ms(1),
        "{offsets:?} vs {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn while_warming_up_the_warmup_delay_is_used() {
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(500), Ok(200))
        } else {
            (ms(5), Ok(201))
        }
    });
    let svc = HedgeLayer::builder()
        .delay(HedgeDelay::percentile(99.0).warmup_delay(ms(50)))
        .policy(HedgeAny)
        .build()
        .unwrap()
        .layer(peer.service());
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 201);
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(50)]);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_recorded_too() {
    // tower's hedge records successes only: a backend that fails slowly never warms it up.
    let peer = Peer::new(|_, _| (ms(40), Err("unavailable")));
    let layer = HedgeLayer::builder()
        .delay(
            HedgeDelay::percentile(50.0)
                .min_samples(20)
                .recompute_every(Duration::from_secs(3), 20),
        )
        .policy(HedgeAny)
        .build()
        .unwrap();
    let svc = layer.layer(peer.service());
    for n in 0..20 {
        let _ = svc.clone().oneshot(n).await;
    }
    let d = layer.current_delay().unwrap();
    assert!(d >= ms(40) && d <= ms(42), "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn hedged_losers_keep_the_slow_tail_in_the_histogram() {
    // Every original takes 1 s and every hedge 1 ms; hedges are sent after the warm-up delay
    // (10 ms). If only completed attempts were recorded, the learned p60 would collapse to 1 ms
    // and every slow call would be hedged at once; recording the losers' time so far (>= 10 ms)
    // keeps it where the slow calls are.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(1000), Ok(200))
        } else {
            (ms(1), Ok(201))
        }
    });
    let layer = HedgeLayer::builder()
        .delay(
            HedgeDelay::percentile(60.0)
                .min_samples(10)
                .warmup_delay(ms(10))
                .recompute_every(Duration::from_secs(3), 10),
        )
        .policy(HedgeAny)
        .no_budget()
        .build()
        .unwrap();
    let svc = layer.layer(peer.service());
    for n in 0..10 {
        svc.clone().oneshot(n).await.unwrap();
    }
    let d = layer.current_delay().unwrap();
    assert!(d >= ms(10) && d <= ms(13), "{d:?}");
    assert_eq!(peer.hedges(), 10);
}

// ---- who wins -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_first_success_wins_and_an_early_error_waits_for_it() {
    // The original fails at 50 ms, after the hedge (sent at 30 ms) but before it answers (70 ms).
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(50), Err("reset"))
        } else {
            (ms(40), Ok(201))
        }
    });
    let svc = fixed(ms(30)).build().unwrap().layer(peer.service());
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 201);
    assert_eq!(t0.elapsed(), ms(70));
}

#[tokio::test(start_paused = true)]
async fn a_failed_response_also_waits_for_a_success() {
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(40), Ok(503))
        } else {
            (ms(40), Ok(200))
        }
    });
    let svc = fixed(ms(30))
        .classifier(by_status)
        .build()
        .unwrap()
        .layer(peer.service());
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(t0.elapsed(), ms(70));
}

#[tokio::test(start_paused = true)]
async fn an_error_before_any_hedge_returns_at_once() {
    // Nothing else is in flight: all attempts sent have failed (hedging is not retrying).
    let peer = Peer::new(|_, _| (ms(10), Err("refused")));
    let svc = fixed(ms(30)).build().unwrap().layer(peer.service());
    let t0 = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "refused (attempt 0)");
    assert_eq!(t0.elapsed(), ms(10));
    assert_eq!(peer.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn when_every_attempt_fails_the_last_failure_is_returned() {
    // Original fails at 50 ms, hedge at 60 ms: the hedge's error, the latest, is returned as is.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(50), Err("a"))
        } else {
            (ms(30), Err("b"))
        }
    });
    let svc = fixed(ms(30)).build().unwrap().layer(peer.service());
    let t0 = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "b (attempt 1)");
    assert_eq!(t0.elapsed(), ms(60));
}

#[tokio::test(start_paused = true)]
async fn a_failed_response_is_preferred_to_a_later_error() {
    // A 503 from the original (a proxy must forward it) beats the hedge's transport error.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(50), Ok(503))
        } else {
            (ms(30), Err("reset"))
        }
    });
    let svc = fixed(ms(30))
        .classifier(by_status)
        .build()
        .unwrap()
        .layer(peer.service());
    assert_eq!(svc.oneshot(1).await.unwrap(), 503);
}

#[tokio::test(start_paused = true)]
async fn the_losers_are_dropped_as_soon_as_a_winner_is_known() {
    // The hedge wins: the original is cancelled.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(1000), Ok(200))
        } else {
            (ms(5), Ok(201))
        }
    });
    let svc = fixed(ms(10)).build().unwrap().layer(peer.service());
    let mut svc2 = svc.clone();
    let fut = svc2.ready().await.unwrap().call(1);
    tokio::pin!(fut);
    assert_eq!(fut.as_mut().await.unwrap(), 201);
    // Dropped when the winner was returned, not when the future itself is dropped.
    assert_eq!(peer.fates(1), [Fate::Dropped, Fate::Finished]);

    // The original wins: the hedge is cancelled.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(20), Ok(200))
        } else {
            (ms(1000), Ok(201))
        }
    });
    let svc = fixed(ms(10)).build().unwrap().layer(peer.service());
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(peer.fates(1), [Fate::Finished, Fate::Dropped]);
}

// ---- budgets --------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_budget_caps_hedges_at_the_configured_percentage() {
    let metrics = Metrics::new();
    // Every call is slow: without a budget, every call would be hedged.
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Ok(200))
        } else {
            (ms(1), Ok(201))
        }
    });
    let svc = fixed(ms(10))
        .budget_ratio(0.1)
        .budget_burst(1)
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(peer.service());
    for n in 0..1000 {
        svc.clone().oneshot(n).await.unwrap();
    }
    // 10 % of 1000 calls (the first hedge from the initial burst, then one per ten calls).
    assert_eq!(peer.hedges(), 100);
    assert_eq!(metrics.counter("steadfast.hedge.sent", &[]), 100);
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.budget_exhausted",
            &[("steadfast.hedge.budget", "hedge")]
        ),
        900
    );
    assert_eq!(
        metrics.counter("steadfast.hedge.skipped", &[("steadfast.reason", "budget")]),
        900
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_clones_of_the_layer_and_service() {
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Ok(200))
        } else {
            (ms(1), Ok(201))
        }
    });
    let layer = fixed(ms(10))
        .budget_ratio(0.25)
        .budget_burst(1)
        .build()
        .unwrap();
    let a = layer.clone().layer(peer.service());
    let b = layer.layer(peer.service());
    for n in 0..200 {
        let svc = if n % 2 == 0 { a.clone() } else { b.clone() };
        svc.oneshot(n).await.unwrap();
    }
    assert_eq!(peer.hedges(), 50);
}

/// A shared budget that grants `n` withdrawals.
#[derive(Debug)]
struct Grants(AtomicU32);

impl RetryBudget for Grants {
    fn deposit(&self) {}
    fn withdraw(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
    fn balance(&self) -> f64 {
        f64::from(self.0.load(Ordering::SeqCst))
    }
}

#[tokio::test(start_paused = true)]
async fn hedges_also_draw_on_a_shared_retry_budget() {
    let metrics = Metrics::new();
    let shared = Arc::new(Grants(AtomicU32::new(3)));
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Ok(200))
        } else {
            (ms(1), Ok(201))
        }
    });
    let svc = fixed(ms(10))
        .budget_ratio(1.0)
        .budget_burst(5)
        .budget(shared.clone())
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(peer.service());
    for n in 0..10 {
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(peer.hedges(), 3);
    assert_eq!(shared.balance(), 0.0);
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.budget_exhausted",
            &[("steadfast.hedge.budget", "retry")]
        ),
        7
    );
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.budget_exhausted",
            &[("steadfast.hedge.budget", "hedge")]
        ),
        0
    );
}

/// `no_budget` means no budget at all, as on the retry layer: the shared one set before goes too.
#[tokio::test(start_paused = true)]
async fn no_budget_drops_the_shared_budget_too() {
    let shared = Arc::new(Grants(AtomicU32::new(0)));
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Ok(200))
        } else {
            (ms(1), Ok(201))
        }
    });
    let svc = fixed(ms(10))
        .budget(shared.clone())
        .no_budget()
        .build()
        .unwrap()
        .layer(peer.service());
    for n in 0..10 {
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(peer.hedges(), 10);
}

// ---- deadline, idempotency, replay ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_deadline_cannot_hold_one() {
    let metrics = Metrics::new();
    let peer = Peer::new(|_, _| (ms(40), Ok(200)));
    let svc = fixed(ms(30))
        .min_hedge_time(ms(20))
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(peer.service());
    let t0 = Instant::now();
    // At 30 ms, 15 ms of deadline are left: less than the 20 ms a hedge needs.
    let deadline = Deadline::at(t0 + ms(45));
    assert_eq!(deadline.scope(svc.clone().oneshot(1)).await.unwrap(), 200);
    assert_eq!(peer.count(), 1);
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.skipped",
            &[("steadfast.reason", "deadline")]
        ),
        1
    );
    // With 25 ms left at 30 ms, the hedge goes.
    let deadline = Deadline::at(Instant::now() + ms(55));
    assert_eq!(deadline.scope(svc.oneshot(2)).await.unwrap(), 200);
    assert_eq!(peer.offsets(2, t0).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn requests_not_marked_idempotent_are_never_hedged() {
    let metrics = Metrics::new();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: http::Request<()>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(ms(100)).await;
            Ok::<_, Infallible>(200_u16)
        }
    });
    // The default policy: only requests marked idempotent.
    let svc = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(ms(10)))
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(svc);
    for _ in 0..5 {
        let req = http::Request::post("/pay").body(()).unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.skipped",
            &[("steadfast.reason", "not_idempotent")]
        ),
        5
    );
    let req = http::Request::get("/users/7")
        .extension(Idempotent)
        .body(())
        .unwrap();
    svc.oneshot(req).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 7);
}

#[tokio::test(start_paused = true)]
async fn a_predicate_decides_which_requests_are_hedged() {
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Ok(200))
        } else {
            (ms(1), Ok(201))
        }
    });
    let svc = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(ms(10)))
        .policy(|req: &u32| req.is_multiple_of(2))
        .no_budget()
        .build()
        .unwrap()
        .layer(peer.service());
    for n in 0..10 {
        let expected = if n % 2 == 0 { 201 } else { 200 };
        assert_eq!(svc.clone().oneshot(n).await.unwrap(), expected);
    }
    assert_eq!(peer.hedges(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_copied_is_not_hedged() {
    let metrics = Metrics::new();
    let peer = Peer::new(|_, _| (ms(100), Ok(200)));
    let svc = fixed(ms(10))
        .replay(|req: &mut u32| {
            if *req < 10 {
                Ok(*req)
            } else {
                Err(NotReplayable::new("too big"))
            }
        })
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(peer.service());
    svc.clone().oneshot(99).await.unwrap();
    assert_eq!(peer.count(), 1);
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.skipped",
            &[("steadfast.reason", "not_replayable")]
        ),
        1
    );
    svc.oneshot(3).await.unwrap();
    assert_eq!(peer.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn copies_are_made_once_per_hedge_and_the_last_hedge_sends_the_original() {
    let copies = Arc::new(AtomicU32::new(0));
    let c = copies.clone();
    let peer = Peer::new(|_, _| (ms(1000), Ok(200)));
    let svc = fixed(ms(10))
        .max_hedges(3)
        .replay(move |req: &mut u32| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(*req)
        })
        .build()
        .unwrap()
        .layer(peer.service());
    svc.oneshot(1).await.unwrap();
    assert_eq!(peer.count(), 4);
    // One copy for the original, one each for hedges 1 and 2; hedge 3 sends the kept request.
    assert_eq!(copies.load(Ordering::SeqCst), 3);
}

// ---- telemetry ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn wins_are_counted_by_winner_and_only_for_hedged_calls() {
    let metrics = Metrics::new();
    // Even requests: the hedge wins; odd: the original wins after the hedge was sent;
    // multiples of 5: fast, not hedged.
    let peer = Peer::new(|req, nth| match (req % 5 == 0, req % 2 == 0, nth) {
        (true, _, _) => (ms(1), Ok(200)),
        (false, true, 0) => (ms(100), Ok(200)),
        (false, true, _) => (ms(1), Ok(201)),
        (false, false, 0) => (ms(20), Ok(200)),
        (false, false, _) => (ms(100), Ok(201)),
    });
    let svc = fixed(ms(10))
        .telemetry(Telemetry::new().meter(metrics.meter()).name("search"))
        .build()
        .unwrap()
        .layer(peer.service());
    for n in 1..=10 {
        svc.clone().oneshot(n).await.unwrap();
    }
    // Hedged: 1, 2, 3, 4, 6, 7, 8, 9; the hedge wins for 2, 4, 6, 8.
    assert_eq!(
        metrics.counter("steadfast.hedge.sent", &[("steadfast.name", "search")]),
        8
    );
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.wins",
            &[("steadfast.hedge.winner", "hedge")]
        ),
        4
    );
    assert_eq!(
        metrics.counter(
            "steadfast.hedge.wins",
            &[("steadfast.hedge.winner", "primary")]
        ),
        4
    );
    assert_eq!(metrics.gauge("steadfast.hedge.delay"), Some(0.01));
}

async fn a_hedge_wins_after_the_original_fails() {
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(100), Err("reset"))
        } else {
            (ms(50), Ok(201))
        }
    });
    let svc = fixed(ms(20)).build().unwrap().layer(peer.service());
    let t0 = Instant::now();
    Deadline::at(t0 + Duration::from_secs(1))
        .scope(svc.oneshot(1))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn decisions_are_traced_with_their_fields() {
    let traces = Traces::default();
    let _g = traces.install();
    a_hedge_wins_after_the_original_fails().await;
    let sent = traces.with_message("hedge sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, "steadfast::hedge");
    assert_eq!(sent[0].fields["hedge"], "1");
    assert_eq!(sent[0].fields["delay_ms"], "20.0");
    assert_eq!(sent[0].fields["deadline_remaining_ms"], "980.0");
    let won = traces.with_message("hedged call won; the other attempts are cancelled");
    assert_eq!(won[0].fields["winner"], "hedge");
    assert_eq!(won[0].fields["attempt"], "1");
    assert!(traces
        .spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "steadfast.hedge"));
}

// ---- gRPC A6's verdicts (ByOutcome) -----------------------------------------------------------

/// gRPC A6 in miniature: 503 is non-fatal, 429 non-fatal with a 100 ms pushback, 409 non-fatal
/// with a "do not retry" pushback, 400 fatal, other statuses succeed; errors are non-fatal.
fn a6_status(r: &Result<u16, BoxError>) -> Outcome {
    match r {
        Ok(503) => Outcome::retryable("unavailable"),
        Ok(429) => Outcome::retry_after("resource_exhausted", ms(100)),
        Ok(409) => Outcome::Pushback { reason: "pushback" },
        Ok(400) => Outcome::fatal("invalid_argument"),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::retryable("error"),
    }
}

type Script = fn(u32, usize) -> (Duration, Result<u16, &'static str>);

/// The same layer with gRPC A6's verdicts (`a6: true`) or the default ones.
fn a6_layer(
    delay: Duration,
    max_hedges: u32,
    a6: bool,
    peer: &Peer,
) -> BoxCloneService<u32, u16, BoxError> {
    let b = fixed(delay).max_hedges(max_hedges).classifier(a6_status);
    if a6 {
        let svc = b.policy(ByOutcome(HedgeAny)).build().unwrap();
        BoxCloneService::new(svc.layer(peer.service()))
    } else {
        BoxCloneService::new(b.build().unwrap().layer(peer.service()))
    }
}

#[tokio::test(start_paused = true)]
async fn by_outcome_a_fatal_failure_ends_the_call_at_once_and_cancels_the_others() {
    // The original would succeed at 1 s; the first hedge (sent at 30 ms) fails fatally at 40 ms.
    let script: Script = |_, nth| match nth {
        0 => (ms(1000), Ok(200)),
        1 => (ms(10), Ok(400)),
        _ => (ms(10), Ok(202)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 2, true, &peer).oneshot(1).await.unwrap(),
        400
    );
    assert_eq!(t0.elapsed(), ms(40));
    // The original is cancelled, and no second hedge is sent (it was due at 60 ms).
    assert_eq!(peer.fates(1), [Fate::Dropped, Fate::Finished]);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(peer.count(), 2);

    // The control, with the default verdicts: the failure waits; the second hedge, sent on
    // schedule at 60 ms, wins.
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 2, false, &peer).oneshot(1).await.unwrap(),
        202
    );
    assert_eq!(t0.elapsed(), ms(70));
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30), ms(60)]);
}

#[tokio::test(start_paused = true)]
async fn by_outcome_a_non_fatal_failure_sends_the_next_hedge_at_once() {
    // Delay 100 ms. The original fails non-fatally at 10 ms: the first hedge leaves then, not
    // at 100 ms, and the second one delay after it (110 ms), and wins at 130 ms.
    let script: Script = |_, nth| match nth {
        0 => (ms(10), Ok(503)),
        1 => (ms(1000), Ok(201)),
        _ => (ms(20), Ok(202)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(100), 2, true, &peer).oneshot(1).await.unwrap(),
        202
    );
    assert_eq!(t0.elapsed(), ms(130));
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(10), ms(110)]);
    assert_eq!(
        peer.fates(1),
        [Fate::Finished, Fate::Dropped, Fate::Finished]
    );

    // A non-fatal failure while another attempt runs: the next hedge leaves at once too.
    let script: Script = |_, nth| match nth {
        0 => (ms(1000), Ok(200)),
        1 => (ms(5), Err("reset")),
        _ => (ms(5), Ok(202)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(100), 2, true, &peer).oneshot(1).await.unwrap(),
        202
    );
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(100), ms(105)]);
    assert_eq!(t0.elapsed(), ms(110));

    // The control, with the default verdicts: nothing in flight, the call ends with the 503
    // (hedging is not retrying).
    let script: Script = |_, nth| match nth {
        0 => (ms(10), Ok(503)),
        _ => (ms(20), Ok(202)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(100), 2, false, &peer).oneshot(1).await.unwrap(),
        503
    );
    assert_eq!(t0.elapsed(), ms(10));
    assert_eq!(peer.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn by_outcome_server_pushback_delays_the_next_hedge() {
    // Delay 30 ms. The first hedge fails at 40 ms asking for 100 ms: the second leaves at
    // 140 ms instead of 60 ms, and wins at 150 ms.
    let script: Script = |_, nth| match nth {
        0 => (ms(1000), Ok(200)),
        1 => (ms(10), Ok(429)),
        _ => (ms(10), Ok(202)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 2, true, &peer).oneshot(1).await.unwrap(),
        202
    );
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30), ms(140)]);
    assert_eq!(t0.elapsed(), ms(150));

    // With nothing in flight, the call waits for the pushed-back hedge.
    let script: Script = |_, nth| match nth {
        0 => (ms(10), Ok(429)),
        _ => (ms(10), Ok(201)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 1, true, &peer).oneshot(1).await.unwrap(),
        201
    );
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(110)]);

    // The control, with the default verdicts: the second hedge keeps its schedule.
    let peer = Peer::new(|_, nth| match nth {
        0 => (ms(1000), Ok(200)),
        1 => (ms(10), Ok(429)),
        _ => (ms(10), Ok(202)),
    });
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 2, false, &peer).oneshot(1).await.unwrap(),
        202
    );
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30), ms(60)]);
}

#[tokio::test(start_paused = true)]
async fn by_outcome_server_pushback_to_stop_ends_hedging_but_not_the_call() {
    // The first hedge fails at 40 ms with "do not retry": no second hedge (due at 60 ms); the
    // original still runs and wins.
    let script: Script = |_, nth| match nth {
        0 => (ms(1000), Ok(200)),
        1 => (ms(10), Ok(409)),
        _ => (ms(10), Ok(202)),
    };
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 3, true, &peer).oneshot(1).await.unwrap(),
        200
    );
    assert_eq!(t0.elapsed(), ms(1000));
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30)]);

    // With nothing in flight, the call ends with the pushback at once.
    let peer = Peer::new(|_, _| (ms(10), Ok(409)));
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 3, true, &peer).oneshot(1).await.unwrap(),
        409
    );
    assert_eq!(t0.elapsed(), ms(10));
    assert_eq!(peer.count(), 1);

    // The control, with the default verdicts: the second hedge keeps its schedule, and wins.
    let peer = Peer::new(script);
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(30), 3, false, &peer).oneshot(1).await.unwrap(),
        202
    );
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(30), ms(60)]);
}

#[tokio::test(start_paused = true)]
async fn by_outcome_an_early_hedge_refused_by_the_budget_ends_an_idle_call() {
    // The original fails non-fatally with nothing else in flight; the hedge due at once is
    // refused by the budget: the call returns the failure instead of waiting forever.
    let peer = Peer::new(|_, _| (ms(10), Ok(503)));
    let svc = fixed(ms(100))
        .budget(Arc::new(Grants(AtomicU32::new(0))))
        .classifier(a6_status)
        .policy(ByOutcome(HedgeAny))
        .build()
        .unwrap()
        .layer(peer.service());
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 503);
    assert_eq!(t0.elapsed(), ms(10));
    assert_eq!(peer.count(), 1);

    // Every hedge sent: a last non-fatal failure ends the call.
    let peer = Peer::new(|_, nth| (ms(10 + 100 * nth as u64), Ok(503)));
    let t0 = Instant::now();
    assert_eq!(
        a6_layer(ms(5), 1, true, &peer).oneshot(1).await.unwrap(),
        503
    );
    assert_eq!(peer.offsets(1, t0), [ms(0), ms(5)]);
    assert_eq!(t0.elapsed(), ms(115));
}

#[tokio::test(start_paused = true)]
async fn by_outcome_a_fatal_failure_is_traced() {
    let traces = Traces::default();
    let _g = traces.install();
    let peer = Peer::new(|_, nth| {
        if nth == 0 {
            (ms(1000), Ok(200))
        } else {
            (ms(10), Ok(400))
        }
    });
    assert_eq!(
        a6_layer(ms(30), 1, true, &peer).oneshot(1).await.unwrap(),
        400
    );
    let ended =
        traces.with_message("fatal failure ends the hedged call; the other attempts are cancelled");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].fields["reason"], "invalid_argument");
    assert_eq!(ended[0].fields["attempt"], "1");
}

// ---- cost -----------------------------------------------------------------------------------

/// Heap allocations on this thread while a paused current-thread runtime drives 1,000 calls
/// (after 100 warm-up calls), as in `tests/alloc.rs`.
fn allocations_per_1000_calls<S>(mut svc: S) -> u64
where
    S: Service<u32, Response = u32>,
    S::Error: std::fmt::Debug,
{
    async fn drive<S: Service<u32, Response = u32>>(svc: &mut S, from: u32, n: u32)
    where
        S::Error: std::fmt::Debug,
    {
        for x in from..from + n {
            assert_eq!(svc.ready().await.unwrap().call(x).await.unwrap(), x);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(drive(&mut svc, 0, 100));
    allocation_counter::measure(|| rt.block_on(drive(&mut svc, 100, 1000))).count_total
}

/// An error that allocates nothing.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

#[test]
fn the_primary_wins_path_does_not_allocate() {
    let answer = || service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x)));
    // Completes on its first poll: no timer, no clock read.
    let fixed_layer = fixed(ms(10)).build().unwrap();
    assert_eq!(allocations_per_1000_calls(fixed_layer.layer(answer())), 0);
    let learned = HedgeLayer::builder()
        .delay(
            HedgeDelay::percentile(95.0)
                .min_samples(10)
                .recompute_every(Duration::from_secs(1), 10),
        )
        .policy(HedgeAny)
        .build()
        .unwrap();
    assert_eq!(allocations_per_1000_calls(learned.layer(answer())), 0);
    // Pending first (the hedge timer is armed), then the original wins before the delay.
    let slow = || {
        service_fn(|x: u32| async move {
            tokio::time::sleep(ms(1)).await;
            Ok::<_, Infallible>(x)
        })
    };
    assert_eq!(allocations_per_1000_calls(fixed_layer.layer(slow())), 0);
    let learned = HedgeLayer::builder()
        .delay(HedgeDelay::percentile(95.0).warmup_delay(ms(10)))
        .policy(HedgeAny)
        .build()
        .unwrap();
    assert_eq!(allocations_per_1000_calls(learned.layer(slow())), 0);
    // One hedge sent (at 1 ms) and the original still winning (at 5 ms): the hedge runs inline.
    static SENT: AtomicU32 = AtomicU32::new(0);
    let both_slow = service_fn(|x: u32| async move {
        SENT.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(ms(5)).await;
        Ok::<_, Infallible>(x)
    });
    let eager = fixed(ms(1)).build().unwrap();
    assert_eq!(allocations_per_1000_calls(eager.layer(both_slow)), 0);
    assert_eq!(SENT.load(Ordering::Relaxed), 2 * 1100);
    // gRPC A6's verdicts: the same paths, and a non-fatal failure sending the hedge at once.
    let a6 = fixed(ms(1)).policy(ByOutcome(HedgeAny)).build().unwrap();
    assert_eq!(allocations_per_1000_calls(a6.layer(slow())), 0);
    static TRIED: AtomicU32 = AtomicU32::new(0);
    let first_fails = service_fn(|x: u32| async move {
        let n = TRIED.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(ms(3)).await;
        if n.is_multiple_of(2) {
            Err(Refused)
        } else {
            Ok(x)
        }
    });
    let a6 = fixed(ms(100))
        .policy(ByOutcome(HedgeAny))
        .classifier(|r: &Result<u32, Refused>| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::retryable("refused"),
        })
        .build()
        .unwrap();
    assert_eq!(allocations_per_1000_calls(a6.layer(first_fails)), 0);
    assert_eq!(TRIED.load(Ordering::Relaxed), 2 * 1100);
    // The control: the counter sees an inner service that allocates.
    let boxing = service_fn(|x: u32| {
        std::future::ready(Ok::<_, Infallible>(*std::hint::black_box(Box::new(x))))
    });
    assert!(allocations_per_1000_calls(fixed(ms(10)).build().unwrap().layer(boxing)) >= 1000);
}

/// A learned delay pays for its histogram as latencies arrive: the first sample in a power of two
/// of microseconds allocates that power of two's counters (6 KiB, every slot of the window at
/// once), and nothing after that allocates, across window rotations, until a latency lands in a
/// power of two not seen before.
#[test]
fn a_learned_delay_allocates_once_per_power_of_two_then_never() {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    // 10-16 ms (8,192..16,383 µs), every 10th call 5 ms (4,096..8,191 µs): two powers of two, and
    // no call slower than the learned 95th percentile, so no hedge (a hedge's loser would record
    // its own elapsed time, in other powers of two).
    let peer = service_fn(|x: u32| async move {
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let d = if n % 10 == 9 {
            ms(5)
        } else {
            ms(10 + u64::from(n % 7))
        };
        tokio::time::sleep(d).await;
        Ok::<_, Infallible>(x)
    });
    let layer = HedgeLayer::builder()
        .delay(HedgeDelay::percentile(95.0).min_samples(10))
        .policy(HedgeAny)
        .build()
        .unwrap();
    let mut svc = layer.layer(peer);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    async fn drive<S: Service<u32, Response = u32>>(svc: &mut S, n: u32)
    where
        S::Error: std::fmt::Debug,
    {
        for x in 0..n {
            assert_eq!(svc.ready().await.unwrap().call(x).await.unwrap(), x);
        }
    }
    let first = allocation_counter::measure(|| rt.block_on(drive(&mut svc, 100)));
    assert!(first.bytes_total >= 2 * 6 * 1024, "{first:?}");
    assert!(layer.current_delay().unwrap() >= ms(16));
    // 2,000 more calls, about 25 s of paused time: the slots of the 30 s window rotate under them.
    let later = allocation_counter::measure(|| rt.block_on(drive(&mut svc, 2_000)));
    assert_eq!(later.count_total, 0, "{later:?}");
    // A latency in a new power of two (1 ms: 512..1,023 µs) allocates its group, once.
    let mut other = layer.layer(service_fn(|x: u32| async move {
        tokio::time::sleep(ms(1)).await;
        Ok::<_, Infallible>(x)
    }));
    let new_group = allocation_counter::measure(|| rt.block_on(drive(&mut other, 1)));
    assert_eq!(new_group.count_total, 1, "{new_group:?}");
    assert_eq!(new_group.bytes_total, 6 * 1024);
    let again = allocation_counter::measure(|| rt.block_on(drive(&mut other, 100)));
    assert_eq!(again.count_total, 0, "{again:?}");
}

#[test]
fn services_and_futures_are_send_and_clone() {
    fn send<T: Send>(_: &T) {}
    let peer = Peer::new(|_, _| (ms(1), Ok(200)));
    let mut svc = fixed(ms(10))
        .max_hedges(3)
        .build()
        .unwrap()
        .layer(peer.service());
    let other = svc.clone();
    send(&other);
    send(&svc.call(1));
    let mut learned = HedgeLayer::builder()
        .policy(HedgeAny)
        .build()
        .unwrap()
        .layer(peer.service());
    send(&learned.call(2));
}

// ---- configuration --------------------------------------------------------------------------

#[test]
fn builders_reject_nonsense() {
    fn field<P, C, R>(b: HedgeLayerBuilder<P, C, R>) -> String {
        let e: ConfigError = b.build().err().expect("a configuration error");
        e.path().to_owned()
    }
    let b = HedgeLayer::builder;
    for bad in [0.0, 100.0, -1.0, 150.0] {
        assert_eq!(
            field(b().delay(HedgeDelay::percentile(bad))),
            "delay.percentile"
        );
    }
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(f64::NAN))),
        "delay.percentile"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(f64::INFINITY))),
        "delay.percentile"
    );
    assert_eq!(field(b().max_hedges(0)), "max_hedges");
    assert_eq!(field(b().max_hedges(11)), "max_hedges");
    assert_eq!(field(b().delay(HedgeDelay::fixed(Duration::ZERO))), "delay");
    assert_eq!(
        field(b().delay(HedgeDelay::fixed(Duration::from_secs(3601)))),
        "delay"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(95.0).warmup_delay(Duration::ZERO))),
        "delay.warmup_delay"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(95.0).min_samples(0))),
        "delay.min_samples"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(95.0).window(ms(999)))),
        "delay.window"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(95.0).recompute_every(Duration::ZERO, 10))),
        "delay.recompute_interval"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(95.0).recompute_every(Duration::from_secs(60), 10))),
        "delay.recompute_interval"
    );
    assert_eq!(
        field(b().delay(HedgeDelay::percentile(95.0).recompute_every(Duration::from_secs(1), 0))),
        "delay.recompute_samples"
    );
    for bad in [f64::NAN, -0.5, f64::NEG_INFINITY, 0.0, 10.005] {
        assert_eq!(field(b().budget_ratio(bad)), "budget_ratio", "{bad}");
    }
    assert_eq!(field(b().budget_burst(0)), "budget_burst");
    assert_eq!(field(b().min_hedge_time(Duration::MAX)), "min_hedge_time");
    // The problems are typed.
    let e = b().budget_ratio(f64::NAN).build().unwrap_err();
    assert_eq!(e.problem(), &steadfast_layers::Problem::NotFinite);
    let e = b().max_hedges(0).build().unwrap_err();
    assert_eq!(e.problem(), &steadfast_layers::Problem::Zero);
    assert!(b().max_hedges(10).build().is_ok());
}

//! Break timers: when they arm, how they disarm, and that a lost or late one never keeps a
//! breaker open. Unit tests, because they look at the word's armed bit and count the open
//! breaker's clock reads.

use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker_ref;
use futures::FutureExt;
use tokio::runtime::{Builder, Runtime};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

use super::core::Core;
use super::{
    BreakDuration, BreakTimer, BreakerState, CircuitBreakerLayer, CircuitBreakerLayerBuilder,
    CircuitOpen, Mode,
};
use crate::BoxError;

const BREAK: Duration = Duration::from_secs(10);

type Peer = tower::util::BoxCloneService<bool, (), BoxError>;

/// A peer that fails when asked to.
fn peer() -> Peer {
    tower::util::BoxCloneService::new(service_fn(|fail: bool| async move {
        if fail {
            Err(BoxError::from("boom"))
        } else {
            Ok(())
        }
    }))
}

/// A breaker that opens on one failure for [`BREAK`].
fn builder(timer: BreakTimer) -> CircuitBreakerLayerBuilder {
    CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .break_duration(BreakDuration::constant(BREAK))
        .break_timer(timer)
}

/// [`builder`]'s layer.
fn layer(timer: BreakTimer) -> CircuitBreakerLayer {
    builder(timer).build().unwrap()
}

fn paused() -> Runtime {
    Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap()
}

/// Trips the breaker with one failed call.
async fn trip(svc: &mut super::CircuitBreaker<Peer>) {
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_none(), "{err}");
}

/// One call: `Ok` if admitted, else the refusal.
async fn attempt(svc: &mut super::CircuitBreaker<Peer>) -> Result<(), CircuitOpen> {
    match svc.ready().await.unwrap().call(false).await {
        Ok(()) => Ok(()),
        Err(e) => Err(*e.downcast_ref::<CircuitOpen>().unwrap()),
    }
}

/// Moves the paused clock on by `d` and lets the tasks whose timers fired run (the break timer).
async fn pass(d: Duration) {
    advance(d).await;
    tokio::task::yield_now().await;
}

fn clock_reads(core: &Core) -> u64 {
    core.clock_reads.load(Ordering::Relaxed)
}

#[test]
fn armed_refusals_read_the_clock_only_every_64th_and_the_timer_ends_the_break() {
    paused().block_on(async {
        let layer = layer(BreakTimer::Always);
        let core = layer.single_core();
        let mut svc = layer.layer(peer());
        let t0 = Instant::now();
        trip(&mut svc).await;
        assert!(core.is_armed());
        for i in 0..128 {
            let open = attempt(&mut svc).await.unwrap_err();
            assert_eq!(open.state(), BreakerState::Open, "refusal {i}");
            assert_eq!(open.probe_at(), Some(t0 + BREAK), "refusal {i}");
            assert_eq!(open.remaining(), Some(BREAK), "refusal {i}");
        }
        // The 64th and the 128th refusals checked the clock; the others did not.
        assert_eq!(clock_reads(&core), 2);
        assert_eq!(layer.handle().metrics().rejected, 128);

        pass(BREAK - Duration::from_millis(1)).await;
        assert!(core.is_armed(), "disarmed before the break ended");
        assert!(attempt(&mut svc).await.is_err());
        pass(Duration::from_millis(1)).await;
        assert!(
            !core.is_armed(),
            "the timer did not disarm at the end of the break"
        );
        // Disarmed: the next call reads the clock, finds the break over and goes in as a probe.
        assert_eq!(attempt(&mut svc).await, Ok(()));
        assert_eq!(layer.handle().state(), BreakerState::HalfOpen);
    });
}

#[test]
fn without_a_timer_every_refusal_reads_the_clock() {
    paused().block_on(async {
        let layer = layer(BreakTimer::Off);
        let core = layer.single_core();
        let mut svc = layer.layer(peer());
        trip(&mut svc).await;
        assert!(!core.is_armed());
        for _ in 0..10 {
            assert!(attempt(&mut svc).await.is_err());
        }
        assert_eq!(clock_reads(&core), 10);
        pass(BREAK).await;
        assert_eq!(attempt(&mut svc).await, Ok(()));
    });
    // No runtime at all: nothing to spawn on, so the clock (the peer answers at once, so its
    // calls need no runtime).
    let layer = layer(BreakTimer::Auto);
    let core = layer.single_core();
    let mut svc = layer.layer(peer());
    trip(&mut svc).now_or_never().expect("answered at once");
    assert!(!core.is_armed());
    let refused = attempt(&mut svc).now_or_never().expect("refused at once");
    assert!(refused.is_err());
    assert_eq!(clock_reads(&core), 1);
}

#[test]
fn auto_on_a_current_thread_runtime_arms_and_reads_the_clock_every_4th_refusal() {
    paused().block_on(async {
        let layer = layer(BreakTimer::Auto);
        let core = layer.single_core();
        let mut svc = layer.layer(peer());
        trip(&mut svc).await;
        assert!(core.is_armed());
        for _ in 0..16 {
            assert!(attempt(&mut svc).await.is_err());
        }
        // The 4th, 8th, 12th and 16th refusals checked the clock.
        assert_eq!(clock_reads(&core), 4);
        // The runtime is driven here: the timer ends the break exactly.
        pass(BREAK).await;
        assert!(!core.is_armed());
        assert_eq!(attempt(&mut svc).await, Ok(()));
        assert_eq!(layer.handle().state(), BreakerState::HalfOpen);
    });
}

#[test]
fn the_break_ends_when_the_timer_fires_not_when_its_task_runs() {
    paused().block_on(async {
        let layer = layer(BreakTimer::Auto);
        let core = layer.single_core();
        let mut svc = layer.layer(peer());
        trip(&mut svc).await;
        // The timer task runs once and registers its sleep.
        tokio::task::yield_now().await;
        assert!(core.is_armed());
        // `advance` fires the timer and wakes this task before the timer task runs again: the
        // disarm happened in the timer's wake, so the call goes in as a probe.
        advance(BREAK).await;
        assert!(!core.is_armed(), "still armed when the timer fired");
        assert_eq!(attempt(&mut svc).await, Ok(()));
        assert_eq!(layer.handle().state(), BreakerState::HalfOpen);
    });
}

#[test]
fn auto_arms_on_a_multi_thread_runtime_and_its_shutdown_disarms() {
    let layer = layer(BreakTimer::Auto);
    let core = layer.single_core();
    let mut svc = layer.layer(peer());
    let rt = multi_thread();
    rt.block_on(trip(&mut svc));
    assert!(core.is_armed());
    // Off never arms, whatever the runtime.
    let off = self::layer(BreakTimer::Off);
    let mut off_svc = off.layer(peer());
    rt.block_on(trip(&mut off_svc));
    assert!(!off.single_core().is_armed());

    // The runtime goes away with the timer still sleeping (the break is 10 s): dropping the task
    // disarms, so the breaker reads the clock again and cannot stay open for good.
    drop(rt);
    assert!(!core.is_armed(), "a lost timer left the breaker armed");
    let before = clock_reads(&core);
    let open = paused().block_on(attempt(&mut svc)).unwrap_err();
    assert_eq!(open.state(), BreakerState::Open);
    assert_eq!(clock_reads(&core), before + 1);
}

/// Trips a `timer` breaker on a current-thread runtime that nobody drives afterwards (its timer
/// never fires), then counts the calls refused after the break ended.
fn refused_after_the_break_with_a_stalled_timer(timer: BreakTimer) -> u32 {
    let stalled = Builder::new_current_thread().enable_time().build().unwrap();
    let rt = paused();
    let layer = rt.block_on(async { layer(timer) });
    let core = layer.single_core();
    let mut svc = layer.layer(peer());
    stalled.block_on(trip(&mut svc));
    assert!(core.is_armed(), "{timer:?}");

    let refused = rt.block_on(async {
        pass(BREAK + Duration::from_secs(1)).await;
        let mut refused = 0;
        while attempt(&mut svc).await.is_err() {
            refused += 1;
            assert!(
                refused < 64,
                "{timer:?}: still refused after {refused} calls"
            );
        }
        assert_eq!(layer.handle().state(), BreakerState::HalfOpen);
        refused
    });
    drop(stalled);
    refused
}

#[test]
fn a_timer_that_never_fires_holds_the_breaker_open_for_at_most_64_calls() {
    // BreakTimer::Always's hazard: about 64 calls. The refusal count starts at the trip's 0, so
    // the 64th refusal is the first to check.
    assert_eq!(
        refused_after_the_break_with_a_stalled_timer(BreakTimer::Always),
        63
    );
}

#[test]
fn auto_on_a_current_thread_runtime_nobody_drives_probes_within_4_calls() {
    // The sync program that calls `block_on` once per call: the timer never fires, and the 4th
    // refusal's clock check ends the break.
    assert_eq!(
        refused_after_the_break_with_a_stalled_timer(BreakTimer::Auto),
        3
    );
}

#[test]
fn a_stale_timer_does_not_disarm_a_later_break() {
    paused().block_on(async {
        let layer = layer(BreakTimer::Always);
        let core = layer.single_core();
        let handle = layer.handle();
        let mut svc = layer.layer(peer());
        trip(&mut svc).await; // open until 10 s, timer A
        pass(Duration::from_secs(5)).await;
        handle.close();
        trip(&mut svc).await; // open until 15 s, timer B
        assert!(core.is_armed());
        pass(Duration::from_secs(5)).await; // timer A fires at 10 s
        assert!(
            core.is_armed(),
            "the first break's timer disarmed the second break"
        );
        assert!(attempt(&mut svc).await.is_err());
        pass(Duration::from_secs(5)).await; // timer B fires at 15 s
        assert!(!core.is_armed());
        assert_eq!(attempt(&mut svc).await, Ok(()));
    });
}

#[test]
fn a_failed_probe_arms_a_new_timer() {
    paused().block_on(async {
        let layer = builder(BreakTimer::Always)
            .half_open_probes(1)
            .build()
            .unwrap();
        let core = layer.single_core();
        let mut svc = layer.layer(peer());
        trip(&mut svc).await;
        pass(BREAK).await;
        assert!(!core.is_armed());
        trip(&mut svc).await; // the probe fails: open again, for another break
        assert_eq!(layer.handle().state(), BreakerState::Open);
        assert!(core.is_armed());
        let reads = clock_reads(&core);
        assert!(attempt(&mut svc).await.is_err());
        assert_eq!(clock_reads(&core), reads);
    });
}

#[test]
fn readiness_mode_with_a_timer_wakes_at_the_end_of_the_break() {
    paused().block_on(async {
        let layer = builder(BreakTimer::Always)
            .mode(Mode::Readiness)
            .build()
            .unwrap();
        let core = layer.single_core();
        let mut svc = layer.layer(peer());
        trip(&mut svc).await;
        assert!(core.is_armed());
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(svc.poll_ready(&mut cx).is_pending());
        let t0 = Instant::now();
        // Not a busy loop at the end of the break: ready once the break is over.
        let ready = tokio::time::timeout(BREAK * 2, svc.ready()).await;
        assert!(ready.is_ok(), "never became ready");
        assert_eq!(Instant::now() - t0, BREAK);
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(layer.handle().state(), BreakerState::HalfOpen);
    });
}

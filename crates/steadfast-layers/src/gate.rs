//! The one concurrency gate, with no lock on its success path, shared by every concurrency
//! limiter: the fixed limit ([`limit`](crate::limit)), the [`bulkhead`](crate::bulkhead) (a
//! limit with a bounded queue) and the adaptive limit ([`adaptive_limit`](crate::adaptive_limit), which moves
//! the maximum). At most `max` slots taken at once, at most `max_queue` callers waiting (or any
//! number), and callers that wait are served in arrival order.
//!
//! # Settable maximum
//!
//! `max` is an atomic ([`Gate::set_max`]): raising it hands the new slots to waiters at once;
//! lowering it below the slots taken lets the calls in flight finish, and no slot is taken or
//! handed over until fewer than the new `max` are taken.
//!
//! # Bounded queue
//!
//! [`Gate::register`] refuses to queue a caller ([`Registered::Full`]) when `max_queue` callers
//! already wait for a slot (`waiters`, below). A caller handed its slot has left the queue.
//!
//! # State
//!
//! One `AtomicU64`: the low 32 bits count the slots taken (`in_flight`), the high 32 bits the
//! queued callers that have not been handed a slot yet (`waiters`). Beside it, `handoff`, a
//! tokio `Semaphore` that starts with no permit, carries slots from releasers to waiters.
//!
//! - **Admit** ([`Gate::try_acquire`]): one CAS, only if `waiters == 0 && in_flight < max`
//!   (`in_flight + 1`). A newcomer never overtakes a waiter.
//! - **Release** (dropping a [`GatePermit`]): one `fetch_sub` (`in_flight - 1`). If it found
//!   waiters, one more CAS takes the slot back for the first of them (`in_flight + 1`,
//!   `waiters - 1`) and hands it over through one `handoff` permit (`add_permits(1)`, which takes
//!   tokio's lock). In between, a slot is free while `waiters > 0`: nobody else can take it, as
//!   admitting needs `waiters == 0`. If every waiter left meanwhile (`waiters == 0`), the slot
//!   just stays free (and if a newcomer has taken it since, `in_flight == max`, there is nothing
//!   left to hand over). Only a release that finds a waiter takes a lock.
//! - **Wait** ([`Gate::register`]): one CAS takes a free slot at once as `try_acquire` would, or
//!   counts the caller in `waiters`. A queued caller then awaits one `handoff` permit (tokio's
//!   semaphore is fair: first come, first served) and forgets it: `in_flight` already counts the
//!   slot it stands for.
//! - **Cancel** (a queued caller dropped, or timed out, before it is served): tokio's acquire
//!   future, dropped first, gives back a permit it was already assigned (it goes to the next
//!   waiter). Then one CAS: with `waiters > 0`, `waiters - 1`; with `waiters == 0`, a handoff is
//!   owed to one of the queued callers and, as they are interchangeable, this one takes it
//!   (`handoff.try_acquire`, forgotten) and releases that slot like a permit (handing it on or
//!   freeing it).
//!
//! # Invariant
//!
//! `waiters + handoff permits issued and not yet consumed == queued callers` (those registered
//! and neither served nor cancelled). "Issued" counts permits free in `handoff` and permits
//! tokio has assigned to a waiter that has not seen them yet. The one exception is the instant
//! between a handover's CAS (`waiters - 1`) and its `add_permits(1)`, when the permit is owed
//! but not issued yet. A cancelled caller that finds `waiters == 0` and no free permit is in that
//! instant, or a newcomer's acquire took the free permit (and its registration raised
//! `waiters`, which the canceller then takes back instead): it yields its thread and looks again.
//! It cannot spin for long: the releaser is inside one synchronous `drop`.
//!
//! Waiters are served in the order their waits first poll `handoff` (as with tokio's own
//! `acquire`, which queues on its first poll).
//!
//! `in_flight` counts the slots held by permits and the slots handed to waiters not yet served;
//! it never exceeds `max` (save just after `max` is lowered, until enough calls finish). A `max`
//! or `max_queue` above `u32::MAX` acts as `u32::MAX`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, Instant, Sleep};

/// The `in_flight` bits of the state.
const IN_FLIGHT: u64 = 0xFFFF_FFFF;
/// One waiter in the state.
const WAITER: u64 = 1 << 32;

fn in_flight(s: u64) -> u64 {
    s & IN_FLIGHT
}

fn waiters(s: u64) -> u64 {
    s >> 32
}

/// At most `max` slots taken at once; see the [module docs](self).
pub(crate) struct Gate {
    state: AtomicU64,
    max: AtomicU64,
    max_queue: u64,
    handoff: Semaphore,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        f.debug_struct("Gate")
            .field("max", &self.max.load(Ordering::Relaxed))
            .field("max_queue", &self.max_queue)
            .field("in_flight", &in_flight(s))
            .field("waiters", &waiters(s))
            .finish_non_exhaustive()
    }
}

/// A taken slot, given back (to the first waiter, or freed) when dropped.
#[derive(Debug)]
pub(crate) struct GatePermit {
    gate: Arc<Gate>,
}

impl Drop for GatePermit {
    #[inline]
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// What [`Gate::register`] did.
#[derive(Debug)]
pub(crate) enum Registered {
    /// A slot was free and nobody waited: it is taken.
    Acquired(GatePermit),
    /// The caller is queued; [`Queued::wait`] waits for its slot.
    Queued(Queued),
    /// No slot is free and `max_queue` callers already wait: the caller is not queued.
    Full,
}

/// A queued caller; dropping it before it is served gives up its place (see the module docs).
#[derive(Debug)]
pub(crate) struct Queued {
    gate: Arc<Gate>,
    served: bool,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.served {
            self.gate.cancel();
        }
    }
}

impl Gate {
    /// A gate of `max` slots (`u32::MAX` at most) and a queue with no bound.
    pub(crate) fn new(max: usize) -> Self {
        Self::with_queue(max, usize::MAX)
    }

    /// A gate of `max` slots (`u32::MAX` at most) and at most `max_queue` waiting callers.
    pub(crate) fn with_queue(max: usize, max_queue: usize) -> Self {
        Self {
            state: AtomicU64::new(0),
            max: AtomicU64::new((max as u64).min(IN_FLIGHT)),
            max_queue: (max_queue as u64).min(IN_FLIGHT),
            handoff: Semaphore::new(0),
        }
    }

    /// The most slots taken at once now.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Acquire) as usize
    }

    /// Sets the most slots taken at once (`u32::MAX` at most). Raising it hands the new slots
    /// to waiting callers; lowering it takes no slot back (see the module docs).
    pub(crate) fn set_max(&self, max: usize) {
        self.max
            .store((max as u64).min(IN_FLIGHT), Ordering::Release);
        while self.hand_off() {}
    }

    /// Slots taken now (including slots handed to waiters not yet served).
    pub(crate) fn in_flight(&self) -> usize {
        in_flight(self.state.load(Ordering::Acquire)) as usize
    }

    /// Queued callers not yet handed a slot.
    pub(crate) fn waiters(&self) -> usize {
        waiters(self.state.load(Ordering::Acquire)) as usize
    }

    /// Takes a slot if one is free and nobody waits for one: one CAS and one `Arc` clone.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<GatePermit> {
        self.try_take().map(|_| GatePermit {
            gate: Arc::clone(self),
        })
    }

    /// Takes a slot as [`try_acquire`](Self::try_acquire) does, without a permit object: the
    /// caller gives it back with [`release`](Self::release), exactly once (for a caller that
    /// already holds an `Arc` to what owns the gate). Returns the slots taken, this one
    /// included.
    #[inline]
    pub(crate) fn try_take(&self) -> Option<usize> {
        let max = self.max.load(Ordering::Relaxed);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if waiters(s) != 0 || in_flight(s) >= max {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(in_flight(s) as usize + 1),
                Err(now) => s = now,
            }
        }
    }

    /// Takes a free slot as [`try_acquire`](Self::try_acquire) would, or queues the caller if
    /// fewer than `max_queue` wait.
    pub(crate) fn register(self: &Arc<Self>) -> Registered {
        let max = self.max.load(Ordering::Relaxed);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let admit = waiters(s) == 0 && in_flight(s) < max;
            let next = if admit {
                s + 1
            } else if waiters(s) >= self.max_queue {
                return Registered::Full;
            } else {
                // Each waiter holds an allocation: four billion of them cannot exist.
                assert!(waiters(s) < IN_FLIGHT, "more than u32::MAX waiters");
                s + WAITER
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if admit => {
                    return Registered::Acquired(GatePermit {
                        gate: Arc::clone(self),
                    })
                }
                Ok(_) => {
                    return Registered::Queued(Queued {
                        gate: Arc::clone(self),
                        served: false,
                    })
                }
                Err(now) => s = now,
            }
        }
    }

    /// Gives a slot back: to the first waiter if there is one, else frees it.
    #[inline]
    pub(crate) fn release(&self) {
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if waiters(prev) != 0 {
            self.hand_off();
        }
    }

    /// After a release freed a slot while callers waited: takes the slot back for the first
    /// waiter. Nobody else can take it while `waiters > 0`; if every waiter left meanwhile the
    /// slot stays free (and may have been taken since: `in_flight == max`). Returns whether a
    /// slot was handed over.
    #[cold]
    fn hand_off(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        let mut s = self.state.load(Ordering::Relaxed);
        while waiters(s) != 0 && in_flight(s) < max {
            match self.state.compare_exchange_weak(
                s,
                s + 1 - WAITER,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // The slot stays counted in `in_flight`: it now belongs to a waiter.
                    self.handoff.add_permits(1);
                    return true;
                }
                Err(now) => s = now,
            }
        }
        false
    }

    /// A queued caller leaves without being served (its acquire future is already dropped).
    fn cancel(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if waiters(s) != 0 {
                match self.state.compare_exchange_weak(
                    s,
                    s - WAITER,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(now) => {
                        s = now;
                        continue;
                    }
                }
            }
            // Every queued caller is owed a handoff: take one and pass its slot on.
            if let Ok(permit) = self.handoff.try_acquire() {
                permit.forget();
                self.release();
                return;
            }
            // The handoff is on its way (a handover between its CAS and `add_permits`), or a
            // newcomer's acquire took it (and raised `waiters`): look again.
            std::thread::yield_now();
            s = self.state.load(Ordering::Relaxed);
        }
    }
}

type Handoff = Pin<Box<dyn Future<Output = Option<GatePermit>> + Send + Sync>>;

impl Queued {
    /// Waits for this caller's slot, until `deadline` if any. Allocates once.
    pub(crate) fn wait(self, deadline: Option<Instant>) -> GateWait {
        let gate = Arc::clone(&self.gate);
        GateWait {
            acquire: Box::pin(async move {
                // `handoff` is never closed.
                let permit = gate.handoff.acquire().await.ok()?;
                // The slot is already counted in `in_flight`.
                permit.forget();
                Some(GatePermit { gate })
            }),
            timer: deadline.map(sleep_until),
            queued: self,
        }
    }
}

/// A queued caller waiting for its slot.
#[pin_project]
pub(crate) struct GateWait {
    // Fields drop in this order: tokio's acquire future first (giving back a permit it was
    // assigned but never returned), then `queued` (leaving the queue if not served).
    acquire: Handoff,
    #[pin]
    timer: Option<Sleep>,
    queued: Queued,
}

impl std::fmt::Debug for GateWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateWait")
            .field("bounded", &self.timer.is_some())
            .finish_non_exhaustive()
    }
}

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum Waited {
    Acquired(GatePermit),
    TimedOut,
}

impl GateWait {
    /// Polls the wait. A slot handed over at the same instant as the timer fires wins.
    pub(crate) fn poll_wait(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        let this = self.project();
        if this.queued.served {
            return Poll::Ready(Waited::TimedOut);
        }
        match this.acquire.as_mut().poll(cx) {
            Poll::Ready(Some(permit)) => {
                this.queued.served = true;
                return Poll::Ready(Waited::Acquired(permit));
            }
            // Unreachable (`handoff` is never closed); nothing is owed to a closed wait.
            Poll::Ready(None) => {
                this.queued.served = true;
                return Poll::Ready(Waited::TimedOut);
            }
            Poll::Pending => {}
        }
        match this.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Waited::TimedOut),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::rng::{RandomSource, SeededRng};

    fn queue(gate: &Arc<Gate>, deadline: Option<Instant>) -> Pin<Box<GateWait>> {
        match gate.register() {
            Registered::Queued(q) => Box::pin(q.wait(deadline)),
            Registered::Acquired(_) | Registered::Full => panic!("expected to queue"),
        }
    }

    fn poll(w: &mut Pin<Box<GateWait>>) -> Poll<Waited> {
        let waker = futures::task::noop_waker();
        w.as_mut().poll_wait(&mut Context::from_waker(&waker))
    }

    fn served(w: &mut Pin<Box<GateWait>>) -> GatePermit {
        match poll(w) {
            Poll::Ready(Waited::Acquired(p)) => p,
            Poll::Ready(Waited::TimedOut) => panic!("timed out"),
            Poll::Pending => panic!("still waiting"),
        }
    }

    /// Every slot can be taken again, and no more.
    fn assert_whole(gate: &Arc<Gate>, max: usize) {
        assert_eq!((gate.in_flight(), gate.waiters()), (0, 0));
        assert_eq!(gate.handoff.available_permits(), 0);
        let all: Vec<_> = (0..max).map(|_| gate.try_acquire().unwrap()).collect();
        assert!(gate.try_acquire().is_none());
        assert_eq!(gate.in_flight(), max);
        drop(all);
        assert_eq!(gate.in_flight(), 0);
    }

    /// `waiters` + issued handoff permits == queued callers, when no waiter holds an assigned
    /// permit (none is polled).
    fn assert_invariant(gate: &Gate, queued: usize) {
        assert_eq!(gate.waiters() + gate.handoff.available_permits(), queued);
    }

    #[tokio::test]
    async fn admits_up_to_max_then_hands_off_in_arrival_order() {
        let gate = Arc::new(Gate::new(1));
        let first = gate.try_acquire().unwrap();
        let mut waits: Vec<_> = (0..3).map(|_| queue(&gate, None)).collect();
        for w in &mut waits {
            assert!(poll(w).is_pending());
        }
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 3));
        drop(first);
        // The slot went to the first waiter, not back to the pool.
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 2));
        assert!(poll(&mut waits[2]).is_pending());
        assert!(poll(&mut waits[1]).is_pending());
        let a = served(&mut waits[0]);
        drop(a);
        assert!(poll(&mut waits[2]).is_pending());
        let b = served(&mut waits[1]);
        drop(b);
        let c = served(&mut waits[2]);
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 0));
        drop(c);
        drop(waits);
        assert_whole(&gate, 1);
    }

    #[tokio::test]
    async fn a_newcomer_never_overtakes_a_waiter() {
        let gate = Arc::new(Gate::new(2));
        let p1 = gate.try_acquire().unwrap();
        let p2 = gate.try_acquire().unwrap();
        let mut w = queue(&gate, None);
        assert!(poll(&mut w).is_pending());
        // A free slot is handed to the waiter, so a newcomer still finds none.
        drop(p1);
        assert!(gate.try_acquire().is_none());
        assert!(matches!(gate.register(), Registered::Queued(_)));
        let served = served(&mut w);
        assert!(gate.try_acquire().is_none());
        // With nobody waiting, a release frees the slot.
        drop(p2);
        let p3 = gate.try_acquire().unwrap();
        assert!(matches!(gate.register(), Registered::Queued(_)));
        drop((served, p3, w));
        assert_whole(&gate, 2);
    }

    #[tokio::test]
    async fn register_takes_a_free_slot_at_once() {
        let gate = Arc::new(Gate::new(1));
        let Registered::Acquired(p) = gate.register() else {
            panic!("a free slot is taken at once");
        };
        assert_eq!(gate.in_flight(), 1);
        drop(p);
        assert_whole(&gate, 1);
    }

    #[tokio::test]
    async fn cancelling_a_waiter_before_its_handoff_loses_no_slot() {
        let gate = Arc::new(Gate::new(1));
        let p = gate.try_acquire().unwrap();
        let mut a = queue(&gate, None);
        let mut b = queue(&gate, None);
        assert!(poll(&mut a).is_pending());
        assert!(poll(&mut b).is_pending());
        drop(a);
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 1));
        drop(p);
        let pb = served(&mut b);
        drop((pb, b));
        assert_whole(&gate, 1);
        // The same for a waiter never polled.
        let p = gate.try_acquire().unwrap();
        let c = queue(&gate, None);
        drop(c);
        drop(p);
        assert_whole(&gate, 1);
    }

    #[tokio::test]
    async fn cancelling_a_waiter_after_its_handoff_passes_the_slot_on() {
        let gate = Arc::new(Gate::new(2));
        let p1 = gate.try_acquire().unwrap();
        let p2 = gate.try_acquire().unwrap();
        let mut a = queue(&gate, None);
        let mut b = queue(&gate, None);
        assert!(poll(&mut a).is_pending());
        assert!(poll(&mut b).is_pending());
        // tokio assigns the handoff to `a`, which never sees it.
        drop(p1);
        assert_eq!((gate.in_flight(), gate.waiters()), (2, 1));
        drop(a);
        // `a`'s slot went on to `b`.
        assert_eq!((gate.in_flight(), gate.waiters()), (2, 0));
        let pb = served(&mut b);
        drop((pb, b, p2));
        assert_whole(&gate, 2);
    }

    #[tokio::test]
    async fn cancelling_the_last_waiter_after_its_handoff_frees_the_slot() {
        let gate = Arc::new(Gate::new(1));
        // Polled (tokio assigned the permit to it) and never polled (the permit is free).
        for polled in [true, false] {
            let p = gate.try_acquire().unwrap();
            let mut a = queue(&gate, None);
            if polled {
                assert!(poll(&mut a).is_pending());
            }
            drop(p);
            assert_eq!((gate.in_flight(), gate.waiters()), (1, 0));
            assert!(gate.try_acquire().is_none());
            drop(a);
            assert_whole(&gate, 1);
        }
    }

    #[tokio::test]
    async fn the_invariant_holds_through_releases_and_cancellations() {
        let gate = Arc::new(Gate::new(2));
        let mut held: Vec<_> = (0..2).map(|_| gate.try_acquire().unwrap()).collect();
        let mut queued: Vec<_> = (0..4)
            .map(|_| match gate.register() {
                Registered::Queued(q) => q,
                Registered::Acquired(_) | Registered::Full => panic!("full"),
            })
            .collect();
        assert_invariant(&gate, 4);
        held.pop();
        assert_invariant(&gate, 4);
        assert_eq!((gate.waiters(), gate.handoff.available_permits()), (3, 1));
        queued.pop();
        assert_invariant(&gate, 3);
        held.pop();
        assert_invariant(&gate, 3);
        assert_eq!((gate.waiters(), gate.handoff.available_permits()), (1, 2));
        // Cancelled callers take back `waiters` first, then owed handoffs.
        queued.pop();
        assert_eq!((gate.waiters(), gate.handoff.available_permits()), (0, 2));
        assert_invariant(&gate, 2);
        assert_eq!(gate.in_flight(), 2);
        queued.pop();
        assert_invariant(&gate, 1);
        assert_eq!(gate.in_flight(), 1);
        // The last one is served.
        let mut w = Box::pin(queued.pop().unwrap().wait(None));
        let p = served(&mut w);
        assert_invariant(&gate, 0);
        drop((p, w));
        assert_whole(&gate, 2);
    }

    /// A release in two steps (`fetch_sub`, then `hand_off`), with other callers acting in
    /// between: the slot goes to a waiter only if it is still free and someone still waits.
    #[tokio::test]
    async fn a_release_interleaved_with_others_hands_over_only_a_free_slot() {
        let gate = Arc::new(Gate::new(1));
        // Every waiter leaves between the two steps: the slot stays free.
        gate.state.fetch_add(1, Ordering::AcqRel); // a slot held, without a permit object
        let a = queue(&gate, None);
        gate.state.fetch_sub(1, Ordering::AcqRel);
        drop(a);
        gate.hand_off();
        assert_whole(&gate, 1);

        // A waiter leaves, a newcomer takes the freed slot and another caller queues: nothing
        // is left to hand over; the newcomer's release serves the new waiter.
        gate.state.fetch_add(1, Ordering::AcqRel);
        let a = queue(&gate, None);
        gate.state.fetch_sub(1, Ordering::AcqRel);
        drop(a);
        let newcomer = gate.try_acquire().unwrap();
        let mut b = queue(&gate, None);
        gate.hand_off();
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 1));
        assert_eq!(gate.handoff.available_permits(), 0);
        assert!(poll(&mut b).is_pending());
        drop(newcomer);
        let pb = served(&mut b);
        drop((pb, b));
        assert_whole(&gate, 1);

        // Someone still waits: the slot is taken back and handed over.
        gate.state.fetch_add(1, Ordering::AcqRel);
        let mut c = queue(&gate, None);
        gate.state.fetch_sub(1, Ordering::AcqRel);
        assert!(gate.try_acquire().is_none(), "a waiter is queued");
        gate.hand_off();
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 0));
        let pc = served(&mut c);
        drop((pc, c));
        assert_whole(&gate, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_gives_up_and_the_slot_is_not_lost() {
        let gate = Arc::new(Gate::new(1));
        let p = gate.try_acquire().unwrap();
        let start = Instant::now();
        let mut w = queue(&gate, Some(start + Duration::from_millis(10)));
        let waited = poll_fn(|cx| w.as_mut().poll_wait(cx)).await;
        assert!(matches!(waited, Waited::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        drop(w);
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 0));
        drop(p);
        assert_whole(&gate, 1);

        // A slot handed over at the deadline wins over the timer.
        let p = gate.try_acquire().unwrap();
        let mut w = queue(&gate, Some(Instant::now() + Duration::from_millis(10)));
        assert!(poll(&mut w).is_pending());
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(p);
        let p = served(&mut w);
        drop((p, w));
        assert_whole(&gate, 1);

        // A waiter whose slot was handed over as it timed out gives it back.
        let p = gate.try_acquire().unwrap();
        let mut w = queue(&gate, Some(Instant::now() + Duration::from_millis(10)));
        assert!(poll(&mut w).is_pending());
        drop(p);
        drop(w);
        assert_whole(&gate, 1);
    }

    #[tokio::test]
    async fn the_queue_bound_refuses_callers_beyond_it() {
        let gate = Arc::new(Gate::with_queue(1, 2));
        let p = gate.try_acquire().unwrap();
        let mut a = queue(&gate, None);
        let b = queue(&gate, None);
        assert!(matches!(gate.register(), Registered::Full));
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 2));
        // A caller handed its slot has left the queue: room for one more.
        drop(p);
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 1));
        let c = queue(&gate, None);
        assert!(matches!(gate.register(), Registered::Full));
        let pa = served(&mut a);
        drop((pa, a, b, c));
        assert_whole(&gate, 1);

        // No queue at all: a free slot is still taken.
        let gate = Arc::new(Gate::with_queue(1, 0));
        let Registered::Acquired(p) = gate.register() else {
            panic!("a slot was free")
        };
        assert!(matches!(gate.register(), Registered::Full));
        drop(p);
        assert_whole(&gate, 1);
    }

    #[tokio::test]
    async fn raising_max_serves_waiters_and_lowering_it_lets_calls_finish() {
        let gate = Arc::new(Gate::new(1));
        let p = gate.try_acquire().unwrap();
        let mut a = queue(&gate, None);
        let mut b = queue(&gate, None);
        let mut c = queue(&gate, None);
        assert!(poll(&mut a).is_pending());
        // Two more slots go to the first two waiters at once.
        gate.set_max(3);
        assert_eq!((gate.max(), gate.in_flight(), gate.waiters()), (3, 3, 1));
        let pa = served(&mut a);
        let pb = served(&mut b);
        assert!(poll(&mut c).is_pending());
        // Lowered below the slots taken: nothing is taken back, nothing new is admitted...
        gate.set_max(1);
        assert!(gate.try_acquire().is_none());
        drop(pa);
        drop(pb);
        assert_eq!((gate.in_flight(), gate.waiters()), (1, 1));
        assert!(poll(&mut c).is_pending(), "still at the new max");
        // ...until fewer than the new max are taken.
        drop(p);
        let pc = served(&mut c);
        assert!(gate.try_acquire().is_none());
        drop((pc, a, b, c));
        assert_whole(&gate, 1);
        // Counted slots without permits, as the adaptive limit takes them.
        assert_eq!(gate.try_take(), Some(1));
        assert_eq!(gate.try_take(), None);
        gate.release();
        assert_whole(&gate, 1);
    }

    /// One holder of a slot, counted in `busy` until dropped, before its permit is released.
    struct Busy<'a> {
        busy: &'a AtomicUsize,
        _permit: GatePermit,
    }

    impl<'a> Busy<'a> {
        fn enter(busy: &'a AtomicUsize, peak: &AtomicUsize, permit: GatePermit) -> Self {
            let n = busy.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            Self {
                busy,
                _permit: permit,
            }
        }
    }

    impl Drop for Busy<'_> {
        fn drop(&mut self) {
            self.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Thousands of calls from six tasks on two threads, a few more tasks than slots (so the
    /// queue is often short and a cancelled waiter may hold the only handoffs): some take a slot at
    /// once or fail, some wait, some are cancelled (dropped after a random number of yields, polled
    /// meanwhile or not, or by a short timeout), waiting or holding a slot, while the maximum
    /// moves. Never more than `max` hold a slot, and at the end every slot is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stress_never_exceeds_max_and_loses_no_slot() {
        const MAX: usize = 4;
        const WORKERS: u64 = 6;
        const CALLS: usize = 3_000;
        let gate = Arc::new(Gate::new(MAX));
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (gate, busy, peak, served) =
                    (gate.clone(), busy.clone(), peak.clone(), served.clone());
                tokio::spawn(async move {
                    let rng = SeededRng::new(0x6a7e + w);
                    for _ in 0..CALLS {
                        let roll = rng.next_u64();
                        let work = async {
                            let permit = if roll.is_multiple_of(4) {
                                match gate.try_acquire() {
                                    Some(p) => p,
                                    None => return,
                                }
                            } else {
                                match gate.register() {
                                    Registered::Acquired(p) => p,
                                    Registered::Full => unreachable!("no bound"),
                                    Registered::Queued(q) => {
                                        let mut w = Box::pin(q.wait(None));
                                        match poll_fn(|cx| w.as_mut().poll_wait(cx)).await {
                                            Waited::Acquired(p) => p,
                                            Waited::TimedOut => unreachable!(),
                                        }
                                    }
                                }
                            };
                            // Counted out before the permit is released, even if cancelled.
                            let held = Busy::enter(&busy, &peak, permit);
                            served.fetch_add(1, Ordering::SeqCst);
                            for _ in 0..(roll >> 8) % 4 {
                                tokio::task::yield_now().await;
                            }
                            drop(held);
                        };
                        match (roll >> 4) % 4 {
                            // Cancelled after a few yields, waiting or holding a slot.
                            0 => {
                                let yields = async {
                                    for _ in 0..(roll >> 16) % 6 {
                                        tokio::task::yield_now().await;
                                    }
                                };
                                tokio::select! {
                                    () = work => {}
                                    () = yields => {}
                                }
                            }
                            // Cancelled by a short timeout.
                            1 => {
                                let d = Duration::from_micros((roll >> 16) % 50);
                                let _ = tokio::time::timeout(d, work).await;
                            }
                            // Polled once (queued, maybe), left alone for a few yields (a slot
                            // may be handed to it meanwhile), then dropped.
                            2 => {
                                let mut work = std::pin::pin!(work);
                                let once = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
                                if once.is_pending() {
                                    for _ in 0..(roll >> 16) % 16 {
                                        tokio::task::yield_now().await;
                                    }
                                }
                            }
                            _ => work.await,
                        }
                    }
                })
            })
            .collect();
        // Meanwhile the maximum moves between 1 and MAX, as an adaptive limit moves it.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mover = {
            let (gate, done) = (gate.clone(), done.clone());
            tokio::spawn(async move {
                let rng = SeededRng::new(0x5e7);
                while !done.load(Ordering::SeqCst) {
                    gate.set_max(1 + (rng.next_u64() % MAX as u64) as usize);
                    tokio::task::yield_now().await;
                }
                gate.set_max(MAX);
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        mover.await.unwrap();
        assert!(peak.load(Ordering::SeqCst) <= MAX, "{peak:?} in flight");
        assert!(peak.load(Ordering::SeqCst) >= 2, "no concurrency");
        assert!(served.load(Ordering::SeqCst) > CALLS * WORKERS as usize / 4);
        assert_whole(&gate, MAX);
    }
}

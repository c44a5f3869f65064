//! A shared record of who gave up when and what work servers did, to measure wasted work.
//!
//! Clients and servers run in one process on one clock ([`tokio::time::Instant`]), so the lab
//! can compare, for every call a server finished, when it finished with when the caller (or the
//! client's attempt) had stopped waiting. Requests are tied together by the lab's
//! `x-lab-request-id` and `x-lab-attempt-id` headers (see [`crate::client`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// What a server did with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// The server's name.
    pub server: &'static str,
    /// The logical request (the lab client's request id), if the call carried one.
    pub request: Option<u64>,
    /// The client attempt that made the call, if it carried one.
    pub attempt: Option<u64>,
    /// When the server started working on it (after any queueing).
    pub started: Instant,
    /// When it stopped working on it.
    pub ended: Instant,
    /// Whether it finished the work and served a response (`false`: stopped by a deadline).
    pub served: bool,
}

/// The shared record. Cheap enough for the lab's rates: one short lock per event.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Logical request id -> when the original caller gave up on it.
    callers_gave_up: HashMap<u64, Instant>,
    /// Attempt id -> when the client stopped waiting for that attempt.
    attempts_abandoned: HashMap<u64, Instant>,
    work: Vec<Work>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The original caller stopped waiting for `request` at `at` (it failed or timed out).
    pub fn caller_gave_up(&self, request: u64, at: Instant) {
        self.lock().callers_gave_up.insert(request, at);
    }

    /// The client stopped waiting for attempt `attempt` at `at` (its future was dropped).
    pub fn attempt_abandoned(&self, attempt: u64, at: Instant) {
        self.lock().attempts_abandoned.insert(attempt, at);
    }

    /// A server finished (or stopped) a call.
    pub fn record_work(&self, work: Work) {
        self.lock().work.push(work);
    }

    /// Calls `server` served (finished and answered) after the original caller had given up.
    pub fn served_after_caller_gave_up(&self, server: &str) -> u64 {
        let inner = self.lock();
        inner
            .work
            .iter()
            .filter(|w| w.server == server && w.served)
            .filter(|w| {
                w.request
                    .and_then(|r| inner.callers_gave_up.get(&r))
                    .is_some_and(|gave_up| w.ended > *gave_up)
            })
            .count() as u64
    }

    /// Calls `server` served after the client attempt that made them had been abandoned.
    pub fn served_after_attempt_abandoned(&self, server: &str) -> u64 {
        let inner = self.lock();
        inner
            .work
            .iter()
            .filter(|w| w.server == server && w.served)
            .filter(|w| {
                w.attempt
                    .and_then(|a| inner.attempts_abandoned.get(&a))
                    .is_some_and(|abandoned| w.ended > *abandoned)
            })
            .count() as u64
    }

    /// Total time `server` spent working, and the part of it spent after the original caller
    /// had given up.
    pub fn work_time(&self, server: &str) -> (Duration, Duration) {
        let inner = self.lock();
        let mut total = Duration::ZERO;
        let mut wasted = Duration::ZERO;
        for w in inner.work.iter().filter(|w| w.server == server) {
            total += w.ended.saturating_duration_since(w.started);
            if let Some(gave_up) = w.request.and_then(|r| inner.callers_gave_up.get(&r)) {
                let from = w.started.max(*gave_up);
                wasted += w.ended.saturating_duration_since(from);
            }
        }
        (total, wasted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_work_after_give_up() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let ledger = Ledger::new();
        ledger.caller_gave_up(1, t0 + ms(100));
        ledger.attempt_abandoned(10, t0 + ms(50));
        let work = |request, attempt, ended, served| Work {
            server: "b",
            request: Some(request),
            attempt: Some(attempt),
            started: t0,
            ended: t0 + ms(ended),
            served,
        };
        ledger.record_work(work(1, 10, 150, true)); // after both
        ledger.record_work(work(1, 11, 80, true)); // before the caller gave up
        ledger.record_work(work(1, 12, 200, false)); // stopped, not served
        ledger.record_work(work(2, 13, 300, true)); // caller never gave up
        assert_eq!(ledger.served_after_caller_gave_up("b"), 1);
        assert_eq!(ledger.served_after_attempt_abandoned("b"), 1);
        assert_eq!(ledger.served_after_caller_gave_up("a"), 0);
        let (total, wasted) = ledger.work_time("b");
        assert_eq!(total, ms(150 + 80 + 200 + 300));
        assert_eq!(wasted, ms(50 + 100));
    }
}

//! A bounded, keyed GCRA state store for governor.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::nanos::Nanos;
use governor::state::StateStore;

use crate::keyed::KeyMap;

/// The theoretical arrival time of each key (nanoseconds after the limiter's start; 0 = none),
/// in a bounded table.
#[derive(Debug)]
pub(super) struct Cells {
    pub(super) map: KeyMap<AtomicU64>,
    /// The emission interval of the quota, in nanoseconds.
    t_nanos: u64,
}

/// A state far in the future: a key that cannot be admitted is refused by governor itself.
const REFUSE: u64 = u64::MAX / 2;

impl Cells {
    pub(super) fn new(max_keys: usize, t_nanos: u64) -> Self {
        Self {
            map: KeyMap::new(max_keys),
            t_nanos,
        }
    }
}

/// The store governor's keyed limiter drives; the layer keeps another handle on the cells.
#[derive(Clone, Debug)]
pub(super) struct SharedCells(pub(super) Arc<Cells>);

/// Governor's compare-and-swap loop over one cell (as its `InMemoryState`).
fn measure<T, E>(
    cell: &AtomicU64,
    f: &impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let mut prev = cell.load(Ordering::Acquire);
    let mut decision = f(NonZeroU64::new(prev).map(|n| Nanos::new(n.get())));
    while let Ok((result, next)) = decision {
        match cell.compare_exchange_weak(prev, next.as_u64(), Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
        decision = f(NonZeroU64::new(prev).map(|n| Nanos::new(n.get())));
    }
    decision.map(|(result, _)| result)
}

impl StateStore for SharedCells {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let cells = &*self.0;
        // "Now", in the limiter's time: a fresh key's next arrival time is now + t.
        let mut now: Option<u64> = None;
        let t = cells.t_nanos;
        let idle = |cell: &AtomicU64| {
            let now = *now.get_or_insert_with(|| match f(None) {
                Ok((_, next)) => next.as_u64().saturating_sub(t),
                Err(_) => 0,
            });
            // A cell whose arrival time has passed behaves exactly like a fresh one.
            cell.load(Ordering::Acquire) <= now
        };
        match cells
            .map
            .with(*key, |cell| measure(cell, &f), || AtomicU64::new(0), idle)
        {
            Some(result) => result,
            // Full of busy keys: refuse (the layer tells `too_many_keys` from a rate limit).
            None => f(Some(Nanos::new(REFUSE))).map(|(result, _)| result),
        }
    }
}

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
}

/// A state far in the future: a key that cannot be admitted is refused by governor itself.
const REFUSE: u64 = u64::MAX / 2;

impl Cells {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            map: KeyMap::new(max_keys),
        }
    }
}

/// The store governor's keyed limiter drives; the layer keeps another handle on the cells.
#[derive(Clone, Debug)]
pub(super) struct SharedCells {
    pub(super) cells: Arc<Cells>,
    /// The emission interval of the limiter this store serves (each limiter a handle swaps in
    /// has its own, over the same cells).
    pub(super) t_nanos: u64,
    /// The limiter's start, in the clock's nanoseconds.
    pub(super) shift: u64,
}

/// The state of a global limit, kept outside its limiter so that a limiter swapped in by a
/// handle (a new quota) carries on from it: GCRA's theoretical arrival time, in nanoseconds of
/// the limiter's clock (0: never used).
#[derive(Clone, Debug)]
pub(super) struct DirectCell {
    pub(super) tat: Arc<AtomicU64>,
    /// The limiter's start, in the clock's nanoseconds.
    pub(super) shift: u64,
}

impl StateStore for DirectCell {
    type Key = governor::state::NotKeyed;

    #[inline]
    fn measure_and_replace<T, F, E>(&self, _key: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        measure(&self.tat, self.shift, &f)
    }
}

/// Governor's compare-and-swap loop over one cell (as its `InMemoryState`). The cell holds the
/// arrival time in the clock's nanoseconds (0: none); governor sees it in the limiter's, which
/// started `shift` nanoseconds into the clock. An arrival time before the limiter's start is
/// in the past: governor treats it as none.
#[inline]
fn measure<T, E>(
    cell: &AtomicU64,
    shift: u64,
    f: &impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let seen = |v: u64| NonZeroU64::new(v.saturating_sub(shift)).map(|n| Nanos::new(n.get()));
    let mut prev = cell.load(Ordering::Acquire);
    let mut decision = f(seen(prev));
    while let Ok((result, next)) = decision {
        let next = next.as_u64().saturating_add(shift);
        match cell.compare_exchange_weak(prev, next, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
        decision = f(seen(prev));
    }
    decision.map(|(result, _)| result)
}

impl StateStore for SharedCells {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let cells = &*self.cells;
        // "Now", in the limiter's time: a fresh key's next arrival time is now + t.
        let mut now: Option<u64> = None;
        let (t, shift) = (self.t_nanos, self.shift);
        let idle = |cell: &AtomicU64| {
            // In the clock's time, as the cells are.
            let now = *now.get_or_insert_with(|| match f(None) {
                Ok((_, next)) => next.as_u64().saturating_sub(t).saturating_add(shift),
                Err(_) => 0,
            });
            // A cell whose arrival time has passed behaves exactly like a fresh one.
            cell.load(Ordering::Acquire) <= now
        };
        match cells.map.with(
            *key,
            |cell| measure(cell, shift, &f),
            || AtomicU64::new(0),
            idle,
        ) {
            Some(result) => result,
            // Full of busy keys: refuse (the layer tells `too_many_keys` from a rate limit).
            None => f(Some(Nanos::new(REFUSE))).map(|(result, _)| result),
        }
    }
}

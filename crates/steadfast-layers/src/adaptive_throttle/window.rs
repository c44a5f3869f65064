//! A sliding window of request and accept counts in time buckets, lock-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Counts per bucket; each bucket is one atomic word per counter: the bucket's epoch (its index
/// since `start`, low 32 bits) in the high half, the count in the low half.
#[derive(Debug)]
pub(super) struct Window {
    start: Instant,
    bucket_nanos: u64,
    requests: Box<[AtomicU64]>,
    accepts: Box<[AtomicU64]>,
}

impl Window {
    pub(super) fn new(window: Duration, buckets: u32) -> Self {
        let bucket_nanos = u64::try_from(window.as_nanos() / u128::from(buckets))
            .unwrap_or(u64::MAX)
            .max(1);
        let make = || {
            (0..buckets)
                .map(|_| AtomicU64::new(0))
                .collect::<Box<[_]>>()
        };
        Self {
            start: Instant::now(),
            bucket_nanos,
            requests: make(),
            accepts: make(),
        }
    }

    /// The bucket index of `now`.
    #[inline]
    pub(super) fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        u64::try_from(elapsed / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX)
    }

    /// Requests and accepts over the window ending with bucket `index`.
    pub(super) fn sums(&self, index: u64) -> (u64, u64) {
        (
            self.sum(&self.requests, index),
            self.sum(&self.accepts, index),
        )
    }

    fn sum(&self, slots: &[AtomicU64], index: u64) -> u64 {
        let now = index as u32;
        let n = slots.len() as u32;
        slots
            .iter()
            .map(|s| {
                let v = s.load(Ordering::Acquire);
                if now.wrapping_sub((v >> 32) as u32) < n {
                    v & 0xFFFF_FFFF
                } else {
                    0
                }
            })
            .sum()
    }

    #[inline]
    pub(super) fn add_request(&self, index: u64) {
        bump(&self.requests[self.slot(index)], index);
    }

    #[inline]
    pub(super) fn add_accept(&self, index: u64) {
        bump(&self.accepts[self.slot(index)], index);
    }

    fn slot(&self, index: u64) -> usize {
        (index % self.requests.len() as u64) as usize
    }
}

/// Counts one event in bucket `index`: resets a slot holding an older bucket, leaves alone a
/// slot already reused by a newer one (the event is then outside the window anyway).
fn bump(slot: &AtomicU64, index: u64) {
    let epoch = index as u32;
    let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        let held = (v >> 32) as u32;
        match epoch.wrapping_sub(held) as i32 {
            0 if v as u32 == u32::MAX => None,
            0 => Some(v + 1),
            d if d > 0 => Some((u64::from(epoch) << 32) | 1),
            _ => None,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slides_and_ignores_stale_buckets() {
        let w = Window::new(Duration::from_secs(4), 4);
        let i0 = w.index(Instant::now());
        w.add_request(i0);
        w.add_request(i0);
        w.add_accept(i0);
        assert_eq!(w.sums(i0), (2, 1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let i2 = w.index(Instant::now());
        assert_eq!(i2, i0 + 2);
        w.add_request(i2);
        assert_eq!(w.sums(i2), (3, 1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let i4 = w.index(Instant::now());
        // Bucket 0 has left the window; its slot is reused by bucket 4.
        assert_eq!(w.sums(i4), (1, 0));
        w.add_request(i4);
        // A late accept for bucket 0 must not clobber bucket 4's slot.
        w.add_accept(i0);
        assert_eq!(w.sums(i4), (2, 0));
    }
}

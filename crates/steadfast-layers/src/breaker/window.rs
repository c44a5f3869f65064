//! The closed breaker's sliding windows, in atomics: no lock, no allocation after construction.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

use super::SlidingWindow;

/// Calls, failures and slow calls in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
}

impl Counts {
    pub(super) fn failure_rate(&self) -> f64 {
        rate(self.failures, self.calls)
    }

    pub(super) fn slow_rate(&self) -> f64 {
        rate(self.slow, self.calls)
    }
}

pub(super) fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[derive(Debug)]
pub(super) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(super) fn new(spec: SlidingWindow) -> Self {
        match spec {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time { span, buckets } => Window::Time(TimeWindow::new(
                u64::try_from(span.as_nanos() / u128::from(buckets)).unwrap_or(u64::MAX),
                buckets,
            )),
        }
    }

    /// Records one outcome; `now_nanos` (since the layer's origin) is used by the time window only.
    #[inline]
    pub(super) fn record(&self, failure: bool, slow: bool, now_nanos: u64) {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.record(failure, slow, now_nanos),
        }
    }

    /// Whether the window may hold a failure or a slow call at `now_nanos`: when it holds none,
    /// a successful, fast call cannot trip the breaker (every closed verdict needs a failure or
    /// a slow call), and its record need not sum the window.
    #[inline]
    pub(super) fn may_hold_failures(&self, now_nanos: u64) -> bool {
        match self {
            // Three loads: cheaper than the check.
            Window::Count(_) => true,
            Window::Time(w) => w.may_hold_failures(now_nanos),
        }
    }

    #[inline]
    pub(super) fn counts(&self, now_nanos: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now_nanos),
        }
    }

    pub(super) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The last `n` outcomes in a ring of one-byte slots, with running totals.
///
/// A record takes the next slot (`fetch_add` on the head), swaps its code in, and adjusts the
/// failure and slow totals by the difference with the code it replaced (no adjustment at all
/// when a success replaces a success). The totals are therefore always the sum of the ring once
/// concurrent records have finished; a reader racing a record may be off by the records in
/// flight, and clamps.
#[derive(Debug)]
pub(super) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// `slots.len()` as a [`FastMod`]: each record takes its slot without a division.
    modulo: FastMod,
    head: AtomicU64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    fn new(n: u32) -> Self {
        Self {
            modulo: FastMod::new(u64::from(n.max(1))),
            slots: (0..n.max(1)).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicU64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    #[inline]
    fn record(&self, failure: bool, slow: bool) {
        let code = RECORDED | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let i = self.modulo.of(self.head.fetch_add(1, Ordering::Relaxed));
        // `i < len` by construction.
        let old = self.slots[i as usize].swap(code, Ordering::AcqRel);
        let df = i64::from(code & FAILED != 0) - i64::from(old & FAILED != 0);
        if df != 0 {
            self.failures.fetch_add(df, Ordering::AcqRel);
        }
        let ds = i64::from(code & SLOW != 0) - i64::from(old & SLOW != 0);
        if ds != 0 {
            self.slow.fetch_add(ds, Ordering::AcqRel);
        }
    }

    #[inline]
    fn counts(&self) -> Counts {
        let calls = self.head.load(Ordering::Acquire).min(self.len());
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0).min(calls);
        Counts {
            calls,
            failures: clamp(self.failures.load(Ordering::Acquire)),
            slow: clamp(self.slow.load(Ordering::Acquire)),
        }
    }

    fn reset(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Relaxed);
        }
        self.failures.store(0, Ordering::Relaxed);
        self.slow.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Release);
    }
}

/// `a % d` for a fixed `d` by multiplications instead of a division (a division is tens of
/// cycles, more than the rest of a healthy record): Lemire, Kaser and Kurz, "Faster remainder by
/// direct computation" (2019), exact for every 64-bit `a` and `d >= 1` with a 128-bit `m`.
#[derive(Clone, Copy, Debug)]
struct FastMod {
    d: u64,
    m: u128,
}

impl FastMod {
    fn new(d: u64) -> Self {
        let d = d.max(1);
        Self {
            d,
            // `d == 1` wraps to 0, and every remainder is then 0, as it should be.
            m: (u128::MAX / u128::from(d)).wrapping_add(1),
        }
    }

    #[inline]
    fn of(self, a: u64) -> u64 {
        let low = self.m.wrapping_mul(u128::from(a));
        let d = u128::from(self.d);
        let bottom = (u128::from(low as u64) * d) >> 64;
        let top = (low >> 64) * d;
        ((bottom + top) >> 64) as u64
    }
}

/// Outcomes of the last `buckets` time buckets. Each bucket counter is one atomic word holding
/// the bucket's number (low 32 bits of `time / bucket length`) and its count, so a stale bucket
/// is recognised and restarted by the compare-and-swap that records into it.
#[derive(Debug)]
pub(super) struct TimeWindow {
    bucket_nanos: u64,
    buckets: u32,
    calls: Box<[AtomicU64]>,
    failures: Box<[AtomicU64]>,
    slow: Box<[AtomicU64]>,
    /// One more than the latest bucket index a failure or a slow call was recorded in (0: none
    /// since the last reset).
    last_bad: AtomicU64,
    /// The last bucket found, as `index << SLOT_BITS | slot`: a call finishing in the same
    /// bucket finds it with a multiply and a compare instead of two divisions (a division is
    /// most of a healthy record's time). Only a hint: it is checked against the time on every
    /// use, so a stale or racing value costs a division, never a wrong bucket.
    hint: AtomicU64,
}

/// Bits of [`TimeWindow::hint`] holding the slot: `MAX_BUCKETS` (1,000) slots fit in ten.
const SLOT_BITS: u32 = 10;

fn zeroed(n: u32) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl TimeWindow {
    fn new(bucket_nanos: u64, buckets: u32) -> Self {
        let buckets = buckets.max(1);
        Self {
            bucket_nanos: bucket_nanos.max(1),
            buckets,
            calls: zeroed(buckets),
            failures: zeroed(buckets),
            slow: zeroed(buckets),
            last_bad: AtomicU64::new(0),
            hint: AtomicU64::new(0),
        }
    }

    /// The bucket index and slot of `now_nanos`.
    #[inline]
    fn locate(&self, now_nanos: u64) -> (u64, usize) {
        let hint = self.hint.load(Ordering::Relaxed);
        let index = hint >> SLOT_BITS;
        // `index * bucket_nanos` is the start of a bucket some call finished in (no overflow:
        // at most that call's time); `now` falls in it when less than a bucket past its start.
        if now_nanos.wrapping_sub(index.wrapping_mul(self.bucket_nanos)) < self.bucket_nanos {
            return (index, (hint & ((1 << SLOT_BITS) - 1)) as usize);
        }
        self.locate_slow(now_nanos)
    }

    #[cold]
    fn locate_slow(&self, now_nanos: u64) -> (u64, usize) {
        let index = self.index(now_nanos);
        let slot = index % u64::from(self.buckets);
        if self.buckets <= 1 << SLOT_BITS && index < 1 << (64 - SLOT_BITS) {
            self.hint
                .store((index << SLOT_BITS) | slot, Ordering::Relaxed);
        }
        (index, slot as usize)
    }

    #[inline]
    fn may_hold_failures(&self, now_nanos: u64) -> bool {
        match self.last_bad.load(Ordering::Acquire) {
            0 => false,
            // A bucket recorded at or after `now` (a concurrent record's later clock read) counts.
            bad => self.locate(now_nanos).0.saturating_sub(bad - 1) < u64::from(self.buckets),
        }
    }

    fn index(&self, now_nanos: u64) -> u64 {
        now_nanos / self.bucket_nanos
    }

    #[inline]
    fn record(&self, failure: bool, slow: bool, now_nanos: u64) {
        let (index, slot) = self.locate(now_nanos);
        bump(&self.calls[slot], index);
        if failure || slow {
            self.last_bad
                .fetch_max(index.saturating_add(1), Ordering::AcqRel);
        }
        if failure {
            bump(&self.failures[slot], index);
        }
        if slow {
            bump(&self.slow[slot], index);
        }
    }

    fn counts(&self, now_nanos: u64) -> Counts {
        let now = self.index(now_nanos) as u32;
        let sum = |slots: &[AtomicU64]| -> u64 {
            slots
                .iter()
                .map(|s| {
                    let v = s.load(Ordering::Acquire);
                    let epoch = (v >> 32) as u32;
                    if now.wrapping_sub(epoch) < self.buckets {
                        u64::from(v as u32)
                    } else {
                        0
                    }
                })
                .sum()
        };
        let calls = sum(&self.calls);
        Counts {
            calls,
            failures: sum(&self.failures).min(calls),
            slow: sum(&self.slow).min(calls),
        }
    }

    fn reset(&self) {
        for s in self
            .calls
            .iter()
            .chain(self.failures.iter())
            .chain(self.slow.iter())
        {
            s.store(0, Ordering::Relaxed);
        }
        self.last_bad.store(0, Ordering::Relaxed);
        // The hint is the time's, not the counts': it stays valid.
    }
}

/// Adds one to a bucket counter, restarting it if it belongs to an older bucket.
#[inline]
fn bump(slot: &AtomicU64, index: u64) {
    let epoch = index as u32;
    let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        let e = (v >> 32) as u32;
        if e == epoch {
            Some(if v as u32 == u32::MAX { v } else { v + 1 })
        } else if epoch.wrapping_sub(e) < (1 << 31) {
            // The slot holds an older bucket: restart it.
            Some((u64::from(epoch) << 32) | 1)
        } else {
            // The slot already holds a newer bucket (this record's clock read is older than a
            // concurrent one's): count it there rather than erase the newer bucket.
            Some(if v as u32 == u32::MAX { v } else { v + 1 })
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_mod_is_the_remainder() {
        let divisors = [1_u64, 2, 3, 7, 10, 100, 641, 999_999, 1_000_000];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![
            0,
            1,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 32) - 1,
            1 << 32,
        ];
        for _ in 0..10_000 {
            // xorshift64: values over the whole range.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x);
            values.push(x >> 32);
        }
        for &d in &divisors {
            let f = FastMod::new(d);
            for &a in &values {
                assert_eq!(f.of(a), a % d, "{a} % {d}");
            }
            for a in 0..3 * d.min(10_000) {
                assert_eq!(f.of(a), a % d, "{a} % {d}");
            }
        }
    }

    /// The bucket found through the hint is the one division finds, whatever order the times
    /// come in (a later bucket, back to an earlier one, far ahead, the hint raced by another
    /// call's time): the hint saves divisions, never changes a count.
    #[test]
    fn the_bucket_hint_always_agrees_with_division() {
        let w = TimeWindow::new(3_000_000_000, 10);
        let times = [
            0,
            1,
            2_999_999_999,
            3_000_000_000,
            3_000_000_001,
            2_999_999_999,
            29_999_999_999,
            30_000_000_000,
            17,
            u64::MAX / 2,
            u64::MAX,
            6_000_000_000,
        ];
        for &t in &times {
            let index = t / 3_000_000_000;
            assert_eq!(w.locate(t), (index, (index % 10) as usize), "at {t} ns");
            assert_eq!(
                w.locate(t),
                (index, (index % 10) as usize),
                "again at {t} ns"
            );
        }
    }

    /// Counts through the hint: calls in one bucket, then in the next, then a failure ten
    /// buckets later that has let the first buckets slide out of the window.
    #[test]
    fn counts_slide_by_whole_buckets_through_the_hint() {
        let w = TimeWindow::new(1_000_000, 10);
        w.record(false, false, 10);
        w.record(false, false, 999_999);
        w.record(true, false, 1_000_000);
        assert_eq!(
            w.counts(1_500_000),
            Counts {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
        assert!(w.may_hold_failures(1_500_000));
        // Bucket 10: bucket 0 has left the window, bucket 1 (the failure) has not.
        w.record(false, false, 10_000_000);
        assert_eq!(
            w.counts(10_000_000),
            Counts {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        // Bucket 11: the failure's bucket has left too.
        assert!(!w.may_hold_failures(11_000_000));
        assert_eq!(w.counts(11_000_000).failures, 0);
    }
}

//! A lock-free rotating latency histogram with microsecond resolution, and the hedge delay it
//! learns.
//!
//! Log-linear buckets (HdrHistogram's layout): values below 256 µs are exact, and every power of
//! two above is split into 256 buckets, so a bucket is at most 1/256 (0.4 %) of the values it
//! holds: 82 µs wide at 21 ms, 1 µs wide below 512 µs (Finagle's bucketed histogram defaults to
//! 0.5 %; tower's hedge truncates to whole milliseconds). Values are clamped at 2^32 - 1 µs (about
//! 71 minutes). The window is [`SLOTS`] slots of `window / SLOTS` each; a slot's counters are
//! tagged with its time slot and reset by the first writer of a new time slot.
//!
//! **Memory is paid per power of two used** (ADR 0005). The counters of one power of two (a
//! *group*: 256 buckets in each of the six slots, 6 KiB of 32-bit counters) are allocated the
//! first time a sample lands in it, and kept for the tracker's life. A tracker that has seen no
//! sample holds no counters (under 1 KiB in all); in the lab's `tail` scenario (10-20 ms, 2 % at
//! 500-1000 ms, plus the hedges' losers' elapsed times, from 0.1 ms to 40 ms) it meets eight
//! powers of two and holds 48 KiB; the worst case, every power of two from 1 µs to 71 minutes, is
//! 150 KiB, half the 300 KiB of 64-bit counters that every tracker used to allocate when built.
//! The first sample in a group allocates (once per group per tracker; concurrent first samples in
//! the same group wait for the one allocating); every later sample is allocation-free and
//! lock-free. A counter saturates at 2^32 - 1 (4 billion samples in one bucket within one slot of
//! the window, 5 s by default) rather than wrapping.
//!
//! Each slot also keeps a mask of the groups it holds samples in, so that a reset zeroes and a
//! recomputation reads only those groups: latencies span a few powers of two, not all 25.
//! Recording is a few atomic operations (the mask is only written the first time a group is used
//! in a slot) and never a lock after its group's first sample; the percentile is recomputed at
//! most every `recompute_interval` or `recompute_samples` samples, by whichever recording thread
//! claims it, and cached in an atomic for every call to read with one load.
//!
//! Under concurrent rotation a few samples may land in the wrong slot or be lost to a reset; the
//! estimate is statistical anyway. A recorder counts its sample before it marks the group, and a
//! reset takes the mask before it zeroes, so a count that a reset misses keeps its mark (a rare
//! stray one, if the orders of different atomics are seen differently, stays unread until its
//! group is next used in that slot, and is reset with it). Single-threaded use is exact.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;
use crate::live::{AtomicF64, AtomicOptDuration};

/// Bits of sub-bucket precision: 256 buckets per power of two.
const PRECISION_BITS: u32 = 8;
const SUB: u64 = 1 << PRECISION_BITS;
/// The largest value recorded, in microseconds (longer latencies are clamped to it).
const MAX_MICROS: u64 = (1 << 32) - 1;
/// Group 0 holds the exact values below `SUB`; groups 1..=24 the powers of two 2^8..=2^31.
const GROUPS: usize = (32 - PRECISION_BITS as usize) + 1;
/// Buckets per group.
const GROUP_LEN: usize = SUB as usize;
/// Buckets per slot.
pub(super) const BUCKETS: usize = GROUPS * SUB as usize;
/// Slots in the rotating window.
pub(super) const SLOTS: usize = 6;
/// Bytes of counters one group takes once allocated: 256 buckets in each slot (6 KiB).
#[cfg(test)]
const GROUP_BYTES: usize = SLOTS * GROUP_LEN * std::mem::size_of::<AtomicU32>();
/// The cached value while fewer than `min_samples` samples are in the window.
const WARMING: u64 = u64::MAX;

/// The bucket holding `micros`.
pub(super) fn bucket_index(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - PRECISION_BITS;
    let group = shift as usize + 1;
    group * SUB as usize + ((v >> shift) - SUB) as usize
}

/// The highest value held by bucket `index` (what a percentile reports: conservative, it hedges at
/// most one bucket width late, never early).
pub(super) fn bucket_high(index: usize) -> u64 {
    let group = index / SUB as usize;
    let sub = (index % SUB as usize) as u64;
    if group == 0 {
        return sub;
    }
    let shift = group - 1;
    ((SUB + sub) << shift) + (1 << shift) - 1
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What a slot knows of its counts (the counts themselves are in the groups).
struct Slot {
    /// The time slot these counts belong to, plus one (0: never used).
    tag: AtomicU64,
    /// Bit `g` set: group `g` may hold counts (set after counting, taken before a reset).
    groups: AtomicU32,
}

/// The counters of one group in every slot, slot-major (`SLOTS × GROUP_LEN`), allocated on the
/// group's first sample. Each saturates at `u32::MAX`.
type GroupCounts = OnceLock<Box<[AtomicU32]>>;

fn new_group() -> Box<[AtomicU32]> {
    (0..SLOTS * GROUP_LEN).map(|_| AtomicU32::new(0)).collect()
}

/// The groups set in `mask`, lowest first.
fn groups(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let g = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            g
        })
    })
}

/// How a [`LatencyTracker`] is configured (validated by
/// [`HedgeDelay::validate`](super::HedgeDelay::validate)).
#[derive(Clone, Copy, Debug)]
pub(super) struct TrackerConfig {
    pub(super) percentile: f64,
    pub(super) min_samples: u64,
    pub(super) warmup_delay: Option<Duration>,
    pub(super) window: Duration,
    pub(super) recompute_interval: Duration,
    pub(super) recompute_samples: u64,
}

/// Records attempt latencies and learns the hedge delay: a percentile of the rolling window.
pub(crate) struct LatencyTracker {
    // The settings a handle may change (see `reconfigure`); the window's slots are fixed.
    quantile: AtomicF64,
    min_samples: AtomicU64,
    warmup_delay: AtomicOptDuration,
    slot_micros: u64,
    window: Duration,
    recompute_micros: AtomicU64,
    recompute_samples: AtomicU64,
    start: Instant,
    slots: [Slot; SLOTS],
    /// Group `g`'s counters, once a sample has landed in it.
    counts: [GroupCounts; GROUPS],
    /// The latest time slot any recorder has seen (recorders without a clock reading use it).
    epoch: AtomicU64,
    recorded: AtomicU64,
    next_samples: AtomicU64,
    next_micros: AtomicU64,
    computing: AtomicBool,
    /// The learned delay in microseconds, or `WARMING`.
    cached: AtomicU64,
}

impl fmt::Debug for LatencyTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyTracker")
            .field("percentile", &(self.quantile.get() * 100.0))
            .field("min_samples", &self.min_samples.load(Ordering::Relaxed))
            .field("learned", &self.learned())
            .finish_non_exhaustive()
    }
}

impl LatencyTracker {
    pub(super) fn new(config: TrackerConfig) -> Self {
        let recompute_micros = micros(config.recompute_interval).max(1);
        LatencyTracker {
            quantile: AtomicF64::new(config.percentile / 100.0),
            min_samples: AtomicU64::new(config.min_samples),
            warmup_delay: AtomicOptDuration::new(config.warmup_delay),
            slot_micros: (micros(config.window) / SLOTS as u64).max(1),
            window: config.window,
            recompute_micros: AtomicU64::new(recompute_micros),
            recompute_samples: AtomicU64::new(config.recompute_samples.max(1)),
            start: Instant::now(),
            slots: std::array::from_fn(|_| Slot {
                tag: AtomicU64::new(0),
                groups: AtomicU32::new(0),
            }),
            counts: std::array::from_fn(|_| OnceLock::new()),
            epoch: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            next_samples: AtomicU64::new(config.min_samples.max(1)),
            next_micros: AtomicU64::new(recompute_micros),
            computing: AtomicBool::new(false),
            cached: AtomicU64::new(WARMING),
        }
    }

    /// The counts of group `g` in slot `s`, if the group has been allocated.
    fn group(&self, s: usize, g: usize) -> Option<&[AtomicU32]> {
        self.counts[g]
            .get()
            .and_then(|c| c.get(s * GROUP_LEN..(s + 1) * GROUP_LEN))
    }

    /// The bytes of counters allocated so far (`GROUP_BYTES` per group a sample has landed in).
    #[cfg(test)]
    fn counter_bytes(&self) -> usize {
        self.counts.iter().filter(|c| c.get().is_some()).count() * GROUP_BYTES
    }

    /// The delay to hedge after now: the learned percentile, or the warm-up delay (if any) while
    /// the window holds fewer than `min_samples` samples. One atomic load.
    #[inline]
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.cached.load(Ordering::Acquire) {
            WARMING => self.warmup_delay.get(),
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The learned percentile, if warm.
    pub(crate) fn learned(&self) -> Option<Duration> {
        match self.cached.load(Ordering::Acquire) {
            WARMING => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Takes a new validated configuration (a handle's change): the percentile, minimum samples,
    /// warm-up delay and recomputation cadence change; the samples are kept and the delay is
    /// recomputed from them at once. The window cannot change (its slots are sized for it).
    pub(super) fn reconfigure(&self, config: TrackerConfig) -> Result<(), ConfigError> {
        if config.window != self.window {
            return Err(ConfigError::conflict(
                "delay.window",
                "the window of a learned delay is fixed when the layer is built",
            ));
        }
        self.quantile.set(config.percentile / 100.0);
        self.min_samples
            .store(config.min_samples, Ordering::Relaxed);
        self.warmup_delay.set(config.warmup_delay);
        self.recompute_micros
            .store(micros(config.recompute_interval).max(1), Ordering::Relaxed);
        self.recompute_samples
            .store(config.recompute_samples.max(1), Ordering::Relaxed);
        // Recomputed now from the samples held (unless a recorder is at it: then at its next
        // sample, as `next_samples` is due).
        self.next_samples.store(0, Ordering::Relaxed);
        let epoch = self.epoch.load(Ordering::Relaxed);
        let n = self.recorded.load(Ordering::Relaxed);
        self.recompute(epoch, n, None);
        Ok(())
    }

    /// Records one attempt's latency. `now`, when the caller has read the clock, rotates the
    /// window and may trigger a time-based recomputation; without it the sample goes to the latest
    /// time slot seen.
    pub(crate) fn record(&self, latency: Duration, now: Option<Instant>) {
        let (epoch, now_micros) = match now {
            Some(t) => {
                let us = micros(t.saturating_duration_since(self.start));
                let e = us / self.slot_micros;
                if e > self.epoch.load(Ordering::Relaxed) {
                    self.epoch.fetch_max(e, Ordering::Relaxed);
                }
                (e, Some(us))
            }
            None => (self.epoch.load(Ordering::Relaxed), None),
        };
        let s = (epoch % SLOTS as u64) as usize;
        let slot = &self.slots[s];
        let tag = epoch + 1;
        let seen = slot.tag.load(Ordering::Acquire);
        if seen != tag {
            if seen > tag {
                // A sample from a time slot that has already rotated out.
                return;
            }
            if slot
                .tag
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for g in groups(slot.groups.swap(0, Ordering::SeqCst)) {
                    for b in self.group(s, g).unwrap_or_default() {
                        b.store(0, Ordering::Relaxed);
                    }
                }
            }
        }
        let index = bucket_index(micros(latency));
        let g = index / GROUP_LEN;
        // Allocates the group on its first sample (once per tracker); one load afterwards.
        let counts = self.counts[g].get_or_init(new_group);
        if let Some(b) = counts.get(s * GROUP_LEN + index % GROUP_LEN) {
            // Saturates: a counter that wrapped is put back at the top (a sample counted
            // concurrently at that instant may be lost, as at a reset).
            if b.fetch_add(1, Ordering::Relaxed) == u32::MAX {
                b.store(u32::MAX, Ordering::Relaxed);
            }
        }
        let bit = 1 << g;
        if slot.groups.load(Ordering::SeqCst) & bit == 0 {
            slot.groups.fetch_or(bit, Ordering::SeqCst);
        }
        let n = self.recorded.fetch_add(1, Ordering::Relaxed) + 1;
        let due = n >= self.next_samples.load(Ordering::Relaxed)
            || now_micros.is_some_and(|t| t >= self.next_micros.load(Ordering::Relaxed));
        if due {
            self.recompute(epoch, n, now_micros);
        }
    }

    fn recompute(&self, epoch: u64, n: u64, now_micros: Option<u64>) {
        if self
            .computing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let current = epoch + 1;
        let live = || {
            self.slots.iter().enumerate().filter(move |(_, slot)| {
                let tag = slot.tag.load(Ordering::Acquire);
                tag != 0 && tag <= current && current - tag < SLOTS as u64
            })
        };
        // Two passes over the groups the live slots hold: the total per group, then the buckets
        // of the group the rank falls in.
        let mut per_group = [0u64; GROUPS];
        for (s, slot) in live() {
            for g in groups(slot.groups.load(Ordering::SeqCst)) {
                per_group[g] += self
                    .group(s, g)
                    .unwrap_or_default()
                    .iter()
                    .map(|b| u64::from(b.load(Ordering::Relaxed)))
                    .sum::<u64>();
            }
        }
        let total: u64 = per_group.iter().sum();
        let min_samples = self.min_samples.load(Ordering::Relaxed);
        let (value, next) = if total >= min_samples && total > 0 {
            let rank = ((self.quantile.get() * total as f64).ceil() as u64).clamp(1, total);
            (
                bucket_high(self.rank_index(&per_group, rank, live().map(|(s, _)| s))),
                n.saturating_add(self.recompute_samples.load(Ordering::Relaxed)),
            )
        } else {
            // Recompute as soon as enough samples could be in the window.
            (
                WARMING,
                n.saturating_add(min_samples.saturating_sub(total).max(1)),
            )
        };
        let previous = self.cached.swap(value, Ordering::AcqRel);
        self.next_samples.store(next, Ordering::Relaxed);
        if let Some(t) = now_micros {
            self.next_micros.store(
                t.saturating_add(self.recompute_micros.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        self.computing.store(false, Ordering::Release);
        if previous != value {
            tracing::debug!(
                target: "steadfast::hedge",
                samples = total,
                delay_ms = (value != WARMING)
                    .then(|| crate::telemetry::ms(std::time::Duration::from_micros(value))),
                "hedge delay recomputed"
            );
        }
    }

    /// The bucket holding the `rank`-th smallest sample, from the per-group totals and a second
    /// read of that group's buckets in the `live` slots. Concurrent recording may have moved the
    /// counts in between: the rank then falls at the group's last bucket.
    fn rank_index(
        &self,
        per_group: &[u64; GROUPS],
        rank: u64,
        live: impl Iterator<Item = usize>,
    ) -> usize {
        let mut seen = 0;
        let Some(g) = per_group.iter().position(|c| {
            seen += c;
            seen >= rank
        }) else {
            return BUCKETS - 1;
        };
        let mut counts = [0u64; GROUP_LEN];
        for s in live {
            for (c, b) in counts.iter_mut().zip(self.group(s, g).unwrap_or_default()) {
                *c += u64::from(b.load(Ordering::Relaxed));
            }
        }
        let mut seen = seen - per_group[g];
        let within = counts
            .iter()
            .position(|c| {
                seen += c;
                seen >= rank
            })
            .unwrap_or(GROUP_LEN - 1);
        g * GROUP_LEN + within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_samples: u64) -> TrackerConfig {
        TrackerConfig {
            percentile: 95.0,
            min_samples,
            warmup_delay: None,
            window: Duration::from_secs(30),
            recompute_interval: Duration::from_secs(3),
            recompute_samples: 10,
        }
    }

    #[test]
    fn buckets_are_exact_below_256_us_and_within_1_256_above() {
        for v in 0..256 {
            assert_eq!(bucket_high(bucket_index(v)), v);
        }
        let mut v = 256u64;
        while v < MAX_MICROS {
            let i = bucket_index(v);
            let high = bucket_high(i);
            assert!(high >= v, "{v}: {high}");
            assert!((high - v) as f64 <= v as f64 / 256.0, "{v}: {high}");
            // Buckets are ordered and contiguous.
            assert_eq!(bucket_index(high), i);
            assert_eq!(bucket_index(high + 1), i + 1);
            v = v * 17 / 16 + 1;
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn learns_the_percentile_after_min_samples() {
        let t = LatencyTracker::new(config(100));
        for ms in 1..=99 {
            t.record(Duration::from_millis(ms), Some(Instant::now()));
        }
        assert_eq!(t.delay(), None);
        t.record(Duration::from_millis(100), Some(Instant::now()));
        let d = t.delay().unwrap();
        assert!(d >= Duration::from_millis(95), "{d:?}");
        assert!(d <= Duration::from_micros(95_000 + 95_000 / 256), "{d:?}");
    }

    /// The exact `q`-quantile of `samples` (the rank-th smallest, as the tracker ranks).
    fn exact(samples: &mut [u64], q: f64) -> u64 {
        samples.sort_unstable();
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    }

    #[tokio::test(start_paused = true)]
    async fn percentiles_of_a_bimodal_tail_are_within_one_bucket_above() {
        // The lab's `tail`: 10-20 ms, 2 % at 500-1000 ms, so three powers of two in use.
        use crate::rng::{RandomSource, SeededRng};
        let rng = SeededRng::new(7);
        let mut samples: Vec<u64> = (0..5_000)
            .map(|_| {
                if rng.next_f64() < 0.02 {
                    500_000 + (rng.next_f64() * 500_000.0) as u64
                } else {
                    10_000 + (rng.next_f64() * 10_000.0) as u64
                }
            })
            .collect();
        for p in [50.0, 95.0, 97.5, 99.0, 99.9] {
            let t = LatencyTracker::new(TrackerConfig {
                percentile: p,
                ..config(100)
            });
            for &us in &samples {
                t.record(Duration::from_micros(us), Some(Instant::now()));
            }
            // Recomputed every 10 samples: the last recomputation saw all 5,000.
            let want = exact(&mut samples, p / 100.0);
            // Counters for the four powers of two the samples span (2^13..2^15 µs and
            // 2^18..2^20 µs), 24 KiB, and none for the 21 others.
            assert_eq!(t.counter_bytes(), 4 * GROUP_BYTES);
            let got = t.delay().unwrap().as_micros() as u64;
            assert!(
                got >= want && got - want <= want / 256,
                "p{p}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn concurrent_recorders_and_resets_keep_the_counts_consistent() {
        const PER_THREAD: u64 = 50_000;
        // A 60 µs window of 10 µs slots on the real clock: four threads record while the slots
        // rotate under them, many times a millisecond. Nothing here waits on the clock; the
        // checks hold for any interleaving. Ten rounds: a race that breaks the rule shows in
        // some of them.
        for _ in 0..10 {
            let t = LatencyTracker::new(TrackerConfig {
                window: Duration::from_micros(60),
                recompute_samples: 100,
                ..config(10)
            });
            std::thread::scope(|s| {
                for i in 0..4u64 {
                    let t = &t;
                    s.spawn(move || {
                        for n in 0..PER_THREAD {
                            // 10-20 ms and 500-1000 ms: four powers of two.
                            let us = if n % 50 == 0 {
                                500_000 + (n * 7_919 + i) % 500_000
                            } else {
                                10_000 + (n * 7_919 + i * 13) % 10_000
                            };
                            t.record(Duration::from_micros(us), Some(Instant::now()));
                        }
                    });
                }
            });
            let mut counted = 0;
            for (s, slot) in t.slots.iter().enumerate() {
                let mask = slot.groups.load(Ordering::Relaxed);
                for g in 0..GROUPS {
                    let c: u64 = t
                        .group(s, g)
                        .unwrap_or_default()
                        .iter()
                        .map(|b| u64::from(b.load(Ordering::Relaxed)))
                        .sum();
                    counted += c;
                    // Counted before marked, mask taken before zeroing: on x86's total store order
                    // no count outlives a reset unmarked (elsewhere a rare stray one may; see the
                    // module docs).
                    if cfg!(target_arch = "x86_64") && c > 0 {
                        assert_ne!(mask & (1 << g), 0, "group {g} holds {c} unmarked");
                    }
                }
            }
            assert!(counted <= 4 * PER_THREAD, "{counted}");
            // Four powers of two seen, four groups allocated, whichever thread got there first.
            assert_eq!(t.counter_bytes(), 4 * GROUP_BYTES);
            // Whatever delay was learned lies within what was recorded. (There may be none: on
            // a busy machine a thread can be descheduled for longer than the 60 µs window, so
            // the last recomputation may have found every slot reset. The rule is about counts,
            // and it must hold at any speed.)
            if let Some(d) = t.learned() {
                assert!(
                    d >= Duration::from_millis(10)
                        && d <= Duration::from_micros(1_000_000 + 1_000_000 / 256),
                    "{d:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counters_are_allocated_for_a_power_of_two_on_its_first_sample() {
        let t = LatencyTracker::new(config(1));
        // Before any sample: no counters, only the slots' tags and masks and the empty cells.
        assert_eq!(t.counter_bytes(), 0);
        assert!(std::mem::size_of::<LatencyTracker>() <= 1024);
        t.record(Duration::from_micros(15_000), Some(Instant::now()));
        assert_eq!(t.counter_bytes(), GROUP_BYTES);
        assert_eq!(GROUP_BYTES, 6 * 1024);
        // Same power of two (8,192..16,383 µs): nothing new.
        t.record(Duration::from_micros(9_000), Some(Instant::now()));
        assert_eq!(t.counter_bytes(), GROUP_BYTES);
        t.record(Duration::from_micros(700_000), Some(Instant::now()));
        assert_eq!(t.counter_bytes(), 2 * GROUP_BYTES);
        // Every slot used and reset: the groups stay allocated (and zeroed), no new one.
        for _ in 0..2 * SLOTS {
            tokio::time::advance(Duration::from_secs(5)).await;
            t.record(Duration::from_micros(10_000), Some(Instant::now()));
        }
        assert_eq!(t.counter_bytes(), 2 * GROUP_BYTES);
        // 10,000 µs lies in the 32 µs bucket 9,984..=10,015.
        assert_eq!(t.delay(), Some(Duration::from_micros(10_015)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lab_tail_spread_fits_in_64_kib() {
        // The powers of two a hedge layer's tracker met in the lab's `tail` scenario (quick and
        // full runs alike, seed 1): the hedges' losers' elapsed times (0.2, 0.3 and 0.5 ms; 37 ms),
        // the fast mode (15 and 19 ms) and the unhedged slow calls (501 and 842 ms).
        let t = LatencyTracker::new(config(1));
        for us in [210, 263, 529, 15_734, 19_220, 37_275, 501_603, 841_869] {
            t.record(Duration::from_micros(us), Some(Instant::now()));
        }
        assert_eq!(t.counter_bytes(), 8 * GROUP_BYTES);
        // With the rest of the layer (about 1 KiB: the `memory` test in benches/ counts it).
        assert!(std::mem::size_of::<LatencyTracker>() + t.counter_bytes() <= 63 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_saturates_instead_of_wrapping() {
        let t = LatencyTracker::new(config(1));
        t.record(Duration::from_micros(100), Some(Instant::now()));
        let bucket = &t.group(0, 0).unwrap()[100];
        bucket.store(u32::MAX - 1, Ordering::Relaxed);
        for _ in 0..3 {
            t.record(Duration::from_micros(100), Some(Instant::now()));
        }
        assert_eq!(bucket.load(Ordering::Relaxed), u32::MAX);
        // The totals are summed in 64 bits: the percentile still reads it.
        t.record(Duration::from_micros(7), Some(Instant::now()));
        tokio::time::advance(Duration::from_secs(4)).await;
        t.record(Duration::from_micros(100), Some(Instant::now()));
        assert_eq!(t.delay(), Some(Duration::from_micros(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_zeroes_every_group_the_slot_used() {
        let t = LatencyTracker::new(config(1));
        // Samples in three groups, then the window moves on past every slot.
        for us in [100, 20_000, 700_000] {
            t.record(Duration::from_micros(us), Some(Instant::now()));
        }
        for _ in 0..SLOTS {
            tokio::time::advance(Duration::from_secs(5)).await;
            t.record(Duration::from_micros(5), Some(Instant::now()));
        }
        // Each slot was reset once: only the last SLOTS samples of 5 µs remain anywhere.
        let left: u64 = t
            .counts
            .iter()
            .filter_map(|c| c.get())
            .flat_map(|c| c.iter())
            .map(|b| u64::from(b.load(Ordering::Relaxed)))
            .sum();
        assert_eq!(left, SLOTS as u64);
        assert_eq!(t.delay(), Some(Duration::from_micros(5)));
        for slot in t.slots.iter() {
            assert_eq!(
                slot.groups.load(Ordering::Relaxed),
                1,
                "only group 0 in use"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_expire_with_the_window() {
        let t = LatencyTracker::new(config(10));
        for _ in 0..20 {
            t.record(Duration::from_millis(500), Some(Instant::now()));
        }
        assert!(t.delay().unwrap() >= Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(40)).await;
        for _ in 0..20 {
            t.record(Duration::from_millis(5), Some(Instant::now()));
        }
        let d = t.delay().unwrap();
        assert!(d < Duration::from_millis(6), "{d:?}");
    }
}

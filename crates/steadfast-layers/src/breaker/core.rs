//! One breaker's state machine, in atomics.
//!
//! The state lives in one `AtomicU64` word: the state (2 bits), whether a break timer is armed
//! (1 bit), an epoch (21 bits, bumped by every transition) and, when open, the instant a probe is
//! allowed (40 bits of milliseconds since the layer was built). Transitions are compare-and-swaps
//! on that word, so exactly one caller performs each. A call remembers the epoch it was admitted
//! in; an outcome from an older epoch is ignored. Half-open probes are counted in a second word
//! tagged with the half-open epoch (issued, completed, failed, slow), so a new half-open period
//! starts from zero without a reset.
//!
//! An open word with the armed bit set has a timer task sleeping until its break ends (see
//! [`BreakTimer`]): refusals then read the clock only on every 64th refusal (every 4th on a
//! current-thread runtime under `BreakTimer::Auto`). The timer clears the bit when it fires or
//! when its task is dropped (runtime shutdown), whichever comes first, and only in the epoch it
//! was armed for; once clear, refusals read the clock as they do without a timer.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;

use super::window::{rate, Counts, Window};
use super::{
    BreakDuration, BreakTimer, BreakerMetrics, BreakerState, CircuitOpen, Mode, SlidingWindow,
    Transition, TransitionReason,
};
use crate::live::{AtomicF64, AtomicOptDuration};
use crate::rng::SharedRng;
use crate::telemetry::{Attrs, Telemetry};

// Core states (in the word).
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
/// Closed, with the window being cleared by the thread that made the transition.
const RESETTING: u8 = 3;

// Layer-wide control modes (set through the handle).
pub(super) const NORMAL: u8 = 0;
pub(super) const DISABLED: u8 = 1;
pub(super) const FORCED_OPEN: u8 = 2;
pub(super) const METRICS_ONLY: u8 = 3;

/// The state bits of the word.
const STATE_MASK: u64 = 0b11;
/// Set in an open word while a break timer is armed for its epoch.
const ARMED: u64 = 0b100;
/// While armed on a runtime whose workers drive the timer (multi-thread, or any runtime under
/// [`BreakTimer::Always`]), every this many refusals read the clock anyway, so that a timer that
/// fires late holds the breaker open for about this many calls at most. The cadence comes from
/// the refusal count read before it is incremented: exact on one thread, about right when several
/// threads refuse at once (two may both check, or a round may be skipped). A power of two.
const CLOCK_CHECK_EVERY: u64 = 64;
/// The cadence under [`BreakTimer::Auto`] on a current-thread runtime. That runtime fires the
/// timer only while someone drives it, and a program that calls `block_on` once per call never
/// does while its calls are refused at once: there the clock check alone ends the break, so it
/// comes often enough that the first probe is at most 3 refused calls late, while 3 refusals in
/// 4 still read no clock (ADR 0008, decision 17). A power of two.
const CLOCK_CHECK_EVERY_UNDRIVEN: u64 = 4;

const EPOCH_BITS: u32 = 21;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const UNTIL_SHIFT: u32 = 24;
const UNTIL_MAX: u64 = (1 << 40) - 1;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(state: u8, epoch: u32, until_ms: u64) -> Self {
        Word(
            u64::from(state)
                | ((u64::from(epoch) & EPOCH_MASK) << 3)
                | (until_ms.min(UNTIL_MAX) << UNTIL_SHIFT),
        )
    }
    fn state(self) -> u8 {
        (self.0 & STATE_MASK) as u8
    }
    fn armed(self) -> bool {
        self.0 & ARMED != 0
    }
    fn with_armed(self, armed: bool) -> Self {
        if armed {
            Word(self.0 | ARMED)
        } else {
            Word(self.0 & !ARMED)
        }
    }
    fn epoch(self) -> u32 {
        ((self.0 >> 3) & EPOCH_MASK) as u32
    }
    fn next_epoch(self) -> u32 {
        (self.epoch() + 1) & EPOCH_MASK as u32
    }
    fn until_ms(self) -> u64 {
        self.0 >> UNTIL_SHIFT
    }
}

/// Whether epoch `a` is later than epoch `b` (wrapping).
fn newer(a: u32, b: u32) -> bool {
    let d = u64::from(a.wrapping_sub(b)) & EPOCH_MASK;
    d != 0 && d < (1 << (EPOCH_BITS - 1))
}

/// The half-open probe tally: epoch 21 bits, then issued, done, failed, slow, 10 bits each.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    epoch: u32,
    issued: u32,
    done: u32,
    failed: u32,
    slow: u32,
}

impl Tally {
    fn unpack(v: u64) -> Self {
        let f = |shift: u32| ((v >> shift) & 0x3ff) as u32;
        Tally {
            epoch: (v & EPOCH_MASK) as u32,
            issued: f(21),
            done: f(31),
            failed: f(41),
            slow: f(51),
        }
    }
    fn pack(self) -> u64 {
        let f = |x: u32, shift: u32| (u64::from(x) & 0x3ff) << shift;
        (u64::from(self.epoch) & EPOCH_MASK)
            | f(self.issued, 21)
            | f(self.done, 31)
            | f(self.failed, 41)
            | f(self.slow, 51)
    }
}

/// What a call was admitted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ticket {
    /// A call through the closed breaker, in this epoch.
    Closed(u32),
    /// A half-open probe, in this epoch.
    Probe(u32),
}

/// Why [`Core::admit`] refused a call, in one register: the refusing word's break end
/// (`until_ms`), or [`Refused::HALF_OPEN`]. The admission is out of line, and a
/// `Result<Ticket, CircuitOpen>` came back through memory, written in pieces and reloaded whole,
/// which stalled the refusal (ADR 0008, seventh pass); [`Core::refusal`] makes the error inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refused(u64);

impl Refused {
    /// A half-open breaker whose probes are all taken (no break end: `until_ms` never reaches it).
    pub(super) const HALF_OPEN: Refused = Refused(u64::MAX);
}

/// The validated configuration shared by every breaker of a layer. The thresholds can be
/// changed at run time through the handle (see `crate::live`): each is one atomic, loaded
/// relaxed where it is used, and the break duration (read only when a breaker trips) one
/// `ArcSwap`. The window, the break timer and the mode are fixed.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) window: SlidingWindow,
    pub(super) failure_rate: AtomicF64,
    pub(super) slow_call: AtomicOptDuration,
    pub(super) slow_call_rate: AtomicF64,
    pub(super) minimum_calls: AtomicU64,
    /// 0: off.
    pub(super) consecutive_failures: AtomicU32,
    pub(super) probes: AtomicU32,
    pub(super) progressive: AtomicBool,
    pub(super) break_duration: ArcSwap<BreakDuration>,
    pub(super) break_timer: BreakTimer,
    pub(super) mode: Mode,
}

impl Config {
    /// Whether a finished call needs the time: for its duration or for the time window.
    #[inline]
    pub(super) fn needs_end_time(&self) -> bool {
        self.slow_call.is_some() || matches!(self.window, SlidingWindow::Time { .. })
    }

    pub(super) fn probes(&self) -> u32 {
        self.probes.load(Ordering::Relaxed)
    }

    fn closed_verdict(&self, c: &Counts, consecutive: u32) -> Option<TransitionReason> {
        if c.calls >= self.minimum_calls.load(Ordering::Relaxed) {
            if c.failures > 0 && c.failure_rate() >= self.failure_rate.get() {
                return Some(TransitionReason::FailureRate);
            }
            if self.slow_call.is_some() && c.slow > 0 && c.slow_rate() >= self.slow_call_rate.get()
            {
                return Some(TransitionReason::SlowCallRate);
            }
        }
        match self.consecutive_failures.load(Ordering::Relaxed) {
            0 => None,
            k if consecutive >= k => Some(TransitionReason::ConsecutiveFailures),
            _ => None,
        }
    }

    fn probe_verdict(&self, t: &Tally, probes: u32) -> Option<TransitionReason> {
        let n = u64::from(probes);
        if t.failed > 0 && rate(u64::from(t.failed), n) >= self.failure_rate.get() {
            return Some(TransitionReason::FailureRate);
        }
        if self.slow_call.is_some()
            && t.slow > 0
            && rate(u64::from(t.slow), n) >= self.slow_call_rate.get()
        {
            return Some(TransitionReason::SlowCallRate);
        }
        None
    }
}

/// The transition callback.
pub(super) type Callback = Arc<dyn Fn(&Transition) + Send + Sync>;

/// Everything the breakers of one layer share.
pub(super) struct Common {
    pub(super) cfg: Config,
    pub(super) origin: Instant,
    pub(super) control: AtomicU8,
    pub(super) rng: SharedRng,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) transitions: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    /// `rejected`'s attributes for the refusing states: open, half-open, forced open.
    pub(super) rejected_attrs: [Box<[KeyValue]>; 3],
    pub(super) on_transition: Option<Callback>,
    /// Tasks waiting in `poll_ready` (readiness mode only).
    pub(super) waiters: Option<Mutex<Vec<Waker>>>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("cfg", &self.cfg)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl Common {
    pub(super) fn control(&self) -> u8 {
        self.control.load(Ordering::Acquire)
    }

    pub(super) fn nanos_since_origin(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The state shown for a breaker whose own state is `own`, given the control mode.
    pub(super) fn effective(&self, own: BreakerState) -> BreakerState {
        control_state(self.control()).unwrap_or(own)
    }

    /// Counts, traces and reports one transition.
    pub(super) fn emit(&self, t: &Transition) {
        let from = KeyValue::new("steadfast.breaker.from", t.from.label());
        let to = KeyValue::new("steadfast.breaker.to", t.to.label());
        match self.attrs.base() {
            [name] => self.transitions.add(1, &[name.clone(), from, to]),
            _ => self.transitions.add(1, &[from, to]),
        }
        tracing::info!(
            target: "steadfast::breaker",
            instance = self.telemetry.span_name(),
            key = t.key.as_deref().unwrap_or(""),
            from = t.from.label(),
            to = t.to.label(),
            reason = t.reason.label(),
            failure_rate = t.failure_rate,
            slow_rate = t.slow_call_rate,
            "circuit breaker transition"
        );
        if let Some(cb) = &self.on_transition {
            cb(t);
        }
        self.wake_all();
    }

    #[inline]
    pub(super) fn count_rejection(&self, state: BreakerState) {
        let attrs = match state {
            BreakerState::HalfOpen => &self.rejected_attrs[1],
            BreakerState::ForcedOpen => &self.rejected_attrs[2],
            _ => &self.rejected_attrs[0],
        };
        self.rejected.add(1, attrs);
    }

    pub(super) fn register(&self, waker: &Waker) {
        if let Some(w) = &self.waiters {
            let mut list = w.lock().unwrap_or_else(PoisonError::into_inner);
            if !list.iter().any(|x| x.will_wake(waker)) {
                list.push(waker.clone());
            }
        }
    }

    pub(super) fn wake_all(&self) {
        if let Some(w) = &self.waiters {
            let list = std::mem::take(&mut *w.lock().unwrap_or_else(PoisonError::into_inner));
            for waker in list {
                waker.wake();
            }
        }
    }
}

/// The state a control mode imposes, if any.
pub(super) fn control_state(control: u8) -> Option<BreakerState> {
    match control {
        DISABLED => Some(BreakerState::Disabled),
        FORCED_OPEN => Some(BreakerState::ForcedOpen),
        METRICS_ONLY => Some(BreakerState::MetricsOnly),
        _ => None,
    }
}

/// How a probe request went.
pub(super) enum ProbeGrant {
    Granted(Ticket),
    Full,
    Stale,
}

/// One circuit breaker (one per key for per-key layers).
pub(super) struct Core {
    pub(super) common: Arc<Common>,
    pub(super) key: Option<Arc<str>>,
    word: AtomicU64,
    window: Window,
    consecutive: AtomicU32,
    tally: AtomicU64,
    opens: AtomicU32,
    rejected: AtomicU64,
    /// The armed word's clock-check cadence less one (a mask): `CLOCK_CHECK_EVERY - 1` or
    /// `CLOCK_CHECK_EVERY_UNDRIVEN - 1`, set by the trip that armed it.
    check_mask: AtomicU64,
    /// How often the open breaker read the clock to decide on a call (tests).
    #[cfg(test)]
    pub(super) clock_reads: AtomicU64,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(super) fn new(common: Arc<Common>, key: Option<Arc<str>>) -> Self {
        let window = Window::new(common.cfg.window);
        Core {
            common,
            key,
            word: AtomicU64::new(Word::new(CLOSED, 0, 0).0),
            window,
            consecutive: AtomicU32::new(0),
            tally: AtomicU64::new(0),
            opens: AtomicU32::new(0),
            rejected: AtomicU64::new(0),
            check_mask: AtomicU64::new(CLOCK_CHECK_EVERY - 1),
            #[cfg(test)]
            clock_reads: AtomicU64::new(0),
        }
    }

    fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    fn cas(&self, from: Word, to: Word) -> bool {
        self.word
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn elapsed_nanos(&self) -> u64 {
        self.common.nanos_since_origin(Instant::now())
    }

    /// This breaker's own state (the control mode aside).
    pub(super) fn state(&self) -> BreakerState {
        match self.load().state() {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    fn note_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Admits a call or says why not (counting the refusal). Reads the clock only when the
    /// breaker is open with no break timer armed, and on every [`CLOCK_CHECK_EVERY`]th refusal
    /// when one is ([`CLOCK_CHECK_EVERY_UNDRIVEN`]th on a current-thread runtime under
    /// [`BreakTimer::Auto`]).
    #[inline]
    pub(super) fn admit(&self) -> Result<Ticket, Refused> {
        // The two common cases inline: closed, and open with a timer armed.
        let w = self.load();
        match w.state() {
            CLOSED | RESETTING => Ok(Ticket::Closed(w.epoch())),
            OPEN => self.admit_open(w),
            _ => self.admit_slow(),
        }
    }

    /// [`Core::admit`] when the breaker is open: with a timer armed, the clock is read on one
    /// refusal in the armed word's cadence; with none, on every refusal. Out of line, so that the
    /// closed path inlined into `call` stays small, and apart from [`Core::admit_slow`], whose
    /// loop costs a larger frame (ADR 0008).
    #[inline(never)]
    fn admit_open(&self, w: Word) -> Result<Ticket, Refused> {
        let mask = self.check_mask.load(Ordering::Relaxed);
        if (w.armed() && self.rejected.load(Ordering::Relaxed) & mask != mask)
            || self.now() < self.probe_at(w)
        {
            self.note_rejection();
            return Err(Refused(w.until_ms()));
        }
        self.admit_slow()
    }

    /// [`Core::admit`] when the clock must be read, or the breaker is half-open.
    #[inline(never)]
    fn admit_slow(&self) -> Result<Ticket, Refused> {
        loop {
            let w = self.load();
            match w.state() {
                CLOSED | RESETTING => return Ok(Ticket::Closed(w.epoch())),
                // No timer, or this refusal's turn to check the clock (`admit` took the others).
                // The instants compared, not subtracted: the refusal's own `probe_at` is the
                // bound, and a comparison costs a fraction of a subtraction (ADR 0008).
                OPEN => {
                    if self.now() < self.probe_at(w) {
                        self.note_rejection();
                        return Err(Refused(w.until_ms()));
                    }
                    self.try_half_open(w);
                }
                _ => match self.try_probe(w.epoch()) {
                    ProbeGrant::Granted(t) => return Ok(t),
                    ProbeGrant::Full if self.load() == w => {
                        self.note_rejection();
                        return Err(Refused::HALF_OPEN);
                    }
                    _ => {}
                },
            }
        }
    }

    /// The refusal `r` as the error the caller gets.
    #[inline]
    pub(super) fn refusal(&self, r: Refused) -> CircuitOpen {
        if r == Refused::HALF_OPEN {
            CircuitOpen::new(BreakerState::HalfOpen, None)
        } else {
            CircuitOpen::until(BreakerState::Open, self.at_ms(r.0))
        }
    }

    /// When the open breaker of word `w` allows a probe.
    #[inline]
    fn probe_at(&self, w: Word) -> Instant {
        self.at_ms(w.until_ms())
    }

    /// The instant `ms` milliseconds after the breaker's origin (a word's break end).
    #[inline]
    fn at_ms(&self, ms: u64) -> Instant {
        self.common.origin + Duration::from_millis(ms)
    }

    /// Metrics-only mode: admits every call as a closed-state call (a breaker left open by a
    /// race with the mode change is reset first).
    pub(super) fn admit_unconditionally(&self) -> Ticket {
        loop {
            let w = self.load();
            if matches!(w.state(), CLOSED | RESETTING) {
                return Ticket::Closed(w.epoch());
            }
            self.reset();
        }
    }

    /// The clock, counted in tests.
    #[inline]
    fn now(&self) -> Instant {
        #[cfg(test)]
        self.clock_reads.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// How long the open breaker stays open, or `None` once a probe is allowed.
    #[inline]
    fn open_remaining(&self, w: Word) -> Option<Duration> {
        #[cfg(test)]
        self.clock_reads.fetch_add(1, Ordering::Relaxed);
        // Durations compared directly: no 128-bit nanosecond conversion on the rejection path.
        let until = Duration::from_millis(w.until_ms());
        let now = Instant::now().saturating_duration_since(self.common.origin);
        until.checked_sub(now).filter(|d| !d.is_zero())
    }

    /// In readiness mode: what to wait for before a call may be admitted.
    pub(super) fn readiness(&self) -> Readiness {
        loop {
            let w = self.load();
            match w.state() {
                CLOSED | RESETTING => return Readiness::Ready(None),
                // Always the clock here, timer or not: a waiter that woke at the end of the break
                // must not find the breaker still armed and go back to sleep until the same
                // instant (a busy loop until the timer runs).
                OPEN => match self.open_remaining(w) {
                    Some(_) => return Readiness::Until(self.probe_at(w)),
                    None => self.try_half_open(w),
                },
                _ => match self.try_probe(w.epoch()) {
                    ProbeGrant::Granted(t) => return Readiness::Ready(Some(t)),
                    ProbeGrant::Full if self.load() == w => return Readiness::Wait,
                    _ => {}
                },
            }
        }
    }

    /// Whether a ticket still belongs to the current epoch.
    pub(super) fn is_current(&self, ticket: Ticket) -> bool {
        let w = self.load();
        match ticket {
            Ticket::Closed(e) => matches!(w.state(), CLOSED | RESETTING) && w.epoch() == e,
            Ticket::Probe(e) => w.state() == HALF_OPEN && w.epoch() == e,
        }
    }

    fn try_half_open(&self, w: Word) {
        let next = Word::new(HALF_OPEN, w.next_epoch(), 0);
        if self.cas(w, next) {
            let c = self.window.counts(self.elapsed_nanos());
            self.emit(
                BreakerState::Open,
                BreakerState::HalfOpen,
                TransitionReason::BreakElapsed,
                c.failure_rate(),
                c.slow_rate(),
            );
        }
    }

    fn try_probe(&self, epoch: u32) -> ProbeGrant {
        let cfg = &self.common.cfg;
        let mut stale = false;
        let granted = self
            .tally
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let mut t = Tally::unpack(v);
                if t.epoch != epoch {
                    if newer(t.epoch, epoch) {
                        stale = true;
                        return None;
                    }
                    t = Tally {
                        epoch,
                        ..Tally::default()
                    };
                }
                let probes = cfg.probes();
                let allowed = if cfg.progressive.load(Ordering::Relaxed) {
                    probes.min(t.done.saturating_mul(2).max(1))
                } else {
                    probes
                };
                if t.issued >= allowed {
                    return None;
                }
                t.issued += 1;
                Some(t.pack())
            })
            .is_ok();
        match (granted, stale) {
            (true, _) => ProbeGrant::Granted(Ticket::Probe(epoch)),
            (false, true) => ProbeGrant::Stale,
            (false, false) => ProbeGrant::Full,
        }
    }

    /// Gives back a probe permit whose call never finished (cancelled or never made).
    pub(super) fn release(&self, ticket: Ticket) {
        if let Ticket::Probe(epoch) = ticket {
            let _ = self
                .tally
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    let mut t = Tally::unpack(v);
                    (t.epoch == epoch && t.issued > t.done).then(|| {
                        t.issued -= 1;
                        t.pack()
                    })
                });
            self.common.wake_all();
        }
    }

    /// Records a finished call. `now_nanos` is the finish time since the origin when the clock was
    /// read (time window or slow-call detection), 0 otherwise.
    #[inline]
    pub(super) fn record(
        self: &Arc<Self>,
        ticket: Ticket,
        failure: bool,
        slow: bool,
        now_nanos: u64,
    ) {
        match ticket {
            Ticket::Closed(epoch) => self.record_closed(epoch, failure, slow, now_nanos),
            Ticket::Probe(epoch) => self.record_probe(epoch, failure, slow),
        }
    }

    #[inline]
    fn record_closed(self: &Arc<Self>, epoch: u32, failure: bool, slow: bool, now_nanos: u64) {
        let w = self.load();
        if w.state() != CLOSED || w.epoch() != epoch {
            return; // admitted before a transition: stale
        }
        self.window.record(failure, slow, now_nanos);
        if !failure && !slow && !self.window.may_hold_failures(now_nanos) {
            // Nothing in the window can make a verdict: the healthy path sums no window.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let consecutive = if failure {
            self.consecutive
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1)
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            0
        };
        let counts = self.window.counts(now_nanos);
        let Some(reason) = self.common.cfg.closed_verdict(&counts, consecutive) else {
            return;
        };
        match self.common.control() {
            NORMAL => self.trip(
                w,
                BreakerState::Closed,
                reason,
                counts.failure_rate(),
                counts.slow_rate(),
            ),
            METRICS_ONLY => self.would_trip(w, reason, &counts),
            // Admitted before the handle disabled or forced the breaker: nothing to decide.
            _ => {}
        }
    }

    fn record_probe(self: &Arc<Self>, epoch: u32, failure: bool, slow: bool) {
        let mut after = None;
        let _ = self
            .tally
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let mut t = Tally::unpack(v);
                if t.epoch != epoch || t.done >= t.issued {
                    return None;
                }
                t.done += 1;
                t.failed += u32::from(failure);
                t.slow += u32::from(slow);
                after = Some(t);
                Some(t.pack())
            });
        let Some(t) = after else { return };
        let w = self.load();
        if w.state() != HALF_OPEN || w.epoch() != epoch {
            return;
        }
        let cfg = &self.common.cfg;
        let probes = cfg.probes();
        let n = u64::from(probes);
        let (fr, sr) = (rate(u64::from(t.failed), n), rate(u64::from(t.slow), n));
        match cfg.probe_verdict(&t, probes) {
            Some(reason) => self.trip(w, BreakerState::HalfOpen, reason, fr, sr),
            None if t.done >= probes => {
                let next = Word::new(RESETTING, w.next_epoch(), 0);
                if self.cas(w, next) {
                    self.clear(next.epoch());
                    self.emit(
                        BreakerState::HalfOpen,
                        BreakerState::Closed,
                        TransitionReason::ProbesPassed,
                        fr,
                        sr,
                    );
                }
            }
            // More probes may be allowed now (progressive half-open).
            None => self.common.wake_all(),
        }
    }

    fn trip(
        self: &Arc<Self>,
        w: Word,
        from: BreakerState,
        reason: TransitionReason,
        fr: f64,
        sr: f64,
    ) {
        let common = &self.common;
        let opens = self.opens.load(Ordering::Acquire).saturating_add(1);
        let d = common
            .cfg
            .break_duration
            .load()
            .duration(opens, &*common.rng);
        let until_nanos = self
            .elapsed_nanos()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let until_ms = until_nanos.div_ceil(1_000_000);
        let timer = timer_runtime(common.cfg.break_timer);
        let next = Word::new(OPEN, w.next_epoch(), until_ms).with_armed(timer.is_some());
        if let Some((_, every)) = &timer {
            // Before the word is published: a refusal that sees it armed sees its cadence (a
            // refusal racing a second trip may use the other's; only the cadence differs).
            self.check_mask.store(every - 1, Ordering::Relaxed);
        }
        if self.cas(w, next) {
            // Armed before the task exists, so that the task's disarm cannot come first.
            if let Some((runtime, _)) = timer {
                self.spawn_break_timer(&runtime, next);
            }
            self.opens.store(opens, Ordering::Release);
            self.emit(from, BreakerState::Open, reason, fr, sr);
        }
    }

    /// Spawns the task that disarms the open word `armed` when its break ends (or when the task
    /// is dropped unfinished).
    ///
    /// The task polls its sleep with a waker of its own, [`BreakEnd`], which disarms the moment
    /// the runtime's time driver fires the timer, before any task runs: a caller woken at the
    /// same instant (a test's `advance`, a worker's next call) finds the breaker disarmed, reads
    /// the clock, and is let through as a probe, as it would be without a timer.
    fn spawn_break_timer(self: &Arc<Self>, runtime: &Handle, armed: Word) {
        let end = Arc::new(BreakEnd {
            disarm: Disarm {
                core: Arc::downgrade(self),
                armed,
            },
            task: Mutex::new(None),
        });
        let at = self.probe_at(armed);
        // Detached: the task ends when the break does, and shutting the runtime down drops it
        // (and so `end`'s disarm) instead.
        drop(runtime.spawn(async move {
            let waker = Waker::from(Arc::clone(&end));
            let sleep = tokio::time::sleep_until(at);
            let mut sleep = std::pin::pin!(sleep);
            std::future::poll_fn(|cx| {
                end.register(cx.waker());
                sleep.as_mut().poll(&mut Context::from_waker(&waker))
            })
            .await;
            end.disarm.disarm();
        }));
    }

    /// Clears the armed bit of the open word `armed`, if it is still the current word: refusals
    /// read the clock again from now on.
    fn disarm(&self, armed: Word) {
        // Fails only if the word moved on (half-open, reset): that word has no armed bit to clear.
        let _ = self.cas(armed, armed.with_armed(false));
    }

    /// Whether a break timer is armed (tests).
    #[cfg(test)]
    pub(super) fn is_armed(&self) -> bool {
        let w = self.load();
        w.state() == OPEN && w.armed()
    }

    /// Metrics-only mode: the thresholds were crossed. Say so and start a fresh window, as a trip
    /// would, but keep letting calls through.
    fn would_trip(&self, w: Word, reason: TransitionReason, c: &Counts) {
        let next = Word::new(RESETTING, w.next_epoch(), 0);
        if self.cas(w, next) {
            self.clear(next.epoch());
            tracing::info!(
                target: "steadfast::breaker",
                instance = self.common.telemetry.span_name(),
                key = self.key.as_deref().unwrap_or(""),
                reason = reason.label(),
                failure_rate = c.failure_rate(),
                slow_rate = c.slow_rate(),
                "circuit breaker thresholds exceeded (metrics only: not opening)"
            );
        }
    }

    /// Clears the window and counters, then publishes `Closed` in `epoch` (called by the thread
    /// that moved the word to `Resetting`).
    fn clear(&self, epoch: u32) {
        self.window.reset();
        self.consecutive.store(0, Ordering::Relaxed);
        self.opens.store(0, Ordering::Relaxed);
        self.word
            .store(Word::new(CLOSED, epoch, 0).0, Ordering::Release);
    }

    /// Puts the breaker back to closed with an empty window (handle operations). Returns the
    /// state it was in.
    pub(super) fn reset(&self) -> BreakerState {
        loop {
            let w = self.load();
            if w.state() == RESETTING {
                // Another thread is clearing the window: a few stores away from done.
                std::thread::yield_now();
                continue;
            }
            let next = Word::new(RESETTING, w.next_epoch(), 0);
            if self.cas(w, next) {
                self.clear(next.epoch());
                self.rejected.store(0, Ordering::Relaxed);
                return match w.state() {
                    OPEN => BreakerState::Open,
                    HALF_OPEN => BreakerState::HalfOpen,
                    _ => BreakerState::Closed,
                };
            }
        }
    }

    fn emit(
        &self,
        from: BreakerState,
        to: BreakerState,
        reason: TransitionReason,
        fr: f64,
        sr: f64,
    ) {
        self.common.emit(&Transition {
            from,
            to,
            reason,
            failure_rate: fr,
            slow_call_rate: sr,
            key: self.key.clone(),
        });
    }

    /// A snapshot of this breaker's counts.
    pub(super) fn metrics(&self) -> BreakerMetrics {
        let now = self.elapsed_nanos();
        let w = self.load();
        let c = self.window.counts(now);
        let t = Tally::unpack(self.tally.load(Ordering::Acquire));
        let (in_flight, done) = if w.state() == HALF_OPEN && t.epoch == w.epoch() {
            (t.issued - t.done.min(t.issued), t.done)
        } else {
            (0, 0)
        };
        let own = self.state();
        BreakerMetrics {
            state: self.common.effective(own),
            calls: c.calls,
            failures: c.failures,
            slow_calls: c.slow,
            failure_rate: c.failure_rate(),
            slow_call_rate: c.slow_rate(),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            consecutive_opens: self.opens.load(Ordering::Relaxed),
            open_remaining: if w.state() == OPEN {
                self.open_remaining(w).or(Some(Duration::ZERO))
            } else {
                None
            },
            probes_in_flight: in_flight,
            probes_completed: done,
        }
    }
}

/// What `poll_ready` must wait for in readiness mode.
pub(super) enum Readiness {
    /// Ready; with a probe permit when half-open.
    Ready(Option<Ticket>),
    /// Open until this instant.
    Until(Instant),
    /// Half-open with every probe taken: wait for a wake-up.
    Wait,
}

/// A claim on a breaker: what the call was admitted as. A probe claim that is dropped without an
/// outcome gives its permit back.
pub(super) struct Pass {
    pub(super) core: Arc<Core>,
    ticket: Option<Ticket>,
}

impl fmt::Debug for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pass")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Pass {
    pub(super) fn new(core: Arc<Core>, ticket: Ticket) -> Self {
        Pass {
            core,
            ticket: Some(ticket),
        }
    }

    pub(super) fn is_current(&self) -> bool {
        self.ticket.is_some_and(|t| self.core.is_current(t))
    }

    /// Records the outcome; consumes the claim.
    #[inline]
    pub(super) fn finish(mut self, failure: bool, slow: bool, now_nanos: u64) {
        if let Some(t) = self.ticket.take() {
            self.core.record(t, failure, slow, now_nanos);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.core.release(t);
        }
    }
}

/// The runtime to spawn a break timer on under `timer`, if any, and how often refusals check the
/// clock while it is armed: every [`CLOCK_CHECK_EVERY`]th where workers drive the timer (or the
/// caller said they do, with `Always`), every [`CLOCK_CHECK_EVERY_UNDRIVEN`]th under `Auto` on a
/// current-thread runtime.
fn timer_runtime(timer: BreakTimer) -> Option<(Handle, u64)> {
    let runtime = match timer {
        BreakTimer::Off => return None,
        BreakTimer::Auto | BreakTimer::Always => Handle::try_current().ok()?,
    };
    let every =
        if timer == BreakTimer::Always || runtime.runtime_flavor() == RuntimeFlavor::MultiThread {
            CLOCK_CHECK_EVERY
        } else {
            CLOCK_CHECK_EVERY_UNDRIVEN
        };
    Some((runtime, every))
}

/// Owned by a break timer task: disarms its breaker's open word when the timer fires, and when
/// dropped, which the runtime does if it shuts down first. Disarming twice is harmless (the second
/// finds the word already moved on).
struct Disarm {
    core: Weak<Core>,
    armed: Word,
}

impl Disarm {
    fn disarm(&self) {
        if let Some(core) = self.core.upgrade() {
            core.disarm(self.armed);
        }
    }
}

impl Drop for Disarm {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The waker a break timer's sleep is polled with: the time driver wakes it when the break ends,
/// and it disarms right there, then wakes the task so that it ends and frees its sleep.
struct BreakEnd {
    disarm: Disarm,
    /// The task's own waker, from its last poll.
    task: Mutex<Option<Waker>>,
}

impl BreakEnd {
    fn register(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if !task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for BreakEnd {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.disarm.disarm();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.wake();
        }
    }
}

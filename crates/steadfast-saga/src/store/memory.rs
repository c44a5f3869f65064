//! The in-memory store, for tests: the same contract as the databases, on the tokio clock (so
//! lease expiry follows a paused clock).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    Created, HistoryEntry, Lease, ListQuery, NewSaga, SagaRecord, SagaStatus, SagaStore,
    SagaSummary, StepRecord, StoreFuture, Transition,
};
use crate::error::{Error, Fenced};
use crate::keys::SagaId;

/// An in-memory [`SagaStore`]: nothing survives the process. Lease times follow
/// `tokio::time`, so tests can run on a paused clock.
///
/// ```
/// use steadfast_saga::store::MemoryStore;
/// let store = MemoryStore::new();
/// # let _ = store;
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    origin: Instant,
}

#[derive(Debug, Default)]
struct State {
    sagas: ById<Row>,
    by_key: HashMap<(String, String), SagaId>,
    order: Vec<SagaId>,
    history: ById<Vec<HistoryEntry>>,
    seq: i64,
}

/// A map keyed by saga id, hashed by [`IdHasher`].
type ById<V> = HashMap<SagaId, V, BuildHasherDefault<IdHasher>>;

/// The hasher of the maps keyed by saga id: a multiply-rotate fold of the id's bytes (as
/// FxHash does), a few instructions where SipHash takes about a hundred per lookup. Saga ids are
/// UUIDs, and this store holds a test's sagas: it needs no defence against chosen keys (the
/// business-key map keeps the standard hasher).
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

#[derive(Debug)]
struct Row {
    record: SagaRecord,
    created: Instant,
    deadline_at: Option<Instant>,
    lease_expires: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// let _ = steadfast_saga::store::MemoryStore::new();
    /// ```
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            origin: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied transition (every change
        // is applied after its checks), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        super::duration_ms(Instant::now().saturating_duration_since(self.origin))
    }

    /// Test hook: applies `f` to a saga's stored record (to simulate a damaged row); false when
    /// there is no such saga.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn corrupt_with(&self, id: SagaId, f: impl FnOnce(&mut SagaRecord)) -> bool {
        match self.lock().sagas.get_mut(&id) {
            Some(row) => {
                f(&mut row.record);
                true
            }
            None => false,
        }
    }

    /// Test hook (feature `test-hooks`): overwrites a saga's stored input text (to simulate a
    /// corrupt row).
    ///
    /// ```
    /// # use steadfast_saga::{store::MemoryStore, SagaId};
    /// let s = MemoryStore::new();
    /// assert!(!s.corrupt_input(SagaId::nil(), "not json"));
    /// ```
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn corrupt_input(&self, id: SagaId, text: &str) -> bool {
        match self.lock().sagas.get_mut(&id) {
            Some(row) => {
                row.record.input = text.to_string();
                true
            }
            None => false,
        }
    }
}

impl State {
    fn push_history(&mut self, id: SagaId, at_ms: i64, epoch: i64, event: super::Event) {
        self.seq += 1;
        let entry = HistoryEntry {
            seq: self.seq,
            at_ms,
            epoch,
            kind: event.kind,
            step: event.step,
            phase: event.phase,
            detail: event.detail,
        };
        self.history.entry(id).or_default().push(entry);
    }
}

fn deadline_remaining(row: &Row, now: Instant) -> Option<Duration> {
    row.deadline_at.map(|d| d.saturating_duration_since(now))
}

impl SagaStore for MemoryStore {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        Box::pin(async move {
            super::check_span("lease", lease)?;
            if let Some(d) = new.deadline {
                super::check_span("deadline", d)?;
            }
            let now = Instant::now();
            let at = self.now_ms();
            let mut st = self.lock();
            let key = (new.saga_type.clone(), new.business_key.clone());
            if let Some(id) = st.by_key.get(&key) {
                return Ok(Created::Existing(*id));
            }
            if st.sagas.contains_key(&new.id) {
                return Err(Error::InvalidOperation(format!(
                    "saga id {} already exists",
                    new.id
                )));
            }
            let record = SagaRecord {
                id: new.id,
                saga_type: new.saga_type,
                version: new.version,
                business_key: new.business_key,
                status: SagaStatus::Running,
                compensating: false,
                input: new.input,
                cursor: 0,
                recoveries: 0,
                error: None,
                epoch: 1,
                owner: Some(owner.to_string()),
                deadline_remaining: None,
                age: Duration::ZERO,
                forward_only: new.forward_only,
                cancel_requested: None,
                steps: new.first_step.clone().into_iter().collect(),
            };
            st.by_key.insert(key, new.id);
            st.order.push(new.id);
            st.sagas.insert(
                new.id,
                Row {
                    record,
                    created: now,
                    deadline_at: new.deadline.map(|d| now + d),
                    lease_expires: now + lease,
                },
            );
            st.push_history(new.id, at, 1, super::created_event(new.first_step.as_ref()));
            Ok(Created::New(Lease {
                saga: new.id,
                owner: owner.to_string(),
                epoch: 1,
            }))
        })
    }

    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord> {
        Box::pin(async move {
            let now = Instant::now();
            let st = self.lock();
            let row = st.sagas.get(&id).ok_or(Error::NotFound(id))?;
            let mut rec = row.record.clone();
            rec.deadline_remaining = deadline_remaining(row, now);
            rec.age = now.saturating_duration_since(row.created);
            Ok(rec)
        })
    }

    fn record<'a>(&'a self, lease: &'a Lease, t: Transition) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let at = self.now_ms();
            let mut st = self.lock();
            let row = st
                .sagas
                .get_mut(&lease.saga)
                .ok_or(Error::NotFound(lease.saga))?;
            if row.record.epoch != lease.epoch {
                return Err(Error::Fenced(Fenced {
                    saga: lease.saga,
                    epoch: lease.epoch,
                }));
            }
            if let (true, Some(reason)) = (t.unless_cancelled, &row.record.cancel_requested) {
                return Err(Error::CancelRequested(crate::error::CancelRequested {
                    saga: lease.saga,
                    reason: reason.clone(),
                }));
            }
            let rec = &mut row.record;
            rec.forward_only |= t.forward_only;
            if let Some(step) = t.step {
                upsert_step(&mut rec.steps, step);
            }
            if let Some(s) = t.status {
                rec.status = s;
            }
            if let Some(c) = t.compensating {
                rec.compensating = c;
            }
            if let Some(c) = t.cursor {
                rec.cursor = c;
            }
            if let Some(e) = t.error {
                rec.error = e;
            }
            if t.reset_recoveries {
                rec.recoveries = 0;
            }
            st.push_history(lease.saga, at, lease.epoch, t.event);
            Ok(())
        })
    }

    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            super::check_span("lease_for", lease_for)?;
            let now = Instant::now();
            let mut st = self.lock();
            let row = st
                .sagas
                .get_mut(&lease.saga)
                .ok_or(Error::NotFound(lease.saga))?;
            if row.record.epoch != lease.epoch {
                return Err(Error::Fenced(Fenced {
                    saga: lease.saga,
                    epoch: lease.epoch,
                }));
            }
            row.lease_expires = now + lease_for;
            Ok(())
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let now = Instant::now();
            let mut st = self.lock();
            if let Some(row) = st.sagas.get_mut(&lease.saga) {
                if row.record.epoch == lease.epoch {
                    row.lease_expires = now;
                }
            }
            Ok(())
        })
    }

    fn claim_expired<'a>(
        &'a self,
        owner: &'a str,
        lease_for: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Lease>> {
        Box::pin(async move {
            super::check_span("lease_for", lease_for)?;
            let now = Instant::now();
            let at = self.now_ms();
            let mut st = self.lock();
            let mut claimed = Vec::new();
            let ids: Vec<SagaId> = st.order.clone();
            for id in ids {
                if claimed.len() >= limit as usize {
                    break;
                }
                let Some(row) = st.sagas.get_mut(&id) else {
                    continue;
                };
                if !row.record.status.is_active() || row.lease_expires > now {
                    continue;
                }
                row.record.owner = Some(owner.to_string());
                let Some(epoch) = row.record.epoch.checked_add(1) else {
                    // No claim can fence the last owner: set aside (not claimed, not counted).
                    let why = super::epoch_exhausted(id).to_string();
                    tracing::warn!(target: "steadfast::saga", error = %why,
                        "a saga row cannot be claimed: set aside as needing attention");
                    row.record.status = SagaStatus::NeedsAttention;
                    row.record.error = Some(why.clone());
                    row.lease_expires = now;
                    let epoch = row.record.epoch;
                    st.push_history(
                        id,
                        at,
                        epoch,
                        super::Event::new("needs_attention").detail(why),
                    );
                    continue;
                };
                row.record.epoch = epoch;
                row.record.recoveries = row.record.recoveries.saturating_add(1);
                row.lease_expires = now + lease_for;
                st.push_history(
                    id,
                    at,
                    epoch,
                    super::Event::new("claimed").detail(format!("by {owner}")),
                );
                claimed.push(Lease {
                    saga: id,
                    owner: owner.to_string(),
                    epoch,
                });
            }
            Ok(claimed)
        })
    }

    fn take_over<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease_for: Duration,
    ) -> StoreFuture<'a, Lease> {
        Box::pin(async move {
            super::check_span("lease_for", lease_for)?;
            let now = Instant::now();
            let at = self.now_ms();
            let mut st = self.lock();
            let row = st.sagas.get_mut(&id).ok_or(Error::NotFound(id))?;
            row.record.epoch = row
                .record
                .epoch
                .checked_add(1)
                .ok_or_else(|| super::epoch_exhausted(id))?;
            row.record.owner = Some(owner.to_string());
            row.lease_expires = now + lease_for;
            let epoch = row.record.epoch;
            st.push_history(
                id,
                at,
                epoch,
                super::Event::new("taken_over").detail(format!("by {owner}")),
            );
            Ok(Lease {
                saga: id,
                owner: owner.to_string(),
                epoch,
            })
        })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Vec<SagaSummary>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .order
                .iter()
                .filter_map(|id| st.sagas.get(id))
                .filter(|r| query.status.is_none_or(|s| r.record.status == s))
                .filter(|r| {
                    query
                        .saga_type
                        .as_deref()
                        .is_none_or(|t| r.record.saga_type == t)
                })
                .take(query.limit as usize)
                .map(|r| SagaSummary {
                    id: r.record.id,
                    saga_type: r.record.saga_type.clone(),
                    business_key: r.record.business_key.clone(),
                    status: r.record.status,
                    error: r.record.error.clone(),
                    recoveries: r.record.recoveries,
                })
                .collect())
        })
    }

    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>> {
        Box::pin(async move {
            let st = self.lock();
            if !st.sagas.contains_key(&id) {
                return Err(Error::NotFound(id));
            }
            Ok(st.history.get(&id).cloned().unwrap_or_default())
        })
    }

    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        Box::pin(async move {
            let at = self.now_ms();
            let mut st = self.lock();
            let rec = &mut st.sagas.get_mut(&id).ok_or(Error::NotFound(id))?.record;
            let open = matches!(rec.status, SagaStatus::Running | SagaStatus::NeedsAttention)
                && !rec.compensating
                && !rec.forward_only
                && rec.cancel_requested.is_none();
            if !open {
                return super::cancel_verdict(id, rec.status, rec.compensating, rec.forward_only);
            }
            rec.cancel_requested = Some(reason.to_string());
            let (status, epoch) = (rec.status, rec.epoch);
            st.push_history(
                id,
                at,
                epoch,
                super::Event::new("cancel_requested").detail(reason),
            );
            Ok(status)
        })
    }
}

fn upsert_step(steps: &mut Vec<StepRecord>, step: StepRecord) {
    match steps
        .iter_mut()
        .find(|s| s.step == step.step && s.phase == step.phase)
    {
        Some(existing) => *existing = step,
        None => steps.push(step),
    }
}

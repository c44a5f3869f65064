use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    span, BeginOutcome, BeginRequest, Fingerprint, IdempotencyStore, Lease, RecordId, StoreError,
    StoreErrorKind, StoreFuture, StoredResponse,
};
use crate::ConfigError;

/// The default capacity of a [`MemoryStore`], in records.
///
/// ```
/// assert_eq!(steadfast_http::idempotency::store::DEFAULT_CAPACITY, 100_000);
/// ```
pub const DEFAULT_CAPACITY: usize = 100_000;

/// An in-process store: bounded, with expiry on `tokio::time` (so tests run on a paused
/// clock), safe to share between tasks and threads (clones share the records).
///
/// Records are keyed by their [`RecordId`] (a 32-byte digest of scope and key), so a record
/// costs the same whatever the key's and principal's length: the memory held is bounded by the
/// capacity times the largest stored response, plus a fixed overhead per record.
///
/// Only for a single process: duplicates that reach another replica are not seen. When full it
/// first drops expired records; if none has expired it refuses new keys with
/// [`StoreErrorKind::Capacity`] (the server layer answers `503`) rather than evict a live record,
/// which would let a duplicate execute again.
///
/// ```
/// use steadfast_http::idempotency::store::MemoryStore;
/// let store = MemoryStore::builder().capacity(10_000).build()?;
/// assert_eq!(store.len(), 0);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

/// Builds a [`MemoryStore`].
///
/// ```
/// use steadfast_http::idempotency::store::MemoryStore;
/// assert!(MemoryStore::builder().capacity(0).build().is_err());
/// ```
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    capacity: usize,
}

impl MemoryStoreBuilder {
    /// The most records kept at once (default [`DEFAULT_CAPACITY`]).
    pub fn capacity(mut self, records: usize) -> Self {
        self.capacity = records;
        self
    }

    /// Validates and builds the store.
    pub fn build(self) -> Result<MemoryStore, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::zero("capacity"));
        }
        Ok(MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                records: HashMap::new(),
                earliest_expiry: None,
            })),
            capacity: self.capacity,
        })
    }
}

#[derive(Default)]
struct Inner {
    records: HashMap<RecordId, Record>,
    /// No record expires before this instant (a lower bound; `None`: unknown, scan).
    earliest_expiry: Option<Instant>,
}

struct Record {
    fingerprint: Fingerprint,
    owner: uuid::Uuid,
    epoch: u64,
    state: State,
    expires_at: Instant,
}

enum State {
    InFlight { lease_until: Instant },
    Completed(StoredResponse),
}

impl MemoryStore {
    /// A store with the default capacity.
    ///
    /// ```
    /// use steadfast_http::idempotency::store::{MemoryStore, DEFAULT_CAPACITY};
    /// let store = MemoryStore::new();
    /// assert_eq!(store.capacity(), DEFAULT_CAPACITY);
    /// assert!(store.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default capacity is valid"))
    }

    /// A builder.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// The number of records held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops every expired record now and returns how many were dropped (expired records are
    /// otherwise dropped when the store is full, or replaced when their key is used again).
    ///
    /// ```
    /// # use steadfast_http::idempotency::store::MemoryStore;
    /// assert_eq!(MemoryStore::new().purge_expired(), 0);
    /// ```
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        purge(&mut self.lock(), now)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation panics while holding the lock; recover the data if one ever did.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin_now(&self, req: &BeginRequest) -> Result<BeginOutcome, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let address = *req.id();
        let next_epoch = match inner.records.get_mut(&address) {
            Some(record) if record.expires_at > now => {
                if record.fingerprint != *req.fingerprint() {
                    return Ok(BeginOutcome::Mismatch);
                }
                match &record.state {
                    State::Completed(response) => {
                        return Ok(BeginOutcome::Completed(response.clone()));
                    }
                    State::InFlight { lease_until } if *lease_until > now => {
                        return Ok(BeginOutcome::InFlight {
                            retry_after: *lease_until - now,
                        });
                    }
                    State::InFlight { .. } => {
                        // The holder's lease expired: take it over.
                        record.epoch += 1;
                        record.owner = req.lease_owner();
                        record.state = State::InFlight {
                            lease_until: now + span(req.lease_duration()),
                        };
                        record.expires_at = now + span(req.expiry_duration());
                        let (epoch, expires_at) = (record.epoch, record.expires_at);
                        note_expiry(&mut inner, expires_at);
                        return Ok(BeginOutcome::Acquired(req.lease_at(epoch, true)));
                    }
                }
            }
            Some(expired) => expired.epoch + 1,
            None => {
                if inner.records.len() >= self.capacity && purge(&mut inner, now) == 0 {
                    return Err(StoreError::new(
                        StoreErrorKind::Capacity,
                        format!("{} records, none expired", self.capacity),
                    ));
                }
                1
            }
        };
        let expires_at = now + span(req.expiry_duration());
        if inner.records.is_empty() {
            inner.earliest_expiry = Some(expires_at);
        }
        note_expiry(&mut inner, expires_at);
        inner.records.insert(
            address,
            Record {
                fingerprint: *req.fingerprint(),
                owner: req.lease_owner(),
                epoch: next_epoch,
                state: State::InFlight {
                    lease_until: now + span(req.lease_duration()),
                },
                expires_at,
            },
        );
        Ok(BeginOutcome::Acquired(req.lease_at(next_epoch, false)))
    }

    fn complete_now(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let record = held(&mut inner, lease)?;
        record.state = State::Completed(response);
        record.expires_at = now + span(expiry);
        note_expiry(&mut inner, now + span(expiry));
        Ok(())
    }

    fn renew_now(&self, lease: &Lease, duration: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let record = held(&mut inner, lease)?;
        record.state = State::InFlight {
            lease_until: now + span(duration),
        };
        Ok(())
    }

    fn release_now(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut inner = self.lock();
        held(&mut inner, lease)?;
        inner.records.remove(lease.id());
        Ok(())
    }
}

/// The record `lease` holds, in flight under that very lease.
fn held<'a>(inner: &'a mut Inner, lease: &Lease) -> Result<&'a mut Record, StoreError> {
    match inner.records.get_mut(lease.id()) {
        Some(record)
            if matches!(record.state, State::InFlight { .. })
                && record.owner == lease.owner()
                && record.epoch == lease.epoch() =>
        {
            Ok(record)
        }
        _ => Err(StoreError::lease_lost(lease)),
    }
}

/// Keeps `earliest_expiry` a lower bound when a record's expiry moves to `at`.
fn note_expiry(inner: &mut Inner, at: Instant) {
    if let Some(e) = inner.earliest_expiry {
        inner.earliest_expiry = Some(e.min(at));
    }
}

fn purge(inner: &mut Inner, now: Instant) -> usize {
    if inner.earliest_expiry.is_some_and(|e| e > now) {
        return 0;
    }
    let before = inner.records.len();
    inner.records.retain(|_, r| r.expires_at > now);
    inner.earliest_expiry = inner.records.values().map(|r| r.expires_at).min();
    before - inner.records.len()
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl IdempotencyStore for MemoryStore {
    fn begin(&self, request: BeginRequest) -> StoreFuture<BeginOutcome> {
        let result = self.begin_now(&request);
        Box::pin(std::future::ready(result))
    }

    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> StoreFuture<()> {
        let result = self.complete_now(lease, response, expiry);
        Box::pin(std::future::ready(result))
    }

    fn release(&self, lease: &Lease) -> StoreFuture<()> {
        let result = self.release_now(lease);
        Box::pin(std::future::ready(result))
    }

    fn renew(&self, lease: &Lease, duration: Duration) -> StoreFuture<()> {
        let result = self.renew_now(lease, duration);
        Box::pin(std::future::ready(result))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

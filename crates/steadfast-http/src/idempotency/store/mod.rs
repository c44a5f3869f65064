//! Where idempotency records live: one trait, [`IdempotencyStore`], and three stores that pass
//! the same conformance suite ([`MemoryStore`], `RedisStore`, `PostgresStore`).
//!
//! A record is addressed by a scope (the principal: tenant, account, auth subject) and a key. It
//! is either **in flight**, held by a [`Lease`] (an owner and an epoch) until the lease expires,
//! or **completed**, holding the [`StoredResponse`] until the record expires. The three
//! operations are atomic in every store:
//!
//! - [`begin`](IdempotencyStore::begin): create the record and take its lease; or report that it
//!   is in flight ([`BeginOutcome::InFlight`]), completed ([`BeginOutcome::Completed`]) or was
//!   created by a request with another fingerprint ([`BeginOutcome::Mismatch`]); or, if the
//!   holder's lease has expired (it died), take the lease over with the epoch raised by one.
//! - [`complete`](IdempotencyStore::complete): store the response, only if the caller still holds
//!   the lease (same owner and epoch); otherwise fail with [`StoreErrorKind::LeaseLost`], so a
//!   holder whose lease was taken over can never overwrite the result (fencing).
//! - [`release`](IdempotencyStore::release): drop an in-flight record whose execution produced
//!   nothing worth storing, so the next retry executes at once; fenced the same way.
//! - [`renew`](IdempotencyStore::renew): extend a live holder's lease (the server layer renews
//!   every third of the lease while the handler runs), fenced the same way; so only a holder
//!   that died, or stopped being polled, loses its lease.
//!
//! # How records are addressed
//!
//! Every store finds a record by its [`RecordId`]: SHA-256 over the length-prefixed scope and
//! key (`u64` big-endian byte length of the scope, its UTF-8 bytes, the same for the key). The
//! address is 32 bytes whatever the inputs, so **every input the layer accepts is storable on
//! every store**: keys up to [`MAX_LEN_LIMIT`](crate::codec::idempotency_key::MAX_LEN_LIMIT)
//! (8192) characters and principals of any length and content (NUL and non-ASCII included).
//! PostgreSQL indexes the 32-byte `id` (a B-tree entry cannot exceed a third of a page, about
//! 2.7 kB, so `(scope, key)` itself could not be indexed); Redis key names are the prefix plus
//! 64 hex digits; the in-memory store keys its map by the digest, so a record costs the same
//! whatever the key's length.
//!
//! **Why a digest suffices.** The encoding is injective (the lengths keep `("a:b", "c")` apart
//! from `("a", "b:c")`), so two different `(scope, key)` pairs share an address only if SHA-256
//! collides. The best known attack on SHA-256's collision resistance is the generic birthday
//! bound, about 2^128 evaluations; even 2^64 records (far beyond any store) collide with
//! probability about 2^-129. The layer already rests on the same assumption in the one place
//! where it matters more: the `422` check compares request [`Fingerprint`]s (also SHA-256), never
//! the requests themselves. The PostgreSQL store still keeps the full scope and key in the row
//! (unindexed) for operators, e.g. to find or delete one tenant's records; Redis and the memory
//! store keep only the digest.
//!
//! # Errors: transient or permanent
//!
//! A [`StoreError`] is [transient](StoreError::is_transient) (the store is unreachable, slow or
//! full: retrying later may succeed; the layer answers `503` with `Retry-After`) or permanent
//! (a corrupt record, a missing table, a permission or script error: the same call will fail
//! again; the layer answers `500` without `Retry-After`, so clients and proxies do not retry
//! into it forever). See [`StoreErrorKind`] for which is which.
//!
//! # Why the futures are boxed
//!
//! The trait returns [`StoreFuture`], a boxed `'static` future, rather than `impl Future`: the
//! server layer's named, pin-projected response future has to hold the store call while it also
//! owns the request, and a future that borrows `&self` cannot sit next to the `Arc` it borrows
//! from; naming an `async fn`'s future in an associated type needs unstable features. The box is
//! one small allocation per store round trip (a network call for Redis and PostgreSQL), and it
//! keeps the trait object-safe, so a store can be chosen at run time (`Arc<dyn IdempotencyStore>`).
//!
//! ```
//! use std::time::Duration;
//! use steadfast_http::codec::idempotency_key::IdempotencyKey;
//! use steadfast_http::idempotency::store::{BeginOutcome, BeginRequest, Fingerprint, IdempotencyStore, MemoryStore, StoredResponse};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let begin = BeginRequest::new("tenant-a", IdempotencyKey::new("k1")?, Fingerprint::from_bytes([7; 32]))
//!     .lease(Duration::from_secs(30))
//!     .expiry(Duration::from_secs(86_400));
//! let BeginOutcome::Acquired(lease) = store.begin(begin.clone()).await? else { unreachable!() };
//! assert!(matches!(store.begin(begin.clone()).await?, BeginOutcome::InFlight { .. }));
//! store.complete(&lease, StoredResponse::new(http::StatusCode::CREATED, Default::default(), "done".into()), Duration::from_secs(86_400)).await?;
//! let BeginOutcome::Completed(stored) = store.begin(begin).await? else { unreachable!() };
//! assert_eq!(stored.body(), "done");
//! # Ok(()) }
//! ```

mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod response;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::codec::idempotency_key::IdempotencyKey;

pub use error::{StoreError, StoreErrorKind};
pub use memory::{MemoryStore, MemoryStoreBuilder, DEFAULT_CAPACITY};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder, MIGRATION_SQL};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder};
pub use response::StoredResponse;

/// The future every store operation returns: boxed, `Send` and `'static` (see the
/// [module docs](self) for why).
///
/// ```
/// use steadfast_http::idempotency::store::{StoreError, StoreFuture};
/// let fut: StoreFuture<()> = Box::pin(async { Err(StoreError::unavailable("down")) });
/// # let _ = fut;
/// ```
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// A store of idempotency records. See the [module docs](self) for the contract.
///
/// Implementations must make each operation atomic with respect to the others on the same
/// record ([`RecordId`], the digest of `(scope, key)`), from any number of processes; they must
/// accept every scope and key (address records by [`RecordId`] if the scope and key themselves
/// cannot be indexed); and they should classify their errors (see [`StoreErrorKind`]) so that
/// the layer does not answer "retry later" to an error that retrying cannot clear. `begin` on a
/// record whose `expiry` has passed behaves as if the record did not exist (raising the epoch is
/// allowed).
///
/// ```
/// use std::sync::Arc;
/// use steadfast_http::idempotency::store::{IdempotencyStore, MemoryStore};
/// // Object-safe: a store chosen at run time.
/// let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
/// assert_eq!(store.kind(), "memory");
/// ```
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Creates the record and takes its lease, or says why not (see [`BeginOutcome`]).
    fn begin(&self, request: BeginRequest) -> StoreFuture<BeginOutcome>;

    /// Stores `response` for `lease`'s record, which then expires `expiry` from now. Fails with
    /// [`StoreErrorKind::LeaseLost`] unless the record is in flight under this very lease.
    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> StoreFuture<()>;

    /// Deletes `lease`'s in-flight record. Fails with [`StoreErrorKind::LeaseLost`] unless the
    /// record is in flight under this very lease.
    fn release(&self, lease: &Lease) -> StoreFuture<()>;

    /// Extends `lease` to end `duration` from now. Fails with [`StoreErrorKind::LeaseLost`]
    /// unless the record is in flight under this very lease.
    fn renew(&self, lease: &Lease, duration: Duration) -> StoreFuture<()>;

    /// A short name for traces and metrics (`memory`, `redis`, `postgres`).
    fn kind(&self) -> &'static str {
        "custom"
    }
}

impl<T: IdempotencyStore + ?Sized> IdempotencyStore for Arc<T> {
    fn begin(&self, request: BeginRequest) -> StoreFuture<BeginOutcome> {
        (**self).begin(request)
    }

    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> StoreFuture<()> {
        (**self).complete(lease, response, expiry)
    }

    fn release(&self, lease: &Lease) -> StoreFuture<()> {
        (**self).release(lease)
    }

    fn renew(&self, lease: &Lease, duration: Duration) -> StoreFuture<()> {
        (**self).renew(lease, duration)
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }
}

/// What [`IdempotencyStore::begin`] is asked: the record's address, the request's fingerprint,
/// the lease's owner and duration, and how long the record lives.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::idempotency_key::IdempotencyKey;
/// use steadfast_http::idempotency::store::{BeginRequest, Fingerprint};
/// let r = BeginRequest::new("acct_1", IdempotencyKey::new("k")?, Fingerprint::from_bytes([0; 32]))
///     .lease(Duration::from_secs(5));
/// assert_eq!(r.scope(), "acct_1");
/// assert_eq!(r.lease_duration(), Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BeginRequest {
    scope: Arc<str>,
    key: IdempotencyKey,
    id: RecordId,
    fingerprint: Fingerprint,
    owner: uuid::Uuid,
    lease: Duration,
    expiry: Duration,
}

impl BeginRequest {
    /// A request for `(scope, key)` with a fresh owner (UUID v7), a 30 s lease and a 24 h expiry.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// use steadfast_http::idempotency::store::{BeginRequest, Fingerprint};
    /// let r = BeginRequest::new("t", IdempotencyKey::new("k")?, Fingerprint::from_bytes([0; 32]));
    /// assert_eq!((r.lease_duration(), r.expiry_duration()), (Duration::from_secs(30), Duration::from_secs(86_400)));
    /// assert_eq!(r.lease_at(1, false).owner(), r.lease_owner());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(scope: impl Into<Arc<str>>, key: IdempotencyKey, fingerprint: Fingerprint) -> Self {
        let scope = scope.into();
        let id = RecordId::of(&scope, key.as_str());
        Self {
            scope,
            key,
            id,
            fingerprint,
            owner: uuid::Uuid::now_v7(),
            lease: Duration::from_secs(30),
            expiry: Duration::from_secs(24 * 3600),
        }
    }

    /// How long the lease lasts unless completed or released (kept as at most [`MAX_SPAN`]).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long the record lives (in flight, then completed; kept as at most [`MAX_SPAN`]).
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// The owner the lease is taken for.
    pub fn owner(mut self, owner: uuid::Uuid) -> Self {
        self.owner = owner;
        self
    }

    /// The scope (principal).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The scope, shared.
    pub fn scope_arc(&self) -> &Arc<str> {
        &self.scope
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The record's address (see [`RecordId`]).
    pub fn id(&self) -> &RecordId {
        &self.id
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The would-be lease owner.
    pub fn lease_owner(&self) -> uuid::Uuid {
        self.owner
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        self.lease
    }

    /// The record's lifetime.
    pub fn expiry_duration(&self) -> Duration {
        self.expiry
    }

    /// The lease this request asks for, at `epoch`.
    pub fn lease_at(&self, epoch: u64, taken_over: bool) -> Lease {
        Lease {
            scope: Arc::clone(&self.scope),
            key: self.key.clone(),
            id: self.id,
            owner: self.owner,
            epoch,
            taken_over,
        }
    }
}

/// What [`IdempotencyStore::begin`] found.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::idempotency::store::BeginOutcome;
/// let o = BeginOutcome::InFlight { retry_after: Duration::from_secs(3) };
/// assert_eq!(o.label(), "in_flight");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BeginOutcome {
    /// The caller holds the lease and must execute the request, then complete or release.
    Acquired(Lease),
    /// Another holder's lease is live; it expires in `retry_after`.
    InFlight {
        /// Time left on the holder's lease.
        retry_after: Duration,
    },
    /// The request was executed before: here is its response.
    Completed(StoredResponse),
    /// The key was first used by a request with another fingerprint.
    Mismatch,
}

impl BeginOutcome {
    /// A short label for traces.
    pub fn label(&self) -> &'static str {
        match self {
            BeginOutcome::Acquired(_) => "acquired",
            BeginOutcome::InFlight { .. } => "in_flight",
            BeginOutcome::Completed(_) => "completed",
            BeginOutcome::Mismatch => "mismatch",
        }
    }
}

/// The right to execute one keyed request: the record's address, the owner and the epoch that
/// fence every write.
///
/// ```
/// use steadfast_http::codec::idempotency_key::IdempotencyKey;
/// use steadfast_http::idempotency::store::{BeginRequest, Fingerprint};
/// let lease = BeginRequest::new("t", IdempotencyKey::new("k")?, Fingerprint::from_bytes([0; 32])).lease_at(2, true);
/// assert_eq!(lease.epoch(), 2);
/// assert!(lease.taken_over());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    scope: Arc<str>,
    key: IdempotencyKey,
    id: RecordId,
    owner: uuid::Uuid,
    epoch: u64,
    taken_over: bool,
}

impl Lease {
    /// The scope (principal).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The record's address (see [`RecordId`]).
    pub fn id(&self) -> &RecordId {
        &self.id
    }

    /// The owner: unique per `begin`.
    pub fn owner(&self) -> uuid::Uuid {
        self.owner
    }

    /// The epoch: 1 for the first holder, raised by one at each takeover.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this lease was taken over from a holder whose lease had expired.
    pub fn taken_over(&self) -> bool {
        self.taken_over
    }
}

/// The address of a record: SHA-256 over the length-prefixed scope and key, 32 bytes whatever
/// their length. Every store finds records by it (see the [module docs](self#how-records-are-addressed)
/// for why a 256-bit digest suffices).
///
/// The encoding hashed is the scope's byte length as a big-endian `u64`, the scope's UTF-8
/// bytes, the key's byte length as a big-endian `u64`, then the key's bytes. In SQL (what the
/// PostgreSQL migration computes for rows written before this address existed):
/// `sha256(int8send(octet_length(scope)) || scope || int8send(octet_length(key)) || key)`.
///
/// ```
/// use steadfast_http::idempotency::store::RecordId;
/// let a = RecordId::of("a:b", "c");
/// assert_ne!(a, RecordId::of("a", "b:c"));
/// assert_eq!(a, RecordId::of("a:b", "c"));
/// // Fixed size, whatever the inputs.
/// assert_eq!(RecordId::of(&"p".repeat(10_000), &"k".repeat(8192)).as_bytes().len(), 32);
/// assert_eq!(a.to_string().len(), 64);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId([u8; 32]);

impl RecordId {
    /// The address of `(scope, key)`.
    pub fn of(scope: &str, key: &str) -> Self {
        let mut h = Sha256::new();
        h.update((scope.len() as u64).to_be_bytes());
        h.update(scope.as_bytes());
        h.update((key.len() as u64).to_be_bytes());
        h.update(key.as_bytes());
        Self(h.finalize().into())
    }

    /// An address from its 32 bytes (as stores keep it).
    ///
    /// ```
    /// # use steadfast_http::idempotency::store::RecordId;
    /// let id = RecordId::of("t", "k");
    /// assert_eq!(RecordId::from_bytes(*id.as_bytes()), id);
    /// ```
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// A request's fingerprint: SHA-256 over its method, path and query, and a SHA-256 digest of
/// its body. A key reused with another fingerprint is answered `422`.
///
/// ```
/// use http::Method;
/// use steadfast_http::idempotency::store::Fingerprint;
/// let a = Fingerprint::of(&Method::POST, "/orders", b"{\"qty\":1}");
/// let b = Fingerprint::of(&Method::POST, "/orders", b"{\"qty\":2}");
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().len(), 64);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request.
    pub fn of(method: &http::Method, path_and_query: &str, body: &[u8]) -> Self {
        let body_digest = Sha256::digest(body);
        let mut h = Sha256::new();
        h.update(method.as_str().as_bytes());
        h.update([0]);
        h.update(path_and_query.as_bytes());
        h.update([0]);
        h.update(body_digest);
        Self(h.finalize().into())
    }

    /// A fingerprint from its 32 bytes (as stores keep it).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The longest lease or expiry a store keeps: 100 years of 365 days. A longer one (a
/// [`BeginRequest`] built by hand with `Duration::MAX`, say) is kept as this long, as tokio
/// keeps a very long sleep: every store adds it to its clock, which must not overflow. The
/// idempotency layer's own settings stay far below it (30 days at most).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::idempotency_key::IdempotencyKey;
/// use steadfast_http::idempotency::store::{
///     BeginOutcome, BeginRequest, Fingerprint, IdempotencyStore, MemoryStore, MAX_SPAN,
/// };
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// assert_eq!(MAX_SPAN, Duration::from_secs(100 * 365 * 86_400));
/// let store = MemoryStore::new();
/// let req = BeginRequest::new("t", IdempotencyKey::new("k")?, Fingerprint::from_bytes([0; 32]))
///     .lease(Duration::MAX)
///     .expiry(Duration::MAX);
/// assert!(matches!(store.begin(req).await?, BeginOutcome::Acquired(_)));
/// # Ok(()) }
/// ```
pub const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d`, at most [`MAX_SPAN`].
pub(crate) fn span(d: Duration) -> Duration {
    d.min(MAX_SPAN)
}

/// Milliseconds of a duration, at least 1, at most [`MAX_SPAN`]'s (for stores that count in
/// milliseconds).
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(span(d).as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

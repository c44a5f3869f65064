use std::sync::Arc;
use std::time::Duration;

use http::Method;
use steadfast_layers::telemetry::Telemetry;
use tower_layer::Layer;

use super::{Idempotency, PrincipalExtractor, SingleTenant, StoreResponses};
use crate::classify::WallClock;
use crate::codec::idempotency_key::{DEFAULT_MAX_LEN, MAX_LEN_LIMIT};
use crate::idempotency::store::IdempotencyStore;
use crate::idempotency::telemetry::{IdempotencyStats, Metrics};
use crate::ConfigError;

/// How long a completed key is kept by default: 24 hours, as Stripe does.
///
/// ```
/// use steadfast_http::idempotency::{IdempotencyLayer, DEFAULT_EXPIRY, store::MemoryStore};
/// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build()?;
/// assert_eq!(layer.expiry(), DEFAULT_EXPIRY);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// How long a holder's lease lasts by default before another request may take it over.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(steadfast_http::idempotency::DEFAULT_LEASE, Duration::from_secs(30));
/// ```
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The default limit on a keyed request's body (buffered to fingerprint it): 1 MiB.
///
/// ```
/// assert_eq!(steadfast_http::idempotency::DEFAULT_MAX_REQUEST_BODY, 1 << 20);
/// ```
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;
/// The default limit on a stored response body: 1 MiB. Larger responses are passed through
/// and not stored.
///
/// ```
/// assert_eq!(steadfast_http::idempotency::DEFAULT_MAX_RESPONSE_BODY, 1 << 20);
/// ```
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1 << 20;
/// How long the layer waits for the store by default.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(steadfast_http::idempotency::DEFAULT_STORE_TIMEOUT, Duration::from_secs(5));
/// ```
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_BODY: usize = 256 << 20;

/// Server-side idempotency keys, per the IETF draft: executes each keyed request once per
/// principal and key, and replays its stored response to every retry. See the
/// [module docs](crate::idempotency) for the full behaviour.
///
/// Built by [`IdempotencyLayer::builder`]; choosing a principal extractor
/// ([`principal`](IdempotencyLayerBuilder::principal) or
/// [`single_tenant`](IdempotencyLayerBuilder::single_tenant)) is required, so a multi-tenant
/// service cannot forget to scope its keys.
///
/// Every answer it makes itself is a response and its error type is the inner service's, so it
/// goes straight onto an axum `Router` with `.layer(..)`, no `HandleErrorLayer` (put a
/// [`DeadlineServerLayer`](crate::propagate::DeadlineServerLayer) after it, outermost).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::idempotency::{HeaderPrincipal, IdempotencyLayer, StoreResponses, store::MemoryStore};
///
/// let layer = IdempotencyLayer::builder(MemoryStore::new())
///     .principal(HeaderPrincipal::new(http::HeaderName::from_static("x-account-id")))
///     .expiry(Duration::from_secs(3600))
///     .lease(Duration::from_secs(10))
///     .store_responses(StoreResponses::All)
///     .build()?;
/// assert_eq!(layer.expiry(), Duration::from_secs(3600));
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct IdempotencyLayer<St, P> {
    pub(super) core: Arc<Core<St>>,
    pub(super) principal: Arc<P>,
}

impl<St, P> Clone for IdempotencyLayer<St, P> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            principal: Arc::clone(&self.principal),
        }
    }
}

/// What every clone of one layer, its services and their futures share.
#[derive(Debug)]
pub(crate) struct Core<St> {
    pub(crate) store: St,
    pub(crate) methods: Vec<Method>,
    pub(crate) key_required: bool,
    pub(crate) expiry: Duration,
    pub(crate) lease: Duration,
    pub(crate) max_key_len: usize,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) store_responses: StoreResponses,
    pub(crate) store_timeout: Duration,
    pub(crate) publish_expiry: bool,
    pub(crate) renew_leases: bool,
    pub(crate) wall_clock: WallClock,
    /// The `instance` field of the spans (absent when the layer is unnamed).
    pub(crate) instance: Option<Arc<str>>,
    pub(crate) metrics: Metrics,
}

/// The principal extractor of a builder on which none was chosen yet. It implements nothing:
/// call [`principal`](IdempotencyLayerBuilder::principal) or
/// [`single_tenant`](IdempotencyLayerBuilder::single_tenant) before `build`.
///
/// ```compile_fail
/// use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
/// // No principal chosen: `build` does not exist.
/// let layer = IdempotencyLayer::builder(MemoryStore::new()).build();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct NoPrincipal;

/// Builds an [`IdempotencyLayer`], validating its configuration.
///
/// ```
/// use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
/// let err = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().methods([]).build().unwrap_err();
/// assert_eq!(err.path(), "methods");
/// ```
#[derive(Debug)]
pub struct IdempotencyLayerBuilder<St, P = NoPrincipal> {
    store: St,
    principal: P,
    methods: Vec<Method>,
    key_required: bool,
    expiry: Duration,
    lease: Duration,
    max_key_len: usize,
    max_request_body: usize,
    max_response_body: usize,
    store_responses: StoreResponses,
    store_timeout: Duration,
    publish_expiry: bool,
    renew_leases: bool,
    wall_clock: WallClock,
    telemetry: Telemetry,
}

impl<St: IdempotencyStore> IdempotencyLayer<St, NoPrincipal> {
    /// A builder on `store` with the defaults: `POST` and `PATCH` require a key; 24 h expiry;
    /// 30 s lease, renewed while the handler runs; keys up to 255 characters; request and stored response bodies up to 1 MiB;
    /// `2xx` and `4xx` stored (see [`StoreResponses`]); 5 s store timeout; the expiry
    /// published in `Idempotency-Key-Expires`; default [`Telemetry`] (the global `steadfast` meter).
    ///
    /// ```
    /// use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder(store: St) -> IdempotencyLayerBuilder<St, NoPrincipal> {
        IdempotencyLayerBuilder {
            store,
            principal: NoPrincipal,
            methods: vec![Method::POST, Method::PATCH],
            key_required: true,
            expiry: DEFAULT_EXPIRY,
            lease: DEFAULT_LEASE,
            max_key_len: DEFAULT_MAX_LEN,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            store_responses: StoreResponses::default(),
            store_timeout: DEFAULT_STORE_TIMEOUT,
            publish_expiry: true,
            renew_leases: true,
            wall_clock: WallClock::system(),
            telemetry: Telemetry::default(),
        }
    }
}

impl<St, P> IdempotencyLayer<St, P> {
    /// Counts of this layer's decisions so far (shared by its clones and services).
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build()?;
    /// assert_eq!(layer.stats().replays, 0);
    /// assert_eq!(layer.store().len(), 0);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn stats(&self) -> IdempotencyStats {
        self.core.metrics.stats()
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.core.store
    }

    /// How long a completed key is kept.
    pub fn expiry(&self) -> Duration {
        self.core.expiry
    }

    /// How long a holder's lease lasts.
    pub fn lease(&self) -> Duration {
        self.core.lease
    }
}

impl<S, St, P> Layer<S> for IdempotencyLayer<St, P> {
    type Service = Idempotency<S, St, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            core: Arc::clone(&self.core),
            principal: Arc::clone(&self.principal),
        }
    }
}

impl<St, P> IdempotencyLayerBuilder<St, P> {
    /// Scopes keys by `principal` (tenant, account, subject): required unless
    /// [`single_tenant`](Self::single_tenant).
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let layer = IdempotencyLayer::builder(MemoryStore::new())
    ///     .principal(|p: &http::request::Parts| p.headers.get("x-tenant")?.to_str().ok().map(str::to_owned))
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn principal<P2: PrincipalExtractor>(
        self,
        principal: P2,
    ) -> IdempotencyLayerBuilder<St, P2> {
        IdempotencyLayerBuilder {
            store: self.store,
            principal,
            methods: self.methods,
            key_required: self.key_required,
            expiry: self.expiry,
            lease: self.lease,
            max_key_len: self.max_key_len,
            max_request_body: self.max_request_body,
            max_response_body: self.max_response_body,
            store_responses: self.store_responses,
            store_timeout: self.store_timeout,
            publish_expiry: self.publish_expiry,
            renew_leases: self.renew_leases,
            wall_clock: self.wall_clock,
            telemetry: self.telemetry,
        }
    }

    /// One scope for all requests ([`SingleTenant`]): only for single-tenant services.
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn single_tenant(self) -> IdempotencyLayerBuilder<St, SingleTenant> {
        self.principal(SingleTenant)
    }

    /// The methods the layer handles (default `POST`, `PATCH`); other requests pass through
    /// untouched, key or not.
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// use http::Method;
    /// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant()
    ///     .methods([Method::POST, Method::PUT, Method::DELETE]).build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Whether handled methods require a key (default `true`: `400` without one). When
    /// `false`, requests without a key pass through unprotected.
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().key_required(false).build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn key_required(mut self, required: bool) -> Self {
        self.key_required = required;
        self
    }

    /// How long a key is kept after its request completed (default 24 h, at most 30 days).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// assert!(IdempotencyLayer::builder(MemoryStore::new()).single_tenant().expiry(Duration::from_secs(31 * 86_400)).build().is_err());
    /// ```
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// How long a holder's lease lasts (default 30 s, at least 1 ms, at most the expiry). A
    /// holder that dies (crash, dropped request) blocks its key for at most this long. A live
    /// holder renews its lease every third of it while the handler runs (see
    /// [`renew_leases`](Self::renew_leases)); one that cannot (a frozen process, an unreachable
    /// store) may be taken over, and its result is then refused (fencing).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().lease(Duration::from_secs(5)).build()?;
    /// assert_eq!(l.lease(), Duration::from_secs(5));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The longest accepted key, in characters (default 255, at most 8192).
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// assert!(IdempotencyLayer::builder(MemoryStore::new()).single_tenant().max_key_len(0).build().is_err());
    /// ```
    pub fn max_key_len(mut self, chars: usize) -> Self {
        self.max_key_len = chars;
        self
    }

    /// The largest keyed request body, buffered to fingerprint it (default 1 MiB, at most
    /// 256 MiB); larger requests are answered `413`.
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().max_request_body(64 << 10).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }

    /// The largest response body stored (default 1 MiB, at most 256 MiB); a larger response is
    /// passed through as it streams, not stored, and its key released.
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().max_response_body(256 << 10).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// Which responses are stored (default [`StoreResponses::SuccessAndClientErrors`]).
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, StoreResponses, store::MemoryStore};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().store_responses(StoreResponses::All).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn store_responses(mut self, policy: StoreResponses) -> Self {
        self.store_responses = policy;
        self
    }

    /// How long to wait for each store operation (default 5 s, at most 60 s). A `begin` that
    /// times out is answered `503`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// assert!(IdempotencyLayer::builder(MemoryStore::new()).single_tenant().store_timeout(Duration::ZERO).build().is_err());
    /// ```
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Whether stored responses carry `Idempotency-Key-Expires` (default `true`): the
    /// HTTP-date after which the key may be forgotten, as the draft asks servers to publish.
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().publish_expiry(false).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn publish_expiry(mut self, yes: bool) -> Self {
        self.publish_expiry = yes;
        self
    }

    /// Whether a holder renews its lease while its handler runs and its response streams in
    /// (default `true`): every third of the lease, one store call. Without renewal a handler
    /// that runs longer than the lease is taken over by the next retry and both execute (the
    /// second result wins; the first is refused and traced).
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().renew_leases(false).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn renew_leases(mut self, yes: bool) -> Self {
        self.renew_leases = yes;
        self
    }

    /// Where `Idempotency-Key-Expires` reads wall-clock time (default the system clock).
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use steadfast_http::{classify::WallClock, idempotency::{IdempotencyLayer, store::MemoryStore}};
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant()
    ///     .wall_clock(WallClock::new(|| UNIX_EPOCH + Duration::from_secs(784_111_777)))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn wall_clock(mut self, clock: WallClock) -> Self {
        self.wall_clock = clock;
        self
    }

    /// Where and how to record telemetry (see [`Telemetry`]): the meter (the global provider's
    /// `steadfast` meter by default) and the instance name (the `steadfast.name` attribute of
    /// the metrics, the `instance` field of the spans).
    ///
    /// ```
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// use steadfast_layers::telemetry::Telemetry;
    /// let l = IdempotencyLayer::builder(MemoryStore::new()).single_tenant()
    ///     .telemetry(Telemetry::new().meter(opentelemetry::global::meter("orders")).name("orders"))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }
}

impl<St: IdempotencyStore, P: PrincipalExtractor> IdempotencyLayerBuilder<St, P> {
    /// Validates and builds the layer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
    /// let err = IdempotencyLayer::builder(MemoryStore::new()).single_tenant()
    ///     .expiry(Duration::from_secs(10)).lease(Duration::from_secs(60)).build().unwrap_err();
    /// assert_eq!(err.path(), "lease");
    /// ```
    pub fn build(self) -> Result<IdempotencyLayer<St, P>, ConfigError> {
        if self.methods.is_empty() {
            return Err(ConfigError::conflict(
                "methods",
                "at least one method must be handled",
            ));
        }
        if self.expiry < Duration::from_secs(1) || self.expiry > MAX_EXPIRY {
            return Err(ConfigError::out_of_range(
                "expiry",
                self.expiry,
                "[1 s, 30 days]",
            ));
        }
        if self.lease.is_zero() {
            return Err(ConfigError::zero("lease"));
        }
        if self.lease < Duration::from_millis(1) || self.lease > self.expiry {
            return Err(ConfigError::out_of_range(
                "lease",
                self.lease,
                "[1 ms, expiry]",
            ));
        }
        if self.max_key_len == 0 || self.max_key_len > MAX_LEN_LIMIT {
            return Err(ConfigError::out_of_range(
                "max_key_len",
                self.max_key_len,
                "[1, 8192]",
            ));
        }
        if self.max_request_body > MAX_BODY {
            return Err(ConfigError::out_of_range(
                "max_request_body",
                self.max_request_body,
                "[0, 256 MiB]",
            ));
        }
        if self.max_response_body > MAX_BODY {
            return Err(ConfigError::out_of_range(
                "max_response_body",
                self.max_response_body,
                "[0, 256 MiB]",
            ));
        }
        if self.store_timeout.is_zero() {
            return Err(ConfigError::zero("store_timeout"));
        }
        if self.store_timeout > Duration::from_secs(60) {
            return Err(ConfigError::out_of_range(
                "store_timeout",
                self.store_timeout,
                "(0, 60 s]",
            ));
        }
        let metrics = Metrics::new(
            &self.telemetry.resolve_meter(),
            self.telemetry.instance_name(),
            self.store.kind(),
        );
        Ok(IdempotencyLayer {
            core: Arc::new(Core {
                store: self.store,
                methods: self.methods,
                key_required: self.key_required,
                expiry: self.expiry,
                lease: self.lease,
                max_key_len: self.max_key_len,
                max_request_body: self.max_request_body,
                max_response_body: self.max_response_body,
                store_responses: self.store_responses,
                store_timeout: self.store_timeout,
                publish_expiry: self.publish_expiry,
                renew_leases: self.renew_leases,
                wall_clock: self.wall_clock,
                instance: self.telemetry.instance_name().map(Arc::from),
                metrics,
            }),
            principal: Arc::new(self.principal),
        })
    }
}

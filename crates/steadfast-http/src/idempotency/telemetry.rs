use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::KeyValue;
use steadfast_layers::telemetry::{ERROR_TYPE_KEY, NAME_KEY, REASON_KEY};

use super::store::StoreErrorKind;

/// The attribute key naming the store kind (`memory`, `redis`, `postgres`) on every metric.
pub(crate) const STORE_KEY: &str = "steadfast.idempotency.store";
/// The attribute key naming the store operation (`begin`, `complete`, `release`, `renew`).
const OPERATION_KEY: &str = "steadfast.idempotency.operation";

/// Counts of one server layer's decisions since it was built (shared by its clones), for
/// programs that want numbers without an OpenTelemetry pipeline (the lab, tests). The same
/// counts go to the `steadfast.idempotency.*` metrics.
///
/// ```
/// use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
/// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build()?;
/// let stats = layer.stats();
/// assert_eq!(stats.executions, 0);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyStats {
    /// Keyed requests that took the lease and reached the inner service.
    pub executions: u64,
    /// Requests answered with a stored response.
    pub replays: u64,
    /// Requests answered `409` (the key was in flight).
    pub conflicts: u64,
    /// Requests answered `422` (the key was used with another request).
    pub mismatches: u64,
    /// Leases taken over from a holder whose lease had expired.
    pub lease_takeovers: u64,
    /// Lease renewals by live holders.
    pub lease_renewals: u64,
    /// Completions, releases or renewals refused because the lease had been lost (fencing).
    pub leases_lost: u64,
    /// Requests answered `400`, `403` or `413` before reaching the store.
    pub rejections: u64,
    /// Store operations that failed (`begin` failures are answered `503`).
    pub store_errors: u64,
    /// Executed responses that were not stored (status policy, size, trailers, body error,
    /// inner service error).
    pub not_stored: u64,
}

#[derive(Debug, Default)]
struct Atomics {
    executions: AtomicU64,
    replays: AtomicU64,
    conflicts: AtomicU64,
    mismatches: AtomicU64,
    lease_takeovers: AtomicU64,
    lease_renewals: AtomicU64,
    leases_lost: AtomicU64,
    rejections: AtomicU64,
    store_errors: AtomicU64,
    not_stored: AtomicU64,
}

/// The server layer's instruments and attributes.
#[derive(Debug)]
pub(crate) struct Metrics {
    base: Vec<KeyValue>,
    requests: Counter<u64>,
    executions: Counter<u64>,
    replays: Counter<u64>,
    conflicts: Counter<u64>,
    mismatches: Counter<u64>,
    lease_takeovers: Counter<u64>,
    lease_renewals: Counter<u64>,
    leases_lost: Counter<u64>,
    rejections: Counter<u64>,
    store_errors: Counter<u64>,
    not_stored: Counter<u64>,
    counts: Atomics,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn new(meter: &Meter, name: Option<&str>, store: &'static str) -> Self {
        let mut base = Vec::with_capacity(2);
        if let Some(name) = name {
            base.push(KeyValue::new(NAME_KEY, name.to_owned()));
        }
        base.push(KeyValue::new(STORE_KEY, store));
        let c = |n: &'static str, d: &'static str| -> Counter<u64> {
            meter
                .u64_counter(n)
                .with_unit("{request}")
                .with_description(d)
                .build()
        };
        let metrics = Self {
            base,
            requests: c(
                "steadfast.idempotency.requests",
                "Requests the layer handled (methods it passes through are not counted)",
            ),
            executions: c(
                "steadfast.idempotency.executions",
                "Keyed requests executed (the lease was taken)",
            ),
            replays: c(
                "steadfast.idempotency.replays",
                "Requests answered with a stored response",
            ),
            conflicts: c(
                "steadfast.idempotency.conflicts",
                "Requests answered 409: the key was in flight",
            ),
            mismatches: c(
                "steadfast.idempotency.mismatches",
                "Requests answered 422: the key was reused with another request",
            ),
            lease_takeovers: c(
                "steadfast.idempotency.lease_takeovers",
                "Leases taken over after the holder's lease expired",
            ),
            lease_renewals: c(
                "steadfast.idempotency.lease_renewals",
                "Leases renewed by holders whose handler was still running",
            ),
            leases_lost: c(
                "steadfast.idempotency.leases_lost",
                "Writes refused because the writer's lease was taken over (fencing)",
            ),
            rejections: c(
                "steadfast.idempotency.rejections",
                "Requests rejected before the store (missing or invalid key, no principal, body)",
            ),
            store_errors: c(
                "steadfast.idempotency.store_errors",
                "Store operations that failed",
            ),
            not_stored: c(
                "steadfast.idempotency.not_stored",
                "Executed responses not stored; the key was released",
            ),
            counts: Atomics::default(),
        };
        metrics.start_at_zero();
        metrics
    }

    /// The counters an alert watches, at zero from the layer's start (for every store operation
    /// and error kind): a series that first appears at 1 hides its first event from
    /// `increase()` and `rate()`, since Prometheus has no earlier sample.
    fn start_at_zero(&self) {
        for c in [
            &self.requests,
            &self.executions,
            &self.replays,
            &self.conflicts,
            &self.mismatches,
            &self.lease_takeovers,
            &self.lease_renewals,
        ] {
            c.add(0, &self.base);
        }
        for op in ["begin", "complete", "release", "renew"] {
            if op != "begin" {
                self.with(OPERATION_KEY, op, |a| self.leases_lost.add(0, a));
            }
            for kind in [
                StoreErrorKind::Unavailable,
                StoreErrorKind::Timeout,
                StoreErrorKind::Capacity,
                StoreErrorKind::Corrupt,
                StoreErrorKind::Refused,
            ] {
                let mut attrs = self.base.clone();
                attrs.push(KeyValue::new(OPERATION_KEY, op));
                attrs.push(KeyValue::new(ERROR_TYPE_KEY, kind.label()));
                self.store_errors.add(0, &attrs);
            }
        }
    }

    fn with<R>(
        &self,
        key: &'static str,
        value: &'static str,
        f: impl FnOnce(&[KeyValue]) -> R,
    ) -> R {
        let mut attrs = self.base.clone();
        attrs.push(KeyValue::new(key, value));
        f(&attrs)
    }

    /// Every request the layer handles (not the ones it passes through), once.
    pub(crate) fn request(&self) {
        self.requests.add(1, &self.base);
    }

    pub(crate) fn execution(&self) {
        bump(&self.counts.executions);
        self.executions.add(1, &self.base);
    }

    pub(crate) fn replay(&self) {
        bump(&self.counts.replays);
        self.replays.add(1, &self.base);
    }

    pub(crate) fn conflict(&self) {
        bump(&self.counts.conflicts);
        self.conflicts.add(1, &self.base);
    }

    pub(crate) fn mismatch(&self) {
        bump(&self.counts.mismatches);
        self.mismatches.add(1, &self.base);
    }

    pub(crate) fn lease_takeover(&self) {
        bump(&self.counts.lease_takeovers);
        self.lease_takeovers.add(1, &self.base);
    }

    pub(crate) fn lease_renewal(&self) {
        bump(&self.counts.lease_renewals);
        self.lease_renewals.add(1, &self.base);
    }

    pub(crate) fn lease_lost(&self, op: &'static str) {
        bump(&self.counts.leases_lost);
        self.with(OPERATION_KEY, op, |a| self.leases_lost.add(1, a));
    }

    pub(crate) fn rejection(&self, reason: &'static str) {
        bump(&self.counts.rejections);
        self.with(REASON_KEY, reason, |a| self.rejections.add(1, a));
    }

    pub(crate) fn store_error(&self, op: &'static str, kind: &'static str) {
        bump(&self.counts.store_errors);
        let mut attrs = self.base.clone();
        attrs.push(KeyValue::new(OPERATION_KEY, op));
        attrs.push(KeyValue::new(ERROR_TYPE_KEY, kind));
        self.store_errors.add(1, &attrs);
    }

    pub(crate) fn not_stored(&self, reason: &'static str) {
        bump(&self.counts.not_stored);
        self.with(REASON_KEY, reason, |a| self.not_stored.add(1, a));
    }

    pub(crate) fn stats(&self) -> IdempotencyStats {
        let c = &self.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IdempotencyStats {
            executions: l(&c.executions),
            replays: l(&c.replays),
            conflicts: l(&c.conflicts),
            mismatches: l(&c.mismatches),
            lease_takeovers: l(&c.lease_takeovers),
            lease_renewals: l(&c.lease_renewals),
            leases_lost: l(&c.leases_lost),
            rejections: l(&c.rejections),
            store_errors: l(&c.store_errors),
            not_stored: l(&c.not_stored),
        }
    }
}

//! Per-key layers: which key a request falls under, and the bounded table of keys.
//!
//! The concurrency limit ([`limit`](crate::limit)), the rate limit ([`rate`](crate::rate)) and
//! the circuit breaker ([`breaker`](crate::breaker)) apply either one state to every request
//! ([`Global`], the default) or one state per key, the key being computed from each request by a
//! [`KeyExtractor`]: any closure `Fn(&Req) -> K` (a tenant, a user, a host, a route). Every layer
//! that keys is entered the same way, with two builder methods: `.key_by(extractor)` and
//! `.max_keys(n)` (default [`DEFAULT_MAX_KEYS`], at most [`MAX_KEYS`]). Every clone of a layer
//! shares one table of keys.
//!
//! Two methods rather than one `.per_key(max_keys, f)`: every setting of these builders is one
//! method with a default (as in tower's and tonic's builders, and as one field of a
//! configuration file), and `key_by` reads as Rust's `sort_by_key` / `max_by_key` do: a
//! function of each item names its key.
//!
//! # Eviction
//!
//! The table holds at most `max_keys` keys, under one rule for every layer: **a key is removed
//! only when its state is idle, and a new key that finds the table full of busy keys is
//! refused** with [`Overloaded`](crate::overload::Overloaded)
//! ([`OverloadReason::TooManyKeys`](crate::overload::OverloadReason)). Idle means dropping the
//! state loses no protection:
//!
//! | layer | a key is idle when |
//! |---|---|
//! | concurrency limit | no call holds or waits for one of its permits |
//! | rate limit | its bucket has refilled (a fresh bucket would allow the same) |
//! | circuit breaker | its breaker is closed and no call is in flight through it (its window of recent outcomes is forgotten) |
//!
//! When a new key finds the table full, every idle key is swept out at once. Sweeps are
//! amortised: at most one full scan per `max_keys / 8` admissions or refusals of new keys, so a
//! call with a known key never scans, and a new key costs O(1) amortised.
//!
//! **Memory.** A key costs its state plus its share of the table: about 35 bytes under a rate
//! limit (one 64-bit cell) and about 110 under a concurrency limit (its gate), counted at 1,000
//! keys with the table's slack. The table never tracks more than `max_keys` keys, so a keyed
//! layer holds at most about twice `max_keys` times that (a table that has churned through many
//! more keys than `max_keys` may double its capacity once, and never shrinks). The figures are in
//! `docs/memory.md`, asserted by the `memory` test in `benches/`.
//!
//! Keys are stored as 64-bit SipHash digests under a key drawn at random for each layer, so the
//! table holds no copy of your keys and the key type only needs `Hash`. Two distinct keys share a
//! limit only if their digests collide: with `n` keys, a probability of about `n² / 2⁶⁵`
//! (3 × 10⁻¹² for 10,000 keys), and not one a client can aim for.
//!
//! ```
//! use steadfast_layers::keyed::{Global, KeyExtractor};
//! // A closure extracts the key...
//! let by_tenant = |req: &(u32, &str)| req.0;
//! assert_eq!(by_tenant.key(&(7, "GET /")), 7);
//! // ...and `Global` puts every request under one limit.
//! assert_eq!(KeyExtractor::<(u32, &str)>::key(&Global, &(7, "GET /")), ());
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{PoisonError, RwLock};

/// Computes the key a request falls under (its limit, its rate bucket, its breaker).
///
/// Implemented by [`Global`] (one state for all requests) and by every closure
/// `Fn(&Req) -> K` where `K: Hash`. The circuit breaker also needs `K: Debug`: a key's `Debug`
/// form names its breaker in traces and transitions.
///
/// ```
/// use steadfast_layers::keyed::KeyExtractor;
/// struct ByPath;
/// impl KeyExtractor<http::Request<()>> for ByPath {
///     type Key = String;
///     fn key(&self, req: &http::Request<()>) -> String { req.uri().path().to_owned() }
/// }
/// let req = http::Request::get("/users/7").body(()).unwrap();
/// assert_eq!(ByPath.key(&req), "/users/7");
/// ```
pub trait KeyExtractor<Req> {
    /// The key type.
    type Key: Hash;

    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;
}

/// One state shared by every request (no key): the default of every layer that can key.
///
/// ```
/// use steadfast_layers::keyed::{Global, KeyExtractor};
/// assert_eq!(KeyExtractor::<u32>::key(&Global, &5), ());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl<Req> KeyExtractor<Req> for Global {
    type Key = ();

    #[inline]
    fn key(&self, _req: &Req) {}
}

impl<F, Req, K> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> K,
    K: Hash,
{
    type Key = K;

    #[inline]
    fn key(&self, req: &Req) -> K {
        self(req)
    }
}

/// The default bound on the number of keys a keyed layer tracks.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// The largest accepted `max_keys`.
pub const MAX_KEYS: usize = 10_000_000;

/// Checks a layer's `max_keys`: in `[1, MAX_KEYS]`.
pub(crate) fn validate_max_keys(max_keys: usize) -> Result<(), crate::ConfigError> {
    if max_keys == 0 {
        return Err(crate::ConfigError::zero("max_keys"));
    }
    if max_keys > MAX_KEYS {
        return Err(crate::ConfigError::out_of_range(
            "max_keys",
            max_keys,
            "[1, 10000000]",
        ));
    }
    Ok(())
}

/// A bounded map of per-key state, keyed by digest, shared by every clone of a keyed layer.
///
/// Lookups of known keys take a shared read lock (one atomic operation when uncontended); only a
/// new key takes the write lock.
#[derive(Debug)]
pub(crate) struct KeyMap<V> {
    inner: RwLock<Inner<V>>,
    hasher: RandomState,
    max: usize,
}

#[derive(Debug)]
struct Inner<V> {
    map: HashMap<u64, V, BuildHasherDefault<Digest>>,
    /// Insertions and refusals since the last sweep: a sweep is allowed once this reaches
    /// `max / 8`, so that scans cost O(1) amortised per admission.
    ops_since_sweep: usize,
}

impl<V> KeyMap<V> {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            inner: RwLock::new(Inner {
                map: HashMap::default(),
                ops_since_sweep: sweep_every(max),
            }),
            hasher: RandomState::new(),
            max,
        }
    }

    /// The digest under which `key` is stored.
    #[inline]
    pub(crate) fn digest<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Runs `f` on the state of `key`, creating it with `make` if needed. When the table is full,
    /// entries for which `idle` holds may be removed first; `None` means the table is full of
    /// busy keys and `key` was not admitted.
    pub(crate) fn with<R>(
        &self,
        key: u64,
        f: impl Fn(&V) -> R,
        make: impl FnOnce() -> V,
        idle: impl FnMut(&V) -> bool,
    ) -> Option<R> {
        {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = inner.map.get(&key) {
                return Some(f(v));
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = inner.map.get(&key) {
            return Some(f(v));
        }
        if inner.map.len() >= self.max {
            if inner.ops_since_sweep >= sweep_every(self.max) {
                let mut idle = idle;
                inner.map.retain(|_, v| !idle(v));
                inner.ops_since_sweep = 0;
            }
            if inner.map.len() >= self.max {
                inner.ops_since_sweep = inner.ops_since_sweep.saturating_add(1);
                return None;
            }
        }
        inner.ops_since_sweep = inner.ops_since_sweep.saturating_add(1);
        let v = inner.map.entry(key).or_insert_with(make);
        Some(f(v))
    }

    /// Runs `f` on the state of `key` if the table holds it (read lock only).
    pub(crate) fn get<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.map.get(&key).map(f)
    }

    /// The number of keys tracked.
    pub(crate) fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Folds over every entry (for gauges; takes the read lock).
    pub(crate) fn fold<A>(&self, init: A, f: impl FnMut(A, &V) -> A) -> A {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.map.values().fold(init, f)
    }
}

fn sweep_every(max: usize) -> usize {
    (max / 8).max(1)
}

/// A pass-through hasher for digests that are already SipHash outputs.
#[derive(Default)]
pub(crate) struct Digest(u64);

impl Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_sweeps_idle_entries() {
        let map: KeyMap<u32> = KeyMap::new(2);
        let [a, b, c] = ["a", "b", "c"].map(|k| map.digest(k));
        assert_ne!(a, b);
        assert_eq!(a, map.digest("a"));
        assert_eq!(map.with(a, |v| *v, || 10, |_| false), Some(10));
        assert_eq!(map.with(b, |v| *v, || 20, |_| false), Some(20));
        // Full of busy keys: refused.
        assert_eq!(map.with(c, |v| *v, || 30, |_| false), None);
        assert_eq!(map.len(), 2);
        // Known keys still work.
        assert_eq!(map.with(a, |v| *v, || 0, |_| false), Some(10));
        // Key b idle: swept, c admitted.
        assert_eq!(map.with(c, |v| *v, || 30, |v| *v == 20), Some(30));
        assert_eq!(map.len(), 2);
        assert_eq!(map.fold(0, |a, v| a + v), 40);
    }

    #[test]
    fn sweeps_are_amortised() {
        let map: KeyMap<u32> = KeyMap::new(16);
        for k in 0..16 {
            map.with(map.digest(&k), |_| (), || k, |_| false);
        }
        let mut scans = 0;
        for k in 16..1016 {
            let r = map.with(
                map.digest(&k),
                |_| (),
                || k,
                |_| {
                    scans += 1;
                    false
                },
            );
            assert!(r.is_none());
        }
        // 1000 refusals, a 16-entry scan at most every 2 refusals.
        assert!(scans <= 16 * 500 + 16, "{scans}");
    }
}

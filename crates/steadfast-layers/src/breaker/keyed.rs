//! The breakers of one layer: a single one, or one per key in a bounded map.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::core::{Common, Core};
use super::BreakerState;

/// Picks the key whose breaker guards a request (see
/// [`CircuitBreakerLayerBuilder::per_key`](super::CircuitBreakerLayerBuilder::per_key)).
///
/// Implemented for closures `Fn(&Req) -> K`, and by [`NoKey`] (one breaker for every request).
///
/// ```
/// use steadfast_layers::breaker::KeyExtractor;
/// let by_host = |req: &(String, u32)| req.0.clone();
/// assert_eq!(by_host.key(&("db-1".to_string(), 7)), "db-1");
/// ```
pub trait KeyExtractor<Req, K> {
    /// The key of `req`.
    fn key(&self, req: &Req) -> K;
}

impl<F, Req, K> KeyExtractor<Req, K> for F
where
    F: Fn(&Req) -> K,
{
    fn key(&self, req: &Req) -> K {
        self(req)
    }
}

/// The key extractor of a layer with a single breaker: every request maps to `()`.
///
/// ```
/// use steadfast_layers::breaker::{KeyExtractor, NoKey};
/// let () = KeyExtractor::<&str, ()>::key(&NoKey, &"anything");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKey;

impl<Req> KeyExtractor<Req, ()> for NoKey {
    fn key(&self, _req: &Req) {}
}

pub(super) enum Breakers<K> {
    Single(Arc<Core>),
    Keyed(KeyMap<K>),
}

/// Per-key breakers, at most `max_keys` of them. When a new key arrives at capacity, one breaker
/// is evicted: the least recently used closed one, or the least recently used of all when none is
/// closed. Lookups take the map's read lock; only a new key takes the write lock.
pub(super) struct KeyMap<K> {
    map: RwLock<HashMap<K, Arc<Core>>>,
    max_keys: usize,
    tick: AtomicU64,
}

/// One layer's breakers and what they share.
pub(super) struct Registry<K> {
    pub(super) common: Arc<Common>,
    pub(super) breakers: Breakers<K>,
}

impl<K> fmt::Debug for Registry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("common", &self.common)
            .field("keyed", &matches!(self.breakers, Breakers::Keyed(_)))
            .finish_non_exhaustive()
    }
}

impl<K> Registry<K> {
    pub(super) fn single(common: Arc<Common>) -> Self {
        let core = Arc::new(Core::new(Arc::clone(&common), None));
        Registry {
            common,
            breakers: Breakers::Single(core),
        }
    }

    pub(super) fn keyed(common: Arc<Common>, max_keys: usize) -> Self {
        Registry {
            common,
            breakers: Breakers::Keyed(KeyMap {
                map: RwLock::new(HashMap::new()),
                max_keys,
                tick: AtomicU64::new(0),
            }),
        }
    }

    /// Runs `f` on every breaker.
    pub(super) fn for_each(&self, mut f: impl FnMut(&Core)) {
        match &self.breakers {
            Breakers::Single(core) => f(core),
            Breakers::Keyed(m) => {
                let map = m.map.read().unwrap_or_else(PoisonError::into_inner);
                for core in map.values() {
                    f(core);
                }
            }
        }
    }

    /// How many breakers are in each own state: closed, open, half-open.
    pub(super) fn census(&self) -> [u64; 3] {
        let mut n = [0; 3];
        self.for_each(|c| match c.state() {
            BreakerState::Open => n[1] += 1,
            BreakerState::HalfOpen => n[2] += 1,
            _ => n[0] += 1,
        });
        n
    }

    /// The number of breakers.
    pub(super) fn len(&self) -> usize {
        match &self.breakers {
            Breakers::Single(_) => 1,
            Breakers::Keyed(m) => m.map.read().unwrap_or_else(PoisonError::into_inner).len(),
        }
    }
}

impl<K: Hash + Eq> Registry<K> {
    /// The breaker of `key`, if there is one (the single breaker whatever the key).
    pub(super) fn get(&self, key: &K) -> Option<Arc<Core>> {
        match &self.breakers {
            Breakers::Single(core) => Some(Arc::clone(core)),
            Breakers::Keyed(m) => m
                .map
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
                .cloned(),
        }
    }
}

impl<K: Hash + Eq + fmt::Debug> KeyMap<K> {
    /// The breaker of `key`, created (and another evicted, at capacity) if needed.
    pub(super) fn get_or_insert(&self, key: K, common: &Arc<Common>) -> Arc<Core> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(core) = map.get(&key) {
                core.last_used.store(tick, Ordering::Relaxed);
                return Arc::clone(core);
            }
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(core) = map.get(&key) {
            core.last_used.store(tick, Ordering::Relaxed);
            return Arc::clone(core);
        }
        if map.len() >= self.max_keys {
            let victim = map
                .iter()
                .min_by_key(|(_, c)| {
                    (
                        c.state() != BreakerState::Closed,
                        c.last_used.load(Ordering::Relaxed),
                    )
                })
                .map(|(k, c)| (k as *const K, c.key.clone()));
            if let Some((victim, label)) = victim {
                // Find the key again by pointer to remove it without requiring `K: Clone`.
                map.retain(|k, _| !std::ptr::eq(k, victim));
                tracing::debug!(
                    target: "steadfast::breaker",
                    instance = common.telemetry.span_name(),
                    key = label.as_deref().unwrap_or(""),
                    max_keys = self.max_keys,
                    "circuit breaker evicted"
                );
            }
        }
        let label: Arc<str> = Arc::from(format!("{key:?}"));
        let core = Arc::new(Core::new(Arc::clone(common), Some(label)));
        core.last_used.store(tick, Ordering::Relaxed);
        map.insert(key, Arc::clone(&core));
        core
    }
}

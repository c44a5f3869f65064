//! The breakers of one layer: a single one, or one per key in the crate's key table
//! ([`keyed`](crate::keyed)).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::core::{Common, Core};
use super::BreakerState;
use crate::keyed::KeyMap;

pub(super) enum Breakers {
    Single(Arc<Core>),
    /// Per-key breakers, in the shared key table: a breaker is idle (may be swept out when the
    /// table is full) when it is closed and no call holds it.
    Keyed(KeyMap<Arc<Core>>),
}

/// One layer's breakers and what they share.
pub(super) struct Registry {
    pub(super) common: Arc<Common>,
    pub(super) breakers: Breakers,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("common", &self.common)
            .field("keyed", &matches!(self.breakers, Breakers::Keyed(_)))
            .finish_non_exhaustive()
    }
}

impl Registry {
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
            breakers: Breakers::Keyed(KeyMap::new(max_keys)),
        }
    }

    /// Runs `f` on every breaker.
    pub(super) fn for_each(&self, mut f: impl FnMut(&Core)) {
        match &self.breakers {
            Breakers::Single(core) => f(core),
            Breakers::Keyed(m) => m.fold((), |(), core| f(core)),
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
            Breakers::Keyed(m) => m.len(),
        }
    }

    /// The breaker of `key`, if there is one (the single breaker whatever the key).
    pub(super) fn get<Q: Hash + ?Sized>(&self, key: &Q) -> Option<Arc<Core>> {
        match &self.breakers {
            Breakers::Single(core) => Some(Arc::clone(core)),
            Breakers::Keyed(m) => m.get(m.digest(key), Arc::clone),
        }
    }
}

/// The breaker of `key` in `map`, created if needed; `None` when the table is full of busy
/// breakers (open, half-open, or with calls in flight) and `key` is new.
pub(super) fn get_or_insert<K: Hash + fmt::Debug>(
    map: &KeyMap<Arc<Core>>,
    key: &K,
    common: &Arc<Common>,
) -> Option<Arc<Core>> {
    map.with(
        map.digest(key),
        Arc::clone,
        || {
            let label: Arc<str> = Arc::from(format!("{key:?}"));
            Arc::new(Core::new(Arc::clone(common), Some(label)))
        },
        // Closed, and only the table holds it: no call in flight, nothing but a window of
        // recent outcomes is forgotten.
        |core| Arc::strong_count(core) == 1 && core.state() == BreakerState::Closed,
    )
}

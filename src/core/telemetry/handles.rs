//! Metric handles remembered by label set.
//!
//! The `metrics` macros build a key on every call (one allocation per label
//! value) and look it up in the recorder's registry; a request path that
//! records the same few label sets thousands of times a second paid for that
//! on every request (a few percent of the gateway's CPU). A `HandleCache`
//! looks each label set up once and hands out the registered handles after.
//! It is a value owned by whoever records (a listener, a gateway state), not
//! a global, and it stops growing at `MAX_ENTRIES` (label sets past that are
//! still recorded, just looked up each time).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

/// Label sets remembered per cache; a bound against unbounded label values.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub struct HandleCache<K, V> {
    map: RwLock<HashMap<K, V, foldhash::fast::RandomState>>,
}

impl<K, V> Default for HandleCache<K, V> {
    fn default() -> Self {
        HandleCache { map: RwLock::new(HashMap::default()) }
    }
}

impl<K: Hash + Eq, V: Clone> HandleCache<K, V> {
    /// The handles for `key`, registering them with `register` the first time.
    pub fn get(&self, key: K, register: impl FnOnce(&K) -> V) -> V {
        if let Some(v) = self.map.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return v.clone();
        }
        let v = register(&key);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() < MAX_ENTRIES {
            map.insert(key, v.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_per_label_set_and_stops_growing_at_the_bound() {
        let cache = HandleCache::<u32, u32>::default();
        let mut registered = 0;
        for _ in 0..3 {
            cache.get(7, |k| {
                registered += 1;
                *k * 2
            });
        }
        assert_eq!(registered, 1);
        assert_eq!(cache.get(7, |_| unreachable!()), 14);
        for k in 0..(MAX_ENTRIES as u32 + 10) {
            cache.get(k + 100, |k| *k);
        }
        assert_eq!(cache.map.read().unwrap().len(), MAX_ENTRIES);
        // Past the bound, values are still right, just not remembered.
        assert_eq!(cache.get(1_000_000, |k| *k + 1), 1_000_001);
    }
}

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
//!
//! A label set is looked up in its borrowed form (`Lookup`): a request whose
//! labels were seen before allocates nothing to find its handles. Each
//! thread keeps its own table (the registry hands every thread the same
//! metric), so a lookup takes no lock and touches no cache line another
//! core writes: with a shared table, the lock's and the handles' reference
//! counts moved between the runtime's workers on every request.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use thread_local::ThreadLocal;

/// Label sets remembered per cache and thread; a bound against unbounded
/// label values.
const MAX_ENTRIES: usize = 4096;

pub struct HandleCache<K: Send, V: Send> {
    per_thread: ThreadLocal<RefCell<HashTable<(K, V)>>>,
    hasher: foldhash::fast::RandomState,
}

impl<K: Send, V: Send> Default for HandleCache<K, V> {
    fn default() -> Self {
        HandleCache { per_thread: ThreadLocal::new(), hasher: Default::default() }
    }
}

impl<K: Send, V: Send> std::fmt::Debug for HandleCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleCache").finish_non_exhaustive()
    }
}

/// A label set as a request has it, standing for the owned key `K` it is
/// remembered under. It must hash as `K` does (`&str` hashes as `String`,
/// a tuple as its fields in order).
pub trait Lookup<K>: Hash {
    fn is(&self, key: &K) -> bool;
    fn to_key(&self) -> K;
}

impl<K: Hash + Eq + Clone> Lookup<K> for K {
    fn is(&self, key: &K) -> bool {
        self == key
    }

    fn to_key(&self) -> K {
        self.clone()
    }
}

impl<K: Hash + Send, V: Send> HandleCache<K, V> {
    /// Calls `record` with the handles for `key`, registering them with
    /// `register` the first time this thread sees it.
    pub fn with<Q: Lookup<K> + ?Sized, R>(
        &self,
        key: &Q,
        register: impl FnOnce(&K) -> V,
        record: impl FnOnce(&V) -> R,
    ) -> R {
        let hash = self.hasher.hash_one(key);
        let mut table = self.per_thread.get_or_default().borrow_mut();
        if let Some((_, v)) = table.find(hash, |(k, _)| key.is(k)) {
            return record(v);
        }
        let owned = key.to_key();
        let v = register(&owned);
        let out = record(&v);
        if table.len() < MAX_ENTRIES {
            table.insert_unique(hash, (owned, v), |(k, _)| self.hasher.hash_one(k));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<K: Hash + Send, Q: Lookup<K>>(
        cache: &HandleCache<K, u32>,
        key: &Q,
        register: impl FnOnce(&K) -> u32,
    ) -> u32 {
        cache.with(key, register, |v| *v)
    }

    fn remembered<K: Send, V: Send>(cache: &HandleCache<K, V>) -> usize {
        cache.per_thread.get().map_or(0, |t| t.borrow().len())
    }

    #[test]
    fn registers_once_per_label_set_and_thread_and_stops_growing_at_the_bound() {
        let cache = HandleCache::<u32, u32>::default();
        let mut registered = 0;
        for _ in 0..3 {
            get(&cache, &7, |k| {
                registered += 1;
                *k * 2
            });
        }
        assert_eq!(registered, 1);
        assert_eq!(get(&cache, &7, |_| unreachable!()), 14);
        // Another thread registers for itself, and finds its own after.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(get(&cache, &7, |k| *k * 3), 21);
                assert_eq!(get(&cache, &7, |_| unreachable!()), 21);
            });
        });
        assert_eq!(get(&cache, &7, |_| unreachable!()), 14);
        for k in 0..(MAX_ENTRIES as u32 + 10) {
            get(&cache, &(k + 100), |k| *k);
        }
        assert_eq!(remembered(&cache), MAX_ENTRIES);
        // Past the bound, values are still right, just not remembered.
        assert_eq!(get(&cache, &1_000_000, |k| *k + 1), 1_000_001);
    }

    impl Lookup<(String, u16)> for (&str, u16) {
        fn is(&self, key: &(String, u16)) -> bool {
            self.0 == key.0 && self.1 == key.1
        }

        fn to_key(&self) -> (String, u16) {
            (self.0.to_owned(), self.1)
        }
    }

    #[test]
    fn a_borrowed_label_set_finds_what_its_owned_form_registered() {
        let cache = HandleCache::<(String, u16), u32>::default();
        assert_eq!(get(&cache, &("GET", 200), |_| 1), 1);
        assert_eq!(get(&cache, &("GET".to_owned(), 200), |_| unreachable!()), 1);
        assert_eq!(get(&cache, &("GET", 200), |_| unreachable!()), 1);
        assert_eq!(get(&cache, &("GET", 404), |_| 2), 2);
        assert_eq!(get(&cache, &("PUT", 200), |(m, s)| m.len() as u32 + u32::from(*s)), 203);
        assert_eq!(remembered(&cache), 3);
    }
}

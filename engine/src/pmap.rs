//! The shard's persistent maps: hash maps whose clone is O(1) (hash array mapped tries, `imbl`),
//! with values behind `Arc`, so that a snapshot takes an immutable view of the whole state in
//! microseconds and another thread encodes it while the shard goes on (issue 18).
//!
//! Writing after a view was taken copies only what it touches: the trie nodes on the path to
//! the entry (shared pointers, not values) and the one value (`Arc::make_mut`).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use imbl::shared_ptr::DefaultSharedPtr;
use imbl::GenericHashMap;

/// A persistent map from `K` to `V` with the hasher `S`.
pub struct PMap<K, V, S> {
    inner: GenericHashMap<K, Arc<V>, S, DefaultSharedPtr>,
}

impl<K, V, S: Default> Default for PMap<K, V, S> {
    fn default() -> Self {
        PMap {
            inner: GenericHashMap::default(),
        }
    }
}

/// O(1): the trie is shared until either side writes.
impl<K: Clone, V, S: Clone> Clone for PMap<K, V, S> {
    fn clone(&self) -> Self {
        PMap {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for PMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V, S> PMap<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher + Clone,
{
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.inner.get(key).map(|value| &**value)
    }

    /// The value to change; a value a view still shares is copied first.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.inner.get_mut(key).map(Arc::make_mut)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.inner.contains_key(key)
    }

    /// Inserts `value` (a `V`, a `Box<V>` or an `Arc<V>`); the value it replaces.
    pub fn insert(&mut self, key: K, value: impl Into<Arc<V>>) -> Option<Arc<V>> {
        self.inner.insert(key, value.into())
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<Arc<V>>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.inner.remove(key)
    }

    /// The value of `key`, inserted as `V::default()` when missing, to change.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        Arc::make_mut(self.inner.entry(key).or_default())
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.inner.retain(|key, value| keep(key, value));
    }
}

impl<K, V, S> PMap<K, V, S> {
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.inner.iter().map(|(key, value)| (key, &**value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.inner.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.inner.values().map(|value| &**value)
    }
}

/// `map[&key]`: the value, panicking when it is missing (as `HashMap`'s index does).
impl<K, V, S, Q> std::ops::Index<&Q> for PMap<K, V, S>
where
    K: Hash + Eq + Clone + Borrow<Q>,
    Q: Hash + Eq + ?Sized,
    V: Clone,
    S: BuildHasher + Clone,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for this key")
    }
}

impl<'a, K, V, S> IntoIterator for &'a PMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Map = PMap<u64, String, std::collections::hash_map::RandomState>;

    #[test]
    fn a_view_keeps_its_values_while_the_map_changes() {
        let mut map = Map::default();
        for i in 0..10_000u64 {
            map.insert(i, i.to_string());
        }
        let view = map.clone();
        *map.get_mut(&7).unwrap() = "seven".into();
        map.remove(&8);
        map.insert(10_000, "new".to_string());
        map.retain(|key, _| *key != 9);
        *map.get_or_default(20_000) += "x";
        assert_eq!(view.len(), 10_000);
        assert_eq!(view.get(&7).map(String::as_str), Some("7"));
        assert_eq!(view.get(&8).map(String::as_str), Some("8"));
        assert_eq!(view.get(&9).map(String::as_str), Some("9"));
        assert!(!view.contains_key(&10_000));
        assert_eq!(map.get(&7).map(String::as_str), Some("seven"));
        assert!(!map.contains_key(&8) && !map.contains_key(&9));
        assert_eq!(map.get(&20_000).map(String::as_str), Some("x"));
        assert_eq!(map.len(), 10_000);
    }
}

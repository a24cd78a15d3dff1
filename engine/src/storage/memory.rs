//! An in-memory [`Storage`] for fast domain tests. It claims no durability.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Family, KeyValue, Storage, StorageError, Write};

type Entries = BTreeMap<(Family, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStorage {
    families: Mutex<Entries>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn write(&self, writes: Vec<Write>, _sync: bool) -> Result<(), StorageError> {
        let mut map = self.families.lock().expect("memory storage poisoned");
        for write in writes {
            match write {
                Write::Put { family, key, value } => {
                    map.insert((family, key), value);
                }
                Write::DeleteRange { family, from, to } => {
                    let doomed: Vec<_> = map
                        .range((family, from)..(family, to))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in doomed {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let map = self.families.lock().expect("memory storage poisoned");
        Ok(map.get(&(family, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let map = self.families.lock().expect("memory storage poisoned");
        for ((_, key), value) in map.range((family, from.to_vec())..(family, to.to_vec())) {
            if !visit(key, value) {
                break;
            }
        }
        Ok(())
    }

    fn last_in(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        let map = self.families.lock().expect("memory storage poisoned");
        Ok(map
            .range((family, from.to_vec())..(family, to.to_vec()))
            .next_back()
            .map(|((_, k), v)| (k.clone(), v.clone())))
    }
}

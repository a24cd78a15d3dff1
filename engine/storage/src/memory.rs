//! An in-memory [`Storage`] for fast domain tests and the simulator. It claims no durability,
//! but can model it: [`MemoryStorage::tracking_power_loss`] keeps, beside what reads see, the
//! image a machine crash would leave (synced writes only), and [`MemoryStorage::power_loss`]
//! turns back to it, as a crash does to unsynced RocksDB writes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Family, KeyValue, Storage, StorageError, Write};

type Entries = BTreeMap<(Family, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStorage {
    families: Mutex<Entries>,
    /// With power loss modelled: the synced image, and the writes since the last sync.
    durable: Mutex<Option<(Entries, Vec<Write>)>>,
}

fn apply(map: &mut Entries, write: Write) {
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

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that models power loss: unsynced writes are lost by
    /// [`MemoryStorage::power_loss`].
    pub fn tracking_power_loss() -> Self {
        let storage = Self::default();
        *storage.durable.lock().expect("memory storage poisoned") =
            Some((Entries::new(), Vec::new()));
        storage
    }

    /// A machine crash: every write since the last sync (or synced write) is gone. Answers how
    /// many writes were lost. A no-op unless the store tracks power loss.
    pub fn power_loss(&self) -> usize {
        let mut durable = self.durable.lock().expect("memory storage poisoned");
        let Some((image, pending)) = durable.as_mut() else {
            return 0;
        };
        let lost = pending.len();
        pending.clear();
        *self.families.lock().expect("memory storage poisoned") = image.clone();
        lost
    }

    fn made_durable(&self, writes: Option<&[Write]>) {
        let mut durable = self.durable.lock().expect("memory storage poisoned");
        if let Some((image, pending)) = durable.as_mut() {
            for write in pending.drain(..) {
                apply(image, write);
            }
            for write in writes.unwrap_or_default() {
                apply(image, write.clone());
            }
        }
    }
}

impl Storage for MemoryStorage {
    fn write(&self, writes: Vec<Write>, sync: bool) -> Result<(), StorageError> {
        {
            let mut durable = self.durable.lock().expect("memory storage poisoned");
            if let Some((_, pending)) = durable.as_mut() {
                if !sync {
                    pending.extend(writes.iter().cloned());
                }
            }
        }
        if sync {
            self.made_durable(Some(&writes));
        }
        let mut map = self.families.lock().expect("memory storage poisoned");
        for write in writes {
            apply(&mut map, write);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.made_durable(None);
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

    fn scan_rev(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let map = self.families.lock().expect("memory storage poisoned");
        for ((_, key), value) in map
            .range((family, from.to_vec())..(family, to.to_vec()))
            .rev()
        {
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

//! A store that fails writes on purpose, around any other store: the fault injection of the
//! engine's fault tests (a write error, a run of them, a disk that stays full for a while).
//! Reads always go to the inner store; a failed write changes nothing in it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Family, KeyValue, Storage, StorageError, StorageHealth, Write};

/// Wraps a store; [`FaultyStorage::fail_next`] and [`FaultyStorage::set_full`] decide which
/// writes fail.
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    /// Writes still to fail (one-off errors).
    fail_next: AtomicU64,
    /// Every write fails with "No space left on device" while set.
    full: AtomicBool,
    /// Every write first waits this long (a slow disk), then succeeds or fails.
    delay_ms: AtomicU64,
    /// Writes that failed.
    pub failed: AtomicU64,
    /// Writes that succeeded.
    pub written: AtomicU64,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> FaultyStorage {
        FaultyStorage {
            inner,
            fail_next: AtomicU64::new(0),
            full: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// The next `count` writes fail with an I/O error.
    pub fn fail_next(&self, count: u64) {
        self.fail_next.store(count, Ordering::SeqCst);
    }

    /// While `full`, every write fails as on a full disk.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Every write waits `ms` milliseconds first (0: none).
    pub fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    fn refuse(&self) -> Option<StorageError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        if self.full.load(Ordering::SeqCst) {
            return Some(StorageError::Io(
                "IO error: No space left on device (injected)".into(),
            ));
        }
        let taken = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        taken
            .is_ok()
            .then(|| StorageError::Io("IO error: injected write failure".into()))
    }
}

impl Storage for FaultyStorage {
    fn write(&self, writes: Vec<Write>, sync: bool) -> Result<(), StorageError> {
        if let Some(error) = self.refuse() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(error);
        }
        self.inner.write(writes, sync)?;
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        if let Some(error) = self.refuse() {
            return Err(error);
        }
        self.inner.sync()
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(family, key)
    }

    fn scan(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        self.inner.scan(family, from, to, visit)
    }

    fn health(&self) -> Result<Option<StorageHealth>, StorageError> {
        self.inner.health()
    }

    fn flush_memtables(&self) -> Result<(), StorageError> {
        self.inner.flush_memtables()
    }

    fn scan_rev(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        self.inner.scan_rev(family, from, to, visit)
    }

    fn last_in(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        self.inner.last_in(family, from, to)
    }
}

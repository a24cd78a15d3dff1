//! The storage boundary: what orderd needs from a key-value store, and its implementations.
//!
//! The engine and the gateway talk only to [`Storage`]; [`rocks::RocksStorage`] is the real,
//! durable one, [`memory::MemoryStorage`] serves fast domain tests and the simulator, and
//! [`faulty::FaultyStorage`] fails writes on purpose around either. Nothing outside this crate
//! names RocksDB. Keys are encoded here too: [`shard_key`] for shard-scoped records, and
//! [`prefix_end`] / [`Storage::scan_prefix`] for every family's prefixed records.

pub mod faulty;
pub mod memory;
pub mod rocks;

/// Column families (in RocksDB terms) the engine writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Event batches keyed `(shard, first_seq)`.
    Log,
    /// Shard snapshots keyed `(shard, last_seq)`.
    Snap,
    /// Engine-wide facts (shard count, ...), wrapped data keys, later changes and incidents.
    Control,
    /// The gateway's hash-chained audit trail, keyed by sequence number (u64 big-endian).
    Audit,
    /// Orders that ended long ago, out of shard memory, with their indexes (`orderd_engine::cold`).
    Cold,
    /// Idempotency keys past their in-memory window, until their retention ends
    /// (`orderd_engine::idem_tier`).
    Idem,
    /// Public events (`order.confirmed`, …) keyed by their global cursor (u64 big-endian),
    /// written by the log writer with the batches that raised them (`orderd_engine::events`).
    Events,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Log,
        Family::Snap,
        Family::Control,
        Family::Audit,
        Family::Cold,
        Family::Idem,
        Family::Events,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Log => "log",
            Family::Snap => "snap",
            Family::Control => "control",
            Family::Audit => "audit",
            Family::Cold => "cold",
            Family::Idem => "idem",
            Family::Events => "events",
        }
    }
}

/// One write of a group commit.
#[derive(Clone, Debug)]
pub enum Write {
    Put {
        family: Family,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Deletes keys in `[from, to)`.
    DeleteRange {
        family: Family,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Key of a shard-scoped record: shard (2 bytes) then sequence (8 bytes), big-endian so that
/// keys sort by shard, then sequence.
pub fn shard_key(shard: u16, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10);
    key.extend_from_slice(&shard.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn parse_shard_key(key: &[u8]) -> Option<(u16, u64)> {
    if key.len() != 10 {
        return None;
    }
    let shard = u16::from_be_bytes([key[0], key[1]]);
    let seq = u64::from_be_bytes(key[2..10].try_into().ok()?);
    Some((shard, seq))
}

/// The first key after every key that starts with `prefix` (the exclusive end of a prefix
/// scan): the prefix with its last byte below 0xff incremented and what follows dropped.
/// `None` when no such key exists (an empty prefix, or one of 0xff bytes only): scan to the end.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The largest key any family holds, for scans "to the end": keys are far shorter.
/// A key above every key orderd writes (the end of an open range).
pub const KEY_MAX: &[u8] = &[0xff; 64];

/// A stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Health figures of a store, for the gateway's inspection (`GET /v1/ops/inspection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageHealth {
    /// Writes are stopped (RocksDB `rocksdb.is-write-stopped`): every write waits.
    pub write_stopped: bool,
    /// Rate writes are slowed to, bytes per second; 0 when they are not slowed
    /// (`rocksdb.actual-delayed-write-rate`).
    pub delayed_write_rate_bytes_per_s: u64,
    /// Bytes compaction still has to rewrite, summed over every family
    /// (`rocksdb.estimate-pending-compaction-bytes`).
    pub pending_compaction_bytes: u64,
}

/// What the engine needs from storage. Implementations are shared by all shard threads and
/// the log writer thread.
pub trait Storage: Send + Sync + 'static {
    /// Applies all writes atomically; with `sync` they are on stable storage on return.
    fn write(&self, writes: Vec<Write>, sync: bool) -> Result<(), StorageError>;
    /// Makes every earlier unsynced write durable.
    fn sync(&self) -> Result<(), StorageError>;
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Visits `(key, value)` pairs with `from <= key < to` in key order until `visit` says stop
    /// (returns false).
    fn scan(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError>;
    /// Flushes the memory tables of `families` and compacts them, so that values deleted there
    /// are gone from the files on disk (used after re-sealing personal data, on the families
    /// that held the old form).
    fn compact(&self, _families: &[Family]) -> Result<(), StorageError> {
        Ok(())
    }
    /// Writes every memory table to disk (a clean stop, so the next open replays no write-ahead
    /// log: restart time stays flat as memtables grow). Stores without any: nothing.
    fn flush_memtables(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Writes a consistent, openable copy of the whole store into `dir` (which must not exist);
    /// the first step of a backup. Stores that cannot (in memory) say so.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StorageError> {
        Err(StorageError::Io(format!(
            "this store cannot write a checkpoint to {}",
            dir.display()
        )))
    }
    /// The store's health figures; `None` when the implementation has none (in memory).
    fn health(&self) -> Result<Option<StorageHealth>, StorageError> {
        Ok(None)
    }
    /// The last `(key, value)` with `from <= key < to`.
    fn last_in(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
    ) -> Result<Option<KeyValue>, StorageError>;
    /// Visits `(key, value)` pairs with `from <= key < to` in descending key order until
    /// `visit` says stop (newest-first listings of keys that sort by time).
    fn scan_rev(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError>;
    /// [`Storage::scan`] of the keys that start with `prefix`, in key order.
    fn scan_prefix(
        &self,
        family: Family,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let end = prefix_end(prefix);
        self.scan(family, prefix, end.as_deref().unwrap_or(KEY_MAX), visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    #[test]
    fn scan_prefix_visits_exactly_the_keys_of_the_prefix() {
        let store = memory::MemoryStorage::new();
        let put = |key: &[u8]| Write::Put {
            family: Family::Control,
            key: key.to_vec(),
            value: Vec::new(),
        };
        store
            .write(
                vec![
                    put(b"a"),
                    put(&[b'b', 0xff]),
                    put(&[b'b', 0xff, 0xff]),
                    put(b"b\x00"),
                    put(b"c"),
                ],
                false,
            )
            .unwrap();
        let mut seen = Vec::new();
        store
            .scan_prefix(Family::Control, b"b", &mut |key, _| {
                seen.push(key.to_vec());
                true
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![b"b\x00".to_vec(), vec![b'b', 0xff], vec![b'b', 0xff, 0xff]]
        );
    }
}

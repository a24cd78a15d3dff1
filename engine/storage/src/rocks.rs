//! The RocksDB implementation of [`Storage`]: one database, one column family per [`Family`].

use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use super::{Family, KeyValue, Storage, StorageError, StorageHealth, Write};

pub struct RocksStorage {
    db: DB,
}

/// RocksDB's write-ahead log bound when none is given (`storage.wal_max_bytes`): 128 MiB.
pub const WAL_MAX_BYTES_DEFAULT: u64 = 128 << 20;

fn io(error: rocksdb::Error) -> StorageError {
    StorageError::Io(error.into_string())
}

impl RocksStorage {
    /// Opens (creating if needed) the database under `path`, its write-ahead log bounded at
    /// [`WAL_MAX_BYTES_DEFAULT`].
    pub fn open(path: &Path) -> Result<RocksStorage, StorageError> {
        Self::open_with(path, WAL_MAX_BYTES_DEFAULT)
    }

    /// Opens (creating if needed) the database under `path`, its write-ahead log bounded at
    /// `wal_max_bytes` (0: RocksDB's own bound, four times every family's memtables).
    pub fn open_with(path: &Path, wal_max_bytes: u64) -> Result<RocksStorage, StorageError> {
        Self::open_inner(path, wal_max_bytes, false)
    }

    /// Like [`RocksStorage::open_with`], with automatic compactions off until
    /// [`RocksStorage::resume_compactions`]: a restart after a crash finds level-0 files
    /// waiting, and compacting them at once took most of a core from the shards' recovery
    /// (LZ4 and CRC of compactions were a quarter of a restart's CPU samples).
    pub fn open_for_recovery(
        path: &Path,
        wal_max_bytes: u64,
    ) -> Result<RocksStorage, StorageError> {
        Self::open_inner(path, wal_max_bytes, true)
    }

    /// Turns automatic compactions back on in every family (after
    /// [`RocksStorage::open_for_recovery`]).
    pub fn resume_compactions(&self) -> Result<(), StorageError> {
        for family in Family::ALL {
            self.db
                .set_options_cf(self.cf(family), &[("disable_auto_compactions", "false")])
                .map_err(io)?;
        }
        Ok(())
    }

    fn open_inner(
        path: &Path,
        wal_max_bytes: u64,
        compactions_paused: bool,
    ) -> Result<RocksStorage, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        options.set_bytes_per_sync(1 << 20);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A restart after a crash replays the write-ahead log from the oldest file a family
        // still needs, and a family written rarely (`snap`, `control`, `idem`) pins every file
        // written since its last flush: left at RocksDB's own bound the log grew to ~1 GB in two
        // million orders, an 8.5 s replay (docs/PERFORMANCE.md, "Longevity"). Past this bound
        // RocksDB flushes the families that hold the oldest file. It stays well above what the
        // busy families (`log`, `cold`, `audit`) write between their own flushes, so those are
        // not flushed early: a 32 MiB bound made them flush tiny files until level 0 piled up
        // in `cold` and writes stalled; 128 MiB ran 20 M orders without a stall.
        if wal_max_bytes > 0 {
            options.set_max_total_wal_size(wal_max_bytes);
        }
        let families = Family::ALL.iter().map(|family| {
            let mut cf = Options::default();
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            cf.set_disable_auto_compactions(compactions_paused);
            if *family == Family::Log {
                cf.set_write_buffer_size(64 << 20);
            }
            if *family == Family::Idem {
                // Most lookups are of keys never seen (every new order's): a bloom filter
                // answers those without reading a block.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                cf.set_block_based_table_factory(&table);
            }
            ColumnFamilyDescriptor::new(family.name(), cf)
        });
        // A restart after a crash replays the write-ahead log into memtables and, by default,
        // then writes every memtable out as a level-0 file before the open returns (0.49 s of
        // a 1.63 s open at 2 M orders, docs/PERFORMANCE.md). Kept in memory instead, the memtables are flushed later as any
        // others (the WAL files they came from stay until then, so a second crash replays them
        // again). Not in the crate's typed options, so set by name.
        let options = options
            .get_options_from_string("avoid_flush_during_recovery=true")
            .map_err(io)?;
        let db = DB::open_cf_descriptors(&options, path, families).map_err(io)?;
        Ok(RocksStorage { db })
    }

    /// Opens the database under `path` for reading only: nothing is written to it (a write
    /// fails), not even the flush of its WAL at open. Used to rebuild shards from a checkpoint
    /// or a restored copy without disk writes that would compete with a live store's fsyncs.
    pub fn open_read_only(path: &Path) -> Result<RocksStorage, StorageError> {
        let mut options = Options::default();
        options.set_max_background_jobs(1);
        // A copy made before a family existed (`events`) opens with the families it has.
        let present = DB::list_cf(&options, path).map_err(io)?;
        let families: Vec<&str> = Family::ALL
            .iter()
            .map(|family| family.name())
            .filter(|name| present.iter().any(|p| p == name))
            .collect();
        let db = DB::open_cf_for_read_only(&options, path, families, false).map_err(io)?;
        Ok(RocksStorage { db })
    }

    /// A consistent copy of the whole database in `dir` (which must not exist), flushed first:
    /// SST files are hard links when `dir` is on the same filesystem, so it is quick and
    /// costs little space. Writes continue meanwhile.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<(), StorageError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(io)?;
        checkpoint.create_checkpoint(dir).map_err(io)
    }

    /// Backs this database up into the `BackupEngine` directory `dir` (memory tables flushed
    /// first; incremental: files the directory already holds are shared, not copied) and returns
    /// the new backup's engine id.
    pub fn backup_into(&self, dir: &Path) -> Result<u32, StorageError> {
        let mut engine = open_backup_engine(dir)?;
        engine.create_new_backup_flush(&self.db, true).map_err(io)?;
        engine
            .get_backup_info()
            .iter()
            .map(|info| info.backup_id)
            .max()
            .ok_or_else(|| StorageError::Io("the new backup is not listed".into()))
    }

    fn cf(&self, family: Family) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(family.name())
            .expect("column family created at open")
    }
}

fn open_backup_engine(dir: &Path) -> Result<BackupEngine, StorageError> {
    let mut options = BackupEngineOptions::new(dir).map_err(io)?;
    options.set_sync(true);
    options.set_max_background_operations(1);
    let env = rocksdb::Env::new().map_err(io)?;
    BackupEngine::open(&options, &env).map_err(io)
}

/// The engine ids of the backups in the `BackupEngine` directory `dir`, oldest first.
pub fn backup_ids(dir: &Path) -> Result<Vec<u32>, StorageError> {
    let engine = open_backup_engine(dir)?;
    let mut ids: Vec<u32> = engine
        .get_backup_info()
        .iter()
        .map(|info| info.backup_id)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Restores backup `id` of the `BackupEngine` directory `dir` into the database directory
/// `target` (its WAL too). RocksDB checks every file's checksum while it copies.
pub fn restore_backup(dir: &Path, id: u32, target: &Path) -> Result<(), StorageError> {
    let mut engine = open_backup_engine(dir)?;
    let options = RestoreOptions::default();
    engine
        .restore_from_backup(target, target, &options, id)
        .map_err(io)
}

/// Deletes all but the newest `keep` backups of `dir` and the files only they used.
pub fn purge_backups(dir: &Path, keep: usize) -> Result<(), StorageError> {
    let mut engine = open_backup_engine(dir)?;
    engine.purge_old_backups(keep.max(1)).map_err(io)
}

impl Storage for RocksStorage {
    fn write(&self, writes: Vec<Write>, sync: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for write in writes {
            match write {
                Write::Put { family, key, value } => batch.put_cf(self.cf(family), key, value),
                Write::DeleteRange { family, from, to } => {
                    batch.delete_range_cf(self.cf(family), from, to)
                }
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(io)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(io)
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        self.checkpoint_to(dir)
    }

    fn flush_memtables(&self) -> Result<(), StorageError> {
        for family in Family::ALL {
            self.db.flush_cf(self.cf(family)).map_err(io)?;
        }
        Ok(())
    }

    fn compact(&self, families: &[Family]) -> Result<(), StorageError> {
        for &family in families {
            let cf = self.cf(family);
            self.db.flush_cf(cf).map_err(io)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        self.db.flush_wal(true).map_err(io)
    }

    fn health(&self) -> Result<Option<StorageHealth>, StorageError> {
        use rocksdb::properties;
        // Write stalls are database-wide; pending compaction is per column family.
        let write_stopped = self
            .db
            .property_int_value(properties::IS_WRITE_STOPPED)
            .map_err(io)?
            .unwrap_or(0)
            != 0;
        let delayed_write_rate_bytes_per_s = self
            .db
            .property_int_value(properties::ACTUAL_DELAYED_WRITE_RATE)
            .map_err(io)?
            .unwrap_or(0);
        let mut pending_compaction_bytes = 0u64;
        for family in Family::ALL {
            let bytes = self
                .db
                .property_int_value_cf(
                    self.cf(family),
                    properties::ESTIMATE_PENDING_COMPACTION_BYTES,
                )
                .map_err(io)?
                .unwrap_or(0);
            pending_compaction_bytes = pending_compaction_bytes.saturating_add(bytes);
        }
        Ok(Some(StorageHealth {
            write_stopped,
            delayed_write_rate_bytes_per_s,
            pending_compaction_bytes,
        }))
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(family), key).map_err(io)
    }

    fn scan(
        &self,
        family: Family,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let iter = self.db.iterator_cf(
            self.cf(family),
            IteratorMode::From(from, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(io)?;
            if key.as_ref() >= to || !visit(&key, &value) {
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
        let iter = self
            .db
            .iterator_cf(self.cf(family), IteratorMode::From(to, Direction::Reverse));
        // Reverse iteration from `to` starts at the last key <= `to`; skip `to` itself.
        for item in iter {
            let (key, value) = item.map_err(io)?;
            if key.as_ref() >= to {
                continue;
            }
            if key.as_ref() < from || !visit(&key, &value) {
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
        let mut iter = self
            .db
            .iterator_cf(self.cf(family), IteratorMode::From(to, Direction::Reverse));
        // Reverse iteration from `to` starts at the last key <= `to`; skip `to` itself.
        for item in iter.by_ref() {
            let (key, value) = item.map_err(io)?;
            if key.as_ref() >= to {
                continue;
            }
            if key.as_ref() < from {
                return Ok(None);
            }
            return Ok(Some((key.to_vec(), value.to_vec())));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_the_write_stall_and_compaction_properties() {
        let dir = tempfile::tempdir().unwrap();
        let storage = RocksStorage::open(&dir.path().join("db")).unwrap();
        storage
            .write(
                vec![Write::Put {
                    family: Family::Control,
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                }],
                true,
            )
            .unwrap();
        let health = storage
            .health()
            .unwrap()
            .expect("RocksDB has health figures");
        // A fresh, idle database: writes flow at full speed.
        assert!(!health.write_stopped);
        assert_eq!(health.delayed_write_rate_bytes_per_s, 0);
        assert!(health.pending_compaction_bytes < 1 << 20, "{health:?}");
        // The in-memory store has none.
        assert_eq!(crate::memory::MemoryStorage::new().health().unwrap(), None);
    }
}

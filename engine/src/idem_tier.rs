//! Idempotency keys on disk: entries older than `engine.idempotency_hot_s` leave shard memory
//! for the `idem` column family, where a retry still finds its original outcome until
//! `engine.idempotency_retention_s` ends.
//!
//! A shard's sweep writes the entries with its next log batch (as the cold tier's records)
//! and emits `IdemArchived`, whose application removes them from memory, live and on replay.
//! Until that batch is durable the shard answers them from a map of its own (`leaving`); after
//! it, from this family, read on the shard's thread when a key is not in memory (a bloom
//! filter makes the common miss, a new key, cheap). Entries past their retention are deleted
//! by later sweeps, oldest first, through the expiry index.
//!
//! Keys (family `idem`): shard (u16 BE) + `k` + the Idempotency-Key → postcard `IdemEntry`;
//! shard + `e` + the entry's time (sign-flipped BE) + the key → empty (the expiry index).

use crate::state::IdemEntry;
use crate::storage::{prefix_end, Family, Storage, StorageError, Write, KEY_MAX};

const ENTRY: u8 = b'k';
const EXPIRY: u8 = b'e';
/// Format byte of an entry's value.
const FORMAT: u8 = 1;

fn head(shard: u16, kind: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(48);
    key.extend_from_slice(&shard.to_be_bytes());
    key.push(kind);
    key
}

fn entry_key(shard: u16, key: &str) -> Vec<u8> {
    let mut k = head(shard, ENTRY);
    k.extend_from_slice(key.as_bytes());
    k
}

fn time_bytes(at_us: i64) -> [u8; 8] {
    ((at_us as u64) ^ (1 << 63)).to_be_bytes()
}

fn expiry_key(shard: u16, at_us: i64, key: &str) -> Vec<u8> {
    let mut k = head(shard, EXPIRY);
    k.extend_from_slice(&time_bytes(at_us));
    k.extend_from_slice(key.as_bytes());
    k
}

/// The writes that keep `entry` under `key` on disk.
pub fn writes(shard: u16, key: &str, entry: &IdemEntry) -> Vec<Write> {
    let mut value = vec![FORMAT];
    value.extend_from_slice(&postcard::to_allocvec(entry).unwrap_or_default());
    vec![
        Write::Put {
            family: Family::Idem,
            key: entry_key(shard, key),
            value,
        },
        Write::Put {
            family: Family::Idem,
            key: expiry_key(shard, entry.at_us, key),
            value: Vec::new(),
        },
    ]
}

/// The entry of `key` on disk, if any (whatever its age: the caller judges retention).
pub fn lookup(
    storage: &dyn Storage,
    shard: u16,
    key: &str,
) -> Result<Option<IdemEntry>, StorageError> {
    let Some(value) = storage.get(Family::Idem, &entry_key(shard, key))? else {
        return Ok(None);
    };
    match value.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body)
            .map(Some)
            .map_err(|e| StorageError::Corrupt(format!("unreadable idempotency entry: {e}"))),
        _ => Err(StorageError::Corrupt(
            "unknown idempotency entry format".into(),
        )),
    }
}

/// The deletes of at most `max` entries of shard `shard` older than `cutoff_us`, oldest first
/// (empty when none is).
pub fn expired(
    storage: &dyn Storage,
    shard: u16,
    cutoff_us: i64,
    max: usize,
) -> Result<Vec<Write>, StorageError> {
    let from = head(shard, EXPIRY);
    let mut to = from.clone();
    to.extend_from_slice(&time_bytes(cutoff_us));
    let mut keys: Vec<Vec<u8>> = Vec::new();
    storage.scan(Family::Idem, &from, &to, &mut |key, _| {
        keys.push(key.to_vec());
        keys.len() < max
    })?;
    let Some(last) = keys.last() else {
        return Ok(Vec::new());
    };
    let mut end = last.clone();
    end.push(0);
    let mut deletes = vec![Write::DeleteRange {
        family: Family::Idem,
        from,
        to: end,
    }];
    for key in &keys {
        // The expiry key's tail is the Idempotency-Key; its entry goes only when it is still
        // the one of that time (a key used again after its retention has a newer entry).
        let time: [u8; 8] = key[3..3 + 8]
            .try_into()
            .expect("an expiry key holds a time");
        let at_us = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
        let name = String::from_utf8_lossy(&key[3 + 8..]).into_owned();
        if lookup(storage, shard, &name)?.is_some_and(|e| e.at_us != at_us) {
            continue;
        }
        let entry = entry_key(shard, &name);
        let mut after = entry.clone();
        after.push(0);
        deletes.push(Write::DeleteRange {
            family: Family::Idem,
            from: entry,
            to: after,
        });
    }
    Ok(deletes)
}

/// Entries of shard `shard` on disk (tests and gauges).
pub fn count(storage: &dyn Storage, shard: u16) -> Result<u64, StorageError> {
    let prefix = head(shard, ENTRY);
    let end = prefix_end(&prefix).unwrap_or_else(|| KEY_MAX.to_vec());
    let mut n = 0;
    storage.scan(Family::Idem, &prefix, &end, &mut |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

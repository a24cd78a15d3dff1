//! `Idempotency-Key` on the mutations other than placements: the header, the request hash, and
//! the keys the gateway remembers itself.
//!
//! The engine remembers each key's outcome where the mutation happens (the shard of the SKU,
//! order or shipment), in the same log batch as the mutation: that is what makes a retry apply
//! nothing. Two things it cannot do from there, so the gateway keeps its own record of every
//! key it was sent (`control`, under `idem/`, one entry per key scoped to the API key):
//!
//! - **A key reused on another route or object.** The engine only sees the key on the shard the
//!   second request goes to. The entry holds the request hash, so the second request gets 422
//!   `idempotency_conflict` wherever its object lives.
//!
//! (The audit entry of a replay needs nothing here since issue 15: the shard writes a
//! mutation's entry in the same write as the mutation, and a replay applies nothing and writes
//! none. The `audited` flag of older entries is kept in the format and no longer read.)
//!
//! Change requests (`crate::changes`) keep their key → change number here too, written in the
//! same synced write as the change.
//!
//! Requests with the same key run one at a time (a lock per key), so neither a concurrent retry
//! nor a concurrent reuse slips between the check and the engine call. An entry is written
//! before the engine call it covers and kept for `engine.idempotency_retention_s` plus
//! [`LAPSE_US`], so it never lapses before the engine's record of the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use orderd_engine::Idempotency;
use orderd_storage::{Family, Storage, StorageError, Write};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::validate;

/// Name of the idempotency header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Prefix of the gateway's key entries in `control`.
const PREFIX: &[u8] = b"idem/";
/// How long past its retention an entry is kept (and believed to possibly outlive the
/// engine's record of the key): the engine sweeps its keys once a minute.
pub const LAPSE_US: i64 = 3_600 * 1_000_000;
/// Entries past `retention + LAPSE_US` are deleted at most this often.
const SWEEP_INTERVAL_US: i64 = 600 * 1_000_000;

/// The `Idempotency-Key` header (sent at most once, visible ASCII, 1–255 characters), given its
/// values as sent (none: no key).
pub fn header_key<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid(
            IDEMPOTENCY_KEY_HEADER,
            "send Idempotency-Key at most once",
        ));
    }
    let text = validate::header_text(value).ok_or_else(|| {
        ApiError::invalid(
            IDEMPOTENCY_KEY_HEADER,
            "Idempotency-Key must be visible ASCII text",
        )
    })?;
    IdempotencyKey::parse(text.to_string()).map(Some)
}

/// An `Idempotency-Key` that passed [`validate::idempotency_key`] (1–255 characters).
/// Operations take only this type, so a key is validated once, where a front door reads it
/// (HTTP: the header, before the body is decoded; TCP: the frame's body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key as the client sent it.
    pub fn parse(key: String) -> Result<IdempotencyKey, ApiError> {
        validate::idempotency_key(&key)?;
        Ok(IdempotencyKey(key))
    }

    /// Validates an optional key.
    pub fn parse_opt(key: Option<String>) -> Result<Option<IdempotencyKey>, ApiError> {
        key.map(IdempotencyKey::parse).transpose()
    }

    /// The key scoped by the caller's API key, as it is stored: two clients choosing the same
    /// key never collide.
    pub fn scoped(&self, caller: &Caller) -> String {
        format!("{}:{}", caller.key_id, self.0)
    }
}

/// The hash identifying a mutation other than a placement: the first 16 bytes of SHA-256 over
/// `route`, one zero byte, and the body bytes. Over HTTP `route` is the method and the path as
/// sent (`POST /v1/stock/MUG-BLUE/adjustments`, see the gateway's `KeyedBody`); over TCP it is
/// `tcp ` and the opcode's name, and the body (which names the object) is the payload.
pub fn request_hash(route: &str, body: &[u8]) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0u8]);
    hasher.update(body);
    first_16_bytes(hasher)
}

/// The hash identifying a placement: the first 16 bytes of SHA-256 over the body alone (a retry
/// must send the same bytes; over TCP, the same order bytes). The engine keeps it with the key.
pub fn placement_hash(body: &[u8]) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(body);
    first_16_bytes(hasher)
}

fn first_16_bytes(hasher: Sha256) -> u128 {
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// What the gateway remembers of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The request hash, 32 hex digits.
    pub hash: String,
    /// When the entry was first written, Unix microseconds.
    pub at_us: i64,
    /// The mutation's audit entry is written.
    pub audited: bool,
    /// The key was free when the entry was written, so `audited` proves a replay (see the
    /// module documentation).
    pub trusted: bool,
    /// For a change request: the change's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<u64>,
}

impl Entry {
    /// A new entry for `hash`, written now.
    pub fn new(hash: u128, at_us: i64, trusted: bool) -> Entry {
        Entry {
            hash: hex_hash(hash),
            at_us,
            audited: false,
            trusted,
            change: None,
        }
    }

    pub fn is_for(&self, hash: u128) -> bool {
        self.hash == hex_hash(hash)
    }
}

fn hex_hash(hash: u128) -> String {
    format!("{hash:032x}")
}

/// How old an entry is, against the retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    /// Within the retention: the key is taken.
    Live,
    /// Past the retention by less than [`LAPSE_US`]: the key is free again, but the engine
    /// may still remember it for a little while.
    Lapsed,
}

/// The gateway's key entries (see the module documentation).
pub struct Keys {
    storage: Arc<dyn Storage>,
    retention_us: i64,
    /// One lock per key with a request running.
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    last_sweep_us: AtomicI64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("retention_us", &self.retention_us)
            .finish_non_exhaustive()
    }
}

/// Held while a request with this key runs; the next one with the same key waits for it.
pub struct KeyLock<'a> {
    keys: &'a Keys,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut running = self.keys.running.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it now: nobody runs or waits with this key.
        if running
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            running.remove(&self.key);
        }
    }
}

fn entry_key(key: &str) -> Vec<u8> {
    let mut bytes = PREFIX.to_vec();
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn now_us() -> i64 {
    orderd_engine::clock::now_us()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Io(format!("the storage task did not run: {e}")))?
}

impl Keys {
    /// Keys kept `retention_s` (the engine's `engine.idempotency_retention_s`).
    pub fn new(storage: Arc<dyn Storage>, retention_s: u64) -> Keys {
        Keys {
            storage,
            retention_us: (retention_s as i64).saturating_mul(1_000_000),
            running: Mutex::new(HashMap::new()),
            last_sweep_us: AtomicI64::new(0),
        }
    }

    /// Waits until no other request with `key` runs; holds the key until dropped.
    pub async fn lock(&self, key: &str) -> KeyLock<'_> {
        let lock = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        KeyLock {
            keys: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    fn age(&self, entry: &Entry, now_us: i64) -> Option<Age> {
        let age = now_us.saturating_sub(entry.at_us);
        if age < self.retention_us {
            Some(Age::Live)
        } else if age < self.retention_us.saturating_add(LAPSE_US) {
            Some(Age::Lapsed)
        } else {
            None
        }
    }

    /// The entry of `key` and its age; `None` when there is none, or only one so old that
    /// it no longer counts.
    pub async fn lookup(&self, key: &str) -> Result<Option<(Age, Entry)>, StorageError> {
        let storage = self.storage.clone();
        let stored_key = entry_key(key);
        let bytes = blocking(move || storage.get(Family::Control, &stored_key)).await?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        // An entry that cannot be read is treated as none: it only ever holds back a reuse.
        let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
            tracing::warn!(
                message = "An idempotency entry cannot be read; ignoring it.",
                key
            );
            return Ok(None);
        };
        Ok(self.age(&entry, now_us()).map(|age| (age, entry)))
    }

    /// The write that stores `entry` for `key` (to join another write, as a change's).
    pub fn put(&self, key: &str, entry: &Entry) -> Write {
        Write::Put {
            family: Family::Control,
            key: entry_key(key),
            value: serde_json::to_vec(entry).expect("an entry serializes"),
        }
    }

    /// Stores `entry` for `key`, unsynced: the engine's synced write of the mutation that
    /// follows takes it to the disk with it (one write-ahead log).
    pub async fn store(&self, key: &str, entry: &Entry) -> Result<(), StorageError> {
        let write = self.put(key, entry);
        let storage = self.storage.clone();
        blocking(move || storage.write(vec![write], false)).await?;
        self.sweep_if_due();
        Ok(())
    }

    /// Deletes the entries past `retention + LAPSE_US`, at most every [`SWEEP_INTERVAL_US`],
    /// in the background.
    fn sweep_if_due(&self) {
        let now = now_us();
        let last = self.last_sweep_us.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_INTERVAL_US
            || self
                .last_sweep_us
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let storage = self.storage.clone();
        let cutoff_us = now - self.retention_us.saturating_add(LAPSE_US);
        tokio::task::spawn_blocking(move || match sweep(storage.as_ref(), cutoff_us) {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(message = "Swept idempotency keys.", swept),
            Err(error) => tracing::warn!(message = "Cannot sweep idempotency keys.", %error),
        });
    }
}

/// Deletes every entry written before `cutoff_us`; how many.
pub fn sweep(storage: &dyn Storage, cutoff_us: i64) -> Result<usize, StorageError> {
    let mut old = Vec::new();
    storage.scan_prefix(Family::Control, PREFIX, &mut |key, value| {
        let expired = serde_json::from_slice::<Entry>(value).map_or(true, |e| e.at_us < cutoff_us);
        if expired {
            old.push(key.to_vec());
        }
        true
    })?;
    let count = old.len();
    let writes = old
        .into_iter()
        .map(|key| {
            let mut to = key.clone();
            to.push(0); // exactly this key
            Write::DeleteRange {
                family: Family::Control,
                from: key,
                to,
            }
        })
        .collect::<Vec<_>>();
    if !writes.is_empty() {
        storage.write(writes, false)?;
    }
    Ok(count)
}

/// A storage error of the key entries, as the client sees it: 507 for a full disk (as the
/// engine answers it), else 503.
fn unavailable(error: StorageError) -> ApiError {
    let detail = format!("cannot store the Idempotency-Key: {error}");
    let lower = detail.to_ascii_lowercase();
    if lower.contains("no space") || lower.contains("nospace") {
        return ApiError::InsufficientStorage(detail);
    }
    ApiError::Unavailable {
        detail,
        reasons: None,
    }
}

/// A mutation's hold on its `Idempotency-Key` (none without a key): taken before the engine
/// call, it passes the key on to the engine; dropped once the engine answered.
pub struct Claim<'a> {
    held: Option<Held<'a>>,
}

struct Held<'a> {
    _lock: KeyLock<'a>,
    key: String,
    request_hash: u128,
}

impl<'a> Claim<'a> {
    /// Takes `key` for a request with `request_hash`: 422 `idempotency_conflict` when the key
    /// is live with another request.
    pub async fn take(
        audit: &'a AuditLog,
        caller: &Caller,
        key: Option<IdempotencyKey>,
        request_hash: u128,
    ) -> Result<Claim<'a>, ApiError> {
        let Some(key) = key else {
            return Ok(Claim { held: None });
        };
        let key = key.scoped(caller);
        let keys = audit.keys();
        let lock = keys.lock(&key).await;
        match keys.lookup(&key).await.map_err(unavailable)? {
            Some((Age::Live, entry)) if !entry.is_for(request_hash) => {
                return Err(ApiError::IdempotencyConflict)
            }
            Some((Age::Live, _)) => {}
            found => {
                let entry = Entry::new(request_hash, now_us(), found.is_none());
                keys.store(&key, &entry).await.map_err(unavailable)?;
            }
        }
        Ok(Claim {
            held: Some(Held {
                _lock: lock,
                key,
                request_hash,
            }),
        })
    }

    /// What the engine call takes.
    pub fn idempotency(&self) -> Option<Idempotency> {
        self.held.as_ref().map(|held| Idempotency {
            key: held.key.clone(),
            request_hash: held.request_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_the_route_and_the_body() {
        // SHA-256("\0") = 6e340b9cffb37a989ca544e6bb780a2c 78901d3fb33738768511a30617afa01d
        assert_eq!(
            request_hash("", b""),
            0x6e340b9cffb37a989ca544e6bb780a2c_u128
        );
        let body = br#"{"delta":5,"reason":"receive"}"#;
        let a = request_hash("POST /v1/stock/A/adjustments", body);
        assert_ne!(a, request_hash("POST /v1/stock/B/adjustments", body));
        assert_ne!(a, request_hash("POST /v1/stock/A/adjustments", b"{}"));
        // The separator keeps route and body apart.
        assert_ne!(request_hash("ab", b"c"), request_hash("a", b"bc"));
    }

    fn keys() -> Keys {
        Keys::new(
            Arc::new(orderd_storage::memory::MemoryStorage::new()),
            86_400,
        )
    }

    #[test]
    fn entries_age_from_live_to_lapsed_to_gone() {
        let keys = keys();
        let entry = Entry::new(7, 0, true);
        let day = 86_400 * 1_000_000;
        assert_eq!(keys.age(&entry, day - 1), Some(Age::Live));
        assert_eq!(keys.age(&entry, day), Some(Age::Lapsed));
        assert_eq!(keys.age(&entry, day + LAPSE_US), None);
        assert!(entry.is_for(7) && !entry.is_for(8));
    }

    #[tokio::test]
    async fn entries_are_stored_looked_up_and_swept() {
        let keys = keys();
        let now = now_us();
        let fresh = Entry::new(1, now, true);
        let old = Entry::new(2, now - 86_400 * 1_000_000 - LAPSE_US - 1, true);
        keys.store("k:fresh", &fresh).await.unwrap();
        keys.store("k:old", &old).await.unwrap();
        assert_eq!(
            keys.lookup("k:fresh").await.unwrap(),
            Some((Age::Live, fresh))
        );
        assert_eq!(keys.lookup("k:old").await.unwrap(), None);
        assert_eq!(keys.lookup("k:none").await.unwrap(), None);
        let cutoff = now - 86_400 * 1_000_000 - LAPSE_US;
        assert_eq!(sweep(keys.storage.as_ref(), cutoff).unwrap(), 1);
        assert_eq!(sweep(keys.storage.as_ref(), cutoff).unwrap(), 0);
        assert!(keys.lookup("k:fresh").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn requests_with_one_key_run_one_at_a_time() {
        let keys = keys();
        let first = keys.lock("k:a").await;
        // Another key is not held up.
        drop(keys.lock("k:b").await);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), keys.lock("k:a"));
        assert!(waiting.await.is_err(), "a second holder of the same key");
        drop(first);
        drop(keys.lock("k:a").await);
        assert!(keys.running.lock().unwrap().is_empty());
    }
}

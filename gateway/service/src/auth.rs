//! API keys: the key table (hashes only), the first admin key, [`authenticate`] (which both
//! front doors call for every request: HTTP's `Authed` extractor and TCP's AUTH frame), role
//! checks and the per-key rate limit.
//!
//! Secrets are 256-bit random values shown once; only their SHA-256 is stored. A lookup is one
//! hash and one `DashMap` probe, with no slow KDF per request: the secrets are random, not
//! passwords, so a fast hash is enough.
//!
//! Persistence: the table lives in `<data_dir>/keys.json`, written atomically (temp file, fsync,
//! rename, fsync of the directory) on every change. A revoked key is removed from the table in
//! memory first (it fails at once) and from the file before the revocation is acknowledged (it
//! stays revoked after a restart).

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use thread_local::ThreadLocal;

use dashmap::DashMap;
use orderd_config::Config;
use orderd_engine::CustomerId;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::roles::{Role, RoleSet};

pub use orderd_config::ADMIN_KEY_FILE;
/// File holding the key table.
pub const KEYS_FILE: &str = "keys.json";
/// Prefix of every secret, so that a leaked one is recognizable (e.g. by secret scanners).
pub const SECRET_PREFIX: &str = "odk_";
/// Random bytes of a secret: 256 bits.
const SECRET_BYTES: usize = 32;
/// Random bytes of a key id.
const KEY_ID_BYTES: usize = 8;
/// Format version of `keys.json`.
const KEYS_FILE_VERSION: u32 = 1;

/// SHA-256 of a secret.
pub type SecretHash = [u8; 32];

/// Longest key name, in characters.
pub const KEY_NAME_CHARS_MAX: usize = 100;

/// Why a key could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no such key")]
    NotFound,
    #[error("this is the last admin key; create another admin key first")]
    LastAdmin,
    #[error(transparent)]
    Store(#[from] KeyStoreError),
}

/// Why the key table could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a key may do and on whose behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Set for `customer` keys only.
    pub customer_id: Option<CustomerId>,
    pub created_at_us: i64,
    /// The person or system holding the key (API.md: defaults to the creating key's owner;
    /// the first admin key's owner is [`BOOTSTRAP_OWNER`]). Four-eyes approval compares owners.
    pub owner: String,
    /// The id of the key that created this one (`None` for the first admin key).
    pub created_by: Option<String>,
    /// The owner of the key that created this one, kept so that four eyes can be checked
    /// after that key is revoked.
    pub created_by_owner: Option<String>,
}

/// The owner of the first admin key.
pub const BOOTSTRAP_OWNER: &str = "bootstrap";
/// Longest key owner, in characters.
pub const KEY_OWNER_CHARS_MAX: usize = 100;

/// One key as stored in `keys.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: String,
    name: String,
    role: Role,
    customer_id: Option<String>,
    created_at_us: i64,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
    /// Absent in tables written before owners existed: such a key owns itself (its id), so
    /// that two of them never count as one person.
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    created_by_owner: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKeys {
    version: u32,
    keys: Vec<StoredKey>,
}

/// The key table: in memory for lookups, on disk for restarts.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    by_hash: DashMap<SecretHash, KeyRecord>,
    /// Serializes writers of `keys.json`.
    write_lock: Mutex<()>,
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh random secret: `odk_` and 64 hex digits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

fn new_key_id() -> String {
    let mut bytes = [0u8; KEY_ID_BYTES];
    OsRng.fill_bytes(&mut bytes);
    format!("key_{}", hex::encode(bytes))
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl KeyStore {
    /// Loads `<dir>/keys.json` (an absent file is an empty table) and, on a first start, creates
    /// the admin key (see [`KeyStore::ensure_admin_key`]).
    pub fn open(dir: &Path) -> Result<KeyStore, KeyStoreError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let store = KeyStore {
            dir: dir.to_path_buf(),
            by_hash: DashMap::new(),
            write_lock: Mutex::new(()),
        };
        let path = store.keys_path();
        match fs::read(&path) {
            Ok(bytes) => store.load(&path, &bytes)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&path)(error)),
        }
        Ok(store)
    }

    fn load(&self, path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
        let corrupt = |detail: String| KeyStoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let stored: StoredKeys =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if stored.version != KEYS_FILE_VERSION {
            return Err(corrupt(format!("unsupported version {}", stored.version)));
        }
        for key in stored.keys {
            let hash: SecretHash = hex::decode(&key.secret_sha256)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| corrupt(format!("key {}: bad secret hash", key.id)))?;
            let customer_id = match &key.customer_id {
                Some(text) => Some(
                    text.parse::<CustomerId>()
                        .map_err(|_| corrupt(format!("key {}: bad customer_id", key.id)))?,
                ),
                None => None,
            };
            self.by_hash.insert(
                hash,
                KeyRecord {
                    owner: key.owner.unwrap_or_else(|| key.id.clone()),
                    id: key.id,
                    name: key.name,
                    role: key.role,
                    customer_id,
                    created_at_us: key.created_at_us,
                    created_by: key.created_by,
                    created_by_owner: key.created_by_owner,
                },
            );
        }
        Ok(())
    }

    fn keys_path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    /// Path of the first admin secret.
    pub fn admin_key_path(&self) -> PathBuf {
        self.dir.join(ADMIN_KEY_FILE)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The key whose secret this is.
    pub fn lookup(&self, secret: &str) -> Option<KeyRecord> {
        self.by_hash
            .get(&hash_secret(secret))
            .map(|entry| entry.value().clone())
    }

    /// On a first start (no `admin.key` and no keys), creates an `admin` key and writes its
    /// secret to `<dir>/admin.key` (mode 0600). Returns the path when it created one.
    ///
    /// Crash safety: the secret goes to `admin.key.tmp` first, then the table is saved, then the
    /// temp file is renamed. A crash before the table is saved leaves a temp file whose hash is
    /// unknown (removed at the next start, which starts over); a crash after it leaves one whose
    /// hash is known (renamed at the next start). Either way the admin is never locked out.
    pub fn ensure_admin_key(&self) -> Result<Option<PathBuf>, KeyStoreError> {
        let final_path = self.admin_key_path();
        let tmp_path = self.dir.join(format!("{ADMIN_KEY_FILE}.tmp"));
        if final_path.exists() {
            return Ok(None);
        }
        if tmp_path.exists() {
            let text = fs::read_to_string(&tmp_path).map_err(io_error(&tmp_path))?;
            if self.lookup(text.trim()).is_some() {
                fs::rename(&tmp_path, &final_path).map_err(io_error(&final_path))?;
                sync_dir(&self.dir)?;
                return Ok(Some(final_path));
            }
            fs::remove_file(&tmp_path).map_err(io_error(&tmp_path))?;
        }
        if !self.is_empty() {
            return Ok(None);
        }
        let secret = new_secret();
        write_secret_file(&tmp_path, &secret)?;
        self.insert(
            hash_secret(&secret),
            KeyRecord {
                id: new_key_id(),
                name: "admin".to_string(),
                role: Role::Admin,
                customer_id: None,
                created_at_us: now_us(),
                owner: BOOTSTRAP_OWNER.to_string(),
                created_by: None,
                created_by_owner: None,
            },
        )?;
        fs::rename(&tmp_path, &final_path).map_err(io_error(&final_path))?;
        sync_dir(&self.dir)?;
        Ok(Some(final_path))
    }

    /// Adds a key and saves the table. When saving fails the key is not added.
    pub fn insert(&self, hash: SecretHash, record: KeyRecord) -> Result<(), KeyStoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.by_hash.insert(hash, record);
        self.save_locked().inspect_err(|_| {
            self.by_hash.remove(&hash);
        })
    }

    /// Creates a key with a fresh secret, held by `owner` (the creator's owner when `None`),
    /// created by `creator`; returns it and the secret (shown once, never stored).
    pub fn create(
        &self,
        name: String,
        role: Role,
        customer_id: Option<CustomerId>,
        owner: Option<String>,
        creator: &Caller,
    ) -> Result<(KeyRecord, String), KeyStoreError> {
        debug_assert_eq!(role == Role::Customer, customer_id.is_some());
        let secret = new_secret();
        let record = KeyRecord {
            id: new_key_id(),
            name,
            role,
            customer_id,
            created_at_us: now_us(),
            owner: owner.unwrap_or_else(|| creator.owner.clone()),
            created_by: Some(creator.key_id.clone()),
            created_by_owner: Some(creator.owner.clone()),
        };
        self.insert(hash_secret(&secret), record.clone())?;
        Ok((record, secret))
    }

    /// Revokes the key `id`: it fails from now on, also after a restart. The last `admin` key
    /// cannot be revoked (nobody could manage keys any more).
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, RevokeError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (hash, record) = self
            .by_hash
            .iter()
            .find(|entry| entry.value().id == id)
            .map(|entry| (*entry.key(), entry.value().clone()))
            .ok_or(RevokeError::NotFound)?;
        if record.role == Role::Admin {
            let admins = self
                .by_hash
                .iter()
                .filter(|entry| entry.value().role == Role::Admin)
                .count();
            if admins <= 1 {
                return Err(RevokeError::LastAdmin);
            }
        }
        self.by_hash.remove(&hash);
        if let Err(error) = self.save_locked() {
            self.by_hash.insert(hash, record);
            return Err(error.into());
        }
        Ok(record)
    }

    /// Every key, oldest first (ties by id).
    pub fn list(&self) -> Vec<KeyRecord> {
        let mut keys: Vec<KeyRecord> = self
            .by_hash
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        keys.sort_by(|a, b| (a.created_at_us, &a.id).cmp(&(b.created_at_us, &b.id)));
        keys
    }

    fn save_locked(&self) -> Result<(), KeyStoreError> {
        let mut keys: Vec<StoredKey> = self
            .by_hash
            .iter()
            .map(|entry| {
                let record = entry.value();
                StoredKey {
                    id: record.id.clone(),
                    name: record.name.clone(),
                    role: record.role,
                    customer_id: record.customer_id.map(|c| c.to_string()),
                    created_at_us: record.created_at_us,
                    secret_sha256: hex::encode(entry.key()),
                    owner: Some(record.owner.clone()),
                    created_by: record.created_by.clone(),
                    created_by_owner: record.created_by_owner.clone(),
                }
            })
            .collect();
        keys.sort_by(|a, b| (a.created_at_us, &a.id).cmp(&(b.created_at_us, &b.id)));
        let bytes = serde_json::to_vec_pretty(&StoredKeys {
            version: KEYS_FILE_VERSION,
            keys,
        })
        .map_err(|e| KeyStoreError::Corrupt {
            path: self.keys_path(),
            detail: e.to_string(),
        })?;
        write_atomically(&self.keys_path(), &bytes)?;
        sync_dir(&self.dir)
    }
}

/// Writes `secret` and a newline to a new file readable by its owner only.
fn write_secret_file(path: &Path, secret: &str) -> Result<(), KeyStoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    let tmp = path.with_extension("json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

fn sync_dir(dir: &Path) -> Result<(), KeyStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// A per-key token bucket: `rate_per_s` tokens a second, bursts of up to one second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    /// The live configuration, when the rate follows `http.rate_limit_per_key_per_s` (changed
    /// while running by change management).
    live: Option<Following>,
    /// The rate in effect (the one last read from `live`).
    rate_per_s: AtomicU32,
    buckets: DashMap<String, Bucket>,
}

/// How a limiter follows the live configuration cheaply: every thread has a receiver of its
/// own, so the check per request reads the channel's version (one atomic load, which threads
/// share without contention) and reads the configuration (behind the channel's lock, which
/// threads would contend on) only after a change.
#[derive(Debug)]
struct Following {
    /// What each thread's receiver starts as.
    template: tokio::sync::watch::Receiver<Arc<Config>>,
    per_thread: ThreadLocal<RefCell<tokio::sync::watch::Receiver<Arc<Config>>>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// A fixed rate; `rate_per_s` 0 turns limiting off.
    pub fn new(rate_per_s: u32) -> RateLimiter {
        RateLimiter {
            live: None,
            rate_per_s: AtomicU32::new(rate_per_s),
            buckets: DashMap::new(),
        }
    }

    /// The rate `http.rate_limit_per_key_per_s` of the configuration `live` publishes: a new
    /// value holds from the next request on, and buckets start full again.
    pub fn following(live: tokio::sync::watch::Receiver<Arc<Config>>) -> RateLimiter {
        let rate_per_s = live.borrow().http.rate_limit_per_key_per_s;
        RateLimiter {
            live: Some(Following {
                template: live,
                per_thread: ThreadLocal::new(),
            }),
            rate_per_s: AtomicU32::new(rate_per_s),
            buckets: DashMap::new(),
        }
    }

    /// The rate in effect now.
    fn rate_per_s(&self) -> u32 {
        if let Some(live) = &self.live {
            let mine = live
                .per_thread
                .get_or(|| RefCell::new(live.template.clone()));
            let mut receiver = mine.borrow_mut();
            // A closed channel (the server stopping) keeps the last rate.
            if receiver.has_changed().unwrap_or(false) {
                let rate_per_s = receiver.borrow_and_update().http.rate_limit_per_key_per_s;
                if self.rate_per_s.swap(rate_per_s, Ordering::Relaxed) != rate_per_s {
                    self.buckets.clear();
                }
            }
        }
        self.rate_per_s.load(Ordering::Relaxed)
    }

    /// Drops the bucket of a revoked key.
    pub fn forget(&self, key_id: &str) {
        self.buckets.remove(key_id);
    }

    /// Takes one token for `key_id`; false when the key is over its rate.
    pub fn allow(&self, key_id: &str, now: Instant) -> bool {
        let rate_per_s = self.rate_per_s();
        if rate_per_s == 0 {
            return true;
        }
        let rate = f64::from(rate_per_s);
        let mut bucket = self.buckets.entry(key_id.to_string()).or_insert(Bucket {
            tokens: rate,
            refilled_at: now,
        });
        let elapsed_s = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed_s * rate).min(rate);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything [`authenticate`] needs, shared by all workers.
#[derive(Debug)]
pub struct Auth {
    pub keys: KeyStore,
    pub limiter: RateLimiter,
}

/// The authenticated key behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub customer_id: Option<CustomerId>,
    /// The key's owner ([`KeyRecord::owner`]).
    pub owner: String,
    /// The owner of the key that created this one (`None` for the first admin key).
    pub created_by_owner: Option<String>,
}

impl From<KeyRecord> for Caller {
    fn from(record: KeyRecord) -> Caller {
        Caller {
            key_id: record.id,
            role: record.role,
            customer_id: record.customer_id,
            owner: record.owner,
            created_by_owner: record.created_by_owner,
        }
    }
}

impl Caller {
    /// Whether this caller is another person than `owner` for four-eyes approval: its owner
    /// differs, and its key was not created by a key of `owner` (who could otherwise mint a
    /// second identity for themselves).
    pub fn is_other_person_than(&self, owner: &str) -> bool {
        self.owner != owner && self.created_by_owner.as_deref() != Some(owner)
    }

    /// Allows the request when the caller's role is in `allowed`. Refusals are 403, except for
    /// `customer` keys, which get 404: to them, whatever they may not touch does not exist.
    pub fn require(&self, allowed: RoleSet) -> Result<(), ApiError> {
        if allowed.contains(self.role) {
            return Ok(());
        }
        if self.role == Role::Customer {
            return Err(ApiError::not_found());
        }
        Err(ApiError::Forbidden(format!(
            "a key with role {} may not do this",
            self.role
        )))
    }

    /// For a `customer` key, the one customer it may see; `None` for every other role.
    /// A customer key without a customer sees nothing (`Err(not_found)`).
    pub fn customer_scope(&self) -> Result<Option<CustomerId>, ApiError> {
        match (self.role, self.customer_id) {
            (Role::Customer, Some(id)) => Ok(Some(id)),
            (Role::Customer, None) => Err(ApiError::not_found()),
            _ => Ok(None),
        }
    }

    /// Whether this caller sees shipping addresses and customer contact data in clear: `admin`,
    /// `frontend`, `logistics` (who ship) and a `customer` key (which sees only its own);
    /// `analyst`, `operator` and `auditor` see them masked (API.md, "Authentication and roles").
    pub fn sees_personal_data(&self) -> bool {
        matches!(
            self.role,
            Role::Admin | Role::Frontend | Role::Logistics | Role::Customer
        )
    }

    /// Checks that an object owned by `owner` is visible to this caller (404 otherwise).
    pub fn may_see_customer(&self, owner: CustomerId) -> Result<(), ApiError> {
        match self.customer_scope()? {
            Some(own) if own != owner => Err(ApiError::not_found()),
            _ => Ok(()),
        }
    }
}

/// The secret of an `Authorization: Bearer <secret>` header, given the header's bytes (`None`:
/// no header).
pub fn bearer_secret(header: Option<&[u8]>) -> Result<&str, ApiError> {
    let value = header
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <key>".into()))?;
    let malformed =
        || ApiError::Unauthorized("malformed Authorization header; expected Bearer <key>".into());
    let text = crate::validate::header_text(value).ok_or_else(malformed)?;
    let (scheme, secret) = text.trim().split_once(' ').ok_or_else(malformed)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(malformed());
    }
    Ok(secret)
}

/// Authenticates a request by its `Authorization` header (`None`: absent) against the key
/// table, and spends one unit of the key's rate limit. `peer` and `path` only go into the
/// log line of a refusal.
pub fn authenticate(
    auth: &Auth,
    authorization: Option<&[u8]>,
    peer: Option<std::net::SocketAddr>,
    path: &str,
) -> Result<Caller, ApiError> {
    let secret = bearer_secret(authorization)?;
    let Some(record) = auth.keys.lookup(secret) else {
        // At debug: the WARN line is the audit's, once per peer and window (`AuditLog::refusal_from`).
        tracing::debug!(
            message = "Authentication failed: unknown API key.",
            peer = ?peer,
            path
        );
        return Err(ApiError::Unauthorized("unknown or revoked API key".into()));
    };
    if !auth.limiter.allow(&record.id, Instant::now()) {
        return Err(ApiError::RateLimited);
    }
    Ok(Caller::from(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn first_start_creates_one_admin_key_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let path = store.ensure_admin_key().unwrap().expect("created");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1);
        let secret = text.trim();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let record = store.lookup(secret).unwrap();
        assert_eq!(record.role, Role::Admin);
        assert_eq!(record.name, "admin");
        assert!(record.id.starts_with("key_"));

        // The table on disk holds the hash, never the secret.
        let table = fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!table.contains(secret));
        assert!(table.contains(&hex::encode(hash_secret(secret))));

        // A restart loads the same key and creates no other.
        let again = KeyStore::open(dir.path()).unwrap();
        assert_eq!(again.ensure_admin_key().unwrap(), None);
        assert_eq!(again.len(), 1);
        assert_eq!(again.lookup(secret).unwrap(), record);

        // Deleting admin.key does not mint a second admin while keys exist.
        fs::remove_file(&path).unwrap();
        let third = KeyStore::open(dir.path()).unwrap();
        assert_eq!(third.ensure_admin_key().unwrap(), None);
        assert_eq!(third.len(), 1);
    }

    #[test]
    fn an_interrupted_bootstrap_is_finished_or_started_over() {
        // Crash after saving the table: the temp secret is known and gets renamed.
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let path = store.ensure_admin_key().unwrap().unwrap();
        let tmp = dir.path().join("admin.key.tmp");
        fs::rename(&path, &tmp).unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert_eq!(store.ensure_admin_key().unwrap(), Some(path.clone()));
        assert!(store
            .lookup(fs::read_to_string(&path).unwrap().trim())
            .is_some());

        // Crash before saving the table: the temp secret is unknown and is replaced.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("admin.key.tmp"), "odk_stale\n").unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let path = store.ensure_admin_key().unwrap().unwrap();
        let secret = fs::read_to_string(&path).unwrap();
        assert_ne!(secret.trim(), "odk_stale");
        assert!(store.lookup(secret.trim()).is_some());
        assert!(!dir.path().join("admin.key.tmp").exists());
    }

    #[test]
    fn keys_are_created_listed_and_revoked_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let admin_path = store.ensure_admin_key().unwrap().unwrap();
        let admin_secret = fs::read_to_string(admin_path).unwrap().trim().to_string();
        let admin = store.lookup(&admin_secret).unwrap();
        assert_eq!(
            (admin.owner.as_str(), admin.created_by.as_deref()),
            (BOOTSTRAP_OWNER, None)
        );
        let creator = Caller::from(admin.clone());
        let (front, front_secret) = store
            .create(
                "shop".into(),
                Role::Frontend,
                None,
                Some("web team".into()),
                &creator,
            )
            .unwrap();
        let (buyer, buyer_secret) = store
            .create(
                "buyer".into(),
                Role::Customer,
                Some(CustomerId(7)),
                None,
                &creator,
            )
            .unwrap();
        assert_eq!(front.owner, "web team");
        assert_eq!(
            buyer.owner, BOOTSTRAP_OWNER,
            "the creator's owner by default"
        );
        assert_eq!(buyer.created_by.as_deref(), Some(admin.id.as_str()));
        assert_ne!(front_secret, buyer_secret);
        assert_eq!(store.lookup(&front_secret).unwrap(), front);
        let listed: Vec<String> = store.list().into_iter().map(|k| k.id).collect();
        assert_eq!(
            listed,
            [admin.id.clone(), front.id.clone(), buyer.id.clone()]
        );
        let table = fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!table.contains(&front_secret) && !table.contains(&buyer_secret));

        assert_eq!(store.revoke(&front.id).unwrap(), front);
        assert!(store.lookup(&front_secret).is_none(), "revoked at once");
        assert!(matches!(
            store.revoke(&front.id),
            Err(RevokeError::NotFound)
        ));
        assert!(matches!(
            store.revoke(&admin.id),
            Err(RevokeError::LastAdmin)
        ));
        assert!(store.lookup(&admin_secret).is_some());

        // After a restart: still revoked, the others still work.
        let again = KeyStore::open(dir.path()).unwrap();
        assert!(again.lookup(&front_secret).is_none());
        assert_eq!(
            again.lookup(&buyer_secret).unwrap(),
            buyer,
            "owners survive a restart"
        );
        assert_eq!(again.len(), 2);

        // With a second admin, the first may go.
        let (second, _) = again
            .create("ops".into(), Role::Admin, None, None, &creator)
            .unwrap();
        again.revoke(&admin.id).unwrap();
        assert!(matches!(
            again.revoke(&second.id),
            Err(RevokeError::LastAdmin)
        ));
    }

    #[test]
    fn rate_limiter_refills_per_second() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(limiter.allow("k", t0));
        assert!(limiter.allow("k", t0));
        assert!(!limiter.allow("k", t0));
        assert!(limiter.allow("other", t0), "buckets are per key");
        assert!(limiter.allow("k", t0 + Duration::from_millis(500)));
        assert!(!limiter.allow("k", t0 + Duration::from_millis(500)));
        let off = RateLimiter::new(0);
        assert!((0..1000).all(|_| off.allow("k", t0)));
    }

    #[test]
    fn a_following_limiter_takes_a_new_rate_from_the_next_request_on() {
        let mut config = Config::load_with_env(
            None,
            figment::providers::Env::prefixed("ORDERD_AUTH_TEST__"),
        )
        .unwrap();
        config.http.rate_limit_per_key_per_s = 0;
        let (live, receiver) = tokio::sync::watch::channel(Arc::new(config.clone()));
        let limiter = RateLimiter::following(receiver);
        let t0 = Instant::now();
        assert!((0..100).all(|_| limiter.allow("k", t0)), "off");
        config.http.rate_limit_per_key_per_s = 1;
        live.send_replace(Arc::new(config.clone()));
        assert!(limiter.allow("k", t0), "a full bucket");
        assert!(!limiter.allow("k", t0), "one a second");
        config.http.rate_limit_per_key_per_s = 0;
        live.send_replace(Arc::new(config));
        assert!((0..100).all(|_| limiter.allow("k", t0)), "off again");
    }

    fn caller(role: Role, customer_id: Option<CustomerId>) -> Caller {
        Caller {
            key_id: "key_1".into(),
            role,
            customer_id,
            owner: "ann".into(),
            created_by_owner: Some(BOOTSTRAP_OWNER.into()),
        }
    }

    #[test]
    fn another_person_is_another_owner_whose_key_that_owner_did_not_create() {
        let by = |owner: &str, creator: Option<&str>| Caller {
            owner: owner.into(),
            created_by_owner: creator.map(str::to_string),
            ..caller(Role::Admin, None)
        };
        assert!(by("bob", Some("bootstrap")).is_other_person_than("ann"));
        assert!(
            !by("ann", Some("bootstrap")).is_other_person_than("ann"),
            "same owner"
        );
        assert!(
            !by("ann-2", Some("ann")).is_other_person_than("ann"),
            "a key ann minted for another name"
        );
    }

    #[test]
    fn refusals_are_403_but_404_for_customer_keys() {
        let only_admin = RoleSet::of(&[Role::Admin]);
        assert!(caller(Role::Admin, None).require(only_admin).is_ok());
        assert!(matches!(
            caller(Role::Analyst, None).require(only_admin),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            caller(Role::Customer, Some(CustomerId(1))).require(only_admin),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            caller(Role::Admin, None).require(RoleSet::NONE),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn customer_keys_see_only_their_own_objects() {
        let own = CustomerId(7);
        let c = caller(Role::Customer, Some(own));
        assert!(c.may_see_customer(own).is_ok());
        assert!(matches!(
            c.may_see_customer(CustomerId(8)),
            Err(ApiError::NotFound(_))
        ));
        assert!(caller(Role::Customer, None).may_see_customer(own).is_err());
        assert!(caller(Role::Frontend, None).may_see_customer(own).is_ok());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_secret(Some(b"bearer  odk_abc ")).unwrap(), "odk_abc");
        for bad in [
            "odk_abc",
            "Basic odk_abc",
            "Bearer ",
            "Bearer",
            "Bearer odk\u{7f}",
        ] {
            assert!(
                matches!(
                    bearer_secret(Some(bad.as_bytes())),
                    Err(ApiError::Unauthorized(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            bearer_secret(None),
            Err(ApiError::Unauthorized(_))
        ));
    }
}

//! Customer data keys (issue 19 item 6, erasure by crypto-shredding): one AES-256 key per
//! customer, wrapped by the master key, kept in a key store file of its own,
//! `<data_dir>/customer.keys`, outside RocksDB, so that the data backups (RocksDB's
//! `BackupEngine`) never hold a customer key, and destroying one makes every copy of that
//! customer's sealed data unreadable at once: the live store, the log, snapshots and every
//! backup.
//!
//! Architecture invariants:
//! - A customer key exists in clear only in this process's memory. On disk it is wrapped
//!   (AES-256-GCM under the master key, the customer id as associated data).
//! - The key store is copied only in its current form: [`mirror`] keeps one copy beside the
//!   backups (`<backup.dir>/customer.keys`, refreshed at every backup, edited at every
//!   erasure) and the backup worker merges that copy into the off-site store's one. No copy
//!   is kept per backup, so an erased key leaves every copy at the erasure (local) or the next
//!   off-site copy, which the erasure itself requests.
//! - Erasure wins every merge: a key id with a tombstone (`x`) is dropped wherever the two
//!   meet, so an older copy cannot bring an erased key back.
//! - No key, wrapped key, plaintext or ciphertext is logged.
//!
//! The file is text, one record per line, appended with an fsync per new key:
//! `k <customer id, 16 hex digits> <base64url: master key id (8) || nonce (12) || sealed key
//! and tag (48)>` or `x <customer id>` (erased: the key is gone). An erasure rewrites the
//! whole file without the key (temporary file, fsync, rename, directory fsync), so the key's
//! bytes leave the file at once; what the file system keeps of the old blocks is an operator's
//! matter (docs/OPERATIONS.md). A torn last line (a crash during an append) is dropped at
//! load: its key sealed nothing yet, as the customer is created only after the append.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;

/// The key store's file name, in the data directory and beside the backups.
pub const CUSTOMER_KEYS_FILE: &str = "customer.keys";
/// Most customer keys (live and erased) one key store holds: 2^32, far above what a single
/// node stores; a bound so that a corrupt file cannot make the load allocate without end.
pub const CUSTOMER_KEYS_MAX: usize = 1 << 32;

/// First line of every key store file.
const HEADER: &str = "# orderd customer keys v1";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const MASTER_ID_BYTES: usize = 8;
const WRAPPED_BYTES: usize = MASTER_ID_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES;

/// Why the key store could not be read or written. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} line {line}: {detail}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error(
        "{path}: customer keys are wrapped under master key id(s) {}, which are not configured",
        ids.join(", ")
    )]
    UnknownMaster { path: PathBuf, ids: Vec<String> },
    #[error("customer {0:016x} is erased: it can have no key again")]
    Erased(u64),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A master key as the key store needs it: its id and its bytes.
#[derive(Clone)]
pub struct Wrapper {
    pub id: [u8; MASTER_ID_BYTES],
    pub key: [u8; KEY_BYTES],
}

impl Wrapper {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key))
    }
}

fn aad(customer: u64) -> Vec<u8> {
    format!("orderd customer key {customer:016x}").into_bytes()
}

/// `master id || nonce || AES-GCM(master, key)`, base64url.
fn wrap(master: &Wrapper, customer: u64, key: &[u8; KEY_BYTES]) -> String {
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let sealed = master
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: &aad(customer),
            },
        )
        .expect("AES-GCM encrypts 32 bytes");
    let mut record = Vec::with_capacity(WRAPPED_BYTES);
    record.extend_from_slice(&master.id);
    record.extend_from_slice(&nonce);
    record.extend_from_slice(&sealed);
    debug_assert_eq!(record.len(), WRAPPED_BYTES);
    URL_SAFE_NO_PAD.encode(record)
}

/// The master key id a wrapped key names, and the key when `masters` holds that master.
fn unwrap(
    masters: &[Wrapper],
    customer: u64,
    wrapped: &str,
) -> Result<([u8; MASTER_ID_BYTES], Option<[u8; KEY_BYTES]>), String> {
    let record = URL_SAFE_NO_PAD
        .decode(wrapped)
        .map_err(|_| "malformed base64".to_string())?;
    if record.len() != WRAPPED_BYTES {
        return Err(format!("a wrapped key of {} bytes", record.len()));
    }
    let mut id = [0u8; MASTER_ID_BYTES];
    id.copy_from_slice(&record[..MASTER_ID_BYTES]);
    let Some(master) = masters.iter().find(|m| m.id == id) else {
        return Ok((id, None));
    };
    let nonce = &record[MASTER_ID_BYTES..MASTER_ID_BYTES + NONCE_BYTES];
    let bytes = master
        .cipher()
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &record[MASTER_ID_BYTES + NONCE_BYTES..],
                aad: &aad(customer),
            },
        )
        .map_err(|_| "authentication failed under its master key".to_string())?;
    let key: [u8; KEY_BYTES] = bytes
        .try_into()
        .map_err(|_| "wrong key length".to_string())?;
    Ok((id, Some(key)))
}

/// A key store's records as text: wrapped keys and tombstones by customer id. Reading and
/// merging need no master key (the backup worker and `orderctl` merge copies with it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    pub keys: BTreeMap<u64, String>,
    pub erased: BTreeSet<u64>,
}

impl Records {
    /// Parses a key store file. A last line without its newline (a torn append) is dropped;
    /// anything else malformed is an error naming the line.
    pub fn parse(path: &Path, text: &str) -> Result<Records, KeyStoreError> {
        let mut records = Records::default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        if complete.len() < text.len() {
            tracing::warn!(
                message = "Dropping a torn last line of the customer key store (a crash during an append).",
                path = %path.display()
            );
        }
        for (n, line) in complete.lines().enumerate() {
            let corrupt = |detail: &str| KeyStoreError::Corrupt {
                path: path.to_path_buf(),
                line: n + 1,
                detail: detail.to_string(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(' ');
            let kind = parts.next().unwrap_or_default();
            let id = parts
                .next()
                .filter(|id| id.len() == 16)
                .and_then(|id| u64::from_str_radix(id, 16).ok())
                .ok_or_else(|| corrupt("no customer id"))?;
            match (kind, parts.next(), parts.next()) {
                ("k", Some(wrapped), None) if !records.erased.contains(&id) => {
                    if records.keys.len() >= CUSTOMER_KEYS_MAX {
                        return Err(corrupt("more keys than CUSTOMER_KEYS_MAX"));
                    }
                    records.keys.insert(id, wrapped.to_string());
                }
                ("k", Some(_), None) => {}
                ("x", None, None) => {
                    records.keys.remove(&id);
                    records.erased.insert(id);
                }
                _ => return Err(corrupt("not a key store record")),
            }
        }
        Ok(records)
    }

    /// Reads a key store file; empty when it does not exist.
    pub fn read(path: &Path) -> Result<Records, KeyStoreError> {
        match fs::read_to_string(path) {
            Ok(text) => Records::parse(path, &text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Records::default()),
            Err(error) => Err(io_error(path)(error)),
        }
    }

    /// Adds `other`'s keys and tombstones; a tombstone on either side drops the key. A key in
    /// both takes `other`'s wrapping (pass the newer copy as `other`: after a master key
    /// rotation it is wrapped under the newer master key).
    pub fn merge(&mut self, other: Records) {
        self.keys.extend(other.keys);
        self.erased.extend(other.erased);
        let erased = &self.erased;
        self.keys.retain(|id, _| !erased.contains(id));
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(32 + self.keys.len() * 120 + self.erased.len() * 20);
        text.push_str(HEADER);
        text.push('\n');
        for (id, wrapped) in &self.keys {
            debug_assert!(!self.erased.contains(id));
            text.push_str(&format!("k {id:016x} {wrapped}\n"));
        }
        for id in &self.erased {
            text.push_str(&format!("x {id:016x}\n"));
        }
        text
    }

    /// Replaces the file at `path` with these records: temporary file, fsync, rename, directory
    /// fsync, so a crash leaves the old file or the new one.
    pub fn write_atomic(&self, path: &Path) -> Result<(), KeyStoreError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        file.write_all(self.render().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp))?;
        fs::rename(&tmp, path).map_err(io_error(path))?;
        sync_dir(path)
    }
}

fn sync_dir(path: &Path) -> Result<(), KeyStoreError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&dir))
}

/// Records that `customer` is erased in the copy at `path` (its key dropped, a tombstone
/// added), when that copy exists: the copy beside the backups at an erasure.
pub fn erase_in_copy(path: &Path, customer: u64) -> Result<(), KeyStoreError> {
    if !path.exists() {
        return Ok(());
    }
    let mut records = Records::read(path)?;
    records.keys.remove(&customer);
    records.erased.insert(customer);
    records.write_atomic(path)
}

/// What the key store knows of a customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Its key, in clear.
    Live([u8; KEY_BYTES]),
    /// Erased: its key is destroyed.
    Erased,
    /// No key: a customer created before customer keys (sealed under the shared data keys),
    /// or none at all.
    None,
}

struct Inner {
    keys: std::collections::HashMap<u64, [u8; KEY_BYTES]>,
    erased: std::collections::HashSet<u64>,
    /// Wrapped form of every live key as it is in the file (rewritten at an erasure).
    records: Records,
    /// The open file, appended to.
    file: File,
}

/// The live key store of a data directory.
pub struct CustomerKeys {
    path: PathBuf,
    /// The copy beside the backups (`<backup.dir>/customer.keys`).
    mirror: Option<PathBuf>,
    master: RwLock<Wrapper>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CustomerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerKeys")
            .field("path", &self.path)
            .field("mirror", &self.mirror)
            .finish_non_exhaustive()
    }
}

impl CustomerKeys {
    /// Opens (or creates) the key store at `path`. Every key is unwrapped with one of
    /// `masters` (the first is the current one); keys under another known master are
    /// re-wrapped under the current one. A key under an unknown master is an error.
    pub fn open(
        path: PathBuf,
        mirror: Option<PathBuf>,
        masters: &[Wrapper],
    ) -> Result<CustomerKeys, KeyStoreError> {
        let current = masters.first().expect("a current master key").clone();
        let mut records = Records::read(&path)?;
        let mut keys = std::collections::HashMap::with_capacity(records.keys.len());
        let mut unknown = BTreeSet::new();
        let mut foreign = false;
        for (id, wrapped) in &records.keys {
            let (master, key) =
                unwrap(masters, *id, wrapped).map_err(|detail| KeyStoreError::Corrupt {
                    path: path.clone(),
                    line: 0,
                    detail: format!("customer {id:016x}: {detail}"),
                })?;
            match key {
                Some(key) => {
                    foreign |= master != current.id;
                    keys.insert(*id, key);
                }
                None => {
                    unknown.insert(hex::encode(master));
                }
            }
        }
        if !unknown.is_empty() {
            return Err(KeyStoreError::UnknownMaster {
                path,
                ids: unknown.into_iter().collect(),
            });
        }
        let fresh = !path.exists();
        if foreign || fresh {
            if foreign {
                for (id, key) in &keys {
                    records.keys.insert(*id, wrap(&current, *id, key));
                }
                tracing::info!(
                    message = "Re-wrapped customer keys under the current master key.",
                    keys = keys.len()
                );
            }
            records.write_atomic(&path)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let erased = records.erased.iter().copied().collect();
        Ok(CustomerKeys {
            path,
            mirror,
            master: RwLock::new(current),
            inner: Mutex::new(Inner {
                keys,
                erased,
                records,
                file,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the store knows of `customer`.
    pub fn state(&self, customer: u64) -> KeyState {
        let inner = self.lock();
        if let Some(key) = inner.keys.get(&customer) {
            KeyState::Live(*key)
        } else if inner.erased.contains(&customer) {
            KeyState::Erased
        } else {
            KeyState::None
        }
    }

    /// Whether `customer` is erased.
    pub fn is_erased(&self, customer: u64) -> bool {
        self.lock().erased.contains(&customer)
    }

    /// Makes a new key for `customer` (replacing an unused one a crash left for a reused id),
    /// durable (appended and fsynced) before it returns. An erased customer gets none.
    pub fn create(&self, customer: u64) -> Result<[u8; KEY_BYTES], KeyStoreError> {
        self.append(customer, true)
    }

    /// [`CustomerKeys::create`] without the fsync, for a migration that makes many keys and
    /// then calls [`CustomerKeys::sync`] once, before anything is sealed under them.
    pub fn create_unsynced(&self, customer: u64) -> Result<[u8; KEY_BYTES], KeyStoreError> {
        self.append(customer, false)
    }

    /// Makes every appended key durable.
    pub fn sync(&self) -> Result<(), KeyStoreError> {
        self.lock().file.sync_data().map_err(io_error(&self.path))
    }

    fn append(&self, customer: u64, sync: bool) -> Result<[u8; KEY_BYTES], KeyStoreError> {
        let mut key = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut key);
        let wrapped = wrap(
            &self.master.read().unwrap_or_else(|p| p.into_inner()),
            customer,
            &key,
        );
        let mut inner = self.lock();
        if inner.erased.contains(&customer) {
            return Err(KeyStoreError::Erased(customer));
        }
        let line = format!("k {customer:016x} {wrapped}\n");
        inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| if sync { inner.file.sync_data() } else { Ok(()) })
            .map_err(io_error(&self.path))?;
        inner.records.keys.insert(customer, wrapped);
        inner.keys.insert(customer, key);
        Ok(key)
    }

    /// Destroys `customer`'s key: the file is rewritten without it (with a tombstone) and
    /// synced, then the copy beside the backups is edited the same way. Idempotent; a customer
    /// without a key (created before customer keys) gets its tombstone too.
    pub fn erase(&self, customer: u64) -> Result<(), KeyStoreError> {
        let mut inner = self.lock();
        if !inner.erased.contains(&customer) || inner.keys.contains_key(&customer) {
            let mut records = inner.records.clone();
            records.keys.remove(&customer);
            records.erased.insert(customer);
            records.write_atomic(&self.path)?;
            let file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(io_error(&self.path))?;
            inner.records = records;
            inner.file = file;
            inner.keys.remove(&customer);
            inner.erased.insert(customer);
        }
        drop(inner);
        if let Some(mirror) = &self.mirror {
            erase_in_copy(mirror, customer)?;
        }
        Ok(())
    }

    /// Re-wraps every key under `master` (after a master key rotation): one atomic rewrite.
    pub fn rewrap(&self, master: Wrapper) -> Result<u64, KeyStoreError> {
        let mut inner = self.lock();
        let mut records = Records {
            keys: BTreeMap::new(),
            erased: inner.records.erased.clone(),
        };
        for (id, key) in &inner.keys {
            records.keys.insert(*id, wrap(&master, *id, key));
        }
        records.write_atomic(&self.path)?;
        inner.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_error(&self.path))?;
        let count = records.keys.len() as u64;
        inner.records = records;
        *self.master.write().unwrap_or_else(|p| p.into_inner()) = master;
        Ok(count)
    }

    /// Writes the current store over the copy beside the backups (at every backup, after its
    /// checkpoint, so the copy holds the key of every customer the backup holds), merged with
    /// that copy's tombstones. Answers the copy's path.
    pub fn refresh_mirror(&self) -> Result<Option<PathBuf>, KeyStoreError> {
        let Some(mirror) = &self.mirror else {
            return Ok(None);
        };
        let mut records = self.lock().records.clone();
        let old = Records::read(mirror).unwrap_or_else(|error| {
            tracing::warn!(message = "The copy of the customer key store beside the backups is unreadable; replacing it.", %error);
            Records::default()
        });
        records.erased.extend(old.erased);
        let erased = records.erased.clone();
        records.keys.retain(|id, _| !erased.contains(id));
        records.write_atomic(mirror)?;
        Ok(Some(mirror.clone()))
    }

    /// How many live keys and tombstones the store holds.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.keys.len(), inner.erased.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> Wrapper {
        let mut key = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut key);
        let mut id = [0u8; MASTER_ID_BYTES];
        OsRng.fill_bytes(&mut id);
        Wrapper { id, key }
    }

    #[test]
    fn keys_survive_a_reopen_and_an_erased_key_leaves_the_file_and_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CUSTOMER_KEYS_FILE);
        let mirror = dir.path().join("mirror.keys");
        let m = master();
        let store =
            CustomerKeys::open(path.clone(), Some(mirror.clone()), std::slice::from_ref(&m))
                .unwrap();
        let a = store.create(1).unwrap();
        let b = store.create(2).unwrap();
        assert_ne!(a, b);
        store.refresh_mirror().unwrap();
        let wrapped_a = Records::read(&path).unwrap().keys[&1].clone();
        assert!(fs::read_to_string(&mirror).unwrap().contains(&wrapped_a));
        store.erase(1).unwrap();
        store.erase(1).unwrap();
        assert_eq!(store.state(1), KeyState::Erased);
        assert_eq!(store.state(2), KeyState::Live(b));
        assert_eq!(store.state(3), KeyState::None);
        for file in [&path, &mirror] {
            let text = fs::read_to_string(file).unwrap();
            assert!(!text.contains(&wrapped_a), "{}", file.display());
            assert!(text.contains("x 0000000000000001"));
        }
        assert!(matches!(store.create(1), Err(KeyStoreError::Erased(1))));
        drop(store);
        let reopened = CustomerKeys::open(path.clone(), None, std::slice::from_ref(&m)).unwrap();
        assert_eq!(reopened.state(1), KeyState::Erased);
        assert_eq!(reopened.state(2), KeyState::Live(b));
        // Another master key cannot open it.
        let error = CustomerKeys::open(path, None, &[master()]).unwrap_err();
        assert!(
            matches!(error, KeyStoreError::UnknownMaster { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_torn_append_is_dropped_and_a_tombstone_wins_every_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CUSTOMER_KEYS_FILE);
        let m = master();
        let store = CustomerKeys::open(path.clone(), None, std::slice::from_ref(&m)).unwrap();
        let a = store.create(7).unwrap();
        drop(store);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"k 0000000000000008 AAAA").unwrap();
        let reopened = CustomerKeys::open(path.clone(), None, &[m]).unwrap();
        assert_eq!(reopened.state(7), KeyState::Live(a));
        assert_eq!(reopened.state(8), KeyState::None);
        let old = Records::read(&path).unwrap();
        let mut erased = Records::default();
        erased.erased.insert(7);
        let mut merged = old.clone();
        merged.merge(erased.clone());
        assert!(merged.keys.is_empty());
        erased.merge(old);
        assert_eq!(erased, merged);
        // A malformed line is an error naming it.
        fs::write(&path, "# x\nk zz\n").unwrap();
        assert!(matches!(
            Records::read(&path),
            Err(KeyStoreError::Corrupt { line: 2, .. })
        ));
    }

    #[test]
    fn a_rewrap_moves_every_key_to_the_new_master() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CUSTOMER_KEYS_FILE);
        let (old, new) = (master(), master());
        let store = CustomerKeys::open(path.clone(), None, std::slice::from_ref(&old)).unwrap();
        let a = store.create(1).unwrap();
        store.erase(2).unwrap();
        assert_eq!(store.rewrap(new.clone()).unwrap(), 1);
        let b = store.create(3).unwrap();
        drop(store);
        let reopened = CustomerKeys::open(path, None, &[new]).unwrap();
        assert_eq!(reopened.state(1), KeyState::Live(a));
        assert_eq!(reopened.state(2), KeyState::Erased);
        assert_eq!(reopened.state(3), KeyState::Live(b));
    }
}

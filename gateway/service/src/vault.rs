//! Personal data at rest: the master key (from `ORDERD_MASTER_KEY`, a systemd credential
//! `master.key`, or a key file outside the data directory), the data keys it wraps (in the engine's `control` column family), sealing
//! and opening of personal strings with AES-256-GCM, and master key rotation while serving.
//!
//! Architecture invariants:
//! - The engine never sees personal data in plaintext: the gateway seals every personal string
//!   before a command reaches the engine and opens it when it maps a view onto a response. The
//!   engine stores sealed strings as ordinary strings, so its log, snapshots and therefore
//!   backups hold ciphertext only.
//! - No key, no plaintext and no ciphertext is ever logged; logs carry key ids and counts.
//! - The master key never lives in the data directory ([`MasterKeySource::resolve`] refuses a
//!   key file inside it), so a copy of the data directory alone reveals nothing.
//!
//! A sealed string is `"\u{1}" <data key id, hex> ":" <base64url, no padding, of nonce (12
//! bytes) || ciphertext || tag (16 bytes)>`, with the field name (e.g. `customer.email`) as
//! associated data, so a value moved to another field fails to open. Validation rejects control
//! characters in personal fields, so no client plaintext can look sealed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use orderd_engine::backup::{ManifestKey, ManifestKeys};
use orderd_engine::{
    CustomerId, CustomerUpdate, CustomerView, NewCustomer, OrderView, PersonalField, ResealFn,
    Storage,
};
use orderd_storage::{Family, StorageError, Write};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::customer_keys::{CustomerKeys, KeyState, KeyStoreError, Wrapper};
use crate::error::ApiError;

/// Environment variable holding the master key (64 hex digits); it replaces the key file.
pub const MASTER_KEY_ENV: &str = "ORDERD_MASTER_KEY";
/// Environment variable holding the previous master key while an operator rotates an
/// environment key: data keys wrapped under it are re-wrapped under `ORDERD_MASTER_KEY` at start.
pub const MASTER_KEY_PREVIOUS_ENV: &str = "ORDERD_MASTER_KEY_PREVIOUS";
/// Environment variable systemd sets to the directory of the service's credentials
/// (`LoadCredential=`).
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";
/// Name of the master key credential (`LoadCredential=master.key:/etc/orderd/master.key`).
pub const MASTER_KEY_CREDENTIAL: &str = "master.key";
/// Name of the previous master key's credential while an operator rotates a credential key.
pub const MASTER_KEY_PREVIOUS_CREDENTIAL: &str = "master.key.previous";
/// First character of every sealed string (a control character, which validation refuses in
/// client text).
pub const SEALED_MARK: char = '\u{1}';
/// Most data keys a data directory may hold; every rotation adds one.
pub const DATA_KEYS_MAX: usize = 65_536;

/// Bytes of a master key and of a data key (AES-256).
const KEY_BYTES: usize = 32;
/// Bytes of an AES-GCM nonce (random per sealed value).
const NONCE_BYTES: usize = 12;
/// Bytes of an AES-GCM tag.
const TAG_BYTES: usize = 16;
/// Bytes of a master key id: the first bytes of SHA-256 of the key.
const MASTER_KEY_ID_BYTES: usize = 8;
/// Storage keys of wrapped data keys: `dek/` and the id as 8 hex digits (sorted by id).
const DATA_KEY_PREFIX: &[u8] = b"dek/";
/// The first key after every `dek/…` key (`'0'` follows `'/'`).
const DATA_KEY_PREFIX_END: &[u8] = b"dek0";
/// Format version of a wrapped data key record.
const WRAPPED_VERSION: u8 = 1;
/// A wrapped data key: version, master key id, nonce, AES-GCM(master, data key) with its tag.
const WRAPPED_BYTES: usize = 1 + MASTER_KEY_ID_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES;
/// Shortest base64 part of a sealed string: nonce and tag of an empty plaintext.
const SEALED_BODY_CHARS_MIN: usize = ((NONCE_BYTES + TAG_BYTES) * 4).div_ceil(3);
/// Longest data key id in a sealed string, in hex digits (a `u32`).
const DATA_KEY_ID_HEX_MAX: usize = 8;

/// A personal field; its name is the associated data of its sealed values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    CustomerName,
    CustomerEmail,
    CustomerPhone,
    CustomerAddress,
    OrderShippingAddress,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::CustomerName,
        Field::CustomerEmail,
        Field::CustomerPhone,
        Field::CustomerAddress,
        Field::OrderShippingAddress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::CustomerName => "customer.name",
            Field::CustomerEmail => "customer.email",
            Field::CustomerPhone => "customer.phone",
            Field::CustomerAddress => "customer.address",
            Field::OrderShippingAddress => "order.shipping_address",
        }
    }
}

impl From<PersonalField> for Field {
    fn from(field: PersonalField) -> Field {
        match field {
            PersonalField::CustomerName => Field::CustomerName,
            PersonalField::CustomerEmail => Field::CustomerEmail,
            PersonalField::CustomerPhone => Field::CustomerPhone,
            PersonalField::CustomerAddress => Field::CustomerAddress,
            PersonalField::OrderShippingAddress => Field::OrderShippingAddress,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why keys could not be loaded or rotated, or a value could not be opened. No variant carries
/// key material or personal data.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the master key file {key_file} lies inside the data directory {data_dir}; move it \
         elsewhere (security.master_key_file) so that the data and its key never travel together"
    )]
    KeyFileInDataDir {
        key_file: PathBuf,
        data_dir: PathBuf,
    },
    #[error("invalid master key in {origin}: {detail}")]
    BadMasterKey { origin: String, detail: String },
    #[error(
        "the data directory's data keys are wrapped under master key id(s) {}, but the \
         configured master key id(s) are {}; start with the master key this data directory \
         was written with",
        stored.join(", "),
        configured.join(", ")
    )]
    MasterKeyMismatch {
        stored: Vec<String>,
        configured: Vec<String>,
    },
    #[error(
        "the data directory holds data keys (wrapped under master key id(s) {}) but there is no \
         master key: {MASTER_KEY_ENV} is not set and {path} does not exist; restore the key file \
         from its backup",
        stored.join(", ")
    )]
    MasterKeyMissing { path: PathBuf, stored: Vec<String> },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("wrapped data key {id}: {detail}")]
    CorruptDataKey { id: String, detail: String },
    #[error(
        "the master key comes from {MASTER_KEY_ENV}; rotate it yourself: restart orderd with \
         the new key in {MASTER_KEY_ENV} and the old one in {MASTER_KEY_PREVIOUS_ENV}, which \
         re-wraps the data keys at start"
    )]
    EnvironmentKey,
    #[error(
        "the master key comes from the systemd credential {}; rotate it yourself: put the new \
         key in the credential's source file and the old one in the credential \
         {MASTER_KEY_PREVIOUS_CREDENTIAL}, then restart orderd, which re-wraps the data keys at \
         start",
        path.display()
    )]
    CredentialKey { path: PathBuf },
    #[error("key rotation is unavailable until a restart: {0}")]
    RotationBlocked(String),
    #[error("this data directory already holds {DATA_KEYS_MAX} data keys")]
    TooManyDataKeys,
    #[error("a sealed {field} value cannot be opened: {detail}")]
    Open { field: Field, detail: String },
    #[error("customer keys: {0}")]
    KeyStore(#[from] KeyStoreError),
    /// The customer is erased: its data key is destroyed.
    #[error("the customer is erased")]
    Erased,
}

impl From<VaultError> for ApiError {
    fn from(error: VaultError) -> Self {
        match error {
            VaultError::EnvironmentKey
            | VaultError::CredentialKey { .. }
            | VaultError::TooManyDataKeys
            | VaultError::Erased => ApiError::InvalidTransition(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The first 8 bytes of SHA-256 of a master key: names the key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MasterKeyId([u8; MASTER_KEY_ID_BYTES]);

impl fmt::Display for MasterKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MasterKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKeyId({self})")
    }
}

/// A 256-bit master key. Its `Debug` shows only its id.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_BYTES]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

impl MasterKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> MasterKey {
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace allowed). The error never quotes the text.
    pub fn from_hex(text: &str) -> Result<MasterKey, String> {
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 {
            return Err(format!(
                "expected {} hex digits, found {} characters",
                KEY_BYTES * 2,
                text.chars().count()
            ));
        }
        let bytes = hex::decode(text).map_err(|_| "not hexadecimal".to_string())?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| "wrong length".to_string())?;
        Ok(MasterKey(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn id(&self) -> MasterKeyId {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; MASTER_KEY_ID_BYTES];
        id.copy_from_slice(&digest[..MASTER_KEY_ID_BYTES]);
        MasterKeyId(id)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }

    /// This key as the customer key store wraps with it.
    fn wrapper(&self) -> Wrapper {
        Wrapper {
            id: self.id().0,
            key: self.0,
        }
    }

    /// The key backup manifests are signed with under this master key: derived from it
    /// (`HMAC-SHA256(master, "orderd manifest v1")`), never the master key itself.
    pub fn manifest_key(&self) -> ManifestKey {
        ManifestKey::derive(self.id().0, &self.0)
    }
}

/// The manifest keys of `masters` (the first signs).
fn manifest_keys_of(masters: &[MasterKey]) -> ManifestKeys {
    ManifestKeys::new(
        masters[0].manifest_key(),
        masters[1..].iter().map(MasterKey::manifest_key),
    )
}

/// Where the master key comes from.
#[derive(Debug)]
pub enum MasterKeySource {
    /// `ORDERD_MASTER_KEY`, and `ORDERD_MASTER_KEY_PREVIOUS` while an operator rotates it.
    Environment {
        current: MasterKey,
        previous: Option<MasterKey>,
    },
    /// The systemd credential `master.key` (`$CREDENTIALS_DIRECTORY/master.key`), and
    /// `master.key.previous` while an operator rotates it. Read-only, like the environment.
    Credential {
        path: PathBuf,
        current: MasterKey,
        previous: Option<MasterKey>,
    },
    /// `security.master_key_file`, with its `.new` and `.previous` siblings during and after a
    /// rotation; generated on a first start.
    File { path: PathBuf },
}

impl MasterKeySource {
    /// The source configured for this process, first found wins: `ORDERD_MASTER_KEY`; the
    /// systemd credential `master.key` when `$CREDENTIALS_DIRECTORY` holds one; the key file
    /// `security.master_key_file`.
    pub fn from_config(config: &crate::Config) -> Result<MasterKeySource, VaultError> {
        let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        if var(MASTER_KEY_ENV).is_none() {
            if let Some(dir) = std::env::var_os(CREDENTIALS_DIRECTORY_ENV) {
                if let Some(source) = MasterKeySource::credential(Path::new(&dir))? {
                    return Ok(source);
                }
            }
        }
        MasterKeySource::resolve(
            var(MASTER_KEY_ENV),
            var(MASTER_KEY_PREVIOUS_ENV),
            &config.security.master_key_file,
            &config.storage.data_dir,
        )
    }

    /// The credential `master.key` in `dir` (systemd's `$CREDENTIALS_DIRECTORY`), with
    /// `master.key.previous` when present; `None` when `dir` holds no `master.key`.
    pub fn credential(dir: &Path) -> Result<Option<MasterKeySource>, VaultError> {
        let path = dir.join(MASTER_KEY_CREDENTIAL);
        let Some(current) = read_key_file(&path)? else {
            return Ok(None);
        };
        let previous = read_key_file(&dir.join(MASTER_KEY_PREVIOUS_CREDENTIAL))?;
        Ok(Some(MasterKeySource::Credential {
            path,
            current,
            previous,
        }))
    }

    /// Decides the source from the two environment values and the configured paths. A key
    /// file inside `data_dir` is refused (after resolving symbolic links and `..`).
    pub fn resolve(
        env_current: Option<String>,
        env_previous: Option<String>,
        key_file: &Path,
        data_dir: &Path,
    ) -> Result<MasterKeySource, VaultError> {
        let parse = |name: &str, text: &str| {
            MasterKey::from_hex(text).map_err(|detail| VaultError::BadMasterKey {
                origin: name.to_string(),
                detail,
            })
        };
        if let Some(text) = env_current {
            let current = parse(MASTER_KEY_ENV, &text)?;
            let previous = match env_previous {
                Some(text) => Some(parse(MASTER_KEY_PREVIOUS_ENV, &text)?),
                None => None,
            };
            return Ok(MasterKeySource::Environment { current, previous });
        }
        if env_previous.is_some() {
            return Err(VaultError::BadMasterKey {
                origin: MASTER_KEY_PREVIOUS_ENV.to_string(),
                detail: format!("it is set but {MASTER_KEY_ENV} is not"),
            });
        }
        let resolved_key = resolve_path(key_file).map_err(io_error(key_file))?;
        let resolved_data = resolve_path(data_dir).map_err(io_error(data_dir))?;
        if resolved_key.starts_with(&resolved_data) {
            return Err(VaultError::KeyFileInDataDir {
                key_file: resolved_key,
                data_dir: resolved_data,
            });
        }
        Ok(MasterKeySource::File {
            path: key_file.to_path_buf(),
        })
    }
}

impl MasterKeySource {
    /// The manifest keys of this source without opening a store (`orderctl backup restore`,
    /// the server stopped): the current key signs; the previous one (environment) or the
    /// `.previous` and `.new` files verify too. A missing key file is an error (a restore never
    /// generates a key).
    pub fn manifest_keys(&self) -> Result<ManifestKeys, VaultError> {
        match self {
            MasterKeySource::Environment { current, previous }
            | MasterKeySource::Credential {
                current, previous, ..
            } => {
                let mut masters = vec![current.clone()];
                masters.extend(previous.clone());
                Ok(manifest_keys_of(&masters))
            }
            MasterKeySource::File { path } => {
                let main = read_key_file(path)?.ok_or_else(|| VaultError::MasterKeyMissing {
                    path: path.to_path_buf(),
                    stored: Vec::new(),
                })?;
                let mut masters = vec![main];
                for suffix in [".previous", ".new"] {
                    if let Ok(Some(key)) = read_key_file(&with_suffix(path, suffix)) {
                        masters.push(key);
                    }
                }
                masters.extend(read_keyring(&keyring_path(path))?);
                Ok(manifest_keys_of(&masters))
            }
        }
    }
}

/// An absolute path with symbolic links of its existing part resolved and `.`/`..` removed, so
/// that two spellings of one place compare equal (the path need not exist).
fn resolve_path(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let components: Vec<Component> = absolute.components().collect();
    for split in (1..=components.len()).rev() {
        let prefix: PathBuf = components[..split].iter().collect();
        if let Ok(mut out) = prefix.canonicalize() {
            for component in &components[split..] {
                match component {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(name) => out.push(name),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
            return Ok(out);
        }
    }
    Ok(absolute)
}

/// `path` with `suffix` appended to its file name (`master.key` → `master.key.new`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Reads a key file; `None` when it does not exist.
fn read_key_file(path: &Path) -> Result<Option<MasterKey>, VaultError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    let key = MasterKey::from_hex(&text).map_err(|detail| VaultError::BadMasterKey {
        origin: path.display().to_string(),
        detail,
    })?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                message = "The master key file is readable by other users; make it mode 0600.",
                path = %path.display()
            );
        }
    }
    Ok(Some(key))
}

/// Writes a key file (mode 0600) and fsyncs it; the caller syncs the directory.
fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), VaultError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// The keyring beside a key file: `<file>.keyring`, every master key retired by a rotation
/// (one per line, 64 hex digits), mode 0600. `.previous` holds only the last one; the keyring
/// keeps each until no retained backup was signed under it ([`Vault::prune_keyring`]), so a
/// restore of an older backup still opens its personal data after several rotations.
pub fn keyring_path(key_file: &Path) -> PathBuf {
    with_suffix(key_file, ".keyring")
}

/// The keys of a keyring file; empty when it does not exist.
fn read_keyring(path: &Path) -> Result<Vec<MasterKey>, VaultError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(path)(error)),
    };
    let mut keys: Vec<MasterKey> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = MasterKey::from_hex(line).map_err(|detail| VaultError::BadMasterKey {
            origin: format!("{} line {}", path.display(), n + 1),
            detail,
        })?;
        if !keys.iter().any(|k| k.id() == key.id()) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Replaces the keyring with `keys` (written to `.tmp` with mode 0600, synced, renamed, the
/// directory synced): a crash leaves the old keyring or the new one, never a partial one.
fn write_keyring(path: &Path, keys: &[MasterKey]) -> Result<(), VaultError> {
    let tmp = with_suffix(path, ".tmp");
    let mut text = String::from(
        "# orderd master keyring: every retired master key still needed by a retained backup.\n",
    );
    for key in keys {
        text.push_str(&key.to_hex());
        text.push('\n');
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    rename(&tmp, path)?;
    sync_dir(&parent_dir(path))
}

/// Adds `keys` to the keyring of `key_file` (those not there yet); writes only when one is new.
fn add_to_keyring(key_file: &Path, keys: &[&MasterKey]) -> Result<(), VaultError> {
    let path = keyring_path(key_file);
    let mut ring = read_keyring(&path)?;
    let before = ring.len();
    for key in keys {
        if !ring.iter().any(|k| k.id() == key.id()) {
            ring.push((*key).clone());
        }
    }
    if ring.len() > before {
        write_keyring(&path, &ring)?;
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), VaultError> {
    fs::rename(from, to).map_err(io_error(to))
}

/// A data key and its cipher.
#[derive(Clone)]
struct DataKey {
    bytes: [u8; KEY_BYTES],
    cipher: Aes256Gcm,
}

impl DataKey {
    fn new(bytes: [u8; KEY_BYTES]) -> DataKey {
        DataKey {
            bytes,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        }
    }

    fn generate() -> DataKey {
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        DataKey::new(bytes)
    }
}

/// Storage key of data key `id`.
fn data_key_storage_key(id: u32) -> Vec<u8> {
    let mut key = DATA_KEY_PREFIX.to_vec();
    key.extend_from_slice(format!("{id:08x}").as_bytes());
    key
}

fn parse_data_key_storage_key(key: &[u8]) -> Option<u32> {
    let digits = key.strip_prefix(DATA_KEY_PREFIX)?;
    if digits.len() != 8 {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A wrapped data key as stored.
struct Wrapped {
    id: u32,
    master: MasterKeyId,
    record: Vec<u8>,
}

/// `version || master id || nonce || AES-GCM(master, data key)`, with the storage key as
/// associated data so that a record cannot be moved to another id.
fn wrap(master: &MasterKey, id: u32, key: &DataKey) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let aad = data_key_storage_key(id);
    let sealed = master
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &key.bytes,
                aad: &aad,
            },
        )
        .expect("AES-GCM encrypts 32 bytes");
    let mut record = Vec::with_capacity(WRAPPED_BYTES);
    record.push(WRAPPED_VERSION);
    record.extend_from_slice(&master.id().0);
    record.extend_from_slice(&nonce);
    record.extend_from_slice(&sealed);
    debug_assert_eq!(record.len(), WRAPPED_BYTES);
    record
}

fn corrupt(id: u32, detail: impl Into<String>) -> VaultError {
    VaultError::CorruptDataKey {
        id: format!("{id:x}"),
        detail: detail.into(),
    }
}

fn parse_wrapped(id: u32, record: &[u8]) -> Result<Wrapped, VaultError> {
    if record.len() != WRAPPED_BYTES {
        return Err(corrupt(id, format!("{} bytes", record.len())));
    }
    if record[0] != WRAPPED_VERSION {
        return Err(corrupt(id, format!("unknown version {}", record[0])));
    }
    let mut master = [0u8; MASTER_KEY_ID_BYTES];
    master.copy_from_slice(&record[1..1 + MASTER_KEY_ID_BYTES]);
    Ok(Wrapped {
        id,
        master: MasterKeyId(master),
        record: record.to_vec(),
    })
}

fn unwrap(master: &MasterKey, wrapped: &Wrapped) -> Result<DataKey, VaultError> {
    debug_assert_eq!(master.id(), wrapped.master);
    let nonce_at = 1 + MASTER_KEY_ID_BYTES;
    let nonce = &wrapped.record[nonce_at..nonce_at + NONCE_BYTES];
    let aad = data_key_storage_key(wrapped.id);
    let bytes = master
        .cipher()
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &wrapped.record[nonce_at + NONCE_BYTES..],
                aad: &aad,
            },
        )
        .map_err(|_| corrupt(wrapped.id, "authentication failed under its master key"))?;
    let bytes: [u8; KEY_BYTES] = bytes
        .try_into()
        .map_err(|_| corrupt(wrapped.id, "wrong key length"))?;
    Ok(DataKey::new(bytes))
}

/// Every wrapped data key in storage, by id.
fn load_wrapped(storage: &dyn Storage) -> Result<Vec<Wrapped>, VaultError> {
    let mut out = Vec::new();
    let mut error = None;
    storage.scan(
        Family::Control,
        DATA_KEY_PREFIX,
        DATA_KEY_PREFIX_END,
        &mut |key, value| {
            let parsed = match parse_data_key_storage_key(key) {
                Some(id) => parse_wrapped(id, value),
                None => Err(VaultError::CorruptDataKey {
                    id: String::from_utf8_lossy(key).into_owned(),
                    detail: "malformed storage key".into(),
                }),
            };
            match parsed {
                Ok(wrapped) if out.len() < DATA_KEYS_MAX => {
                    out.push(wrapped);
                    true
                }
                Ok(_) => {
                    error = Some(VaultError::TooManyDataKeys);
                    false
                }
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        },
    )?;
    match error {
        Some(error) => Err(error),
        None => Ok(out),
    }
}

/// The keys in use: the master key that wraps every data key, and the data keys.
struct KeyRing {
    master: MasterKey,
    data_keys: BTreeMap<u32, DataKey>,
    /// The newest data key; it seals new values.
    current: u32,
}

impl KeyRing {
    /// One synced write storing every data key wrapped under `master`.
    fn store(
        storage: &dyn Storage,
        master: &MasterKey,
        keys: &BTreeMap<u32, DataKey>,
    ) -> Result<(), VaultError> {
        let writes = keys
            .iter()
            .map(|(id, key)| Write::Put {
                family: Family::Control,
                key: data_key_storage_key(*id),
                value: wrap(master, *id, key),
            })
            .collect();
        storage.write(writes, true)?;
        Ok(())
    }
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub master_key_id: MasterKeyId,
    /// The new data key, which seals new values from now on.
    pub data_key_id: u32,
    /// Data keys re-wrapped under the new master key (those that existed before).
    pub rewrapped: u64,
}

#[derive(Debug)]
enum SourceKind {
    Environment,
    Credential { path: PathBuf },
    File { path: PathBuf },
}

/// The keys of personal data: seals and opens values, rotates the master key.
pub struct Vault {
    storage: Arc<dyn Storage>,
    source: SourceKind,
    ring: RwLock<Arc<KeyRing>>,
    /// Every master key this process knows, the current one first: they verify backup
    /// manifests signed under them.
    masters: RwLock<Vec<MasterKey>>,
    /// Serializes rotations; holds the reason when rotating must wait for a restart.
    rotation: Mutex<Option<String>>,
    /// Each customer's own data key ([`crate::customer_keys`]); `None` only in tests that seal
    /// everything under the shared data keys.
    customer_keys: Option<CustomerKeys>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring();
        f.debug_struct("Vault")
            .field("source", &self.source)
            .field("master_key_id", &ring.master.id())
            .field("data_keys", &ring.data_keys.len())
            .field("current", &ring.current)
            .finish()
    }
}

impl Vault {
    /// Loads the master key and the data keys; on a first start creates what is missing (a key
    /// file, the first data key). Finishes or discards a rotation a crash interrupted, and
    /// re-wraps under the current master key any data key wrapped under another known one.
    pub fn load(storage: Arc<dyn Storage>, source: MasterKeySource) -> Result<Vault, VaultError> {
        let stored = load_wrapped(storage.as_ref())?;
        let (kind, master, candidates) = match source {
            MasterKeySource::Environment { current, previous } => {
                tracing::info!(
                    message = "The master key comes from the environment.",
                    variable = MASTER_KEY_ENV,
                    master_key_id = %current.id()
                );
                let mut candidates = vec![current.clone()];
                candidates.extend(previous);
                (SourceKind::Environment, current, candidates)
            }
            MasterKeySource::Credential {
                path,
                current,
                previous,
            } => {
                tracing::info!(
                    message = "The master key comes from a systemd credential; security.master_key_file is not used.",
                    path = %path.display(),
                    master_key_id = %current.id()
                );
                let mut candidates = vec![current.clone()];
                candidates.extend(previous);
                (SourceKind::Credential { path }, current, candidates)
            }
            MasterKeySource::File { path } => {
                let (master, candidates) = open_key_files(&path, &stored)?;
                (SourceKind::File { path }, master, candidates)
            }
        };
        let mut data_keys = BTreeMap::new();
        let mut missing = BTreeSet::new();
        let mut foreign = 0u64;
        for wrapped in &stored {
            match candidates.iter().find(|key| key.id() == wrapped.master) {
                Some(key) => {
                    data_keys.insert(wrapped.id, unwrap(key, wrapped)?);
                    if key.id() != master.id() {
                        foreign += 1;
                    }
                }
                None => {
                    missing.insert(wrapped.master);
                }
            }
        }
        if !missing.is_empty() {
            return Err(VaultError::MasterKeyMismatch {
                stored: missing.iter().map(ToString::to_string).collect(),
                configured: candidates.iter().map(|k| k.id().to_string()).collect(),
            });
        }
        if data_keys.is_empty() {
            data_keys.insert(1, DataKey::generate());
            KeyRing::store(storage.as_ref(), &master, &data_keys)?;
            tracing::info!(
                message = "Created the first data key for personal data.",
                data_key_id = "1",
                master_key_id = %master.id()
            );
        } else if foreign > 0 {
            KeyRing::store(storage.as_ref(), &master, &data_keys)?;
            tracing::info!(
                message = "Re-wrapped data keys under the current master key.",
                rewrapped = foreign,
                master_key_id = %master.id()
            );
        }
        let current = *data_keys.keys().next_back().expect("at least one data key");
        let mut masters = vec![master.clone()];
        masters.extend(candidates.into_iter().filter(|k| k.id() != master.id()));
        Ok(Vault {
            storage,
            masters: RwLock::new(masters),
            source: kind,
            ring: RwLock::new(Arc::new(KeyRing {
                master,
                data_keys,
                current,
            })),
            rotation: Mutex::new(None),
            customer_keys: None,
        })
    }

    /// [`Vault::load`], then the customer key store at `path` (created when missing), with its
    /// copy beside the backups at `mirror`.
    pub fn load_with_customer_keys(
        storage: Arc<dyn Storage>,
        source: MasterKeySource,
        path: PathBuf,
        mirror: Option<PathBuf>,
    ) -> Result<Vault, VaultError> {
        let mut vault = Vault::load(storage, source)?;
        let masters: Vec<Wrapper> = vault
            .masters
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(MasterKey::wrapper)
            .collect();
        let keys = CustomerKeys::open(path, mirror, &masters)?;
        let (live, erased) = keys.counts();
        tracing::info!(
            message = "Customer key store open.",
            path = %keys.path().display(),
            keys = live,
            erased
        );
        vault.customer_keys = Some(keys);
        Ok(vault)
    }

    /// The customer key store, when there is one.
    pub fn customer_keys(&self) -> Option<&CustomerKeys> {
        self.customer_keys.as_ref()
    }

    /// What the key store knows of `customer` (`None` without a key store).
    pub fn customer_key_state(&self, customer: CustomerId) -> KeyState {
        match &self.customer_keys {
            Some(keys) => keys.state(customer.0),
            None => KeyState::None,
        }
    }

    /// Whether `customer` is erased (its key destroyed).
    pub fn is_erased(&self, customer: CustomerId) -> bool {
        self.customer_keys
            .as_ref()
            .is_some_and(|keys| keys.is_erased(customer.0))
    }

    /// Destroys `customer`'s key (and records it erased), durable before it returns; without a
    /// key store there is nothing to destroy.
    pub fn erase_customer_key(&self, customer: CustomerId) -> Result<(), VaultError> {
        if let Some(keys) = &self.customer_keys {
            keys.erase(customer.0)?;
        }
        Ok(())
    }

    /// Makes `customer`'s own key (durable) and seals a new customer under it; without a key
    /// store, under the shared data key.
    pub fn seal_new_customer(
        &self,
        customer: CustomerId,
        new: NewCustomer,
    ) -> Result<NewCustomer, VaultError> {
        let Some(keys) = &self.customer_keys else {
            return Ok(self.seal_customer(new));
        };
        let key = keys.create(customer.0)?;
        let seal =
            |field: Field, value: &str| seal_under_customer_key(&key, customer, field, value);
        Ok(NewCustomer {
            name: seal(Field::CustomerName, &new.name),
            email: seal(Field::CustomerEmail, &new.email),
            phone: new.phone.map(|v| seal(Field::CustomerPhone, &v)),
            address: new.address.map(|v| seal(Field::CustomerAddress, &v)),
        })
    }

    /// Seals a value of `customer`'s: under its own key; under the shared data key for a
    /// customer without one (none without a key store); an erased customer: [`VaultError::Erased`].
    pub fn seal_for(
        &self,
        customer: CustomerId,
        field: Field,
        plaintext: &str,
    ) -> Result<String, VaultError> {
        match self.customer_key_state(customer) {
            KeyState::Live(key) => Ok(seal_under_customer_key(&key, customer, field, plaintext)),
            KeyState::Erased => Err(VaultError::Erased),
            KeyState::None => Ok(self.seal(field, plaintext)),
        }
    }

    /// A contact data change sealed under the customer's key.
    pub fn seal_update(
        &self,
        customer: CustomerId,
        update: CustomerUpdate,
    ) -> Result<CustomerUpdate, VaultError> {
        let seal = |field: Field, value: Option<String>| {
            value
                .map(|v| self.seal_for(customer, field, &v))
                .transpose()
        };
        Ok(CustomerUpdate {
            name: seal(Field::CustomerName, update.name)?,
            email: seal(Field::CustomerEmail, update.email)?,
            phone: seal(Field::CustomerPhone, update.phone)?,
            address: seal(Field::CustomerAddress, update.address)?,
        })
    }

    /// An order's shipping address sealed under its customer's key (see [`Vault::seal_for`]).
    pub fn seal_shipping_address_for(
        &self,
        customer: CustomerId,
        address: Option<String>,
    ) -> Result<Option<String>, VaultError> {
        address
            .map(|a| self.seal_for(customer, Field::OrderShippingAddress, &a))
            .transpose()
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The keys backup manifests are signed (current master key) and verified with (every
    /// master key this process knows).
    pub fn manifest_keys(&self) -> ManifestKeys {
        manifest_keys_of(
            &self
                .masters
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Id of the master key in use.
    pub fn master_key_id(&self) -> MasterKeyId {
        self.ring().master.id()
    }

    /// Id of the data key that seals new values.
    pub fn data_key_id(&self) -> u32 {
        self.ring().current
    }

    /// Seals `plaintext` as a value of `field` under the newest data key.
    pub fn seal(&self, field: Field, plaintext: &str) -> String {
        let ring = self.ring();
        let key = &ring.data_keys[&ring.current];
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: field.name().as_bytes(),
                },
            )
            // AES-GCM fails only for plaintexts over 64 GiB; request bodies are bounded far below.
            .expect("AES-GCM encrypts any bounded plaintext");
        let mut body = Vec::with_capacity(NONCE_BYTES + sealed.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        format!(
            "{SEALED_MARK}{:x}:{}",
            ring.current,
            URL_SAFE_NO_PAD.encode(body)
        )
    }

    /// Opens a value of `field`. A value that is not sealed (data written before sealing
    /// existed and not yet migrated) is returned as it is.
    pub fn open(&self, field: Field, value: &str) -> Result<String, VaultError> {
        let Some((sealer, body)) = parse_sealed(value) else {
            return Ok(value.to_string());
        };
        let fail = |detail: String| VaultError::Open { field, detail };
        let id = match sealer {
            Sealer::Data(id) => id,
            Sealer::Customer(customer) => {
                return match self.customer_key_state(customer) {
                    KeyState::Live(key) => open_body(&customer_cipher(&key), field, body)
                        .map_err(|detail| fail(format!("{detail} under the key of {customer}"))),
                    KeyState::Erased => Err(VaultError::Erased),
                    KeyState::None => Err(fail(format!("no key for customer {customer}"))),
                };
            }
        };
        let ring = self.ring();
        let key = ring
            .data_keys
            .get(&id)
            .ok_or_else(|| fail(format!("unknown data key {id:x}")))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| fail("malformed base64".into()))?;
        if body.len() < NONCE_BYTES + TAG_BYTES {
            return Err(fail("too short".into()));
        }
        let (nonce, sealed) = body.split_at(NONCE_BYTES);
        let plaintext = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: field.name().as_bytes(),
                },
            )
            .map_err(|_| fail(format!("authentication failed under data key {id:x}")))?;
        String::from_utf8(plaintext).map_err(|_| fail("not UTF-8".into()))
    }

    fn seal_option(&self, field: Field, value: Option<String>) -> Option<String> {
        value.map(|v| self.seal(field, &v))
    }

    fn open_option(
        &self,
        field: Field,
        value: Option<String>,
    ) -> Result<Option<String>, VaultError> {
        value.map(|v| self.open(field, &v)).transpose()
    }

    /// A new customer with its personal fields sealed.
    pub fn seal_customer(&self, customer: NewCustomer) -> NewCustomer {
        NewCustomer {
            name: self.seal(Field::CustomerName, &customer.name),
            email: self.seal(Field::CustomerEmail, &customer.email),
            phone: self.seal_option(Field::CustomerPhone, customer.phone),
            address: self.seal_option(Field::CustomerAddress, customer.address),
        }
    }

    /// A shipping address sealed (when present).
    pub fn seal_shipping_address(&self, address: Option<String>) -> Option<String> {
        self.seal_option(Field::OrderShippingAddress, address)
    }

    /// A customer view with its personal fields opened.
    /// An erased customer (engine or key store: after a restore of an older backup, or a
    /// crash between the key's destruction and the engine's event, only the key store knows)
    /// comes back with `erased` set and no personal data.
    pub fn open_customer(&self, view: CustomerView) -> Result<CustomerView, VaultError> {
        if view.erased || self.is_erased(view.id) {
            return Ok(erased_view(view));
        }
        let opened = (|| {
            Ok(CustomerView {
                name: self.open(Field::CustomerName, &view.name)?,
                email: self.open(Field::CustomerEmail, &view.email)?,
                phone: self.open_option(Field::CustomerPhone, view.phone.clone())?,
                address: self.open_option(Field::CustomerAddress, view.address.clone())?,
                ..view.clone()
            })
        })();
        match opened {
            Err(VaultError::Erased) => Ok(erased_view(view)),
            other => other,
        }
    }

    /// An order view with its shipping address opened; an erased customer's order shows
    /// `customer_erased` and no address.
    pub fn open_order(&self, view: OrderView) -> Result<OrderView, VaultError> {
        if self.is_erased(view.customer_id) {
            return Ok(OrderView {
                shipping_address: None,
                customer_erased: true,
                ..view
            });
        }
        Ok(OrderView {
            shipping_address: self
                .open_option(Field::OrderShippingAddress, view.shipping_address)?,
            ..view
        })
    }

    /// The re-sealing function of the start-up migration
    /// ([`orderd_engine::Engine::reseal_personal_data`]): seals every value that is not sealed
    /// yet (written by a version before sealing) and counts them in `sealed`; leaves sealed
    /// values alone.
    pub fn resealer(self: &Arc<Self>, sealed: Arc<AtomicU64>) -> ResealFn {
        let vault = Arc::clone(self);
        Arc::new(
            move |field: PersonalField, _customer: CustomerId, value: &str| {
                if is_sealed(value) {
                    return None;
                }
                sealed.fetch_add(1, Ordering::Relaxed);
                Some(vault.seal(field.into(), value))
            },
        )
    }

    /// The first pass of the customer-key migration ([`Vault::customer_key_resealer`]): makes a
    /// key for every customer that owns a value not sealed under a customer key yet, without
    /// an fsync each (the caller syncs once with [`CustomerKeys::sync`] before the second pass
    /// seals anything under them); changes no value.
    pub fn customer_key_maker(self: &Arc<Self>, made: Arc<AtomicU64>) -> ResealFn {
        let vault = Arc::clone(self);
        Arc::new(
            move |_field: PersonalField, customer: CustomerId, value: &str| {
                if matches!(parse_sealed(value), Some((Sealer::Customer(_), _))) {
                    return None;
                }
                if let Some(keys) = &vault.customer_keys {
                    if keys.state(customer.0) == KeyState::None {
                        match keys.create_unsynced(customer.0) {
                            Ok(_) => {
                                made.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => tracing::error!(
                                message = "Cannot make a customer key during the migration.",
                                %error
                            ),
                        }
                    }
                }
                None
            },
        )
    }

    /// The second pass of the customer-key migration: every value not sealed under its
    /// customer's key (sealed under a shared data key, or plaintext of an old version) is
    /// sealed under it, counted in `sealed`. A value that cannot be opened is left alone
    /// (and logged, by id only).
    pub fn customer_key_resealer(self: &Arc<Self>, sealed: Arc<AtomicU64>) -> ResealFn {
        let vault = Arc::clone(self);
        Arc::new(
            move |field: PersonalField, customer: CustomerId, value: &str| {
                if matches!(parse_sealed(value), Some((Sealer::Customer(_), _))) {
                    return None;
                }
                let KeyState::Live(key) = vault.customer_key_state(customer) else {
                    return None;
                };
                let field = Field::from(field);
                let plaintext = match vault.open(field, value) {
                    Ok(plaintext) => plaintext,
                    Err(error) => {
                        tracing::error!(
                            message = "Cannot open a value to seal it under its customer's key.",
                            %customer,
                            %field,
                            %error
                        );
                        return None;
                    }
                };
                sealed.fetch_add(1, Ordering::Relaxed);
                Some(seal_under_customer_key(&key, customer, field, &plaintext))
            },
        )
    }

    /// Rotates the master key while serving: a new master key and a new data key; every data
    /// key re-wrapped under the new master in one synced write; then the new key becomes the
    /// key file and the old one `<file>.previous`. Blocking (file and storage syncs).
    ///
    /// Crash safety: the new key is on disk in `<file>.new` before any data key is wrapped
    /// under it, and [`Vault::load`] reads the file, `.new` and `.previous`, so whatever step a
    /// crash interrupts, every data key stays readable; the next start finishes the rotation
    /// (data keys under the `.new` key) or discards it (none are).
    pub fn rotate(&self) -> Result<Rotation, VaultError> {
        let path = match &self.source {
            SourceKind::Environment => return Err(VaultError::EnvironmentKey),
            SourceKind::Credential { path } => {
                return Err(VaultError::CredentialKey { path: path.clone() })
            }
            SourceKind::File { path } => path.clone(),
        };
        let mut blocked = self
            .rotation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(reason) = blocked.as_ref() {
            return Err(VaultError::RotationBlocked(reason.clone()));
        }
        let old = self.ring();
        if old.data_keys.len() >= DATA_KEYS_MAX {
            return Err(VaultError::TooManyDataKeys);
        }
        // The retiring key joins the keyring before anything is wrapped under a new one: backups
        // signed under it stay restorable whatever rotations follow.
        add_to_keyring(&path, &[&old.master])?;
        let master = MasterKey::generate();
        let new_path = with_suffix(&path, ".new");
        let previous_path = with_suffix(&path, ".previous");
        let dir = parent_dir(&path);
        write_key_file(&new_path, &master)?;
        sync_dir(&dir)?;
        let data_key_id = old
            .current
            .checked_add(1)
            .ok_or(VaultError::TooManyDataKeys)?;
        let mut data_keys = old.data_keys.clone();
        data_keys.insert(data_key_id, DataKey::generate());
        if let Err(error) = KeyRing::store(self.storage.as_ref(), &master, &data_keys) {
            // Nothing is wrapped under the new key: it is not needed.
            let _ = fs::remove_file(&new_path);
            return Err(error);
        }
        let rotation = Rotation {
            master_key_id: master.id(),
            data_key_id,
            rewrapped: old.data_keys.len() as u64,
        };
        self.masters
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(0, master.clone());
        *self
            .ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(KeyRing {
            master,
            data_keys,
            current: data_key_id,
        });
        if let Some(keys) = &self.customer_keys {
            // The old master key stays readable (`.previous`, the keyring) until this is done,
            // so a crash before it leaves keys the next start re-wraps.
            keys.rewrap(self.ring().master.wrapper())?;
        }
        let renamed = rename(&path, &previous_path)
            .and_then(|()| rename(&new_path, &path))
            .and_then(|()| sync_dir(&dir));
        if let Err(error) = renamed {
            // The data keys are wrapped under the key in `.new`; a new rotation must not
            // overwrite it. The next start finishes the renames.
            let reason = format!("the key files could not be renamed after a rotation: {error}");
            *blocked = Some(reason.clone());
            return Err(VaultError::RotationBlocked(reason));
        }
        Ok(rotation)
    }
}

impl Vault {
    /// Drops from the keyring every retired master key that signed none of `needed` (master key
    /// ids in hex: the signers of every retained backup, local and off-site) and wraps no stored
    /// data key; `.previous` goes too when it holds a dropped key. The caller passes `needed`
    /// only when it could read every retained manifest. Returns the ids dropped. An environment
    /// key has no keyring: the operator keeps its old values.
    pub fn prune_keyring(&self, needed: &BTreeSet<String>) -> Result<Vec<String>, VaultError> {
        let path = match &self.source {
            SourceKind::Environment | SourceKind::Credential { .. } => return Ok(Vec::new()),
            SourceKind::File { path } => path.clone(),
        };
        // No rotation adds to the keyring meanwhile.
        let _rotation = self
            .rotation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ring_path = keyring_path(&path);
        let ring = read_keyring(&ring_path)?;
        let current = self.ring().master.id();
        let wrapping: BTreeSet<MasterKeyId> = load_wrapped(self.storage.as_ref())?
            .iter()
            .map(|w| w.master)
            .collect();
        let (kept, dropped): (Vec<MasterKey>, Vec<MasterKey>) = ring.into_iter().partition(|k| {
            k.id() == current || wrapping.contains(&k.id()) || needed.contains(&k.id().to_string())
        });
        if dropped.is_empty() {
            return Ok(Vec::new());
        }
        write_keyring(&ring_path, &kept)?;
        let previous_path = with_suffix(&path, ".previous");
        if let Ok(Some(previous)) = read_key_file(&previous_path) {
            if dropped.iter().any(|k| k.id() == previous.id()) {
                fs::remove_file(&previous_path).map_err(io_error(&previous_path))?;
                sync_dir(&parent_dir(&path))?;
            }
        }
        let ids: Vec<String> = dropped.iter().map(|k| k.id().to_string()).collect();
        tracing::info!(
            message = "Dropped master keys no retained backup needs from the keyring.",
            dropped = %ids.join(","),
            kept = kept.len()
        );
        Ok(ids)
    }

    /// The ids (hex) of the master keys in the keyring; empty for an environment key.
    pub fn keyring_ids(&self) -> Result<Vec<String>, VaultError> {
        match &self.source {
            SourceKind::Environment | SourceKind::Credential { .. } => Ok(Vec::new()),
            SourceKind::File { path } => Ok(read_keyring(&keyring_path(path))?
                .iter()
                .map(|k| k.id().to_string())
                .collect()),
        }
    }
}

/// The master key and every candidate (file, `.new`, `.previous`), after finishing or
/// discarding an interrupted rotation; generates the key file on a first start.
fn open_key_files(
    path: &Path,
    stored: &[Wrapped],
) -> Result<(MasterKey, Vec<MasterKey>), VaultError> {
    let new_path = with_suffix(path, ".new");
    let previous_path = with_suffix(path, ".previous");
    let dir = parent_dir(path);
    let main = read_key_file(path)?;
    let new = match read_key_file(&new_path) {
        Ok(key) => key,
        // A crash while writing `.new` leaves a partial file under which nothing is wrapped.
        Err(VaultError::BadMasterKey { .. }) => {
            tracing::warn!(
                message = "Discarding an unreadable key file left by an interrupted rotation.",
                path = %new_path.display()
            );
            fs::remove_file(&new_path).map_err(io_error(&new_path))?;
            None
        }
        Err(error) => return Err(error),
    };
    let previous = read_key_file(&previous_path)?;
    let uses = |key: &Option<MasterKey>| {
        key.as_ref()
            .is_some_and(|k| stored.iter().any(|w| w.master == k.id()))
    };
    let main = match (main, new) {
        (main, Some(new)) if uses(&Some(new.clone())) || (main.is_none() && stored.is_empty()) => {
            // The data keys are wrapped under the new key: finish the renames.
            if main.is_some() {
                rename(path, &previous_path)?;
            }
            rename(&new_path, path)?;
            sync_dir(&dir)?;
            tracing::warn!(
                message = "Finished a master key rotation that a stop interrupted.",
                path = %path.display(),
                master_key_id = %new.id()
            );
            Some(new)
        }
        (main, Some(new)) => {
            fs::remove_file(&new_path).map_err(io_error(&new_path))?;
            sync_dir(&dir)?;
            tracing::warn!(
                message = "Discarded a master key rotation that a stop interrupted before any data key was re-wrapped.",
                path = %new_path.display(),
                discarded_master_key_id = %new.id()
            );
            main
        }
        (main, None) => main,
    };
    let main = match main {
        Some(main) => main,
        None if stored.is_empty() => {
            let key = MasterKey::generate();
            let tmp = with_suffix(path, ".tmp");
            write_key_file(&tmp, &key)?;
            rename(&tmp, path)?;
            sync_dir(&dir)?;
            let absolute = resolve_path(path).unwrap_or_else(|_| path.to_path_buf());
            tracing::warn!(
                message = "GENERATED A NEW MASTER KEY for personal data. Back this file up now, separately from the data and its backups, and keep it off the data disk: without it the personal data in this data directory and in every backup cannot be read.",
                path = %absolute.display(),
                master_key_id = %key.id()
            );
            key
        }
        None => {
            let ids: BTreeSet<MasterKeyId> = stored.iter().map(|w| w.master).collect();
            return Err(VaultError::MasterKeyMissing {
                path: path.to_path_buf(),
                stored: ids.iter().map(ToString::to_string).collect(),
            });
        }
    };
    // A `.previous` from before the keyring (or a rotation a crash interrupted) joins it.
    if let Some(previous) = previous.as_ref().filter(|p| p.id() != main.id()) {
        add_to_keyring(path, &[previous])?;
    }
    let mut candidates = vec![main.clone()];
    for key in read_keyring(&keyring_path(path))? {
        if !candidates.iter().any(|k| k.id() == key.id()) {
            candidates.push(key);
        }
    }
    Ok((main, candidates))
}

/// The key a sealed string names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sealer {
    /// A shared data key (`<hex id>`).
    Data(u32),
    /// The customer's own key (`cus_<16 hex digits>`).
    Customer(CustomerId),
}

/// Prefix of the key part of a value sealed under a customer's key.
const CUSTOMER_SEALER_PREFIX: &str = "cus_";

/// The key and the base64 body of a sealed string, if `value` is one.
fn parse_sealed(value: &str) -> Option<(Sealer, &str)> {
    let rest = value.strip_prefix(SEALED_MARK)?;
    let (id, body) = rest.split_once(':')?;
    let sealer = match id.strip_prefix(CUSTOMER_SEALER_PREFIX) {
        Some(hex) if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Sealer::Customer(CustomerId(u64::from_str_radix(hex, 16).ok()?))
        }
        Some(_) => return None,
        None => {
            if id.is_empty()
                || id.len() > DATA_KEY_ID_HEX_MAX
                || !id.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return None;
            }
            Sealer::Data(u32::from_str_radix(id, 16).ok()?)
        }
    };
    if body.len() < SEALED_BODY_CHARS_MIN
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some((sealer, body))
}

/// The customer a sealed value names, when it was sealed under a customer's own key.
pub fn sealed_customer(value: &str) -> Option<CustomerId> {
    match parse_sealed(value)? {
        (Sealer::Customer(customer), _) => Some(customer),
        (Sealer::Data(_), _) => None,
    }
}

fn customer_cipher(key: &[u8; KEY_BYTES]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// `"\u{1}cus_<16 hex>:" base64url(nonce || AES-GCM(customer key, plaintext, aad = field))`.
fn seal_under_customer_key(
    key: &[u8; KEY_BYTES],
    customer: CustomerId,
    field: Field,
    plaintext: &str,
) -> String {
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let sealed = customer_cipher(key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: field.name().as_bytes(),
            },
        )
        .expect("AES-GCM encrypts any bounded plaintext");
    let mut body = Vec::with_capacity(NONCE_BYTES + sealed.len());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    format!(
        "{SEALED_MARK}{CUSTOMER_SEALER_PREFIX}{:016x}:{}",
        customer.0,
        URL_SAFE_NO_PAD.encode(body)
    )
}

/// Opens a base64 body (nonce || ciphertext || tag) with `cipher`; the error says why.
fn open_body(cipher: &Aes256Gcm, field: Field, body: &str) -> Result<String, String> {
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| "malformed base64".to_string())?;
    if body.len() < NONCE_BYTES + TAG_BYTES {
        return Err("too short".into());
    }
    let (nonce, sealed) = body.split_at(NONCE_BYTES);
    let plaintext = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: field.name().as_bytes(),
            },
        )
        .map_err(|_| "authentication failed".to_string())?;
    String::from_utf8(plaintext).map_err(|_| "not UTF-8".into())
}

/// A customer as erased: its id, creation time and the flag; no personal data.
fn erased_view(view: CustomerView) -> CustomerView {
    CustomerView {
        id: view.id,
        name: String::new(),
        email: String::new(),
        phone: None,
        address: None,
        created_at_us: view.created_at_us,
        erased: true,
    }
}

/// Whether `value` has the shape of a sealed string (it may still fail to open).
pub fn is_sealed(value: &str) -> bool {
    parse_sealed(value).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_engine::MemoryStorage;

    fn memory() -> Arc<dyn Storage> {
        Arc::new(MemoryStorage::new())
    }

    fn env(key: &MasterKey) -> MasterKeySource {
        MasterKeySource::Environment {
            current: key.clone(),
            previous: None,
        }
    }

    fn file(path: &Path) -> MasterKeySource {
        MasterKeySource::File {
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn values_round_trip_in_every_field() {
        let vault = Vault::load(memory(), env(&MasterKey::generate())).unwrap();
        for field in Field::ALL {
            for plain in [
                "",
                "Jane Doe",
                "jane@example.com",
                "Zürich, 8000 — 東京",
                "x",
            ] {
                let sealed = vault.seal(field, plain);
                assert!(is_sealed(&sealed), "{sealed:?}");
                // (Each of these has a character outside base64url, so this cannot hit by chance.)
                assert!(plain.len() < 2 || !sealed.contains(plain), "{sealed:?}");
                assert_eq!(vault.open(field, &sealed).unwrap(), plain);
            }
        }
        // A fresh nonce per value: equal plaintexts seal differently.
        let a = vault.seal(Field::CustomerName, "Jane");
        let b = vault.seal(Field::CustomerName, "Jane");
        assert_ne!(a, b);
        assert!(a.starts_with("\u{1}1:"), "{a:?}");
    }

    #[test]
    fn the_wrong_field_fails_to_open() {
        let vault = Vault::load(memory(), env(&MasterKey::generate())).unwrap();
        let sealed = vault.seal(Field::CustomerEmail, "jane@example.com");
        let error = vault.open(Field::CustomerName, &sealed).unwrap_err();
        assert!(
            matches!(
                error,
                VaultError::Open {
                    field: Field::CustomerName,
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.to_string().contains("jane"));
        assert!(vault.open(Field::CustomerEmail, &sealed).is_ok());
    }

    #[test]
    fn tampered_values_fail_to_open() {
        let vault = Vault::load(memory(), env(&MasterKey::generate())).unwrap();
        let sealed = vault.seal(Field::OrderShippingAddress, "1 Main Street");
        let (head, body) = sealed.split_once(':').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
        for at in [0, NONCE_BYTES, bytes.len() - 1] {
            bytes[at] ^= 0x01;
            let tampered = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert!(is_sealed(&tampered));
            assert!(vault.open(Field::OrderShippingAddress, &tampered).is_err());
            bytes[at] ^= 0x01;
        }
        // Truncated, and under a data key id that does not exist.
        let short = format!(
            "{head}:{}",
            URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1])
        );
        assert!(vault.open(Field::OrderShippingAddress, &short).is_err());
        let unknown = format!("\u{1}7:{body}");
        assert!(vault.open(Field::OrderShippingAddress, &unknown).is_err());
        // Another vault (another master, another data key) cannot open it.
        let other = Vault::load(memory(), env(&MasterKey::generate())).unwrap();
        assert!(other.open(Field::OrderShippingAddress, &sealed).is_err());
    }

    #[test]
    fn only_the_sealed_shape_counts_as_sealed() {
        for plain in [
            "",
            "Jane",
            "\u{1}",
            "\u{1}1:",
            "\u{1}1:short",
            "\u{1}zz:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "\u{1}1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+/",
            "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!is_sealed(plain), "{plain:?}");
        }
        // Not sealed: returned as it is (data of the previous version before the migration).
        let vault = Vault::load(memory(), env(&MasterKey::generate())).unwrap();
        assert_eq!(vault.open(Field::CustomerName, "Jane").unwrap(), "Jane");
    }

    #[test]
    fn the_migration_seals_plaintext_only() {
        let vault = Arc::new(Vault::load(memory(), env(&MasterKey::generate())).unwrap());
        let sealed = Arc::new(AtomicU64::new(0));
        let reseal = vault.resealer(sealed.clone());
        let already = vault.seal(Field::CustomerEmail, "jane@example.com");
        let c = CustomerId(1);
        assert_eq!(reseal(PersonalField::CustomerEmail, c, &already), None);
        let fresh = reseal(PersonalField::CustomerEmail, c, "joe@example.com").unwrap();
        assert_eq!(
            vault.open(Field::CustomerEmail, &fresh).unwrap(),
            "joe@example.com"
        );
        // Sealed under the engine's field name: another field cannot open it.
        let address = reseal(PersonalField::OrderShippingAddress, c, "1 Main Street").unwrap();
        assert!(vault.open(Field::CustomerAddress, &address).is_err());
        assert_eq!(
            vault.open(Field::OrderShippingAddress, &address).unwrap(),
            "1 Main Street"
        );
        assert_eq!(sealed.load(Ordering::Relaxed), 2);
    }

    fn with_customer_keys(dir: &Path, master: &MasterKey) -> Arc<Vault> {
        Arc::new(
            Vault::load_with_customer_keys(
                memory(),
                env(master),
                dir.join(crate::customer_keys::CUSTOMER_KEYS_FILE),
                Some(dir.join("mirror.keys")),
            )
            .unwrap(),
        )
    }

    /// Each customer's values open under its own key only; erasing one makes every copy of its
    /// values unreadable (`Erased`), also after a reload, while the other customer's open.
    #[test]
    fn a_customer_key_seals_its_customer_and_erasing_it_shreds_every_copy() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let vault = with_customer_keys(dir.path(), &master);
        let (jane, joe) = (CustomerId::new(0, 1), CustomerId::new(1, 1));
        let new = |name: &str| NewCustomer {
            name: name.into(),
            email: format!("{name}@example.com"),
            phone: Some("+41".into()),
            address: None,
        };
        let sealed_jane = vault.seal_new_customer(jane, new("jane")).unwrap();
        let sealed_joe = vault.seal_new_customer(joe, new("joe")).unwrap();
        assert_eq!(sealed_customer(&sealed_jane.email), Some(jane));
        assert!(is_sealed(&sealed_jane.name) && is_sealed(sealed_jane.phone.as_ref().unwrap()));
        let address = vault
            .seal_shipping_address_for(jane, Some("1 Main Street".into()))
            .unwrap()
            .unwrap();
        assert_eq!(sealed_customer(&address), Some(jane));
        assert_eq!(
            vault
                .open(Field::CustomerEmail, &sealed_jane.email)
                .unwrap(),
            "jane@example.com"
        );
        // Under another customer's id, or the shared key, the value does not open.
        let moved = sealed_jane
            .email
            .replace(&format!("{:016x}", jane.0), &format!("{:016x}", joe.0));
        assert!(vault.open(Field::CustomerEmail, &moved).is_err());
        let update = vault
            .seal_update(
                jane,
                CustomerUpdate {
                    phone: Some("+1".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(sealed_customer(update.phone.as_ref().unwrap()), Some(jane));

        vault.erase_customer_key(jane).unwrap();
        vault.erase_customer_key(jane).unwrap();
        for (field, value) in [
            (Field::CustomerEmail, &sealed_jane.email),
            (Field::CustomerName, &sealed_jane.name),
            (Field::OrderShippingAddress, &address),
        ] {
            assert!(matches!(vault.open(field, value), Err(VaultError::Erased)));
        }
        assert!(vault.is_erased(jane));
        assert!(matches!(
            vault.seal_for(jane, Field::CustomerName, "x"),
            Err(VaultError::Erased)
        ));
        assert!(matches!(
            vault.seal_new_customer(jane, new("again")),
            Err(VaultError::KeyStore(_))
        ));
        // The engine's view of an erased customer opens as erased, with no personal data.
        let view = vault
            .open_customer(CustomerView {
                id: jane,
                name: sealed_jane.name.clone(),
                email: sealed_jane.email.clone(),
                phone: None,
                address: None,
                created_at_us: 3,
                erased: false,
            })
            .unwrap();
        assert!(view.erased && view.email.is_empty() && view.created_at_us == 3);
        // The copy beside the backups lost the key too; a reload keeps the erasure.
        let mirror = fs::read_to_string(dir.path().join("mirror.keys")).unwrap_or_default();
        assert!(!mirror.contains(&format!("k {:016x} ", jane.0)));
        drop(vault);
        let reloaded = with_customer_keys(dir.path(), &master);
        assert!(matches!(
            reloaded.open(Field::CustomerEmail, &sealed_jane.email),
            Err(VaultError::Erased)
        ));
        assert_eq!(
            reloaded
                .open(Field::CustomerEmail, &sealed_joe.email)
                .unwrap(),
            "joe@example.com"
        );
    }

    /// The migration to customer keys: a value under the shared key (or plaintext) is made a
    /// value under its customer's key once the first pass made the key; a value already under
    /// it is left alone.
    #[test]
    fn the_customer_key_migration_reseals_shared_and_plain_values() {
        let dir = tempfile::tempdir().unwrap();
        let vault = with_customer_keys(dir.path(), &MasterKey::generate());
        let c = CustomerId::new(0, 7);
        let shared = vault.seal(Field::CustomerName, "Old Jane");
        let made = Arc::new(AtomicU64::new(0));
        let maker = vault.customer_key_maker(made.clone());
        assert_eq!(maker(PersonalField::CustomerName, c, &shared), None);
        assert_eq!(
            maker(PersonalField::CustomerEmail, c, "plain@example.com"),
            None
        );
        assert_eq!(made.load(Ordering::Relaxed), 1, "one key per customer");
        vault.customer_keys().unwrap().sync().unwrap();
        let sealed = Arc::new(AtomicU64::new(0));
        let reseal = vault.customer_key_resealer(sealed.clone());
        let name = reseal(PersonalField::CustomerName, c, &shared).unwrap();
        let email = reseal(PersonalField::CustomerEmail, c, "plain@example.com").unwrap();
        assert_eq!(sealed_customer(&name), Some(c));
        assert_eq!(vault.open(Field::CustomerName, &name).unwrap(), "Old Jane");
        assert_eq!(
            vault.open(Field::CustomerEmail, &email).unwrap(),
            "plain@example.com"
        );
        assert_eq!(reseal(PersonalField::CustomerName, c, &name), None);
        assert_eq!(sealed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn first_start_generates_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let storage = memory();
        let vault = Vault::load(storage.clone(), file(&path)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = read_key_file(&path).unwrap().unwrap();
        assert_eq!(vault.master_key_id(), key.id());
        let sealed = vault.seal(Field::CustomerPhone, "+41 79");
        // The same file opens the same data keys; nothing else is written.
        let again = Vault::load(storage, file(&path)).unwrap();
        assert_eq!(again.open(Field::CustomerPhone, &sealed).unwrap(), "+41 79");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["master.key"]);
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let storage = memory();
        let vault = Vault::load(storage.clone(), file(&path)).unwrap();
        let first_master = vault.master_key_id();
        let before = vault.seal(Field::CustomerEmail, "jane@example.com");
        let rotation = vault.rotate().unwrap();
        assert_ne!(rotation.master_key_id, first_master);
        assert_eq!(rotation.data_key_id, 2);
        assert_eq!(rotation.rewrapped, 1);
        let after = vault.seal(Field::CustomerEmail, "joe@example.com");
        assert!(after.starts_with("\u{1}2:"));
        assert_eq!(
            vault.open(Field::CustomerEmail, &before).unwrap(),
            "jane@example.com"
        );
        let second = vault.rotate().unwrap();
        assert_eq!((second.data_key_id, second.rewrapped), (3, 2));
        // Files: the newest key, the one before it, no leftovers.
        let main = read_key_file(&path).unwrap().unwrap();
        assert_eq!(main.id(), second.master_key_id);
        let previous = read_key_file(&with_suffix(&path, ".previous"))
            .unwrap()
            .unwrap();
        assert_eq!(previous.id(), rotation.master_key_id);
        assert!(!with_suffix(&path, ".new").exists());
        // Every data key is wrapped under the newest master key.
        let stored = load_wrapped(storage.as_ref()).unwrap();
        assert_eq!(stored.len(), 3);
        assert!(stored.iter().all(|w| w.master == second.master_key_id));
        // After a restart, with the key file alone, everything still opens.
        fs::remove_file(with_suffix(&path, ".previous")).unwrap();
        let reopened = Vault::load(storage, file(&path)).unwrap();
        assert_eq!(reopened.data_key_id(), 3);
        assert_eq!(
            reopened.open(Field::CustomerEmail, &before).unwrap(),
            "jane@example.com"
        );
        assert_eq!(
            reopened.open(Field::CustomerEmail, &after).unwrap(),
            "joe@example.com"
        );
    }

    /// A copy of the wrapped data keys of `storage` (what a backup of it holds).
    fn copy_of_data_keys(storage: &dyn Storage) -> Arc<dyn Storage> {
        let copy = memory();
        let mut writes = Vec::new();
        storage
            .scan(
                Family::Control,
                DATA_KEY_PREFIX,
                DATA_KEY_PREFIX_END,
                &mut |key, value| {
                    writes.push(Write::Put {
                        family: Family::Control,
                        key: key.to_vec(),
                        value: value.to_vec(),
                    });
                    true
                },
            )
            .unwrap();
        copy.write(writes, true).unwrap();
        copy
    }

    #[test]
    fn the_keyring_keeps_every_retired_master_key_until_no_backup_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let storage = memory();
        let vault = Vault::load(storage.clone(), file(&path)).unwrap();
        let first = vault.master_key_id();
        let sealed = vault.seal(Field::CustomerEmail, "old@example.com");
        let backup = copy_of_data_keys(storage.as_ref());
        let mut retired = vec![first];
        for _ in 0..3 {
            vault.rotate().unwrap();
            retired.push(vault.master_key_id());
        }
        retired.pop();
        // `.previous` holds the last retired key only; the keyring holds all three, privately.
        let ring = read_keyring(&keyring_path(&path)).unwrap();
        assert_eq!(ring.iter().map(MasterKey::id).collect::<Vec<_>>(), retired);
        let mode = fs::metadata(keyring_path(&path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            read_key_file(&with_suffix(&path, ".previous"))
                .unwrap()
                .unwrap()
                .id(),
            retired[2]
        );
        // Manifests signed under the first key verify; the backup's data keys open.
        let known = file(&path).manifest_keys().unwrap().master_ids();
        assert!(known.contains(&first.to_string()), "{known:?}");
        let restored = Vault::load(backup, file(&path)).unwrap();
        assert_eq!(
            restored.open(Field::CustomerEmail, &sealed).unwrap(),
            "old@example.com"
        );
        // A retained backup signed under the first key keeps it; the others and `.previous` go.
        let needed: BTreeSet<String> = [first.to_string()].into();
        let dropped = vault.prune_keyring(&needed).unwrap();
        assert_eq!(
            dropped,
            vec![retired[1].to_string(), retired[2].to_string()]
        );
        assert!(!with_suffix(&path, ".previous").exists());
        assert_eq!(vault.keyring_ids().unwrap(), vec![first.to_string()]);
        // No backup needs it any more: the keyring empties; the live store still opens.
        assert_eq!(
            vault.prune_keyring(&BTreeSet::new()).unwrap(),
            vec![first.to_string()]
        );
        assert!(vault.keyring_ids().unwrap().is_empty());
        let reopened = Vault::load(storage, file(&path)).unwrap();
        assert_eq!(
            reopened.open(Field::CustomerEmail, &sealed).unwrap(),
            "old@example.com"
        );
    }

    #[test]
    fn a_rotation_interrupted_before_rewrapping_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let storage = memory();
        let vault = Vault::load(storage.clone(), file(&path)).unwrap();
        let sealed = vault.seal(Field::CustomerName, "Jane");
        let master = vault.master_key_id();
        // A crash right after `.new` was written.
        write_key_file(&with_suffix(&path, ".new"), &MasterKey::generate()).unwrap();
        let reopened = Vault::load(storage, file(&path)).unwrap();
        assert_eq!(reopened.master_key_id(), master);
        assert!(!with_suffix(&path, ".new").exists());
        assert_eq!(reopened.open(Field::CustomerName, &sealed).unwrap(), "Jane");
    }

    #[test]
    fn a_rotation_interrupted_after_rewrapping_is_finished() {
        // A crash after the synced re-wrap: before the renames, or between the two renames.
        for renamed_old in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("master.key");
            let storage = memory();
            let vault = Vault::load(storage.clone(), file(&path)).unwrap();
            let sealed = vault.seal(Field::CustomerName, "Jane");
            let old = read_key_file(&path).unwrap().unwrap();
            let new = MasterKey::generate();
            write_key_file(&with_suffix(&path, ".new"), &new).unwrap();
            KeyRing::store(storage.as_ref(), &new, &vault.ring().data_keys).unwrap();
            if renamed_old {
                rename(&path, &with_suffix(&path, ".previous")).unwrap();
            }
            let reopened = Vault::load(storage, file(&path)).unwrap();
            assert_eq!(reopened.master_key_id(), new.id());
            assert_eq!(reopened.open(Field::CustomerName, &sealed).unwrap(), "Jane");
            assert_eq!(read_key_file(&path).unwrap().unwrap().id(), new.id());
            let previous = read_key_file(&with_suffix(&path, ".previous"))
                .unwrap()
                .unwrap();
            assert_eq!(previous.id(), old.id());
            assert!(!with_suffix(&path, ".new").exists());
        }
    }

    #[test]
    fn the_wrong_master_key_is_refused_with_both_ids() {
        let storage = memory();
        let right = MasterKey::generate();
        Vault::load(storage.clone(), env(&right)).unwrap();
        let wrong = MasterKey::generate();
        let error = Vault::load(storage.clone(), env(&wrong)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&right.id().to_string()), "{text}");
        assert!(text.contains(&wrong.id().to_string()), "{text}");
        assert!(!text.contains(&right.to_hex()) && !text.contains(&wrong.to_hex()));
        // No key file and no environment key, but data keys exist: refused, nothing generated.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let error = Vault::load(storage, file(&path)).unwrap_err();
        assert!(
            matches!(error, VaultError::MasterKeyMissing { .. }),
            "{error}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn an_environment_key_is_rotated_by_restarting_with_the_previous_one() {
        let storage = memory();
        let old = MasterKey::generate();
        let vault = Vault::load(storage.clone(), env(&old)).unwrap();
        let sealed = vault.seal(Field::CustomerAddress, "1 Main Street");
        let error = vault.rotate().unwrap_err();
        assert!(matches!(error, VaultError::EnvironmentKey));
        assert!(matches!(
            ApiError::from(error),
            ApiError::InvalidTransition(_)
        ));
        let new = MasterKey::generate();
        let vault = Vault::load(
            storage.clone(),
            MasterKeySource::Environment {
                current: new.clone(),
                previous: Some(old),
            },
        )
        .unwrap();
        assert_eq!(vault.master_key_id(), new.id());
        // Re-wrapped at start: the new key alone now suffices.
        let vault = Vault::load(storage, env(&new)).unwrap();
        assert_eq!(
            vault.open(Field::CustomerAddress, &sealed).unwrap(),
            "1 Main Street"
        );
    }

    #[test]
    fn a_key_file_inside_the_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        for inside in [
            data.join("master.key"),
            data.join("sub/../master.key"),
            dir.path().join("./data/x/master.key"),
        ] {
            let error = MasterKeySource::resolve(None, None, &inside, &data).unwrap_err();
            assert!(
                matches!(error, VaultError::KeyFileInDataDir { .. }),
                "{inside:?}"
            );
        }
        // Through a symbolic link to the data directory.
        fs::create_dir_all(&data).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let error = MasterKeySource::resolve(None, None, &link.join("k"), &data).unwrap_err();
        assert!(matches!(error, VaultError::KeyFileInDataDir { .. }));
        for outside in [
            dir.path().join("master.key"),
            data.join("../master.key"),
            dir.path().join("data2/master.key"),
        ] {
            assert!(
                MasterKeySource::resolve(None, None, &outside, &data).is_ok(),
                "{outside:?}"
            );
        }
    }

    /// systemd's `LoadCredential=master.key:…` puts the key in `$CREDENTIALS_DIRECTORY`: read
    /// there (with `master.key.previous` during a rotation), never written; rotating it over
    /// the API is refused like an environment key; a directory without it is no source.
    #[test]
    fn a_credential_key_is_read_only_and_rotated_by_restarting_with_the_previous_one() {
        let credentials = tempfile::tempdir().unwrap();
        assert!(MasterKeySource::credential(credentials.path())
            .unwrap()
            .is_none());
        let storage = memory();
        let old = MasterKey::generate();
        let key_path = credentials.path().join(MASTER_KEY_CREDENTIAL);
        write_key_file(&key_path, &old).unwrap();
        let source = MasterKeySource::credential(credentials.path())
            .unwrap()
            .expect("the credential is a source");
        assert_eq!(
            source.manifest_keys().unwrap().signing().master_id(),
            old.id().to_string()
        );
        let vault = Vault::load(storage.clone(), source).unwrap();
        assert_eq!(vault.master_key_id(), old.id());
        let sealed = vault.seal(Field::CustomerAddress, "1 Main Street");
        let error = vault.rotate().unwrap_err();
        assert!(
            matches!(&error, VaultError::CredentialKey { path } if *path == key_path),
            "{error}"
        );
        assert!(matches!(
            ApiError::from(error),
            ApiError::InvalidTransition(_)
        ));
        assert!(vault.keyring_ids().unwrap().is_empty());
        let files = |dir: &Path| fs::read_dir(dir).unwrap().count();
        assert_eq!(files(credentials.path()), 1, "nothing written next to it");
        // The operator's rotation: the new key as master.key, the old as master.key.previous.
        let new = MasterKey::generate();
        write_key_file(&key_path, &new).unwrap();
        write_key_file(
            &credentials.path().join(MASTER_KEY_PREVIOUS_CREDENTIAL),
            &old,
        )
        .unwrap();
        let source = MasterKeySource::credential(credentials.path())
            .unwrap()
            .unwrap();
        let vault = Vault::load(storage.clone(), source).unwrap();
        assert_eq!(vault.master_key_id(), new.id());
        // Re-wrapped at start: the new key alone now suffices.
        fs::remove_file(credentials.path().join(MASTER_KEY_PREVIOUS_CREDENTIAL)).unwrap();
        let source = MasterKeySource::credential(credentials.path())
            .unwrap()
            .unwrap();
        let vault = Vault::load(storage, source).unwrap();
        assert_eq!(
            vault.open(Field::CustomerAddress, &sealed).unwrap(),
            "1 Main Street"
        );
    }

    #[test]
    fn environment_keys_are_validated_without_echoing_them() {
        let data = Path::new("/nonexistent/data");
        let key = Path::new("/nonexistent/key");
        let bad = "zz".repeat(KEY_BYTES);
        let error = MasterKeySource::resolve(Some(bad.clone()), None, key, data).unwrap_err();
        assert!(!error.to_string().contains(&bad), "{error}");
        assert!(MasterKeySource::resolve(Some("ab".into()), None, key, data).is_err());
        let good = MasterKey::generate().to_hex();
        assert!(matches!(
            MasterKeySource::resolve(Some(format!("{good}\n")), None, key, data),
            Ok(MasterKeySource::Environment { previous: None, .. })
        ));
        assert!(MasterKeySource::resolve(None, Some(good), key, data).is_err());
    }

    #[test]
    fn customers_and_orders_seal_and_open_every_personal_field() {
        use orderd_engine::{CustomerId, OrderId, OrderStatus};
        let vault = Vault::load(memory(), env(&MasterKey::generate())).unwrap();
        let sealed = vault.seal_customer(NewCustomer {
            name: "Jane".into(),
            email: "jane@example.com".into(),
            phone: Some("+41".into()),
            address: None,
        });
        for value in [&sealed.name, &sealed.email, sealed.phone.as_ref().unwrap()] {
            assert!(is_sealed(value));
        }
        assert_eq!(sealed.address, None);
        let view = vault
            .open_customer(CustomerView {
                id: CustomerId(1),
                name: sealed.name,
                email: sealed.email,
                phone: sealed.phone,
                address: None,
                created_at_us: 7,
                erased: false,
            })
            .unwrap();
        assert_eq!(
            (
                view.name.as_str(),
                view.email.as_str(),
                view.phone.as_deref()
            ),
            ("Jane", "jane@example.com", Some("+41"))
        );
        let address = vault.seal_shipping_address(Some("1 Main Street".into()));
        let order = vault
            .open_order(OrderView {
                id: OrderId::new(0, 1),
                customer_id: CustomerId(1),
                status: OrderStatus::Confirmed,
                lines: vec![],
                total: 0,
                shipping_address: address,
                note: Some("gift".into()),
                created_at_us: 0,
                updated_at_us: 0,
                history: vec![],
                shipments: vec![],
                customer_erased: false,
                returns: vec![],
                refunds: vec![],
                refunded: 0,
            })
            .unwrap();
        assert_eq!(order.shipping_address.as_deref(), Some("1 Main Street"));
        assert_eq!(order.note.as_deref(), Some("gift"));
    }
}

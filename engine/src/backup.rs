//! Backups of the whole store: a RocksDB checkpoint backed up with `BackupEngine` (incremental,
//! checksummed), one manifest per backup (every shard's sequence number and digests, every file
//! with its size and SHA-256), restore drills that rebuild every shard from a restored copy and
//! compare its digests with the manifest, restore into a data directory, and retention.
//!
//! Layout of a backup directory (the same locally and off-site):
//!
//! | path | what |
//! |---|---|
//! | `rocksdb/` | the `BackupEngine` directory (`meta/<n>`, `private/<n>/`, `shared_checksum/`) |
//! | `manifests/<id>.manifest` | the manifest: format byte 2, signing master key id, postcard body, HMAC-SHA256 of all three (format 1, before issue 17: format byte, body, unkeyed SHA-256) |
//! | `extras/<id>/<name>` | files kept beside the store (the gateway's `keys.json`) |
//! | `scratch/` | restore drills (local only, emptied after each) |
//!
//! Why a checkpoint first: the digests in the manifest must describe exactly what the backup
//! holds. The checkpoint is a consistent copy of the live store (hard links, no pause for
//! writers); the shards are rebuilt from it to take their digests, and the backup is taken of
//! that same checkpoint. Every order acknowledged before the backup started is in it: the
//! rebuilt sequence of each shard is checked against the log writer's durable sequence read at
//! the start.
//!
//! Why manifests are authenticated: a manifest says which files to fetch, where to put them
//! and what they must hash to, so whoever can write one (the off-site store's owner, anyone
//! with the backup disk) could otherwise point a restore anywhere or at data of their own. A
//! manifest (which also anchors the control and shard audit chains' tips) is signed with
//! HMAC-SHA256 under a key derived from the personal-data master key
//! ([`ManifestKey::derive`]), never the master key itself; it names the master key it was
//! signed under, so backups made before a rotation still verify while that key is known.
//! Every file path is checked before anything is read or written ([`check_file_path`]): only
//! relative paths under `rocksdb/` or `extras/`, no `..`, `.`, empty or root components.
//! Manifests of format 1 (unkeyed SHA-256, made before this) are still read, listed and
//! drilled, marked unauthenticated (`signed_by` = `None`); restoring one needs an explicit
//! override ([`RestoreOptions::allow_unauthenticated`]).

use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{recover_shard, EngineError, SHARD_COUNT_KEY};
use crate::storage::rocks::{self, RocksStorage};
use crate::storage::{Family, Storage, StorageError};

/// Format byte of a manifest file: format byte, the signing master key's id, postcard body,
/// HMAC-SHA256 of all three under that key's [`ManifestKey`].
pub const MANIFEST_FORMAT: u8 = 2;
/// Format byte of a manifest written before manifests were signed (body, unkeyed SHA-256).
pub const MANIFEST_FORMAT_UNSIGNED: u8 = 1;
/// What the manifest key is derived under: `HMAC-SHA256(master key, label)`.
pub const MANIFEST_KEY_LABEL: &[u8] = b"orderd manifest v1";
/// Bytes of a master key id in a manifest.
pub const MASTER_ID_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
/// Subdirectory of the `BackupEngine` files.
pub const ENGINE_DIR: &str = "rocksdb";
pub const MANIFEST_DIR: &str = "manifests";
pub const MANIFEST_SUFFIX: &str = ".manifest";
pub const EXTRAS_DIR: &str = "extras";
pub const SCRATCH_DIR: &str = "scratch";
/// The RocksDB directory inside a data directory.
pub const DB_DIR: &str = "db";

/// One shard as the backup holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDigest {
    pub shard: u16,
    /// The last sequence number in the backup.
    pub seq: u64,
    /// The log writer's durable sequence when the backup started: every acknowledged event up
    /// to it is in the backup (`seq >= acknowledged_seq`, checked at creation).
    pub acknowledged_seq: u64,
    /// The canonical digest of the rebuilt state (`ShardData::state_digest`).
    pub state_digest: u64,
    /// The chained digest of the shard's log up to `seq`.
    pub log_digest: u64,
    pub orders: u64,
}

/// One file of a backup, by its path relative to the backup directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The key manifests are signed with, derived from one master key, with that key's id.
#[derive(Clone, PartialEq, Eq)]
pub struct ManifestKey {
    master_id: [u8; MASTER_ID_BYTES],
    key: [u8; 32],
}

impl std::fmt::Debug for ManifestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManifestKey(master {})", hex_id(&self.master_id))
    }
}

fn hex_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

type HmacSha256 = Hmac<Sha256>;

impl ManifestKey {
    /// `HMAC-SHA256(master, MANIFEST_KEY_LABEL)`: a key of its own, so a manifest key that
    /// leaks reveals nothing of the master key and opens no personal data.
    pub fn derive(master_id: [u8; MASTER_ID_BYTES], master: &[u8; 32]) -> ManifestKey {
        let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
        mac.update(MANIFEST_KEY_LABEL);
        ManifestKey {
            master_id,
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// The id of the master key it was derived from, in hex (as orderd logs master key ids).
    pub fn master_id(&self) -> String {
        hex_id(&self.master_id)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }
}

/// The manifest keys a process knows: the first signs new manifests, every one verifies the
/// manifests signed under its master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestKeys {
    keys: Vec<ManifestKey>,
}

impl ManifestKeys {
    /// `signing` first, then older keys (duplicates dropped).
    pub fn new(signing: ManifestKey, older: impl IntoIterator<Item = ManifestKey>) -> Self {
        let mut keys = vec![signing];
        for key in older {
            if !keys.iter().any(|k| k.master_id == key.master_id) {
                keys.push(key);
            }
        }
        ManifestKeys { keys }
    }

    pub fn signing(&self) -> &ManifestKey {
        &self.keys[0]
    }

    fn find(&self, master_id: &[u8]) -> Option<&ManifestKey> {
        self.keys.iter().find(|k| k.master_id == master_id)
    }

    /// The master key ids known, in hex.
    pub fn master_ids(&self) -> Vec<String> {
        self.keys.iter().map(ManifestKey::master_id).collect()
    }

    /// Signs `body` for a file kept beside the backups (not a manifest): format byte, master
    /// key id, body, HMAC-SHA256 of `label` and the rest under the signing key. `label` names
    /// the use, so one kind of file never passes for another.
    pub fn seal(&self, label: &[u8], body: &[u8]) -> Vec<u8> {
        let key = self.signing();
        let mut bytes = vec![MANIFEST_FORMAT];
        bytes.extend_from_slice(&key.master_id);
        bytes.extend_from_slice(body);
        let mut mac = key.mac();
        mac.update(label);
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        bytes
    }

    /// The body of what [`ManifestKeys::seal`] wrote under `label`, once its HMAC verifies.
    pub fn open<'a>(&self, label: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], String> {
        if bytes.len() < 1 + MASTER_ID_BYTES + TAG_BYTES || bytes[0] != MANIFEST_FORMAT {
            return Err("not a signed file".into());
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let master_id = &signed[1..1 + MASTER_ID_BYTES];
        let key = self.find(master_id).ok_or_else(|| {
            format!(
                "signed under master key {}, which is not among the known master keys",
                hex_id(master_id)
            )
        })?;
        let mut mac = key.mac();
        mac.update(label);
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| "its HMAC-SHA256 does not verify: it was altered".to_string())?;
        Ok(&signed[1 + MASTER_ID_BYTES..])
    }
}

/// The control audit chain's tip when a backup was taken: its newest entry's `seq` and `hash`.
/// A chain that later ends before it, or holds another entry there, was truncated or rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: String,
}

/// A shard audit chain's tip when a backup was taken (its newest entry's `seq` and `hash`, hex):
/// a shard chain that later ends before it was truncated, tip record and all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAnchor {
    pub shard: u16,
    pub seq: u64,
    pub hash: String,
}

/// Every shard chain's tip as stored in `control` (shards that never wrote an entry have none).
fn shard_anchors(storage: &dyn Storage) -> Result<Vec<ShardAnchor>, BackupError> {
    let mut anchors = Vec::new();
    for shard in 0..=u16::MAX {
        match crate::audit::read_tip(storage, shard)? {
            Some(tip) if tip.entry_seq > 0 => anchors.push(ShardAnchor {
                shard,
                seq: tip.entry_seq,
                hash: crate::audit::hex(&tip.entry_hash),
            }),
            Some(_) => {}
            // Shards are numbered from 0 and every one writes a tip with its first entry.
            None => break,
        }
    }
    Ok(anchors)
}

/// A manifest of format 1, as it was encoded.
#[derive(Deserialize)]
struct ManifestV1 {
    id: String,
    engine_id: u32,
    created_at_us: i64,
    shard_count: u16,
    shards: Vec<ShardDigest>,
    files: Vec<FileEntry>,
    size_bytes: u64,
    new_bytes: u64,
    duration_ms: u64,
}

/// Checks a manifest's file path before it is used to read or write anything: a relative path
/// under `rocksdb/` or `extras/`, `/`-separated, no empty, `.` or `..` component, no NUL.
pub fn check_file_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "the manifest names an unsafe file path {path:?}: {why}"
        ))
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.contains('\0') {
        return bad("it holds a NUL byte");
    }
    if path.starts_with('/') || Path::new(path).is_absolute() {
        return bad("it is absolute");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("it has an empty component"),
            "." | ".." => return bad("it has a `.` or `..` component"),
            _ => {}
        }
    }
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return bad("it is not a plain relative path");
    }
    let top = path.split('/').next().unwrap_or_default();
    if top != ENGINE_DIR && top != EXTRAS_DIR {
        return bad("it is outside rocksdb/ and extras/");
    }
    Ok(())
}

/// What a backup holds and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `bak_…`.
    pub id: String,
    /// The `BackupEngine` id.
    pub engine_id: u32,
    pub created_at_us: i64,
    pub shard_count: u16,
    pub shards: Vec<ShardDigest>,
    /// Every file the backup needs (shared files included), sorted by path.
    pub files: Vec<FileEntry>,
    /// Sum of the files' sizes.
    pub size_bytes: u64,
    /// Bytes this backup added (files no earlier backup had).
    pub new_bytes: u64,
    /// How long creating it took.
    pub duration_ms: u64,
    /// The control audit chain's tip when the backup was taken (`None` in format 1 manifests
    /// and when the store had no audit chain).
    pub audit_anchor: Option<AuditAnchor>,
    /// Every shard audit chain's tip when the backup was taken. Encoded after the body (still
    /// under the HMAC), so manifests written before it read with none and older readers
    /// ignore it.
    #[serde(skip)]
    pub shard_anchors: Vec<ShardAnchor>,
    /// The id (hex) of the master key whose manifest key signed it, when read; `None`: a
    /// format 1 manifest, not authenticated. Not part of the encoded body.
    #[serde(skip)]
    pub signed_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup I/O failed: {0}")]
    Io(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no backup {0}")]
    NotFound(String),
    /// The backup failed verification; restoring it is refused.
    #[error("backup {id} failed verification: {detail}")]
    Refused { id: String, detail: String },
    #[error("{0}")]
    Target(String),
}

fn io_err(what: impl std::fmt::Display, error: std::io::Error) -> BackupError {
    BackupError::Io(format!("{what}: {error}"))
}

impl Manifest {
    /// Format byte, the signing key's master key id, postcard body, HMAC-SHA256 of the three
    /// under `key`.
    pub fn encode(&self, key: &ManifestKey) -> Vec<u8> {
        let mut bytes = vec![MANIFEST_FORMAT];
        bytes.extend_from_slice(&key.master_id);
        bytes.extend(postcard::to_stdvec(self).expect("a manifest serializes"));
        if !self.shard_anchors.is_empty() {
            bytes.extend(postcard::to_stdvec(&self.shard_anchors).expect("anchors serialize"));
        }
        let mut mac = key.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        bytes
    }

    /// Reads a manifest: a signed one is accepted only when its HMAC verifies under the
    /// manifest key of the master key it names (one of `keys`); a format 1 one when its
    /// SHA-256 matches, with `signed_by` = `None`. Either is refused when any file path is
    /// unsafe ([`check_file_path`]) or its id is not a backup id.
    pub fn decode(bytes: &[u8], keys: &ManifestKeys) -> Result<Manifest, String> {
        let manifest = match bytes.first() {
            None => return Err("the manifest is empty".into()),
            Some(&MANIFEST_FORMAT) => {
                if bytes.len() < 1 + MASTER_ID_BYTES + TAG_BYTES + 1 {
                    return Err(format!("manifest too short ({} bytes)", bytes.len()));
                }
                let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
                let master_id = &signed[1..1 + MASTER_ID_BYTES];
                let key = keys.find(master_id).ok_or_else(|| {
                    format!(
                        "the manifest is signed under master key {}, which is not among the \
                         known master keys ({}); keep every master key in the keyring",
                        hex_id(master_id),
                        keys.master_ids().join(", ")
                    )
                })?;
                let mut mac = key.mac();
                mac.update(signed);
                if mac.verify_slice(tag).is_err() {
                    return Err(
                        "the manifest's HMAC-SHA256 does not verify: it was altered, \
                                or not written by this orderd"
                            .into(),
                    );
                }
                let (mut manifest, rest): (Manifest, &[u8]) =
                    postcard::take_from_bytes(&signed[1 + MASTER_ID_BYTES..])
                        .map_err(|e| format!("manifest does not decode: {e}"))?;
                if !rest.is_empty() {
                    manifest.shard_anchors = postcard::from_bytes(rest)
                        .map_err(|e| format!("the manifest's shard anchors do not decode: {e}"))?;
                }
                manifest.signed_by = Some(key.master_id());
                manifest
            }
            Some(&MANIFEST_FORMAT_UNSIGNED) => {
                if bytes.len() < 33 {
                    return Err(format!("manifest too short ({} bytes)", bytes.len()));
                }
                let (body, sum) = bytes.split_at(bytes.len() - 32);
                if Sha256::digest(body).as_slice() != sum {
                    return Err("manifest checksum mismatch".into());
                }
                let old: ManifestV1 = postcard::from_bytes(&body[1..])
                    .map_err(|e| format!("manifest does not decode: {e}"))?;
                Manifest {
                    id: old.id,
                    engine_id: old.engine_id,
                    created_at_us: old.created_at_us,
                    shard_count: old.shard_count,
                    shards: old.shards,
                    files: old.files,
                    size_bytes: old.size_bytes,
                    new_bytes: old.new_bytes,
                    duration_ms: old.duration_ms,
                    audit_anchor: None,
                    shard_anchors: Vec::new(),
                    signed_by: None,
                }
            }
            Some(other) => return Err(format!("unknown manifest format {other}")),
        };
        if !valid_id(&manifest.id) {
            return Err(format!(
                "the manifest's id {:?} is not a backup id",
                manifest.id
            ));
        }
        for file in &manifest.files {
            check_file_path(&file.path)?;
        }
        Ok(manifest)
    }

    /// Whether it was authenticated when read (format 2, HMAC verified).
    pub fn authenticated(&self) -> bool {
        self.signed_by.is_some()
    }

    /// The manifest's path relative to a backup directory.
    pub fn relative_path(id: &str) -> String {
        format!("{MANIFEST_DIR}/{id}{MANIFEST_SUFFIX}")
    }
}

/// What long operations report, for progress bars. `total` and `done` are bytes.
pub trait Progress: Sync {
    /// A new phase starts (`"hash"`, `"restore"`, `"rebuild"`, `"upload"`, ...).
    fn phase(&self, name: &str, total: u64);
    fn advance(&self, done: u64);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// The result of a restore drill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub id: String,
    pub verified: bool,
    /// What was checked, or the first problems found.
    pub detail: String,
    pub duration_ms: u64,
}

/// Lowers the calling thread's CPU priority to nice 19 (Linux: per thread; threads it starts
/// inherit it). Backups and drills rebuild every shard, which is CPU work that must not take
/// cores from the live shards: the backup worker calls this once at start.
pub fn lower_thread_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
            tracing::warn!(
                message = "Cannot lower the backup thread's priority.",
                error = %std::io::Error::last_os_error()
            );
        }
    }
}

/// The shard count stored in `storage` and every shard rebuilt from it, with its digests.
pub fn digest_store(storage: &dyn Storage) -> Result<(u16, Vec<ShardDigest>), BackupError> {
    let stored = storage
        .get(Family::Control, SHARD_COUNT_KEY)?
        .ok_or_else(|| BackupError::Io("the store has no shard count".into()))?;
    let shard_count = u16::from_be_bytes(
        stored
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt("shard count".into()))?,
    );
    let shards = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shard_count)
            .map(|shard| {
                scope.spawn(move || -> Result<ShardDigest, BackupError> {
                    let recovered = recover_shard(storage, shard, shard_count)?;
                    Ok(ShardDigest {
                        shard,
                        seq: recovered.data.last_seq,
                        acknowledged_seq: 0,
                        state_digest: recovered.data.state_digest(),
                        log_digest: recovered.log_digest,
                        orders: recovered.data.orders.len() as u64,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("digest thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok((shard_count, shards))
}

/// Rebuilds every shard of the store in a RocksDB directory (a checkpoint, a restored copy) and
/// returns the shard count and each shard's digests. Backups and drills take it as a strategy:
/// in process ([`InProcess`]), or in a child process so that the rebuild's CPU, memory and
/// RocksDB threads stay away from a live server's shards (the gateway's).
pub trait Digester: Send + Sync {
    fn digest(&self, db_dir: &Path) -> Result<(u16, Vec<ShardDigest>), BackupError>;
}

/// Rebuilds in the calling process, reading the store read-only (no disk writes).
pub struct InProcess;

impl Digester for InProcess {
    fn digest(&self, db_dir: &Path) -> Result<(u16, Vec<ShardDigest>), BackupError> {
        let storage = RocksStorage::open_read_only(db_dir)?;
        digest_store(&storage)
    }
}

/// First line of [`encode_digests`]: a name and a format number.
const DIGESTS_HEADER: &str = "orderd-digests 1";

/// Digests as text, for a child process to hand them to its parent: a header line with the
/// shard count, then one line per shard (`shard seq state_digest log_digest orders`).
pub fn encode_digests(shard_count: u16, shards: &[ShardDigest]) -> String {
    let mut text = format!("{DIGESTS_HEADER} {shard_count}\n");
    for s in shards {
        text.push_str(&format!(
            "{} {} {:016x} {:016x} {}\n",
            s.shard, s.seq, s.state_digest, s.log_digest, s.orders
        ));
    }
    text
}

/// The inverse of [`encode_digests`].
pub fn parse_digests(text: &str) -> Result<(u16, Vec<ShardDigest>), String> {
    let mut lines = text.lines();
    let count: u16 = lines
        .next()
        .and_then(|line| line.strip_prefix(DIGESTS_HEADER))
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| format!("not a digest list: {text:?}"))?;
    let mut shards = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("bad digest line {line:?}");
        if words.len() != 5 {
            return Err(bad());
        }
        shards.push(ShardDigest {
            shard: words[0].parse().map_err(|_| bad())?,
            seq: words[1].parse().map_err(|_| bad())?,
            acknowledged_seq: 0,
            state_digest: u64::from_str_radix(words[2], 16).map_err(|_| bad())?,
            log_digest: u64::from_str_radix(words[3], 16).map_err(|_| bad())?,
            orders: words[4].parse().map_err(|_| bad())?,
        });
    }
    if shards.len() != count as usize {
        return Err(format!("{} digest lines for {count} shards", shards.len()));
    }
    Ok((count, shards))
}

/// Compares rebuilt shards with a manifest's; `None` when they match.
fn compare_shards(manifest: &Manifest, shard_count: u16, shards: &[ShardDigest]) -> Option<String> {
    if shard_count != manifest.shard_count {
        return Some(format!(
            "restored store has {shard_count} shards, manifest says {}",
            manifest.shard_count
        ));
    }
    let mut problems = Vec::new();
    for (got, want) in shards.iter().zip(&manifest.shards) {
        if got.seq != want.seq {
            problems.push(format!(
                "shard {}: seq {} restored, {} in the manifest",
                want.shard, got.seq, want.seq
            ));
        } else if got.state_digest != want.state_digest || got.log_digest != want.log_digest {
            problems.push(format!(
                "shard {}: digest {:016x}/{:016x} restored, {:016x}/{:016x} in the manifest",
                want.shard, got.state_digest, got.log_digest, want.state_digest, want.log_digest
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// SHA-256 of a file, reporting bytes read.
pub fn sha256_file(path: &Path, progress: &dyn Progress) -> std::io::Result<([u8; 32], u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.advance(n as u64);
    }
    Ok((hasher.finalize().into(), total))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir.display(), e))?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp).map_err(|e| io_err(tmp.display(), e))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| io_err(tmp.display(), e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(path.display(), e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir.display(), e))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), BackupError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir.display(), e)),
    }
}

/// The files a `BackupEngine` backup needs, read from its meta file (`meta/<id>`): every line
/// whose first word is a path under `shared/`, `shared_checksum/` or `private/`. Paths are
/// relative to the engine directory; the meta file itself comes first.
fn engine_files(engine_dir: &Path, engine_id: u32) -> Result<Vec<String>, BackupError> {
    let meta = format!("meta/{engine_id}");
    let text = std::fs::read_to_string(engine_dir.join(&meta))
        .map_err(|e| io_err(engine_dir.join(&meta).display(), e))?;
    let mut files = vec![meta.clone()];
    for line in text.lines() {
        if let Some(word) = line.split_whitespace().next() {
            if ["shared/", "shared_checksum/", "private/"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
            {
                files.push(word.to_string());
            }
        }
    }
    if files.len() == 1 {
        return Err(BackupError::Io(format!("{meta} lists no files")));
    }
    Ok(files)
}

/// The file a restore leaves in the data directory: which backup it came from and when, so
/// that audit verification ignores the tips anchored by backups taken between that backup and
/// the restore (the restored chain never had their entries).
pub const RESTORED_FROM_FILE: &str = "restored-from";

/// What [`RESTORED_FROM_FILE`] holds: `<id> <backup created_at_us> <restored_at_us>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredFrom {
    pub id: String,
    pub created_at_us: i64,
    pub restored_at_us: i64,
}

impl RestoredFrom {
    /// The marker in `data_dir`, `None` when there is none (or it does not parse).
    pub fn read(data_dir: &Path) -> Option<RestoredFrom> {
        let text = std::fs::read_to_string(data_dir.join(RESTORED_FROM_FILE)).ok()?;
        let words: Vec<&str> = text.split_whitespace().collect();
        match words[..] {
            [id, created, restored] => Some(RestoredFrom {
                id: id.to_string(),
                created_at_us: created.parse().ok()?,
                restored_at_us: restored.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {}\n",
            self.id, self.created_at_us, self.restored_at_us
        )
    }

    /// Whether a backup created at `created_at_us` was taken after the restored one and before
    /// the restore: its anchor belongs to a chain this store no longer continues.
    pub fn superseded(&self, created_at_us: i64) -> bool {
        created_at_us > self.created_at_us && created_at_us <= self.restored_at_us
    }
}

/// The readable manifests of a backup directory, oldest first, and `(id, error)` of each
/// unreadable one.
pub type ManifestList = (Vec<Manifest>, Vec<(String, String)>);

/// A backup directory (see the module documentation for its layout).
#[derive(Clone)]
pub struct Repo {
    dir: PathBuf,
    digester: std::sync::Arc<dyn Digester>,
    /// Sign new manifests and verify stored ones.
    keys: ManifestKeys,
}

/// How [`Repo::restore`] treats what is in the way and what is not authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Move a non-empty data directory aside instead of refusing.
    pub replace: bool,
    /// Restore a backup whose manifest is not authenticated (format 1, made before manifests
    /// were signed, or made to look so): its files are still checked against it, but whoever
    /// could write the backup directory could have written it. Off by default.
    pub allow_unauthenticated: bool,
}

impl Repo {
    /// The backup directory `dir`, whose manifests `keys` sign and verify; shards are rebuilt
    /// in this process.
    pub fn new(dir: impl Into<PathBuf>, keys: ManifestKeys) -> Repo {
        Repo {
            dir: dir.into(),
            digester: std::sync::Arc::new(InProcess),
            keys,
        }
    }

    /// Another backup directory, with this one's digester and keys.
    pub fn at(&self, dir: impl Into<PathBuf>) -> Repo {
        Repo {
            dir: dir.into(),
            digester: self.digester.clone(),
            keys: self.keys.clone(),
        }
    }

    /// The same directory with other manifest keys (after a master key rotation).
    pub fn with_keys(self, keys: ManifestKeys) -> Repo {
        Repo { keys, ..self }
    }

    pub fn keys(&self) -> &ManifestKeys {
        &self.keys
    }

    /// The same directory, with shards rebuilt by `digester`.
    pub fn with_digester(self, digester: std::sync::Arc<dyn Digester>) -> Repo {
        Repo { digester, ..self }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn engine_dir(&self) -> PathBuf {
        self.dir.join(ENGINE_DIR)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.dir.join(Manifest::relative_path(id))
    }

    /// Every readable manifest, oldest first; unreadable ones are returned as `(id, error)`.
    pub fn manifests(&self) -> Result<ManifestList, BackupError> {
        let dir = self.dir.join(MANIFEST_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()))
            }
            Err(e) => return Err(io_err(dir.display(), e)),
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(dir.display(), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(MANIFEST_SUFFIX) else {
                continue;
            };
            match self.manifest(id) {
                Ok(manifest) => good.push(manifest),
                Err(error) => bad.push((id.to_string(), error.to_string())),
            }
        }
        good.sort_by_key(|m: &Manifest| (m.created_at_us, m.engine_id));
        Ok((good, bad))
    }

    /// The manifest of backup `id`.
    pub fn manifest(&self, id: &str) -> Result<Manifest, BackupError> {
        if !valid_id(id) {
            return Err(BackupError::NotFound(id.to_string()));
        }
        let path = self.manifest_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(path.display(), e)),
        };
        let manifest =
            Manifest::decode(&bytes, &self.keys).map_err(|detail| BackupError::Refused {
                id: id.to_string(),
                detail,
            })?;
        if manifest.id != id {
            return Err(BackupError::Refused {
                id: id.to_string(),
                detail: format!("the manifest of {id} is the manifest of {}", manifest.id),
            });
        }
        Ok(manifest)
    }

    /// The highest control-chain tip an authenticated manifest anchored, with its backup's id,
    /// skipping backups a restore superseded (see [`RestoredFrom`]).
    pub fn newest_anchor(
        &self,
        restored: Option<&RestoredFrom>,
    ) -> Result<Option<(String, AuditAnchor)>, BackupError> {
        Ok(self
            .manifests()?
            .0
            .into_iter()
            .filter(|m| m.authenticated())
            .filter(|m| !restored.is_some_and(|r| r.superseded(m.created_at_us)))
            .filter_map(|m| m.audit_anchor.map(|anchor| (m.id, anchor)))
            .max_by_key(|(_, anchor)| anchor.seq))
    }

    /// The shard chains' tips the newest authenticated manifest that has them anchored, with
    /// its backup's id, skipping backups a restore superseded.
    pub fn newest_shard_anchors(
        &self,
        restored: Option<&RestoredFrom>,
    ) -> Result<Option<(String, Vec<ShardAnchor>)>, BackupError> {
        Ok(self
            .manifests()?
            .0
            .into_iter()
            .filter(|m| m.authenticated() && !m.shard_anchors.is_empty())
            .filter(|m| !restored.is_some_and(|r| r.superseded(m.created_at_us)))
            .max_by_key(|m| (m.created_at_us, m.engine_id))
            .map(|m| (m.id, m.shard_anchors)))
    }

    /// The stored bytes of backup `id`'s manifest, as read (an upload sends them unchanged, so
    /// a format 1 manifest is never re-signed) and their reading.
    pub fn manifest_bytes(&self, id: &str) -> Result<(Vec<u8>, Manifest), BackupError> {
        let manifest = self.manifest(id)?;
        let path = self.manifest_path(id);
        let bytes = std::fs::read(&path).map_err(|e| io_err(path.display(), e))?;
        match Manifest::decode(&bytes, &self.keys) {
            Ok(again) if again == manifest => Ok((bytes, manifest)),
            _ => Err(BackupError::Refused {
                id: id.to_string(),
                detail: "the manifest changed while it was read".into(),
            }),
        }
    }

    /// Takes a backup of `storage`: checkpoint into `checkpoint_dir` (on the same filesystem
    /// as the store, removed afterwards), rebuild every shard from it for the digests, check
    /// that every shard holds at least `acknowledged[shard]`, back the checkpoint up, keep
    /// `extras` beside it, write the manifest (signed, with `audit_anchor`: the control audit
    /// chain's tip, read before the checkpoint, so the backup holds at least that much).
    pub fn create(
        &self,
        storage: &dyn Storage,
        checkpoint_dir: &Path,
        acknowledged: &[u64],
        extras: &[(&str, Vec<u8>)],
        audit_anchor: Option<AuditAnchor>,
        progress: &dyn Progress,
    ) -> Result<Manifest, BackupError> {
        let started = Instant::now();
        let created_at_us = crate::clock::now_us();
        remove_dir_if_exists(checkpoint_dir)?;
        if let Some(parent) = checkpoint_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent.display(), e))?;
        }
        // Read before the checkpoint, as the control chain's tip: the backup holds at least these.
        let shards_anchored = shard_anchors(storage)?;
        progress.phase("checkpoint", 0);
        storage.checkpoint(checkpoint_dir)?;
        let result = self.create_from_checkpoint(
            checkpoint_dir,
            acknowledged,
            extras,
            (created_at_us, audit_anchor, shards_anchored),
            started,
            progress,
        );
        remove_dir_if_exists(checkpoint_dir)?;
        result
    }

    fn create_from_checkpoint(
        &self,
        checkpoint_dir: &Path,
        acknowledged: &[u64],
        extras: &[(&str, Vec<u8>)],
        (created_at_us, audit_anchor, shard_anchors): (i64, Option<AuditAnchor>, Vec<ShardAnchor>),
        started: Instant,
        progress: &dyn Progress,
    ) -> Result<Manifest, BackupError> {
        progress.phase("rebuild", 0);
        let (shard_count, mut shards) = self.digester.digest(checkpoint_dir)?;
        for shard in &mut shards {
            let acked = acknowledged.get(shard.shard as usize).copied().unwrap_or(0);
            if shard.seq < acked {
                return Err(BackupError::Io(format!(
                    "shard {}: the checkpoint ends at seq {} but seq {acked} was acknowledged",
                    shard.shard, shard.seq
                )));
            }
            shard.acknowledged_seq = acked;
        }
        let engine_dir = self.engine_dir();
        std::fs::create_dir_all(&engine_dir).map_err(|e| io_err(engine_dir.display(), e))?;
        progress.phase("copy", 0);
        let copy = RocksStorage::open(checkpoint_dir)?;
        let engine_id = copy.backup_into(&engine_dir)?;
        drop(copy);
        let id = format!("bak_{engine_id:06}_{:08x}", rand_u32());
        for (name, bytes) in extras {
            write_atomic(&self.dir.join(EXTRAS_DIR).join(&id).join(name), bytes)?;
        }
        // Hashes of shared files carry over from earlier manifests: their names hold their
        // size and checksum and they never change.
        let mut known: HashMap<String, FileEntry> = HashMap::new();
        for manifest in self.manifests()?.0 {
            for file in manifest.files {
                if file.path.contains("/shared") {
                    known.insert(file.path.clone(), file);
                }
            }
        }
        let mut paths: Vec<String> = engine_files(&engine_dir, engine_id)?
            .into_iter()
            .map(|p| format!("{ENGINE_DIR}/{p}"))
            .collect();
        for (name, _) in extras {
            paths.push(format!("{EXTRAS_DIR}/{id}/{name}"));
        }
        paths.sort();
        paths.dedup();
        let mut sizes = Vec::with_capacity(paths.len());
        let mut total = 0u64;
        for path in &paths {
            let len = std::fs::metadata(self.dir.join(path))
                .map_err(|e| io_err(path, e))?
                .len();
            sizes.push(len);
            total += len;
        }
        progress.phase("hash", total);
        let mut files = Vec::with_capacity(paths.len());
        let mut new_bytes = 0u64;
        for (path, size) in paths.into_iter().zip(sizes) {
            match known.get(&path) {
                Some(entry) if entry.size == size => {
                    progress.advance(size);
                    files.push(entry.clone());
                }
                _ => {
                    let (sha256, len) = sha256_file(&self.dir.join(&path), progress)
                        .map_err(|e| io_err(&path, e))?;
                    new_bytes += len;
                    files.push(FileEntry {
                        path,
                        size: len,
                        sha256,
                    });
                }
            }
        }
        let manifest = Manifest {
            id: id.clone(),
            engine_id,
            created_at_us,
            shard_count,
            shards,
            size_bytes: files.iter().map(|f| f.size).sum(),
            files,
            new_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
            audit_anchor,
            shard_anchors,
            signed_by: Some(self.keys.signing().master_id()),
        };
        write_atomic(
            &self.manifest_path(&id),
            &manifest.encode(self.keys.signing()),
        )?;
        Ok(manifest)
    }

    /// Checks every file of `manifest`: present, of its size, of its SHA-256. Returns the
    /// problems found (at most 5 named), empty when all is well.
    pub fn check_files(&self, manifest: &Manifest, progress: &dyn Progress) -> Vec<String> {
        progress.phase("hash", manifest.size_bytes);
        let mut problems = Vec::new();
        for file in &manifest.files {
            let path = self.dir.join(&file.path);
            match std::fs::metadata(&path) {
                Err(_) => {
                    problems.push(format!("{} is missing", file.path));
                    progress.advance(file.size);
                    continue;
                }
                Ok(meta) if meta.len() != file.size => {
                    problems.push(format!(
                        "{} is {} bytes, the manifest says {}",
                        file.path,
                        meta.len(),
                        file.size
                    ));
                    progress.advance(file.size);
                    continue;
                }
                Ok(_) => {}
            }
            match sha256_file(&path, progress) {
                Ok((sum, _)) if sum == file.sha256 => {}
                Ok(_) => problems.push(format!("{} does not match its SHA-256", file.path)),
                Err(e) => problems.push(format!("{} cannot be read: {e}", file.path)),
            }
        }
        if problems.len() > 5 {
            let more = problems.len() - 5;
            problems.truncate(5);
            problems.push(format!("and {more} more"));
        }
        problems
    }

    /// Restores backup `manifest` into the data directory `data_dir` (which must not exist),
    /// rebuilds every shard and compares digests; `Err(detail)` on a mismatch.
    fn restore_checked(
        &self,
        manifest: &Manifest,
        data_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Result<(), String>, BackupError> {
        progress.phase("restore", manifest.size_bytes);
        let db = data_dir.join(DB_DIR);
        std::fs::create_dir_all(data_dir).map_err(|e| io_err(data_dir.display(), e))?;
        if let Err(error) = rocks::restore_backup(&self.engine_dir(), manifest.engine_id, &db) {
            return Ok(Err(format!("RocksDB refused to restore it: {error}")));
        }
        progress.advance(manifest.size_bytes);
        progress.phase("rebuild", 0);
        match self.digester.digest(&db) {
            Ok((count, shards)) => Ok(match compare_shards(manifest, count, &shards) {
                Some(problem) => Err(problem),
                None => Ok(()),
            }),
            Err(error) => Ok(Err(format!("rebuilding the shards failed: {error}"))),
        }
    }

    /// A restore drill: check every file, restore into `scratch/<id>`, rebuild every shard,
    /// compare digests with the manifest, remove the scratch copy.
    pub fn verify(&self, id: &str, progress: &dyn Progress) -> Result<VerifyReport, BackupError> {
        let started = Instant::now();
        let report = |verified: bool, detail: String| VerifyReport {
            id: id.to_string(),
            verified,
            detail,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let manifest = match self.manifest(id) {
            Ok(manifest) => manifest,
            Err(BackupError::Refused { detail, .. }) => return Ok(report(false, detail)),
            Err(error) => return Err(error),
        };
        let problems = self.check_files(&manifest, progress);
        if !problems.is_empty() {
            return Ok(report(false, problems.join("; ")));
        }
        let scratch = self.dir.join(SCRATCH_DIR).join(id);
        remove_dir_if_exists(&scratch)?;
        let outcome = self.restore_checked(&manifest, &scratch, progress);
        remove_dir_if_exists(&scratch)?;
        let unsigned = if manifest.authenticated() {
            ""
        } else {
            "UNAUTHENTICATED manifest (format 1, made before manifests were signed): "
        };
        Ok(match outcome? {
            Ok(()) => report(
                true,
                format!(
                    "{unsigned}{} files ({} bytes) match their SHA-256; restored and rebuilt {} \
                     shards ({} orders), every digest matches the manifest",
                    manifest.files.len(),
                    manifest.size_bytes,
                    manifest.shard_count,
                    manifest.shards.iter().map(|s| s.orders).sum::<u64>()
                ),
            ),
            Err(detail) => report(false, format!("{unsigned}{detail}")),
        })
    }

    /// Restores backup `id` into the data directory `data_dir`, after the same checks as a
    /// drill; refused (nothing touched) when they fail. An existing, non-empty `data_dir` is
    /// refused unless `options.replace`, which moves it aside to `<data_dir>.replaced-<time>`
    /// (returned); a store that a running server holds is always refused. A manifest that is
    /// not authenticated is refused unless `options.allow_unauthenticated` (then restored with
    /// a warning in the log).
    pub fn restore(
        &self,
        id: &str,
        data_dir: &Path,
        options: RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<Option<PathBuf>, BackupError> {
        let replace = options.replace;
        let manifest = self.manifest(id)?;
        if !manifest.authenticated() {
            if !options.allow_unauthenticated {
                return Err(BackupError::Refused {
                    id: id.to_string(),
                    detail: "its manifest is not authenticated (format 1, made before \
                             manifests were signed, or made to look so); restore it only if \
                             you trust every copy of this backup directory, with \
                             --allow-unauthenticated"
                        .into(),
                });
            }
            tracing::warn!(
                message = "RESTORING A BACKUP WHOSE MANIFEST IS NOT AUTHENTICATED, as explicitly allowed.",
                id
            );
        }
        let occupied = dir_has_entries(data_dir)?;
        if occupied {
            if data_dir.join(DB_DIR).join("CURRENT").exists() {
                if let Err(error) = RocksStorage::open(&data_dir.join(DB_DIR)) {
                    return Err(BackupError::Target(format!(
                        "the store in {} cannot be opened (is orderd still running? stop it \
                         first): {error}",
                        data_dir.display()
                    )));
                }
            }
            if !replace {
                return Err(BackupError::Target(format!(
                    "{} is not empty; stop orderd and pass --replace to move it aside",
                    data_dir.display()
                )));
            }
        }
        let problems = self.check_files(&manifest, progress);
        if !problems.is_empty() {
            return Err(BackupError::Refused {
                id: id.to_string(),
                detail: problems.join("; "),
            });
        }
        let staging = sibling(data_dir, "restoring");
        remove_dir_if_exists(&staging)?;
        match self.restore_checked(&manifest, &staging, progress)? {
            Ok(()) => {}
            Err(detail) => {
                remove_dir_if_exists(&staging)?;
                return Err(BackupError::Refused {
                    id: id.to_string(),
                    detail,
                });
            }
        }
        let restored = RestoredFrom {
            id: id.to_string(),
            created_at_us: manifest.created_at_us,
            restored_at_us: crate::clock::now_us(),
        };
        write_atomic(
            &staging.join(RESTORED_FROM_FILE),
            restored.encode().as_bytes(),
        )?;
        let extras = self.dir.join(EXTRAS_DIR).join(id);
        for file in &manifest.files {
            if let Some(name) = file.path.strip_prefix(&format!("{EXTRAS_DIR}/{id}/")) {
                let bytes = std::fs::read(extras.join(name)).map_err(|e| io_err(name, e))?;
                write_atomic(&staging.join(name), &bytes)?;
            }
        }
        let moved = if occupied {
            let aside = sibling(
                data_dir,
                &format!("replaced-{}", crate::clock::now_us() / 1_000_000),
            );
            std::fs::rename(data_dir, &aside).map_err(|e| io_err(data_dir.display(), e))?;
            Some(aside)
        } else {
            remove_dir_if_exists(data_dir)?;
            None
        };
        std::fs::rename(&staging, data_dir).map_err(|e| io_err(data_dir.display(), e))?;
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(moved)
    }

    /// Keeps the newest `keep` backups: older ones, their manifests, extras and every file
    /// only they used are deleted. Returns the ids deleted.
    pub fn retain(&self, keep: usize) -> Result<Vec<String>, BackupError> {
        let engine_dir = self.engine_dir();
        if !engine_dir.exists() {
            return Ok(Vec::new());
        }
        rocks::purge_backups(&engine_dir, keep)?;
        let live = rocks::backup_ids(&engine_dir)?;
        let mut deleted = Vec::new();
        for manifest in self.manifests()?.0 {
            if !live.contains(&manifest.engine_id) {
                remove_file_if_exists(&self.manifest_path(&manifest.id))?;
                remove_dir_if_exists(&self.dir.join(EXTRAS_DIR).join(&manifest.id))?;
                deleted.push(manifest.id);
            }
        }
        Ok(deleted)
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path.display(), e)),
    }
}

fn dir_has_entries(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(dir.display(), e)),
    }
}

/// `<dir>.<suffix>` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "data".into());
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// `bak_` and then letters, digits and `_` only (ids become file names).
pub fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with("bak_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn rand_u32() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&now.as_nanos().to_le_bytes()) as u32 ^ std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> ManifestKey {
        ManifestKey::derive([seed; MASTER_ID_BYTES], &[seed; 32])
    }

    fn keys() -> ManifestKeys {
        ManifestKeys::new(key(1), [])
    }

    fn sample() -> Manifest {
        Manifest {
            id: "bak_000001_0000abcd".into(),
            engine_id: 1,
            created_at_us: 7,
            shard_count: 1,
            shards: vec![ShardDigest {
                shard: 0,
                seq: 9,
                acknowledged_seq: 8,
                state_digest: 1,
                log_digest: 2,
                orders: 3,
            }],
            files: vec![FileEntry {
                path: "rocksdb/meta/1".into(),
                size: 10,
                sha256: [7; 32],
            }],
            size_bytes: 10,
            new_bytes: 10,
            duration_ms: 1,
            audit_anchor: Some(AuditAnchor {
                seq: 5,
                hash: "ab".repeat(32),
            }),
            shard_anchors: vec![ShardAnchor {
                shard: 0,
                seq: 4,
                hash: "cd".repeat(32),
            }],
            signed_by: Some(key(1).master_id()),
        }
    }

    /// A format 1 manifest, as orderd wrote them before manifests were signed.
    fn unsigned(manifest: &Manifest) -> Vec<u8> {
        #[derive(Serialize)]
        struct V1<'a> {
            id: &'a str,
            engine_id: u32,
            created_at_us: i64,
            shard_count: u16,
            shards: &'a [ShardDigest],
            files: &'a [FileEntry],
            size_bytes: u64,
            new_bytes: u64,
            duration_ms: u64,
        }
        let mut bytes = vec![MANIFEST_FORMAT_UNSIGNED];
        bytes.extend(
            postcard::to_stdvec(&V1 {
                id: &manifest.id,
                engine_id: manifest.engine_id,
                created_at_us: manifest.created_at_us,
                shard_count: manifest.shard_count,
                shards: &manifest.shards,
                files: &manifest.files,
                size_bytes: manifest.size_bytes,
                new_bytes: manifest.new_bytes,
                duration_ms: manifest.duration_ms,
            })
            .unwrap(),
        );
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        bytes
    }

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let manifest = sample();
        let bytes = manifest.encode(&key(1));
        assert_eq!(Manifest::decode(&bytes, &keys()).unwrap(), manifest);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Manifest::decode(&bad, &keys()).is_err(),
                "flip at {i} undetected"
            );
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1], &keys()).is_err());
        // Written before shard anchors (nothing after the body): read with none.
        let mut before = sample();
        before.shard_anchors.clear();
        let read = Manifest::decode(&before.encode(&key(1)), &keys()).unwrap();
        assert_eq!(read, before);
    }

    /// Fails on the unkeyed SHA-256 manifest: anyone could recompute the checksum.
    #[test]
    fn a_manifest_signed_under_an_unknown_key_or_recomputed_is_refused() {
        let manifest = sample();
        // Signed under another master key's manifest key: refused, naming both keys.
        let foreign = manifest.encode(&key(2));
        let error = Manifest::decode(&foreign, &keys()).unwrap_err();
        assert!(error.contains(&key(2).master_id()), "{error}");
        assert!(error.contains(&key(1).master_id()), "{error}");
        // Edited, with the tag replaced by the SHA-256 of the rest (what an attacker without
        // the key can compute): refused.
        let mut edited = manifest.clone();
        edited.files[0].sha256 = [9; 32];
        let mut bytes = edited.encode(&key(1));
        bytes.truncate(bytes.len() - 32);
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        let error = Manifest::decode(&bytes, &keys()).unwrap_err();
        assert!(error.contains("HMAC-SHA256 does not verify"), "{error}");
        // Known older keys still verify (after a master key rotation).
        let rotated = ManifestKeys::new(key(3), [key(2), key(1)]);
        let read = Manifest::decode(&foreign, &rotated).unwrap();
        assert_eq!(read.signed_by, Some(key(2).master_id()));
    }

    #[test]
    fn format_1_manifests_are_read_as_unauthenticated() {
        let mut manifest = sample();
        let read = Manifest::decode(&unsigned(&manifest), &keys()).unwrap();
        manifest.audit_anchor = None;
        manifest.shard_anchors.clear();
        manifest.signed_by = None;
        assert_eq!(read, manifest);
        assert!(!read.authenticated());
    }

    /// Fails on today's code, which joined `files[].path` unchecked.
    #[test]
    fn a_manifest_with_an_unsafe_path_is_refused_whole() {
        for bad in [
            "",
            "/etc/passwd",
            "../../etc/cron.d/x",
            "rocksdb/../../x",
            "rocksdb/./meta/1",
            "rocksdb//meta/1",
            "rocksdb/meta/1/",
            "./rocksdb/meta/1",
            "manifests/bak_000002_00000000.manifest",
            "scratch/x",
            "rocksdb/a\0b",
        ] {
            let mut manifest = sample();
            manifest.files.push(FileEntry {
                path: bad.into(),
                size: 1,
                sha256: [0; 32],
            });
            for bytes in [manifest.encode(&key(1)), unsigned(&manifest)] {
                let error = Manifest::decode(&bytes, &keys()).unwrap_err();
                assert!(error.contains("unsafe file path"), "{bad:?}: {error}");
            }
        }
        for good in [
            "rocksdb/shared_checksum/1_2_3.sst",
            "extras/bak_1/keys.json",
        ] {
            assert_eq!(check_file_path(good), Ok(()), "{good}");
        }
    }

    /// Issue 17, item 8: a backup whose manifest is format 1 (unkeyed SHA-256, which anyone
    /// can recompute) is listed and drilled but restored only with the explicit override. On
    /// today's code any manifest with a matching SHA-256 restores.
    #[test]
    fn an_unauthenticated_manifest_restores_only_when_explicitly_allowed() {
        let root = tempfile::tempdir().unwrap();
        let storage = RocksStorage::open(&root.path().join("live")).unwrap();
        storage
            .write(
                vec![crate::storage::Write::Put {
                    family: Family::Control,
                    key: SHARD_COUNT_KEY.to_vec(),
                    value: 1u16.to_be_bytes().to_vec(),
                }],
                true,
            )
            .unwrap();
        let repo = Repo::new(root.path().join("backups"), keys());
        let manifest = repo
            .create(
                &storage,
                &root.path().join("checkpoint"),
                &[0],
                &[],
                None,
                &NoProgress,
            )
            .unwrap();
        std::fs::write(repo.manifest_path(&manifest.id), unsigned(&manifest)).unwrap();
        let (listed, unreadable) = repo.manifests().unwrap();
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].authenticated());
        let drill = repo.verify(&manifest.id, &NoProgress).unwrap();
        assert!(drill.verified, "{}", drill.detail);
        assert!(
            drill.detail.starts_with("UNAUTHENTICATED"),
            "{}",
            drill.detail
        );
        let target = root.path().join("restored");
        let error = repo
            .restore(
                &manifest.id,
                &target,
                RestoreOptions::default(),
                &NoProgress,
            )
            .unwrap_err();
        assert!(error.to_string().contains("not authenticated"), "{error}");
        assert!(!target.exists());
        let allowed = RestoreOptions {
            allow_unauthenticated: true,
            ..RestoreOptions::default()
        };
        repo.restore(&manifest.id, &target, allowed, &NoProgress)
            .unwrap();
        assert!(target.join(DB_DIR).join("CURRENT").is_file());
        // A manifest file holding another backup's manifest is refused.
        let other = "bak_999999_00000000";
        std::fs::copy(repo.manifest_path(&manifest.id), repo.manifest_path(other)).unwrap();
        let error = repo.manifest(other).unwrap_err();
        assert!(error.to_string().contains("is the manifest of"), "{error}");
    }

    #[test]
    fn digests_round_trip_as_text() {
        let shards = vec![
            ShardDigest {
                shard: 0,
                seq: 12,
                acknowledged_seq: 0,
                state_digest: u64::MAX,
                log_digest: 0,
                orders: 7,
            },
            ShardDigest {
                shard: 1,
                seq: 0,
                acknowledged_seq: 0,
                state_digest: 1,
                log_digest: 2,
                orders: 0,
            },
        ];
        let text = encode_digests(2, &shards);
        assert_eq!(parse_digests(&text).unwrap(), (2, shards));
        assert!(parse_digests("orderd-digests 1 3\n0 1 2 3 4\n").is_err());
        assert!(parse_digests("hello").is_err());
    }

    #[test]
    fn ids_are_safe_file_names() {
        assert!(valid_id("bak_000001_0000abcd"));
        for bad in ["", "bak_../x", "bak_a/b", "key_1", "bak_a.b"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}

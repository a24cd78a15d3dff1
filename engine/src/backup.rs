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
//! | `manifests/<id>.manifest` | the manifest: format byte, postcard body, SHA-256 of both |
//! | `extras/<id>/<name>` | files kept beside the store (the gateway's `keys.json`) |
//! | `scratch/` | restore drills (local only, emptied after each) |
//!
//! Why a checkpoint first: the digests in the manifest must describe exactly what the backup
//! holds. The checkpoint is a consistent copy of the live store (hard links, no pause for
//! writers); the shards are rebuilt from it to take their digests, and the backup is taken of
//! that same checkpoint. Every order acknowledged before the backup started is in it: the
//! rebuilt sequence of each shard is checked against the log writer's durable sequence read at
//! the start.

use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{recover_shard, EngineError, SHARD_COUNT_KEY};
use crate::storage::rocks::{self, RocksStorage};
use crate::storage::{Family, Storage, StorageError};

/// Format byte of a manifest file.
pub const MANIFEST_FORMAT: u8 = 1;
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
    /// Format byte, postcard body, SHA-256 of both (so a damaged manifest is detected).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![MANIFEST_FORMAT];
        bytes.extend(postcard::to_stdvec(self).expect("a manifest serializes"));
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() < 33 {
            return Err(format!("manifest too short ({} bytes)", bytes.len()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err("manifest checksum mismatch".into());
        }
        if body[0] != MANIFEST_FORMAT {
            return Err(format!("unknown manifest format {}", body[0]));
        }
        postcard::from_bytes(&body[1..]).map_err(|e| format!("manifest does not decode: {e}"))
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

/// The readable manifests of a backup directory, oldest first, and `(id, error)` of each
/// unreadable one.
pub type ManifestList = (Vec<Manifest>, Vec<(String, String)>);

/// A backup directory (see the module documentation for its layout).
#[derive(Clone)]
pub struct Repo {
    dir: PathBuf,
    digester: std::sync::Arc<dyn Digester>,
}

impl Repo {
    /// The backup directory `dir`; shards are rebuilt in this process.
    pub fn new(dir: impl Into<PathBuf>) -> Repo {
        Repo {
            dir: dir.into(),
            digester: std::sync::Arc::new(InProcess),
        }
    }

    /// Another backup directory, with this one's digester.
    pub fn at(&self, dir: impl Into<PathBuf>) -> Repo {
        Repo {
            dir: dir.into(),
            digester: self.digester.clone(),
        }
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
        Manifest::decode(&bytes).map_err(|detail| BackupError::Refused {
            id: id.to_string(),
            detail,
        })
    }

    /// Takes a backup of `storage`: checkpoint into `checkpoint_dir` (on the same filesystem
    /// as the store, removed afterwards), rebuild every shard from it for the digests, check
    /// that every shard holds at least `acknowledged[shard]`, back the checkpoint up, keep
    /// `extras` beside it, write the manifest.
    pub fn create(
        &self,
        storage: &dyn Storage,
        checkpoint_dir: &Path,
        acknowledged: &[u64],
        extras: &[(&str, Vec<u8>)],
        progress: &dyn Progress,
    ) -> Result<Manifest, BackupError> {
        let started = Instant::now();
        let created_at_us = crate::clock::now_us();
        remove_dir_if_exists(checkpoint_dir)?;
        if let Some(parent) = checkpoint_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent.display(), e))?;
        }
        progress.phase("checkpoint", 0);
        storage.checkpoint(checkpoint_dir)?;
        let result = self.create_from_checkpoint(
            checkpoint_dir,
            acknowledged,
            extras,
            created_at_us,
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
        created_at_us: i64,
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
        };
        write_atomic(&self.manifest_path(&id), &manifest.encode())?;
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
        Ok(match outcome? {
            Ok(()) => report(
                true,
                format!(
                    "{} files ({} bytes) match their SHA-256; restored and rebuilt {} shards \
                     ({} orders), every digest matches the manifest",
                    manifest.files.len(),
                    manifest.size_bytes,
                    manifest.shard_count,
                    manifest.shards.iter().map(|s| s.orders).sum::<u64>()
                ),
            ),
            Err(detail) => report(false, detail),
        })
    }

    /// Restores backup `id` into the data directory `data_dir`, after the same checks as a
    /// drill; refused (nothing touched) when they fail. An existing, non-empty `data_dir` is
    /// refused unless `replace`, which moves it aside to `<data_dir>.replaced-<time>` (returned);
    /// a store that a running server holds is always refused.
    pub fn restore(
        &self,
        id: &str,
        data_dir: &Path,
        replace: bool,
        progress: &dyn Progress,
    ) -> Result<Option<PathBuf>, BackupError> {
        let manifest = self.manifest(id)?;
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

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let manifest = Manifest {
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
        };
        let bytes = manifest.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
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

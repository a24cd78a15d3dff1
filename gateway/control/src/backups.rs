//! The backup service: one worker thread that takes backups (on request and on schedule),
//! copies them off-site with retries, runs restore drills (on request and on schedule), keeps
//! the newest `backup.retention_count`, and the backup index in `control` that
//! `GET /v1/ops/backups`, the inspection and the metrics read.
//!
//! One worker, one job at a time: backups and drills never overlap, and a queue of
//! `backup.queue_capacity` requests bounds what waits (more get 503). The worker owns the
//! off-site store (it blocks on its own runtime, so it must not run on an actix thread).
//! Failures write incidents (component `backup`, kinds `backup_failed`, `offsite_failed`,
//! `verify_failed`), marked recovered by the next success of the same kind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderd_engine::backup::{
    self, BackupError, Digester, ManifestKeys, NoProgress, Repo, ShardDigest,
};
use orderd_engine::Engine;
use orderd_storage::{Family, Storage, StorageError, Write};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::inspection::{BackupInfo, BackupStatus, Verification};
use crate::offsite::Offsite;
use orderd_config::{BackupConfig, Config};
use orderd_service::auth::KEYS_FILE;
use orderd_service::vault::{MasterKeySource, Vault, VaultError};
use orderd_service::ApiError;

/// The manifest keys of the master key source `config` names, without opening a store: for
/// `orderctl backup restore` (server stopped) and tests.
pub fn manifest_keys(config: &Config) -> Result<ManifestKeys, VaultError> {
    MasterKeySource::from_config(config)?.manifest_keys()
}

/// How a backup job's failure is answered.
impl From<BackupJobError> for ApiError {
    fn from(error: BackupJobError) -> ApiError {
        match error {
            BackupJobError::NotFound(id) => ApiError::NotFound(format!("no backup {id}")),
            BackupJobError::Busy(detail) => ApiError::Unavailable {
                detail,
                reasons: None,
            },
            BackupJobError::Failed(detail) => ApiError::Internal(detail),
            BackupJobError::TooSoon(detail) => ApiError::TooSoon(detail),
        }
    }
}

/// Rebuilds shards in a child process (`orderd digest-store DIR`): the rebuild of a large store
/// allocates as much memory as the live shards hold and keeps a core busy for seconds; in the
/// server's own process it stalled orders by up to 300 ms at 1,000,000 orders (page faults and
/// allocator contention with the shard threads, and RocksDB background threads shared with the
/// live store). A child has its own address space and thread pools, runs at nice 19, and gives
/// its memory back when it exits.
pub struct ChildDigester {
    /// The `orderd` binary.
    pub exe: PathBuf,
}

impl ChildDigester {
    /// This process's own binary (the server is `orderd`).
    pub fn this_binary() -> Result<ChildDigester, String> {
        std::env::current_exe()
            .map(|exe| ChildDigester { exe })
            .map_err(|e| format!("cannot find the orderd binary: {e}"))
    }
}

impl Digester for ChildDigester {
    fn digest(&self, db_dir: &std::path::Path) -> Result<(u16, Vec<ShardDigest>), BackupError> {
        let output = std::process::Command::new(&self.exe)
            .arg("digest-store")
            .arg(db_dir)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                BackupError::Io(format!("run {} digest-store: {e}", self.exe.display()))
            })?;
        if !output.status.success() {
            return Err(BackupError::Io(format!(
                "rebuilding the shards of {} failed ({}): {}",
                db_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        backup::parse_digests(&String::from_utf8_lossy(&output.stdout)).map_err(BackupError::Io)
    }
}

/// `orderd digest-store DB_DIR`: the child side of [`ChildDigester`].
pub fn digest_store_main(db_dir: &std::path::Path) -> std::process::ExitCode {
    backup::lower_thread_priority();
    match backup::InProcess.digest(db_dir) {
        Ok((count, shards)) => {
            print!("{}", backup::encode_digests(count, &shards));
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("orderd digest-store: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keys of the backup index in `control`: this prefix, then the backup id.
const INDEX_PREFIX: &[u8] = b"backup/";
const RECORD_FORMAT: u8 = 1;
/// Wait after start before a schedule that is already due runs (lets the server settle).
const START_GRACE: Duration = Duration::from_secs(60);

/// Where a backup's off-site copy stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsiteState {
    Pending,
    Copied,
    Failed,
}

impl OffsiteState {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsiteState::Pending => "pending",
            OffsiteState::Copied => "copied",
            OffsiteState::Failed => "failed",
        }
    }
}

/// A restore drill's outcome as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    pub at_us: i64,
    pub verified: bool,
    pub detail: String,
    /// `local` or `offsite`.
    pub source: String,
    pub duration_ms: u64,
}

/// One backup in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: String,
    pub created_at_us: i64,
    pub size_bytes: u64,
    pub new_bytes: u64,
    pub duration_ms: u64,
    pub files: u64,
    pub shards: Vec<ShardDigest>,
    pub offsite: OffsiteState,
    pub offsite_detail: Option<String>,
    pub drill: Option<Drill>,
}

impl BackupRecord {
    fn from_manifest(manifest: &backup::Manifest) -> BackupRecord {
        BackupRecord {
            id: manifest.id.clone(),
            created_at_us: manifest.created_at_us,
            size_bytes: manifest.size_bytes,
            new_bytes: manifest.new_bytes,
            duration_ms: manifest.duration_ms,
            files: manifest.files.len() as u64,
            shards: manifest.shards.clone(),
            offsite: OffsiteState::Pending,
            offsite_detail: None,
            drill: None,
        }
    }
}

/// The backup index in `control`.
#[derive(Clone)]
pub struct Index {
    storage: Arc<dyn Storage>,
}

fn index_key(id: &str) -> Vec<u8> {
    let mut key = INDEX_PREFIX.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

impl Index {
    pub fn new(storage: Arc<dyn Storage>) -> Index {
        Index { storage }
    }

    pub fn put(&self, record: &BackupRecord) -> Result<(), StorageError> {
        let mut value = vec![RECORD_FORMAT];
        value.extend(postcard::to_stdvec(record).expect("a backup record serializes"));
        self.storage.write(
            vec![Write::Put {
                family: Family::Control,
                key: index_key(&record.id),
                value,
            }],
            true,
        )
    }

    pub fn delete(&self, id: &str) -> Result<(), StorageError> {
        let from = index_key(id);
        let mut to = from.clone();
        to.push(0);
        self.storage.write(
            vec![Write::DeleteRange {
                family: Family::Control,
                from,
                to,
            }],
            true,
        )
    }

    pub fn get(&self, id: &str) -> Result<Option<BackupRecord>, StorageError> {
        Ok(self
            .storage
            .get(Family::Control, &index_key(id))?
            .and_then(|value| decode(&value)))
    }

    /// Every backup, newest first.
    pub fn list(&self) -> Result<Vec<BackupRecord>, StorageError> {
        let mut end = INDEX_PREFIX.to_vec();
        *end.last_mut().expect("non-empty prefix") += 1;
        let mut records = Vec::new();
        self.storage
            .scan(Family::Control, INDEX_PREFIX, &end, &mut |_, value| {
                if let Some(record) = decode(value) {
                    records.push(record);
                }
                true
            })?;
        records.sort_by(|a, b| b.created_at_us.cmp(&a.created_at_us).then(b.id.cmp(&a.id)));
        Ok(records)
    }

    /// The inputs of the inspection's `backup_age` and `backup_verified`: the newest backup,
    /// and the most recently drilled one.
    pub fn status(&self) -> Result<BackupStatus, StorageError> {
        let records = self.list()?;
        let info = |r: &BackupRecord| BackupInfo {
            id: r.id.clone(),
            created_at_us: r.created_at_us,
            verification: r.drill.as_ref().map(|d| Verification {
                at_us: d.at_us,
                verified: d.verified,
                detail: d.detail.clone(),
            }),
        };
        Ok(BackupStatus {
            newest: records.first().map(info),
            last_drill: records
                .iter()
                .filter(|r| r.drill.is_some())
                .max_by_key(|r| r.drill.as_ref().map(|d| d.at_us))
                .map(info),
        })
    }
}

fn decode(value: &[u8]) -> Option<BackupRecord> {
    match value.split_first() {
        Some((&RECORD_FORMAT, body)) => postcard::from_bytes(body).ok(),
        _ => None,
    }
}

/// Why a request to the worker failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupJobError {
    #[error("no backup {0}")]
    NotFound(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
    /// A requested backup within `backup.min_interval_s` of the newest one.
    #[error("{0}")]
    TooSoon(String),
}

enum Job {
    Create(oneshot::Sender<Result<BackupRecord, BackupJobError>>),
    Verify(String, oneshot::Sender<Result<Drill, BackupJobError>>),
    /// The local revocation list changed: merge it into the off-site one.
    Revocations,
    /// A customer was erased: merge the customer key store's copy beside the backups into
    /// the off-site one, so the erased key leaves it too.
    CustomerKeys,
    /// The configuration changed: read the `backup` section anew and, if it changed, plan the
    /// schedules anew.
    Settings,
    Stop,
}

/// The handle routes use. Cheap to share (`web::Data`).
pub struct Backups {
    jobs: mpsc::SyncSender<Job>,
    index: Index,
    /// The local backup directory and the data directory, for the audit anchor.
    dir: PathBuf,
    data_dir: PathBuf,
    vault: Arc<Vault>,
    /// Serializes updates of the local revocation list.
    revocations_lock: Mutex<()>,
    /// Unix seconds of the newest successful backup (0: none yet), for
    /// `orderd_backup_last_success_timestamp_seconds`.
    last_success_s: Arc<AtomicU64>,
    /// Which kinds of backup work failed at their last attempt, for `orderd_backup_failing`.
    failing: Arc<Failing>,
    /// Unix seconds of the newest requested backup accepted (`backup.min_interval_s`).
    last_requested_s: AtomicU64,
    /// The live configuration (`backup.min_interval_s`).
    live: tokio::sync::watch::Receiver<Arc<Config>>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Backups {
    /// Starts the worker, with the configuration `live` publishes (its `backup` section may
    /// change while running: schedules, retention, off-site retries). `data_dir` holds the
    /// checkpoint of a backup in progress and the `keys.json` kept with each backup.
    pub fn start(
        live: tokio::sync::watch::Receiver<Arc<Config>>,
        data_dir: PathBuf,
        engine: Engine,
        vault: Arc<Vault>,
    ) -> Backups {
        let config = live.borrow().backup.clone();
        let live_handle = live.clone();
        let (jobs, receiver) = mpsc::sync_channel(config.queue_capacity);
        let index = Index::new(engine.storage());
        // The gauge survives restarts: it starts at the newest backup in the index.
        let last_success_s = Arc::new(AtomicU64::new(0));
        if let Ok(Some(newest)) = index.list().map(|l| l.into_iter().next()) {
            last_success_s.fetch_max((newest.created_at_us / 1_000_000) as u64, Ordering::Relaxed);
        }
        // Wakes the worker when the configuration changes (on the server's runtime; without
        // one, as in tools, the worker reads it before its next job).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut changes = live.clone();
            let wake = jobs.clone();
            runtime.spawn(async move {
                while changes.changed().await.is_ok() {
                    // A full queue means the worker has jobs to run; it reads the settings
                    // before each.
                    if let Err(mpsc::TrySendError::Disconnected(_)) = wake.try_send(Job::Settings) {
                        return;
                    }
                }
            });
        }
        let keys = vault.manifest_keys();
        let repo = match ChildDigester::this_binary() {
            Ok(child) => Repo::new(config.dir.clone(), keys).with_digester(Arc::new(child)),
            Err(error) => {
                tracing::warn!(message = "Backups rebuild shards in process.", %error);
                Repo::new(config.dir.clone(), keys)
            }
        };
        let failing = Arc::new(Failing::default());
        let mut worker = Worker {
            vault: vault.clone(),
            live,
            last_success_s: last_success_s.clone(),
            failing: failing.clone(),
            repo,
            offsite_spec: config.offsite.clone(),
            offsite: None,
            config: config.clone(),
            data_dir: data_dir.clone(),
            engine,
            index: index.clone(),
            open_incidents: Default::default(),
        };
        let handle = std::thread::Builder::new()
            .name("orderd-backup".into())
            .spawn(move || worker.run(receiver))
            .expect("spawn the backup worker");
        Backups {
            jobs,
            index,
            dir: config.dir,
            data_dir,
            vault,
            revocations_lock: Mutex::new(()),
            last_success_s,
            failing,
            last_requested_s: AtomicU64::new(0),
            live: live_handle,
            handle: Mutex::new(Some(handle)),
        }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Records that key `id` was revoked: in the local revocation list at once (synced), then
    /// off-site by the worker. Blocking. A restore re-applies the list, so a key revoked after
    /// a backup stays revoked when that backup is restored.
    pub fn record_revocation(&self, id: &str) -> Result<(), String> {
        {
            let _guard = self
                .revocations_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("create {}: {e}", self.dir.display()))?;
            crate::revocations::Revocations::record_local(
                &self.dir,
                &self.vault.manifest_keys(),
                id,
                now_us(),
            )?;
        }
        // A full queue: the worker merges the list after its next backup anyway.
        let _ = self.jobs.try_send(Job::Revocations);
        Ok(())
    }

    /// Asks the worker to merge the customer key store's local copy (which an erasure has
    /// already edited) into the off-site one. A full queue: the next backup merges it.
    pub fn request_customer_keys_copy(&self) {
        let _ = self.jobs.try_send(Job::CustomerKeys);
    }

    /// The control audit chain's tip the newest authenticated local backup anchored (skipping
    /// backups a restore of this data directory superseded), for `GET /v1/audit/verify`.
    /// Blocking (reads every manifest).
    pub fn audit_anchor(&self) -> Option<orderd_service::audit::AnchoredTip> {
        let repo = Repo::new(self.dir.clone(), self.vault.manifest_keys());
        let restored = backup::RestoredFrom::read(&self.data_dir);
        let shards = match repo.newest_shard_anchors(restored.as_ref()) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(message = "Cannot read the backups' shard audit anchors.", %error);
                None
            }
        };
        match repo.newest_anchor(restored.as_ref()) {
            Ok(Some((backup_id, anchor))) => Some(orderd_service::audit::AnchoredTip {
                backup_id,
                seq: anchor.seq,
                hash: anchor.hash,
                shards,
            }),
            // No control chain anchored yet: the shard chains' anchors alone.
            Ok(None) => shards.map(|(backup_id, anchors)| orderd_service::audit::AnchoredTip {
                backup_id: backup_id.clone(),
                seq: 0,
                hash: String::new(),
                shards: Some((backup_id, anchors)),
            }),
            Err(error) => {
                tracing::warn!(message = "Cannot read the backups' audit anchors.", %error);
                None
            }
        }
    }

    fn submit(&self, job: Job) -> Result<(), BackupJobError> {
        self.jobs.try_send(job).map_err(|error| match error {
            mpsc::TrySendError::Full(_) => {
                BackupJobError::Busy("the backup worker's queue is full".into())
            }
            mpsc::TrySendError::Disconnected(_) => {
                BackupJobError::Busy("the backup worker has stopped".into())
            }
        })
    }

    /// Takes a backup now (after the jobs queued before it); answers once it exists, before
    /// its off-site copy.
    /// At most one per `backup.min_interval_s` (counted from the newest backup, scheduled ones
    /// included, or the newest request accepted): sooner is `TooSoon`, so that quick requests
    /// cannot rotate older backups away.
    pub async fn create(&self) -> Result<BackupRecord, BackupJobError> {
        let min_interval_s = self.live.borrow().backup.min_interval_s;
        if min_interval_s > 0 {
            let now_s = (now_us() / 1_000_000).max(0) as u64;
            let newest = self.last_success_s();
            self.last_requested_s
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |requested| {
                    let last = requested.max(newest);
                    (last == 0 || now_s >= last + min_interval_s).then_some(now_s)
                })
                .map_err(|requested| {
                    let last = requested.max(newest);
                    BackupJobError::TooSoon(format!(
                        "a backup was taken or requested {} s ago; backup.min_interval_s allows one every {min_interval_s} s (retry in {} s)",
                        now_s.saturating_sub(last),
                        (last + min_interval_s).saturating_sub(now_s)
                    ))
                })?;
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Create(reply))?;
        answer
            .await
            .map_err(|_| BackupJobError::Busy("the backup worker has stopped".into()))?
    }

    /// Runs a restore drill of backup `id`.
    pub async fn verify(&self, id: String) -> Result<Drill, BackupJobError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify(id, reply))?;
        answer
            .await
            .map_err(|_| BackupJobError::Busy("the backup worker has stopped".into()))?
    }

    /// Unix seconds of the newest successful backup; 0 while none exists (which the
    /// `OrderdBackupMissing` alert reports).
    pub fn last_success_s(&self) -> u64 {
        self.last_success_s.load(Ordering::Relaxed)
    }

    /// Each kind of backup work ([`FAILURE_KINDS`]: `backup_failed`, `offsite_failed`,
    /// `verify_failed`) with whether its last attempt since this process started failed.
    pub fn failing(&self) -> [(&'static str, bool); 3] {
        FAILURE_KINDS.map(|kind| (kind, self.failing.get(kind)))
    }

    /// Stops the worker after its current job.
    pub fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(handle) = self.handle.lock().expect("backup handle").take() {
            let _ = handle.join();
        }
    }
}

/// The kinds of backup work that fail with an incident of the same kind: taking a backup, its
/// off-site copy (or the revocation list's), and a restore drill.
pub const FAILURE_KINDS: [&str; 3] = ["backup_failed", "offsite_failed", "verify_failed"];

/// Whether the last attempt of each of [`FAILURE_KINDS`] failed (set with the incident,
/// cleared when one succeeds, even if the incident could not be written).
#[derive(Debug, Default)]
struct Failing([std::sync::atomic::AtomicBool; 3]);

impl Failing {
    fn slot(&self, kind: &str) -> Option<&std::sync::atomic::AtomicBool> {
        let index = FAILURE_KINDS.iter().position(|k| *k == kind)?;
        Some(&self.0[index])
    }

    fn set(&self, kind: &str, failing: bool) {
        debug_assert!(
            self.slot(kind).is_some(),
            "unknown backup failure kind {kind}"
        );
        if let Some(slot) = self.slot(kind) {
            slot.store(failing, Ordering::Relaxed);
        }
    }

    fn get(&self, kind: &str) -> bool {
        self.slot(kind)
            .is_some_and(|slot| slot.load(Ordering::Relaxed))
    }
}

struct Worker {
    /// Signs and verifies manifests (its keys are read before each job: a rotation adds one).
    vault: Arc<Vault>,
    /// The configuration in effect; its `backup` section is read anew before each job.
    live: tokio::sync::watch::Receiver<Arc<Config>>,
    last_success_s: Arc<AtomicU64>,
    failing: Arc<Failing>,
    repo: Repo,
    offsite_spec: String,
    offsite: Option<Offsite>,
    config: BackupConfig,
    data_dir: PathBuf,
    engine: Engine,
    index: Index,
    /// The open incident of each kind this service writes (`backup_failed`, `offsite_failed`,
    /// `verify_failed`), by kind.
    open_incidents: std::collections::BTreeMap<&'static str, u64>,
}

fn now_us() -> i64 {
    orderd_engine::clock::now_us()
}

/// How many of the newest backups retention keeps, given their creation times (any order):
/// `retention_count`, and more when needed so that the newest backup at least `min_age_us` old
/// (and everything newer) stays; `min_age_us` 0 is the count alone.
pub fn retention_keep(
    created_at_us: &[i64],
    retention_count: usize,
    min_age_us: i64,
    now_us: i64,
) -> usize {
    let count = retention_count.max(1);
    if min_age_us <= 0 {
        return count;
    }
    let mut newest_first = created_at_us.to_vec();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    match newest_first
        .iter()
        .position(|created| now_us.saturating_sub(*created) >= min_age_us)
    {
        Some(index) => count.max(index + 1),
        // None is old enough yet: keep them all, or the count would delete each before it
        // ages into that restore point (hourly backups and a count of 24 never reach a day).
        // Backups kept are then bounded by min age / `backup.min_interval_s` + the count.
        None => count.max(newest_first.len()),
    }
}

impl Worker {
    fn run(&mut self, jobs: mpsc::Receiver<Job>) {
        backup::lower_thread_priority();
        let started = Instant::now();
        self.reconcile();
        let mut next_backup = self.first_due(self.config.interval_s, |r| Some(r.created_at_us));
        let mut next_drill = self.first_due(self.config.verify_interval_s, |r| {
            r.drill.as_ref().map(|d| d.at_us)
        });
        let mut uploads_due = Some(started + START_GRACE.min(Duration::from_secs(5)));
        loop {
            let changed = match self.live.has_changed() {
                Ok(true) => Some(self.live.borrow_and_update().backup.clone())
                    .filter(|config| *config != self.config),
                _ => None,
            };
            if let Some(config) = changed {
                tracing::info!(
                    message = "Backup settings changed.",
                    interval_s = config.interval_s,
                    verify_interval_s = config.verify_interval_s,
                    retention_count = config.retention_count
                );
                self.config = config;
                next_backup = self.first_due(self.config.interval_s, |r| Some(r.created_at_us));
                next_drill = self.first_due(self.config.verify_interval_s, |r| {
                    r.drill.as_ref().map(|d| d.at_us)
                });
            }
            let now = Instant::now();
            let wake = [next_backup, next_drill, uploads_due]
                .into_iter()
                .flatten()
                .min();
            let job = match wake {
                Some(at) if at <= now => Err(RecvTimeoutError::Timeout),
                Some(at) => jobs.recv_timeout(at - now),
                None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            self.refresh_keys();
            match job {
                Ok(Job::Create(reply)) => {
                    let created = self.create();
                    let id = created.as_ref().ok().map(|r| r.id.clone());
                    let _ = reply.send(created);
                    if let Some(id) = id {
                        self.after_create(&id);
                    }
                }
                Ok(Job::Verify(id, reply)) => {
                    let _ = reply.send(self.verify(&id));
                }
                Ok(Job::Settings) => {}
                Ok(Job::Revocations) => self.upload_revocations(),
                Ok(Job::CustomerKeys) => self.upload_customer_keys(),
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if next_backup.is_some_and(|at| at <= now) {
                        if let Ok(record) = self.create() {
                            self.after_create(&record.id);
                        }
                        next_backup = Some(now + Duration::from_secs(self.config.interval_s));
                    }
                    if next_drill.is_some_and(|at| at <= now) {
                        if let Ok(Some(newest)) = self.index.list().map(|l| l.into_iter().next()) {
                            let _ = self.verify(&newest.id);
                        }
                        next_drill = Some(now + Duration::from_secs(self.config.verify_interval_s));
                    }
                    if uploads_due.is_some_and(|at| at <= now) {
                        self.upload_unfinished();
                        uploads_due = None;
                    }
                }
            }
        }
    }

    /// When a schedule of `interval_s` next runs: `interval_s` after the newest time `at`
    /// gives (or after start when none), and never sooner than a grace period after start.
    fn first_due(
        &self,
        interval_s: u64,
        at: impl Fn(&BackupRecord) -> Option<i64>,
    ) -> Option<Instant> {
        if interval_s == 0 {
            return None;
        }
        let interval = Duration::from_secs(interval_s);
        let last = self
            .index
            .list()
            .ok()
            .and_then(|records| records.iter().filter_map(&at).max());
        let wait = match last {
            Some(last_us) => {
                let age = Duration::from_micros((now_us() - last_us).max(0) as u64);
                interval.saturating_sub(age).max(START_GRACE)
            }
            None => interval,
        };
        Some(Instant::now() + wait)
    }

    /// Takes the vault's manifest keys (a master key rotation signs new manifests under the new
    /// key and keeps the old ones verifying).
    fn refresh_keys(&mut self) {
        let keys = self.vault.manifest_keys();
        self.repo = self.repo.clone().with_keys(keys.clone());
        if let Some(offsite) = self.offsite.as_mut() {
            offsite.set_keys(keys);
        }
    }

    /// Adds local backups the index lacks (after a restore, or a lost index write).
    fn reconcile(&mut self) {
        let Ok((manifests, _)) = self.repo.manifests() else {
            return;
        };
        for manifest in manifests {
            if matches!(self.index.get(&manifest.id), Ok(None)) {
                let _ = self.index.put(&BackupRecord::from_manifest(&manifest));
            }
        }
    }

    fn offsite(&mut self) -> Result<&Offsite, String> {
        if self.offsite.is_none() {
            self.offsite = Some(Offsite::open(
                &self.offsite_spec,
                self.config.offsite_attempts,
                Duration::from_millis(self.config.offsite_retry_base_ms),
                self.repo.keys().clone(),
            )?);
        }
        Ok(self.offsite.as_ref().expect("just opened"))
    }

    /// Writes a `backup/<kind>` incident unless one of that kind is open.
    fn incident(&mut self, kind: &'static str, detail: String, action: &str) {
        self.failing.set(kind, true);
        if self.open_incidents.contains_key(kind) {
            return;
        }
        match self
            .engine
            .incidents()
            .record("backup", kind, detail, action)
        {
            Ok(incident) => {
                self.open_incidents.insert(kind, incident.id);
            }
            Err(error) => tracing::error!(message = "Cannot record a backup incident.", %error),
        }
    }

    /// Marks the open incident of `kind`, if any, recovered.
    fn recovered(&mut self, kind: &'static str) {
        self.failing.set(kind, false);
        if let Some(id) = self.open_incidents.remove(kind) {
            let _ = self.engine.incidents().recovered(id);
        }
    }

    fn create(&mut self) -> Result<BackupRecord, BackupJobError> {
        let acknowledged = self.engine.durable_seqs();
        let storage = self.engine.storage();
        let keys = std::fs::read(self.data_dir.join(KEYS_FILE)).ok();
        let extras: Vec<(&str, Vec<u8>)> = keys.map(|k| (KEYS_FILE, k)).into_iter().collect();
        let checkpoint = self.data_dir.join("backup-checkpoint");
        let started = Instant::now();
        // Read before the checkpoint: the backup holds at least this much of the chain.
        let anchor = match orderd_service::audit::control_tip(storage.as_ref()) {
            Ok(anchor) => anchor,
            Err(error) => {
                tracing::warn!(message = "Cannot read the audit chain tip for the backup's anchor.", %error);
                None
            }
        };
        match self.repo.create(
            storage.as_ref(),
            &checkpoint,
            &acknowledged,
            &extras,
            anchor,
            &NoProgress,
        ) {
            Ok(manifest) => {
                let record = BackupRecord::from_manifest(&manifest);
                self.index
                    .put(&record)
                    .map_err(|e| BackupJobError::Failed(format!("index the backup: {e}")))?;
                self.last_success_s.fetch_max(
                    (manifest.created_at_us / 1_000_000) as u64,
                    Ordering::Relaxed,
                );
                tracing::info!(
                    message = "Backup taken.",
                    id = %manifest.id,
                    size_bytes = manifest.size_bytes,
                    new_bytes = manifest.new_bytes,
                    files = manifest.files.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64
                );
                self.recovered("backup_failed");
                // After the checkpoint: the copy holds the key of every customer the backup
                // holds (keys are made before their customers), and no erased one.
                if let Some(keys) = self.vault.customer_keys() {
                    if let Err(error) = keys.refresh_mirror() {
                        tracing::error!(message = "Copying the customer key store beside the backups failed.", %error);
                        self.incident(
                            "backup_failed",
                            format!("customer key store copy: {error}"),
                            "the backup is kept; the keys of customers created since the last good copy are only in the data directory until a backup copies them",
                        );
                    }
                }
                Ok(record)
            }
            Err(error) => {
                tracing::error!(message = "Backup failed.", %error);
                self.incident(
                    "backup_failed",
                    error.to_string(),
                    "no backup taken; the next scheduled or requested backup tries again",
                );
                Err(BackupJobError::Failed(error.to_string()))
            }
        }
    }

    /// Merges the local revocation list into the off-site one (after a revocation, and after
    /// each backup in case an earlier merge failed).
    fn upload_revocations(&mut self) {
        let local =
            match crate::revocations::Revocations::read_local(self.repo.dir(), self.repo.keys()) {
                Ok(local) if local.revoked.is_empty() => return,
                Ok(local) => local,
                Err(error) => {
                    tracing::error!(message = "The local revocation list is unreadable.", %error);
                    return;
                }
            };
        match self
            .offsite()
            .and_then(|offsite| offsite.merge_revocations(&local))
        {
            Ok(merged) => tracing::info!(
                message = "Revocations copied off-site.",
                revoked = merged.revoked.len()
            ),
            Err(error) => {
                tracing::error!(message = "Copying the revocations off-site failed.", %error);
                self.incident(
                    "offsite_failed",
                    format!("revocations: {error}"),
                    "the local list is kept; the copy is retried after the next revocation or backup",
                );
            }
        }
    }

    /// Merges the customer key store's copy beside the backups into the off-site one (after
    /// an erasure, and after each backup).
    fn upload_customer_keys(&mut self) {
        use crate::customer_keys::{Records, CUSTOMER_KEYS_FILE};
        let path = self.repo.dir().join(CUSTOMER_KEYS_FILE);
        if !path.exists() {
            return;
        }
        let local = match Records::read(&path) {
            Ok(local) => local,
            Err(error) => {
                tracing::error!(message = "The customer key store's copy beside the backups is unreadable.", %error);
                return;
            }
        };
        match self
            .offsite()
            .and_then(|offsite| offsite.merge_customer_keys(&local))
        {
            Ok(merged) => {
                tracing::info!(
                    message = "Customer keys copied off-site.",
                    keys = merged.keys.len(),
                    erased = merged.erased.len()
                );
            }
            Err(error) => {
                tracing::error!(message = "Copying the customer keys off-site failed.", %error);
                self.incident(
                    "offsite_failed",
                    format!("customer keys: {error}"),
                    "the local copy is kept (erased keys already left it); the off-site copy is retried after the next erasure or backup",
                );
            }
        }
    }

    /// The off-site copy of a new backup, then retention.
    fn after_create(&mut self, id: &str) {
        self.upload(id);
        self.upload_revocations();
        self.upload_customer_keys();
        let min_age_us = (self.config.keep_min_age_s as i64).saturating_mul(1_000_000);
        // The newest backup a restore drill verified keeps its off-site copy (and its index
        // record, which says so) however many newer ones there are: the last restore point
        // known to work.
        let verified: Option<String> = self.index.list().ok().and_then(|records| {
            records
                .into_iter()
                .find(|r| r.drill.as_ref().is_some_and(|d| d.verified))
                .map(|r| r.id)
        });
        let keep = match self.repo.manifests() {
            Ok((manifests, _)) => retention_keep(
                &manifests
                    .iter()
                    .map(|m| m.created_at_us)
                    .collect::<Vec<_>>(),
                self.config.retention_count,
                min_age_us,
                now_us(),
            ),
            Err(error) => {
                tracing::warn!(message = "Local backup retention skipped: cannot list the manifests.", %error);
                usize::MAX
            }
        };
        match self.repo.retain(keep) {
            Ok(deleted) => {
                for old in deleted {
                    tracing::info!(message = "Backup deleted by retention.", id = %old);
                    let _ = self.index.delete(&old);
                }
            }
            Err(error) => tracing::warn!(message = "Local backup retention failed.", %error),
        }
        // Index entries of backups gone both locally and off-site by retention.
        if let Ok(records) = self.index.list() {
            for old in records.iter().skip(keep) {
                if Some(&old.id) != verified.as_ref() {
                    let _ = self.index.delete(&old.id);
                }
            }
        }
        let retention_count = self.config.retention_count;
        if let Ok(offsite) = self.offsite() {
            let keep = match offsite.manifests() {
                Ok(manifests) => retention_keep(
                    &manifests
                        .iter()
                        .map(|m| m.created_at_us)
                        .collect::<Vec<_>>(),
                    retention_count,
                    min_age_us,
                    now_us(),
                ),
                Err(_) => usize::MAX,
            };
            if let Err(error) = offsite.retain(keep, verified.as_deref()) {
                tracing::warn!(message = "Off-site backup retention failed.", %error);
            }
        }
        self.prune_keyring();
        self.prune_audit(id);
    }

    /// Moves the audit entries past `audit.retention_s` that backup `id` holds out of the live
    /// store ([`orderd_service::audit::prune`]).
    fn prune_audit(&mut self, id: &str) {
        let retention_s = self.live.borrow().audit.retention_s;
        if retention_s == 0 {
            return;
        }
        let manifest = match self.repo.manifest(id) {
            Ok(manifest) => manifest,
            Err(error) => {
                tracing::warn!(message = "Audit retention skipped: the backup's manifest cannot be read.", id, %error);
                return;
            }
        };
        let before_us = now_us().saturating_sub((retention_s as i64).saturating_mul(1_000_000));
        let backed_up: Vec<(u16, u64)> = manifest.shards.iter().map(|s| (s.shard, s.seq)).collect();
        let anchor = manifest.audit_anchor.as_ref().map(|a| a.seq);
        let storage = self.engine.storage();
        match orderd_service::audit::prune(storage.as_ref(), before_us, anchor, &backed_up) {
            Ok(pruned) if pruned.control + pruned.shards > 0 => {
                metrics::counter!("orderd_audit_pruned_entries_total", "chain" => "control")
                    .increment(pruned.control);
                metrics::counter!("orderd_audit_pruned_entries_total", "chain" => "shard")
                    .increment(pruned.shards);
                tracing::info!(
                    message = "Audit entries past audit.retention_s left the live store; the backups up to this one hold them.",
                    backup = id,
                    control = pruned.control,
                    shards = pruned.shards,
                    retention_s
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(message = "Audit retention failed; the entries stay.", %error)
            }
        }
    }

    /// Drops from the master keyring the keys no retained backup (local or off-site) was
    /// signed under. Skipped while any manifest cannot be read or names no signer: its key
    /// cannot be told apart, so every key stays.
    fn prune_keyring(&mut self) {
        let mut needed = std::collections::BTreeSet::new();
        let mut signers = |manifests: &[backup::Manifest]| -> bool {
            for manifest in manifests {
                match &manifest.signed_by {
                    Some(id) => {
                        needed.insert(id.clone());
                    }
                    None => return false,
                }
            }
            true
        };
        let local = match self.repo.manifests() {
            Ok((manifests, bad)) => bad.is_empty() && signers(&manifests),
            Err(_) => false,
        };
        let offsite = match self.offsite() {
            Ok(offsite) => match offsite.manifests_and_unreadable() {
                Ok((manifests, 0)) => signers(&manifests),
                _ => false,
            },
            Err(_) => false,
        };
        if !(local && offsite) {
            tracing::info!(
                message =
                    "The master keyring is not pruned: a retained manifest could not be read."
            );
            return;
        }
        if let Err(error) = self.vault.prune_keyring(&needed) {
            tracing::warn!(message = "Pruning the master keyring failed.", %error);
        }
    }

    /// Uploads every backup whose copy is pending or failed (after start, after an outage).
    fn upload_unfinished(&mut self) {
        let Ok(records) = self.index.list() else {
            return;
        };
        for record in records.iter().rev() {
            if record.offsite != OffsiteState::Copied {
                self.upload(&record.id);
            }
        }
    }

    fn upload(&mut self, id: &str) {
        let Ok(Some(mut record)) = self.index.get(id) else {
            return;
        };
        let manifest = match self.repo.manifest(id) {
            Ok(manifest) => manifest,
            Err(error) => {
                record.offsite = OffsiteState::Failed;
                record.offsite_detail = Some(format!("the local backup is unreadable: {error}"));
                let _ = self.index.put(&record);
                return;
            }
        };
        let started = Instant::now();
        let dir = self.repo.dir().to_path_buf();
        let result = self
            .offsite()
            .and_then(|offsite| offsite.upload(&dir, &manifest, &NoProgress));
        match result {
            Ok(report) => {
                record.offsite = OffsiteState::Copied;
                record.offsite_detail = None;
                tracing::info!(
                    message = "Backup copied off-site.",
                    id,
                    files_sent = report.files_sent,
                    bytes_sent = report.bytes_sent,
                    files_skipped = report.files_skipped,
                    retries = report.retries,
                    elapsed_ms = started.elapsed().as_millis() as u64
                );
                let _ = self.index.put(&record);
                self.recovered("offsite_failed");
            }
            Err(error) => {
                tracing::error!(message = "Off-site copy failed.", id, %error);
                // The incident first: whoever sees `failed` finds it.
                self.incident(
                    "offsite_failed",
                    format!("{id}: {error}"),
                    "the local backup is kept; the copy is retried after the next backup or restart",
                );
                record.offsite = OffsiteState::Failed;
                record.offsite_detail = Some(error.clone());
                let _ = self.index.put(&record);
            }
        }
    }

    /// A restore drill of `id`: from the local backup directory, or from the off-site copy
    /// when the local one is gone.
    fn verify(&mut self, id: &str) -> Result<Drill, BackupJobError> {
        if !backup::valid_id(id) {
            return Err(BackupJobError::NotFound(id.to_string()));
        }
        let at_us = now_us();
        let local = self.repo.manifest(id);
        let (report, source) = match local {
            Err(backup::BackupError::NotFound(_)) => {
                let staging = self
                    .repo
                    .dir()
                    .join(backup::SCRATCH_DIR)
                    .join(format!("offsite-{id}"));
                let _ = std::fs::remove_dir_all(&staging);
                let offsite = self.offsite().map_err(BackupJobError::Failed)?;
                if offsite
                    .manifest(id)
                    .map_err(BackupJobError::Failed)?
                    .is_none()
                {
                    return Err(BackupJobError::NotFound(id.to_string()));
                }
                let report = match offsite.download(id, &staging, &NoProgress) {
                    Ok(_) => self.repo.at(staging.clone()).verify(id, &NoProgress),
                    Err(detail) => Ok(backup::VerifyReport {
                        id: id.to_string(),
                        verified: false,
                        detail,
                        duration_ms: 0,
                    }),
                };
                let _ = std::fs::remove_dir_all(&staging);
                (report, "offsite")
            }
            _ => (self.repo.verify(id, &NoProgress), "local"),
        };
        let report = report.map_err(|e| BackupJobError::Failed(e.to_string()))?;
        let drill = Drill {
            at_us,
            verified: report.verified,
            detail: report.detail.clone(),
            source: source.to_string(),
            duration_ms: report.duration_ms,
        };
        if let Ok(Some(mut record)) = self.index.get(id) {
            record.drill = Some(drill.clone());
            let _ = self.index.put(&record);
        }
        if report.verified {
            tracing::info!(
                message = "Restore drill passed.",
                id,
                source,
                duration_ms = report.duration_ms
            );
            self.recovered("verify_failed");
        } else {
            tracing::error!(message = "Restore drill FAILED.", id, source, detail = %report.detail);
            self.incident(
                "verify_failed",
                format!("{id}: {}", report.detail),
                "the backup is marked unverified and restore refuses it; take a new backup and find the damaged storage",
            );
        }
        Ok(drill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_the_count_and_the_newest_backup_past_the_minimum_age() {
        let s = 1_000_000;
        let now = 100_000 * s;
        let day = 86_400 * s;
        // No minimum age: the count alone.
        assert_eq!(retention_keep(&[now, now - s, now - 2 * s], 1, 0, now), 1);
        // Hourly backups, a count of 3 and a day: the one 24 h old is the newest past a day.
        let hourly: Vec<i64> = (0..30).map(|h| now - h * 3600 * s).collect();
        assert_eq!(retention_keep(&hourly, 3, day, now), 25);
        // Quick backups in the last minute do not push it out: it is still kept.
        let mut quick = hourly.clone();
        quick.extend((1..=50).map(|i| now - i * s));
        assert_eq!(retention_keep(&quick, 3, day, now), 25 + 50);
        // None old enough yet: every one is kept.
        assert_eq!(retention_keep(&[now, now - s], 1, day, now), 2);
        // Older than the minimum age and within the count: the count decides.
        assert_eq!(
            retention_keep(&[now - 2 * day, now - 3 * day], 5, day, now),
            5
        );
    }
}

//! The audit trail: a hash-chained, durable record of every mutation and every refused request
//! (401, 403) — its gateway half (the control chain and its writer thread), reading all chains
//! as one listing with filters, and verification.
//!
//! **Chains.** The trail is several hash chains, each entry naming its `chain`:
//!
//! - `shard-N`: the mutations a shard applies (orders, cancels, shipments, stock, customers),
//!   written by the shard *with its log batch*, in the same storage write, so one fsync makes
//!   a mutation and its entry durable ([`orderd_engine::audit`], which also binds each record
//!   to its log batch by a SHA-256 batch chain).
//! - `control`: everything else the gateway does (keys, changes, backups, shard restarts,
//!   quarantine lifts) and every refusal (401, 403). Stored in the `audit` column family, key =
//!   `seq` as a big-endian u64, value = the JSON of the [`AuditEntry`]. Beside the entries,
//!   the `control` family holds the chain tip (`seq`, `hash`, `at` of the newest entry),
//!   written in the same atomic batch, so that deleting the newest entries is detected as
//!   well as editing or deleting older ones.
//!
//! `seq` is global: every chain draws from the engine's one counter
//! ([`orderd_engine::audit::AuditSeq`]), so a listing merges the chains in ascending `seq`. A
//! number taken by a write that failed is a gap; chains are checked by their hashes.
//!
//! The entry chain (the same in every chain): `hash(n) = hex(SHA-256(hash(previous) ‖
//! canonical(n)))` with 64 ASCII zeros before a chain's first entry, where `canonical(n)` is the
//! compact JSON array `[seq, at, actor, action, target, detail]` exactly as `serde_json` writes
//! it (no whitespace; strings escape `"`, `\` and control characters only, everything else is
//! raw UTF-8). [`verify_chain`] recomputes it over entries fetched from `GET /v1/audit`.
//!
//! Writing the control chain: one thread owns the chain tip. Handlers submit over a bounded
//! queue (`audit.queue_capacity`) and await an acknowledgement; the thread takes everything
//! queued, writes it in one batch with `sync = true` (one fsync for the whole batch) and then
//! answers every submitter. A handler answers its client only after that, so an acknowledged
//! control action always has its durable audit entry; when the write fails the request
//! answers 503.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use chrono::DateTime;
use orderd_engine::audit::{self as chains, AuditSeq};
use orderd_storage::{Family, Storage, StorageError, Write};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub use orderd_proto::AuditEntry;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::idem::Keys;
use crate::refusals::{Closed, RefusalWindows, Verdict};
use crate::wire;
use orderd_config::{AuditConfig, IDEMPOTENCY_RETENTION_S_MIN};

/// Actor of entries about requests without a valid key.
pub const ANONYMOUS: &str = "anonymous";
/// The `hash` before the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Key of the chain tip in the `control` column family.
const TIP_KEY: &[u8] = b"gateway/audit/tip";
/// Key of the control chain's retention floor in `control`: the last entry retention removed
/// (the `seq`, `hash` and `at` of a [`Tip`]), written with the deletion.
const FLOOR_KEY: &[u8] = b"gateway/audit/floor";
/// Entries one retention write removes at most.
const PRUNE_CHUNK: usize = 4096;
/// The control chain's keys are 8-byte sequence numbers below 2^56: all start with a zero
/// byte, and sort before the shard chains' records (`orderd_engine::audit`).
const CONTROL_KEYS_END: &[u8] = &[1];
/// The `chain` of the gateway's entries.
pub const CONTROL_CHAIN: &str = "control";

/// The `chain` of shard `shard`'s entries.
pub fn shard_chain(shard: u16) -> String {
    format!("shard-{shard}")
}
/// Longest `action`, in characters (actions are constants in the code).
const ACTION_CHARS_MAX: usize = 64;
/// Longest `target` and `detail`, in characters; longer ones (a long request path) are cut,
/// as the shards cut theirs.
pub use orderd_engine::audit::{cut, DETAIL_CHARS_MAX, TARGET_CHARS_MAX};

/// Why the audit trail could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the audit trail is unreadable: {0}")]
    Corrupt(String),
    #[error("the audit write failed: {0}")]
    WriteFailed(String),
    #[error("reading the audit trail failed: {0}")]
    ReadFailed(String),
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("the audit queue is full")]
    QueueFull,
}

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> ApiError {
        tracing::error!(message = "Audit trail unavailable; refusing the request.", %error);
        let detail = match error {
            AuditError::WriteFailed(_) | AuditError::Stopped | AuditError::QueueFull => {
                "the audit trail could not be written; the request's effect may have been applied, retry with the same Idempotency-Key where there is one"
            }
            AuditError::Storage(_) | AuditError::Corrupt(_) | AuditError::ReadFailed(_) => {
                "the audit trail could not be read; retry shortly"
            }
        };
        ApiError::Unavailable {
            detail: detail.into(),
            reasons: None,
        }
    }
}

/// The storage key of entry `seq`.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The bytes hashed for an entry besides the previous hash: `[seq, at, actor, action, target,
/// detail]` as compact JSON.
pub fn canonical(entry: &AuditEntry) -> Vec<u8> {
    serde_json::json!([
        entry.seq,
        entry.at,
        entry.actor,
        entry.action,
        entry.target,
        entry.detail
    ])
    .to_string()
    .into_bytes()
}

/// The `hash` an entry must have after an entry whose hash is `previous`.
pub fn entry_hash(previous: &str, entry: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(canonical(entry));
    hex::encode(hasher.finalize())
}

/// Checks the entries of one chain one at a time, from its first entry: ascending `seq` (gaps
/// are numbers other chains took, or writes that failed) and every hash right.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    last_seq: u64,
    verified: u64,
    previous_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            last_seq: 0,
            verified: 0,
            previous_hash: GENESIS_HASH.to_string(),
        }
    }
}

impl ChainVerifier {
    /// A verifier for a chain whose entries up to `seq` (the last with `hash`) left the live
    /// store by retention: the first kept entry chains from `hash`.
    pub fn after(seq: u64, hash: &str) -> ChainVerifier {
        ChainVerifier {
            last_seq: seq,
            verified: 0,
            previous_hash: hash.to_string(),
        }
    }

    /// Entries accepted so far.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// The `seq` of the last entry accepted (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Accepts the next entry, or names the first bad `seq` and why.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), (u64, String)> {
        if entry.seq <= self.last_seq {
            return Err((
                entry.seq,
                format!(
                    "entry {} is out of order (found after entry {})",
                    entry.seq, self.last_seq
                ),
            ));
        }
        if entry_hash(&self.previous_hash, entry) != entry.hash {
            return Err((
                entry.seq,
                format!(
                    "entry {} of chain {} does not match its hash: it was edited, or the entry before it was edited or deleted",
                    entry.seq, entry.chain
                ),
            ));
        }
        self.previous_hash.clone_from(&entry.hash);
        self.last_seq = entry.seq;
        self.verified += 1;
        Ok(())
    }
}

/// Verifies every chain of a listing fetched page by page from `GET /v1/audit` without
/// filters: per chain ascending from its first entry, every hash right. `Ok(entries)` or the
/// first bad `seq` and why. (The newest entries being cut off is visible only against the
/// server's tips: compare with `GET /v1/audit/verify`.)
pub fn verify_chain(entries: &[AuditEntry]) -> Result<usize, (u64, String)> {
    let mut verifiers: std::collections::HashMap<&str, ChainVerifier> =
        std::collections::HashMap::new();
    for entry in entries {
        verifiers
            .entry(entry.chain.as_str())
            .or_default()
            .push(entry)?;
    }
    Ok(entries.len())
}

/// The newest entry, as the writer continues from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Tip {
    seq: u64,
    hash: String,
    /// RFC 3339 of the newest entry; the next one is never earlier.
    at: String,
}

impl Tip {
    fn genesis() -> Tip {
        Tip {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
            at: wire::time(0),
        }
    }

    fn of(entry: &AuditEntry) -> Tip {
        Tip {
            seq: entry.seq,
            hash: entry.hash.clone(),
            at: entry.at.clone(),
        }
    }
}

fn parse_time_us(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn read_tip_record(storage: &dyn Storage) -> Result<Option<Tip>, AuditError> {
    match storage.get(Family::Control, TIP_KEY)? {
        None => Ok(None),
        Some(bytes) => match serde_json::from_slice::<Tip>(&bytes) {
            Ok(tip) => Ok(Some(tip)),
            Err(error) => {
                tracing::error!(message = "The audit chain tip record is unreadable.", %error);
                Ok(None)
            }
        },
    }
}

/// The control chain's retention floor (`None`: retention never removed an entry).
fn read_floor(storage: &dyn Storage) -> Result<Option<Tip>, AuditError> {
    match storage.get(Family::Control, FLOOR_KEY)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice::<Tip>(&bytes)
            .map(Some)
            .map_err(|e| AuditError::Corrupt(format!("the audit retention floor: {e}"))),
    }
}

/// What one retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub control: u64,
    pub shards: u64,
}

/// Moves audit entries out of the live store once they are older than `before_us` and a
/// backup holds them: from the control chain those below `anchor_seq` (the tip the backup
/// anchored, which stays), from each shard chain the records whose log batch is at or below
/// the backup's seq of that shard (`backed_up`: `(shard, seq)` from its manifest). Only the
/// oldest part of each chain goes, in atomic synced writes that delete entries and move the
/// chain's floor past them; verification continues each chain from its floor.
pub fn prune(
    storage: &dyn Storage,
    before_us: i64,
    anchor_seq: Option<u64>,
    backed_up: &[(u16, u64)],
) -> Result<Pruned, AuditError> {
    let mut pruned = Pruned::default();
    if let Some(below) = anchor_seq {
        pruned.control = prune_control(storage, before_us, below)?;
    }
    for &(shard, seq) in backed_up {
        pruned.shards += chains::prune_shard_chain(storage, shard, before_us, seq)?;
    }
    Ok(pruned)
}

fn prune_control(storage: &dyn Storage, before_us: i64, below_seq: u64) -> Result<u64, AuditError> {
    let mut removed = 0u64;
    loop {
        let mut last: Option<Tip> = None;
        let mut count = 0usize;
        storage.scan(
            Family::Audit,
            &seq_key(0),
            &seq_key(below_seq),
            &mut |key, value| {
                let Ok(entry) = serde_json::from_slice::<AuditEntry>(value) else {
                    return false;
                };
                if key_seq(key) != Some(entry.seq)
                    || parse_time_us(&entry.at).is_none_or(|at| at >= before_us)
                {
                    return false;
                }
                last = Some(Tip::of(&entry));
                count += 1;
                count < PRUNE_CHUNK
            },
        )?;
        let Some(floor) = last else {
            return Ok(removed);
        };
        let value =
            serde_json::to_vec(&floor).map_err(|e| AuditError::WriteFailed(e.to_string()))?;
        storage.write(
            vec![
                Write::DeleteRange {
                    family: Family::Audit,
                    from: seq_key(0).to_vec(),
                    to: seq_key(floor.seq + 1).to_vec(),
                },
                Write::Put {
                    family: Family::Control,
                    key: FLOOR_KEY.to_vec(),
                    value,
                },
            ],
            true,
        )?;
        removed += count as u64;
        if count < PRUNE_CHUNK {
            return Ok(removed);
        }
    }
}

/// The control chain's tip as its record in `control` holds it (`None`: no chain yet), as a
/// backup anchors it.
pub fn control_tip(
    storage: &dyn Storage,
) -> Result<Option<orderd_engine::backup::AuditAnchor>, AuditError> {
    Ok(read_tip_record(storage)?
        .filter(|tip| tip.seq > 0)
        .map(|tip| orderd_engine::backup::AuditAnchor {
            seq: tip.seq,
            hash: tip.hash,
        }))
}

/// The newest stored entry: its `seq` (from the key) and the entry when it parses.
fn last_stored(storage: &dyn Storage) -> Result<Option<(u64, Option<AuditEntry>)>, AuditError> {
    let Some((key, value)) = storage.last_in(Family::Audit, &seq_key(0), CONTROL_KEYS_END)? else {
        return Ok(None);
    };
    let seq = key_seq(&key).ok_or_else(|| AuditError::Corrupt("a key is not 8 bytes".into()))?;
    Ok(Some((seq, serde_json::from_slice(&value).ok())))
}

/// Where the writer continues: after the newest of the tip record and the newest stored entry,
/// so that no `seq` is ever written twice (a deleted tail stays a visible gap).
fn load_tip(storage: &dyn Storage) -> Result<Tip, AuditError> {
    let recorded = read_tip_record(storage)?;
    let stored = last_stored(storage)?;
    let stored_seq = stored.as_ref().map_or(0, |(seq, _)| *seq);
    let tip = match (recorded, stored) {
        (None, None) => Tip::genesis(),
        (Some(tip), None) => tip,
        (Some(tip), Some((seq, _))) if tip.seq >= seq => tip,
        (_, Some((seq, Some(entry)))) if entry.seq == seq => Tip::of(&entry),
        (_, Some((seq, _))) => {
            // Keep serving: continue after it (never reusing a seq); the chain breaks at this
            // entry, which is where `GET /v1/audit/verify` points.
            tracing::error!(
                message = "The newest audit entry is unreadable and no chain tip records it; continuing after it.",
                seq
            );
            Tip {
                seq,
                hash: GENESIS_HASH.to_string(),
                at: wire::time(chrono::Utc::now().timestamp_micros()),
            }
        }
    };
    if stored_seq < tip.seq {
        tracing::error!(
            message = "The newest audit entries are missing; GET /v1/audit/verify reports it.",
            stored_seq,
            tip_seq = tip.seq
        );
    }
    Ok(tip)
}

struct Submission {
    actor: String,
    action: String,
    target: String,
    detail: String,
    ack: oneshot::Sender<Result<AuditEntry, String>>,
}

/// The writer thread: takes everything queued (up to `batch_max`), chains it, writes it in one
/// synced batch with the new tip, then acknowledges each submitter.
fn writer_loop(
    storage: Arc<dyn Storage>,
    mut queue: mpsc::Receiver<Option<Submission>>,
    mut tip: Tip,
    seqs: AuditSeq,
    batch_max: usize,
) {
    let mut batch: Vec<Submission> = Vec::with_capacity(batch_max);
    // `None` asks the writer to stop after what was queued before it.
    let mut stopping = false;
    while !stopping {
        match queue.blocking_recv() {
            Some(Some(first)) => batch.push(first),
            Some(None) | None => break,
        }
        while batch.len() < batch_max {
            match queue.try_recv() {
                Ok(Some(next)) => batch.push(next),
                Ok(None) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut next_tip = tip.clone();
        let mut entries = Vec::with_capacity(batch.len());
        let mut writes = Vec::with_capacity(batch.len() + 1);
        let now_us = chrono::Utc::now().timestamp_micros();
        let at_us = now_us.max(parse_time_us(&tip.at).unwrap_or(now_us));
        let at = wire::time(at_us);
        for submission in &batch {
            let mut entry = AuditEntry {
                seq: seqs.next(),
                chain: CONTROL_CHAIN.into(),
                at: at.clone(),
                actor: submission.actor.clone(),
                action: submission.action.clone(),
                target: submission.target.clone(),
                detail: submission.detail.clone(),
                hash: String::new(),
            };
            entry.hash = entry_hash(&next_tip.hash, &entry);
            next_tip = Tip::of(&entry);
            writes.push(Write::Put {
                family: Family::Audit,
                key: seq_key(entry.seq).to_vec(),
                value: serde_json::to_vec(&entry).unwrap_or_default(),
            });
            entries.push(entry);
        }
        writes.push(Write::Put {
            family: Family::Control,
            key: TIP_KEY.to_vec(),
            value: serde_json::to_vec(&next_tip).unwrap_or_default(),
        });
        match storage.write(writes, true) {
            Ok(()) => {
                tip = next_tip;
                for (submission, entry) in batch.drain(..).zip(entries) {
                    let _ = submission.ack.send(Ok(entry));
                }
            }
            Err(error) => {
                tracing::error!(
                    message = "Failed to write audit entries.",
                    %error,
                    entries = batch.len()
                );
                // The batch may or may not have landed: continue from what storage holds, so
                // that no `seq` is reused.
                match load_tip(storage.as_ref()) {
                    Ok(stored) if stored.seq >= tip.seq => {
                        seqs.observe(stored.seq);
                        tip = stored;
                    }
                    Ok(_) | Err(_) => {}
                }
                let why = error.to_string();
                for submission in batch.drain(..) {
                    let _ = submission.ack.send(Err(why.clone()));
                }
            }
        }
    }
    tracing::info!(message = "Audit writer stopped.");
}

/// Filters of an audit listing.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Entries at or after this time (microseconds since the epoch).
    pub since_us: Option<i64>,
    pub actor: Option<String>,
    /// 1..=1000.
    pub limit: usize,
    /// Entries after this `seq`.
    pub after: Option<u64>,
}

/// One page of entries, ascending by `seq`; `next` is the `after` of the following page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next: Option<u64>,
}

/// The outcome of recomputing the chain over storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: u64,
    pub first_bad_seq: Option<u64>,
    pub detail: String,
    pub last_hash: Option<String>,
    /// Each chain's outcome, `control` first.
    pub chains: Vec<ChainOutcome>,
}

/// One chain's outcome in a [`VerifyReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainOutcome {
    pub chain: String,
    pub ok: bool,
    pub entries: u64,
    pub first_bad_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// The last entry retention removed (`seq`, `hash`): the chain continues after it.
    pub floor: Option<(u64, String)>,
}

/// The audit trail as handlers use it: [`AuditLog::record`] for mutations, plus reading.
pub struct AuditLog {
    queue: mpsc::Sender<Option<Submission>>,
    writer: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
    storage: Arc<dyn Storage>,
    /// The engine's shards, whose chains the listing and verification read.
    shards: u16,
    scan_entries_max: usize,
    refusals_dropped_total: AtomicU64,
    /// The Idempotency-Keys of mutations other than placements: they decide whether a repeat
    /// writes an entry ([`crate::idem`]).
    keys: Keys,
    /// Refusals per peer address in windows (`audit.refusal_window_s`): only the first of a
    /// window is written at once ([`AuditLog::refusal_from`]).
    /// `None` with `audit.refusal_window_s = 0`: every refusal written.
    refusals: Option<RefusalWindows>,
    /// When windows past their length are next closed (microseconds).
    next_sweep_us: AtomicI64,
}

/// The action of the entry that counts a window's refusals after its first.
pub const REFUSALS_AGGREGATED: &str = "auth.refusals_aggregated";

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("scan_entries_max", &self.scan_entries_max)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Loads the chain tip from `storage` and starts the writer thread. The thread stops when
    /// the last `AuditLog` is dropped.
    pub fn start(storage: Arc<dyn Storage>, config: &AuditConfig) -> Result<AuditLog, AuditError> {
        let seqs = AuditSeq::starting_after(chains::last_seq(storage.as_ref(), 0)?);
        AuditLog::start_with(storage, config, seqs, 0)
    }

    /// [`AuditLog::start`] beside an engine of `shards` shards, drawing `seq` from the
    /// engine's counter (`Engine::audit_seq`).
    pub fn start_with(
        storage: Arc<dyn Storage>,
        config: &AuditConfig,
        seqs: AuditSeq,
        shards: u16,
    ) -> Result<AuditLog, AuditError> {
        let tip = load_tip(storage.as_ref())?;
        seqs.observe(tip.seq);
        tracing::info!(message = "Audit trail open.", last_seq = seqs.last());
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        let writer_storage = storage.clone();
        let batch_max = config.queue_capacity;
        let writer = thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_loop(writer_storage, receiver, tip, seqs, batch_max))
            .map_err(|e| AuditError::WriteFailed(format!("cannot start the writer: {e}")))?;
        Ok(AuditLog {
            queue,
            writer: std::sync::Mutex::new(Some(writer)),
            keys: Keys::new(storage.clone(), IDEMPOTENCY_RETENTION_S_MIN),
            storage,
            shards,
            scan_entries_max: config.scan_entries_max,
            refusals_dropped_total: AtomicU64::new(0),
            refusals: (config.refusal_window_s > 0)
                .then(|| RefusalWindows::new(config.refusal_window_s, config.refusal_peers_max)),
            next_sweep_us: AtomicI64::new(0),
        })
    }

    /// Keeps the Idempotency-Keys of [`AuditLog::keys`] as long as the engine keeps its own
    /// (`engine.idempotency_retention_s`; 24 hours unless set).
    pub fn with_idempotency_retention_s(mut self, retention_s: u64) -> AuditLog {
        self.keys = Keys::new(self.storage.clone(), retention_s);
        self
    }

    /// The gateway's Idempotency-Keys ([`crate::idem`]).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn submission(
        actor: &str,
        action: &str,
        target: String,
        detail: String,
    ) -> (Submission, oneshot::Receiver<Result<AuditEntry, String>>) {
        debug_assert!(!action.is_empty() && action.chars().count() <= ACTION_CHARS_MAX);
        let (ack, done) = oneshot::channel();
        let submission = Submission {
            actor: actor.to_string(),
            action: action.to_string(),
            target: cut(target, TARGET_CHARS_MAX),
            detail: cut(detail, DETAIL_CHARS_MAX),
            ack,
        };
        (submission, done)
    }

    async fn acknowledged(
        done: oneshot::Receiver<Result<AuditEntry, String>>,
    ) -> Result<AuditEntry, AuditError> {
        match done.await {
            Ok(Ok(entry)) => Ok(entry),
            Ok(Err(why)) => Err(AuditError::WriteFailed(why)),
            Err(_) => Err(AuditError::Stopped),
        }
    }

    /// Appends an entry and waits until it is durable (waiting for room when the queue is full).
    pub async fn append(
        &self,
        actor: &str,
        action: &str,
        target: String,
        detail: String,
    ) -> Result<AuditEntry, AuditError> {
        let (submission, done) = Self::submission(actor, action, target, detail);
        self.queue
            .send(Some(submission))
            .await
            .map_err(|_| AuditError::Stopped)?;
        Self::acknowledged(done).await
    }

    /// Records a mutation `caller` just made; returns once the entry is durable. `detail` is
    /// short and never holds personal data (names, emails, phones, addresses, free text).
    /// On failure the request must fail: `?` turns it into 503 `unavailable`.
    ///
    /// ```ignore
    /// audit.record(&caller, "shipment.create", shipment_id, format!("order={order_id}")).await?;
    /// ```
    pub async fn record(
        &self,
        caller: &Caller,
        action: &str,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> Result<AuditEntry, ApiError> {
        Ok(self
            .append(&caller.key_id, action, target.into(), detail.into())
            .await?)
    }

    /// Records a refused request (401, 403) without waiting for room: when the queue is full
    /// the entry is dropped and counted, so that a flood of bad requests cannot delay the
    /// entries of real mutations.
    pub async fn record_refusal(
        &self,
        actor: &str,
        action: &str,
        target: String,
        detail: String,
    ) -> Result<AuditEntry, AuditError> {
        let (submission, done) = Self::submission(actor, action, target, detail);
        self.queue
            .try_send(Some(submission))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    self.refusals_dropped_total.fetch_add(1, Ordering::Relaxed);
                    AuditError::QueueFull
                }
                mpsc::error::TrySendError::Closed(_) => AuditError::Stopped,
            })?;
        Self::acknowledged(done).await
    }

    /// Records a request refused (401, 403) from `peer`, aggregated per peer address: the
    /// first refusal of a peer's window (`audit.refusal_window_s`) is written as
    /// [`AuditLog::record_refusal`] writes it and answers `Ok(true)`, and the caller logs it;
    /// the rest of the window are only counted (`Ok(false)`: no entry, no log line) and written
    /// as one [`REFUSALS_AGGREGATED`] entry (peer, count) once the window has closed. Windows
    /// past their length are closed here, at most once a second, and all at shutdown. Without
    /// a peer (none known) the refusal is written as it is.
    pub async fn refusal_from(
        &self,
        peer: Option<IpAddr>,
        actor: &str,
        action: &str,
        target: String,
        detail: String,
    ) -> Result<bool, AuditError> {
        let now_us = chrono::Utc::now().timestamp_micros();
        if let Some((windows, peer)) = self.refusals.as_ref().zip(peer) {
            if now_us >= self.next_sweep_us.load(Ordering::Relaxed) {
                self.next_sweep_us
                    .store(now_us.saturating_add(1_000_000), Ordering::Relaxed);
                for closed in windows.close_expired(now_us) {
                    self.write_aggregated(closed);
                }
            }
            let (verdict, closed) = windows.note(peer, now_us);
            if let Some(closed) = closed {
                self.write_aggregated(closed);
            }
            if verdict == Verdict::Counted {
                return Ok(false);
            }
        }
        self.record_refusal(actor, action, target, detail)
            .await
            .map(|_| true)
    }

    /// Queues the entry of a closed window's counted refusals without waiting for it (dropped
    /// and counted, as a refusal's entry is, when the queue is full).
    fn write_aggregated(&self, closed: Closed) {
        let peer = closed
            .peer
            .map_or_else(|| "other addresses".to_string(), |peer| peer.to_string());
        let detail = format!(
            "{} more refused requests from {peer} in the window opened at {} (only the first was written)",
            closed.count,
            wire::time(closed.opened_us)
        );
        let (submission, _done) = Self::submission(
            ANONYMOUS,
            REFUSALS_AGGREGATED,
            format!("peer {peer}"),
            detail,
        );
        if self.queue.try_send(Some(submission)).is_err() {
            self.refusals_dropped_total.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            message = "Requests refused repeatedly.",
            %peer,
            count = closed.count,
            window_opened = %wire::time(closed.opened_us)
        );
    }

    /// Stops the writer once the entries queued before this call are written, and waits for
    /// it, so that it lets go of storage (RocksDB must close before the process exits). Later
    /// submissions fail with `unavailable`.
    pub async fn shutdown(&self) {
        for closed in self.refusals.iter().flat_map(RefusalWindows::close_all) {
            self.write_aggregated(closed);
        }
        let _ = self.queue.send(None).await;
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// Refusal entries dropped because the queue was full, since start.
    pub fn refusals_dropped_total(&self) -> u64 {
        self.refusals_dropped_total.load(Ordering::Relaxed)
    }

    /// One page of entries of every chain, by ascending `seq` (runs on the blocking pool).
    pub async fn page(&self, filter: AuditFilter) -> Result<AuditPage, ApiError> {
        let storage = self.storage.clone();
        let (scan_entries_max, shards) = (self.scan_entries_max, self.shards);
        Ok(tokio::task::spawn_blocking(move || {
            read_page(storage.as_ref(), shards, &filter, scan_entries_max)
        })
        .await
        .map_err(|e| AuditError::ReadFailed(e.to_string()))??)
    }

    /// Recomputes every chain over storage (runs on the blocking pool); the control chain must
    /// also reach `anchor`, the tip the newest backup recorded.
    pub async fn verify(&self, anchor: Option<AnchoredTip>) -> Result<VerifyReport, ApiError> {
        let storage = self.storage.clone();
        let shards = self.shards;
        Ok(tokio::task::spawn_blocking(move || {
            verify_anchored(storage.as_ref(), shards, anchor.as_ref())
        })
        .await
        .map_err(|e| AuditError::ReadFailed(e.to_string()))??)
    }
}

/// What one chain contributed to a page: its matching entries from the cursor on, and how far
/// it was read.
struct ChainRead {
    matches: Vec<AuditEntry>,
    /// The whole rest of the chain was read.
    exhausted: bool,
    /// The `seq` of the last entry read.
    last_examined: u64,
    unreadable: u64,
}

impl ChainRead {
    fn new() -> ChainRead {
        ChainRead {
            matches: Vec::new(),
            exhausted: true,
            last_examined: 0,
            unreadable: 0,
        }
    }

    /// Takes the next entry of the chain; false once the chain should stop (`limit + 1`
    /// matches, or `examine_max` entries read).
    fn take(
        &mut self,
        entry: AuditEntry,
        filter: &AuditFilter,
        examined: usize,
        examine_max: usize,
    ) -> bool {
        self.last_examined = entry.seq;
        if matches(filter, &entry) {
            self.matches.push(entry);
        }
        if self.matches.len() > filter.limit || examined >= examine_max {
            self.exhausted = false;
            return false;
        }
        true
    }
}

fn matches(filter: &AuditFilter, entry: &AuditEntry) -> bool {
    filter
        .actor
        .as_deref()
        .is_none_or(|actor| entry.actor == actor)
        && filter
            .since_us
            .is_none_or(|since| parse_time_us(&entry.at).is_some_and(|at| at >= since))
}

/// The control chain's entries after `after`.
fn read_control(
    storage: &dyn Storage,
    filter: &AuditFilter,
    after: u64,
    examine_max: usize,
) -> Result<ChainRead, AuditError> {
    let mut read = ChainRead::new();
    let mut examined = 0usize;
    storage.scan(
        Family::Audit,
        &seq_key(after.saturating_add(1)),
        CONTROL_KEYS_END,
        &mut |key, value| {
            examined += 1;
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(value) else {
                read.unreadable += 1;
                read.last_examined = key_seq(key).unwrap_or(read.last_examined);
                if examined >= examine_max {
                    read.exhausted = false;
                    return false;
                }
                return true;
            };
            read.take(entry, filter, examined, examine_max)
        },
    )?;
    Ok(read)
}

/// Shard `shard`'s entries after `after`.
fn read_shard(
    storage: &dyn Storage,
    shard: u16,
    filter: &AuditFilter,
    after: u64,
    examine_max: usize,
) -> Result<ChainRead, AuditError> {
    let mut read = ChainRead::new();
    let mut examined = 0usize;
    let chain = shard_chain(shard);
    read.unreadable = chains::scan_entries(storage, shard, after, &mut |stored| {
        examined += 1;
        let entry = AuditEntry {
            seq: stored.seq,
            chain: chain.clone(),
            at: stored.at(),
            actor: stored.actor.clone(),
            action: stored.action.clone(),
            target: stored.target.clone(),
            detail: stored.detail.clone(),
            hash: stored.hash_hex(),
        };
        read.take(entry, filter, examined, examine_max)
    })?;
    Ok(read)
}

/// Reads one page of every chain merged by ascending `seq`: each chain is read from the cursor
/// until it has `limit + 1` matches or `scan_entries_max` entries were read; the page holds the
/// matches up to the point every chain has been read to, at most `limit` of them. `next` is the
/// `after` of the following page (the page may hold fewer than `limit` entries when chains
/// were cut short by the scan bound).
pub fn read_page(
    storage: &dyn Storage,
    shards: u16,
    filter: &AuditFilter,
    scan_entries_max: usize,
) -> Result<AuditPage, AuditError> {
    debug_assert!(filter.limit >= 1);
    let after = filter.after.unwrap_or(0);
    let examine_max = scan_entries_max.max(1);
    let mut reads = vec![read_control(storage, filter, after, examine_max)?];
    for shard in 0..shards {
        reads.push(read_shard(storage, shard, filter, after, examine_max)?);
    }
    let unreadable: u64 = reads.iter().map(|r| r.unreadable).sum();
    if unreadable > 0 {
        tracing::warn!(
            message = "Skipped unreadable audit entries; GET /v1/audit/verify reports them.",
            unreadable
        );
    }
    // Every chain cut short was read up to its `last_examined`: entries up to the lowest of
    // those are complete.
    let frontier = reads
        .iter()
        .filter(|r| !r.exhausted)
        .map(|r| r.last_examined)
        .min();
    let mut items: Vec<AuditEntry> = reads
        .into_iter()
        .flat_map(|r| r.matches)
        .filter(|e| frontier.is_none_or(|f| e.seq <= f))
        .collect();
    items.sort_unstable_by_key(|e| e.seq);
    let next = if items.len() > filter.limit {
        items.truncate(filter.limit);
        items.last().map(|e| e.seq)
    } else {
        frontier
    };
    Ok(AuditPage { items, next })
}

/// A control chain tip recorded outside the store, in a backup's signed manifest: the chain
/// must still hold entry `seq` with `hash` (deleting every entry and the tip record, which
/// verifies by itself, is then detected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchoredTip {
    /// The backup whose manifest holds it.
    pub backup_id: String,
    /// 0 when no manifest anchored the control chain (it had no entry yet).
    pub seq: u64,
    pub hash: String,
    /// The shard chains' tips the newest manifest that has them anchored, with its backup's
    /// id: each shard chain must still reach its tip (or have moved it out by retention).
    pub shards: Option<(String, Vec<orderd_engine::backup::ShardAnchor>)>,
}

/// Checks shard chain `shard` (its newest entry `last_seq`, its retention floor) against the
/// tip backup `id` anchored; `Some((seq, why))` when it falls short.
fn check_shard_anchor(
    storage: &dyn Storage,
    anchor: &orderd_engine::backup::ShardAnchor,
    id: &str,
    last_seq: u64,
    floor_seq: Option<u64>,
) -> Result<Option<(u64, String)>, AuditError> {
    let (shard, seq) = (anchor.shard, anchor.seq);
    // Moved out by retention: a backup holds it (retention removes only what one holds).
    if floor_seq.is_some_and(|floor| seq <= floor) {
        return Ok(None);
    }
    if last_seq < seq {
        return Ok(Some((
            last_seq + 1,
            format!(
                "shard {shard}: it ends at entry {last_seq}, shorter than the tip {seq} that \
                 backup {id} anchored: entries were deleted"
            ),
        )));
    }
    let mut found = None;
    chains::scan_entries(storage, shard, seq - 1, &mut |entry| {
        if entry.seq == seq {
            found = Some(chains::hex(&entry.hash));
        }
        false
    })?;
    Ok(match found {
        None => Some((
            seq,
            format!("shard {shard}: entry {seq}, the tip backup {id} anchored, is missing"),
        )),
        Some(hash) if hash != anchor.hash => Some((
            seq,
            format!(
                "shard {shard}: entry {seq} differs from the tip backup {id} anchored: the chain \
                 was rewritten"
            ),
        )),
        Some(_) => None,
    })
}

/// Checks the control chain against `anchor`; `Some((seq, why))` when it falls short.
fn check_anchor(
    storage: &dyn Storage,
    anchor: &AnchoredTip,
    last_seq: u64,
    floor_seq: u64,
) -> Result<Option<(u64, String)>, AuditError> {
    let id = &anchor.backup_id;
    let seq = anchor.seq;
    if seq <= floor_seq {
        // Retention never removes the newest backup's anchor: a floor past it removed entries
        // no backup was known to hold.
        return Ok(Some((
            seq,
            format!(
                "control chain: the retention floor (entry {floor_seq}) passes the tip {seq}                  that backup {id} anchored: entries were removed"
            ),
        )));
    }
    if last_seq < seq {
        return Ok(Some((
            last_seq + 1,
            format!(
                "control chain: it ends at entry {last_seq}, shorter than the tip {seq} that \
                 backup {id} anchored: entries were deleted"
            ),
        )));
    }
    let stored = storage
        .get(Family::Audit, &seq_key(seq))?
        .and_then(|value| serde_json::from_slice::<AuditEntry>(&value).ok());
    Ok(match stored {
        None => Some((
            seq,
            format!("control chain: entry {seq}, the tip backup {id} anchored, is missing"),
        )),
        Some(entry) if entry.hash != anchor.hash => Some((
            seq,
            format!(
                "control chain: entry {seq} differs from the tip backup {id} anchored: the chain \
                 was rewritten"
            ),
        )),
        Some(_) => None,
    })
}

/// Recomputes the control chain over every stored entry, then checks the newest against the tip
/// record and, when given, the chain against an anchored tip. Reads everything once, in
/// constant memory.
fn verify_control(
    storage: &dyn Storage,
    anchor: Option<&AnchoredTip>,
) -> Result<VerifyReport, AuditError> {
    let floor = read_floor(storage)?;
    let mut verifier = floor.as_ref().map_or_else(ChainVerifier::default, |f| {
        ChainVerifier::after(f.seq, &f.hash)
    });
    let mut entries = 0u64;
    let mut first_bad: Option<(u64, String)> = None;
    let mut last_hash: Option<String> = floor.as_ref().map(|f| f.hash.clone());
    let floor_seq = floor.as_ref().map_or(0, |f| f.seq);
    let mut last_seq = floor_seq;
    storage.scan(
        Family::Audit,
        &seq_key(0),
        CONTROL_KEYS_END,
        &mut |key, value| {
            entries += 1;
            let key_seq = key_seq(key).unwrap_or(0);
            last_seq = key_seq;
            let entry = serde_json::from_slice::<AuditEntry>(value);
            last_hash = entry.as_ref().ok().map(|e| e.hash.clone());
            if first_bad.is_some() {
                return true;
            }
            first_bad = match entry {
                Err(error) => Some((
                    key_seq,
                    format!("entry {key_seq} is not a valid entry: {error}"),
                )),
                Ok(entry) if entry.seq != key_seq => Some((
                    key_seq,
                    format!("the entry stored as {key_seq} says it is {}", entry.seq),
                )),
                Ok(entry) => verifier.push(&entry).err(),
            };
            true
        },
    )?;
    if first_bad.is_none() {
        first_bad = match read_tip_record(storage)? {
            Some(tip) if tip.seq > last_seq => Some((
                last_seq + 1,
                format!(
                    "control chain: the newest entries after {last_seq} up to {} are missing (they were deleted)",
                    tip.seq
                ),
            )),
            Some(tip) if tip.seq < last_seq => Some((
                tip.seq + 1,
                format!(
                    "control chain: entries after {} were not written by the audit writer",
                    tip.seq
                ),
            )),
            Some(tip) if last_hash.as_deref() != Some(tip.hash.as_str()) => Some((
                tip.seq,
                format!("control chain: entry {} differs from the recorded chain tip", tip.seq),
            )),
            Some(_) => None,
            None if entries > 0 || floor.is_some() => Some((
                last_seq,
                "control chain: the chain tip record is missing or unreadable".to_string(),
            )),
            None => None,
        };
    }
    if first_bad.is_none() {
        // seq 0: no control chain was anchored (only shard chains).
        if let Some(anchor) = anchor.filter(|a| a.seq > 0) {
            first_bad = check_anchor(storage, anchor, last_seq, floor_seq)?;
        }
    }
    let mut report = report(CONTROL_CHAIN.into(), entries, first_bad, last_hash);
    report.chains[0].floor = floor.map(|f| (f.seq, f.hash));
    Ok(report)
}

fn report(
    chain: String,
    entries: u64,
    first_bad: Option<(u64, String)>,
    last_hash: Option<String>,
) -> VerifyReport {
    let (ok, first_bad_seq, detail) = match first_bad {
        None => (true, None, format!("{chain}: {entries} entries verified")),
        Some((seq, detail)) => (false, Some(seq), detail),
    };
    VerifyReport {
        ok,
        entries,
        first_bad_seq,
        detail,
        last_hash,
        chains: vec![ChainOutcome {
            chain,
            ok,
            entries,
            first_bad_seq,
            last_hash: None,
            floor: None,
        }],
    }
}

/// Recomputes every chain: the control chain and each shard's (entries, batch chain, log
/// digests, tips). `ok` only if all verify; `first_bad_seq` is the lowest bad `seq` of any
/// chain, `last_hash` the hash of the newest entry of all.
pub fn verify_stored(storage: &dyn Storage, shards: u16) -> Result<VerifyReport, AuditError> {
    verify_anchored(storage, shards, None)
}

/// The floors of every chain, as retention last moved them.
fn floors(storage: &dyn Storage, shards: u16) -> Result<Vec<Option<u64>>, AuditError> {
    let mut out = vec![read_floor(storage)?.map(|f| f.seq)];
    for shard in 0..shards {
        out.push(chains::read_floor(storage, shard)?.map(|f| f.entry_seq));
    }
    Ok(out)
}

/// [`verify_stored`], with the control chain also held to `anchor` (see [`AnchoredTip`]). A
/// retention pass that moved a floor while the chains were read makes them look cut: such a
/// run is repeated (retention runs once per backup, so a second run finds the floors still).
pub fn verify_anchored(
    storage: &dyn Storage,
    shards: u16,
    anchor: Option<&AnchoredTip>,
) -> Result<VerifyReport, AuditError> {
    let mut attempt = 0;
    loop {
        let before = floors(storage, shards)?;
        let report = verify_once(storage, shards, anchor)?;
        attempt += 1;
        if report.ok || attempt >= 3 || floors(storage, shards)? == before {
            return Ok(report);
        }
    }
}

fn verify_once(
    storage: &dyn Storage,
    shards: u16,
    anchor: Option<&AnchoredTip>,
) -> Result<VerifyReport, AuditError> {
    let mut total = verify_control(storage, anchor)?;
    total.chains[0].last_hash.clone_from(&total.last_hash);
    let mut newest: Option<(u64, String)> = None;
    if let Some(hash) = &total.last_hash {
        newest = Some((
            last_stored(storage)?.map_or(0, |(seq, _)| seq),
            hash.clone(),
        ));
    }
    let mut details = vec![total.detail.clone()];
    for shard in 0..shards {
        let mut chain = chains::verify_shard_chain(storage, shard)?;
        if chain.first_bad.is_none() {
            if let Some((id, anchors)) = anchor.and_then(|a| a.shards.as_ref()) {
                if let Some(shard_anchor) = anchors.iter().find(|a| a.shard == shard) {
                    chain.first_bad = check_shard_anchor(
                        storage,
                        shard_anchor,
                        id,
                        chain.last_seq,
                        chain.floor_seq,
                    )?;
                }
            }
        }
        let name = shard_chain(shard);
        let last_hash = chain.last_hash.map(|h| chains::hex(&h));
        if let Some(hash) = &last_hash {
            let tip = chains::read_tip(storage, shard)?.unwrap_or_default();
            if newest.as_ref().is_none_or(|(seq, _)| tip.entry_seq > *seq) {
                newest = Some((tip.entry_seq, hash.clone()));
            }
        }
        let ok = chain.first_bad.is_none();
        let first_bad_seq = chain.first_bad.as_ref().map(|(seq, _)| *seq);
        match chain.first_bad {
            Some((seq, why)) => {
                if total.ok || total.first_bad_seq.is_some_and(|bad| seq < bad) {
                    total.first_bad_seq = Some(seq);
                }
                total.ok = false;
                details.push(why);
            }
            None => details.push(format!("{name}: {} entries verified", chain.entries)),
        }
        total.entries += chain.entries;
        let floor = match chain.floor_seq {
            Some(seq) => {
                chains::read_floor(storage, shard)?.map(|f| (seq, chains::hex(&f.entry_hash)))
            }
            None => None,
        };
        total.chains.push(ChainOutcome {
            chain: name,
            ok,
            entries: chain.entries,
            first_bad_seq,
            last_hash,
            floor,
        });
    }
    if total.ok {
        total.detail = format!(
            "{} entries verified in {} chains",
            total.entries,
            total.chains.len()
        );
    } else {
        // The failures first: they are what the reader is looking for.
        let (bad, good): (Vec<String>, Vec<String>) = details
            .into_iter()
            .partition(|d| !d.ends_with("entries verified"));
        total.detail = bad.into_iter().chain(good).collect::<Vec<_>>().join("; ");
    }
    total.last_hash = newest.map(|(_, hash)| hash);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_engine::MemoryStorage;

    fn config(queue_capacity: usize) -> AuditConfig {
        AuditConfig {
            queue_capacity,
            scan_entries_max: 100_000,
            refusal_window_s: 60,
            refusal_peers_max: 4096,
            retention_s: 0,
        }
    }

    fn caller(key_id: &str) -> Caller {
        Caller {
            key_id: key_id.to_string(),
            role: crate::roles::Role::Admin,
            customer_id: None,
            owner: "test".into(),
            created_by_owner: None,
        }
    }

    fn all(storage: &dyn Storage) -> Vec<AuditEntry> {
        read_page(
            storage,
            0,
            &AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            },
            100_000,
        )
        .unwrap()
        .items
    }

    fn put(storage: &dyn Storage, seq: u64, value: Vec<u8>) {
        storage
            .write(
                vec![Write::Put {
                    family: Family::Audit,
                    key: seq_key(seq).to_vec(),
                    value,
                }],
                true,
            )
            .unwrap();
    }

    fn delete(storage: &dyn Storage, seq: u64) {
        storage
            .write(
                vec![Write::DeleteRange {
                    family: Family::Audit,
                    from: seq_key(seq).to_vec(),
                    to: seq_key(seq + 1).to_vec(),
                }],
                true,
            )
            .unwrap();
    }

    #[test]
    fn the_hash_is_sha256_of_the_previous_hash_and_the_canonical_form() {
        let entry = AuditEntry {
            seq: 1,
            at: "2025-01-02T03:04:05.000006Z".into(),
            actor: "key_1".into(),
            action: "stock.adjust".into(),
            target: "SKU-\"1\"".into(),
            detail: "delta=+5".into(),
            hash: String::new(),
            chain: CONTROL_CHAIN.into(),
        };
        assert_eq!(
            String::from_utf8(canonical(&entry)).unwrap(),
            r#"[1,"2025-01-02T03:04:05.000006Z","key_1","stock.adjust","SKU-\"1\"","delta=+5"]"#
        );
        let mut input = GENESIS_HASH.as_bytes().to_vec();
        input.extend_from_slice(&canonical(&entry));
        assert_eq!(
            entry_hash(GENESIS_HASH, &entry),
            hex::encode(Sha256::digest(&input))
        );
        assert_ne!(
            entry_hash(GENESIS_HASH, &entry),
            entry_hash(&"1".repeat(64), &entry)
        );
    }

    #[tokio::test]
    async fn refusals_from_one_peer_write_one_entry_and_one_count_per_window() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let log = AuditLog::start(storage.clone(), &config(64)).unwrap();
        let flood: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let refuse = |peer: Option<IpAddr>| {
            log.refusal_from(
                peer,
                ANONYMOUS,
                "auth.unauthorized",
                "GET /v1/orders".into(),
                "missing key".into(),
            )
        };
        assert!(refuse(Some(flood)).await.unwrap(), "the first is written");
        for _ in 0..99 {
            assert!(!refuse(Some(flood)).await.unwrap(), "the rest only counted");
        }
        assert!(
            refuse(Some(other)).await.unwrap(),
            "another peer has its own window"
        );
        assert!(refuse(None).await.unwrap(), "no peer: written as it is");
        log.shutdown().await;
        let entries = all(storage.as_ref());
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == "auth.unauthorized")
                .count(),
            3,
            "{actions:?}"
        );
        let aggregated: Vec<&AuditEntry> = entries
            .iter()
            .filter(|e| e.action == REFUSALS_AGGREGATED)
            .collect();
        assert_eq!(
            aggregated.len(),
            1,
            "only the flooding peer had more: {entries:?}"
        );
        assert_eq!(aggregated[0].target, "peer 192.0.2.7");
        assert!(
            aggregated[0]
                .detail
                .starts_with("99 more refused requests from 192.0.2.7"),
            "{}",
            aggregated[0].detail
        );
    }

    #[tokio::test]
    async fn a_window_of_zero_writes_every_refusal() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let config = AuditConfig {
            refusal_window_s: 0,
            ..config(64)
        };
        let log = AuditLog::start(storage.clone(), &config).unwrap();
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..5 {
            let written = log
                .refusal_from(
                    Some(peer),
                    ANONYMOUS,
                    "auth.unauthorized",
                    "t".into(),
                    "d".into(),
                )
                .await
                .unwrap();
            assert!(written);
        }
        log.shutdown().await;
        assert_eq!(all(storage.as_ref()).len(), 5);
    }

    #[tokio::test]
    async fn entries_chain_survive_a_restart_and_verify() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let log = AuditLog::start(storage.clone(), &config(16)).unwrap();
        let mut handles = Vec::new();
        let log = Arc::new(log);
        for i in 0..50 {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                log.record(
                    &caller("key_a"),
                    "stock.adjust",
                    format!("S{i}"),
                    "delta=+1",
                )
                .await
                .unwrap()
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        drop(log);
        // A second writer on the same storage continues the chain.
        let log = AuditLog::start(storage.clone(), &config(16)).unwrap();
        let entry = log
            .record(&caller("key_b"), "key.revoke", "key_x", "role=frontend")
            .await
            .unwrap();
        assert_eq!(entry.seq, 51);
        let entries = all(storage.as_ref());
        assert_eq!(entries.len(), 51);
        assert_eq!(verify_chain(&entries), Ok(51));
        for pair in entries.windows(2) {
            assert!(pair[0].at <= pair[1].at, "at never decreases");
        }
        let report = verify_stored(storage.as_ref(), 0).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.entries, 51);
        assert_eq!(report.last_hash.as_deref(), Some(entry.hash.as_str()));
    }

    /// Issue 17, item 12: deleting every entry and the tip record verifies by itself (this
    /// test's first assertion); held to the tip a backup anchored, it is broken.
    #[tokio::test]
    async fn retention_removes_old_entries_below_the_anchor_and_the_chain_verifies_from_its_floor()
    {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let log = AuditLog::start(storage.clone(), &config(4)).unwrap();
        for i in 0..6 {
            log.record(&caller("key_a"), "customer.create", format!("cus_{i}"), "")
                .await
                .unwrap();
        }
        let anchored = control_tip(storage.as_ref()).unwrap().unwrap();
        assert_eq!(anchored.seq, 6);
        let anchor = AnchoredTip {
            backup_id: "bak_000001_00000000".into(),
            shards: None,
            seq: 4,
            hash: read_page(
                storage.as_ref(),
                0,
                &AuditFilter {
                    limit: 10,
                    ..Default::default()
                },
                100,
            )
            .unwrap()
            .items[3]
                .hash
                .clone(),
        };
        // Entries at or after `before_us` stay: nothing is that old.
        let past = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
        assert_eq!(
            prune(storage.as_ref(), past, Some(4), &[]).unwrap(),
            Pruned::default()
        );
        // Old enough: everything below the anchor (4) goes, the anchored entry stays.
        let now = chrono::Utc::now().timestamp_micros() + 1;
        let pruned = prune(storage.as_ref(), now, Some(4), &[]).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                control: 3,
                shards: 0
            }
        );
        let page = read_page(
            storage.as_ref(),
            0,
            &AuditFilter {
                limit: 10,
                ..Default::default()
            },
            100,
        )
        .unwrap();
        assert_eq!(
            page.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        let report = verify_anchored(storage.as_ref(), 0, Some(&anchor)).unwrap();
        assert!(report.ok, "{}", report.detail);
        assert_eq!(report.chains[0].floor.as_ref().map(|f| f.0), Some(3));
        // The writer continues; the chain still verifies, and a client verifies the listing
        // from the floor.
        log.record(&caller("key_a"), "customer.create", "cus_6".to_string(), "")
            .await
            .unwrap();
        drop(log);
        let report = verify_anchored(storage.as_ref(), 0, Some(&anchor)).unwrap();
        assert!(report.ok, "{}", report.detail);
        let (floor_seq, floor_hash) = report.chains[0].floor.clone().unwrap();
        let mut client = ChainVerifier::after(floor_seq, &floor_hash);
        let page = read_page(
            storage.as_ref(),
            0,
            &AuditFilter {
                limit: 10,
                ..Default::default()
            },
            100,
        )
        .unwrap();
        for entry in &page.items {
            client.push(entry).unwrap();
        }
        assert_eq!(client.verified(), 4);
        // A floor moved past the newest backup's anchor removed entries no backup was known to
        // hold: broken.
        assert_eq!(
            prune(storage.as_ref(), now, Some(6), &[]).unwrap().control,
            2
        );
        let report = verify_anchored(storage.as_ref(), 0, Some(&anchor)).unwrap();
        assert!(!report.ok);
        assert!(
            report.detail.contains("retention floor"),
            "{}",
            report.detail
        );
    }

    #[tokio::test]
    async fn a_chain_shorter_than_its_anchored_tip_is_broken() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let log = AuditLog::start(storage.clone(), &config(4)).unwrap();
        for i in 0..5 {
            log.record(&caller("key_a"), "customer.create", format!("cus_{i}"), "")
                .await
                .unwrap();
        }
        drop(log);
        let tip = control_tip(storage.as_ref()).unwrap().unwrap();
        assert_eq!(tip.seq, 5);
        let anchor = AnchoredTip {
            backup_id: "bak_000001_00000000".into(),
            seq: tip.seq,
            hash: tip.hash.clone(),
            shards: None,
        };
        assert!(
            verify_anchored(storage.as_ref(), 0, Some(&anchor))
                .unwrap()
                .ok
        );
        // A wrong hash at the anchored seq: rewritten.
        let other = AnchoredTip {
            hash: "0".repeat(64),
            ..anchor.clone()
        };
        let report = verify_anchored(storage.as_ref(), 0, Some(&other)).unwrap();
        assert!(!report.ok);
        assert!(report.detail.contains("rewritten"), "{}", report.detail);
        // Everything deleted, the tip record too.
        for seq in 1..=5 {
            delete(storage.as_ref(), seq);
        }
        storage
            .write(
                vec![Write::DeleteRange {
                    family: Family::Control,
                    from: TIP_KEY.to_vec(),
                    to: [TIP_KEY, &[0]].concat(),
                }],
                true,
            )
            .unwrap();
        assert!(verify_stored(storage.as_ref(), 0).unwrap().ok, "unanchored");
        let report = verify_anchored(storage.as_ref(), 0, Some(&anchor)).unwrap();
        assert!(!report.ok);
        assert_eq!(report.first_bad_seq, Some(1));
        assert!(
            report
                .detail
                .contains("shorter than the tip 5 that backup bak_000001_00000000"),
            "{}",
            report.detail
        );
    }

    #[tokio::test]
    async fn edits_deletions_and_reorderings_are_detected() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let log = AuditLog::start(storage.clone(), &config(4)).unwrap();
        for i in 0..6 {
            log.record(&caller("key_a"), "customer.create", format!("cus_{i}"), "")
                .await
                .unwrap();
        }
        let good = all(storage.as_ref());
        assert_eq!(verify_chain(&good), Ok(6));

        // Client side: edited, missing, swapped, and a first entry that is not 1.
        let mut edited = good.clone();
        edited[2].detail = "changed".into();
        assert_eq!(verify_chain(&edited).unwrap_err().0, 3);
        // A missing entry breaks the link of the one after it (numbers may have gaps: other
        // chains take them).
        let mut missing = good.clone();
        missing.remove(3);
        assert_eq!(verify_chain(&missing).unwrap_err().0, 5);
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_chain(&swapped).unwrap_err().0, 3);
        assert_eq!(verify_chain(&good[1..]).unwrap_err().0, 2);
        // Editing an entry and recomputing its own hash breaks the next link.
        let mut rehashed = good.clone();
        rehashed[2].detail = "changed".into();
        rehashed[2].hash = entry_hash(&rehashed[1].hash, &rehashed[2]);
        assert_eq!(verify_chain(&rehashed).unwrap_err().0, 4);

        // Server side, over storage.
        let mut tampered = good[4].clone();
        tampered.detail = "changed".into();
        put(storage.as_ref(), 5, serde_json::to_vec(&tampered).unwrap());
        let report = verify_stored(storage.as_ref(), 0).unwrap();
        assert_eq!((report.ok, report.first_bad_seq), (false, Some(5)));
        put(storage.as_ref(), 5, serde_json::to_vec(&good[4]).unwrap());
        assert!(verify_stored(storage.as_ref(), 0).unwrap().ok);

        delete(storage.as_ref(), 2);
        let report = verify_stored(storage.as_ref(), 0).unwrap();
        assert_eq!(report.first_bad_seq, Some(3), "{report:?}");
        put(storage.as_ref(), 2, serde_json::to_vec(&good[1]).unwrap());

        // Two values swapped between their keys.
        put(storage.as_ref(), 3, serde_json::to_vec(&good[3]).unwrap());
        put(storage.as_ref(), 4, serde_json::to_vec(&good[2]).unwrap());
        let report = verify_stored(storage.as_ref(), 0).unwrap();
        assert_eq!(report.first_bad_seq, Some(3), "{report:?}");
        put(storage.as_ref(), 3, serde_json::to_vec(&good[2]).unwrap());
        put(storage.as_ref(), 4, serde_json::to_vec(&good[3]).unwrap());

        put(storage.as_ref(), 6, b"not json".to_vec());
        assert_eq!(
            verify_stored(storage.as_ref(), 0).unwrap().first_bad_seq,
            Some(6)
        );
        // Unreadable newest entry and no tip record: a writer still starts, after it.
        let tip = storage.get(Family::Control, TIP_KEY).unwrap().unwrap();
        storage
            .write(
                vec![Write::DeleteRange {
                    family: Family::Control,
                    from: TIP_KEY.to_vec(),
                    to: b"gateway/audit/tiq".to_vec(),
                }],
                true,
            )
            .unwrap();
        assert_eq!(load_tip(storage.as_ref()).unwrap().seq, 6);
        storage
            .write(
                vec![Write::Put {
                    family: Family::Control,
                    key: TIP_KEY.to_vec(),
                    value: tip,
                }],
                true,
            )
            .unwrap();
        put(storage.as_ref(), 6, serde_json::to_vec(&good[5]).unwrap());
        assert!(verify_stored(storage.as_ref(), 0).unwrap().ok);
        // The newest entry deleted: only the tip record shows it.
        delete(storage.as_ref(), 6);
        let report = verify_stored(storage.as_ref(), 0).unwrap();
        assert_eq!(report.first_bad_seq, Some(6), "{report:?}");
        assert!(report.detail.contains("missing"), "{report:?}");
        // A restarted writer does not reuse the deleted seq.
        drop(log);
        let log = AuditLog::start(storage.clone(), &config(4)).unwrap();
        let entry = log
            .record(&caller("key_a"), "key.create", "key_y", "role=admin")
            .await
            .unwrap();
        assert_eq!(entry.seq, 7);
        // Linked to the deleted entry, the next one no longer verifies after entry 5.
        assert_eq!(
            verify_stored(storage.as_ref(), 0).unwrap().first_bad_seq,
            Some(7)
        );
    }

    #[tokio::test]
    async fn pages_filter_by_actor_and_time_and_follow_the_cursor() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let log = AuditLog::start(storage.clone(), &config(8)).unwrap();
        for i in 0..30 {
            let actor = if i % 3 == 0 { "key_x" } else { "key_y" };
            log.record(&caller(actor), "order.cancel", format!("ord_{i}"), "")
                .await
                .unwrap();
        }
        let everything = all(storage.as_ref());
        // Pages of 4 of key_x's entries: 10 in all, in order, no repeats.
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = read_page(
                storage.as_ref(),
                0,
                &AuditFilter {
                    actor: Some("key_x".into()),
                    limit: 4,
                    after,
                    ..AuditFilter::default()
                },
                100_000,
            )
            .unwrap();
            assert!(page.items.len() <= 4);
            got.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let want: Vec<_> = everything
            .iter()
            .filter(|e| e.actor == "key_x")
            .cloned()
            .collect();
        assert_eq!(got, want);

        // A scan bound smaller than the page still makes progress through `next`.
        let page = read_page(
            storage.as_ref(),
            0,
            &AuditFilter {
                actor: Some("key_x".into()),
                limit: 100,
                ..AuditFilter::default()
            },
            5,
        )
        .unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next, Some(5));

        // `since`: entries at or after the time of entry 20.
        let since_us = parse_time_us(&everything[19].at).unwrap();
        let page = read_page(
            storage.as_ref(),
            0,
            &AuditFilter {
                since_us: Some(since_us),
                limit: 1000,
                ..AuditFilter::default()
            },
            100_000,
        )
        .unwrap();
        let want: Vec<_> = everything
            .iter()
            .filter(|e| parse_time_us(&e.at).unwrap() >= since_us)
            .cloned()
            .collect();
        assert!(want.len() >= 11, "entries 20 to 30 at least");
        assert_eq!(page.items, want);
        assert_eq!(page.next, None);
    }

    #[tokio::test]
    async fn a_failed_write_is_a_503_and_the_chain_goes_on() {
        // Real in-memory storage whose writes fail while the disk is "full".
        let storage = Arc::new(orderd_storage::faulty::FaultyStorage::new(Arc::new(
            MemoryStorage::new(),
        )));
        let log = AuditLog::start(storage.clone(), &config(8)).unwrap();
        log.record(&caller("key_a"), "customer.create", "cus_1", "")
            .await
            .unwrap();
        storage.set_full(true);
        let error = log
            .record(&caller("key_a"), "customer.create", "cus_2", "")
            .await
            .unwrap_err();
        assert!(matches!(error, ApiError::Unavailable { .. }), "{error:?}");
        storage.set_full(false);
        let entry = log
            .record(&caller("key_a"), "customer.create", "cus_3", "")
            .await
            .unwrap();
        // The failed write's number is a gap; the chain links over it.
        assert_eq!(entry.seq, 3);
        let entries = all(storage.as_ref());
        assert_eq!(verify_chain(&entries), Ok(2));
        assert!(verify_stored(storage.as_ref(), 0).unwrap().ok);
    }

    #[test]
    fn long_targets_and_details_are_cut_by_characters() {
        assert_eq!(cut("é".repeat(300), TARGET_CHARS_MAX).chars().count(), 200);
        assert_eq!(cut("short".into(), TARGET_CHARS_MAX), "short");
    }
}

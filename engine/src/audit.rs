//! The audit trail written with the log: the entries a shard's mutations produce, their
//! per-shard hash chains, the record each log batch carries, and reading and verifying them.
//!
//! A shard that applies a client's mutation (an order placed, a cancel, a shipment, a stock
//! adjustment, a customer created) adds an [`StoredEntry`] to its current batch
//! ([`ShardChain::push`]). When the batch is sealed ([`ShardChain::seal`]) the entries become
//! one **record**, written by the log writer in the same RocksDB write batch as the log batch
//! (and its chain tip in `control`), so one fsync makes the mutation and its audit entry
//! durable together; there is no second writer and no second fsync.
//!
//! Two hash chains run through a shard's records:
//!
//! - **The entry chain** (what `GET /v1/audit` shows): `hash = hex(SHA-256(hex(previous) ‖
//!   canonical))` with `canonical` the compact JSON array `[seq, at, actor, action, target,
//!   detail]`, exactly as the gateway's control chain hashes its entries, so a client can
//!   verify a chain from the entries it fetched.
//! - **The batch chain**: a record's value is `version ‖ SHA-256 of the previous record's value
//!   ‖ postcard(body)`, and the body holds the SHA-256 of the log batch it was written with.
//!   An edited, removed or reordered record breaks it, and while the log batch is still stored
//!   (snapshots trim the log; records follow the audit retention instead) an edited log batch
//!   no longer matches its digest.
//!
//! Sequence numbers are global: one counter ([`AuditSeq`]) shared by every shard and the
//! gateway's control chain, so that entries of all chains merge into one ascending listing.
//! A sequence taken by a batch that never became durable (a failed write, a crash) is a gap;
//! chains are verified by their hashes, never by contiguous numbers.
//!
//! Storage: family `audit`, key `'s' ‖ shard (u16 BE) ‖ seq of the record's first entry (u64
//! BE)`; the control chain's keys are 8-byte sequence numbers, which sort before every shard
//! key (no sequence reaches 2^56). The tip of each shard chain is in `control` under
//! `audit/tip/shard/{shard}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{shard_key, Family, Storage, StorageError, Write};

/// Format version of a record's value.
pub const RECORD_VERSION: u8 = 1;
/// Format version of a tip's value.
const TIP_VERSION: u8 = 1;
/// The hash before the first record and before the first entry of a chain.
pub const GENESIS: [u8; 32] = [0; 32];
/// First byte of a shard chain record's key in `audit`.
pub const SHARD_RECORD_PREFIX: u8 = b's';
const TIP_PREFIX: &[u8] = b"audit/tip/shard/";
/// Longest `target`, in characters (as the gateway's entries).
pub const TARGET_CHARS_MAX: usize = 200;
/// Longest `detail`, in characters.
pub const DETAIL_CHARS_MAX: usize = 500;

/// Key of a shard chain record.
pub fn record_key(shard: u16, first_entry_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.push(SHARD_RECORD_PREFIX);
    key.extend_from_slice(&shard.to_be_bytes());
    key.extend_from_slice(&first_entry_seq.to_be_bytes());
    key
}

/// `(shard, first entry seq)` of a record key.
pub fn parse_record_key(key: &[u8]) -> Option<(u16, u64)> {
    if key.len() != 11 || key[0] != SHARD_RECORD_PREFIX {
        return None;
    }
    let shard = u16::from_be_bytes([key[1], key[2]]);
    let seq = u64::from_be_bytes(key[3..11].try_into().ok()?);
    Some((shard, seq))
}

/// Key of a shard chain's tip in `control`.
pub fn tip_key(shard: u16) -> Vec<u8> {
    let mut key = TIP_PREFIX.to_vec();
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// The global sequence of audit entries (every chain draws from it).
#[derive(Clone, Debug, Default)]
pub struct AuditSeq(Arc<AtomicU64>);

impl AuditSeq {
    /// A counter whose next number is `last + 1`.
    pub fn starting_after(last: u64) -> AuditSeq {
        AuditSeq(Arc::new(AtomicU64::new(last)))
    }

    /// Takes the next number.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The last number taken.
    pub fn last(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Makes sure later numbers are above `seq` (a number found in storage).
    pub fn observe(&self, seq: u64) {
        self.0.fetch_max(seq, Ordering::Relaxed);
    }
}

/// One entry as stored in a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub seq: u64,
    pub at_us: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// The entry chain's hash after this entry.
    pub hash: [u8; 32],
}

impl StoredEntry {
    /// `at` as the API shows it (RFC 3339, microseconds, `Z`).
    pub fn at(&self) -> String {
        rfc3339_micros(self.at_us)
    }

    /// `hash` as the API shows it (64 lowercase hex digits).
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// What a record holds besides the previous record's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// The log batch written with it: `(first_seq, last_seq)` of its events.
    pub log_first_seq: u64,
    pub log_last_seq: u64,
    /// SHA-256 of the log batch's stored value.
    pub log_digest: [u8; 32],
    pub entries: Vec<StoredEntry>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// SHA-256 of the previous record's value ([`GENESIS`] for the first).
    pub prev: [u8; 32],
    pub body: RecordBody,
    /// SHA-256 of this record's value.
    pub hash: [u8; 32],
}

impl Record {
    pub fn encode(prev: &[u8; 32], body: &RecordBody) -> Vec<u8> {
        let mut value = Vec::with_capacity(64 + body.entries.len() * 128);
        value.push(RECORD_VERSION);
        value.extend_from_slice(prev);
        // Postcard into a Vec cannot fail for these types.
        let encoded = postcard::to_allocvec(body).unwrap_or_default();
        value.extend_from_slice(&encoded);
        value
    }

    pub fn decode(value: &[u8]) -> Result<Record, String> {
        match value.first() {
            Some(&RECORD_VERSION) => {}
            Some(version) => return Err(format!("unknown record version {version}")),
            None => return Err("empty record".into()),
        }
        if value.len() < 33 {
            return Err("record shorter than its header".into());
        }
        let prev: [u8; 32] = value[1..33].try_into().map_err(|_| "bad header")?;
        let body: RecordBody =
            postcard::from_bytes(&value[33..]).map_err(|e| format!("unreadable record: {e}"))?;
        Ok(Record {
            prev,
            body,
            hash: Sha256::digest(value).into(),
        })
    }
}

/// The newest record and entry of a shard chain, as the shard continues from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// First entry seq of the newest record (its key); 0 before any record.
    pub record_seq: u64,
    pub record_hash: [u8; 32],
    pub entry_seq: u64,
    pub entry_hash: [u8; 32],
    pub at_us: i64,
}

impl Tip {
    fn encode(&self) -> Vec<u8> {
        let mut value = vec![TIP_VERSION];
        value.extend_from_slice(&postcard::to_allocvec(self).unwrap_or_default());
        value
    }

    fn decode(value: &[u8]) -> Result<Tip, String> {
        match value.split_first() {
            Some((&TIP_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("unreadable audit tip: {e}"))
            }
            Some((version, _)) => Err(format!("unknown audit tip version {version}")),
            None => Err("empty audit tip".into()),
        }
    }
}

/// Where a shard chain continues after retention moved its oldest records out of the live
/// store: the last removed record's hash and its last entry. Stored in `control` under
/// `audit/floor/shard/{shard}`, written in the same atomic write that deletes the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floor {
    pub record_hash: [u8; 32],
    pub entry_seq: u64,
    pub entry_hash: [u8; 32],
    pub at_us: i64,
}

const FLOOR_PREFIX: &[u8] = b"audit/floor/shard/";
/// Format version of a floor's value.
const FLOOR_VERSION: u8 = 1;
/// Records one retention write removes at most (each write is one atomic batch).
const PRUNE_CHUNK: usize = 4096;

/// Key of a shard chain's retention floor in `control`.
pub fn floor_key(shard: u16) -> Vec<u8> {
    let mut key = FLOOR_PREFIX.to_vec();
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// A shard chain's retention floor (`None`: nothing was ever removed).
pub fn read_floor(storage: &dyn Storage, shard: u16) -> Result<Option<Floor>, StorageError> {
    match storage.get(Family::Control, &floor_key(shard))? {
        None => Ok(None),
        Some(value) => match value.split_first() {
            Some((&FLOOR_VERSION, rest)) => postcard::from_bytes(rest)
                .map(Some)
                .map_err(|e| StorageError::Corrupt(format!("unreadable audit floor: {e}"))),
            _ => Err(StorageError::Corrupt(
                "unknown audit floor version".to_string(),
            )),
        },
    }
}

/// Moves the oldest records of a shard chain out of the live store: those whose every entry
/// is older than `before_us` and whose log batch a backup holds (`log_last_seq <=
/// backed_up_log_seq`, the shard's seq in the backup's manifest). Only a prefix of the chain
/// goes (the first record that does not qualify stops it); each write deletes up to
/// [`PRUNE_CHUNK`] records and moves the floor past them atomically, synced. Returns the
/// entries removed.
pub fn prune_shard_chain(
    storage: &dyn Storage,
    shard: u16,
    before_us: i64,
    backed_up_log_seq: u64,
) -> Result<u64, StorageError> {
    let mut removed = 0u64;
    loop {
        let mut last: Option<(Vec<u8>, Floor)> = None;
        let mut entries = 0u64;
        let mut records = 0usize;
        storage.scan(
            Family::Audit,
            &record_key(shard, 0),
            &record_key(shard, u64::MAX),
            &mut |key, value| {
                let Ok(record) = Record::decode(value) else {
                    return false;
                };
                let old = record.body.entries.iter().all(|e| e.at_us < before_us);
                let Some(newest) = record.body.entries.last() else {
                    return false;
                };
                if !old || record.body.log_last_seq > backed_up_log_seq {
                    return false;
                }
                entries += record.body.entries.len() as u64;
                records += 1;
                last = Some((
                    key.to_vec(),
                    Floor {
                        record_hash: record.hash,
                        entry_seq: newest.seq,
                        entry_hash: newest.hash,
                        at_us: newest.at_us,
                    },
                ));
                records < PRUNE_CHUNK
            },
        )?;
        let Some((last_key, floor)) = last else {
            return Ok(removed);
        };
        let mut end = last_key;
        end.push(0);
        let mut value = vec![FLOOR_VERSION];
        value.extend_from_slice(&postcard::to_allocvec(&floor).unwrap_or_default());
        storage.write(
            vec![
                Write::DeleteRange {
                    family: Family::Audit,
                    from: record_key(shard, 0),
                    to: end,
                },
                Write::Put {
                    family: Family::Control,
                    key: floor_key(shard),
                    value,
                },
            ],
            true,
        )?;
        removed += entries;
        if records < PRUNE_CHUNK {
            return Ok(removed);
        }
    }
}

/// A shard chain's tip as stored (genesis when the shard never wrote an entry).
pub fn read_tip(storage: &dyn Storage, shard: u16) -> Result<Option<Tip>, StorageError> {
    match storage.get(Family::Control, &tip_key(shard))? {
        None => Ok(None),
        Some(value) => Tip::decode(&value).map(Some).map_err(StorageError::Corrupt),
    }
}

/// The highest entry seq stored in any shard chain tip (the global counter starts above it).
pub fn last_shard_seq(storage: &dyn Storage, shards: u16) -> Result<u64, StorageError> {
    let mut last = 0;
    for shard in 0..shards {
        if let Some(tip) = read_tip(storage, shard)? {
            last = last.max(tip.entry_seq);
        }
    }
    Ok(last)
}

/// The highest sequence in storage, over the gateway's control chain (8-byte keys) and every
/// shard chain's tip: the global counter continues above it.
pub fn last_seq(storage: &dyn Storage, shards: u16) -> Result<u64, StorageError> {
    let control = storage
        .last_in(Family::Audit, &[0u8; 8], &[1u8])?
        .and_then(|(key, _)| <[u8; 8]>::try_from(key.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    Ok(control.max(last_shard_seq(storage, shards)?))
}

/// A hash in lowercase hex, on the stack (the shard hashes one per entry).
fn hex32(hash: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for (i, byte) in hash.iter().enumerate() {
        text[2 * i] = DIGITS[(byte >> 4) as usize];
        text[2 * i + 1] = DIGITS[(byte & 0xf) as usize];
    }
    text
}

/// A hash in lowercase hex, as the API shows it.
pub fn hex(hash: &[u8; 32]) -> String {
    String::from_utf8_lossy(&hex32(hash)).into_owned()
}

/// `us` since the epoch as RFC 3339 UTC with microseconds (`2026-11-25T22:38:16.129647Z`),
/// the form the API uses everywhere.
pub fn rfc3339_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        day_secs / 3_600,
        day_secs % 3_600 / 60,
        day_secs % 60
    )
}

/// Appends `text` as a JSON string, escaped as `serde_json` escapes it (`"`, `\` and control
/// characters; everything else raw UTF-8).
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(DIGITS[(byte >> 4) as usize]);
                out.push(DIGITS[(byte & 0xf) as usize]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// The bytes hashed for an entry besides the previous hash: `[seq, at, actor, action, target,
/// detail]` as compact JSON (identical to the gateway's `audit::canonical`).
pub fn canonical(
    seq: u64,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + actor.len() + target.len() + detail.len());
    out.push(b'[');
    out.extend_from_slice(seq.to_string().as_bytes());
    for field in [at, actor, action, target, detail] {
        out.push(b',');
        json_string(&mut out, field);
    }
    out.push(b']');
    out
}

/// The entry chain's hash after an entry whose predecessor's hash is `previous`.
pub fn entry_hash(
    previous: &[u8; 32],
    seq: u64,
    at_us: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(hex32(previous));
    hasher.update(canonical(
        seq,
        &rfc3339_micros(at_us),
        actor,
        action,
        target,
        detail,
    ));
    hasher.finalize().into()
}

/// `text` cut to its first `chars_max` characters (on a character boundary).
pub fn cut(mut text: String, chars_max: usize) -> String {
    if text.len() > chars_max {
        if let Some((end, _)) = text.char_indices().nth(chars_max) {
            text.truncate(end);
        }
    }
    text
}

/// A shard's end of its chain: the entries of the batch being built, and where the chain
/// stands. Owned by the shard's state machine.
#[derive(Debug)]
pub struct ShardChain {
    shard: u16,
    tip: Tip,
    seqs: AuditSeq,
    pending: Vec<StoredEntry>,
}

impl ShardChain {
    /// Continues from `tip` (as stored, or `None` for a shard without entries).
    pub fn new(shard: u16, tip: Option<Tip>, seqs: AuditSeq) -> ShardChain {
        let tip = tip.unwrap_or_default();
        seqs.observe(tip.entry_seq);
        ShardChain {
            shard,
            tip,
            seqs,
            pending: Vec::new(),
        }
    }

    /// Records a mutation applied into the current batch (`now_us` from the shard's clock;
    /// never before the chain's newest entry).
    pub fn push(&mut self, now_us: i64, actor: &str, action: &str, target: String, detail: String) {
        let target = cut(target, TARGET_CHARS_MAX);
        let detail = cut(detail, DETAIL_CHARS_MAX);
        let at_us = now_us.max(self.tip.at_us);
        let seq = self.seqs.next();
        let previous = self.pending.last().map_or(self.tip.entry_hash, |e| e.hash);
        let hash = entry_hash(&previous, seq, at_us, actor, action, &target, &detail);
        self.tip.at_us = at_us;
        self.pending.push(StoredEntry {
            seq,
            at_us,
            actor: actor.to_string(),
            action: action.to_string(),
            target,
            detail,
            hash,
        });
    }

    /// Entries waiting for the current batch.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Closes the current batch's entries into a record written with the log batch `log_value`
    /// (events `log_first_seq..=log_last_seq`): the record and the new tip, or nothing when the
    /// batch produced no entry.
    pub fn seal(&mut self, log_first_seq: u64, log_last_seq: u64, log_value: &[u8]) -> Vec<Write> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let entries = std::mem::take(&mut self.pending);
        let first = entries[0].seq;
        let last = entries.last().expect("not empty");
        let (entry_seq, entry_hash) = (last.seq, last.hash);
        let body = RecordBody {
            log_first_seq,
            log_last_seq,
            log_digest: Sha256::digest(log_value).into(),
            entries,
        };
        let value = Record::encode(&self.tip.record_hash, &body);
        self.tip = Tip {
            record_seq: first,
            record_hash: Sha256::digest(&value).into(),
            entry_seq,
            entry_hash,
            at_us: self.tip.at_us,
        };
        vec![
            Write::Put {
                family: Family::Audit,
                key: record_key(self.shard, first),
                value,
            },
            Write::Put {
                family: Family::Control,
                key: tip_key(self.shard),
                value: self.tip.encode(),
            },
        ]
    }
}

/// Visits the entries of a shard chain with `seq > after`, ascending, until `visit` says stop.
/// Unreadable records are skipped and counted (verification reports them).
pub fn scan_entries(
    storage: &dyn Storage,
    shard: u16,
    after: u64,
    visit: &mut dyn FnMut(&StoredEntry) -> bool,
) -> Result<u64, StorageError> {
    // The record holding `after + 1` starts at or before it.
    let start = after.saturating_add(1);
    let from = match storage.last_in(
        Family::Audit,
        &record_key(shard, 0),
        &record_key(shard, start.saturating_add(1)),
    )? {
        Some((key, _)) => key,
        None => record_key(shard, 0),
    };
    let mut unreadable = 0u64;
    storage.scan(
        Family::Audit,
        &from,
        &record_key(shard, u64::MAX),
        &mut |_, value| {
            let Ok(record) = Record::decode(value) else {
                unreadable += 1;
                return true;
            };
            for entry in &record.body.entries {
                if entry.seq > after && !visit(entry) {
                    return false;
                }
            }
            true
        },
    )?;
    Ok(unreadable)
}

/// Records read per scan when verifying.
const VERIFY_CHUNK: usize = 256;

/// The outcome of verifying one shard chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub shard: u16,
    pub records: u64,
    pub entries: u64,
    /// The first entry (or the seq where one is missing) that does not verify, and why.
    pub first_bad: Option<(u64, String)>,
    /// The newest entry's hash.
    pub last_hash: Option<[u8; 32]>,
    /// The last entry retention removed (the chain continues after it), if any.
    pub floor_seq: Option<u64>,
    /// The newest entry's seq (the floor's when none is stored; 0 for an empty chain).
    pub last_seq: u64,
}

/// Recomputes both chains of a shard over every stored record, checks each record's log batch
/// against its digest while the batch is stored, and the newest record against the tip.
pub fn verify_shard_chain(storage: &dyn Storage, shard: u16) -> Result<ChainReport, StorageError> {
    let mut report = ChainReport {
        shard,
        records: 0,
        entries: 0,
        first_bad: None,
        last_hash: None,
        floor_seq: None,
        last_seq: 0,
    };
    // After retention the chain continues from its floor.
    let floor = read_floor(storage, shard)?;
    let mut prev_record = floor.map_or(GENESIS, |f| f.record_hash);
    let mut prev_entry = floor.map_or(GENESIS, |f| f.entry_hash);
    let mut last_seq = floor.map_or(0, |f| f.entry_seq);
    report.floor_seq = floor.map(|f| f.entry_seq);
    let mut bad: Option<(u64, String)> = None;
    // Read in chunks, and check each chunk's records after the scan that read them: a check
    // reads the log, and a store may not allow a read inside its own scan.
    let mut from = record_key(shard, 0);
    let end = record_key(shard, u64::MAX);
    'chunks: while bad.is_none() {
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(VERIFY_CHUNK);
        storage.scan(Family::Audit, &from, &end, &mut |key, value| {
            chunk.push((key.to_vec(), value.to_vec()));
            chunk.len() < VERIFY_CHUNK
        })?;
        let Some((last_key, _)) = chunk.last() else {
            break;
        };
        from = last_key.clone();
        from.push(0);
        for (key, value) in &chunk {
            report.records += 1;
            let key_seq = parse_record_key(key).map_or(0, |(_, seq)| seq);
            let record = match Record::decode(value) {
                Ok(record) => record,
                Err(why) => {
                    bad = Some((
                        key_seq,
                        format!(
                            "shard {shard}: the record at entry {key_seq} is unreadable: {why}"
                        ),
                    ));
                    break 'chunks;
                }
            };
            if record.prev != prev_record {
                bad = Some((
                    key_seq,
                    format!("shard {shard}: the batch before entry {key_seq} is missing, reordered or edited (the batch chain breaks)"),
                ));
                break 'chunks;
            }
            if record.body.entries.first().map(|e| e.seq) != Some(key_seq) {
                bad = Some((
                    key_seq,
                    format!("shard {shard}: the record stored at entry {key_seq} starts elsewhere"),
                ));
                break 'chunks;
            }
            for entry in &record.body.entries {
                report.entries += 1;
                if entry.seq <= last_seq {
                    bad = Some((
                        entry.seq,
                        format!("shard {shard}: entry {} is out of order", entry.seq),
                    ));
                    break 'chunks;
                }
                let expected = entry_hash(
                    &prev_entry,
                    entry.seq,
                    entry.at_us,
                    &entry.actor,
                    &entry.action,
                    &entry.target,
                    &entry.detail,
                );
                if expected != entry.hash {
                    bad = Some((
                        entry.seq,
                        format!("shard {shard}: entry {} does not match its hash: it or the entry before it was edited", entry.seq),
                    ));
                    break 'chunks;
                }
                prev_entry = entry.hash;
                last_seq = entry.seq;
            }
            // Trimmed by a snapshot: the record still chains the entries.
            if let Some(batch) =
                storage.get(Family::Log, &shard_key(shard, record.body.log_first_seq))?
            {
                let digest: [u8; 32] = Sha256::digest(&batch).into();
                if digest != record.body.log_digest {
                    bad = Some((
                        key_seq,
                        format!(
                            "shard {shard}: log batch {} no longer matches the digest its audit record holds (the log was edited)",
                            record.body.log_first_seq
                        ),
                    ));
                    break 'chunks;
                }
            }
            prev_record = record.hash;
        }
    }
    if bad.is_none() {
        let tip = read_tip(storage, shard)?.unwrap_or_default();
        if tip.entry_seq > last_seq {
            bad = Some((
                last_seq + 1,
                format!(
                    "shard {shard}: entries after {last_seq} up to {} are missing (the newest records were deleted)",
                    tip.entry_seq
                ),
            ));
        } else if tip.record_hash != prev_record || tip.entry_seq < last_seq {
            bad = Some((
                last_seq,
                format!("shard {shard}: the newest record differs from the recorded chain tip"),
            ));
        }
    }
    report.first_bad = bad;
    report.last_seq = last_seq;
    report.last_hash = (report.entries > 0 || report.floor_seq.is_some()).then_some(prev_entry);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_764_110_296_129_647),
            "2025-11-25T22:38:16.129647Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn canonical_escapes_as_json() {
        let bytes = canonical(7, "t", "a\"b", "x\\y", "\n\u{1}", "é");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "[7,\"t\",\"a\\\"b\",\"x\\\\y\",\"\\n\\u0001\",\"é\"]"
        );
    }

    fn write_batch(storage: &MemoryStorage, chain: &mut ShardChain, first: u64, n: usize) {
        for i in 0..n {
            chain.push(
                1_000 + i as i64,
                "key_a",
                "order.place",
                format!("ord_{first}_{i}"),
                "lines=1".into(),
            );
        }
        let log = vec![1u8, first as u8, n as u8];
        let mut writes = chain.seal(first, first + n as u64 - 1, &log);
        writes.push(Write::Put {
            family: Family::Log,
            key: shard_key(3, first),
            value: log,
        });
        storage.write(writes, true).unwrap();
    }

    #[test]
    fn chains_verify_and_detect_edits_removals_and_truncation() {
        let storage = MemoryStorage::new();
        let seqs = AuditSeq::starting_after(0);
        let mut chain = ShardChain::new(3, None, seqs.clone());
        write_batch(&storage, &mut chain, 1, 2);
        write_batch(&storage, &mut chain, 3, 3);
        write_batch(&storage, &mut chain, 6, 1);
        let report = verify_shard_chain(&storage, 3).unwrap();
        assert_eq!(
            (report.records, report.entries, report.first_bad.clone()),
            (3, 6, None)
        );

        // A chain continued from the stored tip (a restarted shard) still verifies.
        let tip = read_tip(&storage, 3).unwrap();
        let mut again = ShardChain::new(3, tip, seqs.clone());
        write_batch(&storage, &mut again, 7, 2);
        assert_eq!(verify_shard_chain(&storage, 3).unwrap().first_bad, None);

        let mut seen = Vec::new();
        scan_entries(&storage, 3, 4, &mut |e| {
            seen.push(e.seq);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![5, 6, 7, 8]);

        // Edit an entry (re-encoded, valid record): the entry chain breaks.
        let key = record_key(3, 3);
        let value = storage.get(Family::Audit, &key).unwrap().unwrap();
        let mut record = Record::decode(&value).unwrap();
        record.body.entries[1].detail = "lines=9".into();
        let edited = Record::encode(&record.prev, &record.body);
        storage
            .write(
                vec![Write::Put {
                    family: Family::Audit,
                    key: key.clone(),
                    value: edited,
                }],
                true,
            )
            .unwrap();
        let bad = verify_shard_chain(&storage, 3).unwrap().first_bad.unwrap();
        assert_eq!(bad.0, 4, "{}", bad.1);
    }

    #[test]
    fn removed_record_edited_log_and_truncated_tail_are_found() {
        for case in 0..3 {
            let storage = MemoryStorage::new();
            let mut chain = ShardChain::new(3, None, AuditSeq::starting_after(0));
            write_batch(&storage, &mut chain, 1, 2);
            write_batch(&storage, &mut chain, 3, 3);
            write_batch(&storage, &mut chain, 6, 1);
            let write = match case {
                // The middle record removed.
                0 => Write::DeleteRange {
                    family: Family::Audit,
                    from: record_key(3, 3),
                    to: record_key(3, 4),
                },
                // A log batch edited.
                1 => Write::Put {
                    family: Family::Log,
                    key: shard_key(3, 3),
                    value: vec![9, 9],
                },
                // The newest record removed.
                _ => Write::DeleteRange {
                    family: Family::Audit,
                    from: record_key(3, 6),
                    to: record_key(3, 7),
                },
            };
            storage.write(vec![write], true).unwrap();
            let report = verify_shard_chain(&storage, 3).unwrap();
            let (seq, why) = report.first_bad.expect("tampering is found");
            assert_eq!(seq, [6, 3, 6][case], "case {case}: {why}");
        }
    }

    #[test]
    fn retention_removes_the_old_backed_up_prefix_and_the_chain_verifies_from_its_floor() {
        let storage = MemoryStorage::new();
        let seqs = AuditSeq::starting_after(0);
        let mut chain = ShardChain::new(3, None, seqs.clone());
        write_batch(&storage, &mut chain, 1, 2); // entries at 1000, 1001
        write_batch(&storage, &mut chain, 3, 3); // 1000..=1002
        write_batch(&storage, &mut chain, 6, 1); // 1000
                                                 // Nothing is old enough: the first record's newest entry is at 1001.
        assert_eq!(prune_shard_chain(&storage, 3, 1001, 100).unwrap(), 0);
        assert_eq!(read_floor(&storage, 3).unwrap(), None);
        // Old enough, but the backup holds log batches up to 5 only: two records go.
        assert_eq!(prune_shard_chain(&storage, 3, 2000, 5).unwrap(), 5);
        let floor = read_floor(&storage, 3).unwrap().expect("a floor");
        assert_eq!(floor.entry_seq, 5);
        let report = verify_shard_chain(&storage, 3).unwrap();
        assert_eq!(
            (
                report.records,
                report.entries,
                report.first_bad.clone(),
                report.floor_seq
            ),
            (1, 1, None, Some(5)),
            "{report:?}"
        );
        // The shard goes on writing; the chain still verifies from the floor.
        let tip = read_tip(&storage, 3).unwrap();
        let mut again = ShardChain::new(3, tip, seqs.clone());
        write_batch(&storage, &mut again, 7, 2);
        assert_eq!(verify_shard_chain(&storage, 3).unwrap().first_bad, None);
        // A floor deleted (or moved by hand) breaks the chain at the first kept record.
        storage
            .write(
                vec![Write::DeleteRange {
                    family: Family::Control,
                    from: floor_key(3),
                    to: floor_key(4),
                }],
                true,
            )
            .unwrap();
        let bad = verify_shard_chain(&storage, 3)
            .unwrap()
            .first_bad
            .expect("broken");
        assert_eq!(bad.0, 6, "{}", bad.1);
    }
}

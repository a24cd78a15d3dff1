//! The log writer: one thread that group-commits every shard's batches and then releases the
//! replies waiting on them.
//!
//! Shards never wait for an fsync. They hand finished batches (and the continuations that send
//! their replies) to this thread through a bounded queue; it takes everything queued, writes it
//! as one RocksDB write batch (`sync=true` in `sync` durability), and only then runs the
//! continuations, in submission order. Per group commit (never per event) it records the fsync
//! time and the events written through the `metrics` facade.
//!
//! A failed write is a fault of every shard whose batch was in it: the writer moves those
//! shards' generations on before it takes the next group (so nothing those actors applied
//! after the failed batch can be written, and `durable_seq` never passes a failed sequence),
//! answers the group's waiters `false`, and reports [`Fault::WriteFailed`] so the supervisor
//! rebuilds the shards from storage. While writes fail, a probe write every
//! [`PROBE_INTERVAL`] finds out when storage accepts writes again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::storage::{shard_key, Family, Storage, Write};
use crate::supervisor::Fault;
use crate::tunables::Tunables;

/// While writes fail, how often the writer tries a probe write to learn that storage accepts
/// writes again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Key in `control` of the probe write.
pub const PROBE_KEY: &[u8] = b"engine/write_probe";

/// Runs once the writes submitted before it are durable (`true`) or failed (`false`).
pub type Continuation = Box<dyn FnOnce(bool) + Send>;

/// When an acknowledgement may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After fsync (default).
    Sync,
    /// After the write reaches the OS; fsync every `flush_interval_ms`. A process crash loses
    /// nothing, a machine crash may lose that window.
    Async,
}

/// Histogram of the time one fsync takes, in seconds: the synced group write (write + fsync)
/// in `sync` durability, the periodic `sync` in `async` durability. Recorded once per group
/// commit through the `metrics` facade (a no-op until a recorder is installed); the gateway
/// sets its buckets.
pub const FSYNC_DURATION_SECONDS_METRIC: &str = "orderd_log_fsync_duration_seconds";
/// Histogram of the events written by one group commit (all shards' batches in it).
pub const BATCH_EVENTS_METRIC: &str = "orderd_log_batch_events";

/// Maximum messages taken into one group commit.
pub const GROUP_MESSAGES_MAX: usize = 4096;
/// Capacity of the queue from shards to the writer.
pub const WRITER_QUEUE_MAX: usize = 8192;

pub enum WriterMsg {
    /// One shard batch. `value` is `None` for a batch with no events that only carries
    /// continuations (replies to reads).
    Batch {
        shard: u16,
        /// The generation of the shard actor that sent it: a batch of a replaced actor is
        /// refused (its continuations run with `false`).
        generation: u64,
        first_seq: u64,
        last_seq: u64,
        value: Option<Vec<u8>>,
        /// The batch's audit record and the shard's new audit chain tip (`crate::audit`),
        /// written in the same storage write; empty when the batch audits nothing.
        audit: Vec<Write>,
        /// The public events the batch raised (`crate::events::Recorded`, encoded): numbered
        /// with the global cursor and written to `events` in the same storage write.
        notices: Vec<Vec<u8>>,
        continuations: Vec<Continuation>,
    },
    /// Arbitrary writes (snapshots, control records), ordered with the batches. With a
    /// `guard` of (shard, generation), refused like a batch of a replaced actor.
    Raw {
        writes: Vec<Write>,
        guard: Option<(u16, u64)>,
        done: Continuation,
    },
    Stop,
}

/// Counters shared between the writer and the rest of the engine.
pub struct WriterStats {
    pub syncs: AtomicU64,
    pub writes: AtomicU64,
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    /// Public events written to the `events` family, and their encoded bytes.
    pub notices: AtomicU64,
    pub notice_bytes: AtomicU64,
    /// True from a failed write until a later write (or probe) succeeds.
    pub failed: AtomicBool,
    /// Writes (groups and probes) that failed, since start.
    pub failures: AtomicU64,
    /// The last failure was the file system running out of space.
    pub no_space: AtomicBool,
    /// True while the disk guard finds less free space than `storage.min_free_bytes`.
    pub disk_low: AtomicBool,
    /// Per shard: the last sequence number known durable.
    pub durable_seq: Vec<AtomicU64>,
    /// Per shard: the generation of its current actor (moved on when the shard is replaced).
    pub generations: Vec<AtomicU64>,
    /// The newest durable public event's cursor ([`crate::events`]); the writer numbers the
    /// next after it. Set from storage at open ([`crate::events::last_cursor`]).
    pub event_head: Arc<crate::events::EventHead>,
}

impl WriterStats {
    /// Fresh counters for shards whose logs are durable up to `durable_seq`.
    pub fn new(durable_seq: Vec<u64>) -> WriterStats {
        WriterStats {
            syncs: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            notices: AtomicU64::new(0),
            notice_bytes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            no_space: AtomicBool::new(false),
            disk_low: AtomicBool::new(false),
            generations: durable_seq.iter().map(|_| AtomicU64::new(0)).collect(),
            durable_seq: durable_seq.into_iter().map(AtomicU64::new).collect(),
            event_head: Arc::new(crate::events::EventHead::default()),
        }
    }
}

pub struct LogWriter {
    pub sender: Sender<WriterMsg>,
    pub stats: Arc<WriterStats>,
    handle: Option<JoinHandle<()>>,
}

impl LogWriter {
    pub fn start(
        storage: Arc<dyn Storage>,
        durability: Durability,
        tunables: Arc<Tunables>,
        durable_seq: Vec<u64>,
        faults: tokio::sync::mpsc::Sender<Fault>,
    ) -> LogWriter {
        let (sender, receiver) = crossbeam_channel::bounded(WRITER_QUEUE_MAX);
        let stats = Arc::new(WriterStats::new(durable_seq));
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("orderd-log".into())
            .spawn(move || {
                run(
                    storage,
                    durability,
                    tunables,
                    receiver,
                    thread_stats,
                    faults,
                )
            })
            .expect("spawn log writer thread");
        LogWriter {
            sender,
            stats,
            handle: Some(handle),
        }
    }

    /// Stops the writer after everything queued before is written.
    pub fn stop(&mut self) {
        let _ = self.sender.send(WriterMsg::Stop);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    storage: Arc<dyn Storage>,
    durability: Durability,
    tunables: Arc<Tunables>,
    receiver: Receiver<WriterMsg>,
    stats: Arc<WriterStats>,
    faults: tokio::sync::mpsc::Sender<Fault>,
) {
    let sync = durability == Durability::Sync;
    let mut last_probe = Instant::now();
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut group: Vec<WriterMsg> = Vec::with_capacity(GROUP_MESSAGES_MAX);
    loop {
        // Read each round: change management may change it while the writer runs.
        let flush_interval = Duration::from_millis(tunables.flush_interval_ms());
        let failing = stats.failed.load(Ordering::SeqCst);
        if failing && last_probe.elapsed() >= PROBE_INTERVAL {
            last_probe = Instant::now();
            probe(storage.as_ref(), sync, &stats, &faults);
        }
        let first = if unsynced || failing {
            let mut wait = Duration::MAX;
            if unsynced {
                wait = wait.min(flush_interval.saturating_sub(last_sync.elapsed()));
            }
            if failing {
                wait = wait.min(PROBE_INTERVAL.saturating_sub(last_probe.elapsed()));
            }
            match receiver.recv_timeout(wait) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match receiver.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            }
        };
        if unsynced && last_sync.elapsed() >= flush_interval {
            let sync_started = Instant::now();
            let synced = storage.sync();
            metrics::histogram!(FSYNC_DURATION_SECONDS_METRIC)
                .record(sync_started.elapsed().as_secs_f64());
            if let Err(error) = synced {
                tracing::error!(message = "Failed to sync the log.", %error);
                note_failure(&stats, &faults, error.to_string());
            }
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            unsynced = false;
            last_sync = Instant::now();
        }
        let Some(first) = first else { continue };
        group.push(first);
        while group.len() < GROUP_MESSAGES_MAX {
            match receiver.try_recv() {
                Ok(msg) => group.push(msg),
                Err(_) => break,
            }
        }
        let outcome = commit_group(storage.as_ref(), sync, &mut group, &stats, &faults);
        if outcome.failed {
            last_probe = Instant::now();
        }
        if outcome.written && !sync {
            unsynced = true;
        }
        if outcome.stop {
            if unsynced {
                let _ = storage.sync();
                stats.syncs.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    }
}

/// What [`commit_group`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupOutcome {
    /// A write was made and succeeded.
    pub written: bool,
    /// The write failed (its shards were poisoned and reported).
    pub failed: bool,
    /// The group held `WriterMsg::Stop`.
    pub stop: bool,
}

/// Writes one group of messages as one storage write and runs their continuations: the
/// writer thread's work for one round, also driven by the simulator (`crate::sim`).
///
/// Messages of a replaced shard actor (stale generation) are refused. On a failed write,
/// every shard with a batch or snapshot in the group gets its generation moved on (before
/// anything else is taken) and is reported as [`Fault::WriteFailed`]. `group` is drained.
pub fn commit_group(
    storage: &dyn Storage,
    sync: bool,
    group: &mut Vec<WriterMsg>,
    stats: &WriterStats,
    faults: &tokio::sync::mpsc::Sender<Fault>,
) -> GroupOutcome {
    let mut outcome = GroupOutcome::default();
    let mut writes = Vec::with_capacity(group.len());
    let mut batches = 0u64;
    let mut events = 0u64;
    let mut bytes = 0u64;
    let mut notice_count = 0u64;
    let mut notice_bytes = 0u64;
    // Public events get the cursors after the head; it moves only once they are durable.
    let mut cursor = stats.event_head.get();
    // Per message of `group`: sent by a replaced shard actor, so refused.
    let mut refused: Vec<bool> = Vec::with_capacity(group.len());
    for msg in group.iter_mut() {
        let stale = match msg {
            WriterMsg::Batch {
                shard, generation, ..
            }
            | WriterMsg::Raw {
                guard: Some((shard, generation)),
                ..
            } => stats.generations[*shard as usize].load(Ordering::SeqCst) != *generation,
            _ => false,
        };
        refused.push(stale);
        if stale {
            continue;
        }
        match msg {
            WriterMsg::Batch {
                shard,
                first_seq,
                last_seq,
                value,
                audit,
                notices,
                ..
            } => {
                writes.append(audit);
                for notice in notices.drain(..) {
                    cursor += 1;
                    notice_count += 1;
                    notice_bytes += notice.len() as u64;
                    writes.push(Write::Put {
                        family: Family::Events,
                        key: crate::events::key(cursor).to_vec(),
                        value: notice,
                    });
                }
                if let Some(value) = value.take() {
                    batches += 1;
                    events += *last_seq + 1 - *first_seq;
                    bytes += value.len() as u64;
                    writes.push(Write::Put {
                        family: Family::Log,
                        key: shard_key(*shard, *first_seq),
                        value,
                    });
                }
            }
            WriterMsg::Raw { writes: raw, .. } => writes.append(raw),
            WriterMsg::Stop => outcome.stop = true,
        }
    }
    // A group of replies only (reads): nothing to write. Their shards' earlier batches
    // were written, or failed and moved the shard's generation on (refused above).
    let mut failure: Option<String> = None;
    let ok = if writes.is_empty() {
        true
    } else {
        let write_started = Instant::now();
        let written = storage.write(writes, sync);
        let write_s = write_started.elapsed().as_secs_f64();
        match written {
            Ok(()) => {
                outcome.written = true;
                stats.writes.fetch_add(1, Ordering::Relaxed);
                if events > 0 {
                    metrics::histogram!(BATCH_EVENTS_METRIC).record(events as f64);
                }
                if sync {
                    stats.syncs.fetch_add(1, Ordering::Relaxed);
                    metrics::histogram!(FSYNC_DURATION_SECONDS_METRIC).record(write_s);
                }
                stats.batches.fetch_add(batches, Ordering::Relaxed);
                stats.events.fetch_add(events, Ordering::Relaxed);
                stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                stats.notices.fetch_add(notice_count, Ordering::Relaxed);
                stats
                    .notice_bytes
                    .fetch_add(notice_bytes, Ordering::Relaxed);
                if stats.failed.swap(false, Ordering::SeqCst) {
                    recovered(faults);
                }
                stats.event_head.advance(cursor);
                true
            }
            Err(error) => {
                tracing::error!(message = "Failed to write a log group.", %error);
                failure = Some(error.to_string());
                false
            }
        }
    };
    if let Some(error) = &failure {
        outcome.failed = true;
        // Every shard with a batch or a snapshot in the failed group is poisoned before
        // anything else is taken: what its actor applied after the failed batch can never
        // be written, and the supervisor rebuilds it from storage.
        let mut poisoned: Vec<u16> = Vec::new();
        for (msg, stale) in group.iter().zip(refused.iter()) {
            if *stale {
                continue;
            }
            let (shard, generation) = match msg {
                WriterMsg::Batch {
                    shard, generation, ..
                }
                | WriterMsg::Raw {
                    guard: Some((shard, generation)),
                    ..
                } => (*shard, *generation),
                _ => continue,
            };
            if poisoned.contains(&shard) {
                continue;
            }
            poisoned.push(shard);
            if crate::sim::regressed(crate::sim::Regression::WriteFailureKeepsShard) {
                continue;
            }
            let moved = stats.generations[shard as usize].compare_exchange(
                generation,
                generation + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            if moved.is_ok() {
                let fault = Fault::WriteFailed {
                    shard,
                    generation: generation + 1,
                    error: error.clone(),
                };
                if let Err(error) = faults.try_send(fault) {
                    tracing::error!(message = "Could not report a write fault.", shard, %error);
                }
            }
        }
        note_failure(stats, faults, error.clone());
    }
    for (msg, stale) in group.drain(..).zip(refused.iter()) {
        let ok = ok && !stale;
        match msg {
            WriterMsg::Batch {
                shard,
                last_seq,
                continuations,
                ..
            } => {
                if ok {
                    stats.durable_seq[shard as usize].fetch_max(last_seq, Ordering::SeqCst);
                }
                for continuation in continuations {
                    continuation(ok);
                }
            }
            WriterMsg::Raw { done, .. } => done(ok),
            WriterMsg::Stop => {}
        }
    }
    outcome
}

/// Marks storage as failing; the first failure of a run is reported to the supervisor.
fn note_failure(stats: &WriterStats, faults: &tokio::sync::mpsc::Sender<Fault>, error: String) {
    stats.failures.fetch_add(1, Ordering::Relaxed);
    let lower = error.to_ascii_lowercase();
    stats.no_space.store(
        lower.contains("no space") || lower.contains("nospace"),
        Ordering::SeqCst,
    );
    if !stats.failed.swap(true, Ordering::SeqCst) {
        let _ = faults.try_send(Fault::StorageFailing { error });
    }
}

fn recovered(faults: &tokio::sync::mpsc::Sender<Fault>) {
    tracing::warn!(message = "Storage accepts writes again.");
    let _ = faults.try_send(Fault::StorageRecovered);
}

/// One small write (synced in `sync` durability) to learn whether storage accepts writes.
pub fn probe(
    storage: &dyn Storage,
    sync: bool,
    stats: &WriterStats,
    faults: &tokio::sync::mpsc::Sender<Fault>,
) {
    let value = crate::clock::now_us().to_be_bytes().to_vec();
    let written = storage.write(
        vec![Write::Put {
            family: Family::Control,
            key: PROBE_KEY.to_vec(),
            value,
        }],
        sync,
    );
    match written {
        Ok(()) => {
            if stats.failed.swap(false, Ordering::SeqCst) {
                recovered(faults);
            }
        }
        Err(error) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(message = "Probe write failed; storage still refuses writes.", %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn outcome() -> (Continuation, std::sync::mpsc::Receiver<bool>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (
            Box::new(move |ok| {
                let _ = tx.send(ok);
            }),
            rx,
        )
    }

    #[test]
    fn batches_and_snapshots_of_a_replaced_shard_actor_are_refused() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut writer = LogWriter::start(
            storage.clone(),
            Durability::Sync,
            Arc::new(Tunables::new(4096, 5, 5, 60)),
            vec![0, 0],
            tokio::sync::mpsc::channel(16).0,
        );
        // Shard 1 is replaced: generation 0 is now stale.
        writer.stats.generations[1].store(1, Ordering::SeqCst);
        let batch = |shard: u16, generation: u64, done: Continuation| WriterMsg::Batch {
            shard,
            generation,
            first_seq: 1,
            last_seq: 1,
            value: Some(vec![7]),
            audit: Vec::new(),
            notices: Vec::new(),
            continuations: vec![done],
        };
        let (stale, stale_rx) = outcome();
        let (fresh, fresh_rx) = outcome();
        let (other, other_rx) = outcome();
        let (snap, snap_rx) = outcome();
        writer.sender.send(batch(1, 0, stale)).unwrap();
        writer.sender.send(batch(1, 1, fresh)).unwrap();
        writer.sender.send(batch(0, 0, other)).unwrap();
        writer
            .sender
            .send(WriterMsg::Raw {
                writes: vec![Write::Put {
                    family: Family::Snap,
                    key: shard_key(1, 1),
                    value: vec![1],
                }],
                guard: Some((1, 0)),
                done: snap,
            })
            .unwrap();
        assert!(!stale_rx.recv().unwrap(), "stale batch refused");
        assert!(fresh_rx.recv().unwrap(), "current generation written");
        assert!(other_rx.recv().unwrap(), "other shards unaffected");
        assert!(!snap_rx.recv().unwrap(), "stale snapshot refused");
        writer.stop();
        assert_eq!(
            storage.get(Family::Log, &shard_key(1, 1)).unwrap(),
            Some(vec![7])
        );
        assert_eq!(storage.get(Family::Snap, &shard_key(1, 1)).unwrap(), None);
        assert_eq!(writer.stats.durable_seq[1].load(Ordering::SeqCst), 1);
    }
}

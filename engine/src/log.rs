//! The log writer: one thread that group-commits every shard's batches and then releases the
//! replies waiting on them.
//!
//! Shards never wait for an fsync. They hand finished batches (and the continuations that send
//! their replies) to this thread through a bounded queue; it takes everything queued, writes it
//! as one RocksDB write batch (`sync=true` in `sync` durability), and only then runs the
//! continuations, in submission order. Per group commit (never per event) it records the fsync
//! time and the events written through the `metrics` facade.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::storage::{shard_key, Family, Storage, Write};
use crate::tunables::Tunables;

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
    pub failed: AtomicBool,
    /// Per shard: the last sequence number known durable.
    pub durable_seq: Vec<AtomicU64>,
    /// Per shard: the generation of its current actor (moved on when the shard is replaced).
    pub generations: Vec<AtomicU64>,
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
    ) -> LogWriter {
        let (sender, receiver) = crossbeam_channel::bounded(WRITER_QUEUE_MAX);
        let stats = Arc::new(WriterStats {
            syncs: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            generations: durable_seq.iter().map(|_| AtomicU64::new(0)).collect(),
            durable_seq: durable_seq.into_iter().map(AtomicU64::new).collect(),
        });
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("orderd-log".into())
            .spawn(move || run(storage, durability, tunables, receiver, thread_stats))
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
) {
    let sync = durability == Durability::Sync;
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut group: Vec<WriterMsg> = Vec::with_capacity(GROUP_MESSAGES_MAX);
    // Per message of `group`: sent by a replaced shard actor, so refused.
    let mut refused: Vec<bool> = Vec::with_capacity(GROUP_MESSAGES_MAX);
    loop {
        // Read each round: change management may change it while the writer runs.
        let flush_interval = Duration::from_millis(tunables.flush_interval_ms());
        let first = if unsynced {
            match receiver.recv_timeout(flush_interval.saturating_sub(last_sync.elapsed())) {
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
                stats.failed.store(true, Ordering::SeqCst);
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
        let mut writes = Vec::with_capacity(group.len());
        let mut stop = false;
        let mut batches = 0u64;
        let mut events = 0u64;
        let mut bytes = 0u64;
        refused.clear();
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
                    ..
                } => {
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
                WriterMsg::Stop => stop = true,
            }
        }
        let ok = if writes.is_empty() {
            !stats.failed.load(Ordering::SeqCst)
        } else {
            let write_started = Instant::now();
            let written = storage.write(writes, sync);
            let write_s = write_started.elapsed().as_secs_f64();
            match written {
                Ok(()) => {
                    stats.writes.fetch_add(1, Ordering::Relaxed);
                    if events > 0 {
                        metrics::histogram!(BATCH_EVENTS_METRIC).record(events as f64);
                    }
                    if sync {
                        stats.syncs.fetch_add(1, Ordering::Relaxed);
                        metrics::histogram!(FSYNC_DURATION_SECONDS_METRIC).record(write_s);
                    } else {
                        unsynced = true;
                    }
                    stats.batches.fetch_add(batches, Ordering::Relaxed);
                    stats.events.fetch_add(events, Ordering::Relaxed);
                    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                    true
                }
                Err(error) => {
                    tracing::error!(message = "Failed to write a log group.", %error);
                    stats.failed.store(true, Ordering::SeqCst);
                    false
                }
            }
        };
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
        if stop {
            if unsynced {
                let _ = storage.sync();
                stats.syncs.fetch_add(1, Ordering::Relaxed);
            }
            return;
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
        );
        // Shard 1 is replaced: generation 0 is now stale.
        writer.stats.generations[1].store(1, Ordering::SeqCst);
        let batch = |shard: u16, generation: u64, done: Continuation| WriterMsg::Batch {
            shard,
            generation,
            first_seq: 1,
            last_seq: 1,
            value: Some(vec![7]),
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

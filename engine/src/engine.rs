//! The engine handle: opens storage, recovers shards, starts their actors and their
//! supervisor, routes commands, rebuilds single shards from storage (on request or after a
//! fault), and shuts down cleanly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{AuditSeq, ShardChain};
use crate::domain::{
    CatalogView, ColdAnswer, CommandError, CustomerId, CustomerUpdate, CustomerView, Idempotency,
    NewCustomer, NewRefund, NewReturn, NewShipment, OrderCursor, OrderFilter, OrderId, OrderPage,
    OrderStatus, OrderView, PlaceOrder, ReceiveLine, RefundView, ReturnId, ReturnStatus,
    ReturnView, SalesSummary, ShardState, ShardStatus, ShipmentId, ShipmentStatus, ShipmentView,
    SnapshotTaken, StockView,
};
use crate::event::{batch_for_each, DecodeError};
use crate::inbox::{Inbox, PlaceOutcomes, Pushed, Submission};
use crate::incident::{IncidentLog, RETENTION_MAX_DEFAULT};
use crate::log::{Durability, LogWriter, WriterMsg, WriterStats};
use crate::shard::{
    ClientCmd, Reply, ResealFn, Router, Shard, ShardGauges, ShardLink, ShardMsg, ShardSettings,
};
use crate::state::{shard_of_key, shard_of_sku, ShardData, Snapshot};
use crate::storage::rocks::RocksStorage;
use crate::storage::{parse_shard_key, shard_key, Family, Storage, StorageError, Write};
use crate::supervisor::{
    self, Fault, Quarantine, RestartIntensity, SupervisorConfig, FAULT_QUEUE_MAX,
};
use crate::tunables::Tunables;

/// Everything the engine is configured with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub shards: usize,
    pub durability: Durability,
    pub flush_interval_ms: u64,
    pub mailbox_capacity: usize,
    pub batch_events_max: usize,
    pub snapshot_interval_events: u64,
    pub idempotency_retention_s: u64,
    pub pending_retry_ms: u64,
    pub supervisor: SupervisorConfig,
    /// Incidents kept in storage; the oldest are deleted past it.
    pub incident_retention_max: usize,
    /// The deadline of one client call (live: [`Tunables::set_request_timeout_ms`]).
    pub request_timeout_ms: u64,
    /// Writes are refused (507 `insufficient_storage`) while the file system of the data
    /// directory has less free space than this; 0 turns the guard off.
    pub min_free_bytes: u64,
    /// Most orders waiting in one shard's inbox of coalesced placements ([`crate::inbox`]);
    /// past it a placement is refused at once (`unavailable`).
    pub inbox_orders_max: usize,
    /// When ended orders move out of memory to the cold tier ([`crate::cold`]).
    pub cold: crate::shard::ColdSettings,
    /// Idempotency keys older than this leave memory for the `idem` family
    /// ([`crate::idem_tier`]); 0 keeps them in memory for their whole retention.
    pub idempotency_hot_s: u64,
    /// RocksDB's write-ahead-log bound, in bytes (`storage.wal_max_bytes`): what a restart
    /// after a crash replays at most; 0 leaves RocksDB's own.
    pub wal_max_bytes: u64,
    /// Whether shards record public events (`events.enabled`).
    pub events_enabled: bool,
    /// `stock.low` below this many available units (`events.stock_low_threshold`; 0: never).
    pub stock_low_threshold: u64,
}

impl EngineConfig {
    /// Defaults for `data_dir` with `shards` shards.
    pub fn new(data_dir: PathBuf, shards: usize) -> EngineConfig {
        EngineConfig {
            data_dir,
            shards,
            durability: Durability::Sync,
            flush_interval_ms: 5,
            mailbox_capacity: 100_000,
            batch_events_max: 4096,
            snapshot_interval_events: 200_000,
            idempotency_retention_s: 86_400,
            pending_retry_ms: 500,
            supervisor: SupervisorConfig::default(),
            incident_retention_max: RETENTION_MAX_DEFAULT,
            request_timeout_ms: crate::tunables::REQUEST_TIMEOUT_MS_DEFAULT,
            min_free_bytes: 64 * 1024 * 1024,
            inbox_orders_max: 65_536,
            cold: crate::shard::ColdSettings::default(),
            idempotency_hot_s: 0,
            wal_max_bytes: orderd_storage::rocks::WAL_MAX_BYTES_DEFAULT,
            events_enabled: true,
            stock_low_threshold: crate::tunables::STOCK_LOW_THRESHOLD_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("log of shard {shard} is corrupt at seq {seq}: {error}")]
    Corrupt {
        shard: u16,
        seq: u64,
        error: DecodeError,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The deadline of whole-shard work (snapshot, re-seal, state digest): 10 minutes.
const WHOLE_SHARD_TIMEOUT_MS: u64 = 600_000;

/// Key in `control` of the shard count the data was written with; present from the first start
/// on (the inspection reads it to prove storage answers).
pub const SHARD_COUNT_KEY: &[u8] = b"engine/shard_count";

/// A shard's state as rebuilt from storage.
pub struct Recovered {
    pub data: ShardData,
    pub log_digest: u64,
    pub snapshot_seq: u64,
    pub replayed_events: u64,
    /// Where the shard's audit chain stands (`None`: it never wrote an entry).
    pub audit_tip: Option<crate::audit::Tip>,
}

/// Rebuilds one shard from storage: newest snapshot, then replay of every later batch.
pub fn recover_shard(
    storage: &dyn Storage,
    shard: u16,
    shard_count: u16,
) -> Result<Recovered, EngineError> {
    let end = shard_key(shard, u64::MAX);
    let (mut data, mut log_digest, snapshot_seq) =
        match storage.last_in(Family::Snap, &shard_key(shard, 0), &end)? {
            Some((_, value)) => {
                let snapshot = Snapshot::decode(&value).map_err(|error| EngineError::Corrupt {
                    shard,
                    seq: 0,
                    error,
                })?;
                let digest = snapshot.log_digest;
                let seq = snapshot.last_seq;
                (ShardData::from_snapshot(snapshot), digest, seq)
            }
            None => (ShardData::new(shard, shard_count), 0, 0),
        };
    let mut replayed = 0u64;
    let mut failure: Option<EngineError> = None;
    storage.scan(
        Family::Log,
        &shard_key(shard, data.last_seq + 1),
        &end,
        &mut |key, value| {
            let Some((_, first_seq)) = parse_shard_key(key) else {
                return true;
            };
            if first_seq != data.last_seq + 1 {
                failure = Some(EngineError::Corrupt {
                    shard,
                    seq: first_seq,
                    error: DecodeError::Empty,
                });
                return false;
            }
            // A batch that fails to decode part-way fails the whole recovery (`data` is
            // dropped), so the events applied before the error never reach a shard.
            match batch_for_each(value, |event| data.apply(&event)) {
                Ok(events) => {
                    replayed += events;
                    log_digest = xxhash_rust::xxh3::xxh3_64_with_seed(value, log_digest);
                    true
                }
                Err(error) => {
                    failure = Some(EngineError::Corrupt {
                        shard,
                        seq: first_seq,
                        error,
                    });
                    false
                }
            }
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Recovered {
        data,
        log_digest,
        snapshot_seq,
        replayed_events: replayed,
        audit_tip: crate::audit::read_tip(storage, shard)?,
    })
}

struct ShardSlot {
    state: AtomicU8,
    restarts: AtomicU64,
    gauges: Arc<ShardGauges>,
    arbiter: Mutex<Option<Arbiter>>,
    /// The generation of the running actor (mirrors `WriterStats::generations`); callers
    /// waiting on a reply watch it, so a replaced shard's requests fail fast.
    generation: watch::Sender<u64>,
    /// Why the shard is `FAILED`, for `/readyz` and refusals.
    failure: Mutex<Option<String>>,
    /// The supervisor's restarts of it, within the intensity window.
    auto_restarts: RestartIntensity,
    /// Coalesced placements waiting for the shard ([`crate::inbox`]).
    inbox: Arc<Inbox>,
}

const RUNNING: u8 = 0;
const RESTARTING: u8 = 1;
const FAILED: u8 = 2;

pub(crate) struct Inner {
    storage: Arc<dyn Storage>,
    router: Arc<Router>,
    writer: Mutex<Option<LogWriter>>,
    writer_sender: crossbeam_channel::Sender<WriterMsg>,
    writer_stats: Arc<WriterStats>,
    slots: Vec<ShardSlot>,
    settings: ShardSettings,
    shard_count: u16,
    next_customer_shard: AtomicU64,
    incidents: IncidentLog,
    quarantine: Arc<Quarantine>,
    faults: mpsc::Sender<Fault>,
    supervisor_config: SupervisorConfig,
    supervisor: Mutex<Option<Arbiter>>,
    /// The reason of the first escalation, once one happened.
    escalation: watch::Sender<Option<String>>,
    /// The global sequence of audit entries, shared by every shard's chain and the gateway's
    /// control chain ([`crate::audit`]).
    audit_seq: AuditSeq,
    /// Reads consult the cold tier: it is on (`hot_retention_s` > 0) or holds orders.
    cold_tier: bool,
    /// When the supervisor last finished a clean heartbeat round (systemd's watchdog).
    clean_rounds: supervisor::CleanRounds,
    /// The data directory and the disk guard's bound, for the free-space metrics.
    data_dir: std::path::PathBuf,
    min_free_bytes: u64,
}

/// The handle the gateway and benchmarks use. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Counters of the log writer, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogCounters {
    pub syncs: u64,
    pub writes: u64,
    pub batches: u64,
    pub events: u64,
    /// Bytes of shard log batches written.
    pub bytes: u64,
    /// Public events written to the `events` family, and their encoded bytes (keys aside).
    pub notices: u64,
    pub notice_bytes: u64,
    /// Writes (group commits and probes) that failed since start.
    pub write_failures: u64,
}

/// Why a shard is rebuilt, for its incident.
enum Rebuild {
    /// Asked for (`POST /v1/ops/shards/{id}/restart`): the running shard flushes first.
    Requested,
    /// After a fault: the shard's actor is gone or stuck; whatever it had not written is
    /// dropped (none of it was acknowledged).
    AfterFault,
}

impl Engine {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Engine {
        Engine { inner }
    }

    /// Opens RocksDB under `config.data_dir` and recovers every shard. Must be called inside a
    /// running actix System.
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StorageError::Io(format!("create {}: {e}", config.data_dir.display())))?;
        // Compactions wait until every shard is recovered: they would take a core from it.
        let opening = std::time::Instant::now();
        let storage = Arc::new(RocksStorage::open_for_recovery(
            &config.data_dir.join("db"),
            config.wal_max_bytes,
        )?);
        // After a crash this is RocksDB's write-ahead-log replay: bounded by
        // `storage.wal_max_bytes` (docs/ARCHITECTURE.md, "Restart time").
        tracing::info!(
            message = "Opened RocksDB.",
            elapsed_ms = opening.elapsed().as_millis() as u64
        );
        let engine = Engine::start(config, storage.clone())?;
        storage.resume_compactions()?;
        Ok(engine)
    }

    /// Recovers every shard from `storage` and starts them.
    pub fn start(config: EngineConfig, storage: Arc<dyn Storage>) -> Result<Engine, EngineError> {
        if config.shards == 0 || config.shards > 256 {
            return Err(EngineError::Config("engine.shards must be 1..=256".into()));
        }
        let shard_count = config.shards as u16;
        match storage.get(Family::Control, SHARD_COUNT_KEY)? {
            Some(stored) => {
                let stored = u16::from_be_bytes(
                    stored
                        .as_slice()
                        .try_into()
                        .map_err(|_| StorageError::Corrupt("shard count".into()))?,
                );
                if stored != shard_count {
                    return Err(EngineError::Config(format!(
                        "the data directory was written with {stored} shards; set engine.shards = {stored}"
                    )));
                }
            }
            None => storage.write(
                vec![Write::Put {
                    family: Family::Control,
                    key: SHARD_COUNT_KEY.to_vec(),
                    value: shard_count.to_be_bytes().to_vec(),
                }],
                true,
            )?,
        }
        let started = std::time::Instant::now();
        let recovered: Vec<Result<Recovered, EngineError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..shard_count)
                .map(|shard| {
                    let storage = storage.as_ref();
                    scope.spawn(move || recover_shard(storage, shard, shard_count))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("recovery thread panicked"))
                .collect()
        });
        let recovered: Vec<Recovered> = recovered.into_iter().collect::<Result<_, _>>()?;
        tracing::info!(
            message = "Recovered shards from storage.",
            shards = shard_count,
            replayed_events = recovered.iter().map(|r| r.replayed_events).sum::<u64>(),
            orders = recovered.iter().map(|r| r.data.orders.len()).sum::<usize>(),
            elapsed_ms = started.elapsed().as_millis() as u64
        );
        let audit_seq =
            AuditSeq::starting_after(crate::audit::last_seq(storage.as_ref(), shard_count)?);
        let tunables = Arc::new(Tunables::new(
            config.batch_events_max,
            config.flush_interval_ms,
            config.supervisor.max_restarts,
            config.supervisor.window_s,
        ));
        tunables.set_request_timeout_ms(config.request_timeout_ms);
        tunables.set_events_enabled(config.events_enabled);
        tunables.set_stock_low_threshold(config.stock_low_threshold);
        let (faults, fault_receiver) = mpsc::channel(FAULT_QUEUE_MAX);
        let writer = LogWriter::start(
            storage.clone(),
            config.durability,
            tunables.clone(),
            recovered.iter().map(|r| r.data.last_seq).collect(),
            faults.clone(),
        );
        // Before any shard runs: public events continue after the newest stored.
        writer
            .stats
            .event_head
            .advance(crate::events::last_cursor(storage.as_ref())?);
        if config.min_free_bytes > 0 {
            crate::diskguard::start(
                config.data_dir.clone(),
                config.min_free_bytes,
                Arc::downgrade(&writer.stats),
            );
        }
        let mut cold_held = false;
        storage.scan(Family::Cold, &[], crate::storage::KEY_MAX, &mut |_, _| {
            cold_held = true;
            false
        })?;
        let cold_tier = config.cold.hot_retention_s > 0 || cold_held;
        let settings = ShardSettings {
            mailbox_capacity: config.mailbox_capacity.max(16),
            tunables: tunables.clone(),
            snapshot_interval_events: config.snapshot_interval_events.max(1),
            idempotency_retention_s: config.idempotency_retention_s,
            idempotency_hot_s: config.idempotency_hot_s,
            cold: config.cold,
            pending_retry_ms: config.pending_retry_ms.max(1),
            snapshot_encoding: crate::shard::SnapshotEncoding::Thread,
        };
        let slots: Vec<ShardSlot> = (0..shard_count)
            .map(|_| ShardSlot {
                state: AtomicU8::new(RUNNING),
                restarts: AtomicU64::new(0),
                gauges: Arc::new(ShardGauges::default()),
                arbiter: Mutex::new(None),
                generation: watch::Sender::new(0),
                failure: Mutex::new(None),
                auto_restarts: RestartIntensity::default(),
                inbox: Arc::new(Inbox::new(config.inbox_orders_max)),
            })
            .collect();
        let incidents = IncidentLog::open(storage.clone(), config.incident_retention_max)?;
        let quarantine = Arc::new(Quarantine::load(storage.as_ref())?);
        let writer_sender = writer.sender.clone();
        let writer_stats = writer.stats.clone();
        // The router is filled before any message that needs it (`Recover`) is sent.
        let router = Arc::new(Router::new(Vec::with_capacity(shard_count as usize)));
        let engine = Engine {
            inner: Arc::new(Inner {
                storage,
                router,
                writer: Mutex::new(Some(writer)),
                writer_sender,
                writer_stats,
                slots,
                settings,
                shard_count,
                cold_tier,
                next_customer_shard: AtomicU64::new(0),
                incidents,
                quarantine,
                faults,
                supervisor_config: config.supervisor.clone(),
                supervisor: Mutex::new(None),
                escalation: watch::Sender::new(None),
                audit_seq,
                clean_rounds: supervisor::CleanRounds::new(),
                data_dir: config.data_dir.clone(),
                min_free_bytes: config.min_free_bytes,
            }),
        };
        for (index, rec) in recovered.into_iter().enumerate() {
            let (arbiter, addr) = engine.spawn_shard(index as u16, rec, 0);
            engine.inner.router.push(addr);
            *engine.inner.slots[index]
                .arbiter
                .lock()
                .expect("arbiter slot") = Some(arbiter);
        }
        for shard in 0..shard_count {
            engine.inner.router.send(shard, ShardMsg::Recover);
        }
        let supervisor = Arbiter::new();
        supervisor.spawn(supervisor::run(
            Arc::downgrade(&engine.inner),
            fault_receiver,
            config.supervisor,
        ));
        *engine.inner.supervisor.lock().expect("supervisor slot") = Some(supervisor);
        Ok(engine)
    }

    /// Starts a shard's actor on a fresh arbiter.
    fn spawn_shard(&self, shard: u16, rec: Recovered, generation: u64) -> (Arbiter, Addr<Shard>) {
        let inner = &self.inner;
        let arbiter = Arbiter::new();
        let sender = inner.writer_sender.clone();
        let stats = inner.writer_stats.clone();
        let gauges = inner.slots[shard as usize].gauges.clone();
        let settings = inner.settings.clone();
        let router = inner.router.clone();
        let audit_seq = inner.audit_seq.clone();
        let link = ShardLink {
            generation,
            faults: inner.faults.clone(),
            quarantine: inner.quarantine.clone(),
            inbox: inner.slots[shard as usize].inbox.clone(),
            storage: inner.storage.clone(),
        };
        let addr = Shard::start_in_arbiter(&arbiter.handle(), move |_ctx| {
            Shard::new(
                rec.data,
                rec.log_digest,
                rec.snapshot_seq,
                settings,
                sender,
                stats,
                router,
                Arc::new(crate::clock::SystemClock),
                gauges,
                link,
                ShardChain::new(shard, rec.audit_tip, audit_seq),
            )
        });
        (arbiter, addr)
    }

    /// The incident store (faults, restarts, failed checks).
    pub fn incidents(&self) -> &IncidentLog {
        &self.inner.incidents
    }

    /// Commands refused because they made a shard panic twice.
    pub fn quarantine(&self) -> &Quarantine {
        &self.inner.quarantine
    }

    /// The settings that change while the engine runs (batch size, flush interval, restart
    /// intensity).
    pub fn tunables(&self) -> &Tunables {
        &self.inner.settings.tunables
    }

    /// The supervisor's settings as configured at start (restart intensity: see
    /// [`Engine::tunables`]).
    pub fn supervisor_config(&self) -> &SupervisorConfig {
        &self.inner.supervisor_config
    }

    pub(crate) fn clean_rounds(&self) -> &supervisor::CleanRounds {
        &self.inner.clean_rounds
    }

    /// How long ago the supervisor last finished a clean heartbeat round (every running shard
    /// answered within `heartbeat_timeout_ms`); `None` before the first. systemd's watchdog is
    /// fed only while this is recent.
    pub fn clean_heartbeat_round_age(&self) -> Option<Duration> {
        self.inner.clean_rounds.age()
    }

    /// Requests a shard's mailbox holds before new ones are refused with 503
    /// (`engine.mailbox_capacity`).
    pub fn mailbox_capacity(&self) -> usize {
        self.inner.settings.mailbox_capacity
    }

    /// `storage.min_free_bytes`: below this much free space writes are refused (0: off).
    pub fn min_free_bytes(&self) -> u64 {
        self.inner.min_free_bytes
    }

    /// Size and free space of the file system holding the data directory, read now
    /// (`statvfs`); `None` when it cannot be read.
    pub fn disk_space(&self) -> Option<crate::diskguard::DiskSpace> {
        crate::diskguard::space(&self.inner.data_dir)
    }

    /// Resolves with the reason once the supervisor escalates (a shard past its restart
    /// intensity is left failed); never resolves otherwise.
    pub async fn escalation(&self) -> String {
        let mut receiver = self.inner.escalation.subscribe();
        loop {
            if let Some(reason) = receiver.borrow_and_update().clone() {
                return reason;
            }
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The storage the engine writes, for the gateway's own column families (audit trail,
    /// wrapped data keys). Writes there must not touch the `log` and `snap` families.
    /// The global sequence of audit entries: the gateway's control chain draws from it too, so
    /// that entries of every chain merge into one ascending listing.
    pub fn audit_seq(&self) -> AuditSeq {
        self.inner.audit_seq.clone()
    }

    pub fn storage(&self) -> Arc<dyn Storage> {
        self.inner.storage.clone()
    }

    /// The newest durable public event's cursor, to wait on ([`crate::events`]).
    pub fn event_head(&self) -> Arc<crate::events::EventHead> {
        self.inner.writer_stats.event_head.clone()
    }

    /// A page of public events after the cursor `after`, oldest first (read on the blocking
    /// pool): at most `limit` of `types`, looking at no more than `scan_max` events. Returns
    /// them and the cursor the scan reached.
    pub async fn events_page(
        &self,
        after: u64,
        types: crate::events::TypeSet,
        limit: usize,
        scan_max: usize,
    ) -> Result<(Vec<crate::events::StoredEvent>, u64), CommandError> {
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || {
            crate::events::read_after(storage.as_ref(), after, types, limit, scan_max)
        })
        .await
        .map_err(|e| CommandError::Unavailable(format!("event read: {e}")))?
        .map_err(|e| CommandError::Unavailable(format!("event read: {e}")))
    }

    /// Deletes public events older than `retention_s` and the oldest beyond the newest
    /// `count_max` (blocking: call from a thread of its own). Returns whether any went.
    pub fn sweep_events(
        &self,
        retention_s: u64,
        count_max: u64,
        scan_max: usize,
    ) -> Result<bool, StorageError> {
        let cutoff_us = crate::clock::now_us().saturating_sub(
            i64::try_from(retention_s.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        );
        let storage = self.inner.storage.as_ref();
        match crate::events::sweep(storage, cutoff_us, count_max, scan_max)? {
            Some(write) => {
                storage.write(vec![write], false)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Per shard, the last sequence number the log writer made durable: every acknowledged
    /// event is at or below it (a backup started now must hold at least these).
    pub fn durable_seqs(&self) -> Vec<u64> {
        self.inner
            .writer_stats
            .durable_seq
            .iter()
            .map(|seq| seq.load(Ordering::SeqCst))
            .collect()
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shard_count as usize
    }

    /// Sends a client command to a shard and waits for its durable reply. A full mailbox or a
    /// shard that is restarting answers `Unavailable` at once; the gateway never blocks.
    async fn call<T>(
        &self,
        shard: u16,
        make: impl FnOnce(Reply<T>) -> ClientCmd,
    ) -> Result<T, CommandError> {
        let (sent_to, answer, timeout_ms) = self.start_call(shard, make)?;
        self.await_answer(shard, sent_to, answer, timeout_ms).await
    }

    /// The sending half of [`Engine::call`]: admits and sends the command now; answers what
    /// [`Engine::await_answer`] needs (the generation sent to, the reply, the deadline).
    #[allow(clippy::type_complexity)]
    fn start_call<T>(
        &self,
        shard: u16,
        make: impl FnOnce(Reply<T>) -> ClientCmd,
    ) -> Result<(u64, oneshot::Receiver<Result<T, CommandError>>, u64), CommandError> {
        // The writer's atomic mirror, not the watch: reading the watch takes its lock.
        let sent_to = self.generation(shard);
        let (reply, answer) = oneshot::channel();
        let cmd = make(reply);
        // Whole-shard work an operator asks for (a snapshot, re-sealing every value, the
        // state digest) may take longer than a request on a large shard.
        let whole_shard = matches!(
            cmd,
            ClientCmd::Reseal { .. } | ClientCmd::Snapshot { .. } | ClientCmd::StateDigest { .. }
        );
        self.call_untracked(shard, ShardMsg::Client(cmd))?;
        // Every call has a deadline (`engine.request_timeout_ms`): a shard that never answers
        // (stuck, or waiting on a part that cannot answer) costs the caller at most that.
        let mut timeout_ms = self.inner.settings.tunables.request_timeout_ms();
        if whole_shard {
            timeout_ms = timeout_ms.max(WHOLE_SHARD_TIMEOUT_MS);
        }
        Ok((sent_to, answer, timeout_ms))
    }

    /// Waits for the reply of a command sent to `shard` while its actor had generation
    /// `sent_to`, at most `timeout_ms`; a replaced actor's requests fail as soon as it is
    /// replaced.
    async fn await_answer<T>(
        &self,
        shard: u16,
        sent_to: u64,
        mut answer: oneshot::Receiver<Result<T, CommandError>>,
        timeout_ms: u64,
    ) -> Result<T, CommandError> {
        let slot = &self.inner.slots[shard as usize];
        let restarted =
            || CommandError::Unavailable(format!("shard {shard} restarted during the request"));
        let deadline = Duration::from_millis(timeout_ms);
        let started = Instant::now();
        let late = || {
            CommandError::Unavailable(format!(
                "shard {shard} did not answer within engine.request_timeout_ms ({timeout_ms} ms); a retry with the same Idempotency-Key is safe"
            ))
        };
        // Fast path: almost every answer comes within one heartbeat interval. Only a request
        // still waiting then watches the shard's generation (registering with the shared watch
        // on every request would cost a contended lock each).
        let patience =
            Duration::from_millis(self.inner.supervisor_config.heartbeat_interval_ms).min(deadline);
        if let Ok(answer) = tokio::time::timeout(patience, &mut answer).await {
            return answer.map_err(|_| restarted())?;
        }
        // A shard replaced while this request waits (a panic, a hang) never answers it.
        // Subscribed before the check: a replacement after it wakes `changed` below.
        let mut generation = slot.generation.subscribe();
        if self.generation(shard) != sent_to {
            return Err(CommandError::Unavailable(format!(
                "shard {shard} was replaced during the request"
            )));
        }
        let left = deadline.saturating_sub(started.elapsed());
        tokio::select! {
            biased;
            answer = answer => answer.map_err(|_| restarted())?,
            _ = generation.changed() => Err(CommandError::Unavailable(format!(
                "shard {shard} was replaced during the request"
            ))),
            _ = tokio::time::sleep(left) => Err(late()),
        }
    }

    pub async fn adjust_stock(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        actor: &str,
    ) -> Result<StockView, CommandError> {
        self.adjust_stock_with(sku, delta, reason, actor, None)
            .await
    }

    /// [`Engine::adjust_stock`] under an Idempotency-Key: a retry with the same key and body
    /// is answered the stock the first one left, and applies nothing.
    pub async fn adjust_stock_with(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<StockView, CommandError> {
        self.adjust_stock_at(
            sku,
            crate::domain::DEFAULT_LOCATION,
            delta,
            reason,
            actor,
            idempotency,
        )
        .await
    }

    /// [`Engine::adjust_stock_with`] at one location: `UnknownLocation` when none has that id;
    /// `InsufficientStock` when `on_hand` there would fall below what is reserved there.
    pub async fn adjust_stock_at(
        &self,
        sku: &str,
        location: &str,
        delta: i64,
        reason: &str,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<StockView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let (sku, reason) = (sku.to_string(), reason.to_string());
        let (actor, location) = (actor.to_string(), location.to_string());
        self.call(shard, |reply| ClientCmd::AdjustStock {
            sku,
            location,
            delta,
            reason,
            actor,
            idempotency,
            reply,
        })
        .await
    }

    /// Moves `qty` available units of `sku` between two locations (on the SKU's shard):
    /// `UnknownLocation` for an unknown `from` or `to`, `NotFound` for an unknown SKU,
    /// `InsufficientStock` when `from` has fewer available units. Under an Idempotency-Key a
    /// retry moves nothing and is answered the stock as it is then.
    #[allow(clippy::too_many_arguments)]
    pub async fn transfer_stock(
        &self,
        sku: &str,
        from: &str,
        to: &str,
        qty: u64,
        reason: &str,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<StockView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let (sku, from, to) = (sku.to_string(), from.to_string(), to.to_string());
        let (reason, actor) = (reason.to_string(), actor.to_string());
        self.call(shard, |reply| ClientCmd::TransferStock {
            sku,
            from,
            to,
            qty,
            reason,
            actor,
            idempotency,
            reply,
        })
        .await
    }

    /// Defines (or redefines) a stock location on every shard: each logs `LocationSet` and
    /// allocates by its own copy, so a replay re-derives its allocations. Sent to all shards
    /// before the first answer is awaited; answered the location and whether it is new (on
    /// shard 0, which also writes the audit entry). A shard that fails leaves the location
    /// defined on the others: the call fails (503) and a retry with the same body completes
    /// it (defining a location again with the same values changes nothing but its time).
    pub async fn set_location(
        &self,
        id: &str,
        name: &str,
        priority: u32,
        locations_max: usize,
        actor: &str,
    ) -> Result<(crate::domain::LocationView, bool), CommandError> {
        let mut pending = Vec::with_capacity(self.inner.shard_count as usize);
        for shard in 0..self.inner.shard_count {
            let (id, name, actor) = (id.to_string(), name.to_string(), actor.to_string());
            let call = self.start_call(shard, |reply| ClientCmd::SetLocation {
                id,
                name,
                priority,
                locations_max,
                actor,
                audit: shard == 0,
                reply,
            })?;
            pending.push((shard, call));
        }
        let mut first = None;
        let mut failure = None;
        for (shard, (sent_to, answer, timeout_ms)) in pending {
            match self.await_answer(shard, sent_to, answer, timeout_ms).await {
                Ok(answer) => {
                    first.get_or_insert(answer);
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        match (failure, first) {
            (Some(error), _) => Err(error),
            (None, Some(answer)) => Ok(answer),
            (None, None) => Err(CommandError::Unavailable("no shard answered".into())),
        }
    }

    /// Every stock location, by id, `default` included (as shard 0 knows them: every shard
    /// is sent each definition).
    pub async fn locations(&self) -> Result<Vec<crate::domain::LocationView>, CommandError> {
        self.call(0, |reply| ClientCmd::ListLocations { reply })
            .await
    }

    pub async fn stock(&self, sku: &str) -> Result<StockView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let sku = sku.to_string();
        self.call(shard, |reply| ClientCmd::GetStock { sku, reply })
            .await
    }

    /// Sets a SKU's catalog price on the shard that owns the SKU's stock (`actor` names the
    /// API key in the audit entry). Under an Idempotency-Key a retry with the same key and
    /// body is answered the entry the first one set, and sets nothing.
    pub async fn set_price(
        &self,
        sku: &str,
        price: u64,
        active: bool,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<CatalogView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let (sku, actor) = (sku.to_string(), actor.to_string());
        self.call(shard, |reply| ClientCmd::SetPrice {
            sku,
            price,
            active,
            actor,
            idempotency,
            reply,
        })
        .await
    }

    /// A SKU's catalog price; `NotFound` when it never had one.
    pub async fn price(&self, sku: &str) -> Result<CatalogView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let sku = sku.to_string();
        self.call(shard, |reply| ClientCmd::GetPrice { sku, reply })
            .await
    }

    /// A page of the catalog in SKU order: the entries after the SKU `after` (exclusive), at
    /// most `limit` (1 to [`crate::domain::CATALOG_PAGE_MAX`]), and the SKU to continue after
    /// when there are more. Each shard answers its first `limit + 1` entries after `after`;
    /// the smallest `limit` of all shards' are the page.
    pub async fn catalog_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<CatalogView>, Option<String>), CommandError> {
        let limit = limit.clamp(1, crate::domain::CATALOG_PAGE_MAX);
        let mut pending = Vec::with_capacity(self.inner.shard_count as usize);
        for shard in 0..self.inner.shard_count {
            let after = after.map(str::to_string);
            let call = self.start_call(shard, |reply| ClientCmd::CatalogPage {
                after,
                limit: limit + 1,
                reply,
            })?;
            pending.push((shard, call));
        }
        let mut merged: Vec<CatalogView> = Vec::new();
        for (shard, (sent_to, answer, timeout_ms)) in pending {
            merged.extend(
                self.await_answer(shard, sent_to, answer, timeout_ms)
                    .await?,
            );
        }
        merged.sort_unstable_by(|a, b| a.sku.cmp(&b.sku));
        let more = merged.len() > limit;
        merged.truncate(limit);
        let next = if more {
            merged.last().map(|entry| entry.sku.clone())
        } else {
            None
        };
        Ok((merged, next))
    }

    /// The catalog entries of `skus` (each at most once), in the same order (`None`: never
    /// priced), read with one message per shard that owns any of them, all sent before the
    /// first answer is awaited: what a placement is priced with.
    pub async fn catalog_prices(
        &self,
        skus: &[String],
    ) -> Result<Vec<Option<CatalogView>>, CommandError> {
        let count = self.inner.shard_count;
        // Per shard: the SKUs and their positions in `skus`.
        let mut groups: Vec<(Vec<String>, Vec<usize>)> =
            (0..count).map(|_| (Vec::new(), Vec::new())).collect();
        for (index, sku) in skus.iter().enumerate() {
            let group = &mut groups[shard_of_sku(sku, count) as usize];
            group.0.push(sku.clone());
            group.1.push(index);
        }
        let mut pending = Vec::new();
        for (shard, (group, positions)) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let shard = shard as u16;
            let call = self.start_call(shard, |reply| ClientCmd::CatalogPrices {
                skus: group,
                reply,
            })?;
            pending.push((shard, positions, call));
        }
        let mut prices: Vec<Option<CatalogView>> = vec![None; skus.len()];
        for (shard, positions, (sent_to, answer, timeout_ms)) in pending {
            let answered = self
                .await_answer(shard, sent_to, answer, timeout_ms)
                .await?;
            debug_assert_eq!(answered.len(), positions.len());
            for (position, entry) in positions.into_iter().zip(answered) {
                prices[position] = entry;
            }
        }
        Ok(prices)
    }

    pub async fn create_customer(
        &self,
        customer: NewCustomer,
    ) -> Result<CustomerView, CommandError> {
        self.create_customer_with(customer, None).await
    }

    /// [`Engine::create_customer`] under an Idempotency-Key: the customer lives on the key's
    /// shard, so a retry finds the first outcome and creates nothing more.
    pub async fn create_customer_with(
        &self,
        customer: NewCustomer,
        idempotency: Option<Idempotency>,
    ) -> Result<CustomerView, CommandError> {
        self.create_customer_as(customer, None, idempotency).await
    }

    /// [`Engine::create_customer_with`] on behalf of `actor` (an API key id), which the audit
    /// entry written with the customer names.
    pub async fn create_customer_as(
        &self,
        customer: NewCustomer,
        actor: Option<&str>,
        idempotency: Option<Idempotency>,
    ) -> Result<CustomerView, CommandError> {
        let actor = actor.map(str::to_string);
        let count = self.inner.shard_count;
        let shard = match &idempotency {
            Some(idem) => shard_of_key(&idem.key, count),
            None => {
                (self
                    .inner
                    .next_customer_shard
                    .fetch_add(1, Ordering::Relaxed)
                    % count as u64) as u16
            }
        };
        self.call(shard, |reply| ClientCmd::CreateCustomer {
            id: None,
            customer,
            actor,
            idempotency,
            reply,
        })
        .await
    }

    /// Reserves a customer id for [`Engine::create_reserved_customer`]: on the shard of
    /// `idempotency`'s key when there is one (where the customer must live for a retry to find
    /// it), else the next shard in turn. Nothing is written; an id never used is skipped.
    pub async fn reserve_customer_id(
        &self,
        idempotency: Option<&Idempotency>,
    ) -> Result<CustomerId, CommandError> {
        let count = self.inner.shard_count;
        let shard = match idempotency {
            Some(idem) => shard_of_key(&idem.key, count),
            None => {
                (self
                    .inner
                    .next_customer_shard
                    .fetch_add(1, Ordering::Relaxed)
                    % count as u64) as u16
            }
        };
        self.call(shard, |reply| ClientCmd::ReserveCustomerId { reply })
            .await
    }

    /// Creates a customer under an id from [`Engine::reserve_customer_id`] (the gateway sealed
    /// its data under a key made for that id). A retry under the same Idempotency-Key answers
    /// the customer it created first, whatever id it reserved this time.
    pub async fn create_reserved_customer(
        &self,
        id: CustomerId,
        customer: NewCustomer,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<CustomerView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = Some(actor.to_string());
        self.call(id.shard(), |reply| ClientCmd::CreateCustomer {
            id: Some(id),
            customer,
            actor,
            idempotency,
            reply,
        })
        .await
    }

    /// Replaces the customer's contact fields that `update` sets (sealed by the gateway);
    /// audited `customer.update`. An erased customer: `invalid_transition`.
    pub async fn update_customer(
        &self,
        id: CustomerId,
        update: CustomerUpdate,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<CustomerView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = actor.to_string();
        self.call(id.shard(), |reply| ClientCmd::UpdateCustomer {
            id,
            update,
            actor,
            idempotency,
            reply,
        })
        .await
    }

    /// Erases the customer's personal data from the state (`CustomerErased`, audited
    /// `customer.erase`); idempotent. The gateway destroys the customer's data key first.
    pub async fn erase_customer(
        &self,
        id: CustomerId,
        actor: &str,
    ) -> Result<CustomerView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = actor.to_string();
        self.call(id.shard(), |reply| ClientCmd::EraseCustomer {
            id,
            actor,
            reply,
        })
        .await
    }

    pub async fn customer(&self, id: CustomerId) -> Result<CustomerView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        self.call(id.shard(), |reply| ClientCmd::GetCustomer { id, reply })
            .await
    }

    /// Places an order. With an idempotency key the order lives on the key's shard (so a
    /// repeat finds the first outcome); without one, on the customer's shard.
    pub async fn place_order(&self, place: PlaceOrder) -> Result<OrderView, CommandError> {
        let count = self.inner.shard_count;
        let customer_shard = place.customer_id.shard();
        if customer_shard >= count {
            return Err(CommandError::UnknownCustomer);
        }
        let order_shard = match &place.idempotency {
            Some(idem) => shard_of_key(&idem.key, count),
            None => customer_shard,
        };
        if order_shard != customer_shard {
            // Customers are never deleted, so a check before placing cannot race.
            self.customer(place.customer_id)
                .await
                .map_err(|e| match e {
                    CommandError::NotFound => CommandError::UnknownCustomer,
                    other => other,
                })?;
        }
        let answer = self
            .call(order_shard, |reply| ClientCmd::Place { place, reply })
            .await;
        self.resolve_order(answer).await
    }

    /// Places many orders through one message to `shard` (benchmarks, bulk import); answers
    /// each order's id or error. The orders live on `shard`, so a customer on another shard
    /// is not checked here: bulk callers use customers of `shard`.
    pub async fn place_batch(
        &self,
        shard: u16,
        places: Vec<PlaceOrder>,
    ) -> Result<Vec<Result<OrderId, CommandError>>, CommandError> {
        self.call(shard, |reply| ClientCmd::PlaceBatch { places, reply })
            .await
    }

    /// Places many orders, each routed as [`Engine::place_order`] routes it, through the
    /// shards' inboxes ([`crate::inbox`]): concurrent callers' orders for a shard travel in one
    /// message and one log batch. Answers each order's view or error, in input order.
    pub async fn place_orders(&self, places: Vec<PlaceOrder>) -> PlaceOutcomes {
        let count = self.inner.shard_count;
        let mut outcomes: Vec<Option<Result<OrderView, CommandError>>> =
            (0..places.len()).map(|_| None).collect();
        // Per shard: the orders and their input positions.
        let mut groups: Vec<(Vec<PlaceOrder>, Vec<usize>)> =
            (0..count).map(|_| (Vec::new(), Vec::new())).collect();
        // Orders whose key puts them on another shard than their customer's: the customer is
        // checked first, one message per customer shard (customers are never deleted, so the
        // check cannot race).
        let mut remote: Vec<Vec<usize>> = vec![Vec::new(); count as usize];
        let mut routed: Vec<Option<u16>> = Vec::with_capacity(places.len());
        for (index, place) in places.iter().enumerate() {
            let customer_shard = place.customer_id.shard();
            if customer_shard >= count {
                outcomes[index] = Some(Err(CommandError::UnknownCustomer));
                routed.push(None);
                continue;
            }
            let order_shard = match &place.idempotency {
                Some(idem) => shard_of_key(&idem.key, count),
                None => customer_shard,
            };
            if order_shard != customer_shard {
                remote[customer_shard as usize].push(index);
            }
            routed.push(Some(order_shard));
        }
        let mut checks = Vec::new();
        for (shard, indexes) in remote.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let ids: Vec<CustomerId> = indexes.iter().map(|i| places[*i].customer_id).collect();
            let shard = shard as u16;
            // Every check is sent before any is awaited: they run side by side.
            let started = self.start_call(shard, |reply| ClientCmd::CustomersExist { ids, reply });
            checks.push((shard, indexes, started));
        }
        for (shard, indexes, started) in checks {
            let answer = match started {
                Ok((sent_to, answer, timeout_ms)) => {
                    self.await_answer(shard, sent_to, answer, timeout_ms).await
                }
                Err(error) => Err(error),
            };
            match answer {
                Ok(exists) => {
                    for (index, found) in indexes.into_iter().zip(exists) {
                        if !found {
                            outcomes[index] = Some(Err(CommandError::UnknownCustomer));
                        }
                    }
                }
                Err(error) => fail(&mut outcomes, indexes, error),
            }
        }
        for (index, (place, shard)) in places.into_iter().zip(routed).enumerate() {
            if let (Some(shard), None) = (shard, &outcomes[index]) {
                groups[shard as usize].0.push(place);
                groups[shard as usize].1.push(index);
            }
        }
        let mut waiting = Vec::new();
        for (shard, (places, indexes)) in groups.into_iter().enumerate() {
            if places.is_empty() {
                continue;
            }
            match self.submit(shard as u16, places) {
                Ok((sent_to, answer)) => waiting.push((shard as u16, indexes, sent_to, answer)),
                Err(error) => fail(&mut outcomes, indexes, error),
            }
        }
        for (shard, indexes, sent_to, answer) in waiting {
            let timeout_ms = self.inner.settings.tunables.request_timeout_ms();
            match self.await_answer(shard, sent_to, answer, timeout_ms).await {
                Ok(results) => {
                    for (index, result) in indexes.into_iter().zip(results) {
                        outcomes[index] = Some(result);
                    }
                }
                Err(error) => fail(&mut outcomes, indexes, error),
            }
        }
        for outcome in outcomes.iter_mut() {
            if let Some(answer @ Err(CommandError::Cold(_))) = outcome {
                *outcome = Some(self.resolve_order(answer.clone()).await);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(CommandError::Unavailable("no outcome".into()))))
            .collect()
    }

    /// Queues placements in a shard's inbox and wakes the shard when no wake-up is
    /// outstanding; refused at once like any write (full disk, shard not running, full inbox).
    fn submit(
        &self,
        shard: u16,
        places: Vec<PlaceOrder>,
    ) -> Result<(u64, oneshot::Receiver<Result<PlaceOutcomes, CommandError>>), CommandError> {
        self.admit_write()?;
        let sent_to = self.generation(shard);
        self.admit_running(shard)?;
        let slot = &self.inner.slots[shard as usize];
        let (reply, answer) = oneshot::channel();
        match slot.inbox.push(Submission { places, reply }) {
            Ok(Pushed::Queued) => {}
            Ok(Pushed::Wake) => {
                // Never refused for capacity (one wake-up per round is outstanding at most). A
                // wake-up that cannot be delivered (the actor is being replaced) is not lost:
                // the next actor drains the inbox when it starts.
                self.inner.router.send(shard, ShardMsg::Drain);
            }
            Err(_) => {
                return Err(CommandError::Unavailable(format!(
                    "shard {shard} is overloaded (its inbox holds engine.inbox_orders_max orders)"
                )))
            }
        }
        Ok((sent_to, answer))
    }

    /// Refuses at once unless the shard's actor is running (restarting, or failed and left
    /// failed by the supervisor).
    fn admit_running(&self, shard: u16) -> Result<(), CommandError> {
        let slot = &self.inner.slots[shard as usize];
        match slot.state.load(Ordering::SeqCst) {
            RUNNING => Ok(()),
            RESTARTING => Err(CommandError::Unavailable(format!(
                "shard {shard} is restarting"
            ))),
            _ => {
                let reason = slot.failure.lock().expect("failure slot").clone();
                Err(CommandError::Unavailable(format!(
                    "shard {shard} failed: {}",
                    reason.as_deref().unwrap_or("stopped")
                )))
            }
        }
    }

    /// Admits one client message into a shard's mailbox, or refuses it at once.
    ///
    /// The bound is enforced here, not by actix: actix refuses `try_send` only for a sender
    /// that is itself parked, and every request sends through a fresh `Addr` clone (a new
    /// sender with a slot of its own), so its capacity alone bounds nothing. Admission counts
    /// messages in (`enqueued`) against messages the shard has taken (`handled`).
    fn call_untracked(&self, shard: u16, msg: ShardMsg) -> Result<(), CommandError> {
        let slot = &self.inner.slots[shard as usize];
        // A write on a full disk is refused as such, whatever state its shard is in.
        if let ShardMsg::Client(cmd) = &msg {
            if cmd.writes() {
                self.admit_write()?;
            }
        }
        self.admit_running(shard)?;
        let gauges = &slot.gauges;
        let depth = gauges
            .enqueued
            .fetch_add(1, Ordering::AcqRel)
            .saturating_sub(gauges.handled.load(Ordering::Acquire));
        if depth >= self.inner.settings.mailbox_capacity as u64 {
            gauges.enqueued.fetch_sub(1, Ordering::AcqRel);
            return Err(CommandError::Unavailable(format!(
                "shard {shard} is overloaded"
            )));
        }
        match self.inner.router.addr(shard).try_send(msg) {
            Ok(()) => Ok(()),
            Err(error) => {
                gauges.enqueued.fetch_sub(1, Ordering::AcqRel);
                Err(CommandError::Unavailable(match error {
                    SendError::Full(_) => format!("shard {shard} is overloaded"),
                    SendError::Closed(_) => format!("shard {shard} is restarting"),
                }))
            }
        }
    }

    /// Refuses a write at once while the disk is (nearly) full (507) or storage refuses
    /// writes (503); reads are never refused here.
    fn admit_write(&self) -> Result<(), CommandError> {
        let stats = &self.inner.writer_stats;
        if stats.disk_low.load(Ordering::Relaxed) {
            return Err(CommandError::InsufficientStorage(
                "the disk of the data directory is nearly full (less free space than storage.min_free_bytes); reads go on, writes are accepted again once space is back".into(),
            ));
        }
        if stats.failed.load(Ordering::Relaxed) {
            if stats.no_space.load(Ordering::Relaxed) {
                return Err(CommandError::InsufficientStorage(
                    "the disk of the data directory is full; reads go on, writes are accepted again once space is back".into(),
                ));
            }
            return Err(CommandError::Unavailable(
                "storage writes are failing; retry shortly".into(),
            ));
        }
        Ok(())
    }

    pub async fn order(&self, id: OrderId) -> Result<OrderView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        match self
            .call(id.shard(), |reply| ClientCmd::GetOrder { id, reply })
            .await
        {
            // Not in the shard's memory: the cold tier (answered after the shard's batch that
            // moved it was durable, so it is on disk).
            Err(CommandError::NotFound) => self
                .cold(move |storage| crate::cold::order(storage, id))
                .await?
                .map(|cold| cold.order)
                .ok_or(CommandError::NotFound),
            other => other,
        }
    }

    /// Resolves a shard's answer about an order it moved to the cold tier
    /// ([`CommandError::Cold`]); any other answer passes through.
    async fn resolve_order(
        &self,
        answer: Result<OrderView, CommandError>,
    ) -> Result<OrderView, CommandError> {
        let (id, placed) = match answer {
            Err(CommandError::Cold(ColdAnswer::Placed(id))) => (id, true),
            Err(CommandError::Cold(ColdAnswer::Order(id))) => (id, false),
            other => return other,
        };
        let cold = self
            .cold(move |storage| crate::cold::order(storage, id))
            .await?
            .ok_or(CommandError::NotFound)?;
        Ok(if placed {
            crate::state::as_placed(cold.order)
        } else {
            cold.order
        })
    }

    /// [`Engine::resolve_order`] for shipments.
    async fn resolve_shipment(
        &self,
        answer: Result<ShipmentView, CommandError>,
    ) -> Result<ShipmentView, CommandError> {
        let Err(CommandError::Cold(ColdAnswer::Shipment(id, events))) = answer else {
            return answer;
        };
        let mut view = self
            .cold(move |storage| crate::cold::shipment(storage, id))
            .await?
            .ok_or(CommandError::NotFound)?;
        view.events.truncate(events as usize);
        if let Some(last) = view.events.last() {
            view.status = last.status;
        }
        Ok(view)
    }

    /// What a command on order `id` that its shard does not hold answers when the order is
    /// in the cold tier (ended: nothing can change it); `NotFound` when it is not there.
    async fn ended_order(&self, id: OrderId) -> Result<crate::cold::ColdOrder, CommandError> {
        self.cold(move |storage| crate::cold::order(storage, id))
            .await?
            .ok_or(CommandError::NotFound)
    }

    /// Runs a read of the cold tier on the blocking pool.
    async fn cold<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, CommandError> {
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || read(storage.as_ref()))
            .await
            .map_err(|e| CommandError::Unavailable(format!("the cold tier read failed: {e}")))?
            .map_err(|e| CommandError::Unavailable(format!("the cold tier read failed: {e}")))
    }

    /// Lists orders newest first across all shards.
    pub async fn list_orders(&self, filter: OrderFilter) -> Result<OrderPage, CommandError> {
        let limit = filter.limit.clamp(1, 1000);
        let mut per_shard = filter.clone();
        per_shard.limit = limit + 1;
        let mut merged: Vec<OrderView> = Vec::new();
        for shard in 0..self.inner.shard_count {
            let f = per_shard.clone();
            merged.extend(
                self.call(shard, |reply| ClientCmd::ListOrders { filter: f, reply })
                    .await?,
            );
            if self.inner.cold_tier {
                // Read after the shard answered: an order it moved since is on disk by now
                // (and may be in both pages: kept once).
                let f = per_shard.clone();
                merged.extend(
                    self.cold(move |storage| crate::cold::list(storage, shard, &f))
                        .await?,
                );
            }
        }
        merged.sort_unstable_by_key(|o| std::cmp::Reverse((o.created_at_us, o.id)));
        merged.dedup_by_key(|o| o.id);
        let more = merged.len() > limit;
        merged.truncate(limit);
        let next = if more {
            merged.last().map(|o| OrderCursor {
                created_at_us: o.created_at_us,
                id: o.id,
            })
        } else {
            None
        };
        Ok(OrderPage {
            items: merged,
            next,
        })
    }

    pub async fn cancel_order(
        &self,
        id: OrderId,
        reason: Option<String>,
        actor: &str,
    ) -> Result<OrderView, CommandError> {
        self.cancel_order_with(id, reason, actor, None).await
    }

    /// [`Engine::cancel_order`] under an Idempotency-Key.
    pub async fn cancel_order_with(
        &self,
        id: OrderId,
        reason: Option<String>,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<OrderView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = actor.to_string();
        let answer = self
            .call(id.shard(), |reply| ClientCmd::Cancel {
                id,
                reason,
                actor,
                idempotency,
                reply,
            })
            .await;
        match answer {
            // Ended and moved out of memory: cancelled stays cancelled, delivered cannot be.
            Err(CommandError::NotFound) if self.inner.cold_tier => {
                let cold = self.ended_order(id).await?;
                match cold.order.status {
                    OrderStatus::Cancelled => Ok(cold.order),
                    other => Err(CommandError::InvalidTransition(format!(
                        "an order that is {} cannot be cancelled",
                        other.as_str()
                    ))),
                }
            }
            other => self.resolve_order(other).await,
        }
    }

    /// Ships units of an order (on the order's shard).
    pub async fn ship(&self, shipment: NewShipment) -> Result<ShipmentView, CommandError> {
        self.ship_with(shipment, None).await
    }

    /// [`Engine::ship`] under an Idempotency-Key: a retry is answered the shipment as it was
    /// created, and ships nothing more.
    pub async fn ship_with(
        &self,
        shipment: NewShipment,
        idempotency: Option<Idempotency>,
    ) -> Result<ShipmentView, CommandError> {
        let shard = shipment.order_id.shard();
        if shard >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let order = shipment.order_id;
        let answer = self
            .call(shard, |reply| ClientCmd::Ship {
                shipment,
                idempotency,
                reply,
            })
            .await;
        match answer {
            Err(CommandError::NotFound) if self.inner.cold_tier => {
                let cold = self.ended_order(order).await?;
                Err(CommandError::InvalidTransition(format!(
                    "an order that is {} has nothing left to ship",
                    cold.order.status.as_str()
                )))
            }
            other => self.resolve_shipment(other).await,
        }
    }

    /// Records a carrier event on a shipment.
    pub async fn shipment_event(
        &self,
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<String>,
        actor: &str,
    ) -> Result<ShipmentView, CommandError> {
        self.shipment_event_with(id, status, note, actor, None)
            .await
    }

    /// [`Engine::shipment_event`] under an Idempotency-Key.
    pub async fn shipment_event_with(
        &self,
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<String>,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<ShipmentView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = actor.to_string();
        let answer = self
            .call(id.shard(), |reply| ClientCmd::ShipmentEvent {
                id,
                status,
                note,
                actor,
                idempotency,
                reply,
            })
            .await;
        match answer {
            Err(CommandError::NotFound) if self.inner.cold_tier => {
                let shipment = self
                    .cold(move |storage| crate::cold::shipment(storage, id))
                    .await?
                    .ok_or(CommandError::NotFound)?;
                Err(CommandError::InvalidTransition(format!(
                    "the shipment is {}",
                    shipment.status.as_str()
                )))
            }
            other => self.resolve_shipment(other).await,
        }
    }

    pub async fn shipment(&self, id: ShipmentId) -> Result<ShipmentView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        match self
            .call(id.shard(), |reply| ClientCmd::GetShipment { id, reply })
            .await
        {
            Err(CommandError::NotFound) => self
                .cold(move |storage| crate::cold::shipment(storage, id))
                .await?
                .ok_or(CommandError::NotFound),
            other => other,
        }
    }

    /// Opens a return of shipped units of an order (on the order's shard). A retry under
    /// the Idempotency-Key answers the return as it was created, and opens nothing more.
    pub async fn create_return_with(
        &self,
        ret: NewReturn,
        idempotency: Option<Idempotency>,
    ) -> Result<ReturnView, CommandError> {
        let order = ret.order_id;
        if order.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let answer = self
            .call(order.shard(), |reply| ClientCmd::CreateReturn {
                ret,
                idempotency,
                reply,
            })
            .await;
        match answer {
            // Moved to the cold tier: ended, and it stays as it is.
            Err(CommandError::NotFound) if self.inner.cold_tier => {
                let cold = self.ended_order(order).await?;
                Err(CommandError::InvalidTransition(format!(
                    "the order is {} and archived (engine.hot_retention_s after it ended): it takes no more returns",
                    cold.order.status.as_str()
                )))
            }
            other => self.resolve_return(other).await,
        }
    }

    /// Receives a return's units (on its order's shard), restocking those marked so: units
    /// of SKUs other shards own are restocked there exactly once, also across crashes. A
    /// retry under the Idempotency-Key answers the return as it is.
    pub async fn receive_return_with(
        &self,
        id: ReturnId,
        lines: Vec<ReceiveLine>,
        actor: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<ReturnView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = actor.to_string();
        let answer = self
            .call(id.shard(), |reply| ClientCmd::ReceiveReturn {
                id,
                lines,
                actor,
                idempotency,
                reply,
            })
            .await;
        match answer {
            Err(CommandError::NotFound) if self.inner.cold_tier => {
                self.cold(move |storage| crate::cold::return_of(storage, id))
                    .await?
                    .ok_or(CommandError::NotFound)?;
                Err(CommandError::InvalidTransition(
                    "the return is already received".into(),
                ))
            }
            other => self.resolve_return(other).await,
        }
    }

    /// A return, hot or in the cold tier with its order.
    pub async fn return_view(&self, id: ReturnId) -> Result<ReturnView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        match self
            .call(id.shard(), |reply| ClientCmd::GetReturn { id, reply })
            .await
        {
            Err(CommandError::NotFound) => self
                .cold(move |storage| crate::cold::return_of(storage, id))
                .await?
                .ok_or(CommandError::NotFound),
            other => other,
        }
    }

    /// [`Engine::resolve_order`] for returns.
    async fn resolve_return(
        &self,
        answer: Result<ReturnView, CommandError>,
    ) -> Result<ReturnView, CommandError> {
        let Err(CommandError::Cold(ColdAnswer::Return(id, as_now))) = answer else {
            return answer;
        };
        let mut view = self
            .cold(move |storage| crate::cold::return_of(storage, id))
            .await?
            .ok_or(CommandError::NotFound)?;
        if !as_now {
            view.status = ReturnStatus::Requested;
            view.received.clear();
            view.received_at_us = None;
        }
        Ok(view)
    }

    /// Refunds money on an order (on the order's shard): never more than its total less
    /// earlier refunds. A retry under the Idempotency-Key answers the refund again, and
    /// refunds nothing more.
    pub async fn refund_with(
        &self,
        refund: NewRefund,
        idempotency: Option<Idempotency>,
    ) -> Result<RefundView, CommandError> {
        let order = refund.order_id;
        if order.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let answer = self
            .call(order.shard(), |reply| ClientCmd::Refund {
                refund,
                idempotency,
                reply,
            })
            .await;
        match answer {
            Err(CommandError::NotFound) if self.inner.cold_tier => {
                let cold = self.ended_order(order).await?;
                Err(CommandError::InvalidTransition(format!(
                    "the order is {} and archived (engine.hot_retention_s after it ended): it takes no more refunds",
                    cold.order.status.as_str()
                )))
            }
            Err(CommandError::Cold(ColdAnswer::Refund(id))) => {
                let cold = self.ended_order(order).await?;
                cold.order
                    .refunds
                    .into_iter()
                    .find(|r| r.id == id)
                    .ok_or(CommandError::NotFound)
            }
            other => other,
        }
    }

    /// Sales of the orders placed in `[from_us, to_us)`, from every shard's counters.
    pub async fn sales_summary(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> Result<SalesSummary, CommandError> {
        let mut total = SalesSummary::default();
        for shard in 0..self.inner.shard_count {
            let mut part = self
                .call(shard, |reply| ClientCmd::Sales {
                    from_us,
                    to_us,
                    reply,
                })
                .await?;
            if self.inner.cold_tier {
                // The partial hours walk hot orders only: add the cold ones the shard had
                // moved by the seq it counted at (later ones it still counted as hot).
                let as_of = part.as_of_seq;
                for (from, to) in crate::state::ShardData::walked_ranges(from_us, to_us) {
                    let mut after = None;
                    loop {
                        let page = self
                            .cold(move |storage| {
                                crate::cold::placed_between(storage, shard, from, to, after, 1000)
                            })
                            .await?;
                        for cold in &page {
                            if cold.archived_seq <= as_of {
                                crate::state::count_walked(&mut part, &cold.order);
                            }
                        }
                        match page.last() {
                            Some(last) if page.len() == 1000 => {
                                after = Some((last.order.created_at_us, last.order.id));
                            }
                            _ => break,
                        }
                    }
                }
            }
            total.merge(part);
        }
        Ok(total)
    }

    /// One page of one shard's orders placed in `[from_us, to_us)`, in placement order, after
    /// `after` (the last order of the previous page). For streaming exports shard by shard.
    pub async fn orders_placed_between(
        &self,
        shard: u16,
        from_us: i64,
        to_us: i64,
        after: Option<(i64, OrderId)>,
        limit: usize,
    ) -> Result<Vec<OrderView>, CommandError> {
        if shard >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let limit = limit.clamp(1, 10_000);
        let mut page = self
            .call(shard, |reply| ClientCmd::OrdersBetween {
                from_us,
                to_us,
                after,
                limit,
                reply,
            })
            .await?;
        if self.inner.cold_tier {
            // The hot and the cold orders of the shard, merged in placement order.
            page.extend(
                self.cold(move |storage| {
                    crate::cold::placed_between(storage, shard, from_us, to_us, after, limit)
                })
                .await?
                .into_iter()
                .map(|cold| cold.order),
            );
            page.sort_unstable_by_key(|o| (o.created_at_us, o.id));
            page.dedup_by_key(|o| o.id);
            page.truncate(limit);
        }
        Ok(page)
    }

    /// Re-seals stored personal data on every shard: each value for which `reseal` answers
    /// `Some` is replaced. When anything changed, each changed shard writes a snapshot and
    /// deletes every older snapshot and log batch, and those two families are compacted, so
    /// the old values leave the files on disk. Only they: the other families hold no value a
    /// reseal replaced, and compacting the cold tier too made the first start of an
    /// upgraded 20,000,000-order store take 40-61 s. Returns how many records changed.
    pub async fn reseal_personal_data(&self, reseal: ResealFn) -> Result<u64, CommandError> {
        let mut changed = 0;
        for shard in 0..self.inner.shard_count {
            let reseal = reseal.clone();
            changed += self
                .call(shard, |reply| ClientCmd::Reseal { reseal, reply })
                .await?;
        }
        if changed > 0 {
            let storage = self.inner.storage.clone();
            let (tx, rx) = oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(storage.compact(&[Family::Log, Family::Snap]));
            });
            rx.await
                .map_err(|_| CommandError::Unavailable("compaction thread died".into()))?
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        }
        Ok(changed)
    }

    /// Takes a snapshot of one shard now; returns its sequence number.
    pub async fn snapshot_shard(&self, shard: u16) -> Result<SnapshotTaken, CommandError> {
        self.call(shard, |reply| ClientCmd::Snapshot { reply })
            .await
    }

    /// The canonical digest of one shard's whole state.
    pub async fn state_digest(&self, shard: u16) -> Result<u64, CommandError> {
        self.call(shard, |reply| ClientCmd::StateDigest { reply })
            .await
    }

    pub async fn shards(&self) -> Vec<ShardStatus> {
        self.inner
            .slots
            .iter()
            .enumerate()
            .map(|(id, slot)| {
                let g = &slot.gauges;
                let enqueued = g.enqueued.load(Ordering::Relaxed);
                let handled = g.handled.load(Ordering::Relaxed);
                ShardStatus {
                    id: id as u16,
                    state: match slot.state.load(Ordering::SeqCst) {
                        RUNNING => ShardState::Running,
                        RESTARTING => ShardState::Restarting,
                        _ => ShardState::Failed,
                    },
                    restarts: slot.restarts.load(Ordering::Relaxed),
                    mailbox_depth: enqueued.saturating_sub(handled),
                    inbox_orders: slot.inbox.queued_orders() as u64,
                    last_seq: g.last_seq.load(Ordering::Relaxed),
                    orders: g.orders.load(Ordering::Relaxed),
                    skus: g.skus.load(Ordering::Relaxed),
                    customers: g.customers.load(Ordering::Relaxed),
                    digest: g.log_digest.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Rebuilds one shard from storage on a fresh arbiter, on request. A running shard first
    /// flushes what it applied; a failed one (left failed past its restart intensity, or whose
    /// rebuild failed) is brought back and its restart window cleared. Other shards keep
    /// serving. Written as a `restart` incident.
    pub async fn restart_shard(&self, shard: u16) -> Result<(), CommandError> {
        let slot = self
            .inner
            .slots
            .get(shard as usize)
            .ok_or(CommandError::NotFound)?;
        let was_running = if slot
            .state
            .compare_exchange(RUNNING, RESTARTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            true
        } else if slot
            .state
            .compare_exchange(FAILED, RESTARTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            false
        } else {
            return Err(CommandError::InvalidTransition(format!(
                "shard {shard} is already restarting"
            )));
        };
        let at_us = crate::clock::now_us();
        let how = if was_running {
            Rebuild::Requested
        } else {
            Rebuild::AfterFault
        };
        let elapsed = self.rebuild(shard, how).await?;
        slot.auto_restarts.clear();
        let cleared = slot.failure.lock().expect("failure slot").take();
        let detail = match cleared {
            Some(reason) => format!("restart of the failed shard requested ({reason})"),
            None => "restart requested".to_string(),
        };
        if let Err(error) = self.inner.incidents.record_recovered(
            at_us,
            &format!("shard/{shard}"),
            "restart",
            detail,
            format!("rebuilt from storage in {} ms", elapsed.as_millis()),
        ) {
            tracing::error!(message = "Could not record an incident.", %error);
        }
        Ok(())
    }

    /// After a fault: rebuilds the shard unless it has been restarted `max_restarts` times
    /// within `window_s`, in which case it is left failed and the supervisor escalates.
    pub(crate) async fn auto_restart(&self, shard: u16, kind: &str, detail: String) {
        let inner = &self.inner;
        let slot = &inner.slots[shard as usize];
        if slot
            .state
            .compare_exchange(RUNNING, RESTARTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return; // being restarted already, or failed
        }
        let component = format!("shard/{shard}");
        let tunables = &inner.settings.tunables;
        let window = Duration::from_secs(tunables.restart_window_s());
        let max_restarts = tunables.max_restarts();
        let recent = slot.auto_restarts.recent(Instant::now(), window);
        if recent >= max_restarts as usize {
            let reason = format!(
                "restart intensity exceeded: {recent} restarts within {} s (supervisor.max_restarts = {max_restarts}), then {kind}",
                window.as_secs(),
            );
            // Incidents first, then the state: whoever sees the shard failed (`/readyz`,
            // `GET /v1/ops/shards`) finds the escalation incident already written.
            self.record(
                &component,
                kind,
                detail,
                "not restarted: restart intensity exceeded",
            );
            self.escalate(shard, reason.clone());
            self.fail(shard, reason);
            return;
        }
        let incident = inner
            .incidents
            .record(
                &component,
                kind,
                detail,
                "shard rebuilt from storage on a fresh arbiter",
            )
            .map_err(|error| tracing::error!(message = "Could not record an incident.", %error))
            .ok();
        match self.rebuild(shard, Rebuild::AfterFault).await {
            Ok(elapsed) => {
                slot.auto_restarts.record(Instant::now());
                if let Some(incident) = incident {
                    if let Err(error) = inner.incidents.recovered(incident.id) {
                        tracing::error!(message = "Could not close an incident.", %error);
                    }
                }
                tracing::warn!(
                    message = "Shard healed: rebuilt from storage after a fault.",
                    shard,
                    kind,
                    elapsed_ms = elapsed.as_millis() as u64
                );
            }
            Err(error) => {
                self.escalate(shard, format!("rebuild after {kind} failed: {error}"));
            }
        }
    }

    /// After a write of the shard's batch failed: rebuilds it from storage without counting
    /// towards the restart intensity (storage, not the shard, failed). Written as an incident.
    pub(crate) async fn restart_after_storage_fault(&self, shard: u16, detail: String) {
        let slot = &self.inner.slots[shard as usize];
        if slot
            .state
            .compare_exchange(RUNNING, RESTARTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return; // being restarted already, or failed
        }
        let at_us = crate::clock::now_us();
        match self.rebuild(shard, Rebuild::AfterFault).await {
            Ok(elapsed) => {
                if let Err(error) = self.inner.incidents.record_recovered(
                    at_us,
                    &format!("shard/{shard}"),
                    "write_failed",
                    detail,
                    format!(
                        "shard rebuilt from storage in {} ms; nothing unwritten was acknowledged",
                        elapsed.as_millis()
                    ),
                ) {
                    tracing::warn!(message = "Could not record an incident.", %error);
                }
            }
            Err(error) => {
                self.escalate(
                    shard,
                    format!("rebuild after a failed write failed: {error}"),
                );
            }
        }
    }

    fn record(&self, component: &str, kind: &str, detail: String, action: &str) {
        if let Err(error) = self.inner.incidents.record(component, kind, detail, action) {
            tracing::error!(message = "Could not record an incident.", %error);
        }
    }

    /// Leaves a shard failed: its actor retired, requests refused with the reason.
    fn fail(&self, shard: u16, reason: String) {
        let slot = &self.inner.slots[shard as usize];
        self.retire(shard);
        tracing::error!(message = "Shard failed.", shard, %reason);
        *slot.failure.lock().expect("failure slot") = Some(reason);
        slot.state.store(FAILED, Ordering::SeqCst);
    }

    /// Writes the `escalation` incident of a shard left failed and signals
    /// [`Engine::escalation`].
    fn escalate(&self, shard: u16, reason: String) {
        self.record(
            &format!("shard/{shard}"),
            "escalation",
            reason.clone(),
            "shard left failed; /readyz answers 503; the process exits if supervisor.exit_on_escalation is set",
        );
        let reason = format!("shard {shard}: {reason}");
        tracing::error!(message = "Supervisor escalates.", %reason);
        self.inner.escalation.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Ends the life of a shard's current actor: its generation moves on (the log writer
    /// refuses whatever the old actor still sends, the old actor stops at its next message,
    /// and callers waiting on it get `unavailable` at once) and its arbiter is told to stop.
    /// A stuck thread cannot be killed; it is left to finish and then exits.
    fn retire(&self, shard: u16) {
        let slot = &self.inner.slots[shard as usize];
        let generation =
            self.inner.writer_stats.generations[shard as usize].fetch_add(1, Ordering::SeqCst) + 1;
        slot.generation.send_replace(generation);
        if let Some(old) = slot.arbiter.lock().expect("arbiter slot").take() {
            old.stop();
        }
    }

    /// Replaces a shard (state `RESTARTING`, set by the caller) with one rebuilt from storage.
    async fn rebuild(&self, shard: u16, how: Rebuild) -> Result<Duration, CommandError> {
        let inner = &self.inner;
        let slot = &inner.slots[shard as usize];
        let started = Instant::now();
        if let Rebuild::Requested = how {
            let (done, stopped) = oneshot::channel();
            inner.router.send(shard, ShardMsg::Stop { done });
            // A stuck shard never answers: past the heartbeat timeout it is replaced the way
            // the supervisor replaces it (whatever it had not written was never acknowledged).
            let patience = Duration::from_millis(inner.supervisor_config.heartbeat_timeout_ms);
            if tokio::time::timeout(patience, stopped).await.is_err() {
                tracing::warn!(
                    message = "Shard did not stop in time for its restart; replacing it.",
                    shard,
                    timeout_ms = patience.as_millis() as u64
                );
            }
        }
        self.retire(shard);
        // Everything the old actor handed the writer is written (or refused) once this
        // barrier is through, so storage holds exactly what was acknowledged.
        let (done, barrier) = oneshot::channel();
        let sent = inner.writer_sender.send(WriterMsg::Raw {
            writes: Vec::new(),
            guard: None,
            done: Box::new(move |_| {
                let _ = done.send(());
            }),
        });
        if sent.is_ok() {
            let _ = barrier.await;
        }
        let storage = inner.storage.clone();
        let count = inner.shard_count;
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(recover_shard(storage.as_ref(), shard, count));
        });
        let recovered = match rx.await {
            Ok(Ok(recovered)) => recovered,
            Ok(Err(error)) => {
                let reason = format!("could not be rebuilt from storage: {error}");
                self.fail(shard, reason.clone());
                return Err(CommandError::Unavailable(format!("shard {shard} {reason}")));
            }
            Err(_) => {
                self.fail(shard, "the rebuild thread died".into());
                return Err(CommandError::Unavailable(
                    "shard rebuild thread died".into(),
                ));
            }
        };
        let generation = inner.writer_stats.generations[shard as usize].load(Ordering::SeqCst);
        let (arbiter, addr) = self.spawn_shard(shard, recovered, generation);
        inner.router.set(shard, addr);
        *slot.arbiter.lock().expect("arbiter slot") = Some(arbiter);
        // Requests queued in the old mailbox were answered `unavailable`; reset the depth.
        let gauges = &slot.gauges;
        gauges
            .enqueued
            .store(gauges.handled.load(Ordering::Relaxed), Ordering::Relaxed);
        gauges.heartbeat_seen.store(
            gauges.heartbeat_sent.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        inner.router.send(shard, ShardMsg::Recover);
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        slot.state.store(RUNNING, Ordering::SeqCst);
        tracing::info!(
            message = "Shard rebuilt from storage.",
            shard,
            generation,
            elapsed_ms = started.elapsed().as_millis() as u64
        );
        Ok(started.elapsed())
    }

    /// The generation of a shard's current actor.
    pub(crate) fn generation(&self, shard: u16) -> u64 {
        self.inner.writer_stats.generations[shard as usize].load(Ordering::SeqCst)
    }

    pub(crate) fn is_running(&self, shard: u16) -> bool {
        self.inner.slots[shard as usize]
            .state
            .load(Ordering::SeqCst)
            == RUNNING
    }

    /// Heartbeats sent to a shard and the last one it answered.
    pub(crate) fn heartbeats(&self, shard: u16) -> (u64, u64) {
        let g = &self.inner.slots[shard as usize].gauges;
        (
            g.heartbeat_sent.load(Ordering::SeqCst),
            g.heartbeat_seen.load(Ordering::SeqCst),
        )
    }

    pub(crate) fn send_heartbeat(&self, shard: u16, n: u64) {
        self.inner.slots[shard as usize]
            .gauges
            .heartbeat_sent
            .store(n, Ordering::SeqCst);
        self.inner.router.send(shard, ShardMsg::Heartbeat { n });
    }

    pub(crate) fn mailbox_depth(&self, shard: u16) -> u64 {
        let g = &self.inner.slots[shard as usize].gauges;
        g.enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(g.handled.load(Ordering::Relaxed))
    }

    /// `Ok` when every shard runs and storage accepts writes; else the reasons.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        for (id, slot) in self.inner.slots.iter().enumerate() {
            match slot.state.load(Ordering::SeqCst) {
                RUNNING => {}
                RESTARTING => reasons.push(format!("shard {id} is restarting")),
                _ => {
                    let reason = slot.failure.lock().expect("failure slot").clone();
                    reasons.push(format!(
                        "shard {id} failed: {}",
                        reason.as_deref().unwrap_or("stopped")
                    ))
                }
            }
        }
        if self.storage_writes_failing() {
            reasons.push("storage writes are failing".to_string());
        }
        if self.disk_low() {
            reasons.push(
                "the disk of the data directory is nearly full: writes are refused".to_string(),
            );
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// True while the log writer's last write failed ("storage writes are failing" in
    /// [`Engine::readiness`]).
    pub fn storage_writes_failing(&self) -> bool {
        self.inner.writer_stats.failed.load(Ordering::SeqCst)
    }

    /// True while writes are refused at admission: the disk is nearly full, or storage
    /// refuses writes.
    pub fn writes_refused(&self) -> bool {
        self.disk_low() || self.storage_writes_failing()
    }

    /// True while the disk guard finds less free space than `storage.min_free_bytes`.
    pub fn disk_low(&self) -> bool {
        self.inner.writer_stats.disk_low.load(Ordering::SeqCst)
    }

    pub fn log_counters(&self) -> LogCounters {
        let s = &self.inner.writer_stats;
        LogCounters {
            syncs: s.syncs.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            notices: s.notices.load(Ordering::Relaxed),
            notice_bytes: s.notice_bytes.load(Ordering::Relaxed),
            write_failures: s.failures.load(Ordering::Relaxed),
        }
    }

    /// Flushes and stops every shard, then the log writer; storage closes when the last
    /// handle drops.
    pub async fn shutdown(&self) {
        if let Some(supervisor) = self
            .inner
            .supervisor
            .lock()
            .expect("supervisor slot")
            .take()
        {
            supervisor.stop();
        }
        for (shard, slot) in self.inner.slots.iter().enumerate() {
            if slot.state.load(Ordering::SeqCst) == RUNNING {
                let (done, stopped) = oneshot::channel();
                self.inner
                    .router
                    .send(shard as u16, ShardMsg::Stop { done });
                // A stuck shard never answers; what it holds was never acknowledged.
                let patience = self.inner.supervisor_config.heartbeat_timeout_ms.max(1000);
                if tokio::time::timeout(Duration::from_millis(patience), stopped)
                    .await
                    .is_err()
                {
                    tracing::error!(message = "Shard did not stop in time; leaving it.", shard);
                }
                slot.state.store(FAILED, Ordering::SeqCst);
            }
            if let Some(arbiter) = slot.arbiter.lock().expect("arbiter slot").take() {
                arbiter.stop();
            }
        }
        if let Some(mut writer) = self.inner.writer.lock().expect("writer slot").take() {
            writer.stop();
            // The next start then replays no write-ahead log (restart time stays flat).
            if let Err(error) = self.inner.storage.flush_memtables() {
                tracing::warn!(message = "Could not flush memory tables at stop; the next start replays the write-ahead log.", %error);
            }
        }
        tracing::info!(message = "Engine stopped; every acknowledged write is durable.");
    }
}

/// Answers `error` for each order at `indexes` of a [`Engine::place_orders`] call.
fn fail(
    outcomes: &mut [Option<Result<OrderView, CommandError>>],
    indexes: Vec<usize>,
    error: CommandError,
) {
    for index in indexes {
        outcomes[index] = Some(Err(error.clone()));
    }
}

//! The engine handle: opens storage, recovers shards, starts their actors, routes commands,
//! restarts single shards from storage, and shuts down cleanly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::domain::{
    CommandError, CustomerId, CustomerView, NewCustomer, NewShipment, OrderCursor, OrderFilter,
    OrderId, OrderPage, OrderView, PlaceOrder, SalesSummary, ShardState, ShardStatus, ShipmentId,
    ShipmentStatus, ShipmentView, SnapshotTaken, StockView,
};
use crate::event::{batch_decode, DecodeError};
use crate::log::{Durability, LogWriter, WriterMsg, WriterStats};
use crate::shard::{
    ClientCmd, Reply, ResealFn, Router, Shard, ShardGauges, ShardMsg, ShardSettings,
};
use crate::state::{shard_of_key, shard_of_sku, ShardData, Snapshot};
use crate::storage::rocks::RocksStorage;
use crate::storage::{parse_shard_key, shard_key, Family, Storage, StorageError, Write};

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
            snapshot_interval_events: 500_000,
            idempotency_retention_s: 86_400,
            pending_retry_ms: 500,
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

const SHARD_COUNT_KEY: &[u8] = b"engine/shard_count";

/// A shard's state as rebuilt from storage.
pub struct Recovered {
    pub data: ShardData,
    pub log_digest: u64,
    pub snapshot_seq: u64,
    pub replayed_events: u64,
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
            match batch_decode(value) {
                Ok(events) => {
                    for event in &events {
                        data.apply(event);
                    }
                    replayed += events.len() as u64;
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
    })
}

struct ShardSlot {
    state: AtomicU8,
    restarts: AtomicU64,
    gauges: Arc<ShardGauges>,
    arbiter: Mutex<Option<Arbiter>>,
}

const RUNNING: u8 = 0;
const RESTARTING: u8 = 1;
const FAILED: u8 = 2;

struct Inner {
    storage: Arc<dyn Storage>,
    router: Arc<Router>,
    writer: Mutex<Option<LogWriter>>,
    writer_sender: crossbeam_channel::Sender<WriterMsg>,
    writer_stats: Arc<WriterStats>,
    slots: Vec<ShardSlot>,
    settings: ShardSettings,
    shard_count: u16,
    next_customer_shard: AtomicU64,
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
    pub bytes: u64,
}

impl Engine {
    /// Opens RocksDB under `config.data_dir` and recovers every shard. Must be called inside a
    /// running actix System.
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StorageError::Io(format!("create {}: {e}", config.data_dir.display())))?;
        let storage = RocksStorage::open(&config.data_dir.join("db"))?;
        Engine::start(config, Arc::new(storage))
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
        let writer = LogWriter::start(
            storage.clone(),
            config.durability,
            config.flush_interval_ms,
            recovered.iter().map(|r| r.data.last_seq).collect(),
        );
        let settings = ShardSettings {
            mailbox_capacity: config.mailbox_capacity.max(16),
            batch_events_max: config.batch_events_max.max(1),
            snapshot_interval_events: config.snapshot_interval_events.max(1),
            idempotency_retention_s: config.idempotency_retention_s,
            pending_retry_ms: config.pending_retry_ms.max(1),
        };
        let slots: Vec<ShardSlot> = (0..shard_count)
            .map(|_| ShardSlot {
                state: AtomicU8::new(RUNNING),
                restarts: AtomicU64::new(0),
                gauges: Arc::new(ShardGauges::default()),
                arbiter: Mutex::new(None),
            })
            .collect();
        // The router is filled before any message that needs it (`Recover`) is sent.
        let router = Arc::new(Router::new(Vec::with_capacity(shard_count as usize)));
        for (index, rec) in recovered.into_iter().enumerate() {
            let arbiter = Arbiter::new();
            let sender = writer.sender.clone();
            let stats = writer.stats.clone();
            let gauges = slots[index].gauges.clone();
            let settings = settings.clone();
            let shard_router = router.clone();
            let addr = Shard::start_in_arbiter(&arbiter.handle(), move |_ctx| {
                Shard::new(
                    rec.data,
                    rec.log_digest,
                    rec.snapshot_seq,
                    settings,
                    sender,
                    stats,
                    shard_router,
                    gauges,
                )
            });
            router.push(addr);
            *slots[index].arbiter.lock().expect("arbiter slot") = Some(arbiter);
        }
        for shard in 0..shard_count {
            router.send(shard, ShardMsg::Recover);
        }
        let writer_sender = writer.sender.clone();
        let writer_stats = writer.stats.clone();
        Ok(Engine {
            inner: Arc::new(Inner {
                storage,
                router,
                writer: Mutex::new(Some(writer)),
                writer_sender,
                writer_stats,
                slots,
                settings,
                shard_count,
                next_customer_shard: AtomicU64::new(0),
            }),
        })
    }

    /// The storage the engine writes, for the gateway's own column families (audit trail,
    /// wrapped data keys). Writes there must not touch the `log` and `snap` families.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.inner.storage.clone()
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
        let (reply, answer) = oneshot::channel();
        self.call_untracked(shard, ShardMsg::Client(make(reply)))?;
        answer.await.map_err(|_| {
            CommandError::Unavailable(format!("shard {shard} restarted during the request"))
        })?
    }

    pub async fn adjust_stock(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        _actor: &str,
    ) -> Result<StockView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let (sku, reason) = (sku.to_string(), reason.to_string());
        self.call(shard, |reply| ClientCmd::AdjustStock {
            sku,
            delta,
            reason,
            reply,
        })
        .await
    }

    pub async fn stock(&self, sku: &str) -> Result<StockView, CommandError> {
        let shard = shard_of_sku(sku, self.inner.shard_count);
        let sku = sku.to_string();
        self.call(shard, |reply| ClientCmd::GetStock { sku, reply })
            .await
    }

    pub async fn create_customer(
        &self,
        customer: NewCustomer,
    ) -> Result<CustomerView, CommandError> {
        let shard = (self
            .inner
            .next_customer_shard
            .fetch_add(1, Ordering::Relaxed)
            % self.inner.shard_count as u64) as u16;
        self.call(shard, |reply| ClientCmd::CreateCustomer { customer, reply })
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
        self.call(order_shard, |reply| ClientCmd::Place { place, reply })
            .await
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

    /// Admits one client message into a shard's mailbox, or refuses it at once.
    ///
    /// The bound is enforced here, not by actix: actix refuses `try_send` only for a sender
    /// that is itself parked, and every request sends through a fresh `Addr` clone (a new
    /// sender with a slot of its own), so its capacity alone bounds nothing. Admission counts
    /// messages in (`enqueued`) against messages the shard has taken (`handled`).
    fn call_untracked(&self, shard: u16, msg: ShardMsg) -> Result<(), CommandError> {
        let slot = &self.inner.slots[shard as usize];
        if slot.state.load(Ordering::SeqCst) != RUNNING {
            return Err(CommandError::Unavailable(format!(
                "shard {shard} is restarting"
            )));
        }
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

    pub async fn order(&self, id: OrderId) -> Result<OrderView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        self.call(id.shard(), |reply| ClientCmd::GetOrder { id, reply })
            .await
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
        }
        merged.sort_unstable_by_key(|o| std::cmp::Reverse((o.created_at_us, o.id)));
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
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        let actor = actor.to_string();
        self.call(id.shard(), |reply| ClientCmd::Cancel {
            id,
            reason,
            actor,
            reply,
        })
        .await
    }

    /// Ships units of an order (on the order's shard).
    pub async fn ship(&self, shipment: NewShipment) -> Result<ShipmentView, CommandError> {
        let shard = shipment.order_id.shard();
        if shard >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        self.call(shard, |reply| ClientCmd::Ship { shipment, reply })
            .await
    }

    /// Records a carrier event on a shipment.
    pub async fn shipment_event(
        &self,
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<String>,
    ) -> Result<ShipmentView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        self.call(id.shard(), |reply| ClientCmd::ShipmentEvent {
            id,
            status,
            note,
            reply,
        })
        .await
    }

    pub async fn shipment(&self, id: ShipmentId) -> Result<ShipmentView, CommandError> {
        if id.shard() >= self.inner.shard_count {
            return Err(CommandError::NotFound);
        }
        self.call(id.shard(), |reply| ClientCmd::GetShipment { id, reply })
            .await
    }

    /// Sales of the orders placed in `[from_us, to_us)`, from every shard's counters.
    pub async fn sales_summary(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> Result<SalesSummary, CommandError> {
        let mut total = SalesSummary::default();
        for shard in 0..self.inner.shard_count {
            let part = self
                .call(shard, |reply| ClientCmd::Sales {
                    from_us,
                    to_us,
                    reply,
                })
                .await?;
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
        self.call(shard, |reply| ClientCmd::OrdersBetween {
            from_us,
            to_us,
            after,
            limit: limit.clamp(1, 10_000),
            reply,
        })
        .await
    }

    /// Re-seals stored personal data on every shard: each value for which `reseal` answers
    /// `Some` is replaced. When anything changed, each changed shard writes a snapshot and
    /// deletes every older snapshot and log batch, and storage is compacted, so the old
    /// values leave the files on disk. Returns how many records changed.
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
                let _ = tx.send(storage.compact());
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
                    last_seq: g.last_seq.load(Ordering::Relaxed),
                    orders: g.orders.load(Ordering::Relaxed),
                    skus: g.skus.load(Ordering::Relaxed),
                    customers: g.customers.load(Ordering::Relaxed),
                    digest: g.log_digest.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Stops one shard (flushing what it applied), rebuilds it from storage on a fresh
    /// arbiter, and lets it finish any placement it had in flight. Other shards keep serving.
    pub async fn restart_shard(&self, shard: u16) -> Result<(), CommandError> {
        let inner = &self.inner;
        let slot = inner
            .slots
            .get(shard as usize)
            .ok_or(CommandError::NotFound)?;
        if slot
            .state
            .compare_exchange(RUNNING, RESTARTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(CommandError::InvalidTransition(format!(
                "shard {shard} is already restarting"
            )));
        }
        let started = std::time::Instant::now();
        let (done, stopped) = oneshot::channel();
        inner.router.send(shard, ShardMsg::Stop { done });
        let _ = stopped.await;
        if let Some(old) = slot.arbiter.lock().expect("arbiter slot").take() {
            old.stop();
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
                tracing::error!(message = "Shard rebuild failed.", shard, %error);
                slot.state.store(FAILED, Ordering::SeqCst);
                return Err(CommandError::Unavailable(format!(
                    "shard {shard} could not be rebuilt: {error}"
                )));
            }
            Err(_) => {
                slot.state.store(FAILED, Ordering::SeqCst);
                return Err(CommandError::Unavailable(
                    "shard rebuild thread died".into(),
                ));
            }
        };
        let arbiter = Arbiter::new();
        let sender = inner.writer_sender.clone();
        let stats = inner.writer_stats.clone();
        let router = inner.router.clone();
        let gauges = slot.gauges.clone();
        let settings = inner.settings.clone();
        let addr = Shard::start_in_arbiter(&arbiter.handle(), move |_ctx| {
            Shard::new(
                recovered.data,
                recovered.log_digest,
                recovered.snapshot_seq,
                settings,
                sender,
                stats,
                router,
                gauges,
            )
        });
        inner.router.set(shard, addr);
        *slot.arbiter.lock().expect("arbiter slot") = Some(arbiter);
        // Requests queued in the old mailbox were answered `unavailable`; reset the depth.
        let handled = slot.gauges.handled.load(Ordering::Relaxed);
        slot.gauges.enqueued.store(handled, Ordering::Relaxed);
        inner.router.send(shard, ShardMsg::Recover);
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        slot.state.store(RUNNING, Ordering::SeqCst);
        tracing::info!(
            message = "Shard restarted from storage.",
            shard,
            elapsed_ms = started.elapsed().as_millis() as u64
        );
        Ok(())
    }

    /// `Ok` when every shard runs and storage accepts writes; else the reasons.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        for (id, slot) in self.inner.slots.iter().enumerate() {
            match slot.state.load(Ordering::SeqCst) {
                RUNNING => {}
                RESTARTING => reasons.push(format!("shard {id} is restarting")),
                _ => reasons.push(format!("shard {id} failed")),
            }
        }
        if self.inner.writer_stats.failed.load(Ordering::SeqCst) {
            reasons.push("storage writes are failing".to_string());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    pub fn log_counters(&self) -> LogCounters {
        let s = &self.inner.writer_stats;
        LogCounters {
            syncs: s.syncs.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
        }
    }

    /// Flushes and stops every shard, then the log writer; storage closes when the last
    /// handle drops.
    pub async fn shutdown(&self) {
        for (shard, slot) in self.inner.slots.iter().enumerate() {
            if slot.state.load(Ordering::SeqCst) == RUNNING {
                let (done, stopped) = oneshot::channel();
                self.inner
                    .router
                    .send(shard as u16, ShardMsg::Stop { done });
                let _ = stopped.await;
                slot.state.store(FAILED, Ordering::SeqCst);
            }
            if let Some(arbiter) = slot.arbiter.lock().expect("arbiter slot").take() {
                arbiter.stop();
            }
        }
        if let Some(mut writer) = self.inner.writer.lock().expect("writer slot").take() {
            writer.stop();
        }
        tracing::info!(message = "Engine stopped; every acknowledged write is durable.");
    }
}

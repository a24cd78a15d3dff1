//! The deterministic simulator: one seeded PRNG drives every shard's state machine
//! ([`Shard::step`]), the log writer's group commit ([`commit_group`]), storage, a supervisor
//! and clients in one thread, injects faults, and checks the engine's invariants after every
//! step and at quiescence. A failing seed replays exactly (`make simulate SEED=… STEPS=…`).
//!
//! What is real: the shard code, the group commit and its fault handling, recovery from
//! storage ([`recover_shard`]), the quarantine, the events and their encoding. What is
//! simulated: time ([`SimClock`]), the transport between shards (one FIFO mailbox per shard,
//! as actix's; which mailbox is served next is the PRNG's choice, so deliveries between
//! different shards are delayed and interleaved arbitrarily), threads (one step at a time), the
//! supervisor (rebuild on a fault, replace a shard that misses its heartbeat), the storage
//! medium (an in-memory store behind [`FaultyStorage`]: every write that succeeds is synced).
//!
//! Faults: write errors (one batch, a run of batches), a disk full for a while, a crash of the
//! whole node (everything not written is lost, every shard rebuilt from storage), shard panics
//! (the shard is poisoned mid-flight), hangs (a shard not served for a while, replaced past its
//! heartbeat timeout), a stalled writer (slow fsyncs), arbitrary delays between shards.
//!
//! [`Regression`] switches put back, one at a time, the faults issue 14 fixed, so tests prove
//! the simulator sees each of them.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::audit::{AuditSeq, ShardChain};
use crate::clock::Clock;
use crate::domain::{
    CommandError, CustomerId, CustomerUpdate, CustomerView, Idempotency, NewCustomer, NewLine,
    NewRefund, NewReturn, NewShipment, OrderId, OrderStatus, OrderView, PlaceOrder, ReceiveLine,
    ReturnId, ReturnStatus, ReturnView, StockView,
};
use crate::engine::recover_shard;
use crate::inbox::{Inbox, PlaceOutcomes, Pushed, Submission};
use crate::log::{commit_group, probe, WriterMsg, WriterStats, WRITER_QUEUE_MAX};
use crate::shard::{
    BatchResults, ClientCmd, Shard, ShardGauges, ShardLink, ShardMsg, ShardSettings, Step,
    Transport,
};
use crate::state::{shard_of_key, shard_of_sku};
use crate::storage::faulty::FaultyStorage;
use crate::storage::memory::MemoryStorage;
use crate::storage::Storage;
use crate::supervisor::{Fault, Quarantine};
use crate::tunables::Tunables;

/// A fault issue 14 fixed, put back on purpose (test-only; per thread, so simulations running
/// side by side do not see each other's switches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regression {
    /// 1. A failed write does not stop the shard: it keeps what it applied.
    WriteFailureKeepsShard = 1,
    /// 2. `Reserve` retries leave before the order's intent is durable.
    ReserveBeforeDurable = 2,
    /// 2. Order ids are reused after a rebuild.
    IdsReused = 4,
    /// 2. Any hold under an order id stands for that order's reservation.
    HoldNotTiedToLines = 8,
    /// 3. A placement whose part never answers waits for ever.
    NoDeadlineAbort = 16,
    /// 4. `HoldCheck` is sent once, never again.
    HoldCheckOnce = 32,
    /// 6. A `PlaceBatch` reports the outcome of its last finisher for every order.
    BatchLastFinisherSpeaks = 64,
    /// Issue 19: a stock shard restocks a repeated `Restock` again (no ledger).
    RestockTwice = 128,
}

impl Regression {
    pub const ALL: [Regression; 8] = [
        Regression::WriteFailureKeepsShard,
        Regression::ReserveBeforeDurable,
        Regression::IdsReused,
        Regression::HoldNotTiedToLines,
        Regression::NoDeadlineAbort,
        Regression::HoldCheckOnce,
        Regression::BatchLastFinisherSpeaks,
        Regression::RestockTwice,
    ];
}

thread_local! {
    static REGRESSIONS: Cell<u32> = const { Cell::new(0) };
}

/// Whether `regression` is put back on this thread. Only test builds (feature `failpoints`)
/// have the switches; elsewhere this is the constant `false` and costs nothing on the shard's
/// paths.
#[inline(always)]
pub fn regressed(regression: Regression) -> bool {
    cfg!(feature = "failpoints") && REGRESSIONS.with(|r| r.get() & regression as u32 != 0)
}

/// Puts these regressions back on this thread (an empty slice: none). Without the
/// `failpoints` feature the switches are compiled out and this changes nothing.
pub fn set_regressions(regressions: &[Regression]) {
    let mask = regressions.iter().fold(0u32, |mask, r| mask | *r as u32);
    REGRESSIONS.with(|r| r.set(mask));
}

/// SplitMix64: small, fast and fully determined by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Simulated time: advanced only by the simulator.
pub struct SimClock {
    base: Instant,
    elapsed_us: AtomicI64,
}

/// Wall-clock time the simulation starts at (2026-01-01T00:00:00Z), so timestamps are
/// the same in every run of a seed.
const EPOCH_US: i64 = 1_767_225_600_000_000;

impl SimClock {
    fn new() -> SimClock {
        SimClock {
            base: Instant::now(),
            elapsed_us: AtomicI64::new(0),
        }
    }

    fn advance_us(&self, us: i64) {
        self.elapsed_us.fetch_add(us, Ordering::SeqCst);
    }

    fn elapsed_us(&self) -> i64 {
        self.elapsed_us.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn now_us(&self) -> i64 {
        EPOCH_US + self.elapsed_us()
    }
    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.elapsed_us() as u64)
    }
}

/// The transport: one FIFO mailbox per shard.
struct Net {
    mailboxes: Mutex<Vec<VecDeque<ShardMsg>>>,
}

impl Transport for Net {
    fn send(&self, shard: u16, msg: ShardMsg) {
        self.mailboxes.lock().expect("net")[shard as usize].push_back(msg);
    }
}

/// What the simulation runs with.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub steps: u64,
    pub shards: u16,
    /// Inject faults (write errors, full disk, crashes, panics, hangs, stalls).
    pub faults: bool,
    /// `async` durability: acknowledge after the write, sync every [`FLUSH_INTERVAL_MS`]; a
    /// crash is a power loss that drops what was not synced. With `false` (`sync`), every
    /// acknowledged write was synced and a crash may lose nothing.
    pub async_durability: bool,
}

impl SimConfig {
    pub fn new(seed: u64, steps: u64) -> SimConfig {
        SimConfig {
            seed,
            steps,
            shards: 3,
            faults: true,
            async_durability: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub steps: u64,
    pub calls: u64,
    pub confirmed: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub write_faults: u64,
    pub crashes: u64,
    pub panics: u64,
    pub hangs: u64,
    pub rebuilds: u64,
    pub quiescences: u64,
    /// Acknowledged placements and adjustments a crash took back (only in `async`, only
    /// acknowledged after the last sync before the crash).
    pub lost_in_window: u64,
    /// Orders in the cold tier at the end (moved out of memory, [`crate::cold`]).
    pub cold_orders: u64,
    /// Idempotency keys on disk at the end ([`crate::idem_tier`]).
    pub idem_keys_on_disk: u64,
    /// Returns acknowledged as opened, and as received, that the checks followed to the end.
    pub returns: u64,
    pub returns_received: u64,
    /// Returns restocked on a shard other than their order's (ledger entries at the end).
    pub restocked_elsewhere: u64,
}

/// A broken invariant: the seed and step replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub message: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation failed: seed {} step {}: {}\nreplay: make simulate SEED={} STEPS={}",
            self.seed,
            self.step,
            self.message,
            self.seed,
            self.step + 1
        )
    }
}

const SKUS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];
/// The stock locations of the simulation, with their priorities: `default` last, so that
/// placements split across `east` and `west` before they reach it.
const LOCATIONS: [(&str, u32); 3] = [("east", 1), ("west", 2), ("default", 5)];
/// Simulated milliseconds between ticks (`pending_retry_ms`).
const TICK_MS: i64 = 50;
/// The deadline of one request (`engine.request_timeout_ms`).
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// In `async` durability, the writer syncs this often (simulated time).
pub const FLUSH_INTERVAL_MS: i64 = 5;
/// Orders one shard's inbox of coalesced placements holds at most.
const INBOX_ORDERS_MAX: usize = 4096;
/// A shard that misses its heartbeat this long is replaced.
const HEARTBEAT_TIMEOUT_MS: i64 = 2_500;
/// Most messages one shard step hands the writer.
const WRITER_STEP_MAX: usize = 4;
/// The message of the panics the simulator injects; any other panic is a bug it found.
const INJECTED_PANIC: &str = "injected by the simulator";
/// Steps between quiescences (no new work or faults; everything settles; deep checks).
const QUIESCE_EVERY: u64 = 2_000;

enum Pending {
    Order(oneshot::Receiver<Result<OrderView, CommandError>>),
    /// A stock adjustment, with its Idempotency-Key.
    Adjust(
        oneshot::Receiver<Result<StockView, CommandError>>,
        Option<String>,
    ),
    Batch(oneshot::Receiver<Result<BatchResults, CommandError>>),
    /// Placements handed over through a shard's inbox (as the front doors coalesce them).
    Submitted(oneshot::Receiver<Result<PlaceOutcomes, CommandError>>),
    /// A change of a customer's contact data (the email sent), or its erasure (`None`).
    Customer(
        oneshot::Receiver<Result<CustomerView, CommandError>>,
        CustomerId,
        Option<String>,
    ),
    /// A return opened (`false`) or received (`true`).
    Return(oneshot::Receiver<Result<ReturnView, CommandError>>, bool),
    Other(Box<dyn FnMut() -> Option<bool>>),
}

/// The answer of a call that placed many orders, as order ids: `None` while it has not come,
/// `Some(None)` when none will (the call failed as a whole, or its reply was dropped).
#[allow(clippy::type_complexity)]
fn poll_many<T>(
    answer: &mut oneshot::Receiver<Result<Vec<Result<T, CommandError>>, CommandError>>,
    id: fn(T) -> OrderId,
) -> Option<Option<Vec<Result<OrderId, CommandError>>>> {
    match answer.try_recv() {
        Ok(Ok(outcomes)) => Some(Some(outcomes.into_iter().map(|o| o.map(id)).collect())),
        Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => Some(None),
        Err(oneshot::error::TryRecvError::Empty) => None,
    }
}

/// A call whose answer is only waited for (its content is checked elsewhere, if at all).
fn answered<T: 'static>(mut answer: oneshot::Receiver<Result<T, CommandError>>) -> Pending {
    Pending::Other(Box::new(move || match answer.try_recv() {
        Ok(result) => Some(result.is_ok()),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(_) => Some(false),
    }))
}

/// One placement as sent: its key, customer and lines.
type Request = (Option<String>, CustomerId, Vec<(String, u32)>);

/// A client call in flight.
struct Call {
    shard: u16,
    generation: u64,
    sent_us: i64,
    pending: Pending,
    /// For placements: the request (key, customer, lines) of each order (one for `Place`).
    requests: Vec<Request>,
}

struct SimShard {
    shard: Shard,
    /// Not served until this simulated time (a hang).
    hung_until_us: i64,
}

/// Everything acknowledged to a client, to check against.
#[derive(Default)]
struct Ledger {
    /// Order id → (customer, lines) as acknowledged.
    orders: HashMap<OrderId, (CustomerId, Vec<(String, u32)>)>,
    /// Idempotency key → the first definitive answer (`Some(id)` placed, `None` refused).
    keys: HashMap<String, Option<OrderId>>,
    /// Acknowledged orders, for cancels and shipments.
    confirmed: Vec<OrderId>,
    /// Adjustment key → the first stock it answered.
    adjusted: HashMap<String, StockView>,
    /// When each order, placement key and adjustment key was acknowledged, as the number of
    /// syncs done by then (`async`: what a crash may take back is what was acknowledged after
    /// the last sync).
    acked_order: HashMap<OrderId, u64>,
    acked_key: HashMap<String, u64>,
    acked_adjust: HashMap<String, u64>,
    /// Customers whose erasure was acknowledged, with the syncs done by then: erased for good.
    erased: HashMap<CustomerId, u64>,
    /// Customers an erasure was sent for (an update of one may be refused from then on).
    erasing: std::collections::HashSet<CustomerId>,
    /// Returns acknowledged as opened: their lines, and when (as `acked_order`).
    returns: BTreeMap<ReturnId, (Vec<(String, u32)>, u64)>,
    /// Returns acknowledged as received: when.
    received: BTreeMap<ReturnId, u64>,
    /// Orders a shipment was asked for (the returns' candidates).
    shipped: Vec<OrderId>,
}

struct World {
    config: SimConfig,
    rng: Rng,
    clock: Arc<SimClock>,
    net: Arc<Net>,
    storage: Arc<FaultyStorage>,
    /// The store under `storage`, which models power loss.
    memory: Arc<MemoryStorage>,
    /// Syncs done (`async`): the writer syncs every [`FLUSH_INTERVAL_MS`].
    syncs: u64,
    last_sync_us: i64,
    writer_tx: Sender<WriterMsg>,
    writer_rx: Receiver<WriterMsg>,
    stats: Arc<WriterStats>,
    faults_tx: tokio::sync::mpsc::Sender<Fault>,
    faults_rx: tokio::sync::mpsc::Receiver<Fault>,
    quarantine: Arc<Quarantine>,
    /// The global audit sequence (a crash rebuilds it from storage, as a start does).
    audit_seq: AuditSeq,
    /// Each shard's inbox of coalesced placements (a crash empties them: they are memory).
    inboxes: Vec<Arc<Inbox>>,
    gauges: Vec<Arc<ShardGauges>>,
    settings: ShardSettings,
    shards: Vec<Option<SimShard>>,
    /// Shards to rebuild once the writer has taken everything queued (the barrier).
    rebuild: Vec<u16>,
    customers: Vec<CustomerId>,
    calls: Vec<Call>,
    ledger: Ledger,
    report: SimReport,
    step: u64,
    next_tick_us: i64,
    /// Disk full until this time.
    full_until_us: Option<i64>,
    /// The writer takes nothing until this time (a slow fsync).
    writer_stalled_until_us: i64,
    last_probe_us: i64,
    keys_made: u64,
    /// Placements sent with a key, to retry.
    sent: Vec<(String, PlaceOrder)>,
    /// Adjustments sent (SKU, delta, key), to retry.
    adjusts: Vec<(&'static str, i64, Option<String>)>,
}

type Check = Result<(), String>;

/// Runs one simulation; `Err` names the seed, the step and the broken invariant.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = World::new(config.clone()).map_err(|message| SimFailure {
        seed: config.seed,
        step: 0,
        message,
    })?;
    let outcome = world.run();
    // Nothing of this run may outlive it: pending replies and continuations drop here.
    let step = world.step;
    let mut report = world.report.clone();
    report.returns = world.ledger.returns.len() as u64;
    report.returns_received = world.ledger.received.len() as u64;
    for shard in 0..config.shards {
        report.cold_orders += crate::cold::count(world.storage.as_ref(), shard).unwrap_or(0);
        if let Some(sim) = world.shards[shard as usize].as_ref() {
            report.restocked_elsewhere += sim.shard.data().restocked.len() as u64;
        }
        report.idem_keys_on_disk +=
            crate::idem_tier::count(world.storage.as_ref(), shard).unwrap_or(0);
    }
    drop(world);
    outcome.map(|()| report).map_err(|message| SimFailure {
        seed: config.seed,
        step,
        message,
    })
}

impl World {
    fn new(config: SimConfig) -> Result<World, String> {
        let memory = Arc::new(MemoryStorage::tracking_power_loss());
        let storage = Arc::new(FaultyStorage::new(memory.clone()));
        // Bounded as the server's queue is. There a full queue blocks the shard thread until
        // the writer takes a group; here, in one thread, the writer takes everything queued
        // before a shard is served when the queue is near full (`serve`).
        let (writer_tx, writer_rx) = crossbeam_channel::bounded(WRITER_QUEUE_MAX);
        let (faults_tx, faults_rx) = tokio::sync::mpsc::channel(100_000);
        let count = config.shards;
        let tunables = Arc::new(Tunables::new(64, 5, 1_000_000, 60));
        tunables.set_request_timeout_ms(REQUEST_TIMEOUT_MS);
        let settings = ShardSettings {
            mailbox_capacity: 100_000,
            tunables,
            snapshot_interval_events: 400,
            idempotency_retention_s: 86_400,
            // Keys leave memory a second after their use: retries meet them on disk, and in
            // the batch that moves them.
            idempotency_hot_s: 1,
            // Ended orders go cold a second after they end, a few per sweep: every crash,
            // rebuild and snapshot meets orders moving out of memory.
            cold: crate::shard::ColdSettings {
                hot_retention_s: 1,
                sweep_interval_ms: 4 * TICK_MS as u64,
                sweep_orders_max: 5,
            },
            pending_retry_ms: TICK_MS as u64,
            snapshot_encoding: crate::shard::SnapshotEncoding::Inline,
        };
        let quarantine =
            Arc::new(Quarantine::load(storage.as_ref()).map_err(|e| format!("quarantine: {e}"))?);
        let mut world = World {
            rng: Rng::new(config.seed),
            clock: Arc::new(SimClock::new()),
            net: Arc::new(Net {
                mailboxes: Mutex::new((0..count).map(|_| VecDeque::new()).collect()),
            }),
            storage,
            memory,
            syncs: 0,
            last_sync_us: 0,
            writer_tx,
            writer_rx,
            stats: Arc::new(WriterStats::new(vec![0; count as usize])),
            faults_tx,
            faults_rx,
            quarantine,
            audit_seq: AuditSeq::starting_after(0),
            inboxes: (0..config.shards)
                .map(|_| Arc::new(Inbox::new(INBOX_ORDERS_MAX)))
                .collect(),
            gauges: (0..count)
                .map(|_| Arc::new(ShardGauges::default()))
                .collect(),
            settings,
            shards: (0..count).map(|_| None).collect(),
            rebuild: Vec::new(),
            customers: Vec::new(),
            calls: Vec::new(),
            ledger: Ledger::default(),
            report: SimReport::default(),
            step: 0,
            next_tick_us: 0,
            full_until_us: None,
            writer_stalled_until_us: 0,
            last_probe_us: 0,
            keys_made: 0,
            sent: Vec::new(),
            adjusts: Vec::new(),
            config,
        };
        for shard in 0..count {
            world.start_shard(shard)?;
        }
        Ok(world)
    }

    fn run(&mut self) -> Check {
        self.setup()?;
        while self.step < self.config.steps {
            self.one_step()?;
            self.check_step()?;
            self.step += 1;
            self.report.steps = self.step;
            if self.step.is_multiple_of(QUIESCE_EVERY) {
                self.quiesce()?;
            }
        }
        self.quiesce()
    }

    /// Customers (one per shard) and stock, before the load.
    fn setup(&mut self) -> Check {
        for shard in 0..self.config.shards {
            let (reply, answer) = oneshot::channel();
            self.net.send(
                shard,
                ShardMsg::Client(ClientCmd::CreateCustomer {
                    id: None,
                    customer: NewCustomer {
                        name: format!("customer {shard}"),
                        email: format!("c{shard}@example.com"),
                        phone: None,
                        address: None,
                    },
                    actor: Some("key_sim".into()),
                    idempotency: None,
                    reply,
                }),
            );
            self.settle(5_000)?;
            let mut answer = answer;
            match answer.try_recv() {
                Ok(Ok(view)) => self.customers.push(view.id),
                other => return Err(format!("setup: customer not created: {other:?}")),
            }
        }
        // The locations, defined on every shard (as `Engine::set_location` does).
        for (id, priority) in LOCATIONS {
            for shard in 0..self.config.shards {
                let (reply, _answer) = oneshot::channel();
                self.net.send(
                    shard,
                    ShardMsg::Client(ClientCmd::SetLocation {
                        id: id.into(),
                        name: id.to_uppercase(),
                        priority,
                        locations_max: 8,
                        actor: "key_sim".into(),
                        audit: shard == 0,
                        reply,
                    }),
                );
            }
        }
        self.settle(5_000)?;
        // Each SKU's stock spread over the locations (20 units).
        for sku in SKUS {
            let shard = shard_of_sku(sku, self.config.shards);
            for (location, delta) in [("east", 6), ("west", 6), ("default", 8)] {
                let (reply, _answer) = oneshot::channel();
                self.net.send(
                    shard,
                    ShardMsg::Client(ClientCmd::AdjustStock {
                        sku: sku.into(),
                        location: location.into(),
                        delta,
                        reason: "setup".into(),
                        actor: "key_sim".into(),
                        idempotency: None,
                        reply,
                    }),
                );
            }
        }
        self.settle(5_000)?;
        // The customers the clients use must outlive a crash in `async` too (the simulator
        // keeps no record of customers to forget): the set-up ends with a sync, as the writer's
        // next periodic sync would make it.
        if self.config.async_durability {
            self.storage
                .sync()
                .map_err(|e| format!("setup: sync failed: {e}"))?;
            self.syncs += 1;
            self.last_sync_us = self.now_us();
        }
        Ok(())
    }

    /// Recovers a shard from storage and starts its state machine (a new generation).
    fn start_shard(&mut self, shard: u16) -> Check {
        let count = self.config.shards;
        let recovered = recover_shard(self.storage.as_ref(), shard, count)
            .map_err(|e| format!("shard {shard} cannot be rebuilt from storage: {e}"))?;
        let generation = self.stats.generations[shard as usize].load(Ordering::SeqCst);
        self.stats.durable_seq[shard as usize].fetch_max(recovered.data.last_seq, Ordering::SeqCst);
        let link = ShardLink {
            generation,
            faults: self.faults_tx.clone(),
            quarantine: self.quarantine.clone(),
            inbox: self.inboxes[shard as usize].clone(),
            storage: self.storage.clone(),
        };
        let state = Shard::new(
            recovered.data,
            recovered.log_digest,
            recovered.snapshot_seq,
            self.settings.clone(),
            self.writer_tx.clone(),
            self.stats.clone(),
            self.net.clone(),
            self.clock.clone(),
            self.gauges[shard as usize].clone(),
            link,
            ShardChain::new(shard, recovered.audit_tip, self.audit_seq.clone()),
        );
        self.shards[shard as usize] = Some(SimShard {
            shard: state,
            hung_until_us: 0,
        });
        // Messages sent to the old actor's mailbox died with it.
        self.net.mailboxes.lock().expect("net")[shard as usize].clear();
        self.net.send(shard, ShardMsg::Recover);
        Ok(())
    }

    /// Ends a shard's actor (its generation moves on) and rebuilds it once the writer has
    /// taken what is queued, as the engine does.
    fn replace(&mut self, shard: u16) {
        self.stats.generations[shard as usize].fetch_add(1, Ordering::SeqCst);
        if let Some(mut old) = self.shards[shard as usize].take() {
            old.shard.poison();
        }
        self.net.mailboxes.lock().expect("net")[shard as usize].clear();
        if !self.rebuild.contains(&shard) {
            self.rebuild.push(shard);
        }
    }

    fn now_us(&self) -> i64 {
        self.clock.elapsed_us()
    }

    fn one_step(&mut self) -> Check {
        self.clock.advance_us(self.rng.below(400) as i64);
        self.timers();
        let faults = self.config.faults;
        match self.rng.below(1000) {
            0..=549 => self.deliver(),
            550..=699 => self.write(false)?,
            700..=899 => self.client(),
            900..=994 => self.clock.advance_us(self.rng.below(20_000) as i64),
            _ if faults => self.fault()?,
            _ => {}
        }
        self.supervise()?;
        self.poll_calls()
    }

    /// Ticks and the end of a full disk.
    fn timers(&mut self) {
        let now = self.now_us();
        if now >= self.next_tick_us {
            self.next_tick_us = now + TICK_MS * 1000;
            for shard in 0..self.config.shards {
                if self.shards[shard as usize].is_some() {
                    self.net.send(shard, ShardMsg::Tick);
                }
            }
        }
        if self.full_until_us.is_some_and(|until| now >= until) {
            self.full_until_us = None;
            self.storage.set_full(false);
        }
    }

    /// Serves one message from a random shard's mailbox.
    fn deliver(&mut self) {
        let now = self.now_us();
        let ready: Vec<u16> = {
            let boxes = self.net.mailboxes.lock().expect("net");
            (0..self.config.shards)
                .filter(|s| !boxes[*s as usize].is_empty())
                .filter(|s| {
                    self.shards[*s as usize]
                        .as_ref()
                        .is_some_and(|sim| sim.hung_until_us <= now)
                })
                .collect()
        };
        if ready.is_empty() {
            return;
        }
        let shard = ready[self.rng.below(ready.len() as u64) as usize];
        // An actor drains a few messages per wake-up.
        for _ in 0..1 + self.rng.below(8) {
            if !self.serve(shard) {
                return;
            }
        }
    }

    /// Hands the next message of `shard`'s mailbox to its state machine, as the actix shell
    /// does; false when there was none or the shard stopped.
    fn serve(&mut self, shard: u16) -> bool {
        // One step hands the writer at most a batch and a snapshot (or a stop's barrier).
        if self.writer_rx.len() + WRITER_STEP_MAX > WRITER_QUEUE_MAX && self.write(true).is_err() {
            return false;
        }
        let Some(msg) = self.net.mailboxes.lock().expect("net")[shard as usize].pop_front() else {
            return false;
        };
        let Some(sim) = self.shards[shard as usize].as_mut() else {
            return false;
        };
        match sim.shard.step(msg) {
            Step::Done => true,
            Step::FlushSoon => {
                self.net.send(shard, ShardMsg::Flush);
                true
            }
            Step::Stop => {
                // Poisoned (a panic reports its fault) or replaced: the supervisor rebuilds it.
                self.shards[shard as usize] = None;
                if !self.rebuild.contains(&shard) {
                    self.rebuild.push(shard);
                }
                false
            }
        }
    }

    /// The writer: one group commit of some of what is queued (all of it with `all`).
    fn write(&mut self, all: bool) -> Check {
        let now = self.now_us();
        if !all && now < self.writer_stalled_until_us {
            return Ok(());
        }
        if self.stats.failed.load(Ordering::SeqCst) && now - self.last_probe_us >= 250_000 {
            self.last_probe_us = now;
            probe(self.storage.as_ref(), true, &self.stats, &self.faults_tx);
        }
        self.sync_if_due(now);
        let queued = self.writer_rx.len();
        if queued == 0 {
            return Ok(());
        }
        let take = if all {
            queued
        } else {
            1 + self.rng.below(queued as u64) as usize
        };
        let mut group: Vec<WriterMsg> = (0..take)
            .filter_map(|_| self.writer_rx.try_recv().ok())
            .collect();
        let outcome = commit_group(
            self.storage.as_ref(),
            !self.config.async_durability,
            &mut group,
            &self.stats,
            &self.faults_tx,
        );
        if outcome.failed {
            self.last_probe_us = now;
        }
        Ok(())
    }

    /// `async`: the writer's periodic sync (a failed sync is retried at the next round; what
    /// it would have made durable stays at risk until then).
    fn sync_if_due(&mut self, now: i64) {
        if self.config.async_durability
            && now - self.last_sync_us >= FLUSH_INTERVAL_MS * 1000
            && self.storage.sync().is_ok()
        {
            self.syncs += 1;
            self.last_sync_us = now;
        }
    }

    /// Faults the supervisor handles, and rebuilds waiting for the writer barrier.
    fn supervise(&mut self) -> Check {
        while let Ok(fault) = self.faults_rx.try_recv() {
            match fault {
                Fault::Panic {
                    shard,
                    generation,
                    message,
                    ..
                } => {
                    if message != INJECTED_PANIC {
                        return Err(format!("shard {shard} panicked: {message}"));
                    }
                    if self.stats.generations[shard as usize].load(Ordering::SeqCst) == generation {
                        self.replace(shard);
                    }
                }
                Fault::WriteFailed {
                    shard, generation, ..
                } => {
                    self.report.write_faults += 1;
                    if self.stats.generations[shard as usize].load(Ordering::SeqCst) == generation {
                        self.replace(shard);
                    }
                }
                Fault::StorageFailing { .. } | Fault::StorageRecovered => {}
            }
        }
        if !self.rebuild.is_empty() {
            // The barrier: everything queued before is written or refused first.
            self.write(true)?;
            for shard in std::mem::take(&mut self.rebuild) {
                self.report.rebuilds += 1;
                self.start_shard(shard)?;
            }
        }
        Ok(())
    }

    /// A random client command, admitted as the engine admits it.
    fn client(&mut self) {
        let writes_refused = self.stats.failed.load(Ordering::SeqCst);
        let count = self.config.shards;
        let choice = self.rng.below(100);
        if writes_refused && choice < 90 {
            return; // refused at admission (507/503): nothing reaches a shard
        }
        self.report.calls += 1;
        match choice {
            0..=9 => {
                // A receipt, under an Idempotency-Key (a new one, or an earlier one retried
                // with its own body) most of the time.
                let (sku, delta, key) = if !self.adjusts.is_empty() && self.rng.chance(200) {
                    self.adjusts[self.rng.below(self.adjusts.len() as u64) as usize].clone()
                } else {
                    let sku = SKUS[self.rng.below(SKUS.len() as u64) as usize];
                    let delta = 1 + self.rng.below(8) as i64;
                    let key = self.rng.chance(700).then(|| {
                        self.keys_made += 1;
                        format!("a{}", self.keys_made)
                    });
                    if let Some(key) = &key {
                        self.adjusts.push((sku, delta, Some(key.clone())));
                    }
                    (sku, delta, key)
                };
                let (reply, answer) = oneshot::channel();
                let idempotency = key.clone().map(|key| Idempotency {
                    key,
                    request_hash: delta as u128 * 31 + sku.as_bytes()[0] as u128,
                });
                self.send_call(
                    shard_of_sku(sku, count),
                    ClientCmd::AdjustStock {
                        sku: sku.into(),
                        // Part of the body, so from `delta`: a retry sends the same one.
                        location: LOCATIONS[delta as usize % LOCATIONS.len()].0.into(),
                        delta,
                        reason: "receive".into(),
                        actor: "key_sim".into(),
                        idempotency,
                        reply,
                    },
                    Pending::Adjust(answer, key),
                    Vec::new(),
                );
            }
            10..=69 => {
                let (place, key) = self.random_order(None);
                let shard = match &key {
                    Some(key) => shard_of_key(key, count),
                    None => place.customer_id.shard(),
                };
                let lines = place.lines.iter().map(|l| (l.sku.clone(), l.qty)).collect();
                let customer = place.customer_id;
                if self.rng.chance(500) {
                    self.submit(shard, vec![place], vec![(key, customer, lines)]);
                } else {
                    let (reply, answer) = oneshot::channel();
                    self.send_call(
                        shard,
                        ClientCmd::Place { place, reply },
                        Pending::Order(answer),
                        vec![(key, customer, lines)],
                    );
                }
            }
            70..=79 => {
                let shard = self.rng.below(count as u64) as u16;
                let n = 2 + self.rng.below(3);
                let mut places = Vec::new();
                let mut requests = Vec::new();
                for _ in 0..n {
                    let (place, key) = self.random_order(Some(shard));
                    let lines = place.lines.iter().map(|l| (l.sku.clone(), l.qty)).collect();
                    requests.push((key, place.customer_id, lines));
                    places.push(place);
                }
                if self.rng.chance(500) {
                    self.submit(shard, places, requests);
                } else {
                    let (reply, answer) = oneshot::channel();
                    self.send_call(
                        shard,
                        ClientCmd::PlaceBatch { places, reply },
                        Pending::Batch(answer),
                        requests,
                    );
                }
            }
            90..=93 => self.after_sales(),
            80..=89 => {
                if self.ledger.confirmed.is_empty() {
                    return;
                }
                let index = self.rng.below(self.ledger.confirmed.len() as u64) as usize;
                let id = self.ledger.confirmed[index];
                if self.rng.chance(500) {
                    let (reply, answer) = oneshot::channel();
                    let cmd = ClientCmd::Cancel {
                        id,
                        reason: None,
                        actor: "sim".into(),
                        idempotency: None,
                        reply,
                    };
                    self.send_call(id.shard(), cmd, answered(answer), Vec::new());
                } else {
                    let (reply, answer) = oneshot::channel();
                    let shipment = NewShipment {
                        order_id: id,
                        carrier: "sim".into(),
                        lines: None,
                        actor: "sim".into(),
                    };
                    if self.ledger.shipped.len() < 10_000 {
                        self.ledger.shipped.push(id);
                    }
                    let cmd = ClientCmd::Ship {
                        shipment,
                        idempotency: None,
                        reply,
                    };
                    self.send_call(id.shard(), cmd, answered(answer), Vec::new());
                }
            }
            94..=96 => {
                // A customer's contact data changed, or (rarely) the customer erased. Orders
                // of an erased customer go on in the simulation: the gateway refuses them, the
                // engine keeps them as any order.
                let customer = self.customers[self.rng.below(self.customers.len() as u64) as usize];
                let (reply, answer) = oneshot::channel();
                if self.rng.chance(150) {
                    self.ledger.erasing.insert(customer);
                    let cmd = ClientCmd::EraseCustomer {
                        id: customer,
                        actor: "key_sim".into(),
                        reply,
                    };
                    self.send_call(
                        customer.shard(),
                        cmd,
                        Pending::Customer(answer, customer, None),
                        Vec::new(),
                    );
                } else {
                    self.keys_made += 1;
                    let email = format!("sealed-email-{}", self.keys_made);
                    let cmd = ClientCmd::UpdateCustomer {
                        id: customer,
                        update: CustomerUpdate {
                            email: Some(email.clone()),
                            ..CustomerUpdate::default()
                        },
                        actor: "key_sim".into(),
                        idempotency: None,
                        reply,
                    };
                    self.send_call(
                        customer.shard(),
                        cmd,
                        Pending::Customer(answer, customer, Some(email)),
                        Vec::new(),
                    );
                }
            }
            97 => {
                // A transfer between two locations: refused when `from` has too few units.
                let sku = SKUS[self.rng.below(SKUS.len() as u64) as usize];
                let from = self.rng.below(LOCATIONS.len() as u64) as usize;
                let to = (from + 1 + self.rng.below(LOCATIONS.len() as u64 - 1) as usize)
                    % LOCATIONS.len();
                let (reply, answer) = oneshot::channel();
                let cmd = ClientCmd::TransferStock {
                    sku: sku.into(),
                    from: LOCATIONS[from].0.into(),
                    to: LOCATIONS[to].0.into(),
                    qty: 1 + self.rng.below(6),
                    reason: "rebalance".into(),
                    actor: "key_sim".into(),
                    idempotency: None,
                    reply,
                };
                self.send_call(shard_of_sku(sku, count), cmd, answered(answer), Vec::new());
            }
            _ => {
                if self.ledger.confirmed.is_empty() {
                    return;
                }
                let index = self.rng.below(self.ledger.confirmed.len() as u64) as usize;
                let id = self.ledger.confirmed[index];
                let (reply, answer) = oneshot::channel();
                let cmd = ClientCmd::GetOrder { id, reply };
                self.send_call(id.shard(), cmd, answered(answer), Vec::new());
            }
        }
    }

    /// A return of a unit of an acknowledged order, the receipt of an acknowledged return (its
    /// units restocked or not), or a refund: the engine refuses what its rules forbid (nothing
    /// shipped yet, more than shipped, above the total), and the checks hold it to them.
    fn after_sales(&mut self) {
        let choice = self.rng.below(3);
        if choice == 1 && !self.ledger.returns.is_empty() {
            let index = self.rng.below(self.ledger.returns.len() as u64) as usize;
            let (id, (lines, _)) = self.ledger.returns.iter().nth(index).expect("index");
            let (id, lines) = (*id, lines.clone());
            let mut receive = Vec::new();
            for (sku, qty) in lines {
                let restocked = self.rng.below(u64::from(qty) + 1) as u32;
                if restocked > 0 {
                    receive.push(ReceiveLine {
                        sku: sku.clone(),
                        qty: restocked,
                        restock: true,
                    });
                }
                if qty > restocked && self.rng.chance(500) {
                    receive.push(ReceiveLine {
                        sku,
                        qty: qty - restocked,
                        restock: false,
                    });
                }
            }
            if receive.is_empty() {
                return;
            }
            let (reply, answer) = oneshot::channel();
            let cmd = ClientCmd::ReceiveReturn {
                id,
                lines: receive,
                actor: "sim".into(),
                idempotency: None,
                reply,
            };
            self.send_call(id.shard(), cmd, Pending::Return(answer, true), Vec::new());
            return;
        }
        if self.ledger.confirmed.is_empty() {
            return;
        }
        let index = self.rng.below(self.ledger.confirmed.len() as u64) as usize;
        let mut id = self.ledger.confirmed[index];
        if choice == 0 && !self.ledger.shipped.is_empty() && self.rng.chance(800) {
            id = self.ledger.shipped[self.rng.below(self.ledger.shipped.len() as u64) as usize];
        }
        if choice == 2 {
            let (reply, answer) = oneshot::channel();
            let refund = NewRefund {
                order_id: id,
                amount: 1 + self.rng.below(400),
                reason: "sim".into(),
                actor: "sim".into(),
            };
            let cmd = ClientCmd::Refund {
                refund,
                idempotency: None,
                reply,
            };
            self.send_call(id.shard(), cmd, answered(answer), Vec::new());
            return;
        }
        let Some((_, lines)) = self.ledger.orders.get(&id) else {
            return;
        };
        let (sku, qty) = lines[self.rng.below(lines.len() as u64) as usize].clone();
        let (reply, answer) = oneshot::channel();
        let ret = NewReturn {
            order_id: id,
            lines: vec![(sku, 1 + self.rng.below(u64::from(qty)) as u32)],
            reason: "sim".into(),
            actor: "sim".into(),
        };
        let cmd = ClientCmd::CreateReturn {
            ret,
            idempotency: None,
            reply,
        };
        self.send_call(id.shard(), cmd, Pending::Return(answer, false), Vec::new());
    }

    /// An order of 1–3 lines; with a key most of the time (a new one, or an earlier one
    /// retried with the same body). With `shard`, its customer lives there (for batches).
    fn random_order(&mut self, shard: Option<u16>) -> (PlaceOrder, Option<String>) {
        let customer = match shard {
            Some(shard) => self.customers[shard as usize],
            None => self.customers[self.rng.below(self.customers.len() as u64) as usize],
        };
        let mut lines: Vec<NewLine> = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let sku = SKUS[self.rng.below(SKUS.len() as u64) as usize];
            if lines.iter().any(|l| l.sku == sku) {
                continue;
            }
            lines.push(NewLine {
                sku: sku.into(),
                qty: 1 + self.rng.below(3) as u32,
                unit_price: 100,
            });
        }
        if shard.is_none() && !self.sent.is_empty() && self.rng.chance(150) {
            // A retry: an earlier key with its own body.
            let (key, place) = self.sent[self.rng.below(self.sent.len() as u64) as usize].clone();
            return (place, Some(key));
        }
        let key = if shard.is_some() || self.rng.chance(200) {
            None
        } else {
            self.keys_made += 1;
            Some(format!("k{}", self.keys_made))
        };
        // The gateway's body hash: equal bodies, equal hashes.
        let hash = lines.iter().fold(customer.0 as u128, |h, l| {
            h.wrapping_mul(1_000_003)
                .wrapping_add(l.qty as u128 * 131 + l.sku.as_bytes()[0] as u128)
        });
        let place = PlaceOrder {
            refusal: None,
            customer_id: customer,
            lines,
            shipping_address: None,
            note: None,
            idempotency: key.clone().map(|key| Idempotency {
                key,
                request_hash: hash,
            }),
            actor: "sim".into(),
        };
        if let Some(key) = &key {
            self.sent.push((key.clone(), place.clone()));
        }
        (place, key)
    }

    /// Hands placements to a shard's inbox as `Engine::place_orders` does: one `Drain` wakes
    /// the shard unless a wake-up is outstanding; a full inbox refuses at once.
    fn submit(&mut self, shard: u16, places: Vec<PlaceOrder>, requests: Vec<Request>) {
        let generation = self.stats.generations[shard as usize].load(Ordering::SeqCst);
        if self.shards[shard as usize].is_none() {
            return; // restarting: refused at admission
        }
        let (reply, answer) = oneshot::channel();
        match self.inboxes[shard as usize].push(Submission { places, reply }) {
            Ok(Pushed::Wake) => self.net.send(shard, ShardMsg::Drain),
            Ok(Pushed::Queued) => {}
            Err(_) => return,
        }
        self.calls.push(Call {
            shard,
            generation,
            sent_us: self.now_us(),
            pending: Pending::Submitted(answer),
            requests,
        });
    }

    fn send_call(&mut self, shard: u16, cmd: ClientCmd, pending: Pending, requests: Vec<Request>) {
        let generation = self.stats.generations[shard as usize].load(Ordering::SeqCst);
        if self.shards[shard as usize].is_none() {
            return; // restarting: refused at admission
        }
        self.net.send(shard, ShardMsg::Client(cmd));
        self.calls.push(Call {
            shard,
            generation,
            sent_us: self.now_us(),
            pending,
            requests,
        });
    }

    /// Collects answers; a call whose shard was replaced, or that passed its deadline, is
    /// answered `unavailable` as `Engine::call` answers it.
    fn poll_calls(&mut self) -> Check {
        let now = self.now_us();
        let mut calls = std::mem::take(&mut self.calls);
        let mut result = Ok(());
        calls.retain_mut(|call| {
            if result.is_err() {
                return true;
            }
            let replaced =
                self.stats.generations[call.shard as usize].load(Ordering::SeqCst) != call.generation;
            let late = now - call.sent_us >= REQUEST_TIMEOUT_MS as i64 * 1000;
            let answered = match &mut call.pending {
                Pending::Order(answer) => match answer.try_recv() {
                    Ok(outcome) => {
                        result = self.record(&call.requests[0], outcome.map(|v| v.id));
                        true
                    }
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(_) => {
                        self.report.unknown += 1;
                        true
                    }
                },
                Pending::Batch(answer) => {
                    self.settle_many(&call.requests, poll_many(answer, |id| id), &mut result)
                }
                Pending::Submitted(answer) => self.settle_many(
                    &call.requests,
                    poll_many(answer, |view| view.id),
                    &mut result,
                ),
                Pending::Adjust(answer, key) => match answer.try_recv() {
                    Ok(Ok(view)) => {
                        if let Some(key) = key {
                            self.ledger.acked_adjust.entry(key.clone()).or_insert(self.syncs);
                            let first = self.ledger.adjusted.entry(key.clone()).or_insert_with(|| view.clone());
                            if *first != view {
                                result = Err(format!(
                                    "adjustment key {key} answered {view:?} after {first:?}: a retry must get the same answer"
                                ));
                            }
                        }
                        true
                    }
                    Ok(Err(_)) => true,
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(_) => {
                        self.report.unknown += 1;
                        true
                    }
                },
                Pending::Customer(answer, customer, email) => match answer.try_recv() {
                    Ok(Ok(view)) => {
                        match email {
                            Some(email) if view.erased || view.email != *email => {
                                result = Err(format!(
                                    "customer {customer} updated to {email} answered {view:?}"
                                ));
                            }
                            Some(_) if self.ledger.erased.contains_key(customer) => {
                                result = Err(format!(
                                    "customer {customer} was updated after its erasure was acknowledged"
                                ));
                            }
                            Some(_) => {}
                            None if !view.erased => {
                                result = Err(format!(
                                    "customer {customer} answered its erasure with {view:?}"
                                ));
                            }
                            None => {
                                self.ledger.erased.entry(*customer).or_insert(self.syncs);
                            }
                        }
                        true
                    }
                    Ok(Err(CommandError::InvalidTransition(_)))
                        if email.is_some() && self.ledger.erasing.contains(customer) =>
                    {
                        true
                    }
                    Ok(Err(
                        CommandError::Unavailable(_)
                        | CommandError::InsufficientStorage(_)
                        | CommandError::Quarantined(_),
                    )) => true,
                    Ok(Err(other)) => {
                        result = Err(format!(
                            "customer {customer}: {} answered {other}",
                            if email.is_some() { "an update" } else { "an erasure" }
                        ));
                        true
                    }
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(_) => {
                        self.report.unknown += 1;
                        true
                    }
                },
                Pending::Return(answer, receipt) => match answer.try_recv() {
                    Ok(Ok(view)) => {
                        if *receipt {
                            self.ledger.received.entry(view.id).or_insert(self.syncs);
                        } else if view.status == ReturnStatus::Requested {
                            self.ledger
                                .returns
                                .entry(view.id)
                                .or_insert((view.lines.clone(), self.syncs));
                        }
                        true
                    }
                    Ok(Err(_)) => true,
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(_) => {
                        self.report.unknown += 1;
                        true
                    }
                },
                Pending::Other(poll) => poll().is_some(),
            };
            if answered {
                return false;
            }
            if replaced || late {
                self.report.unknown += 1;
                return false;
            }
            true
        });
        self.calls = calls;
        result
    }

    /// Records the answer of a call that placed many orders (`None`: not yet answered, then
    /// `false`; `Some(None)`: no answer will come, counted unknown). Answers whether it is done.
    fn settle_many(
        &mut self,
        requests: &[Request],
        polled: Option<Option<Vec<Result<OrderId, CommandError>>>>,
        result: &mut Check,
    ) -> bool {
        match polled {
            None => false,
            Some(None) => {
                self.report.unknown += 1;
                true
            }
            Some(Some(outcomes)) => {
                for (request, outcome) in requests.iter().zip(outcomes) {
                    if result.is_ok() {
                        *result = self.record(request, outcome);
                    }
                }
                true
            }
        }
    }

    /// Checks a placement's answer against everything answered before, and records it.
    fn record(
        &mut self,
        (key, customer, lines): &Request,
        outcome: Result<OrderId, CommandError>,
    ) -> Check {
        let definitive = match &outcome {
            Ok(id) => Some(Some(*id)),
            // A retry of a placement whose order went cold: the engine answers it from there.
            Err(CommandError::Cold(crate::domain::ColdAnswer::Placed(id))) => Some(Some(*id)),
            Err(CommandError::InsufficientStock { .. }) => Some(None),
            Err(CommandError::Unavailable(_)) => None,
            Err(other) => return Err(format!("placement answered {other}")),
        };
        let Some(definitive) = definitive else {
            self.report.unknown += 1;
            return Ok(());
        };
        if let Some(key) = key {
            if let Some(first) = self.ledger.keys.get(key) {
                if *first != definitive {
                    return Err(format!(
                        "key {key} answered {definitive:?} after {first:?}: a retry must get the same answer"
                    ));
                }
            } else {
                self.ledger.keys.insert(key.clone(), definitive);
                self.ledger.acked_key.insert(key.clone(), self.syncs);
            }
        }
        match definitive {
            Some(id) => {
                self.report.confirmed += 1;
                let mut sorted = lines.clone();
                sorted.sort();
                if let Some((was_customer, was)) = self.ledger.orders.get(&id) {
                    if *was != sorted || was_customer != customer {
                        return Err(format!(
                            "order id {id} acknowledged twice for different orders ({was:?}, then {sorted:?}): ids must never be reused"
                        ));
                    }
                } else {
                    self.ledger.orders.insert(id, (*customer, sorted));
                    self.ledger.confirmed.push(id);
                    self.ledger.acked_order.insert(id, self.syncs);
                }
            }
            None => self.report.rejected += 1,
        }
        Ok(())
    }

    fn fault(&mut self) -> Check {
        let now = self.now_us();
        let shard = self.rng.below(self.config.shards as u64) as u16;
        match self.rng.below(100) {
            0..=14 => self.storage.fail_next(1 + self.rng.below(3)),
            15..=22 => {
                if self.full_until_us.is_none() {
                    self.storage.set_full(true);
                    self.full_until_us = Some(now + 20_000 + self.rng.below(200_000) as i64);
                }
            }
            23..=27 => {
                self.report.crashes += 1;
                self.crash()?;
            }
            28..=42 => {
                // A panic: the shard stops mid-flight; the supervisor rebuilds it.
                if let Some(sim) = self.shards[shard as usize].as_mut() {
                    self.report.panics += 1;
                    sim.shard.poison();
                    let generation = sim.shard.generation();
                    let _ = self.faults_tx.try_send(Fault::Panic {
                        shard,
                        generation,
                        command: None,
                        message: INJECTED_PANIC.into(),
                    });
                }
            }
            43..=77 => {
                // A hang: shorter than the request deadline, or long enough to be replaced.
                if let Some(sim) = self.shards[shard as usize].as_mut() {
                    self.report.hangs += 1;
                    if self.rng.chance(300) {
                        // Longer than the heartbeat timeout: the supervisor replaces it (the
                        // stuck actor is stale when it wakes; nothing it sends is written).
                        self.replace(shard);
                    } else {
                        let ms = 200 + self.rng.below(HEARTBEAT_TIMEOUT_MS as u64 - 300) as i64;
                        sim.hung_until_us = now + ms * 1000;
                    }
                }
            }
            _ => {
                // A slow fsync: the writer takes nothing for a while.
                self.writer_stalled_until_us = now + self.rng.below(300_000) as i64;
            }
        }
        Ok(())
    }

    /// The whole node crashes: nothing unwritten survives, every shard is rebuilt.
    fn crash(&mut self) -> Check {
        // A crash is a power loss: unsynced writes are gone (none in `sync`, where every
        // write is synced before it is acknowledged).
        let lost_writes = self.memory.power_loss();
        if lost_writes > 0 && !self.config.async_durability {
            return Err(format!(
                "{lost_writes} writes were not synced in sync durability"
            ));
        }
        // No continuation runs in a crash: the actors and the writer queue just vanish
        // (dropping a continuation does not run it; its waiter hears nothing).
        for slot in self.shards.iter_mut() {
            slot.take();
        }
        while self.writer_rx.try_recv().is_ok() {}
        for mailbox in self.net.mailboxes.lock().expect("net").iter_mut() {
            mailbox.clear();
        }
        self.calls.clear();
        self.rebuild.clear();
        while self.faults_rx.try_recv().is_ok() {}
        self.stats = Arc::new(WriterStats::new(vec![0; self.config.shards as usize]));
        let head = crate::events::last_cursor(self.storage.as_ref())
            .map_err(|e| format!("events: {e}"))?;
        self.stats.event_head.advance(head);
        self.gauges = (0..self.config.shards)
            .map(|_| Arc::new(ShardGauges::default()))
            .collect();
        self.writer_stalled_until_us = 0;
        self.quarantine = Arc::new(
            Quarantine::load(self.storage.as_ref()).map_err(|e| format!("quarantine: {e}"))?,
        );
        self.inboxes = (0..self.config.shards)
            .map(|_| Arc::new(Inbox::new(INBOX_ORDERS_MAX)))
            .collect();
        self.audit_seq = AuditSeq::starting_after(
            crate::audit::last_seq(self.storage.as_ref(), self.config.shards)
                .map_err(|e| format!("audit sequence: {e}"))?,
        );
        for shard in 0..self.config.shards {
            self.start_shard(shard)?;
        }
        if self.config.async_durability {
            self.forget_lost_window();
        }
        self.check_acknowledged()?;
        self.check_audit()?;
        self.check_events()
    }

    /// The public events read back as one gap-free sequence of cursors up to the head (stored
    /// singly or in groups), and no order confirmed twice (a recovery raises nothing again).
    fn check_events(&self) -> Check {
        let storage = self.storage.as_ref();
        let head = crate::events::last_cursor(storage).map_err(|e| format!("events: {e}"))?;
        let Some(first) =
            crate::events::first_cursor(storage).map_err(|e| format!("events: {e}"))?
        else {
            return Ok(());
        };
        let mut expected = first;
        let mut confirmed = std::collections::HashSet::new();
        let mut after = first - 1;
        while after < head {
            let (page, reached) =
                crate::events::read_after(storage, after, crate::events::TypeSet::ALL, 1000, 1000)
                    .map_err(|e| format!("events after {after}: {e}"))?;
            for event in &page {
                if event.cursor != expected {
                    return Err(format!(
                        "event cursor {} where {expected} was next (head {head})",
                        event.cursor
                    ));
                }
                expected += 1;
                if let crate::events::Notice::OrderConfirmed { order, .. } = event.notice {
                    if !confirmed.insert(order) {
                        return Err(format!("order {order} confirmed twice in the events"));
                    }
                }
            }
            if reached <= after {
                return Err(format!("events stop at {after}, short of the head {head}"));
            }
            after = reached;
        }
        if expected != head + 1 {
            return Err(format!(
                "events end at {}, the head is {head}",
                expected - 1
            ));
        }
        Ok(())
    }

    /// `async` after a crash: what was acknowledged after the last sync may be gone; it is
    /// forgotten (counted), and everything acknowledged before the last sync stays checked.
    fn forget_lost_window(&mut self) {
        let syncs = self.syncs;
        // Kept as acknowledged: present and decided (a cross-shard order whose confirmation was
        // in the lost window is back to pending, its acknowledgement taken back).
        let present =
            |world: &World, id: &OrderId| {
                world.shards[id.shard() as usize]
                    .as_ref()
                    .is_some_and(|sim| {
                        sim.shard.data().orders.get(id).is_some_and(|order| {
                            order.status != crate::domain::OrderStatus::Pending
                        }) || crate::cold::order(world.storage.as_ref(), *id)
                            .ok()
                            .flatten()
                            .is_some()
                    })
            };
        let lost: Vec<OrderId> = self
            .ledger
            .orders
            .keys()
            .filter(|id| self.ledger.acked_order.get(id) == Some(&syncs) && !present(self, id))
            .copied()
            .collect();
        for id in &lost {
            self.ledger.orders.remove(id);
            self.ledger.acked_order.remove(id);
        }
        self.ledger.confirmed.retain(|id| !lost.contains(id));
        self.report.lost_in_window += lost.len() as u64;
        // Answers given after the last sync may be taken back: a retry may now get another.
        let window_keys: Vec<String> = self
            .ledger
            .acked_key
            .iter()
            .filter(|(_, at)| **at == syncs)
            .map(|(key, _)| key.clone())
            .collect();
        for key in window_keys {
            self.ledger.keys.remove(&key);
            self.ledger.acked_key.remove(&key);
        }
        let window_adjusts: Vec<String> = self
            .ledger
            .acked_adjust
            .iter()
            .filter(|(_, at)| **at == syncs)
            .map(|(key, _)| key.clone())
            .collect();
        for key in window_adjusts {
            self.ledger.adjusted.remove(&key);
            self.ledger.acked_adjust.remove(&key);
        }
        self.ledger.erased.retain(|_, at| *at != syncs);
        // Returns opened or received after the last sync may be taken back with their orders.
        self.ledger.returns.retain(|_, (_, at)| *at != syncs);
        self.ledger.received.retain(|_, at| *at != syncs);
        let returns = &self.ledger.returns;
        self.ledger
            .received
            .retain(|id, _| returns.contains_key(id));
    }

    /// Every shard's audit chain verifies (entries, batch chain, log digests, tip), and every
    /// acknowledged order has its `order.place` entry: the entry is durable with the order.
    fn check_audit(&self) -> Check {
        let mut placed = std::collections::HashSet::new();
        for shard in 0..self.config.shards {
            let report = crate::audit::verify_shard_chain(self.storage.as_ref(), shard)
                .map_err(|e| format!("audit chain of shard {shard}: {e}"))?;
            if let Some((seq, why)) = report.first_bad {
                return Err(format!(
                    "audit chain of shard {shard} breaks at {seq}: {why}"
                ));
            }
            crate::audit::scan_entries(self.storage.as_ref(), shard, 0, &mut |entry| {
                if entry.action == "order.place" {
                    placed.insert(entry.target.clone());
                }
                true
            })
            .map_err(|e| format!("audit entries of shard {shard}: {e}"))?;
        }
        for id in self.ledger.orders.keys() {
            if !placed.contains(&id.to_string()) {
                return Err(format!(
                    "acknowledged order {id} has no order.place audit entry"
                ));
            }
        }
        Ok(())
    }

    /// Every acknowledged order is in its shard's state, as acknowledged; every customer whose
    /// erasure was acknowledged is erased.
    fn check_acknowledged(&self) -> Check {
        for customer in self.ledger.erased.keys() {
            let Some(sim) = self.shards[customer.shard() as usize].as_ref() else {
                continue;
            };
            match sim.shard.data().customer_view(*customer) {
                Some(view) if view.erased => {}
                other => {
                    return Err(format!(
                        "customer {customer}'s erasure was acknowledged but it reads {other:?}"
                    ))
                }
            }
        }
        for (id, (customer, lines)) in &self.ledger.orders {
            let Some(sim) = self.shards[id.shard() as usize].as_ref() else {
                continue;
            };
            let (mut have, held_by): (Vec<(String, u32)>, CustomerId) =
                match sim.shard.data().orders.get(id) {
                    Some(order) => (
                        order
                            .lines
                            .iter()
                            .map(|l| (l.sku.to_string(), l.qty))
                            .collect(),
                        order.customer,
                    ),
                    // Moved to the cold tier: it must be there, as acknowledged.
                    None => match crate::cold::order(self.storage.as_ref(), *id)
                        .map_err(|e| format!("cold tier: {e}"))?
                    {
                        Some(cold) => (
                            cold.order
                                .lines
                                .iter()
                                .map(|l| (l.sku.clone(), l.qty))
                                .collect(),
                            cold.order.customer_id,
                        ),
                        None => return Err(format!("acknowledged order {id} is lost")),
                    },
                };
            have.sort();
            if have != *lines || held_by != *customer {
                return Err(format!(
                    "order {id} was acknowledged as {lines:?} but holds {have:?}"
                ));
            }
        }
        Ok(())
    }

    /// After every step: `available` ≥ 0 everywhere, and no placement outlives its deadline
    /// by more than a tick or two.
    fn check_step(&self) -> Check {
        let limit = Duration::from_millis(REQUEST_TIMEOUT_MS + 3 * TICK_MS as u64 + 350);
        let now = self.now_us();
        for sim in self.shards.iter().flatten() {
            let data = sim.shard.data();
            for (sku, stock) in &data.stock {
                if stock.reserved > stock.on_hand {
                    return Err(format!(
                        "shard {}: {sku} reserved {} > on hand {}",
                        sim.shard.id(),
                        stock.reserved,
                        stock.on_hand
                    ));
                }
            }
            // Per location: never reserved above on hand, and the locations other than
            // `default` never hold more than the totals (the rest is `default`'s).
            for (sku, buckets) in &data.buckets {
                let total = data.stock.get(sku).copied().unwrap_or_default();
                let (mut on_hand, mut reserved) = (0u64, 0u64);
                for bucket in buckets.iter() {
                    if bucket.reserved > bucket.on_hand {
                        return Err(format!(
                            "shard {}: {sku} at {} reserved {} > on hand {}",
                            sim.shard.id(),
                            bucket.location,
                            bucket.reserved,
                            bucket.on_hand
                        ));
                    }
                    on_hand += bucket.on_hand;
                    reserved += bucket.reserved;
                }
                if on_hand > total.on_hand
                    || reserved > total.reserved
                    || total.on_hand - on_hand < total.reserved - reserved
                {
                    return Err(format!(
                        "shard {}: {sku}'s locations hold {on_hand} on hand, {reserved} reserved beyond its totals {total:?}",
                        sim.shard.id()
                    ));
                }
            }
            // Time the shard could not run (a hang) does not count against it.
            let runnable_for = now - sim.hung_until_us;
            if runnable_for < limit.as_micros() as i64 {
                continue;
            }
            for (order, age) in sim.shard.pending_placements() {
                if age > limit {
                    return Err(format!(
                        "shard {}: placement {order} still undecided after {age:?} (deadline {REQUEST_TIMEOUT_MS} ms)",
                        sim.shard.id()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Serves everything (shards, writer, ticks) until nothing moves, without new work.
    fn settle(&mut self, max_rounds: u64) -> Check {
        for _ in 0..max_rounds {
            self.drain()?;
            self.poll_calls()?;
            let busy = self.shards.iter().flatten().any(|s| {
                !s.shard.pending_placements().is_empty()
                    || s.shard.awaiting_hold_checks() > 0
                    || s.shard.awaiting_restocks() > 0
            }) || !self.rebuild.is_empty()
                || !self.calls.is_empty()
                || self.stats.failed.load(Ordering::SeqCst)
                || self.shards.iter().any(Option::is_none);
            if !busy {
                return Ok(());
            }
            // Time passes so retries, hold checks, deadlines and probes fire.
            self.clock.advance_us(TICK_MS * 1000);
            self.last_probe_us = 0;
            for shard in 0..self.config.shards {
                if self.shards[shard as usize].is_some() {
                    self.net.send(shard, ShardMsg::Tick);
                }
            }
        }
        Err("the engine never settled (placements, hold checks or calls stay open)".into())
    }

    /// Serves every mailbox and the writer until both are empty.
    fn drain(&mut self) -> Check {
        for _ in 0..1_000_000 {
            self.supervise()?;
            let mut moved = false;
            for shard in 0..self.config.shards {
                while self.serve(shard) {
                    moved = true;
                }
                // A message taken by a stopped shard moved things too (its rebuild).
                moved |= !self.rebuild.is_empty();
            }
            if !self.writer_rx.is_empty() || self.stats.failed.load(Ordering::SeqCst) {
                let queued = self.writer_rx.len();
                self.write(true)?;
                moved |= queued > 0;
            }
            if !moved && self.rebuild.is_empty() {
                return Ok(());
            }
        }
        Err("messages keep moving between shards without end".into())
    }

    /// No new work, no faults: the disk heals, hung shards wake, everything settles; then
    /// the deep checks.
    fn quiesce(&mut self) -> Check {
        self.report.quiescences += 1;
        self.storage.set_full(false);
        self.storage.fail_next(0);
        self.full_until_us = None;
        self.writer_stalled_until_us = 0;
        for sim in self.shards.iter_mut().flatten() {
            sim.hung_until_us = 0;
        }
        // Two rounds of hold checks and retries at least.
        self.settle(10_000)?;
        self.clock.advance_us(2 * REQUEST_TIMEOUT_MS as i64 * 1000);
        self.settle(10_000)?;
        self.check_acknowledged()?;
        self.check_audit()?;
        self.check_holds()?;
        self.check_returns()?;
        self.check_listing_indexes()
    }

    /// A return as its order's shard holds it now: in memory, or in the cold tier with its
    /// order (`None`: neither).
    fn return_now(&self, id: ReturnId) -> Result<Option<ReturnView>, String> {
        let Some(sim) = self.shards[id.shard() as usize].as_ref() else {
            return Ok(None);
        };
        if let Some(view) = sim.shard.data().return_view(id) {
            return Ok(Some(view));
        }
        crate::cold::return_of(self.storage.as_ref(), id).map_err(|e| format!("cold tier: {e}"))
    }

    /// At quiescence, the rules of returns and refunds: no order has more units in returns
    /// than shipped or more refunded than its total; every acknowledged return and receipt
    /// survived whatever crashed since; every receipt's restocks on other shards are done and
    /// confirmed, and each stock shard's ledger holds exactly those restocks — no orphan, none
    /// twice (a second restock of one return panics in `apply`): the units that come back are
    /// exactly the receipts' restocked units, so stock is conserved across restocks.
    fn check_returns(&self) -> Check {
        let count = self.config.shards;
        // (stock shard, return) → the restocked lines the return's receipt sent there.
        let mut expected: BTreeMap<(u16, ReturnId), Vec<(String, u32)>> = BTreeMap::new();
        for sim in self.shards.iter().flatten() {
            let data = sim.shard.data();
            for order in data.orders.values() {
                let refunded = data.refunded(order.id);
                let total = crate::state::order_total(order);
                if refunded > total {
                    return Err(format!("order {} refunded {refunded} of {total}", order.id));
                }
                for line in order.lines.iter() {
                    let taken = data.units_in_returns(order.id, &line.sku);
                    if taken > u64::from(line.shipped) {
                        return Err(format!(
                            "order {}: {taken} units of {} in returns, {} shipped",
                            order.id, line.sku, line.shipped
                        ));
                    }
                }
            }
            for ret in data.returns.values() {
                if !ret.restock_pending.is_empty() {
                    return Err(format!(
                        "return {} still waits for restocks on shards {:?} at quiescence",
                        ret.id, ret.restock_pending
                    ));
                }
                for line in ret.received.iter().filter(|l| l.restock) {
                    let owner = shard_of_sku(&line.sku, count);
                    if owner != sim.shard.id() {
                        expected
                            .entry((owner, ret.id))
                            .or_default()
                            .push((line.sku.clone(), line.qty));
                    }
                }
            }
        }
        for (id, (lines, _)) in &self.ledger.returns {
            let Some(view) = self.return_now(*id)? else {
                return Err(format!("acknowledged return {id} is lost"));
            };
            if view.lines != *lines {
                return Err(format!(
                    "return {id} was acknowledged as {lines:?} but holds {:?}",
                    view.lines
                ));
            }
            if self.ledger.received.contains_key(id) && view.status != ReturnStatus::Received {
                return Err(format!("return {id} was acknowledged received but is not"));
            }
        }
        for sim in self.shards.iter().flatten() {
            let shard = sim.shard.id();
            for (ret, lines) in sim.shard.data().restocked.iter() {
                let mut have: Vec<(String, u32)> =
                    lines.iter().map(|l| (l.sku.clone(), l.qty)).collect();
                have.sort();
                match expected.remove(&(shard, *ret)) {
                    Some(mut want) => {
                        want.sort();
                        if have != want {
                            return Err(format!(
                                "shard {shard} restocked {have:?} for {ret}, its receipt sent {want:?}"
                            ));
                        }
                    }
                    // Its order may have moved to the cold tier: the receipt is there.
                    None => {
                        let view = self.return_now(*ret)?;
                        let mut want: Vec<(String, u32)> = view
                            .iter()
                            .flat_map(|v| v.received.iter())
                            .filter(|l| l.restock && shard_of_sku(&l.sku, count) == shard)
                            .map(|l| (l.sku.clone(), l.qty))
                            .collect();
                        want.sort();
                        if view.is_none() || have != want {
                            return Err(format!(
                                "shard {shard} restocked {have:?} for {ret}, which no receipt sent ({want:?})"
                            ));
                        }
                    }
                }
            }
        }
        if let Some(((shard, ret), want)) = expected.into_iter().next() {
            return Err(format!(
                "return {ret} was received with {want:?} to restock on shard {shard}, which never restocked it"
            ));
        }
        Ok(())
    }

    /// At quiescence: every shard's listing indexes (by time, by customer) hold exactly its
    /// orders, whatever crashes, rebuilds and aborts came before.
    fn check_listing_indexes(&self) -> Check {
        for sim in self.shards.iter().flatten() {
            sim.shard.data().check_listing_indexes()?;
        }
        Ok(())
    }

    /// At quiescence: every hold belongs to a live cross-shard order with exactly its lines,
    /// every such order has its holds, and `reserved` is what those orders hold.
    fn check_holds(&self) -> Check {
        let count = self.config.shards;
        let mut expected_reserved: BTreeMap<String, u64> = BTreeMap::new();
        let mut expected_holds: BTreeMap<(u16, OrderId), Vec<(String, u32)>> = BTreeMap::new();
        for sim in self.shards.iter().flatten() {
            for order in sim.shard.data().orders.values() {
                if order.status == OrderStatus::Pending {
                    return Err(format!("order {} still pending at quiescence", order.id));
                }
                if !order.status.holds_stock() {
                    continue;
                }
                for line in order.lines.iter() {
                    let sku = line.sku.to_string();
                    *expected_reserved.entry(sku.clone()).or_default() +=
                        u64::from(line.qty - line.shipped);
                    if order.cross {
                        expected_holds
                            .entry((shard_of_sku(&sku, count), order.id))
                            .or_default()
                            .push((sku, line.qty));
                    }
                }
            }
        }
        for sim in self.shards.iter().flatten() {
            let shard = sim.shard.id();
            let data = sim.shard.data();
            for (order, held) in &data.holds {
                let mut have: Vec<(String, u32)> =
                    held.iter().map(|h| (h.sku.to_string(), h.qty)).collect();
                have.sort();
                let Some(want) = expected_holds.get(&(shard, *order)) else {
                    return Err(format!(
                        "shard {shard}: orphan hold for {order} ({have:?}): no live order owns it"
                    ));
                };
                let mut want = want.clone();
                want.sort();
                if have != want {
                    return Err(format!(
                        "shard {shard}: hold for {order} is {have:?}, its order asks {want:?}"
                    ));
                }
            }
            for (stock_shard, order) in expected_holds.keys() {
                if *stock_shard == shard && !data.holds.contains_key(order) {
                    return Err(format!("shard {shard}: order {order} holds nothing here"));
                }
            }
            for (sku, stock) in &data.stock {
                let want = expected_reserved.get(&**sku).copied().unwrap_or(0);
                if stock.reserved != want {
                    return Err(format!(
                        "shard {shard}: {sku} reserved {} but live orders hold {want}",
                        stock.reserved
                    ));
                }
            }
            self.check_locations(data)?;
        }
        Ok(())
    }

    /// At quiescence, on one shard: what each location reserves is exactly the unshipped
    /// units its live orders' allocations put there, and a cross-shard order's allocation as
    /// its own shard recorded it is what the stock shards hold.
    fn check_locations(&self, data: &crate::state::ShardData) -> Check {
        let shard = data.shard;
        let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut count = |order: OrderId, sku: &str, from: u32, units: u32| {
            for (location, n) in crate::state::ShardData::allocation_stretch(
                data.allocated.get(&order),
                sku,
                from,
                units,
            ) {
                *want
                    .entry((sku.to_string(), location.to_string()))
                    .or_default() += u64::from(n);
            }
        };
        for order in data.orders.values() {
            if order.cross || !order.status.holds_stock() {
                continue;
            }
            for line in order.lines.iter() {
                count(order.id, &line.sku, line.shipped, line.qty - line.shipped);
            }
        }
        for (order, held) in &data.holds {
            for line in held.iter() {
                count(*order, &line.sku, line.shipped, line.qty - line.shipped);
            }
        }
        for sku in data.stock.keys() {
            for view in data.location_stock_views(sku) {
                let expected = want
                    .get(&(sku.to_string(), view.location.clone()))
                    .copied()
                    .unwrap_or(0);
                if view.reserved != expected {
                    return Err(format!(
                        "shard {shard}: {sku} at {} reserves {} but its live orders' allocations put {expected} there",
                        view.location, view.reserved
                    ));
                }
            }
        }
        for (order, recorded) in &data.order_allocations {
            for sim in self.shards.iter().flatten() {
                let stock = sim.shard.data();
                if !stock.holds.contains_key(order) {
                    continue;
                }
                let held: Vec<(String, String, u32)> = match stock.allocated.get(order) {
                    Some(allocation) => allocation
                        .iter()
                        .map(|a| (a.sku.to_string(), a.location.to_string(), a.qty))
                        .collect(),
                    None => stock.holds[order]
                        .iter()
                        .map(|h| (h.sku.to_string(), "default".to_string(), h.qty))
                        .collect(),
                };
                let mine: Vec<(String, String, u32)> = recorded
                    .iter()
                    .filter(|a| shard_of_sku(&a.sku, data.shard_count) == stock.shard)
                    .map(|a| (a.sku.to_string(), a.location.to_string(), a.qty))
                    .collect();
                if mine != held {
                    return Err(format!(
                        "order {order}: its shard {shard} records {mine:?} on shard {}, which holds {held:?}",
                        stock.shard
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_is_determined_by_its_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, {
            let mut r = Rng::new(8);
            (0..5).map(|_| r.next_u64()).collect::<Vec<_>>()
        });
    }
}

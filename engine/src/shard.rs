//! The shard actor: owns one partition's state, turns commands into events, batches them for
//! the log writer, and runs its half of the cross-shard reservation protocol.
//!
//! Invariant: a shard's state is touched only by its own thread. Every reply leaves through
//! [`Shard::after_durable`], so no client sees state that a crash could take back.
//!
//! The shard is a state machine: [`Shard::step`] takes one message and reads the time only from
//! its [`Clock`], sends to other shards only through its [`Transport`] and hands batches to the
//! log writer's queue; it does no other I/O. The actix actor ([`Actor`] and [`Handler`] below)
//! is the thin shell that feeds it its mailbox, ticks and flushes, and the simulator
//! (`crate::sim`) drives the same `step` in one thread under a seeded PRNG.
//!
//! Every message is applied inside `catch_unwind`. A panic poisons the shard: it drops its
//! unwritten batch (nothing in it was acknowledged; its waiters hear `unavailable`), reports
//! a [`Fault`] to the supervisor and stops; the supervisor rebuilds it from storage. A shard
//! whose generation has moved on (it was replaced while stuck) stops at its next message, and
//! the log writer refuses anything it still sends.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use crossbeam_channel::Sender;
use tokio::sync::oneshot;

use crate::audit::ShardChain;
use crate::domain::{
    CommandError, CustomerId, CustomerView, Idempotency, NewCustomer, NewShipment, OrderFilter,
    OrderId, OrderStatus, OrderView, PersonalField, PlaceOrder, SalesSummary, ShipmentId,
    ShipmentStatus, ShipmentView, SnapshotTaken, StockView, ORDER_LINES_MAX,
};
use crate::event::{self, Event, IdemRecord, LineRecord, OrderRecord};
use crate::failpoint;
use crate::inbox::Inbox;
use crate::log::{Continuation, WriterMsg, WriterStats};
use crate::sim::{regressed, Regression};
use crate::state::{shard_of_sku, IdMap, IdemOutcome, ShardData};
use crate::storage::{shard_key, Family, Write};
use crate::supervisor::{panic_message, Fault, Quarantine};

/// The reply channel of one client command.
pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// Settings a shard runs with.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub mailbox_capacity: usize,
    /// `batch_events_max` lives here, changeable while the shard runs.
    pub tunables: Arc<crate::tunables::Tunables>,
    pub snapshot_interval_events: u64,
    pub idempotency_retention_s: u64,
    pub pending_retry_ms: u64,
}

/// Where a shard sends its protocol messages: the [`Router`] of actix addresses in the server,
/// the simulator's network in `crate::sim`.
pub trait Transport: Send + Sync {
    fn send(&self, shard: u16, msg: ShardMsg);
}

/// The time as a shard sees it: the system clock in the server, simulated time in `crate::sim`.
pub trait Clock: Send + Sync {
    /// Wall-clock microseconds since the Unix epoch (event timestamps).
    fn now_us(&self) -> i64;
    /// A monotonic instant (timers: retries, deadlines, sweeps).
    fn instant(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        now_us()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// The current address of every shard; replaced when a shard restarts.
pub struct Router {
    addrs: RwLock<Vec<Addr<Shard>>>,
}

impl Router {
    pub fn new(addrs: Vec<Addr<Shard>>) -> Router {
        Router {
            addrs: RwLock::new(addrs),
        }
    }

    pub fn addr(&self, shard: u16) -> Addr<Shard> {
        self.addrs.read().expect("router poisoned")[shard as usize].clone()
    }

    pub fn push(&self, addr: Addr<Shard>) {
        self.addrs.write().expect("router poisoned").push(addr);
    }

    pub fn set(&self, shard: u16, addr: Addr<Shard>) {
        self.addrs.write().expect("router poisoned")[shard as usize] = addr;
    }

    /// Sends a protocol message; it is never refused for a full mailbox (the protocol's own
    /// traffic is bounded by the client requests admitted).
    pub fn send(&self, shard: u16, msg: ShardMsg) {
        self.addr(shard).do_send(msg);
    }
}

impl Transport for Router {
    fn send(&self, shard: u16, msg: ShardMsg) {
        Router::send(self, shard, msg)
    }
}

/// What the shell must do after a [`Shard::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing more.
    Done,
    /// Flush the current batch once the messages already queued are handled (the shell
    /// sends itself `ShardMsg::Flush`).
    FlushSoon,
    /// The shard stopped (asked to, or found itself replaced): stop the actor.
    Stop,
}

/// Counters a shard exposes to the engine without a message round trip.
#[derive(Default)]
pub struct ShardGauges {
    pub enqueued: AtomicU64,
    pub handled: AtomicU64,
    pub last_seq: AtomicU64,
    pub orders: AtomicU64,
    pub skus: AtomicU64,
    pub customers: AtomicU64,
    pub log_digest: AtomicU64,
    /// The last heartbeat the supervisor sent, and the last one the shard answered.
    pub heartbeat_sent: AtomicU64,
    pub heartbeat_seen: AtomicU64,
    /// The next order, customer and shipment counters any actor of this shard handed to the
    /// log writer: a rebuilt actor allocates from at least these, so an id that a dropped
    /// (unwritten) batch used is never given to another object while the process runs.
    pub next_ids: [AtomicU64; 3],
}

/// A shard's ties to its supervisor.
pub struct ShardLink {
    /// This actor's generation; see `WriterStats::generations`.
    pub generation: u64,
    pub faults: tokio::sync::mpsc::Sender<Fault>,
    pub quarantine: Arc<Quarantine>,
    /// The shard's queue of coalesced placements (outlives actors, like the slot).
    pub inbox: Arc<Inbox>,
}

/// Client commands a shard serves.
pub enum ClientCmd {
    AdjustStock {
        sku: String,
        delta: i64,
        reason: String,
        /// The API key id that asks (the audit entry's actor).
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<StockView>,
    },
    GetStock {
        sku: String,
        reply: Reply<StockView>,
    },
    CreateCustomer {
        customer: NewCustomer,
        /// The API key id that asks; `None` (engine-internal callers) writes no audit entry.
        actor: Option<String>,
        idempotency: Option<Idempotency>,
        reply: Reply<CustomerView>,
    },
    GetCustomer {
        id: CustomerId,
        reply: Reply<CustomerView>,
    },
    /// Whether each customer exists (placements whose key puts them on another shard).
    CustomersExist {
        ids: Vec<CustomerId>,
        reply: Reply<Vec<bool>>,
    },
    Place {
        place: PlaceOrder,
        reply: Reply<OrderView>,
    },
    /// Many placements in one message (bulk import, benchmarks); one reply with each
    /// order's id or error, in request order.
    PlaceBatch {
        places: Vec<PlaceOrder>,
        reply: Reply<BatchResults>,
    },
    GetOrder {
        id: OrderId,
        reply: Reply<OrderView>,
    },
    ListOrders {
        filter: OrderFilter,
        reply: Reply<Vec<OrderView>>,
    },
    Cancel {
        id: OrderId,
        reason: Option<String>,
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<OrderView>,
    },
    Ship {
        shipment: NewShipment,
        idempotency: Option<Idempotency>,
        reply: Reply<ShipmentView>,
    },
    ShipmentEvent {
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<String>,
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<ShipmentView>,
    },
    GetShipment {
        id: ShipmentId,
        reply: Reply<ShipmentView>,
    },
    /// Sales of the orders placed in `[from_us, to_us)` on this shard.
    Sales {
        from_us: i64,
        to_us: i64,
        reply: Reply<SalesSummary>,
    },
    /// A page of the orders placed in `[from_us, to_us)`, in placement order.
    OrdersBetween {
        from_us: i64,
        to_us: i64,
        after: Option<(i64, OrderId)>,
        limit: usize,
        reply: Reply<Vec<OrderView>>,
    },
    /// Re-seals personal data: every stored value for which `reseal` answers `Some` is
    /// replaced; when anything changed, a snapshot is written and every older snapshot and
    /// log batch deleted, so the old values are gone from the log. Answers how many changed,
    /// once the snapshot is durable.
    Reseal { reseal: ResealFn, reply: Reply<u64> },
    /// Takes a snapshot now.
    Snapshot { reply: Reply<SnapshotTaken> },
    /// The state digest (canonical, costly: walks the whole state).
    StateDigest { reply: Reply<u64> },
}

impl ClientCmd {
    /// Whether the command may write to the log (refused at admission while the disk is full
    /// or storage refuses writes); reads never are.
    pub fn writes(&self) -> bool {
        match self {
            ClientCmd::AdjustStock { .. }
            | ClientCmd::CreateCustomer { .. }
            | ClientCmd::Place { .. }
            | ClientCmd::PlaceBatch { .. }
            | ClientCmd::Cancel { .. }
            | ClientCmd::Ship { .. }
            | ClientCmd::ShipmentEvent { .. }
            | ClientCmd::Reseal { .. }
            | ClientCmd::Snapshot { .. } => true,
            ClientCmd::GetStock { .. }
            | ClientCmd::GetCustomer { .. }
            | ClientCmd::CustomersExist { .. }
            | ClientCmd::GetOrder { .. }
            | ClientCmd::ListOrders { .. }
            | ClientCmd::GetShipment { .. }
            | ClientCmd::Sales { .. }
            | ClientCmd::OrdersBetween { .. }
            | ClientCmd::StateDigest { .. } => false,
        }
    }
}

/// Everything a shard's mailbox carries.
pub enum ShardMsg {
    Client(ClientCmd),
    /// From an order shard: for each order, hold these units (idempotent per order). One
    /// message carries every request a batch of the sender produced for this shard.
    Reserve {
        items: Vec<ReserveItem>,
    },
    /// To the order shard: per order, `None` when the part is held, else the short SKUs.
    ReserveResults {
        shard: u16,
        items: Vec<ReserveAnswer>,
    },
    /// Give back whatever is held for these orders (idempotent). Sent by an order shard
    /// after an abort or a cancel is durable, and in answer to a `HoldCheck`.
    Release {
        orders: Vec<OrderId>,
    },
    /// Move shipped units out of holds: per order, the cumulative shipped quantity of each
    /// of its SKUs on the receiving shard (idempotent).
    Ship {
        items: Vec<ReserveItem>,
    },
    /// From a stock shard after a restart: which of these orders may release their holds?
    /// Sent again every `pending_retry_ms` until each order is answered (`Release` or
    /// `HoldsKept`), so an answer lost to a panic or a rebuild is asked for again.
    HoldCheck {
        from: u16,
        orders: Vec<OrderId>,
    },
    /// The owner's answer to a `HoldCheck` for the orders whose holds stay.
    HoldsKept {
        orders: Vec<OrderId>,
    },
    /// Drive pending placements and check holds after (re)start.
    Recover,
    /// Placements wait in this shard's inbox ([`crate::inbox`]): take them all.
    Drain,
    /// From the supervisor: answered by recording `n` as seen.
    Heartbeat {
        n: u64,
    },
    Flush,
    Tick,
    /// Flush, wait until everything submitted is durable, then stop.
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// Maps a stored personal-data value to its replacement (`None`: keep it).
pub type ResealFn = Arc<dyn Fn(PersonalField, &str) -> Option<String> + Send + Sync>;

/// One order's part on one stock shard.
pub type ReserveItem = (OrderId, Vec<(String, u32)>);
/// One stock shard's answer for one order: `None` when held, else the short SKUs.
pub type ReserveAnswer = (OrderId, Option<Vec<String>>);
/// The outcomes of a `PlaceBatch`, in request order.
pub type BatchResults = Vec<Result<OrderId, CommandError>>;

impl Message for ShardMsg {
    type Result = ();
}

/// Collects the outcomes of one `PlaceBatch` (order ids) or one drained submission (order
/// views); replies when the last one is durable.
struct BatchCollector<T> {
    results: Mutex<Vec<Option<Result<T, CommandError>>>>,
    remaining: AtomicUsize,
    reply: Mutex<Option<Reply<Outcomes<T>>>>,
}

/// Each order's outcome, in request order.
type Outcomes<T> = Vec<Result<T, CommandError>>;

impl<T> BatchCollector<T> {
    fn new(count: usize, reply: Reply<Outcomes<T>>) -> BatchCollector<T> {
        BatchCollector {
            results: Mutex::new((0..count).map(|_| None).collect()),
            remaining: AtomicUsize::new(count + 1),
            reply: Mutex::new(Some(reply)),
        }
    }

    /// Records that the outcomes at `indexes` are durable (`ok`) or not (their batch failed:
    /// those orders answer `unavailable`, whatever the others answer); replies once every
    /// outcome is in.
    fn finish(&self, indexes: &[usize], units: usize, ok: bool) {
        let old = regressed(Regression::BatchLastFinisherSpeaks);
        if !ok && !old {
            let mut results = self.results.lock().expect("collector poisoned");
            for index in indexes {
                results[*index] = Some(unavailable());
            }
        }
        let count = units;
        if self.remaining.fetch_sub(count, Ordering::AcqRel) != count {
            return;
        }
        let results: Vec<Result<T, CommandError>> =
            std::mem::take(&mut *self.results.lock().expect("collector poisoned"))
                .into_iter()
                .map(|r| match r {
                    Some(_) if old && !ok => unavailable(),
                    Some(result) => result,
                    None => unavailable(),
                })
                .collect();
        if let Some(reply) = self.reply.lock().expect("collector poisoned").take() {
            let _ = reply.send(Ok(results));
        }
    }
}

/// What one batch sends to one shard once it is durable.
#[derive(Default)]
struct Outgoing {
    reserve: Vec<ReserveItem>,
    answers: Vec<ReserveAnswer>,
    ship: Vec<ReserveItem>,
    release: Vec<OrderId>,
    kept: Vec<OrderId>,
}

/// Who waits for a placement's outcome.
enum Waiter {
    One(Reply<OrderView>),
    /// An order of a `PlaceBatch`: answered its id.
    Batch(Arc<BatchCollector<OrderId>>, usize),
    /// An order of a submission from the inbox: answered its view.
    Views(Arc<BatchCollector<OrderView>>, usize),
}

struct PendingPlacement {
    parts: Vec<(u16, Vec<(String, u32)>)>,
    answers: HashMap<u16, Option<Vec<String>>>,
    waiters: Vec<Waiter>,
    idem_key: Option<String>,
    /// The sequence of its `OrderPending`: no `Reserve` (first or retry) leaves before the
    /// log is durable up to it.
    intent_seq: u64,
    /// When `Reserve` was last sent (`None`: not yet, the intent is not durable).
    last_sent: Option<Instant>,
    /// Past `engine.request_timeout_ms` from here, a placement still waiting is aborted.
    started: Instant,
}

pub struct Shard {
    id: u16,
    data: ShardData,
    settings: ShardSettings,
    writer: Sender<WriterMsg>,
    writer_stats: Arc<WriterStats>,
    router: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    gauges: Arc<ShardGauges>,
    batch: Vec<u8>,
    batch_first_seq: u64,
    batch_events: usize,
    batch_continuations: Vec<Continuation>,
    flush_scheduled: bool,
    submitted_seq: u64,
    log_digest: u64,
    pending: IdMap<OrderId, PendingPlacement>,
    /// Protocol messages to other shards (and to itself), sent once the current batch is
    /// durable: one message of each kind per destination per batch.
    outbox: BTreeMap<u16, Outgoing>,
    events_since_snapshot: u64,
    last_snapshot_seq: u64,
    last_sweep: Instant,
    /// Holds whose owner has not yet answered this actor's `HoldCheck`, with when it was
    /// last asked.
    hold_checks: IdMap<OrderId, Instant>,
    /// Ids below these were used by an earlier actor of this shard (see `next_ids`).
    id_floor: [u64; 3],
    link: ShardLink,
    /// Set by a panic or by finding itself replaced: every later message is dropped.
    poisoned: bool,
    /// The client command being applied (its kind and fingerprint), for the fault report.
    current: Option<(&'static str, u64)>,
    /// The audit entries of the current batch and this shard's audit chains
    /// ([`crate::audit`]): written with the batch, in the same storage write.
    audit: ShardChain,
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn unavailable<T>() -> Result<T, CommandError> {
    Err(CommandError::Unavailable("storage write failed".into()))
}

/// A reply to send once durable.
fn answer<T: Send + 'static>(reply: Reply<T>, value: Result<T, CommandError>) -> Continuation {
    Box::new(move |ok| {
        let _ = reply.send(if ok { value } else { unavailable() });
    })
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data: ShardData,
        log_digest: u64,
        last_snapshot_seq: u64,
        settings: ShardSettings,
        writer: Sender<WriterMsg>,
        writer_stats: Arc<WriterStats>,
        router: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        gauges: Arc<ShardGauges>,
        link: ShardLink,
        audit: ShardChain,
    ) -> Shard {
        let seq = data.last_seq;
        let id_floor = [
            gauges.next_ids[0].load(Ordering::SeqCst),
            gauges.next_ids[1].load(Ordering::SeqCst),
            gauges.next_ids[2].load(Ordering::SeqCst),
        ];
        let last_sweep = clock.instant();
        let shard = Shard {
            id: data.shard,
            data,
            settings,
            writer,
            writer_stats,
            router,
            clock,
            gauges,
            batch: Vec::new(),
            batch_first_seq: seq + 1,
            batch_events: 0,
            batch_continuations: Vec::new(),
            flush_scheduled: false,
            submitted_seq: seq,
            log_digest,
            pending: IdMap::default(),
            outbox: BTreeMap::new(),
            events_since_snapshot: seq - last_snapshot_seq,
            last_snapshot_seq,
            last_sweep,
            hold_checks: IdMap::default(),
            id_floor,
            link,
            poisoned: false,
            current: None,
            audit,
        };
        shard.publish_gauges();
        shard
    }

    fn publish_gauges(&self) {
        let g = &self.gauges;
        g.last_seq.store(self.data.last_seq, Ordering::Relaxed);
        g.orders
            .store(self.data.orders.len() as u64, Ordering::Relaxed);
        g.skus
            .store(self.data.stock.len() as u64, Ordering::Relaxed);
        g.customers
            .store(self.data.customers.len() as u64, Ordering::Relaxed);
        g.log_digest.store(self.log_digest, Ordering::Relaxed);
        let next = [
            self.data.next_order,
            self.data.next_customer,
            self.data.next_shipment,
        ];
        for (slot, next) in g.next_ids.iter().zip(next) {
            slot.fetch_max(next, Ordering::SeqCst);
        }
    }

    /// The next order counter: never one an earlier actor of this shard handed out.
    fn next_order(&self) -> u64 {
        if regressed(Regression::IdsReused) {
            return self.data.next_order;
        }
        self.data.next_order.max(self.id_floor[0])
    }

    fn next_customer(&self) -> u64 {
        self.data.next_customer.max(self.id_floor[1])
    }

    fn next_shipment(&self) -> u64 {
        self.data.next_shipment.max(self.id_floor[2])
    }

    /// Applies an event to the state and appends it to the current batch.
    fn emit(&mut self, event: Event) {
        self.data.apply(&event);
        if self.batch.is_empty() {
            event::batch_start(&mut self.batch);
            self.batch_first_seq = self.data.last_seq;
        }
        event::batch_push(&mut self.batch, &event);
        self.batch_events += 1;
    }

    /// Records a client's mutation, just applied, in the audit trail: the entry is written
    /// with the current batch.
    fn audit(&mut self, actor: &str, action: &str, target: String, detail: String) {
        let now = self.clock.now_us();
        self.audit.push(now, actor, action, target, detail);
    }

    /// Records `order.place` for an order just placed (its `OrderPlaced` or `OrderConfirmed`
    /// applied): actor, customer, lines and total as the state holds them.
    fn audit_placed(&mut self, id: OrderId) {
        let Some(order) = self.data.orders.get(&id) else {
            return;
        };
        let actor = order.placed_by.clone();
        let detail = format!(
            "customer={} lines={} total={}",
            order.customer,
            order.lines.len(),
            crate::state::order_total(order)
        );
        self.audit(&actor, "order.place", id.to_string(), detail);
    }

    /// Runs `continuation` once everything this shard has applied so far is durable: at once
    /// when nothing is in flight, else after the current batch is written.
    fn after_durable(&mut self, continuation: Continuation) {
        let durable = self.writer_stats.durable_seq[self.id as usize].load(Ordering::SeqCst);
        if self.batch_events == 0
            && self.batch_continuations.is_empty()
            && durable >= self.submitted_seq
        {
            continuation(true);
        } else {
            self.batch_continuations.push(continuation);
        }
    }

    /// Hands the current batch to the log writer.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        if !self.outbox.is_empty() {
            let outbox = std::mem::take(&mut self.outbox);
            let router = self.router.clone();
            let shard = self.id;
            // First in the batch: the messages leave before this batch's replies, so a client
            // that hears "cancelled" and then reads stock on another shard sees the release.
            self.batch_continuations.insert(
                0,
                Box::new(move |ok| {
                    if !ok {
                        return;
                    }
                    // Per destination: reserves, then shipments, then releases, so a `Release`
                    // never overtakes a `Reserve` or a `Ship` of the same order.
                    for (to, out) in outbox {
                        if !out.reserve.is_empty() {
                            router.send(to, ShardMsg::Reserve { items: out.reserve });
                        }
                        if !out.answers.is_empty() {
                            let items = out.answers;
                            router.send(to, ShardMsg::ReserveResults { shard, items });
                        }
                        if !out.ship.is_empty() {
                            router.send(to, ShardMsg::Ship { items: out.ship });
                        }
                        if !out.release.is_empty() {
                            router.send(
                                to,
                                ShardMsg::Release {
                                    orders: out.release,
                                },
                            );
                        }
                        if !out.kept.is_empty() {
                            router.send(to, ShardMsg::HoldsKept { orders: out.kept });
                        }
                    }
                }),
            );
        }
        if self.batch_events == 0 && self.batch_continuations.is_empty() {
            return;
        }
        let mut audit = Vec::new();
        let value = if self.batch_events > 0 {
            let value = std::mem::take(&mut self.batch);
            self.log_digest = xxhash_rust::xxh3::xxh3_64_with_seed(&value, self.log_digest);
            audit = self
                .audit
                .seal(self.batch_first_seq, self.data.last_seq, &value);
            Some(value)
        } else {
            None
        };
        let msg = WriterMsg::Batch {
            shard: self.id,
            generation: self.link.generation,
            first_seq: self.batch_first_seq,
            last_seq: self.data.last_seq,
            value,
            audit,
            continuations: std::mem::take(&mut self.batch_continuations),
        };
        self.events_since_snapshot += self.batch_events as u64;
        self.submitted_seq = self.data.last_seq;
        self.batch_events = 0;
        self.batch_first_seq = self.data.last_seq + 1;
        if self.writer.send(msg).is_err() {
            tracing::error!(
                message = "Log writer is gone; shard cannot make progress.",
                shard = self.id
            );
        }
        self.publish_gauges();
    }

    /// After a message: flush a full batch now, or ask the shell for a flush once the queued
    /// messages are handled (smart batching).
    fn schedule_flush(&mut self) -> Step {
        if self.batch_events >= self.settings.tunables.batch_events_max() {
            self.flush();
        } else if !self.flush_scheduled
            && (self.batch_events > 0
                || !self.batch_continuations.is_empty()
                || !self.outbox.is_empty())
        {
            self.flush_scheduled = true;
            return Step::FlushSoon;
        }
        Step::Done
    }

    fn client(&mut self, cmd: ClientCmd) {
        self.current = fingerprint(&cmd);
        if let Some((kind, fingerprint)) = self.current {
            if self.link.quarantine.contains(fingerprint) {
                refuse(cmd, quarantined(kind, fingerprint));
                return;
            }
        }
        match cmd {
            ClientCmd::AdjustStock {
                sku,
                delta,
                reason,
                actor,
                idempotency,
                reply,
            } => {
                failpoint::on_sku(&sku);
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Adjusted { on_hand, reserved })) => Ok(StockView {
                        sku,
                        on_hand,
                        reserved,
                        available: on_hand - reserved,
                    }),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.adjust(sku, delta, reason);
                        if let Ok(view) = &result {
                            self.audit(
                                &actor,
                                "stock.adjust",
                                view.sku.clone(),
                                format!("delta={delta:+}"),
                            );
                            self.remember(
                                idempotency,
                                IdemOutcome::Adjusted {
                                    on_hand: view.on_hand,
                                    reserved: view.reserved,
                                },
                            );
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::GetStock { sku, reply } => {
                let result = self.data.stock_view(&sku).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, result));
            }
            ClientCmd::CreateCustomer {
                customer,
                actor,
                idempotency,
                reply,
            } => {
                let view = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Customer(id))) => self
                        .data
                        .customer_view(CustomerId(id))
                        .ok_or(CommandError::NotFound),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let id = CustomerId::new(self.id, self.next_customer());
                        self.emit(Event::CustomerCreated {
                            id: id.0,
                            name: customer.name,
                            email: customer.email,
                            phone: customer.phone,
                            address: customer.address,
                            at_us: self.clock.now_us(),
                        });
                        if let Some(actor) = &actor {
                            self.audit(actor, "customer.create", id.to_string(), String::new());
                        }
                        self.remember(idempotency, IdemOutcome::Customer(id.0));
                        self.data.customer_view(id).ok_or(CommandError::NotFound)
                    }
                };
                self.after_durable(answer(reply, view));
            }
            ClientCmd::CustomersExist { ids, reply } => {
                let found = ids
                    .iter()
                    .map(|id| self.data.customers.contains_key(id))
                    .collect();
                self.after_durable(answer(reply, Ok(found)));
            }
            ClientCmd::GetCustomer { id, reply } => {
                let view = self.data.customer_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::Place { place, reply } => {
                if let Some(result) = self.place(place, Waiter::One(reply)) {
                    self.respond(result);
                }
            }
            ClientCmd::PlaceBatch { places, reply } => {
                let collector = Arc::new(BatchCollector::new(places.len(), reply));
                self.place_many(places, collector, Waiter::Batch, |_, result| result);
            }
            ClientCmd::GetOrder { id, reply } => {
                let view = self.data.order_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::ListOrders { filter, reply } => {
                let views = self.list(&filter);
                self.after_durable(answer(reply, Ok(views)));
            }
            ClientCmd::Cancel {
                id,
                reason,
                actor,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Cancelled(order))) if order == id.0 => {
                        self.data.order_view(id).ok_or(CommandError::NotFound)
                    }
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.cancel(id, reason, actor);
                        if result.is_ok() {
                            self.remember(idempotency, IdemOutcome::Cancelled(id.0));
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::Ship {
                shipment,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Shipment { id, events })) => {
                        self.shipment_as_answered(ShipmentId(id), events)
                    }
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.ship(shipment);
                        if let Ok(view) = &result {
                            let outcome = IdemOutcome::Shipment {
                                id: view.id.0,
                                events: view.events.len() as u32,
                            };
                            self.remember(idempotency, outcome);
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::ShipmentEvent {
                id,
                status,
                note,
                actor,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Shipment {
                        id: shipment,
                        events,
                    })) if shipment == id.0 => self.shipment_as_answered(id, events),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.shipment_event(id, status, note, actor);
                        if let Ok(view) = &result {
                            let outcome = IdemOutcome::Shipment {
                                id: id.0,
                                events: view.events.len() as u32,
                            };
                            self.remember(idempotency, outcome);
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::GetShipment { id, reply } => {
                let view = self.data.shipment_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::Sales {
                from_us,
                to_us,
                reply,
            } => {
                let summary = self.data.sales_summary(from_us, to_us);
                self.after_durable(answer(reply, Ok(summary)));
            }
            ClientCmd::OrdersBetween {
                from_us,
                to_us,
                after,
                limit,
                reply,
            } => {
                let page = self
                    .data
                    .orders_placed_between(from_us, to_us, after, limit);
                self.after_durable(answer(reply, Ok(page)));
            }
            ClientCmd::Reseal { reseal, reply } => {
                let changed = self.reseal(&reseal);
                if changed == 0 {
                    self.after_durable(answer(reply, Ok(0)));
                } else {
                    self.snapshot_with(true, answer(reply, Ok(changed)));
                }
            }
            ClientCmd::Snapshot { reply } => {
                let taken = self.snapshot();
                self.after_durable(answer(reply, Ok(taken)));
            }
            ClientCmd::StateDigest { reply } => {
                let digest = self.data.state_digest();
                self.after_durable(answer(reply, Ok(digest)));
            }
        }
    }

    /// The remembered outcome of a command retried with its Idempotency-Key: `None` for a key
    /// not seen (or no key), `Some(Err(conflict))` for a key seen with another body.
    fn remembered(
        &self,
        idempotency: &Option<Idempotency>,
    ) -> Option<Result<IdemOutcome, CommandError>> {
        let idem = idempotency.as_ref()?;
        let entry = self.data.idempotency.get(idem.key.as_str())?;
        if entry.hash != idem.request_hash {
            return Some(Err(CommandError::IdempotencyConflict));
        }
        Some(Ok(entry.outcome.clone()))
    }

    /// Records, in the batch of the mutation just applied, what a retry with its key answers.
    fn remember(&mut self, idempotency: Option<Idempotency>, outcome: IdemOutcome) {
        if let Some(idem) = idempotency {
            self.emit(Event::IdemRecorded {
                idem: IdemRecord {
                    key: idem.key,
                    hash: idem.request_hash,
                    at_us: self.clock.now_us(),
                },
                outcome,
            });
        }
    }

    /// A shipment as it was answered: its first `events` events (and the status they leave).
    fn shipment_as_answered(
        &self,
        id: ShipmentId,
        events: u32,
    ) -> Result<ShipmentView, CommandError> {
        let mut view = self.data.shipment_view(id).ok_or(CommandError::NotFound)?;
        view.events.truncate(events as usize);
        if let Some(last) = view.events.last() {
            view.status = last.status;
        }
        Ok(view)
    }

    fn adjust(
        &mut self,
        sku: String,
        delta: i64,
        reason: String,
    ) -> Result<StockView, CommandError> {
        if delta == 0 {
            return Err(CommandError::Invalid {
                param: "delta".into(),
                detail: "must not be zero".into(),
            });
        }
        if delta.unsigned_abs() > crate::domain::STOCK_DELTA_MAX {
            return Err(CommandError::Invalid {
                param: "delta".into(),
                detail: format!(
                    "delta must be from -{max} to {max}",
                    max = crate::domain::STOCK_DELTA_MAX
                ),
            });
        }
        let stock = self
            .data
            .stock
            .get(sku.as_str())
            .copied()
            .unwrap_or_default();
        let on_hand = stock.on_hand as i128 + delta as i128;
        if on_hand < stock.reserved as i128 {
            return Err(CommandError::InsufficientStock { skus: vec![sku] });
        }
        if on_hand > i64::MAX as i128 {
            return Err(CommandError::Invalid {
                param: "delta".into(),
                detail: "on_hand would overflow".into(),
            });
        }
        self.emit(Event::StockAdjusted {
            sku: sku.clone(),
            delta,
            reason,
            at_us: self.clock.now_us(),
        });
        self.data.stock_view(&sku).ok_or(CommandError::NotFound)
    }

    fn validate(place: &PlaceOrder) -> Result<(), CommandError> {
        let invalid = |param: &str, detail: &str| CommandError::Invalid {
            param: param.into(),
            detail: detail.into(),
        };
        if place.lines.is_empty() || place.lines.len() > ORDER_LINES_MAX {
            return Err(invalid("lines", "an order has 1 to 100 lines"));
        }
        let mut total: u64 = 0;
        for (i, line) in place.lines.iter().enumerate() {
            if !crate::domain::sku_is_valid(&line.sku) {
                return Err(invalid(&format!("lines[{i}].sku"), "not a valid SKU"));
            }
            // At most 100 lines: a quadratic scan allocates nothing and beats a set here.
            if place.lines[..i].iter().any(|other| other.sku == line.sku) {
                return Err(invalid(&format!("lines[{i}].sku"), "each SKU appears once"));
            }
            // The same bounds and texts as the gateway's check (`domain::add_line_amount`).
            total = crate::domain::add_line_amount(total, line.qty, line.unit_price).map_err(
                |error| CommandError::Invalid {
                    param: format!("lines[{i}].{}", error.field()),
                    detail: error.detail(),
                },
            )?;
        }
        Ok(())
    }

    /// Places an order. Returns the waiter with the outcome when it is known now; keeps the
    /// waiter (returns `None`) when a cross-shard placement must finish first.
    fn place(
        &mut self,
        place: PlaceOrder,
        reply: Waiter,
    ) -> Option<(Waiter, Result<OrderId, CommandError>)> {
        let fingerprint = place_fingerprint(&place);
        self.current = Some(("place_order", fingerprint));
        if self.link.quarantine.contains(fingerprint) {
            return Some((reply, Err(quarantined("place_order", fingerprint))));
        }
        for line in &place.lines {
            failpoint::on_sku(&line.sku);
        }
        if let Some(idem) = &place.idempotency {
            if let Some(entry) = self.data.idempotency.get(idem.key.as_str()) {
                if entry.hash != idem.request_hash {
                    return Some((reply, Err(CommandError::IdempotencyConflict)));
                }
                return match entry.outcome.clone() {
                    IdemOutcome::Order(id) => {
                        let id = OrderId(id);
                        if let Some(pending) = self.pending.get_mut(&id) {
                            pending.waiters.push(reply);
                            None
                        } else {
                            Some((reply, Ok(id)))
                        }
                    }
                    IdemOutcome::Rejected(skus) => {
                        Some((reply, Err(CommandError::InsufficientStock { skus })))
                    }
                    // The key was used for another kind of command.
                    IdemOutcome::Adjusted { .. }
                    | IdemOutcome::Customer(_)
                    | IdemOutcome::Shipment { .. }
                    | IdemOutcome::Cancelled(_) => {
                        Some((reply, Err(CommandError::IdempotencyConflict)))
                    }
                };
            }
        }
        if let Err(error) = Self::validate(&place) {
            return Some((reply, Err(error)));
        }
        if place.customer_id.shard() == self.id
            && !self.data.customers.contains_key(&place.customer_id)
        {
            return Some((reply, Err(CommandError::UnknownCustomer)));
        }
        let count = self.data.shard_count;
        let local = place
            .lines
            .iter()
            .all(|line| shard_of_sku(&line.sku, count) == self.id);
        if local {
            let result = self.place_local(place);
            return Some((reply, result));
        }
        self.place_cross(place, reply);
        None
    }

    fn record(&self, place: PlaceOrder, now: i64) -> (OrderRecord, Option<IdemRecord>) {
        let id = OrderId::new(self.id, self.next_order());
        let idem = place.idempotency.map(|i| IdemRecord {
            key: i.key,
            hash: i.request_hash,
            at_us: now,
        });
        let record = OrderRecord {
            id: id.0,
            customer: place.customer_id.0,
            lines: place
                .lines
                .into_iter()
                .map(|l| LineRecord {
                    sku: l.sku,
                    qty: l.qty,
                    unit_price: l.unit_price,
                })
                .collect(),
            shipping_address: place.shipping_address,
            note: place.note,
            at_us: now,
            actor: place.actor,
        };
        (record, idem)
    }

    /// Sends a placement's outcome once durable: the order as placed, or the error.
    fn respond(&mut self, (waiter, result): (Waiter, Result<OrderId, CommandError>)) {
        match waiter {
            Waiter::One(reply) => {
                let view = result.and_then(|id| {
                    self.data.placed_view(id).ok_or_else(|| {
                        CommandError::Unavailable("placement still in progress".into())
                    })
                });
                self.after_durable(answer(reply, view));
            }
            Waiter::Batch(collector, index) => {
                collector.results.lock().expect("collector poisoned")[index] = Some(result);
                self.after_durable(Box::new(move |ok| collector.finish(&[index], 1, ok)));
            }
            Waiter::Views(collector, index) => {
                let view = self.outcome_view(result);
                collector.results.lock().expect("collector poisoned")[index] = Some(view);
                self.after_durable(Box::new(move |ok| collector.finish(&[index], 1, ok)));
            }
        }
    }

    /// A placement's outcome as its order's view.
    fn outcome_view(
        &self,
        result: Result<OrderId, CommandError>,
    ) -> Result<OrderView, CommandError> {
        result.and_then(|id| {
            self.data
                .placed_view(id)
                .ok_or_else(|| CommandError::Unavailable("placement still in progress".into()))
        })
    }

    /// Places every order of a `PlaceBatch` or of a drained submission in this step: one log
    /// batch, one durability gate for the outcomes known at once, one reply when the last
    /// outcome (a cross-shard order may take longer) is durable.
    fn place_many<T: Send + 'static>(
        &mut self,
        places: Vec<PlaceOrder>,
        collector: Arc<BatchCollector<T>>,
        waiter: fn(Arc<BatchCollector<T>>, usize) -> Waiter,
        convert: fn(&Shard, Result<OrderId, CommandError>) -> Result<T, CommandError>,
    ) {
        let mut ready = Vec::with_capacity(places.len());
        let mut outcomes = Vec::with_capacity(places.len());
        for (index, place) in places.into_iter().enumerate() {
            if let Some((_, result)) = self.place(place, waiter(collector.clone(), index)) {
                outcomes.push((index, convert(self, result)));
            }
            // `engine.batch_events_max` bounds a log batch here too: a large submission is
            // written as several batches. The gate below waits for the last, and this shard's
            // batches become durable in order (a failed one poisons the shard, so a later one
            // is never written after it).
            if self.batch_events >= self.settings.tunables.batch_events_max() {
                self.flush();
            }
        }
        {
            let mut results = collector.results.lock().expect("collector poisoned");
            for (index, result) in outcomes {
                results[index] = Some(result);
                ready.push(index);
            }
        }
        // One durability gate for every outcome known now (plus one unit of `remaining` for
        // the gate itself, so an all-pending batch waits for it too).
        self.after_durable(Box::new(move |ok| {
            collector.finish(&ready, ready.len() + 1, ok)
        }));
    }

    /// Places everything queued in the inbox ([`crate::inbox`]): each submission answers
    /// once all of its outcomes are durable.
    fn drain_inbox(&mut self) {
        for submission in self.link.inbox.take() {
            let collector = Arc::new(BatchCollector::new(
                submission.places.len(),
                submission.reply,
            ));
            self.place_many(
                submission.places,
                collector,
                Waiter::Views,
                Shard::outcome_view,
            );
        }
    }

    /// The one-shard fast path: every line's stock lives here.
    fn place_local(&mut self, place: PlaceOrder) -> Result<OrderId, CommandError> {
        let short: Vec<String> = place
            .lines
            .iter()
            .filter(|line| self.data.available(&line.sku) < line.qty as u64)
            .map(|line| line.sku.clone())
            .collect();
        let now = self.clock.now_us();
        let (record, idem) = self.record(place, now);
        if !short.is_empty() {
            if let Some(idem) = idem {
                self.emit(Event::PlacementRejected {
                    idem,
                    short: short.clone(),
                });
            }
            return Err(CommandError::InsufficientStock { skus: short });
        }
        let id = OrderId(record.id);
        self.emit(Event::OrderPlaced {
            order: record,
            idem,
        });
        self.audit_placed(id);
        Ok(id)
    }

    /// The cross-shard path: durable intent first, then `Reserve` to every part's shard.
    fn place_cross(&mut self, place: PlaceOrder, reply: Waiter) {
        let count = self.data.shard_count;
        let mut parts: Vec<(u16, Vec<(String, u32)>)> = Vec::new();
        for line in &place.lines {
            let shard = shard_of_sku(&line.sku, count);
            match parts.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, lines)) => lines.push((line.sku.clone(), line.qty)),
                None => parts.push((shard, vec![(line.sku.clone(), line.qty)])),
            }
        }
        let (record, idem) = self.record(place, self.clock.now_us());
        let order = OrderId(record.id);
        let idem_key = idem.as_ref().map(|i| i.key.clone());
        self.emit(Event::OrderPending {
            order: record,
            idem,
        });
        let now = self.clock.instant();
        self.pending.insert(
            order,
            PendingPlacement {
                parts: parts.clone(),
                answers: HashMap::new(),
                waiters: vec![reply],
                idem_key,
                intent_seq: self.data.last_seq,
                last_sent: Some(now),
                started: now,
            },
        );
        // Sent after this batch (holding `OrderPending`) is durable: see `flush`.
        for (shard, lines) in parts {
            self.outbox
                .entry(shard)
                .or_default()
                .reserve
                .push((order, lines));
        }
    }

    fn reserve(&mut self, order: OrderId, lines: Vec<(String, u32)>) {
        let held_as_asked = match self.data.holds.get(&order) {
            None => false,
            Some(_) if regressed(Regression::HoldNotTiedToLines) => true,
            Some(held) => {
                held.len() == lines.len()
                    && lines
                        .iter()
                        .all(|(sku, qty)| held.iter().any(|(s, q, _)| **s == **sku && *q == *qty))
            }
        };
        if !held_as_asked && self.data.holds.contains_key(&order) {
            // A hold under this id that is not this order's (lines differ): it belongs to
            // nothing live, so it is released before this order's own reservation.
            tracing::warn!(message = "Released a hold whose lines differ from its order's.", shard = self.id, order = %order);
            self.emit(Event::Released { order: order.0 });
        }
        let short = if held_as_asked {
            None
        } else {
            let short: Vec<String> = lines
                .iter()
                .filter(|(sku, qty)| self.data.available(sku) < *qty as u64)
                .map(|(sku, _)| sku.clone())
                .collect();
            if short.is_empty() {
                self.emit(Event::Reserved {
                    order: order.0,
                    lines,
                });
                None
            } else {
                Some(short)
            }
        };
        // Answered after this batch (holding `Reserved`) is durable: see `flush`.
        self.outbox
            .entry(order.shard())
            .or_default()
            .answers
            .push((order, short));
    }

    fn reserve_result(&mut self, order: OrderId, shard: u16, short: Option<Vec<String>>) {
        let Some(pending) = self.pending.get_mut(&order) else {
            return;
        };
        pending.answers.insert(shard, short);
        if pending.answers.len() < pending.parts.len() {
            return;
        }
        let pending = self.pending.remove(&order).expect("present");
        let mut short: Vec<String> = pending.answers.into_values().flatten().flatten().collect();
        short.sort_unstable();
        short.dedup();
        let now = self.clock.now_us();
        if short.is_empty() {
            self.emit(Event::OrderConfirmed {
                order: order.0,
                at_us: now,
            });
            self.audit_placed(order);
            for waiter in pending.waiters {
                self.respond((waiter, Ok(order)));
            }
        } else {
            self.emit(Event::OrderAborted {
                order: order.0,
                short: short.clone(),
                idem_key: pending.idem_key,
                at_us: now,
            });
            for (shard, _) in &pending.parts {
                self.outbox.entry(*shard).or_default().release.push(order);
            }
            for waiter in pending.waiters {
                self.respond((
                    waiter,
                    Err(CommandError::InsufficientStock {
                        skus: short.clone(),
                    }),
                ));
            }
        }
    }

    /// A placement whose parts have not all answered by `engine.request_timeout_ms`: aborted
    /// (its idempotency key is freed, so a retry places it anew), every part released, and
    /// its waiters answered `unavailable`.
    fn abort_expired(&mut self, order: OrderId, timeout: Duration) {
        let Some(pending) = self.pending.remove(&order) else {
            return;
        };
        let missing: Vec<u16> = pending
            .parts
            .iter()
            .map(|(shard, _)| *shard)
            .filter(|shard| !pending.answers.contains_key(shard))
            .collect();
        tracing::warn!(
            message = "Aborted a placement whose parts did not answer in time.",
            shard = self.id,
            order = %order,
            missing = ?missing,
            timeout_ms = timeout.as_millis() as u64
        );
        self.emit(Event::OrderAborted {
            order: order.0,
            short: Vec::new(),
            idem_key: pending.idem_key,
            at_us: self.clock.now_us(),
        });
        for (shard, _) in &pending.parts {
            self.outbox.entry(*shard).or_default().release.push(order);
        }
        let detail = format!(
            "shards {missing:?} did not answer within engine.request_timeout_ms ({} ms); the placement was aborted and a retry with the same Idempotency-Key places it anew",
            timeout.as_millis()
        );
        for waiter in pending.waiters {
            self.respond((waiter, Err(CommandError::Unavailable(detail.clone()))));
        }
    }

    fn release(&mut self, order: OrderId) {
        self.hold_checks.remove(&order);
        if self.data.holds.contains_key(&order) {
            self.emit(Event::Released { order: order.0 });
        }
    }

    fn cancel(
        &mut self,
        id: OrderId,
        reason: Option<String>,
        actor: String,
    ) -> Result<OrderView, CommandError> {
        let order = self.data.orders.get(&id).ok_or(CommandError::NotFound)?;
        match order.status {
            OrderStatus::Pending => return Err(CommandError::NotFound),
            OrderStatus::Cancelled => return Ok(self.data.view(order)),
            OrderStatus::Confirmed => {}
            other => {
                return Err(CommandError::InvalidTransition(format!(
                    "an order that is {} cannot be cancelled",
                    other.as_str()
                )))
            }
        }
        let cross = order.cross;
        let count = self.data.shard_count;
        let mut parts: Vec<u16> = order
            .lines
            .iter()
            .map(|line| shard_of_sku(&line.sku, count))
            .collect();
        parts.sort_unstable();
        parts.dedup();
        self.audit(&actor, "order.cancel", id.to_string(), String::new());
        self.emit(Event::OrderCancelled {
            order: id.0,
            reason,
            actor,
            at_us: self.clock.now_us(),
        });
        if cross {
            for shard in parts {
                self.outbox.entry(shard).or_default().release.push(id);
            }
        }
        Ok(self.data.view(self.data.orders.get(&id).expect("present")))
    }

    /// Ships units of an order: the named lines, or everything not yet shipped.
    fn ship(&mut self, request: NewShipment) -> Result<ShipmentView, CommandError> {
        let order = self
            .data
            .orders
            .get(&request.order_id)
            .ok_or(CommandError::NotFound)?;
        match order.status {
            OrderStatus::Pending => return Err(CommandError::NotFound),
            OrderStatus::Confirmed | OrderStatus::PartiallyShipped => {}
            other => {
                return Err(CommandError::InvalidTransition(format!(
                    "an order that is {} has nothing left to ship",
                    other.as_str()
                )))
            }
        }
        let lines: Vec<(String, u32)> = match request.lines {
            None => order
                .lines
                .iter()
                .filter(|l| l.shipped < l.qty)
                .map(|l| (l.sku.to_string(), l.qty - l.shipped))
                .collect(),
            Some(lines) => {
                if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
                    return Err(CommandError::Invalid {
                        param: "lines".into(),
                        detail: "a shipment has 1 to 100 lines".into(),
                    });
                }
                for (i, (sku, qty)) in lines.iter().enumerate() {
                    let invalid = |field: &str, detail: &str| CommandError::Invalid {
                        param: format!("lines[{i}].{field}"),
                        detail: detail.into(),
                    };
                    if lines[..i].iter().any(|(other, _)| other == sku) {
                        return Err(invalid("sku", "each SKU appears once"));
                    }
                    if *qty == 0 {
                        return Err(invalid("qty", "qty must be at least 1"));
                    }
                    if *qty > crate::domain::LINE_QTY_MAX {
                        return Err(invalid(
                            "qty",
                            &format!("qty must be at most {}", crate::domain::LINE_QTY_MAX),
                        ));
                    }
                    let Some(line) = order.lines.iter().find(|l| *l.sku == **sku) else {
                        return Err(invalid("sku", "this SKU is not in the order"));
                    };
                    if *qty > line.qty - line.shipped {
                        return Err(CommandError::InvalidTransition(format!(
                            "{sku}: {qty} requested, {} left to ship",
                            line.qty - line.shipped
                        )));
                    }
                }
                lines
            }
        };
        if lines.is_empty() {
            return Err(CommandError::InvalidTransition(
                "nothing is left to ship".into(),
            ));
        }
        let cross = order.cross;
        let id = ShipmentId::new(self.id, self.next_shipment());
        let units: u64 = lines.iter().map(|(_, qty)| u64::from(*qty)).sum();
        self.audit(
            &request.actor,
            "shipment.create",
            id.to_string(),
            format!("order={} units={units}", request.order_id),
        );
        self.emit(Event::ShipmentCreated {
            id: id.0,
            order: request.order_id.0,
            carrier: request.carrier,
            tracking: format!("ODT{:016X}", id.0),
            lines,
            actor: request.actor,
            at_us: self.clock.now_us(),
        });
        if cross {
            // Each part's shard moves its units out of the hold: cumulative totals, so a
            // repeat (after a crash, through `HoldCheck`) changes nothing.
            let count = self.data.shard_count;
            let order = &self.data.orders[&request.order_id];
            let mut parts: BTreeMap<u16, Vec<(String, u32)>> = BTreeMap::new();
            for line in order.lines.iter().filter(|l| l.shipped > 0) {
                parts
                    .entry(shard_of_sku(&line.sku, count))
                    .or_default()
                    .push((line.sku.to_string(), line.shipped));
            }
            for (shard, shipped) in parts {
                self.outbox
                    .entry(shard)
                    .or_default()
                    .ship
                    .push((request.order_id, shipped));
            }
        }
        self.data.shipment_view(id).ok_or(CommandError::NotFound)
    }

    fn shipment_event(
        &mut self,
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<String>,
        actor: String,
    ) -> Result<ShipmentView, CommandError> {
        let shipment = self.data.shipments.get(&id).ok_or(CommandError::NotFound)?;
        if shipment.status.is_final() {
            return Err(CommandError::InvalidTransition(format!(
                "the shipment is {}",
                shipment.status.as_str()
            )));
        }
        if status == ShipmentStatus::Shipped {
            return Err(CommandError::Invalid {
                param: "status".into(),
                detail: "one of in_transit, delivered, failed".into(),
            });
        }
        self.audit(
            &actor,
            "shipment.event",
            id.to_string(),
            status.as_str().into(),
        );
        self.emit(Event::ShipmentUpdated {
            id: id.0,
            status,
            note,
            actor,
            at_us: self.clock.now_us(),
        });
        self.data.shipment_view(id).ok_or(CommandError::NotFound)
    }

    /// A stock shard's half of shipping a cross-shard order: moves the units out of the hold.
    fn ship_hold(&mut self, order: OrderId, shipped: Vec<(String, u32)>) {
        let Some(held) = self.data.holds.get(&order) else {
            return;
        };
        let changes = shipped.iter().any(|(sku, total)| {
            held.iter()
                .any(|(s, qty, done)| **s == **sku && total > done && total <= qty)
        });
        let valid = shipped
            .iter()
            .all(|(sku, total)| held.iter().any(|(s, qty, _)| **s == **sku && total <= qty));
        if changes && valid {
            self.emit(Event::HoldShipped {
                order: order.0,
                shipped,
            });
        } else if !valid {
            tracing::error!(message = "Ignored a shipment that does not match its hold.", shard = self.id, order = %order);
        }
    }

    /// Replaces personal-data values as `reseal` says; returns how many events it wrote.
    fn reseal(&mut self, reseal: &ResealFn) -> u64 {
        let mut events = Vec::new();
        let mut ids: Vec<CustomerId> = self.data.customers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let c = &self.data.customers[&id];
            let name = reseal(PersonalField::CustomerName, &c.name);
            let email = reseal(PersonalField::CustomerEmail, &c.email);
            let phone = c
                .phone
                .as_deref()
                .map(|v| reseal(PersonalField::CustomerPhone, v));
            let address = c
                .address
                .as_deref()
                .map(|v| reseal(PersonalField::CustomerAddress, v));
            let changed = name.is_some()
                || email.is_some()
                || phone.as_ref().is_some_and(Option::is_some)
                || address.as_ref().is_some_and(Option::is_some);
            if changed {
                events.push(Event::CustomerResealed {
                    id: id.0,
                    name: name.unwrap_or_else(|| c.name.clone()),
                    email: email.unwrap_or_else(|| c.email.clone()),
                    phone: phone.map(|v| v.unwrap_or_else(|| c.phone.clone().unwrap_or_default())),
                    address: address
                        .map(|v| v.unwrap_or_else(|| c.address.clone().unwrap_or_default())),
                });
            }
        }
        let mut orders: Vec<OrderId> = self.data.orders.keys().copied().collect();
        orders.sort_unstable();
        for id in orders {
            let order = &self.data.orders[&id];
            if let Some(address) = order.shipping_address() {
                if let Some(sealed) = reseal(PersonalField::OrderShippingAddress, address) {
                    events.push(Event::OrderAddressResealed {
                        order: id.0,
                        shipping_address: Some(sealed),
                    });
                }
            }
        }
        let count = events.len() as u64;
        for event in events {
            self.emit(event);
        }
        count
    }

    fn list(&self, filter: &OrderFilter) -> Vec<OrderView> {
        let upper = match filter.after {
            Some(cursor) => std::ops::Bound::Excluded((cursor.created_at_us, cursor.id)),
            None => std::ops::Bound::Unbounded,
        };
        self.data
            .order_index
            .range((std::ops::Bound::Unbounded, upper))
            .rev()
            .filter_map(|(_, id)| self.data.orders.get(id))
            .filter(|o| o.status != OrderStatus::Pending)
            .filter(|o| filter.customer_id.is_none_or(|c| c == o.customer))
            .filter(|o| filter.status.is_none_or(|s| s == o.status))
            .take(filter.limit)
            .map(|o| self.data.view(o))
            .collect()
    }

    /// After (re)start: re-send `Reserve` for every pending placement, and ask each order's
    /// shard whether the holds kept here still belong to live orders.
    fn recover(&mut self) {
        let pending: Vec<OrderId> = self
            .data
            .orders
            .values()
            .filter(|o| o.status == OrderStatus::Pending)
            .map(|o| o.id)
            .collect();
        let count = self.data.shard_count;
        for order in pending {
            if self.pending.contains_key(&order) {
                continue;
            }
            let o = &self.data.orders[&order];
            let mut parts: Vec<(u16, Vec<(String, u32)>)> = Vec::new();
            for line in o.lines.iter() {
                let shard = shard_of_sku(&line.sku, count);
                match parts.iter_mut().find(|(s, _)| *s == shard) {
                    Some((_, lines)) => lines.push((line.sku.to_string(), line.qty)),
                    None => parts.push((shard, vec![(line.sku.to_string(), line.qty)])),
                }
            }
            let idem_key = self
                .data
                .idempotency
                .iter()
                .find(|(_, e)| e.outcome == IdemOutcome::Order(order.0))
                .map(|(k, _)| k.to_string());
            for (shard, lines) in &parts {
                self.router.send(
                    *shard,
                    ShardMsg::Reserve {
                        items: vec![(order, lines.clone())],
                    },
                );
            }
            let now = self.clock.instant();
            self.pending.insert(
                order,
                PendingPlacement {
                    parts,
                    answers: HashMap::new(),
                    waiters: Vec::new(),
                    idem_key,
                    // Recovered from storage: durable.
                    intent_seq: 0,
                    last_sent: Some(now),
                    started: now,
                },
            );
        }
        let now = self.clock.instant();
        let orders: Vec<OrderId> = self.data.holds.keys().copied().collect();
        for order in orders {
            self.hold_checks.insert(order, now);
        }
        self.send_hold_checks(|_| true);
        if regressed(Regression::HoldCheckOnce) {
            self.hold_checks.clear(); // the old code asked once and forgot
        }
    }

    /// Asks each owner about the holds `due` selects among those not yet answered.
    fn send_hold_checks(&mut self, due: impl Fn(Instant) -> bool) {
        let mut by_owner: BTreeMap<u16, Vec<OrderId>> = BTreeMap::new();
        let now = self.clock.instant();
        for (order, asked) in self.hold_checks.iter_mut() {
            if due(*asked) {
                *asked = now;
                by_owner.entry(order.shard()).or_default().push(*order);
            }
        }
        for (owner, orders) in by_owner {
            self.router.send(
                owner,
                ShardMsg::HoldCheck {
                    from: self.id,
                    orders,
                },
            );
        }
    }

    fn hold_check(&mut self, from: u16, orders: Vec<OrderId>) {
        // Shipped units first (a `Ship` lost in a crash is sent again), then releases.
        let count = self.data.shard_count;
        let mut ship = Vec::new();
        for id in &orders {
            if let Some(order) = self.data.orders.get(id) {
                let shipped: Vec<(String, u32)> = order
                    .lines
                    .iter()
                    .filter(|l| l.shipped > 0 && shard_of_sku(&l.sku, count) == from)
                    .map(|l| (l.sku.to_string(), l.shipped))
                    .collect();
                if order.cross && !shipped.is_empty() {
                    ship.push((*id, shipped));
                }
            }
        }
        if !ship.is_empty() {
            self.outbox.entry(from).or_default().ship.extend(ship);
        }
        let (kept, release): (Vec<OrderId>, Vec<OrderId>) =
            orders
                .into_iter()
                .partition(|id| match self.data.orders.get(id) {
                    // A pending placement keeps its holds until it is decided.
                    Some(order) => order.cross && order.status.holds_stock(),
                    None => false,
                });
        // Answered once what this shard applied is durable (a cancel the answer relies on
        // must not be lost in a crash): the outbox goes out after the current batch.
        let out = self.outbox.entry(from).or_default();
        out.release.extend(release);
        out.kept.extend(kept);
    }

    fn tick(&mut self) {
        let retry = Duration::from_millis(self.settings.pending_retry_ms);
        let timeout = Duration::from_millis(self.settings.tunables.request_timeout_ms());
        let now = self.clock.instant();
        let durable = self.writer_stats.durable_seq[self.id as usize].load(Ordering::SeqCst);
        let mut expired: Vec<OrderId> = Vec::new();
        for (order, pending) in self.pending.iter_mut() {
            if now.duration_since(pending.started) >= timeout
                && !regressed(Regression::NoDeadlineAbort)
            {
                expired.push(*order);
                continue;
            }
            // Never before the intent is durable: a stock shard holds units only for orders
            // with a durable record.
            if durable < pending.intent_seq && !regressed(Regression::ReserveBeforeDurable) {
                continue;
            }
            if pending
                .last_sent
                .is_some_and(|sent| now.duration_since(sent) < retry)
            {
                continue;
            }
            pending.last_sent = Some(now);
            for (shard, lines) in &pending.parts {
                if !pending.answers.contains_key(shard) {
                    self.router.send(
                        *shard,
                        ShardMsg::Reserve {
                            items: vec![(*order, lines.clone())],
                        },
                    );
                }
            }
        }
        for order in expired {
            self.abort_expired(order, timeout);
        }
        if !regressed(Regression::HoldCheckOnce) {
            self.send_hold_checks(|asked| now.duration_since(asked) >= retry);
        }
        if now.duration_since(self.last_sweep) >= Duration::from_secs(60) {
            self.last_sweep = now;
            let cutoff =
                self.clock.now_us() - self.settings.idempotency_retention_s as i64 * 1_000_000;
            let swept = self.data.sweep_idempotency(cutoff);
            if swept > 0 {
                tracing::debug!(message = "Swept idempotency keys.", shard = self.id, swept);
            }
        }
        if self.events_since_snapshot + self.batch_events as u64
            >= self.settings.snapshot_interval_events
        {
            self.snapshot();
        }
    }

    /// Writes a snapshot of the whole state at the current sequence (after flushing the
    /// current batch), keeps the previous one, and trims the log older than that one.
    fn snapshot(&mut self) -> SnapshotTaken {
        let shard = self.id;
        self.snapshot_with(
            false,
            Box::new(move |ok| {
                if !ok {
                    tracing::error!(message = "Failed to write a snapshot.", shard);
                }
            }),
        )
    }

    /// Writes a snapshot; with `purge`, every older snapshot and the whole log up to it are
    /// deleted (not only what precedes the previous snapshot). `done` runs once it is written.
    fn snapshot_with(&mut self, purge: bool, done: Continuation) -> SnapshotTaken {
        self.flush();
        let seq = self.data.last_seq;
        let started = self.clock.instant();
        let mut snapshot = self.data.to_snapshot();
        snapshot.log_digest = self.log_digest;
        let value = snapshot.encode_canonical();
        let bytes = value.len();
        let pause_us = started.elapsed().as_micros() as u64;
        let mut writes = vec![Write::Put {
            family: Family::Snap,
            key: shard_key(self.id, seq),
            value,
        }];
        if purge {
            writes.push(Write::DeleteRange {
                family: Family::Snap,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, seq),
            });
            writes.push(Write::DeleteRange {
                family: Family::Log,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, seq + 1),
            });
        } else if self.last_snapshot_seq > 0 {
            writes.push(Write::DeleteRange {
                family: Family::Snap,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, self.last_snapshot_seq),
            });
            writes.push(Write::DeleteRange {
                family: Family::Log,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, self.last_snapshot_seq + 1),
            });
        }
        let msg = WriterMsg::Raw {
            writes,
            guard: Some((self.id, self.link.generation)),
            done,
        };
        let _ = self.writer.send(msg);
        tracing::info!(
            message = "Snapshot taken.",
            shard = self.id,
            seq,
            bytes,
            pause_ms = pause_us / 1000
        );
        self.last_snapshot_seq = seq;
        self.events_since_snapshot = 0;
        SnapshotTaken { seq, pause_us }
    }
}

/// The error of a quarantined command.
fn quarantined(kind: &str, fingerprint: u64) -> CommandError {
    CommandError::Quarantined(format!(
        "{kind} (command {fingerprint:016x}) made a shard panic twice and is refused; see GET /v1/ops/quarantine (an operator lifts it with DELETE /v1/ops/quarantine/{fingerprint:016x}) and GET /v1/ops/incidents"
    ))
}

/// Answers a client command with an error without applying it.
fn refuse(cmd: ClientCmd, error: CommandError) {
    fn send<T>(reply: Reply<T>, error: CommandError) {
        let _ = reply.send(Err(error));
    }
    match cmd {
        ClientCmd::AdjustStock { reply, .. } | ClientCmd::GetStock { reply, .. } => {
            send(reply, error)
        }
        ClientCmd::CreateCustomer { reply, .. } | ClientCmd::GetCustomer { reply, .. } => {
            send(reply, error)
        }
        ClientCmd::Place { reply, .. }
        | ClientCmd::GetOrder { reply, .. }
        | ClientCmd::Cancel { reply, .. } => send(reply, error),
        ClientCmd::PlaceBatch { reply, .. } => send(reply, error),
        ClientCmd::CustomersExist { reply, .. } => send(reply, error),
        ClientCmd::ListOrders { reply, .. } | ClientCmd::OrdersBetween { reply, .. } => {
            send(reply, error)
        }
        ClientCmd::Ship { reply, .. }
        | ClientCmd::ShipmentEvent { reply, .. }
        | ClientCmd::GetShipment { reply, .. } => send(reply, error),
        ClientCmd::Sales { reply, .. } => send(reply, error),
        ClientCmd::Reseal { reply, .. } | ClientCmd::StateDigest { reply, .. } => {
            send(reply, error)
        }
        ClientCmd::Snapshot { reply } => send(reply, error),
    }
}

fn hash_u64(seed: u64, value: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&value.to_le_bytes(), seed)
}

fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed)
}

/// Names a client command and hashes what identifies it (its kind and arguments, never who
/// asks or when), so the same command sent again has the same fingerprint across restarts.
/// `None` for commands that are not quarantined one by one: placements (fingerprinted per
/// order in `place`), listings and the internal ones.
fn fingerprint(cmd: &ClientCmd) -> Option<(&'static str, u64)> {
    let (kind, bytes, number): (&'static str, &[u8], u64) = match cmd {
        ClientCmd::AdjustStock { sku, delta, .. } => {
            ("adjust_stock", sku.as_bytes(), *delta as u64)
        }
        ClientCmd::GetStock { sku, .. } => ("get_stock", sku.as_bytes(), 0),
        // Personal data arrives sealed under a fresh nonce, so a repeat differs; the
        // supervisor's restart intensity bounds a customer that keeps panicking.
        ClientCmd::CreateCustomer { customer, .. } => {
            ("create_customer", customer.email.as_bytes(), 0)
        }
        ClientCmd::GetCustomer { id, .. } => ("get_customer", &[], id.0),
        ClientCmd::GetOrder { id, .. } => ("get_order", &[], id.0),
        ClientCmd::Cancel { id, .. } => ("cancel_order", &[], id.0),
        ClientCmd::Ship { shipment, .. } => {
            ("ship", shipment.carrier.as_bytes(), shipment.order_id.0)
        }
        ClientCmd::ShipmentEvent { id, status, .. } => {
            ("shipment_event", status.as_str().as_bytes(), id.0)
        }
        ClientCmd::GetShipment { id, .. } => ("get_shipment", &[], id.0),
        ClientCmd::Sales { from_us, to_us, .. } => (
            "sales_summary",
            &[],
            hash_u64(*from_us as u64, *to_us as u64),
        ),
        ClientCmd::OrdersBetween { from_us, to_us, .. } => (
            "orders_between",
            &[],
            hash_u64(*from_us as u64, *to_us as u64),
        ),
        ClientCmd::Place { .. }
        | ClientCmd::PlaceBatch { .. }
        | ClientCmd::CustomersExist { .. }
        | ClientCmd::ListOrders { .. }
        | ClientCmd::Reseal { .. }
        | ClientCmd::Snapshot { .. }
        | ClientCmd::StateDigest { .. } => return None,
    };
    let seed = hash_bytes(0, kind.as_bytes());
    Some((kind, hash_u64(hash_bytes(seed, bytes), number)))
}

/// The fingerprint of one order: the whole command but who sends it and when. With an
/// Idempotency-Key that is the hash of the request body the gateway computed (plaintext, so a
/// retry has the same fingerprint although its address is sealed under a fresh nonce) and the
/// customer; without one, the customer, every line (SKU, quantity, price), the sealed address
/// and the note. So an order equal to a quarantined one except in price or address is not
/// refused with it.
fn place_fingerprint(place: &PlaceOrder) -> u64 {
    let mut hash = hash_u64(hash_bytes(0, b"place_order"), place.customer_id.0);
    if let Some(idem) = &place.idempotency {
        return hash_bytes(hash, &idem.request_hash.to_le_bytes());
    }
    for line in &place.lines {
        hash = hash_u64(hash_bytes(hash, line.sku.as_bytes()), u64::from(line.qty));
        hash = hash_u64(hash, line.unit_price);
    }
    for text in [&place.shipping_address, &place.note] {
        hash = match text {
            Some(text) => hash_bytes(hash_u64(hash, 1), text.as_bytes()),
            None => hash_u64(hash, 0),
        };
    }
    hash
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        let interval = Duration::from_millis(self.settings.pending_retry_ms.clamp(10, 1000));
        ctx.run_interval(interval, |_, ctx| ctx.notify(ShardMsg::Tick));
    }
}

impl Handler<ShardMsg> for Shard {
    type Result = ();

    /// The shell: one message through [`Shard::step`], then what the step asks for.
    fn handle(&mut self, msg: ShardMsg, ctx: &mut Context<Self>) {
        match self.step(msg) {
            Step::Done => {}
            Step::FlushSoon => ctx.notify(ShardMsg::Flush),
            Step::Stop => ctx.stop(),
        }
    }
}

impl Shard {
    /// The shard's id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// This actor's generation.
    pub fn generation(&self) -> u64 {
        self.link.generation
    }

    /// The shard's state (read by the simulator's invariant checks).
    pub fn data(&self) -> &ShardData {
        &self.data
    }

    /// Placements waiting for their parts' answers: (order, age).
    pub fn pending_placements(&self) -> Vec<(OrderId, Duration)> {
        let now = self.clock.instant();
        self.pending
            .iter()
            .map(|(id, p)| (*id, now.saturating_duration_since(p.started)))
            .collect()
    }

    /// Holds whose owner has not answered this actor's `HoldCheck` yet.
    pub fn awaiting_hold_checks(&self) -> usize {
        self.hold_checks.len()
    }

    /// True once a panic or a replacement stopped it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Handles one message: the whole of the state machine's input. Every message is applied
    /// inside `catch_unwind`; a panic poisons the shard and reports a fault.
    pub fn step(&mut self, msg: ShardMsg) -> Step {
        if self.poisoned {
            return Step::Stop; // dropped: a reply inside it answers `unavailable`
        }
        if self.writer_stats.generations[self.id as usize].load(Ordering::SeqCst)
            != self.link.generation
        {
            tracing::warn!(
                message = "Replaced shard actor woke up; it stops without writing anything.",
                shard = self.id,
                generation = self.link.generation
            );
            self.poison();
            return Step::Stop;
        }
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(msg)));
        match applied {
            Ok(step) => {
                self.current = None;
                step
            }
            Err(payload) => {
                self.on_panic(payload);
                Step::Stop
            }
        }
    }

    /// After a panic: the state may be half-changed, so nothing more is applied or written.
    fn on_panic(&mut self, payload: Box<dyn std::any::Any + Send>) {
        let message = panic_message(payload.as_ref());
        let command = self.current.take();
        tracing::error!(
            message = "Shard panicked; it stops and the supervisor rebuilds it from storage.",
            shard = self.id,
            command = command.map(|(kind, _)| kind),
            panic = %message
        );
        self.poison();
        let fault = Fault::Panic {
            shard: self.id,
            generation: self.link.generation,
            command,
            message,
        };
        if let Err(error) = self.link.faults.try_send(fault) {
            tracing::error!(message = "Could not report a shard fault.", shard = self.id, %error);
        }
    }

    /// Drops everything not yet written: the batch, its continuations (answered `false`, so
    /// their waiters hear `unavailable`), protocol messages waiting for it, and the waiters of
    /// pending placements (the placements themselves are durable and finish after the rebuild).
    pub fn poison(&mut self) {
        self.poisoned = true;
        self.batch.clear();
        self.batch_events = 0;
        self.outbox.clear();
        for continuation in std::mem::take(&mut self.batch_continuations) {
            continuation(false);
        }
        self.pending.clear();
    }

    fn dispatch(&mut self, msg: ShardMsg) -> Step {
        match msg {
            ShardMsg::Client(cmd) => {
                self.gauges.handled.fetch_add(1, Ordering::Relaxed);
                self.client(cmd);
            }
            ShardMsg::Reserve { items } => {
                for (order, lines) in items {
                    self.reserve(order, lines);
                }
            }
            ShardMsg::ReserveResults { shard, items } => {
                for (order, short) in items {
                    self.reserve_result(order, shard, short);
                }
            }
            ShardMsg::Release { orders } => {
                for order in orders {
                    self.release(order);
                }
            }
            ShardMsg::Ship { items } => {
                for (order, shipped) in items {
                    self.ship_hold(order, shipped);
                }
            }
            ShardMsg::HoldCheck { from, orders } => self.hold_check(from, orders),
            ShardMsg::HoldsKept { orders } => {
                for order in orders {
                    self.hold_checks.remove(&order);
                }
            }
            ShardMsg::Recover => {
                self.recover();
                // Submissions queued while no actor ran (their wake-up died with the old
                // one) are taken now.
                self.drain_inbox();
            }
            ShardMsg::Drain => self.drain_inbox(),
            ShardMsg::Heartbeat { n } => {
                self.gauges.heartbeat_seen.store(n, Ordering::SeqCst);
                return Step::Done;
            }
            ShardMsg::Flush => {
                self.flush();
                return Step::Done;
            }
            ShardMsg::Tick => self.tick(),
            ShardMsg::Stop { done } => {
                self.flush();
                let _ = self.writer.send(WriterMsg::Batch {
                    shard: self.id,
                    generation: self.link.generation,
                    first_seq: self.data.last_seq + 1,
                    last_seq: self.data.last_seq,
                    value: None,
                    audit: Vec::new(),
                    continuations: vec![Box::new(move |_| {
                        let _ = done.send(());
                    })],
                });
                self.poisoned = true;
                return Step::Stop;
            }
        }
        self.schedule_flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewLine;

    fn order(price: u64, address: Option<&str>, key: Option<(&str, u128)>) -> PlaceOrder {
        PlaceOrder {
            customer_id: CustomerId(7),
            lines: vec![NewLine {
                sku: "MUG".into(),
                qty: 2,
                unit_price: price,
            }],
            shipping_address: address.map(str::to_string),
            note: None,
            idempotency: key.map(|(key, request_hash)| Idempotency {
                key: key.into(),
                request_hash,
            }),
            actor: "someone".into(),
        }
    }

    #[test]
    fn the_quarantine_fingerprint_covers_the_whole_order() {
        // The old fingerprint took customer, SKUs and quantities only: an order equal to a
        // quarantined one but for its price or address was refused with it.
        let poison = place_fingerprint(&order(100, Some("a"), None));
        assert_ne!(poison, place_fingerprint(&order(101, Some("a"), None)));
        assert_ne!(poison, place_fingerprint(&order(100, Some("b"), None)));
        assert_ne!(poison, place_fingerprint(&order(100, None, None)));
        assert_eq!(poison, place_fingerprint(&order(100, Some("a"), None)));
        // With a key, the gateway's hash of the body decides (the sealed address differs on
        // every retry; the body does not), whoever sends it and under whichever key.
        let keyed = place_fingerprint(&order(100, Some("sealed-1"), Some(("k1", 42))));
        assert_eq!(
            keyed,
            place_fingerprint(&order(100, Some("sealed-2"), Some(("k2", 42))))
        );
        assert_ne!(
            keyed,
            place_fingerprint(&order(100, Some("sealed-1"), Some(("k1", 43))))
        );
    }

    #[test]
    fn a_batch_reports_each_orders_own_outcome() {
        // Order 0 is decided at once, but its batch fails; order 1 is decided later (a
        // cross-shard answer) and its batch is written. The old collector let the last
        // finisher's outcome speak for every order, so order 0 was reported placed.
        let (reply, answer) = oneshot::channel();
        let collector = BatchCollector {
            results: Mutex::new(vec![None, None]),
            remaining: AtomicUsize::new(3),
            reply: Mutex::new(Some(reply)),
        };
        collector.results.lock().unwrap()[0] = Some(Ok(OrderId(1)));
        collector.finish(&[0], 2, false);
        collector.results.lock().unwrap()[1] = Some(Ok(OrderId(2)));
        collector.finish(&[1], 1, true);
        let results = answer.blocking_recv().unwrap().unwrap();
        assert!(
            matches!(results[0], Err(CommandError::Unavailable(_))),
            "{results:?}"
        );
        assert!(matches!(results[1], Ok(OrderId(2))), "{results:?}");
    }
}

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
//!
//! The folder reads top to bottom: this file holds the shard's state and its construction;
//! `messages.rs` what it takes, `step.rs` the entry point and the actix shell, `commands.rs`
//! the client commands, `batch.rs` the log batch and answering once durable, `protocol.rs`
//! the cross-shard reservation protocol, `snapshot.rs` recovery, ticks and snapshots, and
//! `fault.rs` command fingerprints and the quarantine's answers. The time comes from
//! [`crate::clock`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use crossbeam_channel::Sender;
use tokio::sync::oneshot;

use crate::audit::ShardChain;
use crate::domain::{
    CatalogView, ColdAnswer, CommandError, CustomerId, CustomerUpdate, CustomerView, Idempotency,
    LocationView, NewCustomer, NewRefund, NewReturn, NewShipment, OrderFilter, OrderId,
    OrderStatus, OrderView, PersonalField, PlaceOrder, ReceiveLine, RefundId, RefundView, ReturnId,
    ReturnStatus, ReturnView, SalesSummary, ShipmentId, ShipmentStatus, ShipmentView,
    SnapshotTaken, StockView, DEFAULT_LOCATION, ORDER_LINES_MAX,
};
use crate::event::{self, Event, IdemRecord, LineRecord, OrderRecord, ReceivedLine, RestockLine};
use crate::failpoint;
use crate::inbox::Inbox;
use crate::log::{Continuation, WriterMsg, WriterStats};
use crate::sim::{regressed, Regression};
use crate::state::{group_by_shard, shard_of_sku, IdMap, IdemOutcome, ShardData};
use crate::storage::{shard_key, Family, Write};
use crate::supervisor::{panic_message, Fault, Quarantine};

mod batch;
mod cold;
mod commands;
mod fault;
mod messages;
mod notices;
mod protocol;
mod snapshot;
mod step;

use crate::clock::Clock;
pub use cold::ColdSettings;
use fault::*;
pub use messages::*;

/// Settings a shard runs with.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub mailbox_capacity: usize,
    /// `batch_events_max` lives here, changeable while the shard runs.
    pub tunables: Arc<crate::tunables::Tunables>,
    pub snapshot_interval_events: u64,
    pub idempotency_retention_s: u64,
    /// Idempotency keys older than this move to the `idem` family (0: never).
    pub idempotency_hot_s: u64,
    pub pending_retry_ms: u64,
    /// When ended orders move to the cold tier.
    pub cold: ColdSettings,
    /// Where snapshots are encoded: on a thread of the shard's own, so the shard pauses only to
    /// freeze its state (the server); or on the shard's thread (the simulator, which must be
    /// deterministic).
    pub snapshot_encoding: SnapshotEncoding,
}

/// Where a shard encodes its snapshots ([`ShardSettings::snapshot_encoding`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotEncoding {
    /// On a thread of the shard's own (`orderd-snap-N`), in the order they were taken.
    Thread,
    /// On the shard's thread, as it takes them.
    Inline,
}

/// Where a shard sends its protocol messages: the [`Router`] of actix addresses in the server,
/// the simulator's network in `crate::sim`.
pub trait Transport: Send + Sync {
    fn send(&self, shard: u16, msg: ShardMsg);
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
    /// The next order, customer, shipment, return and refund counters any actor of this
    /// shard handed to the log writer: a rebuilt actor allocates from at least these, so an
    /// id that a dropped (unwritten) batch used is never given to another object while the
    /// process runs.
    pub next_ids: [AtomicU64; 5],
}

/// A shard's ties to its supervisor.
pub struct ShardLink {
    /// This actor's generation; see `WriterStats::generations`.
    pub generation: u64,
    pub faults: tokio::sync::mpsc::Sender<Fault>,
    pub quarantine: Arc<Quarantine>,
    /// The shard's queue of coalesced placements (outlives actors, like the slot).
    pub inbox: Arc<Inbox>,
    /// Where the idempotency keys past their in-memory window are read ([`crate::idem_tier`]).
    pub storage: Arc<dyn crate::storage::Storage>,
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
    reserve: Vec<HoldRequest>,
    answers: Vec<HoldAnswer>,
    ship: Vec<ShippedPart>,
    release: Vec<OrderId>,
    kept: Vec<OrderId>,
    /// Received returns' units of the destination's SKUs to restock there.
    restock: Vec<RestockPart>,
    /// To an order's shard: these returns' units are restocked here.
    restocked: Vec<ReturnId>,
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
    answers: HashMap<u16, HoldOutcome>,
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
    /// The thread that encodes this actor's snapshots (started with the first one), with
    /// [`SnapshotEncoding::Thread`].
    encoder: Option<snapshot::Encoder>,
    last_sweep: Instant,
    last_cold_sweep: Instant,
    last_idem_sweep: Instant,
    /// Idempotency entries moved to disk in batches not yet durable, with the seq of their
    /// `IdemArchived`: answered from here until the batch is.
    idem_leaving: HashMap<String, (u64, crate::state::IdemEntry)>,
    /// Storage writes that go with the current batch besides the log and audit (the cold
    /// tier's records of a sweep).
    extra_writes: Vec<crate::storage::Write>,
    /// Public events raised by the current batch's events ([`crate::events`]), encoded:
    /// the log writer numbers and writes them with the batch.
    notices: Vec<Vec<u8>>,
    /// Holds whose owner has not yet answered this actor's `HoldCheck`, with when it was
    /// last asked.
    hold_checks: IdMap<OrderId, Instant>,
    /// Received returns whose restocks on other shards are not yet confirmed: the seq of
    /// their `ReturnReceived` (no `Restock` leaves before it is durable) and when `Restock`
    /// was last sent. Rebuilt from the state at recovery.
    restocks: IdMap<ReturnId, (u64, Option<Instant>)>,
    /// Ids below these were used by an earlier actor of this shard (see `next_ids`).
    id_floor: [u64; 5],
    link: ShardLink,
    /// Set by a panic or by finding itself replaced: every later message is dropped.
    poisoned: bool,
    /// The client command being applied (its kind and fingerprint), for the fault report.
    current: Option<(&'static str, u64)>,
    /// The audit entries of the current batch and this shard's audit chains
    /// ([`crate::audit`]): written with the batch, in the same storage write.
    audit: ShardChain,
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
            gauges.next_ids[3].load(Ordering::SeqCst),
            gauges.next_ids[4].load(Ordering::SeqCst),
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
            encoder: None,
            last_sweep,
            last_cold_sweep: last_sweep,
            last_idem_sweep: last_sweep,
            idem_leaving: HashMap::new(),
            extra_writes: Vec::new(),
            notices: Vec::new(),
            hold_checks: IdMap::default(),
            restocks: IdMap::default(),
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
            self.data.next_return,
            self.data.next_refund,
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

    fn next_return(&self) -> u64 {
        self.data.next_return.max(self.id_floor[3])
    }

    fn next_refund(&self) -> u64 {
        self.data.next_refund.max(self.id_floor[4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewLine;

    fn order(price: u64, address: Option<&str>, key: Option<(&str, u128)>) -> PlaceOrder {
        PlaceOrder {
            refusal: None,
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

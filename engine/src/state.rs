//! One shard's in-memory state and the deterministic `apply` of events to it.
//!
//! Live commands and recovery both go through `apply`, so replaying the log rebuilds exactly
//! the state the shard had. The state is owned by one shard thread; nothing here locks.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{
    CatalogView, CustomerId, CustomerView, HistoryView, LineView, OrderFilter, OrderId,
    OrderStatus, OrderView, ReceivedLineView, RefundId, RefundView, ReturnId, ReturnStatus,
    ReturnView, SalesSummary, ShipmentEventView, ShipmentId, ShipmentStatus, ShipmentView,
    StockView,
};
use crate::event::{Event, IdemRecord, OrderRecord, ReceivedLine, RestockLine};
use crate::locations::Walk;
use crate::pmap::PMap;

/// Version byte of a snapshot value.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 6;
/// Version 5 (before locations: read with all stock at `default`), still read.
const SNAPSHOT_FORMAT_V5: u8 = 5;
/// Version 4 (before returns and refunds: read with none), still read.
const SNAPSHOT_FORMAT_V4: u8 = 4;
/// Version 3 (before the catalog: read with an empty one), still read.
const SNAPSHOT_FORMAT_V3: u8 = 3;
/// Version 2 (before the cold tier: no archived sales), still read.
const SNAPSHOT_FORMAT_V2: u8 = 2;
/// The previous snapshot version (no shipments, holds without shipped counts), still read.
const SNAPSHOT_FORMAT_V1: u8 = 1;
/// One hour in microseconds: the bucket of the sales counters.
pub const HOUR_US: i64 = 3_600_000_000;

/// Stock of one SKU. Invariant: `reserved <= on_hand`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub on_hand: u64,
    pub reserved: u64,
}

impl Stock {
    pub fn available(&self) -> u64 {
        self.on_hand - self.reserved
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: Arc<str>,
    pub qty: u32,
    pub unit_price: u64,
    pub shipped: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub at_us: i64,
    pub status: OrderStatus,
    pub actor: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub customer: CustomerId,
    pub status: OrderStatus,
    /// Whether the order's stock is held through the cross-shard protocol (`holds` on each
    /// part's shard) rather than directly by this shard.
    pub cross: bool,
    pub lines: Box<[Line]>,
    /// Shipping address and note, boxed together: most orders carry neither.
    pub extras: Option<Box<OrderExtras>>,
    pub created_us: i64,
    pub updated_us: i64,
    /// Who placed the order and when it was confirmed: the first history entry, implied, so
    /// that an order with no later step allocates no history.
    pub placed_by: Arc<str>,
    pub confirmed_us: i64,
    /// History after the first entry (cancellation; shipping states later).
    pub later: Vec<History>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderExtras {
    pub shipping_address: Option<Box<str>>,
    pub note: Option<Box<str>>,
}

impl OrderExtras {
    fn new(shipping_address: Option<&str>, note: Option<&str>) -> Option<Box<OrderExtras>> {
        if shipping_address.is_none() && note.is_none() {
            return None;
        }
        Some(Box::new(OrderExtras {
            shipping_address: shipping_address.map(Box::from),
            note: note.map(Box::from),
        }))
    }
}

impl Order {
    pub fn shipping_address(&self) -> Option<&str> {
        self.extras
            .as_ref()
            .and_then(|e| e.shipping_address.as_deref())
    }

    pub fn note(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|e| e.note.as_deref())
    }

    /// Every history entry, the implied first one included: (at, status, actor).
    pub fn history(&self) -> impl Iterator<Item = (i64, OrderStatus, &Arc<str>)> {
        let first = if self.status == OrderStatus::Pending {
            OrderStatus::Pending
        } else {
            OrderStatus::Confirmed
        };
        std::iter::once((self.confirmed_us, first, &self.placed_by))
            .chain(self.later.iter().map(|h| (h.at_us, h.status, &h.actor)))
    }
}

/// A customer: its personal fields as the gateway sealed them.
///
/// An erased customer (`Event::CustomerErased`) keeps only its id and creation time: every
/// personal field is empty. The empty `email` marks it: a live customer's email is a sealed
/// (or, before sealing, validated) non-empty string, so the mark needs no field of its own and
/// snapshots (format 4) carry erasure unchanged: an erased customer is written with empty
/// fields and read back erased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub created_us: i64,
}

impl Customer {
    /// Whether the customer was erased: its personal data is gone.
    pub fn is_erased(&self) -> bool {
        self.email.is_empty()
    }

    /// Drops every personal field (idempotent).
    fn erase(&mut self) {
        self.name.clear();
        self.email.clear();
        self.phone = None;
        self.address = None;
        debug_assert!(self.is_erased());
    }
}

/// The remembered outcome of an idempotent command: what a retry with the same key and body
/// is answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdemOutcome {
    Order(u64),
    Rejected(Vec<String>),
    // New variants go last: postcard encodes the variant index (snapshots and the log).
    /// A stock adjustment, with the stock it left.
    Adjusted {
        on_hand: u64,
        reserved: u64,
    },
    /// A customer created.
    Customer(u64),
    /// A shipment created, or a carrier event recorded: the shipment and how many events it
    /// had then (a retry sees it as it was answered).
    Shipment {
        id: u64,
        events: u32,
    },
    /// An order cancelled.
    Cancelled(u64),
    /// A catalog price set: the entry as it was answered (the SKU is in the request's path,
    /// which the request hash covers).
    PriceSet {
        price: u64,
        active: bool,
        at_us: i64,
    },
    /// A return opened: answered as it was created (`requested`).
    ReturnCreated(u64),
    /// A return received: answered as it is (received is final).
    ReturnReceived(u64),
    /// A refund issued.
    Refund(u64),
    /// A stock transfer (a repeat answers the stock as it is then).
    Transferred,
    /// A stock adjustment, with the stock it left in total and per location: (location,
    /// on_hand, reserved). `Adjusted` is the same from before locations.
    AdjustedAt {
        on_hand: u64,
        reserved: u64,
        locations: Vec<(String, u64, u64)>,
    },
}

/// A SKU's catalog price (`Event::CatalogPriceSet`), on the shard that owns the SKU's stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Minor units of the shop's currency, at most [`crate::domain::UNIT_PRICE_MAX`].
    pub price: u64,
    /// Only an active price prices an order.
    pub active: bool,
    pub updated_us: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemEntry {
    pub hash: u128,
    pub at_us: i64,
    pub outcome: IdemOutcome,
}

/// Hasher for ids the server chose (orders, customers): a multiply-rotate mix, much cheaper
/// than SipHash. Never used for client-chosen keys (SKUs, idempotency keys), which keep the
/// standard, flooding-resistant hasher.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

const ID_HASH_MULTIPLIER: u64 = 0x517c_c1b7_2722_0a95;

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(*byte as u64);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(ID_HASH_MULTIPLIER);
    }
}

/// A map keyed by server-chosen ids.
pub type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A persistent map keyed by id ([`PMap`]).
pub type IdPMap<K, V> = PMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Units held for one order on one shard, a line per SKU.
pub type Held = Box<[HeldLine]>;

/// One SKU of a hold. What it still reserves is `qty - shipped`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLine {
    pub sku: Arc<str>,
    /// Units held when the order was placed.
    pub qty: u32,
    /// Units shipped since (moved out of `on_hand` and `reserved`).
    pub shipped: u32,
}

/// A shipment, owned by its order's shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shipment {
    pub id: ShipmentId,
    pub order: OrderId,
    pub carrier: Box<str>,
    pub tracking: Box<str>,
    pub lines: Box<[(Arc<str>, u32)]>,
    pub status: ShipmentStatus,
    /// Every step, the creation (`shipped`) first: (at, status, note).
    pub events: Vec<(i64, ShipmentStatus, Option<Box<str>>)>,
}

/// A return of shipped units, owned by its order's shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    pub id: ReturnId,
    pub order: OrderId,
    /// Units asked to come back, per SKU of the order.
    pub lines: Box<[(Arc<str>, u32)]>,
    pub reason: Box<str>,
    pub status: ReturnStatus,
    pub created_us: i64,
    /// What came back (empty until received).
    pub received: Box<[ReceivedLine]>,
    pub received_us: Option<i64>,
    /// The other shards that own restocked SKUs of this return and have not yet confirmed
    /// restocking them (`Event::RestockConfirmed`): the order's shard sends them `Restock`
    /// until they do.
    pub restock_pending: Box<[u16]>,
}

/// A refund, kept with its order on the order's shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: RefundId,
    pub amount: u64,
    pub reason: Box<str>,
    pub created_us: i64,
}

/// Sales counters of the orders placed in one hour.
///
/// Units and revenue count in `u128`, so that they stay exact where a `u64` would wrap: an
/// order is at most 100 lines of at most `u32::MAX × u64::MAX` (an order logged before the
/// bounds of [`crate::domain::add_line_amount`]), less than 2^103, so only 2^25 such orders in
/// one hour could reach the limit, and orders within the bounds (at most
/// [`crate::domain::ORDER_TOTAL_MAX`] < 2^50 each) never can. Every step still saturates
/// rather than wrap or panic (`count_sale`): a shard never panics over a sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HourSales {
    /// Placed and not cancelled.
    pub orders: u64,
    pub cancelled: u64,
    pub units: u128,
    pub revenue: u128,
    /// Units of these orders received back by returns.
    pub returned_units: u128,
    /// Refunded on these orders (minor units).
    pub refunds: u128,
    /// Per SKU: (units, revenue); entries that fall to zero are removed.
    pub skus: HashMap<Arc<str>, (u128, u128)>,
}

/// A line's amount, `qty × unit_price`, exact: at most `u32::MAX × u64::MAX` < 2^96.
pub fn line_amount(line: &Line) -> u128 {
    u128::from(line.qty) * u128::from(line.unit_price)
}

/// A `u128` sales figure as the `u64` of a [`SalesSummary`], `u64::MAX` when it does not fit.
fn saturate(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Everything one shard owns.
#[derive(Debug, Default)]
pub struct ShardData {
    pub shard: u16,
    pub shard_count: u16,
    // The maps a snapshot holds are persistent ([`PMap`]): a snapshot clones them in O(1)
    // ([`ShardData::freeze`]) and another thread encodes the view.
    pub stock: PMap<Arc<str>, Stock, RandomState>,
    pub orders: IdPMap<OrderId, Order>,
    /// Newest-first listing index: (created, id).
    pub order_index: BTreeSet<(i64, OrderId)>,
    /// The same listing index by customer: (customer, created, id), so that one customer's
    /// orders are one contiguous range and a page of them is a range read, whatever the
    /// store holds. Derived (never in a snapshot): kept by `insert_order`, the abort and
    /// `from_snapshot`, exactly where `order_index` is.
    pub customer_index: BTreeSet<(CustomerId, i64, OrderId)>,
    pub customers: IdPMap<CustomerId, Customer>,
    /// Units this shard holds for cross-shard orders (its own included), by order.
    pub holds: IdPMap<OrderId, Held>,
    pub idempotency: PMap<Box<str>, IdemEntry, RandomState>,
    /// Keys of refused placements in the order they were refused (with when), for the bound
    /// [`REJECTED_IDEMPOTENCY_MAX`] / [`REJECTED_IDEMPOTENCY_BYTES_MAX`]; may hold keys already
    /// swept or replaced (skipped when popped).
    pub rejected: std::collections::VecDeque<(i64, Box<str>)>,
    /// Bytes the refused placements' entries in `idempotency` take, as [`rejected_bytes`]
    /// counts them.
    pub rejected_bytes: usize,
    pub shipments: IdPMap<ShipmentId, Shipment>,
    /// Shipments of each order that has any, in creation order.
    pub order_shipments: IdMap<OrderId, Vec<ShipmentId>>,
    /// Sales counters by hour of placement (start of the hour, microseconds), kept as events
    /// apply so that a summary never walks every order.
    pub sales: BTreeMap<i64, HourSales>,
    /// The part of `sales` that orders moved to the cold tier contributed (`OrdersArchived`):
    /// in snapshots, so that counters rebuilt from a snapshot's hot orders still count them.
    /// Shared with frozen views until the next archive (copy on write).
    pub archived_sales: Arc<BTreeMap<i64, HourSales>>,
    /// Ended orders (delivered, cancelled) by when they ended: the cold tier's candidates,
    /// oldest first. Derived (never in a snapshot), like the listing indexes.
    pub ended: BTreeSet<(i64, OrderId)>,
    /// Catalog prices by SKU, in SKU order: a persistent ordered map (imbl's B-tree, O(1)
    /// clone like [`PMap`]), so that a snapshot freezes it with the rest and a page of the
    /// catalog is a range read. Keyed by client-chosen SKUs, which an ordered map cannot be
    /// flooded with (no hashing).
    pub catalog: imbl::OrdMap<Arc<str>, CatalogEntry>,
    /// Returns of this shard's orders.
    pub returns: IdPMap<ReturnId, Return>,
    /// Returns of each order that has any, oldest first. Derived (never in a snapshot).
    pub order_returns: IdMap<OrderId, Vec<ReturnId>>,
    /// Refunds of each order that has any, oldest first.
    pub refunds: IdPMap<OrderId, Vec<Refund>>,
    /// Returns whose units of this shard's SKUs were restocked here (`Event::Restocked`),
    /// with what was restocked: a `Restock` for a return already here restocks nothing, so
    /// units come back exactly once however often the order's shard asks.
    pub restocked: IdPMap<ReturnId, Box<[RestockLine]>>,
    pub next_order: u64,
    pub next_customer: u64,
    pub next_shipment: u64,
    pub next_return: u64,
    pub next_refund: u64,
    /// Stock locations by id (`default` only once redefined: until then it is implied),
    /// the same on every shard (`Event::LocationSet` applies on each). At most
    /// `stock.locations_max`, a few dozen: cloned whole into a snapshot's view.
    pub locations: BTreeMap<Arc<str>, crate::locations::Location>,
    /// Per SKU, its stock at each location other than `default` that ever held it
    /// ([`crate::locations`]); a SKU without an entry is all at `default`.
    pub buckets: PMap<Arc<str>, crate::locations::Buckets, RandomState>,
    /// Where this shard reserved an order's units of its SKUs, when any is not at `default`:
    /// one-shard orders while in memory, cross-shard holds while held.
    pub allocated: IdPMap<OrderId, crate::locations::Allocation>,
    /// A cross-shard order's allocation on every shard, as its stock shards answered it
    /// (`Event::OrderAllocated`), for its view and its returns; kept on the order's shard.
    pub order_allocations: IdPMap<OrderId, crate::locations::Allocation>,
    /// Sequence number of the last applied event (0: none).
    pub last_seq: u64,
    /// Interned strings (SKUs, actors) so that lines share one allocation per distinct value.
    interned: HashSet<Arc<str>>,
}

/// Most idempotency entries of refused placements one shard keeps; past it the oldest is
/// forgotten (a retry with its key is then placed anew). A compile-time constant, not a
/// setting: eviction happens in `apply`, so replay must evict exactly as the live shard did.
pub const REJECTED_IDEMPOTENCY_MAX: usize = 100_000;
/// Most bytes (keys and short SKUs, see [`rejected_bytes`]) those entries take per shard.
pub const REJECTED_IDEMPOTENCY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// What one refused placement's idempotency entry costs, as the bound counts it: the key, the
/// short SKUs, and a fixed 96 bytes of map slot, entry and vector headers.
pub fn rejected_bytes(key: &str, short: &[String]) -> usize {
    96 + key.len() + short.iter().map(|sku| sku.len() + 24).sum::<usize>()
}

/// The shard that owns a SKU, by a hash that is stable across versions and restarts.
pub fn shard_of_sku(sku: &str, shard_count: u16) -> u16 {
    (xxhash_rust::xxh3::xxh3_64(sku.as_bytes()) % shard_count as u64) as u16
}

/// `(SKU, units)` pairs grouped by the shard that owns each SKU, shards in the order they first
/// appear: the parts of a cross-shard order, or of its shipped units.
pub fn group_by_shard<'a>(
    lines: impl IntoIterator<Item = (&'a str, u32)>,
    shard_count: u16,
) -> Vec<(u16, Vec<(String, u32)>)> {
    let mut parts: Vec<(u16, Vec<(String, u32)>)> = Vec::new();
    for (sku, units) in lines {
        let shard = shard_of_sku(sku, shard_count);
        match parts.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, lines)) => lines.push((sku.to_string(), units)),
            None => parts.push((shard, vec![(sku.to_string(), units)])),
        }
    }
    parts
}

/// The shard that owns an idempotency key's order.
pub fn shard_of_key(key: &str, shard_count: u16) -> u16 {
    (xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 0x6f72_6465_7264) % shard_count as u64)
        as u16
}

impl ShardData {
    pub fn new(shard: u16, shard_count: u16) -> Self {
        ShardData {
            shard,
            shard_count,
            next_order: 1,
            next_customer: 1,
            next_shipment: 1,
            next_return: 1,
            next_refund: 1,
            ..Default::default()
        }
    }

    /// Counts a refused placement's idempotency entry and forgets the oldest ones past the
    /// bound (in count and in bytes).
    fn note_rejected(&mut self, at_us: i64, key: &str, short: &[String]) {
        self.rejected_bytes += rejected_bytes(key, short);
        self.rejected.push_back((at_us, key.into()));
        while self.rejected.len() > REJECTED_IDEMPOTENCY_MAX
            || self.rejected_bytes > REJECTED_IDEMPOTENCY_BYTES_MAX
        {
            let Some((_, oldest)) = self.rejected.pop_front() else {
                break;
            };
            self.forget_rejected(&oldest);
        }
    }

    /// Removes a refused placement's entry (if `key` still names one) and its bytes.
    fn forget_rejected(&mut self, key: &str) {
        if let Some(IdemEntry {
            outcome: IdemOutcome::Rejected(short),
            ..
        }) = self.idempotency.get(key)
        {
            self.rejected_bytes = self
                .rejected_bytes
                .saturating_sub(rejected_bytes(key, short));
            self.idempotency.remove(key);
        }
    }

    pub fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(existing) = self.interned.get(text) {
            return existing.clone();
        }
        let value: Arc<str> = Arc::from(text);
        self.interned.insert(value.clone());
        value
    }

    pub fn available(&self, sku: &str) -> u64 {
        self.stock.get(sku).map_or(0, Stock::available)
    }

    /// Applies one event. Panics on an event that breaks an invariant: that is a bug in the
    /// command that produced it (or a corrupt log), never an operating error.
    pub fn apply(&mut self, event: &Event) {
        self.last_seq += 1;
        match event {
            Event::StockAdjusted { sku, delta, .. } => {
                let sku = self.intern(sku);
                let stock = self.stock.get_or_default(sku);
                let on_hand = stock.on_hand as i128 + *delta as i128;
                assert!(
                    on_hand >= stock.reserved as i128,
                    "adjustment below reserved"
                );
                stock.on_hand = on_hand as u64;
            }
            Event::CustomerCreated {
                id,
                name,
                email,
                phone,
                address,
                at_us,
            } => {
                let id = CustomerId(*id);
                self.next_customer = self.next_customer.max(id.counter() + 1);
                self.customers.insert(
                    id,
                    Customer {
                        name: name.clone(),
                        email: email.clone(),
                        phone: phone.clone(),
                        address: address.clone(),
                        created_us: *at_us,
                    },
                );
            }
            Event::OrderPlaced { order, idem } => {
                let mut allocation = Vec::new();
                for line in &order.lines {
                    // Allocated before the total changes: `default`'s share is the total
                    // less the other locations'.
                    if !self.buckets.is_empty() {
                        let sku = self.intern(&line.sku);
                        self.allocate(&sku, line.qty, &mut allocation);
                    }
                    let stock = self
                        .stock
                        .get_mut(line.sku.as_str())
                        .expect("placed line on unknown stock");
                    stock.reserved += line.qty as u64;
                    assert!(stock.reserved <= stock.on_hand, "over-reservation");
                }
                self.keep_allocation(OrderId(order.id), allocation);
                self.insert_order(order, OrderStatus::Confirmed, false, idem.as_ref());
                self.count_sale(OrderId(order.id), 1);
            }
            Event::OrderPending { order, idem } => {
                self.insert_order(order, OrderStatus::Pending, true, idem.as_ref());
            }
            Event::Reserved { order, lines } => {
                let mut held = Vec::with_capacity(lines.len());
                let mut allocation = Vec::new();
                for (sku, qty) in lines {
                    let sku = self.intern(sku);
                    if !self.buckets.is_empty() {
                        self.allocate(&sku, *qty, &mut allocation);
                    }
                    let stock = self.stock.get_mut(&sku).expect("hold on unknown stock");
                    stock.reserved += *qty as u64;
                    assert!(stock.reserved <= stock.on_hand, "over-reservation");
                    held.push(HeldLine {
                        sku,
                        qty: *qty,
                        shipped: 0,
                    });
                }
                let previous = self.holds.insert(OrderId(*order), held.into_boxed_slice());
                assert!(previous.is_none(), "double hold");
                self.keep_allocation(OrderId(*order), allocation);
            }
            Event::Released { order } => {
                let id = OrderId(*order);
                if let Some(held) = self.holds.remove(&id) {
                    for line in held.iter() {
                        let stock = self
                            .stock
                            .get_mut(&line.sku)
                            .expect("release of unknown stock");
                        stock.reserved -= (line.qty - line.shipped) as u64;
                        let rest = line.qty - line.shipped;
                        self.walk_allocation(id, &line.sku, line.shipped, rest, Walk::Release);
                    }
                    self.allocated.remove(&id);
                }
            }
            Event::OrderConfirmed { order, at_us } => {
                let id = OrderId(*order);
                let order = self
                    .orders
                    .get_mut(&OrderId(*order))
                    .expect("confirm unknown order");
                assert_eq!(order.status, OrderStatus::Pending);
                order.status = OrderStatus::Confirmed;
                order.updated_us = *at_us;
                order.confirmed_us = *at_us;
                self.count_sale(id, 1);
            }
            Event::OrderAborted {
                order,
                short,
                idem_key,
                ..
            } => {
                let removed = self
                    .orders
                    .remove(&OrderId(*order))
                    .expect("abort unknown order");
                assert_eq!(removed.status, OrderStatus::Pending);
                self.order_index.remove(&(removed.created_us, removed.id));
                self.customer_index
                    .remove(&(removed.customer, removed.created_us, removed.id));
                if let Some(key) = idem_key {
                    if short.is_empty() {
                        // Aborted because a part did not answer by the deadline: the key is
                        // free again, so a retry with it places the order anew.
                        self.idempotency.remove(key.as_str());
                    } else if let Some(entry) = self.idempotency.get_mut(key.as_str()) {
                        entry.outcome = IdemOutcome::Rejected(short.clone());
                        let at_us = entry.at_us;
                        self.note_rejected(at_us, key, short);
                    }
                }
            }
            Event::OrdersArchived { ids } => self.archive(ids),
            Event::CustomerUpdated {
                id,
                name,
                email,
                phone,
                address,
                ..
            } => {
                let customer = self
                    .customers
                    .get_mut(&CustomerId(*id))
                    .expect("update of an unknown customer");
                assert!(!customer.is_erased(), "update of an erased customer");
                assert!(
                    email.as_ref().is_none_or(|e| !e.is_empty()),
                    "an empty email would read as erased"
                );
                if let Some(name) = name {
                    customer.name = name.clone();
                }
                if let Some(email) = email {
                    customer.email = email.clone();
                }
                if let Some(phone) = phone {
                    customer.phone = Some(phone.clone());
                }
                if let Some(address) = address {
                    customer.address = Some(address.clone());
                }
            }
            Event::CustomerErased { id, .. } => {
                let customer = self
                    .customers
                    .get_mut(&CustomerId(*id))
                    .expect("erasure of an unknown customer");
                customer.erase();
            }
            Event::CatalogPriceSet {
                sku,
                price,
                active,
                at_us,
                ..
            } => {
                assert!(
                    *price <= crate::domain::UNIT_PRICE_MAX,
                    "catalog price above UNIT_PRICE_MAX"
                );
                let sku = self.intern(sku);
                self.catalog.insert(
                    sku,
                    CatalogEntry {
                        price: *price,
                        active: *active,
                        updated_us: *at_us,
                    },
                );
            }
            Event::IdemArchived { keys } => {
                for key in keys {
                    // A refused placement's entry takes its bytes with it.
                    self.forget_rejected(key);
                    self.idempotency.remove(key.as_str());
                }
            }
            Event::IdemRecorded { idem, outcome } => {
                self.idempotency.insert(
                    idem.key.clone().into_boxed_str(),
                    IdemEntry {
                        hash: idem.hash,
                        at_us: idem.at_us,
                        outcome: outcome.clone(),
                    },
                );
            }
            Event::PlacementRejected { idem, short } => {
                self.idempotency.insert(
                    idem.key.clone().into_boxed_str(),
                    IdemEntry {
                        hash: idem.hash,
                        at_us: idem.at_us,
                        outcome: IdemOutcome::Rejected(short.clone()),
                    },
                );
                self.note_rejected(idem.at_us, &idem.key, short);
            }
            Event::OrderCancelled {
                order,
                actor,
                at_us,
                ..
            } => {
                let id = OrderId(*order);
                let actor = self.intern(actor);
                let order = self
                    .orders
                    .get_mut(&OrderId(*order))
                    .expect("cancel unknown order");
                assert_eq!(order.status, OrderStatus::Confirmed);
                order.status = OrderStatus::Cancelled;
                order.updated_us = *at_us;
                let ended = (*at_us, id);
                order.later.push(History {
                    at_us: *at_us,
                    status: OrderStatus::Cancelled,
                    actor,
                });
                if !order.cross {
                    let lines = order.lines.clone();
                    for line in lines.iter() {
                        let stock = self.stock.get_mut(&line.sku).expect("unknown stock");
                        stock.reserved -= (line.qty - line.shipped) as u64;
                        let rest = line.qty - line.shipped;
                        self.walk_allocation(id, &line.sku, line.shipped, rest, Walk::Release);
                    }
                }
                self.count_sale(id, -1);
                self.count_cancelled(id, 1);
                debug_assert_eq!(self.ended_key(id), Some(ended));
                self.ended.insert(ended);
            }
            Event::ShipmentCreated {
                id,
                order,
                carrier,
                tracking,
                lines,
                actor,
                at_us,
            } => self.apply_shipment(
                ShipmentId(*id),
                OrderId(*order),
                carrier,
                tracking,
                lines,
                actor,
                *at_us,
            ),
            Event::ShipmentUpdated {
                id,
                status,
                note,
                actor,
                at_us,
            } => {
                self.apply_shipment_update(ShipmentId(*id), *status, note.as_deref(), actor, *at_us)
            }
            Event::HoldShipped { order, shipped } => {
                let id = OrderId(*order);
                let held = self.holds.get_mut(&id).expect("ship from unknown hold");
                let mut walks = Vec::new();
                for (sku, total) in shipped {
                    let line = held
                        .iter_mut()
                        .find(|line| *line.sku == **sku)
                        .expect("ship of a SKU not held");
                    assert!(*total <= line.qty, "over-shipping a hold");
                    if *total > line.shipped {
                        let delta = (*total - line.shipped) as u64;
                        walks.push((line.sku.clone(), line.shipped, *total - line.shipped));
                        line.shipped = *total;
                        let stock = self.stock.get_mut(&line.sku).expect("unknown stock");
                        stock.on_hand -= delta;
                        stock.reserved -= delta;
                    }
                }
                let done = held.iter().all(|line| line.shipped == line.qty);
                for (sku, from, count) in walks {
                    self.walk_allocation(id, &sku, from, count, Walk::Ship);
                }
                if done {
                    self.holds.remove(&id);
                    self.allocated.remove(&id);
                }
            }
            Event::CustomerResealed {
                id,
                name,
                email,
                phone,
                address,
            } => {
                let customer = self
                    .customers
                    .get_mut(&CustomerId(*id))
                    .expect("reseal unknown customer");
                customer.name = name.clone();
                customer.email = email.clone();
                customer.phone = phone.clone();
                customer.address = address.clone();
            }
            Event::OrderAddressResealed {
                order,
                shipping_address,
            } => {
                let order = self
                    .orders
                    .get_mut(&OrderId(*order))
                    .expect("reseal unknown order");
                let note = order.note().map(str::to_string);
                order.extras = OrderExtras::new(shipping_address.as_deref(), note.as_deref());
            }
            Event::ReturnCreated {
                id,
                order,
                lines,
                reason,
                at_us,
                ..
            } => self.apply_return(ReturnId(*id), OrderId(*order), lines, reason, *at_us),
            Event::ReturnReceived {
                id,
                lines,
                actor,
                at_us,
            } => self.apply_receipt(ReturnId(*id), lines, actor, *at_us),
            Event::Restocked { ret, lines } => {
                for line in lines {
                    self.restock_at(&line.sku, &line.location, line.qty);
                }
                let previous = self
                    .restocked
                    .insert(ReturnId(*ret), lines.clone().into_boxed_slice());
                assert!(previous.is_none(), "double restock of one return");
            }
            Event::RestockConfirmed { ret, shard } => {
                let id = ReturnId(*ret);
                let order = self
                    .returns
                    .get(&id)
                    .expect("confirm of unknown return")
                    .order;
                let before = self.ended_key(order);
                let ret = self.returns.get_mut(&id).expect("just read");
                ret.restock_pending = ret
                    .restock_pending
                    .iter()
                    .copied()
                    .filter(|s| s != shard)
                    .collect();
                self.reindex_ended(order, before);
            }
            Event::RefundIssued {
                id,
                order,
                amount,
                reason,
                at_us,
                ..
            } => {
                let id = RefundId(*id);
                let order_id = OrderId(*order);
                assert_eq!(id.shard(), self.shard, "refund on the wrong shard");
                self.next_refund = self.next_refund.max(id.counter() + 1);
                let before = self.ended_key(order_id);
                let refunded = self.refunded(order_id);
                let order = self
                    .orders
                    .get_mut(&order_id)
                    .expect("refund of unknown order");
                assert!(
                    refunded.saturating_add(*amount) <= order_total(order),
                    "refund above the order's total"
                );
                order.updated_us = *at_us;
                self.refunds.get_or_default(order_id).push(Refund {
                    id,
                    amount: *amount,
                    reason: reason.as_str().into(),
                    created_us: *at_us,
                });
                self.count_after_sales(order_id, 0, *amount);
                self.reindex_ended(order_id, before);
            }
            Event::LocationSet {
                id,
                name,
                priority,
                at_us,
                ..
            } => self.set_location(id, name, *priority, *at_us),
            Event::StockAdjustedAt {
                sku,
                location,
                delta,
                ..
            } => {
                assert!(
                    self.location_exists(location),
                    "adjustment at an unknown location"
                );
                self.adjust_at(sku, location, *delta);
            }
            Event::StockTransferred {
                sku, from, to, qty, ..
            } => {
                assert!(
                    self.location_exists(from) && self.location_exists(to),
                    "transfer between unknown locations"
                );
                self.transfer(sku, from, to, *qty);
            }
            Event::OrderAllocated { order, allocations } => {
                let allocation: Box<[crate::locations::Alloc]> = allocations
                    .iter()
                    .map(|(sku, location, qty)| crate::locations::Alloc {
                        sku: self.intern(sku),
                        location: self.intern(location),
                        qty: *qty,
                    })
                    .collect();
                self.order_allocations.insert(OrderId(*order), allocation);
            }
        }
    }

    /// Opens a return (`ReturnCreated`): never more units of a SKU than shipped less those
    /// already in returns.
    fn apply_return(
        &mut self,
        id: ReturnId,
        order_id: OrderId,
        lines: &[(String, u32)],
        reason: &str,
        at_us: i64,
    ) {
        assert_eq!(id.shard(), self.shard, "return on the wrong shard");
        self.next_return = self.next_return.max(id.counter() + 1);
        let lines: Box<[(Arc<str>, u32)]> = lines
            .iter()
            .map(|(sku, qty)| (self.intern(sku), *qty))
            .collect();
        let before = self.ended_key(order_id);
        let order = self.orders.get(&order_id).expect("return of unknown order");
        for (sku, qty) in lines.iter() {
            let line = order
                .lines
                .iter()
                .find(|l| l.sku == *sku)
                .expect("return of a SKU not ordered");
            let taken = self.units_in_returns(order_id, sku);
            assert!(
                taken + u64::from(*qty) <= u64::from(line.shipped),
                "returning more than shipped"
            );
        }
        let order = self.orders.get_mut(&order_id).expect("just read");
        order.updated_us = at_us;
        let ret = Return {
            id,
            order: order_id,
            lines,
            reason: reason.into(),
            status: ReturnStatus::Requested,
            created_us: at_us,
            received: Box::new([]),
            received_us: None,
            restock_pending: Box::new([]),
        };
        let previous = self.returns.insert(id, Box::new(ret));
        assert!(previous.is_none(), "duplicate return id");
        self.order_returns.entry(order_id).or_default().push(id);
        self.reindex_ended(order_id, before);
    }

    /// Receives a return (`ReturnReceived`): restocks the units of this shard's SKUs, notes
    /// the other shards that must restock theirs, and moves the order to
    /// `partially_returned` or `returned` once every unit was shipped.
    fn apply_receipt(&mut self, id: ReturnId, lines: &[ReceivedLine], actor: &str, at_us: i64) {
        let ret = self.returns.get(&id).expect("receipt of unknown return");
        assert_eq!(ret.status, ReturnStatus::Requested, "return received twice");
        for (sku, qty) in ret.lines.iter() {
            let received: u64 = lines
                .iter()
                .filter(|l| *l.sku == **sku)
                .map(|l| u64::from(l.qty))
                .sum();
            assert!(received <= u64::from(*qty), "received more than returned");
        }
        assert!(
            lines
                .iter()
                .all(|l| ret.lines.iter().any(|(sku, _)| **sku == *l.sku)),
            "received a SKU not in the return"
        );
        let order_id = ret.order;
        let before = self.ended_key(order_id);
        let mut pending: Vec<u16> = Vec::new();
        for line in lines.iter().filter(|l| l.restock) {
            let owner = shard_of_sku(&line.sku, self.shard_count);
            if owner == self.shard {
                self.restock_at(&line.sku, &line.location, line.qty);
            } else if !pending.contains(&owner) {
                pending.push(owner);
            }
        }
        pending.sort_unstable();
        let ret = self.returns.get_mut(&id).expect("just read");
        ret.status = ReturnStatus::Received;
        ret.received = lines.to_vec().into_boxed_slice();
        ret.received_us = Some(at_us);
        ret.restock_pending = pending.into_boxed_slice();
        let units: u64 = lines.iter().map(|l| u64::from(l.qty)).sum();
        let actor = self.intern(actor);
        let returned = self.returned_units(order_id);
        let order = self
            .orders
            .get_mut(&order_id)
            .expect("return of unknown order");
        order.updated_us = at_us;
        let ordered: u64 = order.lines.iter().map(|l| u64::from(l.qty)).sum();
        if returned > 0 && order.lines.iter().all(|l| l.shipped == l.qty) {
            let status = if returned == ordered {
                OrderStatus::Returned
            } else {
                OrderStatus::PartiallyReturned
            };
            if status != order.status {
                order.status = status;
                order.later.push(History {
                    at_us,
                    status,
                    actor,
                });
            }
        }
        self.count_after_sales(order_id, units, 0);
        self.reindex_ended(order_id, before);
    }

    /// Units of `sku` in the order's returns: asked for by open ones, received by the others.
    pub fn units_in_returns(&self, order: OrderId, sku: &str) -> u64 {
        let Some(ids) = self.order_returns.get(&order) else {
            return 0;
        };
        ids.iter()
            .map(|id| {
                let ret = &self.returns[id];
                match ret.status {
                    ReturnStatus::Requested => ret
                        .lines
                        .iter()
                        .filter(|(s, _)| **s == *sku)
                        .map(|(_, q)| u64::from(*q))
                        .sum::<u64>(),
                    ReturnStatus::Received => ret
                        .received
                        .iter()
                        .filter(|l| *l.sku == *sku)
                        .map(|l| u64::from(l.qty))
                        .sum(),
                }
            })
            .sum()
    }

    /// Units of `sku` the order's received returns brought back.
    fn returned_of(&self, order: OrderId, sku: &str) -> u64 {
        self.order_returns.get(&order).map_or(0, |ids| {
            ids.iter()
                .flat_map(|id| self.returns[id].received.iter())
                .filter(|l| *l.sku == *sku)
                .map(|l| u64::from(l.qty))
                .sum()
        })
    }

    /// Units the order's received returns brought back.
    pub fn returned_units(&self, order: OrderId) -> u64 {
        self.order_returns.get(&order).map_or(0, |ids| {
            ids.iter()
                .flat_map(|id| self.returns[id].received.iter())
                .map(|l| u64::from(l.qty))
                .sum()
        })
    }

    /// The sum of the order's refunds.
    pub fn refunded(&self, order: OrderId) -> u64 {
        self.refunds.get(&order).map_or(0, |refunds| {
            refunds
                .iter()
                .fold(0u64, |sum, r| sum.saturating_add(r.amount))
        })
    }

    /// The `ended` index's key of an order that may move to the cold tier: ended
    /// (delivered, cancelled, partially returned, returned) with no return still open or
    /// waiting for a restock.
    pub fn ended_key(&self, id: OrderId) -> Option<(i64, OrderId)> {
        let order = self.orders.get(&id)?;
        if !matches!(
            order.status,
            OrderStatus::Delivered
                | OrderStatus::Cancelled
                | OrderStatus::PartiallyReturned
                | OrderStatus::Returned
        ) {
            return None;
        }
        let open = self.order_returns.get(&id).is_some_and(|ids| {
            ids.iter().any(|r| {
                let ret = &self.returns[r];
                ret.status == ReturnStatus::Requested || !ret.restock_pending.is_empty()
            })
        });
        (!open).then_some((order.updated_us, id))
    }

    /// Moves an order's `ended` entry from `before` (its key before a change) to its key now.
    fn reindex_ended(&mut self, id: OrderId, before: Option<(i64, OrderId)>) {
        if let Some(key) = before {
            self.ended.remove(&key);
        }
        if let Some(key) = self.ended_key(id) {
            self.ended.insert(key);
        }
    }

    /// Adds received units and refunds to the order's hour of placement.
    fn count_after_sales(&mut self, id: OrderId, units: u64, refund: u64) {
        let hour = self.orders[&id].created_us.div_euclid(HOUR_US) * HOUR_US;
        let sales = self.sales.entry(hour).or_default();
        sales.returned_units = sales.returned_units.saturating_add(u128::from(units));
        sales.refunds = sales.refunds.saturating_add(u128::from(refund));
    }

    /// A return as clients see it.
    pub fn return_view(&self, id: ReturnId) -> Option<ReturnView> {
        self.returns.get(&id).map(return_view)
    }

    /// The order's refunds as clients see them.
    fn refund_views(&self, order: OrderId) -> Vec<RefundView> {
        self.refunds.get(&order).map_or_else(Vec::new, |refunds| {
            refunds.iter().map(|r| refund_view(order, r)).collect()
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_shipment(
        &mut self,
        id: ShipmentId,
        order_id: OrderId,
        carrier: &str,
        tracking: &str,
        lines: &[(String, u32)],
        actor: &str,
        at_us: i64,
    ) {
        assert_eq!(id.shard(), self.shard, "shipment on the wrong shard");
        self.next_shipment = self.next_shipment.max(id.counter() + 1);
        let actor = self.intern(actor);
        let shipment_lines: Box<[(Arc<str>, u32)]> = lines
            .iter()
            .map(|(sku, qty)| (self.intern(sku), *qty))
            .collect();
        let returned = self.returned_units(order_id);
        let order = self
            .orders
            .get_mut(&order_id)
            .expect("ship of unknown order");
        assert!(
            matches!(
                order.status,
                OrderStatus::Confirmed | OrderStatus::PartiallyShipped
            ),
            "ship of an order that is {}",
            order.status.as_str()
        );
        let mut walks = Vec::with_capacity(shipment_lines.len());
        for (sku, qty) in shipment_lines.iter() {
            let line = order
                .lines
                .iter_mut()
                .find(|l| l.sku == *sku)
                .expect("ship of a SKU not ordered");
            walks.push((sku.clone(), line.shipped, *qty));
            line.shipped += qty;
            assert!(line.shipped <= line.qty, "over-shipping");
        }
        let status = if order.lines.iter().all(|l| l.shipped == l.qty) {
            // Units that came back while the rest was still to ship: the order is whole now.
            if returned > 0 {
                OrderStatus::PartiallyReturned
            } else {
                OrderStatus::Shipped
            }
        } else {
            OrderStatus::PartiallyShipped
        };
        if status != order.status {
            order.status = status;
            order.later.push(History {
                at_us,
                status,
                actor,
            });
        }
        order.updated_us = at_us;
        if !order.cross {
            for (sku, qty) in shipment_lines.iter() {
                let stock = self.stock.get_mut(sku).expect("unknown stock");
                stock.on_hand -= *qty as u64;
                stock.reserved -= *qty as u64;
            }
            for (sku, from, count) in walks {
                self.walk_allocation(order_id, &sku, from, count, Walk::Ship);
            }
        }
        self.order_shipments.entry(order_id).or_default().push(id);
        let shipment = Shipment {
            id,
            order: order_id,
            carrier: carrier.into(),
            tracking: tracking.into(),
            lines: shipment_lines,
            status: ShipmentStatus::Shipped,
            events: vec![(at_us, ShipmentStatus::Shipped, None)],
        };
        let previous = self.shipments.insert(id, Box::new(shipment));
        assert!(previous.is_none(), "duplicate shipment id");
    }

    fn apply_shipment_update(
        &mut self,
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<&str>,
        actor: &str,
        at_us: i64,
    ) {
        let actor = self.intern(actor);
        let shipment = self.shipments.get_mut(&id).expect("unknown shipment");
        assert!(!shipment.status.is_final(), "event on a closed shipment");
        shipment.status = status;
        shipment.events.push((at_us, status, note.map(Box::from)));
        let order_id = shipment.order;
        if status != ShipmentStatus::Delivered {
            return;
        }
        let all_delivered = self.order_shipments[&order_id]
            .iter()
            .all(|s| self.shipments[s].status == ShipmentStatus::Delivered);
        let order = self
            .orders
            .get_mut(&order_id)
            .expect("shipment of unknown order");
        if order.status == OrderStatus::Shipped && all_delivered {
            order.status = OrderStatus::Delivered;
            order.updated_us = at_us;
            order.later.push(History {
                at_us,
                status: OrderStatus::Delivered,
                actor,
            });
            // Not ended while a return of it is open.
            self.reindex_ended(order_id, None);
        }
    }

    /// Adds (`sign` 1) or removes (`sign` -1) an order's lines from its hour's sales. The
    /// counters saturate instead of wrapping (see [`HourSales`]); removing takes away exactly
    /// what adding added unless a counter had saturated, which `debug_assert`s.
    fn count_sale(&mut self, id: OrderId, sign: i64) {
        let (returned, refunded) = (self.returned_units(id), self.refunded(id));
        let order = &self.orders[&id];
        let hour = order.created_us.div_euclid(HOUR_US) * HOUR_US;
        let sales = self.sales.entry(hour).or_default();
        let adding = sign > 0;
        macro_rules! count {
            ($value:expr, $amount:expr) => {{
                let amount = $amount;
                $value = if adding {
                    $value.saturating_add(amount)
                } else {
                    debug_assert!($value >= amount, "sales counter below what it counted");
                    $value.saturating_sub(amount)
                };
            }};
        }
        count!(sales.orders, 1);
        count!(sales.returned_units, u128::from(returned));
        count!(sales.refunds, u128::from(refunded));
        for line in order.lines.iter() {
            let revenue = line_amount(line);
            count!(sales.units, u128::from(line.qty));
            count!(sales.revenue, revenue);
            let entry = sales.skus.entry(line.sku.clone()).or_default();
            count!(entry.0, u128::from(line.qty));
            count!(entry.1, revenue);
            if entry.0 == 0 && entry.1 == 0 {
                sales.skus.remove(&line.sku);
            }
        }
        self.drop_empty_hour(hour);
    }

    /// Moves ended orders out of memory (`OrdersArchived`): their records, listing indexes
    /// and shipments go; their sales stay counted, and are noted in `archived_sales` so a
    /// snapshot keeps them. Ids no longer held, or not ended, are skipped (a replay applies
    /// exactly what the live shard did).
    fn archive(&mut self, ids: &[u64]) {
        for &raw in ids {
            let id = OrderId(raw);
            let Some(ended) = self.ended_key(id) else {
                continue;
            };
            let (returned, refunded) = (self.returned_units(id), self.refunded(id));
            let order = &self.orders[&id];
            let hour = order.created_us.div_euclid(HOUR_US) * HOUR_US;
            let archived = Arc::make_mut(&mut self.archived_sales);
            let sales = archived.entry(hour).or_default();
            if order.status == OrderStatus::Cancelled {
                sales.cancelled = sales.cancelled.saturating_add(1);
            } else {
                sales.orders = sales.orders.saturating_add(1);
                sales.returned_units = sales.returned_units.saturating_add(u128::from(returned));
                sales.refunds = sales.refunds.saturating_add(u128::from(refunded));
                for line in order.lines.iter() {
                    let revenue = line_amount(line);
                    sales.units = sales.units.saturating_add(u128::from(line.qty));
                    sales.revenue = sales.revenue.saturating_add(revenue);
                    let entry = sales.skus.entry(line.sku.clone()).or_default();
                    entry.0 = entry.0.saturating_add(u128::from(line.qty));
                    entry.1 = entry.1.saturating_add(revenue);
                }
            }
            let order = self.orders.remove(&id).expect("just read");
            self.order_index.remove(&(order.created_us, id));
            self.customer_index
                .remove(&(order.customer, order.created_us, id));
            self.ended.remove(&ended);
            if let Some(shipments) = self.order_shipments.remove(&id) {
                for shipment in shipments {
                    self.shipments.remove(&shipment);
                }
            }
            if let Some(returns) = self.order_returns.remove(&id) {
                for ret in returns {
                    self.returns.remove(&ret);
                }
            }
            self.refunds.remove(&id);
            if !self.holds.contains_key(&id) {
                // (A hold of its own SKUs still held here keeps its allocation until released.)
                self.allocated.remove(&id);
            }
            self.order_allocations.remove(&id);
        }
    }

    /// Ended orders whose end is before `cutoff_us`, oldest first, at most `max`.
    pub fn cold_candidates(&self, cutoff_us: i64, max: usize) -> Vec<OrderId> {
        self.ended
            .range(..(cutoff_us, OrderId(0)))
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// What the cold tier keeps of order `id` (held in memory).
    pub fn cold_record(&self, id: OrderId) -> Option<crate::cold::ColdOrder> {
        let order = self.orders.get(&id)?;
        let shipments = self
            .order_shipments
            .get(&id)
            .map(|ids| ids.iter().filter_map(|s| self.shipment_view(*s)).collect())
            .unwrap_or_default();
        let returns = self
            .order_returns
            .get(&id)
            .map(|ids| ids.iter().filter_map(|r| self.return_view(*r)).collect())
            .unwrap_or_default();
        Some(crate::cold::ColdOrder {
            order: self.view(order),
            shipments,
            returns,
            cross: order.cross,
            archived_seq: 0,
        })
    }

    fn count_cancelled(&mut self, id: OrderId, amount: u64) {
        let hour = self.orders[&id].created_us.div_euclid(HOUR_US) * HOUR_US;
        let sales = self.sales.entry(hour).or_default();
        sales.cancelled = sales.cancelled.saturating_add(amount);
    }

    fn drop_empty_hour(&mut self, hour: i64) {
        if self.sales.get(&hour).is_some_and(|s| {
            s.orders == 0
                && s.cancelled == 0
                && s.skus.is_empty()
                && s.returned_units == 0
                && s.refunds == 0
        }) {
            self.sales.remove(&hour);
        }
    }

    /// Sales of the orders placed in `[from_us, to_us)`: whole hours from the counters, the
    /// partial hours at either end by walking the orders placed in them (the listing index is
    /// ordered by placement time, so that walk touches only those orders).
    pub fn sales_summary(&self, from_us: i64, to_us: i64) -> SalesSummary {
        let mut summary = SalesSummary::default();
        // Orders are placed after 1970 and long before the end of time: clamping keeps the
        // hour arithmetic below from overflowing on extreme bounds.
        let (from_us, to_us) = (from_us.max(0), to_us.min(i64::MAX - 2 * HOUR_US));
        if from_us >= to_us {
            return summary;
        }
        let first_full = from_us.div_euclid(HOUR_US) * HOUR_US
            + if from_us.rem_euclid(HOUR_US) == 0 {
                0
            } else {
                HOUR_US
            };
        let end_full = to_us.div_euclid(HOUR_US) * HOUR_US;
        if first_full < end_full {
            // Summed in u128 and saturated to u64 once at the end (see [`SalesSummary`]).
            let (mut units, mut revenue) = (0u128, 0u128);
            let (mut returned, mut refunds) = (0u128, 0u128);
            let mut skus: HashMap<&str, (u128, u128)> = HashMap::new();
            for (hour, sales) in self.sales.range(first_full..end_full) {
                summary.orders = summary.orders.saturating_add(sales.orders);
                summary.cancelled = summary.cancelled.saturating_add(sales.cancelled);
                units = units.saturating_add(sales.units);
                revenue = revenue.saturating_add(sales.revenue);
                returned = returned.saturating_add(sales.returned_units);
                refunds = refunds.saturating_add(sales.refunds);
                for (sku, (sku_units, sku_revenue)) in &sales.skus {
                    let entry = skus.entry(sku).or_default();
                    entry.0 = entry.0.saturating_add(*sku_units);
                    entry.1 = entry.1.saturating_add(*sku_revenue);
                }
                if sales.orders > 0 {
                    summary
                        .by_hour
                        .insert(*hour, (sales.orders, saturate(sales.revenue)));
                }
            }
            summary.units = saturate(units);
            summary.revenue = saturate(revenue);
            summary.returned_units = saturate(returned);
            summary.refunds = saturate(refunds);
            summary.skus = skus
                .into_iter()
                .map(|(sku, (units, revenue))| {
                    (sku.to_string(), (saturate(units), saturate(revenue)))
                })
                .collect();
            self.walk_sales(from_us, first_full, &mut summary);
            self.walk_sales(end_full, to_us, &mut summary);
        } else {
            self.walk_sales(from_us, to_us, &mut summary);
        }
        summary
    }

    /// The parts of `[from_us, to_us)` the counters do not answer (the partial hours at either
    /// end), walked order by order; as [`ShardData::sales_summary`] splits the range.
    pub fn walked_ranges(from_us: i64, to_us: i64) -> Vec<(i64, i64)> {
        let (from_us, to_us) = (from_us.max(0), to_us.min(i64::MAX - 2 * HOUR_US));
        if from_us >= to_us {
            return Vec::new();
        }
        let first_full = from_us.div_euclid(HOUR_US) * HOUR_US
            + if from_us.rem_euclid(HOUR_US) == 0 {
                0
            } else {
                HOUR_US
            };
        let end_full = to_us.div_euclid(HOUR_US) * HOUR_US;
        let ranges = if first_full < end_full {
            vec![(from_us, first_full), (end_full, to_us)]
        } else {
            vec![(from_us, to_us)]
        };
        ranges.into_iter().filter(|(a, b)| a < b).collect()
    }

    /// Counts the orders placed in `[from_us, to_us)` one by one.
    fn walk_sales(&self, from_us: i64, to_us: i64, summary: &mut SalesSummary) {
        if from_us >= to_us {
            return;
        }
        let range = (from_us, OrderId(0))..(to_us, OrderId(0));
        for (_, id) in self.order_index.range(range) {
            let order = &self.orders[id];
            match order.status {
                OrderStatus::Pending => continue,
                OrderStatus::Cancelled => {
                    summary.cancelled = summary.cancelled.saturating_add(1);
                    continue;
                }
                _ => {}
            }
            summary.orders = summary.orders.saturating_add(1);
            summary.returned_units = summary
                .returned_units
                .saturating_add(self.returned_units(*id));
            summary.refunds = summary.refunds.saturating_add(self.refunded(*id));
            let mut order_revenue: u64 = 0;
            for line in order.lines.iter() {
                let revenue = saturate(line_amount(line));
                order_revenue = order_revenue.saturating_add(revenue);
                summary.units = summary.units.saturating_add(u64::from(line.qty));
                summary.revenue = summary.revenue.saturating_add(revenue);
                let entry = summary.skus.entry(line.sku.to_string()).or_default();
                entry.0 = entry.0.saturating_add(u64::from(line.qty));
                entry.1 = entry.1.saturating_add(revenue);
            }
            let hour = order.created_us.div_euclid(HOUR_US) * HOUR_US;
            let entry = summary.by_hour.entry(hour).or_default();
            entry.0 = entry.0.saturating_add(1);
            entry.1 = entry.1.saturating_add(order_revenue);
        }
    }

    /// A page of the order listing, newest first: the orders before `filter.after` (a cursor
    /// `(created, id)`, exclusive) that match the filter, pending placements excepted, at most
    /// `filter.limit`. With a customer it reads that customer's range of `customer_index`, so
    /// it costs the customer's orders up to the page, not the shard's; without one it walks
    /// `order_index` newest first until the page is full (a status alone may walk every
    /// order: see docs/PERFORMANCE.md).
    pub fn list_orders(&self, filter: &OrderFilter) -> Vec<OrderView> {
        use std::ops::Bound;
        let Some(customer) = filter.customer_id else {
            return self.list_orders_by_scan(filter);
        };
        let lower = Bound::Included((customer, i64::MIN, OrderId(0)));
        let upper = match filter.after {
            Some(cursor) => Bound::Excluded((customer, cursor.created_at_us, cursor.id)),
            None => Bound::Included((customer, i64::MAX, OrderId(u64::MAX))),
        };
        self.customer_index
            .range((lower, upper))
            .rev()
            .filter_map(|(_, _, id)| self.orders.get(id))
            .filter(|o| o.status != OrderStatus::Pending)
            .filter(|o| filter.status.is_none_or(|s| s == o.status))
            .take(filter.limit)
            .map(|o| self.view(o))
            .collect()
    }

    /// The same page as [`ShardData::list_orders`] by walking `order_index`, every order
    /// newer than the cursor until the page is full: the path of lists without a customer,
    /// and the reference the customer index is tested and benchmarked against.
    pub fn list_orders_by_scan(&self, filter: &OrderFilter) -> Vec<OrderView> {
        let upper = match filter.after {
            Some(cursor) => std::ops::Bound::Excluded((cursor.created_at_us, cursor.id)),
            None => std::ops::Bound::Unbounded,
        };
        self.order_index
            .range((std::ops::Bound::Unbounded, upper))
            .rev()
            .filter_map(|(_, id)| self.orders.get(id))
            .filter(|o| o.status != OrderStatus::Pending)
            .filter(|o| filter.customer_id.is_none_or(|c| c == o.customer))
            .filter(|o| filter.status.is_none_or(|s| s == o.status))
            .take(filter.limit)
            .map(|o| self.view(o))
            .collect()
    }

    /// Whether both listing indexes hold exactly the shard's orders: `Err` names the first
    /// entry that differs. The simulator checks it at every quiescence, the tests after
    /// random events and recovery.
    pub fn check_listing_indexes(&self) -> Result<(), String> {
        let by_time: BTreeSet<(i64, OrderId)> =
            self.orders.values().map(|o| (o.created_us, o.id)).collect();
        if let Some(entry) = by_time.symmetric_difference(&self.order_index).next() {
            return Err(format!(
                "shard {}: order_index and the orders differ at {entry:?}",
                self.shard
            ));
        }
        let by_customer: BTreeSet<(CustomerId, i64, OrderId)> = self
            .orders
            .values()
            .map(|o| (o.customer, o.created_us, o.id))
            .collect();
        if let Some(entry) = by_customer
            .symmetric_difference(&self.customer_index)
            .next()
        {
            return Err(format!(
                "shard {}: customer_index and the orders differ at {entry:?}",
                self.shard
            ));
        }
        let ended: BTreeSet<(i64, OrderId)> = self
            .orders
            .keys()
            .filter_map(|id| self.ended_key(*id))
            .collect();
        if let Some(entry) = ended.symmetric_difference(&self.ended).next() {
            return Err(format!(
                "shard {}: the ended index and the orders differ at {entry:?}",
                self.shard
            ));
        }
        Ok(())
    }

    /// Orders placed in `[from_us, to_us)` after `after` (placement order), at most `limit`,
    /// whatever their status (pending placements excepted).
    pub fn orders_placed_between(
        &self,
        from_us: i64,
        to_us: i64,
        after: Option<(i64, OrderId)>,
        limit: usize,
    ) -> Vec<OrderView> {
        use std::ops::Bound;
        if from_us >= to_us {
            return Vec::new();
        }
        let lower = match after {
            Some(cursor) if cursor >= (from_us, OrderId(0)) => Bound::Excluded(cursor),
            _ => Bound::Included((from_us, OrderId(0))),
        };
        self.order_index
            .range((lower, Bound::Excluded((to_us, OrderId(0)))))
            .map(|(_, id)| &self.orders[id])
            .filter(|o| o.status != OrderStatus::Pending)
            .take(limit)
            .map(|o| self.view(o))
            .collect()
    }

    /// A shipment as clients see it.
    pub fn shipment_view(&self, id: ShipmentId) -> Option<ShipmentView> {
        let s = self.shipments.get(&id)?;
        Some(ShipmentView {
            id,
            order_id: s.order,
            carrier: s.carrier.to_string(),
            tracking_number: s.tracking.to_string(),
            status: s.status,
            lines: s
                .lines
                .iter()
                .map(|(sku, q)| (sku.to_string(), *q))
                .collect(),
            events: s
                .events
                .iter()
                .map(|(at_us, status, note)| ShipmentEventView {
                    at_us: *at_us,
                    status: *status,
                    note: note.as_deref().map(str::to_string),
                })
                .collect(),
        })
    }

    /// An order as clients see it, with its shipments.
    pub fn view(&self, order: &Order) -> OrderView {
        let mut view = order_view(order);
        let allocation = self.view_allocation(order.id, order.cross);
        for line in &mut view.lines {
            line.allocations = ShardData::allocation_stretch(allocation, &line.sku, 0, line.qty)
                .into_iter()
                .map(|(location, qty)| (location.to_string(), qty))
                .collect();
        }
        if let Some(shipments) = self.order_shipments.get(&order.id) {
            view.shipments = shipments.iter().map(|s| s.to_string()).collect();
        }
        if let Some(returns) = self.order_returns.get(&order.id) {
            view.returns = returns.iter().map(|r| r.to_string()).collect();
            for line in &mut view.lines {
                line.returned_qty = self.returned_of(order.id, &line.sku) as u32;
            }
        }
        view.refunds = self.refund_views(order.id);
        view.refunded = self.refunded(order.id);
        view
    }

    fn insert_order(
        &mut self,
        record: &OrderRecord,
        status: OrderStatus,
        cross: bool,
        idem: Option<&IdemRecord>,
    ) {
        let id = OrderId(record.id);
        assert_eq!(id.shard(), self.shard, "order on the wrong shard");
        self.next_order = self.next_order.max(id.counter() + 1);
        let lines: Box<[Line]> = record
            .lines
            .iter()
            .map(|line| Line {
                sku: self.intern(&line.sku),
                qty: line.qty,
                unit_price: line.unit_price,
                shipped: 0,
            })
            .collect();
        let actor = self.intern(&record.actor);
        let order = Order {
            id,
            customer: CustomerId(record.customer),
            status,
            cross,
            lines,
            extras: OrderExtras::new(record.shipping_address.as_deref(), record.note.as_deref()),
            created_us: record.at_us,
            updated_us: record.at_us,
            placed_by: actor,
            confirmed_us: record.at_us,
            later: Vec::new(),
        };
        self.order_index.insert((order.created_us, id));
        self.customer_index
            .insert((order.customer, order.created_us, id));
        let previous = self.orders.insert(id, Box::new(order));
        assert!(previous.is_none(), "duplicate order id");
        if let Some(idem) = idem {
            self.idempotency.insert(
                idem.key.clone().into_boxed_str(),
                IdemEntry {
                    hash: idem.hash,
                    at_us: idem.at_us,
                    outcome: IdemOutcome::Order(record.id),
                },
            );
        }
    }

    /// Forgets idempotency keys older than `cutoff_us`. Orders stay; only the key is dropped.
    pub fn sweep_idempotency(&mut self, cutoff_us: i64) -> usize {
        let before = self.idempotency.len();
        let mut freed = 0usize;
        self.idempotency.retain(|key, entry| {
            let keep = entry.at_us >= cutoff_us;
            if let (false, IdemOutcome::Rejected(short)) = (keep, &entry.outcome) {
                freed += rejected_bytes(key, short);
            }
            keep
        });
        self.rejected_bytes = self.rejected_bytes.saturating_sub(freed);
        while self
            .rejected
            .front()
            .is_some_and(|(at_us, _)| *at_us < cutoff_us)
        {
            self.rejected.pop_front();
        }
        before - self.idempotency.len()
    }

    /// A SKU's catalog entry as clients see it; `None` when it never had a price.
    pub fn catalog_view(&self, sku: &str) -> Option<CatalogView> {
        self.catalog.get(sku).map(|entry| catalog_view(sku, entry))
    }

    /// The catalog entries after `after` (exclusive; from the first without it), in SKU
    /// order, at most `limit`.
    pub fn catalog_page(&self, after: Option<&str>, limit: usize) -> Vec<CatalogView> {
        use std::ops::Bound;
        let lower: Bound<Arc<str>> = match after {
            Some(sku) => Bound::Excluded(Arc::from(sku)),
            None => Bound::Unbounded,
        };
        self.catalog
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(sku, entry)| catalog_view(sku, entry))
            .collect()
    }

    /// The catalog entry of each of `skus` (`None`: never priced), in the same order.
    pub fn catalog_prices(&self, skus: &[String]) -> Vec<Option<CatalogView>> {
        skus.iter().map(|sku| self.catalog_view(sku)).collect()
    }

    pub fn stock_view(&self, sku: &str) -> Option<StockView> {
        self.stock.get(sku).map(|stock| StockView {
            sku: sku.to_string(),
            on_hand: stock.on_hand,
            reserved: stock.reserved,
            available: stock.available(),
            locations: self.location_stock_views(sku),
        })
    }

    pub fn customer_view(&self, id: CustomerId) -> Option<CustomerView> {
        self.customers.get(&id).map(|c| CustomerView {
            id,
            name: c.name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            address: c.address.clone(),
            created_at_us: c.created_us,
            erased: c.is_erased(),
        })
    }

    /// The order as clients see it now; `None` for unknown or still-pending orders.
    pub fn order_view(&self, id: OrderId) -> Option<OrderView> {
        let order = self.orders.get(&id)?;
        if order.status == OrderStatus::Pending {
            return None;
        }
        Some(self.view(order))
    }

    /// The order as it was answered when it was placed (for idempotent repeats).
    pub fn placed_view(&self, id: OrderId) -> Option<OrderView> {
        Some(as_placed(self.order_view(id)?))
    }
}

fn catalog_view(sku: &str, entry: &CatalogEntry) -> CatalogView {
    CatalogView {
        sku: sku.to_string(),
        price: entry.price,
        active: entry.active,
        updated_at_us: entry.updated_us,
    }
}

/// An order's view as its placement answered it: confirmed, as when confirmed (the first
/// history entry), nothing shipped.
pub fn as_placed(mut view: OrderView) -> OrderView {
    {
        view.status = OrderStatus::Confirmed;
        // The answer of the placement: as it was when confirmed (the first history entry).
        view.updated_at_us = view.history.first().map_or(view.created_at_us, |h| h.at_us);
        for line in &mut view.lines {
            line.shipped_qty = 0;
        }
        view.history.truncate(1);
        view.shipments.clear();
        view.returns.clear();
        view.refunds.clear();
        view.refunded = 0;
        for line in &mut view.lines {
            line.returned_qty = 0;
        }
    }
    view
}

/// A return as clients see it.
pub fn return_view(ret: &Return) -> ReturnView {
    ReturnView {
        id: ret.id,
        order_id: ret.order,
        status: ret.status,
        lines: ret
            .lines
            .iter()
            .map(|(sku, qty)| (sku.to_string(), *qty))
            .collect(),
        reason: ret.reason.to_string(),
        created_at_us: ret.created_us,
        received: ret
            .received
            .iter()
            .map(|l| ReceivedLineView {
                sku: l.sku.clone(),
                qty: l.qty,
                restock: l.restock,
                location: l.restock.then(|| l.location.clone()),
            })
            .collect(),
        received_at_us: ret.received_us,
    }
}

/// A refund as clients see it.
pub fn refund_view(order: OrderId, refund: &Refund) -> RefundView {
    RefundView {
        id: refund.id,
        order_id: order,
        amount: refund.amount,
        reason: refund.reason.to_string(),
        created_at_us: refund.created_us,
    }
}

impl ShardData {
    /// A deterministic digest of the whole state: equal states give equal digests whatever
    /// the order in which maps were filled.
    pub fn state_digest(&self) -> u64 {
        let snapshot = self.to_snapshot();
        xxhash_rust::xxh3::xxh3_64(&snapshot.encode_canonical())
    }

    /// An immutable view of what a snapshot holds, in O(1) whatever the shard's size: the
    /// persistent maps are shared until the shard writes to them.
    pub fn freeze(&self) -> Frozen {
        Frozen {
            shard: self.shard,
            shard_count: self.shard_count,
            last_seq: self.last_seq,
            next_order: self.next_order,
            next_customer: self.next_customer,
            next_shipment: self.next_shipment,
            stock: self.stock.clone(),
            orders: self.orders.clone(),
            customers: self.customers.clone(),
            holds: self.holds.clone(),
            idempotency: self.idempotency.clone(),
            shipments: self.shipments.clone(),
            archived_sales: self.archived_sales.clone(),
            catalog: self.catalog.clone(),
            next_return: self.next_return,
            next_refund: self.next_refund,
            returns: self.returns.clone(),
            refunds: self.refunds.clone(),
            restocked: self.restocked.clone(),
            locations: self.locations.clone(),
            buckets: self.buckets.clone(),
            allocated: self.allocated.clone(),
            order_allocations: self.order_allocations.clone(),
        }
    }

    pub fn to_snapshot(&self) -> Snapshot {
        self.freeze().to_snapshot()
    }

    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut data = ShardData::new(snapshot.shard, snapshot.shard_count);
        data.last_seq = snapshot.last_seq;
        data.next_order = snapshot.next_order;
        data.next_customer = snapshot.next_customer;
        data.next_shipment = snapshot.next_shipment;
        for (sku, stock) in snapshot.stock {
            let sku = data.intern(&sku);
            data.stock.insert(sku, stock);
        }
        for (id, c) in snapshot.customers {
            data.customers.insert(
                CustomerId(id),
                Customer {
                    name: c.name,
                    email: c.email,
                    phone: c.phone,
                    address: c.address,
                    created_us: c.created_us,
                },
            );
        }
        for (id, held) in snapshot.holds {
            let held: Held = held
                .into_iter()
                .map(|(sku, qty, shipped)| HeldLine {
                    sku: data.intern(&sku),
                    qty,
                    shipped,
                })
                .collect();
            data.holds.insert(OrderId(id), held);
        }
        let mut rejected: Vec<(i64, Box<str>)> = Vec::new();
        for (key, entry) in snapshot.idempotency {
            if let IdemOutcome::Rejected(short) = &entry.outcome {
                data.rejected_bytes += rejected_bytes(&key, short);
                rejected.push((entry.at_us, key.clone().into_boxed_str()));
            }
            data.idempotency.insert(key.into_boxed_str(), entry);
        }
        rejected.sort_unstable();
        data.rejected = rejected.into();
        for o in snapshot.orders {
            let lines: Box<[Line]> = o
                .lines
                .into_iter()
                .map(|(sku, qty, unit_price, shipped)| Line {
                    sku: data.intern(&sku),
                    qty,
                    unit_price,
                    shipped,
                })
                .collect();
            let mut history = o.history.into_iter();
            let (confirmed_us, _, placed_by) =
                history
                    .next()
                    .unwrap_or((o.created_us, o.status, String::new()));
            let placed_by = data.intern(&placed_by);
            let later = history
                .map(|(at_us, status, actor)| History {
                    at_us,
                    status,
                    actor: data.intern(&actor),
                })
                .collect();
            let order = Order {
                id: OrderId(o.id),
                customer: CustomerId(o.customer),
                status: o.status,
                cross: o.cross,
                lines,
                extras: OrderExtras::new(o.shipping_address.as_deref(), o.note.as_deref()),
                created_us: o.created_us,
                updated_us: o.updated_us,
                placed_by,
                confirmed_us,
                later,
            };
            data.order_index.insert((order.created_us, order.id));
            data.customer_index
                .insert((order.customer, order.created_us, order.id));
            data.orders.insert(order.id, Box::new(order));
        }
        // Returns and refunds before the counters and the ended index, which count them.
        data.next_return = snapshot.next_return;
        data.next_refund = snapshot.next_refund;
        for r in snapshot.returns {
            let id = ReturnId(r.id);
            let order = OrderId(r.order);
            let lines = r
                .lines
                .into_iter()
                .map(|(sku, qty)| (data.intern(&sku), qty))
                .collect();
            data.order_returns.entry(order).or_default().push(id);
            data.returns.insert(
                id,
                Box::new(Return {
                    id,
                    order,
                    lines,
                    reason: r.reason.into(),
                    status: r.status,
                    created_us: r.created_us,
                    received: r.received.into_boxed_slice(),
                    received_us: r.received_us,
                    restock_pending: r.restock_pending.into_boxed_slice(),
                }),
            );
        }
        for (order, id, amount, reason, created_us) in snapshot.refunds {
            data.refunds.get_or_default(OrderId(order)).push(Refund {
                id: RefundId(id),
                amount,
                reason: reason.into(),
                created_us,
            });
        }
        for (ret, lines) in snapshot.restocked {
            data.restocked
                .insert(ReturnId(ret), lines.into_boxed_slice());
        }
        let ids: Vec<(OrderId, OrderStatus)> =
            data.orders.values().map(|o| (o.id, o.status)).collect();
        for (id, status) in ids {
            if let Some(key) = data.ended_key(id) {
                data.ended.insert(key);
            }
            match status {
                OrderStatus::Pending => {}
                OrderStatus::Cancelled => data.count_cancelled(id, 1),
                _ => data.count_sale(id, 1),
            }
        }
        for s in snapshot.shipments {
            let id = ShipmentId(s.id);
            let order = OrderId(s.order);
            let lines = s
                .lines
                .into_iter()
                .map(|(sku, qty)| (data.intern(&sku), qty))
                .collect();
            data.order_shipments.entry(order).or_default().push(id);
            data.shipments.insert(
                id,
                Box::new(Shipment {
                    id,
                    order,
                    carrier: s.carrier.into(),
                    tracking: s.tracking.into(),
                    lines,
                    status: s.status,
                    events: s
                        .events
                        .into_iter()
                        .map(|(at, st, note)| (at, st, note.map(String::into_boxed_str)))
                        .collect(),
                }),
            );
        }
        // Archived orders' sales: counted as when they were hot.
        let mut archived = BTreeMap::new();
        for (hour, orders, cancelled, units, revenue, skus) in snapshot.archived_sales {
            let mut sales = HourSales {
                orders,
                cancelled,
                units,
                revenue,
                skus: HashMap::new(),
                ..HourSales::default()
            };
            for (sku, sku_units, sku_revenue) in skus {
                let sku = data.intern(&sku);
                sales.skus.insert(sku, (sku_units, sku_revenue));
            }
            let counters = data.sales.entry(hour).or_default();
            counters.orders = counters.orders.saturating_add(sales.orders);
            counters.cancelled = counters.cancelled.saturating_add(sales.cancelled);
            counters.units = counters.units.saturating_add(sales.units);
            counters.revenue = counters.revenue.saturating_add(sales.revenue);
            for (sku, (u, r)) in &sales.skus {
                let entry = counters.skus.entry(sku.clone()).or_default();
                entry.0 = entry.0.saturating_add(*u);
                entry.1 = entry.1.saturating_add(*r);
            }
            archived.insert(hour, sales);
        }
        for (hour, returned, refunds) in snapshot.archived_after_sales {
            let counters = data.sales.entry(hour).or_default();
            counters.returned_units = counters.returned_units.saturating_add(returned);
            counters.refunds = counters.refunds.saturating_add(refunds);
            let sales: &mut HourSales = archived.entry(hour).or_default();
            sales.returned_units = returned;
            sales.refunds = refunds;
        }
        data.archived_sales = Arc::new(archived);
        for (sku, price, active, updated_us) in snapshot.catalog {
            let sku = data.intern(&sku);
            data.catalog.insert(
                sku,
                CatalogEntry {
                    price,
                    active,
                    updated_us,
                },
            );
        }
        for (id, name, priority, created_us, updated_us) in snapshot.locations {
            let id = data.intern(&id);
            data.locations.insert(
                id,
                crate::locations::Location {
                    name: name.into(),
                    priority,
                    created_us,
                    updated_us,
                },
            );
        }
        for (sku, buckets) in snapshot.buckets {
            let buckets: crate::locations::Buckets = buckets
                .into_iter()
                .map(|(location, on_hand, reserved)| crate::locations::Bucket {
                    location: data.intern(&location),
                    on_hand,
                    reserved,
                })
                .collect();
            let sku = data.intern(&sku);
            data.buckets.insert(sku, buckets);
        }
        for (target, list) in [
            (false, snapshot.allocated),
            (true, snapshot.order_allocations),
        ] {
            for (order, allocation) in list {
                let allocation: crate::locations::Allocation = allocation
                    .into_iter()
                    .map(|(sku, location, qty)| crate::locations::Alloc {
                        sku: data.intern(&sku),
                        location: data.intern(&location),
                        qty,
                    })
                    .collect();
                if target {
                    data.order_allocations.insert(OrderId(order), allocation);
                } else {
                    data.allocated.insert(OrderId(order), allocation);
                }
            }
        }
        data
    }
}

/// An order's total, `u64::MAX` if it does not fit (only an order logged before the bounds of
/// [`crate::domain::add_line_amount`] could be that large).
pub fn order_total(order: &Order) -> u64 {
    saturate(order.lines.iter().map(line_amount).sum())
}

/// Adds one order, read from the cold tier, to a summary's walked part, as
/// [`ShardData::sales_summary`] adds a hot order placed in a partial hour.
pub fn count_walked(summary: &mut SalesSummary, order: &OrderView) {
    match order.status {
        OrderStatus::Pending => return,
        OrderStatus::Cancelled => {
            summary.cancelled = summary.cancelled.saturating_add(1);
            return;
        }
        _ => {}
    }
    summary.orders = summary.orders.saturating_add(1);
    let returned: u64 = order.lines.iter().map(|l| u64::from(l.returned_qty)).sum();
    summary.returned_units = summary.returned_units.saturating_add(returned);
    summary.refunds = summary.refunds.saturating_add(order.refunded);
    let mut order_revenue: u64 = 0;
    for line in &order.lines {
        let revenue = saturate(u128::from(line.qty) * u128::from(line.unit_price));
        order_revenue = order_revenue.saturating_add(revenue);
        summary.units = summary.units.saturating_add(u64::from(line.qty));
        summary.revenue = summary.revenue.saturating_add(revenue);
        let entry = summary.skus.entry(line.sku.clone()).or_default();
        entry.0 = entry.0.saturating_add(u64::from(line.qty));
        entry.1 = entry.1.saturating_add(revenue);
    }
    let hour = order.created_at_us.div_euclid(HOUR_US) * HOUR_US;
    let entry = summary.by_hour.entry(hour).or_default();
    entry.0 = entry.0.saturating_add(1);
    entry.1 = entry.1.saturating_add(order_revenue);
}

pub fn order_view(order: &Order) -> OrderView {
    OrderView {
        id: order.id,
        customer_id: order.customer,
        status: order.status,
        lines: order
            .lines
            .iter()
            .map(|line| LineView {
                sku: line.sku.to_string(),
                qty: line.qty,
                unit_price: line.unit_price,
                shipped_qty: line.shipped,
                returned_qty: 0,
                allocations: Vec::new(),
            })
            .collect(),
        total: order_total(order),
        shipping_address: order.shipping_address().map(str::to_string),
        note: order.note().map(str::to_string),
        created_at_us: order.created_us,
        updated_at_us: order.updated_us,
        history: order
            .history()
            .map(|(at_us, status, actor)| HistoryView {
                at_us,
                status,
                actor: actor.to_string(),
            })
            .collect(),
        shipments: Vec::new(),
        customer_erased: false,
        returns: Vec::new(),
        refunds: Vec::new(),
        refunded: 0,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapOrder {
    pub id: u64,
    pub customer: u64,
    pub status: OrderStatus,
    pub cross: bool,
    pub lines: Vec<(String, u32, u64, u32)>,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
    pub history: Vec<(i64, OrderStatus, String)>,
}

impl From<&Order> for SnapOrder {
    fn from(o: &Order) -> Self {
        SnapOrder {
            id: o.id.0,
            customer: o.customer.0,
            status: o.status,
            cross: o.cross,
            lines: o
                .lines
                .iter()
                .map(|l| (l.sku.to_string(), l.qty, l.unit_price, l.shipped))
                .collect(),
            shipping_address: o.shipping_address().map(str::to_string),
            note: o.note().map(str::to_string),
            created_us: o.created_us,
            updated_us: o.updated_us,
            history: o
                .history()
                .map(|(at_us, status, actor)| (at_us, status, actor.to_string()))
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapCustomer {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub created_us: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapShipment {
    pub id: u64,
    pub order: u64,
    pub carrier: String,
    pub tracking: String,
    pub lines: Vec<(String, u32)>,
    pub status: ShipmentStatus,
    pub events: Vec<(i64, ShipmentStatus, Option<String>)>,
}

/// A shard's whole state at `last_seq`, in canonical (sorted) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub shard: u16,
    pub shard_count: u16,
    pub last_seq: u64,
    /// The shard's chained digest of its log batches up to `last_seq`.
    pub log_digest: u64,
    pub next_order: u64,
    pub next_customer: u64,
    pub stock: Vec<(String, Stock)>,
    pub orders: Vec<SnapOrder>,
    pub customers: Vec<(u64, SnapCustomer)>,
    /// Per order: (SKU, quantity held, quantity shipped).
    pub holds: Vec<SnapHold>,
    pub idempotency: Vec<(String, IdemEntry)>,
    pub next_shipment: u64,
    pub shipments: Vec<SnapShipment>,
    /// The sales counters of orders moved to the cold tier, by hour (version 3).
    pub archived_sales: Vec<SnapSales>,
    /// Catalog prices: (SKU, price, active, updated), SKUs sorted (version 4).
    pub catalog: Vec<SnapCatalog>,
    // Version 5: returns and refunds.
    pub next_return: u64,
    pub next_refund: u64,
    /// Returns, by id.
    pub returns: Vec<SnapReturn>,
    /// Refunds: (order, id, amount, reason, created), by order then id.
    pub refunds: Vec<SnapRefund>,
    /// The restock ledger: returns restocked here and what they restocked, by return id.
    pub restocked: Vec<(u64, Vec<RestockLine>)>,
    /// Archived orders' received units and refunds by hour: (hour, units, refunds).
    pub archived_after_sales: Vec<(i64, u128, u128)>,
    // Version 6: locations.
    /// Defined locations: (id, name, priority, created, updated), by id.
    pub locations: Vec<(String, String, u32, i64, i64)>,
    /// Per SKU (sorted), its stock at locations other than `default`: (location, on_hand,
    /// reserved), by location.
    pub buckets: Vec<SnapBuckets>,
    /// Allocations this shard made that touch a location other than `default`: (order,
    /// [(SKU, location, units)]), by order.
    pub allocated: Vec<SnapAllocation>,
    /// Cross-shard orders' allocations as their stock shards answered, by order.
    pub order_allocations: Vec<SnapAllocation>,
}

/// Version 5 of the snapshot (before locations), read when an older data directory opens.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct SnapshotV5 {
    shard: u16,
    shard_count: u16,
    last_seq: u64,
    /// The shard's chained digest of its log batches up to `last_seq`.
    log_digest: u64,
    next_order: u64,
    next_customer: u64,
    stock: Vec<(String, Stock)>,
    orders: Vec<SnapOrder>,
    customers: Vec<(u64, SnapCustomer)>,
    /// Per order: (SKU, quantity held, quantity shipped).
    holds: Vec<SnapHold>,
    idempotency: Vec<(String, IdemEntry)>,
    next_shipment: u64,
    shipments: Vec<SnapShipment>,
    /// The sales counters of orders moved to the cold tier, by hour (version 3).
    archived_sales: Vec<SnapSales>,
    /// Catalog prices: (SKU, price, active, updated), SKUs sorted (version 4).
    catalog: Vec<SnapCatalog>,
    // Version 5: returns and refunds.
    next_return: u64,
    next_refund: u64,
    /// Returns, by id.
    returns: Vec<SnapReturn>,
    /// Refunds: (order, id, amount, reason, created), by order then id.
    refunds: Vec<SnapRefund>,
    /// The restock ledger: returns restocked here and what they restocked, by return id.
    restocked: Vec<(u64, Vec<RestockLine>)>,
    /// Archived orders' received units and refunds by hour: (hour, units, refunds).
    archived_after_sales: Vec<(i64, u128, u128)>,
}

impl From<SnapshotV5> for Snapshot {
    fn from(v5: SnapshotV5) -> Snapshot {
        Snapshot {
            shard: v5.shard,
            shard_count: v5.shard_count,
            last_seq: v5.last_seq,
            log_digest: v5.log_digest,
            next_order: v5.next_order,
            next_customer: v5.next_customer,
            stock: v5.stock,
            orders: v5.orders,
            customers: v5.customers,
            holds: v5.holds,
            idempotency: v5.idempotency,
            next_shipment: v5.next_shipment,
            shipments: v5.shipments,
            archived_sales: v5.archived_sales,
            catalog: v5.catalog,
            next_return: v5.next_return,
            next_refund: v5.next_refund,
            returns: v5.returns,
            refunds: v5.refunds,
            restocked: v5.restocked,
            archived_after_sales: v5.archived_after_sales,
            locations: Vec::new(),
            buckets: Vec::new(),
            allocated: Vec::new(),
            order_allocations: Vec::new(),
        }
    }
}

/// A return in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapReturn {
    pub id: u64,
    pub order: u64,
    pub lines: Vec<(String, u32)>,
    pub reason: String,
    pub status: ReturnStatus,
    pub created_us: i64,
    pub received: Vec<ReceivedLine>,
    pub received_us: Option<i64>,
    pub restock_pending: Vec<u16>,
}

/// A SKU's stock at its locations other than `default` in a snapshot: SKU, then (location,
/// on_hand, reserved) by location.
pub type SnapBuckets = (String, Vec<(String, u64, u64)>);

/// An order's allocation in a snapshot: order, then (SKU, location, units) in shipping order.
pub type SnapAllocation = (u64, Vec<(String, String, u32)>);

/// A refund in a snapshot: order, id, amount, reason, created (microseconds).
pub type SnapRefund = (u64, u64, u64, String, i64);

/// One catalog entry in a snapshot: SKU, price, active, updated (microseconds).
pub type SnapCatalog = (String, u64, bool, i64);

/// One hour's sales of archived orders: hour, orders, cancelled, units, revenue, and per SKU
/// (SKU, units, revenue), SKUs sorted.
pub type SnapSales = (i64, u64, u64, u128, u128, Vec<(String, u128, u128)>);

/// What a snapshot holds, frozen at one sequence number ([`ShardData::freeze`]): cheap to take
/// on the shard thread, encoded on another ([`Frozen::to_snapshot`]).
#[derive(Clone)]
pub struct Frozen {
    pub shard: u16,
    pub shard_count: u16,
    pub last_seq: u64,
    pub next_order: u64,
    pub next_customer: u64,
    pub next_shipment: u64,
    stock: PMap<Arc<str>, Stock, RandomState>,
    orders: IdPMap<OrderId, Order>,
    customers: IdPMap<CustomerId, Customer>,
    holds: IdPMap<OrderId, Held>,
    idempotency: PMap<Box<str>, IdemEntry, RandomState>,
    shipments: IdPMap<ShipmentId, Shipment>,
    archived_sales: Arc<BTreeMap<i64, HourSales>>,
    catalog: imbl::OrdMap<Arc<str>, CatalogEntry>,
    next_return: u64,
    next_refund: u64,
    returns: IdPMap<ReturnId, Return>,
    refunds: IdPMap<OrderId, Vec<Refund>>,
    restocked: IdPMap<ReturnId, Box<[RestockLine]>>,
    locations: BTreeMap<Arc<str>, crate::locations::Location>,
    buckets: PMap<Arc<str>, crate::locations::Buckets, RandomState>,
    allocated: IdPMap<OrderId, crate::locations::Allocation>,
    order_allocations: IdPMap<OrderId, crate::locations::Allocation>,
}

/// An allocation as a snapshot holds it: (SKU, location, units).
fn snap_allocation(allocation: &crate::locations::Allocation) -> Vec<(String, String, u32)> {
    allocation
        .iter()
        .map(|a| (a.sku.to_string(), a.location.to_string(), a.qty))
        .collect()
}

impl Frozen {
    /// The snapshot of this view, every list sorted (the canonical form); its `log_digest` is
    /// the caller's to set.
    pub fn to_snapshot(&self) -> Snapshot {
        let mut stock: Vec<(String, Stock)> = self
            .stock
            .iter()
            .map(|(sku, stock)| (sku.to_string(), *stock))
            .collect();
        stock.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut orders: Vec<SnapOrder> = self.orders.values().map(SnapOrder::from).collect();
        orders.sort_unstable_by_key(|o| o.id);
        let mut customers: Vec<(u64, SnapCustomer)> = self
            .customers
            .iter()
            .map(|(id, c)| {
                (
                    id.0,
                    SnapCustomer {
                        name: c.name.clone(),
                        email: c.email.clone(),
                        phone: c.phone.clone(),
                        address: c.address.clone(),
                        created_us: c.created_us,
                    },
                )
            })
            .collect();
        customers.sort_unstable_by_key(|c| c.0);
        let mut holds: Vec<SnapHold> = self
            .holds
            .iter()
            .map(|(id, held)| {
                (
                    id.0,
                    held.iter()
                        .map(|line| (line.sku.to_string(), line.qty, line.shipped))
                        .collect(),
                )
            })
            .collect();
        holds.sort_unstable_by_key(|h| h.0);
        let mut idempotency: Vec<(String, IdemEntry)> = self
            .idempotency
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        idempotency.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut shipments: Vec<SnapShipment> = self
            .shipments
            .values()
            .map(|s| SnapShipment {
                id: s.id.0,
                order: s.order.0,
                carrier: s.carrier.to_string(),
                tracking: s.tracking.to_string(),
                lines: s.lines.iter().map(|(k, q)| (k.to_string(), *q)).collect(),
                status: s.status,
                events: s
                    .events
                    .iter()
                    .map(|(at, st, note)| (*at, *st, note.as_deref().map(str::to_string)))
                    .collect(),
            })
            .collect();
        shipments.sort_unstable_by_key(|s| s.id);
        let mut returns: Vec<SnapReturn> = self
            .returns
            .values()
            .map(|r| SnapReturn {
                id: r.id.0,
                order: r.order.0,
                lines: r.lines.iter().map(|(k, q)| (k.to_string(), *q)).collect(),
                reason: r.reason.to_string(),
                status: r.status,
                created_us: r.created_us,
                received: r.received.to_vec(),
                received_us: r.received_us,
                restock_pending: r.restock_pending.to_vec(),
            })
            .collect();
        returns.sort_unstable_by_key(|r| r.id);
        let mut refunds: Vec<SnapRefund> = self
            .refunds
            .iter()
            .flat_map(|(order, refunds)| {
                refunds.iter().map(|r| {
                    (
                        order.0,
                        r.id.0,
                        r.amount,
                        r.reason.to_string(),
                        r.created_us,
                    )
                })
            })
            .collect();
        refunds.sort_unstable_by_key(|r| (r.0, r.1));
        let mut restocked: Vec<(u64, Vec<RestockLine>)> = self
            .restocked
            .iter()
            .map(|(ret, lines)| (ret.0, lines.to_vec()))
            .collect();
        restocked.sort_unstable_by_key(|r| r.0);
        let archived_after_sales = self
            .archived_sales
            .iter()
            .filter(|(_, s)| s.returned_units > 0 || s.refunds > 0)
            .map(|(hour, s)| (*hour, s.returned_units, s.refunds))
            .collect();
        Snapshot {
            shard: self.shard,
            shard_count: self.shard_count,
            last_seq: self.last_seq,
            log_digest: 0,
            next_order: self.next_order,
            next_customer: self.next_customer,
            stock,
            orders,
            customers,
            holds,
            idempotency,
            next_shipment: self.next_shipment,
            shipments,
            archived_sales: self
                .archived_sales
                .iter()
                .map(|(hour, sales)| {
                    let mut skus: Vec<(String, u128, u128)> = sales
                        .skus
                        .iter()
                        .map(|(sku, (units, revenue))| (sku.to_string(), *units, *revenue))
                        .collect();
                    skus.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    (
                        *hour,
                        sales.orders,
                        sales.cancelled,
                        sales.units,
                        sales.revenue,
                        skus,
                    )
                })
                .collect(),
            // The ordered map iterates in SKU order: already canonical.
            catalog: self
                .catalog
                .iter()
                .map(|(sku, e)| (sku.to_string(), e.price, e.active, e.updated_us))
                .collect(),
            next_return: self.next_return,
            next_refund: self.next_refund,
            returns,
            refunds,
            restocked,
            archived_after_sales,
            locations: self
                .locations
                .iter()
                .map(|(id, l)| {
                    (
                        id.to_string(),
                        l.name.to_string(),
                        l.priority,
                        l.created_us,
                        l.updated_us,
                    )
                })
                .collect(),
            buckets: {
                let mut buckets: Vec<SnapBuckets> = self
                    .buckets
                    .iter()
                    .map(|(sku, b)| {
                        let b = b
                            .iter()
                            .map(|b| (b.location.to_string(), b.on_hand, b.reserved))
                            .collect();
                        (sku.to_string(), b)
                    })
                    .collect();
                buckets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                buckets
            },
            allocated: {
                let mut allocated: Vec<SnapAllocation> = self
                    .allocated
                    .iter()
                    .map(|(order, a)| (order.0, snap_allocation(a)))
                    .collect();
                allocated.sort_unstable_by_key(|a| a.0);
                allocated
            },
            order_allocations: {
                let mut allocations: Vec<SnapAllocation> = self
                    .order_allocations
                    .iter()
                    .map(|(order, a)| (order.0, snap_allocation(a)))
                    .collect();
                allocations.sort_unstable_by_key(|a| a.0);
                allocations
            },
        }
    }
}

/// Version 4 of the snapshot (before returns and refunds), read when an older data
/// directory opens; versions 1 to 3 are read through it.
#[derive(Deserialize)]
struct SnapshotV4 {
    shard: u16,
    shard_count: u16,
    last_seq: u64,
    log_digest: u64,
    next_order: u64,
    next_customer: u64,
    stock: Vec<(String, Stock)>,
    orders: Vec<SnapOrder>,
    customers: Vec<(u64, SnapCustomer)>,
    holds: Vec<SnapHold>,
    idempotency: Vec<(String, IdemEntry)>,
    next_shipment: u64,
    shipments: Vec<SnapShipment>,
    archived_sales: Vec<SnapSales>,
    catalog: Vec<SnapCatalog>,
}

impl From<SnapshotV4> for Snapshot {
    fn from(v4: SnapshotV4) -> Snapshot {
        Snapshot {
            shard: v4.shard,
            shard_count: v4.shard_count,
            last_seq: v4.last_seq,
            log_digest: v4.log_digest,
            next_order: v4.next_order,
            next_customer: v4.next_customer,
            stock: v4.stock,
            orders: v4.orders,
            customers: v4.customers,
            holds: v4.holds,
            idempotency: v4.idempotency,
            next_shipment: v4.next_shipment,
            shipments: v4.shipments,
            archived_sales: v4.archived_sales,
            catalog: v4.catalog,
            next_return: 1,
            next_refund: 1,
            returns: Vec::new(),
            refunds: Vec::new(),
            restocked: Vec::new(),
            archived_after_sales: Vec::new(),
            locations: Vec::new(),
            buckets: Vec::new(),
            allocated: Vec::new(),
            order_allocations: Vec::new(),
        }
    }
}

/// Version 3 of the snapshot (before the catalog), read when an older data directory opens.
#[derive(Deserialize)]
struct SnapshotV3 {
    shard: u16,
    shard_count: u16,
    last_seq: u64,
    log_digest: u64,
    next_order: u64,
    next_customer: u64,
    stock: Vec<(String, Stock)>,
    orders: Vec<SnapOrder>,
    customers: Vec<(u64, SnapCustomer)>,
    holds: Vec<SnapHold>,
    idempotency: Vec<(String, IdemEntry)>,
    next_shipment: u64,
    shipments: Vec<SnapShipment>,
    archived_sales: Vec<SnapSales>,
}

impl From<SnapshotV3> for SnapshotV4 {
    fn from(v3: SnapshotV3) -> SnapshotV4 {
        SnapshotV4 {
            shard: v3.shard,
            shard_count: v3.shard_count,
            last_seq: v3.last_seq,
            log_digest: v3.log_digest,
            next_order: v3.next_order,
            next_customer: v3.next_customer,
            stock: v3.stock,
            orders: v3.orders,
            customers: v3.customers,
            holds: v3.holds,
            idempotency: v3.idempotency,
            next_shipment: v3.next_shipment,
            shipments: v3.shipments,
            archived_sales: v3.archived_sales,
            catalog: Vec::new(),
        }
    }
}

/// Version 2 of the snapshot (before the cold tier), read when an older data directory opens.
#[derive(Deserialize)]
struct SnapshotV2 {
    shard: u16,
    shard_count: u16,
    last_seq: u64,
    log_digest: u64,
    next_order: u64,
    next_customer: u64,
    stock: Vec<(String, Stock)>,
    orders: Vec<SnapOrder>,
    customers: Vec<(u64, SnapCustomer)>,
    holds: Vec<SnapHold>,
    idempotency: Vec<(String, IdemEntry)>,
    next_shipment: u64,
    shipments: Vec<SnapShipment>,
}

impl From<SnapshotV2> for SnapshotV4 {
    fn from(v2: SnapshotV2) -> SnapshotV4 {
        SnapshotV4 {
            shard: v2.shard,
            shard_count: v2.shard_count,
            last_seq: v2.last_seq,
            log_digest: v2.log_digest,
            next_order: v2.next_order,
            next_customer: v2.next_customer,
            stock: v2.stock,
            orders: v2.orders,
            customers: v2.customers,
            holds: v2.holds,
            idempotency: v2.idempotency,
            next_shipment: v2.next_shipment,
            shipments: v2.shipments,
            archived_sales: Vec::new(),
            catalog: Vec::new(),
        }
    }
}

/// One order's hold in a snapshot: order id, then (SKU, quantity held, quantity shipped).
pub type SnapHold = (u64, Vec<(String, u32, u32)>);

/// Version 1 of the snapshot (before shipments), read when an older data directory opens.
#[derive(Deserialize)]
struct SnapshotV1 {
    shard: u16,
    shard_count: u16,
    last_seq: u64,
    log_digest: u64,
    next_order: u64,
    next_customer: u64,
    stock: Vec<(String, Stock)>,
    orders: Vec<SnapOrder>,
    customers: Vec<(u64, SnapCustomer)>,
    holds: Vec<(u64, Vec<(String, u32)>)>,
    idempotency: Vec<(String, IdemEntry)>,
}

impl From<SnapshotV1> for SnapshotV4 {
    fn from(v1: SnapshotV1) -> SnapshotV4 {
        SnapshotV4 {
            shard: v1.shard,
            shard_count: v1.shard_count,
            last_seq: v1.last_seq,
            log_digest: v1.log_digest,
            next_order: v1.next_order,
            next_customer: v1.next_customer,
            stock: v1.stock,
            orders: v1.orders,
            customers: v1.customers,
            holds: v1
                .holds
                .into_iter()
                .map(|(id, held)| (id, held.into_iter().map(|(s, q)| (s, q, 0)).collect()))
                .collect(),
            idempotency: v1.idempotency,
            next_shipment: 1,
            shipments: Vec::new(),
            archived_sales: Vec::new(),
            catalog: Vec::new(),
        }
    }
}

impl Snapshot {
    /// Version byte + postcard.
    pub fn encode_canonical(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![SNAPSHOT_FORMAT_VERSION]).expect("encoding to a Vec")
    }

    pub fn decode(value: &[u8]) -> Result<Snapshot, crate::event::DecodeError> {
        let (&version, rest) = value
            .split_first()
            .ok_or(crate::event::DecodeError::Empty)?;
        match version {
            SNAPSHOT_FORMAT_VERSION => Ok(postcard::from_bytes(rest)?),
            SNAPSHOT_FORMAT_V5 => Ok(postcard::from_bytes::<SnapshotV5>(rest)?.into()),
            SNAPSHOT_FORMAT_V4 => Ok(postcard::from_bytes::<SnapshotV4>(rest)?.into()),
            SNAPSHOT_FORMAT_V3 => {
                Ok(SnapshotV4::from(postcard::from_bytes::<SnapshotV3>(rest)?).into())
            }
            SNAPSHOT_FORMAT_V2 => {
                Ok(SnapshotV4::from(postcard::from_bytes::<SnapshotV2>(rest)?).into())
            }
            SNAPSHOT_FORMAT_V1 => {
                Ok(SnapshotV4::from(postcard::from_bytes::<SnapshotV1>(rest)?).into())
            }
            other => Err(crate::event::DecodeError::Version(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderCursor;
    use crate::event::LineRecord;

    fn received(sku: &str, delta: i64) -> Event {
        Event::StockAdjusted {
            sku: sku.into(),
            delta,
            reason: "r".into(),
            at_us: 0,
        }
    }

    fn placed(id: u64, sku: &str, qty: u32) -> Event {
        Event::OrderPlaced {
            order: OrderRecord {
                id: OrderId::new(0, id).0,
                customer: CustomerId::new(0, 1).0,
                lines: vec![LineRecord {
                    sku: sku.into(),
                    qty,
                    unit_price: 100,
                }],
                shipping_address: None,
                note: Some("n".into()),
                at_us: id as i64,
                actor: "key_1".into(),
            },
            idem: None,
        }
    }

    /// Random events on one shard: placements (one-shard and cross-shard, among a few
    /// customers, at times with many ties and out of order), confirmations, aborts,
    /// cancellations, shipments and deliveries.
    struct RandomOrders {
        rng: crate::sim::Rng,
        next: u64,
        next_shipment: u64,
        pending: Vec<u64>,
        confirmed: Vec<(u64, bool)>,
        shipped: Vec<u64>,
    }

    const LIST_CUSTOMERS: u64 = 6;

    impl RandomOrders {
        fn new(seed: u64) -> Self {
            RandomOrders {
                rng: crate::sim::Rng::new(seed),
                next: 1,
                next_shipment: 1,
                pending: Vec::new(),
                confirmed: Vec::new(),
                shipped: Vec::new(),
            }
        }

        fn record(&mut self) -> OrderRecord {
            let id = OrderId::new(0, self.next).0;
            self.next += 1;
            OrderRecord {
                id,
                // Customers of this shard and of another one.
                customer: CustomerId::new(
                    (self.rng.below(2)) as u16,
                    1 + self.rng.below(LIST_CUSTOMERS / 2),
                )
                .0,
                lines: vec![LineRecord {
                    sku: "A".into(),
                    qty: 2,
                    unit_price: 100,
                }],
                shipping_address: None,
                note: None,
                at_us: 1_000 + self.rng.below(40) as i64,
                actor: "key_1".into(),
            }
        }

        fn take(list: &mut Vec<u64>, rng: &mut crate::sim::Rng) -> Option<u64> {
            if list.is_empty() {
                return None;
            }
            let at = rng.below(list.len() as u64) as usize;
            Some(list.swap_remove(at))
        }

        fn event(&mut self) -> Event {
            loop {
                match self.rng.below(7) {
                    0 | 1 => {
                        let order = self.record();
                        self.confirmed.push((order.id, false));
                        return Event::OrderPlaced { order, idem: None };
                    }
                    2 => {
                        let order = self.record();
                        self.pending.push(order.id);
                        return Event::OrderPending { order, idem: None };
                    }
                    3 => {
                        if let Some(order) = Self::take(&mut self.pending, &mut self.rng) {
                            if self.rng.chance(500) {
                                self.confirmed.push((order, true));
                                return Event::OrderConfirmed {
                                    order,
                                    at_us: 2_000,
                                };
                            }
                            return Event::OrderAborted {
                                order,
                                short: Vec::new(),
                                idem_key: None,
                                at_us: 2_000,
                            };
                        }
                    }
                    4 => {
                        if let Some(at) = (!self.confirmed.is_empty())
                            .then(|| self.rng.below(self.confirmed.len() as u64) as usize)
                        {
                            let (order, _) = self.confirmed.swap_remove(at);
                            return Event::OrderCancelled {
                                order,
                                reason: None,
                                actor: "key_1".into(),
                                at_us: 3_000,
                            };
                        }
                    }
                    5 => {
                        if let Some(at) = (!self.confirmed.is_empty())
                            .then(|| self.rng.below(self.confirmed.len() as u64) as usize)
                        {
                            let (order, _) = self.confirmed.swap_remove(at);
                            let id = ShipmentId::new(0, self.next_shipment).0;
                            self.next_shipment += 1;
                            self.shipped.push(id);
                            // One unit of two (partially shipped) or both (shipped).
                            let units = 1 + self.rng.below(2) as u32;
                            return Event::ShipmentCreated {
                                id,
                                order,
                                carrier: "c".into(),
                                tracking: "t".into(),
                                lines: vec![("A".into(), units)],
                                actor: "key_1".into(),
                                at_us: 4_000,
                            };
                        }
                    }
                    _ => {
                        if let Some(id) = Self::take(&mut self.shipped, &mut self.rng) {
                            return Event::ShipmentUpdated {
                                id,
                                status: ShipmentStatus::Delivered,
                                note: None,
                                actor: "key_1".into(),
                                at_us: 5_000,
                            };
                        }
                    }
                }
            }
        }
    }

    const LIST_STATUSES: [Option<OrderStatus>; 7] = [
        None,
        Some(OrderStatus::Pending),
        Some(OrderStatus::Confirmed),
        Some(OrderStatus::PartiallyShipped),
        Some(OrderStatus::Shipped),
        Some(OrderStatus::Delivered),
        Some(OrderStatus::Cancelled),
    ];

    /// Every customer's listing, for every status filter, paged with random page sizes and
    /// followed cursor by cursor (plus cursors that name no order), is the same through the
    /// customer index as through the full scan; and the indexes hold exactly the orders.
    fn assert_index_lists_as_scan(data: &ShardData, rng: &mut crate::sim::Rng) {
        data.check_listing_indexes()
            .expect("indexes hold the orders");
        for shard in 0..2u16 {
            for counter in 1..=LIST_CUSTOMERS / 2 + 1 {
                let customer = CustomerId::new(shard, counter);
                for status in LIST_STATUSES {
                    let mut filter = OrderFilter {
                        customer_id: Some(customer),
                        status,
                        limit: 1 + rng.below(6) as usize,
                        after: None,
                    };
                    let mut seen = 0;
                    loop {
                        let page = data.list_orders(&filter);
                        assert_eq!(page, data.list_orders_by_scan(&filter), "{filter:?}");
                        assert!(page.iter().all(|o| o.customer_id == customer
                            && status.is_none_or(|s| s == o.status)
                            && o.status != OrderStatus::Pending));
                        seen += page.len();
                        let Some(last) = page.last() else { break };
                        filter.after = Some(OrderCursor {
                            created_at_us: last.created_at_us,
                            id: last.id,
                        });
                        filter.limit = 1 + rng.below(6) as usize;
                    }
                    let all = data
                        .orders
                        .values()
                        .filter(|o| o.customer == customer && o.status != OrderStatus::Pending)
                        .filter(|o| status.is_none_or(|s| s == o.status))
                        .count();
                    assert_eq!(seen, all, "the pages hold every order once");
                    // A cursor that names no order, and one before the first order.
                    for after in [
                        OrderCursor {
                            created_at_us: 1_000 + rng.below(45) as i64,
                            id: OrderId::new(0, rng.below(200)),
                        },
                        OrderCursor {
                            created_at_us: i64::MIN,
                            id: OrderId(0),
                        },
                    ] {
                        let filter = OrderFilter {
                            customer_id: Some(customer),
                            status,
                            limit: 1 + rng.below(6) as usize,
                            after: Some(after),
                        };
                        assert_eq!(
                            data.list_orders(&filter),
                            data.list_orders_by_scan(&filter),
                            "{filter:?}"
                        );
                    }
                }
            }
        }
    }

    /// Property, over fixed seeds: after any sequence of events, after a snapshot round trip
    /// with more events replayed on top, and after a full replay of the log, a customer's
    /// listing through `customer_index` is exactly the full scan's (items, order, cursors).
    /// Fails if any event that creates, changes or removes an order, or `from_snapshot`,
    /// forgets the index.
    #[test]
    fn the_customer_index_lists_as_the_full_scan_after_random_events_and_recovery() {
        for seed in 0..40u64 {
            let mut events = RandomOrders::new(seed);
            let mut checks = crate::sim::Rng::new(seed ^ 0x5eed);
            let mut log = vec![received("A", 1_000_000)];
            let mut data = ShardData::new(0, 2);
            data.apply(&log[0]);
            for step in 0..300 {
                let event = events.event();
                data.apply(&event);
                log.push(event);
                if step % 50 == 49 {
                    assert_index_lists_as_scan(&data, &mut checks);
                }
                if step == 150 {
                    // Recovery from a snapshot; later events replay on top of it.
                    let encoded = data.to_snapshot().encode_canonical();
                    data = ShardData::from_snapshot(Snapshot::decode(&encoded).unwrap());
                    assert_index_lists_as_scan(&data, &mut checks);
                }
            }
            assert!(
                data.orders
                    .values()
                    .any(|o| o.status == OrderStatus::Delivered)
                    && data
                        .orders
                        .values()
                        .any(|o| o.status == OrderStatus::Cancelled),
                "seed {seed}: the events reach every status"
            );
            // Recovery from the log alone.
            let mut replayed = ShardData::new(0, 2);
            for event in &log {
                replayed.apply(event);
            }
            assert_eq!(replayed.customer_index, data.customer_index);
            assert_index_lists_as_scan(&replayed, &mut checks);
        }
    }

    /// A cross-shard order of shard 0 (of 2) with a SKU of each shard, shipped, one return
    /// received (restocked here and on shard 1), refunded: the state a snapshot must carry.
    fn after_sales_state() -> (ShardData, String, String, Vec<Event>) {
        let here = (0..100)
            .map(|n| format!("H{n}"))
            .find(|sku| shard_of_sku(sku, 2) == 0)
            .unwrap();
        let there = (0..100)
            .map(|n| format!("T{n}"))
            .find(|sku| shard_of_sku(sku, 2) == 1)
            .unwrap();
        let order = OrderId::new(0, 1);
        let ret = ReturnId::new(0, 1);
        let events = vec![
            received(&here, 10),
            Event::OrderPending {
                order: OrderRecord {
                    id: order.0,
                    customer: CustomerId::new(0, 1).0,
                    lines: vec![
                        LineRecord {
                            sku: here.clone(),
                            qty: 2,
                            unit_price: 100,
                        },
                        LineRecord {
                            sku: there.clone(),
                            qty: 2,
                            unit_price: 50,
                        },
                    ],
                    shipping_address: None,
                    note: None,
                    at_us: 5,
                    actor: "key_1".into(),
                },
                idem: None,
            },
            Event::OrderConfirmed {
                order: order.0,
                at_us: 6,
            },
            Event::ShipmentCreated {
                id: ShipmentId::new(0, 1).0,
                order: order.0,
                carrier: "dhl".into(),
                tracking: "T".into(),
                lines: vec![(here.clone(), 2), (there.clone(), 2)],
                actor: "key_l".into(),
                at_us: 7,
            },
            Event::ReturnCreated {
                id: ret.0,
                order: order.0,
                lines: vec![(here.clone(), 1), (there.clone(), 2)],
                reason: "fit".into(),
                actor: "key_f".into(),
                at_us: 8,
            },
            Event::ReturnReceived {
                id: ret.0,
                lines: vec![
                    ReceivedLine {
                        sku: here.clone(),
                        qty: 1,
                        restock: true,
                        location: "default".into(),
                    },
                    ReceivedLine {
                        sku: there.clone(),
                        qty: 1,
                        restock: true,
                        location: "default".into(),
                    },
                    ReceivedLine {
                        sku: there.clone(),
                        qty: 1,
                        restock: false,
                        location: "default".into(),
                    },
                ],
                actor: "key_l".into(),
                at_us: 9,
            },
            Event::RefundIssued {
                id: RefundId::new(0, 1).0,
                order: order.0,
                amount: 150,
                reason: "goodwill".into(),
                actor: "key_f".into(),
                at_us: 10,
            },
            // A return of another shard's order restocked here.
            Event::Restocked {
                ret: ReturnId::new(1, 7).0,
                lines: vec![RestockLine {
                    sku: here.clone(),
                    qty: 3,
                    location: "default".into(),
                }],
            },
        ];
        let mut data = ShardData::new(0, 2);
        for event in &events {
            data.apply(event);
        }
        (data, here, there, events)
    }

    #[test]
    fn returns_restock_drive_the_order_and_survive_snapshots_and_replay() {
        let (mut data, here, there, events) = after_sales_state();
        let order = OrderId::new(0, 1);
        let ret = ReturnId::new(0, 1);
        // 10 received, shipped from the hold (not here: the order is cross-shard), 1 restocked
        // with the receipt, 3 by the other shard's return.
        assert_eq!(data.stock_view(&here).unwrap().on_hand, 14);
        let view = data.order_view(order).unwrap();
        assert_eq!(view.status, OrderStatus::PartiallyReturned);
        assert_eq!(
            view.lines
                .iter()
                .map(|l| l.returned_qty)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!((view.refunded, view.refunds.len()), (150, 1));
        assert_eq!(view.returns, [ret.to_string()]);
        assert_eq!(data.units_in_returns(order, &there), 2);
        // Shard 1 still has to restock: the order stays out of the cold tier's reach.
        assert_eq!(&*data.returns[&ret].restock_pending, &[1]);
        assert_eq!(data.ended_key(order), None);
        let sales = data.sales_summary(0, HOUR_US);
        assert_eq!((sales.returned_units, sales.refunds), (3, 150));
        assert_eq!(sales.net_revenue(), 300 - 150);

        // Snapshot and replay rebuild the same state, counters and index.
        let encoded = data.to_snapshot().encode_canonical();
        assert_eq!(encoded[0], SNAPSHOT_FORMAT_VERSION);
        let restored = ShardData::from_snapshot(Snapshot::decode(&encoded).unwrap());
        assert_eq!(restored.state_digest(), data.state_digest());
        assert_eq!(restored.order_view(order), data.order_view(order));
        assert_eq!(restored.return_view(ret), data.return_view(ret));
        assert_eq!(restored.sales_summary(0, HOUR_US), sales);
        assert_eq!(restored.restocked.len(), 1);
        restored.check_listing_indexes().unwrap();
        let mut replayed = ShardData::new(0, 2);
        for event in &events {
            replayed.apply(event);
        }
        assert_eq!(replayed.state_digest(), data.state_digest());

        // Confirmed: the order may end, and be archived with its returns and refunds.
        data.apply(&Event::RestockConfirmed {
            ret: ret.0,
            shard: 1,
        });
        assert_eq!(data.ended_key(order), Some((9 + 1, order)));
        data.check_listing_indexes().unwrap();
        let cold = data.cold_record(order).unwrap();
        let decoded = crate::cold::ColdOrder::decode(&cold.encode()).unwrap();
        assert_eq!(decoded, cold);
        assert_eq!(decoded.returns[0], data.return_view(ret).unwrap());
        data.apply(&Event::OrdersArchived { ids: vec![order.0] });
        assert!(data.returns.is_empty() && data.refunds.is_empty());
        // Archived sales keep their returned units and refunds, also through a snapshot.
        assert_eq!(data.sales_summary(0, HOUR_US).refunds, 150);
        let restored = ShardData::from_snapshot(
            Snapshot::decode(&data.to_snapshot().encode_canonical()).unwrap(),
        );
        assert_eq!(
            restored.sales_summary(0, HOUR_US),
            data.sales_summary(0, HOUR_US)
        );
        assert_eq!(restored.sales_summary(0, HOUR_US).returned_units, 3);
    }

    #[test]
    #[should_panic(expected = "double restock")]
    fn a_return_restocks_a_shard_once() {
        let (mut data, here, _, _) = after_sales_state();
        data.apply(&Event::Restocked {
            ret: ReturnId::new(1, 7).0,
            lines: vec![RestockLine {
                sku: here,
                qty: 3,
                location: "default".into(),
            }],
        });
    }

    #[test]
    fn snapshot_round_trip_keeps_state_and_digest() {
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 10));
        data.apply(&placed(1, "A", 3));
        data.apply(&placed(2, "A", 4));
        data.apply(&Event::OrderCancelled {
            order: OrderId::new(0, 1).0,
            reason: None,
            actor: "key_1".into(),
            at_us: 9,
        });
        assert_eq!(data.available("A"), 6);
        let encoded = data.to_snapshot().encode_canonical();
        let restored = ShardData::from_snapshot(Snapshot::decode(&encoded).unwrap());
        assert_eq!(restored.state_digest(), data.state_digest());
        assert_eq!(restored.stock_view("A"), data.stock_view("A"));
        assert_eq!(restored.next_order, 3);
        let mut other = ShardData::new(0, 1);
        other.apply(&received("A", 11));
        assert_ne!(other.state_digest(), data.state_digest());
    }

    fn customer(counter: u64) -> Event {
        Event::CustomerCreated {
            id: CustomerId::new(0, counter).0,
            name: format!("sealed-name-{counter}"),
            email: format!("sealed-email-{counter}"),
            phone: Some("sealed-phone".into()),
            address: None,
            at_us: counter as i64,
        }
    }

    /// `PATCH` replaces only the fields it sets; an erasure leaves the id and creation time
    /// alone, is idempotent, and survives a snapshot (the empty email marks it, format 4
    /// unchanged) and a replay, with the same digest.
    #[test]
    fn customer_updates_and_erasures_apply_and_survive_snapshots_and_replay() {
        let id = CustomerId::new(0, 1);
        let events = vec![
            customer(1),
            customer(2),
            Event::CustomerUpdated {
                id: id.0,
                name: None,
                email: Some("sealed-new-email".into()),
                phone: None,
                address: Some("sealed-address".into()),
                actor: "key_1".into(),
                at_us: 5,
            },
            placed(1, "A", 1),
        ];
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 10));
        for event in &events {
            data.apply(event);
        }
        let view = data.customer_view(id).unwrap();
        assert_eq!(view.name, "sealed-name-1");
        assert_eq!(view.email, "sealed-new-email");
        assert_eq!(view.phone.as_deref(), Some("sealed-phone"));
        assert_eq!(view.address.as_deref(), Some("sealed-address"));
        assert!(!view.erased);
        let erase = Event::CustomerErased {
            id: id.0,
            actor: "key_1".into(),
            at_us: 6,
        };
        data.apply(&erase);
        let erased = data.customer_view(id).unwrap();
        assert!(erased.erased);
        assert_eq!(
            (
                erased.name.as_str(),
                erased.email.as_str(),
                erased.phone.clone(),
                erased.address.clone()
            ),
            ("", "", None, None)
        );
        assert_eq!(erased.created_at_us, 1);
        data.apply(&erase);
        assert_eq!(
            data.customer_view(id).unwrap(),
            erased,
            "a second erasure changes nothing"
        );
        // The other customer and the order are untouched.
        assert!(!data.customer_view(CustomerId::new(0, 2)).unwrap().erased);
        assert_eq!(data.order_view(OrderId::new(0, 1)).unwrap().total, 100);
        let encoded = data.to_snapshot().encode_canonical();
        let restored = ShardData::from_snapshot(Snapshot::decode(&encoded).unwrap());
        assert_eq!(restored.state_digest(), data.state_digest());
        assert!(restored.customer_view(id).unwrap().erased);
        let mut replayed = ShardData::new(0, 1);
        replayed.apply(&received("A", 10));
        for event in events.iter().chain([&erase, &erase]) {
            replayed.apply(event);
        }
        assert_eq!(replayed.state_digest(), data.state_digest());
    }

    #[test]
    #[should_panic(expected = "update of an erased customer")]
    fn an_erased_customer_is_never_updated() {
        let mut data = ShardData::new(0, 1);
        data.apply(&customer(1));
        data.apply(&Event::CustomerErased {
            id: CustomerId::new(0, 1).0,
            actor: "k".into(),
            at_us: 2,
        });
        data.apply(&Event::CustomerUpdated {
            id: CustomerId::new(0, 1).0,
            name: Some("x".into()),
            email: None,
            phone: None,
            address: None,
            actor: "k".into(),
            at_us: 3,
        });
    }

    fn priced(sku: &str, price: u64, active: bool, at_us: i64) -> Event {
        Event::CatalogPriceSet {
            sku: sku.into(),
            price,
            active,
            actor: "key_m".into(),
            at_us,
        }
    }

    #[test]
    fn catalog_prices_apply_page_and_survive_snapshots_and_replay() {
        let events = vec![
            priced("B", 250, true, 1),
            priced("A", 100, true, 2),
            priced("C", 0, false, 3),
            // A later price replaces the earlier one.
            priced("A", 120, false, 4),
            received("A", 5),
        ];
        let mut data = ShardData::new(0, 1);
        for event in &events {
            data.apply(event);
        }
        let a = data.catalog_view("A").expect("A priced");
        assert_eq!((a.price, a.active, a.updated_at_us), (120, false, 4));
        assert!(data.catalog_view("D").is_none());
        let skus = |page: Vec<CatalogView>| page.into_iter().map(|e| e.sku).collect::<Vec<_>>();
        assert_eq!(skus(data.catalog_page(None, 10)), ["A", "B", "C"]);
        assert_eq!(skus(data.catalog_page(None, 2)), ["A", "B"]);
        assert_eq!(skus(data.catalog_page(Some("A"), 10)), ["B", "C"]);
        // A cursor need not be a priced SKU.
        assert_eq!(skus(data.catalog_page(Some("BB"), 10)), ["C"]);
        assert!(data.catalog_page(Some("C"), 10).is_empty());
        let prices = data.catalog_prices(&["C".into(), "X".into(), "B".into()]);
        assert_eq!(prices[0].as_ref().map(|e| e.price), Some(0));
        assert!(prices[1].is_none());
        assert_eq!(
            prices[2].as_ref().map(|e| (e.price, e.active)),
            Some((250, true))
        );

        // Snapshot round trip: the same catalog, the same digest.
        let encoded = data.to_snapshot().encode_canonical();
        assert_eq!(encoded[0], SNAPSHOT_FORMAT_VERSION);
        let restored = ShardData::from_snapshot(Snapshot::decode(&encoded).unwrap());
        assert_eq!(restored.state_digest(), data.state_digest());
        assert_eq!(restored.catalog_page(None, 10), data.catalog_page(None, 10));

        // Replay of the same events rebuilds the same state.
        let mut replayed = ShardData::new(0, 1);
        for event in &events {
            replayed.apply(event);
        }
        assert_eq!(replayed.state_digest(), data.state_digest());

        // A price is part of the state: another price, another digest.
        let mut other = ShardData::new(0, 1);
        for event in &events[..events.len() - 1] {
            other.apply(event);
        }
        other.apply(&priced("Z", 1, true, 9));
        other.apply(&received("A", 5));
        assert_ne!(other.state_digest(), data.state_digest());
    }

    #[test]
    fn a_version_3_snapshot_reads_with_an_empty_catalog() {
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 10));
        data.apply(&placed(1, "A", 3));
        let snapshot = data.to_snapshot();
        assert!(snapshot.catalog.is_empty());
        // Version 3 is version 4 without the catalog at the end.
        #[derive(Serialize)]
        struct V3<'a> {
            shard: u16,
            shard_count: u16,
            last_seq: u64,
            log_digest: u64,
            next_order: u64,
            next_customer: u64,
            stock: &'a Vec<(String, Stock)>,
            orders: &'a Vec<SnapOrder>,
            customers: &'a Vec<(u64, SnapCustomer)>,
            holds: &'a Vec<SnapHold>,
            idempotency: &'a Vec<(String, IdemEntry)>,
            next_shipment: u64,
            shipments: &'a Vec<SnapShipment>,
            archived_sales: &'a Vec<SnapSales>,
        }
        let v3 = V3 {
            shard: snapshot.shard,
            shard_count: snapshot.shard_count,
            last_seq: snapshot.last_seq,
            log_digest: snapshot.log_digest,
            next_order: snapshot.next_order,
            next_customer: snapshot.next_customer,
            stock: &snapshot.stock,
            orders: &snapshot.orders,
            customers: &snapshot.customers,
            holds: &snapshot.holds,
            idempotency: &snapshot.idempotency,
            next_shipment: snapshot.next_shipment,
            shipments: &snapshot.shipments,
            archived_sales: &snapshot.archived_sales,
        };
        let encoded = postcard::to_extend(&v3, vec![SNAPSHOT_FORMAT_V3]).unwrap();
        let decoded = Snapshot::decode(&encoded).unwrap();
        assert_eq!(decoded, snapshot);
        let restored = ShardData::from_snapshot(decoded);
        assert!(restored.catalog.is_empty());
        assert_eq!(restored.state_digest(), data.state_digest());
    }

    fn location(id: &str, priority: u32) -> Event {
        Event::LocationSet {
            id: id.into(),
            name: id.to_uppercase(),
            priority,
            actor: "key_1".into(),
            at_us: 1,
        }
    }

    fn received_at(sku: &str, location: &str, delta: i64) -> Event {
        Event::StockAdjustedAt {
            sku: sku.into(),
            location: location.into(),
            delta,
            reason: "r".into(),
            actor: "key_1".into(),
            at_us: 1,
        }
    }

    /// (on_hand, reserved) of `sku` at each location, `default` first.
    fn buckets(data: &ShardData, sku: &str) -> Vec<(String, u64, u64)> {
        data.location_stock_views(sku)
            .into_iter()
            .map(|l| (l.location, l.on_hand, l.reserved))
            .collect()
    }

    #[test]
    fn placement_allocates_by_priority_ships_in_order_and_replays_and_snapshots_alike() {
        let events = vec![
            location("east", 1),
            location("west", 2),
            received_at("A", "east", 3),
            received_at("A", "west", 5),
            received("A", 2),
            // Default first by priority 0: 2 there, then east 3, then 1 of west.
            placed(1, "A", 6),
            Event::ShipmentCreated {
                id: ShipmentId::new(0, 1).0,
                order: OrderId::new(0, 1).0,
                carrier: "c".into(),
                tracking: "t".into(),
                lines: vec![("A".into(), 4)],
                actor: "key_1".into(),
                at_us: 5,
            },
            Event::StockTransferred {
                sku: "A".into(),
                from: "west".into(),
                to: "east".into(),
                qty: 4,
                reason: "r".into(),
                actor: "key_1".into(),
                at_us: 6,
            },
        ];
        let mut data = ShardData::new(0, 1);
        for event in &events[..6] {
            data.apply(event);
        }
        let order = OrderId::new(0, 1);
        let view = data.order_view(order).unwrap();
        assert_eq!(
            view.lines[0].allocations,
            vec![
                ("default".to_string(), 2),
                ("east".to_string(), 3),
                ("west".to_string(), 1)
            ]
        );
        assert_eq!(
            buckets(&data, "A"),
            vec![
                ("default".into(), 2, 2),
                ("east".into(), 3, 3),
                ("west".into(), 5, 1)
            ]
        );
        // Exactly the available units are allocatable: 4 more (all at west) and no more.
        assert_eq!(data.available("A"), 4);
        // Shipping 4 takes default's 2 and 2 of east's, in allocation order.
        data.apply(&events[6]);
        assert_eq!(
            buckets(&data, "A"),
            vec![
                ("default".into(), 0, 0),
                ("east".into(), 1, 1),
                ("west".into(), 5, 1)
            ]
        );
        // A transfer moves available units and keeps the totals.
        let before = data.stock.get("A").copied();
        data.apply(&events[7]);
        assert_eq!(data.stock.get("A").copied(), before);
        assert_eq!(
            buckets(&data, "A"),
            vec![
                ("default".into(), 0, 0),
                ("east".into(), 5, 1),
                ("west".into(), 1, 1)
            ]
        );
        // Replay gives the same state, and a snapshot keeps it.
        let mut replayed = ShardData::new(0, 1);
        for event in &events {
            replayed.apply(event);
        }
        assert_eq!(replayed.state_digest(), data.state_digest());
        let encoded = data.to_snapshot().encode_canonical();
        assert_eq!(encoded[0], SNAPSHOT_FORMAT_VERSION);
        let restored = ShardData::from_snapshot(Snapshot::decode(&encoded).unwrap());
        assert_eq!(restored.state_digest(), data.state_digest());
        assert_eq!(buckets(&restored, "A"), buckets(&data, "A"));
        assert_eq!(restored.location_views(), data.location_views());
    }

    #[test]
    fn a_cross_shard_hold_allocates_and_releases_per_location() {
        let mut data = ShardData::new(0, 1);
        data.apply(&location("east", 1));
        data.apply(&received_at("A", "east", 2));
        data.apply(&received("A", 5));
        data.apply(&location("default", 9));
        data.apply(&Event::Reserved {
            order: 77,
            lines: vec![("A".into(), 4)],
        });
        let held: Vec<(String, String, u32)> = data.allocated[&OrderId(77)]
            .iter()
            .map(|a| (a.sku.to_string(), a.location.to_string(), a.qty))
            .collect();
        assert_eq!(
            held,
            vec![
                ("A".to_string(), "east".to_string(), 2),
                ("A".to_string(), "default".to_string(), 2)
            ]
        );
        data.apply(&Event::HoldShipped {
            order: 77,
            shipped: vec![("A".into(), 3)],
        });
        assert_eq!(
            buckets(&data, "A"),
            vec![("default".into(), 4, 1), ("east".into(), 0, 0)]
        );
        data.apply(&Event::Released { order: 77 });
        assert_eq!(
            buckets(&data, "A"),
            vec![("default".into(), 4, 0), ("east".into(), 0, 0)]
        );
        assert!(data.allocated.is_empty());
    }

    #[test]
    fn a_cancel_releases_each_location_it_reserved() {
        let mut data = ShardData::new(0, 1);
        data.apply(&location("east", 1));
        data.apply(&received_at("A", "east", 1));
        data.apply(&received("A", 3));
        data.apply(&location("default", 5));
        data.apply(&placed(1, "A", 3));
        assert_eq!(
            buckets(&data, "A"),
            vec![("default".into(), 3, 2), ("east".into(), 1, 1)]
        );
        data.apply(&Event::OrderCancelled {
            order: OrderId::new(0, 1).0,
            reason: None,
            actor: "key_1".into(),
            at_us: 7,
        });
        assert_eq!(
            buckets(&data, "A"),
            vec![("default".into(), 3, 0), ("east".into(), 1, 0)]
        );
    }

    /// A data directory written before locations: its version 5 snapshot reads with every
    /// unit at `default`, and the state is the one it held.
    #[test]
    fn a_version_5_snapshot_reads_with_all_stock_at_default() {
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 10));
        data.apply(&placed(1, "A", 3));
        let snapshot = data.to_snapshot();
        let v5 = SnapshotV5 {
            shard: snapshot.shard,
            shard_count: snapshot.shard_count,
            last_seq: snapshot.last_seq,
            log_digest: snapshot.log_digest,
            next_order: snapshot.next_order,
            next_customer: snapshot.next_customer,
            stock: snapshot.stock.clone(),
            orders: snapshot.orders.clone(),
            customers: snapshot.customers.clone(),
            holds: snapshot.holds.clone(),
            idempotency: snapshot.idempotency.clone(),
            next_shipment: snapshot.next_shipment,
            shipments: snapshot.shipments.clone(),
            archived_sales: snapshot.archived_sales.clone(),
            catalog: snapshot.catalog.clone(),
            next_return: snapshot.next_return,
            next_refund: snapshot.next_refund,
            returns: snapshot.returns.clone(),
            refunds: snapshot.refunds.clone(),
            restocked: snapshot.restocked.clone(),
            archived_after_sales: snapshot.archived_after_sales.clone(),
        };
        let encoded = postcard::to_extend(&v5, vec![SNAPSHOT_FORMAT_V5]).unwrap();
        let decoded = Snapshot::decode(&encoded).unwrap();
        assert_eq!(decoded, snapshot);
        let restored = ShardData::from_snapshot(decoded);
        assert_eq!(restored.state_digest(), data.state_digest());
        assert_eq!(buckets(&restored, "A"), vec![("default".into(), 10, 3)]);
        let view = restored.order_view(OrderId::new(0, 1)).unwrap();
        assert_eq!(view.lines[0].allocations, vec![("default".to_string(), 3)]);
    }

    #[test]
    #[should_panic(expected = "catalog price above UNIT_PRICE_MAX")]
    fn apply_refuses_a_price_above_the_bound() {
        let mut data = ShardData::new(0, 1);
        data.apply(&priced("A", crate::domain::UNIT_PRICE_MAX + 1, true, 1));
    }

    #[test]
    fn orders_stay_small_in_memory() {
        // Memory per live order is a goal (docs/PERFORMANCE.md): the order itself is one
        // allocation of at most 112 bytes; history and extras allocate only when used.
        assert!(std::mem::size_of::<Order>() <= 112);
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 10));
        data.apply(&placed(1, "A", 1));
        let order = &data.orders[&OrderId::new(0, 1)];
        assert!(order.later.capacity() == 0);
        assert_eq!(order.note(), Some("n"));
        assert_eq!(order.history().count(), 1);
    }

    /// Moving ended orders to the cold tier: they leave the maps and every index, their
    /// sales stay counted (also through a snapshot, which then holds only hot orders), a
    /// partial hour's walk plus the cold records adds up to the same, and a replay of the same
    /// events reaches the same state.
    #[test]
    fn archived_orders_leave_memory_and_their_sales_stay_counted() {
        let mut events = vec![received("A", 1_000_000), received("B", 1_000_000)];
        let base = 1_700_000_000_000_000 / HOUR_US * HOUR_US;
        for n in 1..=60u64 {
            let at = base + (n as i64) * HOUR_US / 20;
            events.push(Event::OrderPlaced {
                order: OrderRecord {
                    id: OrderId::new(0, n).0,
                    customer: CustomerId::new(0, 1 + n % 3).0,
                    lines: vec![LineRecord {
                        sku: if n % 2 == 0 { "A" } else { "B" }.into(),
                        qty: 1 + (n % 4) as u32,
                        unit_price: 10 * n,
                    }],
                    shipping_address: None,
                    note: None,
                    at_us: at,
                    actor: "k".into(),
                },
                idem: None,
            });
            if n % 3 == 0 {
                events.push(Event::OrderCancelled {
                    order: OrderId::new(0, n).0,
                    reason: None,
                    actor: "k".into(),
                    at_us: at + 1,
                });
            }
        }
        let mut data = ShardData::new(0, 1);
        for event in &events {
            data.apply(event);
        }
        let hours = (base, base + 4 * HOUR_US);
        let partial = (base + HOUR_US / 3, base + 2 * HOUR_US + HOUR_US / 7);
        let whole_before = data.sales_summary(hours.0, hours.1);
        let partial_before = data.sales_summary(partial.0, partial.1);
        // Half of the cancelled orders end before the cutoff.
        let cutoff = base + 2 * HOUR_US;
        let ids = data.cold_candidates(cutoff, 1000);
        assert_eq!(ids.len(), 13, "{ids:?}");
        let records: Vec<crate::cold::ColdOrder> = ids
            .iter()
            .map(|id| data.cold_record(*id).unwrap())
            .collect();
        let archive = Event::OrdersArchived {
            ids: ids.iter().map(|id| id.0).collect(),
        };
        data.apply(&archive);
        events.push(archive);
        assert_eq!(data.orders.len(), 47);
        assert!(ids.iter().all(|id| data.order_view(*id).is_none()));
        data.check_listing_indexes().unwrap();
        assert_eq!(data.sales_summary(hours.0, hours.1), whole_before);
        // The partial hours walk hot orders only; the cold records make up the rest.
        let mut partial_after = data.sales_summary(partial.0, partial.1);
        for record in &records {
            let created = record.order.created_at_us;
            if crate::state::ShardData::walked_ranges(partial.0, partial.1)
                .iter()
                .any(|(a, b)| (*a..*b).contains(&created))
            {
                count_walked(&mut partial_after, &record.order);
            }
        }
        assert_eq!(partial_after, partial_before);
        // Through a snapshot (format 3): only hot orders, the same counters.
        let restored = ShardData::from_snapshot(
            Snapshot::decode(&data.to_snapshot().encode_canonical()).unwrap(),
        );
        assert_eq!(restored.orders.len(), 47);
        assert_eq!(restored.sales_summary(hours.0, hours.1), whole_before);
        assert_eq!(restored.state_digest(), data.state_digest());
        restored.check_listing_indexes().unwrap();
        // A replay of the log reaches the same state.
        let mut replayed = ShardData::new(0, 1);
        for event in &events {
            replayed.apply(event);
        }
        assert_eq!(replayed.state_digest(), data.state_digest());
        assert_eq!(replayed.ended, data.ended);
        // A record round-trips through its encoding.
        let decoded = crate::cold::ColdOrder::decode(&records[0].encode()).unwrap();
        assert_eq!(decoded, records[0]);
    }

    /// The sales counters answer exactly what a walk over every order would, for ranges
    /// that cut hours anywhere, also after a snapshot round trip.
    #[test]
    fn sales_summary_is_exact_for_any_range() {
        let mut data = ShardData::new(0, 1);
        for sku in ["A", "B", "C"] {
            data.apply(&received(sku, 1_000_000));
        }
        let base = 1_700_000_000_000_000 / HOUR_US * HOUR_US;
        let mut seed: u64 = 7;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut times = Vec::new();
        for n in 1..=400u64 {
            let at = base + (next() % (6 * HOUR_US as u64)) as i64;
            let sku = ["A", "B", "C"][(next() % 3) as usize];
            let order = OrderRecord {
                id: OrderId::new(0, n).0,
                customer: CustomerId::new(0, 1).0,
                lines: vec![LineRecord {
                    sku: sku.into(),
                    qty: 1 + (next() % 4) as u32,
                    unit_price: 1 + next() % 1000,
                }],
                shipping_address: None,
                note: None,
                at_us: at,
                actor: "k".into(),
            };
            data.apply(&Event::OrderPlaced { order, idem: None });
            if next() % 5 == 0 {
                data.apply(&Event::OrderCancelled {
                    order: OrderId::new(0, n).0,
                    reason: None,
                    actor: "k".into(),
                    at_us: at + 1,
                });
            }
            times.push(at);
        }
        let brute = |data: &ShardData, from: i64, to: i64| {
            let mut s = SalesSummary::default();
            for o in data.orders.values() {
                if o.created_us < from || o.created_us >= to {
                    continue;
                }
                if o.status == OrderStatus::Cancelled {
                    s.cancelled += 1;
                    continue;
                }
                s.orders += 1;
                let hour = o.created_us.div_euclid(HOUR_US) * HOUR_US;
                for l in o.lines.iter() {
                    let revenue = l.qty as u64 * l.unit_price;
                    s.units += l.qty as u64;
                    s.revenue += revenue;
                    let e = s.skus.entry(l.sku.to_string()).or_default();
                    e.0 += l.qty as u64;
                    e.1 += revenue;
                    s.by_hour.entry(hour).or_default().1 += revenue;
                }
                s.by_hour.entry(hour).or_default().0 += 1;
            }
            s
        };
        let restored = ShardData::from_snapshot(data.to_snapshot());
        let mut ranges = vec![
            (0, i64::MAX),
            (base, base + HOUR_US),
            (base + 1, base + 5 * HOUR_US),
        ];
        for _ in 0..200 {
            let a = base - HOUR_US + (next() % (8 * HOUR_US as u64)) as i64;
            let b = base - HOUR_US + (next() % (8 * HOUR_US as u64)) as i64;
            ranges.push((a.min(b), a.max(b)));
            let t = times[(next() % times.len() as u64) as usize];
            ranges.push((t, t + HOUR_US * (next() % 3) as i64 + 1));
        }
        for (from, to) in ranges {
            let expected = brute(&data, from, to);
            assert_eq!(data.sales_summary(from, to), expected, "[{from}, {to})");
            assert_eq!(
                restored.sales_summary(from, to),
                expected,
                "restored [{from}, {to})"
            );
        }
        assert_eq!(restored.sales, data.sales);
    }

    /// Revenue past `u64::MAX` (orders logged before the bounds of `add_line_amount`, or
    /// enough orders within them) saturates in a summary instead of wrapping to a small sum,
    /// and the hour's `u128` counters stay exact, so a cancellation takes back exactly its
    /// order.
    #[test]
    fn sales_summary_near_u64_max_does_not_wrap() {
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 10));
        let base = 1_700_000_000_000_000 / HOUR_US * HOUR_US;
        let half = u64::MAX / 2 + 1;
        for n in 1..=2 {
            let order = OrderRecord {
                id: OrderId::new(0, n).0,
                customer: CustomerId::new(0, 1).0,
                lines: vec![LineRecord {
                    sku: "A".into(),
                    qty: 1,
                    unit_price: half,
                }],
                shipping_address: None,
                note: None,
                at_us: base + n as i64,
                actor: "k".into(),
            };
            data.apply(&Event::OrderPlaced { order, idem: None });
        }
        // The whole hour from the counters, and a part of it by walking the orders.
        for (from, to) in [(base, base + HOUR_US), (base + 1, base + 3)] {
            let summary = data.sales_summary(from, to);
            assert_eq!(summary.orders, 2);
            assert_eq!(summary.units, 2);
            assert_eq!(summary.revenue, u64::MAX, "[{from}, {to})");
            assert_eq!(summary.skus["A"], (2, u64::MAX));
            assert_eq!(summary.by_hour[&base], (2, u64::MAX));
        }
        let mut merged = data.sales_summary(base, base + HOUR_US);
        merged.merge(data.sales_summary(base, base + HOUR_US));
        assert_eq!(merged.revenue, u64::MAX, "merging shards saturates too");
        assert_eq!(merged.skus["A"], (4, u64::MAX));
        data.apply(&Event::OrderCancelled {
            order: OrderId::new(0, 1).0,
            reason: None,
            actor: "k".into(),
            at_us: base + 5,
        });
        let summary = data.sales_summary(base, base + HOUR_US);
        assert_eq!((summary.orders, summary.cancelled), (1, 1));
        assert_eq!(summary.revenue, half);
        assert_eq!(data.sales[&base].revenue, u128::from(half));
    }

    /// An order's total that does not fit in 64 bits (only one logged before the bounds could)
    /// reads as `u64::MAX`, not as the wrapped remainder.
    #[test]
    fn order_total_saturates() {
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", i64::from(u32::MAX)));
        data.apply(&received("B", i64::from(u32::MAX)));
        let order = OrderRecord {
            id: OrderId::new(0, 1).0,
            customer: CustomerId::new(0, 1).0,
            lines: ["A", "B"]
                .into_iter()
                .map(|sku| LineRecord {
                    sku: sku.into(),
                    qty: u32::MAX,
                    unit_price: u64::MAX,
                })
                .collect(),
            shipping_address: None,
            note: None,
            at_us: 1,
            actor: "k".into(),
        };
        data.apply(&Event::OrderPlaced { order, idem: None });
        let order = &data.orders[&OrderId::new(0, 1)];
        assert_eq!(order_view(order).total, u64::MAX);
        assert_eq!(
            data.sales_summary(0, i64::MAX).units,
            2 * u64::from(u32::MAX)
        );
    }

    #[test]
    #[should_panic(expected = "over-reservation")]
    fn apply_refuses_over_reservation() {
        let mut data = ShardData::new(0, 1);
        data.apply(&received("A", 1));
        data.apply(&placed(1, "A", 2));
    }
}

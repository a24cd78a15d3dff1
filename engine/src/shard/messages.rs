//! The messages a shard takes: client commands with their reply channels, and the protocol and
//! control messages between shards, the supervisor and the log writer.

use super::*;

/// The reply channel of one client command.
pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// Client commands a shard serves.
pub enum ClientCmd {
    AdjustStock {
        sku: String,
        /// Where the units are received or written off (`DEFAULT_LOCATION` without one).
        location: String,
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
    /// Moves available units of a SKU (this shard owns it) from one location to another.
    TransferStock {
        sku: String,
        from: String,
        to: String,
        qty: u64,
        reason: String,
        /// The API key id that asks (the audit entry's actor).
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<StockView>,
    },
    /// Defines or redefines a stock location. Every shard is sent it and logs it; the one
    /// with `audit` writes the audit entry. Refused past `locations_max` locations.
    SetLocation {
        id: String,
        name: String,
        priority: u32,
        locations_max: usize,
        actor: String,
        audit: bool,
        reply: Reply<(LocationView, bool)>,
    },
    /// Every location this shard knows, by id.
    ListLocations { reply: Reply<Vec<LocationView>> },
    /// Sets a SKU's catalog price (this shard owns the SKU).
    SetPrice {
        sku: String,
        price: u64,
        active: bool,
        /// The API key id that asks (the audit entry's actor).
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<CatalogView>,
    },
    /// A SKU's catalog price.
    GetPrice {
        sku: String,
        reply: Reply<CatalogView>,
    },
    /// This shard's catalog entries after `after`, in SKU order, at most `limit`.
    CatalogPage {
        after: Option<String>,
        limit: usize,
        reply: Reply<Vec<CatalogView>>,
    },
    /// The catalog entries of these SKUs (all this shard's), in order: one message per shard
    /// prices a placement.
    CatalogPrices {
        skus: Vec<String>,
        reply: Reply<Vec<Option<CatalogView>>>,
    },
    /// Reserves the next customer id of this shard (no event: an id reserved and never used
    /// is skipped), so the gateway can make the customer's data key before sealing under it.
    ReserveCustomerId { reply: Reply<CustomerId> },
    CreateCustomer {
        /// An id this shard reserved (`ReserveCustomerId`); `None`: the next one.
        id: Option<CustomerId>,
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
    /// Replaces the customer's fields that `update` sets (sealed); an erased customer is
    /// `invalid_transition`.
    UpdateCustomer {
        id: CustomerId,
        update: CustomerUpdate,
        /// The API key id that asks (the audit entry's actor).
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<CustomerView>,
    },
    /// Erases the customer's personal data (idempotent: an erased customer answers again).
    EraseCustomer {
        id: CustomerId,
        /// The API key id that asks (the audit entry's actor).
        actor: String,
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
    /// Opens a return of shipped units (on the order's shard).
    CreateReturn {
        ret: NewReturn,
        idempotency: Option<Idempotency>,
        reply: Reply<ReturnView>,
    },
    /// Receives a return's units, restocking those marked so.
    ReceiveReturn {
        id: ReturnId,
        lines: Vec<ReceiveLine>,
        actor: String,
        idempotency: Option<Idempotency>,
        reply: Reply<ReturnView>,
    },
    GetReturn {
        id: ReturnId,
        reply: Reply<ReturnView>,
    },
    /// Refunds money on an order.
    Refund {
        refund: NewRefund,
        idempotency: Option<Idempotency>,
        reply: Reply<RefundView>,
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
            | ClientCmd::TransferStock { .. }
            | ClientCmd::SetLocation { .. }
            | ClientCmd::SetPrice { .. }
            | ClientCmd::CreateCustomer { .. }
            | ClientCmd::UpdateCustomer { .. }
            | ClientCmd::EraseCustomer { .. }
            | ClientCmd::Place { .. }
            | ClientCmd::PlaceBatch { .. }
            | ClientCmd::Cancel { .. }
            | ClientCmd::Ship { .. }
            | ClientCmd::ShipmentEvent { .. }
            | ClientCmd::CreateReturn { .. }
            | ClientCmd::ReceiveReturn { .. }
            | ClientCmd::Refund { .. }
            | ClientCmd::Reseal { .. }
            | ClientCmd::Snapshot { .. } => true,
            ClientCmd::GetStock { .. }
            | ClientCmd::ListLocations { .. }
            | ClientCmd::GetPrice { .. }
            | ClientCmd::CatalogPage { .. }
            | ClientCmd::CatalogPrices { .. }
            | ClientCmd::GetCustomer { .. }
            | ClientCmd::ReserveCustomerId { .. }
            | ClientCmd::CustomersExist { .. }
            | ClientCmd::GetOrder { .. }
            | ClientCmd::ListOrders { .. }
            | ClientCmd::GetShipment { .. }
            | ClientCmd::GetReturn { .. }
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
        items: Vec<HoldRequest>,
    },
    /// To the order shard: per order, whether its part is held or which SKUs are short.
    ReserveResults {
        shard: u16,
        items: Vec<HoldAnswer>,
    },
    /// Give back whatever is held for these orders (idempotent). Sent by an order shard
    /// after an abort or a cancel is durable, and in answer to a `HoldCheck`.
    Release {
        orders: Vec<OrderId>,
    },
    /// Move shipped units out of holds: per order, the cumulative shipped quantity of each
    /// of its SKUs on the receiving shard (idempotent).
    Ship {
        items: Vec<ShippedPart>,
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
    /// From an order's shard once a receipt is durable (and again every `pending_retry_ms`
    /// until confirmed): put these returns' units of the receiver's SKUs back to `on_hand`,
    /// once per return.
    Restock {
        items: Vec<RestockPart>,
    },
    /// To the order's shard, once the restock is durable: these returns' units of `shard`'s
    /// SKUs are back in stock.
    Restocked {
        shard: u16,
        returns: Vec<ReturnId>,
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

/// Maps a stored personal-data value of a customer (for a shipping address: the order's
/// customer) to its replacement (`None`: keep it).
pub type ResealFn = Arc<dyn Fn(PersonalField, CustomerId, &str) -> Option<String> + Send + Sync>;

/// One order's part on one stock shard: the units of each SKU to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    pub order: OrderId,
    pub lines: Vec<(String, u32)>,
}

/// One stock shard's answer for one order's part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldAnswer {
    pub order: OrderId,
    pub outcome: HoldOutcome,
}

/// Whether a stock shard holds an order's part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Held, at these locations: (SKU, location, units) in the order they ship; empty when
    /// all at `default`.
    Held(Vec<(String, String, u32)>),
    /// Not held: these SKUs have too few units available.
    Short(Vec<String>),
}

/// Shipped units to move out of one order's hold on one stock shard: the cumulative shipped
/// quantity of each of its SKUs there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShippedPart {
    pub order: OrderId,
    pub shipped: Vec<(String, u32)>,
}

/// One return's restocked units of the SKUs one stock shard owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestockPart {
    pub ret: ReturnId,
    pub lines: Vec<RestockLine>,
}

/// The outcomes of a `PlaceBatch`, in request order.
pub type BatchResults = Vec<Result<OrderId, CommandError>>;

impl Message for ShardMsg {
    type Result = ();
}

//! Domain types shared by the engine's public API: ids, statuses, views and errors.
//!
//! These are engine types, not wire types: the gateway maps them onto its own JSON bodies.

use std::fmt;
use std::str::FromStr;

/// Maximum number of lines in one order.
pub const ORDER_LINES_MAX: usize = 100;
/// Maximum length of a SKU in bytes.
pub const SKU_LENGTH_MAX: usize = 64;

/// Largest `unit_price` of an order line, in minor currency units: 10^12 (ten billion in a
/// currency with two decimals). Checked by the gateway and by the engine ([`add_line_amount`]).
pub const UNIT_PRICE_MAX: u64 = 1_000_000_000_000;
/// Largest `qty` of an order line, and of a shipment line: 10^6 units.
pub const LINE_QTY_MAX: u32 = 1_000_000;
/// Largest order total (the sum of `qty × unit_price` over its lines), in minor units: 10^15.
///
/// One line alone can reach `LINE_QTY_MAX × UNIT_PRICE_MAX` = 10^18 and 100 lines 10^20, past
/// `u64::MAX`, so the total needs its own bound. 10^15 is below 2^53: a client that reads JSON
/// numbers as doubles (JavaScript) reads every price and total exactly.
pub const ORDER_TOTAL_MAX: u64 = 1_000_000_000_000_000;
/// Largest `|delta|` of one stock adjustment: 10^12 units (what the flash-sale benchmark
/// receives in one adjustment). `on_hand` itself stays at most `i64::MAX`, checked by the
/// shard when it adjusts.
pub const STOCK_DELTA_MAX: u64 = 1_000_000_000_000;

/// Why an order line's numbers are out of bounds. The problem names `lines[i].{field}`
/// ([`LineAmountError::field`]) and says [`LineAmountError::detail`], at the gateway and in
/// the engine alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineAmountError {
    /// `qty` is 0.
    QtyZero,
    /// `qty` is above [`LINE_QTY_MAX`].
    QtyAboveMax,
    /// `unit_price` is above [`UNIT_PRICE_MAX`].
    UnitPriceAboveMax,
    /// The order total up to and including this line is above [`ORDER_TOTAL_MAX`].
    TotalAboveMax,
}

impl LineAmountError {
    /// The line's field that is out of bounds (`qty` or `unit_price`; a total too large names
    /// the `unit_price` of the line that passes the bound).
    pub fn field(self) -> &'static str {
        match self {
            LineAmountError::QtyZero | LineAmountError::QtyAboveMax => "qty",
            LineAmountError::UnitPriceAboveMax | LineAmountError::TotalAboveMax => "unit_price",
        }
    }

    /// What a client reads in the problem's `detail`.
    pub fn detail(self) -> String {
        match self {
            LineAmountError::QtyZero => "qty must be at least 1".to_string(),
            LineAmountError::QtyAboveMax => format!("qty must be at most {LINE_QTY_MAX}"),
            LineAmountError::UnitPriceAboveMax => {
                format!("unit_price must be at most {UNIT_PRICE_MAX} (minor units)")
            }
            LineAmountError::TotalAboveMax => {
                format!("the order total must be at most {ORDER_TOTAL_MAX} (minor units)")
            }
        }
    }
}

/// Checks one order line's `qty` and `unit_price` against their bounds and adds the line's
/// amount to `total` (the sum of the lines before it): the new total, at most
/// [`ORDER_TOTAL_MAX`], or why the line is refused. Never overflows: a line's amount is at
/// most 10^18 once both bounds hold, and `total` at most 10^15.
pub fn add_line_amount(total: u64, qty: u32, unit_price: u64) -> Result<u64, LineAmountError> {
    if qty == 0 {
        return Err(LineAmountError::QtyZero);
    }
    if qty > LINE_QTY_MAX {
        return Err(LineAmountError::QtyAboveMax);
    }
    if unit_price > UNIT_PRICE_MAX {
        return Err(LineAmountError::UnitPriceAboveMax);
    }
    let sum = u64::from(qty)
        .checked_mul(unit_price)
        .and_then(|amount| amount.checked_add(total))
        .filter(|sum| *sum <= ORDER_TOTAL_MAX);
    sum.ok_or(LineAmountError::TotalAboveMax)
}

/// Bits of an id that hold its shard (the top 16 bits).
const SHARD_SHIFT: u32 = 48;

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        /// An opaque id; the top 16 bits name the shard that owns the object.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            pub fn new(shard: u16, counter: u64) -> Self {
                debug_assert!(counter < (1u64 << SHARD_SHIFT));
                $name(((shard as u64) << SHARD_SHIFT) | counter)
            }
            /// The shard that owns this object.
            pub fn shard(self) -> u16 {
                (self.0 >> SHARD_SHIFT) as u16
            }
            /// The per-shard counter part of the id.
            pub fn counter(self) -> u64 {
                self.0 & ((1u64 << SHARD_SHIFT) - 1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:016x}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                let hex = s.strip_prefix($prefix).ok_or(())?;
                if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(());
                }
                u64::from_str_radix(hex, 16).map($name).map_err(|_| ())
            }
        }
    };
}

id_type!(OrderId, "ord_");
id_type!(CustomerId, "cus_");
id_type!(ShipmentId, "shp_");
id_type!(ReturnId, "ret_");
id_type!(RefundId, "ref_");

/// Most returns one order takes: its view lists them all, so the bound keeps it small.
pub const ORDER_RETURNS_MAX: usize = 100;
/// Most refunds one order takes (its view lists them all).
pub const ORDER_REFUNDS_MAX: usize = 100;
/// The location that always exists: stock adjusted, restocked or allocated without a location
/// is there, so calls from before locations keep working.
pub const DEFAULT_LOCATION: &str = "default";
/// The `default` location's name until `POST /v1/locations` renames it.
pub const DEFAULT_LOCATION_NAME: &str = "Default";
/// The `default` location's priority until `POST /v1/locations` changes it (lowest first: by
/// default its stock is allocated before any other location's).
pub const DEFAULT_LOCATION_PRIORITY: u32 = 0;
/// Highest location priority (lowest number is allocated first).
pub const LOCATION_PRIORITY_MAX: u32 = 1_000_000;
/// Longest location name, in characters.
pub const LOCATION_NAME_CHARS_MAX: usize = 200;
/// Most locations a store can define, `default` included, whatever `stock.locations_max` says:
/// every stock record and allocation is walked by location, so the count stays small.
pub const LOCATIONS_MAX_LIMIT: usize = 1000;

/// Whether a location id is valid: like a SKU, 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub fn location_is_valid(id: &str) -> bool {
    sku_is_valid(id)
}

/// A stock location (warehouse) as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationView {
    pub id: String,
    pub name: String,
    pub priority: u32,
    /// When it was defined (0 for `default` while never redefined).
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// One location's part of a SKU's stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationStockView {
    pub location: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
}

/// Whether a SKU is 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub fn sku_is_valid(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= SKU_LENGTH_MAX
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The lifecycle of an order. `Pending` is internal: a cross-shard placement in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    PartiallyShipped,
    Shipped,
    Delivered,
    Cancelled,
    // New variants go last: postcard encodes the variant index (snapshots, cold records).
    /// Every unit shipped, some (not all) of them received back by a return.
    PartiallyReturned,
    /// Every unit of the order received back by returns.
    Returned,
}

impl OrderStatus {
    /// Every status a client sees (`pending` is internal), in lifecycle order: the list
    /// `GET /v1/orders?status=` takes and the OpenAPI document's enum names.
    pub const LISTED: [OrderStatus; 7] = [
        OrderStatus::Confirmed,
        OrderStatus::PartiallyShipped,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::PartiallyReturned,
        OrderStatus::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::PartiallyShipped => "partially_shipped",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::PartiallyReturned => "partially_returned",
            OrderStatus::Returned => "returned",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "confirmed" => OrderStatus::Confirmed,
            "partially_shipped" => OrderStatus::PartiallyShipped,
            "shipped" => OrderStatus::Shipped,
            "delivered" => OrderStatus::Delivered,
            "cancelled" => OrderStatus::Cancelled,
            "partially_returned" => OrderStatus::PartiallyReturned,
            "returned" => OrderStatus::Returned,
            _ => return None,
        })
    }

    /// Whether the order still holds reserved stock.
    pub fn holds_stock(self) -> bool {
        matches!(
            self,
            OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::PartiallyShipped
        )
    }
}

/// The lifecycle of a shipment: `shipped` when created, then carrier events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ShipmentStatus {
    Shipped,
    InTransit,
    Delivered,
    Failed,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Shipped => "shipped",
            ShipmentStatus::InTransit => "in_transit",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::Failed => "failed",
        }
    }

    /// The statuses a client may report (`shipped` is set by the server at creation).
    pub fn parse_event(s: &str) -> Option<ShipmentStatus> {
        Some(match s {
            "in_transit" => ShipmentStatus::InTransit,
            "delivered" => ShipmentStatus::Delivered,
            "failed" => ShipmentStatus::Failed,
            _ => return None,
        })
    }

    /// Whether no later event may follow.
    pub fn is_final(self) -> bool {
        matches!(self, ShipmentStatus::Delivered | ShipmentStatus::Failed)
    }
}

/// One step of a shipment's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipmentEventView {
    pub at_us: i64,
    pub status: ShipmentStatus,
    pub note: Option<String>,
}

/// A shipment as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipmentView {
    pub id: ShipmentId,
    pub order_id: OrderId,
    pub carrier: String,
    pub tracking_number: String,
    pub status: ShipmentStatus,
    pub lines: Vec<(String, u32)>,
    pub events: Vec<ShipmentEventView>,
}

/// What a client asks for when shipping: `lines` `None` ships everything not yet shipped.
#[derive(Clone, Debug)]
pub struct NewShipment {
    pub order_id: OrderId,
    pub carrier: String,
    pub lines: Option<Vec<(String, u32)>>,
    pub actor: String,
}

/// The lifecycle of a return: `requested` when created, `received` once the warehouse took
/// the units back (final).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReturnStatus {
    Requested,
    Received,
}

impl ReturnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnStatus::Requested => "requested",
            ReturnStatus::Received => "received",
        }
    }
}

/// One received line of a return: `qty` units of `sku` came back; with `restock` they went
/// back to `on_hand` at `location` (the SKU's stock today, [`DEFAULT_LOCATION`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedLineView {
    pub sku: String,
    pub qty: u32,
    pub restock: bool,
    /// Where restocked units went; `None` for units not restocked.
    pub location: Option<String>,
}

/// A return as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnView {
    pub id: ReturnId,
    pub order_id: OrderId,
    pub status: ReturnStatus,
    /// The units asked to come back, per SKU.
    pub lines: Vec<(String, u32)>,
    pub reason: String,
    pub created_at_us: i64,
    /// What came back (empty until received).
    pub received: Vec<ReceivedLineView>,
    pub received_at_us: Option<i64>,
}

/// What a client asks for when opening a return.
#[derive(Clone, Debug)]
pub struct NewReturn {
    pub order_id: OrderId,
    pub lines: Vec<(String, u32)>,
    pub reason: String,
    pub actor: String,
}

/// One line of receiving a return: `qty` units of `sku`, back to stock with `restock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveLine {
    pub sku: String,
    pub qty: u32,
    pub restock: bool,
}

/// A refund as clients see it: `amount` in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundView {
    pub id: RefundId,
    pub order_id: OrderId,
    pub amount: u64,
    pub reason: String,
    pub created_at_us: i64,
}

/// What a client asks for when refunding.
#[derive(Clone, Debug)]
pub struct NewRefund {
    pub order_id: OrderId,
    pub amount: u64,
    pub reason: String,
    pub actor: String,
}

/// A personal-data field, named for whoever re-seals stored values (see
/// [`crate::Engine::reseal_personal_data`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PersonalField {
    CustomerName,
    CustomerEmail,
    CustomerPhone,
    CustomerAddress,
    OrderShippingAddress,
}

/// Sales figures of one shard over a time range (merged by the caller).
///
/// Every figure saturates at `u64::MAX` instead of wrapping: revenue can pass 2^64 minor units
/// over enough orders (each up to [`ORDER_TOTAL_MAX`]), and a wrapped sum would read as a small
/// one. The shards count in `u128`, which no realistic range reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalesSummary {
    /// Orders placed in the range and not cancelled.
    pub orders: u64,
    /// Orders placed in the range and cancelled since.
    pub cancelled: u64,
    pub units: u64,
    pub revenue: u64,
    /// Units of these orders received back by returns.
    pub returned_units: u64,
    /// Refunded on these orders, minor units.
    pub refunds: u64,
    /// Per SKU: (units, revenue).
    pub skus: std::collections::HashMap<String, (u64, u64)>,
    /// Per hour (start of the hour, microseconds): (orders, revenue).
    pub by_hour: std::collections::BTreeMap<i64, (u64, u64)>,
    /// One shard's answer: its last applied seq when it counted (the engine adds the cold
    /// orders archived up to it); not merged.
    pub as_of_seq: u64,
}

impl SalesSummary {
    /// Adds another shard's figures to these, saturating at `u64::MAX`.
    pub fn merge(&mut self, other: SalesSummary) {
        self.orders = self.orders.saturating_add(other.orders);
        self.cancelled = self.cancelled.saturating_add(other.cancelled);
        self.units = self.units.saturating_add(other.units);
        self.revenue = self.revenue.saturating_add(other.revenue);
        self.returned_units = self.returned_units.saturating_add(other.returned_units);
        self.refunds = self.refunds.saturating_add(other.refunds);
        for (sku, (units, revenue)) in other.skus {
            let entry = self.skus.entry(sku).or_default();
            entry.0 = entry.0.saturating_add(units);
            entry.1 = entry.1.saturating_add(revenue);
        }
        for (hour, (orders, revenue)) in other.by_hour {
            let entry = self.by_hour.entry(hour).or_default();
            entry.0 = entry.0.saturating_add(orders);
            entry.1 = entry.1.saturating_add(revenue);
        }
    }

    /// Revenue less refunds, never below zero.
    pub fn net_revenue(&self) -> u64 {
        self.revenue.saturating_sub(self.refunds)
    }

    /// The `n` best-selling SKUs by revenue (ties by SKU), as (sku, units, revenue).
    pub fn top_skus(&self, n: usize) -> Vec<(String, u64, u64)> {
        let mut all: Vec<(String, u64, u64)> = self
            .skus
            .iter()
            .map(|(sku, (units, revenue))| (sku.clone(), *units, *revenue))
            .collect();
        all.sort_unstable_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// A stock record as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockView {
    pub sku: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
    /// Per location (`default` first, then by id); the totals above are their sums.
    pub locations: Vec<LocationStockView>,
}

/// A SKU's catalog price as clients see it: `price` in minor units of the shop's currency
/// (at most [`UNIT_PRICE_MAX`]); only an `active` price prices an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogView {
    pub sku: String,
    pub price: u64,
    pub active: bool,
    pub updated_at_us: i64,
}

/// Most catalog entries one page lists ([`crate::Engine::catalog_page`]), as every list's.
pub const CATALOG_PAGE_MAX: usize = 1000;

/// A customer as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerView {
    pub id: CustomerId,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub created_at_us: i64,
    /// Erased (GDPR art. 17): every personal field above is empty.
    pub erased: bool,
}

/// A change of a customer's contact data (`PATCH`): each `Some` field, sealed, replaces the
/// stored one.
#[derive(Clone, Debug, Default)]
pub struct CustomerUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
}

impl CustomerUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.email.is_none()
            && self.phone.is_none()
            && self.address.is_none()
    }
}

/// What a client asks for when creating a customer.
#[derive(Clone, Debug)]
pub struct NewCustomer {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
}

/// One requested order line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLine {
    pub sku: String,
    pub qty: u32,
    pub unit_price: u64,
}

/// An idempotency key (already scoped by the caller, e.g. with the API key id) and the hash
/// of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: u128,
}

/// A placement request.
#[derive(Clone, Debug)]
pub struct PlaceOrder {
    pub customer_id: CustomerId,
    pub lines: Vec<NewLine>,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    pub idempotency: Option<Idempotency>,
    /// Who asks (an API key id); recorded in the order's history.
    pub actor: String,
    /// The order cannot be placed (the gateway found its prices wrong against the catalog):
    /// the shard answers a retry under its Idempotency-Key as the first request was answered,
    /// and any other with this error, placing nothing and remembering nothing.
    pub refusal: Option<CommandError>,
}

/// One order line as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineView {
    pub sku: String,
    pub qty: u32,
    pub unit_price: u64,
    pub shipped_qty: u32,
    /// Units received back by returns.
    pub returned_qty: u32,
    /// Where the line's units were reserved at placement: (location, units), in the order
    /// they are shipped. Empty when not known (an order in the cold tier).
    pub allocations: Vec<(String, u32)>,
}

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryView {
    pub at_us: i64,
    pub status: OrderStatus,
    pub actor: String,
}

/// An order as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub lines: Vec<LineView>,
    pub total: u64,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub history: Vec<HistoryView>,
    pub shipments: Vec<String>,
    /// The order's customer was erased: its shipping address is gone. The engine answers
    /// `false`; the gateway, which holds the customers' data keys, sets it.
    pub customer_erased: bool,
    /// The order's returns (`ret_…`), oldest first.
    pub returns: Vec<String>,
    /// The order's refunds, oldest first.
    pub refunds: Vec<RefundView>,
    /// The sum of the refunds, minor units.
    pub refunded: u64,
}

/// Filters of an order listing. Results are newest first; `after` is the cursor of the last
/// item of the previous page.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    pub customer_id: Option<CustomerId>,
    pub status: Option<OrderStatus>,
    pub limit: usize,
    pub after: Option<OrderCursor>,
}

/// A position in the newest-first order listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderCursor {
    pub created_at_us: i64,
    pub id: OrderId,
}

impl fmt::Display for OrderCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}", self.created_at_us, self.id.0)
    }
}

impl FromStr for OrderCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once('.').ok_or(())?;
        let created_at_us = i64::from_str_radix(a, 16).map_err(|_| ())?;
        let id = u64::from_str_radix(b, 16).map_err(|_| ())?;
        Ok(OrderCursor {
            created_at_us,
            id: OrderId(id),
        })
    }
}

/// One page of orders.
#[derive(Clone, Debug)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next: Option<OrderCursor>,
}

/// A shard's state as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardState {
    Running,
    Restarting,
    Failed,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Running => "running",
            ShardState::Restarting => "restarting",
            ShardState::Failed => "failed",
        }
    }
}

/// Operational facts about one shard.
#[derive(Clone, Debug)]
pub struct ShardStatus {
    pub id: u16,
    pub state: ShardState,
    pub restarts: u64,
    pub mailbox_depth: u64,
    /// Placements waiting in the shard's inbox ([`crate::inbox`]).
    pub inbox_orders: u64,
    pub last_seq: u64,
    pub orders: u64,
    pub skus: u64,
    pub customers: u64,
    pub digest: u64,
}

/// A snapshot written on demand: its sequence number and how long the shard paused to
/// encode it (the durable write happens on the log writer thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTaken {
    pub seq: u64,
    pub pause_us: u64,
}

/// Why a command failed. The gateway maps each variant onto exactly one API error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("not found")]
    NotFound,
    /// A location id that names no location (answered 404 `not_found`, naming it).
    #[error("unknown location {0}")]
    UnknownLocation(String),
    #[error("insufficient stock for {skus:?}")]
    InsufficientStock { skus: Vec<String> },
    #[error("invalid transition: {0}")]
    InvalidTransition(String),
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    #[error("unknown customer")]
    UnknownCustomer,
    #[error("invalid {param}: {detail}")]
    Invalid { param: String, detail: String },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The command made a shard panic twice; it is refused from then on.
    #[error("quarantined: {0}")]
    Quarantined(String),
    /// A write refused because the disk is (nearly) full; reads go on, and writes are
    /// accepted again by themselves once space is back.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// Internal, resolved by the engine before any caller sees it: the answer refers to an
    /// order the shard moved to the cold tier ([`crate::cold`]); the engine reads it there.
    #[error("in the cold tier")]
    Cold(ColdAnswer),
    // Placement refusals the gateway decides against the catalog ([`PlaceOrder::refusal`]).
    /// A line's `unit_price` differs from its SKU's catalog price; `param` names the line.
    #[error("price mismatch at {param}: {detail}")]
    PriceMismatch { param: String, detail: String },
    /// A SKU has no active catalog price where the catalog prices the order.
    #[error("unknown SKU at {param}: {detail}")]
    UnknownSku { param: String, detail: String },
}

/// What a shard's answer about a cold order stands for ([`CommandError::Cold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdAnswer {
    /// The order as placed (an idempotent placement's answer).
    Placed(OrderId),
    /// The order as it is.
    Order(OrderId),
    /// A shipment with its first `events` events (an idempotent shipment's answer).
    Shipment(ShipmentId, u32),
    /// A return, as created (`true`: as it is now).
    Return(ReturnId, bool),
    /// A refund.
    Refund(RefundId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_carry_their_shard() {
        let id = OrderId::new(3, 42);
        assert_eq!(id.shard(), 3);
        assert_eq!(id.counter(), 42);
        let text = id.to_string();
        assert!(text.starts_with("ord_"));
        assert_eq!(text.parse::<OrderId>(), Ok(id));
        assert!("cus_0000000000000001".parse::<OrderId>().is_err());
        assert!("ord_xyz".parse::<OrderId>().is_err());
    }

    #[test]
    fn sku_rules() {
        assert!(sku_is_valid("ABC-1.x_2"));
        assert!(!sku_is_valid(""));
        assert!(!sku_is_valid("a b"));
        assert!(!sku_is_valid(&"a".repeat(65)));
        assert!(sku_is_valid(&"a".repeat(64)));
    }

    #[test]
    fn line_qty_bound() {
        assert_eq!(add_line_amount(0, LINE_QTY_MAX, 1), Ok(1_000_000));
        assert_eq!(
            add_line_amount(0, LINE_QTY_MAX + 1, 1),
            Err(LineAmountError::QtyAboveMax)
        );
        assert_eq!(add_line_amount(0, 0, 1), Err(LineAmountError::QtyZero));
        assert_eq!(LineAmountError::QtyAboveMax.field(), "qty");
        assert_eq!(
            LineAmountError::QtyAboveMax.detail(),
            "qty must be at most 1000000"
        );
    }

    #[test]
    fn unit_price_bound() {
        assert_eq!(add_line_amount(0, 1, UNIT_PRICE_MAX), Ok(UNIT_PRICE_MAX));
        assert_eq!(
            add_line_amount(0, 1, UNIT_PRICE_MAX + 1),
            Err(LineAmountError::UnitPriceAboveMax)
        );
        assert_eq!(add_line_amount(0, 1, 0), Ok(0), "a free item is allowed");
        assert_eq!(LineAmountError::UnitPriceAboveMax.field(), "unit_price");
    }

    #[test]
    fn order_total_bound() {
        let total = add_line_amount(0, 999, UNIT_PRICE_MAX).unwrap();
        assert_eq!(
            add_line_amount(total, 1, UNIT_PRICE_MAX),
            Ok(ORDER_TOTAL_MAX)
        );
        assert_eq!(
            add_line_amount(ORDER_TOTAL_MAX, 1, 1),
            Err(LineAmountError::TotalAboveMax)
        );
        // Both bounds at once: 10^18, past the total's bound but not past u64.
        assert_eq!(
            add_line_amount(0, LINE_QTY_MAX, UNIT_PRICE_MAX),
            Err(LineAmountError::TotalAboveMax)
        );
        // A total from elsewhere near u64::MAX is refused, not wrapped.
        assert_eq!(
            add_line_amount(u64::MAX, LINE_QTY_MAX, UNIT_PRICE_MAX),
            Err(LineAmountError::TotalAboveMax)
        );
        assert_eq!(LineAmountError::TotalAboveMax.field(), "unit_price");
        // Every total within the bound is exact as a JSON number read into a double.
        const { assert!(ORDER_TOTAL_MAX < 1 << 53) };
    }

    #[test]
    fn merged_summaries_saturate() {
        let half = SalesSummary {
            orders: 1,
            units: u64::MAX / 2 + 1,
            revenue: u64::MAX / 2 + 1,
            skus: [("A".to_string(), (1, u64::MAX / 2 + 1))].into(),
            by_hour: [(0, (1, u64::MAX / 2 + 1))].into(),
            ..SalesSummary::default()
        };
        let mut total = half.clone();
        total.merge(half);
        assert_eq!(total.orders, 2);
        assert_eq!(total.units, u64::MAX);
        assert_eq!(total.revenue, u64::MAX);
        assert_eq!(total.skus["A"], (2, u64::MAX));
        assert_eq!(total.by_hour[&0], (2, u64::MAX));
    }

    #[test]
    fn cursor_round_trips() {
        let c = OrderCursor {
            created_at_us: 1_700_000_000_000_000,
            id: OrderId::new(1, 9),
        };
        assert_eq!(c.to_string().parse::<OrderCursor>(), Ok(c));
    }
}

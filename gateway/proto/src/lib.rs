//! Wire types of orderd's HTTP JSON API: request and response bodies shared by server and clients;
//! and, in [`frame`] and [`tcp`], the frame codec and the messages of the binary TCP protocol.
//!
//! Architecture invariant: this crate does no I/O and knows nothing about actix or the engine.
//! The JSON shape of these types is a compatibility promise to every client; the engine's own
//! types are not, which is why the gateway maps between the two instead of serializing engine
//! types directly.
//!
//! Request bodies reject unknown fields (no mass assignment). Response bodies accept unknown
//! fields when a client deserializes them, so that adding a field to a response is compatible.

pub mod frame;
pub mod tcp;

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A `T` that only deserializes from a JSON object.
///
/// serde's derived structs also accept a sequence of their fields in order (`["a", 1]`); a
/// request body must name its fields, so request types are read through this wrapper (at the
/// top level by the server, and for nested objects via [`objects`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

/// `deserialize_with` helper: a list whose every element must be a JSON object.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Vec::<ObjectOnly<T>>::deserialize(deserializer)?;
    Ok(items.into_iter().map(|item| item.0).collect())
}

/// The statuses of an order, as `GET /v1/orders` filters them. Written by hand: a test in
/// `orderd-service` holds it equal to the engine's `OrderStatus::LISTED`, both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatusName {
    Confirmed,
    PartiallyShipped,
    Shipped,
    Delivered,
    Cancelled,
    PartiallyReturned,
    Returned,
}

impl OrderStatusName {
    /// Every variant, in declaration order.
    pub const ALL: [OrderStatusName; 7] = [
        OrderStatusName::Confirmed,
        OrderStatusName::PartiallyShipped,
        OrderStatusName::Shipped,
        OrderStatusName::Delivered,
        OrderStatusName::Cancelled,
        OrderStatusName::PartiallyReturned,
        OrderStatusName::Returned,
    ];
}

/// The statuses a carrier event may set on a shipment (`shipped` is its creation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentEventStatus {
    InTransit,
    Delivered,
    Failed,
}

/// The roles of API keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Admin,
    Frontend,
    Customer,
    Logistics,
    Analyst,
    Operator,
    Auditor,
    Merchandiser,
}

/// `POST /v1/stock/{sku}/adjustments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustmentRequest {
    /// Units to add (receiving goods) or remove; never zero, at most 10^12 either way
    /// (`STOCK_DELTA_MAX` of the engine).
    #[schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64)]
    pub delta: i64,
    /// Why the stock changed, for the audit trail; at most 500 characters.
    #[schema(max_length = 500)]
    pub reason: String,
    /// The location whose units change (`default` when absent); unknown → 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub location: Option<String>,
}

/// A stock record: the totals, and the same per location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockResponse {
    pub sku: String,
    pub on_hand: u64,
    pub reserved: u64,
    /// `on_hand - reserved`, never negative.
    pub available: u64,
    /// Per location that holds or held the SKU, `default` first: the totals are their sums.
    #[serde(default)]
    pub locations: Vec<StockLocationResponse>,
}

/// A SKU's stock at one location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLocationResponse {
    pub location: String,
    pub on_hand: u64,
    pub reserved: u64,
    /// `on_hand - reserved`, never negative.
    pub available: u64,
}

/// `POST /v1/stock/{sku}/transfers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockTransferRequest {
    /// The location the units leave; it must have `qty` available (else 409).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub from: String,
    /// The location the units arrive at; not `from`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub to: String,
    /// Units to move: 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub qty: u64,
    /// Why, for the audit trail; at most 500 characters.
    #[schema(max_length = 500)]
    pub reason: String,
}

/// `POST /v1/locations`: defines a stock location, or redefines one with that id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationRequest {
    /// Like a SKU: 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub id: String,
    /// 1–200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Lowest first: placement takes units from locations in ascending priority (ties by
    /// id). 0 to 1,000,000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub priority: u32,
}

/// A stock location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocationResponse {
    pub id: String,
    pub name: String,
    pub priority: u32,
}

/// `GET /v1/locations` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LocationQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page (the last location id it listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub after: Option<String>,
}

/// Units of an order line reserved at one location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AllocationResponse {
    pub location: String,
    pub qty: u32,
}

/// `PUT /v1/catalog/{sku}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogPriceRequest {
    /// Minor units of the shop's currency (`shop.currency`), 0 to 10^12 (`UNIT_PRICE_MAX`).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_u64)]
    pub price: u64,
    /// Whether the price prices orders; `true` when absent. An inactive price keeps its
    /// value, but where the catalog prices an order its SKU is `unknown_sku`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// A SKU's catalog price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CatalogResponse {
    pub sku: String,
    /// Minor units of `currency`.
    pub price: u64,
    /// The shop's currency (ISO 4217, `shop.currency`).
    pub currency: String,
    pub active: bool,
    /// RFC 3339 UTC: when the price was last set.
    pub updated_at: String,
}

/// Query of `GET /v1/catalog`: SKUs in ascending (byte) order.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page (the last SKU it listed); any SKU starts the
    /// page after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub after: Option<String>,
}

/// `POST /v1/customers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerRequest {
    /// 1 to 200 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// An address (`name@example.com`): one `@`, a domain of at least two labels, no
    /// whitespace or control characters; at most 254 characters.
    #[schema(
        min_length = 1,
        max_length = 254,
        pattern = "^[^@\\s\\u0000-\\u001f\\u007f-\\u009f]+@[^@.\\s\\u0000-\\u001f\\u007f-\\u009f]+(\\.[^@.\\s\\u0000-\\u001f\\u007f-\\u009f]+)+$"
    )]
    pub email: String,
    /// At most 50 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 50, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub phone: Option<String>,
    /// At most 500 characters on one line (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub address: Option<String>,
}

/// A customer record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerResponse {
    pub id: String,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// `PATCH /v1/customers/{id}`: the fields present replace the stored ones, each checked as at
/// creation; absent (or `null`) fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomerRequest {
    /// 1 to 200 characters, not blank, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: Option<String>,
    /// An address (`name@example.com`), at most 254 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 254,
        pattern = "^[^@\\s\\u0000-\\u001f\\u007f-\\u009f]+@[^@.\\s\\u0000-\\u001f\\u007f-\\u009f]+(\\.[^@.\\s\\u0000-\\u001f\\u007f-\\u009f]+)+$"
    )]
    pub email: Option<String>,
    /// At most 50 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 50, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub phone: Option<String>,
    /// At most 500 characters on one line (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub address: Option<String>,
}

/// An erased customer (`POST /v1/customers/{id}/erase`, and `GET` afterwards): only its id
/// is left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasedCustomerResponse {
    pub id: String,
    /// Always `true`.
    pub erased: bool,
}

/// `GET /v1/customers/{id}`: the record, or, once the customer is erased, only its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CustomerRecordResponse {
    Erased(ErasedCustomerResponse),
    Customer(CustomerResponse),
}

/// One line of `POST /v1/orders`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub sku: String,
    /// 1 to 10^6 (`LINE_QTY_MAX` of the engine).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub qty: u32,
    /// Minor currency units (cents), at most 10^12 (`UNIT_PRICE_MAX` of the engine). The
    /// order's total, the sum of `qty × unit_price`, must be at most 10^15 (`ORDER_TOTAL_MAX`).
    /// Where the catalog prices the order (a `customer` key; any key with
    /// `orders.client_prices = false`) it may be omitted, and if sent must equal the catalog
    /// price (422 `price_mismatch`); elsewhere it is required. The document marks it required:
    /// a request that sends it suits every key (a client price must then be the catalog's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = true, maximum = 1_000_000_000_000_u64)]
    pub unit_price: Option<u64>,
}

/// `POST /v1/orders`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// An existing customer's id (`cus_` and 16 hex digits); another is 422 `unknown_customer`.
    #[schema(pattern = "^cus_[0-9A-Fa-f]{16}$")]
    pub customer_id: String,
    /// 1 to 100 lines, each SKU at most once, with a total (the sum of `qty × unit_price`)
    /// of at most 10^15 minor units.
    #[serde(deserialize_with = "objects")]
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<OrderLineRequest>,
    /// At most 500 characters on one line (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub shipping_address: Option<String>,
    /// At most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

/// `POST /v1/customers/{id}/erase`: no fields; the body itself is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseCustomerRequest {}

/// `POST /v1/orders/{id}/cancel`; the body itself is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    /// At most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Query of `GET /v1/orders`. Every value is kept as text so that the server can name the
/// offending parameter when one does not parse.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListOrdersQuery {
    /// Only this customer's orders (`cus_` and 16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^cus_[0-9A-Fa-f]{16}$")]
    pub customer_id: Option<String>,
    /// Only orders with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<OrderStatusName>, inline)]
    pub status: Option<String>,
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page (two hex numbers: `<created_at>.<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^[+-]?0*[0-9A-Fa-f]{1,15}[.][+]?0*[0-9A-Fa-f]{1,16}$")]
    pub after: Option<String>,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLineResponse {
    pub sku: String,
    pub qty: u32,
    pub unit_price: u64,
    pub shipped_qty: u32,
    /// Units received back by returns.
    pub returned_qty: u32,
    /// Where the line's units were reserved, by location priority (a line one location
    /// could not cover is split); its units ship in this order.
    #[serde(default)]
    pub allocations: Vec<AllocationResponse>,
}

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderHistoryResponse {
    /// RFC 3339 UTC.
    pub at: String,
    pub status: String,
    /// The API key id that caused the step.
    pub actor: String,
}

/// An order. `shipments`, `history`, `returns`, `refunds` and `refunded` are present when the
/// order is read (`GET`, lists, cancel) and absent in the response to a placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderResponse {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub lines: Vec<OrderLineResponse>,
    /// Sum of `qty * unit_price`, minor units.
    pub total: u64,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipments: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<OrderHistoryResponse>>,
    /// Present (`true`) when the order's customer was erased: the order keeps its id, lines
    /// and totals; its shipping address is gone (`null`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub customer_erased: bool,
    /// The order's returns (`ret_…`), oldest first; at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<Vec<String>>,
    /// The order's refunds, oldest first; at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundResponse>>,
    /// The sum of the refunds, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded: Option<u64>,
}

/// One line of `POST /v1/orders/{id}/returns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLineRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub sku: String,
    /// At least 1, at most 10^6, and at most what was shipped of this SKU less what its
    /// returns already hold.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub qty: u32,
}

/// `POST /v1/orders/{id}/returns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReturnRequest {
    /// 1 to 100 lines, each a SKU of the order once.
    #[serde(deserialize_with = "objects")]
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ReturnLineRequest>,
    /// Why the units come back; at most 500 characters.
    #[schema(max_length = 500)]
    pub reason: String,
}

/// One line of `POST /v1/returns/{id}/receive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveLineRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub sku: String,
    /// At least 1, at most 10^6; all lines of a SKU together at most what the return holds
    /// of it.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub qty: u32,
    /// `true`: the units go back to `on_hand` where they were shipped from; `false`: they
    /// are received but not sellable (damaged), and leave stock as it is.
    pub restock: bool,
}

/// `POST /v1/returns/{id}/receive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveReturnRequest {
    /// 1 to 100 lines, each a SKU of the return, at most once restocked and once not.
    #[serde(deserialize_with = "objects")]
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ReceiveLineRequest>,
}

/// One line of a return: units asked to come back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReturnLineResponse {
    pub sku: String,
    pub qty: u32,
}

/// One received line of a return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceivedLineResponse {
    pub sku: String,
    pub qty: u32,
    pub restock: bool,
    /// Where restocked units went: the location they were shipped from (a received line
    /// whose units left from several locations is one line per location); null when not
    /// restocked.
    pub location: Option<String>,
}

/// A return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReturnResponse {
    pub id: String,
    pub order_id: String,
    /// `requested` or `received`.
    pub status: String,
    pub lines: Vec<ReturnLineResponse>,
    pub reason: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// What came back: empty until received.
    pub received: Vec<ReceivedLineResponse>,
    /// RFC 3339 UTC; null until received.
    pub received_at: Option<String>,
}

/// `POST /v1/orders/{id}/refunds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// Minor units: at least 1, at most the order's total less its earlier refunds.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_u64)]
    pub amount: u64,
    /// Why; at most 500 characters.
    #[schema(max_length = 500)]
    pub reason: String,
}

/// A refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefundResponse {
    pub id: String,
    pub order_id: String,
    /// Minor units.
    pub amount: u64,
    pub reason: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// One line of `POST /v1/orders/{id}/shipments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentLineRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub sku: String,
    /// At least 1, at most 10^6 (`LINE_QTY_MAX` of the engine) and at most what is left to
    /// ship of this SKU.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub qty: u32,
}

/// `POST /v1/orders/{id}/shipments`: without `lines`, everything not yet shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShipmentRequest {
    /// 1 to 100 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub carrier: String,
    /// 1 to 100 lines, each a SKU of the order; absent: everything not yet shipped.
    #[serde(
        default,
        deserialize_with = "optional_objects",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Option<Vec<ShipmentLineRequest>>,
}

/// `deserialize_with` helper: an optional list whose every element must be a JSON object.
pub fn optional_objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Option::<Vec<ObjectOnly<T>>>::deserialize(deserializer)?;
    Ok(items.map(|items| items.into_iter().map(|item| item.0).collect()))
}

/// `POST /v1/shipments/{id}/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentEventRequest {
    /// `in_transit`, `delivered` or `failed`.
    #[schema(value_type = ShipmentEventStatus, inline)]
    pub status: String,
    /// At most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

/// One line of a shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentLineResponse {
    pub sku: String,
    pub qty: u32,
}

/// One step of a shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentEventResponse {
    /// RFC 3339 UTC.
    pub at: String,
    /// `shipped`, `in_transit`, `delivered` or `failed`.
    pub status: String,
    pub note: Option<String>,
}

/// A shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentResponse {
    pub id: String,
    pub order_id: String,
    pub carrier: String,
    pub tracking_number: String,
    pub status: String,
    pub lines: Vec<ShipmentLineResponse>,
    pub events: Vec<ShipmentEventResponse>,
}

/// Query of the analytics routes: RFC 3339 times, `[from, to)`; both optional.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// RFC 3339: orders placed at or after this time; open when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339: orders placed before this time; open when absent. Not before `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// One SKU of `top_skus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopSkuResponse {
    pub sku: String,
    pub units: u64,
    pub revenue: u64,
}

/// One hour of `by_hour`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HourResponse {
    /// Start of the hour, RFC 3339 UTC.
    pub hour: String,
    pub orders: u64,
    pub revenue: u64,
}

/// `GET /v1/analytics/summary`. Units and revenue (here, per SKU and per hour) never wrap:
/// a sum past `u64::MAX` reads as `u64::MAX`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SalesSummaryResponse {
    pub orders: u64,
    pub cancelled: u64,
    pub units: u64,
    pub revenue: u64,
    /// Units of these orders received back by returns.
    pub returned_units: u64,
    /// Refunded on these orders, minor units.
    pub refunds: u64,
    /// `revenue - refunds`, never below zero.
    pub net_revenue: u64,
    pub top_skus: Vec<TopSkuResponse>,
    pub by_hour: Vec<HourResponse>,
}

/// One page of a list: `next` is the cursor to pass as `after` for the next page, or null on
/// the last page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// One shard as `GET /v1/ops/shards` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShardResponse {
    pub id: u16,
    /// `running`, `restarting` or `failed`.
    pub state: String,
    pub restarts: u64,
    pub mailbox_depth: u64,
    pub last_seq: u64,
    pub orders: u64,
    pub skus: u64,
}

/// Answer of `POST /v1/ops/shards/{id}/restart` (202): the restart runs in the background.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShardRestartResponse {
    pub id: u16,
    /// Always `restarting`; poll `GET /v1/ops/shards` for the outcome.
    pub state: String,
}

/// Answer of `POST /v1/ops/keys/rotate` (200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRotationResponse {
    /// Id of the new master key: the first 8 bytes of its SHA-256, 16 hex digits.
    pub master_key_id: String,
    /// Id of the new data key (hex), which seals new values from now on.
    pub data_key_id: String,
    /// Data keys that existed before and are now wrapped under the new master key.
    pub rewrapped: u64,
}

/// `POST /v1/keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// One of the eight roles; kept as text so that the server can name `role` when it is not.
    #[schema(value_type = RoleName, inline)]
    pub role: String,
    /// Required for (and only for) the `customer` role: an existing customer's id (another
    /// is 422 `unknown_customer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^cus_[0-9A-Fa-f]{16}$")]
    pub customer_id: Option<String>,
    /// The person or system holding the key, 1 to 100 characters, not blank, no control
    /// characters; the creating key's owner when absent. Four-eyes approval compares owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub owner: Option<String>,
}

/// Answer of `GET /v1/whoami`: the calling key and what its role may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoamiResponse {
    pub key_id: String,
    pub role: String,
    /// Who holds the key (`bootstrap` for the first admin key).
    pub owner: String,
    /// A `customer` key's customer; null for every other role.
    pub customer_id: Option<String>,
    /// Every route the role may call, as `METHOD /path/template` (a `customer` key: on its
    /// own customer and orders only). The server still checks every request.
    pub may: Vec<String>,
}

/// An API key as `GET /v1/keys` lists it: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyResponse {
    pub id: String,
    pub name: String,
    pub role: String,
    /// Who holds the key (`bootstrap` for the first admin key).
    pub owner: String,
    /// The id of the key that created it (null for the first admin key).
    pub created_by: Option<String>,
    pub customer_id: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// Answer of `POST /v1/keys` (201): the only time the secret is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKeyResponse {
    pub id: String,
    pub name: String,
    pub role: String,
    pub owner: String,
    pub created_by: Option<String>,
    pub customer_id: Option<String>,
    pub secret: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// Query of `GET /v1/keys`, kept as text like [`ListOrdersQuery`].
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page (`<created_at>.<key id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^[+-]?0*[0-9]{1,18}[.]")]
    pub after: Option<String>,
}

/// One entry of the audit trail. `hash` chains it to the entry before it in the same `chain`:
/// the hex SHA-256 of that entry's `hash` (64 zeros for a chain's first entry) followed by the
/// canonical serialization of this entry's other fields (see the gateway's `audit` module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Global and ascending across all chains; a number may be skipped (taken by a write that
    /// failed).
    pub seq: u64,
    /// The hash chain holding the entry: `control` (keys, changes, operations, refusals) or
    /// `shard-N` (the mutations shard N applied, written with its log).
    #[serde(default = "control_chain")]
    pub chain: String,
    /// RFC 3339 UTC; never decreases within a chain.
    pub at: String,
    /// The API key id that acted, or `anonymous`.
    pub actor: String,
    /// What happened, e.g. `order.place`, `key.revoke`, `auth.unauthorized`.
    pub action: String,
    /// What it happened to: an id, a SKU, or `METHOD /path` for refusals.
    pub target: String,
    /// A short note without personal data.
    pub detail: String,
    pub hash: String,
}

fn control_chain() -> String {
    "control".into()
}

/// One incident as `GET /v1/ops/incidents` shows it: a fault, its cause, and what the server did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentResponse {
    /// `inc_` and 16 hex digits; grows with time.
    pub id: String,
    /// RFC 3339 UTC: when the fault was found.
    pub at: String,
    /// What failed: `shard/3`, `inspection/disk`, `backup`, ...
    pub component: String,
    /// `panic`, `stuck`, `quarantine`, `escalation`, `restart`, `check_failed`, ...
    pub kind: String,
    /// The cause as found.
    pub detail: String,
    /// What the server did about it.
    pub action: String,
    /// RFC 3339 UTC: when the repair completed; null while open or when nothing heals it.
    pub recovered_at: Option<String>,
}

/// Answer of `GET /v1/ops/inspection` (200, whatever the outcome: the report is the answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InspectionResponse {
    /// The worst status of any check: `pass`, `warn` or `fail`.
    pub overall: String,
    /// Every check, in a fixed order: `cpu`, `memory`, `disk`, `storage`, `listeners`,
    /// `shards`, `backup_age`, `backup_verified`.
    pub checks: Vec<InspectionCheck>,
    /// RFC 3339 UTC: when this inspection ran.
    pub at: String,
    /// How long it took, in milliseconds (the CPU check measures over a window).
    pub duration_ms: u64,
    /// The newest scheduled inspection; null before the first one.
    pub last_scheduled: Option<ScheduledInspection>,
}

/// One check of an inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InspectionCheck {
    /// `cpu`, `memory`, `disk`, `storage`, `listeners`, `shards`, `backup_age`,
    /// `backup_verified`.
    pub name: String,
    /// `pass`, `warn` or `fail`.
    pub status: String,
    /// What was read and the thresholds it was judged against, in words.
    pub detail: String,
    /// The check's main reading (its unit is named in `detail`), or null when there is none.
    pub value: Option<f64>,
}

/// Summary of the newest scheduled inspection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduledInspection {
    /// RFC 3339 UTC: when it ran.
    pub at: String,
    /// `pass`, `warn` or `fail`.
    pub overall: String,
    /// Names of the checks that failed (each wrote or kept open an incident).
    pub failed: Vec<String>,
    /// Names of the checks that warned.
    pub warned: Vec<String>,
}

/// Query of `GET /v1/ops/incidents`.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    /// RFC 3339: the first incidents found at or after this time. Without it, the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// A quarantined command as `GET /v1/ops/quarantine` lists it and
/// `DELETE /v1/ops/quarantine/{fingerprint}` answers it: a command that made a shard panic
/// twice and is refused with `422 quarantined` until an operator lifts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineResponse {
    /// The command's fingerprint: 16 lowercase hex digits, as the `quarantine` incident and
    /// the `422 quarantined` problem name it.
    pub fingerprint: String,
    /// The command's kind: `adjust_stock`, `place_order`, `create_customer`, ...
    pub command: String,
    /// The panic message of its second panic.
    pub message: String,
    /// RFC 3339 UTC: when it was quarantined.
    pub quarantined_at: String,
}

/// Query of `GET /v1/ops/quarantine`, kept as text like [`ListOrdersQuery`].
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QuarantineQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page: the fingerprint of a quarantined command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^[0-9a-f]{16}$")]
    pub after: Option<String>,
}

/// Query of `GET /v1/audit`, kept as text like [`ListOrdersQuery`].
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339: entries at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// A key id, or `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page (a `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^[+]?[0-9]{1,19}$")]
    pub after: Option<String>,
}

/// Answer of `GET /v1/audit/verify`: the chain recomputed over everything stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerifyResponse {
    pub ok: bool,
    /// Entries read from storage.
    pub entries: u64,
    /// The first entry that is edited, missing or out of place; null when `ok`.
    pub first_bad_seq: Option<u64>,
    pub detail: String,
    /// `hash` of the newest entry (null when there is none): write it down elsewhere to detect
    /// a rewrite of the whole chain later.
    pub last_hash: Option<String>,
    /// Each chain's outcome (`control`, then `shard-0`, `shard-1`, ...).
    #[serde(default)]
    pub chains: Vec<AuditChainReport>,
}

/// One chain's part of `GET /v1/audit/verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditChainReport {
    pub chain: String,
    pub ok: bool,
    pub entries: u64,
    pub first_bad_seq: Option<u64>,
    /// `hash` of the chain's newest entry (null when it has none).
    pub last_hash: Option<String>,
    /// The last entry `audit.retention_s` moved out of the live store (null: none was): the
    /// chain's first kept entry chains from `retained_after_hash`. The removed entries are in
    /// the backups taken before.
    #[serde(default)]
    pub retained_after_seq: Option<u64>,
    #[serde(default)]
    pub retained_after_hash: Option<String>,
}

/// Answer of `/livez` and of a ready `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `live` or `ready`.
    pub status: String,
}

/// One line of the answer of `POST /v1/orders/bulk` (NDJSON): the outcome of input line
/// `line` (numbered from 1), with the status and order or problem the single call would give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    pub line: usize,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `/problems/<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable error code, e.g. `invalid_request`.
    pub code: String,
    /// For `invalid_request`: the offending field, e.g. `lines[2].qty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// For `insufficient_stock`: every short SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skus: Option<Vec<String>>,
    /// For `unavailable` from `/readyz`: why the server is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_reject_unknown_fields() {
        let err = serde_json::from_str::<StockAdjustmentRequest>(
            r#"{"delta": 1, "reason": "x", "admin": true}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `admin`"));
        let err = serde_json::from_str::<PlaceOrderRequest>(
            r#"{"customer_id": "c", "lines": [{"sku": "A", "qty": 1, "unit_price": 1, "x": 1}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"));
    }

    #[test]
    fn requests_must_be_objects_not_field_sequences() {
        assert!(serde_json::from_str::<StockAdjustmentRequest>(r#"[1, "r"]"#).is_ok());
        let err =
            serde_json::from_str::<ObjectOnly<StockAdjustmentRequest>>(r#"[1, "r"]"#).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        let ok: ObjectOnly<StockAdjustmentRequest> =
            serde_json::from_str(r#"{"delta": 1, "reason": "r"}"#).unwrap();
        assert_eq!(ok.0.delta, 1);
        let err = serde_json::from_str::<PlaceOrderRequest>(
            r#"{"customer_id": "c", "lines": [["A", 1, 1]]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let c: CreateCustomerRequest =
            serde_json::from_str(r#"{"name": "A", "email": "a@b.c", "phone": null}"#).unwrap();
        assert_eq!(c.phone, None);
        assert_eq!(c.address, None);
        let c: CancelOrderRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CancelOrderRequest::default());
    }

    #[test]
    fn problem_renders_type_and_omits_absent_extensions() {
        let p = Problem {
            problem_type: "/problems/not_found".into(),
            title: "Not found".into(),
            status: 404,
            detail: "no such order".into(),
            code: "not_found".into(),
            param: None,
            skus: None,
            reasons: None,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "/problems/not_found", "title": "Not found", "status": 404,
                "detail": "no such order", "code": "not_found"
            })
        );
    }

    #[test]
    fn placement_response_has_no_history_member() {
        let o = OrderResponse {
            id: "ord_1".into(),
            customer_id: "cus_1".into(),
            status: "confirmed".into(),
            lines: vec![],
            total: 0,
            shipping_address: None,
            note: None,
            created_at: "t".into(),
            updated_at: "t".into(),
            shipments: None,
            history: None,
            customer_erased: false,
            returns: None,
            refunds: None,
            refunded: None,
        };
        let v = serde_json::to_value(&o).unwrap();
        assert!(v.get("customer_erased").is_none());
        assert!(v.get("history").is_none());
        assert!(v.get("shipments").is_none());
        assert!(v.get("returns").is_none());
        assert!(v.get("refunded").is_none());
        assert!(v.get("note").unwrap().is_null());
    }
}

/// One shard as a backup holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupShardResponse {
    pub id: u16,
    /// The last sequence number in the backup.
    pub seq: u64,
    /// The shard's durable sequence when the backup started: every order acknowledged before
    /// then is in the backup (`seq >= acknowledged_seq`).
    pub acknowledged_seq: u64,
    /// The rebuilt state's digest, 16 hex digits.
    pub state_digest: String,
    /// The chained digest of the shard's log up to `seq`, 16 hex digits.
    pub log_digest: String,
    pub orders: u64,
}

/// One backup (`POST /v1/ops/backups` answers 201 with it; `GET /v1/ops/backups` lists them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupResponse {
    /// `bak_…`.
    pub id: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Bytes of every file the backup needs (shared files included).
    pub size_bytes: u64,
    /// Bytes this backup added to the backup directory (it is incremental).
    pub new_bytes: u64,
    /// `copied`, `pending` (the upload runs, or waits for a retry) or `failed`.
    pub offsite: String,
    /// Why the off-site copy failed, when it did.
    pub offsite_detail: Option<String>,
    /// null until a restore drill ran; then its result.
    pub verified: Option<bool>,
    /// RFC 3339 UTC of the newest drill.
    pub verified_at: Option<String>,
    /// What the newest drill checked or found.
    pub verify_detail: Option<String>,
    /// How long taking the backup took, in milliseconds.
    pub duration_ms: u64,
    /// Number of files.
    pub files: u64,
    pub shards: Vec<BackupShardResponse>,
}

/// Answer of `POST /v1/ops/backups/{id}/verify`: a restore drill's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupVerifyResponse {
    pub id: String,
    pub verified: bool,
    /// What was checked, or the problems found.
    pub detail: String,
    /// Where the drill restored from: `local` or `offsite`.
    pub source: String,
    pub duration_ms: u64,
}

/// Query of `GET /v1/ops/backups`: newest first.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BackupsQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page: the id of a listed backup (`bak_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^bak_")]
    pub after: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Change management: live settings and change requests.

/// Answer of `GET /v1/ops/config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigResponse {
    pub items: Vec<SettingResponse>,
}

/// One setting of the registry with its effective value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingResponse {
    /// `section.key`, as in `config/orderd.toml`.
    pub setting: String,
    /// The value in effect now.
    pub value: serde_json::Value,
    /// `integer` or `string`.
    #[serde(rename = "type")]
    pub kind: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// `low`, `medium` or `high`.
    pub risk: String,
    /// False when a new value takes effect only at the next start.
    pub live: bool,
    pub description: String,
    /// The change that set the value in effect; null when it comes from the configuration.
    pub change_id: Option<String>,
    /// For a setting that needs a restart: the value an applied change set, in effect from the
    /// next start.
    pub pending_value: Option<serde_json::Value>,
}

/// `POST /v1/ops/changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// A setting of `GET /v1/ops/config`.
    pub setting: String,
    /// The new value, of the setting's type and within its bounds, and not the value in
    /// effect.
    pub value: serde_json::Value,
    /// Why: 1–1000 characters once trimmed, not blank.
    #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
    pub reason: String,
    /// How to undo it by hand if the automatic rollback is not enough (up to 1000 characters
    /// once trimmed).
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub rollback_plan: Option<String>,
    /// Seconds the server watches the change after it is applied (default
    /// `changes.watch_window_s`); 1 to `changes.watch_window_max_s` (at most 3600).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    pub watch_window_s: Option<u64>,
}

/// Request statistics of a watch window (requests outside `/v1/ops`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowStatsResponse {
    pub requests: u64,
    /// Answers 5xx or 429.
    pub errors: u64,
    /// `errors / requests`, 0 when no request.
    pub error_rate: f64,
    /// p99 latency in milliseconds (to about 20 %), 0 when no request.
    pub p99_ms: f64,
}

/// The bounds a change's watch holds it to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchBoundsResponse {
    pub error_rate_increase_max_percent: f64,
    pub p99_increase_max_percent: u64,
    pub p99_increase_min_ms: u64,
    pub min_requests: u64,
}

/// The automatic assessment of a change request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssessmentResponse {
    /// `setting: old → new`.
    pub summary: String,
    pub risk: String,
    pub live: bool,
    pub restart_required: bool,
    /// What the setting affects.
    pub touches: String,
    pub watch_window_s: u64,
    pub bounds: WatchBoundsResponse,
}

/// The watch of an applied change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchResponse {
    /// Null while a change that needs a restart waits for it.
    pub started_at: Option<String>,
    pub until: Option<String>,
    /// The window of the same length before the change was applied.
    pub baseline: WindowStatsResponse,
    /// Since the watch started; null before the first judgement.
    pub observed: Option<WindowStatsResponse>,
    /// `awaiting_restart`, `watching`, `passed`, `unjudged` (the window ended with fewer than
    /// `min_requests` requests), `breached` or `ended` (rolled back by hand).
    pub verdict: String,
}

/// One step of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeStepResponse {
    /// `requested`, `approved`, `applied`, `watch_started`, `watch_resumed`, `closed`,
    /// `rolled_back` or `auto_rolled_back`.
    pub step: String,
    /// The key id, or `system` for the server's own steps.
    pub actor: String,
    pub at: String,
    pub detail: String,
}

/// A change request and its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeResponse {
    pub id: String,
    /// `pending`, `approved`, `applied`, `closed`, `rolled_back` or `auto_rolled_back`.
    pub status: String,
    pub setting: String,
    pub old_value: serde_json::Value,
    pub value: serde_json::Value,
    pub risk: String,
    pub live: bool,
    pub reason: String,
    pub rollback_plan: Option<String>,
    pub requested_by: String,
    pub requested_at: String,
    pub assessment: AssessmentResponse,
    pub watch: Option<WatchResponse>,
    /// The incident written by an automatic rollback.
    pub incident_id: Option<String>,
    pub steps: Vec<ChangeStepResponse>,
}

/// Query of `GET /v1/ops/changes`: newest first.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page: the id of a listed change (`chg_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^chg_[0-9]+$")]
    pub after: Option<String>,
}

/// One public event (API.md, Commerce: events), as pages, the stream and webhooks send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventResponse {
    /// `evt_` and 16 hex digits: also the cursor (`after`, the stream's `id:`).
    pub id: String,
    /// `order.confirmed`, `order.cancelled`, `order.shipped`, `order.delivered`,
    /// `order.returned`, `order.refunded`, `shipment.updated`, `return.received`, `stock.low`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 UTC: when the change was applied.
    pub at: String,
    /// What changed: ids, amounts and statuses of the type (docs/API.md, "Events").
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Query of `GET /v1/events`: oldest first from a cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// An event id (`evt_…`, a previous page's `next`): the page starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^evt_[0-9a-f]{16}$")]
    pub after: Option<String>,
    /// Comma-separated event types; only those are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Query of `GET /v1/events/stream`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventStreamQuery {
    /// Comma-separated event types; only those are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
}

/// `POST /v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// `http://` or `https://`, at most 2048 characters; loopback and private addresses are
    /// refused unless `webhooks.allow_private`.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// The event types to deliver (1–9 of them, each once).
    #[schema(min_items = 1, max_items = 9)]
    pub types: Vec<String>,
}

/// A webhook endpoint. `secret` only in the answer to its creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookResponse {
    /// `whk_` and 16 hex digits.
    pub id: String,
    pub url: String,
    pub types: Vec<String>,
    /// The signing secret (`whsec_…`): shown once, when the endpoint is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// One event's delivery to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryResponse {
    pub event_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// The HTTP status of the last attempt; null before the first or when no answer came.
    pub last_status_code: Option<u16>,
    /// RFC 3339 UTC: when the next attempt is due; null once delivered or failed.
    pub next_attempt_at: Option<String>,
}

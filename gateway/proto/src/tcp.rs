//! The message layer of orderd's binary TCP protocol (`docs/PROTOCOL.md`): the opcodes and the
//! postcard bodies they carry, on top of the frames of [`crate::frame`]. Pure types and
//! functions over bytes, no I/O.
//!
//! These are separate types from the JSON ones on purpose: postcard is not self-describing, so
//! every field is always encoded in order (no `skip_serializing_if`, no `deserialize_any`), and
//! times are Unix microseconds instead of RFC 3339 text.
//!
//! A reply carries the request's id and opcode `request | REPLY`, or [`op::ERROR`] with an
//! [`ErrorBody`]. Frame id 0 with [`op::ERROR`] is about the connection itself (a frame that
//! cannot be read, the idle timeout, shutdown): the server closes the connection after it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, HEADER_AFTER_LENGTH};

/// Opcodes. Requests are below [`op::REPLY`]; a reply is the request's opcode with
/// [`op::REPLY`] set, or [`op::ERROR`].
pub mod op {
    /// [`super::Auth`] → [`super::AuthOk`]. Must be the connection's first frame.
    pub const AUTH: u8 = 0x01;
    /// Empty → empty: a liveness check that needs no role.
    pub const PING: u8 = 0x02;
    /// [`super::PlaceOrder`] → [`super::Order`] (`POST /v1/orders`).
    pub const PLACE_ORDER: u8 = 0x10;
    /// [`super::OrderRef`] → [`super::Order`] (`GET /v1/orders/{id}`).
    pub const GET_ORDER: u8 = 0x11;
    /// [`super::CancelOrder`] → [`super::Order`] (`POST /v1/orders/{id}/cancel`).
    pub const CANCEL_ORDER: u8 = 0x12;
    /// [`super::ListOrders`] → [`super::OrderPage`] (`GET /v1/orders`).
    pub const LIST_ORDERS: u8 = 0x13;
    /// [`super::CreateShipment`] → [`super::Shipment`] (`POST /v1/orders/{id}/shipments`).
    pub const CREATE_SHIPMENT: u8 = 0x14;
    /// [`super::PlaceOrders`] → [`super::PlaceOrdersReply`]: many `PLACE_ORDER`s in one frame,
    /// an outcome for each (`POST /v1/orders`, once per order).
    pub const PLACE_ORDERS: u8 = 0x15;
    /// [`super::SkuRef`] → [`super::Stock`] (`GET /v1/stock/{sku}`).
    pub const GET_STOCK: u8 = 0x20;
    /// [`super::AdjustStock`] → [`super::Stock`] (`POST /v1/stock/{sku}/adjustments`).
    pub const ADJUST_STOCK: u8 = 0x21;
    /// [`super::CreateCustomer`] → [`super::Customer`] (`POST /v1/customers`).
    pub const CREATE_CUSTOMER: u8 = 0x30;
    /// [`super::CustomerRef`] → [`super::Customer`] (`GET /v1/customers/{id}`).
    pub const GET_CUSTOMER: u8 = 0x31;
    /// Set on every successful reply's opcode.
    pub const REPLY: u8 = 0x80;
    /// An error reply: [`super::ErrorBody`].
    pub const ERROR: u8 = 0xFF;

    /// The name of a request opcode (for logs and metrics labels), `None` if unknown.
    pub fn name(opcode: u8) -> Option<&'static str> {
        Some(match opcode {
            AUTH => "auth",
            PING => "ping",
            PLACE_ORDER => "place_order",
            GET_ORDER => "get_order",
            CANCEL_ORDER => "cancel_order",
            LIST_ORDERS => "list_orders",
            CREATE_SHIPMENT => "create_shipment",
            PLACE_ORDERS => "place_orders",
            GET_STOCK => "get_stock",
            ADJUST_STOCK => "adjust_stock",
            CREATE_CUSTOMER => "create_customer",
            GET_CUSTOMER => "get_customer",
            _ => return None,
        })
    }
}

/// The request id of frames about the connection rather than one request.
pub const CONNECTION_REQUEST_ID: u64 = 0;

/// Encodes a body with postcard.
pub fn encode_body<T: Serialize>(body: &T) -> Vec<u8> {
    postcard::to_stdvec(body).expect("postcard encodes into a Vec without failing")
}

/// Decodes a body; every byte must be used (trailing bytes are an error, as unknown JSON
/// fields are).
pub fn decode_body<T: DeserializeOwned>(payload: &[u8]) -> Result<T, BodyError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|e| BodyError(e.to_string()))?;
    if !rest.is_empty() {
        return Err(BodyError(format!(
            "{} bytes after the end of the body",
            rest.len()
        )));
    }
    Ok(value)
}

/// [`decode_body`] for a body whose last field is `idempotency_key` (every mutation's): a body
/// without that field, as clients built before it send, reads as having no key.
pub fn decode_keyed_body<T: DeserializeOwned>(payload: &[u8]) -> Result<T, BodyError> {
    decode_body(payload).or_else(|error| {
        let mut keyless = Vec::with_capacity(payload.len() + 1);
        keyless.extend_from_slice(payload);
        keyless.push(0); // `None`
        decode_body(&keyless).map_err(|_| error)
    })
}

/// A payload that is not the opcode's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "body does not decode: {}", self.0)
    }
}

impl std::error::Error for BodyError {}

/// A frame carrying `body`.
pub fn frame<T: Serialize>(opcode: u8, request_id: u64, body: &T) -> Frame {
    Frame {
        opcode,
        request_id,
        payload: encode_body(body),
    }
}

/// `AUTH`: the API key's secret, as in `Authorization: Bearer <secret>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    pub api_key: String,
}

/// The reply to `AUTH`: who the connection is, and the limits it must keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthOk {
    pub key_id: String,
    pub role: String,
    /// Requests in flight on this connection above this are refused (`rate_limited`).
    pub max_in_flight: u32,
    /// The largest `length` a frame may have.
    pub max_frame_bytes: u32,
}

/// One line of [`PlaceOrder`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    /// 1 to 10^6, as over HTTP.
    pub qty: u32,
    /// Minor currency units, at most 10^12; the order's total at most 10^15, as over HTTP.
    pub unit_price: u64,
}

/// `PLACE_ORDER`: the body of `POST /v1/orders`, with the `Idempotency-Key` inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub lines: Vec<Line>,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    /// 1–255 visible ASCII characters; a repeat with the same body bytes returns the first
    /// answer.
    pub idempotency_key: Option<String>,
}

/// `PLACE_ORDERS`: many placements in one frame, each a whole [`PlaceOrder`] with its own
/// idempotency key. At most `tcp.batch_orders_max` orders, and at most
/// [`place_orders_fit`]`(max_frame_bytes)` so that the reply fits one frame; none is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrders {
    pub orders: Vec<PlaceOrder>,
}

/// A placed order in a [`PlaceOrdersReply`]: what the client does not already know (the full
/// order is `GET_ORDER`'s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub id: String,
    /// `confirmed` for a new order; an idempotent repeat tells the order's status now.
    pub status: String,
    pub total: u64,
    pub created_at_us: i64,
}

/// What became of one order of a `PLACE_ORDERS` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaceOutcome {
    /// Variant 0: placed (or, for a repeat of an idempotency key, placed before).
    Placed(PlacedOrder),
    /// Variant 1: refused with the error a `PLACE_ORDER` of the same order would get.
    Error(ErrorBody),
}

/// The reply to `PLACE_ORDERS`: one outcome per order, in the request's order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrdersReply {
    pub outcomes: Vec<PlaceOutcome>,
}

/// The most bytes one outcome of a [`PlaceOrdersReply`] takes once the server has compacted
/// its errors ([`PlaceOrdersReply::compact_errors`]): a placed order is at most 60 (a 20
/// character id, the longest status, ten-byte varints), a compacted error 7 plus its code.
pub const PLACE_OUTCOME_BYTES_MAX: usize = 64;

/// The most orders a `PLACE_ORDERS` frame may carry when frames are at most `max_frame_bytes`
/// long, so that its reply always fits one frame: 1,023 for 64 KiB.
pub fn place_orders_fit(max_frame_bytes: usize) -> usize {
    // The header after the length field, and the list's length (a varint of at most 5 bytes).
    max_frame_bytes.saturating_sub(HEADER_AFTER_LENGTH + 5) / PLACE_OUTCOME_BYTES_MAX
}

impl PlaceOrdersReply {
    /// Drops everything of the error outcomes but their `status` and `code` (`detail` becomes
    /// empty, `param` none, `skus` empty): what the server sends when the whole reply would
    /// not fit one frame otherwise.
    pub fn compact_errors(&mut self) {
        for outcome in &mut self.outcomes {
            if let PlaceOutcome::Error(body) = outcome {
                body.detail.clear();
                body.param = None;
                body.skus.clear();
            }
        }
    }
}

/// Why a `PLACE_ORDERS` body is refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceOrdersError {
    /// It does not decode, or has trailing bytes.
    Body(BodyError),
    /// No order.
    Empty,
    /// More orders than `max` (refused on the count, before any order is decoded).
    TooMany { count: u64, max: usize },
}

/// Decodes a `PLACE_ORDERS` body into its orders, each with the exact bytes it was encoded as
/// inside the body: the payload a `PLACE_ORDER` of that order carries, whose hash identifies it
/// for idempotency. The count is checked against `max` before any order is decoded.
pub fn split_place_orders(
    payload: &[u8],
    max: usize,
) -> Result<Vec<(PlaceOrder, &[u8])>, PlaceOrdersError> {
    // A list is its length as a varint, then the items (`PlaceOrders` is its one field).
    let (count, mut rest) = postcard::take_from_bytes::<u64>(payload)
        .map_err(|e| PlaceOrdersError::Body(BodyError(e.to_string())))?;
    if count == 0 {
        return Err(PlaceOrdersError::Empty);
    }
    if count > max as u64 {
        return Err(PlaceOrdersError::TooMany { count, max });
    }
    let mut orders = Vec::with_capacity(count as usize);
    for index in 0..count {
        let (order, after) = postcard::take_from_bytes::<PlaceOrder>(rest)
            .map_err(|e| PlaceOrdersError::Body(BodyError(format!("orders[{index}]: {e}"))))?;
        orders.push((order, &rest[..rest.len() - after.len()]));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(PlaceOrdersError::Body(BodyError(format!(
            "{} bytes after the end of the body",
            rest.len()
        ))));
    }
    Ok(orders)
}

/// `GET_ORDER`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    pub id: String,
}

/// `CANCEL_ORDER`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub id: String,
    pub reason: Option<String>,
    /// 1–255 visible ASCII characters; a repeat with the same body bytes returns the first
    /// answer and applies nothing (`docs/API.md`, "Idempotency keys and safe retries").
    pub idempotency_key: Option<String>,
}

/// `LIST_ORDERS`: the query of `GET /v1/orders`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOrders {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    pub unit_price: u64,
    pub shipped_qty: u32,
}

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStep {
    pub at_us: i64,
    pub status: String,
    pub actor: String,
}

/// An order. `shipments` and `history` are empty in the reply to a placement (as the HTTP
/// reply leaves them out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub lines: Vec<OrderLine>,
    pub total: u64,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub shipments: Vec<String>,
    pub history: Vec<HistoryStep>,
}

/// The reply to `LIST_ORDERS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next: Option<String>,
}

/// One line of [`CreateShipment`] and of a shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    pub sku: String,
    pub qty: u32,
}

/// `CREATE_SHIPMENT`: without lines, everything not yet shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateShipment {
    pub order_id: String,
    pub carrier: String,
    pub lines: Option<Vec<ShipmentLine>>,
    /// 1–255 visible ASCII characters; a repeat with the same body bytes returns the first
    /// answer and applies nothing (`docs/API.md`, "Idempotency keys and safe retries").
    pub idempotency_key: Option<String>,
}

/// One step of a shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentEvent {
    pub at_us: i64,
    pub status: String,
    pub note: Option<String>,
}

/// A shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub id: String,
    pub order_id: String,
    pub carrier: String,
    pub tracking_number: String,
    pub status: String,
    pub lines: Vec<ShipmentLine>,
    pub events: Vec<ShipmentEvent>,
}

/// `GET_STOCK`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuRef {
    pub sku: String,
}

/// `ADJUST_STOCK`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustStock {
    pub sku: String,
    /// Not zero, at most 10^12 either way, as over HTTP.
    pub delta: i64,
    pub reason: String,
    /// 1–255 visible ASCII characters; a repeat with the same body bytes returns the first
    /// answer and applies nothing (`docs/API.md`, "Idempotency keys and safe retries").
    pub idempotency_key: Option<String>,
}

/// A stock record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub sku: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
}

/// `CREATE_CUSTOMER`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCustomer {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    /// 1–255 visible ASCII characters; a repeat with the same body bytes returns the first
    /// answer and applies nothing (`docs/API.md`, "Idempotency keys and safe retries").
    pub idempotency_key: Option<String>,
}

/// `GET_CUSTOMER`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRef {
    pub id: String,
}

/// A customer (masked for auditors, as over HTTP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub created_at_us: i64,
}

/// The body of an [`op::ERROR`] frame: the fields of the HTTP problem document, with the same
/// codes and statuses (API.md), plus the codes of the connection layer (`docs/PROTOCOL.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The HTTP status the same error has over HTTP.
    pub status: u16,
    /// Machine-readable, e.g. `insufficient_stock`.
    pub code: String,
    pub detail: String,
    /// For `invalid_request`, `price_mismatch` and `unknown_sku`: the offending field.
    pub param: Option<String>,
    /// For `insufficient_stock`: every short SKU.
    pub skus: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_refuse_trailing_bytes() {
        let place = PlaceOrder {
            customer_id: "cus_1".into(),
            lines: vec![Line {
                sku: "A-1".into(),
                qty: 2,
                unit_price: 1999,
            }],
            shipping_address: None,
            note: Some("gift".into()),
            idempotency_key: Some("k1".into()),
        };
        let bytes = encode_body(&place);
        assert_eq!(decode_body::<PlaceOrder>(&bytes), Ok(place));
        let mut longer = bytes.clone();
        longer.push(0);
        let error = decode_body::<PlaceOrder>(&longer).unwrap_err();
        assert!(error.0.contains("1 bytes after"), "{error}");
        assert!(decode_body::<PlaceOrder>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_documented_encoding_of_a_place_order() {
        // docs/PROTOCOL.md shows these bytes; keep the two in step.
        let place = PlaceOrder {
            customer_id: "c".into(),
            lines: vec![Line {
                sku: "S".into(),
                qty: 1,
                unit_price: 300,
            }],
            shipping_address: None,
            note: None,
            idempotency_key: None,
        };
        assert_eq!(
            encode_body(&place),
            vec![0x01, b'c', 0x01, 0x01, b'S', 0x01, 0xac, 0x02, 0x00, 0x00, 0x00]
        );
    }

    #[test]
    fn keyed_bodies_round_trip_and_read_without_their_key() {
        let key = Some("retry-1".to_string());
        let adjust = AdjustStock {
            sku: "A-1".into(),
            delta: -3,
            reason: "count".into(),
            idempotency_key: key.clone(),
        };
        let customer = CreateCustomer {
            name: "Jo".into(),
            email: "jo@example.com".into(),
            phone: None,
            address: Some("1 Main St".into()),
            idempotency_key: key.clone(),
        };
        let shipment = CreateShipment {
            order_id: "ord_1".into(),
            carrier: "DHL".into(),
            lines: Some(vec![ShipmentLine {
                sku: "A-1".into(),
                qty: 2,
            }]),
            idempotency_key: key.clone(),
        };
        let cancel = CancelOrder {
            id: "ord_1".into(),
            reason: None,
            idempotency_key: key,
        };
        fn check<T>(body: T, without_key: T)
        where
            T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            let bytes = encode_body(&body);
            assert_eq!(decode_body::<T>(&bytes).as_ref(), Ok(&body));
            assert_eq!(decode_keyed_body::<T>(&bytes).as_ref(), Ok(&body));
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_keyed_body::<T>(&longer).is_err());
            // A body from before the key field: one byte (`None`) shorter.
            let mut old = encode_body(&without_key);
            assert_eq!(old.pop(), Some(0));
            assert!(decode_body::<T>(&old).is_err());
            assert_eq!(decode_keyed_body::<T>(&old), Ok(without_key));
        }
        check(
            adjust.clone(),
            AdjustStock {
                idempotency_key: None,
                ..adjust
            },
        );
        check(
            customer.clone(),
            CreateCustomer {
                idempotency_key: None,
                ..customer
            },
        );
        check(
            shipment.clone(),
            CreateShipment {
                idempotency_key: None,
                ..shipment
            },
        );
        check(
            cancel.clone(),
            CancelOrder {
                idempotency_key: None,
                ..cancel
            },
        );
    }

    #[test]
    fn the_documented_encoding_of_an_adjust_stock() {
        // docs/PROTOCOL.md shows these bytes; keep the two in step.
        let adjust = AdjustStock {
            sku: "S".into(),
            delta: -3,
            reason: "r".into(),
            idempotency_key: Some("k".into()),
        };
        assert_eq!(
            encode_body(&adjust),
            vec![0x01, b'S', 0x05, 0x01, b'r', 0x01, 0x01, b'k']
        );
    }

    #[test]
    fn opcodes_have_names_and_replies_do_not_clash_with_requests() {
        for code in 0u8..op::REPLY {
            if let Some(name) = op::name(code) {
                assert!(!name.is_empty());
                assert!(op::name(code | op::REPLY).is_none());
            }
        }
        assert_eq!(op::name(op::ERROR), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = decode_body::<PlaceOrder>(&bytes);
            let _ = decode_body::<ListOrders>(&bytes);
            let _ = decode_body::<CreateShipment>(&bytes);
            let _ = decode_keyed_body::<AdjustStock>(&bytes);
            let _ = decode_keyed_body::<CreateCustomer>(&bytes);
            let _ = decode_keyed_body::<CancelOrder>(&bytes);
            let _ = decode_body::<Order>(&bytes);
            let _ = decode_body::<ErrorBody>(&bytes);
            let _ = decode_body::<PlaceOrdersReply>(&bytes);
            let _ = split_place_orders(&bytes, 8189);
        }
    }

    fn flash_order(customer: &str, key: Option<&str>) -> PlaceOrder {
        PlaceOrder {
            customer_id: customer.into(),
            lines: vec![Line {
                sku: "FLASH-1".into(),
                qty: 1,
                unit_price: 1999,
            }],
            shipping_address: None,
            note: None,
            idempotency_key: key.map(str::to_string),
        }
    }

    #[test]
    fn place_orders_bodies_round_trip_and_split_into_each_order_s_own_bytes() {
        let batch = PlaceOrders {
            orders: vec![
                flash_order("cus_0000000000000001", Some("k-1")),
                PlaceOrder {
                    note: Some("gift".into()),
                    shipping_address: Some("1 Main St".into()),
                    ..flash_order("cus_0000000000000002", None)
                },
                flash_order("cus_0000000000000003", Some("k-3")),
            ],
        };
        let bytes = encode_body(&batch);
        assert_eq!(decode_body::<PlaceOrders>(&bytes).as_ref(), Ok(&batch));
        // A slice of orders encodes the same (what `orderd-client` sends without a copy).
        assert_eq!(encode_body(&batch.orders.as_slice()), bytes);
        let split = split_place_orders(&bytes, 3).unwrap();
        assert_eq!(split.len(), 3);
        for ((order, own), wanted) in split.iter().zip(&batch.orders) {
            assert_eq!(order, wanted);
            // The bytes a PLACE_ORDER of the same order carries: the same idempotency hash.
            assert_eq!(*own, encode_body(wanted).as_slice());
        }
        // The count is checked first, whatever follows it.
        assert_eq!(
            split_place_orders(&bytes, 2),
            Err(PlaceOrdersError::TooMany { count: 3, max: 2 })
        );
        let huge = encode_body(&1_000_000_000u64);
        assert_eq!(
            split_place_orders(&huge, 8189),
            Err(PlaceOrdersError::TooMany {
                count: 1_000_000_000,
                max: 8189
            })
        );
        assert_eq!(
            split_place_orders(&encode_body(&PlaceOrders::default()), 10),
            Err(PlaceOrdersError::Empty)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            split_place_orders(&longer, 10),
            Err(PlaceOrdersError::Body(e)) if e.0.contains("1 bytes after")
        ));
        assert!(decode_body::<PlaceOrders>(&longer).is_err());
        match split_place_orders(&bytes[..bytes.len() - 1], 10) {
            Err(PlaceOrdersError::Body(e)) => assert!(e.0.starts_with("orders[2]"), "{e}"),
            other => panic!("a cut body must not decode: {other:?}"),
        }
        assert!(matches!(
            split_place_orders(&[], 10),
            Err(PlaceOrdersError::Body(_))
        ));

        let reply = PlaceOrdersReply {
            outcomes: vec![
                PlaceOutcome::Placed(PlacedOrder {
                    id: "ord_0001000000000001".into(),
                    status: "confirmed".into(),
                    total: 1999,
                    created_at_us: 1_790_000_000_000_000,
                }),
                PlaceOutcome::Error(ErrorBody {
                    status: 409,
                    code: "insufficient_stock".into(),
                    detail: "not enough stock".into(),
                    param: None,
                    skus: vec!["FLASH-1".into()],
                }),
            ],
        };
        let bytes = encode_body(&reply);
        // Outcomes are tagged: 0 placed, 1 error.
        assert_eq!(&bytes[..2], &[0x02, 0x00]);
        assert_eq!(decode_body::<PlaceOrdersReply>(&bytes), Ok(reply));
    }

    #[test]
    fn the_documented_encoding_of_a_place_orders() {
        // docs/PROTOCOL.md shows these bytes; keep the two in step.
        let batch = PlaceOrders {
            orders: vec![PlaceOrder {
                customer_id: "c".into(),
                lines: vec![Line {
                    sku: "S".into(),
                    qty: 1,
                    unit_price: 300,
                }],
                shipping_address: None,
                note: None,
                idempotency_key: Some("k".into()),
            }],
        };
        assert_eq!(
            encode_body(&batch),
            vec![
                0x01, 0x01, b'c', 0x01, 0x01, b'S', 0x01, 0xac, 0x02, 0x00, 0x00, 0x01, 0x01, b'k'
            ]
        );
    }

    #[test]
    fn a_reply_of_as_many_orders_as_fit_always_fits_one_frame() {
        assert_eq!(place_orders_fit(65_536), 1023);
        assert_eq!(place_orders_fit(16 * 1024 * 1024), 262_143);
        assert_eq!(place_orders_fit(10), 0);
        // The largest outcomes: a placed order with the longest status and extreme numbers,
        // and a compacted error with the longest code the server sends.
        let placed = PlaceOutcome::Placed(PlacedOrder {
            id: "ord_ffffffffffffffff".into(),
            status: "partially_shipped".into(),
            total: u64::MAX,
            created_at_us: i64::MIN,
        });
        assert_eq!(encode_body(&placed).len(), 60);
        let mut error = PlaceOrdersReply {
            outcomes: vec![PlaceOutcome::Error(ErrorBody {
                status: 422,
                code: "idempotency_conflict".into(),
                detail: "x".repeat(500),
                param: Some("lines[99].unit_price".into()),
                skus: vec!["S".repeat(64); 100],
            })],
        };
        error.compact_errors();
        let PlaceOutcome::Error(body) = &error.outcomes[0] else {
            unreachable!()
        };
        assert_eq!(
            (body.status, body.code.as_str()),
            (422, "idempotency_conflict")
        );
        assert!(body.detail.is_empty() && body.param.is_none() && body.skus.is_empty());
        let error = error.outcomes.pop().unwrap();
        assert!(encode_body(&error).len() <= PLACE_OUTCOME_BYTES_MAX);
        let max = place_orders_fit(65_536);
        let reply = PlaceOrdersReply {
            outcomes: (0..max)
                .map(|i| {
                    if i % 2 == 0 {
                        placed.clone()
                    } else {
                        error.clone()
                    }
                })
                .collect(),
        };
        assert!(HEADER_AFTER_LENGTH + encode_body(&reply).len() <= 65_536);
    }
}

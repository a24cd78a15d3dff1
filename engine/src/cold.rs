//! The cold tier: orders that ended (delivered, cancelled) longer than `engine.hot_retention_s`
//! ago, moved out of shard memory into the `cold` column family, and reading them back by id,
//! by customer, by status and by time, newest first or in placement order.
//!
//! A shard's sweep ([`crate::shard`]) picks its oldest ended orders, writes each one's record
//! and index keys with its next log batch (one RocksDB write with the batch, as the audit
//! records are) and emits `OrdersArchived`, whose application removes them from memory — live
//! and on replay alike, so recovery and snapshots hold only hot orders. Until that batch is
//! durable the shard answers for them from a `leaving` map of its own.
//!
//! Keys (family `cold`), all starting with the owning shard (u16 BE) and a kind byte:
//!
//! | kind | rest of the key | value |
//! |---|---|---|
//! | `o` | order id (u64 BE) | the order as clients see it, its shipments, whether it was cross-shard (postcard) |
//! | `t` | created (i64, sign-flipped BE), order id | empty: the time index |
//! | `c` | customer id, created, order id | the status byte: the customer index |
//! | `s` | status byte, created, order id | empty: the status index |
//! | `h` | shipment id | the order id: shipments of cold orders |
//!
//! Reads never take a shard's thread: the engine reads the family directly after the shard
//! has answered (an answer is sent once the shard's batch is durable, so an order the shard
//! no longer holds is already on disk).

use serde::{Deserialize, Serialize};

use crate::domain::{
    CustomerId, HistoryView, LineView, OrderCursor, OrderFilter, OrderId, OrderStatus, OrderView,
    ReceivedLineView, RefundId, RefundView, ReturnId, ReturnStatus, ReturnView, ShipmentEventView,
    ShipmentId, ShipmentStatus, ShipmentView,
};
use crate::storage::{prefix_end, Family, Storage, StorageError, Write, KEY_MAX};

const ORDER: u8 = b'o';
const TIME: u8 = b't';
const CUSTOMER: u8 = b'c';
const STATUS: u8 = b's';
const SHIPMENT: u8 = b'h';
const RETURN: u8 = b'r';
/// Format byte of a cold order's value: the order, then its returns and refunds, then its
/// lines' allocations to stock locations.
const FORMAT: u8 = 3;
/// The format before locations, still read: every unit allocated at `default` (there was no
/// other location).
const FORMAT_V2: u8 = 2;
/// The format before returns and refunds, still read (with none).
const FORMAT_V1: u8 = 1;

/// An order as it leaves memory: what every read of it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdOrder {
    pub order: OrderView,
    pub shipments: Vec<ShipmentView>,
    /// Its returns, oldest first (all received: an order with an open return stays hot).
    pub returns: Vec<ReturnView>,
    /// Held through the cross-shard protocol.
    pub cross: bool,
    /// The seq of the `OrdersArchived` that moved it (a sales walk of the shard as of an
    /// earlier seq still counted it as hot).
    pub archived_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredLine {
    sku: String,
    qty: u32,
    unit_price: u64,
    shipped: u32,
}

#[derive(Serialize, Deserialize)]
struct StoredStep {
    at_us: i64,
    status: OrderStatus,
    actor: String,
}

#[derive(Serialize, Deserialize)]
struct StoredShipmentEvent {
    at_us: i64,
    status: ShipmentStatus,
    note: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredShipment {
    id: u64,
    carrier: String,
    tracking: String,
    status: ShipmentStatus,
    lines: Vec<(String, u32)>,
    events: Vec<StoredShipmentEvent>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    id: u64,
    customer: u64,
    status: OrderStatus,
    cross: bool,
    archived_seq: u64,
    lines: Vec<StoredLine>,
    total: u64,
    shipping_address: Option<String>,
    note: Option<String>,
    created_us: i64,
    updated_us: i64,
    history: Vec<StoredStep>,
    shipments: Vec<StoredShipment>,
}

/// What format 2 adds after [`Stored`]: units returned per line, returns and refunds.
#[derive(Serialize, Deserialize, Default)]
struct StoredAfterSales {
    returned_qty: Vec<u32>,
    returns: Vec<StoredReturn>,
    /// (id, amount, reason, created).
    refunds: Vec<(u64, u64, String, i64)>,
}

/// What format 3 adds after [`StoredAfterSales`]: per line, its allocations (location, units).
#[derive(Serialize, Deserialize, Default)]
struct StoredAllocations {
    lines: Vec<Vec<(String, u32)>>,
}

#[derive(Serialize, Deserialize)]
struct StoredReturn {
    id: u64,
    status: ReturnStatus,
    lines: Vec<(String, u32)>,
    reason: String,
    created_us: i64,
    /// (SKU, units, restocked, where).
    received: Vec<(String, u32, bool, Option<String>)>,
    received_us: Option<i64>,
}

impl ColdOrder {
    pub fn encode(&self) -> Vec<u8> {
        let o = &self.order;
        let stored = Stored {
            id: o.id.0,
            customer: o.customer_id.0,
            status: o.status,
            cross: self.cross,
            archived_seq: self.archived_seq,
            lines: o
                .lines
                .iter()
                .map(|l| StoredLine {
                    sku: l.sku.clone(),
                    qty: l.qty,
                    unit_price: l.unit_price,
                    shipped: l.shipped_qty,
                })
                .collect(),
            total: o.total,
            shipping_address: o.shipping_address.clone(),
            note: o.note.clone(),
            created_us: o.created_at_us,
            updated_us: o.updated_at_us,
            history: o
                .history
                .iter()
                .map(|h| StoredStep {
                    at_us: h.at_us,
                    status: h.status,
                    actor: h.actor.clone(),
                })
                .collect(),
            shipments: self
                .shipments
                .iter()
                .map(|s| StoredShipment {
                    id: s.id.0,
                    carrier: s.carrier.clone(),
                    tracking: s.tracking_number.clone(),
                    status: s.status,
                    lines: s.lines.clone(),
                    events: s
                        .events
                        .iter()
                        .map(|e| StoredShipmentEvent {
                            at_us: e.at_us,
                            status: e.status,
                            note: e.note.clone(),
                        })
                        .collect(),
                })
                .collect(),
        };
        let after = StoredAfterSales {
            returned_qty: o.lines.iter().map(|l| l.returned_qty).collect(),
            returns: self
                .returns
                .iter()
                .map(|r| StoredReturn {
                    id: r.id.0,
                    status: r.status,
                    lines: r.lines.clone(),
                    reason: r.reason.clone(),
                    created_us: r.created_at_us,
                    received: r
                        .received
                        .iter()
                        .map(|l| (l.sku.clone(), l.qty, l.restock, l.location.clone()))
                        .collect(),
                    received_us: r.received_at_us,
                })
                .collect(),
            refunds: o
                .refunds
                .iter()
                .map(|r| (r.id.0, r.amount, r.reason.clone(), r.created_at_us))
                .collect(),
        };
        let allocations = StoredAllocations {
            lines: o.lines.iter().map(|l| l.allocations.clone()).collect(),
        };
        let mut value = vec![FORMAT];
        value.extend_from_slice(&postcard::to_allocvec(&stored).unwrap_or_default());
        value.extend_from_slice(&postcard::to_allocvec(&after).unwrap_or_default());
        value.extend_from_slice(&postcard::to_allocvec(&allocations).unwrap_or_default());
        value
    }

    pub fn decode(value: &[u8]) -> Result<ColdOrder, StorageError> {
        let unreadable =
            |e: postcard::Error| StorageError::Corrupt(format!("unreadable cold order: {e}"));
        let (s, after, allocations): (Stored, StoredAfterSales, Option<StoredAllocations>) =
            match value.split_first() {
                Some((&FORMAT, body)) => {
                    let (stored, rest) = postcard::take_from_bytes(body).map_err(unreadable)?;
                    let (after, rest) = postcard::take_from_bytes(rest).map_err(unreadable)?;
                    (
                        stored,
                        after,
                        Some(postcard::from_bytes(rest).map_err(unreadable)?),
                    )
                }
                Some((&FORMAT_V2, body)) => {
                    let (stored, rest) = postcard::take_from_bytes(body).map_err(unreadable)?;
                    (
                        stored,
                        postcard::from_bytes(rest).map_err(unreadable)?,
                        None,
                    )
                }
                Some((&FORMAT_V1, body)) => (
                    postcard::from_bytes(body).map_err(unreadable)?,
                    StoredAfterSales::default(),
                    None,
                ),
                _ => return Err(StorageError::Corrupt("unknown cold order format".into())),
            };
        let mut allocations = allocations.map(|a| a.lines.into_iter());
        let order_id = OrderId(s.id);
        let shipments: Vec<ShipmentView> = s
            .shipments
            .into_iter()
            .map(|sh| ShipmentView {
                id: ShipmentId(sh.id),
                order_id,
                carrier: sh.carrier,
                tracking_number: sh.tracking,
                status: sh.status,
                lines: sh.lines,
                events: sh
                    .events
                    .into_iter()
                    .map(|e| ShipmentEventView {
                        at_us: e.at_us,
                        status: e.status,
                        note: e.note,
                    })
                    .collect(),
            })
            .collect();
        Ok(ColdOrder {
            order: OrderView {
                id: order_id,
                customer_id: CustomerId(s.customer),
                status: s.status,
                lines: s
                    .lines
                    .into_iter()
                    .map(|l| LineView {
                        allocations: match allocations.as_mut() {
                            Some(lines) => lines.next().unwrap_or_default(),
                            // Written before locations: every unit was at `default`.
                            None => vec![(crate::domain::DEFAULT_LOCATION.to_string(), l.qty)],
                        },
                        sku: l.sku,
                        qty: l.qty,
                        unit_price: l.unit_price,
                        shipped_qty: l.shipped,
                        returned_qty: 0,
                    })
                    .collect(),
                total: s.total,
                shipping_address: s.shipping_address,
                note: s.note,
                created_at_us: s.created_us,
                updated_at_us: s.updated_us,
                history: s
                    .history
                    .into_iter()
                    .map(|h| HistoryView {
                        at_us: h.at_us,
                        status: h.status,
                        actor: h.actor,
                    })
                    .collect(),
                shipments: shipments.iter().map(|sh| sh.id.to_string()).collect(),
                customer_erased: false,
                returns: Vec::new(),
                refunds: Vec::new(),
                refunded: 0,
            },
            shipments,
            returns: Vec::new(),
            cross: s.cross,
            archived_seq: s.archived_seq,
        }
        .with_after_sales(after))
    }

    fn with_after_sales(mut self, after: StoredAfterSales) -> ColdOrder {
        let order_id = self.order.id;
        for (line, returned) in self.order.lines.iter_mut().zip(after.returned_qty) {
            line.returned_qty = returned;
        }
        self.returns = after
            .returns
            .into_iter()
            .map(|r| ReturnView {
                id: ReturnId(r.id),
                order_id,
                status: r.status,
                lines: r.lines,
                reason: r.reason,
                created_at_us: r.created_us,
                received: r
                    .received
                    .into_iter()
                    .map(|(sku, qty, restock, location)| ReceivedLineView {
                        sku,
                        qty,
                        restock,
                        location,
                    })
                    .collect(),
                received_at_us: r.received_us,
            })
            .collect();
        self.order.returns = self.returns.iter().map(|r| r.id.to_string()).collect();
        self.order.refunds = after
            .refunds
            .into_iter()
            .map(|(id, amount, reason, created_at_us)| RefundView {
                id: RefundId(id),
                order_id,
                amount,
                reason,
                created_at_us,
            })
            .collect();
        self.order.refunded = self
            .order
            .refunds
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.amount));
        self
    }
}

/// `created` as 8 bytes that sort as the signed value does.
fn time_bytes(created_us: i64) -> [u8; 8] {
    ((created_us as u64) ^ (1 << 63)).to_be_bytes()
}

fn status_byte(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Pending => 0,
        OrderStatus::Confirmed => 1,
        OrderStatus::PartiallyShipped => 2,
        OrderStatus::Shipped => 3,
        OrderStatus::Delivered => 4,
        OrderStatus::Cancelled => 5,
        OrderStatus::PartiallyReturned => 6,
        OrderStatus::Returned => 7,
    }
}

fn head(shard: u16, kind: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(&shard.to_be_bytes());
    key.push(kind);
    key
}

fn order_key(id: OrderId) -> Vec<u8> {
    let mut key = head(id.shard(), ORDER);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn return_key(id: ReturnId) -> Vec<u8> {
    let mut key = head(id.shard(), RETURN);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn shipment_key(id: ShipmentId) -> Vec<u8> {
    let mut key = head(id.shard(), SHIPMENT);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// `(created, id)` appended: the tail every index key ends with.
fn push_position(key: &mut Vec<u8>, created_us: i64, id: OrderId) {
    key.extend_from_slice(&time_bytes(created_us));
    key.extend_from_slice(&id.0.to_be_bytes());
}

/// The order id at the end of an index key.
fn id_at_end(key: &[u8]) -> Option<OrderId> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(OrderId(u64::from_be_bytes(tail)))
}

/// The writes that store `cold` (its record, its index keys, its shipments' keys).
pub fn writes(cold: &ColdOrder) -> Vec<Write> {
    let o = &cold.order;
    let put = |key: Vec<u8>, value: Vec<u8>| Write::Put {
        family: Family::Cold,
        key,
        value,
    };
    let shard = o.id.shard();
    let mut out = Vec::with_capacity(4 + cold.shipments.len());
    out.push(put(order_key(o.id), cold.encode()));
    let mut time = head(shard, TIME);
    push_position(&mut time, o.created_at_us, o.id);
    out.push(put(time, Vec::new()));
    let mut customer = head(shard, CUSTOMER);
    customer.extend_from_slice(&o.customer_id.0.to_be_bytes());
    push_position(&mut customer, o.created_at_us, o.id);
    out.push(put(customer, vec![status_byte(o.status)]));
    let mut status = head(shard, STATUS);
    status.push(status_byte(o.status));
    push_position(&mut status, o.created_at_us, o.id);
    out.push(put(status, Vec::new()));
    for shipment in &cold.shipments {
        out.push(put(
            shipment_key(shipment.id),
            o.id.0.to_be_bytes().to_vec(),
        ));
    }
    for ret in &cold.returns {
        out.push(put(return_key(ret.id), o.id.0.to_be_bytes().to_vec()));
    }
    out
}

/// The return `id` of a cold order.
pub fn return_of(storage: &dyn Storage, id: ReturnId) -> Result<Option<ReturnView>, StorageError> {
    let Some(value) = storage.get(Family::Cold, &return_key(id))? else {
        return Ok(None);
    };
    let Ok(bytes) = <[u8; 8]>::try_from(value.as_slice()) else {
        return Err(StorageError::Corrupt(
            "a cold return key holds no order id".into(),
        ));
    };
    Ok(order(storage, OrderId(u64::from_be_bytes(bytes)))?
        .and_then(|cold| cold.returns.into_iter().find(|r| r.id == id)))
}

/// A cold order by id.
pub fn order(storage: &dyn Storage, id: OrderId) -> Result<Option<ColdOrder>, StorageError> {
    storage
        .get(Family::Cold, &order_key(id))?
        .map(|value| ColdOrder::decode(&value))
        .transpose()
}

/// The shipment `id` of a cold order.
pub fn shipment(
    storage: &dyn Storage,
    id: ShipmentId,
) -> Result<Option<ShipmentView>, StorageError> {
    let Some(value) = storage.get(Family::Cold, &shipment_key(id))? else {
        return Ok(None);
    };
    let Ok(bytes) = <[u8; 8]>::try_from(value.as_slice()) else {
        return Err(StorageError::Corrupt(
            "a cold shipment key holds no order id".into(),
        ));
    };
    Ok(order(storage, OrderId(u64::from_be_bytes(bytes)))?
        .and_then(|cold| cold.shipments.into_iter().find(|s| s.id == id)))
}

/// A page of shard `shard`'s cold orders, newest first, as [`crate::state::ShardData::list_orders`]
/// pages its hot ones: before `filter.after`, matching the filter, at most `filter.limit`.
/// With a customer it reads that customer's index range, with a status alone the status index,
/// else the time index: a page costs its orders, not the tier.
pub fn list(
    storage: &dyn Storage,
    shard: u16,
    filter: &OrderFilter,
) -> Result<Vec<OrderView>, StorageError> {
    let (prefix, wanted_status) = match (filter.customer_id, filter.status) {
        (Some(customer), status) => {
            let mut prefix = head(shard, CUSTOMER);
            prefix.extend_from_slice(&customer.0.to_be_bytes());
            (prefix, status.map(status_byte))
        }
        (None, Some(status)) => {
            let mut prefix = head(shard, STATUS);
            prefix.push(status_byte(status));
            (prefix, None)
        }
        (None, None) => (head(shard, TIME), None),
    };
    let end = match filter.after {
        Some(OrderCursor { created_at_us, id }) => {
            let mut end = prefix.clone();
            push_position(&mut end, created_at_us, id);
            end
        }
        None => prefix_end(&prefix).unwrap_or_else(|| KEY_MAX.to_vec()),
    };
    let mut ids = Vec::with_capacity(filter.limit.min(1000));
    storage.scan_rev(Family::Cold, &prefix, &end, &mut |key, value| {
        if wanted_status.is_none_or(|s| value.first() == Some(&s)) {
            if let Some(id) = id_at_end(key) {
                ids.push(id);
            }
        }
        ids.len() < filter.limit
    })?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(cold) = order(storage, id)? {
            views.push(cold.order);
        }
    }
    Ok(views)
}

/// Shard `shard`'s cold orders placed in `[from_us, to_us)` after `after`, in placement order,
/// at most `limit` (the export's pages, the sales walk of partial hours).
pub fn placed_between(
    storage: &dyn Storage,
    shard: u16,
    from_us: i64,
    to_us: i64,
    after: Option<(i64, OrderId)>,
    limit: usize,
) -> Result<Vec<ColdOrder>, StorageError> {
    if from_us >= to_us {
        return Ok(Vec::new());
    }
    let prefix = head(shard, TIME);
    let mut from = prefix.clone();
    match after {
        Some((created, id)) if (created, id) >= (from_us, OrderId(0)) => {
            push_position(&mut from, created, id);
            from.push(0);
        }
        _ => from.extend_from_slice(&time_bytes(from_us)),
    }
    let mut to = prefix;
    to.extend_from_slice(&time_bytes(to_us));
    let mut ids = Vec::new();
    storage.scan(Family::Cold, &from, &to, &mut |key, _| {
        if let Some(id) = id_at_end(key) {
            ids.push(id);
        }
        ids.len() < limit
    })?;
    let mut orders = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(cold) = order(storage, id)? {
            orders.push(cold);
        }
    }
    Ok(orders)
}

/// Orders held in shard `shard`'s cold tier (one key per order), for gauges and tests.
pub fn count(storage: &dyn Storage, shard: u16) -> Result<u64, StorageError> {
    let mut n = 0u64;
    storage.scan_prefix(Family::Cold, &head(shard, ORDER), &mut |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(allocations: Vec<(String, u32)>) -> ColdOrder {
        ColdOrder {
            order: OrderView {
                id: OrderId::new(0, 1),
                customer_id: CustomerId::new(0, 1),
                status: OrderStatus::Delivered,
                lines: vec![LineView {
                    sku: "A".into(),
                    qty: 3,
                    unit_price: 100,
                    shipped_qty: 3,
                    returned_qty: 0,
                    allocations,
                }],
                total: 300,
                shipping_address: None,
                note: None,
                created_at_us: 1,
                updated_at_us: 2,
                history: Vec::new(),
                shipments: Vec::new(),
                customer_erased: false,
                returns: Vec::new(),
                refunds: Vec::new(),
                refunded: 0,
            },
            shipments: Vec::new(),
            returns: Vec::new(),
            cross: false,
            archived_seq: 9,
        }
    }

    /// A cold order keeps its lines' allocations; one written in format 2 (before locations)
    /// reads with each line at `default`, where every unit of that time was.
    #[test]
    fn allocations_round_trip_and_format_2_reads_at_default() {
        let split = order(vec![("east".into(), 2), ("west".into(), 1)]);
        let value = split.encode();
        assert_eq!(value[0], FORMAT);
        assert_eq!(ColdOrder::decode(&value).unwrap(), split);
        // Format 2 is format 3 without the allocations at the end.
        let tail = postcard::to_allocvec(&StoredAllocations {
            lines: vec![vec![("east".into(), 2), ("west".into(), 1)]],
        })
        .unwrap();
        let mut old = value[..value.len() - tail.len()].to_vec();
        old[0] = FORMAT_V2;
        let read = ColdOrder::decode(&old).unwrap();
        assert_eq!(read, order(vec![("default".into(), 3)]));
    }
}

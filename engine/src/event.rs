//! Events: the durable facts a shard appends to its log, and their versioned encoding.
//!
//! A log value holds one batch: a format version byte, then the batch's events one after the
//! other, each encoded with `postcard` (self-delimiting, so no lengths are needed).

use serde::{Deserialize, Serialize};

/// Version byte of every log batch value.
pub const LOG_FORMAT_VERSION: u8 = 1;

/// One requested order line as recorded in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRecord {
    pub sku: String,
    pub qty: u32,
    pub unit_price: u64,
}

/// An order as recorded when it is placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: u64,
    pub customer: u64,
    pub lines: Vec<LineRecord>,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
    pub at_us: i64,
    pub actor: String,
}

/// An idempotency key with the hash of its request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub key: String,
    pub hash: u128,
    pub at_us: i64,
}

/// One line of a received return as recorded: `qty` units of `sku`; with `restock` they go
/// back to `on_hand` at `location`, the location they were shipped from (`DEFAULT_LOCATION`
/// for units allocated before locations existed, and for units not restocked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedLine {
    pub sku: String,
    pub qty: u32,
    pub restock: bool,
    pub location: String,
}

/// Units of one SKU restocked by a return on the shard that owns the SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockLine {
    pub sku: String,
    pub qty: u32,
    pub location: String,
}

/// A durable fact on one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Stock received (positive) or written off (negative).
    StockAdjusted {
        sku: String,
        delta: i64,
        reason: String,
        at_us: i64,
    },
    CustomerCreated {
        id: u64,
        name: String,
        email: String,
        phone: Option<String>,
        address: Option<String>,
        at_us: i64,
    },
    /// A one-shard order, confirmed with its stock reserved on this shard.
    OrderPlaced {
        order: OrderRecord,
        idem: Option<IdemRecord>,
    },
    /// The durable intent of a cross-shard order, before any `Reserve` is sent.
    OrderPending {
        order: OrderRecord,
        idem: Option<IdemRecord>,
    },
    /// A stock shard holds these units for a cross-shard order.
    Reserved {
        order: u64,
        lines: Vec<(String, u32)>,
    },
    /// A stock shard gives back what it held for an order.
    Released { order: u64 },
    /// Every part of a cross-shard order is reserved.
    OrderConfirmed { order: u64, at_us: i64 },
    /// A cross-shard placement failed; the order is removed and its holds are released.
    OrderAborted {
        order: u64,
        short: Vec<String>,
        idem_key: Option<String>,
        at_us: i64,
    },
    /// A one-shard placement with an idempotency key failed; the outcome is remembered.
    PlacementRejected {
        idem: IdemRecord,
        short: Vec<String>,
    },
    OrderCancelled {
        order: u64,
        reason: Option<String>,
        actor: String,
        at_us: i64,
    },
    // New variants go last: postcard encodes the variant index, so older logs keep decoding.
    /// Units of an order leave the warehouse (on the order's shard). For a one-shard order the
    /// stock moves out here; for a cross-shard one each part's shard moves it (`HoldShipped`).
    ShipmentCreated {
        id: u64,
        order: u64,
        carrier: String,
        tracking: String,
        lines: Vec<(String, u32)>,
        actor: String,
        at_us: i64,
    },
    /// A carrier event on a shipment.
    ShipmentUpdated {
        id: u64,
        status: crate::domain::ShipmentStatus,
        note: Option<String>,
        actor: String,
        at_us: i64,
    },
    /// A stock shard moves shipped units of a cross-shard order out of its hold: `shipped` is
    /// the order's cumulative shipped quantity per SKU of this shard (idempotent).
    HoldShipped {
        order: u64,
        shipped: Vec<(String, u32)>,
    },
    /// A customer's personal data, re-sealed (migration of plaintext written by old versions).
    CustomerResealed {
        id: u64,
        name: String,
        email: String,
        phone: Option<String>,
        address: Option<String>,
    },
    /// An order's shipping address, re-sealed.
    OrderAddressResealed {
        order: u64,
        shipping_address: Option<String>,
    },
    /// A mutation other than a placement was applied under an Idempotency-Key (in the same
    /// batch, right after its event): a retry with the key is answered `outcome`.
    IdemRecorded {
        idem: IdemRecord,
        outcome: crate::state::IdemOutcome,
    },
    /// Ended orders moved to the cold tier (their records were written with this batch):
    /// they leave memory, their sales stay counted.
    OrdersArchived { ids: Vec<u64> },
    /// Idempotency keys past their in-memory window moved to the `idem` family (written with
    /// this batch): they leave memory and are answered from there until their retention ends.
    IdemArchived { keys: Vec<String> },
    /// A SKU's catalog price set (on the shard that owns the SKU's stock): `price` in minor
    /// units of the shop's currency, at most `UNIT_PRICE_MAX`; an inactive price prices no
    /// order. Replaces the SKU's earlier entry.
    CatalogPriceSet {
        sku: String,
        price: u64,
        active: bool,
        actor: String,
        at_us: i64,
    },
    /// A customer's contact data changed (`PATCH`): each `Some` replaces that field with a
    /// new sealed value; `None` leaves it. Never applied to an erased customer.
    CustomerUpdated {
        id: u64,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        address: Option<String>,
        actor: String,
        at_us: i64,
    },
    /// A customer erased (GDPR art. 17): its sealed personal data leaves the state (the
    /// gateway destroyed its data key first, so every earlier copy is unreadable); its orders
    /// keep ids, lines and totals. Applying it to an erased customer changes nothing.
    CustomerErased { id: u64, actor: String, at_us: i64 },
    /// A return of shipped units opened (on the order's shard).
    ReturnCreated {
        id: u64,
        order: u64,
        lines: Vec<(String, u32)>,
        reason: String,
        actor: String,
        at_us: i64,
    },
    /// A return's units came back (on the order's shard). Restocked units of SKUs this shard
    /// owns go back to `on_hand` here; those of SKUs other shards own are sent to them
    /// (`Restock`) until each confirms (`RestockConfirmed`).
    ReturnReceived {
        id: u64,
        lines: Vec<ReceivedLine>,
        actor: String,
        at_us: i64,
    },
    /// A stock shard put a return's units of its SKUs back to `on_hand`, once per return
    /// (the return id is remembered, so a repeated `Restock` restocks nothing).
    Restocked { ret: u64, lines: Vec<RestockLine> },
    /// The order's shard heard that `shard` restocked the return's units there.
    RestockConfirmed { ret: u64, shard: u16 },
    /// Money given back on an order (on the order's shard), minor units.
    RefundIssued {
        id: u64,
        order: u64,
        amount: u64,
        reason: String,
        actor: String,
        at_us: i64,
    },
    /// A stock location defined, or redefined (name, priority), applied on every shard: each
    /// shard allocates by its own copy of the locations, so replaying its log re-derives
    /// every allocation it made.
    LocationSet {
        id: String,
        name: String,
        priority: u32,
        actor: String,
        at_us: i64,
    },
    /// Stock received (positive) or written off (negative) at one location (`StockAdjusted`
    /// is the same at `DEFAULT_LOCATION`, as written before locations).
    StockAdjustedAt {
        sku: String,
        location: String,
        delta: i64,
        reason: String,
        actor: String,
        at_us: i64,
    },
    /// Available units of a SKU moved from one location to another: totals do not change.
    StockTransferred {
        sku: String,
        from: String,
        to: String,
        qty: u64,
        reason: String,
        actor: String,
        at_us: i64,
    },
    /// Where the stock shards reserved a cross-shard order's lines (on the order's shard, just
    /// before `OrderConfirmed`): (SKU, location, units) in the order the units ship.
    OrderAllocated {
        order: u64,
        allocations: Vec<(String, String, u32)>,
    },
}

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("empty record")]
    Empty,
    #[error("corrupt record: {0}")]
    Corrupt(#[from] postcard::Error),
}

/// Starts a batch value: the version byte.
pub fn batch_start(buffer: &mut Vec<u8>) {
    debug_assert!(buffer.is_empty());
    buffer.push(LOG_FORMAT_VERSION);
}

/// Appends one encoded event to a batch value.
pub fn batch_push(buffer: &mut Vec<u8>, event: &Event) {
    debug_assert!(!buffer.is_empty(), "batch_start first");
    let taken = std::mem::take(buffer);
    *buffer = postcard::to_extend(event, taken).expect("encoding to a Vec cannot fail");
}

/// Decodes every event of a batch value, in order.
pub fn batch_decode(value: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    batch_for_each(value, |event| events.push(event))?;
    Ok(events)
}

/// Decodes the events of a batch value one at a time, in order, handing each to `visit`, and
/// returns how many there were. Recovery replays the log this way: a batch holds up to
/// `engine.batch_events_max` events, and collecting them first grew a vector batch after batch
/// (a restart's profile showed a tenth of its time zeroing the fresh pages of those vectors).
/// On an error, the events before it have been visited.
pub fn batch_for_each(value: &[u8], mut visit: impl FnMut(Event)) -> Result<u64, DecodeError> {
    let (&version, mut rest) = value.split_first().ok_or(DecodeError::Empty)?;
    if version != LOG_FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let mut count = 0;
    while !rest.is_empty() {
        let (event, tail) = postcard::take_from_bytes::<Event>(rest)?;
        visit(event);
        count += 1;
        rest = tail;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_reject_other_versions() {
        let events = vec![
            Event::StockAdjusted {
                sku: "A".into(),
                delta: 5,
                reason: "receive".into(),
                at_us: 1,
            },
            Event::Released { order: 7 },
            Event::CatalogPriceSet {
                sku: "A".into(),
                price: 1999,
                active: true,
                actor: "key_1".into(),
                at_us: 2,
            },
        ];
        let mut buffer = Vec::new();
        batch_start(&mut buffer);
        for event in &events {
            batch_push(&mut buffer, event);
        }
        assert_eq!(batch_decode(&buffer).unwrap(), events);
        buffer[0] = 99;
        assert!(matches!(
            batch_decode(&buffer),
            Err(DecodeError::Version(99))
        ));
        assert!(matches!(batch_decode(&[]), Err(DecodeError::Empty)));
        assert!(batch_decode(&[LOG_FORMAT_VERSION, 0xff, 0xff]).is_err());
    }

    /// Bytes written by the version before locations still decode to the same events: new
    /// variants only go last, existing ones keep their layout.
    #[test]
    fn batches_written_before_locations_still_decode() {
        // Version 1; StockAdjusted{sku "A", delta 5, reason "r", at_us 1} (variant 0, zigzag
        // varints); Released{order 7} (variant 5); ReturnReceived{id 3, one line of "A", qty 2,
        // restock, "default"} (variant 22), actor "k", at_us 4.
        let mut old = vec![
            1, 0, 1, b'A', 10, 1, b'r', 2, 5, 7, 22, 3, 1, 1, b'A', 2, 1, 7,
        ];
        old.extend_from_slice(b"default");
        old.extend_from_slice(&[1, b'k', 8]);
        assert_eq!(
            batch_decode(&old).unwrap(),
            vec![
                Event::StockAdjusted {
                    sku: "A".into(),
                    delta: 5,
                    reason: "r".into(),
                    at_us: 1,
                },
                Event::Released { order: 7 },
                Event::ReturnReceived {
                    id: 3,
                    lines: vec![ReceivedLine {
                        sku: "A".into(),
                        qty: 2,
                        restock: true,
                        location: "default".into(),
                    }],
                    actor: "k".into(),
                    at_us: 4,
                },
            ]
        );
        // The new variants round-trip after them.
        let events = vec![
            Event::LocationSet {
                id: "east".into(),
                name: "East".into(),
                priority: 1,
                actor: "k".into(),
                at_us: 5,
            },
            Event::StockTransferred {
                sku: "A".into(),
                from: "default".into(),
                to: "east".into(),
                qty: 2,
                reason: "move".into(),
                actor: "k".into(),
                at_us: 6,
            },
        ];
        let mut buffer = old.clone();
        for event in &events {
            batch_push(&mut buffer, event);
        }
        assert_eq!(batch_decode(&buffer).unwrap()[3..], events[..]);
    }
}

//! Public events: the facts clients and webhooks see (`order.confirmed`, …, `stock.low`, API.md
//! "Commerce: events"), their stored encoding, the global cursor and its head, pages, and the
//! retention sweep.
//!
//! A shard derives them live, as it applies its own events (`Shard::emit`: never on replay, so a
//! recovery raises none twice), and hands them to the log writer with the batch that raised
//! them. The writer numbers them with one global, gap-free cursor and writes them to the
//! `events` family in the same storage write as the batch: an event exists exactly when the
//! change that raised it is durable. Readers (pages, the live stream, webhook workers) read
//! the family from a cursor and wait on [`EventHead`] for more.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{OrderStatus, ShipmentStatus};
use crate::event::{LineRecord, ReceivedLine};
use crate::storage::{Family, Storage, StorageError, Write};

/// Version byte of every stored event value.
pub const EVENT_FORMAT_VERSION: u8 = 1;

/// The kind of a public event, as clients name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    OrderConfirmed,
    OrderCancelled,
    OrderShipped,
    OrderDelivered,
    OrderReturned,
    OrderRefunded,
    ShipmentUpdated,
    ReturnReceived,
    StockLow,
}

impl EventType {
    /// Every type, in the order of API.md.
    pub const ALL: [EventType; 9] = [
        EventType::OrderConfirmed,
        EventType::OrderCancelled,
        EventType::OrderShipped,
        EventType::OrderDelivered,
        EventType::OrderReturned,
        EventType::OrderRefunded,
        EventType::ShipmentUpdated,
        EventType::ReturnReceived,
        EventType::StockLow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderConfirmed => "order.confirmed",
            EventType::OrderCancelled => "order.cancelled",
            EventType::OrderShipped => "order.shipped",
            EventType::OrderDelivered => "order.delivered",
            EventType::OrderReturned => "order.returned",
            EventType::OrderRefunded => "order.refunded",
            EventType::ShipmentUpdated => "shipment.updated",
            EventType::ReturnReceived => "return.received",
            EventType::StockLow => "stock.low",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of event types (a filter); [`TypeSet::ALL`] passes every event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeSet(u16);

impl TypeSet {
    pub const ALL: TypeSet = TypeSet(u16::MAX);

    pub fn of(types: &[EventType]) -> TypeSet {
        TypeSet(types.iter().fold(0, |bits, t| bits | t.bit()))
    }

    pub fn contains(self, t: EventType) -> bool {
        self.0 & t.bit() != 0
    }

    /// The types in the set, in [`EventType::ALL`] order.
    pub fn types(self) -> Vec<EventType> {
        EventType::ALL
            .into_iter()
            .filter(|t| self.contains(*t))
            .collect()
    }
}

/// What happened, with the data a client needs to act on it (ids, amounts, statuses).
/// New variants go last: postcard encodes the variant index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// An order's stock is reserved: `OrderPlaced` (one shard) or `OrderConfirmed`.
    OrderConfirmed {
        order: u64,
        customer: u64,
        lines: Vec<LineRecord>,
        total: u64,
    },
    OrderCancelled {
        order: u64,
        reason: Option<String>,
    },
    /// A shipment of the order left; `status` is the order's after it.
    OrderShipped {
        order: u64,
        shipment: u64,
        carrier: String,
        tracking: String,
        lines: Vec<(String, u32)>,
        status: OrderStatus,
    },
    OrderDelivered {
        order: u64,
    },
    /// A return of the order was received; `status` (`partially_returned` or `returned`) is
    /// the order's after it.
    OrderReturned {
        order: u64,
        ret: u64,
        status: OrderStatus,
    },
    /// Money given back; `refunded` is the order's refunds so far, this one included.
    OrderRefunded {
        order: u64,
        refund: u64,
        amount: u64,
        refunded: u64,
    },
    ShipmentUpdated {
        shipment: u64,
        order: u64,
        status: ShipmentStatus,
        note: Option<String>,
    },
    ReturnReceived {
        ret: u64,
        order: u64,
        lines: Vec<ReceivedLine>,
    },
    /// A SKU's available units fell below `threshold` (`events.stock_low_threshold`).
    StockLow {
        sku: String,
        available: u64,
        threshold: u64,
    },
}

impl Notice {
    pub fn kind(&self) -> EventType {
        match self {
            Notice::OrderConfirmed { .. } => EventType::OrderConfirmed,
            Notice::OrderCancelled { .. } => EventType::OrderCancelled,
            Notice::OrderShipped { .. } => EventType::OrderShipped,
            Notice::OrderDelivered { .. } => EventType::OrderDelivered,
            Notice::OrderReturned { .. } => EventType::OrderReturned,
            Notice::OrderRefunded { .. } => EventType::OrderRefunded,
            Notice::ShipmentUpdated { .. } => EventType::ShipmentUpdated,
            Notice::ReturnReceived { .. } => EventType::ReturnReceived,
            Notice::StockLow { .. } => EventType::StockLow,
        }
    }
}

/// A stored event: what and when (microseconds since the epoch, the raising shard's clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub at_us: i64,
    pub notice: Notice,
}

impl Recorded {
    /// The stored value: the version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![EVENT_FORMAT_VERSION]).expect("encoding to a Vec")
    }

    pub fn decode(value: &[u8]) -> Result<Recorded, StorageError> {
        match value.split_first() {
            Some((&EVENT_FORMAT_VERSION, rest)) => postcard::from_bytes(rest)
                .map_err(|e| StorageError::Corrupt(format!("event record: {e}"))),
            _ => Err(StorageError::Corrupt("event record version".into())),
        }
    }
}

/// An event read back, with its cursor (`evt_<16 hex digits>` on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub cursor: u64,
    pub at_us: i64,
    pub notice: Notice,
}

/// The key of the event at `cursor`.
pub fn key(cursor: u64) -> [u8; 8] {
    cursor.to_be_bytes()
}

fn cursor_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The wire id of a cursor.
pub fn event_id(cursor: u64) -> String {
    format!("evt_{cursor:016x}")
}

/// The cursor of a wire id.
pub fn parse_event_id(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("evt_")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The newest cursor written (0: none), where the log writer continues after a restart.
pub fn last_cursor(storage: &dyn Storage) -> Result<u64, StorageError> {
    let last = storage.last_in(Family::Events, &key(0), crate::storage::KEY_MAX)?;
    Ok(last.and_then(|(k, _)| cursor_of(&k)).unwrap_or(0))
}

/// The oldest cursor kept (`None`: no event is kept).
pub fn first_cursor(storage: &dyn Storage) -> Result<Option<u64>, StorageError> {
    let mut first = None;
    storage.scan(
        Family::Events,
        &key(0),
        crate::storage::KEY_MAX,
        &mut |k, _| {
            first = cursor_of(k);
            false
        },
    )?;
    Ok(first)
}

/// A page of events after `after`, oldest first: at most `limit` of the types in `types`,
/// looking at no more than `scan_max` events (a filter that matches few stops there). Returns
/// the events and the cursor the scan reached (the last event looked at; `after` if none).
pub fn read_after(
    storage: &dyn Storage,
    after: u64,
    types: TypeSet,
    limit: usize,
    scan_max: usize,
) -> Result<(Vec<StoredEvent>, u64), StorageError> {
    let mut items = Vec::new();
    let mut reached = after;
    let mut scanned = 0usize;
    let mut failure = None;
    let from = key(after.saturating_add(1));
    storage.scan(
        Family::Events,
        &from,
        crate::storage::KEY_MAX,
        &mut |k, v| {
            let Some(cursor) = cursor_of(k) else {
                return true;
            };
            scanned += 1;
            reached = cursor;
            match Recorded::decode(v) {
                Ok(recorded) => {
                    if types.contains(recorded.notice.kind()) {
                        items.push(StoredEvent {
                            cursor,
                            at_us: recorded.at_us,
                            notice: recorded.notice,
                        });
                    }
                }
                Err(error) => {
                    failure = Some(error);
                    return false;
                }
            }
            items.len() < limit && scanned < scan_max
        },
    )?;
    match failure {
        Some(error) => Err(error),
        None => Ok((items, reached)),
    }
}

/// The delete that retention asks for: every event older than `cutoff_us`, and the oldest
/// beyond the newest `count_max`. Looks at no more than `scan_max` events (a later sweep
/// continues). `None` when nothing is to go.
pub fn sweep(
    storage: &dyn Storage,
    cutoff_us: i64,
    count_max: u64,
    scan_max: usize,
) -> Result<Option<Write>, StorageError> {
    let Some(first) = first_cursor(storage)? else {
        return Ok(None);
    };
    let last = last_cursor(storage)?;
    // Keep at most `count_max`: everything below `last + 1 - count_max` goes.
    let mut end = first.max((last + 1).saturating_sub(count_max));
    let mut scanned = 0usize;
    storage.scan(
        Family::Events,
        &key(end),
        crate::storage::KEY_MAX,
        &mut |k, v| {
            scanned += 1;
            let old = Recorded::decode(v)
                .map(|r| r.at_us < cutoff_us)
                .unwrap_or(true);
            if old {
                if let Some(cursor) = cursor_of(k) {
                    end = cursor + 1;
                }
            }
            old && scanned < scan_max
        },
    )?;
    if end <= first {
        return Ok(None);
    }
    Ok(Some(Write::DeleteRange {
        family: Family::Events,
        from: key(first).to_vec(),
        to: key(end).to_vec(),
    }))
}

/// The newest durable cursor, which readers wait on: the log writer advances it after each
/// group write that held events. Threads wait with [`EventHead::wait_past`], async tasks on
/// [`EventHead::subscribe`].
pub struct EventHead {
    head: Mutex<u64>,
    changed: Condvar,
    watch: tokio::sync::watch::Sender<u64>,
}

impl Default for EventHead {
    fn default() -> Self {
        EventHead::new(0)
    }
}

impl EventHead {
    pub fn new(head: u64) -> EventHead {
        EventHead {
            head: Mutex::new(head),
            changed: Condvar::new(),
            watch: tokio::sync::watch::channel(head).0,
        }
    }

    pub fn get(&self) -> u64 {
        *self.head.lock().expect("event head poisoned")
    }

    /// Called by the log writer (one thread) once events up to `cursor` are durable.
    pub fn advance(&self, cursor: u64) {
        let mut head = self.head.lock().expect("event head poisoned");
        if cursor > *head {
            *head = cursor;
            self.changed.notify_all();
            self.watch.send_replace(cursor);
        }
    }

    /// Waits until the head is past `cursor` or `timeout` passed; returns the head.
    pub fn wait_past(&self, cursor: u64, timeout: Duration) -> u64 {
        let head = self.head.lock().expect("event head poisoned");
        let (head, _) = self
            .changed
            .wait_timeout_while(head, timeout, |head| *head <= cursor)
            .expect("event head poisoned");
        *head
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn put(storage: &MemoryStorage, cursor: u64, at_us: i64, notice: Notice) {
        let value = Recorded { at_us, notice }.encode();
        storage
            .write(
                vec![Write::Put {
                    family: Family::Events,
                    key: key(cursor).to_vec(),
                    value,
                }],
                false,
            )
            .unwrap();
    }

    fn low(sku: &str) -> Notice {
        Notice::StockLow {
            sku: sku.into(),
            available: 1,
            threshold: 5,
        }
    }

    #[test]
    fn pages_filter_and_bound_their_scan() {
        let storage = MemoryStorage::new();
        for cursor in 1..=10u64 {
            let notice = if cursor % 2 == 0 {
                low("A")
            } else {
                Notice::OrderDelivered { order: cursor }
            };
            put(&storage, cursor, cursor as i64, notice);
        }
        assert_eq!(last_cursor(&storage).unwrap(), 10);
        let (page, reached) = read_after(&storage, 0, TypeSet::ALL, 3, 100).unwrap();
        assert_eq!(
            page.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(reached, 3);
        let lows = TypeSet::of(&[EventType::StockLow]);
        let (page, reached) = read_after(&storage, 3, lows, 100, 100).unwrap();
        assert_eq!(
            page.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![4, 6, 8, 10]
        );
        assert_eq!(reached, 10);
        // The scan bound stops a sparse filter early, and says where.
        let (page, reached) = read_after(&storage, 0, lows, 100, 3).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(reached, 3);
    }

    #[test]
    fn sweep_deletes_by_age_and_by_count() {
        let storage = MemoryStorage::new();
        for cursor in 1..=10u64 {
            put(&storage, cursor, cursor as i64 * 100, low("A"));
        }
        // Older than 450 µs: cursors 1–4.
        let write = sweep(&storage, 450, 1000, 1000).unwrap().unwrap();
        storage.write(vec![write], false).unwrap();
        assert_eq!(first_cursor(&storage).unwrap(), Some(5));
        // At most 3 kept.
        let write = sweep(&storage, 0, 3, 1000).unwrap().unwrap();
        storage.write(vec![write], false).unwrap();
        assert_eq!(first_cursor(&storage).unwrap(), Some(8));
        assert!(sweep(&storage, 0, 3, 1000).unwrap().is_none());
    }

    #[test]
    fn ids_round_trip_and_types_parse() {
        assert_eq!(event_id(255), "evt_00000000000000ff");
        assert_eq!(parse_event_id(&event_id(255)), Some(255));
        assert_eq!(parse_event_id("evt_ff"), None);
        assert_eq!(parse_event_id("ord_00000000000000ff"), None);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("order.placed"), None);
    }

    #[test]
    fn the_head_wakes_waiters() {
        let head = std::sync::Arc::new(EventHead::new(3));
        let waiter = {
            let head = head.clone();
            std::thread::spawn(move || head.wait_past(3, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        head.advance(5);
        assert_eq!(waiter.join().unwrap(), 5);
        assert_eq!(head.wait_past(9, Duration::from_millis(1)), 5);
    }
}

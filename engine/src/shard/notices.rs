//! The public events a shard raises as it applies its own ([`crate::events`]): what to look at
//! before an event applies, and what changed after it. Live only (`Shard::emit`), never on
//! replay, so a recovery raises nothing twice.

use crate::domain::{OrderId, OrderStatus, ReturnId, ShipmentId};
use crate::event::{Event, LineRecord};
use crate::events::{Notice, Recorded};
use crate::state::ShardData;

/// What an event may change that a public event reports: the order's status, and the
/// available units of SKUs whose availability it can lower.
pub(super) struct Before<'e> {
    order: Option<(OrderId, Option<OrderStatus>)>,
    /// (a SKU of [`lowered_skus`] of the event, available units before), for those at or
    /// above the threshold.
    stock: Vec<(&'e str, u64)>,
}

fn order_of(data: &ShardData, event: &Event) -> Option<OrderId> {
    match event {
        Event::OrderPlaced { order, .. } => Some(OrderId(order.id)),
        Event::OrderConfirmed { order, .. }
        | Event::OrderCancelled { order, .. }
        | Event::ShipmentCreated { order, .. }
        | Event::RefundIssued { order, .. } => Some(OrderId(*order)),
        Event::ShipmentUpdated { id, .. } => data.shipments.get(&ShipmentId(*id)).map(|s| s.order),
        Event::ReturnReceived { id, .. } => data.returns.get(&ReturnId(*id)).map(|r| r.order),
        _ => None,
    }
}

/// SKUs whose available units `event` can lower on this shard (reservations, write-offs).
fn lowered_skus(event: &Event) -> Vec<&str> {
    match event {
        Event::StockAdjusted { sku, delta, .. } | Event::StockAdjustedAt { sku, delta, .. }
            if *delta < 0 =>
        {
            vec![sku.as_str()]
        }
        Event::OrderPlaced { order, .. } => order.lines.iter().map(|l| l.sku.as_str()).collect(),
        Event::Reserved { lines, .. } => lines.iter().map(|(sku, _)| sku.as_str()).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn before<'e>(data: &ShardData, event: &'e Event, threshold: u64) -> Before<'e> {
    let order =
        order_of(data, event).map(|id| (id, data.orders.get(&id).map(|order| order.status)));
    let stock = if threshold == 0 {
        Vec::new()
    } else {
        lowered_skus(event)
            .into_iter()
            .filter_map(|sku| Some((sku, data.stock.get(sku)?.available())))
            .filter(|(_, available)| *available >= threshold)
            .collect()
    };
    Before { order, stock }
}

/// The public events `event`, just applied, raised (encoded for the `events` family).
pub(super) fn after(
    data: &ShardData,
    event: &Event,
    before: Before<'_>,
    threshold: u64,
    at_us: i64,
    out: &mut Vec<Vec<u8>>,
) {
    let mut raise = |notice: Notice| out.push(Recorded { at_us, notice }.encode());
    if let Some((id, was)) = before.order {
        if let Some(order) = data.orders.get(&id) {
            let now = order.status;
            let became = |status: OrderStatus| now == status && was != Some(status);
            match event {
                Event::OrderPlaced { .. } | Event::OrderConfirmed { .. }
                    if became(OrderStatus::Confirmed) =>
                {
                    raise(Notice::OrderConfirmed {
                        order: id.0,
                        customer: order.customer.0,
                        lines: order
                            .lines
                            .iter()
                            .map(|line| LineRecord {
                                sku: line.sku.to_string(),
                                qty: line.qty,
                                unit_price: line.unit_price,
                            })
                            .collect(),
                        total: crate::state::order_total(order),
                    });
                }
                Event::OrderCancelled { reason, .. } if became(OrderStatus::Cancelled) => {
                    raise(Notice::OrderCancelled {
                        order: id.0,
                        reason: reason.clone(),
                    });
                }
                Event::ShipmentCreated {
                    id: shipment,
                    carrier,
                    tracking,
                    lines,
                    ..
                } => raise(Notice::OrderShipped {
                    order: id.0,
                    shipment: *shipment,
                    carrier: carrier.clone(),
                    tracking: tracking.clone(),
                    lines: lines.clone(),
                    status: now,
                }),
                Event::ShipmentUpdated {
                    id: shipment,
                    status,
                    note,
                    ..
                } => {
                    raise(Notice::ShipmentUpdated {
                        shipment: *shipment,
                        order: id.0,
                        status: *status,
                        note: note.clone(),
                    });
                    if became(OrderStatus::Delivered) {
                        raise(Notice::OrderDelivered { order: id.0 });
                    }
                }
                Event::ReturnReceived { id: ret, lines, .. } => {
                    raise(Notice::ReturnReceived {
                        ret: *ret,
                        order: id.0,
                        lines: lines.clone(),
                    });
                    if matches!(now, OrderStatus::PartiallyReturned | OrderStatus::Returned) {
                        raise(Notice::OrderReturned {
                            order: id.0,
                            ret: *ret,
                            status: now,
                        });
                    }
                }
                Event::RefundIssued {
                    id: refund, amount, ..
                } => raise(Notice::OrderRefunded {
                    order: id.0,
                    refund: *refund,
                    amount: *amount,
                    refunded: data.refunded(id),
                }),
                _ => {}
            }
        }
    }
    for (sku, was) in before.stock {
        let available = data.stock.get(sku).map_or(0, |stock| stock.available());
        if was >= threshold && available < threshold {
            raise(Notice::StockLow {
                sku: sku.to_string(),
                available,
                threshold,
            });
        }
    }
}

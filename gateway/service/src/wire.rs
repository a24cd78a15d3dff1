//! The one mapping of engine views onto the wire types of `orderd-proto` (HTTP's JSON, and the
//! TCP protocol's frames in [`tcp`]), including time
//! formatting (RFC 3339 UTC, microseconds) and the masking of personal data for auditors.

use chrono::{DateTime, SecondsFormat};
use orderd_engine::supervisor::QuarantinedCommand;
use orderd_engine::{
    CatalogView, CustomerView, OrderView, RefundView, ReturnView, SalesSummary, ShardStatus,
    ShipmentView, StockView,
};
use orderd_proto::{
    CatalogResponse, CustomerRecordResponse, CustomerResponse, ErasedCustomerResponse,
    HourResponse, OrderHistoryResponse, OrderLineResponse, OrderResponse, QuarantineResponse,
    ReceivedLineResponse, RefundResponse, ReturnLineResponse, ReturnResponse, SalesSummaryResponse,
    ShardResponse, ShipmentEventResponse, ShipmentLineResponse, ShipmentResponse, StockResponse,
    TopSkuResponse,
};

/// A public event as every reader sends it: `{"id", "type", "at", "data"}`. Data names the
/// objects by their wire ids; it holds no personal data (no address, no contact data).
pub fn event(stored: &orderd_engine::events::StoredEvent) -> orderd_proto::EventResponse {
    use orderd_engine::events::Notice;
    use orderd_engine::{OrderId, RefundId, ReturnId, ShipmentId};
    use serde_json::json;
    let lines = |lines: &[(String, u32)]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
            .collect()
    };
    let data = match &stored.notice {
        Notice::OrderConfirmed {
            order,
            customer,
            lines,
            total,
        } => json!({
            "order_id": OrderId(*order).to_string(),
            "customer_id": orderd_engine::CustomerId(*customer).to_string(),
            "lines": lines.iter().map(|l| json!({"sku": l.sku, "qty": l.qty, "unit_price": l.unit_price})).collect::<Vec<_>>(),
            "total": total,
        }),
        Notice::OrderCancelled { order, reason } => json!({
            "order_id": OrderId(*order).to_string(),
            "reason": reason,
        }),
        Notice::OrderShipped {
            order,
            shipment,
            carrier,
            tracking,
            lines: shipped,
            status,
        } => json!({
            "order_id": OrderId(*order).to_string(),
            "shipment_id": ShipmentId(*shipment).to_string(),
            "carrier": carrier,
            "tracking_number": tracking,
            "lines": lines(shipped),
            "status": status.as_str(),
        }),
        Notice::OrderDelivered { order } => json!({
            "order_id": OrderId(*order).to_string(),
            "status": "delivered",
        }),
        Notice::OrderReturned { order, ret, status } => json!({
            "order_id": OrderId(*order).to_string(),
            "return_id": ReturnId(*ret).to_string(),
            "status": status.as_str(),
        }),
        Notice::OrderRefunded {
            order,
            refund,
            amount,
            refunded,
        } => json!({
            "order_id": OrderId(*order).to_string(),
            "refund_id": RefundId(*refund).to_string(),
            "amount": amount,
            "refunded": refunded,
        }),
        Notice::ShipmentUpdated {
            shipment,
            order,
            status,
            note,
        } => json!({
            "shipment_id": ShipmentId(*shipment).to_string(),
            "order_id": OrderId(*order).to_string(),
            "status": status.as_str(),
            "note": note,
        }),
        Notice::ReturnReceived { ret, order, lines } => json!({
            "return_id": ReturnId(*ret).to_string(),
            "order_id": OrderId(*order).to_string(),
            "lines": lines.iter().map(|l| json!({"sku": l.sku, "qty": l.qty, "restock": l.restock})).collect::<Vec<_>>(),
        }),
        Notice::StockLow {
            sku,
            available,
            threshold,
        } => json!({
            "sku": sku,
            "available": available,
            "threshold": threshold,
        }),
    };
    orderd_proto::EventResponse {
        id: orderd_engine::events::event_id(stored.cursor),
        kind: stored.notice.kind().as_str().to_string(),
        at: time(stored.at_us),
        data,
    }
}

/// RFC 3339 UTC with microseconds, e.g. `2025-01-02T03:04:05.123456Z`.
pub fn time(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn stock(view: StockView) -> StockResponse {
    StockResponse {
        sku: view.sku,
        on_hand: view.on_hand,
        reserved: view.reserved,
        available: view.available,
        locations: view
            .locations
            .into_iter()
            .map(|l| orderd_proto::StockLocationResponse {
                location: l.location,
                on_hand: l.on_hand,
                reserved: l.reserved,
                available: l.available,
            })
            .collect(),
    }
}

/// A stock location.
pub fn location(view: orderd_engine::LocationView) -> orderd_proto::LocationResponse {
    orderd_proto::LocationResponse {
        id: view.id,
        name: view.name,
        priority: view.priority,
    }
}

/// A catalog price, in the shop's `currency`.
pub fn catalog(view: CatalogView, currency: &str) -> CatalogResponse {
    CatalogResponse {
        sku: view.sku,
        price: view.price,
        currency: currency.to_string(),
        active: view.active,
        updated_at: time(view.updated_at_us),
    }
}

pub fn customer(view: CustomerView) -> CustomerResponse {
    CustomerResponse {
        id: view.id.to_string(),
        name: view.name,
        email: view.email,
        phone: view.phone,
        address: view.address,
        created_at: time(view.created_at_us),
    }
}

/// An erased customer: its id alone.
pub fn erased_customer(view: &CustomerView) -> ErasedCustomerResponse {
    debug_assert!(view.erased);
    ErasedCustomerResponse {
        id: view.id.to_string(),
        erased: true,
    }
}

/// A customer as `GET` answers it: erased (its id alone), masked (see [`customer_masked`]),
/// or in clear.
pub fn customer_record(view: CustomerView, masked: bool) -> CustomerRecordResponse {
    if view.erased {
        CustomerRecordResponse::Erased(erased_customer(&view))
    } else if masked {
        CustomerRecordResponse::Customer(customer_masked(view))
    } else {
        CustomerRecordResponse::Customer(customer(view))
    }
}

/// A customer with its personal data masked, as an auditor sees it: `j***@example.com`.
pub fn customer_masked(view: CustomerView) -> CustomerResponse {
    let mut out = customer(view);
    out.name = mask_text(&out.name);
    out.email = mask_email(&out.email);
    out.phone = out.phone.as_deref().map(mask_text);
    out.address = out.address.as_deref().map(mask_text);
    out
}

/// `jane@example.com` → `j***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}@{domain}", mask_text(local)),
        None => mask_text(email),
    }
}

/// The first character and `***`.
pub fn mask_text(text: &str) -> String {
    match text.chars().next() {
        Some(first) => format!("{first}***"),
        None => String::new(),
    }
}

/// An order. `detailed` adds `shipments`, `history`, `returns`, `refunds` and `refunded`
/// (reads, lists, cancel); a placement answers without them.
pub fn order(view: OrderView, detailed: bool) -> OrderResponse {
    let (returns, refunds, refunded) = if detailed {
        (
            Some(view.returns),
            Some(view.refunds.into_iter().map(refund).collect()),
            Some(view.refunded),
        )
    } else {
        (None, None, None)
    };
    let (shipments, history) = if detailed {
        let history = view
            .history
            .into_iter()
            .map(|h| OrderHistoryResponse {
                at: time(h.at_us),
                status: h.status.as_str().to_string(),
                actor: h.actor,
            })
            .collect();
        (Some(view.shipments), Some(history))
    } else {
        (None, None)
    };
    OrderResponse {
        id: view.id.to_string(),
        customer_id: view.customer_id.to_string(),
        status: view.status.as_str().to_string(),
        lines: view
            .lines
            .into_iter()
            .map(|l| OrderLineResponse {
                sku: l.sku,
                qty: l.qty,
                unit_price: l.unit_price,
                shipped_qty: l.shipped_qty,
                returned_qty: l.returned_qty,
                allocations: l
                    .allocations
                    .into_iter()
                    .map(|(location, qty)| orderd_proto::AllocationResponse { location, qty })
                    .collect(),
            })
            .collect(),
        total: view.total,
        shipping_address: view.shipping_address,
        note: view.note,
        created_at: time(view.created_at_us),
        updated_at: time(view.updated_at_us),
        shipments,
        history,
        customer_erased: view.customer_erased,
        returns,
        refunds,
        refunded,
    }
}

/// A return.
pub fn return_view(view: ReturnView) -> ReturnResponse {
    ReturnResponse {
        id: view.id.to_string(),
        order_id: view.order_id.to_string(),
        status: view.status.as_str().to_string(),
        lines: view
            .lines
            .into_iter()
            .map(|(sku, qty)| ReturnLineResponse { sku, qty })
            .collect(),
        reason: view.reason,
        created_at: time(view.created_at_us),
        received: view
            .received
            .into_iter()
            .map(|l| ReceivedLineResponse {
                sku: l.sku,
                qty: l.qty,
                restock: l.restock,
                location: l.location,
            })
            .collect(),
        received_at: view.received_at_us.map(time),
    }
}

/// A refund.
pub fn refund(view: RefundView) -> RefundResponse {
    RefundResponse {
        id: view.id.to_string(),
        order_id: view.order_id.to_string(),
        amount: view.amount,
        reason: view.reason,
        created_at: time(view.created_at_us),
    }
}

pub fn shard(status: ShardStatus) -> ShardResponse {
    ShardResponse {
        id: status.id,
        state: status.state.as_str().to_string(),
        restarts: status.restarts,
        mailbox_depth: status.mailbox_depth,
        last_seq: status.last_seq,
        orders: status.orders,
        skus: status.skus,
    }
}

pub fn incident(incident: orderd_engine::Incident) -> orderd_proto::IncidentResponse {
    orderd_proto::IncidentResponse {
        id: incident.display_id(),
        at: time(incident.at_us),
        component: incident.component,
        kind: incident.kind,
        detail: incident.detail,
        action: incident.action,
        recovered_at: incident.recovered_at_us.map(time),
    }
}

/// A command fingerprint as the API shows it: 16 lowercase hex digits.
pub fn fingerprint(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

/// A fingerprint from a path: exactly 16 hex digits (either case), else `None`.
pub fn parse_fingerprint(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

pub fn quarantined(entry: QuarantinedCommand) -> QuarantineResponse {
    QuarantineResponse {
        fingerprint: fingerprint(entry.fingerprint),
        command: entry.command,
        message: entry.message,
        quarantined_at: time(entry.at_us),
    }
}

/// A shipment with its lines and carrier events.
pub fn shipment(view: ShipmentView) -> ShipmentResponse {
    ShipmentResponse {
        id: view.id.to_string(),
        order_id: view.order_id.to_string(),
        carrier: view.carrier,
        tracking_number: view.tracking_number,
        status: view.status.as_str().to_string(),
        lines: view
            .lines
            .into_iter()
            .map(|(sku, qty)| ShipmentLineResponse { sku, qty })
            .collect(),
        events: view
            .events
            .into_iter()
            .map(|e| ShipmentEventResponse {
                at: time(e.at_us),
                status: e.status.as_str().to_string(),
                note: e.note,
            })
            .collect(),
    }
}

/// A sales summary with its `top` best-selling SKUs and its hours.
pub fn sales_summary(summary: &SalesSummary, top: usize) -> SalesSummaryResponse {
    SalesSummaryResponse {
        orders: summary.orders,
        cancelled: summary.cancelled,
        units: summary.units,
        revenue: summary.revenue,
        returned_units: summary.returned_units,
        refunds: summary.refunds,
        net_revenue: summary.net_revenue(),
        top_skus: summary
            .top_skus(top)
            .into_iter()
            .map(|(sku, units, revenue)| TopSkuResponse {
                sku,
                units,
                revenue,
            })
            .collect(),
        by_hour: summary
            .by_hour
            .iter()
            .map(|(hour, (orders, revenue))| HourResponse {
                hour: time(*hour),
                orders: *orders,
                revenue: *revenue,
            })
            .collect(),
    }
}

/// The same views in the TCP protocol's frames (`orderd_proto::tcp`), which carry times as
/// microseconds rather than RFC 3339 text.
pub mod tcp {
    use orderd_engine::{CustomerView, OrderView, ShipmentView, StockView};
    use orderd_proto::tcp as msg;

    /// An order in a frame; `detailed` adds shipments and history (as over HTTP).
    pub fn order(view: OrderView, detailed: bool) -> msg::Order {
        let (shipments, history) = if detailed {
            (
                view.shipments,
                view.history
                    .into_iter()
                    .map(|h| msg::HistoryStep {
                        at_us: h.at_us,
                        status: h.status.as_str().to_string(),
                        actor: h.actor,
                    })
                    .collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        msg::Order {
            id: view.id.to_string(),
            customer_id: view.customer_id.to_string(),
            status: view.status.as_str().to_string(),
            lines: view
                .lines
                .into_iter()
                .map(|l| msg::OrderLine {
                    sku: l.sku,
                    qty: l.qty,
                    unit_price: l.unit_price,
                    shipped_qty: l.shipped_qty,
                })
                .collect(),
            total: view.total,
            shipping_address: view.shipping_address,
            note: view.note,
            created_at_us: view.created_at_us,
            updated_at_us: view.updated_at_us,
            shipments,
            history,
        }
    }

    /// A SKU's stock in a frame.
    pub fn stock(view: StockView) -> msg::Stock {
        msg::Stock {
            sku: view.sku,
            on_hand: view.on_hand,
            reserved: view.reserved,
            available: view.available,
        }
    }

    /// A customer in a frame, masked for auditors as over HTTP.
    pub fn customer(view: CustomerView, masked: bool) -> msg::Customer {
        let created_at_us = view.created_at_us;
        let json = if masked {
            super::customer_masked(view)
        } else {
            super::customer(view)
        };
        msg::Customer {
            id: json.id,
            name: json.name,
            email: json.email,
            phone: json.phone,
            address: json.address,
            created_at_us,
        }
    }

    /// A shipment in a frame.
    pub fn shipment(view: ShipmentView) -> msg::Shipment {
        msg::Shipment {
            id: view.id.to_string(),
            order_id: view.order_id.to_string(),
            carrier: view.carrier,
            tracking_number: view.tracking_number,
            status: view.status.as_str().to_string(),
            lines: view
                .lines
                .into_iter()
                .map(|(sku, qty)| msg::ShipmentLine { sku, qty })
                .collect(),
            events: view
                .events
                .into_iter()
                .map(|e| msg::ShipmentEvent {
                    at_us: e.at_us,
                    status: e.status.as_str().to_string(),
                    note: e.note,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_engine::{CustomerId, HistoryView, LineView, OrderId, OrderStatus};

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(time(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn fingerprints_are_16_hex_digits_both_ways() {
        assert_eq!(fingerprint(0x5c1f_0e6b_2a9d_4471), "5c1f0e6b2a9d4471");
        assert_eq!(fingerprint(1), "0000000000000001");
        for value in [0, 1, 0x5c1f_0e6b_2a9d_4471, u64::MAX] {
            assert_eq!(parse_fingerprint(&fingerprint(value)), Some(value));
        }
        assert_eq!(
            parse_fingerprint("5C1F0E6B2A9D4471"),
            Some(0x5c1f_0e6b_2a9d_4471)
        );
        for bad in [
            "",
            "5c1f0e6b2a9d447",
            "5c1f0e6b2a9d44711",
            "+c1f0e6b2a9d4471",
            "5c1f0e6b2a9d447g",
            "0x1f0e6b2a9d4471",
            " 5c1f0e6b2a9d447",
            "５c1f0e6b2a9d44",
        ] {
            assert_eq!(parse_fingerprint(bad), None, "{bad:?}");
        }
        let entry = quarantined(QuarantinedCommand {
            fingerprint: 0xab,
            command: "adjust_stock".into(),
            message: "boom".into(),
            at_us: 1_700_000_000_123_456,
        });
        assert_eq!(
            entry,
            QuarantineResponse {
                fingerprint: "00000000000000ab".into(),
                command: "adjust_stock".into(),
                message: "boom".into(),
                quarantined_at: "2023-11-14T22:13:20.123456Z".into(),
            }
        );
    }

    #[test]
    fn personal_data_is_masked_for_auditors() {
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        let masked = customer_masked(CustomerView {
            id: CustomerId(1),
            name: "Jane Doe".into(),
            email: "jane@example.com".into(),
            phone: Some("+41 79 000 00 00".into()),
            address: None,
            created_at_us: 0,
            erased: false,
        });
        assert_eq!(masked.name, "J***");
        assert_eq!(masked.email, "j***@example.com");
        assert_eq!(masked.phone.as_deref(), Some("+***"));
        assert_eq!(masked.address, None);
    }

    #[test]
    fn orders_render_with_or_without_details() {
        let view = OrderView {
            id: OrderId::new(1, 2),
            customer_id: CustomerId::new(0, 5),
            status: OrderStatus::Confirmed,
            lines: vec![LineView {
                sku: "A".into(),
                qty: 2,
                unit_price: 150,
                shipped_qty: 0,
                returned_qty: 0,
                allocations: vec![("default".into(), 2)],
            }],
            total: 300,
            shipping_address: None,
            note: Some("gift".into()),
            created_at_us: 0,
            updated_at_us: 1,
            history: vec![HistoryView {
                at_us: 0,
                status: OrderStatus::Confirmed,
                actor: "key_1".into(),
            }],
            shipments: vec![],
            customer_erased: false,
            returns: vec![],
            refunds: vec![],
            refunded: 0,
        };
        let brief = serde_json::to_value(order(view.clone(), false)).unwrap();
        assert_eq!(brief["id"], "ord_0001000000000002");
        assert_eq!(brief["status"], "confirmed");
        assert_eq!(brief["lines"][0]["shipped_qty"], 0);
        assert!(brief.get("history").is_none());
        let full = serde_json::to_value(order(view, true)).unwrap();
        assert_eq!(full["history"][0]["actor"], "key_1");
        assert_eq!(full["shipments"], serde_json::json!([]));
    }
}

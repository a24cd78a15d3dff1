//! The protocol-neutral inputs of the operations ([`crate::ops`]), and the one mapping of each
//! front door's decoded request onto them: HTTP's JSON bodies and queries and the TCP
//! protocol's frames (both `orderd-proto` types) become the same input, so neither front door
//! builds the other's types.

use orderd_proto::tcp as msg;
use orderd_proto::{
    CatalogPriceRequest, CatalogQuery, CreateCustomerRequest, CreateRefundRequest,
    CreateReturnRequest, CreateShipmentRequest, ListOrdersQuery, OrderLineRequest,
    PlaceOrderRequest, ReceiveLineRequest, ReceiveReturnRequest, ReturnLineRequest,
    ShipmentEventRequest, ShipmentLineRequest, StockAdjustmentRequest,
};

use crate::error::ApiError;
use crate::validate;

/// An order to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// As sent: an id that does not parse names no customer.
    pub customer_id: String,
    pub lines: Vec<OrderLineInput>,
    pub shipping_address: Option<String>,
    pub note: Option<String>,
}

/// One line of an order to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLineInput {
    pub sku: String,
    pub qty: u32,
    /// As sent: HTTP may omit it where the catalog prices the order; a TCP frame always
    /// carries one ([`crate::ops::place_orders`] decides which applies).
    pub unit_price: Option<u64>,
}

/// A catalog price to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogPriceInput {
    pub price: u64,
    /// `true` when the request did not say.
    pub active: bool,
}

/// Which catalog page to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogQueryInput {
    /// Items per page (checked against 1–1000 by the operation); `None`: the default.
    pub limit: Option<u64>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// A shipment to create: without lines, everything not yet shipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipmentInput {
    pub carrier: String,
    pub lines: Option<Vec<ShipmentLineInput>>,
}

/// One line of a shipment to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipmentLineInput {
    pub sku: String,
    pub qty: u32,
}

/// A return to open: units of SKUs of the order, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnInput {
    pub lines: Vec<ShipmentLineInput>,
    pub reason: String,
}

/// A return's units as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveInput {
    pub lines: Vec<ReceiveLineInput>,
}

/// One received line: units of a SKU, back to stock or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveLineInput {
    pub sku: String,
    pub qty: u32,
    pub restock: bool,
}

/// A refund to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundInput {
    pub amount: u64,
    pub reason: String,
}

impl From<CreateReturnRequest> for ReturnInput {
    fn from(request: CreateReturnRequest) -> ReturnInput {
        ReturnInput {
            lines: request
                .lines
                .into_iter()
                .map(|ReturnLineRequest { sku, qty }| ShipmentLineInput { sku, qty })
                .collect(),
            reason: request.reason,
        }
    }
}

impl From<ReceiveReturnRequest> for ReceiveInput {
    fn from(request: ReceiveReturnRequest) -> ReceiveInput {
        ReceiveInput {
            lines: request
                .lines
                .into_iter()
                .map(
                    |ReceiveLineRequest { sku, qty, restock }| ReceiveLineInput {
                        sku,
                        qty,
                        restock,
                    },
                )
                .collect(),
        }
    }
}

impl From<CreateRefundRequest> for RefundInput {
    fn from(request: CreateRefundRequest) -> RefundInput {
        RefundInput {
            amount: request.amount,
            reason: request.reason,
        }
    }
}

/// A carrier event on a shipment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipmentEventInput {
    /// `in_transit`, `delivered` or `failed`.
    pub status: String,
    pub note: Option<String>,
}

/// A stock adjustment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockAdjustmentInput {
    pub delta: i64,
    pub reason: String,
    /// The location whose units change; `None`: `default`.
    pub location: Option<String>,
}

/// A customer to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerInput {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
}

/// A change of a customer's contact data (`PATCH`): the fields present replace the stored
/// ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerUpdateInput {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
}

impl From<orderd_proto::UpdateCustomerRequest> for CustomerUpdateInput {
    fn from(request: orderd_proto::UpdateCustomerRequest) -> CustomerUpdateInput {
        CustomerUpdateInput {
            name: request.name,
            email: request.email,
            phone: request.phone,
            address: request.address,
        }
    }
}

/// Which orders to list, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderQuery {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// Items per page (checked against 1–1000 by the operation); `None`: the default.
    pub limit: Option<u64>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

impl From<PlaceOrderRequest> for NewOrder {
    fn from(request: PlaceOrderRequest) -> NewOrder {
        NewOrder {
            customer_id: request.customer_id,
            lines: request
                .lines
                .into_iter()
                .map(
                    |OrderLineRequest {
                         sku,
                         qty,
                         unit_price,
                     }| OrderLineInput {
                        sku,
                        qty,
                        unit_price,
                    },
                )
                .collect(),
            shipping_address: request.shipping_address,
            note: request.note,
        }
    }
}

impl From<msg::PlaceOrder> for NewOrder {
    fn from(order: msg::PlaceOrder) -> NewOrder {
        NewOrder {
            customer_id: order.customer_id,
            lines: order
                .lines
                .into_iter()
                .map(
                    |msg::Line {
                         sku,
                         qty,
                         unit_price,
                     }| OrderLineInput {
                        sku,
                        qty,
                        unit_price: Some(unit_price),
                    },
                )
                .collect(),
            shipping_address: order.shipping_address,
            note: order.note,
        }
    }
}

impl From<CreateShipmentRequest> for ShipmentInput {
    fn from(request: CreateShipmentRequest) -> ShipmentInput {
        ShipmentInput {
            carrier: request.carrier,
            lines: request.lines.map(|lines| {
                lines
                    .into_iter()
                    .map(|ShipmentLineRequest { sku, qty }| ShipmentLineInput { sku, qty })
                    .collect()
            }),
        }
    }
}

impl From<msg::CreateShipment> for ShipmentInput {
    fn from(request: msg::CreateShipment) -> ShipmentInput {
        ShipmentInput {
            carrier: request.carrier,
            lines: request.lines.map(|lines| {
                lines
                    .into_iter()
                    .map(|msg::ShipmentLine { sku, qty }| ShipmentLineInput { sku, qty })
                    .collect()
            }),
        }
    }
}

impl From<ShipmentEventRequest> for ShipmentEventInput {
    fn from(request: ShipmentEventRequest) -> ShipmentEventInput {
        ShipmentEventInput {
            status: request.status,
            note: request.note,
        }
    }
}

impl From<StockAdjustmentRequest> for StockAdjustmentInput {
    fn from(request: StockAdjustmentRequest) -> StockAdjustmentInput {
        StockAdjustmentInput {
            delta: request.delta,
            reason: request.reason,
            location: request.location,
        }
    }
}

impl From<msg::AdjustStock> for StockAdjustmentInput {
    fn from(request: msg::AdjustStock) -> StockAdjustmentInput {
        StockAdjustmentInput {
            delta: request.delta,
            reason: request.reason,
            // The TCP frame predates locations: it adjusts `default`.
            location: None,
        }
    }
}

impl From<CatalogPriceRequest> for CatalogPriceInput {
    fn from(request: CatalogPriceRequest) -> CatalogPriceInput {
        CatalogPriceInput {
            price: request.price,
            active: request.active.unwrap_or(true),
        }
    }
}

impl TryFrom<CatalogQuery> for CatalogQueryInput {
    type Error = ApiError;

    /// A `limit` that is not a number is refused as one out of bounds.
    fn try_from(query: CatalogQuery) -> Result<CatalogQueryInput, ApiError> {
        Ok(CatalogQueryInput {
            limit: validate::limit_number(query.limit.as_deref())?,
            after: query.after,
        })
    }
}

impl From<CreateCustomerRequest> for CustomerInput {
    fn from(request: CreateCustomerRequest) -> CustomerInput {
        CustomerInput {
            name: request.name,
            email: request.email,
            phone: request.phone,
            address: request.address,
        }
    }
}

impl From<msg::CreateCustomer> for CustomerInput {
    fn from(request: msg::CreateCustomer) -> CustomerInput {
        CustomerInput {
            name: request.name,
            email: request.email,
            phone: request.phone,
            address: request.address,
        }
    }
}

impl TryFrom<ListOrdersQuery> for OrderQuery {
    type Error = ApiError;

    /// A query string's `limit` is text: one that is not a number is refused here, with the
    /// same answer as one out of bounds.
    fn try_from(query: ListOrdersQuery) -> Result<OrderQuery, ApiError> {
        Ok(OrderQuery {
            limit: validate::limit_number(query.limit.as_deref())?,
            customer_id: query.customer_id,
            status: query.status,
            after: query.after,
        })
    }
}

impl From<msg::ListOrders> for OrderQuery {
    fn from(request: msg::ListOrders) -> OrderQuery {
        OrderQuery {
            customer_id: request.customer_id,
            status: request.status,
            limit: request.limit.map(u64::from),
            after: request.after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_front_doors_map_an_order_onto_the_same_input() {
        let http = NewOrder::from(PlaceOrderRequest {
            customer_id: "cus_1".into(),
            lines: vec![OrderLineRequest {
                sku: "A".into(),
                qty: 2,
                unit_price: Some(150),
            }],
            shipping_address: Some("1 Main St".into()),
            note: None,
        });
        let tcp = NewOrder::from(msg::PlaceOrder {
            customer_id: "cus_1".into(),
            lines: vec![msg::Line {
                sku: "A".into(),
                qty: 2,
                unit_price: 150,
            }],
            shipping_address: Some("1 Main St".into()),
            note: None,
            idempotency_key: Some("k".into()),
        });
        assert_eq!(http, tcp);
    }

    #[test]
    fn a_limit_that_is_not_a_number_is_refused_naming_it() {
        let query = |limit: &str| ListOrdersQuery {
            limit: Some(limit.into()),
            ..ListOrdersQuery::default()
        };
        assert_eq!(OrderQuery::try_from(query("20")).unwrap().limit, Some(20));
        match OrderQuery::try_from(query("x")) {
            Err(ApiError::InvalidRequest { param, .. }) => assert_eq!(param, "limit"),
            other => panic!("{other:?}"),
        }
        let tcp = OrderQuery::from(msg::ListOrders {
            limit: Some(20),
            ..msg::ListOrders::default()
        });
        assert_eq!(tcp.limit, Some(20));
    }
}

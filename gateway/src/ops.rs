//! The operations both front doors serve — HTTP (`routes`) and the binary TCP protocol
//! ([`crate::tcp`]) — once a request is decoded: the role check, validation, the engine call,
//! sealing and opening personal data, and the audit entry. Each front door only decodes its
//! bytes into these arguments and encodes the answer, so the two give the same answers, roles
//! and error codes by construction.

use orderd_engine::{
    CustomerId, CustomerView, Engine, Idempotency, NewCustomer, NewShipment, OrderCursor,
    OrderFilter, OrderId, OrderStatus, OrderView, PlaceOrder, ShipmentId, ShipmentStatus,
    ShipmentView, StockView,
};
use orderd_proto::{
    CreateCustomerRequest, CreateShipmentRequest, ListOrdersQuery, PlaceOrderRequest,
    ShipmentEventRequest, StockAdjustmentRequest,
};

use sha2::{Digest, Sha256};

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::idem::Claim;
use crate::roles::{self, Role};
use crate::validate;
use crate::vault::Vault;

/// First 16 bytes of SHA-256 over the raw body: a retry must send the same bytes (over TCP, the same payload).
pub fn request_hash(body: &[u8]) -> u128 {
    let digest = Sha256::digest(body);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Longest carrier name.
pub const CARRIER_CHARS_MAX: usize = 100;

/// What every operation works with.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub vault: &'a Vault,
    pub audit: &'a AuditLog,
}

impl<'a> Ctx<'a> {
    pub fn new(engine: &'a Engine, vault: &'a Vault, audit: &'a AuditLog) -> Ctx<'a> {
        Ctx {
            engine,
            vault,
            audit,
        }
    }
}

/// Places an order. `key` is the idempotency key as the client sent it (validated here) and
/// `request_hash` identifies the request's bytes: a repeat with the same key must send the
/// same bytes. Answers the order opened.
pub async fn place_order(
    ctx: Ctx<'_>,
    caller: &Caller,
    request: PlaceOrderRequest,
    key: Option<String>,
    request_hash: u128,
) -> Result<OrderView, ApiError> {
    caller.require(roles::ORDER_PLACE)?;
    if let Some(key) = &key {
        validate::idempotency_key(key)?;
    }
    let lines = validate::order_lines(&request.lines)?;
    validate::optional_personal_text(
        "shipping_address",
        request.shipping_address.as_deref(),
        validate::ADDRESS_CHARS_MAX,
    )?;
    validate::optional_text_max("note", request.note.as_deref(), validate::NOTE_CHARS_MAX)?;
    // An id that cannot parse names no customer: the same answer as a well-formed unknown one.
    let customer_id: CustomerId = request
        .customer_id
        .parse()
        .map_err(|()| ApiError::UnknownCustomer)?;
    caller.may_see_customer(customer_id)?;
    let idempotency = key.map(|key| Idempotency {
        // Scoped by API key: two clients choosing the same key never collide.
        key: format!("{}:{key}", caller.key_id),
        request_hash,
    });
    let started_us = chrono::Utc::now().timestamp_micros();
    let view = ctx
        .engine
        .place_order(PlaceOrder {
            customer_id,
            lines,
            shipping_address: ctx.vault.seal_shipping_address(request.shipping_address),
            note: request.note,
            idempotency,
            actor: caller.key_id.clone(),
        })
        .await?;
    // An order created before this request is an idempotent repeat (see `record_once`).
    let detail = format!(
        "customer={} lines={} total={}",
        view.customer_id,
        view.lines.len(),
        view.total
    );
    ctx.audit
        .record_once(
            caller,
            "order.place",
            view.id.to_string(),
            detail,
            started_us,
            view.created_at_us,
        )
        .await?;
    // A replay answers the stored order, sealed under whichever data key sealed it then.
    Ok(ctx.vault.open_order(view)?)
}

/// Reads an order (opened).
pub async fn get_order(ctx: Ctx<'_>, caller: &Caller, id: &str) -> Result<OrderView, ApiError> {
    caller.require(roles::ORDER_READ)?;
    let id: OrderId = id.parse().map_err(|()| ApiError::not_found())?;
    let view = ctx.engine.order(id).await?;
    caller.may_see_customer(view.customer_id)?;
    Ok(ctx.vault.open_order(view)?)
}

/// Lists orders, newest first: the page (opened) and the cursor of the next one.
pub async fn list_orders(
    ctx: Ctx<'_>,
    caller: &Caller,
    query: &ListOrdersQuery,
) -> Result<(Vec<OrderView>, Option<String>), ApiError> {
    caller.require(roles::ORDER_LIST)?;
    let mut customer_id = match query.customer_id.as_deref() {
        Some(text) => Some(text.parse::<CustomerId>().map_err(|()| {
            ApiError::invalid("customer_id", "customer_id is not a customer id (cus_…)")
        })?),
        None => None,
    };
    if let Some(own) = caller.customer_scope()? {
        if customer_id.is_some_and(|asked| asked != own) {
            return Err(ApiError::not_found());
        }
        customer_id = Some(own);
    }
    let status = match query.status.as_deref() {
        Some(text) => Some(OrderStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "status is one of confirmed, partially_shipped, shipped, delivered, cancelled",
            )
        })?),
        None => None,
    };
    let limit = validate::limit(query.limit.as_deref())?;
    let after = match query.after.as_deref() {
        Some(text) => Some(text.parse::<OrderCursor>().map_err(|()| {
            ApiError::invalid(
                "after",
                "after must be the `next` cursor of a previous page",
            )
        })?),
        None => None,
    };
    let page = ctx
        .engine
        .list_orders(OrderFilter {
            customer_id,
            status,
            limit,
            after,
        })
        .await?;
    debug_assert!(page.items.len() <= limit);
    let items = page
        .items
        .into_iter()
        .map(|view| Ok(ctx.vault.open_order(view)?))
        .collect::<Result<_, ApiError>>()?;
    Ok((items, page.next.map(|cursor| cursor.to_string())))
}

/// Cancels an order (opened); cancelling a cancelled order answers it again. `key` and
/// `request_hash` are the request's Idempotency-Key, as for every mutation ([`Claim`]).
pub async fn cancel_order(
    ctx: Ctx<'_>,
    caller: &Caller,
    id: &str,
    reason: Option<String>,
    key: Option<String>,
    request_hash: u128,
) -> Result<OrderView, ApiError> {
    caller.require(roles::ORDER_CANCEL)?;
    let id: OrderId = id.parse().map_err(|()| ApiError::not_found())?;
    validate::optional_text_max("reason", reason.as_deref(), validate::REASON_CHARS_MAX)?;
    if caller.customer_scope()?.is_some() {
        // The owner of an order never changes, so checking it first is race-free.
        let view = ctx.engine.order(id).await?;
        caller.may_see_customer(view.customer_id)?;
    }
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let started_us = chrono::Utc::now().timestamp_micros();
    let view = ctx
        .engine
        .cancel_order_with(id, reason, &caller.key_id, claim.idempotency())
        .await?;
    // Cancelling a cancelled order is a repeat, and so is a replay under the key (see
    // `record_once`). The reason is free text and stays out of the audit trail.
    let cancelled_at_us = view
        .history
        .iter()
        .rev()
        .find(|step| step.status == OrderStatus::Cancelled)
        .map_or(started_us, |step| step.at_us);
    ctx.audit
        .record_once(
            caller,
            "order.cancel",
            view.id.to_string(),
            "",
            started_us,
            cancelled_at_us,
        )
        .await?;
    Ok(ctx.vault.open_order(view)?)
}

/// Ships lines of an order (all that is left without `lines`). A replay under the
/// Idempotency-Key answers the shipment as it was answered, and ships nothing more.
pub async fn create_shipment(
    ctx: Ctx<'_>,
    caller: &Caller,
    order_id: &str,
    request: CreateShipmentRequest,
    key: Option<String>,
    request_hash: u128,
) -> Result<ShipmentView, ApiError> {
    caller.require(roles::SHIPMENT_WRITE)?;
    let order_id: OrderId = order_id.parse().map_err(|()| ApiError::not_found())?;
    let carrier = request.carrier.trim();
    if carrier.is_empty() || carrier.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "carrier",
            "carrier is a non-empty name without control characters",
        ));
    }
    validate::text_max("carrier", carrier, CARRIER_CHARS_MAX)?;
    let lines = request.lines.map(validate::shipment_lines).transpose()?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let shipment = NewShipment {
        order_id,
        carrier: carrier.to_string(),
        lines,
        actor: caller.key_id.clone(),
    };
    let view = ctx.engine.ship_with(shipment, claim.idempotency()).await?;
    let detail = format!("order={order_id} units={}", shipment_units(&view));
    claim
        .record(
            ctx.audit,
            caller,
            "shipment.create",
            view.id.to_string(),
            detail,
        )
        .await?;
    Ok(view)
}

/// Records a carrier event on a shipment. A replay under the Idempotency-Key answers the
/// shipment as it was answered, and records nothing more.
pub async fn shipment_event(
    ctx: Ctx<'_>,
    caller: &Caller,
    id: &str,
    request: ShipmentEventRequest,
    key: Option<String>,
    request_hash: u128,
) -> Result<ShipmentView, ApiError> {
    caller.require(roles::SHIPMENT_WRITE)?;
    let id: ShipmentId = id.parse().map_err(|()| ApiError::not_found())?;
    let status = ShipmentStatus::parse_event(&request.status).ok_or_else(|| {
        ApiError::invalid("status", "status is one of in_transit, delivered, failed")
    })?;
    validate::optional_text_max("note", request.note.as_deref(), validate::NOTE_CHARS_MAX)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let view = ctx
        .engine
        .shipment_event_with(
            id,
            status,
            request.note,
            &caller.key_id,
            claim.idempotency(),
        )
        .await?;
    claim
        .record(
            ctx.audit,
            caller,
            "shipment.event",
            id.to_string(),
            status.as_str(),
        )
        .await?;
    Ok(view)
}

/// The units a shipment moves, summed in `u64`: up to 100 lines of up to `u32::MAX` units (an
/// order placed before `LINE_QTY_MAX`) would wrap a `u32`.
fn shipment_units(view: &ShipmentView) -> u64 {
    view.lines.iter().map(|(_, qty)| u64::from(*qty)).sum()
}

/// Reads a SKU's stock.
pub async fn get_stock(ctx: Ctx<'_>, caller: &Caller, sku: &str) -> Result<StockView, ApiError> {
    caller.require(roles::STOCK_READ)?;
    validate::sku("sku", sku)?;
    Ok(ctx.engine.stock(sku).await?)
}

/// Adjusts a SKU's stock by a non-zero delta of at most `STOCK_DELTA_MAX` either way. A
/// replay under the Idempotency-Key answers the stock as the first adjustment left it, and
/// adjusts nothing.
pub async fn adjust_stock(
    ctx: Ctx<'_>,
    caller: &Caller,
    sku: &str,
    request: StockAdjustmentRequest,
    key: Option<String>,
    request_hash: u128,
) -> Result<StockView, ApiError> {
    caller.require(roles::STOCK_ADJUST)?;
    validate::sku("sku", sku)?;
    validate::stock_delta(request.delta)?;
    validate::text_max("reason", &request.reason, validate::REASON_CHARS_MAX)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let view = ctx
        .engine
        .adjust_stock_with(
            sku,
            request.delta,
            &request.reason,
            &caller.key_id,
            claim.idempotency(),
        )
        .await?;
    let detail = format!("delta={:+}", request.delta);
    claim
        .record(ctx.audit, caller, "stock.adjust", sku, detail)
        .await?;
    Ok(view)
}

/// Creates a customer; answers it opened. A replay under the Idempotency-Key answers the
/// same customer, and creates none.
pub async fn create_customer(
    ctx: Ctx<'_>,
    caller: &Caller,
    request: CreateCustomerRequest,
    key: Option<String>,
    request_hash: u128,
) -> Result<CustomerView, ApiError> {
    caller.require(roles::CUSTOMER_CREATE)?;
    validate::customer(&request)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let customer = ctx.vault.seal_customer(NewCustomer {
        name: request.name,
        email: request.email,
        phone: request.phone,
        address: request.address,
    });
    let view = ctx
        .engine
        .create_customer_with(customer, claim.idempotency())
        .await?;
    claim
        .record(
            ctx.audit,
            caller,
            "customer.create",
            view.id.to_string(),
            "",
        )
        .await?;
    Ok(ctx.vault.open_customer(view)?)
}

/// Reads a customer, opened; the flag says whether the caller sees it masked (auditors).
pub async fn get_customer(
    ctx: Ctx<'_>,
    caller: &Caller,
    id: &str,
) -> Result<(CustomerView, bool), ApiError> {
    caller.require(roles::CUSTOMER_READ)?;
    let id: CustomerId = id.parse().map_err(|()| ApiError::not_found())?;
    caller.may_see_customer(id)?;
    let view = ctx.vault.open_customer(ctx.engine.customer(id).await?)?;
    Ok((view, caller.role == Role::Auditor))
}

#[cfg(test)]
mod tests {
    use orderd_engine::{ShipmentId, ShipmentStatus};

    use super::*;

    /// The audit detail of a shipment counts its units in 64 bits: two lines of `u32::MAX`
    /// (orders placed before `LINE_QTY_MAX` may hold them) do not wrap.
    #[test]
    fn shipment_units_do_not_wrap() {
        let view = ShipmentView {
            id: ShipmentId::new(0, 1),
            order_id: OrderId::new(0, 1),
            carrier: "DHL".into(),
            tracking_number: "T".into(),
            status: ShipmentStatus::Shipped,
            lines: vec![("A".into(), u32::MAX), ("B".into(), u32::MAX)],
            events: Vec::new(),
        };
        assert_eq!(shipment_units(&view), 2 * u64::from(u32::MAX));
    }
}

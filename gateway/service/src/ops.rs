//! The operations both front doors serve — HTTP and the binary TCP protocol, in
//! `orderd-gateway` — once a request is decoded: the role check, validation, the engine call,
//! sealing and opening personal data, and the audit entry. Each front door only decodes its
//! bytes into these arguments ([`crate::input`]) and encodes the answer, so the two give the
//! same answers, roles and error codes by construction.
//!
//! **Roles, once.** An operation runs only with an [`Allowed`] permission, which only [`allow`]
//! makes, by checking the caller's role against the operation's [`Operation::ROLES`]: the
//! role table of an operation is named in one place and checked once. A front door asks for
//! the permission before it decodes the request, so a caller who may not use an operation
//! gets its 403 (a `customer` key its 404) before any 400 about the request.
//!
//! **Prices, in one place.** [`place_orders`] decides each order's prices ([`Pricing`]): a
//! `customer` key's orders, and with `orders.client_prices = false` every key's, take the
//! catalog's price, read from the shards that own the SKUs just before the order is placed
//! (one message per shard for the whole batch); other keys send their own.
//!
//! **Idempotency keys, once.** Operations take an [`IdempotencyKey`], which only its
//! validation makes: a front door validates the key where it reads it (HTTP: the header, before
//! the body; TCP: the frame's body), and nothing validates it again.

use std::collections::HashMap;

use orderd_engine::{
    CatalogView, CommandError, CustomerId, CustomerUpdate, CustomerView, Engine, Idempotency,
    NewCustomer, NewRefund, NewReturn, NewShipment, OrderCursor, OrderFilter, OrderId, OrderStatus,
    OrderView, PlaceOrder, RefundView, ReturnId, ReturnView, ShipmentId, ShipmentStatus,
    ShipmentView, StockView,
};
use std::marker::PhantomData;

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::idem::{Claim, IdempotencyKey};
use crate::input::{
    CatalogPriceInput, CatalogQueryInput, CustomerInput, CustomerUpdateInput, NewOrder, OrderQuery,
    ReceiveInput, RefundInput, ReturnInput, ShipmentEventInput, ShipmentInput,
    StockAdjustmentInput,
};
use crate::roles::{Role, RoleSet};
use crate::validate;
use crate::vault::Vault;
use crate::wire;

/// Longest carrier name.
pub const CARRIER_CHARS_MAX: usize = 100;

/// How orders are priced and what currency catalog prices are in (`shop.currency`,
/// `orders.client_prices`): passed explicitly to the operations that price or show prices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pricing {
    /// The shop's currency, an ISO 4217 code (`shop.currency`).
    pub currency: String,
    /// Whether keys other than `customer` keys send their own `unit_price`
    /// (`orders.client_prices`); when not, the catalog prices every order.
    pub client_prices: bool,
}

impl Pricing {
    /// Whether the catalog prices the orders `caller` places: always for a `customer` key
    /// (API.md: it can no longer order at a price of its choosing), for every key when
    /// `orders.client_prices` is off.
    pub fn by_catalog(&self, caller: &Caller) -> bool {
        caller.role == Role::Customer || !self.client_prices
    }
}

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

/// An operation, with the roles that may run it.
pub trait Operation {
    const ROLES: RoleSet;
}

/// The operations, each with its row of the role table ([`crate::roles`]).
pub mod op {
    use super::Operation;
    use crate::roles::{self, RoleSet};

    macro_rules! operations {
        ($($(#[$doc:meta])* $name:ident => $roles:expr;)*) => {$(
            $(#[$doc])*
            pub struct $name;
            impl Operation for $name {
                const ROLES: RoleSet = $roles;
            }
        )*};
    }

    operations! {
        /// [`super::place_order`], [`super::place_orders`].
        PlaceOrder => roles::ORDER_PLACE;
        /// `POST /v1/orders/bulk` (each line is then a [`PlaceOrder`]).
        BulkImport => roles::ORDER_BULK;
        /// [`super::get_order`].
        GetOrder => roles::ORDER_READ;
        /// [`super::list_orders`].
        ListOrders => roles::ORDER_LIST;
        /// [`super::cancel_order`].
        CancelOrder => roles::ORDER_CANCEL;
        /// [`super::create_shipment`], [`super::shipment_event`].
        WriteShipment => roles::SHIPMENT_WRITE;
        /// [`super::create_return`].
        CreateReturn => roles::RETURN_CREATE;
        /// [`super::receive_return`].
        ReceiveReturn => roles::RETURN_RECEIVE;
        /// [`super::get_return`].
        GetReturn => roles::RETURN_READ;
        /// [`super::create_refund`].
        CreateRefund => roles::REFUND_CREATE;
        /// [`super::get_stock`].
        GetStock => roles::STOCK_READ;
        /// [`super::adjust_stock`].
        AdjustStock => roles::STOCK_ADJUST;
        /// [`super::transfer_stock`].
        TransferStock => roles::STOCK_TRANSFER;
        /// [`super::set_location`].
        WriteLocation => roles::LOCATION_WRITE;
        /// [`super::list_locations`].
        ReadLocations => roles::LOCATION_READ;
        /// [`super::create_customer`].
        CreateCustomer => roles::CUSTOMER_CREATE;
        /// [`super::get_customer`].
        GetCustomer => roles::CUSTOMER_READ;
        /// [`super::update_customer`].
        UpdateCustomer => roles::CUSTOMER_UPDATE;
        /// [`super::erase_customer`].
        EraseCustomer => roles::CUSTOMER_ERASE;
        /// [`super::set_price`].
        SetPrice => roles::CATALOG_WRITE;
        /// [`super::get_price`], [`super::list_catalog`].
        ReadCatalog => roles::CATALOG_READ;
    }
}

/// Permission for `caller` to run operation `O`; made only by [`allow`].
pub struct Allowed<'a, O> {
    pub caller: &'a Caller,
    operation: PhantomData<O>,
}

/// Checks `caller`'s role against operation `O`'s roles: 403, or 404 for a `customer` key (to
/// it, whatever it may not touch does not exist).
pub fn allow<O: Operation>(caller: &Caller) -> Result<Allowed<'_, O>, ApiError> {
    caller.require(O::ROLES)?;
    Ok(Allowed {
        caller,
        operation: PhantomData,
    })
}

/// Places an order. `key` is the idempotency key as the client sent it (validated here) and
/// `request_hash` identifies the request's bytes: a repeat with the same key must send the
/// same bytes. Answers the order opened.
pub async fn place_order(
    ctx: Ctx<'_>,
    pricing: &Pricing,
    allowed: Allowed<'_, op::PlaceOrder>,
    order: NewOrder,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<OrderView, ApiError> {
    // Through the shard's inbox ([`place_orders`]): concurrent requests for a shard share one
    // message and one group commit. The shard writes the audit entry (`order.place`) with the
    // order, so a replay under the key writes none.
    let input = PlaceInput {
        order,
        key,
        request_hash,
    };
    place_orders(ctx, pricing, &allowed, vec![Ok(input)])
        .await
        .pop()
        .unwrap_or_else(|| Err(no_outcome()))
}

/// The answer for an order the engine gave no outcome for (never expected: a safe 503).
pub fn no_outcome() -> ApiError {
    ApiError::Unavailable {
        detail: "the engine answered no outcome for this order".into(),
        reasons: None,
    }
}

/// One placement of a [`place_orders`] call: the order, its Idempotency-Key as the client sent
/// it, and the hash of the bytes that identify the request.
pub struct PlaceInput {
    pub order: NewOrder,
    pub key: Option<IdempotencyKey>,
    pub request_hash: u128,
}

/// Places many orders for one caller at once (a TCP `PLACE_ORDERS` frame, or the
/// `PLACE_ORDER` frames of one read): each is checked as [`place_order`] checks it, and those
/// that pass go to the engine together, so they share messages and group commits. An input a
/// front door could not read (`Err`) answers its error in its place. Answers one outcome per
/// input, in input order.
pub async fn place_orders(
    ctx: Ctx<'_>,
    pricing: &Pricing,
    allowed: &Allowed<'_, op::PlaceOrder>,
    inputs: Vec<Result<PlaceInput, ApiError>>,
) -> Vec<Result<OrderView, ApiError>> {
    let by_catalog = pricing.by_catalog(allowed.caller);
    let mut outcomes: Vec<Option<Result<OrderView, ApiError>>> = Vec::with_capacity(inputs.len());
    // The orders that passed their checks: the engine command, the prices the client sent
    // (catalog-priced orders only), the input's position.
    let mut prepared: Vec<(PlaceOrder, Vec<Option<u64>>, usize)> = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let checked = input.and_then(|input| {
            prepare_place(
                ctx,
                allowed.caller,
                input.order,
                input.key,
                input.request_hash,
                by_catalog,
            )
        });
        match checked {
            Ok((place, sent)) => {
                prepared.push((place, sent, index));
                outcomes.push(None);
            }
            Err(error) => outcomes.push(Some(Err(error))),
        }
    }
    if by_catalog && !prepared.is_empty() {
        let skus: Vec<String> = {
            let mut skus: Vec<&str> = prepared
                .iter()
                .flat_map(|(place, _, _)| place.lines.iter().map(|line| line.sku.as_str()))
                .collect();
            skus.sort_unstable();
            skus.dedup();
            skus.into_iter().map(str::to_string).collect()
        };
        // The prices current when the request is served: read now, placed with at once.
        match ctx.engine.catalog_prices(&skus).await {
            Ok(entries) => {
                let prices: HashMap<String, Option<CatalogView>> =
                    skus.into_iter().zip(entries).collect();
                for (place, sent, _) in &mut prepared {
                    if let Err(refusal) = price_lines(place, sent, &prices) {
                        // With an Idempotency-Key the shard answers a retry of a placed
                        // order as it was answered, and anything else with the refusal.
                        place.refusal = Some(refusal);
                    }
                }
            }
            Err(error) => {
                let error = ApiError::from(error);
                for (_, _, index) in prepared.drain(..) {
                    outcomes[index] = Some(Err(error.clone()));
                }
            }
        }
    }
    let mut places = Vec::with_capacity(prepared.len());
    let mut slots = Vec::with_capacity(prepared.len());
    for (place, _, index) in prepared {
        match (&place.refusal, &place.idempotency) {
            // Without a key there is nothing to look up: answered here.
            (Some(refusal), None) => outcomes[index] = Some(Err(refusal.clone().into())),
            _ => {
                places.push(place);
                slots.push(index);
            }
        }
    }
    let results = ctx.engine.place_orders(places).await;
    for (index, result) in slots.into_iter().zip(results) {
        outcomes[index] = Some(
            // A replay answers the stored order, sealed under whichever key sealed it then.
            result
                .map_err(ApiError::from)
                .and_then(|view| open_order(ctx, allowed.caller, view)),
        );
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(no_outcome())))
        .collect()
}

/// Prices a catalog-priced order's lines from `prices` (every SKU of the order is a key):
/// a line whose SKU has no active price is `unknown_sku`, a line whose sent price differs from
/// the catalog's `price_mismatch`, the first such line by position; then the total is checked
/// against its bound with the catalog's prices.
fn price_lines(
    place: &mut PlaceOrder,
    sent: &[Option<u64>],
    prices: &HashMap<String, Option<CatalogView>>,
) -> Result<(), CommandError> {
    debug_assert_eq!(place.lines.len(), sent.len());
    for (i, (line, sent)) in place.lines.iter_mut().zip(sent).enumerate() {
        let entry = prices.get(&line.sku).and_then(Option::as_ref);
        let Some(entry) = entry.filter(|entry| entry.active) else {
            return Err(CommandError::UnknownSku {
                param: format!("lines[{i}].sku"),
                detail: format!("SKU {} has no active catalog price", line.sku),
            });
        };
        if let Some(sent) = sent {
            if *sent != entry.price {
                return Err(CommandError::PriceMismatch {
                    param: format!("lines[{i}].unit_price"),
                    detail: format!(
                        "unit_price {sent} differs from the catalog price {} of SKU {}; \
                         omit unit_price to order at the catalog price",
                        entry.price, line.sku
                    ),
                });
            }
        }
        line.unit_price = entry.price;
    }
    validate::order_amounts(&place.lines).map_err(|error| match error {
        ApiError::InvalidRequest { param, detail } => CommandError::Invalid { param, detail },
        other => CommandError::Invalid {
            param: "lines".into(),
            detail: other.to_string(),
        },
    })
}

/// The checks of a placement before the engine sees it; the engine command.
/// With `by_catalog` the lines may omit their prices (they carry 0 until [`price_lines`]);
/// answers, too, the price each line sent (none without `by_catalog`).
fn prepare_place(
    ctx: Ctx<'_>,
    caller: &Caller,
    request: NewOrder,
    key: Option<IdempotencyKey>,
    request_hash: u128,
    by_catalog: bool,
) -> Result<(PlaceOrder, Vec<Option<u64>>), ApiError> {
    let (lines, sent) = if by_catalog {
        validate::catalog_order_lines(&request.lines)?
    } else {
        (validate::order_lines(&request.lines)?, Vec::new())
    };
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
    if ctx.vault.is_erased(customer_id) {
        return Err(erased(customer_id));
    }
    let idempotency = key.map(|key| Idempotency {
        key: key.scoped(caller),
        request_hash,
    });
    // Under the customer's own key, so that erasing the customer shreds it too.
    let shipping_address = ctx
        .vault
        .seal_shipping_address_for(customer_id, request.shipping_address)
        .map_err(|_| erased(customer_id))?;
    let place = PlaceOrder {
        refusal: None,
        customer_id,
        lines,
        shipping_address,
        note: request.note,
        idempotency,
        actor: caller.key_id.clone(),
    };
    Ok((place, sent))
}

/// An order opened for `caller`: its shipping address in clear for the roles that ship or sell
/// ([`Caller::sees_personal_data`]), masked (`1***`) for the others.
fn open_order(ctx: Ctx<'_>, caller: &Caller, view: OrderView) -> Result<OrderView, ApiError> {
    let mut view = ctx.vault.open_order(view)?;
    if !caller.sees_personal_data() {
        view.shipping_address = view.shipping_address.as_deref().map(wire::mask_text);
    }
    Ok(view)
}

/// Reads an order (opened).
pub async fn get_order(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::GetOrder>,
    id: &str,
) -> Result<OrderView, ApiError> {
    let caller = allowed.caller;
    let id: OrderId = id.parse().map_err(|()| ApiError::not_found())?;
    let view = ctx.engine.order(id).await?;
    caller.may_see_customer(view.customer_id)?;
    open_order(ctx, caller, view)
}

/// Lists orders, newest first: the page (opened) and the cursor of the next one.
pub async fn list_orders(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::ListOrders>,
    query: &OrderQuery,
) -> Result<(Vec<OrderView>, Option<String>), ApiError> {
    let caller = allowed.caller;
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
                "status is one of confirmed, partially_shipped, shipped, delivered, cancelled, partially_returned, returned",
            )
        })?),
        None => None,
    };
    let limit = validate::limit_of(query.limit)?;
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
        .map(|view| open_order(ctx, caller, view))
        .collect::<Result<_, ApiError>>()?;
    Ok((items, page.next.map(|cursor| cursor.to_string())))
}

/// Cancels an order (opened); cancelling a cancelled order answers it again. `key` and
/// `request_hash` are the request's Idempotency-Key, as for every mutation ([`Claim`]).
pub async fn cancel_order(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::CancelOrder>,
    id: &str,
    reason: Option<String>,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<OrderView, ApiError> {
    let caller = allowed.caller;
    let id: OrderId = id.parse().map_err(|()| ApiError::not_found())?;
    validate::optional_text_max("reason", reason.as_deref(), validate::REASON_CHARS_MAX)?;
    if caller.customer_scope()?.is_some() {
        // The owner of an order never changes, so checking it first is race-free.
        let view = ctx.engine.order(id).await?;
        caller.may_see_customer(view.customer_id)?;
    }
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    // The shard writes `order.cancel` with the cancellation; cancelling a cancelled order,
    // or a replay under the key, writes none. The reason stays out of the audit trail.
    let view = ctx
        .engine
        .cancel_order_with(id, reason, &caller.key_id, claim.idempotency())
        .await?;
    drop(claim);
    open_order(ctx, caller, view)
}

/// Ships lines of an order (all that is left without `lines`). A replay under the
/// Idempotency-Key answers the shipment as it was answered, and ships nothing more.
pub async fn create_shipment(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::WriteShipment>,
    order_id: &str,
    request: ShipmentInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<ShipmentView, ApiError> {
    let caller = allowed.caller;
    let order_id: OrderId = order_id.parse().map_err(|()| ApiError::not_found())?;
    let carrier = request.carrier.trim();
    validate::label("carrier", carrier, CARRIER_CHARS_MAX)?;
    let lines = request.lines.map(validate::shipment_lines).transpose()?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let shipment = NewShipment {
        order_id,
        carrier: carrier.to_string(),
        lines,
        actor: caller.key_id.clone(),
    };
    // The shard writes `shipment.create` with the shipment (none for a replay).
    let view = ctx.engine.ship_with(shipment, claim.idempotency()).await?;
    drop(claim);
    Ok(view)
}

/// Records a carrier event on a shipment. A replay under the Idempotency-Key answers the
/// shipment as it was answered, and records nothing more.
pub async fn shipment_event(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::WriteShipment>,
    id: &str,
    request: ShipmentEventInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<ShipmentView, ApiError> {
    let caller = allowed.caller;
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
    // The shard wrote `shipment.event` with the event (none for a replay).
    drop(claim);
    Ok(view)
}

/// Opens a return of shipped units of an order (a `customer` key: of its own orders only).
/// A replay under the Idempotency-Key answers the return as it was created, and opens
/// nothing more.
pub async fn create_return(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::CreateReturn>,
    order_id: &str,
    request: ReturnInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<ReturnView, ApiError> {
    let caller = allowed.caller;
    let order_id: OrderId = order_id.parse().map_err(|()| ApiError::not_found())?;
    let lines = validate::return_lines(request.lines)?;
    validate::text_max("reason", &request.reason, validate::REASON_CHARS_MAX)?;
    if caller.customer_scope()?.is_some() {
        // The owner of an order never changes, so checking it first is race-free.
        let view = ctx.engine.order(order_id).await?;
        caller.may_see_customer(view.customer_id)?;
    }
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let ret = NewReturn {
        order_id,
        lines,
        reason: request.reason,
        actor: caller.key_id.clone(),
    };
    // The shard writes `return.create` with the return (none for a replay).
    let view = ctx
        .engine
        .create_return_with(ret, claim.idempotency())
        .await?;
    drop(claim);
    Ok(view)
}

/// Receives a return's units, restocking those marked so. A replay under the
/// Idempotency-Key answers the return as received, and restocks nothing more.
pub async fn receive_return(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::ReceiveReturn>,
    id: &str,
    request: ReceiveInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<ReturnView, ApiError> {
    let caller = allowed.caller;
    let id: ReturnId = id.parse().map_err(|()| ApiError::not_found())?;
    let lines = validate::receive_lines(request.lines)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    // The shard writes `return.receive` with the receipt (none for a replay).
    let view = ctx
        .engine
        .receive_return_with(id, lines, &caller.key_id, claim.idempotency())
        .await?;
    drop(claim);
    Ok(view)
}

/// Reads a return (a `customer` key: of its own orders only).
pub async fn get_return(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::GetReturn>,
    id: &str,
) -> Result<ReturnView, ApiError> {
    let caller = allowed.caller;
    let id: ReturnId = id.parse().map_err(|()| ApiError::not_found())?;
    let view = ctx.engine.return_view(id).await?;
    if caller.customer_scope()?.is_some() {
        let order = ctx.engine.order(view.order_id).await?;
        caller.may_see_customer(order.customer_id)?;
    }
    Ok(view)
}

/// Refunds money on an order: never more than its total less earlier refunds. A replay
/// under the Idempotency-Key answers the refund again, and refunds nothing more.
pub async fn create_refund(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::CreateRefund>,
    order_id: &str,
    request: RefundInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<RefundView, ApiError> {
    let caller = allowed.caller;
    let order_id: OrderId = order_id.parse().map_err(|()| ApiError::not_found())?;
    validate::refund_amount(request.amount)?;
    validate::text_max("reason", &request.reason, validate::REASON_CHARS_MAX)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let refund = NewRefund {
        order_id,
        amount: request.amount,
        reason: request.reason,
        actor: caller.key_id.clone(),
    };
    // The shard writes `order.refund` with the refund (none for a replay).
    let view = ctx.engine.refund_with(refund, claim.idempotency()).await?;
    drop(claim);
    Ok(view)
}

/// Reads a SKU's stock.
pub async fn get_stock(
    ctx: Ctx<'_>,
    _allowed: Allowed<'_, op::GetStock>,
    sku: &str,
) -> Result<StockView, ApiError> {
    validate::sku("sku", sku)?;
    Ok(ctx.engine.stock(sku).await?)
}

/// Adjusts a SKU's stock by a non-zero delta of at most `STOCK_DELTA_MAX` either way. A
/// replay under the Idempotency-Key answers the stock as the first adjustment left it, and
/// adjusts nothing.
pub async fn adjust_stock(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::AdjustStock>,
    sku: &str,
    request: StockAdjustmentInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<StockView, ApiError> {
    let caller = allowed.caller;
    validate::sku("sku", sku)?;
    validate::stock_delta(request.delta)?;
    validate::text_max("reason", &request.reason, validate::REASON_CHARS_MAX)?;
    let location = request
        .location
        .as_deref()
        .unwrap_or(orderd_engine::DEFAULT_LOCATION);
    validate::location_id("location", location)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let view = ctx
        .engine
        .adjust_stock_at(
            sku,
            location,
            request.delta,
            &request.reason,
            &caller.key_id,
            claim.idempotency(),
        )
        .await?;
    // The shard wrote `stock.adjust` with the adjustment (none for a replay).
    drop(claim);
    Ok(view)
}

/// Creates a customer; answers it opened. A replay under the Idempotency-Key answers the
/// same customer, and creates none.
pub async fn create_customer(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::CreateCustomer>,
    request: CustomerInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<CustomerView, ApiError> {
    let caller = allowed.caller;
    validate::customer(&request)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let new = NewCustomer {
        name: request.name,
        email: request.email,
        phone: request.phone,
        address: request.address,
    };
    if ctx.vault.customer_keys().is_none() {
        let customer = ctx.vault.seal_customer(new);
        let view = ctx
            .engine
            .create_customer_as(customer, Some(&caller.key_id), claim.idempotency())
            .await?;
        drop(claim);
        return Ok(ctx.vault.open_customer(view)?);
    }
    // The customer's own data key first (durable), under the id it will have, then the
    // customer sealed under it. An id reserved before a crash may come again: its unused key
    // is replaced; an id erased (a restore of a backup older than the customer) is skipped.
    let idempotency = claim.idempotency();
    let mut tries = 0;
    let (id, customer) = loop {
        tries += 1;
        let id = ctx.engine.reserve_customer_id(idempotency.as_ref()).await?;
        match ctx.vault.seal_new_customer(id, new.clone()) {
            Ok(customer) => break (id, customer),
            Err(crate::vault::VaultError::KeyStore(
                crate::customer_keys::KeyStoreError::Erased(_),
            )) if tries < RESERVE_TRIES_MAX => continue,
            Err(error) => return Err(error.into()),
        }
    };
    // The shard writes `customer.create` with the customer (none for a replay, which answers
    // the customer it created first: the key made for `id` then seals nothing).
    let view = ctx
        .engine
        .create_reserved_customer(id, customer, &caller.key_id, idempotency)
        .await?;
    drop(claim);
    Ok(ctx.vault.open_customer(view)?)
}

/// Most customer ids a creation reserves before it gives up (each skipped id was erased).
const RESERVE_TRIES_MAX: u32 = 8;

/// The answer for a change to an erased customer (`PATCH`, an order): 409
/// `invalid_transition`.
fn erased(customer: CustomerId) -> ApiError {
    ApiError::InvalidTransition(format!(
        "customer {customer} is erased: it cannot be changed and places no orders"
    ))
}

/// Changes a customer's contact data (the fields present), each checked as at creation and
/// sealed under the customer's key; answers the customer opened. An erased customer: 409
/// `invalid_transition`. A replay under the Idempotency-Key answers the customer as it is.
pub async fn update_customer(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::UpdateCustomer>,
    id: &str,
    request: CustomerUpdateInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<(CustomerView, bool), ApiError> {
    let caller = allowed.caller;
    let id: CustomerId = id.parse().map_err(|()| ApiError::not_found())?;
    caller.may_see_customer(id)?;
    validate::customer_update(&request)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    if ctx.vault.is_erased(id) {
        // Known here first after a restore of an older backup, or a crash mid-erasure.
        ctx.engine.customer(id).await?;
        return Err(erased(id));
    }
    let update = ctx
        .vault
        .seal_update(
            id,
            CustomerUpdate {
                name: request.name,
                email: request.email,
                phone: request.phone,
                address: request.address,
            },
        )
        .map_err(|_| erased(id))?;
    // The shard writes `customer.update` naming the fields changed, never their values.
    let view = ctx
        .engine
        .update_customer(id, update, &caller.key_id, claim.idempotency())
        .await?;
    drop(claim);
    Ok((ctx.vault.open_customer(view)?, !caller.sees_personal_data()))
}

/// Erases a customer (GDPR art. 17): its data key is destroyed first (durable, in the key
/// store and its copy beside the backups), so every sealed copy of its personal data, in
/// the log, snapshots and backups, is unreadable from that moment; then the shard drops the
/// ciphertext from its state and writes `customer.erase`. Idempotent: an erased customer
/// answers again. A crash between the two steps leaves the key destroyed, so the customer
/// reads as erased, and a repeat finishes the second.
pub async fn erase_customer(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::EraseCustomer>,
    id: &str,
) -> Result<CustomerView, ApiError> {
    let caller = allowed.caller;
    let id: CustomerId = id.parse().map_err(|()| ApiError::not_found())?;
    // Only a customer that exists gets a tombstone.
    ctx.engine.customer(id).await?;
    ctx.vault.erase_customer_key(id)?;
    let view = ctx.engine.erase_customer(id, &caller.key_id).await?;
    debug_assert!(view.erased);
    Ok(ctx.vault.open_customer(view)?)
}

/// Reads a customer, opened; the flag says whether the caller sees it masked (see
/// [`Caller::sees_personal_data`]).
pub async fn get_customer(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::GetCustomer>,
    id: &str,
) -> Result<(CustomerView, bool), ApiError> {
    let caller = allowed.caller;
    let id: CustomerId = id.parse().map_err(|()| ApiError::not_found())?;
    caller.may_see_customer(id)?;
    let view = ctx.vault.open_customer(ctx.engine.customer(id).await?)?;
    Ok((view, !caller.sees_personal_data()))
}

/// Moves available units of a SKU between two locations: 404 for an unknown SKU or location,
/// 409 `insufficient_stock` when `from` has fewer available. The shard writes
/// `stock.transfer` with it; a replay under the Idempotency-Key moves nothing and answers the
/// stock as it is then.
pub async fn transfer_stock(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::TransferStock>,
    sku: &str,
    request: orderd_proto::StockTransferRequest,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<StockView, ApiError> {
    let caller = allowed.caller;
    validate::sku("sku", sku)?;
    validate::location_id("from", &request.from)?;
    validate::location_id("to", &request.to)?;
    if request.from == request.to {
        return Err(ApiError::invalid("to", "must differ from from"));
    }
    if request.qty == 0 || request.qty > orderd_engine::STOCK_DELTA_MAX {
        return Err(ApiError::invalid(
            "qty",
            format!("qty must be from 1 to {}", orderd_engine::STOCK_DELTA_MAX),
        ));
    }
    validate::text_max("reason", &request.reason, validate::REASON_CHARS_MAX)?;
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let view = ctx
        .engine
        .transfer_stock(
            sku,
            &request.from,
            &request.to,
            request.qty,
            &request.reason,
            &caller.key_id,
            claim.idempotency(),
        )
        .await?;
    drop(claim);
    Ok(view)
}

/// Defines a stock location, or redefines the one with that id (its name and priority):
/// answers it and whether it is new. At most `locations_max` (`stock.locations_max`), 409
/// `invalid_transition` past it. Shard 0 writes `location.set` to the audit trail.
pub async fn set_location(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::WriteLocation>,
    request: orderd_proto::LocationRequest,
    locations_max: usize,
) -> Result<(orderd_engine::LocationView, bool), ApiError> {
    let caller = allowed.caller;
    validate::location_id("id", &request.id)?;
    let chars = request.name.chars().count();
    if chars == 0 || chars > orderd_engine::LOCATION_NAME_CHARS_MAX {
        return Err(ApiError::invalid(
            "name",
            format!("1 to {} characters", orderd_engine::LOCATION_NAME_CHARS_MAX),
        ));
    }
    if request.priority > orderd_engine::LOCATION_PRIORITY_MAX {
        return Err(ApiError::invalid(
            "priority",
            format!("at most {}", orderd_engine::LOCATION_PRIORITY_MAX),
        ));
    }
    Ok(ctx
        .engine
        .set_location(
            &request.id,
            &request.name,
            request.priority,
            locations_max,
            &caller.key_id,
        )
        .await?)
}

/// A page of the stock locations in id order, and the cursor of the next one (the last id
/// listed).
pub async fn list_locations(
    ctx: Ctx<'_>,
    _allowed: Allowed<'_, op::ReadLocations>,
    query: &CatalogQueryInput,
) -> Result<(Vec<orderd_engine::LocationView>, Option<String>), ApiError> {
    let limit = validate::limit_of(query.limit)?;
    if let Some(after) = query.after.as_deref() {
        validate::location_id("after", after)?;
    }
    let all = ctx.engine.locations().await?;
    let mut page: Vec<orderd_engine::LocationView> = all
        .into_iter()
        .filter(|l| {
            query
                .after
                .as_deref()
                .is_none_or(|after| l.id.as_str() > after)
        })
        .take(limit + 1)
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|l| l.id.clone())
    } else {
        None
    };
    Ok((page, next))
}

/// Sets a SKU's catalog price (0 to `UNIT_PRICE_MAX` minor units). The shard writes
/// `catalog.price_set` with the price; a replay under the Idempotency-Key answers the entry as
/// it was set, and sets nothing.
pub async fn set_price(
    ctx: Ctx<'_>,
    allowed: Allowed<'_, op::SetPrice>,
    sku: &str,
    request: CatalogPriceInput,
    key: Option<IdempotencyKey>,
    request_hash: u128,
) -> Result<CatalogView, ApiError> {
    let caller = allowed.caller;
    validate::sku("sku", sku)?;
    if request.price > orderd_engine::UNIT_PRICE_MAX {
        return Err(ApiError::invalid(
            "price",
            format!(
                "price must be at most {} (minor units)",
                orderd_engine::UNIT_PRICE_MAX
            ),
        ));
    }
    let claim = Claim::take(ctx.audit, caller, key, request_hash).await?;
    let view = ctx
        .engine
        .set_price(
            sku,
            request.price,
            request.active,
            &caller.key_id,
            claim.idempotency(),
        )
        .await?;
    drop(claim);
    Ok(view)
}

/// Reads a SKU's catalog price: 404 when it never had one.
pub async fn get_price(
    ctx: Ctx<'_>,
    _allowed: Allowed<'_, op::ReadCatalog>,
    sku: &str,
) -> Result<CatalogView, ApiError> {
    validate::sku("sku", sku)?;
    Ok(ctx.engine.price(sku).await?)
}

/// A page of the catalog in SKU order, and the cursor of the next one (the last SKU listed).
pub async fn list_catalog(
    ctx: Ctx<'_>,
    _allowed: Allowed<'_, op::ReadCatalog>,
    query: &CatalogQueryInput,
) -> Result<(Vec<CatalogView>, Option<String>), ApiError> {
    let limit = validate::limit_of(query.limit)?;
    if let Some(after) = query.after.as_deref() {
        // A cursor is a SKU; anything else names no place in the list.
        validate::sku("after", after).map_err(|_| {
            ApiError::invalid(
                "after",
                "after must be the `next` cursor of a previous page",
            )
        })?;
    }
    let (items, next) = ctx
        .engine
        .catalog_page(query.after.as_deref(), limit)
        .await?;
    debug_assert!(items.len() <= limit);
    Ok((items, next))
}

//! `POST /v1/orders` (with `Idempotency-Key`), `GET /v1/orders/{id}`, `GET /v1/orders` and
//! `POST /v1/orders/{id}/cancel`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use orderd_engine::{
    CustomerId, Engine, Idempotency, OrderCursor, OrderFilter, OrderId, OrderStatus, PlaceOrder,
};
use orderd_proto::{CancelOrderRequest, ListOrdersQuery, Page, PlaceOrderRequest};
use sha2::{Digest, Sha256};

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::body::{decode_json, NoQuery, QueryParams, RawBody};
use crate::error::ApiError;
use crate::metrics;
use crate::vault::Vault;
use crate::{roles, validate, wire};

/// Name of the idempotency header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// First 16 bytes of SHA-256 over the raw body: a retry must send the same bytes.
pub fn request_hash(body: &[u8]) -> u128 {
    let digest = Sha256::digest(body);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The `Idempotency-Key` header, validated (1–255 characters), if present.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY_HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid(
            IDEMPOTENCY_KEY_HEADER,
            "send Idempotency-Key at most once",
        ));
    }
    let text = value.to_str().map_err(|_| {
        ApiError::invalid(
            IDEMPOTENCY_KEY_HEADER,
            "Idempotency-Key must be visible ASCII text",
        )
    })?;
    validate::idempotency_key(text)?;
    Ok(Some(text.to_string()))
}

#[utoipa::path(post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same body returns the first answer")),
    request_body = orderd_proto::PlaceOrderRequest,
    responses(
        (status = 201, description = "The confirmed order", body = orderd_proto::OrderResponse),
        (status = 409, description = "`insufficient_stock` (with `skus`)", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_customer` or `idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn place(
    caller: Caller,
    query: QueryParams<NoQuery>,
    req: HttpRequest,
    body: RawBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    let answer = place_order(caller, query, req, body, vault, engine, audit).await;
    metrics::record_order(&answer);
    answer
}

/// `POST /v1/orders` once the key is known; [`place`] counts its outcome.
async fn place_order(
    caller: Caller,
    query: QueryParams<NoQuery>,
    req: HttpRequest,
    body: RawBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::ORDER_PLACE)?;
    query.get()?;
    let key = idempotency_key(&req)?;
    let request: PlaceOrderRequest = decode_json(&body.0)?;
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
        request_hash: request_hash(&body.0),
    });
    let started_us = chrono::Utc::now().timestamp_micros();
    let view = engine
        .place_order(PlaceOrder {
            customer_id,
            lines,
            shipping_address: vault.seal_shipping_address(request.shipping_address),
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
    audit
        .record_once(
            &caller,
            "order.place",
            view.id.to_string(),
            detail,
            started_us,
            view.created_at_us,
        )
        .await?;
    // A replay answers the stored order, sealed under whichever data key sealed it then.
    let view = vault.open_order(view)?;
    let location = format!("/v1/orders/{}", view.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(wire::order(view, false)))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "An order id (`ord_…`)")),
    responses((status = 200, description = "The order with its shipments and history", body = orderd_proto::OrderResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Caller,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::ORDER_READ)?;
    query.get()?;
    let id: OrderId = id.parse().map_err(|()| ApiError::not_found())?;
    let view = engine.order(id).await?;
    caller.may_see_customer(view.customer_id)?;
    Ok(HttpResponse::Ok().json(wire::order(vault.open_order(view)?, true)))
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders",
    params(orderd_proto::ListOrdersQuery),
    responses((status = 200, description = "A page of orders, newest first", body = orderd_proto::Page<orderd_proto::OrderResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Caller,
    query: QueryParams<ListOrdersQuery>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::ORDER_LIST)?;
    let query = query.get()?;
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
    let page = engine
        .list_orders(OrderFilter {
            customer_id,
            status,
            limit,
            after,
        })
        .await?;
    debug_assert!(page.items.len() <= limit);
    Ok(HttpResponse::Ok().json(Page {
        items: page
            .items
            .into_iter()
            .map(|view| Ok(wire::order(vault.open_order(view)?, true)))
            .collect::<Result<_, ApiError>>()?,
        next: page.next.map(|cursor| cursor.to_string()),
    }))
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "An order id (`ord_…`)")),
    request_body(content = Option<orderd_proto::CancelOrderRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The cancelled order", body = orderd_proto::OrderResponse),
        (status = 409, description = "`invalid_transition`: the order has shipments", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    caller: Caller,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: RawBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::ORDER_CANCEL)?;
    query.get()?;
    let id: OrderId = id.parse().map_err(|()| ApiError::not_found())?;
    // The body is optional: nothing (or only whitespace) means no reason.
    let request = if body.0.iter().all(u8::is_ascii_whitespace) {
        CancelOrderRequest::default()
    } else {
        decode_json::<CancelOrderRequest>(&body.0)?
    };
    validate::optional_text_max(
        "reason",
        request.reason.as_deref(),
        validate::REASON_CHARS_MAX,
    )?;
    if caller.customer_scope()?.is_some() {
        // The owner of an order never changes, so checking it first is race-free.
        let view = engine.order(id).await?;
        caller.may_see_customer(view.customer_id)?;
    }
    let started_us = chrono::Utc::now().timestamp_micros();
    let view = engine
        .cancel_order(id, request.reason, &caller.key_id)
        .await?;
    // Cancelling a cancelled order is a repeat (see `record_once`). The reason is free text and
    // stays out of the audit trail.
    let cancelled_at_us = view
        .history
        .iter()
        .rev()
        .find(|step| step.status == OrderStatus::Cancelled)
        .map_or(started_us, |step| step.at_us);
    audit
        .record_once(
            &caller,
            "order.cancel",
            view.id.to_string(),
            "",
            started_us,
            cancelled_at_us,
        )
        .await?;
    Ok(HttpResponse::Ok().json(wire::order(vault.open_order(view)?, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_is_the_first_16_bytes_of_sha256() {
        // SHA-256("") = e3b0c44298fc1c149afbf4c8996fb924 27ae41e4649b934ca495991b7852b855
        assert_eq!(request_hash(b""), 0xe3b0c44298fc1c149afbf4c8996fb924_u128);
        assert_ne!(request_hash(b"{\"a\":1}"), request_hash(b"{\"a\": 1}"));
    }
}

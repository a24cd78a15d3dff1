//! `POST /v1/orders` (with `Idempotency-Key`), `GET /v1/orders/{id}`, `GET /v1/orders` and
//! `POST /v1/orders/{id}/cancel`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::{CancelOrderRequest, ListOrdersQuery, Page, PlaceOrderRequest};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::{self, KeyedBody};
use crate::http::extract::{decode_json, NoQuery, QueryParams, RawBody};
use crate::http::Limits;
use orderd_control::telemetry;
use orderd_service::audit::AuditLog;
use orderd_service::input::OrderQuery;
use orderd_service::ops::Pricing;
use orderd_service::vault::Vault;
use orderd_service::{ops, page, wire};

use orderd_service::idem::placement_hash;

#[utoipa::path(post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same body returns the first answer")),
    request_body = orderd_proto::PlaceOrderRequest,
    responses(
        (status = 201, description = "The confirmed order", body = orderd_proto::OrderResponse),
        (status = 409, description = "`insufficient_stock` (with `skus`)", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_customer`, `idempotency_conflict`, `price_mismatch` (a line's `unit_price` differs from the catalog price; `param` names it) or `unknown_sku` (a SKU without an active catalog price where the catalog prices the order; `param` names the line's `sku`)", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
#[allow(clippy::too_many_arguments)]
pub async fn place(
    caller: Authed,
    query: QueryParams<NoQuery>,
    req: HttpRequest,
    body: RawBody,
    pricing: web::Data<Pricing>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let answer = place_order(caller, query, req, body, pricing, vault, engine, audit).await;
    telemetry::record_order(answer.as_ref().map_err(|error| &error.0));
    answer
}

/// `POST /v1/orders` once the key is known; [`place`] counts its outcome.
#[allow(clippy::too_many_arguments)]
async fn place_order(
    caller: Authed,
    query: QueryParams<NoQuery>,
    req: HttpRequest,
    body: RawBody,
    pricing: web::Data<Pricing>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::PlaceOrder>(&caller)?;
    query.get()?;
    let key = extract::header_key(&req)?;
    let request: PlaceOrderRequest = decode_json(&body.0)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view = ops::place_order(
        ctx,
        &pricing,
        allowed,
        request.into(),
        key,
        placement_hash(&body.0),
    )
    .await?;
    let location = format!("/v1/orders/{}", view.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(wire::order(view, false)))
}

#[utoipa::path(get, path = "/v1/orders/{id}", operation_id = "get_order", tag = "orders",
    params(("id" = String, Path, description = "An order id (`ord_…`)")),
    responses((status = 200, description = "The order with its shipments and history", body = orderd_proto::OrderResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::GetOrder>(&caller)?;
    query.get()?;
    let view = ops::get_order(ops::Ctx::new(&engine, &vault, &audit), allowed, &id).await?;
    Ok(HttpResponse::Ok().json(wire::order(view, true)))
}

#[utoipa::path(get, path = "/v1/orders", operation_id = "list_orders", tag = "orders",
    params(orderd_proto::ListOrdersQuery),
    responses((status = 200, description = "A page of orders, newest first", body = orderd_proto::Page<orderd_proto::OrderResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<ListOrdersQuery>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::ListOrders>(&caller)?;
    let query = OrderQuery::try_from(query.get()?)?;
    let (items, next) =
        ops::list_orders(ops::Ctx::new(&engine, &vault, &audit), allowed, &query).await?;
    let items = items
        .into_iter()
        .map(|view| {
            let cursor = page::cursor_after(&view);
            (wire::order(view, true), cursor)
        })
        .collect();
    let body = page::encode_fitting(
        items,
        next,
        limits.max_page_bytes,
        |items, next| serde_json::to_vec(&Page { items, next }).expect("a page encodes"),
        "http.max_page_bytes",
    )?;
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(body))
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "An order id (`ord_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the first answer")),
    request_body(content = Option<orderd_proto::CancelOrderRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The cancelled order", body = orderd_proto::OrderResponse),
        (status = 409, description = "`invalid_transition`: the order has shipments", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::CancelOrder>(&caller)?;
    query.get()?;
    let key = body.key()?;
    // The body is optional: nothing (or only whitespace) means no reason.
    let request = if body.bytes.iter().all(u8::is_ascii_whitespace) {
        CancelOrderRequest::default()
    } else {
        decode_json::<CancelOrderRequest>(&body.bytes)?
    };
    let view = ops::cancel_order(
        ops::Ctx::new(&engine, &vault, &audit),
        allowed,
        &id,
        request.reason,
        key,
        body.request_hash,
    )
    .await?;
    Ok(HttpResponse::Ok().json(wire::order(view, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_is_the_first_16_bytes_of_sha256() {
        // SHA-256("") = e3b0c44298fc1c149afbf4c8996fb924 27ae41e4649b934ca495991b7852b855
        assert_eq!(placement_hash(b""), 0xe3b0c44298fc1c149afbf4c8996fb924_u128);
        assert_ne!(placement_hash(b"{\"a\":1}"), placement_hash(b"{\"a\": 1}"));
    }
}

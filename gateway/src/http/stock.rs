//! `GET /v1/stock/{sku}`, `POST /v1/stock/{sku}/adjustments`, `POST
//! /v1/stock/{sku}/transfers`, and the stock locations: `POST /v1/locations`, `GET
//! /v1/locations`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::{
    LocationQuery, LocationRequest, Page, StockAdjustmentRequest, StockTransferRequest,
};
use orderd_service::input::CatalogQueryInput;
use orderd_service::page;

use crate::http::Limits;

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::KeyedBody;
use crate::http::extract::{decode_json, NoQuery, QueryParams, RawBody};
use orderd_service::audit::AuditLog;
use orderd_service::vault::Vault;
use orderd_service::{ops, validate, wire};

#[utoipa::path(get, path = "/v1/stock/{sku}", operation_id = "get_stock", tag = "stock",
    params(("sku" = String, Path, description = "1–64 characters of A-Z a-z 0-9 . _ -", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")),
    responses((status = 200, description = "The stock record", body = orderd_proto::StockResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    sku: web::Path<String>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::GetStock>(&caller)?;
    query.get()?;
    let view = ops::get_stock(ops::Ctx::new(&engine, &vault, &audit), allowed, &sku).await?;
    Ok(HttpResponse::Ok().json(wire::stock(view)))
}

#[utoipa::path(post, path = "/v1/stock/{sku}/adjustments", tag = "stock",
    params(("sku" = String, Path, description = "1–64 characters of A-Z a-z 0-9 . _ -", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the first answer and adjusts nothing")),
    request_body = orderd_proto::StockAdjustmentRequest,
    responses(
        (status = 200, description = "The stock record after the adjustment", body = orderd_proto::StockResponse),
        (status = 404, description = "`not_found`: no such location", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient_stock`: on_hand would fall below reserved (in total, or at the location)", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn adjust(
    caller: Authed,
    query: QueryParams<NoQuery>,
    sku: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::AdjustStock>(&caller)?;
    query.get()?;
    validate::sku("sku", &sku)?;
    let key = body.key()?;
    let request: StockAdjustmentRequest = decode_json(&body.bytes)?;
    let view = ops::adjust_stock(
        ops::Ctx::new(&engine, &vault, &audit),
        allowed,
        &sku,
        request.into(),
        key,
        body.request_hash,
    )
    .await?;
    Ok(HttpResponse::Ok().json(wire::stock(view)))
}

#[utoipa::path(post, path = "/v1/stock/{sku}/transfers", operation_id = "transfer_stock", tag = "stock",
    params(("sku" = String, Path, description = "1–64 characters of A-Z a-z 0-9 . _ -", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body moves nothing and answers the stock as it is then")),
    request_body = orderd_proto::StockTransferRequest,
    responses(
        (status = 200, description = "The stock record after the transfer: totals unchanged, `from` less and `to` more by `qty`", body = orderd_proto::StockResponse),
        (status = 404, description = "`not_found`: no such SKU, or no such location (`from` or `to`)", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient_stock`: `from` has fewer than `qty` available units; nothing moves", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn transfer(
    caller: Authed,
    query: QueryParams<NoQuery>,
    sku: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::TransferStock>(&caller)?;
    query.get()?;
    validate::sku("sku", &sku)?;
    let key = body.key()?;
    let request: StockTransferRequest = decode_json(&body.bytes)?;
    let view = ops::transfer_stock(
        ops::Ctx::new(&engine, &vault, &audit),
        allowed,
        &sku,
        request,
        key,
        body.request_hash,
    )
    .await?;
    Ok(HttpResponse::Ok().json(wire::stock(view)))
}

#[utoipa::path(post, path = "/v1/locations", operation_id = "set_location", tag = "stock",
    request_body = orderd_proto::LocationRequest,
    responses(
        (status = 201, description = "A new location", body = orderd_proto::LocationResponse),
        (status = 200, description = "The location with that id, redefined (name and priority)", body = orderd_proto::LocationResponse),
        (status = 409, description = "`invalid_transition`: already `stock.locations_max` locations", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
#[allow(clippy::too_many_arguments)]
pub async fn create_location(
    caller: Authed,
    query: QueryParams<NoQuery>,
    body: RawBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::WriteLocation>(&caller)?;
    query.get()?;
    let request: LocationRequest = decode_json(&body.0)?;
    let (view, created) = ops::set_location(
        ops::Ctx::new(&engine, &vault, &audit),
        allowed,
        request,
        limits.locations_max,
    )
    .await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(wire::location(view)))
}

#[utoipa::path(get, path = "/v1/locations", operation_id = "list_locations", tag = "stock",
    params(orderd_proto::LocationQuery),
    responses((status = 200, description = "A page of stock locations, ids in ascending order, `default` among them", body = orderd_proto::Page<orderd_proto::LocationResponse>)),
    security(("bearer" = [])))]
pub async fn list_locations(
    caller: Authed,
    query: QueryParams<LocationQuery>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::ReadLocations>(&caller)?;
    let query = query.get()?;
    let query = CatalogQueryInput {
        limit: orderd_service::validate::limit_number(query.limit.as_deref())?,
        after: query.after,
    };
    let (items, next) =
        ops::list_locations(ops::Ctx::new(&engine, &vault, &audit), allowed, &query).await?;
    let items = items
        .into_iter()
        .map(|view| {
            let cursor = view.id.clone();
            (wire::location(view), cursor)
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

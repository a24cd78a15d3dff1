//! `GET /v1/stock/{sku}` and `POST /v1/stock/{sku}/adjustments`.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::StockAdjustmentRequest;

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::KeyedBody;
use crate::http::extract::{decode_json, NoQuery, QueryParams};
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
        (status = 409, description = "`insufficient_stock`: on_hand would fall below reserved", body = orderd_proto::Problem, content_type = "application/problem+json"),
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

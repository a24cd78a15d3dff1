//! `GET /v1/stock/{sku}` and `POST /v1/stock/{sku}/adjustments`.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::StockAdjustmentRequest;

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::body::{decode_json, RawBody};
use crate::error::ApiError;
use crate::{roles, validate, wire};

pub async fn get(
    caller: Caller,
    sku: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::STOCK_READ)?;
    validate::sku("sku", &sku)?;
    let view = engine.stock(&sku).await?;
    Ok(HttpResponse::Ok().json(wire::stock(view)))
}

pub async fn adjust(
    caller: Caller,
    sku: web::Path<String>,
    body: RawBody,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::STOCK_ADJUST)?;
    validate::sku("sku", &sku)?;
    let request: StockAdjustmentRequest = decode_json(&body.0)?;
    if request.delta == 0 {
        return Err(ApiError::invalid("delta", "delta must not be zero"));
    }
    validate::text_max("reason", &request.reason, validate::REASON_CHARS_MAX)?;
    let view = engine
        .adjust_stock(&sku, request.delta, &request.reason, &caller.key_id)
        .await?;
    // The reason is free text and may name people: it stays out of the audit trail.
    let detail = format!("delta={:+}", request.delta);
    audit
        .record(&caller, "stock.adjust", sku.as_str(), detail)
        .await?;
    Ok(HttpResponse::Ok().json(wire::stock(view)))
}

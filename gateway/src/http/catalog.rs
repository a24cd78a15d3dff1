//! `PUT /v1/catalog/{sku}`, `GET /v1/catalog/{sku}` and `GET /v1/catalog`: the catalog's prices
//! (admin and merchandiser write; admin, merchandiser and operator read).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::{CatalogPriceRequest, CatalogQuery, Page};

use crate::http::error::HttpError;
use crate::http::extract::{decode_json, Authed, KeyedBody, NoQuery, QueryParams};
use crate::http::Limits;
use orderd_service::audit::AuditLog;
use orderd_service::input::CatalogQueryInput;
use orderd_service::ops::{self, Pricing};
use orderd_service::vault::Vault;
use orderd_service::{page, validate, wire};

#[utoipa::path(put, path = "/v1/catalog/{sku}", operation_id = "put_price", tag = "catalog",
    params(("sku" = String, Path, description = "1–64 characters of A-Z a-z 0-9 . _ -", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the first answer and sets nothing")),
    request_body = orderd_proto::CatalogPriceRequest,
    responses(
        (status = 200, description = "The SKU's catalog price as set", body = orderd_proto::CatalogResponse),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
#[allow(clippy::too_many_arguments)]
pub async fn put(
    caller: Authed,
    query: QueryParams<NoQuery>,
    sku: web::Path<String>,
    body: KeyedBody,
    pricing: web::Data<Pricing>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::SetPrice>(&caller)?;
    query.get()?;
    validate::sku("sku", &sku)?;
    let key = body.key()?;
    let request: CatalogPriceRequest = decode_json(&body.bytes)?;
    let view = ops::set_price(
        ops::Ctx::new(&engine, &vault, &audit),
        allowed,
        &sku,
        request.into(),
        key,
        body.request_hash,
    )
    .await?;
    Ok(HttpResponse::Ok().json(wire::catalog(view, &pricing.currency)))
}

#[utoipa::path(get, path = "/v1/catalog/{sku}", operation_id = "get_price", tag = "catalog",
    params(("sku" = String, Path, description = "1–64 characters of A-Z a-z 0-9 . _ -", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")),
    responses(
        (status = 200, description = "The SKU's catalog price", body = orderd_proto::CatalogResponse),
        (status = 404, description = "`not_found`: the SKU never had a price", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    sku: web::Path<String>,
    pricing: web::Data<Pricing>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::ReadCatalog>(&caller)?;
    query.get()?;
    let view = ops::get_price(ops::Ctx::new(&engine, &vault, &audit), allowed, &sku).await?;
    Ok(HttpResponse::Ok().json(wire::catalog(view, &pricing.currency)))
}

#[utoipa::path(get, path = "/v1/catalog", operation_id = "list_catalog", tag = "catalog",
    params(orderd_proto::CatalogQuery),
    responses((status = 200, description = "A page of catalog prices, SKUs in ascending order", body = orderd_proto::Page<orderd_proto::CatalogResponse>)),
    security(("bearer" = [])))]
#[allow(clippy::too_many_arguments)]
pub async fn list(
    caller: Authed,
    query: QueryParams<CatalogQuery>,
    pricing: web::Data<Pricing>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::ReadCatalog>(&caller)?;
    let query = CatalogQueryInput::try_from(query.get()?)?;
    let (items, next) =
        ops::list_catalog(ops::Ctx::new(&engine, &vault, &audit), allowed, &query).await?;
    let items = items
        .into_iter()
        .map(|view| {
            // A page cut short by the byte bound continues after its last SKU.
            let cursor = view.sku.clone();
            (wire::catalog(view, &pricing.currency), cursor)
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

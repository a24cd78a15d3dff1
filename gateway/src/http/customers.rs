//! `POST /v1/customers`, `GET` and `PATCH /v1/customers/{id}`, and
//! `POST /v1/customers/{id}/erase` (erasure by crypto-shredding: `orderd_service::ops`).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_control::backups::Backups;
use orderd_engine::Engine;
use orderd_proto::{CreateCustomerRequest, EraseCustomerRequest, UpdateCustomerRequest};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::KeyedBody;
use crate::http::extract::{decode_json, NoQuery, QueryParams};
use orderd_service::audit::AuditLog;
use orderd_service::vault::Vault;
use orderd_service::{ops, wire};

#[utoipa::path(post, path = "/v1/customers", operation_id = "create_customer", tag = "customers",
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same body returns the first answer and creates no second customer")),
    request_body = orderd_proto::CreateCustomerRequest,
    responses(
        (status = 201, description = "The new customer", body = orderd_proto::CustomerResponse),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    caller: Authed,
    query: QueryParams<NoQuery>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::CreateCustomer>(&caller)?;
    query.get()?;
    let key = body.key()?;
    let request: CreateCustomerRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view = ops::create_customer(ctx, allowed, request.into(), key, body.request_hash).await?;
    let location = format!("/v1/customers/{}", view.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(wire::customer(view)))
}

#[utoipa::path(get, path = "/v1/customers/{id}", operation_id = "get_customer", tag = "customers",
    params(("id" = String, Path, description = "A customer id (`cus_…`)")),
    responses((status = 200, description = "The customer (masked for auditors), or `{\"id\", \"erased\": true}` once erased", body = orderd_proto::CustomerRecordResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::GetCustomer>(&caller)?;
    query.get()?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let (view, masked) = ops::get_customer(ctx, allowed, &id).await?;
    Ok(HttpResponse::Ok().json(wire::customer_record(view, masked)))
}

#[utoipa::path(patch, path = "/v1/customers/{id}", operation_id = "update_customer", tag = "customers",
    params(("id" = String, Path, description = "A customer id (`cus_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body answers the customer and changes nothing more")),
    request_body = orderd_proto::UpdateCustomerRequest,
    responses(
        (status = 200, description = "The customer, changed (masked for roles that see contact data masked)", body = orderd_proto::CustomerResponse),
        (status = 409, description = "`invalid_transition`: the customer is erased", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn update(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::UpdateCustomer>(&caller)?;
    query.get()?;
    let key = body.key()?;
    let request: UpdateCustomerRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let (view, masked) =
        ops::update_customer(ctx, allowed, &id, request.into(), key, body.request_hash).await?;
    let body = if masked {
        wire::customer_masked(view)
    } else {
        wire::customer(view)
    };
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(post, path = "/v1/customers/{id}/erase", operation_id = "erase_customer", tag = "customers",
    params(("id" = String, Path, description = "A customer id (`cus_…`)")),
    request_body(content = Option<orderd_proto::EraseCustomerRequest>, description = "Optional; no fields"),
    responses(
        (status = 200, description = "The customer, erased: its data key is destroyed, so its personal data is unreadable in the live store, the log, snapshots and every backup; a repeat answers the same", body = orderd_proto::ErasedCustomerResponse),
    ),
    security(("bearer" = [])))]
#[allow(clippy::too_many_arguments)]
pub async fn erase(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
    backups: web::Data<Backups>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::EraseCustomer>(&caller)?;
    query.get()?;
    // Erasure is idempotent by itself: a key is accepted (validated) and needs no record.
    body.key()?;
    if !body.bytes.iter().all(u8::is_ascii_whitespace) {
        decode_json::<EraseCustomerRequest>(&body.bytes)?;
    }
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view = ops::erase_customer(ctx, allowed, &id).await?;
    // The off-site copy of the key store loses the key at once too (retried with backups).
    backups.request_customer_keys_copy();
    Ok(HttpResponse::Ok().json(wire::erased_customer(&view)))
}

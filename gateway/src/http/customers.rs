//! `POST /v1/customers` and `GET /v1/customers/{id}`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::CreateCustomerRequest;

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
    responses((status = 200, description = "The customer (masked for auditors)", body = orderd_proto::CustomerResponse)),
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
    let body = if masked {
        wire::customer_masked(view)
    } else {
        wire::customer(view)
    };
    Ok(HttpResponse::Ok().json(body))
}

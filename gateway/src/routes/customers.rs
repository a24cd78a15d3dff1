//! `POST /v1/customers` and `GET /v1/customers/{id}`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_engine::{CustomerId, Engine, NewCustomer};
use orderd_proto::CreateCustomerRequest;

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::body::{decode_json, NoQuery, QueryParams, RawBody};
use crate::error::ApiError;
use crate::roles::{self, Role};
use crate::vault::Vault;
use crate::{validate, wire};

#[utoipa::path(post, path = "/v1/customers", tag = "customers",
    request_body = orderd_proto::CreateCustomerRequest,
    responses((status = 201, description = "The new customer", body = orderd_proto::CustomerResponse)),
    security(("bearer" = [])))]
pub async fn create(
    caller: Caller,
    query: QueryParams<NoQuery>,
    body: RawBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::CUSTOMER_CREATE)?;
    query.get()?;
    let request: CreateCustomerRequest = decode_json(&body.0)?;
    validate::customer(&request)?;
    let view = engine
        .create_customer(vault.seal_customer(NewCustomer {
            name: request.name,
            email: request.email,
            phone: request.phone,
            address: request.address,
        }))
        .await?;
    // Personal data never goes into the audit trail: the id only.
    audit
        .record(&caller, "customer.create", view.id.to_string(), "")
        .await?;
    let view = vault.open_customer(view)?;
    let location = format!("/v1/customers/{}", view.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(wire::customer(view)))
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "A customer id (`cus_…`)")),
    responses((status = 200, description = "The customer (masked for auditors)", body = orderd_proto::CustomerResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Caller,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::CUSTOMER_READ)?;
    query.get()?;
    let id: CustomerId = id.parse().map_err(|()| ApiError::not_found())?;
    caller.may_see_customer(id)?;
    // Opened first: masking works on the plaintext.
    let view = vault.open_customer(engine.customer(id).await?)?;
    let body = if caller.role == Role::Auditor {
        wire::customer_masked(view)
    } else {
        wire::customer(view)
    };
    Ok(HttpResponse::Ok().json(body))
}

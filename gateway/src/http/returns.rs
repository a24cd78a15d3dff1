//! `POST /v1/orders/{id}/returns`, `POST /v1/returns/{id}/receive`, `GET /v1/returns/{id}` and
//! `POST /v1/orders/{id}/refunds`: shipped units come back (restocked where they were shipped
//! from) and money goes back (API.md, Commerce: returns and refunds).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_engine::{Engine, ReturnId};
use orderd_proto::{CreateRefundRequest, CreateReturnRequest, ReceiveReturnRequest};

use crate::http::error::HttpError;
use crate::http::extract::{decode_json, Authed, KeyedBody, NoQuery, QueryParams};
use orderd_service::audit::AuditLog;
use orderd_service::vault::Vault;
use orderd_service::ApiError;
use orderd_service::{ops, wire};

#[utoipa::path(post, path = "/v1/orders/{id}/returns", operation_id = "create_return", tag = "returns",
    params(("id" = String, Path, description = "An order id (`ord_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the return as first answered and opens nothing more")),
    request_body = orderd_proto::CreateReturnRequest,
    responses(
        (status = 201, description = "The return, `requested`", body = orderd_proto::ReturnResponse),
        (status = 409, description = "`invalid_transition`: more units than shipped less those already in returns (an order not shipped has none), or the order takes no more returns", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::CreateReturn>(&caller)?;
    query.get()?;
    let key = body.key()?;
    let request: CreateReturnRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view =
        ops::create_return(ctx, allowed, &id, request.into(), key, body.request_hash).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/returns/{}", view.id)))
        .json(wire::return_view(view)))
}

#[utoipa::path(post, path = "/v1/returns/{id}/receive", operation_id = "receive_return", tag = "returns",
    params(("id" = String, Path, description = "A return id (`ret_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the return as received and restocks nothing more")),
    request_body = orderd_proto::ReceiveReturnRequest,
    responses(
        (status = 200, description = "The return, `received`", body = orderd_proto::ReturnResponse),
        (status = 409, description = "`invalid_transition`: the return is already received, or more units of a SKU than the return holds", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn receive(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::ReceiveReturn>(&caller)?;
    query.get()?;
    // An id that cannot be one is 404 before the body is read.
    id.parse::<ReturnId>().map_err(|()| ApiError::not_found())?;
    let key = body.key()?;
    let request: ReceiveReturnRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view =
        ops::receive_return(ctx, allowed, &id, request.into(), key, body.request_hash).await?;
    Ok(HttpResponse::Ok().json(wire::return_view(view)))
}

#[utoipa::path(get, path = "/v1/returns/{id}", operation_id = "get_return", tag = "returns",
    params(("id" = String, Path, description = "A return id (`ret_…`)")),
    responses((status = 200, description = "The return", body = orderd_proto::ReturnResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::GetReturn>(&caller)?;
    query.get()?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view = ops::get_return(ctx, allowed, &id).await?;
    Ok(HttpResponse::Ok().json(wire::return_view(view)))
}

#[utoipa::path(post, path = "/v1/orders/{id}/refunds", operation_id = "create_refund", tag = "returns",
    params(("id" = String, Path, description = "An order id (`ord_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the refund as first answered and refunds nothing more")),
    request_body = orderd_proto::CreateRefundRequest,
    responses(
        (status = 201, description = "The refund", body = orderd_proto::RefundResponse),
        (status = 409, description = "`invalid_transition`: more than the order's total less its earlier refunds, a cancelled order, or the order takes no more refunds", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn refund(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::CreateRefund>(&caller)?;
    query.get()?;
    let key = body.key()?;
    let request: CreateRefundRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view =
        ops::create_refund(ctx, allowed, &id, request.into(), key, body.request_hash).await?;
    Ok(HttpResponse::Created().json(wire::refund(view)))
}

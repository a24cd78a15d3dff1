//! `POST /v1/orders/{id}/shipments`, `POST /v1/shipments/{id}/events` and
//! `GET /v1/shipments/{id}`: logistics moves reserved units out of the warehouse.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_engine::{Engine, ShipmentId};
use orderd_proto::{CreateShipmentRequest, ShipmentEventRequest};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::KeyedBody;
use crate::http::extract::{decode_json, NoQuery, QueryParams};
use orderd_service::audit::AuditLog;
use orderd_service::vault::Vault;
use orderd_service::ApiError;
use orderd_service::{ops, roles, wire};

#[utoipa::path(post, path = "/v1/orders/{id}/shipments", operation_id = "create_shipment", tag = "shipments",
    params(("id" = String, Path, description = "An order id (`ord_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the shipment as first answered and ships nothing more")),
    request_body = orderd_proto::CreateShipmentRequest,
    responses(
        (status = 201, description = "The shipment", body = orderd_proto::ShipmentResponse),
        (status = 409, description = "`invalid_transition`: more than is left to ship, or the order is cancelled", body = orderd_proto::Problem, content_type = "application/problem+json"),
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
    let allowed = ops::allow::<ops::op::WriteShipment>(&caller)?;
    query.get()?;
    let key = body.key()?;
    let request: CreateShipmentRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view =
        ops::create_shipment(ctx, allowed, &id, request.into(), key, body.request_hash).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/shipments/{}", view.id)))
        .json(wire::shipment(view)))
}

#[utoipa::path(post, path = "/v1/shipments/{id}/events", tag = "shipments",
    params(("id" = String, Path, description = "A shipment id (`shp_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same path and body returns the shipment as first answered and records nothing more")),
    request_body = orderd_proto::ShipmentEventRequest,
    responses(
        (status = 200, description = "The shipment", body = orderd_proto::ShipmentResponse),
        (status = 409, description = "`invalid_transition`: the shipment is delivered or failed", body = orderd_proto::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn event(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    body: KeyedBody,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    let allowed = ops::allow::<ops::op::WriteShipment>(&caller)?;
    query.get()?;
    // An id that cannot be one is 404 before the body is read.
    id.parse::<ShipmentId>()
        .map_err(|()| ApiError::not_found())?;
    let key = body.key()?;
    let request: ShipmentEventRequest = decode_json(&body.bytes)?;
    let ctx = ops::Ctx::new(&engine, &vault, &audit);
    let view =
        ops::shipment_event(ctx, allowed, &id, request.into(), key, body.request_hash).await?;
    Ok(HttpResponse::Ok().json(wire::shipment(view)))
}

#[utoipa::path(get, path = "/v1/shipments/{id}", operation_id = "get_shipment", tag = "shipments",
    params(("id" = String, Path, description = "A shipment id (`shp_…`)")),
    responses((status = 200, description = "The shipment", body = orderd_proto::ShipmentResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::SHIPMENT_READ)?;
    query.get()?;
    let id: ShipmentId = id.parse().map_err(|()| ApiError::not_found())?;
    let view = engine.shipment(id).await?;
    Ok(HttpResponse::Ok().json(wire::shipment(view)))
}

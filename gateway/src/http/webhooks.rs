//! `POST /v1/webhooks`, `GET /v1/webhooks`, `DELETE /v1/webhooks/{id}` and
//! `GET /v1/webhooks/{id}/deliveries` (API.md, Commerce: webhooks). The endpoints and their
//! delivery workers are `orderd_control::webhooks`.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_control::webhooks::{Delivery, Endpoint, Webhooks};
use orderd_engine::events;
use orderd_proto::{CreateWebhookRequest, DeliveryResponse, Page, WebhookResponse};
use orderd_service::audit::AuditLog;
use orderd_service::{roles, validate, wire, ApiError};
use serde::{Deserialize, Serialize};

use crate::http::error::HttpError;
use crate::http::extract::{decode_json, Authed, NoQuery, QueryParams, RawBody};

/// Query of the two lists: `limit` (1–1000, default 100) and `after` (the previous page's
/// `next`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookListQuery {
    /// 1–1000, 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

fn endpoint(endpoint: &Endpoint, secret: bool) -> WebhookResponse {
    WebhookResponse {
        id: endpoint.wire_id(),
        url: endpoint.url.clone(),
        types: endpoint.types.clone(),
        secret: secret.then(|| endpoint.secret.clone()),
        created_at: wire::time(endpoint.created_us),
    }
}

fn delivery(d: &Delivery) -> DeliveryResponse {
    let pending = d.status == orderd_control::webhooks::DeliveryStatus::Pending;
    DeliveryResponse {
        event_id: events::event_id(d.cursor),
        attempts: d.attempts,
        status: d.status.as_str().to_string(),
        last_status_code: d.last_status_code,
        next_attempt_at: pending.then(|| wire::time(d.next_attempt_us)),
    }
}

fn blocking_failed(error: actix_web::error::BlockingError) -> ApiError {
    ApiError::Internal(format!("webhook worker: {error}"))
}

#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks",
    request_body = orderd_proto::CreateWebhookRequest,
    responses(
        (status = 201, description = "The endpoint with its signing `secret`, shown only here; deliveries start with the next event", body = orderd_proto::WebhookResponse),
        (status = 400, description = "`invalid_request`: not http(s), a loopback or private address (unless `webhooks.allow_private`), an unknown event type, or `webhooks.endpoints_max` endpoints exist", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    caller: Authed,
    query: QueryParams<NoQuery>,
    body: RawBody,
    webhooks: web::Data<Arc<Webhooks>>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::WEBHOOKS_MANAGE)?;
    query.get()?;
    let request: CreateWebhookRequest = decode_json(&body.0)?;
    let service = webhooks.get_ref().clone();
    // Resolving the host and the synced write block.
    let created = web::block(move || service.create(&request.url, &request.types))
        .await
        .map_err(blocking_failed)??;
    audit
        .record(
            &caller,
            "webhook.create",
            created.wire_id(),
            format!("url={} types={}", created.url, created.types.join(",")),
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/v1/webhooks/{}", created.wire_id()),
        ))
        .json(endpoint(&created, true)))
}

#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    params(WebhookListQuery),
    responses((status = 200, description = "The endpoints, by id, without secrets", body = orderd_proto::Page<orderd_proto::WebhookResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<WebhookListQuery>,
    webhooks: web::Data<Arc<Webhooks>>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::WEBHOOKS_MANAGE)?;
    let query = query.get()?;
    let limit = validate::limit(query.limit.as_deref())?;
    let after = query.after.unwrap_or_default();
    let all: Vec<Endpoint> = webhooks
        .list()
        .into_iter()
        .filter(|e| e.wire_id() > after)
        .collect();
    let next = (all.len() > limit).then(|| all[limit - 1].wire_id());
    Ok(HttpResponse::Ok().json(Page {
        items: all.iter().take(limit).map(|e| endpoint(e, false)).collect(),
        next,
    }))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "A webhook id (`whk_…`)")),
    responses((status = 204, description = "Deleted: nothing more is delivered to it, its delivery records go")),
    security(("bearer" = [])))]
pub async fn delete(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    webhooks: web::Data<Arc<Webhooks>>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::WEBHOOKS_MANAGE)?;
    query.get()?;
    let service = webhooks.get_ref().clone();
    let target = id.into_inner();
    let id = target.clone();
    // Waits for the endpoint's worker to stop (at most one attempt's `webhooks.timeout_ms`).
    web::block(move || service.delete(&id))
        .await
        .map_err(blocking_failed)??;
    audit
        .record(&caller, "webhook.delete", target, String::new())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "A webhook id (`whk_…`)"), WebhookListQuery),
    responses((status = 200, description = "The endpoint's deliveries, oldest event first (`after`: an event id); the newest `webhooks.deliveries_max` are kept", body = orderd_proto::Page<orderd_proto::DeliveryResponse>)),
    security(("bearer" = [])))]
pub async fn deliveries(
    caller: Authed,
    query: QueryParams<WebhookListQuery>,
    id: web::Path<String>,
    webhooks: web::Data<Arc<Webhooks>>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::WEBHOOKS_MANAGE)?;
    let query = query.get()?;
    let limit = validate::limit(query.limit.as_deref())?;
    let after = match query.after.as_deref() {
        Some(text) => events::parse_event_id(text)
            .ok_or_else(|| ApiError::invalid("after", "an event id: evt_ and 16 hex digits"))?,
        None => 0,
    };
    let service = webhooks.get_ref().clone();
    let (items, more) = web::block(move || service.deliveries(&id, after, limit))
        .await
        .map_err(blocking_failed)??;
    let next = more
        .then(|| items.last().map(|d| events::event_id(d.cursor)))
        .flatten();
    Ok(HttpResponse::Ok().json(Page {
        items: items.iter().map(delivery).collect(),
        next,
    }))
}

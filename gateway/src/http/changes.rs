//! `GET /v1/ops/config` and the change requests under `/v1/ops/changes` (the flow lives in
//! [`orderd_control::changes`]).

use actix_web::{web, HttpResponse};
use orderd_proto::{ChangeRequest, ChangesQuery, ConfigResponse, Page};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::KeyedBody;
use crate::http::extract::{decode_json, NoQuery, QueryParams};
use orderd_control::changes::{self, Changes, NewChange};
use orderd_control::settings::Live;
use orderd_service::{roles, validate};

/// The settings change management may change, with their effective values.
#[utoipa::path(get, path = "/v1/ops/config", tag = "changes",
    responses((status = 200, description = "Every setting of the registry with its value in effect", body = orderd_proto::ConfigResponse)),
    security(("bearer" = [])))]
pub async fn config(
    caller: Authed,
    query: QueryParams<NoQuery>,
    live: web::Data<Live>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_CONFIG_READ)?;
    query.get()?;
    Ok(HttpResponse::Ok().json(ConfigResponse {
        items: live.items(),
    }))
}

/// 201: the change, `pending`, with its assessment.
#[utoipa::path(post, path = "/v1/ops/changes", tag = "changes",
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a repeat with the same body returns the change the first request created and creates none")),
    request_body = orderd_proto::ChangeRequest,
    responses(
        (status = 201, description = "The change request, pending approval", body = orderd_proto::ChangeResponse),
        (status = 422, description = "`idempotency_conflict`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn request(
    caller: Authed,
    query: QueryParams<NoQuery>,
    body: KeyedBody,
    changes: web::Data<Changes>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::CHANGE_REQUEST)?;
    query.get()?;
    let key = body.key()?;
    let request: ChangeRequest = decode_json(&body.bytes)?;
    let change = changes
        .request(
            &caller,
            NewChange {
                setting: request.setting,
                value: request.value,
                reason: request.reason,
                rollback_plan: request.rollback_plan,
                watch_window_s: request.watch_window_s,
            },
            key,
            body.request_hash,
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/v1/ops/changes/{}", change.id()),
        ))
        .json(changes::response(&change)))
}

/// Changes, newest first.
#[utoipa::path(get, path = "/v1/ops/changes", operation_id = "list_changes", tag = "changes",
    params(orderd_proto::ChangesQuery),
    responses((status = 200, description = "A page of changes, newest first", body = orderd_proto::Page<orderd_proto::ChangeResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<ChangesQuery>,
    changes: web::Data<Changes>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::CHANGES_READ)?;
    let query = query.get()?;
    let limit = validate::limit(query.limit.as_deref())?;
    let all = changes.list().await?;
    let (page, next) = super::page_after(all, |c| c.id(), query.after.as_deref(), limit)?;
    Ok(HttpResponse::Ok().json(Page {
        items: page.iter().map(changes::response).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/v1/ops/changes/{id}", operation_id = "get_change", tag = "changes",
    params(("id" = String, Path, description = "A change id (`chg_…`)")),
    responses((status = 200, description = "The change with every step", body = orderd_proto::ChangeResponse)),
    security(("bearer" = [])))]
pub async fn get(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    changes: web::Data<Changes>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::CHANGES_READ)?;
    query.get()?;
    let change = changes.get(&id).await?;
    Ok(HttpResponse::Ok().json(changes::response(&change)))
}

/// 200 `approved`. Only an admin who did not request the change (403 otherwise).
#[utoipa::path(post, path = "/v1/ops/changes/{id}/approve", tag = "changes",
    params(("id" = String, Path, description = "A change id (`chg_…`)")),
    responses(
        (status = 200, description = "The change, approved", body = orderd_proto::ChangeResponse),
        (status = 409, description = "`invalid_transition`: the change is not pending", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn approve(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    changes: web::Data<Changes>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::CHANGE_APPROVE)?;
    query.get()?;
    let change = changes.approve(&caller, &id).await?;
    Ok(HttpResponse::Ok().json(changes::response(&change)))
}

/// 200 `applied`: the value is in effect (or will be at the next start) and watched.
#[utoipa::path(post, path = "/v1/ops/changes/{id}/apply", tag = "changes",
    params(("id" = String, Path, description = "A change id (`chg_…`)")),
    responses(
        (status = 200, description = "The change, applied and watched", body = orderd_proto::ChangeResponse),
        (status = 409, description = "`invalid_transition`: not approved, the setting changed since, or another change of it is in its watch window", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn apply(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    changes: web::Data<Changes>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::CHANGE_APPLY)?;
    query.get()?;
    let change = changes.apply(&caller, &id).await?;
    Ok(HttpResponse::Ok().json(changes::response(&change)))
}

/// 200 `rolled_back`: the old value is back.
#[utoipa::path(post, path = "/v1/ops/changes/{id}/rollback", tag = "changes",
    params(("id" = String, Path, description = "A change id (`chg_…`)")),
    responses(
        (status = 200, description = "The change, rolled back", body = orderd_proto::ChangeResponse),
        (status = 409, description = "`invalid_transition`: not applied, or a later change set the setting since", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn rollback(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    changes: web::Data<Changes>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::CHANGE_ROLLBACK)?;
    query.get()?;
    let change = changes.rollback(&caller, &id).await?;
    Ok(HttpResponse::Ok().json(changes::response(&change)))
}

//! `GET /v1/ops/shards`, `POST /v1/ops/shards/{id}/restart`, `GET /v1/ops/incidents`,
//! `GET /v1/ops/inspection` and `POST /v1/ops/keys/rotate`.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::{IncidentsQuery, KeyRotationResponse, ShardRestartResponse};

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::body::{NoQuery, QueryParams};
use crate::error::ApiError;
use crate::inspection::{self, Inspector};
use crate::vault::Vault;
use crate::{roles, validate, wire};

#[utoipa::path(get, path = "/v1/ops/shards", tag = "ops",
    responses((status = 200, description = "Every shard", body = Vec<orderd_proto::ShardResponse>)),
    security(("bearer" = [])))]
pub async fn shards(
    caller: Caller,
    query: QueryParams<NoQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::OPS_SHARDS_READ)?;
    query.get()?;
    let shards: Vec<_> = engine.shards().await.into_iter().map(wire::shard).collect();
    Ok(HttpResponse::Ok().json(shards))
}

/// 202: the shard is rebuilt from storage in the background; `GET /v1/ops/shards` shows when
/// it runs again.
#[utoipa::path(post, path = "/v1/ops/shards/{id}/restart", tag = "ops",
    params(("id" = String, Path, description = "A shard number")),
    responses((status = 202, description = "The shard is being rebuilt from storage", body = orderd_proto::ShardRestartResponse)),
    security(("bearer" = [])))]
pub async fn restart_shard(
    caller: Caller,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::OPS_SHARD_RESTART)?;
    query.get()?;
    let id: u16 = id.parse().map_err(|_| ApiError::not_found())?;
    if usize::from(id) >= engine.shard_count() {
        return Err(ApiError::NotFound(format!("no shard {id}")));
    }
    audit
        .record(&caller, "shard.restart", id.to_string(), "")
        .await?;
    let engine = engine.into_inner();
    let actor = caller.key_id;
    tracing::info!(message = "Shard restart requested.", shard = id, %actor);
    actix_web::rt::spawn(async move {
        match engine.restart_shard(id).await {
            Ok(()) => tracing::info!(message = "Shard restarted on request.", shard = id),
            Err(error) => {
                tracing::warn!(message = "Requested shard restart failed.", shard = id, %error)
            }
        }
    });
    Ok(HttpResponse::Accepted().json(ShardRestartResponse {
        id,
        state: "restarting".to_string(),
    }))
}

/// Incidents, oldest first: the first `limit` found at or after `since`, or the newest `limit`.
#[utoipa::path(get, path = "/v1/ops/incidents", tag = "ops",
    params(orderd_proto::IncidentsQuery),
    responses((status = 200, description = "Incidents, oldest first", body = Vec<orderd_proto::IncidentResponse>)),
    security(("bearer" = [])))]
pub async fn incidents(
    caller: Caller,
    query: QueryParams<IncidentsQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::OPS_INCIDENTS_READ)?;
    let query = query.get()?;
    let since_us = validate::since(query.since.as_deref())?;
    let limit = validate::limit(query.limit.as_deref())?;
    let engine = engine.into_inner();
    let incidents = web::block(move || engine.incidents().list(since_us, limit))
        .await
        .map_err(|error| ApiError::Internal(format!("incident read did not run: {error}")))?
        .map_err(|error| ApiError::Unavailable {
            detail: format!("cannot read incidents: {error}"),
            reasons: None,
        })?;
    let items: Vec<_> = incidents.into_iter().map(wire::incident).collect();
    Ok(HttpResponse::Ok().json(items))
}

/// Runs the health inspection now and answers its report: 200 whatever the outcome (a failing
/// check is part of the answer, not an error of the request).
#[utoipa::path(get, path = "/v1/ops/inspection", tag = "ops",
    responses((status = 200, description = "Every check with its status (`overall` is the worst), and the newest scheduled run", body = orderd_proto::InspectionResponse)),
    security(("bearer" = [])))]
pub async fn inspection(
    caller: Caller,
    query: QueryParams<NoQuery>,
    inspector: web::Data<Inspector>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::OPS_INSPECTION_READ)?;
    query.get()?;
    let inspector = inspector.into_inner();
    let report = inspector
        .clone()
        .inspect()
        .await
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(inspection::response(
        &report,
        inspector.last_scheduled().as_ref(),
    )))
}

/// 200: a new master key and a new data key; every data key re-wrapped under the new master
/// key while requests keep being served. 409 when the master key comes from the environment.
#[utoipa::path(post, path = "/v1/ops/keys/rotate", tag = "ops",
    responses(
        (status = 200, description = "The new master key and data key, and how many data keys were re-wrapped", body = orderd_proto::KeyRotationResponse),
        (status = 409, description = "`invalid_transition`: the master key comes from ORDERD_MASTER_KEY and is rotated by the operator", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn rotate_keys(
    caller: Caller,
    query: QueryParams<NoQuery>,
    vault: web::Data<Vault>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(roles::OPS_KEYS_ROTATE)?;
    query.get()?;
    let vault = vault.into_inner();
    let rotation = web::block(move || vault.rotate())
        .await
        .map_err(|error| ApiError::Internal(format!("key rotation did not run: {error}")))??;
    tracing::info!(
        message = "Rotated the master key.",
        master_key_id = %rotation.master_key_id,
        data_key_id = format!("{:x}", rotation.data_key_id),
        rewrapped = rotation.rewrapped,
        actor = %caller.key_id
    );
    // After the fact: the rotation is done and durable; ids and counts only, never a key.
    audit
        .record(
            &caller,
            "keys.rotate",
            rotation.master_key_id.to_string(),
            format!(
                "data_key={:x} rewrapped={}",
                rotation.data_key_id, rotation.rewrapped
            ),
        )
        .await?;
    Ok(HttpResponse::Ok().json(KeyRotationResponse {
        master_key_id: rotation.master_key_id.to_string(),
        data_key_id: format!("{:x}", rotation.data_key_id),
        rewrapped: rotation.rewrapped,
    }))
}

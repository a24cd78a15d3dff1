//! `GET /v1/ops/shards`, `POST /v1/ops/shards/{id}/restart`, `GET /v1/ops/incidents`,
//! `GET /v1/ops/quarantine`, `DELETE /v1/ops/quarantine/{fingerprint}`,
//! `GET /v1/ops/inspection` and `POST /v1/ops/keys/rotate`.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::{
    IncidentsQuery, KeyRotationResponse, Page, QuarantineQuery, ShardRestartResponse,
};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::{NoQuery, QueryParams};
use orderd_control::inspection::{self, Inspector};
use orderd_service::audit::AuditLog;
use orderd_service::vault::Vault;
use orderd_service::ApiError;
use orderd_service::{roles, validate, wire};

#[utoipa::path(get, path = "/v1/ops/shards", tag = "ops",
    responses((status = 200, description = "Every shard", body = Vec<orderd_proto::ShardResponse>)),
    security(("bearer" = [])))]
pub async fn shards(
    caller: Authed,
    query: QueryParams<NoQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, HttpError> {
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
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_SHARD_RESTART)?;
    query.get()?;
    let id: u16 = id.parse().map_err(|_| ApiError::not_found())?;
    if usize::from(id) >= engine.shard_count() {
        return Err(ApiError::NotFound(format!("no shard {id}")).into());
    }
    audit
        .record(&caller, "shard.restart", id.to_string(), "")
        .await?;
    let engine = engine.into_inner();
    let actor = caller.0.key_id;
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
    caller: Authed,
    query: QueryParams<IncidentsQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, HttpError> {
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

/// Quarantined commands, oldest first, paged by fingerprint.
#[utoipa::path(get, path = "/v1/ops/quarantine", tag = "ops",
    params(orderd_proto::QuarantineQuery),
    responses((status = 200, description = "A page of quarantined commands, oldest first", body = orderd_proto::Page<orderd_proto::QuarantineResponse>)),
    security(("bearer" = [])))]
pub async fn quarantine(
    caller: Authed,
    query: QueryParams<QuarantineQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_QUARANTINE_READ)?;
    let query = query.get()?;
    let limit = validate::limit(query.limit.as_deref())?;
    let after = query.after.clone();
    let engine = engine.into_inner();
    let entries = web::block(move || engine.quarantine().list(engine.storage().as_ref()))
        .await
        .map_err(|error| ApiError::Internal(format!("quarantine read did not run: {error}")))?
        .map_err(|error| ApiError::Unavailable {
            detail: format!("cannot read the quarantine: {error}"),
            reasons: None,
        })?;
    let (page, next) = super::page_after(
        entries,
        |entry| wire::fingerprint(entry.fingerprint),
        after.as_deref(),
        limit,
    )?;
    Ok(HttpResponse::Ok().json(Page {
        items: page.into_iter().map(wire::quarantined).collect(),
        next,
    }))
}

/// 200 with the lifted command: from now on it runs again (and is quarantined anew after two
/// more panics). Audited, and written as a `quarantine_lifted` incident. 404 when no command
/// with this fingerprint is quarantined.
#[utoipa::path(delete, path = "/v1/ops/quarantine/{fingerprint}", tag = "ops",
    params(("fingerprint" = String, Path, description = "The command's fingerprint: 16 hex digits, as listed")),
    responses(
        (status = 200, description = "The lifted command; it is accepted again", body = orderd_proto::QuarantineResponse),
        (status = 404, description = "`not_found`: no command with this fingerprint is quarantined", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn lift_quarantine(
    caller: Authed,
    query: QueryParams<NoQuery>,
    fingerprint: web::Path<String>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_QUARANTINE_LIFT)?;
    query.get()?;
    let fingerprint = wire::parse_fingerprint(&fingerprint).ok_or_else(ApiError::not_found)?;
    let id = wire::fingerprint(fingerprint);
    let engine = engine.into_inner();
    let lifted = {
        let engine = engine.clone();
        web::block(move || {
            engine
                .quarantine()
                .lift(engine.storage().as_ref(), fingerprint)
        })
        .await
        .map_err(|error| ApiError::Internal(format!("quarantine lift did not run: {error}")))?
        .map_err(|error| ApiError::Unavailable {
            detail: format!("cannot lift the quarantine: {error}"),
            reasons: None,
        })?
    };
    let Some(entry) = lifted else {
        return Err(ApiError::NotFound(format!("no quarantined command {id}")).into());
    };
    let actor = caller.key_id.clone();
    tracing::info!(
        message = "Quarantine lifted.",
        fingerprint = %id,
        command = %entry.command,
        %actor
    );
    // After the fact, like every mutation: the record is deleted and synced.
    audit
        .record(
            &caller,
            "quarantine.lift",
            id.clone(),
            format!("command={}", entry.command),
        )
        .await?;
    // On-call sees the lift beside the `quarantine` incident it ends.
    let detail = format!(
        "{} (command {id}), quarantined at {}: {}",
        entry.command,
        wire::time(entry.at_us),
        entry.message
    );
    let action = format!("quarantine lifted by {actor}: the command is accepted again");
    let incidents = engine.clone();
    let incident = web::block(move || {
        incidents.incidents().record_recovered(
            chrono::Utc::now().timestamp_micros(),
            "shard",
            "quarantine_lifted",
            detail,
            action,
        )
    })
    .await
    .map_err(|error| ApiError::Internal(format!("incident write did not run: {error}")))?;
    if let Err(error) = incident {
        tracing::error!(message = "Cannot record the incident of a quarantine lift.", %error);
    }
    Ok(HttpResponse::Ok().json(wire::quarantined(entry)))
}

/// Runs the health inspection now and answers its report: 200 whatever the outcome (a failing
/// check is part of the answer, not an error of the request).
#[utoipa::path(get, path = "/v1/ops/inspection", tag = "ops",
    responses((status = 200, description = "Every check with its status (`overall` is the worst), and the newest scheduled run", body = orderd_proto::InspectionResponse)),
    security(("bearer" = [])))]
pub async fn inspection(
    caller: Authed,
    query: QueryParams<NoQuery>,
    inspector: web::Data<Inspector>,
) -> Result<HttpResponse, HttpError> {
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
    caller: Authed,
    query: QueryParams<NoQuery>,
    vault: web::Data<Vault>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
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

//! `POST /v1/ops/backups`, `GET /v1/ops/backups` and `POST /v1/ops/backups/{id}/verify`: the
//! routes of the backup service ([`orderd_control::backups`]).

use actix_web::{web, HttpResponse};
use orderd_proto::{BackupResponse, BackupShardResponse, BackupVerifyResponse, BackupsQuery, Page};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::{NoQuery, QueryParams};
use orderd_control::backups::{BackupRecord, Backups};
use orderd_service::audit::AuditLog;
use orderd_service::ApiError;
use orderd_service::{roles, validate, wire};

fn response(record: BackupRecord) -> BackupResponse {
    BackupResponse {
        created_at: wire::time(record.created_at_us),
        size_bytes: record.size_bytes,
        new_bytes: record.new_bytes,
        offsite: record.offsite.as_str().to_string(),
        offsite_detail: record.offsite_detail,
        verified: record.drill.as_ref().map(|d| d.verified),
        verified_at: record.drill.as_ref().map(|d| wire::time(d.at_us)),
        verify_detail: record.drill.map(|d| d.detail),
        duration_ms: record.duration_ms,
        files: record.files,
        shards: record
            .shards
            .into_iter()
            .map(|s| BackupShardResponse {
                id: s.shard,
                seq: s.seq,
                acknowledged_seq: s.acknowledged_seq,
                state_digest: format!("{:016x}", s.state_digest),
                log_digest: format!("{:016x}", s.log_digest),
                orders: s.orders,
            })
            .collect(),
        id: record.id,
    }
}

/// 201: a backup of every shard, taken now; its off-site copy follows (`offsite: pending`).
#[utoipa::path(post, path = "/v1/ops/backups", operation_id = "create_backup", tag = "ops",
    responses(
        (status = 201, description = "The new backup", body = orderd_proto::BackupResponse),
        (status = 503, description = "`unavailable`: the backup worker's queue is full", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    caller: Authed,
    query: QueryParams<NoQuery>,
    backups: web::Data<Backups>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_BACKUP_CREATE)?;
    query.get()?;
    let record = backups.create().await?;
    audit
        .record(
            &caller,
            "backup.create",
            record.id.clone(),
            format!("size_bytes={} files={}", record.size_bytes, record.files),
        )
        .await?;
    Ok(HttpResponse::Created().json(response(record)))
}

/// Backups, newest first.
#[utoipa::path(get, path = "/v1/ops/backups", operation_id = "list_backups", tag = "ops",
    params(orderd_proto::BackupsQuery),
    responses((status = 200, description = "A page of backups, newest first", body = orderd_proto::Page<orderd_proto::BackupResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<BackupsQuery>,
    backups: web::Data<Backups>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_BACKUPS_READ)?;
    let query = query.get()?;
    let limit = validate::limit(query.limit.as_deref())?;
    let after = query.after.clone();
    let backups = backups.into_inner();
    let records = web::block(move || backups.index().list())
        .await
        .map_err(|error| ApiError::Internal(format!("cannot read the backup index: {error}")))?
        .map_err(|error| ApiError::Internal(format!("cannot read the backup index: {error}")))?;
    let (page, next) = super::page_after(records, |r| r.id.clone(), after.as_deref(), limit)?;
    Ok(HttpResponse::Ok().json(Page {
        items: page.into_iter().map(response).collect(),
        next,
    }))
}

/// 200 with the drill's result (also when it failed: `verified: false`); 404 for an unknown id.
#[utoipa::path(post, path = "/v1/ops/backups/{id}/verify", operation_id = "verify_backup", tag = "ops",
    params(("id" = String, Path, description = "A backup id, `bak_…`")),
    responses(
        (status = 200, description = "The restore drill's result", body = orderd_proto::BackupVerifyResponse),
        (status = 404, description = "`not_found`: no such backup, locally or off-site", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn verify(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    backups: web::Data<Backups>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::OPS_BACKUP_VERIFY)?;
    query.get()?;
    let id = id.into_inner();
    let drill = backups.verify(id.clone()).await?;
    audit
        .record(
            &caller,
            "backup.verify",
            id.clone(),
            format!("verified={} source={}", drill.verified, drill.source),
        )
        .await?;
    Ok(HttpResponse::Ok().json(BackupVerifyResponse {
        id,
        verified: drill.verified,
        detail: drill.detail,
        source: drill.source,
        duration_ms: drill.duration_ms,
    }))
}

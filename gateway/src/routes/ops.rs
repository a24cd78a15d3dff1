//! `GET /v1/ops/shards` and `POST /v1/ops/shards/{id}/restart`.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::ShardRestartResponse;

use crate::audit::AuditLog;
use crate::auth::Caller;
use crate::body::{NoQuery, QueryParams};
use crate::error::ApiError;
use crate::{roles, wire};

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

//! `GET /livez`, `GET /readyz` and `GET /metrics`: no key needed.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::HealthResponse;

use crate::http::error::HttpError;
use orderd_control::backups::Backups;
use orderd_control::telemetry;
use orderd_service::audit::AuditLog;
use orderd_service::ApiError;

/// 200 while the process serves requests.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "The process serves", body = orderd_proto::HealthResponse)))]
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse {
        status: "live".to_string(),
    })
}

/// 200 when every shard runs and storage is open; else 503 with the reasons.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Every shard runs and storage is open", body = orderd_proto::HealthResponse),
        (status = 503, description = "Not ready, with `reasons`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(engine: web::Data<Engine>) -> Result<HttpResponse, HttpError> {
    match engine.readiness() {
        Ok(()) => Ok(HttpResponse::Ok().json(HealthResponse {
            status: "ready".to_string(),
        })),
        Err(reasons) => Err(ApiError::Unavailable {
            detail: if reasons.is_empty() {
                "not ready".to_string()
            } else {
                format!("not ready: {}", reasons.join("; "))
            },
            reasons: Some(reasons),
        }
        .into()),
    }
}

/// Every `orderd_` metric in the Prometheus text format 0.0.4 (see `docs/OPERATIONS.md`,
/// "Metrics").
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4: names start with `orderd_`, latencies are histograms (`_bucket` series), counters end in `_total`", body = String, content_type = "text/plain")))]
pub async fn metrics(
    engine: web::Data<Engine>,
    audit: Option<web::Data<AuditLog>>,
    backups: Option<web::Data<Backups>>,
) -> HttpResponse {
    let text = telemetry::render(
        &engine,
        audit.as_ref().map(|audit| audit.get_ref()),
        backups.as_ref().map(|backups| backups.get_ref()),
    )
    .await;
    HttpResponse::Ok()
        .content_type(telemetry::CONTENT_TYPE)
        .body(text)
}

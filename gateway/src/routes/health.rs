//! `GET /livez` and `GET /readyz`: no key needed.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::HealthResponse;

use crate::error::ApiError;

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
pub async fn readyz(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
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
        }),
    }
}

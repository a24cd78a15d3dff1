//! `GET /livez` and `GET /readyz`: no key needed.

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::HealthResponse;

use crate::error::ApiError;

/// 200 while the process serves requests.
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse {
        status: "live".to_string(),
    })
}

/// 200 when every shard runs and storage is open; else 503 with the reasons.
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

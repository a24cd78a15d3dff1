//! How an [`ApiError`] goes out over HTTP: one RFC 9457 `application/problem+json` response
//! ([`HttpError`]), and a fallback that turns actix's own error responses into the same.
//!
//! `ApiError` lives in `orderd-service`, which has no actix-web, and `ResponseError` in
//! actix-web, so the gateway renders it through its own wrapper (the orphan rule): handlers
//! return `Result<_, HttpError>`, and `?` converts an `ApiError`.

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, ResponseError};
use orderd_service::ApiError;

/// Media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An [`ApiError`] answered over HTTP.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub ApiError);

/// Whatever converts into an [`ApiError`] (the engine's `CommandError`, a backup job's
/// error, …) answers as one.
impl<E: Into<ApiError>> From<E> for HttpError {
    fn from(error: E) -> Self {
        HttpError(error.into())
    }
}

/// What a handler answers.
pub type HttpResult<T> = Result<T, HttpError>;

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let error = &self.0;
        if let ApiError::Internal(detail) = error {
            tracing::error!(message = "Request failed with an internal error.", %detail);
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE));
        if error.is_retryable() {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        if let ApiError::Unauthorized(_) = error {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"orderd\""));
        }
        response.body(error.problem_json())
    }
}

/// Middleware that turns every error response that is not already problem+json (actix's own
/// 405 for a wrong method, a 500 from a missing extractor config, …) into one, keeping its
/// `Allow` header.
pub fn problem_fallback<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(render_as_problem)
}

fn render_as_problem<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_CONTENT_TYPE.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (req, old) = res.into_parts();
    let mut new = HttpError(ApiError::from_status(old.status().as_u16())).error_response();
    if let Some(allow) = old.headers().get(header::ALLOW) {
        new.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn render(
        error: ApiError,
    ) -> (
        StatusCode,
        actix_web::http::header::HeaderMap,
        serde_json::Value,
    ) {
        let response = HttpError(error).error_response();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body()).await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[actix_web::test]
    async fn invalid_request_renders_rfc9457_with_param() {
        let (status, headers, body) =
            render(ApiError::invalid("lines[0].qty", "qty must be at least 1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            headers.get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_CONTENT_TYPE
        );
        assert_eq!(
            body,
            serde_json::json!({
                "type": "/problems/invalid_request",
                "title": "Invalid request",
                "status": 400,
                "detail": "qty must be at least 1",
                "code": "invalid_request",
                "param": "lines[0].qty",
            })
        );
    }

    #[actix_web::test]
    async fn insufficient_stock_lists_skus() {
        let (status, _, body) = render(ApiError::InsufficientStock {
            skus: vec!["A".into(), "B".into()],
        })
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["code"], "insufficient_stock");
        assert_eq!(body["type"], "/problems/insufficient_stock");
        assert_eq!(body["skus"], serde_json::json!(["A", "B"]));
        assert!(body.get("param").is_none());
    }

    #[actix_web::test]
    async fn retryable_errors_carry_retry_after() {
        for error in [
            ApiError::RateLimited,
            ApiError::Unavailable {
                detail: "shard 1 restarting".into(),
                reasons: Some(vec!["shard 1 restarting".into()]),
            },
        ] {
            let (status, headers, body) = render(error).await;
            assert!(status == 429 || status == 503);
            assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
            assert_eq!(body["status"], status.as_u16());
        }
        let (_, headers, _) = render(ApiError::NotFound("x".into())).await;
        assert!(headers.get(header::RETRY_AFTER).is_none());
    }
}

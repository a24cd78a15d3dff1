//! The API's error type: every failure becomes one RFC 9457 `application/problem+json`
//! response with a machine `code`, and every engine error maps onto exactly one code.

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, ResponseError};
use orderd_engine::CommandError;
use orderd_proto::Problem;

/// Media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error answered to an API client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    InvalidRequest { param: String, detail: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{}", payload_too_large_detail(*limit_bytes))]
    PayloadTooLarge { limit_bytes: Option<usize> },
    #[error("not enough stock for {}", skus.join(", "))]
    InsufficientStock { skus: Vec<String> },
    #[error("{0}")]
    InvalidTransition(String),
    #[error("this Idempotency-Key was used with a different request (body, route or object)")]
    IdempotencyConflict,
    #[error("no such customer")]
    UnknownCustomer,
    #[error("too many requests for this key; retry after a second")]
    RateLimited,
    /// 422: the command made a shard panic twice and is refused (not retryable).
    #[error("{0}")]
    Quarantined(String),
    #[error("{detail}")]
    Unavailable {
        detail: String,
        reasons: Option<Vec<String>>,
    },
    /// 507: the disk is (nearly) full; reads go on, writes are refused until space is back.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Internal(String),
}

fn payload_too_large_detail(limit_bytes: Option<usize>) -> String {
    match limit_bytes {
        Some(limit) => format!("request body is larger than {limit} bytes"),
        None => "request body is too large".to_string(),
    }
}

impl ApiError {
    /// A 400 naming the offending field.
    pub fn invalid(param: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest {
            param: param.into(),
            detail: detail.into(),
        }
    }

    /// A 404 with a generic detail.
    pub fn not_found() -> ApiError {
        ApiError::NotFound("no such object".into())
    }

    /// The machine code, also the last part of the problem `type`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::InsufficientStock { .. } => "insufficient_stock",
            ApiError::InvalidTransition(_) => "invalid_transition",
            ApiError::IdempotencyConflict => "idempotency_conflict",
            ApiError::UnknownCustomer => "unknown_customer",
            ApiError::RateLimited => "rate_limited",
            ApiError::Quarantined(_) => "quarantined",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::InsufficientStorage(_) => "insufficient_storage",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A short human summary of the code.
    pub fn title(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "Invalid request",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::InsufficientStock { .. } => "Insufficient stock",
            ApiError::InvalidTransition(_) => "Invalid transition",
            ApiError::IdempotencyConflict => "Idempotency conflict",
            ApiError::UnknownCustomer => "Unknown customer",
            ApiError::RateLimited => "Rate limited",
            ApiError::Quarantined(_) => "Quarantined",
            ApiError::Unavailable { .. } => "Unavailable",
            ApiError::InsufficientStorage(_) => "Insufficient storage",
            ApiError::Internal(_) => "Internal error",
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        Problem {
            problem_type: format!("/problems/{}", self.code()),
            title: self.title().to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_string(),
            param: match self {
                ApiError::InvalidRequest { param, .. } => Some(param.clone()),
                _ => None,
            },
            skus: match self {
                ApiError::InsufficientStock { skus } => Some(skus.clone()),
                _ => None,
            },
            reasons: match self {
                ApiError::Unavailable { reasons, .. } => reasons.clone(),
                _ => None,
            },
        }
    }

    /// The error a bare status code stands for, used when something outside our handlers
    /// (actix itself) produced an error response.
    pub fn from_status(status: StatusCode) -> ApiError {
        match status.as_u16() {
            400 => ApiError::invalid("body", "the request could not be understood"),
            401 => ApiError::Unauthorized("missing or unknown API key".into()),
            403 => ApiError::Forbidden("this key's role may not do this".into()),
            404 => ApiError::not_found(),
            405 => ApiError::MethodNotAllowed,
            413 => ApiError::PayloadTooLarge { limit_bytes: None },
            429 => ApiError::RateLimited,
            503 => ApiError::Unavailable {
                detail: "the server is unavailable; retry shortly".into(),
                reasons: None,
            },
            _ => ApiError::Internal(format!("unexpected error ({status})")),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NotFound => ApiError::not_found(),
            CommandError::InsufficientStock { skus } => ApiError::InsufficientStock { skus },
            CommandError::InvalidTransition(detail) => ApiError::InvalidTransition(detail),
            CommandError::IdempotencyConflict => ApiError::IdempotencyConflict,
            CommandError::UnknownCustomer => ApiError::UnknownCustomer,
            CommandError::Invalid { param, detail } => ApiError::InvalidRequest { param, detail },
            CommandError::Unavailable(detail) => ApiError::Unavailable {
                detail,
                reasons: None,
            },
            CommandError::Quarantined(detail) => ApiError::Quarantined(detail),
            CommandError::InsufficientStorage(detail) => ApiError::InsufficientStorage(detail),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InsufficientStock { .. } => StatusCode::CONFLICT,
            ApiError::InvalidTransition(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownCustomer => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Quarantined(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let ApiError::Internal(detail) = self {
            tracing::error!(message = "Request failed with an internal error.", %detail);
        }
        let body = match serde_json::to_vec(&self.problem()) {
            Ok(body) => body,
            // A problem document is plain strings and numbers; failing to serialize it is a bug.
            Err(error) => format!(r#"{{"code":"internal","detail":"{error}"}}"#).into_bytes(),
        };
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE));
        match self {
            ApiError::RateLimited
            | ApiError::Unavailable { .. }
            | ApiError::InsufficientStorage(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"orderd\""));
            }
            _ => {}
        }
        response.body(body)
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
    let mut new = ApiError::from_status(old.status()).error_response();
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
        let response = error.error_response();
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

    #[test]
    fn every_engine_error_maps_to_exactly_one_code() {
        let cases = [
            (CommandError::NotFound, 404, "not_found"),
            (
                CommandError::InsufficientStock {
                    skus: vec!["A".into()],
                },
                409,
                "insufficient_stock",
            ),
            (
                CommandError::InvalidTransition("shipped".into()),
                409,
                "invalid_transition",
            ),
            (
                CommandError::IdempotencyConflict,
                422,
                "idempotency_conflict",
            ),
            (CommandError::UnknownCustomer, 422, "unknown_customer"),
            (
                CommandError::Invalid {
                    param: "delta".into(),
                    detail: "x".into(),
                },
                400,
                "invalid_request",
            ),
            (
                CommandError::Unavailable("restarting".into()),
                503,
                "unavailable",
            ),
            (
                CommandError::InsufficientStorage("disk full".into()),
                507,
                "insufficient_storage",
            ),
        ];
        for (engine_error, status, code) in cases {
            let api = ApiError::from(engine_error);
            assert_eq!(api.status_code().as_u16(), status);
            assert_eq!(api.code(), code);
            assert_eq!(api.problem().problem_type, format!("/problems/{code}"));
        }
    }
}

//! The API's error type: every failure is one [`ApiError`] with a status code, a machine `code`
//! and an RFC 9457 problem document; every engine error maps onto exactly one code. The
//! gateway renders it (HTTP: `application/problem+json`; TCP: an ERROR frame).

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
    /// 422: a line's `unit_price` differs from the catalog price; `param` names the line's
    /// `unit_price`.
    #[error("{detail}")]
    PriceMismatch { param: String, detail: String },
    /// 422: a SKU with no active catalog price, where the catalog prices the order; `param`
    /// names the line's `sku`.
    #[error("{detail}")]
    UnknownSku { param: String, detail: String },
    #[error("too many requests for this key; retry after a second")]
    RateLimited,
    /// 429 `rate_limited` with its own detail: an operation allowed once per interval.
    #[error("{0}")]
    TooSoon(String),
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

    /// The HTTP status code of this error (also carried by the TCP ERROR frame).
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidRequest { .. } => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::InsufficientStock { .. } => 409,
            ApiError::InvalidTransition(_) => 409,
            ApiError::IdempotencyConflict => 422,
            ApiError::UnknownCustomer => 422,
            ApiError::PriceMismatch { .. } | ApiError::UnknownSku { .. } => 422,
            ApiError::RateLimited | ApiError::TooSoon(_) => 429,
            ApiError::Quarantined(_) => 422,
            ApiError::Unavailable { .. } => 503,
            ApiError::InsufficientStorage(_) => 507,
            ApiError::Internal(_) => 500,
        }
    }

    /// A retry after a second may succeed (429, 503, 507): HTTP answers `Retry-After: 1`.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited
                | ApiError::TooSoon(_)
                | ApiError::Unavailable { .. }
                | ApiError::InsufficientStorage(_)
        )
    }

    /// The problem document serialized, as both front doors send it.
    pub fn problem_json(&self) -> Vec<u8> {
        match serde_json::to_vec(&self.problem()) {
            Ok(body) => body,
            // A problem document is plain strings and numbers; failing to serialize it is a bug.
            Err(error) => format!(r#"{{"code":"internal","detail":"{error}"}}"#).into_bytes(),
        }
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
            ApiError::PriceMismatch { .. } => "price_mismatch",
            ApiError::UnknownSku { .. } => "unknown_sku",
            ApiError::RateLimited | ApiError::TooSoon(_) => "rate_limited",
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
            ApiError::PriceMismatch { .. } => "Price mismatch",
            ApiError::UnknownSku { .. } => "Unknown SKU",
            ApiError::RateLimited | ApiError::TooSoon(_) => "Rate limited",
            ApiError::Quarantined(_) => "Quarantined",
            ApiError::Unavailable { .. } => "Unavailable",
            ApiError::InsufficientStorage(_) => "Insufficient storage",
            ApiError::Internal(_) => "Internal error",
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            problem_type: format!("/problems/{}", self.code()),
            title: self.title().to_string(),
            status,
            detail: self.to_string(),
            code: self.code().to_string(),
            param: match self {
                ApiError::InvalidRequest { param, .. }
                | ApiError::PriceMismatch { param, .. }
                | ApiError::UnknownSku { param, .. } => Some(param.clone()),
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
    pub fn from_status(status: u16) -> ApiError {
        match status {
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
            CommandError::UnknownLocation(id) => {
                ApiError::NotFound(format!("no location {id:?} (POST /v1/locations)"))
            }
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
            CommandError::PriceMismatch { param, detail } => {
                ApiError::PriceMismatch { param, detail }
            }
            CommandError::UnknownSku { param, detail } => ApiError::UnknownSku { param, detail },
            // The engine resolves it; seeing it here is a bug, not the client's fault.
            CommandError::Cold(_) => ApiError::Unavailable {
                detail: "the order could not be read from the cold tier; retry".into(),
                reasons: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_maps_to_exactly_one_code() {
        let cases = [
            (CommandError::NotFound, 404, "not_found"),
            (
                CommandError::UnknownLocation("east".into()),
                404,
                "not_found",
            ),
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
            (
                CommandError::PriceMismatch {
                    param: "lines[0].unit_price".into(),
                    detail: "x".into(),
                },
                422,
                "price_mismatch",
            ),
            (
                CommandError::UnknownSku {
                    param: "lines[0].sku".into(),
                    detail: "x".into(),
                },
                422,
                "unknown_sku",
            ),
        ];
        for (engine_error, status, code) in cases {
            let api = ApiError::from(engine_error);
            assert_eq!(api.status(), status);
            assert_eq!(api.code(), code);
            assert_eq!(api.problem().problem_type, format!("/problems/{code}"));
        }
    }
}

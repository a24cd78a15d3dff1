//! The HTTP middleware of every request: the per-peer connection limit, the audit entry of a
//! refusal (401, 403) and the request's metrics (latency by route and outcome, and the request
//! window that change management watches).

use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use orderd_control::settings::Live;
use orderd_control::telemetry;
use orderd_control::window::{self, RequestWindow};
use orderd_service::audit::{AuditLog, ANONYMOUS};
use orderd_service::auth::Caller;

use crate::http::error::{HttpError, PROBLEM_CONTENT_TYPE};
use crate::peers::Admission;
use orderd_service::ApiError;

/// Middleware, outermost: on a connection whose peer address already held
/// `http.max_connections_per_peer` connections when it was accepted ([`Admission`], decided in
/// the server's `on_connect`), every request is answered 429 `rate_limited` with
/// `Connection: close`, and counted in `orderd_refusals_total{reason="too_many_connections_from_peer"}`
/// (not in the request metrics, as TCP's refusals at accept are not).
pub async fn limit_peers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(&Admission::Refused { ip, max }) = req.conn_data::<Admission>() {
        telemetry::record_refusal("too_many_connections_from_peer");
        let mut problem = ApiError::RateLimited.problem();
        problem.detail = format!(
            "{ip} holds its maximum of {max} HTTP connections (http.max_connections_per_peer); \
             close one and retry"
        );
        let mut response = HttpResponse::TooManyRequests()
            .insert_header((header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE))
            .insert_header((header::RETRY_AFTER, "1"))
            .body(serde_json::to_vec(&problem).expect("a problem encodes"));
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The `target` of a refusal: method and path (no query string: it is not needed and could
/// carry anything).
fn request_target(req: &actix_web::HttpRequest) -> String {
    format!("{} {}", req.method(), req.path())
}

/// Middleware: writes an entry for every 401 (`auth.unauthorized`, actor `anonymous`, detail
/// the reason, never the secret) and every 403 (`auth.forbidden`, actor the key id, detail its
/// role), and answers once the entry is durable. A refusal entry that cannot be written is
/// logged; the refusal itself is answered anyway.
pub async fn record_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let response = next.call(req).await?;
    let status = response.status();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return Ok(response);
    }
    let Some(audit) = response
        .request()
        .app_data::<web::Data<AuditLog>>()
        .cloned()
    else {
        return Ok(response);
    };
    let (actor, action, detail) = match status {
        StatusCode::UNAUTHORIZED => {
            let reason = response
                .response()
                .error()
                .and_then(|error| error.as_error::<HttpError>())
                .map_or_else(|| "unauthorized".to_string(), |error| error.0.to_string());
            (ANONYMOUS.to_string(), "auth.unauthorized", reason)
        }
        StatusCode::FORBIDDEN => match response.request().extensions().get::<Caller>() {
            Some(caller) => (
                caller.key_id.clone(),
                "auth.forbidden",
                format!("role={}", caller.role),
            ),
            None => (ANONYMOUS.to_string(), "auth.forbidden", String::new()),
        },
        _ => return Ok(response),
    };
    let target = request_target(response.request());
    let peer = response.request().peer_addr().map(|peer| peer.ip());
    let logged = (target.clone(), detail.clone());
    match audit
        .refusal_from(peer, &actor, action, target, detail)
        .await
    {
        // The first of this peer's window: logged once, the rest counted into one entry.
        Ok(true) => tracing::warn!(
            message = "HTTP request refused.",
            peer = ?peer,
            status = status.as_u16(),
            actor,
            target = logged.0,
            detail = logged.1
        ),
        Ok(false) => {}
        Err(error) => tracing::warn!(
            message = "Could not write the audit entry of a refused request.",
            %error,
            status = status.as_u16()
        ),
    }
    Ok(response)
}

/// Middleware: records the latency of every request in `orderd_request_duration_seconds` (by
/// route template and outcome) and in the HDR recorder, and of the requests change management
/// watches in [`window`]. In test builds, `test.added_latency_ms` delays the watched
/// requests here (read from the live settings).
///
/// The route is the matched resource's name, which `http::configure` sets to its template
/// (so nothing is matched twice), and the histogram handles are cached per worker thread (so
/// no label set is built and no registry lookup is made per request).
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let watched = window::watched_path(req.path());
    let recorder = if watched {
        req.app_data::<web::Data<RequestWindow>>().cloned()
    } else {
        None
    };
    if watched && orderd_engine::failpoint::ENABLED {
        let delay_ms = req
            .app_data::<web::Data<Live>>()
            .map_or(0, |live| live.added_latency_ms());
        if delay_ms > 0 {
            actix_web::rt::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }
    let result = next.call(req).await;
    let (status, route) = match &result {
        Ok(response) => (response.status().as_u16(), response.request().match_name()),
        Err(error) => (error.as_response_error().status_code().as_u16(), None),
    };
    let elapsed = started.elapsed();
    telemetry::record_http_request(route, status, elapsed);
    if let Some(recorder) = recorder {
        recorder.record(elapsed, status);
    }
    result
}

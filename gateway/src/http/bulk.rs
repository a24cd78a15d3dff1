//! `POST /v1/orders/bulk`: NDJSON in, NDJSON out, an outcome per input line in input order,
//! placed through the batched placement path (`ops::place_orders`, the shards' inboxes).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::{web, HttpResponse};
use orderd_engine::Engine;
use orderd_proto::{BulkOutcome, PlaceOrderRequest};
use orderd_service::audit::AuditLog;
use orderd_service::idem::{placement_hash, IdempotencyKey};
use orderd_service::ops::{self, PlaceInput, Pricing};
use orderd_service::vault::Vault;
use orderd_service::{wire, ApiError};
use tokio::sync::mpsc;

use crate::http::error::HttpError;
use crate::http::extract::{decode_json, Authed, NoQuery, QueryParams};
use crate::http::Limits;
use orderd_control::telemetry;

/// Lines placed together: one call of the batched path, one chunk of the answer.
const CHUNK_LINES: usize = 1000;

/// Answer chunks buffered between the placing task and the socket (a slow reader holds at most
/// this many chunks; the task waits, and places nothing more, until they are written).
const BUFFERED_CHUNKS: usize = 2;

/// The field of a line that carries its Idempotency-Key.
const KEY_FIELD: &str = "idempotency_key";

/// An answer body fed by the placing task through a bounded channel.
struct ChannelBody(mpsc::Receiver<Result<web::Bytes, ApiError>>);

impl futures_core::Stream for ChannelBody {
    type Item = Result<web::Bytes, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// One input line read: its order and key, or the error the single call would have answered.
/// The request hash is that of the line's bytes (a retry of the same file sends the same bytes).
fn read_line(bytes: &[u8]) -> Result<PlaceInput, ApiError> {
    let mut value: serde_json::Value = decode_json(bytes)?;
    let key = match value.as_object_mut() {
        Some(object) => match object.remove(KEY_FIELD) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(key)) => Some(key),
            Some(_) => {
                return Err(ApiError::invalid(
                    KEY_FIELD,
                    "idempotency_key must be a string of 1 to 255 visible ASCII characters",
                ))
            }
        },
        None => None, // decode_json below names the wrong top-level type.
    };
    let key = IdempotencyKey::parse_opt(key).map_err(|error| match error {
        ApiError::InvalidRequest { detail, .. } => ApiError::invalid(KEY_FIELD, detail),
        other => other,
    })?;
    let rest = serde_json::to_vec(&value).map_err(|error| {
        ApiError::invalid("body", format!("could not re-read the line: {error}"))
    })?;
    let request: PlaceOrderRequest = decode_json(&rest)?;
    Ok(PlaceInput {
        order: request.into(),
        key,
        request_hash: placement_hash(bytes),
    })
}

/// Splits an NDJSON body into its lines (numbered from 1), without blank lines; a trailing
/// `\r` is dropped.
fn lines(body: &[u8]) -> Vec<(usize, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .collect()
}

#[utoipa::path(post, path = "/v1/orders/bulk", tag = "orders",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One order per line as `POST /v1/orders` takes it, plus `idempotency_key`; at most `orders.bulk_max` lines and `orders.bulk_max_bytes` bytes"),
    responses(
        (status = 200, description = "NDJSON: one `BulkOutcome` per input line, in input order", body = orderd_proto::BulkOutcome, content_type = "application/x-ndjson"),
        (status = 413, description = "`payload_too_large`: more lines or bytes than the limits", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
// An actix handler takes each extractor as an argument.
#[allow(clippy::too_many_arguments)]
pub async fn import(
    caller: Authed,
    query: QueryParams<NoQuery>,
    mut payload: web::Payload,
    limits: web::Data<Limits>,
    pricing: web::Data<Pricing>,
    vault: web::Data<Vault>,
    engine: web::Data<Engine>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    // Every role that may import may place (the placing task takes its `Allowed` below).
    ops::allow::<ops::op::BulkImport>(&caller)?;
    query.get()?;
    let (max_bytes, max_lines) = (limits.bulk_max_bytes, limits.bulk_max_lines);
    // The body, read up to its byte bound (stopping as soon as it is passed).
    let mut body = web::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
        let chunk = chunk.map_err(|error| {
            ApiError::invalid("body", format!("could not read the body: {error}"))
        })?;
        if body.len() + chunk.len() > max_bytes {
            return Err(HttpError(ApiError::PayloadTooLarge {
                limit_bytes: Some(max_bytes),
            }));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let numbered = lines(&body);
    if numbered.is_empty() {
        return Err(HttpError(ApiError::invalid(
            "body",
            "no order lines: send one order per line (NDJSON)",
        )));
    }
    if numbered.len() > max_lines {
        return Err(HttpError(ApiError::invalid(
            "body",
            format!(
                "{} lines: a bulk import takes at most {} (orders.bulk_max)",
                numbered.len(),
                max_lines
            ),
        )));
    }
    let spans: Vec<(usize, std::ops::Range<usize>)> = numbered
        .iter()
        .map(|(line, bytes)| {
            let start = bytes.as_ptr() as usize - body.as_ptr() as usize;
            (*line, start..start + bytes.len())
        })
        .collect();
    let caller = caller.0;
    let (tx, rx) = mpsc::channel(BUFFERED_CHUNKS);
    actix_web::rt::spawn(async move {
        let Ok(allowed) = ops::allow::<ops::op::PlaceOrder>(&caller) else {
            return;
        };
        let ctx = ops::Ctx::new(&engine, &vault, &audit);
        for chunk in spans.chunks(CHUNK_LINES) {
            let inputs = chunk
                .iter()
                .map(|(_, span)| read_line(&body[span.clone()]))
                .collect();
            let outcomes = ops::place_orders(ctx, &pricing, &allowed, inputs).await;
            let mut out = Vec::with_capacity(chunk.len() * 256);
            for ((line, _), outcome) in chunk.iter().zip(outcomes) {
                telemetry::record_order(outcome.as_ref());
                let answer = match outcome {
                    Ok(view) => BulkOutcome {
                        line: *line,
                        status: 201,
                        order: Some(wire::order(view, false)),
                        error: None,
                    },
                    Err(error) => BulkOutcome {
                        line: *line,
                        status: error.status(),
                        order: None,
                        error: Some(error.problem()),
                    },
                };
                if serde_json::to_writer(&mut out, &answer).is_ok() {
                    out.push(b'\n');
                }
            }
            if tx.send(Ok(web::Bytes::from(out))).await.is_err() {
                // The client went away: nothing more is placed. What was placed is durable,
                // and a retry of the file with its keys answers it again.
                return;
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(ChannelBody(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_from_one_and_blank_ones_skipped() {
        let body = b"{\"a\":1}\r\n\n  \n{\"b\":2}\n";
        let got: Vec<(usize, &[u8])> = lines(body);
        assert_eq!(got, vec![(1, &b"{\"a\":1}"[..]), (4, &b"{\"b\":2}"[..])]);
    }

    #[test]
    fn a_line_takes_its_key_out_and_reads_the_rest_as_an_order() {
        let line = br#"{"customer_id":"cus_1","lines":[{"sku":"A","qty":1,"unit_price":5}],"idempotency_key":"k-1"}"#;
        let input = read_line(line).expect("read");
        assert!(input.key.is_some());
        assert_eq!(input.request_hash, placement_hash(line));
        let unknown = br#"{"customer_id":"cus_1","lines":[{"sku":"A","qty":1,"unit_price":5}],"colour":"red"}"#;
        match read_line(unknown) {
            Err(ApiError::InvalidRequest { param, .. }) => assert_eq!(param, "colour"),
            Err(other) => panic!("expected invalid_request, got {other:?}"),
            Ok(_) => panic!("expected invalid_request, got an order"),
        }
        let bad_key = br#"{"customer_id":"cus_1","lines":[],"idempotency_key":7}"#;
        match read_line(bad_key) {
            Err(ApiError::InvalidRequest { param, .. }) => assert_eq!(param, KEY_FIELD),
            Err(other) => panic!("expected invalid_request, got {other:?}"),
            Ok(_) => panic!("expected invalid_request, got an order"),
        }
        match read_line(b"{not json") {
            Err(ApiError::InvalidRequest { .. }) => {}
            Err(other) => panic!("expected invalid_request, got {other:?}"),
            Ok(_) => panic!("expected invalid_request, got an order"),
        }
    }
}

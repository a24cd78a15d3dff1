//! Decoding of untrusted request input: body size limits, JSON bodies, query strings and path
//! segments, with every failure turned into a problem that names the offending field.
//!
//! Handlers read bodies as raw bytes ([`RawBody`]) and decode them with [`decode_json`]: the
//! raw bytes are needed for the idempotency hash, and knowing them lets a type error name its
//! field by path (`lines[2].qty`), which serde_json's message alone does not.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use orderd_proto::ObjectOnly;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use orderd_service::auth::{self, Auth, Caller};
use orderd_service::idem::{self, IdempotencyKey};
use orderd_service::ApiError;

use crate::http::error::HttpError;

/// The `param` of a problem about the body as a whole (malformed JSON, wrong top-level type).
pub const BODY_PARAM: &str = "body";

/// Body limit when none is configured: the API's 64 KiB.
const BODY_LIMIT_BYTES_DEFAULT: usize = 65_536;

/// JSON nesting deeper than this is not scanned for a field path (serde_json stops at 128).
const SCAN_DEPTH_MAX: usize = 128;

/// Registers the extractor configurations of every route: size limits and problem+json errors.
pub fn configure_extractors(cfg: &mut web::ServiceConfig, body_limit_bytes: usize) {
    cfg.app_data(BodyLimit(body_limit_bytes))
        .app_data(web::PayloadConfig::new(body_limit_bytes))
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit_bytes)
                .content_type_required(false)
                .content_type(|_| true)
                .error_handler(move |error, _req| {
                    HttpError(json_payload_error(error, body_limit_bytes)).into()
                }),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _req| HttpError(query_error(&error)).into()),
        )
        .app_data(web::PathConfig::default().error_handler(|error, _req| {
            HttpError(ApiError::invalid(
                "path",
                format!("invalid path parameter: {error}"),
            ))
            .into()
        }));
}

/// The body size limit, in bytes, registered beside actix's `PayloadConfig` (whose limit is
/// private) so that [`RawBody`] can enforce it and name it in the 413 problem.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// The raw request body, read up to the configured limit (also for chunked bodies without a
/// `Content-Length`, where reading stops as soon as the limit is passed). The `Content-Type` is
/// not checked: bodies are always read as JSON.
#[derive(Clone, Debug)]
pub struct RawBody(pub web::Bytes);

impl FromRequest for RawBody {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<RawBody, HttpError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit_bytes = req
            .app_data::<BodyLimit>()
            .map(|limit| limit.0)
            .unwrap_or(BODY_LIMIT_BYTES_DEFAULT);
        // actix's `Bytes` extractor enforces the `PayloadConfig` limit registered beside
        // `BodyLimit`: up front from `Content-Length`, and chunk by chunk otherwise.
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            match body.await {
                Ok(bytes) => Ok(RawBody(bytes)),
                Err(error) => Err(HttpError(match error.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::PayloadTooLarge {
                        limit_bytes: Some(limit_bytes),
                    },
                    _ => ApiError::invalid(BODY_PARAM, format!("could not read the body: {error}")),
                })),
            }
        })
    }
}

/// The query of a `/v1` route that takes no parameters, as `QueryParams<NoQuery>`: any
/// parameter is 400 naming it, like an unknown body field (`POST /v1/stock/X/adjustments?on_hand=5`
/// must not look accepted).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// A query string decoded into `T`, its error held back until [`QueryParams::get`]. Handlers
/// call `get` after the role check, as they decode bodies after it: a caller who may not use
/// the route gets its 403 (a `customer` key its 404), never a 400 about the parameters.
#[derive(Debug)]
pub struct QueryParams<T>(Result<T, ApiError>);

impl<T> QueryParams<T> {
    /// The decoded query, or 400 `invalid_request` naming the offending parameter.
    pub fn get(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: DeserializeOwned> FromRequest for QueryParams<T> {
    type Error = HttpError;
    type Future = Ready<Result<QueryParams<T>, HttpError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let decoded = web::Query::<T>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .map_err(|error| query_error(&error));
        ready(Ok(QueryParams(decoded)))
    }
}

/// Decodes a JSON body into `T`, mapping serde errors onto `invalid_request` with `param`.
/// The body must be a JSON object (not a sequence of the fields in order).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<ObjectOnly<T>>(bytes)
        .map(|object| object.0)
        .map_err(|error| json_error(bytes, &error))
}

/// Maps a serde_json error on `bytes` onto a problem naming the field.
pub fn json_error(bytes: &[u8], error: &serde_json::Error) -> ApiError {
    let message = strip_position(&error.to_string());
    let param = match error.classify() {
        serde_json::error::Category::Data => {
            let offset = byte_offset(bytes, error.line(), error.column());
            let path = path_at(bytes, offset);
            param_for(&message, &path)
        }
        _ => BODY_PARAM.to_string(),
    };
    let detail = match error.classify() {
        serde_json::error::Category::Eof | serde_json::error::Category::Syntax => {
            format!("malformed JSON: {}", error)
        }
        _ => message,
    };
    ApiError::invalid(param, detail)
}

/// The `param` of a serde data error, given the path at which it happened. serde names the
/// field itself for unknown, missing and duplicate fields; other errors (wrong type, out of
/// range) name the value at `path`.
pub fn param_for(message: &str, path: &str) -> String {
    if let Some(field) = named_field(message, "missing field `") {
        // The error is raised at the end of the object that lacks the field.
        return join_path(path, &field);
    }
    for prefix in ["unknown field `", "duplicate field `"] {
        if let Some(field) = named_field(message, prefix) {
            // The error is raised right after the key, so `path` normally ends with it.
            let path_names_field = path == field || path.ends_with(&format!(".{field}"));
            return if path_names_field {
                path.to_string()
            } else {
                field
            };
        }
    }
    if path.is_empty() {
        BODY_PARAM.to_string()
    } else {
        path.to_string()
    }
}

/// The field named in a serde message such as "unknown field `foo`, expected …".
fn named_field(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let rest = &message[start..];
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

fn join_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// serde_json appends " at line L column C" to its messages; clients get a path instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Byte offset of serde_json's (1-based line, 0-based byte column) position.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut start_of_line = 0;
    let mut newlines = 1;
    for (i, &b) in bytes.iter().enumerate() {
        if newlines == line {
            break;
        }
        if b == b'\n' {
            newlines += 1;
            start_of_line = i + 1;
        }
    }
    (start_of_line + column).min(bytes.len())
}

/// One step of a JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn render_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// The path (`lines[2].qty`) of the JSON element the parser was at when it reached `offset`:
/// the last key read, value started or value finished at or before `offset`. Returns "" for the
/// top-level value or when the text before `offset` cannot be scanned.
pub fn path_at(bytes: &[u8], offset: usize) -> String {
    let mut scanner = PathScanner {
        bytes,
        i: 0,
        offset,
        path: Vec::new(),
        current: String::new(),
    };
    let _ = scanner.value(0);
    scanner.current
}

/// A minimal JSON walker that tracks the path; it trusts that the text before the error
/// offset is well-formed (serde_json has just parsed it) and gives up quietly otherwise.
struct PathScanner<'a> {
    bytes: &'a [u8],
    i: usize,
    offset: usize,
    path: Vec<Segment>,
    current: String,
}

/// The scan is over: the offset was passed or the input is not what was expected.
struct Stop;

impl PathScanner<'_> {
    /// Records an event at position `at` with the current path; stops once past the offset.
    fn event(&mut self, at: usize) -> Result<(), Stop> {
        if at > self.offset {
            return Err(Stop);
        }
        self.current = render_path(&self.path);
        Ok(())
    }

    fn skip_whitespace(&mut self) {
        while self.i < self.bytes.len()
            && matches!(self.bytes[self.i], b' ' | b'\t' | b'\n' | b'\r')
        {
            self.i += 1;
        }
    }

    fn peek(&self) -> Result<u8, Stop> {
        self.bytes.get(self.i).copied().ok_or(Stop)
    }

    fn value(&mut self, depth: usize) -> Result<(), Stop> {
        if depth > SCAN_DEPTH_MAX {
            return Err(Stop);
        }
        self.skip_whitespace();
        let start = self.i;
        self.event(start)?;
        match self.peek()? {
            b'{' => self.object(depth)?,
            b'[' => self.array(depth)?,
            b'"' => {
                self.string()?;
            }
            _ => self.scalar()?,
        }
        let end = self.i;
        self.event(end)
    }

    fn object(&mut self, depth: usize) -> Result<(), Stop> {
        self.i += 1; // '{'
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.path.push(Segment::Key(key));
            let key_end = self.i;
            self.event(key_end)?;
            self.skip_whitespace();
            if self.peek()? != b':' {
                return Err(Stop);
            }
            self.i += 1;
            self.value(depth + 1)?;
            self.path.pop();
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Stop),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Stop> {
        self.i += 1; // '['
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.path.push(Segment::Index(index));
            self.value(depth + 1)?;
            self.path.pop();
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Stop),
            }
            index += 1;
        }
    }

    /// Reads a string starting at its opening quote and returns its (unescaped enough) text.
    fn string(&mut self) -> Result<String, Stop> {
        if self.peek()? != b'"' {
            return Err(Stop);
        }
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        while self.i < self.bytes.len() {
            let b = self.bytes[self.i];
            self.i += 1;
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                let raw = &self.bytes[start..self.i - 1];
                // Keys with escapes are rare; parsing the quoted text gives their real value.
                let quoted = &self.bytes[start - 1..self.i];
                return Ok(serde_json::from_slice::<String>(quoted)
                    .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()));
            }
        }
        Err(Stop)
    }

    fn scalar(&mut self) -> Result<(), Stop> {
        let start = self.i;
        while self.i < self.bytes.len()
            && !matches!(
                self.bytes[self.i],
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
            )
        {
            self.i += 1;
        }
        if self.i == start {
            return Err(Stop);
        }
        Ok(())
    }
}

/// Maps an error of actix's `Json` extractor (used by no handler of ours today, configured so
/// that any future use still answers with our problems).
pub fn json_payload_error(error: JsonPayloadError, limit_bytes: usize) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge {
                limit_bytes: Some(limit_bytes),
            }
        }
        JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::PayloadTooLarge {
            limit_bytes: Some(limit_bytes),
        },
        JsonPayloadError::Deserialize(error) => {
            let message = strip_position(&error.to_string());
            let param = match error.classify() {
                serde_json::error::Category::Data => param_for(&message, ""),
                _ => BODY_PARAM.to_string(),
            };
            ApiError::invalid(param, message)
        }
        other => ApiError::invalid(BODY_PARAM, other.to_string()),
    }
}

/// Maps a query-string error: serde names the parameter for unknown and duplicate ones.
pub fn query_error(error: &QueryPayloadError) -> ApiError {
    let message = match error {
        QueryPayloadError::Deserialize(inner) => inner.to_string(),
        other => other.to_string(),
    };
    let param = ["unknown field `", "duplicate field `", "missing field `"]
        .iter()
        .find_map(|prefix| named_field(&message, prefix))
        .unwrap_or_else(|| "query".to_string());
    ApiError::invalid(param, message)
}

/// The `Idempotency-Key` header (sent at most once, visible ASCII, 1–255 characters), if
/// present.
pub fn header_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    idem::header_key(
        req.headers()
            .get_all(idem::IDEMPOTENCY_KEY_HEADER)
            .map(|value| value.as_bytes()),
    )
}

/// The body of a mutation other than a placement, with its `Idempotency-Key` and request hash:
/// [`idem::request_hash`] of the method, the path (with its parameters, as sent; these routes take
/// no query) and the body bytes. A bad header is kept for [`KeyedBody::key`] rather than refused by
/// the extractor, so that the handler's role check answers first, as for a bad body.
pub struct KeyedBody {
    /// The raw body ([`RawBody`]).
    pub bytes: web::Bytes,
    key: Result<Option<IdempotencyKey>, ApiError>,
    pub request_hash: u128,
}

impl KeyedBody {
    /// The `Idempotency-Key` header, validated, if present.
    pub fn key(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        self.key.clone()
    }
}

impl FromRequest for KeyedBody {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<KeyedBody, HttpError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let key = header_key(req);
        let route = format!("{} {}", req.method(), req.path());
        let body = RawBody::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await?.0;
            Ok(KeyedBody {
                request_hash: idem::request_hash(&route, &bytes),
                bytes,
                key,
            })
        })
    }
}

/// The authenticated caller of a request (`Authorization: Bearer <key>`), as an extractor: a
/// handler that takes one answers 401 without a valid key. Derefs to the service's [`Caller`].
#[derive(Clone, Debug)]
pub struct Authed(pub Caller);

impl std::ops::Deref for Authed {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequest for Authed {
    type Error = HttpError;
    type Future = Ready<Result<Authed, HttpError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<Auth>>() {
            Some(keys) => auth::authenticate(
                keys,
                req.headers()
                    .get(actix_web::http::header::AUTHORIZATION)
                    .map(|value| value.as_bytes()),
                req.peer_addr(),
                req.path(),
            ),
            None => Err(ApiError::Internal(
                "authentication is not configured".into(),
            )),
        };
        if let Ok(caller) = &result {
            // For the audit of refusals (`middleware::record_refusals`), which runs after the
            // handler.
            req.extensions_mut().insert(caller.clone());
        }
        ready(result.map(Authed).map_err(HttpError))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_proto::{CreateCustomerRequest, PlaceOrderRequest, StockAdjustmentRequest};

    fn param_of<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        match decode_json::<T>(body.as_bytes()).unwrap_err() {
            ApiError::InvalidRequest { param, .. } => param,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn serde_messages_name_the_field() {
        assert_eq!(
            param_for("unknown field `foo`, expected one of `a`", ""),
            "foo"
        );
        assert_eq!(param_for("missing field `email`", ""), "email");
        assert_eq!(param_for("missing field `qty`", "lines[1]"), "lines[1].qty");
        assert_eq!(
            param_for("invalid type: string \"x\", expected u32", "lines[0].qty"),
            "lines[0].qty"
        );
        assert_eq!(
            param_for("invalid type: integer `1`, expected a map", ""),
            "body"
        );
    }

    #[test]
    fn unknown_and_missing_fields_name_the_field() {
        assert_eq!(
            param_of::<CreateCustomerRequest>(r#"{"name":"a","email":"a@b.co","foo":1}"#),
            "foo"
        );
        assert_eq!(
            param_of::<CreateCustomerRequest>(r#"{"name":"a"}"#),
            "email"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(
                r#"{"customer_id":"c","lines":[{"sku":"A","qty":1,"unit_price":1},{"sku":"B","unit_price":1}]}"#
            ),
            "lines[1].qty"
        );
        // `unit_price` may be missing (the catalog may price the line): whether it may is the
        // operation's to say, after decoding.
        assert!(decode_json::<PlaceOrderRequest>(
            br#"{"customer_id":"c","lines":[{"sku":"A","qty":1}]}"#
        )
        .is_ok());
        assert_eq!(
            param_of::<PlaceOrderRequest>(
                "{\"customer_id\":\"c\",\n \"lines\":[{\"sku\":\"A\",\"qty\":1,\"unit_price\":1,\"bogus\":true}]}"
            ),
            "lines[0].bogus"
        );
    }

    #[test]
    fn wrong_types_and_ranges_name_the_value_path() {
        let order = |line: &str| {
            format!(
                r#"{{"customer_id":"c","lines":[{{"sku":"A","qty":1,"unit_price":1}}, {line}]}}"#
            )
        };
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":"B","qty":-1,"unit_price":1}"#)),
            "lines[1].qty"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":"B","qty":"2","unit_price":1}"#)),
            "lines[1].qty"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":"B","qty":1.5,"unit_price":1}"#)),
            "lines[1].qty"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":"B","qty":{},"unit_price":1}"#)),
            "lines[1].qty"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":"B","qty":4294967296,"unit_price":1}"#)),
            "lines[1].qty"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":7,"qty":1,"unit_price":1}"#)),
            "lines[1].sku"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(&order(r#"{"sku":"B","qty":1,"unit_price":-5}"#)),
            "lines[1].unit_price"
        );
        assert_eq!(
            param_of::<PlaceOrderRequest>(r#"{"customer_id":"c","lines":{}}"#),
            "lines"
        );
        assert_eq!(
            param_of::<StockAdjustmentRequest>(r#"{"delta":"5","reason":"r"}"#),
            "delta"
        );
        assert_eq!(
            param_of::<StockAdjustmentRequest>(r#"{"delta":1e3,"reason":"r"}"#),
            "delta"
        );
        assert_eq!(
            param_of::<StockAdjustmentRequest>(r#"{"reason":"r","delta":null}"#),
            "delta"
        );
    }

    #[test]
    fn malformed_json_and_wrong_top_level_name_the_body() {
        assert_eq!(
            param_of::<StockAdjustmentRequest>(r#"{"delta": 1,"#),
            "body"
        );
        assert_eq!(param_of::<StockAdjustmentRequest>("not json"), "body");
        assert_eq!(param_of::<StockAdjustmentRequest>(""), "body");
        assert_eq!(param_of::<StockAdjustmentRequest>("[1,2]"), "body");
        assert_eq!(param_of::<StockAdjustmentRequest>(r#"[1,"r"]"#), "body");
        assert_eq!(
            param_of::<PlaceOrderRequest>(r#"{"customer_id":"c","lines":[["A",1,1]]}"#),
            "lines[0]"
        );
        assert_eq!(
            param_of::<StockAdjustmentRequest>(r#"{"delta":1,"reason":"r"} x"#),
            "body"
        );
        assert_eq!(param_of::<StockAdjustmentRequest>("{} x"), "delta");
    }

    #[test]
    fn path_scanner_handles_escapes_and_whitespace() {
        let text = br#"{ "a\"b" : [ 1 , { "c" : true } ] }"#;
        let offset = text.iter().position(|&b| b == b't').unwrap() + 4;
        assert_eq!(path_at(text, offset), "a\"b[1].c");
        assert_eq!(path_at(b"garbage", 3), "");
    }
}

//! `GET /v1/events` and `GET /v1/events/stream`: the public events, paged oldest first from a
//! cursor, and live as server-sent events resumable with `Last-Event-ID` (API.md, Commerce:
//! events). Both read the `events` family; the stream waits on the engine's event head.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use orderd_engine::events::{self, EventType, TypeSet};
use orderd_engine::Engine;
use orderd_proto::{EventStreamQuery, EventsQuery, Page};
use orderd_service::{roles, validate, wire, ApiError};

use crate::http::error::HttpError;
use crate::http::extract::{Authed, QueryParams};

/// Events one stream read takes at a time.
const STREAM_READ: usize = 100;

/// The bounds of the event readers (from `[events]`).
pub struct EventReaders {
    /// `events.scan_max`: most events one page or one stream read looks at.
    pub scan_max: usize,
    /// `events.stream_keepalive_ms`.
    pub keepalive: Duration,
    /// `events.streams_max` permits, one per open stream.
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl EventReaders {
    pub fn from_config(config: &orderd_config::EventsConfig) -> EventReaders {
        EventReaders {
            scan_max: config.scan_max,
            keepalive: Duration::from_millis(config.stream_keepalive_ms),
            streams: Arc::new(tokio::sync::Semaphore::new(config.streams_max)),
        }
    }
}

/// `types=a,b`: each a known event type; absent: every type.
fn parse_types(types: Option<&str>) -> Result<TypeSet, ApiError> {
    let Some(text) = types else {
        return Ok(TypeSet::ALL);
    };
    let mut set = Vec::new();
    for name in text.split(',') {
        let t = EventType::parse(name.trim()).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::invalid(
                "types",
                format!("unknown event type {name:?}; known: {}", known.join(", ")),
            )
        })?;
        set.push(t);
    }
    Ok(TypeSet::of(&set))
}

fn parse_cursor(param: &str, text: &str) -> Result<u64, ApiError> {
    events::parse_event_id(text)
        .ok_or_else(|| ApiError::invalid(param, "an event id: evt_ and 16 hex digits"))
}

#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "A page of events, oldest first; `next` (an event id) continues after it, null when no later event exists yet. A type filter that matches few events may return a short page with `next` set", body = orderd_proto::Page<orderd_proto::EventResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<EventsQuery>,
    engine: web::Data<Engine>,
    readers: web::Data<EventReaders>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::EVENTS_READ)?;
    let query = query.get()?;
    let after = match query.after.as_deref() {
        Some(text) => parse_cursor("after", text)?,
        None => 0,
    };
    let types = parse_types(query.types.as_deref())?;
    let limit = validate::limit(query.limit.as_deref())?;
    let (items, reached) = engine
        .events_page(after, types, limit, readers.scan_max)
        .await?;
    // More may follow while the scan stopped short of the newest event.
    let next = (reached < engine.event_head().get()).then(|| events::event_id(reached));
    Ok(HttpResponse::Ok().json(Page {
        items: items.iter().map(wire::event).collect(),
        next,
    }))
}

struct Stream {
    engine: Engine,
    head: tokio::sync::watch::Receiver<u64>,
    cursor: u64,
    types: TypeSet,
    scan_max: usize,
    keepalive: Duration,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The stream's next chunk: the events after its cursor, or a keep-alive comment; `None`
/// ends it (a failed read: the client resumes with `Last-Event-ID`).
async fn next_chunk(mut s: Stream) -> Option<(Result<web::Bytes, HttpError>, Stream)> {
    loop {
        let head = *s.head.borrow_and_update();
        if head > s.cursor {
            let (items, reached) = s
                .engine
                .events_page(s.cursor, s.types, STREAM_READ, s.scan_max)
                .await
                .ok()?;
            // Nothing left to read below the head (swept): jump to it.
            s.cursor = if reached > s.cursor { reached } else { head };
            if items.is_empty() {
                continue;
            }
            let mut out = String::new();
            for event in &items {
                let body = serde_json::to_string(&wire::event(event)).expect("an event encodes");
                out.push_str("id: ");
                out.push_str(&events::event_id(event.cursor));
                out.push_str("\ndata: ");
                out.push_str(&body);
                out.push_str("\n\n");
            }
            return Some((Ok(web::Bytes::from(out)), s));
        }
        match tokio::time::timeout(s.keepalive, s.head.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return None,
            Err(_) => return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), s)),
        }
    }
}

#[utoipa::path(get, path = "/v1/events/stream", operation_id = "stream_events", tag = "events",
    params(EventStreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (the `id:` of the last event received); without it the stream starts with the next event")),
    responses(
        (status = 200, description = "`text/event-stream`: each event as `id: <event id>` and `data: <the event's JSON>`; a comment line every `events.stream_keepalive_ms` while quiet", content_type = "text/event-stream", body = String),
        (status = 503, description = "`unavailable`: `events.streams_max` streams are open", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    caller: Authed,
    query: QueryParams<EventStreamQuery>,
    request: HttpRequest,
    engine: web::Data<Engine>,
    readers: web::Data<EventReaders>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::EVENTS_READ)?;
    let query = query.get()?;
    let types = parse_types(query.types.as_deref())?;
    let head = engine.event_head();
    let cursor = match request.headers().get("last-event-id") {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID", "an event id"))?;
            parse_cursor("Last-Event-ID", text)?
        }
        None => head.get(),
    };
    let permit =
        readers
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable {
                detail: "too many open event streams (events.streams_max)".into(),
                reasons: None,
            })?;
    let state = Stream {
        engine: engine.get_ref().clone(),
        head: head.subscribe(),
        cursor,
        types,
        scan_max: readers.scan_max,
        keepalive: readers.keepalive,
        _permit: permit,
    };
    let body = futures_util::stream::unfold(state, next_chunk);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body))
}

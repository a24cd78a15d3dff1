//! HTTP-level tests of the parts that need no engine: routing fallbacks, authentication, body
//! limits (also chunked, over a real socket), query errors and the rate limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::{test, web, App, HttpResponse, HttpServer};
use serde_json::Value;

use crate::http::error::{problem_fallback, PROBLEM_CONTENT_TYPE};
use crate::http::extract::Authed;
use crate::http::extract::RawBody;
use orderd_service::auth::{Auth, KeyStore, RateLimiter};

const LIMIT_BYTES: usize = 1024;

/// The default pricing policy (`orderd.toml`): USD, clients price their orders.
pub(super) fn pricing() -> orderd_service::ops::Pricing {
    orderd_service::ops::Pricing {
        currency: "USD".into(),
        client_prices: true,
    }
}

/// A key table with its first admin key, and that key's secret.
fn auth(rate_per_s: u32) -> (tempfile::TempDir, web::Data<Auth>, String) {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    let path = keys.ensure_admin_key().unwrap().unwrap();
    let secret = std::fs::read_to_string(path).unwrap().trim().to_string();
    let auth = web::Data::from(Arc::new(Auth {
        keys,
        limiter: RateLimiter::new(rate_per_s),
    }));
    (dir, auth, secret)
}

macro_rules! app {
    ($auth:expr) => {
        test::init_service(
            App::new()
                .app_data($auth.clone())
                .wrap(problem_fallback())
                .configure(|cfg| {
                    super::configure(
                        cfg,
                        super::Limits::with_body_limit(LIMIT_BYTES),
                        super::tests::pricing(),
                    )
                }),
        )
        .await
    };
}

async fn problem<B: MessageBody>(
    response: ServiceResponse<B>,
) -> (StatusCode, header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        PROBLEM_CONTENT_TYPE,
        "status {status}"
    );
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(
        body["type"],
        format!("/problems/{}", body["code"].as_str().unwrap())
    );
    (status, headers, body)
}

#[actix_web::test]
async fn livez_answers_without_a_key() {
    let (_dir, auth, _) = auth(0);
    let app = app!(auth);
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/livez").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body, serde_json::json!({"status": "live"}));
}

#[actix_web::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let (_dir, auth, _) = auth(0);
    let app = app!(auth);
    for uri in ["/", "/v1", "/v1/nothing", "/v1/orders/x/y/z", "/livez/"] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        let (status, _, body) = problem(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["code"], "not_found");
    }
    let response = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri("/v1/orders/ord_1")
            .to_request(),
    )
    .await;
    let (status, headers, body) = problem(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
    assert_eq!(headers.get(header::ALLOW).unwrap(), "GET");
    let response = test::call_service(
        &app,
        test::TestRequest::put().uri("/v1/orders").to_request(),
    )
    .await;
    let (status, headers, _) = problem(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = headers.get(header::ALLOW).unwrap().to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[actix_web::test]
async fn v1_routes_need_a_known_bearer_key() {
    let (_dir, auth, _) = auth(0);
    let app = app!(auth);
    for authorization in [
        None,
        Some("Bearer odk_unknown"),
        Some("Basic abc"),
        Some("Bearer"),
    ] {
        let mut request = test::TestRequest::get().uri("/v1/stock/A");
        if let Some(value) = authorization {
            request = request.insert_header((header::AUTHORIZATION, value));
        }
        let response = test::call_service(&app, request.to_request()).await;
        let (status, headers, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(body["code"], "unauthorized");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    }
}

#[actix_web::test]
async fn bodies_over_the_limit_are_413_with_or_without_content_length() {
    let (_dir, auth, secret) = auth(0);
    let app = app!(auth);
    let big = format!(r#"{{"delta": 1, "reason": "{}"}}"#, "x".repeat(LIMIT_BYTES));
    let request = test::TestRequest::post()
        .uri("/v1/stock/A/adjustments")
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
        .set_payload(big.clone())
        .to_request();
    let (status, _, body) = problem(test::call_service(&app, request).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");

    let mut request = test::TestRequest::post()
        .uri("/v1/stock/A/adjustments")
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
        .set_payload(big)
        .to_request();
    request.headers_mut().remove(header::CONTENT_LENGTH);
    let (status, _, body) = problem(test::call_service(&app, request).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");
}

#[actix_web::test]
async fn unknown_and_repeated_query_parameters_are_400() {
    let (_dir, auth, secret) = auth(0);
    let app = app!(auth);
    // `/v1/keys` needs no engine (this app has none); query errors come after the role check,
    // by which time a route needing the engine would already have failed for want of it.
    for (query, param) in [("foo=1", "foo"), ("limit=1&limit=2", "limit")] {
        let request = test::TestRequest::get()
            .uri(&format!("/v1/keys?{query}"))
            .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
            .to_request();
        let (status, _, body) = problem(test::call_service(&app, request).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["code"], "invalid_request");
        assert_eq!(body["param"], param, "{query}");
    }
}

#[actix_web::test]
async fn keys_over_their_rate_get_429_with_retry_after() {
    let (_dir, auth, secret) = auth(1);
    let app = app!(auth);
    let request = || {
        test::TestRequest::get()
            .uri("/v1/keys?bogus=1")
            .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
            .to_request()
    };
    let (status, _, _) = problem(test::call_service(&app, request()).await).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the first request passes the limiter"
    );
    let (status, headers, body) = problem(test::call_service(&app, request()).await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
}

/// Reads a body the way the `/v1` handlers do, without needing an engine.
async fn read_body(_caller: Authed, body: RawBody) -> HttpResponse {
    HttpResponse::Ok().body(body.0.len().to_string())
}

/// A chunked body (no `Content-Length`) over the limit, sent over a real socket, gets 413.
#[actix_web::test]
async fn chunked_bodies_over_the_limit_get_413_over_a_socket() {
    let (_dir, auth, secret) = auth(0);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(auth.clone())
            .wrap(problem_fallback())
            .route("/test/body", web::post().to(read_body))
            .configure(|cfg| {
                super::configure(
                    cfg,
                    super::Limits::with_body_limit(LIMIT_BYTES),
                    super::tests::pricing(),
                )
            })
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let over = {
        let secret = secret.clone();
        actix_web::rt::task::spawn_blocking(move || send_chunked(addr, &secret, 4))
            .await
            .unwrap()
    };
    let under = actix_web::rt::task::spawn_blocking(move || send_chunked(addr, &secret, 1))
        .await
        .unwrap();
    handle.stop(false).await;
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    assert!(over.contains("payload_too_large"), "{over}");
    assert!(under.starts_with("HTTP/1.1 200"), "{under}");
    assert!(under.ends_with("\r\n\r\n512"), "{under}");
}

/// Sends `chunks` chunks of 512 spaces with `Transfer-Encoding: chunked`; returns the response.
fn send_chunked(addr: std::net::SocketAddr, secret: &str, chunks: usize) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /test/body HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {secret}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 512];
    // The server may answer and stop reading before the last chunk, so write errors are
    // expected and ignored.
    for _ in 0..chunks {
        let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = stream.write_all(&chunk);
        let _ = stream.write_all(b"\r\n");
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

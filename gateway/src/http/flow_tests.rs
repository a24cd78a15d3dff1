//! HTTP-level tests of every route against a real engine on a temporary data directory: the
//! happy paths, idempotency, validation `param`s, and the role table including customer scoping.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::test::TestRequest;
use actix_web::{test, web, App};
use orderd_engine::{CustomerId, Durability, Engine, EngineConfig};
use serde_json::{json, Value};

use crate::http::error::problem_fallback;
use orderd_config::AuditConfig;
use orderd_service::audit::AuditLog;
use orderd_service::auth::{hash_secret, new_secret, Auth, KeyRecord, KeyStore, RateLimiter};
use orderd_service::roles::Role;
use orderd_service::vault::{MasterKeySource, Vault};

const SHARDS: usize = 2;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    auth: web::Data<Auth>,
    vault: web::Data<Vault>,
    audit: web::Data<AuditLog>,
    admin: String,
}

impl Fixture {
    /// Stops the audit writer and the engine, so that RocksDB closes before the test process
    /// exits (a database still open at exit can abort in RocksDB's static destructors).
    async fn close(self) {
        self.audit.shutdown().await;
        self.engine.shutdown().await;
    }

    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig {
            data_dir: dir.path().join("db"),
            shards: SHARDS,
            durability: Durability::Async,
            flush_interval_ms: 5,
            mailbox_capacity: 10_000,
            batch_events_max: 4096,
            snapshot_interval_events: 500_000,
            idempotency_retention_s: 86_400,
            pending_retry_ms: 500,
            ..EngineConfig::new(dir.path().join("db"), SHARDS)
        })
        .unwrap();
        let vault = web::Data::new(
            Vault::load(
                engine.storage(),
                MasterKeySource::File {
                    path: dir.path().join("master.key"),
                },
            )
            .unwrap(),
        );
        let keys = KeyStore::open(dir.path()).unwrap();
        let path = keys.ensure_admin_key().unwrap().unwrap();
        let admin = std::fs::read_to_string(path).unwrap().trim().to_string();
        let auth = web::Data::from(Arc::new(Auth {
            keys,
            limiter: RateLimiter::new(0),
        }));
        let audit = web::Data::new(
            AuditLog::start_with(
                engine.storage(),
                &AuditConfig {
                    queue_capacity: 64,
                    scan_entries_max: 10_000,
                    refusal_window_s: 60,
                    refusal_peers_max: 4096,
                    retention_s: 0,
                },
                engine.audit_seq(),
                engine.shard_count() as u16,
            )
            .unwrap(),
        );
        Fixture {
            _dir: dir,
            engine,
            auth,
            vault,
            audit,
            admin,
        }
    }

    /// Adds a key with `role` and returns its secret.
    fn key(&self, role: Role, customer_id: Option<&str>) -> String {
        let secret = new_secret();
        self.auth
            .keys
            .insert(
                hash_secret(&secret),
                KeyRecord {
                    id: format!("key_{}", role.as_str()),
                    name: role.as_str().to_string(),
                    role,
                    customer_id: customer_id.map(|c| c.parse::<CustomerId>().unwrap()),
                    created_at_us: 0,
                    owner: format!("owner of {}", role.as_str()),
                    created_by: None,
                    created_by_owner: None,
                },
            )
            .unwrap();
        secret
    }
}

macro_rules! app {
    ($fixture:expr) => {
        test::init_service(
            App::new()
                .app_data($fixture.auth.clone())
                .app_data(web::Data::new($fixture.engine.clone()))
                .app_data($fixture.vault.clone())
                .app_data($fixture.audit.clone())
                .wrap(actix_web::middleware::from_fn(
                    crate::http::middleware::record_refusals,
                ))
                .wrap(problem_fallback())
                .configure(|cfg| {
                    super::configure(
                        cfg,
                        super::Limits::with_body_limit(65_536),
                        super::tests::pricing(),
                    )
                }),
        )
        .await
    };
}

/// Status, headers and JSON body (null when empty) of a response.
async fn parse<B: MessageBody>(
    response: ServiceResponse<B>,
) -> (StatusCode, header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

/// Sends a `TestRequest`; the future of the parsed response.
macro_rules! call {
    ($app:expr, $request:expr $(,)?) => {
        parse(test::call_service(&$app, $request.to_request()).await)
    };
}

fn get(uri: &str, secret: &str) -> TestRequest {
    TestRequest::get()
        .uri(uri)
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
}

fn post(uri: &str, secret: &str, body: &str) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

fn put(uri: &str, secret: &str, body: &str) -> TestRequest {
    TestRequest::put()
        .uri(uri)
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

fn post_keyed(uri: &str, secret: &str, key: &str, body: &str) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
        .insert_header(("Idempotency-Key", key))
        .set_payload(body.to_string())
}

fn assert_problem(result: &(StatusCode, header::HeaderMap, Value), status: u16, code: &str) {
    assert_eq!(result.0.as_u16(), status, "{}", result.2);
    assert_eq!(result.2["code"], code, "{}", result.2);
}

#[actix_web::test]
async fn order_lifecycle_with_idempotency() {
    let f = Fixture::new();
    let app = app!(f);
    let admin = f.admin.as_str();

    let (status, _, ready) = call!(app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready, json!({"status": "ready"}));

    for (sku, delta) in [("A-1", 10), ("B.2", 5)] {
        let body = format!(r#"{{"delta": {delta}, "reason": "received"}}"#);
        let (status, _, stock) = call!(
            app,
            post(&format!("/v1/stock/{sku}/adjustments"), admin, &body)
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{stock}");
        assert_eq!(
            stock,
            json!({"sku": sku, "on_hand": delta, "reserved": 0, "available": delta,
                "locations": [{"location": "default", "on_hand": delta, "reserved": 0, "available": delta}]})
        );
    }

    let (status, headers, customer) = call!(
        app,
        post(
            "/v1/customers",
            admin,
            r#"{"name": "Jane", "email": "jane@example.com", "phone": "+1 555"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{customer}");
    let customer_id = customer["id"].as_str().unwrap().to_string();
    assert!(customer_id.starts_with("cus_"));
    assert_eq!(customer["address"], Value::Null);
    assert_eq!(
        headers.get(header::LOCATION).unwrap().to_str().unwrap(),
        format!("/v1/customers/{customer_id}")
    );
    let (status, _, read) = call!(app, get(&format!("/v1/customers/{customer_id}"), admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, customer);

    let order_body = format!(
        r#"{{"customer_id": "{customer_id}", "lines": [{{"sku": "A-1", "qty": 2, "unit_price": 150}}, {{"sku": "B.2", "qty": 1, "unit_price": 1000}}], "note": "gift"}}"#
    );
    let (status, headers, order) =
        call!(app, post_keyed("/v1/orders", admin, "place-1", &order_body)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    assert_eq!(
        headers.get(header::LOCATION).unwrap().to_str().unwrap(),
        format!("/v1/orders/{order_id}")
    );
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total"], 1300);
    assert_eq!(order["note"], "gift");
    assert_eq!(order["shipping_address"], Value::Null);
    assert_eq!(
        order["lines"][0],
        json!({"sku": "A-1", "qty": 2, "unit_price": 150, "shipped_qty": 0, "returned_qty": 0,
            "allocations": [{"location": "default", "qty": 2}]})
    );
    assert!(order.get("history").is_none());

    // The same key and body: the same order, nothing reserved twice.
    let (status, _, again) =
        call!(app, post_keyed("/v1/orders", admin, "place-1", &order_body)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["id"], order["id"]);
    let (_, _, stock) = call!(app, get("/v1/stock/A-1", admin)).await;
    assert_eq!(stock["reserved"], 2);
    // The same key with another body is a conflict.
    let other = order_body.replace("\"qty\": 2", "\"qty\": 3");
    let result = call!(app, post_keyed("/v1/orders", admin, "place-1", &other)).await;
    assert_problem(&result, 422, "idempotency_conflict");

    let (status, _, read) = call!(app, get(&format!("/v1/orders/{order_id}"), admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["shipments"], json!([]));
    assert_eq!(read["history"][0]["status"], "confirmed");
    assert!(read["history"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("key_"));

    let (status, _, page) = call!(
        app,
        get(
            &format!("/v1/orders?customer_id={customer_id}&status=confirmed&limit=10"),
            admin,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], order["id"]);
    assert_eq!(page["next"], Value::Null);

    // Short stock: every short SKU is named and nothing is reserved.
    let short = format!(
        r#"{{"customer_id": "{customer_id}", "lines": [{{"sku": "A-1", "qty": 100, "unit_price": 1}}, {{"sku": "NEVER", "qty": 1, "unit_price": 1}}, {{"sku": "B.2", "qty": 1, "unit_price": 1}}]}}"#
    );
    let result = call!(app, post("/v1/orders", admin, &short)).await;
    assert_problem(&result, 409, "insufficient_stock");
    let mut skus: Vec<_> = result.2["skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    skus.sort();
    assert_eq!(skus, ["A-1", "NEVER"]);
    let (_, _, stock) = call!(app, get("/v1/stock/B.2", admin)).await;
    assert_eq!(stock["reserved"], 1);

    // Cancel with no body, then again with a reason: 200 both times, stock released.
    let (status, _, cancelled) = call!(
        app,
        post(&format!("/v1/orders/{order_id}/cancel"), admin, "")
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, _, _) = call!(
        app,
        post(
            &format!("/v1/orders/{order_id}/cancel"),
            admin,
            r#"{"reason": "changed mind"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, stock) = call!(app, get("/v1/stock/A-1", admin)).await;
    assert_eq!(
        stock,
        json!({"sku": "A-1", "on_hand": 10, "reserved": 0, "available": 10,
            "locations": [{"location": "default", "on_hand": 10, "reserved": 0, "available": 10}]})
    );

    // Reducing stock below what is reserved is refused.
    let (status, _, _) = call!(app, post_keyed("/v1/orders", admin, "place-2", &order_body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let result = call!(
        app,
        post(
            "/v1/stock/A-1/adjustments",
            admin,
            r#"{"delta": -9, "reason": "loss"}"#
        )
    )
    .await;
    assert_problem(&result, 409, "insufficient_stock");

    f.engine.shutdown().await;
    f.close().await;
}

#[actix_web::test]
async fn invalid_requests_name_their_param() {
    let f = Fixture::new();
    let app = app!(f);
    let admin = f.admin.as_str();
    let cases: Vec<(TestRequest, u16, &str, Option<&str>)> = vec![
        (
            get("/v1/stock/bad%20sku", admin),
            400,
            "invalid_request",
            Some("sku"),
        ),
        (get("/v1/stock/UNKNOWN", admin), 404, "not_found", None),
        (
            post(
                "/v1/stock/A/adjustments",
                admin,
                r#"{"delta": 0, "reason": "x"}"#,
            ),
            400,
            "invalid_request",
            Some("delta"),
        ),
        (
            post("/v1/stock/A/adjustments", admin, r#"{"delta": 1}"#),
            400,
            "invalid_request",
            Some("reason"),
        ),
        (
            post(
                "/v1/stock/A/adjustments",
                admin,
                &format!(r#"{{"delta": 1, "reason": "{}"}}"#, "r".repeat(501)),
            ),
            400,
            "invalid_request",
            Some("reason"),
        ),
        (
            post("/v1/customers", admin, r#"{"name": "J", "email": "nope"}"#),
            400,
            "invalid_request",
            Some("email"),
        ),
        (
            post(
                "/v1/customers",
                admin,
                r#"{"name": "J", "email": "j@x.io", "role": "admin"}"#,
            ),
            400,
            "invalid_request",
            Some("role"),
        ),
        (
            post("/v1/customers", admin, r#"{"name": "", "email": "j@x.io"}"#),
            400,
            "invalid_request",
            Some("name"),
        ),
        (
            post("/v1/customers", admin, "{not json"),
            400,
            "invalid_request",
            Some("body"),
        ),
        (get("/v1/customers/cus_zz", admin), 404, "not_found", None),
        (
            get("/v1/customers/cus_00000000000000ff", admin),
            404,
            "not_found",
            None,
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": []}"#,
            ),
            400,
            "invalid_request",
            Some("lines"),
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 0, "unit_price": 1}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[0].qty"),
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 1, "unit_price": -1}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[0].unit_price"),
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}, {"sku": "A", "qty": 1, "unit_price": 1}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[1].sku"),
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "nope", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}]}"#,
            ),
            422,
            "unknown_customer",
            None,
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_00000000000000ff", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}]}"#,
            ),
            422,
            "unknown_customer",
            None,
        ),
        (
            post_keyed(
                "/v1/orders",
                admin,
                "",
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}]}"#,
            ),
            400,
            "invalid_request",
            Some("Idempotency-Key"),
        ),
        (
            post_keyed("/v1/orders", admin, &"k".repeat(256), "{}"),
            400,
            "invalid_request",
            Some("Idempotency-Key"),
        ),
        // The number bounds (orderd_engine::{LINE_QTY_MAX, UNIT_PRICE_MAX, ORDER_TOTAL_MAX,
        // STOCK_DELTA_MAX}), one past each.
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 1000001, "unit_price": 1}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[0].qty"),
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}, {"sku": "B", "qty": 1, "unit_price": 1000000000001}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[1].unit_price"),
        ),
        (
            post(
                "/v1/orders",
                admin,
                r#"{"customer_id": "cus_0000000000000001", "lines": [{"sku": "A", "qty": 1000, "unit_price": 1000000000000}, {"sku": "B", "qty": 1, "unit_price": 1}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[1].unit_price"),
        ),
        (
            post(
                "/v1/stock/A/adjustments",
                admin,
                r#"{"delta": -1000000000001, "reason": "x"}"#,
            ),
            400,
            "invalid_request",
            Some("delta"),
        ),
        (
            post(
                "/v1/orders/ord_00000000000000ff/shipments",
                admin,
                r#"{"carrier": "DHL", "lines": [{"sku": "A", "qty": 1000001}]}"#,
            ),
            400,
            "invalid_request",
            Some("lines[0].qty"),
        ),
        (get("/v1/orders/ord_x", admin), 404, "not_found", None),
        (
            get("/v1/orders/ord_00000000000000ff", admin),
            404,
            "not_found",
            None,
        ),
        (
            get("/v1/orders?limit=0", admin),
            400,
            "invalid_request",
            Some("limit"),
        ),
        (
            get("/v1/orders?limit=1001", admin),
            400,
            "invalid_request",
            Some("limit"),
        ),
        (
            get("/v1/orders?after=nope", admin),
            400,
            "invalid_request",
            Some("after"),
        ),
        (
            get("/v1/orders?status=pending", admin),
            400,
            "invalid_request",
            Some("status"),
        ),
        (
            post("/v1/orders/ord_00000000000000ff/cancel", admin, ""),
            404,
            "not_found",
            None,
        ),
        (
            post(
                "/v1/orders/ord_00000000000000ff/cancel",
                admin,
                r#"{"because": 1}"#,
            ),
            400,
            "invalid_request",
            Some("because"),
        ),
        (
            post("/v1/ops/shards/99/restart", admin, ""),
            404,
            "not_found",
            None,
        ),
        (
            post("/v1/ops/shards/x/restart", admin, ""),
            404,
            "not_found",
            None,
        ),
    ];
    for (i, (request, status, code, param)) in cases.into_iter().enumerate() {
        let uri = format!("case {i}");
        let result = call!(app, request).await;
        assert_eq!(result.0.as_u16(), status, "{uri}: {}", result.2);
        assert_problem(&result, status, code);
        match param {
            Some(param) => assert_eq!(result.2["param"], param, "{uri}: {}", result.2),
            None => assert!(result.2.get("param").is_none(), "{uri}"),
        }
    }
    f.engine.shutdown().await;
    f.close().await;
}

#[actix_web::test]
async fn roles_are_enforced_and_customer_keys_see_only_their_own() {
    let f = Fixture::new();
    let app = app!(f);
    let admin = f.admin.as_str();
    call!(
        app,
        post(
            "/v1/stock/A/adjustments",
            admin,
            r#"{"delta": 5, "reason": "r"}"#
        )
    )
    .await;
    let mut customers = Vec::new();
    for name in ["one", "two"] {
        let body = format!(r#"{{"name": "{name}", "email": "{name}@example.com"}}"#);
        let (_, _, c) = call!(app, post("/v1/customers", admin, &body)).await;
        customers.push(c["id"].as_str().unwrap().to_string());
    }
    let place = |customer: &str| {
        format!(
            r#"{{"customer_id": "{customer}", "lines": [{{"sku": "A", "qty": 1, "unit_price": 1}}]}}"#
        )
    };
    let (_, _, other_order) = call!(app, post("/v1/orders", admin, &place(&customers[1]))).await;
    let other_order = other_order["id"].as_str().unwrap().to_string();
    // A customer key orders at the catalog's price: the one its orders below send.
    let (status, _, price) = call!(app, put("/v1/catalog/A", admin, r#"{"price": 1}"#)).await;
    assert_eq!(status, StatusCode::OK, "{price}");

    let frontend = f.key(Role::Frontend, None);
    let logistics = f.key(Role::Logistics, None);
    let analyst = f.key(Role::Analyst, None);
    let operator = f.key(Role::Operator, None);
    let auditor = f.key(Role::Auditor, None);
    let customer = f.key(Role::Customer, Some(&customers[0]));

    let adjust = r#"{"delta": 1, "reason": "r"}"#;
    assert_problem(
        &call!(app, post("/v1/stock/A/adjustments", &frontend, adjust)).await,
        403,
        "forbidden",
    );
    assert_eq!(
        call!(app, post("/v1/stock/A/adjustments", &logistics, adjust))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call!(app, get("/v1/stock/A", &analyst)).await.0,
        StatusCode::OK
    );
    assert_problem(
        &call!(app, get("/v1/stock/A", &auditor)).await,
        403,
        "forbidden",
    );
    assert_problem(
        &call!(app, get("/v1/ops/shards", &analyst)).await,
        403,
        "forbidden",
    );
    let (status, _, shards) = call!(app, get("/v1/ops/shards", &operator)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shards.as_array().unwrap().len(), SHARDS);
    assert_eq!(shards[0]["state"], "running");
    assert_problem(
        &call!(app, post("/v1/orders", &analyst, &place(&customers[0]))).await,
        403,
        "forbidden",
    );

    // The auditor reads customers with personal data masked.
    let (status, _, masked) = call!(
        app,
        get(&format!("/v1/customers/{}", customers[0]), &auditor)
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(masked["email"], "o***@example.com");
    assert_eq!(masked["name"], "o***");

    // A customer key: its own record and orders only; everything else is 404.
    assert_eq!(
        call!(
            app,
            get(&format!("/v1/customers/{}", customers[0]), &customer)
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_problem(
        &call!(
            app,
            get(&format!("/v1/customers/{}", customers[1]), &customer)
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &call!(app, get(&format!("/v1/orders/{other_order}"), &customer)).await,
        404,
        "not_found",
    );
    assert_problem(
        &call!(
            app,
            post(&format!("/v1/orders/{other_order}/cancel"), &customer, "")
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &call!(app, post("/v1/orders", &customer, &place(&customers[1]))).await,
        404,
        "not_found",
    );
    assert_problem(
        &call!(app, get("/v1/stock/A", &customer)).await,
        404,
        "not_found",
    );
    assert_problem(
        &call!(
            app,
            get(
                &format!("/v1/orders?customer_id={}", customers[1]),
                &customer
            )
        )
        .await,
        404,
        "not_found",
    );
    let (status, _, own) = call!(app, post("/v1/orders", &customer, &place(&customers[0]))).await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let (status, _, page) = call!(app, get("/v1/orders", &customer)).await;
    assert_eq!(status, StatusCode::OK);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], own["id"]);
    let (status, _, _) = call!(
        app,
        post(
            &format!("/v1/orders/{}/cancel", own["id"].as_str().unwrap()),
            &customer,
            ""
        )
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Operators restart shards in the background; the shard runs again shortly after.
    assert_problem(
        &call!(app, post("/v1/ops/shards/1/restart", &analyst, "")).await,
        403,
        "forbidden",
    );
    let (status, _, restart) = call!(app, post("/v1/ops/shards/1/restart", &operator, "")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(restart, json!({"id": 1, "state": "restarting"}));
    let mut restarted = false;
    for _ in 0..100 {
        let (_, _, shards) = call!(app, get("/v1/ops/shards", &operator)).await;
        if shards[1]["state"] == "running" && shards[1]["restarts"] == 1 {
            restarted = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(restarted, "shard 1 did not come back within 5 s");

    f.engine.shutdown().await;
    f.close().await;
}

fn delete(uri: &str, secret: &str) -> TestRequest {
    TestRequest::delete()
        .uri(uri)
        .insert_header((header::AUTHORIZATION, format!("Bearer {secret}")))
}

#[actix_web::test]
async fn keys_and_audit_validate_their_input_and_roles() {
    let f = Fixture::new();
    let app = app!(f);
    let admin = f.admin.as_str();
    let (_, _, customer) = call!(
        app,
        post(
            "/v1/customers",
            admin,
            r#"{"name": "Kim", "email": "kim@example.com"}"#
        )
    )
    .await;
    let customer_id = customer["id"].as_str().unwrap().to_string();
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (
            r#"{"name": "", "role": "admin"}"#.into(),
            400,
            "invalid_request",
            Some("name"),
        ),
        (
            r#"{"name": "   ", "role": "admin"}"#.into(),
            400,
            "invalid_request",
            Some("name"),
        ),
        (
            format!(r#"{{"name": "{}", "role": "admin"}}"#, "n".repeat(101)),
            400,
            "invalid_request",
            Some("name"),
        ),
        (
            r#"{"name": "x", "role": "root"}"#.into(),
            400,
            "invalid_request",
            Some("role"),
        ),
        (
            r#"{"name": "x"}"#.into(),
            400,
            "invalid_request",
            Some("role"),
        ),
        (
            r#"{"name": "x", "role": "admin", "secret": "mine"}"#.into(),
            400,
            "invalid_request",
            Some("secret"),
        ),
        (
            r#"{"name": "x", "role": "customer"}"#.into(),
            400,
            "invalid_request",
            Some("customer_id"),
        ),
        (
            format!(r#"{{"name": "x", "role": "frontend", "customer_id": "{customer_id}"}}"#),
            400,
            "invalid_request",
            Some("customer_id"),
        ),
        (
            r#"{"name": "x", "role": "customer", "customer_id": "cus_1_999999"}"#.into(),
            422,
            "unknown_customer",
            None,
        ),
        (
            r#"{"name": "x", "role": "customer", "customer_id": "nonsense"}"#.into(),
            422,
            "unknown_customer",
            None,
        ),
    ];
    for (body, status, code, param) in cases {
        let result = call!(app, post("/v1/keys", admin, &body)).await;
        assert_problem(&result, status, code);
        assert_eq!(result.2["param"].as_str(), param, "{body}: {}", result.2);
    }
    let (status, headers, created) = call!(
        app,
        post(
            "/v1/keys",
            admin,
            &format!(
                r#"{{"name": "{}", "role": "customer", "customer_id": "{customer_id}"}}"#,
                "n".repeat(100)
            ),
        )
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(created["customer_id"], customer_id.as_str());

    let frontend = f.key(Role::Frontend, None);
    let auditor = f.key(Role::Auditor, None);
    let buyer = created["secret"].as_str().unwrap().to_string();
    for secret in [&frontend, &auditor] {
        assert_problem(&call!(app, get("/v1/keys", secret)).await, 403, "forbidden");
        assert_problem(
            &call!(
                app,
                post("/v1/keys", secret, r#"{"name": "x", "role": "admin"}"#)
            )
            .await,
            403,
            "forbidden",
        );
        assert_problem(
            &call!(app, delete("/v1/keys/key_admin", secret)).await,
            403,
            "forbidden",
        );
    }
    assert_problem(&call!(app, get("/v1/keys", &buyer)).await, 404, "not_found");
    assert_problem(
        &call!(app, get("/v1/audit", &buyer)).await,
        404,
        "not_found",
    );
    assert_problem(
        &call!(app, get("/v1/audit", &frontend)).await,
        403,
        "forbidden",
    );
    assert_problem(
        &call!(app, get("/v1/audit/verify", &frontend)).await,
        403,
        "forbidden",
    );
    assert_problem(
        &call!(app, delete("/v1/keys/key_nope", admin)).await,
        404,
        "not_found",
    );
    for (query, param) in [
        ("since=yesterday", "since"),
        ("since=2025-01-01", "since"),
        ("after=x", "after"),
        ("after=-1", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("who=me", "who"),
    ] {
        let result = call!(app, get(&format!("/v1/audit?{query}"), &auditor)).await;
        assert_problem(&result, 400, "invalid_request");
        assert_eq!(result.2["param"], param, "{query}: {}", result.2);
    }
    for query in ["after=x", "limit=0", "after=5"] {
        let result = call!(app, get(&format!("/v1/keys?{query}"), admin)).await;
        assert_problem(&result, 400, "invalid_request");
    }

    // What happened so far, as the auditor reads it: customer and key created, then the eight
    // 403s of the frontend and auditor keys. (400s are not audited; the customer key's
    // refusals are 404s, which are not either.)
    let (status, _, page) = call!(app, get("/v1/audit?limit=1000", &auditor)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "customer.create",
            "key.create",
            "auth.forbidden",
            "auth.forbidden",
            "auth.forbidden",
            "auth.forbidden",
            "auth.forbidden",
            "auth.forbidden",
            "auth.forbidden",
            "auth.forbidden",
        ]
    );
    assert_eq!(items[1]["target"], created["id"]);
    assert_eq!(
        items[1]["detail"],
        format!("role=customer owner=bootstrap customer={customer_id}")
    );
    assert_eq!(items[2]["actor"], "key_frontend");
    assert_eq!(items[2]["target"], "GET /v1/keys");
    assert_eq!(items[2]["detail"], "role=frontend");
    assert_eq!(page["next"], Value::Null);
    let entries: Vec<orderd_service::audit::AuditEntry> =
        serde_json::from_value(page["items"].clone()).unwrap();
    assert_eq!(orderd_service::audit::verify_chain(&entries), Ok(10));
    let (status, _, report) = call!(app, get("/v1/audit/verify", &auditor)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["entries"], 10);
    assert_eq!(report["first_bad_seq"], Value::Null);
    assert_eq!(report["last_hash"], items[9]["hash"]);
    for item in items {
        assert!(
            !item.to_string().contains("Kim"),
            "no personal data: {item}"
        );
        assert!(
            !item.to_string().contains("kim@"),
            "no personal data: {item}"
        );
    }
    f.engine.shutdown().await;
    f.close().await;
}

#[actix_web::test]
async fn personal_data_is_sealed_in_the_engine_and_survives_rotation() {
    let f = Fixture::new();
    let app = app!(f);
    let admin = f.admin.as_str();
    call!(
        app,
        post(
            "/v1/stock/A/adjustments",
            admin,
            r#"{"delta": 10, "reason": "r"}"#
        )
    )
    .await;
    let customer_body = json!({
        "name": "Jane Doe",
        "email": "jane@example.com",
        "phone": "+41 79 000 00 00",
        "address": "1 Main Street, Zürich",
    });
    let (status, _, created) = call!(
        app,
        post("/v1/customers", admin, &customer_body.to_string())
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for field in ["name", "email", "phone", "address"] {
        assert_eq!(created[field], customer_body[field], "{field}");
    }
    let customer_id = created["id"].as_str().unwrap().to_string();
    let order_body = json!({
        "customer_id": customer_id,
        "lines": [{"sku": "A", "qty": 1, "unit_price": 5}],
        "shipping_address": "2 Side Road",
    })
    .to_string();
    let (status, _, placed) = call!(app, post_keyed("/v1/orders", admin, "k1", &order_body)).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["shipping_address"], "2 Side Road");
    let order_id = placed["id"].as_str().unwrap().to_string();

    // The engine holds sealed strings only.
    let stored = f
        .engine
        .customer(customer_id.parse().unwrap())
        .await
        .unwrap();
    for value in [
        &stored.name,
        &stored.email,
        stored.phone.as_ref().unwrap(),
        stored.address.as_ref().unwrap(),
    ] {
        assert!(orderd_service::vault::is_sealed(value), "{value:?}");
        assert!(!value.contains("Jane") && !value.contains("jane"));
    }
    let stored_order = f.engine.order(order_id.parse().unwrap()).await.unwrap();
    assert!(orderd_service::vault::is_sealed(
        stored_order.shipping_address.as_deref().unwrap()
    ));

    // A sealed-looking value from a client is refused, never stored.
    let forged = stored.name.clone();
    let result = call!(
        app,
        post(
            "/v1/customers",
            admin,
            &json!({"name": forged, "email": "x@example.com"}).to_string()
        )
    )
    .await;
    assert_problem(&result, 400, "invalid_request");
    assert_eq!(result.2["param"], "name");

    // Rotation: admin and operator only; old values stay readable, new ones use the new key.
    for role in [
        Role::Frontend,
        Role::Customer,
        Role::Logistics,
        Role::Analyst,
        Role::Auditor,
    ] {
        let secret = f.key(role, Some(&customer_id));
        assert_problem(
            &call!(app, post("/v1/ops/keys/rotate", &secret, "")).await,
            if role == Role::Customer { 404 } else { 403 },
            if role == Role::Customer {
                "not_found"
            } else {
                "forbidden"
            },
        );
    }
    let operator = f.key(Role::Operator, None);
    let (status, _, rotation) = call!(app, post("/v1/ops/keys/rotate", &operator, "")).await;
    assert_eq!(status, StatusCode::OK, "{rotation}");
    assert_eq!(rotation["data_key_id"], "2");
    assert_eq!(rotation["rewrapped"], 1);
    assert_eq!(rotation["master_key_id"].as_str().unwrap().len(), 16);
    assert_eq!(
        rotation["master_key_id"].as_str().unwrap(),
        f.vault.master_key_id().to_string()
    );
    let (status, _, read) = call!(app, get(&format!("/v1/customers/{customer_id}"), admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);
    let (_, _, replayed) = call!(app, post_keyed("/v1/orders", admin, "k1", &order_body)).await;
    assert_eq!(
        replayed, placed,
        "an idempotent replay opens the stored order"
    );
    let (_, _, page) = call!(app, get("/v1/orders", admin)).await;
    assert_eq!(page["items"][0]["shipping_address"], "2 Side Road");
    let (_, _, cancelled) = call!(
        app,
        post(&format!("/v1/orders/{order_id}/cancel"), admin, "")
    )
    .await;
    assert_eq!(cancelled["shipping_address"], "2 Side Road");
    let (_, _, second) = call!(
        app,
        post("/v1/customers", admin, &customer_body.to_string())
    )
    .await;
    let second_id = second["id"].as_str().unwrap();
    let stored = f.engine.customer(second_id.parse().unwrap()).await.unwrap();
    assert!(
        stored.email.starts_with("\u{1}2:"),
        "sealed under the new data key"
    );
    let (_, _, masked) = call!(
        app,
        get(
            &format!("/v1/customers/{second_id}"),
            &f.key(Role::Auditor, None)
        )
    )
    .await;
    assert_eq!(masked["email"], "j***@example.com");
    assert_eq!(masked["phone"], "+***");
    f.engine.shutdown().await;
    f.close().await;
}

/// Writes a quarantine record as the supervisor stores it (ARCHITECTURE.md, "Storage layout").
fn store_quarantined(engine: &Engine, entry: &orderd_engine::supervisor::QuarantinedCommand) {
    use orderd_storage::{Family, Write};
    let mut key = b"engine/quarantine/".to_vec();
    key.extend_from_slice(&entry.fingerprint.to_be_bytes());
    let mut value = vec![1u8];
    value.extend(postcard::to_stdvec(entry).unwrap());
    engine
        .storage()
        .write(
            vec![Write::Put {
                family: Family::Control,
                key,
                value,
            }],
            true,
        )
        .unwrap();
}

#[actix_web::test]
async fn quarantines_are_listed_by_incident_readers_and_lifted_by_operators() {
    use orderd_engine::supervisor::QuarantinedCommand;
    let f = Fixture::new();
    let app = app!(f);
    let admin = f.admin.as_str();
    let operator = f.key(Role::Operator, None);
    let auditor = f.key(Role::Auditor, None);
    let analyst = f.key(Role::Analyst, None);
    let newer = QuarantinedCommand {
        fingerprint: 0x0000_0000_0000_00a1,
        command: "adjust_stock".into(),
        message: "failpoint: panic on SKU X".into(),
        at_us: 1_700_000_100_000_000,
    };
    let older = QuarantinedCommand {
        fingerprint: 0x5c1f_0e6b_2a9d_4471,
        command: "create_customer".into(),
        message: "index out of bounds".into(),
        at_us: 1_700_000_000_000_000,
    };
    store_quarantined(&f.engine, &newer);
    store_quarantined(&f.engine, &older);

    // Listed oldest first, as whoever may read incidents sees it.
    for reader in [admin, operator.as_str(), auditor.as_str()] {
        let (status, _, page) = call!(app, get("/v1/ops/quarantine", reader)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page,
            json!({"items": [
                {"fingerprint": "5c1f0e6b2a9d4471", "command": "create_customer",
                 "message": "index out of bounds", "quarantined_at": "2023-11-14T22:13:20.000000Z"},
                {"fingerprint": "00000000000000a1", "command": "adjust_stock",
                 "message": "failpoint: panic on SKU X", "quarantined_at": "2023-11-14T22:15:00.000000Z"},
            ], "next": null})
        );
    }
    assert_problem(
        &call!(app, get("/v1/ops/quarantine", &analyst)).await,
        403,
        "forbidden",
    );
    // Paged by fingerprint.
    let (_, _, first) = call!(app, get("/v1/ops/quarantine?limit=1", admin)).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["next"], "5c1f0e6b2a9d4471");
    let (_, _, second) = call!(
        app,
        get("/v1/ops/quarantine?limit=1&after=5c1f0e6b2a9d4471", admin)
    )
    .await;
    assert_eq!(second["items"][0]["fingerprint"], "00000000000000a1");
    assert_eq!(second["next"], Value::Null);
    let bad_after = call!(app, get("/v1/ops/quarantine?after=nope", admin)).await;
    assert_problem(&bad_after, 400, "invalid_request");
    assert_eq!(bad_after.2["param"], "after");
    let bad_limit = call!(app, get("/v1/ops/quarantine?limit=0", admin)).await;
    assert_eq!(bad_limit.2["param"], "limit");

    // Lifting is for operators and admins; a refused lift changes nothing.
    assert_problem(
        &call!(app, delete("/v1/ops/quarantine/5c1f0e6b2a9d4471", &auditor)).await,
        403,
        "forbidden",
    );
    for unknown in [
        "00000000000000ff",
        "5c1f0e6b2a9d447",
        "not-a-fingerprint",
        "0x1f0e6b2a9d4471",
    ] {
        assert_problem(
            &call!(
                app,
                delete(&format!("/v1/ops/quarantine/{unknown}"), &operator)
            )
            .await,
            404,
            "not_found",
        );
    }
    let (_, _, page) = call!(app, get("/v1/ops/quarantine", admin)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");

    // Upper-case hex names the same command.
    let (status, _, lifted) = call!(
        app,
        delete("/v1/ops/quarantine/5C1F0E6B2A9D4471", &operator)
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert_eq!(
        lifted,
        json!({"fingerprint": "5c1f0e6b2a9d4471", "command": "create_customer",
               "message": "index out of bounds", "quarantined_at": "2023-11-14T22:13:20.000000Z"})
    );
    let (_, _, page) = call!(app, get("/v1/ops/quarantine", admin)).await;
    assert_eq!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["fingerprint"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["00000000000000a1"]
    );
    // A second lift finds nothing.
    assert_problem(
        &call!(
            app,
            delete("/v1/ops/quarantine/5c1f0e6b2a9d4471", &operator)
        )
        .await,
        404,
        "not_found",
    );

    // Audited once (only the lift that happened), with the operator as actor.
    let (_, _, audit) = call!(app, get("/v1/audit?limit=1000", admin)).await;
    let lifts: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "quarantine.lift")
        .collect();
    assert_eq!(lifts.len(), 1, "{audit}");
    assert_eq!(lifts[0]["actor"], "key_operator");
    assert_eq!(lifts[0]["target"], "5c1f0e6b2a9d4471");
    assert_eq!(lifts[0]["detail"], "command=create_customer");
    // And an incident on-call sees, already closed.
    let (_, _, incidents) = call!(app, get("/v1/ops/incidents", &operator)).await;
    let lifted: Vec<&Value> = incidents
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "quarantine_lifted")
        .collect();
    assert_eq!(lifted.len(), 1, "{incidents}");
    assert_eq!(lifted[0]["component"], "shard");
    let detail = lifted[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("create_customer (command 5c1f0e6b2a9d4471)"),
        "{detail}"
    );
    assert!(
        lifted[0]["action"]
            .as_str()
            .unwrap()
            .contains("key_operator"),
        "{}",
        lifted[0]
    );
    assert!(lifted[0]["recovered_at"].is_string(), "{}", lifted[0]);

    // The admin lifts the other one: the list is empty.
    let (status, _, _) = call!(app, delete("/v1/ops/quarantine/00000000000000a1", admin)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, page) = call!(app, get("/v1/ops/quarantine", auditor.as_str())).await;
    assert_eq!(page, json!({"items": [], "next": null}));
    f.engine.shutdown().await;
    f.close().await;
}

/// Catalog prices: who sets and reads them, and how they price a customer key's orders.
#[actix_web::test]
async fn catalog_prices_price_customer_orders() {
    let f = Fixture::new();
    let app = app!(f);
    let admin = &f.admin;
    let (_, _, c) = call!(
        app,
        post(
            "/v1/customers",
            admin,
            r#"{"name": "C", "email": "c@example.com"}"#
        )
    )
    .await;
    let customer_id = c["id"].as_str().unwrap().to_string();
    for sku in ["CAT-A", "CAT-B", "CAT-C"] {
        let (status, _, _) = call!(
            app,
            post(
                &format!("/v1/stock/{sku}/adjustments"),
                admin,
                r#"{"delta": 10, "reason": "r"}"#
            )
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let merchandiser = f.key(Role::Merchandiser, None);
    let frontend = f.key(Role::Frontend, None);
    let operator = f.key(Role::Operator, None);
    let customer = f.key(Role::Customer, Some(&customer_id));

    let (status, _, set) = call!(
        app,
        put("/v1/catalog/CAT-A", &merchandiser, r#"{"price": 1999}"#)
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["sku"], "CAT-A");
    assert_eq!(set["price"], 1999);
    assert_eq!(set["currency"], "USD");
    assert_eq!(set["active"], true);
    assert!(set["updated_at"].as_str().unwrap().ends_with('Z'));
    let (status, _, _) = call!(
        app,
        put(
            "/v1/catalog/CAT-B",
            &merchandiser,
            r#"{"price": 500, "active": false}"#
        )
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_problem(
        &call!(app, put("/v1/catalog/CAT-A", &frontend, r#"{"price": 1}"#)).await,
        403,
        "forbidden",
    );
    assert_problem(
        &call!(app, put("/v1/catalog/CAT-A", &customer, r#"{"price": 1}"#)).await,
        404,
        "not_found",
    );
    let (status, _, read) = call!(app, get("/v1/catalog/CAT-A", &operator)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, set);
    assert_problem(
        &call!(app, get("/v1/catalog/CAT-C", &merchandiser)).await,
        404,
        "not_found",
    );
    let (status, _, page) = call!(app, get("/v1/catalog?limit=1", &merchandiser)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["sku"], "CAT-A");
    assert_eq!(page["next"], "CAT-A");
    let (_, _, page) = call!(app, get("/v1/catalog?after=CAT-A", &merchandiser)).await;
    assert_eq!(page["items"][0]["sku"], "CAT-B");
    assert_eq!(page["items"][0]["active"], false);
    assert!(page["next"].is_null());
    for (body, param) in [
        (r#"{"price": -1}"#, "price"),
        (r#"{"price": 1000000000001}"#, "price"),
        (r#"{"price": 1.5}"#, "price"),
        (r#"{"active": true}"#, "price"),
        (r#"{"price": 1, "active": "yes"}"#, "active"),
        (r#"{"price": 1, "currency": "EUR"}"#, "currency"),
    ] {
        let answer = call!(app, put("/v1/catalog/CAT-A", &merchandiser, body)).await;
        assert_problem(&answer, 400, "invalid_request");
        assert_eq!(answer.2["param"], param, "{body}: {}", answer.2);
    }
    let answer = call!(
        app,
        put("/v1/catalog/bad%20sku", &merchandiser, r#"{"price": 1}"#)
    )
    .await;
    assert_problem(&answer, 400, "invalid_request");
    assert_eq!(answer.2["param"], "sku");
    let answer = call!(app, get("/v1/catalog?after=%20", &merchandiser)).await;
    assert_eq!(answer.2["param"], "after");

    let order = |lines: &str| format!(r#"{{"customer_id": "{customer_id}", "lines": [{lines}]}}"#);
    // The customer's order takes the catalog price.
    let (status, _, placed) = call!(
        app,
        post(
            "/v1/orders",
            &customer,
            &order(r#"{"sku": "CAT-A", "qty": 2}"#)
        )
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["lines"][0]["unit_price"], 1999);
    assert_eq!(placed["total"], 3998);
    // A differing price is refused naming the line; an inactive or missing price is unknown.
    let answer = call!(
        app,
        post(
            "/v1/orders",
            &customer,
            &order(r#"{"sku": "CAT-A", "qty": 1, "unit_price": 1}"#)
        )
    )
    .await;
    assert_problem(&answer, 422, "price_mismatch");
    assert_eq!(answer.2["param"], "lines[0].unit_price");
    for sku in ["CAT-B", "CAT-C"] {
        let lines = format!(r#"{{"sku": "CAT-A", "qty": 1}}, {{"sku": "{sku}", "qty": 1}}"#);
        let answer = call!(app, post("/v1/orders", &customer, &order(&lines))).await;
        assert_problem(&answer, 422, "unknown_sku");
        assert_eq!(answer.2["param"], "lines[1].sku");
    }
    // A frontend key prices its own orders (orders.client_prices = true), and must.
    let (status, _, placed) = call!(
        app,
        post(
            "/v1/orders",
            &frontend,
            &order(r#"{"sku": "CAT-C", "qty": 1, "unit_price": 7}"#)
        )
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["total"], 7);
    let answer = call!(
        app,
        post(
            "/v1/orders",
            &frontend,
            &order(r#"{"sku": "CAT-C", "qty": 1}"#)
        )
    )
    .await;
    assert_problem(&answer, 400, "invalid_request");
    assert_eq!(answer.2["param"], "lines[0].unit_price");
    // Stock: 2 (customer) + 1 (frontend); the refused orders reserved nothing.
    let (_, _, stock) = call!(app, get("/v1/stock/CAT-A", &merchandiser)).await;
    assert_eq!(stock["reserved"], 2);
    let (_, _, stock) = call!(app, get("/v1/stock/CAT-B", admin)).await;
    assert_eq!(stock["reserved"], 0);
    f.close().await;
}

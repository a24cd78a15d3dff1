//! API basics: probes, authentication, request validation, problem documents, domain errors,
//! the order lifecycle and listing, and a clean SIGTERM shutdown that keeps all data.

use crate::support::{
    assert_problem, check_order, norm_lines, order_body, pct, serial, unique, Client, Reply, Server,
};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A 400 `invalid_request` whose `param` mentions one of `fields`.
fn assert_invalid(r: &Reply, fields: &[&str]) {
    assert_problem(r, 400, "invalid_request");
    let param = r.body["param"]
        .as_str()
        .unwrap_or_else(|| panic!("400 without param: {}", r.body));
    assert!(
        fields.iter().any(|f| param.contains(f)),
        "param {param:?} should name one of {fields:?}: {}",
        r.body
    );
}

fn place(client: &Client, body: &Value) -> Reply {
    client.post("/v1/orders", body, Some(&unique("basic")))
}

fn line(sku: &str, qty: u32) -> (String, u32, u64) {
    (sku.to_string(), qty, 1000)
}

fn assert_live(client: &Client) {
    let (status, body) = client.without_key().get_json("/livez");
    assert_eq!(status, 200, "GET /livez: {body}");
}

#[test]
fn probes_and_authentication() {
    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    let anon = client.without_key();
    for path in ["/livez", "/readyz"] {
        let r = anon.get(path);
        assert_eq!(r.status, 200, "GET {path} without a key: {}", r.body);
    }

    assert_problem(&anon.get("/v1/orders"), 401, "unauthorized");
    assert_problem(&anon.get("/v1/stock/ANY-1"), 401, "unauthorized");
    let customer = json!({"name": "Anon", "email": "anon@example.com"});
    assert_problem(
        &anon.post("/v1/customers", &customer, None),
        401,
        "unauthorized",
    );
    let wrong = client.with_key("not-the-secret");
    assert_problem(&wrong.get("/v1/orders"), 401, "unauthorized");
    assert_problem(&wrong.get("/v1/ops/shards"), 401, "unauthorized");

    let (status, body) = server.get_json("/v1/orders");
    assert_eq!(status, 200, "the admin key works: {body}");
    assert_eq!(body["items"], json!([]), "nothing was created: {body}");
    let (status, body) = server.post_json("/v1/customers", &customer, None);
    assert_eq!(status, 201, "create customer: {body}");

    let key_file = server.data_dir().join("admin.key");
    let mode = fs::metadata(&key_file)
        .expect("admin.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin.key mode");
    assert!(
        !server.log().contains(server.admin_key()),
        "the admin secret must never be logged"
    );
    assert_live(&client);
}

#[test]
fn request_validation() {
    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    let c = client.create_customer();
    client.adjust_stock("VAL-1", 10);

    let r = client.post(
        "/v1/customers",
        &json!({"name": "A", "email": "a@example.com", "bogus": 1}),
        None,
    );
    assert_invalid(&r, &["bogus"]);
    let r = client.post(
        "/v1/customers",
        &json!({"name": "A", "email": "not-an-address"}),
        None,
    );
    assert_invalid(&r, &["email"]);
    let r = client.send_text(
        "POST",
        "/v1/customers",
        "application/json",
        "{\"name\": \"A\",",
    );
    assert_problem(&r, 400, "invalid_request");
    let r = client.send_text("POST", "/v1/orders", "application/json", "not json");
    assert_problem(&r, 400, "invalid_request");

    let bad_line = |line: Value| json!({"customer_id": c, "lines": [line]});
    let r = place(
        &client,
        &bad_line(json!({"sku": "VAL-1", "qty": 1, "unit_price": 1, "x": 1})),
    );
    assert_invalid(&r, &["x"]);
    let r = place(
        &client,
        &bad_line(json!({"sku": "VAL-1", "qty": "2", "unit_price": 100})),
    );
    assert_invalid(&r, &["qty"]);
    let r = place(&client, &json!({"customer_id": c}));
    assert_invalid(&r, &["lines"]);

    for bad in [
        "has space".to_string(),
        "A".repeat(65),
        String::new(),
        "a/b".to_string(),
    ] {
        let r = place(&client, &order_body(&c, &[line(&bad, 1)]));
        assert_invalid(&r, &["sku"]);
    }
    let r = client.post(
        &format!("/v1/stock/{}/adjustments", "B".repeat(65)),
        &json!({"delta": 5, "reason": "receive"}),
        None,
    );
    assert_invalid(&r, &["sku"]);
    let longest = "C".repeat(64);
    assert_eq!(
        client.adjust_stock(&longest, 5).on_hand,
        5,
        "64 chars is a SKU"
    );
    let dotted = "a-Z_0.9";
    assert_eq!(
        client.adjust_stock(dotted, 5).on_hand,
        5,
        "all SKU characters"
    );

    for qty in [json!(0), json!(-1)] {
        let r = place(
            &client,
            &bad_line(json!({"sku": "VAL-1", "qty": qty, "unit_price": 100})),
        );
        assert_invalid(&r, &["qty"]);
    }
    let many: Vec<(String, u32, u64)> = (0..101).map(|i| line(&format!("L-{i}"), 1)).collect();
    assert_invalid(&place(&client, &order_body(&c, &many)), &["lines"]);
    assert_invalid(&place(&client, &order_body(&c, &[])), &["lines"]);
    let dup = order_body(&c, &[line("VAL-1", 1), line("VAL-1", 2)]);
    assert_invalid(&place(&client, &dup), &["lines", "sku"]);

    let r = client.post(
        "/v1/stock/VAL-1/adjustments",
        &json!({"delta": 0, "reason": "nothing"}),
        None,
    );
    assert_invalid(&r, &["delta"]);

    let long_key = "k".repeat(256);
    let r = client.post(
        "/v1/orders",
        &order_body(&c, &[line("VAL-1", 1)]),
        Some(&long_key),
    );
    assert_invalid(&r, &["Idempotency-Key", "idempotency"]);

    let stock = client.stock("VAL-1");
    assert_eq!((stock.on_hand, stock.reserved), (10, 0), "nothing reserved");
    assert!(client.list_orders("").is_empty(), "no order was created");
    assert_live(&client);
}

#[test]
fn oversized_body_is_413() {
    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    let big = json!({"name": "x".repeat(65 * 1024), "email": "big@example.com"}).to_string();
    assert!(big.len() > 64 * 1024);
    let r = server.raw_post("/v1/customers", big.as_bytes());
    assert_problem(&r, 413, "payload_too_large");

    let c = client.create_customer();
    let lines: Vec<Value> = (0..100)
        .map(|i| json!({"sku": format!("BIG-{i}"), "qty": 1, "unit_price": 1, "note": "n".repeat(700)}))
        .collect();
    let big = json!({"customer_id": c, "lines": lines}).to_string();
    assert!(big.len() > 64 * 1024);
    let r = server.raw_post("/v1/orders", big.as_bytes());
    assert_problem(&r, 413, "payload_too_large");
    assert!(client.list_orders("").is_empty(), "no order was created");
    assert_live(&client);
}

#[test]
fn domain_errors() {
    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    let c = client.create_customer();
    client.adjust_stock("DOM-A", 5);
    client.adjust_stock("DOM-C", 5);

    let r = place(
        &client,
        &order_body("cus_doesnotexist", &[line("DOM-A", 1)]),
    );
    assert_problem(&r, 422, "unknown_customer");
    assert_eq!(client.stock("DOM-A").reserved, 0);

    assert_problem(&client.get("/v1/orders/ord_doesnotexist"), 404, "not_found");
    let r = client.post("/v1/orders/ord_doesnotexist/cancel", &json!({}), None);
    assert_problem(&r, 404, "not_found");
    assert_problem(&client.get("/v1/stock/NEVER-STOCKED"), 404, "not_found");
    assert_problem(
        &client.get("/v1/customers/cus_doesnotexist"),
        404,
        "not_found",
    );

    // Every short SKU is listed, a never-stocked one counts as zero, nothing is reserved.
    let body = order_body(&c, &[line("DOM-A", 6), line("DOM-B", 1), line("DOM-C", 1)]);
    let r = place(&client, &body);
    assert_problem(&r, 409, "insufficient_stock");
    let mut skus: Vec<String> = r.body["skus"]
        .as_array()
        .expect("skus")
        .iter()
        .map(|s| s.as_str().expect("sku").to_string())
        .collect();
    skus.sort();
    assert_eq!(skus, ["DOM-A", "DOM-B"], "short SKUs: {}", r.body);
    assert_eq!(client.stock("DOM-A").reserved, 0);
    assert_eq!(client.stock("DOM-C").reserved, 0);
    assert_problem(&client.get("/v1/stock/DOM-B"), 404, "not_found");

    let hundred: Vec<(String, u32, u64)> = (0..100).map(|i| line(&format!("N-{i}"), 1)).collect();
    let r = place(&client, &order_body(&c, &hundred));
    assert_problem(&r, 409, "insufficient_stock");
    assert_eq!(
        r.body["skus"].as_array().map(Vec::len),
        Some(100),
        "all 100 short"
    );

    // An adjustment may not take on_hand below reserved.
    client.adjust_stock("DOM-A", 5);
    let body = order_body(&c, &[line("DOM-A", 6)]);
    let r = place(&client, &body);
    assert_eq!(r.status, 201, "{}", r.body);
    check_order(&r.body, &body);
    let r = client.post(
        "/v1/stock/DOM-A/adjustments",
        &json!({"delta": -5, "reason": "shrinkage"}),
        None,
    );
    assert_problem(&r, 409, "insufficient_stock");
    let stock = client.stock("DOM-A");
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (10, 6, 4));
    let stock = client.adjust_stock("DOM-A", -4);
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (6, 6, 0));
    assert_live(&client);
}

#[test]
fn order_lifecycle_and_listing() {
    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    let (c1, c2) = (client.create_customer(), client.create_customer());
    let (status, cust) = client.get_json(&format!("/v1/customers/{c1}"));
    assert_eq!(status, 200, "{cust}");
    assert_eq!(cust["id"], c1.as_str());
    assert!(cust["email"]
        .as_str()
        .is_some_and(|e| e.ends_with("@example.com")));
    client.adjust_stock("LC-1", 100);
    client.adjust_stock("LC-2", 100);

    let mut ids = Vec::new();
    for qty in 1..=3 {
        let body = order_body(&c1, &[line("LC-1", qty), line("LC-2", 1)]);
        let r = place(&client, &body);
        assert_eq!(r.status, 201, "{}", r.body);
        check_order(&r.body, &body);
        let id = r.body["id"].as_str().expect("id").to_string();
        let path = format!("/v1/orders/{id}");
        let location = r.location.clone().expect("201 has Location");
        assert!(
            location == path || location == format!("{}{path}", server.base()),
            "Location {location} should point at {path}"
        );
        let (status, got) = client.get_json(&path);
        assert_eq!(status, 200, "{got}");
        assert_eq!(norm_lines(&got), norm_lines(&body));
        assert_eq!(got["shipments"], json!([]), "{got}");
        let history = got["history"].as_array().expect("history");
        assert!(history.iter().any(|h| h["status"] == "confirmed"), "{got}");
        ids.push(id);
    }
    let other = place(&client, &order_body(&c2, &[line("LC-1", 1)]));
    assert_eq!(other.status, 201, "{}", other.body);
    let stock = client.stock("LC-1");
    assert_eq!(stock.reserved, 1 + 2 + 3 + 1);

    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let listed: Vec<String> = client
        .list_orders(&format!("customer_id={c1}"))
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(listed, newest_first, "customer filter, newest first");

    let (status, page1) = client.get_json(&format!("/v1/orders?customer_id={c1}&limit=2"));
    assert_eq!(status, 200, "{page1}");
    let page1_ids: Vec<&str> = page1["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["id"].as_str().expect("id"))
        .collect();
    assert_eq!(page1_ids, [ids[2].as_str(), ids[1].as_str()], "first page");
    let next = page1["next"].as_str().expect("a cursor when more remain");
    let (status, page2) = client.get_json(&format!(
        "/v1/orders?customer_id={c1}&limit=2&after={}",
        pct(next)
    ));
    assert_eq!(status, 200, "{page2}");
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1), "{page2}");
    assert_eq!(page2["items"][0]["id"], ids[0].as_str());
    assert_eq!(page2["next"], Value::Null, "last page");
    for limit in ["0", "1001"] {
        let r = client.get(&format!("/v1/orders?limit={limit}"));
        assert_invalid(&r, &["limit"]);
    }

    let cancel = format!("/v1/orders/{}/cancel", ids[0]);
    for _ in 0..2 {
        let (status, got) = client.post_json(&cancel, &json!({"reason": "changed mind"}), None);
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["status"], "cancelled");
    }
    assert_eq!(client.stock("LC-1").reserved, 2 + 3 + 1, "released once");
    assert_eq!(client.stock("LC-2").reserved, 2);
    let (_, got) = client.get_json(&format!("/v1/orders/{}", ids[0]));
    assert_eq!(got["status"], "cancelled");
    let history = got["history"].as_array().expect("history");
    assert!(history.iter().any(|h| h["status"] == "cancelled"), "{got}");

    let cancelled = client.list_orders("status=cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["id"], ids[0].as_str());
    let confirmed = client.list_orders(&format!("customer_id={c1}&status=confirmed"));
    assert_eq!(confirmed.len(), 2);
    assert_eq!(client.list_orders("").len(), 4);
    assert_live(&client);
}

#[test]
fn sigterm_exits_cleanly_and_keeps_data() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = unique("term");
    let (secret, customer, body, order) = {
        let mut server = Server::start_in(dir.path(), 2);
        let client = server.client();
        let customer = client.create_customer();
        client.adjust_stock("TERM-1", 20);
        let body = order_body(&customer, &[line("TERM-1", 3)]);
        let r = client.post("/v1/orders", &body, Some(&key));
        assert_eq!(r.status, 201, "{}", r.body);
        // SAFETY: plain syscall on the pid of our own child process.
        let rc = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let status = server.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "exit status after SIGTERM: {status}");
        (server.admin_key().to_string(), customer, body, r.body)
    };

    let server = Server::start_in(dir.path(), 2);
    assert_eq!(server.admin_key(), secret, "admin.key kept");
    let client = server.client();
    let id = order["id"].as_str().expect("id");
    let (status, got) = client.get_json(&format!("/v1/orders/{id}"));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], "confirmed");
    assert_eq!(norm_lines(&got), norm_lines(&body));
    let stock = client.stock("TERM-1");
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (20, 3, 17)
    );
    let (status, cust) = client.get_json(&format!("/v1/customers/{customer}"));
    assert_eq!(status, 200, "{cust}");
    let replay = client.post("/v1/orders", &body, Some(&key));
    assert_eq!(replay.status, 201);
    assert_eq!(
        replay.body, order,
        "the idempotency key survived the shutdown"
    );
    assert_eq!(client.stock("TERM-1").reserved, 3);
}

//! Mass assignment: fields a client may not set (server-chosen ids, statuses, totals, stock
//! counters, key roles and secrets, prices of placed orders) are refused with 400
//! `invalid_request` naming the field, and the refused request changes nothing.

use serde_json::{json, Value};

use crate::support::{assert_problem, serial, unique, Client, Reply, Server, Stock};

/// Asserts 400 `invalid_request` with `param` equal to `param`.
fn assert_refused(reply: &Reply, param: &str, what: &str) {
    assert_problem(reply, 400, "invalid_request");
    assert_eq!(
        reply.body["param"], param,
        "{what}: param should name {param}: {}",
        reply.body
    );
}

/// `body` with `field` set to `value` at the top level.
fn with(body: &Value, field: &str, value: Value) -> Value {
    let mut out = body.clone();
    out[field] = value;
    out
}

/// Everything an admin can see that a refused request might have changed.
#[derive(Debug, PartialEq)]
struct World {
    stock: Vec<Stock>,
    /// Every order, as read back (status, lines with prices and shipped quantities, total…).
    orders: Vec<Value>,
    /// Every key (without secrets).
    keys: Vec<Value>,
    /// How many audit entries record a mutation (refusals are not audited as mutations, and
    /// `customer.create` is the only trace of a new customer: there is no customer list).
    mutations: usize,
}

fn world(admin: &Client, skus: &[&str]) -> World {
    let mut orders = admin.list_orders("");
    orders.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let (status, keys) = admin.get_json("/v1/keys?limit=1000");
    assert_eq!(status, 200, "{keys}");
    World {
        stock: skus.iter().map(|sku| admin.stock(sku)).collect(),
        orders,
        keys: keys["items"].as_array().expect("items").clone(),
        mutations: audit_mutations(admin),
    }
}

/// Audit entries of mutations (everything but authentication refusals).
fn audit_mutations(admin: &Client) -> usize {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(cursor) => format!("/v1/audit?limit=1000&after={cursor}"),
            None => "/v1/audit?limit=1000".to_string(),
        };
        let (status, page) = admin.get_json(&path);
        assert_eq!(status, 200, "{page}");
        count += page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| !e["action"].as_str().unwrap_or("").starts_with("auth."))
            .count();
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return count,
        }
    }
}

#[test]
fn fields_the_server_owns_are_refused_and_nothing_changes() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let sku = "MASS-1";
    admin.adjust_stock(sku, 50);
    let customer = admin.create_customer();
    let order_body =
        json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 3, "unit_price": 700}]});
    let (status, placed) = admin.post_json("/v1/orders", &order_body, None);
    assert_eq!(status, 201, "{placed}");
    let order_id = placed["id"].as_str().expect("id").to_string();
    let (status, shipped_order) = admin.post_json("/v1/orders", &order_body, None);
    assert_eq!(status, 201, "{shipped_order}");
    let shipped_order_id = shipped_order["id"].as_str().expect("id").to_string();
    let (status, shipment) = admin.post_json(
        &format!("/v1/orders/{shipped_order_id}/shipments"),
        &json!({"carrier": "dhl", "lines": [{"sku": sku, "qty": 1}]}),
        None,
    );
    assert_eq!(status, 201, "{shipment}");
    let shipment_id = shipment["id"].as_str().expect("id").to_string();
    let (status, key) = admin.post_json(
        "/v1/keys",
        &json!({"name": "frontend", "role": "frontend"}),
        None,
    );
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().expect("id").to_string();
    let frontend = admin.with_key(key["secret"].as_str().expect("secret"));

    let before = world(&admin, &[sku]);
    let refused = std::cell::Cell::new(0);
    // `body` null: no body.
    let refuse = |client: &Client, method: &str, path: &str, body: Value, param: &str| {
        let reply = client.call(method, path, (!body.is_null()).then_some(&body), None);
        let what = format!("{method} {path} {body}");
        assert_refused(&reply, param, &what);
        assert_eq!(world(&admin, &[sku]), before, "{what} changed something");
        refused.set(refused.get() + 1);
    };

    // Orders: the server sets id, status, totals, times and shipped quantities.
    let fake_order = "ord_00000000000000aa";
    for (field, value) in [
        ("id", json!(fake_order)),
        ("status", json!("shipped")),
        ("total", json!(1)),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("updated_at", json!("2020-01-01T00:00:00Z")),
        ("shipments", json!([])),
        ("history", json!([])),
        ("role", json!("admin")),
        ("secret", json!("odk_x")),
    ] {
        let body = with(&order_body, field, value);
        refuse(&admin, "POST", "/v1/orders", body.clone(), field);
        refuse(&frontend, "POST", "/v1/orders", body, field);
    }
    for (field, value) in [("shipped_qty", json!(3)), ("status", json!("shipped"))] {
        let mut body = order_body.clone();
        body["lines"][0][field] = value;
        refuse(
            &admin,
            "POST",
            "/v1/orders",
            body,
            &format!("lines[0].{field}"),
        );
    }
    let (status, _) = admin.get_json(&format!("/v1/orders/{fake_order}"));
    assert_eq!(status, 404, "the smuggled order id names no order");

    // Stock: only a delta (and its reason) may be sent; the counters are the server's.
    let adjust = json!({"delta": 1, "reason": "count"});
    for (field, value) in [
        ("reserved", json!(0)),
        ("on_hand", json!(1_000_000)),
        ("available", json!(1_000_000)),
        ("sku", json!("OTHER")),
        ("role", json!("admin")),
    ] {
        refuse(
            &admin,
            "POST",
            &format!("/v1/stock/{sku}/adjustments"),
            with(&adjust, field, value),
            field,
        );
    }

    // Customers: id and created_at are the server's.
    let n = unique("mass");
    let new_customer = json!({"name": "Mass Tester", "email": format!("{n}@example.com")});
    let fake_customer = "cus_00000000000000aa";
    for (field, value) in [
        ("id", json!(fake_customer)),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("role", json!("admin")),
        ("secret", json!("odk_x")),
        ("customer_id", json!(customer)),
    ] {
        refuse(
            &frontend,
            "POST",
            "/v1/customers",
            with(&new_customer, field, value),
            field,
        );
    }
    let (status, _) = admin.get_json(&format!("/v1/customers/{fake_customer}"));
    assert_eq!(status, 404, "the smuggled customer id names no customer");

    // Cancel: the body holds a reason only; the status is the route's to set.
    let cancel = format!("/v1/orders/{order_id}/cancel");
    for (field, value) in [
        ("status", json!("cancelled")),
        ("status", json!("delivered")),
        ("id", json!(fake_order)),
        ("role", json!("admin")),
    ] {
        refuse(
            &frontend,
            "POST",
            &cancel,
            json!({"reason": "changed my mind", field: value}),
            field,
        );
        refuse(&admin, "POST", &cancel, json!({field: value}), field);
    }

    // Shipments: tracking number and status are the server's.
    let ship = format!("/v1/orders/{order_id}/shipments");
    let ship_body = json!({"carrier": "dhl", "lines": [{"sku": sku, "qty": 1}]});
    for (field, value) in [
        ("tracking_number", json!("TRACK-1")),
        ("status", json!("delivered")),
        ("id", json!("shp_00000000000000aa")),
        ("order_id", json!(shipped_order_id)),
        ("events", json!([])),
        ("secret", json!("odk_x")),
    ] {
        refuse(&admin, "POST", &ship, with(&ship_body, field, value), field);
    }
    let mut body = ship_body.clone();
    body["lines"][0]["unit_price"] = json!(1);
    refuse(&admin, "POST", &ship, body, "lines[0].unit_price");
    let events = format!("/v1/shipments/{shipment_id}/events");
    for (field, value) in [
        ("tracking_number", json!("TRACK-2")),
        ("id", json!("shp_00000000000000aa")),
        ("order_id", json!(order_id)),
    ] {
        refuse(
            &admin,
            "POST",
            &events,
            json!({"status": "in_transit", field: value}),
            field,
        );
    }

    // Keys: id, secret and created_at are the server's.
    let new_key = json!({"name": "smuggler", "role": "analyst"});
    let chosen_secret = format!("odk_{}", "ab".repeat(32));
    for (field, value) in [
        ("id", json!(key_id)),
        ("secret", json!(chosen_secret)),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("secret_sha256", json!("00")),
    ] {
        refuse(
            &admin,
            "POST",
            "/v1/keys",
            with(&new_key, field, value),
            field,
        );
    }
    let (status, _) = admin.with_key(&chosen_secret).get_json("/v1/orders");
    assert_eq!(status, 401, "a secret chosen by the client never works");

    // The query string is no way around: a route that takes no parameters refuses them
    // instead of ignoring them (a 200 would look as if `on_hand=…` had been taken).
    for (method, path, body, param) in [
        (
            "POST",
            format!("/v1/stock/{sku}/adjustments?on_hand=1000000"),
            adjust.clone(),
            "on_hand",
        ),
        (
            "POST",
            "/v1/orders?status=shipped".to_string(),
            order_body.clone(),
            "status",
        ),
        (
            "POST",
            format!("{cancel}?status=delivered"),
            Value::Null,
            "status",
        ),
        (
            "POST",
            format!("{ship}?tracking_number=T1"),
            ship_body.clone(),
            "tracking_number",
        ),
        (
            "POST",
            format!("{events}?status=delivered"),
            json!({"status": "in_transit"}),
            "status",
        ),
        (
            "POST",
            format!("/v1/customers?id={fake_customer}"),
            new_customer.clone(),
            "id",
        ),
        (
            "POST",
            "/v1/keys?role=admin".to_string(),
            new_key.clone(),
            "role",
        ),
        (
            "DELETE",
            format!("/v1/keys/{key_id}?dry_run=true"),
            Value::Null,
            "dry_run",
        ),
    ] {
        refuse(&admin, method, &path, body, param);
    }

    assert!(refused.get() >= 50, "{} refusals checked", refused.get());

    // A field sent twice is refused, so that no parser in between can see the other value.
    let other = admin.create_customer();
    let before = world(&admin, &[sku]);
    for (path, text, param) in [
        (
            format!("/v1/stock/{sku}/adjustments"),
            r#"{"delta": 1, "reason": "r", "delta": -1000}"#.to_string(),
            "delta",
        ),
        (
            "/v1/orders".to_string(),
            format!(
                r#"{{"customer_id": "{customer}", "lines": [{{"sku": "{sku}", "qty": 1, "unit_price": 5, "unit_price": 0}}]}}"#
            ),
            "lines[0].unit_price",
        ),
        (
            "/v1/orders".to_string(),
            format!(
                r#"{{"customer_id": "{customer}", "lines": [{{"sku": "{sku}", "qty": 1, "unit_price": 5}}], "customer_id": "{other}"}}"#
            ),
            "customer_id",
        ),
        (
            "/v1/keys".to_string(),
            r#"{"name": "twice", "role": "analyst", "role": "admin"}"#.to_string(),
            "role",
        ),
    ] {
        let reply = admin.send_text("POST", &path, "application/json", &text);
        assert_refused(&reply, param, &text);
        assert_eq!(world(&admin, &[sku]), before, "{text} changed something");
    }

    // Nothing of the above touched the orders it named.
    let (status, order) = admin.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total"], 2100);
    assert_eq!(order["shipments"], json!([]));
}

#[test]
fn placed_orders_and_keys_cannot_be_rewritten() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let sku = "MASS-2";
    admin.adjust_stock(sku, 20);
    let customer = admin.create_customer();
    let body =
        json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 2, "unit_price": 1234}]});
    let (status, placed) = admin.post_json("/v1/orders", &body, Some("mass-price"));
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_str().expect("id").to_string();
    let (status, key) = admin.post_json(
        "/v1/keys",
        &json!({"name": "watcher", "role": "analyst"}),
        None,
    );
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().expect("id").to_string();
    let analyst = admin.with_key(key["secret"].as_str().expect("secret"));
    let before = world(&admin, &[sku]);

    // No route changes an order's lines or prices.
    let cheaper = json!({"lines": [{"sku": sku, "qty": 2, "unit_price": 1}], "total": 2});
    for method in ["PUT", "PATCH", "POST"] {
        let reply = admin.call(method, &format!("/v1/orders/{id}"), Some(&cheaper), None);
        assert_problem(&reply, 405, "method_not_allowed");
    }
    let reply = admin.call("DELETE", &format!("/v1/orders/{id}"), None, None);
    assert_problem(&reply, 405, "method_not_allowed");
    // Nor does replaying the placement with other prices under the same Idempotency-Key.
    let mut repriced = body.clone();
    repriced["lines"][0]["unit_price"] = json!(1);
    let reply = admin.post("/v1/orders", &repriced, Some("mass-price"));
    assert_problem(&reply, 422, "idempotency_conflict");
    // Nor a line-level price on the cancel or shipment routes.
    let reply = admin.post(
        &format!("/v1/orders/{id}/cancel"),
        &json!({"unit_price": 1}),
        None,
    );
    assert_refused(&reply, "unit_price", "cancel with a price");

    // No route changes a key: its role stays what admin gave it.
    for method in ["PUT", "PATCH", "POST"] {
        let reply = analyst.call(
            method,
            &format!("/v1/keys/{key_id}"),
            Some(&json!({"role": "admin"})),
            None,
        );
        assert_problem(&reply, 405, "method_not_allowed");
    }
    // A non-admin key cannot mint itself a better key.
    let reply = analyst.post("/v1/keys", &json!({"name": "me", "role": "admin"}), None);
    assert_problem(&reply, 403, "forbidden");
    let (status, _) = analyst.get_json("/v1/keys");
    assert_eq!(status, 403, "the analyst key is still an analyst key");

    assert_eq!(world(&admin, &[sku]), before, "nothing changed");
    let (status, order) = admin.get_json(&format!("/v1/orders/{id}"));
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["lines"][0]["unit_price"], 1234);
    assert_eq!(order["total"], 2468);
    assert_eq!(order["status"], "confirmed");
}

//! `Idempotency-Key` on every mutation other than a placement (API.md "Idempotency keys and
//! safe retries"): stock adjustments, customers, shipments, shipment events, cancels and change
//! requests. The same key and body twice answer the same (status, body, `Location`) and apply
//! once, with one audit entry; another body, route or object with the key is 422
//! `idempotency_conflict`; both still hold after a kill -9 and a restart. Over TCP, the same for
//! `ADJUST_STOCK` through `orderd-client`.

use orderd_client::{Client as TcpClient, ClientConfig, ClientError};
use orderd_proto::tcp as msg;
use serde_json::{json, Value};

use crate::support::{assert_problem, order_body, serial, unique, Client, Reply, Server};

/// Audit entries of `action` (on `target` when given).
fn audited(admin: &Client, action: &str, target: Option<&str>) -> usize {
    let (status, page) = admin.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == action && target.is_none_or(|t| e["target"] == t))
        .count()
}

/// `second` answers exactly as `first`: status, body and `Location`.
fn assert_same(first: &Reply, second: &Reply, what: &str) {
    assert_eq!(
        (second.status, &second.body, &second.location),
        (first.status, &first.body, &first.location),
        "{what}: a replay answers as the first time"
    );
}

fn stock_path(sku: &str) -> String {
    format!("/v1/stock/{sku}/adjustments")
}

#[test]
fn a_stock_adjustment_with_a_key_is_applied_once_and_replayed_across_restarts() {
    let _serial = serial();
    let mut server = Server::start(4);
    let admin = server.client();
    let sku = "IDEM-STOCK-1";
    let key = unique("adjust");
    let body = json!({"delta": 5, "reason": "receive"});
    let first = admin.post(&stock_path(sku), &body, Some(&key));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["on_hand"], 5, "{}", first.body);
    assert_same(
        &first,
        &admin.post(&stock_path(sku), &body, Some(&key)),
        "adjust",
    );
    assert_eq!(admin.stock(sku).on_hand, 5, "counted once");
    // Another adjustment without a key; the replay still answers the stock the first left.
    assert_eq!(admin.adjust_stock(sku, 1).on_hand, 6);
    assert_same(
        &first,
        &admin.post(&stock_path(sku), &body, Some(&key)),
        "adjust",
    );
    assert_eq!(admin.stock(sku).on_hand, 6);

    // The key with another body, on another SKU, or on another route: conflicts, nothing done.
    let other = json!({"delta": 7, "reason": "receive"});
    assert_problem(
        &admin.post(&stock_path(sku), &other, Some(&key)),
        422,
        "idempotency_conflict",
    );
    for other_sku in ["IDEM-STOCK-2", "IDEM-STOCK-3", "IDEM-STOCK-4"] {
        assert_problem(
            &admin.post(&stock_path(other_sku), &body, Some(&key)),
            422,
            "idempotency_conflict",
        );
        assert_eq!(admin.get(&format!("/v1/stock/{other_sku}")).status, 404);
    }
    let customer = json!({"name": "Key Reuser", "email": "reuse@example.com"});
    assert_problem(
        &admin.post("/v1/customers", &customer, Some(&key)),
        422,
        "idempotency_conflict",
    );
    assert_eq!(admin.stock(sku).on_hand, 6);
    // Keys are scoped to the API key: another key's same Idempotency-Key is its own request.
    let (status, logistics) = admin.post_json(
        "/v1/keys",
        &json!({"name": unique("logistics"), "role": "logistics"}),
        None,
    );
    assert_eq!(status, 201, "{logistics}");
    let logistics = admin.with_key(logistics["secret"].as_str().unwrap());
    let theirs = logistics.post(&stock_path(sku), &body, Some(&key));
    assert_eq!(
        (theirs.status, theirs.body["on_hand"].clone()),
        (200, json!(11))
    );
    assert_eq!(audited(&admin, "stock.adjust", Some(sku)), 3);

    server.restart();
    let admin = server.client(); // the HTTP port changes on a restart
    assert_same(
        &first,
        &admin.post(&stock_path(sku), &body, Some(&key)),
        "adjust after a restart",
    );
    assert_problem(
        &admin.post(&stock_path(sku), &other, Some(&key)),
        422,
        "idempotency_conflict",
    );
    assert_eq!(admin.stock(sku).on_hand, 11, "nothing applied again");
    assert_eq!(
        audited(&admin, "stock.adjust", Some(sku)),
        3,
        "a replay writes no audit entry"
    );
}

#[test]
fn a_customer_with_a_key_is_created_once_and_replayed_across_restarts() {
    let _serial = serial();
    let mut server = Server::start(4);
    let admin = server.client();
    let key = unique("customer");
    let body = json!({"name": "Ada Idem", "email": "ada@example.com", "phone": "+44 20 7946 0000"});
    let first = admin.post("/v1/customers", &body, Some(&key));
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        first.location.as_deref(),
        Some(format!("/v1/customers/{id}").as_str())
    );
    for _ in 0..2 {
        assert_same(
            &first,
            &admin.post("/v1/customers", &body, Some(&key)),
            "create",
        );
    }
    let other = json!({"name": "Ada Other", "email": "ada@example.com"});
    assert_problem(
        &admin.post("/v1/customers", &other, Some(&key)),
        422,
        "idempotency_conflict",
    );
    assert_eq!(audited(&admin, "customer.create", None), 1, "one customer");

    server.restart();
    let admin = server.client(); // the HTTP port changes on a restart
    assert_same(
        &first,
        &admin.post("/v1/customers", &body, Some(&key)),
        "create after a restart",
    );
    assert_problem(
        &admin.post("/v1/customers", &other, Some(&key)),
        422,
        "idempotency_conflict",
    );
    let (status, read) = admin.get_json(&format!("/v1/customers/{id}"));
    assert_eq!((status, &read["name"]), (200, &json!("Ada Idem")));
    assert_eq!(
        audited(&admin, "customer.create", None),
        1,
        "still one customer"
    );
}

#[test]
fn shipments_and_shipment_events_with_a_key_are_applied_once_and_replayed_across_restarts() {
    let _serial = serial();
    let mut server = Server::start(4);
    let admin = server.client();
    let sku = "IDEM-SHIP-1";
    admin.adjust_stock(sku, 10);
    let customer = admin.create_customer();
    let (status, order) = admin.post_json(
        "/v1/orders",
        &order_body(&customer, &[(sku.to_string(), 3, 500)]),
        None,
    );
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    let ship_path = format!("/v1/orders/{order_id}/shipments");

    let ship_key = unique("ship");
    let ship_body = json!({"carrier": "dhl", "lines": [{"sku": sku, "qty": 1}]});
    let shipped = admin.post(&ship_path, &ship_body, Some(&ship_key));
    assert_eq!(shipped.status, 201, "{}", shipped.body);
    let shipment_id = shipped.body["id"].as_str().unwrap().to_string();
    assert_same(
        &shipped,
        &admin.post(&ship_path, &ship_body, Some(&ship_key)),
        "ship",
    );
    let stock = admin.stock(sku);
    assert_eq!(
        (stock.on_hand, stock.reserved),
        (9, 2),
        "one unit shipped once"
    );
    let other = json!({"carrier": "dhl", "lines": [{"sku": sku, "qty": 2}]});
    assert_problem(
        &admin.post(&ship_path, &other, Some(&ship_key)),
        422,
        "idempotency_conflict",
    );

    let event_path = format!("/v1/shipments/{shipment_id}/events");
    let transit_key = unique("transit");
    let transit = json!({"status": "in_transit", "note": "left the depot"});
    let moving = admin.post(&event_path, &transit, Some(&transit_key));
    assert_eq!(moving.status, 200, "{}", moving.body);
    assert_same(
        &moving,
        &admin.post(&event_path, &transit, Some(&transit_key)),
        "event",
    );
    assert_problem(
        &admin.post(
            &event_path,
            &json!({"status": "failed"}),
            Some(&transit_key),
        ),
        422,
        "idempotency_conflict",
    );
    let delivered_key = unique("delivered");
    let delivered = json!({"status": "delivered"});
    let done = admin.post(&event_path, &delivered, Some(&delivered_key));
    assert_eq!(done.status, 200, "{}", done.body);
    // Without a key a second `delivered` is 409; with the key it is the first answer again.
    assert_same(
        &done,
        &admin.post(&event_path, &delivered, Some(&delivered_key)),
        "event",
    );
    let statuses = |shipment: &Value| -> Vec<String> {
        shipment["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(statuses(&done.body), ["shipped", "in_transit", "delivered"]);

    server.restart();
    let admin = server.client(); // the HTTP port changes on a restart
                                 // Each replay answers the shipment as its first request was answered.
    assert_same(
        &shipped,
        &admin.post(&ship_path, &ship_body, Some(&ship_key)),
        "ship after a restart",
    );
    assert_same(
        &moving,
        &admin.post(&event_path, &transit, Some(&transit_key)),
        "event after a restart",
    );
    assert_same(
        &done,
        &admin.post(&event_path, &delivered, Some(&delivered_key)),
        "event after a restart",
    );
    assert_problem(
        &admin.post(&ship_path, &other, Some(&ship_key)),
        422,
        "idempotency_conflict",
    );
    let (status, read) = admin.get_json(&format!("/v1/shipments/{shipment_id}"));
    assert_eq!(status, 200, "{read}");
    assert_eq!(statuses(&read), ["shipped", "in_transit", "delivered"]);
    let (_, order) = admin.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(order["shipments"], json!([shipment_id]), "one shipment");
    let stock = admin.stock(sku);
    assert_eq!((stock.on_hand, stock.reserved), (9, 2));
    assert_eq!(audited(&admin, "shipment.create", Some(&shipment_id)), 1);
    assert_eq!(audited(&admin, "shipment.event", Some(&shipment_id)), 2);
}

#[test]
fn a_cancel_with_a_key_is_replayed_and_the_key_binds_to_its_order() {
    let _serial = serial();
    let mut server = Server::start(4);
    let admin = server.client();
    let sku = "IDEM-CANCEL-1";
    admin.adjust_stock(sku, 10);
    let customer = admin.create_customer();
    let mut orders = Vec::new();
    for _ in 0..4 {
        let (status, order) = admin.post_json(
            "/v1/orders",
            &order_body(&customer, &[(sku.to_string(), 2, 300)]),
            None,
        );
        assert_eq!(status, 201, "{order}");
        orders.push(order["id"].as_str().unwrap().to_string());
    }
    let path = |order: &str| format!("/v1/orders/{order}/cancel");
    let key = unique("cancel");
    let body = json!({"reason": "changed my mind"});
    let first = admin.post(&path(&orders[0]), &body, Some(&key));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["status"], "cancelled");
    assert_same(
        &first,
        &admin.post(&path(&orders[0]), &body, Some(&key)),
        "cancel",
    );
    assert_problem(
        &admin.post(&path(&orders[0]), &json!({"reason": "other"}), Some(&key)),
        422,
        "idempotency_conflict",
    );
    // The same key and body on other orders: refused, and they stay confirmed.
    for other in &orders[1..] {
        assert_problem(
            &admin.post(&path(other), &body, Some(&key)),
            422,
            "idempotency_conflict",
        );
        let (_, order) = admin.get_json(&format!("/v1/orders/{other}"));
        assert_eq!(order["status"], "confirmed", "{order}");
    }
    assert_eq!(
        admin.stock(sku).reserved,
        6,
        "the cancelled order's 2 units came back once"
    );

    server.restart();
    let admin = server.client(); // the HTTP port changes on a restart
    assert_same(
        &first,
        &admin.post(&path(&orders[0]), &body, Some(&key)),
        "cancel after a restart",
    );
    assert_problem(
        &admin.post(&path(&orders[1]), &body, Some(&key)),
        422,
        "idempotency_conflict",
    );
    assert_eq!(admin.stock(sku).reserved, 6);
    assert_eq!(audited(&admin, "order.cancel", Some(&orders[0])), 1);
    assert_eq!(audited(&admin, "order.cancel", None), 1);
}

#[test]
fn a_change_request_with_a_key_is_created_once_and_replayed_across_restarts() {
    let _serial = serial();
    let mut server = Server::start(2);
    let admin = server.client();
    let key = unique("change");
    let body = json!({
        "setting": "http.rate_limit_per_key_per_s",
        "value": 1000,
        "reason": "a ceiling for the launch",
    });
    let first = admin.post("/v1/ops/changes", &body, Some(&key));
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        first.location.as_deref(),
        Some(format!("/v1/ops/changes/{id}").as_str())
    );
    assert_same(
        &first,
        &admin.post("/v1/ops/changes", &body, Some(&key)),
        "request",
    );
    let other = json!({
        "setting": "http.rate_limit_per_key_per_s",
        "value": 2000,
        "reason": "a ceiling for the launch",
    });
    assert_problem(
        &admin.post("/v1/ops/changes", &other, Some(&key)),
        422,
        "idempotency_conflict",
    );
    let changes = |admin: &Client| {
        let (status, page) = admin.get_json("/v1/ops/changes");
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().len()
    };
    assert_eq!(changes(&admin), 1, "one change");

    server.restart();
    let admin = server.client(); // the HTTP port changes on a restart
    assert_same(
        &first,
        &admin.post("/v1/ops/changes", &body, Some(&key)),
        "request after a restart",
    );
    assert_problem(
        &admin.post("/v1/ops/changes", &other, Some(&key)),
        422,
        "idempotency_conflict",
    );
    assert_eq!(changes(&admin), 1, "still one change");
    assert_eq!(audited(&admin, "change.request", Some(&id)), 1);
    // A request without a key is a new change, as before.
    let (status, second) = admin.post_json("/v1/ops/changes", &other, None);
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["id"], first.body["id"]);
}

#[test]
fn a_tcp_stock_adjustment_with_a_key_is_applied_once_and_replayed_across_restarts() {
    let _serial = serial();
    let mut server = Server::start(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tcp = TcpClient::new(
        server.tcp_addr(),
        server.admin_key(),
        ClientConfig::default(),
    );
    let sku = "IDEM-TCP-1".to_string();
    let key = unique("tcp-adjust");
    let adjust = msg::AdjustStock {
        sku: sku.clone(),
        delta: 4,
        reason: "receive".into(),
        idempotency_key: Some(key.clone()),
    };
    let conflict = |result: Result<msg::Stock, ClientError>| match result {
        Err(ClientError::Api(body)) => {
            assert_eq!(
                (body.status, body.code.as_str()),
                (422, "idempotency_conflict")
            )
        }
        other => panic!("expected idempotency_conflict, got {other:?}"),
    };
    let first = rt.block_on(async {
        let first = tcp.adjust_stock_with(&adjust).await.unwrap();
        assert_eq!(first.on_hand, 4);
        assert_eq!(tcp.adjust_stock_with(&adjust).await.unwrap(), first);
        tcp.adjust_stock(&sku, 1, "receive").await.unwrap();
        assert_eq!(tcp.adjust_stock_with(&adjust).await.unwrap(), first);
        let other = msg::AdjustStock {
            delta: 3,
            ..adjust.clone()
        };
        conflict(tcp.adjust_stock_with(&other).await);
        let elsewhere = msg::AdjustStock {
            sku: "IDEM-TCP-2".into(),
            ..adjust.clone()
        };
        conflict(tcp.adjust_stock_with(&elsewhere).await);
        assert_eq!(tcp.get_stock(&sku).await.unwrap().on_hand, 5);
        first
    });
    // The same key over HTTP is another request (another route and body): a conflict.
    let admin = server.client();
    assert_problem(
        &admin.post(
            &stock_path(&sku),
            &json!({"delta": 4, "reason": "receive"}),
            Some(&key),
        ),
        422,
        "idempotency_conflict",
    );

    server.restart();
    let admin = server.client(); // the HTTP port changes on a restart
    rt.block_on(async {
        assert_eq!(tcp.adjust_stock_with(&adjust).await.unwrap(), first);
        conflict(
            tcp.adjust_stock_with(&msg::AdjustStock {
                delta: 3,
                ..adjust.clone()
            })
            .await,
        );
        assert_eq!(
            tcp.get_stock(&sku).await.unwrap().on_hand,
            5,
            "applied once"
        );
    });
    assert_eq!(audited(&admin, "stock.adjust", Some(&sku)), 2);
}

#[test]
fn keys_past_their_in_memory_window_are_answered_from_disk_across_a_restart() {
    let _serial = serial();
    let mut server = Server::start_with_env(
        2,
        &[
            ("ORDERD__ENGINE__IDEMPOTENCY_HOT_S", "1"),
            ("ORDERD__ENGINE__COLD_SWEEP_INTERVAL_MS", "100"),
        ],
    );
    let client = server.client();
    let sku = unique("IDEM-DISK");
    client.adjust_stock(&sku, 100);
    let customer = client.create_customer();
    let body =
        json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 2, "unit_price": 500}]});
    let keys: Vec<String> = (0..20).map(|_| unique("disk-key")).collect();
    let first: Vec<Reply> = keys
        .iter()
        .map(|key| client.post("/v1/orders", &body, Some(key)))
        .collect();
    for reply in &first {
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    // Past idempotency_hot_s (1 s) and a few sweeps: the keys live on disk.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for (key, reply) in keys.iter().zip(&first) {
        assert_same(
            reply,
            &client.post("/v1/orders", &body, Some(key)),
            "a retry from disk",
        );
    }
    let other =
        json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 3, "unit_price": 500}]});
    assert_problem(
        &client.post("/v1/orders", &other, Some(&keys[0])),
        422,
        "idempotency_conflict",
    );
    // Nothing was placed twice: 20 orders of 2 units.
    assert_eq!(client.stock(&sku).available, 100 - 40);
    server.restart();
    let client = server.client();
    for (key, reply) in keys.iter().zip(&first) {
        assert_same(
            reply,
            &client.post("/v1/orders", &body, Some(key)),
            "a retry after a restart",
        );
    }
    assert_eq!(client.stock(&sku).available, 100 - 40);
}

//! Concurrency: racing placements on one hot SKU, cross-shard orders, cancellations and
//! idempotent replays under parallel load — no overselling, no lost or double reservations.

use crate::support::{
    assert_problem, assert_spread, check_order, check_rejection, classify, code, norm_lines,
    order_body, place_definitive, qty_by_sku, random_order, run_parallel, serial, unique, Client,
    Outcome, Server,
};
use serde_json::{json, Value};
use std::collections::HashMap;

#[test]
fn hot_sku_never_oversells() {
    let _serial = serial();
    let server = Server::start(4);
    let client = server.client();
    let sku = "HOT-1";
    let customer = client.create_customer();
    let stock = client.adjust_stock(sku, 500);
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (500, 0, 500)
    );

    let body = order_body(&customer, &[(sku.to_string(), 1, 250)]);
    let outcomes = run_parallel(64, 2000, |_| {
        let key = unique("hot");
        classify(client.send("POST", "/v1/orders", Some(&body), Some(&key)))
    });

    let mut confirmed = 0;
    let mut rejected = 0;
    for outcome in &outcomes {
        match outcome {
            Outcome::Confirmed(order) => {
                check_order(order, &body);
                confirmed += 1;
            }
            Outcome::Rejected(problem) => {
                let skus = problem["skus"].as_array().expect("skus array");
                assert!(
                    skus.iter().any(|s| s == sku),
                    "409 must list {sku}: {problem}"
                );
                rejected += 1;
            }
            other => panic!("only 201 and 409 are allowed here, got {other:?}"),
        }
    }
    assert_eq!(confirmed, 500, "exactly the stock can be sold");
    assert_eq!(rejected, 1500, "everything else is insufficient_stock");

    let stock = client.stock(sku);
    assert_eq!(stock.on_hand, 500);
    assert_eq!(stock.reserved, 500);
    assert_eq!(stock.available, 0);

    let listed = client.list_orders(&format!("customer_id={customer}"));
    assert_eq!(listed.len(), 500, "a failed placement creates no order");
}

#[test]
fn cross_shard_orders_reserve_all_or_nothing() {
    let _serial = serial();
    let server = Server::start(4);
    let client = server.client();
    let skus: Vec<String> = (0..8).map(|i| format!("XS-{i}")).collect();
    for sku in &skus {
        client.adjust_stock(sku, 100);
    }
    assert_spread(&client);
    let customer = client.create_customer();

    let results = run_parallel(64, 1000, |_| {
        let body = random_order(&mut rand::thread_rng(), &customer, &skus, 3..=3, 1..=3);
        let key = unique("xs");
        let outcome = classify(client.send("POST", "/v1/orders", Some(&body), Some(&key)));
        (body, outcome)
    });

    let mut confirmed: Vec<(Value, Value)> = Vec::new();
    let mut rejected = 0;
    for (body, outcome) in &results {
        assert_eq!(norm_lines(body).len(), 3, "generator: 3 distinct SKUs");
        match outcome {
            Outcome::Confirmed(order) => {
                check_order(order, body);
                confirmed.push((body.clone(), order.clone()));
            }
            Outcome::Rejected(problem) => {
                check_rejection(problem, body);
                rejected += 1;
            }
            other => panic!("only 201 and 409 are allowed here, got {other:?}"),
        }
    }
    assert_eq!(confirmed.len() + rejected, 1000);
    assert!(!confirmed.is_empty(), "some orders must be confirmed");
    assert!(rejected > 0, "800 units cannot satisfy 1,000 orders");

    let orders: Vec<Value> = confirmed.iter().map(|(_, o)| o.clone()).collect();
    check_stock(&client, &skus, 100, &orders);

    // Every confirmed order is readable with all its lines; no failed one left an order.
    run_parallel(16, orders.len(), |i| {
        let id = orders[i]["id"].as_str().expect("id");
        let (status, got) = client.get_json(&format!("/v1/orders/{id}"));
        assert_eq!(status, 200, "GET {id}: {got}");
        assert_eq!(got["status"], "confirmed");
        assert_eq!(norm_lines(&got), norm_lines(&orders[i]), "order {id} lines");
        assert_eq!(got["total"], orders[i]["total"], "order {id} total");
    });
    let listed = client.list_orders(&format!("customer_id={customer}"));
    assert_eq!(listed.len(), orders.len(), "listed orders vs confirmed");

    // Cancel every other confirmed order, in parallel: their reservations come back exactly.
    let cancel: Vec<&Value> = orders.iter().step_by(2).collect();
    let kept: Vec<Value> = orders.iter().skip(1).step_by(2).cloned().collect();
    run_parallel(16, cancel.len(), |i| {
        let id = cancel[i]["id"].as_str().expect("id");
        let (status, got) = client.post_json(&format!("/v1/orders/{id}/cancel"), &json!({}), None);
        assert_eq!(status, 200, "cancel {id}: {got}");
        assert_eq!(got["status"], "cancelled", "cancel {id}: {got}");
    });
    check_stock(&client, &skus, 100, &kept);

    // Cancelling again is 200 and releases nothing more.
    let first = cancel[0]["id"].as_str().expect("id");
    let (status, got) = client.post_json(&format!("/v1/orders/{first}/cancel"), &json!({}), None);
    assert_eq!(status, 200, "second cancel: {got}");
    assert_eq!(got["status"], "cancelled");
    let (status, got) = client.get_json(&format!("/v1/orders/{first}"));
    assert_eq!(status, 200);
    assert_eq!(got["status"], "cancelled");
    check_stock(&client, &skus, 100, &kept);

    let cancelled = client.list_orders(&format!("customer_id={customer}&status=cancelled"));
    assert_eq!(cancelled.len(), cancel.len(), "listed cancelled orders");
    assert!(cancelled.iter().all(|o| o["status"] == "cancelled"));
}

/// Per SKU: on_hand == `initial`, reserved == the quantities of `orders`, available matches.
fn check_stock(client: &Client, skus: &[String], initial: i64, orders: &[Value]) {
    let mut want: HashMap<String, i64> = HashMap::new();
    for order in orders {
        for (sku, qty) in qty_by_sku(order) {
            *want.entry(sku).or_default() += qty;
        }
    }
    let mut total_reserved = 0;
    for sku in skus {
        let stock = client.stock(sku);
        let reserved = want.get(sku).copied().unwrap_or(0);
        assert_eq!(stock.on_hand, initial, "{sku}: on_hand");
        assert_eq!(
            stock.reserved, reserved,
            "{sku}: reserved vs confirmed orders"
        );
        assert_eq!(stock.available, initial - reserved, "{sku}: available");
        assert!(stock.available >= 0, "{sku}: oversold");
        total_reserved += stock.reserved;
    }
    assert_eq!(
        total_reserved,
        want.values().sum::<i64>(),
        "total reserved vs total ordered"
    );
}

#[test]
fn idempotent_replays_reserve_once() {
    let _serial = serial();
    let server = Server::start(4);
    let client = server.client();
    let customer = client.create_customer();
    client.adjust_stock("IDEM-1", 10);

    // Same key, same body: the first response again, reserved once.
    let key = unique("idem");
    let body = order_body(&customer, &[("IDEM-1".to_string(), 3, 700)]);
    let first = client.post("/v1/orders", &body, Some(&key));
    assert_eq!(first.status, 201, "first placement: {}", first.body);
    check_order(&first.body, &body);
    let again = client.post("/v1/orders", &body, Some(&key));
    assert_eq!(again.status, first.status, "replay status");
    assert_eq!(again.body, first.body, "replay body must be identical");
    assert_eq!(client.stock("IDEM-1").reserved, 3, "reserved once");

    // Same key, different body: 422 and nothing changes.
    let other = order_body(&customer, &[("IDEM-1".to_string(), 4, 700)]);
    let conflict = client.post("/v1/orders", &other, Some(&key));
    assert_problem(&conflict, 422, "idempotency_conflict");
    assert_eq!(client.stock("IDEM-1").reserved, 3);

    // 16 threads race the same key and body: one order, one reservation.
    let key2 = unique("idem-race");
    let body2 = order_body(&customer, &[("IDEM-1".to_string(), 2, 900)]);
    let answers = run_parallel(16, 16, |_| place_definitive(&client, &key2, &body2));
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for answer in answers {
        match answer {
            Outcome::Confirmed(order) => {
                check_order(&order, &body2);
                ids.push(order["id"].clone());
                bodies.push(order);
            }
            other => panic!("racing replays must all end in 201, got {other:?}"),
        }
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "one order id: {ids:?}");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "identical bodies");
    assert_eq!(
        client.stock("IDEM-1").reserved,
        5,
        "3 + 2 reserved, once each"
    );

    // A 409 is a response too: replaying it gives the same 409 even once stock arrives.
    let key3 = unique("idem-409");
    let body3 = order_body(&customer, &[("IDEM-1".to_string(), 50, 100)]);
    let refused = client.post("/v1/orders", &body3, Some(&key3));
    assert_problem(&refused, 409, "insufficient_stock");
    client.adjust_stock("IDEM-1", 100);
    let replayed = client.post("/v1/orders", &body3, Some(&key3));
    assert_eq!(replayed.status, 409, "replay of a 409: {}", replayed.body);
    assert_eq!(
        replayed.body, refused.body,
        "replay of a 409 returns it again"
    );
    assert_eq!(code(&replayed.body), "insufficient_stock");
    assert_eq!(
        client.stock("IDEM-1").reserved,
        5,
        "the replay reserved nothing"
    );

    let listed = client.list_orders(&format!("customer_id={customer}"));
    assert_eq!(listed.len(), 2, "two orders in all");
}

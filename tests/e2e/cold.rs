//! The cold tier against the real `orderd`: orders that ended (delivered, cancelled) longer
//! than `engine.hot_retention_s` ago leave shard memory, and every read answers as before —
//! by id, shipments by id, lists by customer and by status (newest first, paged), the CSV
//! export and the sales summary (partial hours included) — before and after a restart; an
//! idempotent retry of a placement answers the order as placed; a cancel of a cold order
//! answers as it would have hot.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{pct, serial, unique, Client, Server};

/// Orders in shard memory, summed over shards (`orderd_shard_orders`).
fn hot_orders(client: &Client) -> u64 {
    let reply = client.get("/metrics");
    let text = reply.body.as_str().unwrap_or_default().to_string();
    text.lines()
        .filter(|l| l.starts_with("orderd_shard_orders{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Every page of a list, following `next`.
fn list_all(client: &Client, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/orders?limit=7&{query}");
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={}", pct(cursor)));
        }
        let (status, page) = client.get_json(&path);
        assert_eq!(status, 200, "GET {path}: {page}");
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match &page["next"] {
            Value::String(cursor) => after = Some(cursor.clone()),
            _ => return out,
        }
    }
}

/// What a client can read about the orders: each by id, each shipment by id, the lists, the
/// export and the summary over a range of partial hours.
fn everything(
    client: &Client,
    orders: &[String],
    shipments: &[String],
    customer: &str,
    range: &str,
) -> Value {
    let by_id: Vec<Value> = orders
        .iter()
        .map(|id| {
            let (status, view) = client.get_json(&format!("/v1/orders/{id}"));
            assert_eq!(status, 200, "{id}: {view}");
            view
        })
        .collect();
    let shipment_views: Vec<Value> = shipments
        .iter()
        .map(|id| {
            let (status, view) = client.get_json(&format!("/v1/shipments/{id}"));
            assert_eq!(status, 200, "{id}: {view}");
            view
        })
        .collect();
    let csv = client.get(&format!("/v1/analytics/orders.csv?{range}"));
    assert_eq!(csv.status, 200);
    let (status, summary) = client.get_json(&format!("/v1/analytics/summary?{range}"));
    assert_eq!(status, 200, "{summary}");
    json!({
        "by_id": by_id,
        "shipments": shipment_views,
        "customer": list_all(client, &format!("customer_id={customer}")),
        "cancelled": list_all(client, &format!("customer_id={customer}&status=cancelled")),
        "delivered": list_all(client, "status=delivered"),
        "all": list_all(client, ""),
        "csv": csv.body,
        "summary": summary,
    })
}

#[test]
fn ended_orders_go_cold_and_every_read_answers_as_before_across_a_restart() {
    let _serial = serial();
    let mut server = Server::start_with_env(
        2,
        &[
            ("ORDERD__ENGINE__HOT_RETENTION_S", "2"),
            ("ORDERD__ENGINE__COLD_SWEEP_INTERVAL_MS", "100"),
            ("ORDERD__ENGINE__COLD_SWEEP_ORDERS_MAX", "7"),
        ],
    );
    let client = server.client();
    let skus: Vec<String> = (0..3).map(|_| unique("COLD")).collect();
    for sku in &skus {
        client.adjust_stock(sku, 1000);
    }
    let customer = client.create_customer();
    let started = chrono::Utc::now() - chrono::Duration::milliseconds(1500);
    let mut orders = Vec::new();
    let mut keys = Vec::new();
    for i in 0..30 {
        let key = unique("cold-order");
        let body = json!({"customer_id": customer, "lines": [
            {"sku": skus[i % 3], "qty": 1 + i % 4, "unit_price": 100 + i},
            {"sku": skus[(i + 1) % 3], "qty": 2, "unit_price": 250}]});
        let reply = client.post("/v1/orders", &body, Some(&key));
        assert_eq!(reply.status, 201, "{}", reply.body);
        orders.push(reply.body["id"].as_str().unwrap().to_string());
        keys.push((key, body, reply.body.clone()));
    }
    // Ten cancelled, ten delivered (shipped, then a carrier event), ten left confirmed.
    for id in &orders[..10] {
        let (status, body) = client.post_json(&format!("/v1/orders/{id}/cancel"), &json!({}), None);
        assert_eq!(status, 200, "{body}");
    }
    let mut shipments = Vec::new();
    for id in &orders[10..20] {
        let (status, shipment) = client.post_json(
            &format!("/v1/orders/{id}/shipments"),
            &json!({"carrier": "DHL"}),
            None,
        );
        assert_eq!(status, 201, "{shipment}");
        let sid = shipment["id"].as_str().unwrap().to_string();
        let (status, body) = client.post_json(
            &format!("/v1/shipments/{sid}/events"),
            &json!({"status": "delivered"}),
            None,
        );
        assert_eq!(status, 200, "{body}");
        shipments.push(sid);
    }
    let ended = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let range = format!(
        "from={}&to={}",
        pct(&started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        pct(&ended.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    );
    let before = everything(&client, &orders, &shipments, &customer, &range);
    assert_eq!(before["all"].as_array().unwrap().len(), 30);
    assert_eq!(hot_orders(&client), 30);

    // Past hot_retention_s the twenty ended orders leave memory (seven per sweep).
    let deadline = Instant::now() + Duration::from_secs(30);
    while hot_orders(&client) > 10 {
        assert!(
            Instant::now() < deadline,
            "still {} hot",
            hot_orders(&client)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(hot_orders(&client), 10);
    let cold = everything(&client, &orders, &shipments, &customer, &range);
    assert_eq!(cold, before, "reads differ once the orders are cold");

    // An idempotent retry of a cold order's placement answers it as placed.
    let (key, body, first) = &keys[3];
    let reply = client.post("/v1/orders", body, Some(key));
    assert_eq!(
        (reply.status, &reply.body),
        (201, first),
        "retry of a cold placement"
    );
    // Cancelling a cold cancelled order answers it; a cold delivered one cannot be.
    let (status, again) = client.post_json(
        &format!("/v1/orders/{}/cancel", orders[0]),
        &json!({}),
        None,
    );
    assert_eq!((status, &again), (200, &before["by_id"][0]), "{again}");
    let reply = client.post(
        &format!("/v1/orders/{}/cancel", orders[12]),
        &json!({}),
        None,
    );
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["code"], "invalid_transition");
    let reply = client.post(
        &format!("/v1/shipments/{}/events", shipments[0]),
        &json!({"status": "failed"}),
        None,
    );
    assert_eq!(reply.status, 409, "{}", reply.body);

    // A restart replays the moves: still ten hot, and the same answers.
    server.restart();
    let client = server.client();
    assert_eq!(hot_orders(&client), 10);
    let after = everything(&client, &orders, &shipments, &customer, &range);
    assert_eq!(after, before, "reads differ after a restart");
    let ids: BTreeSet<&str> = after["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 30);
}

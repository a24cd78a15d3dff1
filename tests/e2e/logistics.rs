//! Shipments and analytics through the real server: partial and full shipments of
//! cross-shard orders move stock out exactly, drive the order's status, survive a crash; the
//! sales summary and the CSV export equal a recount of every order.

use std::collections::{BTreeMap, HashMap};

use crate::support::{assert_problem, order_body, pct, serial, Server};
use serde_json::{json, Value};

fn ship(client: &crate::support::Client, order: &str, body: Value) -> crate::support::Reply {
    client.post(&format!("/v1/orders/{order}/shipments"), &body, None)
}

#[test]
fn shipments_move_stock_out_and_drive_the_order() {
    let _serial = serial();
    let mut server = Server::start(4);
    let client = server.client();
    let skus: Vec<String> = (0..3).map(|i| format!("SHIP-{i}")).collect();
    for sku in &skus {
        client.adjust_stock(sku, 10);
    }
    let customer = client.create_customer();
    let lines: Vec<(String, u32, u64)> = skus.iter().map(|s| (s.clone(), 2, 500)).collect();
    let (status, order) = client.post_json("/v1/orders", &order_body(&customer, &lines), None);
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();

    // Bad requests change nothing.
    let r = ship(
        &client,
        &order_id,
        json!({"carrier": "dhl", "lines": [{"sku": "NOPE", "qty": 1}]}),
    );
    assert_problem(&r, 400, "invalid_request");
    let r = ship(
        &client,
        &order_id,
        json!({"carrier": "dhl", "lines": [{"sku": skus[0], "qty": 0}]}),
    );
    assert_problem(&r, 400, "invalid_request");
    let r = ship(
        &client,
        &order_id,
        json!({"carrier": "dhl", "status": "delivered"}),
    );
    assert_problem(&r, 400, "invalid_request");
    let r = ship(&client, &order_id, json!({"carrier": ""}));
    assert_problem(&r, 400, "invalid_request");
    let r = ship(&client, "ord_00000000000000ff", json!({"carrier": "dhl"}));
    assert_problem(&r, 404, "not_found");
    // More than is left to ship.
    let r = ship(
        &client,
        &order_id,
        json!({"carrier": "dhl", "lines": [{"sku": skus[0], "qty": 3}]}),
    );
    assert_problem(&r, 409, "invalid_transition");

    // A partial shipment: one unit of the first SKU.
    let r = ship(
        &client,
        &order_id,
        json!({"carrier": "dhl", "lines": [{"sku": skus[0], "qty": 1}]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.body.clone();
    assert!(first["id"].as_str().unwrap().starts_with("shp_"));
    assert_eq!(first["order_id"], order_id.as_str());
    assert_eq!(first["status"], "shipped");
    assert_eq!(first["carrier"], "dhl");
    assert!(!first["tracking_number"].as_str().unwrap().is_empty());
    assert_eq!(first["lines"], json!([{"sku": skus[0], "qty": 1}]));
    assert_eq!(first["events"][0]["status"], "shipped");
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/v1/shipments/{}", first["id"].as_str().unwrap()).as_str())
    );
    let s0 = client.stock(&skus[0]);
    assert_eq!((s0.on_hand, s0.reserved, s0.available), (9, 1, 8));
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "partially_shipped");
    assert_eq!(view["lines"][0]["shipped_qty"], 1);
    // Cancelling after a shipment is refused.
    let r = client.post(&format!("/v1/orders/{order_id}/cancel"), &json!({}), None);
    assert_problem(&r, 409, "invalid_transition");

    // Everything left, with no lines.
    let r = ship(&client, &order_id, json!({"carrier": "ups"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let second = r.body.clone();
    let mut shipped: Vec<(String, u64)> = second["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_string(),
                l["qty"].as_u64().unwrap(),
            )
        })
        .collect();
    shipped.sort();
    assert_eq!(
        shipped,
        vec![
            (skus[0].clone(), 1),
            (skus[1].clone(), 2),
            (skus[2].clone(), 2)
        ]
    );
    for sku in &skus {
        let s = client.stock(sku);
        assert_eq!((s.on_hand, s.reserved, s.available), (8, 0, 8), "{sku}");
    }
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "shipped");
    assert_eq!(view["shipments"].as_array().unwrap().len(), 2);
    let r = ship(&client, &order_id, json!({"carrier": "ups"}));
    assert_problem(&r, 409, "invalid_transition");

    // Carrier events; the order is delivered when every shipment is.
    let ids: Vec<String> = [&first, &second]
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let event =
        |id: &str, body: Value| client.post(&format!("/v1/shipments/{id}/events"), &body, None);
    assert_problem(
        &event(&ids[0], json!({"status": "shipped"})),
        400,
        "invalid_request",
    );
    assert_problem(
        &event(&ids[0], json!({"status": "lost"})),
        400,
        "invalid_request",
    );
    assert_problem(
        &event("shp_00000000000000ff", json!({"status": "delivered"})),
        404,
        "not_found",
    );
    let r = event(&ids[0], json!({"status": "in_transit", "note": "hub"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "in_transit");
    assert_eq!(r.body["events"][1]["note"], "hub");
    assert_eq!(event(&ids[0], json!({"status": "delivered"})).status, 200);
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "shipped", "one shipment still travels");
    assert_eq!(event(&ids[1], json!({"status": "delivered"})).status, 200);
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "delivered");
    let statuses: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["confirmed", "partially_shipped", "shipped", "delivered"]
    );
    assert_problem(
        &event(&ids[1], json!({"status": "failed"})),
        409,
        "invalid_transition",
    );

    // A crash keeps all of it.
    let (_, before_shipment) = client.get_json(&format!("/v1/shipments/{}", ids[0]));
    server.kill_9();
    server.restart();
    let client = server.client();
    for sku in &skus {
        let s = client.stock(sku);
        assert_eq!((s.on_hand, s.reserved), (8, 0), "{sku} after restart");
    }
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "delivered");
    let (status, after_shipment) = client.get_json(&format!("/v1/shipments/{}", ids[0]));
    assert_eq!(status, 200);
    assert_eq!(after_shipment, before_shipment);
}

/// Parses an RFC 3339 time into microseconds.
fn micros(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_micros()
}

/// The summary a recount of `orders` gives over `[from, to)`.
fn recount(orders: &[Value], from: i64, to: i64) -> Value {
    let (mut count, mut cancelled, mut units, mut revenue) = (0u64, 0u64, 0u64, 0u64);
    let (mut returned, mut refunds) = (0u64, 0u64);
    let mut skus: HashMap<String, (u64, u64)> = HashMap::new();
    let mut hours: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for order in orders {
        let at = micros(order["created_at"].as_str().unwrap());
        if at < from || at >= to {
            continue;
        }
        if order["status"] == "cancelled" {
            cancelled += 1;
            continue;
        }
        count += 1;
        refunds += order["refunded"].as_u64().unwrap();
        let mut order_revenue = 0;
        for line in order["lines"].as_array().unwrap() {
            let qty = line["qty"].as_u64().unwrap();
            returned += line["returned_qty"].as_u64().unwrap();
            let amount = qty * line["unit_price"].as_u64().unwrap();
            units += qty;
            revenue += amount;
            order_revenue += amount;
            let e = skus
                .entry(line["sku"].as_str().unwrap().to_string())
                .or_default();
            e.0 += qty;
            e.1 += amount;
        }
        let hour = at.div_euclid(3_600_000_000) * 3_600_000_000;
        let e = hours.entry(hour).or_default();
        e.0 += 1;
        e.1 += order_revenue;
    }
    let mut top: Vec<(String, u64, u64)> = skus.into_iter().map(|(s, (u, r))| (s, u, r)).collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    top.truncate(10);
    json!({
        "orders": count,
        "cancelled": cancelled,
        "units": units,
        "revenue": revenue,
        "returned_units": returned,
        "refunds": refunds,
        "net_revenue": revenue.saturating_sub(refunds),
        "top_skus": top.iter().map(|(s, u, r)| json!({"sku": s, "units": u, "revenue": r})).collect::<Vec<_>>(),
        "by_hour": hours.iter().map(|(h, (o, r))| json!({
            "hour": chrono::DateTime::from_timestamp_micros(*h).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "orders": o,
            "revenue": r,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn analytics_summary_and_csv_equal_a_recount() {
    let _serial = serial();
    let server = Server::start(4);
    let client = server.client();
    let skus: Vec<String> = (0..25).map(|i| format!("AN-{i}")).collect();
    for sku in &skus {
        client.adjust_stock(sku, 1_000);
    }
    let customers: Vec<String> = (0..4).map(|_| client.create_customer()).collect();
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut ids = Vec::new();
    for n in 0..240 {
        let count = 1 + next() as usize % 4;
        let mut lines: Vec<(String, u32, u64)> = Vec::new();
        while lines.len() < count {
            let sku = &skus[next() as usize % skus.len()];
            if lines.iter().all(|l| &l.0 != sku) {
                lines.push((sku.clone(), 1 + next() as u32 % 3, 1 + next() % 5_000));
            }
        }
        let body = order_body(&customers[n % customers.len()], &lines);
        let (status, order) = client.post_json("/v1/orders", &body, None);
        assert_eq!(status, 201, "{order}");
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    for id in ids.iter().step_by(7) {
        let r = client.post(&format!("/v1/orders/{id}/cancel"), &json!({}), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Some orders shipped, partly returned and refunded: analytics count them by placement.
    for id in ids.iter().skip(3).step_by(14) {
        let r = client.post(
            &format!("/v1/orders/{id}/shipments"),
            &json!({"carrier": "dhl"}),
            None,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let line = &r.body["lines"][0];
        let body = json!({"lines": [{"sku": line["sku"], "qty": 1}], "reason": "r"});
        let (status, ret) = client.post_json(&format!("/v1/orders/{id}/returns"), &body, None);
        assert_eq!(status, 201, "{ret}");
        let body = json!({"lines": [{"sku": line["sku"], "qty": 1, "restock": true}]});
        let path = format!("/v1/returns/{}/receive", ret["id"].as_str().unwrap());
        assert_eq!(client.post(&path, &body, None).status, 200);
        let body = json!({"amount": 1 + next() % 50, "reason": "r"});
        let (status, refund) = client.post_json(&format!("/v1/orders/{id}/refunds"), &body, None);
        assert_eq!(status, 201, "{refund}");
    }
    let orders = client.list_orders("");
    assert_eq!(orders.len(), ids.len());

    // Whole range, and ranges cut at an order's placement time.
    let mut times: Vec<i64> = orders
        .iter()
        .map(|o| micros(o["created_at"].as_str().unwrap()))
        .collect();
    times.sort_unstable();
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    let cuts = [
        (None, None),
        (Some(times[60]), None),
        (Some(times[30]), Some(times[200])),
        (None, Some(times[100])),
        (Some(times[239] + 1), None),
    ];
    for (from, to) in cuts {
        let mut query = Vec::new();
        if let Some(f) = from {
            query.push(format!("from={}", pct(&time(f))));
        }
        if let Some(t) = to {
            query.push(format!("to={}", pct(&time(t))));
        }
        let (status, summary) =
            client.get_json(&format!("/v1/analytics/summary?{}", query.join("&")));
        assert_eq!(status, 200, "{summary}");
        let expected = recount(&orders, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
        assert_eq!(summary, expected, "summary over {query:?}");

        // The CSV: a header, then one row per order line of every order in the range.
        let r = client.get(&format!("/v1/analytics/orders.csv?{}", query.join("&")));
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
        let text = r.body.as_str().map(str::to_string).unwrap_or_default();
        let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(
            rows.remove(0),
            "order_id,created_at,status,customer_id,sku,qty,unit_price"
        );
        let mut expected_rows: Vec<String> = Vec::new();
        for order in &orders {
            let at = micros(order["created_at"].as_str().unwrap());
            if at < from.unwrap_or(i64::MIN) || at >= to.unwrap_or(i64::MAX) {
                continue;
            }
            for line in order["lines"].as_array().unwrap() {
                expected_rows.push(format!(
                    "{},{},{},{},{},{},{}",
                    order["id"].as_str().unwrap(),
                    order["created_at"].as_str().unwrap(),
                    order["status"].as_str().unwrap(),
                    order["customer_id"].as_str().unwrap(),
                    line["sku"].as_str().unwrap(),
                    line["qty"],
                    line["unit_price"]
                ));
            }
        }
        rows.sort();
        expected_rows.sort();
        assert_eq!(rows, expected_rows, "csv over {query:?}");
    }
    let r = client.get("/v1/analytics/summary?from=yesterday");
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(r.body["param"], "from");
    let r = client.get("/v1/analytics/summary?bogus=1");
    assert_problem(&r, 400, "invalid_request");
}

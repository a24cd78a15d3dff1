//! Returns and refunds through the real server (API.md, Commerce): shipped units come back
//! (never more than shipped less returned), are received with restock per line to the SKU's
//! stock (on other shards exactly once, also across a kill -9 between the receipt and the
//! restock), drive the order to `partially_returned` and `returned`; refunds never pass the
//! total; analytics count returned units, refunds and net revenue; bad input gets the
//! documented problems; retries under an Idempotency-Key change nothing more.

use std::thread;
use std::time::Duration;

use orderd_engine::state::shard_of_sku;
use orderd_engine::CustomerId;
use serde_json::{json, Value};

use crate::support::{assert_problem, order_body, serial, Client, Reply, Server};

const SHARDS: u16 = 4;

/// A SKU named `prefix-n` that lives on `shard`.
fn sku_on(shard: u16, prefix: &str) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|sku| shard_of_sku(sku, SHARDS) == shard)
        .expect("some SKU maps to every shard")
}

/// A new customer on `shard` (its orders placed without a key live there too).
fn customer_on(client: &Client, shard: u16) -> String {
    for _ in 0..64 {
        let id = client.create_customer();
        let parsed: CustomerId = id.parse().expect("customer id");
        if parsed.shard() == shard {
            return id;
        }
    }
    panic!("no customer landed on shard {shard}");
}

fn open_return(client: &Client, order: &str, lines: Value, key: Option<&str>) -> Reply {
    client.post(
        &format!("/v1/orders/{order}/returns"),
        &json!({"lines": lines, "reason": "does not fit"}),
        key,
    )
}

fn receive(client: &Client, ret: &str, lines: Value, key: Option<&str>) -> Reply {
    client.post(
        &format!("/v1/returns/{ret}/receive"),
        &json!({ "lines": lines }),
        key,
    )
}

fn refund(client: &Client, order: &str, amount: u64, key: Option<&str>) -> Reply {
    client.post(
        &format!("/v1/orders/{order}/refunds"),
        &json!({"amount": amount, "reason": "goodwill"}),
        key,
    )
}

fn on_hand(client: &Client, sku: &str) -> i64 {
    client.stock(sku).on_hand
}

fn summary(client: &Client) -> Value {
    let (status, summary) = client.get_json("/v1/analytics/summary");
    assert_eq!(status, 200, "{summary}");
    summary
}

/// Everything a restart must keep: the order, its returns, the stock of `skus`, analytics.
fn state(client: &Client, order: &str, skus: &[String]) -> Value {
    let (status, view) = client.get_json(&format!("/v1/orders/{order}"));
    assert_eq!(status, 200, "{view}");
    let returns: Vec<Value> = view["returns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            client
                .get_json(&format!("/v1/returns/{}", id.as_str().unwrap()))
                .1
        })
        .collect();
    let stock: Vec<i64> = skus.iter().map(|sku| on_hand(client, sku)).collect();
    let s = summary(client);
    json!({
        "order": view,
        "returns": returns,
        "stock": stock,
        "analytics": [s["returned_units"], s["refunds"], s["net_revenue"], s["revenue"]],
    })
}

#[test]
fn returns_restock_drive_the_order_and_refunds_stop_at_the_total() {
    let _serial = serial();
    let mut server = Server::start(SHARDS as usize);
    let client = server.client();
    // The order lives on shard 0; its SKUs on shards 0, 1 and 2: restocks are local and remote.
    let customer = customer_on(&client, 0);
    let skus: Vec<String> = (0..3).map(|s| sku_on(s, "RET")).collect();
    for sku in &skus {
        client.adjust_stock(sku, 10);
    }
    let lines: Vec<(String, u32, u64)> = skus.iter().map(|s| (s.clone(), 2, 500)).collect();
    let (status, order) = client.post_json("/v1/orders", &order_body(&customer, &lines), None);
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    assert_eq!(order["total"], 3000);

    // Nothing shipped: nothing to return.
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}]),
        None,
    );
    assert_problem(&r, 409, "invalid_transition");
    // Ship one unit of the first SKU, then everything left.
    let ship = |body: Value| {
        let r = client.post(&format!("/v1/orders/{order_id}/shipments"), &body, None);
        assert_eq!(r.status, 201, "{}", r.body);
    };
    ship(json!({"carrier": "dhl", "lines": [{"sku": skus[0], "qty": 1}]}));
    ship(json!({"carrier": "dhl"}));
    for sku in &skus {
        assert_eq!(on_hand(&client, sku), 8, "{sku}");
    }

    // Bad input: the documented problems, and nothing opened.
    let bad = |lines: Value, param: &str| {
        let r = open_return(&client, &order_id, lines, None);
        assert_problem(&r, 400, "invalid_request");
        assert_eq!(r.body["param"], param, "{}", r.body);
    };
    bad(json!([{"sku": skus[0], "qty": 0}]), "lines[0].qty");
    bad(json!([{"sku": "NOT-IN-ORDER", "qty": 1}]), "lines[0].sku");
    bad(json!([{"sku": "bad sku", "qty": 1}]), "lines[0].sku");
    bad(
        json!([{"sku": skus[0], "qty": 1}, {"sku": skus[0], "qty": 1}]),
        "lines[1].sku",
    );
    bad(json!([]), "lines");
    let r = client.post(
        &format!("/v1/orders/{order_id}/returns"),
        &json!({"lines": [{"sku": skus[0], "qty": 1}]}),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    let r = client.post(
        &format!("/v1/orders/{order_id}/returns"),
        &json!({"lines": [{"sku": skus[0], "qty": 1}], "reason": "x", "status": "received"}),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    let r = client.send_text(
        "POST",
        &format!("/v1/orders/{order_id}/returns"),
        "application/json",
        "{\"lines\": [",
    );
    assert_problem(&r, 400, "invalid_request");
    let r = open_return(
        &client,
        "ord_00000000000000ff",
        json!([{"sku": skus[0], "qty": 1}]),
        None,
    );
    assert_problem(&r, 404, "not_found");
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["returns"], json!([]), "{view}");
    assert_eq!(view["status"], "shipped");

    // A return of part: one unit of the first SKU, both of the second.
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}, {"sku": skus[1], "qty": 2}]),
        Some("ret-1"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.body.clone();
    let first_id = first["id"].as_str().unwrap().to_string();
    assert!(first_id.starts_with("ret_"), "{first}");
    assert_eq!(first["order_id"], order_id.as_str());
    assert_eq!(first["status"], "requested");
    assert_eq!(first["reason"], "does not fit");
    assert_eq!(
        first["lines"],
        json!([{"sku": skus[0], "qty": 1}, {"sku": skus[1], "qty": 2}])
    );
    assert_eq!(first["received"], json!([]));
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/v1/returns/{first_id}").as_str())
    );
    // Its retry answers the same return and opens nothing more; another body is a conflict.
    let again = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}, {"sku": skus[1], "qty": 2}]),
        Some("ret-1"),
    );
    assert_eq!((again.status, &again.body), (201, &first));
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}]),
        Some("ret-1"),
    );
    assert_problem(&r, 422, "idempotency_conflict");
    // More than shipped less already returned: 2 shipped, 1 in the open return.
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 2}]),
        None,
    );
    assert_problem(&r, 409, "invalid_transition");
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[1], "qty": 1}]),
        None,
    );
    assert_problem(&r, 409, "invalid_transition");
    // Nothing came back yet: stock and status as they were.
    for sku in &skus {
        assert_eq!(on_hand(&client, sku), 8, "{sku}");
    }
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "shipped");
    assert_eq!(view["returns"], json!([first_id]));

    // Receiving: bad lines change nothing.
    let r = receive(
        &client,
        &first_id,
        json!([{"sku": skus[2], "qty": 1, "restock": true}]),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    let r = receive(
        &client,
        &first_id,
        json!([{"sku": skus[0], "qty": 0, "restock": true}]),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    let r = receive(
        &client,
        &first_id,
        json!([{"sku": skus[0], "qty": 1}]),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    let r = receive(
        &client,
        &first_id,
        json!([{"sku": skus[0], "qty": 2, "restock": true}]),
        None,
    );
    assert_problem(&r, 409, "invalid_transition");
    let r = receive(
        &client,
        "ret_00000000000000ff",
        json!([{"sku": skus[0], "qty": 1, "restock": true}]),
        None,
    );
    assert_problem(&r, 404, "not_found");
    // The first SKU restocked; of the second one unit restocked, one damaged.
    let lines = json!([
        {"sku": skus[0], "qty": 1, "restock": true},
        {"sku": skus[1], "qty": 1, "restock": true},
        {"sku": skus[1], "qty": 1, "restock": false},
    ]);
    let r = receive(&client, &first_id, lines.clone(), Some("recv-1"));
    assert_eq!(r.status, 200, "{}", r.body);
    let received = r.body.clone();
    assert_eq!(received["status"], "received");
    assert_eq!(
        received["received"],
        json!([
            {"sku": skus[0], "qty": 1, "restock": true, "location": "default"},
            {"sku": skus[1], "qty": 1, "restock": true, "location": "default"},
            {"sku": skus[1], "qty": 1, "restock": false, "location": null},
        ])
    );
    assert!(received["received_at"].is_string());
    // Stock goes back up exactly (the second SKU's shard restocks it; read until it has).
    assert_eq!(on_hand(&client, &skus[0]), 9);
    wait_on_hand(&client, &skus[1], 9);
    assert_eq!(on_hand(&client, &skus[2]), 8);
    // A retry under the key answers the same and restocks nothing; without it, 409.
    let again = receive(&client, &first_id, lines.clone(), Some("recv-1"));
    assert_eq!((again.status, &again.body), (200, &received));
    let r = receive(&client, &first_id, lines, None);
    assert_problem(&r, 409, "invalid_transition");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        [on_hand(&client, &skus[0]), on_hand(&client, &skus[1])],
        [9, 9]
    );
    let (_, view) = client.get_json(&format!("/v1/returns/{first_id}"));
    assert_eq!(view, received);
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "partially_returned", "{view}");
    let returned: Vec<u64> = view["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["returned_qty"].as_u64().unwrap())
        .collect();
    assert_eq!(returned, [1, 2, 0]);
    assert_eq!(
        view["history"].as_array().unwrap().last().unwrap()["status"],
        "partially_returned"
    );

    // Refunds: up to the total, then 409.
    assert_problem(&refund(&client, &order_id, 0, None), 400, "invalid_request");
    assert_problem(
        &refund(&client, &order_id, 3001, None),
        409,
        "invalid_transition",
    );
    let r = refund(&client, &order_id, 1000, Some("refund-1"));
    assert_eq!(r.status, 201, "{}", r.body);
    let first_refund = r.body.clone();
    assert!(first_refund["id"].as_str().unwrap().starts_with("ref_"));
    assert_eq!(first_refund["amount"], 1000);
    assert_eq!(first_refund["order_id"], order_id.as_str());
    let again = refund(&client, &order_id, 1000, Some("refund-1"));
    assert_eq!((again.status, &again.body), (201, &first_refund));
    assert_problem(
        &refund(&client, &order_id, 999, Some("refund-1")),
        422,
        "idempotency_conflict",
    );
    let s = summary(&client);
    assert_eq!(
        [
            &s["revenue"],
            &s["returned_units"],
            &s["refunds"],
            &s["net_revenue"]
        ],
        [&json!(3000), &json!(3), &json!(1000), &json!(2000)],
        "{s}"
    );
    assert_problem(
        &refund(&client, &order_id, 2001, None),
        409,
        "invalid_transition",
    );
    let r = refund(&client, &order_id, 2000, None);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_problem(
        &refund(&client, &order_id, 1, None),
        409,
        "invalid_transition",
    );
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["refunded"], 3000);
    assert_eq!(view["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(view["refunds"][0], first_refund);

    // Return the rest: the order is then returned.
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}, {"sku": skus[2], "qty": 2}]),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let second_id = r.body["id"].as_str().unwrap().to_string();
    // Everything shipped is in a return now.
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[2], "qty": 1}]),
        None,
    );
    assert_problem(&r, 409, "invalid_transition");
    let r = receive(
        &client,
        &second_id,
        json!([{"sku": skus[0], "qty": 1, "restock": true}, {"sku": skus[2], "qty": 2, "restock": true}]),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(on_hand(&client, &skus[0]), 10);
    wait_on_hand(&client, &skus[2], 10);
    let (_, view) = client.get_json(&format!("/v1/orders/{order_id}"));
    assert_eq!(view["status"], "returned", "{view}");
    assert_eq!(view["returns"], json!([first_id, second_id]));
    let r = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}]),
        None,
    );
    assert_problem(&r, 409, "invalid_transition");
    let (_, listed) = client.get_json("/v1/orders?status=returned");
    assert_eq!(listed["items"][0]["id"], order_id.as_str(), "{listed}");
    let s = summary(&client);
    assert_eq!(
        [&s["returned_units"], &s["refunds"], &s["net_revenue"]],
        [&json!(6), &json!(3000), &json!(0)],
        "{s}"
    );
    // A refund of a cancelled order is refused.
    let (_, other) = client.post_json(
        "/v1/orders",
        &order_body(&customer, &[(skus[0].clone(), 1, 100)]),
        None,
    );
    let other_id = other["id"].as_str().unwrap();
    let r = client.post(&format!("/v1/orders/{other_id}/cancel"), &json!({}), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_problem(
        &refund(&client, other_id, 1, None),
        409,
        "invalid_transition",
    );

    // Everything survives a kill -9, with the stock restocked once.
    let before = state(&client, &order_id, &skus);
    server.restart();
    let client = server.client();
    assert_eq!(state(&client, &order_id, &skus), before);
    // The retries are still answered as first, and still change nothing.
    let again = refund(&client, &order_id, 1000, Some("refund-1"));
    assert_eq!((again.status, &again.body), (201, &first_refund));
    let again = open_return(
        &client,
        &order_id,
        json!([{"sku": skus[0], "qty": 1}, {"sku": skus[1], "qty": 2}]),
        Some("ret-1"),
    );
    assert_eq!((again.status, &again.body["id"]), (201, &json!(first_id)));
    assert_eq!(again.body["status"], "requested", "answered as created");
    // The audit trail has each step, with who did it.
    let (status, audit) = client.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for (action, count) in [
        ("return.create", 2),
        ("return.receive", 2),
        ("order.refund", 2),
    ] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            count,
            "{action} in {actions:?}"
        );
    }
    assert_eq!(state(&client, &order_id, &skus), before);
}

/// Reads `sku`'s stock until it is `want` (a remote restock lands after the receipt's answer),
/// then holds that it stays there.
fn wait_on_hand(client: &Client, sku: &str, want: i64) {
    for _ in 0..200 {
        let now = on_hand(client, sku);
        assert!(now <= want, "{sku}: {now} on hand, more than {want}");
        if now == want {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("{sku} never reached {want} on hand");
}

/// A return received while the shard that owns its SKU is stuck: the order's shard sends the
/// restock again every `engine.pending_retry_ms` meanwhile, and after a kill -9 in the middle
/// the restart sends it once more; the units come back exactly once.
#[test]
fn a_restock_interrupted_by_kill_9_lands_exactly_once() {
    let _serial = serial();
    let mut server = Server::start(SHARDS as usize);
    let client = server.client();
    let customer = customer_on(&client, 0);
    let sku = sku_on(2, "RET-CRASH");
    client.adjust_stock(&sku, 20);

    // Two orders of 3 units, shipped: one returned during a hang that the process survives,
    // one during a hang that a kill -9 ends.
    let mut orders = Vec::new();
    for _ in 0..2 {
        let (status, order) = client.post_json(
            "/v1/orders",
            &order_body(&customer, &[(sku.clone(), 3, 700)]),
            None,
        );
        assert_eq!(status, 201, "{order}");
        let id = order["id"].as_str().unwrap().to_string();
        let r = client.post(
            &format!("/v1/orders/{id}/shipments"),
            &json!({"carrier": "ups"}),
            None,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        orders.push(id);
    }
    assert_eq!(on_hand(&client, &sku), 14);

    for (round, order) in orders.iter().enumerate() {
        let r = open_return(&client, order, json!([{"sku": sku, "qty": 3}]), None);
        assert_eq!(r.status, 201, "{}", r.body);
        let ret = r.body["id"].as_str().unwrap().to_string();
        // Shard 2 (the SKU's) blocks for 2.5 s: the receipt on shard 0 is answered, its
        // restocks queue up behind the hang.
        let hang = sku_on(2, &format!("FAILPOINT-HANG-2500-R{round}"));
        let stuck_client = client.clone();
        let stuck = thread::spawn(move || {
            stuck_client.post(
                &format!("/v1/stock/{hang}/adjustments"),
                &json!({"delta": 1, "reason": "hang"}),
                None,
            )
        });
        thread::sleep(Duration::from_millis(300));
        let r = receive(
            &client,
            &ret,
            json!([{"sku": sku, "qty": 3, "restock": true}]),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        if round == 0 {
            // Several `Restock`s wait in the stuck shard's mailbox; one restocks.
            thread::sleep(Duration::from_millis(1500));
            let _ = stuck.join();
            wait_on_hand(&client, &sku, 17);
        } else {
            // Killed while the restock waits behind the hang: the restart sends it again.
            thread::sleep(Duration::from_millis(800));
            server.kill_9();
            let _ = stuck.join();
            server.restart();
            let client = server.client();
            wait_on_hand(&client, &sku, 20);
        }
        let client = server.client();
        thread::sleep(Duration::from_millis(1200));
        assert_eq!(on_hand(&client, &sku), 17 + 3 * round as i64);
        let (_, view) = client.get_json(&format!("/v1/orders/{order}"));
        assert_eq!(view["status"], "returned", "{view}");
    }
    // And once more after a clean restart.
    server.restart();
    let client = server.client();
    assert_eq!(on_hand(&client, &sku), 20);
    let s = client.stock(&sku);
    assert_eq!((s.reserved, s.available), (0, 20));
}

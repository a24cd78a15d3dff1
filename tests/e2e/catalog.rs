//! Catalog prices through the real binary: a merchandiser sets them, a `customer` key's orders
//! take them (`price_mismatch`, `unknown_sku`, nothing reserved on a refusal), other keys follow
//! `orders.client_prices`, an idempotent retry answers its first order whatever the price did
//! since, and prices survive snapshots and a SIGKILL.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{assert_problem, serial, unique, Client, Reply, Server};

/// A key of `role` (with `customer_id` for a customer key): its secret.
fn secret(admin: &Client, role: &str, customer_id: Option<&str>) -> String {
    let mut body = json!({"name": unique(role), "role": role});
    if let Some(customer) = customer_id {
        body["customer_id"] = json!(customer);
    }
    let (status, key) = admin.post_json("/v1/keys", &body, None);
    assert_eq!(status, 201, "create a {role} key: {key}");
    key["secret"].as_str().expect("secret").to_string()
}

/// A key of `role`, as a client.
fn key(admin: &Client, role: &str, customer_id: Option<&str>) -> Client {
    admin.with_key(&secret(admin, role, customer_id))
}

fn put_price(client: &Client, sku: &str, body: &Value) -> Reply {
    client.call("PUT", &format!("/v1/catalog/{sku}"), Some(body), None)
}

/// An order of `customer` with `lines` as (SKU, qty, unit_price or none).
fn order(customer: &str, lines: &[(&str, u32, Option<u64>)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, qty, price)| match price {
            Some(price) => json!({"sku": sku, "qty": qty, "unit_price": price}),
            None => json!({"sku": sku, "qty": qty}),
        })
        .collect();
    json!({"customer_id": customer, "lines": lines})
}

fn assert_param(reply: &Reply, status: u16, code: &str, param: &str) {
    assert_problem(reply, status, code);
    assert_eq!(reply.body["param"], param, "{}", reply.body);
}

/// Waits until the server has logged `count` snapshots in all.
fn wait_for_snapshots(server: &Server, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let taken = server
            .log()
            .lines()
            .filter(|line| line.contains("Snapshot taken."))
            .count();
        if taken >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{taken} snapshots logged, waited for {count}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn catalog_prices_price_customer_orders_and_survive_snapshots_and_kill_9() {
    let _serial = serial();
    // A snapshot every few events, so that the prices set below are in snapshots (whose
    // older log is trimmed) by the time the server is killed.
    let mut server = Server::start_with_env(
        2,
        &[
            ("ORDERD__ENGINE__SNAPSHOT_INTERVAL_EVENTS", "4"),
            ("RUST_LOG", "warn,orderd_engine=info"),
        ],
    );
    let admin = server.client();
    let customer_id = admin.create_customer();
    let (priced, inactive, unpriced) = (unique("CAT-P"), unique("CAT-I"), unique("CAT-U"));
    for sku in [&priced, &inactive, &unpriced] {
        admin.adjust_stock(sku, 10);
    }
    let merchandiser = key(&admin, "merchandiser", None);
    let frontend = key(&admin, "frontend", None);
    let operator = key(&admin, "operator", None);
    let customer_secret = secret(&admin, "customer", Some(&customer_id));
    let customer = admin.with_key(&customer_secret);

    // A merchandiser sets prices; the answer is the entry in the shop's currency.
    let set = put_price(&merchandiser, &priced, &json!({"price": 1999}));
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["sku"], priced.as_str());
    assert_eq!(set.body["price"], 1999);
    assert_eq!(set.body["currency"], "USD");
    assert_eq!(set.body["active"], true);
    let updated_at = set.body["updated_at"].as_str().expect("updated_at");
    // RFC 3339 UTC, as every time: `2025-01-02T03:04:05.123456Z`.
    assert!(
        updated_at.len() >= 20 && updated_at.ends_with('Z') && updated_at.as_bytes()[10] == b'T',
        "{updated_at}"
    );
    let reply = put_price(
        &merchandiser,
        &inactive,
        &json!({"price": 500, "active": false}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["active"], false);
    // Merchandisers read stock too; operators read prices.
    assert_eq!(merchandiser.get(&format!("/v1/stock/{priced}")).status, 200);
    let (status, read) = operator.get_json(&format!("/v1/catalog/{priced}"));
    assert_eq!((status, &read), (200, &set.body));
    assert_problem(
        &merchandiser.get(&format!("/v1/catalog/{unpriced}")),
        404,
        "not_found",
    );

    // Who may not set prices, and bodies that are not prices.
    assert_problem(
        &put_price(&frontend, &priced, &json!({"price": 1})),
        403,
        "forbidden",
    );
    assert_problem(
        &put_price(&customer, &priced, &json!({"price": 1})),
        404,
        "not_found",
    );
    for (body, param) in [
        (json!({"price": -1}), "price"),
        (json!({"price": 1_000_000_000_001_u64}), "price"),
        (json!({"price": "1"}), "price"),
        (json!({"active": true}), "price"),
        (json!({"price": 1, "active": 1}), "active"),
        (json!({"price": 1, "currency": "EUR"}), "currency"),
    ] {
        assert_param(
            &put_price(&merchandiser, &priced, &body),
            400,
            "invalid_request",
            param,
        );
    }
    assert_param(
        &put_price(&merchandiser, "bad%20sku", &json!({"price": 1})),
        400,
        "invalid_request",
        "sku",
    );
    assert_param(
        &merchandiser.get("/v1/catalog?limit=0"),
        400,
        "invalid_request",
        "limit",
    );
    assert_eq!(
        admin.get(&format!("/v1/catalog/{priced}")).body["price"],
        1999,
        "refused bodies changed nothing"
    );

    // A customer key orders without a price and gets the catalog's.
    let placed = customer.post(
        "/v1/orders",
        &order(&customer_id, &[(&priced, 2, None)]),
        None,
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(placed.body["lines"][0]["unit_price"], 1999);
    assert_eq!(placed.body["total"], 3998);
    // Sending the catalog's price is fine; another is 422 naming the line.
    let same = customer.post(
        "/v1/orders",
        &order(&customer_id, &[(&priced, 1, Some(1999))]),
        None,
    );
    assert_eq!(same.status, 201, "{}", same.body);
    assert_param(
        &customer.post(
            "/v1/orders",
            &order(&customer_id, &[(&priced, 1, Some(1))]),
            None,
        ),
        422,
        "price_mismatch",
        "lines[0].unit_price",
    );
    // No price, or an inactive one: unknown_sku, and nothing reserved on any line.
    for sku in [&unpriced, &inactive] {
        let reply = customer.post(
            "/v1/orders",
            &order(&customer_id, &[(&priced, 1, None), (sku, 1, None)]),
            None,
        );
        assert_param(&reply, 422, "unknown_sku", "lines[1].sku");
    }
    assert_eq!(admin.stock(&priced).reserved, 3);
    assert_eq!(admin.stock(&inactive).reserved, 0);
    assert_eq!(admin.stock(&unpriced).reserved, 0);

    // A frontend key prices its own orders (orders.client_prices = true by default).
    let own = frontend.post(
        "/v1/orders",
        &order(&customer_id, &[(&unpriced, 1, Some(7))]),
        None,
    );
    assert_eq!(own.status, 201, "{}", own.body);
    assert_eq!(own.body["total"], 7);
    assert_param(
        &frontend.post(
            "/v1/orders",
            &order(&customer_id, &[(&priced, 1, None)]),
            None,
        ),
        400,
        "invalid_request",
        "lines[0].unit_price",
    );

    // A retry under its Idempotency-Key answers the first order, whatever the price did
    // since; a new order meets the price as it is now.
    let keyed = order(&customer_id, &[(&priced, 1, None)]);
    let first = customer.post("/v1/orders", &keyed, Some("cat-retry"));
    assert_eq!(first.status, 201, "{}", first.body);
    let retry_id = first.body["id"].clone();
    let reply = put_price(
        &merchandiser,
        &priced,
        &json!({"price": 1999, "active": false}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let again = customer.post("/v1/orders", &keyed, Some("cat-retry"));
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_param(
        &customer.post("/v1/orders", &keyed, Some("cat-new")),
        422,
        "unknown_sku",
        "lines[0].sku",
    );
    let reply = put_price(&merchandiser, &priced, &json!({"price": 2500}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let exact = order(&customer_id, &[(&priced, 1, Some(1999))]);
    let stale = customer.post("/v1/orders", &exact, Some("cat-exact"));
    assert_param(&stale, 422, "price_mismatch", "lines[0].unit_price");
    assert_eq!(admin.stock(&priced).reserved, 4);

    // The catalog lists in SKU order, a page at a time.
    let mut listed = Vec::new();
    let mut path = "/v1/catalog?limit=1".to_string();
    loop {
        let (status, page) = operator.get_json(&path);
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 1, "{page}");
        listed.extend(items.iter().map(|e| e["sku"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/catalog?limit=1&after={next}"),
            None => break,
        }
    }
    let mut expected = vec![priced.clone(), inactive.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    // Every price change is audited with what it set.
    let (status, audit) = admin.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{audit}");
    let changes: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "catalog.price_set" && e["target"] == priced.as_str())
        .collect();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(changes[0]["detail"], "price=1999 active=true");
    assert_eq!(changes[2]["detail"], "price=2500 active=true");

    // Snapshots hold the catalog, and a SIGKILL loses no price. Stock moves on 16 more SKUs
    // give both shards events past the interval, wherever the SKUs above hash to.
    for _ in 0..2 {
        for i in 0..16 {
            admin.adjust_stock(&format!("CAT-FILL-{i}"), 1);
        }
    }
    wait_for_snapshots(&server, 2);
    server.restart();
    let admin = server.client();
    let customer = admin.with_key(&customer_secret);
    let (status, entry) = admin.get_json(&format!("/v1/catalog/{priced}"));
    assert_eq!(
        (status, &entry["price"], &entry["active"]),
        (200, &json!(2500), &json!(true))
    );
    let (status, entry) = admin.get_json(&format!("/v1/catalog/{inactive}"));
    assert_eq!(
        (status, &entry["price"], &entry["active"]),
        (200, &json!(500), &json!(false))
    );
    let placed = customer.post(
        "/v1/orders",
        &order(&customer_id, &[(&priced, 1, None)]),
        None,
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(placed.body["total"], 2500);
    let again = customer.post("/v1/orders", &keyed, Some("cat-retry"));
    assert_eq!(
        (again.status, &again.body["id"]),
        (201, &retry_id),
        "{}",
        again.body
    );
}

#[test]
fn with_client_prices_off_the_catalog_prices_every_key() {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__ORDERS__CLIENT_PRICES", "false"),
            ("ORDERD__SHOP__CURRENCY", "EUR"),
        ],
    );
    let admin = server.client();
    let customer_id = admin.create_customer();
    let (priced, unpriced) = (unique("CP-P"), unique("CP-U"));
    admin.adjust_stock(&priced, 10);
    admin.adjust_stock(&unpriced, 10);
    let frontend = key(&admin, "frontend", None);
    let set = put_price(&admin, &priced, &json!({"price": 350}));
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["currency"], "EUR");

    // A frontend's differing price is refused; an omitted one takes the catalog's.
    assert_param(
        &frontend.post(
            "/v1/orders",
            &order(&customer_id, &[(&priced, 1, Some(100))]),
            None,
        ),
        422,
        "price_mismatch",
        "lines[0].unit_price",
    );
    let placed = frontend.post(
        "/v1/orders",
        &order(&customer_id, &[(&priced, 2, None)]),
        None,
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(placed.body["lines"][0]["unit_price"], 350);
    assert_eq!(placed.body["total"], 700);
    let matching = frontend.post(
        "/v1/orders",
        &order(&customer_id, &[(&priced, 1, Some(350))]),
        None,
    );
    assert_eq!(matching.status, 201, "{}", matching.body);
    // Admin keys too; and a SKU without a price is unknown.
    assert_param(
        &admin.post(
            "/v1/orders",
            &order(&customer_id, &[(&unpriced, 1, Some(5))]),
            None,
        ),
        422,
        "unknown_sku",
        "lines[0].sku",
    );
    assert_eq!(admin.stock(&priced).reserved, 3);
    assert_eq!(admin.stock(&unpriced).reserved, 0);
}

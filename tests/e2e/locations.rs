//! Stock locations (warehouses) through the real server (API.md, Commerce): `default` always
//! exists; stock is kept per (SKU, location); placement allocates each line by location
//! priority, splitting it where one location cannot cover it, all or nothing across shards;
//! shipments take units out of the allocated locations; returns restock where the units were
//! shipped from; transfers move available units and conserve totals. All of it is audited,
//! answers bad input with the documented problems, and survives snapshots, a kill -9 and a
//! backup restore.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use orderd_engine::backup::{NoProgress, Repo, RestoreOptions};
use orderd_engine::state::shard_of_sku;
use orderd_engine::CustomerId;
use serde_json::{json, Value};

use crate::support::{assert_problem, serial, unique, Client, Reply, Server};

const SHARDS: u16 = 4;

/// A fresh SKU named after `prefix` that lives on `shard`.
fn sku_on(shard: u16, prefix: &str) -> String {
    let base = unique(prefix);
    (0..10_000)
        .map(|n| format!("{base}-{n}"))
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

fn define(client: &Client, id: &str, name: &str, priority: u32) -> Reply {
    client.post(
        "/v1/locations",
        &json!({"id": id, "name": name, "priority": priority}),
        None,
    )
}

fn adjust_at(client: &Client, sku: &str, location: &str, delta: i64) -> Reply {
    client.post(
        &format!("/v1/stock/{sku}/adjustments"),
        &json!({"delta": delta, "reason": "receive", "location": location}),
        None,
    )
}

fn transfer(client: &Client, sku: &str, from: &str, to: &str, qty: u64) -> Reply {
    client.post(
        &format!("/v1/stock/{sku}/transfers"),
        &json!({"from": from, "to": to, "qty": qty, "reason": "rebalance"}),
        None,
    )
}

/// `(location, on_hand, reserved, available)` of a SKU, each location listed once, with the
/// totals checked to be their sums.
fn by_location(client: &Client, sku: &str) -> Vec<(String, u64, u64, u64)> {
    let (status, stock) = client.get_json(&format!("/v1/stock/{sku}"));
    assert_eq!(status, 200, "{stock}");
    let rows: Vec<(String, u64, u64, u64)> = stock["locations"]
        .as_array()
        .unwrap_or_else(|| panic!("no locations: {stock}"))
        .iter()
        .map(|l| {
            let n = |f: &str| l[f].as_u64().unwrap_or_else(|| panic!("{f}: {l}"));
            assert_eq!(n("available"), n("on_hand") - n("reserved"), "{l}");
            (
                l["location"].as_str().unwrap().to_string(),
                n("on_hand"),
                n("reserved"),
                n("available"),
            )
        })
        .collect();
    let sum = |i: usize| -> u64 { rows.iter().map(|r| [r.1, r.2, r.3][i]).sum::<u64>() };
    assert_eq!(stock["on_hand"].as_u64(), Some(sum(0)), "{stock}");
    assert_eq!(stock["reserved"].as_u64(), Some(sum(1)), "{stock}");
    assert_eq!(stock["available"].as_u64(), Some(sum(2)), "{stock}");
    assert_eq!(rows[0].0, "default", "default first: {stock}");
    rows
}

/// One location's (on_hand, reserved) of a SKU; (0, 0) where it never held the SKU.
fn at(client: &Client, sku: &str, location: &str) -> (u64, u64) {
    by_location(client, sku)
        .into_iter()
        .find(|r| r.0 == location)
        .map_or((0, 0), |r| (r.1, r.2))
}

/// The `allocations` of an order's line of `sku`, as (location, qty).
fn allocations(order: &Value, sku: &str) -> Vec<(String, u64)> {
    let line = order["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["sku"] == sku)
        .unwrap_or_else(|| panic!("no line {sku}: {order}"));
    line["allocations"]
        .as_array()
        .unwrap_or_else(|| panic!("no allocations: {line}"))
        .iter()
        .map(|a| {
            (
                a["location"].as_str().unwrap().to_string(),
                a["qty"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn place(client: &Client, customer: &str, lines: &[(&str, u32)]) -> Reply {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, qty)| json!({"sku": sku, "qty": qty, "unit_price": 100}))
        .collect();
    client.post(
        "/v1/orders",
        &json!({"customer_id": customer, "lines": lines}),
        None,
    )
}

fn get(client: &Client, path: &str) -> Value {
    let (status, body) = client.get_json(path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn list_locations(client: &Client) -> Vec<(String, String, u64)> {
    get(client, "/v1/locations")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_string(),
                l["name"].as_str().unwrap().to_string(),
                l["priority"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Everything a restart or a restore must keep.
fn state(client: &Client, skus: &[&str], orders: &[&str], ret: &str) -> Value {
    let stock: Vec<Value> = skus
        .iter()
        .map(|sku| get(client, &format!("/v1/stock/{sku}")))
        .collect();
    let orders: Vec<Value> = orders
        .iter()
        .map(|id| get(client, &format!("/v1/orders/{id}")))
        .collect();
    json!({
        "locations": get(client, "/v1/locations"),
        "stock": stock,
        "orders": orders,
        "return": get(client, &format!("/v1/returns/{ret}")),
    })
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
fn placement_allocates_by_priority_ships_and_restocks_per_location_and_survives_kill_9_and_restore()
{
    let _serial = serial();
    let mut server = Server::start_with_env(
        SHARDS as usize,
        &[
            ("ORDERD__ENGINE__SNAPSHOT_INTERVAL_EVENTS", "8"),
            ("RUST_LOG", "warn,orderd_engine=info"),
        ],
    );
    let admin = server.client();

    // `default` exists before anything is defined, and calls without a location use it.
    let initial = list_locations(&admin);
    assert!(
        initial.iter().any(|l| l.0 == "default"),
        "default always exists: {initial:?}"
    );
    let plain = sku_on(0, "LOC-PLAIN");
    admin.adjust_stock(&plain, 5);
    assert_eq!(
        by_location(&admin, &plain),
        vec![("default".to_string(), 5, 0, 5)]
    );

    // Two warehouses; a second POST of an id redefines it (200), the first creates (201).
    let created = define(&admin, "east", "East coast", 1);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body,
        json!({"id": "east", "name": "East coast", "priority": 1})
    );
    assert_eq!(define(&admin, "west", "West", 3).status, 201);
    let redefined = define(&admin, "west", "West coast", 2);
    assert_eq!(redefined.status, 200, "{}", redefined.body);
    assert_eq!(redefined.body["priority"], 2);
    let listed = list_locations(&admin);
    assert!(
        listed.contains(&("east".into(), "East coast".into(), 1)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("west".into(), "West coast".into(), 2)),
        "{listed:?}"
    );
    let ids: Vec<&String> = listed.iter().map(|l| &l.0).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listed in id order");
    // Paged: one per page, following `next`.
    let (_, first) = admin.get_json("/v1/locations?limit=1");
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    let next = first["next"].as_str().expect("a next cursor");
    let (_, second) = admin.get_json(&format!("/v1/locations?limit=1&after={next}"));
    assert!(
        second["items"][0]["id"].as_str().unwrap() > next,
        "{second}"
    );

    // Bad input: the documented problems, naming the field.
    for (body, param) in [
        (json!({"id": "no spaces", "name": "x", "priority": 1}), "id"),
        (json!({"id": "x", "name": "", "priority": 1}), "name"),
        (
            json!({"id": "x", "name": "x", "priority": 2_000_000}),
            "priority",
        ),
        (json!({"id": "x", "name": "x", "priority": -1}), "priority"),
        (
            json!({"id": "x", "name": "x", "priority": 1, "extra": 1}),
            "extra",
        ),
    ] {
        let reply = admin.post("/v1/locations", &body, None);
        assert_problem(&reply, 400, "invalid_request");
        assert_eq!(reply.body["param"], param, "{body}: {}", reply.body);
    }

    // Stock per location: A on shard 1 in east and west, none at default.
    let a = sku_on(1, "LOC-A");
    assert_eq!(adjust_at(&admin, &a, "east", 3).status, 200);
    let reply = adjust_at(&admin, &a, "west", 5);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["on_hand"], 8);
    assert_eq!(
        by_location(&admin, &a),
        vec![
            ("default".to_string(), 0, 0, 0),
            ("east".to_string(), 3, 0, 3),
            ("west".to_string(), 5, 0, 5),
        ]
    );
    assert_problem(&adjust_at(&admin, &a, "north", 1), 404, "not_found");
    assert_problem(&adjust_at(&admin, &a, "bad loc", 1), 400, "invalid_request");

    // A one-shard order (customer and SKU on shard 1): east first (priority 1), then west.
    let local_customer = customer_on(&admin, 1);
    let placed = place(&admin, &local_customer, &[(&a, 6)]);
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(
        allocations(&placed.body, &a),
        vec![("east".to_string(), 3), ("west".to_string(), 3)]
    );
    let order1 = placed.body["id"].as_str().unwrap().to_string();
    assert_eq!(at(&admin, &a, "east"), (3, 3));
    assert_eq!(at(&admin, &a, "west"), (5, 3));

    // B on shard 2: default (priority 0) before west; a cross-shard order from shard 3.
    let b = sku_on(2, "LOC-B");
    assert_eq!(adjust_at(&admin, &b, "west", 4).status, 200);
    assert_eq!(adjust_at(&admin, &b, "default", 5).status, 200);
    let cross_customer = customer_on(&admin, 3);
    // All or nothing: A has 2 available, so 3 of A refuses the whole order, B included.
    let refused = place(&admin, &cross_customer, &[(&a, 3), (&b, 1)]);
    assert_problem(&refused, 409, "insufficient_stock");
    assert_eq!(refused.body["skus"], json!([a.clone()]), "{}", refused.body);
    assert_eq!(at(&admin, &b, "default"), (5, 0));
    assert_eq!(at(&admin, &b, "west"), (4, 0));
    assert_eq!(at(&admin, &a, "west"), (5, 3));
    // Exactly what is available across locations is allocatable: 2 of A (west), 7 of B
    // (default 5, then west 2), split across two stock shards.
    let placed = place(&admin, &cross_customer, &[(&a, 2), (&b, 7)]);
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(allocations(&placed.body, &a), vec![("west".to_string(), 2)]);
    assert_eq!(
        allocations(&placed.body, &b),
        vec![("default".to_string(), 5), ("west".to_string(), 2)]
    );
    let order2 = placed.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(&admin, &format!("/v1/orders/{order2}"))["lines"],
        placed.body["lines"],
        "the order reads as placed"
    );
    assert_eq!(admin.stock(&a).available, 0);
    assert_problem(
        &place(&admin, &local_customer, &[(&a, 1)]),
        409,
        "insufficient_stock",
    );

    // Shipping 4 of order 1 takes east's 3, then 1 of west.
    let shipped = admin.post(
        &format!("/v1/orders/{order1}/shipments"),
        &json!({"carrier": "DHL", "lines": [{"sku": a, "qty": 4}]}),
        None,
    );
    assert_eq!(shipped.status, 201, "{}", shipped.body);
    assert_eq!(at(&admin, &a, "east"), (0, 0));
    assert_eq!(at(&admin, &a, "west"), (4, 4));
    // The cross-shard order ships everything: B's default and west, A's west.
    let shipped = admin.post(
        &format!("/v1/orders/{order2}/shipments"),
        &json!({"carrier": "UPS"}),
        None,
    );
    assert_eq!(shipped.status, 201, "{}", shipped.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while at(&admin, &b, "west") != (2, 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(at(&admin, &b, "default"), (0, 0));
    assert_eq!(at(&admin, &b, "west"), (2, 0));
    assert_eq!(at(&admin, &a, "west"), (2, 2));

    // Returning all 4 shipped units of order 1 restocks 3 at east and 1 at west.
    let opened = admin.post(
        &format!("/v1/orders/{order1}/returns"),
        &json!({"lines": [{"sku": a, "qty": 4}], "reason": "damaged box"}),
        None,
    );
    assert_eq!(opened.status, 201, "{}", opened.body);
    let ret = opened.body["id"].as_str().unwrap().to_string();
    let received = admin.post(
        &format!("/v1/returns/{ret}/receive"),
        &json!({"lines": [{"sku": a, "qty": 4, "restock": true}]}),
        None,
    );
    assert_eq!(received.status, 200, "{}", received.body);
    assert_eq!(at(&admin, &a, "east"), (3, 0));
    assert_eq!(at(&admin, &a, "west"), (3, 2));
    let split: Vec<(String, u64)> = received.body["received"]
        .as_array()
        .unwrap_or_else(|| panic!("no received lines: {}", received.body))
        .iter()
        .map(|l| {
            (
                l["location"].as_str().unwrap().to_string(),
                l["qty"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        split,
        vec![("east".to_string(), 3), ("west".to_string(), 1)]
    );
    // A return of the cross-shard order restocks B on its own shard where it shipped from:
    // the first 5 units left default, so 5 come back there, the 6th to west.
    let opened = admin.post(
        &format!("/v1/orders/{order2}/returns"),
        &json!({"lines": [{"sku": b, "qty": 6}], "reason": "wrong size"}),
        None,
    );
    assert_eq!(opened.status, 201, "{}", opened.body);
    let cross_ret = opened.body["id"].as_str().unwrap().to_string();
    let received = admin.post(
        &format!("/v1/returns/{cross_ret}/receive"),
        &json!({"lines": [{"sku": b, "qty": 6, "restock": true}]}),
        None,
    );
    assert_eq!(received.status, 200, "{}", received.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while at(&admin, &b, "west") != (3, 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(at(&admin, &b, "default"), (5, 0));
    assert_eq!(at(&admin, &b, "west"), (3, 0));

    // Transfers move available units and keep the totals; refusals move nothing.
    let before = admin.stock(&a);
    let moved = transfer(&admin, &a, "east", "west", 2);
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(at(&admin, &a, "east"), (1, 0));
    assert_eq!(at(&admin, &a, "west"), (5, 2));
    assert_eq!(admin.stock(&a), before, "a transfer conserves the totals");
    // West holds 5 with 2 reserved: 4 available is more than there is.
    assert_problem(
        &transfer(&admin, &a, "west", "default", 4),
        409,
        "insufficient_stock",
    );
    assert_problem(&transfer(&admin, &a, "east", "north", 1), 404, "not_found");
    assert_problem(
        &transfer(&admin, &a, "east", "east", 1),
        400,
        "invalid_request",
    );
    assert_problem(
        &transfer(&admin, &a, "east", "west", 0),
        400,
        "invalid_request",
    );
    assert_problem(
        &transfer(&admin, &unique("LOC-NONE"), "east", "west", 1),
        404,
        "not_found",
    );
    let reply = admin.post(
        &format!("/v1/stock/{a}/transfers"),
        &json!({"from": "east", "to": "west", "qty": 1}),
        None,
    );
    assert_problem(&reply, 400, "invalid_request");
    assert_eq!(reply.body["param"], "reason", "{}", reply.body);
    // A write-off below what a location reserves is refused though the total could take it.
    assert_problem(
        &adjust_at(&admin, &a, "west", -4),
        409,
        "insufficient_stock",
    );
    assert_eq!(at(&admin, &a, "west"), (5, 2));
    // A transfer under an Idempotency-Key moves once.
    let key = unique("xfer");
    for _ in 0..2 {
        let reply = admin.post(
            &format!("/v1/stock/{a}/transfers"),
            &json!({"from": "west", "to": "east", "qty": 1, "reason": "rebalance"}),
            Some(&key),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(at(&admin, &a, "east"), (2, 0));
    assert_eq!(at(&admin, &a, "west"), (4, 2));
    assert_eq!(admin.stock(&a), before);

    // Audited: the definitions once each (not once per shard), the transfers, the
    // located adjustments.
    let (status, audit) = admin.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{audit}");
    let entries = audit["items"].as_array().unwrap();
    let count = |action: &str, target: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["target"] == target)
            .count()
    };
    assert_eq!(count("location.set", "east"), 1, "{audit}");
    assert_eq!(count("location.set", "west"), 2, "{audit}");
    assert_eq!(count("stock.transfer", &a), 2, "{audit}");
    assert!(entries.iter().any(|e| e["action"] == "stock.adjust"
        && e["target"] == a.as_str()
        && e["detail"].as_str().unwrap().contains("location=west")));

    // Snapshots hold it, and a kill -9 loses none of it.
    let skus = [plain.as_str(), a.as_str(), b.as_str()];
    let orders = [order1.as_str(), order2.as_str()];
    let expected = state(&admin, &skus, &orders, &ret);
    wait_for_snapshots(&server, 2);
    server.restart();
    let admin = server.client();
    assert_eq!(state(&admin, &skus, &orders, &ret), expected);
    assert_eq!(
        at(&admin, &b, "default"),
        (5, 0),
        "{cross_ret} restocked once"
    );
    // And after the restart allocation goes on from the recovered buckets: east (2) first.
    let placed = place(&admin, &local_customer, &[(&a, 3)]);
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(
        allocations(&placed.body, &a),
        vec![("east".to_string(), 2), ("west".to_string(), 1)]
    );
    let order3 = placed.body["id"].as_str().unwrap().to_string();

    // A backup restores the locations, the buckets and the allocations.
    let orders = [order1.as_str(), order2.as_str(), order3.as_str()];
    let expected = state(&admin, &skus, &orders, &ret);
    let (status, backup) = admin.post_json("/v1/ops/backups", &json!({}), None);
    assert_eq!(status, 201, "{backup}");
    let id = backup["id"].as_str().unwrap().to_string();
    let repo = Repo::new(server.root().join("backups"), server.manifest_keys());
    let root = tempfile::tempdir().expect("tempdir");
    let key = "orderd-master.key";
    fs::copy(server.root().join(key), root.path().join(key)).expect("copy the master key");
    let data = root.path().join("data");
    repo.restore(&id, &data, RestoreOptions::default(), &NoProgress)
        .expect("restore");
    fs::copy(server.data_dir().join("admin.key"), data.join("admin.key")).expect("admin.key");
    let keys = server.root().join("backups").join("customer.keys");
    if keys.is_file() {
        fs::copy(&keys, data.join("customer.keys")).expect("copy customer.keys");
    }
    let restored = Server::start_in(root.path(), SHARDS as usize);
    assert_eq!(state(&restored.client(), &skus, &orders, &ret), expected);
}

#[test]
fn locations_are_bounded_by_config_and_roles_are_enforced() {
    let _serial = serial();
    // `default` and two more.
    let server = Server::start_with_env(2, &[("ORDERD__STOCK__LOCATIONS_MAX", "3")]);
    let admin = server.client();
    assert_eq!(define(&admin, "one", "One", 1).status, 201);
    assert_eq!(define(&admin, "two", "Two", 2).status, 201);
    assert_problem(
        &define(&admin, "three", "Three", 3),
        409,
        "invalid_transition",
    );
    // Redefining an existing one is not a new location.
    assert_eq!(define(&admin, "two", "Two again", 2).status, 200);
    assert_eq!(define(&admin, "default", "Main", 9).status, 200);
    let listed = list_locations(&admin);
    assert_eq!(
        listed,
        vec![
            ("default".to_string(), "Main".to_string(), 9),
            ("one".to_string(), "One".to_string(), 1),
            ("two".to_string(), "Two again".to_string(), 2),
        ]
    );

    // Logistics defines and transfers; readers of stock list; the others are refused.
    let key = |role: &str| {
        let (status, body) = admin.post_json(
            "/v1/keys",
            &json!({"name": unique(role), "role": role}),
            None,
        );
        assert_eq!(status, 201, "{body}");
        admin.with_key(body["secret"].as_str().unwrap())
    };
    let logistics = key("logistics");
    let frontend = key("frontend");
    let auditor = key("auditor");
    assert_eq!(define(&logistics, "one", "One", 1).status, 200);
    assert_problem(&define(&frontend, "one", "One", 1), 403, "forbidden");
    assert_eq!(frontend.get("/v1/locations").status, 200);
    assert_problem(&auditor.get("/v1/locations"), 403, "forbidden");
    let sku = unique("LOC-R");
    assert_eq!(adjust_at(&logistics, &sku, "one", 4).status, 200);
    assert_eq!(transfer(&logistics, &sku, "one", "two", 4).status, 200);
    assert_problem(
        &transfer(&frontend, &sku, "two", "one", 1),
        403,
        "forbidden",
    );
    assert_eq!(at(&admin, &sku, "two"), (4, 0));
    assert_eq!(at(&admin, &sku, "one"), (0, 0));
}

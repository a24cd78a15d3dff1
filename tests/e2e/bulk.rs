//! Bulk import through the real binary (`POST /v1/orders/bulk`, `orderctl orders import`): an
//! outcome per input line in input order, a bad line fails alone, exactly the stock there is
//! is sold, a rerun of the same file answers every keyed line as it was first answered, and the
//! line and byte bounds refuse the whole request.

use serde_json::{json, Value};

use crate::orderctl::as_key;
use crate::support::{assert_problem, serial, unique, Client, Reply, Server};

/// Posts an NDJSON body.
fn bulk(client: &Client, body: &str) -> Reply {
    client.send_text("POST", "/v1/orders/bulk", "application/x-ndjson", body)
}

/// The answer's outcomes, one JSON object per line.
fn outcomes(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.content_type.starts_with("application/x-ndjson"),
        "{}",
        reply.content_type
    );
    let text = match &reply.body {
        Value::String(text) => text.clone(),
        // A single line parses as JSON on its own.
        other => other.to_string(),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("an outcome line is JSON"))
        .collect()
}

fn order_line(customer: &str, sku: &str, key: Option<&str>) -> String {
    let mut line =
        json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 250}]});
    if let Some(key) = key {
        line["idempotency_key"] = json!(key);
    }
    line.to_string()
}

#[test]
fn bulk_import_answers_every_line_in_order_sells_exactly_the_stock_and_replays() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let customer = admin.create_customer();
    let sku = unique("BULK");
    admin.adjust_stock(&sku, 60);

    // 100 keyed one-unit orders against 60 units, with bad lines among them and a blank line.
    let mut lines = Vec::new();
    let mut expected: Vec<(usize, &str)> = Vec::new(); // (file line, what it is)
    let run = unique("run");
    for i in 0..100 {
        match i {
            10 => {
                lines.push("{not json".to_string());
                expected.push((lines.len(), "malformed"));
            }
            20 => {
                lines.push(String::new());
            }
            30 => {
                let mut bad = json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 250}]});
                bad["colour"] = json!("red");
                lines.push(bad.to_string());
                expected.push((lines.len(), "unknown field"));
            }
            40 => {
                lines.push(order_line("cus_999999999", &sku, Some(&format!("{run}-x"))));
                expected.push((lines.len(), "unknown customer"));
            }
            50 => {
                lines.push(json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 250}], "idempotency_key": 7}).to_string());
                expected.push((lines.len(), "bad key"));
            }
            _ => {}
        }
        lines.push(order_line(&customer, &sku, Some(&format!("{run}-{i}"))));
        expected.push((lines.len(), "order"));
    }
    let body = lines.join("\n") + "\n";
    let first = outcomes(&bulk(&admin, &body));
    assert_eq!(
        first.len(),
        expected.len(),
        "one outcome per non-blank line"
    );
    let mut placed = Vec::new();
    let mut short = 0;
    for (outcome, (line, what)) in first.iter().zip(&expected) {
        assert_eq!(outcome["line"], json!(line), "{outcome}");
        let status = outcome["status"].as_u64().unwrap();
        match *what {
            "malformed" | "unknown field" | "bad key" => {
                assert_eq!(status, 400, "{what}: {outcome}");
                assert_eq!(outcome["error"]["code"], "invalid_request", "{outcome}");
            }
            "unknown customer" => {
                assert_eq!(status, 422, "{outcome}");
                assert_eq!(outcome["error"]["code"], "unknown_customer", "{outcome}");
            }
            _ => match status {
                201 => {
                    assert_eq!(outcome["order"]["status"], "confirmed", "{outcome}");
                    assert!(outcome.get("error").is_none(), "{outcome}");
                    placed.push(outcome["order"]["id"].as_str().unwrap().to_string());
                }
                409 => {
                    assert_eq!(outcome["error"]["code"], "insufficient_stock", "{outcome}");
                    assert_eq!(outcome["error"]["skus"], json!([sku]), "{outcome}");
                    short += 1;
                }
                other => panic!("unexpected status {other}: {outcome}"),
            },
        }
    }
    assert_eq!(
        bulk(&admin, &body).status,
        200,
        "the server keeps serving bulk imports"
    );
    // The first answer sold exactly the stock there was.
    assert_eq!(placed.len(), 60, "exactly the stock is sold");
    assert_eq!(short, 40);
    let stock = admin.stock(&sku);
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (60, 60, 0)
    );

    // The same file again (it was also sent a second time above): every keyed order line
    // answers its first outcome, nothing more is reserved.
    let again = outcomes(&bulk(&admin, &body));
    for (before, after) in first.iter().zip(&again) {
        assert_eq!(before["line"], after["line"]);
        assert_eq!(before["status"], after["status"], "{before} / {after}");
        if before["status"] == 201 {
            assert_eq!(before["order"]["id"], after["order"]["id"]);
        }
    }
    let stock = admin.stock(&sku);
    assert_eq!((stock.reserved, stock.available), (60, 0));
    let listed = admin.list_orders(&format!("customer_id={customer}"));
    assert_eq!(listed.len(), 60, "no order placed twice");
}

#[test]
fn bulk_import_bounds_roles_and_orderctl() {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__ORDERS__BULK_MAX", "5"),
            ("ORDERD__ORDERS__BULK_MAX_BYTES", "2048"),
        ],
    );
    let admin = server.client();
    let customer = admin.create_customer();
    let sku = unique("BULKB");
    admin.adjust_stock(&sku, 100);
    let line = order_line(&customer, &sku, None);

    // Six lines: over orders.bulk_max, refused whole; nothing placed.
    let six = vec![line.clone(); 6].join("\n");
    let reply = bulk(&admin, &six);
    assert_problem(&reply, 400, "invalid_request");
    assert_eq!(reply.body["param"], "body", "{}", reply.body);
    // No order line at all (an empty or blank body): refused whole.
    let reply = bulk(&admin, "\n  \n");
    assert_problem(&reply, 400, "invalid_request");
    assert_eq!(reply.body["param"], "body", "{}", reply.body);
    // Over orders.bulk_max_bytes.
    let long = format!("{}\n", "x".repeat(3000));
    assert_problem(&bulk(&admin, &long), 413, "payload_too_large");
    assert_eq!(
        admin.stock(&sku).reserved,
        0,
        "a refused import places nothing"
    );

    // Roles: admin and frontend; others 403, a customer key 404, no key 401.
    let key = |role: &str, customer_id: Option<&str>| {
        let mut body = json!({"name": unique(role), "role": role});
        if let Some(id) = customer_id {
            body["customer_id"] = json!(id);
        }
        let (status, key) = admin.post_json("/v1/keys", &body, None);
        assert_eq!(status, 201, "{key}");
        key["secret"].as_str().unwrap().to_string()
    };
    let frontend = key("frontend", None);
    let five = vec![line.clone(); 5].join("\n");
    assert_eq!(outcomes(&bulk(&admin.with_key(&frontend), &five)).len(), 5);
    assert_problem(
        &bulk(&admin.with_key(&key("analyst", None)), &five),
        403,
        "forbidden",
    );
    assert_problem(
        &bulk(&admin.with_key(&key("customer", Some(&customer))), &five),
        404,
        "not_found",
    );
    assert_problem(&bulk(&admin.without_key(), &five), 401, "unauthorized");
    assert_eq!(admin.stock(&sku).reserved, 5);

    // orderctl: a file of 12 orders (one bad) in chunks of 5, a summary, results numbered by
    // the file's lines, exit 1 because one line failed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.ndjson");
    let results = dir.path().join("results.ndjson");
    let mut text = String::new();
    for i in 0..12 {
        if i == 7 {
            text.push_str("{\"customer_id\": 5}\n\n");
        } else {
            text.push_str(&order_line(&customer, &sku, Some(&format!("ctl-{i}"))));
            text.push('\n');
        }
    }
    std::fs::write(&file, &text).unwrap();
    let run = as_key(
        &server,
        server.admin_key(),
        &[
            "--output",
            "json",
            "orders",
            "import",
            file.to_str().unwrap(),
            "--chunk",
            "5",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "one line failed");
    let summary = run.json();
    assert_eq!(summary["lines"], 12);
    assert_eq!(summary["placed"], 11);
    assert_eq!(summary["failed_by_code"]["invalid_request"], 1);
    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    // File line 8 is the bad one (line 9 is blank and skipped, so the rest shift by one).
    let bad: Vec<&Value> = lines.iter().filter(|l| l["status"] != 201).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["line"], 8);
    assert_eq!(lines.last().unwrap()["line"], 13);
    assert_eq!(admin.stock(&sku).reserved, 16);
    // A rerun is safe: the keyed lines answer their orders again, nothing more is reserved.
    let rerun = as_key(
        &server,
        server.admin_key(),
        &["orders", "import", file.to_str().unwrap(), "--chunk", "5"],
    );
    assert_eq!(rerun.code, 1);
    assert!(rerun.stdout.contains("placed"), "{}", rerun.stdout);
    assert_eq!(admin.stock(&sku).reserved, 16);
}

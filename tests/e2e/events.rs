//! Events, the live stream and signed webhooks through the real server (API.md, Commerce):
//! every change is an event with a global cursor, paged oldest first and filtered by type; the
//! server-sent stream resumes with `Last-Event-ID` without gaps or duplicates; a receiver on
//! loopback gets signed deliveries in order, retried after a 500, across a kill -9 mid-retry
//! without losing one or re-sending an acknowledged one; webhook URLs that would reach
//! loopback or private addresses are refused unless `webhooks.allow_private`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac_check::verify;
use serde_json::{json, Value};

use crate::support::{assert_problem, order_body, serial, unique, Client, Server};

/// HMAC-SHA256 as a receiver checks it (RFC 2104 over SHA-256 from `sha2`).
mod hmac_check {
    use sha2::{Digest, Sha256};

    fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        inner.update(message);
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// Whether `header` (`t=…,v1=…`) signs `body` under `secret`.
    pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = Some(value),
                Some(("v1", value)) => v1 = Some(value),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(body);
        hex::encode(hmac_sha256(secret.as_bytes(), &message)) == v1
    }
}

/// Every item of a paged list at `path` (which holds its query, `limit` included), following
/// `next` through `after`.
fn all_items(client: &Client, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page_path = match &after {
            Some(after) => format!("{path}&after={after}"),
            None => path.to_string(),
        };
        let (status, page) = client.get_json(&page_path);
        assert_eq!(status, 200, "GET {page_path}: {page}");
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return out,
        }
    }
}

/// Every event of `types` (None: all), paged with `limit`.
fn all_events(client: &Client, types: Option<&str>, limit: usize) -> Vec<Value> {
    let mut path = format!("/v1/events?limit={limit}");
    if let Some(types) = types {
        path.push_str(&format!("&types={types}"));
    }
    all_items(client, &path)
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

fn place(client: &Client, customer: &str, sku: &str, qty: u32) -> String {
    let (status, order) = client.post_json(
        "/v1/orders",
        &order_body(customer, &[(sku.to_string(), qty, 250)]),
        None,
    );
    assert_eq!(status, 201, "{order}");
    order["id"].as_str().unwrap().to_string()
}

#[test]
fn events_are_paged_from_a_cursor_and_filtered_by_type() {
    let _serial = serial();
    let server = Server::start_with_env(4, &[("ORDERD__EVENTS__STOCK_LOW_THRESHOLD", "5")]);
    let client = server.client();
    let customer = client.create_customer();
    let a = unique("EVA");
    let b = unique("EVB");
    client.adjust_stock(&a, 10);
    client.adjust_stock(&b, 10);
    // One-shard and cross-shard orders alike: each confirmed once.
    let o1 = place(&client, &customer, &a, 2);
    let o2 = place(&client, &customer, &a, 4); // available 10 → 4: below 5, stock.low
    let (status, o3) = client.post_json(
        "/v1/orders",
        &order_body(&customer, &[(a.clone(), 1, 100), (b.clone(), 1, 100)]),
        None,
    );
    assert_eq!(status, 201, "{o3}");
    let o3 = o3["id"].as_str().unwrap().to_string();
    let r = client.post(
        &format!("/v1/orders/{o1}/cancel"),
        &json!({"reason": "changed mind"}),
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = client.post(
        &format!("/v1/orders/{o2}/shipments"),
        &json!({"carrier": "dhl"}),
        None,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let shipment = r.body["id"].as_str().unwrap().to_string();
    let r = client.post(
        &format!("/v1/shipments/{shipment}/events"),
        &json!({"status": "delivered"}),
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = client.post(
        &format!("/v1/orders/{o2}/refunds"),
        &json!({"amount": 100, "reason": "late"}),
        None,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = client.post(
        &format!("/v1/orders/{o2}/returns"),
        &json!({"lines": [{"sku": a, "qty": 1}], "reason": "broken"}),
        None,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ret = r.body["id"].as_str().unwrap().to_string();
    let r = client.post(
        &format!("/v1/returns/{ret}/receive"),
        &json!({"lines": [{"sku": a, "qty": 1, "restock": false}]}),
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The whole feed, paged two at a time: ids strictly ascending, each event once.
    let events = all_events(&client, None, 2);
    let listed = ids(&events);
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(listed, sorted, "oldest first, no duplicates");
    assert_eq!(
        events,
        all_events(&client, None, 1000),
        "page size changes nothing"
    );
    let of = |t: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == t).collect() };
    for event in &events {
        assert!(event["at"].as_str().unwrap().ends_with('Z'), "{event}");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
    }
    let confirmed: Vec<&str> = of("order.confirmed")
        .iter()
        .map(|e| e["data"]["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(confirmed, vec![o1.as_str(), o2.as_str(), o3.as_str()]);
    assert_eq!(of("order.confirmed")[1]["data"]["total"], 1000);
    assert_eq!(of("order.cancelled").len(), 1);
    assert_eq!(of("order.cancelled")[0]["data"]["order_id"], o1.as_str());
    assert_eq!(of("order.cancelled")[0]["data"]["reason"], "changed mind");
    assert_eq!(
        of("order.shipped")[0]["data"]["shipment_id"],
        shipment.as_str()
    );
    assert_eq!(of("order.shipped")[0]["data"]["status"], "shipped");
    assert_eq!(of("shipment.updated")[0]["data"]["status"], "delivered");
    assert_eq!(of("order.delivered")[0]["data"]["order_id"], o2.as_str());
    assert_eq!(of("order.refunded")[0]["data"]["amount"], 100);
    assert_eq!(of("return.received")[0]["data"]["return_id"], ret.as_str());
    assert_eq!(
        of("order.returned")[0]["data"]["status"],
        "partially_returned"
    );
    let low = of("stock.low");
    assert_eq!(low.len(), 1, "available crossed below 5 once: {low:?}");
    assert_eq!(
        low[0]["data"],
        json!({"sku": a, "available": 4, "threshold": 5})
    );

    // A type filter, and a cursor in the middle.
    let only = all_events(&client, Some("order.cancelled,stock.low"), 1);
    assert_eq!(only.len(), 2);
    assert!(only
        .iter()
        .all(|e| e["type"] == "order.cancelled" || e["type"] == "stock.low"));
    let middle = &listed[3];
    let (status, page) = client.get_json(&format!("/v1/events?after={middle}&limit=1000"));
    assert_eq!(status, 200);
    assert_eq!(ids(page["items"].as_array().unwrap()), listed[4..].to_vec());
    assert_eq!(page["next"], Value::Null);

    // Events survive a restart; new ones continue after the old cursor.
    let mut server = server;
    server.restart();
    let client = server.client();
    assert_eq!(all_events(&client, None, 1000), events);
    place(&client, &customer, &b, 1);
    let after = all_events(&client, None, 1000);
    assert_eq!(after.len(), events.len() + 1);
    assert!(after.last().unwrap()["id"].as_str().unwrap() > listed.last().unwrap().as_str());

    // Bad input.
    for (query, param) in [
        ("after=ord_1", "after"),
        ("types=order.placed", "types"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("colour=red", "colour"),
    ] {
        let r = client.get(&format!("/v1/events?{query}"));
        assert_problem(&r, 400, "invalid_request");
        assert_eq!(r.body["param"], param, "{query}: {:?}", r.body);
    }
}

/// Reads server-sent events until `count` events arrived; (id, event) each.
fn read_sse(reader: &mut impl BufRead, count: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut id = None;
    let mut line = String::new();
    while out.len() < count {
        line.clear();
        let n = reader.read_line(&mut line).expect("read the stream");
        assert!(n > 0, "the stream ended after {} events", out.len());
        let text = line.trim_end();
        if let Some(value) = text.strip_prefix("id: ") {
            id = Some(value.to_string());
        } else if let Some(data) = text.strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data).expect("event JSON");
            let id = id.take().expect("id: before data:");
            assert_eq!(event["id"], id.as_str());
            out.push((id, event));
        }
    }
    out
}

#[test]
fn the_stream_sends_live_events_and_resumes_with_last_event_id_without_gaps() {
    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    let customer = client.create_customer();
    let sku = unique("SSE");
    client.adjust_stock(&sku, 1000);
    let start = all_events(&client, None, 1000)
        .last()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "evt_0000000000000000".into());
    let path = "/v1/events/stream?types=order.confirmed";
    let resp = client
        .open_stream(path, &[("Last-Event-ID", &start)])
        .unwrap_or_else(|r| panic!("stream refused: {r:?}"));
    assert_eq!(resp.content_type(), "text/event-stream");
    let mut reader = BufReader::new(resp.into_reader());
    let mut placed: Vec<String> = (0..5).map(|_| place(&client, &customer, &sku, 1)).collect();
    let first = read_sse(&mut reader, 5);
    drop(reader);
    // While nobody listens, more happens; then the client resumes from its last id.
    placed.extend((0..5).map(|_| place(&client, &customer, &sku, 1)));
    let last_seen = first.last().unwrap().0.clone();
    let resp = client
        .open_stream(path, &[("Last-Event-ID", &last_seen)])
        .unwrap_or_else(|r| panic!("stream refused: {r:?}"));
    let mut reader = BufReader::new(resp.into_reader());
    let second = read_sse(&mut reader, 5);
    // Live again on the resumed stream.
    placed.push(place(&client, &customer, &sku, 1));
    let third = read_sse(&mut reader, 1);
    let streamed: Vec<(String, Value)> = first.into_iter().chain(second).chain(third).collect();
    let orders: Vec<&str> = streamed
        .iter()
        .map(|(_, e)| e["data"]["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        orders,
        placed.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Exactly the feed's events, in its order: no gap, no duplicate.
    let feed_path = format!("/v1/events?types=order.confirmed&limit=1000&after={start}");
    let (status, feed) = client.get_json(&feed_path);
    assert_eq!(status, 200);
    let feed_ids = ids(feed["items"].as_array().unwrap());
    let streamed_ids: Vec<String> = streamed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(streamed_ids, feed_ids);
    // A bad Last-Event-ID is refused.
    let refused = client
        .open_stream(path, &[("Last-Event-ID", "42")])
        .expect_err("400");
    assert_problem(&refused, 400, "invalid_request");
    assert_eq!(refused.body["param"], "Last-Event-ID");
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    event_id: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

/// A webhook receiver on 127.0.0.1: answers each request with `answer(event id, nth request
/// of this event)`, and keeps every request.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(answer: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(answer);
        let kept = got.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (got, answer) = (kept.clone(), answer.clone());
                thread::spawn(move || serve(stream, &got, &*answer));
            }
        });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds of what was received.
    fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {got:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(stream: TcpStream, got: &Mutex<Vec<Received>>, answer: &dyn Fn(&str, usize) -> u16) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let text = line.trim_end();
            if text.is_empty() {
                break;
            }
            if let Some((name, value)) = text.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let event_id = headers.get("orderd-event-id").cloned().unwrap_or_default();
        let status = {
            let mut got = got.lock().unwrap();
            let nth = got.iter().filter(|r| r.event_id == event_id).count();
            let status = answer(&event_id, nth);
            got.push(Received {
                event_id,
                signature: headers.get("orderd-signature").cloned().unwrap_or_default(),
                body,
                answered: status,
            });
            status
        };
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

const FAST_RETRIES: [(&str, &str); 3] = [
    ("ORDERD__WEBHOOKS__ALLOW_PRIVATE", "true"),
    ("ORDERD__WEBHOOKS__BACKOFF_INITIAL_MS", "100"),
    ("ORDERD__WEBHOOKS__BACKOFF_MAX_MS", "300"),
];

fn create_hook(client: &Client, url: &str, types: &[&str]) -> (String, String) {
    let (status, hook) =
        client.post_json("/v1/webhooks", &json!({"url": url, "types": types}), None);
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    (hook["id"].as_str().unwrap().to_string(), secret)
}

/// Deliveries acknowledged with a 2xx, by event id, in arrival order.
fn acknowledged(got: &[Received]) -> Vec<String> {
    got.iter()
        .filter(|r| (200..300).contains(&r.answered))
        .map(|r| r.event_id.clone())
        .collect()
}

#[test]
fn webhooks_are_signed_delivered_in_order_and_retried_after_errors() {
    let _serial = serial();
    let server = Server::start_with_env(2, &FAST_RETRIES);
    let client = server.client();
    // The first event is refused twice (500), then taken; every other at once.
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = first.clone();
    let receiver = Receiver::start(move |event, nth| {
        let mut first = seen.lock().unwrap();
        let first = first.get_or_insert_with(|| event.to_string());
        if first == event && nth < 2 {
            500
        } else {
            204
        }
    });
    let (hook, secret) = create_hook(
        &client,
        &receiver.url(),
        &["order.confirmed", "order.cancelled"],
    );
    let (status, list) = client.get_json("/v1/webhooks");
    assert_eq!(status, 200);
    let listed = &list["items"].as_array().unwrap()[0];
    assert_eq!(listed["id"], hook.as_str());
    assert!(
        listed.get("secret").is_none(),
        "the secret is shown once: {listed}"
    );

    let customer = client.create_customer();
    let sku = unique("WHK");
    client.adjust_stock(&sku, 100);
    let orders: Vec<String> = (0..3).map(|_| place(&client, &customer, &sku, 1)).collect();
    let r = client.post(
        &format!("/v1/orders/{}/cancel", orders[1]),
        &json!({}),
        None,
    );
    assert_eq!(r.status, 200);
    let got = receiver.wait("4 acknowledged deliveries", |got| {
        acknowledged(got).len() >= 4
    });
    let feed = ids(&all_events(
        &client,
        Some("order.confirmed,order.cancelled"),
        1000,
    ));
    assert_eq!(acknowledged(&got), feed, "in order, each once");
    for r in &got {
        assert!(verify(&secret, &r.signature, &r.body), "signature of {r:?}");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], r.event_id.as_str());
        assert!(!verify("whsec_other", &r.signature, &r.body));
    }
    // Order per endpoint: nothing after the first event was sent before it was taken.
    let first_ok = got.iter().position(|r| r.answered == 204).unwrap();
    assert!(
        got[..first_ok].iter().all(|r| r.event_id == feed[0]),
        "{got:?}"
    );
    assert_eq!(first_ok, 2, "two 500s, then the retry: {got:?}");

    let (status, deliveries) = client.get_json(&format!("/v1/webhooks/{hook}/deliveries"));
    assert_eq!(status, 200, "{deliveries}");
    let items = deliveries["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{deliveries}");
    assert_eq!(items[0]["event_id"], feed[0].as_str());
    assert_eq!(items[0]["attempts"], 3);
    assert!(items
        .iter()
        .all(|d| d["status"] == "delivered" && d["last_status_code"] == 204));
    assert!(items.iter().all(|d| d["next_attempt_at"].is_null()));

    let r = client.call("DELETE", &format!("/v1/webhooks/{hook}"), None, None);
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        client
            .get(&format!("/v1/webhooks/{hook}/deliveries"))
            .status,
        404
    );
    place(&client, &customer, &sku, 1);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        receiver.got().len(),
        got.len(),
        "nothing goes to a deleted endpoint"
    );
}

/// Every delivery record of `hook`, oldest first, paged.
fn all_deliveries(client: &Client, hook: &str) -> Vec<Value> {
    all_items(client, &format!("/v1/webhooks/{hook}/deliveries?limit=500"))
}

/// Past `webhooks.deliveries_max`, old delivery records are deleted in steps of 1,024 cursors
/// (one range delete each, not one per delivery, which slowed RocksDB's reads to a crawl): an
/// endpoint keeps the newest `deliveries_max` records and at most 1,024 more, and every event
/// is still delivered once, in order.
#[test]
fn delivery_records_are_trimmed_past_their_bound_and_every_event_is_delivered() {
    const KEEP: usize = 5;
    const STEP: usize = 1024;
    let _serial = serial();
    let keep = KEEP.to_string();
    let mut env = FAST_RETRIES.to_vec();
    env.push(("ORDERD__WEBHOOKS__DELIVERIES_MAX", keep.as_str()));
    let server = Server::start_with_env(2, &env);
    let client = server.client();
    let receiver = Receiver::start(|_, _| 204);
    let (hook, _) = create_hook(&client, &receiver.url(), &["order.confirmed"]);
    let customer = client.create_customer();
    let sku = unique("WHK-TRIM");
    client.adjust_stock(&sku, 10_000);
    // Two imports of 600: 1,200 confirmed orders, so at least one trim after the first.
    let orders = 1_200;
    for _ in 0..2 {
        let body: String = (0..orders / 2)
            .map(|_| {
                format!(
                    "{}\n",
                    json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 100}]})
                )
            })
            .collect();
        let reply = client.send_text("POST", "/v1/orders/bulk", "application/x-ndjson", &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let feed = ids(&all_events(&client, Some("order.confirmed"), 1000));
    assert_eq!(feed.len(), orders, "one order.confirmed per order");
    let got = receiver.wait("every order.confirmed acknowledged", |got| {
        acknowledged(got).len() >= orders
    });
    assert_eq!(acknowledged(&got), feed, "in order, each once");
    let kept: Vec<String> = all_deliveries(&client, &hook)
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "delivered", "{d}");
            d["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        (KEEP..=KEEP + STEP).contains(&kept.len()),
        "{} records kept, want {KEEP} to {}",
        kept.len(),
        KEEP + STEP
    );
    assert_eq!(
        kept,
        feed[feed.len() - kept.len()..],
        "the newest records are the ones kept"
    );
}

#[test]
fn a_kill_9_mid_retry_loses_no_delivery_and_resends_no_acknowledged_one() {
    let _serial = serial();
    let mut server = Server::start_with_env(2, &FAST_RETRIES);
    let client = server.client();
    // Takes the first event; refuses every other until `open`.
    let open = Arc::new(Mutex::new(false));
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let (gate, seen) = (open.clone(), first.clone());
    let receiver = Receiver::start(move |event, _| {
        let mut first = seen.lock().unwrap();
        let first = first.get_or_insert_with(|| event.to_string());
        if first == event || *gate.lock().unwrap() {
            200
        } else {
            503
        }
    });
    let (hook, secret) = create_hook(&client, &receiver.url(), &["order.confirmed"]);
    let customer = client.create_customer();
    let sku = unique("KIL");
    client.adjust_stock(&sku, 100);
    place(&client, &customer, &sku, 1);
    receiver.wait("the first delivery", |got| acknowledged(got).len() == 1);
    place(&client, &customer, &sku, 1);
    place(&client, &customer, &sku, 1);
    receiver.wait("retries of the second", |got| got.len() >= 3);
    let (status, deliveries) = client.get_json(&format!("/v1/webhooks/{hook}/deliveries"));
    assert_eq!(status, 200);
    let pending = &deliveries["items"].as_array().unwrap()[1];
    assert_eq!(pending["status"], "pending", "{deliveries}");
    assert_eq!(pending["last_status_code"], 503);
    assert!(pending["next_attempt_at"].is_string());

    server.kill_9();
    *open.lock().unwrap() = true;
    server.restart();
    let client = server.client();
    let got = receiver.wait("all three taken", |got| acknowledged(got).len() >= 3);
    // Give a wrongly re-sent delivery the time to arrive.
    thread::sleep(Duration::from_millis(1000));
    let got = {
        let later = receiver.got();
        assert!(later.len() >= got.len());
        later
    };
    let feed = ids(&all_events(&client, Some("order.confirmed"), 1000));
    assert_eq!(
        acknowledged(&got),
        feed,
        "each taken once, in order: {got:?}"
    );
    let first_id = &feed[0];
    assert_eq!(
        got.iter().filter(|r| &r.event_id == first_id).count(),
        1,
        "the acknowledged delivery was not sent again"
    );
    assert!(got.iter().all(|r| verify(&secret, &r.signature, &r.body)));
    let (_, deliveries) = client.get_json(&format!("/v1/webhooks/{hook}/deliveries"));
    let items = deliveries["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{deliveries}");
    assert!(
        items.iter().all(|d| d["status"] == "delivered"),
        "{deliveries}"
    );
    assert!(items[1]["attempts"].as_u64().unwrap() >= 2, "{deliveries}");
}

#[test]
fn webhook_urls_that_reach_private_addresses_are_refused() {
    let _serial = serial();
    let server = Server::start(1);
    let client = server.client();
    for url in [
        "file:///etc/passwd",
        "ftp://93.184.216.34/hook",
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "not a url",
    ] {
        let r = client.post(
            "/v1/webhooks",
            &json!({"url": url, "types": ["order.confirmed"]}),
            None,
        );
        assert_problem(&r, 400, "invalid_request");
        assert_eq!(r.body["param"], "url", "{url}: {:?}", r.body);
    }
    let r = client.post(
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/", "types": ["stock.low"], "extra": 1}),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(client.get_json("/v1/webhooks").1["items"], json!([]));
}

#[test]
fn webhook_types_are_checked_when_private_addresses_are_allowed() {
    let _serial = serial();
    let server = Server::start_with_env(1, &[("ORDERD__WEBHOOKS__ALLOW_PRIVATE", "true")]);
    let client = server.client();
    for (types, param) in [
        (json!([]), "types"),
        (json!(["order.placed"]), "types[0]"),
        (json!(["stock.low", "stock.low"]), "types[1]"),
    ] {
        let r = client.post(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "types": types}),
            None,
        );
        assert_problem(&r, 400, "invalid_request");
        assert_eq!(r.body["param"], param, "{types}: {:?}", r.body);
    }
    // Still only http(s).
    let r = client.post(
        "/v1/webhooks",
        &json!({"url": "file:///etc/passwd", "types": ["stock.low"]}),
        None,
    );
    assert_problem(&r, 400, "invalid_request");
    let r = client.post(
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook", "types": ["stock.low"]}),
        None,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
}

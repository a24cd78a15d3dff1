//! The binary TCP protocol against the real `orderd`: the operations, roles and error codes of
//! the HTTP API through `orderd-client`; pipelining under contention (nothing oversold, stock
//! conserved); the per-connection bounds; hostile bytes that never disturb other connections;
//! reconnects across a restart.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use orderd_client::{Client, ClientConfig, ClientError};
use orderd_proto::frame::{self, Frame, FrameDecoder};
use orderd_proto::tcp::{self as msg, op, ErrorBody};
use serde_json::json;

use crate::support::{serial, unique, Server};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client(server: &Server, key: &str) -> Client {
    Client::new(server.tcp_addr(), key, ClientConfig::default())
}

fn place(customer: &str, lines: &[(&str, u32, u64)], key: Option<&str>) -> msg::PlaceOrder {
    msg::PlaceOrder {
        customer_id: customer.to_string(),
        lines: lines
            .iter()
            .map(|(sku, qty, price)| msg::Line {
                sku: sku.to_string(),
                qty: *qty,
                unit_price: *price,
            })
            .collect(),
        shipping_address: Some("1 Main St".into()),
        note: None,
        idempotency_key: key.map(str::to_string),
    }
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorBody {
    match result {
        Err(ClientError::Api(body)) => body,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A key with `role` made over HTTP; its secret.
fn make_key(server: &Server, role: &str, customer: Option<&str>) -> (String, String) {
    let mut body = json!({"name": unique("tcp"), "role": role});
    if let Some(c) = customer {
        body["customer_id"] = json!(c);
    }
    let (status, key) = server.post_json("/v1/keys", &body, None);
    assert_eq!(status, 201, "{key}");
    (
        key["id"].as_str().unwrap().to_string(),
        key["secret"].as_str().unwrap().to_string(),
    )
}

/// A raw connection for hand-made bytes.
struct Raw {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl Raw {
    fn connect(server: &Server) -> Raw {
        let stream = TcpStream::connect(server.tcp_addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            decoder: FrameDecoder::new(frame::MAX_FRAME_BYTES_DEFAULT),
        }
    }

    fn send(&mut self, opcode: u8, request_id: u64, payload: Vec<u8>) {
        let mut bytes = Vec::new();
        frame::encode(
            &Frame {
                opcode,
                request_id,
                payload,
            },
            &mut bytes,
        );
        self.stream.write_all(&bytes).unwrap();
    }

    fn auth(server: &Server) -> Raw {
        let mut raw = Raw::connect(server);
        raw.send(
            op::AUTH,
            1,
            msg::encode_body(&msg::Auth {
                api_key: server.admin_key().to_string(),
            }),
        );
        let reply = raw.next().expect("AUTH reply");
        assert_eq!(reply.opcode, op::AUTH | op::REPLY);
        raw
    }

    /// The next frame, or `None` at end of stream.
    fn next(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("server sends frames") {
                return Some(frame);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.decoder.feed(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Expects one error frame about the connection (id 0) with `code`, then the end of the
    /// stream (a clean close).
    fn expect_closed_with(&mut self, code: &str) {
        let frame = self.next().expect("an error frame before the close");
        assert_eq!(
            (frame.opcode, frame.request_id),
            (op::ERROR, 0),
            "{frame:?}"
        );
        let body: ErrorBody = msg::decode_body(&frame.payload).unwrap();
        assert_eq!(body.code, code, "{body:?}");
        assert!(self.next().is_none(), "the server closes after the error");
    }
}

fn error_of(frame: &Frame) -> ErrorBody {
    assert_eq!(frame.opcode, op::ERROR, "{frame:?}");
    msg::decode_body(&frame.payload).unwrap()
}

#[test]
fn operations_errors_and_roles_match_the_http_api() {
    let _g = serial();
    let server = Server::start(2);
    let admin = server.admin_key().to_string();
    runtime().block_on(async {
        let c = client(&server, &admin);
        let who = c.connect().await.unwrap();
        assert_eq!(who.role, "admin");
        assert!(who.max_in_flight >= 1);
        c.ping().await.unwrap();

        let customer = c
            .create_customer(&msg::CreateCustomer {
                name: "Jane Roe".into(),
                email: "jane@example.com".into(),
                phone: None,
                address: None,
                idempotency_key: None,
            })
            .await
            .unwrap();
        let (status, over_http) = server.get_json(&format!("/v1/customers/{}", customer.id));
        assert_eq!(
            (status, over_http["email"].as_str()),
            (200, Some("jane@example.com"))
        );
        assert_eq!(c.get_customer(&customer.id).await.unwrap(), customer);

        let sku = unique("TCP-SKU");
        let stock = c.adjust_stock(&sku, 10, "receiving").await.unwrap();
        assert_eq!((stock.on_hand, stock.available), (10, 10));
        assert_eq!(c.get_stock(&sku).await.unwrap(), stock);

        // A placement, read back over TCP and over HTTP alike.
        let order = c
            .place_order(&place(&customer.id, &[(&sku, 3, 250)], Some("k-1")))
            .await
            .unwrap();
        assert_eq!((order.status.as_str(), order.total), ("confirmed", 750));
        assert_eq!(order.shipping_address.as_deref(), Some("1 Main St"));
        let (status, json_order) = server.get_json(&format!("/v1/orders/{}", order.id));
        assert_eq!(status, 200);
        assert_eq!(json_order["total"], 750);
        assert_eq!(json_order["shipping_address"], "1 Main St");
        let read = c.get_order(&order.id).await.unwrap();
        assert_eq!(read.lines, order.lines);
        assert_eq!(read.history.len(), 1);
        // Idempotency: the same key and body answers the same order and reserves nothing more;
        // the same key with another body is a conflict.
        let again = c
            .place_order(&place(&customer.id, &[(&sku, 3, 250)], Some("k-1")))
            .await
            .unwrap();
        assert_eq!(again.id, order.id);
        assert_eq!(c.get_stock(&sku).await.unwrap().reserved, 3);
        let conflict = api_error(
            c.place_order(&place(&customer.id, &[(&sku, 4, 250)], Some("k-1")))
                .await,
        );
        assert_eq!(
            (conflict.status, conflict.code.as_str()),
            (422, "idempotency_conflict")
        );

        // The documented error codes, with their fields.
        let short = api_error(
            c.place_order(&place(&customer.id, &[(&sku, 8, 250)], None))
                .await,
        );
        assert_eq!(
            (short.status, short.code.as_str()),
            (409, "insufficient_stock")
        );
        assert_eq!(short.skus, vec![sku.clone()]);
        let invalid = api_error(
            c.place_order(&place(&customer.id, &[(&sku, 0, 250)], None))
                .await,
        );
        assert_eq!(
            (invalid.status, invalid.code.as_str()),
            (400, "invalid_request")
        );
        assert_eq!(invalid.param.as_deref(), Some("lines[0].qty"));
        let unknown = api_error(
            c.place_order(&place("cus_nope", &[(&sku, 1, 250)], None))
                .await,
        );
        assert_eq!(unknown.code, "unknown_customer");
        assert_eq!(api_error(c.get_order("ord_nope").await).code, "not_found");

        // Ship part, then cancel is refused; another order cancels and frees its stock.
        let shipment = c
            .create_shipment(&msg::CreateShipment {
                order_id: order.id.clone(),
                carrier: "DHL".into(),
                lines: Some(vec![msg::ShipmentLine {
                    sku: sku.clone(),
                    qty: 1,
                }]),
                idempotency_key: None,
            })
            .await
            .unwrap();
        assert_eq!(shipment.lines[0].qty, 1);
        let refused = api_error(c.cancel_order(&order.id, None).await);
        assert_eq!(
            (refused.status, refused.code.as_str()),
            (409, "invalid_transition")
        );
        let second = c
            .place_order(&place(&customer.id, &[(&sku, 2, 100)], None))
            .await
            .unwrap();
        let cancelled = c
            .cancel_order(&second.id, Some("changed my mind".into()))
            .await
            .unwrap();
        assert_eq!(cancelled.status, "cancelled");
        let stock = c.get_stock(&sku).await.unwrap();
        assert_eq!((stock.on_hand, stock.reserved), (9, 2), "{stock:?}");
        let page = c
            .list_orders(&msg::ListOrders {
                customer_id: Some(customer.id.clone()),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].id, second.id, "newest first");
        assert!(page.next.is_some());

        // Roles, as over HTTP: 403 for a role without the right, 404 for a customer key
        // outside its own customer.
        let (_, analyst) = make_key(&server, "analyst", None);
        let analyst = client(&server, &analyst);
        let forbidden = api_error(
            analyst
                .place_order(&place(&customer.id, &[(&sku, 1, 1)], None))
                .await,
        );
        assert_eq!(
            (forbidden.status, forbidden.code.as_str()),
            (403, "forbidden")
        );
        assert_eq!(analyst.get_order(&order.id).await.unwrap().id, order.id);
        let other = c
            .create_customer(&msg::CreateCustomer {
                name: "Other".into(),
                email: "o@example.com".into(),
                phone: None,
                address: None,
                idempotency_key: None,
            })
            .await
            .unwrap();
        let (_, own) = make_key(&server, "customer", Some(&other.id));
        let own = client(&server, &own);
        assert_eq!(api_error(own.get_order(&order.id).await).code, "not_found");
        let (_, auditor) = make_key(&server, "auditor", None);
        let masked = client(&server, &auditor)
            .get_customer(&customer.id)
            .await
            .unwrap();
        assert_eq!(masked.email, "j***@example.com");

        // A revoked key stops working on the connection it already has.
        let (id, frontend) = make_key(&server, "frontend", None);
        let frontend = client(&server, &frontend);
        frontend.get_stock(&sku).await.unwrap();
        let reply = server
            .client()
            .send("DELETE", &format!("/v1/keys/{id}"), None, None)
            .unwrap();
        assert_eq!(reply.status, 204);
        match frontend.get_stock(&sku).await {
            Err(ClientError::Api(body)) | Err(ClientError::Closed(body)) => {
                assert_eq!(body.code, "unauthorized")
            }
            other => panic!("a revoked key must fail: {other:?}"),
        }
        // A wrong key is refused at AUTH.
        let wrong = client(&server, "not-a-key");
        assert_eq!(api_error(wrong.connect().await).code, "unauthorized");
    });
    // Refusals and mutations over TCP are in the audit trail.
    let (status, audit) = server.get_json("/v1/audit?limit=500");
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "order.place",
        "order.cancel",
        "stock.adjust",
        "customer.create",
        "shipment.create",
        "auth.forbidden",
        "auth.unauthorized",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

#[test]
fn pipelined_orders_never_oversell_and_conserve_stock() {
    let _g = serial();
    let server = Server::start(2);
    let admin = server.admin_key().to_string();
    let stock_units = 700u64;
    let orders = 2_000usize;
    runtime().block_on(async {
        let c = client(&server, &admin);
        let sku = unique("HOT");
        c.adjust_stock(&sku, stock_units as i64, "flash sale")
            .await
            .unwrap();
        let mut customers = Vec::new();
        for _ in 0..4 {
            customers.push(
                c.create_customer(&msg::CreateCustomer {
                    name: "Buyer".into(),
                    email: "b@example.com".into(),
                    phone: None,
                    address: None,
                    idempotency_key: None,
                })
                .await
                .unwrap()
                .id,
            );
        }
        // Two connections, each with every order in flight at once.
        let clients = [c.clone(), client(&server, &admin)];
        let mut tasks = Vec::new();
        for i in 0..orders {
            let client = clients[i % 2].clone();
            let request = place(&customers[i % 4], &[(&sku, 1, 500)], None);
            tasks.push(tokio::spawn(async move {
                (
                    request.customer_id.clone(),
                    client.place_order(&request).await,
                )
            }));
        }
        let mut confirmed = HashSet::new();
        let mut refused = 0;
        for task in tasks {
            let (customer, result) = task.await.unwrap();
            match result {
                Ok(order) => {
                    // Replies are matched to their requests by id, whatever their order.
                    assert_eq!(order.customer_id, customer);
                    assert!(confirmed.insert(order.id));
                }
                Err(ClientError::Api(body)) => {
                    assert_eq!(body.code, "insufficient_stock", "{body:?}");
                    refused += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(confirmed.len() as u64, stock_units.min(orders as u64));
        assert_eq!(refused, orders - confirmed.len());
        let stock = c.get_stock(&sku).await.unwrap();
        assert_eq!(
            (stock.on_hand, stock.reserved, stock.available),
            (stock_units, stock_units, 0)
        );
        assert_eq!(clients[0].connects() + clients[1].connects(), 2);
    });
}

#[test]
fn hostile_bytes_get_an_error_frame_and_a_clean_close_and_others_keep_being_served() {
    let _g = serial();
    let server = Server::start(2);
    let admin = server.admin_key().to_string();
    let rt = runtime();
    let (customer, sku) = rt.block_on(async {
        let c = client(&server, &admin);
        let customer = c
            .create_customer(&msg::CreateCustomer {
                name: "Steady".into(),
                email: "s@example.com".into(),
                phone: None,
                address: None,
                idempotency_key: None,
            })
            .await
            .unwrap();
        let sku = unique("STEADY");
        c.adjust_stock(&sku, 1_000_000, "stock").await.unwrap();
        (customer.id, sku)
    });
    // A well-behaved client places orders the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let stop = stop.clone();
        let c = client(&server, &admin);
        let (customer, sku) = (customer.clone(), sku.clone());
        rt.spawn(async move {
            let mut placed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.place_order(&place(&customer, &[(&sku, 1, 1)], None))
                    .await
                    .expect("the steady client is never disturbed");
                placed += 1;
            }
            (placed, c.connects())
        })
    };

    // A length prefix far over the maximum: refused on its 4 bytes.
    let mut raw = Raw::connect(&server);
    raw.stream.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    raw.expect_closed_with("payload_too_large");
    // A length just over the maximum, after authenticating.
    let mut raw = Raw::auth(&server);
    let over = (frame::MAX_FRAME_BYTES_DEFAULT as u32 + 1).to_be_bytes();
    raw.stream.write_all(&over).unwrap();
    raw.expect_closed_with("payload_too_large");
    // A length under the header, and a wrong version.
    let mut raw = Raw::connect(&server);
    raw.stream.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
    raw.expect_closed_with("invalid_frame");
    let mut raw = Raw::auth(&server);
    raw.stream
        .write_all(&[0, 0, 0, 10, 9, op::PING, 0, 0, 0, 0, 0, 0, 0, 7])
        .unwrap();
    raw.expect_closed_with("invalid_frame");
    // A request before AUTH is refused and the connection closed.
    let mut raw = Raw::connect(&server);
    raw.send(
        op::GET_STOCK,
        5,
        msg::encode_body(&msg::SkuRef { sku: sku.clone() }),
    );
    let reply = raw.next().unwrap();
    assert_eq!(
        (reply.request_id, error_of(&reply).code.as_str()),
        (5, "unauthorized")
    );
    assert!(raw.next().is_none());
    // Well-framed nonsense keeps the connection: an unknown opcode, a body that does not
    // decode, trailing bytes; then a real request on the same connection still works.
    let mut raw = Raw::auth(&server);
    raw.send(0x7e, 11, vec![1, 2, 3]);
    raw.send(op::PLACE_ORDER, 12, vec![0xff; 40]);
    let mut long = msg::encode_body(&msg::SkuRef { sku: sku.clone() });
    long.push(0);
    raw.send(op::GET_STOCK, 13, long);
    raw.send(
        op::GET_STOCK,
        14,
        msg::encode_body(&msg::SkuRef { sku: sku.clone() }),
    );
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let frame = raw.next().unwrap();
        seen.insert(frame.request_id, frame);
    }
    let e11 = error_of(&seen[&11]);
    assert_eq!(
        (e11.code.as_str(), e11.param.as_deref()),
        ("invalid_request", Some("opcode"))
    );
    for id in [12, 13] {
        let e = error_of(&seen[&id]);
        assert_eq!(
            (e.code.as_str(), e.param.as_deref()),
            ("invalid_request", Some("body")),
            "{e:?}"
        );
    }
    assert_eq!(seen[&14].opcode, op::GET_STOCK | op::REPLY);
    // Truncated frames, then the client goes away: nothing to answer, nothing breaks.
    for cut in [1usize, 4, 9, 14, 20] {
        let mut raw = Raw::auth(&server);
        let mut bytes = Vec::new();
        frame::encode(
            &msg::frame(op::GET_STOCK, 2, &msg::SkuRef { sku: sku.clone() }),
            &mut bytes,
        );
        raw.stream
            .write_all(&bytes[..cut.min(bytes.len() - 1)])
            .unwrap();
        drop(raw);
    }
    // Random bytes on many connections, before and after AUTH.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    for i in 0..60 {
        let mut raw = if i % 2 == 0 {
            Raw::connect(&server)
        } else {
            Raw::auth(&server)
        };
        let bytes = random(1 + i * 37 % 3000);
        let _ = raw.stream.write_all(&bytes);
        let _ = raw.stream.shutdown(std::net::Shutdown::Write);
        // Whatever the bytes were, the server answers with frames and then closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while raw.next().is_some() {
            assert!(
                Instant::now() < deadline,
                "the server keeps a garbage connection open"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (placed, connects) = rt.block_on(steady).unwrap();
    assert!(placed > 0);
    assert_eq!(connects, 1, "the steady connection was never dropped");
    // Every acknowledged order is there; the server still serves HTTP and TCP.
    let (status, stock) = server.get_json(&format!("/v1/stock/{sku}"));
    assert_eq!(status, 200);
    assert_eq!(stock["reserved"], json!(placed));
    rt.block_on(async { client(&server, &admin).ping().await.unwrap() });
    assert_eq!(server.get_json("/livez").0, 200);
}

#[test]
fn in_flight_idle_and_connection_limits_are_enforced() {
    let _g = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__TCP__MAX_IN_FLIGHT", "4"),
            ("ORDERD__TCP__IDLE_TIMEOUT_MS", "400"),
            ("ORDERD__TCP__MAX_CONNECTIONS", "3"),
        ],
    );
    let admin = server.admin_key().to_string();
    let rt = runtime();
    let (customer, sku) = rt.block_on(async {
        let c = client(&server, &admin);
        assert_eq!(c.connect().await.unwrap().max_in_flight, 4);
        let customer = c
            .create_customer(&msg::CreateCustomer {
                name: "Limits".into(),
                email: "l@example.com".into(),
                phone: None,
                address: None,
                idempotency_key: None,
            })
            .await
            .unwrap();
        let sku = unique("LIM");
        c.adjust_stock(&sku, 1000, "stock").await.unwrap();
        c.close().await;
        (customer.id, sku)
    });

    // 50 placements in one write: those over 4 in flight are answered rate_limited and not
    // run; every request gets exactly one answer; the stock tells how many ran.
    let mut raw = Raw::auth(&server);
    let mut bytes = Vec::new();
    for id in 100..150u64 {
        frame::encode(
            &msg::frame(
                op::PLACE_ORDER,
                id,
                &place(&customer, &[(&sku, 1, 1)], None),
            ),
            &mut bytes,
        );
    }
    raw.stream.write_all(&bytes).unwrap();
    let (mut ok, mut limited) = (0u64, 0u64);
    let mut ids = HashSet::new();
    for _ in 0..50 {
        let frame = raw.next().unwrap();
        assert!(ids.insert(frame.request_id));
        if frame.opcode == op::PLACE_ORDER | op::REPLY {
            ok += 1;
        } else {
            let e = error_of(&frame);
            assert_eq!(e.code, "rate_limited", "{e:?}");
            assert!(e.detail.contains("4 requests in flight"), "{}", e.detail);
            limited += 1;
        }
    }
    assert!(ok >= 4 && limited >= 1, "ok {ok}, limited {limited}");
    let (_, stock) = server.get_json(&format!("/v1/stock/{sku}"));
    assert_eq!(stock["reserved"], json!(ok), "only the answered orders ran");
    // The idle timeout closes it (nothing in flight, nothing received for 400 ms).
    let started = Instant::now();
    raw.expect_closed_with("idle_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    // ... also a connection that never authenticates.
    Raw::connect(&server).expect_closed_with("idle_timeout");

    // At most 3 connections: the fourth gets `unavailable` and is closed; once one closes,
    // a new one is served.
    let mut open: Vec<Raw> = (0..3).map(|_| Raw::auth(&server)).collect();
    for r in &mut open {
        r.send(op::PING, 9, Vec::new());
        assert_eq!(r.next().unwrap().opcode, op::PING | op::REPLY);
    }
    Raw::connect(&server).expect_closed_with("unavailable");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut raw = Raw::connect(&server);
        raw.send(
            op::AUTH,
            3,
            msg::encode_body(&msg::Auth {
                api_key: admin.clone(),
            }),
        );
        match raw.next() {
            Some(f) if f.opcode == op::AUTH | op::REPLY => break,
            _ => assert!(Instant::now() < deadline, "a freed slot is never served"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn auth_must_come_in_time_ping_needs_it_and_one_peer_cannot_take_every_slot() {
    let _g = serial();
    let server = Server::start_with_env(
        1,
        &[
            ("ORDERD__TCP__AUTH_TIMEOUT_MS", "300"),
            ("ORDERD__TCP__MAX_CONNECTIONS_PER_PEER", "2"),
            ("ORDERD__TCP__MAX_CONNECTIONS", "10"),
        ],
    );
    // PING before AUTH is refused like any request, and the connection closed.
    let mut raw = Raw::connect(&server);
    raw.send(op::PING, 4, Vec::new());
    let reply = raw.next().unwrap();
    assert_eq!(
        (reply.request_id, error_of(&reply).code.as_str()),
        (4, "unauthorized")
    );
    assert!(raw.next().is_none());
    // Silence without AUTH: closed after auth_timeout_ms, well before the idle timeout (60 s).
    let started = Instant::now();
    Raw::connect(&server).expect_closed_with("unauthorized");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // An authenticated connection outlives the AUTH deadline and may PING.
    let mut first = Raw::auth(&server);
    std::thread::sleep(Duration::from_millis(500));
    first.send(op::PING, 5, Vec::new());
    assert_eq!(first.next().unwrap().opcode, op::PING | op::REPLY);
    // Two connections from this address at most: a third is refused at accept, even though
    // the server has slots left; once one closes, a new one is served.
    let second = Raw::auth(&server);
    Raw::connect(&server).expect_closed_with("rate_limited");
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut raw = Raw::connect(&server);
        raw.send(
            op::AUTH,
            1,
            msg::encode_body(&msg::Auth {
                api_key: server.admin_key().to_string(),
            }),
        );
        match raw.next() {
            Some(f) if f.opcode == op::AUTH | op::REPLY => break,
            _ => assert!(
                Instant::now() < deadline,
                "a freed peer slot is never served"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_client_reconnects_after_a_restart_and_shutdown_says_unavailable() {
    let _g = serial();
    let mut server = Server::start(2);
    let admin = server.admin_key().to_string();
    let rt = runtime();
    let c = client(&server, &admin);
    let sku = unique("RC");
    rt.block_on(async {
        c.adjust_stock(&sku, 5, "stock").await.unwrap();
        assert_eq!(c.connects(), 1);
    });
    // SIGTERM: an open connection is told `unavailable`, then closed.
    let mut raw = Raw::auth(&server);
    server.terminate();
    raw.expect_closed_with("unavailable");
    server.restart();
    rt.block_on(async {
        let stock = c.get_stock(&sku).await.unwrap();
        assert_eq!(stock.on_hand, 5, "the acknowledged adjustment survived");
        assert_eq!(c.connects(), 2, "one reconnect");
    });
}

#[test]
fn a_client_that_stops_reading_is_closed_and_others_are_served() {
    let _g = serial();
    let server = Server::start_with_env(2, &[("ORDERD__TCP__IDLE_TIMEOUT_MS", "500")]);
    let admin = server.admin_key().to_string();
    // PINGs are answered by the server's reader itself: 2,000,000 of them (28 MB of requests,
    // as much in replies) fill the socket buffers both ways when the client never reads.
    let mut raw = Raw::auth(&server);
    raw.stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut bytes = Vec::new();
    for id in 0..2_000_000u64 {
        frame::encode(
            &Frame {
                opcode: op::PING,
                request_id: id + 10,
                payload: Vec::new(),
            },
            &mut bytes,
        );
    }
    // The write stops when the server stops reading; that is the point.
    // (The server may also reset it once it closes with requests unread.)
    let _ = raw.stream.write_all(&bytes);
    // Meanwhile another client is served.
    runtime().block_on(async { client(&server, &admin).ping().await.unwrap() });
    // The stalled connection is closed: what was sent before the stall can still be read,
    // then the stream ends (or is reset) instead of staying open forever.
    let deadline = Instant::now() + Duration::from_secs(20);
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match raw.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the stalled connection stays open"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled connection was not closed: {e}"),
        }
    }
    // The server records the reason once the connection's reader has finished.
    let wanted = "orderd_tcp_connections_closed_total{reason=\"write_timeout\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server.client().without_key().get("/metrics");
        let text = metrics.body.as_str().expect("/metrics is text").to_string();
        if text.contains(wanted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write_timeout close in /metrics: {}",
            text.lines()
                .filter(|l| l.starts_with("orderd_tcp"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get_json("/livez").0, 200);
}

/// A small `PLACE_ORDER` body (no address): about 40 bytes.
fn small(customer: &str, sku: &str, qty: u32, key: Option<String>) -> msg::PlaceOrder {
    msg::PlaceOrder {
        shipping_address: None,
        idempotency_key: key,
        ..place(customer, &[(sku, qty, 100)], None)
    }
}

fn placed(outcome: &Result<msg::PlacedOrder, ErrorBody>) -> &msg::PlacedOrder {
    outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("expected a placed order, got {e:?}"))
}

#[test]
fn place_orders_frames_place_each_order_once_with_its_own_outcome() {
    let _g = serial();
    // Frames of 4 KiB hold the replies of at most (4096 - 15) / 64 = 63 orders: below
    // tcp.batch_orders_max, so both bounds can be hit.
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__TCP__BATCH_ORDERS_MAX", "70"),
            ("ORDERD__TCP__MAX_FRAME_BYTES", "4096"),
        ],
    );
    let admin = server.admin_key().to_string();
    let rt = runtime();
    let (customers, sku) = rt.block_on(async {
        let c = client(&server, &admin);
        let who = c.connect().await.unwrap();
        assert_eq!(who.max_frame_bytes, 4096);
        let mut customers = Vec::new();
        for name in ["Ann", "Bob"] {
            let customer = c
                .create_customer(&msg::CreateCustomer {
                    name: name.into(),
                    email: format!("{name}@example.com"),
                    phone: None,
                    address: None,
                    idempotency_key: None,
                })
                .await
                .unwrap();
            customers.push(customer.id);
        }
        let sku = unique("BATCH");
        c.adjust_stock(&sku, 25, "batch sale").await.unwrap();
        (customers, sku)
    });
    let stock = |reserved: u64| {
        let (status, stock) = server.get_json(&format!("/v1/stock/{sku}"));
        assert_eq!(status, 200);
        assert_eq!(stock["reserved"], json!(reserved), "{stock}");
    };
    let c = client(&server, &admin);
    let first_placed = rt.block_on(async {
        // 40 orders against 25 units, each with its own key: exactly 25 placed.
        let orders: Vec<msg::PlaceOrder> = (0..40)
            .map(|i| small(&customers[i % 2], &sku, 1, Some(format!("batch-{i}"))))
            .collect();
        let outcomes = c.place_orders(&orders).await.unwrap();
        assert_eq!(outcomes.len(), 40);
        let mut ids = HashSet::new();
        for (order, outcome) in orders.iter().zip(&outcomes) {
            match outcome {
                Ok(placed) => {
                    assert_eq!((placed.status.as_str(), placed.total), ("confirmed", 100));
                    assert!(placed.created_at_us > 0);
                    assert!(ids.insert(placed.id.clone()), "{} twice", placed.id);
                    // The outcome is its own order's.
                    let read = c.get_order(&placed.id).await.unwrap();
                    assert_eq!(read.customer_id, order.customer_id);
                    assert_eq!(read.created_at_us, placed.created_at_us);
                }
                Err(error) => {
                    assert_eq!(
                        (error.status, error.code.as_str()),
                        (409, "insufficient_stock"),
                        "{error:?}"
                    );
                    assert_eq!(error.skus, vec![sku.clone()]);
                    assert!(!error.detail.is_empty());
                }
            }
        }
        assert_eq!(ids.len(), 25);
        stock(25);

        // The same frame again: the same answers, nothing more placed.
        let again = c.place_orders(&orders).await.unwrap();
        for (first, second) in outcomes.iter().zip(&again) {
            match (first, second) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.code, b.code),
                other => panic!("a repeat changed its answer: {other:?}"),
            }
        }
        stock(25);

        // An order's key is its own, identified by the order's bytes: a PLACE_ORDER of the
        // same order finds the answer it got inside the batch.
        let index = outcomes.iter().position(Result::is_ok).unwrap();
        let alone = c.place_order(&orders[index]).await.unwrap();
        assert_eq!(alone.id, placed(&outcomes[index]).id);
        stock(25);
        (orders[index].clone(), placed(&outcomes[index]).id.clone())
    });

    rt.block_on(async {
        // Outcomes are independent: a key reused with another order is a conflict for that
        // order only; the order beside it is placed.
        c.adjust_stock(&sku, 1, "one more").await.unwrap();
        let conflict = msg::PlaceOrder {
            lines: vec![msg::Line {
                sku: sku.clone(),
                qty: 2,
                unit_price: 100,
            }],
            ..first_placed.0.clone()
        };
        let outcomes = c
            .place_orders(&[conflict, small(&customers[0], &sku, 1, None)])
            .await
            .unwrap();
        let error = outcomes[0].as_ref().unwrap_err();
        assert_eq!(
            (error.status, error.code.as_str()),
            (422, "idempotency_conflict")
        );
        assert_ne!(placed(&outcomes[1]).id, first_placed.1);
        stock(26);

        // 60 refusals with their details would not fit one 4 KiB frame: errors keep their
        // status and code only.
        let refused: Vec<_> = (0..60)
            .map(|i| small(&customers[i % 2], &sku, 1, None))
            .collect();
        let outcomes = c.place_orders(&refused).await.unwrap();
        assert_eq!(outcomes.len(), 60);
        for outcome in &outcomes {
            let error = outcome.as_ref().unwrap_err();
            assert_eq!(
                (error.status, error.code.as_str()),
                (409, "insufficient_stock")
            );
            assert!(
                error.detail.is_empty() && error.skus.is_empty(),
                "{error:?}"
            );
        }

        // Refused as a whole, nothing placed, and the connection keeps serving: more orders
        // than fit the reply frame, more than tcp.batch_orders_max, none.
        let too_many = |n: usize| -> Vec<msg::PlaceOrder> {
            (0..n)
                .map(|_| small(&customers[0], &sku, 1, None))
                .collect()
        };
        c.adjust_stock(&sku, 1000, "plenty").await.unwrap();
        for (n, bound) in [(64, "tcp.max_frame_bytes"), (71, "tcp.batch_orders_max")] {
            let error = api_error(c.place_orders(&too_many(n)).await);
            assert_eq!(
                (error.status, error.code.as_str(), error.param.as_deref()),
                (400, "invalid_request", Some("orders")),
                "{error:?}"
            );
            assert!(error.detail.contains(bound), "{n}: {}", error.detail);
        }
        let error = api_error(c.place_orders(&[]).await);
        assert_eq!(
            (error.status, error.param.as_deref()),
            (400, Some("orders"))
        );
        // A frame over tcp.max_frame_bytes is not even sent (the server would close).
        let long: Vec<_> = (0..60)
            .map(|_| msg::PlaceOrder {
                note: Some("n".repeat(100)),
                ..small(&customers[0], &sku, 1, None)
            })
            .collect();
        assert!(matches!(
            c.place_orders(&long).await,
            Err(ClientError::FrameTooLarge { max: 4096, .. })
        ));
        stock(26);
        assert_eq!(c.place_orders(&too_many(63)).await.unwrap().len(), 63);
        stock(26 + 63);
        c.ping().await.unwrap();
        assert_eq!(c.connects(), 1, "the connection was never closed");

        // Customer scope holds per order: a customer key places for its own customer only,
        // the other order answered as a PLACE_ORDER of it alone is. Its orders take the
        // catalog price, which its frames' `unit_price` (100) must match.
        let (status, price) = {
            let reply = server.client().call(
                "PUT",
                &format!("/v1/catalog/{sku}"),
                Some(&json!({"price": 100})),
                None,
            );
            (reply.status, reply.body)
        };
        assert_eq!(status, 200, "{price}");
        let (_, own) = make_key(&server, "customer", Some(&customers[0]));
        let own = client(&server, &own);
        let outcomes = own
            .place_orders(&[
                small(&customers[0], &sku, 1, None),
                small(&customers[1], &sku, 1, None),
            ])
            .await
            .unwrap();
        placed(&outcomes[0]);
        let alone = api_error(own.place_order(&small(&customers[1], &sku, 1, None)).await);
        let inside = outcomes[1].as_ref().unwrap_err();
        assert_eq!((inside.status, &inside.code), (alone.status, &alone.code));
        assert_eq!(inside.code, "not_found");
        stock(26 + 63 + 1);
        // Over TCP a line always carries a price: a customer key's must be the catalog's.
        let mismatch = api_error(
            own.place_order(&place(&customers[0], &[(&sku, 1, 99)], None))
                .await,
        );
        assert_eq!(
            (mismatch.status, mismatch.code.as_str()),
            (422, "price_mismatch")
        );
        stock(26 + 63 + 1);

        // A role that may not place orders is refused the whole frame (403), and audited.
        let (analyst_id, analyst) = make_key(&server, "analyst", None);
        let analyst = client(&server, &analyst);
        let error = api_error(
            analyst
                .place_orders(&[small(&customers[0], &sku, 1, None)])
                .await,
        );
        assert_eq!((error.status, error.code.as_str()), (403, "forbidden"));
        stock(26 + 63 + 1);
        let (status, audit) = server.get_json("/v1/audit?limit=500");
        assert_eq!(status, 200, "{audit}");
        let items = audit["items"].as_array().unwrap();
        assert!(
            items.iter().any(|e| e["action"] == "auth.forbidden"
                && e["actor"] == json!(analyst_id)
                && e["target"] == "tcp place_orders"),
            "{audit}"
        );
        // Placements made in batches are in the audit trail as any placement is.
        assert!(
            items
                .iter()
                .any(|e| e["action"] == "order.place" && e["target"] == json!(first_placed.1)),
            "{audit}"
        );
    });
}

#[test]
fn place_order_frames_of_one_read_get_their_own_replies_and_errors() {
    let _g = serial();
    let server = Server::start(2);
    let admin = server.admin_key().to_string();
    let rt = runtime();
    let (customer, sku) = rt.block_on(async {
        let c = client(&server, &admin);
        let customer = c
            .create_customer(&msg::CreateCustomer {
                name: "Reader".into(),
                email: "r@example.com".into(),
                phone: None,
                address: None,
                idempotency_key: None,
            })
            .await
            .unwrap();
        let sku = unique("READ");
        c.adjust_stock(&sku, 3, "stock").await.unwrap();
        (customer.id, sku)
    });
    // One write: placements that succeed, fail in every way and repeat a key, between other
    // requests; every frame is answered once, with its own id.
    let mut raw = Raw::auth(&server);
    let frames: Vec<(u64, u8, Vec<u8>)> = vec![
        (
            20,
            op::PLACE_ORDER,
            msg::encode_body(&small(&customer, &sku, 1, Some("r-1".into()))),
        ),
        (21, op::PLACE_ORDER, vec![0xff; 12]),
        (
            22,
            op::PLACE_ORDER,
            msg::encode_body(&small(&customer, &sku, 0, None)),
        ),
        (
            23,
            op::GET_STOCK,
            msg::encode_body(&msg::SkuRef { sku: sku.clone() }),
        ),
        (
            24,
            op::PLACE_ORDER,
            msg::encode_body(&small(&customer, &sku, 5, None)),
        ),
        (
            25,
            op::PLACE_ORDER,
            msg::encode_body(&small("cus_nope", &sku, 1, None)),
        ),
        (
            26,
            op::PLACE_ORDER,
            msg::encode_body(&small(&customer, &sku, 2, None)),
        ),
    ];
    let mut bytes = Vec::new();
    for (id, opcode, payload) in &frames {
        frame::encode(
            &Frame {
                opcode: *opcode,
                request_id: *id,
                payload: payload.clone(),
            },
            &mut bytes,
        );
    }
    raw.stream.write_all(&bytes).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..frames.len() {
        let frame = raw.next().unwrap();
        assert!(seen.insert(frame.request_id, frame).is_none());
    }
    let order = |id: u64| -> msg::Order {
        assert_eq!(
            seen[&id].opcode,
            op::PLACE_ORDER | op::REPLY,
            "{:?}",
            seen[&id]
        );
        msg::decode_body(&seen[&id].payload).unwrap()
    };
    let first = order(20);
    assert_eq!(
        (first.status.as_str(), first.lines[0].qty),
        ("confirmed", 1)
    );
    let e = error_of(&seen[&21]);
    assert_eq!(
        (e.code.as_str(), e.param.as_deref()),
        ("invalid_request", Some("body"))
    );
    let e = error_of(&seen[&22]);
    assert_eq!(e.param.as_deref(), Some("lines[0].qty"));
    assert_eq!(seen[&23].opcode, op::GET_STOCK | op::REPLY);
    let e = error_of(&seen[&24]);
    assert_eq!((e.status, e.code.as_str()), (409, "insufficient_stock"));
    assert_eq!(error_of(&seen[&25]).code, "unknown_customer");
    let last = order(26);
    assert_eq!(last.total, 200);
    assert_ne!(last.id, first.id);
    // The keyed order again, in another read: its first answer.
    raw.send(
        op::PLACE_ORDER,
        27,
        msg::encode_body(&small(&customer, &sku, 1, Some("r-1".into()))),
    );
    let again = raw.next().unwrap();
    assert_eq!(again.request_id, 27);
    let again: msg::Order = msg::decode_body(&again.payload).unwrap();
    assert_eq!(again.id, first.id);
    let (_, stock) = server.get_json(&format!("/v1/stock/{sku}"));
    assert_eq!(stock["reserved"], json!(3), "{stock}");
}

/// Orders big enough that a page of them does not fit one frame: `count` orders of 50 lines
/// with 60-character SKUs, placed over HTTP for one new customer; the customer id.
pub(crate) fn place_big_orders(server: &Server, count: usize) -> String {
    let client = server.client();
    let customer = client.create_customer();
    let prefix = unique("big");
    let skus: Vec<String> = (0..50)
        .map(|i| format!("{i:02}-{prefix}-{}", "x".repeat(60))[..60].to_string())
        .collect();
    for sku in &skus {
        client.adjust_stock(sku, 10_000);
    }
    let lines: Vec<_> = skus
        .iter()
        .map(|sku| json!({"sku": sku, "qty": 1, "unit_price": 123_456}))
        .collect();
    for _ in 0..count {
        let (status, order) = client.post_json(
            "/v1/orders",
            &json!({"customer_id": customer, "lines": lines, "shipping_address": "1 Main St"}),
            None,
        );
        assert_eq!(status, 201, "{order}");
    }
    customer
}

/// `orderd_request_duration_seconds_count` of a successful route, from `/metrics`.
fn requests_done(server: &Server, route: &str) -> f64 {
    let reply = server.client().without_key().get("/metrics");
    let text = reply.body.as_str().expect("metrics text").to_string();
    let route = format!("route=\"{route}\"");
    text.lines()
        .filter(|line| line.starts_with("orderd_request_duration_seconds_count{"))
        .filter(|line| line.contains(&route) && line.contains("outcome=\"ok\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A page larger than `tcp.max_frame_bytes` is shortened to fit and `next` continues it (today's
/// code sent one oversized frame, which the client refuses); and a connection whose client
/// does not read its replies holds at most `tcp.max_reply_buffer_bytes`: the server stops
/// starting its requests, instead of running a thousand 64 KiB pages into memory.
#[test]
fn pages_fit_a_frame_and_a_slow_reader_holds_a_bounded_reply_buffer() {
    let _g = serial();
    let server = Server::start_with_env(2, &[("ORDERD__TCP__MAX_REPLY_BUFFER_BYTES", "131072")]);
    let customer = place_big_orders(&server, 30);
    let over_http: Vec<String> = server
        .client()
        .list_orders(&format!("customer_id={customer}"))
        .iter()
        .map(|order| order["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(over_http.len(), 30);

    // Paging over TCP: every frame fits (the decoder refuses a longer one), the first page is
    // shortened, and following `next` gives every order once, in the HTTP list's order.
    let mut raw = Raw::auth(&server);
    let mut over_tcp = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let request = msg::ListOrders {
            customer_id: Some(customer.clone()),
            status: None,
            limit: Some(1000),
            after: after.clone(),
        };
        raw.send(op::LIST_ORDERS, 10 + pages, msg::encode_body(&request));
        let reply = raw.next().expect("a page");
        assert_eq!(reply.opcode, op::LIST_ORDERS | op::REPLY, "{reply:?}");
        assert!(reply.payload.len() + frame::HEADER_AFTER_LENGTH <= frame::MAX_FRAME_BYTES_DEFAULT);
        let page: msg::OrderPage = msg::decode_body(&reply.payload).unwrap();
        pages += 1;
        over_tcp.extend(page.items.into_iter().map(|order| order.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(
        pages >= 2,
        "30 orders of 50 lines do not fit one 64 KiB frame"
    );
    assert_eq!(over_tcp, over_http);

    // A client that sends 1,000 list requests and reads nothing: with 131,072 bytes of replies
    // allowed, the server runs a few and waits (the kernel's socket buffers take some more);
    // today it ran all 1,000 at once.
    let before = requests_done(&server, "tcp list_orders");
    assert!(before >= 2.0, "the pages above are counted: {before}");
    let mut slow = Raw::auth(&server);
    let request = msg::encode_body(&msg::ListOrders {
        customer_id: None,
        status: None,
        limit: Some(1000),
        after: None,
    });
    let mut bytes = Vec::new();
    for id in 0..1000u64 {
        frame::encode(
            &Frame {
                opcode: op::LIST_ORDERS,
                request_id: 1000 + id,
                payload: request.clone(),
            },
            &mut bytes,
        );
    }
    slow.stream.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let ran = requests_done(&server, "tcp list_orders") - before;
    assert!(
        ran < 500.0,
        "{ran} of 1,000 pages ran for a client that reads nothing"
    );
    // Reading lets the rest run: 1,000 replies, each fitting a frame, each id once.
    let mut ids = HashSet::new();
    for _ in 0..1000 {
        let reply = slow.next().expect("every request is answered");
        assert_eq!(reply.opcode, op::LIST_ORDERS | op::REPLY, "{reply:?}");
        assert!(ids.insert(reply.request_id));
    }
    assert_eq!(ids.len(), 1000);
    assert_eq!(requests_done(&server, "tcp list_orders") - before, 1000.0);
}

//! The HTTP front door's bounds against the real `orderd`: a page never longer than
//! `http.max_page_bytes` (shortened, `next` continues), and at most
//! `http.max_connections_per_peer` connections served per peer address.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{serial, Server};
use crate::tcp::place_big_orders;

/// Pages of big orders, at most 65,536 bytes each: the first page of 30 orders of 50 lines is
/// shortened, and following `next` gives every order once in the same order as one page
/// without the bound would (today's code answered one 150 KB page).
#[test]
fn a_page_never_exceeds_max_page_bytes_and_next_continues_it() {
    let _g = serial();
    let server = Server::start_with_env(2, &[("ORDERD__HTTP__MAX_PAGE_BYTES", "65536")]);
    let customer = place_big_orders(&server, 30);
    let client = server.client();
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut path = format!("/v1/orders?limit=1000&customer_id={customer}");
    loop {
        let (status, page) = client.get_json(&path);
        assert_eq!(status, 200, "{page}");
        let length = serde_json::to_vec(&page).unwrap().len();
        assert!(length <= 65_536, "a page of {length} bytes");
        pages += 1;
        for order in page["items"].as_array().unwrap() {
            ids.push(order["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/v1/orders?limit=1000&customer_id={customer}&after={next}")
            }
            None => break,
        }
    }
    assert!(
        pages >= 2,
        "30 orders of 50 lines do not fit 64 KiB of JSON"
    );
    assert_eq!(ids.len(), 30);
    // The same orders in the same order as pages of 5, which fit without shortening.
    let mut reference = Vec::new();
    let mut path = format!("/v1/orders?limit=5&customer_id={customer}");
    loop {
        let (status, page) = client.get_json(&path);
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(page["next"].is_null() || items.len() == 5, "{page}");
        for order in items {
            reference.push(order["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/orders?limit=5&customer_id={customer}&after={next}"),
            None => break,
        }
    }
    assert_eq!(ids, reference);
}

/// One keep-alive HTTP/1.1 request on `stream`: (status, headers in lower case, body).
fn request(stream: &mut TcpStream, path: &str) -> Option<(u16, String, String)> {
    let text = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(text.as_bytes()).ok()?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            break (end + 4, length);
        }
    };
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = String::from_utf8_lossy(&bytes[head_end..head_end + length]).to_string();
    Some((status, head, body))
}

fn connect(server: &Server) -> TcpStream {
    let address = server.base().trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// With `http.max_connections_per_peer = 2`, a third connection from this address is answered
/// 429 `rate_limited` with `Connection: close` on its first request (today it was served), the
/// two others go on being served, and once one closes a new connection is served again.
#[test]
fn one_peer_holds_at_most_max_connections_per_peer() {
    let _g = serial();
    let server = Server::start_with_env(1, &[("ORDERD__HTTP__MAX_CONNECTIONS_PER_PEER", "2")]);
    // Two connections served (retrying while a probe of the server's own may hold a slot).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.len() < 2 {
        let mut stream = connect(&server);
        match request(&mut stream, "/livez") {
            Some((200, _, _)) => held.push(stream),
            other => {
                assert!(Instant::now() < deadline, "never served: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // The third is refused, and closed.
    let mut third = connect(&server);
    let (status, head, body) = request(&mut third, "/livez").expect("an answer");
    assert_eq!(status, 429, "{head}{body}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("http.max_connections_per_peer"),
        "{problem}"
    );
    assert!(
        request(&mut third, "/livez").is_none(),
        "closed after the refusal"
    );
    // The two held are still served.
    for stream in &mut held {
        assert_eq!(request(stream, "/livez").map(|r| r.0), Some(200));
    }
    // One closes: a new connection is served.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = connect(&server);
        if let Some((200, _, _)) = request(&mut stream, "/livez") {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Counted as its own refusal (the scrape retries while the closed connections wind down).
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let metrics = server.client().without_key().get("/metrics");
        if metrics.status == 200 {
            break metrics.body.as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "/metrics: {}", metrics.status);
        std::thread::sleep(Duration::from_millis(50));
    };
    // Every reason is exported from the start, at 0: the count must have moved.
    let counted = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("orderd_refusals_total{reason=\"too_many_connections_from_peer\"} ")
        })
        .and_then(|value| value.trim().parse::<f64>().ok());
    assert!(
        counted.is_some_and(|count| count >= 1.0),
        "no refusal counted: {counted:?}"
    );
}

//! The example profiles of `config/examples/` against the real `orderd`: each starts the server
//! with `--config <profile>` (the harness's ORDERD__ variables still set its addresses and
//! directories) and checks what the profile is for — a hot SKU sold exactly under the flash-sale
//! profile, catalog pricing for every key and the shop's currency under the catalog profile,
//! orders kept across a process crash under `async` durability, and both front doors over TLS.
//! A profile that no longer loads (a renamed key, a value out of bounds) fails here.

use std::path::PathBuf;
use std::time::Duration;

use orderd_client::{Client as TcpClient, ClientConfig, TlsOptions};
use orderd_proto::tcp as msg;
use serde_json::json;

use crate::support::{
    assert_problem, check_order, classify, order_body, run_parallel, serial, unique, Outcome,
    Server,
};
use crate::tls::{make_pki, runtime, tls_env, trusting};

fn profile(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("config/examples")
        .join(name);
    assert!(path.is_file(), "no profile {}", path.display());
    path
}

#[test]
fn every_example_profile_has_a_test_here() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["async.toml", "catalog.toml", "flash-sale.toml", "tls.toml"],
        "a new profile in config/examples needs a test in tests/e2e/profiles.rs"
    );
}

#[test]
fn flash_sale_profile_serves_a_hot_sku_exactly() {
    let _serial = serial();
    let server = Server::start_with_config(&profile("flash-sale.toml"), 2, &[], None);
    let client = server.client();
    let sku = unique("SALE");
    let customer = client.create_customer();
    client.adjust_stock(&sku, 300);
    let body = order_body(&customer, &[(sku.clone(), 1, 500)]);
    let outcomes = run_parallel(32, 1000, |_| {
        classify(client.send("POST", "/v1/orders", Some(&body), Some(&unique("sale"))))
    });
    let mut confirmed = 0;
    for outcome in &outcomes {
        match outcome {
            Outcome::Confirmed(order) => {
                check_order(order, &body);
                confirmed += 1;
            }
            Outcome::Rejected(_) => {}
            other => panic!("only 201 and 409 are allowed here, got {other:?}"),
        }
    }
    assert_eq!(confirmed, 300, "exactly the stock is sold");
    let stock = client.stock(&sku);
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (300, 300, 0)
    );
}

#[test]
fn catalog_profile_prices_every_order_from_the_catalog() {
    let _serial = serial();
    let server = Server::start_with_config(&profile("catalog.toml"), 2, &[], None);
    let admin = server.client();
    let customer = admin.create_customer();
    let sku = unique("CAT");
    admin.adjust_stock(&sku, 10);
    let set = admin.call(
        "PUT",
        &format!("/v1/catalog/{sku}"),
        Some(&json!({"price": 1250})),
        None,
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["currency"], "EUR", "the profile's shop currency");
    // client_prices = false: even an admin key's own unit_price must equal the catalog's...
    let wrong = admin.post(
        "/v1/orders",
        &json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 1}]}),
        None,
    );
    assert_problem(&wrong, 422, "price_mismatch");
    // ...and an omitted one takes it.
    let placed = admin.post(
        "/v1/orders",
        &json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 2}]}),
        None,
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(placed.body["total"], 2500);
    assert_eq!(admin.stock(&sku).available, 8);
}

#[test]
fn async_profile_keeps_orders_across_a_process_crash() {
    let _serial = serial();
    let mut server = Server::start_with_config(
        &profile("async.toml"),
        2,
        &[("RUST_LOG", "info,orderd_engine=warn")],
        None,
    );
    assert!(
        server.log().contains("durability=Async"),
        "the profile's durability is not in effect:\n{}",
        server.log()
    );
    let client = server.client();
    let customer = client.create_customer();
    let sku = unique("ASYNC");
    client.adjust_stock(&sku, 50);
    let body = order_body(&customer, &[(sku.clone(), 1, 100)]);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (status, order) = client.post_json("/v1/orders", &body, Some(&unique("async")));
        assert_eq!(status, 201, "{order}");
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    // Past the profile's flush window, a crash of the process (not the machine) loses nothing.
    std::thread::sleep(Duration::from_millis(50));
    server.restart();
    let client = server.client();
    for id in &ids {
        let (status, order) = client.get_json(&format!("/v1/orders/{id}"));
        assert_eq!(status, 200, "order {id} lost: {order}");
    }
    assert_eq!(client.stock(&sku).reserved, 20);
}

#[test]
fn tls_profile_serves_https_and_tcp_over_tls() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("orderd-e2e-profile-tls-")
        .tempdir()
        .unwrap();
    let pki = make_pki(dir.path());
    // The profile's files and addresses (/etc/orderd/tls, 0.0.0.0) are replaced by the test's.
    let env = tls_env(&pki.cert, &pki.key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with_config(&profile("tls.toml"), 2, &env, Some(trusting(&pki.ca)));
    assert!(server.base().starts_with("https://"), "{}", server.base());
    let api = server.client();
    let customer = api.create_customer();
    let sku = unique("TLSP");
    api.adjust_stock(&sku, 3);

    let rt = runtime();
    let config = ClientConfig {
        tls: Some(TlsOptions::from_ca_file(&pki.ca, "localhost").expect("CA file")),
        ..ClientConfig::default()
    };
    let tcp = TcpClient::new(server.tcp_addr(), server.admin_key(), config);
    let order = rt
        .block_on(tcp.place_order(&msg::PlaceOrder {
            customer_id: customer,
            lines: vec![msg::Line {
                sku: sku.clone(),
                qty: 1,
                unit_price: 700,
            }],
            shipping_address: None,
            note: None,
            idempotency_key: Some(unique("tls-profile")),
        }))
        .expect("PLACE_ORDER over TLS");
    assert_eq!(order.status, "confirmed", "{order:?}");
    rt.block_on(tcp.close());
    assert_eq!(api.stock(&sku).available, 2);
}

//! The audit trail over HTTP: every mutation and every refused request leaves exactly one entry
//! with the right actor; the chain verifies client-side (`verify_chain` over `GET /v1/audit`
//! pages) and server-side (`GET /v1/audit/verify`), survives a restart, and an entry edited or
//! deleted in RocksDB behind the server's back is reported by its `seq`.

use crate::support::{assert_problem, order_body, pct, serial, unique, Client, Server};
use orderd_engine::storage::{Family, Storage, Write};
use orderd_engine::RocksStorage;
use orderd_gateway::audit::{verify_chain, AuditEntry};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Every entry matching `query`, following `next` with pages of `limit`.
fn audit_entries(client: &Client, query: &str, limit: usize) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={}", pct(cursor)));
        }
        let (status, page) = client.get_json(&path);
        assert_eq!(status, 200, "GET {path}: {page}");
        let items: Vec<AuditEntry> =
            serde_json::from_value(page["items"].clone()).expect("audit entries");
        assert!(items.len() <= limit, "page larger than limit");
        for item in items {
            if let Some(last) = out.last() {
                assert!(item.seq > last.seq, "entries out of order: {item:?}");
            }
            out.push(item);
        }
        match &page["next"] {
            Value::Null => return out,
            Value::String(cursor) => after = Some(cursor.clone()),
            other => panic!("next must be a string or null: {other}"),
        }
    }
}

fn verify(client: &Client) -> Value {
    let (status, report) = client.get_json("/v1/audit/verify");
    assert_eq!(status, 200, "GET /v1/audit/verify: {report}");
    report
}

/// Creates a key; returns its id, its secret and a client using it.
fn create_key(admin: &Client, role: &str, customer_id: Option<&str>) -> (String, String, Client) {
    let mut body = json!({"name": unique(role), "role": role});
    if let Some(customer) = customer_id {
        body["customer_id"] = json!(customer);
    }
    let (status, key) = admin.post_json("/v1/keys", &body, None);
    assert_eq!(status, 201, "create {role} key: {key}");
    let secret = key["secret"].as_str().unwrap().to_string();
    (
        key["id"].as_str().unwrap().to_string(),
        secret.clone(),
        admin.with_key(&secret),
    )
}

fn admin_key_id(admin: &Client) -> String {
    let (status, page) = admin.get_json("/v1/keys");
    assert_eq!(status, 200, "{page}");
    page["items"][0]["id"].as_str().unwrap().to_string()
}

fn wait_shards_running(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shards = crate::support::shards(client);
        if shards.iter().all(|s| s["state"] == "running") {
            return;
        }
        assert!(Instant::now() < deadline, "shards not running: {shards:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_mutation_and_refusal_has_one_entry_and_the_chain_verifies() {
    let _serial = serial();
    let mut server = Server::start(2);
    let admin = server.client();
    let admin_id = admin_key_id(&admin);
    let mut expected: Vec<(String, &str, String)> = Vec::new();

    let (frontend_id, _, frontend) = create_key(&admin, "frontend", None);
    expected.push((admin_id.clone(), "key.create", frontend_id.clone()));
    let (logistics_id, _, logistics) = create_key(&admin, "logistics", None);
    expected.push((admin_id.clone(), "key.create", logistics_id.clone()));
    let (operator_id, _, operator) = create_key(&admin, "operator", None);
    expected.push((admin_id.clone(), "key.create", operator_id.clone()));
    let (auditor_id, _, auditor) = create_key(&admin, "auditor", None);
    expected.push((admin_id.clone(), "key.create", auditor_id.clone()));

    for sku in ["AUD-A", "AUD-B"] {
        logistics.adjust_stock(sku, 50);
        expected.push((logistics_id.clone(), "stock.adjust", sku.to_string()));
    }
    let customer_id = frontend.create_customer();
    expected.push((frontend_id.clone(), "customer.create", customer_id.clone()));

    let body = order_body(
        &customer_id,
        &[("AUD-A".to_string(), 2, 700), ("AUD-B".to_string(), 1, 300)],
    );
    let (status, first) = frontend.post_json("/v1/orders", &body, Some("aud-1"));
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_str().unwrap().to_string();
    expected.push((frontend_id.clone(), "order.place", first_id.clone()));
    // An idempotent repeat changes nothing and writes nothing.
    let (status, again) = frontend.post_json("/v1/orders", &body, Some("aud-1"));
    assert_eq!((status, &again), (201, &first));
    let (status, second) = frontend.post_json("/v1/orders", &body, None);
    assert_eq!(status, 201, "{second}");
    expected.push((
        frontend_id.clone(),
        "order.place",
        second["id"].as_str().unwrap().to_string(),
    ));
    // A failed placement changes nothing and writes nothing.
    let short = order_body(&customer_id, &[("AUD-A".to_string(), 1000, 1)]);
    assert_problem(
        &frontend.post("/v1/orders", &short, None),
        409,
        "insufficient_stock",
    );

    let cancel = format!("/v1/orders/{first_id}/cancel");
    let (status, cancelled) =
        frontend.post_json(&cancel, &json!({"reason": "Ann Example moved"}), None);
    assert_eq!(status, 200, "{cancelled}");
    expected.push((frontend_id.clone(), "order.cancel", first_id.clone()));
    let (status, _) = frontend.post_json(&cancel, &json!({}), None);
    assert_eq!(status, 200, "a second cancel is 200 and writes nothing");

    let r = operator.post("/v1/ops/shards/1/restart", &json!({}), None);
    assert_eq!(r.status, 202, "{}", r.body);
    expected.push((operator_id.clone(), "shard.restart", "1".to_string()));
    wait_shards_running(&operator);

    // Refusals: 401 without a key and with a wrong one, 403 for a role that may not.
    assert_problem(&admin.without_key().get("/v1/orders"), 401, "unauthorized");
    expected.push((
        "anonymous".into(),
        "auth.unauthorized",
        "GET /v1/orders".into(),
    ));
    let wrong_secret = format!("odk_{}", "ab".repeat(32));
    let wrong = admin.with_key(&wrong_secret);
    assert_problem(
        &wrong.post(
            "/v1/stock/AUD-A/adjustments",
            &json!({"delta": 1, "reason": "x"}),
            None,
        ),
        401,
        "unauthorized",
    );
    expected.push((
        "anonymous".into(),
        "auth.unauthorized",
        "POST /v1/stock/AUD-A/adjustments".into(),
    ));
    let r = auditor.post(
        "/v1/stock/AUD-A/adjustments",
        &json!({"delta": 1, "reason": "x"}),
        None,
    );
    assert_problem(&r, 403, "forbidden");
    expected.push((
        auditor_id.clone(),
        "auth.forbidden",
        "POST /v1/stock/AUD-A/adjustments".into(),
    ));
    assert_problem(&frontend.get("/v1/audit"), 403, "forbidden");
    expected.push((
        frontend_id.clone(),
        "auth.forbidden",
        "GET /v1/audit".into(),
    ));

    // Read it back in small pages, as an auditor, and verify the chain client-side.
    let entries = audit_entries(&auditor, "", 3);
    let got: Vec<(String, &str, String)> = entries
        .iter()
        .map(|e| (e.actor.clone(), e.action.as_str(), e.target.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(verify_chain(&entries), Ok(expected.len()));
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.seq, i as u64 + 1);
        assert!(entry.at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(&entry.at).is_ok());
        if i > 0 {
            assert!(
                entries[i - 1].at <= entry.at,
                "at decreases at {}",
                entry.seq
            );
        }
    }
    let all_text = serde_json::to_string(&entries).unwrap();
    for private in ["Ann Example", "@example.com", "Customer ", &wrong_secret] {
        assert!(
            !all_text.contains(private),
            "{private:?} in the audit trail"
        );
    }
    assert!(
        !server.log().contains(&wrong_secret),
        "a presented secret was logged"
    );
    let place = entries.iter().find(|e| e.action == "order.place").unwrap();
    assert_eq!(
        place.detail,
        format!("customer={customer_id} lines=2 total=1700")
    );
    let adjust = entries.iter().find(|e| e.action == "stock.adjust").unwrap();
    assert_eq!(adjust.detail, "delta=+50");

    let report = verify(&admin);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["entries"], expected.len());
    assert_eq!(report["first_bad_seq"], Value::Null);
    assert_eq!(report["last_hash"], entries.last().unwrap().hash.as_str());

    // Filters: by actor, and by time (entries at or after the sixth entry's time).
    let by_logistics = audit_entries(&auditor, &format!("actor={logistics_id}"), 1);
    assert_eq!(by_logistics, entries[4..6].to_vec());
    let since = &entries[5].at;
    let recent = audit_entries(&auditor, &format!("since={}", pct(since)), 100);
    let want: Vec<AuditEntry> = entries.iter().filter(|e| &e.at >= since).cloned().collect();
    assert_eq!(recent, want);
    assert!(recent.len() >= entries.len() - 5);
    let r = auditor.get("/v1/audit?since=not-a-time");
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(r.body["param"], "since");

    // After a restart the writer continues the same chain.
    server.restart();
    let admin = server.client();
    admin.adjust_stock("AUD-A", 1);
    let after = audit_entries(&admin, "", 1000);
    assert_eq!(after.len(), entries.len() + 1);
    assert_eq!(after[..entries.len()], entries[..]);
    assert_eq!(verify_chain(&after), Ok(after.len()));
    assert_eq!(verify(&admin)["ok"], true);
}

#[test]
fn an_authentication_failure_is_audited_without_the_secret() {
    let _serial = serial();
    let server = Server::start(1);
    let admin = server.client();
    let (revoked_id, revoked_secret, revoked) = create_key(&admin, "frontend", None);
    let r = admin.call("DELETE", &format!("/v1/keys/{revoked_id}"), None, None);
    assert_eq!(r.status, 204);

    assert_problem(&revoked.get("/v1/stock/ANY"), 401, "unauthorized");
    let garbage = admin.with_key("hunter2-not-a-key");
    assert_problem(
        &garbage.get("/v1/orders?status=confirmed"),
        401,
        "unauthorized",
    );

    let entries = audit_entries(&admin, "actor=anonymous", 100);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for entry in &entries {
        assert_eq!(entry.action, "auth.unauthorized");
        assert_eq!(entry.detail, "unknown or revoked API key");
        let text = serde_json::to_string(entry).unwrap();
        assert!(
            !text.contains(&revoked_secret) && !text.contains("hunter2"),
            "{text}"
        );
    }
    assert_eq!(entries[0].target, "GET /v1/stock/ANY");
    // The query string is not recorded.
    assert_eq!(entries[1].target, "GET /v1/orders");
    assert!(!server.log().contains(&revoked_secret) && !server.log().contains("hunter2"));
    let all = audit_entries(&admin, "", 100);
    assert_eq!(
        verify_chain(&all),
        Ok(4),
        "key.create, key.revoke and the two 401s"
    );
}

/// Reads entry `seq` from a stopped server's RocksDB.
fn stored_entry(data_dir: &Path, seq: u64) -> Vec<u8> {
    let storage = RocksStorage::open(&data_dir.join("db")).expect("open RocksDB");
    storage
        .get(Family::Audit, &seq.to_be_bytes())
        .expect("read")
        .unwrap_or_else(|| panic!("no entry {seq}"))
}

/// Writes (`Some`) or deletes (`None`) entry `seq` in a stopped server's RocksDB, behind the
/// server's back.
fn tamper(data_dir: &Path, seq: u64, value: Option<Vec<u8>>) {
    let storage = RocksStorage::open(&data_dir.join("db")).expect("open RocksDB");
    let key = seq.to_be_bytes().to_vec();
    let write = match value {
        Some(value) => Write::Put {
            family: Family::Audit,
            key,
            value,
        },
        None => Write::DeleteRange {
            family: Family::Audit,
            from: key,
            to: (seq + 1).to_be_bytes().to_vec(),
        },
    };
    storage.write(vec![write], true).expect("write");
}

/// `GET /v1/audit/verify` names `seq`; so does `verify_chain` over the fetched entries when the
/// damage is inside the chain (`client_side`).
fn expect_bad(server: &Server, seq: u64, why: &str, client_side: bool) {
    let admin = server.client();
    let report = verify(&admin);
    assert_eq!(report["ok"], false, "{why}: {report}");
    assert_eq!(report["first_bad_seq"], seq, "{why}: {report}");
    assert!(report["detail"].as_str().is_some_and(|d| !d.is_empty()));
    let fetched = audit_entries(&admin, "", 1000);
    if client_side {
        let (bad, detail) = verify_chain(&fetched).expect_err(why);
        assert_eq!(bad, seq, "{why} client-side: {detail}");
    }
}

#[test]
fn an_edited_or_deleted_entry_is_reported_by_its_seq() {
    let _serial = serial();
    let mut server = Server::start(1);
    let admin = server.client();
    for i in 0..6 {
        admin.adjust_stock(&format!("TAMPER-{i}"), 10 + i);
    }
    let entries = audit_entries(&admin, "", 1000);
    assert_eq!(entries.len(), 6);
    assert_eq!(verify(&admin)["ok"], true);
    let data_dir = server.data_dir();

    // Edit entry 3's detail, as someone covering their tracks would.
    server.kill_9();
    let original = stored_entry(&data_dir, 3);
    let mut edited: Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(edited["detail"], "delta=+12");
    edited["detail"] = json!("delta=+1");
    tamper(&data_dir, 3, Some(serde_json::to_vec(&edited).unwrap()));
    server.restart();
    expect_bad(&server, 3, "edited", true);

    // Put it back and delete entry 5 instead.
    server.kill_9();
    tamper(&data_dir, 3, Some(original));
    let fifth = stored_entry(&data_dir, 5);
    tamper(&data_dir, 5, None);
    server.restart();
    expect_bad(&server, 5, "deleted", true);

    // Put it back and delete the newest entry: only the chain tip shows it.
    server.kill_9();
    tamper(&data_dir, 5, Some(fifth));
    tamper(&data_dir, 6, None);
    server.restart();
    expect_bad(&server, 6, "newest deleted", false);
    // The server keeps serving and never reuses the deleted seq.
    let admin = server.client();
    admin.adjust_stock("TAMPER-0", 1);
    let last = audit_entries(&admin, "", 1000);
    assert_eq!(last.last().unwrap().seq, 7);
    assert_eq!(verify(&admin)["first_bad_seq"], 6);
}

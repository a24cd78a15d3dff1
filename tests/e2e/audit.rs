//! The audit trail over HTTP: every mutation and every refused request leaves exactly one entry
//! with the right actor, in the right chain (`control` for the gateway's own actions and the
//! refusals, `shard-N` for what shard N applied, written with its log); every chain verifies
//! client-side (`verify_chain` over `GET /v1/audit` pages) and server-side
//! (`GET /v1/audit/verify`), survives a restart, and damage done in RocksDB behind the server's
//! back is reported by its `seq`: a control entry edited or deleted, a shard record edited or
//! deleted, a log batch edited, the newest entries deleted. An acknowledged order has exactly
//! one `order.place` entry, through Idempotency-Key replays (sequential, racing, pipelined over
//! TCP) and a SIGKILL.

use crate::support::{
    assert_problem, check_order, classify, order_body, pct, place_definitive, random_order, serial,
    unique, Client, Outcome, Server,
};
use orderd_engine::audit::{record_key, Record};
use orderd_engine::event::{batch_decode, batch_push, batch_start, Event};
use orderd_engine::state::shard_of_sku;
use orderd_engine::{CustomerId, OrderId, RocksStorage, ShipmentId};
use orderd_proto::tcp as msg;
use orderd_service::audit::{verify_chain, AuditEntry};
use orderd_storage::{shard_key, Family, Storage, Write};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
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

/// The chain an entry of `action` on `target` belongs to on a server of `shards` shards: the
/// shard that applied an engine mutation (the shard owning the order, customer or shipment; the
/// SKU's shard for stock), `control` for everything else.
fn expected_chain(action: &str, target: &str, shards: u16) -> String {
    let shard = match action {
        "order.place" | "order.cancel" => OrderId::from_str(target).expect("order id").shard(),
        "customer.create" | "customer.update" | "customer.erase" => {
            CustomerId::from_str(target).expect("customer id").shard()
        }
        "shipment.create" | "shipment.event" => {
            ShipmentId::from_str(target).expect("shipment id").shard()
        }
        "stock.adjust" => shard_of_sku(target, shards),
        _ => return "control".to_string(),
    };
    format!("shard-{shard}")
}

/// A verification report that is all good, with one outcome per chain of `chains` (in that
/// order) agreeing with `entries`, the whole trail as listed: its count, and the hash of its
/// newest entry.
fn assert_verified(report: &Value, entries: &[AuditEntry], chains: &[&str]) {
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["entries"], entries.len(), "{report}");
    assert_eq!(report["first_bad_seq"], Value::Null, "{report}");
    assert_eq!(
        report["last_hash"],
        entries.last().map_or(Value::Null, |e| json!(e.hash)),
        "{report}"
    );
    let outcomes = report["chains"].as_array().expect("chains");
    let names: Vec<&str> = outcomes
        .iter()
        .map(|c| c["chain"].as_str().expect("chain name"))
        .collect();
    assert_eq!(names, chains, "{report}");
    for outcome in outcomes {
        let of_chain: Vec<&AuditEntry> = entries
            .iter()
            .filter(|e| e.chain == outcome["chain"])
            .collect();
        assert_eq!(outcome["ok"], true, "{report}");
        assert_eq!(outcome["entries"], of_chain.len(), "{report}");
        assert_eq!(outcome["first_bad_seq"], Value::Null, "{report}");
        assert_eq!(
            outcome["last_hash"],
            of_chain.last().map_or(Value::Null, |e| json!(e.hash)),
            "{report}"
        );
    }
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
    // (chain, actor, action, target), in the order the requests were answered.
    let mut expected: Vec<(String, String, &str, String)> = Vec::new();
    let mut want = |actor: &str, action: &'static str, target: &str| {
        expected.push((
            expected_chain(action, target, 2),
            actor.to_string(),
            action,
            target.to_string(),
        ));
    };
    // Two SKUs on different shards: the order below spans both, and both shard chains grow.
    let sku_a = "AUD-A".to_string();
    let sku_b = (b'B'..=b'Z')
        .map(|c| format!("AUD-{}", c as char))
        .find(|sku| shard_of_sku(sku, 2) != shard_of_sku(&sku_a, 2))
        .expect("a SKU on the other shard");
    let on_shard_1 = if shard_of_sku(&sku_a, 2) == 1 {
        sku_a.clone()
    } else {
        sku_b.clone()
    };

    let (frontend_id, _, frontend) = create_key(&admin, "frontend", None);
    want(&admin_id, "key.create", &frontend_id);
    let (logistics_id, _, logistics) = create_key(&admin, "logistics", None);
    want(&admin_id, "key.create", &logistics_id);
    let (operator_id, _, operator) = create_key(&admin, "operator", None);
    want(&admin_id, "key.create", &operator_id);
    let (auditor_id, _, auditor) = create_key(&admin, "auditor", None);
    want(&admin_id, "key.create", &auditor_id);

    for sku in [&sku_a, &sku_b] {
        logistics.adjust_stock(sku, 50);
        want(&logistics_id, "stock.adjust", sku);
    }
    let customer_id = frontend.create_customer();
    want(&frontend_id, "customer.create", &customer_id);

    let body = order_body(
        &customer_id,
        &[(sku_a.clone(), 2, 700), (sku_b.clone(), 1, 300)],
    );
    let (status, first) = frontend.post_json("/v1/orders", &body, Some("aud-1"));
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_str().unwrap().to_string();
    want(&frontend_id, "order.place", &first_id);
    // An idempotent repeat changes nothing and writes nothing.
    let (status, again) = frontend.post_json("/v1/orders", &body, Some("aud-1"));
    assert_eq!((status, &again), (201, &first));
    let (status, second) = frontend.post_json("/v1/orders", &body, None);
    assert_eq!(status, 201, "{second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    want(&frontend_id, "order.place", &second_id);
    // A failed placement changes nothing and writes nothing.
    let short = order_body(&customer_id, &[(sku_a.clone(), 1000, 1)]);
    assert_problem(
        &frontend.post("/v1/orders", &short, None),
        409,
        "insufficient_stock",
    );

    let cancel = format!("/v1/orders/{first_id}/cancel");
    let (status, cancelled) =
        frontend.post_json(&cancel, &json!({"reason": "Ann Example moved"}), None);
    assert_eq!(status, 200, "{cancelled}");
    want(&frontend_id, "order.cancel", &first_id);
    let (status, _) = frontend.post_json(&cancel, &json!({}), None);
    assert_eq!(status, 200, "a second cancel is 200 and writes nothing");

    let r = operator.post("/v1/ops/shards/1/restart", &json!({}), None);
    assert_eq!(r.status, 202, "{}", r.body);
    want(&operator_id, "shard.restart", "1");
    wait_shards_running(&operator);
    // The restarted shard continues its chain.
    logistics.adjust_stock(&on_shard_1, 5);
    want(&logistics_id, "stock.adjust", &on_shard_1);

    // Refusals: 401 without a key and with a wrong one, 403 for a role that may not.
    assert_problem(&admin.without_key().get("/v1/orders"), 401, "unauthorized");
    want("anonymous", "auth.unauthorized", "GET /v1/orders");
    let wrong_secret = format!("odk_{}", "ab".repeat(32));
    let wrong = admin.with_key(&wrong_secret);
    let adjust_path = format!("/v1/stock/{sku_a}/adjustments");
    assert_problem(
        &wrong.post(&adjust_path, &json!({"delta": 1, "reason": "x"}), None),
        401,
        "unauthorized",
    );
    want(
        "anonymous",
        "auth.unauthorized",
        &format!("POST {adjust_path}"),
    );
    let r = auditor.post(&adjust_path, &json!({"delta": 1, "reason": "x"}), None);
    assert_problem(&r, 403, "forbidden");
    want(
        &auditor_id,
        "auth.forbidden",
        &format!("POST {adjust_path}"),
    );
    assert_problem(&frontend.get("/v1/audit"), 403, "forbidden");
    want(&frontend_id, "auth.forbidden", "GET /v1/audit");

    // Read it back in small pages, as an auditor, and verify the chains client-side.
    let entries = audit_entries(&auditor, "", 3);
    let got: Vec<(String, String, &str, String)> = entries
        .iter()
        .map(|e| {
            (
                e.chain.clone(),
                e.actor.clone(),
                e.action.as_str(),
                e.target.clone(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(verify_chain(&entries), Ok(expected.len()));
    for chain in ["control", "shard-0", "shard-1"] {
        assert!(
            entries.iter().any(|e| e.chain == chain),
            "no entry in {chain}: {entries:?}"
        );
    }
    // The acknowledged order has exactly one placement entry, its replay none.
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "order.place" && e.target == first_id)
            .count(),
        1
    );
    let mut last_at: HashMap<&str, &str> = HashMap::new();
    for entry in &entries {
        assert!(entry.at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(&entry.at).is_ok());
        if let Some(before) = last_at.insert(&entry.chain, &entry.at) {
            assert!(
                before <= entry.at.as_str(),
                "at decreases in {} at {}",
                entry.chain,
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
    assert_verified(&report, &entries, &["control", "shard-0", "shard-1"]);

    // Filters: by actor, and by time (entries at or after the sixth entry's time).
    let by_logistics = audit_entries(&auditor, &format!("actor={logistics_id}"), 1);
    let want: Vec<AuditEntry> = entries
        .iter()
        .filter(|e| e.actor == logistics_id)
        .cloned()
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(by_logistics, want);
    let since = &entries[5].at;
    let recent = audit_entries(&auditor, &format!("since={}", pct(since)), 100);
    let want: Vec<AuditEntry> = entries.iter().filter(|e| &e.at >= since).cloned().collect();
    assert_eq!(recent, want);
    assert!(recent.len() >= entries.len() - 5);
    let r = auditor.get("/v1/audit?since=not-a-time");
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(r.body["param"], "since");

    // After a restart every chain continues where it stood.
    server.restart();
    let admin = server.client();
    admin.adjust_stock(&sku_a, 1);
    let (later_id, _, _) = create_key(&admin, "analyst", None);
    let after = audit_entries(&admin, "", 1000);
    assert_eq!(after.len(), entries.len() + 2);
    assert_eq!(after[..entries.len()], entries[..]);
    let added: Vec<(String, &str, &str)> = after[entries.len()..]
        .iter()
        .map(|e| (e.chain.clone(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        added,
        vec![
            (
                expected_chain("stock.adjust", &sku_a, 2),
                "stock.adjust",
                sku_a.as_str()
            ),
            ("control".to_string(), "key.create", later_id.as_str()),
        ]
    );
    assert_eq!(verify_chain(&after), Ok(after.len()));
    assert_verified(&verify(&admin), &after, &["control", "shard-0", "shard-1"]);
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
        assert_eq!(entry.chain, "control");
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
    assert!(all.iter().all(|e| e.chain == "control"), "{all:?}");
    assert_verified(&verify(&admin), &all, &["control", "shard-0"]);
}

/// A stopped server's RocksDB.
fn open_db(data_dir: &Path) -> RocksStorage {
    RocksStorage::open(&data_dir.join("db")).expect("open RocksDB")
}

/// The value under `key` in a stopped server's RocksDB.
fn stored(data_dir: &Path, family: Family, key: &[u8]) -> Option<Vec<u8>> {
    open_db(data_dir).get(family, key).expect("read")
}

/// Writes (`Some`) or deletes (`None`) one key in a stopped server's RocksDB, behind the
/// server's back.
fn tamper(data_dir: &Path, family: Family, key: &[u8], value: Option<Vec<u8>>) {
    let write = match value {
        Some(value) => Write::Put {
            family,
            key: key.to_vec(),
            value,
        },
        None => {
            // The smallest key after `key`: exactly `key` is deleted.
            let mut to = key.to_vec();
            to.push(0);
            Write::DeleteRange {
                family,
                from: key.to_vec(),
                to,
            }
        }
    };
    open_db(data_dir)
        .write(vec![write], true)
        .expect("write behind the server's back");
}

/// Every record of shard `shard`'s chain in a stopped server's RocksDB, oldest first: its key
/// and the record.
fn shard_records(data_dir: &Path, shard: u16) -> Vec<(Vec<u8>, Record)> {
    let storage = open_db(data_dir);
    let mut out = Vec::new();
    storage
        .scan(
            Family::Audit,
            &record_key(shard, 0),
            &record_key(shard, u64::MAX),
            &mut |key, value| {
                out.push((key.to_vec(), Record::decode(value).expect("a record")));
                true
            },
        )
        .expect("scan");
    out
}

/// Which of `records` holds entry `seq`.
fn record_of(records: &[(Vec<u8>, Record)], seq: u64) -> usize {
    records
        .iter()
        .position(|(_, r)| r.body.entries.iter().any(|e| e.seq == seq))
        .unwrap_or_else(|| panic!("no record holds entry {seq}"))
}

/// `GET /v1/audit/verify` names `seq` as the first bad entry, in chain `chain`, and every other
/// chain verifies. Client-side, `verify_chain` over the fetched entries names the same `seq`
/// when the damage shows in the entries (`client_side`) and accepts them otherwise: deleted
/// newest entries and an edited log are visible only against what the server stores.
fn expect_bad(server: &Server, chain: &str, seq: u64, why: &str, client_side: bool) -> Value {
    let admin = server.client();
    let report = verify(&admin);
    assert_eq!(report["ok"], false, "{why}: {report}");
    assert_eq!(report["first_bad_seq"], seq, "{why}: {report}");
    assert!(
        report["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{why}: {report}"
    );
    let outcomes = report["chains"].as_array().expect("chains");
    assert!(
        outcomes.iter().any(|c| c["chain"] == chain),
        "{why}: no {chain}: {report}"
    );
    for outcome in outcomes {
        let want = if outcome["chain"] == chain {
            (json!(false), json!(seq))
        } else {
            (json!(true), Value::Null)
        };
        assert_eq!(
            (outcome["ok"].clone(), outcome["first_bad_seq"].clone()),
            want,
            "{why}: {report}"
        );
    }
    let fetched = audit_entries(&admin, "", 1000);
    match verify_chain(&fetched) {
        Err((bad, detail)) if client_side => {
            assert_eq!(bad, seq, "{why} client-side: {detail}")
        }
        Ok(n) if !client_side => assert_eq!(n, fetched.len()),
        other => panic!("{why} client-side: {other:?}"),
    }
    report
}

#[test]
fn an_edited_or_deleted_control_entry_is_reported_by_its_seq() {
    let _serial = serial();
    let mut server = Server::start(1);
    let admin = server.client();
    // Control entries with shard entries between them: chains are checked apart.
    create_key(&admin, "frontend", None);
    admin.adjust_stock("TAMPER-0", 10);
    create_key(&admin, "frontend", None);
    admin.adjust_stock("TAMPER-1", 11);
    for _ in 0..4 {
        create_key(&admin, "frontend", None);
    }
    let entries = audit_entries(&admin, "", 1000);
    let chains: Vec<&str> = entries.iter().map(|e| e.chain.as_str()).collect();
    assert_eq!(
        chains,
        ["control", "shard-0", "control", "shard-0", "control", "control", "control", "control"]
    );
    assert_verified(&verify(&admin), &entries, &["control", "shard-0"]);
    let data_dir = server.data_dir();
    let seq = |i: usize| entries[i].seq;

    // Edit entries[5]'s detail (a key's role), as someone covering their tracks would.
    server.kill_9();
    let original = stored(&data_dir, Family::Audit, &seq(5).to_be_bytes()).expect("entries[5]");
    let mut edited: Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(edited["detail"], "role=frontend owner=bootstrap");
    edited["detail"] = json!("role=admin");
    tamper(
        &data_dir,
        Family::Audit,
        &seq(5).to_be_bytes(),
        Some(serde_json::to_vec(&edited).unwrap()),
    );
    server.restart();
    expect_bad(&server, "control", seq(5), "edited", true);

    // Put it back and delete entries[2] instead: the next entry of the control chain breaks,
    // entries[4] (entries[3], of the shard chain, verifies).
    server.kill_9();
    tamper(
        &data_dir,
        Family::Audit,
        &seq(5).to_be_bytes(),
        Some(original),
    );
    let second_key = stored(&data_dir, Family::Audit, &seq(2).to_be_bytes()).expect("entries[2]");
    tamper(&data_dir, Family::Audit, &seq(2).to_be_bytes(), None);
    server.restart();
    expect_bad(&server, "control", seq(4), "deleted", true);

    // Put it back: all good again.
    server.kill_9();
    tamper(
        &data_dir,
        Family::Audit,
        &seq(2).to_be_bytes(),
        Some(second_key),
    );
    server.restart();
    let admin = server.client();
    assert_eq!(audit_entries(&admin, "", 1000), entries);
    assert_verified(&verify(&admin), &entries, &["control", "shard-0"]);

    // Delete the newest entry: only the chain tip shows it.
    assert_eq!(seq(7), seq(6) + 1, "the newest two entries are consecutive");
    server.kill_9();
    tamper(&data_dir, Family::Audit, &seq(7).to_be_bytes(), None);
    server.restart();
    let report = expect_bad(&server, "control", seq(7), "newest deleted", false);
    assert!(
        report["detail"].as_str().unwrap().contains("missing"),
        "{report}"
    );
    // The server keeps serving and never reuses the deleted seq; the entry written next
    // follows the deleted one, so the chain breaks there.
    let admin = server.client();
    let (next_id, _, _) = create_key(&admin, "frontend", None);
    let last = audit_entries(&admin, "", 1000);
    assert_eq!(last.len(), entries.len());
    let newest = last.last().unwrap();
    assert_eq!(
        (newest.action.as_str(), newest.target.as_str()),
        ("key.create", next_id.as_str())
    );
    assert!(newest.seq > seq(7), "{newest:?}");
    expect_bad(&server, "control", newest.seq, "written after", true);
}

#[test]
fn an_edited_or_deleted_shard_record_or_an_edited_log_batch_is_reported_by_its_seq() {
    let _serial = serial();
    let mut server = Server::start(1);
    let admin = server.client();
    for i in 0..3 {
        admin.adjust_stock(&format!("SHARD-{i}"), 10 + i);
    }
    create_key(&admin, "frontend", None);
    for i in 3..6 {
        admin.adjust_stock(&format!("SHARD-{i}"), 10 + i);
    }
    let entries = audit_entries(&admin, "", 1000);
    let chains: Vec<&str> = entries.iter().map(|e| e.chain.as_str()).collect();
    assert_eq!(
        chains,
        ["shard-0", "shard-0", "shard-0", "control", "shard-0", "shard-0", "shard-0"]
    );
    assert_verified(&verify(&admin), &entries, &["control", "shard-0"]);
    let data_dir = server.data_dir();
    let seq = |i: usize| entries[i].seq;

    server.kill_9();
    let records = shard_records(&data_dir, 0);
    let stored_seqs: Vec<u64> = records
        .iter()
        .flat_map(|(_, r)| r.body.entries.iter().map(|e| e.seq))
        .collect();
    let listed: Vec<u64> = entries
        .iter()
        .filter(|e| e.chain == "shard-0")
        .map(|e| e.seq)
        .collect();
    assert_eq!(stored_seqs, listed, "the records hold what is listed");
    // Sequential requests: each is a log batch of its own, with its record.
    let (edit, log, middle, newest) = (
        record_of(&records, seq(1)),
        record_of(&records, seq(2)),
        record_of(&records, seq(4)),
        record_of(&records, seq(6)),
    );
    assert!(
        edit < log && log < middle && middle < newest && newest == records.len() - 1,
        "{records:?}"
    );

    // Edit entries[1]'s detail inside its record, re-encoded as the server would (a valid record
    // behind the same previous hash): reported at that entry.
    let (key, record) = &records[edit];
    let mut body = record.body.clone();
    let i = body
        .entries
        .iter()
        .position(|e| e.seq == seq(1))
        .expect("entries[1]");
    assert_eq!(body.entries[i].detail, "delta=+11");
    body.entries[i].detail = "delta=+1".into();
    let original = stored(&data_dir, Family::Audit, key).expect("record");
    tamper(
        &data_dir,
        Family::Audit,
        key,
        Some(Record::encode(&record.prev, &body)),
    );
    server.restart();
    let fetched = audit_entries(&server.client(), "", 1000);
    assert_eq!(fetched[1].detail, "delta=+1", "the edit is what is served");
    expect_bad(&server, "shard-0", seq(1), "record edited", true);
    server.kill_9();
    tamper(&data_dir, Family::Audit, key, Some(original));

    // Edit the log batch written with entries[2]'s record, while it is still stored: the stock
    // rebuilt from it changes, the entries do not; the record's digest shows it.
    let (_, record) = &records[log];
    let log_key = shard_key(0, record.body.log_first_seq);
    let original_log = stored(&data_dir, Family::Log, &log_key).expect("the log batch is stored");
    let mut events = batch_decode(&original_log).expect("a log batch");
    let mut forged = 0;
    for event in &mut events {
        if let Event::StockAdjusted { sku, delta, .. } = event {
            if sku == "SHARD-2" {
                assert_eq!(*delta, 12);
                *delta = 2;
                forged += 1;
            }
        }
    }
    assert_eq!(forged, 1, "{events:?}");
    let mut forged_log = Vec::new();
    batch_start(&mut forged_log);
    for event in &events {
        batch_push(&mut forged_log, event);
    }
    tamper(&data_dir, Family::Log, &log_key, Some(forged_log));
    server.restart();
    assert_eq!(
        server.client().stock("SHARD-2").on_hand,
        2,
        "the forged log is what the shard was rebuilt from"
    );
    let report = expect_bad(&server, "shard-0", seq(2), "log edited", false);
    assert!(
        report["detail"].as_str().unwrap().contains("log"),
        "{report}"
    );
    server.kill_9();
    tamper(&data_dir, Family::Log, &log_key, Some(original_log));

    // Everything put back: all good again.
    server.restart();
    let admin = server.client();
    assert_eq!(admin.stock("SHARD-2").on_hand, 12);
    assert_eq!(audit_entries(&admin, "", 1000), entries);
    assert_verified(&verify(&admin), &entries, &["control", "shard-0"]);

    // Delete the record of entries[4]: the batch chain breaks at the next record.
    server.kill_9();
    let (key, _) = &records[middle];
    let original = stored(&data_dir, Family::Audit, key).expect("record");
    tamper(&data_dir, Family::Audit, key, None);
    server.restart();
    let next_first = records[middle + 1].1.body.entries[0].seq;
    assert_eq!(next_first, seq(5));
    expect_bad(&server, "shard-0", next_first, "record deleted", true);
    server.kill_9();
    tamper(&data_dir, Family::Audit, key, Some(original));

    // Delete the newest record: only the chain tip shows it, after the last entry verified.
    let (key, _) = &records[newest];
    tamper(&data_dir, Family::Audit, key, None);
    server.restart();
    let report = expect_bad(&server, "shard-0", seq(5) + 1, "newest deleted", false);
    assert!(
        report["detail"].as_str().unwrap().contains("missing"),
        "{report}"
    );
    // The shard keeps serving and never reuses the deleted seq; its next record follows the
    // deleted one, so the chain breaks there.
    let admin = server.client();
    admin.adjust_stock("SHARD-0", 1);
    let last = audit_entries(&admin, "", 1000);
    assert_eq!(last.len(), entries.len());
    let added = last.last().unwrap();
    assert_eq!(
        (
            added.chain.as_str(),
            added.action.as_str(),
            added.target.as_str()
        ),
        ("shard-0", "stock.adjust", "SHARD-0")
    );
    assert!(added.seq > seq(6), "{added:?}");
    expect_bad(&server, "shard-0", added.seq, "written after", true);
}

fn tcp_place(customer: &str, lines: &[(String, u32, u64)], key: &str) -> msg::PlaceOrder {
    msg::PlaceOrder {
        customer_id: customer.to_string(),
        lines: lines
            .iter()
            .map(|(sku, qty, price)| msg::Line {
                sku: sku.clone(),
                qty: *qty,
                unit_price: *price,
            })
            .collect(),
        shipping_address: None,
        note: None,
        idempotency_key: Some(key.to_string()),
    }
}

#[test]
fn an_acknowledged_order_has_exactly_one_place_entry_through_replays_and_a_crash() {
    let _serial = serial();
    let mut server = Server::start(4);
    let admin = server.client();
    let admin_id = admin_key_id(&admin);
    let skus: Vec<String> = (0..6).map(|i| format!("ONCE-{i}")).collect();
    for sku in &skus {
        admin.adjust_stock(sku, 1_000_000);
    }
    let customers: Vec<String> = (0..4).map(|_| admin.create_customer()).collect();
    let mut rng = rand::thread_rng();
    // Every order the test knows of: id → the order acknowledged.
    let mut orders: BTreeMap<String, Value> = BTreeMap::new();

    // Over TCP: every key twice in a row on one connection, all in flight at once (both
    // copies usually reach the shard in the same message).
    const TCP_KEYS: usize = 400;
    let tcp_requests: Vec<msg::PlaceOrder> = (0..TCP_KEYS)
        .map(|i| {
            let body = random_order(&mut rng, &customers[i % 4], &skus, 1..=3, 1..=2);
            let lines: Vec<(String, u32, u64)> = body["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["sku"].as_str().unwrap().to_string(),
                        l["qty"].as_u64().unwrap() as u32,
                        l["unit_price"].as_u64().unwrap(),
                    )
                })
                .collect();
            tcp_place(&customers[i % 4], &lines, &unique("once-tcp"))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tcp_ids: Vec<String> = runtime.block_on(async {
        let connections: Vec<orderd_client::Client> = (0..2)
            .map(|_| {
                orderd_client::Client::new(
                    server.tcp_addr(),
                    server.admin_key(),
                    orderd_client::ClientConfig::default(),
                )
            })
            .collect();
        let mut tasks = Vec::new();
        for (i, request) in tcp_requests.iter().enumerate() {
            for _ in 0..2 {
                let (client, request) = (connections[i % 2].clone(), request.clone());
                tasks.push(tokio::spawn(
                    async move { client.place_order(&request).await },
                ));
            }
        }
        let mut ids = Vec::new();
        for (i, pair) in tasks.chunks_mut(2).enumerate() {
            let mut got = Vec::new();
            for task in pair {
                let order = task
                    .await
                    .expect("task")
                    .unwrap_or_else(|e| panic!("TCP placement {i}: {e}"));
                assert_eq!(order.customer_id, tcp_requests[i].customer_id);
                assert_eq!(order.status, "confirmed");
                got.push(order.id);
            }
            assert_eq!(got[0], got[1], "one key, one order");
            ids.push(got[0].clone());
        }
        ids
    });
    for id in &tcp_ids {
        let (status, order) = admin.get_json(&format!("/v1/orders/{id}"));
        assert_eq!(status, 200, "{order}");
        assert!(orders.insert(id.clone(), order).is_none(), "{id} twice");
    }

    // Over HTTP: every key sent by two threads at about the same time, until a SIGKILL.
    const HTTP_KEYS: usize = 20_000;
    let requests: Vec<(String, Value)> = (0..HTTP_KEYS)
        .map(|i| {
            let body = random_order(&mut rng, &customers[i % 4], &skus, 1..=3, 1..=2);
            (unique("once-http"), body)
        })
        .collect();
    let client = server.client();
    let next = AtomicUsize::new(0);
    let acked = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let attempts: Vec<(usize, Outcome)> = thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (client, requests, next, acked, stop) =
                    (&client, &requests, &next, &acked, &stop);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let job = next.fetch_add(1, Ordering::Relaxed);
                        if job >= 2 * requests.len() {
                            break;
                        }
                        let (key, body) = &requests[job / 2];
                        let res = client.send("POST", "/v1/orders", Some(body), Some(key));
                        let gone = res.is_err();
                        let outcome = classify(res);
                        if matches!(outcome, Outcome::Confirmed(_)) {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push((job / 2, outcome));
                        if gone {
                            break;
                        }
                    }
                    mine
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::Relaxed) < 600 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        server.kill_9();
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert!(
        acked.load(Ordering::Relaxed) >= 600,
        "the load must confirm orders before the kill to be meaningful"
    );
    server.restart();
    let client = server.client();

    // Settle every key sent: its replay is the order (201), the same as any answer before the
    // crash.
    let mut acknowledged: HashMap<usize, Vec<Value>> = HashMap::new();
    for (i, outcome) in &attempts {
        match outcome {
            Outcome::Confirmed(order) => acknowledged.entry(*i).or_default().push(order.clone()),
            Outcome::Unknown(_) => {}
            other => panic!("key {}: {other:?}", requests[*i].0),
        }
    }
    let twice = acknowledged.values().filter(|a| a.len() == 2).count();
    assert!(twice > 0, "some keys must have been acknowledged twice");
    let sent: BTreeSet<usize> = attempts.iter().map(|(i, _)| *i).collect();
    let sent: Vec<usize> = sent.into_iter().collect();
    let settled = crate::support::run_parallel(8, sent.len(), |j| {
        let (key, body) = &requests[sent[j]];
        match place_definitive(&client, key, body) {
            Outcome::Confirmed(order) => {
                check_order(&order, body);
                order
            }
            other => panic!("key {key}: {other:?}"),
        }
    });
    for (i, order) in sent.iter().zip(settled) {
        for before in acknowledged.get(i).into_iter().flatten() {
            assert_eq!(before, &order, "key {}: replayed", requests[*i].0);
        }
        let id = order["id"].as_str().unwrap().to_string();
        assert!(
            orders.insert(id.clone(), order).is_none(),
            "order {id} for two keys"
        );
    }

    // The orders are exactly those, each with exactly one placement entry.
    let listed: BTreeSet<String> = client
        .list_orders("")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    let known: BTreeSet<String> = orders.keys().cloned().collect();
    assert_eq!(
        listed, known,
        "the orders stored are the orders acknowledged"
    );
    let entries = audit_entries(&client, "", 1000);
    let mut placed: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.action == "order.place") {
        placed.entry(entry.target.as_str()).or_default().push(entry);
    }
    let placed_ids: BTreeSet<String> = placed.keys().map(|id| id.to_string()).collect();
    assert_eq!(placed_ids, known, "one placement entry per order, no other");
    for (id, found) in &placed {
        assert_eq!(found.len(), 1, "order {id}: {found:?}");
        let (entry, order) = (found[0], &orders[*id]);
        assert_eq!(entry.actor, admin_id, "{entry:?}");
        assert_eq!(
            entry.chain,
            expected_chain("order.place", id, 4),
            "{entry:?}"
        );
        let lines = order["lines"].as_array().unwrap().len();
        assert_eq!(
            entry.detail,
            format!(
                "customer={} lines={lines} total={}",
                order["customer_id"].as_str().unwrap(),
                order["total"]
            ),
            "{entry:?}"
        );
    }
    eprintln!(
        "{} orders ({} over TCP), {} keys acknowledged twice before the kill",
        known.len(),
        tcp_ids.len(),
        twice
    );
    assert_eq!(verify_chain(&entries), Ok(entries.len()));
    assert_verified(
        &verify(&client),
        &entries,
        &["control", "shard-0", "shard-1", "shard-2", "shard-3"],
    );
}

/// Issue 17, item 12: every audit entry and the chain tip deleted from a stopped server's
/// store verifies on its own (an empty chain); a backup's manifest anchors the tip, so
/// `GET /v1/audit/verify` reports the chain as broken. Fails on the code before (no anchor:
/// `ok` true).
#[test]
fn a_control_chain_truncated_below_the_tip_a_backup_anchored_is_broken() {
    let _serial = serial();
    let mut server = Server::start_with_env(
        1,
        &[
            ("ORDERD__BACKUP__INTERVAL_S", "0"),
            ("ORDERD__BACKUP__VERIFY_INTERVAL_S", "0"),
        ],
    );
    let admin = server.client();
    for _ in 0..3 {
        create_key(&admin, "frontend", None);
    }
    let (status, backup) = admin.post_json("/v1/ops/backups", &json!({}), None);
    assert_eq!(status, 201, "POST /v1/ops/backups: {backup}");
    let id = backup["id"].as_str().expect("id").to_string();
    let before = verify(&admin);
    assert_eq!(before["ok"], true, "{before}");
    server.terminate();

    // Behind the server's back: every control entry and the tip record go.
    let data = server.data_dir();
    open_db(&data)
        .write(
            vec![Write::DeleteRange {
                family: Family::Audit,
                from: 0u64.to_be_bytes().to_vec(),
                to: vec![1],
            }],
            true,
        )
        .expect("truncate the control chain");
    tamper(&data, Family::Control, b"gateway/audit/tip", None);

    server.restart();
    let report = verify(&server.client());
    assert_eq!(report["ok"], false, "{report}");
    let detail = report["detail"].as_str().expect("detail");
    assert!(
        detail.contains("shorter than the tip") && detail.contains(&id),
        "{detail}"
    );
    let control = &report["chains"][0];
    assert_eq!(control["chain"], "control", "{report}");
    assert_eq!(control["ok"], false, "{report}");
}

#[test]
fn refusals_from_one_peer_are_one_entry_and_one_count_per_window() {
    let _serial = serial();
    // A window of 1 s (the harness turns aggregation off for the other tests).
    let server = Server::start_with_env(1, &[("ORDERD__AUDIT__REFUSAL_WINDOW_S", "1")]);
    let admin = server.client();
    let keyless = admin.without_key();
    let floods = 200;
    for _ in 0..floods {
        assert_problem(&keyless.get("/v1/orders"), 401, "unauthorized");
    }
    let entries = audit_entries(&admin, "actor=anonymous", 1000);
    assert_eq!(
        entries.len(),
        1,
        "{floods} refusals in one window: one entry ({entries:?})"
    );
    // Once the window has closed, the next refusal writes its own entry and the count of the
    // closed window's others.
    std::thread::sleep(Duration::from_millis(1200));
    assert_problem(&keyless.get("/v1/orders"), 401, "unauthorized");
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let entries = audit_entries(&admin, "actor=anonymous", 1000);
        if entries.len() >= 3 || Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "auth.unauthorized")
            .count(),
        2,
        "{entries:?}"
    );
    let counted: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.action == "auth.refusals_aggregated")
        .collect();
    assert_eq!(counted.len(), 1, "{entries:?}");
    assert_eq!(counted[0].target, "peer 127.0.0.1");
    assert!(
        counted[0].detail.starts_with(&format!(
            "{} more refused requests from 127.0.0.1",
            floods - 1
        )),
        "{}",
        counted[0].detail
    );
    // The chain still verifies with the aggregated entries in it.
    let (status, verified) = admin.get_json("/v1/audit/verify");
    assert_eq!(status, 200);
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn entries_past_retention_leave_the_live_store_once_a_backup_holds_them_and_stay_in_that_backup() {
    let _serial = serial();
    let mut server = Server::start_with_env(
        2,
        &[
            ("ORDERD__AUDIT__RETENTION_S", "1"),
            ("ORDERD__BACKUP__INTERVAL_S", "0"),
            ("ORDERD__BACKUP__VERIFY_INTERVAL_S", "0"),
        ],
    );
    let admin = server.client();
    let sku = unique("RET");
    admin.adjust_stock(&sku, 100);
    let customer = admin.create_customer();
    for _ in 0..12 {
        let body =
            json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 100}]});
        assert_eq!(admin.post("/v1/orders", &body, None).status, 201);
    }
    for _ in 0..3 {
        create_key(&admin, "frontend", None);
    }
    let before = audit_entries(&admin, "", 1000);
    let shard_before = before.iter().filter(|e| e.chain != "control").count();
    assert!(shard_before >= 14, "{before:?}");
    // Older than retention_s (1 s); the backup then holds them.
    thread::sleep(Duration::from_millis(1500));
    let (status, backup) = admin.post_json("/v1/ops/backups", &json!({}), None);
    assert_eq!(status, 201, "{backup}");
    let id = backup["id"].as_str().unwrap().to_string();
    // The worker takes one job at a time: this drill runs after the retention pass.
    let (status, drill) =
        admin.post_json(&format!("/v1/ops/backups/{id}/verify"), &json!({}), None);
    assert_eq!(
        (status, drill["verified"].clone()),
        (200, json!(true)),
        "{drill}"
    );

    let after = audit_entries(&admin, "", 1000);
    let kept: BTreeSet<u64> = after.iter().map(|e| e.seq).collect();
    let control_before: Vec<u64> = before
        .iter()
        .filter(|e| e.chain == "control")
        .map(|e| e.seq)
        .collect();
    // Of the old entries only the control entry the backup anchored (the newest) is left.
    let old_kept: Vec<u64> = before
        .iter()
        .map(|e| e.seq)
        .filter(|seq| kept.contains(seq))
        .collect();
    assert_eq!(old_kept, vec![*control_before.last().unwrap()], "{after:?}");
    // The chains verify from their floors, and say where they start.
    let report = verify(&admin);
    assert_eq!(report["ok"], true, "{report}");
    let floors: Vec<&Value> = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["retained_after_seq"])
        .collect();
    assert!(floors[0].is_u64(), "control: {report}");
    assert!(floors[1..].iter().any(|f| f.is_u64()), "shards: {report}");
    // A client verifies the listing from the floors the report gives.
    for chain in report["chains"].as_array().unwrap() {
        let name = chain["chain"].as_str().unwrap();
        let mut verifier = match chain["retained_after_seq"].as_u64() {
            Some(seq) => orderd_service::audit::ChainVerifier::after(
                seq,
                chain["retained_after_hash"].as_str().unwrap(),
            ),
            None => orderd_service::audit::ChainVerifier::default(),
        };
        for entry in after.iter().filter(|e| e.chain == name) {
            verifier
                .push(entry)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
    }
    // The same after a restart.
    server.restart();
    let report = verify(&server.client());
    assert_eq!(report["ok"], true, "{report}");
    server.terminate();

    // The backup holds every removed entry, and its chains verify from genesis.
    let restored = tempfile::tempdir().unwrap();
    let repo =
        orderd_engine::backup::Repo::new(server.root().join("backups"), server.manifest_keys());
    repo.restore(
        &id,
        &restored.path().join("data"),
        orderd_engine::backup::RestoreOptions::default(),
        &orderd_engine::backup::NoProgress,
    )
    .expect("restore");
    let storage = open_db(&restored.path().join("data"));
    let filter = orderd_service::audit::AuditFilter {
        limit: 1000,
        ..Default::default()
    };
    let page = orderd_service::audit::read_page(&storage, 2, &filter, 100_000).unwrap();
    let held: BTreeSet<u64> = page.items.iter().map(|e| e.seq).collect();
    assert!(before.iter().all(|e| held.contains(&e.seq)), "{page:?}");
    let report = orderd_service::audit::verify_stored(&storage, 2).unwrap();
    assert!(report.ok, "{}", report.detail);
    assert!(report.chains.iter().all(|c| c.floor.is_none()));
}

#[test]
fn a_shard_chain_truncated_with_its_tip_below_the_tip_a_backup_anchored_is_broken() {
    let _serial = serial();
    let mut server = Server::start_with_env(
        1,
        &[
            ("ORDERD__BACKUP__INTERVAL_S", "0"),
            ("ORDERD__BACKUP__VERIFY_INTERVAL_S", "0"),
        ],
    );
    let admin = server.client();
    let sku = unique("ANCHOR");
    admin.adjust_stock(&sku, 10);
    admin.create_customer();
    let (status, backup) = admin.post_json("/v1/ops/backups", &json!({}), None);
    assert_eq!(status, 201, "POST /v1/ops/backups: {backup}");
    let id = backup["id"].as_str().expect("id").to_string();
    assert_eq!(verify(&admin)["ok"], true);
    server.terminate();

    // Behind the server's back: every record of shard 0's chain and its tip go, which
    // verifies by itself (an empty chain).
    let data = server.data_dir();
    open_db(&data)
        .write(
            vec![Write::DeleteRange {
                family: Family::Audit,
                from: record_key(0, 0),
                to: record_key(0, u64::MAX),
            }],
            true,
        )
        .expect("truncate the shard chain");
    tamper(
        &data,
        Family::Control,
        &orderd_engine::audit::tip_key(0),
        None,
    );

    server.restart();
    let report = verify(&server.client());
    assert_eq!(report["ok"], false, "{report}");
    let detail = report["detail"].as_str().expect("detail");
    assert!(
        detail.contains("shard 0: it ends at entry 0, shorter than the tip")
            && detail.contains(&id),
        "{detail}"
    );
    let shard = &report["chains"][1];
    assert_eq!(
        (shard["chain"].clone(), shard["ok"].clone()),
        (json!("shard-0"), json!(false)),
        "{report}"
    );
}

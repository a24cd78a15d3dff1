//! API keys over HTTP: creation for every role (the secret shown once, never listed), what each
//! key may do, listing with a cursor, revocation at once and across a restart, the last admin
//! key, and the per-key rate limit with `Retry-After`.

use crate::support::{assert_problem, serial, unique, Client, Server};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant};

const ROLES: [&str; 8] = [
    "admin",
    "frontend",
    "customer",
    "logistics",
    "analyst",
    "operator",
    "auditor",
    "merchandiser",
];

/// Creates a key and checks the 201 body; returns it.
fn create_key(admin: &Client, role: &str, customer_id: Option<&str>) -> Value {
    let name = unique(role);
    let mut body = json!({"name": name, "role": role});
    if let Some(customer) = customer_id {
        body["customer_id"] = json!(customer);
    }
    let (status, key) = admin.post_json("/v1/keys", &body, None);
    assert_eq!(status, 201, "create {role} key: {key}");
    let fields: HashSet<&str> = key
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        HashSet::from([
            "id",
            "name",
            "role",
            "owner",
            "created_by",
            "customer_id",
            "secret",
            "created_at"
        ]),
        "{key}"
    );
    assert!(key["id"].as_str().unwrap().starts_with("key_"), "{key}");
    assert_eq!(key["name"], name.as_str());
    assert_eq!(key["role"], role);
    assert_eq!(key["customer_id"], json!(customer_id));
    let secret = key["secret"].as_str().expect("secret");
    assert!(secret.starts_with("odk_") && secret.len() == 68, "{secret}");
    let created_at = key["created_at"].as_str().expect("created_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created_at).is_ok() && created_at.ends_with('Z'),
        "{created_at}"
    );
    key
}

/// A request each role may make, with the status it answers.
fn allowed_request(role: &str, customer_id: &str) -> (String, u16) {
    match role {
        "admin" => ("/v1/keys".into(), 200),
        "frontend" => ("/v1/stock/KEY-SKU".into(), 200),
        "customer" => (format!("/v1/customers/{customer_id}"), 200),
        "logistics" => ("/v1/stock/KEY-SKU".into(), 200),
        "analyst" => ("/v1/orders".into(), 200),
        "operator" => ("/v1/ops/shards".into(), 200),
        "auditor" => ("/v1/audit".into(), 200),
        "merchandiser" => ("/v1/catalog".into(), 200),
        other => panic!("no such role {other}"),
    }
}

/// Every key of `GET /v1/keys`, following `next` with `limit`; asserts no secret is listed.
fn list_keys(admin: &Client, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/keys?limit={limit}");
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={}", crate::support::pct(cursor)));
        }
        let (status, page) = admin.get_json(&path);
        assert_eq!(status, 200, "GET {path}: {page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit);
        for item in items {
            assert!(
                item.get("secret").is_none(),
                "a listed key shows a secret: {item}"
            );
            assert!(item.get("secret_sha256").is_none(), "{item}");
            out.push(item.clone());
        }
        match &page["next"] {
            Value::Null => return out,
            Value::String(cursor) => after = Some(cursor.clone()),
            other => panic!("next must be a string or null: {other}"),
        }
    }
}

#[test]
fn keys_for_every_role_work_are_listed_without_secrets_and_revocation_holds_across_restarts() {
    let _serial = serial();
    let mut server = Server::start(2);
    let admin = server.client();
    let customer_id = admin.create_customer();
    admin.adjust_stock("KEY-SKU", 3);

    let mut created = Vec::new();
    for role in ROLES {
        let customer = (role == "customer").then_some(customer_id.as_str());
        created.push(create_key(&admin, role, customer));
    }
    for key in &created {
        let role = key["role"].as_str().unwrap();
        let client = admin.with_key(key["secret"].as_str().unwrap());
        let (path, status) = allowed_request(role, &customer_id);
        let (got, body) = client.get_json(&path);
        assert_eq!(got, status, "{role} GET {path}: {body}");
        if role != "admin" {
            // Only admin keys manage keys: 403, or 404 for a customer key.
            let refused = if role == "customer" {
                (404, "not_found")
            } else {
                (403, "forbidden")
            };
            assert_problem(&client.get("/v1/keys"), refused.0, refused.1);
            let r = client.post("/v1/keys", &json!({"name": "x", "role": "admin"}), None);
            assert_problem(&r, refused.0, refused.1);
            let id = created[0]["id"].as_str().unwrap();
            let r = client.call("DELETE", &format!("/v1/keys/{id}"), None, None);
            assert_problem(&r, refused.0, refused.1);
        }
    }

    // The list: the first admin key and one new one per role, oldest first, the same over
    // pages of any size, and never a secret.
    let listed = list_keys(&admin, 1000);
    assert_eq!(listed.len(), 1 + ROLES.len(), "{listed:?}");
    assert_eq!(listed[0]["name"], "admin");
    let listed_ids: Vec<&str> = listed.iter().map(|k| k["id"].as_str().unwrap()).collect();
    let created_ids: Vec<&str> = created.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids[1..], created_ids[..]);
    for page_size in [1, 3] {
        let paged = list_keys(&admin, page_size);
        assert_eq!(paged, listed, "pages of {page_size}");
    }
    for (listed, created) in listed[1..].iter().zip(&created) {
        for field in ["id", "name", "role", "customer_id", "created_at"] {
            assert_eq!(listed[field], created[field], "{field}");
        }
    }
    let (_, whole) = admin.get_json("/v1/keys");
    let keys_file = fs::read_to_string(server.data_dir().join("keys.json")).expect("keys.json");
    for key in &created {
        let secret = key["secret"].as_str().unwrap();
        assert!(
            !whole.to_string().contains(secret),
            "a secret in GET /v1/keys"
        );
        assert!(!keys_file.contains(secret), "a secret stored in plaintext");
        assert!(!server.log().contains(secret), "a secret in the log");
    }

    // Revoke frontend, customer and the second admin: 401 at once; the others keep working.
    let revoked: Vec<&Value> = created
        .iter()
        .filter(|k| ["admin", "frontend", "customer"].contains(&k["role"].as_str().unwrap()))
        .collect();
    for key in &revoked {
        let id = key["id"].as_str().unwrap();
        let r = admin.call("DELETE", &format!("/v1/keys/{id}"), None, None);
        assert_eq!(r.status, 204, "revoke {id}: {}", r.body);
        let client = admin.with_key(key["secret"].as_str().unwrap());
        let (path, _) = allowed_request(key["role"].as_str().unwrap(), &customer_id);
        assert_problem(&client.get(&path), 401, "unauthorized");
        let again = admin.call("DELETE", &format!("/v1/keys/{id}"), None, None);
        assert_problem(&again, 404, "not_found");
    }
    assert_eq!(
        list_keys(&admin, 1000).len(),
        1 + ROLES.len() - revoked.len()
    );
    // The first admin key is now the only admin key: revoking it would lock everyone out.
    let own_id = listed[0]["id"].as_str().unwrap();
    let r = admin.call("DELETE", &format!("/v1/keys/{own_id}"), None, None);
    assert_problem(&r, 409, "invalid_transition");
    assert_eq!(
        admin.get_json("/v1/keys").0,
        200,
        "the last admin key still works"
    );
    assert_problem(
        &admin.call("DELETE", "/v1/keys/key_0000000000000000", None, None),
        404,
        "not_found",
    );

    // After a restart (SIGKILL): revoked keys stay revoked, the others still work.
    server.restart();
    let admin = server.client();
    for key in &created {
        let role = key["role"].as_str().unwrap();
        let client = admin.with_key(key["secret"].as_str().unwrap());
        let (path, status) = allowed_request(role, &customer_id);
        let r = client.get(&path);
        if revoked.iter().any(|k| k["id"] == key["id"]) {
            assert_problem(&r, 401, "unauthorized");
        } else {
            assert_eq!(r.status, status, "{role} after restart: {}", r.body);
        }
    }
    assert_eq!(list_keys(&admin, 2).len(), 1 + ROLES.len() - revoked.len());
}

#[test]
fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_are_not_affected() {
    let _serial = serial();
    let server = Server::start_with_env(1, &[("ORDERD__HTTP__RATE_LIMIT_PER_KEY_PER_S", "5")]);
    let admin = server.client();
    let other = create_key(&admin, "analyst", None);
    let other = admin.with_key(other["secret"].as_str().unwrap());
    // Let the admin key's bucket fill again after the creation.
    std::thread::sleep(Duration::from_millis(1200));

    let started = Instant::now();
    let mut ok = 0u32;
    let mut limited = 0u32;
    for _ in 0..30 {
        let r = admin.get("/v1/orders");
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_problem(&r, 429, "rate_limited");
                let retry_after = r.retry_after.as_deref().expect("429 without Retry-After");
                let seconds: u64 = retry_after.parse().expect("Retry-After in whole seconds");
                assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    // A burst of 5, then 5 a second.
    let allowed_max = 5 + (elapsed_s * 5.0).ceil() as u32;
    assert!(
        limited > 0,
        "30 requests in {elapsed_s:.2}s were never limited"
    );
    assert!(
        ok >= 5 && ok <= allowed_max,
        "{ok} allowed in {elapsed_s:.2}s"
    );

    // Another key has a bucket of its own.
    for _ in 0..3 {
        let (status, body) = other.get_json("/v1/orders");
        assert_eq!(status, 200, "the other key is limited too: {body}");
    }
    // And the limited key recovers after the advertised wait.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(admin.get("/v1/orders").status, 200);
}

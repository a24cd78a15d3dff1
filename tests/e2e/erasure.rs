//! Erasure (GDPR art. 17) by crypto-shredding, and `PATCH` of contact data, against the real
//! binary. Customers with random tokens in every personal field place orders; a backup is
//! taken; one customer is erased. Its personal data is then unreadable everywhere at once:
//! through the API (`{"id", "erased": true}`, its orders keep ids, lines and totals and lose
//! their address), in the raw store (the sealed values are still in the log and snapshots, and
//! the key store cannot open them, while a copy of the key store taken before the erasure
//! could: the key's destruction is what protects them), in every copy of the key store, and in
//! the backup taken before the erasure once restored (the erased customer reads as erased, the
//! other customer reads in full). A `kill -9` right after an erasure keeps it; `PATCH` round
//! trips, refuses bad input and keeps the old values; roles.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use orderd_engine::storage::{Family, Storage};
use orderd_engine::RocksStorage;
use orderd_service::customer_keys::CUSTOMER_KEYS_FILE;
use orderd_service::vault::{Field, MasterKeySource, Vault, VaultError};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

use crate::orderctl::{
    backup_server, create_backup, fresh_root, master_key_env, orderctl_with_env, path_str,
    start_restored, wait_offsite_copied,
};
use crate::support::{assert_problem, serial, unique, Client, Server};

/// Length of a token: random alphanumerics (see `pii.rs`: searching for the token alone keeps
/// the search meaningful inside compressed SST blocks).
const TOKEN_CHARS: usize = 24;
/// Shortest base64 body of a sealed value (nonce and tag of an empty plaintext).
const SEALED_BODY_CHARS_MIN: usize = 38;

fn token() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), TOKEN_CHARS)
}

/// A customer with a token in every personal field, and its orders' shipping addresses.
struct Person {
    request: Value,
    tokens: Vec<String>,
    id: String,
    /// Its orders as placed: id, lines, total.
    orders: Vec<Value>,
}

impl Person {
    fn create(client: &Client, sku: &str) -> Person {
        let tokens: Vec<String> = (0..6).map(|_| token()).collect();
        let request = json!({
            "name": format!("Erasable {}", tokens[0]),
            "email": format!("{}@erasure.example", tokens[1]),
            "phone": format!("+1 {}", tokens[2]),
            "address": format!("{} Shred Street", tokens[3]),
        });
        let (status, body) = client.post_json("/v1/customers", &request, None);
        assert_eq!(status, 201, "create customer: {body}");
        let id = body["id"].as_str().expect("id").to_string();
        let orders = [&tokens[4], &tokens[5]]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let order = json!({
                    "customer_id": id,
                    "lines": [{"sku": sku, "qty": 1 + i as u32, "unit_price": 250}],
                    "shipping_address": format!("{t} Delivery Road"),
                });
                let (status, placed) = client.post_json("/v1/orders", &order, None);
                assert_eq!(status, 201, "place: {placed}");
                assert_eq!(placed["shipping_address"], order["shipping_address"]);
                placed
            })
            .collect();
        Person {
            request,
            tokens,
            id,
            orders,
        }
    }

    /// The 16 hex digits of the id, as sealed values and the key store name it.
    fn hex(&self) -> &str {
        self.id.strip_prefix("cus_").expect("cus_ id")
    }

    fn assert_readable(&self, client: &Client) {
        let (status, record) = client.get_json(&format!("/v1/customers/{}", self.id));
        assert_eq!(status, 200, "{record}");
        for field in ["name", "email", "phone", "address"] {
            assert_eq!(record[field], self.request[field], "{field}: {record}");
        }
        assert!(record.get("erased").is_none(), "{record}");
        for placed in &self.orders {
            let (status, order) =
                client.get_json(&format!("/v1/orders/{}", placed["id"].as_str().unwrap()));
            assert_eq!(status, 200, "{order}");
            assert_eq!(order["shipping_address"], placed["shipping_address"]);
            assert!(order.get("customer_erased").is_none(), "{order}");
        }
    }

    /// Reads as erased: the record is its id alone; its orders keep id, lines and total, and
    /// show the customer erased with no address.
    fn assert_erased(&self, client: &Client) {
        let (status, record) = client.get_json(&format!("/v1/customers/{}", self.id));
        assert_eq!(status, 200, "{record}");
        assert_eq!(record, json!({"id": self.id, "erased": true}));
        for placed in &self.orders {
            let id = placed["id"].as_str().unwrap();
            let (status, order) = client.get_json(&format!("/v1/orders/{id}"));
            assert_eq!(status, 200, "{order}");
            for field in ["id", "customer_id", "lines", "total", "created_at"] {
                assert_eq!(order[field], placed[field], "{field}: {order}");
            }
            assert_eq!(order["shipping_address"], Value::Null, "{order}");
            assert_eq!(order["customer_erased"], true, "{order}");
        }
        let listed = client.list_orders(&format!("customer_id={}", self.id));
        assert_eq!(listed.len(), self.orders.len());
        for order in listed {
            assert_eq!(order["customer_erased"], true, "{order}");
            assert_eq!(order["shipping_address"], Value::Null, "{order}");
        }
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("dir entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// No token of `people` in plaintext in any file under `dirs`.
fn assert_no_plaintext(dirs: &[PathBuf], people: &[&Person], when: &str) {
    let mut files = Vec::new();
    for dir in dirs {
        files_under(dir, &mut files);
    }
    assert!(!files.is_empty(), "{when}: nothing to scan");
    for file in files {
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            // A temporary file of a copy in progress (the off-site store's `<name>#<n>`),
            // renamed away since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read {}: {e}", file.display()),
        };
        for person in people {
            for token in &person.tokens {
                assert!(
                    !bytes.windows(TOKEN_CHARS).any(|w| w == token.as_bytes()),
                    "{when}: a personal token of {} in plaintext in {}",
                    person.id,
                    file.display()
                );
            }
        }
    }
}

/// The base64 runs following `\u{1}cus_<hex>:` in every value of the log, snapshot and cold
/// families of the RocksDB store at `db` (opened read-only): the sealed values of that
/// customer as stored. A run may carry the bytes of the next encoded field at its end; see
/// [`candidates`].
fn sealed_runs(db: &Path, hex: &str) -> Vec<String> {
    let storage = RocksStorage::open_read_only(db).expect("open the store read-only");
    let marker = format!("\u{1}cus_{hex}:").into_bytes();
    let mut runs = Vec::new();
    for family in [Family::Log, Family::Snap, Family::Cold] {
        storage
            .scan(family, &[], &[0xff; 16], &mut |_, value| {
                let mut at = 0;
                while let Some(found) = value[at..]
                    .windows(marker.len())
                    .position(|w| w == marker.as_slice())
                {
                    let start = at + found + marker.len();
                    let run: Vec<u8> = value[start..]
                        .iter()
                        .copied()
                        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                        .collect();
                    runs.push(String::from_utf8(run).expect("base64 is ASCII"));
                    at = start;
                }
                true
            })
            .expect("scan");
    }
    runs
}

/// The sealed values a run may stand for: its prefixes down to the shortest sealed body.
fn candidates(hex: &str, run: &str) -> Vec<String> {
    (SEALED_BODY_CHARS_MIN..=run.len())
        .rev()
        .map(|len| format!("\u{1}cus_{hex}:{}", &run[..len]))
        .collect()
}

/// What `vault` opens of a run (any personal field), if anything.
fn opens(vault: &Vault, hex: &str, run: &str) -> Option<String> {
    candidates(hex, run).into_iter().find_map(|value| {
        Field::ALL
            .iter()
            .find_map(|field| vault.open(*field, &value).ok())
    })
}

/// The vault orderd would have on `data` (its store read-only) with the key store `keys`.
fn vault_of(data: &Path, master_key_file: &Path, keys: &Path) -> Vault {
    let storage = Arc::new(RocksStorage::open_read_only(&data.join("db")).expect("open read-only"));
    Vault::load_with_customer_keys(
        storage,
        MasterKeySource::File {
            path: master_key_file.to_path_buf(),
        },
        keys.to_path_buf(),
        None,
    )
    .expect("load the vault")
}

/// The erased customer's sealed values are in the store at `data` and none opens with its key
/// store (each is refused as erased), while `before` (a key store copied before the erasure)
/// opens them to its tokens; the other customer's values open with the current key store.
fn assert_shredded_in_store(
    data: &Path,
    master_key_file: &Path,
    before: &Path,
    erased: &Person,
    other: &Person,
    what: &str,
) {
    let db = data.join("db");
    let erased_runs = sealed_runs(&db, erased.hex());
    let other_runs = sealed_runs(&db, other.hex());
    assert!(
        !erased_runs.is_empty() && !other_runs.is_empty(),
        "{what}: the store holds sealed values of both customers ({} and {})",
        erased_runs.len(),
        other_runs.len()
    );
    let live = vault_of(data, master_key_file, &data.join(CUSTOMER_KEYS_FILE));
    let old = vault_of(data, master_key_file, before);
    for run in &erased_runs {
        for value in candidates(erased.hex(), run) {
            assert!(
                matches!(
                    live.open(Field::CustomerName, &value),
                    Err(VaultError::Erased)
                ),
                "{what}: a sealed value of the erased customer is not refused as erased"
            );
        }
        let opened = opens(&old, erased.hex(), run)
            .unwrap_or_else(|| panic!("{what}: the key from before the erasure opens it"));
        assert!(
            erased.tokens.iter().any(|t| opened.contains(t.as_str())),
            "{what}: it was the erased customer's data"
        );
    }
    for run in &other_runs {
        let opened = opens(&live, other.hex(), run)
            .unwrap_or_else(|| panic!("{what}: the other customer's sealed value opens"));
        assert!(other.tokens.iter().any(|t| opened.contains(t.as_str())));
    }
}

/// Waits until the key store file at `path` has no key of `erased` and its tombstone.
fn wait_key_gone(path: &Path, erased: &Person, wrapped: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if !text.contains(wrapped) && text.contains(&format!("x {}\n", erased.hex())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still holds the erased key (or no tombstone):\n{text}",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn erasure_shreds_a_customer_in_the_store_every_key_copy_and_an_earlier_backup() {
    let _serial = serial();
    let mut server = backup_server();
    let api = server.client();
    let sku = unique("ERA");
    api.adjust_stock(&sku, 100);
    let victim = Person::create(&api, &sku);
    let other = Person::create(&api, &sku);
    victim.assert_readable(&api);
    other.assert_readable(&api);

    let backup = create_backup(&server);
    let backup_id = backup["id"].as_str().expect("id").to_string();
    wait_offsite_copied(&server, &backup_id);
    let data = server.data_dir();
    let dirs = [
        data.clone(),
        server.root().join("backups"),
        server.root().join("offsite"),
    ];
    assert_no_plaintext(&dirs, &[&victim, &other], "before the erasure");

    // The victim's wrapped key is in the key store and in both of its copies (refreshed with
    // the backup); a copy of the store from before the erasure proves what the key opened.
    let store = data.join(CUSTOMER_KEYS_FILE);
    let before = server.root().join("customer.keys.before-erasure");
    fs::copy(&store, &before).expect("copy the key store");
    let text = fs::read_to_string(&store).expect("key store");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("k {} ", victim.hex())))
        .unwrap_or_else(|| panic!("no key of {} in\n{text}", victim.id));
    let wrapped = line.rsplit(' ').next().expect("wrapped").to_string();
    let copies = [
        server.root().join("backups").join(CUSTOMER_KEYS_FILE),
        server.root().join("offsite").join(CUSTOMER_KEYS_FILE),
    ];
    for copy in &copies {
        let text = fs::read_to_string(copy).unwrap_or_default();
        assert!(text.contains(&wrapped), "{} lacks the key", copy.display());
    }

    // Erase: answered, idempotent, and the record is its id alone.
    let path = format!("/v1/customers/{}/erase", victim.id);
    let (status, body) = api.post_json(&path, &json!({}), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": victim.id, "erased": true}));
    let again = api.call("POST", &path, None, None);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, body);
    victim.assert_erased(&api);
    other.assert_readable(&api);
    // An erased customer is changed no more and orders nothing.
    let patched = api.call(
        "PATCH",
        &format!("/v1/customers/{}", victim.id),
        Some(&json!({"name": "Back"})),
        None,
    );
    assert_problem(&patched, 409, "invalid_transition");
    let order =
        json!({"customer_id": victim.id, "lines": [{"sku": sku, "qty": 1, "unit_price": 250}]});
    let placed = api.call("POST", "/v1/orders", Some(&order), None);
    assert_problem(&placed, 409, "invalid_transition");
    // Audited once, without personal data.
    let (status, page) = api.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{page}");
    let erasures: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "customer.erase")
        .collect();
    assert_eq!(erasures.len(), 1, "{page}");
    assert_eq!(erasures[0]["target"], victim.id.as_str());
    let entry = erasures[0].to_string();
    assert!(victim.tokens.iter().all(|t| !entry.contains(t.as_str())));

    // Every copy of the key store loses the key: the live one and the one beside the backups
    // at once, the off-site one by the job the erasure requests.
    wait_key_gone(&store, &victim, &wrapped);
    for copy in &copies {
        wait_key_gone(copy, &victim, &wrapped);
    }
    assert!(fs::read_to_string(&store)
        .unwrap()
        .contains(&format!("k {} ", other.hex())));
    assert_no_plaintext(&dirs, &[&victim, &other], "after the erasure");

    // The sealed values are still in the log: unreadable with the key store, readable only
    // with the key the erasure destroyed.
    server.terminate();
    assert_shredded_in_store(
        &data,
        &server.master_key_file(),
        &before,
        &victim,
        &other,
        "the live store",
    );

    // The backup taken before the erasure, restored into a fresh directory.
    let restored_root = fresh_root();
    let restored_data = restored_root.path().join("data");
    let key_env = master_key_env(&server);
    let backups = server.root().join("backups");
    let offsite = server.root().join("offsite");
    let run = orderctl_with_env(
        &[
            "backup",
            "restore",
            &backup_id,
            "--data-dir",
            path_str(&restored_data),
            "--backup-dir",
            path_str(&backups),
            "--offsite",
            path_str(&offsite),
        ],
        &key_env.each(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("customer key store"), "{}", run.stderr);
    assert_shredded_in_store(
        &restored_data,
        &server.master_key_file(),
        &before,
        &victim,
        &other,
        "the backup from before the erasure",
    );
    let mut restored = start_restored(&server, restored_root.path());
    let client = restored.client();
    victim.assert_erased(&client);
    other.assert_readable(&client);
    let refused = client.call(
        "PATCH",
        &format!("/v1/customers/{}", victim.id),
        Some(&json!({"phone": "+1 0"})),
        None,
    );
    assert_problem(&refused, 409, "invalid_transition");
    restored.terminate();
}

#[test]
fn patch_round_trips_refuses_bad_input_and_an_erasure_survives_kill_9() {
    let _serial = serial();
    let mut server = Server::start(2);
    let admin = server.client();
    let id = admin.create_customer();
    let other = admin.create_customer();
    let path = format!("/v1/customers/{id}");
    let tokens: Vec<String> = (0..4).map(|_| token()).collect();
    let change = json!({
        "name": format!("Renamed {}", tokens[0]),
        "email": format!("{}@patched.example", tokens[1]),
        "phone": format!("+44 {}", tokens[2]),
        "address": format!("{} Patch Lane", tokens[3]),
    });
    let reply = admin.call("PATCH", &path, Some(&change), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    for field in ["name", "email", "phone", "address"] {
        assert_eq!(reply.body[field], change[field], "{field}");
    }
    assert_eq!(reply.body["id"], id.as_str());
    let (_, record) = admin.get_json(&path);
    assert_eq!(record, reply.body);
    // One field: the others stay; `{}` and `null` change nothing.
    let reply = admin.call("PATCH", &path, Some(&json!({"phone": "+44 1"})), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["phone"], "+44 1");
    assert_eq!(reply.body["name"], change["name"]);
    for unchanged in [json!({}), json!({"name": null})] {
        let reply = admin.call("PATCH", &path, Some(&unchanged), None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["name"], change["name"]);
    }
    let current = admin.get_json(&path).1;

    // Bad input: the documented 400 naming the field, and nothing changes.
    let bad: [(Value, &str); 7] = [
        (json!({"nickname": "x"}), "nickname"),
        (json!({"email": "not-an-address"}), "email"),
        (json!({"name": "   "}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"address": "a\u{7}b"}), "address"),
        (json!({"phone": "1".repeat(51)}), "phone"),
        (json!({"id": other}), "id"),
    ];
    for (body, param) in bad {
        let reply = admin.call("PATCH", &path, Some(&body), None);
        assert_problem(&reply, 400, "invalid_request");
        assert_eq!(reply.body["param"], param, "{body}: {}", reply.body);
    }
    let malformed = admin.send_text("PATCH", &path, "application/json", "{\"name\": ");
    assert_problem(&malformed, 400, "invalid_request");
    assert_eq!(
        admin.get_json(&path).1,
        current,
        "bad input changed nothing"
    );
    for unknown in ["/v1/customers/cus_00ff000000000001", "/v1/customers/nope"] {
        let reply = admin.call("PATCH", unknown, Some(&json!({"name": "x"})), None);
        assert_problem(&reply, 404, "not_found");
        let reply = admin.call("POST", &format!("{unknown}/erase"), None, None);
        assert_problem(&reply, 404, "not_found");
    }
    let reply = admin.call(
        "POST",
        &format!("{path}/erase"),
        Some(&json!({"why": 1})),
        None,
    );
    assert_problem(&reply, 400, "invalid_request");
    assert_eq!(
        admin.get_json(&path).1,
        current,
        "a refused erasure erased nothing"
    );

    // An Idempotency-Key: a repeat answers again, another body with it is a conflict.
    let key = unique("patch");
    let first = admin.call("PATCH", &path, Some(&json!({"phone": "+44 2"})), Some(&key));
    assert_eq!(first.status, 200, "{}", first.body);
    let repeat = admin.call("PATCH", &path, Some(&json!({"phone": "+44 2"})), Some(&key));
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    assert_eq!(repeat.body, first.body);
    let conflict = admin.call("PATCH", &path, Some(&json!({"phone": "+44 3"})), Some(&key));
    assert_problem(&conflict, 422, "idempotency_conflict");

    // Roles: the customer itself, a front end; not another customer's key, not logistics;
    // only an admin erases.
    let key_of = |role: &str, customer: Option<&str>| {
        let mut body = json!({"name": unique(role), "role": role});
        if let Some(customer) = customer {
            body["customer_id"] = json!(customer);
        }
        let (status, key) = admin.post_json("/v1/keys", &body, None);
        assert_eq!(status, 201, "{key}");
        admin.with_key(key["secret"].as_str().unwrap())
    };
    let own = key_of("customer", Some(&id));
    let reply = own.call("PATCH", &path, Some(&json!({"name": "Self Service"})), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["name"], "Self Service");
    let reply = own.call(
        "PATCH",
        &format!("/v1/customers/{other}"),
        Some(&json!({"name": "x"})),
        None,
    );
    assert_problem(&reply, 404, "not_found");
    assert_problem(
        &own.call("POST", &format!("{path}/erase"), None, None),
        404,
        "not_found",
    );
    let frontend = key_of("frontend", None);
    let reply = frontend.call(
        "PATCH",
        &path,
        Some(&json!({"address": "2 Front St"})),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_problem(
        &frontend.call("POST", &format!("{path}/erase"), None, None),
        403,
        "forbidden",
    );
    let logistics = key_of("logistics", None);
    assert_problem(
        &logistics.call("PATCH", &path, Some(&json!({"name": "x"})), None),
        403,
        "forbidden",
    );
    // An auditor reads the change masked.
    let auditor = key_of("auditor", None);
    let (status, masked) = auditor.get_json(&path);
    assert_eq!(status, 200, "{masked}");
    assert_eq!(masked["name"], "S***");

    // The change survives kill -9, and its values are sealed at rest.
    server.restart();
    let admin = server.client();
    let (_, record) = admin.get_json(&path);
    assert_eq!(record["name"], "Self Service");
    assert_eq!(record["address"], "2 Front St");
    assert_eq!(record["email"], change["email"]);
    let mut files = Vec::new();
    files_under(&server.data_dir(), &mut files);
    for file in files {
        let bytes = fs::read(&file).unwrap();
        for token in &tokens {
            assert!(
                !bytes.windows(TOKEN_CHARS).any(|w| w == token.as_bytes()),
                "a patched value in plaintext in {}",
                file.display()
            );
        }
    }

    // Erased, then killed at once: erased after the restart, and still idempotent.
    let reply = admin.call("POST", &format!("{path}/erase"), None, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.restart();
    let admin = server.client();
    let (status, record) = admin.get_json(&path);
    assert_eq!(status, 200);
    assert_eq!(record, json!({"id": id, "erased": true}));
    assert_problem(
        &admin.call("PATCH", &path, Some(&json!({"name": "x"})), None),
        409,
        "invalid_transition",
    );
    let reply = admin.call("POST", &format!("{path}/erase"), None, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, json!({"id": id, "erased": true}));
    let (status, record) = admin.get_json(&format!("/v1/customers/{other}"));
    assert_eq!(status, 200);
    assert!(record["email"].as_str().is_some(), "{record}");
}

//! Personal data at rest. Canary strings go into every personal field of 1,000 customers and
//! their orders; the API gives them back intact, while no file under the data directory (log,
//! snapshots, everything RocksDB writes), no backup and no server log line holds one in
//! plaintext — before and after a restart. Then: auditors read masked values, master key
//! rotation through the API keeps every value readable while serving and after a restart, and
//! a wrong or misplaced master key stops the server from starting. Data an earlier version
//! stored in plaintext is sealed at the first start of this one and leaves the disk.

use crate::support::{assert_problem, run_parallel, serial, unique, Client, Server};
use orderd_engine::{Engine, EngineConfig, NewCustomer, NewLine, PlaceOrder};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Customers of the canary test, each with one order.
const CUSTOMERS: usize = 1000;
/// Length of a canary token: random alphanumerics, unique per value. Searching for the random
/// token alone (not a shared prefix) keeps the search meaningful inside LZ4-compressed SST
/// blocks, where a repeated prefix would be stored as a back-reference.
const TOKEN_CHARS: usize = 24;
/// The default key file, relative to the server's working directory (the test root).
const KEY_FILE: &str = "orderd-master.key";
/// Client threads.
const THREADS: usize = 8;
/// SKU every canary order buys.
const SKU: &str = "CANARY-1";

fn token() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), TOKEN_CHARS)
}

/// One customer and its order, with a token in every personal field and one in the order's
/// note (not personal, so stored in plaintext: the scan's positive control).
struct Canary {
    customer: Value,
    shipping_address: String,
    note: String,
    /// Tokens of the personal fields: name, email, phone, address, shipping address.
    personal: [String; 5],
    note_token: String,
}

impl Canary {
    fn new() -> Canary {
        let personal = [token(), token(), token(), token(), token()];
        let note_token = token();
        Canary {
            customer: json!({
                "name": format!("Canary {}", personal[0]),
                "email": format!("{}@canary.example", personal[1]),
                "phone": format!("+1 {}", personal[2]),
                "address": format!("{} Canary Street", personal[3]),
            }),
            shipping_address: format!("{} Canary Road", personal[4]),
            note: format!("note {note_token}"),
            personal,
            note_token,
        }
    }
}

/// Asserts a customer response carries exactly the personal data of `request`.
fn assert_customer(response: &Value, request: &Value) {
    for field in ["name", "email", "phone", "address"] {
        assert_eq!(response[field], request[field], "{field}: {response}");
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

/// Which of `tokens` (each `TOKEN_CHARS` bytes) occur in the raw bytes of any file under
/// `dirs`, with the file of their first occurrence; also how many bytes were scanned.
fn scan(dirs: &[PathBuf], tokens: &HashSet<Vec<u8>>) -> (HashMap<Vec<u8>, PathBuf>, u64) {
    let mut files = Vec::new();
    for dir in dirs {
        files_under(dir, &mut files);
    }
    let mut found = HashMap::new();
    let mut scanned = 0u64;
    for file in files {
        let bytes = fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        scanned += bytes.len() as u64;
        for window in bytes.windows(TOKEN_CHARS) {
            if window[0].is_ascii_alphanumeric() && tokens.contains(window) {
                found.entry(window.to_vec()).or_insert_with(|| file.clone());
            }
        }
    }
    (found, scanned)
}

/// Scans the data, backup and off-site directories: no personal token anywhere, and most note
/// tokens found (so the scan does see what is stored).
fn assert_no_plaintext_at_rest(server: &Server, canaries: &[Canary], when: &str) {
    let personal: HashSet<Vec<u8>> = canaries
        .iter()
        .flat_map(|c| c.personal.iter().map(|t| t.as_bytes().to_vec()))
        .collect();
    let notes: HashSet<Vec<u8>> = canaries
        .iter()
        .map(|c| c.note_token.as_bytes().to_vec())
        .collect();
    let dirs = [
        server.data_dir(),
        server.root().join("backups"),
        server.root().join("offsite"),
    ];
    let (hits, scanned) = scan(&dirs, &personal);
    let examples: Vec<String> = hits
        .iter()
        .take(5)
        .map(|(token, file)| format!("{} in {}", String::from_utf8_lossy(token), file.display()))
        .collect();
    assert!(
        hits.is_empty(),
        "{when}: {} personal canaries in plaintext at rest, e.g. {examples:?}",
        hits.len()
    );
    let (seen, _) = scan(&dirs, &notes);
    assert!(
        seen.len() * 10 >= notes.len() * 9,
        "{when}: the scan of {scanned} bytes found only {} of {} plaintext notes; it cannot \
         be trusted to find personal data either",
        seen.len(),
        notes.len()
    );
}

/// The master key in the default key file, and its id (first 8 bytes of SHA-256, hex).
fn key_file(server: &Server, suffix: &str) -> (String, String) {
    let path = server.root().join(format!("{KEY_FILE}{suffix}"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex_key = text.trim().to_string();
    assert_eq!(hex_key.len(), 64, "{} holds 64 hex digits", path.display());
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is private", path.display());
    let bytes = hex::decode(&hex_key).expect("hex key");
    let id = hex::encode(&Sha256::digest(&bytes)[..8]);
    (hex_key, id)
}

/// Secrets of new keys with these roles (`POST /v1/keys`).
fn role_keys(server: &Server, roles: &[&str]) -> Vec<String> {
    let client = server.client();
    roles
        .iter()
        .map(|role| {
            let r = client.post("/v1/keys", &json!({"name": role, "role": role}), None);
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["secret"].as_str().expect("secret").to_string()
        })
        .collect()
}

/// Creates a customer and places its order; returns both ids.
fn create(client: &Client, canary: &Canary) -> (String, String) {
    let (status, customer) = client.post_json("/v1/customers", &canary.customer, None);
    assert_eq!(status, 201, "{customer}");
    assert_customer(&customer, &canary.customer);
    let id = customer["id"].as_str().expect("id").to_string();
    let order = json!({
        "customer_id": id,
        "lines": [{"sku": SKU, "qty": 1, "unit_price": 100}],
        "shipping_address": canary.shipping_address,
        "note": canary.note,
    });
    let key = unique("pii");
    let (status, placed) = client.post_json("/v1/orders", &order, Some(&key));
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["shipping_address"], canary.shipping_address.as_str());
    // An idempotent replay answers the same, opened.
    let (status, again) = client.post_json("/v1/orders", &order, Some(&key));
    assert_eq!((status, &again), (201, &placed));
    (id, placed["id"].as_str().expect("id").to_string())
}

/// Every `step`-th customer and order reads back as written.
fn assert_readable(client: &Client, canaries: &[Canary], ids: &[(String, String)], step: usize) {
    for (canary, (customer, order)) in canaries.iter().zip(ids).step_by(step) {
        let (status, got) = client.get_json(&format!("/v1/customers/{customer}"));
        assert_eq!(status, 200, "{got}");
        assert_customer(&got, &canary.customer);
        let (status, got) = client.get_json(&format!("/v1/orders/{order}"));
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["shipping_address"], canary.shipping_address.as_str());
        assert_eq!(got["note"], canary.note.as_str());
        let (status, page) = client.get_json(&format!("/v1/orders?customer_id={customer}"));
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["items"][0]["shipping_address"],
            canary.shipping_address.as_str()
        );
    }
}

#[test]
fn personal_data_canaries_never_reach_the_disk_or_the_log() {
    let _serial = serial();
    // Small snapshot interval: snapshots are written (and scanned) too. Debug logging: the
    // log check covers everything the server can say.
    let mut server = Server::start_with_env(
        2,
        &[
            ("ORDERD__ENGINE__SNAPSHOT_INTERVAL_EVENTS", "300"),
            ("RUST_LOG", "debug"),
        ],
    );
    let client = server.client();
    client.adjust_stock(SKU, CUSTOMERS as i64);
    let canaries: Vec<Canary> = (0..CUSTOMERS).map(|_| Canary::new()).collect();
    let ids = run_parallel(THREADS, CUSTOMERS, |i| create(&client, &canaries[i]));
    assert_readable(&client, &canaries, &ids, 7);

    let (key_hex, _) = key_file(&server, "");
    server.terminate();
    assert_no_plaintext_at_rest(&server, &canaries, "after SIGTERM");

    // Recovery replays the log (and flushes it into SST files): still no plaintext.
    server.restart();
    let client = server.client();
    assert_readable(&client, &canaries, &ids, 5);
    server.terminate();
    assert_no_plaintext_at_rest(&server, &canaries, "after a restart");

    // The server's own output: no canary, no key.
    let log = server.log();
    assert!(
        log.contains("GENERATED A NEW MASTER KEY"),
        "the first start warns"
    );
    for canary in &canaries {
        for token in &canary.personal {
            assert!(
                !log.contains(token.as_str()),
                "a canary is in the server log"
            );
        }
    }
    assert!(
        !log.contains(&key_hex),
        "the master key is in the server log"
    );
    let data_files = {
        let mut files = Vec::new();
        files_under(&server.data_dir(), &mut files);
        files
    };
    for file in data_files {
        let bytes = fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(key_hex.len())
                .any(|w| w == key_hex.as_bytes()),
            "the master key is in {}",
            file.display()
        );
    }
}

#[test]
fn auditors_see_masked_values_and_key_rotation_keeps_every_value_readable() {
    let _serial = serial();
    let mut server = Server::start(2);
    let secrets = role_keys(&server, &["auditor", "operator", "frontend"]);
    let (auditor, operator, frontend) = (&secrets[0], &secrets[1], &secrets[2]);
    let client = server.client();
    client.adjust_stock(SKU, 10_000);
    let mut canaries: Vec<Canary> = (0..40).map(|_| Canary::new()).collect();
    let mut ids = run_parallel(THREADS, canaries.len(), |i| create(&client, &canaries[i]));

    // The auditor: masked, from the plaintext (first character, then ***).
    for (canary, (customer, _)) in canaries.iter().zip(&ids).take(5) {
        let (status, got) = client
            .with_key(auditor)
            .get_json(&format!("/v1/customers/{customer}"));
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["name"], "C***");
        assert_eq!(
            got["email"],
            format!("{}***@canary.example", &canary.personal[1][..1])
        );
        assert_eq!(got["phone"], "+***");
        assert_eq!(got["address"], format!("{}***", &canary.personal[3][..1]));
    }

    // Only admin and operator rotate.
    for secret in [auditor, frontend] {
        let r = client
            .with_key(secret)
            .call("POST", "/v1/ops/keys/rotate", None, None);
        assert_problem(&r, 403, "forbidden");
    }
    let r = client
        .without_key()
        .call("POST", "/v1/ops/keys/rotate", None, None);
    assert_problem(&r, 401, "unauthorized");

    // Rotations while a writer keeps creating and reading customers.
    let (_, first_master) = key_file(&server, "");
    let stop = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    let during: Vec<(Canary, (String, String))> = thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let canary = Canary::new();
                let ids = create(&client, &canary);
                let (status, got) = client.get_json(&format!("/v1/customers/{}", ids.0));
                assert_eq!(status, 200, "{got}");
                assert_customer(&got, &canary.customer);
                written.fetch_add(1, Ordering::Relaxed);
                out.push((canary, ids));
            }
            out
        });
        let mut masters = vec![first_master.clone()];
        for round in 1..=3u64 {
            thread::sleep(Duration::from_millis(150));
            let r = client
                .with_key(operator)
                .call("POST", "/v1/ops/keys/rotate", None, None);
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["data_key_id"], format!("{:x}", round + 1));
            assert_eq!(r.body["rewrapped"], round);
            let (_, master) = key_file(&server, "");
            assert_eq!(r.body["master_key_id"], master.as_str());
            let (_, previous) = key_file(&server, ".previous");
            assert_eq!(&previous, masters.last().unwrap());
            assert!(!masters.contains(&master), "a new master key each time");
            assert!(!server.root().join(format!("{KEY_FILE}.new")).exists());
            masters.push(master);
        }
        thread::sleep(Duration::from_millis(150));
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer")
    });
    assert!(
        written.load(Ordering::Relaxed) >= 3,
        "the writer kept writing during the rotations"
    );
    for (canary, id) in during {
        canaries.push(canary);
        ids.push(id);
    }
    // Each rotation is in the audit trail: ids and counts, never a key.
    let (status, page) = client.with_key(auditor).get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{page}");
    let rotations: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "keys.rotate")
        .collect();
    assert_eq!(rotations.len(), 3, "{page}");
    assert_eq!(rotations[2]["detail"], "data_key=4 rewrapped=3");
    assert_readable(&client, &canaries, &ids, 1);

    // After a restart, with the newest key file.
    server.terminate();
    server.restart();
    let client = server.client();
    assert_readable(&client, &canaries, &ids, 1);
    let (key_hex, master) = key_file(&server, "");

    // The same key from the environment works, but rotating it is the operator's job: 409.
    server.terminate();
    server.set_env(&[("ORDERD_MASTER_KEY", &key_hex)]);
    server.restart();
    let client = server.client();
    assert_readable(&client, &canaries, &ids, 3);
    let r = client
        .with_key(operator)
        .call("POST", "/v1/ops/keys/rotate", None, None);
    assert_problem(&r, 409, "invalid_transition");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("ORDERD_MASTER_KEY"),
        "{}",
        r.body
    );

    // A wrong master key: the server refuses to start and names both key ids, never a key.
    server.terminate();
    let wrong = hex::encode(rand::random::<[u8; 32]>());
    let wrong_id = hex::encode(&Sha256::digest(hex::decode(&wrong).unwrap())[..8]);
    server.set_env(&[("ORDERD_MASTER_KEY", &wrong)]);
    let (status, output) = server.start_expecting_exit(Duration::from_secs(60));
    assert!(!status.success(), "started with a wrong key: {output}");
    assert!(
        output.contains(&master) && output.contains(&wrong_id),
        "{output}"
    );
    assert!(
        !output.contains(&wrong) && !output.contains(&key_hex),
        "{output}"
    );

    // A key file inside the data directory is refused.
    server.set_env(&[(
        "ORDERD__SECURITY__MASTER_KEY_FILE",
        "data/orderd-master.key",
    )]);
    let (status, output) = server.start_expecting_exit(Duration::from_secs(60));
    assert!(!status.success(), "{output}");
    assert!(output.contains("inside the data directory"), "{output}");

    // Back to the key file: everything still there.
    server.set_env(&[]);
    server.restart();
    assert_readable(&server.client(), &canaries, &ids, 1);
}

#[test]
fn plaintext_of_an_earlier_version_is_sealed_at_the_first_start() {
    let _serial = serial();
    const LEGACY: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let canaries: Vec<Canary> = (0..LEGACY).map(|_| Canary::new()).collect();
    // The earlier version: the engine stored personal data as it came, in its log and (after
    // the first half) in snapshots.
    let ids: Vec<(String, String)> = actix_rt::System::new().block_on(async {
        let engine = Engine::open(EngineConfig::new(data.clone(), 2)).expect("open engine");
        engine
            .adjust_stock(SKU, LEGACY as i64, "received", "legacy")
            .await
            .expect("stock");
        let mut ids = Vec::new();
        for (i, canary) in canaries.iter().enumerate() {
            let text = |field: &str| canary.customer[field].as_str().unwrap().to_string();
            let customer = engine
                .create_customer(NewCustomer {
                    name: text("name"),
                    email: text("email"),
                    phone: Some(text("phone")),
                    address: Some(text("address")),
                })
                .await
                .expect("customer");
            let order = engine
                .place_order(PlaceOrder {
                    refusal: None,
                    customer_id: customer.id,
                    lines: vec![NewLine {
                        sku: SKU.to_string(),
                        qty: 1,
                        unit_price: 100,
                    }],
                    shipping_address: Some(canary.shipping_address.clone()),
                    note: Some(canary.note.clone()),
                    idempotency: None,
                    actor: "legacy".to_string(),
                })
                .await
                .expect("order");
            ids.push((customer.id.to_string(), order.id.to_string()));
            if i == LEGACY / 2 {
                for shard in 0..2 {
                    engine.snapshot_shard(shard).await.expect("snapshot");
                }
            }
        }
        engine.shutdown().await;
        ids
    });
    // The earlier format does hold the canaries in plaintext (so the scan below can fail).
    let personal: HashSet<Vec<u8>> = canaries
        .iter()
        .flat_map(|c| c.personal.iter().map(|t| t.as_bytes().to_vec()))
        .collect();
    let (hits, _) = scan(std::slice::from_ref(&data), &personal);
    assert!(
        hits.len() * 10 >= personal.len() * 9,
        "only {} of {} canaries found in the earlier version's files",
        hits.len(),
        personal.len()
    );

    // This version: sealed at start, readable through the API, gone from the disk.
    let mut server = Server::start_in(dir.path(), 2);
    assert_readable(&server.client(), &canaries, &ids, 1);
    server.terminate();
    assert_no_plaintext_at_rest(&server, &canaries, "after the migration");
    let migrated = "Sealed the personal data of existing customers under keys of their own";
    assert_eq!(
        server.log().matches(migrated).count(),
        1,
        "{}",
        server.log()
    );
    // Each customer under a key of its own (issue 19 item 6), so each can be erased.
    let store = fs::read_to_string(data.join("customer.keys")).expect("customer key store");
    assert_eq!(
        store.lines().filter(|l| l.starts_with("k ")).count(),
        LEGACY
    );
    // Once only: the next start finds nothing left to seal.
    server.restart();
    assert_readable(&server.client(), &canaries, &ids, 3);
    server.terminate();
    let log = server.log();
    assert_eq!(log.matches(migrated).count(), 1);
    // A migrated customer is erased like any: its record and its order's address are gone.
    server.restart();
    let client = server.client();
    let (customer, order) = &ids[0];
    let reply = client.call(
        "POST",
        &format!("/v1/customers/{customer}/erase"),
        None,
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (_, record) = client.get_json(&format!("/v1/customers/{customer}"));
    assert_eq!(record, json!({"id": customer, "erased": true}));
    let (_, erased_order) = client.get_json(&format!("/v1/orders/{order}"));
    assert_eq!(
        erased_order["shipping_address"],
        Value::Null,
        "{erased_order}"
    );
    assert_eq!(erased_order["customer_erased"], true, "{erased_order}");
    assert_readable(&client, &canaries[1..], &ids[1..], 7);
    server.terminate();
    let log = server.log();
    for canary in &canaries {
        for token in &canary.personal {
            assert!(!log.contains(token.as_str()), "a canary is in the log");
        }
    }
}

/// Every directory and file under `dir` whose mode lets the group or others in.
fn not_private(dir: &Path) -> Vec<String> {
    let mut open = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            open.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    open
}

#[test]
fn data_backups_and_keys_are_private_to_the_server_user() {
    let _serial = serial();
    // The test makes the data and backup directories under its own umask (0755): the server
    // takes them over.
    let server = Server::start(1);
    let admin = server.client();
    let (status, customer) = admin.post_json(
        "/v1/customers",
        &json!({"name": "Private Person", "email": "p@example.com"}),
        None,
    );
    assert_eq!(status, 201, "{customer}");
    let (status, backup) = admin.post_json("/v1/ops/backups", &json!({}), None);
    assert_eq!(status, 201, "{backup}");
    for dir in [server.data_dir(), server.root().join("backups")] {
        let open = not_private(&dir);
        assert!(open.is_empty(), "readable by others: {open:?}");
    }
}

/// A client with a new key of `role`.
fn client_of(admin: &Client, role: &str) -> Client {
    let (status, key) = admin.post_json(
        "/v1/keys",
        &json!({"name": unique(role), "role": role}),
        None,
    );
    assert_eq!(status, 201, "create a {role} key: {key}");
    admin.with_key(key["secret"].as_str().expect("secret"))
}

#[test]
fn addresses_are_in_clear_only_for_the_roles_that_ship_or_sell() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    admin.adjust_stock("PII-SKU", 10);
    let (status, customer) = admin.post_json(
        "/v1/customers",
        &json!({"name": "Jane Roe", "email": "jane@example.com", "address": "12 Elm Street"}),
        None,
    );
    assert_eq!(status, 201, "{customer}");
    let customer_id = customer["id"].as_str().unwrap().to_string();
    let (status, order) = admin.post_json(
        "/v1/orders",
        &json!({"customer_id": customer_id, "shipping_address": "12 Elm Street",
                "lines": [{"sku": "PII-SKU", "qty": 1, "unit_price": 100}]}),
        None,
    );
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    let order_path = format!("/v1/orders/{order_id}");
    let list_path = format!("/v1/orders?customer_id={customer_id}");
    let customer_path = format!("/v1/customers/{customer_id}");

    for role in ["frontend", "logistics", "analyst", "operator"] {
        let client = client_of(&admin, role);
        let clear = matches!(role, "frontend" | "logistics");
        let expected = if clear { "12 Elm Street" } else { "1***" };
        let (status, got) = client.get_json(&order_path);
        assert_eq!(status, 200, "{role}: {got}");
        assert_eq!(got["shipping_address"], expected, "{role} GET order: {got}");
        let (status, page) = client.get_json(&list_path);
        assert_eq!(status, 200, "{role}: {page}");
        assert_eq!(
            page["items"][0]["shipping_address"], expected,
            "{role} list: {page}"
        );
        let (status, got) = client.get_json(&customer_path);
        if status == 200 {
            let (name, email) = if clear {
                ("Jane Roe", "jane@example.com")
            } else {
                ("J***", "j***@example.com")
            };
            assert_eq!(
                (got["name"].as_str(), got["email"].as_str()),
                (Some(name), Some(email)),
                "{role} GET customer: {got}"
            );
        }
    }
    // The owning customer sees its own in clear.
    let (status, key) = admin.post_json(
        "/v1/keys",
        &json!({"name": unique("own"), "role": "customer", "customer_id": customer_id}),
        None,
    );
    assert_eq!(status, 201, "{key}");
    let own = admin.with_key(key["secret"].as_str().unwrap());
    let (status, got) = own.get_json(&order_path);
    assert_eq!(
        (status, got["shipping_address"].as_str()),
        (200, Some("12 Elm Street")),
        "{got}"
    );
}

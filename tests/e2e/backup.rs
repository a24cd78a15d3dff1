//! Backups against the real server: a backup taken under load holds every order acknowledged
//! before it (restored into a new data directory, rebuilt with identical digests, served by a new
//! server); a flipped byte, a truncated file and a deleted file are each caught by the restore
//! drill and refused by restore; the off-site copy restores alone; retention keeps the newest N
//! locally and off-site; a failing off-site store is retried, marked `failed` and written as an
//! incident.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use orderd_control::offsite::Offsite;
use orderd_engine::backup::{self, BackupError, NoProgress, Repo};
use orderd_engine::RocksStorage;
use serde_json::{json, Value};

use crate::support::{serial, unique, Client, Server};

fn create_backup(admin: &Client) -> Value {
    let (status, backup) = admin.post_json("/v1/ops/backups", &json!({}), None);
    assert_eq!(status, 201, "POST /v1/ops/backups: {backup}");
    assert!(
        backup["id"].as_str().unwrap().starts_with("bak_"),
        "{backup}"
    );
    backup
}

fn verify(admin: &Client, id: &str) -> Value {
    let (status, drill) =
        admin.post_json(&format!("/v1/ops/backups/{id}/verify"), &json!({}), None);
    assert_eq!(status, 200, "verify {id}: {drill}");
    drill
}

fn backups(admin: &Client) -> Vec<Value> {
    let (status, page) = admin.get_json("/v1/ops/backups");
    assert_eq!(status, 200, "GET /v1/ops/backups: {page}");
    page["items"].as_array().expect("items").clone()
}

/// Polls the list until backup `id`'s off-site copy is no longer pending; returns its state.
fn wait_offsite(admin: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let backup = backups(admin)
            .into_iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed"));
        if backup["offsite"] != "pending" {
            return backup;
        }
        assert!(
            Instant::now() < deadline,
            "off-site copy still pending: {backup}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn customer(admin: &Client) -> String {
    admin.create_customer()
}

fn place(client: &Client, customer: &str, sku: &str) -> Option<String> {
    let body =
        json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 250}]});
    let reply = client.post("/v1/orders", &body, None);
    (reply.status == 201).then(|| reply.body["id"].as_str().expect("order id").to_string())
}

/// The shard digests of the store in `data_dir`, as a fresh rebuild computes them.
fn digests_of(data_dir: &Path) -> Vec<(u16, u64, u64, u64)> {
    let storage = RocksStorage::open(&data_dir.join(backup::DB_DIR)).expect("open restored store");
    let (_, shards) = backup::digest_store(&storage).expect("rebuild restored shards");
    shards
        .iter()
        .map(|s| (s.shard, s.seq, s.state_digest, s.log_digest))
        .collect()
}

fn manifest_digests(repo: &Repo, id: &str) -> Vec<(u16, u64, u64, u64)> {
    let manifest = repo.manifest(id).expect("manifest");
    manifest
        .shards
        .iter()
        .map(|s| (s.shard, s.seq, s.state_digest, s.log_digest))
        .collect()
}

/// A new server root holding `data` (a restored data directory) with the master key and the
/// admin secret of `from` (operators keep both outside backups).
fn root_for_restore(from: &Server) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let key = "orderd-master.key";
    fs::copy(from.root().join(key), root.path().join(key)).expect("copy the master key");
    let data = root.path().join("data");
    (root, data)
}

fn start_restored(from: &Server, root: &Path, shards: usize) -> Server {
    fs::copy(
        from.data_dir().join("admin.key"),
        root.join("data").join("admin.key"),
    )
    .expect("copy admin.key");
    // The customer key store is in no backup: a restore installs its copy beside the backups
    // (as `orderctl backup restore` does, merged with the other copies; `erasure.rs` tests it).
    let keys = from.root().join("backups").join("customer.keys");
    if keys.is_file() {
        fs::copy(&keys, root.join("data").join("customer.keys")).expect("copy customer.keys");
    }
    Server::start_in(root, shards)
}

#[test]
fn a_backup_under_load_holds_every_acknowledged_order_and_restores_with_identical_digests() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let skus: Vec<String> = (0..4).map(|_| unique("BK")).collect();
    for sku in &skus {
        admin.adjust_stock(sku, 1_000_000);
    }
    let buyer = customer(&admin);
    // Load: 4 threads place orders without pause; each remembers when every order was
    // acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let workers: Vec<_> = skus
        .iter()
        .cloned()
        .map(|sku| {
            let client = admin.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            let buyer = buyer.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(id) = place(&client, &buyer, &sku) {
                        acked.lock().unwrap().push((Instant::now(), id));
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    let requested = Instant::now();
    let backup = create_backup(&admin);
    let answered = Instant::now();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before: BTreeSet<String> = acked
        .iter()
        .filter(|(at, _)| *at < requested)
        .map(|(_, id)| id.clone())
        .collect();
    let after = acked.iter().filter(|(at, _)| *at > answered).count();
    assert!(
        before.len() > 50,
        "too little load before the backup: {}",
        before.len()
    );
    assert!(after > 0, "the load stopped during the backup");
    eprintln!(
        "{} orders before the backup, {after} after it answered; backup took {} ms",
        before.len(),
        backup["duration_ms"]
    );
    let id = backup["id"].as_str().unwrap().to_string();
    for shard in backup["shards"].as_array().unwrap() {
        assert!(
            shard["seq"].as_u64() >= shard["acknowledged_seq"].as_u64(),
            "{shard}"
        );
    }
    // The drill passes and the inspection sees a fresh, verified backup.
    let drill = verify(&admin, &id);
    assert_eq!(drill["verified"], true, "{drill}");
    assert_eq!(drill["source"], "local");
    let listed = backups(&admin);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["verified"], true);
    let (_, report) = admin.get_json("/v1/ops/inspection");
    for check in report["checks"].as_array().unwrap() {
        if check["name"] == "backup_age" || check["name"] == "backup_verified" {
            assert_eq!(check["status"], "pass", "{check}");
        }
    }

    // Restore into a new data directory: identical digests, every earlier order present.
    let repo = Repo::new(server.root().join("backups"), server.manifest_keys());
    let (root, data) = root_for_restore(&server);
    let moved = repo
        .restore(&id, &data, backup::RestoreOptions::default(), &NoProgress)
        .expect("restore");
    assert_eq!(moved, None);
    assert_eq!(digests_of(&data), manifest_digests(&repo, &id));
    assert!(
        data.join("keys.json").exists(),
        "keys.json restored with the store"
    );
    let restored = start_restored(&server, root.path(), 2);
    let client = restored.client();
    let all: BTreeSet<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    for order in &before {
        let (status, body) = client.get_json(&format!("/v1/orders/{order}"));
        assert_eq!(
            status, 200,
            "order {order} acknowledged before the backup is missing: {body}"
        );
    }
    // Nothing that was never acknowledged, and stock agrees with the orders restored.
    let mut restored_orders = 0u64;
    for sku in &skus {
        let stock = client.stock(sku);
        restored_orders += (1_000_000 - stock.available) as u64;
    }
    let shard_orders: u64 = backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["orders"].as_u64().unwrap())
        .sum();
    assert_eq!(restored_orders, shard_orders, "stock and orders disagree");
    assert!(restored_orders as usize >= before.len());
    assert!(restored_orders as usize <= all.len() + 16, "phantom orders");
}

/// Copies a backup directory (without scratch) so that each damage is tried on its own copy.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != backup::SCRATCH_DIR {
                copy_dir(&entry.path(), &target);
            }
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn largest_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a file")
}

#[test]
fn a_flipped_byte_a_truncated_file_and_a_deleted_file_are_caught_and_restore_refuses() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let sku = unique("DMG");
    admin.adjust_stock(&sku, 10_000);
    let buyer = customer(&admin);
    for _ in 0..200 {
        place(&admin, &buyer, &sku).expect("order");
    }
    let id = create_backup(&admin)["id"].as_str().unwrap().to_string();
    let backups_dir = server.root().join("backups");
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("flip", |dir| {
            let path = largest_file(&dir.join("rocksdb/shared_checksum"));
            let mut bytes = fs::read(&path).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            fs::write(&path, bytes).unwrap();
        }),
        ("truncate", |dir| {
            let path = largest_file(&dir.join("rocksdb/shared_checksum"));
            let len = fs::metadata(&path).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len - 7)
                .unwrap();
        }),
        ("delete", |dir| {
            fs::remove_file(largest_file(&dir.join("rocksdb/shared_checksum"))).unwrap();
        }),
        ("flip-private", |dir| {
            let private = fs::read_dir(dir.join("rocksdb/private"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let path = largest_file(&private);
            let mut bytes = fs::read(&path).unwrap();
            bytes[0] ^= 0x01;
            fs::write(&path, bytes).unwrap();
        }),
    ];
    for (name, damage) in damages {
        let copy = server.root().join(format!("backups-{name}"));
        copy_dir(&backups_dir, &copy);
        let repo = Repo::new(&copy, server.manifest_keys());
        assert!(
            repo.verify(&id, &NoProgress).unwrap().verified,
            "{name}: intact copy"
        );
        damage(&copy);
        let report = repo.verify(&id, &NoProgress).unwrap();
        assert!(
            !report.verified,
            "{name}: damage not caught: {}",
            report.detail
        );
        eprintln!("{name}: {}", report.detail);
        let target = server.root().join(format!("restore-{name}"));
        match repo.restore(&id, &target, backup::RestoreOptions::default(), &NoProgress) {
            Err(BackupError::Refused { detail, .. }) => assert!(!detail.is_empty()),
            other => panic!("{name}: restore not refused: {other:?}"),
        }
        assert!(
            !target.exists(),
            "{name}: a refused restore left {}",
            target.display()
        );
    }
    // Through the API: damage the server's own backup; the drill fails and writes an incident.
    let path = largest_file(&backups_dir.join("rocksdb/shared_checksum"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let drill = verify(&admin, &id);
    assert_eq!(drill["verified"], false, "{drill}");
    assert!(
        drill["detail"].as_str().unwrap().contains("SHA-256"),
        "{drill}"
    );
    assert_eq!(backups(&admin)[0]["verified"], false);
    let (_, incidents) = admin.get_json("/v1/ops/incidents");
    assert!(
        incidents
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["component"] == "backup" && i["kind"] == "verify_failed"),
        "{incidents}"
    );
    let (_, report) = admin.get_json("/v1/ops/inspection");
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "backup_verified")
        .unwrap()
        .clone();
    assert_eq!(check["status"], "fail", "{check}");
    // An unknown id is 404.
    let (status, _) = admin.post_json(
        "/v1/ops/backups/bak_000999_00000000/verify",
        &json!({}),
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn the_offsite_copy_restores_alone_and_retention_keeps_the_newest() {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__BACKUP__RETENTION_COUNT", "2"),
            // The count alone: every backup here is seconds old.
            ("ORDERD__BACKUP__KEEP_MIN_AGE_S", "0"),
        ],
    );
    let admin = server.client();
    let sku = unique("OFF");
    admin.adjust_stock(&sku, 10_000);
    let buyer = customer(&admin);
    let mut ids = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..4 {
        for _ in 0..50 {
            orders.push(place(&admin, &buyer, &sku).expect("order"));
        }
        let backup = create_backup(&admin);
        let id = backup["id"].as_str().unwrap().to_string();
        assert_eq!(wait_offsite(&admin, &id)["offsite"], "copied");
        ids.push(id);
    }
    // The worker does one job at a time, so this drill runs after the newest backup's off-site
    // copy and retention. The older kept backup still verifies: retention deleted no file it
    // needs.
    assert_eq!(verify(&admin, &ids[2])["verified"], true);
    // Retention: the newest two, locally, off-site and in the list.
    assert_eq!(listed_ids(&admin), vec![ids[3].clone(), ids[2].clone()]);
    let local = Repo::new(server.root().join("backups"), server.manifest_keys());
    let local_ids: Vec<String> = local
        .manifests()
        .unwrap()
        .0
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(local_ids, vec![ids[2].clone(), ids[3].clone()]);
    let offsite_dir = server.root().join("offsite");
    let offsite = Offsite::open(
        offsite_dir.to_str().unwrap(),
        3,
        Duration::from_millis(10),
        server.manifest_keys(),
    )
    .unwrap();
    let offsite_ids: Vec<String> = offsite
        .manifests()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(offsite_ids, vec![ids[2].clone(), ids[3].clone()]);

    // The local backup directory is lost: the drill runs from the off-site copy.
    fs::remove_dir_all(server.root().join("backups")).unwrap();
    let drill = verify(&admin, &ids[3]);
    assert_eq!(
        (drill["verified"].clone(), drill["source"].clone()),
        (json!(true), json!("offsite")),
        "{drill}"
    );

    // And the off-site copy restores alone into a new data directory.
    let staging = tempfile::tempdir().unwrap();
    let manifest = offsite
        .download(&ids[3], staging.path(), &NoProgress)
        .expect("download");
    let repo = Repo::new(staging.path(), server.manifest_keys());
    let (root, data) = root_for_restore(&server);
    repo.restore(
        &ids[3],
        &data,
        backup::RestoreOptions::default(),
        &NoProgress,
    )
    .expect("restore from off-site");
    assert_eq!(digests_of(&data), manifest_digests(&repo, &ids[3]));
    assert_eq!(manifest.id, ids[3]);
    let restored = start_restored(&server, root.path(), 2);
    for order in &orders {
        let (status, body) = restored.client().get_json(&format!("/v1/orders/{order}"));
        assert_eq!(status, 200, "{order}: {body}");
    }
}

#[test]
fn a_failing_offsite_store_is_retried_marked_failed_and_reported() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    // A file where the off-site directory should be: every attempt fails.
    let blocked = root.path().join("blocked");
    fs::write(&blocked, b"not a directory").unwrap();
    let offsite = blocked.join("offsite");
    let server = Server::start_with_env(
        1,
        &[
            ("ORDERD__BACKUP__OFFSITE", offsite.to_str().unwrap()),
            ("ORDERD__BACKUP__OFFSITE_ATTEMPTS", "3"),
            ("ORDERD__BACKUP__OFFSITE_RETRY_BASE_MS", "10"),
        ],
    );
    let admin = server.client();
    let id = create_backup(&admin)["id"].as_str().unwrap().to_string();
    let backup = wait_offsite(&admin, &id);
    assert_eq!(backup["offsite"], "failed", "{backup}");
    assert!(backup["offsite_detail"].as_str().is_some(), "{backup}");
    let (_, incidents) = admin.get_json("/v1/ops/incidents");
    assert!(
        incidents
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["component"] == "backup" && i["kind"] == "offsite_failed"),
        "{incidents}"
    );
    // The local backup is unaffected.
    assert_eq!(verify(&admin, &id)["verified"], true);
}

#[test]
fn scheduled_backups_and_drills_run_by_themselves_and_feed_the_metrics() {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__BACKUP__INTERVAL_S", "1"),
            ("ORDERD__BACKUP__VERIFY_INTERVAL_S", "2"),
        ],
    );
    let admin = server.client();
    let sku = unique("SCHED");
    admin.adjust_stock(&sku, 100);
    let buyer = customer(&admin);
    place(&admin, &buyer, &sku).expect("order");
    // Nobody asks: a backup appears, then a drill verifies it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let drilled = loop {
        let listed = backups(&admin);
        if let Some(b) = listed.iter().find(|b| b["verified"] == true) {
            break b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled backup and drill: {listed:?}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(drilled["verify_detail"]
        .as_str()
        .unwrap()
        .contains("every digest matches"));
    let metrics = server.client().without_key().get("/metrics");
    let line = metrics
        .body
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("orderd_backup_last_success_timestamp_seconds "))
        .expect("backup gauge")
        .to_string();
    let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(value > 1.7e9, "{line}");
    // No backup request was audited: these came from the schedule.
    let (_, audit) = admin.get_json("/v1/audit?limit=1000");
    assert!(
        !audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "backup.create"),
        "{audit}"
    );
}

/// The ids listed by `GET /v1/ops/backups`, newest first, once every off-site copy is done
/// (retention runs after the copy).
fn listed_ids(admin: &Client) -> Vec<String> {
    backups(admin)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn quick_backups_cannot_rotate_the_oldest_restore_point_away_and_are_rate_limited() {
    let _serial = serial();
    let server = Server::start_with_env(
        1,
        &[
            ("ORDERD__BACKUP__RETENTION_COUNT", "1"),
            // Long enough that three quick backups finish within it on a loaded machine (at 2 s
            // the second quick backup aged past it there and the test's picture changed).
            ("ORDERD__BACKUP__KEEP_MIN_AGE_S", "5"),
        ],
    );
    let admin = server.client();
    let first = create_backup(&admin)["id"].as_str().unwrap().to_string();
    wait_offsite(&admin, &first);
    thread::sleep(Duration::from_millis(5200));
    // Three quick backups with a count of 1: the first, now past the minimum age, stays, and
    // so does everything newer than it.
    let mut quick = Vec::new();
    for _ in 0..3 {
        let id = create_backup(&admin)["id"].as_str().unwrap().to_string();
        wait_offsite(&admin, &id);
        quick.push(id);
    }
    // One job at a time: this drill runs after the newest backup's retention.
    verify(&admin, &quick[2]);
    let mut want: Vec<String> = quick.iter().rev().cloned().collect();
    want.push(first.clone());
    assert_eq!(listed_ids(&admin), want);
    let offsite = Offsite::open(
        server.root().join("offsite").to_str().unwrap(),
        1,
        Duration::from_millis(1),
        server.manifest_keys(),
    )
    .unwrap();
    let offsite_ids: Vec<String> = offsite
        .manifests()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert!(offsite_ids.contains(&first), "{offsite_ids:?}");
    // Once the quick ones age too, the count applies again above the newest old one.
    thread::sleep(Duration::from_millis(5200));
    let last = create_backup(&admin)["id"].as_str().unwrap().to_string();
    wait_offsite(&admin, &last);
    verify(&admin, &last);
    assert_eq!(listed_ids(&admin), vec![last.clone(), quick[2].clone()]);
    drop(server);

    // backup.min_interval_s: a requested backup soon after the last one is 429, with a detail
    // naming the setting; the list is unchanged.
    let server = Server::start_with_env(1, &[("ORDERD__BACKUP__MIN_INTERVAL_S", "3600")]);
    let admin = server.client();
    create_backup(&admin);
    let before = listed_ids(&admin);
    let refused = admin.post("/v1/ops/backups", &json!({}), None);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["code"], "rate_limited", "{}", refused.body);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("backup.min_interval_s"),
        "{}",
        refused.body
    );
    assert_eq!(listed_ids(&admin), before);
}

/// The ids (hex) of the master keys in the server's keyring file.
fn keyring_ids(server: &Server) -> Vec<String> {
    let path = orderd_service::vault::keyring_path(&server.master_key_file());
    let Ok(text) = fs::read_to_string(&path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let key = orderd_service::vault::MasterKey::from_hex(l).expect("a key per line");
            key.id().to_string()
        })
        .collect()
}

#[test]
fn a_backup_from_before_three_key_rotations_restores_readable_and_the_keyring_lets_go_after_retention(
) {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__BACKUP__RETENTION_COUNT", "1"),
            ("ORDERD__BACKUP__KEEP_MIN_AGE_S", "0"),
        ],
    );
    let admin = server.client();
    let email = format!("{}@keyring.example", unique("k"));
    let (status, created) = admin.post_json(
        "/v1/customers",
        &json!({"name": "Keyring Customer", "email": email}),
        None,
    );
    assert_eq!(status, 201, "{created}");
    let customer = created["id"].as_str().unwrap().to_string();
    let old = create_backup(&admin);
    let old_id = old["id"].as_str().unwrap().to_string();
    assert_eq!(wait_offsite(&admin, &old_id)["offsite"], "copied");

    // Three rotations: `.previous` holds only the last retired key; the keyring holds all three.
    let mut retired = Vec::new();
    for _ in 0..3 {
        retired.push(
            orderd_service::vault::MasterKeySource::File {
                path: server.master_key_file(),
            }
            .manifest_keys()
            .unwrap()
            .signing()
            .master_id(),
        );
        let (status, body) = admin.post_json("/v1/ops/keys/rotate", &json!({}), None);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(keyring_ids(&server), retired);
    let mode = fs::metadata(orderd_service::vault::keyring_path(
        &server.master_key_file(),
    ))
    .unwrap()
    .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The old backup restores with its personal data readable: its manifest verifies under
    // the first key and its data keys open under it (kept with the key file, as operators keep
    // the keyring).
    let repo = Repo::new(server.root().join("backups"), server.manifest_keys());
    let (root, data) = root_for_restore(&server);
    let ring = orderd_service::vault::keyring_path(&server.master_key_file());
    fs::copy(
        &ring,
        orderd_service::vault::keyring_path(&root.path().join("orderd-master.key")),
    )
    .unwrap();
    repo.restore(
        &old_id,
        &data,
        backup::RestoreOptions::default(),
        &NoProgress,
    )
    .expect("restore the backup from before the rotations");
    let restored = start_restored(&server, root.path(), 2);
    let (status, got) = restored
        .client()
        .get_json(&format!("/v1/customers/{customer}"));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["email"], email.as_str());
    drop(restored);

    // A new backup under the current key; retention (count 1) removes the old one locally and
    // off-site, and with it the need for every retired key. The drill runs after retention.
    let new = create_backup(&admin);
    let new_id = new["id"].as_str().unwrap().to_string();
    assert_eq!(wait_offsite(&admin, &new_id)["offsite"], "copied");
    assert_eq!(verify(&admin, &new_id)["verified"], true);
    assert_eq!(listed_ids(&admin), vec![new_id]);
    assert_eq!(keyring_ids(&server), Vec::<String>::new());
    assert!(!server.root().join("orderd-master.key.previous").exists());
    // The server still reads the customer after the prune (its data keys are under the current key).
    let (status, got) = admin.get_json(&format!("/v1/customers/{customer}"));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["email"], email.as_str());
}

//! A full disk (issue 14): the data directory lives on a small tmpfs that the test fills
//! during a load of orders, then frees. Writes are refused with 507 `insufficient_storage` at
//! once while reads go on and `/readyz` says why; once space is back the server takes writes
//! again by itself; after a kill -9 and a restart every order answered 201 is there, and every
//! key answered 201 replays the same order (from disk, not from memory).

use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TMPFS_BYTES: u64 = 256 * 1024 * 1024;
const MIN_FREE_BYTES: u64 = 24 * 1024 * 1024;

/// A tmpfs mounted at a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={TMPFS_BYTES},mode=0700"))
            .arg("tmpfs")
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI and `make test` run as root): {status}"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// Writes a file that leaves about `leave` bytes free on the file system of `dir`.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let free = free_bytes(dir);
    let size = free.saturating_sub(leave);
    let file = std::fs::File::create(&path).expect("filler");
    // tmpfs allocates on write; write real bytes in 1 MiB blocks.
    use std::io::Write;
    let mut writer = std::io::BufWriter::new(file);
    let block = vec![0x5Au8; 1 << 20];
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(block.len() as u64) as usize;
        if writer.write_all(&block[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    let _ = writer.flush();
    path
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing() {
    let _serial = serial();
    let root = tempfile::Builder::new()
        .prefix("orderd-e2e-full-")
        .tempdir()
        .expect("tempdir");
    let data = root.path().join("data");
    let _tmpfs = Tmpfs::mount(&data);
    let min_free = MIN_FREE_BYTES.to_string();
    let mut server = Server::start_in_with_env(
        root.path(),
        2,
        &[("ORDERD__STORAGE__MIN_FREE_BYTES", min_free.as_str())],
    );
    let client = server.client();
    let customer = client.create_customer();
    let sku = unique("DISK");
    client.adjust_stock(&sku, 1_000_000);

    // A steady load of orders, each with its own key, recording every answer.
    let answers: Arc<Mutex<Vec<(String, u16, Value)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let client = client.clone();
        let answers = answers.clone();
        let stop = stop.clone();
        let customer = customer.clone();
        let sku = sku.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("disk-{n}");
                let body = json!({"customer_id": customer,
                    "lines": [{"sku": sku, "qty": 1, "unit_price": 500}]});
                if let Ok(reply) = client.send("POST", "/v1/orders", Some(&body), Some(&key)) {
                    answers
                        .lock()
                        .unwrap()
                        .push((key, reply.status, reply.body));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let first = {
        let answers = answers.lock().unwrap();
        answers
            .iter()
            .find(|(_, status, _)| *status == 201)
            .cloned()
            .expect("orders are placed before the disk fills")
    };

    let filler = fill(&data, MIN_FREE_BYTES / 2);
    // Within moments every write is refused with 507, at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = 0;
    loop {
        let r = client.send(
            "POST",
            &format!("/v1/stock/{sku}/adjustments"),
            Some(&json!({"delta": 1, "reason": "receive"})),
            None,
        );
        let r = r.expect("answered");
        if r.status == 507 {
            assert_problem(&r, 507, "insufficient_storage");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        received += 1;
        assert!(
            Instant::now() < deadline,
            "writes never refused: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let refused = client
        .send(
            "POST",
            "/v1/orders",
            Some(&json!({"customer_id": customer,
                "lines": [{"sku": sku, "qty": 1, "unit_price": 500}]})),
            Some("refused-while-full"),
        )
        .expect("answered");
    assert_problem(&refused, 507, "insufficient_storage");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not after a hang"
    );
    // Reads go on; readiness says why writes are refused.
    let id = first.2["id"].as_str().unwrap().to_string();
    let (status, order) = client.get_json(&format!("/v1/orders/{id}"));
    assert_eq!(status, 200, "{order}");
    assert_eq!(client.stock(&sku).on_hand, 1_000_000 + received);
    let (status, ready) = client.get_json("/readyz");
    assert_eq!(status, 503, "{ready}");
    assert!(ready.to_string().contains("nearly full"), "{ready}");
    std::thread::sleep(Duration::from_millis(500));

    // Space comes back: writes succeed again by themselves within seconds.
    std::fs::remove_file(&filler).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = client.get_json("/readyz");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = client.post_json(
        "/v1/orders",
        &json!({"customer_id": customer,
            "lines": [{"sku": sku, "qty": 1, "unit_price": 500}]}),
        Some("refused-while-full"),
    );
    assert_eq!(status, 201, "the refused key places the order now: {body}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();

    let answers = answers.lock().unwrap().clone();
    let mut placed: HashMap<String, String> = HashMap::new();
    let mut refused_count = 0;
    for (key, status, body) in &answers {
        match status {
            201 => {
                placed.insert(key.clone(), body["id"].as_str().unwrap().to_string());
            }
            507 => refused_count += 1,
            503 => {}
            other => panic!("unexpected answer {other} for {key}: {body}"),
        }
    }
    assert!(refused_count > 0, "the load met the full disk");
    assert!(
        answers.iter().rev().take(5).any(|(_, s, _)| *s == 201),
        "the load was placing orders again at the end"
    );
    placed.insert(
        "refused-while-full".into(),
        body["id"].as_str().unwrap().to_string(),
    );
    // A 503 says nothing about the outcome: the same key settles it.
    for (key, status, _) in &answers {
        if *status == 503 {
            let request = json!({"customer_id": customer,
                "lines": [{"sku": sku, "qty": 1, "unit_price": 500}]});
            match place_definitive(&client, key, &request) {
                Outcome::Confirmed(order) => {
                    placed.insert(key.clone(), order["id"].as_str().unwrap().to_string());
                }
                other => panic!("key {key}: {other:?}"),
            }
        }
    }

    // A crash and a restart: every 201 is on disk, and each key replays its own order.
    server.kill_9();
    server.restart();
    let client = server.client();
    for (key, id) in &placed {
        let (status, order) = client.get_json(&format!("/v1/orders/{id}"));
        assert_eq!(
            status, 200,
            "order {id} (key {key}) answered 201 but is gone"
        );
        let (status, replay) = client.post_json(
            "/v1/orders",
            &json!({"customer_id": customer,
                "lines": [{"sku": sku, "qty": 1, "unit_price": 500}]}),
            Some(key),
        );
        assert_eq!(status, 201, "{replay}");
        assert_eq!(replay["id"], order["id"], "key {key} replays its own order");
    }
    let stock = client.stock(&sku);
    assert_eq!(
        stock.reserved as usize,
        placed.len(),
        "stock holds exactly the acknowledged orders"
    );
    let (status, _) = client.get_json("/readyz");
    assert_eq!(status, 200);
}

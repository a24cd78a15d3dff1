//! Shard restart: an operator restarts one shard twice under load; the other shards keep
//! serving, the shard comes back `running`, and nothing acknowledged is lost.

use crate::support::{
    assert_spread, classify, random_order, run_parallel, serial, shard_id, shards, unique, Attempt,
    Client, Ledger, Outcome, Server,
};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const INITIAL: i64 = 100_000;

/// Sets the flag when dropped, so load threads stop even if the driving code panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn shard_by_id(client: &Client, id: &str) -> Value {
    shards(client)
        .into_iter()
        .find(|s| shard_id(s) == id)
        .unwrap_or_else(|| panic!("shard {id} missing from /v1/ops/shards"))
}

/// Waits until shard `id` is `running` with at least `restarts` restarts.
fn wait_restarted(client: &Client, id: &str, restarts: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shard = shard_by_id(client, id);
        if shard["state"] == "running" && shard["restarts"].as_u64().unwrap_or(0) >= restarts {
            return shard;
        }
        assert!(
            Instant::now() < deadline,
            "shard {id} not running with {restarts} restarts after 30 s: {shard}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn place(client: &Client, body: Value) -> (Attempt, bool, bool) {
    let key = unique("sr");
    let res = client.send("POST", "/v1/orders", Some(&body), Some(&key));
    let transport_error = res.is_err();
    let missing_retry_after = matches!(&res, Ok(r) if r.status == 503 && r.retry_after.is_none());
    let attempt = Attempt {
        key,
        body,
        outcome: classify(res),
        at: Instant::now(),
    };
    (attempt, transport_error, missing_retry_after)
}

#[test]
fn shard_restart_under_load_keeps_serving_and_loses_nothing() {
    let _serial = serial();
    let server = Server::start(4);
    let client = server.client();
    let skus: Vec<String> = (0..16).map(|i| format!("SR-{i:02}")).collect();
    for sku in &skus {
        client.adjust_stock(sku, INITIAL);
    }
    let customer = client.create_customer();
    let mut ledger = Ledger::default();

    // Multi-line orders before any restart.
    let warmup: Vec<Attempt> = run_parallel(8, 40, |_| {
        let body = random_order(&mut rand::thread_rng(), &customer, &skus, 1..=4, 1..=3);
        place(&client, body).0
    });
    for a in &warmup {
        assert!(
            matches!(a.outcome, Outcome::Confirmed(_)),
            "warm-up order: {:?}",
            a.outcome
        );
    }
    ledger.settle(&client, &warmup);

    let before = shards(&client);
    assert_eq!(before.len(), 4, "ORDERD__ENGINE__SHARDS=4: {before:?}");
    assert!(
        before.iter().all(|s| s["state"] == "running"),
        "all shards running: {before:?}"
    );
    assert_spread(&client);
    // The shard owning most of our SKUs, so the restart hits the traffic.
    let target = before
        .iter()
        .max_by_key(|s| s["skus"].as_u64().unwrap_or(0))
        .expect("a shard");
    let id = shard_id(target);
    let restarts_before = target["restarts"].as_u64().expect("restarts");
    let restart_path = format!("/v1/ops/shards/{id}/restart");

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (results, restart_at) = thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (client, stop, skus, customer) = (&client, &stop, &skus, &customer);
                s.spawn(move || {
                    let mut rng = rand::thread_rng();
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let body = random_order(&mut rng, customer, skus, 1..=1, 1..=3);
                        let placed = place(client, body);
                        if matches!(placed.0.outcome, Outcome::Unknown(_)) {
                            thread::sleep(Duration::from_millis(10));
                        }
                        mine.push(placed);
                    }
                    mine
                })
            })
            .collect();

        thread::sleep(Duration::from_millis(500));
        let restart_at = Instant::now();
        let r = client.call("POST", &restart_path, None, None);
        assert_eq!(r.status, 202, "first restart: {}", r.body);
        wait_restarted(&client, &id, restarts_before + 1);
        thread::sleep(Duration::from_millis(300));
        let r = client.call("POST", &restart_path, None, None);
        assert_eq!(r.status, 202, "second restart: {}", r.body);
        let second_at = Instant::now();
        while started.elapsed() < Duration::from_secs(3)
            || second_at.elapsed() < Duration::from_secs(1)
        {
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let results: Vec<(Attempt, bool, bool)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect();
        (results, restart_at)
    });

    let transport_errors = results.iter().filter(|r| r.1).count();
    let missing_retry_after = results.iter().filter(|r| r.2).count();
    let attempts: Vec<Attempt> = results.into_iter().map(|r| r.0).collect();
    let mut confirmed_after_restart = 0;
    let (mut ok, mut refused, mut unavailable) = (0, 0, 0);
    for a in &attempts {
        match &a.outcome {
            Outcome::Confirmed(_) => {
                ok += 1;
                if a.at > restart_at {
                    confirmed_after_restart += 1;
                }
            }
            Outcome::Rejected(_) => refused += 1,
            Outcome::Unknown(_) => unavailable += 1,
            Outcome::Unexpected(status, body) => {
                panic!("only 201/409/503 are allowed during a restart, got {status} {body}")
            }
        }
    }
    eprintln!(
        "shard restart: {} requests: {ok} x 201, {refused} x 409, {unavailable} x 503",
        attempts.len()
    );
    assert_eq!(transport_errors, 0, "the server must keep answering");
    assert_eq!(missing_retry_after, 0, "every 503 carries Retry-After");
    assert!(
        confirmed_after_restart > 0,
        "orders must keep succeeding after the restart call"
    );
    assert!(
        ok * 4 >= attempts.len(),
        "the other shards keep serving: only {ok} of {} orders succeeded",
        attempts.len()
    );

    let shard = wait_restarted(&client, &id, restarts_before + 2);
    assert!(
        shard["restarts"].as_u64().unwrap_or(0) >= 2,
        "restarts counted: {shard}"
    );
    let after = shards(&client);
    assert!(
        after.iter().all(|s| s["state"] == "running"),
        "all shards running after the restarts: {after:?}"
    );
    let (status, _) = client.without_key().get_json("/readyz");
    assert_eq!(status, 200, "ready again");

    // Resolve every 503 with its key, then nothing acknowledged may be missing or doubled.
    ledger.settle(&client, &attempts);
    let keys: Vec<String> = ledger.by_key.keys().cloned().collect();
    ledger.verify_readable(&client, &keys);
    ledger.check_conservation(&client, &skus, INITIAL);
}

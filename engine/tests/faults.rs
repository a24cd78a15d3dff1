//! Fault paths that must lose nothing (issue 14): a failed or slow write, a full disk, a
//! shard that never answers. The engine runs on a real RocksDB in a temporary directory,
//! behind `FaultyStorage`, which fails or delays writes on purpose; what is on disk is read
//! back with `recover_shard` once the engine has stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_engine::state::{shard_of_key, shard_of_sku};
use orderd_engine::storage::faulty::FaultyStorage;
use orderd_engine::{
    recover_shard, CommandError, CustomerId, Engine, EngineConfig, Idempotency, NewCustomer,
    NewLine, OrderView, PlaceOrder, RocksStorage, Storage,
};

const SHARDS: u16 = 2;

struct Rig {
    _dir: tempfile::TempDir,
    rocks: Arc<RocksStorage>,
    faulty: Arc<FaultyStorage>,
    engine: Engine,
}

fn rig(tune: impl FnOnce(&mut EngineConfig)) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = Arc::new(RocksStorage::open(&dir.path().join("db")).expect("rocksdb opens"));
    let faulty = Arc::new(FaultyStorage::new(rocks.clone()));
    let mut config = EngineConfig::new(dir.path().to_path_buf(), SHARDS as usize);
    config.min_free_bytes = 0;
    config.pending_retry_ms = 20;
    tune(&mut config);
    let storage: Arc<dyn Storage> = faulty.clone();
    let engine = Engine::start(config, storage).expect("engine starts");
    Rig {
        _dir: dir,
        rocks,
        faulty,
        engine,
    }
}

/// The first name `prefix-N` that `owner` maps to `shard`.
fn name_on(prefix: &str, shard: u16, owner: fn(&str, u16) -> u16) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|name| owner(name, SHARDS) == shard)
        .expect("some name maps to every shard")
}

async fn customer_on(engine: &Engine, shard: u16) -> CustomerId {
    loop {
        let c = engine
            .create_customer(NewCustomer {
                name: "c".into(),
                email: "c@example.com".into(),
                phone: None,
                address: None,
            })
            .await
            .expect("customer");
        if c.id.shard() == shard {
            return c.id;
        }
    }
}

fn order(customer: CustomerId, lines: &[(&str, u32)], key: Option<&str>) -> PlaceOrder {
    PlaceOrder {
        refusal: None,
        customer_id: customer,
        lines: lines
            .iter()
            .map(|(sku, qty)| NewLine {
                sku: sku.to_string(),
                qty: *qty,
                unit_price: 100,
            })
            .collect(),
        shipping_address: None,
        note: None,
        // The gateway hashes the request body; the lines stand for it here.
        idempotency: key.map(|key| Idempotency {
            key: key.to_string(),
            request_hash: lines.iter().map(|(_, qty)| u128::from(*qty)).sum::<u128>() + 1,
        }),
        actor: "test".into(),
    }
}

/// Retries a placement while it is `unavailable` (a shard being rebuilt, storage failing).
async fn place_until_answered(engine: &Engine, place: &PlaceOrder) -> OrderView {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match engine.place_order(place.clone()).await {
            Ok(view) => return view,
            Err(CommandError::Unavailable(_)) | Err(CommandError::InsufficientStorage(_))
                if Instant::now() < deadline =>
            {
                actix_rt::time::sleep(Duration::from_millis(50)).await
            }
            Err(other) => panic!("placement failed: {other}"),
        }
    }
}

async fn wait_ready(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(reasons) = engine.readiness() {
        assert!(Instant::now() < deadline, "never ready again: {reasons:?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything one shard holds on disk, rebuilt as a restart would (fails on a log with a hole).
fn on_disk(rocks: &RocksStorage, shard: u16) -> orderd_engine::Recovered {
    recover_shard(rocks, shard, SHARDS).expect("the log on disk is whole")
}

#[test]
fn a_failed_write_poisons_the_shard_and_no_retry_is_answered_from_memory() {
    actix_rt::System::new().block_on(async {
        let rig = rig(|_| {});
        let engine = &rig.engine;
        let sku = name_on("SKU", 0, shard_of_sku);
        let key_ok = name_on("key-ok", 0, shard_of_key);
        let key_failed = name_on("key-failed", 0, shard_of_key);
        engine
            .adjust_stock(&sku, 100, "receive", "test")
            .await
            .unwrap();
        let customer = customer_on(engine, 0).await;
        let first = engine
            .place_order(order(customer, &[(&sku, 1)], Some(&key_ok)))
            .await
            .expect("first order");

        rig.faulty.fail_next(1);
        let failed = engine
            .place_order(order(customer, &[(&sku, 2)], Some(&key_failed)))
            .await;
        assert!(
            matches!(failed, Err(CommandError::Unavailable(_))),
            "a placement whose write failed is not acknowledged: {failed:?}"
        );
        // The retry is answered only from what is durable: it places the order again (the
        // failed one is on no disk), under an id the failed batch did not use.
        let retried =
            place_until_answered(engine, &order(customer, &[(&sku, 2)], Some(&key_failed))).await;
        assert!(
            retried.id.counter() > first.id.counter() + 1,
            "the id the failed batch used ({}) is never given out again; got {}",
            first.id.counter() + 1,
            retried.id.counter()
        );
        wait_ready(engine).await;
        let incidents = engine.incidents().list(None, 100).unwrap();
        assert!(
            incidents
                .iter()
                .any(|i| i.component == "shard/0" && i.kind == "write_failed"),
            "the shard fault is an incident: {incidents:?}"
        );
        assert!(
            incidents.iter().any(|i| i.component == "storage"
                && i.kind == "write_failed"
                && i.recovered_at_us.is_some()),
            "the storage outage is an incident, closed once writes succeed: {incidents:?}"
        );
        let after = engine
            .place_order(order(customer, &[(&sku, 3)], None))
            .await
            .expect("writes succeed again");
        let stock = engine.stock(&sku).await.unwrap();
        assert_eq!(
            stock.reserved,
            1 + 2 + 3,
            "only the durable orders hold stock"
        );
        engine.shutdown().await;

        let disk = on_disk(&rig.rocks, 0);
        for id in [first.id, retried.id, after.id] {
            assert!(
                disk.data.orders.contains_key(&id),
                "{id} acknowledged, so on disk"
            );
        }
        assert_eq!(
            disk.data.orders.len(),
            3,
            "nothing unacknowledged became durable"
        );
        assert_eq!(disk.data.stock[sku.as_str()].reserved, 6);
    });
}

#[test]
fn a_full_disk_refuses_writes_at_once_serves_reads_and_recovers_by_itself() {
    actix_rt::System::new().block_on(async {
        let rig = rig(|_| {});
        let engine = &rig.engine;
        let sku = name_on("SKU", 1, shard_of_sku);
        engine
            .adjust_stock(&sku, 50, "receive", "test")
            .await
            .unwrap();
        let customer = customer_on(engine, 1).await;
        let placed = engine
            .place_order(order(customer, &[(&sku, 1)], None))
            .await
            .unwrap();

        rig.faulty.set_full(true);
        let first = engine
            .place_order(order(customer, &[(&sku, 1)], None))
            .await;
        assert!(first.is_err(), "nothing is acknowledged on a full disk");
        // From then on writes are refused at admission, at once, as insufficient storage.
        let started = Instant::now();
        let refused = engine.adjust_stock(&sku, 5, "receive", "test").await;
        assert!(
            matches!(refused, Err(CommandError::InsufficientStorage(_))),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused without waiting for the disk"
        );
        assert!(engine.readiness().is_err(), "not ready while writes fail");
        // Reads go on (once the faulted shard is rebuilt, which takes milliseconds).
        let deadline = Instant::now() + Duration::from_secs(10);
        let read = loop {
            match engine.order(placed.id).await {
                Ok(view) => break view,
                Err(CommandError::Unavailable(_)) if Instant::now() < deadline => {
                    actix_rt::time::sleep(Duration::from_millis(20)).await
                }
                Err(other) => panic!("read refused on a full disk: {other}"),
            }
        };
        assert_eq!(read.id, placed.id);
        assert_eq!(engine.stock(&sku).await.unwrap().reserved, 1);

        rig.faulty.set_full(false);
        wait_ready(engine).await;
        let again = place_until_answered(engine, &order(customer, &[(&sku, 4)], None)).await;
        assert_eq!(engine.stock(&sku).await.unwrap().reserved, 5);
        engine.shutdown().await;
        let disk = on_disk(&rig.rocks, 1);
        assert!(disk.data.orders.contains_key(&placed.id));
        assert!(disk.data.orders.contains_key(&again.id));
        assert_eq!(disk.data.stock[sku.as_str()].reserved, 5);
    });
}

#[test]
fn reserve_never_leaves_before_the_intent_is_durable() {
    actix_rt::System::new().block_on(async {
        // Retries every 20 ms while one write takes 300 ms and then fails: the old code sent
        // `Reserve` from its retry timer while `OrderPending` was still unwritten, and the
        // stock shard kept a hold for an order that was never recorded.
        let rig = rig(|_| {});
        let engine = &rig.engine;
        let local = name_on("LOCAL", 0, shard_of_sku);
        let remote = name_on("REMOTE", 1, shard_of_sku);
        engine
            .adjust_stock(&local, 10, "receive", "test")
            .await
            .unwrap();
        engine
            .adjust_stock(&remote, 10, "receive", "test")
            .await
            .unwrap();
        let customer = customer_on(engine, 0).await;
        rig.faulty.set_delay_ms(300);
        rig.faulty.fail_next(1);
        let failed = engine
            .place_order(order(customer, &[(&local, 1), (&remote, 1)], None))
            .await;
        rig.faulty.set_delay_ms(0);
        assert!(failed.is_err(), "{failed:?}");
        wait_ready(engine).await;
        // Quiescence: whatever was in flight has settled.
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let remote_stock = engine.stock(&remote).await.unwrap();
        assert_eq!(
            remote_stock.reserved, 0,
            "no hold for an order that was never recorded"
        );
        // And the shards still place cross-shard orders exactly.
        let placed =
            place_until_answered(engine, &order(customer, &[(&local, 2), (&remote, 3)], None))
                .await;
        assert_eq!(engine.stock(&remote).await.unwrap().reserved, 3);
        assert_eq!(engine.stock(&local).await.unwrap().reserved, 2);
        engine.shutdown().await;
        let disk = on_disk(&rig.rocks, 1);
        assert_eq!(disk.data.stock[remote.as_str()].reserved, 3);
        assert_eq!(disk.data.holds.len(), 1, "one hold, the placed order's");
        assert!(disk.data.holds.contains_key(&placed.id));
    });
}

#[cfg(feature = "failpoints")]
#[test]
fn a_placement_whose_part_never_answers_is_aborted_by_its_deadline_and_released() {
    actix_rt::System::new().block_on(async {
        let rig = rig(|config| {
            config.request_timeout_ms = 600;
            // The stuck shard is not replaced during the test: it wakes up by itself.
            config.supervisor.heartbeat_timeout_ms = 60_000;
        });
        let engine = &rig.engine;
        let local = name_on("LOCAL", 0, shard_of_sku);
        let remote = name_on("REMOTE", 1, shard_of_sku);
        let hang = name_on("FAILPOINT-HANG-2500", 1, shard_of_sku);
        engine
            .adjust_stock(&local, 10, "receive", "test")
            .await
            .unwrap();
        engine
            .adjust_stock(&remote, 10, "receive", "test")
            .await
            .unwrap();
        let customer = customer_on(engine, 0).await;
        let key = name_on("deadline", 0, shard_of_key);
        // Shard 1 blocks its thread for 2.5 s.
        let stuck = engine.clone();
        let hang_sku = hang.clone();
        actix_rt::spawn(async move {
            let _ = stuck.adjust_stock(&hang_sku, 1, "hang", "test").await;
        });
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let answer = engine
            .place_order(order(customer, &[(&local, 1), (&remote, 1)], Some(&key)))
            .await;
        let waited = started.elapsed();
        assert!(
            matches!(answer, Err(CommandError::Unavailable(_))),
            "{answer:?}"
        );
        assert!(
            waited < Duration::from_millis(2000),
            "answered by its deadline (600 ms), not when the shard woke up: {waited:?}"
        );
        // The order shard aborts and releases its own part while shard 1 still sleeps.
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(engine.stock(&local).await.unwrap().reserved, 0);
        // Once shard 1 wakes, its late `Reserve` is followed by the abort's `Release`.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stock) = engine.stock(&remote).await {
                if stock.reserved == 0 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the late hold is released");
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        // A retry with the same key places the order anew, and it holds exactly once.
        let retried = place_until_answered(
            engine,
            &order(customer, &[(&local, 1), (&remote, 1)], Some(&key)),
        )
        .await;
        assert_eq!(engine.stock(&remote).await.unwrap().reserved, 1);
        assert_eq!(engine.stock(&local).await.unwrap().reserved, 1);
        let again = engine
            .place_order(order(customer, &[(&local, 1), (&remote, 1)], Some(&key)))
            .await
            .unwrap();
        assert_eq!(again.id, retried.id, "the retry's outcome is remembered");
        engine.shutdown().await;
    });
}

#[cfg(feature = "failpoints")]
#[test]
fn an_operator_restart_of_a_stuck_shard_does_not_hang() {
    actix_rt::System::new().block_on(async {
        let rig = rig(|config| {
            config.supervisor.heartbeat_timeout_ms = 500;
            config.supervisor.heartbeat_interval_ms = 100_000;
        });
        let engine = &rig.engine;
        let hang = name_on("FAILPOINT-HANG-6000", 1, shard_of_sku);
        let stuck = engine.clone();
        actix_rt::spawn(async move {
            let _ = stuck.adjust_stock(&hang, 1, "hang", "test").await;
        });
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        engine.restart_shard(1).await.expect("restarted");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the restart waits for the stuck shard at most the heartbeat timeout: {:?}",
            started.elapsed()
        );
        let sku = name_on("AFTER", 1, shard_of_sku);
        let stock = engine
            .adjust_stock(&sku, 3, "receive", "test")
            .await
            .unwrap();
        assert_eq!(stock.on_hand, 3, "the rebuilt shard serves");
        engine.shutdown().await;
    });
}

#[test]
fn refused_placements_keep_bounded_idempotency_entries() {
    use orderd_engine::event::{Event, IdemRecord};
    use orderd_engine::state::{rejected_bytes, ShardData, REJECTED_IDEMPOTENCY_MAX};
    let mut data = ShardData::new(0, 1);
    let total = REJECTED_IDEMPOTENCY_MAX + 10;
    for n in 0..total {
        data.apply(&Event::PlacementRejected {
            idem: IdemRecord {
                key: format!("key-{n:08}"),
                hash: n as u128,
                at_us: n as i64,
            },
            short: vec!["SKU".into()],
        });
    }
    assert_eq!(data.idempotency.len(), REJECTED_IDEMPOTENCY_MAX);
    assert!(
        !data.idempotency.contains_key("key-00000000"),
        "the oldest is evicted first"
    );
    assert!(data
        .idempotency
        .contains_key(format!("key-{:08}", total - 1).as_str()));
    let one = rejected_bytes("key-00000000", &["SKU".to_string()]);
    assert_eq!(data.rejected_bytes, one * REJECTED_IDEMPOTENCY_MAX);
    // Sweeping by age frees their bytes too.
    data.sweep_idempotency(total as i64);
    assert_eq!(data.rejected_bytes, 0);
    assert!(data.idempotency.is_empty());
}

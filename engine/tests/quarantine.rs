//! Quarantine records: `Quarantine::list` reads them from storage oldest first (also one that
//! cannot be decoded), `Quarantine::lift` deletes one for good, takes it out of the set and
//! forgets its panics; and, with failpoints, a command that panicked twice is refused, runs
//! again once lifted, and needs two new panics to be quarantined again.

use std::sync::Arc;

use orderd_engine::storage::{Family, Storage, Write};
use orderd_engine::supervisor::{Quarantine, QuarantinedCommand};
use orderd_engine::MemoryStorage;

/// The stored form (ARCHITECTURE.md, "Storage layout"): key `engine/quarantine/<fingerprint
/// u64 BE>`, value a version byte (1) then postcard.
fn key(fingerprint: u64) -> Vec<u8> {
    let mut key = b"engine/quarantine/".to_vec();
    key.extend_from_slice(&fingerprint.to_be_bytes());
    key
}

fn put(storage: &dyn Storage, key: Vec<u8>, value: Vec<u8>) {
    storage
        .write(
            vec![Write::Put {
                family: Family::Control,
                key,
                value,
            }],
            true,
        )
        .expect("write");
}

fn store(storage: &dyn Storage, entry: &QuarantinedCommand) {
    let mut value = vec![1u8];
    value.extend(postcard::to_stdvec(entry).expect("encodes"));
    put(storage, key(entry.fingerprint), value);
}

fn entry(fingerprint: u64, command: &str, at_us: i64) -> QuarantinedCommand {
    QuarantinedCommand {
        fingerprint,
        command: command.to_string(),
        message: format!("{command} panicked"),
        at_us,
    }
}

#[test]
fn list_reads_every_record_oldest_first() {
    let storage = MemoryStorage::new();
    // Key order (by fingerprint) differs from time order.
    let newer = entry(0x0000_0000_0000_0001, "adjust_stock", 2_000);
    let older = entry(0xffff_0000_0000_0002, "place_order", 1_000);
    store(&storage, &newer);
    store(&storage, &older);
    // Neighbours of the prefix in `control` are not quarantine records.
    put(&storage, b"engine/quarantind".to_vec(), vec![1]);
    put(&storage, b"engine/shard_count".to_vec(), vec![2]);
    // A key that is not prefix + 8 bytes is skipped, as `load` skips it.
    put(&storage, b"engine/quarantine/short".to_vec(), vec![1]);

    let quarantine = Quarantine::load(&storage).expect("load");
    assert_eq!(quarantine.len(), 2);
    assert_eq!(
        quarantine.list(&storage).expect("list"),
        vec![older.clone(), newer.clone()]
    );

    // Equal times are ordered by fingerprint.
    let tie = entry(0x0000_0000_0000_0000, "create_customer", 2_000);
    store(&storage, &tie);
    assert_eq!(
        quarantine.list(&storage).expect("list"),
        vec![older, tie, newer]
    );

    assert!(Quarantine::load(&MemoryStorage::new())
        .expect("load")
        .list(&MemoryStorage::new())
        .expect("list")
        .is_empty());
}

#[test]
fn an_unreadable_record_is_listed_and_can_be_lifted() {
    let storage = MemoryStorage::new();
    let good = entry(7, "adjust_stock", 5_000);
    store(&storage, &good);
    put(&storage, key(8), vec![1, 0xff, 0xff]); // version 1, garbage after it
    put(&storage, key(9), vec![42]); // a version this build does not know
    let quarantine = Quarantine::load(&storage).expect("load");
    assert_eq!(quarantine.len(), 3);

    let listed = quarantine.list(&storage).expect("list");
    assert_eq!(listed.len(), 3);
    assert_eq!(
        (
            listed[0].fingerprint,
            listed[0].command.as_str(),
            listed[0].at_us
        ),
        (8, "unknown", 0)
    );
    assert!(
        listed[0].message.contains("undecodable"),
        "{}",
        listed[0].message
    );
    assert_eq!(listed[1].fingerprint, 9);
    assert!(
        listed[1].message.contains("unknown version 42"),
        "{}",
        listed[1].message
    );
    assert_eq!(listed[2], good);

    let lifted = quarantine
        .lift(&storage, 8)
        .expect("lift")
        .expect("was there");
    assert_eq!(lifted.fingerprint, 8);
    assert!(!quarantine.contains(8));
    assert_eq!(storage.get(Family::Control, &key(8)).expect("get"), None);
    assert_eq!(quarantine.len(), 2);
}

#[test]
fn lift_deletes_the_record_for_good_and_unknown_fingerprints_are_none() {
    let storage = MemoryStorage::new();
    let a = entry(0xa, "adjust_stock", 1_000);
    let b = entry(0xb, "place_order", 2_000);
    store(&storage, &a);
    store(&storage, &b);
    let quarantine = Quarantine::load(&storage).expect("load");
    assert!(quarantine.contains(0xa) && quarantine.contains(0xb));

    // Not quarantined: nothing changes.
    assert_eq!(quarantine.lift(&storage, 0xc).expect("lift"), None);
    assert_eq!(quarantine.len(), 2);

    assert_eq!(quarantine.lift(&storage, 0xa).expect("lift"), Some(a));
    assert!(!quarantine.contains(0xa));
    assert!(quarantine.contains(0xb), "the other one stays");
    assert_eq!(quarantine.list(&storage).expect("list"), vec![b.clone()]);
    assert_eq!(storage.get(Family::Control, &key(0xa)).expect("get"), None);
    // A second lift finds nothing.
    assert_eq!(quarantine.lift(&storage, 0xa).expect("lift"), None);
    // The lift outlives a restart: a fresh load no longer has it.
    let reloaded = Quarantine::load(&storage).expect("load");
    assert!(!reloaded.contains(0xa));
    assert!(reloaded.contains(0xb));

    assert_eq!(quarantine.lift(&storage, 0xb).expect("lift"), Some(b));
    assert!(quarantine.is_empty());
    assert!(!quarantine.contains(0xb));
    assert!(quarantine.list(&storage).expect("list").is_empty());
    assert!(Quarantine::load(&storage).expect("load").is_empty());
}

/// With failpoints a SKU named `FAILPOINT-PANIC…` makes the shard panic while it adjusts
/// stock: the real supervisor path counts the panics and quarantines.
#[cfg(feature = "failpoints")]
#[test]
fn a_lifted_command_runs_again_and_needs_two_new_panics() {
    use orderd_engine::{CommandError, Engine, EngineConfig, ShardState};
    use std::time::{Duration, Instant};

    const POISON: &str = "FAILPOINT-PANIC-LIFT";

    /// Waits until the single shard runs again after `restarts` restarts.
    async fn running_after(engine: &Engine, restarts: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let shard = engine.shards().await.remove(0);
            if shard.state == ShardState::Running && shard.restarts >= restarts {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shard not running after {restarts} restarts: {shard:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn poison(engine: &Engine) -> Result<(), CommandError> {
        engine
            .adjust_stock(POISON, 5, "quarantine test", "test")
            .await
            .map(|_| ())
    }

    actix_rt::System::new().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut config = EngineConfig::new(std::env::temp_dir(), 1);
        config.supervisor.max_restarts = 100;
        let engine = Engine::start(config, storage.clone()).expect("engine starts");

        for round in 1..=2 {
            let outcome = poison(&engine).await;
            assert!(
                matches!(outcome, Err(CommandError::Unavailable(_))),
                "panic {round}: {outcome:?}"
            );
            running_after(&engine, round).await;
        }
        let outcome = poison(&engine).await;
        assert!(
            matches!(outcome, Err(CommandError::Quarantined(_))),
            "{outcome:?}"
        );
        let listed = engine.quarantine().list(storage.as_ref()).expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        let fingerprint = listed[0].fingerprint;
        assert_eq!(listed[0].command, "adjust_stock");
        assert!(
            listed[0].message.contains("failpoint"),
            "{}",
            listed[0].message
        );

        let lifted = engine
            .quarantine()
            .lift(storage.as_ref(), fingerprint)
            .expect("lift")
            .expect("quarantined");
        assert_eq!(lifted, listed[0]);
        assert!(engine.quarantine().is_empty());

        // Runs again (and panics again: the failpoint is still there). Its count starts from
        // zero, so one panic does not quarantine it...
        let outcome = poison(&engine).await;
        assert!(
            matches!(outcome, Err(CommandError::Unavailable(_))),
            "{outcome:?}"
        );
        running_after(&engine, 3).await;
        assert!(
            engine.quarantine().is_empty(),
            "quarantined after one panic"
        );
        // ... the second one does.
        let outcome = poison(&engine).await;
        assert!(
            matches!(outcome, Err(CommandError::Unavailable(_))),
            "{outcome:?}"
        );
        running_after(&engine, 4).await;
        let outcome = poison(&engine).await;
        assert!(
            matches!(outcome, Err(CommandError::Quarantined(_))),
            "{outcome:?}"
        );
        assert_eq!(
            engine
                .quarantine()
                .list(storage.as_ref())
                .expect("list")
                .iter()
                .map(|e| e.fingerprint)
                .collect::<Vec<_>>(),
            vec![fingerprint]
        );
        engine.shutdown().await;
    });
}

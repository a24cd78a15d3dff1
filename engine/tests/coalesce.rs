//! Placements through the shards' inboxes (issue 15): many concurrent callers, exact stock,
//! cross-shard orders, keys that live on another shard than their customer, a full inbox
//! refused at once, and one audit entry per placed order written with the log.

use std::sync::Arc;

use orderd_engine::audit::{scan_entries, verify_shard_chain};
use orderd_engine::{
    CommandError, CustomerId, Engine, EngineConfig, Idempotency, MemoryStorage, NewCustomer,
    NewLine, PlaceOrder, Storage,
};

fn customer(name: &str) -> NewCustomer {
    NewCustomer {
        name: name.into(),
        email: format!("{name}@example.com"),
        phone: None,
        address: None,
    }
}

fn order(customer: CustomerId, lines: &[(&str, u32)], key: Option<&str>) -> PlaceOrder {
    PlaceOrder {
        refusal: None,
        customer_id: customer,
        lines: lines
            .iter()
            .map(|(sku, qty)| NewLine {
                sku: (*sku).into(),
                qty: *qty,
                unit_price: 100,
            })
            .collect(),
        shipping_address: None,
        note: None,
        idempotency: key.map(|key| Idempotency {
            key: key.into(),
            request_hash: 7,
        }),
        actor: "key_test".into(),
    }
}

/// Every `order.place` entry of every shard chain, after verifying each chain.
fn placed_entries(storage: &dyn Storage, shards: u16) -> Vec<String> {
    let mut targets = Vec::new();
    for shard in 0..shards {
        let report = verify_shard_chain(storage, shard).unwrap();
        assert_eq!(report.first_bad, None, "shard {shard}'s chain verifies");
        scan_entries(storage, shard, 0, &mut |entry| {
            if entry.action == "order.place" {
                assert_eq!(entry.actor, "key_test");
                targets.push(entry.target.clone());
            }
            true
        })
        .unwrap();
    }
    targets
}

#[test]
fn concurrent_coalesced_placements_are_exact_and_each_audited_once() {
    actix_rt::System::new().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut config = EngineConfig::new(std::env::temp_dir(), 3);
        config.min_free_bytes = 0;
        // Small log batches: a drained inbox is written as several batches.
        config.batch_events_max = 16;
        let engine = Engine::start(config, storage.clone()).expect("engine starts");
        let mut customers = Vec::new();
        for i in 0..3 {
            customers.push(
                engine
                    .create_customer(customer(&format!("c{i}")))
                    .await
                    .unwrap()
                    .id,
            );
        }
        // Two SKUs that (with 3 shards) very likely live on different shards; 300 units each.
        for sku in ["FLASH-A", "FLASH-B"] {
            engine
                .adjust_stock(sku, 300, "receive", "key_test")
                .await
                .unwrap();
        }
        // 64 callers × 10 orders of one unit of each SKU (cross-shard where the SKUs differ
        // from the order's shard), half with keys that put the order on another shard.
        let mut tasks = Vec::new();
        for caller in 0..64u32 {
            let engine = engine.clone();
            let customers = customers.clone();
            tasks.push(actix_rt::spawn(async move {
                let places: Vec<PlaceOrder> = (0..10u32)
                    .map(|i| {
                        let key = format!("k-{caller}-{i}");
                        order(
                            customers[((caller + i) % 3) as usize],
                            &[("FLASH-A", 1), ("FLASH-B", 1)],
                            (i % 2 == 0).then_some(key.as_str()),
                        )
                    })
                    .collect();
                engine.place_orders(places).await
            }));
        }
        let mut placed = Vec::new();
        let mut short = 0;
        for task in tasks {
            for outcome in task.await.unwrap() {
                match outcome {
                    Ok(view) => placed.push(view.id),
                    Err(CommandError::InsufficientStock { .. }) => short += 1,
                    Err(other) => panic!("unexpected outcome {other:?}"),
                }
            }
        }
        // 640 asked, 300 of each SKU: exactly 300 placed, the rest refused, nothing oversold.
        assert_eq!(placed.len(), 300);
        assert_eq!(short, 340);
        for sku in ["FLASH-A", "FLASH-B"] {
            let stock = engine.stock(sku).await.unwrap();
            assert_eq!((stock.on_hand, stock.reserved), (300, 300), "{sku}");
        }
        // A retry of a keyed order answers the same order and places nothing more.
        let again = engine
            .place_orders(vec![order(
                customers[0],
                &[("FLASH-A", 1), ("FLASH-B", 1)],
                Some("k-0-0"),
            )])
            .await;
        let first = engine
            .place_orders(vec![order(
                customers[0],
                &[("FLASH-A", 1), ("FLASH-B", 1)],
                Some("k-0-0"),
            )])
            .await;
        assert_eq!(
            again[0].as_ref().map(|v| v.id).ok(),
            first[0].as_ref().map(|v| v.id).ok()
        );
        assert_eq!(
            engine.stock("FLASH-A").await.unwrap().reserved,
            300,
            "a retry places nothing"
        );
        // An unknown customer (on any shard, also behind a key routed elsewhere) is refused.
        let unknown = CustomerId::new(1, 999_999);
        let refused = engine
            .place_orders(vec![
                order(unknown, &[("FLASH-A", 1)], None),
                order(unknown, &[("FLASH-A", 1)], Some("unknown-elsewhere")),
                order(CustomerId::new(77, 1), &[("FLASH-A", 1)], None),
            ])
            .await;
        assert!(refused
            .iter()
            .all(|r| matches!(r, Err(CommandError::UnknownCustomer))));

        // One `order.place` entry per placed order, in verified chains.
        let mut audited = placed_entries(storage.as_ref(), 3);
        audited.sort();
        let mut want: Vec<String> = placed.iter().map(|id| id.to_string()).collect();
        want.sort();
        assert_eq!(audited, want);
        engine.shutdown().await;
    });
}

#[test]
fn a_full_inbox_refuses_at_once() {
    actix_rt::System::new().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut config = EngineConfig::new(std::env::temp_dir(), 1);
        config.min_free_bytes = 0;
        config.inbox_orders_max = 4;
        let engine = Engine::start(config, storage).expect("engine starts");
        let id = engine.create_customer(customer("c")).await.unwrap().id;
        engine
            .adjust_stock("S", 1_000, "receive", "t")
            .await
            .unwrap();
        // A submission larger than the bound is taken when the inbox is empty...
        let big: Vec<PlaceOrder> = (0..6).map(|_| order(id, &[("S", 1)], None)).collect();
        assert!(engine.place_orders(big).await.iter().all(Result::is_ok));
        // ...and concurrent submissions beyond the bound are refused, never queued.
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let engine = engine.clone();
            tasks.push(actix_rt::spawn(async move {
                engine
                    .place_orders((0..3).map(|_| order(id, &[("S", 1)], None)).collect())
                    .await
            }));
        }
        let (mut ok, mut busy) = (0, 0);
        for task in tasks {
            for outcome in task.await.unwrap() {
                match outcome {
                    Ok(_) => ok += 1,
                    Err(CommandError::Unavailable(why)) => {
                        assert!(why.contains("inbox"), "{why}");
                        busy += 1;
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(ok + busy, 150);
        let stock = engine.stock("S").await.unwrap();
        assert_eq!(
            stock.reserved,
            6 + ok,
            "every order answered placed is placed"
        );
        engine.shutdown().await;
    });
}

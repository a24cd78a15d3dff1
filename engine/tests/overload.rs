//! Overload: a full shard mailbox answers `Unavailable` at once instead of blocking the
//! caller, nothing half-done is left behind, and the shard keeps serving afterwards.

use std::sync::Arc;

use orderd_engine::{
    CommandError, Engine, EngineConfig, MemoryStorage, NewCustomer, NewLine, PlaceOrder, Storage,
};

const ORDERS: usize = 5_000;

#[test]
fn a_full_mailbox_answers_unavailable_and_loses_nothing() {
    actix_rt::System::new().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut config = EngineConfig::new(std::env::temp_dir(), 1);
        config.mailbox_capacity = 16;
        let engine = Engine::start(config, storage).expect("engine starts");
        engine
            .adjust_stock("HOT", 1_000_000, "receive", "test")
            .await
            .expect("stock");
        let customer = engine
            .create_customer(NewCustomer {
                name: "c".into(),
                email: "c@example.com".into(),
                phone: None,
                address: None,
            })
            .await
            .expect("customer")
            .id;
        // Every task sends before it awaits: thousands of sends hit a 16-slot mailbox at once.
        let tasks: Vec<_> = (0..ORDERS)
            .map(|_| {
                let engine = engine.clone();
                actix_rt::spawn(async move {
                    engine
                        .place_order(PlaceOrder {
                            refusal: None,
                            customer_id: customer,
                            lines: vec![NewLine {
                                sku: "HOT".into(),
                                qty: 1,
                                unit_price: 1,
                            }],
                            shipping_address: None,
                            note: None,
                            idempotency: None,
                            actor: "test".into(),
                        })
                        .await
                })
            })
            .collect();
        let mut confirmed = 0u64;
        let mut unavailable = 0u64;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => confirmed += 1,
                Err(CommandError::Unavailable(_)) => unavailable += 1,
                Err(other) => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(confirmed + unavailable, ORDERS as u64);
        assert!(unavailable > 0, "a 16-slot mailbox must overflow");
        assert!(confirmed > 0, "the shard keeps serving under overload");
        // Exactly the confirmed orders hold stock: refused requests left nothing behind.
        let stock = engine.stock("HOT").await.expect("stock read");
        assert_eq!(stock.reserved, confirmed);
        assert_eq!(stock.on_hand, 1_000_000);
        engine.shutdown().await;
    });
}

//! Every mutation takes an Idempotency-Key with the semantics orders have (issue 14, item 9):
//! the same key and body get the same answer and apply once, also after a restart; the same
//! key with another body is a conflict.

use std::sync::Arc;

use orderd_engine::{
    CommandError, Engine, EngineConfig, Idempotency, MemoryStorage, NewCustomer, NewLine,
    NewShipment, PlaceOrder, ShipmentStatus, Storage,
};

fn idem(key: &str, hash: u128) -> Option<Idempotency> {
    Some(Idempotency {
        key: key.into(),
        request_hash: hash,
    })
}

fn customer(name: &str) -> NewCustomer {
    NewCustomer {
        name: name.into(),
        email: format!("{name}@example.com"),
        phone: None,
        address: None,
    }
}

#[test]
fn retried_mutations_apply_once_and_answer_the_same_across_a_restart() {
    actix_rt::System::new().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut config = EngineConfig::new(std::env::temp_dir(), 2);
        config.min_free_bytes = 0;
        let engine = Engine::start(config.clone(), storage.clone()).expect("engine starts");

        // Stock adjustment: applied once, the retry answers the stock the first one left.
        let first = engine
            .adjust_stock_with("MUG", 10, "receive", "t", idem("adj-1", 1))
            .await
            .unwrap();
        engine.adjust_stock("MUG", 5, "receive", "t").await.unwrap();
        let again = engine
            .adjust_stock_with("MUG", 10, "receive", "t", idem("adj-1", 1))
            .await
            .unwrap();
        assert_eq!(again, first, "the first answer, not today's stock");
        assert_eq!(
            engine.stock("MUG").await.unwrap().on_hand,
            15,
            "applied once"
        );
        let conflict = engine
            .adjust_stock_with("MUG", 11, "receive", "t", idem("adj-1", 2))
            .await;
        assert_eq!(conflict, Err(CommandError::IdempotencyConflict));

        // Customer: created once.
        let created = engine
            .create_customer_with(customer("jo"), idem("cus-1", 7))
            .await
            .unwrap();
        let retried = engine
            .create_customer_with(customer("jo"), idem("cus-1", 7))
            .await
            .unwrap();
        assert_eq!(retried.id, created.id);

        // An order to ship and cancel.
        let place = |qty| PlaceOrder {
            refusal: None,
            customer_id: created.id,
            lines: vec![NewLine {
                sku: "MUG".into(),
                qty,
                unit_price: 100,
            }],
            shipping_address: None,
            note: None,
            idempotency: None,
            actor: "t".into(),
        };
        let shipped_order = engine.place_order(place(2)).await.unwrap();
        let shipment = NewShipment {
            order_id: shipped_order.id,
            carrier: "ups".into(),
            lines: Some(vec![("MUG".into(), 1)]),
            actor: "t".into(),
        };
        let ship = engine
            .ship_with(shipment.clone(), idem("ship-1", 3))
            .await
            .unwrap();
        let event = engine
            .shipment_event_with(
                ship.id,
                ShipmentStatus::InTransit,
                None,
                "t",
                idem("ev-1", 4),
            )
            .await
            .unwrap();
        let cancelled_order = engine.place_order(place(1)).await.unwrap();
        let cancel = engine
            .cancel_order_with(cancelled_order.id, None, "t", idem("cancel-1", 5))
            .await
            .unwrap();

        // A restart: the answers come from what is on disk.
        engine.shutdown().await;
        let engine = Engine::start(config, storage).expect("engine restarts");
        let ship_again = engine.ship_with(shipment, idem("ship-1", 3)).await.unwrap();
        assert_eq!(ship_again.id, ship.id, "no second shipment");
        assert_eq!(
            ship_again.events.len(),
            ship.events.len(),
            "as it was answered"
        );
        assert_eq!(ship_again.status, ShipmentStatus::Shipped);
        let order = engine.order(shipped_order.id).await.unwrap();
        assert_eq!(order.lines[0].shipped_qty, 1, "shipped once");
        let event_again = engine
            .shipment_event_with(
                ship.id,
                ShipmentStatus::InTransit,
                None,
                "t",
                idem("ev-1", 4),
            )
            .await
            .unwrap();
        assert_eq!(event_again, event);
        let cancel_again = engine
            .cancel_order_with(cancelled_order.id, None, "t", idem("cancel-1", 5))
            .await
            .unwrap();
        assert_eq!(cancel_again.id, cancel.id);
        assert_eq!(
            engine.stock("MUG").await.unwrap().on_hand,
            14,
            "15 received, 1 shipped, nothing twice"
        );
        let again = engine
            .adjust_stock_with("MUG", 10, "receive", "t", idem("adj-1", 1))
            .await
            .unwrap();
        assert_eq!(again, first);
        let retried = engine
            .create_customer_with(customer("jo"), idem("cus-1", 7))
            .await
            .unwrap();
        assert_eq!(retried.id, created.id);
        // A key of one kind of command is a conflict for another.
        let other = engine
            .cancel_order_with(cancelled_order.id, None, "t", idem("ev-1", 4))
            .await;
        assert!(other.is_err(), "{other:?}");
        engine.shutdown().await;
    });
}

//! The shard enforces the money and quantity bounds itself (issue 14, item 7), with the same
//! `param` and detail as the gateway, so a caller of the engine's API cannot wrap a total.

use std::sync::Arc;

use orderd_engine::{
    CommandError, Engine, EngineConfig, MemoryStorage, NewCustomer, NewLine, PlaceOrder, Storage,
    LINE_QTY_MAX, STOCK_DELTA_MAX, UNIT_PRICE_MAX,
};

fn param(result: Result<impl std::fmt::Debug, CommandError>) -> String {
    match result {
        Err(CommandError::Invalid { param, .. }) => param,
        other => panic!("expected invalid_request, got {other:?}"),
    }
}

#[test]
fn out_of_bounds_values_are_refused_by_the_shard() {
    actix_rt::System::new().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut config = EngineConfig::new(std::env::temp_dir(), 1);
        config.min_free_bytes = 0;
        let engine = Engine::start(config, storage).expect("engine starts");
        engine
            .adjust_stock("MUG", 10, "receive", "t")
            .await
            .unwrap();
        let customer = engine
            .create_customer(NewCustomer {
                name: "c".into(),
                email: "c@example.com".into(),
                phone: None,
                address: None,
            })
            .await
            .unwrap()
            .id;
        let order = |lines: Vec<(u32, u64)>| PlaceOrder {
            refusal: None,
            customer_id: customer,
            lines: lines
                .into_iter()
                .enumerate()
                .map(|(i, (qty, unit_price))| NewLine {
                    sku: format!("SKU-{i}"),
                    qty,
                    unit_price,
                })
                .collect(),
            shipping_address: None,
            note: None,
            idempotency: None,
            actor: "t".into(),
        };
        let too_many = engine.place_order(order(vec![(LINE_QTY_MAX + 1, 1)])).await;
        assert_eq!(param(too_many), "lines[0].qty");
        let too_dear = engine
            .place_order(order(vec![(1, UNIT_PRICE_MAX + 1)]))
            .await;
        assert_eq!(param(too_dear), "lines[0].unit_price");
        // Each line within its bounds, the total past them: named at the line that passes it.
        let lines = vec![(LINE_QTY_MAX, UNIT_PRICE_MAX); 3];
        assert_eq!(
            param(engine.place_order(order(lines)).await),
            "lines[0].unit_price"
        );
        let delta = engine
            .adjust_stock("MUG", STOCK_DELTA_MAX as i64 + 1, "receive", "t")
            .await;
        assert_eq!(param(delta), "delta");
        assert_eq!(
            engine.stock("MUG").await.unwrap().on_hand,
            10,
            "nothing applied"
        );
        engine.shutdown().await;
    });
}

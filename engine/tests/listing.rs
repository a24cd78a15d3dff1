//! A customer's order list through the per-shard customer index (issue 17, item 4) answers
//! exactly what the full listing filtered by customer answers (same items, same order, same
//! cursors), on a real RocksDB, after random placements (one-shard, cross-shard, aborted),
//! cancellations, shipments and deliveries, across snapshots, a supervisor restart of a
//! shard and a restart of the whole engine.

use std::sync::Arc;

use orderd_engine::sim::Rng;
use orderd_engine::{
    CustomerId, Engine, EngineConfig, Idempotency, NewCustomer, NewLine, NewShipment, OrderCursor,
    OrderFilter, OrderStatus, OrderView, PlaceOrder, RocksStorage, ShipmentStatus, Storage,
};

const SHARDS: usize = 3;
const CUSTOMERS: usize = 5;
/// SKUs with plenty of stock, and one so scarce that cross-shard orders of it abort.
const SKUS: [&str; 4] = ["MUG", "CUP", "PLATE", "BOWL"];
const SCARCE: &str = "RARE";

const STATUSES: [Option<OrderStatus>; 6] = [
    None,
    Some(OrderStatus::Confirmed),
    Some(OrderStatus::PartiallyShipped),
    Some(OrderStatus::Shipped),
    Some(OrderStatus::Delivered),
    Some(OrderStatus::Cancelled),
];

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir.to_path_buf(), SHARDS);
    config.min_free_bytes = 0;
    config.pending_retry_ms = 20;
    // Snapshots now and then, so recovery is snapshot + log, not the log alone.
    config.snapshot_interval_events = 97;
    config
}

fn start(dir: &std::path::Path) -> Engine {
    let storage: Arc<dyn Storage> =
        Arc::new(RocksStorage::open(&dir.join("db")).expect("rocksdb opens"));
    Engine::start(config(dir), storage).expect("engine starts")
}

/// Every page of a listing, following `next` from the first page.
async fn pages(
    engine: &Engine,
    mut filter: OrderFilter,
) -> Vec<(Vec<OrderView>, Option<OrderCursor>)> {
    let mut pages = Vec::new();
    loop {
        let page = engine.list_orders(filter.clone()).await.expect("lists");
        let next = page.next;
        pages.push((page.items, next));
        match next {
            Some(cursor) => filter.after = Some(cursor),
            None => return pages,
        }
    }
}

/// For every customer, status filter and page size, the customer's pages equal the full
/// listing (every customer, paged through) filtered and cut into pages of that size, with
/// the cursors the engine computes for them.
async fn assert_customer_lists_match(engine: &Engine, customers: &[CustomerId]) {
    let all: Vec<OrderView> = pages(
        engine,
        OrderFilter {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .flat_map(|(items, _)| items)
    .collect();
    assert!(all.len() > 100, "the run placed orders ({})", all.len());
    for &customer in customers {
        for status in STATUSES {
            let expected: Vec<&OrderView> = all
                .iter()
                .filter(|o| o.customer_id == customer && status.is_none_or(|s| s == o.status))
                .collect();
            for limit in [1, 7, 50] {
                let got = pages(
                    engine,
                    OrderFilter {
                        customer_id: Some(customer),
                        status,
                        limit,
                        after: None,
                    },
                )
                .await;
                let want: Vec<Vec<&OrderView>> = if expected.is_empty() {
                    vec![Vec::new()]
                } else {
                    expected.chunks(limit).map(<[_]>::to_vec).collect()
                };
                assert_eq!(got.len(), want.len(), "{customer} {status:?} limit {limit}");
                for (page, ((items, next), want)) in got.iter().zip(&want).enumerate() {
                    let want: Vec<OrderView> = want.iter().map(|o| (*o).clone()).collect();
                    assert_eq!(items, &want, "{customer} {status:?} limit {limit}");
                    let last_page = page + 1 == got.len();
                    let cursor = (!last_page).then(|| {
                        let last = want.last().unwrap();
                        OrderCursor {
                            created_at_us: last.created_at_us,
                            id: last.id,
                        }
                    });
                    assert_eq!(*next, cursor, "{customer} {status:?} limit {limit}");
                }
            }
        }
    }
}

/// Random work: placements of random customers (keys spread them over every shard; some
/// cross-shard, some of the scarce SKU, which abort), cancellations, shipments, deliveries.
async fn random_work(engine: &Engine, rng: &mut Rng, customers: &[CustomerId], rounds: usize) {
    let mut placed: Vec<OrderView> = Vec::new();
    for round in 0..rounds {
        match rng.below(10) {
            0..=5 => {
                let customer = customers[rng.below(customers.len() as u64) as usize];
                let mut lines = vec![NewLine {
                    sku: SKUS[rng.below(SKUS.len() as u64) as usize].into(),
                    qty: 2,
                    unit_price: 100,
                }];
                if rng.chance(300) {
                    let sku = if rng.chance(300) { SCARCE } else { SKUS[3] };
                    if lines[0].sku != sku {
                        lines.push(NewLine {
                            sku: sku.into(),
                            qty: 1,
                            unit_price: 50,
                        });
                    }
                }
                let idempotency = rng.chance(500).then(|| Idempotency {
                    key: format!("key-{}-{round}", rng.next_u64()),
                    request_hash: 1,
                });
                let result = engine
                    .place_order(PlaceOrder {
                        refusal: None,
                        customer_id: customer,
                        lines,
                        shipping_address: None,
                        note: None,
                        idempotency,
                        actor: "t".into(),
                    })
                    .await;
                if let Ok(order) = result {
                    placed.push(order);
                }
            }
            6 | 7 if !placed.is_empty() => {
                let order = placed.swap_remove(rng.below(placed.len() as u64) as usize);
                if rng.chance(400) {
                    engine
                        .cancel_order(order.id, None, "t")
                        .await
                        .expect("cancels");
                } else {
                    let sku = order.lines[0].sku.clone();
                    let shipment = engine
                        .ship(NewShipment {
                            order_id: order.id,
                            carrier: "c".into(),
                            lines: rng.chance(500).then(|| vec![(sku, 1)]),
                            actor: "t".into(),
                        })
                        .await
                        .expect("ships");
                    if rng.chance(500) {
                        engine
                            .shipment_event(shipment.id, ShipmentStatus::Delivered, None, "t")
                            .await
                            .expect("delivered");
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn customer_lists_through_the_index_match_the_full_listing_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let customers = actix_rt::System::new().block_on(async {
        let engine = start(dir.path());
        for sku in SKUS {
            engine
                .adjust_stock(sku, 1_000_000, "receive", "t")
                .await
                .unwrap();
        }
        engine
            .adjust_stock(SCARCE, 5, "receive", "t")
            .await
            .unwrap();
        let mut customers = Vec::new();
        for n in 0..CUSTOMERS {
            let created = engine
                .create_customer(NewCustomer {
                    name: format!("c{n}"),
                    email: format!("c{n}@example.com"),
                    phone: None,
                    address: None,
                })
                .await
                .unwrap();
            customers.push(created.id);
        }
        // A customer with no orders lists nothing.
        let mut rng = Rng::new(17);
        random_work(&engine, &mut rng, &customers[..CUSTOMERS - 1], 400).await;
        assert_customer_lists_match(&engine, &customers).await;

        // Snapshot a shard, keep going, then a supervisor restart of each shard (snapshot +
        // log replay on a fresh arbiter).
        engine.snapshot_shard(0).await.expect("snapshot");
        random_work(&engine, &mut rng, &customers[..CUSTOMERS - 1], 200).await;
        for shard in 0..SHARDS as u16 {
            engine.restart_shard(shard).await.expect("restarted");
        }
        assert_customer_lists_match(&engine, &customers).await;
        random_work(&engine, &mut rng, &customers[..CUSTOMERS - 1], 200).await;
        engine.shutdown().await;
        customers
    });
    // A whole restart: every shard recovered from RocksDB.
    actix_rt::System::new().block_on(async {
        let engine = start(dir.path());
        assert_customer_lists_match(&engine, &customers).await;
        engine.shutdown().await;
    });
}

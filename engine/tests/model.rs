//! Property test: random sequences of adjust / place / cancel / ship / shard restart against a
//! plain reference model, on 3 shards (so orders span shards), then a full recovery from
//! storage. Outcomes must be identical, stock conserved and never negative, and the sales
//! summary exact against a recount of the orders.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use orderd_engine::{
    CommandError, CustomerId, Engine, EngineConfig, Idempotency, MemoryStorage, NewCustomer,
    NewLine, NewShipment, OrderFilter, OrderId, OrderStatus, PlaceOrder, ShipmentStatus, Storage,
};
use proptest::prelude::*;

const SKUS: [&str; 6] = ["A", "B", "C", "D", "E", "F"];
const SHARDS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Adjust {
        sku: usize,
        delta: i64,
    },
    Place {
        lines: Vec<(usize, u32)>,
        key: Option<u8>,
        price: u64,
    },
    Cancel {
        pick: usize,
    },
    /// Ship one unit of the first unshipped line (`partial`), or everything left.
    Ship {
        pick: usize,
        partial: bool,
    },
    Restart {
        shard: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SKUS.len(), -4i64..12).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
        5 => (
            proptest::collection::btree_map(0..SKUS.len(), 1u32..4, 1..4),
            proptest::option::of(0u8..6),
            1u64..3,
        )
            .prop_map(|(lines, key, price)| Op::Place {
                lines: lines.into_iter().collect(),
                key,
                price,
            }),
        2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, partial)| Op::Ship { pick, partial }),
        1 => (0..SHARDS as u16).prop_map(|shard| Op::Restart { shard }),
    ]
}

/// Order lines of the model: (SKU index, quantity).
type Lines = Vec<(usize, u32)>;
/// A placed order.
#[derive(Clone, Debug)]
struct ModelOrder {
    id: OrderId,
    lines: Lines,
    price: u64,
    cancelled: bool,
    /// Units shipped, per line.
    shipped: Vec<u32>,
}
/// A first request under a key and its outcome (the order, or the short SKUs).
type KeyRecord = (Lines, u64, Result<OrderId, Vec<String>>);

#[derive(Default)]
struct Model {
    on_hand: HashMap<usize, u64>,
    reserved: HashMap<usize, u64>,
    /// Orders placed, with their lines and whether they are cancelled.
    orders: Vec<ModelOrder>,
    /// Idempotency key → (request, outcome: Some(order) or None = rejected with skus).
    keys: HashMap<u8, KeyRecord>,
}

impl Model {
    fn available(&self, sku: usize) -> u64 {
        self.on_hand.get(&sku).copied().unwrap_or(0) - self.reserved.get(&sku).copied().unwrap_or(0)
    }
}

async fn check_stock(engine: &Engine, model: &Model) {
    for (i, sku) in SKUS.iter().enumerate() {
        let on_hand = model.on_hand.get(&i).copied();
        match engine.stock(sku).await {
            Ok(view) => {
                assert_eq!(Some(view.on_hand), on_hand, "on_hand of {sku}");
                assert_eq!(view.reserved, model.reserved.get(&i).copied().unwrap_or(0));
                assert_eq!(view.available, view.on_hand - view.reserved);
                assert!(view.reserved <= view.on_hand);
            }
            Err(CommandError::NotFound) => assert_eq!(on_hand, None, "{sku} should exist"),
            Err(other) => panic!("stock read failed: {other}"),
        }
    }
}

fn config() -> EngineConfig {
    let mut config = EngineConfig::new(std::env::temp_dir(), SHARDS);
    config.pending_retry_ms = 50;
    config
}

async fn run(ops: Vec<Op>) {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let engine = Engine::start(config(), storage.clone()).expect("engine starts");
    let mut customers = Vec::new();
    for n in 0..SHARDS {
        let c = engine
            .create_customer(NewCustomer {
                name: format!("c{n}"),
                email: format!("c{n}@example.com"),
                phone: None,
                address: None,
            })
            .await
            .expect("customer");
        customers.push(c.id);
    }
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Adjust { sku, delta } => {
                if delta == 0 {
                    continue;
                }
                let result = engine.adjust_stock(SKUS[sku], delta, "test", "key_t").await;
                let on_hand = model.on_hand.get(&sku).copied().unwrap_or(0) as i64 + delta;
                let reserved = model.reserved.get(&sku).copied().unwrap_or(0) as i64;
                if on_hand < reserved {
                    assert_eq!(
                        result,
                        Err(CommandError::InsufficientStock {
                            skus: vec![SKUS[sku].to_string()]
                        })
                    );
                } else {
                    let view = result.expect("adjust");
                    model.on_hand.insert(sku, on_hand as u64);
                    assert_eq!(view.on_hand, on_hand as u64);
                }
            }
            Op::Place { lines, key, price } => {
                let customer: CustomerId = customers[step % customers.len()];
                let place = PlaceOrder {
                    refusal: None,
                    customer_id: customer,
                    lines: lines
                        .iter()
                        .map(|(sku, qty)| NewLine {
                            sku: SKUS[*sku].to_string(),
                            qty: *qty,
                            unit_price: price,
                        })
                        .collect(),
                    shipping_address: None,
                    note: None,
                    idempotency: key.map(|k| Idempotency {
                        key: format!("k{k}"),
                        // Injective: 3 bits of quantity per SKU slot, the price above.
                        request_hash: lines
                            .iter()
                            .map(|(sku, qty)| (*qty as u128) << (sku * 3))
                            .sum::<u128>()
                            | (price as u128) << 32,
                    }),
                    actor: "key_t".into(),
                };
                let result = engine.place_order(place).await;
                if let Some(k) = key {
                    if let Some((first_lines, first_price, outcome)) = model.keys.get(&k) {
                        if *first_lines != lines || *first_price != price {
                            assert_eq!(result, Err(CommandError::IdempotencyConflict));
                        } else {
                            match outcome {
                                Ok(id) => assert_eq!(result.expect("repeat").id, *id),
                                Err(skus) => assert_eq!(
                                    result,
                                    Err(CommandError::InsufficientStock { skus: skus.clone() })
                                ),
                            }
                        }
                        continue;
                    }
                }
                let short: BTreeSet<String> = lines
                    .iter()
                    .filter(|(sku, qty)| model.available(*sku) < *qty as u64)
                    .map(|(sku, _)| SKUS[*sku].to_string())
                    .collect();
                let outcome = if short.is_empty() {
                    let view = result.expect("placement should succeed");
                    assert_eq!(view.status, OrderStatus::Confirmed);
                    assert_eq!(view.lines.len(), lines.len());
                    for (sku, qty) in &lines {
                        *model.reserved.entry(*sku).or_default() += *qty as u64;
                    }
                    model.orders.push(ModelOrder {
                        id: view.id,
                        lines: lines.clone(),
                        price,
                        cancelled: false,
                        shipped: vec![0; lines.len()],
                    });
                    Ok(view.id)
                } else {
                    match result {
                        Err(CommandError::InsufficientStock { skus }) => {
                            let got: BTreeSet<String> = skus.into_iter().collect();
                            assert_eq!(got, short);
                            Err(got.into_iter().collect::<Vec<_>>())
                        }
                        other => panic!("expected insufficient stock {short:?}, got {other:?}"),
                    }
                };
                if let Some(k) = key {
                    let mut outcome = outcome;
                    if let Err(skus) = &mut outcome {
                        skus.sort();
                    }
                    model.keys.insert(k, (lines, price, outcome));
                }
            }
            Op::Cancel { pick } => {
                if model.orders.is_empty() {
                    continue;
                }
                let index = pick % model.orders.len();
                let order = model.orders[index].clone();
                let result = engine.cancel_order(order.id, None, "key_t").await;
                if order.shipped.iter().any(|s| *s > 0) {
                    assert!(
                        matches!(result, Err(CommandError::InvalidTransition(_))),
                        "cancel after shipping: {result:?}"
                    );
                    continue;
                }
                let view = result.expect("cancel");
                assert_eq!(view.status, OrderStatus::Cancelled);
                if !order.cancelled {
                    for (sku, qty) in &order.lines {
                        *model.reserved.get_mut(sku).expect("reserved") -= *qty as u64;
                    }
                    model.orders[index].cancelled = true;
                }
            }
            Op::Ship { pick, partial } => {
                if model.orders.is_empty() {
                    continue;
                }
                let index = pick % model.orders.len();
                let order = model.orders[index].clone();
                let left: Vec<(usize, u32)> = order
                    .lines
                    .iter()
                    .zip(&order.shipped)
                    .enumerate()
                    .filter(|(_, ((_, qty), shipped))| *shipped < qty)
                    .map(|(i, ((_, qty), shipped))| (i, qty - shipped))
                    .collect();
                let request: Option<Vec<(String, u32)>> = match (partial, left.first()) {
                    (true, Some((i, _))) => Some(vec![(SKUS[order.lines[*i].0].to_string(), 1)]),
                    _ => None,
                };
                let result = engine
                    .ship(NewShipment {
                        order_id: order.id,
                        carrier: "dhl".into(),
                        lines: request.clone(),
                        actor: "key_t".into(),
                    })
                    .await;
                if order.cancelled || left.is_empty() {
                    assert!(
                        matches!(result, Err(CommandError::InvalidTransition(_))),
                        "nothing to ship: {result:?}"
                    );
                    continue;
                }
                let shipment = result.expect("ship");
                assert_eq!(shipment.status, ShipmentStatus::Shipped);
                let moved: Vec<(usize, u32)> = match request {
                    Some(_) => vec![(left[0].0, 1)],
                    None => left.clone(),
                };
                for (line, qty) in moved {
                    let sku = order.lines[line].0;
                    model.orders[index].shipped[line] += qty;
                    *model.on_hand.get_mut(&sku).expect("on hand") -= qty as u64;
                    *model.reserved.get_mut(&sku).expect("reserved") -= qty as u64;
                }
                let shipped = &model.orders[index].shipped;
                let all = order.lines.iter().zip(shipped).all(|((_, q), s)| q == s);
                let view = engine.order(order.id).await.expect("order");
                assert_eq!(
                    view.status,
                    if all {
                        OrderStatus::Shipped
                    } else {
                        OrderStatus::PartiallyShipped
                    }
                );
                assert!(view.shipments.contains(&shipment.id.to_string()));
                if all {
                    // Delivering every shipment delivers the order.
                    for id in &view.shipments {
                        let id = id.parse().expect("shipment id");
                        engine
                            .shipment_event(id, ShipmentStatus::Delivered, None, "key_courier")
                            .await
                            .expect("deliver");
                    }
                    let view = engine.order(order.id).await.expect("order");
                    assert_eq!(view.status, OrderStatus::Delivered);
                    // The step is recorded with the key that reported the delivery.
                    let last = view.history.last().expect("history");
                    assert_eq!(
                        (last.status, last.actor.as_str()),
                        (OrderStatus::Delivered, "key_courier")
                    );
                }
            }
            Op::Restart { shard } => {
                engine.restart_shard(shard).await.expect("restart");
            }
        }
        // Releases of cancelled cross-shard orders travel as messages; wait for quiescence
        // by reading through every shard (replies leave after earlier work is durable).
        settle(&engine).await;
        check_stock(&engine, &model).await;
    }
    let before: Vec<u64> = {
        let mut digests = Vec::new();
        for shard in 0..SHARDS as u16 {
            digests.push(engine.state_digest(shard).await.expect("digest"));
        }
        digests
    };
    engine.shutdown().await;
    // Full recovery from storage gives the same state.
    let engine = Engine::start(config(), storage).expect("engine restarts");
    settle(&engine).await;
    for (shard, digest) in before.iter().enumerate() {
        assert_eq!(
            engine.state_digest(shard as u16).await.expect("digest"),
            *digest,
            "shard {shard} rebuilt differently"
        );
    }
    check_stock(&engine, &model).await;
    let page = engine
        .list_orders(OrderFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), model.orders.len());
    for order in &model.orders {
        let view = engine.order(order.id).await.expect("order survives");
        assert_eq!(view.lines.len(), order.lines.len());
        let shipped: u32 = order.shipped.iter().sum();
        let total: u32 = order.lines.iter().map(|(_, q)| q).sum();
        let expected = if order.cancelled {
            OrderStatus::Cancelled
        } else if shipped == 0 {
            OrderStatus::Confirmed
        } else if shipped < total {
            OrderStatus::PartiallyShipped
        } else {
            OrderStatus::Delivered
        };
        assert_eq!(view.status, expected);
    }
    // The sales summary (counters) equals a recount of the model's orders.
    let summary = engine
        .sales_summary(0, i64::MAX)
        .await
        .expect("sales summary");
    let live: Vec<&ModelOrder> = model.orders.iter().filter(|o| !o.cancelled).collect();
    assert_eq!(summary.orders, live.len() as u64);
    assert_eq!(summary.cancelled, (model.orders.len() - live.len()) as u64);
    let units: u64 = live
        .iter()
        .flat_map(|o| o.lines.iter().map(|(_, q)| *q as u64))
        .sum();
    let revenue: u64 = live
        .iter()
        .flat_map(|o| o.lines.iter().map(move |(_, q)| *q as u64 * o.price))
        .sum();
    assert_eq!(summary.units, units);
    assert_eq!(summary.revenue, revenue);
    engine.shutdown().await;
}

/// Waits until in-flight protocol messages (releases) have been applied: a few rounds of
/// reads through every shard.
async fn settle(engine: &Engine) {
    for _ in 0..3 {
        for shard in 0..SHARDS as u16 {
            let _ = engine.state_digest(shard).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        actix_rt::System::new().block_on(run(ops));
    }
}

//! Event recording benchmark (issue 19): the flash-sale and catalog placement rates with the
//! shards recording public events (`events.enabled = true`, the default) against the same
//! workload with recording off, alternating in one command, so the ratio is the cost of the
//! events on the order path (one `Notice` encoded per confirmed order, one more key per event
//! in the group write, and the `stock.low` checks).

// Parts of it serve only the other benches.
#[allow(dead_code)]
mod common;

use std::sync::Arc;

use orderd_engine::{Durability, Engine, EngineConfig, PlaceOrder};
use rand::{Rng, SeedableRng};

/// What one workload's run measured.
struct Run {
    rate: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// Bytes of shard log batches per order.
    bytes_per_order: f64,
    /// Public events written per order, and their encoded bytes per order.
    notices_per_order: f64,
    notice_bytes_per_order: f64,
}

#[derive(Clone, Copy)]
enum Workload {
    /// One hot SKU, one-line orders.
    FlashSale,
    /// 20,000 SKUs, 1-5 lines per order, SKUs drawn with a skew toward the first ones.
    Catalog,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::FlashSale => "flash-sale",
            Workload::Catalog => "catalog",
        }
    }
}

const CATALOG_SKUS: usize = 20_000;

fn sku(k: usize) -> String {
    format!("SKU-{k:06}")
}

/// Opens a fresh engine (events on or off), stocks it, and places `orders` orders through
/// [`common::drive`] (batches of 1,000, 8 in flight).
async fn run(workload: Workload, events: bool, orders: u64) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = EngineConfig::new(dir.path().to_path_buf(), shards);
    config.durability = Durability::Sync;
    config.events_enabled = events;
    let engine = Engine::open(config).expect("open");
    let customers = common::make_customers(&engine).await;
    let skus: Vec<String> = match workload {
        Workload::FlashSale => vec!["HOT-1".to_string()],
        Workload::Catalog => (0..CATALOG_SKUS).map(sku).collect(),
    };
    for s in &skus {
        engine
            .adjust_stock(s, 1_000_000_000, "bench", "bench")
            .await
            .expect("stock");
    }
    let skus = Arc::new(skus);
    let shard_count = shards as u16;
    let hot_shard = orderd_engine::state::shard_of_sku("HOT-1", shard_count);
    let make = move |i: u64| -> (u16, PlaceOrder) {
        match workload {
            Workload::FlashSale => (
                hot_shard,
                common::one_unit_order(customers[hot_shard as usize], "HOT-1"),
            ),
            Workload::Catalog => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(i);
                let wanted = rng.gen_range(1..=5);
                let mut picked: Vec<usize> = Vec::with_capacity(wanted);
                while picked.len() < wanted {
                    // Skewed: the square of a uniform draw favours the first SKUs.
                    let u: f64 = rng.gen();
                    let k = ((u * u) * CATALOG_SKUS as f64) as usize % CATALOG_SKUS;
                    if !picked.contains(&k) {
                        picked.push(k);
                    }
                }
                let shard = (i % shard_count as u64) as u16;
                (
                    shard,
                    common::catalog_order(customers[shard as usize], &skus, picked),
                )
            }
        }
    };
    let make = Arc::new(make);
    let driven = common::drive(&engine, orders, make).await;
    engine.shutdown().await;
    assert_eq!(
        driven.confirmed, orders,
        "every order is stocked: a refusal is a bug"
    );
    Run {
        rate: orders as f64 / driven.elapsed.as_secs_f64(),
        p99_ms: driven.latency.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: driven.latency.value_at_quantile(0.999) as f64 / 1000.0,
        max_ms: driven.latency.max() as f64 / 1000.0,
        bytes_per_order: driven.log.bytes as f64 / orders.max(1) as f64,
        notices_per_order: driven.log.notices as f64 / orders.max(1) as f64,
        notice_bytes_per_order: driven.log.notice_bytes as f64 / orders.max(1) as f64,
    }
}

fn main() {
    let mut orders: u64 = 1_000_000;
    let mut rounds = 3;
    let raw: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < raw.len() {
        match raw[i].as_str() {
            "--orders" => {
                orders = raw[i + 1].parse().expect("--orders N");
                i += 1;
            }
            "--rounds" => {
                rounds = raw[i + 1].parse().expect("--rounds N");
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    println!("# event recording: {orders} orders per run, {rounds} rounds of (on, off) alternating, sync durability");
    println!("# command: cargo test --release --workspace --bench events -- --orders {orders} --rounds {rounds}");
    println!("| workload | round | events on: orders/s | off: orders/s | on/off | p99 on/off ms | p99.9 on/off ms | max on/off ms | log bytes/order on/off | events/order, event bytes/order (on) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let system = actix_rt::System::new();
    system.block_on(async move {
        for workload in [Workload::FlashSale, Workload::Catalog] {
            let mut ratios = Vec::new();
            for round in 0..rounds {
                // Alternate which goes first, so a drift of the machine does not favour one.
                let (on, off) = if round % 2 == 0 {
                    let on = run(workload, true, orders).await;
                    (on, run(workload, false, orders).await)
                } else {
                    let off = run(workload, false, orders).await;
                    (run(workload, true, orders).await, off)
                };
                let ratio = on.rate / off.rate;
                ratios.push(ratio);
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.3} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {:.2}, {:.0} |",
                    workload.name(),
                    round + 1,
                    on.rate,
                    off.rate,
                    ratio,
                    on.p99_ms,
                    off.p99_ms,
                    on.p999_ms,
                    off.p999_ms,
                    on.max_ms,
                    off.max_ms,
                    on.bytes_per_order,
                    off.bytes_per_order,
                    on.notices_per_order,
                    on.notice_bytes_per_order,
                );
                assert_eq!(off.notices_per_order, 0.0, "recording off writes no events");
            }
            ratios.sort_by(|a, b| a.total_cmp(b));
            println!(
                "| {} | range | | | {:.3} – {:.3} | | | | | |",
                workload.name(),
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
    });
}

//! Longevity benchmark (issue 18): a year of orders on one node. Places N orders in batches
//! and cancels each one (so it ends), with `engine.hot_retention_s` short (1 s) and the cold
//! tier sweeping every 50 ms (at most 4,000 orders a sweep), and reports resident memory as the orders pile up: it must stay
//! flat after the first sweeps, where the same run with every order kept in memory (the
//! baseline, N orders up to 2,000,000, in the same command) grows by its bytes per order. Beside it:
//! the one-order latency seen by a probe while sweeps and snapshots run (p50/p99/p99.9/max,
//! against the probe of the baseline run), the restart time of the N-order store (only hot
//! state and the log after the newest snapshot are read), and reads of cold orders: one by id
//! and a page of one customer's cold orders.
//!
//! Run: `make bench` (or `cargo test --release --workspace --bench longevity -- --orders N`);
//! `ops/measure-restart.sh --longevity N` keeps the store, left as a crash leaves it
//! (`--keep-dir DIR --crash`), and times the real `orderd`'s restart on it.

// Parts of it serve only the other benches.
#[allow(dead_code)]
mod common;

use common::{one_unit_order, rss_bytes};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orderd_engine::shard::ColdSettings;
use orderd_engine::state::shard_of_key;
use orderd_engine::{
    CustomerId, Durability, Engine, EngineConfig, Idempotency, OrderFilter, OrderId, PlaceOrder,
};

const BATCH: usize = 1000;
const IN_FLIGHT: usize = 8;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What the command line changes from the server's defaults.
#[derive(Clone, Copy)]
struct Tuning {
    wal_max_bytes: Option<u64>,
    snapshot_interval_events: Option<u64>,
}

fn config(dir: &std::path::Path, shards: usize, cold: bool, tuning: Tuning) -> EngineConfig {
    let mut config = EngineConfig::new(dir.to_path_buf(), shards);
    if let Some(bytes) = tuning.wal_max_bytes {
        config.wal_max_bytes = bytes;
    }
    config.durability = Durability::Sync;
    if cold {
        // The server's default snapshot interval unless `--snapshot-interval-events`: it
        // bounds the log replayed at a restart. The baseline snapshots less often (its
        // snapshots are whole-state).
        if let Some(events) = tuning.snapshot_interval_events {
            config.snapshot_interval_events = events;
        }
        config.cold = ColdSettings {
            hot_retention_s: 1,
            sweep_interval_ms: 50,
            sweep_orders_max: 4_000,
        };
        config.idempotency_hot_s = 1;
    } else {
        config.snapshot_interval_events = 1_000_000;
    }
    config
}

/// One customer and one SKU per shard, each on that shard (every order stays on its shard).
async fn setup(engine: &Engine) -> Vec<(CustomerId, String)> {
    let shards = engine.shard_count();
    let customers = common::make_customers(engine).await;
    let mut skus = vec![None; shards];
    let mut n = 0;
    while skus.iter().any(Option::is_none) {
        let sku = format!("LONG-{n}");
        n += 1;
        let shard = orderd_engine::state::shard_of_sku(&sku, shards as u16) as usize;
        if skus[shard].is_none() {
            engine
                .adjust_stock(&sku, 1_000_000_000_000, "bench", "bench")
                .await
                .expect("stock");
            skus[shard] = Some(sku);
        }
    }
    customers
        .into_iter()
        .zip(skus)
        .map(|(c, s)| (c, s.unwrap()))
        .collect()
}

/// Places a batch on `shard` and cancels every order of it; the ids.
async fn place_and_end(
    engine: Engine,
    shard: u16,
    customer: CustomerId,
    sku: String,
) -> Vec<OrderId> {
    let places = (0..BATCH).map(|_| one_unit_order(customer, &sku)).collect();
    let ids: Vec<OrderId> = engine
        .place_batch(shard, places)
        .await
        .expect("batch")
        .into_iter()
        .map(|r| r.expect("placed"))
        .collect();
    let cancels: Vec<_> = ids
        .iter()
        .map(|id| {
            let engine = engine.clone();
            let id = *id;
            actix_rt::spawn(async move { engine.cancel_order(id, None, "bench").await })
        })
        .collect();
    for cancel in cancels {
        cancel.await.expect("task").expect("cancel");
    }
    ids
}

struct Outcome {
    /// (orders placed, resident bytes, orders in shard memory)
    samples: Vec<(u64, u64, u64)>,
    probe: Histogram<u64>,
    elapsed: Duration,
    some_ids: Vec<OrderId>,
    customer: CustomerId,
}

async fn run(engine: &Engine, total: u64, sample_every: u64) -> Outcome {
    let targets = setup(engine).await;
    let shards = targets.len() as u16;
    // The probe: one-order requests back to back on shard 0, all the run long.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (engine, stop) = (engine.clone(), stop.clone());
        let (customer, sku) = targets[0].clone();
        actix_rt::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let id = engine
                    .place_order(one_unit_order(customer, &sku))
                    .await
                    .expect("probe")
                    .id;
                latency.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                engine
                    .cancel_order(id, None, "probe")
                    .await
                    .expect("probe cancel");
                actix_rt::time::sleep(Duration::from_millis(2)).await;
            }
            latency
        })
    };
    let started = Instant::now();
    let mut samples = vec![(0, rss_bytes(), 0)];
    let mut placed = 0u64;
    let mut next_sample = sample_every;
    let mut some_ids = Vec::new();
    let mut batch = 0u64;
    while placed < total {
        let mut wave = Vec::new();
        for _ in 0..IN_FLIGHT {
            let shard = (batch % shards as u64) as u16;
            batch += 1;
            let (customer, sku) = targets[shard as usize].clone();
            wave.push(actix_rt::spawn(place_and_end(
                engine.clone(),
                shard,
                customer,
                sku,
            )));
        }
        for task in wave {
            let ids = task.await.expect("task");
            if some_ids.len() < 10_000 {
                some_ids.extend(ids.iter().step_by(97).copied());
            }
            placed += ids.len() as u64;
        }
        if placed >= next_sample {
            next_sample += sample_every;
            let hot: u64 = engine.shards().await.iter().map(|s| s.orders).sum();
            samples.push((placed, rss_bytes(), hot));
        }
    }
    let elapsed = started.elapsed();
    // Let the last sweeps run, then a final sample.
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    let hot: u64 = engine.shards().await.iter().map(|s| s.orders).sum();
    samples.push((placed, rss_bytes(), hot));
    stop.store(true, Ordering::Relaxed);
    let probe = probe.await.expect("probe");
    Outcome {
        samples,
        probe,
        elapsed,
        some_ids,
        customer: targets[0].0,
    }
}

fn keyed(customer: CustomerId, sku: &str, key: String) -> PlaceOrder {
    let mut place = one_unit_order(customer, sku);
    place.idempotency = Some(Idempotency {
        key,
        request_hash: 7,
    });
    place
}

/// Keys that route their order to `shard` (where the customer and SKU are): one-shard orders,
/// as the unkeyed ones are.
fn keys_for(shard: u16, shards: u16, prefix: &str, count: usize) -> Vec<String> {
    (0u64..)
        .map(|n| format!("{prefix}-{n}"))
        .filter(|key| shard_of_key(key, shards) == shard)
        .take(count)
        .collect()
}

/// What idempotency keys on disk cost the served path. 100,000 keyed orders are placed, and
/// their keys move to the `idem` family (idempotency_hot_s = 1). Then, in three alternating
/// rounds, batches of orders without a key and batches with fresh keys (each new key is looked
/// up in memory and then in the family, whose bloom filter answers "absent" without a block
/// read): orders/s of each and the ratio. Last, one-order retries answered from memory (keys
/// just used) and from disk (a block read): latency of each.
async fn idempotency_on_disk(engine: &Engine, customer: CustomerId, shards: u16) {
    let shard = customer.shard();
    let sku = {
        let mut n = 0;
        loop {
            let sku = format!("IDEM-{n}");
            if orderd_engine::state::shard_of_sku(&sku, shards) == shard {
                break sku;
            }
            n += 1;
        }
    };
    engine
        .adjust_stock(&sku, 1_000_000_000_000, "bench", "bench")
        .await
        .expect("stock");
    let old_keys = keys_for(shard, shards, "old", 100_000);
    for chunk in old_keys.chunks(BATCH) {
        let places = chunk
            .iter()
            .map(|key| keyed(customer, &sku, key.clone()))
            .collect();
        for outcome in engine.place_orders(places).await {
            outcome.expect("keyed order");
        }
    }
    // The sweeps move the keys to disk a second after use.
    actix_rt::time::sleep(Duration::from_millis(3000)).await;
    let fresh = keys_for(shard, shards, "fresh", 3 * 20 * BATCH);
    let mut fresh = fresh.chunks(BATCH);
    let (mut plain_s, mut keyed_s) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..20 {
            let places = (0..BATCH).map(|_| one_unit_order(customer, &sku)).collect();
            for outcome in engine.place_orders(places).await {
                outcome.expect("order");
            }
        }
        plain_s.push(20.0 * BATCH as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        for _ in 0..20 {
            let places = fresh
                .next()
                .expect("keys")
                .iter()
                .map(|key| keyed(customer, &sku, key.clone()))
                .collect();
            for outcome in engine.place_orders(places).await {
                outcome.expect("keyed order");
            }
        }
        keyed_s.push(20.0 * BATCH as f64 / started.elapsed().as_secs_f64());
    }
    let mut from_disk = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut from_memory = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let recent = keys_for(shard, shards, "fresh", 2_000);
    for (old, recent) in old_keys.iter().step_by(50).zip(&recent) {
        for (key, histogram) in [(old, &mut from_disk), (recent, &mut from_memory)] {
            let sent = Instant::now();
            engine
                .place_order(keyed(customer, &sku, key.clone()))
                .await
                .expect("retry answered");
            histogram.saturating_record((sent.elapsed().as_micros() as u64).max(1));
        }
    }
    println!();
    println!("## Idempotency keys on disk (100,000 keys used 3 s before, idempotency_hot_s = 1)");
    println!("| round | orders/s without a key | orders/s with a fresh key | ratio |");
    println!("|---|---:|---:|---:|");
    for (round, (plain, keyed)) in plain_s.iter().zip(&keyed_s).enumerate() {
        println!(
            "| {} | {plain:.0} | {keyed:.0} | {:.2} |",
            round + 1,
            keyed / plain
        );
    }
    println!();
    println!("| retry answered (µs) | count | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    print_probe("from memory (key just used)", &from_memory);
    print_probe("from the idem family (key on disk)", &from_disk);
}

fn print_probe(name: &str, h: &Histogram<u64>) {
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    let total: u64 = raw
        .iter()
        .position(|a| a == "--orders")
        .and_then(|i| raw.get(i + 1))
        .map_or(20_000_000, |v| v.parse().expect("--orders N"));
    // `--keep-dir DIR`: the cold run's store goes in DIR and is kept (ops/measure-restart.sh
    // starts the real `orderd` on it). `--crash`: after the cold reads the process exits at once,
    // with no clean stop (no memtable flush), as a crash leaves the store; no in-process restart
    // and no baseline then. `--no-baseline`: skip the all-in-memory run. `--wal-max-bytes N`:
    // RocksDB's write-ahead-log bound (`storage.wal_max_bytes`; 0 is RocksDB's own).
    // `--snapshot-interval-events N`: the cold run's `engine.snapshot_interval_events`.
    let keep_dir = raw
        .iter()
        .position(|a| a == "--keep-dir")
        .and_then(|i| raw.get(i + 1))
        .map(std::path::PathBuf::from);
    let crash = raw.iter().any(|a| a == "--crash");
    let wal_max_bytes: Option<u64> = raw
        .iter()
        .position(|a| a == "--wal-max-bytes")
        .and_then(|i| raw.get(i + 1))
        .map(|v| v.parse().expect("--wal-max-bytes N"));
    let snapshot_interval_events: Option<u64> = raw
        .iter()
        .position(|a| a == "--snapshot-interval-events")
        .and_then(|i| raw.get(i + 1))
        .map(|v| v.parse().expect("--snapshot-interval-events N"));
    let tuning = Tuning {
        wal_max_bytes,
        snapshot_interval_events,
    };
    let no_baseline = crash || raw.iter().any(|a| a == "--no-baseline");
    let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The baseline places as many orders as the cold run where memory allows (about 1 KB
    // each), so the probes of both see the same length of run; past 2,000,000 it stops there.
    let baseline_total = total.clamp(100_000, 2_000_000);
    println!("# orderd longevity benchmark: durability=sync, shards={shards}, {BATCH} orders per batch, {IN_FLIGHT} in flight, each order cancelled after placement");
    println!(
        "# command: cargo test --release --workspace --bench longevity -- --orders {total}  (baseline: {baseline_total} orders with every order kept in memory)"
    );
    let system = actix_rt::System::new();
    system.block_on(async move {
        // The cold tier on (hot_retention_s = 1), first: the process's heap is fresh.
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = keep_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
        let engine = Engine::open(config(&dir, shards, true, tuning)).expect("open");
        let cold = run(&engine, total, (total / 10).max(1)).await;
        println!();
        println!("## Cold tier: {total} orders, hot_retention_s = 1 (placed and ended in {:.1} s, {:.0} orders/s)", cold.elapsed.as_secs_f64(), total as f64 / cold.elapsed.as_secs_f64());
        println!("| orders placed | resident MiB | orders in memory |");
        println!("|---:|---:|---:|");
        for (orders, rss, hot) in &cold.samples {
            println!("| {orders} | {:.0} | {hot} |", mib(*rss));
        }
        let after_first = cold.samples.get(1).map_or(0, |s| s.1);
        let last = cold.samples.last().unwrap().1;
        let later = total - (total / 10).max(1);
        println!(
            "resident at the end: {:.0} MiB; growth after the first sample: {:+.0} MiB ({:.2} B per order over the last {later} orders)",
            mib(last),
            (last as f64 - after_first as f64) / (1024.0 * 1024.0),
            (last as f64 - after_first as f64) / later.max(1) as f64,
        );

        // Reads of cold orders.
        let mut by_id = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for id in &cold.some_ids {
            let sent = Instant::now();
            let view = engine.order(*id).await.expect("cold order");
            by_id.saturating_record((sent.elapsed().as_micros() as u64).max(1));
            assert_eq!(view.id, *id);
        }
        let mut pages = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut after = None;
        for _ in 0..200 {
            let sent = Instant::now();
            let page = engine
                .list_orders(OrderFilter {
                    customer_id: Some(cold.customer),
                    status: None,
                    limit: 50,
                    after,
                })
                .await
                .expect("page");
            pages.saturating_record((sent.elapsed().as_micros() as u64).max(1));
            assert_eq!(page.items.len(), 50);
            after = page.next;
        }
        println!();
        println!("## Reads of cold orders (µs)");
        println!("| read | count | p50 | p99 | p99.9 | max |");
        println!("|---|---:|---:|---:|---:|---:|");
        print_probe("GET one cold order by id", &by_id);
        print_probe("a page of 50 of one customer's orders (cold)", &pages);

        idempotency_on_disk(&engine, cold.customer, shards as u16).await;

        if crash {
            println!();
            println!("## Exit without a clean stop (--crash): the store is left as a crash leaves it");
            std::process::exit(0);
        }
        // Restart: only hot state and the log after the newest snapshot are read.
        engine.shutdown().await;
        drop(engine);
        let started = Instant::now();
        let engine = Engine::open(config(&dir, shards, true, tuning)).expect("reopen");
        let hot: u64 = engine.shards().await.iter().map(|s| s.orders).sum();
        println!();
        println!(
            "## Restart of the {total}-order store: ready in {:.2} s, {hot} orders in memory",
            started.elapsed().as_secs_f64()
        );
        engine.shutdown().await;
        drop(engine);
        drop(temp);
        if no_baseline {
            return;
        }

        // Baseline: every order stays in memory (a tenth of the orders).
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(config(dir.path(), shards, false, tuning)).expect("open");
        let base = run(&engine, baseline_total, baseline_total).await;
        engine.shutdown().await;
        drop(engine);
        let grown = base.samples.last().unwrap().1.saturating_sub(base.samples[0].1);
        let per_order = grown as f64 / baseline_total as f64;
        println!();
        println!("## Baseline: {baseline_total} orders, all in memory (after the cold run, in the same process)");
        println!(
            "resident {:.0} MiB → {:.0} MiB: {per_order:.0} B per order; at {total} orders that is {:.0} MiB",
            mib(base.samples[0].1),
            mib(base.samples.last().unwrap().1),
            per_order * total as f64 / (1024.0 * 1024.0)
        );
        println!();
        println!("## One-order probe while the orders pile up (µs)");
        println!("| run | probes | p50 | p99 | p99.9 | max |");
        println!("|---|---:|---:|---:|---:|---:|");
        print_probe("baseline (all in memory)", &base.probe);
        print_probe("cold tier (sweeps every 50 ms)", &cold.probe);
        println!(
            "p99 ratio cold ÷ baseline: {:.2}",
            cold.probe.value_at_quantile(0.99) as f64 / base.probe.value_at_quantile(0.99).max(1) as f64
        );
    });
}

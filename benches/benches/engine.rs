//! Engine benchmark: in-process placement with `sync` durability, flash sale and catalog, with
//! a raw-RocksDB baseline (sync=true puts of the same bytes in the same write sizes) measured in
//! the same run, plus recovery time and resident memory per live order, and backups of the
//! flash-sale store (take, incremental, off-site copy, restore drill, restore) against a plain
//! copy of the same files, with the order latency seen while a backup runs; and the cost of
//! allocating across stock locations (several locations with split lines against the same
//! orders with only `default`, in the same run).
//!
//! Run: `make bench` (or `cargo test --release --workspace --bench engine -- [--orders N]`;
//! `--locations-only` runs only the locations comparison).

mod common;

use common::{
    catalog_order, drive, latency_histogram, make_customers, one_unit_order, rss_bytes, Run,
    BATCH_ORDERS, IN_FLIGHT_BATCHES,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orderd_engine::{
    CustomerId, Durability, Engine, EngineConfig, LogCounters, NewLine, PlaceOrder,
};
use rand::{Rng, SeedableRng};

struct Args {
    /// Keep the flash-sale data directory here (for `ops/measure-restart.sh`).
    keep_dir: Option<std::path::PathBuf>,
    flash_orders: u64,
    catalog_orders: u64,
    skus: usize,
    /// Only the locations comparison (`--locations-only`).
    locations_only: bool,
}

fn args() -> Args {
    let mut args = Args {
        keep_dir: None,
        flash_orders: 2_000_000,
        catalog_orders: 600_000,
        skus: 100_000,
        locations_only: false,
    };
    let raw: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < raw.len() {
        match raw[i].as_str() {
            "--orders" => {
                args.flash_orders = raw[i + 1].parse().expect("--orders N");
                args.catalog_orders = args.flash_orders / 3;
                i += 1;
            }
            "--keep-dir" => {
                args.keep_dir = Some(raw[i + 1].clone().into());
                i += 1;
            }
            "--locations-only" => args.locations_only = true,
            "--skus" => {
                args.skus = raw[i + 1].parse().expect("--skus N");
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    args
}

fn config(dir: &std::path::Path, shards: usize) -> EngineConfig {
    let mut config = EngineConfig::new(dir.to_path_buf(), shards);
    config.durability = Durability::Sync;
    config.mailbox_capacity = 100_000;
    config.snapshot_interval_events = 1_000_000;
    config
}

/// Places one-order requests back to back until `done()`; their latencies in microseconds, and
/// when each one slower than 20 ms was sent.
async fn probe(
    engine: &Engine,
    sku: &str,
    customer: CustomerId,
    done: impl Fn() -> bool,
) -> (Histogram<u64>, Vec<(Instant, u64)>) {
    let mut latency = latency_histogram();
    let mut slow = Vec::new();
    while !done() {
        let sent = Instant::now();
        engine
            .place_order(one_unit_order(customer, sku))
            .await
            .expect("probe order");
        let us = (sent.elapsed().as_micros() as u64).max(1);
        if us > 20_000 {
            slow.push((sent, us));
        }
        latency.record(us).expect("latency within bounds");
    }
    (latency, slow)
}

/// Remembers when each phase of a backup began.
#[derive(Default)]
struct Phases(std::sync::Mutex<Vec<(Instant, String)>>);

impl orderd_engine::backup::Progress for Phases {
    fn phase(&self, name: &str, _total: u64) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), name.to_string()));
    }
    fn advance(&self, _done: u64) {}
}

/// Copies a directory tree file by file: the baseline of a backup's copy.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> u64 {
    std::fs::create_dir_all(to).expect("create copy dir");
    let mut bytes = 0;
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            bytes += copy_tree(&entry.path(), &target);
        } else {
            bytes += std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
    let _ = std::fs::File::open(to).and_then(|d| d.sync_all());
    bytes
}

/// Backups of the store under `data_dir` while `engine` serves it, each step timed.
async fn bench_backups(
    engine: &Engine,
    data_dir: &std::path::Path,
    hot: &str,
    customer: CustomerId,
) {
    use orderd_engine::backup::{NoProgress, Repo};
    let root = tempfile::tempdir().expect("tempdir");
    // As the server does: shards are rebuilt by a child `orderd` (built by `make bench`).
    let orderd = std::env::current_exe()
        .expect("bench binary")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("orderd");
    assert!(
        orderd.is_file(),
        "{} missing: run `make bench`",
        orderd.display()
    );
    // Any key signs: the bench reads back only what it wrote.
    let keys = orderd_engine::backup::ManifestKeys::new(
        orderd_engine::backup::ManifestKey::derive([1; 8], &[1; 32]),
        [],
    );
    let repo = Repo::new(root.path().join("backups"), keys.clone()).with_digester(Arc::new(
        orderd_control::backups::ChildDigester { exe: orderd },
    ));
    // Order latency with no backup, then while one runs.
    let until = Instant::now() + Duration::from_secs(2);
    let (quiet, _) = probe(engine, hot, customer, || Instant::now() >= until).await;
    let phases = Arc::new(Phases::default());
    let worker_phases = phases.clone();
    let storage = engine.storage();
    let acknowledged = engine.durable_seqs();
    let checkpoint = data_dir.join("backup-checkpoint");
    let worker_repo = repo.clone();
    let worker = std::thread::spawn(move || {
        // As the server's backup worker does.
        orderd_engine::backup::lower_thread_priority();
        let started = Instant::now();
        let manifest = worker_repo
            .create(
                storage.as_ref(),
                &checkpoint,
                &acknowledged,
                &[],
                None,
                worker_phases.as_ref(),
            )
            .expect("backup");
        (manifest, started.elapsed())
    });
    let (busy, slow) = probe(engine, hot, customer, || worker.is_finished()).await;
    let (manifest, took) = worker.join().expect("backup thread");
    let phases = phases.0.lock().unwrap().clone();
    let phase_at = |at: Instant| {
        phases
            .iter()
            .rev()
            .find(|(start, _)| *start <= at)
            .map_or("before checkpoint", |(_, name)| name.as_str())
    };
    let slow: Vec<String> = slow
        .iter()
        .map(|(at, us)| format!("{:.0} ms in {}", *us as f64 / 1000.0, phase_at(*at)))
        .collect();
    println!(
        "| backup: slow orders | {} one-order requests over 20 ms while it ran: {} |",
        slow.len(),
        slow.join(", ")
    );
    let started = Instant::now();
    let copied = copy_tree(&data_dir.join("db"), &root.path().join("plain-copy"));
    let plain = started.elapsed();
    let orders: u64 = manifest.shards.iter().map(|s| s.orders).sum();
    println!(
        "| backup | {orders} orders, {} files, {:.0} MiB: {:.2} s (checkpoint, rebuild of every shard for the digests, BackupEngine copy, SHA-256 of every file); plain copy of the store ({:.0} MiB) {:.2} s (baseline); ratio {:.1}x |",
        manifest.files.len(),
        manifest.size_bytes as f64 / 1048576.0,
        took.as_secs_f64(),
        copied as f64 / 1048576.0,
        plain.as_secs_f64(),
        took.as_secs_f64() / plain.as_secs_f64().max(1e-9)
    );
    println!(
        "| backup: orders meanwhile | one-order requests while the backup ran: {} orders, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; with no backup: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms |",
        busy.len(),
        busy.value_at_quantile(0.5) as f64 / 1000.0,
        busy.value_at_quantile(0.99) as f64 / 1000.0,
        busy.max() as f64 / 1000.0,
        quiet.value_at_quantile(0.5) as f64 / 1000.0,
        quiet.value_at_quantile(0.99) as f64 / 1000.0,
        quiet.max() as f64 / 1000.0,
    );
    let started = Instant::now();
    let second = repo
        .create(
            engine.storage().as_ref(),
            &data_dir.join("backup-checkpoint"),
            &engine.durable_seqs(),
            &[],
            None,
            &NoProgress,
        )
        .expect("second backup");
    println!(
        "| backup, incremental | {:.2} s; {:.1} MiB new of {:.0} MiB |",
        started.elapsed().as_secs_f64(),
        second.new_bytes as f64 / 1048576.0,
        second.size_bytes as f64 / 1048576.0
    );
    let offsite = orderd_control::offsite::Offsite::open(
        root.path().join("offsite").to_str().expect("utf-8 path"),
        3,
        Duration::from_millis(100),
        keys,
    )
    .expect("off-site store");
    let started = Instant::now();
    // The off-site store blocks on its own runtime: not from inside actix's.
    let upload_dir = repo.dir().to_path_buf();
    let upload_manifest = manifest.clone();
    std::thread::spawn(move || {
        offsite
            .upload(&upload_dir, &upload_manifest, &NoProgress)
            .expect("upload")
    })
    .join()
    .expect("upload thread");
    println!(
        "| backup: off-site copy | first backup to a local directory through object_store: {:.2} s |",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let report = repo.verify(&manifest.id, &NoProgress).expect("verify");
    assert!(report.verified, "{}", report.detail);
    println!(
        "| backup: restore drill | {:.2} s (SHA-256 of every file, restore to scratch, rebuild every shard, compare digests) |",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    repo.restore(
        &manifest.id,
        &root.path().join("restored"),
        orderd_engine::backup::RestoreOptions::default(),
        &NoProgress,
    )
    .expect("restore");
    println!(
        "| backup: restore | {:.2} s into a new data directory (same checks as the drill, then the move into place) |",
        started.elapsed().as_secs_f64()
    );
}

/// Raw RocksDB with sync=true: the same number of bytes in the same write sizes as the
/// engine's group commits. What storage alone costs.
fn baseline(dir: &std::path::Path, run: &Run) -> Duration {
    let db = rocksdb::DB::open_default(dir).expect("open baseline db");
    let writes = run.log.writes.max(1);
    let bytes_per_write = (run.log.bytes / writes).max(1) as usize;
    let value = vec![0x5au8; bytes_per_write];
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    let started = Instant::now();
    for i in 0..writes {
        db.put_opt(i.to_be_bytes(), &value, &options)
            .expect("baseline put");
    }
    started.elapsed()
}

fn report(name: &str, run: &Run, base: Duration) {
    let secs = run.elapsed.as_secs_f64();
    let rate = run.orders as f64 / secs;
    let base_rate = run.orders as f64 / base.as_secs_f64();
    println!(
        "| {name} | {:.0} orders/s | p50/p99/p99.9 {:.1}/{:.1}/{:.1} ms | {} of {} confirmed | {:.0} fsync/s | {:.0} events/batch | {:.0} events/fsync | {:.0} B/order | baseline raw RocksDB {:.0} orders-equivalent/s | engine/baseline {:.2} |",
        rate,
        run.latency.value_at_quantile(0.50) as f64 / 1000.0,
        run.latency.value_at_quantile(0.99) as f64 / 1000.0,
        run.latency.value_at_quantile(0.999) as f64 / 1000.0,
        run.confirmed,
        run.orders,
        run.log.syncs as f64 / secs,
        run.log.events as f64 / run.log.batches.max(1) as f64,
        run.log.events as f64 / run.log.syncs.max(1) as f64,
        run.log.bytes as f64 / run.orders as f64,
        base_rate,
        rate / base_rate,
    );
}

/// SKUs of the locations comparison.
const LOCATION_SKUS: usize = 2_000;
/// Stock locations besides `default` in the located run, priorities 1 to 4.
const LOCATIONS: [&str; 4] = ["wh-1", "wh-2", "wh-3", "wh-4"];

/// One run of the locations comparison on a fresh engine: `orders` orders of 1–3 lines of 1–3
/// units over [`LOCATION_SKUS`] SKUs. `located`: every SKU's stock is spread over four
/// locations by priority, the first three holding a quarter of what the run takes each, so
/// lines are allocated over up to four buckets and split where one runs out, and every order
/// keeps its allocation; otherwise all of it is at `default` (no buckets, no allocation kept).
async fn locations_run(shards: usize, orders: u64, located: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(config(dir.path(), shards)).expect("open");
    let customers = make_customers(&engine).await;
    if located {
        for (i, id) in LOCATIONS.iter().enumerate() {
            engine
                .set_location(id, id, 1 + i as u32, 64, "bench")
                .await
                .expect("location");
        }
    }
    let skus: Arc<Vec<String>> =
        Arc::new((0..LOCATION_SKUS).map(|i| format!("LOC-{i:05}")).collect());
    // Units a SKU gives in the run, on average: 2 lines of 2 units per order.
    let taken = (orders * 4 / LOCATION_SKUS as u64).max(4);
    let mut setup = Vec::new();
    for chunk in skus.chunks(LOCATION_SKUS.div_ceil(32)) {
        let engine = engine.clone();
        let chunk = chunk.to_vec();
        setup.push(actix_rt::spawn(async move {
            for sku in chunk {
                if located {
                    for (i, location) in LOCATIONS.iter().enumerate() {
                        let units = if i < 3 {
                            taken as i64 / 4 + 1
                        } else {
                            1_000_000_000
                        };
                        engine
                            .adjust_stock_at(sku.as_str(), location, units, "bench", "bench", None)
                            .await
                            .expect("stock");
                    }
                } else {
                    engine
                        .adjust_stock(&sku, 1_000_000_000, "bench", "bench")
                        .await
                        .expect("stock");
                }
            }
        }));
    }
    for task in setup {
        task.await.expect("setup");
    }
    let shard_count = shards as u16;
    let make: Arc<dyn Fn(u64) -> (u16, PlaceOrder) + Send + Sync> = Arc::new(move |i| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(i ^ 0x10c);
        let lines_wanted = rng.gen_range(1..=3);
        let mut picked: Vec<usize> = Vec::with_capacity(lines_wanted);
        while picked.len() < lines_wanted {
            let k = rng.gen_range(0..LOCATION_SKUS);
            if !picked.contains(&k) {
                picked.push(k);
            }
        }
        let shard = (i % shard_count as u64) as u16;
        (
            shard,
            PlaceOrder {
                refusal: None,
                customer_id: customers[shard as usize],
                lines: picked
                    .into_iter()
                    .map(|k| NewLine {
                        sku: skus[k].clone(),
                        qty: rng.gen_range(1..=3),
                        unit_price: 500,
                    })
                    .collect(),
                shipping_address: None,
                note: None,
                idempotency: None,
                actor: "bench".into(),
            },
        )
    });
    let run = drive(&engine, orders, make).await;
    engine.shutdown().await;
    run
}

/// The locations comparison: the same orders with four locations and with `default` only,
/// alternated twice (best of two each, the machine being noisy), and their ratio.
async fn bench_locations(shards: usize, orders: u64) {
    let mut plain_best = Duration::MAX;
    let mut located_best = Duration::MAX;
    let mut confirmed = (0, 0);
    for _ in 0..2 {
        let plain = locations_run(shards, orders, false).await;
        plain_best = plain_best.min(plain.elapsed);
        confirmed.0 = plain.confirmed;
        let located = locations_run(shards, orders, true).await;
        located_best = located_best.min(located.elapsed);
        confirmed.1 = located.confirmed;
    }
    let rate = |d: Duration| orders as f64 / d.as_secs_f64();
    println!(
        "| locations | {} orders of 1-3 lines over {} SKUs: 4 locations by priority, lines split where one runs out, allocation kept per order: {:.0} orders/s ({} confirmed); `default` only (baseline): {:.0} orders/s ({} confirmed); located/baseline {:.2} |",
        orders,
        LOCATION_SKUS,
        rate(located_best),
        confirmed.1,
        rate(plain_best),
        confirmed.0,
        rate(located_best) / rate(plain_best),
    );
}

struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let x = rng.gen::<f64>() * self.cumulative.last().copied().unwrap_or(1.0);
        self.cumulative.partition_point(|c| *c < x)
    }
}

fn main() {
    let args = args();
    let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("# orderd engine benchmark: durability=sync, shards={shards}, {BATCH_ORDERS} orders per message, {IN_FLIGHT_BATCHES} messages in flight");
    println!(
        "# command: make bench BENCH_ORDERS={}  (cargo test --release --workspace --bench engine -- --orders {})",
        args.flash_orders, args.flash_orders
    );
    let system = actix_rt::System::new();
    system.block_on(async move {
        let location_orders = (args.catalog_orders / 2).max(10_000);
        if args.locations_only {
            bench_locations(shards, location_orders).await;
            return;
        }
        // Flash sale: one hot SKU, one-line orders.
        let temp = tempfile::tempdir().expect("tempdir");
        let flash_dir = args.keep_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
        let engine = Engine::open(config(&flash_dir, shards)).expect("open");
        let customers = make_customers(&engine).await;
        let hot = "HOT-1";
        engine
            .adjust_stock(hot, 1_000_000_000_000, "bench", "bench")
            .await
            .expect("stock");
        let hot_shard = orderd_engine::state::shard_of_sku(hot, shards as u16);
        let customer = customers[hot_shard as usize];
        let make: Arc<dyn Fn(u64) -> (u16, PlaceOrder) + Send + Sync> = Arc::new(move |_i| {
            (hot_shard, one_unit_order(customer, hot))
        });
        // Two halves: the resident memory that the second half adds, per order, is the cost
        // of one more live order (RocksDB's memtables and caches are bounded and already
        // full by then).
        let rss_start = rss_bytes();
        let first = drive(&engine, args.flash_orders / 2, make.clone()).await;
        let rss_mid = rss_bytes();
        let second = drive(&engine, args.flash_orders - args.flash_orders / 2, make).await;
        let rss_end = rss_bytes();
        let flash = Run {
            orders: first.orders + second.orders,
            confirmed: first.confirmed + second.confirmed,
            elapsed: first.elapsed + second.elapsed,
            log: LogCounters {
                syncs: first.log.syncs + second.log.syncs,
                writes: first.log.writes + second.log.writes,
                batches: first.log.batches + second.log.batches,
                events: first.log.events + second.log.events,
                bytes: first.log.bytes + second.log.bytes,
                notices: first.log.notices + second.log.notices,
                notice_bytes: first.log.notice_bytes + second.log.notice_bytes,
                write_failures: first.log.write_failures + second.log.write_failures,
            },
            latency: {
                let mut latency = first.latency;
                latency.add(&second.latency).expect("merge histograms");
                latency
            },
        };
        let base_dir = tempfile::tempdir().expect("tempdir");
        let base = baseline(base_dir.path(), &flash);
        report("flash-sale", &flash, base);
        println!(
            "| memory | {:.0} bytes resident per additional live order (second half: {} orders, RSS {} MiB -> {} MiB); {:.0} bytes per order over the whole run (RSS {} MiB at start, includes RocksDB memtables) |",
            rss_end.saturating_sub(rss_mid) as f64 / second.confirmed.max(1) as f64,
            second.confirmed,
            rss_mid >> 20,
            rss_end >> 20,
            rss_end.saturating_sub(rss_start) as f64 / flash.confirmed.max(1) as f64,
            rss_start >> 20,
        );
        let orders_in_state = flash.confirmed;
        // A snapshot freezes the shard's state on the shard thread (the pause) and is encoded
        // and written by the shard's encoder thread. One-order requests to the hot shard probe
        // it: for 2 s without a snapshot (the baseline), then while one is taken.
        let until = Instant::now() + Duration::from_secs(2);
        let (quiet, _) = probe(&engine, hot, customer, || Instant::now() >= until).await;
        let started = Instant::now();
        let snapshotting = engine.clone();
        let snapshot =
            actix_rt::spawn(async move { snapshotting.snapshot_shard(hot_shard).await });
        let (busy, slow) = probe(&engine, hot, customer, || snapshot.is_finished()).await;
        let durable_ms = started.elapsed().as_secs_f64() * 1000.0;
        let taken = snapshot.await.expect("snapshot task").expect("snapshot");
        println!(
            "| snapshot | hot shard with {} orders: shard paused {:.3} ms to freeze its state; durable after {:.0} ms; one-order requests meanwhile: {} with p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {} over 20 ms (baseline without a snapshot: p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms) |",
            orders_in_state,
            taken.pause_us as f64 / 1000.0,
            durable_ms,
            busy.len(),
            busy.value_at_quantile(0.99) as f64 / 1000.0,
            busy.value_at_quantile(0.999) as f64 / 1000.0,
            busy.max() as f64 / 1000.0,
            slow.len(),
            quiet.value_at_quantile(0.99) as f64 / 1000.0,
            quiet.value_at_quantile(0.999) as f64 / 1000.0,
            quiet.max() as f64 / 1000.0,
        );
        engine.shutdown().await;
        drop(engine);
        let started = Instant::now();
        let engine = Engine::open(config(&flash_dir, shards)).expect("reopen");
        println!(
            "| recovery | open to ready in {:.2} s with {} orders in state (snapshot + log replay) |",
            started.elapsed().as_secs_f64(),
            orders_in_state
        );
        bench_backups(&engine, &flash_dir, hot, customer).await;
        engine.shutdown().await;
        drop(engine);

        // Catalog: 100,000 SKUs, 1-5 lines per order, SKUs drawn zipfian (s = 0.99).
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(config(dir.path(), shards)).expect("open");
        let customers = make_customers(&engine).await;
        let skus: Arc<Vec<String>> = Arc::new((0..args.skus).map(|i| format!("SKU-{i:06}")).collect());
        let mut setup = Vec::new();
        for chunk in skus.chunks(args.skus.div_ceil(64)) {
            let engine = engine.clone();
            let chunk = chunk.to_vec();
            setup.push(actix_rt::spawn(async move {
                for sku in chunk {
                    engine
                        .adjust_stock(&sku, 1_000_000_000, "bench", "bench")
                        .await
                        .expect("stock");
                }
            }));
        }
        for task in setup {
            task.await.expect("setup");
        }
        let zipf = Arc::new(Zipf::new(args.skus, 0.99));
        let shard_count = shards as u16;
        let make: Arc<dyn Fn(u64) -> (u16, PlaceOrder) + Send + Sync> = Arc::new(move |i| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i);
            let lines_wanted = rng.gen_range(1..=5);
            let mut picked: Vec<usize> = Vec::with_capacity(lines_wanted);
            while picked.len() < lines_wanted {
                let k = zipf.sample(&mut rng);
                if !picked.contains(&k) {
                    picked.push(k);
                }
            }
            let shard = (i % shard_count as u64) as u16;
            (
                shard,
                catalog_order(customers[shard as usize], &skus, picked),
            )
        });
        let catalog = drive(&engine, args.catalog_orders, make).await;
        let base_dir = tempfile::tempdir().expect("tempdir");
        let base = baseline(base_dir.path(), &catalog);
        report("catalog", &catalog, base);

        // Analytics on the catalog state. The summary over every hour comes from the shards'
        // counters; the same orders summed by walking each one (the partial-hour path, which
        // a range inside the current hour takes) are the baseline.
        // Best of three each: the first call also waits for the shards' last batches.
        let now = orderd_engine::clock::now_us();
        let mut from_counters = Duration::MAX;
        let mut by_walk = Duration::MAX;
        let mut counted = Default::default();
        let mut walked = Default::default();
        for _ in 0..3 {
            let started = Instant::now();
            counted = engine.sales_summary(0, i64::MAX).await.expect("summary");
            from_counters = from_counters.min(started.elapsed());
            let started = Instant::now();
            walked = engine
                .sales_summary(now - 24 * 3_600_000_000, now + 1)
                .await
                .expect("summary");
            by_walk = by_walk.min(started.elapsed());
        }
        let (counted, walked): (orderd_engine::SalesSummary, orderd_engine::SalesSummary) =
            (counted, walked);
        assert_eq!(counted.orders, walked.orders, "counters and walk disagree");
        assert_eq!(counted.revenue, walked.revenue, "counters and walk disagree");
        println!(
            "| analytics summary | {} orders, {} SKUs sold: from counters {:.2} ms; walking every order {:.1} ms (baseline); ratio {:.0}x |",
            counted.orders,
            counted.skus.len(),
            from_counters.as_secs_f64() * 1000.0,
            by_walk.as_secs_f64() * 1000.0,
            by_walk.as_secs_f64() / from_counters.as_secs_f64().max(1e-9)
        );
        // The CSV export's engine side: every order, 1,000 per call, shard by shard; resident
        // memory must not grow with the number of orders read.
        let rss_before = rss_bytes();
        let started = Instant::now();
        let mut exported = 0u64;
        let mut rows = 0u64;
        for shard in 0..shards as u16 {
            let mut after = None;
            loop {
                let page = engine
                    .orders_placed_between(shard, 0, i64::MAX, after, 1000)
                    .await
                    .expect("page");
                exported += page.len() as u64;
                rows += page.iter().map(|o| o.lines.len() as u64).sum::<u64>();
                match page.last() {
                    Some(last) if page.len() == 1000 => after = Some((last.created_at_us, last.id)),
                    _ => break,
                }
            }
        }
        let export = started.elapsed();
        println!(
            "| csv export (engine side) | {} orders, {} rows in {:.2} s ({:.0} orders/s); RSS {} MiB before, {} MiB after |",
            exported,
            rows,
            export.as_secs_f64(),
            exported as f64 / export.as_secs_f64(),
            rss_before >> 20,
            rss_bytes() >> 20
        );
        engine.shutdown().await;
        drop(engine);
        bench_locations(shards, location_orders).await;
    });
}

//! Smoke tests of whole runs on real targets with exact expected outcomes: the engine in
//! process (RocksDB in a temporary directory), the real `orderd` binary over HTTP, and the bare
//! HTTP server. No PostgreSQL or Redis needed.

use std::path::PathBuf;

use clap::Parser;
use orderd_bench::cli::Options;
use orderd_bench::report::{Report, Row};

async fn bench(args: &[&str]) -> Report {
    let mut all = vec![
        "orderd-bench",
        "--quiet",
        "--warmup-s",
        "0",
        "--shards",
        "2",
    ];
    all.extend_from_slice(args);
    let options = Options::parse_from(&all);
    let args: Vec<String> = all.iter().map(|a| a.to_string()).collect();
    orderd_bench::run::run(&options, &args)
        .await
        .expect("the bench runs")
}

fn only_row<'a>(report: &'a Report, workload: &str) -> &'a Row {
    let rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.workload == workload)
        .collect();
    assert_eq!(rows.len(), 1, "{}", report.markdown());
    rows[0]
}

/// Flash sale with stock for fewer orders than are placed: exactly `stock` confirmed, the rest
/// refused, and the engine's stock view shows what is left.
fn assert_flash_sale(row: &Row, orders: u64, stock: u64) {
    let confirmed = orders.min(stock);
    assert_eq!(row.totals.errors, 0, "{:?}", row.error_samples);
    assert_eq!(row.totals.ok, confirmed);
    assert_eq!(row.totals.refused, orders - confirmed);
    assert_eq!(row.place.ok, confirmed);
    let check = row
        .stock_check
        .as_ref()
        .expect("the flash sale checks stock");
    assert_eq!(check.sku, "FLASH-1");
    assert_eq!(check.expected_available, stock - confirmed);
    assert_eq!(check.available, stock - confirmed, "stock not conserved");
    assert!(row.rate_per_s > 0.0);
    assert!(row.p50_ms > 0.0 && row.p50_ms <= row.p99_ms && row.p99_ms <= row.p999_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_flash_sale_sells_exactly_the_stock() {
    let report = bench(&[
        "--targets",
        "inproc",
        "--workloads",
        "flash-sale",
        "--orders",
        "3000",
        "--stock",
        "1000",
        "--connections",
        "8",
        "--in-flight",
        "4",
    ])
    .await;
    let row = only_row(&report, "flash-sale");
    assert_eq!(row.target, "inproc");
    assert_eq!(row.durability, "fsync per group commit (sync)");
    assert_flash_sale(row, 3000, 1000);
    assert!(report.skipped.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_async_durability_is_reported_and_sells_exactly_the_stock() {
    let report = bench(&[
        "--targets",
        "inproc",
        "--workloads",
        "flash-sale",
        "--durability",
        "async",
        "--orders",
        "2000",
        "--stock",
        "700",
        "--connections",
        "8",
    ])
    .await;
    let row = only_row(&report, "flash-sale");
    assert_eq!(
        row.durability,
        "write acknowledged, fsync every storage.flush_interval_ms (async)"
    );
    assert_flash_sale(row, 2000, 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_flash_sale_with_enough_stock_confirms_every_order() {
    let report = bench(&[
        "--targets",
        "inproc",
        "--workloads",
        "flash-sale",
        "--orders",
        "2000",
        "--stock",
        "5000",
        "--connections",
        "16",
    ])
    .await;
    assert_flash_sale(only_row(&report, "flash-sale"), 2000, 5000);
}

/// Every kind of operation of the mixed workload, done without an error.
fn assert_mixed(row: &Row, ops: u64) {
    assert_eq!(row.totals.errors, 0, "{:?}", row.error_samples);
    assert_eq!(row.totals.refused, 0);
    assert_eq!(row.totals.ok, ops);
    assert_eq!(row.rate_unit, "ops/s");
    for (kind, counts) in [
        ("place", row.place),
        ("read", row.read),
        ("cancel", row.cancel),
        ("ship", row.ship),
    ] {
        assert!(counts.ok > 0, "no {kind} in {row:?}");
    }
    // Until a client has orders, it places: at least half are placements.
    assert!(row.place.ok * 2 >= ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_mixed_places_reads_cancels_and_ships() {
    let report = bench(&[
        "--targets",
        "inproc",
        "--workloads",
        "mixed,catalog",
        "--skus",
        "1000",
        "--orders",
        "2000",
        "--connections",
        "8",
    ])
    .await;
    assert_mixed(only_row(&report, "mixed"), 2000);
    let catalog = only_row(&report, "catalog");
    assert_eq!(catalog.totals.ok, 2000);
    assert_eq!(catalog.totals.errors + catalog.totals.refused, 0);
    assert!(catalog.stock_check.is_none());
}

/// `orderd` as `cargo build --release --workspace --bins` leaves it: next to the directory of
/// this test executable (`target/release/deps/`).
fn orderd_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("orderd");
    assert!(
        path.is_file(),
        "{} missing: build it first with `cargo build --release --workspace --bins` (make test does)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_target_against_the_real_orderd() {
    let orderd = orderd_binary();
    let report = bench(&[
        "--orderd",
        orderd.to_str().expect("utf-8 path"),
        "--targets",
        "http",
        "--workloads",
        "flash-sale,mixed",
        "--skus",
        "200",
        "--orders",
        "600",
        "--stock",
        "250",
        "--connections",
        "4",
    ])
    .await;
    let row = only_row(&report, "flash-sale");
    assert_eq!(row.target, "http");
    assert_flash_sale(row, 600, 250);
    assert_mixed(only_row(&report, "mixed"), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_target_runs_the_real_orderd_with_async_durability() {
    let orderd = orderd_binary();
    let report = bench(&[
        "--orderd",
        orderd.to_str().expect("utf-8 path"),
        "--targets",
        "http",
        "--workloads",
        "flash-sale",
        "--durability",
        "async",
        "--orders",
        "400",
        "--stock",
        "150",
        "--connections",
        "4",
    ])
    .await;
    let row = only_row(&report, "flash-sale");
    assert_eq!(row.target, "http");
    assert_eq!(
        row.durability,
        "write acknowledged, fsync every storage.flush_interval_ms (async)"
    );
    assert_flash_sale(row, 400, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_target_pipelines_against_the_real_orderd() {
    let orderd = orderd_binary();
    let report = bench(&[
        "--orderd",
        orderd.to_str().expect("utf-8 path"),
        "--targets",
        "tcp",
        "--workloads",
        "flash-sale,mixed",
        "--skus",
        "200",
        "--orders",
        "600",
        "--stock",
        "250",
        "--connections",
        "2",
        "--in-flight",
        "16",
    ])
    .await;
    let row = only_row(&report, "flash-sale");
    assert_eq!(row.target, "tcp");
    assert_flash_sale(row, 600, 250);
    assert_mixed(only_row(&report, "mixed"), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_batch_target_sends_place_orders_frames_to_the_real_orderd() {
    let orderd = orderd_binary();
    // 600 operations in frames of 70: 4 slots, the last frame short (600 = 8 × 70 + 40).
    let report = bench(&[
        "--orderd",
        orderd.to_str().expect("utf-8 path"),
        "--targets",
        "tcp-batch",
        "--workloads",
        "flash-sale,mixed",
        "--skus",
        "200",
        "--orders",
        "600",
        "--stock",
        "250",
        "--connections",
        "2",
        "--in-flight",
        "2",
        "--batch-orders",
        "70",
    ])
    .await;
    let row = only_row(&report, "flash-sale");
    assert_eq!(row.target, "tcp-batch");
    assert_eq!(row.ops_per_request, 70);
    assert_flash_sale(row, 600, 250);
    assert_mixed(only_row(&report, "mixed"), 600);
    assert!(report.markdown().contains("| 2×2×70 |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bare_serves_the_same_requests() {
    let report = bench(&[
        "--bare-exe",
        env!("CARGO_BIN_EXE_orderd-bench"),
        "--targets",
        "http-bare",
        "--workloads",
        "mixed",
        "--skus",
        "100",
        "--orders",
        "500",
        "--connections",
        "4",
    ])
    .await;
    let row = only_row(&report, "mixed");
    assert_eq!(row.durability, "none (no storage)");
    assert_mixed(row, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_peer_that_is_not_reachable_is_an_error_and_others_are_skipped() {
    // A port nothing listens on (bound, then released).
    let port = orderd_bench::process::free_loopback_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    let pg = format!("postgresql://postgres@127.0.0.1:{port}/x");
    let args = [
        "orderd-bench",
        "--quiet",
        "--targets",
        "redis",
        "--redis-url",
        &url,
        "--connect-timeout-s",
        "2",
    ];
    let options = Options::parse_from(args);
    let error = orderd_bench::run::run(&options, &[])
        .await
        .expect_err("an explicitly requested peer must be reachable");
    let text = format!("{error:#}");
    assert!(text.contains("redis was asked for"), "{text}");
    assert!(text.contains("not reachable"), "{text}");

    // Not named: skipped with the reason, and the rest runs.
    let report = bench(&[
        "--redis-url",
        &url,
        "--postgres-url",
        &pg,
        "--orderd",
        "/nonexistent/orderd",
        "--bare-exe",
        "/nonexistent/orderd-bench",
        "--connect-timeout-s",
        "2",
        "--workloads",
        "flash-sale",
        "--orders",
        "100",
        "--connections",
        "2",
    ])
    .await;
    let skipped: Vec<&str> = report.skipped.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        skipped,
        vec![
            "tcp",
            "tcp-tls",
            "tcp-batch",
            "http",
            "http-bare",
            "postgres",
            "redis"
        ]
    );
    assert!(report.skipped[6].reason.contains("not reachable"));
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].target, "inproc");
    assert!(report.markdown().contains("- skipped postgres: "));
}

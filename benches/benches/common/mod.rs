//! What the engine, events and longevity benchmarks share: the process's resident memory, a
//! customer on every shard, the one-unit and catalog orders they place, and the batch driver
//! that places a workload through `place_batch` with batches in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orderd_engine::{CustomerId, Engine, LogCounters, NewCustomer, NewLine, PlaceOrder};

/// Orders per `place_batch` message.
pub const BATCH_ORDERS: usize = 1000;
/// Messages the driver keeps in flight.
pub const IN_FLIGHT_BATCHES: usize = 8;

/// Resident memory of this process, in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One unit of `sku` for `customer`, at 19.99, without an Idempotency-Key.
pub fn one_unit_order(customer: CustomerId, sku: &str) -> PlaceOrder {
    PlaceOrder {
        customer_id: customer,
        lines: vec![NewLine {
            sku: sku.to_string(),
            qty: 1,
            unit_price: 1999,
        }],
        shipping_address: None,
        note: None,
        idempotency: None,
        actor: "bench".into(),
        refusal: None,
    }
}

/// What one driven workload measured.
pub struct Run {
    pub orders: u64,
    pub confirmed: u64,
    pub elapsed: Duration,
    pub log: LogCounters,
    /// Per order: the round trip of the message that carried it (every order of a batch is
    /// answered at once), in microseconds.
    pub latency: Histogram<u64>,
}

/// Latencies in microseconds, 1 µs to 60 s, three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Drives `total` orders from `make(shard, i)` through `place_batch`, keeping
/// `IN_FLIGHT_BATCHES` batches in flight.
pub async fn drive(
    engine: &Engine,
    total: u64,
    make: Arc<dyn Fn(u64) -> (u16, PlaceOrder) + Send + Sync>,
) -> Run {
    let before = engine.log_counters();
    let next = Arc::new(AtomicU64::new(0));
    let confirmed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks: Vec<actix_rt::task::JoinHandle<Histogram<u64>>> = Vec::new();
    for _ in 0..IN_FLIGHT_BATCHES {
        let engine = engine.clone();
        let next = next.clone();
        let confirmed = confirmed.clone();
        let make = make.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut latency = latency_histogram();
            loop {
                let first = next.fetch_add(BATCH_ORDERS as u64, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let last = (first + BATCH_ORDERS as u64).min(total);
                let mut by_shard: Vec<Vec<PlaceOrder>> = vec![Vec::new(); engine.shard_count()];
                for i in first..last {
                    let (shard, place) = make(i);
                    by_shard[shard as usize].push(place);
                }
                for (shard, places) in by_shard.into_iter().enumerate() {
                    if places.is_empty() {
                        continue;
                    }
                    // The mailbox holds far more than the batches in flight: a refusal
                    // here is a bug, not load.
                    let sent = Instant::now();
                    let results = engine
                        .place_batch(shard as u16, places)
                        .await
                        .expect("batch accepted");
                    latency
                        .record_n(
                            (sent.elapsed().as_micros() as u64).max(1),
                            results.len() as u64,
                        )
                        .expect("latency within bounds");
                    let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
                    confirmed.fetch_add(ok, Ordering::Relaxed);
                }
            }
            latency
        }));
    }
    let mut latency = latency_histogram();
    for task in tasks {
        latency
            .add(task.await.expect("driver task"))
            .expect("merge histograms");
    }
    let elapsed = started.elapsed();
    let after = engine.log_counters();
    Run {
        orders: total,
        confirmed: confirmed.load(Ordering::Relaxed),
        elapsed,
        log: LogCounters {
            syncs: after.syncs - before.syncs,
            writes: after.writes - before.writes,
            batches: after.batches - before.batches,
            events: after.events - before.events,
            bytes: after.bytes - before.bytes,
            notices: after.notices - before.notices,
            notice_bytes: after.notice_bytes - before.notice_bytes,
            write_failures: after.write_failures - before.write_failures,
        },
        latency,
    }
}

/// Customers, one per shard at least, so every order shard has a local customer.
pub async fn make_customers(engine: &Engine) -> Vec<CustomerId> {
    let mut by_shard = vec![None; engine.shard_count()];
    while by_shard.iter().any(Option::is_none) {
        let c = engine
            .create_customer(NewCustomer {
                name: "Bench".into(),
                email: "bench@example.com".into(),
                phone: None,
                address: None,
            })
            .await
            .expect("customer");
        by_shard[c.id.shard() as usize] = Some(c.id);
    }
    by_shard.into_iter().map(Option::unwrap).collect()
}

/// A catalog order for `customer`: one unit of each SKU `picked` (indices into `skus`), at a
/// price that varies with the SKU (5.00 to 14.99).
pub fn catalog_order(customer: CustomerId, skus: &[String], picked: Vec<usize>) -> PlaceOrder {
    PlaceOrder {
        refusal: None,
        customer_id: customer,
        lines: picked
            .into_iter()
            .map(|k| NewLine {
                sku: skus[k].clone(),
                qty: 1,
                unit_price: 500 + k as u64 % 1000,
            })
            .collect(),
        shipping_address: None,
        note: None,
        idempotency: None,
        actor: "bench".into(),
    }
}

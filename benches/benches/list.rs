//! Listing benchmark (issue 17, item 4): one customer's page of 50 newest orders among N
//! orders of N/100 customers, through the shard's customer index (`ShardData::list_orders`)
//! and through the full scan it replaced (`ShardData::list_orders_by_scan`, kept as the
//! reference), in the same run, at N = 10k and N = 1M, against a baseline of 50 views of
//! random orders fetched by id (what any page costs at least); status-only pages (no
//! customer; a status 1% of orders have, and one none has), which still walk the listing;
//! and the bytes the customer index takes per order, counted by a counting allocator on a
//! copy of it.
//!
//! The shard's state is built in memory by `apply`, as recovery builds it; no disk is
//! involved (a list is a read of the shard's memory).
//!
//! Run: `cargo test --release --workspace --bench list` (or `-- --orders N,N,...`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orderd_engine::event::{Event, LineRecord, OrderRecord};
use orderd_engine::sim::Rng;
use orderd_engine::state::ShardData;
use orderd_engine::{CustomerId, OrderFilter, OrderId, OrderStatus};

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PAGE: usize = 50;
const ORDERS_PER_CUSTOMER: u64 = 100;
/// Every this-many orders is cancelled: the rare status of the status-only page.
const CANCELLED_EVERY: u64 = 100;

/// One shard holding `orders` orders of `orders / 100` customers (each order's customer
/// drawn at random), placed in time order, 1% of them cancelled.
fn shard_with(orders: u64, rng: &mut Rng) -> ShardData {
    let customers = (orders / ORDERS_PER_CUSTOMER).max(1);
    let mut data = ShardData::new(0, 1);
    data.apply(&Event::StockAdjusted {
        sku: "SKU-1".into(),
        delta: i64::MAX / 2,
        reason: "receive".into(),
        at_us: 0,
    });
    for n in 1..=orders {
        let id = OrderId::new(0, n).0;
        data.apply(&Event::OrderPlaced {
            order: OrderRecord {
                id,
                customer: CustomerId::new(0, 1 + rng.below(customers)).0,
                lines: vec![LineRecord {
                    sku: "SKU-1".into(),
                    qty: 1,
                    unit_price: 100,
                }],
                shipping_address: None,
                note: None,
                at_us: 1_700_000_000_000_000 + n as i64 * 1_000,
                actor: "key_1".into(),
            },
            idem: None,
        });
        if n % CANCELLED_EVERY == 0 {
            data.apply(&Event::OrderCancelled {
                order: id,
                reason: None,
                actor: "key_1".into(),
                at_us: 1_800_000_000_000_000,
            });
        }
    }
    data
}

/// Median time of `list` over `rounds` calls.
fn median(rounds: usize, mut list: impl FnMut() -> usize) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let items = std::hint::black_box(list());
            let elapsed = start.elapsed();
            assert!(items > 0, "a page lists something");
            elapsed
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    let sizes: Vec<u64> = raw
        .iter()
        .position(|a| a == "--orders")
        .map(|i| {
            raw[i + 1]
                .split(',')
                .map(|n| n.parse().expect("--orders N,N,..."))
                .collect()
        })
        .unwrap_or_else(|| vec![10_000, 1_000_000]);
    println!("# command: cargo test --release --workspace --bench list");
    println!(
        "| orders | customers | customer page, index (µs) | customer page, scan (µs) | scan / index | 50 views by id, baseline (µs) | index / baseline | status-only page, 1% match (µs) | status-only, no match (µs) | index bytes / order |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for orders in sizes {
        let mut rng = Rng::new(orders);
        let data = shard_with(orders, &mut rng);
        let customers = (orders / ORDERS_PER_CUSTOMER).max(1);
        // Index and scan list the same pages (the tests prove it in general; here, once).
        for c in 1..=customers.min(20) {
            let filter = OrderFilter {
                customer_id: Some(CustomerId::new(0, c)),
                limit: PAGE,
                ..Default::default()
            };
            assert_eq!(data.list_orders(&filter), data.list_orders_by_scan(&filter));
        }
        let rounds = if orders > 100_000 { 201 } else { 2001 };
        let mut pick = Rng::new(7);
        let mut customer_page = |scan: bool| {
            let filter = OrderFilter {
                customer_id: Some(CustomerId::new(0, 1 + pick.below(customers))),
                limit: PAGE,
                ..Default::default()
            };
            if scan {
                data.list_orders_by_scan(&filter).len()
            } else {
                data.list_orders(&filter).len()
            }
        };
        let index = median(rounds, || customer_page(false));
        let scan = median(rounds, || customer_page(true));
        // Baseline, same run: the views of 50 random orders fetched by id, what a page costs
        // at least (cache misses grow with the store whatever the index).
        let mut by_id = Rng::new(11);
        let views = median(rounds, || {
            (0..PAGE)
                .filter_map(|_| data.order_view(OrderId::new(0, 1 + by_id.below(orders))))
                .count()
        });
        let status = median(rounds, || {
            data.list_orders(&OrderFilter {
                status: Some(OrderStatus::Cancelled),
                limit: PAGE,
                ..Default::default()
            })
            .len()
        });
        // A status no order has: the walk reads every order of the shard.
        let status_none = median(rounds.min(21), || {
            1 + data
                .list_orders(&OrderFilter {
                    status: Some(OrderStatus::Delivered),
                    limit: PAGE,
                    ..Default::default()
                })
                .len()
        });
        let before = IN_USE.load(Ordering::SeqCst);
        let copy = std::hint::black_box(data.customer_index.clone());
        let index_bytes = IN_USE.load(Ordering::SeqCst) - before;
        drop(copy);
        println!(
            "| {orders} | {customers} | {:.1} | {:.1} | {:.0}× | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            micros(index),
            micros(scan),
            scan.as_secs_f64() / index.as_secs_f64(),
            micros(views),
            index.as_secs_f64() / views.as_secs_f64(),
            micros(status),
            micros(status_none),
            index_bytes as f64 / orders as f64,
        );
    }
}

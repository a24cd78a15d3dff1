//! Cost of the watch statistics on the request path: `window::RequestWindow::record` (one
//! mutex, three counters) per request, against the HDR latency recorder every request already
//! pays (`metrics::record_latency`), measured in the same run, on 1 and 2 threads; and the cost
//! of a watch judgement (`stats` over a full 300 s window and a full 3600 s one).
//!
//! Also the per-key rate limiter that follows the live configuration against a fixed one.
//!
//! Run: `make bench` (or `cargo test --release --workspace --bench window`).

use std::time::{Duration, Instant};

use orderd_control::telemetry as metrics;
use std::sync::Arc;

use orderd_control::window;
use orderd_service::auth::RateLimiter;

const RECORDS_PER_THREAD: u64 = 2_000_000;

/// Nanoseconds per call of `f` on `threads` threads, each calling it `RECORDS_PER_THREAD`
/// times (wall time of all threads / calls of one thread: what a request waits).
fn per_call_ns(threads: usize, f: impl Fn(u64) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for i in 0..RECORDS_PER_THREAD {
                    f(i);
                }
            });
        }
    });
    started.elapsed().as_nanos() as f64 / RECORDS_PER_THREAD as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists tests first; there are none here.
    }
    let window = window::RequestWindow::new();
    println!("| threads | HDR recorder (baseline) ns/request | watch window ns/request | ratio |");
    println!("|---|---|---|---|");
    for threads in [1, 2] {
        // Warm both (the window allocates its ring on first use).
        per_call_ns(threads, |i| {
            metrics::record_latency(Duration::from_micros(100 + i % 900))
        });
        per_call_ns(threads, |i| {
            window.record(Duration::from_micros(100 + i % 900), 200)
        });
        let baseline = per_call_ns(threads, |i| {
            metrics::record_latency(Duration::from_micros(100 + i % 900))
        });
        let watched = per_call_ns(threads, |i| {
            window.record(
                Duration::from_micros(100 + i % 900),
                if i % 100 == 0 { 503 } else { 200 },
            )
        });
        println!(
            "| {threads} | {baseline:.0} | {watched:.0} | {:.2}× |",
            watched / baseline
        );
    }
    // The per-key rate limiter on every request: a fixed rate (an atomic read, as before live
    // settings) against one that follows the live configuration (a read of its `watch`),
    // limiting off (rate 0), as in a default configuration.
    let config: orderd_config::Config = orderd_config::Config::load(None).expect("config");
    let (_live, receiver) = tokio::sync::watch::channel(Arc::new(config));
    let fixed = RateLimiter::new(0);
    let following = RateLimiter::following(receiver);
    println!();
    println!("| threads | rate limiter, fixed (baseline) ns/request | following the live config ns/request | ratio |");
    println!("|---|---|---|---|");
    let at = Instant::now();
    for threads in [1, 2] {
        per_call_ns(threads, |_| assert!(following.allow("key_1", at)));
        let baseline = per_call_ns(threads, |_| assert!(fixed.allow("key_1", at)));
        let live = per_call_ns(threads, |_| assert!(following.allow("key_1", at)));
        println!(
            "| {threads} | {baseline:.1} | {live:.1} | {:.2}× |",
            live / baseline
        );
    }
    println!();
    // A judgement reads the seconds of its window.
    let now = window::now_s();
    for second in now - 3600..=now {
        window.record_at(second, Duration::from_millis(2), 200);
    }
    for span in [300u64, 3600] {
        let rounds = 200;
        let started = Instant::now();
        let mut requests = 0;
        for _ in 0..rounds {
            requests += window.stats(now - span, now + 1).requests;
        }
        let per = started.elapsed() / rounds;
        assert!(requests > 0);
        println!(
            "watch judgement over {span} s: {:.1} µs",
            per.as_nanos() as f64 / 1000.0
        );
    }
}

//! Per-second statistics of the requests of the last two hours (count, errors, a coarse latency
//! histogram), so that change management can compare a watch window with the window before it.
//!
//! Only the traffic a change could hurt is recorded: HTTP requests under `/v1/` outside
//! `/v1/ops/`, and TCP requests other than PING. The watch judges what the server does, never
//! what clients do: an error is a server fault (5xx), and the latency is that of successful
//! requests (below 400). Client errors and refusals (4xx, 429 included) count as requests only,
//! so a client refused by a new rate limit cannot make the limit look harmful and roll it back.

use std::sync::Mutex;
use std::time::Duration;

use orderd_config::WATCH_WINDOW_S_MAX as WINDOW_S_MAX;

/// Seconds the ring holds: two of the longest window a watch may compare
/// (`changes.watch_window_max_s` is at most `WINDOW_S_MAX`) and a little more.
const RING_S: usize = 2 * WINDOW_S_MAX as usize + 8;
/// Latency buckets: four per power of two of microseconds, up to 2^34 µs (4.7 hours).
const SUB_BUCKETS: u32 = 4;
const BUCKETS: usize = 34 * SUB_BUCKETS as usize;

/// Whether an HTTP request on `path` counts in the watch statistics.
pub fn watched_path(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/ops/") && path != "/v1/openapi.json"
}

/// Whether an answer counts as an error in the watch statistics: a server fault.
pub fn is_error(status: u16) -> bool {
    status >= 500
}

/// Whether an answer's latency counts in the watch statistics: a success.
pub fn is_success(status: u16) -> bool {
    status < 400
}

/// Requests, errors and p99 of a span of seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    /// Upper bound of the bucket holding the 99th percentile of the successful requests'
    /// latencies, in microseconds (within about 19 %); 0 when none succeeded.
    pub p99_us: u64,
}

impl WindowStats {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Clone)]
struct Second {
    /// Unix second this slot holds, or 0 when unused.
    at_s: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

/// The ring of per-second statistics. One per server (`server::Services`), shared by the HTTP
/// middleware and the TCP server, which record into it, and by change management, which reads it.
pub struct RequestWindow {
    ring: Mutex<Vec<Second>>,
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bucket(micros: u64) -> usize {
    let micros = micros.max(1);
    if micros < 4 {
        // 1, 2 and 3 µs each have a bucket of their own (indexes 0–2).
        return micros as usize - 1;
    }
    let octave = 63 - micros.leading_zeros();
    let sub = ((micros >> (octave - 2)) & 3) as u32;
    ((octave * SUB_BUCKETS + sub) as usize).min(BUCKETS - 1)
}

/// The largest latency, in microseconds, that falls in bucket `index`.
fn bucket_upper_us(index: usize) -> u64 {
    if index < 8 {
        // The buckets of 1, 2 and 3 µs (4–7 stay empty).
        return (index as u64 + 1).min(3);
    }
    let octave = index as u32 / SUB_BUCKETS;
    let sub = u64::from(index as u32 % SUB_BUCKETS);
    // Bucket (octave, sub) holds [(4 + sub) · 2^(octave−2), (5 + sub) · 2^(octave−2)).
    ((5 + sub) << (octave - 2)) - 1
}

impl RequestWindow {
    pub fn new() -> RequestWindow {
        RequestWindow {
            ring: Mutex::new(Vec::new()),
        }
    }

    /// Records one request answered at unix second `at_s` with `status`.
    pub fn record_at(&self, at_s: u64, elapsed: Duration, status: u16) {
        let index = bucket(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.is_empty() {
            ring.resize(
                RING_S,
                Second {
                    at_s: 0,
                    requests: 0,
                    errors: 0,
                    latency: [0; BUCKETS],
                },
            );
        }
        let slot = &mut ring[(at_s % RING_S as u64) as usize];
        if slot.at_s != at_s {
            slot.at_s = at_s;
            slot.requests = 0;
            slot.errors = 0;
            slot.latency = [0; BUCKETS];
        }
        slot.requests = slot.requests.saturating_add(1);
        if is_error(status) {
            slot.errors = slot.errors.saturating_add(1);
        }
        if is_success(status) {
            slot.latency[index] = slot.latency[index].saturating_add(1);
        }
    }

    /// Records one request answered now with `status`.
    pub fn record(&self, elapsed: Duration, status: u16) {
        self.record_at(now_s(), elapsed, status);
    }

    /// The statistics of the unix seconds `from_s..to_s` (seconds older than the ring holds
    /// count as empty).
    pub fn stats(&self, from_s: u64, to_s: u64) -> WindowStats {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut stats = WindowStats::default();
        if ring.is_empty() || to_s <= from_s {
            return stats;
        }
        let from_s = from_s.max(to_s.saturating_sub(RING_S as u64));
        let mut latency = [0u64; BUCKETS];
        for at_s in from_s..to_s {
            let slot = &ring[(at_s % RING_S as u64) as usize];
            if slot.at_s != at_s {
                continue;
            }
            stats.requests += u64::from(slot.requests);
            stats.errors += u64::from(slot.errors);
            for (total, count) in latency.iter_mut().zip(slot.latency.iter()) {
                *total += u64::from(*count);
            }
        }
        let succeeded: u64 = latency.iter().sum();
        if succeeded > 0 {
            // The smallest bucket at or below which 99 % of the successful requests fall.
            let rank = succeeded - succeeded / 100;
            let mut seen = 0;
            for (index, count) in latency.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    stats.p99_us = bucket_upper_us(index);
                    break;
                }
            }
        }
        stats
    }
}

impl Default for RequestWindow {
    fn default() -> Self {
        RequestWindow::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values() {
        let mut last = 0;
        for micros in [
            1u64, 2, 3, 4, 5, 7, 8, 100, 1000, 1500, 20_000, 1_000_000, 60_000_000,
        ] {
            let index = bucket(micros);
            assert!(index >= last, "{micros}");
            last = index;
            let upper = bucket_upper_us(index);
            assert!(upper >= micros, "{micros} in bucket {index} up to {upper}");
            assert!(
                upper as f64 <= micros as f64 * 1.26 + 1.0,
                "{micros}: bucket up to {upper} is too coarse"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn stats_count_the_seconds_asked_for() {
        let window = RequestWindow::new();
        let t = 1_000_000;
        for _ in 0..98 {
            window.record_at(t, Duration::from_millis(1), 200);
        }
        window.record_at(t, Duration::from_millis(200), 200);
        window.record_at(t, Duration::from_millis(300), 503);
        window.record_at(t + 1, Duration::from_millis(200), 500);
        window.record_at(t + 5, Duration::from_millis(50), 200);

        let first = window.stats(t, t + 2);
        assert_eq!((first.requests, first.errors), (101, 2));
        // 99 successes: the 99th (nearest rank of p99) is the 200 ms one; the failed requests'
        // latencies do not count.
        assert!((200_000..=250_000).contains(&first.p99_us), "{first:?}");
        assert!((first.error_rate() - 2.0 / 101.0).abs() < 1e-9);

        let first_second = window.stats(t, t + 1);
        assert_eq!(first_second.requests, 100);
        assert!(first_second.p99_us >= 200_000, "{first_second:?}");
        for _ in 0..200 {
            window.record_at(t + 3, Duration::from_millis(1), 200);
        }
        let fast = window.stats(t + 3, t + 4);
        assert!((1000..1300).contains(&fast.p99_us), "{fast:?}");

        let later = window.stats(t + 4, t + 10);
        assert_eq!((later.requests, later.errors), (1, 0));
        assert_eq!(window.stats(t + 6, t + 10), WindowStats::default());
    }

    #[test]
    fn a_slot_reused_a_ring_later_starts_empty() {
        let window = RequestWindow::new();
        let t = 5_000_000;
        window.record_at(t, Duration::from_millis(1), 500);
        window.record_at(t + RING_S as u64, Duration::from_millis(1), 200);
        assert_eq!(window.stats(t, t + 1).requests, 0, "overwritten");
        let now = window.stats(t + RING_S as u64, t + RING_S as u64 + 1);
        assert_eq!((now.requests, now.errors), (1, 0));
    }

    #[test]
    fn what_counts() {
        assert!(watched_path("/v1/orders"));
        assert!(watched_path("/v1/stock/A"));
        assert!(!watched_path("/v1/ops/changes"));
        assert!(!watched_path("/metrics"));
        assert!(!watched_path("/livez"));
        assert!(is_error(503) && is_error(500) && is_error(507));
        assert!(!is_error(429) && !is_error(404) && !is_error(409) && !is_error(200));
        assert!(is_success(200) && is_success(201) && !is_success(429) && !is_success(500));
    }

    #[test]
    fn refusals_neither_raise_the_error_rate_nor_the_latency() {
        // A rate limit refusing an abuser: many fast 429s, and slow ones, beside normal traffic.
        let window = RequestWindow::new();
        let t = 7_000_000;
        for _ in 0..100 {
            window.record_at(t, Duration::from_millis(2), 200);
        }
        for _ in 0..1000 {
            window.record_at(t, Duration::from_secs(3), 429);
            window.record_at(t, Duration::from_secs(3), 404);
        }
        let stats = window.stats(t, t + 1);
        assert_eq!((stats.requests, stats.errors), (2100, 0));
        assert!(stats.p99_us < 3_000, "only successes: {stats:?}");
    }
}

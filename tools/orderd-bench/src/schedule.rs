//! The open-loop schedule: request `i` is due at a fixed time `i / rate` after the start,
//! whatever happened to the requests before it, and its latency is measured from that due time
//! (so a server that stalls is charged for every request that should have been sent meanwhile:
//! coordinated omission is not hidden).

use std::time::Duration;

/// Arrival times at a fixed rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second, > 0.
    rate_per_s: f64,
}

impl Schedule {
    pub fn new(rate_per_s: f64) -> Schedule {
        assert!(
            rate_per_s.is_finite() && rate_per_s > 0.0,
            "an open-loop rate must be a positive number, not {rate_per_s}"
        );
        Schedule { rate_per_s }
    }

    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    /// When request `i` (from 0) is due, after the start. Computed from `i` alone, so the
    /// schedule does not drift.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate_per_s)
    }

    /// How many requests are due within `window` from the start (those with `due(i) < window`).
    pub fn count_within(&self, window: Duration) -> u64 {
        let exact = window.as_secs_f64() * self.rate_per_s;
        let count = exact.ceil() as u64;
        // Floating point: make sure that the last counted request is due strictly inside.
        if count > 0 && self.due(count - 1) >= window {
            count - 1
        } else {
            count
        }
    }

    /// Latency of a request due at `due` that completed at `done` (both after the start); a
    /// request answered before it was due (impossible unless clocks jump) counts as zero.
    pub fn latency(due: Duration, done: Duration) -> Duration {
        done.saturating_sub(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_fixed_intervals() {
        let schedule = Schedule::new(1000.0);
        assert_eq!(schedule.due(0), Duration::ZERO);
        assert_eq!(schedule.due(1), Duration::from_millis(1));
        assert_eq!(schedule.due(1000), Duration::from_secs(1));
        assert_eq!(schedule.due(2500), Duration::from_millis(2500));
        // No drift after many requests.
        let schedule = Schedule::new(3.0);
        assert_eq!(schedule.due(3_000_000), Duration::from_secs(1_000_000));
        let mut previous = Duration::ZERO;
        for i in 1..10_000 {
            let due = schedule.due(i);
            assert!(due > previous);
            previous = due;
        }
    }

    #[test]
    fn counts_the_requests_due_in_a_window() {
        let schedule = Schedule::new(1000.0);
        assert_eq!(schedule.count_within(Duration::ZERO), 0);
        // Due at 0, 1, ..., 999 ms: 1000 requests in the first second.
        assert_eq!(schedule.count_within(Duration::from_secs(1)), 1000);
        assert_eq!(schedule.count_within(Duration::from_micros(1500)), 2);
        let schedule = Schedule::new(7.0);
        assert_eq!(schedule.count_within(Duration::from_secs(10)), 70);
        for n in [1u64, 2, 99, 12_345] {
            let window = schedule.due(n);
            assert_eq!(schedule.count_within(window), n, "window up to request {n}");
        }
    }

    #[test]
    fn latency_is_measured_from_the_due_time() {
        // Due at 10 ms; the client could only send it at 30 ms (every connection busy); the
        // answer came at 31 ms: the latency is 21 ms, not the 1 ms of the exchange itself.
        let latency = Schedule::latency(Duration::from_millis(10), Duration::from_millis(31));
        assert_eq!(latency, Duration::from_millis(21));
        assert_eq!(
            Schedule::latency(Duration::from_millis(10), Duration::from_millis(5)),
            Duration::ZERO
        );
    }

    #[test]
    #[should_panic(expected = "positive")]
    fn a_zero_rate_is_refused() {
        Schedule::new(0.0);
    }
}

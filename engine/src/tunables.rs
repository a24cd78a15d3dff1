//! The engine settings that change while it runs (applied by change management in the
//! gateway): one atomic each, read where they are used, so a new value takes effect on the
//! next batch, fsync or fault without a restart.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Live engine settings. Shared by the shards, the log writer and the supervisor.
#[derive(Debug)]
pub struct Tunables {
    batch_events_max: AtomicUsize,
    flush_interval_ms: AtomicU64,
    max_restarts: AtomicU32,
    restart_window_s: AtomicU64,
    request_timeout_ms: AtomicU64,
    events_enabled: AtomicBool,
    stock_low_threshold: AtomicU64,
}

/// Default of `events.stock_low_threshold`: `stock.low` when available units fall below it.
pub const STOCK_LOW_THRESHOLD_DEFAULT: u64 = 10;

/// Default deadline of one client call (`engine.request_timeout_ms`).
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;

impl Tunables {
    pub fn new(
        batch_events_max: usize,
        flush_interval_ms: u64,
        max_restarts: u32,
        restart_window_s: u64,
    ) -> Tunables {
        Tunables {
            batch_events_max: AtomicUsize::new(batch_events_max.max(1)),
            flush_interval_ms: AtomicU64::new(flush_interval_ms.max(1)),
            max_restarts: AtomicU32::new(max_restarts),
            restart_window_s: AtomicU64::new(restart_window_s.max(1)),
            request_timeout_ms: AtomicU64::new(REQUEST_TIMEOUT_MS_DEFAULT),
            events_enabled: AtomicBool::new(true),
            stock_low_threshold: AtomicU64::new(STOCK_LOW_THRESHOLD_DEFAULT),
        }
    }

    /// Whether shards record public events (`events.enabled`; off only to measure their cost).
    pub fn events_enabled(&self) -> bool {
        self.events_enabled.load(Ordering::Relaxed)
    }

    pub fn set_events_enabled(&self, value: bool) {
        self.events_enabled.store(value, Ordering::Relaxed);
    }

    /// `stock.low` is raised when a SKU's available units fall from at least this to below it
    /// (`events.stock_low_threshold`; 0: never).
    pub fn stock_low_threshold(&self) -> u64 {
        self.stock_low_threshold.load(Ordering::Relaxed)
    }

    pub fn set_stock_low_threshold(&self, value: u64) {
        self.stock_low_threshold.store(value, Ordering::Relaxed);
    }

    /// The deadline of one client call, in milliseconds: past it the caller hears
    /// `unavailable`, and an order shard aborts a placement whose parts have not all answered.
    pub fn request_timeout_ms(&self) -> u64 {
        self.request_timeout_ms.load(Ordering::Relaxed)
    }

    pub fn set_request_timeout_ms(&self, value: u64) {
        self.request_timeout_ms
            .store(value.max(1), Ordering::Relaxed);
    }

    /// Most events in one log batch.
    pub fn batch_events_max(&self) -> usize {
        self.batch_events_max.load(Ordering::Relaxed)
    }

    pub fn set_batch_events_max(&self, value: usize) {
        self.batch_events_max.store(value.max(1), Ordering::Relaxed);
    }

    /// Interval between fsyncs in `async` durability, in milliseconds.
    pub fn flush_interval_ms(&self) -> u64 {
        self.flush_interval_ms.load(Ordering::Relaxed)
    }

    pub fn set_flush_interval_ms(&self, value: u64) {
        self.flush_interval_ms
            .store(value.max(1), Ordering::Relaxed);
    }

    /// Automatic restarts of one shard allowed within [`Tunables::restart_window_s`].
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts.load(Ordering::Relaxed)
    }

    pub fn set_max_restarts(&self, value: u32) {
        self.max_restarts.store(value, Ordering::Relaxed);
    }

    pub fn restart_window_s(&self) -> u64 {
        self.restart_window_s.load(Ordering::Relaxed)
    }

    pub fn set_restart_window_s(&self, value: u64) {
        self.restart_window_s.store(value.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_change_and_stay_in_range() {
        let t = Tunables::new(0, 0, 5, 0);
        assert_eq!(t.batch_events_max(), 1);
        assert_eq!(t.flush_interval_ms(), 1);
        assert_eq!(t.restart_window_s(), 1);
        t.set_batch_events_max(64);
        t.set_flush_interval_ms(20);
        t.set_max_restarts(0);
        t.set_restart_window_s(120);
        assert_eq!(
            (
                t.batch_events_max(),
                t.flush_interval_ms(),
                t.max_restarts(),
                t.restart_window_s()
            ),
            (64, 20, 0, 120)
        );
    }
}

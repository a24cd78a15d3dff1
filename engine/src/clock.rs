//! The time as the engine sees it: the [`Clock`] a shard reads (the system clock in the server,
//! simulated time in `crate::sim`) and [`now_us`], wall-clock microseconds since the epoch.

use std::time::Instant;

/// The time as a shard sees it: the system clock in the server, simulated time in `crate::sim`.
pub trait Clock: Send + Sync {
    /// Wall-clock microseconds since the Unix epoch (event timestamps).
    fn now_us(&self) -> i64;
    /// A monotonic instant (timers: retries, deadlines, sweeps).
    fn instant(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        now_us()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// Wall-clock microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

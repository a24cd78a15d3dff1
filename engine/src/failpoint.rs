//! Fault injection for tests: compiled in only with the `failpoints` feature (`make test` turns
//! it on for the test build; release builds of `orderd` have none of it).
//!
//! A shard checks every SKU it is asked to adjust stock for or to place an order line for:
//! - `FAILPOINT-PANIC...` makes the shard panic while it applies the command;
//! - `FAILPOINT-HANG-<ms>...` blocks the shard's thread for `<ms>` milliseconds (a stuck shard;
//!   the digits end at the first non-digit).
//!
//! Any other SKU is untouched. Without the feature these SKUs are ordinary SKUs.

/// True when this build has failpoints compiled in.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Triggers the failpoint a SKU names, if any.
#[cfg(feature = "failpoints")]
pub fn on_sku(sku: &str) {
    if sku.starts_with("FAILPOINT-PANIC") {
        panic!("failpoint: panic on SKU {sku}");
    }
    if let Some(rest) = sku.strip_prefix("FAILPOINT-HANG-") {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let ms: u64 = digits.parse().unwrap_or(0);
        tracing::warn!(message = "failpoint: blocking the shard thread.", sku, ms);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn on_sku(_sku: &str) {}

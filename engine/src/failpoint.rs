//! Fault injection for tests: compiled in only with the `failpoints` feature (`make test` turns
//! it on for the test build; release builds of `orderd` have none of it).
//!
//! A shard checks every SKU it is asked to adjust stock for or to place an order line for:
//! - `FAILPOINT-PANIC...` makes the shard panic while it applies the command;
//! - `FAILPOINT-HANG-<ms>...` blocks the shard's thread for `<ms>` milliseconds (a stuck shard;
//!   the digits end at the first non-digit).
//!
//! Any other SKU is untouched. Without the feature these SKUs are ordinary SKUs.
//!
//! `ORDERD_FAILPOINTS=off` in the environment disarms them for the whole process (read once):
//! an end-to-end test restarts the server so to stand for "the bug is fixed and deployed", e.g.
//! before lifting a quarantine.

/// True when this build has failpoints compiled in.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Whether `ORDERD_FAILPOINTS=off` disarmed the failpoints of this process.
#[cfg(feature = "failpoints")]
fn disarmed() -> bool {
    static DISARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DISARMED.get_or_init(|| std::env::var("ORDERD_FAILPOINTS").is_ok_and(|v| v == "off"))
}

/// Triggers the failpoint a SKU names, if any.
#[cfg(feature = "failpoints")]
pub fn on_sku(sku: &str) {
    if disarmed() {
        return;
    }
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

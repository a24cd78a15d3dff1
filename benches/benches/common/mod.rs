//! What the engine and longevity benchmarks share: the process's resident memory and the
//! one-unit order they place.

use orderd_engine::{CustomerId, NewLine, PlaceOrder};

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

//! Validation of decoded requests before they reach the engine: SKUs, quantities, prices, stock
//! deltas, text lengths, e-mail addresses, order and shipment lines. Each failure names the
//! offending field as `param`.
//!
//! These checks are about the shape of a request. Business rules (stock, transitions,
//! idempotency) stay in the engine.

use std::collections::HashSet;

use crate::error::ApiError;
use crate::input::{CustomerInput, OrderLineInput, ShipmentLineInput};
use orderd_engine::{
    add_line_amount, sku_is_valid, NewLine, LINE_QTY_MAX, ORDER_LINES_MAX, SKU_LENGTH_MAX,
    STOCK_DELTA_MAX,
};

/// Longest stock adjustment or cancellation reason, in characters.
pub const REASON_CHARS_MAX: usize = 500;
/// Longest customer name, in characters.
pub const NAME_CHARS_MAX: usize = 200;
/// Longest e-mail address, in characters (RFC 5321 path limit).
pub const EMAIL_CHARS_MAX: usize = 254;
/// Longest phone number, in characters.
pub const PHONE_CHARS_MAX: usize = 50;
/// Longest customer or shipping address, in characters.
pub const ADDRESS_CHARS_MAX: usize = 500;
/// Longest order note, in characters.
pub const NOTE_CHARS_MAX: usize = 500;
/// Shortest and longest `Idempotency-Key`, in characters.
pub const IDEMPOTENCY_KEY_CHARS_MIN: usize = 1;
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// Page size of lists: default and bounds.
pub const LIMIT_DEFAULT: usize = 100;
pub const LIMIT_MAX: usize = 1000;

/// A SKU from a path or body: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn sku(param: &str, value: &str) -> Result<(), ApiError> {
    if sku_is_valid(value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            format!("a SKU is 1 to {SKU_LENGTH_MAX} characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// A location id: like a SKU, 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn location_id(param: &str, value: &str) -> Result<(), ApiError> {
    if orderd_engine::location_is_valid(value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            format!("a location id is 1 to {SKU_LENGTH_MAX} characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Text no longer than `max` characters.
pub fn text_max(param: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            param,
            format!("{param} is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// Optional text no longer than `max` characters.
pub fn optional_text_max(param: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(value) => text_max(param, value, max),
        None => Ok(()),
    }
}

/// A name (a carrier, a key's owner): not blank, at most `max` characters, no control
/// characters.
pub fn label(param: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            param,
            format!("{param} is a non-blank name without control characters"),
        ));
    }
    text_max(param, value, max)
}

/// Personal text (name, phone, address, shipping address): no longer than `max` characters and
/// free of control characters, so that no plaintext can look like a sealed value
/// ([`crate::vault::is_sealed`]).
pub fn personal_text(param: &str, value: &str, max: usize) -> Result<(), ApiError> {
    text_max(param, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            param,
            format!("{param} must not contain control characters (line breaks included)"),
        ));
    }
    Ok(())
}

/// Optional personal text; see [`personal_text`].
pub fn optional_personal_text(
    param: &str,
    value: Option<&str>,
    max: usize,
) -> Result<(), ApiError> {
    match value {
        Some(value) => personal_text(param, value, max),
        None => Ok(()),
    }
}

/// Whether `value` looks like an e-mail address: at most 254 characters, exactly one `@`, a
/// non-empty local part, and a domain of at least two non-empty dot-separated labels; no
/// whitespace or control characters anywhere.
pub fn email_looks_valid(value: &str) -> bool {
    if value.is_empty() || value.chars().count() > EMAIL_CHARS_MAX {
        return false;
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let mut parts = value.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if local.is_empty() || !domain.contains('.') {
        return false;
    }
    domain.split('.').all(|label| !label.is_empty())
}

/// A new customer: name 1–200 characters, a plausible e-mail, phone ≤ 50, address ≤ 500; no
/// control characters in any of them.
pub fn customer(c: &CustomerInput) -> Result<(), ApiError> {
    if c.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "name must not be empty"));
    }
    personal_text("name", &c.name, NAME_CHARS_MAX)?;
    if !email_looks_valid(&c.email) {
        return Err(ApiError::invalid(
            "email",
            format!("email must look like an address (name@example.com, at most {EMAIL_CHARS_MAX} characters)"),
        ));
    }
    optional_personal_text("phone", c.phone.as_deref(), PHONE_CHARS_MAX)?;
    optional_personal_text("address", c.address.as_deref(), ADDRESS_CHARS_MAX)?;
    Ok(())
}

/// A contact data change: each field present is checked as [`customer`] checks it.
pub fn customer_update(c: &crate::input::CustomerUpdateInput) -> Result<(), ApiError> {
    if let Some(name) = &c.name {
        if name.trim().is_empty() {
            return Err(ApiError::invalid("name", "name must not be empty"));
        }
        personal_text("name", name, NAME_CHARS_MAX)?;
    }
    if let Some(email) = &c.email {
        if !email_looks_valid(email) {
            return Err(ApiError::invalid(
                "email",
                format!("email must look like an address (name@example.com, at most {EMAIL_CHARS_MAX} characters)"),
            ));
        }
    }
    optional_personal_text("phone", c.phone.as_deref(), PHONE_CHARS_MAX)?;
    optional_personal_text("address", c.address.as_deref(), ADDRESS_CHARS_MAX)?;
    Ok(())
}

/// Order lines: 1–100 of them, each a valid SKU at most once, `qty` 1 to `LINE_QTY_MAX`,
/// `unit_price` present and at most `UNIT_PRICE_MAX`, and a total of at most `ORDER_TOTAL_MAX`
/// (the engine's [`add_line_amount`], which the shard checks again). Returns the engine's lines.
pub fn order_lines(lines: &[OrderLineInput]) -> Result<Vec<NewLine>, ApiError> {
    let out = line_shapes(lines, true)?;
    order_amounts(&out)?;
    Ok(out)
}

/// Order lines the catalog prices: as [`order_lines`], except that `unit_price` may be
/// missing (the line carries 0 until the catalog's price replaces it) and the total is not
/// checked yet: [`order_amounts`] checks it once the prices are known. Returns the engine's
/// lines and, per line, the price the client sent.
pub fn catalog_order_lines(
    lines: &[OrderLineInput],
) -> Result<(Vec<NewLine>, Vec<Option<u64>>), ApiError> {
    let out = line_shapes(lines, false)?;
    Ok((out, lines.iter().map(|line| line.unit_price).collect()))
}

/// The numbers of an order's lines with their prices known: each `qty` and `unit_price` in
/// bounds and the total at most `ORDER_TOTAL_MAX` (400 naming the line that passes it).
pub fn order_amounts(lines: &[NewLine]) -> Result<(), ApiError> {
    let mut total: u64 = 0;
    for (i, line) in lines.iter().enumerate() {
        total = add_line_amount(total, line.qty, line.unit_price).map_err(|error| {
            ApiError::invalid(format!("lines[{i}].{}", error.field()), error.detail())
        })?;
    }
    Ok(())
}

/// The checks of every line that do not need the prices: count, SKUs, quantities, the prices
/// that were sent (and, with `unit_price_required`, that each line sent one).
fn line_shapes(
    lines: &[OrderLineInput],
    unit_price_required: bool,
) -> Result<Vec<NewLine>, ApiError> {
    if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid(
            "lines",
            format!("an order has 1 to {ORDER_LINES_MAX} lines"),
        ));
    }
    let mut seen = HashSet::with_capacity(lines.len());
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let sku_param = format!("lines[{i}].sku");
        sku(&sku_param, &line.sku)?;
        if !seen.insert(line.sku.as_str()) {
            return Err(ApiError::invalid(
                sku_param,
                format!("SKU {} appears in more than one line", line.sku),
            ));
        }
        let unit_price = match line.unit_price {
            Some(price) => price,
            None if unit_price_required => {
                return Err(ApiError::invalid(
                    format!("lines[{i}].unit_price"),
                    "unit_price is required: this key's orders are priced by the client \
                     (orders.client_prices)",
                ))
            }
            None => 0,
        };
        // One line's bounds (qty, unit_price) whatever the others hold.
        add_line_amount(0, line.qty, unit_price).map_err(|error| {
            ApiError::invalid(format!("lines[{i}].{}", error.field()), error.detail())
        })?;
        out.push(NewLine {
            sku: line.sku.clone(),
            qty: line.qty,
            unit_price,
        });
    }
    debug_assert_eq!(out.len(), lines.len());
    Ok(out)
}

/// Shipment lines: 1–100 of them, each a valid SKU with `qty` 1 to `LINE_QTY_MAX` (whether the
/// order has that much left to ship is the engine's business). Returns the engine's lines.
pub fn shipment_lines(lines: Vec<ShipmentLineInput>) -> Result<Vec<(String, u32)>, ApiError> {
    if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid(
            "lines",
            format!("a shipment has 1 to {ORDER_LINES_MAX} lines (or none: everything left)"),
        ));
    }
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        sku(&format!("lines[{i}].sku"), &line.sku)?;
        if line.qty == 0 {
            return Err(ApiError::invalid(
                format!("lines[{i}].qty"),
                "qty must be at least 1",
            ));
        }
        if line.qty > LINE_QTY_MAX {
            return Err(ApiError::invalid(
                format!("lines[{i}].qty"),
                format!("qty must be at most {LINE_QTY_MAX}"),
            ));
        }
        out.push((line.sku, line.qty));
    }
    Ok(out)
}

/// Return lines: 1–100, each a valid SKU once with `qty` 1 to `LINE_QTY_MAX` (whether that
/// much was shipped is the engine's business). Returns the engine's lines.
pub fn return_lines(lines: Vec<ShipmentLineInput>) -> Result<Vec<(String, u32)>, ApiError> {
    if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid(
            "lines",
            format!("a return has 1 to {ORDER_LINES_MAX} lines"),
        ));
    }
    let out = shipment_lines(lines)?;
    for (i, (sku, _)) in out.iter().enumerate() {
        if out[..i].iter().any(|(other, _)| other == sku) {
            return Err(ApiError::invalid(
                format!("lines[{i}].sku"),
                "each SKU appears once",
            ));
        }
    }
    Ok(out)
}

/// Received lines: 1–100, each a valid SKU with `qty` 1 to `LINE_QTY_MAX`, a SKU at most once
/// restocked and once not. Returns the engine's lines.
pub fn receive_lines(
    lines: Vec<crate::input::ReceiveLineInput>,
) -> Result<Vec<orderd_engine::ReceiveLine>, ApiError> {
    if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid(
            "lines",
            format!("a receipt has 1 to {ORDER_LINES_MAX} lines"),
        ));
    }
    let mut out: Vec<orderd_engine::ReceiveLine> = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        sku(&format!("lines[{i}].sku"), &line.sku)?;
        if line.qty == 0 {
            return Err(ApiError::invalid(
                format!("lines[{i}].qty"),
                "qty must be at least 1",
            ));
        }
        if line.qty > LINE_QTY_MAX {
            return Err(ApiError::invalid(
                format!("lines[{i}].qty"),
                format!("qty must be at most {LINE_QTY_MAX}"),
            ));
        }
        if out
            .iter()
            .any(|other| other.sku == line.sku && other.restock == line.restock)
        {
            return Err(ApiError::invalid(
                format!("lines[{i}].sku"),
                "each SKU appears at most once restocked and once not",
            ));
        }
        out.push(orderd_engine::ReceiveLine {
            sku: line.sku,
            qty: line.qty,
            restock: line.restock,
        });
    }
    Ok(out)
}

/// A refund's `amount`: 1 to `ORDER_TOTAL_MAX` minor units.
pub fn refund_amount(amount: u64) -> Result<(), ApiError> {
    if amount == 0 || amount > orderd_engine::ORDER_TOTAL_MAX {
        return Err(ApiError::invalid(
            "amount",
            format!(
                "amount must be from 1 to {} (minor units)",
                orderd_engine::ORDER_TOTAL_MAX
            ),
        ));
    }
    Ok(())
}

/// A stock adjustment's `delta`: not zero, at most `STOCK_DELTA_MAX` either way.
pub fn stock_delta(delta: i64) -> Result<(), ApiError> {
    if delta == 0 {
        return Err(ApiError::invalid("delta", "delta must not be zero"));
    }
    if delta.unsigned_abs() > STOCK_DELTA_MAX {
        return Err(ApiError::invalid(
            "delta",
            format!("delta must be from -{STOCK_DELTA_MAX} to {STOCK_DELTA_MAX}"),
        ));
    }
    Ok(())
}

/// A header value as text, when it is visible ASCII, spaces and tabs only (as HTTP's header
/// text; what `http::HeaderValue::to_str` accepts).
pub fn header_text(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// An `Idempotency-Key` header value: 1–255 characters.
pub fn idempotency_key(value: &str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if !(IDEMPOTENCY_KEY_CHARS_MIN..=IDEMPOTENCY_KEY_CHARS_MAX).contains(&chars) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be {IDEMPOTENCY_KEY_CHARS_MIN} to {IDEMPOTENCY_KEY_CHARS_MAX} characters"
            ),
        ));
    }
    Ok(())
}

/// A `since` query parameter: an RFC 3339 time, as microseconds since the Unix epoch.
pub fn since(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| at.timestamp_micros())
                .map_err(|_| {
                    ApiError::invalid(
                        "since",
                        "since must be an RFC 3339 time, e.g. 2025-01-02T03:04:05Z",
                    )
                })
        })
        .transpose()
}

/// A list's `limit` as a query string sends it: 1–1000, 100 when absent.
pub fn limit(value: Option<&str>) -> Result<usize, ApiError> {
    limit_of(limit_number(value)?)
}

/// A `limit` query parameter as a number, not yet checked against its bounds ([`limit_of`]).
pub fn limit_number(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|text| text.parse::<u64>().map_err(|_| limit_error()))
        .transpose()
}

/// A list's `limit` as a number: 1–1000, 100 when absent.
pub fn limit_of(value: Option<u64>) -> Result<usize, ApiError> {
    match value {
        None => Ok(LIMIT_DEFAULT),
        Some(n) if (1..=LIMIT_MAX as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(limit_error()),
    }
}

/// The answer to a `limit` that is not a number from 1 to 1000.
fn limit_error() -> ApiError {
    ApiError::invalid(
        "limit",
        format!("limit must be an integer from 1 to {LIMIT_MAX}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_engine::{ORDER_TOTAL_MAX, UNIT_PRICE_MAX};

    fn param(error: ApiError) -> String {
        match error {
            ApiError::InvalidRequest { param, .. } => param,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn email_validation() {
        for good in [
            "a@b.co",
            "jane.doe+tag@example.com",
            "x@sub.domain.example",
            "ü@exämple.de",
        ] {
            assert!(email_looks_valid(good), "{good}");
        }
        let long = format!("{}@example.com", "a".repeat(EMAIL_CHARS_MAX));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.co",
            "a@b@c.co",
            "a b@c.co",
            "a@b..co",
            "a@.b.co",
            "a@b.co.",
            "a@b.co\n",
            long.as_str(),
        ] {
            assert!(!email_looks_valid(bad), "{bad:?}");
        }
        let exactly_max = format!("{}@example.com", "a".repeat(EMAIL_CHARS_MAX - 12));
        assert_eq!(exactly_max.len(), EMAIL_CHARS_MAX);
        assert!(email_looks_valid(&exactly_max));
    }

    #[test]
    fn customer_fields_are_checked_in_order() {
        let mut c = CustomerInput {
            name: "Jane".into(),
            email: "jane@example.com".into(),
            phone: None,
            address: None,
        };
        assert!(customer(&c).is_ok());
        c.name = " ".into();
        assert_eq!(param(customer(&c).unwrap_err()), "name");
        c.name = "n".repeat(NAME_CHARS_MAX + 1);
        assert_eq!(param(customer(&c).unwrap_err()), "name");
        c.name = "é".repeat(NAME_CHARS_MAX);
        assert!(customer(&c).is_ok(), "limits count characters, not bytes");
        c.email = "nope".into();
        assert_eq!(param(customer(&c).unwrap_err()), "email");
        c.email = "jane@example.com".into();
        c.phone = Some("1".repeat(PHONE_CHARS_MAX + 1));
        assert_eq!(param(customer(&c).unwrap_err()), "phone");
        c.phone = None;
        c.address = Some("a".repeat(ADDRESS_CHARS_MAX + 1));
        assert_eq!(param(customer(&c).unwrap_err()), "address");
    }

    #[test]
    fn personal_fields_refuse_control_characters() {
        let good = CustomerInput {
            name: "Jane".into(),
            email: "jane@example.com".into(),
            phone: Some("+41 79".into()),
            address: Some("1 Main Street, Zürich".into()),
        };
        assert!(customer(&good).is_ok());
        // The mark of a sealed value first: a client must never be able to send one.
        for bad in [
            "\u{1}1:AAAA",
            "a\nb",
            "tab\there",
            "del\u{7f}",
            "\u{85}next",
        ] {
            let mut c = good.clone();
            c.name = bad.into();
            assert_eq!(param(customer(&c).unwrap_err()), "name", "{bad:?}");
            let mut c = good.clone();
            c.email = format!("{bad}@example.com");
            assert_eq!(param(customer(&c).unwrap_err()), "email", "{bad:?}");
            let mut c = good.clone();
            c.phone = Some(bad.into());
            assert_eq!(param(customer(&c).unwrap_err()), "phone", "{bad:?}");
            let mut c = good.clone();
            c.address = Some(bad.into());
            assert_eq!(param(customer(&c).unwrap_err()), "address", "{bad:?}");
            assert_eq!(
                param(optional_personal_text("shipping_address", Some(bad), 500).unwrap_err()),
                "shipping_address"
            );
        }
    }

    fn line(sku: &str, qty: u32, unit_price: u64) -> OrderLineInput {
        OrderLineInput {
            sku: sku.into(),
            qty,
            unit_price: Some(unit_price),
        }
    }

    #[test]
    fn catalog_priced_lines_may_omit_their_price_and_client_priced_ones_may_not() {
        let unpriced = OrderLineInput {
            sku: "B".into(),
            qty: 2,
            unit_price: None,
        };
        assert_eq!(
            param(order_lines(&[line("A", 1, 1), unpriced.clone()]).unwrap_err()),
            "lines[1].unit_price"
        );
        let (lines, sent) = catalog_order_lines(&[line("A", 1, 5), unpriced]).unwrap();
        assert_eq!(sent, [Some(5), None]);
        assert_eq!((lines[1].qty, lines[1].unit_price), (2, 0));
        // What was sent is still checked against its bounds, and the other shapes too.
        assert_eq!(
            param(catalog_order_lines(&[line("A", 1, UNIT_PRICE_MAX + 1)]).unwrap_err()),
            "lines[0].unit_price"
        );
        assert_eq!(
            param(catalog_order_lines(&[line("A", 0, 1)]).unwrap_err()),
            "lines[0].qty"
        );
        // The total waits for the catalog's prices.
        let mut big = catalog_order_lines(&[line("A", 1000, UNIT_PRICE_MAX), line("B", 1, 1)])
            .unwrap()
            .0;
        assert!(order_amounts(&big[..1]).is_ok());
        big[1].unit_price = 1;
        assert_eq!(
            param(order_amounts(&big).unwrap_err()),
            "lines[1].unit_price"
        );
    }

    #[test]
    fn order_line_rules() {
        assert_eq!(order_lines(&[line("A", 2, 150)]).unwrap()[0].qty, 2);
        assert_eq!(param(order_lines(&[]).unwrap_err()), "lines");
        let many: Vec<_> = (0..=ORDER_LINES_MAX)
            .map(|i| line(&format!("S{i}"), 1, 1))
            .collect();
        assert_eq!(param(order_lines(&many).unwrap_err()), "lines");
        assert!(order_lines(&many[..ORDER_LINES_MAX]).is_ok());
        assert_eq!(
            param(order_lines(&[line("A", 1, 1), line("bad sku", 1, 1)]).unwrap_err()),
            "lines[1].sku"
        );
        assert_eq!(
            param(order_lines(&[line("A", 1, 1), line("A", 1, 1)]).unwrap_err()),
            "lines[1].sku"
        );
        assert_eq!(
            param(order_lines(&[line("A", 1, 1), line("B", 0, 1)]).unwrap_err()),
            "lines[1].qty"
        );
        assert_eq!(
            param(order_lines(&[line("A", 2, u64::MAX)]).unwrap_err()),
            "lines[0].unit_price"
        );
        assert!(
            order_lines(&[line("A", 1, 0)]).is_ok(),
            "a free item is allowed"
        );
    }

    fn problem(error: ApiError) -> (String, String) {
        match error {
            ApiError::InvalidRequest { param, detail } => (param, detail),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn order_line_qty_is_at_most_line_qty_max() {
        assert_eq!(
            order_lines(&[line("A", LINE_QTY_MAX, 1)]).unwrap()[0].qty,
            LINE_QTY_MAX
        );
        assert_eq!(
            problem(order_lines(&[line("A", 1, 1), line("B", LINE_QTY_MAX + 1, 1)]).unwrap_err()),
            (
                "lines[1].qty".to_string(),
                "qty must be at most 1000000".to_string()
            )
        );
        assert_eq!(
            param(order_lines(&[line("A", u32::MAX, 1)]).unwrap_err()),
            "lines[0].qty"
        );
    }

    #[test]
    fn unit_price_is_at_most_unit_price_max() {
        assert_eq!(
            order_lines(&[line("A", 1, UNIT_PRICE_MAX)]).unwrap()[0].unit_price,
            UNIT_PRICE_MAX
        );
        assert_eq!(
            problem(order_lines(&[line("A", 1, 1), line("B", 1, UNIT_PRICE_MAX + 1)]).unwrap_err()),
            (
                "lines[1].unit_price".to_string(),
                "unit_price must be at most 1000000000000 (minor units)".to_string()
            )
        );
    }

    #[test]
    fn order_total_is_at_most_order_total_max() {
        // 1000 × 10^12 = 10^15: exactly the bound, in one line or spread over two.
        assert!(order_lines(&[line("A", 1000, UNIT_PRICE_MAX)]).is_ok());
        assert!(
            order_lines(&[line("A", 999, UNIT_PRICE_MAX), line("B", 1, UNIT_PRICE_MAX)]).is_ok()
        );
        assert_eq!(
            problem(order_lines(&[line("A", 1000, UNIT_PRICE_MAX), line("B", 1, 1)]).unwrap_err()),
            (
                "lines[1].unit_price".to_string(),
                format!("the order total must be at most {ORDER_TOTAL_MAX} (minor units)")
            )
        );
        // Every line at both bounds: 10^20 in all, past u64::MAX; refused at the first line,
        // whose 10^18 alone passes the bound, and nothing overflows on the way.
        let biggest: Vec<_> = (0..ORDER_LINES_MAX)
            .map(|i| line(&format!("S{i}"), LINE_QTY_MAX, UNIT_PRICE_MAX))
            .collect();
        assert_eq!(
            param(order_lines(&biggest).unwrap_err()),
            "lines[0].unit_price"
        );
    }

    fn shipped(sku: &str, qty: u32) -> ShipmentLineInput {
        ShipmentLineInput {
            sku: sku.into(),
            qty,
        }
    }

    #[test]
    fn shipment_line_qty_is_1_to_line_qty_max() {
        assert_eq!(
            shipment_lines(vec![shipped("A", LINE_QTY_MAX)]).unwrap(),
            vec![("A".to_string(), LINE_QTY_MAX)]
        );
        assert_eq!(
            problem(
                shipment_lines(vec![shipped("A", 1), shipped("B", LINE_QTY_MAX + 1)]).unwrap_err()
            ),
            (
                "lines[1].qty".to_string(),
                "qty must be at most 1000000".to_string()
            )
        );
        assert_eq!(
            param(shipment_lines(vec![shipped("A", 0)]).unwrap_err()),
            "lines[0].qty"
        );
        assert_eq!(
            param(shipment_lines(vec![shipped("a/b", 1)]).unwrap_err()),
            "lines[0].sku"
        );
        assert_eq!(param(shipment_lines(Vec::new()).unwrap_err()), "lines");
        let many: Vec<_> = (0..=ORDER_LINES_MAX)
            .map(|i| shipped(&format!("S{i}"), 1))
            .collect();
        assert_eq!(param(shipment_lines(many).unwrap_err()), "lines");
    }

    #[test]
    fn stock_delta_is_at_most_stock_delta_max_either_way() {
        let max = i64::try_from(STOCK_DELTA_MAX).unwrap();
        for good in [1, -1, max, -max] {
            assert!(stock_delta(good).is_ok(), "{good}");
        }
        for bad in [0, max + 1, -max - 1, i64::MAX, i64::MIN] {
            assert_eq!(param(stock_delta(bad).unwrap_err()), "delta", "{bad}");
        }
        assert_eq!(
            problem(stock_delta(max + 1).unwrap_err()).1,
            "delta must be from -1000000000000 to 1000000000000"
        );
    }

    #[test]
    fn limits_and_keys() {
        assert_eq!(limit(None).unwrap(), LIMIT_DEFAULT);
        assert_eq!(limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "abc", ""] {
            assert_eq!(param(limit(Some(bad)).unwrap_err()), "limit");
        }
        assert!(idempotency_key("k").is_ok());
        assert!(idempotency_key(&"k".repeat(255)).is_ok());
        assert_eq!(param(idempotency_key("").unwrap_err()), "Idempotency-Key");
        assert_eq!(
            param(idempotency_key(&"k".repeat(256)).unwrap_err()),
            "Idempotency-Key"
        );
        assert!(sku("sku", "A-1.b_2").is_ok());
        assert_eq!(param(sku("sku", "a/b").unwrap_err()), "sku");
    }
}

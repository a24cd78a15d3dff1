//! Validation of decoded requests before they reach the engine: SKUs, quantities, text lengths,
//! e-mail addresses, order lines. Each failure names the offending field as `param`.
//!
//! These checks are about the shape of a request. Business rules (stock, transitions,
//! idempotency) stay in the engine.

use std::collections::HashSet;

use orderd_engine::{sku_is_valid, NewLine, ORDER_LINES_MAX, SKU_LENGTH_MAX};
use orderd_proto::{CreateCustomerRequest, OrderLineRequest};

use crate::error::ApiError;

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
pub fn customer(c: &CreateCustomerRequest) -> Result<(), ApiError> {
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

/// Order lines: 1–100 of them, each a valid SKU at most once, qty ≥ 1, and a total that fits
/// in 64 bits. Returns the engine's lines.
pub fn order_lines(lines: &[OrderLineRequest]) -> Result<Vec<NewLine>, ApiError> {
    if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid(
            "lines",
            format!("an order has 1 to {ORDER_LINES_MAX} lines"),
        ));
    }
    let mut seen = HashSet::with_capacity(lines.len());
    let mut total: u64 = 0;
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
        if line.qty == 0 {
            return Err(ApiError::invalid(
                format!("lines[{i}].qty"),
                "qty must be at least 1",
            ));
        }
        total = u64::from(line.qty)
            .checked_mul(line.unit_price)
            .and_then(|amount| total.checked_add(amount))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("lines[{i}].unit_price"),
                    "the order total does not fit in 64 bits",
                )
            })?;
        out.push(NewLine {
            sku: line.sku.clone(),
            qty: line.qty,
            unit_price: line.unit_price,
        });
    }
    debug_assert_eq!(out.len(), lines.len());
    Ok(out)
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

/// A list's `limit`: 1–1000, 100 when absent.
pub fn limit(value: Option<&str>) -> Result<usize, ApiError> {
    let Some(value) = value else {
        return Ok(LIMIT_DEFAULT);
    };
    match value.parse::<usize>() {
        Ok(n) if (1..=LIMIT_MAX).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            "limit",
            format!("limit must be an integer from 1 to {LIMIT_MAX}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut c = CreateCustomerRequest {
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
        let good = CreateCustomerRequest {
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

    fn line(sku: &str, qty: u32, unit_price: u64) -> OrderLineRequest {
        OrderLineRequest {
            sku: sku.into(),
            qty,
            unit_price,
        }
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

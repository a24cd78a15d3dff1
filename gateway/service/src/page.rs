//! Pages that fit a byte bound: a list page whose encoding would be longer than the bound holds
//! fewer items, and its `next` continues after the last item it keeps.

use orderd_engine::domain::{OrderCursor, OrderView};

use crate::ApiError;

/// The cursor that continues a listing after `view` (what `next` is when a page ends with it).
pub fn cursor_after(view: &OrderView) -> String {
    OrderCursor {
        created_at_us: view.created_at_us,
        id: view.id,
    }
    .to_string()
}

/// Encodes a page of `items` (each with the cursor that continues after it, [`cursor_after`])
/// ending with `next`. When that is longer than `max_bytes`, the longest prefix of the items
/// whose encoding fits, with `next` the cursor after its last item: a client that follows
/// `next` sees every item once, in the same order, whatever the bound. `encode` encodes a page
/// of some items and a `next`; it is called again only for a page that does not fit (a binary
/// search over the prefix length). An error when not even the first item fits.
pub fn encode_fitting<W: Clone>(
    items: Vec<(W, String)>,
    next: Option<String>,
    max_bytes: usize,
    encode: impl Fn(Vec<W>, Option<String>) -> Vec<u8>,
    limit_name: &str,
) -> Result<Vec<u8>, ApiError> {
    let (items, cursors): (Vec<W>, Vec<String>) = items.into_iter().unzip();
    let count = items.len();
    let whole = encode(items.clone(), next);
    if whole.len() <= max_bytes {
        return Ok(whole);
    }
    let prefix = |kept: usize| encode(items[..kept].to_vec(), Some(cursors[kept - 1].clone()));
    // The longest fitting prefix: `fits` fits (or is 0), `fails` does not.
    let (mut fits, mut fails) = (0usize, count);
    let mut best = None;
    while fails - fits > 1 {
        let middle = fits + (fails - fits) / 2;
        let bytes = prefix(middle);
        if bytes.len() <= max_bytes {
            fits = middle;
            best = Some(bytes);
        } else {
            fails = middle;
        }
    }
    if fits == 0 {
        // `fails` is 1 here: check the one-item page, never tried by the search.
        let bytes = prefix(1);
        if bytes.len() <= max_bytes {
            return Ok(bytes);
        }
        return Err(ApiError::Internal(format!(
            "one order of this page encodes to more than {limit_name} ({max_bytes} bytes); \
             raise {limit_name}"
        )));
    }
    Ok(best.expect("a fitting prefix was encoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as JSON-ish text: items joined, then the cursor.
    fn encode(items: Vec<String>, next: Option<String>) -> Vec<u8> {
        format!("[{}]{}", items.join(","), next.unwrap_or_default()).into_bytes()
    }

    fn items(count: usize, width: usize) -> Vec<(String, String)> {
        (0..count)
            .map(|i| (format!("{i:0width$}"), format!("c{i}")))
            .collect()
    }

    #[test]
    fn a_page_that_fits_is_encoded_whole() {
        let bytes = encode_fitting(items(5, 3), Some("end".into()), 1000, encode, "x").unwrap();
        assert_eq!(bytes, b"[000,001,002,003,004]end");
    }

    #[test]
    fn a_long_page_keeps_the_longest_fitting_prefix_and_continues_after_it() {
        for max in 8..200 {
            let bytes = match encode_fitting(items(40, 3), None, max, encode, "x") {
                Ok(bytes) => String::from_utf8(bytes).unwrap(),
                Err(_) => {
                    // Only when one item and its cursor do not fit: "[000]c0" is 7 bytes.
                    assert!(max < 7);
                    continue;
                }
            };
            assert!(bytes.len() <= max, "{bytes} is longer than {max}");
            let kept = bytes.matches(',').count() + 1;
            // One more item would not have fitted.
            let longer = encode(
                (0..=kept).map(|i| format!("{i:03}")).collect(),
                Some(format!("c{kept}")),
            );
            if kept == 40 {
                assert!(
                    bytes.ends_with(']'),
                    "the whole page has no cursor: {bytes}"
                );
            } else {
                assert!(longer.len() > max, "{kept} items kept of {max} bytes");
                assert!(bytes.ends_with(&format!("]c{}", kept - 1)), "{bytes}");
            }
        }
    }

    #[test]
    fn a_first_item_larger_than_the_bound_is_an_error_naming_the_limit() {
        let error = encode_fitting(items(3, 50), None, 20, encode, "tcp.max_frame_bytes")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tcp.max_frame_bytes"), "{error}");
    }
}

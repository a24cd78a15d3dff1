//! The fault side of a shard: fingerprints of client commands (so that a command that made a
//! shard panic can be quarantined), the quarantine's answer, and refusing a command unapplied.

use super::*;

/// The error of a quarantined command.
pub(super) fn quarantined(kind: &str, fingerprint: u64) -> CommandError {
    CommandError::Quarantined(format!(
        "{kind} (command {fingerprint:016x}) made a shard panic twice and is refused; see GET /v1/ops/quarantine (an operator lifts it with DELETE /v1/ops/quarantine/{fingerprint:016x}) and GET /v1/ops/incidents"
    ))
}

/// Answers a client command with an error without applying it.
pub(super) fn refuse(cmd: ClientCmd, error: CommandError) {
    fn send<T>(reply: Reply<T>, error: CommandError) {
        let _ = reply.send(Err(error));
    }
    match cmd {
        ClientCmd::AdjustStock { reply, .. }
        | ClientCmd::GetStock { reply, .. }
        | ClientCmd::TransferStock { reply, .. } => send(reply, error),
        ClientCmd::SetLocation { reply, .. } => send(reply, error),
        ClientCmd::ListLocations { reply } => send(reply, error),
        ClientCmd::SetPrice { reply, .. } | ClientCmd::GetPrice { reply, .. } => send(reply, error),
        ClientCmd::CatalogPage { reply, .. } => send(reply, error),
        ClientCmd::CatalogPrices { reply, .. } => send(reply, error),
        ClientCmd::CreateCustomer { reply, .. }
        | ClientCmd::GetCustomer { reply, .. }
        | ClientCmd::UpdateCustomer { reply, .. }
        | ClientCmd::EraseCustomer { reply, .. } => send(reply, error),
        ClientCmd::ReserveCustomerId { reply } => send(reply, error),
        ClientCmd::Place { reply, .. }
        | ClientCmd::GetOrder { reply, .. }
        | ClientCmd::Cancel { reply, .. } => send(reply, error),
        ClientCmd::PlaceBatch { reply, .. } => send(reply, error),
        ClientCmd::CustomersExist { reply, .. } => send(reply, error),
        ClientCmd::ListOrders { reply, .. } | ClientCmd::OrdersBetween { reply, .. } => {
            send(reply, error)
        }
        ClientCmd::Ship { reply, .. }
        | ClientCmd::ShipmentEvent { reply, .. }
        | ClientCmd::GetShipment { reply, .. } => send(reply, error),
        ClientCmd::Sales { reply, .. } => send(reply, error),
        ClientCmd::CreateReturn { reply, .. }
        | ClientCmd::ReceiveReturn { reply, .. }
        | ClientCmd::GetReturn { reply, .. } => send(reply, error),
        ClientCmd::Refund { reply, .. } => send(reply, error),
        ClientCmd::Reseal { reply, .. } | ClientCmd::StateDigest { reply, .. } => {
            send(reply, error)
        }
        ClientCmd::Snapshot { reply } => send(reply, error),
    }
}

pub(super) fn hash_u64(seed: u64, value: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&value.to_le_bytes(), seed)
}

pub(super) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed)
}

/// Names a client command and hashes what identifies it (its kind and arguments, never who
/// asks or when), so the same command sent again has the same fingerprint across restarts.
/// `None` for commands that are not quarantined one by one: placements (fingerprinted per
/// order in `place`), listings and the internal ones.
pub(super) fn fingerprint(cmd: &ClientCmd) -> Option<(&'static str, u64)> {
    let (kind, bytes, number): (&'static str, &[u8], u64) = match cmd {
        ClientCmd::AdjustStock { sku, delta, .. } => {
            ("adjust_stock", sku.as_bytes(), *delta as u64)
        }
        ClientCmd::GetStock { sku, .. } => ("get_stock", sku.as_bytes(), 0),
        ClientCmd::TransferStock { sku, qty, .. } => ("transfer_stock", sku.as_bytes(), *qty),
        ClientCmd::SetLocation { id, priority, .. } => {
            ("set_location", id.as_bytes(), u64::from(*priority))
        }
        ClientCmd::SetPrice {
            sku, price, active, ..
        } => (
            "set_price",
            sku.as_bytes(),
            hash_u64(*price, u64::from(*active)),
        ),
        ClientCmd::GetPrice { sku, .. } => ("get_price", sku.as_bytes(), 0),
        // Personal data arrives sealed under a fresh nonce, so a repeat differs; the
        // supervisor's restart intensity bounds a customer that keeps panicking.
        ClientCmd::CreateCustomer { customer, .. } => {
            ("create_customer", customer.email.as_bytes(), 0)
        }
        ClientCmd::GetCustomer { id, .. } => ("get_customer", &[], id.0),
        ClientCmd::UpdateCustomer { id, .. } => ("update_customer", &[], id.0),
        ClientCmd::EraseCustomer { id, .. } => ("erase_customer", &[], id.0),
        ClientCmd::GetOrder { id, .. } => ("get_order", &[], id.0),
        ClientCmd::Cancel { id, .. } => ("cancel_order", &[], id.0),
        ClientCmd::Ship { shipment, .. } => {
            ("ship", shipment.carrier.as_bytes(), shipment.order_id.0)
        }
        ClientCmd::ShipmentEvent { id, status, .. } => {
            ("shipment_event", status.as_str().as_bytes(), id.0)
        }
        ClientCmd::GetShipment { id, .. } => ("get_shipment", &[], id.0),
        ClientCmd::CreateReturn { ret, .. } => {
            ("create_return", ret.reason.as_bytes(), ret.order_id.0)
        }
        ClientCmd::ReceiveReturn { id, .. } => ("receive_return", &[], id.0),
        ClientCmd::GetReturn { id, .. } => ("get_return", &[], id.0),
        ClientCmd::Refund { refund, .. } => (
            "refund",
            refund.reason.as_bytes(),
            hash_u64(refund.order_id.0, refund.amount),
        ),
        ClientCmd::Sales { from_us, to_us, .. } => (
            "sales_summary",
            &[],
            hash_u64(*from_us as u64, *to_us as u64),
        ),
        ClientCmd::OrdersBetween { from_us, to_us, .. } => (
            "orders_between",
            &[],
            hash_u64(*from_us as u64, *to_us as u64),
        ),
        ClientCmd::Place { .. }
        | ClientCmd::PlaceBatch { .. }
        | ClientCmd::CatalogPage { .. }
        | ClientCmd::ListLocations { .. }
        | ClientCmd::CatalogPrices { .. }
        | ClientCmd::CustomersExist { .. }
        | ClientCmd::ReserveCustomerId { .. }
        | ClientCmd::ListOrders { .. }
        | ClientCmd::Reseal { .. }
        | ClientCmd::Snapshot { .. }
        | ClientCmd::StateDigest { .. } => return None,
    };
    let seed = hash_bytes(0, kind.as_bytes());
    Some((kind, hash_u64(hash_bytes(seed, bytes), number)))
}

/// The fingerprint of one order: the whole command but who sends it and when. With an
/// Idempotency-Key that is the hash of the request body the gateway computed (plaintext, so a
/// retry has the same fingerprint although its address is sealed under a fresh nonce) and the
/// customer; without one, the customer, every line (SKU, quantity, price), the sealed address
/// and the note. So an order equal to a quarantined one except in price or address is not
/// refused with it.
pub(super) fn place_fingerprint(place: &PlaceOrder) -> u64 {
    let mut hash = hash_u64(hash_bytes(0, b"place_order"), place.customer_id.0);
    if let Some(idem) = &place.idempotency {
        return hash_bytes(hash, &idem.request_hash.to_le_bytes());
    }
    for line in &place.lines {
        hash = hash_u64(hash_bytes(hash, line.sku.as_bytes()), u64::from(line.qty));
        hash = hash_u64(hash, line.unit_price);
    }
    for text in [&place.shipping_address, &place.note] {
        hash = match text {
            Some(text) => hash_bytes(hash_u64(hash, 1), text.as_bytes()),
            None => hash_u64(hash, 0),
        };
    }
    hash
}

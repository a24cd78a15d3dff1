//! Connections open per peer address, for both front doors: `tcp.max_connections_per_peer` and
//! `http.max_connections_per_peer`, so that one client cannot take every connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections open per peer address.
#[derive(Default)]
pub struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

impl PeerCounts {
    /// One more connection of `ip`, unless it holds `max` already; the slot frees it on drop.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection of a peer address, counted until dropped.
pub struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
/// What an HTTP connection's `on_connect` decided about its peer: a counted slot, or, when the
/// peer holds `http.max_connections_per_peer` already, the refusal every request on this
/// connection gets (actix cannot refuse a connection it accepted; it answers 429 and closes).
pub enum Admission {
    Admitted(PeerSlot),
    Refused { ip: IpAddr, max: usize },
}

impl Admission {
    /// Counts a new connection of `ip` against `max`.
    pub fn of(counts: &Arc<PeerCounts>, ip: IpAddr, max: usize) -> Admission {
        match counts.enter(ip, max) {
            Some(slot) => Admission::Admitted(slot),
            None => Admission::Refused { ip, max },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_at_most_max_slots_and_a_dropped_slot_frees_one() {
        let counts = Arc::new(PeerCounts::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = counts.enter(a, 2).expect("first");
        let _second = counts.enter(a, 2).expect("second");
        assert!(counts.enter(a, 2).is_none(), "a third of the same peer");
        assert!(counts.enter(b, 2).is_some(), "another peer is not affected");
        drop(first);
        assert!(counts.enter(a, 2).is_some(), "a slot freed on drop");
        let _held = counts.enter(a, 2);
        assert!(matches!(
            Admission::of(&counts, a, 2),
            Admission::Refused { max: 2, .. }
        ));
    }
}

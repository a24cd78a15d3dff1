//! Refusals (401, 403) counted per peer address in windows, so that a flood of bad requests
//! writes one audit entry and one WARN line per peer per window, not one per request.
//!
//! The first refusal of a peer in a window is reported at once ([`Verdict::First`]: write its
//! entry and log it); the rest of that window are only counted, and reported as one
//! [`Closed`] (peer, count) when the window closes ([`RefusalWindows::close_expired`]) or at
//! shutdown ([`RefusalWindows::close_all`]). At most `peers_max` peers are tracked at once;
//! refusals of further peers are counted together in one overflow window (peer `None`), so
//! memory stays bounded whatever the number of addresses. Time is passed in (microseconds),
//! so the behaviour is tested without clocks.
//!
//! The audit log keeps one ([`crate::audit::AuditLog::refusal_from`]), which the HTTP
//! middleware and the TCP front door call for every 401 (and HTTP for every 403).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// What to do with one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first of this peer's window (or of the overflow window): write its entry and log
    /// it now.
    First,
    /// Counted in the open window; reported when the window closes.
    Counted,
}

/// A closed window with refusals beyond its first: `count` more from `peer` (`None`: the
/// overflow of untracked peers) between `opened_us` and its close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub peer: Option<IpAddr>,
    pub opened_us: i64,
    pub count: u64,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    opened_us: i64,
    /// Refusals after the first.
    counted: u64,
}

#[derive(Debug, Default)]
struct Windows {
    peers: HashMap<IpAddr, Window>,
    overflow: Option<Window>,
}

/// Open refusal windows, one per peer (at most `peers_max`) plus the overflow.
#[derive(Debug)]
pub struct RefusalWindows {
    window_us: i64,
    peers_max: usize,
    windows: Mutex<Windows>,
}

impl RefusalWindows {
    /// Windows of `window_s` seconds (at least 1), tracking at most `peers_max` peers (at
    /// least 1).
    pub fn new(window_s: u64, peers_max: usize) -> RefusalWindows {
        RefusalWindows {
            window_us: i64::try_from(window_s.max(1))
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
            peers_max: peers_max.max(1),
            windows: Mutex::new(Windows::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // Every update leaves the maps whole: a panic elsewhere cannot leave them half done.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes one refusal from `peer` at `now_us`. A window past its length is closed first
    /// (what it counted is lost here: call [`RefusalWindows::close_expired`] periodically to
    /// report it).
    pub fn note(&self, peer: IpAddr, now_us: i64) -> (Verdict, Option<Closed>) {
        let mut windows = self.lock();
        let expired = |w: &Window| now_us.saturating_sub(w.opened_us) >= self.window_us;
        if let Some(window) = windows.peers.get_mut(&peer) {
            if !expired(window) {
                window.counted = window.counted.saturating_add(1);
                return (Verdict::Counted, None);
            }
            let closed = (window.counted > 0).then_some(Closed {
                peer: Some(peer),
                opened_us: window.opened_us,
                count: window.counted,
            });
            *window = Window {
                opened_us: now_us,
                counted: 0,
            };
            return (Verdict::First, closed);
        }
        if windows.peers.len() < self.peers_max {
            windows.peers.insert(
                peer,
                Window {
                    opened_us: now_us,
                    counted: 0,
                },
            );
            return (Verdict::First, None);
        }
        match &mut windows.overflow {
            Some(window) if !expired(window) => {
                window.counted = window.counted.saturating_add(1);
                (Verdict::Counted, None)
            }
            slot => {
                let closed = slot.filter(|w| w.counted > 0).map(|w| Closed {
                    peer: None,
                    opened_us: w.opened_us,
                    count: w.counted,
                });
                *slot = Some(Window {
                    opened_us: now_us,
                    counted: 0,
                });
                (Verdict::First, closed)
            }
        }
    }

    /// Closes every window past its length at `now_us`, forgetting its peer (which frees a
    /// place for another), and returns those that counted refusals beyond their first.
    pub fn close_expired(&self, now_us: i64) -> Vec<Closed> {
        let window_us = self.window_us;
        let mut windows = self.lock();
        let mut closed = Vec::new();
        windows.peers.retain(|peer, w| {
            let keep = now_us.saturating_sub(w.opened_us) < window_us;
            if !keep && w.counted > 0 {
                closed.push(Closed {
                    peer: Some(*peer),
                    opened_us: w.opened_us,
                    count: w.counted,
                });
            }
            keep
        });
        if let Some(w) = windows.overflow {
            if now_us.saturating_sub(w.opened_us) >= window_us {
                windows.overflow = None;
                if w.counted > 0 {
                    closed.push(Closed {
                        peer: None,
                        opened_us: w.opened_us,
                        count: w.counted,
                    });
                }
            }
        }
        closed.sort_by_key(|c| (c.opened_us, c.peer));
        closed
    }

    /// Closes every window (at shutdown) and returns those with refusals beyond their first.
    pub fn close_all(&self) -> Vec<Closed> {
        self.close_expired(i64::MAX)
    }

    /// Peers tracked now (at most `peers_max`).
    pub fn tracked(&self) -> usize {
        self.lock().peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_first_refusal_of_a_window_is_reported_the_rest_counted_until_it_closes() {
        let windows = RefusalWindows::new(10, 100);
        assert_eq!(windows.note(ip(1), 0), (Verdict::First, None));
        for t in 1..=999 {
            assert_eq!(windows.note(ip(1), t * 1000), (Verdict::Counted, None));
        }
        // Another peer has its own window.
        assert_eq!(windows.note(ip(2), 5 * S), (Verdict::First, None));
        assert!(windows.close_expired(10 * S - 1).is_empty(), "still open");
        assert_eq!(
            windows.close_expired(10 * S),
            vec![Closed {
                peer: Some(ip(1)),
                opened_us: 0,
                count: 999
            }]
        );
        // Peer 2 refused once: nothing to report when its window closes, and it is forgotten.
        assert!(windows.close_expired(15 * S).is_empty());
        assert_eq!(windows.tracked(), 0);
        assert_eq!(windows.note(ip(1), 16 * S), (Verdict::First, None));
    }

    #[test]
    fn a_refusal_after_the_window_opens_a_new_one_and_reports_the_old() {
        let windows = RefusalWindows::new(10, 100);
        windows.note(ip(1), 0);
        windows.note(ip(1), S);
        windows.note(ip(1), 2 * S);
        assert_eq!(
            windows.note(ip(1), 10 * S),
            (
                Verdict::First,
                Some(Closed {
                    peer: Some(ip(1)),
                    opened_us: 0,
                    count: 2
                })
            )
        );
        assert_eq!(windows.note(ip(1), 11 * S), (Verdict::Counted, None));
    }

    #[test]
    fn peers_past_the_maximum_share_one_overflow_window_and_memory_stays_bounded() {
        let windows = RefusalWindows::new(60, 3);
        for n in 0..3 {
            assert_eq!(windows.note(ip(n), 0).0, Verdict::First);
        }
        // 200 more addresses: the first opens the overflow window, the rest are counted in it.
        assert_eq!(windows.note(ip(3), S).0, Verdict::First);
        for n in 4..=203u8 {
            assert_eq!(windows.note(ip(n), S).0, Verdict::Counted);
        }
        assert_eq!(windows.tracked(), 3, "no more peers than the maximum");
        assert_eq!(
            windows.close_all(),
            vec![Closed {
                peer: None,
                opened_us: S,
                count: 200
            }]
        );
        assert_eq!(windows.tracked(), 0);
    }

    #[test]
    fn shutdown_reports_every_open_window_that_counted() {
        let windows = RefusalWindows::new(3600, 10);
        windows.note(ip(1), 0);
        windows.note(ip(1), 1);
        windows.note(ip(2), 2);
        windows.note(ip(2), 3);
        windows.note(ip(2), 4);
        windows.note(ip(3), 5);
        assert_eq!(
            windows.close_all(),
            vec![
                Closed {
                    peer: Some(ip(1)),
                    opened_us: 0,
                    count: 1
                },
                Closed {
                    peer: Some(ip(2)),
                    opened_us: 2,
                    count: 2
                },
            ]
        );
    }
}

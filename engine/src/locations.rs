//! Stock locations (warehouses): per-location buckets of a SKU's stock, the allocation of
//! order lines to locations by priority, and the walk of those allocations when units ship,
//! are released or come back.
//!
//! A SKU's totals stay in [`ShardData::stock`]; the locations other than `default` that ever
//! held it are its buckets ([`ShardData::buckets`]), and the `default` bucket is what the
//! totals hold beyond them. A SKU that never touched another location has no buckets, so a
//! store without locations keeps exactly its old state, snapshots and costs.
//!
//! Allocation is a function of the shard's state when `OrderPlaced` or `Reserved` applies:
//! locations by (priority, id), each giving what it has available until the line is covered.
//! Live and replayed shards apply the same events to the same state, so they allocate alike;
//! the allocation is kept ([`ShardData::allocated`]) only when it touches a location other
//! than `default`, and units ship (and are released) in its order.

use std::sync::Arc;

use crate::domain::{
    LocationStockView, LocationView, OrderId, DEFAULT_LOCATION, DEFAULT_LOCATION_NAME,
    DEFAULT_LOCATION_PRIORITY,
};
use crate::state::{ShardData, Stock};

/// A defined location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub name: Box<str>,
    pub priority: u32,
    pub created_us: i64,
    pub updated_us: i64,
}

/// A SKU's stock at one location other than `default`. Invariant: `reserved <= on_hand`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub location: Arc<str>,
    pub on_hand: u64,
    pub reserved: u64,
}

/// A SKU's buckets, sorted by location id.
pub type Buckets = Box<[Bucket]>;

/// Units of one SKU of an order reserved at one location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alloc {
    pub sku: Arc<str>,
    pub location: Arc<str>,
    pub qty: u32,
}

/// An order's allocation on one shard, in the order its units ship (lines in order, each
/// line's locations by priority).
pub type Allocation = Box<[Alloc]>;

/// What a change does to the units of a stretch of an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Shipped: out of `on_hand` and `reserved`.
    Ship,
    /// Released (a cancel, a released hold): out of `reserved`.
    Release,
}

impl ShardData {
    /// The priority of a location (`u32::MAX` for one this shard does not know, never
    /// expected: buckets exist only at defined locations).
    pub fn location_priority(&self, id: &str) -> u32 {
        match self.locations.get(id) {
            Some(location) => location.priority,
            None if id == DEFAULT_LOCATION => DEFAULT_LOCATION_PRIORITY,
            None => u32::MAX,
        }
    }

    /// Whether `id` names a location (`default` always does).
    pub fn location_exists(&self, id: &str) -> bool {
        id == DEFAULT_LOCATION || self.locations.contains_key(id)
    }

    /// How many locations there are, `default` included.
    pub fn location_count(&self) -> usize {
        self.locations.len() + usize::from(!self.locations.contains_key(DEFAULT_LOCATION))
    }

    /// Every location, in id order, `default` included.
    pub fn location_views(&self) -> Vec<LocationView> {
        let mut views: Vec<LocationView> = self
            .locations
            .iter()
            .map(|(id, l)| LocationView {
                id: id.to_string(),
                name: l.name.to_string(),
                priority: l.priority,
                created_at_us: l.created_us,
                updated_at_us: l.updated_us,
            })
            .collect();
        if !self.locations.contains_key(DEFAULT_LOCATION) {
            views.push(LocationView {
                id: DEFAULT_LOCATION.into(),
                name: DEFAULT_LOCATION_NAME.into(),
                priority: DEFAULT_LOCATION_PRIORITY,
                created_at_us: 0,
                updated_at_us: 0,
            });
            views.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        }
        views
    }

    /// Applies `LocationSet`: defines or redefines a location.
    pub(crate) fn set_location(&mut self, id: &str, name: &str, priority: u32, at_us: i64) {
        assert!(crate::domain::location_is_valid(id), "invalid location id");
        let id = self.intern(id);
        let created_us = self.locations.get(&id).map_or(at_us, |l| l.created_us);
        self.locations.insert(
            id,
            Location {
                name: name.into(),
                priority,
                created_us,
                updated_us: at_us,
            },
        );
    }

    /// A SKU's stock at one location (the `default` bucket is the totals less the others).
    pub fn stock_at(&self, sku: &str, location: &str) -> Stock {
        let total = self.stock.get(sku).copied().unwrap_or_default();
        let buckets = self.buckets.get(sku);
        if location == DEFAULT_LOCATION {
            let mut rest = total;
            for bucket in buckets.iter().flat_map(|b| b.iter()) {
                rest.on_hand -= bucket.on_hand;
                rest.reserved -= bucket.reserved;
            }
            return rest;
        }
        buckets
            .and_then(|b| b.iter().find(|b| *b.location == *location))
            .map_or(Stock::default(), |b| Stock {
                on_hand: b.on_hand,
                reserved: b.reserved,
            })
    }

    /// A SKU's stock per location: `default` first, then its buckets by id.
    pub fn location_stock_views(&self, sku: &str) -> Vec<LocationStockView> {
        let view = |location: &str, stock: Stock| LocationStockView {
            location: location.to_string(),
            on_hand: stock.on_hand,
            reserved: stock.reserved,
            available: stock.available(),
        };
        let mut views = vec![view(DEFAULT_LOCATION, self.stock_at(sku, DEFAULT_LOCATION))];
        if let Some(buckets) = self.buckets.get(sku) {
            for bucket in buckets.iter() {
                views.push(view(
                    &bucket.location,
                    Stock {
                        on_hand: bucket.on_hand,
                        reserved: bucket.reserved,
                    },
                ));
            }
        }
        views
    }

    /// The bucket of `sku` at `location` (not `default`), created empty when missing.
    fn bucket_mut(&mut self, sku: &Arc<str>, location: &str) -> &mut Bucket {
        debug_assert_ne!(location, DEFAULT_LOCATION);
        let location = self.intern(location);
        let buckets = self.buckets.get_or_default(sku.clone());
        let index = match buckets.binary_search_by(|b| b.location.cmp(&location)) {
            Ok(index) => index,
            Err(index) => {
                let mut grown = std::mem::take(buckets).into_vec();
                grown.insert(
                    index,
                    Bucket {
                        location,
                        on_hand: 0,
                        reserved: 0,
                    },
                );
                *buckets = grown.into_boxed_slice();
                index
            }
        };
        &mut buckets[index]
    }

    /// Adds `delta` to `on_hand` of `sku` at `location` and to its total. Panics below
    /// `reserved` (the command checked).
    pub(crate) fn adjust_at(&mut self, sku: &str, location: &str, delta: i64) {
        let sku = self.intern(sku);
        let stock = self.stock.get_or_default(sku.clone());
        let on_hand = stock.on_hand as i128 + delta as i128;
        assert!(
            on_hand >= stock.reserved as i128,
            "adjustment below reserved"
        );
        stock.on_hand = on_hand as u64;
        if location != DEFAULT_LOCATION {
            let bucket = self.bucket_mut(&sku, location);
            let on_hand = bucket.on_hand as i128 + delta as i128;
            assert!(
                on_hand >= bucket.reserved as i128,
                "adjustment below reserved at a location"
            );
            bucket.on_hand = on_hand as u64;
        }
        debug_assert!(
            self.stock_at(&sku, DEFAULT_LOCATION).on_hand
                >= self.stock_at(&sku, DEFAULT_LOCATION).reserved
        );
    }

    /// Restocks `qty` units of `sku` at `location` (a return), saturating like the totals.
    pub(crate) fn restock_at(&mut self, sku: &str, location: &str, qty: u32) {
        let sku = self.intern(sku);
        let stock = self.stock.get_or_default(sku.clone());
        stock.on_hand = stock.on_hand.saturating_add(u64::from(qty));
        if location != DEFAULT_LOCATION && self.location_exists(location) {
            let bucket = self.bucket_mut(&sku, location);
            bucket.on_hand = bucket.on_hand.saturating_add(u64::from(qty));
        }
    }

    /// Applies `StockTransferred`: `qty` available units of `sku` from one location to
    /// another; the totals do not change.
    pub(crate) fn transfer(&mut self, sku: &str, from: &str, to: &str, qty: u64) {
        assert_ne!(from, to, "transfer to the same location");
        let available = self.stock_at(sku, from).available();
        assert!(qty <= available, "transfer of more than available");
        let sku = self.intern(sku);
        if from != DEFAULT_LOCATION {
            self.bucket_mut(&sku, from).on_hand -= qty;
        }
        if to != DEFAULT_LOCATION {
            let bucket = self.bucket_mut(&sku, to);
            bucket.on_hand = bucket.on_hand.checked_add(qty).expect("on_hand overflow");
        }
    }

    /// Allocates `qty` units of `sku` to locations by (priority, id), reserving them in the
    /// buckets (the caller reserves the total). Deterministic from the state; panics when
    /// the locations hold fewer available units than `qty` (the command checked the total,
    /// and the buckets sum to it).
    pub(crate) fn allocate(&mut self, sku: &Arc<str>, qty: u32, into: &mut Vec<Alloc>) {
        let default_location = self.intern(DEFAULT_LOCATION);
        let Some(buckets) = self.buckets.get(sku) else {
            into.push(Alloc {
                sku: sku.clone(),
                location: default_location,
                qty,
            });
            return;
        };
        // (priority, location, available, index of its bucket; `usize::MAX`: `default`,
        // whose share is the totals less the buckets').
        let total = self.stock.get(sku).copied().unwrap_or_default();
        let mut rest = total;
        let mut candidates: Vec<(u32, Arc<str>, u64, usize)> =
            Vec::with_capacity(buckets.len() + 1);
        for (index, bucket) in buckets.iter().enumerate() {
            rest.on_hand -= bucket.on_hand;
            rest.reserved -= bucket.reserved;
            candidates.push((
                self.location_priority(&bucket.location),
                bucket.location.clone(),
                bucket.on_hand - bucket.reserved,
                index,
            ));
        }
        candidates.push((
            self.location_priority(DEFAULT_LOCATION),
            default_location,
            rest.available(),
            usize::MAX,
        ));
        candidates.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let buckets = self.buckets.get_mut(sku).expect("read above");
        let mut left = u64::from(qty);
        for (_, location, available, index) in candidates {
            if left == 0 {
                break;
            }
            let take = left.min(available);
            if take == 0 {
                continue;
            }
            left -= take;
            if index != usize::MAX {
                let bucket = &mut buckets[index];
                bucket.reserved += take;
                debug_assert!(bucket.reserved <= bucket.on_hand);
            }
            into.push(Alloc {
                sku: sku.clone(),
                location,
                qty: take as u32,
            });
        }
        assert_eq!(left, 0, "allocation short of the available total");
    }

    /// Keeps an allocation when any of it is at a location other than `default` (all at
    /// `default` is what no entry means).
    pub(crate) fn keep_allocation(&mut self, order: OrderId, allocation: Vec<Alloc>) {
        if allocation.iter().any(|a| *a.location != *DEFAULT_LOCATION) {
            self.allocated.insert(order, allocation.into_boxed_slice());
        }
    }

    /// The (location, units) of units `from..from + count` of `sku` in the allocation `of`
    /// (none: all at `default`), in order.
    pub fn allocation_stretch(
        of: Option<&Allocation>,
        sku: &str,
        from: u32,
        count: u32,
    ) -> Vec<(Arc<str>, u32)> {
        let Some(allocation) = of else {
            return vec![(Arc::from(DEFAULT_LOCATION), count)];
        };
        let mut out: Vec<(Arc<str>, u32)> = Vec::new();
        let (mut position, end) = (0u32, from.saturating_add(count));
        for alloc in allocation.iter().filter(|a| *a.sku == *sku) {
            let (start, stop) = (position, position + alloc.qty);
            position = stop;
            let (lo, hi) = (start.max(from), stop.min(end));
            if lo < hi {
                out.push((alloc.location.clone(), hi - lo));
            }
        }
        let covered: u32 = out.iter().map(|(_, n)| n).sum();
        if covered < count {
            // Units beyond the kept allocation (never expected): at `default`.
            out.push((Arc::from(DEFAULT_LOCATION), count - covered));
        }
        out
    }

    /// Ships or releases units `from..from + count` of `sku` of `order`'s allocation on this
    /// shard out of its buckets (the caller changes the totals).
    pub(crate) fn walk_allocation(
        &mut self,
        order: OrderId,
        sku: &Arc<str>,
        from: u32,
        count: u32,
        walk: Walk,
    ) {
        if count == 0 || !self.allocated.contains_key(&order) {
            return;
        }
        let stretch = Self::allocation_stretch(self.allocated.get(&order), sku, from, count);
        for (location, units) in stretch {
            if *location == *DEFAULT_LOCATION {
                continue;
            }
            let bucket = self.bucket_mut(sku, &location);
            let units = u64::from(units);
            bucket.reserved -= units;
            if walk == Walk::Ship {
                bucket.on_hand -= units;
            }
        }
    }

    /// The allocation an order's view shows: the cross-shard order's as its shard recorded
    /// it, a one-shard order's as its shard made it.
    pub fn view_allocation(&self, order: OrderId, cross: bool) -> Option<&Allocation> {
        if cross {
            self.order_allocations.get(&order)
        } else {
            self.allocated.get(&order)
        }
    }
}

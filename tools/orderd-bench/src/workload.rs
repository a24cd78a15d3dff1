//! Workload generators: what each client sends next (flash sale, catalog, mixed), the zipfian
//! SKU draw, and each client's memory of the orders it placed (which the mixed workload reads,
//! cancels and ships).
//!
//! Generators know nothing of targets: an order names its SKUs and customer by index, and each
//! target maps indexes to its own names and ids (set up from the same [`crate::targets::Plan`]).

use std::collections::VecDeque;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::targets::Outcome;

/// Customers every target creates; client `i` orders as customer `i % CUSTOMERS`.
pub const CUSTOMERS: usize = 16;
/// Most lines in a catalog order (at least 1).
pub const CATALOG_LINES_MAX: usize = 5;
/// Zipf exponent of the catalog's SKU draw.
pub const CATALOG_ZIPF_EXPONENT: f64 = 0.99;
/// Orders a client remembers for reads (the newest); and, separately, the open orders (neither
/// cancelled nor shipped) it may still cancel or ship. Both bounded: memory does not grow with
/// the length of a run.
pub const REMEMBERED_ORDERS_MAX: usize = 1024;

/// The mixed workload's proportions, in percent of operations.
pub const MIX_PLACE_PERCENT: u32 = 50;
pub const MIX_READ_PERCENT: u32 = 30;
pub const MIX_CANCEL_PERCENT: u32 = 10;
pub const MIX_SHIP_PERCENT: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// One hot SKU; every order is one line of quantity 1.
    FlashSale,
    /// `--skus` SKUs (100,000 by default), 1–5 distinct lines per order, SKUs drawn zipfian
    /// (s = 0.99).
    Catalog,
    /// Catalog orders, plus reads, cancels and shipments of orders the same client placed:
    /// 50 % place / 30 % read / 10 % cancel / 10 % ship.
    Mixed,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::FlashSale,
        WorkloadKind::Catalog,
        WorkloadKind::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::FlashSale => "flash-sale",
            WorkloadKind::Catalog => "catalog",
            WorkloadKind::Mixed => "mixed",
        }
    }

    pub fn parse(name: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Whether every operation is a placement (the rate is then in orders/s).
    pub fn places_only(self) -> bool {
        !matches!(self, WorkloadKind::Mixed)
    }

    /// The workload's SKU names, by index.
    pub fn sku_names(self, skus: usize) -> Vec<String> {
        match self {
            WorkloadKind::FlashSale => vec![FLASH_SKU.to_string()],
            WorkloadKind::Catalog | WorkloadKind::Mixed => {
                (0..skus.max(1)).map(|i| format!("SKU-{i:06}")).collect()
            }
        }
    }

    /// Stock of every SKU when `--stock` is not given: more than any run can sell, so that
    /// orders succeed.
    pub fn default_stock_per_sku(self) -> u64 {
        match self {
            WorkloadKind::FlashSale => 1_000_000_000_000,
            WorkloadKind::Catalog | WorkloadKind::Mixed => 1_000_000_000,
        }
    }
}

/// The flash sale's SKU.
pub const FLASH_SKU: &str = "FLASH-1";

/// Zipfian draw over `0..n`: rank `k` (from 0) has weight `1 / (k + 1)^s`.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        assert!(n >= 1, "a zipfian draw needs at least one item");
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one item");
        let x = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.cumulative.len() - 1)
    }
}

/// One order line: a SKU by index into the plan's SKU names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: u32,
    pub qty: u32,
    pub unit_price: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Index into the target's customers (`0..CUSTOMERS`).
    pub customer: usize,
    pub lines: Vec<Line>,
    /// Whether the client needs the new order's id back (the mixed workload acts on it later);
    /// a target may skip decoding it otherwise.
    pub want_ref: bool,
}

/// An order as a target names it: engine, PostgreSQL and Redis ids are numbers; HTTP ids are
/// the server's opaque strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderRef {
    Number(u64),
    Text(Box<str>),
}

impl std::fmt::Display for OrderRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderRef::Number(n) => write!(f, "{n}"),
            OrderRef::Text(text) => f.write_str(text),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Place(Order),
    Read(OrderRef),
    Cancel(OrderRef),
    Ship(OrderRef),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Place = 0,
    Read = 1,
    Cancel = 2,
    Ship = 3,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [OpKind::Place, OpKind::Read, OpKind::Cancel, OpKind::Ship];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Place => "place",
            OpKind::Read => "read",
            OpKind::Cancel => "cancel",
            OpKind::Ship => "ship",
        }
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Place(_) => OpKind::Place,
            Op::Read(_) => OpKind::Read,
            Op::Cancel(_) => OpKind::Cancel,
            Op::Ship(_) => OpKind::Ship,
        }
    }
}

/// What one workload draws from, shared by all its clients.
pub struct WorkloadShape {
    pub kind: WorkloadKind,
    zipf: Option<Zipf>,
}

impl WorkloadShape {
    /// `skus`: the number of SKU names of the plan (1 for the flash sale).
    pub fn new(kind: WorkloadKind, skus: usize) -> WorkloadShape {
        let zipf = match kind {
            WorkloadKind::FlashSale => None,
            WorkloadKind::Catalog | WorkloadKind::Mixed => {
                Some(Zipf::new(skus.max(1), CATALOG_ZIPF_EXPONENT))
            }
        };
        WorkloadShape { kind, zipf }
    }
}

/// One client's generator: its own random stream and the orders it placed.
pub struct Generator {
    shape: Arc<WorkloadShape>,
    customer: usize,
    rng: StdRng,
    /// The newest orders this client placed, for reads.
    placed: VecDeque<OrderRef>,
    /// Orders this client placed and has neither cancelled nor shipped.
    open: VecDeque<OrderRef>,
}

impl Generator {
    pub fn new(shape: Arc<WorkloadShape>, client: usize, seed: u64) -> Generator {
        Generator {
            shape,
            customer: client % CUSTOMERS,
            rng: StdRng::seed_from_u64(seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            placed: VecDeque::new(),
            open: VecDeque::new(),
        }
    }

    /// The next operation. In the mixed workload a read, cancel or ship that finds no suitable
    /// order of this client (at the start of a run) becomes a placement.
    pub fn next_op(&mut self) -> Op {
        match self.shape.kind {
            WorkloadKind::FlashSale => Op::Place(Order {
                customer: self.customer,
                lines: vec![Line {
                    sku: 0,
                    qty: 1,
                    unit_price: 1999,
                }],
                want_ref: false,
            }),
            WorkloadKind::Catalog => Op::Place(self.catalog_order(false)),
            WorkloadKind::Mixed => {
                let roll = self.rng.gen_range(0..100);
                if roll < MIX_PLACE_PERCENT {
                    Op::Place(self.catalog_order(true))
                } else if roll < MIX_PLACE_PERCENT + MIX_READ_PERCENT {
                    if self.placed.is_empty() {
                        return Op::Place(self.catalog_order(true));
                    }
                    let i = self.rng.gen_range(0..self.placed.len());
                    Op::Read(self.placed[i].clone())
                } else {
                    let Some(order) = self.take_open() else {
                        return Op::Place(self.catalog_order(true));
                    };
                    if roll < MIX_PLACE_PERCENT + MIX_READ_PERCENT + MIX_CANCEL_PERCENT {
                        Op::Cancel(order)
                    } else {
                        Op::Ship(order)
                    }
                }
            }
        }
    }

    /// Learns the outcome of an operation this generator produced: a confirmed placement's id
    /// becomes readable, cancellable and shippable.
    pub fn observe(&mut self, kind: OpKind, outcome: &Outcome) {
        if kind != OpKind::Place {
            return;
        }
        if let Outcome::Ok(Some(order)) = outcome {
            if self.placed.len() == REMEMBERED_ORDERS_MAX {
                self.placed.pop_front();
            }
            self.placed.push_back(order.clone());
            if self.open.len() == REMEMBERED_ORDERS_MAX {
                self.open.pop_front();
            }
            self.open.push_back(order.clone());
        }
    }

    fn take_open(&mut self) -> Option<OrderRef> {
        if self.open.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.open.len());
        self.open.swap_remove_back(i)
    }

    fn catalog_order(&mut self, want_ref: bool) -> Order {
        let zipf = self
            .shape
            .zipf
            .as_ref()
            .expect("catalog workloads draw SKUs");
        let wanted = self.rng.gen_range(1..=CATALOG_LINES_MAX).min(zipf.len());
        let mut lines: Vec<Line> = Vec::with_capacity(wanted);
        while lines.len() < wanted {
            let sku = zipf.sample(&mut self.rng) as u32;
            if lines.iter().all(|line| line.sku != sku) {
                lines.push(Line {
                    sku,
                    qty: 1,
                    unit_price: 500 + u64::from(sku) % 1000,
                });
            }
        }
        Order {
            customer: self.customer,
            lines,
            want_ref,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_skew_follows_the_exponent() {
        let zipf = Zipf::new(100_000, 0.99);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u64; 100_000];
        let draws = 2_000_000;
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // Rank 1 against rank 10: 10^0.99 = 9.77 times as often.
        let ratio = counts[0] as f64 / counts[9] as f64;
        assert!((8.5..11.0).contains(&ratio), "rank 1 / rank 10 = {ratio}");
        // The top 1 % of SKUs take a large share; the bottom half a small one.
        let top: u64 = counts[..1000].iter().sum();
        let bottom: u64 = counts[50_000..].iter().sum();
        let top_share = top as f64 / draws as f64;
        let bottom_share = bottom as f64 / draws as f64;
        // Exact shares from the weights: H(1000) / H(100000) and its complement for the tail.
        let h = |n: usize| (1..=n).map(|k| 1.0 / (k as f64).powf(0.99)).sum::<f64>();
        let expected_top = h(1000) / h(100_000);
        let expected_bottom = 1.0 - h(50_000) / h(100_000);
        assert!(
            (top_share - expected_top).abs() < 0.01,
            "{top_share} vs {expected_top}"
        );
        assert!(
            (bottom_share - expected_bottom).abs() < 0.01,
            "{bottom_share} vs {expected_bottom}"
        );
        assert!(top_share > 0.55 && bottom_share < 0.1);
        // Every draw is in range, including the last rank.
        let small = Zipf::new(3, 0.99);
        for _ in 0..10_000 {
            assert!(small.sample(&mut rng) < 3);
        }
    }

    #[test]
    fn catalog_orders_have_one_to_five_distinct_lines() {
        let shape = Arc::new(WorkloadShape::new(WorkloadKind::Catalog, 100_000));
        let mut generator = Generator::new(shape, 3, 42);
        let mut by_count = [0u64; CATALOG_LINES_MAX + 1];
        for _ in 0..50_000 {
            let Op::Place(order) = generator.next_op() else {
                panic!("a catalog client only places");
            };
            assert_eq!(order.customer, 3);
            assert!(!order.want_ref);
            let n = order.lines.len();
            assert!((1..=CATALOG_LINES_MAX).contains(&n), "{n} lines");
            let mut skus: Vec<u32> = order.lines.iter().map(|l| l.sku).collect();
            skus.sort_unstable();
            skus.dedup();
            assert_eq!(skus.len(), n, "a SKU appears twice: {order:?}");
            assert!(order.lines.iter().all(|l| l.qty == 1 && l.sku < 100_000));
            by_count[n] += 1;
        }
        // Line counts are uniform over 1..=5.
        for (n, count) in by_count.iter().enumerate().skip(1) {
            let share = *count as f64 / 50_000.0;
            assert!((share - 0.2).abs() < 0.015, "{n} lines: {share}");
        }
        // Fewer SKUs than lines wanted: as many distinct lines as there are SKUs.
        let tiny = Arc::new(WorkloadShape::new(WorkloadKind::Catalog, 2));
        let mut generator = Generator::new(tiny, 0, 1);
        for _ in 0..1000 {
            let Op::Place(order) = generator.next_op() else {
                panic!("places only");
            };
            assert!((1..=2).contains(&order.lines.len()));
        }
    }

    #[test]
    fn flash_sale_orders_are_one_unit_of_the_hot_sku() {
        assert_eq!(WorkloadKind::FlashSale.sku_names(100_000), vec![FLASH_SKU]);
        let shape = Arc::new(WorkloadShape::new(WorkloadKind::FlashSale, 1));
        let mut generator = Generator::new(shape, 17, 0);
        for _ in 0..100 {
            assert_eq!(
                generator.next_op(),
                Op::Place(Order {
                    customer: 1,
                    lines: vec![Line {
                        sku: 0,
                        qty: 1,
                        unit_price: 1999
                    }],
                    want_ref: false,
                })
            );
        }
    }

    #[test]
    fn mixed_proportions_and_only_own_orders() {
        let shape = Arc::new(WorkloadShape::new(WorkloadKind::Mixed, 1000));
        let mut generator = Generator::new(shape, 0, 9);
        let mut counts = [0u64; 4];
        let mut next_id = 0u64;
        let mut placed = std::collections::HashSet::new();
        let mut closed = std::collections::HashSet::new();
        let total = 200_000;
        for _ in 0..total {
            let op = generator.next_op();
            counts[op.kind() as usize] += 1;
            let outcome = match &op {
                Op::Place(order) => {
                    assert!(order.want_ref);
                    next_id += 1;
                    placed.insert(next_id);
                    Outcome::Ok(Some(OrderRef::Number(next_id)))
                }
                Op::Read(OrderRef::Number(id)) => {
                    assert!(placed.contains(id));
                    Outcome::Ok(None)
                }
                Op::Cancel(OrderRef::Number(id)) | Op::Ship(OrderRef::Number(id)) => {
                    assert!(placed.contains(id));
                    // Never cancelled or shipped twice.
                    assert!(closed.insert(*id), "order {id} closed twice");
                    Outcome::Ok(None)
                }
                other => panic!("unexpected {other:?}"),
            };
            generator.observe(op.kind(), &outcome);
        }
        let share = |kind: OpKind| counts[kind as usize] as f64 / total as f64;
        assert!((share(OpKind::Place) - 0.5).abs() < 0.01, "{counts:?}");
        assert!((share(OpKind::Read) - 0.3).abs() < 0.01, "{counts:?}");
        assert!((share(OpKind::Cancel) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(OpKind::Ship) - 0.1).abs() < 0.01, "{counts:?}");
        // Memory stays bounded.
        assert!(generator.placed.len() <= REMEMBERED_ORDERS_MAX);
        assert!(generator.open.len() <= REMEMBERED_ORDERS_MAX);
    }

    #[test]
    fn mixed_client_places_first_and_refused_orders_are_not_remembered() {
        let shape = Arc::new(WorkloadShape::new(WorkloadKind::Mixed, 10));
        let mut generator = Generator::new(shape, 0, 5);
        // With no order placed yet, every operation is a placement.
        for _ in 0..200 {
            let op = generator.next_op();
            assert_eq!(op.kind(), OpKind::Place);
            generator.observe(OpKind::Place, &Outcome::Refused);
        }
    }
}

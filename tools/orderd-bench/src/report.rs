//! The report: one row per (target, workload, mode), the ratios of each orderd target against
//! each peer and against its interface's ceiling in the same run, rendered as a markdown table
//! (to paste into docs/PERFORMANCE.md) or as JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::driver::Counts;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The exact command line.
    pub command: String,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    pub cores: usize,
    pub rows: Vec<Row>,
    /// Targets left out, with the reason.
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub target: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub target: String,
    /// `orderd`, `peer` or `ceiling`.
    pub role: String,
    pub workload: String,
    pub mode: String,
    /// Open loop: the offered rate.
    pub offered_per_s: Option<f64>,
    pub durability: String,
    pub workers: usize,
    pub in_flight: usize,
    /// Operations per request: `--batch-orders` for `tcp-batch` (orders per `PLACE_ORDERS`
    /// frame), 1 for every other target.
    pub ops_per_request: usize,
    /// Answered operations per second.
    pub rate_per_s: f64,
    /// `orders/s` when every operation is a placement, else `ops/s`.
    pub rate_unit: String,
    pub elapsed_s: f64,
    /// All operations: ok (a confirmed placement, or a read, cancel, ship done), refused,
    /// errors.
    pub totals: Counts,
    pub place: Counts,
    pub read: Counts,
    pub cancel: Counts,
    pub ship: Counts,
    /// Open loop: due operations never sent.
    pub unsent: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The server's CPU time (user + system, from `/proc`) during the measured run, in seconds:
    /// orderd's process for `tcp` and `http`, the bare server's for `http-bare`, redis-server,
    /// PostgreSQL's postmaster and all its backends, the engine threads of the bench for
    /// `inproc`. `None` where it cannot be read.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per answered operation, in microseconds (per order when every operation
    /// is a placement).
    pub server_cpu_us_per_op: Option<f64>,
    /// Flash sale: available stock after the run against the start minus every confirmed
    /// placement (warm-up included); `None` where not checked.
    pub stock_check: Option<StockCheck>,
    /// This row's rate divided by the rate of the named target, same workload and mode.
    pub ratios: Vec<Ratio>,
    pub error_samples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StockCheck {
    pub sku: String,
    pub expected_available: u64,
    pub available: u64,
    /// Units of placements answered by an error (one unit each in the flash sale): a deadline
    /// answer (503, "a retry with the same Idempotency-Key is safe") leaves the outcome unknown
    /// to the client, so the server may have placed them after all.
    pub unknown_units: u64,
}

impl StockCheck {
    /// No unit sold that no placement took, and none lost: what is available is the start
    /// minus the confirmed placements, less at most the placements of unknown outcome.
    pub fn conserved(&self) -> bool {
        self.available <= self.expected_available
            && self.expected_available - self.available <= self.unknown_units
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// The target divided by.
    pub against: String,
    pub ratio: f64,
}

/// Which rows divide by which: orderd targets by every peer, and by their ceiling.
pub struct RatioRule {
    pub target: String,
    pub against: Vec<String>,
}

/// Fills every row's ratios against the rows of the same workload and mode that `rules` name.
pub fn fill_ratios(rows: &mut [Row], rules: &[RatioRule]) {
    let rates: Vec<(String, String, String, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.target.clone(),
                r.workload.clone(),
                r.mode.clone(),
                r.rate_per_s,
            )
        })
        .collect();
    for row in rows.iter_mut() {
        row.ratios.clear();
        let Some(rule) = rules.iter().find(|rule| rule.target == row.target) else {
            continue;
        };
        for against in &rule.against {
            let base = rates.iter().find(|(target, workload, mode, _)| {
                target == against && *workload == row.workload && *mode == row.mode
            });
            if let Some((_, _, _, base_rate)) = base {
                if *base_rate > 0.0 {
                    row.ratios.push(Ratio {
                        against: against.clone(),
                        ratio: row.rate_per_s / base_rate,
                    });
                }
            }
        }
    }
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The clients cell after `workers×`: requests in flight per worker, and `×N` operations per
/// request where a request carries several (`64×1×1000`).
fn clients_in_flight(row: &Row) -> String {
    if row.ops_per_request > 1 {
        format!("{}×{}", row.in_flight, row.ops_per_request)
    } else {
        row.in_flight.to_string()
    }
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Report {
    /// Every target divided by, in the order of first appearance, for the table's columns.
    fn ratio_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for row in &self.rows {
            for ratio in &row.ratios {
                if !columns.contains(&ratio.against) {
                    columns.push(ratio.against.clone());
                }
            }
        }
        columns
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "orderd-bench, {} ({} cores)\n",
            self.started_at, self.cores
        );
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let columns = self.ratio_columns();
        out.push_str("| target | workload | mode | durability | clients | throughput | ok / refused / errors | p50 ms | p99 ms | p99.9 ms | server CPU µs/op |");
        for column in &columns {
            let _ = write!(out, " × {column} |");
        }
        out.push('\n');
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|");
        for _ in &columns {
            out.push_str("---|");
        }
        out.push('\n');
        for row in &self.rows {
            let mode = match row.offered_per_s {
                Some(rate) => format!("open {}/s", thousands(rate)),
                None => row.mode.clone(),
            };
            let mut counts = format!(
                "{} / {} / {}",
                thousands(row.totals.ok as f64),
                thousands(row.totals.refused as f64),
                thousands(row.totals.errors as f64)
            );
            if row.unsent > 0 {
                let _ = write!(counts, " (+{} unsent)", thousands(row.unsent as f64));
            }
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {}×{} | {} {} | {} | {} | {} | {} |",
                row.target,
                row.workload,
                mode,
                row.durability,
                row.workers,
                clients_in_flight(row),
                thousands(row.rate_per_s),
                row.rate_unit,
                counts,
                ms(row.p50_ms),
                ms(row.p99_ms),
                ms(row.p999_ms),
            );
            match row.server_cpu_us_per_op {
                Some(us) => {
                    let _ = write!(out, " {us:.1} |");
                }
                None => out.push_str(" |"),
            }
            for column in &columns {
                match row.ratios.iter().find(|r| &r.against == column) {
                    Some(ratio) => {
                        let _ = write!(out, " {:.2} |", ratio.ratio);
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        out.push_str(
            "\nclients: workers × requests in flight per worker (× orders per request for tcp-batch, whose orders each count as one operation with their request's latency). ok: confirmed placements (and, in `mixed`, reads, cancels and shipments done); refused: not enough stock, or an order no longer cancellable or shippable. server CPU µs/op: the server's user + system CPU time during the measured run (from /proc: orderd's process for tcp and http, the bare server's for http-bare, redis-server, PostgreSQL's postmaster with all its backends, the engine threads of the bench's process for inproc) divided by the operations answered; empty where it cannot be read. × T: this row's throughput divided by T's in the same workload and mode.\n",
        );
        for row in &self.rows {
            if let Some(check) = &row.stock_check {
                let _ = writeln!(
                    out,
                    "- {} {} {}: stock of {} {}: available {} (expected {} = start − confirmed, warm-up included{})",
                    row.target,
                    row.workload,
                    row.mode,
                    check.sku,
                    if check.conserved() { "conserved" } else { "NOT CONSERVED" },
                    thousands(check.available as f64),
                    thousands(check.expected_available as f64),
                    if check.unknown_units > 0 {
                        format!(
                            ", less at most {} of placements answered by an error, whose outcome the client does not know: {} of them were placed",
                            thousands(check.unknown_units as f64),
                            thousands(check.expected_available.saturating_sub(check.available) as f64)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            for sample in &row.error_samples {
                let _ = writeln!(
                    out,
                    "- {} {} {}: error: {sample}",
                    row.target, row.workload, row.mode
                );
            }
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "- skipped {}: {}", skipped.target, skipped.reason);
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report encodes as JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, role: &str, workload: &str, rate: f64) -> Row {
        Row {
            target: target.into(),
            role: role.into(),
            workload: workload.into(),
            mode: "closed".into(),
            offered_per_s: None,
            durability: "fsync".into(),
            workers: 64,
            in_flight: 1,
            ops_per_request: 1,
            rate_per_s: rate,
            rate_unit: "orders/s".into(),
            elapsed_s: 20.0,
            totals: Counts {
                ok: 1000,
                refused: 2,
                errors: 0,
            },
            place: Counts::default(),
            read: Counts::default(),
            cancel: Counts::default(),
            ship: Counts::default(),
            unsent: 0,
            p50_ms: 1.234,
            p99_ms: 12.345,
            p999_ms: 123.45,
            max_ms: 200.0,
            server_cpu_s: Some(0.5),
            server_cpu_us_per_op: Some(25.0),
            stock_check: None,
            ratios: Vec::new(),
            error_samples: Vec::new(),
        }
    }

    fn rules() -> Vec<RatioRule> {
        vec![
            RatioRule {
                target: "inproc".into(),
                against: vec!["postgres".into(), "redis".into()],
            },
            RatioRule {
                target: "http".into(),
                against: vec!["postgres".into(), "redis".into(), "http-bare".into()],
            },
        ]
    }

    fn report() -> Report {
        let mut rows = vec![
            row("inproc", "orderd", "flash-sale", 40_000.0),
            row("http", "orderd", "flash-sale", 9_000.0),
            row("http-bare", "ceiling", "flash-sale", 60_000.0),
            row("postgres", "peer", "flash-sale", 300.0),
            row("redis", "peer", "flash-sale", 20_000.0),
            // Another workload: ratios never cross workloads; no redis row here.
            row("http", "orderd", "catalog", 8_000.0),
            row("postgres", "peer", "catalog", 4_000.0),
        ];
        fill_ratios(&mut rows, &rules());
        Report {
            command: "orderd-bench --targets all".into(),
            started_at: "2026-11-27T10:00:00Z".into(),
            cores: 2,
            rows,
            skipped: vec![Skipped {
                target: "redis".into(),
                reason: "not reachable".into(),
            }],
        }
    }

    #[test]
    fn ratios_divide_by_peers_and_ceiling_of_the_same_workload() {
        let report = report();
        let ratios = |i: usize| -> Vec<(String, f64)> {
            report.rows[i]
                .ratios
                .iter()
                .map(|r| (r.against.clone(), (r.ratio * 1000.0).round() / 1000.0))
                .collect()
        };
        assert_eq!(
            ratios(0),
            vec![("postgres".into(), 133.333), ("redis".into(), 2.0)]
        );
        assert_eq!(
            ratios(1),
            vec![
                ("postgres".into(), 30.0),
                ("redis".into(), 0.45),
                ("http-bare".into(), 0.15)
            ]
        );
        // Peers and ceilings divide by nothing.
        assert!(ratios(2).is_empty() && ratios(3).is_empty() && ratios(4).is_empty());
        assert_eq!(ratios(5), vec![("postgres".into(), 2.0)]);
    }

    #[test]
    fn markdown_table_has_the_command_columns_and_ratios() {
        let mut report = report();
        // A server whose CPU could not be read has an empty cell.
        report.rows[3].server_cpu_us_per_op = None;
        let text = report.markdown();
        assert!(
            text.contains("```sh\norderd-bench --targets all\n```"),
            "{text}"
        );
        assert!(text.contains(
            "| target | workload | mode | durability | clients | throughput | ok / refused / errors | p50 ms | p99 ms | p99.9 ms | server CPU µs/op | × postgres | × redis | × http-bare |"
        ), "{text}");
        assert!(text.contains("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"));
        assert!(text.contains(
            "| inproc | flash-sale | closed | fsync | 64×1 | 40,000 orders/s | 1,000 / 2 / 0 | 1.23 | 12.3 | 123 | 25.0 | 133.33 | 2.00 | |"
        ), "{text}");
        assert!(text.contains(
            "| http | flash-sale | closed | fsync | 64×1 | 9,000 orders/s | 1,000 / 2 / 0 | 1.23 | 12.3 | 123 | 25.0 | 30.00 | 0.45 | 0.15 |"
        ), "{text}");
        assert!(text.contains("| postgres | flash-sale | closed | fsync | 64×1 | 300 orders/s | 1,000 / 2 / 0 | 1.23 | 12.3 | 123 | | | | |"), "{text}");
        assert!(text.contains("| http | catalog | closed | fsync | 64×1 | 8,000 orders/s | 1,000 / 2 / 0 | 1.23 | 12.3 | 123 | 25.0 | 2.00 | | |"), "{text}");
        assert!(text.contains("- skipped redis: not reachable"));
        // Every table line has the same number of cells.
        let widths: Vec<usize> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.matches('|').count())
            .collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}");
    }

    #[test]
    fn open_loop_unsent_and_stock_checks_are_shown() {
        let mut report = report();
        report.rows[0].offered_per_s = Some(5000.0);
        report.rows[0].mode = "open".into();
        report.rows[0].unsent = 12;
        report.rows[0].stock_check = Some(StockCheck {
            sku: "FLASH-1".into(),
            expected_available: 10,
            available: 10,
            unknown_units: 3,
        });
        report.rows[1].stock_check = Some(StockCheck {
            sku: "FLASH-1".into(),
            expected_available: 10,
            available: 11,
            unknown_units: 0,
        });
        report.rows[2].stock_check = Some(StockCheck {
            sku: "FLASH-1".into(),
            expected_available: 10,
            available: 7,
            unknown_units: 2,
        });
        let text = report.markdown();
        assert!(
            text.contains("| inproc | flash-sale | open 5,000/s |"),
            "{text}"
        );
        assert!(text.contains("1,000 / 2 / 0 (+12 unsent)"), "{text}");
        assert!(text.contains("stock of FLASH-1 conserved: available 10 (expected 10"));
        assert!(text.contains("stock of FLASH-1 NOT CONSERVED: available 11 (expected 10"));
        // Two placements of unknown outcome cannot account for three units gone.
        assert!(text.contains("stock of FLASH-1 NOT CONSERVED: available 7 (expected 10"));
        let within = StockCheck {
            sku: "FLASH-1".into(),
            expected_available: 10,
            available: 8,
            unknown_units: 2,
        };
        assert!(within.conserved());
    }

    #[test]
    fn json_carries_the_same_rows() {
        let report = report();
        let value: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(value["command"], "orderd-bench --targets all");
        assert_eq!(value["rows"].as_array().unwrap().len(), 7);
        assert_eq!(value["rows"][1]["target"], "http");
        assert_eq!(value["rows"][1]["ratios"][2]["against"], "http-bare");
        assert!((value["rows"][1]["ratios"][2]["ratio"].as_f64().unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(value["rows"][0]["totals"]["refused"], 2);
        assert_eq!(value["rows"][0]["server_cpu_us_per_op"], 25.0);
        assert_eq!(value["rows"][0]["server_cpu_s"], 0.5);
        assert_eq!(value["skipped"][0]["target"], "redis");
    }

    #[test]
    fn batched_rows_show_their_orders_per_request() {
        let mut report = report();
        report.rows[1].target = "tcp-batch".into();
        report.rows[1].ops_per_request = 1000;
        let text = report.markdown();
        assert!(
            text.contains(
                "| tcp-batch | flash-sale | closed | fsync | 64×1×1000 | 9,000 orders/s |"
            ),
            "{text}"
        );
        assert!(text.contains("| inproc | flash-sale | closed | fsync | 64×1 | 40,000 orders/s |"));
        let value: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(value["rows"][1]["ops_per_request"], 1000);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(ms(0.123), "0.12");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(123.4), "123");
    }
}

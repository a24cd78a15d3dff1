//! One invocation of the bench: checks which targets are available, then for every workload,
//! mode and target opens the target on a clean state, drives it, checks the flash sale's stock
//! and stops it, and builds the report with the ratios.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{self, ModeName, Options};
use crate::driver::{self, DriverConfig, Mode, Stop};
use crate::report::{fill_ratios, RatioRule, Report, Row, Skipped, StockCheck};
use crate::targets::{Plan, Role, Settings, TargetKind};
use crate::workload::{OpKind, WorkloadKind, WorkloadShape, CUSTOMERS};

/// Measured seconds per run when neither `--orders` nor `--duration-s` is given.
pub const DURATION_S_DEFAULT: f64 = 10.0;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where the targets find their servers, from the options, the environment and the defaults.
pub fn settings(options: &Options) -> Result<Settings> {
    let exe = std::env::current_exe().context("locate this executable")?;
    let beside = |name: &str| -> PathBuf { exe.with_file_name(name) };
    Ok(Settings {
        orderd: options.orderd.clone().unwrap_or_else(|| beside("orderd")),
        bare_exe: options.bare_exe.clone().unwrap_or_else(|| exe.clone()),
        postgres_url: options
            .postgres_url
            .clone()
            .or_else(|| std::env::var(cli::POSTGRES_URL_ENV).ok())
            .unwrap_or_else(|| cli::POSTGRES_URL_DEFAULT.to_string()),
        redis_url: options
            .redis_url
            .clone()
            .or_else(|| std::env::var(cli::REDIS_URL_ENV).ok())
            .unwrap_or_else(|| cli::REDIS_URL_DEFAULT.to_string()),
        shards: options.shards.unwrap_or_else(cores),
        setup_concurrency: options.setup_connections,
        connect_timeout: Duration::from_secs_f64(options.connect_timeout_s),
        batch_orders: options.batch_orders,
        durability: options.durability,
    })
}

/// The rules of the ratio columns: each orderd target against every peer that ran, and
/// against its ceiling.
fn ratio_rules(kinds: &[TargetKind]) -> Vec<RatioRule> {
    let peers: Vec<String> = kinds
        .iter()
        .filter(|k| k.role() == Role::Peer)
        .map(|k| k.name().to_string())
        .collect();
    kinds
        .iter()
        .filter(|k| k.role() == Role::Orderd)
        .map(|kind| {
            let mut against = peers.clone();
            if let Some(ceiling) = kind.ceiling() {
                against.push(ceiling.name().to_string());
            }
            RatioRule {
                target: kind.name().to_string(),
                against,
            }
        })
        .collect()
}

/// Runs everything the options ask for. `args` is the command line, for the report.
pub async fn run(options: &Options, args: &[String]) -> Result<Report> {
    options.validate()?;
    let settings = settings(options)?;
    let (kinds, explicit) = options.target_list()?;
    let workloads = options.workload_list()?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut skipped = Vec::new();
    let mut available = Vec::new();
    for kind in kinds {
        match kind.probe(&settings).await {
            Ok(()) => available.push(kind),
            Err(error) if !explicit => {
                let reason = format!("{error:#}");
                eprintln!("orderd-bench: skipping {}: {reason}", kind.name());
                skipped.push(Skipped {
                    target: kind.name().to_string(),
                    reason,
                });
            }
            Err(error) => {
                return Err(error.context(format!(
                    "target {} was asked for but is not available",
                    kind.name()
                )))
            }
        }
    }
    let stop = match (options.orders, options.duration_s) {
        (Some(n), _) => Stop::Count(n),
        (None, Some(s)) => Stop::Duration(Duration::from_secs_f64(s)),
        (None, None) => Stop::Duration(Duration::from_secs_f64(DURATION_S_DEFAULT)),
    };
    let mut rows = Vec::new();
    for workload in &workloads {
        let skus = Arc::new(workload.sku_names(options.skus));
        let plan = Plan {
            workload: *workload,
            skus: skus.clone(),
            stock_per_sku: options
                .stock
                .unwrap_or_else(|| workload.default_stock_per_sku()),
            customers: CUSTOMERS,
        };
        let shape = Arc::new(WorkloadShape::new(*workload, skus.len()));
        for mode_name in &options.mode {
            let mode = match mode_name {
                ModeName::Closed => Mode::Closed,
                ModeName::Open => Mode::Open {
                    rate_per_s: options.rate.expect("validated: open needs a rate"),
                },
            };
            for kind in &available {
                let row = run_one(*kind, &settings, &plan, shape.clone(), mode, stop, options)
                    .await
                    .with_context(|| {
                        format!(
                            "{} on {}, {} loop",
                            workload.name(),
                            kind.name(),
                            mode.name()
                        )
                    })?;
                if !options.quiet {
                    let cpu = row
                        .server_cpu_us_per_op
                        .map_or_else(String::new, |us| format!(", server CPU {us:.1} µs/op"));
                    eprintln!(
                        "orderd-bench: {} {} {}: {:.0} {} ({} ok, {} refused, {} errors), p99 {:.2} ms{cpu}",
                        row.target,
                        row.workload,
                        row.mode,
                        row.rate_per_s,
                        row.rate_unit,
                        row.totals.ok,
                        row.totals.refused,
                        row.totals.errors,
                        row.p99_ms
                    );
                }
                rows.push(row);
            }
        }
    }
    fill_ratios(&mut rows, &ratio_rules(&available));
    Ok(Report {
        command: cli::command_line(args),
        started_at,
        cores: cores(),
        rows,
        skipped,
    })
}

async fn run_one(
    kind: TargetKind,
    settings: &Settings,
    plan: &Plan,
    shape: Arc<WorkloadShape>,
    mode: Mode,
    stop: Stop,
    options: &Options,
) -> Result<Row> {
    let target = kind
        .open(settings, plan)
        .await
        .with_context(|| format!("set up {}", kind.name()))?;
    let config = DriverConfig {
        workers: options.connections,
        in_flight: options.in_flight,
        mode,
        stop,
        warmup: Duration::from_secs_f64(options.warmup_s),
        drain: Duration::from_secs_f64(options.drain_s),
        seed: options.seed,
        progress: !options.quiet,
        label: format!("{} {} {}", kind.name(), plan.workload.name(), mode.name()),
    };
    let result = driver::run(target.as_ref(), shape, &config).await;
    let result = match result {
        Ok(result) => result,
        Err(error) => {
            let _ = target.stop().await;
            return Err(error);
        }
    };
    let measured = &result.measured;
    let stock_check = if plan.workload == WorkloadKind::FlashSale {
        let sku = plan.skus[0].clone();
        match target.stock_available(&sku).await? {
            Some(available) => {
                let places = &measured.by_kind[OpKind::Place as usize];
                let confirmed = result.warmup_placed + places.ok;
                Some(StockCheck {
                    sku,
                    expected_available: plan.stock_per_sku.saturating_sub(confirmed),
                    available,
                    unknown_units: result.warmup_place_errors + places.errors,
                })
            }
            None => None,
        }
    } else {
        None
    };
    let durability = target.durability();
    target
        .stop()
        .await
        .with_context(|| format!("stop {}", kind.name()))?;
    let latency = &measured.latency;
    let quantile_ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(Row {
        target: kind.name().to_string(),
        role: kind.role().name().to_string(),
        workload: plan.workload.name().to_string(),
        mode: mode.name().to_string(),
        offered_per_s: match mode {
            Mode::Open { rate_per_s } => Some(rate_per_s),
            Mode::Closed => None,
        },
        durability,
        workers: options.connections,
        in_flight: options.in_flight,
        ops_per_request: kind.ops_per_request(options.batch_orders),
        rate_per_s: measured.rate_per_s(),
        rate_unit: if plan.workload.places_only() {
            "orders/s"
        } else {
            "ops/s"
        }
        .to_string(),
        elapsed_s: measured.elapsed.as_secs_f64(),
        totals: measured.totals(),
        place: measured.by_kind[OpKind::Place as usize],
        read: measured.by_kind[OpKind::Read as usize],
        cancel: measured.by_kind[OpKind::Cancel as usize],
        ship: measured.by_kind[OpKind::Ship as usize],
        unsent: measured.unsent,
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        p999_ms: quantile_ms(0.999),
        max_ms: latency.max() as f64 / 1000.0,
        server_cpu_s: result.server_cpu.map(|cpu| cpu.as_secs_f64()),
        server_cpu_us_per_op: result
            .server_cpu
            .filter(|_| measured.answered() > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / measured.answered() as f64),
        stock_check,
        ratios: Vec::new(),
        error_samples: measured.error_samples.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orderd_targets_divide_by_the_peers_that_ran_and_their_ceiling() {
        let rules = ratio_rules(&[TargetKind::Inproc, TargetKind::Http, TargetKind::Redis]);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].target, "inproc");
        assert_eq!(rules[0].against, vec!["redis"]);
        assert_eq!(rules[1].target, "http");
        assert_eq!(rules[1].against, vec!["redis", "http-bare"]);
    }
}

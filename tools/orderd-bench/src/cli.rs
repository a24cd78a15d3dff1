//! The command line of `orderd-bench`: options, their defaults and bounds, and the lists they
//! take (targets, workloads, modes).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::targets::TargetKind;
use crate::workload::WorkloadKind;

/// Where `ops/peers.sh` starts PostgreSQL by default.
pub const POSTGRES_URL_DEFAULT: &str = "postgresql://postgres@127.0.0.1:55432/orderd_bench";
/// Where `ops/peers.sh` starts Redis by default.
pub const REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:56379/";
pub const POSTGRES_URL_ENV: &str = "ORDERD_BENCH_POSTGRES_URL";
pub const REDIS_URL_ENV: &str = "ORDERD_BENCH_REDIS_URL";

/// Load generator: orderd (in process and over HTTP) against PostgreSQL 15, Redis 7 and a bare
/// HTTP handler, on the same workloads, in the same run.
#[derive(Clone, Debug, Parser)]
#[command(version, about)]
pub struct Options {
    /// Targets, comma-separated: inproc, tcp, tcp-tls, tcp-batch, http, http-bare, postgres, redis. Default: all of them
    /// that are available (a target named here that is not available is an error).
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Workloads, comma-separated: flash-sale, catalog, mixed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "flash-sale,catalog,mixed"
    )]
    pub workloads: Vec<String>,
    /// Load modes, comma-separated: closed (max throughput) and/or open (fixed arrival rate,
    /// needs --rate).
    #[arg(long, value_delimiter = ',', default_value = "closed")]
    pub mode: Vec<ModeName>,
    /// Open loop: operations per second offered to each target.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Operations per measured run (instead of --duration-s).
    #[arg(long, conflicts_with = "duration_s")]
    pub orders: Option<u64>,
    /// Seconds per measured run (default 10 when --orders is not given).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Seconds of warm-up before each measured run (not measured).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Client workers (connections) per target, 1–1024.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Requests in flight per worker, 1–1024. HTTP/1.1 and SQL transactions cannot multiplex,
    /// so those targets open a socket per request in flight; Redis shares one.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// tcp-batch: orders per `PLACE_ORDERS` frame, 1–8189 (orderd's default
    /// `tcp.batch_orders_max`). Each order counts as one operation.
    #[arg(long, default_value_t = 1000)]
    pub batch_orders: usize,
    /// SKUs of the catalog and mixed workloads.
    #[arg(long, default_value_t = 100_000)]
    pub skus: usize,
    /// Stock of every SKU at the start (default: more than any run sells, 10^12 for the flash
    /// sale, 10^9 per catalog SKU).
    #[arg(long)]
    pub stock: Option<u64>,
    /// Durability of the orderd targets (inproc, tcp, tcp-batch, http): `sync` (fsync before
    /// an order is acknowledged) or `async` (acknowledged once written, fsync every
    /// `storage.flush_interval_ms`). The peers and http-bare are unaffected.
    #[arg(long, value_enum, default_value_t = DurabilityMode::Sync)]
    pub durability: DurabilityMode,
    /// Engine shards of the inproc and http targets (default: one per core); also the bare
    /// server's worker threads.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Seed of the workload generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The orderd binary for the http target (default: `orderd` next to this executable).
    #[arg(long)]
    pub orderd: Option<PathBuf>,
    /// PostgreSQL connection string (default: $ORDERD_BENCH_POSTGRES_URL, else where
    /// `ops/peers.sh` starts it).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Redis URL (default: $ORDERD_BENCH_REDIS_URL, else where `ops/peers.sh` starts it).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Concurrent requests of the set-up (customers, stock of every SKU).
    #[arg(long, default_value_t = 32)]
    pub setup_connections: usize,
    /// Seconds to wait for a server to start or a peer to answer.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout_s: f64,
    /// Open loop: seconds after the last due time during which late operations may still be
    /// sent; the rest count as unsent.
    #[arg(long, default_value_t = 10.0)]
    pub drain_s: f64,
    /// Output: a markdown table, or JSON.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The executable that serves the http-bare target (default: this one).
    #[arg(long, hide = true)]
    pub bare_exe: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeName {
    Closed,
    Open,
}

/// `storage.durability` of the orderd targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    Sync,
    Async,
}

impl DurabilityMode {
    /// The value of `storage.durability` in orderd's configuration.
    pub fn config_value(self) -> &'static str {
        match self {
            DurabilityMode::Sync => "sync",
            DurabilityMode::Async => "async",
        }
    }

    /// The engine's durability.
    pub fn engine(self) -> orderd_engine::Durability {
        match self {
            DurabilityMode::Sync => orderd_engine::Durability::Sync,
            DurabilityMode::Async => orderd_engine::Durability::Async,
        }
    }

    /// The report's `durability` column for an orderd target.
    pub fn describe(self) -> String {
        match self {
            DurabilityMode::Sync => "fsync per group commit (sync)".to_string(),
            DurabilityMode::Async => {
                "write acknowledged, fsync every storage.flush_interval_ms (async)".to_string()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Serves the bare actix-web handler of the http-bare target (`POST /v1/orders` and the
    /// other order routes, no storage) until SIGTERM: the bench starts it for http-bare, and
    /// `ops/wrk-compare.sh` for wrk.
    ServeBare {
        /// Address to listen on, e.g. 127.0.0.1:18081.
        #[arg(long)]
        listen: String,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

/// Bounds of the client options.
pub const CONNECTIONS_MAX: usize = 1024;
pub const IN_FLIGHT_MAX: usize = 1024;
/// Most orders per `PLACE_ORDERS` frame: orderd's default `tcp.batch_orders_max`.
pub const BATCH_ORDERS_MAX: usize = 8189;

impl Options {
    /// The targets to run and whether each was asked for by name.
    pub fn target_list(&self) -> Result<(Vec<TargetKind>, bool)> {
        match &self.targets {
            None => Ok((TargetKind::ALL.to_vec(), false)),
            Some(names) => {
                let mut kinds = Vec::new();
                for name in names {
                    let name = name.trim();
                    if name == "all" {
                        return Ok((TargetKind::ALL.to_vec(), false));
                    }
                    let Some(kind) = TargetKind::parse(name) else {
                        let known: Vec<&str> = TargetKind::ALL.iter().map(|t| t.name()).collect();
                        bail!("unknown target {name:?} (known: {}, all)", known.join(", "));
                    };
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                Ok((kinds, true))
            }
        }
    }

    pub fn workload_list(&self) -> Result<Vec<WorkloadKind>> {
        let mut kinds = Vec::new();
        for name in &self.workloads {
            let Some(kind) = WorkloadKind::parse(name.trim()) else {
                bail!("unknown workload {name:?} (known: flash-sale, catalog, mixed)");
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }

    /// Checks the bounds that clap cannot express.
    pub fn validate(&self) -> Result<()> {
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            bail!("--connections must be 1 to {CONNECTIONS_MAX}");
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.in_flight) {
            bail!("--in-flight must be 1 to {IN_FLIGHT_MAX}");
        }
        if !(1..=BATCH_ORDERS_MAX).contains(&self.batch_orders) {
            bail!("--batch-orders must be 1 to {BATCH_ORDERS_MAX}");
        }
        if self.mode.contains(&ModeName::Open) {
            match self.rate {
                Some(rate) if rate.is_finite() && rate > 0.0 => {}
                _ => bail!("--mode open needs --rate R (operations per second, > 0)"),
            }
        }
        if let Some(duration) = self.duration_s {
            if !(duration.is_finite() && duration > 0.0) {
                bail!("--duration-s must be > 0");
            }
        }
        if self.orders == Some(0) {
            bail!("--orders must be > 0");
        }
        if !(self.warmup_s.is_finite() && self.warmup_s >= 0.0) {
            bail!("--warmup-s must be >= 0");
        }
        if self.skus == 0 {
            bail!("--skus must be > 0");
        }
        if self.shards == Some(0) {
            bail!("--shards must be > 0");
        }
        if !(self.connect_timeout_s.is_finite() && self.connect_timeout_s > 0.0) {
            bail!("--connect-timeout-s must be > 0");
        }
        if !(self.drain_s.is_finite() && self.drain_s >= 0.0) {
            bail!("--drain-s must be >= 0");
        }
        if self.setup_connections == 0 {
            bail!("--setup-connections must be > 0");
        }
        Ok(())
    }
}

/// The command line as typed, quoted for a POSIX shell where needed.
pub fn command_line(args: &[String]) -> String {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let arg = if i == 0 {
                // The program by its name, not the path it was started from.
                std::path::Path::new(arg)
                    .file_name()
                    .map_or(arg.clone(), |name| name.to_string_lossy().into_owned())
            } else {
                arg.clone()
            };
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./,:@%+".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_defaults_and_bounds() {
        let options = Options::parse_from(["orderd-bench"]);
        assert_eq!(
            options.target_list().unwrap(),
            (TargetKind::ALL.to_vec(), false)
        );
        assert_eq!(options.workload_list().unwrap(), WorkloadKind::ALL.to_vec());
        assert_eq!(options.mode, vec![ModeName::Closed]);
        options.validate().unwrap();

        let options = Options::parse_from(["orderd-bench", "--targets", "redis,inproc,redis"]);
        assert_eq!(
            options.target_list().unwrap(),
            (vec![TargetKind::Redis, TargetKind::Inproc], true)
        );
        let options = Options::parse_from(["orderd-bench", "--targets", "ftp"]);
        assert!(options.target_list().is_err());

        let options = Options::parse_from(["orderd-bench", "--mode", "open"]);
        assert!(options
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--rate"));
        let options =
            Options::parse_from(["orderd-bench", "--mode", "closed,open", "--rate", "500"]);
        options.validate().unwrap();
        let options = Options::parse_from(["orderd-bench", "--connections", "0"]);
        assert!(options.validate().is_err());
        let options = Options::parse_from(["orderd-bench", "--in-flight", "5000"]);
        assert!(options.validate().is_err());
        assert_eq!(Options::parse_from(["orderd-bench"]).batch_orders, 1000);
        for (batch, valid) in [("0", false), ("1", true), ("8189", true), ("8190", false)] {
            let options = Options::parse_from(["orderd-bench", "--batch-orders", batch]);
            assert_eq!(options.validate().is_ok(), valid, "--batch-orders {batch}");
        }
        assert!(
            Options::try_parse_from(["orderd-bench", "--orders", "5", "--duration-s", "3"])
                .is_err()
        );
    }

    #[test]
    fn durability_defaults_to_sync_and_takes_async() {
        let options = Options::parse_from(["orderd-bench"]);
        assert_eq!(options.durability, DurabilityMode::Sync);
        assert_eq!(options.durability.config_value(), "sync");
        assert_eq!(
            options.durability.describe(),
            "fsync per group commit (sync)"
        );
        let options = Options::parse_from(["orderd-bench", "--durability", "async"]);
        assert_eq!(options.durability, DurabilityMode::Async);
        assert_eq!(options.durability.config_value(), "async");
        assert!(matches!(
            options.durability.engine(),
            orderd_engine::Durability::Async
        ));
        assert!(options.durability.describe().ends_with("(async)"));
        assert!(Options::try_parse_from(["orderd-bench", "--durability", "none"]).is_err());
    }

    #[test]
    fn command_line_is_quoted_for_a_shell() {
        let args: Vec<String> = [
            "/x/target/release/orderd-bench",
            "--targets",
            "inproc,http",
            "--postgres-url",
            "host=127.0.0.1 port=5",
            "it's",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            command_line(&args),
            r"orderd-bench --targets inproc,http --postgres-url 'host=127.0.0.1 port=5' 'it'\''s'"
        );
    }
}

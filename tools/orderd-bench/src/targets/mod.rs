//! The systems under test: the set of targets ([`TargetKind`]), what every target does
//! ([`Target`]: set up a plan, open client connections, report its durability and stock), and
//! what one client connection does ([`Conn`]: execute one operation).
//!
//! Adding a target is one file here plus one variant of [`TargetKind`] (its name, role and
//! `open`/`probe` arms): the driver, the report and the command line know targets only through
//! this module.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::cpu::CpuSource;
use crate::workload::{Op, OrderRef, WorkloadKind};

pub mod http;
pub mod http_bare;
pub mod inproc;
pub mod postgres;
pub mod redis;
pub mod tcp;
pub mod tcp_batch;

/// A boxed, sendable future: what the object-safe target traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How one operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: a placement confirmed (with the new order when the operation asked for it), a read
    /// answered, an order cancelled or shipped.
    Ok(Option<OrderRef>),
    /// Refused by the business rules: not enough stock for a placement; an order that can no
    /// longer be cancelled or shipped.
    Refused,
    /// Anything else (a transport failure, an unexpected status, a server error).
    Error(String),
}

/// What a target sets up before a run; every target gets the same plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub workload: WorkloadKind,
    /// SKU names by index (an order line names its SKU by index).
    pub skus: Arc<Vec<String>>,
    /// Stock every SKU starts with.
    pub stock_per_sku: u64,
    /// Customers to create (orders name theirs by index).
    pub customers: usize,
}

/// Where targets find their servers and how they size their set-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `orderd` binary the `http` target starts.
    pub orderd: PathBuf,
    /// The executable that serves the `http-bare` target (`orderd-bench serve-bare`).
    pub bare_exe: PathBuf,
    /// tokio-postgres connection string (URL or key=value form).
    pub postgres_url: String,
    pub redis_url: String,
    /// Engine shards of the `inproc` and `http` targets.
    pub shards: usize,
    /// Concurrent requests used to set a plan up (stock of 100,000 SKUs over HTTP).
    pub setup_concurrency: usize,
    /// How long to wait for a server to start or a peer to answer.
    pub connect_timeout: Duration,
    /// Orders per `PLACE_ORDERS` frame of the `tcp-batch` target.
    pub batch_orders: usize,
    /// Durability of the orderd targets (`inproc`, `tcp`, `tcp-batch`, `http`).
    pub durability: crate::cli::DurabilityMode,
}

/// A system under test, set up for one run.
pub trait Target: Send + Sync {
    /// What makes an acknowledged order durable here, as configured (read back from the server
    /// where it can be).
    fn durability(&self) -> String;

    /// Opens the connection of one client slot of worker `worker`. Targets whose protocol
    /// cannot multiplex (HTTP/1.1 without pipelining, a SQL transaction) open a socket per
    /// slot; Redis shares one multiplexed connection among a worker's slots.
    fn connect(&self, worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>>;

    /// The available stock of `sku` now, where the target can tell (for the conservation
    /// check after a run).
    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Stops what the target started (a server process, an engine) and waits for it.
    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<()>>;

    /// Whose CPU time is this target's server CPU (sampled from `/proc` before and after the
    /// measured run). A target that does not say has no server CPU column.
    fn cpu_source(&self) -> CpuSource {
        CpuSource::Unknown
    }
}

/// One client connection (or slot of one).
pub trait Conn: Send {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome>;

    /// Operations this connection sends in one request: the driver hands it that many at once
    /// ([`Conn::execute_batch`]) when more than 1.
    fn batch_size(&self) -> usize {
        1
    }

    /// Executes `ops` as one request where the target can (one outcome per operation, in
    /// order); by default one after the other.
    fn execute_batch<'a>(&'a mut self, ops: &'a [Op]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(self.execute(op).await);
            }
            outcomes
        })
    }
}

/// What a target is to the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// orderd itself, through some interface.
    Orderd,
    /// A system orderd is compared with.
    Peer,
    /// What the interface alone can do, with no order processing behind it.
    Ceiling,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Orderd => "orderd",
            Role::Peer => "peer",
            Role::Ceiling => "ceiling",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Inproc,
    Tcp,
    /// `tcp` with the listener on TLS.
    TcpTls,
    TcpBatch,
    Http,
    HttpBare,
    Postgres,
    Redis,
}

impl TargetKind {
    pub const ALL: [TargetKind; 8] = [
        TargetKind::Inproc,
        TargetKind::Tcp,
        TargetKind::TcpTls,
        TargetKind::TcpBatch,
        TargetKind::Http,
        TargetKind::HttpBare,
        TargetKind::Postgres,
        TargetKind::Redis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Inproc => "inproc",
            TargetKind::Tcp => "tcp",
            TargetKind::TcpTls => "tcp-tls",
            TargetKind::TcpBatch => "tcp-batch",
            TargetKind::Http => "http",
            TargetKind::HttpBare => "http-bare",
            TargetKind::Postgres => "postgres",
            TargetKind::Redis => "redis",
        }
    }

    pub fn parse(name: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn role(self) -> Role {
        match self {
            TargetKind::Inproc
            | TargetKind::Tcp
            | TargetKind::TcpTls
            | TargetKind::TcpBatch
            | TargetKind::Http => Role::Orderd,
            TargetKind::Postgres | TargetKind::Redis => Role::Peer,
            TargetKind::HttpBare => Role::Ceiling,
        }
    }

    /// The ceiling of this target's interface, which the report divides by.
    pub fn ceiling(self) -> Option<TargetKind> {
        match self {
            TargetKind::Http => Some(TargetKind::HttpBare),
            _ => None,
        }
    }

    /// Operations per request: `batch_orders` for `tcp-batch`, 1 for every other target.
    pub fn ops_per_request(self, batch_orders: usize) -> usize {
        match self {
            TargetKind::TcpBatch => batch_orders,
            _ => 1,
        }
    }

    /// Checks cheaply that the target can run here (its binary exists, its peer answers), so
    /// that a target nobody asked for by name can be skipped with the reason.
    pub fn probe(self, settings: &Settings) -> BoxFuture<'_, Result<()>> {
        match self {
            TargetKind::Inproc => Box::pin(async { Ok(()) }),
            TargetKind::Tcp | TargetKind::TcpTls => Box::pin(tcp::probe(settings)),
            TargetKind::TcpBatch => Box::pin(tcp_batch::probe(settings)),
            TargetKind::Http => Box::pin(http::probe(settings)),
            TargetKind::HttpBare => Box::pin(http_bare::probe(settings)),
            TargetKind::Postgres => Box::pin(postgres::probe(settings)),
            TargetKind::Redis => Box::pin(redis::probe(settings)),
        }
    }

    /// Starts (or connects to) the target and sets `plan` up on a clean state.
    pub fn open<'a>(
        self,
        settings: &'a Settings,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<Box<dyn Target>>> {
        match self {
            TargetKind::Inproc => Box::pin(inproc::open(settings, plan)),
            TargetKind::Tcp => Box::pin(tcp::open(settings, plan)),
            TargetKind::TcpTls => Box::pin(tcp::open_tls(settings, plan)),
            TargetKind::TcpBatch => Box::pin(tcp_batch::open(settings, plan)),
            TargetKind::Http => Box::pin(http::open(settings, plan)),
            TargetKind::HttpBare => Box::pin(http_bare::open(settings, plan)),
            TargetKind::Postgres => Box::pin(postgres::open(settings, plan)),
            TargetKind::Redis => Box::pin(redis::open(settings, plan)),
        }
    }
}

/// Runs `work(i)` for `i` in `0..count` with at most `concurrency` running at once, stopping at
/// the first error. For set-up steps (stock of every SKU, customers).
pub async fn for_each_concurrent<F, Fut>(count: usize, concurrency: usize, work: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let work = work.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                work(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_roles() {
        for kind in TargetKind::ALL {
            assert_eq!(TargetKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(TargetKind::parse("ftp"), None);
        assert_eq!(TargetKind::Tcp.role(), Role::Orderd);
        assert_eq!(TargetKind::parse("tcp-batch"), Some(TargetKind::TcpBatch));
        assert_eq!(TargetKind::TcpBatch.role(), Role::Orderd);
        assert_eq!(TargetKind::TcpBatch.ops_per_request(1000), 1000);
        assert_eq!(TargetKind::Tcp.ops_per_request(1000), 1);
        assert_eq!(TargetKind::Http.ceiling(), Some(TargetKind::HttpBare));
        assert_eq!(TargetKind::Inproc.ceiling(), None);
        assert_eq!(TargetKind::Postgres.role(), Role::Peer);
        assert_eq!(TargetKind::HttpBare.role(), Role::Ceiling);
    }
}

//! The `inproc` target: `orderd_engine::Engine` in the bench process, through its public API
//! (`place_order`, `order`, `cancel_order`, `ship`), on RocksDB in a temporary directory with
//! `--durability` (`sync` by default) and one shard per core, as `benches/benches/engine.rs` opens it. No
//! network and no JSON: what the engine itself does per request.
//!
//! The engine's actors need an actix System, so the engine lives on a thread of its own that
//! runs one; the bench's clients call the engine handle from its tokio runtime (every call is
//! a message to a shard and a reply on a oneshot channel, which work from any thread).

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use orderd_engine::{
    CommandError, CustomerId, Engine, EngineConfig, NewCustomer, NewLine, NewShipment, OrderId,
    PlaceOrder,
};
use tokio::sync::oneshot;

use super::{for_each_concurrent, BoxFuture, Conn, Outcome, Plan, Settings, Target};
use crate::cli::DurabilityMode;
use crate::cpu::CpuSource;
use crate::workload::{Op, OrderRef};

const ACTOR: &str = "bench";

pub struct Inproc {
    engine: Engine,
    customers: Arc<Vec<CustomerId>>,
    skus: Arc<Vec<String>>,
    /// Dropping or firing it makes the engine thread shut the engine down and return.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Removed after the engine thread is joined.
    dir: Option<tempfile::TempDir>,
    durability: DurabilityMode,
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    let dir = tempfile::Builder::new()
        .prefix("orderd-bench-inproc-")
        .tempdir()
        .context("create the inproc target's data directory")?;
    let mut config = EngineConfig::new(dir.path().to_path_buf(), settings.shards);
    config.durability = settings.durability.engine();
    let (opened_tx, opened_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("inproc-engine".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let engine = match Engine::open(config) {
                    Ok(engine) => engine,
                    Err(error) => {
                        let _ = opened_tx.send(Err(anyhow!(error)));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(engine.clone()));
                // Fired or dropped: either way the run is over.
                let _ = stop_rx.await;
                engine.shutdown().await;
            })
        })
        .context("start the engine thread")?;
    let engine = opened_rx
        .await
        .context("the engine thread ended before opening the engine")?
        .with_context(|| format!("open the engine in {}", dir.path().display()))?;
    let mut target = Inproc {
        engine,
        customers: Arc::new(Vec::new()),
        skus: plan.skus.clone(),
        stop: Some(stop_tx),
        thread: Some(thread),
        dir: Some(dir),
        durability: settings.durability,
    };
    let mut customers = Vec::with_capacity(plan.customers);
    for i in 0..plan.customers {
        let customer = target
            .engine
            .create_customer(NewCustomer {
                name: format!("Bench Customer {i}"),
                email: format!("bench{i}@example.com"),
                phone: None,
                address: None,
            })
            .await
            .map_err(|e| anyhow!("create customer {i}: {e}"))?;
        customers.push(customer.id);
    }
    target.customers = Arc::new(customers);
    let engine = target.engine.clone();
    let skus = plan.skus.clone();
    let delta = i64::try_from(plan.stock_per_sku).context("stock per SKU exceeds i64")?;
    for_each_concurrent(plan.skus.len(), settings.setup_concurrency, move |i| {
        let engine = engine.clone();
        let skus = skus.clone();
        async move {
            engine
                .adjust_stock(&skus[i], delta, "bench set-up", ACTOR)
                .await
                .map_err(|e| anyhow!("stock of {}: {e}", skus[i]))?;
            Ok(())
        }
    })
    .await?;
    Ok(Box::new(target))
}

impl Target for Inproc {
    fn durability(&self) -> String {
        self.durability.describe()
    }

    fn cpu_source(&self) -> CpuSource {
        // The engine runs in this process: every thread but the client's.
        CpuSource::ThisProcessEngine
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>> {
        let conn = InprocConn {
            engine: self.engine.clone(),
            customers: self.customers.clone(),
            skus: self.skus.clone(),
        };
        Box::pin(async move { Ok(Box::new(conn) as Box<dyn Conn>) })
    }

    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let stock = self
                .engine
                .stock(sku)
                .await
                .map_err(|e| anyhow!("stock of {sku}: {e}"))?;
            Ok(Some(stock.available))
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .context("join the engine thread")?
                    .map_err(|_| anyhow!("the engine thread panicked"))?;
            }
            // The storage closes with the last engine handle: drop ours before the directory.
            let dir = self.dir.take();
            drop(self);
            if let Some(dir) = dir {
                dir.close().context("remove the inproc data directory")?;
            }
            Ok(())
        })
    }
}

impl Drop for Inproc {
    fn drop(&mut self) {
        // On an error path: let the engine shut down before its directory goes.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct InprocConn {
    engine: Engine,
    customers: Arc<Vec<CustomerId>>,
    skus: Arc<Vec<String>>,
}

fn outcome<T>(
    result: Result<T, CommandError>,
    order: impl FnOnce(T) -> Option<OrderRef>,
) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(order(value)),
        Err(CommandError::InsufficientStock { .. }) | Err(CommandError::InvalidTransition(_)) => {
            Outcome::Refused
        }
        Err(error) => Outcome::Error(error.to_string()),
    }
}

fn order_id(order: &OrderRef) -> Result<OrderId, Outcome> {
    match order {
        OrderRef::Number(id) => Ok(OrderId(*id)),
        OrderRef::Text(text) => Err(Outcome::Error(format!("not an engine order id: {text}"))),
    }
}

impl Conn for InprocConn {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match op {
                Op::Place(order) => {
                    let place = PlaceOrder {
                        refusal: None,
                        customer_id: self.customers[order.customer],
                        lines: order
                            .lines
                            .iter()
                            .map(|line| NewLine {
                                sku: self.skus[line.sku as usize].clone(),
                                qty: line.qty,
                                unit_price: line.unit_price,
                            })
                            .collect(),
                        shipping_address: None,
                        note: None,
                        idempotency: None,
                        actor: ACTOR.to_string(),
                    };
                    let want = order.want_ref;
                    outcome(self.engine.place_order(place).await, |view| {
                        want.then_some(OrderRef::Number(view.id.0))
                    })
                }
                Op::Read(order) => match order_id(order) {
                    Ok(id) => outcome(self.engine.order(id).await, |_| None),
                    Err(error) => error,
                },
                Op::Cancel(order) => match order_id(order) {
                    Ok(id) => outcome(self.engine.cancel_order(id, None, ACTOR).await, |_| None),
                    Err(error) => error,
                },
                Op::Ship(order) => match order_id(order) {
                    Ok(id) => outcome(
                        self.engine
                            .ship(NewShipment {
                                order_id: id,
                                carrier: "bench".to_string(),
                                lines: None,
                                actor: ACTOR.to_string(),
                            })
                            .await,
                        |_| None,
                    ),
                    Err(error) => error,
                },
            }
        })
    }
}

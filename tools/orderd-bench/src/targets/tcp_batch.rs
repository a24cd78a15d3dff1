//! The `tcp-batch` target: the `tcp` target's server and set-up, driven with `PLACE_ORDERS`
//! frames of `--batch-orders` orders each (as TigerBeetle sends 8,189 transfers per request),
//! one connection per worker, the worker's `--in-flight` slots pipelining whole frames on it.
//! Every order counts as one operation, and each order's latency is its frame's. In the mixed
//! workload, the reads, cancels and shipments drawn for a frame go beside it as single
//! requests on the same connection, and count as answered when the whole group is.

use std::sync::Arc;

use anyhow::Result;
use futures_util::future::join_all;
use orderd_client::{Client, ClientError};

use super::http::HttpShared;
use super::tcp::{self, place_body, Tcp, TcpConn};
use super::{BoxFuture, Conn, Outcome, Plan, Settings, Target};
use crate::cpu::CpuSource;
use crate::workload::{Op, OrderRef};

pub async fn probe(settings: &Settings) -> Result<()> {
    tcp::probe(settings).await
}

pub struct TcpBatch {
    tcp: Tcp,
    batch_orders: usize,
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    let server = super::http::start(settings, plan).await?;
    Ok(Box::new(TcpBatch {
        tcp: Tcp::new(server),
        batch_orders: settings.batch_orders.max(1),
    }))
}

impl Target for TcpBatch {
    fn durability(&self) -> String {
        self.tcp.durability()
    }

    fn cpu_source(&self) -> CpuSource {
        self.tcp.cpu_source()
    }

    fn connect(&self, worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>> {
        let client = self.tcp.client(worker);
        let shared = self.tcp.server.shared.clone();
        let batch_orders = self.batch_orders;
        Box::pin(async move {
            client.connect().await?;
            Ok(Box::new(BatchConn {
                client,
                shared,
                batch_orders,
            }) as Box<dyn Conn>)
        })
    }

    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.tcp.stock_available(sku)
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::new(self.tcp).stop()
    }
}

/// One client slot: sends its operations in `PLACE_ORDERS` frames on its worker's connection.
struct BatchConn {
    client: Client,
    shared: Arc<HttpShared>,
    batch_orders: usize,
}

impl BatchConn {
    /// A single request's connection handle (for what is not a placement).
    fn single(&self) -> TcpConn {
        TcpConn {
            client: self.client.clone(),
            shared: self.shared.clone(),
        }
    }

    /// The placements of `ops` in one frame; their outcomes, in order.
    async fn place(&self, ops: &[Op]) -> Vec<Outcome> {
        let orders: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Place(order) => Some(order),
                _ => None,
            })
            .collect();
        if orders.is_empty() {
            return Vec::new();
        }
        let bodies: Vec<_> = orders
            .iter()
            .map(|order| place_body(&self.shared, order))
            .collect();
        match self.client.place_orders(&bodies).await {
            Ok(outcomes) => orders
                .iter()
                .zip(outcomes)
                .map(|(order, outcome)| match outcome {
                    Ok(placed) => Outcome::Ok(
                        order
                            .want_ref
                            .then(|| OrderRef::Text(placed.id.into_boxed_str())),
                    ),
                    // insufficient_stock, as the other targets' refusals.
                    Err(body) if body.status == 409 => Outcome::Refused,
                    Err(body) => Outcome::Error(ClientError::Api(body).to_string()),
                })
                .collect(),
            Err(error) => {
                let message = error.to_string();
                orders
                    .iter()
                    .map(|_| Outcome::Error(message.clone()))
                    .collect()
            }
        }
    }
}

impl Conn for BatchConn {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut outcomes = self.execute_batch(std::slice::from_ref(op)).await;
            outcomes
                .pop()
                .unwrap_or_else(|| Outcome::Error("no outcome".into()))
        })
    }

    fn batch_size(&self) -> usize {
        self.batch_orders
    }

    fn execute_batch<'a>(&'a mut self, ops: &'a [Op]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let singles = ops
                .iter()
                .filter(|op| !matches!(op, Op::Place(_)))
                .map(|op| {
                    let mut conn = self.single();
                    async move { conn.execute(op).await }
                });
            let (placed, singles) = tokio::join!(self.place(ops), join_all(singles));
            // Back in the operations' order.
            let (mut placed, mut singles) = (placed.into_iter(), singles.into_iter());
            ops.iter()
                .map(|op| {
                    let next = match op {
                        Op::Place(_) => placed.next(),
                        _ => singles.next(),
                    };
                    next.unwrap_or_else(|| Outcome::Error("no outcome".into()))
                })
                .collect()
        })
    }
}

//! The `tcp` target: the real `orderd` binary, started and set up exactly as for the `http`
//! target (same configuration, `--durability`, same customers and stock), then driven over
//! its binary TCP protocol with `orderd-client`: one connection per worker, the worker's
//! client slots pipelining their requests on it (`--in-flight` per connection).

use std::sync::Arc;

use anyhow::Result;
use orderd_client::{Client, ClientConfig, ClientError};
use orderd_proto::tcp as msg;

use super::http::{self, Http, HttpShared};
use super::{BoxFuture, Conn, Outcome, Plan, Settings, Target};
use crate::cpu::CpuSource;
use crate::workload::{Op, Order, OrderRef};

pub async fn probe(settings: &Settings) -> Result<()> {
    http::probe(settings).await
}

pub struct Tcp {
    pub(super) server: Http,
    /// One client (one connection) per worker, made on first use.
    clients: std::sync::Mutex<Vec<Option<Client>>>,
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    Ok(Box::new(Tcp::new(http::start(settings, plan).await?)))
}

/// The `tcp-tls` target: the same server and workload with the TCP listener on TLS
/// (`tcp.tls_cert_file`), so that its ratio to `tcp` in one run is the cost of TLS.
pub async fn open_tls(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    Ok(Box::new(Tcp::new(
        http::start_with(settings, plan, true).await?,
    )))
}

impl Tcp {
    /// The target over a started and set-up server (the `tcp-batch` target's too).
    pub(super) fn new(server: Http) -> Tcp {
        Tcp {
            server,
            clients: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The client of `worker`: one pipelined connection per worker.
    pub(super) fn client(&self, worker: usize) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() <= worker {
            clients.resize(worker + 1, None);
        }
        clients[worker]
            .get_or_insert_with(|| {
                Client::new(
                    self.server.tcp_addr.to_string(),
                    self.server.secret.clone(),
                    ClientConfig {
                        tls: self.server.tcp_tls.clone(),
                        ..ClientConfig::default()
                    },
                )
            })
            .clone()
    }
}

impl Target for Tcp {
    fn durability(&self) -> String {
        self.server.durability()
    }

    fn cpu_source(&self) -> CpuSource {
        self.server.cpu_source()
    }

    fn connect(&self, worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>> {
        let client = self.client(worker);
        let shared = self.server.shared.clone();
        Box::pin(async move {
            client.connect().await?;
            Ok(Box::new(TcpConn { client, shared }) as Box<dyn Conn>)
        })
    }

    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.server.stock_available(sku)
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let server = Box::new(self.server);
        server.stop()
    }
}

/// The `PLACE_ORDER` body of a workload order (also one order of a `PLACE_ORDERS` frame).
pub(super) fn place_body(shared: &HttpShared, order: &Order) -> msg::PlaceOrder {
    msg::PlaceOrder {
        customer_id: shared.customers[order.customer].clone(),
        lines: order
            .lines
            .iter()
            .map(|line| msg::Line {
                sku: shared.skus[line.sku as usize].clone(),
                qty: line.qty,
                unit_price: line.unit_price,
            })
            .collect(),
        shipping_address: None,
        note: None,
        idempotency_key: None,
    }
}

/// One client slot: a handle on its worker's pipelined connection.
pub(super) struct TcpConn {
    pub(super) client: Client,
    pub(super) shared: Arc<HttpShared>,
}

impl TcpConn {
    async fn run(&mut self, op: &Op) -> Result<Outcome, ClientError> {
        match op {
            Op::Place(order) => {
                let placed = self
                    .client
                    .place_order(&place_body(&self.shared, order))
                    .await?;
                Ok(Outcome::Ok(
                    order
                        .want_ref
                        .then(|| OrderRef::Text(placed.id.into_boxed_str())),
                ))
            }
            Op::Read(order) => {
                self.client.get_order(&order.to_string()).await?;
                Ok(Outcome::Ok(None))
            }
            Op::Cancel(order) => {
                self.client.cancel_order(&order.to_string(), None).await?;
                Ok(Outcome::Ok(None))
            }
            Op::Ship(order) => {
                self.client
                    .create_shipment(&msg::CreateShipment {
                        order_id: order.to_string(),
                        carrier: "bench".into(),
                        lines: None,
                        idempotency_key: None,
                    })
                    .await?;
                Ok(Outcome::Ok(None))
            }
        }
    }
}

impl Conn for TcpConn {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.run(op).await {
                Ok(outcome) => outcome,
                // insufficient_stock (placement) or invalid_transition (cancel, ship), as the
                // HTTP target's 409.
                Err(ClientError::Api(body)) if body.status == 409 => Outcome::Refused,
                Err(error) => Outcome::Error(error.to_string()),
            }
        })
    }
}

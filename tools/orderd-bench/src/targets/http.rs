//! The `http` target: the real `orderd` binary, started by the bench on a generated
//! configuration (temporary data directory, `storage.durability` from `--durability`,
//! `"sync"` by default, free loopback ports), set up through its HTTP API (customers, stock adjustments) with the admin key it
//! writes to `<data_dir>/admin.key`, then driven over HTTP/1.1 keep-alive connections, one
//! order per request, as API.md describes. Stopped with SIGTERM at the end.
//!
//! Also the HTTP side of the workload that the `http-bare` target reuses ([`HttpOrdersConn`]):
//! the same request bodies go to both, so their ratio is what orderd adds to a bare handler.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use orderd_proto::{
    CancelOrderRequest, CreateCustomerRequest, CreateShipmentRequest, CustomerResponse,
    OrderLineRequest, PlaceOrderRequest, StockAdjustmentRequest, StockResponse,
};
use serde::Deserialize;

use super::{for_each_concurrent, BoxFuture, Conn, Outcome, Plan, Settings, Target};
use crate::cli::DurabilityMode;
use crate::cpu::CpuSource;
use crate::http_client::{bearer, HttpConn};
use crate::process::{free_loopback_port, ServerProcess};
use crate::workload::{Op, Order, OrderRef};

/// How long orderd gets to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub async fn probe(settings: &Settings) -> Result<()> {
    if !settings.orderd.is_file() {
        bail!(
            "no orderd binary at {} (build it with `cargo build --release --workspace --bins`, or pass --orderd PATH)",
            settings.orderd.display()
        );
    }
    Ok(())
}

pub struct Http {
    server: Option<ServerProcess>,
    pub shared: Arc<HttpShared>,
    /// orderd's binary TCP protocol (the `tcp` target).
    pub tcp_addr: SocketAddr,
    /// The admin secret (for the TCP protocol's `AUTH`).
    pub secret: String,
    /// The `tcp-tls` target: the TCP listener speaks TLS with a certificate the bench made,
    /// and this trusts it.
    pub tcp_tls: Option<orderd_client::TlsOptions>,
    /// Data directory, configuration, log, master key: removed after the server stops.
    dir: Option<tempfile::TempDir>,
    durability: DurabilityMode,
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    Ok(Box::new(start(settings, plan).await?))
}

/// Starts orderd and sets `plan` up through its HTTP API; the `tcp` target drives the same
/// server over its binary protocol.
pub async fn start(settings: &Settings, plan: &Plan) -> Result<Http> {
    start_with(settings, plan, false).await
}

/// [`start`], with the TCP listener on TLS when `tcp_tls` (the `tcp-tls` target): a CA and a
/// certificate for `127.0.0.1` made for the run, the CA trusted by the clients.
pub async fn start_with(settings: &Settings, plan: &Plan, tcp_tls: bool) -> Result<Http> {
    probe(settings).await?;
    let dir = tempfile::Builder::new()
        .prefix("orderd-bench-http-")
        .tempdir()
        .context("create the http target's directory")?;
    let http_port = free_loopback_port()?;
    let tcp_port = free_loopback_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let data_dir = dir.path().join("data");
    let (tls, tcp_extra) = if tcp_tls {
        let (cert, key, ca) = make_certificate(dir.path())?;
        let lines = format!(
            "tls_cert_file = {}\ntls_key_file = {}\n",
            toml_string(&cert.to_string_lossy()),
            toml_string(&key.to_string_lossy())
        );
        let options = orderd_client::TlsOptions::from_ca_file(&ca, "127.0.0.1")?;
        (Some(options), lines)
    } else {
        (None, String::new())
    };
    let config = config_toml(
        dir.path(),
        http_port,
        tcp_port,
        settings.shards,
        settings.durability,
        &tcp_extra,
    );
    let config_path = dir.path().join("orderd.toml");
    std::fs::write(&config_path, config).context("write the orderd configuration")?;
    let mut command = Command::new(&settings.orderd);
    command
        .arg("--config")
        .arg(&config_path)
        .current_dir(dir.path());
    // The configuration file is the whole truth: no ORDERD__ variable of the caller's
    // environment may change what is measured.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERD_") {
            command.env_remove(key);
        }
    }
    let mut server = ServerProcess::spawn("orderd", command, &dir.path().join("orderd.log"))?;
    server
        .wait_ready(addr, "/readyz", settings.connect_timeout)
        .await?;
    let secret = std::fs::read_to_string(data_dir.join("admin.key"))
        .with_context(|| format!("read {}", data_dir.join("admin.key").display()))?;
    let bearer = bearer(&secret)?;
    let customers = create_customers(addr, &bearer, plan.customers).await?;
    let shared = Arc::new(HttpShared {
        addr,
        bearer,
        customers,
        skus: plan.skus.clone(),
    });
    add_stock(&shared, plan, settings.setup_concurrency).await?;
    Ok(Http {
        server: Some(server),
        shared,
        tcp_addr: ([127, 0, 0, 1], tcp_port).into(),
        secret: secret.trim().to_string(),
        tcp_tls: tls,
        dir: Some(dir),
        durability: settings.durability,
    })
}

/// `tcp.max_frame_bytes` of the server the bench starts: 1 MiB (TigerBeetle's message size),
/// so that a `PLACE_ORDERS` frame of up to 8,189 catalog orders, and its reply, fit one frame.
pub const TCP_MAX_FRAME_BYTES: usize = 1 << 20;

/// orderd's configuration for a run: everything under `dir`, loopback only, `durability`,
/// no scheduled backups or drills (they would run in the middle of a measurement), frames of
/// [`TCP_MAX_FRAME_BYTES`].
fn config_toml(
    dir: &Path,
    http_port: u16,
    tcp_port: u16,
    shards: usize,
    durability: DurabilityMode,
    tcp_extra: &str,
) -> String {
    let path = |name: &str| toml_string(&dir.join(name).to_string_lossy());
    format!(
        "# Written by orderd-bench for one run.\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [tcp]\nlisten = \"127.0.0.1:{tcp_port}\"\nmax_frame_bytes = {TCP_MAX_FRAME_BYTES}\n{tcp_extra}\n\
         [storage]\ndata_dir = {data}\ndurability = \"{durability}\"\n\n\
         [engine]\nshards = {shards}\n\n\
         [backup]\ndir = {backups}\noffsite = {offsite}\ninterval_s = 0\nverify_interval_s = 0\n\n\
         [security]\nmaster_key_file = {master}\n\n\
         [log]\nlevel = \"warn\"\n",
        data = path("data"),
        backups = path("backups"),
        offsite = path("offsite"),
        master = path("master.key"),
        durability = durability.config_value(),
    )
}

/// A CA and a server certificate for `127.0.0.1` (ECDSA P-256) under `dir`: the paths of the
/// certificate, its key and the CA.
fn make_certificate(
    dir: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &ca)?;
    let paths = (
        dir.join("tls-cert.pem"),
        dir.join("tls-key.pem"),
        dir.join("tls-ca.pem"),
    );
    std::fs::write(&paths.0, cert.pem())?;
    std::fs::write(&paths.1, key.serialize_pem())?;
    std::fs::write(&paths.2, ca.pem())?;
    Ok(paths)
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn create_customers(
    addr: SocketAddr,
    bearer: &HeaderValue,
    count: usize,
) -> Result<Arc<Vec<String>>> {
    let mut conn = HttpConn::connect(addr).await?;
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let body = serde_json::to_vec(&CreateCustomerRequest {
            name: format!("Bench Customer {i}"),
            email: format!("bench{i}@example.com"),
            phone: None,
            address: None,
        })?;
        let (status, body) = conn
            .request(
                Method::POST,
                "/v1/customers",
                Some(bearer),
                Some(body.into()),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "POST /v1/customers answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let customer: CustomerResponse =
            serde_json::from_slice(&body).context("decode a created customer")?;
        ids.push(customer.id);
    }
    Ok(Arc::new(ids))
}

async fn add_stock(shared: &Arc<HttpShared>, plan: &Plan, concurrency: usize) -> Result<()> {
    let delta = i64::try_from(plan.stock_per_sku).context("stock per SKU exceeds i64")?;
    let body: Bytes = serde_json::to_vec(&StockAdjustmentRequest {
        delta,
        reason: "bench set-up".to_string(),
        location: None,
    })?
    .into();
    let workers = concurrency.clamp(1, plan.skus.len().max(1));
    // One connection per set-up worker, each taking SKUs from a shared counter.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shared = shared.clone();
    for_each_concurrent(workers, workers, move |_| {
        let shared = shared.clone();
        let next = next.clone();
        let body = body.clone();
        async move {
            let mut conn = HttpConn::connect(shared.addr).await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(sku) = shared.skus.get(i) else {
                    return Ok(());
                };
                let path = format!("/v1/stock/{sku}/adjustments");
                let (status, answer) = conn
                    .request(
                        Method::POST,
                        &path,
                        Some(&shared.bearer),
                        Some(body.clone()),
                    )
                    .await?;
                if status != StatusCode::OK {
                    bail!(
                        "POST {path} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
        }
    })
    .await
}

impl Target for Http {
    fn durability(&self) -> String {
        self.durability.describe()
    }

    fn cpu_source(&self) -> CpuSource {
        match self.server.as_ref().and_then(ServerProcess::pid) {
            Some(pid) => CpuSource::Tree { pid },
            None => CpuSource::Unknown,
        }
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>> {
        let shared = self.shared.clone();
        Box::pin(
            async move { Ok(Box::new(HttpOrdersConn::connect(shared).await?) as Box<dyn Conn>) },
        )
    }

    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let mut conn = HttpConn::connect(self.shared.addr).await?;
            let path = format!("/v1/stock/{sku}");
            let (status, body) = conn
                .request(Method::GET, &path, Some(&self.shared.bearer), None)
                .await?;
            if status != StatusCode::OK {
                bail!(
                    "GET {path} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let stock: StockResponse = serde_json::from_slice(&body).context("decode stock")?;
            Ok(Some(stock.available))
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(server) = self.server.take() {
                let status = server.terminate(STOP_GRACE).await?;
                if !status.success() {
                    bail!("orderd exited with {status} after SIGTERM");
                }
            }
            if let Some(dir) = self.dir.take() {
                dir.close().context("remove the http target's directory")?;
            }
            Ok(())
        })
    }
}

/// What every connection of an HTTP target shares.
pub struct HttpShared {
    pub addr: SocketAddr,
    pub bearer: HeaderValue,
    /// Customer ids by index.
    pub customers: Arc<Vec<String>>,
    pub skus: Arc<Vec<String>>,
}

/// One client slot's keep-alive connection, speaking orderd's order API (API.md): `POST
/// /v1/orders`, `GET /v1/orders/{id}`, `POST /v1/orders/{id}/cancel`, `POST
/// /v1/orders/{id}/shipments`. A broken connection is reopened on the next operation.
pub struct HttpOrdersConn {
    shared: Arc<HttpShared>,
    conn: Option<HttpConn>,
}

/// The only field of an order the client needs back.
#[derive(Deserialize)]
struct CreatedOrder<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

impl HttpOrdersConn {
    pub async fn connect(shared: Arc<HttpShared>) -> Result<HttpOrdersConn> {
        let conn = HttpConn::connect(shared.addr).await?;
        Ok(HttpOrdersConn {
            shared,
            conn: Some(conn),
        })
    }

    fn place_body(&self, order: &Order) -> Result<Bytes> {
        let request = PlaceOrderRequest {
            customer_id: self.shared.customers[order.customer].clone(),
            lines: order
                .lines
                .iter()
                .map(|line| OrderLineRequest {
                    sku: self.shared.skus[line.sku as usize].clone(),
                    qty: line.qty,
                    unit_price: Some(line.unit_price),
                })
                .collect(),
            shipping_address: None,
            note: None,
        };
        Ok(serde_json::to_vec(&request)?.into())
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(HttpConn::connect(self.shared.addr).await?),
        };
        let result = conn
            .request(method, path, Some(&self.shared.bearer), body)
            .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn run(&mut self, op: &Op) -> Result<Outcome> {
        let (expected, (status, body), want_ref) = match op {
            Op::Place(order) => {
                let body = self.place_body(order)?;
                (
                    StatusCode::CREATED,
                    self.send(Method::POST, "/v1/orders", Some(body)).await?,
                    order.want_ref,
                )
            }
            Op::Read(order) => (
                StatusCode::OK,
                self.send(Method::GET, &format!("/v1/orders/{order}"), None)
                    .await?,
                false,
            ),
            Op::Cancel(order) => {
                let body = serde_json::to_vec(&CancelOrderRequest::default())?.into();
                (
                    StatusCode::OK,
                    self.send(
                        Method::POST,
                        &format!("/v1/orders/{order}/cancel"),
                        Some(body),
                    )
                    .await?,
                    false,
                )
            }
            Op::Ship(order) => {
                let body = serde_json::to_vec(&CreateShipmentRequest {
                    carrier: "bench".to_string(),
                    lines: None,
                })?
                .into();
                (
                    StatusCode::CREATED,
                    self.send(
                        Method::POST,
                        &format!("/v1/orders/{order}/shipments"),
                        Some(body),
                    )
                    .await?,
                    false,
                )
            }
        };
        if status == expected {
            if !want_ref {
                return Ok(Outcome::Ok(None));
            }
            let created: CreatedOrder =
                serde_json::from_slice(&body).context("decode the placed order's id")?;
            return Ok(Outcome::Ok(Some(OrderRef::Text(created.id.into()))));
        }
        if status == StatusCode::CONFLICT {
            // insufficient_stock (placement) or invalid_transition (cancel, ship).
            return Ok(Outcome::Refused);
        }
        Ok(Outcome::Error(format!(
            "{} answered {status}: {}",
            op.kind().name(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )))
    }
}

impl Conn for HttpOrdersConn {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.run(op).await {
                Ok(outcome) => outcome,
                Err(error) => Outcome::Error(format!("{error:#}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_toml_with_the_run_s_paths() {
        let text = config_toml(
            Path::new("/tmp/a \"b\"\\c"),
            18080,
            17070,
            2,
            DurabilityMode::Sync,
            "",
        );
        assert!(text.contains("listen = \"127.0.0.1:18080\""));
        assert!(text.contains("listen = \"127.0.0.1:17070\""));
        assert!(text.contains("durability = \"sync\""));
        assert!(
            text.contains("data_dir = \"/tmp/a \\\"b\\\"\\\\c/data\""),
            "{text}"
        );
        assert!(text.contains("shards = 2"));
        assert!(text.contains("max_frame_bytes = 1048576\n"), "{text}");
    }

    #[test]
    fn config_carries_the_durability_asked_for() {
        let sync = config_toml(
            Path::new("/tmp/x"),
            18080,
            17070,
            2,
            DurabilityMode::Sync,
            "",
        );
        assert!(sync.contains("durability = \"sync\"\n"), "{sync}");
        assert!(!sync.contains("\"async\""), "{sync}");
        let text = config_toml(
            Path::new("/tmp/x"),
            18080,
            17070,
            2,
            DurabilityMode::Async,
            "",
        );
        assert!(text.contains("durability = \"async\"\n"), "{text}");
        assert!(!text.contains("durability = \"sync\""), "{text}");
    }
}

//! The `http-bare` target, the HTTP ceiling: a bare actix-web server (the framework orderd's
//! gateway uses) whose handlers parse the same JSON bodies into orderd's wire types and answer
//! a small JSON document, with no storage and no order processing. The bench runs it as a
//! separate process (`orderd-bench serve-bare --listen ADDR`), so that, as with orderd, the
//! server does not share the bench's process, and drives it with the same client and the same
//! requests as the `http` target. `http` ÷ `http-bare` is what orderd costs on top of HTTP.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{bail, Context, Result};
use orderd_proto::{CancelOrderRequest, CreateShipmentRequest, ObjectOnly, PlaceOrderRequest};

use super::http::{HttpOrdersConn, HttpShared};
use super::{BoxFuture, Conn, Plan, Settings, Target};
use crate::cpu::CpuSource;
use crate::http_client::bearer;
use crate::process::{free_loopback_port, ServerProcess};

const STOP_GRACE: Duration = Duration::from_secs(10);

pub async fn probe(settings: &Settings) -> Result<()> {
    if !settings.bare_exe.is_file() {
        bail!(
            "no orderd-bench executable at {} to serve the bare handler",
            settings.bare_exe.display()
        );
    }
    Ok(())
}

pub struct HttpBare {
    server: Option<ServerProcess>,
    shared: Arc<HttpShared>,
    dir: Option<tempfile::TempDir>,
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    probe(settings).await?;
    let dir = tempfile::Builder::new()
        .prefix("orderd-bench-bare-")
        .tempdir()
        .context("create the http-bare target's directory")?;
    let addr: SocketAddr = ([127, 0, 0, 1], free_loopback_port()?).into();
    let mut command = Command::new(&settings.bare_exe);
    command
        .arg("serve-bare")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--workers")
        .arg(settings.shards.to_string());
    let mut server = ServerProcess::spawn(
        "the bare HTTP server",
        command,
        &dir.path().join("bare.log"),
    )?;
    server
        .wait_ready(addr, "/readyz", settings.connect_timeout)
        .await?;
    // Ids shaped like orderd's, so that the bodies are the same size.
    let customers = (0..plan.customers)
        .map(|i| format!("cus_{i:016x}"))
        .collect();
    let shared = Arc::new(HttpShared {
        addr,
        bearer: bearer("bare-handler-accepts-any-key")?,
        customers: Arc::new(customers),
        skus: plan.skus.clone(),
    });
    Ok(Box::new(HttpBare {
        server: Some(server),
        shared,
        dir: Some(dir),
    }))
}

impl Target for HttpBare {
    fn durability(&self) -> String {
        "none (no storage)".to_string()
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

    fn stock_available<'a>(&'a self, _sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async { Ok(None) })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(server) = self.server.take() {
                // actix-web exits 0 on SIGTERM after a graceful stop.
                server.terminate(STOP_GRACE).await?;
            }
            if let Some(dir) = self.dir.take() {
                dir.close()
                    .context("remove the http-bare target's directory")?;
            }
            Ok(())
        })
    }
}

/// Order ids handed out by the bare server.
struct Ids(AtomicU64);

impl Ids {
    fn next(&self) -> String {
        format!("ord_{:016x}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

fn has_bearer(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer ") && value.len() > 7)
}

fn small_order(id: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "id": id, "status": status }))
        .expect("a JSON object encodes")
}

async fn place(
    request: HttpRequest,
    ids: web::Data<Ids>,
    body: web::Json<ObjectOnly<PlaceOrderRequest>>,
) -> HttpResponse {
    if !has_bearer(&request) {
        return HttpResponse::Unauthorized().finish();
    }
    let order = body.into_inner().0;
    if order.lines.is_empty() || order.lines.iter().any(|line| line.qty == 0) {
        return HttpResponse::BadRequest().finish();
    }
    let id = ids.next();
    HttpResponse::Created()
        .insert_header(("Location", format!("/v1/orders/{id}")))
        .content_type("application/json")
        .body(small_order(&id, "confirmed"))
}

async fn read(request: HttpRequest, id: web::Path<String>) -> HttpResponse {
    if !has_bearer(&request) {
        return HttpResponse::Unauthorized().finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(small_order(&id, "confirmed"))
}

async fn cancel(
    request: HttpRequest,
    id: web::Path<String>,
    _body: web::Json<ObjectOnly<CancelOrderRequest>>,
) -> HttpResponse {
    if !has_bearer(&request) {
        return HttpResponse::Unauthorized().finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(small_order(&id, "cancelled"))
}

async fn ship(
    request: HttpRequest,
    ids: web::Data<Ids>,
    id: web::Path<String>,
    _body: web::Json<ObjectOnly<CreateShipmentRequest>>,
) -> HttpResponse {
    if !has_bearer(&request) {
        return HttpResponse::Unauthorized().finish();
    }
    let shipment = ids.next().replacen("ord_", "shp_", 1);
    HttpResponse::Created()
        .content_type("application/json")
        .body(
            serde_json::to_vec(&serde_json::json!({
                "id": shipment, "order_id": id.as_str(), "status": "shipped"
            }))
            .expect("a JSON object encodes"),
        )
}

/// `orderd-bench serve-bare`: serves the bare handlers on `listen` with `workers` threads
/// until SIGTERM or SIGINT.
pub fn serve(listen: &str, workers: usize) -> Result<()> {
    let ids = web::Data::new(Ids(AtomicU64::new(1)));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(ids.clone())
                .route("/readyz", web::get().to(HttpResponse::Ok))
                .route("/v1/orders", web::post().to(place))
                .route("/v1/orders/{id}", web::get().to(read))
                .route("/v1/orders/{id}/cancel", web::post().to(cancel))
                .route("/v1/orders/{id}/shipments", web::post().to(ship))
        })
        .workers(workers.max(1))
        .bind(listen)
        .with_context(|| format!("bind {listen}"))?
        .run()
        .await
        .context("serve")
    })
}

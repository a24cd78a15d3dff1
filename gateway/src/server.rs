//! Process start-up and shutdown: logging, the master key, the engine, the data keys, the key
//! table, the HTTP server and the TCP server.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use orderd_engine::Engine;
use orderd_storage::{Family, Write};
use tracing_subscriber::EnvFilter;

use crate::audit::{self, AuditLog};
use crate::auth::{Auth, KeyStore, RateLimiter};
use crate::error;
use crate::inspection::{self, Inspector};
use crate::routes;
use crate::vault::{MasterKeySource, Vault};
use orderd_config::{Config, DurabilitySetting, LogFormat};

/// Seconds that in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_TIMEOUT_S: u64 = 10;

/// Sets up logging: `log.level` (or `RUST_LOG` when set) and `log.format`. A second call (as in
/// tests) leaves the first subscriber in place.
pub fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(&directives).context("invalid RUST_LOG")?
        }
        _ => EnvFilter::try_new(&config.log.level).context("invalid log.level")?,
    };
    // The filter is reloadable: change management changes `log.level` while running.
    let ansi = std::io::stdout().is_terminal();
    match config.log.format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                crate::settings::set_log_reload(log_reload(handle));
            }
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                crate::settings::set_log_reload(log_reload(handle));
            }
        }
    }
    Ok(())
}

/// Change management's way to replace the log filter (`log.level`) of a running subscriber.
fn log_reload<S: 'static>(
    handle: tracing_subscriber::reload::Handle<EnvFilter, S>,
) -> crate::settings::LogReload {
    Box::new(move |level| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Runs orderd until SIGTERM or SIGINT, then drains requests and shuts the engine down.
/// Must be called inside an actix system (`#[actix_web::main]`).
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_tracing(&config)?;
    // Before the engine opens, so that the log writer's first group commits are recorded.
    crate::metrics::handle();
    let data_dir = config.storage.data_dir.clone();
    tracing::info!(
        message = "Starting orderd.",
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %data_dir.display(),
        shards = config.shard_count(),
        durability = ?config.storage.durability,
    );
    if orderd_engine::failpoint::ENABLED {
        tracing::warn!(
            message = "This is a test build: failpoints are compiled in (SKUs named FAILPOINT-* make shards panic or hang). Never run it in production."
        );
    }
    if config.http.rate_limit_per_key_per_s > 0 {
        tracing::info!(
            message = "Per-key rate limit is on.",
            rate_limit_per_key_per_s = config.http.rate_limit_per_key_per_s
        );
    }

    // Before the engine opens: a key file inside the data directory is refused untouched.
    let key_source = MasterKeySource::from_config(&config).context("cannot use the master key")?;
    let opened_at = Instant::now();
    let engine = Engine::open(engine_config(&config))
        .with_context(|| format!("cannot open the engine in {}", data_dir.display()))?;
    tracing::info!(
        message = "Engine open.",
        shards = engine.shard_count(),
        elapsed_ms = opened_at.elapsed().as_millis() as u64
    );

    let vault = match prepare_personal_data(&engine, key_source).await {
        Ok(vault) => vault,
        Err(error) => {
            engine.shutdown().await;
            return Err(error);
        }
    };
    // The values applied changes left (change management) override the configuration.
    let live = match crate::changes::load_overrides(engine.storage().as_ref()) {
        Ok(overrides) => {
            if !overrides.is_empty() {
                tracing::info!(
                    message = "Settings changed by applied changes override the configuration.",
                    settings = ?overrides.keys().collect::<Vec<_>>()
                );
            }
            let live = crate::settings::Live::start(config.clone(), &overrides);
            if overrides.contains_key("log.level") {
                crate::settings::reload_log(&live.config().log.level);
            }
            Arc::new(live)
        }
        Err(error) => {
            engine.shutdown().await;
            return Err(error.context("cannot read the settings applied changes left"));
        }
    };
    let config = (*live.config()).clone();
    let served = serve(&config, engine.clone(), vault, live).await;
    tracing::info!(message = "HTTP server stopped; shutting the engine down.");
    engine.shutdown().await;
    tracing::info!(message = "orderd stopped.");
    served
}

/// Marker in `control`: every personal-data value in storage is sealed. This version seals
/// before it writes, so once a start-up migration has run, later starts skip the walk over
/// every customer and order.
const PERSONAL_DATA_SEALED_KEY: &[u8] = b"gateway/personal_data/sealed";

/// Loads the keys of personal data, then seals what an earlier version stored in plaintext (the
/// engine then rewrites its snapshots and drops the older log, so no plaintext stays on disk).
async fn prepare_personal_data(
    engine: &Engine,
    key_source: MasterKeySource,
) -> anyhow::Result<Arc<Vault>> {
    let vault = Arc::new(
        Vault::load(engine.storage(), key_source)
            .context("cannot load the keys of personal data")?,
    );
    let storage = engine.storage();
    if storage
        .get(Family::Control, PERSONAL_DATA_SEALED_KEY)
        .context("cannot read the personal-data marker")?
        .is_some()
    {
        return Ok(vault);
    }
    let sealed = Arc::new(AtomicU64::new(0));
    let started_at = Instant::now();
    let records = engine
        .reseal_personal_data(vault.resealer(sealed.clone()))
        .await
        .context("cannot seal the personal data written by an earlier version")?;
    if records > 0 {
        tracing::warn!(
            message = "Sealed personal data that an earlier version stored in plaintext; older log batches and snapshots were deleted and storage compacted.",
            values = sealed.load(Ordering::Relaxed),
            records,
            elapsed_ms = started_at.elapsed().as_millis() as u64
        );
    }
    storage
        .write(
            vec![Write::Put {
                family: Family::Control,
                key: PERSONAL_DATA_SEALED_KEY.to_vec(),
                value: vec![1],
            }],
            true,
        )
        .context("cannot record that personal data is sealed")?;
    Ok(vault)
}

/// Loads the keys, binds and runs the HTTP server until it stops.
async fn serve(
    config: &Config,
    engine: Engine,
    vault: Arc<Vault>,
    live: Arc<crate::settings::Live>,
) -> anyhow::Result<()> {
    let keys = KeyStore::open(&config.storage.data_dir).context("cannot load the API keys")?;
    match keys
        .ensure_admin_key()
        .context("cannot create the first admin key")?
    {
        Some(path) => tracing::info!(
            message = "Created the first admin API key; its secret is in this file.",
            path = %path.display()
        ),
        None if keys.is_empty() => tracing::warn!(
            message = "No API key exists but the admin key file does; remove it and restart to create a new admin key.",
            path = %keys.admin_key_path().display()
        ),
        None => {}
    }
    let auth = web::Data::from(Arc::new(Auth {
        keys,
        limiter: RateLimiter::new(config.http.rate_limit_per_key_per_s),
    }));
    let audit = web::Data::new(
        AuditLog::start_with(
            engine.storage(),
            &config.audit,
            engine.audit_seq(),
            engine.shard_count() as u16,
        )
        .context("cannot open the audit trail")?
        .with_idempotency_retention_s(config.engine.idempotency_retention_s),
    );
    let audit_at_exit = audit.clone();
    let engine_at_exit = engine.clone();
    let inspector = web::Data::new(Inspector::new(config, engine.clone()));
    let backups = web::Data::new(crate::backups::Backups::start(
        &config.backup,
        config.storage.data_dir.clone(),
        engine.clone(),
    ));
    let backups_at_exit = backups.clone();
    live.set_hooks(crate::settings::Hooks {
        auth: auth.clone().into_inner(),
        engine: engine.clone(),
        inspector: inspector.clone().into_inner(),
        backups: backups.clone().into_inner(),
    });
    let changes = crate::changes::Changes::open(
        engine.clone(),
        live.clone(),
        audit.clone().into_inner(),
        config.changes.clone(),
    )
    .context("cannot read the change requests")?;
    // Before the first request: whoever reads a change sees its watch resumed.
    if let Err(error) = changes.resume().await {
        tracing::error!(message = "Cannot resume the watch of applied changes.", %error);
    }
    let watcher = changes.start_watcher();
    let changes = web::Data::from(changes);
    let live = web::Data::from(live);
    let tcp = crate::tcp::TcpServer::start(
        &config.tcp.listen,
        config.tcp_workers(),
        crate::tcp::Shared {
            engine: engine.clone(),
            vault: vault.clone(),
            audit: audit.clone().into_inner(),
            auth: auth.clone().into_inner(),
            limits: crate::tcp::Limits::from_config(&config.tcp),
        },
    )?;
    tracing::info!(message = "listening", addr = %tcp.local_addr(), protocol = "tcp");
    let inspector_for_schedule = inspector.clone().into_inner();
    let engine = web::Data::new(engine);
    let vault = web::Data::from(vault);
    let body_limit_bytes = config.http.body_limit_bytes;

    let server = HttpServer::new(move || {
        App::new()
            .app_data(auth.clone())
            .app_data(engine.clone())
            .app_data(vault.clone())
            .app_data(audit.clone())
            .app_data(inspector.clone())
            .app_data(backups.clone())
            .app_data(live.clone())
            .app_data(changes.clone())
            .wrap(middleware::from_fn(audit::record_refusals))
            .wrap(error::problem_fallback())
            // Outermost: times everything, refusals and fallbacks included.
            .wrap(middleware::from_fn(crate::metrics::record_request))
            .configure(|cfg| routes::configure(cfg, body_limit_bytes))
    })
    .workers(config.http_workers())
    .max_connections(config.http.max_connections)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_S)
    .bind(&config.http.listen)
    .with_context(|| format!("cannot listen on {}", config.http.listen))?;

    for addr in server.addrs() {
        tracing::info!(message = "listening", %addr, protocol = "http");
    }
    inspector_for_schedule.set_http_addrs(server.addrs());
    inspector_for_schedule.set_tcp_addr(tcp.local_addr());
    let server = server.run();
    // Escalation: the supervisor gave up on a shard. With `exit_on_escalation` the server
    // drains and the process exits non-zero, for the service manager to restart it.
    let escalated = Arc::new(std::sync::Mutex::new(None::<String>));
    if config.supervisor.exit_on_escalation {
        let handle = server.handle();
        let engine = engine_at_exit.clone();
        let escalated = escalated.clone();
        actix_web::rt::spawn(async move {
            let reason = engine.escalation().await;
            tracing::error!(
                message = "Supervisor escalated; stopping so that the service manager restarts orderd.",
                %reason
            );
            *escalated.lock().expect("escalation slot") = Some(reason);
            handle.stop(true).await;
        });
    }
    let schedule = inspection::Schedule::start(inspector_for_schedule);
    let served = server.await.context("HTTP server failed");
    // TCP connections finish what they have in flight (they need the engine and the audit
    // writer) before those stop.
    let _ = web::block(move || tcp.stop()).await;
    // A watch round in progress finishes (it writes storage and the audit trail).
    watcher.stop().await;
    // A scheduled inspection in progress finishes (its incident writes need storage) first.
    schedule.stop().await;
    // A backup or drill in progress finishes first (it reads storage).
    let _ = web::block(move || backups_at_exit.stop()).await;
    // The audit writer holds storage: stop it so that RocksDB can close before exit.
    audit_at_exit.shutdown().await;
    if let Some(reason) = escalated.lock().expect("escalation slot").take() {
        return Err(anyhow::anyhow!("supervisor escalated: {reason}"));
    }
    served
}

/// The engine's configuration, from orderd's.
pub fn engine_config(config: &Config) -> orderd_engine::EngineConfig {
    orderd_engine::EngineConfig {
        data_dir: config.storage.data_dir.clone(),
        shards: config.shard_count(),
        durability: match config.storage.durability {
            DurabilitySetting::Sync => orderd_engine::Durability::Sync,
            DurabilitySetting::Async => orderd_engine::Durability::Async,
        },
        flush_interval_ms: config.storage.flush_interval_ms,
        mailbox_capacity: config.engine.mailbox_capacity,
        batch_events_max: config.engine.batch_events_max,
        snapshot_interval_events: config.engine.snapshot_interval_events,
        idempotency_retention_s: config.engine.idempotency_retention_s,
        pending_retry_ms: config.engine.pending_retry_ms,
        request_timeout_ms: config.engine.request_timeout_ms,
        min_free_bytes: config.storage.min_free_bytes,
        inbox_orders_max: config.engine.inbox_orders_max,
        supervisor: orderd_engine::SupervisorConfig {
            heartbeat_interval_ms: config.supervisor.heartbeat_interval_ms,
            heartbeat_timeout_ms: config.supervisor.heartbeat_timeout_ms,
            max_restarts: config.supervisor.max_restarts,
            window_s: config.supervisor.window_s,
        },
        incident_retention_max: config.incidents.retention_max,
    }
}

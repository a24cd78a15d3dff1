//! Process start-up and shutdown: logging, the master key, the engine, the data keys, the key
//! table, the HTTP server and the TCP server.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use orderd_config::{Config, LogFormat};
use orderd_control::backups::Backups;
use orderd_control::changes::{self, Changes, Watcher};
use orderd_control::inspection::{Inspector, Schedule};
use orderd_control::settings::{Live, LogReload};
use orderd_control::window::RequestWindow;
use orderd_engine::Engine;
use orderd_service::audit::AuditLog;
use orderd_service::auth::{Auth, KeyStore, RateLimiter};
use orderd_service::ops;
use orderd_service::vault::{MasterKeySource, Vault};
use orderd_storage::{Family, Write};
use tracing_subscriber::EnvFilter;

use crate::http;
use crate::peers::{Admission, PeerCounts};
use crate::tcp::{self, TcpServer};

/// Seconds that in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_TIMEOUT_S: u64 = 10;

/// Sets up logging: `log.level` (or `RUST_LOG` when set) and `log.format`, and answers how to
/// replace the filter while running (change management's `log.level`). A second call (as in
/// tests) leaves the first subscriber in place and answers `None`.
pub fn init_tracing(config: &Config) -> anyhow::Result<Option<LogReload>> {
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
                return Ok(Some(log_reload(handle)));
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
                return Ok(Some(log_reload(handle)));
            }
        }
    }
    Ok(None)
}

/// Change management's way to replace the log filter (`log.level`) of a running subscriber.
fn log_reload<S: 'static>(handle: tracing_subscriber::reload::Handle<EnvFilter, S>) -> LogReload {
    Box::new(move |level| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// The git commit this binary was built from (`gateway/build.rs`), or `unknown`.
pub const REVISION: &str = env!("ORDERD_GIT_REVISION");

/// Runs orderd until SIGTERM or SIGINT, then drains requests and shuts the engine down.
/// Must be called inside an actix system (`#[actix_web::main]`).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let log_reload = init_tracing(&config)?;
    // Before the engine opens, so that the log writer's first group commits are recorded.
    orderd_control::telemetry::handle();
    orderd_control::telemetry::set_build_info(env!("CARGO_PKG_VERSION"), REVISION);
    // systemd's watchdog is fed from now on (start-up is bounded by TimeoutStartSec=).
    let notifier = Arc::new(crate::systemd::Notifier::start());
    let data_dir = config.storage.data_dir.clone();
    tracing::info!(
        message = "Starting orderd.",
        version = env!("CARGO_PKG_VERSION"),
        revision = REVISION,
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

    make_files_private(&config)?;
    // Before the engine opens: a TLS file that is missing, unreadable or does not match its
    // pair stops orderd here, naming the setting.
    let tls = crate::tls::FrontDoors::load(&config)?;
    // Before the engine opens: a key file inside the data directory is refused untouched.
    let key_source = MasterKeySource::from_config(&config).context("cannot use the master key")?;
    let opened_at = Instant::now();
    let engine = Engine::open(orderd_service::engine_config(&config))
        .with_context(|| format!("cannot open the engine in {}", data_dir.display()))?;
    notifier.engine_open(&engine);
    tracing::info!(
        message = "Engine open.",
        shards = engine.shard_count(),
        elapsed_ms = opened_at.elapsed().as_millis() as u64
    );

    let vault = match prepare_personal_data(&engine, key_source, &config).await {
        Ok(vault) => vault,
        Err(error) => {
            engine.shutdown().await;
            return Err(error);
        }
    };
    // The values applied changes left (change management) override the configuration.
    let live = match changes::load_overrides(engine.storage().as_ref()) {
        Ok(overrides) => {
            if !overrides.is_empty() {
                tracing::info!(
                    message = "Settings changed by applied changes override the configuration.",
                    settings = ?overrides.keys().collect::<Vec<_>>()
                );
            }
            Arc::new(Live::start(config.clone(), &overrides, log_reload))
        }
        Err(error) => {
            engine.shutdown().await;
            return Err(error.context("cannot read the settings applied changes left"));
        }
    };
    let config = (*live.config()).clone();
    let mut services = match Services::start(&config, &tls, engine.clone(), vault, live).await {
        Ok(services) => services,
        Err(error) => {
            engine.shutdown().await;
            return Err(error);
        }
    };
    let served = serve(&config, tls.http, &mut services, notifier.clone()).await;
    notifier.stopping();
    tracing::info!(message = "HTTP server stopped; stopping the services.");
    let escalated = services.escalated();
    services.stop().await;
    notifier.finish();
    tracing::info!(message = "orderd stopped.");
    match escalated {
        Some(reason) => Err(anyhow::anyhow!("supervisor escalated: {reason}")),
        None => served,
    }
}

/// Everything orderd creates from here on is its user's alone (umask 077: directories 0700,
/// files 0600: RocksDB's files, backups, checkpoints, key files, off-site copies on a local
/// path), and the data and backup directories, if they exist, become 0700 (an earlier version,
/// or an operator, may have made them under the default umask).
fn make_files_private(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    for dir in [&config.storage.data_dir, &config.backup.dir] {
        if dir.is_dir() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
        }
    }
    Ok(())
}

/// Marker in `control`: every personal-data value in storage is sealed. This version seals
/// before it writes, so once a start-up migration has run, later starts skip the walk over
/// every customer and order.
const PERSONAL_DATA_SEALED_KEY: &[u8] = b"gateway/personal_data/sealed";

/// Marker in `control`: every customer's personal data (and its orders' shipping addresses)
/// is sealed under the customer's own key (issue 19 item 6). Set by the start-up migration of
/// the first start of this version; later starts skip the walk.
const CUSTOMER_KEYS_MIGRATED_KEY: &[u8] = b"gateway/personal_data/customer_keys";

/// Loads the keys of personal data (the shared data keys in `control`, the customer key store
/// `<data_dir>/customer.keys` with its copy in `<backup.dir>`), then moves what an earlier
/// version stored under the shared data keys, or in plaintext, under each customer's own key:
/// first every missing key is made (one fsync for all), then the values are sealed under them;
/// the engine then rewrites its snapshots and drops the older log, so the live store holds no
/// value erasure could not reach. Backups taken before keep the old form
/// (docs/OPERATIONS.md, "Erasure").
async fn prepare_personal_data(
    engine: &Engine,
    key_source: MasterKeySource,
    config: &Config,
) -> anyhow::Result<Arc<Vault>> {
    use orderd_service::customer_keys::CUSTOMER_KEYS_FILE;
    let vault = Arc::new(
        Vault::load_with_customer_keys(
            engine.storage(),
            key_source,
            config.storage.data_dir.join(CUSTOMER_KEYS_FILE),
            Some(config.backup.dir.join(CUSTOMER_KEYS_FILE)),
        )
        .context("cannot load the keys of personal data")?,
    );
    let storage = engine.storage();
    if storage
        .get(Family::Control, CUSTOMER_KEYS_MIGRATED_KEY)
        .context("cannot read the personal-data marker")?
        .is_some()
    {
        return Ok(vault);
    }
    let started_at = Instant::now();
    let made = Arc::new(AtomicU64::new(0));
    engine
        .reseal_personal_data(vault.customer_key_maker(made.clone()))
        .await
        .context("cannot make the customer keys of existing customers")?;
    if let Some(keys) = vault.customer_keys() {
        keys.sync()
            .context("cannot make the customer keys durable")?;
    }
    let sealed = Arc::new(AtomicU64::new(0));
    let records = engine
        .reseal_personal_data(vault.customer_key_resealer(sealed.clone()))
        .await
        .context("cannot seal existing personal data under the customers' keys")?;
    if records > 0 {
        tracing::warn!(
            message = "Sealed the personal data of existing customers under keys of their own (it was under the shared data keys, or in plaintext); older log batches and snapshots were deleted and storage compacted. Backups taken before still hold the old form.",
            customers = made.load(Ordering::Relaxed),
            values = sealed.load(Ordering::Relaxed),
            records,
            elapsed_ms = started_at.elapsed().as_millis() as u64
        );
    }
    storage
        .write(
            vec![
                Write::Put {
                    family: Family::Control,
                    key: PERSONAL_DATA_SEALED_KEY.to_vec(),
                    value: vec![1],
                },
                Write::Put {
                    family: Family::Control,
                    key: CUSTOMER_KEYS_MIGRATED_KEY.to_vec(),
                    value: vec![1],
                },
            ],
            true,
        )
        .context("cannot record that personal data is sealed")?;
    Ok(vault)
}

/// Every service of a running orderd, in the order [`Services::start`] starts them; the HTTP
/// server serves their handles. [`Services::stop`] stops them in reverse order, each after
/// what depends on it: the front doors before the engine and the audit writer, a watch round,
/// a scheduled inspection and a backup in progress before storage closes.
pub struct Services {
    pub engine: Engine,
    pub vault: Arc<Vault>,
    pub live: Arc<Live>,
    pub auth: Arc<Auth>,
    pub audit: Arc<AuditLog>,
    /// The requests both front doors answered, which change management's watch judges.
    pub window: Arc<RequestWindow>,
    pub inspector: Arc<Inspector>,
    pub backups: Arc<Backups>,
    pub changes: Arc<Changes>,
    watcher: Watcher,
    /// Applies the engine's live settings (`engine.*`, `storage.flush_interval_ms`,
    /// `supervisor.*`) when the configuration changes.
    tunables: tokio::task::JoinHandle<()>,
    tcp: TcpServer,
    /// Started once the HTTP server has bound ([`Services::serving`]).
    schedule: Option<Schedule>,
    /// Why the supervisor escalated, when it did (with `supervisor.exit_on_escalation`).
    escalated: Arc<std::sync::Mutex<Option<String>>>,
    /// Deletes public events past their retention.
    sweeper: orderd_control::events::Sweeper,
    /// Webhook endpoints and their delivery workers.
    pub webhooks: Arc<orderd_control::webhooks::Webhooks>,
}

impl Services {
    /// Starts every service over an open engine: the key table (with the first admin key),
    /// the audit writer, inspection, the backup worker, change management (its watch resumed
    /// before the first request) and the TCP front door.
    pub async fn start(
        config: &Config,
        tls: &crate::tls::FrontDoors,
        engine: Engine,
        vault: Arc<Vault>,
        live: Arc<Live>,
    ) -> anyhow::Result<Services> {
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
        let auth = Arc::new(Auth {
            keys,
            limiter: RateLimiter::following(live.subscribe()),
        });
        let audit = Arc::new(
            AuditLog::start_with(
                engine.storage(),
                &config.audit,
                engine.audit_seq(),
                engine.shard_count() as u16,
            )
            .context("cannot open the audit trail")?
            .with_idempotency_retention_s(config.engine.idempotency_retention_s),
        );
        let tunables = follow_engine_settings(live.subscribe(), engine.clone());
        let window = Arc::new(RequestWindow::new());
        let inspector = Arc::new(Inspector::new(live.subscribe(), engine.clone()));
        let backups = Arc::new(Backups::start(
            live.subscribe(),
            config.storage.data_dir.clone(),
            engine.clone(),
            vault.clone(),
        ));
        let changes = Changes::open(
            engine.clone(),
            live.clone(),
            audit.clone(),
            window.clone(),
            config.changes.clone(),
        )
        .context("cannot read the change requests")?;
        // Before the first request: whoever reads a change sees its watch resumed.
        if let Err(error) = changes.resume().await {
            tracing::error!(message = "Cannot resume the watch of applied changes.", %error);
        }
        let watcher = changes.start_watcher();
        let sweeper = orderd_control::events::Sweeper::start(engine.clone(), &config.events);
        let webhooks = orderd_control::webhooks::Webhooks::start(
            engine.clone(),
            orderd_control::webhooks::Settings::from_config(config),
        )
        .context("cannot read the webhook endpoints")?;
        let tcp_tls = tls.tcp.clone().map(tokio_rustls::TlsAcceptor::from);
        let tcp = TcpServer::start(
            &config.tcp.listen,
            config.tcp_workers(),
            tcp::Shared {
                engine: engine.clone(),
                vault: vault.clone(),
                audit: audit.clone(),
                auth: auth.clone(),
                window: window.clone(),
                limits: tcp::Limits::from_config(&config.tcp),
                tls: tcp_tls.clone(),
                pricing: pricing(config),
            },
        )?;
        tracing::info!(
            message = "listening",
            addr = %tcp.local_addr(),
            protocol = "tcp",
            tls = tcp_tls.is_some()
        );
        inspector.set_tcp_addr(tcp.local_addr());
        let escalated = Arc::new(std::sync::Mutex::new(None::<String>));
        Ok(Services {
            engine,
            vault,
            live,
            auth,
            audit,
            window,
            inspector,
            backups,
            changes,
            watcher,
            tunables,
            tcp,
            schedule: None,
            escalated,
            sweeper,
            webhooks,
        })
    }

    /// Called once the HTTP server has bound `http_addrs`: the inspection knows what to probe
    /// and its schedule starts; with `supervisor.exit_on_escalation`, an escalation of the
    /// supervisor stops `server` (it drains, and the process exits non-zero for the service
    /// manager to restart it).
    fn serving(
        &mut self,
        config: &Config,
        http_addrs: Vec<std::net::SocketAddr>,
        server: actix_web::dev::ServerHandle,
        notifier: Arc<crate::systemd::Notifier>,
    ) {
        self.inspector.set_http_addrs(http_addrs);
        self.schedule = Some(Schedule::start(self.inspector.clone()));
        // systemd: READY=1 once /readyz would answer 200; STOPPING=1 as the drain begins (the
        // HTTP server reacts to the same signals by itself).
        let engine = self.engine.clone();
        let ready = notifier.clone();
        actix_web::rt::spawn(async move { ready.ready_when(&engine).await });
        let stopping = notifier.clone();
        actix_web::rt::spawn(async move {
            use actix_web::rt::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stopping.stopping();
        });
        if config.supervisor.exit_on_escalation {
            let engine = self.engine.clone();
            let escalated = self.escalated.clone();
            actix_web::rt::spawn(async move {
                let reason = engine.escalation().await;
                notifier.stopping();
                tracing::error!(
                    message = "Supervisor escalated; stopping so that the service manager restarts orderd.",
                    %reason
                );
                *escalated.lock().expect("escalation slot") = Some(reason);
                server.stop(true).await;
            });
        }
    }

    /// Why the supervisor escalated, if it did.
    fn escalated(&self) -> Option<String> {
        self.escalated.lock().expect("escalation slot").clone()
    }

    /// Stops every service, the reverse of [`Services::start`], and the engine last.
    pub async fn stop(self) {
        // TCP connections finish what they have in flight (they need the engine and the audit
        // writer) before those stop.
        let tcp = self.tcp;
        let _ = tokio::task::spawn_blocking(move || tcp.stop()).await;
        // A watch round in progress finishes (it writes storage and the audit trail).
        self.watcher.stop().await;
        // A scheduled inspection in progress finishes (its incident writes need storage).
        if let Some(schedule) = self.schedule {
            schedule.stop().await;
        }
        // A backup or drill in progress finishes (it reads storage).
        let backups = self.backups;
        let _ = tokio::task::spawn_blocking(move || backups.stop()).await;
        self.tunables.abort();
        // Webhook workers and the events sweep write storage.
        let webhooks = self.webhooks;
        let sweeper = self.sweeper;
        let _ = tokio::task::spawn_blocking(move || {
            webhooks.stop();
            sweeper.stop();
        })
        .await;
        // The audit writer holds storage: stop it so that RocksDB can close before exit.
        self.audit.shutdown().await;
        self.engine.shutdown().await;
    }
}

/// Pushes the engine's live settings to its tunables: once now (the engine opened with the
/// configured values, before the values applied changes left were read), then whenever the
/// configuration changes.
fn follow_engine_settings(
    mut live: tokio::sync::watch::Receiver<Arc<Config>>,
    engine: Engine,
) -> tokio::task::JoinHandle<()> {
    let push = move |config: &Config| {
        let tunables = engine.tunables();
        tunables.set_batch_events_max(config.engine.batch_events_max);
        tunables.set_flush_interval_ms(config.storage.flush_interval_ms);
        tunables.set_max_restarts(config.supervisor.max_restarts);
        tunables.set_restart_window_s(config.supervisor.window_s);
        tunables.set_request_timeout_ms(config.engine.request_timeout_ms);
    };
    push(&live.borrow_and_update());
    tokio::spawn(async move {
        while live.changed().await.is_ok() {
            let config = live.borrow_and_update().clone();
            push(&config);
        }
    })
}

/// How both front doors price placements and show prices (`shop.currency`,
/// `orders.client_prices`).
fn pricing(config: &Config) -> ops::Pricing {
    ops::Pricing {
        currency: config.shop.currency.clone(),
        client_prices: config.orders.client_prices,
    }
}

/// Binds and runs the HTTP server over `services` until it stops (SIGTERM, SIGINT, or an
/// escalation).
async fn serve(
    config: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    services: &mut Services,
    notifier: Arc<crate::systemd::Notifier>,
) -> anyhow::Result<()> {
    let auth = web::Data::from(services.auth.clone());
    let engine = web::Data::new(services.engine.clone());
    let vault = web::Data::from(services.vault.clone());
    let audit = web::Data::from(services.audit.clone());
    let inspector = web::Data::from(services.inspector.clone());
    let backups = web::Data::from(services.backups.clone());
    let live = web::Data::from(services.live.clone());
    let changes = web::Data::from(services.changes.clone());
    let window = web::Data::from(services.window.clone());
    let webhooks = web::Data::new(services.webhooks.clone());
    let event_readers = web::Data::new(http::events::EventReaders::from_config(&config.events));
    let http_limits = http::Limits::from_config(&config.http, &config.orders, &config.stock);
    let http_pricing = pricing(config);
    let peers = Arc::new(PeerCounts::default());
    let max_connections_per_peer = config.http.max_connections_per_peer;

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
            .app_data(window.clone())
            .app_data(webhooks.clone())
            .app_data(event_readers.clone())
            .wrap(middleware::from_fn(http::middleware::record_refusals))
            .wrap(http::error::problem_fallback())
            // Outermost: times everything, refusals and fallbacks included.
            .wrap(middleware::from_fn(http::middleware::record_request))
            // Outermost of all: a connection over its peer's limit is served nothing.
            .wrap(middleware::from_fn(http::middleware::limit_peers))
            .configure(|cfg| http::configure(cfg, http_limits, http_pricing.clone()))
    })
    .on_connect(move |connection, data| {
        // Plain HTTP hands over the socket, HTTPS the TLS stream around it.
        type Tcp = actix_web::rt::net::TcpStream;
        let socket = connection.downcast_ref::<Tcp>().or_else(|| {
            connection
                .downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<Tcp>>()
                .map(|tls| tls.get_ref().0)
        });
        let peer = socket.and_then(|stream| stream.peer_addr().ok());
        if let Some(peer) = peer {
            data.insert(Admission::of(&peers, peer.ip(), max_connections_per_peer));
        }
    })
    .workers(config.http_workers())
    .max_connections(config.http.max_connections)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_S);
    let https = tls.is_some();
    let server = match tls {
        Some(tls) => server
            .tls_handshake_timeout(Duration::from_millis(config.http.tls_handshake_timeout_ms))
            .bind_rustls_0_23(&config.http.listen, Arc::unwrap_or_clone(tls)),
        None => server.bind(&config.http.listen),
    }
    .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;

    for addr in server.addrs() {
        tracing::info!(message = "listening", %addr, protocol = "http", tls = https);
    }
    let addrs = server.addrs();
    let server = server.run();
    services.serving(config, addrs, server.handle(), notifier);
    server.await.context("HTTP server failed")
}

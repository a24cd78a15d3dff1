//! Process configuration: the embedded default `config/orderd.toml`, then an optional TOML file,
//! then `ORDERD__SECTION__KEY` environment variables, merged by figment and validated here.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The shipped default configuration, embedded in the binary.
/// The file in `storage.data_dir` that holds the first admin key's secret (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Longest watch window of change management, in seconds (the request window keeps twice it).
pub const WATCH_WINDOW_S_MAX: u64 = 3600;

pub const DEFAULT_TOML: &str = include_str!("../../../config/orderd.toml");

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ORDERD__";

/// Largest accepted shard count (shard ids are `u16`; this bound keeps memory and threads sane).
pub const SHARDS_MAX: usize = 1024;

/// Shortest idempotency retention the API allows (it promises 24 hours).
pub const IDEMPOTENCY_RETENTION_S_MIN: u64 = 86_400;
/// Largest `tcp.batch_orders_max`: more orders than this never fit the reply of one frame of
/// the largest `tcp.max_frame_bytes` (16 MiB), whatever the setting.
pub const TCP_BATCH_ORDERS_MAX: usize = 262_143;
/// Bounds of `engine.request_timeout_ms`.
pub const REQUEST_TIMEOUT_MS_MIN: u64 = 100;
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    FileMissing(PathBuf),
    #[error("invalid configuration: {0}")]
    Figment(Box<figment::Error>),
    #[error("invalid configuration: {key}: {detail}")]
    Invalid { key: &'static str, detail: String },
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        ConfigError::Figment(Box::new(error))
    }
}

/// The whole configuration. Every key exists in `config/orderd.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub tcp: TcpConfig,
    pub storage: StorageConfig,
    pub engine: EngineSection,
    pub backup: BackupConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    pub security: SecurityConfig,
    pub supervisor: SupervisorSection,
    pub incidents: IncidentsConfig,
    pub inspection: InspectionConfig,
    pub changes: ChangesConfig,
    pub shop: ShopConfig,
    pub orders: OrdersConfig,
    pub stock: StockConfig,
    pub events: EventsConfig,
    pub webhooks: WebhooksConfig,
}

/// The `[events]` section: public events, their retention and their readers' bounds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Whether shards record public events (off only to measure their cost).
    pub enabled: bool,
    /// Events are kept this long, seconds.
    pub retention_s: u64,
    /// Most events kept (the oldest go first).
    pub max_count: u64,
    /// How often the retention sweep runs, milliseconds.
    pub sweep_interval_ms: u64,
    /// Most events one sweep looks at.
    pub sweep_scan_max: usize,
    /// `stock.low` below this many available units (0: never).
    pub stock_low_threshold: u64,
    /// Most events one page or one stream read looks at.
    pub scan_max: usize,
    /// Most open event streams.
    pub streams_max: usize,
    /// A quiet stream's keep-alive comment interval, milliseconds.
    pub stream_keepalive_ms: u64,
}

/// The `[webhooks]` section: signed deliveries, retries and where they may go.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whether URLs may name loopback, private or link-local addresses.
    pub allow_private: bool,
    /// Retries go on this long after a delivery's first attempt, seconds.
    pub retry_for_s: u64,
    /// The first retry's wait, milliseconds (doubling, with jitter).
    pub backoff_initial_ms: u64,
    /// The longest wait between attempts, milliseconds.
    pub backoff_max_ms: u64,
    /// One attempt's deadline, milliseconds.
    pub timeout_ms: u64,
    /// Most endpoints.
    pub endpoints_max: usize,
    /// Delivery records kept per endpoint.
    pub deliveries_max: usize,
}

/// The `[shop]` section: what the shop sells in.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShopConfig {
    /// The currency of every price, an ISO 4217 code: three uppercase ASCII letters.
    pub currency: String,
}

/// The `[orders]` section: how orders are priced, and order entry beyond the single call.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Whether keys other than `customer` keys send their own `unit_price`; when `false` the
    /// catalog prices every order (a `customer` key's always are).
    pub client_prices: bool,
    /// Most lines (orders) of one `POST /v1/orders/bulk`.
    pub bulk_max: usize,
    /// Most bytes of one `POST /v1/orders/bulk` body.
    pub bulk_max_bytes: usize,
}

/// The `[stock]` section: stock locations (warehouses).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StockConfig {
    /// Most stock locations, `default` included (1 to 1000, the engine's
    /// `LOCATIONS_MAX_LIMIT`): every allocation walks a SKU's locations.
    pub locations_max: usize,
}

/// Whether `code` has the shape of an ISO 4217 currency code: exactly three uppercase ASCII
/// letters (`USD`, `EUR`). Whether the code is assigned is not checked.
pub fn currency_is_valid(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// The `[changes]` section: how change management watches an applied change
/// (`docs/OPERATIONS.md`, "Change management").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    /// Watch window of a change that does not name its own, in seconds.
    pub watch_window_s: u64,
    /// Longest watch window a change may ask for, in seconds.
    pub watch_window_max_s: u64,
    /// How often a change in its watch window is judged, in milliseconds.
    pub watch_check_interval_ms: u64,
    /// Requests a watch must observe before it may judge a change.
    pub watch_min_requests: u64,
    /// Error rate (5xx and 429 answers) may rise by at most this many percentage points.
    pub watch_error_rate_increase_max_percent: f64,
    /// p99 latency may rise by at most this percent of the window before, …
    pub watch_p99_increase_max_percent: u64,
    /// … or by at most this many milliseconds, whichever is more.
    pub watch_p99_increase_min_ms: u64,
}

/// The `[inspection]` section: the health inspection's schedule and thresholds
/// (`GET /v1/ops/inspection`, `docs/OPERATIONS.md` "Health inspection").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InspectionConfig {
    /// Seconds between scheduled inspections.
    pub interval_s: u64,
    /// Seconds from start to the first scheduled inspection.
    pub first_run_delay_s: u64,
    /// Window over which the process's CPU use is measured.
    pub cpu_sample_ms: u64,
    /// Process CPU use, percent of all cores.
    pub cpu_warn_percent: u32,
    pub cpu_fail_percent: u32,
    /// System memory in use (MemTotal − MemAvailable), percent.
    pub memory_warn_percent: u32,
    pub memory_fail_percent: u32,
    /// Free space of the data (and backup) filesystem, percent: at or below warns / fails.
    pub disk_free_warn_percent: u32,
    pub disk_free_fail_percent: u32,
    /// RocksDB's estimate of bytes still to compact, summed over column families.
    pub pending_compaction_warn_bytes: u64,
    /// A shard mailbox this full, percent of `engine.mailbox_capacity`, warns.
    pub mailbox_warn_percent: u32,
    /// How long a connection to a listener may take before the listener counts as down.
    pub listener_connect_timeout_ms: u64,
    /// p99 of HTTP request latency since start, milliseconds: at or above warns / fails.
    pub latency_p99_warn_ms: u64,
    pub latency_p99_fail_ms: u64,
    /// Age of the newest backup.
    pub backup_age_warn_s: u64,
    pub backup_age_fail_s: u64,
}

/// The `[supervisor]` section: heartbeats, restart intensity and escalation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub max_restarts: u32,
    pub window_s: u64,
    /// Exit non-zero after an escalation (for systemd's `Restart=on-failure`).
    pub exit_on_escalation: bool,
}

/// The `[incidents]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    /// Incidents kept in storage; the oldest are deleted past it.
    pub retention_max: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; port 0 picks a free port.
    pub listen: String,
    pub body_limit_bytes: usize,
    /// 0 = one per core.
    pub workers: usize,
    /// Per worker, as actix-web counts it.
    pub max_connections: usize,
    /// Connections one peer address may hold at once; requests on more are refused (429).
    pub max_connections_per_peer: usize,
    /// Most bytes of one page of a list (its JSON body); a longer page is shortened and its
    /// `next` continues where it stops.
    pub max_page_bytes: usize,
    /// 0 = off.
    pub rate_limit_per_key_per_s: u32,
    /// PEM certificate chain; with `tls_key_file`, the listener serves TLS only ("" = off).
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file` ("" = off).
    pub tls_key_file: PathBuf,
    /// With TLS, the longest a handshake may take before the connection is closed.
    pub tls_handshake_timeout_ms: u64,
}

impl HttpConfig {
    /// The certificate and key files when HTTPS is on (validated: both or neither).
    pub fn tls(&self) -> Option<TlsFiles<'_>> {
        TlsFiles::of("http", &self.tls_cert_file, &self.tls_key_file)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    pub listen: String,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    /// Reply bytes one connection may hold (written or reserved by requests in flight) before
    /// it stops reading requests.
    pub max_reply_buffer_bytes: usize,
    pub idle_timeout_ms: u64,
    /// A connection must authenticate (AUTH) within this many milliseconds or it is closed.
    pub auth_timeout_ms: u64,
    /// Connections one peer address may hold at once (`max_connections` bounds it too).
    pub max_connections_per_peer: usize,
    /// 0 = one per core.
    pub workers: usize,
    /// Most orders in one `PLACE_ORDERS` frame (the frame is bounded by `max_frame_bytes` too).
    pub batch_orders_max: usize,
    /// PEM certificate chain; with `tls_key_file`, the listener serves TLS only ("" = off).
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file` ("" = off).
    pub tls_key_file: PathBuf,
}

impl TcpConfig {
    /// The certificate and key files when TLS is on (validated: both or neither).
    pub fn tls(&self) -> Option<TlsFiles<'_>> {
        TlsFiles::of("tcp", &self.tls_cert_file, &self.tls_key_file)
    }
}

/// A listener's TLS files, with the names of the keys that set them (for error messages).
#[derive(Clone, Copy, Debug)]
pub struct TlsFiles<'a> {
    /// `http.tls_cert_file` or `tcp.tls_cert_file`.
    pub cert_key: &'static str,
    pub cert_file: &'a Path,
    /// `http.tls_key_file` or `tcp.tls_key_file`.
    pub key_key: &'static str,
    pub key_file: &'a Path,
}

impl<'a> TlsFiles<'a> {
    fn of(section: &'static str, cert_file: &'a Path, key_file: &'a Path) -> Option<TlsFiles<'a>> {
        if cert_file.as_os_str().is_empty() || key_file.as_os_str().is_empty() {
            return None;
        }
        let (cert_key, key_key) = match section {
            "http" => ("http.tls_cert_file", "http.tls_key_file"),
            _ => ("tcp.tls_cert_file", "tcp.tls_key_file"),
        };
        Some(TlsFiles {
            cert_key,
            cert_file,
            key_key,
            key_file,
        })
    }
}

/// Both TLS files of a listener set, or neither.
fn check_tls_pair(
    cert_key: &'static str,
    cert_file: &Path,
    key_key: &'static str,
    key_file: &Path,
) -> Result<(), ConfigError> {
    match (
        cert_file.as_os_str().is_empty(),
        key_file.as_os_str().is_empty(),
    ) {
        (false, true) => Err(ConfigError::Invalid {
            key: key_key,
            detail: format!("must be set too when {cert_key} is (or clear both for plaintext)"),
        }),
        (true, false) => Err(ConfigError::Invalid {
            key: cert_key,
            detail: format!("must be set too when {key_key} is (or clear both for plaintext)"),
        }),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    Sync,
    Async,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub durability: DurabilitySetting,
    pub flush_interval_ms: u64,
    /// Writes are refused (507) while the data directory's file system has less free space;
    /// 0 turns the guard off.
    pub min_free_bytes: u64,
    /// RocksDB's write-ahead-log bound (what a crash's restart replays at most); 0: RocksDB's.
    pub wal_max_bytes: u64,
}

/// The `[engine]` section (named so as not to clash with `orderd_engine::EngineConfig`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// 0 = one per core.
    pub shards: usize,
    pub mailbox_capacity: usize,
    pub batch_events_max: usize,
    pub snapshot_interval_events: u64,
    pub idempotency_retention_s: u64,
    pub pending_retry_ms: u64,
    /// The deadline of one request inside the engine (live).
    pub request_timeout_ms: u64,
    /// Most placements waiting in one shard's inbox, where concurrent requests are coalesced
    /// into one message (past it: 503 `unavailable` at once).
    pub inbox_orders_max: usize,
    /// Orders delivered or cancelled longer ago than this leave memory for the cold tier
    /// (0: every order stays in memory).
    pub hot_retention_s: u64,
    /// How often each shard moves ended orders to the cold tier.
    pub cold_sweep_interval_ms: u64,
    /// Most orders one sweep moves (one log batch).
    pub cold_sweep_orders_max: usize,
    /// Idempotency keys older than this leave memory for the `idem` column family, where a
    /// retry still finds them until `idempotency_retention_s` ends (0: kept in memory).
    pub idempotency_hot_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    pub dir: PathBuf,
    /// A path or an `s3://` URL.
    pub offsite: String,
    /// Seconds between scheduled backups; 0 turns the schedule off.
    pub interval_s: u64,
    /// Seconds between scheduled restore drills of the newest backup; 0 turns them off.
    pub verify_interval_s: u64,
    /// Backups kept, locally and off-site; older ones are deleted after each new backup.
    pub retention_count: usize,
    /// Retention never deletes the newest backup at least this old, nor any newer one, even
    /// past `retention_count` (0: off), so quick backups cannot rotate every day-old one away.
    pub keep_min_age_s: u64,
    /// A requested backup (`POST /v1/ops/backups`) within this many seconds of the newest one is
    /// refused with 429 (0: off); scheduled backups are not limited.
    pub min_interval_s: u64,
    /// Attempts of an off-site upload before its backup is marked `failed`.
    pub offsite_attempts: u32,
    /// Wait before the second attempt, in milliseconds; doubled for each further attempt.
    pub offsite_retry_base_ms: u64,
    /// Backup requests waiting for the backup worker; more are refused with 503.
    pub queue_capacity: usize,
}

/// The `[security]` section: where the master key of personal data lives.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Key file (64 hex digits); relative paths are relative to the working directory. Unused
    /// when `ORDERD_MASTER_KEY` is set. Must not lie inside `storage.data_dir`.
    pub master_key_file: PathBuf,
}

/// The `[audit]` section: the audit trail's writer queue and read bounds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Entries waiting for the writer; also the most entries of one group commit.
    pub queue_capacity: usize,
    /// Most entries one `GET /v1/audit` page reads from storage, per chain.
    pub scan_entries_max: usize,
    /// Refusals (401, 403) of one peer address within this many seconds write one entry and
    /// one WARN line for the first, and one summary entry with the count of the rest (0: off,
    /// every refusal written and logged).
    pub refusal_window_s: u64,
    /// Peer addresses with an open refusal window at once; refusals of further peers share
    /// one window.
    pub refusal_peers_max: usize,
    /// Entries older than this leave the live store once a backup holds them (0: never).
    pub retention_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A level or `tracing` filter directives; `RUST_LOG` replaces it when set.
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Loads the embedded default, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, Env::prefixed(ENV_PREFIX))
    }

    /// Like [`Config::load`] with an explicit environment provider (tests use their own prefix).
    pub fn load_with_env(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::FileMissing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Config = figment.merge(env.split("__")).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, non-empty strings, parseable filters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, detail: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        }
        check_address("http.listen", &self.http.listen)?;
        check_address("tcp.listen", &self.tcp.listen)?;
        if self.http.body_limit_bytes == 0 {
            return invalid("http.body_limit_bytes", "must be at least 1");
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections", "must be at least 1");
        }
        if self.http.max_connections_per_peer == 0 {
            return invalid("http.max_connections_per_peer", "must be at least 1");
        }
        // A page must hold at least one order of the most lines.
        if self.http.max_page_bytes < 64 * 1024 {
            return invalid("http.max_page_bytes", "must be at least 65536 bytes");
        }
        check_tls_pair(
            "http.tls_cert_file",
            &self.http.tls_cert_file,
            "http.tls_key_file",
            &self.http.tls_key_file,
        )?;
        if !(1..=600_000).contains(&self.http.tls_handshake_timeout_ms) {
            return invalid("http.tls_handshake_timeout_ms", "must be 1 to 600000");
        }
        check_tls_pair(
            "tcp.tls_cert_file",
            &self.tcp.tls_cert_file,
            "tcp.tls_key_file",
            &self.tcp.tls_key_file,
        )?;
        // The frame must hold the header and a reasonable body; the length field is 32 bits.
        if !(1024..=16 * 1024 * 1024).contains(&self.tcp.max_frame_bytes) {
            return invalid(
                "tcp.max_frame_bytes",
                "must be between 1024 and 16777216 bytes",
            );
        }
        if self.tcp.max_connections == 0 {
            return invalid("tcp.max_connections", "must be at least 1");
        }
        if !(1..=65_536).contains(&self.tcp.max_in_flight) {
            return invalid("tcp.max_in_flight", "must be between 1 and 65536");
        }
        if self.tcp.max_reply_buffer_bytes < self.tcp.max_frame_bytes {
            return invalid(
                "tcp.max_reply_buffer_bytes",
                "must be at least tcp.max_frame_bytes (one reply of the largest size)",
            );
        }
        if self.tcp.idle_timeout_ms == 0 {
            return invalid("tcp.idle_timeout_ms", "must be at least 1");
        }
        if self.tcp.auth_timeout_ms == 0 {
            return invalid("tcp.auth_timeout_ms", "must be at least 1");
        }
        if self.tcp.max_connections_per_peer == 0 {
            return invalid("tcp.max_connections_per_peer", "must be at least 1");
        }
        if !(1..=TCP_BATCH_ORDERS_MAX).contains(&self.tcp.batch_orders_max) {
            return invalid(
                "tcp.batch_orders_max",
                format!("must be between 1 and {TCP_BATCH_ORDERS_MAX}"),
            );
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return invalid("storage.data_dir", "must not be empty");
        }
        if self.storage.wal_max_bytes != 0 && self.storage.wal_max_bytes < 64 << 20 {
            return invalid(
                "storage.wal_max_bytes",
                "must be 0 (RocksDB's own bound) or at least 67108864 (64 MiB)",
            );
        }
        if self.storage.flush_interval_ms == 0 {
            return invalid("storage.flush_interval_ms", "must be at least 1");
        }
        if self.engine.shards > SHARDS_MAX {
            return invalid(
                "engine.shards",
                format!("must be at most {SHARDS_MAX} (0 = one per core)"),
            );
        }
        if self.engine.mailbox_capacity == 0 {
            return invalid("engine.mailbox_capacity", "must be at least 1");
        }
        if self.engine.batch_events_max == 0 {
            return invalid("engine.batch_events_max", "must be at least 1");
        }
        if self.engine.snapshot_interval_events == 0 {
            return invalid("engine.snapshot_interval_events", "must be at least 1");
        }
        if self.engine.idempotency_retention_s < IDEMPOTENCY_RETENTION_S_MIN {
            return invalid(
                "engine.idempotency_retention_s",
                format!(
                    "must be at least {IDEMPOTENCY_RETENTION_S_MIN} (the API keeps keys 24 hours)"
                ),
            );
        }
        if self.engine.idempotency_hot_s > self.engine.idempotency_retention_s {
            return invalid(
                "engine.idempotency_hot_s",
                "must be at most engine.idempotency_retention_s",
            );
        }
        if self.engine.cold_sweep_interval_ms < 10 {
            return invalid("engine.cold_sweep_interval_ms", "must be at least 10");
        }
        if !(1..=100_000).contains(&self.engine.cold_sweep_orders_max) {
            return invalid("engine.cold_sweep_orders_max", "must be 1 to 100000");
        }
        if self.engine.pending_retry_ms == 0 {
            return invalid("engine.pending_retry_ms", "must be at least 1");
        }
        if !(REQUEST_TIMEOUT_MS_MIN..=REQUEST_TIMEOUT_MS_MAX)
            .contains(&self.engine.request_timeout_ms)
        {
            return invalid(
                "engine.request_timeout_ms",
                format!("must be {REQUEST_TIMEOUT_MS_MIN} to {REQUEST_TIMEOUT_MS_MAX}"),
            );
        }
        if self.engine.request_timeout_ms <= self.engine.pending_retry_ms {
            return invalid(
                "engine.request_timeout_ms",
                "must be longer than engine.pending_retry_ms (a placement must get at least one retry)",
            );
        }
        if self.events.retention_s == 0 {
            return invalid("events.retention_s", "must be at least 1");
        }
        if self.events.max_count == 0 {
            return invalid("events.max_count", "must be at least 1");
        }
        if !(100..=86_400_000).contains(&self.events.sweep_interval_ms) {
            return invalid("events.sweep_interval_ms", "must be 100 to 86400000");
        }
        if !(1_000..=10_000_000).contains(&self.events.sweep_scan_max) {
            return invalid("events.sweep_scan_max", "must be 1000 to 10000000");
        }
        if !(1_000..=1_000_000).contains(&self.events.scan_max) {
            return invalid("events.scan_max", "must be 1000 to 1000000");
        }
        if !(1..=100_000).contains(&self.events.streams_max) {
            return invalid("events.streams_max", "must be 1 to 100000");
        }
        if !(100..=600_000).contains(&self.events.stream_keepalive_ms) {
            return invalid("events.stream_keepalive_ms", "must be 100 to 600000");
        }
        if self.webhooks.retry_for_s == 0 {
            return invalid("webhooks.retry_for_s", "must be at least 1");
        }
        if self.webhooks.backoff_initial_ms == 0
            || self.webhooks.backoff_initial_ms > self.webhooks.backoff_max_ms
        {
            return invalid(
                "webhooks.backoff_initial_ms",
                "must be at least 1 and at most webhooks.backoff_max_ms",
            );
        }
        if !(100..=600_000).contains(&self.webhooks.timeout_ms) {
            return invalid("webhooks.timeout_ms", "must be 100 to 600000");
        }
        if !(1..=1_000).contains(&self.webhooks.endpoints_max) {
            return invalid("webhooks.endpoints_max", "must be 1 to 1000");
        }
        if !(1..=1_000_000).contains(&self.webhooks.deliveries_max) {
            return invalid("webhooks.deliveries_max", "must be 1 to 1000000");
        }
        if !(1..=1000).contains(&self.stock.locations_max) {
            return invalid("stock.locations_max", "must be 1 to 1000");
        }
        if !(1..=100_000).contains(&self.orders.bulk_max) {
            return invalid("orders.bulk_max", "must be 1 to 100000");
        }
        if !(1024..=1 << 30).contains(&self.orders.bulk_max_bytes) {
            return invalid("orders.bulk_max_bytes", "must be 1 KiB to 1 GiB");
        }
        if !(1..=10_000_000).contains(&self.engine.inbox_orders_max) {
            return invalid("engine.inbox_orders_max", "must be 1 to 10000000");
        }
        if self.backup.dir.as_os_str().is_empty() {
            return invalid("backup.dir", "must not be empty");
        }
        if self.backup.offsite.is_empty() {
            return invalid("backup.offsite", "must not be empty");
        }
        if !(1..=10_000).contains(&self.backup.retention_count) {
            return invalid("backup.retention_count", "must be 1..=10000");
        }
        if self.backup.keep_min_age_s > 366 * 86_400 {
            return invalid(
                "backup.keep_min_age_s",
                "must be 0 (off) to 31622400 (a year)",
            );
        }
        if self.backup.min_interval_s > 86_400 {
            return invalid("backup.min_interval_s", "must be 0 (off) to 86400");
        }
        if !(1..=20).contains(&self.backup.offsite_attempts) {
            return invalid("backup.offsite_attempts", "must be 1..=20");
        }
        if !(1..=1024).contains(&self.backup.queue_capacity) {
            return invalid("backup.queue_capacity", "must be 1..=1024");
        }
        if self.security.master_key_file.as_os_str().is_empty() {
            return invalid("security.master_key_file", "must not be empty");
        }
        if self.audit.refusal_window_s > 86_400 {
            return invalid("audit.refusal_window_s", "must be 0 (off) to 86400");
        }
        if !(1..=1_000_000).contains(&self.audit.refusal_peers_max) {
            return invalid("audit.refusal_peers_max", "must be 1 to 1000000");
        }
        if self.audit.queue_capacity == 0 {
            return invalid("audit.queue_capacity", "must be at least 1");
        }
        if self.audit.scan_entries_max == 0 {
            return invalid("audit.scan_entries_max", "must be at least 1");
        }
        if self.supervisor.heartbeat_interval_ms < 10 {
            return invalid("supervisor.heartbeat_interval_ms", "must be at least 10");
        }
        if self.supervisor.heartbeat_timeout_ms < self.supervisor.heartbeat_interval_ms {
            return invalid(
                "supervisor.heartbeat_timeout_ms",
                "must be at least supervisor.heartbeat_interval_ms",
            );
        }
        if self.supervisor.window_s == 0 {
            return invalid("supervisor.window_s", "must be at least 1");
        }
        if self.incidents.retention_max == 0 {
            return invalid("incidents.retention_max", "must be at least 1");
        }
        self.validate_inspection()?;
        self.validate_changes()?;
        if !currency_is_valid(&self.shop.currency) {
            return invalid(
                "shop.currency",
                format!(
                    "{:?} is not an ISO 4217 code (three uppercase letters, e.g. USD)",
                    self.shop.currency
                ),
            );
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", format!("{:?}: {error}", self.log.level));
        }
        Ok(())
    }

    /// The `[changes]` keys.
    fn validate_changes(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, detail: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        }
        let c = &self.changes;
        if !(1..=WATCH_WINDOW_S_MAX).contains(&c.watch_window_max_s) {
            return invalid(
                "changes.watch_window_max_s",
                format!("must be 1..={}", WATCH_WINDOW_S_MAX),
            );
        }
        if !(1..=c.watch_window_max_s).contains(&c.watch_window_s) {
            return invalid(
                "changes.watch_window_s",
                "must be 1..=changes.watch_window_max_s",
            );
        }
        if !(10..=60_000).contains(&c.watch_check_interval_ms) {
            return invalid("changes.watch_check_interval_ms", "must be 10..=60000");
        }
        if !(0.0..=100.0).contains(&c.watch_error_rate_increase_max_percent) {
            return invalid(
                "changes.watch_error_rate_increase_max_percent",
                "must be a percent, 0..=100",
            );
        }
        Ok(())
    }

    /// The `[inspection]` keys: percents up to 100, warn before fail, a schedule that runs.
    fn validate_inspection(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, detail: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        }
        let i = &self.inspection;
        if i.interval_s == 0 {
            return invalid("inspection.interval_s", "must be at least 1");
        }
        if !(10..=10_000).contains(&i.cpu_sample_ms) {
            return invalid("inspection.cpu_sample_ms", "must be 10..=10000");
        }
        if i.listener_connect_timeout_ms == 0 {
            return invalid(
                "inspection.listener_connect_timeout_ms",
                "must be at least 1",
            );
        }
        for (key, percent) in [
            ("inspection.cpu_warn_percent", i.cpu_warn_percent),
            ("inspection.cpu_fail_percent", i.cpu_fail_percent),
            ("inspection.memory_warn_percent", i.memory_warn_percent),
            ("inspection.memory_fail_percent", i.memory_fail_percent),
            (
                "inspection.disk_free_warn_percent",
                i.disk_free_warn_percent,
            ),
            (
                "inspection.disk_free_fail_percent",
                i.disk_free_fail_percent,
            ),
            ("inspection.mailbox_warn_percent", i.mailbox_warn_percent),
        ] {
            if percent > 100 {
                return invalid(key, "must be a percent, 0..=100");
            }
        }
        if i.cpu_warn_percent > i.cpu_fail_percent {
            return invalid(
                "inspection.cpu_warn_percent",
                "must be at most inspection.cpu_fail_percent",
            );
        }
        if i.memory_warn_percent > i.memory_fail_percent {
            return invalid(
                "inspection.memory_warn_percent",
                "must be at most inspection.memory_fail_percent",
            );
        }
        // Free space: less is worse, so the warning comes at the higher figure.
        if i.disk_free_warn_percent < i.disk_free_fail_percent {
            return invalid(
                "inspection.disk_free_warn_percent",
                "must be at least inspection.disk_free_fail_percent",
            );
        }
        if i.latency_p99_warn_ms > i.latency_p99_fail_ms {
            return invalid(
                "inspection.latency_p99_warn_ms",
                "must be at most inspection.latency_p99_fail_ms",
            );
        }
        if i.backup_age_warn_s > i.backup_age_fail_s {
            return invalid(
                "inspection.backup_age_warn_s",
                "must be at most inspection.backup_age_fail_s",
            );
        }
        Ok(())
    }

    /// HTTP worker threads, with 0 resolved to the number of cores.
    pub fn http_workers(&self) -> usize {
        resolve_cores(self.http.workers)
    }

    /// TCP threads, with 0 resolved to the number of cores.
    pub fn tcp_workers(&self) -> usize {
        resolve_cores(self.tcp.workers)
    }

    /// Shard count, with 0 resolved to the number of cores.
    pub fn shard_count(&self) -> usize {
        resolve_cores(self.engine.shards)
    }
}

/// `host:port` with a numeric port; host names are resolved when binding, not here.
fn check_address(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let valid = match value.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if valid {
        return Ok(());
    }
    // An address such as "[::1]:80" is covered above; anything else gets one more chance
    // through the standard parser before it is rejected.
    if value.to_socket_addrs().is_ok() {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        detail: format!("{value:?} is not a host:port address"),
    })
}

fn resolve_cores(value: usize) -> usize {
    if value > 0 {
        return value;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An environment provider that no test variable can reach.
    fn no_env() -> Env {
        Env::prefixed("ORDERD_TEST_UNSET_PREFIX__")
    }

    #[test]
    fn embedded_default_loads_with_documented_values() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.http.body_limit_bytes, 65536);
        assert_eq!(c.http.workers, 0);
        assert_eq!(c.http.max_connections, 25000);
        assert_eq!(c.http.rate_limit_per_key_per_s, 0);
        assert_eq!(c.tcp.listen, "127.0.0.1:7070");
        assert_eq!(c.tcp.batch_orders_max, 8189);
        assert_eq!(c.tcp.auth_timeout_ms, 5000);
        assert_eq!(c.tcp.max_connections_per_peer, 512);
        assert_eq!(c.tcp.max_reply_buffer_bytes, 4 * 1024 * 1024);
        assert_eq!(c.http.max_connections_per_peer, 512);
        assert_eq!(c.http.max_page_bytes, 1024 * 1024);
        assert!(c.http.tls().is_none() && c.tcp.tls().is_none());
        assert_eq!(c.http.tls_handshake_timeout_ms, 3000);
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(c.storage.durability, DurabilitySetting::Sync);
        assert_eq!(c.storage.flush_interval_ms, 5);
        assert_eq!(c.engine.shards, 0);
        assert!(c.shard_count() >= 1);
        assert_eq!(c.engine.mailbox_capacity, 100_000);
        assert_eq!(c.engine.batch_events_max, 4096);
        assert_eq!(c.engine.snapshot_interval_events, 200_000);
        assert_eq!(c.engine.idempotency_retention_s, 86_400);
        assert_eq!(c.engine.hot_retention_s, 604_800);
        assert_eq!(c.engine.idempotency_hot_s, 3_600);
        assert_eq!(c.engine.pending_retry_ms, 500);
        assert_eq!(c.backup.dir, PathBuf::from("./backups"));
        assert_eq!(c.backup.offsite, "./offsite");
        assert_eq!(c.audit.queue_capacity, 4096);
        assert_eq!(c.audit.refusal_window_s, 60);
        assert_eq!(c.audit.refusal_peers_max, 4096);
        assert_eq!(c.audit.retention_s, 31_536_000);
        assert_eq!(c.audit.scan_entries_max, 100_000);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(
            c.security.master_key_file,
            PathBuf::from("./orderd-master.key")
        );
        let i = &c.inspection;
        assert_eq!(i.interval_s, 86_400);
        assert_eq!(i.first_run_delay_s, 60);
        assert_eq!(i.cpu_sample_ms, 200);
        assert_eq!((i.cpu_warn_percent, i.cpu_fail_percent), (80, 95));
        assert_eq!((i.memory_warn_percent, i.memory_fail_percent), (85, 95));
        assert_eq!(
            (i.disk_free_warn_percent, i.disk_free_fail_percent),
            (15, 5)
        );
        assert_eq!(i.pending_compaction_warn_bytes, 17_179_869_184);
        assert_eq!(i.mailbox_warn_percent, 80);
        assert_eq!(i.listener_connect_timeout_ms, 1000);
        assert_eq!(
            (i.backup_age_warn_s, i.backup_age_fail_s),
            (93_600, 180_000)
        );
        assert_eq!(c.shop.currency, "USD");
        assert!(c.orders.client_prices);
    }

    #[test]
    fn the_currency_must_be_an_iso_4217_code() {
        for bad in ["usd", "US", "USDT", "", "U5D", "ÜSD"] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            writeln!(file, "[shop]\ncurrency = \"{bad}\"").unwrap();
            let text = Config::load_with_env(Some(file.path()), no_env())
                .unwrap_err()
                .to_string();
            assert!(text.contains("shop.currency"), "{bad}: {text}");
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[shop]\ncurrency = \"EUR\"\n[orders]\nclient_prices = false"
        )
        .unwrap();
        let c = Config::load_with_env(Some(file.path()), no_env()).unwrap();
        assert_eq!(c.shop.currency, "EUR");
        assert!(!c.orders.client_prices);
    }

    #[test]
    fn inspection_thresholds_must_be_percents_in_order() {
        for (toml, key) in [
            ("cpu_fail_percent = 101", "inspection.cpu_fail_percent"),
            (
                "memory_warn_percent = 99\nmemory_fail_percent = 90",
                "inspection.memory_warn_percent",
            ),
            (
                "disk_free_warn_percent = 5\ndisk_free_fail_percent = 10",
                "inspection.disk_free_warn_percent",
            ),
            ("interval_s = 0", "inspection.interval_s"),
            (
                "backup_age_warn_s = 10\nbackup_age_fail_s = 5",
                "inspection.backup_age_warn_s",
            ),
        ] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            writeln!(file, "[inspection]\n{toml}").unwrap();
            let text = Config::load_with_env(Some(file.path()), no_env())
                .unwrap_err()
                .to_string();
            assert!(text.contains(key), "{toml}: {text}");
        }
        // Forcing a check to fail, as the e2e tests do, is valid.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[inspection]\ndisk_free_warn_percent = 100\ndisk_free_fail_percent = 100"
        )
        .unwrap();
        Config::load_with_env(Some(file.path()), no_env()).unwrap();
    }

    #[test]
    fn file_then_environment_override_the_default() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[http]\nlisten = \"127.0.0.1:9999\"\n[storage]\ndurability = \"async\"\n[engine]\nshards = 3"
        )
        .unwrap();
        std::env::set_var("ORDERD_TEST_OVERRIDE__HTTP__LISTEN", "127.0.0.1:0");
        std::env::set_var("ORDERD_TEST_OVERRIDE__STORAGE__DATA_DIR", "./o1");
        let c = Config::load_with_env(Some(file.path()), Env::prefixed("ORDERD_TEST_OVERRIDE__"))
            .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:0");
        assert_eq!(c.storage.data_dir, PathBuf::from("./o1"));
        assert_eq!(c.storage.durability, DurabilitySetting::Async);
        assert_eq!(c.engine.shards, 3);
        assert_eq!(c.shard_count(), 3);
        // Untouched keys keep their defaults.
        assert_eq!(c.http.body_limit_bytes, 65536);
    }

    #[test]
    fn bad_values_are_rejected_with_the_key_named() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[storage]\ndurability = \"sometimes\"").unwrap();
        let err = Config::load_with_env(Some(file.path()), no_env()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("durability"), "{text}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[http]\nlistne = \"x\"").unwrap();
        let text = Config::load_with_env(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(text.contains("listne"), "{text}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[engine]\nidempotency_retention_s = 60").unwrap();
        let text = Config::load_with_env(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(text.contains("engine.idempotency_retention_s"), "{text}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[http]\nlisten = \"nonsense\"").unwrap();
        let text = Config::load_with_env(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(text.contains("http.listen"), "{text}");
    }

    #[test]
    fn tls_needs_both_files_of_a_listener() {
        for (toml, key) in [
            ("[http]\ntls_cert_file = \"c.pem\"", "http.tls_key_file"),
            ("[http]\ntls_key_file = \"k.pem\"", "http.tls_cert_file"),
            ("[tcp]\ntls_cert_file = \"c.pem\"", "tcp.tls_key_file"),
            ("[tcp]\ntls_key_file = \"k.pem\"", "tcp.tls_cert_file"),
            (
                "[http]\ntls_handshake_timeout_ms = 0",
                "http.tls_handshake_timeout_ms",
            ),
        ] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            writeln!(file, "{toml}").unwrap();
            let text = Config::load_with_env(Some(file.path()), no_env())
                .unwrap_err()
                .to_string();
            assert!(text.contains(key), "{toml}: {text}");
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[tcp]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\""
        )
        .unwrap();
        let c = Config::load_with_env(Some(file.path()), no_env()).unwrap();
        let tls = c.tcp.tls().expect("TLS on");
        assert_eq!(
            (tls.cert_key, tls.key_key),
            ("tcp.tls_cert_file", "tcp.tls_key_file")
        );
        assert_eq!(tls.cert_file, Path::new("c.pem"));
        assert!(c.http.tls().is_none());
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/orderd.toml")), no_env())
            .unwrap_err();
        assert!(matches!(err, ConfigError::FileMissing(_)));
    }
}

//! Prometheus metrics and the in-process latency recorder: this module owns every `orderd_`
//! metric name (and the standard `process_*` ones), its help text and buckets, the one recorder per process, what the request middleware records,
//! the values read from the engine and `/proc` at scrape time, and the HDR histogram of request
//! latencies that the health inspection reads.
//!
//! Conventions (DESIGN.md "Metrics"): prefix `orderd_` (process figures use Prometheus's
//! standard `process_*` names, as every client library exports them), base units (seconds, bytes), counters end
//! in `_total`, latencies are real histograms with the buckets set here (never summaries), and no
//! label carries an id (`route` is the route template, `shard` is one of `engine.shards`).
//!
//! Who records what:
//! - the gateway's request middleware, through [`record_http_request`] (and the TCP front door
//!   through [`record_tcp_request`]): `orderd_request_duration_seconds{route,outcome}` and the
//!   HDR recorder ([`latency_summary`]), for every request;
//! - `POST /v1/orders`: `orderd_orders_total{outcome}` through [`record_order`];
//! - the engine's log writer (`orderd_engine::log`), per group commit, through the `metrics`
//!   facade: `orderd_log_fsync_duration_seconds` and `orderd_log_batch_events`;
//! - [`render`], at scrape time: shard gauges, log and audit counters, the data directory's
//!   free space, process CPU, memory, descriptors and start time, backup age and failures, and
//!   the incident counts last given to [`set_incident_counts`];
//! - the server at start, through [`set_build_info`]: `orderd_build_info{version,revision}`.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use orderd_engine::log::{BATCH_EVENTS_METRIC, FSYNC_DURATION_SECONDS_METRIC};
use orderd_engine::{Engine, ShardState};

use orderd_service::audit::AuditLog;

use crate::backups::Backups;
use orderd_service::ApiError;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub const REQUEST_DURATION_SECONDS: &str = "orderd_request_duration_seconds";
pub const ORDERS_TOTAL: &str = "orderd_orders_total";
pub const LOG_FSYNC_DURATION_SECONDS: &str = FSYNC_DURATION_SECONDS_METRIC;
pub const LOG_BATCH_EVENTS: &str = BATCH_EVENTS_METRIC;
pub const LOG_SYNCS_TOTAL: &str = "orderd_log_syncs_total";
pub const LOG_BYTES_TOTAL: &str = "orderd_log_bytes_total";
pub const LOG_EVENTS_TOTAL: &str = "orderd_log_events_total";
pub const LOG_WRITE_FAILURES_TOTAL: &str = "orderd_log_write_failures_total";
pub const STORAGE_WRITES_REFUSED: &str = "orderd_storage_writes_refused";
pub const SHARD_MAILBOX_DEPTH: &str = "orderd_shard_mailbox_depth";
pub const SHARD_ORDERS: &str = "orderd_shard_orders";
/// Placements waiting in a shard's inbox (coalesced into its next message).
pub const SHARD_INBOX_ORDERS: &str = "orderd_shard_inbox_orders";
pub const SHARD_RESTARTS_TOTAL: &str = "orderd_shard_restarts_total";
pub const SHARD_UP: &str = "orderd_shard_up";
/// Requests a shard's mailbox holds before new ones get 503 (`engine.mailbox_capacity`).
pub const SHARD_MAILBOX_CAPACITY: &str = "orderd_shard_mailbox_capacity";
pub const STORAGE_FREE_BYTES: &str = "orderd_storage_free_bytes";
pub const STORAGE_SIZE_BYTES: &str = "orderd_storage_size_bytes";
pub const STORAGE_MIN_FREE_BYTES: &str = "orderd_storage_min_free_bytes";
pub const BUILD_INFO: &str = "orderd_build_info";
// The standard process metrics (the names every Prometheus client library exports).
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
pub const BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "orderd_backup_last_success_timestamp_seconds";
/// 1 while the last attempt of a kind of backup work failed (`kind`: `backup_failed`,
/// `offsite_failed`, `verify_failed`).
pub const BACKUP_FAILING: &str = "orderd_backup_failing";
pub const AUDIT_REFUSALS_DROPPED_TOTAL: &str = "orderd_audit_refusals_dropped_total";
pub const INCIDENTS_TOTAL: &str = "orderd_incidents_total";
pub const TCP_CONNECTIONS: &str = "orderd_tcp_connections";
pub const TCP_CLOSED_TOTAL: &str = "orderd_tcp_connections_closed_total";
pub const REFUSALS_TOTAL: &str = "orderd_refusals_total";

/// Request latency buckets, in seconds: 250 µs (a read with nothing in flight) to 10 s (a
/// snapshot stall or an overloaded shard).
pub const REQUEST_DURATION_BUCKETS_S: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// fsync buckets, in seconds: DESIGN.md measured p50 0.12 ms and p99 2.8 ms for 4 KiB here.
pub const LOG_FSYNC_DURATION_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Events per group commit: powers of 4 from 1 to 65,536 (a group holds up to
/// `GROUP_MESSAGES_MAX` batches of up to `engine.batch_events_max` events).
pub const LOG_BATCH_EVENTS_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes: without it
/// the recorder keeps every sample until the next scrape.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use (several servers may run in one
/// test process; they share it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = build_recorder();
        describe();
        // Every outcome from the start, so that rate() and ratios see 0 rather than no series.
        for outcome in ORDER_OUTCOMES {
            metrics::counter!(ORDERS_TOTAL, "outcome" => *outcome).absolute(0);
        }
        for reason in REFUSAL_REASONS {
            metrics::counter!(REFUSALS_TOTAL, "reason" => *reason).absolute(0);
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("orderd-metrics".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}

/// Installs the recorder: explicit buckets for every histogram, and the request buckets as the
/// default so that no histogram is ever rendered as a summary.
fn build_recorder() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets(REQUEST_DURATION_BUCKETS_S)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(REQUEST_DURATION_SECONDS.into()),
                REQUEST_DURATION_BUCKETS_S,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(LOG_FSYNC_DURATION_SECONDS.into()),
                LOG_FSYNC_DURATION_BUCKETS_S,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(LOG_BATCH_EVENTS.into()),
                LOG_BATCH_EVENTS_BUCKETS,
            )
        })
        .expect("the bucket lists are not empty");
    builder
        .install_recorder()
        .expect("no other metrics recorder is installed in this process")
}

/// Help texts (promtool's lint wants one for every metric).
fn describe() {
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request received to response head, by route template and outcome (ok = 2xx/3xx, client_error = 4xx, server_error = 5xx)."
    );
    describe_counter!(
        ORDERS_TOTAL,
        "Order placement requests by outcome: placed, insufficient_stock, rejected (other 4xx), unavailable (5xx)."
    );
    describe_histogram!(
        LOG_FSYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one durable log write: the synced group commit in sync durability, the periodic fsync in async durability."
    );
    describe_histogram!(
        LOG_BATCH_EVENTS,
        Unit::Count,
        "Events written by one group commit of the log writer."
    );
    describe_counter!(LOG_SYNCS_TOTAL, "fsyncs of the event log since start.");
    describe_counter!(
        LOG_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of event batches written to the log since start."
    );
    describe_counter!(LOG_EVENTS_TOTAL, "Events written to the log since start.");
    describe_counter!(
        LOG_WRITE_FAILURES_TOTAL,
        "Storage writes of the log writer (group commits and probe writes) that failed since start."
    );
    describe_gauge!(
        STORAGE_WRITES_REFUSED,
        "1 while writes are refused at admission (the disk is nearly full, or storage refuses writes), else 0."
    );
    describe_gauge!(
        SHARD_MAILBOX_DEPTH,
        "Client requests queued for the shard and not yet handled."
    );
    describe_gauge!(SHARD_ORDERS, "Orders held in memory by the shard.");
    describe_gauge!(
        SHARD_INBOX_ORDERS,
        "Placements waiting in the shard's inbox, to be taken together in its next step."
    );
    describe_counter!(
        SHARD_RESTARTS_TOTAL,
        "Times the shard was rebuilt from storage since start."
    );
    describe_gauge!(
        SHARD_UP,
        "1 while the shard runs, 0 while it restarts or has failed."
    );
    describe_gauge!(
        SHARD_MAILBOX_CAPACITY,
        "Client requests a shard's mailbox holds before new ones are refused with 503 (engine.mailbox_capacity)."
    );
    describe_gauge!(
        STORAGE_FREE_BYTES,
        Unit::Bytes,
        "Free space of the data directory's file system available to orderd (statvfs f_bavail)."
    );
    describe_gauge!(
        STORAGE_SIZE_BYTES,
        Unit::Bytes,
        "Size of the data directory's file system."
    );
    describe_gauge!(
        STORAGE_MIN_FREE_BYTES,
        Unit::Bytes,
        "storage.min_free_bytes: below this much free space writes are refused with 507 (0: off)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the running build: version (Cargo package) and revision (git commit)."
    );
    describe_gauge!(
        BACKUP_FAILING,
        "1 while the last attempt of this kind of backup work failed since start (kind: backup_failed, offsite_failed, verify_failed), else 0."
    );
    describe_gauge!(
        BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Time of the last successful backup, in seconds since the Unix epoch; 0 when none succeeded since start."
    );
    describe_counter!(
        AUDIT_REFUSALS_DROPPED_TOTAL,
        "Audit entries of refused requests (401, 403) dropped because the audit queue was full."
    );
    describe_gauge!(TCP_CONNECTIONS, "Binary TCP protocol connections open.");
    describe_counter!(
        TCP_CLOSED_TOTAL,
        "Binary TCP protocol connections closed, by reason (client_closed, read_error, bad_frame, unauthorized, auth_timeout, idle_timeout, write_timeout, shutdown, too_many_connections, too_many_connections_from_peer)."
    );
    describe_counter!(
        REFUSALS_TOTAL,
        "Requests and connections refused, HTTP and TCP, by reason (unauthorized, forbidden, payload_too_large, rate_limited, unavailable, insufficient_storage, too_many_connections, too_many_connections_from_peer, auth_timeout)."
    );
    describe_counter!(
        INCIDENTS_TOTAL,
        "Incidents recorded by the supervisor, by component and kind."
    );
}

/// Sets `orderd_build_info{version,revision}` to 1: the running build, for dashboards and for
/// telling nodes of a fleet apart during a rollout.
pub fn set_build_info(version: &str, revision: &str) {
    metrics::gauge!(
        BUILD_INFO,
        "version" => version.to_string(),
        "revision" => revision.to_string(),
    )
    .set(1.0);
}

/// `outcome` label of a request: by status class.
pub fn request_outcome(status: u16) -> &'static str {
    match status {
        500.. => "server_error",
        400..=499 => "client_error",
        _ => "ok",
    }
}

/// Records one HTTP request: in `orderd_request_duration_seconds` by route template (`route`,
/// or [`UNMATCHED`]) and outcome, and in the HDR recorder. The gateway's request middleware
/// calls it for every request.
pub fn record_http_request(route: Option<&str>, status: u16, elapsed: Duration) {
    record_duration(route.unwrap_or(UNMATCHED), request_outcome(status), elapsed);
    record_latency(elapsed);
    record_status(status);
}

/// The `reason` of `orderd_refusals_total` for an answer with `status`, if it is a refusal: the
/// server declining work for who asks or how much (not a client's malformed request, and not a
/// fault of the server).
pub fn refusal_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        401 => "unauthorized",
        403 => "forbidden",
        413 => "payload_too_large",
        429 => "rate_limited",
        503 => "unavailable",
        507 => "insufficient_storage",
        _ => return None,
    })
}

/// Every `reason` of `orderd_refusals_total`, exported at 0 from the start (the alerts on 429
/// and 507 take rates of them).
pub const REFUSAL_REASONS: &[&str] = &[
    "unauthorized",
    "forbidden",
    "payload_too_large",
    "rate_limited",
    "unavailable",
    "insufficient_storage",
    "too_many_connections",
    "too_many_connections_from_peer",
    "auth_timeout",
];

/// Counts one refusal in `orderd_refusals_total{reason}`.
pub fn record_refusal(reason: &'static str) {
    debug_assert!(
        REFUSAL_REASONS.contains(&reason),
        "unknown refusal {reason}"
    );
    metrics::counter!(REFUSALS_TOTAL, "reason" => reason).increment(1);
}

/// Counts the answer with `status` in `orderd_refusals_total` when it is a refusal.
pub fn record_status(status: u16) {
    if let Some(reason) = refusal_reason(status) {
        record_refusal(reason);
    }
}

/// Records one request of the binary TCP protocol, as [`record_http_request`] does for HTTP: in
/// `orderd_request_duration_seconds` with route `tcp <opcode name>`, and in the HDR recorder.
pub fn record_tcp_request(opcode_name: &str, outcome: &'static str, elapsed: Duration) {
    record_duration(&["tcp ", opcode_name].concat(), outcome, elapsed);
    record_latency(elapsed);
}

/// `route` label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

thread_local! {
    /// Per route name: the histogram handle of each outcome (`ok`, `client_error`,
    /// `server_error`).
    static DURATION_HANDLES: std::cell::RefCell<std::collections::HashMap<String, [Option<metrics::Histogram>; 3]>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn record_duration(route: &str, outcome: &'static str, elapsed: Duration) {
    let index = match outcome {
        "ok" => 0,
        "client_error" => 1,
        _ => 2,
    };
    DURATION_HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        if !handles.contains_key(route) {
            handles.insert(route.to_string(), [None, None, None]);
        }
        let slots = handles.get_mut(route).expect("inserted above");
        slots[index]
            .get_or_insert_with(|| {
                metrics::histogram!(
                    REQUEST_DURATION_SECONDS,
                    "route" => route.to_string(),
                    "outcome" => outcome,
                )
            })
            .record(elapsed.as_secs_f64());
    });
}

/// Every `outcome` of `orderd_orders_total`.
pub const ORDER_OUTCOMES: &[&str] = &["placed", "insufficient_stock", "rejected", "unavailable"];

/// `outcome` label of `orderd_orders_total` for the answer of one placement request.
pub fn order_outcome<T>(result: Result<&T, &ApiError>) -> &'static str {
    match result {
        Ok(_) => "placed",
        Err(ApiError::InsufficientStock { .. }) => "insufficient_stock",
        Err(error) if error.status() >= 500 => "unavailable",
        Err(_) => "rejected",
    }
}

/// Counts one placement request in `orderd_orders_total` (an idempotent repeat counts again,
/// with the outcome it answered).
pub fn record_order<T>(result: Result<&T, &ApiError>) {
    metrics::counter!(ORDERS_TOTAL, "outcome" => order_outcome(result)).increment(1);
}

/// Sets `orderd_incidents_total{component,kind}` to these counts (absolute values, as the
/// supervisor keeps them: counts since the data directory was created, or since start). Call it
/// whenever the counts change, or from the scrape path with the supervisor's current counts.
/// `component` and `kind` must come from small fixed sets (never an id).
pub fn set_incident_counts(counts: &[(&str, &str, u64)]) {
    for (component, kind, count) in counts {
        metrics::counter!(
            INCIDENTS_TOTAL,
            "component" => component.to_string(),
            "kind" => kind.to_string(),
        )
        .absolute(*count);
    }
}

/// Refreshes the values read at scrape time and renders every metric in the Prometheus text
/// format.
pub async fn render(
    engine: &Engine,
    audit: Option<&AuditLog>,
    backups: Option<&Backups>,
) -> String {
    let handle = handle();
    let mailbox_capacity = engine.mailbox_capacity() as f64;
    for shard in engine.shards().await {
        let id = shard.id.to_string();
        metrics::gauge!(SHARD_MAILBOX_CAPACITY, "shard" => id.clone()).set(mailbox_capacity);
        metrics::gauge!(SHARD_MAILBOX_DEPTH, "shard" => id.clone()).set(shard.mailbox_depth as f64);
        metrics::gauge!(SHARD_ORDERS, "shard" => id.clone()).set(shard.orders as f64);
        metrics::gauge!(SHARD_INBOX_ORDERS, "shard" => id.clone()).set(shard.inbox_orders as f64);
        metrics::counter!(SHARD_RESTARTS_TOTAL, "shard" => id.clone()).absolute(shard.restarts);
        let up = if shard.state == ShardState::Running {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(SHARD_UP, "shard" => id).set(up);
    }
    let incidents = engine.incidents().counts();
    let incidents: Vec<(&str, &str, u64)> = incidents
        .iter()
        .map(|(component, kind, count)| (component.as_str(), kind.as_str(), *count))
        .collect();
    set_incident_counts(&incidents);
    let log = engine.log_counters();
    metrics::counter!(LOG_SYNCS_TOTAL).absolute(log.syncs);
    metrics::counter!(LOG_BYTES_TOTAL).absolute(log.bytes);
    metrics::counter!(LOG_EVENTS_TOTAL).absolute(log.events);
    metrics::counter!(LOG_WRITE_FAILURES_TOTAL).absolute(log.write_failures);
    let refused = if engine.writes_refused() { 1.0 } else { 0.0 };
    metrics::gauge!(STORAGE_WRITES_REFUSED).set(refused);
    if let Some(audit) = audit {
        metrics::counter!(AUDIT_REFUSALS_DROPPED_TOTAL).absolute(audit.refusals_dropped_total());
    }
    if let Some(space) = engine.disk_space() {
        metrics::gauge!(STORAGE_FREE_BYTES).set(space.free_bytes as f64);
        metrics::gauge!(STORAGE_SIZE_BYTES).set(space.size_bytes as f64);
    }
    metrics::gauge!(STORAGE_MIN_FREE_BYTES).set(engine.min_free_bytes() as f64);
    metrics::gauge!(BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS)
        .set(backups.map_or(0, Backups::last_success_s) as f64);
    if let Some(backups) = backups {
        for (kind, failing) in backups.failing() {
            metrics::gauge!(BACKUP_FAILING, "kind" => kind).set(if failing { 1.0 } else { 0.0 });
        }
    }
    let mut text = handle.render();
    // Rendered here rather than through the facade: its counters are integers (CPU seconds
    // have a fraction), and these are the process's own, not orderd's.
    if let Some(process) = process::sample() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&process.render());
    }
    text
}

/// Process figures from `/proc/self` (Linux). `None` elsewhere or if `/proc` is unreadable.
mod process {
    use std::sync::OnceLock;

    use super::{
        PROCESS_CPU_SECONDS_TOTAL, PROCESS_MAX_FDS, PROCESS_OPEN_FDS,
        PROCESS_RESIDENT_MEMORY_BYTES, PROCESS_START_TIME_SECONDS, PROCESS_VIRTUAL_MEMORY_BYTES,
    };

    pub struct Sample {
        pub cpu_seconds: f64,
        pub resident_bytes: u64,
        pub virtual_bytes: u64,
        pub start_time_s: f64,
        /// Entries of `/proc/self/fd` (`None` if unreadable).
        pub open_fds: Option<u64>,
        /// The soft limit of open descriptors (`RLIMIT_NOFILE`; `None` if unlimited).
        pub max_fds: Option<u64>,
    }

    impl Sample {
        /// The standard `process_*` families in the text format, with help and type.
        pub fn render(&self) -> String {
            let mut text = String::new();
            let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
                if let Some(value) = value {
                    text.push_str(&format!(
                        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                    ));
                }
            };
            family(
                PROCESS_CPU_SECONDS_TOTAL,
                "counter",
                "Total user and system CPU time spent in seconds.",
                Some(self.cpu_seconds),
            );
            family(
                PROCESS_RESIDENT_MEMORY_BYTES,
                "gauge",
                "Resident memory size in bytes.",
                Some(self.resident_bytes as f64),
            );
            family(
                PROCESS_VIRTUAL_MEMORY_BYTES,
                "gauge",
                "Virtual memory size in bytes.",
                Some(self.virtual_bytes as f64),
            );
            family(
                PROCESS_OPEN_FDS,
                "gauge",
                "Number of open file descriptors.",
                self.open_fds.map(|n| n as f64),
            );
            family(
                PROCESS_MAX_FDS,
                "gauge",
                "Maximum number of open file descriptors.",
                self.max_fds.map(|n| n as f64),
            );
            family(
                PROCESS_START_TIME_SECONDS,
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                Some(self.start_time_s),
            );
            text
        }
    }

    /// The soft limit of open file descriptors.
    fn max_fds() -> Option<u64> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes into the struct we pass.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }

    /// Open descriptors: the entries of `/proc/self/fd`, less the one reading it.
    fn open_fds() -> Option<u64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        Some((entries.count() as u64).saturating_sub(1))
    }

    /// Fields of `/proc/self/stat` after the command name, which may hold spaces and ')'.
    fn stat_fields(stat: &str) -> Option<Vec<&str>> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        Some(after_name.split_whitespace().collect())
    }

    fn sysconf(name: libc::c_int) -> Option<u64> {
        // SAFETY: sysconf only reads a system constant.
        let value = unsafe { libc::sysconf(name) };
        (value > 0).then_some(value as u64)
    }

    /// Boot time (`btime` of `/proc/stat`), in Unix seconds.
    fn boot_time_s() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse().ok())
    }

    pub fn sample() -> Option<Sample> {
        let ticks_per_s = sysconf(libc::_SC_CLK_TCK)? as f64;
        let page_bytes = sysconf(libc::_SC_PAGESIZE)?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields = stat_fields(&stat)?;
        // Field 3 (`state`) is index 0: utime = 14, stime = 15, starttime = 22.
        let ticks = |field: usize| -> Option<f64> { fields.get(field - 3)?.parse::<f64>().ok() };
        let cpu_seconds = (ticks(14)? + ticks(15)?) / ticks_per_s;
        static START_TIME_S: OnceLock<Option<f64>> = OnceLock::new();
        let start_time_s =
            (*START_TIME_S.get_or_init(|| Some(boot_time_s()? as f64 + ticks(22)? / ticks_per_s)))?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let mut pages = statm.split_whitespace();
        let virtual_pages: u64 = pages.next()?.parse().ok()?;
        let resident_pages: u64 = pages.next()?.parse().ok()?;
        Some(Sample {
            cpu_seconds,
            resident_bytes: resident_pages * page_bytes,
            virtual_bytes: virtual_pages * page_bytes,
            start_time_s,
            open_fds: open_fds(),
            max_fds: max_fds(),
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn stat_fields_survive_a_name_with_spaces_and_parentheses() {
            let stat =
                "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 9 0 12345 1000 50";
            let fields = super::stat_fields(stat).unwrap();
            assert_eq!(fields[0], "S");
            assert_eq!(fields[14 - 3], "7");
            assert_eq!(fields[15 - 3], "3");
            assert_eq!(fields[22 - 3], "12345");
        }

        #[test]
        fn this_process_has_cpu_memory_and_a_start_time() {
            let sample = super::sample().expect("/proc is readable on Linux");
            assert!(sample.resident_bytes > 1 << 20, "{}", sample.resident_bytes);
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(sample.start_time_s <= now_s + 1.0);
            assert!(sample.start_time_s > now_s - 86_400.0 * 365.0);
            assert!(sample.cpu_seconds >= 0.0);
            assert!(sample.virtual_bytes >= sample.resident_bytes);
            let open = sample.open_fds.expect("/proc/self/fd is readable");
            assert!(open >= 3, "stdin, stdout, stderr: {open}");
            assert!(sample.max_fds.is_none_or(|max| max >= open));
            let text = sample.render();
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ] {
                assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
                assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
            }
        }
    }
}

/// Slots of the HDR recorder: each thread records into one (chosen round-robin when the thread
/// first records), so HTTP workers rarely contend; a read merges them.
const LATENCY_SLOTS: usize = 16;
/// Largest latency the HDR recorder tells apart, in microseconds (longer ones count as this).
const LATENCY_US_MAX: u64 = 60_000_000;

fn latency_slots() -> &'static [Mutex<Histogram<u64>>] {
    static SLOTS: OnceLock<Vec<Mutex<Histogram<u64>>>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        (0..LATENCY_SLOTS)
            .map(|_| {
                Mutex::new(
                    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                        .expect("valid HDR histogram bounds"),
                )
            })
            .collect()
    })
}

thread_local! {
    static LATENCY_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Records one request latency in the HDR recorder (all requests since start).
pub fn record_latency(elapsed: Duration) {
    static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
    let slot = LATENCY_SLOT.with(|slot| match slot.get() {
        Some(chosen) => chosen,
        None => {
            let chosen = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % LATENCY_SLOTS;
            slot.set(Some(chosen));
            chosen
        }
    });
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let mut histogram = latency_slots()[slot]
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    histogram.saturating_record(micros.clamp(1, LATENCY_US_MAX));
}

/// Exact percentiles (to 3 significant digits) of every request latency since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The latencies of every request this process has answered (through [`record_request`]), for
/// the health inspection report. All zero before the first request.
pub fn latency_summary() -> LatencySummary {
    let mut merged =
        Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid HDR bounds");
    for slot in latency_slots() {
        let histogram = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        merged
            .add(&*histogram)
            .expect("slots have the same bounds as the merged histogram");
    }
    if merged.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: merged.len(),
        p50_us: merged.value_at_quantile(0.5),
        p99_us: merged.value_at_quantile(0.99),
        p999_us: merged.value_at_quantile(0.999),
        max_us: merged.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_status_class() {
        assert_eq!(request_outcome(200), "ok");
        assert_eq!(request_outcome(304), "ok");
        assert_eq!(request_outcome(404), "client_error");
        assert_eq!(request_outcome(499), "client_error");
        assert_eq!(request_outcome(503), "server_error");
        let ok: Result<(), ApiError> = Ok(());
        assert_eq!(order_outcome(ok.as_ref()), "placed");
        let short: Result<(), ApiError> = Err(ApiError::InsufficientStock {
            skus: vec!["a".into()],
        });
        assert_eq!(order_outcome(short.as_ref()), "insufficient_stock");
        let down: Result<(), ApiError> = Err(ApiError::Unavailable {
            detail: "x".into(),
            reasons: None,
        });
        assert_eq!(order_outcome(down.as_ref()), "unavailable");
        let bad: Result<(), ApiError> = Err(ApiError::UnknownCustomer);
        assert_eq!(order_outcome(bad.as_ref()), "rejected");
    }

    /// Latencies recorded from many threads are all counted, and the percentiles are those of
    /// the recorded values (other tests in this process may record too, so compare deltas on a
    /// value range nobody else uses: 7–8 s).
    #[test]
    fn hdr_recorder_merges_every_thread() {
        let before = latency_summary();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    for i in 0..1000u64 {
                        record_latency(Duration::from_micros(7_000_000 + i));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let after = latency_summary();
        assert!(after.count >= before.count + 8000);
        assert!(after.max_us >= 7_000_000, "{after:?}");
        assert!(after.max_us <= 7_010_000, "{after:?}");
    }

    /// The recorder renders our histograms with buckets (not as summaries), with help texts.
    #[test]
    fn histograms_render_with_buckets() {
        let handle = handle();
        metrics::histogram!(LOG_FSYNC_DURATION_SECONDS).record(0.0003);
        metrics::histogram!(LOG_BATCH_EVENTS).record(10.0);
        let text = handle.render();
        assert!(
            text.contains("orderd_log_fsync_duration_seconds_bucket{le=\"0.0005\"}"),
            "{text}"
        );
        assert!(
            text.contains("orderd_log_batch_events_bucket{le=\"16\"}"),
            "{text}"
        );
        assert!(text.contains("# TYPE orderd_log_fsync_duration_seconds histogram"));
        assert!(text.contains("# HELP orderd_log_batch_events "), "{text}");
        assert!(!text.contains("quantile="), "{text}");
    }
}

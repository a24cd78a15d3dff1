//! Health inspection: reads the process, the machine, storage, the listeners, the shards and the
//! backups, judges each reading against the `[inspection]` thresholds (pass, warn or fail), and
//! answers `GET /v1/ops/inspection`; a [`Schedule`] runs it every `inspection.interval_s` and
//! writes an incident for each check that fails.
//!
//! Every check is two steps: gathering a reading (I/O: `/proc`, `statvfs`, RocksDB, a request
//! to our own listener) and judging it, a pure function of the reading and the thresholds
//! (`judge_*`, unit-tested with made-up readings). The overall status is the worst check's.
//!
//! `backup_age` and `backup_verified` read the backup index ([`crate::backups::Index`]); until
//! the first backup they warn "no backup has been taken yet". `latency` reads the exact percentiles of the HDR histogram that
//! [`crate::metrics`] keeps of every request since the process started.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use orderd_engine::{Engine, ShardState, ShardStatus};
use orderd_storage::{Family, StorageHealth};

use orderd_config::{Config, InspectionConfig};
use orderd_service::wire;

/// The checks of every inspection, in the order they are reported.
pub const CHECK_NAMES: [&str; 9] = [
    "cpu",
    "memory",
    "disk",
    "storage",
    "listeners",
    "shards",
    "latency",
    "backup_age",
    "backup_verified",
];

/// Incident kind of a failed check (component `inspection/<check>`).
pub const INCIDENT_KIND: &str = "check_failed";

/// Outcome of one check; ordered from best to worst, so the overall status is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One judged check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// The reading and its thresholds, in words.
    pub detail: String,
    /// The main reading (unit named in `detail`), if there is one.
    pub value: Option<f64>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: String, value: Option<f64>) -> Check {
        Check {
            name,
            status,
            detail,
            value: value.map(round2),
        }
    }
}

/// One inspection: every check, when it ran and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub at_us: i64,
    pub duration_ms: u64,
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst status of any check (`pass` for no checks).
    pub fn overall(&self) -> Status {
        overall(&self.checks)
    }

    fn named(&self, status: Status) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.name.to_string())
            .collect()
    }
}

/// The worst status of `checks`.
pub fn overall(checks: &[Check]) -> Status {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `12.3 GiB`, `512.0 KiB`, `17 B`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

// ---------------------------------------------------------------------------------------------
// Readings and their judges (pure functions).

/// Process CPU time over a wall-clock window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuReading {
    /// User + system CPU time of the process during the window, seconds.
    pub busy_s: f64,
    /// Length of the window, seconds.
    pub wall_s: f64,
    /// Cores the process may run on.
    pub cores: usize,
}

impl CpuReading {
    /// Percent of all cores, 0..=100.
    pub fn percent(&self) -> f64 {
        if self.wall_s <= 0.0 || self.cores == 0 {
            return 0.0;
        }
        (self.busy_s / (self.wall_s * self.cores as f64) * 100.0).clamp(0.0, 100.0)
    }
}

/// `latency`: exact p50/p99/p99.9 of every HTTP request since start (HDR histogram); a p99
/// at or above a threshold warns / fails. Value: p99 in milliseconds.
pub fn judge_latency(summary: &crate::telemetry::LatencySummary, t: &InspectionConfig) -> Check {
    if summary.count == 0 {
        return Check::new(
            "latency",
            Status::Pass,
            "no request answered yet".to_string(),
            None,
        );
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let p99_ms = ms(summary.p99_us);
    let status = if p99_ms >= t.latency_p99_fail_ms as f64 {
        Status::Fail
    } else if p99_ms >= t.latency_p99_warn_ms as f64 {
        Status::Warn
    } else {
        Status::Pass
    };
    Check::new(
        "latency",
        status,
        format!(
            "{} requests since start: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (p99 warn at {} ms, fail at {} ms)",
            summary.count,
            ms(summary.p50_us),
            p99_ms,
            ms(summary.p999_us),
            ms(summary.max_us),
            t.latency_p99_warn_ms,
            t.latency_p99_fail_ms
        ),
        Some(p99_ms),
    )
}

/// `cpu`: process CPU use, percent of all cores; at or above a threshold warns / fails.
pub fn judge_cpu(reading: &Result<CpuReading, String>, t: &InspectionConfig) -> Check {
    let reading = match reading {
        Ok(reading) => reading,
        Err(error) => {
            return Check::new(
                "cpu",
                Status::Warn,
                format!("cannot measure process CPU use: {error}"),
                None,
            )
        }
    };
    let percent = reading.percent();
    let status = at_or_above(percent, t.cpu_warn_percent, t.cpu_fail_percent);
    Check::new(
        "cpu",
        status,
        format!(
            "process CPU {percent:.1}% of {} core(s) over {} ms (warn at {}%, fail at {}%)",
            reading.cores,
            (reading.wall_s * 1000.0).round() as u64,
            t.cpu_warn_percent,
            t.cpu_fail_percent
        ),
        Some(percent),
    )
}

/// System memory (from `/proc/meminfo`) and the process's resident set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReading {
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Resident set of this process.
    pub rss_bytes: u64,
}

impl MemoryReading {
    /// Percent of system memory in use (total − available).
    pub fn used_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        let used = self.total_bytes.saturating_sub(self.available_bytes);
        used as f64 / self.total_bytes as f64 * 100.0
    }
}

/// `memory`: system memory in use, percent; at or above a threshold warns / fails.
pub fn judge_memory(reading: &Result<MemoryReading, String>, t: &InspectionConfig) -> Check {
    let reading = match reading {
        Ok(reading) => reading,
        Err(error) => {
            return Check::new(
                "memory",
                Status::Warn,
                format!("cannot read memory use: {error}"),
                None,
            )
        }
    };
    let percent = reading.used_percent();
    let status = at_or_above(percent, t.memory_warn_percent, t.memory_fail_percent);
    Check::new(
        "memory",
        status,
        format!(
            "system memory {percent:.1}% in use ({} of {}; {} available); orderd resident {} (warn at {}%, fail at {}%)",
            bytes(reading.total_bytes.saturating_sub(reading.available_bytes)),
            bytes(reading.total_bytes),
            bytes(reading.available_bytes),
            bytes(reading.rss_bytes),
            t.memory_warn_percent,
            t.memory_fail_percent
        ),
        Some(percent),
    )
}

/// Size and free space of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// Free to an unprivileged process (`f_bavail`).
    pub free_bytes: u64,
    /// Device id of the filesystem, to tell whether two directories share one.
    pub device: u64,
}

impl DiskSpace {
    pub fn free_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.free_bytes as f64 / self.total_bytes as f64 * 100.0
    }
}

/// The filesystem of one directory orderd writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskReading {
    /// `data dir` or `backup dir`.
    pub role: &'static str,
    pub path: String,
    /// The directory does not exist yet; `space` is that of its nearest existing parent.
    pub missing: bool,
    pub space: Result<DiskSpace, String>,
}

/// `disk`: free space of each filesystem orderd writes (the data dir's, and the backup dir's
/// when that is another one), percent; at or below a threshold warns / fails. The value is
/// the lowest free percent.
pub fn judge_disk(readings: &[DiskReading], t: &InspectionConfig) -> Check {
    let mut status = Status::Pass;
    let mut lowest: Option<f64> = None;
    let mut parts = Vec::new();
    let mut seen: Vec<(u64, &'static str)> = Vec::new();
    for reading in readings {
        let missing = if reading.missing {
            " (not created yet)"
        } else {
            ""
        };
        match &reading.space {
            Err(error) => {
                status = status.max(Status::Fail);
                parts.push(format!(
                    "{} {}{missing}: cannot read free space: {error}",
                    reading.role, reading.path
                ));
            }
            Ok(space) if space.total_bytes == 0 => {
                status = status.max(Status::Fail);
                parts.push(format!(
                    "{} {}{missing}: the filesystem reports no size",
                    reading.role, reading.path
                ));
            }
            Ok(space) => {
                if let Some((_, role)) = seen.iter().find(|(device, _)| *device == space.device) {
                    parts.push(format!(
                        "{} {}{missing}: on the same filesystem as the {role}",
                        reading.role, reading.path
                    ));
                    continue;
                }
                seen.push((space.device, reading.role));
                let percent = space.free_percent();
                status = status.max(at_or_below(
                    percent,
                    t.disk_free_warn_percent,
                    t.disk_free_fail_percent,
                ));
                lowest = Some(lowest.map_or(percent, |l: f64| l.min(percent)));
                parts.push(format!(
                    "{} {}{missing}: {percent:.1}% free ({} of {})",
                    reading.role,
                    reading.path,
                    bytes(space.free_bytes),
                    bytes(space.total_bytes)
                ));
            }
        }
    }
    if readings.is_empty() {
        status = Status::Fail;
        parts.push("no directory to measure".to_string());
    }
    Check::new(
        "disk",
        status,
        format!(
            "{} (warn at {}% free or less, fail at {}%)",
            parts.join("; "),
            t.disk_free_warn_percent,
            t.disk_free_fail_percent
        ),
        lowest,
    )
}

/// What storage answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageReading {
    /// A read of a record every data directory has (the shard count in `control`).
    pub read: Result<(), String>,
    /// RocksDB's write-stall and compaction figures; `Ok(None)` for a store without them.
    pub health: Result<Option<StorageHealth>, String>,
    /// The engine's log writer failed its last write ("storage writes are failing").
    pub writes_failing: bool,
}

/// `storage`: fails when storage does not answer a read, writes fail or are stopped; warns
/// when writes are slowed or pending compaction is at or above its threshold. The value is
/// the pending compaction in bytes.
pub fn judge_storage(reading: &StorageReading, t: &InspectionConfig) -> Check {
    let mut status = Status::Pass;
    let mut parts = Vec::new();
    match &reading.read {
        Ok(()) => parts.push("RocksDB answers reads".to_string()),
        Err(error) => {
            status = Status::Fail;
            parts.push(format!("RocksDB does not answer a read: {error}"));
        }
    }
    if reading.writes_failing {
        status = Status::Fail;
        parts.push("the log writer's writes are failing (requests get 503)".to_string());
    }
    let mut value = None;
    match &reading.health {
        Err(error) => {
            status = Status::Fail;
            parts.push(format!("cannot read RocksDB's properties: {error}"));
        }
        Ok(None) => parts.push("no write-stall figures (in-memory store)".to_string()),
        Ok(Some(health)) => {
            if health.write_stopped {
                status = Status::Fail;
                parts.push("writes are stopped (rocksdb.is-write-stopped)".to_string());
            } else if health.delayed_write_rate_bytes_per_s > 0 {
                status = status.max(Status::Warn);
                parts.push(format!(
                    "writes are slowed to {}/s (rocksdb.actual-delayed-write-rate)",
                    bytes(health.delayed_write_rate_bytes_per_s)
                ));
            } else {
                parts.push("writes are neither stopped nor slowed".to_string());
            }
            let pending = health.pending_compaction_bytes;
            if pending >= t.pending_compaction_warn_bytes {
                status = status.max(Status::Warn);
            }
            parts.push(format!(
                "{} pending compaction (warn at {})",
                bytes(pending),
                bytes(t.pending_compaction_warn_bytes)
            ));
            value = Some(pending as f64);
        }
    }
    Check::new("storage", status, parts.join("; "), value)
}

/// One listener and how it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerReading {
    pub addr: SocketAddr,
    /// Time to connect, send `GET /livez` and read `200`; or why that failed.
    pub answer: Result<Duration, String>,
}

/// `listeners`: every HTTP listener answers `GET /livez` with 200, and the binary TCP
/// listener answers a `PING` frame, each over a fresh connection. The value is the slowest
/// answer in milliseconds.
pub fn judge_listeners(http: &[ListenerReading], tcp: Option<&ListenerReading>) -> Check {
    let mut status = Status::Pass;
    let mut slowest_ms: Option<f64> = None;
    let mut parts = Vec::new();
    let readings = http
        .iter()
        .map(|l| ("HTTP", "GET /livez", l))
        .chain(tcp.map(|l| ("TCP", "PING", l)));
    for (protocol, request, listener) in readings {
        match &listener.answer {
            Ok(elapsed) => {
                let ms = elapsed.as_secs_f64() * 1000.0;
                slowest_ms = Some(slowest_ms.map_or(ms, |s: f64| s.max(ms)));
                parts.push(format!(
                    "{protocol} {} answered {request} in {ms:.1} ms",
                    listener.addr
                ));
            }
            Err(error) => {
                status = Status::Fail;
                parts.push(format!(
                    "{protocol} {} does not answer: {error}",
                    listener.addr
                ));
            }
        }
    }
    if http.is_empty() {
        status = Status::Fail;
        parts.push("no HTTP listener is bound".to_string());
    }
    if tcp.is_none() {
        status = Status::Fail;
        parts.push("the TCP listener is not bound".to_string());
    }
    Check::new("listeners", status, parts.join("; "), slowest_ms)
}

/// `shards`: every shard running passes; any restarting warns; any failed fails; a mailbox at
/// or above `mailbox_warn_percent` of `engine.mailbox_capacity` warns. The value is the
/// number of shards not running.
pub fn judge_shards(
    shards: &[ShardStatus],
    mailbox_capacity: usize,
    t: &InspectionConfig,
) -> Check {
    let mut status = Status::Pass;
    let mut not_running = 0u64;
    let mut listed = String::new();
    for shard in shards {
        let state = match shard.state {
            ShardState::Running => "running",
            ShardState::Restarting => {
                status = status.max(Status::Warn);
                not_running += 1;
                "restarting"
            }
            ShardState::Failed => {
                status = Status::Fail;
                not_running += 1;
                "failed"
            }
        };
        // depth / capacity >= warn% without floating point.
        let full = (shard.mailbox_depth as u128) * 100
            >= (mailbox_capacity as u128) * u128::from(t.mailbox_warn_percent);
        if full {
            status = status.max(Status::Warn);
        }
        if !listed.is_empty() {
            listed.push_str("; ");
        }
        let _ = write!(
            listed,
            "shard {} {state}, mailbox {}{}, restarts {}",
            shard.id,
            shard.mailbox_depth,
            if full {
                " (over the warning level)"
            } else {
                ""
            },
            shard.restarts
        );
    }
    if shards.is_empty() {
        status = Status::Fail;
        listed.push_str("no shards");
    }
    Check::new(
        "shards",
        status,
        format!(
            "{} of {} shards running: {listed} (mailbox capacity {mailbox_capacity}, warn at {}% full)",
            shards.len() as u64 - not_running,
            shards.len(),
            t.mailbox_warn_percent
        ),
        Some(not_running as f64),
    )
}

/// The newest backup as the backup index knows it: the input of `backup_age` and
/// `backup_verified`, read from the backup index in `control` (see [`Inspector::backup_status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupStatus {
    pub newest: Option<BackupInfo>,
    /// The backup whose restore drill ran most recently (drills run daily, backups hourly,
    /// so it is usually older than `newest`).
    pub last_drill: Option<BackupInfo>,
}

/// One backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// `bak_…`.
    pub id: String,
    pub created_at_us: i64,
    /// The newest restore drill of this backup; `None` until one has run.
    pub verification: Option<Verification>,
}

/// A restore drill's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub at_us: i64,
    pub verified: bool,
    pub detail: String,
}

const NO_BACKUP: &str = "no backup has been taken yet";

/// `backup_age`: the age of the newest backup in seconds; at or above a threshold warns /
/// fails; no backup at all warns (value null).
pub fn judge_backup_age(backups: &BackupStatus, now_us: i64, t: &InspectionConfig) -> Check {
    let Some(newest) = &backups.newest else {
        return Check::new(
            "backup_age",
            Status::Warn,
            format!(
                "{NO_BACKUP} (warn at {} s, fail at {} s)",
                t.backup_age_warn_s, t.backup_age_fail_s
            ),
            None,
        );
    };
    let age_s = (now_us.saturating_sub(newest.created_at_us)).max(0) as u64 / 1_000_000;
    let status = if age_s >= t.backup_age_fail_s {
        Status::Fail
    } else if age_s >= t.backup_age_warn_s {
        Status::Warn
    } else {
        Status::Pass
    };
    Check::new(
        "backup_age",
        status,
        format!(
            "newest backup {} taken {} is {age_s} s old (warn at {} s, fail at {} s)",
            newest.id,
            wire::time(newest.created_at_us),
            t.backup_age_warn_s,
            t.backup_age_fail_s
        ),
        Some(age_s as f64),
    )
}

/// `backup_verified`: the newest restore drill (of the newest backup when it has been drilled,
/// else of the most recently drilled one). Verified passes (value 1), a failed drill fails
/// (value 0), no drill yet or no backup warns (value null).
pub fn judge_backup_verified(backups: &BackupStatus) -> Check {
    let Some(newest) = &backups.newest else {
        return Check::new("backup_verified", Status::Warn, NO_BACKUP.to_string(), None);
    };
    let newest = match (&newest.verification, &backups.last_drill) {
        (None, Some(drilled)) => drilled,
        _ => newest,
    };
    match &newest.verification {
        None => Check::new(
            "backup_verified",
            Status::Warn,
            format!("newest backup {} has not been verified yet", newest.id),
            None,
        ),
        Some(v) if v.verified => Check::new(
            "backup_verified",
            Status::Pass,
            format!(
                "newest backup {} verified at {}: {}",
                newest.id,
                wire::time(v.at_us),
                v.detail
            ),
            Some(1.0),
        ),
        Some(v) => Check::new(
            "backup_verified",
            Status::Fail,
            format!(
                "newest backup {} FAILED verification at {}: {}",
                newest.id,
                wire::time(v.at_us),
                v.detail
            ),
            Some(0.0),
        ),
    }
}

/// Higher is worse (CPU, memory).
fn at_or_above(value: f64, warn: u32, fail: u32) -> Status {
    if value >= f64::from(fail) {
        Status::Fail
    } else if value >= f64::from(warn) {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// Lower is worse (free space).
fn at_or_below(value: f64, warn: u32, fail: u32) -> Status {
    if value <= f64::from(fail) {
        Status::Fail
    } else if value <= f64::from(warn) {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// What the operator should look at when a check fails (the incident's `action`).
pub fn advice(check: &str) -> &'static str {
    match check {
        "cpu" => "Scheduled inspection found it; nothing was changed. Look at the request rate and the orderd_* metrics; add cores or spread the load over more nodes.",
        "memory" => "Scheduled inspection found it; nothing was changed. Look at orderd's resident size (in the detail) and at other processes on the machine; hot orders are kept in memory until their retention ends.",
        "disk" => "Scheduled inspection found it; nothing was changed. Free space on the named filesystem (old backups, logs) or grow it before RocksDB writes start to fail.",
        "storage" => "Scheduled inspection found it; nothing was changed. Read the orderd log for RocksDB errors; check the data filesystem (space, I/O errors); /readyz reports failing writes.",
        "listeners" => "Scheduled inspection found it; nothing was changed. Check that the process still serves HTTP on its address (firewall, file descriptors, http.max_connections).",
        "shards" => "Scheduled inspection found it; nothing was changed. See GET /v1/ops/shards and the shard incidents; bring a failed shard back with POST /v1/ops/shards/{id}/restart.",
        "backup_age" => "Scheduled inspection found it; nothing was changed. Take a backup (POST /v1/ops/backups) and find out why the scheduled one did not run.",
        "backup_verified" => "Scheduled inspection found it; nothing was changed. Do not rely on the newest backup; take a new one and verify it (POST /v1/ops/backups/{id}/verify).",
        _ => "Scheduled inspection found it; nothing was changed.",
    }
}

// ---------------------------------------------------------------------------------------------
// Gathering readings (I/O).

/// Cumulative user + system CPU ticks of this process, from `/proc/self/stat`.
fn process_cpu_ticks() -> Result<u64, String> {
    let text =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    parse_stat_ticks(&text).ok_or_else(|| "/proc/self/stat: unexpected format".to_string())
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// `(MemTotal, MemAvailable)` in bytes from `/proc/meminfo` text.
fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("MemTotal:") => &mut total,
            Some("MemAvailable:") => &mut available,
            _ => continue,
        };
        let kib: u64 = words.next()?.parse().ok()?;
        *slot = Some(kib * 1024);
    }
    Some((total?, available?))
}

/// Resident pages (field 2) of `/proc/self/statm` text.
fn parse_statm_resident_pages(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

fn read_memory() -> Result<MemoryReading, String> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let (total_bytes, available_bytes) = parse_meminfo(&meminfo)
        .ok_or_else(|| "/proc/meminfo has no MemTotal or MemAvailable".to_string())?;
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| format!("/proc/self/statm: {e}"))?;
    let pages = parse_statm_resident_pages(&statm)
        .ok_or_else(|| "/proc/self/statm: unexpected format".to_string())?;
    Ok(MemoryReading {
        total_bytes,
        available_bytes,
        rss_bytes: pages * page_size_bytes(),
    })
}

/// `path`, or its nearest existing parent (a directory not created yet will live there).
fn nearest_existing(path: &Path) -> (PathBuf, bool) {
    let mut candidate = path.to_path_buf();
    let mut missing = false;
    // Bounded by the number of components of `path`.
    for _ in 0..=path.components().count() {
        if candidate.as_os_str().is_empty() {
            return (PathBuf::from("."), missing);
        }
        if candidate.exists() {
            return (candidate, missing);
        }
        missing = true;
        if !candidate.pop() {
            break;
        }
    }
    (PathBuf::from("."), true)
}

/// Size and free space of the filesystem holding `path` (`statvfs`).
fn filesystem_space(path: &Path) -> Result<DiskSpace, String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    // SAFETY: statvfs only writes into the struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fragment = if stat.f_frsize > 0 {
        stat.f_frsize as u64
    } else {
        stat.f_bsize as u64
    };
    let device = std::fs::metadata(path).map_err(|e| e.to_string())?.dev();
    Ok(DiskSpace {
        total_bytes: (stat.f_blocks as u64).saturating_mul(fragment),
        free_bytes: (stat.f_bavail as u64).saturating_mul(fragment),
        device,
    })
}

fn read_disk(role: &'static str, path: &Path) -> DiskReading {
    let (existing, missing) = nearest_existing(path);
    DiskReading {
        role,
        path: path.display().to_string(),
        missing,
        space: filesystem_space(&existing),
    }
}

/// `addr`, or the loopback address of its family when it is unspecified (such as `0.0.0.0`).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

/// A fresh connection to `target` with read and write timeouts.
fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    Ok(stream)
}

/// A connection a probe reads and writes: a plain socket or TLS over one.
trait Duplex: Read + std::io::Write {}
impl<T: Read + std::io::Write> Duplex for T {}

/// Connects to `target`, and with `tls` completes a handshake in which the listener must
/// present its own certificate ([`ProbeTls`]).
fn open(
    target: SocketAddr,
    timeout: Duration,
    tls: Option<&ProbeTls>,
) -> Result<Box<dyn Duplex>, String> {
    let stream = connect(target, timeout)?;
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    let connection =
        rustls::ClientConnection::new(tls.config.clone(), name).map_err(|e| format!("TLS: {e}"))?;
    let mut stream = rustls::StreamOwned::new(connection, stream);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(Box::new(stream))
}

/// The probe's TLS client for a listener that serves TLS: it accepts exactly the first
/// certificate of the listener's own `tls_cert_file` (checking the handshake's signatures
/// with it), so the check proves the listener completes a handshake with the certificate it
/// is configured with. Names and issuers do not matter here: the probe talks to itself.
#[derive(Clone)]
pub struct ProbeTls {
    config: Arc<rustls::ClientConfig>,
}

impl ProbeTls {
    /// Reads the certificate `setting` (`http.tls_cert_file` …) names.
    pub fn for_listener(setting: &str, cert_file: &Path) -> Result<ProbeTls, String> {
        use rustls::pki_types::pem::PemObject;
        let bytes = std::fs::read(cert_file)
            .map_err(|e| format!("cannot read {setting} {}: {e}", cert_file.display()))?;
        let expected = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| format!("{setting} {} holds no certificate", cert_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(OwnCertificate {
            expected,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(ProbeTls {
            config: Arc::new(config),
        })
    }
}

/// Accepts the one certificate the listener is configured with (see [`ProbeTls`]).
#[derive(Debug)]
struct OwnCertificate {
    expected: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the listener presented a certificate other than the one it is configured with"
                    .into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The probe's TLS client for the listener `files` describe (`None`: plaintext listener).
fn probe_tls(files: Option<orderd_config::TlsFiles<'_>>) -> Result<Option<ProbeTls>, String> {
    files
        .map(|f| ProbeTls::for_listener(f.cert_key, f.cert_file))
        .transpose()
}

/// Connects to the TCP listener (over TLS when it serves TLS), sends a `PING` frame and
/// expects its reply.
fn probe_tcp(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&ProbeTls>,
) -> Result<Duration, String> {
    use orderd_proto::frame::{self, Frame, FrameDecoder};
    use orderd_proto::tcp::op;
    let started = Instant::now();
    let mut stream = open(reachable(addr), timeout, tls)?;
    let mut bytes = Vec::new();
    frame::encode(
        &Frame {
            opcode: op::PING,
            request_id: 1,
            payload: Vec::new(),
        },
        &mut bytes,
    );
    stream.write_all(&bytes).map_err(|e| format!("send: {e}"))?;
    let mut decoder = FrameDecoder::new(frame::MAX_FRAME_BYTES_DEFAULT);
    let mut chunk = [0u8; 256];
    loop {
        match decoder.next_frame() {
            // The probe has no key: orderd answers a PING before AUTH with an `unauthorized`
            // error frame for it, which proves the protocol is served as well as a PING reply.
            Ok(Some(reply))
                if reply.request_id == 1
                    && (reply.opcode == op::PING | op::REPLY
                        || (reply.opcode == op::ERROR
                            && orderd_proto::tcp::decode_body::<orderd_proto::tcp::ErrorBody>(
                                &reply.payload,
                            )
                            .is_ok_and(|e| e.code == "unauthorized"))) =>
            {
                return Ok(started.elapsed())
            }
            Ok(Some(reply)) => {
                return Err(format!(
                    "answered opcode 0x{:02x}, not PING's reply",
                    reply.opcode
                ))
            }
            Ok(None) => {}
            Err(error) => return Err(format!("answered something that is not a frame: {error}")),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("the connection closed without an answer".to_string()),
            Ok(n) => decoder.feed(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Connects to `addr` (over TLS when it serves TLS), sends `GET /livez` and expects `200`.
fn probe_http(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&ProbeTls>,
) -> Result<Duration, String> {
    let target = reachable(addr);
    let started = Instant::now();
    let mut stream = open(target, timeout, tls)?;
    let request = format!("GET /livez HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < head.len() && !head[..filled].contains(&b'\n') {
        match stream.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..filled]);
    let line = line.lines().next().unwrap_or("").trim();
    if line.split_whitespace().nth(1) == Some("200") {
        Ok(started.elapsed())
    } else if line.is_empty() {
        Err("the connection closed without an answer".to_string())
    } else {
        Err(format!("answered {line:?}, not 200"))
    }
}

// ---------------------------------------------------------------------------------------------
// The inspector and its schedule.

/// Runs inspections; shared by the route and the schedule (`web::Data<Inspector>`).
pub struct Inspector {
    engine: Engine,
    /// The configuration in effect ([`crate::settings::Live::subscribe`]): thresholds and the
    /// schedule are read from it at each run, and the schedule wakes when it changes.
    live: tokio::sync::watch::Receiver<Arc<Config>>,
    data_dir: PathBuf,
    backup_dir: PathBuf,
    mailbox_capacity: usize,
    /// The bound TCP address, set once the TCP server has bound it.
    tcp_addr: OnceLock<SocketAddr>,
    /// The bound HTTP addresses, set once the server has bound them.
    http_addrs: OnceLock<Vec<SocketAddr>>,
    /// The newest scheduled inspection.
    last_scheduled: Mutex<Option<Report>>,
    /// Incident ids of checks that failed at a scheduled run and have not passed since.
    open_incidents: Mutex<BTreeMap<&'static str, u64>>,
}

impl Inspector {
    /// An inspector of `engine` with the configuration `live` publishes (its `inspection`
    /// section may change while running; the paths and the mailbox capacity are read once).
    pub fn new(live: tokio::sync::watch::Receiver<Arc<Config>>, engine: Engine) -> Inspector {
        let config = live.borrow().clone();
        Inspector {
            engine,
            live,
            data_dir: config.storage.data_dir.clone(),
            backup_dir: config.backup.dir.clone(),
            mailbox_capacity: config.engine.mailbox_capacity,
            tcp_addr: OnceLock::new(),
            http_addrs: OnceLock::new(),
            last_scheduled: Mutex::new(None),
            open_incidents: Mutex::new(BTreeMap::new()),
        }
    }

    /// The addresses the HTTP server bound (`HttpServer::addrs`); called once, after binding.
    pub fn set_http_addrs(&self, addrs: Vec<SocketAddr>) {
        if self.http_addrs.set(addrs).is_err() {
            tracing::warn!(message = "HTTP addresses of the inspection were already set.");
        }
    }

    /// The address the TCP server bound; called once, after binding.
    pub fn set_tcp_addr(&self, addr: SocketAddr) {
        if self.tcp_addr.set(addr).is_err() {
            tracing::warn!(message = "TCP address of the inspection was already set.");
        }
    }

    /// The thresholds and schedule in effect now.
    pub fn settings(&self) -> Arc<InspectionConfig> {
        Arc::new(self.live.borrow().inspection.clone())
    }

    /// Runs every check now. The readings block (a CPU sampling window, `statvfs`, RocksDB,
    /// a request to our own listener), so they run on the blocking thread pool.
    pub async fn inspect(self: Arc<Self>) -> Result<Report, String> {
        let shards = self.engine.shards().await;
        tokio::task::spawn_blocking(move || self.gather(shards))
            .await
            .map_err(|error| format!("the inspection did not run: {error}"))
    }

    /// Gathers every reading and judges it. Blocks for `inspection.cpu_sample_ms` at least.
    fn gather(&self, shards: Vec<ShardStatus>) -> Report {
        let started = Instant::now();
        let at_us = chrono::Utc::now().timestamp_micros();
        let settings = self.settings();
        let t = &*settings;
        // The CPU window opens first and closes after the other readings, so that their
        // time counts as part of it.
        let cpu_start = process_cpu_ticks();

        let memory = judge_memory(&read_memory(), t);
        let mut disks = vec![read_disk("data dir", &self.data_dir)];
        disks.push(read_disk("backup dir", &self.backup_dir));
        let disk = judge_disk(&disks, t);
        let storage = judge_storage(&self.read_storage(), t);
        let timeout = Duration::from_millis(t.listener_connect_timeout_ms);
        let (http_tls, tcp_tls) = {
            let config = self.live.borrow();
            (probe_tls(config.http.tls()), probe_tls(config.tcp.tls()))
        };
        let listeners: Vec<ListenerReading> = self
            .http_addrs
            .get()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&addr| ListenerReading {
                addr,
                answer: http_tls
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|tls| probe_http(addr, timeout, tls.as_ref())),
            })
            .collect();
        let tcp = self.tcp_addr.get().map(|&addr| ListenerReading {
            addr,
            answer: tcp_tls
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|tls| probe_tcp(addr, timeout, tls.as_ref())),
        });
        let listeners = judge_listeners(&listeners, tcp.as_ref());
        let shards = judge_shards(&shards, self.mailbox_capacity, t);
        let latency = judge_latency(&crate::telemetry::latency_summary(), t);
        let backups = match self.backup_status() {
            Ok(status) => status,
            Err(error) => {
                tracing::warn!(message = "Cannot read the backup index.", %error);
                BackupStatus::default()
            }
        };
        let backup_age = judge_backup_age(&backups, at_us, t);
        let backup_verified = judge_backup_verified(&backups);

        let sample = Duration::from_millis(t.cpu_sample_ms);
        if let Some(rest) = sample.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = cpu_start.and_then(|before| {
            let after = process_cpu_ticks()?;
            Ok(CpuReading {
                busy_s: after.saturating_sub(before) as f64 / clock_ticks_per_s(),
                wall_s: started.elapsed().as_secs_f64(),
                cores,
            })
        });
        let cpu = judge_cpu(&cpu, t);

        Report {
            at_us,
            duration_ms: started.elapsed().as_millis() as u64,
            checks: vec![
                cpu,
                memory,
                disk,
                storage,
                listeners,
                shards,
                latency,
                backup_age,
                backup_verified,
            ],
        }
    }

    fn read_storage(&self) -> StorageReading {
        let storage = self.engine.storage();
        let read = match storage.get(Family::Control, orderd_engine::engine::SHARD_COUNT_KEY) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("the shard count record is missing from `control`".to_string()),
            Err(error) => Err(error.to_string()),
        };
        StorageReading {
            read,
            health: storage.health().map_err(|error| error.to_string()),
            writes_failing: self.engine.storage_writes_failing(),
        }
    }

    /// The newest backup and the newest restore drill, from the backup index.
    fn backup_status(&self) -> Result<BackupStatus, String> {
        crate::backups::Index::new(self.engine.storage())
            .status()
            .map_err(|e| e.to_string())
    }

    /// The newest scheduled inspection, if one has run.
    pub fn last_scheduled(&self) -> Option<Report> {
        self.last_scheduled
            .lock()
            .expect("last inspection slot")
            .clone()
    }

    /// After a scheduled run: an incident for each check that newly fails (component
    /// `inspection/<check>`, kind `check_failed`); a check that keeps failing keeps its open
    /// incident; a check that stops failing has its incident marked recovered. Blocks
    /// (synced incident writes).
    fn after_scheduled(&self, report: Report) {
        let mut open = self
            .open_incidents
            .lock()
            .expect("open inspection incidents");
        let incidents = self.engine.incidents();
        for check in &report.checks {
            let failed = check.status == Status::Fail;
            match (failed, open.get(check.name).copied()) {
                (true, None) => {
                    let value = check
                        .value
                        .map_or_else(|| "null".to_string(), |v| v.to_string());
                    match incidents.record(
                        &format!("inspection/{}", check.name),
                        INCIDENT_KIND,
                        format!("{} (value: {value})", check.detail),
                        advice(check.name),
                    ) {
                        Ok(incident) => {
                            open.insert(check.name, incident.id);
                        }
                        Err(error) => tracing::error!(
                            message = "Cannot record the incident of a failed inspection check.",
                            check = check.name,
                            %error
                        ),
                    }
                }
                (true, Some(_)) | (false, None) => {}
                (false, Some(id)) => match incidents.recovered(id) {
                    Ok(_) => {
                        open.remove(check.name);
                    }
                    Err(error) => tracing::error!(
                        message = "Cannot mark an inspection incident recovered.",
                        check = check.name,
                        %error
                    ),
                },
            }
        }
        drop(open);
        let overall = report.overall();
        let failed = report.named(Status::Fail).join(",");
        let warned = report.named(Status::Warn).join(",");
        if overall == Status::Fail {
            tracing::warn!(message = "Scheduled inspection found failing checks.", %failed, %warned);
        } else {
            tracing::info!(message = "Scheduled inspection ran.", overall = overall.as_str(), %warned);
        }
        *self.last_scheduled.lock().expect("last inspection slot") = Some(report);
    }
}

/// The inspection schedule: every `inspection.interval_s` after a first run at
/// `inspection.first_run_delay_s`. [`Schedule::stop`] ends it (a run in progress finishes).
pub struct Schedule {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Schedule {
    /// Starts the schedule on the current tokio runtime (the server's actix system).
    pub fn start(inspector: Arc<Inspector>) -> Schedule {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let first = Duration::from_secs(inspector.settings().first_run_delay_s);
        let mut live = inspector.live.clone();
        let task = tokio::spawn(async move {
            // The first run at `first_run_delay_s` after start; then every `interval_s` after
            // the previous run, read anew whenever the configuration changes.
            let mut due = tokio::time::Instant::now() + first;
            let mut first_run = true;
            loop {
                // A new configuration (the sender gone: never again).
                let changed = async {
                    if live.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = changed => {
                        if !first_run {
                            due = next_due(&inspector);
                        }
                        continue;
                    }
                    // A stop, or the sender gone: either way the schedule ends.
                    _ = stopped.changed() => return,
                }
                first_run = false;
                match inspector.clone().inspect().await {
                    Ok(report) => {
                        let inspector = inspector.clone();
                        if let Err(error) =
                            tokio::task::spawn_blocking(move || inspector.after_scheduled(report))
                                .await
                        {
                            tracing::error!(message = "Cannot record a scheduled inspection.", %error);
                        }
                    }
                    Err(error) => {
                        tracing::error!(message = "Scheduled inspection did not run.", %error)
                    }
                }
                due = tokio::time::Instant::now()
                    + Duration::from_secs(inspector.settings().interval_s);
            }
        });
        Schedule { stop, task }
    }

    /// Stops the schedule and waits for a run in progress to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(message = "The inspection schedule ended abnormally.", %error);
        }
    }
}

/// When the next scheduled run is due after `inspection.interval_s` changed: one new interval
/// after the previous scheduled run (or after now, when none ran yet), never in the past.
fn next_due(inspector: &Inspector) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let previous_run = inspector
        .last_scheduled()
        .map(|report| {
            let age_us = (chrono::Utc::now().timestamp_micros() - report.at_us).max(0) as u64;
            now.checked_sub(Duration::from_micros(age_us))
                .unwrap_or(now)
        })
        .unwrap_or(now);
    let next = previous_run + Duration::from_secs(inspector.settings().interval_s);
    next.max(now)
}

/// The wire form of a report, with the newest scheduled run.
pub fn response(
    report: &Report,
    last_scheduled: Option<&Report>,
) -> orderd_proto::InspectionResponse {
    orderd_proto::InspectionResponse {
        overall: report.overall().as_str().to_string(),
        checks: report
            .checks
            .iter()
            .map(|check| orderd_proto::InspectionCheck {
                name: check.name.to_string(),
                status: check.status.as_str().to_string(),
                detail: check.detail.clone(),
                value: check.value,
            })
            .collect(),
        at: wire::time(report.at_us),
        duration_ms: report.duration_ms,
        last_scheduled: last_scheduled.map(|last| orderd_proto::ScheduledInspection {
            at: wire::time(last.at_us),
            overall: last.overall().as_str().to_string(),
            failed: last.named(Status::Fail),
            warned: last.named(Status::Warn),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// The shipped thresholds (config/orderd.toml).
    fn thresholds() -> InspectionConfig {
        Config::load_with_env(
            None,
            figment::providers::Env::prefixed("ORDERD_TEST_UNSET__"),
        )
        .expect("embedded default")
        .inspection
    }

    fn shard(id: u16, state: ShardState, mailbox_depth: u64) -> ShardStatus {
        ShardStatus {
            id,
            state,
            restarts: 0,
            mailbox_depth,
            inbox_orders: 0,
            last_seq: 0,
            orders: 0,
            skus: 0,
            customers: 0,
            digest: 0,
        }
    }

    fn check(name: &'static str, status: Status) -> Check {
        Check::new(name, status, String::new(), None)
    }

    #[test]
    fn latency_thresholds_apply_to_p99() {
        let mut t = thresholds();
        t.latency_p99_warn_ms = 100;
        t.latency_p99_fail_ms = 500;
        let summary = |p99_us| crate::telemetry::LatencySummary {
            count: 10,
            p50_us: 50,
            p99_us,
            p999_us: p99_us,
            max_us: p99_us,
        };
        assert_eq!(judge_latency(&summary(99_999), &t).status, Status::Pass);
        assert_eq!(judge_latency(&summary(100_000), &t).status, Status::Warn);
        let fail = judge_latency(&summary(500_000), &t);
        assert_eq!(fail.status, Status::Fail);
        assert_eq!(fail.value, Some(500.0));
        assert!(fail.detail.contains("p99 500.00 ms"), "{}", fail.detail);
        let none = crate::telemetry::LatencySummary {
            count: 0,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
        };
        assert_eq!(judge_latency(&none, &t).status, Status::Pass);
    }

    #[test]
    fn overall_is_the_worst_status() {
        assert_eq!(overall(&[]), Status::Pass);
        assert_eq!(
            overall(&[check("cpu", Status::Pass), check("disk", Status::Pass)]),
            Status::Pass
        );
        assert_eq!(
            overall(&[check("cpu", Status::Warn), check("disk", Status::Pass)]),
            Status::Warn
        );
        assert_eq!(
            overall(&[
                check("cpu", Status::Warn),
                check("disk", Status::Fail),
                check("shards", Status::Pass)
            ]),
            Status::Fail
        );
    }

    #[test]
    fn cpu_thresholds() {
        let t = thresholds(); // warn 80, fail 95
        let reading = |busy_s: f64| {
            Ok(CpuReading {
                busy_s,
                wall_s: 1.0,
                cores: 2,
            })
        };
        let c = judge_cpu(&reading(0.2), &t);
        assert_eq!((c.status, c.value), (Status::Pass, Some(10.0)));
        assert!(
            c.detail.contains("10.0% of 2 core(s) over 1000 ms"),
            "{}",
            c.detail
        );
        assert!(
            c.detail.contains("warn at 80%, fail at 95%"),
            "{}",
            c.detail
        );
        assert_eq!(judge_cpu(&reading(1.59), &t).status, Status::Pass);
        assert_eq!(judge_cpu(&reading(1.6), &t).status, Status::Warn);
        assert_eq!(judge_cpu(&reading(1.9), &t).status, Status::Fail);
        // Tick rounding can overshoot; the percent stays within 0..=100.
        assert_eq!(judge_cpu(&reading(2.5), &t).value, Some(100.0));
        let broken = judge_cpu(&Err("no /proc".into()), &t);
        assert_eq!((broken.status, broken.value), (Status::Warn, None));
    }

    #[test]
    fn memory_thresholds() {
        let t = thresholds(); // warn 85, fail 95
        let reading = |available: u64| {
            Ok(MemoryReading {
                total_bytes: 1000 << 20,
                available_bytes: available << 20,
                rss_bytes: 300 << 20,
            })
        };
        let c = judge_memory(&reading(500), &t);
        assert_eq!((c.status, c.value), (Status::Pass, Some(50.0)));
        assert!(
            c.detail.contains("orderd resident 300.0 MiB"),
            "{}",
            c.detail
        );
        assert_eq!(judge_memory(&reading(151), &t).status, Status::Pass);
        assert_eq!(judge_memory(&reading(150), &t).status, Status::Warn);
        assert_eq!(judge_memory(&reading(50), &t).status, Status::Fail);
        let mut zero = t.clone();
        zero.memory_warn_percent = 0;
        zero.memory_fail_percent = 0;
        assert_eq!(judge_memory(&reading(1000), &zero).status, Status::Fail);
        assert_eq!(judge_memory(&Err("x".into()), &t).status, Status::Warn);
    }

    fn disk(role: &'static str, free: u64, device: u64) -> DiskReading {
        DiskReading {
            role,
            path: format!("/{role}"),
            missing: false,
            space: Ok(DiskSpace {
                total_bytes: 1000,
                free_bytes: free,
                device,
            }),
        }
    }

    #[test]
    fn disk_thresholds_per_filesystem() {
        let t = thresholds(); // warn at 15% free, fail at 5%
        let c = judge_disk(&[disk("data dir", 500, 1), disk("backup dir", 400, 1)], &t);
        assert_eq!((c.status, c.value), (Status::Pass, Some(50.0)));
        assert!(
            c.detail.contains("on the same filesystem as the data dir"),
            "{}",
            c.detail
        );
        // Another filesystem counts on its own; the value is the lowest.
        let c = judge_disk(&[disk("data dir", 500, 1), disk("backup dir", 150, 2)], &t);
        assert_eq!((c.status, c.value), (Status::Warn, Some(15.0)));
        let c = judge_disk(&[disk("data dir", 50, 1), disk("backup dir", 900, 2)], &t);
        assert_eq!((c.status, c.value), (Status::Fail, Some(5.0)));
        assert_eq!(
            judge_disk(&[disk("data dir", 151, 1)], &t).status,
            Status::Pass
        );
        let mut all = t.clone();
        all.disk_free_warn_percent = 100;
        all.disk_free_fail_percent = 100;
        assert_eq!(
            judge_disk(&[disk("data dir", 1000, 1)], &all).status,
            Status::Fail
        );
        let broken = DiskReading {
            space: Err("EIO".into()),
            ..disk("data dir", 0, 1)
        };
        assert_eq!(judge_disk(&[broken], &t).status, Status::Fail);
        let empty = judge_disk(&[disk("data dir", 0, 1)], &t);
        assert_eq!(empty.status, Status::Fail);
        assert_eq!(judge_disk(&[], &t).status, Status::Fail);
    }

    fn storage_ok() -> StorageReading {
        StorageReading {
            read: Ok(()),
            health: Ok(Some(StorageHealth::default())),
            writes_failing: false,
        }
    }

    #[test]
    fn storage_fails_on_failing_stopped_or_unreadable_storage_and_warns_on_backlog() {
        let t = thresholds();
        let c = judge_storage(&storage_ok(), &t);
        assert_eq!((c.status, c.value), (Status::Pass, Some(0.0)));
        let failing = StorageReading {
            writes_failing: true,
            ..storage_ok()
        };
        let c = judge_storage(&failing, &t);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("writes are failing"), "{}", c.detail);
        let unreadable = StorageReading {
            read: Err("IO error".into()),
            ..storage_ok()
        };
        assert_eq!(judge_storage(&unreadable, &t).status, Status::Fail);
        let no_properties = StorageReading {
            health: Err("IO error".into()),
            ..storage_ok()
        };
        assert_eq!(judge_storage(&no_properties, &t).status, Status::Fail);
        let with = |health: StorageHealth| StorageReading {
            health: Ok(Some(health)),
            ..storage_ok()
        };
        let stopped = with(StorageHealth {
            write_stopped: true,
            ..Default::default()
        });
        assert_eq!(judge_storage(&stopped, &t).status, Status::Fail);
        let slowed = with(StorageHealth {
            delayed_write_rate_bytes_per_s: 16 << 20,
            ..Default::default()
        });
        let c = judge_storage(&slowed, &t);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("slowed to 16.0 MiB/s"), "{}", c.detail);
        let backlog = |bytes: u64| {
            judge_storage(
                &with(StorageHealth {
                    pending_compaction_bytes: bytes,
                    ..Default::default()
                }),
                &t,
            )
        };
        assert_eq!(
            backlog(t.pending_compaction_warn_bytes - 1).status,
            Status::Pass
        );
        let c = backlog(t.pending_compaction_warn_bytes);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.value, Some(t.pending_compaction_warn_bytes as f64));
        // A store without figures (in memory) still passes on a good read.
        let memory = StorageReading {
            health: Ok(None),
            ..storage_ok()
        };
        let c = judge_storage(&memory, &t);
        assert_eq!((c.status, c.value), (Status::Pass, None));
    }

    #[test]
    fn listeners_fail_when_one_does_not_answer_or_tcp_is_not_bound() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        let t: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let up = |addr, ms| ListenerReading {
            addr,
            answer: Ok(Duration::from_millis(ms)),
        };
        let c = judge_listeners(&[up(a, 2), up(b, 5)], Some(&up(t, 7)));
        assert_eq!((c.status, c.value), (Status::Pass, Some(7.0)));
        assert!(
            c.detail
                .contains("TCP 127.0.0.1:7070 answered PING in 7.0 ms"),
            "{}",
            c.detail
        );
        let down = |addr| ListenerReading {
            addr,
            answer: Err("connect: refused".into()),
        };
        let c = judge_listeners(&[up(a, 2), down(b)], Some(&up(t, 1)));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("[::1]:8080 does not answer"),
            "{}",
            c.detail
        );
        let c = judge_listeners(&[up(a, 2)], Some(&down(t)));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("TCP 127.0.0.1:7070 does not answer"),
            "{}",
            c.detail
        );
        let c = judge_listeners(&[up(a, 2)], None);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(judge_listeners(&[], Some(&up(t, 1))).status, Status::Fail);
    }

    #[test]
    fn shards_fail_when_one_failed_and_warn_when_restarting_or_full() {
        let t = thresholds(); // mailbox warn at 80%
        let c = judge_shards(
            &[
                shard(0, ShardState::Running, 0),
                shard(1, ShardState::Running, 3),
            ],
            100,
            &t,
        );
        assert_eq!((c.status, c.value), (Status::Pass, Some(0.0)));
        assert!(
            c.detail.starts_with("2 of 2 shards running"),
            "{}",
            c.detail
        );
        assert!(
            c.detail.contains("shard 1 running, mailbox 3"),
            "{}",
            c.detail
        );
        let c = judge_shards(
            &[
                shard(0, ShardState::Restarting, 0),
                shard(1, ShardState::Running, 0),
            ],
            100,
            &t,
        );
        assert_eq!((c.status, c.value), (Status::Warn, Some(1.0)));
        let c = judge_shards(
            &[
                shard(0, ShardState::Restarting, 0),
                shard(1, ShardState::Failed, 0),
            ],
            100,
            &t,
        );
        assert_eq!((c.status, c.value), (Status::Fail, Some(2.0)));
        assert!(c.detail.contains("shard 1 failed"), "{}", c.detail);
        assert_eq!(
            judge_shards(&[shard(0, ShardState::Running, 79)], 100, &t).status,
            Status::Pass
        );
        let full = judge_shards(&[shard(0, ShardState::Running, 80)], 100, &t);
        assert_eq!(full.status, Status::Warn);
        assert!(
            full.detail.contains("over the warning level"),
            "{}",
            full.detail
        );
        assert_eq!(judge_shards(&[], 100, &t).status, Status::Fail);
    }

    #[test]
    fn backups_warn_until_one_exists_then_age_and_verification_count() {
        let t = thresholds(); // warn 93600 s, fail 180000 s
        let none = BackupStatus::default();
        for c in [judge_backup_age(&none, 0, &t), judge_backup_verified(&none)] {
            assert_eq!((c.status, c.value), (Status::Warn, None));
            assert!(
                c.detail.contains("no backup has been taken yet"),
                "{}",
                c.detail
            );
        }
        let now_us = 1_700_000_000_000_000;
        let taken = |age_s: i64, verification| BackupStatus {
            newest: Some(BackupInfo {
                id: "bak_1".into(),
                created_at_us: now_us - age_s * 1_000_000,
                verification,
            }),
            last_drill: None,
        };
        let c = judge_backup_age(&taken(3600, None), now_us, &t);
        assert_eq!((c.status, c.value), (Status::Pass, Some(3600.0)));
        assert_eq!(
            judge_backup_age(&taken(93_600, None), now_us, &t).status,
            Status::Warn
        );
        assert_eq!(
            judge_backup_age(&taken(180_000, None), now_us, &t).status,
            Status::Fail
        );
        let unverified = judge_backup_verified(&taken(10, None));
        assert_eq!((unverified.status, unverified.value), (Status::Warn, None));
        let drill = |verified| {
            Some(Verification {
                at_us: now_us,
                verified,
                detail: "digests match".into(),
            })
        };
        let ok = judge_backup_verified(&taken(10, drill(true)));
        assert_eq!((ok.status, ok.value), (Status::Pass, Some(1.0)));
        let bad = judge_backup_verified(&taken(10, drill(false)));
        assert_eq!((bad.status, bad.value), (Status::Fail, Some(0.0)));
    }

    #[test]
    fn proc_files_are_parsed() {
        // The command name may hold spaces and parentheses.
        let stat = "4242 (orderd (x) y) S 1 4242 4242 0 -1 4194560 2120 0 0 0 250 117 0 0 20 0 9 0 5 1 2 3";
        assert_eq!(parse_stat_ticks(stat), Some(367));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let meminfo = "MemTotal:       16318412 kB\nMemFree:         1000000 kB\nMemAvailable:    8159206 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((16_318_412 * 1024, 8_159_206 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(
            parse_statm_resident_pages("1000 250 30 1 0 400 0"),
            Some(250)
        );
    }

    #[test]
    fn readings_of_this_machine_are_sane() {
        let memory = read_memory().unwrap();
        assert!(memory.total_bytes > 0 && memory.available_bytes <= memory.total_bytes);
        assert!(memory.rss_bytes > 0);
        let before = process_cpu_ticks().unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu_ticks().unwrap() >= before);

        let dir = tempfile::tempdir().unwrap();
        let data = read_disk("data dir", dir.path());
        assert!(!data.missing);
        let space = data.space.clone().unwrap();
        assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes);
        // A directory not created yet is measured at its nearest parent, on the same device.
        let later = read_disk("backup dir", &dir.path().join("backups/daily"));
        assert!(later.missing);
        assert_eq!(later.space.unwrap().device, space.device);
        let c = judge_disk(
            &[data, read_disk("backup dir", &dir.path().join("b"))],
            &thresholds(),
        );
        assert!(
            c.detail
                .contains("(not created yet): on the same filesystem"),
            "{}",
            c.detail
        );
    }

    /// A one-shot HTTP server answering `status_line` to every connection.
    fn answering(status_line: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
                let _ = stream
                    .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes());
            }
        });
        addr
    }

    /// A listener answering every connection's first frame with `PING`'s reply.
    fn answering_ping() -> SocketAddr {
        use orderd_proto::frame::{self, Frame};
        use orderd_proto::tcp::op;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; frame::HEADER_BYTES];
                if stream.read_exact(&mut buf).is_err() {
                    continue;
                }
                let request_id = u64::from_be_bytes(buf[6..14].try_into().unwrap());
                let mut reply = Vec::new();
                frame::encode(
                    &Frame {
                        opcode: op::PING | op::REPLY,
                        request_id,
                        payload: Vec::new(),
                    },
                    &mut reply,
                );
                let _ = stream.write_all(&reply);
            }
        });
        addr
    }

    #[test]
    fn the_tcp_probe_needs_the_ping_reply() {
        let timeout = Duration::from_secs(2);
        assert!(probe_tcp(answering_ping(), timeout, None).is_ok());
        // An HTTP server is not a TCP protocol server.
        let error = probe_tcp(answering("HTTP/1.1 200 OK"), timeout, None).unwrap_err();
        assert!(
            error.contains("not a frame") || error.contains("closed"),
            "{error}"
        );
    }

    #[test]
    fn the_listener_probe_needs_a_200() {
        let timeout = Duration::from_secs(2);
        assert!(probe_http(answering("HTTP/1.1 200 OK"), timeout, None).is_ok());
        let unspecified = answering("HTTP/1.1 200 OK");
        let any: SocketAddr = format!("0.0.0.0:{}", unspecified.port()).parse().unwrap();
        assert!(
            probe_http(any, timeout, None).is_ok(),
            "0.0.0.0 is probed on loopback"
        );
        let error =
            probe_http(answering("HTTP/1.1 503 Service Unavailable"), timeout, None).unwrap_err();
        assert!(error.contains("503"), "{error}");
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        assert!(probe_http(closed, timeout, None)
            .unwrap_err()
            .starts_with("connect"));
    }

    /// A real engine: every check is reported; failed checks at a scheduled run write one
    /// incident each, kept open while they fail and marked recovered when they pass.
    #[actix_rt::test]
    async fn inspections_report_every_check_and_scheduled_failures_become_incidents() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load_with_env(
            None,
            figment::providers::Env::prefixed("ORDERD_TEST_UNSET__"),
        )
        .unwrap();
        config.storage.data_dir = dir.path().join("data");
        config.backup.dir = dir.path().join("backups");
        config.engine.shards = 2;
        config.inspection.cpu_sample_ms = 50;
        config.inspection.memory_warn_percent = 0;
        config.inspection.memory_fail_percent = 0;
        // The machine's real free space must not decide this test: a nearly full shared
        // disk would add a second failing check.
        config.inspection.disk_free_warn_percent = 0;
        config.inspection.disk_free_fail_percent = 0;
        let engine = Engine::open(orderd_service::engine_config(&config)).unwrap();
        let inspector = Arc::new(Inspector::new(
            tokio::sync::watch::channel(Arc::new(config.clone())).1,
            engine.clone(),
        ));
        inspector.set_http_addrs(vec![answering("HTTP/1.1 200 OK")]);
        inspector.set_tcp_addr(answering_ping());

        let report = inspector.clone().inspect().await.unwrap();
        let names: Vec<_> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(names, CHECK_NAMES);
        let status = |name: &str| {
            report
                .checks
                .iter()
                .find(|c| c.name == name)
                .unwrap()
                .status
        };
        assert_eq!(status("memory"), Status::Fail, "forced by 0% thresholds");
        assert_eq!(status("storage"), Status::Pass, "{report:?}");
        assert_eq!(status("shards"), Status::Pass);
        assert_eq!(status("listeners"), Status::Pass, "{report:?}");
        assert_eq!(status("backup_age"), Status::Warn);
        assert_eq!(status("backup_verified"), Status::Warn);
        assert_eq!(report.overall(), Status::Fail);
        assert!(report.duration_ms >= 50);
        assert!(inspector.last_scheduled().is_none());

        let incidents_of = |engine: &Engine| -> Vec<orderd_engine::Incident> {
            engine
                .incidents()
                .list(None, 100)
                .unwrap()
                .into_iter()
                .filter(|i| i.kind == INCIDENT_KIND)
                .collect()
        };
        let scheduled = inspector.clone();
        let first = report.clone();
        tokio::task::spawn_blocking(move || scheduled.after_scheduled(first))
            .await
            .unwrap();
        let found = incidents_of(&engine);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].component, "inspection/memory");
        assert!(found[0].detail.contains("(value: "), "{}", found[0].detail);
        assert!(found[0].recovered_at_us.is_none());
        assert_eq!(inspector.last_scheduled().unwrap().overall(), Status::Fail);
        // Still failing: no second incident.
        let scheduled = inspector.clone();
        let again = report.clone();
        tokio::task::spawn_blocking(move || scheduled.after_scheduled(again))
            .await
            .unwrap();
        assert_eq!(incidents_of(&engine).len(), 1);
        // Passing again: the incident is marked recovered.
        let mut healed = report.clone();
        for check in &mut healed.checks {
            check.status = Status::Pass;
        }
        let scheduled = inspector.clone();
        tokio::task::spawn_blocking(move || scheduled.after_scheduled(healed))
            .await
            .unwrap();
        let found = incidents_of(&engine);
        assert_eq!(found.len(), 1);
        assert!(found[0].recovered_at_us.is_some());

        let wire = response(&report, inspector.last_scheduled().as_ref());
        assert_eq!(wire.overall, "fail");
        assert_eq!(wire.checks.len(), CHECK_NAMES.len());
        assert_eq!(wire.last_scheduled.unwrap().overall, "pass");
        drop(inspector);
        engine.shutdown().await;
    }
}

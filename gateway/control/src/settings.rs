//! The registry of settings that change management may change (type, bounds, risk, live or
//! restart), and [`Live`]: the effective configuration. `Live` publishes it on a
//! `tokio::sync::watch` channel ([`Live::subscribe`]); every running component that has live
//! settings (the rate limiter, the engine's tunables, inspection, backups) holds a receiver and
//! takes a new value from it, so this module knows none of them. The log filter is the one
//! thing `Live` applies itself (it holds the subscriber's reload handle).
//!
//! A setting is a `section.key` of the configuration (`config/orderd.toml`); its value is
//! changed on the whole configuration, which is validated again (so cross-key rules, such as
//! warn below fail, hold). Settings that need a restart take the new value at the next start
//! (the value an applied change set is kept in storage by [`crate::changes`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use orderd_config::Config;

/// How much a wrong value of a setting can hurt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// The type of a setting's value.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A JSON integer within `min..=max`.
    Integer { min: i64, max: i64 },
    /// A `tracing` filter (a level, or directives).
    LogFilter,
}

/// One setting of the registry.
#[derive(Debug)]
pub struct SettingDef {
    pub name: &'static str,
    pub kind: Kind,
    pub risk: Risk,
    /// Applies while running; false: at the next start.
    pub live: bool,
    /// What it affects, for the assessment and `GET /v1/ops/config`.
    pub description: &'static str,
}

const fn int(
    name: &'static str,
    min: i64,
    max: i64,
    risk: Risk,
    live: bool,
    description: &'static str,
) -> SettingDef {
    SettingDef {
        name,
        kind: Kind::Integer { min, max },
        risk,
        live,
        description,
    }
}

use Risk::{High, Low, Medium};

const DAY_S: i64 = 86_400;
const MIB: i64 = 1024 * 1024;

/// Every setting change management may change, by name.
pub const REGISTRY: &[SettingDef] = &[
    int(
        "audit.queue_capacity",
        1,
        1_000_000,
        Medium,
        false,
        "Audit entries waiting for the audit writer (and the most in one group commit).",
    ),
    int(
        "backup.interval_s",
        0,
        30 * DAY_S,
        Medium,
        true,
        "Seconds between scheduled backups (0: none).",
    ),
    int(
        "backup.offsite_attempts",
        1,
        20,
        Low,
        true,
        "Attempts of an off-site upload before the copy is marked failed.",
    ),
    int(
        "backup.offsite_retry_base_ms",
        1,
        600_000,
        Low,
        true,
        "Wait before the second off-site attempt, doubled for each further one.",
    ),
    int(
        "backup.retention_count",
        1,
        10_000,
        High,
        true,
        "Backups kept locally and off-site; older ones are DELETED after the next backup.",
    ),
    int(
        "backup.verify_interval_s",
        0,
        30 * DAY_S,
        Low,
        true,
        "Seconds between scheduled restore drills of the newest backup (0: none).",
    ),
    int(
        "engine.batch_events_max",
        1,
        65_536,
        Medium,
        true,
        "Most events in one log batch (one group commit): throughput against latency.",
    ),
    int(
        "engine.request_timeout_ms",
        100,
        600_000,
        Medium,
        true,
        "Deadline of one request inside the engine; a placement not decided by then is aborted.",
    ),
    int(
        "http.body_limit_bytes",
        1024,
        16 * MIB,
        Medium,
        false,
        "Largest HTTP request body accepted.",
    ),
    int(
        "http.max_connections",
        1,
        1_000_000,
        Medium,
        false,
        "HTTP connections accepted per worker thread.",
    ),
    int(
        "http.rate_limit_per_key_per_s",
        0,
        1_000_000,
        Medium,
        true,
        "Requests per second allowed per API key, HTTP and TCP (0: no limit).",
    ),
    int(
        "inspection.backup_age_fail_s",
        60,
        365 * DAY_S,
        Low,
        true,
        "Age of the newest backup at which the backup_age check fails.",
    ),
    int(
        "inspection.backup_age_warn_s",
        60,
        365 * DAY_S,
        Low,
        true,
        "Age of the newest backup at which the backup_age check warns.",
    ),
    int(
        "inspection.cpu_fail_percent",
        0,
        100,
        Low,
        true,
        "Process CPU use at which the cpu check fails.",
    ),
    int(
        "inspection.cpu_warn_percent",
        0,
        100,
        Low,
        true,
        "Process CPU use at which the cpu check warns.",
    ),
    int(
        "inspection.disk_free_fail_percent",
        0,
        100,
        Low,
        true,
        "Free disk space at or below which the disk check fails.",
    ),
    int(
        "inspection.disk_free_warn_percent",
        0,
        100,
        Low,
        true,
        "Free disk space at or below which the disk check warns.",
    ),
    int(
        "inspection.interval_s",
        1,
        30 * DAY_S,
        Low,
        true,
        "Seconds between scheduled health inspections.",
    ),
    int(
        "inspection.latency_p99_fail_ms",
        1,
        600_000,
        Low,
        true,
        "p99 request latency at which the latency check fails.",
    ),
    int(
        "inspection.latency_p99_warn_ms",
        1,
        600_000,
        Low,
        true,
        "p99 request latency at which the latency check warns.",
    ),
    int(
        "inspection.mailbox_warn_percent",
        0,
        100,
        Low,
        true,
        "Shard mailbox fill at which the shards check warns.",
    ),
    int(
        "inspection.memory_fail_percent",
        0,
        100,
        Low,
        true,
        "System memory in use at which the memory check fails.",
    ),
    int(
        "inspection.memory_warn_percent",
        0,
        100,
        Low,
        true,
        "System memory in use at which the memory check warns.",
    ),
    int(
        "inspection.pending_compaction_warn_bytes",
        1,
        1 << 50,
        Low,
        true,
        "Bytes RocksDB still has to compact at which the storage check warns.",
    ),
    SettingDef {
        name: "log.level",
        kind: Kind::LogFilter,
        risk: Low,
        live: true,
        description:
            "Log filter: a level or tracing directives (RUST_LOG, when set at start, is replaced).",
    },
    int(
        "storage.flush_interval_ms",
        1,
        1000,
        Medium,
        true,
        "Interval between fsyncs in async durability (the window a machine crash may lose).",
    ),
    int(
        "supervisor.max_restarts",
        0,
        1000,
        Medium,
        true,
        "Automatic restarts of one shard within supervisor.window_s before it is left failed.",
    ),
    int(
        "supervisor.window_s",
        1,
        DAY_S,
        Low,
        true,
        "Window of the restart intensity, in seconds.",
    ),
    int(
        "tcp.batch_orders_max",
        1,
        orderd_config::TCP_BATCH_ORDERS_MAX as i64,
        Medium,
        false,
        "Most orders in one TCP PLACE_ORDERS frame.",
    ),
    int(
        "tcp.idle_timeout_ms",
        1000,
        86_400_000,
        Low,
        false,
        "A TCP connection idle this long is closed.",
    ),
    int(
        "tcp.max_connections",
        1,
        1_000_000,
        Medium,
        false,
        "TCP connections served at once.",
    ),
    int(
        "tcp.max_frame_bytes",
        1024,
        16 * MIB,
        Medium,
        false,
        "Largest TCP frame accepted.",
    ),
    int(
        "tcp.max_in_flight",
        1,
        65_536,
        Medium,
        false,
        "Requests in flight per TCP connection.",
    ),
];

/// The setting of test builds (failpoints) that makes every watched HTTP request slower.
pub const TEST_ADDED_LATENCY: SettingDef = int(
    "test.added_latency_ms",
    0,
    10_000,
    High,
    true,
    "TEST BUILDS ONLY: milliseconds added to every HTTP request outside /v1/ops (to make latency worse on purpose).",
);

/// Every setting of this build, sorted by name.
pub fn all() -> impl Iterator<Item = &'static SettingDef> {
    let test: &'static [SettingDef] = if orderd_engine::failpoint::ENABLED {
        std::slice::from_ref(&TEST_ADDED_LATENCY)
    } else {
        &[]
    };
    REGISTRY.iter().chain(test.iter())
}

/// The setting named `name`, if this build has it.
pub fn find(name: &str) -> Option<&'static SettingDef> {
    all().find(|def| def.name == name)
}

/// The JSON pointer of a setting in the configuration's JSON form.
fn pointer(name: &str) -> String {
    format!("/{}", name.replace('.', "/"))
}

/// Checks a value against a setting's type and bounds; the value as stored.
pub fn check_value(def: &SettingDef, value: &Value) -> Result<Value, String> {
    match def.kind {
        Kind::Integer { min, max } => {
            let Some(number) = value.as_i64() else {
                return Err(format!(
                    "{} takes an integer in {min}..={max}, not {value}",
                    def.name
                ));
            };
            if !(min..=max).contains(&number) {
                return Err(format!(
                    "{} must be in {min}..={max}; {number} is out of bounds",
                    def.name
                ));
            }
            Ok(Value::from(number))
        }
        Kind::LogFilter => {
            let Some(text) = value.as_str() else {
                return Err(format!(
                    "{} takes a string (a level or tracing directives), not {value}",
                    def.name
                ));
            };
            if text.trim().is_empty() || text.len() > 1000 {
                return Err(format!("{} must be 1..=1000 characters", def.name));
            }
            tracing_subscriber::EnvFilter::try_new(text)
                .map_err(|error| format!("{}: {text:?} is not a filter: {error}", def.name))?;
            Ok(Value::from(text))
        }
    }
}

/// `config` with `name` set to `value`, validated as a whole.
pub fn with_value(config: &Config, name: &str, value: &Value) -> Result<Config, String> {
    let mut json = serde_json::to_value(config).map_err(|e| e.to_string())?;
    let slot = json
        .pointer_mut(&pointer(name))
        .ok_or_else(|| format!("{name} is not a configuration key"))?;
    *slot = value.clone();
    let changed: Config = serde_json::from_value(json).map_err(|e| format!("{name}: {e}"))?;
    changed.validate().map_err(|e| e.to_string())?;
    Ok(changed)
}

/// The value of `name` in `config`.
fn value_in(config: &Config, name: &str) -> Value {
    serde_json::to_value(config)
        .ok()
        .and_then(|json| json.pointer(&pointer(name)).cloned())
        .unwrap_or(Value::Null)
}

/// Replaces the log filter (given by `server::init_tracing`; absent in tests that log
/// elsewhere).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A setting's value as an applied change left it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub value: Value,
    /// The change that set it.
    pub change_id: String,
}

/// The effective configuration, changed only through [`Live::set`].
pub struct Live {
    /// The configuration in effect, published to every component with live settings.
    config: tokio::sync::watch::Sender<Arc<Config>>,
    /// The change that set each setting's running value (absent: the configuration file).
    sources: Mutex<BTreeMap<String, String>>,
    /// Settings that need a restart: the value an applied change set, for the next start.
    pending: Mutex<BTreeMap<String, Override>>,
    test_values: Mutex<BTreeMap<String, Value>>,
    /// Milliseconds the HTTP middleware adds to watched requests (`test.added_latency_ms`,
    /// test builds only).
    added_latency_ms: AtomicU64,
    log_reload: Option<LogReload>,
}

impl Live {
    /// The configuration as it starts: `config` with the stored `overrides` applied (each
    /// validated; one that no longer validates is skipped with an error in the log).
    /// `log_reload` replaces the log filter: at once when an override set `log.level`, and
    /// whenever a change sets it.
    pub fn start(
        mut config: Config,
        overrides: &BTreeMap<String, Override>,
        log_reload: Option<LogReload>,
    ) -> Live {
        let mut sources = BTreeMap::new();
        let mut test_values = BTreeMap::new();
        for (name, value) in overrides {
            let Some(def) = find(name) else {
                tracing::error!(message = "A change set a setting this build does not have; ignored.", setting = %name, change_id = %value.change_id);
                continue;
            };
            let checked = check_value(def, &value.value).and_then(|v| {
                if name.starts_with("test.") {
                    test_values.insert(name.clone(), v);
                    Ok(())
                } else {
                    with_value(&config, name, &v).map(|changed| config = changed)
                }
            });
            match checked {
                Ok(()) => {
                    sources.insert(name.clone(), value.change_id.clone());
                }
                Err(error) => {
                    tracing::error!(message = "A value set by a change is no longer valid; the configured value stays.", setting = %name, change_id = %value.change_id, %error)
                }
            }
        }
        let added_latency_ms = match test_values.get(TEST_ADDED_LATENCY.name) {
            Some(Value::Number(ms)) => ms.as_u64().unwrap_or(0),
            _ => 0,
        };
        let live = Live {
            config: tokio::sync::watch::Sender::new(Arc::new(config)),
            sources: Mutex::new(sources),
            pending: Mutex::new(BTreeMap::new()),
            test_values: Mutex::new(test_values),
            added_latency_ms: AtomicU64::new(added_latency_ms),
            log_reload,
        };
        if overrides.contains_key("log.level") {
            live.reload_log(&live.config().log.level);
        }
        live
    }

    /// The configuration in effect now.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// A receiver of the configuration in effect: it sees every value [`Live::set`] applies
    /// from then on (`changed`, `borrow`). A component with live settings holds one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    /// The delay `test.added_latency_ms` sets (0 in a normal build).
    pub fn added_latency_ms(&self) -> u64 {
        self.added_latency_ms.load(Ordering::Relaxed)
    }

    /// Sets the log filter to `level`.
    fn reload_log(&self, level: &str) {
        if let Some(reload) = &self.log_reload {
            if let Err(error) = reload(level) {
                tracing::error!(message = "Cannot change the log filter.", %error);
            }
        }
    }

    /// The value in effect now.
    pub fn running(&self, def: &SettingDef) -> Value {
        if def.name.starts_with("test.") {
            return self
                .test_values
                .lock()
                .expect("test values")
                .get(def.name)
                .cloned()
                .unwrap_or(Value::from(0));
        }
        value_in(&self.config(), def.name)
    }

    /// The value a change is measured against: the pending value of a setting that needs a
    /// restart, else the running one.
    pub fn target(&self, def: &SettingDef) -> (Value, Option<String>) {
        if let Some(pending) = self.pending.lock().expect("pending").get(def.name) {
            return (pending.value.clone(), Some(pending.change_id.clone()));
        }
        let source = self.sources.lock().expect("sources").get(def.name).cloned();
        (self.running(def), source)
    }

    /// Checks `value` for `def`: type, bounds, and the whole configuration with it.
    pub fn check(&self, def: &SettingDef, value: &Value) -> Result<Value, String> {
        let value = check_value(def, value)?;
        if !def.name.starts_with("test.") {
            with_value(&self.config(), def.name, &value)?;
        }
        Ok(value)
    }

    /// Sets a setting (checked before with [`Live::check`]): a live one now, on the running
    /// components; one that needs a restart for the next start. `source` is the change that
    /// set it, `None` when the value is the configured one again.
    pub fn set(&self, def: &SettingDef, value: &Value, source: Option<&str>) -> Result<(), String> {
        let value = check_value(def, value)?;
        if !def.live {
            let mut pending = self.pending.lock().expect("pending");
            let running = self.running(def);
            let running_source = self.sources.lock().expect("sources").get(def.name).cloned();
            if value == running && source.map(str::to_string) == running_source {
                pending.remove(def.name);
            } else {
                pending.insert(
                    def.name.to_string(),
                    Override {
                        value,
                        change_id: source.unwrap_or("config").to_string(),
                    },
                );
            }
            return Ok(());
        }
        if def.name.starts_with("test.") {
            if def.name == TEST_ADDED_LATENCY.name {
                self.added_latency_ms
                    .store(value.as_u64().unwrap_or(0), Ordering::Relaxed);
            }
            self.test_values
                .lock()
                .expect("test values")
                .insert(def.name.to_string(), value);
        } else {
            // Read, change and publish under the channel's lock, so that two changes at once
            // both hold; every receiver sees the new configuration from now on.
            let mut refused = None;
            self.config
                .send_if_modified(|config| match with_value(config, def.name, &value) {
                    Ok(changed) => {
                        *config = Arc::new(changed);
                        true
                    }
                    Err(error) => {
                        refused = Some(error);
                        false
                    }
                });
            if let Some(error) = refused {
                return Err(error);
            }
            if def.name == "log.level" {
                self.reload_log(&self.config().log.level);
            }
        }
        let mut sources = self.sources.lock().expect("sources");
        match source {
            Some(id) => sources.insert(def.name.to_string(), id.to_string()),
            None => sources.remove(def.name),
        };
        Ok(())
    }

    /// Every setting with its values, for `GET /v1/ops/config`.
    pub fn items(&self) -> Vec<orderd_proto::SettingResponse> {
        let pending = self.pending.lock().expect("pending").clone();
        let sources = self.sources.lock().expect("sources").clone();
        let mut items: Vec<_> = all()
            .map(|def| {
                let (kind, min, max) = match def.kind {
                    Kind::Integer { min, max } => ("integer", Some(min), Some(max)),
                    Kind::LogFilter => ("string", None, None),
                };
                orderd_proto::SettingResponse {
                    setting: def.name.to_string(),
                    value: self.running(def),
                    kind: kind.to_string(),
                    min,
                    max,
                    risk: def.risk.as_str().to_string(),
                    live: def.live,
                    description: def.description.to_string(),
                    change_id: sources.get(def.name).cloned(),
                    pending_value: pending.get(def.name).map(|p| p.value.clone()),
                }
            })
            .collect();
        items.sort_by(|a, b| a.setting.cmp(&b.setting));
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::load_with_env(
            None,
            figment::providers::Env::prefixed("ORDERD_SETTINGS_TEST__"),
        )
        .unwrap()
    }

    #[test]
    fn every_registered_setting_is_a_key_with_a_valid_default() {
        let config = config();
        let mut names: Vec<_> = REGISTRY.iter().map(|d| d.name).collect();
        let sorted = {
            let mut n = names.clone();
            n.sort();
            n
        };
        assert_eq!(names, sorted, "REGISTRY is sorted by name");
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "no name twice");
        for def in REGISTRY {
            let value = value_in(&config, def.name);
            assert!(!value.is_null(), "{} is not a configuration key", def.name);
            check_value(def, &value).unwrap_or_else(|e| {
                panic!("the default of {} is out of its bounds: {e}", def.name)
            });
            with_value(&config, def.name, &value).unwrap();
        }
    }

    #[test]
    fn values_are_checked_by_type_bounds_and_the_whole_config() {
        let config = config();
        let rate = find("http.rate_limit_per_key_per_s").unwrap();
        assert_eq!(check_value(rate, &Value::from(5)).unwrap(), Value::from(5));
        assert!(check_value(rate, &Value::from(-1))
            .unwrap_err()
            .contains("out of bounds"));
        assert!(check_value(rate, &Value::from(1_000_001)).is_err());
        assert!(check_value(rate, &Value::from("5"))
            .unwrap_err()
            .contains("integer"));
        assert!(check_value(rate, &Value::from(2.5)).is_err());
        let level = find("log.level").unwrap();
        assert!(check_value(level, &Value::from("debug,orderd_engine=trace")).is_ok());
        assert!(check_value(level, &Value::from("=[")).is_err());
        assert!(check_value(level, &Value::from(3)).is_err());
        // Within its own bounds, but above the fail threshold: the whole config refuses it.
        let warn = find("inspection.cpu_warn_percent").unwrap();
        let error = with_value(&config, warn.name, &Value::from(99)).unwrap_err();
        assert!(error.contains("cpu_fail_percent"), "{error}");
        assert!(find("no.such").is_none());
        assert_eq!(
            find("test.added_latency_ms").is_some(),
            orderd_engine::failpoint::ENABLED
        );
    }

    #[test]
    fn live_set_changes_the_running_value_and_a_restart_setting_waits() {
        let live = Live::start(config(), &BTreeMap::new(), None);
        let batch = find("engine.batch_events_max").unwrap();
        live.set(batch, &Value::from(64), Some("chg_000001"))
            .unwrap();
        assert_eq!(live.running(batch), Value::from(64));
        assert_eq!(live.config().engine.batch_events_max, 64);
        assert_eq!(live.target(batch).1.as_deref(), Some("chg_000001"));

        let body = find("http.body_limit_bytes").unwrap();
        let before = live.running(body);
        live.set(body, &Value::from(4096), Some("chg_000002"))
            .unwrap();
        assert_eq!(live.running(body), before, "not before a restart");
        assert_eq!(live.target(body).0, Value::from(4096));
        let item = live
            .items()
            .into_iter()
            .find(|i| i.setting == body.name)
            .unwrap();
        assert_eq!(item.pending_value, Some(Value::from(4096)));
        // Rolled back to the configured value: nothing pending any more.
        live.set(body, &before, None).unwrap();
        assert_eq!(live.target(body), (before, None));

        // At the next start the stored override is the running value.
        let mut overrides = BTreeMap::new();
        overrides.insert(
            body.name.to_string(),
            Override {
                value: Value::from(4096),
                change_id: "chg_000002".into(),
            },
        );
        overrides.insert(
            "inspection.cpu_warn_percent".to_string(),
            Override {
                value: Value::from(99),
                change_id: "chg_000003".into(),
            },
        );
        let restarted = Live::start(config(), &overrides, None);
        assert_eq!(restarted.config().http.body_limit_bytes, 4096);
        assert_eq!(
            restarted.config().inspection.cpu_warn_percent,
            config().inspection.cpu_warn_percent,
            "an override that no longer validates is skipped"
        );
    }
}

//! Change requests (`/v1/ops/changes`): request → automatic assessment → approval by another
//! admin → apply → a watch window that compares error rate and p99 latency with the window
//! before, rolling the change back by itself (and writing an incident) when they break its
//! bounds → closed. Manual rollback at any time after apply.
//!
//! Every step is persisted in `control` (the record, and the value an applied change left, so
//! that a restart keeps it) before it is answered, and written to the audit chain. A restart
//! during a watch window resumes the watch. Transitions are serialized by one lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orderd_engine::Engine;
use orderd_proto::{
    AssessmentResponse, ChangeResponse, ChangeStepResponse, WatchBoundsResponse, WatchResponse,
    WindowStatsResponse,
};
use orderd_storage::{Family, Storage, Write};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::{self, Live, Override, Risk};
use crate::window::{self, RequestWindow, WindowStats};
use orderd_config::ChangesConfig;
use orderd_service::audit::AuditLog;
use orderd_service::auth::Caller;
use orderd_service::idem::{Age, Entry, IdempotencyKey, Keys};
use orderd_service::roles::Role;
use orderd_service::wire;
use orderd_service::ApiError;

const RECORD_PREFIX: &[u8] = b"changes/record/";
const OVERRIDE_PREFIX: &[u8] = b"changes/override/";
/// Longest `reason` and `rollback_plan`, in characters.
pub const TEXT_CHARS_MAX: usize = 1000;
/// The actor of the server's own steps.
pub const SYSTEM_ACTOR: &str = "system";

/// Where a change is in its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Applied,
    Closed,
    RolledBack,
    AutoRolledBack,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Applied => "applied",
            Status::Closed => "closed",
            Status::RolledBack => "rolled_back",
            Status::AutoRolledBack => "auto_rolled_back",
        }
    }
}

/// Request statistics as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub p99_us: u64,
}

impl From<WindowStats> for Stats {
    fn from(s: WindowStats) -> Stats {
        Stats {
            requests: s.requests,
            errors: s.errors,
            p99_us: s.p99_us,
        }
    }
}

impl Stats {
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} requests, error rate {:.2} %, p99 {:.1} ms",
            self.requests,
            self.error_rate() * 100.0,
            self.p99_us as f64 / 1000.0
        )
    }
}

/// The bounds a watch holds a change to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub error_rate_increase_max_percent: f64,
    pub p99_increase_max_percent: u64,
    pub p99_increase_min_ms: u64,
    pub min_requests: u64,
}

impl Bounds {
    pub fn from_config(config: &ChangesConfig) -> Bounds {
        Bounds {
            error_rate_increase_max_percent: config.watch_error_rate_increase_max_percent,
            p99_increase_max_percent: config.watch_p99_increase_max_percent,
            p99_increase_min_ms: config.watch_p99_increase_min_ms,
            min_requests: config.watch_min_requests,
        }
    }
}

/// The watch of an applied change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    /// None while a setting that needs a restart waits for it.
    pub started_at_us: Option<i64>,
    pub until_us: Option<i64>,
    pub baseline: Stats,
    pub observed: Option<Stats>,
    /// `awaiting_restart`, `watching`, `passed`, `unjudged` (too few requests to judge),
    /// `breached` or `ended` (rolled back by hand).
    pub verdict: String,
}

/// One step of a change's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub actor: String,
    pub at_us: i64,
    pub detail: String,
}

/// A change request, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub number: u64,
    pub status: Status,
    pub setting: String,
    pub old_value: Value,
    /// The change that had set `old_value`; None when it came from the configuration.
    pub old_source: Option<String>,
    pub value: Value,
    pub risk: Risk,
    pub live: bool,
    pub touches: String,
    pub reason: String,
    pub rollback_plan: Option<String>,
    pub requested_by: String,
    /// The requesting key's owner (absent in changes requested before owners existed: then
    /// four eyes compares key ids).
    #[serde(default)]
    pub requested_by_owner: Option<String>,
    pub requested_at_us: i64,
    pub watch_window_s: u64,
    pub bounds: Bounds,
    pub watch: Option<Watch>,
    pub incident_id: Option<String>,
    pub steps: Vec<Step>,
}

/// `chg_000042`.
pub fn display_id(number: u64) -> String {
    format!("chg_{number:06}")
}

/// The number of `chg_…`; None for anything else.
pub fn parse_id(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("chg_")?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Change {
    pub fn id(&self) -> String {
        display_id(self.number)
    }

    fn summary(&self) -> String {
        format!("{}: {} → {}", self.setting, self.old_value, self.value)
    }

    fn step(&mut self, step: &str, actor: &str, detail: impl Into<String>) {
        self.steps.push(Step {
            step: step.to_string(),
            actor: actor.to_string(),
            at_us: now_us(),
            detail: detail.into(),
        });
    }
}

fn now_us() -> i64 {
    orderd_engine::clock::now_us()
}

fn record_key(number: u64) -> Vec<u8> {
    let mut key = RECORD_PREFIX.to_vec();
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn override_key(setting: &str) -> Vec<u8> {
    let mut key = OVERRIDE_PREFIX.to_vec();
    key.extend_from_slice(setting.as_bytes());
    key
}

/// The values applied changes left, by setting: the configuration's overrides at start.
pub fn load_overrides(storage: &dyn Storage) -> anyhow::Result<BTreeMap<String, Override>> {
    let mut overrides = BTreeMap::new();
    let mut bad = None;
    storage.scan_prefix(Family::Control, OVERRIDE_PREFIX, &mut |key, value| {
        let name = String::from_utf8_lossy(&key[OVERRIDE_PREFIX.len()..]).to_string();
        match serde_json::from_slice::<Override>(value) {
            Ok(value) => {
                overrides.insert(name, value);
            }
            Err(error) => bad = Some(format!("{name}: {error}")),
        }
        true
    })?;
    if let Some(error) = bad {
        anyhow::bail!("a stored setting value cannot be read: {error}");
    }
    Ok(overrides)
}

fn load_all(storage: &dyn Storage) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    let mut bad = None;
    storage
        .scan_prefix(Family::Control, RECORD_PREFIX, &mut |_, value| {
            match serde_json::from_slice::<Change>(value) {
                Ok(change) => changes.push(change),
                Err(error) => bad = Some(error.to_string()),
            }
            true
        })
        .map_err(|e| e.to_string())?;
    if let Some(error) = bad {
        return Err(format!("a stored change cannot be read: {error}"));
    }
    Ok(changes)
}

/// Whether `observed` breaks `bounds` against `baseline`: the reason, or None. Nothing is
/// judged before `min_requests` requests were observed.
pub fn judge(baseline: &Stats, observed: &Stats, bounds: &Bounds) -> Option<String> {
    if observed.requests < bounds.min_requests {
        return None;
    }
    let increase_points = (observed.error_rate() - baseline.error_rate()) * 100.0;
    if increase_points > bounds.error_rate_increase_max_percent {
        return Some(format!(
            "error rate {:.2} % against {:.2} % before: up {:.2} points, more than the {} allowed",
            observed.error_rate() * 100.0,
            baseline.error_rate() * 100.0,
            increase_points,
            bounds.error_rate_increase_max_percent
        ));
    }
    let by_percent =
        baseline.p99_us as f64 * (1.0 + bounds.p99_increase_max_percent as f64 / 100.0);
    let by_ms = (baseline.p99_us + bounds.p99_increase_min_ms * 1000) as f64;
    let allowed_us = by_percent.max(by_ms);
    if observed.p99_us as f64 > allowed_us {
        return Some(format!(
            "p99 {:.1} ms against {:.1} ms before: more than the {:.1} ms allowed (+{} % or +{} ms)",
            observed.p99_us as f64 / 1000.0,
            baseline.p99_us as f64 / 1000.0,
            allowed_us / 1000.0,
            bounds.p99_increase_max_percent,
            bounds.p99_increase_min_ms
        ));
    }
    None
}

/// The fields of `POST /v1/ops/changes`, decoded.
pub struct NewChange {
    pub setting: String,
    pub value: Value,
    pub reason: String,
    pub rollback_plan: Option<String>,
    pub watch_window_s: Option<u64>,
}

/// The change service: shared by the routes and the watcher.
pub struct Changes {
    storage: Arc<dyn Storage>,
    engine: Engine,
    live: Arc<Live>,
    audit: Arc<AuditLog>,
    /// What the watch judges: the requests the front doors recorded.
    window: Arc<RequestWindow>,
    config: ChangesConfig,
    /// Serializes every transition; holds the next change number.
    next_number: tokio::sync::Mutex<u64>,
    /// The changes in status `applied` (in or awaiting their watch), by number, with their
    /// setting: what the watcher reads each round, without scanning the whole history.
    applied: std::sync::Mutex<BTreeMap<u64, String>>,
}

/// Ends the watcher ([`Changes::stop`]).
pub struct Watcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Stops the watcher after its current round.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Changes {
    pub fn open(
        engine: Engine,
        live: Arc<Live>,
        audit: Arc<AuditLog>,
        window: Arc<RequestWindow>,
        config: ChangesConfig,
    ) -> anyhow::Result<Arc<Changes>> {
        let storage = engine.storage();
        let all = load_all(storage.as_ref()).map_err(anyhow::Error::msg)?;
        let last = all.iter().map(|c| c.number).max().unwrap_or(0);
        let applied = all
            .into_iter()
            .filter(|c| c.status == Status::Applied)
            .map(|c| (c.number, c.setting))
            .collect();
        Ok(Arc::new(Changes {
            storage,
            engine,
            live,
            audit,
            window,
            config,
            next_number: tokio::sync::Mutex::new(last + 1),
            applied: std::sync::Mutex::new(applied),
        }))
    }

    /// Judges the changes in their watch window every `changes.watch_check_interval_ms`, on
    /// the current tokio runtime (the server's actix system). Call [`Changes::resume`] first.
    pub fn start_watcher(self: &Arc<Self>) -> Watcher {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let changes = self.clone();
        let interval = Duration::from_millis(self.config.watch_check_interval_ms);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return,
                }
                if let Err(error) = changes.watch_round().await {
                    tracing::error!(message = "A watch round of applied changes failed.", %error);
                }
            }
        });
        Watcher { stop, task }
    }

    async fn load(&self) -> Result<Vec<Change>, ApiError> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || load_all(storage.as_ref()))
            .await
            .map_err(|e| ApiError::Internal(format!("change read did not run: {e}")))?
            .map_err(|e| ApiError::Unavailable {
                detail: format!("cannot read changes: {e}"),
                reasons: None,
            })
    }

    async fn load_one(&self, id: &str) -> Result<Change, ApiError> {
        let not_found = || ApiError::NotFound(format!("no change {id}"));
        let number = parse_id(id).ok_or_else(not_found)?;
        let storage = self.storage.clone();
        let bytes =
            tokio::task::spawn_blocking(move || storage.get(Family::Control, &record_key(number)))
                .await
                .map_err(|e| ApiError::Internal(format!("change read did not run: {e}")))?
                .map_err(|e| ApiError::Unavailable {
                    detail: format!("cannot read the change: {e}"),
                    reasons: None,
                })?
                .ok_or_else(not_found)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Internal(format!("change {id} cannot be read: {e}")))
    }

    /// Writes the record, and the setting's stored value when it changes (`Some(None)`
    /// deletes it: the configured value applies again), in one synced write.
    async fn persist(
        &self,
        change: &Change,
        setting_value: Option<Option<Override>>,
    ) -> Result<(), ApiError> {
        self.write(change, setting_value, true, Vec::new()).await
    }

    /// [`Changes::persist`], synced or not: the observed figures a watch round refreshes are
    /// not a step, so they need no fsync of their own (a crash loses at most the last ones,
    /// which the resumed watch measures again). `extra` joins the same write (the
    /// Idempotency-Key of a new change).
    async fn write(
        &self,
        change: &Change,
        setting_value: Option<Option<Override>>,
        sync: bool,
        extra: Vec<Write>,
    ) -> Result<(), ApiError> {
        let mut writes = vec![Write::Put {
            family: Family::Control,
            key: record_key(change.number),
            value: serde_json::to_vec(change).expect("a change serializes"),
        }];
        writes.extend(extra);
        match setting_value {
            Some(Some(value)) => writes.push(Write::Put {
                family: Family::Control,
                key: override_key(&change.setting),
                value: serde_json::to_vec(&value).expect("an override serializes"),
            }),
            Some(None) => {
                let key = override_key(&change.setting);
                let mut to = key.clone();
                to.push(0); // exactly this key
                writes.push(Write::DeleteRange {
                    family: Family::Control,
                    from: key,
                    to,
                })
            }
            None => {}
        }
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.write(writes, sync))
            .await
            .map_err(|e| ApiError::Internal(format!("change write did not run: {e}")))?
            .map_err(|e| ApiError::Unavailable {
                detail: format!("cannot store the change: {e}"),
                reasons: None,
            })?;
        let mut applied = self.applied.lock().expect("applied changes");
        if change.status == Status::Applied {
            applied.insert(change.number, change.setting.clone());
        } else {
            applied.remove(&change.number);
        }
        Ok(())
    }

    /// The changes in status `applied`, oldest first (under the transition lock).
    async fn load_applied(&self) -> Result<Vec<Change>, ApiError> {
        let numbers: Vec<u64> = self
            .applied
            .lock()
            .expect("applied changes")
            .keys()
            .copied()
            .collect();
        let mut changes = Vec::with_capacity(numbers.len());
        for number in numbers {
            changes.push(self.load_one(&display_id(number)).await?);
        }
        Ok(changes)
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        change: &Change,
        detail: String,
    ) -> Result<(), ApiError> {
        self.audit
            .append(actor, action, change.id(), detail)
            .await
            .map(|_| ())
            .map_err(ApiError::from)
    }

    /// `POST /v1/ops/changes`: validates and assesses a request; 400 names the bad field.
    /// With an Idempotency-Key (`key`, `request_hash` identifying the
    /// request), a repeat answers the change the first request created, as it is now, and
    /// creates none; the key with another request is 422 `idempotency_conflict`. The key is
    /// stored with the change, in the same synced write, and kept
    /// `engine.idempotency_retention_s`.
    pub async fn request(
        &self,
        caller: &Caller,
        new: NewChange,
        key: Option<IdempotencyKey>,
        request_hash: u128,
    ) -> Result<Change, ApiError> {
        let key = key.map(|key| key.scoped(caller));
        let keys = self.audit.keys();
        // Requests with the same key run one at a time: the second finds the first's change.
        let _key_lock = match &key {
            Some(key) => Some(keys.lock(key).await),
            None => None,
        };
        if let Some(key) = &key {
            if let Some(change) = self.replay(caller, key, request_hash).await? {
                return Ok(change);
            }
        }
        let def = settings::find(&new.setting).ok_or_else(|| {
            ApiError::invalid(
                "setting",
                format!(
                    "unknown setting {:?}; GET /v1/ops/config lists the settings",
                    new.setting
                ),
            )
        })?;
        let reason = new.reason.trim().to_string();
        if reason.is_empty() || reason.chars().count() > TEXT_CHARS_MAX {
            return Err(ApiError::invalid(
                "reason",
                format!("reason must be 1..={TEXT_CHARS_MAX} characters"),
            ));
        }
        let rollback_plan = new.rollback_plan.map(|p| p.trim().to_string());
        if rollback_plan
            .as_ref()
            .is_some_and(|p| p.chars().count() > TEXT_CHARS_MAX)
        {
            return Err(ApiError::invalid(
                "rollback_plan",
                format!("rollback_plan must be at most {TEXT_CHARS_MAX} characters"),
            ));
        }
        let watch_window_s = new.watch_window_s.unwrap_or(self.config.watch_window_s);
        if !(1..=self.config.watch_window_max_s).contains(&watch_window_s) {
            return Err(ApiError::invalid(
                "watch_window_s",
                format!(
                    "watch_window_s must be 1..={} (changes.watch_window_max_s)",
                    self.config.watch_window_max_s
                ),
            ));
        }
        let value = self
            .live
            .check(def, &new.value)
            .map_err(|detail| ApiError::invalid("value", detail))?;
        let mut next = self.next_number.lock().await;
        let (old_value, old_source) = self.live.target(def);
        if value == old_value {
            return Err(ApiError::invalid(
                "value",
                format!("{} is {old_value} already", def.name),
            ));
        }
        let mut change = Change {
            number: *next,
            status: Status::Pending,
            setting: def.name.to_string(),
            old_value,
            old_source,
            value,
            risk: def.risk,
            live: def.live,
            touches: def.description.to_string(),
            reason,
            rollback_plan: rollback_plan.filter(|p| !p.is_empty()),
            requested_by: caller.key_id.clone(),
            requested_by_owner: Some(caller.owner.clone()),
            requested_at_us: now_us(),
            watch_window_s,
            bounds: Bounds::from_config(&self.config),
            watch: None,
            incident_id: None,
            steps: Vec::new(),
        };
        let summary = change.summary();
        change.step(
            "requested",
            &caller.key_id,
            format!("{summary}; risk {}", def.risk.as_str()),
        );
        let entry = key.as_ref().map(|key| {
            let entry = Entry {
                change: Some(change.number),
                ..Entry::new(request_hash, now_us(), true)
            };
            (key, entry)
        });
        let extra = entry
            .iter()
            .map(|(key, entry)| keys.put(key, entry))
            .collect();
        self.write(&change, None, true, extra).await?;
        *next += 1;
        drop(next);
        self.audit(
            &caller.key_id,
            "change.request",
            &change,
            request_detail(&change),
        )
        .await?;
        if let Some((key, entry)) = entry {
            mark_audited(keys, key, entry).await;
        }
        tracing::info!(message = "Change requested.", id = %change.id(), %summary, actor = %caller.key_id);
        Ok(change)
    }

    /// The change a repeat of a request with Idempotency-Key `key` answers, or `None` when the
    /// key is free; 422 when it was used with another request. A first attempt whose audit
    /// entry failed gets it now.
    async fn replay(
        &self,
        caller: &Caller,
        key: &str,
        request_hash: u128,
    ) -> Result<Option<Change>, ApiError> {
        let keys = self.audit.keys();
        let found = keys.lookup(key).await.map_err(|e| ApiError::Unavailable {
            detail: format!("cannot read the Idempotency-Key: {e}"),
            reasons: None,
        })?;
        // A lapsed key is free again: nothing but this service acts on a change's key.
        let Some((Age::Live, entry)) = found else {
            return Ok(None);
        };
        let Some(number) = entry.change.filter(|_| entry.is_for(request_hash)) else {
            return Err(ApiError::IdempotencyConflict);
        };
        let change = self.load_one(&display_id(number)).await?;
        if !entry.audited {
            self.audit(
                &caller.key_id,
                "change.request",
                &change,
                request_detail(&change),
            )
            .await?;
            mark_audited(keys, key, entry).await;
        }
        Ok(Some(change))
    }

    /// `POST /v1/ops/changes/{id}/approve`: only an admin of another owner than the requester's,
    /// whose key was not created by a key of the requester's owner.
    pub async fn approve(&self, caller: &Caller, id: &str) -> Result<Change, ApiError> {
        let _lock = self.next_number.lock().await;
        let mut change = self.load_one(id).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "only an admin may approve a change".into(),
            ));
        }
        let other_person = match &change.requested_by_owner {
            Some(owner) => caller.is_other_person_than(owner),
            None => change.requested_by != caller.key_id,
        };
        if !other_person {
            return Err(ApiError::Forbidden(
                "four eyes: a change is approved by an admin of another owner than its requester's, with a key that owner did not create".into(),
            ));
        }
        if change.status != Status::Pending {
            return Err(ApiError::InvalidTransition(format!(
                "{id} is {}; only a pending change can be approved",
                change.status.as_str()
            )));
        }
        change.status = Status::Approved;
        change.step("approved", &caller.key_id, "");
        self.persist(&change, None).await?;
        self.audit(
            &caller.key_id,
            "change.approve",
            &change,
            format!("setting={}", change.setting),
        )
        .await?;
        tracing::info!(message = "Change approved.", id, actor = %caller.key_id);
        Ok(change)
    }

    /// `POST /v1/ops/changes/{id}/apply`: sets the value and starts the watch.
    pub async fn apply(&self, caller: &Caller, id: &str) -> Result<Change, ApiError> {
        let _lock = self.next_number.lock().await;
        let mut change = self.load_one(id).await?;
        if change.status != Status::Approved {
            return Err(ApiError::InvalidTransition(format!(
                "{id} is {}; a change is applied once approved",
                change.status.as_str()
            )));
        }
        let def = settings::find(&change.setting).ok_or_else(|| {
            ApiError::InvalidTransition(format!("this build has no setting {}", change.setting))
        })?;
        let (current, _) = self.live.target(def);
        if current != change.old_value {
            return Err(ApiError::InvalidTransition(format!(
                "{} is {current} now, not {} as when {id} was assessed; request the change again",
                change.setting, change.old_value
            )));
        }
        let watching = self
            .applied
            .lock()
            .expect("applied changes")
            .iter()
            .find(|(_, setting)| **setting == change.setting)
            .map(|(number, _)| *number);
        if let Some(other) = watching {
            return Err(ApiError::InvalidTransition(format!(
                "{} of {} is still in its watch window",
                display_id(other),
                change.setting
            )));
        }
        self.live
            .check(def, &change.value)
            .map_err(|detail| ApiError::InvalidTransition(format!("no longer valid: {detail}")))?;
        let now_s = window::now_s();
        let baseline: Stats = self
            .window
            .stats(now_s.saturating_sub(change.watch_window_s), now_s)
            .into();
        let applied_at = now_us();
        change.status = Status::Applied;
        change.watch = Some(if def.live {
            Watch {
                started_at_us: Some(applied_at),
                until_us: Some(applied_at + change.watch_window_s as i64 * 1_000_000),
                baseline,
                observed: None,
                verdict: "watching".into(),
            }
        } else {
            Watch {
                started_at_us: None,
                until_us: None,
                baseline,
                observed: None,
                verdict: "awaiting_restart".into(),
            }
        });
        let detail = if def.live {
            format!(
                "{}; watching {} s against the window before ({})",
                change.summary(),
                change.watch_window_s,
                baseline.describe()
            )
        } else {
            format!(
                "{}; takes effect at the next start, watched {} s from then",
                change.summary(),
                change.watch_window_s
            )
        };
        change.step("applied", &caller.key_id, detail);
        let id_text = change.id();
        self.persist(
            &change,
            Some(Some(Override {
                value: change.value.clone(),
                change_id: id_text.clone(),
            })),
        )
        .await?;
        self.live
            .set(def, &change.value, Some(&id_text))
            .map_err(ApiError::Internal)?;
        self.audit(
            &caller.key_id,
            "change.apply",
            &change,
            format!("setting={} live={}", change.setting, def.live),
        )
        .await?;
        tracing::warn!(message = "Change applied.", id = %id_text, summary = %change.summary(), live = def.live, actor = %caller.key_id);
        Ok(change)
    }

    /// `POST /v1/ops/changes/{id}/rollback`.
    pub async fn rollback(&self, caller: &Caller, id: &str) -> Result<Change, ApiError> {
        let _lock = self.next_number.lock().await;
        let change = self.load_one(id).await?;
        if !matches!(change.status, Status::Applied | Status::Closed) {
            return Err(ApiError::InvalidTransition(format!(
                "{id} is {}; only an applied or closed change can be rolled back",
                change.status.as_str()
            )));
        }
        self.roll_back(
            change,
            &caller.key_id,
            Status::RolledBack,
            "rolled back by hand".into(),
        )
        .await
    }

    /// Sets the old value back; `status` rolled_back or auto_rolled_back. Under the lock.
    async fn roll_back(
        &self,
        mut change: Change,
        actor: &str,
        status: Status,
        why: String,
    ) -> Result<Change, ApiError> {
        let id = change.id();
        let def = settings::find(&change.setting).ok_or_else(|| {
            ApiError::InvalidTransition(format!("this build has no setting {}", change.setting))
        })?;
        let (current, source) = self.live.target(def);
        if source.as_deref() != Some(id.as_str()) {
            return Err(ApiError::InvalidTransition(format!(
                "{} was changed since (it is {current}, set by {}); roll back that change instead",
                change.setting,
                source.as_deref().unwrap_or("the configuration")
            )));
        }
        let auto = status == Status::AutoRolledBack;
        change.status = status;
        if let Some(watch) = change.watch.as_mut() {
            if watch.verdict == "watching" || watch.verdict == "awaiting_restart" {
                watch.verdict = if auto { "breached" } else { "ended" }.into();
            }
        }
        if auto {
            let component = format!("changes/{}", change.setting);
            let detail = format!("{id} ({}) broke its watch bounds: {why}", change.summary());
            let action = if change.live {
                format!("set {} back to {}", change.setting, change.old_value)
            } else {
                format!(
                    "set {} back to {} for the next start; restart orderd to apply it",
                    change.setting, change.old_value
                )
            };
            let engine = self.engine.clone();
            let incident = tokio::task::spawn_blocking(move || {
                engine
                    .incidents()
                    .record(&component, "auto_rolled_back", detail, action)
            })
            .await
            .map_err(|e| ApiError::Internal(format!("incident write did not run: {e}")))?;
            match incident {
                Ok(incident) => change.incident_id = Some(incident.display_id()),
                Err(error) => {
                    tracing::error!(message = "Cannot record the incident of an automatic rollback.", %error)
                }
            }
        }
        let step = if auto {
            "auto_rolled_back"
        } else {
            "rolled_back"
        };
        change.step(
            step,
            actor,
            format!(
                "{}: {} → {}; {why}",
                change.setting, change.value, change.old_value
            ),
        );
        let restored = change.old_source.clone().map(|source| Override {
            value: change.old_value.clone(),
            change_id: source,
        });
        self.persist(&change, Some(restored)).await?;
        self.live
            .set(def, &change.old_value, change.old_source.as_deref())
            .map_err(ApiError::Internal)?;
        let action = if auto {
            "change.auto_rollback"
        } else {
            "change.rollback"
        };
        self.audit(
            actor,
            action,
            &change,
            format!("setting={}", change.setting),
        )
        .await?;
        tracing::warn!(message = "Change rolled back.", %id, setting = %change.setting, value = %change.old_value, automatic = auto, %why);
        Ok(change)
    }

    /// One change, for `GET /v1/ops/changes/{id}`.
    pub async fn get(&self, id: &str) -> Result<Change, ApiError> {
        self.load_one(id).await
    }

    /// Every change, newest first.
    pub async fn list(&self) -> Result<Vec<Change>, ApiError> {
        let mut changes = self.load().await?;
        changes.sort_by_key(|c| std::cmp::Reverse(c.number));
        Ok(changes)
    }

    /// After a start: starts the watch of changes that waited for a restart, and resumes the
    /// watches a stop interrupted (for the rest of the window, or a whole window when it ran
    /// out while orderd was down).
    pub async fn resume(&self) -> Result<(), ApiError> {
        let _lock = self.next_number.lock().await;
        for mut change in self.load_applied().await? {
            if change.status != Status::Applied {
                continue;
            }
            let now = now_us();
            let window_us = change.watch_window_s as i64 * 1_000_000;
            let Some(watch) = change.watch.as_mut() else {
                continue;
            };
            let (step, detail) = if watch.verdict == "awaiting_restart" {
                watch.started_at_us = Some(now);
                watch.until_us = Some(now + window_us);
                watch.verdict = "watching".into();
                (
                    "watch_started",
                    format!(
                        "in effect after the restart; watching {} s",
                        change.watch_window_s
                    ),
                )
            } else {
                let until = watch.until_us.unwrap_or(now);
                let detail = if until > now {
                    format!(
                        "orderd restarted during the watch window; watching the remaining {} s",
                        (until - now + 999_999) / 1_000_000
                    )
                } else {
                    watch.until_us = Some(now + window_us);
                    format!(
                        "the watch window ended while orderd was down; watching a whole window ({} s) again",
                        change.watch_window_s
                    )
                };
                // The statistics before the restart are gone: observe from now on.
                watch.started_at_us = Some(now);
                ("watch_resumed", detail)
            };
            change.step(step, SYSTEM_ACTOR, detail);
            self.persist(&change, None).await?;
            let action = if step == "watch_started" {
                "change.watch_start"
            } else {
                "change.watch_resume"
            };
            self.audit(
                SYSTEM_ACTOR,
                action,
                &change,
                format!("setting={}", change.setting),
            )
            .await?;
            tracing::info!(message = "Watch of an applied change resumed.", id = %change.id());
        }
        Ok(())
    }

    /// Judges every change in its watch window: rolls back those that break their bounds,
    /// closes those whose window ended.
    async fn watch_round(&self) -> Result<(), ApiError> {
        let _lock = self.next_number.lock().await;
        for mut change in self.load_applied().await? {
            if change.status != Status::Applied {
                continue;
            }
            let Some(watch) = change.watch.as_mut() else {
                continue;
            };
            let (Some(started_us), Some(until_us)) = (watch.started_at_us, watch.until_us) else {
                continue; // awaiting a restart
            };
            let now = now_us();
            let observed: Stats = self
                .window
                .stats((started_us / 1_000_000) as u64, window::now_s() + 1)
                .into();
            watch.observed = Some(observed);
            let baseline = watch.baseline;
            if let Some(why) = judge(&baseline, &observed, &change.bounds) {
                let why = format!("{why} ({})", observed.describe());
                self.roll_back(change, SYSTEM_ACTOR, Status::AutoRolledBack, why)
                    .await?;
                continue;
            }
            if now >= until_us {
                let judged = observed.requests >= change.bounds.min_requests;
                watch.verdict = if judged { "passed" } else { "unjudged" }.into();
                let detail = if !judged {
                    format!(
                        "watch window ended with {} requests, fewer than the {} needed to judge; closed unjudged",
                        observed.requests, change.bounds.min_requests
                    )
                } else {
                    format!(
                        "watch window ended within bounds: {} (before: {})",
                        observed.describe(),
                        baseline.describe()
                    )
                };
                change.status = Status::Closed;
                change.step("closed", SYSTEM_ACTOR, detail);
                self.persist(&change, None).await?;
                self.audit(
                    SYSTEM_ACTOR,
                    "change.close",
                    &change,
                    format!("setting={}", change.setting),
                )
                .await?;
                tracing::info!(message = "Change closed after its watch window.", id = %change.id());
            } else {
                // The observed figures, for GET while watching.
                self.write(&change, None, false, Vec::new()).await?;
            }
        }
        Ok(())
    }
}

/// The audit detail of a change request.
fn request_detail(change: &Change) -> String {
    format!("setting={} risk={}", change.setting, change.risk.as_str())
}

/// Notes that the change request of `key` is audited (a failure only means a repeat writes the
/// entry again).
async fn mark_audited(keys: &Keys, key: &str, entry: Entry) {
    let entry = Entry {
        audited: true,
        ..entry
    };
    if let Err(error) = keys.store(key, &entry).await {
        tracing::warn!(message = "Cannot mark an idempotency key as audited.", %error);
    }
}

fn stats_response(stats: &Stats) -> WindowStatsResponse {
    WindowStatsResponse {
        requests: stats.requests,
        errors: stats.errors,
        error_rate: stats.error_rate(),
        p99_ms: stats.p99_us as f64 / 1000.0,
    }
}

/// The wire form of a change.
pub fn response(change: &Change) -> ChangeResponse {
    ChangeResponse {
        id: change.id(),
        status: change.status.as_str().to_string(),
        setting: change.setting.clone(),
        old_value: change.old_value.clone(),
        value: change.value.clone(),
        risk: change.risk.as_str().to_string(),
        live: change.live,
        reason: change.reason.clone(),
        rollback_plan: change.rollback_plan.clone(),
        requested_by: change.requested_by.clone(),
        requested_at: wire::time(change.requested_at_us),
        assessment: AssessmentResponse {
            summary: change.summary(),
            risk: change.risk.as_str().to_string(),
            live: change.live,
            restart_required: !change.live,
            touches: change.touches.clone(),
            watch_window_s: change.watch_window_s,
            bounds: WatchBoundsResponse {
                error_rate_increase_max_percent: change.bounds.error_rate_increase_max_percent,
                p99_increase_max_percent: change.bounds.p99_increase_max_percent,
                p99_increase_min_ms: change.bounds.p99_increase_min_ms,
                min_requests: change.bounds.min_requests,
            },
        },
        watch: change.watch.as_ref().map(|w| WatchResponse {
            started_at: w.started_at_us.map(wire::time),
            until: w.until_us.map(wire::time),
            baseline: stats_response(&w.baseline),
            observed: w.observed.as_ref().map(stats_response),
            verdict: w.verdict.clone(),
        }),
        incident_id: change.incident_id.clone(),
        steps: change
            .steps
            .iter()
            .map(|s| ChangeStepResponse {
                step: s.step.clone(),
                actor: s.actor.clone(),
                at: wire::time(s.at_us),
                detail: s.detail.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            error_rate_increase_max_percent: 1.0,
            p99_increase_max_percent: 50,
            p99_increase_min_ms: 20,
            min_requests: 50,
        }
    }

    fn stats(requests: u64, errors: u64, p99_ms: u64) -> Stats {
        Stats {
            requests,
            errors,
            p99_us: p99_ms * 1000,
        }
    }

    #[test]
    fn nothing_is_judged_before_enough_requests() {
        assert_eq!(
            judge(&stats(1000, 0, 2), &stats(49, 49, 5000), &bounds()),
            None
        );
        assert!(judge(&stats(1000, 0, 2), &stats(50, 50, 2), &bounds()).is_some());
    }

    #[test]
    fn error_rate_may_rise_by_the_allowed_points_only() {
        let before = stats(1000, 10, 2); // 1 %
        assert_eq!(
            judge(&before, &stats(1000, 20, 2), &bounds()),
            None,
            "2 %: +1 point"
        );
        let why = judge(&before, &stats(1000, 21, 2), &bounds()).unwrap();
        assert!(why.contains("error rate 2.10 %"), "{why}");
        // Fewer errors is never a breach.
        assert_eq!(judge(&before, &stats(1000, 0, 2), &bounds()), None);
    }

    #[test]
    fn p99_may_rise_by_the_larger_of_percent_and_milliseconds() {
        // Fast service: +20 ms allowed (more than +50 % of 2 ms).
        assert_eq!(
            judge(&stats(100, 0, 2), &stats(100, 0, 22), &bounds()),
            None
        );
        let why = judge(&stats(100, 0, 2), &stats(100, 0, 23), &bounds()).unwrap();
        assert!(why.contains("p99 23.0 ms against 2.0 ms"), "{why}");
        // Slow service: +50 % allowed (more than +20 ms of 100 ms).
        assert_eq!(
            judge(&stats(100, 0, 100), &stats(100, 0, 150), &bounds()),
            None
        );
        assert!(judge(&stats(100, 0, 100), &stats(100, 0, 151), &bounds()).is_some());
        // No traffic before: the milliseconds bound alone.
        assert_eq!(
            judge(&Stats::default(), &stats(100, 0, 20), &bounds()),
            None
        );
        assert!(judge(&Stats::default(), &stats(100, 0, 200), &bounds()).is_some());
    }

    #[test]
    fn ids_round_trip_and_refuse_other_text() {
        assert_eq!(display_id(42), "chg_000042");
        assert_eq!(parse_id("chg_000042"), Some(42));
        assert_eq!(parse_id(&display_id(1_234_567)), Some(1_234_567));
        for bad in [
            "",
            "chg_",
            "42",
            "chg_-1",
            "chg_1x",
            "inc_000001",
            "chg_99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_change_round_trips_through_storage_form() {
        let mut change = Change {
            number: 7,
            status: Status::Applied,
            setting: "engine.batch_events_max".into(),
            old_value: Value::from(4096),
            old_source: None,
            value: Value::from(64),
            risk: Risk::Medium,
            live: true,
            touches: "x".into(),
            reason: "smaller batches".into(),
            rollback_plan: Some("set 4096".into()),
            requested_by: "key_a".into(),
            requested_by_owner: Some("ann".into()),
            requested_at_us: 1,
            watch_window_s: 60,
            bounds: bounds(),
            watch: Some(Watch {
                started_at_us: Some(2),
                until_us: Some(3),
                baseline: stats(1, 0, 1),
                observed: None,
                verdict: "watching".into(),
            }),
            incident_id: None,
            steps: Vec::new(),
        };
        change.step("requested", "key_a", "d");
        let bytes = serde_json::to_vec(&change).unwrap();
        assert_eq!(serde_json::from_slice::<Change>(&bytes).unwrap(), change);
        let wire = response(&change);
        assert_eq!(wire.id, "chg_000007");
        assert_eq!(wire.status, "applied");
        assert_eq!(
            wire.assessment.summary,
            "engine.batch_events_max: 4096 → 64"
        );
        assert!(!wire.assessment.restart_required);
        assert_eq!(wire.steps.len(), 1);
    }
}

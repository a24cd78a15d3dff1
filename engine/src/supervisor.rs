//! The shard supervisor: turns shard faults (a panicking command, a shard that stops
//! answering its heartbeat) into rebuilds from storage, quarantines commands that panic twice,
//! limits restart intensity as Erlang/OTP does, and escalates past it. Every fault it handles
//! is written as an incident.
//!
//! actix's own `Supervisor` is not used: it restarts an actor only when the actor stops itself,
//! does not catch panics and has no restart limit. Here a shard applies every message inside
//! `catch_unwind`; on a panic it drops its unwritten batch (nothing in it was acknowledged),
//! stops, and reports a [`Fault`]. The supervisor runs on an arbiter of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::engine::{Engine, Inner};
use crate::storage::{Family, Storage, StorageError, Write};

/// How the supervisor watches and restarts shards.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Interval between heartbeats sent to each shard.
    pub heartbeat_interval_ms: u64,
    /// A shard that leaves a heartbeat unanswered this long is stuck and is replaced.
    pub heartbeat_timeout_ms: u64,
    /// Automatic restarts of one shard allowed within `window_s`; one more escalates.
    pub max_restarts: u32,
    pub window_s: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 10_000,
            max_restarts: 5,
            window_s: 60,
        }
    }
}

/// Capacity of the fault channel from shards to the supervisor. A shard reports at most one
/// fault per life (it stops after it), so this bounds nothing in practice.
pub const FAULT_QUEUE_MAX: usize = 1024;

/// What a shard reports to its supervisor.
#[derive(Debug)]
pub enum Fault {
    /// A message panicked while the shard applied it. `command` and `fingerprint` name the
    /// client command when it was one (protocol messages have none).
    Panic {
        shard: u16,
        generation: u64,
        command: Option<(&'static str, u64)>,
        message: String,
    },
    /// The log writer failed to write a group holding this shard's batch and moved the
    /// shard's generation on to `generation`: the actor is stale and must be rebuilt.
    WriteFailed {
        shard: u16,
        generation: u64,
        error: String,
    },
    /// Storage started refusing writes (the first failure after a run of successes).
    StorageFailing { error: String },
    /// A write succeeded again after [`Fault::StorageFailing`].
    StorageRecovered,
}

/// Key prefix of quarantined commands in `control`; the fingerprint follows, big-endian.
const QUARANTINE_PREFIX: &[u8] = b"engine/quarantine/";
const QUARANTINE_VERSION: u8 = 1;

/// A command that panicked twice, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuarantinedCommand {
    pub fingerprint: u64,
    pub command: String,
    pub message: String,
    pub at_us: i64,
}

/// Commands refused because they made a shard panic twice. Read on every client command
/// (one relaxed load while the set is empty); written by the supervisor.
pub struct Quarantine {
    active: AtomicBool,
    set: RwLock<HashSet<u64>>,
    panics: Mutex<HashMap<u64, u32>>,
}

impl Quarantine {
    /// Loads the commands quarantined earlier (the quarantine survives restarts).
    pub fn load(storage: &dyn Storage) -> Result<Quarantine, StorageError> {
        let mut set = HashSet::new();
        let mut end = QUARANTINE_PREFIX.to_vec();
        *end.last_mut().expect("prefix") += 1;
        storage.scan(Family::Control, QUARANTINE_PREFIX, &end, &mut |key, _| {
            if let Ok(bytes) = key[QUARANTINE_PREFIX.len()..].try_into() {
                set.insert(u64::from_be_bytes(bytes));
            }
            true
        })?;
        Ok(Quarantine {
            active: AtomicBool::new(!set.is_empty()),
            set: RwLock::new(set),
            panics: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the command with this fingerprint is refused.
    #[inline]
    pub fn contains(&self, fingerprint: u64) -> bool {
        self.active.load(Ordering::Relaxed)
            && self
                .set
                .read()
                .expect("quarantine poisoned")
                .contains(&fingerprint)
    }

    /// Counts a panic of this command; on its second one it is quarantined (persisted) and
    /// `Some` is returned.
    fn note_panic(
        &self,
        storage: &dyn Storage,
        command: &str,
        fingerprint: u64,
        message: &str,
    ) -> Result<Option<QuarantinedCommand>, StorageError> {
        // Held until the record is stored and in the set: a concurrent `lift` waits for it, so
        // the set never holds a fingerprint whose record a lift has just deleted.
        let mut panics = self.panics.lock().expect("quarantine poisoned");
        let count = panics.entry(fingerprint).or_insert(0);
        *count += 1;
        if *count < 2 || self.contains(fingerprint) {
            return Ok(None);
        }
        let entry = QuarantinedCommand {
            fingerprint,
            command: command.to_string(),
            message: message.to_string(),
            at_us: crate::clock::now_us(),
        };
        let key = Self::key(fingerprint);
        let mut value = vec![QUARANTINE_VERSION];
        value.extend(postcard::to_stdvec(&entry).expect("a quarantine entry encodes"));
        storage.write(
            vec![Write::Put {
                family: Family::Control,
                key,
                value,
            }],
            true,
        )?;
        self.set
            .write()
            .expect("quarantine poisoned")
            .insert(fingerprint);
        self.active.store(true, Ordering::Relaxed);
        Ok(Some(entry))
    }

    /// Every quarantined command as stored, oldest first (ties by fingerprint). A record whose
    /// value cannot be read is listed with its fingerprint, command `unknown` and time 0, so
    /// that it can still be lifted.
    pub fn list(&self, storage: &dyn Storage) -> Result<Vec<QuarantinedCommand>, StorageError> {
        let mut end = QUARANTINE_PREFIX.to_vec();
        *end.last_mut().expect("prefix") += 1;
        let mut entries = Vec::new();
        storage.scan(
            Family::Control,
            QUARANTINE_PREFIX,
            &end,
            &mut |key, value| {
                if let Ok(bytes) = key[QUARANTINE_PREFIX.len()..].try_into() {
                    let fingerprint = u64::from_be_bytes(bytes);
                    entries.push(Self::decode(fingerprint, value));
                }
                true
            },
        )?;
        entries.sort_by_key(|entry| (entry.at_us, entry.fingerprint));
        Ok(entries)
    }

    /// Lifts the quarantine of `fingerprint`: deletes its record (a synced write), takes it out
    /// of the set and forgets its panics, so the command runs again and is quarantined anew
    /// only after two more panics. `None` (and nothing written) when it is not quarantined.
    pub fn lift(
        &self,
        storage: &dyn Storage,
        fingerprint: u64,
    ) -> Result<Option<QuarantinedCommand>, StorageError> {
        // Serializes with `note_panic`, which stores a record and then adds it to the set.
        let mut panics = self.panics.lock().expect("quarantine poisoned");
        let key = Self::key(fingerprint);
        let Some(value) = storage.get(Family::Control, &key)? else {
            return Ok(None);
        };
        let mut to = key.clone();
        to.push(0); // the smallest key after `key`: the range holds exactly this record
        storage.write(
            vec![Write::DeleteRange {
                family: Family::Control,
                from: key,
                to,
            }],
            true,
        )?;
        let mut set = self.set.write().expect("quarantine poisoned");
        set.remove(&fingerprint);
        self.active.store(!set.is_empty(), Ordering::Relaxed);
        drop(set);
        panics.remove(&fingerprint);
        Ok(Some(Self::decode(fingerprint, &value)))
    }

    /// Key of a quarantined command in `control`.
    fn key(fingerprint: u64) -> Vec<u8> {
        let mut key = QUARANTINE_PREFIX.to_vec();
        key.extend_from_slice(&fingerprint.to_be_bytes());
        key
    }

    /// A stored record; one that cannot be read becomes a placeholder naming why.
    fn decode(fingerprint: u64, value: &[u8]) -> QuarantinedCommand {
        let decoded = match value.split_first() {
            Some((&QUARANTINE_VERSION, rest)) => postcard::from_bytes::<QuarantinedCommand>(rest)
                .map_err(|error| format!("undecodable record: {error}")),
            Some((version, _)) => Err(format!("record of unknown version {version}")),
            None => Err("empty record".to_string()),
        };
        decoded.unwrap_or_else(|why| QuarantinedCommand {
            fingerprint,
            command: "unknown".to_string(),
            message: why,
            at_us: 0,
        })
    }

    /// How many commands are quarantined.
    pub fn len(&self) -> usize {
        self.set.read().expect("quarantine poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Text of a panic payload.
/// Restart intensity, as Erlang/OTP limits it: when a component was restarted recently. The
/// supervisor restarts a shard only while fewer than `supervisor.max_restarts` restarts fall
/// within `supervisor.window_s`, and escalates past that.
#[derive(Debug, Default)]
pub struct RestartIntensity {
    restarts: Mutex<std::collections::VecDeque<Instant>>,
}

impl RestartIntensity {
    /// Restarts within `window` before `now` (older ones are forgotten).
    pub fn recent(&self, now: Instant, window: Duration) -> usize {
        let mut times = self.restarts.lock().expect("restart window");
        while times
            .front()
            .is_some_and(|at| now.duration_since(*at) > window)
        {
            times.pop_front();
        }
        times.len()
    }

    /// A restart done at `at`.
    pub fn record(&self, at: Instant) {
        self.restarts.lock().expect("restart window").push_back(at);
    }

    /// Forgets every restart (an operator brought the component back).
    pub fn clear(&self) {
        self.restarts.lock().expect("restart window").clear();
    }
}

pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// When the supervisor last finished a clean heartbeat round: one after which every running
/// shard has answered its heartbeat within `heartbeat_timeout_ms` (a shard it had to replace
/// counts once its rebuild finished). systemd's watchdog is fed from it (the gateway's
/// `systemd` module): a process whose supervisor stops finishing clean rounds stops petting.
#[derive(Debug)]
pub(crate) struct CleanRounds {
    epoch: Instant,
    /// Milliseconds from `epoch` to the end of the last clean round; `u64::MAX` before the
    /// first.
    last_ms: AtomicU64,
}

impl CleanRounds {
    pub(crate) fn new() -> CleanRounds {
        CleanRounds {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn record(&self, at: Instant) {
        let ms = u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.fetch_max(ms, Ordering::SeqCst);
        // fetch_max on u64::MAX (never) keeps MAX: store the first one.
        let _ = self
            .last_ms
            .compare_exchange(u64::MAX, ms, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// How long ago the last clean round ended; `None` before the first.
    pub(crate) fn age(&self) -> Option<Duration> {
        let ms = self.last_ms.load(Ordering::SeqCst);
        if ms == u64::MAX {
            return None;
        }
        let at = self.epoch + Duration::from_millis(ms);
        Some(Instant::now().saturating_duration_since(at))
    }
}

/// Per shard: the heartbeat sent and not answered yet, and when it left.
struct Watch {
    unanswered_since: Option<Instant>,
}

/// A run of failed writes, from the first failure until a write succeeds again.
struct Outage {
    at_us: i64,
    error: String,
    /// The incident written when it began (`None` when storage refused that write too).
    incident: Option<u64>,
}

/// The supervisor loop: handles faults as they come and checks heartbeats every
/// `heartbeat_interval_ms`. Ends when the engine is gone or the fault channel closes.
pub(crate) async fn run(
    inner: Weak<Inner>,
    mut faults: mpsc::Receiver<Fault>,
    config: SupervisorConfig,
) {
    let interval = Duration::from_millis(config.heartbeat_interval_ms.max(10));
    let timeout = Duration::from_millis(config.heartbeat_timeout_ms.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shard_count = match inner.upgrade() {
        Some(inner) => Engine::from_inner(inner).shard_count(),
        None => return,
    };
    let mut outage: Option<Outage> = None;
    let mut watches: Vec<Watch> = (0..shard_count)
        .map(|_| Watch {
            unanswered_since: None,
        })
        .collect();
    loop {
        tokio::select! {
            fault = faults.recv() => {
                let Some(fault) = fault else { return };
                let Some(inner) = inner.upgrade() else { return };
                let engine = Engine::from_inner(inner);
                handle_fault(&engine, fault, &mut outage).await;
            }
            _ = ticker.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                let engine = Engine::from_inner(inner);
                if check_heartbeats(&engine, &mut watches, timeout).await {
                    engine.clean_rounds().record(Instant::now());
                }
            }
        }
    }
}

async fn handle_fault(engine: &Engine, fault: Fault, outage: &mut Option<Outage>) {
    match fault {
        Fault::WriteFailed {
            shard,
            generation,
            error,
        } => {
            if engine.generation(shard) != generation {
                return; // already replaced
            }
            // Storage, not the shard, failed: this restart does not count towards the
            // restart intensity (the probe tells when writes succeed again; meanwhile writes
            // are refused at admission and reads are served by the rebuilt shard).
            let detail = format!(
                "a write of this shard's log batch failed ({error}); nothing in it was acknowledged"
            );
            engine.restart_after_storage_fault(shard, detail).await;
        }
        Fault::StorageFailing { error } => {
            let at_us = crate::clock::now_us();
            let incident = engine
                .incidents()
                .record(
                    "storage",
                    "write_failed",
                    format!("storage refused a write: {error}"),
                    "shards whose batches failed are rebuilt from storage; writes are refused until a probe write succeeds; reads go on",
                )
                .ok()
                .map(|incident| incident.id);
            *outage = Some(Outage {
                at_us,
                error,
                incident,
            });
        }
        Fault::StorageRecovered => {
            let Some(outage) = outage.take() else { return };
            let recorded = match outage.incident {
                Some(id) => engine.incidents().recovered(id).map(|_| ()),
                // The incident could not be written while storage failed: written now.
                None => engine
                    .incidents()
                    .record_recovered(
                        outage.at_us,
                        "storage",
                        "write_failed",
                        format!("storage refused a write: {}", outage.error),
                        "shards whose batches failed were rebuilt from storage; writes were refused until a probe write succeeded; reads went on",
                    )
                    .map(|_| ()),
            };
            if let Err(error) = recorded {
                tracing::error!(message = "Could not record the storage incident.", %error);
            }
        }
        Fault::Panic {
            shard,
            generation,
            command,
            message,
        } => {
            if engine.generation(shard) != generation {
                return; // already replaced
            }
            let detail = match command {
                Some((kind, fingerprint)) => {
                    format!("{kind} (command {fingerprint:016x}) panicked: {message}")
                }
                None => format!("a protocol message panicked: {message}"),
            };
            if let Some((kind, fingerprint)) = command {
                let storage = engine.storage();
                match engine
                    .quarantine()
                    .note_panic(storage.as_ref(), kind, fingerprint, &message)
                {
                    Ok(Some(entry)) => {
                        let _ = engine.incidents().record_recovered(
                            entry.at_us,
                            &format!("shard/{shard}"),
                            "quarantine",
                            format!(
                                "{kind} (command {fingerprint:016x}) panicked twice: {message}"
                            ),
                            "command quarantined: refused from now on with 422 quarantined",
                        );
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(message = "Could not persist a quarantine.", %error)
                    }
                }
            }
            engine.auto_restart(shard, "panic", detail).await;
        }
    }
}

/// One heartbeat round: a shard that answered gets the next heartbeat, one silent for
/// `timeout` is replaced. True when the round was clean: afterwards every running shard has
/// answered, or has been silent for less than `timeout` (see [`CleanRounds`]).
async fn check_heartbeats(engine: &Engine, watches: &mut [Watch], timeout: Duration) -> bool {
    let now = Instant::now();
    for (shard, watch) in watches.iter_mut().enumerate() {
        let shard = shard as u16;
        if !engine.is_running(shard) {
            watch.unanswered_since = None;
            continue;
        }
        let (sent, seen) = engine.heartbeats(shard);
        if seen >= sent {
            watch.unanswered_since = Some(now);
            engine.send_heartbeat(shard, sent + 1);
            continue;
        }
        let since = *watch.unanswered_since.get_or_insert(now);
        if now.duration_since(since) >= timeout {
            watch.unanswered_since = None;
            let detail = format!(
                "no heartbeat answer for {} ms (timeout {} ms); mailbox depth {}",
                now.duration_since(since).as_millis(),
                timeout.as_millis(),
                engine.mailbox_depth(shard)
            );
            engine.auto_restart(shard, "stuck", detail).await;
        }
    }
    let end = Instant::now();
    watches.iter().enumerate().all(|(shard, watch)| {
        let shard = shard as u16;
        let (sent, seen) = engine.heartbeats(shard);
        !engine.is_running(shard)
            || seen >= sent
            || watch
                .unanswered_since
                .is_none_or(|since| end.duration_since(since) < timeout)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_rounds_tell_their_age() {
        let rounds = CleanRounds::new();
        assert_eq!(rounds.age(), None, "no round yet");
        rounds.record(Instant::now());
        let age = rounds.age().expect("a round");
        assert!(age < Duration::from_secs(1), "{age:?}");
        // An older round recorded late does not make the last one older.
        rounds.record(rounds.epoch);
        assert!(rounds.age().expect("a round") < Duration::from_secs(1));
    }

    #[test]
    fn restart_intensity_counts_the_window_only_and_clears() {
        let intensity = RestartIntensity::default();
        let start = Instant::now();
        let window = Duration::from_secs(10);
        intensity.record(start);
        intensity.record(start + Duration::from_secs(4));
        intensity.record(start + Duration::from_secs(8));
        assert_eq!(intensity.recent(start + Duration::from_secs(9), window), 3);
        // The first restart is now older than the window; the next two are not.
        assert_eq!(intensity.recent(start + Duration::from_secs(13), window), 2);
        assert_eq!(intensity.recent(start + Duration::from_secs(30), window), 0);
        intensity.record(start + Duration::from_secs(30));
        intensity.clear();
        assert_eq!(intensity.recent(start + Duration::from_secs(31), window), 0);
    }
}

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
use std::sync::atomic::{AtomicBool, Ordering};
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
        let panics = {
            let mut panics = self.panics.lock().expect("quarantine poisoned");
            let count = panics.entry(fingerprint).or_insert(0);
            *count += 1;
            *count
        };
        if panics < 2 || self.contains(fingerprint) {
            return Ok(None);
        }
        let entry = QuarantinedCommand {
            fingerprint,
            command: command.to_string(),
            message: message.to_string(),
            at_us: crate::shard::now_us(),
        };
        let mut key = QUARANTINE_PREFIX.to_vec();
        key.extend_from_slice(&fingerprint.to_be_bytes());
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

    /// How many commands are quarantined.
    pub fn len(&self) -> usize {
        self.set.read().expect("quarantine poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Per shard: the heartbeat sent and not answered yet, and when it left.
struct Watch {
    unanswered_since: Option<Instant>,
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
                handle_fault(&engine, fault).await;
            }
            _ = ticker.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                let engine = Engine::from_inner(inner);
                check_heartbeats(&engine, &mut watches, timeout).await;
            }
        }
    }
}

async fn handle_fault(engine: &Engine, fault: Fault) {
    match fault {
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

async fn check_heartbeats(engine: &Engine, watches: &mut [Watch], timeout: Duration) {
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
}

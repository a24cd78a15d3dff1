//! systemd's service notification protocol (`Type=notify`, `WatchdogSec=`): `READY=1` when
//! `/readyz` first answers 200, `STOPPING=1` when orderd starts to drain, and `WATCHDOG=1`
//! every half watchdog interval, but only while the shard supervisor keeps finishing clean
//! heartbeat rounds, so that a wedged process stops petting and systemd restarts it.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or `Type=` other than `notify`) nothing is
//! sent and nothing fails; without `WATCHDOG_USEC` (no `WatchdogSec=`) there is no watchdog
//! thread. A failed send is logged once per kind and never stops orderd.
//!
//! The watchdog runs on a thread of its own, not on the async runtime it watches. Until the
//! engine is open (TLS files, keys, RocksDB, recovery: bounded by `TimeoutStartSec=`) it pets
//! unconditionally; from then on it pets only while [`should_pet`] holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderd_engine::Engine;
use sd_notify::NotifyState;

/// How old the supervisor's last clean heartbeat round may be for the watchdog to be fed:
/// the watchdog interval, but at least twice the heartbeat timeout (a stuck shard is replaced
/// after one timeout, and its rebuild waits up to another for the old shard to stop; the
/// supervisor finishes no round meanwhile) and three heartbeat intervals.
pub fn freshness(
    watchdog: Duration,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
) -> Duration {
    watchdog
        .max(heartbeat_timeout.saturating_mul(2))
        .max(heartbeat_interval.saturating_mul(3))
}

/// Whether to send `WATCHDOG=1` now. `clean_round_age` is `None` before the engine is open
/// (always pet), else how long ago the supervisor's last clean heartbeat round ended (or the
/// engine opened, before the first round): pet only when that is less than `freshness`.
pub fn should_pet(clean_round_age: Option<Duration>, freshness: Duration) -> bool {
    clean_round_age.is_none_or(|age| age < freshness)
}

/// The process's notifier: one per process (systemd watches one main process).
pub struct Notifier {
    /// Set once the engine is open (with when): the watchdog follows its supervisor from then
    /// on.
    engine: Arc<OnceLock<(Engine, Instant)>>,
    stop: Arc<AtomicBool>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    stopping_sent: AtomicBool,
}

impl Notifier {
    /// Starts the watchdog thread when systemd asked for one (`WATCHDOG_USEC`, for this pid).
    pub fn start() -> Notifier {
        let engine = Arc::new(OnceLock::new());
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = sd_notify::watchdog_enabled().map(|interval| {
            tracing::info!(
                message = "systemd watchdog on; fed while the shard supervisor's heartbeat rounds are clean.",
                watchdog_ms = interval.as_millis() as u64
            );
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("orderd-watchdog".into())
                .spawn(move || watchdog_loop(interval, &engine, &stop))
                .expect("spawn the watchdog thread")
        });
        Notifier {
            engine,
            stop,
            watchdog: Mutex::new(watchdog),
            stopping_sent: AtomicBool::new(false),
        }
    }

    /// The engine is open: from now on the watchdog is fed only while its supervisor's
    /// heartbeat rounds are clean.
    pub fn engine_open(&self, engine: &Engine) {
        let _ = self.engine.set((engine.clone(), Instant::now()));
    }

    /// Waits until the engine is ready (what `/readyz` answers 200 to), telling systemd why
    /// not meanwhile (`STATUS=`), then sends `READY=1`. Returns at once without
    /// `NOTIFY_SOCKET`.
    pub async fn ready_when(&self, engine: &Engine) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let mut last_status = String::new();
        loop {
            if self.stopping_sent.load(Ordering::SeqCst) {
                return;
            }
            match engine.readiness() {
                Ok(()) => break,
                Err(reasons) => {
                    let status = format!("not ready: {}", reasons.join("; "));
                    if status != last_status {
                        send("STATUS", &[NotifyState::Status(&status)]);
                        last_status = status;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        send(
            "READY",
            &[NotifyState::Ready, NotifyState::Status("ready: serving")],
        );
        tracing::info!(message = "Told systemd that orderd is ready.");
    }

    /// orderd starts to drain: `STOPPING=1`, once.
    pub fn stopping(&self) {
        if self.stopping_sent.swap(true, Ordering::SeqCst) {
            return;
        }
        send(
            "STOPPING",
            &[NotifyState::Stopping, NotifyState::Status("draining")],
        );
    }

    /// Stops the watchdog thread (at exit).
    pub fn finish(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.watchdog.lock().expect("watchdog slot").take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Pets every half interval while [`should_pet`] holds; logs when it stops and resumes.
fn watchdog_loop(interval: Duration, engine: &OnceLock<(Engine, Instant)>, stop: &AtomicBool) {
    let period = (interval / 2).max(Duration::from_millis(1));
    let mut petting = true;
    while !stop.load(Ordering::SeqCst) {
        let (age, pet) = match engine.get() {
            None => (None, should_pet(None, interval)),
            Some((engine, opened)) => {
                let config = engine.supervisor_config();
                let freshness = freshness(
                    interval,
                    Duration::from_millis(config.heartbeat_interval_ms),
                    Duration::from_millis(config.heartbeat_timeout_ms),
                );
                let age = engine
                    .clean_heartbeat_round_age()
                    .unwrap_or_else(|| opened.elapsed());
                (Some(age), should_pet(Some(age), freshness))
            }
        };
        if pet {
            send("WATCHDOG", &[NotifyState::Watchdog]);
        }
        if pet != petting {
            if pet {
                tracing::warn!(message = "The shard supervisor's heartbeat rounds are clean again; feeding systemd's watchdog.");
            } else {
                tracing::error!(
                    message = "The shard supervisor has finished no clean heartbeat round recently; no longer feeding systemd's watchdog, which will restart orderd.",
                    age_ms = age.map(|age| age.as_millis() as u64)
                );
            }
            petting = pet;
        }
        std::thread::sleep(period);
    }
}

/// Sends `states`; a failure is logged once per `kind` (a socket that went away fails every
/// time).
fn send(kind: &'static str, states: &[NotifyState]) {
    static FAILED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    if let Err(error) = sd_notify::notify(states) {
        let mut failed = FAILED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !failed.contains(&kind) {
            failed.push(kind);
            tracing::warn!(message = "Cannot notify systemd.", kind, %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn freshness_covers_a_rebuild_and_a_few_rounds() {
        // The unit's WatchdogSec=10s with the default supervisor (1 s, 10 s).
        assert_eq!(freshness(MS(10_000), MS(1_000), MS(10_000)), MS(20_000));
        // A long watchdog interval is its own bound.
        assert_eq!(freshness(MS(60_000), MS(1_000), MS(10_000)), MS(60_000));
        // Slow heartbeats.
        assert_eq!(freshness(MS(400), MS(5_000), MS(100)), MS(15_000));
    }

    #[test]
    fn the_watchdog_is_fed_while_starting_and_then_only_after_clean_rounds() {
        let fresh = MS(20_000);
        assert!(should_pet(None, fresh), "starting up");
        assert!(should_pet(Some(MS(900)), fresh));
        assert!(should_pet(Some(MS(19_999)), fresh));
        assert!(!should_pet(Some(MS(20_000)), fresh), "stale");
        assert!(!should_pet(Some(MS(600_000)), fresh), "wedged");
    }
}

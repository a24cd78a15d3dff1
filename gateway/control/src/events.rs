//! The public events' retention: a thread that deletes events older than `events.retention_s`
//! and the oldest beyond `events.max_count`, every `events.sweep_interval_ms`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderd_engine::Engine;

/// The sweep thread; stopped by [`Sweeper::stop`].
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Sweeper {
    pub fn start(engine: Engine, config: &orderd_config::EventsConfig) -> Sweeper {
        let stop = Arc::new(AtomicBool::new(false));
        let (retention_s, max_count, scan_max) =
            (config.retention_s, config.max_count, config.sweep_scan_max);
        let interval = Duration::from_millis(config.sweep_interval_ms);
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("orderd-events-sweep".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !thread_stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50).min(interval));
                    if last.elapsed() < interval {
                        continue;
                    }
                    last = Instant::now();
                    // A run that deleted something may have stopped at its scan bound: the
                    // next interval continues.
                    if let Err(error) = engine.sweep_events(retention_s, max_count, scan_max) {
                        tracing::error!(message = "The events sweep failed.", %error);
                    }
                }
            })
            .expect("spawn events sweep");
        Sweeper {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

//! Progress on stderr for orderctl's long operations, drawn with `indicatif`: a spinner while a
//! request waits for the server, and for an offline restore one bar per phase (`download`,
//! `hash`, `restore`, `rebuild`, ...) that counts bytes when the phase knows its total, or a
//! spinner when it does not. Nothing is drawn when stderr is not a terminal, so scripts and
//! logs see only orderctl's own messages.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orderd_engine::backup::Progress;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// How often a spinner moves.
const TICK: Duration = Duration::from_millis(120);
/// A phase with a known total: its name, a bar, bytes done of the total, speed and time left.
const BAR_TEMPLATE: &str =
    "{prefix:>9} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";
/// A phase without a total, or a request waiting for its answer.
const SPINNER_TEMPLATE: &str = "{prefix:>9} {spinner} {msg} {elapsed}";

/// Whether progress should be drawn: only when stderr is a terminal.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn draw_target(visible: bool) -> ProgressDrawTarget {
    if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR_TEMPLATE)
        .expect("the bar template is valid")
        .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(SPINNER_TEMPLATE).expect("the spinner template is valid")
}

/// A spinner with a label; it disappears when dropped.
pub struct Spinner(ProgressBar);

impl Spinner {
    /// Starts a spinner labelled `prefix`, with `message` beside it; drawn only if `visible`.
    pub fn start(prefix: &str, message: &str, visible: bool) -> Spinner {
        let spinner = ProgressBar::with_draw_target(None, draw_target(visible))
            .with_style(spinner_style())
            .with_prefix(prefix.to_string())
            .with_message(message.to_string());
        if !spinner.is_hidden() {
            spinner.enable_steady_tick(TICK);
        }
        Spinner(spinner)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The engine's and the off-site store's [`Progress`] as `indicatif` bars: each new phase
/// finishes the previous bar (which stays on screen) and starts its own.
pub struct Bars {
    visible: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars on stderr, drawn only when it is a terminal.
    pub fn stderr() -> Bars {
        Bars::new(stderr_is_terminal())
    }

    /// Bars on stderr if `visible`, else hidden (they still count).
    pub fn new(visible: bool) -> Bars {
        Bars {
            visible,
            current: Mutex::new(None),
        }
    }

    /// Finishes the bar of the last phase, leaving it on screen.
    pub fn finish(&self) {
        if let Some(bar) = self.lock().take() {
            finish_phase(&bar);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        // A panic while holding the lock leaves nothing inconsistent: a bar is a counter.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bar of the current phase (for tests).
    #[cfg(test)]
    fn current(&self) -> Option<ProgressBar> {
        self.lock().clone()
    }
}

/// Leaves a finished phase on screen: a full bar, or a spinner that says `done`.
fn finish_phase(bar: &ProgressBar) {
    if bar.length().is_none() {
        bar.finish_with_message("done");
    } else {
        bar.finish();
    }
}

impl Progress for Bars {
    fn phase(&self, name: &str, total: u64) {
        let bar = if total > 0 {
            ProgressBar::with_draw_target(Some(total), draw_target(self.visible))
                .with_style(bar_style())
        } else {
            ProgressBar::with_draw_target(None, draw_target(self.visible))
                .with_style(spinner_style())
        }
        .with_prefix(name.to_string());
        if total == 0 && !bar.is_hidden() {
            bar.enable_steady_tick(TICK);
        }
        if let Some(previous) = self.lock().replace(bar) {
            finish_phase(&previous);
        }
    }

    fn advance(&self, done: u64) {
        if let Some(bar) = self.lock().as_ref() {
            bar.inc(done);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sync<T: Sync + Send>() {}

    #[test]
    fn templates_parse() {
        bar_style();
        spinner_style();
    }

    #[test]
    fn bars_are_sync_and_usable_as_dyn_progress() {
        assert_sync::<Bars>();
        let bars = Bars::new(false);
        let progress: &dyn Progress = &bars;
        progress.phase("hash", 10);
        progress.advance(10);
        assert_eq!(bars.current().expect("a bar").position(), 10);
    }

    #[test]
    fn each_phase_gets_its_own_bar_counting_bytes() {
        let bars = Bars::new(false);
        bars.advance(5); // before any phase: ignored, no panic
        assert!(bars.current().is_none());

        bars.phase("download", 1000);
        bars.advance(400);
        bars.advance(100);
        let download = bars.current().expect("download bar");
        assert_eq!(download.length(), Some(1000));
        assert_eq!(download.position(), 500);
        assert_eq!(download.prefix(), "download");
        assert!(download.is_hidden());

        bars.phase("rebuild", 0);
        assert!(
            download.is_finished(),
            "a new phase finishes the previous bar"
        );
        let rebuild = bars.current().expect("rebuild spinner");
        assert_eq!(rebuild.length(), None, "no total: a spinner");
        assert_eq!(rebuild.prefix(), "rebuild");

        bars.finish();
        assert!(rebuild.is_finished());
        assert_eq!(rebuild.message(), "done");
        assert!(bars.current().is_none());
    }

    #[test]
    fn advances_from_many_threads_add_up() {
        let bars = Bars::new(false);
        bars.phase("hash", 8 * 1000);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        bars.advance(1);
                    }
                });
            }
        });
        assert_eq!(bars.current().expect("bar").position(), 8000);
    }

    #[test]
    fn a_hidden_spinner_starts_and_clears() {
        let spinner = Spinner::start("backup", "waiting for the server", false);
        let bar = spinner.0.clone();
        assert!(bar.is_hidden());
        assert_eq!(bar.message(), "waiting for the server");
        drop(spinner);
        assert!(bar.is_finished());
    }
}

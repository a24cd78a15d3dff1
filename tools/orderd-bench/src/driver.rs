//! The load driver: client slots (workers × in-flight), closed or open loop, a warm-up phase
//! and a measured phase, counts per operation and outcome, an HDR latency histogram, and the
//! progress bar.
//!
//! Closed loop: every slot sends its next operation as soon as the previous one is answered;
//! the rate is what the target sustains at that concurrency. Open loop: operation `i` is due at
//! `start + i / rate` whatever happened before (see [`crate::schedule`]); a free slot takes the
//! next due operation, and its latency runs from the due time, so time spent waiting for a free
//! slot (a target that fell behind) is counted.
//!
//! A connection that sends several operations per request ([`Conn::batch_size`], the
//! `tcp-batch` target) gets them together: each counts as one operation, answered when its
//! request is; in the open loop a request goes when its last operation is due, and each
//! operation's latency runs from its own due time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::schedule::Schedule;
use crate::targets::{Conn, Outcome, Target};
use crate::workload::{Generator, OpKind, WorkloadShape};

/// Bounds of the latency histogram, in microseconds: 1 µs to 10 minutes, 3 significant digits.
pub const LATENCY_US_MAX: u64 = 600_000_000;
/// Latencies a slot keeps before it merges them into the shared histogram.
const SLOT_BUFFER_LATENCIES_MAX: usize = 4096;
/// Distinct error messages kept for the report.
pub const ERROR_SAMPLES_MAX: usize = 5;
/// Client slots at most (workers × in-flight).
pub const SLOTS_MAX: usize = 16_384;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Closed,
    Open { rate_per_s: f64 },
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
        }
    }
}

/// When a phase ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this many operations (closed loop) or scheduled operations (open loop).
    Count(u64),
    /// After this long.
    Duration(Duration),
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub workers: usize,
    pub in_flight: usize,
    pub mode: Mode,
    pub stop: Stop,
    pub warmup: Duration,
    /// Open loop: how long after the last due time unsent operations may still be sent; the
    /// rest are counted as unsent.
    pub drain: Duration,
    pub seed: u64,
    /// Show a progress bar (on stderr, and only when it is a terminal).
    pub progress: bool,
    /// The progress bar's label.
    pub label: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub ok: u64,
    pub refused: u64,
    pub errors: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.ok + self.refused + self.errors
    }

    fn add(&mut self, other: &Counts) {
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors += other.errors;
    }
}

/// One phase's results.
pub struct Measurement {
    /// Operations answered, by kind (indexed by [`OpKind`]).
    pub by_kind: [Counts; 4],
    /// From the phase's start to the last answer.
    pub elapsed: Duration,
    /// Per answered operation, in microseconds.
    pub latency: Histogram<u64>,
    /// Open loop: operations that were due but never sent (the drain ran out).
    pub unsent: u64,
    pub error_samples: Vec<String>,
}

impl Measurement {
    pub fn answered(&self) -> u64 {
        self.by_kind.iter().map(Counts::total).sum()
    }

    pub fn totals(&self) -> Counts {
        let mut total = Counts::default();
        for counts in &self.by_kind {
            total.add(counts);
        }
        total
    }

    /// Answered operations per second.
    pub fn rate_per_s(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The results of a whole run: the measured phase, and the confirmed placements of both
/// phases (what a stock check must account for).
pub struct RunResult {
    pub measured: Measurement,
    pub warmup_placed: u64,
    /// Placements of the warm-up answered by an error (their outcome is unknown to the client).
    pub warmup_place_errors: u64,
    /// The server's CPU time (user + system) during the measured phase, read from `/proc`
    /// before and after it; `None` where the target's server cannot be sampled.
    pub server_cpu: Option<Duration>,
}

struct Slot {
    conn: Box<dyn Conn>,
    generator: Generator,
}

/// What every slot of a phase shares.
struct Shared {
    next: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    errors: Mutex<Vec<String>>,
    /// Time of the last answer, in microseconds after the phase's start.
    last_answer_us: AtomicU64,
}

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Opens the slots, runs the warm-up and the measured phase on them, and closes them.
pub async fn run(
    target: &dyn Target,
    shape: Arc<WorkloadShape>,
    config: &DriverConfig,
) -> Result<RunResult> {
    let slots_wanted = config.workers * config.in_flight;
    if config.workers == 0 || config.in_flight == 0 || slots_wanted > SLOTS_MAX {
        bail!(
            "{} workers × {} in flight: need 1 to {SLOTS_MAX} client slots",
            config.workers,
            config.in_flight
        );
    }
    let mut slots = Vec::with_capacity(slots_wanted);
    for worker in 0..config.workers {
        for k in 0..config.in_flight {
            let conn = target
                .connect(worker)
                .await
                .with_context(|| format!("open the connection of worker {worker}, slot {k}"))?;
            let index = worker * config.in_flight + k;
            slots.push(Slot {
                conn,
                generator: Generator::new(shape.clone(), index, config.seed),
            });
        }
    }
    let mut warmup_placed = 0;
    let mut warmup_place_errors = 0;
    if !config.warmup.is_zero() {
        let (warm, returned) = phase(
            slots,
            config,
            Stop::Duration(config.warmup),
            format!("{} warm-up", config.label),
        )
        .await?;
        slots = returned;
        warmup_placed = warm.by_kind[OpKind::Place as usize].ok;
        warmup_place_errors = warm.by_kind[OpKind::Place as usize].errors;
    }
    let cpu_source = target.cpu_source();
    let cpu_before = cpu_source.sample();
    let (measured, slots) = phase(slots, config, config.stop, config.label.clone()).await?;
    let server_cpu = crate::cpu::used(cpu_before, cpu_source.sample());
    drop(slots);
    Ok(RunResult {
        measured,
        warmup_placed,
        warmup_place_errors,
        server_cpu,
    })
}

async fn phase(
    slots: Vec<Slot>,
    config: &DriverConfig,
    stop: Stop,
    label: String,
) -> Result<(Measurement, Vec<Slot>)> {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        latency: Mutex::new(latency_histogram()),
        errors: Mutex::new(Vec::new()),
        last_answer_us: AtomicU64::new(0),
    });
    // The number of operations of the phase, when it is known in advance.
    let (scheduled_total, end) = match (config.mode, stop) {
        (_, Stop::Count(n)) => (Some(n), None),
        (Mode::Closed, Stop::Duration(d)) => (None, Some(d)),
        (Mode::Open { rate_per_s }, Stop::Duration(d)) => {
            (Some(Schedule::new(rate_per_s).count_within(d)), Some(d))
        }
    };
    let progress = progress_bar(config.progress, &label, stop);
    let start = Instant::now();
    let ticker = {
        let shared = shared.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let answered = shared.answered.load(Ordering::Relaxed);
                let elapsed = start.elapsed();
                match stop {
                    Stop::Count(_) => progress.set_position(answered),
                    Stop::Duration(_) => progress.set_position(elapsed.as_millis() as u64),
                }
                progress.set_message(format!(
                    "{answered} ops, {:.0}/s",
                    answered as f64 / elapsed.as_secs_f64().max(1e-9)
                ));
            }
        })
    };
    let mut tasks = Vec::with_capacity(slots.len());
    for slot in slots {
        let shared = shared.clone();
        let mode = config.mode;
        let drain = config.drain;
        tasks.push(tokio::spawn(async move {
            match mode {
                Mode::Closed => closed_slot(slot, &shared, start, scheduled_total, end).await,
                Mode::Open { rate_per_s } => {
                    let total = scheduled_total.expect("an open-loop phase has a count");
                    let deadline =
                        end.unwrap_or_else(|| Schedule::new(rate_per_s).due(total)) + drain;
                    open_slot(
                        slot,
                        &shared,
                        start,
                        Schedule::new(rate_per_s),
                        total,
                        deadline,
                    )
                    .await
                }
            }
        }));
    }
    let mut returned = Vec::with_capacity(tasks.len());
    let mut by_kind = [Counts::default(); 4];
    for task in tasks {
        let (slot, counts) = task.await.context("a client slot panicked")?;
        for (sum, c) in by_kind.iter_mut().zip(counts.iter()) {
            sum.add(c);
        }
        returned.push(slot);
    }
    ticker.abort();
    progress.finish_and_clear();
    let elapsed = Duration::from_micros(shared.last_answer_us.load(Ordering::Relaxed))
        .max(Duration::from_micros(1));
    let unsent = match (config.mode, scheduled_total) {
        (Mode::Open { .. }, Some(total)) => {
            total.saturating_sub(shared.sent.load(Ordering::Relaxed))
        }
        _ => 0,
    };
    let latency = std::mem::replace(
        &mut *shared.latency.lock().expect("latency histogram"),
        latency_histogram(),
    );
    let error_samples = shared.errors.lock().expect("error samples").clone();
    Ok((
        Measurement {
            by_kind,
            elapsed,
            latency,
            unsent,
            error_samples,
        },
        returned,
    ))
}

fn progress_bar(enabled: bool, label: &str, stop: Stop) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let length = match stop {
        Stop::Count(n) => n,
        Stop::Duration(d) => d.as_millis() as u64,
    };
    // Hidden by indicatif itself when stderr is not a terminal.
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:>32} [{bar:30}] {percent:>3}% {msg}")
        .expect("valid progress template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar
}

/// A slot's own counts and latencies, merged into the shared histogram in chunks.
struct Recorder<'a> {
    shared: &'a Shared,
    counts: [Counts; 4],
    latencies_us: Vec<u64>,
}

impl<'a> Recorder<'a> {
    fn new(shared: &'a Shared) -> Recorder<'a> {
        Recorder {
            shared,
            counts: [Counts::default(); 4],
            latencies_us: Vec::with_capacity(SLOT_BUFFER_LATENCIES_MAX),
        }
    }

    fn record(&mut self, kind: OpKind, outcome: &Outcome, latency: Duration, start: Instant) {
        let counts = &mut self.counts[kind as usize];
        match outcome {
            Outcome::Ok(_) => counts.ok += 1,
            Outcome::Refused => counts.refused += 1,
            Outcome::Error(message) => {
                counts.errors += 1;
                let mut samples = self.shared.errors.lock().expect("error samples");
                if samples.len() < ERROR_SAMPLES_MAX && !samples.contains(message) {
                    samples.push(message.clone());
                }
            }
        }
        self.latencies_us
            .push((latency.as_micros() as u64).clamp(1, LATENCY_US_MAX));
        if self.latencies_us.len() == SLOT_BUFFER_LATENCIES_MAX {
            self.flush();
        }
        self.shared.answered.fetch_add(1, Ordering::Relaxed);
        self.shared
            .last_answer_us
            .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn flush(&mut self) {
        let mut histogram = self.shared.latency.lock().expect("latency histogram");
        for us in self.latencies_us.drain(..) {
            histogram.saturating_record(us);
        }
    }

    fn finish(mut self) -> [Counts; 4] {
        self.flush();
        self.counts
    }
}

async fn closed_slot(
    mut slot: Slot,
    shared: &Shared,
    start: Instant,
    count: Option<u64>,
    end: Option<Duration>,
) -> (Slot, [Counts; 4]) {
    let mut recorder = Recorder::new(shared);
    let batch = slot.conn.batch_size().max(1) as u64;
    let mut ops = Vec::with_capacity(batch as usize);
    loop {
        // Operations in this request: the batch, or what is left of a counted phase.
        let mut n = batch;
        if let Some(count) = count {
            let first = shared.next.fetch_add(batch, Ordering::Relaxed);
            if first >= count {
                break;
            }
            n = batch.min(count - first);
        }
        if let Some(end) = end {
            if start.elapsed() >= end {
                break;
            }
        }
        if batch == 1 {
            let op = slot.generator.next_op();
            let sent = Instant::now();
            shared.sent.fetch_add(1, Ordering::Relaxed);
            let outcome = slot.conn.execute(&op).await;
            recorder.record(op.kind(), &outcome, sent.elapsed(), start);
            slot.generator.observe(op.kind(), &outcome);
            continue;
        }
        ops.clear();
        ops.extend((0..n).map(|_| slot.generator.next_op()));
        let sent = Instant::now();
        shared.sent.fetch_add(n, Ordering::Relaxed);
        let outcomes = slot.conn.execute_batch(&ops).await;
        // Every operation of a request is answered when the request is.
        let latency = sent.elapsed();
        debug_assert_eq!(outcomes.len(), ops.len());
        for (op, outcome) in ops.iter().zip(&outcomes) {
            recorder.record(op.kind(), outcome, latency, start);
            slot.generator.observe(op.kind(), outcome);
        }
    }
    let counts = recorder.finish();
    (slot, counts)
}

async fn open_slot(
    mut slot: Slot,
    shared: &Shared,
    start: Instant,
    schedule: Schedule,
    total: u64,
    deadline: Duration,
) -> (Slot, [Counts; 4]) {
    let mut recorder = Recorder::new(shared);
    let batch = slot.conn.batch_size().max(1) as u64;
    let mut ops = Vec::with_capacity(batch as usize);
    loop {
        // A batch takes the next `batch` due operations and is sent when the last of them is
        // due; each operation's latency still runs from its own due time.
        let first = shared.next.fetch_add(batch, Ordering::Relaxed);
        if first >= total {
            break;
        }
        let n = batch.min(total - first);
        let due = schedule.due(first + n - 1);
        if start.elapsed() < due {
            tokio::time::sleep_until((start + due).into()).await;
        }
        if start.elapsed() > deadline {
            // Too late to send anything more: these and every later operation stay unsent.
            break;
        }
        if batch == 1 {
            let op = slot.generator.next_op();
            shared.sent.fetch_add(1, Ordering::Relaxed);
            let outcome = slot.conn.execute(&op).await;
            let latency = Schedule::latency(due, start.elapsed());
            recorder.record(op.kind(), &outcome, latency, start);
            slot.generator.observe(op.kind(), &outcome);
            continue;
        }
        ops.clear();
        ops.extend((0..n).map(|_| slot.generator.next_op()));
        shared.sent.fetch_add(n, Ordering::Relaxed);
        let outcomes = slot.conn.execute_batch(&ops).await;
        let done = start.elapsed();
        debug_assert_eq!(outcomes.len(), ops.len());
        for (i, (op, outcome)) in (first..).zip(ops.iter().zip(&outcomes)) {
            recorder.record(
                op.kind(),
                outcome,
                Schedule::latency(schedule.due(i), done),
                start,
            );
            slot.generator.observe(op.kind(), outcome);
        }
    }
    let counts = recorder.finish();
    (slot, counts)
}

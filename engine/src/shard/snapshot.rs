//! Recovery driving, the periodic tick (retries, deadlines, sweeps), and snapshots with the log
//! trim they allow.

use super::*;

impl Shard {
    /// After (re)start: re-send `Reserve` for every pending placement, and ask each order's
    /// shard whether the holds kept here still belong to live orders.
    pub(super) fn recover(&mut self) {
        let pending: Vec<OrderId> = self
            .data
            .orders
            .values()
            .filter(|o| o.status == OrderStatus::Pending)
            .map(|o| o.id)
            .collect();
        let count = self.data.shard_count;
        for order in pending {
            if self.pending.contains_key(&order) {
                continue;
            }
            let o = &self.data.orders[&order];
            let parts = group_by_shard(o.lines.iter().map(|l| (&*l.sku, l.qty)), count);
            let idem_key = self
                .data
                .idempotency
                .iter()
                .find(|(_, e)| e.outcome == IdemOutcome::Order(order.0))
                .map(|(k, _)| k.to_string());
            for (shard, lines) in &parts {
                self.router.send(
                    *shard,
                    ShardMsg::Reserve {
                        items: vec![HoldRequest {
                            order,
                            lines: lines.clone(),
                        }],
                    },
                );
            }
            let now = self.clock.instant();
            self.pending.insert(
                order,
                PendingPlacement {
                    parts,
                    answers: HashMap::new(),
                    waiters: Vec::new(),
                    idem_key,
                    // Recovered from storage: durable.
                    intent_seq: 0,
                    last_sent: Some(now),
                    started: now,
                },
            );
        }
        let now = self.clock.instant();
        let orders: Vec<OrderId> = self.data.holds.keys().copied().collect();
        for order in orders {
            self.hold_checks.insert(order, now);
        }
        self.send_hold_checks(|_| true);
        // Received returns whose restocks elsewhere are unconfirmed: asked again now (their
        // receipts are durable: recovered from storage).
        let unconfirmed: Vec<ReturnId> = self
            .data
            .returns
            .values()
            .filter(|r| !r.restock_pending.is_empty())
            .map(|r| r.id)
            .collect();
        for ret in unconfirmed {
            self.restocks.insert(ret, (0, None));
        }
        self.send_restocks(|_| true);
        if regressed(Regression::HoldCheckOnce) {
            self.hold_checks.clear(); // the old code asked once and forgot
        }
    }

    pub(super) fn tick(&mut self) {
        let retry = Duration::from_millis(self.settings.pending_retry_ms);
        let timeout = Duration::from_millis(self.settings.tunables.request_timeout_ms());
        let now = self.clock.instant();
        let durable = self.writer_stats.durable_seq[self.id as usize].load(Ordering::SeqCst);
        let mut expired: Vec<OrderId> = Vec::new();
        for (order, pending) in self.pending.iter_mut() {
            if now.duration_since(pending.started) >= timeout
                && !regressed(Regression::NoDeadlineAbort)
            {
                expired.push(*order);
                continue;
            }
            // Never before the intent is durable: a stock shard holds units only for orders
            // with a durable record.
            if durable < pending.intent_seq && !regressed(Regression::ReserveBeforeDurable) {
                continue;
            }
            if pending
                .last_sent
                .is_some_and(|sent| now.duration_since(sent) < retry)
            {
                continue;
            }
            pending.last_sent = Some(now);
            for (shard, lines) in &pending.parts {
                if !pending.answers.contains_key(shard) {
                    self.router.send(
                        *shard,
                        ShardMsg::Reserve {
                            items: vec![HoldRequest {
                                order: *order,
                                lines: lines.clone(),
                            }],
                        },
                    );
                }
            }
        }
        for order in expired {
            self.abort_expired(order, timeout);
        }
        if !regressed(Regression::HoldCheckOnce) {
            self.send_hold_checks(|asked| now.duration_since(asked) >= retry);
        }
        self.send_restocks(|sent| now.duration_since(sent) >= retry);
        if now.duration_since(self.last_sweep) >= Duration::from_secs(60) {
            self.last_sweep = now;
            let cutoff =
                self.clock.now_us() - self.settings.idempotency_retention_s as i64 * 1_000_000;
            let swept = self.data.sweep_idempotency(cutoff);
            if swept > 0 {
                tracing::debug!(message = "Swept idempotency keys.", shard = self.id, swept);
            }
        }
        if self.settings.idempotency_hot_s > 0
            && now.duration_since(self.last_idem_sweep)
                >= Duration::from_millis(self.settings.cold.sweep_interval_ms)
        {
            self.last_idem_sweep = now;
            self.sweep_idem();
        }
        if self.settings.cold.hot_retention_s > 0
            && now.duration_since(self.last_cold_sweep)
                >= Duration::from_millis(self.settings.cold.sweep_interval_ms)
        {
            self.last_cold_sweep = now;
            self.sweep_cold();
        }
        if self.events_since_snapshot + self.batch_events as u64 >= self.snapshot_due_events()
            && !self.snapshot_encoding()
        {
            self.snapshot();
        }
    }

    /// Events after which an automatic snapshot is due: `engine.snapshot_interval_events`, or
    /// half the orders in memory when that is more. A snapshot encodes every order in memory,
    /// at about the cost of replaying one event each (docs/PERFORMANCE.md): so the encoder
    /// encodes at most two orders per event applied, however many orders are hot, and a
    /// restart replays at most half as many events as it decodes orders, or the interval's
    /// worth when few are hot (the cold tier on). Half, not all: where every event adds an
    /// order that stays hot, "as many events as orders" would never come due again, while
    /// half makes the snapshots come at each doubling.
    fn snapshot_due_events(&self) -> u64 {
        snapshot_due_events(
            self.settings.snapshot_interval_events,
            self.data.orders.len() as u64,
        )
    }

    /// Takes a snapshot of the whole state at the current sequence (after flushing the
    /// current batch), keeps the previous one, and trims the log older than that one. An
    /// automatic snapshot waits while an earlier one is still being encoded.
    pub(super) fn snapshot(&mut self) -> SnapshotTaken {
        let shard = self.id;
        self.snapshot_with(false, move |_| {
            Box::new(move |ok| {
                if !ok {
                    tracing::error!(message = "Failed to write a snapshot.", shard);
                }
            })
        })
    }

    /// Takes a snapshot; with `purge`, every older snapshot and the whole log up to it are
    /// deleted (not only what precedes the previous snapshot). The continuation `done` makes
    /// (from what was taken) runs once the snapshot is written.
    ///
    /// The shard pauses only to freeze its state ([`ShardData::freeze`], O(1)): the view is
    /// encoded by this shard's encoder thread, which hands the snapshot and the log trim to
    /// the writer as one write, in the order the snapshots were taken. A snapshot whose shard
    /// actor was replaced meanwhile is refused by the writer (the generation guard).
    pub(super) fn snapshot_with(
        &mut self,
        purge: bool,
        done: impl FnOnce(SnapshotTaken) -> Continuation,
    ) -> SnapshotTaken {
        self.flush();
        let seq = self.data.last_seq;
        let started = self.clock.instant();
        let frozen = self.data.freeze();
        let pause_us = started.elapsed().as_micros() as u64;
        let taken = SnapshotTaken { seq, pause_us };
        let mut trims = Vec::new();
        let trim_below = if purge {
            Some(seq)
        } else if self.last_snapshot_seq > 0 {
            Some(self.last_snapshot_seq)
        } else {
            None
        };
        if let Some(below) = trim_below {
            trims.push(Write::DeleteRange {
                family: Family::Snap,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, below),
            });
            trims.push(Write::DeleteRange {
                family: Family::Log,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, below + 1),
            });
        }
        let job = Job {
            shard: self.id,
            frozen,
            log_digest: self.log_digest,
            trims,
            guard: (self.id, self.link.generation),
            done: done(taken),
        };
        match self.settings.snapshot_encoding {
            SnapshotEncoding::Inline => job.run(&self.writer),
            SnapshotEncoding::Thread => {
                let writer = self.writer.clone();
                let shard = self.id;
                self.encoder
                    .get_or_insert_with(|| Encoder::start(shard, writer))
                    .submit(job);
            }
        }
        tracing::info!(message = "Snapshot taken.", shard = self.id, seq, pause_us,);
        self.last_snapshot_seq = seq;
        self.events_since_snapshot = 0;
        taken
    }

    /// Whether a snapshot is still being encoded (an automatic one then waits).
    pub(super) fn snapshot_encoding(&self) -> bool {
        self.encoder
            .as_ref()
            .is_some_and(|encoder| encoder.in_flight.load(Ordering::SeqCst) > 0)
    }
}

/// One snapshot to encode and write.
pub(super) struct Job {
    shard: u16,
    frozen: crate::state::Frozen,
    log_digest: u64,
    /// The deletions of older snapshots and log that go in the same write.
    trims: Vec<Write>,
    guard: (u16, u64),
    done: Continuation,
}

impl Job {
    /// Encodes the snapshot and hands it, with its trims, to the writer as one write.
    fn run(self, writer: &Sender<WriterMsg>) {
        let started = std::time::Instant::now();
        let mut snapshot = self.frozen.to_snapshot();
        snapshot.log_digest = self.log_digest;
        let value = snapshot.encode_canonical();
        let bytes = value.len();
        let seq = self.frozen.last_seq;
        let mut writes = Vec::with_capacity(1 + self.trims.len());
        writes.push(Write::Put {
            family: Family::Snap,
            key: shard_key(self.shard, seq),
            value,
        });
        writes.extend(self.trims);
        tracing::debug!(
            message = "Snapshot encoded.",
            shard = self.shard,
            seq,
            bytes,
            encode_ms = started.elapsed().as_millis() as u64
        );
        let msg = WriterMsg::Raw {
            writes,
            guard: Some(self.guard),
            done: self.done,
        };
        if let Err(error) = writer.send(msg) {
            // The writer is gone (the engine is stopping): the snapshot was not written.
            if let WriterMsg::Raw { done, .. } = error.0 {
                done(false);
            }
        }
    }
}

/// A shard actor's snapshot encoder: one thread, fed in the order snapshots are taken, which
/// ends when the actor (its sender) is dropped, after the snapshots queued.
/// Snapshots waiting for a shard's encoder thread beyond the one it encodes. Each holds a frozen
/// copy of the shard's state, so the queue is bounded; an automatic snapshot is not even
/// submitted while one encodes, so only requested ones can find it full.
const ENCODER_QUEUE_MAX: usize = 2;

pub(super) struct Encoder {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Snapshots submitted and not yet handed to the writer.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Encoder {
    fn start(shard: u16, writer: Sender<WriterMsg>) -> Encoder {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(ENCODER_QUEUE_MAX);
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = in_flight.clone();
        std::thread::Builder::new()
            .name(format!("orderd-snap-{shard}"))
            .spawn(move || {
                for job in queue {
                    job.run(&writer);
                    count.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .expect("spawn the snapshot encoder thread");
        Encoder { jobs, in_flight }
    }

    fn submit(&self, job: Job) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // Never blocks the shard: a full queue (requests faster than encoding) or a dead
        // thread (it only panics on a bug) reports the snapshot as not written; the next one
        // covers its events.
        let refused = match self.jobs.try_send(job) {
            Ok(()) => return,
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tracing::warn!(
                    message = "Snapshot not taken: the encoder is still busy with earlier ones."
                );
                job
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(job)) => job,
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        (refused.done)(false);
    }
}

/// How many events after the last snapshot the next one comes due: the interval, or half the
/// hot orders when that is more (see [`Shard::snapshot_due_events`]).
fn snapshot_due_events(interval_events: u64, hot_orders: u64) -> u64 {
    interval_events.max(hot_orders / 2)
}

#[cfg(test)]
mod tests {
    use super::snapshot_due_events;

    /// Plays `events` events, every `order_every`-th adding a hot order (0: none; the cold
    /// tier off, or nothing ended yet), snapshotting whenever one comes due; returns the
    /// sequence numbers of the snapshots and the longest run of events a restart would have
    /// replayed. An event places at most one order, so one per event is the fastest growth.
    fn play(interval: u64, events: u64, order_every: u64) -> (Vec<u64>, u64) {
        let (mut hot, mut since, mut longest) = (0u64, 0u64, 0u64);
        let mut taken = Vec::new();
        for seq in 1..=events {
            if order_every > 0 && seq % order_every == 0 {
                hot += 1;
            }
            since += 1;
            longest = longest.max(since);
            if since >= snapshot_due_events(interval, hot) {
                taken.push(seq);
                since = 0;
            }
        }
        (taken, longest)
    }

    #[test]
    fn few_hot_orders_snapshot_every_interval() {
        for hot in [0, 1, 1_000, 399_999] {
            assert_eq!(snapshot_due_events(200_000, hot), 200_000);
        }
        assert_eq!(snapshot_due_events(200_000, 400_002), 200_001);
        let (taken, longest) = play(1_000, 10_000, 0);
        assert_eq!(taken, (1..=10).map(|i| i * 1_000).collect::<Vec<_>>());
        assert_eq!(longest, 1_000);
    }

    /// Where every event adds an order that stays hot, snapshots keep coming (at each
    /// doubling: a rule of "as many events as hot orders" never came due again), and a
    /// restart never replays more than half the hot orders' worth of events, or the interval.
    #[test]
    fn growing_hot_state_still_snapshots_at_each_doubling() {
        let interval = 1_000;
        let events = 1_000_000;
        let (taken, longest) = play(interval, events, 1);
        // 1,000 until 2,000 hot orders, then each snapshot at (about) twice the previous
        // sequence: when the events since reach half the hot orders.
        assert_eq!(&taken[..2], &[1_000, 2_000]);
        for pair in taken[1..].windows(2) {
            assert!(
                pair[1] + 1 >= pair[0] * 2 && pair[1] <= pair[0] * 2,
                "{taken:?}"
            );
        }
        assert!(*taken.last().unwrap() > events / 2, "{taken:?}");
        assert!(longest <= (events / 2).max(interval), "{longest}");
        // An order every other event (each one later cancelled, say): due more often.
        let (taken, longest) = play(interval, events, 2);
        assert!(taken.len() >= 15, "{taken:?}");
        assert!(longest <= (events / 4).max(interval), "{longest}");
    }
}

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
        if now.duration_since(self.last_sweep) >= Duration::from_secs(60) {
            self.last_sweep = now;
            let cutoff =
                self.clock.now_us() - self.settings.idempotency_retention_s as i64 * 1_000_000;
            let swept = self.data.sweep_idempotency(cutoff);
            if swept > 0 {
                tracing::debug!(message = "Swept idempotency keys.", shard = self.id, swept);
            }
        }
        if self.events_since_snapshot + self.batch_events as u64
            >= self.settings.snapshot_interval_events
        {
            self.snapshot();
        }
    }

    /// Writes a snapshot of the whole state at the current sequence (after flushing the
    /// current batch), keeps the previous one, and trims the log older than that one.
    pub(super) fn snapshot(&mut self) -> SnapshotTaken {
        let shard = self.id;
        self.snapshot_with(
            false,
            Box::new(move |ok| {
                if !ok {
                    tracing::error!(message = "Failed to write a snapshot.", shard);
                }
            }),
        )
    }

    /// Writes a snapshot; with `purge`, every older snapshot and the whole log up to it are
    /// deleted (not only what precedes the previous snapshot). `done` runs once it is written.
    pub(super) fn snapshot_with(&mut self, purge: bool, done: Continuation) -> SnapshotTaken {
        self.flush();
        let seq = self.data.last_seq;
        let started = self.clock.instant();
        let mut snapshot = self.data.to_snapshot();
        snapshot.log_digest = self.log_digest;
        let value = snapshot.encode_canonical();
        let bytes = value.len();
        let pause_us = started.elapsed().as_micros() as u64;
        let mut writes = vec![Write::Put {
            family: Family::Snap,
            key: shard_key(self.id, seq),
            value,
        }];
        if purge {
            writes.push(Write::DeleteRange {
                family: Family::Snap,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, seq),
            });
            writes.push(Write::DeleteRange {
                family: Family::Log,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, seq + 1),
            });
        } else if self.last_snapshot_seq > 0 {
            writes.push(Write::DeleteRange {
                family: Family::Snap,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, self.last_snapshot_seq),
            });
            writes.push(Write::DeleteRange {
                family: Family::Log,
                from: shard_key(self.id, 0),
                to: shard_key(self.id, self.last_snapshot_seq + 1),
            });
        }
        let msg = WriterMsg::Raw {
            writes,
            guard: Some((self.id, self.link.generation)),
            done,
        };
        let _ = self.writer.send(msg);
        tracing::info!(
            message = "Snapshot taken.",
            shard = self.id,
            seq,
            bytes,
            pause_ms = pause_us / 1000
        );
        self.last_snapshot_seq = seq;
        self.events_since_snapshot = 0;
        SnapshotTaken { seq, pause_us }
    }
}

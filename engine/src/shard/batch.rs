//! The shard's current log batch: events and audit entries appended, continuations that run
//! once the batch is durable, the flush to the log writer, and the placements answered together
//! (`place_many`, the inbox drain).

use super::*;

impl Shard {
    /// Applies an event to the state and appends it to the current batch.
    /// The public events the change raises ([`super::notices`]) go with the batch.
    pub(super) fn emit(&mut self, event: Event) {
        let tunables = &self.settings.tunables;
        if tunables.events_enabled() {
            let threshold = tunables.stock_low_threshold();
            let before = notices::before(&self.data, &event, threshold);
            self.data.apply(&event);
            let now = self.clock.now_us();
            notices::after(
                &self.data,
                &event,
                before,
                threshold,
                now,
                &mut self.notices,
            );
        } else {
            self.data.apply(&event);
        }
        if self.batch.is_empty() {
            event::batch_start(&mut self.batch);
            self.batch_first_seq = self.data.last_seq;
        }
        event::batch_push(&mut self.batch, &event);
        self.batch_events += 1;
    }

    /// Records a client's mutation, just applied, in the audit trail: the entry is written
    /// with the current batch.
    pub(super) fn audit(&mut self, actor: &str, action: &str, target: String, detail: String) {
        let now = self.clock.now_us();
        self.audit.push(now, actor, action, target, detail);
    }

    /// Records `order.place` for an order just placed (its `OrderPlaced` or `OrderConfirmed`
    /// applied): actor, customer, lines and total as the state holds them.
    pub(super) fn audit_placed(&mut self, id: OrderId) {
        let Some(order) = self.data.orders.get(&id) else {
            return;
        };
        let actor = order.placed_by.clone();
        let detail = format!(
            "customer={} lines={} total={}",
            order.customer,
            order.lines.len(),
            crate::state::order_total(order)
        );
        self.audit(&actor, "order.place", id.to_string(), detail);
    }

    /// Runs `continuation` once everything this shard has applied so far is durable: at once
    /// when nothing is in flight, else after the current batch is written.
    pub(super) fn after_durable(&mut self, continuation: Continuation) {
        let durable = self.writer_stats.durable_seq[self.id as usize].load(Ordering::SeqCst);
        if self.batch_events == 0
            && self.batch_continuations.is_empty()
            && durable >= self.submitted_seq
        {
            continuation(true);
        } else {
            self.batch_continuations.push(continuation);
        }
    }

    /// Hands the current batch to the log writer.
    pub(super) fn flush(&mut self) {
        self.flush_scheduled = false;
        if !self.outbox.is_empty() {
            let outbox = std::mem::take(&mut self.outbox);
            let router = self.router.clone();
            let shard = self.id;
            // First in the batch: the messages leave before this batch's replies, so a client
            // that hears "cancelled" and then reads stock on another shard sees the release.
            self.batch_continuations.insert(
                0,
                Box::new(move |ok| {
                    if !ok {
                        return;
                    }
                    // Per destination: reserves, then shipments, then releases, so a `Release`
                    // never overtakes a `Reserve` or a `Ship` of the same order.
                    for (to, out) in outbox {
                        if !out.reserve.is_empty() {
                            router.send(to, ShardMsg::Reserve { items: out.reserve });
                        }
                        if !out.answers.is_empty() {
                            let items = out.answers;
                            router.send(to, ShardMsg::ReserveResults { shard, items });
                        }
                        if !out.ship.is_empty() {
                            router.send(to, ShardMsg::Ship { items: out.ship });
                        }
                        if !out.release.is_empty() {
                            router.send(
                                to,
                                ShardMsg::Release {
                                    orders: out.release,
                                },
                            );
                        }
                        if !out.kept.is_empty() {
                            router.send(to, ShardMsg::HoldsKept { orders: out.kept });
                        }
                        if !out.restock.is_empty() {
                            router.send(to, ShardMsg::Restock { items: out.restock });
                        }
                        if !out.restocked.is_empty() {
                            router.send(
                                to,
                                ShardMsg::Restocked {
                                    shard,
                                    returns: out.restocked,
                                },
                            );
                        }
                    }
                }),
            );
        }
        if self.batch_events == 0
            && self.batch_continuations.is_empty()
            && self.extra_writes.is_empty()
        {
            return;
        }
        let mut audit = Vec::new();
        let value = if self.batch_events > 0 {
            let value = std::mem::take(&mut self.batch);
            self.log_digest = xxhash_rust::xxh3::xxh3_64_with_seed(&value, self.log_digest);
            audit = self
                .audit
                .seal(self.batch_first_seq, self.data.last_seq, &value);
            Some(value)
        } else {
            None
        };
        audit.append(&mut self.extra_writes);
        let msg = WriterMsg::Batch {
            shard: self.id,
            generation: self.link.generation,
            first_seq: self.batch_first_seq,
            last_seq: self.data.last_seq,
            value,
            audit,
            notices: std::mem::take(&mut self.notices),
            continuations: std::mem::take(&mut self.batch_continuations),
        };
        self.events_since_snapshot += self.batch_events as u64;
        self.submitted_seq = self.data.last_seq;
        self.batch_events = 0;
        self.batch_first_seq = self.data.last_seq + 1;
        if self.writer.send(msg).is_err() {
            tracing::error!(
                message = "Log writer is gone; shard cannot make progress.",
                shard = self.id
            );
        }
        self.publish_gauges();
    }

    /// After a message: flush a full batch now, or ask the shell for a flush once the queued
    /// messages are handled (smart batching).
    pub(super) fn schedule_flush(&mut self) -> Step {
        if self.batch_events >= self.settings.tunables.batch_events_max() {
            self.flush();
        } else if !self.flush_scheduled
            && (self.batch_events > 0
                || !self.batch_continuations.is_empty()
                || !self.outbox.is_empty()
                || !self.extra_writes.is_empty())
        {
            self.flush_scheduled = true;
            return Step::FlushSoon;
        }
        Step::Done
    }

    /// Sends a placement's outcome once durable: the order as placed, or the error.
    pub(super) fn respond(&mut self, (waiter, result): (Waiter, Result<OrderId, CommandError>)) {
        match waiter {
            Waiter::One(reply) => {
                let view = self.outcome_view(result);
                self.after_durable(answer(reply, view));
            }
            Waiter::Batch(collector, index) => {
                collector.results.lock().expect("collector poisoned")[index] = Some(result);
                self.after_durable(Box::new(move |ok| collector.finish(&[index], 1, ok)));
            }
            Waiter::Views(collector, index) => {
                let view = self.outcome_view(result);
                collector.results.lock().expect("collector poisoned")[index] = Some(view);
                self.after_durable(Box::new(move |ok| collector.finish(&[index], 1, ok)));
            }
        }
    }

    /// A placement's outcome as its order's view.
    pub(super) fn outcome_view(
        &self,
        result: Result<OrderId, CommandError>,
    ) -> Result<OrderView, CommandError> {
        result.and_then(|id| match self.data.placed_view(id) {
            Some(view) => Ok(view),
            None if self.pending.contains_key(&id) => Err(CommandError::Unavailable(
                "placement still in progress".into(),
            )),
            // A placement long ago, answered again: the order went cold.
            None => Err(CommandError::Cold(ColdAnswer::Placed(id))),
        })
    }

    /// Places every order of a `PlaceBatch` or of a drained submission in this step: one log
    /// batch, one durability gate for the outcomes known at once, one reply when the last
    /// outcome (a cross-shard order may take longer) is durable.
    pub(super) fn place_many<T: Send + 'static>(
        &mut self,
        places: Vec<PlaceOrder>,
        collector: Arc<BatchCollector<T>>,
        waiter: fn(Arc<BatchCollector<T>>, usize) -> Waiter,
        convert: fn(&Shard, Result<OrderId, CommandError>) -> Result<T, CommandError>,
    ) {
        let mut ready = Vec::with_capacity(places.len());
        let mut outcomes = Vec::with_capacity(places.len());
        for (index, place) in places.into_iter().enumerate() {
            if let Some((_, result)) = self.place(place, waiter(collector.clone(), index)) {
                outcomes.push((index, convert(self, result)));
            }
            // `engine.batch_events_max` bounds a log batch here too: a large submission is
            // written as several batches. The gate below waits for the last, and this shard's
            // batches become durable in order (a failed one poisons the shard, so a later one
            // is never written after it).
            if self.batch_events >= self.settings.tunables.batch_events_max() {
                self.flush();
            }
        }
        {
            let mut results = collector.results.lock().expect("collector poisoned");
            for (index, result) in outcomes {
                results[index] = Some(result);
                ready.push(index);
            }
        }
        // One durability gate for every outcome known now (plus one unit of `remaining` for
        // the gate itself, so an all-pending batch waits for it too).
        self.after_durable(Box::new(move |ok| {
            collector.finish(&ready, ready.len() + 1, ok)
        }));
    }

    /// Places everything queued in the inbox ([`crate::inbox`]): each submission answers
    /// once all of its outcomes are durable.
    pub(super) fn drain_inbox(&mut self) {
        for submission in self.link.inbox.take() {
            let collector = Arc::new(BatchCollector::new(
                submission.places.len(),
                submission.reply,
            ));
            self.place_many(
                submission.places,
                collector,
                Waiter::Views,
                Shard::outcome_view,
            );
        }
    }
}

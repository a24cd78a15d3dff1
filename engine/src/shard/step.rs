//! The shard's entry point: [`Shard::step`] takes one message (inside `catch_unwind`), and the
//! actix actor around it is the thin shell that feeds it its mailbox, ticks and flushes.

use super::*;

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        // Retries and deadlines, and the cold tier's sweeps when they are more frequent.
        let mut every_ms = self.settings.pending_retry_ms;
        if self.settings.cold.hot_retention_s > 0 || self.settings.idempotency_hot_s > 0 {
            every_ms = every_ms.min(self.settings.cold.sweep_interval_ms);
        }
        let interval = Duration::from_millis(every_ms.clamp(10, 1000));
        ctx.run_interval(interval, |_, ctx| ctx.notify(ShardMsg::Tick));
    }
}

impl Handler<ShardMsg> for Shard {
    type Result = ();

    /// The shell: one message through [`Shard::step`], then what the step asks for.
    fn handle(&mut self, msg: ShardMsg, ctx: &mut Context<Self>) {
        match self.step(msg) {
            Step::Done => {}
            Step::FlushSoon => ctx.notify(ShardMsg::Flush),
            Step::Stop => ctx.stop(),
        }
    }
}

impl Shard {
    /// The shard's id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// This actor's generation.
    pub fn generation(&self) -> u64 {
        self.link.generation
    }

    /// The shard's state (read by the simulator's invariant checks).
    pub fn data(&self) -> &ShardData {
        &self.data
    }

    /// Placements waiting for their parts' answers: (order, age).
    pub fn pending_placements(&self) -> Vec<(OrderId, Duration)> {
        let now = self.clock.instant();
        self.pending
            .iter()
            .map(|(id, p)| (*id, now.saturating_duration_since(p.started)))
            .collect()
    }

    /// Holds whose owner has not answered this actor's `HoldCheck` yet.
    pub fn awaiting_hold_checks(&self) -> usize {
        self.hold_checks.len()
    }

    /// True once a panic or a replacement stopped it.
    /// Received returns whose restocks on other shards are not yet confirmed.
    pub fn awaiting_restocks(&self) -> usize {
        self.restocks.len()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Handles one message: the whole of the state machine's input. Every message is applied
    /// inside `catch_unwind`; a panic poisons the shard and reports a fault.
    pub fn step(&mut self, msg: ShardMsg) -> Step {
        if self.poisoned {
            return Step::Stop; // dropped: a reply inside it answers `unavailable`
        }
        if self.writer_stats.generations[self.id as usize].load(Ordering::SeqCst)
            != self.link.generation
        {
            tracing::warn!(
                message = "Replaced shard actor woke up; it stops without writing anything.",
                shard = self.id,
                generation = self.link.generation
            );
            self.poison();
            return Step::Stop;
        }
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(msg)));
        match applied {
            Ok(step) => {
                self.current = None;
                step
            }
            Err(payload) => {
                self.on_panic(payload);
                Step::Stop
            }
        }
    }

    /// After a panic: the state may be half-changed, so nothing more is applied or written.
    pub(super) fn on_panic(&mut self, payload: Box<dyn std::any::Any + Send>) {
        let message = panic_message(payload.as_ref());
        let command = self.current.take();
        tracing::error!(
            message = "Shard panicked; it stops and the supervisor rebuilds it from storage.",
            shard = self.id,
            command = command.map(|(kind, _)| kind),
            panic = %message
        );
        self.poison();
        let fault = Fault::Panic {
            shard: self.id,
            generation: self.link.generation,
            command,
            message,
        };
        if let Err(error) = self.link.faults.try_send(fault) {
            tracing::error!(message = "Could not report a shard fault.", shard = self.id, %error);
        }
    }

    /// Drops everything not yet written: the batch, its continuations (answered `false`, so
    /// their waiters hear `unavailable`), protocol messages waiting for it, and the waiters of
    /// pending placements (the placements themselves are durable and finish after the rebuild).
    pub fn poison(&mut self) {
        self.poisoned = true;
        self.batch.clear();
        self.notices.clear();
        self.batch_events = 0;
        self.outbox.clear();
        for continuation in std::mem::take(&mut self.batch_continuations) {
            continuation(false);
        }
        self.pending.clear();
    }

    pub(super) fn dispatch(&mut self, msg: ShardMsg) -> Step {
        match msg {
            ShardMsg::Client(cmd) => {
                self.gauges.handled.fetch_add(1, Ordering::Relaxed);
                self.client(cmd);
            }
            ShardMsg::Reserve { items } => {
                for HoldRequest { order, lines } in items {
                    self.reserve(order, lines);
                }
            }
            ShardMsg::ReserveResults { shard, items } => {
                for HoldAnswer { order, outcome } in items {
                    self.reserve_result(order, shard, outcome);
                }
            }
            ShardMsg::Release { orders } => {
                for order in orders {
                    self.release(order);
                }
            }
            ShardMsg::Ship { items } => {
                for ShippedPart { order, shipped } in items {
                    self.ship_hold(order, shipped);
                }
            }
            ShardMsg::HoldCheck { from, orders } => self.hold_check(from, orders),
            ShardMsg::HoldsKept { orders } => {
                for order in orders {
                    self.hold_checks.remove(&order);
                }
            }
            ShardMsg::Restock { items } => {
                for part in items {
                    self.restock(part);
                }
            }
            ShardMsg::Restocked { shard, returns } => {
                for ret in returns {
                    self.restock_done(shard, ret);
                }
            }
            ShardMsg::Recover => {
                self.recover();
                // Submissions queued while no actor ran (their wake-up died with the old
                // one) are taken now.
                self.drain_inbox();
            }
            ShardMsg::Drain => self.drain_inbox(),
            ShardMsg::Heartbeat { n } => {
                self.gauges.heartbeat_seen.store(n, Ordering::SeqCst);
                return Step::Done;
            }
            ShardMsg::Flush => {
                self.flush();
                return Step::Done;
            }
            ShardMsg::Tick => self.tick(),
            ShardMsg::Stop { done } => {
                self.flush();
                let _ = self.writer.send(WriterMsg::Batch {
                    shard: self.id,
                    generation: self.link.generation,
                    first_seq: self.data.last_seq + 1,
                    last_seq: self.data.last_seq,
                    value: None,
                    audit: Vec::new(),
                    notices: Vec::new(),
                    continuations: vec![Box::new(move |_| {
                        let _ = done.send(());
                    })],
                });
                self.poisoned = true;
                return Step::Stop;
            }
        }
        self.schedule_flush()
    }
}

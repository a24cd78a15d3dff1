//! The cross-shard reservation protocol: a placement that spans shards reserves on each part's
//! shard, confirms or releases, retries and expires, and hold checks that find orphans.

use super::*;

impl Shard {
    /// The cross-shard path: durable intent first, then `Reserve` to every part's shard.
    pub(super) fn place_cross(&mut self, place: PlaceOrder, reply: Waiter) {
        let parts = group_by_shard(
            place.lines.iter().map(|l| (l.sku.as_str(), l.qty)),
            self.data.shard_count,
        );
        let (record, idem) = self.record(place, self.clock.now_us());
        let order = OrderId(record.id);
        let idem_key = idem.as_ref().map(|i| i.key.clone());
        self.emit(Event::OrderPending {
            order: record,
            idem,
        });
        let now = self.clock.instant();
        self.pending.insert(
            order,
            PendingPlacement {
                parts: parts.clone(),
                answers: HashMap::new(),
                waiters: vec![reply],
                idem_key,
                intent_seq: self.data.last_seq,
                last_sent: Some(now),
                started: now,
            },
        );
        // Sent after this batch (holding `OrderPending`) is durable: see `flush`.
        for (shard, lines) in parts {
            self.outbox
                .entry(shard)
                .or_default()
                .reserve
                .push(HoldRequest { order, lines });
        }
    }

    pub(super) fn reserve(&mut self, order: OrderId, lines: Vec<(String, u32)>) {
        let held_as_asked = match self.data.holds.get(&order) {
            None => false,
            Some(_) if regressed(Regression::HoldNotTiedToLines) => true,
            Some(held) => {
                held.len() == lines.len()
                    && lines
                        .iter()
                        .all(|(sku, qty)| held.iter().any(|h| *h.sku == **sku && h.qty == *qty))
            }
        };
        if !held_as_asked && self.data.holds.contains_key(&order) {
            // A hold under this id that is not this order's (lines differ): it belongs to
            // nothing live, so it is released before this order's own reservation.
            tracing::warn!(message = "Released a hold whose lines differ from its order's.", shard = self.id, order = %order);
            self.emit(Event::Released { order: order.0 });
        }
        let outcome = if held_as_asked {
            HoldOutcome::Held(self.held_at(order))
        } else {
            let short: Vec<String> = lines
                .iter()
                .filter(|(sku, qty)| self.data.available(sku) < *qty as u64)
                .map(|(sku, _)| sku.clone())
                .collect();
            if short.is_empty() {
                self.emit(Event::Reserved {
                    order: order.0,
                    lines,
                });
                HoldOutcome::Held(self.held_at(order))
            } else {
                HoldOutcome::Short(short)
            }
        };
        // Answered after this batch (holding `Reserved`) is durable: see `flush`.
        self.outbox
            .entry(order.shard())
            .or_default()
            .answers
            .push(HoldAnswer { order, outcome });
    }

    pub(super) fn reserve_result(&mut self, order: OrderId, shard: u16, outcome: HoldOutcome) {
        let Some(pending) = self.pending.get_mut(&order) else {
            return;
        };
        pending.answers.insert(shard, outcome);
        if pending.answers.len() < pending.parts.len() {
            return;
        }
        let mut pending = self.pending.remove(&order).expect("present");
        // Where each part was reserved (its lines at `default` when its shard said nothing).
        let mut allocations: Vec<(String, String, u32)> = Vec::new();
        let mut elsewhere = false;
        for (shard, lines) in &pending.parts {
            match pending.answers.get(shard) {
                Some(HoldOutcome::Held(at)) if !at.is_empty() => {
                    elsewhere = true;
                    allocations.extend(at.iter().cloned());
                }
                _ => allocations.extend(
                    lines
                        .iter()
                        .map(|(sku, qty)| (sku.clone(), DEFAULT_LOCATION.to_string(), *qty)),
                ),
            }
        }
        let mut short: Vec<String> = std::mem::take(&mut pending.answers)
            .into_values()
            .flat_map(|outcome| match outcome {
                HoldOutcome::Held(_) => Vec::new(),
                HoldOutcome::Short(skus) => skus,
            })
            .collect();
        short.sort_unstable();
        short.dedup();
        let now = self.clock.now_us();
        if short.is_empty() {
            if elsewhere {
                self.emit(Event::OrderAllocated {
                    order: order.0,
                    allocations,
                });
            }
            self.emit(Event::OrderConfirmed {
                order: order.0,
                at_us: now,
            });
            self.audit_placed(order);
            for waiter in pending.waiters {
                self.respond((waiter, Ok(order)));
            }
        } else {
            self.emit(Event::OrderAborted {
                order: order.0,
                short: short.clone(),
                idem_key: pending.idem_key,
                at_us: now,
            });
            for (shard, _) in &pending.parts {
                self.outbox.entry(*shard).or_default().release.push(order);
            }
            for waiter in pending.waiters {
                self.respond((
                    waiter,
                    Err(CommandError::InsufficientStock {
                        skus: short.clone(),
                    }),
                ));
            }
        }
    }

    /// Where this shard holds an order's part, as a `Held` answer carries it (empty: all at
    /// `default`).
    fn held_at(&self, order: OrderId) -> Vec<(String, String, u32)> {
        self.data
            .allocated
            .get(&order)
            .map_or(Vec::new(), |allocation| {
                allocation
                    .iter()
                    .map(|a| (a.sku.to_string(), a.location.to_string(), a.qty))
                    .collect()
            })
    }

    /// A placement whose parts have not all answered by `engine.request_timeout_ms`: aborted
    /// (its idempotency key is freed, so a retry places it anew), every part released, and
    /// its waiters answered `unavailable`.
    pub(super) fn abort_expired(&mut self, order: OrderId, timeout: Duration) {
        let Some(pending) = self.pending.remove(&order) else {
            return;
        };
        let missing: Vec<u16> = pending
            .parts
            .iter()
            .map(|(shard, _)| *shard)
            .filter(|shard| !pending.answers.contains_key(shard))
            .collect();
        tracing::warn!(
            message = "Aborted a placement whose parts did not answer in time.",
            shard = self.id,
            order = %order,
            missing = ?missing,
            timeout_ms = timeout.as_millis() as u64
        );
        self.emit(Event::OrderAborted {
            order: order.0,
            short: Vec::new(),
            idem_key: pending.idem_key,
            at_us: self.clock.now_us(),
        });
        for (shard, _) in &pending.parts {
            self.outbox.entry(*shard).or_default().release.push(order);
        }
        let detail = format!(
            "shards {missing:?} did not answer within engine.request_timeout_ms ({} ms); the placement was aborted and a retry with the same Idempotency-Key places it anew",
            timeout.as_millis()
        );
        for waiter in pending.waiters {
            self.respond((waiter, Err(CommandError::Unavailable(detail.clone()))));
        }
    }

    pub(super) fn release(&mut self, order: OrderId) {
        self.hold_checks.remove(&order);
        if self.data.holds.contains_key(&order) {
            self.emit(Event::Released { order: order.0 });
        }
    }

    /// A stock shard's half of shipping a cross-shard order: moves the units out of the hold.
    pub(super) fn ship_hold(&mut self, order: OrderId, shipped: Vec<(String, u32)>) {
        let Some(held) = self.data.holds.get(&order) else {
            return;
        };
        let changes = shipped.iter().any(|(sku, total)| {
            held.iter()
                .any(|h| *h.sku == **sku && *total > h.shipped && *total <= h.qty)
        });
        let valid = shipped
            .iter()
            .all(|(sku, total)| held.iter().any(|h| *h.sku == **sku && *total <= h.qty));
        if changes && valid {
            self.emit(Event::HoldShipped {
                order: order.0,
                shipped,
            });
        } else if !valid {
            tracing::error!(message = "Ignored a shipment that does not match its hold.", shard = self.id, order = %order);
        }
    }

    /// A stock shard's half of receiving a return: restocks the units of its SKUs once per
    /// return (a repeat finds the return in the ledger and restocks nothing), and answers the
    /// order's shard once that is durable.
    pub(super) fn restock(&mut self, part: RestockPart) {
        let count = self.data.shard_count;
        let valid = part.lines.iter().all(|l| {
            shard_of_sku(&l.sku, count) == self.id
                && l.qty > 0
                && crate::domain::sku_is_valid(&l.sku)
        });
        if !valid {
            tracing::error!(message = "Ignored a restock of SKUs this shard does not own.", shard = self.id, ret = %part.ret);
            return;
        }
        let repeat =
            self.data.restocked.contains_key(&part.ret) && !regressed(Regression::RestockTwice);
        if !repeat {
            self.emit(Event::Restocked {
                ret: part.ret.0,
                lines: part.lines,
            });
        }
        // Answered after this batch (holding `Restocked`, or the earlier one that did) is
        // durable: see `flush`.
        self.outbox
            .entry(part.ret.shard())
            .or_default()
            .restocked
            .push(part.ret);
    }

    /// The order's shard hears that `shard` restocked a return's units.
    pub(super) fn restock_done(&mut self, shard: u16, ret: ReturnId) {
        let Some(r) = self.data.returns.get(&ret) else {
            return;
        };
        if r.restock_pending.contains(&shard) {
            self.emit(Event::RestockConfirmed { ret: ret.0, shard });
        }
        if self
            .data
            .returns
            .get(&ret)
            .is_none_or(|r| r.restock_pending.is_empty())
        {
            self.restocks.remove(&ret);
        }
    }

    /// Sends `Restock` again for received returns not yet confirmed by every stock shard,
    /// those `due` selects, once their receipt is durable.
    pub(super) fn send_restocks(&mut self, due: impl Fn(Instant) -> bool) {
        let durable = self.writer_stats.durable_seq[self.id as usize].load(Ordering::SeqCst);
        let now = self.clock.instant();
        let mut by_shard: BTreeMap<u16, Vec<RestockPart>> = BTreeMap::new();
        let count = self.data.shard_count;
        for (ret, (seq, sent)) in self.restocks.iter_mut() {
            if durable < *seq || sent.is_some_and(|at| !due(at)) {
                continue;
            }
            let Some(r) = self.data.returns.get(ret) else {
                continue;
            };
            *sent = Some(now);
            for shard in r.restock_pending.iter() {
                let lines = r
                    .received
                    .iter()
                    .filter(|l| l.restock && shard_of_sku(&l.sku, count) == *shard)
                    .map(|l| RestockLine {
                        sku: l.sku.clone(),
                        qty: l.qty,
                        location: l.location.clone(),
                    })
                    .collect();
                by_shard
                    .entry(*shard)
                    .or_default()
                    .push(RestockPart { ret: *ret, lines });
            }
        }
        for (shard, items) in by_shard {
            self.router.send(shard, ShardMsg::Restock { items });
        }
    }

    /// Asks each owner about the holds `due` selects among those not yet answered.
    pub(super) fn send_hold_checks(&mut self, due: impl Fn(Instant) -> bool) {
        let mut by_owner: BTreeMap<u16, Vec<OrderId>> = BTreeMap::new();
        let now = self.clock.instant();
        for (order, asked) in self.hold_checks.iter_mut() {
            if due(*asked) {
                *asked = now;
                by_owner.entry(order.shard()).or_default().push(*order);
            }
        }
        for (owner, orders) in by_owner {
            self.router.send(
                owner,
                ShardMsg::HoldCheck {
                    from: self.id,
                    orders,
                },
            );
        }
    }

    pub(super) fn hold_check(&mut self, from: u16, orders: Vec<OrderId>) {
        // Shipped units first (a `Ship` lost in a crash is sent again), then releases.
        let count = self.data.shard_count;
        let mut ship = Vec::new();
        for id in &orders {
            if let Some(order) = self.data.orders.get(id) {
                let shipped: Vec<(String, u32)> = order
                    .lines
                    .iter()
                    .filter(|l| l.shipped > 0 && shard_of_sku(&l.sku, count) == from)
                    .map(|l| (l.sku.to_string(), l.shipped))
                    .collect();
                if order.cross && !shipped.is_empty() {
                    ship.push(ShippedPart {
                        order: *id,
                        shipped,
                    });
                }
            }
        }
        if !ship.is_empty() {
            self.outbox.entry(from).or_default().ship.extend(ship);
        }
        let (kept, release): (Vec<OrderId>, Vec<OrderId>) =
            orders
                .into_iter()
                .partition(|id| match self.data.orders.get(id) {
                    // A pending placement keeps its holds until it is decided.
                    Some(order) => order.cross && order.status.holds_stock(),
                    None => false,
                });
        // Answered once what this shard applied is durable (a cancel the answer relies on
        // must not be lost in a crash): the outbox goes out after the current batch.
        let out = self.outbox.entry(from).or_default();
        out.release.extend(release);
        out.kept.extend(kept);
    }
}

//! Client commands: placement on one shard, stock adjustments, customers, cancels, shipments,
//! reads and lists, re-sealing personal data, and the idempotency records they consult.

use super::*;

impl Shard {
    pub(super) fn client(&mut self, cmd: ClientCmd) {
        self.current = fingerprint(&cmd);
        if let Some((kind, fingerprint)) = self.current {
            if self.link.quarantine.contains(fingerprint) {
                refuse(cmd, quarantined(kind, fingerprint));
                return;
            }
        }
        match cmd {
            ClientCmd::AdjustStock {
                sku,
                location,
                delta,
                reason,
                actor,
                idempotency,
                reply,
            } => {
                failpoint::on_sku(&sku);
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Adjusted { on_hand, reserved })) => Ok(StockView {
                        // Remembered before locations: all of it at `default`.
                        locations: vec![crate::domain::LocationStockView {
                            location: DEFAULT_LOCATION.into(),
                            on_hand,
                            reserved,
                            available: on_hand - reserved,
                        }],
                        sku,
                        on_hand,
                        reserved,
                        available: on_hand - reserved,
                    }),
                    Some(Ok(IdemOutcome::AdjustedAt {
                        on_hand,
                        reserved,
                        locations,
                    })) => Ok(StockView {
                        locations: locations
                            .into_iter()
                            .map(
                                |(location, on_hand, reserved)| crate::domain::LocationStockView {
                                    location,
                                    on_hand,
                                    reserved,
                                    available: on_hand - reserved,
                                },
                            )
                            .collect(),
                        sku,
                        on_hand,
                        reserved,
                        available: on_hand - reserved,
                    }),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.adjust(sku, &location, delta, reason, &actor);
                        if let Ok(view) = &result {
                            let detail = if location == DEFAULT_LOCATION {
                                format!("delta={delta:+}")
                            } else {
                                format!("delta={delta:+} location={location}")
                            };
                            self.audit(&actor, "stock.adjust", view.sku.clone(), detail);
                            self.remember(
                                idempotency,
                                IdemOutcome::AdjustedAt {
                                    on_hand: view.on_hand,
                                    reserved: view.reserved,
                                    locations: view
                                        .locations
                                        .iter()
                                        .map(|l| (l.location.clone(), l.on_hand, l.reserved))
                                        .collect(),
                                },
                            );
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::GetStock { sku, reply } => {
                let result = self.data.stock_view(&sku).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, result));
            }
            ClientCmd::TransferStock {
                sku,
                from,
                to,
                qty,
                reason,
                actor,
                idempotency,
                reply,
            } => {
                failpoint::on_sku(&sku);
                let result = match self.remembered(&idempotency) {
                    // A repeat transfers nothing and answers the stock as it is now.
                    Some(Ok(IdemOutcome::Transferred)) => {
                        self.data.stock_view(&sku).ok_or(CommandError::NotFound)
                    }
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.transfer(sku, from, to, qty, reason, &actor);
                        if result.is_ok() {
                            self.remember(idempotency, IdemOutcome::Transferred);
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::SetLocation {
                id,
                name,
                priority,
                locations_max,
                actor,
                audit,
                reply,
            } => {
                let result = self.set_location(id, name, priority, locations_max, &actor, audit);
                self.after_durable(answer(reply, result));
            }
            ClientCmd::ListLocations { reply } => {
                let views = self.data.location_views();
                self.after_durable(answer(reply, Ok(views)));
            }
            ClientCmd::SetPrice {
                sku,
                price,
                active,
                actor,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::PriceSet {
                        price,
                        active,
                        at_us,
                    })) => Ok(CatalogView {
                        sku,
                        price,
                        active,
                        updated_at_us: at_us,
                    }),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.set_price(sku, price, active, &actor);
                        if let Ok(view) = &result {
                            self.remember(
                                idempotency,
                                IdemOutcome::PriceSet {
                                    price: view.price,
                                    active: view.active,
                                    at_us: view.updated_at_us,
                                },
                            );
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::GetPrice { sku, reply } => {
                let result = self.data.catalog_view(&sku).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, result));
            }
            ClientCmd::CatalogPage {
                after,
                limit,
                reply,
            } => {
                let page = self
                    .data
                    .catalog_page(after.as_deref(), limit.min(crate::domain::CATALOG_PAGE_MAX));
                self.after_durable(answer(reply, Ok(page)));
            }
            ClientCmd::CatalogPrices { skus, reply } => {
                let prices = self.data.catalog_prices(&skus);
                self.after_durable(answer(reply, Ok(prices)));
            }
            ClientCmd::ReserveCustomerId { reply } => {
                let id = CustomerId::new(self.id, self.next_customer());
                // Never handed out again by this process; after a crash a reserved id that
                // was never used may be (the gateway then replaces its unused data key).
                self.id_floor[1] = id.counter() + 1;
                self.after_durable(answer(reply, Ok(id)));
            }
            ClientCmd::CreateCustomer {
                id: reserved,
                customer,
                actor,
                idempotency,
                reply,
            } => {
                let view = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Customer(id))) => self
                        .data
                        .customer_view(CustomerId(id))
                        .ok_or(CommandError::NotFound),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None if reserved.is_some_and(|id| {
                        id.shard() != self.id
                            || id.counter() >= self.next_customer()
                            || self.data.customers.contains_key(&id)
                    }) =>
                    {
                        // Only an id this shard reserved and nobody took: a bug in the caller.
                        Err(CommandError::Invalid {
                            param: "id".into(),
                            detail: "not a customer id this shard reserved".into(),
                        })
                    }
                    None => {
                        let id = reserved
                            .unwrap_or_else(|| CustomerId::new(self.id, self.next_customer()));
                        self.emit(Event::CustomerCreated {
                            id: id.0,
                            name: customer.name,
                            email: customer.email,
                            phone: customer.phone,
                            address: customer.address,
                            at_us: self.clock.now_us(),
                        });
                        if let Some(actor) = &actor {
                            self.audit(actor, "customer.create", id.to_string(), String::new());
                        }
                        self.remember(idempotency, IdemOutcome::Customer(id.0));
                        self.data.customer_view(id).ok_or(CommandError::NotFound)
                    }
                };
                self.after_durable(answer(reply, view));
            }
            ClientCmd::CustomersExist { ids, reply } => {
                let found = ids
                    .iter()
                    .map(|id| self.data.customers.contains_key(id))
                    .collect();
                self.after_durable(answer(reply, Ok(found)));
            }
            ClientCmd::GetCustomer { id, reply } => {
                let view = self.data.customer_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::UpdateCustomer {
                id,
                update,
                actor,
                idempotency,
                reply,
            } => {
                let view = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Customer(was))) if was == id.0 => {
                        self.data.customer_view(id).ok_or(CommandError::NotFound)
                    }
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let view = self.update_customer(id, update, actor);
                        if view.is_ok() {
                            self.remember(idempotency, IdemOutcome::Customer(id.0));
                        }
                        view
                    }
                };
                self.after_durable(answer(reply, view));
            }
            ClientCmd::EraseCustomer { id, actor, reply } => {
                let view = self.erase_customer(id, actor);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::Place { place, reply } => {
                if let Some(result) = self.place(place, Waiter::One(reply)) {
                    self.respond(result);
                }
            }
            ClientCmd::PlaceBatch { places, reply } => {
                let collector = Arc::new(BatchCollector::new(places.len(), reply));
                self.place_many(places, collector, Waiter::Batch, |_, result| result);
            }
            ClientCmd::GetOrder { id, reply } => {
                let view = self.data.order_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::ListOrders { filter, reply } => {
                let views = self.list(&filter);
                self.after_durable(answer(reply, Ok(views)));
            }
            ClientCmd::Cancel {
                id,
                reason,
                actor,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Cancelled(order))) if order == id.0 => self
                        .data
                        .order_view(id)
                        .ok_or(CommandError::Cold(ColdAnswer::Order(id))),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.cancel(id, reason, actor);
                        if result.is_ok() {
                            self.remember(idempotency, IdemOutcome::Cancelled(id.0));
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::Ship {
                shipment,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Shipment { id, events })) => {
                        self.shipment_as_answered(ShipmentId(id), events)
                    }
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.ship(shipment);
                        if let Ok(view) = &result {
                            let outcome = IdemOutcome::Shipment {
                                id: view.id.0,
                                events: view.events.len() as u32,
                            };
                            self.remember(idempotency, outcome);
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::ShipmentEvent {
                id,
                status,
                note,
                actor,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Shipment {
                        id: shipment,
                        events,
                    })) if shipment == id.0 => self.shipment_as_answered(id, events),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.shipment_event(id, status, note, actor);
                        if let Ok(view) = &result {
                            let outcome = IdemOutcome::Shipment {
                                id: id.0,
                                events: view.events.len() as u32,
                            };
                            self.remember(idempotency, outcome);
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::GetShipment { id, reply } => {
                let view = self.data.shipment_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::CreateReturn {
                ret,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::ReturnCreated(id))) => {
                        self.return_as_created(ReturnId(id))
                    }
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.create_return(ret);
                        if let Ok(view) = &result {
                            self.remember(idempotency, IdemOutcome::ReturnCreated(view.id.0));
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::ReceiveReturn {
                id,
                lines,
                actor,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::ReturnReceived(ret))) if ret == id.0 => self
                        .data
                        .return_view(id)
                        .ok_or(CommandError::Cold(ColdAnswer::Return(id, true))),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.receive_return(id, lines, actor);
                        if result.is_ok() {
                            self.remember(idempotency, IdemOutcome::ReturnReceived(id.0));
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::GetReturn { id, reply } => {
                let view = self.data.return_view(id).ok_or(CommandError::NotFound);
                self.after_durable(answer(reply, view));
            }
            ClientCmd::Refund {
                refund,
                idempotency,
                reply,
            } => {
                let result = match self.remembered(&idempotency) {
                    Some(Ok(IdemOutcome::Refund(id))) => self.refund_view(RefundId(id)),
                    Some(Ok(_)) => Err(CommandError::IdempotencyConflict),
                    Some(Err(error)) => Err(error),
                    None => {
                        let result = self.refund(refund);
                        if let Ok(view) = &result {
                            self.remember(idempotency, IdemOutcome::Refund(view.id.0));
                        }
                        result
                    }
                };
                self.after_durable(answer(reply, result));
            }
            ClientCmd::Sales {
                from_us,
                to_us,
                reply,
            } => {
                let mut summary = self.data.sales_summary(from_us, to_us);
                summary.as_of_seq = self.data.last_seq;
                self.after_durable(answer(reply, Ok(summary)));
            }
            ClientCmd::OrdersBetween {
                from_us,
                to_us,
                after,
                limit,
                reply,
            } => {
                let page = self
                    .data
                    .orders_placed_between(from_us, to_us, after, limit);
                self.after_durable(answer(reply, Ok(page)));
            }
            ClientCmd::Reseal { reseal, reply } => {
                let changed = self.reseal(&reseal);
                if changed == 0 {
                    self.after_durable(answer(reply, Ok(0)));
                } else {
                    self.snapshot_with(true, |_| answer(reply, Ok(changed)));
                }
            }
            ClientCmd::Snapshot { reply } => {
                // Answered once the snapshot is written (it is encoded off this thread).
                self.snapshot_with(false, |taken| answer(reply, Ok(taken)));
            }
            ClientCmd::StateDigest { reply } => {
                let digest = self.data.state_digest();
                self.after_durable(answer(reply, Ok(digest)));
            }
        }
    }

    /// The remembered outcome of a command retried with its Idempotency-Key: `None` for a key
    /// not seen (or no key), `Some(Err(conflict))` for a key seen with another body.
    pub(super) fn remembered(
        &self,
        idempotency: &Option<Idempotency>,
    ) -> Option<Result<IdemOutcome, CommandError>> {
        let idem = idempotency.as_ref()?;
        let entry = match self.idem_entry(&idem.key) {
            Ok(found) => found?,
            Err(error) => return Some(Err(error)),
        };
        if entry.at_us < self.idempotency_cutoff() {
            // Past its retention (not swept yet): the key is forgotten.
            return None;
        }
        if entry.hash != idem.request_hash {
            return Some(Err(CommandError::IdempotencyConflict));
        }
        Some(Ok(entry.outcome.clone()))
    }

    /// Idempotency entries older than this are past `idempotency_retention_s`: forgotten even
    /// before the sweep removes them (so no answer ever refers to an order the cold tier
    /// took, as `hot_retention_s >= idempotency_retention_s`).
    pub(super) fn idempotency_cutoff(&self) -> i64 {
        self.clock.now_us().saturating_sub(
            (self.settings.idempotency_retention_s as i64).saturating_mul(1_000_000),
        )
    }

    /// Records, in the batch of the mutation just applied, what a retry with its key answers.
    pub(super) fn remember(&mut self, idempotency: Option<Idempotency>, outcome: IdemOutcome) {
        if let Some(idem) = idempotency {
            self.emit(Event::IdemRecorded {
                idem: IdemRecord {
                    key: idem.key,
                    hash: idem.request_hash,
                    at_us: self.clock.now_us(),
                },
                outcome,
            });
        }
    }

    /// A shipment as it was answered: its first `events` events (and the status they leave).
    pub(super) fn shipment_as_answered(
        &self,
        id: ShipmentId,
        events: u32,
    ) -> Result<ShipmentView, CommandError> {
        let mut view = self
            .data
            .shipment_view(id)
            .ok_or(CommandError::Cold(ColdAnswer::Shipment(id, events)))?;
        view.events.truncate(events as usize);
        if let Some(last) = view.events.last() {
            view.status = last.status;
        }
        Ok(view)
    }

    pub(super) fn adjust(
        &mut self,
        sku: String,
        location: &str,
        delta: i64,
        reason: String,
        actor: &str,
    ) -> Result<StockView, CommandError> {
        if !self.data.location_exists(location) {
            return Err(CommandError::UnknownLocation(location.to_string()));
        }
        if delta == 0 {
            return Err(CommandError::Invalid {
                param: "delta".into(),
                detail: "must not be zero".into(),
            });
        }
        if delta.unsigned_abs() > crate::domain::STOCK_DELTA_MAX {
            return Err(CommandError::Invalid {
                param: "delta".into(),
                detail: format!(
                    "delta must be from -{max} to {max}",
                    max = crate::domain::STOCK_DELTA_MAX
                ),
            });
        }
        let stock = self
            .data
            .stock
            .get(sku.as_str())
            .copied()
            .unwrap_or_default();
        let on_hand = stock.on_hand as i128 + delta as i128;
        if on_hand < stock.reserved as i128 {
            return Err(CommandError::InsufficientStock { skus: vec![sku] });
        }
        if on_hand > i64::MAX as i128 {
            return Err(CommandError::Invalid {
                param: "delta".into(),
                detail: "on_hand would overflow".into(),
            });
        }
        let at = self.data.stock_at(&sku, location);
        if (at.on_hand as i128 + delta as i128) < at.reserved as i128 {
            // The location's own units: never below what is reserved there.
            return Err(CommandError::InsufficientStock { skus: vec![sku] });
        }
        let at_us = self.clock.now_us();
        if location == DEFAULT_LOCATION {
            // As written before locations: stores and tools that read the log keep working.
            self.emit(Event::StockAdjusted {
                sku: sku.clone(),
                delta,
                reason,
                at_us,
            });
        } else {
            self.emit(Event::StockAdjustedAt {
                sku: sku.clone(),
                location: location.to_string(),
                delta,
                reason,
                actor: actor.to_string(),
                at_us,
            });
        }
        self.data.stock_view(&sku).ok_or(CommandError::NotFound)
    }

    /// Moves `qty` available units of `sku` from one location to another (`stock.transfer`
    /// in the audit trail); answers the stock record.
    pub(super) fn transfer(
        &mut self,
        sku: String,
        from: String,
        to: String,
        qty: u64,
        reason: String,
        actor: &str,
    ) -> Result<StockView, CommandError> {
        if qty == 0 || qty > crate::domain::STOCK_DELTA_MAX {
            return Err(CommandError::Invalid {
                param: "qty".into(),
                detail: format!("qty must be from 1 to {}", crate::domain::STOCK_DELTA_MAX),
            });
        }
        if from == to {
            return Err(CommandError::Invalid {
                param: "to".into(),
                detail: "must differ from from".into(),
            });
        }
        for location in [&from, &to] {
            if !self.data.location_exists(location) {
                return Err(CommandError::UnknownLocation(location.clone()));
            }
        }
        if !self.data.stock.contains_key(sku.as_str()) {
            return Err(CommandError::NotFound);
        }
        if self.data.stock_at(&sku, &from).available() < qty {
            return Err(CommandError::InsufficientStock { skus: vec![sku] });
        }
        self.audit(
            actor,
            "stock.transfer",
            sku.clone(),
            format!("from={from} to={to} qty={qty}"),
        );
        self.emit(Event::StockTransferred {
            sku: sku.clone(),
            from,
            to,
            qty,
            reason,
            actor: actor.to_string(),
            at_us: self.clock.now_us(),
        });
        self.data.stock_view(&sku).ok_or(CommandError::NotFound)
    }

    /// Defines or redefines a location on this shard; answers it and whether it is new.
    pub(super) fn set_location(
        &mut self,
        id: String,
        name: String,
        priority: u32,
        locations_max: usize,
        actor: &str,
        audit: bool,
    ) -> Result<(LocationView, bool), CommandError> {
        let invalid = |param: &str, detail: String| CommandError::Invalid {
            param: param.into(),
            detail,
        };
        if !crate::domain::location_is_valid(&id) {
            return Err(invalid("id", "1–64 characters of A-Z a-z 0-9 . _ -".into()));
        }
        if name.is_empty() || name.chars().count() > crate::domain::LOCATION_NAME_CHARS_MAX {
            return Err(invalid(
                "name",
                format!("1 to {} characters", crate::domain::LOCATION_NAME_CHARS_MAX),
            ));
        }
        if priority > crate::domain::LOCATION_PRIORITY_MAX {
            return Err(invalid(
                "priority",
                format!("at most {}", crate::domain::LOCATION_PRIORITY_MAX),
            ));
        }
        let created = !self.data.location_exists(&id);
        let limit = locations_max.min(crate::domain::LOCATIONS_MAX_LIMIT);
        if created && self.data.location_count() >= limit {
            return Err(CommandError::InvalidTransition(format!(
                "at most {limit} locations (stock.locations_max)"
            )));
        }
        if audit {
            self.audit(
                actor,
                "location.set",
                id.clone(),
                format!("priority={priority}"),
            );
        }
        self.emit(Event::LocationSet {
            id: id.clone(),
            name,
            priority,
            actor: actor.to_string(),
            at_us: self.clock.now_us(),
        });
        let view = self
            .data
            .location_views()
            .into_iter()
            .find(|l| l.id == id)
            .ok_or(CommandError::NotFound)?;
        Ok((view, created))
    }

    /// Sets a SKU's catalog price (`catalog.price_set` in the audit trail); answers the entry.
    pub(super) fn set_price(
        &mut self,
        sku: String,
        price: u64,
        active: bool,
        actor: &str,
    ) -> Result<CatalogView, CommandError> {
        if !crate::domain::sku_is_valid(&sku) {
            return Err(CommandError::Invalid {
                param: "sku".into(),
                detail: "not a valid SKU".into(),
            });
        }
        if price > crate::domain::UNIT_PRICE_MAX {
            return Err(CommandError::Invalid {
                param: "price".into(),
                detail: format!("price must be at most {}", crate::domain::UNIT_PRICE_MAX),
            });
        }
        debug_assert_eq!(shard_of_sku(&sku, self.data.shard_count), self.id);
        self.audit(
            actor,
            "catalog.price_set",
            sku.clone(),
            format!("price={price} active={active}"),
        );
        self.emit(Event::CatalogPriceSet {
            sku: sku.clone(),
            price,
            active,
            actor: actor.to_string(),
            at_us: self.clock.now_us(),
        });
        self.data.catalog_view(&sku).ok_or(CommandError::NotFound)
    }

    pub(super) fn validate(place: &PlaceOrder) -> Result<(), CommandError> {
        let invalid = |param: &str, detail: &str| CommandError::Invalid {
            param: param.into(),
            detail: detail.into(),
        };
        check_line_count(place.lines.len(), "an order")?;
        let mut total: u64 = 0;
        for (i, line) in place.lines.iter().enumerate() {
            if !crate::domain::sku_is_valid(&line.sku) {
                return Err(invalid(&format!("lines[{i}].sku"), "not a valid SKU"));
            }
            // At most 100 lines: a quadratic scan allocates nothing and beats a set here.
            if place.lines[..i].iter().any(|other| other.sku == line.sku) {
                return Err(invalid(&format!("lines[{i}].sku"), "each SKU appears once"));
            }
            // The same bounds and texts as the gateway's check (`domain::add_line_amount`).
            total = crate::domain::add_line_amount(total, line.qty, line.unit_price).map_err(
                |error| CommandError::Invalid {
                    param: format!("lines[{i}].{}", error.field()),
                    detail: error.detail(),
                },
            )?;
        }
        Ok(())
    }

    /// Places an order. Returns the waiter with the outcome when it is known now; keeps the
    /// waiter (returns `None`) when a cross-shard placement must finish first.
    pub(super) fn place(
        &mut self,
        place: PlaceOrder,
        reply: Waiter,
    ) -> Option<(Waiter, Result<OrderId, CommandError>)> {
        let fingerprint = place_fingerprint(&place);
        self.current = Some(("place_order", fingerprint));
        if self.link.quarantine.contains(fingerprint) {
            return Some((reply, Err(quarantined("place_order", fingerprint))));
        }
        for line in &place.lines {
            failpoint::on_sku(&line.sku);
        }
        let cutoff = self.idempotency_cutoff();
        if let Some(idem) = &place.idempotency {
            let found = match self.idem_entry(&idem.key) {
                Ok(found) => found,
                Err(error) => return Some((reply, Err(error))),
            };
            if let Some(entry) = found.filter(|entry| entry.at_us >= cutoff) {
                if entry.hash != idem.request_hash {
                    return Some((reply, Err(CommandError::IdempotencyConflict)));
                }
                return match entry.outcome.clone() {
                    IdemOutcome::Order(id) => {
                        let id = OrderId(id);
                        if let Some(pending) = self.pending.get_mut(&id) {
                            pending.waiters.push(reply);
                            None
                        } else {
                            Some((reply, Ok(id)))
                        }
                    }
                    IdemOutcome::Rejected(skus) => {
                        Some((reply, Err(CommandError::InsufficientStock { skus })))
                    }
                    // The key was used for another kind of command.
                    IdemOutcome::Adjusted { .. }
                    | IdemOutcome::Customer(_)
                    | IdemOutcome::Shipment { .. }
                    | IdemOutcome::Cancelled(_)
                    | IdemOutcome::PriceSet { .. }
                    | IdemOutcome::ReturnCreated(_)
                    | IdemOutcome::ReturnReceived(_)
                    | IdemOutcome::Refund(_)
                    | IdemOutcome::Transferred
                    | IdemOutcome::AdjustedAt { .. } => {
                        Some((reply, Err(CommandError::IdempotencyConflict)))
                    }
                };
            }
        }
        // Refused by the gateway against the catalog: a retry under a known key was answered
        // above; anything else gets the refusal, and nothing is applied or remembered.
        if let Some(error) = place.refusal {
            return Some((reply, Err(error)));
        }
        if let Err(error) = Self::validate(&place) {
            return Some((reply, Err(error)));
        }
        if place.customer_id.shard() == self.id
            && !self.data.customers.contains_key(&place.customer_id)
        {
            return Some((reply, Err(CommandError::UnknownCustomer)));
        }
        let count = self.data.shard_count;
        let local = place
            .lines
            .iter()
            .all(|line| shard_of_sku(&line.sku, count) == self.id);
        if local {
            let result = self.place_local(place);
            return Some((reply, result));
        }
        self.place_cross(place, reply);
        None
    }

    pub(super) fn record(&self, place: PlaceOrder, now: i64) -> (OrderRecord, Option<IdemRecord>) {
        let id = OrderId::new(self.id, self.next_order());
        let idem = place.idempotency.map(|i| IdemRecord {
            key: i.key,
            hash: i.request_hash,
            at_us: now,
        });
        let record = OrderRecord {
            id: id.0,
            customer: place.customer_id.0,
            lines: place
                .lines
                .into_iter()
                .map(|l| LineRecord {
                    sku: l.sku,
                    qty: l.qty,
                    unit_price: l.unit_price,
                })
                .collect(),
            shipping_address: place.shipping_address,
            note: place.note,
            at_us: now,
            actor: place.actor,
        };
        (record, idem)
    }

    /// The one-shard fast path: every line's stock lives here.
    pub(super) fn place_local(&mut self, place: PlaceOrder) -> Result<OrderId, CommandError> {
        let short: Vec<String> = place
            .lines
            .iter()
            .filter(|line| self.data.available(&line.sku) < line.qty as u64)
            .map(|line| line.sku.clone())
            .collect();
        let now = self.clock.now_us();
        let (record, idem) = self.record(place, now);
        if !short.is_empty() {
            if let Some(idem) = idem {
                self.emit(Event::PlacementRejected {
                    idem,
                    short: short.clone(),
                });
            }
            return Err(CommandError::InsufficientStock { skus: short });
        }
        let id = OrderId(record.id);
        self.emit(Event::OrderPlaced {
            order: record,
            idem,
        });
        self.audit_placed(id);
        Ok(id)
    }

    pub(super) fn cancel(
        &mut self,
        id: OrderId,
        reason: Option<String>,
        actor: String,
    ) -> Result<OrderView, CommandError> {
        let order = self.data.orders.get(&id).ok_or(CommandError::NotFound)?;
        match order.status {
            OrderStatus::Pending => return Err(CommandError::NotFound),
            OrderStatus::Cancelled => return Ok(self.data.view(order)),
            OrderStatus::Confirmed => {}
            other => {
                return Err(CommandError::InvalidTransition(format!(
                    "an order that is {} cannot be cancelled",
                    other.as_str()
                )))
            }
        }
        let cross = order.cross;
        let count = self.data.shard_count;
        let mut parts: Vec<u16> = order
            .lines
            .iter()
            .map(|line| shard_of_sku(&line.sku, count))
            .collect();
        parts.sort_unstable();
        parts.dedup();
        self.audit(&actor, "order.cancel", id.to_string(), String::new());
        self.emit(Event::OrderCancelled {
            order: id.0,
            reason,
            actor,
            at_us: self.clock.now_us(),
        });
        if cross {
            for shard in parts {
                self.outbox.entry(shard).or_default().release.push(id);
            }
        }
        Ok(self.data.view(self.data.orders.get(&id).expect("present")))
    }

    /// Ships units of an order: the named lines, or everything not yet shipped.
    pub(super) fn ship(&mut self, request: NewShipment) -> Result<ShipmentView, CommandError> {
        let order = self
            .data
            .orders
            .get(&request.order_id)
            .ok_or(CommandError::NotFound)?;
        match order.status {
            OrderStatus::Pending => return Err(CommandError::NotFound),
            OrderStatus::Confirmed | OrderStatus::PartiallyShipped => {}
            other => {
                return Err(CommandError::InvalidTransition(format!(
                    "an order that is {} has nothing left to ship",
                    other.as_str()
                )))
            }
        }
        let lines: Vec<(String, u32)> = match request.lines {
            None => order
                .lines
                .iter()
                .filter(|l| l.shipped < l.qty)
                .map(|l| (l.sku.to_string(), l.qty - l.shipped))
                .collect(),
            Some(lines) => {
                check_line_count(lines.len(), "a shipment")?;
                for (i, (sku, qty)) in lines.iter().enumerate() {
                    let invalid = |field: &str, detail: &str| CommandError::Invalid {
                        param: format!("lines[{i}].{field}"),
                        detail: detail.into(),
                    };
                    if lines[..i].iter().any(|(other, _)| other == sku) {
                        return Err(invalid("sku", "each SKU appears once"));
                    }
                    if *qty == 0 {
                        return Err(invalid("qty", "qty must be at least 1"));
                    }
                    if *qty > crate::domain::LINE_QTY_MAX {
                        return Err(invalid(
                            "qty",
                            &format!("qty must be at most {}", crate::domain::LINE_QTY_MAX),
                        ));
                    }
                    let Some(line) = order.lines.iter().find(|l| *l.sku == **sku) else {
                        return Err(invalid("sku", "this SKU is not in the order"));
                    };
                    if *qty > line.qty - line.shipped {
                        return Err(CommandError::InvalidTransition(format!(
                            "{sku}: {qty} requested, {} left to ship",
                            line.qty - line.shipped
                        )));
                    }
                }
                lines
            }
        };
        if lines.is_empty() {
            return Err(CommandError::InvalidTransition(
                "nothing is left to ship".into(),
            ));
        }
        let cross = order.cross;
        let id = ShipmentId::new(self.id, self.next_shipment());
        let units: u64 = lines.iter().map(|(_, qty)| u64::from(*qty)).sum();
        self.audit(
            &request.actor,
            "shipment.create",
            id.to_string(),
            format!("order={} units={units}", request.order_id),
        );
        self.emit(Event::ShipmentCreated {
            id: id.0,
            order: request.order_id.0,
            carrier: request.carrier,
            tracking: format!("ODT{:016X}", id.0),
            lines,
            actor: request.actor,
            at_us: self.clock.now_us(),
        });
        if cross {
            // Each part's shard moves its units out of the hold: cumulative totals, so a
            // repeat (after a crash, through `HoldCheck`) changes nothing.
            let order = &self.data.orders[&request.order_id];
            let parts = group_by_shard(
                order
                    .lines
                    .iter()
                    .filter(|l| l.shipped > 0)
                    .map(|l| (&*l.sku, l.shipped)),
                self.data.shard_count,
            );
            for (shard, shipped) in parts {
                self.outbox
                    .entry(shard)
                    .or_default()
                    .ship
                    .push(ShippedPart {
                        order: request.order_id,
                        shipped,
                    });
            }
        }
        self.data.shipment_view(id).ok_or(CommandError::NotFound)
    }

    pub(super) fn shipment_event(
        &mut self,
        id: ShipmentId,
        status: ShipmentStatus,
        note: Option<String>,
        actor: String,
    ) -> Result<ShipmentView, CommandError> {
        let shipment = self.data.shipments.get(&id).ok_or(CommandError::NotFound)?;
        if shipment.status.is_final() {
            return Err(CommandError::InvalidTransition(format!(
                "the shipment is {}",
                shipment.status.as_str()
            )));
        }
        if status == ShipmentStatus::Shipped {
            return Err(CommandError::Invalid {
                param: "status".into(),
                detail: "one of in_transit, delivered, failed".into(),
            });
        }
        self.audit(
            &actor,
            "shipment.event",
            id.to_string(),
            status.as_str().into(),
        );
        self.emit(Event::ShipmentUpdated {
            id: id.0,
            status,
            note,
            actor,
            at_us: self.clock.now_us(),
        });
        self.data.shipment_view(id).ok_or(CommandError::NotFound)
    }

    /// Replaces the fields `update` sets; audited (`customer.update`, naming the fields, never
    /// their values). An erased customer cannot be updated.
    pub(super) fn update_customer(
        &mut self,
        id: CustomerId,
        update: CustomerUpdate,
        actor: String,
    ) -> Result<CustomerView, CommandError> {
        let customer = self.data.customers.get(&id).ok_or(CommandError::NotFound)?;
        if customer.is_erased() {
            return Err(CommandError::InvalidTransition(
                "the customer is erased; its contact data cannot be changed".into(),
            ));
        }
        if update.email.as_ref().is_some_and(String::is_empty) {
            return Err(CommandError::Invalid {
                param: "email".into(),
                detail: "email must not be empty".into(),
            });
        }
        if update.is_empty() {
            return self.data.customer_view(id).ok_or(CommandError::NotFound);
        }
        let fields: Vec<&str> = [
            ("name", update.name.is_some()),
            ("email", update.email.is_some()),
            ("phone", update.phone.is_some()),
            ("address", update.address.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let detail = fields.join(",");
        self.emit(Event::CustomerUpdated {
            id: id.0,
            name: update.name,
            email: update.email,
            phone: update.phone,
            address: update.address,
            actor: actor.clone(),
            at_us: self.clock.now_us(),
        });
        self.audit(&actor, "customer.update", id.to_string(), detail);
        self.data.customer_view(id).ok_or(CommandError::NotFound)
    }

    /// Erases the customer's personal data; audited (`customer.erase`, no personal data).
    /// An erased customer answers again and writes nothing.
    pub(super) fn erase_customer(
        &mut self,
        id: CustomerId,
        actor: String,
    ) -> Result<CustomerView, CommandError> {
        let customer = self.data.customers.get(&id).ok_or(CommandError::NotFound)?;
        if !customer.is_erased() {
            self.emit(Event::CustomerErased {
                id: id.0,
                actor: actor.clone(),
                at_us: self.clock.now_us(),
            });
            self.audit(&actor, "customer.erase", id.to_string(), String::new());
        }
        let view = self.data.customer_view(id).ok_or(CommandError::NotFound)?;
        debug_assert!(view.erased);
        Ok(view)
    }

    /// A return as its creation answered it: `requested`, nothing received.
    fn return_as_created(&self, id: ReturnId) -> Result<ReturnView, CommandError> {
        let mut view = self
            .data
            .return_view(id)
            .ok_or(CommandError::Cold(ColdAnswer::Return(id, false)))?;
        view.status = ReturnStatus::Requested;
        view.received.clear();
        view.received_at_us = None;
        Ok(view)
    }

    /// A refund of one of this shard's orders.
    fn refund_view(&self, id: RefundId) -> Result<RefundView, CommandError> {
        self.data
            .refunds
            .iter()
            .find_map(|(order, refunds)| {
                refunds
                    .iter()
                    .find(|r| r.id == id)
                    .map(|r| crate::state::refund_view(*order, r))
            })
            .ok_or(CommandError::Cold(ColdAnswer::Refund(id)))
    }

    /// Opens a return of shipped units: every line a SKU of the order, at most what was
    /// shipped of it less what its returns already hold.
    pub(super) fn create_return(&mut self, request: NewReturn) -> Result<ReturnView, CommandError> {
        let order = self
            .data
            .orders
            .get(&request.order_id)
            .ok_or(CommandError::NotFound)?;
        match order.status {
            OrderStatus::Pending => return Err(CommandError::NotFound),
            OrderStatus::PartiallyShipped
            | OrderStatus::Shipped
            | OrderStatus::Delivered
            | OrderStatus::PartiallyReturned => {}
            other => {
                return Err(CommandError::InvalidTransition(format!(
                    "an order that is {} has no shipped units to return",
                    other.as_str()
                )))
            }
        }
        check_line_count(request.lines.len(), "a return")?;
        for (i, (sku, qty)) in request.lines.iter().enumerate() {
            check_units(&request.lines, i, sku, *qty)?;
            let Some(line) = order.lines.iter().find(|l| *l.sku == **sku) else {
                return Err(CommandError::Invalid {
                    param: format!("lines[{i}].sku"),
                    detail: "this SKU is not in the order".into(),
                });
            };
            let taken = self.data.units_in_returns(request.order_id, sku);
            let left = u64::from(line.shipped).saturating_sub(taken);
            if u64::from(*qty) > left {
                return Err(CommandError::InvalidTransition(format!(
                    "{sku}: {qty} to return, {left} shipped and not yet returned"
                )));
            }
        }
        let returns = self
            .data
            .order_returns
            .get(&request.order_id)
            .map_or(0, Vec::len);
        if returns >= crate::domain::ORDER_RETURNS_MAX {
            return Err(CommandError::InvalidTransition(format!(
                "an order takes at most {} returns",
                crate::domain::ORDER_RETURNS_MAX
            )));
        }
        let id = ReturnId::new(self.id, self.next_return());
        let units: u64 = request.lines.iter().map(|(_, q)| u64::from(*q)).sum();
        self.audit(
            &request.actor,
            "return.create",
            id.to_string(),
            format!("order={} units={units}", request.order_id),
        );
        self.emit(Event::ReturnCreated {
            id: id.0,
            order: request.order_id.0,
            lines: request.lines,
            reason: request.reason,
            actor: request.actor,
            at_us: self.clock.now_us(),
        });
        self.data.return_view(id).ok_or(CommandError::NotFound)
    }

    /// Receives a return: each line units of one of its SKUs, back to stock with `restock`
    /// (a SKU may come once restocked and once not); at most what the return holds of each.
    /// Units of SKUs this shard owns are restocked with the receipt; the others' shards are
    /// sent `Restock` once it is durable, and again until they confirm.
    pub(super) fn receive_return(
        &mut self,
        id: ReturnId,
        lines: Vec<ReceiveLine>,
        actor: String,
    ) -> Result<ReturnView, CommandError> {
        let ret = self.data.returns.get(&id).ok_or(CommandError::NotFound)?;
        if ret.status == ReturnStatus::Received {
            return Err(CommandError::InvalidTransition(
                "the return is already received".into(),
            ));
        }
        check_line_count(lines.len(), "a receipt")?;
        for (i, line) in lines.iter().enumerate() {
            let invalid = |field: &str, detail: &str| CommandError::Invalid {
                param: format!("lines[{i}].{field}"),
                detail: detail.into(),
            };
            if lines[..i]
                .iter()
                .any(|other| other.sku == line.sku && other.restock == line.restock)
            {
                return Err(invalid(
                    "sku",
                    "each SKU appears at most once restocked and once not",
                ));
            }
            if line.qty == 0 {
                return Err(invalid("qty", "qty must be at least 1"));
            }
            if line.qty > crate::domain::LINE_QTY_MAX {
                return Err(invalid(
                    "qty",
                    &format!("qty must be at most {}", crate::domain::LINE_QTY_MAX),
                ));
            }
            if !ret.lines.iter().any(|(sku, _)| **sku == *line.sku) {
                return Err(invalid("sku", "this SKU is not in the return"));
            }
        }
        for (sku, qty) in ret.lines.iter() {
            let received: u64 = lines
                .iter()
                .filter(|l| *l.sku == **sku)
                .map(|l| u64::from(l.qty))
                .sum();
            if received > u64::from(*qty) {
                return Err(CommandError::InvalidTransition(format!(
                    "{sku}: {received} received, {qty} in the return"
                )));
            }
        }
        let order = ret.order;
        let units: u64 = lines.iter().map(|l| u64::from(l.qty)).sum();
        let restocked: u64 = lines
            .iter()
            .filter(|l| l.restock)
            .map(|l| u64::from(l.qty))
            .sum();
        let received = self.received_at(order, lines);
        let count = self.data.shard_count;
        let mut parts: BTreeMap<u16, Vec<RestockLine>> = BTreeMap::new();
        for line in received.iter().filter(|l| l.restock) {
            let owner = shard_of_sku(&line.sku, count);
            if owner != self.id {
                parts.entry(owner).or_default().push(RestockLine {
                    sku: line.sku.clone(),
                    qty: line.qty,
                    location: line.location.clone(),
                });
            }
        }
        self.audit(
            &actor,
            "return.receive",
            id.to_string(),
            format!("order={order} units={units} restocked={restocked}"),
        );
        self.emit(Event::ReturnReceived {
            id: id.0,
            lines: received,
            actor,
            at_us: self.clock.now_us(),
        });
        if !parts.is_empty() {
            // Sent after this batch (holding `ReturnReceived`) is durable: see `flush`.
            self.restocks
                .insert(id, (self.data.last_seq, Some(self.clock.instant())));
            for (shard, lines) in parts {
                self.outbox
                    .entry(shard)
                    .or_default()
                    .restock
                    .push(RestockPart { ret: id, lines });
            }
        }
        self.data.return_view(id).ok_or(CommandError::NotFound)
    }

    /// A receipt's lines with the locations their units were shipped from: units of a SKU
    /// ship in the order of its allocation, and the units that come back are taken in that
    /// order after those earlier receipts took, so a restocked line is split where its units
    /// came from more than one location. Lines not restocked keep `default` (no stock moves).
    fn received_at(&self, order: OrderId, lines: Vec<ReceiveLine>) -> Vec<ReceivedLine> {
        let cross = self.data.orders.get(&order).is_some_and(|o| o.cross);
        let allocation = self.data.view_allocation(order, cross);
        let mut taken: BTreeMap<String, u32> = BTreeMap::new();
        let mut received = Vec::with_capacity(lines.len());
        for line in lines {
            let start = *taken.entry(line.sku.clone()).or_insert_with(|| {
                let ids = self.data.order_returns.get(&order);
                ids.into_iter()
                    .flatten()
                    .filter_map(|id| self.data.returns.get(id))
                    .filter(|r| r.status == ReturnStatus::Received)
                    .flat_map(|r| r.received.iter())
                    .filter(|l| l.sku == line.sku)
                    .map(|l| l.qty)
                    .sum()
            });
            taken.insert(line.sku.clone(), start + line.qty);
            if !line.restock {
                received.push(ReceivedLine {
                    sku: line.sku,
                    qty: line.qty,
                    restock: false,
                    location: DEFAULT_LOCATION.into(),
                });
                continue;
            }
            for (location, qty) in
                ShardData::allocation_stretch(allocation, &line.sku, start, line.qty)
            {
                received.push(ReceivedLine {
                    sku: line.sku.clone(),
                    qty,
                    restock: true,
                    location: location.to_string(),
                });
            }
        }
        received
    }

    /// Refunds money on an order: never more than its total less earlier refunds.
    pub(super) fn refund(&mut self, request: NewRefund) -> Result<RefundView, CommandError> {
        let order = self
            .data
            .orders
            .get(&request.order_id)
            .ok_or(CommandError::NotFound)?;
        match order.status {
            OrderStatus::Pending => return Err(CommandError::NotFound),
            OrderStatus::Cancelled => {
                return Err(CommandError::InvalidTransition(
                    "a cancelled order has no revenue to refund".into(),
                ))
            }
            _ => {}
        }
        if request.amount == 0 || request.amount > crate::domain::ORDER_TOTAL_MAX {
            return Err(CommandError::Invalid {
                param: "amount".into(),
                detail: format!(
                    "amount must be from 1 to {} (minor units)",
                    crate::domain::ORDER_TOTAL_MAX
                ),
            });
        }
        let total = crate::state::order_total(order);
        let refunded = self.data.refunded(request.order_id);
        let left = total.saturating_sub(refunded);
        if request.amount > left {
            return Err(CommandError::InvalidTransition(format!(
                "{} asked, {left} of the total {total} is left to refund",
                request.amount
            )));
        }
        let refunds = self.data.refunds.get(&request.order_id).map_or(0, Vec::len);
        if refunds >= crate::domain::ORDER_REFUNDS_MAX {
            return Err(CommandError::InvalidTransition(format!(
                "an order takes at most {} refunds",
                crate::domain::ORDER_REFUNDS_MAX
            )));
        }
        let id = RefundId::new(self.id, self.next_refund());
        self.audit(
            &request.actor,
            "order.refund",
            id.to_string(),
            format!("order={} amount={}", request.order_id, request.amount),
        );
        self.emit(Event::RefundIssued {
            id: id.0,
            order: request.order_id.0,
            amount: request.amount,
            reason: request.reason,
            actor: request.actor,
            at_us: self.clock.now_us(),
        });
        self.refund_view(id)
    }

    /// Replaces personal-data values as `reseal` says; returns how many events it wrote.
    pub(super) fn reseal(&mut self, reseal: &ResealFn) -> u64 {
        let mut events = Vec::new();
        let mut ids: Vec<CustomerId> = self.data.customers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let c = &self.data.customers[&id];
            if c.is_erased() {
                continue;
            }
            let name = reseal(PersonalField::CustomerName, id, &c.name);
            let email = reseal(PersonalField::CustomerEmail, id, &c.email);
            let phone = c
                .phone
                .as_deref()
                .map(|v| reseal(PersonalField::CustomerPhone, id, v));
            let address = c
                .address
                .as_deref()
                .map(|v| reseal(PersonalField::CustomerAddress, id, v));
            let changed = name.is_some()
                || email.is_some()
                || phone.as_ref().is_some_and(Option::is_some)
                || address.as_ref().is_some_and(Option::is_some);
            if changed {
                events.push(Event::CustomerResealed {
                    id: id.0,
                    name: name.unwrap_or_else(|| c.name.clone()),
                    email: email.unwrap_or_else(|| c.email.clone()),
                    phone: phone.map(|v| v.unwrap_or_else(|| c.phone.clone().unwrap_or_default())),
                    address: address
                        .map(|v| v.unwrap_or_else(|| c.address.clone().unwrap_or_default())),
                });
            }
        }
        let mut orders: Vec<OrderId> = self.data.orders.keys().copied().collect();
        orders.sort_unstable();
        for id in orders {
            let order = &self.data.orders[&id];
            if let Some(address) = order.shipping_address() {
                if let Some(sealed) =
                    reseal(PersonalField::OrderShippingAddress, order.customer, address)
                {
                    events.push(Event::OrderAddressResealed {
                        order: id.0,
                        shipping_address: Some(sealed),
                    });
                }
            }
        }
        let count = events.len() as u64;
        for event in events {
            self.emit(event);
        }
        count
    }

    pub(super) fn list(&self, filter: &OrderFilter) -> Vec<OrderView> {
        self.data.list_orders(filter)
    }
}

/// Line `i` of a return: its SKU not repeated, its quantity from 1 to `LINE_QTY_MAX`.
fn check_units(lines: &[(String, u32)], i: usize, sku: &str, qty: u32) -> Result<(), CommandError> {
    let invalid = |field: &str, detail: &str| CommandError::Invalid {
        param: format!("lines[{i}].{field}"),
        detail: detail.into(),
    };
    if !crate::domain::sku_is_valid(sku) {
        return Err(invalid("sku", "not a valid SKU"));
    }
    if lines[..i].iter().any(|(other, _)| other == sku) {
        return Err(invalid("sku", "each SKU appears once"));
    }
    if qty == 0 {
        return Err(invalid("qty", "qty must be at least 1"));
    }
    if qty > crate::domain::LINE_QTY_MAX {
        return Err(invalid(
            "qty",
            &format!("qty must be at most {}", crate::domain::LINE_QTY_MAX),
        ));
    }
    Ok(())
}

/// An order or a shipment has 1 to [`ORDER_LINES_MAX`] lines (`what`: "an order", "a shipment").
fn check_line_count(lines: usize, what: &str) -> Result<(), CommandError> {
    if lines == 0 || lines > ORDER_LINES_MAX {
        return Err(CommandError::Invalid {
            param: "lines".into(),
            detail: format!("{what} has 1 to {ORDER_LINES_MAX} lines"),
        });
    }
    Ok(())
}

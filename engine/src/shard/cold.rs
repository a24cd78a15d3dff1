//! The shard's side of the cold tier ([`crate::cold`]): the sweep that moves ended orders out
//! of memory with its next log batch, and the settings that drive it.

use super::*;

/// When ended orders leave memory ([`crate::cold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdSettings {
    /// Orders delivered or cancelled longer ago than this move to the cold tier; 0 keeps every
    /// order in memory.
    pub hot_retention_s: u64,
    /// How often a shard sweeps.
    pub sweep_interval_ms: u64,
    /// Most orders one sweep moves (one log batch): bounds the sweep's pause.
    pub sweep_orders_max: usize,
}

impl Default for ColdSettings {
    fn default() -> Self {
        ColdSettings {
            hot_retention_s: 0,
            sweep_interval_ms: 60_000,
            sweep_orders_max: 10_000,
        }
    }
}

impl Shard {
    /// Moves the oldest orders that ended more than `hot_retention_s` ago to the cold tier:
    /// their records and index keys join the current batch's storage write, and
    /// `OrdersArchived` (applied now, and again on replay) removes them from memory. Until
    /// that batch is durable nobody reads them: every answer of this shard waits for it, and
    /// the engine reads the cold tier only after an answer.
    pub(super) fn sweep_cold(&mut self) {
        let cold = self.settings.cold;
        if cold.hot_retention_s == 0 {
            return;
        }
        let cutoff = self
            .clock
            .now_us()
            .saturating_sub((cold.hot_retention_s as i64).saturating_mul(1_000_000));
        let ids = self
            .data
            .cold_candidates(cutoff, cold.sweep_orders_max.max(1));
        if ids.is_empty() {
            return;
        }
        // The seq `OrdersArchived` takes: what the engine compares a sales walk against.
        let archived_seq = self.data.last_seq + 1;
        for id in &ids {
            if let Some(mut record) = self.data.cold_record(*id) {
                record.archived_seq = archived_seq;
                self.extra_writes.extend(crate::cold::writes(&record));
            }
        }
        let moved = ids.len();
        self.emit(Event::OrdersArchived {
            ids: ids.iter().map(|id| id.0).collect(),
        });
        tracing::debug!(
            message = "Moved ended orders to the cold tier.",
            shard = self.id,
            moved
        );
    }
}

/// Most idempotency entries one sweep moves to disk, and most expired ones it deletes.
const IDEM_SWEEP_MAX: usize = 10_000;

impl Shard {
    /// An Idempotency-Key's entry: in memory, in a batch that moves it to disk and is not yet
    /// durable, or on disk ([`crate::idem_tier`]). A failed read is `unavailable`: treating
    /// the key as new could place an order twice.
    pub(super) fn idem_entry(
        &self,
        key: &str,
    ) -> Result<Option<crate::state::IdemEntry>, CommandError> {
        if let Some(entry) = self.data.idempotency.get(key) {
            return Ok(Some(entry.clone()));
        }
        if let Some((_, entry)) = self.idem_leaving.get(key) {
            return Ok(Some(entry.clone()));
        }
        crate::idem_tier::lookup(self.link.storage.as_ref(), self.id, key).map_err(|error| {
            CommandError::Unavailable(format!("the idempotency key could not be read: {error}"))
        })
    }

    /// Moves idempotency entries older than `idempotency_hot_s` (and still in their
    /// retention) to disk with the next batch, and deletes from disk those past retention.
    pub(super) fn sweep_idem(&mut self) {
        let durable = self.writer_stats.durable_seq[self.id as usize].load(Ordering::SeqCst);
        self.idem_leaving.retain(|_, (seq, _)| *seq > durable);
        let now = self.clock.now_us();
        let hot_cutoff =
            now.saturating_sub((self.settings.idempotency_hot_s as i64).saturating_mul(1_000_000));
        let keep_cutoff = self.idempotency_cutoff();
        let archived_seq = self.data.last_seq + 1;
        let mut keys = Vec::new();
        for (key, entry) in self.data.idempotency.iter() {
            if keys.len() >= IDEM_SWEEP_MAX {
                break;
            }
            if entry.at_us >= hot_cutoff || entry.at_us < keep_cutoff {
                continue;
            }
            // A placement still in flight keeps its key in memory (its waiters wait there).
            if let crate::state::IdemOutcome::Order(id) = entry.outcome {
                if self.pending.contains_key(&OrderId(id)) {
                    continue;
                }
            }
            self.extra_writes
                .extend(crate::idem_tier::writes(self.id, key, entry));
            self.idem_leaving
                .insert(key.to_string(), (archived_seq, entry.clone()));
            keys.push(key.to_string());
        }
        match crate::idem_tier::expired(
            self.link.storage.as_ref(),
            self.id,
            keep_cutoff,
            IDEM_SWEEP_MAX,
        ) {
            Ok(deletes) => self.extra_writes.extend(deletes),
            Err(error) => tracing::warn!(
                message = "Could not read the expired idempotency keys; the next sweep tries again.",
                shard = self.id,
                %error
            ),
        }
        if !keys.is_empty() {
            self.emit(Event::IdemArchived { keys });
        }
    }
}

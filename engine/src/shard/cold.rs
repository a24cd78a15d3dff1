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

//! Incidents: the persisted record of every fault the server found and what it did about it
//! (shard panics and hangs, restarts, quarantined commands, escalations, failed inspection
//! checks, failed backups), kept in the `control` column family.
//!
//! An incident is written (synced) when the fault is found, and written again with
//! `recovered_at` once the repair is done, so the list always shows faults that are still open.
//! Ids grow with time; the oldest are dropped past `retention_max`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::storage::{Family, Storage, StorageError, Write};

/// Key prefix of incidents in `control`; the id follows, big-endian.
const PREFIX: &[u8] = b"incident/";
/// Format version byte of a stored incident.
const VERSION: u8 = 1;
/// Incidents kept by default; the oldest are deleted past it.
pub const RETENTION_MAX_DEFAULT: usize = 10_000;
/// Longest detail kept, in bytes (a panic message can be long).
const DETAIL_BYTES_MAX: usize = 2048;

/// One fault, its cause and the action taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    /// When the fault was found, microseconds since the Unix epoch.
    pub at_us: i64,
    /// What failed: `shard/3`, `inspection/disk`, `backup`, ...
    pub component: String,
    /// What kind of fault: `panic`, `stuck`, `quarantine`, `escalation`, `check_failed`, ...
    pub kind: String,
    /// The cause as found (a panic message, a check's reading).
    pub detail: String,
    /// What the server did about it.
    pub action: String,
    /// When the repair completed; `None` while the fault is open (or when nothing heals it).
    pub recovered_at_us: Option<i64>,
}

impl Incident {
    /// The id as shown to clients: `inc_` and 16 hex digits.
    pub fn display_id(&self) -> String {
        format!("inc_{:016x}", self.id)
    }
}

/// Parses `inc_<16 hex>`.
pub fn parse_id(text: &str) -> Option<u64> {
    let hex = text.strip_prefix("inc_")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn key(id: u64) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn encode(incident: &Incident) -> Vec<u8> {
    let mut value = vec![VERSION];
    value.extend(postcard::to_stdvec(incident).expect("an incident always encodes"));
    value
}

fn decode(value: &[u8]) -> Option<Incident> {
    match value.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > DETAIL_BYTES_MAX {
        let mut cut = DETAIL_BYTES_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

struct Book {
    /// Ids of the stored incidents, oldest first (for retention).
    ids: std::collections::VecDeque<u64>,
    /// Incidents per (component class, kind): those stored at start plus those recorded
    /// since; the source of `orderd_incidents_total`.
    counts: BTreeMap<(String, String), u64>,
}

/// The incident store. Cheap to clone; every method may be called from any thread.
#[derive(Clone)]
pub struct IncidentLog {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    next_id: AtomicU64,
    retention_max: usize,
    book: Mutex<Book>,
}

/// The component class used as a metric label: `shard/3` → `shard`, `inspection/disk` →
/// `inspection` (no ids in labels).
pub fn component_class(component: &str) -> &str {
    component.split('/').next().unwrap_or(component)
}

impl IncidentLog {
    /// Loads the ids and counts of the stored incidents.
    pub fn open(
        storage: Arc<dyn Storage>,
        retention_max: usize,
    ) -> Result<IncidentLog, StorageError> {
        let mut ids = std::collections::VecDeque::new();
        let mut counts = BTreeMap::new();
        storage.scan_prefix(Family::Control, PREFIX, &mut |_, value| {
            if let Some(incident) = decode(value) {
                ids.push_back(incident.id);
                *counts
                    .entry((
                        component_class(&incident.component).to_string(),
                        incident.kind.clone(),
                    ))
                    .or_insert(0) += 1;
            }
            true
        })?;
        let next_id = ids.back().map_or(1, |id| id + 1);
        Ok(IncidentLog {
            inner: Arc::new(Inner {
                storage,
                next_id: AtomicU64::new(next_id),
                retention_max: retention_max.max(1),
                book: Mutex::new(Book { ids, counts }),
            }),
        })
    }

    /// Records a new incident (synced to storage before it returns) and logs it.
    pub fn record(
        &self,
        component: &str,
        kind: &str,
        detail: impl Into<String>,
        action: impl Into<String>,
    ) -> Result<Incident, StorageError> {
        self.record_at(
            crate::clock::now_us(),
            component,
            kind,
            detail,
            action,
            None,
        )
    }

    /// Records an incident that is already repaired (found and fixed in one step).
    pub fn record_recovered(
        &self,
        at_us: i64,
        component: &str,
        kind: &str,
        detail: impl Into<String>,
        action: impl Into<String>,
    ) -> Result<Incident, StorageError> {
        let recovered = crate::clock::now_us();
        self.record_at(at_us, component, kind, detail, action, Some(recovered))
    }

    fn record_at(
        &self,
        at_us: i64,
        component: &str,
        kind: &str,
        detail: impl Into<String>,
        action: impl Into<String>,
        recovered_at_us: Option<i64>,
    ) -> Result<Incident, StorageError> {
        let incident = Incident {
            id: self.inner.next_id.fetch_add(1, Ordering::SeqCst),
            at_us,
            component: component.to_string(),
            kind: kind.to_string(),
            detail: truncate(detail.into()),
            action: truncate(action.into()),
            recovered_at_us,
        };
        let mut writes = vec![Write::Put {
            family: Family::Control,
            key: key(incident.id),
            value: encode(&incident),
        }];
        let mut book = self.inner.book.lock().expect("incident book poisoned");
        let mut dropped = Vec::new();
        while book.ids.len() + 1 - dropped.len() > self.inner.retention_max {
            match book.ids.get(dropped.len()) {
                Some(&old) => dropped.push(old),
                None => break,
            }
        }
        if let Some(&newest_dropped) = dropped.last() {
            writes.push(Write::DeleteRange {
                family: Family::Control,
                from: PREFIX.to_vec(),
                to: key(newest_dropped + 1),
            });
        }
        self.inner.storage.write(writes, true)?;
        for _ in 0..dropped.len() {
            book.ids.pop_front();
        }
        book.ids.push_back(incident.id);
        *book
            .counts
            .entry((component_class(component).to_string(), kind.to_string()))
            .or_insert(0) += 1;
        drop(book);
        tracing::warn!(
            message = "Incident recorded.",
            id = %incident.display_id(),
            component,
            kind,
            detail = %incident.detail,
            action = %incident.action,
        );
        Ok(incident)
    }

    /// Marks an incident repaired now.
    pub fn recovered(&self, id: u64) -> Result<Option<Incident>, StorageError> {
        let Some(value) = self.inner.storage.get(Family::Control, &key(id))? else {
            return Ok(None);
        };
        let Some(mut incident) = decode(&value) else {
            return Ok(None);
        };
        incident.recovered_at_us = Some(crate::clock::now_us());
        self.inner.storage.write(
            vec![Write::Put {
                family: Family::Control,
                key: key(id),
                value: encode(&incident),
            }],
            true,
        )?;
        Ok(Some(incident))
    }

    /// Incidents, oldest first, at most `limit`: the first ones found at or after `since_us`,
    /// or without `since_us` the newest ones.
    pub fn list(&self, since_us: Option<i64>, limit: usize) -> Result<Vec<Incident>, StorageError> {
        let mut out = std::collections::VecDeque::new();
        self.inner
            .storage
            .scan_prefix(Family::Control, PREFIX, &mut |_, value| {
                let Some(incident) = decode(value) else {
                    return true;
                };
                match since_us {
                    Some(since) => {
                        if incident.at_us >= since {
                            out.push_back(incident);
                        }
                        out.len() < limit
                    }
                    None => {
                        out.push_back(incident);
                        if out.len() > limit {
                            out.pop_front();
                        }
                        true
                    }
                }
            })?;
        Ok(out.into())
    }

    /// One incident by id.
    pub fn get(&self, id: u64) -> Result<Option<Incident>, StorageError> {
        Ok(self
            .inner
            .storage
            .get(Family::Control, &key(id))?
            .and_then(|value| decode(&value)))
    }

    /// Incidents recorded per (component class, kind), for metrics.
    pub fn counts(&self) -> Vec<(String, String, u64)> {
        let book = self.inner.book.lock().expect("incident book poisoned");
        book.counts
            .iter()
            .map(|((component, kind), count)| (component.clone(), kind.clone(), *count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[test]
    fn incidents_persist_recover_and_are_bounded() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let log = IncidentLog::open(storage.clone(), 3).unwrap();
        let first = log
            .record("shard/1", "panic", "boom", "shard 1 rebuilt from storage")
            .unwrap();
        assert_eq!(first.recovered_at_us, None);
        let repaired = log.recovered(first.id).unwrap().unwrap();
        assert!(repaired.recovered_at_us.unwrap() >= first.at_us);
        for n in 0..4 {
            log.record("inspection/disk", "check_failed", format!("{n}"), "none")
                .unwrap();
        }
        // Retention: the newest three stay, the panic is gone; counts remember all five.
        let all = log.list(None, 100).unwrap();
        assert_eq!(
            all.iter().map(|i| i.detail.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
        assert_eq!(
            log.counts(),
            vec![
                ("inspection".into(), "check_failed".into(), 4),
                ("shard".into(), "panic".into(), 1)
            ]
        );
        // Reopened: ids continue, the stored ones are listed, `since` and `limit` apply.
        let reopened = IncidentLog::open(storage, 3).unwrap();
        let next = reopened
            .record("backup", "failed", "disk full", "none")
            .unwrap();
        assert!(next.id > all.last().unwrap().id);
        let since = reopened.list(Some(next.at_us), 10).unwrap();
        assert_eq!(since.last().unwrap().id, next.id);
        let newest = reopened.list(None, 2).unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].id, next.id);
        assert_eq!(reopened.list(Some(0), 2).unwrap()[0].detail, "2");
        assert_eq!(parse_id(&next.display_id()), Some(next.id));
        assert_eq!(parse_id("inc_12"), None);
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let text = "é".repeat(DETAIL_BYTES_MAX);
        let cut = truncate(text);
        assert!(cut.len() <= DETAIL_BYTES_MAX + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}

//! Revoked API keys kept beside the backups, so that a restore cannot bring back a key revoked
//! after the backup was taken: `<backup.dir>/revocations` locally and `revocations` in the
//! off-site store, each the JSON list of revoked key ids with their time, signed like a
//! manifest (HMAC-SHA256 under the manifest key, label [`LABEL`]). A revocation is written
//! locally before `DELETE /v1/keys/{id}` answers and sent off-site by the backup worker (merged
//! with what is there, so a lost local directory loses nothing already copied);
//! `orderctl backup restore` re-applies the union of both to the restored `keys.json`.

use std::collections::BTreeMap;
use std::path::Path;

use orderd_engine::backup::{write_atomic, ManifestKeys};
use orderd_service::auth::{KeyStore, RevokeError, KEYS_FILE};
use serde::{Deserialize, Serialize};

/// The file's name, locally (in the backup directory) and off-site (at the top).
pub const REVOCATIONS_FILE: &str = "revocations";
/// What the signature covers besides the file, so no other signed file passes for it.
pub const LABEL: &[u8] = b"orderd revocations v1";

/// Revoked key ids and when each was revoked (Unix microseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    pub revoked: BTreeMap<String, i64>,
}

impl Revocations {
    /// Reads signed bytes; an error when they do not verify or parse.
    pub fn open(keys: &ManifestKeys, bytes: &[u8]) -> Result<Revocations, String> {
        let body = keys
            .open(LABEL, bytes)
            .map_err(|e| format!("the revocation list: {e}"))?;
        serde_json::from_slice(body).map_err(|e| format!("the revocation list: {e}"))
    }

    pub fn seal(&self, keys: &ManifestKeys) -> Vec<u8> {
        keys.seal(
            LABEL,
            &serde_json::to_vec(self).expect("a revocation list serializes"),
        )
    }

    /// Adds every revocation of `other` (the earlier time of a key in both).
    pub fn merge(&mut self, other: Revocations) {
        for (id, at) in other.revoked {
            let entry = self.revoked.entry(id).or_insert(at);
            *entry = (*entry).min(at);
        }
    }

    /// The list in the backup directory `dir` (empty when there is none).
    pub fn read_local(dir: &Path, keys: &ManifestKeys) -> Result<Revocations, String> {
        match std::fs::read(dir.join(REVOCATIONS_FILE)) {
            Ok(bytes) => Revocations::open(keys, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revocations::default()),
            Err(e) => Err(format!(
                "read {}: {e}",
                dir.join(REVOCATIONS_FILE).display()
            )),
        }
    }

    /// Adds `id` (revoked at `at_us`) to the list in `dir`, written atomically and synced. An
    /// unreadable list is replaced by one that keeps what can be kept: nothing (a warning
    /// says so; the off-site list still holds the older ones).
    pub fn record_local(
        dir: &Path,
        keys: &ManifestKeys,
        id: &str,
        at_us: i64,
    ) -> Result<(), String> {
        let mut list = Revocations::read_local(dir, keys).unwrap_or_else(|error| {
            tracing::warn!(message = "The local revocation list is unreadable; starting a new one.", %error);
            Revocations::default()
        });
        list.revoked.entry(id.to_string()).or_insert(at_us);
        write_atomic(&dir.join(REVOCATIONS_FILE), &list.seal(keys)).map_err(|e| e.to_string())
    }

    /// Revokes every listed key in the key table of `data_dir` (restored from a backup).
    /// Returns the ids revoked; keys the table does not hold are skipped; the last admin key is
    /// never revoked (a warning names it).
    pub fn apply(&self, data_dir: &Path) -> Result<Vec<String>, String> {
        if self.revoked.is_empty() || !data_dir.join(KEYS_FILE).is_file() {
            return Ok(Vec::new());
        }
        let store = KeyStore::open(data_dir).map_err(|e| e.to_string())?;
        let mut applied = Vec::new();
        for id in self.revoked.keys() {
            match store.revoke(id) {
                Ok(_) => applied.push(id.clone()),
                Err(RevokeError::NotFound) => {}
                Err(RevokeError::LastAdmin) => tracing::warn!(
                    message = "A revoked key is the restored store's last admin key; it stays (create another admin key, then revoke it).",
                    key_id = %id
                ),
                Err(RevokeError::Store(error)) => return Err(error.to_string()),
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_engine::backup::ManifestKey;

    fn keys(seed: u8) -> ManifestKeys {
        ManifestKeys::new(ManifestKey::derive([seed; 8], &[seed; 32]), [])
    }

    #[test]
    fn lists_are_signed_merged_and_refused_when_altered() {
        let dir = tempfile::tempdir().unwrap();
        Revocations::record_local(dir.path(), &keys(1), "key_a", 5).unwrap();
        Revocations::record_local(dir.path(), &keys(1), "key_b", 7).unwrap();
        let list = Revocations::read_local(dir.path(), &keys(1)).unwrap();
        assert_eq!(list.revoked.keys().collect::<Vec<_>>(), ["key_a", "key_b"]);
        // Another master key cannot read it; an edit is refused.
        assert!(Revocations::read_local(dir.path(), &keys(2)).is_err());
        let path = dir.path().join(REVOCATIONS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(Revocations::read_local(dir.path(), &keys(1)).is_err());
        // A manifest key's seal under another label does not pass.
        let other = keys(1).seal(b"orderd manifest v1", br#"{"revoked":{}}"#);
        assert!(Revocations::open(&keys(1), &other).is_err());
        let mut merged = list.clone();
        merged.merge(Revocations {
            revoked: [("key_a".to_string(), 3), ("key_c".to_string(), 9)].into(),
        });
        assert_eq!(merged.revoked["key_a"], 3);
        assert_eq!(merged.revoked.len(), 3);
    }
}

//! The disk guard: a thread that watches the free space of the data directory's file system
//! and refuses writes (507 `insufficient_storage`) before RocksDB runs out of space.
//!
//! RocksDB does not reliably return to read-write after a write fails with "no space left on
//! device" (a failed WAL write is fatal in recent versions until the store is reopened), so
//! orderd stops taking writes while the file system has less than `storage.min_free_bytes`
//! free, and takes them again by itself once it has a quarter more than that (hysteresis, so
//! a disk hovering at the limit does not flap). Reads go on throughout.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use crate::log::WriterStats;

/// How often free space is read (one `statvfs`, about a microsecond).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Free bytes available to an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    space(path).map(|space| space.free_bytes)
}

/// Size and free space of a file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes available to an unprivileged writer (`f_bavail`).
    pub free_bytes: u64,
    /// Size of the file system (`f_blocks`).
    pub size_bytes: u64,
}

/// Size and free space of the file system holding `path` (one `statvfs`).
pub fn space(path: &std::path::Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return None;
    }
    let fragment = if stat.f_frsize > 0 {
        stat.f_frsize as u64
    } else {
        stat.f_bsize as u64
    };
    Some(DiskSpace {
        free_bytes: (stat.f_bavail as u64).saturating_mul(fragment),
        size_bytes: (stat.f_blocks as u64).saturating_mul(fragment),
    })
}

/// Whether writes should be refused, given the free space and the current state.
pub fn low(free: u64, min_free_bytes: u64, currently_low: bool) -> bool {
    if currently_low {
        free < min_free_bytes.saturating_add(min_free_bytes / 4)
    } else {
        free < min_free_bytes
    }
}

/// Starts the guard; it ends when the engine's writer statistics are dropped.
pub fn start(data_dir: PathBuf, min_free_bytes: u64, stats: Weak<WriterStats>) {
    let spawned = std::thread::Builder::new()
        .name("orderd-disk-guard".into())
        .spawn(move || loop {
            let Some(stats) = stats.upgrade() else { return };
            if let Some(free) = free_bytes(&data_dir) {
                let was = stats.disk_low.load(Ordering::SeqCst);
                let now = low(free, min_free_bytes, was);
                if now != was {
                    stats.disk_low.store(now, Ordering::SeqCst);
                    if now {
                        tracing::error!(
                            message = "The data directory's disk is nearly full; writes are refused until space is back.",
                            free_bytes = free,
                            min_free_bytes
                        );
                    } else {
                        tracing::warn!(
                            message = "Disk space is back; writes are accepted again.",
                            free_bytes = free
                        );
                    }
                }
            }
            drop(stats);
            std::thread::sleep(CHECK_INTERVAL);
        });
    if let Err(error) = spawned {
        tracing::error!(message = "Could not start the disk guard.", %error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_below_the_limit_and_accepts_again_with_hysteresis() {
        assert!(!low(1000, 800, false));
        assert!(low(799, 800, false));
        // Once low, it stays low until a quarter more than the limit is free.
        assert!(low(900, 800, true));
        assert!(!low(1000, 800, true));
        assert!(!low(0, 0, false), "0 turns the guard off");
    }

    #[test]
    fn reads_the_free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}

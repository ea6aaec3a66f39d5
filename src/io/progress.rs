//! Process-wide counters of BAM records decoded, compressed bytes read and expected, and damaged
//! records skipped (option `skip_damaged`), and which scans are running.
//!
//! Scans add to them as they go; the CLI samples them to draw a progress bar on a terminal.
//! They only ever grow, so a reader takes a snapshot at the start of a statement and shows the
//! difference. [`on_idle`] lets the CLI erase its bar, before results are printed, on the thread
//! of the last scan to end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static RECORDS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static EXPECTED: AtomicU64 = AtomicU64::new(0);
static DAMAGED: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicU64 = AtomicU64::new(0);
static ON_IDLE: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// The counters since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub records: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    /// Compressed bytes that planned scans will read: the files' sizes, or what the index
    /// selects for a region.
    pub expected: u64,
    /// Damaged records skipped, plus damaged stretches of BGZF data skipped whole.
    pub damaged: u64,
}

pub fn add(records: u64, bytes: u64) {
    RECORDS.fetch_add(records, Ordering::Relaxed);
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

pub fn add_expected(bytes: u64) {
    EXPECTED.fetch_add(bytes, Ordering::Relaxed);
}

pub fn add_damaged(n: u64) {
    DAMAGED.fetch_add(n, Ordering::Relaxed);
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        records: RECORDS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        expected: EXPECTED.load(Ordering::Relaxed),
        damaged: DAMAGED.load(Ordering::Relaxed),
    }
}

impl Snapshot {
    pub fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            records: self.records - earlier.records,
            bytes: self.bytes - earlier.bytes,
            expected: self.expected - earlier.expected,
            damaged: self.damaged - earlier.damaged,
        }
    }
}

/// Whether a scan is running.
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Acquire) > 0
}

/// Registers `f`, called whenever the last running scan ends, on that scan's thread (so before
/// its query's results are printed). Once per process: returns `false` if one was registered.
pub fn on_idle(f: impl Fn() + Send + Sync + 'static) -> bool {
    ON_IDLE.set(Box::new(f)).is_ok()
}

/// A running scan, counted from creation to drop.
#[derive(Debug)]
pub struct Activity(());

impl Activity {
    pub fn start() -> Self {
        ACTIVE.fetch_add(1, Ordering::AcqRel);
        Self(())
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if ACTIVE.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(f) = ON_IDLE.get() {
                f();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_counted_until_dropped() {
        let a = Activity::start();
        let b = Activity::start();
        assert!(is_active());
        drop(a);
        assert!(is_active());
        drop(b);
        // Other tests of this process may run scans; this one's are gone.
        assert!(ACTIVE.load(Ordering::Acquire) < 2);
    }
}

//! Process-wide counters of BAM records decoded, compressed bytes read and expected, and damaged
//! records skipped (option `skip_damaged`), and which scans are running.
//!
//! Scans add to them as they go; the CLI samples them to draw a progress bar on a terminal.
//! They only ever grow, so a reader takes a snapshot at the start of a statement and shows the
//! difference. [`on_idle`] lets the CLI erase its bar, before results are printed, on the thread
//! of the last scan to end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PROCESS: Tally = Tally::new();
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

/// Counters of records and bytes: the process's, or those of one caller's scans (a table made
/// with [`crate::BamTable::with_tally`] adds to its own as well as to the process's), so that
/// two conversions running at once each see their own progress.
#[derive(Debug, Default)]
pub struct Tally {
    records: AtomicU64,
    bytes: AtomicU64,
    expected: AtomicU64,
    damaged: AtomicU64,
}

impl Tally {
    pub const fn new() -> Self {
        Self {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
        }
    }

    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_expected(&self, bytes: u64) {
        self.expected.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            damaged: self.damaged.load(Ordering::Relaxed),
        }
    }
}

/// Adds to the process's counters, and to a caller's if there is one.
pub fn add(records: u64, bytes: u64, tally: Option<&Tally>) {
    PROCESS.add(records, bytes);
    if let Some(tally) = tally {
        tally.add(records, bytes);
    }
}

/// Adds bytes that a planned scan will read, as [`add`].
pub fn add_expected(bytes: u64, tally: Option<&Tally>) {
    PROCESS.add_expected(bytes);
    if let Some(tally) = tally {
        tally.add_expected(bytes);
    }
}

pub fn add_damaged(n: u64) {
    PROCESS.damaged.fetch_add(n, Ordering::Relaxed);
}

/// The process's counters.
pub fn snapshot() -> Snapshot {
    PROCESS.snapshot()
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

    #[test]
    fn a_callers_tally_counts_its_own_and_the_process_all() {
        let (mine, before) = (Tally::new(), snapshot());
        add(3, 100, Some(&mine));
        add(2, 50, None);
        add_expected(7, Some(&mine));
        assert_eq!(mine.snapshot(), Snapshot { records: 3, bytes: 100, expected: 7, damaged: 0 });
        let process = snapshot().since(before);
        // Other tests of this process may add too.
        assert!(process.records >= 5 && process.bytes >= 150 && process.expected >= 7);
    }
}

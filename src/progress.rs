//! Process-wide counters of BAM records decoded, compressed bytes read, and damaged records
//! skipped (option `skip_damaged`).
//!
//! Scans add to them as they go; the CLI samples them to draw a progress line on a terminal.
//! They only ever grow, so a reader takes a snapshot at the start of a statement and shows the
//! difference.

use std::sync::atomic::{AtomicU64, Ordering};

static RECORDS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static DAMAGED: AtomicU64 = AtomicU64::new(0);

/// Records decoded and compressed bytes read, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub records: u64,
    pub bytes: u64,
    /// Damaged records skipped, plus damaged stretches of BGZF data skipped whole.
    pub damaged: u64,
}

pub fn add(records: u64, bytes: u64) {
    RECORDS.fetch_add(records, Ordering::Relaxed);
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

pub fn add_damaged(n: u64) {
    DAMAGED.fetch_add(n, Ordering::Relaxed);
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        records: RECORDS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        damaged: DAMAGED.load(Ordering::Relaxed),
    }
}

impl Snapshot {
    pub fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            records: self.records - earlier.records,
            bytes: self.bytes - earlier.bytes,
            damaged: self.damaged - earlier.damaged,
        }
    }
}

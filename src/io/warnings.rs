//! Warnings from scans that go on: a missing BGZF end-of-file block, damaged data skipped under
//! option `skip_damaged`.
//!
//! A query's result cannot carry them, so they are kept process-wide (the latest [`KEPT`]) for
//! the CLI and the Python module to show after a statement, and also sent to the `log` crate for
//! applications that log. Readers keep a cursor ([`since`]), so several readers (or tests
//! running side by side) never take each other's warnings.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Warnings kept; older ones are dropped (their count is still known from the cursor).
pub const KEPT: usize = 1000;

struct Log {
    /// Sequence number of `entries[0]`.
    first: u64,
    entries: VecDeque<String>,
}

static LOG: Mutex<Log> = Mutex::new(Log { first: 0, entries: VecDeque::new() });

/// Records a warning.
pub fn warn(message: String) {
    log::warn!("{message}");
    let Ok(mut log) = LOG.lock() else { return };
    if log.entries.len() == KEPT {
        log.entries.pop_front();
        log.first += 1;
    }
    log.entries.push_back(message);
}

/// The cursor after the latest warning: pass it to [`since`] later.
pub fn cursor() -> u64 {
    LOG.lock().map(|log| log.first + log.entries.len() as u64).unwrap_or(0)
}

/// Warnings recorded after `cursor`, how many of those are no longer kept, and the new cursor.
pub fn since(cursor: u64) -> (Vec<String>, u64, u64) {
    let Ok(log) = LOG.lock() else { return (vec![], 0, cursor) };
    let end = log.first + log.entries.len() as u64;
    let dropped = log.first.saturating_sub(cursor);
    let skip = cursor.saturating_sub(log.first) as usize;
    (log.entries.iter().skip(skip).cloned().collect(), dropped, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_only_warnings_after_their_cursor() {
        let before = cursor();
        warn("first warning of this test".into());
        let middle = cursor();
        warn("second warning of this test".into());
        let (all, dropped, end) = since(before);
        assert_eq!(dropped, 0);
        assert!(all.iter().any(|w| w == "first warning of this test"), "{all:?}");
        let (later, _, _) = since(middle);
        assert!(later.iter().any(|w| w == "second warning of this test"));
        assert!(!later.iter().any(|w| w == "first warning of this test"));
        assert!(end > middle);
    }
}

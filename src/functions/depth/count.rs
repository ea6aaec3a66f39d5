//! Depth counting: reads of one reference in coordinate order in, runs of equal depth out.
//!
//! The counter keeps a window of pending depth changes that starts at the last read's start (no
//! later read can change a position before it) and ends at the furthest read end, so its memory
//! follows the reads' span, not the reference's length.

use std::collections::{HashMap, VecDeque};

/// Whose counting rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountMode {
    /// mosdepth's: the two mates of a proper pair are counted once where they overlap.
    Mosdepth,
    /// `samtools depth`'s: every read is counted, overlapping mates twice.
    Samtools,
}

/// A CIGAR operation: its code (`M`, `I`, `D`, ...) and length.
pub type CigarOp = (u8, u32);

/// What the counter needs of one read. Positions are 0-based.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    pub start: i64,
    pub flag: u16,
    pub cigar: &'a [CigarOp],
    /// Whether the mate is on the same reference (`rnext` is `=` or the read's own reference).
    pub mate_here: bool,
    pub mate_start: i64,
    pub qname: &'a str,
}

/// A read kept for later: one whose overlap with its mate is settled by the merge of byte ranges.
#[derive(Debug, Clone)]
pub struct HeldRead {
    pub start: i64,
    pub flag: u16,
    pub cigar: Vec<CigarOp>,
    pub mate_here: bool,
    pub mate_start: i64,
    pub qname: Box<str>,
}

impl HeldRead {
    fn of(read: &Read) -> Self {
        Self {
            start: read.start,
            flag: read.flag,
            cigar: read.cigar.to_vec(),
            mate_here: read.mate_here,
            mate_start: read.mate_start,
            qname: read.qname.into(),
        }
    }

    pub fn read(&self) -> Read<'_> {
        Read {
            start: self.start,
            flag: self.flag,
            cigar: &self.cigar,
            mate_here: self.mate_here,
            mate_start: self.mate_start,
            qname: &self.qname,
        }
    }
}

/// A run of equal depth over the 0-based, half-open `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: i64,
    pub end: i64,
    pub depth: i32,
}

/// How many waiting mates make the counter drop those whose partner can no longer come: rarely
/// enough to cost nothing, often enough to bound the table by the reads in flight.
const WAITING_SWEEP: usize = 4096;

const PROPER_PAIR: u16 = 0x2;
const SUPPLEMENTARY: u16 = 0x800;

fn consumes_reference(op: u8) -> bool {
    matches!(op, b'M' | b'D' | b'N' | b'=' | b'X')
}

/// The read's end as htslib's `bam_endpos` gives it: a read without reference-consuming
/// operations ends one past its start.
pub fn end_position(start: i64, cigar: &[CigarOp]) -> i64 {
    let span: i64 = cigar.iter().filter(|(op, _)| consumes_reference(*op)).map(|&(_, n)| i64::from(n)).sum();
    start + span.max(1)
}

/// Whether mosdepth's overlap rule applies to a read with `flag`.
fn pairs(flag: u16) -> bool {
    flag & PROPER_PAIR != 0 && flag & SUPPLEMENTARY == 0
}

/// A mate kept until the other mate comes (mosdepth's `seen` table).
#[derive(Debug, Clone)]
pub struct Waiting {
    start: i64,
    end: i64,
    mate_start: i64,
    cigar: Vec<CigarOp>,
}

/// The mates waiting for their partners on one reference, and mosdepth's overlap rule.
#[derive(Debug, Default)]
pub struct Mates {
    waiting: HashMap<Box<str>, Waiting>,
    events: Vec<(i64, i32)>,
}

impl Mates {
    /// mosdepth's overlap rule: the first mate (by start) of a proper pair that reaches its
    /// mate's start waits; when the mate comes, `change` receives the changes that take off the
    /// bases where both are counted.
    pub fn overlap(&mut self, read: &Read, count_deletions: bool, change: &mut impl FnMut(i64, i32)) {
        let end = end_position(read.start, read.cigar);
        let waits = read.mate_here
            && end > read.mate_start
            && (read.start < read.mate_start
                || (read.start == read.mate_start && !self.waiting.contains_key(read.qname)));
        if waits {
            let waiting = Waiting { start: read.start, end, mate_start: read.mate_start, cigar: read.cigar.to_vec() };
            self.waiting.insert(read.qname.into(), waiting);
            return;
        }
        let Some(mate) = self.waiting.remove(read.qname) else { return };
        if read.cigar.len() == 1 && mate.cigar.len() == 1 {
            // mosdepth's shortcut for two ungapped reads (from the read's start to the mate's end).
            change(read.start, -1);
            change(mate.end, 1);
            return;
        }
        self.events.clear();
        covered_blocks(read.cigar, read.start, count_deletions, &mut self.events);
        covered_blocks(&mate.cigar, mate.start, count_deletions, &mut self.events);
        // Stable, as mosdepth's merge sort: the order of equal positions decides the pairs.
        self.events.sort_by_key(|&(at, _)| at);
        let (mut pair_depth, mut last) = (0, 0);
        for &(at, by) in &self.events {
            if by == -1 && pair_depth == 2 {
                change(last, -1);
                change(at, 1);
            }
            pair_depth += by;
            last = at;
        }
    }

    pub fn is_waiting(&self, qname: &str) -> bool {
        self.waiting.contains_key(qname)
    }

    /// Keeps only the mates whose partner starts at or after `from`: no other can still come.
    pub fn keep_from(&mut self, from: i64) {
        self.waiting.retain(|_, w| w.mate_start >= from);
    }

    pub fn clear(&mut self) {
        self.waiting.clear();
    }

    /// Takes over `other`'s waiting mates.
    pub fn extend(&mut self, other: Mates) {
        self.waiting.extend(other.waiting);
    }
}

/// Depth changes not yet settled, at `base`, `base + 1`, ...; changes past `length` are dropped.
struct Pending {
    length: i64,
    base: i64,
    changes: VecDeque<i32>,
}

impl Pending {
    fn change(&mut self, at: i64, by: i32) {
        if at >= self.length {
            return;
        }
        // Positions before `base` are settled; reads come in start order, so none are changed.
        let offset = (at - self.base).max(0) as usize;
        if offset >= self.changes.len() {
            self.changes.resize(offset + 1, 0);
        }
        self.changes[offset] += by;
    }
}

/// Counts the depth of one reference of `length` bases; reads must come in start order.
pub struct DepthCounter {
    mode: CountMode,
    count_deletions: bool,
    pending: Pending,
    /// The depth just before `pending.base`.
    depth: i32,
    run_start: i64,
    mates: Mates,
    /// For a byte range of a file: its first read's start. Reads whose mate starts before it
    /// (or at it, and is not waiting here) are held for the merge, which knows earlier ranges.
    holds_before: Option<i64>,
    held: Vec<HeldRead>,
    events: Vec<(i64, i32)>,
}

impl DepthCounter {
    pub fn new(mode: CountMode, count_deletions: bool, length: i64) -> Self {
        Self {
            mode,
            count_deletions,
            pending: Pending { length, base: 0, changes: VecDeque::new() },
            depth: 0,
            run_start: 0,
            mates: Mates::default(),
            holds_before: None,
            held: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A counter for the first reference of a byte range whose first read starts at `first`:
    /// the overlap of mates that may lie in earlier ranges is left to the merge
    /// ([`DepthCounter::finish`]).
    pub fn for_range(mode: CountMode, count_deletions: bool, length: i64, first: i64) -> Self {
        Self { holds_before: Some(first), ..Self::new(mode, count_deletions, length) }
    }

    /// Adds a read that passed the filters; `out` receives the runs that it settles.
    pub fn add(&mut self, read: &Read, out: &mut impl FnMut(Run)) {
        self.settle(read.start.min(self.pending.length), out);
        // Mates that should have come by now never will (mosdepth keeps them to the reference's
        // end; under the default flags only the mate itself can claim an entry).
        if self.mates.waiting.len() > WAITING_SWEEP {
            self.mates.keep_from(self.pending.base);
        }
        if self.mode == CountMode::Mosdepth && pairs(read.flag) {
            let held = self.holds_before.is_some_and(|first| {
                read.mate_here
                    && (read.mate_start < first || (read.mate_start == first && !self.mates.is_waiting(read.qname)))
            });
            if held {
                self.held.push(HeldRead::of(read));
            } else {
                let pending = &mut self.pending;
                self.mates.overlap(read, self.count_deletions, &mut |at, by| pending.change(at, by));
            }
        }
        self.events.clear();
        covered_blocks(read.cigar, read.start, self.count_deletions, &mut self.events);
        for &(at, by) in &self.events {
            self.pending.change(at, by);
        }
    }

    /// Settles every position before `upto`, giving `out` the runs that end there.
    fn settle(&mut self, upto: i64, out: &mut impl FnMut(Run)) {
        let pending = &mut self.pending;
        if upto <= pending.base {
            return;
        }
        let settled = ((upto - pending.base) as usize).min(pending.changes.len());
        for (i, change) in pending.changes.drain(..settled).enumerate() {
            if change != 0 {
                let at = pending.base + i as i64;
                // A run that has not started yet (at the reference's first base) just takes the
                // new depth.
                if at > self.run_start {
                    out(Run { start: self.run_start, end: at, depth: self.depth });
                }
                self.run_start = at;
                self.depth += change;
            }
        }
        pending.base = upto;
    }

    /// Where the run not yet given out starts.
    pub fn run_start(&self) -> i64 {
        self.run_start
    }

    /// Settles the rest of the reference and gives out its last run. What the merge of byte
    /// ranges needs is returned: the reads held for it, and the mates still waiting.
    pub fn finish(mut self, out: &mut impl FnMut(Run)) -> (Vec<HeldRead>, Mates) {
        // Later ranges start at or after the last read: only mates starting there can come.
        self.mates.keep_from(self.pending.base);
        let length = self.pending.length;
        self.settle(length, out);
        if length > self.run_start {
            out(Run { start: self.run_start, end: length, depth: self.depth });
        }
        (self.held, self.mates)
    }
}

/// The depth changes of a read's covered blocks, as mosdepth's `gen_start_ends` gives them (in
/// its order, which its overlap rule depends on): `M`, `=` and `X` cover the reference, and `D`
/// too when deletions count; adjacent blocks join.
pub fn covered_blocks(cigar: &[CigarOp], start: i64, count_deletions: bool, events: &mut Vec<(i64, i32)>) {
    if let [(b'M', n)] = cigar {
        events.push((start, 1));
        events.push((start + i64::from(*n), -1));
        return;
    }
    let mut at = start;
    let mut last_stop = -1;
    for &(op, n) in cigar {
        if !consumes_reference(op) {
            continue;
        }
        let covers = matches!(op, b'M' | b'=' | b'X') || (count_deletions && op == b'D');
        if covers {
            if at != last_stop {
                events.push((at, 1));
                if last_stop != -1 {
                    events.push((last_stop, -1));
                }
            }
            last_stop = at + i64::from(n);
        }
        at += i64::from(n);
    }
    if last_stop != -1 {
        events.push((last_stop, -1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(mode: CountMode, reads: &[(i64, &[CigarOp], i64)], length: i64) -> Vec<(i64, i64, i32)> {
        let mut counter = DepthCounter::new(mode, false, length);
        let mut out = Vec::new();
        for &(start, cigar, mate_start) in reads {
            let read = Read { start, flag: 0x3, cigar, mate_here: true, mate_start, qname: "pair" };
            counter.add(&read, &mut |r| out.push((r.start, r.end, r.depth)));
        }
        counter.finish(&mut |r| out.push((r.start, r.end, r.depth)));
        out
    }

    #[test]
    fn blocks_join_across_insertions_and_break_at_deletions() {
        let ops: &[CigarOp] = &[(b'M', 5), (b'I', 2), (b'M', 5), (b'D', 3), (b'M', 5)];
        let mut events = Vec::new();
        covered_blocks(ops, 0, false, &mut events);
        assert_eq!(events, [(0, 1), (13, 1), (10, -1), (18, -1)]);
        events.clear();
        covered_blocks(ops, 0, true, &mut events);
        assert_eq!(events, [(0, 1), (18, -1)]);
        assert_eq!(end_position(7, ops), 7 + 18);
        assert_eq!(end_position(7, &[(b'S', 10)]), 8, "no reference span ends one past the start");
    }

    #[test]
    fn overlapping_mates_count_once_under_mosdepth_and_twice_under_samtools() {
        let read: &[CigarOp] = &[(b'M', 100)];
        let pair = [(0, read, 50), (50, read, 0)];
        assert_eq!(runs(CountMode::Mosdepth, &pair, 200), [(0, 150, 1), (150, 200, 0)]);
        assert_eq!(runs(CountMode::Samtools, &pair, 200), [(0, 50, 1), (50, 100, 2), (100, 150, 1), (150, 200, 0)]);
        // A read past the reference's end is cut there; an empty reference is one run of 0.
        assert_eq!(runs(CountMode::Samtools, &[(150, read, -1)], 200), [(0, 150, 0), (150, 200, 1)]);
        assert_eq!(runs(CountMode::Samtools, &[], 10), [(0, 10, 0)]);
    }
}

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

/// A mate kept until the other mate comes (mosdepth's `seen` table).
struct Waiting {
    start: i64,
    end: i64,
    mate_start: i64,
    cigar: Vec<CigarOp>,
}

/// Counts the depth of one reference of `length` bases; reads must come in start order.
pub struct DepthCounter {
    mode: CountMode,
    count_deletions: bool,
    length: i64,
    /// Pending depth changes at `base`, `base + 1`, ...
    base: i64,
    changes: VecDeque<i32>,
    /// The depth just before `base`.
    depth: i32,
    run_start: i64,
    waiting: HashMap<Box<str>, Waiting>,
    events: Vec<(i64, i32)>,
}

impl DepthCounter {
    pub fn new(mode: CountMode, count_deletions: bool, length: i64) -> Self {
        Self {
            mode,
            count_deletions,
            length,
            base: 0,
            changes: VecDeque::new(),
            depth: 0,
            run_start: 0,
            waiting: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Adds a read that passed the filters; `out` receives the runs that it settles.
    pub fn add(&mut self, read: &Read, out: &mut impl FnMut(Run)) {
        self.settle(read.start.min(self.length), out);
        if self.mode == CountMode::Mosdepth && read.flag & PROPER_PAIR != 0 && read.flag & SUPPLEMENTARY == 0 {
            self.overlap_mates(read);
        }
        self.events.clear();
        covered_blocks(read.cigar, read.start, self.count_deletions, &mut self.events);
        for i in 0..self.events.len() {
            let (at, change) = self.events[i];
            self.change(at, change);
        }
    }

    /// mosdepth's overlap rule: the first mate (by start) of a proper pair that reaches its
    /// mate's start waits; when the mate comes, the bases where both are counted are taken off.
    fn overlap_mates(&mut self, read: &Read) {
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
            self.change(read.start, -1);
            self.change(mate.end, 1);
            return;
        }
        self.events.clear();
        covered_blocks(read.cigar, read.start, self.count_deletions, &mut self.events);
        covered_blocks(&mate.cigar, mate.start, self.count_deletions, &mut self.events);
        // Stable, as mosdepth's merge sort: the order of equal positions decides the pairs.
        self.events.sort_by_key(|&(at, _)| at);
        let (mut pair_depth, mut last) = (0, 0);
        for i in 0..self.events.len() {
            let (at, change) = self.events[i];
            if change == -1 && pair_depth == 2 {
                self.change(last, -1);
                self.change(at, 1);
            }
            pair_depth += change;
            last = at;
        }
    }

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

    /// Settles every position before `upto`, giving `out` the runs that end there.
    fn settle(&mut self, upto: i64, out: &mut impl FnMut(Run)) {
        if upto <= self.base {
            return;
        }
        let pending = ((upto - self.base) as usize).min(self.changes.len());
        for (i, change) in self.changes.drain(..pending).enumerate() {
            if change != 0 {
                let at = self.base + i as i64;
                // A run that has not started yet (at the reference's first base) just takes the
                // new depth.
                if at > self.run_start {
                    out(Run { start: self.run_start, end: at, depth: self.depth });
                }
                self.run_start = at;
                self.depth += change;
            }
        }
        self.base = upto;
        // Mates that should have come by now never will (mosdepth keeps them to the reference's
        // end; under the default flags only the mate itself can claim an entry).
        if self.waiting.len() > WAITING_SWEEP {
            let settled = self.base;
            self.waiting.retain(|_, w| w.mate_start >= settled);
        }
    }

    /// Settles the rest of the reference and gives out its last run.
    pub fn finish(mut self, out: &mut impl FnMut(Run)) {
        let length = self.length;
        self.settle(length, out);
        if length > self.run_start {
            out(Run { start: self.run_start, end: length, depth: self.depth });
        }
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

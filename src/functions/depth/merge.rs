//! One file without an index counted on every core. The file's byte ranges count their own
//! reads in parallel. Each gives out its runs in the middle at once, and hands its edges to the
//! merge, which takes them in file order:
//! - the head: its runs from its first read until `max_span` bases on, where reads of earlier
//!   ranges may still reach;
//! - the tail: its runs from its last read on, where reads of later ranges add;
//! - the reads whose mates may lie in earlier ranges (mosdepth counts overlapping mates once),
//!   and the mates still waiting for theirs.
//!
//! The merge adds the heads to the tails before them, and gives out the positions between.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::bins::Bin;
use super::count::{HeldRead, Mates, Run};
use super::exec::{count_input, unsorted, BedIntervals, Item, Piece, PieceCounter, References, Rows, RunSink};
use super::options::DepthOptions;
use crate::error::BamError;

/// A position along the file's references, in their order: reference, then 0-based position.
type At = (usize, i64);

/// A read's reference, start and end (0-based, half-open), for messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reach {
    tid: usize,
    start: i64,
    end: i64,
}

/// What a byte range keeps back from its runs while it counts.
#[derive(Debug, Default)]
pub(super) struct RangeGate {
    max_span: i64,
    /// The first counted read's reference and start: the range's runs begin there.
    pub(super) first: Option<At>,
    /// The first placed record, counted or not (the sort check across ranges), with its name.
    pub(super) first_seen: Option<(usize, i64, String)>,
    /// Where the range began giving out its runs itself; from `first` to here they are `head`.
    released: Option<At>,
    head: Vec<Run>,
    /// Once the last reference is finishing: where its runs become the tail.
    tail_start: Option<At>,
    tail: Vec<Run>,
    /// The read reaching furthest on the reference being counted.
    reach: Option<Reach>,
    pub(super) held: Vec<HeldRead>,
    pub(super) mates: Mates,
    /// Windows or intervals partly given out by the range: the merge adds the rest.
    partial_bins: Vec<(usize, Bin)>,
}

impl RangeGate {
    pub(super) fn new(max_span: i64) -> Self {
        Self { max_span, ..Self::default() }
    }

    /// Notes a counted read of reference `tid` over `[start, end)`.
    pub(super) fn reaches(&mut self, tid: usize, start: i64, end: i64) {
        if self.reach.is_none_or(|r| r.tid != tid || r.end < end) {
            self.reach = Some(Reach { tid, start, end });
        }
    }

    /// Whether `run` (of reference `tid`, cut to start at the first read) is given out now;
    /// otherwise it is kept as part of the head or the tail.
    pub(super) fn passes(&mut self, tid: usize, run: &mut Run) -> bool {
        let Some((first_tid, first_start)) = self.first else { return false };
        if tid == first_tid {
            run.start = run.start.max(first_start);
            if run.start >= run.end {
                return false;
            }
        }
        if self.tail_start.is_some() {
            self.tail.push(*run);
            return false;
        }
        if self.released.is_none() {
            // Reads of earlier ranges end at most `max_span` past the first read: the run after
            // that position starts where only this range's reads count.
            if tid == first_tid && run.start <= first_start + self.max_span {
                self.head.push(*run);
                return false;
            }
            self.released = Some((tid, run.start));
        }
        true
    }

    /// Starts the tail: the runs of reference `tid` from `run_start` (where the run that holds
    /// the last read's start begins) on.
    pub(super) fn begin_tail(&mut self, tid: usize, run_start: i64) {
        let start = match self.first {
            Some((first_tid, first_start)) if first_tid == tid => run_start.max(first_start),
            _ => run_start,
        };
        self.tail_start = Some((tid, start));
    }

    /// A window or interval summed over the runs the range gave out: a row if it lies within
    /// them, kept for the merge if it lies partly within.
    pub(super) fn route_bin(&mut self, tid: usize, bin: Bin, rows: &mut Rows, rname: &str) {
        let Some(released) = self.released else { return };
        match placement(&bin, tid, (released, self.tail_start.unwrap_or((usize::MAX, i64::MAX)))) {
            Placement::Within => rows.push_bin(rname, &bin),
            Placement::Across => self.partial_bins.push((tid, bin)),
            Placement::Outside => {}
        }
    }

    /// What the merge needs, once the range is counted; `last_seen` is its last placed record.
    pub(super) fn into_edges(self, last_seen: Option<At>) -> RangeEdges {
        RangeEdges { gate: self, last_seen }
    }
}

/// Where a bin lies against the runs a range gave out, `[from, to)`.
enum Placement {
    Within,
    Across,
    Outside,
}

fn placement(bin: &Bin, tid: usize, (from, to): (At, At)) -> Placement {
    let (start, end) = ((tid, bin.start), (tid, bin.end));
    if start >= from && end <= to {
        Placement::Within
    } else if end <= from || start >= to {
        Placement::Outside
    } else {
        Placement::Across
    }
}

/// A counted byte range's edges (see the module's documentation).
#[derive(Debug)]
pub(super) struct RangeEdges {
    gate: RangeGate,
    last_seen: Option<At>,
}

/// The key of a window or interval.
type BinKey = (usize, i64, i64, Option<Arc<str>>);

/// Takes the ranges' edges in file order and gives out what the ranges did not.
pub(super) struct RangeMerge {
    file: Arc<str>,
    references: Arc<References>,
    options: Arc<DepthOptions>,
    sink: RunSink,
    /// Every position before this is given out.
    at: At,
    /// The depth that reads of the ranges merged add from `at` to its reference's end.
    carry: Vec<Run>,
    /// The read of those ranges reaching furthest on `at`'s reference.
    carry_reach: Option<Reach>,
    mates: Mates,
    mates_tid: Option<usize>,
    last_seen: Option<At>,
    /// The last run given out, kept to join an equal one after it.
    open_run: Option<(usize, Run)>,
    /// What each merged range gave out itself, `[from, to)`.
    given: Vec<(At, At)>,
    /// Parts of windows or intervals, from the ranges that gave out part of them.
    partial_bins: HashMap<BinKey, Vec<(usize, Bin)>>,
    merged: usize,
}

impl RangeMerge {
    pub(super) fn new(piece: Piece, options: Arc<DepthOptions>, bed: Option<Arc<BedIntervals>>) -> Self {
        Self {
            file: Arc::clone(&piece.file),
            references: Arc::clone(&piece.references),
            options: Arc::clone(&options),
            sink: RunSink::new(piece, options, bed),
            at: (0, 0),
            carry: Vec::new(),
            carry_reach: None,
            mates: Mates::default(),
            mates_tid: None,
            last_seen: None,
            open_run: None,
            given: Vec::new(),
            partial_bins: HashMap::new(),
            merged: 0,
        }
    }

    /// Merges the next range's edges.
    pub(super) fn merge(&mut self, edges: RangeEdges, rows: &mut Rows) -> Result<()> {
        let index = self.merged;
        self.merged += 1;
        let RangeEdges { gate, last_seen } = edges;
        if let (Some(last), Some((tid, start, qname))) = (self.last_seen, &gate.first_seen) {
            if (*tid, *start) < last {
                return Err(unsorted(&self.file, &self.references, qname, (*tid, *start), last));
            }
        }
        self.last_seen = last_seen.or(self.last_seen);
        let Some((tid, first)) = gate.first else { return Ok(()) };
        let Some(tail_start) = gate.tail_start else { unreachable!("a range with reads has a tail") };

        // The held reads meet the mates that earlier ranges left waiting.
        if self.mates_tid != Some(tid) {
            self.mates.clear();
            self.mates_tid = Some(tid);
        }
        self.mates.keep_from(first);
        let mut corrections = Vec::new();
        for read in &gate.held {
            self.mates.overlap(&read.read(), self.options.count_deletions, &mut |at, by| corrections.push((at, by)));
        }

        self.give_until(tid, rows);
        let length = self.references.lengths[tid];
        // A range that reached its last reference before giving out any run gave out nothing,
        // and holds its first reference whole.
        let released = gate.released.or((tail_start.0 != tid).then_some(tail_start));
        match released {
            Some(released) => {
                // Earlier ranges' reads must end before the range gave out its own runs.
                let end = if released.0 == tid { released.1 } else { length };
                if let Some(reach) = self.carry_reach.filter(|r| released.0 == tid && r.tid == tid && r.end >= end) {
                    return Err(self.too_long(reach, first));
                }
                let sum = sum_runs(&[&self.carry, &gate.head], &corrections, self.at.1, end);
                sum.into_iter().for_each(|run| self.give(tid, run, rows));
                if released < tail_start {
                    self.given.push((released, tail_start));
                }
                for (bin_tid, bin) in gate.partial_bins {
                    let key = (bin_tid, bin.start, bin.end, bin.name.clone());
                    self.partial_bins.entry(key).or_default().push((index, bin));
                }
                if tail_start.0 != tid {
                    self.mates.clear();
                    self.mates_tid = Some(tail_start.0);
                }
                self.at = tail_start;
                self.carry = gate.tail;
                self.carry_reach = gate.reach;
            }
            None => {
                // All of the range's runs are on its first reference, held: the sum from `at` on
                // is given out up to the tail, and carried from there.
                let sum = sum_runs(&[&self.carry, &gate.head, &gate.tail], &corrections, self.at.1, length);
                self.carry.clear();
                for run in sum {
                    if run.start < tail_start.1 {
                        self.give(tid, Run { end: run.end.min(tail_start.1), ..run }, rows);
                    }
                    if run.end > tail_start.1 {
                        self.carry.push(Run { start: run.start.max(tail_start.1), ..run });
                    }
                }
                self.at = tail_start;
                self.carry_reach = match (self.carry_reach, gate.reach) {
                    (Some(a), Some(b)) if a.tid == b.tid => Some(if a.end >= b.end { a } else { b }),
                    (_, reach) => reach,
                };
            }
        }
        self.mates.extend(gate.mates);
        Ok(())
    }

    /// Gives out the rest of the file, after the last range.
    pub(super) fn finish(mut self, rows: &mut Rows) {
        self.give_until(self.references.lengths.len(), rows);
        self.flush(rows);
        let Self { sink, references, given, partial_bins, .. } = &mut self;
        sink.close(&mut |t, item| put(t, item, given, partial_bins, references, rows));
    }

    /// Gives out every position before reference `tid`: the carry, then depth 0.
    fn give_until(&mut self, tid: usize, rows: &mut Rows) {
        while self.at.0 < tid {
            let (here, from) = self.at;
            let length = self.references.lengths[here];
            for run in sum_runs(&[&self.carry], &[], from, length) {
                self.give(here, run, rows);
            }
            self.carry.clear();
            self.carry_reach = None;
            self.at = (here + 1, 0);
        }
    }

    /// Gives out a run, joined to the one before if it continues it at the same depth.
    fn give(&mut self, tid: usize, run: Run, rows: &mut Rows) {
        if let Some((open_tid, open)) = &mut self.open_run {
            if *open_tid == tid && open.end == run.start && open.depth == run.depth {
                open.end = run.end;
                return;
            }
        }
        self.flush(rows);
        self.open_run = Some((tid, run));
    }

    fn flush(&mut self, rows: &mut Rows) {
        let Some((tid, run)) = self.open_run.take() else { return };
        let Self { sink, references, given, partial_bins, .. } = self;
        let mut out = |t: usize, item: Item| put(t, item, given, partial_bins, references, rows);
        if sink.tid() != Some(tid) && !sink.open(tid, &mut out) {
            return;
        }
        sink.run(run, &mut out);
    }

    fn too_long(&self, reach: Reach, first: i64) -> datafusion::error::DataFusionError {
        let name = &self.references.names[reach.tid];
        BamError::Unsupported {
            what: format!(
                "{}: a read at {name}:{}-{} reaches more than max_span ({} bases) past the first read of a later \
                 byte range ({name}:{}) of this file without an index; index the file (samtools index), or raise \
                 max_span",
                self.file,
                reach.start + 1,
                reach.end,
                self.options.max_span,
                first + 1
            ),
        }
        .into()
    }
}

/// Puts what the merge's sink gives out in the rows: a window or interval that a range gave
/// out whole is not given again, and one that ranges gave out part of gets their parts.
fn put(
    tid: usize,
    item: Item,
    given: &[(At, At)],
    partial_bins: &mut HashMap<BinKey, Vec<(usize, Bin)>>,
    references: &References,
    rows: &mut Rows,
) {
    let rname = &references.names[tid];
    let Item::Bin(mut bin) = item else { return rows.push(rname, item) };
    if given.iter().any(|&edges| matches!(placement(&bin, tid, edges), Placement::Within)) {
        return;
    }
    let key = (tid, bin.start, bin.end, bin.name.clone());
    if let Some(parts) = partial_bins.get_mut(&key) {
        // One part per range: an interval listed twice has a part per listing from each.
        let mut taken: Vec<usize> = Vec::new();
        parts.retain(|(range, part)| {
            if taken.contains(range) {
                return true;
            }
            taken.push(*range);
            bin.depth_sum += part.depth_sum;
            bin.at_least.iter_mut().zip(&part.at_least).for_each(|(sum, n)| *sum += n);
            false
        });
        if parts.is_empty() {
            partial_bins.remove(&key);
        }
    }
    rows.push_bin(rname, &bin);
}

/// The runs over `[from, to)` of the sum of `lists` (each 0 where it has no run) and of the
/// depth `changes`, with equal neighbours joined.
fn sum_runs(lists: &[&[Run]], changes: &[(i64, i32)], from: i64, to: i64) -> Vec<Run> {
    let mut events: Vec<(i64, i32)> = changes.to_vec();
    for run in lists.iter().flat_map(|l| l.iter()).filter(|r| r.depth != 0) {
        events.push((run.start, run.depth));
        events.push((run.end, -run.depth));
    }
    events.sort_unstable_by_key(|&(at, _)| at);
    let mut runs: Vec<Run> = Vec::new();
    let (mut depth, mut start) = (0, from);
    let mut push = |run: Run| match runs.last_mut() {
        Some(last) if last.depth == run.depth => last.end = run.end,
        _ => runs.push(run),
    };
    for (at, by) in events {
        if at >= to {
            break;
        }
        if at > start {
            push(Run { start, end: at, depth });
            start = at;
        }
        depth += by;
    }
    if start < to {
        push(Run { start, end: to, depth });
    }
    runs
}

/// Counts `ranges` (one scan per byte range of one file, in file order) in parallel, and merges
/// their edges in order as they come.
pub(super) fn count_ranges(
    ranges: Vec<Arc<dyn ExecutionPlan>>,
    piece: Piece,
    options: Arc<DepthOptions>,
    bed: Option<Arc<BedIntervals>>,
    rows: Rows,
    context: Arc<TaskContext>,
) -> SendableRecordBatchStream {
    let batch_size = context.session_config().batch_size();
    let schema = rows.schema();
    let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&schema), ranges.len() + 1);
    let (edges_tx, mut edges_rx) = tokio::sync::mpsc::channel(ranges.len());
    for (index, range) in ranges.into_iter().enumerate() {
        let (tx, edges_tx, context) = (builder.tx(), edges_tx.clone(), Arc::clone(&context));
        let mut counter = PieceCounter::for_range(piece.clone(), Arc::clone(&options), bed.clone());
        let mut rows = rows.empty();
        builder.spawn(async move {
            if !count_input(&range, &context, &mut counter, &mut rows, &tx).await? {
                return Ok(());
            }
            let edges = counter.finish_range(&mut rows);
            if !rows.send_from(1, &tx).await {
                return Ok(());
            }
            let _ = edges_tx.send((index, edges)).await;
            Ok(())
        });
    }
    drop(edges_tx);
    let tx = builder.tx();
    let mut rows = rows;
    builder.spawn(async move {
        let mut merge = RangeMerge::new(piece, options, bed);
        let mut waiting = BTreeMap::new();
        // A range that fails sends no edges; its error ends the stream.
        while let Some((index, edges)) = edges_rx.recv().await {
            waiting.insert(index, edges);
            while let Some(edges) = waiting.remove(&merge.merged) {
                merge.merge(edges, &mut rows)?;
                if !rows.send_from(batch_size, &tx).await {
                    return Ok(());
                }
            }
        }
        if !waiting.is_empty() {
            return Ok(());
        }
        merge.finish(&mut rows);
        rows.send_from(1, &tx).await;
        Ok(())
    });
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::depth::exec::{depth_schema, Span};

    /// Edges of a range whose records run from `first_seen` to `last_seen` and count none.
    fn uncounted(first_seen: At, last_seen: At) -> RangeEdges {
        let gate = RangeGate { first_seen: Some((first_seen.0, first_seen.1, "r".into())), ..RangeGate::new(10) };
        gate.into_edges(Some(last_seen))
    }

    #[test]
    fn a_range_that_starts_before_the_last_ends_is_unsorted() {
        let references = Arc::new(References::new(vec!["chr1".into(), "chr2".into()], vec![100, 100]));
        let spans = vec![Span { tid: 0, start: 0, end: 100 }, Span { tid: 1, start: 0, end: 100 }];
        let piece = Piece { file: "f.bam".into(), references, spans, regioned: false };
        let options = Arc::new(DepthOptions::default());
        let mut rows = Rows::new(depth_schema(false, &options), &piece, &options, false);
        let mut merge = RangeMerge::new(piece, options, None);
        merge.merge(uncounted((0, 5), (1, 50)), &mut rows).unwrap();
        let e = merge.merge(uncounted((1, 20), (1, 60)), &mut rows).unwrap_err();
        match BamError::find(&e) {
            Some(BamError::Unsorted { file, record, reason }) => {
                assert_eq!((file.as_str(), record.as_str()), ("f.bam", "r at chr2:21"));
                assert!(reason.contains("chr2:51"), "{reason}");
            }
            _ => panic!("not Unsorted: {e}"),
        }
    }

    fn run(start: i64, end: i64, depth: i32) -> Run {
        Run { start, end, depth }
    }

    #[test]
    fn sums_of_runs_and_changes_join_equal_neighbours() {
        let a = [run(0, 10, 1), run(10, 20, 2)];
        let b = [run(5, 10, 1), run(10, 12, 0)];
        assert_eq!(sum_runs(&[&a, &b], &[], 0, 20), [run(0, 5, 1), run(5, 20, 2)]);
        assert_eq!(
            sum_runs(&[&a], &[(12, -1), (15, 1)], 8, 25),
            [run(8, 10, 1), run(10, 12, 2), run(12, 15, 1), run(15, 20, 2), run(20, 25, 0)]
        );
        assert_eq!(sum_runs(&[], &[], 3, 9), [run(3, 9, 0)]);
        assert_eq!(sum_runs(&[&a], &[], 20, 20), []);
    }
}

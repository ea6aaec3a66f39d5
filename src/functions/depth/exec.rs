//! `DepthExec`: one output partition per piece of the genome (a range of one file's references);
//! each reads its records in order from its own scan and counts them into runs or bins.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt16Type, UInt8Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use super::bins::{windows, Bin, BinSummer};
use super::count::{CigarOp, DepthCounter, Read, Run};
use super::options::DepthOptions;
use crate::error::BamError;

/// A stretch of one reference: 0-based, half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub tid: usize,
    pub start: i64,
    pub end: i64,
}

/// A file's references, as its header lists them.
#[derive(Debug)]
pub struct References {
    pub names: Vec<String>,
    pub lengths: Vec<i64>,
    ids: HashMap<String, usize>,
}

impl References {
    pub fn new(names: Vec<String>, lengths: Vec<i64>) -> Self {
        let ids = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Self { names, lengths, ids }
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }
}

/// What one output partition covers: spans of one file, in reference order.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The file, as its user named it (the `file` column, and messages).
    pub file: Arc<str>,
    pub references: Arc<References>,
    pub spans: Vec<Span>,
    /// Whether the spans are the user's regions (BED intervals are clipped to them), rather than
    /// whole references.
    pub regioned: bool,
}

/// BED intervals by reference name, each list in start order: 0-based, half-open, named or not.
pub type BedIntervals = HashMap<String, Vec<(i64, i64, Option<Arc<str>>)>>;

/// The table's columns for `options`, with a `file` column first for a cohort.
pub fn depth_schema(cohort: bool, options: &DepthOptions) -> SchemaRef {
    let mut fields = Vec::new();
    if cohort {
        fields.push(Field::new("file", DataType::Utf8, false));
    }
    fields.push(Field::new("rname", DataType::Utf8, false));
    fields.push(Field::new("start", DataType::Int64, false));
    fields.push(Field::new("end", DataType::Int64, false));
    if options.binned() {
        if options.bed.is_some() {
            fields.push(Field::new("name", DataType::Utf8, true));
        }
        fields.push(Field::new("mean", DataType::Float64, false));
        for t in options.thresholds.iter() {
            fields.push(Field::new(format!("at_least_{t}"), DataType::Int64, false));
        }
    } else {
        fields.push(Field::new("depth", DataType::Int32, false));
    }
    Arc::new(Schema::new(fields))
}

/// The table scan columns depth reads, by name.
pub const READ_COLUMNS: [&str; 8] = ["qname", "flag", "rname", "pos", "mapq", "cigar", "rnext", "pnext"];

/// Counts each piece's reads (from `inputs[i]`, all of whose partitions are read in order).
#[derive(Debug)]
pub struct DepthExec {
    pieces: Vec<Piece>,
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    options: Arc<DepthOptions>,
    bed: Option<Arc<BedIntervals>>,
    cohort: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DepthExec {
    pub fn new(
        pieces: Vec<Piece>,
        inputs: Vec<Arc<dyn ExecutionPlan>>,
        options: Arc<DepthOptions>,
        bed: Option<Arc<BedIntervals>>,
        cohort: bool,
    ) -> Result<Self> {
        if pieces.len() != inputs.len() {
            return internal_err!("DepthExec: {} pieces but {} inputs", pieces.len(), inputs.len());
        }
        let schema = depth_schema(cohort, &options);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(pieces.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self { pieces, inputs, options, bed, cohort, schema, properties: Arc::new(properties) })
    }
}

impl DisplayAs for DepthExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let spans: usize = self.pieces.iter().map(|p| p.spans.len()).sum();
        write!(f, "DepthExec: pieces={}, spans={spans}, mode={:?}", self.pieces.len(), self.options.mode)
    }
}

impl ExecutionPlan for DepthExec {
    fn name(&self) -> &str {
        "DepthExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().collect()
    }

    // Each input's records must stay in file order: no repartitioning between.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.inputs.len()]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let (pieces, options, bed) = (self.pieces.clone(), Arc::clone(&self.options), self.bed.clone());
        Ok(Arc::new(Self::new(pieces, children, options, bed, self.cohort)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let (Some(piece), Some(input)) = (self.pieces.get(partition), self.inputs.get(partition)) else {
            return internal_err!("DepthExec has no partition {partition}");
        };
        let batch_size = context.session_config().batch_size();
        let mut counter = PieceCounter::new(piece.clone(), Arc::clone(&self.options), self.bed.clone(), self.cohort);
        let (input, schema) = (Arc::clone(input), Arc::clone(&self.schema));
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&schema), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            let mut rows = Rows::new(schema, counter.options.thresholds.len());
            for part in 0..input.output_partitioning().partition_count() {
                let mut stream = input.execute(part, Arc::clone(&context))?;
                while let Some(batch) = stream.next().await {
                    counter.add_batch(&batch?, &mut rows)?;
                    if rows.len() >= batch_size && tx.send(rows.take(&counter)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            counter.finish(&mut rows);
            if rows.len() > 0 {
                let _ = tx.send(rows.take(&counter)).await;
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// The output columns being filled.
struct Rows {
    schema: SchemaRef,
    rname: StringBuilder,
    start: Int64Builder,
    end: Int64Builder,
    depth: Int32Builder,
    name: StringBuilder,
    mean: Float64Builder,
    at_least: Vec<Int64Builder>,
    len: usize,
}

impl Rows {
    fn new(schema: SchemaRef, thresholds: usize) -> Self {
        Self {
            schema,
            rname: StringBuilder::new(),
            start: Int64Builder::new(),
            end: Int64Builder::new(),
            depth: Int32Builder::new(),
            name: StringBuilder::new(),
            mean: Float64Builder::new(),
            at_least: (0..thresholds).map(|_| Int64Builder::new()).collect(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// A run, shown 1-based and inclusive as the table's `pos` and `endpos`.
    fn push_run(&mut self, rname: &str, run: Run) {
        self.rname.append_value(rname);
        self.start.append_value(run.start + 1);
        self.end.append_value(run.end);
        self.depth.append_value(run.depth);
        self.len += 1;
    }

    fn push_bin(&mut self, rname: &str, bin: &Bin) {
        self.rname.append_value(rname);
        self.start.append_value(bin.start + 1);
        self.end.append_value(bin.end);
        self.name.append_option(bin.name.as_deref());
        self.mean.append_value(bin.mean());
        for (builder, &count) in self.at_least.iter_mut().zip(&bin.at_least) {
            builder.append_value(count);
        }
        self.len += 1;
    }

    fn take(&mut self, counter: &PieceCounter) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        if counter.cohort {
            let mut file = StringBuilder::new();
            (0..self.len).for_each(|_| file.append_value(&*counter.piece.file));
            columns.push(Arc::new(file.finish()));
        }
        columns.push(Arc::new(self.rname.finish()));
        columns.push(Arc::new(self.start.finish()));
        columns.push(Arc::new(self.end.finish()));
        if counter.options.binned() {
            let names = self.name.finish();
            if counter.options.bed.is_some() {
                columns.push(Arc::new(names));
            }
            columns.push(Arc::new(self.mean.finish()));
            columns.extend(self.at_least.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        } else {
            columns.push(Arc::new(self.depth.finish()));
        }
        self.len = 0;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The reference being counted, and what sums its runs.
struct Current {
    tid: usize,
    counter: DepthCounter,
    /// The first of the piece's spans on this reference.
    first_span: usize,
    bins: Option<BinSummer<Box<dyn Iterator<Item = Bin> + Send>>>,
}

/// Counts one piece's reads, which come in coordinate order.
struct PieceCounter {
    piece: Piece,
    options: Arc<DepthOptions>,
    bed: Option<Arc<BedIntervals>>,
    cohort: bool,
    /// The next span whose reference has not been started.
    next_span: usize,
    current: Option<Current>,
    /// The last read's reference and start, for the sort check.
    last: Option<(usize, i64)>,
    cigar: Vec<CigarOp>,
    last_rname: Option<(String, usize)>,
}

impl PieceCounter {
    fn new(piece: Piece, options: Arc<DepthOptions>, bed: Option<Arc<BedIntervals>>, cohort: bool) -> Self {
        Self {
            piece,
            options,
            bed,
            cohort,
            next_span: 0,
            current: None,
            last: None,
            cigar: Vec::new(),
            last_rname: None,
        }
    }

    fn add_batch(&mut self, batch: &RecordBatch, rows: &mut Rows) -> Result<()> {
        let column = |name: &str| batch.column_by_name(name).map(Arc::clone);
        let (Some(qname), Some(flag), Some(rname), Some(pos), Some(mapq), Some(cigar), Some(rnext), Some(pnext)) = (
            column("qname"),
            column("flag"),
            column("rname"),
            column("pos"),
            column("mapq"),
            column("cigar"),
            column("rnext"),
            column("pnext"),
        ) else {
            return internal_err!("bam_depth's scan lacks a column it reads");
        };
        let (qname, rname, cigar, rnext) =
            (qname.as_string::<i32>(), rname.as_string::<i32>(), cigar.as_string::<i32>(), rnext.as_string::<i32>());
        let (flag, mapq) = (flag.as_primitive::<UInt16Type>(), mapq.as_primitive::<UInt8Type>());
        let (pos, pnext) = (pos.as_primitive::<Int64Type>(), pnext.as_primitive::<Int64Type>());
        for row in 0..batch.num_rows() {
            if rname.is_null(row) || pos.is_null(row) {
                continue; // unplaced: after every placed record in a sorted file
            }
            let name = rname.value(row);
            let tid = match &self.last_rname {
                Some((last, tid)) if last == name => *tid,
                _ => {
                    let Some(tid) = self.piece.references.id(name) else {
                        return Err(BamError::damaged(
                            &*self.piece.file,
                            "",
                            format!("record on {name:?}, a reference its header lacks"),
                        )
                        .into());
                    };
                    self.last_rname = Some((name.to_string(), tid));
                    tid
                }
            };
            let start = pos.value(row) - 1;
            if let Some((last_tid, last_start)) = self.last {
                if (tid, start) < (last_tid, last_start) {
                    let names = &self.piece.references.names;
                    return Err(BamError::Unsorted {
                        file: self.piece.file.to_string(),
                        record: format!("{} at {name}:{}", qname.value(row), start + 1),
                        reason: format!("comes after one at {}:{}", names[last_tid], last_start + 1),
                    }
                    .into());
                }
            }
            self.last = Some((tid, start));
            let (flag, mapq) = (flag.value(row), (!mapq.is_null(row)).then(|| mapq.value(row)));
            if !self.options.counts(flag, mapq) {
                continue;
            }
            // A reference outside the piece (a read the index gave for another) is skipped.
            if self.current.as_ref().is_none_or(|c| c.tid != tid) && !self.start_reference(tid, rows) {
                continue;
            }
            self.cigar.clear();
            if !cigar.is_null(row) {
                parse_cigar(cigar.value(row), &mut self.cigar).map_err(|reason| {
                    BamError::damaged(
                        &*self.piece.file,
                        format!("record {} at {name}:{}", qname.value(row), start + 1),
                        reason,
                    )
                })?;
            }
            let mate_here = !rnext.is_null(row) && matches!(rnext.value(row), mate if mate == "=" || mate == name);
            let read = Read {
                start,
                flag,
                cigar: &self.cigar,
                mate_here,
                mate_start: if pnext.is_null(row) { -1 } else { pnext.value(row) - 1 },
                qname: if qname.is_null(row) { "*" } else { qname.value(row) },
            };
            let Self { current: Some(current), piece, .. } = self else { unreachable!() };
            let rname = &piece.references.names[current.tid];
            let spans = &piece.spans[current.first_span..];
            current.counter.add(&read, &mut |run| emit(run, current.tid, spans, rname, &mut current.bins, rows));
        }
        Ok(())
    }

    /// Finishes the reference being counted and those of the piece before `tid`, and starts
    /// `tid`; false if the piece has no span on it.
    fn start_reference(&mut self, tid: usize, rows: &mut Rows) -> bool {
        self.finish_current(rows);
        while self.next_span < self.piece.spans.len() && self.piece.spans[self.next_span].tid < tid {
            let empty = self.piece.spans[self.next_span].tid;
            self.open(empty);
            self.finish_current(rows);
        }
        if self.piece.spans.get(self.next_span).is_some_and(|s| s.tid == tid) {
            self.open(tid);
            true
        } else {
            false
        }
    }

    fn open(&mut self, tid: usize) {
        let first_span = self.next_span;
        while self.piece.spans.get(self.next_span).is_some_and(|s| s.tid == tid) {
            self.next_span += 1;
        }
        let spans: Vec<Span> = self.piece.spans[first_span..self.next_span].to_vec();
        let length = self.piece.references.lengths[tid];
        let thresholds = self.options.thresholds.len();
        let bins: Option<Box<dyn Iterator<Item = Bin> + Send>> = match (&self.options.window, &self.bed) {
            (Some(size), _) => {
                let size = *size;
                Some(Box::new(spans.into_iter().flat_map(move |s| windows(size, s.start, s.end, thresholds))))
            }
            (None, Some(bed)) => {
                let intervals = bed.get(&self.piece.references.names[tid]).cloned().unwrap_or_default();
                let regioned = self.piece.regioned;
                Some(Box::new(spans.into_iter().flat_map(move |s| {
                    let intervals = intervals.clone();
                    intervals.into_iter().filter_map(move |(start, end, name)| {
                        if !regioned {
                            return Some(Bin::new(start, end, name, thresholds));
                        }
                        let (start, end) = (start.max(s.start), end.min(s.end));
                        (start < end).then(|| Bin::new(start, end, name, thresholds))
                    })
                })))
            }
            (None, None) => None,
        };
        let bins = bins.map(|b| BinSummer::new(b, Arc::clone(&self.options.thresholds)));
        let counter = DepthCounter::new(self.options.mode, self.options.count_deletions, length);
        self.current = Some(Current { tid, counter, first_span, bins });
    }

    fn finish_current(&mut self, rows: &mut Rows) {
        let Some(Current { tid, counter, first_span, mut bins }) = self.current.take() else { return };
        let rname = &self.piece.references.names[tid];
        let spans = &self.piece.spans[first_span..];
        counter.finish(&mut |run| emit(run, tid, spans, rname, &mut bins, rows));
        if let Some(bins) = bins {
            bins.finish(&mut |bin| rows.push_bin(rname, &bin));
        }
    }

    /// Finishes the piece: the reference being counted and those after it without reads.
    fn finish(&mut self, rows: &mut Rows) {
        self.finish_current(rows);
        while let Some(span) = self.piece.spans.get(self.next_span) {
            self.open(span.tid);
            self.finish_current(rows);
        }
    }
}

/// Gives a run of reference `tid` out clipped to the piece's spans on it (which start `spans`),
/// as rows or into the bins.
fn emit(
    run: Run,
    tid: usize,
    spans: &[Span],
    rname: &str,
    bins: &mut Option<BinSummer<Box<dyn Iterator<Item = Bin> + Send>>>,
    rows: &mut Rows,
) {
    if let Some(bins) = bins {
        // Bins are made within the spans, and only their part of a run counts.
        return bins.add(run, &mut |bin| rows.push_bin(rname, &bin));
    }
    for span in spans.iter().take_while(|s| s.tid == tid) {
        let (start, end) = (run.start.max(span.start), run.end.min(span.end));
        if start < end {
            rows.push_run(rname, Run { start, end, depth: run.depth });
        }
    }
}

/// Parses CIGAR text (`*` is none) into operations.
pub fn parse_cigar(text: &str, ops: &mut Vec<CigarOp>) -> std::result::Result<(), String> {
    if text == "*" {
        return Ok(());
    }
    let mut n: u32 = 0;
    let mut digits = false;
    for &b in text.as_bytes() {
        if b.is_ascii_digit() {
            n = n.checked_mul(10).and_then(|n| n.checked_add(u32::from(b - b'0'))).ok_or("CIGAR length overflows")?;
            digits = true;
        } else if digits && b"MIDNSHP=X".contains(&b) {
            ops.push((b, n));
            (n, digits) = (0, false);
        } else {
            return Err(format!("invalid CIGAR {text:?}"));
        }
    }
    if digits {
        return Err(format!("invalid CIGAR {text:?}"));
    }
    Ok(())
}

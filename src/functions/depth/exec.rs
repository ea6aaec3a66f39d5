//! `DepthExec`: one output partition per piece of the genome (a range of one file's references);
//! each reads its records in order from its own scan and counts them into runs or bins.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt16Type, UInt8Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
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
use super::count::{CigarOp, CountMode, DepthCounter, Read, Run};
use super::options::DepthOptions;
use super::DepthArgs;
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

/// The table scan columns depth reads, by name: the mates' fields only where mates overlap.
pub fn read_columns(mode: CountMode) -> &'static [&'static str] {
    match mode {
        CountMode::Mosdepth => &["qname", "flag", "rname", "pos", "mapq", "cigar", "rnext", "pnext"],
        CountMode::Samtools => &["flag", "rname", "pos", "mapq", "cigar"],
    }
}

/// Counts one piece's reads, which its input (one scan) gives in file order.
///
/// A `bam_depth` plan is a union of these, one partition each: engines that run each partition
/// as a task of its own (Ballista) cut a plan at its leaves and unions, and keep the scans under
/// this node whole.
#[derive(Debug)]
pub struct DepthExec {
    args: Arc<DepthArgs>,
    piece: Piece,
    input: Arc<dyn ExecutionPlan>,
    options: Arc<DepthOptions>,
    bed: Option<Arc<BedIntervals>>,
    cohort: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DepthExec {
    /// Over `input`, whose partitions (at most one, as [`single_partition`] makes it) are read
    /// in order. An input without partitions (a task that does not run this piece) gives none.
    pub fn new(
        args: Arc<DepthArgs>,
        piece: Piece,
        input: Arc<dyn ExecutionPlan>,
        options: Arc<DepthOptions>,
        bed: Option<Arc<BedIntervals>>,
        cohort: bool,
    ) -> Result<Self> {
        let schema = depth_schema(cohort, &options);
        let partitions = input.output_partitioning().partition_count().min(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self { args, piece, input, options, bed, cohort, schema, properties: Arc::new(properties) })
    }

    /// The call this plan counts for.
    pub fn args(&self) -> &DepthArgs {
        &self.args
    }

    pub fn piece(&self) -> &Piece {
        &self.piece
    }

    pub fn bed(&self) -> Option<&Arc<BedIntervals>> {
        self.bed.as_ref()
    }
}

/// `plan` (a BAM scan) with its byte ranges in one partition, in order, so that the piece it
/// reads is one partition of the plan.
pub fn single_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else { return plan };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else { return plan };
    if config.file_groups.len() <= 1 {
        return plan;
    }
    let files: FileGroup = config.file_groups.iter().flat_map(|g| g.iter().cloned()).collect();
    let config = FileScanConfigBuilder::from(config.clone()).with_file_groups(vec![files]).build();
    DataSourceExec::from_data_source(config)
}

impl DisplayAs for DepthExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let spans: Vec<String> = self
            .piece
            .spans
            .iter()
            .map(|s| format!("{}:{}-{}", self.piece.references.names[s.tid], s.start + 1, s.end))
            .collect();
        write!(f, "DepthExec: file={}, spans=[{}], mode={:?}", self.piece.file, spans.join(", "), self.options.mode)
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
        vec![&self.input]
    }

    // The input's records must stay in file order: no repartitioning between.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|c| {
            datafusion::error::DataFusionError::Internal(format!("DepthExec takes one input, not {}", c.len()))
        })?;
        let (args, piece, options, bed) =
            (Arc::clone(&self.args), self.piece.clone(), Arc::clone(&self.options), self.bed.clone());
        Ok(Arc::new(Self::new(args, piece, input, options, bed, self.cohort)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition >= self.properties.partitioning.partition_count() {
            return internal_err!("DepthExec has no partition {partition}");
        }
        let batch_size = context.session_config().batch_size();
        let mut counter =
            PieceCounter::new(self.piece.clone(), Arc::clone(&self.options), self.bed.clone(), self.cohort);
        // The input is read partition after partition, in file order: each execution gets a fresh
        // copy of the scan, with no work moving between its partitions (DataFusion's work
        // stealing would let one partition read another's byte ranges, out of order).
        let input = Arc::clone(&self.input).reset_state()?;
        let context = Arc::new(in_planned_order(&context));
        let schema = Arc::clone(&self.schema);
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

/// `context` with file scans that read each partition's own byte ranges only.
fn in_planned_order(context: &TaskContext) -> TaskContext {
    let mut config = context.session_config().clone();
    config.options_mut().execution.enable_file_stream_work_stealing = false;
    TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        context.runtime_env(),
    )
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
        let (Some(flag), Some(rname), Some(pos), Some(mapq), Some(cigar)) =
            (column("flag"), column("rname"), column("pos"), column("mapq"), column("cigar"))
        else {
            return internal_err!("bam_depth's scan lacks a column it reads");
        };
        let (qname, rnext, pnext) = (column("qname"), column("rnext"), column("pnext"));
        let (qname, rnext) =
            (qname.as_ref().map(|c| c.as_string::<i32>()), rnext.as_ref().map(|c| c.as_string::<i32>()));
        let pnext = pnext.as_ref().map(|c| c.as_primitive::<Int64Type>());
        let (rname, cigar) = (rname.as_string::<i32>(), cigar.as_string::<i32>());
        let (flag, mapq) = (flag.as_primitive::<UInt16Type>(), mapq.as_primitive::<UInt8Type>());
        let pos = pos.as_primitive::<Int64Type>();
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
                        record: format!("{} at {name}:{}", text_at(qname, row).unwrap_or("*"), start + 1),
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
                        format!("record {} at {name}:{}", text_at(qname, row).unwrap_or("*"), start + 1),
                        reason,
                    )
                })?;
            }
            let mate_here = text_at(rnext, row).is_some_and(|mate| mate == "=" || mate == name);
            let read = Read {
                start,
                flag,
                cigar: &self.cigar,
                mate_here,
                mate_start: pnext.filter(|p| !p.is_null(row)).map_or(-1, |p| p.value(row) - 1),
                qname: text_at(qname, row).unwrap_or("*"),
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

/// The value of a nullable text column that may be absent.
fn text_at(column: Option<&StringArray>, row: usize) -> Option<&str> {
    column.filter(|c| !c.is_null(row)).map(|c| c.value(row))
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

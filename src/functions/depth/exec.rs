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
use tokio::sync::mpsc::Sender;

use super::bins::{windows, Bin, BinSummer};
use super::count::{end_position, CigarOp, CountMode, DepthCounter, Read, Run};
use super::merge::{RangeEdges, RangeGate};
use super::options::DepthOptions;
use super::DepthArgs;
use crate::datasource::source::BamSource;
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

/// Counts one piece's reads, which its input (one scan) gives in file order; or, for a file
/// without an index, its inputs (one scan per byte range, in file order) count in parallel and
/// their edges are merged (docs/depth.md, "How it runs").
///
/// A `bam_depth` plan is a union of these, one partition each: engines that run each partition
/// as a task of its own (Ballista) cut a plan at its leaves and unions, and keep the scans under
/// this node whole.
#[derive(Debug)]
pub struct DepthExec {
    args: Arc<DepthArgs>,
    piece: Piece,
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    options: Arc<DepthOptions>,
    bed: Option<Arc<BedIntervals>>,
    cohort: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DepthExec {
    /// Over `inputs`, each of one partition (as [`single_partition`] makes a scan): one input
    /// is read in order; several are consecutive byte ranges of one file. Inputs without
    /// partitions (a task that does not run this piece) give none.
    pub fn new(
        args: Arc<DepthArgs>,
        piece: Piece,
        inputs: Vec<Arc<dyn ExecutionPlan>>,
        options: Arc<DepthOptions>,
        bed: Option<Arc<BedIntervals>>,
        cohort: bool,
    ) -> Result<Self> {
        if inputs.is_empty() {
            return internal_err!("DepthExec needs an input");
        }
        let schema = depth_schema(cohort, &options);
        let partitions = inputs.iter().map(|i| i.output_partitioning().partition_count()).min().unwrap_or(0).min(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self { args, piece, inputs, options, bed, cohort, schema, properties: Arc::new(properties) })
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
    let Some(config) = scan_config(&plan) else { return plan };
    let files: FileGroup = config.file_groups.iter().flat_map(|g| g.iter().cloned()).collect();
    unsplit(config, files)
}

/// `plan` (a scan of one file) as one scan per byte range, in file order, as the scan splits
/// the file for `parts` partitions; or the scan in one partition if it does not split it.
pub fn byte_ranges(
    plan: Arc<dyn ExecutionPlan>,
    parts: usize,
    options: &datafusion::config::ConfigOptions,
) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
    let split = plan.repartitioned(parts, options)?;
    let Some(config) = split.as_ref().and_then(scan_config) else {
        return Ok(vec![single_partition(plan)]);
    };
    let mut files: Vec<_> = config.file_groups.iter().flat_map(|g| g.iter().cloned()).collect();
    files.sort_by_key(|f| f.range.as_ref().map_or(0, |r| r.start));
    Ok(files.into_iter().map(|file| unsplit(config.clone(), FileGroup::new(vec![file]))).collect())
}

fn scan_config(plan: &Arc<dyn ExecutionPlan>) -> Option<FileScanConfig> {
    let scan = plan.downcast_ref::<DataSourceExec>()?;
    scan.data_source().downcast_ref::<FileScanConfig>().cloned()
}

/// A scan of `files` in one partition that no optimizer splits again (a split would reorder
/// the records, and Ballista runs only the partitions a task is given).
fn unsplit(config: FileScanConfig, files: FileGroup) -> Arc<dyn ExecutionPlan> {
    let mut builder = FileScanConfigBuilder::from(config.clone()).with_file_groups(vec![files]);
    if let Some(source) = config.file_source().downcast_ref::<BamSource>() {
        let options = source.options().clone().with_split(false);
        builder = builder.with_source(Arc::new(source.clone().with_options(&options)));
    }
    DataSourceExec::from_data_source(builder.build())
}

impl DisplayAs for DepthExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let spans: Vec<String> = self
            .piece
            .spans
            .iter()
            .map(|s| format!("{}:{}-{}", self.piece.references.names[s.tid], s.start + 1, s.end))
            .collect();
        write!(f, "DepthExec: file={}, spans=[{}], mode={:?}", self.piece.file, spans.join(", "), self.options.mode)?;
        if self.inputs.len() > 1 {
            write!(f, ", byte_ranges={}", self.inputs.len())?;
        }
        Ok(())
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

    // The inputs' records must stay in file order: no repartitioning between.
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
        let (args, piece, options, bed) =
            (Arc::clone(&self.args), self.piece.clone(), Arc::clone(&self.options), self.bed.clone());
        Ok(Arc::new(Self::new(args, piece, children, options, bed, self.cohort)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition >= self.properties.partitioning.partition_count() {
            return internal_err!("DepthExec has no partition {partition}");
        }
        // Each execution gets fresh copies of the scans, whose partitions are read in file order
        // with no work moving between them (DataFusion's work stealing would let one partition
        // read another's byte ranges, out of order).
        let inputs = self.inputs.iter().map(|i| Arc::clone(i).reset_state()).collect::<Result<Vec<_>>>()?;
        let context = Arc::new(in_planned_order(&context));
        let (piece, options, bed) = (self.piece.clone(), Arc::clone(&self.options), self.bed.clone());
        let rows = Rows::new(Arc::clone(&self.schema), &piece, &options, self.cohort);
        if let [input] = inputs.as_slice() {
            let input = Arc::clone(input);
            return Ok(count_in_order(input, PieceCounter::new(piece, options, bed), rows, context));
        }
        Ok(super::merge::count_ranges(inputs, piece, options, bed, rows, context))
    }
}

/// Counts `input`'s partitions one after another, in order.
fn count_in_order(
    input: Arc<dyn ExecutionPlan>,
    mut counter: PieceCounter,
    mut rows: Rows,
    context: Arc<TaskContext>,
) -> SendableRecordBatchStream {
    let mut builder = RecordBatchReceiverStream::builder(rows.schema(), 2);
    let tx = builder.tx();
    builder.spawn(async move {
        if !count_input(&input, &context, &mut counter, &mut rows, &tx).await? {
            return Ok(());
        }
        counter.finish(&mut rows);
        rows.send_from(1, &tx).await;
        Ok(())
    });
    builder.build()
}

/// Counts the records of `input`'s partitions, one after another, sending each batch's worth
/// of rows to `tx`; false if nothing receives them any more.
pub(super) async fn count_input(
    input: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
    counter: &mut PieceCounter,
    rows: &mut Rows,
    tx: &Sender<Result<RecordBatch>>,
) -> Result<bool> {
    let batch_size = context.session_config().batch_size();
    for part in 0..input.output_partitioning().partition_count() {
        let mut stream = input.execute(part, Arc::clone(context))?;
        while let Some(batch) = stream.next().await {
            counter.add_batch(&batch?, rows)?;
            if !rows.send_from(batch_size, tx).await {
                return Ok(false);
            }
        }
    }
    Ok(true)
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
pub(super) struct Rows {
    schema: SchemaRef,
    /// A cohort's `file` column value.
    file: Option<Arc<str>>,
    binned: bool,
    named: bool,
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
    pub(super) fn new(schema: SchemaRef, piece: &Piece, options: &DepthOptions, cohort: bool) -> Self {
        let file = cohort.then(|| Arc::clone(&piece.file));
        Self::blank(schema, file, options.binned(), options.bed.is_some(), options.thresholds.len())
    }

    /// Rows of the same columns, none filled yet.
    pub(super) fn empty(&self) -> Self {
        Self::blank(Arc::clone(&self.schema), self.file.clone(), self.binned, self.named, self.at_least.len())
    }

    fn blank(schema: SchemaRef, file: Option<Arc<str>>, binned: bool, named: bool, thresholds: usize) -> Self {
        Self {
            schema,
            file,
            binned,
            named,
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

    pub(super) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Sends the rows to `tx` as a batch once there are at least `count` of them (and at least
    /// one); false if nothing receives them any more.
    pub(super) async fn send_from(&mut self, count: usize, tx: &Sender<Result<RecordBatch>>) -> bool {
        if self.len == 0 || self.len < count {
            return true;
        }
        tx.send(self.take()).await.is_ok()
    }

    /// A run, shown 1-based and inclusive as the table's `pos` and `endpos`.
    fn push_run(&mut self, rname: &str, run: Run) {
        self.rname.append_value(rname);
        self.start.append_value(run.start + 1);
        self.end.append_value(run.end);
        self.depth.append_value(run.depth);
        self.len += 1;
    }

    pub(super) fn push_bin(&mut self, rname: &str, bin: &Bin) {
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

    /// A run or a bin of the reference named `rname`.
    pub(super) fn push(&mut self, rname: &str, item: Item) {
        match item {
            Item::Run(run) => self.push_run(rname, run),
            Item::Bin(bin) => self.push_bin(rname, &bin),
        }
    }

    pub(super) fn take(&mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(file) = &self.file {
            let mut column = StringBuilder::new();
            (0..self.len).for_each(|_| column.append_value(&**file));
            columns.push(Arc::new(column.finish()));
        }
        columns.push(Arc::new(self.rname.finish()));
        columns.push(Arc::new(self.start.finish()));
        columns.push(Arc::new(self.end.finish()));
        if self.binned {
            let names = self.name.finish();
            if self.named {
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

/// What a piece gives out: a run (per-base output) or a window or interval.
pub(super) enum Item {
    Run(Run),
    Bin(Bin),
}

type Bins = BinSummer<Box<dyn Iterator<Item = Bin> + Send>>;

/// Turns the runs of one reference after another, each in order, into what a piece gives out:
/// runs clipped to its spans, or sums over its windows or BED intervals.
pub(super) struct RunSink {
    piece: Piece,
    options: Arc<DepthOptions>,
    bed: Option<Arc<BedIntervals>>,
    /// The next span whose reference has not been opened.
    next_span: usize,
    /// The reference being given out, its first span, and its bins being summed.
    current: Option<(usize, usize, Option<Bins>)>,
}

impl RunSink {
    pub(super) fn new(piece: Piece, options: Arc<DepthOptions>, bed: Option<Arc<BedIntervals>>) -> Self {
        Self { piece, options, bed, next_span: 0, current: None }
    }

    /// The reference being given out.
    pub(super) fn tid(&self) -> Option<usize> {
        self.current.as_ref().map(|c| c.0)
    }

    /// The reference of the next span not yet opened.
    pub(super) fn next_reference(&self) -> Option<usize> {
        self.piece.spans.get(self.next_span).map(|s| s.tid)
    }

    /// Closes the reference being given out and opens `tid`, passing the spans before it; false
    /// if the piece has no span on `tid`.
    pub(super) fn open(&mut self, tid: usize, out: &mut impl FnMut(usize, Item)) -> bool {
        self.close(out);
        while self.next_reference().is_some_and(|t| t < tid) {
            self.next_span += 1;
        }
        if self.next_reference() != Some(tid) {
            return false;
        }
        let first_span = self.next_span;
        while self.next_reference() == Some(tid) {
            self.next_span += 1;
        }
        let spans: Vec<Span> = self.piece.spans[first_span..self.next_span].to_vec();
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
        self.current = Some((tid, first_span, bins));
        true
    }

    /// Gives out a run of the open reference: clipped to the piece's spans, or into the bins
    /// (made within the spans, so that only their part of a run counts).
    pub(super) fn run(&mut self, run: Run, out: &mut impl FnMut(usize, Item)) {
        let Some((tid, first_span, bins)) = &mut self.current else { return };
        let tid = *tid;
        if let Some(bins) = bins {
            return bins.add(run, &mut |bin| out(tid, Item::Bin(bin)));
        }
        for span in self.piece.spans[*first_span..].iter().take_while(|s| s.tid == tid) {
            let (start, end) = (run.start.max(span.start), run.end.min(span.end));
            if start < end {
                out(tid, Item::Run(Run { start, end, depth: run.depth }));
            }
        }
    }

    /// Closes the open reference: its bins that no run completed are given out.
    pub(super) fn close(&mut self, out: &mut impl FnMut(usize, Item)) {
        if let Some((tid, _, Some(bins))) = self.current.take() {
            bins.finish(&mut |bin| out(tid, Item::Bin(bin)));
        }
    }
}

/// Counts one piece's reads, which come in coordinate order; for a byte range of an unindexed
/// file, with a [`RangeGate`] that keeps the edges for the merge.
pub(super) struct PieceCounter {
    references: Arc<References>,
    file: Arc<str>,
    options: Arc<DepthOptions>,
    sink: RunSink,
    /// The reference being counted.
    counter: Option<(usize, DepthCounter)>,
    /// The last read's reference and start, for the sort check.
    last: Option<(usize, i64)>,
    cigar: Vec<CigarOp>,
    last_rname: Option<(String, usize)>,
    range: Option<RangeGate>,
}

impl PieceCounter {
    pub(super) fn new(piece: Piece, options: Arc<DepthOptions>, bed: Option<Arc<BedIntervals>>) -> Self {
        Self {
            references: Arc::clone(&piece.references),
            file: Arc::clone(&piece.file),
            options: Arc::clone(&options),
            sink: RunSink::new(piece, options, bed),
            counter: None,
            last: None,
            cigar: Vec::new(),
            last_rname: None,
            range: None,
        }
    }

    /// A counter of one byte range of an unindexed file (whose piece is the whole file).
    pub(super) fn for_range(piece: Piece, options: Arc<DepthOptions>, bed: Option<Arc<BedIntervals>>) -> Self {
        let max_span = options.max_span;
        Self { range: Some(RangeGate::new(max_span)), ..Self::new(piece, options, bed) }
    }

    pub(super) fn add_batch(&mut self, batch: &RecordBatch, rows: &mut Rows) -> Result<()> {
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
                    let Some(tid) = self.references.id(name) else {
                        return Err(BamError::damaged(
                            &*self.file,
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
            let qname_here = text_at(qname, row).unwrap_or("*");
            if start < 0 {
                // A position below 1 other than "none" is damage (the table shows it as
                // samtools prints it); no base of the reference is before its first.
                return Err(BamError::damaged(
                    &*self.file,
                    "",
                    format!("record {qname_here} at position {}, before its reference's first base", start + 1),
                )
                .into());
            }
            match self.last {
                Some((last_tid, last_start)) if (tid, start) < (last_tid, last_start) => {
                    return Err(unsorted(
                        &self.file,
                        &self.references,
                        qname_here,
                        (tid, start),
                        (last_tid, last_start),
                    ));
                }
                None => {
                    if let Some(gate) = &mut self.range {
                        gate.first_seen = Some((tid, start, qname_here.to_string()));
                    }
                }
                _ => {}
            }
            self.last = Some((tid, start));
            let (flag, mapq) = (flag.value(row), (!mapq.is_null(row)).then(|| mapq.value(row)));
            if !self.options.counts(flag, mapq) {
                continue;
            }
            // A reference outside the piece (a read the index gave for another) is skipped.
            if self.counter.as_ref().is_none_or(|(t, _)| *t != tid) && !self.start_reference(tid, start, rows) {
                continue;
            }
            self.cigar.clear();
            if !cigar.is_null(row) {
                parse_cigar(cigar.value(row), &mut self.cigar).map_err(|reason| {
                    BamError::damaged(&*self.file, format!("record {qname_here} at {name}:{}", start + 1), reason)
                })?;
            }
            let mate_here = text_at(rnext, row).is_some_and(|mate| mate == "=" || mate == name);
            let read = Read {
                start,
                flag,
                cigar: &self.cigar,
                mate_here,
                mate_start: pnext.filter(|p| !p.is_null(row)).map_or(-1, |p| p.value(row) - 1),
                qname: qname_here,
            };
            let Self { counter: Some((tid, counter)), sink, range, references, .. } = self else { unreachable!() };
            if let Some(gate) = range.as_mut() {
                gate.reaches(*tid, start, end_position(start, read.cigar));
            }
            let tid = *tid;
            counter.add(&read, &mut |run| give(run, tid, sink, range.as_mut(), rows, references));
        }
        Ok(())
    }

    /// Finishes the reference being counted and those of the piece before `tid` (without reads:
    /// depth 0, unless this is a byte range's first read), and starts counting `tid` at a read
    /// starting at `start`; false if the piece has no span on it.
    fn start_reference(&mut self, tid: usize, start: i64, rows: &mut Rows) -> bool {
        self.finish_counter(rows);
        let first_of_range = self.range.as_mut().is_some_and(|gate| gate.first.is_none());
        while let Some(empty) = self.sink.next_reference().filter(|&t| t < tid) {
            if first_of_range {
                break;
            }
            self.give_empty(empty, rows);
        }
        let Self { sink, range, references, .. } = self;
        if !sink.open(tid, &mut |t, item| route(t, item, range.as_mut(), rows, references)) {
            return false;
        }
        let (mode, deletions, length) = (self.options.mode, self.options.count_deletions, self.references.lengths[tid]);
        let counter = if first_of_range {
            if let Some(gate) = &mut self.range {
                gate.first = Some((tid, start));
            }
            DepthCounter::for_range(mode, deletions, length, start)
        } else {
            DepthCounter::new(mode, deletions, length)
        };
        self.counter = Some((tid, counter));
        true
    }

    /// Gives out a reference without reads as one run of depth 0.
    fn give_empty(&mut self, tid: usize, rows: &mut Rows) {
        let Self { sink, range, references, .. } = self;
        sink.open(tid, &mut |t, item| route(t, item, range.as_mut(), rows, references));
        let run = Run { start: 0, end: references.lengths[tid], depth: 0 };
        give(run, tid, sink, range.as_mut(), rows, references);
    }

    fn finish_counter(&mut self, rows: &mut Rows) {
        let Some((tid, counter)) = self.counter.take() else { return };
        let Self { sink, range, references, .. } = self;
        let (held, _) = counter.finish(&mut |run| give(run, tid, sink, range.as_mut(), rows, references));
        sink.close(&mut |t, item| route(t, item, range.as_mut(), rows, references));
        // A byte range's reads whose mates are in earlier ranges are on its first reference.
        if let Some(gate) = range {
            gate.held.extend(held);
        }
    }

    /// Finishes the piece: the reference being counted and those after it without reads.
    pub(super) fn finish(&mut self, rows: &mut Rows) {
        self.finish_counter(rows);
        while let Some(tid) = self.sink.next_reference() {
            self.give_empty(tid, rows);
        }
        let Self { sink, range, references, .. } = self;
        sink.close(&mut |t, item| route(t, item, range.as_mut(), rows, references));
    }

    /// Finishes a byte range: its last reference's runs from its last read on are the tail that
    /// later ranges add to, and the references after it are theirs.
    pub(super) fn finish_range(mut self, rows: &mut Rows) -> RangeEdges {
        let Some(mut gate) = self.range.take() else { unreachable!("finish_range of a whole piece") };
        if let Some((tid, counter)) = self.counter.take() {
            gate.begin_tail(tid, counter.run_start());
            let Self { sink, references, .. } = &mut self;
            let (held, mates) = counter.finish(&mut |run| give(run, tid, sink, Some(&mut gate), rows, references));
            sink.close(&mut |t, item| route(t, item, Some(&mut gate), rows, references));
            gate.held.extend(held);
            gate.mates = mates;
        }
        gate.into_edges(self.last)
    }
}

/// The error for a record at `at` after one at `last`.
pub(super) fn unsorted(
    file: &str,
    references: &References,
    qname: &str,
    at: (usize, i64),
    last: (usize, i64),
) -> datafusion::error::DataFusionError {
    let names = &references.names;
    BamError::Unsorted {
        file: file.to_string(),
        record: format!("{qname} at {}:{}", names[at.0], at.1 + 1),
        reason: format!("comes after one at {}:{}", names[last.0], last.1 + 1),
    }
    .into()
}

/// Gives out a run of reference `tid` counted by a piece: through the range's gate if it is a
/// byte range, then through the sink.
fn give(
    mut run: Run,
    tid: usize,
    sink: &mut RunSink,
    mut gate: Option<&mut RangeGate>,
    rows: &mut Rows,
    references: &References,
) {
    if let Some(gate) = gate.as_deref_mut() {
        if !gate.passes(tid, &mut run) {
            return;
        }
    }
    sink.run(run, &mut |t, item| route(t, item, gate.as_deref_mut(), rows, references));
}

/// Puts what the sink gives out in the rows; a byte range keeps the bins it does not hold whole.
fn route(tid: usize, item: Item, gate: Option<&mut RangeGate>, rows: &mut Rows, references: &References) {
    let rname = &references.names[tid];
    match (item, gate) {
        (Item::Bin(bin), Some(gate)) => gate.route_bin(tid, bin, rows, rname),
        (item, _) => rows.push(rname, item),
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

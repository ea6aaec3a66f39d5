//! `bam_depth(location [, region] [, options])`: read depth as runs of equal depth, counted as
//! mosdepth counts it (or as `samtools depth`), or summed per window or BED interval.
//!
//! Each file is split into pieces of its references that are counted in parallel: with an index,
//! each piece reads the records overlapping its range and gives runs only inside it, so a read
//! that crosses a piece's edge counts on both sides; cuts fall where the depth changes, so no
//! run crosses one. A file without an index is one piece, counted in byte ranges in parallel,
//! whose edges are merged in file order (the `merge` module). The records come through the
//! table's own scan, with only the columns depth needs and the flag and MAPQ filters in the
//! decoder (docs/depth.md).

pub mod bins;
pub mod count;
pub mod exec;
mod merge;
pub mod options;

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Result, ScalarValue};

use super::literal_str;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::{binary_expr, col, lit, Expr, Operator, TableType};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStoreExt;

use crate::datasource::listing::{bam_listing_options, list_files, table_url};
use crate::datasource::table::BamTable;
use crate::error::BamError;
use crate::formats::catalog::Catalog;
use crate::formats::{check_regions, has_index, read_sam_header};
use crate::io::shown_location;
use crate::io::store::object_store_for;
use crate::options::region::{parse_regions, Region, RegionReference};
use crate::options::{AlignmentFormat, BamOptions, TagSelection};
use exec::{
    byte_ranges, depth_schema, read_columns, single_partition, BedIntervals, DepthExec, Piece, References, Span,
};
use options::DepthOptions;

/// The `bam_depth` table function.
#[derive(Debug, Default)]
pub struct BamDepthFunction;

const USAGE: &str = "bam_depth takes a location, then optionally a region and an options string, as string \
                     literals: bam_depth('x.bam', 'chr1:1-100000', 'window=1000 min_mapq=20')";

impl TableFunctionImpl for BamDepthFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let texts = args.exprs().iter().map(literal_str).collect::<Option<Vec<&str>>>();
        let (location, region, options) = match texts.as_deref() {
            Some([location]) => (*location, None, ""),
            // The options string is told from a region by its `=`.
            Some([location, options]) if options.contains('=') => (*location, None, *options),
            Some([location, region]) => (*location, Some(*region), ""),
            Some([location, region, options]) => (*location, Some(*region), *options),
            _ => return plan_err!("{USAGE}"),
        };
        let args = DepthArgs { location: location.into(), region: region.map(Into::into), options: options.into() };
        Ok(Arc::new(DepthTable::new(args)?))
    }
}

/// The literal arguments of a `bam_depth` call: they rebuild it, in another process too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthArgs {
    pub location: String,
    pub region: Option<String>,
    pub options: String,
}

impl DepthArgs {
    /// The options, over the table options a location's name implies.
    pub fn options(&self) -> Result<DepthOptions> {
        let format = AlignmentFormat::of_path(&self.location);
        let table = BamOptions::default().with_format(format).with_tags(TagSelection::None);
        DepthOptions::parse(&self.options, table)
    }

    /// Whether the location is a directory or a glob, whose rows get a `file` column.
    pub fn cohort(&self) -> Result<bool> {
        let url = table_url(&self.location)?;
        Ok(url.is_collection() || url.get_glob().is_some())
    }
}

/// The depth of the files at one location; counted when scanned.
#[derive(Debug)]
pub struct DepthTable {
    args: Arc<DepthArgs>,
    regions: Vec<Region>,
    options: Arc<DepthOptions>,
    cohort: bool,
    schema: SchemaRef,
}

impl DepthTable {
    /// Checks the arguments and makes the table (nothing is read until it is scanned).
    pub fn new(args: DepthArgs) -> Result<Self> {
        let options = args.options()?;
        let regions = match &args.region {
            Some(text) => parse_regions(text)?,
            None => Vec::new(),
        };
        if let Some(r) = regions.iter().find(|r| !matches!(r.reference, RegionReference::Named(_))) {
            let reason = format!("{r} names no reference: depth is counted along a named reference");
            return Err(BamError::invalid_option("region", reason).into());
        }
        let cohort = args.cohort()?;
        let schema = depth_schema(cohort, &options);
        Ok(Self { args: Arc::new(args), regions, options: Arc::new(options), cohort, schema })
    }

    pub fn args(&self) -> &DepthArgs {
        &self.args
    }
}

#[async_trait]
impl TableProvider for DepthTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.plan(state).await?;
        match projection {
            Some(columns) if columns.len() != self.schema.fields().len() => {
                let exprs = columns.iter().map(|&i| {
                    let field = self.schema.field(i);
                    let column = datafusion::physical_expr::expressions::col(field.name(), &self.schema)?;
                    Ok((column, field.name().clone()))
                });
                Ok(Arc::new(ProjectionExec::try_new(exprs.collect::<Result<Vec<_>>>()?, plan)?))
            }
            _ => Ok(plan),
        }
    }
}

impl DepthTable {
    /// One [`DepthExec`] per piece, in a union.
    async fn plan(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let options = &self.options;
        let url = table_url(&self.args.location)?;
        let listing = bam_listing_options(std::slice::from_ref(&url), options.table.clone());
        let (store, mut files) = list_files(state, std::slice::from_ref(&url), &listing).await?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        if !self.regions.is_empty() {
            check_regions(&store, &files, &self.regions).await?;
        }
        let bed = match &options.bed {
            Some(location) => Some(Arc::new(read_bed(state, location).await?)),
            None => None,
        };
        let catalog = Catalog::of(state.runtime_env());
        let store_url = url.object_store();
        let parts = state.config().target_partitions().max(1);
        let mut pieces: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for meta in &files {
            let file: Arc<str> = shown_location(Some(&store_url), &meta.location).into();
            let header = read_sam_header(&store, &meta.location).await?;
            let (names, lengths) = header
                .reference_sequences()
                .iter()
                .map(|(name, r)| (name.to_string(), usize::from(r.length()) as i64))
                .unzip();
            let references = Arc::new(References::new(names, lengths));
            let spans = spans_of(&references, &self.regions);
            let indexed = has_index(options.table.format, &catalog, &store, Some(&store_url), meta).await?;
            if !indexed && !self.regions.is_empty() {
                let reason =
                    format!("{file} has no index, which depth over a region needs (make one with samtools index)");
                return Err(BamError::invalid_option("region", reason).into());
            }
            // One table per file serves every piece's scan, and the probes'.
            let table = BamTable::open(state, &file, options.table.clone()).await?;
            let split = indexed && options.table.split;
            let mut groups =
                if split { cut(&spans, parts, options.window, options.bed.is_some()) } else { vec![spans] };
            if split && !options.binned() {
                groups = self.cut_at_changes(state, &table, &file, &references, groups).await?;
            }
            for spans in groups {
                let inputs = if split {
                    vec![single_partition(self.read_plan(state, &table, &references, &spans).await?)]
                } else if options.table.split {
                    // Without an index: one scan per byte range, counted in parallel and merged.
                    let plan = self.read_plan(state, &table, &references, &[]).await?;
                    byte_ranges(plan, parts, state.config_options())?
                } else {
                    vec![single_partition(self.read_plan(state, &table, &references, &[]).await?)]
                };
                let regioned = !self.regions.is_empty();
                let piece = Piece { file: Arc::clone(&file), references: Arc::clone(&references), spans, regioned };
                let (args, bed) = (Arc::clone(&self.args), bed.clone());
                pieces.push(Arc::new(DepthExec::new(args, piece, inputs, Arc::clone(options), bed, self.cohort)?));
            }
        }
        UnionExec::try_new(pieces)
    }
}

impl DepthTable {
    /// The scan of the records depth reads from `table` (one file): those overlapping `spans`
    /// (through the index), or all if there are none.
    async fn read_plan(
        &self,
        state: &dyn Session,
        table: &BamTable,
        references: &References,
        spans: &[Span],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = table.schema();
        let projection = read_columns(self.options.mode)
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let regions: Vec<Region> = spans.iter().map(|s| region_of(references, s)).collect();
        let filters = read_filters(&self.options);
        table.scan_within(state, Some(&projection), &filters, None, &regions).await
    }

    /// Moves each cut inside a reference to the first position at or after it where the depth
    /// changes, so that no run crosses a cut; a cut without a change within reach is dropped.
    async fn cut_at_changes(
        &self,
        state: &dyn Session,
        table: &BamTable,
        file: &Arc<str>,
        references: &Arc<References>,
        groups: Vec<Vec<Span>>,
    ) -> Result<Vec<Vec<Span>>> {
        let mut out: Vec<Vec<Span>> = Vec::new();
        for mut group in groups {
            let Some(last) = out.last_mut().and_then(|g| g.last_mut()) else {
                out.push(group);
                continue;
            };
            let first = group[0];
            if last.tid != first.tid || last.end != first.start {
                out.push(group);
                continue;
            }
            match self.first_change(state, table, file, references, first).await? {
                Some(at) => {
                    last.end = at;
                    group[0].start = at;
                    out.push(group);
                }
                None => {
                    last.end = first.end;
                    group.remove(0);
                    if !group.is_empty() {
                        out.push(group);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The first position of `span`, after its start, where the depth differs from the position
    /// before, looking through growing stretches of the index.
    async fn first_change(
        &self,
        state: &dyn Session,
        table: &BamTable,
        file: &Arc<str>,
        references: &Arc<References>,
        span: Span,
    ) -> Result<Option<i64>> {
        let probe_options =
            DepthOptions { window: None, bed: None, thresholds: Arc::from(Vec::new()), ..(*self.options).clone() };
        let probe_options = Arc::new(probe_options);
        for reach in PROBE_REACHES {
            let probe = Span { start: span.start - 1, end: (span.start + reach).min(span.end), ..span };
            let input = single_partition(self.read_plan(state, table, references, &[probe]).await?);
            let piece = Piece {
                file: Arc::clone(file),
                references: Arc::clone(references),
                spans: vec![probe],
                regioned: true,
            };
            let args = Arc::clone(&self.args);
            let exec = DepthExec::new(args, piece, vec![input], Arc::clone(&probe_options), None, false)?;
            let batches = datafusion::physical_plan::collect(Arc::new(exec), state.task_ctx()).await?;
            let mut starts = batches.iter().flat_map(|b| {
                let column = b.column_by_name("start").map(|c| c.as_primitive::<Int64Type>().values().to_vec());
                column.unwrap_or_default()
            });
            // Runs start 1-based; the first is the probe's own start.
            if let Some(second) = starts.nth(1) {
                return Ok(Some(second - 1));
            }
            if probe.end == span.end {
                break;
            }
        }
        Ok(None)
    }
}

/// How far past a cut the probes for a depth change look, in turn: most cuts find one in the
/// first; a stretch without reads takes the longer ones.
const PROBE_REACHES: [i64; 4] = [1 << 12, 1 << 16, 1 << 20, 1 << 24];

/// The filters the decoder runs: the flags and the MAPQ (an unknown MAPQ, 255, passes any).
fn read_filters(options: &DepthOptions) -> Vec<Expr> {
    let flag_and = |bits: u16| binary_expr(col("flag"), Operator::BitwiseAnd, lit(ScalarValue::UInt16(Some(bits))));
    let mut filters = Vec::new();
    if options.exclude_flags != 0 {
        filters.push(flag_and(options.exclude_flags).eq(lit(ScalarValue::UInt16(Some(0)))));
    }
    if options.include_flags != 0 {
        filters.push(flag_and(options.include_flags).not_eq(lit(ScalarValue::UInt16(Some(0)))));
    }
    if options.min_mapq > 0 {
        filters.push(col("mapq").gt_eq(lit(options.min_mapq)).or(col("mapq").is_null()));
    }
    filters
}

/// The spans to count in a file: its references whole, or the regions (merged and in the
/// header's order) on those it has.
fn spans_of(references: &References, regions: &[Region]) -> Vec<Span> {
    if regions.is_empty() {
        let lengths = references.lengths.iter().enumerate();
        return lengths.map(|(tid, &length)| Span { tid, start: 0, end: length }).collect();
    }
    let mut spans: Vec<Span> = regions
        .iter()
        .filter_map(|r| {
            let RegionReference::Named(name) = &r.reference else { return None };
            let tid = references.id(name)?;
            let length = references.lengths[tid];
            let start = (r.start.saturating_sub(1) as i64).min(length);
            let end = (r.end.min(length as u64) as i64).max(start);
            Some(Span { tid, start, end })
        })
        .collect();
    spans.sort_by_key(|s| (s.tid, s.start));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if last.tid == span.tid && span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// A span as a region of the table's `region` option (1-based, inclusive).
fn region_of(references: &References, span: &Span) -> Region {
    let reference = RegionReference::Named(references.names[span.tid].clone());
    if span.start == 0 && span.end == references.lengths[span.tid] {
        return Region::whole(reference);
    }
    Region { reference, start: span.start as u64 + 1, end: (span.end as u64).max(span.start as u64 + 1) }
}

/// Splits `spans` into about `parts` groups of about equal length. Cuts fall on multiples of
/// `window` so that no window is split, and only between spans with BED intervals.
fn cut(spans: &[Span], parts: usize, window: Option<i64>, whole_spans: bool) -> Vec<Vec<Span>> {
    let total: i64 = spans.iter().map(|s| s.end - s.start).sum();
    let target = (total / parts as i64).max(1);
    let (mut groups, mut group, mut room) = (Vec::new(), Vec::new(), target);
    for &span in spans {
        let mut start = span.start;
        while start < span.end {
            let mut at = if whole_spans { span.end } else { (start + room).min(span.end) };
            if let Some(size) = window {
                at = (at + size - 1) / size * size;
            }
            let at = at.min(span.end);
            group.push(Span { start, end: at, ..span });
            room -= at - start;
            start = at;
            if room <= 0 {
                groups.push(std::mem::take(&mut group));
                room = target;
            }
        }
    }
    if !group.is_empty() || groups.is_empty() {
        groups.push(group);
    }
    groups
}

/// Reads a BED file (plain or bgzipped; local or on a store): its intervals by reference.
async fn read_bed(state: &dyn Session, location: &str) -> Result<BedIntervals> {
    let url = ListingTableUrl::parse(location)?;
    let store = object_store_for(state.runtime_env(), &url, &HashMap::new()).await?;
    let path = url.prefix().clone();
    let bytes = async { store.get(&path).await?.bytes().await }.await.map_err(|e| BamError::store(location, e))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        noodles_bgzf::io::Reader::new(bytes.as_ref())
            .read_to_string(&mut text)
            .map_err(|e| BamError::damaged(location, "", format!("not a bgzipped text file: {e}")))?;
        text
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|e| BamError::damaged(location, "", format!("not text: {e}")))?
    };
    parse_bed(location, &text)
}

/// Parses BED text: `chrom start end [name ...]`, 0-based and half-open; `track`, `browser` and
/// `#` lines are skipped.
fn parse_bed(location: &str, text: &str) -> Result<BedIntervals> {
    let mut intervals = BedIntervals::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with("track") || line.starts_with("browser") {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = |reason: String| BamError::damaged(location, format!("line {}", n + 1), reason);
        let [chrom, start, end, rest @ ..] = fields.as_slice() else {
            return Err(bad(format!("a BED line has at least 3 tab-separated fields: {line:?}")).into());
        };
        let number = |s: &str| s.trim().parse::<i64>().ok().filter(|&v| v >= 0);
        let (Some(start), Some(end)) = (number(start), number(end)) else {
            return Err(bad(format!("start and end are not numbers: {line:?}")).into());
        };
        if start > end {
            return Err(bad(format!("start {start} is after end {end}")).into());
        }
        let name = rest.first().map(|n| Arc::from(n.trim()));
        intervals.entry(chrom.to_string()).or_default().push((start, end, name));
    }
    intervals.values_mut().for_each(|v| v.sort_by_key(|&(start, _, _)| start));
    Ok(intervals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(tid: usize, start: i64, end: i64) -> Span {
        Span { tid, start, end }
    }

    #[test]
    fn cuts_cover_the_spans_once() {
        let spans = [span(0, 0, 1000), span(1, 0, 300), span(2, 100, 250)];
        for parts in [1, 2, 3, 7] {
            for window in [None, Some(100)] {
                let groups = cut(&spans, parts, window, false);
                let flat: Vec<Span> = groups.concat();
                let total: i64 = flat.iter().map(|s| s.end - s.start).sum();
                assert_eq!(total, 1000 + 300 + 150, "{parts} {window:?}");
                assert!(flat.windows(2).all(|w| (w[0].tid, w[0].end) <= (w[1].tid, w[1].start)));
                if let Some(size) = window {
                    let inner = |s: &Span| s.end % size == 0 || spans.iter().any(|o| o.tid == s.tid && o.end == s.end);
                    assert!(flat.iter().all(inner), "{flat:?}");
                }
                assert!(groups.len() <= parts + 1, "{parts}: {}", groups.len());
            }
        }
        let whole = cut(&spans, 3, None, true);
        assert!(whole.concat() == spans, "BED pieces keep spans whole");
    }

    #[test]
    fn bed_lines() {
        let bed = parse_bed("t.bed", "track name=x\n#c\nchr1\t10\t20\tex1\nchr1\t0\t5\n\nchr2\t1\t2\ta\tb\n").unwrap();
        assert_eq!(bed["chr1"], [(0, 5, None), (10, 20, Some(Arc::from("ex1")))]);
        assert_eq!(bed["chr2"].len(), 1);
        for bad in ["chr1\t10\n", "chr1\tx\t20\n", "chr1\t30\t20\n"] {
            let e = parse_bed("t.bed", bad).unwrap_err();
            assert!(e.to_string().contains("t.bed") && e.to_string().contains("line 1"), "{e}");
        }
    }
}

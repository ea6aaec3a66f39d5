//! The DataFusion glue: `STORED AS BAM` through [`BamFormatFactory`], a [`FileFormat`] for
//! listing tables, and the [`FileSource`]/[`FileOpener`] pair that decodes each file.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::{not_impl_err, plan_err, GetExt, Result, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::write::get_writer_schema;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{
    FileGroupPartitioner, FileOpenFuture, FileOpener, FileScanConfig, FileSinkConfig, FileSource,
};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::{LexOrdering, LexRequirement};
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use futures::StreamExt;
use noodles_bgzf::io::writer::CompressionLevel;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::cram::Reference;
use crate::cram_scan::{CramRecords, CramScan};
use crate::encode::RecordEncoder;
use crate::file_info::{read_sam_header, Catalog, FileInfo};
use crate::framing::{FileContext, BGZF_EOF};
use crate::infer::infer_layout;
use crate::io::{blocking_stream, ObjectBytes};
use crate::options::{AlignmentFormat, BamOptions, OutputIndex};
use crate::partition::{plan_range, region_file_groups, select_pieces, Piece, MIN_REGION_PARTITION_BYTES};
use crate::progress;
use crate::pushdown::{can_prefilter, region_predicate, regions, Prefilter};
use crate::region::Region;
use crate::sam_scan::SamRecords;
use crate::scan::{BamRecords, BatchReader, DecodeSpec, RecordSource, ScanMetrics};
use crate::schema::{bam_schema, layout_of, TagLayout};
use crate::sink::{is_coordinate_order, output_header, BamSink};
use crate::store::object_store_for;
use crate::warnings;

/// Creates [`BamFormat`]s for `CREATE EXTERNAL TABLE ... STORED AS BAM OPTIONS (...)`.
#[derive(Debug, Default)]
pub struct BamFormatFactory {
    options: BamOptions,
}

impl BamFormatFactory {
    pub fn new(options: BamOptions) -> Self {
        Self { options }
    }
}

impl GetExt for BamFormatFactory {
    fn get_ext(&self) -> String {
        self.options.format.extension().to_string()
    }
}

impl FileFormatFactory for BamFormatFactory {
    fn create(&self, _state: &dyn Session, format_options: &HashMap<String, String>) -> Result<Arc<dyn FileFormat>> {
        let options = self.options.clone().with_map(format_options)?;
        Ok(Arc::new(BamFormat::new(options)))
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(BamFormat::new(self.options.clone()))
    }
}

/// BAM (or CRAM, by [`BamOptions::format`]) as a DataFusion [`FileFormat`].
#[derive(Debug, Default, Clone)]
pub struct BamFormat {
    options: BamOptions,
}

impl BamFormat {
    pub fn new(options: BamOptions) -> Self {
        Self { options }
    }

    pub fn options(&self) -> &BamOptions {
        &self.options
    }
}

#[async_trait]
impl FileFormat for BamFormat {
    fn get_ext(&self) -> String {
        self.options.format.extension().to_string()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        if compression.is_compressed() {
            return not_impl_err!("BAM files are BGZF-compressed already; no extra compression is supported");
        }
        Ok(self.get_ext())
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        None
    }

    async fn infer_schema(
        &self,
        _state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        let layout = infer_layout(store, objects, &self.options).await?;
        Ok(bam_schema(&layout))
    }

    /// The record count from a current index, so `count(*)` needs no scan.
    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        let unknown = Statistics::new_unknown(&table_schema);
        // Only BAM indexes count records (a `.crai` does not).
        if !self.options.regions.is_empty() || self.options.format != AlignmentFormat::Bam {
            return Ok(unknown);
        }
        let catalog = Catalog::of(state.runtime_env());
        catalog.load_all(store, vec![object.clone()]).await?;
        let count = catalog
            .get(object)
            .filter(|info| info.index_is_current)
            .and_then(|info| info.index.as_ref()?.record_count());
        Ok(match count {
            Some(n) => unknown.with_num_rows(Precision::Exact(n as usize)),
            None => unknown,
        })
    }

    /// Reads every file's header and index once, into the session's file metadata cache, before
    /// the partitions need them, and has the scan account for its buffers in the session's memory
    /// pool.
    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        mut conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let store = state.runtime_env().object_store(&conf.object_store_url)?;
        let metas: Vec<ObjectMeta> =
            conf.file_groups.iter().flat_map(|g| g.iter()).map(|f| f.object_meta.clone()).collect();
        if self.options.format == AlignmentFormat::Bam {
            Catalog::of(state.runtime_env()).load_all(&store, metas.clone()).await?;
        }
        if let Some(source) = conf.file_source.downcast_ref::<BamSource>() {
            conf.file_source = Arc::new(source.clone().with_runtime(state.runtime_env()).with_files(metas));
        }
        Ok(DataSourceExec::from_data_source(conf))
    }

    /// `COPY ... TO 'x.bam' STORED AS BAM`: the header from option `header` or from the BAM
    /// files the query reads; the columns checked now, before any row is read.
    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
        conf: FileSinkConfig,
        order_requirements: Option<LexRequirement>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if conf.insert_op != InsertOp::Append {
            return not_impl_err!("BAM outputs are written by COPY or appended to; they cannot be overwritten");
        }
        let source = self.header_source(state, &input).await?;
        let coordinate_sorted = input
            .properties()
            .output_ordering()
            .is_some_and(|ordering| is_coordinate_order(ordering, &input.schema(), &source));
        if self.options.index != OutputIndex::None && !coordinate_sorted {
            return plan_err!(
                "option index needs a coordinate-sorted output: end the query with ORDER BY rname, pos \
                 (this is coordinate order only when the header's reference names are in text order)"
            );
        }
        let header = output_header(source, coordinate_sorted)?;
        let level = CompressionLevel::new(self.options.compression_level).ok_or_else(|| {
            DataFusionError::Plan(format!("invalid compression_level {}", self.options.compression_level))
        })?;
        // The files' columns: without `PARTITIONED BY` columns, which DataFusion takes out.
        let encoder = RecordEncoder::try_new(&get_writer_schema(&conf), Arc::new(header), level)?;
        let sink = BamSink::new(conf, encoder, self.options.index);
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), order_requirements)))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        let source = BamSource::new(table_schema).with_options(&self.options);
        if self.options.regions.is_empty() {
            return Arc::new(source);
        }
        // The region option is a predicate like any pushed-down filter.
        let predicate = region_predicate(&self.options.regions, source.table_schema.file_schema());
        Arc::new(source.with_predicates(vec![predicate]))
    }
}

impl BamFormat {
    /// The header a BAM output starts from: option `header`'s file, else the first BAM file the
    /// query reads, whose references every other file read must share, with the read groups of
    /// all of them.
    async fn header_source(&self, state: &dyn Session, input: &Arc<dyn ExecutionPlan>) -> Result<noodles_sam::Header> {
        let runtime = state.runtime_env();
        if let Some(location) = &self.options.header {
            let url = ListingTableUrl::parse(location)?;
            let store = object_store_for(runtime, &url, &HashMap::new()).await?;
            return read_sam_header(&store, url.prefix()).await;
        }
        let mut files = Vec::new();
        bam_files_read(input, &mut files);
        let Some((url, first)) = files.first() else {
            return plan_err!(
                "a BAM output needs a header: the query reads no BAM table, so name a BAM file whose \
                 header to use with OPTIONS ('header' 'path/to/file.bam')"
            );
        };
        let store = runtime.object_store(url)?;
        let mut header = read_sam_header(&store, &first.location).await?;
        let references = |h: &noodles_sam::Header| -> Vec<(Vec<u8>, usize)> {
            h.reference_sequences().iter().map(|(name, r)| (name.to_vec(), usize::from(r.length()))).collect()
        };
        for (url, meta) in &files[1..] {
            let other = read_sam_header(&runtime.object_store(url)?, &meta.location).await?;
            if references(&other) != references(&header) {
                return plan_err!(
                    "a BAM output has one header, but the query reads BAM files with different reference \
                     sequences ({} and {}): name the header to use with OPTIONS ('header' 'path/to/file.bam')",
                    first.location,
                    meta.location
                );
            }
            // Records name their read group (`RG`): every file's groups go in, the first of an ID wins.
            for (id, group) in other.read_groups() {
                if !header.read_groups().contains_key(id) {
                    header.read_groups_mut().insert(id.clone(), group.clone());
                }
            }
        }
        Ok(header)
    }
}

/// The BAM files the scans of `plan` read, in plan order.
fn bam_files_read(plan: &Arc<dyn ExecutionPlan>, files: &mut Vec<(ObjectStoreUrl, ObjectMeta)>) {
    if let Some((config, _)) =
        plan.downcast_ref::<DataSourceExec>().and_then(|e| e.downcast_to_file_source::<BamSource>())
    {
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            if !files.iter().any(|(_, m)| m.location == file.object_meta.location) {
                files.push((config.object_store_url.clone(), file.object_meta.clone()));
            }
        }
    }
    for child in plan.children() {
        bam_files_read(child, files);
    }
}

/// Decodes BAM files for a scan: the projection and batch size are set by DataFusion.
#[derive(Clone)]
pub struct BamSource {
    table_schema: TableSchema,
    projection: SplitProjection,
    batch_size: usize,
    metrics: ExecutionPlanMetricsSet,
    /// Whether DataFusion may split files into byte ranges (option `split`).
    split: bool,
    /// Option `skip_damaged`.
    skip_damaged: bool,
    /// BAM or CRAM.
    format: AlignmentFormat,
    /// Option `reference` (CRAM), and the FASTA once a partition opened it.
    reference_path: Option<String>,
    reference: Arc<std::sync::Mutex<Option<Reference>>>,
    /// Headers and indexes of the files: the session's cache once the scan is planned.
    catalog: Catalog,
    /// The scan's files, for `EXPLAIN`'s index selection and the progress bar.
    files: Arc<[ObjectMeta]>,
    /// Whether a partition has added the scan's bytes to the progress counters.
    progress_counted: Arc<AtomicBool>,
    /// Filters the decoder evaluates itself, over the file schema.
    predicate: Option<Arc<dyn PhysicalExpr>>,
    /// The regions the predicate confines records to, for index use.
    regions: Option<Arc<[Region]>>,
    /// Where each partition reserves the memory of its buffers (unset: not accounted).
    memory_pool: Option<Arc<dyn MemoryPool>>,
}

impl BamSource {
    pub fn new(table_schema: TableSchema) -> Self {
        Self {
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            batch_size: 8192,
            metrics: ExecutionPlanMetricsSet::new(),
            split: true,
            skip_damaged: false,
            format: AlignmentFormat::Bam,
            reference_path: None,
            reference: Arc::default(),
            catalog: Catalog::default(),
            files: Arc::from([]),
            progress_counted: Arc::default(),
            predicate: None,
            regions: None,
            memory_pool: None,
        }
    }

    /// This source with the scan options of `options` (`split`, `skip_damaged`, the format and
    /// its `reference`; regions become predicates, see [`with_predicates`](Self::with_predicates)).
    pub fn with_options(self, options: &BamOptions) -> Self {
        Self {
            split: options.split,
            skip_damaged: options.skip_damaged,
            format: options.format,
            reference_path: options.reference.clone(),
            reference: Arc::default(),
            ..self
        }
    }

    /// The scan options of this source (regions are in its predicate).
    pub fn options(&self) -> BamOptions {
        let options =
            BamOptions::default().with_split(self.split).with_skip_damaged(self.skip_damaged).with_format(self.format);
        match &self.reference_path {
            Some(path) => options.with_reference(path),
            None => options,
        }
    }

    /// The reference FASTA of a CRAM scan, opened once for all its partitions.
    fn reference(&self) -> Result<Reference> {
        let mut opened =
            self.reference.lock().map_err(|_| DataFusionError::Internal("reference lock poisoned".into()))?;
        if let Some(reference) = &*opened {
            return Ok(reference.clone());
        }
        let reference = Reference::open(self.reference_path.as_deref())?;
        Ok(opened.insert(reference).clone())
    }

    /// This source in `runtime`: its buffers reserved in the runtime's memory pool, file facts
    /// kept in its file metadata cache.
    pub fn with_runtime(self, runtime: &RuntimeEnv) -> Self {
        Self { memory_pool: Some(Arc::clone(&runtime.memory_pool)), catalog: Catalog::of(runtime), ..self }
    }

    /// This source, showing the index selection of `files` in `EXPLAIN`.
    fn with_files(self, files: Vec<ObjectMeta>) -> Self {
        Self { files: Arc::from(files), ..self }
    }

    /// The filters the decoder evaluates, over the file schema.
    pub fn predicate(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        self.predicate.as_ref()
    }

    /// This source with `predicates` (over the file schema) added to what the decoder filters.
    pub fn with_predicates(&self, predicates: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        let all: Vec<_> = self.predicate.iter().cloned().chain(predicates).collect();
        let predicate = conjunction(all);
        let regions = regions(&predicate).map(Arc::from);
        Self { predicate: Some(predicate), regions, ..self.clone() }
    }

    /// What the index selects for the regions, per file, for `EXPLAIN`.
    fn index_selection(&self) -> Vec<String> {
        let Some(regions) = &self.regions else { return vec![] };
        self.files
            .iter()
            .filter_map(|meta| Some((meta, self.catalog.get(meta)?)))
            .map(|(meta, info)| {
                let (path, size) = (&meta.location, meta.size);
                if info.index.is_none() {
                    return format!("{path}: no index ({}), every record is tested", info.index_note);
                }
                let (span, chunks) = selected_bytes(meta, &info, Some(regions));
                format!("{path}: {chunks} chunks, about {span} of {size} bytes ({})", info.index_note)
            })
            .collect()
    }

    /// The compressed bytes the scan will read (its files, or what the index selects for the
    /// regions), for the progress bar.
    fn expected_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|meta| match self.catalog.get(meta) {
                Some(info) => selected_bytes(meta, &info, self.regions.as_deref()).0,
                None => meta.size,
            })
            .sum()
    }
}

/// The compressed bytes of `meta`'s file that a scan for `regions` reads, and the number of index
/// chunks they make.
fn selected_bytes(meta: &ObjectMeta, info: &FileInfo, regions: Option<&[Region]>) -> (u64, usize) {
    let selection = select_pieces(&info.context, info.index.as_deref(), Piece::whole_file(info.header_end), regions);
    let chunks = selection.index_chunks();
    let span = selection
        .into_pieces()
        .iter()
        .map(|p| p.to.map_or(meta.size, |t| t.compressed()).saturating_sub(p.from.compressed()))
        .sum();
    (span, chunks)
}

impl fmt::Debug for BamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BamSource")
            .field("projection", &self.projection.file_indices)
            .field("predicate", &self.predicate)
            .finish()
    }
}

impl FileSource for BamSource {
    fn create_file_opener(
        &self,
        store: Arc<dyn ObjectStore>,
        _config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = self.table_schema.file_schema();
        let opener = Arc::new(BamOpener {
            layout: Arc::new(layout_of(file_schema)?),
            source: Arc::new(self.clone()),
            store,
            metrics: ScanMetrics::new(&self.metrics, partition),
        });
        ProjectionOpener::try_new(self.projection.clone(), opener, file_schema)
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(Self { batch_size, ..self.clone() })
    }

    fn try_pushdown_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn FileSource>>> {
        let merged = self.projection.source.try_merge(projection)?;
        let projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(Self { projection, ..self.clone() })))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn filter(&self) -> Option<Arc<dyn PhysicalExpr>> {
        self.predicate.clone()
    }

    /// Takes over the filters the decoder can evaluate exactly on fixed-size record fields
    /// (the pushdown module); DataFusion then runs no filter of its own for them.
    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn FileSource>>> {
        let file_schema = self.table_schema.file_schema();
        let verdicts: Vec<PushedDown> = filters
            .iter()
            .map(|f| if can_prefilter(f, file_schema) { PushedDown::Yes } else { PushedDown::No })
            .collect();
        let accepted: Vec<_> =
            filters.into_iter().zip(&verdicts).filter(|(_, v)| matches!(v, PushedDown::Yes)).map(|(f, _)| f).collect();
        let propagation = FilterPushdownPropagation::with_parent_pushdown_result(verdicts);
        if accepted.is_empty() {
            return Ok(propagation);
        }
        Ok(propagation.with_updated_node(Arc::new(self.with_predicates(accepted)) as Arc<dyn FileSource>))
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        self.format.extension()
    }

    /// Files are split into byte ranges (the partition module) unless option `split` is off.
    fn supports_repartitioning(&self) -> bool {
        self.split
    }

    /// Region scans share out the bytes the index selects; other scans split whole files into
    /// equal byte ranges, as DataFusion does by default.
    fn repartitioned(
        &self,
        target_partitions: usize,
        repartition_file_min_size: usize,
        output_ordering: Option<LexOrdering>,
        config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        if !self.split {
            return Ok(None);
        }
        let files: Vec<PartitionedFile> = config.file_groups.iter().flat_map(|g| g.iter().cloned()).collect();
        let by_region = self.regions.as_ref().filter(|_| output_ordering.is_none()).and_then(|regions| {
            let min_share = (repartition_file_min_size as u64).min(MIN_REGION_PARTITION_BYTES);
            region_file_groups(&files, |meta| self.catalog.get(meta), regions, target_partitions, min_share)
        });
        let groups = by_region.or_else(|| {
            FileGroupPartitioner::new()
                .with_target_partitions(target_partitions)
                .with_repartition_file_min_size(repartition_file_min_size)
                .with_preserve_order_within_groups(output_ordering.is_some())
                .repartition_file_groups(&config.file_groups)
        });
        Ok(groups.map(|file_groups| {
            let mut config = config.clone();
            config.file_groups = file_groups;
            config
        }))
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                let names: Vec<&str> = self
                    .projection
                    .file_indices
                    .iter()
                    .map(|&i| self.table_schema.file_schema().field(i).name().as_str())
                    .collect();
                write!(f, ", decoded_columns=[{}]", names.join(", "))?;
                if let Some(p) = &self.predicate {
                    write!(f, ", predicate={p}")?;
                }
                if let Some(regions) = &self.regions {
                    let shown: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
                    write!(f, ", regions=[{}]", shown.join(", "))?;
                    let selection = self.index_selection();
                    if !selection.is_empty() {
                        write!(f, ", index_selection=[{}]", selection.join("; "))?;
                    }
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => Ok(()),
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        let recursion = datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), &mut *f)?;
        match (&self.predicate, recursion) {
            (Some(p), TreeNodeRecursion::Continue) => f(p),
            (_, recursion) => Ok(recursion),
        }
    }
}

struct BamOpener {
    /// The scan's settings: schema, projection, predicate, regions, options, catalog.
    source: Arc<BamSource>,
    store: Arc<dyn ObjectStore>,
    /// The tag layout of the source's file schema, derived once per partition.
    layout: Arc<TagLayout>,
    metrics: ScanMetrics,
}

impl FileOpener for BamOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let source = Arc::clone(&self.source);
        let store = Arc::clone(&self.store);
        let layout = Arc::clone(&self.layout);
        let metrics = self.metrics.clone();
        if !source.progress_counted.swap(true, Ordering::AcqRel) {
            progress::add_expected(source.expected_bytes());
        }
        Ok(Box::pin(async move {
            let meta = file.object_meta.clone();
            let (start, end) = match &file.range {
                Some(r) => (r.start as u64, (r.end as u64).min(meta.size)),
                None => (0, meta.size),
            };
            // Only the range holding the file's end checks for the BGZF end-of-file block (a CRAM
            // scan meets its end-of-file container, or its absence, when it reads that far).
            if end >= meta.size && source.format == AlignmentFormat::Bam {
                check_eof_marker(&store, &meta).await?;
            }
            let bytes = ObjectBytes {
                store,
                location: meta.location.clone(),
                size: meta.size,
                handle: tokio::runtime::Handle::current(),
            };
            let stream = blocking_stream(move || {
                let path = meta.location.to_string();
                let schema = source.table_schema.file_schema();
                let spec = DecodeSpec {
                    table_schema: schema,
                    projection: &source.projection.file_indices,
                    layout: &layout,
                    batch_size: source.batch_size,
                    skip_damaged: source.skip_damaged,
                };
                let prefilter = |context| {
                    source.predicate.as_ref().map(|p| Prefilter::new(p, schema, &layout, context)).transpose()
                };
                let memory = || {
                    let name = format!("{} scan of {path}", source.format.name());
                    source.memory_pool.as_ref().map(|pool| MemoryConsumer::new(name).register(pool))
                };
                let (format, partition) = (source.format, metrics.clone());
                match format {
                    AlignmentFormat::Bam => {
                        let info = source.catalog.get_or_load(&bytes, &meta)?;
                        let selection = plan_range(&path, &bytes, &info, start, end, source.regions.as_deref())?;
                        metrics.index_chunks.add(selection.index_chunks());
                        let pieces = selection.into_pieces();
                        let prefilter = prefilter(&info.context)?;
                        let records = BamRecords::new(&path, bytes, pieces, &info.context, &spec, partition);
                        batches(records, &info.context, spec, prefilter, metrics, memory())
                    }
                    AlignmentFormat::Cram => {
                        let scan = CramScan {
                            reference: source.reference()?,
                            range: (start, end),
                            regions: source.regions.clone(),
                            skip_damaged: source.skip_damaged,
                        };
                        let info = source.catalog.cram_info(&bytes, &meta)?;
                        let header = Arc::clone(&info.header);
                        let records = CramRecords::new(&path, bytes, header, scan, info.index.as_ref(), partition);
                        let file = Arc::clone(records.file());
                        batches(records, &file, spec, prefilter(&file)?, metrics, memory())
                    }
                    AlignmentFormat::Sam => {
                        let info = source.catalog.sam_info(&bytes, &meta)?;
                        let regions = source.regions.as_deref();
                        let records = SamRecords::open(
                            &path,
                            bytes,
                            &info,
                            (start, end),
                            regions,
                            source.skip_damaged,
                            partition,
                        )?;
                        let file = Arc::clone(records.file());
                        batches(records, &file, spec, prefilter(&file)?, metrics, memory())
                    }
                }
            });
            Ok(stream.boxed())
        }))
    }
}

/// The batches of a scan's `records`, decoded as `spec` says.
fn batches<S: RecordSource + 'static>(
    records: S,
    file: &Arc<FileContext>,
    spec: DecodeSpec<'_>,
    prefilter: Option<Prefilter>,
    metrics: ScanMetrics,
    memory: Option<MemoryReservation>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>>>> {
    Ok(Box::new(BatchReader::new(records, file, spec, prefilter, metrics)?.with_memory(memory)))
}

/// A BAM file ends with the 28-byte BGZF EOF block. Without it the file was probably cut short
/// at a block boundary: as samtools does, its records are still read, with a warning.
async fn check_eof_marker(store: &Arc<dyn ObjectStore>, meta: &ObjectMeta) -> Result<()> {
    let path = &meta.location;
    let size = meta.size;
    let tail_start = size.saturating_sub(BGZF_EOF.len() as u64);
    let tail = store
        .get_range(path, tail_start..size)
        .await
        .map_err(|e| DataFusionError::Execution(format!("cannot read BAM file {path}: {e}")))?;
    if tail.as_ref() != BGZF_EOF {
        warnings::warn(format!(
            "BAM file {path}: the BGZF end-of-file block is missing at byte {tail_start}: the file is probably truncated; \
             its records were read up to byte {size}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::options::TagSelection;

    #[test]
    fn the_factory_merges_options_key_by_key() {
        let base = BamOptions::default().with_split(false);
        let factory = BamFormatFactory::new(base.clone());
        let state = SessionContext::new().state();
        let created = factory.create(&state, &HashMap::from([("format.tags".into(), "NM".into())])).unwrap();
        let format = created.downcast_ref::<BamFormat>().unwrap();
        assert_eq!(format.options(), &base.with_tags(TagSelection::parse("NM").unwrap()));
    }
}

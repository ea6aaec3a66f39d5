//! The [`FileSource`] of a scan: what DataFusion sets (projection, batch size, pushed-down
//! filters, repartitioning) and the options that stay whole in it.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroupPartitioner, FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::DisplayFormatType;
use object_store::{ObjectMeta, ObjectStore};

use crate::bgzf::pieces::{select_pieces, Piece};
use crate::datasource::opener::BamOpener;
use crate::decode::pushdown::{can_prefilter, regions};
use crate::decode::reader::ScanMetrics;
use crate::formats::bam::info::BamInfo;
use crate::formats::bam::partition::{region_file_groups, MIN_REGION_PARTITION_BYTES};
use crate::formats::catalog::Catalog;
use crate::formats::cram::container::Reference;
use crate::io::progress::Tally;
use crate::options::region::Region;
use crate::options::BamOptions;
use crate::schema::layout_of;

/// Decodes BAM files for a scan: the projection and batch size are set by DataFusion.
#[derive(Clone)]
pub struct BamSource {
    pub(super) table_schema: TableSchema,
    pub(super) projection: SplitProjection,
    pub(super) batch_size: usize,
    pub(super) metrics: ExecutionPlanMetricsSet,
    /// The table's options, kept whole as `CsvSource` keeps its `CsvOptions`: the format,
    /// `split`, `skip_damaged` and `reference` act here (regions act as [`Self::predicate`]).
    pub(super) options: BamOptions,
    /// The reference FASTA of a CRAM scan, once a partition opened it.
    pub(super) reference: Arc<std::sync::Mutex<Option<Reference>>>,
    /// Headers and indexes of the files: the session's cache once the scan is planned.
    pub(super) catalog: Catalog,
    /// The scan's files, for `EXPLAIN`'s index selection and the progress bar.
    pub(super) files: Arc<[ObjectMeta]>,
    /// Whether a partition has added the scan's bytes to the progress counters.
    pub(super) progress_counted: Arc<AtomicBool>,
    /// Filters the decoder evaluates itself, over the file schema.
    pub(super) predicate: Option<Arc<dyn PhysicalExpr>>,
    /// The regions the predicate confines records to, for index use.
    pub(super) regions: Option<Arc<[Region]>>,
    /// Where each partition reserves the memory of its buffers (unset: not accounted).
    pub(super) memory_pool: Option<Arc<dyn MemoryPool>>,
    /// The progress counters of the caller whose table this scans, besides the process's.
    pub(super) tally: Option<Arc<Tally>>,
}

impl BamSource {
    pub fn new(table_schema: TableSchema) -> Self {
        Self {
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            batch_size: 8192,
            metrics: ExecutionPlanMetricsSet::new(),
            options: BamOptions::default(),
            reference: Arc::default(),
            catalog: Catalog::default(),
            files: Arc::from([]),
            progress_counted: Arc::default(),
            predicate: None,
            regions: None,
            memory_pool: None,
            tally: None,
        }
    }

    /// Counts what this source's scans read in `tally` too, besides the process's counters.
    pub fn with_tally(self, tally: Option<Arc<Tally>>) -> Self {
        Self { tally, ..self }
    }

    /// This source with the table options `options` (regions become predicates, see
    /// [`with_predicates`](Self::with_predicates)).
    pub fn with_options(self, options: &BamOptions) -> Self {
        Self { options: options.clone(), reference: Arc::default(), ..self }
    }

    /// The table options of this source.
    pub fn options(&self) -> &BamOptions {
        &self.options
    }

    /// The reference FASTA of a CRAM scan, opened once for all its partitions.
    pub(super) fn reference(&self) -> Result<Reference> {
        let mut opened =
            self.reference.lock().map_err(|_| DataFusionError::Internal("reference lock poisoned".into()))?;
        if let Some(reference) = &*opened {
            return Ok(reference.clone());
        }
        let reference = Reference::open(self.options.reference.as_deref())?;
        Ok(opened.insert(reference).clone())
    }

    /// This source in `runtime`: its buffers reserved in the runtime's memory pool, file facts
    /// kept in its file metadata cache.
    pub fn with_runtime(self, runtime: &RuntimeEnv) -> Self {
        Self { memory_pool: Some(Arc::clone(&runtime.memory_pool)), catalog: Catalog::of(runtime), ..self }
    }

    /// This source, showing the index selection of `files` in `EXPLAIN`.
    pub(super) fn with_files(self, files: Vec<ObjectMeta>) -> Self {
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
            .filter_map(|meta| Some((meta, self.catalog.get::<BamInfo>(meta)?)))
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
    pub(super) fn expected_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|meta| match self.catalog.get::<BamInfo>(meta) {
                Some(info) => selected_bytes(meta, &info, self.regions.as_deref()).0,
                None => meta.size,
            })
            .sum()
    }
}

/// The compressed bytes of `meta`'s file that a scan for `regions` reads, and the number of index
/// chunks they make.
fn selected_bytes(meta: &ObjectMeta, info: &BamInfo, regions: Option<&[Region]>) -> (u64, usize) {
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
        config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = self.table_schema.file_schema();
        let opener = Arc::new(BamOpener {
            layout: Arc::new(layout_of(file_schema)?),
            source: Arc::new(self.clone()),
            store,
            store_url: config.object_store_url.clone(),
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
        self.options.format.extension()
    }

    /// Files are split into byte ranges (the partition module) unless option `split` is off.
    fn supports_repartitioning(&self) -> bool {
        self.options.split
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
        if !self.options.split {
            return Ok(None);
        }
        let files: Vec<PartitionedFile> = config.file_groups.iter().flat_map(|g| g.iter().cloned()).collect();
        let by_region = self.regions.as_ref().filter(|_| output_ordering.is_none()).and_then(|regions| {
            let min_share = (repartition_file_min_size as u64).min(MIN_REGION_PARTITION_BYTES);
            region_file_groups(&files, |meta| self.catalog.get::<BamInfo>(meta), regions, target_partitions, min_share)
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

//! The DataFusion glue: `STORED AS BAM` through [`BamFormatFactory`], a [`FileFormat`] for
//! listing tables, and the [`FileSource`]/[`FileOpener`] pair that decodes each file.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use noodles_bgzf::VirtualPosition;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{not_impl_err, GetExt, Result, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::infer::infer_layout;
use crate::io::blocking_stream;
use crate::options::BamOptions;
use crate::decode::FileContext;
use crate::io::ObjectBytes;
use crate::partition::find_first_record;
use crate::scan::{bgzf_reader, read_header, BatchReader, Extent, SuccessorCheck, BGZF_EOF};
use crate::schema::{bam_schema, layout_of, TagLayout};

/// The file extension, without its dot.
pub const BAM_EXTENSION: &str = "bam";

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
        BAM_EXTENSION.to_string()
    }
}

impl FileFormatFactory for BamFormatFactory {
    fn create(&self, _state: &dyn Session, format_options: &HashMap<String, String>) -> Result<Arc<dyn FileFormat>> {
        let options = if format_options.is_empty() { self.options.clone() } else { BamOptions::from_map(format_options)? };
        Ok(Arc::new(BamFormat::new(options)))
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(BamFormat::new(self.options.clone()))
    }
}

/// BAM as a DataFusion [`FileFormat`].
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
        BAM_EXTENSION.to_string()
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

    async fn infer_schema(&self, _state: &dyn Session, store: &Arc<dyn ObjectStore>, objects: &[ObjectMeta]) -> Result<SchemaRef> {
        let layout = infer_layout(store, objects, &self.options).await?;
        Ok(bam_schema(&layout))
    }

    async fn infer_stats(&self, _state: &dyn Session, _store: &Arc<dyn ObjectStore>, table_schema: SchemaRef, _object: &ObjectMeta) -> Result<Statistics> {
        Ok(Statistics::new_unknown(&table_schema))
    }

    async fn create_physical_plan(&self, _state: &dyn Session, conf: FileScanConfig) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(DataSourceExec::from_data_source(conf))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(BamSource { split: self.options.split, ..BamSource::new(table_schema) })
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
}

impl BamSource {
    pub fn new(table_schema: TableSchema) -> Self {
        Self {
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            batch_size: 8192,
            metrics: ExecutionPlanMetricsSet::new(),
            split: true,
        }
    }
}

impl fmt::Debug for BamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BamSource").field("projection", &self.projection.file_indices).finish()
    }
}

impl FileSource for BamSource {
    fn create_file_opener(&self, store: Arc<dyn ObjectStore>, _config: &FileScanConfig, _partition: usize) -> Result<Arc<dyn FileOpener>> {
        let file_schema = Arc::clone(self.table_schema.file_schema());
        let opener = Arc::new(BamOpener {
            store,
            layout: Arc::new(layout_of(&file_schema)?),
            file_schema: Arc::clone(&file_schema),
            projection: self.projection.file_indices.clone(),
            batch_size: self.batch_size,
        });
        ProjectionOpener::try_new(self.projection.clone(), opener, &file_schema)
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

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        BAM_EXTENSION
    }

    /// Files are split into byte ranges (see [`crate::partition`]) unless option `split` is off.
    fn supports_repartitioning(&self) -> bool {
        self.split
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
                write!(f, ", decoded_columns=[{}]", names.join(", "))
            }
            DisplayFormatType::TreeRender => Ok(()),
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn datafusion::physical_plan::PhysicalExpr>) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), f)
    }
}

struct BamOpener {
    store: Arc<dyn ObjectStore>,
    file_schema: SchemaRef,
    layout: Arc<TagLayout>,
    projection: Vec<usize>,
    batch_size: usize,
}

impl FileOpener for BamOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let store = Arc::clone(&self.store);
        let schema = Arc::clone(&self.file_schema);
        let layout = Arc::clone(&self.layout);
        let projection = self.projection.clone();
        let batch_size = self.batch_size;
        Ok(Box::pin(async move {
            let meta = file.object_meta.clone();
            let (start, end) = match &file.range {
                Some(r) => (r.start as u64, (r.end as u64).min(meta.size)),
                None => (0, meta.size),
            };
            // Only the range holding the file's end checks for the BGZF end-of-file block.
            if end >= meta.size {
                check_eof_marker(&store, &meta).await?;
            }
            let bytes = ObjectBytes { store, location: meta.location.clone(), size: meta.size, handle: tokio::runtime::Handle::current() };
            let stream = blocking_stream(move || {
                let scan = RangeScan { bytes, path: meta.location.to_string(), start, end, schema, projection, layout, batch_size };
                scan.batches()
            });
            Ok(stream.boxed())
        }))
    }
}

/// The decoding of one byte range of one file, run on a blocking thread.
struct RangeScan {
    bytes: ObjectBytes,
    path: String,
    start: u64,
    end: u64,
    schema: SchemaRef,
    projection: Vec<usize>,
    layout: Arc<TagLayout>,
    batch_size: usize,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

impl RangeScan {
    fn batches(self) -> Result<Batches> {
        let path = self.path.as_str();
        let mut head = bgzf_reader(path, self.bytes.open_at(0)?)?;
        let header = read_header(path, &mut head)?;
        let file = Arc::new(header.file);
        let whole_file = self.start == 0 && self.end >= self.bytes.size;
        let successor_check = (!whole_file && self.end < self.bytes.size).then(|| {
            let (bytes, file, path, end) = (self.bytes.clone(), Arc::clone(&file), self.path.clone(), self.end);
            Box::new(move |stop: Option<VirtualPosition>| check_successor(&bytes, &file, &path, end, stop)) as SuccessorCheck
        });
        let extent = |base| Extent { base, end: (!whole_file).then_some(self.end), successor_check };
        if self.start == 0 {
            let reader = BatchReader::new(path, head, extent(0), &file, &self.schema, &self.projection, &self.layout, self.batch_size)?;
            return Ok(Box::new(reader));
        }
        // A range starting mid-file: its first record is the first one starting in a block at
        // or after `start`; the range before verifies that guess when it reaches it.
        let first = find_first_record(self.bytes.open_at(self.start)?, self.start, self.bytes.size, &file)
            .map_err(|e| DataFusionError::Execution(format!("BAM file {path}: cannot find the first record after byte {}: {e}", self.start)))?;
        let Some(first) = first.filter(|v| v.compressed() < self.end) else {
            // No record starts in this range; the successor check still runs for the next one.
            let check = extent(0).successor_check;
            if let Some(check) = check {
                check(first)?;
            }
            return Ok(Box::new(std::iter::empty()));
        };
        let mut reader = noodles_bgzf::io::Reader::new(self.bytes.open_at(first.compressed())?);
        let mut skip = vec![0u8; usize::from(first.uncompressed())];
        std::io::Read::read_exact(&mut reader, &mut skip)
            .map_err(|e| DataFusionError::Execution(format!("BAM file {path}: cannot reach the record at {first:?}: {e}")))?;
        let reader = BatchReader::new(path, reader, extent(first.compressed()), &file, &self.schema, &self.projection, &self.layout, self.batch_size)?;
        Ok(Box::new(reader))
    }
}

/// The range ending at `end` stopped at `stop` (the next record, or `None` at the end of the
/// file); the range starting at `end` guesses its first record independently. They must agree.
fn check_successor(bytes: &ObjectBytes, file: &FileContext, path: &str, end: u64, stop: Option<VirtualPosition>) -> Result<()> {
    let guess = find_first_record(bytes.open_at(end)?, end, bytes.size, file)
        .map_err(|e| DataFusionError::Execution(format!("BAM file {path}: cannot find the first record after byte {end}: {e}")))?;
    if guess == stop {
        return Ok(());
    }
    let show = |v: Option<VirtualPosition>| v.map_or("the end of the file".to_string(), |v| format!("virtual offset {}:{}", v.compressed(), v.uncompressed()));
    Err(DataFusionError::Execution(format!(
        "BAM file {path}: the partition boundary at byte {end} was misplaced: reading on from the previous partition reaches {}, \
         but the record search from byte {end} chose {}. Disable splitting for this table (OPTIONS ('split' 'false')) and report the file.",
        show(stop),
        show(guess)
    )))
}

/// A BAM file ends with the 28-byte BGZF EOF block. Without it the file was cut short at a block
/// boundary, and reading it would silently return only part of the records.
async fn check_eof_marker(store: &Arc<dyn ObjectStore>, meta: &ObjectMeta) -> Result<()> {
    let path = &meta.location;
    let size = meta.size;
    if size < BGZF_EOF.len() as u64 {
        return Err(DataFusionError::Execution(format!(
            "BAM file {path}: {size} bytes is too short to be a BAM file (no BGZF end-of-file block)"
        )));
    }
    let tail = store
        .get_range(path, size - BGZF_EOF.len() as u64..size)
        .await
        .map_err(|e| DataFusionError::Execution(format!("cannot read BAM file {path}: {e}")))?;
    if tail.as_ref() != BGZF_EOF {
        return Err(DataFusionError::Execution(format!(
            "BAM file {path}: the BGZF end-of-file block is missing at byte {}: the file is truncated or not a BAM file",
            size - BGZF_EOF.len() as u64
        )));
    }
    Ok(())
}

//! The DataFusion glue: `STORED AS BAM` through [`BamFormatFactory`], a [`FileFormat`] for
//! listing tables, and the [`FileSource`]/[`FileOpener`] pair that decodes each file.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{plan_err, GetExt, Result, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::write::get_writer_schema;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSinkConfig, FileSource};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::LexRequirement;
use datafusion::physical_plan::ExecutionPlan;
use noodles_bgzf::io::writer::CompressionLevel;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::datasource::source::BamSource;
use crate::decode::pushdown::region_predicate;
use crate::error::BamError;
use crate::formats::catalog::Catalog;
use crate::formats::cram::container::Reference;
use crate::formats::{
    check_regions, indexed_record_count, infer_layout, load_planning_facts, output_kind, read_sam_header, OutputKind,
};
use crate::io::store::object_store_for;
use crate::options::{AlignmentFormat, BamOptions, OutputIndex};
use crate::schema::{bam_schema, TagLayout, SAM_TYPE_KEY};
use crate::write::encode::RecordEncoder;
use crate::write::sink::{is_coordinate_order, output_header, BamSink};

/// Creates [`BamFormat`]s for `CREATE EXTERNAL TABLE ... STORED AS BAM OPTIONS (...)`.
#[derive(Debug, Default)]
pub struct BamFormatFactory {
    options: BamOptions,
}

impl BamFormatFactory {
    pub fn new(options: BamOptions) -> Self {
        Self { options }
    }

    pub fn options(&self) -> &BamOptions {
        &self.options
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

/// Alignment files (BAM, CRAM or SAM, by [`BamOptions::format`]) as a DataFusion
/// [`FileFormat`].
#[derive(Debug, Default, Clone)]
pub struct BamFormat {
    options: BamOptions,
    /// The URL of the store of the files, when known: DataFusion's schema and statistics
    /// inference passes the store but not its URL, which messages need to name files as their
    /// users wrote them.
    store_url: Option<ObjectStoreUrl>,
}

impl BamFormat {
    pub fn new(options: BamOptions) -> Self {
        Self { options, store_url: None }
    }

    /// This format for files of the store at `url`.
    pub fn with_store_url(self, url: ObjectStoreUrl) -> Self {
        Self { store_url: Some(url), ..self }
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
            let what =
                "extra compression of alignment files (BAM, CRAM and .sam.gz are compressed already)".to_string();
            return Err(BamError::Unsupported { what }.into());
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
        check_regions(store, objects, &self.options.regions).await?;
        let layout = infer_layout(store, self.store_url.as_ref(), objects, &self.options).await?;
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
        if !self.options.regions.is_empty() {
            return Ok(unknown);
        }
        let catalog = Catalog::of(state.runtime_env());
        let url = self.store_url.as_ref();
        let count = indexed_record_count(self.options.format, &catalog, store, url, object).await?;
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
        let catalog = Catalog::of(state.runtime_env());
        load_planning_facts(self.options.format, &catalog, &store, &conf.object_store_url, metas.clone()).await?;
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
            let what = "overwriting a BAM output: it is written by COPY or appended to".to_string();
            return Err(BamError::Unsupported { what }.into());
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
        let header = output_header(source, coordinate_sorted);
        let level = CompressionLevel::new(self.options.compression_level).ok_or_else(|| {
            DataFusionError::Plan(format!("invalid compression_level {}", self.options.compression_level))
        })?;
        // The files' columns: without `PARTITIONED BY` columns, which DataFusion takes out.
        let kind = output_kind(self.options.format, &conf.original_url);
        match (kind, self.options.index) {
            (_, OutputIndex::None) | (OutputKind::Bam, OutputIndex::Bai | OutputIndex::Csi) => {}
            // The `.crai` is built from the written file on disk (`write::cram::crai`).
            (OutputKind::Cram, OutputIndex::Crai) if conf.object_store_url.as_str() == "file:///" => {}
            (OutputKind::Cram, OutputIndex::Crai) => {
                let what = "index 'crai' of a remote CRAM output (write it locally, or run samtools index)";
                return Err(BamError::Unsupported { what: what.to_string() }.into());
            }
            (_, index) => {
                let what = format!(
                    "option index {index:?} for a {} output (BAM outputs take bai and csi, CRAM outputs crai)",
                    self.options.format.name()
                );
                return Err(BamError::Unsupported { what }.into());
            }
        }
        let reference = match kind {
            OutputKind::Cram => Reference::open(self.options.reference.as_deref())?,
            _ => Reference::default(),
        };
        let schema = get_writer_schema(&conf);
        let hints = self.tag_hints(state, &schema).await?;
        let encoder = RecordEncoder::try_new(&schema, Arc::new(header), level, &hints)?.with_kind(kind);
        let sink = BamSink::new(conf, encoder, self.options.index, reference);
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
    /// The tag types of option `header`'s file, sampled as a table samples them, when some
    /// `tags` field of `schema` has no `sam_type` metadata (rows from polars, or a struct built in
    /// SQL) and so needs them; else none.
    async fn tag_hints(&self, state: &dyn Session, schema: &Schema) -> Result<TagLayout> {
        let untyped = match schema.field_with_name("tags").map(|f| f.data_type()) {
            Ok(DataType::Struct(fields)) => fields.iter().any(|f| !f.metadata().contains_key(SAM_TYPE_KEY)),
            _ => false,
        };
        let Some(location) = self.options.header.as_ref().filter(|_| untyped) else {
            return Ok(TagLayout::default());
        };
        let url = ListingTableUrl::parse(location)?;
        let store = object_store_for(state.runtime_env(), &url, &HashMap::new()).await?;
        let object = store.head(url.prefix()).await.map_err(|e| BamError::store(location, e))?;
        let options = BamOptions::default().with_format(AlignmentFormat::of_path(location));
        infer_layout(&store, None, &[object], &options).await
    }

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
        files_read(input, &mut files);
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

/// The alignment files (of any format) the scans of `plan` read, in plan order.
fn files_read(plan: &Arc<dyn ExecutionPlan>, files: &mut Vec<(ObjectStoreUrl, ObjectMeta)>) {
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
        files_read(child, files);
    }
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

//! The [`FileOpener`]: one byte range of one file, decoded into batches by its format's record
//! source on a blocking thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::StreamExt;
use object_store::ObjectStore;

use crate::bgzf::framing::FileContext;
use crate::datasource::source::BamSource;
use crate::decode::pushdown::Prefilter;
use crate::decode::reader::{DecodeSpec, ScanMetrics};
use crate::formats::{read_range, RangeScan};
use crate::io::{blocking_stream, progress, ObjectBytes};
use crate::schema::TagLayout;

pub(super) struct BamOpener {
    /// The scan's settings: schema, projection, predicate, regions, options, catalog.
    pub(super) source: Arc<BamSource>,
    pub(super) store: Arc<dyn ObjectStore>,
    /// The store's URL, so that messages name files as their users wrote them.
    pub(super) store_url: ObjectStoreUrl,
    /// The tag layout of the source's file schema, derived once per partition.
    pub(super) layout: Arc<TagLayout>,
    pub(super) metrics: ScanMetrics,
}

impl FileOpener for BamOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let source = Arc::clone(&self.source);
        let store = Arc::clone(&self.store);
        let store_url = self.store_url.clone();
        let layout = Arc::clone(&self.layout);
        let metrics = self.metrics.clone();
        if !source.progress_counted.swap(true, Ordering::AcqRel) {
            progress::add_expected(source.expected_bytes(), source.tally.as_deref());
        }
        Ok(Box::pin(async move {
            let meta = file.object_meta.clone();
            let (start, end) = match &file.range {
                Some(r) => (r.start as u64, (r.end as u64).min(meta.size)),
                None => (0, meta.size),
            };
            let bytes = ObjectBytes::new(&store, Some(&store_url), &meta, tokio::runtime::Handle::current());
            let stream = blocking_stream(move || {
                let path = bytes.shown.clone();
                let schema = source.table_schema.file_schema();
                let spec = DecodeSpec {
                    table_schema: schema,
                    projection: &source.projection.file_indices,
                    layout: &layout,
                    batch_size: source.batch_size,
                    skip_damaged: source.options.skip_damaged,
                };
                let prefilter = |context: &FileContext| {
                    source.predicate.as_ref().map(|p| Prefilter::new(p, schema, &layout, context)).transpose()
                };
                let format = source.options.format;
                let name = format!("{} scan of {path}", format.name());
                let scan = RangeScan {
                    bytes,
                    meta: &meta,
                    range: (start, end),
                    regions: source.regions.as_ref(),
                    catalog: &source.catalog,
                    reference: &|| source.reference(),
                    spec,
                    prefilter: &prefilter,
                    metrics,
                    memory: source.memory_pool.as_ref().map(|pool| MemoryConsumer::new(name).register(pool)),
                    tally: source.tally.clone(),
                };
                read_range(format, scan)
            });
            Ok(stream.boxed())
        }))
    }
}

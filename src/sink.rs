//! `COPY ... TO 'x.bam' STORED AS BAM`: DataFusion's file sink for BAM outputs.
//!
//! DataFusion splits the rows into output files (one, or one per `PARTITIONED BY` value); each
//! file gets the header, then its batches encoded and compressed in parallel (in order), then the
//! BGZF end-of-file marker. A file is written through object_store's multipart upload and
//! completed only when all of it is written: a failed COPY leaves no output behind, and the files
//! a failed partitioned COPY had completed are deleted.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::file_format::write::demux::DemuxedStreamReceiver;
use datafusion::datasource::physical_plan::{FileSink, FileSinkConfig};
use datafusion::datasource::sink::DataSink;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, SendableRecordBatchStream};
use futures::StreamExt;
use noodles_sam as sam;
use noodles_sam::header::record::value::map::header::{sort_order, tag as header_tag, Version};
use noodles_sam::header::record::value::map::program::tag as program_tag;
use noodles_sam::header::record::value::{map, Map};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::encode::RecordEncoder;
use crate::framing::BGZF_EOF;

/// The `@PG` name (and ID prefix) of this tool.
const PROGRAM: &str = "datafusion-bam";

/// Writes rows as BAM files.
#[derive(Debug)]
pub struct BamSink {
    config: FileSinkConfig,
    encoder: Arc<RecordEncoder>,
}

impl BamSink {
    pub fn new(config: FileSinkConfig, encoder: RecordEncoder) -> Self {
        Self { config, encoder: Arc::new(encoder) }
    }
}

impl DisplayAs for BamSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BamSink(output={})", self.config.original_url)
    }
}

#[async_trait]
impl DataSink for BamSink {
    fn schema(&self) -> &SchemaRef {
        self.config.output_schema()
    }

    async fn write_all(&self, data: SendableRecordBatchStream, context: &Arc<TaskContext>) -> Result<u64> {
        FileSink::write_all(self, data, context).await
    }
}

#[async_trait]
impl FileSink for BamSink {
    fn config(&self) -> &FileSinkConfig {
        &self.config
    }

    async fn spawn_writer_tasks_and_join(
        &self,
        context: &Arc<TaskContext>,
        demux_task: SpawnedTask<Result<()>>,
        mut file_stream_rx: DemuxedStreamReceiver,
        object_store: Arc<dyn ObjectStore>,
    ) -> Result<u64> {
        let options = context.session_config().options();
        let buffer_size = options.execution.objectstore_writer_buffer_size;
        // Batches in flight per file: enough to keep every core compressing.
        let parallelism = options.execution.target_partitions.max(1) + 1;
        let mut writers = JoinSet::new();
        while let Some((path, batches)) = file_stream_rx.recv().await {
            let file = OutputFile { store: Arc::clone(&object_store), path, buffer_size };
            writers.spawn(file.write(Arc::clone(&self.encoder), batches, parallelism));
        }
        let demuxed = demux_task.join_unwind().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?;
        let mut written = Vec::new();
        let mut rows = 0;
        let mut failure = None;
        while let Some(joined) = writers.join_next().await {
            match joined.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e))).and_then(|r| r) {
                Ok((path, n)) => {
                    written.push(path);
                    rows += n;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        // A writer's error first: the demultiplexer fails only because a writer stopped reading.
        match failure.or(demuxed.err()) {
            None => Ok(rows),
            Some(e) => {
                // A partitioned COPY that failed leaves none of its files.
                for path in written {
                    if let Err(removal) = object_store.delete(&path).await {
                        log::warn!("BAM output {path} of a failed COPY could not be removed: {removal}");
                    }
                }
                Err(e)
            }
        }
    }
}

/// One output file.
struct OutputFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    buffer_size: usize,
}

impl OutputFile {
    /// Writes the header, the batches and the end-of-file marker; aborts the upload on failure.
    async fn write(
        self,
        encoder: Arc<RecordEncoder>,
        batches: tokio::sync::mpsc::Receiver<arrow::array::RecordBatch>,
        parallelism: usize,
    ) -> Result<(Path, u64)> {
        let name = self.path.to_string();
        let mut out = BufWriter::with_capacity(Arc::clone(&self.store), self.path.clone(), self.buffer_size);
        let written = async {
            out.write_all(&encoder.header_blocks(&name)?).await?;
            let mut first_row = 0u64;
            let mut encoded = tokio_stream_of(batches)
                .map(|batch| {
                    let (encoder, name, start) = (Arc::clone(&encoder), name.clone(), first_row);
                    first_row += batch.num_rows() as u64;
                    let rows = batch.num_rows() as u64;
                    SpawnedTask::spawn_blocking(move || encoder.encode(&name, &batch, start).map(|b| (rows, b)))
                })
                .buffered(parallelism);
            let mut rows = 0;
            while let Some(joined) = encoded.next().await {
                let (n, blocks) = joined.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
                out.write_all(&blocks).await?;
                rows += n;
            }
            out.write_all(&BGZF_EOF).await?;
            out.shutdown().await?;
            Ok::<_, DataFusionError>(rows)
        }
        .await;
        match written {
            Ok(rows) => Ok((self.path, rows)),
            Err(e) => {
                if let Err(abort) = out.abort().await {
                    log::warn!("BAM output {name}: aborting the upload failed: {abort}");
                }
                Err(e)
            }
        }
    }
}

/// The batches of a demuxed file as a stream.
fn tokio_stream_of(
    mut batches: tokio::sync::mpsc::Receiver<arrow::array::RecordBatch>,
) -> impl futures::Stream<Item = arrow::array::RecordBatch> {
    futures::stream::poll_fn(move |cx| batches.poll_recv(cx))
}

/// The output's header: `source`'s, with `SO` saying whether the rows come in coordinate order
/// (else `unsorted`: DataFusion's partitions interleave) and an `@PG` line for this tool, chained
/// after the source's last programs as samtools does.
pub fn output_header(mut header: sam::Header, coordinate_sorted: bool) -> Result<sam::Header> {
    let hd = header.header_mut().get_or_insert_with(|| Map::<map::Header>::new(Version::new(1, 6)));
    let fields = hd.other_fields_mut();
    let order = if coordinate_sorted { sort_order::COORDINATE } else { sort_order::UNSORTED };
    fields.insert(header_tag::SORT_ORDER, order.into());
    // A grouping or sub-sort order of the source no longer holds.
    fields.shift_remove(&header_tag::GROUP_ORDER);
    fields.shift_remove(&header_tag::SUBSORT_ORDER);
    let mut program = Map::<map::Program>::default();
    program.other_fields_mut().insert(program_tag::NAME, PROGRAM.into());
    program.other_fields_mut().insert(program_tag::VERSION, env!("CARGO_PKG_VERSION").into());
    header
        .programs_mut()
        .add(PROGRAM, program)
        .map_err(|e| DataFusionError::Plan(format!("cannot add an @PG line to the output's header: {e}")))?;
    Ok(header)
}

/// Whether rows ordered by `ordering` are in BAM's coordinate order for `header`: by `rname` then
/// `pos`, ascending, unplaced reads last, and the header's reference names in text order (so
/// that ordering by name is ordering by reference id).
pub fn is_coordinate_order(ordering: &LexOrdering, schema: &Schema, header: &sam::Header) -> bool {
    let column = |i: usize| {
        let sort = ordering.get(i)?;
        let column = sort.expr.downcast_ref::<Column>()?;
        Some((schema.field(column.index()).name().as_str(), sort.options))
    };
    let by_name_then_position = matches!(
        (column(0), column(1)),
        (Some(("rname", rname)), Some(("pos", pos)))
            if !rname.descending && !rname.nulls_first && !pos.descending
    );
    let names: Vec<&[u8]> = header.reference_sequences().keys().map(|k| k.as_ref()).collect();
    by_name_then_position && names.windows(2).all(|w| w[0] < w[1])
}

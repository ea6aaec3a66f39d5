//! `COPY ... TO 'x.bam' STORED AS BAM`: DataFusion's file sink for BAM outputs.
//!
//! DataFusion splits the rows into output files (one, or one per `PARTITIONED BY` value); each
//! file gets the header, then its batches encoded and compressed in parallel (in order), then the
//! BGZF end-of-file marker. A file is written through object_store's buffered writer (one put,
//! or a multipart upload) and completed only when all of it is written: a failed COPY leaves no
//! output behind, and the files a failed partitioned COPY had completed are deleted.

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
use noodles_bam::index::{Format as IndexFormat, Indexer};
use noodles_bgzf::VirtualPosition;
use noodles_core::Position;
use noodles_csi::binning_index::index::reference_sequence::bin::Chunk;
use noodles_sam as sam;
use noodles_sam::header::record::value::map::header::{sort_order, tag as header_tag, Version};
use noodles_sam::header::record::value::map::program::tag as program_tag;
use noodles_sam::header::record::value::{map, Map};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::bgzf::framing::BGZF_EOF;
use crate::formats::cram::container::{catch_decode_panic, Reference};
use crate::formats::OutputKind;
use crate::options::OutputIndex;
use crate::write::cram::{crai, write_cram};
use crate::write::encode::{EncodedBatch, RecordEncoder};
use crate::write::record::AlignmentContext;

/// The `@PG` name (and ID prefix) of this tool.
const PROGRAM: &str = "datafusion-bam";

/// Writes rows as BAM, SAM or CRAM files, as the encoder's [`OutputKind`] says.
#[derive(Debug)]
pub struct BamSink {
    config: FileSinkConfig,
    encoder: Arc<RecordEncoder>,
    index: OutputIndex,
    /// The reference a CRAM output is compressed against.
    reference: Reference,
}

impl BamSink {
    /// A sink writing `encoder`'s records, and `index` beside each file (its rows must then come
    /// in coordinate order).
    pub fn new(config: FileSinkConfig, encoder: RecordEncoder, index: OutputIndex, reference: Reference) -> Self {
        // BAM indexes are built from each record's place as it is written; a `.crai` from the file.
        let encoder = match index {
            OutputIndex::Bai | OutputIndex::Csi => encoder.with_placements(),
            OutputIndex::None | OutputIndex::Crai => encoder,
        };
        Self { config, encoder: Arc::new(encoder), index, reference }
    }

    pub fn encoder(&self) -> &RecordEncoder {
        &self.encoder
    }

    pub fn index(&self) -> OutputIndex {
        self.index
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
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
            let file = OutputFile {
                store: Arc::clone(&object_store),
                shown: shown_location(self.config.object_store_url.as_str(), &path),
                path,
                buffer_size,
                index: self.index,
                reference: self.reference.clone(),
            };
            writers.spawn(file.write(Arc::clone(&self.encoder), batches, parallelism));
        }
        let demuxed = demux_task.join_unwind().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?;
        let mut written = Vec::new();
        let mut rows = 0;
        let mut failure = None;
        while let Some(joined) = writers.join_next().await {
            match joined.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e))).and_then(|r| r) {
                Ok((paths, n)) => {
                    written.extend(paths);
                    rows += n;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        // A writer's error first: when one fails, the demultiplexer fails too, for it can no
        // longer send; the demultiplexer's error alone is the input's.
        match failure.or(demuxed.err()) {
            None => Ok(rows),
            Some(e) => {
                // A partitioned COPY that failed leaves none of its files.
                for path in written {
                    if let Err(removal) = object_store.delete(&path).await {
                        log::warn!("output {path} of a failed COPY could not be removed: {removal}");
                    }
                }
                Err(e)
            }
        }
    }
}

/// An output's location as users name it: a local path (object_store's paths have no leading
/// `/`), or the store's URL and the path.
fn shown_location(store_url: &str, path: &Path) -> String {
    match store_url {
        "file:///" => format!("/{path}"),
        url => format!("{}/{path}", url.trim_end_matches('/')),
    }
}

/// One output file.
struct OutputFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// Where the file is, for messages.
    shown: String,
    buffer_size: usize,
    index: OutputIndex,
    reference: Reference,
}

impl OutputFile {
    /// Writes the header, the batches and the end-of-file marker, then the index if asked;
    /// aborts the upload on failure. Returns the files written (the BAM file, its index) and the
    /// records.
    async fn write(
        self,
        encoder: Arc<RecordEncoder>,
        batches: tokio::sync::mpsc::Receiver<arrow::array::RecordBatch>,
        parallelism: usize,
    ) -> Result<(Vec<Path>, u64)> {
        let name = self.shown.clone();
        let mut out = BufWriter::with_capacity(Arc::clone(&self.store), self.path.clone(), self.buffer_size);
        let written = async {
            let header = encoder.header_blocks(&name)?;
            let mut offset = header.len() as u64;
            let mut indexer = match self.index {
                OutputIndex::None | OutputIndex::Crai => None,
                format => Some(OutputIndexer::new(format, encoder.header(), offset)?),
            };
            out.write_all(&header).await?;
            let mut first_row = 0u64;
            let mut encoded = tokio_stream_of(batches)
                .map(|batch| {
                    let (encoder, name, start) = (Arc::clone(&encoder), name.clone(), first_row);
                    first_row += batch.num_rows() as u64;
                    SpawnedTask::spawn_blocking(move || encoder.encode(&name, &batch, start))
                })
                .buffered(parallelism);
            let mut rows = 0;
            if encoder.kind() == OutputKind::Cram {
                rows = self.write_cram(&encoder, &mut encoded, &mut out).await?;
            }
            while let Some(joined) = encoded.next().await {
                let batch = joined.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
                if let Some(indexer) = &mut indexer {
                    indexer
                        .add(offset, &batch.placements)
                        .map_err(|e| DataFusionError::Execution(format!("BAM output {name}: cannot index it: {e}")))?;
                }
                out.write_all(&batch.blocks).await?;
                offset += batch.blocks.len() as u64;
                rows += batch.rows;
            }
            let index = indexer.map(|i| i.finish(encoder.header())).transpose()?;
            if matches!(encoder.kind(), OutputKind::Bam | OutputKind::Sam { bgzf: true }) {
                out.write_all(&BGZF_EOF).await?;
            }
            out.shutdown().await?;
            Ok::<_, DataFusionError>((rows, index))
        }
        .await;
        // A `.crai` is read from the complete file; if it cannot be made, the file goes too.
        let written = match (written, self.index) {
            (Ok((rows, _)), OutputIndex::Crai) => match self.crai().await {
                Ok(bytes) => Ok((rows, Some(("crai", bytes)))),
                Err(e) => {
                    let _ = self.store.delete(&self.path).await;
                    return Err(e);
                }
            },
            (written, _) => written,
        };
        match written {
            Ok((rows, None)) => Ok((vec![self.path], rows)),
            Ok((rows, Some((extension, bytes)))) => {
                // Written after the file, so that it is the newer of the two, as readers expect.
                let index_path = Path::from(format!("{}.{extension}", self.path));
                if let Err(e) = self.store.put(&index_path, bytes.into()).await {
                    let _ = self.store.delete(&self.path).await;
                    return Err(DataFusionError::Execution(format!("output {name}: cannot write its index: {e}")));
                }
                Ok((vec![self.path, index_path], rows))
            }
            Err(e) => {
                if let Err(abort) = out.abort().await {
                    log::warn!("output {name}: aborting the upload failed: {abort}");
                }
                Err(e)
            }
        }
    }

    /// The `.crai` of this CRAM file, complete on the local disk.
    async fn crai(&self) -> Result<Vec<u8>> {
        let local = std::path::PathBuf::from(format!("/{}", self.path));
        let (name, reference) = (self.shown.clone(), self.reference.clone());
        SpawnedTask::spawn_blocking(move || {
            catch_decode_panic(|| crai(&local, &reference))
                .unwrap_or_else(|panicked| Err(std::io::Error::other(panicked)))
        })
        .join_unwind()
        .await
        .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?
        .map_err(|e| DataFusionError::Execution(format!("CRAM output {name}: cannot index it: {e}")))
    }

    /// Feeds the encoded batches, in order, to the file's one CRAM writer (on a blocking thread)
    /// and writes its bytes to `out` as they come; returns the records written.
    async fn write_cram<S>(&self, encoder: &RecordEncoder, encoded: &mut S, out: &mut BufWriter) -> Result<u64>
    where
        S: futures::Stream<Item = std::result::Result<Result<EncodedBatch>, tokio::task::JoinError>> + Unpin,
    {
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let (name, header, reference) = (self.shown.clone(), encoder.header().clone(), self.reference.clone());
        let writer = SpawnedTask::spawn_blocking(move || write_cram(&name, &header, &reference, batch_rx, chunk_tx));
        let feed = async move {
            let mut rows = 0;
            while let Some(joined) = encoded.next().await {
                let batch = joined.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
                rows += batch.rows;
                // A closed channel: the writer stopped, and says why when joined.
                if batch_tx.send(batch.blocks).await.is_err() {
                    break;
                }
            }
            Ok::<_, DataFusionError>(rows)
        };
        let drain = async {
            while let Some(chunk) = chunk_rx.recv().await {
                out.write_all(&chunk).await?;
            }
            Ok::<_, DataFusionError>(())
        };
        let (rows, ()) = tokio::try_join!(feed, drain)?;
        writer.join_unwind().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
        Ok(rows)
    }
}

/// The index of an output, built as its batches are written, as noodles' `bam::fs::index` builds
/// one from a file.
struct OutputIndexer {
    format: OutputIndex,
    indexer: Indexer,
    /// Where the next record starts.
    next: VirtualPosition,
}

impl OutputIndexer {
    /// An indexer whose first record starts at compressed byte `records_start`.
    fn new(format: OutputIndex, header: &sam::Header, records_start: u64) -> Result<Self> {
        let longest = header.reference_sequences().values().map(|r| usize::from(r.length())).max().unwrap_or(1);
        let builder = Indexer::builder().set_format(match format {
            OutputIndex::Csi => IndexFormat::Csi,
            _ => IndexFormat::Bai,
        });
        let builder = match Position::new(longest) {
            Some(max) => builder.set_max_position_hint(max),
            None => builder,
        };
        let indexer = builder.build().map_err(|e| {
            DataFusionError::Plan(format!(
                "cannot index the output: {e} (a reference of {longest} bases needs option index 'csi')"
            ))
        })?;
        Ok(Self { format, indexer, next: virtual_position(records_start, 0)? })
    }

    /// Adds the records of a batch whose blocks start at compressed byte `offset`.
    fn add(&mut self, offset: u64, placements: &[(AlignmentContext, VirtualPosition)]) -> Result<()> {
        for (context, end) in placements {
            let end = virtual_position(offset + end.compressed(), end.uncompressed())?;
            self.indexer
                .add_record(*context, Chunk::new(self.next, end))
                .map_err(|e| DataFusionError::Execution(format!("{e}: its rows are not in coordinate order")))?;
            self.next = end;
        }
        Ok(())
    }

    /// The index file's extension and bytes.
    fn finish(self, header: &sam::Header) -> Result<(&'static str, Vec<u8>)> {
        let references = header.reference_sequences().len();
        let failed = |e: std::io::Error| DataFusionError::Execution(format!("cannot write the index: {e}"));
        match (self.format, self.indexer.build(references)) {
            (OutputIndex::Csi, noodles_bam::Index::Csi(index)) => {
                let mut writer = noodles_csi::io::Writer::new(Vec::new());
                writer.write_index(&index).map_err(failed)?;
                Ok(("csi", writer.into_inner().finish().map_err(failed)?))
            }
            (_, noodles_bam::Index::Bai(index)) => {
                let mut writer = noodles_bam::bai::io::Writer::new(Vec::new());
                writer.write_index(&index).map_err(failed)?;
                Ok(("bai", writer.into_inner()))
            }
            (_, noodles_bam::Index::Csi(_)) => {
                Err(DataFusionError::Internal("noodles built a CSI index where a BAI was asked for".into()))
            }
        }
    }
}

fn virtual_position(compressed: u64, uncompressed: u16) -> Result<VirtualPosition> {
    VirtualPosition::try_from((compressed, uncompressed))
        .map_err(|e| DataFusionError::Execution(format!("output too large for BAM virtual positions: {e}")))
}

/// The batches of a demuxed file as a stream.
fn tokio_stream_of(
    mut batches: tokio::sync::mpsc::Receiver<arrow::array::RecordBatch>,
) -> impl futures::Stream<Item = arrow::array::RecordBatch> {
    futures::stream::poll_fn(move |cx| batches.poll_recv(cx))
}

/// The output's header: `source`'s (its `@CO` lines too), with `SO` saying whether the rows come
/// in coordinate order (else `unsorted`: DataFusion's partitions interleave) and an `@PG` line for
/// this tool, chained after the source's last one as samtools does.
pub fn output_header(mut header: sam::Header, coordinate_sorted: bool) -> sam::Header {
    let hd = header.header_mut().get_or_insert_with(|| Map::<map::Header>::new(Version::new(1, 6)));
    let fields = hd.other_fields_mut();
    let order = if coordinate_sorted { sort_order::COORDINATE } else { sort_order::UNSORTED };
    fields.insert(header_tag::SORT_ORDER, order.into());
    // A grouping or sub-sort order of the source no longer holds.
    fields.shift_remove(&header_tag::GROUP_ORDER);
    fields.shift_remove(&header_tag::SUBSORT_ORDER);
    // One line, as samtools adds it: after the header's last @PG line (`PP`), with an ID made
    // unique by a number (`datafusion-bam.1`) when the source already has one.
    let programs = header.programs_mut().as_mut();
    let mut program = Map::<map::Program>::default();
    let fields = program.other_fields_mut();
    fields.insert(program_tag::NAME, PROGRAM.into());
    if let Some(last) = programs.keys().last() {
        fields.insert(program_tag::PREVIOUS_PROGRAM_ID, last.clone());
    }
    fields.insert(program_tag::VERSION, env!("CARGO_PKG_VERSION").into());
    let id = std::iter::once(PROGRAM.to_string())
        .chain((1..).map(|n| format!("{PROGRAM}.{n}")))
        .find(|id| !programs.contains_key(id.as_bytes()))
        .expect("some numbered ID is free");
    programs.insert(id.into(), program);
    header
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

//! Reading records into Arrow batches: the batch reader over any [`RecordSource`], and the
//! records of a BAM byte stream.
//!
//! BGZF inflation (libdeflate, CRC-checked) and header parsing are noodles'. This module frames
//! records by their `block_size`, hands them to the [`BatchDecoder`], and turns every failure into
//! an error naming the file and the virtual offset (`compressed:uncompressed`) of the record.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, Time};

use crate::bgzf::framing::FileContext;
use crate::decode::decoder::BatchDecoder;
use crate::decode::pushdown::Prefilter;
use crate::io::progress;
use crate::io::warnings;
use crate::record::RawRecord;
use crate::schema::TagLayout;

/// A batch is emitted at `batch_size` rows or at this many record bytes, whichever comes first,
/// so batches of long reads stay bounded in memory; short reads reach `batch_size` first. A
/// smaller budget cut long reads' peak memory and time (docs/benchmarks-history.md, "Batch byte
/// budget").
pub const BATCH_BYTE_BUDGET: usize = 8 << 20;
/// Per-partition counters for `EXPLAIN ANALYZE`.
#[derive(Clone)]
pub struct ScanMetrics {
    /// Records read from the file (before the pushed-down predicate).
    pub records_read: Count,
    /// Records the pushed-down predicate rejected before full decoding.
    pub records_filtered: Count,
    /// Compressed bytes read, by block offset.
    pub compressed_bytes: Count,
    /// Distinct BGZF blocks in which records started or ended.
    pub bgzf_blocks: Count,
    /// Index chunks read (region queries on indexed files).
    pub index_chunks: Count,
    /// Time inflating blocks and framing records.
    pub inflate_time: Time,
    /// Time turning record bytes into Arrow columns, including the predicate.
    pub decode_time: Time,
    /// Bytes of the Arrow batches decoded: what the projection costs.
    pub decoded_bytes: Count,
    /// Invalid records skipped (option `skip_damaged`).
    pub damaged_records: Count,
    /// Stretches of unreadable BGZF data or record framing skipped (option `skip_damaged`).
    pub damaged_stretches: Count,
}

impl ScanMetrics {
    pub fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let count = |name: &'static str| MetricBuilder::new(set).counter(name, partition);
        let time = |name: &'static str| MetricBuilder::new(set).subset_time(name, partition);
        Self {
            records_read: count("records_read"),
            records_filtered: count("records_filtered"),
            compressed_bytes: count("compressed_bytes"),
            bgzf_blocks: count("bgzf_blocks"),
            index_chunks: count("index_chunks"),
            inflate_time: time("inflate_time"),
            decode_time: time("decode_time"),
            decoded_bytes: count("decoded_bytes"),
            damaged_records: count("damaged_records"),
            damaged_stretches: count("damaged_stretches"),
        }
    }
}

/// Record bytes read for one batch, before decoding, with where each record starts (a BGZF
/// virtual position in BAM, a container and record number in CRAM).
pub struct RawBatch<P> {
    pub data: Vec<u8>,
    pub ends: Vec<usize>,
    pub starts: Vec<P>,
}

impl<P> Default for RawBatch<P> {
    fn default() -> Self {
        Self { data: Vec::new(), ends: Vec::new(), starts: Vec::new() }
    }
}

impl<P: Copy> RawBatch<P> {
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.starts.clear();
    }

    fn records(&self) -> impl Iterator<Item = (P, &[u8])> {
        let begins = std::iter::once(0).chain(self.ends.iter().copied());
        self.starts.iter().copied().zip(begins.zip(self.ends.iter().copied()).map(|(b, e)| &self.data[b..e]))
    }
}

/// What turns a [`RawBatch`]'s records into rows: the decoder, the pushed-down predicate, and
/// option `skip_damaged`.
pub struct RawBatchDecoder {
    pub decoder: BatchDecoder,
    pub prefilter: Option<Prefilter>,
    pub skip_damaged: bool,
    pub n_ref: usize,
    pub metrics: ScanMetrics,
}

impl RawBatchDecoder {
    /// Decodes the records of `raw` that pass the prefilter; `invalid` makes the error of an
    /// invalid record at its position.
    pub fn decode<P: Copy>(
        &mut self,
        raw: &RawBatch<P>,
        invalid: impl Fn(P, crate::record::RecordError) -> DataFusionError,
    ) -> Result<()> {
        let n_ref = self.n_ref;
        // Skipping damaged records, every record is checked whole before any is decoded.
        let mut damaged = Vec::new();
        if self.skip_damaged {
            for (i, (start, bytes)) in raw.records().enumerate() {
                if let Err(e) = RawRecord::parse(bytes, n_ref).and_then(|r| BatchDecoder::check(&r)) {
                    warnings::warn(format!("{}; record skipped (option skip_damaged)", invalid(start, e)));
                    damaged.push(i);
                }
            }
            self.metrics.damaged_records.add(damaged.len());
            progress::add_damaged(damaged.len() as u64);
        }
        let sound = |i: &usize| damaged.binary_search(i).is_err();
        let keep = match &mut self.prefilter {
            None => None,
            Some(prefilter) => {
                for (_, (start, bytes)) in raw.records().enumerate().filter(|(i, _)| sound(i)) {
                    let record = RawRecord::parse(bytes, n_ref).map_err(|e| invalid(start, e))?;
                    prefilter.push(&record).map_err(|e| invalid(start, e))?;
                }
                Some(prefilter.evaluate()?)
            }
        };
        for (j, (start, bytes)) in raw.records().enumerate().filter(|(i, _)| sound(i)).map(|(_, r)| r).enumerate() {
            if keep.as_ref().is_some_and(|k| !k.value(j)) {
                self.metrics.records_filtered.add(1);
                continue;
            }
            let record = RawRecord::parse(bytes, n_ref).map_err(|e| invalid(start, e))?;
            self.decoder.push(&record).map_err(|e| invalid(start, e))?;
        }
        self.metrics.records_read.add(raw.ends.len());
        Ok(())
    }
}

/// What a [`BatchReader`] decodes.
pub struct DecodeSpec<'a> {
    pub table_schema: &'a SchemaRef,
    pub projection: &'a [usize],
    pub layout: &'a TagLayout,
    pub batch_size: usize,
    /// Option `skip_damaged`: skip and count damaged records and data instead of failing.
    pub skip_damaged: bool,
}

/// Where a scan's record bytes come from: the pieces of a BAM file ([`BamRecords`]), or the
/// containers of a CRAM file.
pub trait RecordSource: Send {
    /// Where a record starts, for messages.
    type Position: Copy;

    /// Reads records into `raw` (cleared first) until it holds `batch_size` records or
    /// [`BATCH_BYTE_BUDGET`] bytes; returns `false` once there are no more records.
    fn fill(&mut self, raw: &mut RawBatch<Self::Position>, batch_size: usize) -> Result<bool>;

    /// The error of an invalid record at `at`.
    fn invalid(&self, at: Self::Position, e: crate::record::RecordError) -> DataFusionError;

    /// Compressed bytes read since the last call, for the progress counters.
    fn bytes_read(&mut self) -> u64;
}

/// Iterates the records of a [`RecordSource`] as Arrow batches.
pub struct BatchReader<S: RecordSource> {
    source: S,
    sink: RawBatchDecoder,
    raw: RawBatch<S::Position>,
    batch_size: usize,
    done: bool,
    failed: bool,
    /// The share of the session's memory pool held for the record buffer and the last batch.
    memory: Option<MemoryReservation>,
    /// Counts this scan as running (for the CLI's progress bar) until it is dropped.
    _activity: progress::Activity,
    /// The caller's counters the records also count in, besides the process's.
    tally: Option<Arc<progress::Tally>>,
}

impl<S: RecordSource> BatchReader<S> {
    /// Decodes `spec`'s projection from the records of `source`, keeping only the records for
    /// which `prefilter`'s predicate holds.
    pub fn new(
        source: S,
        file: &Arc<FileContext>,
        spec: DecodeSpec<'_>,
        prefilter: Option<Prefilter>,
        metrics: ScanMetrics,
    ) -> Result<Self> {
        let decoder = BatchDecoder::new(spec.table_schema, spec.projection, spec.layout, file)?;
        let n_ref = file.reference_names.len();
        Ok(Self {
            source,
            sink: RawBatchDecoder { decoder, prefilter, skip_damaged: spec.skip_damaged, n_ref, metrics },
            raw: RawBatch::default(),
            batch_size: spec.batch_size.max(1),
            done: false,
            failed: false,
            memory: None,
            _activity: progress::Activity::start(),
            tally: None,
        })
    }

    /// Accounts for the reader's buffers in a memory pool, if given: a batch that does not fit is
    /// an error.
    pub fn with_memory(mut self, memory: Option<MemoryReservation>) -> Self {
        self.memory = memory;
        self
    }

    /// Counts the records in a caller's counters too.
    pub fn with_tally(mut self, tally: Option<Arc<progress::Tally>>) -> Self {
        self.tally = tally;
        self
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while !self.done && self.sink.decoder.len() < self.batch_size {
            let started = Instant::now();
            self.done = !self.source.fill(&mut self.raw, self.batch_size)?;
            self.sink.metrics.inflate_time.add_elapsed(started);
            let started = Instant::now();
            let source = &self.source;
            self.sink.decode(&self.raw, |at, e| source.invalid(at, e))?;
            self.sink.metrics.decode_time.add_elapsed(started);
            let bytes = self.source.bytes_read();
            self.sink.metrics.compressed_bytes.add(bytes as usize);
            progress::add(self.raw.ends.len() as u64, bytes, self.tally.as_deref());
            if self.raw.data.len() >= BATCH_BYTE_BUDGET {
                break;
            }
        }
        if self.sink.decoder.is_empty() {
            return Ok(None);
        }
        let batch = self.sink.decoder.finish()?;
        let size = batch.get_array_memory_size();
        self.sink.metrics.decoded_bytes.add(size);
        if let Some(memory) = &mut self.memory {
            memory.try_resize(self.raw.data.capacity() + size)?;
        }
        Ok(Some(batch))
    }
}

impl<S: RecordSource> Iterator for BatchReader<S> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.done && self.sink.decoder.is_empty() {
            return None;
        }
        match self.next_batch() {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

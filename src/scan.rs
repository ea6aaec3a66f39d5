//! Reading records into Arrow batches: the batch reader over any [`RecordSource`], and the
//! records of a BAM byte stream.
//!
//! BGZF inflation (libdeflate, CRC-checked) and header parsing are noodles'. This module frames
//! records by their `block_size`, hands them to the [`BatchDecoder`], and turns every failure into
//! an error naming the file and the virtual offset (`compressed:uncompressed`) of the record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, Time};
use noodles_bgzf as bgzf;

use crate::decode::BatchDecoder;
use crate::framing::{
    absolute, append_record_at, error_at, positions_before_record, reader_at, show_virtual, FileContext, FileReader,
};
use crate::io::ObjectBytes;
use crate::partition::{BoundaryOrigin, Piece};
use crate::progress;
use crate::pushdown::Prefilter;
use crate::record::RawRecord;
use crate::resync::find_first_record;
use crate::schema::TagLayout;
use crate::warnings;

/// A batch is emitted at `batch_size` rows or at this many record bytes, whichever comes first,
/// so batches of long reads stay bounded in memory. Short reads reach `batch_size` first (8192
/// records of 150 bp are about 3 MiB); for long reads 8 MiB rather than 32 took 0.56x the peak
/// memory and a third of the page faults, and `count(seq)` 0.82x the time (BENCHMARKS.md, "Batch
/// byte budget").
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
pub struct RecordSink {
    pub decoder: BatchDecoder,
    pub prefilter: Option<Prefilter>,
    pub skip_damaged: bool,
    pub n_ref: usize,
    pub metrics: ScanMetrics,
}

impl RecordSink {
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

/// The reader of the piece being read.
struct Current {
    reader: FileReader,
    base: u64,
    piece: Piece,
    last_block: u64,
    /// File offset up to which compressed bytes were counted.
    counted_to: u64,
    /// The block where the record being read (or looked for) starts: after damage, reading
    /// resumes at the first record found after it.
    reading_block: u64,
}

/// What reading one record did.
enum Step {
    Record,
    /// The current piece ended: `at` is the position before the next block was loaded, `next`
    /// the record start after it.
    PieceEnded {
        piece: Piece,
        at: bgzf::VirtualPosition,
        next: Option<bgzf::VirtualPosition>,
    },
    NoMorePieces,
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
    sink: RecordSink,
    raw: RawBatch<S::Position>,
    batch_size: usize,
    done: bool,
    failed: bool,
    /// The share of the session's memory pool held for the record buffer and the last batch.
    memory: Option<MemoryReservation>,
    /// Counts this scan as running (for the CLI's progress bar) until it is dropped.
    _activity: progress::Activity,
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
            sink: RecordSink { decoder, prefilter, skip_damaged: spec.skip_damaged, n_ref, metrics },
            raw: RawBatch::default(),
            batch_size: spec.batch_size.max(1),
            done: false,
            failed: false,
            memory: None,
            _activity: progress::Activity::start(),
        })
    }

    /// Accounts for the reader's buffers in a memory pool, if given: a batch that does not fit is
    /// an error.
    pub fn with_memory(mut self, memory: Option<MemoryReservation>) -> Self {
        self.memory = memory;
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
            progress::add(self.raw.ends.len() as u64, bytes);
            if self.raw.data.len() >= BATCH_BYTE_BUDGET {
                break;
            }
        }
        if self.sink.decoder.is_empty() {
            return Ok(None);
        }
        let batch = self.sink.decoder.finish()?;
        if let Some(memory) = &mut self.memory {
            memory.try_resize(self.raw.data.capacity() + batch.get_array_memory_size())?;
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

/// The records of some pieces of one BAM file.
pub struct BamRecords {
    path: String,
    bytes: ObjectBytes,
    pieces: VecDeque<Piece>,
    current: Option<Current>,
    file: Arc<FileContext>,
    skip_damaged: bool,
    metrics: ScanMetrics,
    /// Compressed bytes read and not yet reported by `bytes_read`.
    unreported: u64,
}

impl BamRecords {
    /// The records of `pieces` of the BAM file `bytes`.
    pub fn new(
        path: &str,
        bytes: ObjectBytes,
        pieces: Vec<Piece>,
        file: &Arc<FileContext>,
        spec: &DecodeSpec<'_>,
        metrics: ScanMetrics,
    ) -> Self {
        Self {
            path: path.to_string(),
            bytes,
            pieces: pieces.into(),
            current: None,
            file: Arc::clone(file),
            skip_damaged: spec.skip_damaged,
            metrics,
            unreported: 0,
        }
    }
}

impl RecordSource for BamRecords {
    type Position = bgzf::VirtualPosition;

    fn fill(&mut self, raw: &mut RawBatch<Self::Position>, batch_size: usize) -> Result<bool> {
        raw.clear();
        while raw.ends.len() < batch_size && raw.data.len() < BATCH_BYTE_BUDGET {
            match self.read_record(raw) {
                Ok(Step::Record) => {}
                Ok(Step::PieceEnded { piece, at, next }) => {
                    if let (Some(to), Some(origin)) = (piece.to, &piece.boundary_from) {
                        if at != to && next != Some(to) {
                            return Err(misplaced_boundary(&self.path, to, next, origin));
                        }
                    }
                }
                Ok(Step::NoMorePieces) => return Ok(false),
                Err(e) if self.skip_damaged => self.skip_damaged_data(e)?,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn invalid(&self, at: Self::Position, e: crate::record::RecordError) -> DataFusionError {
        error_at(&self.path, at, format!("invalid record: {e}"))
    }

    fn bytes_read(&mut self) -> u64 {
        let mut bytes = std::mem::take(&mut self.unreported);
        if let Some(cur) = &mut self.current {
            bytes += cur.advance(absolute(cur.base, cur.reader.virtual_position()).compressed());
        }
        bytes
    }
}

impl BamRecords {
    /// Reads the next record of the current piece (opening the next piece if needed) into
    /// `raw`. Every error is damage in the file.
    fn read_record(&mut self, raw: &mut RawBatch<bgzf::VirtualPosition>) -> Result<Step> {
        if self.current.is_none() {
            let Some(piece) = self.pieces.pop_front() else { return Ok(Step::NoMorePieces) };
            match Current::open(&self.path, &self.bytes, piece.clone()) {
                Ok(cur) => self.current = Some(cur),
                Err(e) => {
                    // Kept, so that skipping damage knows where this piece was going.
                    self.pieces.push_front(piece);
                    return Err(e);
                }
            }
        }
        let cur = self.current.as_mut().expect("a piece was opened above");
        let (at, start) = positions_before_record(&self.path, cur.base, &mut cur.reader)?;
        let ended = match (cur.piece.to, start) {
            (_, None) => true,
            (Some(to), Some(start)) => at >= to || start >= to,
            (None, Some(_)) => false,
        };
        if ended {
            let piece = self.close_piece(at.compressed());
            return Ok(Step::PieceEnded { piece, at, next: start });
        }
        let start = start.expect("not at the end of the data");
        cur.reading_block = start.compressed();
        if start.compressed() != cur.last_block {
            self.metrics.bgzf_blocks.add(1);
            cur.last_block = start.compressed();
        }
        let record_from = raw.data.len();
        if let Err(e) = append_record_at(&self.path, start, &mut cur.reader, &mut raw.data) {
            raw.data.truncate(record_from);
            return Err(e);
        }
        if cur.piece.read_until.is_some_and(|until| until.is_passed_by(&raw.data[record_from..])) {
            raw.data.truncate(record_from);
            let read_to = absolute(cur.base, cur.reader.virtual_position()).compressed();
            // Stopped before the piece's end: there is no boundary to verify.
            let piece = Piece { boundary_from: None, ..self.close_piece(read_to) };
            return Ok(Step::PieceEnded { piece, at: start, next: Some(start) });
        }
        raw.ends.push(raw.data.len());
        raw.starts.push(start);
        let end_block = absolute(cur.base, cur.reader.virtual_position()).compressed();
        if end_block != cur.last_block {
            self.metrics.bgzf_blocks.add(1);
            cur.last_block = end_block;
        }
        Ok(Step::Record)
    }

    /// Drops the current piece's reader, counting the compressed bytes read up to `offset`.
    fn close_piece(&mut self, offset: u64) -> Piece {
        let mut cur = self.current.take().expect("a current piece");
        self.unreported += cur.advance(offset);
        cur.piece
    }

    /// Option `skip_damaged`: after `error` in the current piece, goes on at the first record
    /// found (as a partition boundary is found) in a sound block after the damaged one, within
    /// the piece. Records in between are lost; the stretch is counted and reported.
    fn skip_damaged_data(&mut self, error: DataFusionError) -> Result<()> {
        let (piece, damaged_block) = match self.current.take() {
            Some(cur) => (cur.piece, cur.reading_block),
            None => {
                let piece = self.pieces.pop_front().expect("the piece that failed to open");
                let block = piece.from.compressed();
                (piece, block)
            }
        };
        let resume = self.first_record_between(damaged_block + 1, piece.to)?;
        self.metrics.damaged_stretches.add(1);
        progress::add_damaged(1);
        let until = match resume {
            Some(v) => show_virtual(v),
            None => "the end of this partition".to_string(),
        };
        warnings::warn(format!("{error}; skipped damaged data up to {until} (option skip_damaged)"));
        if let Some(from) = resume {
            self.pieces.push_front(Piece { from, ..piece });
        }
        Ok(())
    }

    /// The first record starting in a sound block at or after byte `from`, if one comes before
    /// `to`. A search that runs into more damage looks again one block-size further on.
    fn first_record_between(
        &self,
        mut from: u64,
        to: Option<bgzf::VirtualPosition>,
    ) -> Result<Option<bgzf::VirtualPosition>> {
        let limit = to.map_or(self.bytes.size, |t| t.compressed() + 1);
        while from < limit {
            if let Ok(found) = find_first_record(self.bytes.open_at(from)?, from, self.bytes.size, &self.file) {
                return Ok(found.filter(|v| to.is_none_or(|t| *v < t)));
            }
            from += 1 << 16;
        }
        Ok(None)
    }
}

impl Current {
    fn open(path: &str, bytes: &ObjectBytes, piece: Piece) -> Result<Self> {
        let (reader, base) = reader_at(path, bytes, piece.from)?;
        let from = piece.from.compressed();
        Ok(Self { reader, base, last_block: u64::MAX, counted_to: from, reading_block: from, piece })
    }

    /// Moves the count of compressed bytes read up to `offset`; returns the bytes added.
    fn advance(&mut self, offset: u64) -> u64 {
        let added = offset.saturating_sub(self.counted_to);
        self.counted_to = self.counted_to.max(offset);
        added
    }
}

fn misplaced_boundary(
    path: &str,
    to: bgzf::VirtualPosition,
    stop: Option<bgzf::VirtualPosition>,
    origin: &BoundaryOrigin,
) -> DataFusionError {
    let show = |v: Option<bgzf::VirtualPosition>| v.map_or("the end of the file".to_string(), show_virtual);
    let advice = match origin {
        BoundaryOrigin::Index(_) => "The index does not fit this file: rebuild it (samtools index) or remove it.",
        BoundaryOrigin::RecordSearch(_) => {
            "Disable splitting for this table (OPTIONS ('split' 'false')) and report the file."
        }
    };
    DataFusionError::Execution(format!(
        "BAM file {path}: a partition boundary was misplaced: reading on from the previous partition reaches {}, \
         but {origin} chose {}. {advice}",
        show(stop),
        show(Some(to))
    ))
}

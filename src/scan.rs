//! Reading one BAM byte stream: header, then records into Arrow batches.
//!
//! BGZF inflation (libdeflate, CRC-checked) and header parsing are noodles'. This module frames
//! records by their `block_size`, hands them to the [`BatchDecoder`], and turns every failure into
//! an error naming the file and the virtual offset (`compressed:uncompressed`) of the record.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, Time};
use noodles_bgzf as bgzf;
use noodles_sam as sam;

use crate::decode::{BatchDecoder, FileContext};
use crate::io::ObjectBytes;
use crate::partition::find_first_record;
use crate::progress;
use crate::warnings;
use crate::pushdown::Prefilter;
use crate::record::RawRecord;
use crate::schema::TagLayout;

/// Largest `block_size` accepted (the longest reads are a few Mbp; 256 MiB leaves headroom
/// while stopping a corrupt length from allocating gigabytes).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// A batch is emitted at `batch_size` rows or at this many record bytes, whichever comes first,
/// so batches of long reads stay bounded in memory.
pub const BATCH_BYTE_BUDGET: usize = 32 << 20;

/// The bytes of the BGZF end-of-file marker block.
pub const BGZF_EOF: [u8; 28] = [
    0x1f, 0x8b, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x06, 0x00, 0x42, 0x43, 0x02,
    0x00, 0x1b, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// An error about `path`, at a virtual position.
pub fn error_at(path: &str, pos: bgzf::VirtualPosition, what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!(
        "BAM file {path}: {what} (at virtual offset {}:{}, i.e. BGZF block at byte {})",
        pos.compressed(),
        pos.uncompressed(),
        pos.compressed()
    ))
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "file ends inside a BGZF block or record: it is truncated".into(),
        _ => format!("corrupt BGZF data: {e}"),
    }
}

/// Whether `b` starts with a BGZF block header (gzip magic, FEXTRA, and the `BC` subfield).
pub fn is_block_header(b: &[u8]) -> bool {
    b.len() >= 18 && b[..4] == [0x1f, 0x8b, 0x08, 0x04] && b[10..16] == [6, 0, b'B', b'C', 2, 0]
}

/// A BGZF reader over a whole file, once its first bytes are known to be a BGZF block header:
/// text, SAM, CRAM or plain gzip are then told apart from truncation.
pub fn bgzf_reader<R: Read>(path: &str, mut inner: R) -> Result<bgzf::io::Reader<io::Chain<io::Cursor<Vec<u8>>, R>>> {
    let mut head = Vec::with_capacity(18);
    (&mut inner)
        .take(18)
        .read_to_end(&mut head)
        .map_err(|e| DataFusionError::Execution(format!("cannot read BAM file {path}: {e}")))?;
    let origin = bgzf::VirtualPosition::default();
    if head.is_empty() {
        return Err(error_at(path, origin, "the file is empty: not a BAM file"));
    }
    if !is_block_header(&head) {
        let what = if head.starts_with(b"CRAM") {
            "not a BAM file: it is CRAM"
        } else if head.starts_with(&[0x1f, 0x8b]) {
            "not a BAM file: gzip-compressed, but not BGZF"
        } else {
            "not a BAM file: it does not start with a BGZF block (is it SAM text?)"
        };
        return Err(error_at(path, origin, what));
    }
    Ok(bgzf::io::Reader::new(io::Cursor::new(head).chain(inner)))
}

/// The parsed header and what decoding needs of it.
pub struct BamHeader {
    pub header: sam::Header,
    pub file: FileContext,
}

/// Reads the BAM header from the start of a BGZF stream, leaving `reader` at the first record.
pub fn read_header<R: Read>(path: &str, reader: &mut bgzf::io::Reader<R>) -> Result<BamHeader> {
    let mut magic = [0u8; 4];
    match reader.read_exact(&mut magic) {
        Ok(()) if &magic == b"BAM\x01" => {}
        Ok(()) => {
            return Err(error_at(path, bgzf::VirtualPosition::default(), "not a BAM file: the BGZF data does not start with the BAM magic number"))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(error_at(path, reader.virtual_position(), format!("not a BAM file (not BGZF-compressed): {e}")))
        }
        Err(e) => return Err(error_at(path, reader.virtual_position(), describe_io(&e))),
    }
    // noodles parses the text header and the binary reference list (and checks they agree).
    let chained = io::Cursor::new(magic).chain(&mut *reader);
    let header = noodles_bam::io::Reader::from(chained)
        .read_header()
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => error_at(path, bgzf::VirtualPosition::default(), "file ends inside the BAM header: it is truncated"),
            _ => error_at(path, bgzf::VirtualPosition::default(), format!("invalid BAM header: {e}")),
        })?;
    let refs = header.reference_sequences();
    let names: Vec<String> = refs.keys().map(|name| String::from_utf8_lossy(name).into_owned()).collect();
    let lengths: Vec<u64> = refs.values().map(|r| usize::from(r.length()) as u64).collect();
    Ok(BamHeader { header, file: FileContext { reference_names: Arc::from(names), reference_lengths: Arc::from(lengths) } })
}

/// The absolute virtual position of `reader`'s position, for a reader started at byte `base`.
pub fn absolute(base: u64, pos: bgzf::VirtualPosition) -> bgzf::VirtualPosition {
    bgzf::VirtualPosition::try_from((base + pos.compressed(), pos.uncompressed())).unwrap_or(pos)
}

/// Where the next record starts (its block is loaded first, so the position names the block
/// that holds the record's first byte), or `None` at a clean end of data.
pub fn next_record_start<R: Read>(path: &str, base: u64, reader: &mut bgzf::io::Reader<R>) -> Result<Option<bgzf::VirtualPosition>> {
    Ok(positions_before_record(path, base, reader)?.1)
}

/// The reader's position before loading the next block (`(block, block length)` when the last
/// record ended a block; an index may name a record start that way), and the next record's start
/// as [`next_record_start`] gives it.
fn positions_before_record<R: Read>(
    path: &str,
    base: u64,
    reader: &mut bgzf::io::Reader<R>,
) -> Result<(bgzf::VirtualPosition, Option<bgzf::VirtualPosition>)> {
    let at = absolute(base, reader.virtual_position());
    if reader.fill_buf().map_err(|e| error_at(path, at, describe_io(&e)))?.is_empty() {
        return Ok((at, None));
    }
    Ok((at, Some(absolute(base, reader.virtual_position()))))
}

/// Reads the next record's bytes into `buf`. Returns `Ok(false)` at a clean end of data.
pub fn read_record_bytes<R: Read>(path: &str, base: u64, reader: &mut bgzf::io::Reader<R>, buf: &mut Vec<u8>) -> Result<bool> {
    let Some(start) = next_record_start(path, base, reader)? else { return Ok(false) };
    buf.clear();
    append_record_at(path, start, reader, buf)?;
    Ok(true)
}

/// Records up to this size are read in one go; a longer `block_size` (rare, and what a corrupt
/// length looks like) is read in steps, so memory follows the data actually present.
const DIRECT_READ_BYTES: usize = 1 << 20;

/// Appends the bytes of the record starting at `start` (where `reader` is) to `buf`. On error,
/// `buf` may hold part of the record.
fn append_record_at<R: Read>(path: &str, start: bgzf::VirtualPosition, reader: &mut bgzf::io::Reader<R>, buf: &mut Vec<u8>) -> Result<()> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).map_err(|e| error_at(path, start, describe_io(&e)))?;
    let block_size = u32::from_le_bytes(size) as usize;
    if !(crate::record::FIXED_LEN..=MAX_RECORD_BYTES).contains(&block_size) {
        return Err(error_at(path, start, format!("invalid record length {block_size}: the data is corrupt")));
    }
    let from = buf.len();
    if block_size <= DIRECT_READ_BYTES {
        buf.resize(from + block_size, 0);
        return reader.read_exact(&mut buf[from..]).map_err(|e| error_at(path, start, describe_io(&e)));
    }
    let read = reader.take(block_size as u64).read_to_end(buf).map_err(|e| error_at(path, start, describe_io(&e)))?;
    if read < block_size {
        return Err(error_at(path, start, "file ends inside a BGZF block or record: it is truncated"));
    }
    Ok(())
}

/// A BGZF reader of `bytes` positioned at the virtual position `at`, and the file offset its
/// positions are relative to.
pub fn reader_at(path: &str, bytes: &ObjectBytes, at: bgzf::VirtualPosition) -> Result<(FileReader, u64)> {
    let mut reader = bgzf::io::Reader::new(bytes.open_at(at.compressed())?);
    let mut skip = usize::from(at.uncompressed());
    while skip > 0 {
        let available = reader.fill_buf().map_err(|e| error_at(path, at, describe_io(&e)))?.len();
        if available == 0 {
            return Err(error_at(path, at, "the file ends before this position"));
        }
        let n = available.min(skip);
        reader.consume(n);
        skip -= n;
    }
    Ok((reader, at.compressed()))
}

pub type FileReader = bgzf::io::Reader<Box<dyn Read + Send>>;

/// A stretch of a file to decode: the records from `from` up to the one at `to`.
#[derive(Debug, Clone)]
pub struct Piece {
    pub from: bgzf::VirtualPosition,
    /// `None`: up to the end of the data.
    pub to: Option<bgzf::VirtualPosition>,
    /// When `to` is a partition boundary, what placed it: reading must then arrive exactly
    /// there, or the boundary was wrong. Index chunk ends need no such check.
    pub boundary_from: Option<String>,
    /// For index chunks (coordinate-sorted data): no record sorting after this point is wanted,
    /// so the piece ends at the first such record instead of at the end of its chunk.
    pub read_until: Option<ReadUntil>,
}

impl Piece {
    /// Every record of a file, from the first after its header.
    pub fn whole_file(header_end: bgzf::VirtualPosition) -> Self {
        Self { from: header_end, to: None, boundary_from: None, read_until: None }
    }
}

/// A point in coordinate order: reference `reference` (unmapped records, refID -1, sort last),
/// up to the 1-based position `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadUntil {
    pub reference: u32,
    pub end: u64,
}

impl ReadUntil {
    /// Whether the record `bytes` sorts after this point (it starts on a later reference, or
    /// after `end` on this one): in sorted data, so does every record after it.
    pub fn is_passed_by(&self, bytes: &[u8]) -> bool {
        let (reference, pos) = crate::record::sort_position(bytes);
        // Corrupt values (refID < -1, pos < -1) are left for the decoder to report.
        let reference = match reference {
            -1 => u32::MAX,
            r => match u32::try_from(r) {
                Ok(r) => r,
                Err(_) => return false,
            },
        };
        reference > self.reference || reference == self.reference && u64::try_from(i64::from(pos) + 1).is_ok_and(|p| p > self.end)
    }
}

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

/// Record bytes read for one batch, before decoding.
#[derive(Default)]
struct RawBatch {
    data: Vec<u8>,
    ends: Vec<usize>,
    starts: Vec<bgzf::VirtualPosition>,
}

impl RawBatch {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.starts.clear();
    }

    fn records(&self) -> impl Iterator<Item = (bgzf::VirtualPosition, &[u8])> {
        let begins = std::iter::once(0).chain(self.ends.iter().copied());
        self.starts.iter().copied().zip(begins.zip(self.ends.iter().copied()).map(|(b, e)| &self.data[b..e]))
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
    PieceEnded { piece: Piece, at: bgzf::VirtualPosition, next: Option<bgzf::VirtualPosition> },
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

/// Iterates the records of some pieces of one file as Arrow batches.
pub struct BatchReader {
    path: String,
    bytes: ObjectBytes,
    pieces: VecDeque<Piece>,
    current: Option<Current>,
    decoder: BatchDecoder,
    prefilter: Option<Prefilter>,
    file: Arc<FileContext>,
    batch_size: usize,
    skip_damaged: bool,
    raw: RawBatch,
    done: bool,
    failed: bool,
    metrics: ScanMetrics,
    /// The share of the session's memory pool held for the record buffer and the last batch.
    memory: Option<MemoryReservation>,
}

impl BatchReader {
    /// Decodes `spec`'s projection from `pieces` of the file `bytes`, keeping only the records
    /// for which `prefilter`'s predicate holds.
    pub fn new(
        path: &str,
        bytes: ObjectBytes,
        pieces: Vec<Piece>,
        file: &Arc<FileContext>,
        spec: DecodeSpec<'_>,
        prefilter: Option<Prefilter>,
        metrics: ScanMetrics,
    ) -> Result<Self> {
        let decoder = BatchDecoder::new(spec.table_schema, spec.projection, spec.layout, file)?;
        Ok(Self {
            path: path.to_string(),
            bytes,
            pieces: pieces.into(),
            current: None,
            file: Arc::clone(file),
            decoder,
            prefilter,
            batch_size: spec.batch_size.max(1),
            skip_damaged: spec.skip_damaged,
            raw: RawBatch::default(),
            done: false,
            failed: false,
            metrics,
            memory: None,
        })
    }

    /// Accounts for the reader's buffers in a memory pool: a batch that does not fit is an error.
    pub fn with_memory(mut self, memory: MemoryReservation) -> Self {
        self.memory = Some(memory);
        self
    }

    pub fn schema(&self) -> &SchemaRef {
        self.decoder.schema()
    }

    /// Reads the records of the next batch into `self.raw`; sets `done` after the last piece.
    fn fill(&mut self) -> Result<()> {
        self.raw.clear();
        while self.raw.ends.len() < self.batch_size && self.raw.data.len() < BATCH_BYTE_BUDGET {
            match self.read_record() {
                Ok(Step::Record) => {}
                Ok(Step::PieceEnded { piece, at, next }) => {
                    if let (Some(to), Some(origin)) = (piece.to, &piece.boundary_from) {
                        if at != to && next != Some(to) {
                            return Err(misplaced_boundary(&self.path, to, next, origin));
                        }
                    }
                }
                Ok(Step::NoMorePieces) => {
                    self.done = true;
                    return Ok(());
                }
                Err(e) if self.skip_damaged => self.skip_damaged_data(e)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the next record of the current piece (opening the next piece if needed) into
    /// `self.raw`. Every error is damage in the file.
    fn read_record(&mut self) -> Result<Step> {
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
        let record_from = self.raw.data.len();
        if let Err(e) = append_record_at(&self.path, start, &mut cur.reader, &mut self.raw.data) {
            self.raw.data.truncate(record_from);
            return Err(e);
        }
        if cur.piece.read_until.is_some_and(|until| until.is_passed_by(&self.raw.data[record_from..])) {
            self.raw.data.truncate(record_from);
            let read_to = absolute(cur.base, cur.reader.virtual_position()).compressed();
            // Stopped before the piece's end: there is no boundary to verify.
            let piece = Piece { boundary_from: None, ..self.close_piece(read_to) };
            return Ok(Step::PieceEnded { piece, at: start, next: Some(start) });
        }
        self.raw.ends.push(self.raw.data.len());
        self.raw.starts.push(start);
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
        let bytes = cur.advance(offset);
        self.metrics.compressed_bytes.add(bytes as usize);
        progress::add(0, bytes);
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
            Some(v) => format!("virtual offset {}:{}", v.compressed(), v.uncompressed()),
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
    fn first_record_between(&self, mut from: u64, to: Option<bgzf::VirtualPosition>) -> Result<Option<bgzf::VirtualPosition>> {
        let limit = to.map_or(self.bytes.size, |t| t.compressed() + 1);
        while from < limit {
            if let Ok(found) = find_first_record(self.bytes.open_at(from)?, from, self.bytes.size, &self.file) {
                return Ok(found.filter(|v| to.is_none_or(|t| *v < t)));
            }
            from += 1 << 16;
        }
        Ok(None)
    }

    /// Decodes the records in `self.raw` that pass the prefilter.
    fn decode(&mut self) -> Result<()> {
        let n_ref = self.file.reference_names.len();
        let path = self.path.as_str();
        let invalid = |start, e: crate::record::RecordError| error_at(path, start, format!("invalid record: {e}"));
        // Skipping damaged records, every record is checked whole before any is decoded.
        let mut damaged = Vec::new();
        if self.skip_damaged {
            for (i, (start, bytes)) in self.raw.records().enumerate() {
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
                for (_, (start, bytes)) in self.raw.records().enumerate().filter(|(i, _)| sound(i)) {
                    let record = RawRecord::parse(bytes, n_ref).map_err(|e| invalid(start, e))?;
                    prefilter.push(&record).map_err(|e| invalid(start, e))?;
                }
                Some(prefilter.evaluate()?)
            }
        };
        for (j, (start, bytes)) in self.raw.records().enumerate().filter(|(i, _)| sound(i)).map(|(_, r)| r).enumerate() {
            if keep.as_ref().is_some_and(|k| !k.value(j)) {
                self.metrics.records_filtered.add(1);
                continue;
            }
            let record = RawRecord::parse(bytes, n_ref).map_err(|e| invalid(start, e))?;
            self.decoder.push(&record).map_err(|e| invalid(start, e))?;
        }
        self.metrics.records_read.add(self.raw.ends.len());
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while !self.done && self.decoder.len() < self.batch_size {
            let started = Instant::now();
            self.fill()?;
            self.metrics.inflate_time.add_elapsed(started);
            let started = Instant::now();
            self.decode()?;
            self.metrics.decode_time.add_elapsed(started);
            self.report_progress();
            if self.raw.data.len() >= BATCH_BYTE_BUDGET {
                break;
            }
        }
        if self.decoder.is_empty() {
            return Ok(None);
        }
        let batch = self.decoder.finish()?;
        if let Some(memory) = &mut self.memory {
            memory.try_resize(self.raw.data.capacity() + batch.get_array_memory_size())?;
        }
        Ok(Some(batch))
    }

    fn report_progress(&mut self) {
        let bytes = match &mut self.current {
            Some(cur) => cur.advance(absolute(cur.base, cur.reader.virtual_position()).compressed()),
            None => 0,
        };
        self.metrics.compressed_bytes.add(bytes as usize);
        progress::add(self.raw.ends.len() as u64, bytes);
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

fn misplaced_boundary(path: &str, to: bgzf::VirtualPosition, stop: Option<bgzf::VirtualPosition>, origin: &str) -> DataFusionError {
    let show = |v: Option<bgzf::VirtualPosition>| {
        v.map_or("the end of the file".to_string(), |v| format!("virtual offset {}:{}", v.compressed(), v.uncompressed()))
    };
    let advice = if origin.starts_with("the index") {
        "The index does not fit this file: rebuild it (samtools index) or remove it."
    } else {
        "Disable splitting for this table (OPTIONS ('split' 'false')) and report the file."
    };
    DataFusionError::Execution(format!(
        "BAM file {path}: a partition boundary was misplaced: reading on from the previous partition reaches {}, \
         but {origin} chose {}. {advice}",
        show(stop),
        show(Some(to))
    ))
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.done && self.decoder.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::ReadUntil;

    fn record(reference: i32, pos: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; crate::record::FIXED_LEN];
        bytes[..4].copy_from_slice(&reference.to_le_bytes());
        bytes[4..8].copy_from_slice(&pos.to_le_bytes());
        bytes
    }

    #[test]
    fn read_until_follows_coordinate_order() {
        let until = ReadUntil { reference: 1, end: 1000 };
        // 0-based pos 999 is 1-based 1000: still wanted; 1000 is past.
        assert!(!until.is_passed_by(&record(1, 999)));
        assert!(until.is_passed_by(&record(1, 1000)));
        assert!(!until.is_passed_by(&record(0, 5_000_000)));
        assert!(until.is_passed_by(&record(2, 0)));
        // Unmapped records without a reference sort last.
        assert!(until.is_passed_by(&record(-1, -1)));
        assert!(!ReadUntil { reference: u32::MAX, end: u64::MAX }.is_passed_by(&record(-1, -1)));
        // A corrupt refID or position is not a reason to stop: the decoder reports it.
        assert!(!until.is_passed_by(&record(-7, 0)));
        assert!(!until.is_passed_by(&record(1, -9)));
        assert!(!ReadUntil { reference: 1, end: u64::MAX }.is_passed_by(&record(1, i32::MAX)));
    }
}

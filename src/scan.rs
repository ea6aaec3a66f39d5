//! Reading one BAM byte stream: header, then records into Arrow batches.
//!
//! BGZF inflation (libdeflate, CRC-checked) and header parsing are noodles'. This module frames
//! records by their `block_size`, hands them to the [`BatchDecoder`], and turns every failure into
//! an error naming the file and the virtual offset (`compressed:uncompressed`) of the record.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use noodles_bgzf as bgzf;
use noodles_sam as sam;

use crate::decode::{BatchDecoder, FileContext};
use crate::progress;
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
    let at = absolute(base, reader.virtual_position());
    if reader.fill_buf().map_err(|e| error_at(path, at, describe_io(&e)))?.is_empty() {
        return Ok(None);
    }
    Ok(Some(absolute(base, reader.virtual_position())))
}

/// Reads the next record's bytes into `buf`. Returns `Ok(false)` at a clean end of data.
pub fn read_record_bytes<R: Read>(path: &str, base: u64, reader: &mut bgzf::io::Reader<R>, buf: &mut Vec<u8>) -> Result<bool> {
    let Some(start) = next_record_start(path, base, reader)? else { return Ok(false) };
    read_record_at(path, start, reader, buf)?;
    Ok(true)
}

/// Reads the record whose start [`next_record_start`] just returned as `start`.
fn read_record_at<R: Read>(path: &str, start: bgzf::VirtualPosition, reader: &mut bgzf::io::Reader<R>, buf: &mut Vec<u8>) -> Result<()> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).map_err(|e| error_at(path, start, describe_io(&e)))?;
    let block_size = u32::from_le_bytes(size) as usize;
    if !(crate::record::FIXED_LEN..=MAX_RECORD_BYTES).contains(&block_size) {
        return Err(error_at(path, start, format!("invalid record length {block_size}: the data is corrupt")));
    }
    buf.resize(block_size, 0);
    reader.read_exact(buf).map_err(|e| error_at(path, start, describe_io(&e)))
}

/// Checks, once a range has been read, that the next range's guessed first record is exactly
/// where this range stopped (`None`: the end of the file).
pub type SuccessorCheck = Box<dyn FnOnce(Option<bgzf::VirtualPosition>) -> Result<()> + Send>;

/// Iterates a BAM stream's records as Arrow batches.
pub struct BatchReader<R> {
    path: String,
    reader: bgzf::io::Reader<R>,
    /// File offset at which `reader`'s data starts.
    base: u64,
    /// Records whose block starts at or after this offset belong to the next range.
    end: Option<u64>,
    successor_check: Option<SuccessorCheck>,
    decoder: BatchDecoder,
    n_ref: usize,
    batch_size: usize,
    buf: Vec<u8>,
    done: bool,
    failed: bool,
    /// Compressed position already reported to [`progress`].
    reported_bytes: u64,
}

/// Where a [`BatchReader`] reads: its reader starts at file byte `base`; it stops before the
/// first record whose block starts at or after `end`, then runs `successor_check`.
pub struct Extent {
    pub base: u64,
    pub end: Option<u64>,
    pub successor_check: Option<SuccessorCheck>,
}

impl<R: Read> BatchReader<R> {
    /// Decodes `projection` of `table_schema` from `reader`, positioned at a record start.
    pub fn new(
        path: &str,
        reader: bgzf::io::Reader<R>,
        extent: Extent,
        file: &FileContext,
        table_schema: &SchemaRef,
        projection: &[usize],
        layout: &TagLayout,
        batch_size: usize,
    ) -> Result<Self> {
        let decoder = BatchDecoder::new(table_schema, projection, layout, file)?;
        Ok(Self {
            path: path.to_string(),
            reader,
            base: extent.base,
            end: extent.end,
            successor_check: extent.successor_check,
            n_ref: file.reference_names.len(),
            decoder,
            batch_size: batch_size.max(1),
            buf: Vec::new(),
            done: false,
            failed: false,
            reported_bytes: 0,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        self.decoder.schema()
    }

    /// Ends the range: `stop` is where the next record starts (`None` at the end of the file).
    fn finish_range(&mut self, stop: Option<bgzf::VirtualPosition>) -> Result<()> {
        self.done = true;
        match self.successor_check.take() {
            Some(check) => check(stop),
            None => Ok(()),
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut bytes = 0usize;
        while !self.done && self.decoder.len() < self.batch_size && bytes < BATCH_BYTE_BUDGET {
            let Some(start) = next_record_start(&self.path, self.base, &mut self.reader)? else {
                self.finish_range(None)?;
                break;
            };
            if self.end.is_some_and(|end| start.compressed() >= end) {
                self.finish_range(Some(start))?;
                break;
            }
            read_record_at(&self.path, start, &mut self.reader, &mut self.buf)?;
            let record = RawRecord::parse(&self.buf, self.n_ref)
                .map_err(|e| error_at(&self.path, start, format!("invalid record: {e}")))?;
            self.decoder
                .push(&record)
                .map_err(|e| error_at(&self.path, start, format!("invalid record: {e}")))?;
            bytes += self.buf.len() + 4;
        }
        let position = self.reader.virtual_position().compressed();
        progress::add(self.decoder.len() as u64, position.saturating_sub(self.reported_bytes));
        self.reported_bytes = position;
        if self.decoder.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.decoder.finish()?))
    }
}

impl<R: Read> Iterator for BatchReader<R> {
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

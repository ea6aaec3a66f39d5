//! BGZF and BAM framing: the header, records cut by their `block_size`, and errors that name the
//! file and the virtual offset (`compressed:uncompressed`) where the data went wrong.
//!
//! BGZF inflation (libdeflate, CRC-checked) and header parsing are noodles'.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_bgzf as bgzf;
use noodles_sam as sam;

use crate::bgzf::header::read_bam_header;
use crate::error::BamError;
use crate::io::ObjectBytes;
use crate::record::FIXED_LEN;

/// What the decoder needs to know about the file being read.
pub struct FileContext {
    /// Reference names, indexed by refID.
    pub reference_names: Arc<[String]>,
    /// Reference lengths, indexed by refID.
    pub reference_lengths: Arc<[u64]>,
}

/// Largest `block_size` accepted (the longest reads are a few Mbp; 256 MiB leaves headroom
/// while stopping a corrupt length from allocating gigabytes).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// The bytes of the BGZF end-of-file marker block.
pub const BGZF_EOF: [u8; 28] = [
    0x1f, 0x8b, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x06, 0x00, 0x42, 0x43, 0x02, 0x00, 0x1b, 0x00, 0x03,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// A virtual position as messages show it: `virtual offset compressed:uncompressed`.
pub fn show_virtual(pos: bgzf::VirtualPosition) -> String {
    format!("virtual offset {}:{}", pos.compressed(), pos.uncompressed())
}

/// An error about `path` (a BAM or `.sam.gz` file), at a virtual position.
pub fn error_at(path: &str, pos: bgzf::VirtualPosition, what: impl std::fmt::Display) -> DataFusionError {
    let at = format!("at {}, i.e. BGZF block at byte {}", show_virtual(pos), pos.compressed());
    BamError::damaged(path, at, what).into()
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
    (&mut inner).take(18).read_to_end(&mut head).map_err(|e| BamError::Damaged {
        file: path.to_string(),
        at: String::new(),
        reason: "cannot read it".to_string(),
        source: Some(Box::new(e)),
    })?;
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
            return Err(error_at(
                path,
                bgzf::VirtualPosition::default(),
                "not a BAM file: the BGZF data does not start with the BAM magic number",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(error_at(path, reader.virtual_position(), format!("not a BAM file (not BGZF-compressed): {e}")))
        }
        Err(e) => return Err(error_at(path, reader.virtual_position(), describe_io(&e))),
    }
    // noodles parses the text header and the binary reference list (and checks they agree).
    let chained = io::Cursor::new(magic).chain(&mut *reader);
    let header = read_bam_header(&mut noodles_bam::io::Reader::from(chained)).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            error_at(path, bgzf::VirtualPosition::default(), "file ends inside the BAM header: it is truncated")
        }
        _ => error_at(path, bgzf::VirtualPosition::default(), format!("invalid BAM header: {e}")),
    })?;
    let refs = header.reference_sequences();
    let names: Vec<String> = refs.keys().map(|name| String::from_utf8_lossy(name).into_owned()).collect();
    let lengths: Vec<u64> = refs.values().map(|r| usize::from(r.length()) as u64).collect();
    Ok(BamHeader {
        header,
        file: FileContext { reference_names: Arc::from(names), reference_lengths: Arc::from(lengths) },
    })
}

/// The absolute virtual position of `reader`'s position, for a reader started at byte `base`.
pub fn absolute(base: u64, pos: bgzf::VirtualPosition) -> bgzf::VirtualPosition {
    bgzf::VirtualPosition::try_from((base + pos.compressed(), pos.uncompressed())).unwrap_or(pos)
}

/// Where the next record starts (its block is loaded first, so the position names the block
/// that holds the record's first byte), or `None` at a clean end of data.
pub fn next_record_start<R: Read>(
    path: &str,
    base: u64,
    reader: &mut bgzf::io::Reader<R>,
) -> Result<Option<bgzf::VirtualPosition>> {
    Ok(positions_before_record(path, base, reader)?.1)
}

/// The reader's position before loading the next block (`(block, block length)` when the last
/// record ended a block; an index may name a record start that way), and the next record's start
/// as [`next_record_start`] gives it.
pub fn positions_before_record<R: Read>(
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
pub fn read_record_bytes<R: Read>(
    path: &str,
    base: u64,
    reader: &mut bgzf::io::Reader<R>,
    buf: &mut Vec<u8>,
) -> Result<bool> {
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
pub fn append_record_at<R: Read>(
    path: &str,
    start: bgzf::VirtualPosition,
    reader: &mut bgzf::io::Reader<R>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    // Where the reader stands, for an error in a later block of a record that spans several:
    // noodles-bgzf's `position` is the offset of the block it reads next, or failed to read.
    let entry = reader.virtual_position();
    let failed = |reader: &bgzf::io::Reader<R>, e: &io::Error| {
        let block = start.compressed() - entry.compressed() + reader.position();
        match block == start.compressed() {
            true => error_at(path, start, describe_io(e)),
            false => error_at(
                path,
                start,
                format!("{}, in the BGZF block at byte {block}, which this record continues into", describe_io(e)),
            ),
        }
    };
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).map_err(|e| failed(reader, &e))?;
    let block_size = u32::from_le_bytes(size) as usize;
    if !(FIXED_LEN..=MAX_RECORD_BYTES).contains(&block_size) {
        return Err(error_at(path, start, format!("invalid record length {block_size}: the data is corrupt")));
    }
    let from = buf.len();
    if block_size <= DIRECT_READ_BYTES {
        buf.resize(from + block_size, 0);
        return reader.read_exact(&mut buf[from..]).map_err(|e| failed(reader, &e));
    }
    let read = (&mut *reader).take(block_size as u64).read_to_end(buf).map_err(|e| failed(reader, &e))?;
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

/// The length of a BGZF block's header (SAM specification, section 4.1).
const BGZF_HEADER_LEN: u64 = 18;

/// Checks the end of a BGZF file of `size` bytes whose reader found no more data at `at`:
/// noodles-bgzf takes a block header cut short for the end of the data, where samtools fails
/// ("Failed to read BGZF header"), and so does this. (After the last data, the reader stands
/// before the end-of-file block, a whole block, or at the file's end.)
pub fn check_end_of_blocks(path: &str, at: bgzf::VirtualPosition, size: u64) -> Result<()> {
    let left = size.saturating_sub(at.compressed());
    if (1..BGZF_HEADER_LEN).contains(&left) {
        return Err(error_at(
            path,
            at,
            format!(
                "the file ends inside a BGZF block header ({left} bytes after the last whole block): it is truncated"
            ),
        ));
    }
    Ok(())
}

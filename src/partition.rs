//! Byte-range partitions of one BAM file, decoded independently.
//!
//! **Ownership rule.** A record belongs to the range `[start, end)` that contains the compressed
//! offset of the BGZF block in which the record starts. So a range reads records while their
//! block starts before `end`, and a range that starts mid-file begins at the first record that
//! starts in a block at or after `start`.
//!
//! **Finding that record without an index.** The first real BGZF block at or after `start` is
//! found by its header signature (magic, `BC` subfield, BSIZE) and confirmed by inflating it
//! (noodles checks the CRC) and by the next block's header following it exactly. Within the
//! inflated data, a candidate record start must pass [`plausible_record`] and be followed by
//! [`CHAIN_LEN`] more records chained by `block_size` that pass it too (or by the end of the
//! data after at least one).
//!
//! **With an index** no guess is needed: every chunk start and end, and every linear (BAI) or bin
//! (CSI) offset, in a `.bai`/`.csi` is a record start, so a boundary at byte `x` becomes the first
//! such position in a block at or after `x`
//! (and a guess only past the last one, e.g. inside the unplaced unmapped tail). Neighbouring
//! ranges place their shared boundary with the same rule, so they meet exactly.
//!
//! **Verification.** A boundary is never trusted alone: the range before it reads on past its end
//! and must arrive exactly at the boundary's record (see [`crate::scan`]); a mismatch is an error.
//!
//! **Regions.** When the pushed-down predicate confines records to regions and the file has an
//! index, a range reads only the index chunks of those regions that fall inside it, and the
//! ranges share out those chunks' bytes rather than the whole file ([`region_file_groups`]), so a
//! region is decoded on every core too. A boundary inside a chunk with no index position near it
//! is found by the record search and verified like any other.

use std::io::{self, BufRead, Read};

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileGroup;
use object_store::ObjectMeta;
use noodles_bgzf as bgzf;

use crate::decode::FileContext;
use crate::file_info::FileInfo;
use crate::index::{merge_spans, Span, SPAN_GAP_BYTES};
use crate::io::ObjectBytes;
use crate::pushdown::{Region, RegionReference};
use crate::record::{cigar_ops, RawRecord, FIXED_LEN};
use crate::scan::{is_block_header, Piece, ReadUntil};

/// The pieces of file `bytes` that the byte range `[start, end)` decodes, and the number of index
/// chunks among them. `regions`, when given, are the only records wanted.
pub fn plan_range(path: &str, bytes: &ObjectBytes, info: &FileInfo, start: u64, end: u64, regions: Option<&[Region]>) -> Result<(Vec<Piece>, usize)> {
    let boundary = |x: u64| -> Result<(Option<bgzf::VirtualPosition>, String)> {
        // Region scans cut inside index chunks, where the index's next position may be far away.
        let reach = if regions.is_some() { INDEX_BOUNDARY_REACH } else { u64::MAX };
        if let Some(v) = info.index.as_ref().and_then(|i| i.boundary_at(x)).filter(|v| v.compressed() - x <= reach) {
            return Ok((Some(v), format!("the index {}", info.index_note)));
        }
        let guess = find_first_record(bytes.open_at(x)?, x, bytes.size, &info.context)
            .map_err(|e| DataFusionError::Execution(format!("BAM file {path}: cannot find the first record after byte {x}: {e}")))?;
        Ok((guess, format!("the record search from byte {x}")))
    };
    let from = if start == 0 { Some(info.header_end) } else { boundary(start)?.0 };
    let (to, origin) = if end >= bytes.size {
        (None, None)
    } else {
        let (to, origin) = boundary(end)?;
        (to, Some(origin))
    };
    let Some(from) = from else { return Ok((vec![], 0)) };
    if to.is_some_and(|to| from >= to) {
        return Ok((vec![], 0));
    }
    Ok(select_pieces(info, Piece { from, to, boundary_from: origin.filter(|_| to.is_some()), read_until: None }, regions))
}

/// In region scans, an index position at most this many bytes after a range boundary places it;
/// farther away, the record search does (the index has no position inside a long chunk).
const INDEX_BOUNDARY_REACH: u64 = 1 << 16;

/// A region scan's share of compressed data per partition, at least (or DataFusion's
/// `repartition_file_min_size` if smaller): smaller selections are read by fewer partitions,
/// since each costs a file open and a boundary search.
pub const MIN_REGION_PARTITION_BYTES: u64 = 1 << 20;

/// For a region scan: `files` (whole files) as up to `target` groups of byte ranges holding about
/// equal shares, of at least `min_share` bytes, of the compressed bytes the index selects in
/// each file (all of a file without an index). `None` when no file's index narrows the scan,
/// or a file's facts are not loaded.
pub fn region_file_groups(
    files: &[PartitionedFile],
    info_of: impl Fn(&ObjectMeta) -> Option<Arc<FileInfo>>,
    regions: &[Region],
    target: usize,
    min_share: u64,
) -> Option<Vec<FileGroup>> {
    // (file, start, expected end, end) of every stretch to read, in file order.
    let mut stretches = Vec::new();
    let mut narrowed = false;
    for (i, file) in files.iter().enumerate() {
        if file.range.is_some() {
            return None;
        }
        let info = info_of(&file.object_meta)?;
        let size = file.object_meta.size;
        let Some(index) = &info.index else {
            stretches.push((i, 0, size, size));
            continue;
        };
        narrowed = true;
        let whole = Piece::whole_file(info.header_end);
        for piece in select_pieces(&info, whole, Some(regions)).0 {
            // The blocks in which the piece's records start, and how far reading is expected
            // to go before the records pass the region's end (the rest weighs nothing).
            let (start, end) = (piece.from.compressed(), piece.to.map_or(size, |t| t.compressed() + u64::from(t.uncompressed() > 0)));
            let expected = piece.read_until.and_then(|u| index.offset_estimate(u.reference as usize, u.end)).map_or(end, |e| e.clamp(start, end));
            stretches.push((i, start, expected, end));
        }
    }
    let total: u64 = stretches.iter().map(|(_, a, e, _)| e - a).sum();
    if !narrowed || total == 0 {
        return None;
    }
    let groups = total.checked_div(min_share).unwrap_or(u64::MAX).clamp(1, target.max(1) as u64) as usize;
    // Cut the stretches into `groups` shares; a share's part of one file is one byte range
    // (the unselected pieces inside it are skipped by the scan).
    let share = total.div_ceil(groups as u64);
    let mut out: Vec<Vec<PartitionedFile>> = vec![Vec::new()];
    let mut filled = 0;
    for (i, mut a, expected, b) in stretches {
        while a < b {
            if filled >= share && out.len() < groups {
                out.push(Vec::new());
                filled = 0;
            }
            let cut = a + (share - filled);
            let to = if out.len() == groups || cut >= expected { b } else { cut };
            let group = out.last_mut().expect("one group at least");
            match group.last_mut() {
                Some(last) if last.object_meta.location == files[i].object_meta.location => {
                    last.range.as_mut().expect("ranged when added").end = to as i64;
                }
                _ => group.push(files[i].clone().with_range(a as i64, to as i64)),
            }
            filled += to.min(expected).saturating_sub(a);
            a = to;
        }
    }
    Some(out.into_iter().map(FileGroup::new).collect())
}

/// The parts of `whole` to read for `regions` (all of it without regions or without an index),
/// and the number of index chunks selected.
pub fn select_pieces(info: &FileInfo, whole: Piece, regions: Option<&[Region]>) -> (Vec<Piece>, usize) {
    let (from, to) = (whole.from, whole.to);
    let (Some(regions), Some(index)) = (regions, &info.index) else { return (vec![whole], 0) };
    // Each chunk with the sort position after which its region wants nothing (none: the
    // unplaced tail, read to the end).
    let mut chunks: Vec<(Span, Option<ReadUntil>)> = Vec::new();
    for region in regions {
        match &region.reference {
            RegionReference::Named(name) => {
                let Some(id) = info.context.reference_names.iter().position(|n| n == name) else { continue };
                let length = info.context.reference_lengths[id].max(1);
                let start = region.start.min(length);
                let until = ReadUntil { reference: id as u32, end: region.end };
                match index.chunks(id, start, region.end.min(length).max(start)) {
                    Ok(found) => chunks.extend(found.into_iter().map(|c| (c, Some(until)))),
                    // An index that cannot answer (e.g. a BAI for a position past 2^29) is not
                    // needed: the predicate is exact, so reading everything is still right.
                    Err(_) => return (vec![whole], 0),
                }
            }
            RegionReference::Unplaced => chunks.extend(index.unplaced_from().map(|u| ((u, None), None))),
            RegionReference::Any => return (vec![whole], 0),
        }
    }
    let spans = merge_spans(chunks.iter().map(|(span, _)| *span).collect(), SPAN_GAP_BYTES);
    let count = spans.len();
    let pieces = spans
        .into_iter()
        .filter_map(|(s, e): Span| {
            let piece_from = s.max(from);
            let (piece_to, boundary_from) = match (e, to) {
                (Some(e), Some(to)) if e < to => (Some(e), None),
                (None, None) => (None, None),
                (Some(e), None) => (Some(e), None),
                (_, Some(to)) => (Some(to), whole.boundary_from.clone()),
            };
            // The latest stop among the chunks merged into this span (any unbounded one wins).
            let read_until = chunks
                .iter()
                .filter(|((start, _), _)| s <= *start && e.is_none_or(|e| *start < e))
                .map(|(_, until)| *until)
                .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
                .flatten();
            piece_to.is_none_or(|t| piece_from < t).then_some(Piece { from: piece_from, to: piece_to, boundary_from, read_until })
        })
        .collect();
    (pieces, count)
}

/// Records after a candidate that must chain by `block_size` and look valid.
pub const CHAIN_LEN: usize = 10;

/// Raw bytes searched for the first block header after a range start: a BGZF block is at most
/// 64 KiB, so a real one starts within this distance unless the file ends first.
const BLOCK_SEARCH_WINDOW: usize = 1 << 16;

/// Inflated bytes searched for the first record start before giving up.
const RECORD_SEARCH_LIMIT: usize = 512 << 20;

fn block_size_at(b: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([b[16], b[17]])) + 1
}

/// Whether `raw[p..]` holds a real BGZF block: its header, a successful CRC-checked inflate, and
/// either the end of the file or another block header right after it. `complete` says whether
/// `raw` reaches the end of the file.
fn is_real_block(raw: &[u8], p: usize, complete: bool) -> bool {
    if !is_block_header(&raw[p..]) {
        return false;
    }
    let size = block_size_at(&raw[p..]);
    let next = p + size;
    if next > raw.len() {
        return false;
    }
    let followed = if next == raw.len() { complete } else { raw.len() - next >= 18 && is_block_header(&raw[next..]) };
    if !followed {
        return false;
    }
    let mut reader = bgzf::io::Reader::new(&raw[p..next]);
    reader.fill_buf().is_ok()
}

/// Offset (relative to `raw`) of the first real BGZF block, if any. `raw` must hold at least
/// [`BLOCK_SEARCH_WINDOW`] + 2 blocks of bytes unless it reaches the end of the file.
pub fn find_block(raw: &[u8], complete: bool) -> Option<usize> {
    (0..raw.len().min(BLOCK_SEARCH_WINDOW + 1)).find(|&p| is_real_block(raw, p, complete))
}

/// Cheap structural checks of a candidate record at the start of `buf` (which begins with
/// `block_size`). Returns the full length (with `block_size`) when plausible.
pub fn plausible_record(buf: &[u8], refs: &FileContext) -> Option<usize> {
    if buf.len() < 4 + FIXED_LEN {
        return None;
    }
    let block_size = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let total = 4 + block_size;
    if block_size < FIXED_LEN || total > buf.len() {
        return None;
    }
    let r = RawRecord::parse(&buf[4..total], refs.reference_lengths.len()).ok()?;
    let within = |id: i32, pos: i32| {
        pos >= -1 && (id < 0 && pos == -1 || id >= 0 && (pos as i64) < refs.reference_lengths[id as usize].max(1) as i64)
    };
    if !within(r.ref_id(), r.pos()) || !within(r.next_ref_id(), r.next_pos()) {
        return None;
    }
    let name = r.name();
    if name.is_empty() || !name.iter().all(|&c| (b'!'..=b'~').contains(&c) && c != b'@') {
        return None;
    }
    let mut query_len = 0u64;
    for (len, op) in cigar_ops(r.cigar_bytes()) {
        match op {
            0 | 1 | 4 | 7 | 8 => query_len += u64::from(len),
            2 | 3 | 5 | 6 => {}
            _ => return None,
        }
    }
    let mapped = r.flag() & 0x4 == 0 && r.ref_id() >= 0;
    if mapped && r.cigar_bytes().is_empty() {
        return None;
    }
    // The CIGAR's query length equals the sequence length whenever both are present (the
    // `kSmN` placeholder of a long CIGAR satisfies this too).
    if r.l_seq() > 0 && !r.cigar_bytes().is_empty() && query_len != r.l_seq() as u64 {
        return None;
    }
    if r.aux().any(|f| f.is_err()) {
        return None;
    }
    Some(total)
}

/// Whether a record chain of [`CHAIN_LEN`] + 1 plausible records starts at `buf[at..]`.
/// `complete` says whether `buf` holds all data to the end of the file. `None`: need more data.
fn chain_starts_at(buf: &[u8], at: usize, complete: bool, refs: &FileContext) -> Option<bool> {
    let mut p = at;
    for i in 0..=CHAIN_LEN {
        if p == buf.len() && complete {
            return Some(i > 0);
        }
        if buf.len() - p < 4 + FIXED_LEN || {
            let bs = u32::from_le_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]) as usize;
            bs >= FIXED_LEN && 4 + bs > buf.len() - p && bs <= crate::scan::MAX_RECORD_BYTES
        } {
            // Not enough bytes to judge this record.
            if complete {
                return Some(false);
            }
            return None;
        }
        match plausible_record(&buf[p..], refs) {
            Some(n) => p += n,
            None => return Some(false),
        }
    }
    Some(true)
}

/// Where a range's first record is: the compressed offset of its block and the offset in the
/// block's inflated data.
pub type RecordStart = bgzf::VirtualPosition;

/// Finds the first record starting in a block at or after `start`, reading the file's bytes
/// from `start` through `reader`. `file_size` bounds the search. Returns `None` when no record
/// starts at or after `start`.
pub fn find_first_record<R: Read>(mut reader: R, start: u64, file_size: u64, refs: &FileContext) -> io::Result<Option<RecordStart>> {
    // Raw bytes: enough for one full window plus the block found and its successor header.
    let want = (BLOCK_SEARCH_WINDOW * 3) as u64;
    let mut raw = Vec::new();
    (&mut reader).take(want).read_to_end(&mut raw)?;
    let complete = start + raw.len() as u64 >= file_size;
    let Some(p) = find_block(&raw, complete) else {
        if complete || raw.len() < BLOCK_SEARCH_WINDOW {
            return Ok(None);
        }
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("no BGZF block starts within 64 KiB after byte {start}")));
    };
    let first_block = start + p as u64;
    let rest = io::Cursor::new(raw.split_off(p)).chain(reader);
    let mut bgzf_reader = bgzf::io::Reader::new(rest);

    // Inflated data, and where each block's data begins in it.
    let mut data: Vec<u8> = Vec::new();
    let mut blocks: Vec<(u64, usize)> = Vec::new();
    let mut complete = false;
    let mut candidate = 0usize;
    loop {
        // Try candidates in the data we have.
        while candidate < data.len() {
            match chain_starts_at(&data, candidate, complete, refs) {
                Some(true) => {
                    let i = blocks.partition_point(|&(_, begin)| begin <= candidate) - 1;
                    let (cpos, begin) = blocks[i];
                    let upos = u16::try_from(candidate - begin).expect("offset within one block");
                    let vpos = bgzf::VirtualPosition::try_from((first_block + cpos, upos))
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    return Ok(Some(vpos));
                }
                Some(false) => candidate += 1,
                None => break,
            }
        }
        if complete {
            return Ok(None);
        }
        if data.len() > RECORD_SEARCH_LIMIT {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("no BAM record start found in the {} MiB of data after byte {start}", RECORD_SEARCH_LIMIT >> 20)));
        }
        // Load the next non-empty block; after fill_buf the position names that block.
        if bgzf_reader.fill_buf()?.is_empty() {
            complete = true;
            continue;
        }
        blocks.push((bgzf_reader.virtual_position().compressed(), data.len()));
        let chunk = bgzf_reader.fill_buf()?;
        let n = chunk.len();
        data.extend_from_slice(chunk);
        bgzf_reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{bgzf_reader, next_record_start, read_header, read_record_bytes};

    fn sample() -> Vec<u8> {
        // The run-time variable: a build cache shared between checkouts must not read another's file.
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        std::fs::read(format!("{root}/tests/data/sample.bam")).unwrap()
    }

    /// Every record start of the file, by reading it sequentially from byte 0.
    fn record_starts(bytes: &[u8]) -> (FileContext, Vec<bgzf::VirtualPosition>) {
        let mut reader = bgzf_reader("sample.bam", bytes).unwrap();
        let header = read_header("sample.bam", &mut reader).unwrap();
        let mut starts = Vec::new();
        let mut buf = Vec::new();
        while let Some(at) = next_record_start("sample.bam", 0, &mut reader).unwrap() {
            starts.push(at);
            assert!(read_record_bytes("sample.bam", 0, &mut reader, &mut buf).unwrap());
        }
        (header.file, starts)
    }

    #[test]
    fn guesses_equal_the_sequential_record_chain() {
        let bytes = sample();
        let (file, starts) = record_starts(&bytes);
        let size = bytes.len() as u64;
        // Offsets all over the file, including the last block and the EOF block.
        let mut offsets: Vec<u64> = (1..60).map(|i| size * i / 60).collect();
        offsets.extend([1, size - 29, size - 28, size - 1]);
        for offset in offsets {
            let expected = starts.iter().copied().find(|v| v.compressed() >= offset);
            let guess = find_first_record(&bytes[offset as usize..], offset, size, &file).unwrap();
            assert_eq!(guess, expected, "first record at or after byte {offset}");
        }
    }

    #[test]
    fn a_fake_block_header_inside_data_is_skipped() {
        let bytes = sample();
        let real = block_size_at(&bytes);
        // Garbage that starts with a valid-looking BGZF header, then a real block.
        let mut data = bytes[..18].to_vec();
        data.extend(std::iter::repeat_n(0xab, 300));
        let fake_len = data.len();
        data.extend_from_slice(&bytes[real..]);
        assert!(is_block_header(&data));
        assert_eq!(find_block(&data, true), Some(fake_len));
    }

    #[test]
    fn garbage_is_not_a_record() {
        let file = FileContext { reference_names: vec!["chr1".to_string()].into(), reference_lengths: vec![1000].into() };
        assert_eq!(plausible_record(&[0xab; 200], &file), None);
        assert_eq!(plausible_record(&[0; 200], &file), None);
    }
}

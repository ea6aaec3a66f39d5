//! Finding the first BGZF block (for BAM and `.sam.gz` partitions) and the first BAM record after
//! an arbitrary byte offset of a file without an index.
//!
//! The first real BGZF block at or after the offset is found by its header signature (magic, `BC`
//! subfield, BSIZE) and confirmed by inflating it (noodles checks the CRC) and by the next block's
//! header following it exactly. Within the inflated data, a candidate record start must pass
//! [`plausible_record`] and be followed by [`CHAIN_LEN`] more records chained by `block_size` that
//! pass it too (or by the end of the data after at least one).

use std::io::{self, BufRead, Read};

use noodles_bgzf as bgzf;

use crate::bgzf::framing::{is_block_header, FileContext, MAX_RECORD_BYTES};
use crate::record::{cigar_op, cigar_ops, RawRecord, FIXED_LEN, FLAG_UNMAPPED};

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
        pos >= -1
            && (id < 0 && pos == -1 || id >= 0 && (pos as i64) < refs.reference_lengths[id as usize].max(1) as i64)
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
        if !cigar_op::is_valid(op) {
            return None;
        }
        if cigar_op::consumes_query(op) {
            query_len += u64::from(len);
        }
    }
    let mapped = r.flag() & FLAG_UNMAPPED == 0 && r.ref_id() >= 0;
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
            bs >= FIXED_LEN && 4 + bs > buf.len() - p && bs <= MAX_RECORD_BYTES
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

/// The offset of the first real BGZF block at or after byte `start`, reading the file's bytes
/// from `start` through `reader` (`None` when the file ends first). `file_size` bounds the search.
pub fn first_block_at<R: Read>(mut reader: R, start: u64, file_size: u64) -> io::Result<Option<u64>> {
    Ok(read_to_first_block(&mut reader, start, file_size)?.map(|(block, _)| block))
}

/// Reads from `reader` (the file from byte `start`) up to the first real BGZF block and a little
/// beyond: its offset, and the bytes read from it on (the rest follows in `reader`).
fn read_to_first_block<R: Read>(reader: &mut R, start: u64, file_size: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    // Raw bytes: enough for one full window plus the block found and its successor header.
    let want = (BLOCK_SEARCH_WINDOW * 3) as u64;
    let mut raw = Vec::new();
    reader.take(want).read_to_end(&mut raw)?;
    let complete = start + raw.len() as u64 >= file_size;
    let Some(p) = find_block(&raw, complete) else {
        if complete || raw.len() < BLOCK_SEARCH_WINDOW {
            return Ok(None);
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no BGZF block starts within 64 KiB after byte {start}"),
        ));
    };
    Ok(Some((start + p as u64, raw.split_off(p))))
}

/// Finds the first record starting in a block at or after `start`, reading the file's bytes
/// from `start` through `reader`. `file_size` bounds the search. Returns `None` when no record
/// starts at or after `start`.
pub fn find_first_record<R: Read>(
    mut reader: R,
    start: u64,
    file_size: u64,
    refs: &FileContext,
) -> io::Result<Option<RecordStart>> {
    let Some((first_block, raw)) = read_to_first_block(&mut reader, start, file_size)? else { return Ok(None) };
    let rest = io::Cursor::new(raw).chain(reader);
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
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "no BAM record start found in the {} MiB of data after byte {start}",
                    RECORD_SEARCH_LIMIT >> 20
                ),
            ));
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
    use crate::bgzf::framing::{bgzf_reader, next_record_start, read_header, read_record_bytes};

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
        let file =
            FileContext { reference_names: vec!["chr1".to_string()].into(), reference_lengths: vec![1000].into() };
        assert_eq!(plausible_record(&[0xab; 200], &file), None);
        assert_eq!(plausible_record(&[0; 200], &file), None);
    }
}
